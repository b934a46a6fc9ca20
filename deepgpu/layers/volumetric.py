"""3-D (volumetric, NDHWC) layers (issue 17): Conv3D, Conv3DTranspose, MaxPooling3D,
AveragePooling3D, GlobalMaxPooling3D, GlobalAveragePooling3D, UpSampling3D, ZeroPadding3D,
Cropping3D, with Keras 3's arguments, weight layouts and configs.

Inputs are [N, depth, height, width, channels] ("channels_last" only, as the 2-D layers).
The convolutions run through ops.conv3d (the backend's 2-D convolution, one kernel depth tap
at a time); bad arguments raise ValueError naming the class, a bad input shape one naming the layer.
"""
from __future__ import annotations

from .. import ops
from ..backends.base import conv_output_size
from .base import InputSpec, Layer
from .conv import _Conv, deconv_output_length
from ._utils import channels_last, padding_arg, shape_error


def _triple(value, what, cls, allow_zero=False):
    """An int or three ints as a tuple of three ints (>= 1, or >= 0); ValueError naming the class."""
    if isinstance(value, int) and not isinstance(value, bool):
        t = (value,) * 3
    else:
        try:
            t = tuple(int(v) for v in value)
            if any(isinstance(v, bool) or float(v) != int(v) for v in value):
                t = ()
        except (TypeError, ValueError):
            t = ()
    if len(t) != 3 or min(t) < (0 if allow_zero else 1):
        kind = "ints >= 0" if allow_zero else "positive ints"
        raise ValueError(f"{cls}: {what} must be an int or three {kind}, got {value!r}")
    return t


def _spatial(layer, input_shape, fn, what):
    """[fn(i, n) for the three spatial sizes n], None where unknown; a window that does not fit
    raises naming the layer."""
    out = []
    for i in range(3):
        n = input_shape[1 + i]
        if n is None:
            out.append(None)
            continue
        try:
            out.append(fn(i, n))
        except ValueError as e:
            raise shape_error(layer, f"{what} does not fit the input ({e})", input_shape) from None
    return out


class _Conv3DBase(_Conv):
    """The 3-D geometry over _Conv's weights and config (kernel_size, strides, dilation_rate: triples)."""

    def _init_3d(self, kernel_size, strides, dilation_rate):
        cls = type(self).__name__
        self.kernel_size = _triple(kernel_size, "kernel_size", cls)
        self.strides = _triple(strides, "strides", cls)
        self.dilation_rate = _triple(dilation_rate, "dilation_rate", cls)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(f"{cls}: strides > 1 together with dilation_rate > 1 is not supported (as in Keras)")
        self.input_spec = InputSpec(ndim=5)

    def build(self, input_shape):
        super().build(input_shape)
        self.input_spec = InputSpec(ndim=5, axes={-1: input_shape[-1]})


