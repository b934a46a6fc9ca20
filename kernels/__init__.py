"""CUDA C++ kernels for the cuda backend, compiled lazily with cupy.RawModule.

The ``.cu`` sources live beside this file and are loaded through
``importlib.resources`` so that installed and editable copies behave alike.
Importing this module never touches CUDA: a source is compiled at its first
launch (or by ``precompile()``), once per process and device, and the binary
is kept in CuPy's on-disk kernel cache (``$DEEPGPU_KERNEL_CACHE`` when set,
else CuPy's own: ``$CUPY_CACHE_DIR`` or ``~/.cupy/kernel_cache``).

The launchers below (``matmul``, ``conv2d``, ...) take float32 C-contiguous
device arrays, check shapes, allocate outputs unless ``out=`` is given, and
launch on the current stream; they never synchronise or read values back.

Status: checked by a CPU emulation of the kernels (tests/test_kernels_cuda.py)
and, up to 5f89e4a, on an H100; the CuPy backend uses them by default
(``DEEPGPU_KERNELS=cupy`` for CuPy's routines). dg_update_many,
dg_sparse_xent_*, dg_softmax_rows, dg_argmax_hits and norm.cu's dg_bn_* came
later and have run only under the emulation so far (bench/GPU_KERNELS.md).
"""
from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from importlib import resources

import numpy as np

from ..backends.base import _pair, conv_output_size

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
CONV_TILES = ("128x128", "128x64", "128x32", "64x64", "32x32")


def _kname(base, tile):
    return base if tile == "128x128" else f"{base}_{tile}"


# Kernel file -> the extern "C" functions this module launches from it.
KERNELS = {
    "matmul.cu": tuple(_kname(f"dg_matmul_{ta}{tb}", t) for t in MATMUL_TILES for ta in "nt" for tb in "nt"),
    "conv2d.cu": tuple(_kname(f"dg_conv2d_{op}", t) for op in ("fwd", "grad_input", "grad_filter")
                       for t in CONV_TILES) + ("dg_conv2d_sum_splits",),
    "pool.cu": ("dg_max_pool_fwd", "dg_max_pool_bwd", "dg_max_pool_bwd_tiles", "dg_avg_pool_fwd",
                "dg_avg_pool_bwd", "dg_avg_pool_bwd_tiles"),
    "elementwise.cu": ("dg_adam", "dg_sgd", "dg_rmsprop", "dg_update_many", "dg_softmax_xent_fwd",
                       "dg_softmax_xent_bwd", "dg_sparse_xent_fwd", "dg_sparse_xent_bwd", "dg_softmax_rows",
                       "dg_argmax_hits", "dg_dropout", "dg_bias_act", "dg_relu_grad",
                       "dg_col_sum", "dg_sum_splits", "dg_set_scalars", "dg_counter_add"),
    "norm.cu": ("dg_bn_stats", "dg_bn_apply", "dg_bn_grad_sums", "dg_bn_grad_input"),  # launched by norm.py
}
# Activation names -> the DG_ACT_* codes of gemm_core.cuh.
ACTIVATIONS = {None: 0, "linear": 0, "relu": 1, "sigmoid": 2, "tanh": 3}
# The default (largest) tile; must equal DG_BM, DG_BN, DG_BK and the threads of DG_TM x DG_TN
# in gemm_core.cuh (a test checks).
TILE_M, TILE_N, TILE_K, GEMM_THREADS = 128, 128, 8, 256
BLOCK = 256  # threads per block of the elementwise and pooling kernels
OPTIONS = ("--std=c++17",)
_MAX_GRID_Y = 65535
_INT_MAX = 2**31 - 1

__all__ = ["KernelCompileError", "sources", "source", "cache_dir", "precompile", "function",
           "matmul", "dense", "conv2d", "conv2d_grad_input", "conv2d_grad_filter",
           "max_pool2d", "max_pool2d_grad", "avg_pool2d", "avg_pool2d_grad", "adam", "sgd",
           "rmsprop", "adam_many", "sgd_many", "rmsprop_many", "softmax_cross_entropy",
           "softmax_cross_entropy_grad", "sparse_softmax_cross_entropy",
           "sparse_softmax_cross_entropy_grad", "softmax", "argmax_hits", "dropout",
           "bias_act", "relu_grad", "col_sum", "set_scalars", "counter_add", "batch_norm_train",
           "batch_norm_grad"]


class KernelCompileError(RuntimeError):
    """A kernel source failed to compile; names the file, the function and the compiler's message."""

    def __init__(self, file: str, function: str | None, message: str):
        self.file, self.function, self.compiler_message = file, function, message
        what = f"{file}" + (f" (kernel {function})" if function else "")
        super().__init__(f"CUDA kernel source {what} failed to compile:\n{message}")


# ------------------------------------------------------------------ sources
def sources() -> dict[str, str]:
    """Map of kernel file name -> CUDA source text shipped with deepgpu."""
    root = resources.files("deepgpu.kernels")
    return {p.name: p.read_text() for p in root.iterdir() if p.name.endswith((".cu", ".cuh"))}


_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)".*$', re.M)
_ONCE = re.compile(r'^[ \t]*#[ \t]*pragma[ \t]+once.*$', re.M)


def source(file: str) -> str:
    """The text compiled for ``file``: its source with our ``#include "x.cuh"`` lines inlined.

    Inlined because CuPy's cache key hashes the source text only: an edited
    header would otherwise leave a stale binary in the cache.
    """
    texts = sources()
    if file not in texts:
        raise KeyError(f"no kernel source {file!r}; have {sorted(texts)}")

    def expand(text, seen):
        def sub(m):
            name = m.group(1)
            if name not in texts:
                raise KeyError(f"{file}: included file {name!r} is not among the kernel sources")
            if name in seen:  # every header has #pragma once
                return ""
            seen.add(name)
            body = _ONCE.sub("", texts[name])  # inlined once per source; NVRTC warns on it in a main file
            return f"// ---- {name}\n" + expand(body, seen) + f"\n// ---- end of {name}"
        return _INCLUDE.sub(sub, text)

    return expand(texts[file], set())


