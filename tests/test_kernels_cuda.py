"""Our CUDA kernels (deepgpu.kernels) against the NumPy backend, on awkward shapes.

Every case runs in two modes through the same Python launchers:

* ``cuda``: on the GPU via cupy.RawModule. Marked ``cuda``; skipped where no
  GPU is usable (tests/conftest.py).
* ``emulated``: the same ``.cu`` sources compiled for the CPU with
  ``g++ -fopenmp`` (deepgpu.testing.emulation): each CUDA thread of a block is an OpenMP thread,
  ``__syncthreads()`` an OpenMP barrier, ``__shared__`` a static array the
  block's threads share, blocks run one after another. Array arguments are
  copied into buffers with NaN margins that must come back untouched, and
  every scalar argument's NumPy type must match the C parameter's (CuPy
  would silently pass the wrong size). This checks the index math, tiling,
  bounds, reductions and launch arguments here, without a GPU; it does not
  check the GPU's memory model, warp behaviour, speed or nvcc's code.

Reference: the NumPy backend in float64; the error is measured as
max|kernel - ref| / max|ref| < 1e-4. Output buffers are filled with NaN
before each launch, so an element a kernel fails to write shows up.

On the GPU machine, first: ``python3 -m pytest -q -m cuda tests/test_kernels_cuda.py``,
then ``DEEPGPU_KERNELS=custom python3 -m pytest -q -m cuda tests/test_backend_parity.py``
and the same under ``compute-sanitizer --tool memcheck``.
"""
from __future__ import annotations

import collections
import contextlib
import re

import numpy as np
import pytest

import deepgpu
from deepgpu import backends, kernels as K
from deepgpu.testing import assert_scaled_close
from deepgpu.testing.emulation import CountingXP
from deepgpu.testing.emulation import current_custom as _current_custom, custom_backend as _custom_backend

RNG = np.random.default_rng(20240601)
F32 = np.float32


def _cpu():
    return backends.get("cpu")


# --------------------------------------------------------------- emulation
# The emulation lives in deepgpu.testing.emulation (the layer harness uses it too);
# it is built once per process and kept on disk, keyed by the kernel sources.


# ----------------------------------------------------------------- helpers
def rnd(*shape, lo=-1.0, hi=1.0):
    return RNG.uniform(lo, hi, size=shape).astype(F32)


def dev(xp, a):
    return xp.asarray(a) if a is not None else None


def host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def poisoned(xp, shape):
    return xp.full(shape, np.nan, F32)


def check(actual, ref, rtol=1e-4, what=""):
    assert_scaled_close(actual, ref, what, rtol)


def f64(a):
    return np.asarray(a, np.float64)


ACT_REF = {None: lambda y: y, "relu": lambda y: np.maximum(y, 0), "relu6": lambda y: np.clip(y, 0, 6),
           "sigmoid": lambda y: 1 / (1 + np.exp(-y)), "tanh": np.tanh}


# ------------------------------------------------------------------- matmul
MATMUL_SHAPES = [(1, 1, 1), (1, 7, 3), (5, 3, 70), (65, 17, 63), (130, 33, 129), (64, 64, 64), (3, 200, 5)]


@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("m,k,n", MATMUL_SHAPES)
def test_matmul(xp, m, k, n, ta, tb):
    a = rnd(k, m) if ta else rnd(m, k)
    b = rnd(n, k) if tb else rnd(k, n)
    ref = _cpu().matmul(f64(a), f64(b), ta, tb)
    out = K.matmul(dev(xp, a), dev(xp, b), ta, tb, out=poisoned(xp, (m, n)))
    check(out, ref, what=f"matmul {m}x{k}x{n} ta={ta} tb={tb}")


@pytest.mark.parametrize("activation", [None, "relu", "relu6", "sigmoid", "tanh"])
@pytest.mark.parametrize("m,k,n", [(1, 9, 5), (70, 20, 66)])
def test_dense_epilogue(xp, m, k, n, activation):
    x, w, b = rnd(m, k), rnd(k, n), rnd(n)
    ref = ACT_REF[activation](f64(x) @ f64(w) + f64(b))
    out = K.dense(dev(xp, x), dev(xp, w), dev(xp, b), activation, out=poisoned(xp, (m, n)))
    check(out, ref, what=f"dense {activation}")


@pytest.mark.parametrize("a_shape,b_shape,ta,tb", [
    ((3, 5, 7), (7, 4), False, False),
    ((2, 6, 9), (2, 9, 70), False, False),
    ((6, 9), (4, 6, 3), True, False),
    ((2, 9, 6), (2, 3, 9), True, True),
])
def test_matmul_batched(xp, a_shape, b_shape, ta, tb):
    a, b = rnd(*a_shape), rnd(*b_shape)
    ref = _cpu().matmul(f64(a), f64(b), ta, tb)
    out = K.matmul(dev(xp, a), dev(xp, b), ta, tb, out=poisoned(xp, ref.shape))
    check(out, ref, what="batched matmul")


# -------------------------------------------------------------- convolution
CONV_CASES = [
    # x shape, kernel shape, strides, padding, dilation
    ((1, 5, 7, 3), (3, 3, 3, 4), 1, "valid", 1),
    ((2, 9, 8, 5), (3, 3, 5, 7), 2, "same", 1),
    ((1, 6, 6, 3), (1, 1, 3, 5), 1, "same", 1),
    ((2, 11, 10, 2), (5, 5, 2, 3), 1, "same", 1),
    ((1, 12, 13, 3), (3, 3, 3, 2), (2, 1), "valid", 1),
    ((1, 10, 9, 2), (3, 3, 2, 3), 1, "same", 2),
    ((2, 7, 7, 1), (5, 5, 1, 3), 2, "same", 1),
    ((1, 9, 9, 3), (3, 3, 3, 70), 1, "valid", 1),
    ((2, 12, 12, 32), (3, 3, 32, 32), 1, "valid", 1),
    ((6, 12, 12, 3), (3, 3, 3, 5), 1, "valid", 1),
    ((1, 8, 8, 4), (1, 1, 4, 6), 2, "valid", 1),
]
CONV_IDS = [f"{x}-{k}-s{s}-{p}-d{d}" for x, k, s, p, d in CONV_CASES]


@pytest.mark.parametrize("x_shape,k_shape,s,p,d", CONV_CASES, ids=CONV_IDS)
def test_conv2d_forward(xp, x_shape, k_shape, s, p, d):
    x, k = rnd(*x_shape), rnd(*k_shape)
    ref = _cpu().conv2d(f64(x), f64(k), s, p, d)
    out = K.conv2d(dev(xp, x), dev(xp, k), s, p, d, out=poisoned(xp, ref.shape))
    check(out, ref, what="conv2d")


@pytest.mark.parametrize("activation", ["relu", "relu6"])
@pytest.mark.parametrize("x_shape,k_shape,s,p,d", CONV_CASES[:3], ids=CONV_IDS[:3])
def test_conv2d_bias_relu_epilogue(xp, x_shape, k_shape, s, p, d, activation):
    x, k, b = rnd(*x_shape, lo=-4, hi=4), rnd(*k_shape), rnd(k_shape[3])  # x 4x: relu6's cap is reached
    ref = ACT_REF[activation](_cpu().conv2d(f64(x), f64(k), s, p, d) + f64(b))
    out = K.conv2d(dev(xp, x), dev(xp, k), s, p, d, bias=dev(xp, b), activation=activation,
                   out=poisoned(xp, ref.shape))
    check(out, ref, what=f"conv2d + bias + {activation}")


@pytest.mark.parametrize("x_shape,k_shape,s,p,d", CONV_CASES, ids=CONV_IDS)
def test_conv2d_grad_input(xp, x_shape, k_shape, s, p, d):
    k = rnd(*k_shape)
    y_shape = _cpu().conv2d(np.zeros(x_shape, F32), k, s, p, d).shape
    dy = rnd(*y_shape)
    ref = _cpu().conv2d_grad_input(f64(dy), f64(k), x_shape, s, p, d)
    out = K.conv2d_grad_input(dev(xp, dy), dev(xp, k), x_shape, s, p, d, out=poisoned(xp, x_shape))
    check(out, ref, what="conv2d_grad_input")


@pytest.mark.parametrize("x_shape,k_shape,s,p,d", CONV_CASES, ids=CONV_IDS)
def test_conv2d_grad_filter(xp, x_shape, k_shape, s, p, d):
    x = rnd(*x_shape)
    y_shape = _cpu().conv2d(x, np.zeros(k_shape, F32), s, p, d).shape
    dy = rnd(*y_shape)
    ref = _cpu().conv2d_grad_filter(f64(x), f64(dy), k_shape, s, p, d)
    out = K.conv2d_grad_filter(dev(xp, x), dev(xp, dy), k_shape, s, p, d, out=poisoned(xp, k_shape))
    check(out, ref, what="conv2d_grad_filter")


