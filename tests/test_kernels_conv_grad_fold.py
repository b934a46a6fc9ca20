"""The convolution (and Dense) gradients with a fused ReLU's mask and the bias gradient folded in (issue 22).

``kernels.conv2d_grad_input`` / ``conv2d_grad_filter`` take ``relu_out`` (dy is read as
``dy * (y > 0)``) and the filter gradient ``with_bias`` (a row of ones below im2col gives the
bias gradient from the same launches); ``CupyBackend.conv2d_bias_act_grad`` uses both, and
``CupyBackend.dense_grad`` through it, as a 1x1 convolution. Checked
against the NumPy backend in float64 under the CPU emulation of our kernels (and on a GPU with
``pytest -m cuda``), on the awkward cases: every tile, split and unsplit reductions, odd channel
counts, strides, dilation, both paddings, views off the 16-byte grid.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

from deepgpu import backends, kernels as K
from deepgpu.backends.base import Backend
from deepgpu.testing import assert_scaled_close as check
from deepgpu.testing.emulation import custom_backend

RNG = np.random.default_rng(20261203)
F32 = np.float32


@contextlib.contextmanager
def _launch_names():
    """The names of the kernels launched inside (under the emulation; empty on a GPU)."""
    names = []
    emu = K._emulator
    if emu is not None:
        K._emulator = lambda name, grid, block, args: (names.append(name), emu(name, grid, block, args))
    try:
        yield names
    finally:
        K._emulator = emu


def rnd(*shape, lo=-1.0, hi=1.0):
    return RNG.uniform(lo, hi, size=shape).astype(F32)


def host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def f64(a):
    return np.asarray(host(a), np.float64)


def offset_view(xp, a):
    """``a``'s values in a C-contiguous view that starts 4 bytes past a 16-byte boundary."""
    flat = xp.empty(a.size + 8, F32)
    k = next(k for k in range(1, 8) if K._vec4(flat[k - 1:]) and not K._vec4(flat[k:]))
    view = flat[k:k + a.size].reshape(a.shape)
    view[...] = xp.asarray(a)
    return view


def _cpu():
    return backends.get("cpu")


def _forward(x, k, b, activation, s, p, d):
    """The float64 forward output y of conv2d_bias_act, as float32 (what the gradient reads)."""
    return _cpu().conv2d_bias_act(f64(x), f64(k), None if b is None else f64(b), activation, s, p, d).astype(F32)


# x shape, kernel shape, strides, padding, dilation: odd and 4n channel counts, O not a multiple of 4.
CASES = [
    ((2, 7, 6, 3), (3, 3, 3, 5), 1, "same", 1),
    ((2, 9, 8, 4), (3, 3, 4, 8), 2, "same", 1),
    ((1, 10, 9, 2), (3, 3, 2, 3), 1, "valid", 2),
    ((2, 8, 7, 8), (1, 1, 8, 7), (2, 1), "valid", 1),
    ((3, 6, 6, 4), (3, 3, 4, 36), 1, "same", 1),
]
IDS = [f"{x}-{k}-s{s}-{p}-d{d}" for x, k, s, p, d in CASES]


def _masked_case(case, zeros=True):
    """(x, k, dy, y, dy * (y > 0)) for a ReLU layer: y has about half its elements zero."""
    x_shape, k_shape, s, p, d = case
    x, k, b = rnd(*x_shape), rnd(*k_shape), rnd(k_shape[3])
    y = _forward(x, k, b, "relu", s, p, d)
    assert 0.2 < (y > 0).mean() < 0.8  # the mask matters
    dy = rnd(*y.shape)
    return x, k, dy, y, f64(dy) * (y > 0)