class Conv3D(_Conv3DBase):
    """3-D convolution over [N, D, H, W, C]; kernel [kd, kh, kw, C / groups, filters], bias [filters].

    ``groups`` splits the channels and filters into that many independent convolutions (Keras's
    layout). Raises ValueError naming the layer when the kernel does not fit the input or
    ``groups`` does not divide the channels.
    """

    def __init__(self, filters, kernel_size, strides=(1, 1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1, 1), groups=1, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 **kwargs):
        super().__init__(filters, 1, 1, padding, data_format, 1, activation, use_bias, kernel_initializer,
                         bias_initializer, kernel_regularizer, bias_regularizer, activity_regularizer,
                         kernel_constraint, bias_constraint, **kwargs)
        self._init_3d(kernel_size, strides, dilation_rate)
        self._set_groups(groups)

    def _kernel_shape(self, channels):
        return (*self.kernel_size, channels // self.groups, self.filters)

    def build(self, input_shape):
        self._check_groups(input_shape)
        super().build(input_shape)

    def call(self, inputs):
        x = self._cast_in(inputs)
        if self.groups > 1:
            ys = [ops.conv3d(xi, ki, self.strides, self.padding, self.dilation_rate) for xi, ki in
                  zip(ops.split(x, self.groups, axis=4), ops.split(self.kernel, self.groups, axis=4))]
            return self._finish(ops.concat(ys, axis=4))
        return self._finish(ops.conv3d(x, self.kernel, self.strides, self.padding, self.dilation_rate))

    def compute_output_shape(self, input_shape):
        out = _spatial(self, input_shape, lambda i, n: conv_output_size(
            n, self.kernel_size[i], self.strides[i], self.dilation_rate[i], self.padding)[0],
            f"kernel_size {self.kernel_size}")
        return (input_shape[0], *out, self.filters)

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


class Conv3DTranspose(_Conv3DBase):
    """Transposed 3-D convolution over [N, D, H, W, C]; kernel [kd, kh, kw, filters, C], bias [filters].

    Output sizes as Keras's: n * s ("same") or n * s + max(k - s, 0) ("valid"), or with
    ``output_padding`` (each smaller than its stride) (n - 1) * s + k - 2 * pad + output_padding.
    """

    _transpose = True

    def __init__(self, filters, kernel_size, strides=(1, 1, 1), padding="valid", data_format=None,
                 output_padding=None, dilation_rate=(1, 1, 1), activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 **kwargs):
        super().__init__(filters, 1, 1, padding, data_format, 1, activation, use_bias, kernel_initializer,
                         bias_initializer, kernel_regularizer, bias_regularizer, activity_regularizer,
                         kernel_constraint, bias_constraint, **kwargs)
        cls = type(self).__name__
        self._init_3d(kernel_size, strides, dilation_rate)
        if output_padding is not None:
            output_padding = _triple(output_padding, "output_padding", cls, allow_zero=True)
            if any(o >= s for o, s in zip(output_padding, self.strides)):
                raise ValueError(f"{cls}: output_padding {output_padding} must be smaller than strides "
                                 f"{self.strides}")
        self.output_padding = output_padding

    def _kernel_shape(self, channels):
        return (*self.kernel_size, self.filters, channels)

    def _out(self, sizes):
        op = self.output_padding or (None,) * 3
        return tuple(deconv_output_length(n, self.kernel_size[i], self.strides[i], self.padding, op[i],
                                          self.dilation_rate[i]) for i, n in enumerate(sizes))

    def call(self, inputs):
        x = self._cast_in(inputs)
        out = self._out(x.shape[1:4])
        y = ops.conv3d_transpose(x, self.kernel, (x.shape[0], *out, self.filters), self.strides, self.padding,
                                 self.dilation_rate)
        return self._finish(y)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self._out(input_shape[1:4]), self.filters)

    def get_config(self):
        cfg = super().get_config()
        cfg["output_padding"] = None if self.output_padding is None else list(self.output_padding)
        return cfg


Convolution3D = Conv3D
Convolution3DTranspose = Conv3DTranspose


