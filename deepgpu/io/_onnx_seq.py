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


def emit(g, layer, xs, shapes, out_shapes, h, who):
    from ..layers import embedding as E

    x = xs[0]
    if isinstance(layer, E.Embedding):
        table = g.const(f"{h}/embeddings", _w(layer.embeddings))
        ids = g.op("Cast", [x], f"{h}/ids", to=g.onnx.TensorProto.INT64)
        return [g.op("Gather", [table, ids], f"{h}/gather", axis=0)]
    if isinstance(layer, E.Masking):
        value = g.const(f"{h}/mask_value", np.float32(layer.mask_value))
        differs = g.op("Not", [g.op("Equal", [x, value], f"{h}/equal")], f"{h}/differs")
        keep = g.reduce("ReduceMax", g.op("Cast", [differs], f"{h}/keep_f", to=g.onnx.TensorProto.FLOAT),
                        [len(shapes[0]) - 1], f"{h}/keep", True)
        return [g.op("Mul", [x, keep], f"{h}/masked")]
    from . import _onnx_rnn
    return _onnx_rnn.emit(g, layer, xs, shapes, out_shapes, h, who)
