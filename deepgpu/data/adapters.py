"""What ``fit`` / ``evaluate`` / ``predict`` accept besides in-memory arrays (Keras 3's
``trainers/data_adapters``, one module).

A *data source* is a ``deepgpu.data.Dataset``, a ``deepgpu.utils.PyDataset``
(or Keras's, by its protocol), a Python generator / iterator / iterable of
batches, a PyTorch ``DataLoader`` or a ``tf.data.Dataset`` (both by duck
typing, so neither library is imported here). Each batch is ``x``, ``(x,)``,
``(x, y)``, ``(x, y, sample_weight)`` or TF.js's ``{"xs": x, "ys": y}``; x and
y may be arrays, tuples of arrays (several inputs / outputs) or dicts by input
/ output name.

The loop here is the training loop for such sources; it uses the model's own
step (``_train_batch``, so subclassed ``train_step`` overrides apply), metrics,
callbacks and progress bar. How an epoch ends follows Keras 3:

- without ``steps_per_epoch`` an epoch is one pass over the source;
- with ``steps_per_epoch`` the iterator carries on across epochs (a new pass
  starts when a source of known size is used up);
- when the data runs out before ``steps_per_epoch`` steps, a UserWarning says
  so (Keras's "Your input ran out of data") and the epoch ends there; an
  epoch that gets no batch at all (a used-up one-shot generator) warns and
  stops training; a one-shot validation_data used up by earlier epochs warns
  and training goes on without validation. Nothing waits forever.

Every batch is checked before its step: the same structure, rank and kind of
dtype as the first batch, the model's input shapes, the same number of samples
in x, y and sample_weight, finite values (``check_numerics``); an error names
the epoch, the step and the shapes. The first batch is read and checked
before anything changes, so a source that yields nothing or a bad first batch
leaves the model as it was.
"""
from __future__ import annotations

import collections.abc
import inspect
import itertools
import math
import warnings

import numpy as np

from . import _workers
from ..tensor import Tensor
from .dataset import INFINITE_CARDINALITY, Dataset, map_structure
from .device import staged

__all__ = ["is_data_source", "get_adapter", "EpochIterator", "fit", "evaluate", "predict", "fit_dataset",
           "evaluate_dataset"]

RAN_OUT = ("Your input ran out of data; interrupting training. Make sure that your dataset or generator can "
           "generate at least `steps_per_epoch * epochs` batches (use `.repeat()` on a Dataset).")


# ------------------------------------------------------------------ recognising sources
def _module(x):
    return type(x).__module__ or ""


def _is_torch_loader(x):
    return _module(x).startswith("torch.utils.data") and hasattr(x, "__iter__")


def _is_tf_dataset(x):
    return _module(x).startswith("tensorflow") and hasattr(x, "as_numpy_iterator") and hasattr(x, "cardinality")


def _is_py_dataset(x):
    from .py_dataset import PyDataset
    if isinstance(x, PyDataset):
        return True
    # Keras's PyDataset / Sequence, or any object with the protocol
    return (hasattr(x, "__getitem__") and hasattr(x, "__len__") and hasattr(x, "on_epoch_end")
            and not hasattr(x, "shape") and not isinstance(x, (list, tuple, dict, str, bytes)))


def is_data_source(x) -> bool:
    """True for what this module handles (not arrays, Tensors, lists / tuples / dicts of them)."""
    if x is None or isinstance(x, (str, bytes, dict, list, tuple, range)) or hasattr(x, "shape") \
            or hasattr(x, "__array__") or hasattr(x, "__cuda_array_interface__") or hasattr(x, "data_sync"):
        return False
    if isinstance(x, Dataset) or _is_torch_loader(x) or _is_tf_dataset(x) or _is_py_dataset(x):
        return True
    return isinstance(x, (collections.abc.Iterator, collections.abc.Iterable)) or inspect.isgenerator(x)


# ------------------------------------------------------------------ adapters
class _Adapter:
    """``iterator()`` gives a fresh pass of raw batches (or the same one-shot iterator);
    ``num_batches``: int, or None when unknown or endless."""

    num_batches = None
    one_shot = False
    name = "data"

    def iterator(self):
        raise NotImplementedError

    def on_epoch_begin(self):
        pass

    def on_epoch_end(self):
        pass


class _DatasetAdapter(_Adapter):
    def __init__(self, ds):
        self.ds = ds
        c = ds.cardinality()
        self.num_batches = c if c >= 0 else None
        self.infinite = c == INFINITE_CARDINALITY
        self.name = "Dataset"

    def iterator(self):
        return _workers.Prefetcher(lambda: iter(self.ds), 2)


