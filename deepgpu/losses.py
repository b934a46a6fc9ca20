"""Losses with Keras semantics, by Keras or TF.js name.

Loss *functions* take ``(y_true, y_pred)`` Tensors and return the loss of
each sample (the mean over the last axis where Keras takes it), shape
``[batch]``. Loss *classes* (``MeanSquaredError()``, ...) are called as
``loss(y_true, y_pred, sample_weight=None)`` and return a scalar Tensor,
reduced as Keras's "sum_over_batch_size": ``sum(losses * sample_weight) /
number of losses``. ``get(identifier)`` resolves a name ("mse",
"categorical_crossentropy", "meanSquaredError", ...), an instance or a
callable. Every crossentropy is numerically stable: logits go through
log-softmax / a stable sigmoid formula, probabilities are clipped to
``[EPSILON, 1 - EPSILON]`` as Keras does. Sparse crossentropy raises
ValueError for a class label outside ``[0, classes)`` (one host read per
call; ``fit`` / ``evaluate`` check all labels once instead), unless it is
the loss's ``ignore_class``.
"""
from __future__ import annotations

import math
import threading

from . import backends as _backends
from . import ops
from .tensor import Tensor, tensor

EPSILON = 1e-7  # Keras's backend.epsilon()

# ------------------------------------------------------------ class labels

_labels = threading.local()


class _LabelsChecked:
    # A class, not @contextlib.contextmanager: entered every train_on_batch, at a third of the cost.
    _prev = None  # the setting to restore while entered; None when not

    def __enter__(self):
        if self._prev is not None:  # entered twice at once: the first exit would restore the wrong setting
            raise RuntimeError("this labels_checked() is already entered (in this block or another thread): "
                               "use a new one per with block")
        self._prev = getattr(_labels, "checked", False)
        _labels.checked = True

    def __exit__(self, *exc):
        _labels.checked, self._prev = self._prev, None


def labels_checked():
    """Within this block the sparse losses and metrics skip their label-range check
    (and its host read): ``fit`` / ``evaluate`` check all labels once beforehand."""
    return _LabelsChecked()


def check_labels(labels, classes, ignore_class=None, who="sparse_categorical_crossentropy"):
    """Raise ValueError when a class label is outside ``[0, classes)`` (and is not
    ``ignore_class``) or is NaN. One host read of a boolean; host labels all in range are
    settled by their min and max first."""
    if classes is None:
        return
    t = _as_tensor(labels)
    # On a device the min and max of _in_range would be two syncs: device labels take the mask's one.
    if t._backend.name == "cpu" and _in_range(t._backend, t.data, classes):
        return
    bad = ops.logical_or(ops.less(t, 0), ops.greater_equal(t, classes))
    if t.dtype.startswith("float"):
        bad = ops.logical_or(bad, ops.not_equal(t, t))
    if ignore_class is not None:
        bad = ops.logical_and(bad, ops.not_equal(t, ignore_class))
    if not ops.any(bad).item():
        return
    flags = bad.data_sync().reshape(-1)
    i = int(flags.argmax())
    value = t.data_sync().reshape(-1)[i]
    value = int(value) if value == value and float(value).is_integer() else value
    hint = (f" or ignore_class={ignore_class}" if ignore_class is not None else
            " (for a padding label, pass ignore_class=<label> to the loss)")
    raise ValueError(f"{who}: class label {value!r} at flat index {i} is outside [0, {classes}): the "
                     f"output has {classes} classes, so labels must be 0..{classes - 1}{hint}")


def _in_range(cpu, a, classes):
    """Whether the host labels ``a`` are all in ``[0, classes)`` (NaN fails both tests): two
    reductions instead of the mask's five ops."""
    return a.size > 0 and 0 <= cpu.min(a).item() and cpu.max(a).item() < classes


def check_host_labels(values, classes, ignore_class=None, who="sparse_categorical_crossentropy"):
    """``check_labels`` for labels on the host (a NumPy array, or anything ``tensor()`` takes),
    converted as ``tensor()`` would; labels all in range make no Tensor (the trainer checks each
    ``train_on_batch``'s labels so)."""
    if classes is None:
        return
    cpu = _backends.get("cpu")
    a = cpu.asarray(values)
    if not _in_range(cpu, a, classes):
        check_labels(Tensor(a, cpu), classes, ignore_class, who)


def _check_labels_here(labels, classes, ignore_class, who):
    if not getattr(_labels, "checked", False):
        check_labels(labels, classes, ignore_class, who)

# ------------------------------------------------------------------ helpers


def _as_tensor(x, like=None):
    if isinstance(x, Tensor):
        return x
    if like is not None:
        return tensor(x, backend=like.backend)
    return tensor(x)


def _float(y_pred):
    return y_pred if y_pred.dtype.startswith("float") else ops.cast(y_pred, "float32")


