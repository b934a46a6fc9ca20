"""Augmentation layers (NHWC): random in training, identity at inference (RandomCrop: a centred crop).

Each draws new values on every training call from its ``StepRandom`` (seeded; see
deepgpu/layers/_random.py). The geometric ones build one projective transform per
image on the device from those draws and run the backend's ``image_transform``
(bilinear / nearest sampling, fill modes constant / nearest / reflect / wrap), with
Keras 3's matrices and factor rules. Nothing is read back on the host, so a recorded
GPU step (models/graph_step.py) draws anew at each replay; RandomWidth / RandomHeight
are the exception: the size they draw is the output's shape, which a recording fixes.
"""
from __future__ import annotations

import math

from ... import ops
from ...backends.base import GraphCaptureError
from .._random import StepRandom
from .._utils import channels_last
from ..base import InputSpec, Layer
from .image import as_float, interpolation_arg, positive_int, smart_resize

FILL_MODES = ("reflect", "wrap", "constant", "nearest")


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def factor_pair(factor, who, what="factor", lo=-1.0, hi=1.0, lo_open=False, clamp_lower=None):
    """Keras's factor rule: a number f gives (-|f|, |f|) (lower clamped to ``clamp_lower`` if given), a
    pair (a, b) gives (min, max); every value within [lo, hi] (``lo_open``: (lo, hi]). ValueError naming
    the layer, the argument and the allowed range otherwise."""
    rng = f"{'(' if lo_open else '['}{lo}, {hi}]"
    bad = ValueError(f"{who}: {what} must be a number or a pair of numbers in {rng}, got {factor!r}")
    if isinstance(factor, (list, tuple)):
        if len(factor) != 2 or not all(_number(v) for v in factor):
            raise bad
        vals = [float(v) for v in factor]
    elif _number(factor):
        vals = [float(factor)]
    else:
        raise bad
    if any(v > hi or v < lo or (lo_open and v == lo) for v in vals):
        raise bad
    if len(vals) == 1:
        f = abs(vals[0])
        low = -f if clamp_lower is None else max(-f, clamp_lower)
        return low, f
    return tuple(sorted(vals))


def _fill_args(fill_mode, interpolation, who):
    if fill_mode not in FILL_MODES:
        raise ValueError(f"{who}: fill_mode must be one of {FILL_MODES}, got {fill_mode!r}")
    return fill_mode, interpolation_arg(interpolation, who)


class _Augment(Layer):
    """Base: ``seed``; ``call`` returns the input at inference and ``augment`` in training."""

    def __init__(self, seed=None, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self._random = StepRandom(seed)
        self.data_format = channels_last(data_format, type(self).__name__)
        self.input_spec = InputSpec(ndim=4)

    def call(self, inputs, training=None):
        x = as_float(inputs, self.dtype)
        return self.augment(x) if training else self.infer(x)

    def infer(self, x):
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed, "data_format": self.data_format}


class _Geometric(_Augment):
    def __init__(self, fill_mode="reflect", interpolation="bilinear", seed=None, fill_value=0.0, **kwargs):
        super().__init__(seed, **kwargs)
        self.fill_mode, self.interpolation = _fill_args(fill_mode, interpolation, type(self).__name__)
        self.fill_value = float(fill_value)

    def augment(self, x):
        t = self.transforms(x, x.shape[0], x.shape[1], x.shape[2])
        return ops.image_transform(x, t, None, self.interpolation, self.fill_mode, self.fill_value)

    def get_config(self):
        return {**super().get_config(), "fill_mode": self.fill_mode, "interpolation": self.interpolation,
                "fill_value": self.fill_value}


def _rows(cols):
    """[n, 8] float32 transform rows from eight columns: Tensors of shape (n,) or Python numbers."""
    like = next(c for c in cols if not isinstance(c, (int, float)))
    consts = {0.0: like * 0.0}  # one column per distinct constant (each is a launch on a GPU)
    for c in cols:
        if isinstance(c, (int, float)) and float(c) not in consts:
            consts[float(c)] = consts[0.0] + float(c)
    return ops.stack([consts[float(c)] if isinstance(c, (int, float)) else c for c in cols], axis=1)


