"""Stateful metrics with Keras semantics; their state stays on the device.

    m = metrics.get("accuracy", loss="categorical_crossentropy")
    m.update_state(y_true, y_pred)          # no host transfer (but see below)
    m.result()                              # a scalar Tensor, still on the device
    m.result().item()                       # the one host read, when you want it
    m.reset_state()

Metric functions (``binary_accuracy(y_true, y_pred)``, ...) return one value
per sample. ``get(identifier, loss=None, output_shape=None)`` resolves a
name (Keras or TF.js spelling), resolving "accuracy" / "acc" from the loss as
Keras does, and names the metric as the user wrote it (the history key).
The sparse metrics check that their labels lie in ``[0, classes)`` (one
host read per call) except inside ``fit`` / ``evaluate``, which check all
labels once beforehand.
"""
from __future__ import annotations

import contextlib

from . import backends as _backends
from . import losses as _losses
from . import ops
from .autograd import is_grad_enabled, no_grad
from .tensor import Tensor, Variable, arange, tensor, zeros

# ------------------------------------------------------------------ helpers


_GRAD_ALREADY_OFF = contextlib.nullcontext()


def _no_grad():
    """``no_grad()``, or a no-op where gradients are off already (the training loop's updates)."""
    return no_grad() if is_grad_enabled() else _GRAD_ALREADY_OFF


def _detach(x, like=None):
    if isinstance(x, Tensor):
        return Tensor(x.data, x._backend) if x.requires_grad else x
    return tensor(x) if like is None else tensor(x, backend=like.backend)


def _pair(y_true, y_pred):
    """Detached tensors on one backend; y_pred float."""
    y_pred = _detach(y_pred)
    if not y_pred.dtype.startswith("float"):
        y_pred = ops.cast(y_pred, "float32")
    return _detach(y_true, y_pred), y_pred


def _cast_like(y_true, y_pred):
    return y_true if y_true.dtype == y_pred.dtype else ops.cast(y_true, y_pred.dtype)


def _float(x):
    return ops.cast(x, "float32")


def _divide_no_nan(a, b):
    zero = ops.equal(b, 0.0)
    return ops.where(zero, 0.0, a / ops.where(zero, 1.0, b))


def _snake(name):
    return _losses._snake(name)


# -------------------------------------------------------- metric functions


def accuracy(y_true, y_pred):
    """1.0 where ``y_true == y_pred`` elementwise."""
    y_true, y_pred = _pair(y_true, y_pred)
    y_true, y_pred = _losses.squeeze_or_expand_to_same_rank(_cast_like(y_true, y_pred), y_pred)
    return _float(ops.equal(y_true, y_pred))


def binary_accuracy(y_true, y_pred, threshold=0.5):
    """Share of outputs on the right side of ``threshold``, per sample."""
    y_true, y_pred = _pair(y_true, y_pred)
    y_true, y_pred = _losses.squeeze_or_expand_to_same_rank(_cast_like(y_true, y_pred), y_pred)
    pred = ops.cast(ops.greater(y_pred, float(threshold)), y_pred.dtype)
    return ops.mean(_float(ops.equal(y_true, pred)), axis=-1)


def categorical_accuracy(y_true, y_pred):
    """1.0 where ``argmax(y_true) == argmax(y_pred)`` (one-hot targets)."""
    y_true, y_pred = _pair(y_true, y_pred)
    return _float(ops.equal(ops.argmax(y_true, axis=-1), ops.argmax(y_pred, axis=-1)))


def _sparse_labels(y_true, y_pred):
    if y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, -1)
    return y_true if y_true.dtype == "int32" else ops.cast(y_true, "int32")


def sparse_categorical_accuracy(y_true, y_pred):
    """1.0 where the integer label equals ``argmax(y_pred)``; labels [batch] or [batch, 1].
    A label outside ``[0, classes)`` raises ValueError."""
    y_true, y_pred = _pair(y_true, y_pred)
    if y_pred.ndim:
        _losses._check_labels_here(y_true, y_pred.shape[-1], None, "sparse_categorical_accuracy")
    labels = _sparse_labels(y_true, y_pred)
    if y_pred.ndim and y_pred.shape[-1] and labels.shape == y_pred.shape[:-1]:
        return ops.argmax_hits(y_pred, labels)  # one op where argmax, equal and cast are three
    return _float(ops.equal(labels, ops.argmax(y_pred, axis=-1)))


def _in_top_k(labels, y_pred, k):
    # The target is in the top k when fewer than k classes score strictly
    # higher (ties at the boundary count as in, as tf.math.in_top_k does).
    n = y_pred.shape[-1]
    flat = ops.reshape(y_pred, (-1, n))
    lab = ops.reshape(labels, (-1,))
    rows = arange(flat.shape[0], backend=flat.backend)
    target = ops.expand_dims(ops.getitem(flat, (rows, lab)), -1)
    higher = ops.sum(ops.cast(ops.greater(flat, target), "int32"), axis=-1)
    return ops.reshape(_float(ops.less(higher, int(k))), labels.shape)


def top_k_categorical_accuracy(y_true, y_pred, k=5):
    """1.0 where the one-hot target's class is among the ``k`` highest outputs."""
    y_true, y_pred = _pair(y_true, y_pred)
    return _in_top_k(ops.argmax(y_true, axis=-1), y_pred, k)


def sparse_top_k_categorical_accuracy(y_true, y_pred, k=5):
    """1.0 where the integer label is among the ``k`` highest outputs; a label outside
    ``[0, classes)`` raises ValueError."""
    y_true, y_pred = _pair(y_true, y_pred)
    _losses._check_labels_here(y_true, y_pred.shape[-1], None, "sparse_top_k_categorical_accuracy")
    return _in_top_k(_sparse_labels(y_true, y_pred), y_pred, k)


