"""Reshaping layers: Flatten, Reshape, Permute, RepeatVector, and the spatial (NHWC)
ZeroPadding2D, UpSampling2D, Cropping2D."""
from __future__ import annotations

from .. import ops
from ..tensor import tensor
from .base import InputSpec, Layer, fmt_shape
from ._utils import channels_last, pair, shape_error, single


def _prod(dims):
    p = 1
    for d in dims:
        if d is None:
            return None
        p *= d
    return p


class Flatten(Layer):
    """Collapses every axis but the batch: [N, d1, d2, ...] -> [N, d1*d2*...]."""

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        if data_format not in (None, "channels_last"):
            raise ValueError(f"Flatten: only data_format='channels_last' is supported, got {data_format!r}")
        self.data_format = "channels_last"
        self.input_spec = InputSpec(min_ndim=1)

    def call(self, inputs):
        return ops.reshape(inputs, (inputs.shape[0], _prod(inputs.shape[1:])))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], _prod(input_shape[1:]))

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}


class Reshape(Layer):
    """Reshapes each example to ``target_shape`` (one entry may be -1)."""

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        if isinstance(target_shape, int):
            target_shape = (target_shape,)
        target_shape = tuple(int(d) for d in target_shape)
        if target_shape.count(-1) > 1 or any(d < -1 or d == 0 for d in target_shape):
            raise ValueError(
                f"Reshape: target_shape {target_shape} may hold one -1 and otherwise positive sizes")
        self.target_shape = target_shape

    def _resolve(self, input_shape):
        n = _prod(input_shape[1:])
        known = _prod(d for d in self.target_shape if d != -1)
        if n is None:
            return tuple(None if d == -1 else d for d in self.target_shape)
        if -1 in self.target_shape:
            if n % known:
                raise shape_error(self, f"cannot reshape {n} values per example into target_shape "
                                        f"{fmt_shape(self.target_shape)}", input_shape)
            return tuple(n // known if d == -1 else d for d in self.target_shape)
        if n != known:
            raise shape_error(self, f"target_shape {fmt_shape(self.target_shape)} holds {known} values "
                                    f"per example, the input {n}", input_shape)
        return self.target_shape

    def build(self, input_shape):
        self._resolve(input_shape)
        self.built = True

    def call(self, inputs):
        shape = self._resolve((None,) + inputs.shape[1:])
        return ops.reshape(inputs, (inputs.shape[0],) + shape)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self._resolve(input_shape)

    def get_config(self):
        return {**super().get_config(), "target_shape": list(self.target_shape)}


class Permute(Layer):
    """Permutes the non-batch axes; ``dims`` is 1-indexed (``(2, 1)`` swaps the two)."""

    def __init__(self, dims, **kwargs):
        super().__init__(**kwargs)
        self.dims = tuple(int(d) for d in dims)
        if sorted(self.dims) != list(range(1, len(self.dims) + 1)):
            raise ValueError(f"Permute: dims must be a permutation of 1..{len(self.dims)}, got {dims!r}")
        self.input_spec = InputSpec(ndim=len(self.dims) + 1)

    def call(self, inputs):
        return ops.transpose(inputs, (0,) + self.dims)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(input_shape[d] for d in self.dims)

    def get_config(self):
        return {**super().get_config(), "dims": list(self.dims)}


class RepeatVector(Layer):
    """[N, features] -> [N, n, features]."""

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"RepeatVector: n must be a positive int, got {n!r}")
        self.n = n
        self.input_spec = InputSpec(ndim=2)

    def call(self, inputs):
        return ops.broadcast_to(ops.expand_dims(inputs, 1), (inputs.shape[0], self.n, inputs.shape[1]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n, input_shape[1])

    def get_config(self):
        return {**super().get_config(), "n": self.n}


def _two_pairs(value, what, cls):
    """int, (sym_h, sym_w) or ((top, bottom), (left, right)) -> ((t, b), (l, r)), all >= 0."""
    try:
        if isinstance(value, int):
            out = ((value, value), (value, value))
        elif len(value) == 2 and all(isinstance(v, int) for v in value):
            out = ((value[0], value[0]), (value[1], value[1]))
        elif len(value) == 2:
            out = tuple((int(v[0]), int(v[1])) for v in value)
            if any(len(v) != 2 for v in value):
                raise ValueError
        else:
            raise ValueError
    except (TypeError, ValueError, IndexError):
        out = None
    if out is None or any(v < 0 for p in out for v in p):
        raise ValueError(
            f"{cls}: {what} must be an int, a pair of ints or a pair of (before, after) pairs, "
            f"all >= 0, got {value!r}")
    return out


class ZeroPadding2D(Layer):
    """Adds rows and columns of zeros around each image."""

    def __init__(self, padding=(1, 1), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.padding = _two_pairs(padding, "padding", "ZeroPadding2D")
        self.data_format = channels_last(data_format, "ZeroPadding2D")
        self.input_spec = InputSpec(ndim=4)

    def call(self, inputs):
        return ops.pad(inputs, ((0, 0),) + self.padding + ((0, 0),))

    def compute_output_shape(self, input_shape):
        (t, b), (l, r) = self.padding
        h, w = input_shape[1], input_shape[2]
        return (input_shape[0], None if h is None else h + t + b, None if w is None else w + l + r,
                input_shape[3])

    def get_config(self):
        return {**super().get_config(), "padding": [list(p) for p in self.padding],
                "data_format": self.data_format}


class Cropping2D(Layer):
    """Removes rows and columns from the edges of each image."""

    def __init__(self, cropping=((0, 0), (0, 0)), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.cropping = _two_pairs(cropping, "cropping", "Cropping2D")
        self.data_format = channels_last(data_format, "Cropping2D")
        self.input_spec = InputSpec(ndim=4)

    def build(self, input_shape):
        self.compute_output_shape(input_shape)
        self.built = True

    def call(self, inputs):
        (t, b), (l, r) = self.cropping
        h, w = inputs.shape[1], inputs.shape[2]
        return inputs[:, t:h - b, l:w - r, :]

    def compute_output_shape(self, input_shape):
        (t, b), (l, r) = self.cropping
        h, w = input_shape[1], input_shape[2]
        if (h is not None and h - t - b <= 0) or (w is not None and w - l - r <= 0):
            raise shape_error(self, f"cropping {self.cropping} removes the whole image", input_shape)
        return (input_shape[0], None if h is None else h - t - b, None if w is None else w - l - r,
                input_shape[3])

    def get_config(self):
        return {**super().get_config(), "cropping": [list(p) for p in self.cropping],
                "data_format": self.data_format}


def _bilinear_axis(x, axis, scale):
    """Resize ``axis`` by ``scale`` with half-pixel centers (as tf.image.resize, bilinear)."""
    n = x.shape[axis]
    lo, hi, frac = [], [], []
    for o in range(n * scale):
        src = max((o + 0.5) / scale - 0.5, 0.0)
        i0 = min(int(src), n - 1)
        lo.append(i0)
        hi.append(min(i0 + 1, n - 1))
        frac.append(src - i0)
    shape = [1] * x.ndim
    shape[axis] = n * scale
    w = ops.reshape(tensor(frac, x.dtype, backend=x.backend), tuple(shape))
    a = ops.gather(x, tensor(lo, "int32", backend=x.backend), axis)
    b = ops.gather(x, tensor(hi, "int32", backend=x.backend), axis)
    return a + (b - a) * w


class UpSampling2D(Layer):
    """Repeats rows and columns ``size`` times ("nearest") or interpolates ("bilinear")."""

    def __init__(self, size=(2, 2), data_format=None, interpolation="nearest", **kwargs):
        super().__init__(**kwargs)
        self.size = pair(size, "size", "UpSampling2D")
        self.data_format = channels_last(data_format, "UpSampling2D")
        if interpolation not in ("nearest", "bilinear"):
            raise ValueError(f"UpSampling2D: interpolation must be 'nearest' or 'bilinear', got {interpolation!r}")
        self.interpolation = interpolation
        self.input_spec = InputSpec(ndim=4)

    def call(self, inputs):
        x = inputs
        for axis, s in ((1, self.size[0]), (2, self.size[1])):
            if s == 1:
                continue
            x = ops.repeat(x, s, axis) if self.interpolation == "nearest" else _bilinear_axis(x, axis, s)
        return x

    def compute_output_shape(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        return (input_shape[0], None if h is None else h * self.size[0],
                None if w is None else w * self.size[1], input_shape[3])

    def get_config(self):
        return {**super().get_config(), "size": list(self.size), "data_format": self.data_format,
                "interpolation": self.interpolation}


# ------------------------------------------------------------------ 1-D (issue 16)
def _before_after(value, what, cls):
    """int or (before, after), both >= 0."""
    if isinstance(value, int) and not isinstance(value, bool):
        out = (value, value)
    else:
        try:
            out = tuple(int(v) for v in value)
        except (TypeError, ValueError):
            out = ()
    if len(out) != 2 or min(out) < 0:
        raise ValueError(f"{cls}: {what} must be an int or a pair (before, after) of ints >= 0, got {value!r}")
    return out


class ZeroPadding1D(Layer):
    """[N, steps, C] -> [N, before + steps + after, C] with zero steps added at each end."""

    def __init__(self, padding=1, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.padding = _before_after(padding, "padding", "ZeroPadding1D")
        self.data_format = channels_last(data_format, "ZeroPadding1D")
        self.input_spec = InputSpec(ndim=3)

    def call(self, inputs):
        return ops.pad(inputs, ((0, 0), self.padding, (0, 0)))

    def compute_output_shape(self, input_shape):
        n = input_shape[1]
        return (input_shape[0], None if n is None else n + sum(self.padding), input_shape[2])

    def get_config(self):
        return {**super().get_config(), "padding": list(self.padding), "data_format": self.data_format}


class Cropping1D(Layer):
    """[N, steps, C] -> [N, steps - before - after, C]: steps removed at each end."""

    def __init__(self, cropping=(1, 1), **kwargs):
        super().__init__(**kwargs)
        self.cropping = _before_after(cropping, "cropping", "Cropping1D")
        self.input_spec = InputSpec(ndim=3)

    def build(self, input_shape):
        self.compute_output_shape(input_shape)
        self.built = True

    def call(self, inputs):
        a, b = self.cropping
        return inputs[:, a:inputs.shape[1] - b, :]

    def compute_output_shape(self, input_shape):
        n = input_shape[1]
        if n is not None and n - sum(self.cropping) <= 0:
            raise shape_error(self, f"cropping {self.cropping} removes every step", input_shape)
        return (input_shape[0], None if n is None else n - sum(self.cropping), input_shape[2])

    def get_config(self):
        return {**super().get_config(), "cropping": list(self.cropping)}


class UpSampling1D(Layer):
    """[N, steps, C] -> [N, steps * size, C]: each step repeated ``size`` times."""

    def __init__(self, size=2, **kwargs):
        super().__init__(**kwargs)
        self.size = single(size, "size", "UpSampling1D")
        self.input_spec = InputSpec(ndim=3)

    def call(self, inputs):
        return inputs if self.size == 1 else ops.repeat(inputs, self.size, 1)

    def compute_output_shape(self, input_shape):
        n = input_shape[1]
        return (input_shape[0], None if n is None else n * self.size, input_shape[2])

    def get_config(self):
        return {**super().get_config(), "size": self.size}