class RandomFlip(_Augment):
    """Flips each image left-right ("horizontal"), top-bottom ("vertical") or both at once
    ("horizontal_and_vertical") with probability 1/2."""

    MODES = ("horizontal", "vertical", "horizontal_and_vertical")

    def __init__(self, mode="horizontal_and_vertical", seed=None, **kwargs):
        super().__init__(seed, **kwargs)
        if mode not in self.MODES:
            raise ValueError(f"RandomFlip: mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode

    def augment(self, x):
        flip = ops.less_equal(self._random.uniform(x, (x.shape[0], 1, 1, 1)), 0.5)
        y = x
        if self.mode != "vertical":
            y = ops.where(flip, y[:, :, ::-1, :], y)
        if self.mode != "horizontal":
            y = ops.where(flip, y[:, ::-1, :, :], y)
        return y

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


class RandomRotation(_Geometric):
    """Rotates each image by a random angle about its centre: ``factor`` a fraction of 2 pi, a number f
    giving [-f, f] or a pair (lo, hi), in [-1, 1]."""

    def __init__(self, factor, fill_mode="reflect", interpolation="bilinear", seed=None, fill_value=0.0, **kwargs):
        super().__init__(fill_mode, interpolation, seed, fill_value, **kwargs)
        self.factor = factor_pair(factor, "RandomRotation")
        self._factor_arg = factor

    def transforms(self, x, n, h, w):
        angle = self._random.uniform(x, (n,), self.factor[0] * 2 * math.pi, self.factor[1] * 2 * math.pi,
                                     "float32")
        cx, cy = 0.5 * (w - 1), 0.5 * (h - 1)
        c, s = ops.cos(angle), ops.sin(angle)
        return _rows([c, -s, cx - cx * c + cy * s, s, c, cy - cx * s - cy * c, 0.0, 0.0])

    def get_config(self):
        return {**super().get_config(), "factor": _cfg(self._factor_arg)}


class RandomZoom(_Geometric):
    """Zooms each image about its centre: ``height_factor`` (lo, hi) or f for [-f, f], in (-1, 1]; a
    positive value zooms out, a negative one in (Keras 3). ``width_factor`` None keeps the aspect ratio."""

    def __init__(self, height_factor, width_factor=None, fill_mode="reflect", interpolation="bilinear", seed=None,
                 fill_value=0.0, **kwargs):
        super().__init__(fill_mode, interpolation, seed, fill_value, **kwargs)
        self.height_lower, self.height_upper = factor_pair(height_factor, "RandomZoom", "height_factor",
                                                           lo_open=True)
        self.width_lower = self.width_upper = None
        if width_factor is not None:
            self.width_lower, self.width_upper = factor_pair(width_factor, "RandomZoom", "width_factor",
                                                             lo_open=True)
        self.height_factor, self.width_factor = height_factor, width_factor

    def transforms(self, x, n, h, w):
        zy = self._random.uniform(x, (n,), 1.0 + self.height_lower, 1.0 + self.height_upper, "float32")
        zx = zy if self.width_factor is None else self._random.uniform(
            x, (n,), 1.0 + self.width_lower, 1.0 + self.width_upper, "float32")
        return _rows([zx, 0.0, (1 - zx) * ((w - 1) / 2.0), 0.0, zy, (1 - zy) * ((h - 1) / 2.0), 0.0, 0.0])

    def get_config(self):
        return {**super().get_config(), "height_factor": _cfg(self.height_factor),
                "width_factor": _cfg(self.width_factor)}


class RandomTranslation(_Geometric):
    """Shifts each image by a random fraction of its height and width: factors (lo, hi) or f for
    [-f, f], in [-1, 1]."""

    def __init__(self, height_factor, width_factor, fill_mode="reflect", interpolation="bilinear", seed=None,
                 fill_value=0.0, **kwargs):
        super().__init__(fill_mode, interpolation, seed, fill_value, **kwargs)
        self.height_lower, self.height_upper = factor_pair(height_factor, "RandomTranslation", "height_factor")
        self.width_lower, self.width_upper = factor_pair(width_factor, "RandomTranslation", "width_factor")
        self.height_factor, self.width_factor = height_factor, width_factor

    def transforms(self, x, n, h, w):
        dy = self._random.uniform(x, (n,), self.height_lower, self.height_upper, "float32") * float(h)
        dx = self._random.uniform(x, (n,), self.width_lower, self.width_upper, "float32") * float(w)
        return _rows([1.0, 0.0, -dx, 0.0, 1.0, -dy, 0.0, 0.0])

    def get_config(self):
        return {**super().get_config(), "height_factor": _cfg(self.height_factor),
                "width_factor": _cfg(self.width_factor)}


def _value_range(v, who):
    if not isinstance(v, (list, tuple)) or len(v) != 2 or not all(_number(a) for a in v):
        raise ValueError(f"{who}: value_range must be a pair of numbers, got {v!r}")
    return sorted(float(a) for a in v)


class RandomContrast(_Augment):
    """(x - mean over H, W) * c + mean per image and channel, clipped to ``value_range``; c uniform in
    [1 - lower, 1 + upper] where ``factor`` in [0, 1] (a number f gives (0, f), as Keras 3.15 computes)."""

    def __init__(self, factor, value_range=(0, 255), seed=None, **kwargs):
        super().__init__(seed, **kwargs)
        self.factor = factor_pair(factor, "RandomContrast", lo=0.0, hi=1.0, clamp_lower=0.0)
        self._factor_arg = factor
        self.value_range = _value_range(value_range, "RandomContrast")

    def augment(self, x):
        c = self._random.uniform(x, (x.shape[0], 1, 1, 1), 1.0 - self.factor[0], 1.0 + self.factor[1])
        mean = ops.mean(x, (1, 2), keepdims=True)
        return ops.clip((x - mean) * c + mean, self.value_range[0], self.value_range[1])

    def get_config(self):
        return {**super().get_config(), "factor": _cfg(self._factor_arg), "value_range": list(self.value_range)}


class RandomBrightness(_Augment):
    """Adds delta * (value_range width) per image, clipped to ``value_range``; delta uniform in
    ``factor`` ((lo, hi) or f for [-f, f], in [-1, 1])."""

    def __init__(self, factor, value_range=(0, 255), seed=None, **kwargs):
        super().__init__(seed, **kwargs)
        self.factor = factor_pair(factor, "RandomBrightness")
        self._factor_arg = factor
        self.value_range = _value_range(value_range, "RandomBrightness")

    def augment(self, x):
        lo, hi = self.value_range
        d = self._random.uniform(x, (x.shape[0], 1, 1, 1), self.factor[0], self.factor[1]) * (hi - lo)
        return ops.clip(x + d, lo, hi)

    def get_config(self):
        return {**super().get_config(), "factor": _cfg(self._factor_arg), "value_range": list(self.value_range)}


class RandomCrop(_Augment):
    """A random (height, width) window in training (one offset per batch, as Keras); at inference, and
    for images smaller than that, the largest centred window of that aspect ratio, resized."""

    def __init__(self, height, width, seed=None, **kwargs):
        super().__init__(seed, **kwargs)
        self.height = positive_int(height, "height", "RandomCrop")
        self.width = positive_int(width, "width", "RandomCrop")

    def augment(self, x):
        h, w = x.shape[1], x.shape[2]
        if not (h > self.height and w > self.width):
            return self.infer(x)
        if x._backend.name != "cuda":
            # Where no step is recorded (the CPU), the offset is read back and the batch sliced (cheaper).
            u = self._random.host_uniform(x, (2,), 0.0, 1.0).tolist()
            t, l = int(u[0] * (h - self.height + 1)), int(u[1] * (w - self.width + 1))
            return x[:, t:t + self.height, l:l + self.width, :]
        # Where it may be, the same offset stays on the device: a whole-pixel shift sampled
        # "nearest", which reads exactly the window the slice above takes.
        u = self._random.uniform(x, (2,), 0.0, 1.0, "float64")
        hi = float(h - self.height), float(w - self.width)
        t = ops.clip(ops.floor(u[0:1] * (hi[0] + 1.0)), 0.0, hi[0])
        l = ops.clip(ops.floor(u[1:2] * (hi[1] + 1.0)), 0.0, hi[1])
        row = ops.cast(_rows([1.0, 0.0, l, 0.0, 1.0, t, 0.0, 0.0]), "float32")
        return ops.image_transform(x, row, (self.height, self.width), "nearest", "constant")

    def infer(self, x):
        if tuple(x.shape[1:3]) == (self.height, self.width):
            return x
        return smart_resize(x, self.height, self.width)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.height, self.width, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width}


