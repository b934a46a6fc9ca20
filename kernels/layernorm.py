"""Launchers of layernorm.cu: layer / RMS normalization over the rows of x [rows, D], forward and backward.

The backend flattens the normalized axes into D. The forward is one launch,
the backward two (dx; dgamma and dbeta); none reads a value back to the host.
"""
from __future__ import annotations

import numpy as np

# The package's helpers, looked up at each call (tests replace some).
from .. import kernels as K
from .runtime import register

register("layernorm.cu", ("dg_ln_fwd", "dg_ln_grad_input", "dg_ln_grad_params"))

_MAX_ROW_BLOCKS = 65535


def _row_plan(rows, d):
    """(grid, block) of the per-row kernels: threads a power of two in [32, 256] near D / 4."""
    t = 32
    while t < 256 and t * 4 < d:
        t *= 2
    return (max(1, min(int(rows), _MAX_ROW_BLOCKS)),), (t,)


def _rows_d(x, what):
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{what}: expected a non-empty [rows, D] array, got shape {tuple(x.shape)}")
    return x.shape


def layer_norm(x, gamma=None, beta=None, epsilon=1e-3, rms=False):
    """(y, mean, inv_std) of x [rows, D], as ``Backend.layer_norm``; gamma, beta [D] or None."""
    xp = K._xp(x)
    x = K._check(x, "layer_norm x")
    rows, d = _rows_d(x, "layer_norm x")
    gamma = None if gamma is None else K._check(gamma, "layer_norm gamma", (d,))
    beta = None if beta is None else K._check(beta, "layer_norm beta", (d,))
    y = xp.empty((rows, d), np.float32)
    stats = xp.empty((2, rows), np.float32)  # mean, inv_std
    grid, block = _row_plan(rows, d)
    K._launch("dg_ln_fwd", grid, block, (x, gamma, beta, y, stats[0], stats[1], K._i64(rows), K._i32(d),
                                         K._f32(epsilon), np.int32(bool(rms))))
    return y, stats[0], stats[1]


def layer_norm_grad(dy, x, mean, inv_std, gamma=None, rms=False, need_input=True):
    """(dx or None, dgamma, dbeta) for dy, x [rows, D], as ``Backend.layer_norm_grad``."""
    xp = K._xp(x)
    x = K._check(x, "layer_norm_grad x")
    rows, d = _rows_d(x, "layer_norm_grad x")
    dy = K._check(dy, "layer_norm_grad dy", x.shape)
    mean = K._check(mean, "layer_norm_grad mean", (rows,))
    inv_std = K._check(inv_std, "layer_norm_grad inv_std", (rows,))
    gamma = None if gamma is None else K._check(gamma, "layer_norm_grad gamma", (d,))
    dx = None
    if need_input:
        dx = xp.empty((rows, d), np.float32)
        grid, block = _row_plan(rows, d)
        K._launch("dg_ln_grad_input", grid, block, (dy, x, gamma, mean, inv_std, dx, K._i64(rows), K._i32(d),
                                                    np.int32(bool(rms))))
    grads = xp.empty((2, d), np.float32)  # dgamma, dbeta
    K._launch("dg_ln_grad_params", (-(-d // 32),), (32, 8), (dy, x, mean, inv_std, grads[0], grads[1],
                                                            K._i64(rows), K._i32(d)))
    return dx, grads[0], grads[1]
