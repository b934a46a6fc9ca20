"""ONNX export of the issue-17 layers, called from ``onnx._layer``: PReLU, ThresholdedReLU, the noise
and dropout variants and the augmentation layers (Identity: inference), Rescaling, Resizing, CenterCrop,
RandomCrop's inference crop and Normalization. NHWC stays NHWC; Resize runs on an NCHW transpose."""
from __future__ import annotations

import numpy as np

_TO_NCHW, _TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


def _weight(v):
    return np.asarray(v.data_sync(), dtype=np.float32)


def _slice(g, x, h, top, left, height, width):
    starts = g.const(f"{h}/starts", [top, left], np.int64)
    ends = g.const(f"{h}/ends", [top + height, left + width], np.int64)
    return g.op("Slice", [x, starts, ends, g.const(f"{h}/axes", [1, 2], np.int64)], f"{h}/crop")


def _resize(g, x, h, in_hw, out_hw, interpolation):
    """tf.image.resize (half-pixel centres, no antialiasing) as an ONNX Resize on NCHW."""
    if tuple(in_hw) == tuple(out_hw):
        return x
    scales = g.const(f"{h}/scales", [1.0, 1.0, out_hw[0] / in_hw[0], out_hw[1] / in_hw[1]])
    if interpolation == "nearest":
        attrs = dict(mode="nearest", coordinate_transformation_mode="tf_half_pixel_for_nn", nearest_mode="floor")
    else:
        attrs = dict(mode="linear", coordinate_transformation_mode="half_pixel")
    xt = g.op("Transpose", [x], f"{h}/nchw", perm=_TO_NCHW)
    y = g.op("Resize", [xt, "", scales], f"{h}/resize", **attrs)
    return g.op("Transpose", [y], f"{h}/nhwc", perm=_TO_NHWC)


def _known_hw(shape, who):
    if shape[1] is None or shape[2] is None:
        raise ValueError(f"{who}: needs known input height and width to export, got {shape}")
    return shape[1], shape[2]


def _smart_resize(g, x, h, shape, th, tw, interpolation, who):
    from ..layers.preprocessing.image import crop_box

    H, W = _known_hw(shape, who)
    t, l, ch, cw = crop_box(H, W, th, tw)
    if (ch, cw) != (H, W):
        x = _slice(g, x, h, t, l, ch, cw)
    return _resize(g, x, h, (ch, cw), (th, tw), interpolation)


def emit(g, layer, x, shape, out_shape, h, who):
    """The output tensor name of ``layer`` on ``x``, or None when it is not one of these layers."""
    from .. import layers as L
    from ..layers.preprocessing import augmentation as A

    if isinstance(layer, L.PReLU):
        return g.op("PRelu", [x, g.const(f"{h}/alpha", _weight(layer.alpha))], h)
    if isinstance(layer, L.ThresholdedReLU):
        return g.op("ThresholdedRelu", [x], h, alpha=layer.theta)
    if isinstance(layer, L.RandomCrop):
        H, W = _known_hw(shape, who)
        if (H, W) == (layer.height, layer.width):
            return g.op("Identity", [x], h)
        return _smart_resize(g, x, h, shape, layer.height, layer.width, "bilinear", who)
    if isinstance(layer, (L.GaussianNoise, L.GaussianDropout, L.AlphaDropout, L.SpatialDropout2D,
                          L.SpatialDropout3D, L.ActivityRegularization, A._Augment)):
        return g.op("Identity", [x], h)  # inference: these return their input
    if isinstance(layer, L.Rescaling):
        scale = np.asarray(layer.scale, np.float32)
        offset = np.asarray(layer.offset, np.float32)
        x = g.op("Cast", [x], f"{h}/float", to=g.onnx.TensorProto.FLOAT)  # integer images become float32
        y = g.op("Mul", [x, g.const(f"{h}/scale", scale)], f"{h}/scaled")
        return g.op("Add", [y, g.const(f"{h}/offset", offset)], h)
    if isinstance(layer, L.Resizing):
        if layer.crop_to_aspect_ratio:
            return _smart_resize(g, x, h, shape, layer.height, layer.width, layer.interpolation, who)
        H, W = _known_hw(shape, who)
        if layer.pad_to_aspect_ratio:
            ph = max(H, int(float(W * layer.height) / layer.width))
            pw = max(W, int(float(H * layer.width) / layer.height))
            t, lft = int(float(ph - H) / 2), int(float(pw - W) / 2)
            if t or lft:
                pads = g.const(f"{h}/pads", [0, t, lft, 0, 0, t, lft, 0], np.int64)
                x = g.op("Pad", [x, pads, g.const(f"{h}/fill", np.float32(layer.fill_value))], f"{h}/pad",
                         mode="constant")
                H, W = H + 2 * t, W + 2 * lft
        return _resize(g, x, h, (H, W), (layer.height, layer.width), layer.interpolation)
    if isinstance(layer, L.CenterCrop):
        H, W = _known_hw(shape, who)
        dh, dw = H - layer.height, W - layer.width
        if dh >= 0 and dw >= 0:
            return _slice(g, x, h, dh // 2, dw // 2, layer.height, layer.width)
        return _smart_resize(g, x, h, shape, layer.height, layer.width, "bilinear", who)
    if isinstance(layer, L.Normalization):
        m, v = layer._stats("float32", None)
        m = np.broadcast_to(_weight(m), layer._bshape).astype(np.float32)
        v = np.broadcast_to(_weight(v), layer._bshape).astype(np.float32)
        sd = np.maximum(np.sqrt(v), np.float32(1e-7)).astype(np.float32)
        if layer.invert:
            y = g.op("Mul", [x, g.const(f"{h}/std", sd)], f"{h}/scaled")
            return g.op("Add", [y, g.const(f"{h}/mean", m)], h)
        y = g.op("Sub", [x, g.const(f"{h}/mean", m)], f"{h}/centered")
        return g.op("Div", [y, g.const(f"{h}/std", sd)], h)
    return None