class _RandomSide(_Augment):
    """RandomWidth / RandomHeight (tf.keras 2 and TF.js): resize one side by a random factor in
    [1 + lower, 1 + upper] in training; identity at inference."""

    _axis = None

    def __init__(self, factor, interpolation="bilinear", seed=None, **kwargs):
        super().__init__(seed, **kwargs)
        who = type(self).__name__
        if isinstance(factor, (list, tuple)):
            if len(factor) != 2 or not all(_number(v) for v in factor):
                raise ValueError(f"{who}: factor must be a positive number or a pair of numbers, got {factor!r}")
            lo, hi = float(factor[0]), float(factor[1])
        elif _number(factor) and factor > 0:
            lo, hi = -float(factor), float(factor)
        else:
            raise ValueError(f"{who}: factor must be a positive number or a pair of numbers, got {factor!r}")
        if lo < -1.0 or hi < -1.0 or hi < lo:
            raise ValueError(f"{who}: factor must be within [-1, inf) with lower <= upper, got {factor!r}")
        self.factor, self.lower, self.upper = factor, lo, hi
        self.interpolation = interpolation_arg(interpolation, who)

    def augment(self, x):
        if x._backend.capturing:
            raise GraphCaptureError(f"{type(self).__name__} {self.name!r} draws its output's size per batch, and "
                                    f"a recorded step's shapes are fixed")
        f = self._random.host_uniform(x, (1,), 1.0 + self.lower, 1.0 + self.upper).tolist()[0]
        size = [x.shape[1], x.shape[2]]
        size[self._axis] = max(int(round(f * size[self._axis])), 1)
        return ops.resize(x, size, self.interpolation)

    def compute_output_shape(self, input_shape):
        out = list(input_shape)
        out[1 + self._axis] = None
        return tuple(out)

    def get_config(self):
        return {**super().get_config(), "factor": _cfg(self.factor), "interpolation": self.interpolation}

    def keras3_class_config(self, cfg):
        raise ValueError(f"layer {self.name!r} ({type(self).__name__}) cannot be written for Keras 3, which has "
                         f"no {type(self).__name__} (tf.keras 2 and TF.js have it)")


class RandomWidth(_RandomSide):
    _axis = 1


class RandomHeight(_RandomSide):
    _axis = 0


def _cfg(v):
    return list(v) if isinstance(v, tuple) else v
