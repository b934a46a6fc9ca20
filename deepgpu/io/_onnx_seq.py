"""ONNX export of the sequence layers (issue 16): Embedding, Masking, and the recurrent layers
(SimpleRNN, LSTM, GRU and Bidirectional through ONNX's RNN / LSTM / GRU ops). Called from
``onnx._layer``; ``emit`` returns None for a layer that is not one of these.

ONNX's recurrent ops take time-major [T, N, C] and gates in their own order (LSTM: i, o, f, c
where Keras has i, f, c, o); the weights are transposed and reordered here. They have no
per-step mask, so a recurrent layer that receives a mask is refused, naming it.
"""
from __future__ import annotations

import numpy as np


def _w(v):
    return v.data_sync().astype(np.float32)


def node_of(g, layer):
    """The graph node of ``layer`` being exported (a Sequential's layers: their one inbound node)."""
    node = getattr(g, "current_node", None)
    if node is not None and node.layer is layer:
        return node
    nodes = getattr(layer, "_inbound_nodes", ())
    return nodes[-1] if nodes else None


def _register_mask(g, layer, keep):
    """Record ``keep`` (float [N, T, 1]) as the ONNX form of the mask the layer's output carries."""
    node = node_of(g, layer)
    mask = getattr(node.outputs[0], "_keras_mask", None) if node is not None and node.outputs else None
    if mask is not None:
        g.masks[id(mask)] = keep


def emit(g, layer, xs, shapes, out_shapes, h, who):
    from ..layers import embedding as E

    x = xs[0]
    if isinstance(layer, E.Embedding):
        table = g.const(f"{h}/embeddings", _w(layer.embeddings))
        ids = g.op("Cast", [x], f"{h}/ids", to=g.onnx.TensorProto.INT64)
        if layer.mask_zero:
            nonzero = g.op("Not", [g.op("Equal", [ids, g.const(f"{h}/zero", 0, np.int64)], f"{h}/is_pad")],
                           f"{h}/nonzero")
            keep = g.op("Cast", [nonzero], f"{h}/keep_f", to=g.onnx.TensorProto.FLOAT)
            _register_mask(g, layer, g.op("Unsqueeze", [keep, g.const(f"{h}/last", [-1], np.int64)], f"{h}/keep"))
        return [g.op("Gather", [table, ids], f"{h}/gather", axis=0)]
    if isinstance(layer, E.Masking):
        value = g.const(f"{h}/mask_value", np.float32(layer.mask_value))
        differs = g.op("Not", [g.op("Equal", [x, value], f"{h}/equal")], f"{h}/differs")
        keep = g.reduce("ReduceMax", g.op("Cast", [differs], f"{h}/keep_f", to=g.onnx.TensorProto.FLOAT),
                        [len(shapes[0]) - 1], f"{h}/keep", True)
        if len(shapes[0]) == 3:
            _register_mask(g, layer, keep)
        return [g.op("Mul", [x, keep], f"{h}/masked")]
    from . import _onnx_rnn
    return _onnx_rnn.emit(g, layer, xs, shapes, out_shapes, h, who)