mean_squared_error = mse = _losses.mean_squared_error
mean_absolute_error = mae = _losses.mean_absolute_error
mean_absolute_percentage_error = mape = _losses.mean_absolute_percentage_error
mean_squared_logarithmic_error = msle = _losses.mean_squared_logarithmic_error
binary_crossentropy = _losses.binary_crossentropy
categorical_crossentropy = _losses.categorical_crossentropy
sparse_categorical_crossentropy = _losses.sparse_categorical_crossentropy
kl_divergence = kld = _losses.kl_divergence
poisson = _losses.poisson
hinge = _losses.hinge
squared_hinge = _losses.squared_hinge
categorical_hinge = _losses.categorical_hinge
log_cosh = logcosh = _losses.log_cosh


def cosine_similarity(y_true, y_pred, axis=-1):
    """Cosine similarity along ``axis`` (1.0 = same direction)."""
    return -_losses.cosine_similarity(y_true, y_pred, axis)


# ------------------------------------------------------------------ base


class Metric:
    """Base class. State lives in non-trainable Variables on the backend of the
    first values seen, created lazily by ``_state_shapes()`` (name -> shape).

    Subclasses implement ``update_state(...)`` with ops (no host reads) and
    ``result()`` returning a scalar Tensor on the device.
    """

    def __init__(self, name=None, dtype="float32"):
        self.name = name or _snake(type(self).__name__)
        self.dtype = dtype
        self._vars = None

    def _state_shapes(self) -> dict:
        return {}

    def _state(self, like=None):
        """The state Variables, created (zeros) on ``like``'s backend when missing."""
        backend = like.backend if like is not None else None
        if self._vars is None:
            self._vars = {k: Variable(zeros(s, self.dtype, backend=backend), trainable=False,
                                      name=f"{self.name}/{k}")
                          for k, s in self._state_shapes().items()}
        elif backend is not None and self._vars and next(iter(self._vars.values())).backend != backend:
            # The values moved to another backend: the state follows (a rare, explicit copy).
            self._vars = {k: Variable(v.to(backend), trainable=False, name=v.name)
                          for k, v in self._vars.items()}
        return self._vars

    def _add(self, name, value):
        v = self._state(value)[name]
        v.assign_add(value if value.dtype == v.dtype else ops.cast(value, v.dtype))

    def update_state(self, *args, **kwargs):
        raise NotImplementedError

    def result(self) -> Tensor:
        raise NotImplementedError

    def _read(self) -> float:
        """``result()`` as a Python float (a host read)."""
        return float(self.result().item())

    def reset_state(self):
        """Zero the state in place."""
        if self._vars:
            for v in self._vars.values():
                v.data[...] = 0

    # A captured training step replays device work only; Python-side state
    # that update_state changes is replayed from its change during the capture.
    def _host_state(self):
        """Python-side state that ``update_state`` changes (None: none)."""
        return None

    def _replay_host(self, before, after):
        """Apply once more the change from ``before`` to ``after`` (``_host_state`` values)."""

    def _set_host_state(self, state):
        """Restore a ``_host_state`` value."""

    reset_states = reset_state

    def __call__(self, *args, **kwargs):
        """Update the state and return the result (Keras's ``metric(y_true, y_pred)``)."""
        self.update_state(*args, **kwargs)
        return self.result()

    @property
    def variables(self) -> list:
        return list(self._state().values())

    def get_config(self) -> dict:
        return {"name": self.name, "dtype": self.dtype}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r}>"


def _sample_weight(sw, values):
    """``sample_weight`` as a Tensor like ``values`` (trailing axes of size 1 dropped)."""
    sw = _detach(sw, values)
    if sw.dtype != values.dtype:
        sw = ops.cast(sw, values.dtype)
    while sw.ndim > values.ndim and sw.shape[-1] == 1:
        sw = ops.squeeze(sw, -1)
    return sw


class Mean(Metric):
    """The (weighted) mean of the values given to ``update_state(values, sample_weight=None)``.

    Values of rank > 1 are first averaged per sample (over all but the
    first axis). Counts known on the host (no weights, or a Python number)
    stay on the host: only weighted sums touch the device.
    """

    def __init__(self, name="mean", dtype="float32"):
        super().__init__(name, dtype)
        self._host_count = 0.0
        self._dev_count = False

    def _state_shapes(self):
        return {"total": (), "count": ()}

    def update_state(self, values, sample_weight=None):
        # No no_grad block: every input is detached first, so no op here records a gradient link.
        values = _detach(values)
        if not values.dtype.startswith("float"):
            values = _float(values)
        if sample_weight is None or isinstance(sample_weight, (int, float)) and not isinstance(sample_weight, bool):
            if values.ndim > 1:
                values = ops.mean(values, axis=tuple(range(1, values.ndim)))
            # What ops.sum and ops.multiply would run, on the arrays: the loop updates every metric
            # every step, and their Tensors and checks cost more than the launches' own Python.
            B, part, n = values._backend, values.data, values.shape[0] if values.ndim else 1
            if values.ndim:
                part = B.sum(part)
            if sample_weight is not None:
                part = B.multiply(part, B._scalar(float(sample_weight), values.dtype))
                n = float(sample_weight) * n
            total = self._state(values)["total"]
            if part.dtype == total.data.dtype:
                total.data += part
            else:  # another state dtype (rare): _add's cast
                self._add("total", Tensor(part, B))
            self._host_count += n
            return
        sw = _sample_weight(sample_weight, values)
        if values.ndim > sw.ndim:
            values = ops.mean(values, axis=tuple(range(sw.ndim, values.ndim)))
        sw = ops.broadcast_to(sw, values.shape)
        self._add("total", ops.sum(values * sw))
        self._add("count", ops.sum(sw))
        self._dev_count = True

    def result(self):
        st = self._state()
        total = st["total"]
        if not self._dev_count:
            if self._host_count == 0:
                return ops.multiply(total, 0.0)
            return total / self._host_count
        count = st["count"] + self._host_count if self._host_count else st["count"]
        return _divide_no_nan(total, count)

    def _read(self) -> float:
        # A count kept on the host divides there, after the one read it needs anyway: the same
        # division in the state's dtype as result()'s on the device, without its launch.
        if type(self).result is not Mean.result or self._dev_count or not self._host_count:
            return super()._read()
        total = self._state()["total"].data_sync()
        cpu = _backends.get("cpu")
        return float(cpu.divide(total, cpu.asarray(self._host_count, total.dtype)))

    def reset_state(self):
        super().reset_state()
        self._host_count = 0.0
        self._dev_count = False

    def _host_state(self):
        return (self._host_count, self._dev_count)

    def _replay_host(self, before, after):
        self._host_count += after[0] - before[0]
        self._dev_count = self._dev_count or after[1]

    def _set_host_state(self, state):
        self._host_count, self._dev_count = state


