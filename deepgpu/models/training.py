"""compile / fit / evaluate / predict, written once for every backend.

The loop keeps the running loss and metrics on the device and reads them
only when it prints, when a callback reads a batch log, or at the end of an
epoch. Host data (NumPy arrays) is moved to the device one batch at a time;
data already on the device (Tensors) is batched there.
"""
from __future__ import annotations

import collections.abc
import contextlib
import functools
import gc
import math
import numbers
import threading
import warnings
import weakref

from .. import backends
from .. import losses as losses_mod
from .. import metrics as metrics_mod
from .. import ops
from ..autograd import backward, enable_grad, no_grad
from ..data.text import fit_text_rank, is_text_list
from ..layers.embedding import check_not_ragged_data
from ..mixed_precision import float32_outputs
from ..tensor import Tensor, Variable, tensor, zeros
from . import graph_eval
from .graph_step import GraphTrainer, graph_mode
from .progbar import Progbar


class _LazyLogs(collections.abc.Mapping):
    """Batch logs whose values are read from the device only when asked for."""

    def __init__(self, sources):
        self._sources = sources  # name -> zero-arg callable returning a scalar Tensor
        self._cache = {}

    def __getitem__(self, key):
        if key not in self._cache:
            self._cache[key] = float(self._sources[key]().item())
        return self._cache[key]

    def __iter__(self):
        return iter(self._sources)

    def __len__(self):
        return len(self._sources)


class _Callbacks:
    """Calls a hook on every callback."""

    def __init__(self, callbacks, model, params):
        self.items = list(callbacks)
        for cb in self.items:
            cb.set_model(model)
            cb.set_params(params)
            cb._siblings = self.items  # BackupAndRestore saves the others' state

    def __call__(self, hook, *args):
        for cb in self.items:
            getattr(cb, hook)(*args)


def _as_list(x):
    if x is None:
        return None
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


def _length(a):
    return a.shape[0] if hasattr(a, "shape") and len(a.shape) else len(a)


def _int_arg(where, name, value, minimum):
    """``value`` as an int >= ``minimum``; ValueError naming the argument and the value."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{where}(): {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _short(value) -> str:
    r = repr(value)
    return r if len(r) <= 60 else r[:57] + "..."


def _check_array(a, what, where):
    """Refuse what cannot be a batch of samples (a string, a number, None)."""
    if isinstance(a, Tensor):
        return
    if isinstance(a, (str, bytes)) or not (hasattr(a, "shape") or isinstance(a, (list, tuple))):
        raise ValueError(f"{where}(): {what} must be a NumPy array or a Tensor (or a list / dict of them), "
                         f"got {type(a).__name__} {_short(a)}")
    if hasattr(a, "shape") and len(a.shape) == 0:
        raise ValueError(f"{where}(): {what} must have a batch axis, got a scalar array {_short(a)}")


def _check_finite_data(xs, ys, sample_weight, prefix, where):
    """``_check_finite`` on every input, target and the sample weights, named ``prefix`` + x / y /
    sample_weight."""
    sws = [] if sample_weight is None else [sample_weight]
    for what, arrays in (("x", xs), ("y", ys), ("sample_weight", sws)):
        for a in arrays:
            _check_finite(a, prefix + what, where)


def _check_finite(a, what, where):
    """ValueError when the float array ``a`` holds NaN or Inf (read in chunks; one
    host read per chunk for a Tensor)."""
    if isinstance(a, Tensor):
        B, data = a._backend, a.data
    elif hasattr(a, "__cuda_array_interface__"):  # a CuPy array given as is
        B, data = backends.current(), a
    elif hasattr(a, "dtype") and hasattr(a, "shape"):
        B, data = backends.get("cpu"), a
    else:
        return
    if not str(data.dtype).startswith(("float", "complex", "bfloat")) or not data.shape[0]:
        return
    n = data.shape[0]
    row = max(1, data.size // n)
    chunk = max(1, (1 << 22) // row)
    for start in range(0, n, chunk):
        part = data[start:start + chunk]
        finite = B.isfinite(part)
        if bool(B.to_numpy(B.all(finite))):
            continue
        rows = B.to_numpy(finite).reshape(part.shape[0], -1)
        first = start + int(rows.all(axis=1).argmin())
        count = int(rows.size - rows.sum())
        for rest in range(start + chunk, n, chunk):
            more = data[rest:rest + chunk]
            count += int(more.size) - int(B.to_numpy(B.sum(B.isfinite(more))))
        raise ValueError(
            f"{where}(): {what} contains {count} NaN or Inf value(s), the first in sample {first}; "
            f"fix the data, or pass check_numerics=False to {where}() to use it as it is")


def _check_class_weight(class_weight, where):
    if not isinstance(class_weight, dict):
        raise ValueError(f"{where}(): class_weight must be a dict {{class index: weight}}, "
                         f"got {type(class_weight).__name__} {_short(class_weight)}")
    for k, v in class_weight.items():
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
            raise ValueError(f"{where}(): class_weight keys must be integer class indices >= 0, got "
                             f"{k!r} ({type(k).__name__}) in class_weight={_short(class_weight)}")
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{where}(): class_weight[{k!r}] must be a finite number >= 0, got {v!r}")


_LOCK_GUARD = threading.Lock()
_FITTING_TARGETS = set()  # (target shape, output shape, loss name) that losses.check_shapes passed


def _model_lock(model):
    lock = model.__dict__.get("_run_lock")
    if lock is None:
        with _LOCK_GUARD:
            lock = model.__dict__.setdefault("_run_lock", threading.RLock())
    return lock


def _serialised(method):
    """Run ``method`` holding the model's lock. The metrics' state, the optimizer and
    the layers' last activity penalties belong to the model, so fit / evaluate /
    train_on_batch / test_on_batch calls from several threads take turns (predict
    does not need to)."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with _model_lock(self):
            return method(self, *args, **kwargs)
    return run


def _take(a, idx, B):
    """Rows ``idx`` (host int array or a slice) of ``a`` as a Tensor on backend ``B``."""
    if isinstance(a, Tensor):
        if isinstance(idx, slice):
            if idx.start == 0 and idx.step is None and a.ndim and idx.stop == a.data.shape[0]:
                return a  # every row (train_on_batch's whole batch): the tensor, not a view op per step
            return a[idx]
        return a[Tensor(B.asarray(idx, "int32"), B)]
    part = a[idx]
    if getattr(getattr(part, "dtype", None), "kind", None) in ("U", "S", "O"):
        return part  # text stays on the host, for the model's TextVectorization
    return Tensor(B.asarray(part), B)


