"""ONNX export of the Transformer's layers (issue 18), called from ``onnx._layer``.

LayerNormalization is ONNX's LayerNormalization op (opset 17 and later, over
trailing axes), else the same arithmetic in Reduce/Sub/Mul/Sqrt/Div; RMS,
Group and Unit normalization are that arithmetic. EinsumDense and Dot are
Einsum; attention is MatMul, Softmax and Transpose over [batch, heads],
with a causal mask as a constant Where. MultiHeadAttention's padding masks
(query, value and key masks from Embedding(mask_zero=True) or Masking, as
the export computes them) become a Where before and after the Softmax, as
the layer's masked softmax; any other mask on an attention layer's inputs
raises, naming the layer.
"""
from __future__ import annotations

import math

import numpy as np


def _current_node(g, layer):
    """The functional graph node of ``layer`` being exported, or None."""
    node = getattr(g, "current_node", None)
    return node if node is not None and node.layer is layer else None


def _node_kwargs(g, layer):
    node = _current_node(g, layer)
    return node.kwargs if node is not None else {}


def _refuse_masks(g, layer, who):
    node = _current_node(g, layer)
    if node is not None and any(getattr(t, "_keras_mask", None) is not None for t in node.inputs):
        raise ValueError(f"{who}: its inputs carry Keras masks (Embedding(mask_zero=True) or Masking), which "
                         f"the ONNX export does not compute; export a model without them")


def _moments_norm(g, x, axes, eps, h, center=True, center_output=True):
    """(x - mean) / sqrt(var + eps) over ``axes`` (``center_output=False``: x / sqrt(var + eps), as Keras's
    rms_scaling; ``center=False``: the mean taken as 0, RMS)."""
    if center:
        mean = g.reduce("ReduceMean", x, axes, f"{h}/mean", True)
        xc = g.op("Sub", [x, mean], f"{h}/centered")
    else:
        xc = x
    var = g.reduce("ReduceMean", g.op("Mul", [xc, xc], f"{h}/sq"), axes, f"{h}/var", True)
    std = g.op("Sqrt", [g.op("Add", [var, g.const(f"{h}/eps", np.float32(eps))], f"{h}/var_eps")], f"{h}/std")
    return g.op("Div", [xc if center_output else x, std], f"{h}/normed")


def _param(g, w, rank, axes, hint):
    """A weight over ``axes`` (sorted) shaped to broadcast against a rank-``rank`` tensor."""
    from .onnx import _weight

    v = _weight(w)
    shape = [1] * rank
    for i, a in enumerate(axes):
        shape[a] = v.shape[i] if v.ndim == len(axes) else v.shape[0]
    return g.const(hint, v.reshape(shape))


def _layer_norm(g, layer, x, shape, h):
    from .onnx import _weight

    rank, axes = len(shape), list(layer._resolved)
    trailing = axes == list(range(rank - len(axes), rank))
    if g.opset >= 17 and trailing and not layer.rms_scaling:
        d = [shape[a] for a in axes]
        scale = _weight(layer.gamma) if layer.gamma is not None else np.ones(d, np.float32)
        ins = [x, g.const(f"{h}/scale", scale.reshape(d))]
        if layer.beta is not None:
            ins.append(g.const(f"{h}/bias", _weight(layer.beta).reshape(d)))
        return g.op("LayerNormalization", ins, h, axis=axes[0], epsilon=float(layer.epsilon))
    y = _moments_norm(g, x, axes, layer.epsilon, h, center_output=not layer.rms_scaling)
    if layer.gamma is not None:
        y = g.op("Mul", [y, _param(g, layer.gamma, rank, axes, f"{h}/gamma")], f"{h}/scaled")
    if layer.beta is not None:
        y = g.op("Add", [y, _param(g, layer.beta, rank, axes, f"{h}/beta")], f"{h}/shifted")
    return y


