"""Differentiable ops: forward through the active backend, backward rules by name.

Every function takes Tensors (or anything ``deepgpu.tensor`` accepts) and
returns a Tensor on the same backend as its tensor inputs. Names follow
TF.js in Python's case, with Keras-ops arguments. Mixing tensors of two
backends raises ValueError.
"""
from __future__ import annotations

import builtins
import numbers

from . import backends as _backends
from .autograd import Node, is_grad_enabled, register_gradient
from .autograd import _state as _grad_state
from .backends.base import _pair, conv_output_size
from .tensor import Tensor, tensor

# ------------------------------------------------------------------ helpers


def _backend_of(*xs):
    b = None
    for x in xs:
        if isinstance(x, Tensor):
            if b is None:
                b = x._backend
            elif x._backend is not b:
                raise ValueError(
                    f"cannot mix tensors on the {b.name!r} and {x.backend!r} backends in one op; "
                    f"move one with .to({b.name!r})")
    return b or _backends.current()


def _t(x, B, dtype=None) -> Tensor:
    if isinstance(x, Tensor):
        return x
    return Tensor(B.asarray(x, dtype), B)


def _make(op, data, inputs, B, saved=None, **attrs) -> Tensor:
    for i in inputs:  # a loop, not any(generator): every op of a step passes here
        if i.requires_grad:
            if _grad_state.enabled:  # is_grad_enabled() without the call
                return Tensor(data, B, True, Node(op, inputs, saved, attrs, B))
            break
    return Tensor(data, B)


