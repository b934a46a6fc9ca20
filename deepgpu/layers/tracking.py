"""Automatic tracking of the layers (and metrics) a layer or model holds as attributes.

Keras tracks what ``__setattr__`` stores; here the attributes are read when
asked, in the order they were first set, so a layer appended to a list after
the assignment (``self.blocks.append(Dense(4))``) is found as well. Lists,
tuples and dicts (their values, in insertion order) are searched, nested too.
"""
from __future__ import annotations

# Attributes that hold layers the object does not own (graph bookkeeping).
_NOT_OWNED = frozenset({"_inbound_nodes", "_last_layer", "_graph_layers", "_input_layer", "_model_ref",
                        "_tracked_layers", "_stack", "_chain"})


# Values that never hold a layer: skipped without a call (a layer's attributes are mostly these,
# and Model.losses walks every layer's attributes at each training step).
_LEAVES = frozenset({int, float, str, bool, type(None), bytes, complex})


def _walk(value, want, out, seen, depth=0):
    if depth > 8:
        return
    if isinstance(value, want):
        if id(value) not in seen:
            seen.add(id(value))
            out.append(value)
        return
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        for v in value:
            if type(v) not in _LEAVES:
                _walk(v, want, out, seen, depth + 1)


def tracked(obj, want, public_only=False) -> list:
    """Instances of ``want`` held by ``obj``'s attributes (directly or in lists / tuples / dicts),
    each once, in attribute order; ``obj`` itself is never listed."""
    out, seen = [], {id(obj)}
    for key, value in vars(obj).items():
        if type(value) in _LEAVES or key in _NOT_OWNED or (public_only and key.startswith("_")):
            continue
        _walk(value, want, out, seen)
    return out


def tracked_layers(obj) -> list:
    """The layers ``obj`` holds as attributes (see ``tracked``)."""
    from .base import Layer
    return tracked(obj, Layer)
