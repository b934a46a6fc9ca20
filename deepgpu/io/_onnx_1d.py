"""ONNX export of the 1-D layers (issue 16), called from ``onnx._layer``.

Tensors stay [N, steps, C] between layers, as in deepgpu; Conv, ConvTranspose
and the pools, which ONNX defines channels-first, are wrapped in a Transpose
to [N, C, steps] and one back (ONNX Runtime cancels pairs that meet).
"""
from __future__ import annotations

import numpy as np

_NCL = [0, 2, 1]  # [N, L, C] <-> [N, C, L]: its own inverse


def _ncl(g, x, h, op_type, inputs_after, **attrs):
    xt = g.op("Transpose", [x], f"{h}/ncl", perm=_NCL)
    y = g.op(op_type, [xt] + inputs_after, f"{h}/{op_type.lower()}", **attrs)
    return g.op("Transpose", [y], f"{h}/nlc", perm=_NCL)


def _pads(layer, n, k, s, d, padding, who):
    """ONNX pads [begin, end] along the steps."""
    if padding == "valid":
        return [0, 0]
    if padding == "causal":
        return [(k - 1) * d, 0]
    if n is None:
        raise ValueError(f"{who}: 'same' padding needs a known number of steps to export")
    total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
    return [total // 2, total - total // 2]


def emit(g, layer, x, shape, out_shape, h, who):
    """The output name of ``layer`` (a 1-D layer) applied to ``x``, or None when ``layer`` is not one."""
    from .. import layers as L
    from .onnx import _activation, _weight

    if isinstance(layer, L.Conv1D):
        (k,), (s,), (d,) = layer.kernel_size, layer.strides, layer.dilation_rate
        ins = [g.const(f"{h}/kernel", _weight(layer.kernel).transpose(2, 1, 0))]  # [k, in/g, out] -> [out, in/g, k]
        if layer.bias is not None:
            ins.append(g.const(f"{h}/bias", _weight(layer.bias)))
        y = _ncl(g, x, h, "Conv", ins, kernel_shape=[k], strides=[s], dilations=[d], group=layer.groups,
                 pads=_pads(layer, shape[1], k, s, d, layer.padding, who))
        return _activation(g, y, layer.activation, h, who)
    if isinstance(layer, L.Conv1DTranspose):
        (k,), (s,), (d,) = layer.kernel_size, layer.strides, layer.dilation_rate
        n, o = shape[1], out_shape[1]
        if n is None or o is None:
            raise ValueError(f"{who}: needs a known number of steps to export")
        # deepgpu's transposed conv is the gradient of a conv from the output length o: the same pads.
        before = _pads(layer, o, k, s, d, layer.padding, who)[0]
        end = (n - 1) * s + (k - 1) * d + 1 - before - o
        ins = [g.const(f"{h}/kernel", _weight(layer.kernel).transpose(2, 1, 0))]  # [k, out, in] -> [in, out, k]
        if layer.bias is not None:
            ins.append(g.const(f"{h}/bias", _weight(layer.bias)))
        y = _ncl(g, x, h, "ConvTranspose", ins, kernel_shape=[k], strides=[s], dilations=[d],
                 pads=[before, max(end, 0)], output_padding=[max(-end, 0)])
        return _activation(g, y, layer.activation, h, who)
    if isinstance(layer, (L.DepthwiseConv1D, L.SeparableConv1D)):
        (k,), (s,), (d,) = layer.kernel_size, layer.strides, layer.dilation_rate
        dw = _weight(layer.depthwise_kernel)  # [k, C, M] -> [C*M, 1, k]: output channel c*M + m reads channel c
        c, m = dw.shape[1], dw.shape[2]
        ins = [g.const(f"{h}/depthwise_kernel", dw.transpose(1, 2, 0).reshape(c * m, 1, k))]
        separable = isinstance(layer, L.SeparableConv1D)
        if layer.bias is not None and not separable:
            ins.append(g.const(f"{h}/bias", _weight(layer.bias)))
        xt = g.op("Transpose", [x], f"{h}/ncl", perm=_NCL)
        y = g.op("Conv", [xt] + ins, f"{h}/depthwise", kernel_shape=[k], strides=[s], dilations=[d], group=c,
                 pads=_pads(layer, shape[1], k, s, d, layer.padding, who))
        if separable:  # [1, C*M, F] -> [F, C*M, 1]
            pw = [g.const(f"{h}/pointwise_kernel", _weight(layer.pointwise_kernel)[0].T[:, :, None])]
            if layer.bias is not None:
                pw.append(g.const(f"{h}/bias", _weight(layer.bias)))
            y = g.op("Conv", [y] + pw, f"{h}/pointwise", kernel_shape=[1])
        y = g.op("Transpose", [y], f"{h}/nlc", perm=_NCL)
        return _activation(g, y, layer.activation, h, who)
    if isinstance(layer, (L.MaxPooling1D, L.AveragePooling1D)):
        (p,), (s,) = layer.pool_size, layer.strides
        attrs = dict(kernel_shape=[p], strides=[s], pads=_pads(layer, shape[1], p, s, 1, layer.padding, who))
        if isinstance(layer, L.MaxPooling1D):
            return _ncl(g, x, h, "MaxPool", [], **attrs)
        return _ncl(g, x, h, "AveragePool", [], count_include_pad=0, **attrs)
    if isinstance(layer, (L.GlobalAveragePooling1D, L.GlobalMaxPooling1D)):
        from ._onnx_seq import node_of
        node = node_of(g, layer)
        mask = getattr(node.inputs[0], "_keras_mask", None) if node is not None and node.inputs else None
        if isinstance(layer, L.GlobalAveragePooling1D) and mask is not None:
            keep = g.masks.get(id(mask))
            if keep is None:
                raise ValueError(f"{who}: its input carries a Keras mask that the ONNX export does not compute "
                                 f"(it computes Embedding(mask_zero=True) and Masking masks, carried through the "
                                 f"layers that pass a mask on and the elementwise merges); export a model without it")
            # The mean over the kept steps, as the layer computes it.
            # (ReduceSum takes its axes as an input from opset 13, the oldest the export writes.)
            steps, kd = g.const(f"{h}/steps", [1], np.int64), int(bool(layer.keepdims))
            total = g.op("ReduceSum", [g.op("Mul", [x, keep], f"{h}/kept"), steps], f"{h}/total", keepdims=kd)
            count = g.op("ReduceSum", [keep, steps], f"{h}/count", keepdims=kd)
            return g.op("Div", [total, count], h)
        op = "ReduceMean" if isinstance(layer, L.GlobalAveragePooling1D) else "ReduceMax"
        return g.reduce(op, x, [1], h, layer.keepdims)
    if isinstance(layer, L.ZeroPadding1D):
        a, b = layer.padding
        return g.op("Pad", [x, g.const(f"{h}/pads", [0, a, 0, 0, b, 0], np.int64)], h, mode="constant")
    if isinstance(layer, L.Cropping1D):
        a, b = layer.cropping
        end = -b if b else np.iinfo(np.int64).max
        return g.op("Slice", [x, g.const(f"{h}/starts", [a], np.int64), g.const(f"{h}/ends", [end], np.int64),
                              g.const(f"{h}/axes", [1], np.int64)], h)
    if isinstance(layer, L.UpSampling1D):
        scales = g.const(f"{h}/scales", [1.0, float(layer.size), 1.0])
        return g.op("Resize", [x, "", scales], h, mode="nearest", coordinate_transformation_mode="asymmetric",
                    nearest_mode="floor")
    if isinstance(layer, L.SpatialDropout1D):
        return g.op("Identity", [x], h)
    return None
