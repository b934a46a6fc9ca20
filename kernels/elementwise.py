"""Launchers of elementwise.cu's remaining kernels: dropout (and the replay counter of a captured
step's dropout), the bias-and-activation epilogue, the ReLU gradient and column sums.

Helpers shared with the other launchers are read from the package at each
call (tests replace some of them there).
"""
from __future__ import annotations

import numpy as np

from .. import kernels as K
from .runtime import register

# dg_sum_splits has no launcher here; bench/pool_micro.py times it.
register("elementwise.cu", ("dg_dropout", "dg_counter_add", "dg_bias_act", "dg_relu_grad", "dg_col_sum",
                            "dg_sum_splits"))


def dropout_offsets(n: int) -> int:
    """How far one ``dropout`` call of ``n`` elements advances the random offset."""
    return -(-int(n) // 4)


def dropout(x, rate, seed, offset, mask=None, out=None, replay=None):
    """(x * mask, mask), mask = 1/(1-rate) where uniform(seed, offset, i) >= rate, else 0.

    With x None, only ``mask`` (then required, any shape) is written and
    (None, mask) returned. The caller advances ``offset`` by
    ``dropout_offsets(size)`` per call so that calls never reuse numbers.
    replay: None, or a device uint64 array [1] whose value is mixed into the
    counter when the kernel runs (a captured step advances it per replay).
    """
    if replay is not None and (replay.dtype != np.uint64 or replay.size != 1):
        raise ValueError(f"dropout: replay must be a uint64 array of one value, got {replay.dtype} {replay.shape}")
    if x is None:
        if mask is None:
            raise ValueError("dropout: give x, or the mask array to fill")
        y = None
        K._inplace(mask, "dropout mask", mask.size)
    else:
        x = K._check(x, "dropout x")
        mask = K._output(K._xp(x), mask, x.shape, "dropout mask")
        y = K._output(K._xp(x), out, x.shape, "dropout out")
    n = mask.size
    if n:
        # The grid and the fixed scalars, made once per size and rate (~2 us a call less). The rate's type is
        # in the key: 1 / (1 - rate) rounds as the rate's type computes it (np.float32(r) and the equal float
        # differ); an unhashable rate (a 0-d array) is planned at each call.
        key = ("dropout", n, type(rate), rate)
        try:
            plan = K._plans.get(key)
        except TypeError:
            key = plan = None
        if plan is None:
            plan = (K._grid1d(dropout_offsets(n)), (K._i64(n), K._f32(rate), K._f32(1.0 / (1.0 - rate))))
            if key is not None:
                K._plans[key] = plan
        K._launch("dg_dropout", plan[0], (K.BLOCK,),
                  (x, y, mask, *plan[1], np.uint64(int(seed) % 2**64), np.uint64(int(offset) % 2**64), replay))
    return y, mask


def counter_add(ctr, inc=1):
    """``ctr[0] += inc`` on the device (ctr: uint64 array [1]); one launch."""
    if ctr.dtype != np.uint64 or ctr.size != 1:
        raise ValueError(f"counter_add: ctr must be a uint64 array of one value, got {ctr.dtype} {ctr.shape}")
    K._launch("dg_counter_add", (1,), (32,), (ctr, np.uint64(int(inc) % 2**64)))


def bias_act(x, bias=None, activation=None, out=None):
    """``act(x + bias)`` over the last axis of x (bias [cols] or None); out may be x."""
    x = K._check(x, "bias_act x")
    cols = x.shape[-1] if x.ndim else 1
    if bias is not None:
        bias = K._check(bias, "bias_act bias", (cols,))
    out = K._output(K._xp(x), out, x.shape, "bias_act out")
    if out.size:
        vec = 4 if (out.size % 4 == 0 and (bias is None or cols % 4 == 0)
                    and K._aligned16(x, bias, out)) else 1
        K._launch("dg_bias_act", K._grid_items(out.size // vec), (K.BLOCK,),
                  (x, bias, out, K._i64(out.size // cols), K._i32(cols), K._act(activation), np.int32(vec)))
    return out


def relu_grad(dy, x, out=None):
    """``dy * (x > 0)`` in one launch (same shapes)."""
    dy, x = K._check(dy, "relu_grad dy"), K._check(x, "relu_grad x", dy.shape)
    out = K._output(K._xp(dy), out, dy.shape, "relu_grad out")
    if out.size:
        vec = 4 if out.size % 4 == 0 and K._aligned16(dy, x, out) else 1
        K._launch("dg_relu_grad", K._grid_items(out.size // vec), (K.BLOCK,),
                  (dy, x, out, K._i64(out.size), np.int32(vec)))
    return out


def _col_sum_pass(x, dst, plan):
    """One dg_col_sum launch: x [rows, cols] -> dst [splits, cols], plan = (grid, block, scalars)."""
    grid, block, scalars = plan
    K._launch("dg_col_sum", grid, block, (x, dst) + scalars)


def _col_sum_geometry(rows, cols, vec, max_splits, sm):
    groups = cols // vec
    bx = 1
    while bx < min(groups, 32):
        bx *= 2
    by = K.BLOCK // bx
    gx = -(-groups // bx)
    # About four blocks per SM, each thread summing at least 8 rows.
    splits = max(1, min(max_splits, 4 * sm // gx, rows // (8 * by), K._MAX_GRID_Y))
    rows_per = -(-rows // splits) if rows else 1
    splits = max(1, -(-rows // rows_per)) if rows else 1
    return splits, ((gx, splits), (bx, by), (K._i64(rows), K._i32(cols), K._i64(rows_per), np.int32(vec)))


def _col_sum_plan(rows, cols, vec, sm):
    """(splits, first pass, second pass by the parts' vector width {4: .., 1: ..} or None)."""
    splits, first = _col_sum_geometry(rows, cols, vec, K._MAX_GRID_Y, sm)
    if splits == 1:
        return 1, first, None
    second = {v: _col_sum_geometry(splits, cols, v, 1, sm)[1] for v in ((4, 1) if cols % 4 == 0 else (1,))}
    return splits, first, second


def col_sum(x, out=None):
    """Column sums of x [rows, cols] -> [cols] (a bias gradient), deterministic.

    The rows are split over enough blocks to fill the GPU; the same kernel then
    sums the parts [splits, cols] in a second launch. Both launches' geometry is
    planned once per (rows, cols, alignment).
    """
    xp = K._xp(x)
    x = K._check(x, "col_sum x")
    rows, cols = x.shape
    out = K._output(xp, out, (cols,), "col_sum out")
    if not cols:
        return out
    sm = K._sm_count(xp)
    key = ("col_sum", rows, cols, 4 if cols % 4 == 0 and K._aligned16(x) else 1, sm)
    plan = K._plans.get(key)
    if plan is None:
        plan = K._plans[key] = _col_sum_plan(rows, cols, key[3], sm)
    splits, first, second = plan
    if second is None:
        _col_sum_pass(x, out, first)
        return out
    parts = xp.empty((splits, cols), np.float32)
    _col_sum_pass(x, parts, first)
    _col_sum_pass(parts, out, second[4 if 4 in second and K._aligned16(parts) else 1])
    return out