# ------------------------------------------------- every GEMM tile, forced
# The launchers pick a tile (and split-K) per shape; these cases force each
# one on shapes with ragged edges in M, N and K, leading dimensions that are
# and are not multiples of 4 (float4 loads on and off), and split K.
def offset_view(xp, a):
    """``a``'s values in a C-contiguous view that starts 4 bytes past a 16-byte boundary."""
    a = np.asarray(host(a))
    flat = xp.empty(a.size + 8, F32)
    k = next(k for k in range(1, 8) if K._vec4(flat[k - 1:]) and not K._vec4(flat[k:]))
    view = flat[k:k + a.size].reshape(a.shape)
    view[...] = xp.asarray(a)
    return view


TILE_MATMUL_SHAPES = [(130, 33, 129), (68, 20, 132), (1, 8, 4), (40, 1, 36)]


@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("m,k,n", TILE_MATMUL_SHAPES)
@pytest.mark.parametrize("tile", K.MATMUL_TILES)
def test_matmul_tiles(xp, tile, m, k, n, ta, tb, splits):
    a = rnd(k, m) if ta else rnd(m, k)
    b = rnd(n, k) if tb else rnd(k, n)
    bias = rnd(n)
    ref = np.maximum(_cpu().matmul(f64(a), f64(b), ta, tb) + f64(bias), 0)
    out = K.matmul(dev(xp, a), dev(xp, b), ta, tb, dev(xp, bias), "relu", out=poisoned(xp, (m, n)),
                   tile=tile, splits=splits)
    check(out, ref, what=f"matmul {tile} {m}x{k}x{n} ta={ta} tb={tb} splits={splits}")


@pytest.mark.parametrize("tile", K.MATMUL_TILES)
def test_matmul_tiles_batched_split_misaligned(xp, tile):
    a, b, bias = rnd(3, 36, 44), rnd(3, 44, 40), rnd(40)
    ref = np.tanh(_cpu().matmul(f64(a), f64(b)) + f64(bias))
    for up in (lambda v: dev(xp, v), lambda v: offset_view(xp, v)):
        out = K.matmul(up(a), up(b), bias=dev(xp, bias), activation="tanh", out=up(np.full(ref.shape, np.nan, F32)),
                       tile=tile, splits=2)
        check(out, ref, what=f"batched matmul {tile}")


def test_gemm_plans(monkeypatch):
    """Tiles, split-K and float4 flags the launchers choose (on a 132-SM device)."""
    seen = []
    monkeypatch.setattr(K, "_sm_count", lambda xp: 132)
    monkeypatch.setattr(K, "_launch", lambda name, grid, block, args: seen.append((name, grid, block, args)))
    z = lambda *s: np.zeros(s, F32)
    K.matmul(z(4096, 4096), z(4096, 4096))
    K.dense(z(128, 1024), z(1024, 512), z(512), "relu")
    K.matmul(z(128, 1024), z(128, 512), transpose_a=True)
    K.matmul(z(7, 9), z(9, 10))
    big, gemm, dw, tiny = seen
    assert big[0] == "dg_matmul_nn" and big[1] == (32, 32, 1) and big[2] == (256,) and int(big[3][-1]) == 7
    # 16 tiles of 64x64 for 132 SMs: K = 1024 in 8 splits of 128, added up by the last split of each tile.
    assert gemm[0] == "dg_matmul_nn_64x64" and gemm[1] == (2, 8, 8) and gemm[2] == (128,)
    assert (int(gemm[3][-3]), int(gemm[3][-2])) == (8, 128) and gemm[3][4].shape == (1, 8, 128, 512)
    assert gemm[3][5].dtype == np.int32 and not gemm[3][5].any()
    assert dw[0] == "dg_matmul_tn_64x64" and dw[1] == (16, 8, 1) and dw[3][4] is None
    assert tiny[0] == "dg_matmul_nn_64x64" and int(tiny[3][-1]) == 0  # rows of 9 and 10 floats: no float4
    seen.clear()
    x, dy = z(128, 26, 26, 32), z(128, 24, 24, 32)
    K.conv2d(x, z(3, 3, 32, 32))
    K.conv2d_grad_input(dy, z(3, 3, 32, 32), x.shape)
    K.conv2d_grad_filter(x, dy, (3, 3, 32, 32))
    K.conv2d(z(128, 28, 28, 1), z(3, 3, 1, 32))
    K.conv2d(z(128, 12, 12, 32), z(3, 3, 32, 64))
    names = [s[0] for s in seen]
    assert names == ["dg_conv2d_fwd_128x32", "dg_conv2d_grad_input_128x32", "dg_conv2d_grad_filter_128x32",
                     "dg_conv2d_sum_splits", "dg_conv2d_fwd_128x32", "dg_conv2d_fwd_64x64"]
    assert [int(s[3][-1]) for s in seen if s[0] != "dg_conv2d_sum_splits"] == [7, 7, 7, 6, 7]


CONV_TILE_CASES = CONV_CASES + [
    ((2, 10, 9, 8), (3, 3, 8, 12), 1, "same", 2),
    ((2, 9, 8, 4), (3, 3, 4, 8), 2, "same", 1),
    ((1, 11, 10, 4), (5, 5, 4, 4), 1, "same", 1),
    ((1, 6, 5, 8), (1, 1, 8, 36), 1, "valid", 1),
    ((3, 11, 9, 12), (3, 3, 12, 68), (1, 2), "valid", 1),
]
CONV_TILE_IDS = [f"{x}-{k}-s{s}-{p}-d{d}" for x, k, s, p, d in CONV_TILE_CASES]


@pytest.mark.parametrize("tile", K.CONV_TILES)
@pytest.mark.parametrize("x_shape,k_shape,s,p,d", CONV_TILE_CASES, ids=CONV_TILE_IDS)
def test_conv2d_tiles(xp, tile, x_shape, k_shape, s, p, d):
    x, k, b = rnd(*x_shape), rnd(*k_shape), rnd(k_shape[3])
    ref = np.maximum(_cpu().conv2d(f64(x), f64(k), s, p, d) + f64(b), 0)
    out = K.conv2d(dev(xp, x), dev(xp, k), s, p, d, bias=dev(xp, b), activation="relu",
                   out=poisoned(xp, ref.shape), tile=tile)
    check(out, ref, what=f"conv2d {tile}")
    dy = rnd(*ref.shape)
    gref = _cpu().conv2d_grad_input(f64(dy), f64(k), x_shape, s, p, d)
    g = K.conv2d_grad_input(dev(xp, dy), dev(xp, k), x_shape, s, p, d, out=poisoned(xp, x_shape), tile=tile)
    check(g, gref, what=f"conv2d_grad_input {tile}")
    wref = _cpu().conv2d_grad_filter(f64(x), f64(dy), k_shape, s, p, d)
    for splits in (1, 3):
        gw = K.conv2d_grad_filter(dev(xp, x), dev(xp, dy), k_shape, s, p, d, out=poisoned(xp, k_shape),
                                  tile=tile, splits=splits)
        check(gw, wref, what=f"conv2d_grad_filter {tile} splits={splits}")


@pytest.mark.parametrize("x_shape,k_shape,s,p,d", CONV_TILE_CASES[-5:], ids=CONV_TILE_IDS[-5:])
def test_conv2d_misaligned(xp, x_shape, k_shape, s, p, d):
    """Channel counts of 4n in views off the 16-byte grid: the scalar loads."""
    x, k = rnd(*x_shape), rnd(*k_shape)
    ref = _cpu().conv2d(f64(x), f64(k), s, p, d)
    out = K.conv2d(offset_view(xp, x), offset_view(xp, k), s, p, d, out=offset_view(xp, np.full(ref.shape, np.nan, F32)))
    check(out, ref, what="conv2d misaligned")
    dy = rnd(*ref.shape)
    g = K.conv2d_grad_input(offset_view(xp, dy), offset_view(xp, k), x_shape, s, p, d,
                            out=offset_view(xp, np.full(x_shape, np.nan, F32)))
    check(g, _cpu().conv2d_grad_input(f64(dy), f64(k), x_shape, s, p, d), what="conv2d_grad_input misaligned")
    gw = K.conv2d_grad_filter(offset_view(xp, x), offset_view(xp, dy), k_shape, s, p, d,
                              out=offset_view(xp, np.full(k_shape, np.nan, F32)))
    check(gw, _cpu().conv2d_grad_filter(f64(x), f64(dy), k_shape, s, p, d), what="conv2d_grad_filter misaligned")


