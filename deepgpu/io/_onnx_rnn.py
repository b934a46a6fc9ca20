"""ONNX export of SimpleRNN, LSTM, GRU (and RNN of one such cell), Bidirectional of them, and
TimeDistributed, through ONNX's RNN / LSTM / GRU ops. Called from ``_onnx_seq.emit``.

ONNX's ops are time-major ([T, N, C]) and keep weights transposed, [directions, gates * H, C];
its LSTM orders the gates i, o, f, c where Keras has i, f, c, o. Keras's GRU with
reset_after=True is ONNX's linear_before_reset=1. ``go_backwards`` is a reversed input (Keras
returns the outputs in the order processed), Bidirectional is direction="bidirectional" (both
align the backward outputs with the input). There is no per-step mask in these ops, nor state
kept between calls: a recurrent layer that receives a mask, or a stateful one, is refused.
"""
from __future__ import annotations

import numpy as np

_INT_MAX = np.iinfo(np.int64).max


def _w(v):
    return v.data_sync().astype(np.float32)


def _act(fn, who):
    """(ONNX activation name, alpha or None, beta or None) for a deepgpu activation."""
    from .. import activations as A
    if fn is A.sigmoid:
        return "Sigmoid", None, None
    if fn is A.tanh:
        return "Tanh", None, None
    if fn is A.relu:
        return "Relu", None, None
    if fn is A.hard_sigmoid:
        return "HardSigmoid", 1.0 / 6.0, 0.5
    if fn is A.tfjs_hard_sigmoid:
        return "HardSigmoid", 0.2, 0.5
    raise ValueError(f"{who}: the activation {A.serialize(fn)!r} has no counterpart among ONNX's recurrent "
                     f"activations (sigmoid, tanh, relu, hard_sigmoid)")


def _cell_of(layer, who):
    from ..layers import recurrent as R
    cell = layer.cell
    if isinstance(cell, R.ConvLSTM2DCell):
        raise ValueError(f"{who}: ONNX has no convolutional LSTM op, so it cannot be exported")
    if not isinstance(cell, (R.SimpleRNNCell, R.LSTMCell, R.GRUCell)):
        raise ValueError(f"{who}: only RNNs of one SimpleRNNCell, LSTMCell or GRUCell export to ONNX (use one "
                         f"RNN layer per cell); this one runs {type(cell).__name__}")
    if getattr(layer, "_symbolic_mask_seen", False):
        raise ValueError(f"{who} receives a mask (from Embedding(mask_zero=True) or Masking), and ONNX's "
                         f"recurrent ops have no per-step mask: it cannot be exported with its mask")
    if layer.stateful:
        raise ValueError(f"{who} is stateful, and an ONNX graph keeps no state between runs")
    return cell


def _weights(cell):
    """(op type, W [gates*H, C], R [gates*H, H], B [2*gates*H], activations, attrs) in ONNX's layout."""
    from ..layers import recurrent as R
    u = cell.units
    k, rk = _w(cell.kernel), _w(cell.recurrent_kernel)
    b = _w(cell.bias) if cell.bias is not None else None
    if isinstance(cell, R.LSTMCell):
        order = [0, 3, 1, 2]  # Keras i, f, c, o -> ONNX i, o, f, c

        def re(m):  # [X, 4u] -> [4u, X] reordered
            return np.concatenate([m[:, g * u:(g + 1) * u] for g in order], axis=1).T
        wb = np.zeros(4 * u, np.float32) if b is None else np.concatenate([b[g * u:(g + 1) * u] for g in order])
        bias = np.concatenate([wb, np.zeros(4 * u, np.float32)])
        acts = [cell.recurrent_activation, cell.activation, cell.activation]
        return "LSTM", re(k), re(rk), bias, acts, {}
    if isinstance(cell, R.GRUCell):
        if b is None:
            bias = np.zeros(6 * u, np.float32)
        elif cell.reset_after:
            bias = np.concatenate([b[0], b[1]])
        else:
            bias = np.concatenate([b, np.zeros(3 * u, np.float32)])
        acts = [cell.recurrent_activation, cell.activation]
        return "GRU", k.T, rk.T, bias, acts, {"linear_before_reset": int(cell.reset_after)}
    bias = np.concatenate([np.zeros(u, np.float32) if b is None else b, np.zeros(u, np.float32)])
    return "RNN", k.T, rk.T, bias, [cell.activation], {}


def _squeeze(g, x, axis, hint):
    return g.op("Squeeze", [x, g.const(f"{hint}/axes", [axis], np.int64)], hint)