def squeeze_or_expand_to_same_rank(x1, x2, expand_rank_1=True):
    """Make two ranks equal when they differ by a trailing axis of size 1 (as Keras does)."""
    r1, r2 = x1.ndim, x2.ndim
    if r1 == r2 + 1 and x1.shape[-1] == 1:
        if r2 == 1 and expand_rank_1:
            x2 = ops.expand_dims(x2, -1)
        else:
            x1 = ops.squeeze(x1, -1)
    elif r2 == r1 + 1 and x2.shape[-1] == 1:
        if r1 == 1 and expand_rank_1:
            x1 = ops.expand_dims(x1, -1)
        else:
            x2 = ops.squeeze(x2, -1)
    return x1, x2


def _prepare(y_true, y_pred, fix_rank=True):
    """Tensors on one backend, y_true cast to y_pred's float dtype, ranks matched."""
    y_pred = _float(_as_tensor(y_pred))
    y_true = _as_tensor(y_true, y_pred)
    if y_true.dtype != y_pred.dtype:
        y_true = ops.cast(y_true, y_pred.dtype)
    if fix_rank:
        y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, y_pred)
    return y_true, y_pred


def _l2_normalize(x, axis=-1):
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), 1e-12))


# ---------------------------------------------------------------- functions


def mean_squared_error(y_true, y_pred):
    """``mean(square(y_true - y_pred), axis=-1)``."""
    y_true, y_pred = _prepare(y_true, y_pred)
    return ops.mean(ops.square(y_pred - y_true), axis=-1)


def mean_absolute_error(y_true, y_pred):
    """``mean(abs(y_true - y_pred), axis=-1)``."""
    y_true, y_pred = _prepare(y_true, y_pred)
    return ops.mean(ops.abs(y_pred - y_true), axis=-1)


def mean_absolute_percentage_error(y_true, y_pred):
    """``100 * mean(abs((y_true - y_pred) / max(abs(y_true), eps)), axis=-1)``."""
    y_true, y_pred = _prepare(y_true, y_pred)
    diff = ops.abs((y_true - y_pred) / ops.maximum(ops.abs(y_true), EPSILON))
    return ops.mean(diff, axis=-1) * 100.0


def mean_squared_logarithmic_error(y_true, y_pred):
    """``mean(square(log(max(y_pred, eps) + 1) - log(max(y_true, eps) + 1)), axis=-1)``."""
    y_true, y_pred = _prepare(y_true, y_pred)
    a = ops.log(ops.maximum(y_pred, EPSILON) + 1.0)
    b = ops.log(ops.maximum(y_true, EPSILON) + 1.0)
    return ops.mean(ops.square(a - b), axis=-1)


def huber(y_true, y_pred, delta=1.0):
    """Quadratic for ``|error| <= delta``, linear beyond; mean over the last axis."""
    y_true, y_pred = _prepare(y_true, y_pred)
    delta = float(delta)
    err = y_pred - y_true
    a = ops.abs(err)
    quad = ops.square(err) * 0.5
    lin = a * delta - 0.5 * delta * delta
    return ops.mean(ops.where(a <= delta, quad, lin), axis=-1)


def log_cosh(y_true, y_pred):
    """``mean(log(cosh(y_pred - y_true)), axis=-1)``, computed without overflow."""
    y_true, y_pred = _prepare(y_true, y_pred)
    x = y_pred - y_true
    return ops.mean(x + ops.softplus(x * -2.0) - math.log(2.0), axis=-1)


def _binary_xent(y_true, y_pred, from_logits):
    """Elementwise binary crossentropy (no reduction)."""
    if from_logits:
        # max(x, 0) - x z + log(1 + exp(-|x|)): never overflows.
        return ops.relu(y_pred) - y_pred * y_true + ops.softplus(-ops.abs(y_pred))
    p = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
    return -(y_true * ops.log(p) + (1.0 - y_true) * ops.log(1.0 - p))


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """Mean binary crossentropy over ``axis``; labels 0/1 (or probabilities).

    label_smoothing s: labels become ``y * (1 - s) + 0.5 * s``.
    """
    y_true, y_pred = _prepare(y_true, y_pred)
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    return ops.mean(_binary_xent(y_true, y_pred, from_logits), axis=axis)


def _check_same_last_dim(y_true, y_pred, name):
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"{name}: targets of shape {y_true.shape} do not match the output of shape "
            f"{y_pred.shape}" + (
                "; integer class labels need sparse_categorical_crossentropy"
                if y_true.shape[-1:] == (1,) and y_pred.shape[-1:] != (1,) else ""))


