"""Data sources under DataParallel: each rank's share of every global batch.

What a Keras / tf.distribute user expects, source by source:

- ``deepgpu.data.Dataset``: its batches are *global* batches (batch with the
  global batch size, as with ``tf.distribute``), and rank r takes the r-th of
  ``size`` equal slices of each one (tf.data's ``AutoShardPolicy.DATA``: every
  rank reads the whole pipeline and keeps its part). The pipeline must give the
  same batches on every rank: unseeded ``shuffle()`` calls share one seed
  during the fit (a new order each epoch, the same on all ranks), and the first
  batch is compared across ranks (ValueError naming the ranks that differ).
  A batch whose size the world size does not divide is cut to the largest
  multiple (the last, smaller batch; dropped when smaller than the world size);
  the first batch must divide (ValueError before anything changes). To read
  only a share of the files instead, build the pipeline per rank with
  ``Dataset.shard(size(), rank())`` and give ``fit`` arrays or a PyDataset.
- ``PyDataset`` (Keras's protocol): its batches are *per-rank* batches (each
  ``__getitem__`` reads only what one rank needs, as PyTorch's
  DistributedSampler): the batch indices, shuffled with the shared seed each
  epoch, are cut to a multiple of the world size and rank r takes indices
  r, r + size, ...; so a global batch is ``size`` consecutive indices, and an
  epoch has ``len // size`` steps. An endless PyDataset (``num_batches`` None)
  is refused: the ranks could end at different steps.
- Arrays given with a data source (validation_data a Dataset): as ``fit`` on
  arrays (``DataParallel.batches``).
- Plain generators / iterators, torch DataLoaders and tf.data datasets are
  refused with a ValueError: each rank would run its own, and one that yields
  one batch more than another hangs the job. Wrap the generator in
  ``Dataset.from_generator`` (global batches, split) or write a PyDataset.

Validation data is not sharded: every rank evaluates all of it.
"""
from __future__ import annotations

import random
import zlib

from ..data import adapters as A
from ..data.dataset import _SHARED_SHUFFLE_SEED, map_structure

REFUSED = ("fit(): under DataParallel a {name} cannot be shared by rank (each rank would run its own, and one "
           "that yields a batch more than another hangs the job); wrap a generator in "
           "deepgpu.data.Dataset.from_generator(fn) (it yields global batches, the same on every rank, and each "
           "rank takes its slice) or write a deepgpu.utils.PyDataset (its batch indices are split by rank)")


def shard_source(dp, adapter, steps_per_epoch, verbose, callbacks):
    """(adapter of this rank's share, verbose, callbacks) for ``fit`` on a data source under the
    DataParallel ``dp`` (the data-source loop calls it; this module's docstring has the rules)."""
    if isinstance(adapter, A._ArrayAdapter):
        dp.prepare_fit(adapter.n, adapter.batch_size, steps_per_epoch, verbose, callbacks)  # its checks
    adapter = shard(dp, adapter)
    verbose, callbacks = dp._rank_callbacks(verbose, callbacks)
    return adapter, verbose, callbacks


def shard(dp, adapter):
    """The adapter that yields this rank's share (see the module docstring); ValueError for a
    source that cannot be shared."""
    if isinstance(adapter, A._DatasetAdapter):
        return _SplitBatches(adapter, dp)
    if isinstance(adapter, A._PyDatasetAdapter):
        return _shard_py_dataset(adapter, dp)
    if isinstance(adapter, A._ArrayAdapter):
        return _ArrayShare(adapter, dp)
    raise ValueError(REFUSED.format(name=adapter.name))


def _fingerprint(el):
    """(shapes, crc32 of the bytes) of a raw batch's host leaves: equal on ranks that read the same batch."""
    from ..data.dataset import flatten
    out = []
    for leaf in flatten(tuple(el) if isinstance(el, list) else el):
        shape = tuple(getattr(leaf, "shape", ()))
        if hasattr(leaf, "tobytes") and not hasattr(leaf, "data_sync"):
            out.append((shape, zlib.crc32(leaf.tobytes())))
        else:
            out.append((shape, None))
    return out


