"""image.cu (deepgpu.kernels.image) against the NumPy backend, emulated on the CPU and, where a GPU
is usable, on it (marked cuda); the CUDA backend's image_transform on it; its launch count."""
from __future__ import annotations

import numpy as np
import pytest

from deepgpu import backends, kernels as K
from deepgpu.kernels import image as IT
from deepgpu.testing import assert_scaled_close
from deepgpu.testing.emulation import CountingXP, current_custom

RNG = np.random.default_rng(20261203)
MODES = ["constant", "nearest", "reflect", "wrap"]
# Rows (a0, a1, a2, b0, b1, b2, c0, c1): identity, a shift out of range on two sides, a rotation
# with scale, a projective one, a zoom-out far past the edges (several reflections and wraps),
# and one whose k = c0 x + c1 y + 1 nears zero at the right edge (coordinates up to about 50).
TRANSFORMS = np.array([
    [1, 0, 0, 0, 1, 0, 0, 0],
    [1, 0, 1.5, 0, 1, -2.25, 0, 0],
    [0.8123, -0.3071, 1.2191, 0.3517, 0.9043, -0.7129, 0, 0],
    [1.1037, 0.1013, -0.4129, -0.2063, 0.9521, 0.6197, 0.0213, -0.0317],
    [3.7, 0.4, -9.3, -0.2, 4.1, -11.6, 0, 0],
    [1, 0, 0, 0, 1, 0, -0.23, 0],
], np.float32)


def host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def check(actual, ref, what, rtol=1e-5):
    assert_scaled_close(actual, ref, what, rtol)


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("fill_mode", MODES)
@pytest.mark.parametrize("rows,out_hw", [(slice(0, 6), (6, 5)), (slice(2, 3), (7, 9)), (slice(4, 5), (5, 6))],
                         ids=["per-image", "one-row", "zoomed-out"])
def test_image_transform_matches_the_numpy_backend(xp, interpolation, fill_mode, rows, out_hw):
    """The same taps and weights as the NumPy backend's float32 arithmetic: nearest sampling picks
    the same pixels (equal results), bilinear agrees to float32 rounding of the sums."""
    cpu = backends.get("cpu")
    t = TRANSFORMS[rows]
    x = RNG.uniform(-1, 1, (t.shape[0] if t.shape[0] > 1 else 3, 5, 6, 3)).astype(np.float32)
    oh, ow = out_hw
    ref = cpu.image_transform(x, t, oh, ow, interpolation, fill_mode, 0.5).astype(np.float64)
    got = IT.image_transform(xp.asarray(x), xp.asarray(t), oh, ow, interpolation, fill_mode, 0.5,
                             out=xp.full((x.shape[0], oh, ow, 3), np.nan, np.float32))
    if interpolation == "nearest":
        np.testing.assert_array_equal(host(got), ref.astype(np.float32))
    else:
        check(got, ref, f"image_transform {interpolation} {fill_mode}")
    dy = RNG.uniform(-1, 1, ref.shape).astype(np.float32)
    gref = cpu.image_transform_grad(dy.astype(np.float64), x.shape, t, interpolation, fill_mode)
    gx = IT.image_transform_grad(xp.asarray(dy), x.shape, xp.asarray(t), interpolation, fill_mode,
                                 out=xp.full(x.shape, np.nan, np.float32))
    check(gx, gref, f"image_transform_grad {interpolation} {fill_mode}")


def test_single_pixel_sides_and_wide_indices(xp, monkeypatch):
    """A side of one pixel (every mode but constant reads its only pixel), and 64-bit offsets."""
    monkeypatch.setattr(K, "_IT_WIDE_FROM", 1)
    cpu = backends.get("cpu")
    x = RNG.uniform(-1, 1, (2, 1, 4, 2)).astype(np.float32)
    t = TRANSFORMS[2:4]
    for mode in MODES:
        ref = cpu.image_transform(x, t, 3, 4, "bilinear", mode, -2.0).astype(np.float64)
        check(IT.image_transform(xp.asarray(x), xp.asarray(t), 3, 4, "bilinear", mode, -2.0), ref, mode)
        dy = RNG.uniform(-1, 1, ref.shape).astype(np.float32)
        check(IT.image_transform_grad(xp.asarray(dy), x.shape, xp.asarray(t), "bilinear", mode),
              cpu.image_transform_grad(dy.astype(np.float64), x.shape, t, "bilinear", mode), f"grad {mode}")


