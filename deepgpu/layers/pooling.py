"""Pooling layers (NHWC): MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D."""
from __future__ import annotations

from .. import ops
from ..backends.base import conv_output_size
from .base import InputSpec, Layer
from ._utils import channels_last, pair, padding_arg, shape_error


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