def broadcast_shapes(a, b, op="op"):
    """The broadcast of two shapes; ValueError naming both when they do not fit."""
    out = []
    for i in range(1, builtins.max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x != y and x != 1 and y != 1:
            raise ValueError(f"{op}: shapes {tuple(a)} and {tuple(b)} cannot be broadcast together")
        out.append(x if y == 1 else y)
    return tuple(reversed(out))


def _is_float(dtype: str) -> bool:
    return dtype.startswith(("float", "bfloat"))  # bfloat16: ml_dtypes' (mixed precision)


def _binary_operands(a, b, op):
    """Two Tensors on one backend, with int/float mixes promoted to the float dtype."""
    if type(b) is float and isinstance(a, Tensor) and _is_float(a.dtype):
        # tensor * 0.5, total / count, ...: what the general path below would make, with fewer steps
        return a, Tensor(a._backend._scalar(b, a.dtype), a._backend), a._backend
    B = _backend_of(a, b)
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        a = _t(a, B)
    if isinstance(a, Tensor) and not isinstance(b, Tensor):
        b = _scalar_or_tensor(b, a, B)
    elif isinstance(b, Tensor) and not isinstance(a, Tensor):
        a = _scalar_or_tensor(a, b, B)
    a, b = _promote(a, b)
    broadcast_shapes(a.shape, b.shape, op)
    return a, b, B


def _promote(a, b):
    """Cast two tensors to one dtype: int with float gives the float (never float64 by surprise)."""
    if a.data.dtype is b.data.dtype or a.dtype == b.dtype:  # the first: same dtype object, no name lookups
        return a, b
    fa, fb = _is_float(a.dtype), _is_float(b.dtype)
    if fa and not fb:
        return a, cast(b, a.dtype)
    if fb and not fa:
        return cast(a, b.dtype), b
    if fa and fb:
        wide = "float64" if "float64" in (a.dtype, b.dtype) else "float32"
        return cast(a, wide), cast(b, wide)
    return cast(a, "int32"), cast(b, "int32")


def _scalar_or_tensor(v, like, B):
    if isinstance(v, bool) or not isinstance(v, numbers.Number):
        return _t(v, B, like.dtype if not isinstance(v, bool) and _is_float(like.dtype) else None)
    dtype = like.dtype if (_is_float(like.dtype) or isinstance(v, numbers.Integral)) else "float32"
    return Tensor(B._scalar(v, dtype), B)  # shared 0-d arrays: no fill launch per op


def _axes(axis, ndim):
    if axis is None:
        return None
    if isinstance(axis, int):
        axis = (axis,)
    out = []
    for a in axis:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for a tensor of rank {ndim}")
        out.append(a % ndim)
    return tuple(out)


# ---------------------------------------------------------- binary elementwise


def add(a, b) -> Tensor:
    a, b, B = _binary_operands(a, b, "add")
    return _make("add", B.add(a.data, b.data), (a, b), B)


@register_gradient("add")
def _add_grad(node, dy):
    return dy, dy


def subtract(a, b) -> Tensor:
    a, b, B = _binary_operands(a, b, "subtract")
    return _make("subtract", B.subtract(a.data, b.data), (a, b), B)


@register_gradient("subtract")
def _sub_grad(node, dy):
    return dy, node.B.negative(dy)


def multiply(a, b) -> Tensor:
    a, b, B = _binary_operands(a, b, "multiply")
    return _make("multiply", B.multiply(a.data, b.data), (a, b), B)


@register_gradient("multiply")
def _mul_grad(node, dy):
    a, b = node.inputs
    B = node.B
    return (B.multiply(dy, b.data) if a.requires_grad else None,
            B.multiply(dy, a.data) if b.requires_grad else None)


def divide(a, b) -> Tensor:
    a, b, B = _binary_operands(a, b, "divide")
    if not _is_float(a.dtype):
        a, b = cast(a, "float32"), cast(b, "float32")
    return _make("divide", B.divide(a.data, b.data), (a, b), B)


@register_gradient("divide")
def _div_grad(node, dy):
    a, b = node.inputs
    B = node.B
    ga = B.divide(dy, b.data) if a.requires_grad else None
    gb = None
    if b.requires_grad:
        gb = B.negative(B.divide(B.multiply(dy, a.data), B.square(b.data)))
    return ga, gb


def floor_divide(a, b) -> Tensor:
    a, b, B = _binary_operands(a, b, "floor_divide")
    return Tensor(B.floor_divide(a.data, b.data), B)


def mod(a, b) -> Tensor:
    a, b, B = _binary_operands(a, b, "mod")
    return Tensor(B.mod(a.data, b.data), B)


def pow(a, b) -> Tensor:
    a, b, B = _binary_operands(a, b, "pow")
    y = B.power(a.data, b.data)
    return _make("pow", y, (a, b), B, saved=y)


@register_gradient("pow")
def _pow_grad(node, dy):
    a, b = node.inputs
    B = node.B
    y = node.saved
    ga = gb = None
    if a.requires_grad:
        ga = B.multiply(dy, B.multiply(b.data, B.power(a.data, B.subtract(b.data, 1))))
    if b.requires_grad:
        safe = B.where(a.data > 0, a.data, 1)
        gb = B.multiply(dy, B.multiply(y, B.log(safe)))
    return ga, gb


def maximum(a, b) -> Tensor:
    a, b, B = _binary_operands(a, b, "maximum")
    return _make("maximum", B.maximum(a.data, b.data), (a, b), B)


@register_gradient("maximum")
def _maximum_grad(node, dy):
    a, b = node.inputs
    B = node.B
    mask = a.data >= b.data
    return B.where(mask, dy, 0), B.where(mask, 0, dy)


def minimum(a, b) -> Tensor:
    a, b, B = _binary_operands(a, b, "minimum")
    return _make("minimum", B.minimum(a.data, b.data), (a, b), B)


@register_gradient("minimum")
def _minimum_grad(node, dy):
    a, b = node.inputs
    B = node.B
    mask = a.data <= b.data
    return B.where(mask, dy, 0), B.where(mask, 0, dy)


def _compare(op, a, b):
    a, b, B = _binary_operands(a, b, f"compare {op}")
    return Tensor(B.compare(op, a.data, b.data), B)


def equal(a, b): return _compare("==", a, b)
def not_equal(a, b): return _compare("!=", a, b)
def less(a, b): return _compare("<", a, b)
def less_equal(a, b): return _compare("<=", a, b)
def greater(a, b): return _compare(">", a, b)
def greater_equal(a, b): return _compare(">=", a, b)


def logical_and(a, b):
    B = _backend_of(a, b)
    return Tensor(B.logical("and", _t(a, B, "bool").data, _t(b, B, "bool").data), B)


def logical_or(a, b):
    B = _backend_of(a, b)
    return Tensor(B.logical("or", _t(a, B, "bool").data, _t(b, B, "bool").data), B)


def logical_not(a):
    B = _backend_of(a)
    return Tensor(B.logical("not", _t(a, B, "bool").data), B)


def where(condition, a, b) -> Tensor:
    """Elementwise ``a`` where ``condition`` is true, else ``b`` (all broadcast)."""
    B = _backend_of(condition, a, b)
    c = _t(condition, B, "bool")
    a, b, B = _binary_operands(a, b, "where")
    broadcast_shapes(c.shape, broadcast_shapes(a.shape, b.shape, "where"), "where")
    return _make("where", B.where(c.data, a.data, b.data), (a, b), B, saved=c.data)


@register_gradient("where")
def _where_grad(node, dy):
    B = node.B
    c = node.saved
    return B.where(c, dy, 0), B.where(c, 0, dy)


# ----------------------------------------------------------- unary elementwise


def _unary(op, fn_name, x, saved_out=False, saved_in=False, **attrs):
    B = _backend_of(x)
    x = _t(x, B)
    if not _is_float(x.dtype) and op not in ("negative", "abs", "square", "sign"):
        x = cast(x, "float32")
    y = getattr(B, fn_name)(x.data, **attrs)
    saved = y if saved_out else None
    return _make(op, y, (x,), B, saved=saved, **attrs)


def negative(x): return _unary("negative", "negative", x)
def exp(x): return _unary("exp", "exp", x, saved_out=True)
def log(x): return _unary("log", "log", x)
def log1p(x): return _unary("log1p", "log1p", x)
def sqrt(x): return _unary("sqrt", "sqrt", x, saved_out=True)
def abs(x): return _unary("abs", "abs", x)
def square(x): return _unary("square", "square", x)
def relu(x): return _unary("relu", "relu", x)
def sigmoid(x): return _unary("sigmoid", "sigmoid", x, saved_out=True)
def tanh(x): return _unary("tanh", "tanh", x, saved_out=True)
def sin(x): return _unary("sin", "sin", x)
def cos(x): return _unary("cos", "cos", x)
def softplus(x): return _unary("softplus", "softplus", x)


def sign(x):
    B = _backend_of(x)
    return Tensor(B.sign(_t(x, B).data), B)


def floor(x):
    B = _backend_of(x)
    return Tensor(B.floor(_t(x, B).data), B)


def round(x):
    B = _backend_of(x)
    return Tensor(B.round(_t(x, B).data), B)


def elu(x, alpha=1.0): return _unary("elu", "elu", x, saved_out=True, alpha=float(alpha))
def leaky_relu(x, alpha=0.2): return _unary("leaky_relu", "leaky_relu", x, alpha=float(alpha))


def rsqrt(x):
    return 1.0 / sqrt(x)


def reciprocal(x):
    return 1.0 / x


@register_gradient("negative")
def _neg_grad(node, dy): return (node.B.negative(dy),)


@register_gradient("exp")
def _exp_grad(node, dy): return (node.B.multiply(dy, node.saved),)


@register_gradient("log")
def _log_grad(node, dy): return (node.B.divide(dy, node.inputs[0].data),)


@register_gradient("log1p")
def _log1p_grad(node, dy): return (node.B.divide(dy, node.B.add(node.inputs[0].data, 1)),)


@register_gradient("sqrt")
def _sqrt_grad(node, dy): return (node.B.divide(dy, node.B.multiply(node.saved, 2)),)


@register_gradient("abs")
def _abs_grad(node, dy): return (node.B.multiply(dy, node.B.sign(node.inputs[0].data)),)


@register_gradient("square")
def _square_grad(node, dy): return (node.B.multiply(dy, node.B.multiply(node.inputs[0].data, 2)),)


@register_gradient("relu")
def _relu_grad(node, dy): return (node.B.relu_grad(dy, node.inputs[0].data),)


@register_gradient("sigmoid")
def _sigmoid_grad(node, dy):
    B, y = node.B, node.saved
    return (B.multiply(dy, B.multiply(y, B.subtract(1, y))),)


@register_gradient("sin")
def _sin_grad(node, dy): return (node.B.multiply(dy, node.B.cos(node.inputs[0].data)),)


@register_gradient("cos")
def _cos_grad(node, dy): return (node.B.negative(node.B.multiply(dy, node.B.sin(node.inputs[0].data))),)


@register_gradient("tanh")
def _tanh_grad(node, dy):
    B, y = node.B, node.saved
    return (B.multiply(dy, B.subtract(1, B.square(y))),)


@register_gradient("softplus")
def _softplus_grad(node, dy):
    return (node.B.multiply(dy, node.B.sigmoid(node.inputs[0].data)),)


@register_gradient("elu")
def _elu_grad(node, dy):
    B, x, y = node.B, node.inputs[0].data, node.saved
    return (B.where(x > 0, dy, B.multiply(dy, B.add(y, node.attrs["alpha"]))),)


@register_gradient("leaky_relu")
def _leaky_relu_grad(node, dy):
    B, x = node.B, node.inputs[0].data
    return (B.where(x > 0, dy, B.multiply(dy, node.attrs["alpha"])),)


def clip(x, lo, hi) -> Tensor:
    """Values limited to [lo, hi] (TF.js ``clipByValue``); gradient passes inside the range."""
    B = _backend_of(x)
    x = _t(x, B)
    if lo > hi:
        raise ValueError(f"clip: lo ({lo}) must not exceed hi ({hi})")
    if not _is_float(x.dtype) and not (float(lo).is_integer() and float(hi).is_integer()):
        x = cast(x, "float32")  # else NumPy would make int data with float bounds float64
    return _make("clip", B.clip(x.data, lo, hi), (x,), B, lo=lo, hi=hi)


clip_by_value = clip


@register_gradient("clip")
def _clip_grad(node, dy):
    x = node.inputs[0].data
    inside = (x >= node.attrs["lo"]) & (x <= node.attrs["hi"])
    return (node.B.where(inside, dy, 0),)


def cast(x, dtype) -> Tensor:
    """``x`` as ``dtype``; gradients flow between float dtypes only."""
    B = _backend_of(x)
    x = _t(x, B)
    y = B.cast(x.data, dtype)
    if y is x.data:
        return x
    if not (_is_float(x.dtype) and _is_float(y.dtype.name)):
        return Tensor(y, B)
    return _make("cast", y, (x,), B)


@register_gradient("cast")
def _cast_grad(node, dy):
    return (node.B.cast(dy, node.inputs[0].dtype),)


# ------------------------------------------------------------------- softmax


def softmax(x, axis=-1) -> Tensor:
    B = _backend_of(x)
    x = _t(x, B)
    last = _axes(axis, x.ndim) == (x.ndim - 1,)
    if not _is_float(x.dtype):
        x = cast(x, "float32")
    y = B.softmax(x.data, axis)
    out = _make("softmax", y, (x,), B, saved=y, axis=axis)
    if last:
        out._logits = x
    return out


@register_gradient("softmax")
def _softmax_grad(node, dy):
    B, y, ax = node.B, node.saved, node.attrs["axis"]
    s = B.sum(B.multiply(dy, y), axis=ax, keepdims=True)
    return (B.multiply(y, B.subtract(dy, s)),)


def log_softmax(x, axis=-1) -> Tensor:
    B = _backend_of(x)
    x = _t(x, B)
    _axes(axis, x.ndim)
    if not _is_float(x.dtype):
        x = cast(x, "float32")
    y = B.log_softmax(x.data, axis)
    return _make("log_softmax", y, (x,), B, saved=y, axis=axis)


@register_gradient("log_softmax")
def _log_softmax_grad(node, dy):
    B, y, ax = node.B, node.saved, node.attrs["axis"]
    return (B.subtract(dy, B.multiply(B.exp(y), B.sum(dy, axis=ax, keepdims=True))),)


def softmax_cross_entropy(labels, logits, axis=-1) -> Tensor:
    """Per-example ``-sum(labels * log_softmax(logits))`` along ``axis``, fused and stable.

    labels: probabilities of the logits' shape, each row along ``axis`` summing
    to 1 (the gradient used is ``softmax - labels``, as TensorFlow's, which is
    the loss's derivative only for such rows). Returns the shape without ``axis``.
    """
    B = _backend_of(labels, logits)
    logits = _t(logits, B)
    labels = _t(labels, B, logits.dtype)
    if labels.shape != logits.shape:
        raise ValueError(
            f"softmax_cross_entropy: labels of shape {labels.shape} do not match "
            f"logits of shape {logits.shape}")
    loss, p = B.softmax_cross_entropy(logits.data, labels.data, axis)
    return _make("softmax_cross_entropy", loss, (labels, logits), B, saved=p, axis=axis)


@register_gradient("softmax_cross_entropy")
def _sxe_grad(node, dy):
    B, p, ax = node.B, node.saved, node.attrs["axis"]
    g_logits = B.softmax_cross_entropy_grad(p, node.inputs[0].data, dy, ax)
    g_labels = None
    if node.inputs[0].requires_grad:
        d = B.reshape(dy, _keep_shape(p.shape, ax))
        g_labels = B.negative(B.multiply(B.log_softmax(node.inputs[1].data, ax), d))
    return g_labels, g_logits


def sparse_softmax_cross_entropy(labels, logits) -> Tensor:
    """Per-example ``-log_softmax(logits)[label]`` over the last axis, fused and stable.

    labels: integer class indices of shape ``logits.shape[:-1]``; an index
    outside [0, classes) marks a row to ignore: its loss and its gradient are
    0. The labels get no gradient. Raises ValueError when the shapes do not fit, TypeError for
    labels that are not integers.
    """
    B = _backend_of(labels, logits)
    logits = _t(logits, B)
    labels = _t(labels, B)
    if not labels.dtype.startswith(("int", "uint")):
        raise TypeError(f"sparse_softmax_cross_entropy: labels must be integer class indices, got {labels.dtype}")
    if logits.ndim < 1 or labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"sparse_softmax_cross_entropy: labels of shape {labels.shape} do not fit logits of "
            f"shape {logits.shape} (expected {logits.shape[:-1]})")
    loss, p = B.sparse_softmax_cross_entropy(logits.data, labels.data)
    return _make("sparse_softmax_cross_entropy", loss, (labels, logits), B, saved=p)