class Sum(Metric):
    """The (weighted) sum of the values."""

    def __init__(self, name="sum", dtype="float32"):
        super().__init__(name, dtype)

    def _state_shapes(self):
        return {"total": ()}

    def update_state(self, values, sample_weight=None):
        with no_grad():
            values = _detach(values)
            if not values.dtype.startswith("float"):
                values = _float(values)
            if sample_weight is not None:
                values = values * _sample_weight(sample_weight, values)
            self._add("total", ops.sum(values))

    def result(self):
        return ops.multiply(self._state()["total"], 1.0)


class MeanMetricWrapper(Mean):
    """The running mean of ``fn(y_true, y_pred, **kwargs)`` (values per sample)."""

    def __init__(self, fn, name=None, dtype="float32", **kwargs):
        super().__init__(name or getattr(fn, "__name__", "metric"), dtype)
        self._fn = fn
        self._fn_kwargs = kwargs

    def update_state(self, y_true, y_pred, sample_weight=None):
        with _no_grad():
            mask = getattr(y_pred, "_keras_mask", None)
            y_true, y_pred = _pair(y_true, y_pred)
            values = self._fn(y_true, y_pred, **self._fn_kwargs)
            if mask is not None:  # as Keras: the prediction's mask joins the sample weights
                from .losses import apply_mask
                sample_weight = apply_mask(sample_weight, mask, values.dtype if values.dtype.startswith("float")
                                           else "float32", "sum")
            super().update_state(values, sample_weight)

    def get_config(self):
        return {**super().get_config(), **self._fn_kwargs}

    @classmethod
    def from_config(cls, config):
        if cls is MeanMetricWrapper:
            raise TypeError("MeanMetricWrapper.from_config needs a subclass with a fixed function")
        return cls(**config)


def _wrapped(cls_name, fn, default_name, params=()):
    def __init__(self, *args, name=default_name, dtype="float32", **kwargs):
        names = [p for p, _ in params]
        if len(args) > len(names):
            raise TypeError(f"{cls_name}() takes at most {len(names)} positional arguments")
        vals = dict(params)
        vals.update(zip(names, args))
        for k, v in kwargs.items():
            if k not in vals:
                raise TypeError(f"{cls_name}() got an unexpected keyword argument {k!r}")
            vals[k] = v
        MeanMetricWrapper.__init__(self, fn, name=name, dtype=dtype, **vals)
        for k, v in vals.items():
            setattr(self, k, v)

    cls = type(cls_name, (MeanMetricWrapper,), {"__init__": __init__, "__doc__": fn.__doc__,
                                                "__module__": __name__})
    return cls


Accuracy = _wrapped("Accuracy", accuracy, "accuracy")
BinaryAccuracy = _wrapped("BinaryAccuracy", binary_accuracy, "binary_accuracy", (("threshold", 0.5),))
CategoricalAccuracy = _wrapped("CategoricalAccuracy", categorical_accuracy, "categorical_accuracy")
SparseCategoricalAccuracy = _wrapped("SparseCategoricalAccuracy", sparse_categorical_accuracy,
                                     "sparse_categorical_accuracy")
TopKCategoricalAccuracy = _wrapped("TopKCategoricalAccuracy", top_k_categorical_accuracy,
                                   "top_k_categorical_accuracy", (("k", 5),))
SparseTopKCategoricalAccuracy = _wrapped("SparseTopKCategoricalAccuracy", sparse_top_k_categorical_accuracy,
                                         "sparse_top_k_categorical_accuracy", (("k", 5),))
MeanSquaredError = _wrapped("MeanSquaredError", mean_squared_error, "mean_squared_error")
MeanAbsoluteError = _wrapped("MeanAbsoluteError", mean_absolute_error, "mean_absolute_error")
MeanAbsolutePercentageError = _wrapped("MeanAbsolutePercentageError", mean_absolute_percentage_error,
                                       "mean_absolute_percentage_error")
MeanSquaredLogarithmicError = _wrapped("MeanSquaredLogarithmicError", mean_squared_logarithmic_error,
                                       "mean_squared_logarithmic_error")
BinaryCrossentropy = _wrapped("BinaryCrossentropy", binary_crossentropy, "binary_crossentropy",
                              (("from_logits", False), ("label_smoothing", 0.0)))
CategoricalCrossentropy = _wrapped("CategoricalCrossentropy", categorical_crossentropy,
                                   "categorical_crossentropy", (("from_logits", False), ("label_smoothing", 0.0)))
SparseCategoricalCrossentropy = _wrapped("SparseCategoricalCrossentropy", sparse_categorical_crossentropy,
                                         "sparse_categorical_crossentropy", (("from_logits", False),))
KLDivergence = _wrapped("KLDivergence", kl_divergence, "kl_divergence")
Poisson = _wrapped("Poisson", poisson, "poisson")
Hinge = _wrapped("Hinge", hinge, "hinge")
SquaredHinge = _wrapped("SquaredHinge", squared_hinge, "squared_hinge")
CategoricalHinge = _wrapped("CategoricalHinge", categorical_hinge, "categorical_hinge")
LogCoshError = _wrapped("LogCoshError", log_cosh, "logcosh")
CosineSimilarity = _wrapped("CosineSimilarity", cosine_similarity, "cosine_similarity", (("axis", -1),))


