"""Launchers of matmul.cu (``matmul``, ``dense``), and the GEMM tiles of gemm_core.cuh that conv.py shares.

Helpers shared with the other launchers are read from the package at each
call (``K._launch``, ...): tests replace some of them there.
"""
from __future__ import annotations

import math

import numpy as np

from .. import kernels as K
from .runtime import register

# GEMM tiles of gemm_core.cuh (DgTile<name>): name -> (BM, BN, BK, TM, TN); a block
# has (BM / TM) * (BN / TN) threads. The 128x128 kernels carry no name suffix.
GEMM_TILES = {
    "128x128": (128, 128, 8, 8, 8),
    "128x64": (128, 64, 16, 8, 4),
    "128x32": (128, 32, 16, 8, 4),
    "64x64": (64, 64, 16, 8, 4),
    "32x32": (32, 32, 16, 4, 4),
}
MATMUL_TILES = ("128x128", "64x64", "32x32")
# The default (largest) tile; must equal DG_BM, DG_BN, DG_BK and the threads of DG_TM x DG_TN
# in gemm_core.cuh (a test checks).
TILE_M, TILE_N, TILE_K, GEMM_THREADS = 128, 128, 8, 256


def _kname(base, tile):
    return base if tile == "128x128" else f"{base}_{tile}"


register("matmul.cu", tuple(_kname(f"dg_matmul_{ta}{tb}", t) for t in MATMUL_TILES for ta in "nt" for tb in "nt"))