@register_gradient("sparse_softmax_cross_entropy")
def _sparse_sxe_grad(node, dy):
    return None, node.B.sparse_softmax_cross_entropy_grad(node.saved, node.inputs[0].data, dy)


def _keep_shape(shape, axis):
    s = list(shape)
    s[axis % len(s)] = 1
    return tuple(s)


# ---------------------------------------------------------------- reductions


def _reduce(op, x, axis, keepdims):
    B = _backend_of(x)
    x = _t(x, B)
    ax = _axes(axis, x.ndim)
    y = getattr(B, op)(x.data, axis=ax, keepdims=keepdims)
    return x, ax, y, B


def sum(x, axis=None, keepdims=False) -> Tensor:
    x, ax, y, B = _reduce("sum", x, axis, keepdims)
    return _make("sum", y, (x,), B, axis=ax, keepdims=keepdims)


def mean(x, axis=None, keepdims=False) -> Tensor:
    B = _backend_of(x)
    x = _t(x, B)
    if not _is_float(x.dtype):
        x = cast(x, "float32")
    x, ax, y, B = _reduce("mean", x, axis, keepdims)
    return _make("mean", y, (x,), B, axis=ax, keepdims=keepdims)


def _expand_back(B, g, x_shape, ax, keepdims):
    if ax is None:
        return B.broadcast_to(B.reshape(g, (1,) * len(x_shape)), x_shape)
    if not keepdims:
        shape = list(x_shape)
        for a in ax:
            shape[a] = 1
        g = B.reshape(g, tuple(shape))
    return B.broadcast_to(g, x_shape)


@register_gradient("sum")
def _sum_grad(node, dy):
    x = node.inputs[0]
    return (_expand_back(node.B, dy, x.shape, node.attrs["axis"], node.attrs["keepdims"]),)


@register_gradient("mean")
def _mean_grad(node, dy):
    x = node.inputs[0]
    ax = node.attrs["axis"]
    n = x.size if ax is None else _prod(x.shape[a] for a in ax)
    g = _expand_back(node.B, dy, x.shape, ax, node.attrs["keepdims"])
    return (node.B.divide(g, x.data.dtype.type(n)) if n else g,)


def _prod(it):
    p = 1
    for v in it:
        p *= v
    return p


def max(x, axis=None, keepdims=False) -> Tensor:
    x, ax, y, B = _reduce("max", x, axis, keepdims)
    return _make("max", y, (x,), B, saved=y, axis=ax, keepdims=keepdims)


def min(x, axis=None, keepdims=False) -> Tensor:
    x, ax, y, B = _reduce("min", x, axis, keepdims)
    return _make("min", y, (x,), B, saved=y, axis=ax, keepdims=keepdims)


@register_gradient("max")
@register_gradient("min")
def _max_grad(node, dy):
    # Ties share the gradient equally, as TF does for reduce_max.
    B, x = node.B, node.inputs[0]
    ax, kd = node.attrs["axis"], node.attrs["keepdims"]
    y = _expand_back(B, node.saved, x.shape, ax, kd)
    hit = B.cast(B.compare("==", x.data, y), x.dtype)
    count = B.sum(hit, axis=ax, keepdims=True)
    g = _expand_back(B, dy, x.shape, ax, kd)
    return (B.divide(B.multiply(g, hit), count),)


def argmax(x, axis=None) -> Tensor:
    B = _backend_of(x)
    x = _t(x, B)
    ax = None if axis is None else _axes(axis, x.ndim)[0]
    return Tensor(B.argmax(x.data, ax), B)


def argmax_hits(x, labels) -> Tensor:
    """float32 of ``labels``' shape: 1.0 where ``argmax(x, axis=-1) == labels``, else 0.0.

    x [..., C] with C >= 1; labels integer, shape ``x.shape[:-1]``. One fused op
    (accuracy metrics use it); no gradient. Raises ValueError when the shapes do not fit.
    """
    B = _backend_of(x, labels)
    x, labels = _t(x, B), _t(labels, B)
    if x.ndim < 1 or x.shape[-1] < 1 or labels.shape != x.shape[:-1]:
        raise ValueError(f"argmax_hits: labels of shape {labels.shape} do not fit scores of shape {x.shape} "
                         f"(expected {x.shape[:-1]}, with at least one class)")
    return Tensor(B.argmax_hits(x.data, labels.data), B)