def test_tiles_match_the_header():
    """GEMM_TILES (Python) and the DgTile typedefs of gemm_core.cuh agree."""
    text = K.sources()["gemm_core.cuh"]
    found = {m.group(6): tuple(int(m.group(i)) for i in range(1, 6)) for m in re.finditer(
        r"typedef DgTile<(\d+), (\d+), (\d+), (\d+), (\d+)> DgTile(\w+);", text)}
    assert found == K.GEMM_TILES


# ------------------------------------------------------------------ pooling
POOL_CASES = [
    ((1, 5, 5, 3), 2, None, "valid"),
    ((2, 7, 6, 5), 3, 2, "same"),
    ((1, 4, 4, 1), 2, 1, "same"),
    ((2, 6, 6, 4), (2, 3), (1, 2), "valid"),
    ((1, 9, 9, 3), 3, 2, "valid"),
    ((3, 8, 8, 7), 2, None, "same"),
]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("x_shape,ps,st,p", POOL_CASES)
def test_max_pool(xp, x_shape, ps, st, p, ties):
    x = rnd(*x_shape)
    if ties:  # few distinct values: the first maximum of each window must win, as numpy.argmax
        x = np.round(x * 2).astype(F32)
    ref = _cpu().max_pool2d(f64(x), ps, st, p)
    y = K.max_pool2d(dev(xp, x), ps, st, p, out=poisoned(xp, ref.shape))
    check(y, ref, what="max_pool2d")
    dy = rnd(*ref.shape)
    gref = _cpu().max_pool2d_grad(f64(dy), f64(x), ref, ps, st, p)
    g = K.max_pool2d_grad(dev(xp, dy), dev(xp, x), ps, st, p, out=poisoned(xp, x_shape))
    check(g, gref, what="max_pool2d_grad")


@pytest.mark.parametrize("x_shape,ps,st,p", POOL_CASES)
def test_avg_pool(xp, x_shape, ps, st, p):
    x = rnd(*x_shape)
    ref = _cpu().avg_pool2d(f64(x), ps, st, p)
    y = K.avg_pool2d(dev(xp, x), ps, st, p, out=poisoned(xp, ref.shape))
    check(y, ref, what="avg_pool2d")
    dy = rnd(*ref.shape)
    gref = _cpu().avg_pool2d_grad(f64(dy), x_shape, ps, st, p)
    g = K.avg_pool2d_grad(dev(xp, dy), x_shape, ps, st, p, out=poisoned(xp, x_shape))
    check(g, gref, what="avg_pool2d_grad")


# Cases for the fast paths of pool.cu: vec = 4 (C % 4 == 0, aligned), the
# tiled backward (stride == window, no padding before), the unrolled 2x2 and
# 3x3 windows, and the fallbacks of each.
POOL_FAST_CASES = [
    ((2, 6, 6, 8), 2, None, "valid"),        # tiles, vec 4, 2x2
    ((2, 7, 9, 4), 2, None, "valid"),        # tiles: a row and a column in no window
    ((1, 7, 7, 4), 2, None, "same"),         # tiles: windows clipped at the bottom and right
    ((2, 9, 10, 4), 3, None, "valid"),       # tiles, 3x3
    ((1, 8, 9, 12), 3, None, "same"),        # tiles 3x3, padding after only
    ((1, 7, 8, 8), 3, None, "same"),         # stride == window, padding before: the gather
    ((2, 5, 6, 8), 2, 1, "same"),            # overlapping 2x2, vec 4
    ((1, 9, 9, 4), 3, 2, "same"),            # overlapping 3x3, vec 4
    ((1, 6, 7, 4), (4, 3), (2, 3), "same"),  # window size known only at run time, vec 4
    ((1, 4, 5, 4), 1, None, "valid"),        # 1x1 tiles
    ((2, 6, 6, 6), 2, None, "valid"),        # tiles, C % 4 != 0: vec 1
    ((1, 9, 7, 5), 3, None, "valid"),        # tiles 3x3, vec 1
]
POOL_VARIANTS = ["plain", "ties", "nan", "misaligned", "small_grid", "wide"]


def misaligned(xp, a):
    """``a``'s values in a C-contiguous view whose start is not on a 16-byte boundary."""
    a = xp.asarray(a)
    flat = xp.empty(a.size + 4, F32)
    k = next(k for k in range(1, 4) if not K._aligned16(flat[k:]))
    view = flat[k:k + a.size].reshape(a.shape)
    view[...] = a
    assert a.size == 0 or not K._aligned16(view)
    return view


def check_nan(actual, ref, what):
    """As check(), where ref may hold NaNs: the kernel must give NaN exactly there."""
    a, ref = host(actual).astype(np.float64), np.asarray(ref, np.float64)
    assert (np.isnan(a) == np.isnan(ref)).all(), f"{what}: NaNs at other places than the reference's"
    check(np.where(np.isnan(ref), 0, a), np.where(np.isnan(ref), 0, ref), what=what)


def _pool_variant(xp, monkeypatch, variant):
    """(x transform, device upload, output allocator) for one variant of the pooling tests."""
    if variant == "small_grid":  # two blocks: every grid-stride loop goes round
        monkeypatch.setattr(K, "_grid_items", lambda n: (2,))
    if variant == "wide":  # the 64-bit index path, on small arrays
        monkeypatch.setattr(K, "_POOL_WIDE_FROM", 0)
    up = (lambda a: misaligned(xp, a)) if variant == "misaligned" else (lambda a: dev(xp, a))
    if variant == "misaligned":
        alloc = lambda shape: misaligned(xp, np.full(shape, np.nan, F32))
    elif variant == "nan":  # a poison that is not NaN, since NaN is a right answer here
        alloc = lambda shape: xp.full(shape, 7e30, F32)
    else:
        alloc = lambda shape: poisoned(xp, shape)
    return up, alloc


@pytest.mark.parametrize("variant", POOL_VARIANTS)
@pytest.mark.parametrize("x_shape,ps,st,p", POOL_FAST_CASES)
def test_max_pool_fast_paths(xp, monkeypatch, x_shape, ps, st, p, variant):
    up, alloc = _pool_variant(xp, monkeypatch, variant)
    x = rnd(*x_shape)
    if variant in ("ties", "nan"):
        x = np.round(x * 2).astype(F32)
    if variant == "nan":  # NaN beats every number; of several, the first wins
        x[RNG.uniform(size=x.shape) < 0.15] = np.nan
    ref = _cpu().max_pool2d(f64(x), ps, st, p)
    y = K.max_pool2d(up(x), ps, st, p, out=alloc(ref.shape))
    check_nan(y, ref, f"max_pool2d {variant}")
    dy = rnd(*ref.shape)
    gref = _cpu().max_pool2d_grad(f64(dy), f64(x), ref, ps, st, p)
    g = K.max_pool2d_grad(up(dy), up(x), ps, st, p, out=alloc(x_shape))
    check(g, gref, what=f"max_pool2d_grad {variant}")


@pytest.mark.parametrize("variant", ["plain", "misaligned", "small_grid", "wide"])
@pytest.mark.parametrize("x_shape,ps,st,p", POOL_FAST_CASES)
def test_avg_pool_fast_paths(xp, monkeypatch, x_shape, ps, st, p, variant):
    up, alloc = _pool_variant(xp, monkeypatch, variant)
    x = rnd(*x_shape)
    ref = _cpu().avg_pool2d(f64(x), ps, st, p)
    check(K.avg_pool2d(up(x), ps, st, p, out=alloc(ref.shape)), ref, what=f"avg_pool2d {variant}")
    dy = rnd(*ref.shape)
    gref = _cpu().avg_pool2d_grad(f64(dy), x_shape, ps, st, p)
    g = K.avg_pool2d_grad(up(dy), x_shape, ps, st, p, out=alloc(x_shape))
    check(g, gref, what=f"avg_pool2d_grad {variant}")


