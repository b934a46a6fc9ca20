"""DataParallel: what ``compile(distribute=...)`` adds to training.

The model and its layers know nothing of it; the training loop calls four
hooks: ``prepare_fit`` (checks, per-rank verbosity and callbacks),
``batches`` (this rank's share of every global batch), ``first_step``
(model agreement, weights and optimizer state from rank 0) and
``reduce_gradients`` (one flat buffer per dtype, averaged across ranks in
buckets), and ``average_logs`` at each epoch's end.
"""
from __future__ import annotations

import random

from .. import backends

# Callbacks that write files or print: they run on rank 0 only (the others would
# write the same file at once, or print the same lines N times).
_RANK0_CALLBACKS = ("ModelCheckpoint", "CSVLogger", "TensorBoard", "ProgbarLogger", "RemoteMonitor")


class DataParallel:
    """Synchronous data parallelism, one model replica per rank (Horovod's scheme).

    bucket_mb: gradients are all-reduced in slices of about this many MB
    (25 as PyTorch DDP). backend: the communicator ``distributed.init`` makes
    ("auto", "mpi", "nccl"). seed: the shuffle seed shared by all ranks
    (None: rank 0 draws one and sends it). reduce_dtype: "float16" sends
    float32 / float64 gradients as float16 (half the bytes), each divided by
    the world size before the sum so it cannot overflow; None sends them as
    they are.

    In ``fit``: ``batch_size`` is the global batch, split evenly across the
    ranks (ValueError when the world size does not divide it). Every epoch
    one permutation, the same on all ranks, is cut into global batches and
    rank r takes the r-th equal slice of each. The uneven tail: the last
    global batch is cut to the largest multiple of the world size (up to
    size-1 samples, different ones every shuffled epoch, are dropped), and
    dropped whole when smaller than the world size; so every rank takes the
    same number of steps and the average of the ranks' mean gradients is the
    mean gradient of the global batch. Validation data is not sharded: every
    rank evaluates all of it. The epoch logs (loss, metrics, val_) are
    averaged across ranks before the callbacks see them, so EarlyStopping and
    ReduceLROnPlateau decide the same on every rank. Progress output,
    file-writing callbacks (ModelCheckpoint, CSVLogger, TensorBoard) and
    ``model.save`` / ``save_weights`` act on rank 0 only. Non-trainable
    weights (BatchNormalization's moving statistics) stay per rank.
    Per-batch logs seen by callbacks are the rank's own.

    Data sources: a ``deepgpu.data.Dataset`` yields global batches, each
    split by rank; a PyDataset's batch indices are split by rank (its batches
    are per-rank); plain generators, torch DataLoaders and tf.data are refused
    (deepgpu/distributed/sources.py has the rules and the tails).
    """

    def __init__(self, bucket_mb: float = 25.0, backend: str = "auto", seed=None, reduce_dtype=None):
        if isinstance(bucket_mb, bool) or not isinstance(bucket_mb, (int, float)) or not bucket_mb > 0:
            raise ValueError(f"DataParallel: bucket_mb must be a number > 0, got {bucket_mb!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"DataParallel: seed must be an integer or None, got {seed!r}")
        if reduce_dtype not in (None, "float16"):
            raise ValueError(f"DataParallel: reduce_dtype must be None or 'float16', got {reduce_dtype!r}")
        self.reduce_dtype = reduce_dtype
        self.bucket_mb = float(bucket_mb)
        self.backend = backend
        self.seed = seed
        self.comm = None
        self.synced = False
        self._layout = None

    # ------------------------------------------------------------ set-up
    def attach(self, model):
        """Join the world (``distributed.init``) for ``model``; called by ``compile``."""
        from . import init
        self.comm = init(self.backend)
        if self.seed is None:
            self.seed = self.comm.bcast_obj(random.SystemRandom().randrange(2 ** 31) if self.comm.rank == 0 else None)
        self.synced = False
        self._layout = None
        return self

    @property
    def is_main(self) -> bool:
        return self.comm is None or self.comm.rank == 0

    def steps(self, n: int, batch_size: int) -> int:
        """Steps per epoch for ``n`` samples in global batches of ``batch_size``."""
        size = self.comm.size
        return n // batch_size + (1 if n % batch_size >= size else 0)

    def prepare_fit(self, n, batch_size, steps_per_epoch, verbose, callbacks):
        """(steps, verbose, callbacks) for this rank; ValueError before any step for a
        global batch the world size does not divide or data smaller than the world."""
        size = self.comm.size
        if batch_size % size:
            raise ValueError(f"fit(): batch_size={batch_size} is the global batch and must be divisible by the "
                             f"number of ranks ({size}); use a multiple of {size}")
        if n < size:
            raise ValueError(f"fit(): {n} training samples cannot be shared by {size} ranks")
        steps = self.steps(n, batch_size)
        if steps_per_epoch is not None:
            steps = min(steps, steps_per_epoch)
        verbose, callbacks = self._rank_callbacks(verbose, callbacks)
        return steps, verbose, callbacks

    def shard_source(self, adapter, steps_per_epoch, verbose, callbacks):
        """(adapter of this rank's share, verbose, callbacks) for ``fit`` on a data source
        (deepgpu/distributed/sources.py says what each kind of source does)."""
        from . import sources
        from ..data import adapters
        if isinstance(adapter, adapters._ArrayAdapter):
            self.prepare_fit(adapter.n, adapter.batch_size, steps_per_epoch, verbose, callbacks)  # its checks
        adapter = sources.shard(self, adapter)
        verbose, callbacks = self._rank_callbacks(verbose, callbacks)
        return adapter, verbose, callbacks

    def _rank_callbacks(self, verbose, callbacks):
        if isinstance(callbacks, dict):  # TF.js style: {"onEpochEnd": fn, ...}
            return (verbose if self.is_main else 0), callbacks
        callbacks = list(callbacks or [])
        for cb in callbacks:
            if type(cb).__name__ == "BackupAndRestore":
                raise ValueError("fit(): BackupAndRestore is not supported with DataParallel yet (every rank "
                                 "would need to resume from rank 0's backup); use ModelCheckpoint and "
                                 "load the weights before fit")
        if not self.is_main:
            verbose = 0
            callbacks = [cb for cb in callbacks if type(cb).__name__ not in _RANK0_CALLBACKS]
        return verbose, callbacks

    def batches(self, n, batch_size, shuffle, epoch):
        """This rank's host index arrays, one per step of the epoch (see the class doc)."""
        size, rank = self.comm.size, self.comm.rank
        order = list(range(n))
        if shuffle:
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        cpu = backends.get("cpu")
        for start in range(0, n, batch_size):
            chunk = order[start:start + batch_size]
            per = len(chunk) // size
            if per == 0:
                return
            yield cpu.asarray(chunk[rank * per:(rank + 1) * per], "int64")

    # ------------------------------------------------------------- steps
    def first_step(self, model, xb):
        """Before the first step: build the model if needed, check every rank holds the same
        variables (ValueError naming the first difference, raised on every rank), then copy
        rank 0's weights and optimizer state to all."""
        from ..autograd import no_grad
        if not model.weights:
            with no_grad():
                model(xb if len(xb) > 1 else xb[0], training=False)
            model._train_vars = None
        sig = [(w.name, tuple(w.shape), str(w.dtype)) for w in model.weights]
        sigs = self.comm.allgather_obj(sig)
        for r, other in enumerate(sigs):  # names may differ (layer counters); shapes and dtypes may not
            if [s[1:] for s in other] != [s[1:] for s in sigs[0]]:
                raise ValueError(_mismatch(sigs[0], other, r, model.name))
        for w in model.weights:
            self._bcast_var(w)
        opt = model.optimizer
        built = self.comm.allgather_obj(bool(getattr(opt, "built", False)))
        if any(built):
            if not all(built):
                raise ValueError(f"DataParallel: the optimizer of model {model.name!r} has state on ranks "
                                 f"{[r for r, b in enumerate(built) if b]} but not on the others; load the same "
                                 f"checkpoint on every rank")
            state = opt.get_weights()
            state = self.comm.bcast_obj(state if self.comm.rank == 0 else None)
            opt.set_weights(state)
        self.synced = True

    def _bcast_var(self, v):
        B = v._backend
        buf = B.copy(v.data).reshape(-1)  # contiguous whatever the variable's layout
        self.comm.broadcast(buf, 0)
        v.data[...] = buf.reshape(v.data.shape)

    def reduce_gradients(self, grads, vars_):
        """``grads`` (backend arrays or None, one per variable) averaged across ranks: copied into
        one flat buffer per dtype, all-reduced in buckets of ``bucket_mb``, returned as views of it."""
        if self.comm.size == 1:
            return grads
        B = vars_[0]._backend if vars_ else backends.current()
        key = tuple(None if g is None else (str(g.dtype), tuple(g.shape)) for g in grads)
        if self._layout is None or self._layout[0] != key:
            offsets, totals = [], {}
            for k in key:
                if k is None:
                    offsets.append(None)
                    continue
                dt, shape = k
                n = 1
                for d in shape:
                    n *= d
                offsets.append((dt, totals.get(dt, 0), n, shape))
                totals[dt] = totals.get(dt, 0) + n
            bufs = {dt: B.zeros((t,), dt) for dt, t in totals.items()}
            self._layout = (key, offsets, bufs)
        _, offsets, bufs = self._layout
        for g, o in zip(grads, offsets):
            if o is not None:
                dt, start, n, _ = o
                bufs[dt][start:start + n] = g.reshape(-1)
        for dt in sorted(bufs):
            buf = bufs[dt]
            if self.reduce_dtype and dt in ("float32", "float64"):
                low = B.cast(buf / self.comm.size, self.reduce_dtype)
                self.comm.all_reduce_buckets(low, max(1, int(self.bucket_mb * 2 ** 20) // 2), "sum")
                buf[...] = B.cast(low, dt)
                continue
            elems = max(1, int(self.bucket_mb * 2 ** 20) // buf.dtype.itemsize)
            self.comm.all_reduce_buckets(buf, elems, "mean")
        return [None if o is None else bufs[o[0]][o[1]:o[1] + o[2]].reshape(o[3]) for o in offsets]

    def average_logs(self, logs: dict) -> dict:
        """The epoch's logs averaged across ranks (same keys on every rank)."""
        if self.comm.size == 1 or not logs:
            return logs
        keys = list(logs)
        cpu = backends.get("cpu")
        vals = cpu.asarray([float(logs[k]) for k in keys], "float64")
        self.comm.all_reduce(vals, "mean")
        return {k: float(v) for k, v in zip(keys, vals.tolist())}


def _mismatch(ref, other, r, name):
    if len(ref) != len(other):
        return (f"DataParallel: ranks disagree on model {name!r}: rank 0 has {len(ref)} weights, rank {r} has "
                f"{len(other)}; every rank must build the same model")
    for i, (a, b) in enumerate(zip(ref, other)):
        if a[1:] != b[1:]:
            return (f"DataParallel: ranks disagree on model {name!r} at weight {i}: rank 0 has {a[0]!r} "
                    f"{a[1]} {a[2]}, rank {r} has {b[0]!r} {b[1]} {b[2]}; every rank must build the same model")
    return f"DataParallel: ranks disagree on model {name!r}"
