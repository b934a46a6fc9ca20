"""Weight regularizers: a penalty (scalar Tensor) added to the loss.

``L1(l1)``: ``l1 * sum(|w|)``; ``L2(l2)``: ``l2 * sum(w**2)`` (Keras: no 1/2);
``L1L2(l1, l2)``: both. ``get`` takes an instance, a callable, a name
(``"l1"``, ``"l2"``, ``"l1_l2"``, TF.js ``"l1l2"``) or a
``{"class_name", "config"}`` dict.
"""
from __future__ import annotations

from . import ops


class Regularizer:
    def __call__(self, x):
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _check(name, v):
    v = float(v)
    if v < 0:
        raise ValueError(f"regularization factor {name} must be non-negative, got {v}")
    return v


class L1L2(Regularizer):
    """``l1 * sum(|x|) + l2 * sum(x**2)``."""

    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = _check("l1", l1)
        self.l2 = _check("l2", l2)

    def __call__(self, x):
        out = None
        if self.l1:
            out = ops.sum(ops.abs(x)) * self.l1
        if self.l2:
            t = ops.sum(ops.square(x)) * self.l2
            out = t if out is None else out + t
        if out is None:
            out = ops.sum(x) * 0.0
        return out

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


class L1(L1L2):
    """``l1 * sum(|x|)``."""

    def __init__(self, l1=0.01):
        super().__init__(l1=l1)

    def get_config(self):
        return {"l1": self.l1}


class L2(L1L2):
    """``l2 * sum(x**2)``."""

    def __init__(self, l2=0.01):
        super().__init__(l2=l2)

    def get_config(self):
        return {"l2": self.l2}


# Keras's lowercase spellings.
l1 = L1
l2 = L2


def l1_l2(l1=0.01, l2=0.01):
    """tf.keras's ``l1_l2``: an L1L2 with both factors (0.01 each by default)."""
    return L1L2(l1=l1, l2=l2)


_BY_NAME = {"L1": L1, "L2": L2, "L1L2": L1L2, "l1": L1, "l2": L2, "l1_l2": l1_l2, "l1l2": l1_l2,
            "L1l2": L1L2}


def get(identifier):
    """A regularizer from None, an instance, a callable, a name or a config dict."""
    if identifier is None:
        return None
    if isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, dict):
        name = identifier.get("class_name")
        cls = {"L1": L1, "L2": L2, "L1L2": L1L2, "L1l2": L1L2, "l1": L1, "l2": L2,
               "l1_l2": L1L2, "l1l2": L1L2}.get(name)
        if cls is None:
            raise ValueError(f"unknown regularizer {name!r}; valid names are: {', '.join(sorted(_BY_NAME))}")
        return cls.from_config(dict(identifier.get("config") or {}))
    if isinstance(identifier, str):
        fn = _BY_NAME.get(identifier)
        if fn is None:
            raise ValueError(f"unknown regularizer {identifier!r}; valid names are: {', '.join(sorted(_BY_NAME))}")
        return fn()
    if callable(identifier):
        return identifier
    raise TypeError(f"a regularizer must be a name, a dict or a callable, got {type(identifier).__name__}")


def serialize(regularizer):
    if regularizer is None:
        return None
    if isinstance(regularizer, Regularizer):
        return {"class_name": type(regularizer).__name__, "config": regularizer.get_config()}
    return {"class_name": getattr(regularizer, "__name__", type(regularizer).__name__), "config": {}}


def deserialize(config):
    return get(config)
