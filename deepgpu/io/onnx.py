"""Export a deepgpu model to ONNX (``export_onnx``).

Layout: deepgpu tensors are NHWC, and so are the exported graph's inputs,
outputs and the tensors between layers. Each op that ONNX defines only for
NCHW (Conv, ConvTranspose, MaxPool, AveragePool, Resize) is wrapped in a
Transpose to NCHW and one back, so every other layer (Flatten, Reshape,
Concatenate on the channel axis, BatchNormalization on the last axis) keeps
deepgpu's meaning and element order unchanged; ONNX Runtime's optimizer
cancels the Transpose pairs that meet between two such ops.

BatchNormalization is exported in inference form with the moving statistics
(Sub, Mul, Add, in deepgpu's order of operations); Dropout is an Identity.
The batch axis is symbolic (``batch``). Needs the ``onnx`` package
(``pip install "deepgpu[interop]"``).
"""
from __future__ import annotations

import math
import os
import tempfile

import numpy as np

DEFAULT_OPSET = 17
_MIN_OPSET = 13  # Softmax over one axis, Unsqueeze/Split axes as inputs
_TO_NCHW, _TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError('export_onnx needs the onnx package: pip install "deepgpu[interop]"') from None
    return onnx


class _Graph:
    """Nodes, initializers and fresh tensor names of the graph being built."""

    def __init__(self, onnx, opset):
        self.onnx, self.opset = onnx, opset
        self.nodes, self.inits, self.used = [], [], set()
        # id(symbolic Keras mask) -> the ONNX name of that mask as float [N, T, 1] (1 = keep), for
        # the masks the export computes (Embedding(mask_zero), Masking); a layer that passes a
        # mask on hands the same object on, so its consumers find it here.
        self.masks = {}

    def name(self, hint):
        base = hint.replace(" ", "_")
        name, i = base, 1
        while name in self.used:
            name, i = f"{base}_{i}", i + 1
        self.used.add(name)
        return name

    def const(self, hint, value, dtype=np.float32):
        name = self.name(hint)
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type, inputs, hint, **attrs):
        out = self.name(hint)
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def reduce(self, op_type, x, axes, hint, keepdims):
        # Reduce* took axes as an attribute up to opset 17, as an input from 18.
        if self.opset >= 18:
            return self.op(op_type, [x, self.const(f"{hint}/axes", axes, np.int64)], hint, keepdims=int(keepdims))
        return self.op(op_type, [x], hint, axes=list(axes), keepdims=int(keepdims))