class _Pooling3D(Layer):
    _op = None

    def __init__(self, pool_size=(2, 2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(**kwargs)
        cls = type(self).__name__
        self.pool_size = _triple(pool_size, "pool_size", cls)
        self.strides = self.pool_size if strides is None else _triple(strides, "strides", cls)
        self.padding = padding_arg(padding, cls)
        self.data_format = channels_last(data_format, cls)
        self.input_spec = InputSpec(ndim=5)

    def build(self, input_shape):
        self.compute_output_shape(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        out = _spatial(self, input_shape, lambda i, n: conv_output_size(
            n, self.pool_size[i], self.strides[i], 1, self.padding)[0],
            f"pool_size {self.pool_size} with padding {self.padding!r}")
        return (input_shape[0], *out, input_shape[4])

    def call(self, inputs):
        return type(self)._op(inputs, self.pool_size, self.strides, self.padding)

    def get_config(self):
        return {**super().get_config(), "pool_size": list(self.pool_size), "strides": list(self.strides),
                "padding": self.padding, "data_format": self.data_format}


class MaxPooling3D(_Pooling3D):
    """[N, D, H, W, C]: the maximum over each ``pool_size`` window; strides default to the pool size."""
    _op = staticmethod(ops.max_pool3d)


class AveragePooling3D(_Pooling3D):
    """[N, D, H, W, C]: the mean over each ``pool_size`` window (padded cells are not counted)."""
    _op = staticmethod(ops.avg_pool3d)


class _GlobalPooling3D(Layer):
    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self.data_format = channels_last(data_format, type(self).__name__)
        self.keepdims = bool(keepdims)
        self.input_spec = InputSpec(ndim=5)

    def compute_output_shape(self, input_shape):
        if self.keepdims:
            return (input_shape[0], 1, 1, 1, input_shape[4])
        return (input_shape[0], input_shape[4])

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format, "keepdims": self.keepdims}


class GlobalAveragePooling3D(_GlobalPooling3D):
    """[N, D, H, W, C] -> [N, C] (or [N, 1, 1, 1, C] with keepdims): the mean over D, H and W."""

    def call(self, inputs):
        return ops.mean(inputs, (1, 2, 3), keepdims=self.keepdims)


class GlobalMaxPooling3D(_GlobalPooling3D):
    """[N, D, H, W, C] -> [N, C] (or [N, 1, 1, 1, C] with keepdims): the maximum over D, H and W."""

    def call(self, inputs):
        return ops.max(inputs, (1, 2, 3), keepdims=self.keepdims)


MaxPool3D = MaxPooling3D
AvgPool3D = AveragePooling3D
GlobalAvgPool3D = GlobalAveragePooling3D
GlobalMaxPool3D = GlobalMaxPooling3D


def _three_pairs(value, what, cls):
    """int, (d, h, w) or ((d0, d1), (h0, h1), (w0, w1)) -> three (before, after) pairs, all >= 0."""
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            out = ((value, value),) * 3
        elif len(value) == 3 and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            out = tuple((v, v) for v in value)
        elif len(value) == 3 and all(len(v) == 2 for v in value):
            out = tuple((int(v[0]), int(v[1])) for v in value)
        else:
            out = None
    except (TypeError, ValueError):
        out = None
    if out is None or any(v < 0 for p in out for v in p):
        raise ValueError(f"{cls}: {what} must be an int, three ints or three (before, after) pairs of ints, "
                         f"all >= 0, got {value!r}")
    return out


class ZeroPadding3D(Layer):
    """[N, D, H, W, C]: zeros added before and after each spatial axis."""

    def __init__(self, padding=((1, 1), (1, 1), (1, 1)), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.padding = _three_pairs(padding, "padding", "ZeroPadding3D")
        self.data_format = channels_last(data_format, "ZeroPadding3D")
        self.input_spec = InputSpec(ndim=5)

    def call(self, inputs):
        return ops.pad(inputs, ((0, 0),) + self.padding + ((0, 0),))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *[None if n is None else n + a + b
                                  for n, (a, b) in zip(input_shape[1:4], self.padding)], input_shape[4])

    def get_config(self):
        return {**super().get_config(), "padding": [list(p) for p in self.padding], "data_format": self.data_format}


class Cropping3D(Layer):
    """[N, D, H, W, C]: planes removed before and after each spatial axis."""

    def __init__(self, cropping=((1, 1), (1, 1), (1, 1)), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.cropping = _three_pairs(cropping, "cropping", "Cropping3D")
        self.data_format = channels_last(data_format, "Cropping3D")
        self.input_spec = InputSpec(ndim=5)

    def build(self, input_shape):
        self.compute_output_shape(input_shape)
        self.built = True

    def call(self, inputs):
        (a, b), (c, d), (e, f) = self.cropping
        D, H, W = inputs.shape[1:4]
        return inputs[:, a:D - b, c:H - d, e:W - f, :]

    def compute_output_shape(self, input_shape):
        out = []
        for n, (a, b) in zip(input_shape[1:4], self.cropping):
            if n is not None and n - a - b <= 0:
                raise shape_error(self, f"cropping {self.cropping} removes the whole volume", input_shape)
            out.append(None if n is None else n - a - b)
        return (input_shape[0], *out, input_shape[4])

    def get_config(self):
        return {**super().get_config(), "cropping": [list(p) for p in self.cropping],
                "data_format": self.data_format}


class UpSampling3D(Layer):
    """[N, D, H, W, C] -> [N, D*s0, H*s1, W*s2, C]: each plane, row and column repeated ``size`` times."""

    def __init__(self, size=(2, 2, 2), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.size = _triple(size, "size", "UpSampling3D")
        self.data_format = channels_last(data_format, "UpSampling3D")
        self.input_spec = InputSpec(ndim=5)

    def call(self, inputs):
        x = inputs
        for axis, s in zip((1, 2, 3), self.size):
            if s > 1:
                x = ops.repeat(x, s, axis)
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *[None if n is None else n * s for n, s in zip(input_shape[1:4], self.size)],
                input_shape[4])

    def get_config(self):
        return {**super().get_config(), "size": list(self.size), "data_format": self.data_format}
