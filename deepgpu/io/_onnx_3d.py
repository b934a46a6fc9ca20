"""ONNX export of the 3-D layers (issue 17), called from ``onnx._layer``.

Tensors stay NDHWC between layers, as in deepgpu; Conv, ConvTranspose, MaxPool and
AveragePool (channels-first in ONNX, with 3-D kernels) are wrapped in a Transpose to
NCDHW and one back (ONNX Runtime cancels pairs that meet).
"""
from __future__ import annotations

import numpy as np

_TO_NCDHW, _TO_NDHWC = [0, 4, 1, 2, 3], [0, 2, 3, 4, 1]


def _ncdhw(g, x, h, op_type, inputs_after, **attrs):
    xt = g.op("Transpose", [x], f"{h}/ncdhw", perm=_TO_NCDHW)
    y = g.op(op_type, [xt] + inputs_after, f"{h}/{op_type.lower()}", **attrs)
    return g.op("Transpose", [y], f"{h}/ndhwc", perm=_TO_NDHWC)


def _weights(g, layer, h, kernel_perm):
    from .onnx import _weight
    ins = [g.const(f"{h}/kernel", _weight(layer.kernel).transpose(*kernel_perm))]
    if layer.bias is not None:
        ins.append(g.const(f"{h}/bias", _weight(layer.bias)))
    return ins


def _pads(sizes, kernel, strides, dilation, padding, who):
    """ONNX pads [begins..., ends...] for deepgpu's "valid" / "same" over len(sizes) axes."""
    from .onnx import _pads as pads_2d
    return [0] * (2 * len(sizes)) if padding == "valid" else pads_2d(sizes, kernel, strides, dilation, padding, who)


def emit(g, layer, x, shape, out_shape, h, who):
    """The output name of ``layer`` (a 3-D layer) applied to ``x``, or None when ``layer`` is not one."""
    from .. import layers as L
    from .onnx import _activation

    if isinstance(layer, L.Conv3D):
        pads = _pads(shape[1:4], layer.kernel_size, layer.strides, layer.dilation_rate, layer.padding, who)
        # [kd, kh, kw, in/g, out] -> [out, in/g, kd, kh, kw]
        y = _ncdhw(g, x, h, "Conv", _weights(g, layer, h, (4, 3, 0, 1, 2)), kernel_shape=list(layer.kernel_size),
                   strides=list(layer.strides), dilations=list(layer.dilation_rate), pads=pads, group=layer.groups)
        return _activation(g, y, layer.activation, h, who)
    if isinstance(layer, L.Conv3DTranspose):
        if any(n is None for n in shape[1:4]) or any(o is None for o in out_shape[1:4]):
            raise ValueError(f"{who}: needs known input depth, height and width to export")
        before, end = [], []
        for i in range(3):
            n, o, k = shape[1 + i], out_shape[1 + i], layer.kernel_size[i]
            s, d = layer.strides[i], layer.dilation_rate[i]
            # deepgpu's transposed conv is the gradient of a conv from the output size o: the same pads.
            b = _pads((o,), (k,), (s,), (d,), layer.padding, who)[0]
            before.append(b)
            end.append((n - 1) * s + (k - 1) * d + 1 - b - o)
        # [kd, kh, kw, out, in] -> [in, out, kd, kh, kw]
        y = _ncdhw(g, x, h, "ConvTranspose", _weights(g, layer, h, (4, 3, 0, 1, 2)),
                   kernel_shape=list(layer.kernel_size), strides=list(layer.strides),
                   dilations=list(layer.dilation_rate), pads=before + [max(e, 0) for e in end],
                   output_padding=[max(-e, 0) for e in end])
        return _activation(g, y, layer.activation, h, who)
    if isinstance(layer, (L.MaxPooling3D, L.AveragePooling3D)):
        pads = _pads(shape[1:4], layer.pool_size, layer.strides, (1, 1, 1), layer.padding, who)
        attrs = dict(kernel_shape=list(layer.pool_size), strides=list(layer.strides), pads=pads)
        if isinstance(layer, L.MaxPooling3D):
            return _ncdhw(g, x, h, "MaxPool", [], **attrs)
        return _ncdhw(g, x, h, "AveragePool", [], count_include_pad=0, **attrs)
    if isinstance(layer, (L.GlobalAveragePooling3D, L.GlobalMaxPooling3D)):
        op = "ReduceMean" if isinstance(layer, L.GlobalAveragePooling3D) else "ReduceMax"
        return g.reduce(op, x, [1, 2, 3], h, layer.keepdims)
    if isinstance(layer, L.ZeroPadding3D):
        before, after = [p[0] for p in layer.padding], [p[1] for p in layer.padding]
        pads = g.const(f"{h}/pads", [0, *before, 0, 0, *after, 0], np.int64)
        return g.op("Pad", [x, pads], h, mode="constant")
    if isinstance(layer, L.Cropping3D):
        big = np.iinfo(np.int64).max
        starts = g.const(f"{h}/starts", [a for a, _ in layer.cropping], np.int64)
        ends = g.const(f"{h}/ends", [-b if b else big for _, b in layer.cropping], np.int64)
        return g.op("Slice", [x, starts, ends, g.const(f"{h}/axes", [1, 2, 3], np.int64)], h)
    if isinstance(layer, L.UpSampling3D):
        scales = g.const(f"{h}/scales", [1.0, 1.0, *[float(s) for s in layer.size]])
        return _ncdhw(g, x, h, "Resize", ["", scales], mode="nearest", coordinate_transformation_mode="asymmetric",
                      nearest_mode="floor")
    return None