def _pads(in_hw, kernel, strides, dilation, padding, who):
    """ONNX pads [top, left, bottom, right] for deepgpu's "valid" / "same" (TF's rule)."""
    if padding == "valid":
        return [0, 0, 0, 0]
    if any(n is None for n in in_hw):
        raise ValueError(f"{who}: 'same' padding needs known input height and width to export, got {in_hw}")
    before, after = [], []
    for n, k, s, d in zip(in_hw, kernel, strides, dilation):
        out = -(-n // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
        before.append(total // 2)
        after.append(total - total // 2)
    return before + after


def _nchw(g, x, hint, op_type, inputs_after, **attrs):
    xt = g.op("Transpose", [x], f"{hint}/nchw", perm=_TO_NCHW)
    y = g.op(op_type, [xt] + inputs_after, f"{hint}/{op_type.lower()}", **attrs)
    return g.op("Transpose", [y], f"{hint}/nhwc", perm=_TO_NHWC)


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _activation(g, x, fn, hint, who):
    from .. import activations

    name = activations.serialize(fn) if callable(fn) else fn
    if fn is not None and callable(fn) and activations._BY_NAME.get(name) is not fn:
        raise ValueError(f"{who}: custom activation {name!r} has no ONNX equivalent")
    h = f"{hint}/{name}"
    simple = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softplus": "Softplus",
              "softsign": "Softsign", "exponential": "Exp"}
    if name in (None, "linear"):
        return x
    if name in simple:
        return g.op(simple[name], [x], h)
    if name == "softmax":
        return g.op("Softmax", [x], h, axis=-1)
    if name == "log_softmax":
        return g.op("LogSoftmax", [x], h, axis=-1)
    if name == "elu":
        return g.op("Elu", [x], h, alpha=1.0)
    if name == "selu":
        return g.op("Selu", [x], h, alpha=_SELU_ALPHA, gamma=_SELU_SCALE)
    if name == "leaky_relu":
        return g.op("LeakyRelu", [x], h, alpha=0.2)
    if name == "relu6":
        return g.op("Clip", [x, g.const(f"{h}/min", 0.0), g.const(f"{h}/max", 6.0)], h)
    if name in ("hard_sigmoid", "hard_silu"):
        y = g.op("HardSigmoid", [x], h, alpha=1.0 / 6.0, beta=0.5)
        return y if name == "hard_sigmoid" else g.op("Mul", [x, y], f"{h}/mul")
    if name in ("swish", "silu"):
        return g.op("Mul", [x, g.op("Sigmoid", [x], f"{h}/sigmoid")], h)
    if name == "mish":
        return g.op("Mul", [x, g.op("Tanh", [g.op("Softplus", [x], f"{h}/softplus")], f"{h}/tanh")], h)
    if name == "gelu":  # exact: x/2 * (1 + erf(x / sqrt 2)), as deepgpu's default
        e = g.op("Erf", [g.op("Mul", [x, g.const(f"{h}/c", 1.0 / math.sqrt(2.0))], f"{h}/scaled")], f"{h}/erf")
        half = g.op("Mul", [x, g.const(f"{h}/half", 0.5)], f"{h}/half_x")
        return g.op("Mul", [half, g.op("Add", [e, g.const(f"{h}/one", 1.0)], f"{h}/plus1")], h)
    if name == "gelu_new":  # tanh approximation
        cube = g.op("Mul", [g.op("Pow", [x, g.const(f"{h}/three", 3.0)], f"{h}/cube"),
                            g.const(f"{h}/k", 0.044715)], f"{h}/k_cube")
        inner = g.op("Mul", [g.op("Add", [x, cube], f"{h}/sum"), g.const(f"{h}/c", math.sqrt(2.0 / math.pi))],
                     f"{h}/inner")
        t = g.op("Add", [g.op("Tanh", [inner], f"{h}/tanh"), g.const(f"{h}/one", 1.0)], f"{h}/plus1")
        return g.op("Mul", [g.op("Mul", [x, g.const(f"{h}/half", 0.5)], f"{h}/half_x"), t], h)
    if name == "celu":  # Keras's default alpha = 1
        return g.op("Celu", [x], h, alpha=1.0)
    if name == "hard_tanh":
        return g.op("Clip", [x, g.const(f"{h}/min", -1.0), g.const(f"{h}/max", 1.0)], h)
    if name == "sparse_sigmoid":  # clip((x + 1) / 2, 0, 1)
        y = g.op("Add", [g.op("Mul", [x, g.const(f"{h}/half", 0.5)], f"{h}/half_x"),
                         g.const(f"{h}/bias", 0.5)], f"{h}/affine")
        return g.op("Clip", [y, g.const(f"{h}/min", 0.0), g.const(f"{h}/max", 1.0)], h)
    if name == "log_sigmoid":  # -softplus(-x)
        return g.op("Neg", [g.op("Softplus", [g.op("Neg", [x], f"{h}/neg_x")], f"{h}/softplus")], h)
    if name == "hard_shrink":  # default threshold 0.5
        return g.op("Shrink", [x], h, lambd=0.5, bias=0.0)
    if name == "soft_shrink":
        return g.op("Shrink", [x], h, lambd=0.5, bias=0.5)
    if name == "tanh_shrink":
        return g.op("Sub", [x, g.op("Tanh", [x], f"{h}/tanh")], h)
    if name == "squareplus":  # (x + sqrt(x^2 + 4)) / 2, Keras's default b = 4
        r = g.op("Sqrt", [g.op("Add", [g.op("Mul", [x, x], f"{h}/sq"), g.const(f"{h}/b", 4.0)], f"{h}/sq_b")],
                 f"{h}/sqrt")
        return g.op("Mul", [g.op("Add", [x, r], f"{h}/sum"), g.const(f"{h}/half", 0.5)], h)
    if name == "sparse_plus":  # 0 for x <= -1, x for x >= 1, (x + 1)^2 / 4 between
        p1 = g.op("Add", [x, g.const(f"{h}/one", 1.0)], f"{h}/plus1")
        mid = g.op("Mul", [g.op("Mul", [p1, p1], f"{h}/sq"), g.const(f"{h}/quarter", 0.25)], f"{h}/mid")
        hi = g.op("GreaterOrEqual", [x, g.const(f"{h}/hi", 1.0)], f"{h}/is_hi")
        lo = g.op("LessOrEqual", [x, g.const(f"{h}/lo", -1.0)], f"{h}/is_lo")
        upper = g.op("Where", [hi, x, mid], f"{h}/upper")
        return g.op("Where", [lo, g.const(f"{h}/zero", 0.0), upper], h)
    if name == "glu":  # by name: halves of the last axis, a * sigmoid(b); the half size read at run time
        n = g.op("Gather", [g.op("Shape", [x], f"{h}/shape"), g.const(f"{h}/last", [-1], np.int64)], f"{h}/n",
                 axis=0)
        half = g.op("Div", [n, g.const(f"{h}/two", [2], np.int64)], f"{h}/half")
        axes = g.const(f"{h}/axes", [-1], np.int64)
        a = g.op("Slice", [x, g.const(f"{h}/zero", [0], np.int64), half, axes], f"{h}/a")
        b = g.op("Slice", [x, half, g.const(f"{h}/end", [np.iinfo(np.int64).max], np.int64), axes], f"{h}/b")
        return g.op("Mul", [a, g.op("Sigmoid", [b], f"{h}/sigmoid")], h)
    if name == "sparsemax":  # by name: over the last axis, the support found pairwise as deepgpu does
        last, before = g.const(f"{h}/last", [-1], np.int64), g.const(f"{h}/before", [-2], np.int64)
        xi = g.op("Unsqueeze", [x, last], f"{h}/xi")      # [..., n, 1]
        xj = g.op("Unsqueeze", [x, before], f"{h}/xj")    # [..., 1, n]
        ge = g.op("Cast", [g.op("GreaterOrEqual", [xj, xi], f"{h}/ge_bool")], f"{h}/ge", to=1)
        # ReduceSum takes its axes as an input from opset 13, deepgpu's lowest
        k = g.op("ReduceSum", [ge, last], f"{h}/k", keepdims=0)
        above = g.op("ReduceSum", [g.op("Mul", [ge, xj], f"{h}/ge_x"), last], f"{h}/above", keepdims=0)
        test = g.op("Add", [g.op("Mul", [x, k], f"{h}/kx"), g.const(f"{h}/one", 1.0)], f"{h}/kx1")
        support = g.op("Cast", [g.op("Greater", [test, above], f"{h}/in_bool")], f"{h}/support", to=1)
        total = g.op("ReduceSum", [g.op("Mul", [x, support], f"{h}/sx"), last], f"{h}/total", keepdims=1)
        size = g.op("ReduceSum", [support, last], f"{h}/size", keepdims=1)
        tau = g.op("Div", [g.op("Sub", [total, g.const(f"{h}/one_", 1.0)], f"{h}/total1"), size], f"{h}/tau")
        return g.op("Relu", [g.op("Sub", [x, tau], f"{h}/shifted")], h)
    raise ValueError(f"{who}: activation {name!r} has no ONNX export")


def _weight(v):
    return np.asarray(v.data_sync(), dtype=np.float32)


def _relu_layer(g, x, layer, h):
    a, m, t = layer.negative_slope, layer.max_value, layer.threshold
    if t == 0 and a == 0:
        if m is None:
            return g.op("Relu", [x], h)
        return g.op("Clip", [x, g.const(f"{h}/min", 0.0), g.const(f"{h}/max", m)], h)
    if t == 0 and m is None:
        return g.op("LeakyRelu", [x], h, alpha=a)
    # Keras's general relu: x above the threshold (capped), slope * (x - threshold) below.
    zero = g.const(f"{h}/zero", 0.0)
    above = g.op("Greater", [x, g.const(f"{h}/threshold", t)], f"{h}/above")
    y = g.op("Where", [above, x, zero], f"{h}/pos")
    if m is not None:
        y = g.op("Min", [y, g.const(f"{h}/max", m)], f"{h}/capped")
    if a:
        below = g.op("Min", [g.op("Sub", [x, g.const(f"{h}/t", t)], f"{h}/shift"), zero], f"{h}/neg")
        y = g.op("Add", [y, g.op("Mul", [below, g.const(f"{h}/slope", a)], f"{h}/leak")], h)
    return y


def _batch_norm(g, x, layer, shape, h):
    rank = len(shape)
    ax = layer.axis % rank
    bshape = [shape[ax]] + [1] * (rank - 1 - ax)  # broadcasts against the input from the right
    inv = 1.0 / np.sqrt(_weight(layer.moving_variance) + np.float32(layer.epsilon))
    if layer.gamma is not None:
        inv = inv * _weight(layer.gamma)
    y = g.op("Sub", [x, g.const(f"{h}/moving_mean", _weight(layer.moving_mean).reshape(bshape))], f"{h}/centered")
    y = g.op("Mul", [y, g.const(f"{h}/scale", inv.reshape(bshape))], f"{h}/scaled")
    if layer.beta is not None:
        y = g.op("Add", [y, g.const(f"{h}/beta", _weight(layer.beta).reshape(bshape))], h)
    return y


def _conv_transpose(g, x, layer, shape, out_shape, h, who):
    kh, kw = layer.kernel_size
    pads_b, pads_e, out_pad = [], [], []
    for i, (n, k) in enumerate(zip(shape[1:3], (kh, kw))):
        o = out_shape[1 + i]
        if n is None or o is None:
            raise ValueError(f"{who}: needs known input height and width to export")
        s, d = layer.strides[i], layer.dilation_rate[i]
        eff = (k - 1) * d + 1
        # deepgpu's transposed conv is the gradient of a conv from the output size o: the same pads.
        before = _pads((o,), (k,), (s,), (d,), layer.padding, who)[0]
        end = (n - 1) * s + eff - before - o
        pads_b.append(before)
        pads_e.append(max(end, 0))
        out_pad.append(max(-end, 0))
    w = _weight(layer.kernel).transpose(3, 2, 0, 1)  # [kh, kw, out, in] -> [in, out, kh, kw]
    ins = [g.const(f"{h}/kernel", w)] + ([g.const(f"{h}/bias", _weight(layer.bias))] if layer.bias is not None else [])
    y = _nchw(g, x, h, "ConvTranspose", ins, kernel_shape=[kh, kw], strides=list(layer.strides),
              dilations=list(layer.dilation_rate), pads=pads_b + pads_e, output_padding=out_pad)
    return _activation(g, y, layer.activation, h, who)


def _depthwise(g, x, layer, shape, h, who):
    """DepthwiseConv2D as one Conv with group=C; SeparableConv2D as that Conv then a 1x1 Conv."""
    kh, kw, c, m = layer.depthwise_kernel.shape
    # [kh, kw, C, M] -> [C*M, 1, kh, kw]: group c makes output channels c*M .. c*M+M-1, as TF orders them.
    w = _weight(layer.depthwise_kernel).transpose(2, 3, 0, 1).reshape(c * m, 1, kh, kw)
    ins = [g.const(f"{h}/depthwise_kernel", w)]
    separable = hasattr(layer, "pointwise_kernel")
    if layer.bias is not None and not separable:
        ins.append(g.const(f"{h}/bias", _weight(layer.bias)))
    pads = _pads(shape[1:3], (kh, kw), layer.strides, layer.dilation_rate, layer.padding, who)
    xt = g.op("Transpose", [x], f"{h}/nchw", perm=_TO_NCHW)
    y = g.op("Conv", [xt] + ins, f"{h}/depthwise", kernel_shape=[kh, kw], strides=list(layer.strides),
             dilations=list(layer.dilation_rate), pads=pads, group=c)
    if separable:
        ins = [g.const(f"{h}/pointwise_kernel", _weight(layer.pointwise_kernel).transpose(3, 2, 0, 1))]
        if layer.bias is not None:
            ins.append(g.const(f"{h}/bias", _weight(layer.bias)))
        y = g.op("Conv", [y] + ins, f"{h}/pointwise", kernel_shape=[1, 1])
    y = g.op("Transpose", [y], f"{h}/nhwc", perm=_TO_NHWC)
    return _activation(g, y, layer.activation, h, who)


def _layer(g, layer, xs, shapes, out_shapes):
    """Emit ``layer`` applied to tensor names ``xs`` (shapes ``shapes``); returns its output names."""
    from .. import layers as L
    from ..layers.base import InputLayer
    from ..models.model import Model

    who = f"layer {layer.name!r} ({type(layer).__name__})"
    h = layer.name
    x, shape = xs[0], shapes[0]
    if isinstance(layer, Model):
        return _model(g, layer, xs)
    if getattr(layer, "dtype", "float32") != "float32":
        raise ValueError(f"{who}: only float32 layers can be exported, this one is {layer.dtype}")
    if isinstance(layer, InputLayer):
        return [x]
    from ._onnx_preprocessing import emit as _emit_pre  # issue 17: noise, PReLU, preprocessing
    y17 = _emit_pre(g, layer, x, shape, out_shapes[0], h, who)
    if y17 is not None:
        return [y17]
    from ._onnx_3d import emit as _emit_3d  # issue 17: Conv3D, pooling, padding, cropping, upsampling
    y3 = _emit_3d(g, layer, x, shape, out_shapes[0], h, who)
    if y3 is not None:
        return [y3]
    from ._onnx_1d import emit as _emit_1d
    y1 = _emit_1d(g, layer, x, shape, out_shapes[0], h, who)
    if y1 is not None:
        return [y1]
    from ._onnx_seq import emit as _emit_seq
    ys = _emit_seq(g, layer, xs, shapes, out_shapes, h, who)
    if ys is not None:
        return ys
    from ._onnx_attention import emit as _emit_attention  # issue 18: normalization, einsum, attention
    ys = _emit_attention(g, layer, xs, shapes, out_shapes, h, who)
    if ys is not None:
        return ys
    if isinstance(layer, L.Dense):
        kernel = g.const(f"{h}/kernel", _weight(layer.kernel))
        bias = [g.const(f"{h}/bias", _weight(layer.bias))] if layer.bias is not None else []
        if len(shape) == 2:
            y = g.op("Gemm", [x, kernel] + bias, f"{h}/gemm")
        else:
            y = g.op("MatMul", [x, kernel], f"{h}/matmul")
            if bias:
                y = g.op("Add", [y] + bias, f"{h}/bias_add")
        return [_activation(g, y, layer.activation, h, who)]
    if isinstance(layer, (L.DepthwiseConv2D, L.SeparableConv2D)):
        return [_depthwise(g, x, layer, shape, h, who)]
    if isinstance(layer, L.Conv2D):
        kh, kw = layer.kernel_size
        w = _weight(layer.kernel).transpose(3, 2, 0, 1)  # [kh, kw, in, out] -> [out, in, kh, kw]
        ins = [g.const(f"{h}/kernel", w)]
        if layer.bias is not None:
            ins.append(g.const(f"{h}/bias", _weight(layer.bias)))
        pads = _pads(shape[1:3], (kh, kw), layer.strides, layer.dilation_rate, layer.padding, who)
        y = _nchw(g, x, h, "Conv", ins, kernel_shape=[kh, kw], strides=list(layer.strides),
                  dilations=list(layer.dilation_rate), pads=pads, group=layer.groups)
        return [_activation(g, y, layer.activation, h, who)]
    if isinstance(layer, L.Conv2DTranspose):
        return [_conv_transpose(g, x, layer, shape, out_shapes[0], h, who)]
    if isinstance(layer, (L.MaxPooling2D, L.AveragePooling2D)):
        pads = _pads(shape[1:3], layer.pool_size, layer.strides, (1, 1), layer.padding, who)
        attrs = dict(kernel_shape=list(layer.pool_size), strides=list(layer.strides), pads=pads)
        if isinstance(layer, L.MaxPooling2D):
            return [_nchw(g, x, h, "MaxPool", [], **attrs)]
        return [_nchw(g, x, h, "AveragePool", [], count_include_pad=0, **attrs)]
    if isinstance(layer, (L.GlobalAveragePooling2D, L.GlobalMaxPooling2D)):
        op = "ReduceMean" if isinstance(layer, L.GlobalAveragePooling2D) else "ReduceMax"
        return [g.reduce(op, x, [1, 2], h, layer.keepdims)]
    if isinstance(layer, L.BatchNormalization):
        return [_batch_norm(g, x, layer, shape, h)]
    if isinstance(layer, L.Activation):
        return [_activation(g, x, layer.activation, h, who)]
    if isinstance(layer, L.ReLU):
        return [_relu_layer(g, x, layer, h)]
    if isinstance(layer, L.LeakyReLU):
        return [g.op("LeakyRelu", [x], h, alpha=layer.negative_slope)]
    if isinstance(layer, L.ELU):
        return [g.op("Elu", [x], h, alpha=layer.alpha)]
    if isinstance(layer, L.Softmax):
        if isinstance(layer.axis, (list, tuple)):
            raise ValueError(f"{who}: softmax over several axes {layer.axis} has no ONNX export")
        return [g.op("Softmax", [x], h, axis=int(layer.axis))]
    if isinstance(layer, L.Dropout):
        return [g.op("Identity", [x], h)]
    if isinstance(layer, L.Flatten):  # NHWC row-major order, as deepgpu's reshape
        return [g.op("Flatten", [x], h, axis=1)]
    if isinstance(layer, L.Reshape):
        target = g.const(f"{h}/shape", [0] + list(layer.target_shape), np.int64)  # 0 keeps the batch size
        return [g.op("Reshape", [x, target], h)]
    if isinstance(layer, L.Permute):
        return [g.op("Transpose", [x], h, perm=[0] + list(layer.dims))]
    if isinstance(layer, L.RepeatVector):
        y = g.op("Unsqueeze", [x, g.const(f"{h}/axes", [1], np.int64)], f"{h}/unsqueeze")
        return [g.op("Tile", [y, g.const(f"{h}/repeats", [1, layer.n, 1], np.int64)], h)]
    if isinstance(layer, L.ZeroPadding2D):
        (t, b), (lft, r) = layer.padding
        pads = g.const(f"{h}/pads", [0, t, lft, 0, 0, b, r, 0], np.int64)
        return [g.op("Pad", [x, pads], h, mode="constant")]
    if isinstance(layer, L.Cropping2D):
        (t, b), (lft, r) = layer.cropping
        big = np.iinfo(np.int64).max
        starts = g.const(f"{h}/starts", [t, lft], np.int64)
        ends = g.const(f"{h}/ends", [-b if b else big, -r if r else big], np.int64)
        return [g.op("Slice", [x, starts, ends, g.const(f"{h}/axes", [1, 2], np.int64)], h)]
    if isinstance(layer, L.UpSampling2D):
        scales = g.const(f"{h}/scales", [1.0, 1.0, float(layer.size[0]), float(layer.size[1])])
        if layer.interpolation == "nearest":
            attrs = dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        else:  # half-pixel centres, edges clamped: tf.image.resize's bilinear
            attrs = dict(mode="linear", coordinate_transformation_mode="half_pixel")
        return [_nchw(g, x, h, "Resize", ["", scales], **attrs)]
    merges = {L.Add: "Sum", L.Multiply: "Mul", L.Maximum: "Max", L.Minimum: "Min", L.Average: "Mean",
              L.Subtract: "Sub"}
    for cls, op in merges.items():
        if type(layer) is cls:
            if op == "Mul" and len(xs) > 2:
                y = xs[0]
                for i, other in enumerate(xs[1:]):
                    y = g.op("Mul", [y, other], f"{h}/mul{i}")
                return [y]
            return [g.op(op, xs, h)]
    if isinstance(layer, L.Concatenate):
        return [g.op("Concat", xs, h, axis=layer.axis % len(shape))]
    raise ValueError(f"{who} has no ONNX export (supported: Dense, EinsumDense, Embedding, the 1-D, 2-D and "
                     f"3-D convolutions (transposed, depthwise, separable, grouped), pooling, activations, "
                     f"Batch/Layer/RMS/Group/Unit normalization, attention, SimpleRNN / LSTM / GRU and "
                     f"Bidirectional without masks, merges, reshaping, padding, cropping, upsampling, "
                     f"dropout and noise, the image preprocessing layers, nested models)")


def _model(g, model, in_names):
    """Emit ``model`` on tensor names ``in_names``; returns its output tensor names."""
    from ..models.sequential import Sequential

    if isinstance(model, Sequential):
        x = in_names[0]
        for layer, t_in, t_out in zip(model._stack, model._chain[:-1], model._chain[1:]):
            x = _layer(g, layer, [x], [t_in.shape], [t_out.shape])[0]
        return [x]
    if not model._functional:
        raise NotImplementedError(f"model {model.name!r} ({type(model).__name__}) is a subclassed Model: its call() "
                                  f"cannot be traced to "
                                  f"ONNX; build it as a Sequential or functional model")
    env = {id(t): n for t, n in zip(model._inputs, in_names)}
    for node in model._nodes:
        xs = [env[id(t)] for t in node.inputs]
        g.current_node = node  # its call options (use_causal_mask...) and input masks, for the emitters
        outs = _layer(g, node.layer, xs, [t.shape for t in node.inputs], [t.shape for t in node.outputs])
        for t, n in zip(node.outputs, outs):
            env[id(t)] = n
        _output_mask(g, node)
    return [env[id(t)] for t in model._outputs]


def _output_mask(g, node):
    """The ONNX form of the node's output mask, where it follows from its inputs' as the layer's
    compute_mask says: the default (the first input's mask, passed on), the attention layers' (the
    query's), an elementwise merge's (the AND of its inputs': their product)."""
    from ..layers import GroupNormalization, Layer, LayerNormalization, UnitNormalization
    from ..layers.attention import Attention, MultiHeadAttention
    from ..layers.merge import Concatenate, _Merge

    _PASS_MASK = (LayerNormalization, GroupNormalization, UnitNormalization)  # compute_mask: passed on

    out = getattr(node.outputs[0], "_keras_mask", None) if node.outputs else None
    if out is None or id(out) in g.masks:
        return
    layer = node.layer
    names = [g.masks.get(id(m)) for m in (getattr(t, "_keras_mask", None) for t in node.inputs) if m is not None]
    if not names or None in names:
        return
    if isinstance(layer, _Merge) and not isinstance(layer, Concatenate):
        keep = names[0]
        for i, n in enumerate(names[1:]):
            keep = g.op("Mul", [keep, n], f"{layer.name}/mask_and{i}")
        g.masks[id(out)] = keep
    elif (type(layer).compute_mask is Layer.compute_mask or isinstance(layer, _PASS_MASK)) and len(node.inputs) == 1 \
            or isinstance(layer, (MultiHeadAttention, Attention)) and node.inputs[0]._keras_mask is not None:
        g.masks[id(out)] = names[0]  # the first input's: it has a mask, so names[0] is its (found) name


def _value_info(onnx, name, shape, dtype="float32"):
    dims = ["batch" if i == 0 else (None if d is None else int(d)) for i, d in enumerate(shape)]
    dims = [f"{name}_dim{i}" if d is None else d for i, d in enumerate(dims)]
    # Integer inputs (token ids for an Embedding) keep their type.
    kind = {"int32": onnx.TensorProto.INT32, "int64": onnx.TensorProto.INT64}.get(dtype, onnx.TensorProto.FLOAT)
    return onnx.helper.make_tensor_value_info(name, kind, dims)


def _atomic_write(path, data):
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot save to {path!r}: folder {folder!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".deepgpu-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def export_onnx(model, path, opset=DEFAULT_OPSET):
    """Write ``model`` as an ONNX file for inference (NHWC inputs and outputs, symbolic batch axis).

    Returns the ``onnx.ModelProto`` it wrote. Raises ValueError naming the
    first layer (or activation) that has no ONNX export, NotImplementedError
    for a subclassed model. The file is checked with ``onnx.checker`` and
    written atomically. A model under a 16-bit dtype policy ("mixed_float16",
    ...) is exported as its float32 graph (float32 weights and tensors).
    """
    onnx = _onnx()
    from .. import __version__
    from ..models.sequential import Sequential

    if not isinstance(opset, int) or not _MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ValueError(f"opset must be an int from {_MIN_OPSET} to {onnx.defs.onnx_opset_version()} "
                         f"(this onnx package's newest), got {opset!r}")
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built yet: call it on data or give it an input shape")
    g = _Graph(onnx, opset)
    ins = model.inputs if isinstance(model, Sequential) or model._functional else []
    in_names = [g.name(t.node.layer.name if t.node is not None else f"input_{i}") for i, t in enumerate(ins)]
    out_syms = model.outputs
    # Each output is named after the layer that makes it (Keras's output_names); reserved
    # before the layers are emitted so that no inner tensor takes the name.
    out_names = [g.name(t.node.layer.name if t.node is not None else "output") for t in out_syms]
    outs = _model(g, model, in_names)
    for n, out in zip(outs, out_names):
        g.nodes.append(onnx.helper.make_node("Identity", [n], [out], name=out))
    graph = onnx.helper.make_graph(
        g.nodes, model.name, [_value_info(onnx, n, t.shape, t.dtype) for n, t in zip(in_names, ins)],
        [_value_info(onnx, n, t.shape) for n, t in zip(out_names, out_syms)], g.inits)
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)],
                                   producer_name="deepgpu", producer_version=__version__)
    # Runtimes may be older than this onnx package: claim the oldest IR version the opset allows.
    proto.ir_version = onnx.helper.find_min_ir_version_for(list(proto.opset_import))
    onnx.checker.check_model(proto)
    _atomic_write(path, proto.SerializeToString())
    return proto
