"""The CPU backend: NumPy and BLAS, with C kernels for convolution and pooling.

CPU-specific overrides (bench/NOTES.md has the measurements behind each):

* Convolutions with a multiple of 16 output channels (forward, stride-1
  input gradient as a full convolution, filter gradient with the relu mask
  and bias sum folded in) and max pooling over tiling windows run on the C
  kernels of ``deepgpu.kernels.cpu`` (built on first use; 2-2.7x the
  im2col + BLAS path on the seed convnet). Everything below is the NumPy +
  BLAS path, used for other shapes and dtypes and where no C compiler works
  (``DEEPGPU_CPU_KERNELS=numpy`` forces it).
* Convolutions copy the im2col columns into a reused per-thread work buffer
  (a fresh 85 MB array per call costs a page fault per 4 KB), split over
  the cores (NumPy releases the GIL while copying), in batch chunks so the
  buffer stays under ``WORKSPACE_BYTES``; then one BLAS call per chunk.
* The input gradient of a stride-1 convolution is a full convolution of the
  padded output gradient with the flipped kernel: the same im2col + GEMM,
  instead of a GEMM and kh*kw strided adds.
* A gradient summed over its leading axes (a bias's, through broadcasting)
  is one matrix-vector product with ones: 10x faster than ``sum(axis=...)``.
* ``dense`` applies relu in place; Adam updates its moments in place with
  no temporaries of the parameter's size beyond two.
* The max-pool gradient of non-overlapping windows compares with the pooled
  maximum (first hit wins) instead of an argmax over a strided view.
* glibc gives freed blocks above its mmap / trim thresholds back to the OS,
  so every activation of every step was faulted in again page by page
  (9,500 faults, 48 ms of system time per convnet step). The backend raises
  both thresholds once (``_keep_freed_memory``); ``DEEPGPU_MALLOC=system``
  leaves the allocator alone.

* OpenBLAS's threads spin for ~0.1 s after each GEMM, stealing the other
  core from the copies and passes that follow; ``base`` sets
  ``OPENBLAS_THREAD_TIMEOUT=4`` (sleep at once) when the variable is unset,
  and makes an OpenBLAS that NumPy loaded earlier re-read it
  (``memory_info()`` shows the value and how it was applied).

``DEEPGPU_NUM_THREADS`` (default: the CPUs this process may use) sets how
many threads copy; the BLAS keeps its own setting (threadpoolctl).
"""
from __future__ import annotations

import ctypes
import math
import os
import sys
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .base import BLAS_THREAD_TIMEOUT_HOW, Backend, _pair, _rows_by  # base sets OPENBLAS_THREAD_TIMEOUT first
from . import cpu_depthwise  # noqa: E402
from .half import upcast_half_primitives  # noqa: E402

WORKSPACE_BYTES = 8 << 20  # im2col columns per chunk (2-128 MB measured alike; 8 keeps memory low)
_PARALLEL_MIN_BYTES = 1 << 20  # smaller copies stay on one thread
_FEW_CHANNELS = 4
WINOGRAD = True  # 3x3 stride-1 convolutions with 16k input channels on Winograd tiles
# G of F(2x2, 3x3): the kernel transform U = G g G^T.
_WINO_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]], np.float32)
# G of F(4x4, 3x3).
_WINO_G4 = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                     [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float32)
WINOGRAD_TILE = "auto"  # 2, 4, or "auto": per layer, see _wino_tile
# The activations the convolutions apply in their epilogue, as the C kernels' codes (cpu_conv.c and
# cpu_depthwise.c share them).
_ACTS = cpu_depthwise.ACTS
# The clip ufunc itself (np.core in NumPy 1.x): np.clip's Python wrapper cost 55 vs 13 us on
# 256 KB parts (issue 17).
_clip = getattr(np, "_core", None) and np._core.umath.clip or np.core.umath.clip


def _flipped(k):
    """The kernel of an input gradient as a full convolution: [kh, kw, C, O] turned 180
    degrees, in and out swapped: [kh, kw, O, C], contiguous."""
    return np.ascontiguousarray(k[::-1, ::-1].transpose(0, 1, 3, 2))