def _softmax_logits(y_pred, from_logits, axis):
    """The logits to use in the fused softmax crossentropy, or None for the clipped form.

    A ``softmax`` output over the last axis carries its logits; using them
    gives the exact gradient ``p - y`` in one fused op instead of about ten
    small ones, and no clipping at ``EPSILON`` (as Keras on TensorFlow does).
    """
    if from_logits:
        return y_pred
    logits = y_pred._logits
    if logits is not None and axis in (-1, y_pred.ndim - 1):
        return logits
    return None


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """``-sum(y_true * log(p), axis)`` for one-hot (or probability) targets.

    from_logits: y_pred are logits (log-softmax, fused and stable); else
    probabilities, rescaled to sum to 1 and clipped to [eps, 1 - eps], except
    that the output of a softmax over ``axis`` is computed from its logits.
    label_smoothing s: targets become ``y * (1 - s) + s / num_classes``.
    """
    y_true, y_pred = _prepare(y_true, y_pred, fix_rank=False)
    _check_same_last_dim(y_true, y_pred, "categorical_crossentropy")
    if label_smoothing:
        n = y_pred.shape[axis]
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / n
    logits = _softmax_logits(y_pred, from_logits, axis)
    if logits is not None:
        return ops.softmax_cross_entropy(y_true, logits, axis=axis)
    p = y_pred / ops.sum(y_pred, axis=axis, keepdims=True)
    p = ops.clip(p, EPSILON, 1.0 - EPSILON)
    return -ops.sum(y_true * ops.log(p), axis=axis)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, ignore_class=None, axis=-1):
    """Categorical crossentropy with integer class labels, shape [batch] or [batch, 1].

    A softmax output over ``axis`` is computed from its logits, as in
    ``categorical_crossentropy``. A label outside ``[0, classes)`` raises
    ValueError (as Keras does), except ``ignore_class`` (such as a padding
    label): its entries get loss 0 and no gradient.
    """
    y_pred = _float(_as_tensor(y_pred))
    y_true = _as_tensor(y_true, y_pred)
    if y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, -1)
    if y_true.shape != y_pred.shape[:-1]:
        raise ValueError(
            f"sparse_categorical_crossentropy: labels of shape {y_true.shape} do not fit the "
            f"output of shape {y_pred.shape} (expected {y_pred.shape[:-1]} or "
            f"{y_pred.shape[:-1] + (1,)})")
    _check_labels_here(y_true, y_pred.shape[axis], ignore_class, "sparse_categorical_crossentropy")
    if not y_true.dtype.startswith(("int", "uint")):  # float (or bool) class labels
        y_true = ops.cast(y_true, "int32")
    valid = None
    if ignore_class is not None:
        valid = ops.not_equal(y_true, int(ignore_class))
        y_true = ops.where(valid, y_true, 0)
    per = _sparse_cce(y_true, y_pred, from_logits, axis)
    return per if valid is None else ops.where(valid, per, 0.0)


def _sparse_cce(y_true, y_pred, from_logits, axis):
    logits = _softmax_logits(y_pred, from_logits, axis)
    if logits is not None and axis in (-1, y_pred.ndim - 1):
        # Straight from the class indices: no one-hot array in either pass.
        return ops.sparse_softmax_cross_entropy(y_true, logits)
    onehot = ops.one_hot(y_true, y_pred.shape[axis], dtype=y_pred.dtype)
    if logits is not None:
        return ops.softmax_cross_entropy(onehot, logits, axis=axis)
    p = y_pred / ops.sum(y_pred, axis=axis, keepdims=True)
    p = ops.clip(p, EPSILON, 1.0 - EPSILON)
    return -ops.sum(onehot * ops.log(p), axis=axis)


def kl_divergence(y_true, y_pred):
    """``sum(y_true * log(y_true / y_pred), axis=-1)``, both clipped to [eps, 1]."""
    y_true, y_pred = _prepare(y_true, y_pred)
    t = ops.clip(y_true, EPSILON, 1.0)
    p = ops.clip(y_pred, EPSILON, 1.0)
    return ops.sum(t * ops.log(t / p), axis=-1)


def poisson(y_true, y_pred):
    """``mean(y_pred - y_true * log(y_pred + eps), axis=-1)``."""
    y_true, y_pred = _prepare(y_true, y_pred)
    return ops.mean(y_pred - y_true * ops.log(y_pred + EPSILON), axis=-1)


def _hinge_labels(y_true):
    # 0/1 labels become -1/1 (decided on the device: no host read).
    is01 = ops.all(ops.logical_or(ops.equal(y_true, 0.0), ops.equal(y_true, 1.0)))
    return ops.where(is01, y_true * 2.0 - 1.0, y_true)


def hinge(y_true, y_pred):
    """``mean(maximum(1 - y_true * y_pred, 0), axis=-1)``; 0/1 labels mean -1/1."""
    y_true, y_pred = _prepare(y_true, y_pred)
    return ops.mean(ops.relu(1.0 - _hinge_labels(y_true) * y_pred), axis=-1)


def squared_hinge(y_true, y_pred):
    """``mean(square(maximum(1 - y_true * y_pred, 0)), axis=-1)``."""
    y_true, y_pred = _prepare(y_true, y_pred)
    return ops.mean(ops.square(ops.relu(1.0 - _hinge_labels(y_true) * y_pred)), axis=-1)


def categorical_hinge(y_true, y_pred):
    """``maximum(max((1 - y_true) * y_pred) - sum(y_true * y_pred) + 1, 0)``."""
    y_true, y_pred = _prepare(y_true, y_pred, fix_rank=False)
    pos = ops.sum(y_true * y_pred, axis=-1)
    neg = ops.max((1.0 - y_true) * y_pred, axis=-1)
    return ops.relu(neg - pos + 1.0)