class RootMeanSquaredError(Mean):
    """``sqrt(mean(square(y_true - y_pred)))`` over all elements seen."""

    def __init__(self, name="root_mean_squared_error", dtype="float32"):
        super().__init__(name, dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        with no_grad():
            y_true, y_pred = _pair(y_true, y_pred)
            y_true, y_pred = _losses.squeeze_or_expand_to_same_rank(_cast_like(y_true, y_pred), y_pred)
            super().update_state(ops.square(y_pred - y_true), sample_weight)

    def result(self):
        return ops.sqrt(super().result())


# ------------------------------------------------------ confusion metrics


def _thresholds_list(thresholds, default=0.5):
    if thresholds is None:
        return [default], True
    if isinstance(thresholds, (int, float)):
        return [float(thresholds)], True
    t = [float(x) for x in thresholds]
    if not t:
        raise ValueError("thresholds must not be empty")
    return t, False


class _Confusion(Metric):
    """Counts of true/false positives/negatives at each threshold (``pred > threshold``)."""

    _counts = ("tp", "fp", "tn", "fn")

    def __init__(self, thresholds, name=None, dtype="float32", class_id=None, from_logits=False):
        super().__init__(name, dtype)
        self._thr_list, self._single = _thresholds_list(thresholds)
        self.class_id = class_id
        self.from_logits = from_logits
        self._thr = None

    def _state_shapes(self):
        return {k: (len(self._thr_list),) for k in self._counts}

    def update_state(self, y_true, y_pred, sample_weight=None):
        with no_grad():
            y_true, y_pred = _pair(y_true, y_pred)
            y_true, y_pred = _losses.squeeze_or_expand_to_same_rank(_cast_like(y_true, y_pred), y_pred)
            if self.from_logits:
                y_pred = ops.sigmoid(y_pred)
            if self.class_id is not None:
                y_true = y_true[..., self.class_id]
                y_pred = y_pred[..., self.class_id]
            if self._thr is None or self._thr.backend != y_pred.backend:
                self._thr = tensor(self._thr_list, y_pred.dtype, backend=y_pred.backend).reshape(-1, 1)
            pos = ops.reshape(ops.not_equal(y_true, 0.0), (1, -1))
            pred = ops.greater(ops.reshape(y_pred, (1, -1)), self._thr)  # [T, N]
            if sample_weight is not None:
                sw = _sample_weight(sample_weight, y_pred)
                while sw.ndim < y_pred.ndim:
                    sw = ops.expand_dims(sw, -1)
                w = ops.reshape(ops.broadcast_to(sw, y_pred.shape), (1, -1))
            else:
                w = None
            negp = ops.logical_not(pos)
            notp = ops.logical_not(pred)
            for name, m in (("tp", ops.logical_and(pred, pos)), ("fp", ops.logical_and(pred, negp)),
                            ("tn", ops.logical_and(notp, negp)), ("fn", ops.logical_and(notp, pos))):
                if name not in self._counts:
                    continue
                m = ops.cast(m, self.dtype)
                self._add(name, ops.sum(m if w is None else m * w, axis=-1))

    def _out(self, value):
        return ops.reshape(value, ()) if self._single else value


class Precision(_Confusion):
    """``tp / (tp + fp)`` with predictions ``> thresholds`` (0.5 by default)."""

    _counts = ("tp", "fp")

    def __init__(self, thresholds=None, top_k=None, class_id=None, name="precision", dtype="float32"):
        if top_k is not None:
            raise NotImplementedError("Precision(top_k=...) is not supported")
        super().__init__(thresholds, name, dtype, class_id)
        self.thresholds = thresholds

    def result(self):
        st = self._state()
        return self._out(_divide_no_nan(st["tp"], st["tp"] + st["fp"]))

    def get_config(self):
        return {**super().get_config(), "thresholds": self.thresholds, "class_id": self.class_id}


class Recall(_Confusion):
    """``tp / (tp + fn)`` with predictions ``> thresholds`` (0.5 by default)."""

    _counts = ("tp", "fn")

    def __init__(self, thresholds=None, top_k=None, class_id=None, name="recall", dtype="float32"):
        if top_k is not None:
            raise NotImplementedError("Recall(top_k=...) is not supported")
        super().__init__(thresholds, name, dtype, class_id)
        self.thresholds = thresholds

    def result(self):
        st = self._state()
        return self._out(_divide_no_nan(st["tp"], st["tp"] + st["fn"]))

    def get_config(self):
        return {**super().get_config(), "thresholds": self.thresholds, "class_id": self.class_id}


class TruePositives(_Confusion):
    _counts = ("tp",)

    def __init__(self, thresholds=None, name="true_positives", dtype="float32"):
        super().__init__(thresholds, name, dtype)
        self.thresholds = thresholds

    def result(self):
        return self._out(ops.multiply(self._state()["tp"], 1.0))


class AUC(_Confusion):
    """Area under the ROC (or PR) curve from counts at ``num_thresholds`` thresholds.

    As Keras: thresholds ``i / (num_thresholds - 1)`` for i in 1..n-2 plus
    ``-1e-7`` and ``1 + 1e-7``; ROC by the trapezoid rule
    (summation_method "interpolation"), or "minoring" / "majoring"; PR with
    "interpolation" uses Davis & Goadrich's interpolation.
    """

    def __init__(self, num_thresholds=200, curve="ROC", summation_method="interpolation", name="auc",
                 dtype="float32", thresholds=None, multi_label=False, from_logits=False):
        if multi_label:
            raise NotImplementedError("AUC(multi_label=True) is not supported")
        curve = curve.upper()
        if curve not in ("ROC", "PR"):
            raise ValueError(f"curve must be 'ROC' or 'PR', got {curve!r}")
        summation_method = summation_method.lower()
        if summation_method not in ("interpolation", "minoring", "majoring"):
            raise ValueError(f"summation_method must be interpolation, minoring or majoring, "
                             f"got {summation_method!r}")
        if thresholds is not None:
            inner = sorted(float(t) for t in thresholds)
            num_thresholds = len(inner) + 2
        else:
            if num_thresholds <= 1:
                raise ValueError(f"num_thresholds must be > 1, got {num_thresholds}")
            inner = [(i + 1) * 1.0 / (num_thresholds - 1) for i in range(num_thresholds - 2)]
        eps = 1e-7
        super().__init__([0.0 - eps] + inner + [1.0 + eps], name, dtype, from_logits=from_logits)
        self._single = False
        self.num_thresholds = num_thresholds
        self.curve = curve
        self.summation_method = summation_method
        self._user_thresholds = thresholds

    def _interpolate_pr_auc(self, tp, fp, fn):
        n = self.num_thresholds
        dtp = tp[:n - 1] - tp[1:]
        p = tp + fp
        dp = p[:n - 1] - p[1:]
        slope = _divide_no_nan(dtp, ops.relu(dp))
        intercept = tp[1:] - slope * p[1:]
        both = ops.logical_and(ops.greater(p[:n - 1], 0.0), ops.greater(p[1:], 0.0))
        ratio = ops.where(both, _divide_no_nan(p[:n - 1], ops.relu(p[1:])), 1.0)
        ratio = ops.where(both, ratio, 1.0)
        inc = _divide_no_nan(slope * (dtp + intercept * ops.log(ops.maximum(ratio, 1e-30))),
                             ops.relu(tp[1:] + fn[1:]))
        return ops.sum(inc)

    def result(self):
        st = self._state()
        tp, fp, tn, fn = st["tp"], st["fp"], st["tn"], st["fn"]
        n = self.num_thresholds
        if self.curve == "PR" and self.summation_method == "interpolation":
            return self._interpolate_pr_auc(tp, fp, fn)
        recall = _divide_no_nan(tp, tp + fn)
        if self.curve == "ROC":
            x, y = _divide_no_nan(fp, fp + tn), recall
        else:
            x, y = recall, _divide_no_nan(tp, tp + fp)
        if self.summation_method == "interpolation":
            heights = (y[:n - 1] + y[1:]) * 0.5
        elif self.summation_method == "minoring":
            heights = ops.minimum(y[:n - 1], y[1:])
        else:
            heights = ops.maximum(y[:n - 1], y[1:])
        return ops.sum((x[:n - 1] - x[1:]) * heights)

    def get_config(self):
        return {**super().get_config(), "num_thresholds": self.num_thresholds, "curve": self.curve,
                "summation_method": self.summation_method, "thresholds": self._user_thresholds,
                "from_logits": self.from_logits}



# ----------------------------------------------- F-scores, IoU, R2 (Keras 3)

_EPS = 1e-7  # Keras's backend.epsilon()


class FBetaScore(Metric):
    """F-beta over classes, Keras 3's: ``FBetaScore(average=None, beta=1.0, threshold=None)``.

    y_true / y_pred are ``(batch, classes)``. A prediction counts as positive
    when ``> threshold``, or (threshold None) when it is the row's maximum (and
    nonzero). ``average``: None (one score per class), "micro" (over all
    entries), "macro" (mean of the class scores) or "weighted" (by each
    class's true count). Scores use ``tp / (tp + fp + 1e-7)`` etc. as Keras.
    """

    def __init__(self, average=None, beta=1.0, threshold=None, name="fbeta_score", dtype="float32"):
        super().__init__(name, dtype)
        who = type(self).__name__
        if average not in (None, "micro", "macro", "weighted"):
            raise ValueError(f"{who}: average must be None, 'micro', 'macro' or 'weighted', got {average!r}")
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
            raise ValueError(f"{who}: beta must be a number > 0, got {beta!r}")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                      or not 0.0 < threshold <= 1.0):
            raise ValueError(f"{who}: threshold must be None or a number in (0, 1], got {threshold!r}")
        self.average, self.beta, self.threshold = average, float(beta), threshold
        self._classes = None

    def _state_shapes(self):
        shape = () if self.average == "micro" else (self._classes,)
        return {k: shape for k in ("true_positives", "false_positives", "false_negatives", "intermediate_weights")}

    def update_state(self, y_true, y_pred, sample_weight=None):
        with no_grad():
            y_true, y_pred = _pair(y_true, y_pred)
            if y_pred.ndim != 2 or y_true.ndim != 2:
                raise ValueError(f"{type(self).__name__} expects 2-D inputs (batch, classes); got y_true "
                                 f"{y_true.shape}, y_pred {y_pred.shape}")
            if self._classes is None:
                self._classes = y_pred.shape[-1]
            y_true = _cast_like(y_true, y_pred)
            if self.threshold is None:
                top = ops.max(y_pred, axis=-1, keepdims=True)
                pred = ops.logical_and(ops.greater_equal(y_pred, top), ops.greater(ops.abs(y_pred), 1e-9))
            else:
                pred = ops.greater(y_pred, float(self.threshold))
            pred = ops.cast(pred, y_pred.dtype)
            axis = None if self.average == "micro" else 0

            def wsum(v):
                if sample_weight is not None:
                    v = v * ops.expand_dims(_sample_weight(sample_weight, v[:, 0]), 1)
                return ops.sum(v, axis=axis)
            self._add("true_positives", wsum(pred * y_true))
            self._add("false_positives", wsum(pred * (1.0 - y_true)))
            self._add("false_negatives", wsum((1.0 - pred) * y_true))
            self._add("intermediate_weights", wsum(y_true))

    def result(self):
        if self._classes is None:
            return ops.multiply(tensor(0.0), 1.0)
        st = self._state()
        tp, fp, fn = st["true_positives"], st["false_positives"], st["false_negatives"]
        precision = tp / (tp + fp + _EPS)
        recall = tp / (tp + fn + _EPS)
        b2 = self.beta ** 2
        f = precision * recall / (precision * b2 + recall + _EPS) * (1.0 + b2)
        if self.average == "weighted":
            w = st["intermediate_weights"]
            return ops.sum(f * (w / (ops.sum(w) + _EPS)))
        if self.average is not None:
            return ops.mean(f)
        return f

    def reset_state(self):
        super().reset_state()

    def get_config(self):
        return {**super().get_config(), "average": self.average, "beta": self.beta, "threshold": self.threshold}


