"""Launchers of norm.cu: batch normalization over the last axis, training forward and backward.

x is [rows, C] float32 (the backend reshapes [..., C] to it). The forward is
two launches (statistics, then y), the backward two (both sums, then dx);
neither reads a value back to the host, so a CUDA graph records them.
"""
from __future__ import annotations

import numpy as np

# The package's helpers, looked up at each call (tests replace some, e.g. K._grid_items).
from .. import kernels as K
from .runtime import register

register("norm.cu", ("dg_bn_stats", "dg_bn_apply", "dg_bn_grad_sums", "dg_bn_grad_input"))


def _reduce_plan(xp, rows, c, splits=None):
    """(grid, block, rows_per) of dg_bn_stats / dg_bn_grad_sums for x [rows, C].

    Blocks of up to 32 channels x 256 / that row lanes; the rows split so that
    about four blocks run per SM, each lane reading at least 8 rows (as col_sum).
    ``splits`` overrides the row split (tests).
    """
    bx = 1
    while bx < min(c, 32):
        bx *= 2
    by = K.BLOCK // bx
    gx = -(-c // bx)
    if splits is None:
        splits = min(4 * K._sm_count(xp) // gx, rows // (8 * by))
    splits = max(1, min(int(splits), rows, K._MAX_GRID_Y))
    rows_per = -(-rows // splits)
    return (gx, -(-rows // rows_per)), (bx, by), rows_per


def _rows_c(x, what):
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{what}: expected a non-empty [rows, C] array, got shape {tuple(x.shape)}")
    return x.shape


def batch_norm_train(x, gamma=None, beta=None, epsilon=1e-3, *, splits=None):
    """(y, mean, var, inv_std) of x [rows, C], as ``Backend.batch_norm_train``; gamma, beta [C] or None."""
    xp = K._xp(x)
    x = K._check(x, "batch_norm x")
    rows, c = _rows_c(x, "batch_norm x")
    gamma = None if gamma is None else K._check(gamma, "batch_norm gamma", (c,))
    beta = None if beta is None else K._check(beta, "batch_norm beta", (c,))
    grid, block, rows_per = _reduce_plan(xp, rows, c, splits)
    stats = xp.empty((4, c), np.float32)  # mean, var, inv_std, scale = inv_std * gamma
    part = xp.empty((grid[1], 2, c), np.float32) if grid[1] > 1 else None
    counters = K._split_counters(xp, grid[0]) if grid[1] > 1 else None
    K._launch("dg_bn_stats", grid, block, (x, gamma, part, counters, stats[0], stats[1], stats[2], stats[3],
                                           K._i64(rows), K._i32(c), K._i64(rows_per), K._f32(epsilon)))
    y = xp.empty((rows, c), np.float32)
    vec = 4 if c % 4 == 0 and K._aligned16(x, y, stats, beta) else 1
    K._launch("dg_bn_apply", K._grid_items(x.size // vec), (K.BLOCK,),
              (x, stats[0], stats[3], beta, y, K._i64(rows), K._i32(c), np.int32(vec)))
    return y, stats[0], stats[1], stats[2]


def batch_norm_grad(dy, x, mean, inv_std, gamma=None, need_input=True, *, splits=None):
    """(dx or None, dgamma, dbeta) for dy, x [rows, C], as ``Backend.batch_norm_grad``."""
    xp = K._xp(x)
    x = K._check(x, "batch_norm_grad x")
    rows, c = _rows_c(x, "batch_norm_grad x")
    dy = K._check(dy, "batch_norm_grad dy", x.shape)
    mean = K._check(mean, "batch_norm_grad mean", (c,))
    inv_std = K._check(inv_std, "batch_norm_grad inv_std", (c,))
    gamma = None if gamma is None else K._check(gamma, "batch_norm_grad gamma", (c,))
    grid, block, rows_per = _reduce_plan(xp, rows, c, splits)
    out = xp.empty((5, c), np.float32)  # dgamma, dbeta, then dx's factors p, q, s
    part = xp.empty((grid[1], 2, c), np.float32) if grid[1] > 1 else None
    counters = K._split_counters(xp, grid[0]) if grid[1] > 1 else None
    K._launch("dg_bn_grad_sums", grid, block, (dy, x, mean, inv_std, gamma, part, counters, out[0], out[1],
                                               out[2:], K._i64(rows), K._i32(c), K._i64(rows_per)))
    dx = None
    if need_input:
        dx = xp.empty((rows, c), np.float32)
        vec = 4 if c % 4 == 0 and K._aligned16(dy, x, dx, mean, out) else 1
        K._launch("dg_bn_grad_input", K._grid_items(x.size // vec), (K.BLOCK,),
                  (dy, x, mean, out[2:], dx, K._i64(rows), K._i32(c), np.int32(vec)))
    return dx, out[0], out[1]