def cosine_similarity(y_true, y_pred, axis=-1):
    """Negative cosine similarity along ``axis`` (-1 means the same direction)."""
    y_true, y_pred = _prepare(y_true, y_pred)
    return -ops.sum(_l2_normalize(y_true, axis) * _l2_normalize(y_pred, axis), axis=axis)


mse = MSE = mean_squared_error
mae = MAE = mean_absolute_error
mape = MAPE = mean_absolute_percentage_error
msle = MSLE = mean_squared_logarithmic_error
kld = KLD = kullback_leibler_divergence = kl_divergence
logcosh = log_cosh

# ------------------------------------------------------------------ classes

# Keras 3's names: "mean" is "sum_over_batch_size"; "mean_with_sample_weight" divides by the sum
# of the sample weights instead of the number of losses.
REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none", None)


def binary_focal_crossentropy(y_true, y_pred, apply_class_balancing=False, alpha=0.25, gamma=2.0,
                              from_logits=False, label_smoothing=0.0, axis=-1):
    """Focal loss (Lin et al.) as Keras 3: ``mean((1 - p_t)^gamma * bce, axis)`` with ``p_t`` the
    probability of the true label; ``apply_class_balancing`` weighs positives by ``alpha`` and
    negatives by ``1 - alpha``; labels smoothed as binary_crossentropy's."""
    y_true, y_pred = _prepare(y_true, y_pred)
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        y_pred = ops.sigmoid(y_pred)
    bce = _binary_xent(y_true, y_pred, False)
    p_t = y_true * y_pred + (1.0 - y_true) * (1.0 - y_pred)
    focal = ops.pow(1.0 - p_t, float(gamma)) * bce
    if apply_class_balancing:
        focal = (y_true * alpha + (1.0 - y_true) * (1.0 - alpha)) * focal
    return ops.mean(focal, axis=axis)


def categorical_focal_crossentropy(y_true, y_pred, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0,
                                   axis=-1):
    """Categorical focal loss as Keras 3: ``sum(alpha (1 - p)^gamma * -y log p, axis)`` with ``p`` the
    predictions renormalized to sum 1 and clipped to ``[EPSILON, 1 - EPSILON]``."""
    y_true, y_pred = _prepare(y_true, y_pred, fix_rank=False)
    _check_same_last_dim(y_true, y_pred, "categorical_focal_crossentropy")
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / float(y_true.shape[-1])
    if from_logits:
        y_pred = ops.softmax(y_pred, axis=axis)
    out = ops.clip(y_pred / ops.sum(y_pred, axis=axis, keepdims=True), EPSILON, 1.0 - EPSILON)
    cce = -y_true * ops.log(out)
    return ops.sum(ops.pow(1.0 - out, float(gamma)) * alpha * cce, axis=axis)


def dice(y_true, y_pred, axis=None):
    """``1 - 2 sum(y_true y_pred) / (sum(y_true) + sum(y_pred) + EPSILON)`` over ``axis`` (None: all,
    one value for the batch), as Keras 3."""
    y_true, y_pred = _prepare(y_true, y_pred, fix_rank=False)
    inter = ops.sum(y_true * y_pred, axis=axis)
    return 1.0 - (inter * 2.0) / (ops.sum(y_true, axis=axis) + ops.sum(y_pred, axis=axis) + EPSILON)


def tversky(y_true, y_pred, alpha=0.5, beta=0.5, axis=None):
    """``1 - TP / (TP + alpha * sum((1 - y_pred) y_true) + beta * sum(y_pred (1 - y_true)) + EPSILON)``
    over ``axis`` (None: all), Keras 3's formula as it is written there."""
    y_true, y_pred = _prepare(y_true, y_pred, fix_rank=False)
    inter = ops.sum(y_true * y_pred, axis=axis)
    fp = ops.sum((1.0 - y_pred) * y_true, axis=axis)
    fn = ops.sum(y_pred * (1.0 - y_true), axis=axis)
    return 1.0 - inter / (inter + fp * alpha + fn * beta + EPSILON)


_CTC_NEG = -1e30  # log(0) kept finite: exp(-1e30 - m) is 0 and its gradient 0, not NaN


def _lse(*xs):
    m = xs[0]
    for x in xs[1:]:
        m = ops.maximum(m, x)
    total = None
    for x in xs:
        e = ops.exp(x - m)
        total = e if total is None else total + e
    return m + ops.log(total)