class F1Score(FBetaScore):
    """F1 (FBetaScore with beta 1): ``F1Score(average=None, threshold=None)``."""

    def __init__(self, average=None, threshold=None, name="f1_score", dtype="float32"):
        super().__init__(average, 1.0, threshold, name, dtype)

    def get_config(self):
        cfg = super().get_config()
        cfg.pop("beta")
        return cfg


class IoU(Metric):
    """Intersection over union from a confusion matrix, Keras 3's: ``IoU(num_classes,
    target_class_ids, ignore_class=None, sparse_y_true=True, sparse_y_pred=True, axis=-1)``.

    Class ids outside ``[0, num_classes)`` (and ``ignore_class``) are left
    out; not sparse means one-hot / scores, argmax over ``axis``. The result
    is the mean IoU of the ``target_class_ids`` that occur (a class never seen
    or predicted does not count). Weights count as given (Keras's default int
    dtype would truncate them).
    """

    def __init__(self, num_classes, target_class_ids, name=None, dtype="float32", ignore_class=None,
                 sparse_y_true=True, sparse_y_pred=True, axis=-1):
        super().__init__(name, dtype)
        who = type(self).__name__
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"{who}: num_classes must be an integer >= 1, got {num_classes!r}")
        ids = list(target_class_ids)
        if not ids or any(not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < num_classes for i in ids):
            raise ValueError(f"{who}: target_class_ids must be class ids in [0, {num_classes}), got "
                             f"{target_class_ids!r}")
        self.num_classes, self.target_class_ids = num_classes, ids
        self.ignore_class, self.sparse_y_true, self.sparse_y_pred, self.axis = (
            ignore_class, bool(sparse_y_true), bool(sparse_y_pred), axis)
        self._ids = None

    def _state_shapes(self):
        return {"total_cm": (self.num_classes, self.num_classes)}

    def _classes_of(self, y, sparse):
        if not sparse:
            return ops.cast(ops.argmax(y, axis=self.axis), "int32")
        return ops.reshape(ops.cast(y, "int32"), (-1,))

    def update_state(self, y_true, y_pred, sample_weight=None):
        with no_grad():
            y_true, y_pred = _pair(y_true, y_pred)
            t = ops.reshape(self._classes_of(y_true, self.sparse_y_true), (-1,))
            p = ops.reshape(self._classes_of(y_pred, self.sparse_y_pred), (-1,))
            if t.shape != p.shape:
                raise ValueError(f"{type(self).__name__}: {t.shape[0]} true classes for {p.shape[0]} predicted "
                                 f"ones (y_true {y_true.shape}, y_pred {y_pred.shape})")
            n = self.num_classes
            ok = ops.logical_and(ops.logical_and(ops.greater_equal(t, 0), ops.less(t, n)),
                                 ops.logical_and(ops.greater_equal(p, 0), ops.less(p, n)))
            if self.ignore_class is not None:
                ok = ops.logical_and(ok, ops.not_equal(t, int(self.ignore_class)))
            w = ops.cast(ok, self.dtype)
            if sample_weight is not None:
                sw = ops.reshape(_sample_weight(sample_weight, _float(t)), (-1,))
                w = w * ops.broadcast_to(sw, w.shape) if sw.size != 1 else w * ops.reshape(sw, ())
            t1 = ops.one_hot(ops.where(ok, t, 0), n, self.dtype) * ops.expand_dims(w, 1)
            p1 = ops.one_hot(ops.where(ok, p, 0), n, self.dtype)
            self._add("total_cm", ops.matmul(t1, p1, transpose_a=True))  # rows: true, columns: predicted

    def result(self):
        cm = self._state()["total_cm"]
        rows, cols = ops.sum(cm, axis=0), ops.sum(cm, axis=1)
        eye = ops.one_hot(tensor(list(range(self.num_classes)), "int32", backend=cm.backend), self.num_classes,
                          cm.dtype)
        tp = ops.sum(cm * eye, axis=1)
        denom = rows + cols - tp
        if self._ids is None or self._ids.backend != cm.backend:
            self._ids = tensor(self.target_class_ids, "int32", backend=cm.backend)
        tp, denom = ops.gather(tp, self._ids), ops.gather(denom, self._ids)
        valid = ops.cast(ops.greater(denom, 1e-9), cm.dtype)
        iou = tp / (denom + _EPS) * valid
        return ops.sum(iou) / (ops.sum(valid) + _EPS)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "target_class_ids": self.target_class_ids,
                "ignore_class": self.ignore_class, "sparse_y_true": self.sparse_y_true,
                "sparse_y_pred": self.sparse_y_pred, "axis": self.axis}


