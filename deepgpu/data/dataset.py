"""``deepgpu.data.Dataset``: tf.data's input pipeline on host NumPy arrays.

A Dataset is a recipe: each ``iter()`` starts a fresh pass (so ``repeat``,
``shuffle(reshuffle_each_iteration=True)`` and a new epoch of ``fit`` work)
and yields *elements*: a NumPy array, or a tuple / dict of them (nested). The
verbs return new Datasets and change nothing in place.

Parallel work (``map(num_parallel_calls=...)``, ``interleave``, ``prefetch``)
runs in worker threads by default (see deepgpu/data/_workers.py for why), with
bounded queues. A worker's exception is raised in the caller with its
traceback, and closing the iterator (or leaving a ``for`` loop, or an
exception in ``fit``) stops and joins every worker.

TF.js's spellings are here too: ``deepgpu.data.array``, ``generator``,
``csv``, and ``toArray`` / ``forEachAsync`` / ``mapAsync``,
``batch(n, small_last_batch=...)``.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import threading

import numpy as np

from . import _workers
from ._workers import AUTOTUNE, close_quietly

__all__ = ["Dataset", "TensorSpec", "AUTOTUNE", "INFINITE_CARDINALITY", "UNKNOWN_CARDINALITY",
           "array", "generator", "zip"]

INFINITE_CARDINALITY = -1
UNKNOWN_CARDINALITY = -2

_builtin_zip = zip

# Set by deepgpu.distributed while a DataParallel fit runs (shared_shuffle_seed): every unseeded
# shuffle() then orders alike on all ranks, so each rank's share of a global batch is disjoint.
_SHARED_SHUFFLE_SEED = [None]


@contextlib.contextmanager
def shared_shuffle_seed(seed):
    """Within the block, ``shuffle()`` calls made without a seed draw from ``seed`` (process-wide)."""
    old = _SHARED_SHUFFLE_SEED[0]
    _SHARED_SHUFFLE_SEED[0] = seed
    try:
        yield
    finally:
        _SHARED_SHUFFLE_SEED[0] = old


# ------------------------------------------------------------------ structures
def _is_struct(s):
    return isinstance(s, (tuple, dict))


def map_structure(fn, s):
    """``fn`` applied to every leaf of a nest of tuples (namedtuples) / dicts."""
    if isinstance(s, dict):
        return {k: map_structure(fn, v) for k, v in s.items()}
    if isinstance(s, tuple):
        vals = [map_structure(fn, v) for v in s]
        return type(s)(*vals) if hasattr(s, "_fields") else tuple(vals)
    return fn(s)


def flatten(s):
    if isinstance(s, dict):
        return [leaf for k in s for leaf in flatten(s[k])]
    if isinstance(s, tuple):
        return [leaf for v in s for leaf in flatten(v)]
    return [s]


def pack_like(s, leaves):
    it = iter(leaves)
    return map_structure(lambda _: next(it), s)


def _same_structure(a, b):
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same_structure(a[k], b[k]) for k in a)
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(_same_structure(x, y) for x, y in _builtin_zip(a, b))
    return not _is_struct(b)


def to_numpy(a):
    """A leaf as a NumPy array (a deepgpu Tensor is read with ``data_sync()``; float64 stays
    as given: ``fit`` casts at its boundary)."""
    if hasattr(a, "data_sync"):
        return a.data_sync()
    if hasattr(a, "numpy") and not isinstance(a, np.ndarray):  # torch / tf tensors
        return np.asarray(a.numpy())
    return np.asarray(a)


class TensorSpec:
    """Shape (``None`` for any size) and dtype of one component, as ``tf.TensorSpec``."""

    def __init__(self, shape, dtype="float32", name=None):
        self.shape = None if shape is None else tuple(None if d is None else int(d) for d in shape)
        self.dtype = np.dtype(getattr(dtype, "as_numpy_dtype", dtype))
        self.name = name

    def __repr__(self):
        return f"TensorSpec(shape={self.shape}, dtype={self.dtype.name})"

    def __eq__(self, other):
        return isinstance(other, TensorSpec) and (self.shape, self.dtype) == (other.shape, other.dtype)

    def compatible(self, a) -> bool:
        if self.shape is None:
            return True
        return len(a.shape) == len(self.shape) and all(
            d is None or d == g for d, g in _builtin_zip(self.shape, a.shape))


def _spec_of(x):
    shape = getattr(x, "shape", None)
    shape = None if shape is None else tuple(None if d is None else int(d) for d in shape)
    dtype = getattr(x, "dtype", "float32")
    return TensorSpec(shape, dtype if not hasattr(dtype, "as_numpy_dtype") else dtype.as_numpy_dtype)


def _count(n, where, name="count"):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < -1:
        raise ValueError(f"{where}: {name} must be an int >= -1 (-1: all), got {n!r}")
    return int(n)


def _positive(n, where, name):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{where}: {name} must be a positive int, got {n!r}")
    return int(n)


def _call(fn, element):
    # tf.data unpacks a tuple element into positional arguments; a dict is one argument.
    return fn(*element) if isinstance(element, tuple) and not hasattr(element, "_fields") else fn(element)


@contextlib.contextmanager
def _closing(it):
    try:
        yield it
    finally:
        close_quietly(it)


# ------------------------------------------------------------------ the class
class Dataset:
    """A re-iterable pipeline of elements. Build one with ``from_tensor_slices``,
    ``from_generator``, ``range``, ``zip`` (or a reader: ``deepgpu.data.csv``,
    ``deepgpu.utils.image_dataset_from_directory``); chain the verbs."""

    def __init__(self, make_iter, cardinality=UNKNOWN_CARDINALITY, name="Dataset"):
        self._make_iter = make_iter  # () -> a fresh iterator over the elements
        self._cardinality = cardinality
        self._name = name

    # -- iteration
    def __iter__(self):
        return iter(self._make_iter())

    def as_numpy_iterator(self):
        """The elements as NumPy arrays (they already are: this is ``iter(self)``)."""
        return iter(self)

    def cardinality(self) -> int:
        """The number of elements; INFINITE_CARDINALITY (-1) or UNKNOWN_CARDINALITY (-2)."""
        return self._cardinality

    def __len__(self):
        if self._cardinality == INFINITE_CARDINALITY:
            raise TypeError("The dataset is infinite (repeat() without a count).")
        if self._cardinality == UNKNOWN_CARDINALITY:
            raise TypeError("The dataset's length is unknown (it comes from a generator, filter or a reader); "
                            "use cardinality(), which returns UNKNOWN_CARDINALITY (-2).")
        return self._cardinality

    def __bool__(self):
        return True

    def __repr__(self):
        c = self._cardinality
        size = {INFINITE_CARDINALITY: "infinite", UNKNOWN_CARDINALITY: "unknown size"}.get(c, f"{c} elements")
        return f"<{self._name}: {size}>"

    def to_array(self):
        """All elements in a list (TF.js ``toArray``). Refuses an infinite dataset."""
        if self._cardinality == INFINITE_CARDINALITY:
            raise ValueError("to_array(): the dataset is infinite; take(n) first")
        return list(self)

    toArray = to_array

    def for_each(self, fn):
        """Call ``fn(element)`` on every element (TF.js ``forEachAsync``)."""
        with _closing(iter(self)) as it:
            for el in it:
                fn(el)

    forEachAsync = for_each

    def reduce(self, initial_state, reduce_func):
        state = initial_state
        with _closing(iter(self)) as it:
            for el in it:
                state = reduce_func(state, el)
        return state

    @property
    def element_spec(self):
        """The structure of TensorSpecs of the first element (reads one element)."""
        with _closing(iter(self)) as it:
            for el in it:
                return map_structure(_spec_of, el)
        raise ValueError("element_spec: the dataset is empty")

    # -- sources
    @staticmethod
    def from_tensor_slices(tensors, name=None):
        """One element per row of ``tensors`` (an array, or a tuple / dict nest of arrays
        with the same first dimension). Raises ValueError naming the lengths that differ."""
        arrays = map_structure(to_numpy, tensors)
        leaves = flatten(arrays)
        for a in leaves:
            if a.ndim == 0:
                raise ValueError(f"from_tensor_slices(): every component needs a first axis to slice, "
                                 f"got a scalar {a!r}")
        lengths = [a.shape[0] for a in leaves]
        if len(set(lengths)) > 1:
            raise ValueError(f"from_tensor_slices(): the components have different first dimensions "
                             f"{lengths}; they must all have the same number of rows")
        n = lengths[0]

        def make():
            for i in range(n):
                yield pack_like(arrays, [a[i] for a in leaves])
        return Dataset(make, n, "TensorSliceDataset")

    @staticmethod
    def from_tensors(tensors):
        """One element: ``tensors`` itself."""
        el = map_structure(to_numpy, tensors)
        return Dataset(lambda: iter([el]), 1, "TensorDataset")

    @staticmethod
    def from_generator(generator, output_types=None, output_shapes=None, args=None, output_signature=None):
        """Elements from ``generator()`` (a callable returning an iterator, called anew each pass).

        output_signature: a nest of TensorSpec (or ``tf.TensorSpec``) that each
        element must match: ValueError naming the element index, the expected and
        the received shape. The leaves are converted to NumPy arrays (to the
        signature's dtype where one is given).
        """
        if not callable(generator):
            raise TypeError("from_generator(): generator must be a callable that returns an iterator "
                            f"(e.g. a generator function), got {type(generator).__name__}; "
                            "wrap a generator object as `lambda: gen` only if it is iterated once")
        if output_signature is None and output_types is not None:
            shapes = output_shapes if output_shapes is not None else map_structure(lambda _: None, output_types)
            output_signature = _zip_struct(output_types, shapes)
        sig = None if output_signature is None else map_structure(_spec_of, output_signature)
        call_args = tuple(args or ())

        def make():
            gen = generator(*call_args)
            try:
                for i, el in enumerate(gen):
                    yield _conform(el, sig, i)
            finally:
                close_quietly(gen)
        return Dataset(make, UNKNOWN_CARDINALITY, "GeneratorDataset")

    @staticmethod
    def range(*args, dtype="int64"):
        """Elements ``range(*args)`` as 0-d arrays of ``dtype``."""
        r = range(*args)
        dt = np.dtype(dtype)
        return Dataset(lambda: (np.asarray(v, dt) for v in r), len(r), "RangeDataset")

    @staticmethod
    def zip(*datasets):
        """Elements as tuples (or a dict) of the given datasets' elements, until the shortest ends.
        ``Dataset.zip((a, b))``, ``Dataset.zip(a, b)`` and ``Dataset.zip({"x": a, "y": b})``."""
        if len(datasets) == 1 and _is_struct(datasets[0]):
            datasets = datasets[0]
        for d in flatten(datasets):
            if not isinstance(d, Dataset):
                raise TypeError(f"zip(): expected Datasets, got {type(d).__name__}")
        dss = flatten(datasets)
        cards = [d.cardinality() for d in dss]
        finite = [c for c in cards if c >= 0]
        card = min(finite) if finite else (UNKNOWN_CARDINALITY if UNKNOWN_CARDINALITY in cards
                                           else INFINITE_CARDINALITY)
        if UNKNOWN_CARDINALITY in cards and finite:
            card = UNKNOWN_CARDINALITY
        structure = datasets

        def make():
            its = [iter(d) for d in dss]
            try:
                while True:
                    row = []
                    for it in its:
                        try:
                            row.append(next(it))
                        except StopIteration:
                            return
                    yield pack_like(structure, row)
            finally:
                for it in its:
                    close_quietly(it)
        return Dataset(make, card, "ZipDataset")

    # -- verbs
    def map(self, map_func, num_parallel_calls=None, deterministic=None, use_multiprocessing=False, name=None):
        """``map_func(element)`` for each element (a tuple element is passed as positional arguments).

        num_parallel_calls: None (in the caller's thread), an int, or AUTOTUNE
        (one per CPU core): that many calls run at once in worker threads, or
        processes with ``use_multiprocessing=True`` (for pure-Python work that
        holds the GIL; ``map_func`` is shared by fork, or pickled where fork is
        not available). The output order is the input order unless
        ``deterministic=False``. An exception in ``map_func`` is raised here with
        its traceback; the pool is shut down and joined.
        """
        workers = _workers.resolve_calls(num_parallel_calls, "map()")
        src = self
        fn = _ElementFn(map_func)

        if not workers:
            def make():
                with _closing(iter(src)) as it:
                    for el in it:
                        yield fn(el)
        else:
            def make():
                return _workers.parallel_map(iter(src), fn, workers, ordered=deterministic is not False,
                                             use_multiprocessing=use_multiprocessing)
        out = Dataset(make, self._cardinality, "MapDataset")
        if workers:  # batch() right after fuses with it (tf.data's map_and_batch)
            out._parallel_map = (self, fn, workers, deterministic is not False, use_multiprocessing)
        return out

    def mapAsync(self, map_func):  # noqa: N802 - TF.js spelling
        return self.map(map_func)

    def filter(self, predicate, name=None):
        """The elements for which ``predicate(element)`` is true (a bool or a 0-d / 1-element array)."""
        src = self

        def make():
            with _closing(iter(src)) as it:
                for el in it:
                    keep = _call(predicate, el)
                    keep = to_numpy(keep)
                    if keep.size != 1:
                        raise ValueError(f"filter(): the predicate must return one boolean, got shape {keep.shape}")
                    if bool(keep.reshape(())):
                        yield el
        return Dataset(make, UNKNOWN_CARDINALITY if self._cardinality != INFINITE_CARDINALITY
                       else INFINITE_CARDINALITY, "FilterDataset")

    def shuffle(self, buffer_size, seed=None, reshuffle_each_iteration=True, name=None):
        """Elements in random order, drawn from a buffer of ``buffer_size`` (tf.data's algorithm:
        a buffer as large as the dataset gives a uniform shuffle).

        seed: an int for a reproducible order; None draws one from deepgpu's
        random state (``deepgpu.set_seed`` makes it reproducible).
        reshuffle_each_iteration: a new order each pass (each epoch), else the
        same order every pass.
        """
        buffer_size = _positive(buffer_size, "shuffle()", "buffer_size")
        unseeded = seed is None
        if seed is None:
            from ..backends.base import Backend
            seed = int(Backend._rng.integers(2 ** 31))
        src = self
        passes = [0]
        lock = threading.Lock()

        def make():
            with lock:
                epoch = passes[0] if reshuffle_each_iteration else 0
                passes[0] += 1
            # under a DataParallel fit an unseeded shuffle takes the ranks' shared seed (same order on all)
            shared = _SHARED_SHUFFLE_SEED[0] if unseeded else None
            rng = np.random.default_rng([seed if shared is None else shared + buffer_size, epoch])
            buf = []
            with _closing(iter(src)) as it:
                for el in it:
                    if len(buf) < buffer_size:
                        buf.append(el)
                        continue
                    j = int(rng.integers(buffer_size))
                    out, buf[j] = buf[j], el
                    yield out
                rng.shuffle(buf)
                yield from buf
        return Dataset(make, self._cardinality, "ShuffleDataset")

    def batch(self, batch_size, drop_remainder=False, num_parallel_calls=None, deterministic=None,
              small_last_batch=None, smallLastBatch=None, name=None):  # noqa: N803 - TF.js spelling
        """Consecutive elements stacked into batches of ``batch_size`` (a new first axis).

        drop_remainder: drop a last, smaller batch (TF.js: ``small_last_batch=False``).
        Raises ValueError naming the element and the shapes when the elements of
        one batch differ in shape (use ``padded_batch`` for sequences).
        """
        batch_size = _positive(batch_size, "batch()", "batch_size")
        for v in (small_last_batch, smallLastBatch):
            if v is not None:
                drop_remainder = not v
        src = self
        fused = getattr(self, "_parallel_map", None)
        if fused is not None:
            # A parallel map then batch: each worker task maps and stacks a whole batch, so the
            # caller's thread handles one future per batch instead of one per element.
            msrc, fn, workers, ordered, processes = fused
            task = _MapAndStack(fn)

            def make():
                groups = _groups(iter(msrc), batch_size, drop_remainder)
                return _workers.parallel_map(groups, task, workers, ordered=ordered,
                                             use_multiprocessing=processes, in_flight=2 * workers, chunk=1)
        else:
            def make():
                with _closing(iter(src)) as it:
                    yield from _batches(it, batch_size, drop_remainder, _stack)
        return Dataset(make, _batched_card(self._cardinality, batch_size, drop_remainder), "BatchDataset")

    def padded_batch(self, batch_size, padded_shapes=None, padding_values=None, drop_remainder=False, name=None):
        """Batches whose components are padded (at the end of each axis) to a common shape.

        padded_shapes: a nest like the element of shapes (``None`` or -1 for "the
        longest in this batch"); by default every axis is padded to the longest.
        padding_values: a nest of scalars (default 0, or "" for strings). Raises
        ValueError when a component is larger than its padded shape.
        """
        batch_size = _positive(batch_size, "padded_batch()", "batch_size")
        src = self

        def stack(elements):
            first = elements[0]
            shapes = padded_shapes if padded_shapes is not None else map_structure(lambda _: None, first)
            values = padding_values if padding_values is not None else map_structure(lambda _: None, first)
            cols = [[to_numpy(x) for x in col] for col in _builtin_zip(*[flatten(e) for e in elements])]
            shape_leaves = _leaves_like(first, shapes, "padded_shapes")
            value_leaves = _leaves_like(first, values, "padding_values")
            out = [_pad_stack(col, shp, val, i) for i, (col, shp, val)
                   in enumerate(_builtin_zip(cols, shape_leaves, value_leaves))]
            return pack_like(first, out)

        def make():
            with _closing(iter(src)) as it:
                yield from _batches(it, batch_size, drop_remainder, stack)
        return Dataset(make, _batched_card(self._cardinality, batch_size, drop_remainder), "PaddedBatchDataset")

    def unbatch(self, name=None):
        """Each batch split back into its rows (along the first axis)."""
        src = self

        def make():
            with _closing(iter(src)) as it:
                for el in it:
                    leaves = [to_numpy(a) for a in flatten(el)]
                    n = {a.shape[0] if a.ndim else None for a in leaves}
                    if len(n) != 1 or None in n:
                        raise ValueError(f"unbatch(): the components need one common first dimension, got shapes "
                                         f"{[a.shape for a in leaves]}")
                    for i in range(n.pop()):
                        yield pack_like(el, [a[i] for a in leaves])
        return Dataset(make, UNKNOWN_CARDINALITY if self._cardinality != INFINITE_CARDINALITY
                       else INFINITE_CARDINALITY, "UnbatchDataset")

    def repeat(self, count=None, name=None):
        """The dataset ``count`` times (None or -1: forever); each pass is a fresh iteration."""
        count = -1 if count is None else _count(count, "repeat()")
        src = self
        card = self._cardinality
        if count == -1:
            new = INFINITE_CARDINALITY if card != 0 else 0
        elif card >= 0:
            new = card * count
        else:
            new = card
        new = 0 if count == 0 else new

        def make():
            n = 0
            while count == -1 or n < count:
                empty = True
                with _closing(iter(src)) as it:
                    for el in it:
                        empty = False
                        yield el
                n += 1
                if empty:  # repeating nothing forever would hang
                    return
        return Dataset(make, new, "RepeatDataset")

    def take(self, count, name=None):
        """At most the first ``count`` elements (-1: all)."""
        count = _count(count, "take()")
        src = self
        card = self._cardinality
        new = card if count == -1 else (count if card in (INFINITE_CARDINALITY,) else
                                        (min(card, count) if card >= 0 else UNKNOWN_CARDINALITY))

        def make():
            if count == 0:
                return
            with _closing(iter(src)) as it:
                for i, el in enumerate(it):
                    yield el
                    if count != -1 and i + 1 >= count:
                        return
        return Dataset(make, new, "TakeDataset")

    def skip(self, count, name=None):
        """All but the first ``count`` elements (-1: skip all)."""
        count = _count(count, "skip()")
        src = self
        card = self._cardinality
        if count == -1:
            new = 0
        elif card >= 0:
            new = max(card - count, 0)
        else:
            new = card

        def make():
            with _closing(iter(src)) as it:
                for i, el in enumerate(it):
                    if count == -1 or i < count:
                        continue
                    yield el
        return Dataset(make, new, "SkipDataset")

    def shard(self, num_shards, index, name=None):
        """Every ``num_shards``-th element starting at ``index`` (tf.data's ``shard``): shard
        ``index`` of ``num_shards``; the shards together hold every element once. Raises
        ValueError unless 1 <= num_shards and 0 <= index < num_shards."""
        for v, what in ((num_shards, "num_shards"), (index, "index")):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"shard(): {what} must be an integer, got {v!r}")
        if num_shards < 1 or not 0 <= index < num_shards:
            raise ValueError(f"shard(): needs num_shards >= 1 and 0 <= index < num_shards, got "
                             f"num_shards={num_shards}, index={index}")
        src = self
        card = self._cardinality
        new = max(0, -(-(card - index) // num_shards)) if card >= 0 else card

        def make():
            with _closing(iter(src)) as it:
                for i, el in enumerate(it):
                    if i % num_shards == index:
                        yield el
        return Dataset(make, new, "ShardDataset")

    def concatenate(self, dataset, name=None):
        """This dataset's elements, then ``dataset``'s."""
        a, b = self, dataset
        ca, cb = a.cardinality(), b.cardinality()
        card = INFINITE_CARDINALITY if INFINITE_CARDINALITY in (ca, cb) else (
            UNKNOWN_CARDINALITY if UNKNOWN_CARDINALITY in (ca, cb) else ca + cb)

        def make():
            for d in (a, b):
                with _closing(iter(d)) as it:
                    yield from it
        return Dataset(make, card, "ConcatenateDataset")

    def enumerate(self, start=0, name=None):
        """Elements as ``(index, element)``, the index an int64 0-d array."""
        src = self

        def make():
            with _closing(iter(src)) as it:
                for i, el in enumerate(it, start):
                    yield np.asarray(i, np.int64), el
        return Dataset(make, self._cardinality, "EnumerateDataset")

    def cache(self, filename="", name=None):
        """Keep the elements after the first complete pass and replay them afterwards.

        filename: "" keeps them in memory; a path writes them to that file
        (pickled, written to ``<path>.tmp`` and renamed when the pass completes,
        so an interrupted pass leaves no half cache) and later passes, in this
        process or another, read it; "device" stages them in device memory (see
        deepgpu.data.device; used by ``fit``). A pass stopped early caches nothing.
        """
        if filename == "device":
            from .device import DeviceCachedDataset
            return DeviceCachedDataset(self)
        src = self
        store = {"elements": None}
        lock = threading.Lock()
        path = os.fspath(filename)

        def make_memory():
            if store["elements"] is not None:
                yield from store["elements"]
                return
            got = []
            with _closing(iter(src)) as it:
                for el in it:
                    got.append(el)
                    yield el
            with lock:
                store["elements"] = got

        def make_file():
            if os.path.exists(path):
                with open(path, "rb") as f:
                    while True:
                        try:
                            yield pickle.load(f)
                        except EOFError:
                            return
            tmp = f"{path}.tmp.{os.getpid()}.{threading.get_ident()}"
            complete = False
            try:
                with open(tmp, "wb") as f, _closing(iter(src)) as it:
                    for el in it:
                        pickle.dump(el, f, protocol=pickle.HIGHEST_PROTOCOL)
                        yield el
                complete = True
                os.replace(tmp, path)
            finally:
                if not complete and os.path.exists(tmp):
                    os.remove(tmp)
        return Dataset(make_file if path else make_memory, self._cardinality, "CacheDataset")

    def prefetch(self, buffer_size=AUTOTUNE, name=None):
        """Prepare up to ``buffer_size`` elements ahead in a background thread (AUTOTUNE: 2),
        so the pipeline runs while the caller computes. Closing the iterator stops the thread."""
        size = 2 if buffer_size in (None, AUTOTUNE) else _positive(buffer_size, "prefetch()", "buffer_size")
        src = self

        def make():
            p = _workers.Prefetcher(lambda: iter(src), size)
            try:
                yield from p
            finally:
                p.close()
        return Dataset(make, self._cardinality, "PrefetchDataset")

    def interleave(self, map_func, cycle_length=None, block_length=1, num_parallel_calls=None,
                   deterministic=None, name=None):
        """``map_func(element)`` returns a Dataset for each element; elements are taken from
        ``cycle_length`` of them at a time, ``block_length`` from each in turn (tf.data's order).

        num_parallel_calls: each open inner dataset is then read ahead in its own
        thread (a bounded queue of ``block_length`` x 2 elements).
        """
        workers = _workers.resolve_calls(num_parallel_calls, "interleave()")
        cycle = _workers.default_workers() if cycle_length in (None, AUTOTUNE) else \
            _positive(cycle_length, "interleave()", "cycle_length")
        block = _positive(block_length, "interleave()", "block_length")
        src = self

        def open_inner(el):
            ds = _call(map_func, el)
            if not isinstance(ds, Dataset):
                raise TypeError(f"interleave(): map_func must return a Dataset, got {type(ds).__name__}")
            if workers:
                return _workers.Prefetcher(lambda: iter(ds), 2 * block, name="deepgpu-interleave")
            return iter(ds)

        def make():
            outer = iter(src)
            active = []
            try:
                outer_done = False
                while True:
                    while not outer_done and len(active) < cycle:
                        try:
                            active.append(open_inner(next(outer)))
                        except StopIteration:
                            outer_done = True
                    if not active:
                        return
                    i = 0
                    while i < len(active):
                        it = active[i]
                        ended = False
                        for _ in range(block):
                            try:
                                yield next(it)
                            except StopIteration:
                                ended = True
                                break
                        if ended:
                            close_quietly(active.pop(i))
                            # tf.data refills the slot at once from the outer dataset.
                            if not outer_done:
                                try:
                                    active.insert(i, open_inner(next(outer)))
                                    i += 1
                                except StopIteration:
                                    outer_done = True
                        else:
                            i += 1
            finally:
                for it in active:
                    close_quietly(it)
                close_quietly(outer)
        return Dataset(make, UNKNOWN_CARDINALITY, "InterleaveDataset")

    def apply(self, transformation_func):
        return transformation_func(self)

    def with_options(self, options):
        return self


class _ElementFn:
    """``map_func`` taking a tuple element as positional arguments (a picklable wrapper)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, el):
        return map_structure(to_numpy, _call(self.fn, el))


def _zip_struct(types, shapes):
    if isinstance(types, dict):
        return {k: _zip_struct(types[k], shapes[k]) for k in types}
    if isinstance(types, tuple):
        return tuple(_zip_struct(t, s) for t, s in _builtin_zip(types, shapes))
    return TensorSpec(shapes, types)


def _conform(el, sig, i):
    if sig is None:
        return map_structure(to_numpy, el)
    if isinstance(el, list) and isinstance(sig, tuple):
        el = tuple(el)
    if not _same_structure(sig, el):
        raise ValueError(f"from_generator(): element {i} is {_describe(el)}, the output_signature expects "
                         f"{_describe(sig)}")
    out = []
    for j, (spec, leaf) in enumerate(_builtin_zip(flatten(sig), flatten(el))):
        a = to_numpy(leaf)
        if not spec.compatible(a):
            raise ValueError(f"from_generator(): element {i}, component {j}: expected shape {spec.shape}, "
                             f"got {a.shape}")
        if a.dtype != spec.dtype:
            try:
                a = a.astype(spec.dtype, casting="same_kind") if a.dtype.kind != "O" else a.astype(spec.dtype)
            except (TypeError, ValueError):
                raise ValueError(f"from_generator(): element {i}, component {j}: expected dtype "
                                 f"{spec.dtype.name}, got {a.dtype.name}") from None
        out.append(a)
    return pack_like(sig, out)


def _describe(s):
    """The nesting of ``s`` with its leaves as '·' (for messages)."""
    if isinstance(s, dict):
        return "{" + ", ".join(f"{k!r}: {_describe(v)}" for k, v in s.items()) + "}"
    if isinstance(s, tuple):
        return "(" + ", ".join(_describe(v) for v in s) + ("," if len(s) == 1 else "") + ")"
    return "·"


def _batched_card(card, batch_size, drop_remainder):
    if card < 0:
        return card
    return card // batch_size if drop_remainder else -(-card // batch_size)


class _MapAndStack:
    """A worker task of a fused map + batch: the mapped elements of one batch, stacked."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, elements):
        return _stack([self.fn(e) for e in elements])


def _groups(it, size, drop_remainder):
    try:
        group = []
        for el in it:
            group.append(el)
            if len(group) == size:
                yield group
                group = []
        if group and not drop_remainder:
            yield group
    finally:
        close_quietly(it)


def _batches(it, batch_size, drop_remainder, stack):
    buf = []
    for el in it:
        buf.append(el)
        if len(buf) == batch_size:
            yield stack(buf)
            buf = []
    if buf and not drop_remainder:
        yield stack(buf)


def _stack(elements):
    first = elements[0]
    cols = list(_builtin_zip(*[flatten(e) for e in elements]))
    out = []
    for j, col in enumerate(cols):
        arrs = [to_numpy(x) for x in col]
        shape = arrs[0].shape
        for k, a in enumerate(arrs):
            if a.shape != shape:
                comp = f" component {j}," if len(cols) > 1 else ""
                raise ValueError(f"batch():{comp} element {k} of a batch has shape {a.shape}, element 0 has "
                                 f"{shape}; elements of one batch must have the same shape (padded_batch() pads "
                                 f"sequences)")
        out.append(np.stack(arrs))
    return pack_like(first, out)


def _leaves_like(first, spec, what):
    """``spec`` (padded_shapes / padding_values) as one entry per component of ``first``;
    None means the default for every component, and a padding value may be one scalar for all."""
    if spec is None or (what == "padding_values" and not isinstance(spec, (tuple, list, dict))):
        return [spec] * len(flatten(first))
    if isinstance(first, dict):
        if not isinstance(spec, dict) or set(spec) != set(first):
            raise ValueError(f"padded_batch(): {what} {spec!r} must be a dict with the keys {list(first)}")
        return [leaf for k in first for leaf in _leaves_like(first[k], spec[k], what)]
    if isinstance(first, tuple):
        if not isinstance(spec, (tuple, list)) or len(spec) != len(first):
            raise ValueError(f"padded_batch(): {what} {spec!r} must have one entry per component "
                             f"({len(first)})")
        return [leaf for f, sp in _builtin_zip(first, spec) for leaf in _leaves_like(f, sp, what)]
    return [spec]


def _pad_stack(col, shape, value, comp):
    rank = col[0].ndim
    for a in col:
        if a.ndim != rank:
            raise ValueError(f"padded_batch(): component {comp} has ranks {sorted({x.ndim for x in col})} in one "
                             f"batch; padding needs one rank")
    longest = [max(a.shape[d] for a in col) for d in range(rank)]
    if shape is None:
        target = longest
    else:
        shape = [shape] if isinstance(shape, int) else list(shape)
        if len(shape) != rank:
            raise ValueError(f"padded_batch(): padded shape {tuple(shape)} for component {comp} has rank "
                             f"{len(shape)}, the elements have rank {rank}")
        target = [longest[d] if s in (None, -1) else int(s) for d, s in enumerate(shape)]
        for a in col:
            if any(g > t for g, t in _builtin_zip(a.shape, target)):
                raise ValueError(f"padded_batch(): component {comp} has shape {a.shape}, larger than the padded "
                                 f"shape {tuple(target)}")
    dtype = col[0].dtype
    fill = ("" if dtype.kind in "US" else 0) if value is None else value
    out = np.full([len(col)] + target, fill, dtype=dtype)
    for i, a in enumerate(col):
        out[(i,) + tuple(slice(0, s) for s in a.shape)] = a
    return out


# ------------------------------------------------------------------ TF.js spellings
def array(items):
    """A Dataset of the items of a list (TF.js ``tf.data.array``): each item an element
    (numbers and arrays become NumPy arrays; dicts and tuples stay nests)."""
    items = list(items)
    return Dataset(lambda: (map_structure(to_numpy, el) for el in items), len(items), "ArrayDataset")


def generator(generator_fn):
    """A Dataset of what ``generator_fn()`` yields, called anew each pass (TF.js ``tf.data.generator``)."""
    return Dataset.from_generator(generator_fn)


zip = Dataset.zip  # noqa: A001 - TF.js's tf.data.zip
