"""The CUDA backend's custom-kernel path on the CPU, without a GPU.

Our ``.cu`` sources are compiled for the CPU with ``g++ -fopenmp``: each
CUDA thread of a block is an OpenMP thread, ``__syncthreads()`` an OpenMP
barrier, ``__shared__`` a static array the block's threads share, blocks
run one after another. Array arguments are copied into buffers with
poisoned margins that must come back untouched, and every scalar argument's
NumPy type must match the C parameter's (CuPy would silently pass the wrong
size). This checks index math, tiling, bounds, reductions and launch
arguments; not the GPU's memory model, warps, speed or nvcc's code.
Tensor-core code runs on a shim of ``nvcuda::wmma``, ``__half`` and
``__nv_bfloat16`` (in ``_EMU_HEADER``): a fragment holds the warp's whole tile,
lane 0 does the warp's loads, stores and mma (operands at the fragment's
precision, TF32 ignoring a float's low 13 bits; float32 sums), and a wmma load
or store that breaks the GPU's alignment rule fails the launch.

* ``Emulator(workdir)``: the built library; ``emu(name, grid, block, args)``
  runs one launch. ``emulator()`` builds it once per process, kept on disk
  (keyed by the sources) beside the CPU kernel cache.
* ``custom_backend(xp)``: the CuPy backend with ``kernels="custom"``; over
  NumPy (``xp=numpy``) its methods run on the host through the emulation.
* ``current_custom(xp)``: that backend as the current one, registered as "cuda".
* ``emulated_cuda()``: ``current_custom(numpy)`` with the emulation hooked in.
* ``emulation_status()``: ``(True, "")`` or ``(False, why)`` (no g++ / OpenMP).
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import types

import numpy as np

from .. import backends
from .. import kernels as K

_EMU_HEADER = r"""
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <type_traits>
struct dg_dim3 { unsigned int x, y, z; };
static thread_local dg_dim3 emu_threadIdx, emu_blockIdx;
static dg_dim3 emu_blockDim, emu_gridDim;
#define threadIdx emu_threadIdx
#define blockIdx emu_blockIdx
#define blockDim emu_blockDim
#define gridDim emu_gridDim
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __syncthreads() _Pragma("omp barrier")
static inline float __int_as_float(int i)
{ float f; __builtin_memcpy(&f, &i, sizeof f); return f; }
static inline unsigned int __umulhi(unsigned int a, unsigned int b)
{ return (unsigned int)(((unsigned long long)a * b) >> 32); }
// CUDA's float4 for the kernels' 16-byte accesses. Only 4-byte aligned here,
// so that any buffer works; the launchers enforce the GPU's 16-byte rule.
struct float4 { float x, y, z, w; };
static inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
// Blocks run one after another here: fences and atomics need no hardware.
#define __threadfence() __sync_synchronize()
#define __ldcg(p) (*(p))
static inline int atomicAdd(int* p, int v) { int old = *p; *p = old + v; return old; }
// A block's threads run at once (OpenMP threads): a float atomicAdd has to be atomic here.
static inline float atomicAdd(float* p, float v) { float old; _Pragma("omp atomic capture") { old = *p; *p += v; } return old; }
// A launch that broke a rule the GPU enforces (wmma's alignment, say) sets this; EMU_RUN reports it.
static int emu_fault = 0;
// ---- 16-bit floats (cuda_fp16.h, cuda_bf16.h): storage and the conversions our kernels use.
// __half is g++'s _Float16 (IEEE binary16, round to nearest even); __nv_bfloat16 keeps the
// top 16 bits of a float, rounded to nearest even as __float2bfloat16_rn does.
struct __half { _Float16 v; };
static inline float __half2float(__half h) { return (float)h.v; }
static inline __half __float2half_rn(float f) { __half h; h.v = (_Float16)f; return h; }
struct __nv_bfloat16 { unsigned short x; };
static inline float __bfloat162float(__nv_bfloat16 b)
{ unsigned int u = (unsigned int)b.x << 16; float f; __builtin_memcpy(&f, &u, 4); return f; }
static inline __nv_bfloat16 __float2bfloat16_rn(float f)
{
    unsigned int u; __builtin_memcpy(&u, &f, 4);
    __nv_bfloat16 b;
    if ((u & 0x7fffffffu) > 0x7f800000u) { b.x = (unsigned short)((u >> 16) | 0x40u); return b; }  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    b.x = (unsigned short)(u >> 16);
    return b;
}
// ---- nvcuda::wmma (mma.h). Warps are not emulated: a fragment holds the warp's whole tile,
// and the warp's collective operations (load, store, mma) are done by its lane 0 for the
// warp (the other lanes' fragments go unused: the GPU's split of a tile over lanes is
// unspecified, so a kernel may not depend on it), with the operands read at the fragment's
// precision and the products summed in float32, in k order.
static inline bool emu_lane0()
{ return ((emu_threadIdx.z * emu_blockDim.y + emu_threadIdx.y) * emu_blockDim.x + emu_threadIdx.x) % 32 == 0; }
namespace nvcuda { namespace wmma {
struct matrix_a {}; struct matrix_b {}; struct accumulator {};
struct row_major {}; struct col_major {};
namespace precision { struct tf32 {}; }
enum layout_t { mem_row_major, mem_col_major };
// cvt.rna.tf32.f32: to a 10-bit mantissa, round to nearest, ties away from zero.
static inline float __float_to_tf32(float f)
{
    unsigned int u; __builtin_memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
    __builtin_memcpy(&f, &u, 4);
    return f;
}
template <class T> struct emu_storage { typedef T type; };
template <> struct emu_storage<precision::tf32> { typedef float type; };
template <class Use, int M, int N, int K> struct emu_dims;
template <int M, int N, int K> struct emu_dims<matrix_a, M, N, K> { static constexpr int R = M, C = K; };
template <int M, int N, int K> struct emu_dims<matrix_b, M, N, K> { static constexpr int R = K, C = N; };
template <int M, int N, int K> struct emu_dims<accumulator, M, N, K> { static constexpr int R = M, C = N; };
template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
    static_assert(M == 16 && N == 16, "the emulation has the 16 x 16 shapes only");
    static_assert(std::is_same<Use, accumulator>::value ? (std::is_same<T, float>::value && std::is_void<Layout>::value)
                  : (std::is_same<T, precision::tf32>::value ? K == 8 : ((std::is_same<T, __half>::value
                     || std::is_same<T, __nv_bfloat16>::value) && K == 16)), "fragment type not on sm_80");
    typedef typename emu_storage<T>::type element_type;
    static constexpr int rows = emu_dims<Use, M, N, K>::R, cols = emu_dims<Use, M, N, K>::C;
    static constexpr int num_elements = rows * cols;
    element_type x[num_elements];  // the whole tile, (row, col) at row * cols + col
};
// The rules of load/store_matrix_sync: a 256-bit aligned pointer, ldm a multiple of 16 bytes.
template <class P> static inline bool emu_bad_ptr(const P* p, unsigned ldm)
{ return ((uintptr_t)p % 32) != 0 || (ldm * sizeof(P)) % 16 != 0; }
template <class Use, int M, int N, int K, class T, class L>
static inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f,
                                    const typename fragment<Use, M, N, K, T, L>::element_type* p, unsigned ldm)
{
    static_assert(std::is_same<L, row_major>::value || std::is_same<L, col_major>::value, "a or b fragment");
    if (!emu_lane0()) return;
    if (emu_bad_ptr(p, ldm)) emu_fault = 1;
    typedef fragment<Use, M, N, K, T, L> F;
    for (int r = 0; r < F::rows; ++r)
        for (int c = 0; c < F::cols; ++c)
            f.x[r * F::cols + c] = std::is_same<L, row_major>::value ? p[(long)r * ldm + c] : p[(long)c * ldm + r];
}
template <int M, int N, int K>
static inline void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* p, unsigned ldm, layout_t l)
{
    if (!emu_lane0()) return;
    if (emu_bad_ptr(p, ldm)) emu_fault = 1;
    for (int r = 0; r < M; ++r)
        for (int c = 0; c < N; ++c) f.x[r * N + c] = l == mem_row_major ? p[(long)r * ldm + c] : p[(long)c * ldm + r];
}
template <int M, int N, int K>
static inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t l)
{
    if (!emu_lane0()) return;
    if (emu_bad_ptr(p, ldm)) emu_fault = 1;
    for (int r = 0; r < M; ++r)
        for (int c = 0; c < N; ++c) (l == mem_row_major ? p[(long)r * ldm + c] : p[(long)c * ldm + r]) = f.x[r * N + c];
}
template <class Use, int M, int N, int K, class T, class L, class V>
static inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, const V& v)
{
    for (int i = 0; i < f.num_elements; ++i) f.x[i] = v;
}
// What the tensor core reads of an operand: TF32 ignores a float's low 13 bits.
static inline float emu_operand(float v)
{ unsigned int u; __builtin_memcpy(&u, &v, 4); u &= 0xffffe000u; __builtin_memcpy(&v, &u, 4); return v; }
static inline float emu_operand(__half v) { return __half2float(v); }
static inline float emu_operand(__nv_bfloat16 v) { return __bfloat162float(v); }
template <int M, int N, int K, class T, class LA, class LB>
static inline void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
                            const fragment<matrix_b, M, N, K, T, LB>& b, const fragment<accumulator, M, N, K, float>& c)
{
    if (!emu_lane0()) return;
    float av[M * K], bv[K * N], out[M * N];
    for (int i = 0; i < M * K; ++i) av[i] = emu_operand(a.x[i]);
    for (int i = 0; i < K * N; ++i) bv[i] = emu_operand(b.x[i]);
    for (int i = 0; i < M * N; ++i) out[i] = c.x[i];
    for (int i = 0; i < M; ++i)  // each output sums its products in k order, in float32
        for (int k = 0; k < K; ++k)
            for (int j = 0; j < N; ++j) out[i * N + j] = fmaf(av[i * K + k], bv[k * N + j], out[i * N + j]);
    for (int i = 0; i < M * N; ++i) d.x[i] = out[i];
}
}}  // namespace nvcuda::wmma
#define EMU_RUN(CALL)                                                              \
    emu_gridDim = {emu_gx, emu_gy, emu_gz};                                        \
    emu_blockDim = {emu_bx, emu_by, emu_bz};                                       \
    const int emu_nt = (int)(emu_bx * emu_by * emu_bz);                            \
    for (unsigned int emu_z = 0; emu_z < emu_gz; ++emu_z)                          \
    for (unsigned int emu_y = 0; emu_y < emu_gy; ++emu_y)                          \
    for (unsigned int emu_x = 0; emu_x < emu_gx; ++emu_x) {                        \
        int emu_bad = 0;                                                           \
        _Pragma("omp parallel num_threads(emu_nt)")                                \
        {                                                                          \
            if (omp_get_num_threads() != emu_nt) { emu_bad = 1; } else {           \
                const unsigned int t = (unsigned int)omp_get_thread_num();         \
                emu_blockIdx = {emu_x, emu_y, emu_z};                              \
                emu_threadIdx = {t % emu_bx, (t / emu_bx) % emu_by, t / (emu_bx * emu_by)}; \
                CALL;                                                              \
            }                                                                      \
        }                                                                          \
        if (emu_bad) return -1;                                                    \
        if (emu_fault) { emu_fault = 0; return -2; }                               \
    }                                                                              \
    return 0;