def _run(g, x, cells, backwards, direction, h, who):
    """Emit one ONNX recurrent op over x [N, T, C]; returns (Y [T, D, N, H], Y_h [D, N, H], Y_c or None)."""
    xt = g.op("Transpose", [x], f"{h}/time_major", perm=[1, 0, 2])
    if backwards:
        xt = g.op("Slice", [xt, g.const(f"{h}/rev_start", [-1], np.int64), g.const(f"{h}/rev_end", [-_INT_MAX],
                                                                                  np.int64),
                            g.const(f"{h}/rev_axes", [0], np.int64), g.const(f"{h}/rev_step", [-1], np.int64)],
                  f"{h}/reversed")
    parts = [_weights(c) for c in cells]
    op, attrs = parts[0][0], parts[0][5]
    acts = []
    for p in parts:
        acts += p[4]
    names, alphas, betas = [], [], []
    for fn in acts:
        n, a, bta = _act(fn, who)
        names.append(n)
        alphas.append(a)
        betas.append(bta)
    kw = dict(attrs, hidden_size=cells[0].units, direction=direction, activations=names)
    if any(a is not None for a in alphas):
        kw["activation_alpha"] = [0.0 if a is None else a for a in alphas]
        kw["activation_beta"] = [0.0 if b is None else b for b in betas]
    w = g.const(f"{h}/W", np.stack([p[1] for p in parts]))
    r = g.const(f"{h}/R", np.stack([p[2] for p in parts]))
    b = g.const(f"{h}/B", np.stack([p[3] for p in parts]))
    outs = [g.name(f"{h}/Y"), g.name(f"{h}/Y_h")] + ([g.name(f"{h}/Y_c")] if op == "LSTM" else [])
    g.nodes.append(g.onnx.helper.make_node(op, [xt, w, r, b], outs, name=outs[0], **kw))
    return outs[0], outs[1], (outs[2] if op == "LSTM" else None)


def _single(g, layer, x, h, who):
    cell = _cell_of(layer, who)
    y, yh, yc = _run(g, x, [cell], layer.go_backwards, "forward", h, who)
    if layer.return_sequences:
        out = g.op("Transpose", [_squeeze(g, y, 1, f"{h}/y3")], f"{h}/sequences", perm=[1, 0, 2])
    else:
        out = _squeeze(g, yh, 0, f"{h}/last")
    if not layer.return_state:
        return [out]
    states = [_squeeze(g, yh, 0, f"{h}/state_h")]
    if yc is not None:
        states.append(_squeeze(g, yc, 0, f"{h}/state_c"))
    return [out] + states


def _bidirectional(g, layer, x, h, who):
    fw, bw = layer.forward_layer, layer.backward_layer
    fc, bc = _cell_of(fw, who), _cell_of(bw, who)
    if fw.go_backwards or type(fc) is not type(bc) or fc.units != bc.units:
        raise ValueError(f"{who}: only a forward layer and a backward copy of the same kind and size export to "
                         f"ONNX")
    y, yh, yc = _run(g, x, [fc, bc], False, "bidirectional", h, who)

    def pick(t, axis, d, hint):
        return g.op("Gather", [t, g.const(f"{hint}/i", np.int64(d), np.int64)], hint, axis=axis)

    if layer.return_sequences:
        if layer.merge_mode == "concat":
            ny = g.op("Transpose", [y], f"{h}/ntdh", perm=[2, 0, 1, 3])
            outs = [g.op("Reshape", [ny, g.const(f"{h}/shape", [0, 0, -1], np.int64)], f"{h}/concat")]
        else:
            outs = [g.op("Transpose", [pick(y, 1, d, f"{h}/y{d}")], f"{h}/seq{d}", perm=[1, 0, 2]) for d in (0, 1)]
    else:
        if layer.merge_mode == "concat":
            nh = g.op("Transpose", [yh], f"{h}/ndh", perm=[1, 0, 2])
            outs = [g.op("Reshape", [nh, g.const(f"{h}/shape", [0, -1], np.int64)], f"{h}/concat")]
        else:
            outs = [pick(yh, 0, d, f"{h}/last{d}") for d in (0, 1)]
    if layer.merge_mode == "sum":
        outs = [g.op("Add", outs, f"{h}/sum")]
    elif layer.merge_mode == "mul":
        outs = [g.op("Mul", outs, f"{h}/mul")]
    elif layer.merge_mode == "ave":
        outs = [g.op("Mul", [g.op("Add", outs, f"{h}/add"), g.const(f"{h}/half", np.float32(0.5))], f"{h}/ave")]
    if layer.return_state:
        for d in (0, 1):
            outs.append(pick(yh, 0, d, f"{h}/state_h{d}"))
            if yc is not None:
                outs.append(pick(yc, 0, d, f"{h}/state_c{d}"))
    return outs


def _time_distributed(g, layer, x, shape, out_shape, h, who):
    from .onnx import _layer

    if shape[1] is None or any(d is None for d in shape[2:]) or any(d is None for d in out_shape[2:]):
        raise ValueError(f"{who}: exporting to ONNX needs known sizes for every axis but the batch")
    folded = g.op("Reshape", [x, g.const(f"{h}/fold", [-1] + list(shape[2:]), np.int64)], f"{h}/folded")
    inner = (None,) + tuple(shape[2:])
    y = _layer(g, layer.layer, [folded], [inner], [(None,) + tuple(out_shape[2:])])[0]
    return [g.op("Reshape", [y, g.const(f"{h}/unfold", [-1, shape[1]] + list(out_shape[2:]), np.int64)], h)]


def emit(g, layer, xs, shapes, out_shapes, h, who):
    from ..layers import recurrent as R

    if isinstance(layer, R.Bidirectional):
        return _bidirectional(g, layer, xs[0], h, who)
    if isinstance(layer, R.RNN):
        return _single(g, layer, xs[0], h, who)
    if isinstance(layer, R.TimeDistributed):
        return _time_distributed(g, layer, xs[0], shapes[0], out_shapes[0], h, who)
    return None
