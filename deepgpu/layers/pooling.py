"""Pooling layers (NHWC): MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D."""
from __future__ import annotations

from .. import ops
from ..backends.base import conv_output_size
from .base import InputSpec, Layer
from .embedding import step_mask
from ._utils import channels_last, pair, padding_arg, shape_error, single


class _Pooling2D(Layer):
    _op = None

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(**kwargs)
        cls = type(self).__name__
        self.pool_size = pair(pool_size, "pool_size", cls)
        self.strides = self.pool_size if strides is None else pair(strides, "strides", cls)
        self.padding = padding_arg(padding, cls)
        self.data_format = channels_last(data_format, cls)
        self.input_spec = InputSpec(ndim=4)

    def build(self, input_shape):
        self.compute_output_shape(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        out = []
        for i in (0, 1):
            n = input_shape[1 + i]
            if n is None:
                out.append(None)
                continue
            try:
                out.append(conv_output_size(n, self.pool_size[i], self.strides[i], 1, self.padding)[0])
            except ValueError:
                raise shape_error(self, f"pool_size {self.pool_size} does not fit the input with "
                                        f"padding {self.padding!r}", input_shape) from None
        return (input_shape[0], out[0], out[1], input_shape[3])

    def call(self, inputs):
        return type(self)._op(inputs, self.pool_size, self.strides, self.padding)

    def get_config(self):
        return {**super().get_config(), "pool_size": list(self.pool_size), "strides": list(self.strides),
                "padding": self.padding, "data_format": self.data_format}


class MaxPooling2D(_Pooling2D):
    """The maximum over each ``pool_size`` window; strides default to the pool size."""
    _op = staticmethod(ops.max_pool2d)


class AveragePooling2D(_Pooling2D):
    """The mean over each ``pool_size`` window (padded cells are not counted)."""
    _op = staticmethod(ops.avg_pool2d)


class _GlobalPooling2D(Layer):
    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self.data_format = channels_last(data_format, type(self).__name__)
        self.keepdims = bool(keepdims)
        self.input_spec = InputSpec(ndim=4)

    def compute_output_shape(self, input_shape):
        if self.keepdims:
            return (input_shape[0], 1, 1, input_shape[3])
        return (input_shape[0], input_shape[3])

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format, "keepdims": self.keepdims}


class GlobalAveragePooling2D(_GlobalPooling2D):
    """[N, H, W, C] -> [N, C] (or [N, 1, 1, C] with keepdims): the mean over H and W."""

    def call(self, inputs):
        return ops.mean(inputs, (1, 2), keepdims=self.keepdims)


class GlobalMaxPooling2D(_GlobalPooling2D):
    """[N, H, W, C] -> [N, C] (or [N, 1, 1, C] with keepdims): the maximum over H and W."""

    def call(self, inputs):
        return ops.max(inputs, (1, 2), keepdims=self.keepdims)


MaxPool2D = MaxPooling2D
AvgPool2D = AveragePooling2D
GlobalAvgPool2D = GlobalAveragePooling2D
GlobalMaxPool2D = GlobalMaxPooling2D


# ------------------------------------------------------------------ 1-D (issue 16)
class _Pooling1D(Layer):
    """[N, steps, C] pooled along steps through the 2-D pool over a unit height axis (views, no copy)."""

    _op = None

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(**kwargs)
        cls = type(self).__name__
        self.pool_size = (single(pool_size, "pool_size", cls),)
        self.strides = self.pool_size if strides is None else (single(strides, "strides", cls),)
        self.padding = padding_arg(padding, cls)
        self.data_format = channels_last(data_format, cls)
        self.input_spec = InputSpec(ndim=3)

    def build(self, input_shape):
        self.compute_output_shape(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        n = input_shape[1]
        if n is not None:
            try:
                n = conv_output_size(n, self.pool_size[0], self.strides[0], 1, self.padding)[0]
            except ValueError:
                raise shape_error(self, f"pool_size {self.pool_size[0]} does not fit the input with "
                                        f"padding {self.padding!r}", input_shape) from None
        return (input_shape[0], n, input_shape[2])

    def call(self, inputs):
        y = type(self)._op(ops.expand_dims(inputs, 1), (1, self.pool_size[0]), (1, self.strides[0]), self.padding)
        return ops.reshape(y, (y.shape[0], y.shape[2], y.shape[3]))

    def get_config(self):
        return {**super().get_config(), "pool_size": list(self.pool_size), "strides": list(self.strides),
                "padding": self.padding, "data_format": self.data_format}


class MaxPooling1D(_Pooling1D):
    """[N, steps, C]: the maximum over each ``pool_size`` window of steps; strides default to the pool size."""
    _op = staticmethod(ops.max_pool2d)


class AveragePooling1D(_Pooling1D):
    """[N, steps, C]: the mean over each ``pool_size`` window of steps (padded steps are not counted)."""
    _op = staticmethod(ops.avg_pool2d)


class _GlobalPooling1D(Layer):
    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self.data_format = channels_last(data_format, type(self).__name__)
        self.keepdims = bool(keepdims)
        self.input_spec = InputSpec(ndim=3)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1, input_shape[2]) if self.keepdims else (input_shape[0], input_shape[2])

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format, "keepdims": self.keepdims}


class GlobalAveragePooling1D(_GlobalPooling1D):
    """[N, steps, C] -> [N, C] (or [N, 1, C] with keepdims): the mean over the steps.

    With a mask [N, steps] (from Embedding(mask_zero=True) or Masking), the
    mean over the unmasked steps only, as in Keras; the output has no mask.
    """

    def call(self, inputs, mask=None):
        if mask is None:
            return ops.mean(inputs, 1, keepdims=self.keepdims)
        keep = step_mask(self, mask, inputs)
        keep = keep if keep.ndim == 3 else ops.expand_dims(keep, 2)
        total = ops.sum(ops.where(keep, inputs, 0.0), 1, keepdims=self.keepdims)
        return total / ops.sum(ops.cast(keep, inputs.dtype), 1, keepdims=self.keepdims)

    def compute_mask(self, inputs, previous_mask=None):
        return None


class GlobalMaxPooling1D(_GlobalPooling1D):
    """[N, steps, C] -> [N, C] (or [N, 1, C] with keepdims): the maximum over the steps."""

    def call(self, inputs):
        return ops.max(inputs, 1, keepdims=self.keepdims)


MaxPool1D = MaxPooling1D
AvgPool1D = AveragePooling1D
GlobalAvgPool1D = GlobalAveragePooling1D
GlobalMaxPool1D = GlobalMaxPooling1D