class MeanIoU(IoU):
    """IoU averaged over every class: ``MeanIoU(num_classes, ignore_class=None, sparse_y_true=True,
    sparse_y_pred=True, axis=-1)``."""

    def __init__(self, num_classes, name=None, dtype="float32", ignore_class=None, sparse_y_true=True,
                 sparse_y_pred=True, axis=-1):
        n = num_classes if isinstance(num_classes, int) and not isinstance(num_classes, bool) else 0
        super().__init__(num_classes, list(range(max(n, 1))), name, dtype, ignore_class, sparse_y_true,
                         sparse_y_pred, axis)

    def get_config(self):
        cfg = super().get_config()
        cfg.pop("target_class_ids")
        return cfg


class BinaryIoU(IoU):
    """IoU of 0 / 1 labels with predictions thresholded at ``threshold`` (``>=``):
    ``BinaryIoU(target_class_ids=(0, 1), threshold=0.5)``."""

    def __init__(self, target_class_ids=(0, 1), threshold=0.5, name=None, dtype="float32"):
        super().__init__(2, target_class_ids, name, dtype)
        self.threshold = float(threshold)

    def update_state(self, y_true, y_pred, sample_weight=None):
        with no_grad():
            y_true, y_pred = _pair(y_true, y_pred)
            super().update_state(y_true, ops.cast(ops.greater_equal(y_pred, self.threshold), "float32"),
                                 sample_weight)

    def get_config(self):
        return {"target_class_ids": self.target_class_ids, "threshold": self.threshold, "name": self.name,
                "dtype": self.dtype}