class _IterableAdapter(_Adapter):
    """A generator / iterator (one shot: later epochs continue it) or a re-iterable object."""

    def __init__(self, x):
        self.x = x
        self.one_shot = isinstance(x, collections.abc.Iterator)
        self._shared = None
        self.name = "generator" if inspect.isgenerator(x) else type(x).__name__
        try:
            self.num_batches = None if self.one_shot else len(x)
        except TypeError:
            self.num_batches = None

    def iterator(self):
        if self.one_shot:
            # one thread reads ahead for the whole run; later epochs continue from it
            if self._shared is None:
                self._shared = _workers.Prefetcher(lambda: self.x, 2)
            return self._shared
        return _workers.Prefetcher(lambda: iter(self.x), 2)

    def close(self):
        if self._shared is not None:
            self._shared.close()


class _TorchAdapter(_IterableAdapter):
    def __init__(self, loader):
        super().__init__(loader)
        self.name = "DataLoader"


class _TFDatasetAdapter(_Adapter):
    def __init__(self, ds):
        self.ds = ds
        c = int(ds.cardinality())
        self.num_batches = c if c >= 0 else None
        self.infinite = c == -1
        self.name = "tf.data.Dataset"

    def iterator(self):
        return _workers.Prefetcher(lambda: self.ds.as_numpy_iterator(), 2)


class _PyDatasetAdapter(_Adapter):
    def __init__(self, pyds, shuffle):
        self.ds = pyds
        self.shuffle = shuffle
        self.name = type(pyds).__name__
        n = getattr(pyds, "num_batches", None) if hasattr(type(pyds), "num_batches") else len(pyds)
        self.num_batches = None if n is None else int(n)
        self.workers = max(1, int(getattr(pyds, "workers", 1) or 1))
        self.processes = bool(getattr(pyds, "use_multiprocessing", False))
        self.queue = max(1, int(getattr(pyds, "max_queue_size", 10) or 10))

    def _get(self, i):
        try:
            batch = self.ds[i]
        except IndexError as e:
            if self.num_batches is None:
                raise _EndOfData from None
            raise ValueError(f"{self.name}: __len__() returned {self.num_batches} but __getitem__({i}) raised "
                             f"IndexError ({e}); __len__ must return the number of batches") from e
        if self.num_batches is not None and _batch_len(batch) == 0:
            raise ValueError(f"{self.name}: __getitem__({i}) returned an empty batch (0 samples); does __len__() "
                             f"(= {self.num_batches}) count more batches than there are?")
        return batch

    def indices(self):
        """One pass's batch indices, in order (DataParallel gives each rank its share instead)."""
        if self.num_batches is None:
            return itertools.count()
        indices = list(range(self.num_batches))
        if self.shuffle:
            from ..backends.base import Backend
            indices = [int(i) for i in Backend._rng.permutation(self.num_batches)]
        return indices

    def iterator(self):
        indices = self.indices()
        if self.workers == 1 and not self.processes:
            return _until_end((self._get(i) for i in indices))
        return _until_end(_workers.parallel_map(indices, self._get, self.workers, ordered=True,
                                                use_multiprocessing=self.processes, in_flight=self.queue,
                                                chunk=1))

    def on_epoch_begin(self):
        getattr(self.ds, "on_epoch_begin", lambda: None)()

    def on_epoch_end(self):
        getattr(self.ds, "on_epoch_end", lambda: None)()


class _EndOfData(Exception):
    """An endless PyDataset's __getitem__ raised IndexError: the data ends here."""


def _until_end(it):
    try:
        while True:
            try:
                yield next(it)
            except StopIteration:
                return
            except _EndOfData:
                return
    finally:
        _workers.close_quietly(it)