def ctc(y_true, y_pred):
    """Connectionist temporal classification loss per sample, as Keras 3's ``ctc``: ``y_true``
    ``(batch, max_label_length)`` integer labels padded with 0 (0 is the blank and never a
    class), ``y_pred`` ``(batch, time, classes)`` logits (not softmaxed); every sample uses all
    ``time`` steps. ``-log`` of the summed probability of every alignment that collapses to the
    label (the forward algorithm in log space, one step of differentiable ops per time step)."""
    y_pred = _float(_as_tensor(y_pred))
    y_true = _as_tensor(y_true, y_pred)
    if y_true.ndim != 2 or y_pred.ndim != 3 or y_true.shape[0] != y_pred.shape[0]:
        raise ValueError(f"ctc: expected y_true (batch, max_length) integer labels and y_pred (batch, time, "
                         f"classes) logits for the same batch; got y_true {y_true.shape}, y_pred {y_pred.shape}")
    b, t_len, classes = y_pred.shape
    labels = ops.cast(y_true, "int32")
    n_lab = labels.shape[1]
    # the extended label: a blank before, between and after the labels (2 L + 1 positions)
    blanks = ops.cast(labels * 0, "int32")
    ext = ops.concat([ops.reshape(ops.stack([blanks, labels], axis=-1), (b, 2 * n_lab)), blanks[:, :1]], axis=1)
    s_len = 2 * n_lab + 1
    logp = ops.log_softmax(y_pred, axis=-1)
    emit = ops.matmul(logp, ops.one_hot(ext, classes, logp.dtype), transpose_b=True)  # (batch, time, S)
    # a label may follow the one two positions back directly, unless they are the same label
    odd = tensor([[float(i % 2) for i in range(s_len)]], logp.dtype, backend=logp.backend)
    differ = ops.cast(ops.not_equal(ext[:, 2:], ext[:, :-2]), logp.dtype)
    skip = ops.concat([differ[:, :2] * 0.0, differ], axis=1) * odd
    neg = emit[:, 0, :] * 0.0 + _CTC_NEG
    start = tensor([[1.0, 1.0] + [0.0] * (s_len - 2)], logp.dtype, backend=logp.backend)
    alpha = ops.where(ops.greater(start, 0.0), emit[:, 0, :], neg)
    col = neg[:, :1]
    for t in range(1, t_len):
        a1 = ops.concat([col, alpha[:, :-1]], axis=1)
        a2 = ops.concat([col, col, alpha[:, :-2]], axis=1) if s_len > 2 else neg
        a2 = ops.where(ops.greater(skip, 0.0), a2, neg)
        alpha = _lse(alpha, a1, a2) + emit[:, t, :]
    length = ops.sum(ops.cast(ops.not_equal(labels, 0), "int32"), axis=-1)
    last = ops.sum(alpha * ops.one_hot(length * 2, s_len, alpha.dtype), axis=-1)
    before = ops.sum(alpha * ops.one_hot(ops.maximum(length * 2 - 1, 0), s_len, alpha.dtype), axis=-1)
    before = ops.where(ops.greater(length, 0), before, last * 0.0 + _CTC_NEG)
    return -_lse(last, before)


def _weighted(losses, sample_weight):
    sw = _as_tensor(sample_weight, losses)
    if sw.dtype != losses.dtype:
        sw = ops.cast(sw, losses.dtype)
    if sw.ndim == losses.ndim + 1 and sw.shape[-1] == 1:
        sw = ops.squeeze(sw, -1)
    while sw.ndim < losses.ndim:
        sw = ops.expand_dims(sw, -1)
    return losses * sw


def apply_mask(sample_weight, mask, dtype, reduction):
    """Merge a prediction's mask (bool, e.g. (batch, time)) into ``sample_weight``, as Keras 3 does.

    For "sum_over_batch_size" the valid entries weigh total / valid (so the mean runs over
    them only); otherwise 1. Returns ``sample_weight`` unchanged when ``mask`` is None.
    """
    if mask is None:
        return sample_weight
    m = ops.cast(mask, dtype)
    if reduction in ("sum_over_batch_size", "mean"):
        m = m * (float(max(m.size, 1)) / ops.maximum(ops.sum(m), 1.0))  # no valid entry: all weights 0
    if sample_weight is None:
        return m
    sw = _as_tensor(sample_weight, m)
    if sw.dtype != dtype:
        sw = ops.cast(sw, dtype)
    while sw.ndim > m.ndim and sw.shape[-1] == 1:
        sw = ops.squeeze(sw, -1)
    while sw.ndim < m.ndim:
        sw = ops.expand_dims(sw, -1)
    return sw * m