"""

_KERNEL_DEF = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', re.S)
_SCALARS = {"int": np.int32, "long long": np.int64, "unsigned long long": np.uint64, "float": np.float32}
_CTYPES = {"int": ctypes.c_int32, "long long": ctypes.c_int64,
           "unsigned long long": ctypes.c_uint64, "float": ctypes.c_float}
_MARGIN = 257  # poisoned elements either side of every array argument
# Pointer parameter type -> the NumPy dtype an argument must have, and its poison value.
_POINTEES = {"float": np.dtype(np.float32), "unsigned long long": np.dtype(np.uint64), "int": np.dtype(np.int32),
             "__half": np.dtype(np.float16)}  # "__nv_bfloat16": ml_dtypes' bfloat16, added by _pointee
_POISON = {np.dtype(np.float32): np.nan, np.dtype(np.uint64): np.uint64(0xDEADBEEFDEADBEEF),
           np.dtype(np.int32): np.int32(-0x21524111), np.dtype(np.float16): np.nan}
# The CUDA headers tensorcore.cu includes; _EMU_HEADER stands in for them.
_CUDA_HEADERS = re.compile(r'^[ \t]*#[ \t]*include[ \t]*<(mma|cuda_fp16|cuda_bf16)\.h>.*$', re.M)
_FLAGS = ["-std=c++17", "-O1", "-fopenmp", "-shared", "-fPIC", "-w"]


def _pointee(base):
    """The NumPy dtype a pointer parameter of C type ``base`` takes (bfloat16 through ml_dtypes)."""
    if base == "__nv_bfloat16" and base not in _POINTEES:
        import ml_dtypes  # a kernel taking bfloat16 can only be called with ml_dtypes' arrays
        _POINTEES[base] = np.dtype(ml_dtypes.bfloat16)
        _POISON[_POINTEES[base]] = np.nan
    return _POINTEES[base]


def _poisoned(margin):
    if margin.dtype.kind == "f" or margin.dtype.name == "bfloat16":
        return bool(np.isnan(margin.astype(np.float32)).all())
    return bool((margin == _POISON[margin.dtype]).all())


def _params(text):
    out = []
    for p in text.split(","):
        p = " ".join(p.replace("*", " * ").split())
        name = p.split()[-1]
        ctype = p[: -len(name)].strip()
        ptr = "*" in ctype
        base = ctype.replace("const", "").replace("*", "").replace("__restrict__", "").strip()
        out.append((name, ctype, ptr, " ".join(base.split())))
    return out


def _cache_dir():
    root = os.environ.get("DEEPGPU_KERNEL_CACHE")
    if root:
        return os.path.join(root, "emulated")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "deepgpu", "emulated")


class Emulator:
    """The kernel sources built for the CPU; ``emu(name, grid, block, args)`` runs one launch.

    ``workdir``: where the library is built, or None for the on-disk cache
    (a library already there for the same sources and flags is reused).
    Raises RuntimeError with g++'s message when the build fails.
    """

    def __init__(self, workdir=None):
        self.sigs = {}
        parts = [_EMU_HEADER]
        for file in K.KERNELS:
            src = _CUDA_HEADERS.sub("", K.source(file))
            # Each file in its own namespace: the files share helper names, as separate modules do.
            ns = "emu_" + file.replace(".", "_")
            parts.append(f"namespace {ns} {{\n{src}\n}}\n")
            for name, plist in _KERNEL_DEF.findall(src):
                params = _params(plist)
                self.sigs[name] = params
                decl = ", ".join(f"{ct} {nm}" for nm, ct, _, _ in params)
                call = ", ".join(nm for nm, _, _, _ in params)
                parts.append(
                    f'extern "C" int emu_{name}(unsigned int emu_gx, unsigned int emu_gy, unsigned int emu_gz, '
                    f'unsigned int emu_bx, unsigned int emu_by, unsigned int emu_bz, {decl})\n'
                    f'{{ EMU_RUN({ns}::{name}({call})) }}\n')
        code = "\n".join(parts)
        # extern "C" inside a namespace still defines a C symbol: rename the kernels themselves.
        code = code.replace('extern "C" __global__', "__global__")
        key = hashlib.sha256((code + " ".join(_FLAGS)).encode()).hexdigest()[:16]
        folder = workdir if workdir is not None else _cache_dir()
        os.makedirs(folder, exist_ok=True)
        lib = os.path.join(folder, f"kernels_emu_{key}.so")
        if workdir is not None or not os.path.exists(lib):
            self._build(code, folder, lib)
        self.lib = ctypes.CDLL(lib)

    @staticmethod
    def _build(code, folder, lib):
        fd, tmp = tempfile.mkstemp(prefix=".emu-", suffix=".so", dir=folder)
        os.close(fd)
        cpp = tmp[:-3] + ".cpp"
        try:
            with open(cpp, "w") as f:
                f.write(code)
            r = subprocess.run(["g++", *_FLAGS, "-o", tmp, cpp], capture_output=True, text=True)
            if r.returncode:
                raise RuntimeError(f"g++ failed on the emulated kernels:\n{r.stderr[-4000:]}")
            os.replace(tmp, lib)  # whole or absent: a parallel process may be loading it
        finally:
            for p in (cpp, tmp):
                if os.path.exists(p):
                    os.unlink(p)

    def __call__(self, name, grid, block, args):
        params = self.sigs[name]
        assert len(args) == len(params), f"{name}: {len(args)} arguments for {len(params)} parameters"
        grid = tuple(grid) + (1,) * (3 - len(grid))
        block = tuple(block) + (1,) * (3 - len(block))
        assert all(int(g) >= 1 for g in grid), f"{name}: empty grid {grid}"
        assert grid[1] <= 65535 and grid[2] <= 65535 and grid[0] <= 2**31 - 1, f"{name}: grid {grid}"
        assert 1 <= int(np.prod(block)) <= 1024, f"{name}: block {block}"
        cargs, guards = [], []
        for a, (pname, ctype, ptr, base) in zip(args, params):
            if ptr:
                if a is None:
                    cargs.append(ctypes.c_void_p(None))
                    continue
                assert isinstance(a, np.ndarray), f"{name}({pname}): expected an array, got {type(a)}"
                want = _pointee(base)
                assert a.dtype == want and a.flags.c_contiguous, f"{name}({pname}): {a.dtype}, needs {want}"
                buf = np.full(a.size + 2 * _MARGIN, _POISON[want], want)
                buf[_MARGIN:_MARGIN + a.size] = a.reshape(-1)
                guards.append((pname, a, buf))
                cargs.append(ctypes.c_void_p(buf.ctypes.data + buf.itemsize * _MARGIN))
            else:
                want = _SCALARS[base]
                assert type(a) is want, f"{name}({pname}): {ctype} needs {want.__name__}, got {type(a).__name__}"
                cargs.append(_CTYPES[base](a.item()))
        fn = getattr(self.lib, "emu_" + name)
        fn.restype = ctypes.c_int
        rc = fn(*[ctypes.c_uint(int(v)) for v in grid + block], *cargs)
        assert rc != -2, f"{name}: a wmma load/store broke the GPU's rule (256-bit aligned pointer, ldm of 16 bytes)"
        assert rc == 0, f"{name}: OpenMP did not give {int(np.prod(block))} threads"
        for pname, a, buf in guards:
            assert _poisoned(buf[:_MARGIN]) and _poisoned(buf[-_MARGIN:]), (
                f"{name}: wrote outside the array argument {pname}")
            a.reshape(-1)[...] = buf[_MARGIN:_MARGIN + a.size]


_shared = {}
_shared_lock = threading.Lock()


def emulation_status():
    """``(True, "")`` where the emulation can be built, else ``(False, why)``."""
    if shutil.which("g++") is None:
        return False, "g++ is not on PATH: the CPU emulation of the kernels cannot be built"
    try:
        emulator()
    except RuntimeError as e:
        if "omp.h" in str(e):
            return False, "g++ has no OpenMP here: the CPU emulation of the kernels cannot be built"
        raise
    return True, ""


def emulator() -> Emulator:
    """The process's Emulator, built (or loaded from the cache) on first use."""
    with _shared_lock:
        if "emu" not in _shared:
            # Many more OpenMP threads than cores wait at barriers: sleep there instead of spinning.
            os.environ.setdefault("OMP_WAIT_POLICY", "passive")
            _shared["emu"] = Emulator()
        return _shared["emu"]