class _ArrayAdapter(_Adapter):
    """In-memory arrays given with a data source (e.g. x arrays, validation_data a Dataset)."""

    def __init__(self, x, y, sw, batch_size, shuffle):
        self.parts = (x, y, sw)
        self.n = _batch_len(x)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.num_batches = -(-self.n // batch_size)
        self.name = "arrays"

    def iterator(self):
        from ..backends.base import Backend
        order = Backend._rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        x, y, sw = self.parts

        def gen():
            for s in range(0, self.n, self.batch_size):
                idx = order[s:s + self.batch_size]
                take = (lambda a: None if a is None else map_structure(lambda v: np.asarray(v)[idx], a))
                yield take(x), take(y), take(sw)
        return gen()


def get_adapter(x, y=None, sample_weight=None, batch_size=None, shuffle=False, where="fit"):
    """The adapter for ``x`` (a data source, or arrays with y / sample_weight)."""
    if is_data_source(x):
        if y is not None:
            raise ValueError(f"{where}(): y must not be given when x is a {_kind(x)} (it yields the targets)")
        if sample_weight is not None:
            raise ValueError(f"{where}(): sample_weight must not be given when x is a {_kind(x)}; yield "
                             f"(x, y, sample_weight) batches instead")
        if isinstance(x, Dataset):
            return _DatasetAdapter(x)
        if _is_tf_dataset(x):
            return _TFDatasetAdapter(x)
        if _is_torch_loader(x):
            return _TorchAdapter(x)
        if _is_py_dataset(x):
            return _PyDatasetAdapter(x, shuffle)
        return _IterableAdapter(x)
    if isinstance(x, (list, tuple)) and not x:
        raise ValueError(f"{where}(): x is empty")
    x = map_structure(_to_host, x if not isinstance(x, list) else tuple(x))
    return _ArrayAdapter(x, None if y is None else map_structure(
        _to_host, y if not isinstance(y, list) else tuple(y)), sample_weight, batch_size or 32, shuffle)


def _kind(x):
    if isinstance(x, Dataset):
        return "Dataset"
    if _is_py_dataset(x):
        return "PyDataset"
    return "generator" if inspect.isgenerator(x) else type(x).__name__


def _to_host(a):
    """A batch component as a NumPy array; a deepgpu Tensor stays as it is (on its device)."""
    if isinstance(a, Tensor):
        return a
    if hasattr(a, "detach"):  # torch
        a = a.detach().cpu()
    if hasattr(a, "numpy") and not isinstance(a, np.ndarray):
        return np.asarray(a.numpy())
    return np.asarray(a)


def _dt(a):
    return np.dtype(str(a.dtype))


def _batch_len(batch):
    from .dataset import flatten
    leaves = flatten(batch if not isinstance(batch, list) else tuple(batch))
    for leaf in leaves:
        shape = getattr(leaf, "shape", None)
        if shape is not None and len(shape):
            return int(shape[0])
        if isinstance(leaf, list):
            return len(leaf)
    return 1


# ------------------------------------------------------------------ epochs
class EpochIterator:
    """Raw batches of one epoch at a time from an adapter, with Keras 3's rules (module docstring)."""

    def __init__(self, adapter, steps_per_epoch=None):
        self.adapter = adapter
        self.steps_per_epoch = steps_per_epoch
        self.num_batches = adapter.num_batches
        self._it = None
        self._seen = 0
        self.ran_out = False

    @property
    def steps(self):
        """The steps of an epoch when known, else None."""
        if self.steps_per_epoch is not None:
            return self.steps_per_epoch
        return self.num_batches

    def _restart(self):
        if self._it is not None and not self.adapter.one_shot:
            _workers.close_quietly(self._it)
        self._it = self.adapter.iterator()
        self._seen = 0

    def epoch(self):
        """Yield one epoch's raw batches; afterwards ``ran_out`` says whether the data ended early."""
        self.ran_out = False
        self.adapter.on_epoch_begin()
        if self._it is None or self.steps_per_epoch is None:
            self._restart()
        limit = self.steps
        n = 0
        while limit is None or n < limit:
            if self.steps_per_epoch is not None and self.num_batches is not None and self._seen >= self.num_batches:
                self.ran_out = True  # a source of known size, used up before steps_per_epoch
                break
            try:
                el = next(self._it)
            except StopIteration:
                if self.steps_per_epoch is not None:
                    self.ran_out = True
                elif self.num_batches is None and not self.adapter.one_shot:
                    self.num_batches = self._seen  # known from now on (the progress bar shows it)
                if not self.adapter.one_shot:
                    self._it = None
                break
            self._seen += 1
            n += 1
            yield el
        if self.steps_per_epoch is not None and self.num_batches is not None and self._seen >= self.num_batches:
            self._restart()  # the next epoch starts a new pass
        self.adapter.on_epoch_end()

    def close(self):
        if self._it is not None:
            _workers.close_quietly(self._it)
            self._it = None
        close = getattr(self.adapter, "close", None)
        if close is not None:
            close()


# ------------------------------------------------------------------ one batch
def unpack(el):
    """(x, y, sample_weight) of one raw batch (Keras's ``unpack_x_y_sample_weight``; TF.js's
    ``{"xs", "ys"}``)."""
    if isinstance(el, list):
        el = tuple(el)
    if isinstance(el, dict) and set(el) == {"xs", "ys"}:
        return el["xs"], el["ys"], None
    if isinstance(el, tuple) and not hasattr(el, "_fields"):
        if len(el) == 1:
            return el[0], None, None
        if len(el) == 2:
            return el[0], el[1], None
        if len(el) == 3:
            return el
        raise ValueError(f"a batch must be x, (x,), (x, y) or (x, y, sample_weight); got a tuple of {len(el)}")
    return el, None, None


class _Signature:
    """The first batch's (rank, dtype kind, dtype) per component, to compare later batches with."""

    def __init__(self, xs, ys):
        self.x = [(a.ndim, _dt(a).kind, _dt(a), tuple(a.shape)) for a in xs]
        self.y = None if ys is None else [(a.ndim, _dt(a).kind, _dt(a), tuple(a.shape)) for a in ys]


def _kind_of(dtype):
    k = dtype.kind
    return "f" if k in "fc" else ("i" if k in "iu" else k)


def prepare(model, el, where, step, epoch, first, need_y, class_weight=None, check_numerics=True):
    """One raw batch as host arrays (xs, ys, sw), checked; raises ValueError naming the step."""
    from ..models import training as T

    at = _step_at(where, epoch, step)
    x, y, sw = unpack(el)
    if need_y and y is None:
        raise ValueError(f"{at}: the data yielded a batch without targets; {where}() needs (x, y) or "
                         f"(x, y, sample_weight) batches")
    x = map_structure(_to_host, x if not isinstance(x, list) else tuple(x))
    try:
        xs = model._inputs_list(x, "x", where)
        ys = None if (y is None or not need_y) else model._targets_list(
            map_structure(_to_host, y if not isinstance(y, list) else tuple(y)), "y", where)
    except ValueError as e:
        raise ValueError(_at(at, where, e)) from None
    host = (lambda a: a if isinstance(a, Tensor) else np.asarray(a))
    xs = [host(a) for a in xs]
    ys = None if ys is None else [host(a) for a in ys]
    sw = None if (sw is None or not need_y) else _to_host(sw)
    n = xs[0].shape[0] if xs[0].ndim else None
    counts = [a.shape[0] if a.ndim else None for a in xs + (ys or []) + ([] if sw is None else [sw])]
    if n is None or len(set(counts)) != 1:
        raise ValueError(f"{at}: the batch's arrays need one common first (batch) dimension, got shapes "
                         f"x {[a.shape for a in xs]}" + ("" if ys is None else f", y {[a.shape for a in ys]}")
                         + ("" if sw is None else f", sample_weight {sw.shape}"))
    if n == 0:
        raise ValueError(f"{at}: the data yielded an empty batch (0 samples, x shapes {[a.shape for a in xs]})")
    if first is not None:
        for what, got, ref in (("x", xs, first.x), ("y", ys, first.y)):
            if got is None or ref is None:
                continue
            for i, (a, (rank, kind, dt, shape)) in enumerate(zip(got, ref)):
                if a.ndim != rank or _kind_of(_dt(a)) != _kind_of(dt):
                    raise ValueError(f"{at}: {what}[{i}] has shape {tuple(a.shape)} and dtype {_dt(a)}; "
                                     f"the first batch had shape {shape} and dtype {dt}; every batch must have "
                                     f"the same rank and dtype")
    try:
        model._check_input_shapes(xs, "x", where)
        if ys is not None:
            model._check_targets(ys, f"{at}: y")
        if check_numerics:
            # batches already on the device (cache("device")) are not read back each step
            T._check_finite_data([a for a in xs if not isinstance(a, Tensor)],
                                 [a for a in (ys or []) if not isinstance(a, Tensor)],
                                 None if isinstance(sw, Tensor) else sw, "", where)
    except ValueError as e:
        raise ValueError(_at(at, where, e)) from None
    if class_weight and ys is not None:
        sw = model._class_weights(ys, class_weight)
    return xs, ys, sw


def _prepared(model, items, where, epoch, sig_box, need_y, class_weight, check_numerics):
    """(step, raw batch, or None and a prepared one) -> (step, prepared host batch); the first
    batch's signature goes to ``sig_box[0]``."""
    try:
        for step, el, batch in items:
            if batch is None:
                batch = prepare(model, el, where, step, epoch, sig_box[0], need_y, class_weight, check_numerics)
            if sig_box[0] is None:
                sig_box[0] = _Signature(batch[0], batch[1])
            yield step, batch
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()


def _check_labels_quietly(model, ys, where, at):
    try:
        return model._check_labels(ys, "y", where)
    except ValueError as e:
        raise ValueError(_at(at, where, e)) from None


def _step_at(where, epoch, step):
    """Where a batch was read: epoch is the index of a training epoch, a label
    ("epoch 2, validation_data") for a validation pass, or None (evaluate, predict)."""
    if epoch is None:
        return f"{where}(): step {step + 1}"
    return f"{where}(): {epoch if isinstance(epoch, str) else f'epoch {epoch + 1}'}, step {step + 1}"


def _at(at, where, error):
    """``error``'s message after ``at`` (which names the call, epoch and step), without a second
    ``where():`` from the model's own checks."""
    msg = str(error)
    if msg.startswith(at):
        return msg
    own = f"{where}(): "
    return f"{at}: {msg[len(own):] if msg.startswith(own) else msg}"


# ------------------------------------------------------------------ the loops
def _steps_arg(where, name, v):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{where}(): {name} must be an integer >= 1 or None, got {v!r}")
    return v


def fit(model, x, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
        validation_data=None, shuffle=True, class_weight=None, sample_weight=None, initial_epoch=0,
        steps_per_epoch=None, validation_steps=None, validation_batch_size=None, validation_freq=1,
        check_numerics=True):
    """``model.fit`` when x or validation_data is a data source (see the module docstring)."""
    from .. import callbacks as cb_mod
    from ..models import training as T
    from ..models.progbar import Progbar

    w = "fit"
    model._require_compiled()
    epochs = T._int_arg(w, "epochs", epochs, 0)
    initial_epoch = T._int_arg(w, "initial_epoch", initial_epoch, 0)
    if initial_epoch > epochs:
        raise ValueError(f"fit(): initial_epoch={initial_epoch} is greater than epochs={epochs}")
    steps_per_epoch = _steps_arg(w, "steps_per_epoch", steps_per_epoch)
    validation_steps = _steps_arg(w, "validation_steps", validation_steps)
    validation_freq = T._int_arg(w, "validation_freq", validation_freq, 1)
    if verbose not in ("auto", 0, 1, 2):
        raise ValueError(f"fit(): verbose must be 'auto', 0, 1 or 2, got {verbose!r}")
    verbose = 1 if verbose == "auto" else int(verbose)
    if validation_split and is_data_source(x):
        raise ValueError(f"fit(): validation_split is only supported for arrays, not a {_kind(x)}; "
                         f"pass validation_data")
    if class_weight is not None:
        T._check_class_weight(class_weight, w)
    if batch_size is not None and not is_data_source(x):
        batch_size = T._int_arg(w, "batch_size", batch_size, 1)
    if validation_split and validation_data is None and not is_data_source(x):
        # arrays that came here for validation_steps: Keras's split, the last samples validate
        if y is None:
            raise ValueError("fit(): needs targets y")
        host = (lambda a: None if a is None else map_structure(
            _to_host, a if not isinstance(a, list) else tuple(a)))
        x, y, sample_weight = host(x), host(y), host(sample_weight)
        n = _batch_len(x)
        cut = int(n * (1 - validation_split))
        if cut in (0, n):
            raise ValueError(f"fit(): validation_split={validation_split} leaves no samples on one side of {n}")
        part = (lambda a, sl: None if a is None else map_structure(lambda v: v[sl], a))
        validation_data = (part(x, slice(cut, None)), part(y, slice(cut, None)),
                           part(sample_weight, slice(cut, None)))
        x, y, sample_weight = part(x, slice(0, cut)), part(y, slice(0, cut)), part(sample_weight, slice(0, cut))
    adapter = get_adapter(x, y, sample_weight, batch_size, shuffle, w)
    dist = getattr(model, "_distribute", None)
    if dist is not None:  # this rank's share of every global batch (deepgpu/distributed/sources.py)
        from ..distributed import sources
        adapter, verbose, callbacks = sources.shard_source(dist, adapter, steps_per_epoch, verbose, callbacks)
    if getattr(adapter, "infinite", False) and steps_per_epoch is None:
        raise ValueError(f"fit(): the {adapter.name} is infinite (repeat() without a count); give steps_per_epoch")
    train = EpochIterator(adapter, steps_per_epoch)
    val = None
    if validation_data is not None:
        if is_data_source(validation_data):
            val_adapter = get_adapter(validation_data, where=w)
        else:
            if not isinstance(validation_data, (list, tuple)) or len(validation_data) not in (2, 3):
                raise ValueError("fit(): validation_data must be (x_val, y_val), (x_val, y_val, sample_weight) or "
                                 f"a data source, got {T._short(validation_data)}")
            vd = list(validation_data) + [None]
            val_adapter = get_adapter(vd[0], vd[1], vd[2], validation_batch_size or batch_size or 32, False, w)
        if getattr(val_adapter, "infinite", False) and validation_steps is None:
            raise ValueError("fit(): validation_data is infinite; give validation_steps")
        val = EpochIterator(val_adapter, validation_steps)
    try:
        # The first batch is read and checked before anything changes.
        epoch_gen = train.epoch()
        try:
            first_el = next(epoch_gen)
        except StopIteration:
            raise ValueError(f"fit(): the {adapter.name} yielded no batches; nothing to train on") from None
        first_batch = prepare(model, first_el, w, 0, initial_epoch, None, True, class_weight, check_numerics)
        sig = _Signature(first_batch[0], first_batch[1])
        if dist is not None and not dist.synced:  # ranks agree on the model before any callback opens a file
            dist.first_step(model, first_batch[0])

        if isinstance(callbacks, dict):
            callbacks = [cb_mod.LambdaCallback(**callbacks)]
        history = cb_mod.History()
        cbs = T._Callbacks(list(callbacks or []) + [history], model,
                           {"epochs": epochs, "steps": train.steps, "verbose": verbose})
        model.stop_training = False
        model.history = history
        _loop(model, train, val, epoch_gen, first_batch, sig, cbs, epochs, initial_epoch, verbose,
              validation_freq, class_weight, check_numerics, Progbar)
        return history
    finally:
        train.close()
        if val is not None:
            val.close()


def _run_step(model, B, dev, ticket, host_ys, train, where, step, epoch, checked):
    """One train / test step on a staged batch ``dev``; labels are checked on the host copy
    (``host_ys``; device-resident labels once per Tensor)."""
    from ..models import training as T
    xb, yb, swb = dev
    at = _step_at(where, epoch, step)
    host = [a for a in host_ys if not isinstance(a, Tensor) or id(a) not in checked]
    trusted = _check_labels_quietly(model, host_ys, where, at) if host else True
    checked.update(id(a) for a in host_ys if isinstance(a, Tensor))
    B.wait_staged(ticket)
    with T._trusting_labels(trusted):
        if train:
            model._train_batch(xb, yb, swb)
        else:
            model._test_batch(xb, yb, swb)


def _loop(model, train, val, epoch_gen, first_batch, sig, cbs, epochs, initial_epoch, verbose, validation_freq,
          class_weight, check_numerics, Progbar):
    from .. import backends
    w = "fit"
    B = backends.current()
    checked = set()  # device-resident label Tensors already checked
    cbs("on_train_begin", {})
    # callbacks.BackupAndRestore: a data source resumes at the saved epoch (its steps run again)
    initial_epoch = model.__dict__.pop("_resume_at", (initial_epoch, 0))[0]
    epoch_logs = {}
    nan_reported = False
    validated = False
    try:
        for epoch in range(initial_epoch, epochs):
            if model.stop_training:
                break
            model._reset_metrics()
            cbs("on_epoch_begin", epoch, {})
            if verbose:
                print(f"Epoch {epoch + 1}/{epochs}")
            if epoch_gen is None:
                epoch_gen = train.epoch()
                raw = ((s, el, None) for s, el in enumerate(epoch_gen))
            else:
                raw = itertools.chain([(0, None, first_batch)],
                                      ((s, el, None) for s, el in enumerate(epoch_gen, 1)))
            batches = staged(_prepared(model, raw, w, epoch, [sig], True, class_weight, check_numerics), B)
            bar = Progbar(train.steps, verbose=verbose)
            done = 0
            for step, host, dev, ticket in batches:
                cbs("on_train_batch_begin", step, {})
                _run_step(model, B, dev, ticket, host[1], True, w, step, epoch, checked)
                done = step + 1
                cbs("on_train_batch_end", step, model._lazy_logs())
                bar.update(done, lambda: list(model._read_metrics().items()))
                if model.stop_training:
                    break
            batches.close()
            epoch_gen.close()
            epoch_gen = None
            if done == 0:
                warnings.warn(f"fit(): epoch {epoch + 1} got no batch. {RAN_OUT}", UserWarning, stacklevel=2)
                model.stop_training = True
                break
            if train.ran_out:
                warnings.warn(f"fit(): epoch {epoch + 1} ended after {done} of {train.steps} steps. {RAN_OUT}",
                              UserWarning, stacklevel=2)
            epoch_logs = model._read_metrics()
            loss = epoch_logs.get("loss")
            if not nan_reported and loss is not None and not math.isfinite(loss):
                nan_reported = True
                warnings.warn(f"fit(): the loss became {loss} in epoch {epoch + 1}/{epochs}", RuntimeWarning,
                              stacklevel=2)
            if val is not None and (epoch + 1) % validation_freq == 0:
                # a one-shot source used up by earlier epochs: Keras warns and trains on
                vlogs = _evaluate_loop(model, val, "fit", cbs, 0, used_up_ok=val.adapter.one_shot and validated,
                                       epoch=f"epoch {epoch + 1}, validation_data")
                validated = True
                if vlogs is not None:
                    epoch_logs.update({"val_" + k: v for k, v in vlogs.items()})
            if getattr(model, "_distribute", None) is not None:  # every rank's callbacks decide alike
                epoch_logs = model._distribute.average_logs(epoch_logs)
            bar.target = bar.target if bar.target is not None else done
            bar.update(done, lambda: list(epoch_logs.items()), final=True)
            cbs("on_epoch_end", epoch, epoch_logs)
        if model.optimizer is not None:  # use_ema: the variables take their moving averages
            model.optimizer.finalize_variable_values(model._vars_to_train())
    finally:
        if epoch_gen is not None:
            epoch_gen.close()
        cbs("on_train_end", epoch_logs)


def _evaluate_loop(model, it, where, cbs, verbose, check_numerics=True, used_up_ok=False, epoch=None):
    """The logs of one evaluation pass; None when it got no batch and ``used_up_ok`` (a warning).
    epoch: as errors name it (fit's validation passes say which epoch)."""
    from ..models.progbar import Progbar
    model._reset_metrics()
    if cbs:
        cbs("on_test_begin", {})
    from .. import backends
    B = backends.current()
    bar = Progbar(it.steps, verbose=verbose)
    done = 0
    gen = it.epoch()
    batches = staged(_prepared(model, ((s, el, None) for s, el in enumerate(gen)), where, epoch, [None], True, None,
                               check_numerics), B)
    checked = set()
    try:
        for step, host, dev, ticket in batches:
            if cbs:
                cbs("on_test_batch_begin", step, {})
            _run_step(model, B, dev, ticket, host[1], False, where, step, epoch, checked)
            done = step + 1
            if cbs:
                cbs("on_test_batch_end", step, model._lazy_logs())
            bar.update(done, lambda: list(model._read_metrics().items()))
    finally:
        batches.close()
        gen.close()
    if done == 0:
        if not used_up_ok:
            src = f"validation_data (a {it.adapter.name})" if where == "fit" else f"the {it.adapter.name}"
            raise ValueError(f"{where}(): {src} yielded no batches to evaluate on")
        warnings.warn(f"{where}(): validation_data (a {it.adapter.name}) is used up: no validation this epoch; "
                      f"training goes on. Pass a source that can be read again (a Dataset, a PyDataset) or one "
                      f"that yields validation_steps batches for every epoch", UserWarning, stacklevel=3)
        if cbs:
            cbs("on_test_end", {})
        return None
    if it.ran_out:
        warnings.warn(f"{where}(): the data ended after {done} of {it.steps} steps", UserWarning, stacklevel=2)
    logs = model._read_metrics()
    bar.update(done, lambda: list(logs.items()), final=True)
    if cbs:
        cbs("on_test_end", logs)
    return logs


def evaluate(model, x, y=None, batch_size=None, verbose=0, sample_weight=None, steps=None, callbacks=None,
             return_dict=False, check_numerics=True):
    """``model.evaluate`` on a data source: a float, a list, or a dict of the results."""
    from ..models import training as T
    model._require_compiled()
    steps = _steps_arg("evaluate", "steps", steps)
    adapter = get_adapter(x, y, sample_weight, batch_size, False, "evaluate")
    if getattr(adapter, "infinite", False) and steps is None:
        raise ValueError("evaluate(): the data is infinite; give steps")
    it = EpochIterator(adapter, steps)
    cbs = T._Callbacks(callbacks, model, {"verbose": verbose, "steps": it.steps}) if callbacks else None
    try:
        logs = _evaluate_loop(model, it, "evaluate", cbs, verbose, check_numerics)
    finally:
        it.close()
    if return_dict:
        return logs
    vals = list(logs.values())
    return vals[0] if len(vals) == 1 else vals


def predict(model, x, batch_size=None, verbose=0, steps=None, callbacks=None):
    """``model.predict`` on a data source: the outputs of every batch, concatenated (Tensors).
    The targets in ``(x, y)`` batches are ignored, as in Keras."""
    from .. import ops
    from ..autograd import no_grad
    from ..models import training as T
    from ..models.progbar import Progbar

    steps = _steps_arg("predict", "steps", steps)
    adapter = get_adapter(x, None, None, batch_size, False, "predict")
    if getattr(adapter, "infinite", False) and steps is None:
        raise ValueError("predict(): the data is infinite; give steps")
    it = EpochIterator(adapter, steps)
    cbs = T._Callbacks(callbacks, model, {"verbose": verbose, "steps": it.steps}) if callbacks else None
    if cbs:
        cbs("on_predict_begin", {})
    from .. import backends
    B = backends.current()
    bar = Progbar(it.steps, verbose=verbose)
    parts = None
    gen = it.epoch()
    batches = staged(_prepared(model, ((s, el, None) for s, el in enumerate(gen)), "predict", None, [None], False,
                               None, False), B)
    done = 0
    try:
        with no_grad():
            for step, _host, (xb, _, _), ticket in batches:
                if cbs:
                    cbs("on_predict_batch_begin", step, {})
                B.wait_staged(ticket)
                predict_batch = getattr(model, "_predict_batch", None)
                out = predict_batch(xb) if predict_batch else model(xb if len(xb) > 1 else xb[0], training=False)
                outs = model._outs_list(out)
                parts = [[o] for o in outs] if parts is None else [p + [o] for p, o in zip(parts, outs)]
                done = step + 1
                if cbs:
                    cbs("on_predict_batch_end", step, {"outputs": outs})
                bar.update(done)
    finally:
        batches.close()
        gen.close()
        it.close()
    if parts is None:
        raise ValueError(f"predict(): the {adapter.name} yielded no batches")
    bar.update(done, final=True)
    if cbs:
        cbs("on_predict_end", {})
    res = [p[0] if len(p) == 1 else ops.concat(p, axis=0) for p in parts]
    return res[0] if len(res) == 1 else res


# ------------------------------------------------------------------ TF.js
_TFJS_ARGS = {"epochs": "epochs", "batchesPerEpoch": "steps_per_epoch", "validationData": "validation_data",
              "validationBatches": "validation_steps", "callbacks": "callbacks", "verbose": "verbose",
              "initialEpoch": "initial_epoch", "classWeight": "class_weight", "yieldEvery": None}


def _tfjs_config(args, where, python_names):
    """TF.js config keys as ``fit``'s keywords; a key neither spelling knows is named in a ValueError."""
    out = {}
    for k, v in (args or {}).items():
        if k in _TFJS_ARGS:
            if _TFJS_ARGS[k]:
                out[_TFJS_ARGS[k]] = v
        elif k in python_names:
            out[k] = v
        else:
            raise ValueError(f"{where}(): unknown config key {k!r}; TF.js's are {sorted(_TFJS_ARGS)} "
                             f"(fit's keywords work too)")
    return out


def fit_dataset(model, dataset, args=None, **kwargs):
    """TF.js's ``model.fitDataset(dataset, {epochs, batchesPerEpoch, validationData, ...})``:
    ``fit`` on a dataset of ``{"xs", "ys"}`` or ``(x, y)`` batches (Python keywords work too)."""
    import inspect
    cfg = _tfjs_config(args, "fitDataset", inspect.signature(model.fit).parameters)
    cfg.update(kwargs)
    return model.fit(dataset, **cfg)


def evaluate_dataset(model, dataset, args=None, **kwargs):
    """TF.js's ``model.evaluateDataset(dataset, {batches})``."""
    from ..models import training as T
    cfg = {("steps" if k == "batches" else k): v for k, v in (args or {}).items()}
    cfg.update(kwargs)
    with T._model_lock(model):
        return evaluate(model, dataset, **cfg)