def argmin(x, axis=None) -> Tensor:
    B = _backend_of(x)
    x = _t(x, B)
    ax = None if axis is None else _axes(axis, x.ndim)[0]
    return Tensor(B.argmin(x.data, ax), B)


def prod(x, axis=None, keepdims=False) -> Tensor:
    B = _backend_of(x)
    x = _t(x, B)
    return Tensor(B.prod(x.data, axis=_axes(axis, x.ndim), keepdims=keepdims), B)


def any(x, axis=None, keepdims=False) -> Tensor:
    B = _backend_of(x)
    x = _t(x, B)
    return Tensor(B.any(x.data, axis=_axes(axis, x.ndim), keepdims=keepdims), B)


def all(x, axis=None, keepdims=False) -> Tensor:
    B = _backend_of(x)
    x = _t(x, B)
    return Tensor(B.all(x.data, axis=_axes(axis, x.ndim), keepdims=keepdims), B)


def variance(x, axis=None, keepdims=False) -> Tensor:
    m = mean(x, axis, keepdims=True)
    return mean(square(x - m), axis, keepdims)


def std(x, axis=None, keepdims=False) -> Tensor:
    return sqrt(variance(x, axis, keepdims))


def logsumexp(x, axis=None, keepdims=False) -> Tensor:
    B = _backend_of(x)
    x = _t(x, B)
    m = Tensor(B.max(x.data, axis=_axes(axis, x.ndim), keepdims=True), B)
    out = log(sum(exp(x - m), axis, keepdims=True)) + m
    return out if keepdims else squeeze(out, axis) if axis is not None else reshape(out, ())


# --------------------------------------------------------------------- shape


def reshape(x, shape) -> Tensor:
    """``x`` with a new shape of the same size; one dimension may be -1."""
    B = _backend_of(x)
    x = _t(x, B)
    shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
    known = _prod(s for s in shape if s != -1)
    if shape.count(-1) > 1 or (-1 in shape and (known == 0 or x.size % known)) or (
            -1 not in shape and known != x.size):
        raise ValueError(f"cannot reshape a tensor of shape {x.shape} ({x.size} elements) into {shape}")
    return _make("reshape", B.reshape(x.data, shape), (x,), B)


@register_gradient("reshape")
def _reshape_grad(node, dy):
    return (node.B.reshape(dy, node.inputs[0].shape),)


def transpose(x, perm=None) -> Tensor:
    B = _backend_of(x)
    x = _t(x, B)
    if perm is not None:
        perm = tuple(int(p) % x.ndim if x.ndim else 0 for p in perm)
        if sorted(perm) != list(range(x.ndim)):
            raise ValueError(f"transpose: perm {perm} is not a permutation of the {x.ndim} axes of shape {x.shape}")
    return _make("transpose", B.transpose(x.data, perm), (x,), B, perm=perm)


@register_gradient("transpose")
def _transpose_grad(node, dy):
    perm = node.attrs["perm"]
    inv = None if perm is None else tuple(sorted(range(len(perm)), key=perm.__getitem__))
    return (node.B.transpose(dy, inv),)


def expand_dims(x, axis) -> Tensor:
    B = _backend_of(x)
    x = _t(x, B)
    nd = x.ndim + 1
    if not -nd <= axis < nd:
        raise ValueError(f"expand_dims: axis {axis} is out of range for rank {x.ndim}")
    axis %= nd
    return reshape(x, x.shape[:axis] + (1,) + x.shape[axis:])


def squeeze(x, axis=None) -> Tensor:
    B = _backend_of(x)
    x = _t(x, B)
    ax = _axes(axis, x.ndim) if axis is not None else tuple(i for i, s in enumerate(x.shape) if s == 1)
    for a in ax:
        if x.shape[a] != 1:
            raise ValueError(f"squeeze: axis {a} of shape {x.shape} has size {x.shape[a]}, not 1")
    return reshape(x, tuple(s for i, s in enumerate(x.shape) if i not in ax))


def broadcast_to(x, shape) -> Tensor:
    B = _backend_of(x)
    x = _t(x, B)
    shape = tuple(shape)
    if broadcast_shapes(x.shape, shape, "broadcast_to") != shape:
        raise ValueError(f"broadcast_to: shape {x.shape} cannot be broadcast to {shape}")
    return _make("broadcast_to", B.broadcast_to(x.data, shape), (x,), B)


@register_gradient("broadcast_to")
def _broadcast_grad(node, dy):
    return (node.B.sum_to_shape(dy, node.inputs[0].shape),)


def tile(x, reps) -> Tensor:
    """Repeat the whole tensor ``reps[i]`` times along axis i (via concat)."""
    B = _backend_of(x)
    x = _t(x, B)
    for ax, r in enumerate(reps):
        if r != 1:
            x = concat([x] * r, axis=ax)
    return x


def repeat(x, repeats: int, axis: int) -> Tensor:
    """Each element repeated ``repeats`` times along ``axis`` (as UpSampling does)."""
    B = _backend_of(x)
    x = _t(x, B)
    ax = _axes(axis, x.ndim)[0]
    shape = x.shape
    y = expand_dims(x, ax + 1)
    y = broadcast_to(y, shape[:ax + 1] + (repeats,) + shape[ax + 1:])
    return reshape(y, shape[:ax] + (shape[ax] * repeats,) + shape[ax + 1:])


def concat(xs, axis=-1) -> Tensor:
    """Join tensors along ``axis``; the other sizes must agree."""
    if not xs:
        raise ValueError("concat needs at least one tensor")
    B = _backend_of(*xs)
    xs = [_t(x, B) for x in xs]
    nd = xs[0].ndim
    ax = _axes(axis, nd)[0]
    for x in xs[1:]:
        if x.ndim != nd or x.shape[:ax] + x.shape[ax + 1:] != xs[0].shape[:ax] + xs[0].shape[ax + 1:]:
            raise ValueError(
                f"concat along axis {axis}: shapes {[x.shape for x in xs]} differ off that axis")
    if builtins.any(x.dtype != xs[0].dtype for x in xs):
        like = xs[0]
        for x in xs[1:]:
            like = _promote(like, x)[0]  # the common dtype: int with float gives the float
        xs = [cast(x, like.dtype) for x in xs]
    y = B.concat([x.data for x in xs], ax)
    return _make("concat", y, tuple(xs), B, axis=ax)


concatenate = concat


@register_gradient("concat")
def _concat_grad(node, dy):
    ax = node.attrs["axis"]
    out, start = [], 0
    for x in node.inputs:
        n = x.shape[ax]
        idx = (builtins.slice(None),) * ax + (builtins.slice(start, start + n),)
        out.append(dy[idx])
        start += n
    return tuple(out)


def stack(xs, axis=0) -> Tensor:
    """Join same-shaped tensors along a new ``axis``."""
    if not xs:
        raise ValueError("stack needs at least one tensor")
    B = _backend_of(*xs)
    xs = [_t(x, B) for x in xs]
    if builtins.any(x.shape != xs[0].shape for x in xs):
        raise ValueError(f"stack: shapes {[x.shape for x in xs]} differ")
    nd = xs[0].ndim + 1
    ax = _axes(axis, nd)[0]
    return concat([reshape(x, x.shape[:ax] + (1,) + x.shape[ax:]) for x in xs], axis=ax)


