"""Depthwise and depthwise-separable 2-D convolutions (NHWC), as in Keras 3 and TF.js.

DepthwiseConv2D: kernel ``depthwise_kernel`` [kh, kw, C, depth_multiplier], bias [C*depth_multiplier].
SeparableConv2D: that depthwise step (no bias), then a 1x1 convolution ``pointwise_kernel``
[1, 1, C*depth_multiplier, filters] with bias [filters].
"""
from __future__ import annotations

from .. import activations, initializers, ops, regularizers
from ..backends.base import conv_output_size
from .base import InputSpec
from .core import _FUSED
from ._utils import (WeightedLayer, act_config, constraint_config, constraint_get, init_config, reg_config,
                     set_conv2d_geometry, shape_error)


def _positive_int(value, what, cls):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{cls}: {what} must be a positive int, got {value!r}")
    return value


class _DepthwiseBase(WeightedLayer):
    def __init__(self, kernel_size, strides, padding, depth_multiplier, data_format, dilation_rate,
                 activation, use_bias, depthwise_initializer, bias_initializer, depthwise_regularizer,
                 bias_regularizer, activity_regularizer, depthwise_constraint, bias_constraint, **kwargs):
        super().__init__(**kwargs)
        cls = type(self).__name__
        self.depth_multiplier = _positive_int(depth_multiplier, "depth_multiplier", cls)
        set_conv2d_geometry(self, kernel_size, strides, padding, data_format, dilation_rate)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.depthwise_initializer = initializers.get(depthwise_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.depthwise_regularizer = regularizers.get(depthwise_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.depthwise_constraint = constraint_get(depthwise_constraint, cls, "depthwise_constraint")
        self.bias_constraint = constraint_get(bias_constraint, cls, "bias_constraint")
        self._setup_activity(activity_regularizer)
        self.input_spec = InputSpec(ndim=4)
        self.depthwise_kernel = self.bias = None

    def _out_hw(self, input_shape):
        out = []
        for i in (0, 1):
            n = input_shape[1 + i]
            if n is None:
                out.append(None)
                continue
            try:
                out.append(conv_output_size(n, self.kernel_size[i], self.strides[i], self.dilation_rate[i],
                                            self.padding)[0])
            except ValueError as e:
                raise shape_error(self, f"kernel_size {self.kernel_size} does not fit the input ({e})",
                                  input_shape) from None
        return out

    def _build_depthwise(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise shape_error(self, "the channel axis (last) of the input must have a known size", input_shape)
        self._out_hw(input_shape)  # the window must fit
        self.depthwise_kernel = self.add_weight(
            "depthwise_kernel", (*self.kernel_size, channels, self.depth_multiplier), self.depthwise_initializer,
            self.depthwise_regularizer, constraint=self.depthwise_constraint)
        self.input_spec = InputSpec(ndim=4, axes={-1: channels})
        return channels

    def _depthwise(self, x):
        return ops.depthwise_conv2d(x, self.depthwise_kernel, self.strides, self.padding, self.dilation_rate)

    def get_config(self):
        return {**super().get_config(), "kernel_size": list(self.kernel_size), "strides": list(self.strides),
                "padding": self.padding, "depth_multiplier": self.depth_multiplier,
                "data_format": self.data_format, "dilation_rate": list(self.dilation_rate),
                "activation": act_config(self.activation), "use_bias": self.use_bias,
                "depthwise_initializer": init_config(self.depthwise_initializer),
                "bias_initializer": init_config(self.bias_initializer),
                "depthwise_regularizer": reg_config(self.depthwise_regularizer),
                "bias_regularizer": reg_config(self.bias_regularizer),
                "activity_regularizer": reg_config(self.activity_regularizer),
                "depthwise_constraint": constraint_config(self.depthwise_constraint),
                "bias_constraint": constraint_config(self.bias_constraint)}


class DepthwiseConv2D(_DepthwiseBase):
    """Each input channel convolved with its own ``depth_multiplier`` filters: [N, H, W, C] ->
    [N, Ho, Wo, C*depth_multiplier] (channel ``c*depth_multiplier + m``, as Keras and TF.js).

    Raises ValueError (naming the layer) for a depth_multiplier that is not a positive int, and
    for a window that does not fit the input.
    """

    def __init__(self, kernel_size, strides=(1, 1), padding="valid", depth_multiplier=1, data_format=None,
                 dilation_rate=(1, 1), activation=None, use_bias=True, depthwise_initializer="glorot_uniform",
                 bias_initializer="zeros", depthwise_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, depthwise_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(kernel_size, strides, padding, depth_multiplier, data_format, dilation_rate, activation,
                         use_bias, depthwise_initializer, bias_initializer, depthwise_regularizer,
                         bias_regularizer, activity_regularizer, depthwise_constraint, bias_constraint, **kwargs)

    def build(self, input_shape):
        channels = self._build_depthwise(input_shape)
        if self.use_bias:
            self.bias = self.add_weight("bias", (channels * self.depth_multiplier,), self.bias_initializer,
                                        self.bias_regularizer, constraint=self.bias_constraint)
        self.built = True

    def call(self, inputs):
        y = self._depthwise(self._cast_in(inputs))
        if self.bias is not None:
            y = y + self.bias
        return self._activity(self.activation(y))

    @property
    def kernel(self):
        """Keras 3's name for ``depthwise_kernel``."""
        return self.depthwise_kernel

    def compute_output_shape(self, input_shape):
        ho, wo = self._out_hw(input_shape)
        c = input_shape[-1]
        return (input_shape[0], ho, wo, None if c is None else c * self.depth_multiplier)


class SeparableConv2D(_DepthwiseBase):
    """A depthwise convolution then a 1x1 convolution to ``filters`` channels:
    [N, H, W, C] -> [N, Ho, Wo, filters]; the bias and activation follow the 1x1 step.

    Raises ValueError (naming the layer) for filters or depth_multiplier that are not positive
    ints, and for a window that does not fit the input.
    """

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), depth_multiplier=1, activation=None, use_bias=True,
                 depthwise_initializer="glorot_uniform", pointwise_initializer="glorot_uniform",
                 bias_initializer="zeros", depthwise_regularizer=None, pointwise_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, depthwise_constraint=None,
                 pointwise_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(kernel_size, strides, padding, depth_multiplier, data_format, dilation_rate, activation,
                         use_bias, depthwise_initializer, bias_initializer, depthwise_regularizer,
                         bias_regularizer, activity_regularizer, depthwise_constraint, bias_constraint, **kwargs)
        cls = type(self).__name__
        self.filters = _positive_int(filters, "filters", cls)
        self.pointwise_initializer = initializers.get(pointwise_initializer)
        self.pointwise_regularizer = regularizers.get(pointwise_regularizer)
        self.pointwise_constraint = constraint_get(pointwise_constraint, cls, "pointwise_constraint")
        self.pointwise_kernel = None

    def build(self, input_shape):
        channels = self._build_depthwise(input_shape)
        self.pointwise_kernel = self.add_weight(
            "pointwise_kernel", (1, 1, channels * self.depth_multiplier, self.filters), self.pointwise_initializer,
            self.pointwise_regularizer, constraint=self.pointwise_constraint)
        if self.use_bias:
            self.bias = self.add_weight("bias", (self.filters,), self.bias_initializer, self.bias_regularizer,
                                        constraint=self.bias_constraint)
        self.built = True

    def call(self, inputs):
        y = self._depthwise(self._cast_in(inputs))
        act = _FUSED.get(self.activation, False)
        if act is not False:  # the 1x1 step, its bias and activation as one op
            return self._activity(ops.conv2d_bias_act(y, self.pointwise_kernel, self.bias, act))
        y = ops.conv2d(y, self.pointwise_kernel)
        if self.bias is not None:
            y = y + self.bias
        return self._activity(self.activation(y))

    def compute_output_shape(self, input_shape):
        ho, wo = self._out_hw(input_shape)
        return (input_shape[0], ho, wo, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "pointwise_initializer": init_config(self.pointwise_initializer),
                "pointwise_regularizer": reg_config(self.pointwise_regularizer),
                "pointwise_constraint": constraint_config(self.pointwise_constraint)}