def _wino_tile(ho, wo):
    """2 or 4: the Winograd output tile with fewer multiplies once the tiles' overhang past
    the output is counted (4 for every layer of the seed convnet, also for its 10x10 and 8x8
    outputs, where it measured 0.60-0.65 vs 0.70-0.83 ms; 2 on a tie, e.g. 6x6)."""
    def cost(t, per_tile):
        return per_tile * -(-ho // t) * -(-wo // t)
    return 4 if cost(4, 36) < cost(2, 16) else 2  # up to this many input channels, im2col columns are built transposed


_KEEP_BYTES = 1 << 30  # blocks up to this size come from (and return to) the heap


def _keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds so freed arrays are reused, not unmapped.

    Returns whether the allocator was changed (only on Linux with glibc,
    and not when ``DEEPGPU_MALLOC=system``).
    """
    if os.environ.get("DEEPGPU_MALLOC", "").lower() == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, _KEEP_BYTES)) and bool(mallopt(m_trim_threshold, _KEEP_BYTES))


def _cpu_count() -> int:
    env = os.environ.get("DEEPGPU_NUM_THREADS")
    if env:
        return max(1, int(env))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class NumpyBackend(Backend):
    """CPU backend. Arrays are ``numpy.ndarray``."""

    name = "cpu"
    xp = np

    def __init__(self):
        self.threads = _cpu_count()
        self.malloc_tuned = _keep_freed_memory()
        self._pool = None
        self._local = threading.local()
        self._zeros = {}  # dtype -> read-only zeros, for _relu_
        self._ck = None  # the C kernels: None = not looked for yet, False = unavailable
        self._adam_plans = {}  # ids of (params, m, v) -> their pointer arrays, for adam_update_many

    def is_array(self, a) -> bool:
        return isinstance(a, np.ndarray)

    def memory_info(self) -> dict:
        ws = getattr(self._local, "ws", {})
        return {"workspace_bytes": sum(b.nbytes for b in ws.values()), "malloc_keeps_freed": self.malloc_tuned,
                "openblas_thread_timeout": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
                "openblas_thread_timeout_how": BLAS_THREAD_TIMEOUT_HOW}

    # ------------------------------------------------------------ helpers
    def _scratch(self, key, shape, dtype):
        """A reused work array of ``shape`` (contents undefined); never escapes a primitive."""
        ws = getattr(self._local, "ws", None)
        if ws is None:
            ws = self._local.ws = {}
        n = 1
        for s in shape:
            n *= int(s)
        buf = ws.get(key)
        if buf is None or buf.dtype != dtype or buf.size < n:
            buf = ws[key] = np.empty(n, dtype)
        return buf[:n].reshape(shape)

    def _relu_(self, a):
        """relu of a C-contiguous float array, in place; NaN stays NaN.

        NumPy's ``maximum`` with a scalar 0 runs a slow broadcast loop here
        (253 vs 43 us on 884 KB, bench/NOTES.md); against an array of zeros
        it takes the vectorised one.
        """
        flat = a.reshape(-1)
        np.maximum(flat, self._zeros_of(a.dtype, flat.size), out=flat)
        return a

    def _bias_act_(self, y, b, act):
        """y [rows, O] = act(y + b) in place (b [O] or None; act 0 none, 1 relu, 2 relu6), on the
        threads, in parts of about 256 KB so the activation reads what the bias add left in cache
        (for MobileNetV2's 1x1 convolutions: two passes over memory became one)."""
        if b is None and not act:
            return y
        o = y.shape[1]
        rows = max(1, min(y.shape[0], (1 << 16) // o))  # no longer than y: the bias tile is made per call
        # The bias repeated over a part's rows: NumPy's inner loop then runs the whole part, not O.
        brow = None if b is None else np.tile(b, rows)
        flat = y.reshape(-1)
        zeros = self._zeros_of(y.dtype, rows * o) if act == 1 else None
        lo, hi = y.dtype.type(0), y.dtype.type(6)

        def run(r0, r1):
            for a in range(r0 * o, r1 * o, rows * o):
                part = flat[a:min(a + rows * o, r1 * o)]
                if brow is not None:
                    np.add(part, brow[:part.size], out=part)
                if act == 1:
                    np.maximum(part, zeros[:part.size], out=part)
                elif act == 2:
                    _clip(part, lo, hi, out=part)

        self._parallel(y.shape[0], run, y.nbytes)
        return y

    def _zeros_of(self, dtype, n):
        """A read-only array of n zeros (shared by every call and thread)."""
        zeros = self._zeros.get(dtype)
        if zeros is None or zeros.size < n:
            zeros = np.zeros(max(n, 1 << 16), dtype)
            zeros.flags.writeable = False
            self._zeros[dtype] = zeros
        return zeros[:n]

    def _parallel(self, n, fn, nbytes):
        """Run ``fn(a, b)`` over ranges covering ``range(n)``, on the threads when ``nbytes`` is large.

        NumPy releases the GIL inside copies and ufunc loops, so the parts run
        at once. Only the calling thread submits: pool threads never wait on the pool.
        """
        nt = min(self.threads, n)
        if nt < 2 or nbytes < _PARALLEL_MIN_BYTES:
            fn(0, n)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="deepgpu-cpu")
        cuts = [n * i // nt for i in range(nt + 1)]
        futs = [self._pool.submit(fn, a, b) for a, b in zip(cuts[1:-1], cuts[2:])]
        fn(cuts[0], cuts[1])
        for f in futs:
            f.result()

    def _copy(self, dst, src):
        """``dst[...] = src``, split along the first axis over the threads when large."""
        self._parallel(dst.shape[0], lambda a, b: np.copyto(dst[a:b], src[a:b]), dst.nbytes)

    def _padded(self, x, k_shape, strides, padding, dilation):
        """(the input with its convolution padding, ho, wo)."""
        ho, wo, ph, pw = self.conv_geometry(x.shape, k_shape, strides, padding, dilation)
        if ph != (0, 0) or pw != (0, 0):
            n, h, w, c = x.shape
            out = np.empty((n, h + ph[0] + ph[1], w + pw[0] + pw[1], c), x.dtype)
            # Only the border is zeroed and the copy runs on the threads (np.pad fills and copies
            # the whole array on one).
            out[:, :ph[0]] = 0
            out[:, ph[0] + h:] = 0
            out[:, ph[0]:ph[0] + h, :pw[0]] = 0
            out[:, ph[0]:ph[0] + h, pw[0] + w:] = 0
            self._copy(out[:, ph[0]:ph[0] + h, pw[0]:pw[0] + w], x)
            x = out
        return x, ho, wo

    def _conv_setup(self, x, k_shape, strides, padding, dilation):
        """(strided window view [N, ho, wo, kh, kw, C], ho, wo) of the padded input."""
        sh, sw = _pair(strides, "strides")
        dh, dw = _pair(dilation, "dilation_rate")
        x, ho, wo = self._padded(x, k_shape, (sh, sw), padding, (dh, dw))
        return self._windows(x, k_shape[0], k_shape[1], sh, sw, dh, dw, ho, wo), ho, wo

    def _direct_kernels(self, out_channels, *arrays):
        """The C kernels (``deepgpu.kernels.cpu``) for a convolution of these operands, else None.

        They take float32 operands (None entries are skipped) and a multiple
        of 16 output channels.
        """
        return None if out_channels % 16 else self._c_kernels(*arrays)

    def _c_kernels(self, *arrays):
        """The C kernels when they are built and every operand (None skipped) is float32, else None."""
        if any(a is not None and a.dtype != np.float32 for a in arrays):
            return None
        if self._ck is None:
            from ..kernels import cpu
            self._ck = cpu.library() or False
        return self._ck or None

    def _cols(self, win, a, e, dtype, full=None):
        """The im2col matrix [(e-a)*ho*wo, kh*kw*C] of batch rows a:e.

        Written into the work buffer, or into rows a:e of ``full`` (from
        ``_full_cols``) when the columns are kept for the filter gradient.
        With few channels the window's contiguous run is only kw*C floats, so
        the copy is built transposed (runs of wo floats) and returned as a
        transposed view, which BLAS reads as it is.
        """
        _, ho, wo, kh, kw, c = win.shape
        if c <= _FEW_CHANNELS:
            if full is None:
                cols_t = self._scratch("cols", (kh, kw, c, e - a, ho, wo), dtype)
            else:
                cols_t = full[:, :, :, a:e]
            self._copy(cols_t, win[a:e].transpose(3, 4, 5, 0, 1, 2))
            return cols_t.reshape(kh * kw * c, (e - a) * ho * wo).T  # not -1: C may be 0
        cols = self._scratch("cols", (e - a, ho, wo, kh, kw, c), dtype) if full is None else full[a:e]
        self._copy(cols, win[a:e])
        return _rows_by(cols, 3)

    @staticmethod
    def _full_cols(win, dtype):
        """(array for the whole im2col matrix in the layout ``_cols`` writes, its [N*Ho*Wo, K] view)."""
        n, ho, wo, kh, kw, c = win.shape
        if c <= _FEW_CHANNELS:
            full = np.empty((kh, kw, c, n, ho, wo), dtype)
            return full, full.reshape(kh * kw * c, n * ho * wo).T
        full = np.empty((n, ho, wo, kh, kw, c), dtype)
        return full, _rows_by(full, 3)

    def _chunks(self, n, row_bytes):
        """Batch ranges whose im2col columns fit the work buffer."""
        step = max(1, min(n, WORKSPACE_BYTES // max(row_bytes, 1)))
        return [(s, min(s + step, n)) for s in range(0, n, step)]

    # -------------------------------------------------------- convolution
    def conv2d(self, x, k, strides=(1, 1), padding="valid", dilation=(1, 1)):
        return self._conv_forward(x, k, strides, padding, dilation, None, 0)

    def conv2d_bias_act(self, x, k, b=None, activation=None, strides=(1, 1), padding="valid",
                        dilation=(1, 1), keep=None):
        if activation not in _ACTS or (b is not None and b.dtype != np.result_type(x, k)):
            return super().conv2d_bias_act(x, k, b, activation, strides, padding, dilation, keep)
        return self._conv_forward(x, k, strides, padding, dilation, b, _ACTS[activation], keep)

    def conv2d_grad_filter_kept(self, keep, x, dy, k_shape, strides=(1, 1), padding="valid",
                                dilation=(1, 1)):
        cols = keep.get("cols")
        if (cols is None or keep.get("key") != (x.shape, tuple(k_shape), strides, padding, dilation)
                or cols.dtype != dy.dtype):
            return self.conv2d_grad_filter(x, dy, k_shape, strides, padding, dilation)
        # One GEMM over the whole batch: 28 vs 30 ms in chunks for conv2 (bench/NOTES.md).
        return self._filter_gemm(_rows_by(dy, 1), cols).reshape(k_shape)

    @staticmethod
    def _filter_gemm(dy2, cols):
        """cols^T @ dy2 as a [K, O] array: the filter gradient of one batch part.

        Columns built transposed (few channels) are a contiguous [K, M] matrix:
        multiplied as they lie, 0.54 vs 1.14 ms for the seed's first layer
        (bench/NOTES.md change 10). Otherwise dy^T @ cols ran faster on AVX-512.
        """
        # With many rows (a 1x1 convolution's pixels) and few outputs, OpenBLAS 0.3.31 on AVX2 ran
        # dy^T @ cols 5-60x slower than cols^T @ dy whenever O < K (MobileNetV2's projections,
        # 25088 x 144 -> 144 x 24: 661 vs 40 ms): the larger side goes first (issue 17).
        if cols.T.flags.c_contiguous or cols.shape[1] >= dy2.shape[1]:
            return np.matmul(cols.T, dy2)
        return np.ascontiguousarray(np.matmul(dy2.T, cols).T)

    def _conv_forward(self, x, k, strides, padding, dilation, b, act, keep=None):
        """act(conv(x, k) + b) (act a value of ``_ACTS``) by the fastest path for this shape on
        this machine (``_tuned``): Winograd tiles, the direct C kernel, or im2col + BLAS
        (``_conv_forward_blas``)."""
        kh, kw, c, o = k.shape
        lib = self._c_kernels(x, k, b) if kh * kw > 1 else None
        ways = {}
        if lib is not None:
            sh, sw = _pair(strides, "strides")
            dh, dw = _pair(dilation, "dilation_rate")
            ho, wo, ph, pw = self.conv_geometry(x.shape, k.shape, (sh, sw), padding, (dh, dw))
            geo = ((ho, wo), (sh, sw), (dh, dw), (ph[0], pw[0]), act)
            if WINOGRAD and (kh, kw, sh, sw, dh, dw) == (3, 3, 1, 1, 1, 1) and c % 16 == 0 and o % 16 == 0:
                first = _wino_tile(ho, wo) if WINOGRAD_TILE == "auto" else WINOGRAD_TILE
                for t in (first, 6 - first):
                    ways[f"winograd{t}"] = (lambda t=t: self._direct_conv(lib, x, k, b, *geo, wino=t))
            if o % 16 == 0:
                ways["direct"] = lambda: self._direct_conv(lib, x, k, b, *geo)

        def blas():
            return self._conv_forward_blas(x, k, strides, padding, dilation, b, act, keep)

        if ways and o % 16 == 0:
            ways["blas"] = blas
        elif lib is not None:
            # Few output channels: the C kernel on a kernel padded to 16k channels is a candidate,
            # after BLAS (the rule), when measuring.
            ways = {"blas": blas, "direct-padded": lambda: self._direct_conv(lib, x, k, b, *geo)}
        else:
            ways = {"blas": blas}
        if keep is not None:
            # Only BLAS leaves columns for the filter gradient; whichever way runs last must not
            # find another's there.
            ways = {name: (lambda fn=fn: (keep.clear(), fn())[1]) for name, fn in ways.items()}
        return self._tuned("conv2d", (x.shape, k.shape, strides, padding, dilation, b is not None, act,
                                      keep is not None), ways)

    def _tuned(self, op, key, ways):
        """``cpu_tune.choose`` over ``ways`` (the rule's choice first), keyed by ``key`` and the threads."""
        if len(ways) == 1:
            return next(iter(ways.values()))()
        from ..kernels import cpu_tune
        return cpu_tune.choose(op, f"{key} threads={self.threads}", ways)

    def _conv_forward_blas(self, x, k, strides, padding, dilation, b, act, keep=None):
        """im2col + one GEMM per batch chunk, then bias and activation (``_bias_act_``) on each chunk.

        With ``keep`` (a dict) the whole im2col matrix is built instead of
        one chunk at a time and left in ``keep`` for the filter gradient.
        """
        kh, kw, c, o = k.shape
        n = x.shape[0]
        win, ho, wo = self._conv_setup(x, k.shape, strides, padding, dilation)
        dtype = np.result_type(x.dtype, k.dtype)
        kk = k.reshape(kh * kw * c, o)
        y = np.empty((n, ho, wo, o), dtype)

        def epilogue(part):
            self._bias_act_(_rows_by(part, 1), b, act)

        if kh == kw == 1 and win.shape[1:3] == x.shape[1:3] and x.flags.c_contiguous:
            np.matmul(_rows_by(x, 1), kk, out=_rows_by(y, 1))
            epilogue(y)
            return y
        full = None
        if keep is not None:
            full, keep["cols"] = self._full_cols(win, dtype)
            keep["key"] = (x.shape, k.shape, strides, padding, dilation)
        per_image = ho * wo * kh * kw * c * dtype.itemsize
        for a, e in self._chunks(n, per_image):
            np.matmul(self._cols(win, a, e, dtype, full), kk, out=_rows_by(y[a:e], 1))
            epilogue(y[a:e])
        return y

    def conv2d_grad_filter(self, x, dy, k_shape, strides=(1, 1), padding="valid", dilation=(1, 1)):
        kh, kw, c, o = k_shape
        lib = self._direct_kernels(o, x, dy) if kh * kw > 1 else None
        blas = lambda: self._grad_filter_blas(x, dy, k_shape, strides, padding, dilation)  # noqa: E731
        if lib is None:
            return blas()
        return self._tuned("conv2d_grad_filter", (x.shape, dy.shape, tuple(k_shape), strides, padding, dilation), {
            "c": lambda: self._direct_grad_filter(lib, x, dy, k_shape, strides, padding, dilation)[0], "blas": blas})

    def _grad_filter_blas(self, x, dy, k_shape, strides, padding, dilation):
        """The filter gradient as im2col columns^T @ dy, per batch chunk."""
        kh, kw, c, o = k_shape
        win, ho, wo = self._conv_setup(x, k_shape, strides, padding, dilation)
        dtype = np.result_type(x.dtype, dy.dtype)
        n = x.shape[0]
        dk = None
        per_image = ho * wo * kh * kw * c * dtype.itemsize
        for a, b in self._chunks(n, per_image):
            part = self._filter_gemm(_rows_by(dy[a:b], 1), self._cols(win, a, b, dtype))
            dk = part if dk is None else np.add(dk, part, out=dk)
        if dk is None:  # a batch of 0: an empty sum
            return np.zeros(tuple(k_shape), dtype)
        return dk.reshape(k_shape)

    def _direct_conv(self, lib, x, k, b, out_hw, strides, dilation, pad_tl, act, wino=None):
        """act(conv(x, k) + b) (act 0 none, 1 relu, 2 relu6) by the C kernel: [N, *out_hw, O]; the
        padding (top and left amounts ``pad_tl``; the rest follows from ``out_hw``) is read as zeros,
        never stored.

        ``wino`` 2 or 4: on Winograd F(2x2, 3x3) or F(4x4, 3x3) tiles (3x3, stride 1,
        undilated, C and O multiples of 16). O not a multiple of 16: the kernel and bias
        are padded with zero channels, and the extra outputs dropped.
        """
        n, h, w, c = x.shape
        kh, kw, _, o = k.shape
        if o % 16:
            op = -(-o // 16) * 16
            k = np.concatenate([k, np.zeros((kh, kw, c, op - o), np.float32)], axis=3)
            b = None if b is None else np.concatenate([b, np.zeros(op - o, np.float32)])
            y = self._direct_conv(lib, x, k, b, out_hw, strides, dilation, pad_tl, act)
            return np.ascontiguousarray(y[..., :o])
        (ho, wo), (sh, sw), (dh, dw) = out_hw, strides, dilation
        xc, kc = np.ascontiguousarray(x), np.ascontiguousarray(k)
        bc = None if b is None else np.ascontiguousarray(b)
        y = np.empty((n, ho, wo, o), np.float32)
        if wino:
            # Winograd F(2x2, 3x3) or F(4x4, 3x3): 2.25x or 4x fewer multiplies (bench/NOTES.md 16, 19).
            t = wino
            g = _WINO_G4 if t == 4 else _WINO_G
            a = g.shape[0]
            # U = G k G^T by two matmuls: 19 us vs 640 us for np.einsum(optimize=True) at 3x3x64x64.
            u = np.matmul(g, (g @ kc.reshape(3, -1)).reshape(a, 3, -1)).reshape(a * a, c, o)
            rows = n * ((ho + t - 1) // t)
            fn = lib.dg_conv2d_wino4 if t == 4 else lib.dg_conv2d_wino
            args = (xc.ctypes.data, u.ctypes.data, None if bc is None else bc.ctypes.data, y.ctypes.data,
                    h, w, c, o, ho, wo, pad_tl[0], pad_tl[1])

            def run(t0, t1):
                if fn(*args, t0, t1, int(act)):
                    raise MemoryError("conv2d: no memory for the Winograd work buffers")

            self._parallel(rows, run, y.nbytes)
            return y
        args = (xc.ctypes.data, kc.ctypes.data, None if bc is None else bc.ctypes.data, y.ctypes.data,
                h, w, c, kh, kw, o, ho, wo, sh, sw, dh, dw, pad_tl[0], pad_tl[1])
        self._parallel(n * ho, lambda r0, r1: lib.dg_conv2d_fwd(*args, r0, r1, int(act)), y.nbytes)
        return y

    def _direct_grad_filter(self, lib, x, dy, k_shape, strides, padding, dilation, relu_y=None,
                            with_bias=False, padded=0):
        """(dk, db or None) by the C kernel, of g = dy, or dy where ``relu_y`` > 0.

        dy may be a ``_mask_pad`` result: ``padded`` zero pixels on each side of
        every row, skipped. Each thread sums its rows into its own [kh, kw, C, O] (and [O]).
        """
        kh, kw, c, o = k_shape
        sh, sw = _pair(strides, "strides")
        dh, dw = _pair(dilation, "dilation_rate")
        xp, ho, wo = self._padded(x, k_shape, (sh, sw), padding, (dh, dw))
        xp, dyc = np.ascontiguousarray(xp), np.ascontiguousarray(dy)
        ym = None if relu_y is None else np.ascontiguousarray(relu_y)
        g_ptr, g_stride = dyc.ctypes.data + padded * o * 4, (wo + 2 * padded) * o
        parts = []

        def run(r0, r1):
            dk = np.zeros(k_shape, np.float32)
            db = np.zeros(o, np.float32) if with_bias else None
            if lib.dg_conv2d_grad_filter(xp.ctypes.data, g_ptr, g_stride, None if ym is None else ym.ctypes.data,
                                         dk.ctypes.data, None if db is None else db.ctypes.data, xp.shape[1],
                                         xp.shape[2], c, kh, kw, o, ho, wo, sh, sw, dh, dw, r0, r1):
                raise MemoryError("conv2d filter gradient: no memory for a work buffer")
            parts.append((dk, db))

        self._parallel(x.shape[0] * ho, run, dyc.nbytes)
        return self._sum_parts(parts)

    @staticmethod
    def _sum_parts(parts):
        """Element-wise sums of the threads' partial results (tuples of arrays or None)."""
        first = parts[0]
        for more in parts[1:]:
            for acc, part in zip(first, more):
                if acc is not None:
                    acc += part
        return first

    def _mask_pad(self, lib, dy, relu_y, pad, with_bias):
        """(g with ``pad`` zero pixels left and right of every row, its bias sum or None), in one
        C pass; g = dy, or dy where ``relu_y`` > 0."""
        n, ho, wo, o = dy.shape
        dyc = np.ascontiguousarray(dy)
        ym = None if relu_y is None else np.ascontiguousarray(relu_y)
        g = np.empty((n, ho, wo + 2 * pad, o), np.float32)
        parts = []

        def run(r0, r1):
            db = np.zeros(o, np.float32) if with_bias else None
            lib.dg_mask_pad(dyc.ctypes.data, None if ym is None else ym.ctypes.data, g.ctypes.data,
                            None if db is None else db.ctypes.data, ho, wo, o, pad, pad, r0, r1)
            parts.append((db,))

        self._parallel(n * ho, run, g.nbytes)
        return g, self._sum_parts(parts)[0]

    def _full_grad_input(self, lib, g, k, x_shape, dilation, ph, pw):
        """The stride-1 input gradient as one direct full convolution of ``g`` from ``_mask_pad``
        (padded left and right by the kernel's reach).

        dx = correlate(g padded by the kernel's reach, the flipped kernel with in/out
        swapped), only over the rows and columns of x. The rows above and below are
        not stored: the kernel skips those taps (conv2 of the seed convnet 3.3 vs
        4.0 ms for a padded copy), and dx is written without a crop.
        """
        h, w = x_shape[1:3]
        kh, kw = k.shape[:2]
        dh, dw = dilation
        wino = None
        if WINOGRAD and (kh, kw, dh, dw) == (3, 3, 1, 1) and k.shape[2] % 16 == 0 and k.shape[3] % 16 == 0:
            wino = _wino_tile(h, w) if WINOGRAD_TILE == "auto" else WINOGRAD_TILE
        return self._direct_conv(lib, g, _flipped(k), None, (h, w), (1, 1), (dh, dw),
                                 ((kh - 1) * dh - ph[0], -pw[0]), False, wino)

    def conv2d_bias_act_grad(self, dy, x, y, k, activation=None, with_bias=False, need_input=True,
                             need_kernel=True, strides=(1, 1), padding="valid", dilation=(1, 1), keep=None):
        kh, kw, c, o = k.shape
        relu = activation == "relu"
        args = (dy, x, y, k, activation, with_bias, need_input, need_kernel, strides, padding, dilation)
        lib = None
        if kh * kw > 1 and activation in (None, "linear", "relu") and not (relu and y is None):
            lib = self._direct_kernels(o, x, dy, k, y if relu else None)

        def generic():
            return Backend.conv2d_bias_act_grad(self, *args, keep)

        if lib is None:
            return generic()
        kept = bool(keep) and keep.get("cols") is not None
        return self._tuned("conv2d_grad", (x.shape, k.shape, strides, padding, dilation, activation, with_bias,
                                           need_input, need_kernel, kept),
                           {"c": lambda: self._c_conv_grad(lib, *args), "blas": generic})

    def _c_conv_grad(self, lib, dy, x, y, k, activation, with_bias, need_input, need_kernel, strides, padding,
                     dilation):
        """``conv2d_bias_act_grad`` on the C kernels (float32, O a multiple of 16, activation None or relu)."""
        kh, kw, c, o = k.shape
        relu = activation == "relu"
        ym = y if relu else None
        sh, sw = _pair(strides, "strides")
        dh, dw = _pair(dilation, "dilation_rate")
        _, _, ph, pw = self.conv_geometry(x.shape, k.shape, (sh, sw), padding, (dh, dw))
        if need_input and (sh, sw) == (1, 1) and c % 16 == 0:
            # One masking pass makes the padded g both gradients read, and the bias sum.
            ew = (kw - 1) * dw
            g, db = self._mask_pad(lib, dy, ym, ew, with_bias)
            dk = self._direct_grad_filter(lib, x, g, k.shape, strides, padding, dilation,
                                          padded=ew)[0] if need_kernel else None
            return self._full_grad_input(lib, g, k, x.shape, (dh, dw), ph, pw), dk, db
        dk = db = None
        if need_kernel or with_bias:
            dk, db = self._direct_grad_filter(lib, x, dy, k.shape, strides, padding, dilation, ym, with_bias)
        dx = None
        if need_input:
            dx = self.conv2d_grad_input(self.relu_grad(dy, y) if relu else dy, k, x.shape, strides, padding,
                                        dilation)
        return dx, (dk if need_kernel else None), db

    def conv2d_grad_input(self, dy, k, x_shape, strides=(1, 1), padding="valid", dilation=(1, 1)):
        sh, sw = _pair(strides, "strides")
        n, h, w, c = x_shape
        kh, kw, _, o = k.shape
        dh, dw = _pair(dilation, "dilation_rate")
        ho, wo, ph, pw = self.conv_geometry(x_shape, k.shape, (sh, sw), padding, (dh, dw))
        lib = self._direct_kernels(c, dy, k)
        ways = {}
        # The rule, first. Through im2col, a full convolution costs ~h*w*O per tap and GEMM +
        # col2im ~ho*wo*C: pick the smaller (conv2 of the seed convnet 19 vs 55 ms, conv3 18 vs
        # 7 ms). The C kernels make the full convolution the faster one for every layer of the
        # seed convnet (conv3 1.6 vs 2.9 ms, conv4 2.0 vs 3.1 ms; bench/NOTES.md change 11).
        if (sh, sw) == (1, 1) and lib is not None:
            ways["c"] = lambda: self._full_grad_input(lib, self._mask_pad(lib, dy, None, (kw - 1) * dw, False)[0],
                                                      k, x_shape, (dh, dw), ph, pw)
        col2im = lambda: self._grad_input_col2im(dy, k, x_shape, (sh, sw), (dh, dw), ho, wo, ph, pw)  # noqa: E731
        full = lambda: self._grad_input_full(dy, k, x_shape, (sh, sw), (dh, dw), ph, pw)  # noqa: E731
        if (sh, sw) != (1, 1) or h * w * o > 1.2 * ho * wo * c:
            ways.update(col2im=col2im, full=full)
        else:
            ways.update(full=full, col2im=col2im)
        if (sh, sw) != (1, 1) and lib is not None:
            # A strided convolution's input gradient is the stride-1 one of dy spread out with
            # zeros (Conv2DTranspose's forward): more multiplies, but on the C kernel.
            ways["c-spread"] = lambda: self._grad_input_full(dy, k, x_shape, (sh, sw), (dh, dw), ph, pw, lib)
            if (dh, dw) == (1, 1):
                ways["c-phase"] = lambda: self._grad_input_phases(lib, dy, k, x_shape, (sh, sw), ph[0], pw[0])
        return self._tuned("conv2d_grad_input", (dy.shape, k.shape, x_shape, strides, padding, dilation), ways)

    def _grad_input_phases(self, lib, dy, k, x_shape, strides, pt, pl):
        """A strided, undilated convolution's input gradient as sh*sw stride-1 convolutions on the
        C kernel, one per output phase: padded rows u = r + sh*m take only the taps r, r + sh,
        ..., so each phase is dy correlated with that sub-kernel, flipped, channels swapped. No
        multiply by an inserted zero (the spread way does sh*sw times the work)."""
        n, h, w, c = x_shape
        kh, kw, _, o = k.shape
        sh, sw = strides
        dx = np.empty(x_shape, np.float32)
        for r in range(sh):
            for q in range(sw):
                # Padded rows r, r + sh, ... that are rows of x (from pt on).
                m0, m1 = -(-max(pt - r, 0) // sh), -(-(pt + h - r) // sh)
                n0, n1 = -(-max(pl - q, 0) // sw), -(-(pl + w - q) // sw)
                if m1 <= m0 or n1 <= n0:
                    continue
                rows = dx[:, r + sh * m0 - pt::sh, q + sw * n0 - pl::sw]
                sub = k[r::sh, q::sw]
                if sub.size == 0:  # a kernel smaller than the stride reaches no row of this phase
                    rows[...] = 0
                    continue
                t, u = sub.shape[:2]
                sub = np.ascontiguousarray(sub[::-1, ::-1].transpose(0, 1, 3, 2))
                # Phase row m needs dy rows m - t + 1 .. m: the out-of-range ones read as zeros.
                y = self._direct_conv(lib, dy, sub, None, (m1, n1), (1, 1), (1, 1), (t - 1, u - 1), False)
                rows[...] = y[:, m0:m1, n0:n1]
        return dx

    def _grad_input_full(self, dy, k, x_shape, strides, dilation, ph, pw, lib=None):
        """The input gradient as a full convolution of dy (spread out by the strides, with zeros
        between) with the flipped kernel: on the C kernel with ``lib``, else through ``conv2d``."""
        n, h, w, c = x_shape
        kh, kw, _, o = k.shape
        (sh, sw), (dh, dw) = strides, dilation
        if (sh, sw) != (1, 1):
            spread = np.zeros((n, (dy.shape[1] - 1) * sh + 1, (dy.shape[2] - 1) * sw + 1, o), dy.dtype)
            spread[:, ::sh, ::sw] = dy
            dy = spread
        if lib is not None:
            return self._full_grad_input(lib, self._mask_pad(lib, dy, None, (kw - 1) * dw, False)[0],
                                         k, x_shape, (dh, dw), ph, pw)
        eh, ew = (kh - 1) * dh, (kw - 1) * dw
        # dx_padded = correlate(pad(dy, reach), flipped kernel with in/out swapped); crop the padding.
        dyp = np.pad(dy, ((0, 0), (eh, eh), (ew, ew), (0, 0)))
        dxp = self.conv2d(dyp, _flipped(k), (1, 1), "valid", (dh, dw))
        if dxp.shape[1] < ph[0] + h or dxp.shape[2] < pw[0] + w:  # rows of x no output reached
            dxp = np.pad(dxp, ((0, 0), (0, max(0, ph[0] + h - dxp.shape[1])),
                               (0, max(0, pw[0] + w - dxp.shape[2])), (0, 0)))
        dx = dxp[:, ph[0]:ph[0] + h, pw[0]:pw[0] + w, :]
        return dx if dx.shape[1:3] == dxp.shape[1:3] else np.ascontiguousarray(dx)

    def _grad_input_col2im(self, dy, k, x_shape, strides, dilation, ho, wo, ph, pw):
        """dcols = dy @ k^T per batch chunk (in the work buffer), summed back with kh*kw strided adds."""
        n, h, w, c = x_shape
        kh, kw, _, o = k.shape
        (sh, sw), (dh, dw) = strides, dilation
        dtype = np.result_type(dy.dtype, k.dtype)
        hp = max(h + ph[0] + ph[1], (ho - 1) * sh + (kh - 1) * dh + 1)
        wp = max(w + pw[0] + pw[1], (wo - 1) * sw + (kw - 1) * dw + 1)
        dxp = np.zeros((n, hp, wp, c), dtype)
        kt = k.reshape(kh * kw * c, o).T
        for a, b in self._chunks(n, ho * wo * kh * kw * c * dtype.itemsize):
            dcols = self._scratch("cols", (b - a, ho, wo, kh, kw, c), dtype)
            np.matmul(_rows_by(dy[a:b], 1), kt, out=_rows_by(dcols, 3))
            part = dxp[a:b]
            for i in range(kh):
                for j in range(kw):
                    r0, c0 = i * dh, j * dw
                    part[:, r0:r0 + sh * (ho - 1) + 1:sh, c0:c0 + sw * (wo - 1) + 1:sw, :] += dcols[:, :, :, i, j, :]
        dx = dxp[:, ph[0]:ph[0] + h, pw[0]:pw[0] + w, :]
        return dx if dx.shape == dxp.shape else np.ascontiguousarray(dx)

    # ------------------------------------------------------ reductions, dense
    def sum_to_shape(self, g, shape):
        shape = tuple(shape)
        if g.shape == shape:
            return g
        lead = g.ndim - len(shape)
        tail = g.shape[lead:]
        # Only the leading axes were broadcast (a bias added to [N, H, W, C]): ones @ g.
        k = 0
        while k < len(shape) and shape[k] == 1 and tail[k] != 1:
            k += 1
        if g.dtype.kind != "f" or tail[k:] != shape[k:] or not g.flags.c_contiguous:
            return super().sum_to_shape(g, shape)
        rows = g.size // max(1, int(np.prod(shape, dtype=np.int64)))
        ones = np.ones(rows, g.dtype)
        return np.matmul(ones, g.reshape(rows, -1)).reshape(shape)

    def dense(self, x, w, b=None, activation=None):
        y = np.matmul(x, w)
        if b is not None:
            y += b
        if activation == "relu" and y.flags.c_contiguous:
            return self._relu_(y)
        return self.apply_activation(y, activation)

    # ---------------------------------------------------------- optimizer
    def adam_update(self, p, g, m, v, lr, beta1, beta2, eps, step, weight_decay=0.0):
        if p.dtype != g.dtype or p.dtype.kind != "f":
            return super().adam_update(p, g, m, v, lr, beta1, beta2, eps, step, weight_decay)
        t = p.dtype.type
        a = t(lr * (1 - beta2 ** step) ** 0.5 / (1 - beta1 ** step))
        b1, c1, b2, c2, e = t(beta1), t(1 - beta1), t(beta2), t(1 - beta2), t(eps)
        wd = t(lr * weight_decay) if weight_decay else None
        lib = self._c_kernels(p, g, m, v)
        if lib is not None and all(x.flags.c_contiguous for x in (p, g, m, v)):
            # One C pass over the four arrays instead of twelve NumPy passes (bench/NOTES.md change 18).
            ptrs = [x.ctypes.data for x in (p, g, m, v)]
            self._parallel(p.size, lambda lo, hi: lib.dg_adam(*ptrs, lo, hi, a, b1, b2, e, wd or 0.0),
                           4 * p.nbytes)
            return

        def part(p, g, m, v):
            m *= b1
            tmp = np.multiply(g, c1)
            m += tmp
            v *= b2
            np.square(g, out=tmp)
            tmp *= c2
            v += tmp
            if wd is not None:
                p -= wd * p
            np.sqrt(v, out=tmp)
            tmp += e
            np.divide(m, tmp, out=tmp)
            tmp *= a
            p -= tmp

        if not all(x.flags.c_contiguous for x in (p, g, m, v)):
            return part(p, g, m, v)
        # Twelve passes over each parameter-sized array: split the flat range over the threads.
        flat = [x.reshape(-1) for x in (p, g, m, v)]
        self._parallel(p.size, lambda lo, hi: part(*(x[lo:hi] for x in flat)), p.nbytes)

    def adam_update_many(self, ps, gs, ms, vs, lr, beta1, beta2, eps, step, weight_decay=0.0,
                         decays=None, hp=None):
        lib = self._c_kernels(*ps, *gs, *ms, *vs) if hp is None and ps else None
        plan = None if lib is None else self._adam_plan(ps, gs, ms, vs, decays)
        if plan is None:
            return super().adam_update_many(ps, gs, ms, vs, lr, beta1, beta2, eps, step, weight_decay,
                                            decays, hp)
        # All variables in one C call per thread: a step's thread hand-offs are one, not one per
        # variable (bench/NOTES.md change 20).
        pp, mp, vp, n, total, flags = plan
        gp = (ctypes.c_void_p * len(gs))(*[g.ctypes.data for g in gs])
        wd = (ctypes.c_float * len(ps))(*[lr * weight_decay if d else 0.0 for d in flags])
        a = lr * (1 - beta2 ** step) ** 0.5 / (1 - beta1 ** step)
        self._parallel(total, lambda lo, hi: lib.dg_adam_many(pp, gp, mp, vp, n, wd, len(ps), lo, hi, a, beta1,
                                                              beta2, eps), 16 * total)

    def _adam_plan(self, ps, gs, ms, vs, decays):
        """(pointer arrays of ps, ms, vs, sizes, total, decay flags) when every array is
        C-contiguous and the lists fit, else None. The parameters' and slots' part is kept
        per set of arrays (they live across steps); the gradients are checked each call."""
        n = len(ps)
        if not (len(gs) == len(ms) == len(vs) == n and (decays is None or len(decays) == n)):
            return None
        if not all(g.flags.c_contiguous and g.size == p.size for g, p in zip(gs, ps)):
            return None
        arrays = (*ps, *ms, *vs)
        key = tuple(map(id, arrays))
        hit = self._adam_plans.get(key)
        # Weak references: a plan keeps no array alive, and one whose arrays died (their ids
        # free for new arrays) no longer matches.
        if hit is None or not all(r() is a for r, a in zip(hit[0], arrays)):
            if not all(x.flags.c_contiguous and x.size == p.size for p, m, v in zip(ps, ms, vs) for x in (p, m, v)):
                return None
            ptrs = [(ctypes.c_void_p * n)(*[a.ctypes.data for a in group]) for group in (ps, ms, vs)]
            sizes = (ctypes.c_long * n)(*[p.size for p in ps])
            if len(self._adam_plans) >= 8:
                self._adam_plans.clear()
            hit = self._adam_plans[key] = (
                [weakref.ref(a) for a in arrays], *ptrs, sizes, sum(p.size for p in ps))
        flags = [True] * n if decays is None else [bool(d) for d in decays]
        return (*hit[1:], flags)

    def _flat_parts(self, out, fn):
        """``fn(a, b)`` over flat element ranges of ``out``, on the threads when it is large."""
        self._parallel(out.size, fn, out.nbytes)

    def relu(self, x):
        """On both cores once large (ReLU and Add between a ResNet's convolutions are single
        NumPy passes otherwise); NaN stays NaN, as NumPy's ``maximum``."""
        if not (isinstance(x, np.ndarray) and x.dtype.kind == "f" and x.ndim and x.flags.c_contiguous
                and x.nbytes >= _PARALLEL_MIN_BYTES):
            return super().relu(x)
        src = x.reshape(-1)
        out = np.empty_like(x)
        flat = out.reshape(-1)
        zeros = self._zeros_of(x.dtype, src.size)
        self._flat_parts(flat, lambda a, b: np.maximum(src[a:b], zeros[a:b], out=flat[a:b]))
        return out

    def add(self, a, b):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
                and a.dtype == b.dtype and a.dtype.kind == "f" and a.ndim and a.flags.c_contiguous
                and b.flags.c_contiguous and a.nbytes >= _PARALLEL_MIN_BYTES):
            return super().add(a, b)
        fa, fb = a.reshape(-1), b.reshape(-1)
        out = np.empty_like(a)
        flat = out.reshape(-1)
        self._flat_parts(flat, lambda i, j: np.add(fa[i:j], fb[i:j], out=flat[i:j]))
        return out

    def relu_grad(self, dy, x):
        if dy.shape != x.shape or dy.ndim == 0 or dy.dtype.kind != "f":
            return super().relu_grad(dy, x)
        out = np.empty(dy.shape, dy.dtype)
        self._parallel(dy.shape[0], lambda a, b: np.multiply(dy[a:b], x[a:b] > 0, out=out[a:b]), out.nbytes)
        return out

    # ----------------------------------------------- depthwise convolution (kernels/cpu_depthwise.c)
    def depthwise_conv2d(self, x, k, strides=(1, 1), padding="valid", dilation=(1, 1)):
        lib = self._c_kernels(x, k)
        if lib is None:
            return super().depthwise_conv2d(x, k, strides, padding, dilation)
        return cpu_depthwise.forward(self, lib, x, k, strides, padding, dilation)

    def depthwise_conv2d_bias_act(self, x, k, b=None, activation=None, strides=(1, 1), padding="valid",
                                  dilation=(1, 1)):
        lib = self._c_kernels(x, k, b) if activation in cpu_depthwise.ACTS else None
        if lib is None:
            return super().depthwise_conv2d_bias_act(x, k, b, activation, strides, padding, dilation)
        return cpu_depthwise.forward(self, lib, x, k, strides, padding, dilation, b, activation)

    def depthwise_conv2d_grad_input(self, dy, k, x_shape, strides=(1, 1), padding="valid", dilation=(1, 1)):
        lib = self._c_kernels(dy, k)
        if lib is None:
            return super().depthwise_conv2d_grad_input(dy, k, x_shape, strides, padding, dilation)
        return cpu_depthwise.grad_input(self, lib, dy, k, x_shape, strides, padding, dilation)

    def depthwise_conv2d_grad_filter(self, x, dy, k_shape, strides=(1, 1), padding="valid", dilation=(1, 1)):
        lib = self._c_kernels(x, dy)
        if lib is None:
            return super().depthwise_conv2d_grad_filter(x, dy, k_shape, strides, padding, dilation)
        return cpu_depthwise.grad_filter(self, lib, x, dy, k_shape, strides, padding, dilation)

    # ------------------------------------------------------------ pooling
    def _tiles(self, x, pool_size, strides):
        """(kh, kw) when the pooling windows tile a C-contiguous float input exactly, else None."""
        kh, kw = _pair(pool_size, "pool_size")
        sh, sw = _pair(strides if strides is not None else pool_size, "strides")
        if ((kh, kw) != (sh, sw) or x.ndim != 4 or x.shape[1] % kh or x.shape[2] % kw
                or x.dtype.kind != "f" or not x.flags.c_contiguous):
            return None
        return kh, kw

    def max_pool2d(self, x, pool_size=(2, 2), strides=None, padding="valid"):
        tiles = self._tiles(x, pool_size, strides)
        if tiles is None:
            return super().max_pool2d(x, pool_size, strides, padding)
        # Windows that tile the input need no padding in either mode. Elementwise maximum
        # of strided views: 2.7 ms vs 6.3 ms for max(axis=(2, 4)) at [128, 24, 24, 32].
        kh, kw = tiles
        n, h, w, c = x.shape
        y = np.empty((n, h // kh, w // kw, c), x.dtype)
        lib = self._c_kernels(x)
        if lib is not None:
            self._parallel(n * (h // kh), lambda r0, r1: lib.dg_max_pool_fwd(
                x.ctypes.data, y.ctypes.data, h, w, c, kh, kw, r0, r1), x.nbytes)
            return y
        xw = x.reshape(n, h // kh, kh, w // kw, kw, c)

        def part(a, b):
            rows = np.maximum(xw[a:b, :, 0], xw[a:b, :, 1]) if kh > 1 else xw[a:b, :, 0].copy()
            for i in range(2, kh):
                np.maximum(rows, xw[a:b, :, i], out=rows)
            if kw == 1:
                np.copyto(y[a:b], rows[:, :, :, 0])
                return
            np.maximum(rows[:, :, :, 0], rows[:, :, :, 1], out=y[a:b])
            for j in range(2, kw):
                np.maximum(y[a:b], rows[:, :, :, j], out=y[a:b])

        self._parallel(n, part, x.nbytes)
        return y

    def max_pool2d_grad(self, dy, x, y, pool_size=(2, 2), strides=None, padding="valid"):
        kh, kw = _pair(pool_size, "pool_size")
        sh, sw = _pair(strides if strides is not None else pool_size, "strides")
        n, h, w, c = x.shape
        if ((kh, kw) != (sh, sw) or h % kh or w % kw or y is None or x.dtype.kind != "f"
                or not x.flags.c_contiguous or not np.isfinite(y).all()):
            return super().max_pool2d_grad(dy, x, y, pool_size, strides, padding)
        # Non-overlapping windows that tile the input: no padding in either mode.
        ho, wo = h // kh, w // kw
        lib = self._c_kernels(x, y, dy)
        if lib is not None:
            dx = np.empty(x.shape, np.float32)
            yc, dyc = np.ascontiguousarray(y), np.ascontiguousarray(dy)
            self._parallel(n * ho, lambda r0, r1: lib.dg_max_pool_bwd(
                x.ctypes.data, yc.ctypes.data, dyc.ctypes.data, dx.ctypes.data, h, w, c, kh, kw, r0, r1),
                dx.nbytes)
            return dx
        xw = x.reshape(n, ho, kh, wo, kw, c)
        dx = np.empty(x.shape, dy.dtype)
        dxw = dx.reshape(n, ho, kh, wo, kw, c)

        def part(a, b):
            taken = None
            for i in range(kh):
                for j in range(kw):
                    hit = xw[a:b, :, i, :, j, :] == y[a:b]
                    if taken is None:
                        taken = hit
                    else:
                        hit &= ~taken
                        taken |= hit
                    np.multiply(dy[a:b], hit, out=dxw[a:b, :, i, :, j, :])

        self._parallel(n, part, dx.nbytes)
        return dx

    # ------------------------------------------------ small GEMMs on one BLAS thread
    # A recurrent step's GEMMs ([64, 128] x [128, 512], forward and backward: 600 per LSTM
    # training step at 200 steps) are too small to split: waking OpenBLAS's sleeping workers
    # (OPENBLAS_THREAD_TIMEOUT=4, backends/base.py) costs more than the work, and far more on a
    # busy machine (measured under load 16 on 2 cores: 1.4 ms on one thread vs 65-71 ms on two,
    # per GEMM). OpenBLAS's thread-local setting (0.3.27+) limits only this call.
    _SMALL_GEMM = 1 << 23  # multiply-adds
    _blas_local = None

    @classmethod
    def _one_blas_thread(cls):
        """NumPy's OpenBLAS ``openblas_set_num_threads_local`` (ctypes), or False where absent."""
        if cls._blas_local is None:
            import ctypes
            cls._blas_local = False
            try:
                with open("/proc/self/maps") as f:
                    libs = sorted({ln.split()[-1] for ln in f if "openblas" in ln.lower() and ".so" in ln})
            except OSError:
                libs = []
            for path in libs:
                try:
                    fn = ctypes.CDLL(path).openblas_set_num_threads_local
                except (OSError, AttributeError):
                    continue
                fn.restype, fn.argtypes = ctypes.c_int, [ctypes.c_int]
                cls._blas_local = fn
                break
        return cls._blas_local

    def matmul(self, a, b, transpose_a=False, transpose_b=False):
        if a.ndim == 2 and b.ndim == 2 and a.size * (b.shape[0] if transpose_b else b.shape[1]) < self._SMALL_GEMM:
            one = self._one_blas_thread()
            if one:
                prev = one(1)
                try:
                    return super().matmul(a, b, transpose_a, transpose_b)
                finally:
                    one(prev)
        if a.ndim > 2 or b.ndim > 2:
            out = self._stacked_matmul(a, b, transpose_a, transpose_b)
            if out is not None:
                return out
        return super().matmul(a, b, transpose_a, transpose_b)

    def _stacked_matmul(self, a, b, ta, tb):
        """A stack of small GEMMs (attention's [batch, heads] products) with one BLAS thread each,
        the stack split over the backend's threads; None where that does not apply.

        OpenBLAS's own threads on each 200 x 32 x 200 product cost more than they give: one
        product of a [4, 200, 32] stack took 1.1 s with 2 BLAS threads and 66 ms with one, on
        2 loaded cores (2026-12-02).
        """
        one = self._one_blas_thread()
        if one is None or a.ndim < 2 or b.ndim < 2 or a.dtype != b.dtype:
            return None
        if ta:
            a = np.swapaxes(a, -1, -2)
        if tb:
            b = np.swapaxes(b, -1, -2)
        m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
        if b.shape[-2] != k or m * k * n >= self._SMALL_GEMM:
            return None
        try:
            lead = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            return None
        nb = math.prod(lead)  # not -1 in the reshapes: m, k or n may be 0
        a3 = np.broadcast_to(a, lead + (m, k)).reshape(nb, m, k)
        b3 = np.broadcast_to(b, lead + (k, n)).reshape(nb, k, n)
        out = np.empty(lead + (m, n), a.dtype)
        o3 = out.reshape(nb, m, n)

        def part(s, e):
            prev = one(1)
            try:
                np.matmul(a3[s:e], b3[s:e], out=o3[s:e])
            finally:
                one(prev)

        self._parallel(o3.shape[0], part, out.nbytes + a3.nbytes + b3.nbytes)
        return out

    # ------------------------------------------------ fused recurrent cells
    # kernels/cpu_rnn.c: one pass over the gates each way (about 17x the generic version's
    # dozen NumPy passes at [64, 4 x 128]). Operands need unit column strides (column
    # slices of a wider array are fine); anything else takes the generic version.
    def _rnn_lib(self, *arrays):
        def rows(a):  # [N, K] with unit column stride and a whole, non-negative row stride
            return a.ndim == 2 and (a.size <= 1 or (a.strides[1] == a.itemsize and a.strides[0] >= 0
                                                    and a.strides[0] % a.itemsize == 0))
        if not all(a is None or rows(a) for a in arrays):
            return None
        return self._c_kernels(*arrays)

    @staticmethod
    def _ld(a):
        return 0 if a is None else a.strides[0] // a.itemsize

    @staticmethod
    def _zero_view(g):
        """None for a gradient that is a broadcast zero (h's hand-over in ops.lstm_cell), else a usable array."""
        if g is not None and g.size and not any(g.strides):
            return None if g.flat[0] == 0 else np.ascontiguousarray(g)
        return g

    def lstm_step(self, z, c_prev):
        lib = self._rnn_lib(z, c_prev)
        if lib is None or z.shape[0] != c_prev.shape[0] or z.shape[1] != 4 * c_prev.shape[1]:
            return super().lstm_step(z, c_prev)
        n, u = c_prev.shape
        h, c, act = np.empty((n, u), z.dtype), np.empty((n, u), z.dtype), np.empty((n, 4 * u), z.dtype)
        self._parallel(n, lambda r0, r1: lib.dg_lstm_fwd(
            z.ctypes.data, self._ld(z), c_prev.ctypes.data, self._ld(c_prev), h.ctypes.data, c.ctypes.data,
            act.ctypes.data, u, r0, r1), z.nbytes * 2)
        return h, c, act

    def lstm_step_grad(self, dh, dc, act, c_prev, c):
        dh, dc = self._zero_view(dh), self._zero_view(dc)
        act, c = np.ascontiguousarray(act), np.ascontiguousarray(c)
        lib = self._rnn_lib(dh, dc, act, c_prev, c)
        if lib is None or any(a is not None and a.shape != c.shape for a in (dh, dc, c_prev)):
            return super().lstm_step_grad(dh, dc, act, c_prev, c)
        n, u = c.shape
        dz, dc_prev = np.empty((n, 4 * u), c.dtype), np.empty((n, u), c.dtype)
        self._parallel(n, lambda r0, r1: lib.dg_lstm_bwd(
            None if dh is None else dh.ctypes.data, self._ld(dh), None if dc is None else dc.ctypes.data,
            self._ld(dc), act.ctypes.data, c_prev.ctypes.data, self._ld(c_prev), c.ctypes.data, dz.ctypes.data,
            dc_prev.ctypes.data, u, r0, r1), act.nbytes * 2)
        return dz, dc_prev

    def gru_step(self, xz, hz, h_prev):
        lib = self._rnn_lib(xz, hz, h_prev)
        if lib is None or xz.shape != hz.shape or xz.shape != (h_prev.shape[0], 3 * h_prev.shape[1]):
            return super().gru_step(xz, hz, h_prev)
        n, u = h_prev.shape
        h, act = np.empty((n, u), xz.dtype), np.empty((n, 3 * u), xz.dtype)
        self._parallel(n, lambda r0, r1: lib.dg_gru_fwd(
            xz.ctypes.data, self._ld(xz), hz.ctypes.data, self._ld(hz), h_prev.ctypes.data, self._ld(h_prev),
            h.ctypes.data, act.ctypes.data, u, r0, r1), xz.nbytes * 2)
        return h, act

    def gru_step_grad(self, dh, act, hz, h_prev):
        dh, act = np.ascontiguousarray(dh), np.ascontiguousarray(act)
        lib = self._rnn_lib(dh, act, hz, h_prev)
        if lib is None or dh.shape != h_prev.shape or act.shape != hz.shape:
            return super().gru_step_grad(dh, act, hz, h_prev)
        n, u = h_prev.shape
        dxz, dhz, dh_prev = np.empty(act.shape, act.dtype), np.empty(act.shape, act.dtype), np.empty((n, u), act.dtype)
        self._parallel(n, lambda r0, r1: lib.dg_gru_bwd(
            dh.ctypes.data, self._ld(dh), act.ctypes.data, hz.ctypes.data, self._ld(hz), h_prev.ctypes.data,
            self._ld(h_prev), dxz.ctypes.data, dhz.ctypes.data, dh_prev.ctypes.data, u, r0, r1), act.nbytes * 3)
        return dxz, dhz, dh_prev

    # ------------------------------------------------ batch normalization
    # One C read of x for the statistics and one pass for y forward; one read of dy and x
    # for both sums and one pass for dx backward (kernels/cpu_norm.c). A large array's rows
    # are split over the threads, each thread's per-channel partials combined here in
    # float64; a small one takes one C call each way (a few pointers: each costs ~3 us from
    # Python). Other dtypes, empty arrays and bad shapes take the generic version (which
    # raises for the latter).
    def _bn_lib(self, x, *per_channel):
        """The C kernels for a [..., C] float32 x and these [C] float32 arrays (None skipped), else None."""
        if x.ndim < 1 or x.size == 0 or any(a is not None and a.shape != x.shape[-1:] for a in per_channel):
            return None
        return self._c_kernels(x, *per_channel)

    def _bn_split(self, nbytes):
        """Whether the rows go over the threads (as _parallel decides)."""
        return self.threads > 1 and nbytes >= _PARALLEL_MIN_BYTES

    @staticmethod
    def _contiguous(*arrays):
        return [None if a is None else np.ascontiguousarray(a) for a in arrays]

    @staticmethod
    def _ptrs(*arrays):
        return [None if a is None else a.ctypes.data for a in arrays]

    def batch_norm_train(self, x, gamma=None, beta=None, epsilon=1e-3):
        lib = self._bn_lib(x, gamma, beta)
        if lib is None:
            return super().batch_norm_train(x, gamma, beta, epsilon)
        c = x.shape[-1]
        rows = x.size // c
        k = 16 // int(np.gcd(c, 16))  # K rows of C channels are whole vectors in cpu_norm.c
        xc = np.ascontiguousarray(x)
        y = np.empty(x.shape, np.float32)
        stats = np.empty((3, c), np.float32)  # mean, var, inv_std
        px, py, pg, pb, ps = self._ptrs(xc, y, *self._contiguous(gamma, beta), stats)
        if not self._bn_split(xc.nbytes):
            if lib.dg_bn_train(px, py, pg, pb, epsilon, c, k, rows, ps):
                raise MemoryError("batch_norm: no memory for a work buffer")
            return y, stats[0], stats[1], stats[2]
        parts = {}

        def part(r0, r1):
            mean, m2 = np.empty(c), np.empty(c)
            if lib.dg_bn_stats(px, c, k, r0, r1, mean.ctypes.data, m2.ctypes.data):
                raise MemoryError("batch_norm: no memory for a work buffer")
            parts[r0] = (r1 - r0, mean, m2)

        self._parallel(rows, part, xc.nbytes)
        # The threads' (count, mean, M2) merged in row order (Chan et al.): same result every run.
        n, mean, m2 = parts.pop(0)
        for r0 in sorted(parts):
            nb, mb, qb = parts[r0]
            d = mb - mean
            mean = mean + d * (nb / (n + nb))
            m2 = m2 + qb + d * d * (n * nb / (n + nb))
            n += nb
        tiles = np.empty((3, k * c), np.float32)  # mean, scale, shift, tiled
        pt = tiles.ctypes.data
        lib.dg_bn_finish(mean.ctypes.data, m2.ctypes.data, rows, c, k, epsilon, pg, pb, ps, pt)
        step = tiles.strides[0]
        shift = None if pb is None else pt + 2 * step
        self._parallel(rows, lambda r0, r1: lib.dg_bn_apply(px, py, pt, pt + step, shift, c, k, r0, r1),
                       2 * xc.nbytes)
        return y, stats[0], stats[1], stats[2]

    def batch_norm_grad(self, dy, x, mean, inv_std, gamma=None, need_input=True):
        lib = self._bn_lib(x, mean, inv_std, gamma)
        if lib is None or dy.shape != x.shape or dy.dtype != np.float32:
            return super().batch_norm_grad(dy, x, mean, inv_std, gamma, need_input)
        c = x.shape[-1]
        rows = x.size // c
        k = 16 // int(np.gcd(c, 16))
        xc, dyc, meanc, invc = self._contiguous(x, dy, mean, inv_std)
        dx = np.empty(x.shape, np.float32) if need_input else None
        grads = np.empty((2, c), np.float32)  # dgamma, dbeta
        pdy, px, pdx, pm, pi, pg, pgr = self._ptrs(dyc, xc, dx, meanc, invc, *self._contiguous(gamma), grads)
        if not self._bn_split(xc.nbytes):
            if lib.dg_bn_grad(pdy, px, pdx, pm, pi, pg, c, k, rows, pgr):
                raise MemoryError("batch_norm gradient: no memory for a work buffer")
            return dx, grads[0], grads[1]
        tiles = np.empty((4, k * c), np.float32)  # p, q, s, mean, tiled
        tiles[3] = np.tile(meanc, k)
        pt, step = tiles.ctypes.data, tiles.strides[0]
        parts = {}

        def part(r0, r1):
            sdy, sdx = np.empty(c), np.empty(c)
            if lib.dg_bn_grad_sums(pdy, px, pt + 3 * step, c, k, r0, r1, sdy.ctypes.data, sdx.ctypes.data):
                raise MemoryError("batch_norm gradient: no memory for a work buffer")
            parts[r0] = (sdy, sdx)

        self._parallel(rows, part, 2 * xc.nbytes)
        sums = np.sum([parts[r0] for r0 in sorted(parts)], axis=0)  # in row order: same every run
        lib.dg_bn_grad_finish(sums[0].ctypes.data, sums[1].ctypes.data, rows, c, k, pi, pg, pgr, pt)
        if need_input:
            self._parallel(rows, lambda r0, r1: lib.dg_bn_grad_input(
                pdy, px, pdx, pt + 3 * step, pt, pt + step, pt + 2 * step, c, k, r0, r1), 3 * xc.nbytes)
        return dx, grads[0], grads[1]


# 16-bit inputs: the heavy primitives compute in float32 and round (backends/half.py).
upcast_half_primitives(NumpyBackend)