def unstack(x, axis=0) -> list:
    B = _backend_of(x)
    x = _t(x, B)
    ax = _axes(axis, x.ndim)[0]
    return [squeeze(getitem(x, (builtins.slice(None),) * ax + (builtins.slice(i, i + 1),)), ax) for i in range(x.shape[ax])]


def split(x, num_or_sizes, axis=0) -> list:
    B = _backend_of(x)
    x = _t(x, B)
    ax = _axes(axis, x.ndim)[0]
    n = x.shape[ax]
    if isinstance(num_or_sizes, int):
        if n % num_or_sizes:
            raise ValueError(f"split: axis {axis} of size {n} does not divide into {num_or_sizes} parts")
        sizes = [n // num_or_sizes] * num_or_sizes
    else:
        sizes = list(num_or_sizes)
        if builtins.sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} do not add up to {n}")
    out, start = [], 0
    for s in sizes:
        out.append(getitem(x, (builtins.slice(None),) * ax + (builtins.slice(start, start + s),)))
        start += s
    return out


def _index_key(key, B):
    if isinstance(key, tuple):
        return tuple(_index_key(k, B) for k in key)
    if isinstance(key, Tensor):
        if key._backend is not B:
            raise ValueError(f"index tensor is on {key.backend!r}, the tensor on {B.name!r}")
        return key.data
    if isinstance(key, list):
        return B.asarray(key)
    return key


def getitem(x, key) -> Tensor:
    """NumPy-style indexing and slicing (ints, slices, None, Ellipsis, int/bool tensors)."""
    B = _backend_of(x)
    x = _t(x, B)
    k = _index_key(key, B)
    try:
        y = B.getitem(x.data, k)
    except IndexError as e:
        raise IndexError(f"index {key!r} is out of range for shape {x.shape}: {e}") from None
    return _make("getitem", y, (x,), B, key=k)


@register_gradient("getitem")
def _getitem_grad(node, dy):
    return (node.B.getitem_grad(dy, node.inputs[0].shape, node.attrs["key"]),)


def slice(x, begin, size=None) -> Tensor:
    """TF.js ``slice``: ``size[i]`` elements from ``begin[i]`` (-1 means to the end)."""
    B = _backend_of(x)
    x = _t(x, B)
    begin = [begin] if isinstance(begin, int) else list(begin)
    size = [-1] * len(begin) if size is None else ([size] if isinstance(size, int) else list(size))
    if len(begin) > x.ndim or len(size) != len(begin):
        raise ValueError(f"slice: begin {begin} / size {size} do not fit shape {x.shape}")
    key = []
    for d, (b, s) in enumerate(zip(begin, size)):
        end = x.shape[d] if s == -1 else b + s
        if b < 0 or end > x.shape[d]:
            raise ValueError(f"slice: begin {begin} and size {size} run outside shape {x.shape}")
        key.append(builtins.slice(b, end))
    return getitem(x, tuple(key))


def pad(x, paddings, constant_values=0.0) -> Tensor:
    """Constant padding; ``paddings`` is [[before, after], ...] per axis."""
    B = _backend_of(x)
    x = _t(x, B)
    pw = tuple((int(a), int(b)) for a, b in paddings)
    if len(pw) != x.ndim or builtins.any(a < 0 or b < 0 for a, b in pw):
        raise ValueError(f"pad: paddings {paddings} do not fit a tensor of rank {x.ndim} or are negative")
    return _make("pad", B.pad(x.data, pw, constant_values), (x,), B, pw=pw)


@register_gradient("pad")
def _pad_grad(node, dy):
    key = tuple(builtins.slice(a, dy.shape[i] - b) for i, (a, b) in enumerate(node.attrs["pw"]))
    return (dy[key],)


def one_hot(indices, depth: int, dtype="float32") -> Tensor:
    """[..., depth] with a 1 at each index (not differentiable)."""
    B = _backend_of(indices)
    idx = _t(indices, B, "int32")
    if _is_float(idx.dtype):
        idx = cast(idx, "int32")
    return Tensor(B.one_hot(idx.data, int(depth), dtype), B)


def gather(x, indices, axis=0) -> Tensor:
    """Rows of ``x`` at integer ``indices`` along ``axis``; the result has
    shape ``x.shape[:axis] + indices.shape + x.shape[axis+1:]``."""
    B = _backend_of(x, indices)
    x = _t(x, B)
    idx = _t(indices, B, "int32")
    ax = _axes(axis, x.ndim)[0]
    return _make("gather", B.gather(x.data, idx.data, ax), (x,), B, idx=idx.data, axis=ax)


@register_gradient("gather")
def _gather_grad(node, dy):
    x = node.inputs[0]
    return (node.B.gather_grad(dy, x.shape, node.attrs["idx"], node.attrs["axis"]),)


# -------------------------------------------------------------------- matmul


def matmul(a, b, transpose_a=False, transpose_b=False) -> Tensor:
    """Matrix product of the last two axes; leading (batch) axes broadcast.

    a: [..., m, k], b: [..., k, n] (after optional transposes) -> [..., m, n].
    A 1-D operand is treated as a row (a) or column (b) vector.
    """
    B = _backend_of(a, b)
    a, b = _t(a, B), _t(b, B)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul needs tensors of rank >= 1, got shapes {a.shape} and {b.shape}")
    a, b = _promote(a, b)
    squeeze_a = a.ndim == 1
    squeeze_b = b.ndim == 1
    if squeeze_a:
        a = reshape(a, (1, a.shape[0]))
    if squeeze_b:
        b = reshape(b, (b.shape[0], 1))
    ka = a.shape[-2] if transpose_a else a.shape[-1]
    kb = b.shape[-1] if transpose_b else b.shape[-2]
    if ka != kb:
        raise ValueError(
            f"matmul: inner dimensions differ: {a.shape}{'^T' if transpose_a else ''} @ "
            f"{b.shape}{'^T' if transpose_b else ''} ({ka} vs {kb})")
    broadcast_shapes(a.shape[:-2], b.shape[:-2], f"matmul of {a.shape} and {b.shape} (batch axes)")
    y = B.matmul(a.data, b.data, transpose_a, transpose_b)
    out = _make("matmul", y, (a, b), B, ta=transpose_a, tb=transpose_b)
    if squeeze_a:
        out = squeeze(out, -2)
    if squeeze_b:
        out = squeeze(out, -1)
    return out


mat_mul = matmul


@register_gradient("matmul")
def _matmul_grad(node, dy):
    a, b = node.inputs
    B = node.B
    ta, tb = node.attrs["ta"], node.attrs["tb"]
    ga = gb = None
    if a.requires_grad:
        ga = B.matmul(b.data, dy, tb, True) if ta else B.matmul(dy, b.data, False, not tb)
    if b.requires_grad:
        gb = B.matmul(dy, a.data, True, ta) if tb else B.matmul(a.data, dy, not ta, False)
    return ga, gb


