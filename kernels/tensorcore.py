"""Launchers of tensorcore.cu: matmul and the NHWC convolution with its two gradients on tensor cores.

The same products as gemm.py and conv.py, for

* float16 and bfloat16 arrays (16-bit inputs, float32 accumulation, 16-bit
  output: what mixed precision computes in), and
* float32 arrays with TF32 enabled (``deepgpu.config.enable_tensor_float_32_execution``):
  inputs rounded to a 10-bit mantissa, float32 accumulation and output.

``precision(*arrays)`` says which of these applies ("tf32", "f16", "bf16") or
None (strict float32 on the CUDA-core kernels of gemm.py / conv.py, a dtype no
kernel takes, or a GPU older than sm_80: A100, H100 and H200 have what the
kernels use, V100 and T4 do not, and the backend falls back to CuPy there).
bfloat16 arrays exist on the GPU only with CuPy 14+ and ml_dtypes.
"""
from __future__ import annotations

import math

import numpy as np

from .. import config as _config
from .. import kernels as K
from .conv import _conv_geom, _key
from .gemm import _matmul_geometry, _split
from .runtime import register

TC_BM, TC_BN, TC_BK, TC_THREADS = 64, 64, 32, 128  # DG_TC_* of tensorcore.cu (a test checks)
_SUFFIX = {"float32": "tf32", "float16": "f16", "bfloat16": "bf16"}

register("tensorcore.cu", tuple(f"dg_tc_{op}_{p}" for op in ("matmul", "conv2d_fwd", "conv2d_grad_input",
                                                               "conv2d_grad_filter")
                                for p in ("tf32", "f16", "bf16")) + ("dg_tc_sum_splits_f16", "dg_tc_sum_splits_bf16"))


def precision(*arrays):
    """The tensor-core variant for these operands: "f16" / "bf16" when all are float16 / bfloat16,
    "tf32" when all are float32 and TF32 execution is enabled, else None. None entries are skipped."""
    first = None
    for a in arrays:
        if a is None:
            continue
        if first is None:
            first = a
        elif a.dtype != first.dtype:
            return None
    if first is None:
        return None
    p = _SUFFIX.get(first.dtype.name)
    if p is None or (p == "tf32" and not _config._TF32[0]) or not _has_tensor_cores(first):
        return None
    return p


_sm80: dict = {}  # device id -> compute capability >= 8.0


def _has_tensor_cores(a):
    """True where the kernels can run: the emulation (NumPy arrays), or a device of sm_80 or newer.
    Older GPUs (V100, T4) lack wmma's TF32 and bfloat16: there the callers fall back."""
    if isinstance(a, np.ndarray):
        return True
    dev = K._device_id()
    ok = _sm80.get(dev)
    if ok is None:
        import cupy
        ok = _sm80[dev] = int(cupy.cuda.Device(dev).compute_capability) >= 80
    return ok


def _check(a, what, dtype, shape=None):
    if a.dtype != dtype:
        raise TypeError(f"{what}: the tensor-core kernels take operands of one dtype ({dtype}), got {a.dtype}")
    if dtype.name not in _SUFFIX:
        raise TypeError(f"{what}: the tensor-core kernels take float32 (TF32), float16 or bfloat16, got {dtype}")
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise ValueError(f"{what}: expected shape {tuple(shape)}, got {tuple(a.shape)}")
    return a if a.flags.c_contiguous else K._xp(a).ascontiguousarray(a)