def cache_dir() -> str:
    """Where compiled kernels are cached on disk."""
    return (os.environ.get("DEEPGPU_KERNEL_CACHE") or os.environ.get("CUPY_CACHE_DIR")
            or os.path.expanduser("~/.cupy/kernel_cache"))


# ---------------------------------------------------------------- compiling
_modules: dict = {}    # (device id, file) -> cupy.RawModule, compiled
_functions: dict = {}  # (device id, name) -> RawKernel
_file_of = {name: file for file, names in KERNELS.items() for name in names}
_lock = threading.Lock()


@contextlib.contextmanager
def _cache_dir_applied():
    """Point CuPy's kernel cache at $DEEPGPU_KERNEL_CACHE while our sources compile."""
    d = os.environ.get("DEEPGPU_KERNEL_CACHE")
    if not d:
        yield
        return
    from cupy.cuda import compiler
    os.makedirs(d, exist_ok=True)
    old_env = os.environ.get("CUPY_CACHE_DIR")
    os.environ["CUPY_CACHE_DIR"] = d  # CuPy 13 reads the variable at each compile
    # CuPy 14 reads it once at import into a cache backend object; swap that
    # object (a private hook: skipped where it does not exist).
    old_backend = getattr(compiler, "_kernel_cache_backend", None)
    swap = getattr(compiler, "_set_kernel_cache_backend", None)
    if swap is not None:
        try:
            from cupy.cuda._compiler_cache import DiskKernelCacheBackend
            swap(DiskKernelCacheBackend(d))
        except Exception:  # a changed private API: keep CuPy's own cache
            swap = None
    try:
        yield
    finally:
        if swap is not None:
            swap(old_backend)
        if old_env is None:
            os.environ.pop("CUPY_CACHE_DIR", None)
        else:
            os.environ["CUPY_CACHE_DIR"] = old_env


def _device_id() -> int:
    import cupy
    return cupy.cuda.runtime.getDevice()


def _module(file: str, function_name: str | None = None):
    dev = _device_id()
    key = (dev, file)
    mod = _modules.get(key)
    if mod is not None:
        return mod
    import cupy
    from cupy.cuda import compiler, nvrtc
    with _lock:
        mod = _modules.get(key)
        if mod is None:
            mod = cupy.RawModule(code=source(file), options=OPTIONS)
            try:
                with _cache_dir_applied():
                    mod.compile()
            except compiler.CompileException as e:
                raise KernelCompileError(file, function_name, e.get_message()) from None
            except nvrtc.NVRTCError as e:
                raise KernelCompileError(file, function_name, str(e)) from None
            _modules[key] = mod
    return mod


def function(name: str):
    """The compiled kernel ``name`` (a ``cupy.RawKernel``) for the current device."""
    key = (_device_id(), name)
    fn = _functions.get(key)
    if fn is None:
        if name not in _file_of:
            raise KeyError(f"unknown kernel {name!r}")
        fn = _functions[key] = _module(_file_of[name], name).get_function(name)
    return fn


def precompile(files=None) -> dict[str, float]:
    """Compile (or load from the disk cache) every kernel file for the current device.

    Returns seconds per file. Call once before training so that the first
    epoch does not stall on the compiler; raises KernelCompileError.
    """
    times = {}
    for file in (files or KERNELS):
        t0 = time.perf_counter()
        for name in KERNELS[file]:
            function(name)
        times[file] = time.perf_counter() - t0
    return times


# ---------------------------------------------------------------- launching
# Tests replace this hook with a CPU emulation of the kernels: a callable
# (name, grid, block, args) -> None taking the arguments of a CuPy launch.
_emulator = None
_NULL = np.uint64(0)  # a null pointer argument


def _launch(name, grid, block, args):
    if _emulator is not None:
        _emulator(name, grid, block, args)
        return
    function(name)(grid, block, tuple(_NULL if a is None else a for a in args))


def _xp(a):
    if isinstance(a, np.ndarray):
        return np
    import cupy
    return cupy


def _i32(v):
    v = int(v)
    if not 0 <= v <= _INT_MAX:
        raise ValueError(f"size {v} is outside the kernels' int32 range")
    return np.int32(v)


def _f32(v):
    return np.float32(v)


def _i64(v):
    return np.int64(int(v))