def reduce_losses(losses, sample_weight=None, reduction="sum_over_batch_size"):
    """Weight and reduce per-sample losses as Keras does."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")
    if sample_weight is not None:
        losses = _weighted(losses, sample_weight)
    if reduction in ("none", None) or losses.ndim == 0:
        return losses
    if reduction == "sum":
        return ops.sum(losses)
    if reduction == "mean_with_sample_weight" and sample_weight is not None:
        sw = _as_tensor(sample_weight, losses)
        total = ops.sum(ops.cast(sw, losses.dtype) if sw.dtype != losses.dtype else sw)
        zero = ops.cast(ops.equal(total, 0.0), losses.dtype)  # Keras's divide_no_nan: 0 for a zero total
        return ops.sum(losses) * (1.0 - zero) / (total + zero)
    if losses.size and losses.dtype.startswith("float"):
        return ops.mean(losses)  # one reduction, where sum / n is two ops (and three back)
    return ops.sum(losses) / float(max(losses.size, 1))


class Loss:
    """Base class: subclasses implement ``call(y_true, y_pred)`` -> per-sample losses."""

    def __init__(self, reduction="sum_over_batch_size", name=None):
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")
        self.reduction = reduction
        self.name = name or _snake(type(self).__name__)

    def call(self, y_true, y_pred):
        raise NotImplementedError

    def __call__(self, y_true, y_pred, sample_weight=None):
        per = self.call(y_true, y_pred)
        mask = getattr(y_pred, "_keras_mask", None)  # Keras weighs by the prediction's mask
        if mask is not None:
            sample_weight = apply_mask(sample_weight, mask, per.dtype, self.reduction)
        return reduce_losses(per, sample_weight, self.reduction)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}({self.get_config()})"


class LossFunctionWrapper(Loss):
    """A Loss from a function ``fn(y_true, y_pred, **kwargs)``."""

    def __init__(self, fn, reduction="sum_over_batch_size", name=None, **kwargs):
        super().__init__(reduction, name or getattr(fn, "__name__", "loss"))
        self.fn = fn
        self._fn_kwargs = kwargs

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred, **self._fn_kwargs)

    def get_config(self):
        return {**super().get_config(), **self._fn_kwargs}

    @classmethod
    def from_config(cls, config):
        if cls is LossFunctionWrapper:
            raise TypeError("LossFunctionWrapper.from_config needs a subclass with a fixed function")
        return cls(**config)


def _wrapper(fn, default_name, params=(), doc=""):
    """A LossFunctionWrapper subclass with keyword parameters ``params`` ((name, default), ...)."""

    def __init__(self, *args, reduction="sum_over_batch_size", name=default_name, **kwargs):
        names = [p for p, _ in params]
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__}() takes at most {len(names)} positional arguments")
        vals = dict(params)
        vals.update(zip(names, args))
        for k, v in kwargs.items():
            if k not in vals:
                raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {k!r}")
            vals[k] = v
        LossFunctionWrapper.__init__(self, fn, reduction=reduction, name=name, **vals)
        for k, v in vals.items():
            setattr(self, k, v)

    return {"__init__": __init__, "__doc__": doc or fn.__doc__}


MeanSquaredError = type("MeanSquaredError", (LossFunctionWrapper,), _wrapper(mean_squared_error, "mean_squared_error"))
MeanAbsoluteError = type("MeanAbsoluteError", (LossFunctionWrapper,), _wrapper(mean_absolute_error, "mean_absolute_error"))
MeanAbsolutePercentageError = type("MeanAbsolutePercentageError", (LossFunctionWrapper,),
                                   _wrapper(mean_absolute_percentage_error, "mean_absolute_percentage_error"))
MeanSquaredLogarithmicError = type("MeanSquaredLogarithmicError", (LossFunctionWrapper,),
                                   _wrapper(mean_squared_logarithmic_error, "mean_squared_logarithmic_error"))
Huber = type("Huber", (LossFunctionWrapper,), _wrapper(huber, "huber_loss", (("delta", 1.0),)))
LogCosh = type("LogCosh", (LossFunctionWrapper,), _wrapper(log_cosh, "log_cosh"))
BinaryCrossentropy = type("BinaryCrossentropy", (LossFunctionWrapper,), _wrapper(
    binary_crossentropy, "binary_crossentropy",
    (("from_logits", False), ("label_smoothing", 0.0), ("axis", -1))))
CategoricalCrossentropy = type("CategoricalCrossentropy", (LossFunctionWrapper,), _wrapper(
    categorical_crossentropy, "categorical_crossentropy",
    (("from_logits", False), ("label_smoothing", 0.0), ("axis", -1))))
_SparseCCE = type("SparseCategoricalCrossentropy", (LossFunctionWrapper,), _wrapper(
    sparse_categorical_crossentropy, "sparse_categorical_crossentropy",
    (("from_logits", False), ("ignore_class", None), ("axis", -1))))


class SparseCategoricalCrossentropy(_SparseCCE):
    """Crossentropy with integer class labels: ``SparseCategoricalCrossentropy(from_logits=False,
    ignore_class=None, axis=-1, reduction=..., name=...)``. Entries labelled ``ignore_class``
    count neither in the sum nor in the "sum_over_batch_size" mean, as in Keras 3."""

    def __call__(self, y_true, y_pred, sample_weight=None):
        if self.ignore_class is None or self.reduction not in ("sum_over_batch_size", "mean"):
            return super().__call__(y_true, y_pred, sample_weight)
        y_t = _as_tensor(y_true, _as_tensor(y_pred))
        per = self.call(y_t, y_pred)  # 0 at ignored entries
        valid = ops.cast(ops.not_equal(ops.reshape(y_t, per.shape), int(self.ignore_class)), per.dtype)
        mask = getattr(y_pred, "_keras_mask", None)
        if mask is not None:
            valid = valid * ops.cast(ops.reshape(mask, per.shape), per.dtype)
            per = per * valid
        if sample_weight is not None:
            per = _weighted(per, sample_weight)
        return ops.sum(per) / ops.maximum(ops.sum(valid), 1.0)
KLDivergence = type("KLDivergence", (LossFunctionWrapper,), _wrapper(kl_divergence, "kl_divergence"))
Poisson = type("Poisson", (LossFunctionWrapper,), _wrapper(poisson, "poisson"))
Hinge = type("Hinge", (LossFunctionWrapper,), _wrapper(hinge, "hinge"))
SquaredHinge = type("SquaredHinge", (LossFunctionWrapper,), _wrapper(squared_hinge, "squared_hinge"))
CategoricalHinge = type("CategoricalHinge", (LossFunctionWrapper,), _wrapper(categorical_hinge, "categorical_hinge"))
CosineSimilarity = type("CosineSimilarity", (LossFunctionWrapper,),
                        _wrapper(cosine_similarity, "cosine_similarity", (("axis", -1),)))
BinaryFocalCrossentropy = type("BinaryFocalCrossentropy", (LossFunctionWrapper,), _wrapper(
    binary_focal_crossentropy, "binary_focal_crossentropy",
    (("apply_class_balancing", False), ("alpha", 0.25), ("gamma", 2.0), ("from_logits", False),
     ("label_smoothing", 0.0), ("axis", -1))))
CategoricalFocalCrossentropy = type("CategoricalFocalCrossentropy", (LossFunctionWrapper,), _wrapper(
    categorical_focal_crossentropy, "categorical_focal_crossentropy",
    (("alpha", 0.25), ("gamma", 2.0), ("from_logits", False), ("label_smoothing", 0.0), ("axis", -1))))
Dice = type("Dice", (LossFunctionWrapper,), _wrapper(dice, "dice", (("axis", None),)))
CTC = type("CTC", (LossFunctionWrapper,), _wrapper(ctc, "ctc"))
Tversky = type("Tversky", (LossFunctionWrapper,), _wrapper(tversky, "tversky",
                                                           (("alpha", 0.5), ("beta", 0.5), ("axis", None))))

for _cls in (MeanSquaredError, MeanAbsoluteError, MeanAbsolutePercentageError, MeanSquaredLogarithmicError,
             Huber, LogCosh, BinaryCrossentropy, CategoricalCrossentropy, SparseCategoricalCrossentropy,
             KLDivergence, Poisson, Hinge, SquaredHinge, CategoricalHinge, CosineSimilarity,
             BinaryFocalCrossentropy, CategoricalFocalCrossentropy, Dice, Tversky, CTC):
    _cls.__module__ = __name__

# -------------------------------------------------------------------- get

# canonical name -> (class, kind for check_shapes)
_CANONICAL = {
    "mean_squared_error": (MeanSquaredError, "elementwise"),
    "mean_absolute_error": (MeanAbsoluteError, "elementwise"),
    "mean_absolute_percentage_error": (MeanAbsolutePercentageError, "elementwise"),
    "mean_squared_logarithmic_error": (MeanSquaredLogarithmicError, "elementwise"),
    "huber": (Huber, "elementwise"),
    "log_cosh": (LogCosh, "elementwise"),
    "binary_crossentropy": (BinaryCrossentropy, "elementwise"),
    "categorical_crossentropy": (CategoricalCrossentropy, "categorical"),
    "sparse_categorical_crossentropy": (SparseCategoricalCrossentropy, "sparse"),
    "kl_divergence": (KLDivergence, "categorical"),
    "poisson": (Poisson, "elementwise"),
    "hinge": (Hinge, "elementwise"),
    "squared_hinge": (SquaredHinge, "elementwise"),
    "categorical_hinge": (CategoricalHinge, "categorical"),
    "cosine_similarity": (CosineSimilarity, "elementwise"),
    "binary_focal_crossentropy": (BinaryFocalCrossentropy, "elementwise"),
    "categorical_focal_crossentropy": (CategoricalFocalCrossentropy, "categorical"),
    "dice": (Dice, "elementwise"),
    "tversky": (Tversky, "elementwise"),
    "ctc": (CTC, "ctc"),
}
_ALIASES = {
    "mse": "mean_squared_error", "mae": "mean_absolute_error",
    "mape": "mean_absolute_percentage_error", "msle": "mean_squared_logarithmic_error",
    "huber_loss": "huber", "logcosh": "log_cosh", "kld": "kl_divergence",
    "kullback_leibler_divergence": "kl_divergence", "kl_divergence": "kl_divergence",
    "cosine_proximity": "cosine_similarity",
}


def _key(name: str) -> str:
    return name.replace("_", "").lower()


def _snake(name: str) -> str:
    out = []
    for i, c in enumerate(name):
        if c.isupper() and i and (not name[i - 1].isupper() or (i + 1 < len(name) and name[i + 1].islower())):
            out.append("_")
        out.append(c.lower())
    return "".join(out)


# Any case / underscore spelling: "mean_squared_error", "meanSquaredError",
# "MeanSquaredError", "MSE", "KLDivergence" ...
_LOOKUP = {}
for _n, (_c, _k) in _CANONICAL.items():
    _LOOKUP[_key(_n)] = _n
    _LOOKUP[_key(_c.__name__)] = _n
for _a, _n in _ALIASES.items():
    _LOOKUP[_key(_a)] = _n

_FUNCTIONS = {
    "mean_squared_error": mean_squared_error, "mean_absolute_error": mean_absolute_error,
    "mean_absolute_percentage_error": mean_absolute_percentage_error,
    "mean_squared_logarithmic_error": mean_squared_logarithmic_error, "huber": huber,
    "log_cosh": log_cosh, "binary_crossentropy": binary_crossentropy,
    "categorical_crossentropy": categorical_crossentropy,
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy, "kl_divergence": kl_divergence,
    "poisson": poisson, "hinge": hinge, "squared_hinge": squared_hinge,
    "categorical_hinge": categorical_hinge, "cosine_similarity": cosine_similarity,
    "binary_focal_crossentropy": binary_focal_crossentropy,
    "categorical_focal_crossentropy": categorical_focal_crossentropy, "dice": dice, "tversky": tversky,
    "ctc": ctc,
}


def canonical_name(identifier):
    """The canonical snake-case name of a loss name, Loss or loss function; None if unknown."""
    if isinstance(identifier, str):
        return _LOOKUP.get(_key(identifier))
    if isinstance(identifier, LossFunctionWrapper):
        for n, f in _FUNCTIONS.items():
            if identifier.fn is f:
                return n
        return None
    for n, f in _FUNCTIONS.items():
        if identifier is f:
            return n
    return None


def valid_names() -> list:
    return sorted(set(_CANONICAL) | set(_ALIASES))


def _unknown(name):
    return ValueError(
        f"unknown loss {name!r}; valid names: {', '.join(valid_names())} (the TF.js camelCase "
        f"spellings, such as 'meanSquaredError', and the class names are accepted too)")


def get(identifier):
    """A Loss from a name (Keras or TF.js spelling), a config dict, a Loss, or a callable.

    Names give a Loss instance (``get("mse")`` -> ``MeanSquaredError()``);
    a Loss instance or a plain callable ``fn(y_true, y_pred)`` is returned
    as is. Unknown names raise ValueError listing the valid ones.
    """
    if identifier is None:
        return None
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, dict):
        name = identifier.get("class_name")
        cfg = dict(identifier.get("config") or {})
        canon = _LOOKUP.get(_key(str(name)))
        if canon is None:
            raise _unknown(name)
        return _CANONICAL[canon][0](**cfg)
    if isinstance(identifier, str):
        canon = _LOOKUP.get(_key(identifier))
        if canon is None:
            raise _unknown(identifier)
        return _CANONICAL[canon][0]()
    if callable(identifier):
        return identifier
    raise TypeError(f"a loss must be a name, a Loss or a callable, got {type(identifier).__name__}")


def serialize(loss) -> dict:
    return {"class_name": type(loss).__name__, "config": loss.get_config()}


deserialize = get

# ------------------------------------------------------------ shape checks


def _dims_fit(a, b):
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def check_shapes(y_true_shape, y_pred_shape, loss_name):
    """Raise ValueError naming both shapes when targets of ``y_true_shape`` cannot
    feed ``loss_name`` for an output of ``y_pred_shape`` (None = any size).

    ``loss_name`` may be a name, a Loss or a loss function; unknown (custom)
    losses are not checked.
    """
    canon = canonical_name(loss_name)
    if canon is None:
        return
    kind = _CANONICAL[canon][1]
    t = tuple(None if d is None else int(d) for d in y_true_shape)
    p = tuple(None if d is None else int(d) for d in y_pred_shape)
    hint = ""
    if kind == "ctc":  # (batch, max_label_length) labels for (batch, time, classes) logits
        ok = len(t) == 2 and len(p) == 3
        expected = "(batch, max_label_length)"
    elif kind == "sparse":
        ok = _dims_fit(t, p[:-1]) or _dims_fit(t, p[:-1] + (1,))
        if not ok and len(t) == len(p) and t[-1:] == p[-1:] and (p[-1] or 0) > 1:
            hint = "; one-hot targets need categorical_crossentropy"
        expected = f"{p[:-1]} or {p[:-1] + (1,)}"
    elif kind == "categorical":
        ok = _dims_fit(t, p)
        if not ok and len(t) == len(p) and t[-1:] == (1,) and (p[-1] or 0) > 1:
            hint = "; integer class labels need sparse_categorical_crossentropy"
        elif not ok and len(t) == len(p) - 1:
            hint = "; integer class labels need sparse_categorical_crossentropy"
        expected = str(p)
    else:
        tt, pp = t, p
        if len(t) == len(p) + 1 and t[-1] == 1:
            tt = t[:-1]
        elif len(p) == len(t) + 1 and p[-1] == 1:
            pp = p[:-1]
        ok = _dims_fit(tt, pp)
        expected = str(p) if len(p) == 0 or p[-1] != 1 else f"{p} or {p[:-1]}"
    if not ok:
        raise ValueError(
            f"loss {canon!r}: targets of shape {t} do not fit the model output of shape {p} "
            f"(expected targets of shape {expected}){hint}")