def dense(x, kernel, bias=None, activation=None) -> Tensor:
    """``activation(x @ kernel + bias)`` for x [batch, in], kernel [in, out].

    activation: None, "linear", "relu", "sigmoid" or "tanh"; the backend may
    fuse all of it into one kernel.
    """
    B = _backend_of(x, kernel, bias)
    x, kernel = _promote(_t(x, B), _t(kernel, B))
    xs, ks = x.shape, kernel.shape
    if len(xs) != 2 or len(ks) != 2 or xs[1] != ks[0]:
        raise ValueError(f"dense: input {xs} does not fit kernel {ks}")
    if activation not in (None, "linear", "relu", "sigmoid", "tanh"):
        raise ValueError(f"dense: activation {activation!r} is not one of None, 'relu', 'sigmoid', 'tanh'")
    inputs = (x, kernel) if bias is None else (x, kernel, _t(bias, B))
    y = B.dense(x.data, kernel.data, None if bias is None else inputs[2].data, activation)
    return _make("dense", y, inputs, B, saved=y, activation=activation)


@register_gradient("dense")
def _dense_grad(node, dy):
    x, k = node.inputs[0], node.inputs[1]
    with_bias = len(node.inputs) == 3 and node.inputs[2].requires_grad
    gx, gk, gb = node.B.dense_grad(dy, x.data, node.saved, k.data, node.attrs["activation"], with_bias,
                                   x.requires_grad, k.requires_grad)
    return (gx, gk) if len(node.inputs) == 2 else (gx, gk, gb)


# -------------------------------------------------------------- convolution


# (strides, padding, dilation_rate) -> checked (s, p, d), for the exact tuples and str a layer passes on
# every call (a dozen builtin calls saved per convolution); a failed check is not kept.
_CONV_ARGS: dict = {}


def _conv_args(strides, padding, dilation_rate):
    key = (strides, padding, dilation_rate) if type(strides) is tuple and type(dilation_rate) is tuple \
        and type(padding) is str else None
    hit = _CONV_ARGS.get(key)
    if hit is not None:
        return hit
    padding = padding.lower() if isinstance(padding, str) else padding
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    s = _pair(strides, "strides")
    d = _pair(dilation_rate, "dilation_rate")
    if builtins.min(s) < 1 or builtins.min(d) < 1:
        raise ValueError(f"strides {s} and dilation_rate {d} must be positive")
    if builtins.max(s) > 1 and builtins.max(d) > 1:
        raise ValueError("strides > 1 together with dilation_rate > 1 is not supported (as in TF)")
    if key is not None:
        _CONV_ARGS[key] = (s, padding, d)
    return s, padding, d


def conv2d(x, kernel, strides=1, padding="valid", dilation_rate=1) -> Tensor:
    """2-D convolution. x: [N, H, W, C] (or [H, W, C]), kernel: [kh, kw, C, O].

    Returns [N, Ho, Wo, O]. ValueError when the channels differ or the
    window does not fit the input.
    """
    B = _backend_of(x, kernel)
    x, kernel = _promote(_t(x, B), _t(kernel, B))
    if x.ndim == 3:
        return squeeze(conv2d(expand_dims(x, 0), kernel, strides, padding, dilation_rate), 0)
    s, p, d = _conv_args(strides, padding, dilation_rate)
    B.conv_geometry(x.shape, kernel.shape, s, p, d)
    y = B.conv2d(x.data, kernel.data, s, p, d)
    return _make("conv2d", y, (x, kernel), B, s=s, p=p, d=d)


@register_gradient("conv2d")
def _conv2d_grad(node, dy):
    x, k = node.inputs
    B, a = node.B, node.attrs
    gx = B.conv2d_grad_input(dy, k.data, x.shape, a["s"], a["p"], a["d"]) if x.requires_grad else None
    gk = B.conv2d_grad_filter(x.data, dy, k.shape, a["s"], a["p"], a["d"]) if k.requires_grad else None
    return gx, gk


_FUSED_ACTIVATIONS = (None, "linear", "relu", "relu6", "sigmoid", "tanh")


def _fused_conv_args(op, x, kernel, bias, activation, strides, padding, dilation_rate, depthwise=False):
    """(B, inputs, s, p, d) of a convolution op with bias and activation: the input 4-D, the
    activation known, the geometry valid, bias (cast to the input's dtype) [output channels]."""
    B = _backend_of(x, kernel, bias)
    x, kernel = _promote(_t(x, B), _t(kernel, B))
    xs, ks = x.shape, kernel.shape
    if len(xs) != 4:
        raise ValueError(f"{op} expects a 4-D NHWC input, got shape {xs}")
    if activation not in _FUSED_ACTIVATIONS:
        raise ValueError(f"{op}: activation {activation!r} is not one of None, 'linear', 'relu', 'relu6', "
                         f"'sigmoid', 'tanh'")
    s, p, d = _conv_args(strides, padding, dilation_rate)
    (B.depthwise_geometry if depthwise else B.conv_geometry)(xs, ks, s, p, d)
    if bias is None:
        return B, (x, kernel), s, p, d
    channels = ks[2] * ks[3] if depthwise else ks[3]
    bias = _t(bias, B, x.dtype)
    if bias.data.dtype is not x.data.dtype and bias.dtype != x.dtype:  # the first: no name lookups
        bias = cast(bias, x.dtype)
    if bias.shape != (channels,):
        raise ValueError(f"{op}: bias of shape {bias.shape} for {channels} output channels")
    return B, (x, kernel, bias), s, p, d


def conv2d_bias_act(x, kernel, bias=None, activation=None, strides=1, padding="valid",
                    dilation_rate=1) -> Tensor:
    """``activation(conv2d(x, kernel) + bias)`` as one op (the Conv2D layer's forward).

    x: [N, H, W, C], kernel: [kh, kw, C, O], bias: [O] or None; activation:
    None, "linear", "relu", "relu6", "sigmoid" or "tanh". The backend may apply
    the bias and activation while each part of the output is still in cache.
    """
    B, inputs, s, p, d = _fused_conv_args("conv2d_bias_act", x, kernel, bias, activation, strides, padding,
                                          dilation_rate)
    x, kernel, bias = inputs[0], inputs[1], (inputs[2] if len(inputs) == 3 else None)
    # Work the backend may keep for the filter gradient (the CPU's im2col columns): only when one follows.
    keep = {} if is_grad_enabled() and kernel.requires_grad else None
    y = B.conv2d_bias_act(x.data, kernel.data, None if bias is None else bias.data, activation, s, p, d, keep)
    saved = (y if activation not in (None, "linear") else None, keep)
    return _make("conv2d_bias_act", y, inputs, B, saved=saved, act=activation, s=s, p=p, d=d)


@register_gradient("conv2d_bias_act")
def _conv2d_bias_act_grad(node, dy):
    x, k = node.inputs[0], node.inputs[1]
    B, a = node.B, node.attrs
    y, keep = node.saved
    with_bias = len(node.inputs) == 3 and node.inputs[2].requires_grad
    gx, gk, gb = B.conv2d_bias_act_grad(dy, x.data, y, k.data, a["act"], with_bias, x.requires_grad,
                                        k.requires_grad, a["s"], a["p"], a["d"], keep)
    if keep:
        keep.clear()  # the columns are large: free them now, not when the graph goes
    return (gx, gk) if len(node.inputs) == 2 else (gx, gk, gb)


def depthwise_conv2d(x, kernel, strides=1, padding="valid", dilation_rate=1) -> Tensor:
    """Depthwise 2-D convolution. x: [N, H, W, C] (or [H, W, C]), kernel: [kh, kw, C, M].

    Returns [N, Ho, Wo, C*M] (channel ``c*M + m`` from input channel c and
    ``kernel[:, :, c, m]``, as TF). ValueError when the channels differ or
    the window does not fit the input.
    """
    B = _backend_of(x, kernel)
    x, kernel = _promote(_t(x, B), _t(kernel, B))
    if x.ndim == 3:
        return squeeze(depthwise_conv2d(expand_dims(x, 0), kernel, strides, padding, dilation_rate), 0)
    s, p, d = _conv_args(strides, padding, dilation_rate)
    B.depthwise_geometry(x.shape, kernel.shape, s, p, d)
    y = B.depthwise_conv2d(x.data, kernel.data, s, p, d)
    return _make("depthwise_conv2d", y, (x, kernel), B, s=s, p=p, d=d)