class OneHotIoU(IoU):
    """IoU with one-hot y_true (and scores as y_pred unless ``sparse_y_pred``)."""

    def __init__(self, num_classes, target_class_ids, name=None, dtype="float32", ignore_class=None,
                 sparse_y_pred=False, axis=-1):
        super().__init__(num_classes, target_class_ids, name, dtype, ignore_class, False, sparse_y_pred, axis)

    def get_config(self):
        cfg = super().get_config()
        cfg.pop("sparse_y_true")
        return cfg


class OneHotMeanIoU(MeanIoU):
    """MeanIoU with one-hot y_true (and scores as y_pred unless ``sparse_y_pred``)."""

    def __init__(self, num_classes, name=None, dtype="float32", ignore_class=None, sparse_y_pred=False, axis=-1):
        super().__init__(num_classes, name, dtype, ignore_class, False, sparse_y_pred, axis)

    def get_config(self):
        cfg = super().get_config()
        cfg.pop("sparse_y_true")
        return cfg


class R2Score(Metric):
    """Coefficient of determination, Keras 3's: ``R2Score(class_aggregation="uniform_average",
    num_regressors=0)``; y ``(batch, outputs)``. class_aggregation: None (one score per output),
    "uniform_average" or "variance_weighted_average"; num_regressors > 0 gives the adjusted R2
    (as Keras, the plain one with a warning when there are too few samples)."""

    def __init__(self, class_aggregation="uniform_average", num_regressors=0, name="r2_score", dtype="float32"):
        super().__init__(name, dtype)
        if class_aggregation not in (None, "uniform_average", "variance_weighted_average"):
            raise ValueError(f"R2Score: class_aggregation must be None, 'uniform_average' or "
                             f"'variance_weighted_average', got {class_aggregation!r}")
        if isinstance(num_regressors, bool) or not isinstance(num_regressors, int) or num_regressors < 0:
            raise ValueError(f"R2Score: num_regressors must be an integer >= 0, got {num_regressors!r}")
        self.class_aggregation, self.num_regressors = class_aggregation, num_regressors
        self._outputs = None
        self._num_samples = 0  # elements seen, known on the host

    def _state_shapes(self):
        return {k: (self._outputs,) for k in ("squared_sum", "sum", "residual", "count")}

    def update_state(self, y_true, y_pred, sample_weight=None):
        with no_grad():
            y_true, y_pred = _pair(y_true, y_pred)
            y_true, y_pred = _losses.squeeze_or_expand_to_same_rank(_cast_like(y_true, y_pred), y_pred)
            if y_pred.ndim != 2:
                raise ValueError(f"R2Score expects 2-D inputs (batch, outputs); got y_true {y_true.shape}, "
                                 f"y_pred {y_pred.shape}")
            if self._outputs is None:
                self._outputs = y_pred.shape[-1]
            if sample_weight is None:
                sw = ops.multiply(y_true, 0.0) + 1.0
            else:
                sw = _sample_weight(sample_weight, y_true[:, 0])
                sw = ops.broadcast_to(ops.reshape(sw, (-1, 1)) if sw.ndim == 1 else sw, y_true.shape)
            wy = y_true * sw
            self._add("sum", ops.sum(wy, axis=0))
            self._add("squared_sum", ops.sum(y_true * wy, axis=0))
            self._add("residual", ops.sum(ops.square(y_true - y_pred) * sw, axis=0))
            self._add("count", ops.sum(sw, axis=0))
            self._num_samples += y_true.size

    def result(self):
        import warnings
        if self._outputs is None:
            return ops.multiply(tensor(0.0), 1.0)
        st = self._state()
        mean = st["sum"] / st["count"]
        total = st["squared_sum"] - st["sum"] * mean
        raw = 1.0 - st["residual"] / total
        raw = ops.where(ops.greater(ops.abs(raw), 3.4e38), 0.0, raw)  # an infinite score is 0, as Keras
        if self.class_aggregation == "uniform_average":
            r2 = ops.mean(raw)
        elif self.class_aggregation == "variance_weighted_average":
            r2 = ops.sum(total * raw) / ops.sum(total)
        else:
            r2 = raw
        p, n = self.num_regressors, self._num_samples
        if p:
            if p > n - 1:
                warnings.warn("More independent predictors than datapoints in adjusted R2 score. Falling back "
                              "to standard R2 score.", stacklevel=2)
            elif p == n - 1:
                warnings.warn("Division by zero in Adjusted R2 score. Falling back to standard R2 score.",
                              stacklevel=2)
            else:
                r2 = 1.0 - (1.0 - r2) * (float(n) - 1.0) / (float(n) - p - 1.0)
        return r2

    def reset_state(self):
        super().reset_state()
        self._num_samples = 0

    def _host_state(self):
        return self._num_samples

    def _replay_host(self, before, after):
        self._num_samples += after - before

    def _set_host_state(self, state):
        self._num_samples = state

    def get_config(self):
        return {**super().get_config(), "class_aggregation": self.class_aggregation,
                "num_regressors": self.num_regressors}


# -------------------------------------------------------------------- get