def test_pool_fast_path_choice(monkeypatch):
    """The launchers pick vec = 4 and the tiled backward exactly where they apply."""
    seen = []
    monkeypatch.setattr(K, "_launch", lambda name, grid, block, args: seen.append((name, int(args[-2]), int(args[-1]))))
    x = np.zeros((1, 6, 6, 8), F32)
    K.max_pool2d_grad(np.zeros((1, 3, 3, 8), F32), x)
    K.max_pool2d_grad(np.zeros((1, 3, 3, 8), F32), x, 3, 2, "same")
    K.max_pool2d(np.zeros((1, 6, 6, 6), F32))
    K.avg_pool2d_grad(np.zeros((1, 3, 3, 8), F32), x.shape)
    K.avg_pool2d_grad(np.zeros((1, 3, 3, 8), F32), x.shape, 2, 2, "same")
    K.avg_pool2d(misaligned(np, x))
    assert seen == [("dg_max_pool_bwd_tiles", 4, 0), ("dg_max_pool_bwd", 4, 0), ("dg_max_pool_fwd", 1, 0),
                    ("dg_avg_pool_bwd_tiles", 4, 0), ("dg_avg_pool_bwd_tiles", 4, 0), ("dg_avg_pool_fwd", 1, 0)]


# --------------------------------------------------------------- optimizers
N_PARAMS = 1000  # not a multiple of the block


def _slots(n, k):
    return [rnd(n, lo=0.0, hi=1.0) if i else rnd(n) for i in range(k)]


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_adam(xp, wd):
    p, g, m = rnd(N_PARAMS), rnd(N_PARAMS), rnd(N_PARAMS)
    v = rnd(N_PARAMS, lo=0.0, hi=1.0)
    ref = [f64(a).copy() for a in (p, g, m, v)]
    _cpu().adam_update(*ref, 1e-2, 0.9, 0.999, 1e-7, 3, wd)
    d = [dev(xp, a) for a in (p, g, m, v)]
    K.adam(*d, 1e-2, 0.9, 0.999, 1e-7, 3, wd)
    for what, a, r in zip("pgmv", d, ref):
        check(a, r, what=f"adam {what}")


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd(xp, momentum, nesterov):
    p, g, m = rnd(N_PARAMS), rnd(N_PARAMS), rnd(N_PARAMS)
    ref = [f64(a).copy() for a in (p, g, m)]
    _cpu().sgd_update(ref[0], ref[1], ref[2] if momentum else None, 0.1, momentum, nesterov)
    d = [dev(xp, a) for a in (p, g, m)]
    K.sgd(d[0], d[1], d[2] if momentum else None, 0.1, momentum, nesterov)
    for what, a, r in zip("pgm", d, ref):
        check(a, r, what=f"sgd {what}")


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_rmsprop(xp, centered, momentum):
    p, g = rnd(N_PARAMS), rnd(N_PARAMS)
    v = rnd(N_PARAMS, lo=0.5, hi=1.0)
    mg = rnd(N_PARAMS, lo=-0.1, hi=0.1) if centered else None
    mom = rnd(N_PARAMS) if momentum else None
    arrs = (p, g, v, mg, mom)
    ref = [None if a is None else f64(a).copy() for a in arrs]
    _cpu().rmsprop_update(*ref, 1e-2, 0.9, momentum, 1e-7)
    d = [dev(xp, a) for a in arrs]
    K.rmsprop(*d, 1e-2, 0.9, momentum, 1e-7)
    for what, a, r in zip(["p", "g", "v", "mg", "mom"], d, ref):
        if a is not None:
            check(a, r, what=f"rmsprop {what}")


@pytest.mark.parametrize("rule", ["adam", "sgd", "rmsprop"])
@pytest.mark.parametrize("with_hp", [False, True])
def test_update_many(xp, rule, with_hp):
    """Eleven variables (two launches: eight, then three), some empty, each as the one-variable kernel does it."""
    sizes = [37, 1, 0, 300, 5, 2, 64, 9, 1000, 3, 17]
    decays = [i % 2 == 0 for i in range(len(sizes))]
    lr, wd, step = 1e-2, 0.05, 3
    nslots = {"adam": 2, "sgd": 1, "rmsprop": 3}[rule]
    ps = [rnd(n) for n in sizes]
    gs = [rnd(n) for n in sizes]
    slots = [[rnd(n, lo=0.1, hi=1.0) for n in sizes] for _ in range(nslots)]
    if rule == "rmsprop":
        slots[1] = [rnd(n, lo=-0.1, hi=0.1) if i % 3 else None for i, n in enumerate(sizes)]
        slots[2] = [rnd(n) if i % 2 else None for i, n in enumerate(sizes)]
    refs = [[f64(p).copy() for p in ps]] + [[None if a is None else f64(a).copy() for a in sl] for sl in slots]
    C = _cpu()
    for i in range(len(sizes)):
        ref = [r[i] for r in refs]
        if rule == "adam":
            C.adam_update(ref[0], f64(gs[i]), ref[1], ref[2], lr, 0.9, 0.999, 1e-7, step, wd if decays[i] else 0.0)
        elif rule == "sgd":
            C.sgd_update(ref[0], f64(gs[i]), ref[1], lr, 0.9, True)
        else:
            C.rmsprop_update(ref[0], f64(gs[i]), ref[1], ref[2], ref[3], lr, 0.9, 0.5, 1e-7)
    d = [[dev(xp, p) for p in ps]] + [[dev(xp, a) for a in sl] for sl in slots]
    dg = [dev(xp, g) for g in gs]
    hp = None
    if with_hp:
        hp = poisoned(xp, (4,))
        K.set_scalars(hp, [lr * (1 - 0.999 ** step) ** 0.5 / (1 - 0.9 ** step), lr * wd] if rule == "adam" else [lr])
    bad = 99.0 if with_hp else lr  # with hp the launch's own lr is ignored
    if rule == "adam":
        K.adam_many(d[0], dg, d[1], d[2], bad, 0.9, 0.999, 1e-7, 1 if with_hp else step, wd, decays, hp=hp)
    elif rule == "sgd":
        K.sgd_many(d[0], dg, d[1], bad, 0.9, True, hp=hp)
    else:
        K.rmsprop_many(d[0], dg, d[1], d[2], d[3], bad, 0.9, 0.5, 1e-7, hp=hp)
    for j, (dl, rl) in enumerate(zip(d, refs)):
        for i, (a, r) in enumerate(zip(dl, rl)):
            if a is not None and a.size:
                check(a, r, what=f"{rule}_many array {j} of variable {i}")
    with pytest.raises(ValueError, match="different lengths"):
        K.sgd_many(d[0], dg[:-1], None, lr)
    with pytest.raises(ValueError, match="gradient 1 has"):
        K.sgd_many(d[0][:2], [dg[0], dg[0]], None, lr)


def test_optimizer_kernels_read_scalars_from_the_device(xp):
    """With hp given, the step's scalars come from that array, not from the launch arguments."""
    lr, wd, step = 1e-2, 0.05, 4
    step_size = lr * (1 - 0.999 ** step) ** 0.5 / (1 - 0.9 ** step)
    p, g, m = rnd(N_PARAMS), rnd(N_PARAMS), rnd(N_PARAMS)
    v = rnd(N_PARAMS, lo=0.0, hi=1.0)
    ref = [f64(a).copy() for a in (p, g, m, v)]
    _cpu().adam_update(*ref, lr, 0.9, 0.999, 1e-7, step, wd)
    d = [dev(xp, a) for a in (p, g, m, v)]
    hp = poisoned(xp, (4,))
    K.set_scalars(hp, [step_size, lr * wd])
    K.adam(*d, 123.0, 0.9, 0.999, 1e-7, 1, wd, hp=hp)  # lr and step deliberately wrong
    for what, a, r in zip("pgmv", d, ref):
        check(a, r, what=f"adam(hp) {what}")
    p, g, m = rnd(N_PARAMS), rnd(N_PARAMS), rnd(N_PARAMS)
    ref = [f64(a).copy() for a in (p, g, m)]
    _cpu().sgd_update(ref[0], ref[1], ref[2], 0.1, 0.9, True)
    d = [dev(xp, a) for a in (p, g, m)]
    K.set_scalars(hp, [0.1])
    K.sgd(d[0], d[1], d[2], 7.0, 0.9, True, hp=hp)
    check(d[0], ref[0], what="sgd(hp) p")
    p, g = rnd(N_PARAMS), rnd(N_PARAMS)
    v = rnd(N_PARAMS, lo=0.5, hi=1.0)
    ref = [f64(a).copy() for a in (p, g, v)]
    _cpu().rmsprop_update(ref[0], ref[1], ref[2], None, None, 1e-2, 0.9, 0.0, 1e-7)
    d = [dev(xp, a) for a in (p, g, v)]
    K.set_scalars(hp, [1e-2, 3.0, 4.0, 5.0])
    K.rmsprop(d[0], d[1], d[2], None, None, 9.0, 0.9, 0.0, 1e-7, hp=hp)
    check(d[0], ref[0], what="rmsprop(hp) p")
    np.testing.assert_array_equal(host(hp), np.array([1e-2, 3, 4, 5], F32))
    with pytest.raises(ValueError, match="hp must be a float32"):
        K.adam(*d[:2], d[2].copy(), d[2].copy(), 1e-3, 0.9, 0.999, 1e-7, 1, hp=hp[:1])


