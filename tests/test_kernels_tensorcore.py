"""The tensor-core kernels (kernels/tensorcore.cu): TF32 float32, float16 and bfloat16 matmul and
2-D convolutions (forward, both gradients), under the CPU emulation and on a GPU (``cuda``).

Each result is checked against float64 NumPy on random data (never zeros) with shapes that
are not multiples of the 64 x 64 x 32 tile. For TF32 the reference rounds the inputs as the
tensor cores do (to nearest, ties away, 10-bit mantissa), so the check is tight (1e-5) and
the TF32 result must also differ measurably from the exact float32 product (else it was not
rounded). For 16-bit inputs the reference is the float64 product of the 16-bit inputs, and
the tolerance is that of the output's rounding (float16: 2^-11, bfloat16: 2^-8).
"""
from __future__ import annotations

import ctypes
import re
import subprocess

import numpy as np
import pytest

import deepgpu
from deepgpu import backends, config, kernels as K
from deepgpu.kernels import tensorcore as TC
from deepgpu.testing import emulation
from deepgpu.testing.emulation import current_custom

ml_dtypes = pytest.importorskip("ml_dtypes")  # bfloat16 arrays (deepgpu[mixed])
BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)
RNG = np.random.default_rng(22)
DTYPES = {"tf32": F32, "f16": F16, "bf16": BF16}
# Largest error relative to the largest reference value. TF32 against the TF32-rounded
# reference: float32 accumulation only. 16-bit: the output's rounding plus accumulation.
TOL = {"tf32": 1e-5, "f16": 1.5e-3, "bf16": 1e-2}


def tf32_round(a):
    """float32 -> TF32 as cvt.rna.tf32.f32: to nearest, ties away from zero, low 13 bits zero."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32)
    finite = (u & 0x7F800000) != 0x7F800000
    r = np.where(finite, (u + np.uint32(0x1000)) & np.uint32(0xFFFFE000), u).astype(np.uint32)
    return r.view(np.float32)


@pytest.fixture
def tf32():
    """TF32 on for the test, and off again after it."""
    config.enable_tensor_float_32_execution(True)
    try:
        yield
    finally:
        config.enable_tensor_float_32_execution(False)


def host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def rnd(*shape):
    a = RNG.uniform(-1.0, 1.0, shape).astype(np.float32)
    a[np.abs(a) < 1e-3] = 0.5  # never zeros
    return a


def inputs(prec, *arrays):
    """The arrays in the precision's dtype, and their float64 reference values (TF32-rounded for tf32)."""
    dt = DTYPES[prec]
    cast = [a.astype(dt) for a in arrays]
    ref = [(tf32_round(a) if prec == "tf32" else c.astype(np.float32)).astype(np.float64)
           for a, c in zip(arrays, cast)]
    return cast, ref


def device(xp, arrays):
    if xp is not np and arrays and arrays[0].dtype == BF16:
        import cupy
        if int(cupy.__version__.split(".")[0]) < 14:
            pytest.skip("bfloat16 arrays need CuPy 14+")
    return [xp.asarray(a) for a in arrays]


def rel_err(y, ref):
    return float(np.abs(host(y).astype(np.float64) - ref).max() / np.abs(ref).max())


def check(y, ref, prec, exact32=None):
    assert host(y).dtype == DTYPES[prec]
    assert host(y).shape == ref.shape
    err = rel_err(y, ref)
    assert err <= TOL[prec], f"{prec}: error {err:.3g} relative to the largest value, tolerance {TOL[prec]}"
    if exact32 is not None:
        # The reference from unrounded float32 inputs: TF32 must differ from it measurably.
        # (TF32 is off by 2e-4 to 5e-4 here, strict float32 by about 1e-7.)
        assert rel_err(y, exact32) > 5 * TOL["tf32"], "the TF32 result matches exact float32: inputs not rounded"


@pytest.fixture
def B(xp, tf32):
    with current_custom(xp) as b:
        yield b


CPU = backends.get("cpu")


