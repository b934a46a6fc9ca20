"""DataParallel: what ``compile(distribute=...)`` adds to training.

The model and its layers know nothing of it (BatchNormalization(synchronized=True)
asks ``step_communicator()``); the training loop calls these hooks:
``prepare_fit`` (checks, per-rank verbosity and callbacks), ``batches`` (this
rank's share of every global batch; data sources: deepgpu/distributed/sources.py),
``first_step`` (model agreement, weights and optimizer state from rank 0),
``step`` (around forward and backward: the buckets of one flat gradient buffer
per dtype are averaged across ranks as backward finishes them), and
``average_logs`` at each epoch's end.
"""
from __future__ import annotations

import contextlib
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
    (None: rank 0 draws one and sends it). reduce_dtype: "float16" or
    "bfloat16" sends float32 / float64 gradients in that dtype (half the
    bytes; the sum is taken in it too), each divided by the world size before
    the sum so float16's cannot overflow; None sends them as they are.
    overlap: each bucket (filled in reverse layer order) starts its
    reduction as soon as backward has produced all its gradients (MPI's
    Iallreduce; NCCL on a side stream the optimizer's stream waits on), instead
    of after the whole backward pass; the results are the same. On the
    CUDA backend with NCCL >= 2.9.6 the step, reductions included, records
    into the CUDA graph (compile's cuda_graph); with MPI it runs eagerly.

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
    ``model.save`` / ``save_weights`` act on rank 0 only; BackupAndRestore
    runs on every rank, rank 0 alone writes and reads the backup and sends
    what it restored (weights, optimizer state, epoch and step, the other
    callbacks' state) to the others, so the folder need not be shared. Non-trainable
    weights (BatchNormalization's moving statistics) stay per rank.
    Per-batch logs seen by callbacks are the rank's own.

    Data sources: a ``deepgpu.data.Dataset`` yields global batches, each
    split by rank; a PyDataset's batch indices are split by rank (its batches
    are per-rank); plain generators, torch DataLoaders and tf.data are refused
    (deepgpu/distributed/sources.py has the rules and the tails).
    """

    def __init__(self, bucket_mb: float = 25.0, backend: str = "auto", seed=None, reduce_dtype=None,
                 overlap: bool = True):
        if isinstance(bucket_mb, bool) or not isinstance(bucket_mb, (int, float)) or not bucket_mb > 0:
            raise ValueError(f"DataParallel: bucket_mb must be a number > 0, got {bucket_mb!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"DataParallel: seed must be an integer or None, got {seed!r}")
        if reduce_dtype not in (None, "float16", "bfloat16"):
            raise ValueError(f"DataParallel: reduce_dtype must be None, 'float16' or 'bfloat16', got {reduce_dtype!r}")
        if reduce_dtype == "bfloat16":
            from ..backends.half import bfloat16
            bfloat16()  # ImportError naming the extra now, not at the first step
        if not isinstance(overlap, bool):
            raise ValueError(f"DataParallel: overlap must be True or False, got {overlap!r}")
        self.overlap = overlap
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

    def _rank_callbacks(self, verbose, callbacks):
        if isinstance(callbacks, dict):  # TF.js style: {"onEpochEnd": fn, ...}
            return (verbose if self.is_main else 0), callbacks
        callbacks = list(callbacks or [])
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
        """Before the callbacks start (so a disagreement leaves no file behind): build the model on
        ``xb`` if needed, check every rank holds the same variables (ValueError naming the first
        difference, raised on every rank), then copy rank 0's weights and optimizer state to all."""
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
        built = self.comm.allgather_obj(bool(getattr(model.optimizer, "built", False)))
        if any(built) and not all(built):
            raise ValueError(f"DataParallel: the optimizer of model {model.name!r} has state on ranks "
                             f"{[r for r, b in enumerate(built) if b]} but not on the others; load the same "
                             f"checkpoint on every rank")
        self.sync_from_main(model)
        self.synced = True

    def sync_from_main(self, model):
        """Rank 0's weights and optimizer state (when it has any) on every rank; every rank calls it
        (BackupAndRestore does after rank 0 alone read the backup)."""
        for w in model.weights:
            self._bcast_var(w)
        opt, main = model.optimizer, self.comm.rank == 0
        if opt is None or not self.comm.bcast_obj(bool(getattr(opt, "built", False)) if main else None):
            return
        vars_ = model._vars_to_train()
        state = self.comm.bcast_obj(opt.get_weights_for(vars_) if main else None)
        if not main:
            opt.set_weights(state, var_list=vars_)

    def _bcast_var(self, v):
        B = v._backend
        buf = B.copy(v.data).reshape(-1)  # contiguous whatever the variable's layout
        self.comm.broadcast(buf, 0)
        v.data[...] = buf.reshape(v.data.shape)

    def why_not_recorded(self):
        """None when a training step can be recorded as a CUDA graph with its reductions (a world of
        one, or NCCL that can be captured), else the reason."""
        comm = self.comm
        if comm is None or comm.size == 1:
            return None
        if not getattr(comm, "capturable", False):
            if comm.name == "nccl":
                return "this NCCL cannot be captured in a CUDA graph (needs NCCL >= 2.9.6)"
            return (f"DataParallel's {comm.name!r} communicator reduces through host memory, which a CUDA "
                    f"graph cannot record (init(backend='nccl') records)")
        return None

    @contextlib.contextmanager
    def step(self, vars_):
        """Around one training step's forward and backward (``vars_``: the list passed to
        ``backward``): BatchNormalization(synchronized=True) takes global statistics, and with
        ``overlap`` each bucket's reduction starts as soon as backward has produced all its
        gradients. Yields an object whose ``gradients(grads)`` finishes the reductions and returns
        the averaged gradients (views into the flat buffers; None where ``grads`` has None)."""
        from .. import autograd
        st = _Step(self, vars_)
        hooked = self.overlap and self.comm.size > 1
        if hooked:
            autograd.READY_HOOKS[id(vars_)] = st.ready
        _STEP_COMM[0] = self.comm
        try:
            yield st
        finally:
            _STEP_COMM[0] = None
            if hooked:
                autograd.READY_HOOKS.pop(id(vars_), None)

    def reduce_gradients(self, grads, vars_):
        """``grads`` (backend arrays or None, one per variable) averaged across ranks after backward:
        copied into one flat buffer per dtype, all-reduced in buckets of ``bucket_mb``, returned as
        views of it (the reduction without overlap)."""
        return _Step(self, vars_).gradients(grads)

    def _buckets(self, vars_):
        """(slots, buckets, flat buffers) for ``vars_``, made once per variable layout. Slots and
        buckets run in reverse variable order, the order backward finishes gradients in (PyTorch
        DDP's choice); a bucket closes at ``bucket_mb`` per dtype."""
        key = tuple((str(v.dtype), tuple(v.shape)) for v in vars_)
        if self._layout is not None and self._layout[0] == key:
            return self._layout[1:]
        B = vars_[0]._backend if vars_ else backends.current()
        limit = max(1, int(self.bucket_mb * 2 ** 20))
        slots = [None] * len(vars_)
        totals, open_, buckets = {}, {}, []
        for k in reversed(range(len(vars_))):
            dt, shape = key[k]
            n = 1
            for d in shape:
                n *= d
            start = totals.get(dt, 0)
            totals[dt] = start + n
            b = open_.get(dt)
            if b is None:
                b = open_[dt] = [dt, start, start, []]
                buckets.append(b)
            b[2] = start + n
            b[3].append(k)
            slots[k] = (dt, start, n, shape, buckets.index(b))
            if (b[2] - b[1]) * _itemsize(dt) >= limit:
                del open_[dt]
        bufs = {dt: B.zeros((t,), dt) for dt, t in totals.items()}
        buckets = [(dt, s0, s1, tuple(ks)) for dt, s0, s1, ks in buckets]
        self._layout = (key, slots, buckets, bufs)
        return slots, buckets, bufs

    def average_logs(self, logs: dict) -> dict:
        """The epoch's logs averaged across ranks (same keys on every rank)."""
        if self.comm.size == 1 or not logs:
            return logs
        keys = list(logs)
        cpu = backends.get("cpu")
        vals = cpu.asarray([float(logs[k]) for k in keys], "float64")
        self.comm.all_reduce(vals, "mean")
        return {k: float(v) for k, v in zip(keys, vals.tolist())}


_STEP_COMM = [None]  # the communicator while a DataParallel training step runs (SyncBN reads it)


def step_communicator():
    """The communicator of the DataParallel training step under way in this process, or None."""
    return _STEP_COMM[0]


def _itemsize(dt):
    return {"float16": 2, "bfloat16": 2, "float32": 4, "int32": 4, "float64": 8, "int64": 8}.get(dt, 4)


class _Step:
    """One step's reduction: gradients are copied into their slots as they come (``ready``), and a
    bucket's reduction starts once all its slots are filled, buckets in order (every rank must start
    the same collectives in the same order)."""

    def __init__(self, dp, vars_):
        self.dp, self.vars = dp, vars_
        self.size = dp.comm.size
        if self.size == 1 or not vars_:
            return
        self.B = vars_[0]._backend
        self.slots, self.buckets, self.bufs = dp._buckets(vars_)
        self.pending = [len(b[3]) for b in self.buckets]
        self.filled = [False] * len(vars_)
        self.handles = []
        self.next = 0  # the next bucket to start

    def ready(self, k, g):
        """backward's hook: variable ``k``'s gradient ``g`` is final."""
        self._fill(k, g)
        self._start_ready()
        for h, _ in self.handles:
            h.poke()

    def _fill(self, k, g):
        """Write variable ``k``'s gradient into its bucket (zeros for None, so the other ranks'
        sums stay right) and count it toward the bucket."""
        dt, start, n, _, b = self.slots[k]
        if g is None:
            self.bufs[dt][start:start + n] = 0
        else:
            self.bufs[dt][start:start + n] = g.reshape(-1)
        self.filled[k] = True
        self.pending[b] -= 1

    def _start_ready(self):
        while self.next < len(self.buckets) and self.pending[self.next] == 0:
            self._start(self.next)
            self.next += 1

    def _start(self, b):
        dt, s0, s1, _ = self.buckets[b]
        buf = self.bufs[dt][s0:s1]
        red = self.dp.reduce_dtype
        if red and dt in ("float32", "float64"):
            # each term divided by the world size first, so the float16 sum cannot overflow
            low = self.B.cast(buf / self.size, red)
            self.handles.append((self.dp.comm.start_all_reduce(low, "sum"),
                                 lambda buf=buf, low=low, dt=dt: buf.__setitem__(Ellipsis, self.B.cast(low, dt))))
        else:
            self.handles.append((self.dp.comm.start_all_reduce(buf, "mean"), None))

    def gradients(self, grads):
        """Finish every reduction (filling what backward's hook did not) and return the averages."""
        if self.size == 1 or not self.vars:
            return grads
        for k, g in enumerate(grads):
            if not self.filled[k]:
                self._fill(k, g)
        self._start_ready()
        for h, after in self.handles:
            h.wait()
            if after is not None:
                after()
        self.handles = []
        return [None if g is None else self.bufs[o[0]][o[1]:o[1] + o[2]].reshape(o[3])
                for g, o in zip(grads, self.slots)]


def _mismatch(ref, other, r, name):
    if len(ref) != len(other):
        return (f"DataParallel: ranks disagree on model {name!r}: rank 0 has {len(ref)} weights, rank {r} has "
                f"{len(other)}; every rank must build the same model")
    for i, (a, b) in enumerate(zip(ref, other)):
        if a[1:] != b[1:]:
            return (f"DataParallel: ranks disagree on model {name!r} at weight {i}: rank 0 has {a[0]!r} "
                    f"{a[1]} {a[2]}, rank {r} has {b[0]!r} {b[1]} {b[2]}; every rank must build the same model")
    return f"DataParallel: ranks disagree on model {name!r}"
