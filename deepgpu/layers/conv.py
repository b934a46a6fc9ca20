"""Convolution layers (NHWC): Conv2D and Conv2DTranspose."""
from __future__ import annotations

from .. import activations, initializers, ops, regularizers
from ..backends.base import conv_output_size
from .base import InputSpec
from .core import _FUSED
from ._utils import (WeightedLayer, act_config, channels_last, constraint_config, constraint_get,
                     init_config, pair, padding_arg, reg_config, shape_error)


class _Conv(WeightedLayer):
    _transpose = False

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(**kwargs)
        cls = type(self).__name__
        if isinstance(filters, bool) or not isinstance(filters, int) or filters <= 0:
            raise ValueError(f"{cls}: filters must be a positive int, got {filters!r}")
        self.filters = filters
        self.kernel_size = pair(kernel_size, "kernel_size", cls)
        self.strides = pair(strides, "strides", cls)
        self.padding = padding_arg(padding, cls)
        self.data_format = channels_last(data_format, cls)
        self.dilation_rate = pair(dilation_rate, "dilation_rate", cls)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(f"{cls}: strides > 1 together with dilation_rate > 1 is not supported (as in Keras)")
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraint_get(kernel_constraint, cls, "kernel_constraint")
        self.bias_constraint = constraint_get(bias_constraint, cls, "bias_constraint")
        self._setup_activity(activity_regularizer)
        self.input_spec = InputSpec(ndim=4)
        self.kernel = self.bias = None

    def _kernel_shape(self, channels):
        kh, kw = self.kernel_size
        return (kh, kw, self.filters, channels) if self._transpose else (kh, kw, channels, self.filters)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise shape_error(self, "the channel axis (last) of the input must have a known size", input_shape)
        self.compute_output_shape(input_shape)  # the window must fit
        self.kernel = self.add_weight("kernel", self._kernel_shape(channels), self.kernel_initializer,
                                      self.kernel_regularizer, constraint=self.kernel_constraint)
        if self.use_bias:
            self.bias = self.add_weight("bias", (self.filters,), self.bias_initializer,
                                        self.bias_regularizer, constraint=self.bias_constraint)
        self.input_spec = InputSpec(ndim=4, axes={-1: channels})
        self.built = True

    def _finish(self, y):
        if self.bias is not None:
            y = y + self.bias
        return self._activity(self.activation(y))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": list(self.kernel_size), "strides": list(self.strides),
                "padding": self.padding, "data_format": self.data_format,
                "dilation_rate": list(self.dilation_rate),
                "activation": act_config(self.activation), "use_bias": self.use_bias,
                "kernel_initializer": init_config(self.kernel_initializer),
                "bias_initializer": init_config(self.bias_initializer),
                "kernel_regularizer": reg_config(self.kernel_regularizer),
                "bias_regularizer": reg_config(self.bias_regularizer),
                "activity_regularizer": reg_config(self.activity_regularizer),
                "kernel_constraint": constraint_config(self.kernel_constraint),
                "bias_constraint": constraint_config(self.bias_constraint)}


class Conv2D(_Conv):
    """2-D convolution over NHWC inputs; kernel [kh, kw, in, filters], bias [filters]."""

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), groups=1, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, **kwargs):
        if groups != 1:
            raise ValueError(f"Conv2D: groups={groups!r} is not supported (only 1)")
        self.groups = 1
        super().__init__(filters, kernel_size, strides, padding, data_format, dilation_rate, activation,
                         use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                         bias_regularizer, activity_regularizer, kernel_constraint, bias_constraint,
                         **kwargs)

    def call(self, inputs):
        x = self._cast_in(inputs)
        act = _FUSED.get(self.activation, False)
        if act is not False:  # one op: the backend adds the bias and activates in cache
            return self._activity(ops.conv2d_bias_act(x, self.kernel, self.bias, act, self.strides,
                                                      self.padding, self.dilation_rate))
        y = ops.conv2d(x, self.kernel, self.strides, self.padding, self.dilation_rate)
        return self._finish(y)

    def compute_output_shape(self, input_shape):
        out = []
        for i in (0, 1):
            n = input_shape[1 + i]
            if n is None:
                out.append(None)
                continue
            try:
                out.append(conv_output_size(n, self.kernel_size[i], self.strides[i],
                                            self.dilation_rate[i], self.padding)[0])
            except ValueError as e:
                raise shape_error(self, f"kernel_size {self.kernel_size} does not fit the input ({e})",
                                  input_shape) from None
        return (input_shape[0], out[0], out[1], self.filters)

    def get_config(self):
        cfg = super().get_config()
        cfg["groups"] = self.groups
        return cfg


def deconv_output_length(n, k, stride, padding, output_padding, dilation):
    """Keras's output length of a transposed convolution along one axis."""
    if n is None:
        return None
    k = k + (k - 1) * (dilation - 1)
    if output_padding is None:
        return n * stride + max(k - stride, 0) if padding == "valid" else n * stride
    pad = k // 2 if padding == "same" else 0
    return (n - 1) * stride + k - 2 * pad + output_padding


class Conv2DTranspose(_Conv):
    """Transposed 2-D convolution (NHWC); kernel [kh, kw, filters, in] as in Keras."""

    _transpose = True

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", output_padding=None,
                 data_format=None, dilation_rate=(1, 1), activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(filters, kernel_size, strides, padding, data_format, dilation_rate, activation,
                         use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                         bias_regularizer, activity_regularizer, kernel_constraint, bias_constraint,
                         **kwargs)
        if output_padding is None:
            self.output_padding = None
        else:
            try:
                op = (output_padding,) * 2 if isinstance(output_padding, int) else tuple(
                    int(v) for v in output_padding)
            except (TypeError, ValueError):
                op = ()
            if len(op) != 2 or min(op) < 0:
                raise ValueError(
                    f"Conv2DTranspose: output_padding must be None, an int or a pair of ints >= 0, "
                    f"got {output_padding!r}")
            for o, s in zip(op, self.strides):
                if o >= s:
                    raise ValueError(
                        f"Conv2DTranspose: output_padding {op} must be smaller than strides {self.strides}")
            self.output_padding = op

    def _out_hw(self, h, w):
        op = self.output_padding or (None, None)
        return tuple(deconv_output_length(n, self.kernel_size[i], self.strides[i], self.padding, op[i],
                                          self.dilation_rate[i]) for i, n in enumerate((h, w)))

    def call(self, inputs):
        x = self._cast_in(inputs)
        ho, wo = self._out_hw(x.shape[1], x.shape[2])
        y = ops.conv2d_transpose(x, self.kernel, (x.shape[0], ho, wo, self.filters), self.strides,
                                 self.padding, self.dilation_rate)
        return self._finish(y)

    def compute_output_shape(self, input_shape):
        ho, wo = self._out_hw(input_shape[1], input_shape[2])
        return (input_shape[0], ho, wo, self.filters)

    def get_config(self):
        cfg = super().get_config()
        cfg["output_padding"] = None if self.output_padding is None else list(self.output_padding)
        return cfg
