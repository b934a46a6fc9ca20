"""Activation functions by Keras name, built from deepgpu ops (differentiable).

``get(identifier)`` accepts None (linear), a callable, a Keras name
(``"relu"``, ``"hard_sigmoid"``) or a TF.js camelCase name
(``"hardSigmoid"``, ``"leakyRelu"``); ``serialize(fn)`` gives the name back.
"""
from __future__ import annotations

import math

from . import ops
from .autograd import no_grad


def linear(x):
    return x


def relu(x, negative_slope=0.0, max_value=None, threshold=0.0, alpha=None):
    """Keras's relu: ``x`` above ``threshold`` (capped at ``max_value``),
    ``negative_slope * (x - threshold)`` below. ``alpha`` is tf.keras 2's name
    for ``negative_slope``."""
    if alpha is not None:
        negative_slope = alpha
    if negative_slope == 0 and max_value is None and threshold == 0:
        return ops.relu(x)
    if negative_slope != 0 and max_value is None and threshold == 0:
        return ops.leaky_relu(x, negative_slope)
    if negative_slope == 0 and max_value is not None and threshold == 0:
        return ops.clip(x, 0.0, float(max_value))  # ReLU(6) of MobileNets: one op each way
    pos = ops.where(ops.greater(x, threshold), x, 0.0)
    if max_value is not None:
        pos = ops.minimum(pos, float(max_value))
    if negative_slope != 0:
        pos = pos + ops.minimum(x - threshold, 0.0) * float(negative_slope)
    return pos


def relu6(x):
    return ops.clip(x, 0.0, 6.0)


def sigmoid(x):
    return ops.sigmoid(x)


def hard_sigmoid(x):
    """Keras 3's definition: ``relu6(x + 3) / 6``."""
    return ops.clip(x * (1.0 / 6.0) + 0.5, 0.0, 1.0)


def tfjs_hard_sigmoid(x):
    """TF.js's and Keras 2's hard_sigmoid, ``clip(0.2 x + 0.5, 0, 1)``: the default recurrent
    activation of TF.js's LSTM and GRU (loaded from TF.js files as this name)."""
    return ops.clip(x * 0.2 + 0.5, 0.0, 1.0)


def hard_silu(x):
    return x * hard_sigmoid(x)


def tanh(x):
    return ops.tanh(x)


def softmax(x, axis=-1):
    return ops.softmax(x, axis)


def log_softmax(x, axis=-1):
    return ops.log_softmax(x, axis)


def elu(x, alpha=1.0):
    return ops.elu(x, alpha)


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def selu(x):
    return ops.elu(x, _SELU_ALPHA) * _SELU_SCALE


def softplus(x):
    return ops.softplus(x)


def softsign(x):
    return x / (ops.abs(x) + 1.0)


def swish(x):
    return x * ops.sigmoid(x)


silu = swish


def gelu(x, approximate=False):
    """Gaussian error linear unit; exact (erf) by default, as Keras."""
    if approximate:
        c = math.sqrt(2.0 / math.pi)
        return x * 0.5 * (ops.tanh((x + ops.pow(x, 3.0) * 0.044715) * c) + 1.0)
    return x * 0.5 * (ops.erf(x * (1.0 / math.sqrt(2.0))) + 1.0)


def gelu_new(x):
    """TF.js's name for the tanh approximation of GELU."""
    return gelu(x, approximate=True)


def leaky_relu(x, negative_slope=0.2):
    return ops.leaky_relu(x, negative_slope)


def exponential(x):
    return ops.exp(x)


def mish(x):
    return x * ops.tanh(ops.softplus(x))


def celu(x, alpha=1.0):
    """Continuously differentiable ELU: ``max(0, x) + min(0, alpha * (exp(x / alpha) - 1))``,
    written as ``alpha * elu(x / alpha)`` (the same for ``alpha > 0``, and safe for large ``x``)."""
    alpha = float(alpha)
    if alpha <= 0:
        raise ValueError(f"celu: alpha must be positive, got {alpha}")
    return ops.elu(x * (1.0 / alpha), 1.0) * alpha


def glu(x, axis=-1):
    """Gated linear unit: the input split in two halves ``a, b`` along ``axis``, ``a * sigmoid(b)``."""
    n = x.shape[axis]
    if n is not None and n % 2:
        raise ValueError(f"glu: axis {axis} must have an even size to split in two halves, got {n} "
                         f"(input shape {tuple(x.shape)})")
    a, b = ops.split(x, 2, axis)
    return a * ops.sigmoid(b)


def hard_shrink(x, threshold=0.5):
    """``x`` where ``|x| > threshold``, else 0."""
    return ops.where(ops.greater(ops.abs(x), float(threshold)), x, 0.0)


def hard_tanh(x):
    """``x`` clipped to [-1, 1]."""
    return ops.clip(x, -1.0, 1.0)


def log_sigmoid(x):
    """``log(sigmoid(x)) = -softplus(-x)``, stable for large ``|x|``."""
    return ops.negative(ops.softplus(ops.negative(x)))


def soft_shrink(x, threshold=0.5):
    """``x - threshold`` above ``threshold``, ``x + threshold`` below ``-threshold``, else 0."""
    t = float(threshold)
    return ops.where(ops.greater(x, t), x - t, ops.where(ops.less(x, -t), x + t, 0.0))


def sparse_plus(x):
    """0 for ``x <= -1``, ``x`` for ``x >= 1``, ``(x + 1)**2 / 4`` between."""
    mid = ops.square(x + 1.0) * 0.25
    return ops.where(ops.less_equal(x, -1.0), 0.0, ops.where(ops.greater_equal(x, 1.0), x, mid))


