"""Weight constraints, Keras 3's: a function ``w -> w`` that the optimizer applies to a
variable after each of its updates.

``MaxNorm(max_value=2, axis=0)`` rescales each slice along ``axis`` whose L2 norm
exceeds ``max_value``; ``MinMaxNorm(min_value=0, max_value=1, rate=1, axis=0)``
moves each norm into ``[min_value, max_value]`` (``rate`` of the way);
``UnitNorm(axis=0)`` scales each slice to norm 1; ``NonNeg()`` zeroes the
negative entries. ``axis=0`` is each output unit of a Dense kernel ``[in, out]``;
use ``[0, 1, 2]`` for a Conv2D kernel ``[h, w, in, out]``. Norms are divided as
``desired / (1e-7 + norm)``, as Keras does. ``get`` takes an instance, a name
(``"max_norm"``, ``"MaxNorm"``, ``"maxNorm"``...), a ``{"class_name", "config"}``
dict or a callable.
"""
from __future__ import annotations

from . import ops

__all__ = ["Constraint", "MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm", "max_norm", "min_max_norm", "non_neg",
           "unit_norm", "get", "serialize", "deserialize"]

_EPSILON = 1e-7  # Keras's backend.epsilon()


def _axis(axis, cls):
    if isinstance(axis, (list, tuple)):
        if not all(isinstance(a, int) and not isinstance(a, bool) for a in axis) or not axis:
            raise ValueError(f"{cls}: axis must be an int or a non-empty list of ints, got {axis!r}")
        return tuple(axis) if len(axis) > 1 else axis[0]
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise ValueError(f"{cls}: axis must be an int or a list of ints, got {axis!r}")
    return axis


def _number(value, what, cls, lo=None, hi=None):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{cls}: {what} must be a number, got {value!r}") from None
    if v != v or (lo is not None and v < lo) or (hi is not None and v > hi):
        bounds = f" in [{lo}, {hi}]" if hi is not None else f" >= {lo}"
        raise ValueError(f"{cls}: {what} must be a number{bounds}, got {value!r}")
    return v


def _norms(w, axis):
    return ops.sqrt(ops.sum(ops.square(w), axis=axis, keepdims=True))


class Constraint:
    """Base class: ``__call__(w)`` returns the constrained value (a Tensor like ``w``)."""

    def __call__(self, w):
        return w

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class MaxNorm(Constraint):
    """Each slice along ``axis`` with an L2 norm above ``max_value`` is scaled down to it."""

    def __init__(self, max_value=2, axis=0):
        self.max_value = _number(max_value, "max_value", "MaxNorm", lo=0.0)
        self.axis = _axis(axis, "MaxNorm")

    def __call__(self, w):
        norms = _norms(w, self.axis)
        desired = ops.clip(norms, 0.0, self.max_value)
        return w * (desired / (norms + _EPSILON))

    def get_config(self):
        return {"max_value": self.max_value, "axis": list(self.axis) if isinstance(self.axis, tuple) else self.axis}


class NonNeg(Constraint):
    """Negative entries become 0."""

    def __call__(self, w):
        return w * ops.cast(ops.greater_equal(w, 0.0), w.dtype)


class UnitNorm(Constraint):
    """Each slice along ``axis`` is scaled to L2 norm 1."""

    def __init__(self, axis=0):
        self.axis = _axis(axis, "UnitNorm")

    def __call__(self, w):
        return w / (_norms(w, self.axis) + _EPSILON)

    def get_config(self):
        return {"axis": list(self.axis) if isinstance(self.axis, tuple) else self.axis}


class MinMaxNorm(Constraint):
    """Each slice's L2 norm moves ``rate`` of the way into ``[min_value, max_value]``."""

    def __init__(self, min_value=0.0, max_value=1.0, rate=1.0, axis=0):
        self.min_value = _number(min_value, "min_value", "MinMaxNorm", lo=0.0)
        self.max_value = _number(max_value, "max_value", "MinMaxNorm", lo=0.0)
        if self.min_value > self.max_value:
            raise ValueError(f"MinMaxNorm: min_value ({min_value}) must not exceed max_value ({max_value})")
        self.rate = _number(rate, "rate", "MinMaxNorm", lo=0.0, hi=1.0)
        self.axis = _axis(axis, "MinMaxNorm")

    def __call__(self, w):
        norms = _norms(w, self.axis)
        desired = ops.clip(norms, self.min_value, self.max_value) * self.rate + norms * (1.0 - self.rate)
        return w * (desired / (norms + _EPSILON))

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value, "rate": self.rate,
                "axis": list(self.axis) if isinstance(self.axis, tuple) else self.axis}


# Keras 3's lower-case aliases are the classes themselves.
max_norm, non_neg, unit_norm, min_max_norm = MaxNorm, NonNeg, UnitNorm, MinMaxNorm

_CLASSES = {"maxnorm": MaxNorm, "nonneg": NonNeg, "unitnorm": UnitNorm, "minmaxnorm": MinMaxNorm}


def _key(name) -> str:
    return str(name).replace("_", "").lower()


def _unknown(name):
    return ValueError(f"unknown constraint {name!r}; valid names: max_norm, min_max_norm, non_neg, unit_norm "
                      f"(or MaxNorm, MinMaxNorm, NonNeg, UnitNorm)")


def get(identifier):
    """A constraint from None, an instance, a name, a ``{"class_name", "config"}`` dict or a
    callable ``w -> w``; ValueError for an unknown name, TypeError for anything else."""
    if identifier is None or isinstance(identifier, Constraint):
        return identifier
    if isinstance(identifier, str):
        cls = _CLASSES.get(_key(identifier))
        if cls is None:
            from .registry import custom_objects
            fn = custom_objects().get(identifier)  # a registered function, saved by its name
            if fn is None:
                raise _unknown(identifier)
            return fn() if isinstance(fn, type) else fn
        return cls()
    if isinstance(identifier, dict):
        name = identifier.get("class_name")
        cls = _CLASSES.get(_key(name))
        if cls is None:
            from .registry import custom_objects
            cls = custom_objects().get(name)
            if cls is None:
                raise _unknown(name)
        return cls.from_config(dict(identifier.get("config") or {}))
    if isinstance(identifier, type) and issubclass(identifier, Constraint):
        return identifier()
    if callable(identifier):
        return identifier
    raise TypeError(f"a constraint must be a name, a config dict or a callable w -> w, got "
                    f"{type(identifier).__name__} {identifier!r}")


def serialize(constraint):
    """``{"class_name", "config"}`` of a Constraint (a registered function: its name)."""
    if constraint is None:
        return None
    if isinstance(constraint, Constraint) or hasattr(constraint, "get_config"):
        return {"class_name": type(constraint).__name__, "config": constraint.get_config()}
    return getattr(constraint, "__name__", type(constraint).__name__)


deserialize = get