def test_dropout_replay_counter(xp):
    """A replay count mixes into Philox's counter words 2 and 3; the count advances on the device."""
    n, rate, seed, offset = 1001, 0.5, 99, 5
    ctr = xp.asarray(np.array([0], np.uint64))
    _, m0 = K.dropout(None, rate, seed, offset, mask=poisoned(xp, (n,)))
    _, m_ctr0 = K.dropout(None, rate, seed, offset, mask=poisoned(xp, (n,)), replay=ctr)
    np.testing.assert_array_equal(host(m_ctr0), host(m0))  # a count of 0 is the plain stream
    K.counter_add(ctr, 3)
    assert int(host(ctr)[0]) == 3
    _, m3 = K.dropout(None, rate, seed, offset, mask=poisoned(xp, (n,)), replay=ctr)
    m3 = host(m3)
    assert (m3 != host(m0)).mean() > 0.3
    scale = F32(1 / (1 - rate))
    for q in (0, 7, 250):
        ctr_q = offset + q
        r = _philox_ref([ctr_q, 0, 3, 0], [seed, 0])
        for j in range(4):
            if 4 * q + j < n:
                assert m3[4 * q + j] == (scale if (r[j] >> 8) / 16777216.0 >= rate else 0.0)


# -------------------------------------------------- softmax, dropout, misc
@pytest.mark.parametrize("rows,cols", [(1, 10), (7, 3), (5, 300), (3, 1), (33, 64)])
def test_softmax_cross_entropy(xp, rows, cols):
    logits = rnd(rows, cols, lo=-5, hi=5)
    labels = np.eye(cols, dtype=F32)[RNG.integers(0, cols, rows)] * 0.9 + 0.1 / cols
    lref, pref = _cpu().softmax_cross_entropy(f64(logits), f64(labels))
    loss, prob = K.softmax_cross_entropy(dev(xp, logits), dev(xp, labels),
                                         loss=poisoned(xp, (rows,)), prob=poisoned(xp, (rows, cols)))
    check(loss, lref, what="softmax_cross_entropy loss")
    check(prob, pref, what="softmax_cross_entropy prob")
    dy = rnd(rows)
    gref = (pref - f64(labels)) * f64(dy)[:, None]
    g = K.softmax_cross_entropy_grad(prob, dev(xp, labels), dev(xp, dy), out=poisoned(xp, (rows, cols)))
    check(g, gref, what="softmax_cross_entropy_grad")


@pytest.mark.parametrize("rows,cols", [(5, 3), (130, 10), (1, 300), (7, 1)])
def test_sparse_softmax_cross_entropy(xp, rows, cols):
    logits = rnd(rows, cols, lo=-5, hi=5)
    labels = RNG.integers(0, cols, rows).astype(np.int32)
    if rows > 2:
        labels[1], labels[2] = -1, cols  # no class: loss 0, gradient 0
    onehot = (labels[:, None] == np.arange(cols)).astype(np.float64)
    lref, pref = _cpu().softmax_cross_entropy(f64(logits), onehot)
    loss, prob = K.sparse_softmax_cross_entropy(dev(xp, logits), dev(xp, labels),
                                                loss=poisoned(xp, (rows,)), prob=poisoned(xp, (rows, cols)))
    check(loss, lref, what="sparse_softmax_cross_entropy loss")
    check(prob, pref, what="sparse_softmax_cross_entropy prob")
    dy = rnd(rows)
    g = K.sparse_softmax_cross_entropy_grad(prob, dev(xp, labels), dev(xp, dy), out=poisoned(xp, (rows, cols)))
    check(g, (pref * onehot.sum(1, keepdims=True) - onehot) * f64(dy)[:, None],
          what="sparse_softmax_cross_entropy_grad")  # rows without a class: 0
    with pytest.raises(TypeError, match="int32 labels"):
        K.sparse_softmax_cross_entropy(dev(xp, logits), dev(xp, labels.astype(np.int64)))
    with pytest.raises(ValueError, match="labels for"):
        K.sparse_softmax_cross_entropy(dev(xp, logits), dev(xp, labels[:-1]))


@pytest.mark.parametrize("rows,cols", [(5, 3), (130, 10), (1, 300), (7, 1)])
def test_softmax_rows_and_argmax_hits(xp, rows, cols):
    x = rnd(rows, cols, lo=-8, hi=8)
    check(K.softmax(dev(xp, x), out=poisoned(xp, (rows, cols))), _cpu().softmax(f64(x)), what="softmax")
    if cols > 2 and rows > 1:
        x[0, 1] = x[0, 2] = x[0].max() + 1  # tie: first maximum
        x[1, 2] = np.nan  # NaN: the maximum
    want = np.argmax(x, -1)
    labels = want.astype(np.int32)
    labels[::3] = (labels[::3] + 1) % cols
    hits = host(K.argmax_hits(dev(xp, x), dev(xp, labels), out=poisoned(xp, (rows,))))
    np.testing.assert_array_equal(hits, (want == labels).astype(F32))
    with pytest.raises(ValueError, match="cols >= 1"):
        K.argmax_hits(dev(xp, np.zeros((3, 0), F32)), dev(xp, np.zeros(3, np.int32)))


@pytest.mark.parametrize("activation", [None, "relu", "relu6", "sigmoid", "tanh"])
def test_bias_act(xp, activation):
    x, b = rnd(7, 13, lo=-8, hi=8), rnd(13)
    ref = ACT_REF[activation](f64(x) + f64(b))
    check(K.bias_act(dev(xp, x), dev(xp, b), activation, out=poisoned(xp, x.shape)), ref, what="bias_act")


def test_relu_grad(xp):
    dy, x = rnd(3, 5, 7), rnd(3, 5, 7)
    ref = _cpu().relu_grad(f64(dy), f64(x))
    check(K.relu_grad(dev(xp, dy), dev(xp, x), out=poisoned(xp, x.shape)), ref, what="relu_grad")


@pytest.mark.parametrize("rows,cols", [(5, 3), (1000, 37), (1, 70), (600, 1)])
def test_col_sum(xp, rows, cols):
    x = rnd(rows, cols)
    check(K.col_sum(dev(xp, x), out=poisoned(xp, (cols,))), f64(x).sum(0), what="col_sum")


EW_VARIANTS = ["plain", "misaligned", "small_grid"]


def _ew_variant(xp, monkeypatch, variant):
    if variant == "small_grid":  # two blocks: every grid-stride loop goes round
        monkeypatch.setattr(K, "_grid_items", lambda n: (2,))
    if variant == "misaligned":
        return lambda a: misaligned(xp, a)
    return lambda a: dev(xp, a)


@pytest.mark.parametrize("variant", EW_VARIANTS + ["inplace"])
@pytest.mark.parametrize("shape,with_bias", [((6, 8), True), ((200, 12), True), ((100, 13), True),
                                             ((3, 5, 4), False), ((3, 5, 3), False)])
def test_bias_act_vector_paths(xp, monkeypatch, shape, with_bias, variant):
    """vec = 4 needs the size (and with a bias, cols) a multiple of 4 and aligned pointers."""
    up = _ew_variant(xp, monkeypatch, variant)
    for activation in ("relu", "sigmoid"):
        x = rnd(*shape, lo=-4, hi=4)
        b = rnd(shape[-1]) if with_bias else None
        ref = ACT_REF[activation](f64(x) + (f64(b) if with_bias else 0))
        xd = up(x)
        out = xd if variant == "inplace" else (misaligned(xp, np.full(shape, np.nan, F32))
                                               if variant == "misaligned" else poisoned(xp, shape))
        y = K.bias_act(xd, up(b) if with_bias else None, activation, out=out)
        check(y, ref, what=f"bias_act {activation} {variant}")


@pytest.mark.parametrize("variant", EW_VARIANTS)
@pytest.mark.parametrize("shape", [(3, 5, 7), (4, 6, 8), (600, 4)])
def test_relu_grad_vector_paths(xp, monkeypatch, shape, variant):
    up = _ew_variant(xp, monkeypatch, variant)
    dy, x = rnd(*shape), rnd(*shape)
    x.reshape(-1)[:3] = 0.0  # x == 0 passes no gradient
    ref = _cpu().relu_grad(f64(dy), f64(x))
    out = misaligned(xp, np.full(shape, np.nan, F32)) if variant == "misaligned" else poisoned(xp, shape)
    check(K.relu_grad(up(dy), up(x), out=out), ref, what=f"relu_grad {variant}")