def sparse_sigmoid(x):
    """0 for ``x <= -1``, 1 for ``x >= 1``, ``(x + 1) / 2`` between."""
    return ops.clip(x * 0.5 + 0.5, 0.0, 1.0)


def sparsemax(x, axis=-1):
    """Sparsemax (Martins & Astudillo 2016): the Euclidean projection of ``x`` onto the
    probability simplex along ``axis``, ``max(x - tau, 0)``.

    The support (which entries stay positive) is found without sorting: entry ``i`` is in it
    when ``1 + k_i x_i > sum_{x_j >= x_i} x_j`` with ``k_i = #{j : x_j >= x_i}``. That test
    is on values only (no gradient); ``tau = (sum over the support of x - 1) / |support|``
    is then built from differentiable ops, so autograd gives sparsemax's Jacobian.
    Pairwise comparison costs O(n^2) memory in the size of ``axis``."""
    ax = axis % x.ndim
    with no_grad():  # values only: the support mask carries no gradient
        xi = ops.expand_dims(x, ax + 1)   # [..., n_i, 1, ...]
        xj = ops.expand_dims(x, ax)       # [..., 1, n_j, ...]
        ge = ops.cast(ops.greater_equal(xj, xi), x.dtype)
        k = ops.sum(ge, axis=ax + 1)
        above = ops.sum(ge * xj, axis=ax + 1)
        support = ops.cast(ops.greater(x * k + 1.0, above), x.dtype)
    tau = (ops.sum(x * support, axis=ax, keepdims=True) - 1.0) / ops.sum(support, axis=ax, keepdims=True)
    return ops.relu(x - tau)


def squareplus(x, b=4):
    """``(x + sqrt(x**2 + b)) / 2``."""
    return (x + ops.sqrt(ops.square(x) + float(b))) * 0.5


def tanh_shrink(x):
    """``x - tanh(x)``."""
    return x - ops.tanh(x)


def threshold(x, threshold, default_value):
    """``x`` where ``x > threshold``, else ``default_value`` (both required, as in Keras)."""
    return ops.where(ops.greater(x, float(threshold)), x, float(default_value))


def output_shape(fn, input_shape):
    """The shape ``fn`` gives for ``input_shape``: the same, except glu (by name, so
    over the last axis) halves that axis."""
    if fn is glu and input_shape and input_shape[-1] is not None:
        return tuple(input_shape[:-1]) + (input_shape[-1] // 2,)
    return input_shape


_BY_NAME = {
    "linear": linear, "relu": relu, "relu6": relu6, "sigmoid": sigmoid,
    "hard_sigmoid": hard_sigmoid, "hard_silu": hard_silu, "tanh": tanh, "softmax": softmax,
    "log_softmax": log_softmax, "elu": elu, "selu": selu, "softplus": softplus,
    "softsign": softsign, "swish": swish, "silu": silu, "gelu": gelu, "gelu_new": gelu_new,
    "leaky_relu": leaky_relu, "exponential": exponential, "mish": mish,
    "celu": celu, "glu": glu, "hard_shrink": hard_shrink, "hard_tanh": hard_tanh,
    "log_sigmoid": log_sigmoid, "soft_shrink": soft_shrink, "sparse_plus": sparse_plus,
    "sparse_sigmoid": sparse_sigmoid, "sparsemax": sparsemax, "squareplus": squareplus,
    "tanh_shrink": tanh_shrink, "threshold": threshold, "tfjs_hard_sigmoid": tfjs_hard_sigmoid,
}
# Other spellings: TF.js camelCase ("hardSigmoid", "leakyRelu") and any case or
# underscores are matched through this normalized table.
_ALIASES = {"hard_swish": "hard_silu", "none": "linear"}
_NORMALIZED = {n.replace("_", "").lower(): n for n in _BY_NAME}
_NORMALIZED.update({k.replace("_", ""): v for k, v in _ALIASES.items()})
_NAME_OF = {}
for _n, _f in _BY_NAME.items():
    _NAME_OF.setdefault(_f, _n)


def get(identifier):
    """The activation function for None, a callable, or a Keras / TF.js name."""
    if identifier is None:
        return linear
    if isinstance(identifier, dict):  # {"class_name": "relu", ...} as some configs write it
        identifier = identifier.get("class_name") or identifier.get("config", {}).get("name")
    if isinstance(identifier, str):
        name = _NORMALIZED.get(identifier.replace("_", "").lower())
        fn = _BY_NAME.get(name) if name else None
        if fn is None:
            from .registry import custom_objects
            fn = custom_objects().get(identifier)
        if fn is None:
            raise ValueError(
                f"unknown activation {identifier!r}; valid names are: "
                f"{', '.join(sorted(_BY_NAME))} (TF.js spellings such as 'hardSigmoid' too)")
        return fn
    if callable(identifier):
        return identifier
    raise TypeError(f"an activation must be None, a name or a callable, got {type(identifier).__name__}")


def serialize(fn) -> str:
    """The name of an activation function (its Keras name, or ``__name__`` for a custom one)."""
    if fn is None:
        return "linear"
    if isinstance(fn, str):
        return _NAME_OF[get(fn)] if get(fn) in _NAME_OF else fn
    name = _NAME_OF.get(fn)
    if name is not None:
        return name
    return getattr(fn, "__name__", type(fn).__name__)


def deserialize(name):
    return get(name)
