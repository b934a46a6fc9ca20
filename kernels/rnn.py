"""Launchers of rnn.cu: the fused LSTM / GRU cells, one launch each way per time step.

Arrays are float32 [N, K] (copied to C-contiguous when strided); outputs are new arrays.
Nothing is read back to the host, so a CUDA graph records a whole time loop.
"""
from __future__ import annotations

import numpy as np

# The package's helpers, looked up at each call (tests replace some, e.g. K._grid_items).
from .. import kernels as K
from .runtime import register

register("rnn.cu", ("dg_lstm_fwd", "dg_lstm_bwd", "dg_gru_fwd", "dg_gru_bwd"))


def _state(a, what):
    a = K._check(a, what)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"{what}: expected a non-empty [N, units] array, got shape {tuple(a.shape)}")
    return a


def lstm_step(z, c_prev):
    """(h, c, act) from z [N, 4U] and c_prev [N, U], as ``Backend.lstm_step``."""
    xp = K._xp(z)
    c_prev = _state(c_prev, "lstm_step c_prev")
    n, u = c_prev.shape
    z = K._check(z, "lstm_step z", (n, 4 * u))
    h, c, act = xp.empty((n, u), np.float32), xp.empty((n, u), np.float32), xp.empty((n, 4 * u), np.float32)
    K._launch("dg_lstm_fwd", K._grid_items(n * u), (K.BLOCK,), (z, c_prev, h, c, act, K._i64(n * u), K._i32(u)))
    return h, c, act


def lstm_step_grad(dh, dc, act, c_prev, c):
    """(dz [N, 4U], dc_prev [N, U]), as ``Backend.lstm_step_grad``; dh or dc may be None (zeros)."""
    xp = K._xp(act)
    c = _state(c, "lstm_step_grad c")
    n, u = c.shape
    act = K._check(act, "lstm_step_grad act", (n, 4 * u))
    c_prev = K._check(c_prev, "lstm_step_grad c_prev", (n, u))
    dh = None if dh is None else K._check(dh, "lstm_step_grad dh", (n, u))
    dc = None if dc is None else K._check(dc, "lstm_step_grad dc", (n, u))
    dz, dc_prev = xp.empty((n, 4 * u), np.float32), xp.empty((n, u), np.float32)
    K._launch("dg_lstm_bwd", K._grid_items(n * u), (K.BLOCK,),
              (dh, dc, act, c_prev, c, dz, dc_prev, K._i64(n * u), K._i32(u)))
    return dz, dc_prev


def gru_step(xz, hz, h_prev):
    """(h [N, U], act [N, 3U]) from xz, hz [N, 3U] and h_prev [N, U], as ``Backend.gru_step``."""
    xp = K._xp(xz)
    h_prev = _state(h_prev, "gru_step h_prev")
    n, u = h_prev.shape
    xz = K._check(xz, "gru_step xz", (n, 3 * u))
    hz = K._check(hz, "gru_step hz", (n, 3 * u))
    h, act = xp.empty((n, u), np.float32), xp.empty((n, 3 * u), np.float32)
    K._launch("dg_gru_fwd", K._grid_items(n * u), (K.BLOCK,), (xz, hz, h_prev, h, act, K._i64(n * u), K._i32(u)))
    return h, act


def gru_step_grad(dh, act, hz, h_prev):
    """(dxz, dhz [N, 3U], dh_prev [N, U]), as ``Backend.gru_step_grad``."""
    xp = K._xp(act)
    h_prev = _state(h_prev, "gru_step_grad h_prev")
    n, u = h_prev.shape
    dh = K._check(dh, "gru_step_grad dh", (n, u))
    act = K._check(act, "gru_step_grad act", (n, 3 * u))
    hz = K._check(hz, "gru_step_grad hz", (n, 3 * u))
    dxz, dhz, dh_prev = (xp.empty((n, 3 * u), np.float32), xp.empty((n, 3 * u), np.float32),
                         xp.empty((n, u), np.float32))
    K._launch("dg_gru_bwd", K._grid_items(n * u), (K.BLOCK,),
              (dh, act, hz, h_prev, dxz, dhz, dh_prev, K._i64(n * u), K._i32(u)))
    return dxz, dhz, dh_prev