@pytest.mark.parametrize("misalign", [False, True])
@pytest.mark.parametrize("rows,cols", [(1000, 32), (300, 8), (2000, 12), (513, 4), (0, 4), (3000, 6)])
def test_col_sum_vector_paths(xp, rows, cols, misalign):
    """cols % 4 == 0 sums 4 columns per thread; row splits > 1 add a second pass."""
    x = rnd(rows, cols)
    xd = misaligned(xp, x) if misalign else dev(xp, x)
    check(K.col_sum(xd, out=poisoned(xp, (cols,))), f64(x).sum(0), what=f"col_sum {rows}x{cols}")


# ------------------------------------------------------- batch normalization
@contextlib.contextmanager
def _nan_empty(xp):
    """The launchers' xp.empty gives NaN-filled arrays meanwhile: an output a kernel leaves unwritten shows."""
    real = xp.empty

    def empty(shape, dtype=F32, *a, **k):
        out = real(shape, dtype, *a, **k)
        if np.dtype(dtype).kind == "f":
            out.fill(np.nan)
        return out

    xp.empty = empty
    try:
        yield
    finally:
        xp.empty = real


# At least 3 rows: with 1 or 2, dx is 0 up to rounding (each x is its own mean, or xhat = +-1).
BN_CASES = [(3, 1), (5, 3), (7, 1), (3, 33), (300, 16), (130, 70), (2000, 12), (4000, 5), (1500, 37)]


@pytest.mark.parametrize("splits", [None, 1, 3, 64])
@pytest.mark.parametrize("rows,c", BN_CASES)
def test_batch_norm(xp, rows, c, splits):
    """Forward (statistics, y) and backward (dgamma, dbeta, dx) against the generic version in
    float64, with the rows in one block column or split (the last block merges the parts)."""
    x = rnd(rows, c, lo=-3.0, hi=5.0)  # a mean away from 0: the variance is not the mean square
    g, b, dy = rnd(c, lo=0.5, hi=1.5), rnd(c), rnd(rows, c)
    ref = _cpu().batch_norm_train(f64(x), f64(g), f64(b), 1e-3)
    with _nan_empty(xp):
        got = K.batch_norm_train(dev(xp, x), dev(xp, g), dev(xp, b), 1e-3, splits=splits)
    for name, a, want in zip(("y", "mean", "var", "inv_std"), got, ref):
        check(a, want, what=f"batch_norm {name} {rows}x{c} splits={splits}")
    gref = _cpu().batch_norm_grad(f64(dy), f64(x), ref[1], ref[3], f64(g))
    with _nan_empty(xp):
        grads = K.batch_norm_grad(dev(xp, dy), dev(xp, x), got[1], got[3], dev(xp, g), splits=splits)
    for name, a, want in zip(("dx", "dgamma", "dbeta"), grads, gref):
        check(a, want, what=f"batch_norm_grad {name} {rows}x{c} splits={splits}")
    if xp is np and None in K._counters:
        assert not K._counters[None].any(), "a launch left its block counters non-zero"


@pytest.mark.parametrize("variant", EW_VARIANTS)
@pytest.mark.parametrize("rows,c", [(600, 16), (97, 8), (50, 6)])
def test_batch_norm_without_gamma_beta_and_vector_paths(xp, monkeypatch, rows, c, variant):
    """gamma and beta None (scale 1, shift 0), dx not asked for; vec = 4 needs C % 4 == 0 and
    aligned pointers (misaligned: the scalar path), small_grid: grid-stride loops go round."""
    up = _ew_variant(xp, monkeypatch, variant)
    x, dy = rnd(rows, c, lo=-2.0, hi=3.0), rnd(rows, c)
    ref = _cpu().batch_norm_train(f64(x), None, None, 1e-2)
    with _nan_empty(xp):
        y, mean, var, inv = K.batch_norm_train(up(x), None, None, 1e-2)
    for a, want in zip((y, mean, var, inv), ref):
        check(a, want, what=f"batch_norm no gamma/beta {variant}")
    gref = _cpu().batch_norm_grad(f64(dy), f64(x), ref[1], ref[3], None)
    with _nan_empty(xp):
        dx, dgamma, dbeta = K.batch_norm_grad(up(dy), up(x), mean, inv, None)
        check(dx, gref[0], what=f"batch_norm_grad dx {variant}")
        none, dg2, db2 = K.batch_norm_grad(up(dy), up(x), mean, inv, None, need_input=False)
    assert none is None
    for a in (dgamma, dg2):
        check(a, gref[1], what="batch_norm_grad dgamma")
    for a in (dbeta, db2):
        check(a, gref[2], what="batch_norm_grad dbeta")


def test_batch_norm_launcher_errors():
    x = rnd(6, 4)
    with pytest.raises(ValueError, match=r"gamma: expected shape \(4,\), got \(3,\)"):
        K.batch_norm_train(x, rnd(3))
    with pytest.raises(ValueError, match=r"non-empty \[rows, C\]"):
        K.batch_norm_train(np.zeros((0, 4), F32))
    with pytest.raises(TypeError, match="float32"):
        K.batch_norm_grad(x.astype(np.float64), x, rnd(4), rnd(4))


def test_backend_batch_norm_custom_path(xp):
    """The CuPy backend's batch_norm_train / _grad: [..., C] through the kernels (2 launches each
    way), float64 and bad shapes through the generic version and its errors."""
    B = _custom_backend(xp)
    C = _cpu()
    x, g, b = rnd(3, 5, 4, 6, lo=-1.0, hi=3.0), rnd(6, lo=0.5, hi=1.5), rnd(6)
    dy = rnd(*x.shape)
    launches = []
    real, prev = K._emulator, B.kernels

    def count(name, grid, block, args):
        launches.append(name)
        if real is not None:
            real(name, grid, block, args)
        else:
            K.function(name)(grid, block, tuple(K._NULL if a is None else a for a in args))

    K._emulator, B.kernels = count, "custom"
    try:
        y, mean, var, inv = B.batch_norm_train(xp.asarray(x), xp.asarray(g), xp.asarray(b), 1e-3)
        dx, dgamma, dbeta = B.batch_norm_grad(xp.asarray(dy), xp.asarray(x), mean, inv, xp.asarray(g), True)
    finally:
        K._emulator, B.kernels = real, prev
    assert launches == ["dg_bn_stats", "dg_bn_apply", "dg_bn_grad_sums", "dg_bn_grad_input"], launches
    ref = C.batch_norm_train(f64(x), f64(g), f64(b), 1e-3)
    for a, want in zip((y, mean, var, inv), ref):
        check(host(a), want, what="backend batch_norm_train")
    gref = C.batch_norm_grad(f64(dy), f64(x), ref[1], ref[3], f64(g))
    for a, want in zip((dx, dgamma, dbeta), gref):
        check(host(a), want, what="backend batch_norm_grad")
    y64 = B.batch_norm_train(xp.asarray(f64(x)), None, None, 1e-3)[0]
    assert y64.dtype == np.float64
    check(host(y64), C.batch_norm_train(f64(x), None, None, 1e-3)[0], what="backend float64 fallback")
    with pytest.raises(ValueError, match=r"gamma has shape \(5,\), expected \(6,\)"):
        B.batch_norm_train(xp.asarray(x), xp.asarray(rnd(5)), None, 1e-3)

def _philox_ref(c, k):
    """Philox-4x32-10 in Python (the published algorithm), for the kernel's dropout."""
    c, k0, k1 = list(c), k[0], k[1]
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [((p1 >> 32) ^ c[1] ^ k0) & 0xFFFFFFFF, p1 & 0xFFFFFFFF,
             ((p0 >> 32) ^ c[3] ^ k1) & 0xFFFFFFFF, p0 & 0xFFFFFFFF]
        k0, k1 = (k0 + 0x9E3779B9) & 0xFFFFFFFF, (k1 + 0xBB67AE85) & 0xFFFFFFFF
    return c


def test_philox_reference_matches_published_vectors():
    # Known-answer vectors of Random123 (kat_vectors, philox4x32 with 10 rounds).
    assert _philox_ref([0, 0, 0, 0], [0, 0]) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert _philox_ref([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2) == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]


