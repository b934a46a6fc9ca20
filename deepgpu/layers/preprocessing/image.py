"""Image preprocessing layers (NHWC): Rescaling, Resizing, CenterCrop, as Keras 3 computes them."""
from __future__ import annotations

from ... import ops
from ...tensor import tensor
from ..base import InputSpec, Layer
from .._utils import channels_last

INTERPOLATIONS = ("bilinear", "nearest")


def as_float(x, dtype="float32"):
    return x if x.dtype == dtype else ops.cast(x, dtype)


def positive_int(v, what, who):
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{who}: {what} must be a positive int, got {v!r}")
    return v


def interpolation_arg(v, who):
    if v not in INTERPOLATIONS:
        raise ValueError(f"{who}: interpolation must be one of {INTERPOLATIONS}, got {v!r} "
                         f"(deepgpu has no {v!r} resampling)")
    return v


def crop_box(h, w, th, tw):
    """(top, left, height, width) of the largest centred window of aspect tw / th (Keras's integer rule)."""
    ch = max(min(h, int(float(w * th) / tw)), 1)
    cw = max(min(w, int(float(h * tw) / th)), 1)
    return int(float(h - ch) / 2), int(float(w - cw) / 2), ch, cw


def smart_resize(x, th, tw, interpolation="bilinear"):
    """Centre-crop ``x`` [N, H, W, C] to the aspect ratio th:tw, then resize to (th, tw)."""
    t, l, ch, cw = crop_box(x.shape[1], x.shape[2], th, tw)
    if (ch, cw) != tuple(x.shape[1:3]):
        x = x[:, t:t + ch, l:l + cw, :]
    return ops.resize(x, (th, tw), interpolation)


class Rescaling(Layer):
    """``x * scale + offset`` (scale and offset: numbers, or per-channel lists); integer inputs become float32."""

    def __init__(self, scale, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        for what, v in (("scale", scale), ("offset", offset)):
            vals = v if isinstance(v, (list, tuple)) else [v]
            if not vals or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in vals):
                raise ValueError(f"Rescaling: {what} must be a number or a list of numbers, got {v!r}")
        self.scale = [float(a) for a in scale] if isinstance(scale, (list, tuple)) else float(scale)
        self.offset = [float(a) for a in offset] if isinstance(offset, (list, tuple)) else float(offset)

    def call(self, inputs):
        x = as_float(inputs, self.dtype)
        scale = tensor(self.scale, x.dtype, backend=x.backend) if isinstance(self.scale, list) else self.scale
        offset = tensor(self.offset, x.dtype, backend=x.backend) if isinstance(self.offset, list) else self.offset
        return x * scale + offset

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}


class Resizing(Layer):
    """Resizes NHWC images to (height, width) as tf.image.resize (half-pixel centres, no antialiasing);
    ``crop_to_aspect_ratio`` first takes the largest centred window of the target aspect ratio,
    ``pad_to_aspect_ratio`` pads with ``fill_value`` towards it instead (Keras's symmetric rule)."""

    def __init__(self, height, width, interpolation="bilinear", crop_to_aspect_ratio=False,
                 pad_to_aspect_ratio=False, fill_mode="constant", fill_value=0.0, antialias=False,
                 data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.height = positive_int(height, "height", "Resizing")
        self.width = positive_int(width, "width", "Resizing")
        self.interpolation = interpolation_arg(interpolation, "Resizing")
        if crop_to_aspect_ratio and pad_to_aspect_ratio:
            raise ValueError("Resizing: crop_to_aspect_ratio and pad_to_aspect_ratio cannot both be True")
        if fill_mode != "constant":
            raise ValueError(f"Resizing: fill_mode must be 'constant' (Keras's only one), got {fill_mode!r}")
        if antialias:
            raise ValueError("Resizing: antialias=True is not supported (deepgpu resizes without an antialiasing "
                             "filter, as Keras's default antialias=False)")
        self.crop_to_aspect_ratio = bool(crop_to_aspect_ratio)
        self.pad_to_aspect_ratio = bool(pad_to_aspect_ratio)
        self.fill_mode, self.fill_value, self.antialias = fill_mode, float(fill_value), False
        self.data_format = channels_last(data_format, "Resizing")
        self.input_spec = InputSpec(ndim=4)

    def call(self, inputs):
        x = as_float(inputs, self.dtype)
        if self.crop_to_aspect_ratio:
            return smart_resize(x, self.height, self.width, self.interpolation)
        if self.pad_to_aspect_ratio:
            h, w = x.shape[1], x.shape[2]
            ph = max(h, int(float(w * self.height) / self.width))
            pw = max(w, int(float(h * self.width) / self.height))
            t, l = int(float(ph - h) / 2), int(float(pw - w) / 2)
            if t or l:  # as Keras: the same t (l) on both sides, so an odd difference loses a row (column)
                x = ops.pad(x, ((0, 0), (t, t), (l, l), (0, 0)), self.fill_value)
        return ops.resize(x, (self.height, self.width), self.interpolation)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.height, self.width, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width,
                "interpolation": self.interpolation, "crop_to_aspect_ratio": self.crop_to_aspect_ratio,
                "pad_to_aspect_ratio": self.pad_to_aspect_ratio, "fill_mode": self.fill_mode,
                "fill_value": self.fill_value, "antialias": self.antialias, "data_format": self.data_format}


class CenterCrop(Layer):
    """The centred (height, width) window of NHWC images; an image smaller than that on either side is
    cropped to the target aspect ratio and resized instead (Keras 3)."""

    def __init__(self, height, width, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.height = positive_int(height, "height", "CenterCrop")
        self.width = positive_int(width, "width", "CenterCrop")
        self.data_format = channels_last(data_format, "CenterCrop")
        self.input_spec = InputSpec(ndim=4)

    def call(self, inputs):
        x = as_float(inputs, self.dtype)
        dh, dw = x.shape[1] - self.height, x.shape[2] - self.width
        if dh >= 0 and dw >= 0:
            return x[:, dh // 2:dh // 2 + self.height, dw // 2:dw // 2 + self.width, :]
        return smart_resize(x, self.height, self.width)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.height, self.width, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width,
                "data_format": self.data_format}