def custom_backend(xp):
    """The CuPy backend with kernels="custom": the real one on a GPU, else its methods over NumPy."""
    from ..backends.cupy_backend import CupyBackend
    if xp is np:
        b = CupyBackend.__new__(CupyBackend)
        b.xp = np
        b._cupyx = types.SimpleNamespace(scatter_add=np.add.at)  # cupyx's unbuffered add, in NumPy
        b._device = lambda: None  # no CUDA device to ask
        b._init_kernels("custom")
        return b
    return backends.get("cuda")


@contextlib.contextmanager
def current_custom(xp):
    """The custom-kernel CuPy backend as the current one (over NumPy: registered as "cuda")."""
    B = custom_backend(xp)
    saved = backends._instances.get("cuda"), getattr(backends._state, "backend", None), B.kernels
    try:
        if xp is np:
            B.to_numpy = lambda a: np.array(a, copy=True)
            backends._instances["cuda"] = B
        B.kernels = "custom"
        backends._state.backend = B
        yield B
    finally:
        B.kernels = saved[2]
        if saved[0] is None:
            backends._instances.pop("cuda", None)
        else:
            backends._instances["cuda"] = saved[0]
        backends._state.backend = saved[1]


@contextlib.contextmanager
def emulated_cuda():
    """The custom-kernel path over NumPy with every launch emulated; yields the backend."""
    emu = emulator()
    prev = K._emulator
    K._emulator = emu
    try:
        with current_custom(np) as B:
            yield B
    finally:
        K._emulator = prev


