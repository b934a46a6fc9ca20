"""What every launcher module shares: the kernel sources, compiling them, the launch, and argument checks.

Each launcher module registers the extern "C" functions it launches from its
``.cu`` file (``register``), so that ``function(name)`` knows which file to
compile and ``precompile()`` covers every file. Tests replace some names on
the package (``source``, the ``_emulator`` hook, ``_launch``, ...): those are
read from it at each use, here and in the launcher modules.
"""
from __future__ import annotations

import contextlib
import ctypes
import math
import os
import re
import sys
import threading
import time
from importlib import resources

import numpy as np

from .. import kernels as K

# Activation names -> the DG_ACT_* codes of common.cuh.
ACTIVATIONS = {None: 0, "linear": 0, "relu": 1, "sigmoid": 2, "tanh": 3, "relu6": 4}
BLOCK = 256  # threads per block of the elementwise and pooling kernels
OPTIONS = ("--std=c++17",)
_MAX_GRID_Y = 65535
_INT_MAX = 2**31 - 1


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
KERNELS: dict = {}     # kernel file -> the extern "C" functions launched from it (see register)
_file_of: dict = {}    # function name -> its kernel file
_lock = threading.Lock()


def register(file: str, names) -> None:
    """Record that the launchers of a module launch ``names``, defined in kernel source ``file``."""
    names = tuple(names)
    KERNELS[file] = KERNELS.get(file, ()) + names
    _file_of.update(dict.fromkeys(names, file))


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


def _cupy():
    """The cupy module. Read from sys.modules once imported: an import statement costs about 1 us, and
    each launch on a GPU asks two or three times (_xp, _device_id)."""
    cupy = sys.modules.get("cupy")
    if cupy is None:
        import cupy
    return cupy


def _device_id() -> int:
    return _cupy().cuda.runtime.getDevice()


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
            mod = cupy.RawModule(code=K.source(file), options=OPTIONS)
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
_NULL = np.uint64(0)  # a null pointer argument


def _launch(name, grid, block, args):
    emulator = K._emulator  # the package's hook, where tests set it
    if emulator is not None:
        emulator(name, grid, block, args)
        return
    # A list comprehension, not a generator: about 1 us less per launch of 20 arguments.
    function(name)(grid, block, tuple([_NULL if a is None else a for a in args]))


def _xp(a):
    return np if isinstance(a, np.ndarray) else _cupy()


# np.int32 of the small values, made once (np.int32(v) costs about 0.4 us): most sizes a row kernel is given,
# and the flag arguments (_FLAGS: the GEMM and convolution kernels' bits for vector loads of A, B, C and a
# bias row; pooling's vector width and 64-bit flag).
_SMALL_I32 = tuple(np.int32(v) for v in range(1024))
_FLAGS = _SMALL_I32[:16]


def _i32(v):
    if type(v) is int and 0 <= v < 1024:
        return _SMALL_I32[v]
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


_F32 = np.dtype(np.float32)  # a dtype, not the type: comparing with it skips a conversion per call


def _check(a, what, shape=None):
    """``a`` as a float32 C-contiguous array (copied only when strided); TypeError for other dtypes."""
    if a.dtype != _F32:
        raise TypeError(f"{what}: the custom kernels take float32, got {a.dtype}")
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise ValueError(f"{what}: expected shape {tuple(shape)}, got {tuple(a.shape)}")
    return a if a.flags.c_contiguous else _xp(a).ascontiguousarray(a)


def _inplace(a, what, size):
    """An array updated in place must already be float32, contiguous and of ``size`` elements."""
    if a.dtype != _F32 or not a.flags.c_contiguous or a.size != size:
        raise ValueError(f"{what}: an in-place operand must be float32, C-contiguous and of "
                         f"{size} elements; got {a.dtype}, {a.shape}, contiguous={a.flags.c_contiguous}")
    return a


def _output(xp, out, shape, what):
    if out is None:
        return xp.empty(shape, np.float32)
    return _inplace(out, what, math.prod(shape)).reshape(shape)


def _act(activation):
    try:
        return np.int32(ACTIVATIONS[activation])
    except KeyError:
        raise ValueError(f"activation {activation!r} is not fused; one of {sorted(map(str, ACTIVATIONS))}") from None


_addressof, _char_view, _void_at = ctypes.addressof, ctypes.c_char.from_buffer, ctypes.c_void_p.from_address


def _numpy_data_offset():
    """Where a NumPy array's data pointer lies from the array object's address, or None.

    NumPy's C API puts ``data`` right after the object header (PyArrayObject), and
    CPython's ``id`` is the object's address: reading it there costs a quarter of a
    ctypes view of the buffer. Only where probes of a few arrays confirm it
    (not on another Python, nor a build whose object header differs).
    """
    if sys.implementation.name != "cpython":
        return None
    at = ctypes.sizeof(ctypes.c_ssize_t) + ctypes.sizeof(ctypes.c_void_p)  # ob_refcnt, ob_type
    base = np.empty((4, 6), np.float32)
    probes = (base, base[1:, 2:], base.T, np.empty(0, np.float64), np.frombuffer(b"abcdefgh", np.float32))
    return at if all(_void_at(id(p) + at).value == p.ctypes.data for p in probes) else None


_NP_DATA_AT = _numpy_data_offset()


def _ptr(a):
    """The address of ``a``'s first element: CuPy's device pointer, or NumPy's (the emulation)."""
    if isinstance(a, np.ndarray):
        if _NP_DATA_AT is not None:  # ~0.25 us; the fallbacks below ~1 and ~2.5 us (about 60 calls a step)
            return _void_at(id(a) + _NP_DATA_AT).value
        try:  # a ctypes view of the buffer: a quarter of the cost of ``a.ctypes.data``
            return _addressof(_char_view(a))
        except (TypeError, ValueError):  # read-only, not C-contiguous, or empty
            return a.ctypes.data
    return a.data.ptr


def _vec4(*arrays):
    """True when every array (None skipped) starts on a 16-byte boundary (float4 access)."""
    return all(a is None or _ptr(a) % 16 == 0 for a in arrays)


def _aligned16(*arrays):
    """True when every array (None skipped) starts on a 16-byte boundary, as float4 accesses need."""
    for a in arrays:
        if a is not None and _ptr(a) % 16:
            return False
    return True


def _grid_items(n):
    # One work item per thread in one wave of blocks where the grid allows;
    # a stride of at most 2^30 keeps the kernels' 32-bit index loops from wrapping.
    return (max(1, min(-(-int(n) // BLOCK), 2**22)),)


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
        stream = _cupy().cuda.get_current_stream()
        if stream.is_capturing():
            return xp.zeros(n, np.int32)
        key = (_device_id(), stream.ptr)
    c = _counters.get(key)
    if c is None or c.size < n:
        if c is not None:
            _counters_old.append(c)
        c = _counters[key] = xp.zeros(max(n, 4096), np.int32)
    return c