_CLASSES = {
    "accuracy": Accuracy, "binary_accuracy": BinaryAccuracy, "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "top_k_categorical_accuracy": TopKCategoricalAccuracy,
    "sparse_top_k_categorical_accuracy": SparseTopKCategoricalAccuracy,
    "mean_squared_error": MeanSquaredError, "mean_absolute_error": MeanAbsoluteError,
    "mean_absolute_percentage_error": MeanAbsolutePercentageError,
    "mean_squared_logarithmic_error": MeanSquaredLogarithmicError,
    "root_mean_squared_error": RootMeanSquaredError,
    "binary_crossentropy": BinaryCrossentropy, "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy, "kl_divergence": KLDivergence,
    "poisson": Poisson, "hinge": Hinge, "squared_hinge": SquaredHinge, "categorical_hinge": CategoricalHinge,
    "logcosh": LogCoshError, "cosine_similarity": CosineSimilarity,
    "precision": Precision, "recall": Recall, "auc": AUC, "mean": Mean, "sum": Sum,
    "true_positives": TruePositives,
    "f1_score": F1Score, "fbeta_score": FBetaScore, "iou": IoU, "mean_iou": MeanIoU, "binary_iou": BinaryIoU,
    "one_hot_iou": OneHotIoU, "one_hot_mean_iou": OneHotMeanIoU, "r2_score": R2Score,
}
_ALIASES = {
    "acc": "accuracy", "mse": "mean_squared_error", "mae": "mean_absolute_error",
    "mape": "mean_absolute_percentage_error", "msle": "mean_squared_logarithmic_error",
    "rmse": "root_mean_squared_error", "kld": "kl_divergence",
    "kullback_leibler_divergence": "kl_divergence", "log_cosh": "logcosh",
    "log_cosh_error": "logcosh", "cosine_proximity": "cosine_similarity",
    "top_k_accuracy": "top_k_categorical_accuracy",
    "crossentropy": "crossentropy", "ce": "crossentropy",
}


def _key(name):
    return name.replace("_", "").lower()


_LOOKUP = {}
for _n, _c in _CLASSES.items():
    _LOOKUP[_key(_n)] = _n
    _LOOKUP[_key(_c.__name__)] = _n
for _a, _n in _ALIASES.items():
    _LOOKUP[_key(_a)] = _n


def valid_names() -> list:
    return sorted(set(_CLASSES) | set(_ALIASES))


def _resolve_from_loss(kind, loss, output_shape, y_true_shape):
    """The accuracy (kind "accuracy") or crossentropy class chosen as Keras does."""
    canon = _losses.canonical_name(loss) if loss is not None else None
    logits = bool(getattr(loss, "from_logits", False) or getattr(loss, "_fn_kwargs", {}).get("from_logits"))
    last = output_shape[-1] if output_shape else None
    if canon == "binary_crossentropy":
        which = "binary"
    elif canon in ("categorical_crossentropy", "kl_divergence", "categorical_hinge"):
        which = "categorical"
    elif canon == "sparse_categorical_crossentropy":
        which = "sparse"
    elif last == 1:
        which = "binary"
    elif y_true_shape is not None and output_shape is not None and (
            len(y_true_shape) < len(output_shape) or (y_true_shape[-1:] == (1,) and (last or 0) > 1)):
        which = "sparse"
    else:
        which = "categorical"
    if kind == "accuracy":
        if which == "binary":
            return BinaryAccuracy, {"threshold": 0.0 if logits else 0.5}
        return (SparseCategoricalAccuracy if which == "sparse" else CategoricalAccuracy), {}
    cls = {"binary": BinaryCrossentropy, "sparse": SparseCategoricalCrossentropy,
           "categorical": CategoricalCrossentropy}[which]
    return cls, {"from_logits": logits}


def get(identifier, loss=None, output_shape=None, y_true_shape=None):
    """A Metric from a name (Keras or TF.js spelling), a config dict, a Metric, or a callable.

    "accuracy" / "acc" (and "crossentropy" / "ce") are resolved from the
    ``loss`` as Keras does: binary_crossentropy -> binary_accuracy,
    categorical_crossentropy -> categorical_accuracy, sparse_* ->
    sparse_categorical_accuracy; other losses decide by ``output_shape``
    (last dim 1 -> binary_accuracy, else categorical_accuracy, or sparse when
    ``y_true_shape`` has one axis fewer / a last dim of 1). A metric got by
    name is named as written ("acc" stays "acc": the history key). A
    callable ``fn(y_true, y_pred)`` is wrapped in a running mean. Unknown
    names raise ValueError listing the valid ones.
    """
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, dict):
        name = str(identifier.get("class_name"))
        canon = _LOOKUP.get(_key(name))
        if canon is None or canon == "crossentropy":
            raise _unknown(name)
        return _CLASSES[canon].from_config(dict(identifier.get("config") or {}))
    if isinstance(identifier, str):
        canon = _LOOKUP.get(_key(identifier))
        if canon is None:
            raise _unknown(identifier)
        if canon in ("accuracy", "crossentropy"):
            cls, kw = _resolve_from_loss(canon, loss, output_shape, y_true_shape)
            return cls(name=identifier, **kw)
        cls = _CLASSES[canon]
        try:
            return cls(name=identifier)
        except TypeError as e:  # IoU and friends need their number of classes
            raise ValueError(f"metric {identifier!r} cannot be made from its name alone ({e}); pass "
                             f"metrics.{cls.__name__}(...) with its arguments") from None
    if isinstance(identifier, type) and issubclass(identifier, Metric):
        return identifier()
    if callable(identifier):
        return MeanMetricWrapper(identifier, name=getattr(identifier, "__name__", "metric"))
    raise TypeError(f"a metric must be a name, a Metric or a callable, got {type(identifier).__name__}")


def is_sparse(metric) -> bool:
    """True for the metrics that take integer class labels."""
    return isinstance(metric, (SparseCategoricalAccuracy, SparseTopKCategoricalAccuracy,
                               SparseCategoricalCrossentropy))


def _unknown(name):
    return ValueError(
        f"unknown metric {name!r}; valid names: {', '.join(valid_names())} (the TF.js camelCase "
        f"spellings, such as 'binaryAccuracy', and the class names are accepted too)")


def serialize(metric) -> dict:
    return {"class_name": type(metric).__name__, "config": metric.get_config()}


deserialize = get