def _gemm_grid(m, n, z=1, tile="128x128"):
    bm, bn = GEMM_TILES[tile][:2]
    gy = -(-n // bn)
    if gy > K._MAX_GRID_Y or z > K._MAX_GRID_Y:
        raise ValueError(f"GEMM of {m}x{n} (batch {z}) exceeds the grid limits")
    return (-(-m // bm), gy, z)


def _threads(tile):
    bm, bn, _, tm, tn = GEMM_TILES[tile]
    return ((bm // tm) * (bn // tn),)


def _split(k, splits, bk):
    """(k_chunk, splits): k in chunks of whole k-steps, no chunk empty."""
    chunk = -(-(-(-k // max(1, splits))) // bk) * bk
    return chunk, max(1, -(-k // chunk))


def _matmul_split(m, n, k, nb, sm):
    """(tile, splits) for an [m, k] @ [k, n] product over nb batch items.

    The largest tile that still gives every SM a block; when even 64x64
    tiles are fewer than the SMs, K is split so that about two blocks per SM
    run, each summing at least 128 of k.
    """
    for tile in ("128x128", "64x64"):
        bm, bn = GEMM_TILES[tile][:2]
        tiles = -(-m // bm) * -(-n // bn) * nb
        if tiles >= sm:
            return tile, 1
    return "64x64", max(1, min(2 * sm // tiles, k // 128, K._MAX_GRID_Y // nb))


def _matmul_geometry(a_shape, b_shape, ta, tb, bias_shape):
    """(m, n, k, ba, bb, batch, nb) of ``op(a) @ op(b)``; ValueError naming the shapes that do not fit."""
    if len(a_shape) < 2 or len(b_shape) < 2:
        raise ValueError(f"matmul: operands must be at least 2-D, got {a_shape} and {b_shape}")
    m, k = (a_shape[-1], a_shape[-2]) if ta else a_shape[-2:]
    k2, n = (b_shape[-1], b_shape[-2]) if tb else b_shape[-2:]
    if k != k2:
        raise ValueError(f"matmul: inner dimensions differ ({k} vs {k2}) for {a_shape} and {b_shape}")
    ba, bb = a_shape[:-2], b_shape[:-2]
    if ba and bb and ba != bb:
        raise ValueError(f"matmul: batch axes {ba} and {bb} must be equal (or one operand 2-D)")
    batch = ba or bb
    nb = math.prod(batch)  # Python ints: no overflow, and 100x cheaper than np.prod on a tuple
    if bias_shape is not None and tuple(bias_shape) != (n,):
        raise ValueError(f"matmul bias: expected shape {(n,)}, got {tuple(bias_shape)}")
    return m, n, k, ba, bb, batch, nb


def _matmul_plan(xp, a_shape, b_shape, ta, tb, bias_shape, activation, tile, splits):
    m, n, k, ba, bb, batch, nb = _matmul_geometry(a_shape, b_shape, ta, tb, bias_shape)
    act = K._act(activation)
    out_shape = tuple(batch) + (m, n)
    if m * n * nb == 0:
        return out_shape, None
    if k == 0:  # the tiles' unguarded fast loads assume k > 0; Backend.matmul / dense compute it generically
        raise ValueError(f"matmul: an empty reduction (k = 0) of {a_shape} and {b_shape} is not launched")
    auto_tile, auto_splits = _matmul_split(m, n, k, nb, K._sm_count(xp))
    tile = tile or auto_tile
    if tile not in MATMUL_TILES:
        raise ValueError(f"matmul: tile {tile!r} is not one of {MATMUL_TILES}")
    chunk, splits = _split(k, splits or (auto_splits if tile == auto_tile else 1), GEMM_TILES[tile][2])
    lda, ldb = a_shape[-1], b_shape[-1]
    grid = _gemm_grid(m, n, nb * splits, tile)
    scalars = (K._i32(m), K._i32(n), K._i32(k), K._i32(lda), K._i32(ldb), K._i32(n), K._i64(m * k if ba else 0),
               K._i64(k * n if bb else 0), K._i64(m * n), act, np.int32(splits), K._i32(chunk))
    name = _kname("dg_matmul_" + ("t" if ta else "n") + ("t" if tb else "n"), tile)
    work = (nb, splits, m, n) if splits > 1 else None
    return out_shape, (name, grid, _threads(tile), scalars, lda % 4 == 0, ldb % 4 == 0, n % 4 == 0,
                       work, grid[0] * grid[1] * nb)


def matmul(a, b, transpose_a=False, transpose_b=False, bias=None, activation=None, out=None, *,
           tile=None, splits=None):
    """``act(op(a) @ op(b) + bias)``; a [..., m, k], b [..., k, n] after the transposes.

    Leading (batch) axes must be equal, or one operand 2-D (broadcast).
    bias [n] may be None. Returns [..., m, n] float32. One launch (split-K
    tiles add their partial sums in the same launch). ``tile`` (a name of
    MATMUL_TILES) and ``splits`` (of k) override the choice made per shape.
    """
    xp = K._xp(a)
    a, b = K._check(a, "matmul a"), K._check(b, "matmul b")
    if bias is not None:
        bias = K._check(bias, "matmul bias")
    key = ("mm", a.shape, b.shape, bool(transpose_a), bool(transpose_b),
           None if bias is None else bias.shape, activation, tile, splits, K._sm_count(xp))
    plan = K._plans.get(key)
    if plan is None:
        plan = K._plans[key] = _matmul_plan(xp, a.shape, b.shape, bool(transpose_a), bool(transpose_b),
                                            None if bias is None else bias.shape, activation, tile, splits)
    out_shape, p = plan
    out = K._output(xp, out, out_shape, "matmul out")
    if p is None:
        return out
    name, grid, block, scalars, va, vb, vc, work, tiles = p
    flags = K._FLAGS[(va and K._ptr(a) % 16 == 0) | 2 * (vb and K._ptr(b) % 16 == 0)
                     | 4 * (vc and K._ptr(out) % 16 == 0)]
    if work is None:
        extra = (None, None)
    else:
        extra = (xp.empty(work, np.float32), K._split_counters(xp, tiles))
    K._launch(name, grid, block, (a, b, out, bias) + extra + scalars + (flags,))
    return out


def dense(x, w, b=None, activation=None, out=None, **plan):
    """``act(x @ w + b)`` in one launch; x [m, k], w [k, n], b [n] or None."""
    return matmul(x, w, False, False, b, activation, out, **plan)