@pytest.mark.parametrize("tile", K.CONV_TILES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_masked_gradients_every_tile(xp, case, tile):
    """relu_out and with_bias on every tile, the reduction split (3) and not (1)."""
    x_shape, k_shape, s, p, d = case
    x, k, dy, y, g = _masked_case(case)
    C = _cpu()
    dx = K.conv2d_grad_input(xp.asarray(dy), xp.asarray(k), x_shape, s, p, d, relu_out=xp.asarray(y),
                             out=xp.full(x_shape, np.nan, F32), tile=tile)
    check(dx, C.conv2d_grad_input(g, f64(k), x_shape, s, p, d), f"grad_input relu {tile}")
    taps = k_shape[0] * k_shape[1] * k_shape[2]
    for splits in (1, 3):
        dk, db = K.conv2d_grad_filter(xp.asarray(x), xp.asarray(dy), k_shape, s, p, d, relu_out=xp.asarray(y),
                                      with_bias=True, out=xp.full((taps + 1, k_shape[3]), np.nan, F32),
                                      tile=tile, splits=splits)
        check(dk, C.conv2d_grad_filter(f64(x), g, k_shape, s, p, d), f"grad_filter relu {tile} splits={splits}")
        check(db, g.sum((0, 1, 2)), f"bias grad relu {tile} splits={splits}")


@pytest.mark.parametrize("case", CASES[1:2] + CASES[4:], ids=IDS[1:2] + IDS[4:])
def test_bias_row_without_mask_and_misaligned(xp, case):
    """The bias row alone (a linear layer), and the mask read from views off the 16-byte grid
    (scalar loads of every operand)."""
    x_shape, k_shape, s, p, d = case
    x, k, dy, y, g = _masked_case(case)
    C = _cpu()
    dk, db = K.conv2d_grad_filter(xp.asarray(x), xp.asarray(dy), k_shape, s, p, d, with_bias=True)
    check(dk, C.conv2d_grad_filter(f64(x), f64(dy), k_shape, s, p, d), "grad_filter + bias, no mask")
    check(db, f64(dy).sum((0, 1, 2)), "bias grad, no mask")
    odd = lambda a: offset_view(xp, a)
    dx = K.conv2d_grad_input(odd(dy), odd(k), x_shape, s, p, d, relu_out=odd(y))
    check(dx, C.conv2d_grad_input(g, f64(k), x_shape, s, p, d), "grad_input relu misaligned")
    dk, db = K.conv2d_grad_filter(odd(x), odd(dy), k_shape, s, p, d, relu_out=odd(y), with_bias=True)
    check(dk, C.conv2d_grad_filter(f64(x), g, k_shape, s, p, d), "grad_filter relu misaligned")
    check(db, g.sum((0, 1, 2)), "bias grad relu misaligned")


def test_fold_plans(monkeypatch):
    """The float4 flags and the bias-row bit the launchers pass: a mask off the 16-byte grid turns
    off float4 loads of dy's operand only (the emulation cannot see a misaligned float4)."""
    seen = []
    monkeypatch.setattr(K, "_sm_count", lambda xp: 132)
    monkeypatch.setattr(K, "_launch", lambda name, grid, block, args: seen.append((name, grid, args)))
    z = lambda *s: np.zeros(s, F32)
    x, dy, k = z(128, 26, 26, 32), z(128, 24, 24, 32), z(3, 3, 32, 32)
    for ym in (z(*dy.shape), offset_view(np, z(*dy.shape))):
        K.conv2d_grad_input(dy, k, x.shape, relu_out=ym)
        dk, db = K.conv2d_grad_filter(x, dy, k.shape, relu_out=ym, with_bias=True)
    names = [s[0] for s in seen]
    assert names == ["dg_conv2d_grad_input_128x32", "dg_conv2d_grad_filter_128x32", "dg_conv2d_sum_splits"] * 2
    (gi, gf, sums), (gi2, gf2, _) = seen[:3], seen[3:]
    assert gi[2][1] is not None and gf[2][2] is not None  # the mask goes to the kernels
    assert [int(gi[2][-1]), int(gf[2][-1]), int(gi2[2][-1]), int(gf2[2][-1])] == [7, 15, 6, 13]
    # The bias row: 289 rows of A (3 * 3 * 32 + 1), the sum over 289 * 32 outputs.
    assert gf[1][0] == -(-289 // 128) and int(sums[2][-1]) == 289 * 32 and gf[2][3].shape[1:] == (289, 32)
    assert dk.shape == (3, 3, 32, 32) and db.shape == (32,) and np.shares_memory(dk.base, db)


def test_launcher_errors():
    x, dy, k = rnd(1, 5, 5, 2), rnd(1, 3, 3, 4), rnd(3, 3, 2, 4)
    with pytest.raises(ValueError, match="relu_out"):
        K.conv2d_grad_input(dy, k, x.shape, relu_out=rnd(1, 3, 3, 3))
    with pytest.raises(ValueError, match="relu_out"):
        K.conv2d_grad_filter(x, dy, k.shape, relu_out=rnd(3, 3, 4))
    with pytest.raises(TypeError, match="float32"):
        K.conv2d_grad_filter(x, dy, k.shape, relu_out=f64(dy))
    with pytest.raises(ValueError, match="conv2d_grad_filter out"):
        K.conv2d_grad_filter(x, dy, k.shape, with_bias=True, out=np.empty(k.shape, F32))


# ------------------------------------------------------- the backend primitive
BACKEND_CASES = [
    # activation, with_bias, need_input, need_kernel, case
    ("relu", True, True, True, CASES[0]),
    ("relu", True, False, True, CASES[1]),
    ("relu", False, True, True, CASES[2]),
    ("relu", True, True, False, CASES[3]),
    ("relu", False, True, False, CASES[4]),
    (None, True, True, True, CASES[1]),
    ("linear", False, True, True, CASES[0]),
    ("relu6", True, True, True, CASES[3]),
    ("sigmoid", True, False, True, CASES[2]),
    ("tanh", False, True, True, CASES[4]),
]


@pytest.mark.parametrize("activation,with_bias,need_input,need_kernel,case", BACKEND_CASES)
def test_backend_conv2d_bias_act_grad(xp, activation, with_bias, need_input, need_kernel, case):
    """CupyBackend.conv2d_bias_act_grad (custom path) against the NumPy backend in float64, and the
    launches it makes: the two gradient kernels (and a split's sum), no relu_grad, no col_sum."""
    x_shape, k_shape, s, p, d = case
    x, k, b = rnd(*x_shape, lo=-3, hi=3), rnd(*k_shape), rnd(k_shape[3])  # x 3x: relu6's cap is reached
    y = _forward(x, k, b, activation, s, p, d)
    dy = rnd(*y.shape)
    ref = _cpu().conv2d_bias_act_grad(f64(dy), f64(x), f64(y), f64(k), activation, with_bias, need_input,
                                      need_kernel, s, p, d)
    B = custom_backend(xp)
    with _launch_names() as names:
        got = B.conv2d_bias_act_grad(xp.asarray(dy), xp.asarray(x), xp.asarray(y), xp.asarray(k), activation,
                                     with_bias, need_input, need_kernel, s, p, d, {})
    for what, g, r in zip(("dx", "dk", "db"), got, ref):
        assert (g is None) == (r is None), f"{what}: {g is None} vs {r is None}"
        if r is not None:
            check(g, r, f"{activation} {what}")
    if K._emulator is None:
        return
    if with_bias and not need_kernel:  # a frozen kernel's bias: the generic column sum, no wasted filter GEMM
        assert "dg_col_sum" in names and not any(n.startswith("dg_conv2d_grad_filter") for n in names), names
        return
    assert not {"dg_relu_grad", "dg_col_sum"} & set(names), names
    fused = ["dg_conv2d_grad_input"] * need_input + ["dg_conv2d_grad_filter"] * need_kernel
    assert [n.rsplit("_", 1)[0] if n[-1].isdigit() else n for n in names if n != "dg_conv2d_sum_splits"] == fused


def test_backend_falls_back_off_the_strict_float32_path(_emulator, monkeypatch):
    """float64 operands (and TF32's tensor-core path) keep the generic gradient, with its results."""
    from deepgpu import config
    case = CASES[0]
    x_shape, k_shape, s, p, d = case
    x, k, b = rnd(*x_shape), rnd(*k_shape), rnd(k_shape[3])
    y = _forward(x, k, b, "relu", s, p, d)
    dy = rnd(*y.shape)
    ref = _cpu().conv2d_bias_act_grad(f64(dy), f64(x), f64(y), f64(k), "relu", True, True, True, s, p, d)
    B = custom_backend(np)
    got = B.conv2d_bias_act_grad(f64(dy), f64(x), f64(y), f64(k), "relu", True, True, True, s, p, d)
    assert all(g.dtype == np.float64 for g in got)
    for what, g, r in zip(("dx", "dk", "db"), got, ref):
        check(g, r, f"float64 {what}")
    names = []
    monkeypatch.setattr(K, "_emulator", lambda name, grid, block, args: (names.append(name),
                                                                            _emulator(name, grid, block, args)))
    config.enable_tensor_float_32_execution(True)
    try:
        got = B.conv2d_bias_act_grad(dy, x, y, k, "relu", True, True, True, s, p, d)
    finally:
        config.enable_tensor_float_32_execution(False)
    assert "dg_relu_grad" in names and not any(n.startswith("dg_conv2d_grad") for n in names), names
    for what, g, r in zip(("dx", "dk", "db"), got, ref):
        check(g, r, f"tf32 {what}", rtol=5e-3)


# ------------------------------------------------------------ Dense, as a 1x1 convolution
DENSE_CASES = [
    # activation, with_bias, need_input, need_kernel, (m, k, n)
    ("relu", True, True, True, (6, 13, 7)),
    ("relu", True, True, True, (5, 36, 40)),
    ("relu", True, False, True, (3, 8, 5)),
    ("relu", False, True, False, (4, 9, 6)),
    (None, True, True, True, (7, 12, 10)),
    ("sigmoid", True, True, True, (2, 5, 3)),
    ("tanh", False, True, True, (3, 4, 9)),
    ("relu", True, True, False, (4, 6, 3)),
]


@pytest.mark.parametrize("activation,with_bias,need_input,need_kernel,shape", DENSE_CASES)
def test_backend_dense_grad(xp, activation, with_bias, need_input, need_kernel, shape):
    """CupyBackend.dense_grad against the NumPy backend in float64; on the strict float32 path a ReLU
    Dense launches the two convolution-gradient kernels only (no relu_grad, GEMM or column sum)."""
    m, k, n = shape
    x, w, b = rnd(m, k, lo=-2, hi=2), rnd(k, n), rnd(n)
    y = _cpu().dense(f64(x), f64(w), f64(b), activation).astype(F32)
    dy = rnd(m, n)
    ref = Backend.dense_grad(_cpu(), f64(dy), f64(x), f64(y), f64(w), activation, with_bias, need_input,
                             need_kernel)
    B = custom_backend(xp)
    with _launch_names() as names:
        got = B.dense_grad(xp.asarray(dy), xp.asarray(x), xp.asarray(y), xp.asarray(w), activation, with_bias,
                           need_input, need_kernel)
    for what, g, r in zip(("dx", "dw", "db"), got, ref):
        assert (g is None) == (r is None), f"{what}: {g is None} vs {r is None}"
        if r is not None:
            check(g, r, f"dense {activation} {what}")
    if K._emulator is not None and (need_kernel or not with_bias):
        assert not {"dg_relu_grad", "dg_col_sum"} & set(names) and not any("matmul" in n for n in names), names
        assert len([n for n in names if n != "dg_conv2d_sum_splits"]) == need_input + need_kernel, names


def test_empty_batch(xp):
    """A batch of 0: zero kernel and bias gradients, without a launch over empty operands."""
    x, dy = xp.zeros((0, 6, 6, 3), F32), xp.zeros((0, 4, 4, 5), F32)
    dk, db = K.conv2d_grad_filter(x, dy, (3, 3, 3, 5), relu_out=dy, with_bias=True)
    assert dk.shape == (3, 3, 3, 5) and not host(dk).any() and db.shape == (5,) and not host(db).any()
    dx, dw, db = custom_backend(xp).dense_grad(xp.zeros((0, 3), F32), xp.zeros((0, 4), F32), xp.zeros((0, 3), F32),
                                               xp.asarray(rnd(4, 3)), "relu", True)
    assert dx.shape == (0, 4) and dw.shape == (4, 3) and not host(dw).any() and not host(db).any()


EMPTY_SUMS = [  # (name, args): each has an empty reduction (0 input channels, 0 filters or k = 0)
    ("conv2d", lambda: (rnd(2, 5, 5, 0), rnd(3, 3, 0, 4))),
    ("conv2d_bias_act", lambda: (rnd(2, 5, 5, 0), rnd(3, 3, 0, 4), rnd(4), "sigmoid")),
    ("conv2d_grad_input", lambda: (rnd(2, 3, 3, 0), rnd(3, 3, 2, 0), (2, 5, 5, 2))),
    ("conv2d_grad_filter", lambda: (rnd(2, 5, 5, 0), rnd(2, 3, 3, 4), (3, 3, 0, 4))),
    ("conv2d_grad_filter", lambda: (rnd(2, 5, 5, 2), rnd(2, 3, 3, 0), (3, 3, 2, 0))),
    ("conv2d_bias_act_grad", lambda: (rnd(2, 3, 3, 4), rnd(2, 5, 5, 0), rnd(2, 3, 3, 4, lo=0), rnd(3, 3, 0, 4),
                                      "relu", True)),
    ("depthwise_conv2d_grad_filter", lambda: (rnd(2, 5, 5, 0), rnd(2, 3, 3, 0), (3, 3, 0, 1))),
    ("conv2d_grad_filter", lambda: (rnd(0, 5, 5, 2), rnd(0, 3, 3, 4), (3, 3, 2, 4))),  # a batch of 0
    # float16: the tensor-core kernels' path
    ("conv2d_grad_filter", lambda: (rnd(2, 5, 5, 0).astype(np.float16), rnd(2, 3, 3, 4).astype(np.float16),
                                    (3, 3, 0, 4))),
    ("conv2d_grad_filter", lambda: (rnd(0, 5, 5, 2).astype(np.float16), rnd(0, 3, 3, 4).astype(np.float16),
                                    (3, 3, 2, 4))),
    ("matmul", lambda: (rnd(2, 3, 0), rnd(2, 0, 4))),
    ("dense", lambda: (rnd(3, 0), rnd(0, 4), rnd(4), "sigmoid")),
    ("dense_grad", lambda: (rnd(3, 4), rnd(3, 0), rnd(3, 4, lo=0), rnd(0, 4), "relu", True)),
]


@pytest.mark.parametrize("name,args", EMPTY_SUMS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(EMPTY_SUMS)])
def test_empty_reductions_match_numpy(xp, name, args):
    """An empty sum (0 channels, 0 filters, k = 0) gives NumPy's result (zeros, act(bias), the bias
    gradient beside an empty filter gradient): the tiles, whose indexing divides by C and whose fast
    loads assume k > 0, are never launched on it (the emulation died of SIGFPE there)."""
    a = args()
    got = getattr(custom_backend(xp), name)(*[xp.asarray(v) if isinstance(v, np.ndarray) else v for v in a])
    ref = getattr(_cpu(), name)(*[f64(v) if isinstance(v, np.ndarray) else v for v in a])
    for g, r in zip(got if isinstance(got, tuple) else (got,), ref if isinstance(ref, tuple) else (ref,)):
        assert (g is None) == (r is None)
        if r is not None:
            assert g.shape == r.shape
            np.testing.assert_allclose(f64(g), r, rtol=1e-6, atol=1e-6)


def test_empty_reduction_launchers_refuse_clearly():
    """Called directly, the launchers name the empty sum they do not launch (not ZeroDivisionError)."""
    with pytest.raises(ValueError, match=r"k = 0"):
        K.matmul(np.zeros((3, 0), F32), np.zeros((0, 4), F32))
    with pytest.raises(ValueError, match="0 channels"):
        K.conv2d(np.zeros((1, 4, 4, 0), F32), np.zeros((3, 3, 0, 2), F32))
