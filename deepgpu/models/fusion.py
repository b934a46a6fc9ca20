"""Inference-time folding of a functional model's Conv2D / DepthwiseConv2D -> BatchNormalization
[-> ReLU] chains into one convolution (issue 17).

In inference (``training`` falsy, no gradient recorded) a BatchNormalization after a linear
convolution is an affine map per output channel, ``(conv(x) + b - mean) * inv + beta`` with
``inv = gamma / sqrt(moving_variance + epsilon)``, so it folds into the convolution's kernel
(``kernel * inv``) and bias (``(b - mean) * inv + beta``): the network skips one full pass over
every activation per BatchNormalization (MobileNetV2 has 52). A following ReLU (``max_value``
None or any cap, no slope or threshold) or Activation("relu" / "relu6") is applied in the same
step, relu and relu6 in the convolution's epilogue. The folded weights are computed on every call
(a few ms for a whole MobileNet), so training between calls never leaves them stale. Layers are
matched by exact type and a chain only when each intermediate output feeds just the next layer and
is not a model output, so the results equal the unfolded network's up to float rounding.
"""
from __future__ import annotations

from .. import activations, ops
from ..layers.activation import ReLU
from ..layers.conv import Conv2D
from ..layers.core import Activation
from ..layers.depthwise import DepthwiseConv2D
from ..layers.normalization import BatchNormalization


def _conv_ok(layer):
    if type(layer) is Conv2D:
        ok = layer.groups == 1
    elif type(layer) is DepthwiseConv2D:
        ok = True
    else:
        return False
    return (ok and layer.built and layer.activation is activations.linear
            and layer.activity_regularizer is None and layer.compute_dtype == "float32")


def _bn_ok(layer):
    return (type(layer) is BatchNormalization and layer.built and layer.axis in (-1, 3)
            and getattr(layer, "activity_regularizer", None) is None and layer.compute_dtype == "float32")


def _cap(layer):
    """The ReLU cap this layer applies (None: plain relu), or False when it is not a foldable ReLU."""
    if type(layer) is ReLU:
        if layer.negative_slope == 0 and layer.threshold == 0:
            return layer.max_value
        return False
    if type(layer) is Activation:
        if layer.activation is activations.relu:
            return None
        if layer.activation is activations.relu6:
            return 6.0
    return False


def plan(model):
    """{index of a conv node: (bn node index, relu node index or None, cap)} for ``model._nodes``.

    Cached on the model; rebuilt when its node list changes length.
    """
    nodes = model._nodes
    cached = getattr(model, "_fold_plan", None)
    if cached is not None and cached[0] == len(nodes):
        return cached[1]
    consumers = {}
    for i, node in enumerate(nodes):
        for t in node.inputs:
            consumers.setdefault(id(t), []).append(i)
    outputs = {id(o) for o in model._outputs}

    def sole_next(node):
        if len(node.outputs) != 1 or id(node.outputs[0]) in outputs:
            return None
        users = consumers.get(id(node.outputs[0]), [])
        if len(users) != 1:
            return None
        j = users[0]
        nxt = nodes[j]
        return j if len(nxt.inputs) == 1 and not nxt.is_list and not nxt.kwargs else None

    out = {}
    for i, node in enumerate(nodes):
        if node.kwargs or node.is_list or len(node.inputs) != 1 or not _conv_ok(node.layer):
            continue
        j = sole_next(node)
        if j is None or not _bn_ok(nodes[j].layer):
            continue
        k = sole_next(nodes[j])
        cap = False if k is None else _cap(nodes[k].layer)
        out[i] = (j, None, False) if cap is False else (j, k, cap)
    model._fold_plan = (len(nodes), out)
    return out


def folded_weights(conv, bn):
    """(kernel * inv, (bias - mean) * inv + beta) for a conv layer and the BatchNormalization after it."""
    inv = ops.rsqrt(bn.moving_variance + bn.epsilon)
    if bn.gamma is not None:
        inv = inv * bn.gamma
    kernel = conv.depthwise_kernel if type(conv) is DepthwiseConv2D else conv.kernel
    shift = -bn.moving_mean if conv.bias is None else conv.bias - bn.moving_mean
    bias = shift * inv
    if bn.beta is not None:
        bias = bias + bn.beta
    shape = kernel.shape[2:] if type(conv) is DepthwiseConv2D else kernel.shape[3:]
    return kernel * ops.reshape(inv, shape), bias


def run(conv, bn, cap, relu, x):
    """The folded chain's output for input ``x`` (relu: whether a ReLU follows; cap: its max_value).

    Bias and a plain or 6-capped ReLU are the convolution's epilogue (one pass over the output);
    another cap is one more pass.
    """
    x = conv._cast_in(x)
    kernel, bias = folded_weights(conv, bn)
    act = None if not relu else "relu6" if cap == 6 else "relu"
    if type(conv) is DepthwiseConv2D:
        y = ops.depthwise_conv2d_bias_act(x, kernel, bias, act, conv.strides, conv.padding, conv.dilation_rate)
    else:
        y = ops.conv2d_bias_act(x, kernel, bias, act, conv.strides, conv.padding, conv.dilation_rate)
    return y if cap is None or act != "relu" else ops.minimum(y, cap)