class Trainer:
    """The training half of Model; mixed into it."""

    def __init__(self):
        self.optimizer = None
        self.compiled = False
        self.stop_training = False
        self.history = None
        self._loss_fns = None
        self._graph_trainer = None
        self._metrics = []
        self._weighted_metrics = []
        self._finite_steps = None  # see _count_finite_step
        self._count_finite = False  # on during fit only: train_on_batch adds no device work

    # -------------------------------------------------------------- compile
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None,
                weighted_metrics=None, cuda_graph="auto", distribute=None, **kwargs):
        """Configure training.

        optimizer: name or Optimizer; an Optimizer instance serves one model
        (it keeps per-variable state): one that another model uses is
        refused with a ValueError. loss: name, Loss, callable
        ``loss(y_true, y_pred)``, or a list / dict (by output name) for
        several outputs. metrics: list of names or Metric objects (applied
        to every output), or a list of lists / dict per output; they are
        not weighted. weighted_metrics: the same, weighted by
        ``sample_weight`` / ``class_weight`` and logged under their own
        names ("weighted_" in front where a name is already taken), as
        in Keras 3. loss_weights: list or dict scaling each output's loss.
        cuda_graph: "auto" (the default), True or False. On the "cuda" backend
        with its custom kernels, record the training step, and evaluate's and
        predict's, as CUDA graphs (per batch shape, from the second batch on)
        and replay them (see deepgpu.models.graph_step and graph_eval; predict
        on a model never compiled records as under "auto"); under "auto" a
        step that cannot be recorded runs eagerly, with one warning naming why
        (one for training, one for evaluate / predict); True raises GraphCaptureError
        then; False never records. No effect on other backends.
        distribute: a ``deepgpu.distributed.DataParallel`` to train one
        replica per MPI rank (see its docstring for what changes in fit);
        its steps record on the NCCL path only (NCCL >= 2.9.6 can be captured).
        Raises ValueError for unknown names (listing the valid ones).
        """
        from .. import optimizers as opt_mod

        for k in kwargs:
            if k not in ("run_eagerly", "jit_compile", "steps_per_execution", "auto_scale_loss"):
                raise TypeError(f"compile() got an unexpected keyword argument {k!r}")
        mode = graph_mode(cuda_graph)
        cuda_graph = mode is True  # from here on, true only where recording is insisted on
        if loss is None and not getattr(self, "_allows_no_loss", lambda: False)():
            raise ValueError("compile() needs a loss (a name such as 'mse', a Loss, or a callable)")
        names = self.output_names
        n = len(names)
        opt = opt_mod.get(optimizer)
        if kwargs.get("auto_scale_loss", True) and self.dtype_policy.name == "mixed_float16" \
                and not isinstance(opt, opt_mod.LossScaleOptimizer):
            opt = opt_mod.LossScaleOptimizer(opt)  # Keras 3's auto_scale_loss: float16 gradients need it
        loss_fns = self._per_output(loss, names, "loss")
        loss_fns = [None if l is None else losses_mod.get(l) for l in loss_fns]
        if loss_weights is None:
            lw = [1.0] * n
        else:
            lw = self._per_output(loss_weights, names, "loss_weights")
            lw = [1.0 if w is None else float(w) for w in lw]
        out_shapes = self._output_shapes()

        def build(spec, what):
            objs = []
            for i, ms in enumerate(_per_output_metrics(spec, names, what)):
                objs.append([metrics_mod.get(m, loss=loss_fns[i], output_shape=out_shapes[i] if out_shapes else None)
                             for m in ms])
            return objs

        metric_objs = build(metrics, "metrics")
        weighted_objs = build(weighted_metrics, "weighted_metrics")
        if {id(m) for ms in metric_objs for m in ms} & {id(m) for ms in weighted_objs for m in ms}:
            raise ValueError("compile(): the same Metric object is in both metrics and weighted_metrics; "
                             "each needs its own instance (a metric's state is its own)")
        self._check_optimizer_owner(opt)
        if distribute is not None and not hasattr(distribute, "reduce_gradients"):
            raise ValueError(f"compile(): distribute must be a deepgpu.distributed.DataParallel, "
                             f"got {_short(distribute)}")
        dist = distribute.attach(self) if distribute is not None else None  # joins MPI before any change
        # Everything resolved: only now change the model (and the metrics' names).
        taken = set()
        for i, objs in enumerate(metric_objs):
            for obj in objs:
                if n > 1:
                    obj.name = f"{names[i]}_{obj.name}"
                taken.add(obj.name)
        for i, objs in enumerate(weighted_objs):
            for obj in objs:
                name = f"{names[i]}_{obj.name}" if n > 1 else obj.name
                if name in taken:  # Keras 3's rule for a name already logged
                    name = f"{names[i]}_weighted_{obj.name}" if n > 1 else f"weighted_{obj.name}"
                obj.name = name
                taken.add(name)
        self.optimizer = opt
        opt._model_ref = weakref.ref(self)
        self._loss_fns = loss_fns
        self._loss_weights = lw
        self._metrics = metric_objs
        self._weighted_metrics = weighted_objs
        self._loss_tracker = metrics_mod.Mean(name="loss")
        self._out_loss_trackers = [metrics_mod.Mean(name=f"{nm}_loss") for nm in names] if n > 1 else []
        self._compile_config = {"optimizer": opt, "loss": loss, "metrics": metrics, "loss_weights": loss_weights,
                                "weighted_metrics": weighted_metrics, "cuda_graph": mode}
        self._train_vars = None
        self._graph_trainer = GraphTrainer(self, mode) if mode is not False else None
        self._distribute = dist
        self.compiled = True

    def _check_optimizer_owner(self, opt):
        """ValueError when ``opt`` is another model's: its slots would then mix two
        models' variables (Keras 3 refuses this too, at the first step)."""
        ref = getattr(opt, "_model_ref", None)

        def other_user():
            m = ref() if ref is not None else None
            return m if (m is not None and m is not self and getattr(m, "optimizer", None) is opt) else None

        if other_user() is not None:
            gc.collect()  # a model the caller dropped may live on in a reference cycle
        other = other_user()
        if other is not None:
            raise ValueError(
                f"compile(): this {type(opt).__name__} optimizer is already used by model {other.name!r}; an "
                f"optimizer keeps per-variable state for one model, so give model {self.name!r} its own "
                f"(a new {type(opt).__name__}(...), or optimizers.get(optimizers.serialize(opt)) for a copy "
                f"of its settings)")
        if opt.built:
            mine = {id(w) for w in self.weights}
            foreign = [v.name for v in opt._vars if id(v) not in mine]
            if foreign:
                raise ValueError(
                    f"compile(): this {type(opt).__name__} optimizer was built for other variables "
                    f"({foreign[:3]}{'...' if len(foreign) > 3 else ''}) than model {self.name!r}'s; an optimizer "
                    f"serves one model: give this one a new {type(opt).__name__}(...)")

    def _per_output(self, spec, names, what):
        n = len(names)
        if isinstance(spec, dict):
            bad = set(spec) - set(names)
            if bad:
                raise ValueError(f"compile(): {what} for unknown output(s) {sorted(bad)}; outputs are {names}")
            return [spec.get(nm) for nm in names]
        if isinstance(spec, (list, tuple)):
            if len(spec) != n:
                raise ValueError(f"compile(): {len(spec)} {what} entries for a model with {n} output(s) {names}")
            return list(spec)
        return [spec] * n

    def _output_shapes(self):
        outs = self.outputs
        return [o.shape for o in outs] if outs else None

    @property
    def metrics_names(self) -> list:
        names = ["loss"] + [t.name for t in getattr(self, "_out_loss_trackers", [])]
        for ms in list(getattr(self, "_metrics", [])) + list(getattr(self, "_weighted_metrics", [])):
            names += [m.name for m in ms]
        return names

    def _require_compiled(self):
        if not self.compiled:
            raise RuntimeError(
                f"model {self.name!r} must be compiled before training or evaluating: "
                f"call model.compile(optimizer=..., loss=...)")

    # ------------------------------------------------------------ the data
    def _inputs_list(self, x, what="x", where="fit"):
        """The input arrays in model-input order (a dict is matched by input name)."""
        if x is None:
            raise ValueError(f"{where}(): {what} is None")
        if isinstance(x, dict):
            if not hasattr(self, "_structure_inputs"):
                raise ValueError(f"{where}(): model {self.name!r} cannot take a dict {what}")
            xs = self._structure_inputs(x)
        else:
            if isinstance(x, (list, tuple)) and len(self.inputs or []) == 1:
                check_not_ragged_data(self, x, where)
            xs = [x] if is_text_list(x) else _as_list(x)
        if not xs:
            raise ValueError(f"{where}(): {what} is an empty {type(x).__name__}")
        if not all(isinstance(a, Tensor) for a in xs):  # a Tensor is never text
            xs = fit_text_rank(xs, [t.shape for t in self.inputs], f"{where}(): {what}")
        for a in xs:
            _check_array(a, what, where)
        return xs

    def _targets_list(self, y, what="y", where="fit"):
        if y is None:
            return None
        names = self.output_names
        if isinstance(y, dict):
            missing = [k for k in names if k not in y]
            unknown = [k for k in y if k not in names]
            if missing or unknown:
                raise ValueError(f"{where}(): the keys of {what} must be the output names {names}; "
                                 f"got {list(y)} (missing {missing}, unknown {unknown})")
            ys = [y[k] for k in names]
        else:
            ys = _as_list(y)
        if len(ys) != len(names):
            raise ValueError(f"{where}(): {what} has {len(ys)} array(s) but the model has {len(names)} "
                             f"output(s) {names}")
        for a in ys:
            _check_array(a, what, where)
        return ys

    def _check_data(self, xs, ys, sw=None, where="fit", what="x"):
        n = _length(xs[0])
        for i, a in enumerate(xs):
            if _length(a) != n:
                raise ValueError(f"{where}(): the arrays of {what} have different lengths: "
                                 f"{[_length(a) for a in xs]}")
        if n == 0:
            raise ValueError(f"{where}(): {what} is empty (0 samples, shape {tuple(xs[0].shape)})")
        if ys is not None:
            for a in ys:
                if _length(a) != n:
                    raise ValueError(
                        f"{where}(): x and y have different numbers of samples: x has {n}, y has {_length(a)}")
        if sw is not None:
            _check_array(sw, "sample_weight", where)
            if _length(sw) != n:
                raise ValueError(f"{where}(): sample_weight has {_length(sw)} entries for {n} samples")
        return n

    def _check_input_shapes(self, xs, what, where, like=None):
        """ValueError before any step when the arrays ``xs`` do not fit the model's
        inputs (or, for a model not built yet, the arrays ``like``)."""
        expected = [tuple(t.shape) for t in self.inputs]
        if not expected and like is not None and all(hasattr(a, "shape") for a in like):
            expected = [(None,) + tuple(a.shape[1:]) for a in like]
        if len(expected) != len(xs):
            return  # the call reports a wrong count, naming the inputs
        for i, (exp, a) in enumerate(zip(expected, xs)):
            got = tuple(a.shape) if hasattr(a, "shape") else None
            if got is None:
                continue
            e = exp[1:]
            if len(e) != len(got) - 1 or any(d is not None and d != g for d, g in zip(e, got[1:])):
                names = self.input_names if self.inputs else []
                name = f" {names[i]!r}" if i < len(names) else ""
                raise ValueError(f"{where}(): {what} does not fit input {i}{name} of model {self.name!r}: "
                                 f"expected shape {(None,) + tuple(e)}, got {got}")

    def _check_labels(self, ys, what, where) -> bool:
        """Check the integer class labels of every output with a sparse loss or metric
        (one host read each). True when every such output was checked, so the
        per-batch checks can be skipped."""
        names = self.output_names
        checks, all_checked = self._label_checks()
        for i, fn, classes in checks:
            yt = ys[i]
            # On the host: a device array is copied once, and no kernel is launched.
            if isinstance(yt, Tensor):
                host = yt.data_sync()
            elif hasattr(yt, "__cuda_array_interface__"):
                host = backends.current().to_numpy(yt)
            else:
                host = yt
            ignore = getattr(fn, "ignore_class", None)  # fn: the sparse loss, or None
            losses_mod.check_host_labels(host, classes, ignore, f"{where}(): {what}" + (
                f" (output {names[i]!r})" if len(names) > 1 else ""))
        return all_checked

    def _label_checks(self):
        """([(output index, its sparse loss or None, classes)], whether every output with a sparse
        loss or metric has a known class count): what ``_check_labels`` checks, found once per
        compile (the losses and metrics) and output shapes, not per train_on_batch."""
        shapes = self._output_shapes()
        key = (self._loss_fns, self._metrics, self._weighted_metrics)
        cached = self.__dict__.get("_label_plan")
        if cached is not None and all(a is b for a, b in zip(cached[0], key)) and cached[1] == shapes:
            return cached[2]
        checks, all_checked = [], True
        for i, fn in enumerate(self._loss_fns):
            sparse_loss = fn is not None and losses_mod.canonical_name(fn) == "sparse_categorical_crossentropy"
            ms = list(self._metrics[i]) + list(self._weighted_metrics[i])
            if not (sparse_loss or any(metrics_mod.is_sparse(m) for m in ms)):
                continue
            classes = shapes[i][-1] if shapes else None
            if classes is None:
                all_checked = False
                continue
            checks.append((i, fn if sparse_loss else None, classes))
        self._label_plan = (key, shapes, (checks, all_checked))  # the key's lists kept alive: no id reuse
        return checks, all_checked

    def _check_targets(self, ys, what=None):
        shapes = self._output_shapes()
        if not shapes:
            return
        for fn, yt, shape in zip(self._loss_fns, ys, shapes):
            if fn is None or not hasattr(yt, "shape"):
                continue
            name = getattr(fn, "name", getattr(fn, "__name__", "loss"))
            key = ((None,) + tuple(yt.shape[1:]), tuple(shape), name)
            memo = isinstance(name, str)  # check_shapes then depends on the key alone
            if memo and key in _FITTING_TARGETS:
                continue
            try:
                losses_mod.check_shapes(*key)
                if memo and len(_FITTING_TARGETS) < 1024:
                    _FITTING_TARGETS.add(key)
            except ValueError as e:
                if what is None:
                    raise
                raise ValueError(f"{what}: {e}") from None

    def _class_weights(self, ys, class_weight):
        # Host-side: map each sample's class to its weight once, before training.
        y = ys[0].data_sync() if isinstance(ys[0], Tensor) else ys[0]
        cpu = backends.get("cpu")
        y = cpu.asarray(y)
        labels = cpu.argmax(y, axis=-1) if (y.ndim > 1 and y.shape[-1] > 1) else y.reshape(-1).astype("int32")
        top = max(int(labels.max()), max(class_weight)) + 1
        table = cpu.asarray([float(class_weight.get(i, 1.0)) for i in range(top)])
        return table[labels]

    # --------------------------------------------------------------- steps
    def _vars_to_train(self):
        if self._train_vars is None:
            self._train_vars = [w for w in self.trainable_weights]
        return [v for v in self._train_vars if v.trainable]

    def _compute_loss(self, ys, outs, sw, with_regularization=True):
        """(total, [per-output loss or None]): the weighted compiled losses, plus the layers'
        regularization losses unless ``with_regularization`` is False; total None when there is none."""
        total = None
        per_out = []
        outs = float32_outputs(outs)  # losses compute in float32 under a 16-bit policy, as Keras
        for fn, w, yt, yp in zip(self._loss_fns, self._loss_weights, ys, outs):
            if fn is None:
                per_out.append(None)
                continue
            val = _apply_loss(fn, yt, yp, sw)
            per_out.append(val)
            term = val if w == 1.0 else val * w
            total = term if total is None else total + term
        if with_regularization:
            for reg in self._regularization_losses():
                total = reg if total is None else total + reg
        return total, per_out

    def _regularization_losses(self):
        """``self.losses``, through a walk of the layer tree cached while the variables to
        train are (the same assumption: the tree does not change between steps)."""
        key = self.__dict__.get("_train_vars")
        cache = self.__dict__.get("_loss_sources")
        if key is None or cache is None or cache.key is not key:
            if key is None:
                return self.losses
            cache = self._loss_sources = _LossSources(key, self)
        out = []
        for layer, whole in cache.layers:
            out.extend(layer.losses if whole else layer._own_losses())
        return out

    def _outs_list(self, out):
        if isinstance(out, dict):
            return [out[k] for k in self.output_names]
        return list(out) if isinstance(out, (list, tuple)) else [out]

    def _update_metrics(self, ys, outs, sw, total, per_out):
        outs = float32_outputs(outs)
        n = _length(outs[0])
        self._loss_tracker.update_state(total, sample_weight=n)
        for tr, v in zip(self._out_loss_trackers, per_out):
            if v is not None:
                tr.update_state(v, sample_weight=n)
        for ms, yt, yp in zip(self._metrics, ys, outs):
            for m in ms:
                m.update_state(yt, yp)
        for ms, yt, yp in zip(self._weighted_metrics, ys, outs):
            for m in ms:
                m.update_state(yt, yp, sample_weight=sw)

    def _count_finite_step(self):
        """After a training step, on the device: +1 while the epoch's running loss
        total is still finite. A non-finite total stays so, so at the epoch's end
        this count is the index of the step whose loss first was NaN / Inf."""
        total = self._loss_tracker._state()["total"]
        w = self._finite_steps
        if w is None or w._backend is not total._backend:
            w = self._finite_steps = Variable(zeros((), "float32", backend=total.backend), trainable=False,
                                              name="finite_steps")
        w.data += total._backend.isfinite(total.data)

    def _all_metrics(self):
        out = [self._loss_tracker] + list(self._out_loss_trackers)
        for ms in list(self._metrics) + list(self._weighted_metrics):
            out.extend(ms)
        return out

    def _reset_metrics(self):
        for m in self._all_metrics():
            m.reset_state()

    def _train_batch(self, xb, yb, swb):
        dist = getattr(self, "_distribute", None)  # DataParallel: the first step (weights from rank 0) is eager
        if (dist is None or dist.synced) and self._graph_trainer is not None \
                and self._graph_trainer.train_batch(xb, yb, swb):
            return
        if dist is not None and not dist.synced:
            dist.first_step(self, xb)
        vars_ = self._vars_to_train()
        gs, finish = self._reduced_gradients(xb, yb, swb, vars_)
        self.optimizer._apply_raw_gradients(gs, vars_)
        finish()

    def _reduced_gradients(self, xb, yb, swb, vars_):
        """``_gradients``, averaged across ranks under DataParallel: the buckets are reduced while
        backward runs, and SyncBN takes global statistics (eager and recorded steps alike)."""
        dist = getattr(self, "_distribute", None)
        if dist is None:
            return self._gradients(xb, yb, swb, vars_)
        with dist.step(vars_) as reduction:
            gs, finish = self._gradients(xb, yb, swb, vars_)
        return reduction.gradients(gs), finish

    def _gradients(self, xb, yb, swb, vars_):
        """Forward in training mode, loss, backward: (raw gradients of ``vars_``,
        a call that adds this batch to the metrics). Shared by the eager and
        the recorded (graph_step) training steps."""
        with enable_grad():
            out = self(xb if len(xb) > 1 else xb[0], training=True)
            # Cast once for the loss and the metrics (whose own float32_outputs then pass them as they are).
            outs = float32_outputs(self._outs_list(out))
            total, per_out = self._compute_loss(yb, outs, swb)
        # A LossScaleOptimizer scales the loss (mixed_float16); it unscales the gradients itself.
        gs = backward(total if self.optimizer is None else self.optimizer.scale_loss(total), vars_)
        B = total._backend

        def finish():
            with no_grad():
                self._update_metrics(yb, [_detached(o, B) for o in outs], swb,
                                     Tensor(total.data, B), per_out)
                if self._count_finite:
                    self._count_finite_step()
        return gs, finish

    def _test_batch(self, xb, yb, swb):
        if graph_eval.test_batch(self, xb, yb, swb):  # replayed as a recorded CUDA graph
            return
        with no_grad():
            out = self(xb if len(xb) > 1 else xb[0], training=False)
            outs = float32_outputs(self._outs_list(out))  # once for the loss and the metrics, as _gradients
            total, per_out = self._compute_loss(yb, outs, swb)
            self._update_metrics(yb, outs, swb, total, per_out)

    def _predict_batch(self, xb):
        out = graph_eval.predict_batch(self, xb)  # replayed as a recorded CUDA graph, or None
        return self(xb if len(xb) > 1 else xb[0], training=False) if out is None else out

    def _lazy_logs(self, prefix=""):
        return _LazyLogs({prefix + m.name: m.result for m in self._all_metrics()})

    def _read_metrics(self, prefix=""):
        return {prefix + m.name: m._read() for m in self._all_metrics()}

    def _batches(self, n, batch_size, shuffle):
        B = backends.current()
        order = B.permutation(n) if shuffle else None
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield order[start:stop] if order is not None else slice(start, stop)

    def _slice(self, arrays, idx):
        B = backends.current()
        return [_take(a, idx, B) for a in arrays]

    # ------------------------------------------------------------------ fit
    @_serialised
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None,
            sample_weight=None, initial_epoch=0, steps_per_epoch=None, validation_batch_size=None,
            validation_freq=1, check_numerics=True, validation_steps=None):
        """Train for ``epochs`` epochs; returns a History (``.history`` holds
        ``loss``, each metric, and ``val_`` versions).

        x / y: NumPy arrays or Tensors, or lists / dicts (by input / output
        name) of them; or x a data source (a deepgpu.data.Dataset, PyDataset,
        generator or iterable of batches, torch DataLoader, tf.data.Dataset; also
        as validation_data, with validation_steps): see deepgpu/data/adapters.py.
        Every argument and the data are checked before the
        first step: a bad one raises ValueError naming it and its value, and
        leaves the model as it was. check_numerics: refuse NaN / Inf in x, y,
        sample weights and validation data (False allows them). A loss that
        turns NaN / Inf during training is reported once (a RuntimeWarning
        naming the epoch and step). Raises RuntimeError before compile().
        """
        from .. import callbacks as cb_mod
        from ..data import adapters

        if adapters.is_data_source(x) or adapters.is_data_source(validation_data) or validation_steps:
            return adapters.fit(self, x, y, batch_size, epochs, verbose, callbacks, validation_split,
                                validation_data, shuffle, class_weight, sample_weight, initial_epoch,
                                steps_per_epoch, validation_steps, validation_batch_size, validation_freq,
                                check_numerics)
        self._require_compiled()
        w = "fit"
        epochs = _int_arg(w, "epochs", epochs, 0)
        initial_epoch = _int_arg(w, "initial_epoch", initial_epoch, 0)
        if initial_epoch > epochs:
            raise ValueError(f"fit(): initial_epoch={initial_epoch} is greater than epochs={epochs}")
        batch_size = 32 if batch_size is None else _int_arg(w, "batch_size", batch_size, 1)
        if steps_per_epoch is not None:
            steps_per_epoch = _int_arg(w, "steps_per_epoch", steps_per_epoch, 1)
        if validation_batch_size is not None:
            validation_batch_size = _int_arg(w, "validation_batch_size", validation_batch_size, 1)
        validation_freq = _int_arg(w, "validation_freq", validation_freq, 1)
        if isinstance(validation_split, bool) or not isinstance(validation_split, numbers.Real) \
                or not 0 <= validation_split < 1:
            raise ValueError(f"fit(): validation_split must be a number in [0, 1), got {validation_split!r}")
        if verbose not in ("auto", 0, 1, 2):
            raise ValueError(f"fit(): verbose must be 'auto', 0, 1 or 2, got {verbose!r}")
        verbose = 1 if verbose == "auto" else int(verbose)
        xs, ys = self._inputs_list(x, "x", w), self._targets_list(y, "y", w)
        if ys is None:
            raise ValueError("fit(): needs targets y")
        n = self._check_data(xs, ys, sample_weight, w)
        self._check_input_shapes(xs, "x", w)
        self._check_targets(ys)
        if class_weight is not None:
            _check_class_weight(class_weight, w)
            if sample_weight is not None and class_weight:
                raise ValueError("fit(): class_weight and sample_weight cannot both be given (as in Keras); "
                                 "fold the class weights into sample_weight")
        if check_numerics:
            _check_finite_data(xs, ys, sample_weight, "", w)
        labels_ok = self._check_labels(ys, "y", w)
        sw = sample_weight
        if class_weight:
            sw = self._class_weights(ys, class_weight)
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (list, tuple)) or len(validation_data) not in (2, 3):
                raise ValueError("fit(): validation_data must be (x_val, y_val) or (x_val, y_val, sample_weight), "
                                 f"got {_short(validation_data)}")
            vd = list(validation_data)
            vx = self._inputs_list(vd[0], "validation_data x", w)
            vy = self._targets_list(vd[1], "validation_data y", w)
            vsw = vd[2] if len(vd) == 3 else None
            self._check_data(vx, vy, vsw, w, "validation_data x")
            self._check_input_shapes(vx, "validation_data x", w, like=xs)
            self._check_targets(vy, "fit(): validation_data y")
            if check_numerics:
                _check_finite_data(vx, vy, vsw, "validation_data ", w)
            labels_ok = self._check_labels(vy, "validation_data y", w) and labels_ok
            val = (vx, vy, vsw)
        elif validation_split:
            split = int(n * (1 - validation_split))
            if split == 0 or split == n:
                raise ValueError(f"fit(): validation_split={validation_split} leaves no samples on one side of {n}")
            cut = slice(split, n)
            val = ([a[cut] for a in xs], [a[cut] for a in ys], None if sw is None else sw[cut])
            xs, ys = [a[:split] for a in xs], [a[:split] for a in ys]
            sw = None if sw is None else sw[:split]
            n = split
        steps = math.ceil(n / batch_size)
        if steps_per_epoch is not None:
            if steps_per_epoch > steps:  # Keras warns too; an epoch is then every batch, as in Keras
                warnings.warn(f"fit(): steps_per_epoch={steps_per_epoch} but the {n} samples make {steps} "
                              f"batches of {batch_size}; each epoch runs {steps} steps", UserWarning, stacklevel=2)
            steps = min(steps, steps_per_epoch)
        if isinstance(callbacks, dict):  # TF.js style: {"onEpochEnd": fn, ...}
            callbacks = [cb_mod.LambdaCallback(**callbacks)]
        dist = getattr(self, "_distribute", None)
        if dist is not None:  # shards by rank; rank 0 alone prints and writes
            steps, verbose, callbacks = dist.prepare_fit(n, batch_size, steps_per_epoch, verbose, callbacks)
            if not dist.synced:  # ranks agree on the model before any callback opens a file
                dist.first_step(self, self._slice(xs, backends.get("cpu").asarray([0], "int64")))
        history = cb_mod.History()
        cbs = _Callbacks(list(callbacks or []) + [history], self,
                         {"epochs": epochs, "steps": steps, "verbose": verbose, "batch_size": batch_size,
                          "samples": n})
        # Everything checked: from here on the model changes.
        self.stop_training = False
        self.history = history
        with contextlib.ExitStack() as trust:
            if labels_ok:
                trust.enter_context(_trusting_labels(True))
            self._fit_loop(xs, ys, sw, val, n, batch_size, epochs, initial_epoch, steps, shuffle, verbose,
                           cbs, validation_freq, validation_batch_size, None if labels_ok else trust)
        return history

    def _fit_loop(self, xs, ys, sw, val, n, batch_size, epochs, initial_epoch, steps, shuffle, verbose, cbs,
                  validation_freq, validation_batch_size, trust):
        cbs("on_train_begin", {})
        # callbacks.BackupAndRestore resumes an interrupted fit: at this epoch, past this many steps
        initial_epoch, skip = self.__dict__.pop("_resume_at", (initial_epoch, 0))
        epoch_logs = {}
        nan_reported = False
        self._count_finite = True
        try:
            for epoch in range(initial_epoch, epochs):
                if self.stop_training:
                    break
                self._reset_metrics()
                if self._finite_steps is not None:
                    self._finite_steps.data[...] = 0
                cbs("on_epoch_begin", epoch, {})
                if verbose:
                    print(f"Epoch {epoch + 1}/{epochs}")
                bar = Progbar(steps, verbose=verbose)
                step = 0
                dist = getattr(self, "_distribute", None)
                batches = dist.batches(n, batch_size, shuffle, epoch) if dist else self._batches(n, batch_size, shuffle)
                for step, idx in enumerate(batches):
                    if step >= steps:
                        break
                    if step < skip:
                        continue
                    cbs("on_train_batch_begin", step, {})
                    xb, yb = self._slice(xs, idx), self._slice(ys, idx)
                    swb = None if sw is None else self._slice([sw], idx)[0]
                    self._train_batch(xb, yb, swb)
                    if trust is not None:
                        # A model built by its first step: its classes are known now, so
                        # the labels are checked once and the per-step checks stop (a
                        # step recorded as a CUDA graph cannot read labels back).
                        if self._check_labels(ys, "y", "fit") and (
                                val is None or self._check_labels(val[1], "validation_data y", "fit")):
                            trust.enter_context(_trusting_labels(True))
                        trust = None
                    cbs("on_train_batch_end", step, self._lazy_logs())
                    bar.update(step + 1, lambda: list(self._read_metrics().items()))
                    if self.stop_training:
                        break
                epoch_logs = self._read_metrics()
                loss = epoch_logs.get("loss")
                if not nan_reported and loss is not None and not math.isfinite(loss):
                    nan_reported = True
                    at = int(self._finite_steps.item()) + 1 if self._finite_steps is not None else None
                    where = f"step {at}/{steps}" if at is not None else "a step"
                    warnings.warn(
                        f"fit(): the loss became {loss} at epoch {epoch + 1}/{epochs}, {where}; the weights are "
                        f"likely not finite from there on (try a lower learning rate, clipnorm=..., or "
                        f"callbacks.TerminateOnNaN() to stop at once)", RuntimeWarning, stacklevel=3)
                if val is not None and (epoch + 1) % validation_freq == 0:
                    vlogs = self._evaluate_arrays(*val, validation_batch_size or batch_size, cbs)
                    epoch_logs.update({"val_" + k: v for k, v in vlogs.items()})
                if dist is not None:  # every rank's callbacks decide on the same numbers
                    epoch_logs = dist.average_logs(epoch_logs)
                bar.update(step + 1, lambda: list(epoch_logs.items()), final=True)
                cbs("on_epoch_end", epoch, epoch_logs)
                skip = 0
            if self.optimizer is not None:  # use_ema: the variables take their moving averages
                self.optimizer.finalize_variable_values(self._vars_to_train())
        finally:
            self._count_finite = False
            cbs("on_train_end", epoch_logs)

    # ------------------------------------------------------------- evaluate
    def _evaluate_arrays(self, xs, ys, sw, batch_size, cbs=None, verbose=0, max_steps=None):
        n = self._check_data(xs, ys, sw, "evaluate")
        self._reset_metrics()
        if cbs:
            cbs("on_test_begin", {})
        steps = math.ceil(n / batch_size) if max_steps is None else min(math.ceil(n / batch_size), max_steps)
        bar = Progbar(steps, verbose=verbose)
        for step, idx in zip(range(steps), self._batches(n, batch_size, False)):
            if cbs:
                cbs("on_test_batch_begin", step, {})
            xb, yb = self._slice(xs, idx), self._slice(ys, idx)
            swb = None if sw is None else self._slice([sw], idx)[0]
            self._test_batch(xb, yb, swb)
            if cbs:
                cbs("on_test_batch_end", step, self._lazy_logs())
            bar.update(step + 1, lambda: list(self._read_metrics().items()))
        logs = self._read_metrics()
        bar.update(steps, lambda: list(logs.items()), final=True)
        if cbs:
            cbs("on_test_end", logs)
        return logs

    @_serialised
    def evaluate(self, x=None, y=None, batch_size=None, verbose=0, sample_weight=None, steps=None,
                 callbacks=None, return_dict=False, check_numerics=True):
        """Loss and metrics on (x, y): a float, a list [loss, metric...], or a dict.

        Calls from several threads take turns (each gets its own results).
        check_numerics: refuse NaN / Inf in x, y and sample_weight. x may be a
        data source (deepgpu/data/adapters.py). steps: evaluate only the first
        ``steps`` batches (an integer >= 1; None: all).
        """
        from ..data import adapters
        if steps is not None:
            steps = _int_arg("evaluate", "steps", steps, 1)
        if adapters.is_data_source(x):
            return adapters.evaluate(self, x, y, batch_size, verbose, sample_weight, steps, callbacks, return_dict,
                                     check_numerics)
        self._require_compiled()
        w = "evaluate"
        batch_size = 32 if batch_size is None else _int_arg(w, "batch_size", batch_size, 1)
        xs, ys = self._inputs_list(x, "x", w), self._targets_list(y, "y", w)
        if ys is None:
            raise ValueError("evaluate(): needs targets y")
        self._check_data(xs, ys, sample_weight, w)
        self._check_input_shapes(xs, "x", w)
        self._check_targets(ys)
        if check_numerics:
            _check_finite_data(xs, ys, sample_weight, "", w)
        labels_ok = self._check_labels(ys, "y", w)
        cbs = _Callbacks(callbacks, self, {"verbose": verbose}) if callbacks else None
        with _trusting_labels(labels_ok):
            logs = self._evaluate_arrays(xs, ys, sample_weight, batch_size, cbs, verbose, steps)
        if return_dict:
            return logs
        vals = list(logs.values())
        return vals[0] if len(vals) == 1 else vals

    # -------------------------------------------------------------- predict
    def predict(self, x, batch_size=None, verbose=0, steps=None, callbacks=None):
        """Outputs for ``x`` as a Tensor (a list of Tensors for several outputs).

        The values stay on the device; call ``.data_sync()`` for NumPy.
        Safe to call from several threads at once. x may be a data source
        (deepgpu/data/adapters.py). steps: predict only the first ``steps``
        batches (an integer >= 1; None: all).
        """
        from ..data import adapters
        if steps is not None:
            steps = _int_arg("predict", "steps", steps, 1)
        if adapters.is_data_source(x):
            return adapters.predict(self, x, batch_size, verbose, steps, callbacks)

        w = "predict"
        batch_size = 32 if batch_size is None else _int_arg(w, "batch_size", batch_size, 1)
        xs = self._inputs_list(x, "x", w)
        n = self._check_data(xs, None, None, w)
        self._check_input_shapes(xs, "x", w)
        cbs = _Callbacks(callbacks, self, {"verbose": verbose}) if callbacks else None
        if cbs:
            cbs("on_predict_begin", {})
        parts = None
        steps = math.ceil(n / batch_size) if steps is None else min(math.ceil(n / batch_size), steps)
        bar = Progbar(steps, verbose=verbose)
        with no_grad():
            for step, idx in zip(range(steps), self._batches(n, batch_size, False)):
                if cbs:
                    cbs("on_predict_batch_begin", step, {})
                xb = self._slice(xs, idx)
                outs = self._outs_list(self._predict_batch(xb))
                parts = [[o] for o in outs] if parts is None else [p + [o] for p, o in zip(parts, outs)]
                if cbs:
                    cbs("on_predict_batch_end", step, {"outputs": outs})
                bar.update(step + 1)
        bar.update(steps, final=True)
        if cbs:
            cbs("on_predict_end", {})
        res = [p[0] if len(p) == 1 else ops.concat(p, axis=0) for p in parts]
        return res[0] if len(res) == 1 else res

    def fit_dataset(self, dataset, args=None, **kwargs):
        """TF.js's ``fitDataset(dataset, {epochs, batchesPerEpoch, validationData, ...})``."""
        from ..data import adapters
        return adapters.fit_dataset(self, dataset, args, **kwargs)

    def evaluate_dataset(self, dataset, args=None, **kwargs):
        """TF.js's ``evaluateDataset(dataset, {batches})``."""
        from ..data import adapters
        return adapters.evaluate_dataset(self, dataset, args, **kwargs)

    fitDataset, evaluateDataset = fit_dataset, evaluate_dataset

    # ---------------------------------------------------- single-batch API
    @_serialised
    def train_on_batch(self, x, y, sample_weight=None, class_weight=None, return_dict=False):
        """One optimizer step on one batch; returns the loss (and metrics) for that batch."""
        self._require_compiled()
        w = "train_on_batch"
        xs, ys = self._inputs_list(x, "x", w), self._targets_list(y, "y", w)
        self._check_data(xs, ys, sample_weight, w)
        self._check_input_shapes(xs, "x", w)
        self._check_targets(ys)
        if class_weight is not None:
            _check_class_weight(class_weight, w)
        labels_ok = self._check_labels(ys, "y", w)
        sw = self._class_weights(ys, class_weight) if class_weight else sample_weight
        B = backends.current()
        idx = slice(0, _length(xs[0]))
        self._reset_metrics()
        with _trusting_labels(labels_ok):
            self._train_batch([_take(a, idx, B) for a in xs], [_take(a, idx, B) for a in ys],
                              None if sw is None else _take(sw, idx, B))
        return self._single_result(return_dict)

    @_serialised
    def test_on_batch(self, x, y, sample_weight=None, return_dict=False):
        self._require_compiled()
        w = "test_on_batch"
        xs, ys = self._inputs_list(x, "x", w), self._targets_list(y, "y", w)
        self._check_data(xs, ys, sample_weight, w)
        self._check_input_shapes(xs, "x", w)
        labels_ok = self._check_labels(ys, "y", w)
        B = backends.current()
        idx = slice(0, _length(xs[0]))
        self._reset_metrics()
        with _trusting_labels(labels_ok):
            self._test_batch([_take(a, idx, B) for a in xs], [_take(a, idx, B) for a in ys],
                             None if sample_weight is None else _take(sample_weight, idx, B))
        return self._single_result(return_dict)

    def predict_on_batch(self, x):
        xs = self._inputs_list(x, "x", "predict_on_batch")
        with no_grad():
            xs = [a if isinstance(a, Tensor) else tensor(a) for a in xs]
            return self(xs if len(xs) > 1 else xs[0], training=False)

    def _single_result(self, return_dict):
        logs = self._read_metrics()
        if return_dict:
            return logs
        vals = list(logs.values())
        return vals[0] if len(vals) == 1 else vals

    # ------------------------------------------------------------ weights
    def to_json(self, **kwargs) -> str:
        """The architecture as JSON (``{"class_name", "config"}``, no weights), which
        ``deepgpu.models.model_from_json`` reads; ``kwargs`` go to ``json.dumps``."""
        import json
        from ..registry import serialize_layer
        return json.dumps(serialize_layer(self), **kwargs)

    def save(self, filepath, overwrite=True, include_optimizer=True):
        """Write the whole model; the extension picks the format, as in Keras 3.

        ``.dgm``: deepgpu's zip (architecture, weights, compile settings,
        optimizer state). ``.keras`` / ``.h5``: Keras 3's format / legacy HDF5
        (architecture and weights), which ``keras.saving.load_model`` reads.
        Atomic: the previous file survives a crash mid-save. Raises ValueError
        for another extension (naming the choices), FileExistsError when
        ``overwrite`` is false and the file exists. ``deepgpu.models.load_model``
        reads all three.
        """
        from ..io import by_name
        if not getattr(getattr(self, "_distribute", None), "is_main", True):
            return  # DataParallel: rank 0 writes
        by_name.save_model(self, filepath, overwrite=overwrite, include_optimizer=include_optimizer)

    def save_weights(self, filepath, overwrite=True):
        """Write only the weights: ``.dgw`` (deepgpu's) or ``.weights.h5`` (Keras 3's), by the extension."""
        from ..io import by_name
        if not getattr(getattr(self, "_distribute", None), "is_main", True):
            return  # DataParallel: rank 0 writes
        by_name.save_weights(self, filepath, overwrite=overwrite)

    def load_weights(self, filepath):
        """Set the weights from a ``.weights.h5`` (Keras 3), ``.dgw`` or ``.dgm`` file."""
        from ..io import by_name
        by_name.load_weights(self, filepath)