@register_gradient("depthwise_conv2d")
def _depthwise_conv2d_grad(node, dy):
    x, k = node.inputs[:2]  # [:2]: depthwise_conv2d_bias_act's node has the bias third
    B, a = node.B, node.attrs
    gx = B.depthwise_conv2d_grad_input(dy, k.data, x.shape, a["s"], a["p"], a["d"]) if x.requires_grad else None
    gk = B.depthwise_conv2d_grad_filter(x.data, dy, k.shape, a["s"], a["p"], a["d"]) if k.requires_grad else None
    return gx, gk


def depthwise_conv2d_bias_act(x, kernel, bias=None, activation=None, strides=1, padding="valid",
                              dilation_rate=1) -> Tensor:
    """``activation(depthwise_conv2d(x, kernel) + bias)`` as one op (inference-folded MobileNet blocks).

    x: [N, H, W, C], kernel: [kh, kw, C, M], bias: [C*M] or None; activation as in
    ``conv2d_bias_act``. The CPU applies the bias and activation as it stores each output.
    """
    B, inputs, s, p, d = _fused_conv_args("depthwise_conv2d_bias_act", x, kernel, bias, activation, strides,
                                          padding, dilation_rate, depthwise=True)
    x, kernel, bias = inputs[0], inputs[1], (inputs[2] if len(inputs) == 3 else None)
    y = B.depthwise_conv2d_bias_act(x.data, kernel.data, None if bias is None else bias.data, activation, s, p, d)
    return _make("depthwise_conv2d_bias_act", y, inputs, B, saved=y if activation not in (None, "linear") else None,
                 act=activation, s=s, p=p, d=d)


@register_gradient("depthwise_conv2d_bias_act")
def _depthwise_conv2d_bias_act_grad(node, dy):
    B = node.B
    g = B.activation_grad(dy, node.saved, node.attrs["act"])
    grads = _depthwise_conv2d_grad(node, g)
    if len(node.inputs) == 3:
        grads += (B.sum_to_shape(g, node.inputs[2].shape) if node.inputs[2].requires_grad else None,)
    return grads


def conv2d_transpose(x, kernel, output_shape=None, strides=1, padding="valid", dilation_rate=1) -> Tensor:
    """Transposed convolution (the gradient of conv2d with respect to its input).

    x: [N, H, W, C], kernel: [kh, kw, O, C] as in Keras's Conv2DTranspose.
    ``output_shape`` [N, Ho, Wo, O] defaults to Keras's: H*s for "same",
    (H-1)*s + (kh-1)*d + 1 for "valid".
    """
    B = _backend_of(x, kernel)
    x, kernel = _promote(_t(x, B), _t(kernel, B))
    s, p, d = _conv_args(strides, padding, dilation_rate)
    if x.ndim != 4 or kernel.ndim != 4 or kernel.shape[3] != x.shape[3]:
        raise ValueError(f"conv2d_transpose: input {x.shape} does not fit kernel {kernel.shape} [kh, kw, out, in]")
    if output_shape is None:
        dims = []
        for i in (0, 1):
            n, k = x.shape[1 + i], kernel.shape[i]
            dims.append(n * s[i] if p == "same" else (n - 1) * s[i] + (k - 1) * d[i] + 1)
        output_shape = (x.shape[0], dims[0], dims[1], kernel.shape[2])
    output_shape = tuple(int(v) for v in output_shape)
    ho, wo, _, _ = B.conv_geometry(output_shape, kernel.shape, s, p, d)
    if (ho, wo) != x.shape[1:3]:
        raise ValueError(f"conv2d_transpose: output_shape {output_shape} does not map back to input {x.shape}")
    y = B.conv2d_grad_input(x.data, kernel.data, output_shape, s, p, d)
    return _make("conv2d_transpose", y, (x, kernel), B, s=s, p=p, d=d)


@register_gradient("conv2d_transpose")
def _conv2d_transpose_grad(node, dy):
    x, k = node.inputs
    B, a = node.B, node.attrs
    gx = B.conv2d(dy, k.data, a["s"], a["p"], a["d"]) if x.requires_grad else None
    gk = B.conv2d_grad_filter(dy, x.data, k.shape, a["s"], a["p"], a["d"]) if k.requires_grad else None
    return gx, gk


def _pool_args(x, pool_size, strides, padding):
    padding = padding.lower() if isinstance(padding, str) else padding
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    ps = _pair(pool_size, "pool_size")
    st = ps if strides is None else _pair(strides, "strides")
    if x.ndim != 4:
        raise ValueError(f"pooling expects a 4-D NHWC input, got shape {x.shape}")
    try:
        for i in (0, 1):
            conv_output_size(x.shape[1 + i], ps[i], st[i], 1, padding)
    except ValueError as e:
        raise ValueError(f"pooling: {e} (input shape {x.shape}, pool_size {ps})") from None
    return ps, st, padding


def max_pool2d(x, pool_size=2, strides=None, padding="valid") -> Tensor:
    """Max pooling over NHWC windows; strides default to the pool size."""
    B = _backend_of(x)
    x = _t(x, B)
    ps, st, p = _pool_args(x, pool_size, strides, padding)
    y = B.max_pool2d(x.data, ps, st, p)
    return _make("max_pool2d", y, (x,), B, saved=y, ps=ps, st=st, p=p)


@register_gradient("max_pool2d")
def _max_pool_grad(node, dy):
    a = node.attrs
    return (node.B.max_pool2d_grad(dy, node.inputs[0].data, node.saved, a["ps"], a["st"], a["p"]),)


def avg_pool2d(x, pool_size=2, strides=None, padding="valid") -> Tensor:
    """Average pooling over NHWC windows (padded cells are not counted)."""
    B = _backend_of(x)
    x = _t(x, B)
    if not _is_float(x.dtype):
        x = cast(x, "float32")
    ps, st, p = _pool_args(x, pool_size, strides, padding)
    y = B.avg_pool2d(x.data, ps, st, p)
    return _make("avg_pool2d", y, (x,), B, ps=ps, st=st, p=p)


@register_gradient("avg_pool2d")
def _avg_pool_grad(node, dy):
    a = node.attrs
    return (node.B.avg_pool2d_grad(dy, node.inputs[0].shape, a["ps"], a["st"], a["p"]),)


max_pool = max_pool2d
avg_pool = avg_pool2d


def dropout(x, rate: float, noise_shape=None, training=True) -> Tensor:
    """Zero each element with probability ``rate`` and scale the rest by 1/(1-rate).

    The mask is kept for the backward pass. ``noise_shape`` broadcasts the
    mask (e.g. one decision per channel).
    """
    if not 0 <= rate < 1:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
    B = _backend_of(x)
    x = _t(x, B)
    if not training or rate == 0:
        return x
    shape = x.shape if noise_shape is None else tuple(
        x.shape[i] if s is None else s for i, s in enumerate(noise_shape))
    if shape == x.shape:
        y, mask = B.dropout(x.data, rate)
    else:
        mask = B.dropout_mask(shape, rate, x.dtype)
        y = B.multiply(x.data, mask)
    return _make("dropout", y, (x,), B, saved=mask)


