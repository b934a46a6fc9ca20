"""Differentiable fused recurrent cells (re-exported by ``deepgpu.ops``): the gate math of one
LSTM / GRU time step after its matmuls, one backend primitive each way.

``lstm_cell`` has two outputs (h and c), which the tape (one output per node)
holds as two nodes: c's node owns the fused backward; h's node only hands its
gradient over to it (h's rule runs first, as h is computed from c on the
tape), so the backward is still one pass over the gates.
"""
from __future__ import annotations

from .autograd import register_gradient
from .ops import _backend_of, _make, _promote, _t
from .tensor import Tensor


def _check(what, pairs):
    for name, t, shape in pairs:
        if t.ndim != 2 or tuple(t.shape) != shape:
            raise ValueError(f"{what}: {name} must have shape {shape}, got {tuple(t.shape)}")
        if not t.dtype.startswith(("float", "bfloat")):
            raise ValueError(f"{what}: {name} must be a float tensor, got {t.dtype}")


def lstm_cell(z, c_prev):
    """One LSTM step (Keras's gates, sigmoid / tanh): ``(h, c)`` from z and c_prev.

    z: [N, 4U] = x_t @ kernel + bias + h_prev @ recurrent_kernel, gates in
    the order i, f, c, o; c_prev: [N, U]. c = f * c_prev + i * tanh(z_c),
    h = o * tanh(c). ValueError for other shapes or non-float inputs.
    """
    B = _backend_of(z, c_prev)
    z, c_prev = _promote(_t(z, B), _t(c_prev, B))
    n, u = c_prev.shape if c_prev.ndim == 2 else (None, None)
    _check("lstm_cell", [("c_prev", c_prev, (n, u)), ("z", z, (n, 4 * (u or 0)))])
    h, c, act = B.lstm_step(z.data, c_prev.data)
    stash = [None, None]  # dh and the zero h's node gave c, handed from h's node to c's
    c_t = _make("lstm_cell", c, (z, c_prev), B, saved=(act, c_prev.data, c, stash))
    if not c_t.requires_grad:
        return Tensor(h, B), c_t
    return _make("lstm_cell_h", h, (c_t,), B, saved=stash), c_t


@register_gradient("lstm_cell_h")
def _lstm_cell_h_grad(node, dh):
    # c must get a gradient so that its node runs: a broadcast zero, which costs nothing. When
    # it is all c gets, c's rule is handed that very object and knows dc is zero (no host read).
    zero = node.B.broadcast_to(node.B._scalar(0, dh.dtype), dh.shape)
    node.saved[0], node.saved[1] = dh, zero
    return (zero,)


@register_gradient("lstm_cell")
def _lstm_cell_grad(node, dc):
    act, c_prev, c, stash = node.saved
    dh, zero = stash
    stash[0] = stash[1] = None
    dz, dc_prev = node.B.lstm_step_grad(dh, None if dc is zero else dc, act, c_prev, c)
    return dz, (dc_prev if node.inputs[1].requires_grad else None)


def gru_cell(xz, hz, h_prev):
    """One GRU step, ``reset_after=True`` (Keras 3's default; sigmoid / tanh): the new h [N, U].

    xz: [N, 3U] = x_t @ kernel + input bias; hz: [N, 3U] = h_prev @
    recurrent_kernel + recurrent bias (gates z, r, h); h_prev: [N, U].
    z = sigmoid(xz_z + hz_z), r = sigmoid(xz_r + hz_r), hh = tanh(xz_h + r * hz_h),
    h = z * h_prev + (1 - z) * hh. ValueError for other shapes or non-float inputs.
    """
    B = _backend_of(xz, hz, h_prev)
    xz, hz = _promote(_t(xz, B), _t(hz, B))
    xz, h_prev = _promote(xz, _t(h_prev, B))
    hz = hz if hz.dtype == xz.dtype else _promote(hz, xz)[0]
    n, u = h_prev.shape if h_prev.ndim == 2 else (None, None)
    _check("gru_cell", [("h_prev", h_prev, (n, u)), ("xz", xz, (n, 3 * (u or 0))), ("hz", hz, (n, 3 * (u or 0)))])
    h, act = B.gru_step(xz.data, hz.data, h_prev.data)
    return _make("gru_cell", h, (xz, hz, h_prev), B, saved=(act, hz.data, h_prev.data))


@register_gradient("gru_cell")
def _gru_cell_grad(node, dh):
    act, hz, h_prev = node.saved
    dxz, dhz, dh_prev = node.B.gru_step_grad(dh, act, hz, h_prev)
    return tuple(g if t.requires_grad else None for g, t in zip((dxz, dhz, dh_prev), node.inputs))