def test_dropout(xp):
    n, rate, seed, offset = 4099, 0.3, 0x1234_5678_9ABC, 17
    x = rnd(n)
    y, mask = K.dropout(dev(xp, x), rate, seed, offset, mask=poisoned(xp, (n,)), out=poisoned(xp, (n,)))
    mask, y = host(mask), host(y)
    scale = F32(1 / (1 - rate))
    assert set(np.unique(mask).tolist()) <= {0.0, float(scale)}
    assert abs((mask == 0).mean() - rate) < 0.03
    np.testing.assert_array_equal(y, x * mask)
    # The same numbers as the published Philox, element i from counter offset + i // 4.
    want = np.empty(n, F32)
    for q in range(-(-n // 4)):
        ctr = offset + q
        r = _philox_ref([ctr & 0xFFFFFFFF, ctr >> 32, 0, 0], [seed & 0xFFFFFFFF, seed >> 32])
        for j in range(4):
            if 4 * q + j < n:
                want[4 * q + j] = scale if (r[j] >> 8) / 16777216.0 >= rate else 0.0
    np.testing.assert_array_equal(mask, want)
    # Mask only, same seed and offset: the same mask.
    _, m2 = K.dropout(None, rate, seed, offset, mask=poisoned(xp, (n,)))
    np.testing.assert_array_equal(host(m2), mask)


# ------------------------------------------------ the backend, custom path
def test_backend_custom_path_matches_cpu(xp):
    B = _custom_backend(xp)
    prev = B.kernels
    B.kernels = "custom"
    try:
        C = _cpu()
        x, k, bias = rnd(2, 9, 8, 3), rnd(3, 3, 3, 5), rnd(5)
        dX = lambda a: xp.asarray(a)
        y = B.conv2d(dX(x), dX(k), (2, 2), "same", (1, 1))
        yref = C.conv2d(f64(x), f64(k), (2, 2), "same", (1, 1))
        check(host(y), yref, what="backend conv2d")
        dy = rnd(*yref.shape)
        check(host(B.conv2d_grad_input(dX(dy), dX(k), x.shape, (2, 2), "same", (1, 1))),
              C.conv2d_grad_input(f64(dy), f64(k), x.shape, (2, 2), "same", (1, 1)), what="backend grad_input")
        check(host(B.conv2d_grad_filter(dX(x), dX(dy), k.shape, (2, 2), "same", (1, 1))),
              C.conv2d_grad_filter(f64(x), f64(dy), k.shape, (2, 2), "same", (1, 1)), what="backend grad_filter")
        a, w = rnd(6, 9), rnd(9, 5)
        check(host(B.dense(dX(a), dX(w), dX(bias), "relu")), C.dense(f64(a), f64(w), f64(bias), "relu"),
              what="backend dense")
        check(host(B.matmul(dX(w), dX(a), True, True)), C.matmul(f64(w), f64(a), True, True),
              what="backend matmul tt")
        check(host(B.sum_to_shape(dX(y), (5,))), C.sum_to_shape(yref, (5,)), what="backend bias grad")
        check(host(B.max_pool2d(dX(x), 2, None, "same")), C.max_pool2d(f64(x), 2, None, "same"),
              what="backend max_pool2d")
        labels = np.eye(4, dtype=F32)[[0, 3, 1]]
        logits = rnd(3, 4)
        loss, prob = B.softmax_cross_entropy(dX(logits), dX(labels))
        lref, pref = C.softmax_cross_entropy(f64(logits), f64(labels))
        check(host(loss), lref, what="backend xent")
        check(host(B.softmax(dX(logits))), pref, what="backend softmax")
        np.testing.assert_array_equal(host(B.argmax_hits(dX(logits), dX(np.argmax(logits, -1).astype(np.int32)))),
                                      np.ones(3, F32))
        ints = np.array([0, 3, 1], np.int32)
        sl, sp = B.sparse_softmax_cross_entropy(dX(logits), dX(ints))
        check(host(sl), lref, what="backend sparse xent")
        check(host(B.sparse_softmax_cross_entropy_grad(sp, dX(ints), dX(np.ones(3, F32)))), pref - f64(labels),
              what="backend sparse xent grad")
        ps, gs = [rnd(4), rnd(3, 2)], [rnd(4), rnd(3, 2)]
        ref = [f64(p).copy() for p in ps]
        slots = [[np.zeros_like(p) for p in ref] for _ in range(2)]
        C.adam_update_many(ref, [f64(g) for g in gs], *slots, 1e-2, 0.9, 0.999, 1e-7, 1)
        dps = [dX(p) for p in ps]
        B.adam_update_many(dps, [dX(g) for g in gs], [dX(np.zeros_like(p)) for p in ps],
                           [dX(np.zeros_like(p)) for p in ps], 1e-2, 0.9, 0.999, 1e-7, 1)
        for got, want in zip(dps, ref):
            check(host(got), want, what="backend adam_update_many")
        # A case the kernels do not take (float64) falls back to the CuPy routines.
        check(host(B.matmul(dX(f64(a)), dX(f64(w)))), f64(a) @ f64(w), what="backend float64 fallback")
        mask = host(B.dropout_mask((3, 50), 0.5))
        assert set(np.unique(mask).tolist()) <= {0.0, 2.0}
        xs = rnd(3, 50)
        y, mask = B.dropout(dX(xs), 0.5)
        assert set(np.unique(host(mask)).tolist()) == {0.0, 2.0}
        check(host(y), f64(xs) * host(mask), what="backend dropout")
    finally:
        B.kernels = prev


@pytest.mark.parametrize("opt", ["adamw", "sgd-nesterov-wd", "rmsprop-centered", "adam-schedule-clip"])
def test_in_graph_updates_on_the_custom_path(xp, opt):
    """An optimizer's update written for a captured step (device scalars, one dg_update_many
    launch per eight variables) gives apply_gradients's results on the custom path."""
    from deepgpu import optimizers
    from deepgpu.tensor import Tensor, Variable

    make = {"adamw": lambda: optimizers.AdamW(1e-2, weight_decay=0.05),
            "sgd-nesterov-wd": lambda: optimizers.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
            "rmsprop-centered": lambda: optimizers.RMSprop(1e-2, momentum=0.5, centered=True),
            "adam-schedule-clip": lambda: optimizers.Adam(optimizers.schedules.ExponentialDecay(1e-2, 2, 0.5),
                                                          clipnorm=0.5)}[opt]
    with _current_custom(xp) as B:
        shapes = [(3, 4), (4,), (2, 2, 3)] + [(5,)] * 8  # eleven variables: two launches
        init = [rnd(*s) for s in shapes]
        vs = {k: [Variable(Tensor(xp.asarray(a), B), name=f"w{i}") for i, a in enumerate(init)] for k in "eg"}
        opts = {k: make() for k in "eg"}
        for k in "eg":
            opts[k].exclude_from_weight_decay(var_list=[vs[k][1]])
        hp = xp.zeros(4, F32)
        for _ in range(3):
            gs = [rnd(*s) for s in shapes]
            opts["e"].apply_gradients([(Tensor(xp.asarray(g), B), v) for g, v in zip(gs, vs["e"])])
            B.set_scalars(hp, opts["g"].graph_scalars_for_next_step())
            opts["g"].apply_gradients_in_graph([xp.asarray(g) for g in gs], vs["g"], hp)
            opts["g"].iterations += 1
        for e, g in zip(vs["e"] + opts["e"].variables, vs["g"] + opts["g"].variables):
            np.testing.assert_allclose(host(g.data), host(e.data), rtol=1e-5, atol=1e-6)


def count_launches(B, step, steps=2):
    """Per backend primitive over ``steps`` calls of ``step()``: [calls, our kernel launches,
    calls that launched none of ours] per step. Counts through ``K._emulator`` (which must
    be set); ``B``'s public methods are wrapped meanwhile."""
    from deepgpu.backends.cupy_backend import CupyBackend

    emu = K._emulator
    launches = [0]

    def hook(name, grid, block, args):
        launches[0] += 1
        emu(name, grid, block, args)

    rows = collections.defaultdict(lambda: [0, 0, 0])
    depth = [0]

    def wrap(name, fn):
        def inner(*a, **k):
            if depth[0]:
                return fn(*a, **k)
            depth[0] += 1
            before = launches[0]
            try:
                return fn(*a, **k)
            finally:
                depth[0] -= 1
                n = launches[0] - before
                r = rows[name]
                r[0], r[1], r[2] = r[0] + 1, r[1] + n, r[2] + (n == 0)
        return inner

    names = [n for n in dir(CupyBackend) if not n.startswith("_") and callable(getattr(CupyBackend, n))]
    K._emulator = hook
    try:
        for n in names:
            setattr(B, n, wrap(n, getattr(B, n)))
        for _ in range(steps):
            step()
    finally:
        K._emulator = emu
        for n in names:
            B.__dict__.pop(n, None)
    return {n: [v / steps for v in r] for n, r in rows.items()}


def test_seed_convnet_step_launch_budget(_emulator):
    """The eager step's launches on the custom path (each costs host time on a GPU): a
    primitive that loses its kernel, or a new CuPy routine in the step, shows up here.
    The budget is this commit's count (bench/GPU_KERNELS.md, bench/launch_count.py)."""
    from deepgpu import optimizers, zoo
    from deepgpu.tensor import Tensor

    K._emulator = _emulator
    try:
        with _current_custom(np) as B:
            deepgpu.set_seed(0)
            model = zoo.convnet(input_shape=(12, 12, 1))  # the seed's layers, "same" padding, small
            model.compile(optimizer=optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                          metrics=["accuracy"])
            x = Tensor(RNG.uniform(0, 1, (2, 12, 12, 1)).astype(F32), B)
            y = Tensor(RNG.integers(0, 10, 2).astype(np.int32), B)
            model.train_on_batch(x, y)
            real_xp = B.xp
            B.xp = routines = CountingXP(real_xp)  # the CuPy routines the backend calls, by name
            kernels = collections.Counter()  # our launches by kernel name
            K._emulator = lambda name, grid, block, args: (kernels.update([name]),
                                                           _emulator(name, grid, block, args))
            try:
                per = count_launches(B, lambda: model.train_on_batch(x, y))
            finally:
                B.xp = real_xp
    finally:
        K._emulator = None
    ours = sum(r[1] for r in per.values())
    assert ours <= 29, per
    # The Conv2D and Dense (as 1x1 convolution) gradients mask dy by the ReLU and sum the bias inside
    # the two convolution-gradient kernels: no relu_grad, column sum or gradient GEMM launches.
    assert per["conv2d_bias_act_grad"] == [4, 7, 0] and per["dense_grad"] == [2, 4, 0], per
    assert not {"dg_relu_grad", "dg_col_sum", "dg_matmul_nt", "dg_matmul_tn"} & set(kernels), kernels
    without = {n: r[2] for n, r in per.items() if r[2]}
    # Host-only calls and views launch nothing; activation_grad of the linear layer returns dy.
    cupy_kernels = {n: c for n, c in without.items()
                    if n not in ("conv_geometry", "reshape", "getitem", "broadcast_to", "to_numpy", "activation_grad")}
    assert per["adam_update_many"][1] == 2 and per["sparse_softmax_cross_entropy"][1] == 1, per
    # Each ReLU Conv2D is one fused launch (bias and relu in the epilogue): no conv2d call, no add or maximum.
    assert per["conv2d_bias_act"] == [4, 4, 0] and "conv2d" not in per, per
    by_routine = {n: c / 2 for n, c in routines.calls.items() if n not in ("empty", "empty_like")}
    # The CuPy routines left per step: the loss mean's gradient, dropout's, the loss tracker's scale
    # (the metrics' divisions run on the host after their read).
    assert sum(by_routine.values()) <= 5 and not {"add", "maximum"} & set(by_routine), by_routine
    assert sum(cupy_kernels.values()) <= 8, cupy_kernels


def test_batch_norm_op_launch_budget(_emulator):
    """ops.batch_norm and its gradient on the custom path: one backend call each way, two of
    our launches each, no CuPy routine (the chain of generic ops it replaced made about 25
    calls; ResNet-style steps have one per convolution)."""
    from deepgpu import autograd, ops
    from deepgpu.tensor import Tensor

    K._emulator = _emulator
    try:
        with _current_custom(np) as B:
            x = Tensor(rnd(4, 5, 5, 16, lo=-1.0, hi=2.0), B)
            g, b = Tensor(rnd(16, lo=0.5, hi=1.5), B), Tensor(rnd(16), B)
            dy = Tensor(rnd(4, 5, 5, 16), B)
            f = autograd.grads(lambda x, g, b: ops.batch_norm(x, g, b)[0])
            per = count_launches(B, lambda: f([x, g, b], dy), steps=1)
    finally:
        K._emulator = None
    assert per.pop("batch_norm_train") == [1, 2, 0] and per.pop("batch_norm_grad") == [1, 2, 0], per
    assert not any(r[1] for r in per.values()), per  # nothing else launched one of ours

# ------------------------------------------------------- a whole network
@pytest.mark.parametrize("opt", ["adam", "sgd", "rmsprop"])
def test_convnet_training_steps_cpu_vs_custom(xp, opt):
    """Steps of a small dropout-free convnet from the same weights: cpu vs the custom path
    (the optimizer's whole update is one or two dg_update_many launches there).

    Emulated: the CuPy backend's methods over NumPy, registered as "cuda" for the test.
    """
    from deepgpu import layers as L, optimizers
    from deepgpu.models import Sequential

    def build():
        deepgpu.set_seed(3)
        return Sequential([
            L.Conv2D(4, 3, activation="relu", input_shape=(10, 10, 1)),
            L.Conv2D(6, 3, activation="relu", padding="same", strides=2),
            L.MaxPooling2D(2),
            L.Flatten(),
            L.Dense(12, activation="relu"),
            L.Dense(10, activation="softmax"),
        ])

    x = RNG.uniform(0, 1, (5, 10, 10, 1)).astype(F32)
    y = RNG.integers(0, 10, 5).astype(np.int32)
    losses = {}
    with _current_custom(xp) as B:
        for name in ("cpu", "cuda"):
            backends._state.backend = B if name == "cuda" else backends.get("cpu")
            model = build()
            optimizer = {"adam": lambda: optimizers.Adam(1e-2),
                         "sgd": lambda: optimizers.SGD(0.05, momentum=0.9, nesterov=True),
                         "rmsprop": lambda: optimizers.RMSprop(1e-3, momentum=0.5, centered=True)}[opt]()
            model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            losses[name] = [model.train_on_batch(x, y) for _ in range(3)]  # [loss, accuracy] per step
    np.testing.assert_allclose(losses["cuda"], losses["cpu"], rtol=1e-4)


def test_batch_norm_network_steps_cpu_vs_custom(xp):
    """Training steps of a small network with BatchNormalization (last axis and axis 1), cpu vs
    the custom path: losses, then the moving statistics and a training-mode prediction."""
    from deepgpu import layers as L, optimizers
    from deepgpu.models import Sequential

    def build():
        deepgpu.set_seed(5)
        return Sequential([
            # No conv bias: before a BatchNormalization its gradient is 0 up to rounding, which Adam
            # would turn into full steps that differ between the paths (and move the moving mean).
            L.Conv2D(6, 3, use_bias=False, input_shape=(8, 8, 2)), L.BatchNormalization(momentum=0.5), L.ReLU(),
            L.BatchNormalization(axis=1, center=False), L.Flatten(), L.Dense(10, activation="softmax"),
        ])

    x = RNG.uniform(0, 1, (6, 8, 8, 2)).astype(F32)
    y = RNG.integers(0, 10, 6).astype(np.int32)
    out = {}
    with _current_custom(xp) as B:
        for name in ("cpu", "cuda"):
            backends._state.backend = B if name == "cuda" else backends.get("cpu")
            model = build()
            model.compile(optimizer=optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
            losses = [model.train_on_batch(x, y) for _ in range(3)]
            out[name] = (losses, [host(w.data) for w in model.layers[1].weights])
    np.testing.assert_allclose(out["cuda"][0], out["cpu"][0], rtol=1e-4)
    for got, want in zip(out["cuda"][1], out["cpu"][1]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

# ------------------------------------------------ compiling on the device
@pytest.mark.cuda
def test_precompile_and_compile_errors(monkeypatch, tmp_path):
    ok, why = deepgpu.cuda_status()
    if not ok:
        pytest.skip(why)
    times = K.precompile()
    assert set(times) == set(K.KERNELS)
    monkeypatch.setitem(K._file_of, "dg_broken", "broken.cu")
    real_source = K.source
    monkeypatch.setattr(K, "source", lambda f: 'extern "C" __global__ void dg_broken(float* x) { x[0] = q; }'
                        if f == "broken.cu" else real_source(f))
    monkeypatch.setenv("DEEPGPU_KERNEL_CACHE", str(tmp_path))
    with pytest.raises(K.KernelCompileError) as e:
        K.function("dg_broken")
    msg = str(e.value)
    assert "broken.cu" in msg and "dg_broken" in msg and '"q"' in msg
