"""Convolution layers (NHWC): Conv2D and Conv2DTranspose."""
from __future__ import annotations

from .. import activations, initializers, ops, regularizers
from ..backends.base import conv_output_size
from .base import InputSpec
from .core import _FUSED
from .depthwise import DepthwiseConv2D, SeparableConv2D
from ._utils import (WeightedLayer, act_config, constraint_config, constraint_get, init_config, reg_config,
                     set_conv2d_geometry, shape_error, single)


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
        set_conv2d_geometry(self, kernel_size, strides, padding, data_format, dilation_rate)
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

    def _set_groups(self, groups):
        """Check and set ``groups``: a positive int dividing ``filters`` (the channels are checked at build)."""
        cls = type(self).__name__
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"{cls}: groups must be a positive int, got {groups!r}")
        if self.filters % groups:
            raise ValueError(f"{cls}: filters ({self.filters}) must be divisible by groups ({groups})")
        self.groups = groups

    def _check_groups(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] % self.groups:
            raise shape_error(self, f"groups={self.groups} must divide the input channels ({input_shape[-1]})",
                              input_shape)


class Conv2D(_Conv):
    """2-D convolution over NHWC inputs; kernel [kh, kw, in, filters], bias [filters]."""

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), groups=1, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(filters, kernel_size, strides, padding, data_format, dilation_rate, activation,
                         use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                         bias_regularizer, activity_regularizer, kernel_constraint, bias_constraint,
                         **kwargs)
        self._set_groups(groups)

    def _kernel_shape(self, channels):
        # Grouped: each of the `groups` filter blocks sees channels / groups inputs (Keras's layout).
        return (*self.kernel_size, channels // self.groups, self.filters)

    def build(self, input_shape):
        self._check_groups(input_shape)
        super().build(input_shape)

    def call(self, inputs):
        x = self._cast_in(inputs)
        if self.groups > 1:  # one convolution per group of channels and filters
            ys = [ops.conv2d(xi, ki, self.strides, self.padding, self.dilation_rate) for xi, ki in
                  zip(ops.split(x, self.groups, axis=3), ops.split(self.kernel, self.groups, axis=3))]
            return self._finish(ops.concat(ys, axis=3))
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


# ------------------------------------------------------------------ 1-D (issue 16)
# A 1-D convolution runs as the 2-D one over a unit height axis ([N, 1, L, C],
# kernel [1, k, in, out]): reshapes are views, and the 2-D primitives (im2col +
# one GEMM on the CPU, the tiled kernel on the GPU) already do the work.
def _conv1d_len(layer, n, k, s, d, padding, input_shape):
    if n is None:
        return None
    if padding == "causal":
        n, padding = n + (k - 1) * d, "valid"
    try:
        return conv_output_size(n, k, s, d, padding)[0]
    except ValueError as e:
        raise shape_error(layer, f"kernel_size {k} (dilation {d}) does not fit the input ({e})",
                          input_shape) from None


class Conv1D(_Conv):
    """1-D convolution over [N, steps, channels]; kernel [k, channels / groups, filters], bias [filters].

    ``padding``: "valid", "same" or "causal" (zeros on the left only, so
    output step t sees input steps <= t). ``groups`` splits the channels and
    the filters into that many independent convolutions, as in Keras.
    Raises ValueError naming the layer when the kernel does not fit the input
    or ``groups`` divides neither the channels nor ``filters``.
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1,
                 groups=1, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, **kwargs):
        cls = type(self).__name__
        k = single(kernel_size, "kernel_size", cls)
        s = single(strides, "strides", cls)
        d = single(dilation_rate, "dilation_rate", cls)
        pad = padding.lower() if isinstance(padding, str) else padding
        if pad not in ("valid", "same", "causal"):
            raise ValueError(f"{cls}: padding must be 'valid', 'same' or 'causal', got {padding!r}")
        super().__init__(filters, (1, k), (1, s), "valid" if pad == "causal" else pad, data_format, (1, d),
                         activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                         bias_regularizer, activity_regularizer, kernel_constraint, bias_constraint, **kwargs)
        self._set_groups(groups)
        self.kernel_size, self.strides, self.dilation_rate, self.padding = (k,), (s,), (d,), pad
        self.input_spec = InputSpec(ndim=3)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise shape_error(self, "the channel axis (last) of the input must have a known size", input_shape)
        if channels % self.groups:
            raise shape_error(self, f"groups={self.groups} must divide the input channels ({channels})",
                              input_shape)
        self.compute_output_shape(input_shape)
        self.kernel = self.add_weight("kernel", (self.kernel_size[0], channels // self.groups, self.filters),
                                      self.kernel_initializer, self.kernel_regularizer,
                                      constraint=self.kernel_constraint)
        if self.use_bias:
            self.bias = self.add_weight("bias", (self.filters,), self.bias_initializer, self.bias_regularizer,
                                        constraint=self.bias_constraint)
        self.input_spec = InputSpec(ndim=3, axes={-1: channels})
        self.built = True

    def call(self, inputs):
        x = self._cast_in(inputs)
        (k,), (s,), (d,) = self.kernel_size, self.strides, self.dilation_rate
        padding = self.padding
        if padding == "causal":
            x = ops.pad(x, ((0, 0), ((k - 1) * d, 0), (0, 0)))
            padding = "valid"
        n = x.shape[0]
        x4 = ops.expand_dims(x, 1)                 # [N, 1, L, C]
        k4 = ops.expand_dims(self.kernel, 0)       # [1, k, C/g, F]
        if self.groups == 1:
            act = _FUSED.get(self.activation, False)
            if act is not False:
                y = ops.conv2d_bias_act(x4, k4, self.bias, act, (1, s), padding, (1, d))
                return self._activity(ops.reshape(y, (n, y.shape[2], self.filters)))
            y = ops.conv2d(x4, k4, (1, s), padding, (1, d))
        else:
            ys = [ops.conv2d(xi, ki, (1, s), padding, (1, d))
                  for xi, ki in zip(ops.split(x4, self.groups, axis=3), ops.split(k4, self.groups, axis=3))]
            y = ops.concat(ys, axis=3)
        return self._finish(ops.reshape(y, (n, y.shape[2], self.filters)))

    def compute_output_shape(self, input_shape):
        n = _conv1d_len(self, input_shape[1], self.kernel_size[0], self.strides[0], self.dilation_rate[0],
                        self.padding, input_shape)
        return (input_shape[0], n, self.filters)

    def get_config(self):
        cfg = super().get_config()
        cfg["groups"] = self.groups
        return cfg


class Conv1DTranspose(_Conv):
    """Transposed 1-D convolution over [N, steps, channels]; kernel [k, filters, channels] as in Keras.

    ``padding`` "valid" or "same" ("causal" raises, as in Keras);
    ``output_padding`` None or an int smaller than ``strides``.
    """

    _transpose = True

    def __init__(self, filters, kernel_size, strides=1, padding="valid", output_padding=None, data_format=None,
                 dilation_rate=1, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, **kwargs):
        cls = type(self).__name__
        k = single(kernel_size, "kernel_size", cls)
        s = single(strides, "strides", cls)
        d = single(dilation_rate, "dilation_rate", cls)
        if isinstance(padding, str) and padding.lower() == "causal":
            raise ValueError(f"{cls}: padding 'causal' is not supported by a transposed convolution "
                             f"(as in Keras); use 'valid' or 'same'")
        super().__init__(filters, (1, k), (1, s), padding, data_format, (1, d), activation, use_bias,
                         kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
                         activity_regularizer, kernel_constraint, bias_constraint, **kwargs)
        if output_padding is not None:
            output_padding = single(output_padding, "output_padding", cls, allow_zero=True)
            if output_padding >= s:
                raise ValueError(f"{cls}: output_padding ({output_padding}) must be smaller than strides ({s})")
        self.output_padding = None if output_padding is None else (output_padding,)
        self.kernel_size, self.strides, self.dilation_rate = (k,), (s,), (d,)
        self.input_spec = InputSpec(ndim=3)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise shape_error(self, "the channel axis (last) of the input must have a known size", input_shape)
        self.kernel = self.add_weight("kernel", (self.kernel_size[0], self.filters, channels),
                                      self.kernel_initializer, self.kernel_regularizer,
                                      constraint=self.kernel_constraint)
        if self.use_bias:
            self.bias = self.add_weight("bias", (self.filters,), self.bias_initializer, self.bias_regularizer,
                                        constraint=self.bias_constraint)
        self.input_spec = InputSpec(ndim=3, axes={-1: channels})
        self.built = True

    def _out_len(self, n):
        op = None if self.output_padding is None else self.output_padding[0]
        return deconv_output_length(n, self.kernel_size[0], self.strides[0], self.padding, op,
                                    self.dilation_rate[0])

    def call(self, inputs):
        x = self._cast_in(inputs)
        n, length = x.shape[0], self._out_len(x.shape[1])
        y = ops.conv2d_transpose(ops.expand_dims(x, 1), ops.expand_dims(self.kernel, 0),
                                 (n, 1, length, self.filters), (1, self.strides[0]), self.padding,
                                 (1, self.dilation_rate[0]))
        return self._finish(ops.reshape(y, (n, length, self.filters)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self._out_len(input_shape[1]), self.filters)

    def get_config(self):
        cfg = super().get_config()
        cfg["output_padding"] = None if self.output_padding is None else list(self.output_padding)
        return cfg


Convolution1D = Conv1D
Convolution1DTranspose = Conv1DTranspose


class _Depthwise1D:
    """The 1-D geometry of DepthwiseConv1D / SeparableConv1D over the 2-D depthwise layers
    (a unit height axis, as Conv1D over Conv2D)."""

    def _init_1d(self, kernel_size, strides, dilation_rate, padding):
        cls = type(self).__name__
        k = single(kernel_size, "kernel_size", cls)
        s = single(strides, "strides", cls)
        d = single(dilation_rate, "dilation_rate", cls)
        if isinstance(padding, str) and padding.lower() == "causal":
            raise ValueError(f"{cls}: padding 'causal' is not supported (as in Keras); use 'valid' or 'same'")
        return k, s, d

    def _set_1d(self, k, s, d):
        self.kernel_size, self.strides, self.dilation_rate = (k,), (s,), (d,)
        self.input_spec = InputSpec(ndim=3)

    def _steps(self, input_shape):
        return _conv1d_len(self, input_shape[1], self.kernel_size[0], self.strides[0], self.dilation_rate[0],
                           self.padding, input_shape)

    def _build_depthwise(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise shape_error(self, "the channel axis (last) of the input must have a known size", input_shape)
        self._steps(input_shape)  # the window must fit
        self.depthwise_kernel = self.add_weight(
            "depthwise_kernel", (self.kernel_size[0], channels, self.depth_multiplier), self.depthwise_initializer,
            self.depthwise_regularizer, constraint=self.depthwise_constraint)
        self.input_spec = InputSpec(ndim=3, axes={-1: channels})
        return channels

    def _depthwise(self, x):
        y = ops.depthwise_conv2d(ops.expand_dims(x, 1), ops.expand_dims(self.depthwise_kernel, 0),
                                 (1, self.strides[0]), self.padding, (1, self.dilation_rate[0]))
        return ops.reshape(y, (y.shape[0], y.shape[2], y.shape[3]))


class DepthwiseConv1D(_Depthwise1D, DepthwiseConv2D):
    """Each channel of [N, steps, C] convolved with its own ``depth_multiplier`` filters:
    -> [N, steps', C*depth_multiplier]; depthwise_kernel [k, C, depth_multiplier], bias [C*depth_multiplier].

    ``padding`` "valid" or "same". Raises ValueError naming the layer when the window does not fit.
    """

    def __init__(self, kernel_size, strides=1, padding="valid", depth_multiplier=1, data_format=None,
                 dilation_rate=1, activation=None, use_bias=True, depthwise_initializer="glorot_uniform",
                 bias_initializer="zeros", depthwise_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, depthwise_constraint=None, bias_constraint=None, **kwargs):
        k, s, d = self._init_1d(kernel_size, strides, dilation_rate, padding)
        super().__init__((1, k), (1, s), padding, depth_multiplier, data_format, (1, d), activation, use_bias,
                         depthwise_initializer, bias_initializer, depthwise_regularizer, bias_regularizer,
                         activity_regularizer, depthwise_constraint, bias_constraint, **kwargs)
        self._set_1d(k, s, d)

    def compute_output_shape(self, input_shape):
        c = input_shape[-1]
        return (input_shape[0], self._steps(input_shape), None if c is None else c * self.depth_multiplier)


class SeparableConv1D(_Depthwise1D, SeparableConv2D):
    """A depthwise 1-D convolution, then a pointwise one to ``filters`` channels: [N, steps, C] ->
    [N, steps', filters]; depthwise_kernel [k, C, depth_multiplier], pointwise_kernel
    [1, C*depth_multiplier, filters], bias [filters]; the bias and activation follow the pointwise step.
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1,
                 depth_multiplier=1, activation=None, use_bias=True, depthwise_initializer="glorot_uniform",
                 pointwise_initializer="glorot_uniform", bias_initializer="zeros", depthwise_regularizer=None,
                 pointwise_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 depthwise_constraint=None, pointwise_constraint=None, bias_constraint=None, **kwargs):
        k, s, d = self._init_1d(kernel_size, strides, dilation_rate, padding)
        super().__init__(filters, (1, k), (1, s), padding, data_format, (1, d), depth_multiplier, activation,
                         use_bias, depthwise_initializer, pointwise_initializer, bias_initializer,
                         depthwise_regularizer, pointwise_regularizer, bias_regularizer, activity_regularizer,
                         depthwise_constraint, pointwise_constraint, bias_constraint, **kwargs)
        self._set_1d(k, s, d)

    def build(self, input_shape):
        channels = self._build_depthwise(input_shape)
        self.pointwise_kernel = self.add_weight(
            "pointwise_kernel", (1, channels * self.depth_multiplier, self.filters), self.pointwise_initializer,
            self.pointwise_regularizer, constraint=self.pointwise_constraint)
        if self.use_bias:
            self.bias = self.add_weight("bias", (self.filters,), self.bias_initializer, self.bias_regularizer,
                                        constraint=self.bias_constraint)
        self.built = True

    def call(self, inputs):
        y = ops.expand_dims(self._depthwise(self._cast_in(inputs)), 1)
        pw = ops.expand_dims(self.pointwise_kernel, 0)
        act = _FUSED.get(self.activation, False)
        if act is not False:
            y = self._activity(ops.conv2d_bias_act(y, pw, self.bias, act))
        else:
            y = ops.conv2d(y, pw)
            if self.bias is not None:
                y = y + self.bias
            y = self._activity(self.activation(y))
        return ops.reshape(y, (y.shape[0], y.shape[2], self.filters))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self._steps(input_shape), self.filters)


SeparableConvolution1D = SeparableConv1D