def _grid(m, n, z=1):
    gy = -(-n // TC_BN)
    if gy > K._MAX_GRID_Y or z > K._MAX_GRID_Y:
        raise ValueError(f"tensor-core GEMM of {m}x{n} (batch {z}) exceeds the grid limits")
    return (-(-m // TC_BM), gy, z)


def _output(xp, out, shape, dtype, what):
    if out is None:
        return xp.empty(shape, dtype)
    if out.dtype != dtype or not out.flags.c_contiguous or out.size != math.prod(shape):
        raise ValueError(f"{what}: expected a C-contiguous {dtype} array of shape {shape}, got "
                         f"{out.dtype} {out.shape}")
    return out.reshape(shape)


def matmul(a, b, transpose_a=False, transpose_b=False, bias=None, activation=None, out=None):
    """``act(op(a) @ op(b) + bias)`` on tensor cores, as gemm.matmul; a [..., m, k], b [..., k, n]
    after the transposes, bias [n] or None, all of one dtype (float32 rounded to TF32, float16 or
    bfloat16). Returns [..., m, n] of that dtype; accumulation is float32. One launch."""
    xp = K._xp(a)
    dtype = a.dtype
    a, b = _check(a, "matmul a", dtype), _check(b, "matmul b", dtype)
    if bias is not None:
        bias = _check(bias, "matmul bias", dtype)
    key = ("tc_mm", dtype.name, a.shape, b.shape, bool(transpose_a), bool(transpose_b),
           None if bias is None else bias.shape, activation)
    plan = K._plans.get(key)
    if plan is None:
        plan = K._plans[key] = _matmul_plan(a.shape, b.shape, bool(transpose_a), bool(transpose_b),
                                            None if bias is None else bias.shape, activation, dtype)
    out_shape, p = plan
    out = _output(xp, out, out_shape, dtype, "matmul out")
    if p is not None:
        name, grid, scalars = p
        K._launch(name, grid, (TC_THREADS,), (a, b, out, bias) + scalars)
    return out


def _matmul_plan(a_shape, b_shape, ta, tb, bias_shape, activation, dtype):
    m, n, k, ba, bb, batch, nb = _matmul_geometry(a_shape, b_shape, ta, tb, bias_shape)
    act = K._act(activation)
    out_shape = tuple(batch) + (m, n)
    if m * n * nb == 0:
        return out_shape, None
    if k == 0:  # the tiles' unguarded fast loads assume k > 0; Backend.matmul / dense compute it generically
        raise ValueError(f"matmul: an empty reduction (k = 0) of {a_shape} and {b_shape} is not launched")
    scalars = (K._i32(m), K._i32(n), K._i32(k), K._i32(a_shape[-1]), K._i32(b_shape[-1]), K._i32(n),
               K._i64(m * k if ba else 0), K._i64(k * n if bb else 0), K._i64(m * n),
               np.int32(ta), np.int32(tb), act)
    return out_shape, (f"dg_tc_matmul_{_SUFFIX[dtype.name]}", _grid(m, n, nb), scalars)


def dense(x, w, b=None, activation=None, out=None):
    """``act(x @ w + b)`` on tensor cores in one launch; x [m, k], w [k, n], b [n] or None."""
    return matmul(x, w, False, False, b, activation, out)


def conv2d(x, k, strides=(1, 1), padding="valid", dilation=(1, 1), bias=None, activation=None, out=None):
    """NHWC convolution on tensor cores, as conv.conv2d: x [N, H, W, C], k [kh, kw, C, O], bias [O]
    or None, one dtype -> [N, Ho, Wo, O] of that dtype. One launch."""
    xp = K._xp(x)
    dtype = x.dtype
    x, k = _check(x, "conv2d x", dtype), _check(k, "conv2d kernel", dtype)
    if bias is not None:
        bias = _check(bias, "conv2d bias", dtype, (k.shape[3],))
    g = _conv_geom(x.shape, k.shape, strides, padding, dilation)
    n, o, ho, wo = int(g[0]), int(g[4]), int(g[13]), int(g[14])
    out = _output(xp, out, (n, ho, wo, o), dtype, "conv2d out")
    if out.size:
        K._launch(f"dg_tc_conv2d_fwd_{_SUFFIX[dtype.name]}", _grid(n * ho * wo, o), (TC_THREADS,),
                  (x, k, bias, out) + g + (K._act(activation),))
    return out


def conv2d_grad_input(dy, k, x_shape, strides=(1, 1), padding="valid", dilation=(1, 1), out=None):
    """Gradient of conv2d with respect to its input on tensor cores; dy and k of one dtype."""
    xp = K._xp(dy)
    dtype = dy.dtype
    dy, k = _check(dy, "conv2d_grad_input dy", dtype), _check(k, "conv2d_grad_input kernel", dtype)
    x_shape = tuple(int(v) for v in x_shape)
    g = _conv_geom(x_shape, k.shape, strides, padding, dilation)
    want = (int(g[0]), int(g[13]), int(g[14]), int(g[4]))
    if tuple(dy.shape) != want:
        raise ValueError(f"conv2d_grad_input: dy has shape {dy.shape}, expected {want}")
    out = _output(xp, out, x_shape, dtype, "conv2d_grad_input out")
    if out.size:
        n, h, w, c = x_shape
        K._launch(f"dg_tc_conv2d_grad_input_{_SUFFIX[dtype.name]}", _grid(n * h * w, c), (TC_THREADS,),
                  (dy, k, out) + g)
    return out


def conv2d_grad_filter(x, dy, k_shape, strides=(1, 1), padding="valid", dilation=(1, 1), out=None, *,
                       splits=None):
    """Gradient of conv2d with respect to the kernel on tensor cores; x and dy of one dtype.

    The reduction over N*Ho*Wo is split over about four blocks per SM; the
    float32 partial sums are added (and rounded to 16 bits) by one more launch,
    which a float32 (TF32) gradient in one split skips. ``splits`` overrides the choice.
    """
    xp = K._xp(x)
    dtype = x.dtype
    x, dy = _check(x, "conv2d_grad_filter x", dtype), _check(dy, "conv2d_grad_filter dy", dtype)
    k_shape = tuple(int(v) for v in k_shape)
    key = ("tc_grad_filter", dtype.name, x.shape, k_shape, dy.shape, _key(strides), padding, _key(dilation),
           splits, K._sm_count(xp))
    plan = K._plans.get(key)
    if plan is None:
        g = _conv_geom(x.shape, k_shape, strides, padding, dilation)
        want = (int(g[0]), int(g[13]), int(g[14]), int(g[4]))
        if tuple(dy.shape) != want:
            raise ValueError(f"conv2d_grad_filter: dy has shape {dy.shape}, expected {want}")
        kh, kw, c, o = k_shape
        rows, total = kh * kw * c, want[0] * want[1] * want[2]
        if not rows * o * total:  # nothing to write, or an empty sum (zeros): no launch, no split to plan
            plan = (None, None, 0)
        else:
            grid = _grid(rows, o)
            if splits is None:
                splits = max(1, min(4 * K._sm_count(xp) // (grid[0] * grid[1]), total // (8 * TC_BK), 512))
            chunk, splits = _split(total, splits, TC_BK)
            plan = (g + (K._i32(chunk),), grid[:2] + (splits,), splits)
        K._plans[key] = plan
    scalars, grid, splits = plan
    out = _output(xp, out, k_shape, dtype, "conv2d_grad_filter out")
    if scalars is None:
        out.fill(0)
        return out
    p = _SUFFIX[dtype.name]
    direct = p == "tf32" and splits == 1
    work = out if direct else xp.empty((splits,) + k_shape, np.float32)
    K._launch(f"dg_tc_conv2d_grad_filter_{p}", grid, (TC_THREADS,), (x, dy, work) + scalars)
    if not direct:
        name = "dg_conv2d_sum_splits" if p == "tf32" else f"dg_tc_sum_splits_{p}"
        K._launch(name, (-(-out.size // 32),), (32, 8), (work, out, np.int32(splits), K._i32(out.size)))
    return out