class _SplitBatches(A._Adapter):
    """A Dataset's global batches, each cut to this rank's slice."""

    def __init__(self, inner, dp):
        self.inner, self.dp = inner, dp
        self.num_batches = inner.num_batches
        self.infinite = inner.infinite
        self.name = inner.name
        self._checked = False
        self._old_seed = None

    def iterator(self):
        if self._old_seed is None:
            self._old_seed = (_SHARED_SHUFFLE_SEED[0],)
            _SHARED_SHUFFLE_SEED[0] = self.dp.seed
        return self._split(self.inner.iterator())

    def _split(self, it):
        size, rank = self.dp.comm.size, self.dp.comm.rank
        try:
            for el in it:
                n = A._batch_len(el)
                if not self._checked:
                    self._check_first(el, n)
                per = n // size
                if per == 0:  # a batch smaller than the world: dropped on every rank alike
                    continue
                el = tuple(el) if isinstance(el, list) else el
                yield map_structure(lambda a, lo=rank * per, hi=(rank + 1) * per: a[lo:hi], el)
        finally:
            A._workers.close_quietly(it)

    def _check_first(self, el, n):
        size = self.dp.comm.size
        mine = (n, _fingerprint(el))
        every = self.dp.comm.allgather_obj(mine)
        self._checked = True
        if n % size:
            raise ValueError(f"fit(): the {self.name}'s batches are global batches and must divide by the "
                             f"number of ranks ({size}); the first has {n} samples: batch it by a multiple of {size}")
        differ = [r for r, o in enumerate(every) if o != every[0]]
        if differ:
            raise ValueError(f"fit(): DataParallel ranks {differ} read a different first batch from the "
                             f"{self.name} than rank 0; the pipeline must give the same global batches on every "
                             f"rank (seed its random steps alike, keep map(deterministic=True))")

    def on_epoch_begin(self):
        self.inner.on_epoch_begin()

    def on_epoch_end(self):
        self.inner.on_epoch_end()

    def close(self):
        if self._old_seed is not None:
            _SHARED_SHUFFLE_SEED[0] = self._old_seed[0]
            self._old_seed = None
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


def _shard_py_dataset(adapter, dp):
    size, rank = dp.comm.size, dp.comm.rank
    nb = adapter.num_batches
    if nb is None:
        raise ValueError(f"fit(): under DataParallel the {adapter.name} must have a length (num_batches None "
                         f"means endless, and the ranks could reach its end at different steps)")
    if nb < size:
        raise ValueError(f"fit(): the {adapter.name} has {nb} batches, fewer than the {size} ranks that share them")
    every = dp.comm.allgather_obj(nb)
    if len(set(every)) != 1:
        raise ValueError(f"fit(): the ranks' {adapter.name}s have different lengths {every}; they must be equal")
    epoch = [0]

    def indices():
        order = list(range(nb))
        if adapter.shuffle:
            random.Random(dp.seed * 1_000_003 + epoch[0]).shuffle(order)
        epoch[0] += 1
        return order[:nb // size * size][rank::size]
    adapter.indices = indices
    adapter.num_batches = nb // size
    return adapter


class _ArrayShare(A._Adapter):
    """Arrays fed through the data-source loop: DataParallel.batches' shares."""

    def __init__(self, inner, dp):
        self.inner, self.dp = inner, dp
        self.name = inner.name
        self.num_batches = dp.steps(inner.n, inner.batch_size)
        self._epoch = 0

    def iterator(self):
        x, y, sw = self.inner.parts
        idxs = self.dp.batches(self.inner.n, self.inner.batch_size, self.inner.shuffle, self._epoch)
        self._epoch += 1
        take = (lambda a, idx: None if a is None else map_structure(lambda v: v[idx], a))
        return ((take(x, i), take(y, i), take(sw, i)) for i in idxs)
