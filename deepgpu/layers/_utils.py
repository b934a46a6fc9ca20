"""Helpers shared by the layer modules: argument normalization and config pieces."""
from __future__ import annotations

import threading

from .. import activations, initializers, ops, regularizers
from ._autocast import float32_statistics
from .base import Layer, fmt_shape


def pair(value, what, layer_cls):
    """An int or a pair of ints as a tuple of two positive ints; ValueError naming the layer."""
    if isinstance(value, int) and not isinstance(value, bool):
        t = (value, value)
    else:
        try:
            t = tuple(int(v) for v in value)
        except (TypeError, ValueError):
            t = ()
    if len(t) != 2 or min(t) < 1:
        raise ValueError(f"{layer_cls}: {what} must be a positive int or a pair of positive ints, got {value!r}")
    return t


def padding_arg(padding, layer_cls):
    p = padding.lower() if isinstance(padding, str) else padding
    if p not in ("valid", "same"):
        raise ValueError(f"{layer_cls}: padding must be 'valid' or 'same', got {padding!r}")
    return p


def channels_last(data_format, layer_cls):
    df = (data_format or "channels_last")
    if df == "channels_first":
        raise ValueError(
            f"{layer_cls}: data_format='channels_first' is not supported; deepgpu images are NHWC "
            f"(channels_last), as TF.js and Keras on the CPU")
    if df != "channels_last":
        raise ValueError(f"{layer_cls}: data_format must be 'channels_last', got {data_format!r}")
    return "channels_last"



def set_conv2d_geometry(layer, kernel_size, strides, padding, data_format, dilation_rate):
    """Check and set a 2-D convolution's kernel_size, strides, padding, data_format, dilation_rate.

    Raises ValueError naming the layer class for a bad value, or for strides and dilation both > 1.
    """
    cls = type(layer).__name__
    layer.kernel_size = pair(kernel_size, "kernel_size", cls)
    layer.strides = pair(strides, "strides", cls)
    layer.padding = padding_arg(padding, cls)
    layer.data_format = channels_last(data_format, cls)
    layer.dilation_rate = pair(dilation_rate, "dilation_rate", cls)
    if max(layer.strides) > 1 and max(layer.dilation_rate) > 1:
        raise ValueError(f"{cls}: strides > 1 together with dilation_rate > 1 is not supported (as in Keras)")

def constraint_config(c):
    from .. import constraints
    return constraints.serialize(c)


def constraint_get(c, layer_cls, what):
    """``c`` as a constraint (deepgpu.constraints.get: a name, a config dict, an instance, a
    callable); ValueError naming the layer and the argument otherwise."""
    from .. import constraints
    try:
        return constraints.get(c)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{layer_cls}: {what}: {e}") from None


def shape_error(layer, what, input_shape):
    return ValueError(f"layer {layer.name!r} ({type(layer).__name__}): {what}; "
                      f"received input shape {fmt_shape(input_shape)}")


class _ActivityState(threading.local):
    """A layer's activity penalty from its last call, per thread: evaluate in one thread must not read
    the penalty of a predict running in another."""

    # A class default, so that a layer without a penalty reads () without an AttributeError (a
    # threading.local raises and formats one for a missing name, and every training step asks).
    losses = ()


class WeightedLayer(Layer):
    """A layer with initializers/regularizers, an optional activity regularizer,
    and float inputs cast to its dtype."""

    def _setup_activity(self, activity_regularizer):
        self.activity_regularizer = regularizers.get(activity_regularizer)
        self._activity_state = _ActivityState()

    def _activity(self, y):
        if self.activity_regularizer is not None:
            penalty = self.activity_regularizer(y)
            if y.ndim and y.shape[0]:
                # Divided by the batch size, as Keras 3 does: the strength does
                # not depend on the batch size.
                penalty = penalty / float(y.shape[0])
            self._activity_state.losses = [penalty]
        return y

    def _own_losses(self):
        state = getattr(self, "_activity_state", None)
        return Layer._own_losses(self) + list(getattr(state, "losses", ()))

    def _cast_in(self, x):
        # The compute dtype (float16 under mixed_float16), but the variable dtype for the
        # normalizations, whose statistics are float32 under a mixed policy (layers/_autocast.py).
        policy = self._dtype_policy  # its fields, not the layer's properties: every call passes here
        dtype = policy._compute_dtype
        if dtype != policy._variable_dtype and float32_statistics(self):  # only a mixed policy looks further
            dtype = policy._variable_dtype
        return x if x.dtype == dtype else ops.cast(x, dtype)


def act_config(fn):
    return activations.serialize(fn)


def init_config(init):
    return initializers.serialize(init)


def reg_config(reg):
    return regularizers.serialize(reg)


def single(value, what, layer_cls, allow_zero=False):
    """An int or a one-element list of ints (TF.js and Keras write ``[3]``) as a positive int."""
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    lo = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        kind = "an int >= 0" if allow_zero else "a positive int"
        raise ValueError(f"{layer_cls}: {what} must be {kind} or a list of one, got {value!r}")
    return value
