"""What a layer's dtype policy does around its ``call`` (Keras 3's autocasting).

Under a policy that computes in 16 bits (and whenever a 16-bit float reaches a
layer of another policy) ``Layer.__call__`` asks ``plan`` what to do:

* floating inputs are cast to the compute dtype (integer inputs are left alone);
* the layer's float variables (and those of the sublayers it owns) are read
  cast to their layer's compute dtype for the duration of ``call``: the
  attributes that hold them are swapped for ``ops.cast`` of them, which is
  differentiable, so gradients reach the float32 variables in float32.
  Variables created with ``autocast=False``, or as non-trainable state (moving
  statistics, counters, which ``call`` may update in place), stay as they are;
* floating outputs come out in the compute dtype.

A layer class with ``_float32_statistics = True`` (BatchNormalization,
LayerNormalization, GroupNormalization, RMSNormalization and so their
subclasses, as Keras computes them) takes its inputs in float32 and reads its float32 variables
unchanged; only its outputs are cast to the compute dtype.
"""
from __future__ import annotations

from ..tensor import Tensor, Variable

_HALF = ("float16", "bfloat16")
# Attributes that list a layer's weights for bookkeeping: never swapped.
_KEEP = frozenset({"_weights", "_regularizers", "_inbound_nodes", "_train_vars", "_ema_vars"})


def float32_statistics(layer) -> bool:
    """Whether ``layer`` normalizes in float32 under a 16-bit policy (see the module docstring)."""
    return getattr(layer, "_float32_statistics", False)


def _float(dtype) -> bool:
    return dtype.startswith(("float", "bfloat"))


def _any_half(inputs) -> bool:
    if isinstance(inputs, (list, tuple)):
        return any(isinstance(i, Tensor) and i.dtype in _HALF for i in inputs)
    return isinstance(inputs, Tensor) and inputs.dtype in _HALF


def plan(layer, inputs):
    """None when the call needs no casting (no 16-bit float in sight), else
    ``(input dtype, cast variables?, output dtype or None to leave the outputs)``."""
    policy = layer._dtype_policy
    compute = policy._compute_dtype
    if compute not in _HALF:
        # One tensor (each layer of a Sequential) is the common case: one dtype lookup, no call.
        half_in = inputs.dtype in _HALF if type(inputs) is Tensor else _any_half(inputs)
        if not half_in:
            return None
    if not _float(compute):
        return None
    if float32_statistics(layer):
        return "float32", False, compute
    if hasattr(layer, "_subclassed"):
        if not layer._subclassed():
            return None  # a functional / Sequential model: each of its layers casts for itself
        # A subclassed model: inputs and its own variables as a layer's; its outputs are its
        # layers' (a float32 softmax stays float32), as Keras.
        return compute, compute != policy._variable_dtype, None
    return compute, compute != policy._variable_dtype, compute


def cast_tree(x, dtype):
    """``x`` (a Tensor or a list of them) with floating Tensors cast to ``dtype``, masks kept."""
    if dtype is None:
        return x
    if isinstance(x, (list, tuple)):
        return type(x)(cast_tree(i, dtype) for i in x)
    if not isinstance(x, Tensor) or x.dtype == dtype or not _float(x.dtype):
        return x
    from .. import ops
    if dtype == "bfloat16" and x._backend.name == "cuda":
        from ..backends.half import check_cupy_bfloat16
        check_cupy_bfloat16()
    y = ops.cast(x, dtype)
    mask = getattr(x, "_keras_mask", None)
    if mask is not None:
        y._keras_mask = mask
    return y


def _casts(v) -> bool:
    return isinstance(v, Variable) and getattr(v, "_autocast", getattr(v, "_user_trainable", True))


def _swap_layer(layer, swapped):
    """Swap ``layer``'s autocast variables for casts to its compute dtype; record what to restore."""
    policy = getattr(layer, "_dtype_policy", None)
    if policy is None or policy._compute_dtype == policy._variable_dtype or \
            float32_statistics(layer) or not _float(policy._compute_dtype):
        return
    dtype = policy._compute_dtype
    d = layer.__dict__
    for key, value in list(d.items()):
        if key in _KEEP:
            continue
        if _casts(value):
            if value.dtype != dtype and _float(value.dtype):
                swapped.append((d, key, value))
                d[key] = cast_tree(value, dtype)
        elif isinstance(value, (list, tuple)) and value and any(_casts(v) for v in value):
            swapped.append((d, key, value))
            d[key] = type(value)(cast_tree(v, dtype) if _casts(v) else v for v in value)


def swap_variables(layer) -> list:
    """Swap the autocast variables of ``layer`` and of the layers it owns (not of a model's
    layers (models have ``_subclassed``), which cast for themselves when called). Returns
    the list ``restore`` takes."""
    swapped = []
    todo = [layer]
    seen = set()
    while todo:
        cur = todo.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        _swap_layer(cur, swapped)
        if not hasattr(cur, "_subclassed"):  # a model's layers are called, not read
            todo.extend(cur._sublayers())
    return swapped


def restore(swapped) -> None:
    for d, key, value in reversed(swapped):
        d[key] = value