# ------------------------------------------------------------------ the shim's rounding
SHIM_TEST = r"""
extern "C" float t_tf32(float f) { return nvcuda::wmma::__float_to_tf32(f); }
extern "C" unsigned short t_bf16(float f) { return __float2bfloat16_rn(f).x; }
extern "C" float t_bf16_back(unsigned short x) { __nv_bfloat16 b; b.x = x; return __bfloat162float(b); }
extern "C" unsigned short t_half(float f) { __half h = __float2half_rn(f); unsigned short u; __builtin_memcpy(&u, &h, 2); return u; }
extern "C" float t_mma_tf32(float a, float b) {
    nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 8, nvcuda::wmma::precision::tf32, nvcuda::wmma::row_major> fa;
    nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 8, nvcuda::wmma::precision::tf32, nvcuda::wmma::col_major> fb;
    nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 8, float> fc;
    nvcuda::wmma::fill_fragment(fa, 0.0f); nvcuda::wmma::fill_fragment(fb, 0.0f); nvcuda::wmma::fill_fragment(fc, 0.0f);
    fa.x[0] = a; fb.x[0] = b;
    nvcuda::wmma::mma_sync(fc, fa, fb, fc);
    return fc.x[0];
}
"""


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    ok, why = emulation.emulation_status()
    if not ok:
        pytest.skip(why)
    d = tmp_path_factory.mktemp("shim")
    (d / "shim.cpp").write_text(emulation._EMU_HEADER + SHIM_TEST)
    r = subprocess.run(["g++", *emulation._FLAGS, "-o", str(d / "shim.so"), str(d / "shim.cpp")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    lib = ctypes.CDLL(str(d / "shim.so"))
    for name, res, arg in (("t_tf32", ctypes.c_float, ctypes.c_float), ("t_bf16", ctypes.c_ushort, ctypes.c_float),
                           ("t_bf16_back", ctypes.c_float, ctypes.c_ushort), ("t_half", ctypes.c_ushort, ctypes.c_float)):
        getattr(lib, name).restype, getattr(lib, name).argtypes = res, [arg]
    lib.t_mma_tf32.restype, lib.t_mma_tf32.argtypes = ctypes.c_float, [ctypes.c_float, ctypes.c_float]
    return lib


def test_shim_tf32_rounds_to_nearest_ties_away(shim):
    u = 2.0 ** -10  # TF32's unit in the last place at 1
    cases = {1 + u / 2: 1 + u,                        # a tie: away from zero (round-to-even would give 1)
             -(1 + u / 2): -(1 + u),
             1 + u / 2 - 2.0 ** -23: 1.0,             # just below the tie
             1 + 3 * u / 2: 1 + 2 * u,                 # a tie between odd and even: away (here also even)
             1 + u + 2.0 ** -20: 1 + u,
             np.pi: 3.140625, 1.0: 1.0, 1e-30: float(tf32_round(np.float32([1e-30]))[0]),
             float(np.finfo(np.float32).max): np.inf, np.inf: np.inf, -np.inf: -np.inf}
    for v, want in cases.items():
        got = shim.t_tf32(np.float32(v))
        assert got == np.float32(want), (v, got, want)
    assert np.isnan(shim.t_tf32(np.nan))
    vals = rnd(2000) * np.float32(10.0) ** RNG.integers(-20, 20, 2000).astype(np.float32)
    assert np.array_equal([shim.t_tf32(v) for v in vals], tf32_round(vals))


def test_shim_mma_reads_tf32_operands_truncated(shim):
    # The tensor core ignores a float's low 13 bits: a product of unconverted operands truncates.
    assert shim.t_mma_tf32(np.float32(1 + 2.0 ** -11 + 2.0 ** -12), np.float32(1.0)) == 1.0
    assert shim.t_mma_tf32(np.float32(1.5), np.float32(-2.0)) == -3.0


def test_shim_bfloat16_is_round_to_nearest_even(shim):
    u = 2.0 ** -7  # bfloat16's unit in the last place at 1
    assert shim.t_bf16(1 + u / 2) == 0x3F80           # tie -> even (1.0)
    assert shim.t_bf16(1 + 3 * u / 2) == 0x3F82       # tie -> even (1 + 2u)
    assert shim.t_bf16(-(1 + u / 2)) == 0xBF80
    assert shim.t_bf16(1 + u / 2 + 2.0 ** -20) == 0x3F81
    assert shim.t_bf16(np.inf) == 0x7F80 and shim.t_bf16(float(np.finfo(np.float32).max)) == 0x7F80
    assert np.isnan(shim.t_bf16_back(shim.t_bf16(np.nan)))
    vals = rnd(3000) * np.float32(10.0) ** RNG.integers(-30, 30, 3000).astype(np.float32)
    got = np.array([shim.t_bf16(v) for v in vals], np.uint16)
    assert np.array_equal(got, vals.astype(BF16).view(np.uint16))  # ml_dtypes rounds to nearest even
    assert np.array_equal([shim.t_bf16_back(x) for x in got], got.view(BF16).astype(np.float32))


def test_shim_half_matches_numpy_float16(shim):
    vals = np.concatenate([rnd(3000) * np.float32(2.0) ** RNG.integers(-26, 17, 3000).astype(np.float32),
                           np.float32([1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, 65520.0, 2.0 ** -25, -2.0 ** -24])])
    got = np.array([shim.t_half(v) for v in vals], np.uint16)
    with np.errstate(over="ignore"):  # 65520 rounds to inf, as it should
        assert np.array_equal(got, vals.astype(np.float16).view(np.uint16))


def test_tile_constants_match_the_source():
    text = K.sources()["tensorcore.cu"]
    val = {m.group(1): int(m.group(2)) for m in re.finditer(r"#define (DG_TC_\w+) (\d+)", text)}
    assert (val["DG_TC_BM"], val["DG_TC_BN"], val["DG_TC_BK"], val["DG_TC_THREADS"]) == (
        TC.TC_BM, TC.TC_BN, TC.TC_BK, TC.TC_THREADS)


# ------------------------------------------------------------------ the API and the dispatch
def test_tf32_switch_defaults_off_and_round_trips():
    assert deepgpu.config.tensor_float_32_execution_enabled() is False
    a = np.ones((2, 2), np.float32)
    assert TC.precision(a, a) is None  # strict float32 by default
    config.enable_tensor_float_32_execution(True)
    try:
        assert deepgpu.config.tensor_float_32_execution_enabled() is True
        assert TC.precision(a, a) == "tf32" and TC.precision(a, a.astype(F16)) is None
    finally:
        config.enable_tensor_float_32_execution(False)
    assert not config.tensor_float_32_execution_enabled()
    assert TC.precision(a.astype(F16), a.astype(F16), None) == "f16"
    assert TC.precision(a.astype(BF16), a.astype(BF16)) == "bf16"
    assert TC.precision(a.astype(np.float64)) is None


def test_strict_float32_stays_on_the_cuda_core_kernels(_emulator):
    names = []
    K._emulator = lambda name, grid, block, args: (names.append(name), _emulator(name, grid, block, args))
    try:
        with current_custom(np) as b:
            a, w = rnd(9, 13), rnd(13, 7)
            y = b.matmul(a, w)
            np.testing.assert_allclose(y, a.astype(np.float64) @ w, rtol=1e-5, atol=1e-6)
            config.enable_tensor_float_32_execution(True)
            try:
                b.matmul(a, w)
            finally:
                config.enable_tensor_float_32_execution(False)
    finally:
        K._emulator = None
    assert names[0].startswith("dg_matmul_") and names[1] == "dg_tc_matmul_tf32", names


def test_mixed_dtypes_and_bad_shapes_raise(_emulator):
    K._emulator = _emulator
    try:
        with pytest.raises(TypeError, match="one dtype"):
            TC.matmul(rnd(4, 5).astype(F16), rnd(5, 3).astype(BF16))
        with pytest.raises(ValueError, match="inner dimensions"):
            TC.matmul(rnd(4, 5).astype(F16), rnd(6, 3).astype(F16))
        with pytest.raises(ValueError, match="channels"):
            TC.conv2d(rnd(1, 5, 5, 3).astype(F16), rnd(3, 3, 4, 2).astype(F16))
        with pytest.raises(TypeError, match="float32 \\(TF32\\), float16 or bfloat16"):
            TC.matmul(rnd(4, 5).astype(np.float64), rnd(5, 3).astype(np.float64))
        with current_custom(np) as b, pytest.raises(ValueError):
            b.conv2d_grad_input(rnd(1, 3, 3, 2).astype(F16), rnd(3, 3, 4, 2).astype(F16), (1, 6, 6, 4))
    finally:
        K._emulator = None


# ------------------------------------------------------------------ matmul
@pytest.mark.parametrize("prec", ["tf32", "f16", "bf16"])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_matmul(B, prec, ta, tb):
    m, k, n = 70, 45, 67  # two 64-row tiles with a tail, a k tail, a column tail
    a, b = rnd(*((k, m) if ta else (m, k))), rnd(*((n, k) if tb else (k, n)))
    (a16, b16), (ar, br) = inputs(prec, a, b)
    op = lambda t, f: t.T if f else t  # noqa: E731
    y = B.matmul(*device(B.xp, [a16, b16]), ta, tb)
    check(y, op(ar, ta) @ op(br, tb), prec,
          op(a.astype(np.float64), ta) @ op(b.astype(np.float64), tb) if prec == "tf32" else None)


@pytest.mark.parametrize("prec", ["tf32", "f16", "bf16"])
def test_batched_matmul_and_broadcast(B, prec):
    a, b, w = rnd(3, 17, 33), rnd(3, 33, 20), rnd(33, 20)
    (a16, b16, w16), (ar, br, wr) = inputs(prec, a, b, w)
    da, db, dw = device(B.xp, [a16, b16, w16])
    check(B.matmul(da, db), ar @ br, prec)
    check(B.matmul(da, dw), ar @ wr, prec)


@pytest.mark.parametrize("prec", ["tf32", "f16", "bf16"])
@pytest.mark.parametrize("activation", [None, "relu", "sigmoid"])
def test_dense_bias_activation_epilogue(B, prec, activation):
    x, w, bias = rnd(19, 37), rnd(37, 70), rnd(70)
    (x16, w16, b16), (xr, wr, _) = inputs(prec, x, w, bias)
    y = B.dense(*device(B.xp, [x16, w16, b16]), activation)
    z = xr @ wr + b16.astype(np.float64)  # the bias is added in float32: TF32 does not round it
    ref = {None: z, "relu": np.maximum(z, 0), "sigmoid": 1 / (1 + np.exp(-z))}[activation]
    check(y, ref, prec)


# ------------------------------------------------------------------ convolutions
CONV_CASES = [  # x shape, kernel shape, strides, padding, dilation
    ((2, 9, 11, 5), (3, 3, 5, 7), (1, 1), "same", (1, 1)),
    ((3, 10, 9, 3), (3, 2, 3, 17), (2, 1), "valid", (1, 1)),
    ((1, 12, 12, 6), (3, 3, 6, 4), (2, 2), "same", (1, 1)),
    ((2, 11, 10, 4), (3, 3, 4, 5), (1, 1), "valid", (2, 2)),
]


@pytest.mark.parametrize("prec", ["tf32", "f16", "bf16"])
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv2d_and_gradients(B, prec, case):
    xs, ks, s, p, d = CONV_CASES[case]
    x, k = rnd(*xs), rnd(*ks)
    y_ref32 = CPU.conv2d(x.astype(np.float64), k.astype(np.float64), s, p, d)
    dy = rnd(*y_ref32.shape)
    (x16, k16, dy16), (xr, kr, dyr) = inputs(prec, x, k, dy)
    dx, dk, ddy = device(B.xp, [x16, k16, dy16])
    check(B.conv2d(dx, dk, s, p, d), CPU.conv2d(xr, kr, s, p, d), prec, y_ref32 if prec == "tf32" else None)
    check(B.conv2d_grad_input(ddy, dk, xs, s, p, d), CPU.conv2d_grad_input(dyr, kr, xs, s, p, d), prec)
    check(B.conv2d_grad_filter(dx, ddy, ks, s, p, d), CPU.conv2d_grad_filter(xr, dyr, ks, s, p, d), prec)


@pytest.mark.parametrize("prec", ["tf32", "f16", "bf16"])
def test_conv2d_bias_relu_epilogue(B, prec):
    x, k, bias = rnd(2, 8, 8, 3), rnd(3, 3, 3, 66), rnd(66)
    (x16, k16, b16), (xr, kr, _) = inputs(prec, x, k, bias)
    y = B.conv2d_bias_act(*device(B.xp, [x16, k16, b16]), "relu", (1, 1), "same")
    check(y, np.maximum(CPU.conv2d(xr, kr, (1, 1), "same") + b16.astype(np.float64), 0), prec)


@pytest.mark.parametrize("prec", ["tf32", "f16"])
@pytest.mark.parametrize("splits", [1, 3])
def test_conv2d_grad_filter_splits(xp, prec, splits):
    """The reduction split over blocks (and added by one more launch), or not at all."""
    x, k_shape = rnd(4, 9, 9, 3), (3, 3, 3, 5)
    dy = rnd(4, 9, 9, 5)
    (x16, dy16), (xr, dyr) = inputs(prec, x, dy)
    dx, ddy = device(xp, [x16, dy16])
    g = TC.conv2d_grad_filter(dx, ddy, k_shape, (1, 1), "same", splits=splits)
    check(g, CPU.conv2d_grad_filter(xr, dyr, k_shape, (1, 1), "same"), prec)


# ------------------------------------------------------------------ a training step
def test_seed_convnet_step_launch_budget_with_tf32(_emulator, tf32):
    """The seed convnet's eager step with TF32 on: every convolution and dense launch is a
    tensor-core one, and the step stays within the strict step's budget of 44 launches
    (tests/test_kernels_cuda.py: test_seed_convnet_step_launch_budget)."""
    from deepgpu import optimizers, zoo
    from deepgpu.tensor import Tensor

    names = []
    with current_custom(np) as b:
        K._emulator = _emulator
        try:
            deepgpu.set_seed(0)
            model = zoo.convnet(input_shape=(12, 12, 1))
            model.compile(optimizer=optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
            x = Tensor(RNG.uniform(0, 1, (2, 12, 12, 1)).astype(np.float32), b)
            y = Tensor(RNG.integers(0, 10, 2).astype(np.int32), b)
            first = model.train_on_batch(x, y)
            K._emulator = lambda name, grid, block, args: (names.append(name), _emulator(name, grid, block, args))
            second = model.train_on_batch(x, y)
        finally:
            K._emulator = None
    assert np.isfinite(first) and np.isfinite(second)
    gemm = [n for n in names if n.startswith(("dg_matmul", "dg_conv2d_fwd", "dg_conv2d_grad", "dg_tc_"))]
    assert gemm and all(n.startswith("dg_tc_") for n in gemm), names
    assert "dg_tc_conv2d_grad_filter_tf32" in names and "dg_tc_matmul_tf32" in names
    assert len(names) <= 44, names


@pytest.mark.parametrize("dtype", [F16, BF16])
def test_half_dropout_mask_uses_our_generator(_emulator, dtype):
    """A 16-bit dropout mask (mixed precision) comes from our counter-based kernel, so it
    records in a CUDA graph (cuRAND's does not); values 0 or 1 / (1 - rate) in the dtype."""
    names = []
    K._emulator = lambda name, grid, block, args: (names.append(name), _emulator(name, grid, block, args))
    try:
        with current_custom(np) as b:
            m = b.dropout_mask((40, 50), 0.25, dtype)
    finally:
        K._emulator = None
    assert names == ["dg_dropout"] and m.dtype == dtype
    vals = set(np.unique(m.astype(np.float32)).tolist())
    assert vals == {0.0, float(np.float32(4 / 3).astype(dtype).astype(np.float32))}
    assert 0.15 < float((m.astype(np.float32) == 0).mean()) < 0.35