def test_bad_arguments_raise():
    x, t = np.zeros((2, 4, 4, 1), np.float32), np.zeros((1, 8), np.float32)
    with pytest.raises(ValueError, match="interpolation must be 'bilinear' or 'nearest', got 'bicubic'"):
        IT.image_transform(x, t, 4, 4, "bicubic")
    with pytest.raises(ValueError, match="fill_mode must be one of .* got 'mirror'"):
        IT.image_transform(x, t, 4, 4, "bilinear", "mirror")
    with pytest.raises(ValueError, match="1 or 2 rows of 8, got shape \\(3, 8\\)"):
        IT.image_transform(x, np.zeros((3, 8), np.float32), 4, 4)
    with pytest.raises(TypeError, match="float32"):
        IT.image_transform(x.astype(np.float64), t, 4, 4)
    with pytest.raises(ValueError, match="does not fit images of shape"):
        IT.image_transform_grad(np.zeros((2, 4, 4, 3), np.float32), x.shape, t)


def test_backend_hook_one_launch_each_way_and_no_cupy_routine(_emulator):
    """On the CUDA backend's custom path (emulated) image_transform and its gradient are one launch
    of ours each (the generic version is about 40 CuPy calls), equal to the CPU backend's result;
    a float64 batch still takes the generic path."""
    from deepgpu import autograd, ops
    from deepgpu.tensor import Tensor

    cpu = backends.get("cpu")
    x = RNG.uniform(-1, 1, (4, 6, 5, 3)).astype(np.float32)
    t = TRANSFORMS[:4]
    dy = RNG.uniform(-1, 1, (4, 7, 4, 3)).astype(np.float32)
    calls = []
    K._emulator = lambda name, grid, block, args: (calls.append(name), _emulator(name, grid, block, args))
    try:
        with current_custom(np) as B:
            real_xp = B.xp
            B.xp = routines = CountingXP(real_xp)
            try:
                f = autograd.grads(lambda x: ops.image_transform(x, Tensor(t, B), (7, 4), "bilinear", "reflect"))
                (gx,) = f([Tensor(x, B)], Tensor(dy, B))
            finally:
                B.xp = real_xp
            y = B.image_transform(x, t, 7, 4, "nearest", "wrap", 0.0)
            y64 = B.image_transform(x.astype(np.float64), t, 7, 4, "nearest", "wrap", 0.0)
    finally:
        K._emulator = None
    assert calls == ["dg_image_transform", "dg_image_transform_grad", "dg_image_transform"], calls
    assert not {n: c for n, c in routines.calls.items() if n not in ("empty", "empty_like")}, routines.calls
    check(gx.data, cpu.image_transform_grad(dy.astype(np.float64), x.shape, t, "bilinear", "reflect"), "op grad")
    np.testing.assert_array_equal(y, cpu.image_transform(x, t, 7, 4, "nearest", "wrap", 0.0))
    assert y64.dtype == np.float64
    np.testing.assert_array_equal(y64, y)


@pytest.mark.parametrize("make", [lambda L: L.RandomRotation(0.2, fill_mode="wrap"),
                                  lambda L: L.RandomZoom(0.2, 0.3, interpolation="nearest"),
                                  lambda L: L.RandomTranslation(0.1, 0.2, fill_mode="constant", fill_value=0.3),
                                  lambda L: L.RandomCrop(5, 6)], ids=["rotation", "zoom", "translation", "crop"])
def test_augmentation_layers_transform_in_one_launch(_emulator, make):
    """A geometric augmentation layer's training call on the CUDA backend (emulated) transforms
    the batch with one dg_image_transform launch, and gives the CPU backend's images for the
    same seed."""
    import deepgpu as dg
    from deepgpu import layers as L
    from deepgpu.tensor import Tensor

    x = RNG.uniform(0, 1, (4, 8, 8, 2)).astype(np.float32)
    dg.set_seed(5)
    want = host(make(L)(Tensor(x.copy(), backends.get("cpu")), training=True).data)
    calls = []
    K._emulator = lambda name, grid, block, args: (calls.append(name), _emulator(name, grid, block, args))
    try:
        with current_custom(np) as B:
            dg.set_seed(5)
            got = make(L)(Tensor(x, B), training=True).data
    finally:
        K._emulator = None
    assert calls.count("dg_image_transform") == 1, calls
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