class _CountedRoutine:
    """A routine of the array module that counts its calls (and its ``.at``, ``.reduce``, ... calls)."""

    def __init__(self, fn, name, calls):
        self._fn, self._name, self._calls = fn, name, calls

    def __call__(self, *args, **kwargs):
        self._calls[self._name] += 1
        return self._fn(*args, **kwargs)

    def __getattr__(self, attr):
        sub = getattr(self._fn, attr)
        return _CountedRoutine(sub, f"{self._name}.{attr}", self._calls) if callable(sub) else sub


class CountingXP:
    """An array module (NumPy under the emulation) whose routine calls are counted by name.

    Set as a backend's ``xp``: each ``xp.<routine>(...)`` the backend calls is one CuPy routine
    (one or more CuPy kernels, or an allocation for ``empty``) on a GPU. Types (``ndarray``,
    dtypes) and submodules pass through uncounted, and so do array operators and methods
    (``a + b``, ``a.sum()``) and the launchers' own ``xp`` (they use ``K._xp``): what this
    counts is the backend's explicit routine calls.
    """

    def __init__(self, xp):
        import collections
        self._xp = xp
        self.calls = collections.Counter()

    def __getattr__(self, name):
        a = getattr(self._xp, name)
        if isinstance(a, (type, types.ModuleType)) or not callable(a):
            return a
        return _CountedRoutine(a, name, self.calls)