def _grid1d(n):
    # Grid-stride loops cover the rest: a few waves of blocks is enough.
    return (max(1, min(-(-int(n) // BLOCK), 65536)),)


def _check(a, what, shape=None):
    """``a`` as a float32 C-contiguous array (copied only when strided); TypeError for other dtypes."""
    if a.dtype != np.float32:
        raise TypeError(f"{what}: the custom kernels take float32, got {a.dtype}")
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise ValueError(f"{what}: expected shape {tuple(shape)}, got {tuple(a.shape)}")
    return a if a.flags.c_contiguous else _xp(a).ascontiguousarray(a)


def _inplace(a, what, size):
    """An array updated in place must already be float32, contiguous and of ``size`` elements."""
    if a.dtype != np.float32 or not a.flags.c_contiguous or a.size != size:
        raise ValueError(f"{what}: an in-place operand must be float32, C-contiguous and of "
                         f"{size} elements; got {a.dtype}, {a.shape}, contiguous={a.flags.c_contiguous}")
    return a


def _output(xp, out, shape, what):
    if out is None:
        return xp.empty(shape, np.float32)
    return _inplace(out, what, int(np.prod(shape, dtype=np.int64))).reshape(shape)


def _act(activation):
    try:
        return np.int32(ACTIVATIONS[activation])
    except KeyError:
        raise ValueError(f"activation {activation!r} is not fused; one of {sorted(map(str, ACTIVATIONS))}") from None


def _gemm_grid(m, n, z=1, tile="128x128"):
    bm, bn = GEMM_TILES[tile][:2]
    gy = -(-n // bn)
    if gy > _MAX_GRID_Y or z > _MAX_GRID_Y:
        raise ValueError(f"GEMM of {m}x{n} (batch {z}) exceeds the grid limits")
    return (-(-m // bm), gy, z)


def _threads(tile):
    bm, bn, _, tm, tn = GEMM_TILES[tile]
    return ((bm // tm) * (bn // tn),)


def _ptr(a):
    return a.ctypes.data if isinstance(a, np.ndarray) else a.data.ptr


def _vec4(*arrays):
    """True when every array (None skipped) starts on a 16-byte boundary (float4 access)."""
    return all(a is None or _ptr(a) % 16 == 0 for a in arrays)


def _split(k, splits, bk):
    """(k_chunk, splits): k in chunks of whole k-steps, no chunk empty."""
    chunk = -(-(-(-k // max(1, splits))) // bk) * bk
    return chunk, max(1, -(-k // chunk))


def _key(v):
    return v if v is None or isinstance(v, (int, str)) else tuple(v)


_sm_counts: dict = {}


def _sm_count(xp):
    """Streaming multiprocessors of the current device (2 under the CPU emulation)."""
    if xp is np:
        return 2
    dev = _device_id()
    n = _sm_counts.get(dev)
    if n is None:
        import cupy
        n = _sm_counts[dev] = int(cupy.cuda.runtime.deviceGetAttribute(
            cupy.cuda.runtime.cudaDevAttrMultiProcessorCount, dev))
    return n


# Launch plans per call signature (shapes, options, tile): the launchers'
# host time is most of a small layer's time, so each shape is worked out once.
_plans: dict = {}
_counters: dict = {}      # (device, stream) -> int32 zeros counted in by split-K matmul tiles
_counters_old: list = []  # outgrown ones, kept until the process ends (cheap, and never dangling)


def _split_counters(xp, n):
    """At least n int32 zeros for the split-K tiles of matmul (each launch leaves them zero).

    Cached per device and stream, so that two streams never count in the same
    ones. Inside a CUDA graph capture they are made afresh (from the graph's
    own pool, zeroed by the recorded fill at each replay) and not cached.
    """
    key = None
    if xp is not np:
        import cupy
        stream = cupy.cuda.get_current_stream()
        if stream.is_capturing():
            return xp.zeros(n, np.int32)
        key = (_device_id(), stream.ptr)
    c = _counters.get(key)
    if c is None or c.size < n:
        if c is not None:
            _counters_old.append(c)
        c = _counters[key] = xp.zeros(max(n, 4096), np.int32)
    return c


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
    return "64x64", max(1, min(2 * sm // tiles, k // 128, _MAX_GRID_Y // nb))


def _matmul_plan(xp, a_shape, b_shape, ta, tb, bias_shape, activation, tile, splits):
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
    nb = int(np.prod(batch, dtype=np.int64))
    if bias_shape is not None and tuple(bias_shape) != (n,):
        raise ValueError(f"matmul bias: expected shape {(n,)}, got {tuple(bias_shape)}")
    act = _act(activation)
    out_shape = tuple(batch) + (m, n)
    if m * n * nb == 0:
        return out_shape, None
    auto_tile, auto_splits = _matmul_split(m, n, k, nb, _sm_count(xp))
    tile = tile or auto_tile
    if tile not in MATMUL_TILES:
        raise ValueError(f"matmul: tile {tile!r} is not one of {MATMUL_TILES}")
    chunk, splits = _split(k, splits or (auto_splits if tile == auto_tile else 1), GEMM_TILES[tile][2])
    lda, ldb = a_shape[-1], b_shape[-1]
    grid = _gemm_grid(m, n, nb * splits, tile)
    scalars = (_i32(m), _i32(n), _i32(k), _i32(lda), _i32(ldb), _i32(n), _i64(m * k if ba else 0),
               _i64(k * n if bb else 0), _i64(m * n), act, np.int32(splits), _i32(chunk))
    name = _kname("dg_matmul_" + ("t" if ta else "n") + ("t" if tb else "n"), tile)
    work = (nb, splits, m, n) if splits > 1 else None
    return out_shape, (name, grid, _threads(tile), scalars, lda % 4 == 0, ldb % 4 == 0, n % 4 == 0,
                       work, grid[0] * grid[1] * nb)


# ------------------------------------------------------------------- matmul
def matmul(a, b, transpose_a=False, transpose_b=False, bias=None, activation=None, out=None, *,
           tile=None, splits=None):
    """``act(op(a) @ op(b) + bias)``; a [..., m, k], b [..., k, n] after the transposes.

    Leading (batch) axes must be equal, or one operand 2-D (broadcast).
    bias [n] may be None. Returns [..., m, n] float32. One launch (split-K
    tiles add their partial sums in the same launch). ``tile`` (a name of
    MATMUL_TILES) and ``splits`` (of k) override the choice made per shape.
    """
    xp = _xp(a)
    a, b = _check(a, "matmul a"), _check(b, "matmul b")
    if bias is not None:
        bias = _check(bias, "matmul bias")
    key = ("mm", a.shape, b.shape, bool(transpose_a), bool(transpose_b),
           None if bias is None else bias.shape, activation, tile, splits, _sm_count(xp))
    plan = _plans.get(key)
    if plan is None:
        plan = _plans[key] = _matmul_plan(xp, a.shape, b.shape, bool(transpose_a), bool(transpose_b),
                                          None if bias is None else bias.shape, activation, tile, splits)
    out_shape, p = plan
    out = _output(xp, out, out_shape, "matmul out")
    if p is None:
        return out
    name, grid, block, scalars, va, vb, vc, work, tiles = p
    flags = np.int32((va and _ptr(a) % 16 == 0) | 2 * (vb and _ptr(b) % 16 == 0)
                     | 4 * (vc and _ptr(out) % 16 == 0))
    if work is None:
        extra = (None, None)
    else:
        extra = (xp.empty(work, np.float32), _split_counters(xp, tiles))
    _launch(name, grid, block, (a, b, out, bias) + extra + scalars + (flags,))
    return out


def dense(x, w, b=None, activation=None, out=None, **plan):
    """``act(x @ w + b)`` in one launch; x [m, k], w [k, n], b [n] or None."""
    return matmul(x, w, False, False, b, activation, out, **plan)


# -------------------------------------------------------------- convolution
def _conv_geom(x_shape, k_shape, strides, padding, dilation):
    n, h, w, c = x_shape
    kh, kw, c2, o = k_shape
    if c != c2:
        raise ValueError(f"conv2d: input has {c} channels but the kernel expects {c2}")
    sh, sw = _pair(strides, "strides")
    dh, dw = _pair(dilation, "dilation_rate")
    ho, ph = conv_output_size(h, kh, sh, dh, padding)
    wo, pw = conv_output_size(w, kw, sw, dw, padding)
    for size in (n * h * w * c, n * ho * wo * o, kh * kw * c * o):  # flat indices the kernels form in int
        _i32(size)
    return tuple(_i32(v) for v in (n, h, w, c, o, kh, kw, sh, sw, ph[0], pw[0], dh, dw, ho, wo))


def _conv_tile(rows, cols, sm, tile):
    """The tile of a convolution GEMM: 128x32 for up to 32 channels, 64x64 for up to 64
    (measured faster than 128x64 there), 128x128 above; smaller while there are
    fewer tiles than SMs."""
    if tile is None:
        for tile in ("128x32" if cols <= 32 else "64x64" if cols <= 64 else "128x128", "64x64", "32x32"):
            bm, bn = GEMM_TILES[tile][:2]
            if -(-rows // bm) * -(-cols // bn) >= sm:
                break
    if tile not in CONV_TILES:
        raise ValueError(f"conv2d: tile {tile!r} is not one of {CONV_TILES}")
    return tile


def _conv_plan(xp, op, x_shape, k_shape, strides, padding, dilation, tile, splits=None, extra=()):
    """(output shape, kernel, grid, block, scalars, (vec A, vec B, vec C) by shape, work shape)."""
    g = _conv_geom(x_shape, k_shape, strides, padding, dilation)
    n, h, w, c, o, kh, kw, ho, wo = (int(g[i]) for i in (0, 1, 2, 3, 4, 5, 6, 13, 14))
    sm = _sm_count(xp)
    if op == "fwd":
        rows, cols, shape, vec = n * ho * wo, o, (n, ho, wo, o), (c % 4 == 0, o % 4 == 0, o % 4 == 0)
    elif op == "grad_input":
        rows, cols, shape, vec = n * h * w, c, tuple(x_shape), (o % 4 == 0, o % 4 == 0, c % 4 == 0)
    else:
        rows, cols, shape, vec = kh * kw * c, o, tuple(k_shape), (c % 4 == 0, o % 4 == 0, o % 4 == 0)
    if op != "grad_filter":
        tile = _conv_tile(rows, cols, sm, tile)
        return shape, _kname(f"dg_conv2d_{op}", tile), _gemm_grid(rows, cols, 1, tile), _threads(tile), \
            g + extra, vec, None
    if tile is None:
        # A 128-row tile would be mostly padding below 64 rows; the reduction is split to fill the GPU.
        tile = "32x32" if rows <= 64 else "128x32" if o <= 32 else "64x64" if o <= 64 else "128x128"
    tile = _conv_tile(rows, cols, sm, tile)
    bk, total = GEMM_TILES[tile][2], n * ho * wo
    grid = _gemm_grid(rows, cols, 1, tile)
    if splits is None:
        # About four blocks per SM, each at least 16 k-steps: more makes the partial sums cost more than they save.
        splits = max(1, min(4 * sm // (grid[0] * grid[1]), total // (16 * bk), 512))
    chunk, splits = _split(total, splits, bk)
    return shape, _kname("dg_conv2d_grad_filter", tile), grid[:2] + (splits,), _threads(tile), \
        g + (_i32(chunk),), vec, ((splits,) + shape if splits > 1 else None)


def _conv_launch(xp, key, args, arrays, out, what):
    """Plan (cached) and launch one convolution kernel; arrays are its (A, B) operands."""
    p = _plans.get(key)
    if p is None:
        p = _plans[key] = _conv_plan(xp, *args)
    shape, name, grid, block, scalars, vec, work = p
    out = _output(xp, out, shape, what)
    if out.size == 0:
        return out
    dst = out if work is None else xp.empty(work, np.float32)
    flags = np.int32((vec[0] and _ptr(arrays[0]) % 16 == 0) | 2 * (vec[1] and _ptr(arrays[1]) % 16 == 0)
                     | 4 * (vec[2] and _ptr(dst) % 16 == 0))
    _launch(name, grid, block, arrays + (dst,) + scalars + (flags,))
    if work is not None:
        _launch("dg_conv2d_sum_splits", (-(-out.size // 32),), (32, 8),
                (dst, out, np.int32(work[0]), _i32(out.size)))
    return out


def conv2d(x, k, strides=(1, 1), padding="valid", dilation=(1, 1), bias=None, activation=None, out=None,
           *, tile=None):
    """NHWC convolution as Backend.conv2d, with an optional fused ``act(. + bias)`` epilogue.

    x [N, H, W, C], k [kh, kw, C, O], bias [O] or None -> [N, Ho, Wo, O].
    ``tile`` (a name of CONV_TILES) overrides the choice made per shape.
    """
    xp = _xp(x)
    x, k = _check(x, "conv2d x"), _check(k, "conv2d kernel")
    if bias is not None:
        bias = _check(bias, "conv2d bias", (k.shape[3],))
    key = ("fwd", x.shape, k.shape, _key(strides), padding, _key(dilation), tile, activation, _sm_count(xp))
    return _conv_launch(xp, key, ("fwd", x.shape, k.shape, strides, padding, dilation, tile, None,
                                  (_act(activation),)),
                        (x, k, bias), out, "conv2d out")


def conv2d_grad_input(dy, k, x_shape, strides=(1, 1), padding="valid", dilation=(1, 1), out=None, *,
                      tile=None):
    """Gradient of conv2d with respect to its input, as Backend.conv2d_grad_input."""
    xp = _xp(dy)
    dy, k = _check(dy, "conv2d_grad_input dy"), _check(k, "conv2d_grad_input kernel")
    x_shape = tuple(int(v) for v in x_shape)
    key = ("grad_input", x_shape, k.shape, dy.shape, _key(strides), padding, _key(dilation), tile, _sm_count(xp))
    if key not in _plans:
        g = _conv_geom(x_shape, k.shape, strides, padding, dilation)
        want = (int(g[0]), int(g[13]), int(g[14]), int(g[4]))
        if tuple(dy.shape) != want:
            raise ValueError(f"conv2d_grad_input: dy has shape {dy.shape}, expected {want}")
    return _conv_launch(xp, key, ("grad_input", x_shape, k.shape, strides, padding, dilation, tile),
                        (dy, k), out, "conv2d_grad_input out")


def conv2d_grad_filter(x, dy, k_shape, strides=(1, 1), padding="valid", dilation=(1, 1), out=None, *,
                       tile=None, splits=None):
    """Gradient of conv2d with respect to the kernel, as Backend.conv2d_grad_filter.

    The reduction over N*Ho*Wo is split over enough blocks to fill the GPU
    (about four per SM); the partial sums go to a work buffer and one more
    launch adds them (deterministic, no atomics). ``tile`` and ``splits``
    override the choice made per shape.
    """
    xp = _xp(x)
    x, dy = _check(x, "conv2d_grad_filter x"), _check(dy, "conv2d_grad_filter dy")
    k_shape = tuple(int(v) for v in k_shape)
    key = ("grad_filter", x.shape, k_shape, dy.shape, _key(strides), padding, _key(dilation), tile, splits,
           _sm_count(xp))
    if key not in _plans:
        g = _conv_geom(x.shape, k_shape, strides, padding, dilation)
        want = (int(g[0]), int(g[13]), int(g[14]), int(g[4]))
        if tuple(dy.shape) != want:
            raise ValueError(f"conv2d_grad_filter: dy has shape {dy.shape}, expected {want}")
    return _conv_launch(xp, key, ("grad_filter", x.shape, k_shape, strides, padding, dilation, tile, splits),
                        (x, dy), out, "conv2d_grad_filter out")


# ------------------------------------------------------------------ pooling
def _pool_geom(x_shape, pool_size, strides, padding):
    n, h, w, c = x_shape
    kh, kw = _pair(pool_size, "pool_size")
    sh, sw = _pair(strides if strides is not None else pool_size, "strides")
    ho, ph = conv_output_size(h, kh, sh, 1, padding)
    wo, pw = conv_output_size(w, kw, sw, 1, padding)
    return tuple(_i32(v) for v in (n, h, w, c, ho, wo, kh, kw, sh, sw, ph[0], pw[0]))


def _aligned16(*arrays):
    """True when every array (None skipped) starts on a 16-byte boundary, as float4 accesses need."""
    for a in arrays:
        if a is not None and (a.ctypes.data if isinstance(a, np.ndarray) else a.data.ptr) % 16:
            return False
    return True


def _grid_items(n):
    # One work item per thread in one wave of blocks where the grid allows;
    # a stride of at most 2^30 keeps the kernels' 32-bit index loops from wrapping.
    return (max(1, min(-(-int(n) // BLOCK), 2**22)),)


_POOL_WIDE_FROM = 2**31  # array size from which the pooling kernels index in 64 bits (tests lower it)


def _pool_launch(name, g, sizes, arrays, work):
    """Launch pooling kernel ``name`` over ``work`` elements (items x channels of one vector).

    vec = 4 (16-byte accesses) when C % 4 == 0 and every pointer is aligned;
    wide = 1 (64-bit flat offsets) when an array holds 2^31 elements or more.
    """
    wide = max(sizes) >= _POOL_WIDE_FROM
    vec = 4 if not wide and int(g[3]) % 4 == 0 and _aligned16(*arrays) else 1
    _launch(name, _grid_items(work // vec), (BLOCK,), tuple(arrays) + g + (np.int32(vec), np.int32(wide)))


def _tiles(g):
    """Windows tile the input (stride == window, no padding before): each input cell has <= 1 window."""
    kh, kw, sh, sw, pt, pl = (int(v) for v in g[6:])
    return (sh, sw, pt, pl) == (kh, kw, 0, 0)


def _tile_work(g):
    n, h, w, c, kh, kw = (int(g[i]) for i in (0, 1, 2, 3, 6, 7))
    return n * -(-h // kh) * -(-w // kw) * c


def max_pool2d(x, pool_size=(2, 2), strides=None, padding="valid", out=None):
    """Max pooling, NHWC, as Backend.max_pool2d."""
    x = _check(x, "max_pool2d x")
    g = _pool_geom(x.shape, pool_size, strides, padding)
    out = _output(_xp(x), out, (int(g[0]), int(g[4]), int(g[5]), int(g[3])), "max_pool2d out")
    if out.size:
        _pool_launch("dg_max_pool_fwd", g, (x.size, out.size), (x, out), out.size)
    return out


def max_pool2d_grad(dy, x, pool_size=(2, 2), strides=None, padding="valid", out=None):
    """Gradient of max pooling: dy to the first maximum of each window (Backend.max_pool2d_grad)."""
    x, dy = _check(x, "max_pool2d_grad x"), _check(dy, "max_pool2d_grad dy")
    g = _pool_geom(x.shape, pool_size, strides, padding)
    _check(dy, "max_pool2d_grad dy", (int(g[0]), int(g[4]), int(g[5]), int(g[3])))
    out = _output(_xp(x), out, x.shape, "max_pool2d_grad out")
    if out.size:
        if _tiles(g):
            _pool_launch("dg_max_pool_bwd_tiles", g, (x.size, dy.size), (x, dy, out), _tile_work(g))
        else:
            _pool_launch("dg_max_pool_bwd", g, (x.size, dy.size), (x, dy, out), out.size)
    return out


def avg_pool2d(x, pool_size=(2, 2), strides=None, padding="valid", out=None):
    """Average pooling, NHWC; padded cells are not counted (Backend.avg_pool2d)."""
    x = _check(x, "avg_pool2d x")
    g = _pool_geom(x.shape, pool_size, strides, padding)
    out = _output(_xp(x), out, (int(g[0]), int(g[4]), int(g[5]), int(g[3])), "avg_pool2d out")
    if out.size:
        _pool_launch("dg_avg_pool_fwd", g, (x.size, out.size), (x, out), out.size)
    return out


def avg_pool2d_grad(dy, x_shape, pool_size=(2, 2), strides=None, padding="valid", out=None):
    """Gradient of average pooling: an array of ``x_shape`` (Backend.avg_pool2d_grad)."""
    dy = _check(dy, "avg_pool2d_grad dy")
    g = _pool_geom(tuple(x_shape), pool_size, strides, padding)
    _check(dy, "avg_pool2d_grad dy", (int(g[0]), int(g[4]), int(g[5]), int(g[3])))
    out = _output(_xp(dy), out, tuple(x_shape), "avg_pool2d_grad out")
    if out.size:
        if _tiles(g):
            _pool_launch("dg_avg_pool_bwd_tiles", g, (out.size, dy.size), (dy, out), _tile_work(g))
        else:
            _pool_launch("dg_avg_pool_bwd", g, (out.size, dy.size), (dy, out), out.size)
    return out


# --------------------------------------------------------------- optimizers
# In place, one launch each. p, g and the slots may be views of one flat
# buffer holding every parameter: then one launch updates the whole model.
def _scalars(hp, what, k):
    """The device scalar array of a graph step: float32 with at least ``k`` values."""
    if hp is None:
        return None
    if hp.dtype != np.float32 or hp.size < k:
        raise ValueError(f"{what}: hp must be a float32 array of at least {k} values, got {hp.dtype} {hp.shape}")
    return hp


def adam(p, g, m, v, lr, beta1, beta2, eps, step, weight_decay=0.0, hp=None):
    """Adam(W) step in place, as Backend.adam_update; ``step`` counts from 1.

    hp: None, or a device float32 array [step_size, lr * weight_decay] read
    when the kernel runs (a captured step); then ``lr`` and ``step`` are
    unused and ``weight_decay`` only says whether to decay (non-zero).
    """
    n = p.size
    for a, what in ((p, "p"), (m, "m"), (v, "v")):
        _inplace(a, f"adam {what}", n)
    g = _check(g, "adam g")
    hp = _scalars(hp, "adam", 2)
    if hp is None:
        step_size, decay = lr * (1 - beta2 ** step) ** 0.5 / (1 - beta1 ** step), lr * weight_decay
    else:
        step_size, decay = 0.0, 1.0 if weight_decay else 0.0
    if n:
        _launch("dg_adam", _grid1d(n), (BLOCK,),
                (p, g, m, v, _i64(n), _f32(beta1), _f32(beta2), _f32(eps), _f32(step_size),
                 _f32(decay), hp))


def sgd(p, g, m, lr, momentum=0.0, nesterov=False, hp=None):
    """SGD step in place, as Backend.sgd_update (m None or momentum 0: plain SGD).

    hp: None, or a device float32 array [lr, ...] read when the kernel runs.
    """
    n = p.size
    _inplace(p, "sgd p", n)
    g = _check(g, "sgd g")
    if m is None or not momentum:
        m = None
    else:
        _inplace(m, "sgd m", n)
    hp = _scalars(hp, "sgd", 1)
    if n:
        _launch("dg_sgd", _grid1d(n), (BLOCK,),
                (p, g, m, _i64(n), _f32(0.0 if hp is not None else lr), _f32(momentum),
                 np.int32(bool(nesterov)), hp))


def rmsprop(p, g, v, mg, mom, lr, rho, momentum, eps, hp=None):
    """RMSprop step in place, as Backend.rmsprop_update (mg, mom may be None).

    hp: None, or a device float32 array [lr, ...] read when the kernel runs.
    """
    n = p.size
    for a, what in ((p, "p"), (v, "v"), (mg, "mg"), (mom, "mom")):
        if a is not None:
            _inplace(a, f"rmsprop {what}", n)
    g = _check(g, "rmsprop g")
    hp = _scalars(hp, "rmsprop", 1)
    if n:
        _launch("dg_rmsprop", _grid1d(n), (BLOCK,),
                (p, g, v, mg, mom, _i64(n), _f32(0.0 if hp is not None else lr), _f32(rho),
                 _f32(momentum), _f32(eps), hp))


MANY = 8  # variables per dg_update_many launch: the kernel spells out eight parameter sets


def _update_many(rule, what, ps, gs, slot_lists, floats, decay_mask=0, flag=0, hp=None, hp_k=1):
    """Launch dg_update_many over ``ps`` in groups of MANY; slot_lists: per slot, one array (or None) per variable."""
    n = len(ps)
    if len(gs) != n or any(len(s) != n for s in slot_lists):
        raise ValueError(f"{what}: the per-variable lists have different lengths: {n} parameters, "
                         f"{len(gs)} gradients, slots {[len(s) for s in slot_lists]}")
    hp = _scalars(hp, what, hp_k)
    # Everything checked before the first launch: a step is applied whole or not at all.
    f32 = np.float32
    pad = (None,) * (3 - len(slot_lists))
    sets = []
    for k, p in enumerate(ps):
        size = p.size
        slots = [s[k] for s in slot_lists]
        for a in [p] + slots:
            if a is not None and (a.dtype != f32 or a.size != size or not a.flags.c_contiguous):
                _inplace(a, f"{what} parameter {k} or its slots", size)  # raises, naming the rule
        g = gs[k]
        if g.size != size:
            raise ValueError(f"{what}: gradient {k} has {g.size} elements for a parameter of {size}")
        sets.append((p, _check(g, f"{what} gradient {k}"), *slots, *pad, _i64(size)))
    head = (np.int32(rule), None, None, np.int32(flag)) + tuple(
        _f32(v) for v in tuple(floats) + (0.0,) * (5 - len(floats))) + (hp,)
    for start in range(0, n, MANY):
        args, mask, work = list(head), 0, 0
        for k in range(start, min(start + MANY, n)):
            args += sets[k]
            mask |= ((decay_mask >> k) & 1) << (k - start)
            work = max(work, ps[k].size)
        count = min(MANY, n - start)
        if not work:
            continue
        args[1], args[2] = np.int32(count), np.int32(mask)
        args += [None, None, None, None, None, _i64(0)] * (MANY - count)
        _launch("dg_update_many", _grid1d(work), (BLOCK,), tuple(args))


def adam_many(ps, gs, ms, vs, lr, beta1, beta2, eps, step, weight_decay=0.0, decays=None, hp=None):
    """``adam`` over lists of variables in ceil(len / MANY) launches, in place.

    decays: per variable, whether ``weight_decay`` applies (default: all).
    hp: as in ``adam`` ([step_size, lr * weight_decay], read at run time).
    Raises ValueError for lists of different lengths or mismatched arrays.
    """
    if hp is None:
        step_size, decay = lr * (1 - beta2 ** step) ** 0.5 / (1 - beta1 ** step), lr * weight_decay
    else:
        step_size, decay = 0.0, 1.0 if weight_decay else 0.0
    mask = sum(1 << i for i in range(len(ps)) if decays is None or decays[i]) if decay else 0
    _update_many(0, "adam_many", ps, gs, (ms, vs), (beta1, beta2, eps, step_size, decay), mask, hp=hp, hp_k=2)


def sgd_many(ps, gs, moms, lr, momentum=0.0, nesterov=False, hp=None):
    """``sgd`` over lists of variables (moms: None entries, or all None, for plain SGD)."""
    moms = [None] * len(ps) if moms is None or not momentum else moms
    _update_many(1, "sgd_many", ps, gs, (moms,), (momentum, 0.0, 0.0, 0.0 if hp is not None else lr),
                 flag=int(bool(nesterov)), hp=hp)


def rmsprop_many(ps, gs, vs, mgs, moms, lr, rho, momentum, eps, hp=None):
    """``rmsprop`` over lists of variables (mgs, moms: lists with None entries, or None)."""
    n = len(ps)
    mgs = [None] * n if mgs is None else mgs
    moms = [None] * n if moms is None else moms
    _update_many(2, "rmsprop_many", ps, gs, (vs, mgs, moms),
                 (rho, momentum, eps, 0.0 if hp is not None else lr), hp=hp)


# --------------------------------------------------- softmax, dropout, misc
def softmax_cross_entropy(logits, labels, loss=None, prob=None):
    """Rows of logits, labels [rows, cols] -> (loss [rows], softmax [rows, cols])."""
    xp = _xp(logits)
    logits, labels = _check(logits, "softmax_cross_entropy logits"), _check(labels, "softmax_cross_entropy labels", logits.shape)
    if logits.ndim != 2:
        raise ValueError(f"softmax_cross_entropy: expected 2-D [rows, cols], got {logits.shape}")
    rows, cols = logits.shape
    loss = _output(xp, loss, (rows,), "softmax_cross_entropy loss")
    prob = _output(xp, prob, (rows, cols), "softmax_cross_entropy prob")
    if rows and cols:
        _launch("dg_softmax_xent_fwd", (min(rows, 65536),), (_row_threads(cols),),
                (logits, labels, loss, prob, _i32(rows), _i32(cols)))
    return loss, prob


def softmax_cross_entropy_grad(prob, labels, dy, out=None):
    """Gradient with respect to the logits: ``(prob - labels) * dy[:, None]``; dy [rows]."""
    prob = _check(prob, "softmax_cross_entropy_grad prob")
    rows, cols = prob.shape
    labels = _check(labels, "softmax_cross_entropy_grad labels", (rows, cols))
    dy = _check(dy, "softmax_cross_entropy_grad dy", (rows,))
    out = _output(_xp(prob), out, (rows, cols), "softmax_cross_entropy_grad out")
    if out.size:
        _launch("dg_softmax_xent_bwd", _grid1d(out.size), (BLOCK,),
                (prob, labels, dy, out, _i32(rows), _i32(cols)))
    return out


def _labels(labels, what, rows):
    if labels.dtype != np.int32:
        raise TypeError(f"{what}: the custom kernels take int32 labels, got {labels.dtype}")
    if labels.size != rows:
        raise ValueError(f"{what}: {labels.size} labels for {rows} rows")
    return labels if labels.flags.c_contiguous else _xp(labels).ascontiguousarray(labels)


def _row_threads(cols):
    # A power of two from 32 to 256 covering a row (dg_block_reduce's rule).
    threads = 32
    while threads < min(cols, 256):
        threads *= 2
    return threads


def sparse_softmax_cross_entropy(logits, labels, loss=None, prob=None):
    """Logits [rows, cols], int32 labels [rows] -> (loss [rows], softmax [rows, cols]).

    A label outside [0, cols) gives loss 0 and, in the gradient, a row of 0
    (Backend.sparse_softmax_cross_entropy's rule).
    """
    xp = _xp(logits)
    logits = _check(logits, "sparse_softmax_cross_entropy logits")
    if logits.ndim != 2:
        raise ValueError(f"sparse_softmax_cross_entropy: expected 2-D [rows, cols], got {logits.shape}")
    rows, cols = logits.shape
    labels = _labels(labels, "sparse_softmax_cross_entropy", rows)
    loss = _output(xp, loss, (rows,), "sparse_softmax_cross_entropy loss")
    prob = _output(xp, prob, (rows, cols), "sparse_softmax_cross_entropy prob")
    if rows and cols:
        _launch("dg_sparse_xent_fwd", (min(rows, 65536),), (_row_threads(cols),),
                (logits, labels, loss, prob, _i32(rows), _i32(cols)))
    elif rows:
        loss[...] = 0
    return loss, prob


def sparse_softmax_cross_entropy_grad(prob, labels, dy, out=None):
    """``(prob - onehot(labels)) * dy[:, None]`` (0 in rows without a class); prob [rows, cols],
    int32 labels [rows], dy [rows]."""
    prob = _check(prob, "sparse_softmax_cross_entropy_grad prob")
    rows, cols = prob.shape
    labels = _labels(labels, "sparse_softmax_cross_entropy_grad", rows)
    dy = _check(dy, "sparse_softmax_cross_entropy_grad dy", (rows,))
    out = _output(_xp(prob), out, (rows, cols), "sparse_softmax_cross_entropy_grad out")
    if out.size:
        _launch("dg_sparse_xent_bwd", _grid1d(out.size), (BLOCK,),
                (prob, labels, dy, out, _i32(rows), _i32(cols)))
    return out


def softmax(x, out=None):
    """Softmax of each row of x [rows, cols] -> [rows, cols]."""
    x = _check(x, "softmax x")
    if x.ndim != 2:
        raise ValueError(f"softmax: expected 2-D [rows, cols], got {x.shape}")
    rows, cols = x.shape
    out = _output(_xp(x), out, (rows, cols), "softmax out")
    if rows and cols:
        _launch("dg_softmax_rows", (min(rows, 65536),), (_row_threads(cols),), (x, out, _i32(rows), _i32(cols)))
    return out


def argmax_hits(x, labels, out=None):
    """x [rows, cols] (cols >= 1), int32 labels [rows] -> float32 [rows]: 1 where argmax(x[r]) == labels[r]."""
    x = _check(x, "argmax_hits x")
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"argmax_hits: expected 2-D [rows, cols] with cols >= 1, got {x.shape}")
    rows, cols = x.shape
    labels = _labels(labels, "argmax_hits", rows)
    out = _output(_xp(x), out, (rows,), "argmax_hits out")
    if rows:
        _launch("dg_argmax_hits", _grid1d(rows), (BLOCK,), (x, labels, out, _i32(rows), _i32(cols)))
    return out


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
        _inplace(mask, "dropout mask", mask.size)
    else:
        x = _check(x, "dropout x")
        mask = _output(_xp(x), mask, x.shape, "dropout mask")
        y = _output(_xp(x), out, x.shape, "dropout out")
    n = mask.size
    if n:
        _launch("dg_dropout", _grid1d(dropout_offsets(n)), (BLOCK,),
                (x, y, mask, _i64(n), _f32(rate), _f32(1.0 / (1.0 - rate)),
                 np.uint64(int(seed) % 2**64), np.uint64(int(offset) % 2**64), replay))
    return y, mask


def set_scalars(hp, values):
    """Write up to four Python floats into the device float32 array ``hp`` (one launch)."""
    values = [float(v) for v in values]
    if not 0 < len(values) <= 4 or hp.dtype != np.float32 or hp.size < len(values):
        raise ValueError(f"set_scalars: 1 to 4 values into a float32 array of at least as many, "
                         f"got {len(values)} values for {hp.dtype} {hp.shape}")
    vals = values + [0.0] * (4 - len(values))
    _launch("dg_set_scalars", (1,), (32,), (hp, np.int32(len(values))) + tuple(_f32(v) for v in vals))


def counter_add(ctr, inc=1):
    """``ctr[0] += inc`` on the device (ctr: uint64 array [1]); one launch."""
    if ctr.dtype != np.uint64 or ctr.size != 1:
        raise ValueError(f"counter_add: ctr must be a uint64 array of one value, got {ctr.dtype} {ctr.shape}")
    _launch("dg_counter_add", (1,), (32,), (ctr, np.uint64(int(inc) % 2**64)))


def bias_act(x, bias=None, activation=None, out=None):
    """``act(x + bias)`` over the last axis of x (bias [cols] or None); out may be x."""
    x = _check(x, "bias_act x")
    cols = x.shape[-1] if x.ndim else 1
    if bias is not None:
        bias = _check(bias, "bias_act bias", (cols,))
    out = _output(_xp(x), out, x.shape, "bias_act out")
    if out.size:
        vec = 4 if (out.size % 4 == 0 and (bias is None or cols % 4 == 0)
                    and _aligned16(x, bias, out)) else 1
        _launch("dg_bias_act", _grid_items(out.size // vec), (BLOCK,),
                (x, bias, out, _i64(out.size // cols), _i32(cols), _act(activation), np.int32(vec)))
    return out


def relu_grad(dy, x, out=None):
    """``dy * (x > 0)`` in one launch (same shapes)."""
    dy, x = _check(dy, "relu_grad dy"), _check(x, "relu_grad x", dy.shape)
    out = _output(_xp(dy), out, dy.shape, "relu_grad out")
    if out.size:
        vec = 4 if out.size % 4 == 0 and _aligned16(dy, x, out) else 1
        _launch("dg_relu_grad", _grid_items(out.size // vec), (BLOCK,),
                (dy, x, out, _i64(out.size), np.int32(vec)))
    return out


def _col_sum_pass(x, dst, rows, cols, max_splits):
    """One dg_col_sum launch: x [rows, cols] -> dst [splits, cols]; returns splits (<= max_splits)."""
    vec = 4 if cols % 4 == 0 and _aligned16(x) else 1
    groups = cols // vec
    bx = 1
    while bx < min(groups, 32):
        bx *= 2
    by = BLOCK // bx
    gx = -(-groups // bx)
    # About four blocks per SM, each thread summing at least 8 rows.
    splits = max(1, min(max_splits, 4 * _sm_count(_xp(x)) // gx, rows // (8 * by), _MAX_GRID_Y))
    rows_per = -(-rows // splits) if rows else 1
    splits = max(1, -(-rows // rows_per)) if rows else 1
    if dst is None:
        return splits
    _launch("dg_col_sum", (gx, splits), (bx, by),
            (x, dst, _i64(rows), _i32(cols), _i64(rows_per), np.int32(vec)))
    return splits


def col_sum(x, out=None):
    """Column sums of x [rows, cols] -> [cols] (a bias gradient), deterministic.

    The rows are split over enough blocks to fill the GPU; the same kernel then
    sums the parts [splits, cols] in a second launch.
    """
    xp = _xp(x)
    x = _check(x, "col_sum x")
    rows, cols = x.shape
    out = _output(xp, out, (cols,), "col_sum out")
    if not cols:
        return out
    splits = _col_sum_pass(x, None, rows, cols, _MAX_GRID_Y)
    if splits == 1:
        _col_sum_pass(x, out, rows, cols, 1)
        return out
    parts = xp.empty((splits, cols), np.float32)
    _col_sum_pass(x, parts, rows, cols, splits)
    _col_sum_pass(parts, out, splits, cols, 1)
    return out


# Launchers of the kernel families in their own modules (they use the helpers above).
from .norm import batch_norm_grad, batch_norm_train  # noqa: E402