def _trusting_labels(on):
    """``losses.labels_checked()`` when ``on`` (all labels were checked beforehand), else nothing."""
    return losses_mod.labels_checked() if on else contextlib.nullcontext()


def _per_output_metrics(spec, names, what):
    """compile()'s ``metrics`` / ``weighted_metrics``: one list of identifiers per output."""
    n = len(names)
    if spec is None:
        return [[] for _ in range(n)]
    if isinstance(spec, dict):
        bad = set(spec) - set(names)
        if bad:
            raise ValueError(f"compile(): {what} for unknown output(s) {sorted(bad)}; outputs are {names}")
        return [_as_list(spec.get(nm)) or [] for nm in names]
    if isinstance(spec, (list, tuple)) and spec and all(isinstance(m, (list, tuple)) for m in spec):
        if len(spec) != n:
            raise ValueError(f"compile(): {len(spec)} {what} lists for {n} outputs")
        return [list(m) for m in spec]
    return [list(_as_list(spec)) for _ in range(n)]


class _LossSources:
    """The layers whose penalties make ``model.losses``: (layer, whole), whole where the
    layer's class defines its own ``losses`` (asked as is, not walked into). Not a list,
    so that layer tracking does not take the cached layers for the model's own."""

    __slots__ = ("key", "layers")

    def __init__(self, key, model):
        from ..layers.base import Layer

        self.key, self.layers = key, []

        def walk(layer):
            whole = type(layer).losses is not Layer.losses
            self.layers.append((layer, whole))
            if not whole:
                for sub in layer._sublayers():
                    walk(sub)
        walk(model)


def _detached(o, B):
    """``o``'s values without its autograd history, keeping its mask (metrics weigh by it)."""
    t = Tensor(o.data, B)
    mask = getattr(o, "_keras_mask", None)
    if mask is not None:
        t._keras_mask = mask
    return t


def _apply_loss(fn, y_true, y_pred, sample_weight):
    """Scalar mean loss; plain callables return per-sample values that are averaged here."""
    if isinstance(fn, losses_mod.Loss):
        return fn(y_true, y_pred, sample_weight=sample_weight)
    per = fn(y_true, y_pred)
    if not isinstance(per, Tensor):
        raise TypeError(f"loss function {fn!r} returned {type(per).__name__}, not a Tensor")
    mask = getattr(y_pred, "_keras_mask", None)
    if mask is not None:  # as Keras's wrapper of a plain loss function: the mean over unmasked entries
        return losses_mod.reduce_losses(per, losses_mod.apply_mask(sample_weight, mask, per.dtype,
                                                                   "sum_over_batch_size"))
    if per.ndim > 1:
        per = ops.mean(per, axis=tuple(range(1, per.ndim)))
    if sample_weight is not None:
        return ops.sum(per * sample_weight) / per.shape[0] if per.ndim else per
    return ops.mean(per)
