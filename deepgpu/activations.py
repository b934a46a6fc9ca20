"""Activation functions by Keras name, built from deepgpu ops (differentiable).

``get(identifier)`` accepts None (linear), a callable, a Keras name
(``"relu"``, ``"hard_sigmoid"``) or a TF.js camelCase name
(``"hardSigmoid"``, ``"leakyRelu"``); ``serialize(fn)`` gives the name back.
"""
from __future__ import annotations

import math

from . import ops


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


_BY_NAME = {
    "linear": linear, "relu": relu, "relu6": relu6, "sigmoid": sigmoid,
    "hard_sigmoid": hard_sigmoid, "hard_silu": hard_silu, "tanh": tanh, "softmax": softmax,
    "log_softmax": log_softmax, "elu": elu, "selu": selu, "softplus": softplus,
    "softsign": softsign, "swish": swish, "silu": silu, "gelu": gelu, "gelu_new": gelu_new,
    "leaky_relu": leaky_relu, "exponential": exponential, "mish": mish,
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