@register_gradient("dropout")
def _dropout_grad(node, dy):
    return (node.B.multiply(dy, node.saved),)


def image_transform(images, transforms, output_size=None, interpolation="bilinear", fill_mode="constant",
                    fill_value=0.0) -> Tensor:
    """Projective transform of NHWC ``images`` (the backend's ``image_transform``), differentiable in
    the images. ``transforms``: [N or 1, 8] (Tensor or array; constants), ``output_size``: (h, w),
    default the input's."""
    B = _backend_of(images)
    x = _t(images, B)
    if x.ndim != 4:
        raise ValueError(f"image_transform: images must be NHWC (rank 4), got shape {x.shape}")
    t = transforms.data if isinstance(transforms, Tensor) else B.asarray(transforms, "float32")
    oh, ow = (x.shape[1], x.shape[2]) if output_size is None else (int(output_size[0]), int(output_size[1]))
    y = B.image_transform(x.data, t, oh, ow, interpolation, fill_mode, fill_value)
    return _make("image_transform", y, (x,), B, saved=t, interpolation=interpolation, fill_mode=fill_mode)


@register_gradient("image_transform")
def _image_transform_grad(node, dy):
    a = node.attrs
    return (node.B.image_transform_grad(dy, node.inputs[0].shape, node.saved, a["interpolation"], a["fill_mode"]),)


def resize(images, size, interpolation="bilinear") -> Tensor:
    """NHWC ``images`` resized to ``size`` (h, w) as tf.image.resize / Keras 3 (half-pixel centres,
    edges clamped, no antialiasing); "bilinear" or "nearest"."""
    B = _backend_of(images)
    x = _t(images, B)
    (h, w), (oh, ow) = x.shape[1:3], (int(size[0]), int(size[1]))
    if (h, w) == (oh, ow):
        return x
    sy, sx = h / oh, w / ow
    # Made of shared scalars (fill launches inside a recording), not uploaded: a recorded step may resize.
    row = [B._scalar(float(v), "float32") for v in (sx, 0.0, 0.5 * sx - 0.5, 0.0, sy, 0.5 * sy - 0.5, 0.0, 0.0)]
    t = Tensor(B.reshape(B.stack(row), (1, 8)), B)
    return image_transform(x, t, (oh, ow), interpolation, "nearest")


# ------------------------------------------------------- erf, batch norm


_TWO_OVER_SQRT_PI = 1.1283791670955126  # 2 / sqrt(pi)
_ONE_OVER_SQRT_PI = 0.5641895835477563  # 1 / sqrt(pi)


def _erf_data(B, x):
    """erf of a raw array, to about 1e-14, computed in float64 from backend primitives.

    Taylor series for |x| <= 2, the continued fraction of erfc beyond.
    """
    a = B.abs(B.cast(x, "float64"))
    s = B.minimum(a, 2.0)
    z = B.negative(B.square(s))
    term, acc = s, s
    for n in range(1, 32):
        term = B.multiply(term, B.divide(z, float(n)))
        acc = B.add(acc, B.divide(term, float(2 * n + 1)))
    small = B.multiply(acc, _TWO_OVER_SQRT_PI)
    big = B.maximum(a, 2.0)
    f = big
    for k in range(40, 0, -1):
        f = B.add(big, B.divide(k / 2, f))
    large = B.subtract(1.0, B.divide(B.multiply(B.exp(B.negative(B.square(big))), _ONE_OVER_SQRT_PI), f))
    y = B.multiply(B.sign(x), B.where(B.compare("<=", a, 2.0), small, large))
    return B.cast(y, x.dtype)


def erf(x) -> Tensor:
    """The Gauss error function, elementwise (as used by the exact GELU)."""
    B = _backend_of(x)
    x = _t(x, B)
    if not _is_float(x.dtype):
        x = cast(x, "float32")
    return _make("erf", _erf_data(B, x.data), (x,), B)


@register_gradient("erf")
def _erf_grad(node, dy):
    B, x = node.B, node.inputs[0].data
    return (B.multiply(dy, B.multiply(B.exp(B.negative(B.square(x))), _TWO_OVER_SQRT_PI)),)


def batch_norm(x, gamma=None, beta=None, axis=-1, epsilon=1e-3):
    """Normalize ``x`` with its own (batch) statistics over every axis but ``axis``.

    ``y = (x - mean) / sqrt(var + epsilon) * gamma + beta``; gamma and beta
    ([C], C = x.shape[axis]) may be None. The variance is the biased one,
    as Keras uses. Returns ``(y, mean, variance)``; mean and variance have
    shape [C] and carry no gradient (they feed the moving averages). One
    node, one ``batch_norm_train`` call forward and one ``batch_norm_grad``
    backward (through the batch statistics); another axis than the last is
    moved last around them.
    """
    B = _backend_of(x, gamma, beta)
    x = _t(x, B)
    ax = _axes(axis, x.ndim)[0]
    c = x.shape[ax]
    params = []
    for name, p in (("gamma", gamma), ("beta", beta)):
        if p is not None:
            p = _t(p, B, x.dtype)
            if p.shape != (c,):
                raise ValueError(f"batch_norm: {name} has shape {p.shape}, expected ({c},) for input {x.shape}")
            params.append(p)
    perm = None if ax == x.ndim - 1 else tuple(i for i in range(x.ndim) if i != ax) + (ax,)
    xl = x.data if perm is None else B.transpose(x.data, perm)
    g = params[0].data if gamma is not None else None
    b = params[-1].data if beta is not None else None
    y, m, var, inv = B.batch_norm_train(xl, g, b, float(epsilon))
    if perm is not None:
        y = B.transpose(y, _inverse_perm(perm))
    out = _make("batch_norm", y, (x, *params), B, saved=(xl, m, inv), perm=perm,
                has_gamma=gamma is not None, has_beta=beta is not None)
    return out, Tensor(m, B), Tensor(var, B)


def _inverse_perm(perm):
    return tuple(sorted(range(len(perm)), key=perm.__getitem__))


@register_gradient("batch_norm")
def _batch_norm_grad(node, dy):
    B, (xl, m, inv), a = node.B, node.saved, node.attrs
    x, perm = node.inputs[0], a["perm"]
    gamma = node.inputs[1] if a["has_gamma"] else None
    if perm is not None:
        dy = B.transpose(dy, perm)
    dx, dgamma, dbeta = B.batch_norm_grad(dy, xl, m, inv, None if gamma is None else gamma.data,
                                          need_input=x.requires_grad)
    if dx is not None and perm is not None:
        dx = B.transpose(dx, _inverse_perm(perm))
    return _bn_grads(node, dx, dgamma, dbeta)


def _bn_grads(node, dx, dgamma, dbeta):
    """The gradient tuple of a batch-norm node (x[, gamma][, beta]): None for an input that needs none."""
    out = [dx]
    if node.attrs["has_gamma"]:
        out.append(dgamma if node.inputs[1].requires_grad else None)
    if node.attrs["has_beta"]:
        out.append(dbeta if node.inputs[-1].requires_grad else None)
    return tuple(out)


# The Transformer's ops live in their own module; deepgpu.ops is where users find them.
from .ops_nn import dot_product_attention, einsum, layer_norm, masked_softmax  # noqa: E402,F401
from .ops_rnn import gru_cell, lstm_cell  # noqa: E402,F401  (the fused recurrent cells)
from .ops_3d import avg_pool3d, conv3d, conv3d_transpose, max_pool3d  # noqa: E402,F401  (issue 17)