def _group_norm(g, layer, x, shape, h, who):
    rank, ax, groups = len(shape), layer._ax, layer._groups
    if any(d is None for d in shape[1:]):
        raise ValueError(f"{who}: needs every non-batch axis known to export, got {shape}")
    c = shape[ax]
    gshape = [0] + list(shape[1:ax]) + [groups, c // groups] + list(shape[ax + 1:])
    xg = g.op("Reshape", [x, g.const(f"{h}/gshape", gshape, np.int64)], f"{h}/grouped")
    axes = [i for i in range(1, rank + 1) if i != ax]
    y = _moments_norm(g, xg, axes, layer.epsilon, h)
    y = g.op("Reshape", [y, g.const(f"{h}/shape", [0] + list(shape[1:]), np.int64)], f"{h}/ungrouped")
    if layer.gamma is not None:
        y = g.op("Mul", [y, _param(g, layer.gamma, rank, [ax], f"{h}/gamma")], f"{h}/scaled")
    if layer.beta is not None:
        y = g.op("Add", [y, _param(g, layer.beta, rank, [ax], f"{h}/beta")], f"{h}/shifted")
    return y


def _einsum(g, eq, a, b, h):
    return g.op("Einsum", [a, b], h, equation=eq.replace(" ", ""))


def _einsum_dense(g, layer, x, h, who):
    from .onnx import _activation, _weight

    y = _einsum(g, layer.equation, x, g.const(f"{h}/kernel", _weight(layer.kernel)), f"{h}/einsum")
    if layer.bias is not None:
        y = g.op("Add", [y, g.const(f"{h}/bias", _weight(layer.bias))], f"{h}/bias_add")
    return _activation(g, y, layer.activation, h, who)


def _causal(g, scores, tq, ts, h, who):
    if tq is None or ts is None:
        raise ValueError(f"{who}: use_causal_mask needs known sequence lengths to export")
    keep = np.tril(np.ones((tq, ts), bool))
    return g.op("Where", [g.const(f"{h}/causal", keep, np.bool_), scores, g.const(f"{h}/neg", np.float32(-1e9))],
                f"{h}/causal_scores")


def _padding_keep(g, layer, h, who):
    """The bool [B, 1, T, S] mask of the query and value (and key) padding masks, as the layer
    combines them (query row AND key column), or None when the inputs carry none."""
    node = _current_node(g, layer)
    if node is None:
        return None
    masks = [getattr(t, "_keras_mask", None) for t in node.inputs]
    if all(m is None for m in masks):
        return None
    names = [None if m is None else g.masks.get(id(m)) for m in masks]
    if any(m is not None and n is None for m, n in zip(masks, names)):
        raise ValueError(f"{who}: its inputs carry a Keras mask that the ONNX export does not compute (it "
                         f"computes Embedding(mask_zero=True) and Masking masks, carried through the layers "
                         f"that pass a mask on)")
    keep = None
    if names[0] is not None:  # query [B, T, 1] -> [B, 1, T, 1]
        keep = g.op("Unsqueeze", [names[0], g.const(f"{h}/ax1q", [1], np.int64)], f"{h}/q_keep")
    for i, n in enumerate(names[1:], 1):  # value, key [B, S, 1] -> [B, 1, 1, S]
        if n is None:
            continue
        col = g.op("Unsqueeze", [g.op("Transpose", [n], f"{h}/m{i}_t", perm=[0, 2, 1]),
                                 g.const(f"{h}/ax1_{i}", [1], np.int64)], f"{h}/m{i}_keep")
        keep = col if keep is None else g.op("Mul", [keep, col], f"{h}/keep{i}")
    return g.op("Cast", [keep], f"{h}/keep_bool", to=g.onnx.TensorProto.BOOL)


def _heads_attention(g, q, k, v, scale, causal, tq, ts, h, who, keep=None):
    """q [B, T, N, H], k / v [B, S, N, H] -> (out [B, T, N, Hv], probs [B, N, T, S]) in MatMul / Softmax;
    ``keep``: a bool mask broadcast to the scores (masked scores -1e9 before, probabilities 0 after)."""
    qh = g.op("Transpose", [q], f"{h}/q_heads", perm=[0, 2, 1, 3])
    kt = g.op("Transpose", [k], f"{h}/k_heads_t", perm=[0, 2, 3, 1])
    vh = g.op("Transpose", [v], f"{h}/v_heads", perm=[0, 2, 1, 3])
    s = g.op("MatMul", [qh, kt], f"{h}/scores")
    s = g.op("Mul", [s, g.const(f"{h}/scale", np.float32(scale))], f"{h}/scaled_scores")
    if causal:
        s = _causal(g, s, tq, ts, h, who)
    if keep is not None:
        s = g.op("Where", [keep, s, g.const(f"{h}/pad_neg", np.float32(-1e9))], f"{h}/padded_scores")
    p = g.op("Softmax", [s], f"{h}/probs", axis=-1)
    if keep is not None:  # a row masked everywhere is zeros, as the layer's masked softmax
        p = g.op("Where", [keep, p, g.const(f"{h}/zero", np.float32(0.0))], f"{h}/masked_probs")
    out = g.op("MatMul", [p, vh], f"{h}/context")
    return g.op("Transpose", [out], f"{h}/context_t", perm=[0, 2, 1, 3]), p


def _qkv(g, layer, xs, shapes, h, who):
    from .. import layers as L

    kw = _node_kwargs(g, layer)
    if isinstance(layer, L.MultiHeadAttention):
        keep = _padding_keep(g, layer, h, who)
    else:  # GroupedQueryAttention with padding: deepgpu and Keras 3.15 disagree on some rows (not settled)
        keep = None
        _refuse_masks(g, layer, who)
    if isinstance(layer, L.MultiHeadAttention) and (len(shapes[0]) != 3 or layer._axes != (1,)):
        raise ValueError(f"{who}: only rank-3 inputs attending over axis 1 are exported to ONNX, got "
                         f"{shapes[0]} with attention_axes {layer._axes}")
    query, value = xs[0], xs[1]
    key = xs[2] if len(xs) > 2 else value
    q = _einsum_dense(g, layer._query_dense, query, f"{h}/query", who)
    k = _einsum_dense(g, layer._key_dense, key, f"{h}/key", who)
    v = _einsum_dense(g, layer._value_dense, value, f"{h}/value", who)
    if isinstance(layer, L.GroupedQueryAttention):
        dim, reps = layer.head_dim, layer.num_repeats
        if reps > 1:  # each key / value head repeated for its group of query heads, as np.repeat
            rep = g.const(f"{h}/reps", [1, 1, 1, reps, 1], np.int64)
            flat = g.const(f"{h}/heads", [0, 0, layer.num_query_heads, dim], np.int64)
            ax = g.const(f"{h}/ax3", [3], np.int64)
            k = g.op("Reshape", [g.op("Tile", [g.op("Unsqueeze", [k, ax], f"{h}/k5"), rep], f"{h}/k_tile"), flat],
                     f"{h}/k_rep")
            v = g.op("Reshape", [g.op("Tile", [g.op("Unsqueeze", [v, ax], f"{h}/v5"), rep], f"{h}/v_tile"), flat],
                     f"{h}/v_rep")
    else:
        dim = layer.key_dim
    causal = bool(kw.get("use_causal_mask"))
    if layer.sliding_window is not None:
        raise ValueError(f"{who}: sliding_window is not exported to ONNX")
    out, probs = _heads_attention(g, q, k, v, 1.0 / math.sqrt(float(dim)), causal, shapes[0][1], shapes[1][1],
                                  h, who, keep)
    gate = None
    if layer._gate_dense is not None:
        gate = _einsum_dense(g, layer._gate_dense, query, f"{h}/gate", who)
        out = g.op("Mul", [out, gate], f"{h}/gated")
    y = _einsum_dense(g, layer._output_dense, out, f"{h}/attention_output", who)
    return [y, probs] if kw.get("return_attention_scores") else [y]


def _luong(g, layer, xs, shapes, h, who):
    from .. import layers as L
    from .onnx import _weight

    kw = _node_kwargs(g, layer)
    _refuse_masks(g, layer, who)
    q, v = xs[0], xs[1]
    k = xs[2] if len(xs) > 2 else v
    additive = isinstance(layer, L.AdditiveAttention)
    if not additive and layer.score_mode == "dot":
        s = g.op("MatMul", [q, g.op("Transpose", [k], f"{h}/k_t", perm=[0, 2, 1])], f"{h}/scores")
        if layer.scale is not None:
            s = g.op("Mul", [s, g.const(f"{h}/scale", _weight(layer.scale))], f"{h}/scaled")
    else:
        t = g.op("Add", [g.op("Unsqueeze", [q, g.const(f"{h}/ax2", [2], np.int64)], f"{h}/q4"),
                         g.op("Unsqueeze", [k, g.const(f"{h}/ax1", [1], np.int64)], f"{h}/k4")], f"{h}/sum")
        if additive:
            t = g.op("Tanh", [t], f"{h}/tanh")
            if layer.scale is not None:
                t = g.op("Mul", [t, g.const(f"{h}/scale", _weight(layer.scale))], f"{h}/scaled")
        else:
            if layer.scale is not None:
                t = g.op("Mul", [t, g.const(f"{h}/scale", _weight(layer.scale))], f"{h}/scaled")
            t = g.op("Tanh", [t], f"{h}/tanh")
        s = g.op("ReduceSum", [t, g.const(f"{h}/axes", [-1], np.int64)], f"{h}/scores", keepdims=0)
        if not additive:
            s = g.op("Mul", [s, g.const(f"{h}/w", _weight(layer.concat_score_weight))], f"{h}/weighted")
    if kw.get("use_causal_mask"):
        s = _causal(g, s, shapes[0][1], shapes[1][1], h, who)
    p = g.op("Softmax", [s], f"{h}/probs", axis=-1)
    y = g.op("MatMul", [p, v], h)
    return [y, p] if kw.get("return_attention_scores") else [y]


def emit(g, layer, xs, shapes, out_shapes, h, who):
    """The output names of ``layer`` applied to ``xs``, or None when it is not one of issue 18's layers."""
    from .. import layers as L

    x, shape = xs[0], shapes[0]
    if isinstance(layer, L.LayerNormalization):
        return [_layer_norm(g, layer, x, shape, h)]
    if isinstance(layer, L.RMSNormalization):
        axes = list(layer._resolved)
        y = _moments_norm(g, x, axes, layer.epsilon, h, center=False)
        return [g.op("Mul", [y, _param(g, layer.scale, len(shape), axes, f"{h}/scale")], h)]
    if isinstance(layer, L.GroupNormalization):
        return [_group_norm(g, layer, x, shape, h, who)]
    if isinstance(layer, L.UnitNormalization):
        axes = list(layer._resolved)
        n = int(np.prod([shape[a] for a in axes]))
        ms = g.reduce("ReduceMean", g.op("Mul", [x, x], f"{h}/sq"), axes, f"{h}/mean_sq", True)
        inv = g.op("Reciprocal", [g.op("Sqrt", [g.op("Mul", [ms, g.const(f"{h}/n", np.float32(n))], f"{h}/sum_sq")],
                                       f"{h}/norm")], f"{h}/inv")
        return [g.op("Mul", [x, g.op("Min", [inv, g.const(f"{h}/cap", np.float32(1e12))], f"{h}/capped")], h)]
    if isinstance(layer, L.EinsumDense):
        return [_einsum_dense(g, layer, x, h, who)]
    if isinstance(layer, L.Identity):
        return [g.op("Identity", [x], h)]
    if isinstance(layer, L.Dot):
        return [_dot(g, layer, xs, shapes, h)]
    if isinstance(layer, (L.MultiHeadAttention, L.GroupedQueryAttention)):
        return _qkv(g, layer, xs, shapes, h, who)
    if isinstance(layer, L.Attention):
        return _luong(g, layer, xs, shapes, h, who)
    return None


def _dot(g, layer, xs, shapes, h):
    a1, a2 = layer._axes_for([tuple(s) for s in shapes])
    x1, x2 = xs
    if layer.normalize:
        x1, x2 = (_l2(g, x, a, f"{h}/norm{i}") for i, (x, a) in enumerate(((x1, a1), (x2, a2))))
    letters = "bcdefghijklmnopqrstuvwxyz"
    n1, n2 = len(shapes[0]), len(shapes[1])
    s1 = "a" + letters[:n1 - 1]
    s2 = ["a"] + list(letters[n1 - 1:n1 - 1 + n2 - 1])
    s2[a2] = s1[a1]
    s2 = "".join(s2)
    out = "a" + "".join(c for i, c in enumerate(s1[1:], 1) if i != a1) + \
          "".join(c for i, c in enumerate(s2[1:], 1) if i != a2)
    y = _einsum(g, f"{s1},{s2}->{out}", x1, x2, f"{h}/einsum")
    if len(out) == 1:
        return g.op("Unsqueeze", [y, g.const(f"{h}/ax1", [1], np.int64)], h)
    return y


def _l2(g, x, axis, h):
    ms = g.op("ReduceSum", [g.op("Mul", [x, x], f"{h}/sq"), g.const(f"{h}/axes", [axis], np.int64)], f"{h}/ss",
              keepdims=1)
    inv = g.op("Reciprocal", [g.op("Sqrt", [ms], f"{h}/norm")], f"{h}/inv")
    return g.op("Mul", [x, g.op("Min", [inv, g.const(f"{h}/cap", np.float32(1e7))], f"{h}/capped")], h)
