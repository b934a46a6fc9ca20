"""The Backend interface: every primitive deepgpu's math is built from.

Each primitive is documented once here and implemented generically against
``self.xp`` (NumPy or CuPy share almost all of their API). A concrete backend
sets ``xp`` and overrides what it does better another way. Arrays passed in
and returned are the backend's own arrays (``numpy.ndarray`` or
``cupy.ndarray``); dtypes are NumPy dtype objects. Shapes are tuples of ints.

Conventions
-----------
* Images are NHWC. A conv2d kernel is ``[kh, kw, in, out]``.
* ``padding`` is ``"valid"`` or ``"same"`` (TensorFlow's arithmetic: the
  output has ``ceil(in / stride)`` rows, the extra padding row goes after).
* ``strides``, ``dilation`` and pool sizes are ``(rows, cols)`` tuples.
* Float math is float32 unless the caller passes float64 arrays.
"""
from __future__ import annotations

import math
import numbers
import os
import sys

# OpenBLAS's worker threads poll for ~2^28 cycles (0.1 s) after every GEMM, taking a core
# from the copies and elementwise passes that follow it; with 4 they sleep at once (-10 %
# on a convnet's predict, bench/NOTES.md change 9; the seed convnet's step 90-105 vs
# 136-143 ms on a 2-core AVX2 machine, issue 13). OpenBLAS reads the variable when NumPy
# loads it: when NumPy came first, ``_apply_blas_thread_timeout`` has the loaded library
# read it again and restart its threads. A value the user set wins.
BLAS_THREAD_TIMEOUT_SET = "OPENBLAS_THREAD_TIMEOUT" not in os.environ
_NUMPY_FIRST = "numpy" in sys.modules
if BLAS_THREAD_TIMEOUT_SET:
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = "4"

import numpy as np  # noqa: E402


def _apply_blas_thread_timeout() -> str:
    """Make an OpenBLAS that NumPy loaded before deepgpu re-read ``OPENBLAS_THREAD_TIMEOUT``.

    Its exported ``openblas_read_env`` re-reads the variables and
    ``blas_thread_shutdown_`` (its fork handler) stops the workers, which the
    next threaded call starts again with the new timeout. Returns how it went
    (for ``memory_info``); does nothing off Linux or without those symbols.
    """
    import ctypes
    try:
        with open("/proc/self/maps") as f:
            libs = sorted({ln.split()[-1] for ln in f if "openblas" in ln.lower() and ".so" in ln})
    except OSError:
        return "not applied: /proc/self/maps unreadable"
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
            read_env, shutdown = lib.openblas_read_env, lib.blas_thread_shutdown_
        except (OSError, AttributeError):
            continue
        read_env.restype = None
        shutdown.restype = ctypes.c_int
        read_env()
        shutdown()
        return f"applied to {os.path.basename(path)}, loaded before deepgpu"
    return "not applied: no OpenBLAS with openblas_read_env loaded"


BLAS_THREAD_TIMEOUT_HOW = (
    ("set before NumPy loaded" if not _NUMPY_FIRST else _apply_blas_thread_timeout())
    if BLAS_THREAD_TIMEOUT_SET else "left as set by the user")

FLOAT_DTYPES = ("float32", "float64", "float16")
DTYPES = FLOAT_DTYPES + ("int32", "int64", "int8", "uint8", "bool")


_NORMALIZED = {}  # dtype given -> NumPy dtype: NumPy builds dtype.name in Python (~3 us a call)


def normalize_dtype(dtype) -> np.dtype:
    """Return the NumPy dtype for a name or dtype; ValueError if unsupported."""
    if dtype is None:
        return np.dtype("float32")
    try:
        return _NORMALIZED[dtype]
    except (KeyError, TypeError):  # not seen yet, or unhashable
        pass
    try:
        d = np.dtype(dtype)
    except TypeError:
        if str(dtype) == "bfloat16":  # ml_dtypes' type, registered with NumPy on import
            from .half import bfloat16
            return bfloat16()
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}") from None
    if d.name not in DTYPES and d.name != "bfloat16":
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    _NORMALIZED[dtype] = d
    return d


def conv_output_size(size: int, k: int, stride: int, dilation: int, padding: str):
    """Output length and (pad_before, pad_after) along one spatial axis."""
    eff = (k - 1) * dilation + 1
    if padding == "valid":
        out = (size - eff) // stride + 1
        if out <= 0:
            raise ValueError(
                f"input of size {size} is smaller than the window {eff} "
                f"(kernel {k}, dilation {dilation}) with padding 'valid'")
        return out, (0, 0)
    if padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + eff - size, 0)
        return out, (total // 2, total - total // 2)
    raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")


def _int_acc(dtype):
    """Accumulator dtype of sum/prod: int32 for bool and narrow ints (NumPy would pick int64)."""
    return np.dtype("int32") if dtype.kind in "biu" and dtype != np.int64 else None


def _rows_by(a, tail):
    """``a`` as a matrix: the product of its last ``tail`` axes as columns (a view where reshape gives
    one). Not ``reshape(-1, cols)``, which cannot infer the rows of an empty array (0 channels)."""
    return a.reshape(math.prod(a.shape[:-tail]), math.prod(a.shape[-tail:]))


def _pair(v, what):
    if isinstance(v, int):
        return (v, v)
    if type(v) is tuple and len(v) == 2 and type(v[0]) is int and type(v[1]) is int:
        return v  # the usual case, every convolution and pooling call: no copy
    t = tuple(int(i) for i in v)
    if len(t) != 2:
        raise ValueError(f"{what} must be an int or a pair of ints, got {v!r}")
    return t


_CONV_GEOMETRY: dict = {}  # Backend.conv_geometry's results by signature (a failed check is not kept)


class GraphCaptureError(RuntimeError):
    """A step could not be recorded as a CUDA graph; the message names what refused."""


def _per_variable(what, ps, *lists, decays=None):
    """The per-variable decay flags (all True by default); ValueError when the lists' lengths differ."""
    lens = [len(ps)] + [len(x) for x in lists] + ([] if decays is None else [len(decays)])
    if len(set(lens)) > 1:
        raise ValueError(f"{what}: the per-variable lists have different lengths {lens}")
    return [True] * len(ps) if decays is None else [bool(d) for d in decays]


from .conv3d import Conv3DMixin  # noqa: E402  (3-D convolution and pooling, over the 2-D primitives)


class Backend(Conv3DMixin):
    """Base class of backends; subclasses set ``name`` and ``xp``."""

    name = "base"
    xp = np
    # True on a backend whose capture_graph() records device work for replay.
    supports_graphs = False
    # True while capture_graph() records: host transfers and syncs then raise.
    capturing = False

    # ------------------------------------------------------------------ info
    def __repr__(self):
        return f"<deepgpu backend {self.name!r}>"

    def is_array(self, a) -> bool:
        """True when ``a`` is this backend's array type."""
        return isinstance(a, self.xp.ndarray)

    def sync(self) -> None:
        """Wait until all queued work on this backend has finished."""
        self._refuse_in_capture("a device synchronisation")

    _SCALARS_MAX = 256

    def _scalar(self, value, dtype):
        """A 0-d array of ``value``, shared by every caller asking for the same one.

        For Python numbers used as operands and for the autograd seed: on the
        GPU each new one is a launch (a fill), and the same few (1.0, a batch
        size) come back every step. Only for reading: ops never write into an
        operand. Inside a capture a fresh one is made (a cached one made there
        would live in the graph's pool).
        """
        if self.capturing:
            return self.asarray(value, dtype)
        cache = self.__dict__.setdefault("_scalars", {})
        # -0.0 == 0.0 as dict keys: the sign tells them apart (1 / -0.0 is -inf).
        sign = math.copysign(1.0, value) if isinstance(value, numbers.Real) else 0.0
        key = (self._device(), dtype, type(value), value, sign)
        a = cache.get(key)
        if a is None:
            if len(cache) >= self._SCALARS_MAX:
                cache.clear()
            a = cache[key] = self.asarray(value, dtype)
            if isinstance(a, np.ndarray):
                a.flags.writeable = False  # shared: a write into it would be a bug, so make it raise
        return a

    def _device(self):
        """Which device new arrays go to (None: one device only)."""
        return None

    def _refuse_in_capture(self, what: str) -> None:
        if self.capturing:
            raise GraphCaptureError(
                f"{what} inside a captured step: a CUDA graph replays device work only, so a "
                f"captured step must not read values on the host or move host data to the device")

    # ---------------------------------------------------------- CUDA graphs
    def capture_graph(self, fn):
        """Record the device work of ``fn()`` once, for replay without Python.

        Returns ``(graph, result)``: ``result`` is what ``fn`` returned (its
        arrays are the buffers every ``graph.replay()`` writes again), and
        ``graph.replay()`` reruns the recorded work on the current stream.
        Inside ``fn``, ``capturing`` is True and host transfers raise
        GraphCaptureError. Raises GraphCaptureError where the backend cannot
        capture (every backend but "cuda" with its custom kernels).
        """
        raise GraphCaptureError(f"the {self.name!r} backend cannot capture CUDA graphs")

    def set_scalars(self, hp, values) -> None:
        """Write up to four Python floats into the float32 array ``hp`` (the
        per-step scalars that updates inside a captured step read)."""
        values = [float(v) for v in values]
        if not 0 < len(values) <= 4 or hp.size < len(values):
            raise ValueError(f"set_scalars: 1 to 4 values for an array of {hp.size}, got {len(values)}")
        for i, v in enumerate(values):
            hp[i] = v

    def memory_info(self) -> dict:
        """Backend-specific memory figures (e.g. a device pool's bytes)."""
        return {}

    # -------------------------------------------------------------- creation
    def asarray(self, data, dtype=None):
        """Array of ``data`` (nested lists, NumPy array, scalar) as ``dtype``.

        float64 input with no dtype is cast to float32 (no silent float64).
        Raises TypeError for non-numeric data.
        """
        if isinstance(data, np.ndarray) or self.is_array(data):
            arr = data
        else:
            try:
                arr = np.asarray(data)
            except (ValueError, TypeError) as e:
                raise TypeError(f"cannot make a tensor from {type(data).__name__}: {e}") from None
        if arr.dtype.kind not in "biuf":
            raise TypeError(
                f"tensor data must be numeric or bool, got dtype {arr.dtype} "
                f"from {type(data).__name__}")
        if dtype is None:
            if arr.dtype.kind == "f":
                dtype = "float32"
            elif arr.dtype.kind in "iu":
                dtype = "int32"
            else:
                dtype = "bool"
        dtype = normalize_dtype(dtype)
        return self.xp.asarray(arr, dtype=dtype)

    def to_numpy(self, a) -> np.ndarray:
        """A host NumPy copy of ``a``."""
        self._refuse_in_capture("a read of device values (data_sync, item, float)")
        return np.array(a, copy=True)

    def stage_to_device(self, arrays):
        """Start moving host NumPy ``arrays`` (one batch) to this backend: returns
        ``(arrays, ticket)``, numeric ones as this backend's arrays (float64 cast to
        float32, as ``asarray``), text arrays untouched. The copy may still be in
        flight: call ``wait_staged(ticket)`` before the arrays are read. Generic: a
        plain ``asarray`` (already done); the CUDA backend uploads from pinned buffers
        on a second stream (backends/staging.py)."""
        return [self.asarray(a) if np.asarray(a).dtype.kind in "biuf" else a for a in arrays], None

    def wait_staged(self, ticket) -> None:
        """Order later work after the copy ``stage_to_device`` returned ``ticket`` for."""

    def zeros(self, shape, dtype="float32"):
        return self.xp.zeros(shape, dtype=normalize_dtype(dtype))

    def ones(self, shape, dtype="float32"):
        return self.xp.ones(shape, dtype=normalize_dtype(dtype))

    def full(self, shape, value, dtype="float32"):
        return self.xp.full(shape, value, dtype=normalize_dtype(dtype))

    def arange(self, start, stop=None, step=1, dtype="int32"):
        return self.xp.arange(start, stop, step, dtype=normalize_dtype(dtype))

    def copy(self, a):
        return a.copy()

    # ---------------------------------------------------------------- random
    # Initial values are drawn on the host from one seeded NumPy generator
    # and moved to the device, so the same seed gives the same weights on
    # every backend.
    _rng = np.random.default_rng()

    def seed(self, n: int) -> None:
        """Seed this backend's random generators."""
        Backend._rng = np.random.default_rng(n)

    def random_normal(self, shape, mean=0.0, stddev=1.0, dtype="float32"):
        return self.asarray(Backend._rng.normal(mean, stddev, size=shape), dtype)

    def random_uniform(self, shape, minval=0.0, maxval=1.0, dtype="float32"):
        d = normalize_dtype(dtype)
        if d.kind in "iu":
            return self.asarray(Backend._rng.integers(minval, maxval, size=shape), d)
        return self.asarray(Backend._rng.uniform(minval, maxval, size=shape), d)

    def truncated_normal(self, shape, mean=0.0, stddev=1.0, dtype="float32"):
        """Normal values redrawn until within two standard deviations."""
        n = int(np.prod(shape, dtype=np.int64))
        out = Backend._rng.normal(0.0, 1.0, size=n)
        bad = np.abs(out) > 2.0
        while bad.any():
            out[bad] = Backend._rng.normal(0.0, 1.0, size=int(bad.sum()))
            bad = np.abs(out) > 2.0
        return self.asarray((out * stddev + mean).reshape(shape), dtype)

    def permutation(self, n: int):
        """A random permutation of range(n) as a host int64 NumPy array."""
        return Backend._rng.permutation(n)

    def dropout_mask(self, shape, rate: float, dtype="float32"):
        """Array of 0 or 1/(1-rate), each element kept with probability 1-rate (to 1/65536).

        16-bit draws compared with round(rate * 65536): 0.9 vs 2.0 ms for float64
        draws on the seed convnet's first dropout ([128, 9216]).
        """
        draws = Backend._rng.integers(0, 1 << 16, size=shape, dtype=np.uint16)
        mask = (draws >= round(rate * 65536)).astype(np.float32)
        mask *= np.float32(1.0 / (1.0 - rate))
        return self.asarray(mask, dtype)

    def dropout(self, x, rate: float):
        """(``x * mask``, mask) with ``mask = dropout_mask(x.shape, rate, x.dtype)``."""
        mask = self.dropout_mask(x.shape, rate, x.dtype)
        return self.multiply(x, mask), mask

    # Randomness drawn inside a step (noise, augmentation): a counter-based hash of
    # (seed, counter, element), so a call's values depend on its arguments alone
    # (reproducible on the CPU; the CUDA backend adds its replay count when capturing).
    def _keyed_key(self, seed: int, counter: int):
        return np.uint64((int(seed) * 0x9E3779B97F4A7C15 + int(counter) * 0xD1B54A32D192ED03 + 1) % 2**64)

    def random_keyed(self, shape, seed: int, counter: int, kind="uniform", dtype="float32"):
        """Array of ``shape``: uniform in [0, 1) (24-bit) or standard normal (``kind``),
        a pure function of (seed, counter, element index) (splitmix64 over the index)."""
        xp = self.xp
        n = 1
        for d in shape:
            n *= int(d)
        with np.errstate(over="ignore"):
            z = xp.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + self._keyed_key(seed, counter)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            z = z ^ (z >> np.uint64(31))
        hi = (z >> np.uint64(40)).astype(np.float64)
        if kind == "uniform":
            out = hi * 2.0 ** -24
        elif kind == "normal":  # Box-Muller on two 24-bit halves of the hash
            lo = ((z >> np.uint64(8)) & np.uint64(0xFFFFFF)).astype(np.float64)
            out = xp.sqrt(-2.0 * xp.log((hi + 0.5) * 2.0 ** -24)) * xp.cos(2 * np.pi * lo * 2.0 ** -24)
        else:
            raise ValueError(f"random_keyed: kind must be 'uniform' or 'normal', got {kind!r}")
        return out.reshape(tuple(shape)).astype(normalize_dtype(dtype))

    # ---------------------------------------------------- image transforms
    _FILL_MODES = ("constant", "nearest", "reflect", "wrap")

    def _fill_coord(self, c, n, mode):
        """Source coordinates ``c`` (floats) mapped into [0, n-1] by ``mode``, as TF's
        ImageProjectiveTransformV3 does ("constant" leaves them: out of range reads fill_value)."""
        xp = self.xp
        if mode == "constant":
            return c
        if n <= 1:
            return xp.zeros_like(c)
        if mode == "reflect":  # d c b a | a b c d | d c b a
            sz2 = 2.0 * n
            m = xp.mod(c, sz2)
            m = xp.where(m >= n, sz2 - m - 1, m)
        elif mode == "wrap":  # TF's own arithmetic, edges included
            m = xp.where(c < 0, c + n * (xp.trunc(-c / (n - 1)) + 1),
                         xp.where(c > n - 1, c - n * xp.trunc(c / (n - 1)), c))
        elif mode == "nearest":
            m = c
        else:
            raise ValueError(f"fill_mode must be one of {self._FILL_MODES}, got {mode!r}")
        return xp.clip(m, 0, n - 1)

    def _transform_taps(self, x_shape, transforms, out_h, out_w, interpolation, fill_mode):
        """[(flat row index, in-range mask, weight)] of each tap, over N*out_h*out_w outputs."""
        xp = self.xp
        N, H, W = int(x_shape[0]), int(x_shape[1]), int(x_shape[2])
        t = transforms.astype(np.float32).reshape(-1, 8)
        if t.shape[0] not in (1, N):
            raise ValueError(f"image_transform: transforms must have 1 or {N} rows of 8, got {t.shape[0]}")
        t = xp.broadcast_to(t, (N, 8))[:, :, None, None]
        yy, xx = xp.meshgrid(xp.arange(out_h, dtype=np.float32), xp.arange(out_w, dtype=np.float32), indexing="ij")
        k = t[:, 6] * xx + t[:, 7] * yy + 1.0
        sx = self._fill_coord((t[:, 0] * xx + t[:, 1] * yy + t[:, 2]) / k, W, fill_mode)
        sy = self._fill_coord((t[:, 3] * xx + t[:, 4] * yy + t[:, 5]) / k, H, fill_mode)
        base = (xp.arange(N, dtype=np.int64) * (H * W))[:, None, None]

        def tap(iy, ix, w):
            ok = (iy >= 0) & (iy <= H - 1) & (ix >= 0) & (ix <= W - 1)
            flat = base + xp.clip(iy, 0, H - 1).astype(np.int64) * W + xp.clip(ix, 0, W - 1).astype(np.int64)
            return flat.reshape(-1), ok.reshape(-1), None if w is None else w.reshape(-1)

        if interpolation == "nearest":  # std::round: halves away from zero
            rnd = (lambda c: xp.where(c >= 0, xp.floor(c + 0.5), xp.ceil(c - 0.5)))
            return [tap(rnd(sy), rnd(sx), None)]
        if interpolation != "bilinear":
            raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
        y0, x0 = xp.floor(sy), xp.floor(sx)
        fy, fx = sy - y0, sx - x0
        return [tap(y0, x0, (1 - fy) * (1 - fx)), tap(y0, x0 + 1, (1 - fy) * fx),
                tap(y0 + 1, x0, fy * (1 - fx)), tap(y0 + 1, x0 + 1, fy * fx)]

    def image_transform(self, x, transforms, out_h, out_w, interpolation="bilinear", fill_mode="constant",
                        fill_value=0.0):
        """Projective transform of NHWC images ``x`` [N, H, W, C] -> [N, out_h, out_w, C].

        ``transforms``: [N, 8] or [1, 8] rows (a0, a1, a2, b0, b1, b2, c0, c1) mapping an output
        pixel (x, y) to the input point ((a0 x + a1 y + a2) / k, (b0 x + b1 y + b2) / k), k = c0 x + c1 y + 1,
        as tf.raw_ops.ImageProjectiveTransformV3 (and Keras's ops.image.affine_transform).
        ``interpolation``: "bilinear" | "nearest"; ``fill_mode``: "constant" (reads outside are
        ``fill_value``), "nearest", "reflect", "wrap". Raises ValueError for other values.
        """
        N, H, W, C = x.shape
        rows = x.reshape(N * H * W, C)
        out = None
        fill = self.xp.full((), fill_value, dtype=x.dtype)  # a fill launch, not an upload (records)
        for flat, ok, w in self._transform_taps(x.shape, transforms, out_h, out_w, interpolation, fill_mode):
            v = self.xp.where(ok[:, None], rows[flat], fill)
            v = v if w is None else v * w.astype(x.dtype)[:, None]
            out = v if out is None else out + v
        return out.reshape(N, out_h, out_w, C)

    def image_transform_grad(self, dy, x_shape, transforms, interpolation="bilinear", fill_mode="constant"):
        """Gradient of ``image_transform`` for its images: ``dy`` [N, out_h, out_w, C] -> [N, H, W, C]."""
        N, H, W, C = (int(d) for d in x_shape)
        g = _rows_by(dy, 1)
        dx = self.xp.zeros((N * H * W, C), dtype=dy.dtype)
        for flat, ok, w in self._transform_taps(x_shape, transforms, dy.shape[1], dy.shape[2], interpolation,
                                                 fill_mode):
            # Out-of-range taps add zero at their clipped index: a boolean selection would size its
            # result on the host (a sync a recorded step cannot make).
            w = ok if w is None else w * ok
            self._add_at(dx, flat, g * w.astype(dy.dtype)[:, None])
        return dx.reshape(N, H, W, C)

    # ------------------------------------------------------------ elementwise
    # Binary primitives broadcast NumPy-style; the caller checks shapes.
    def add(self, a, b):
        return self.xp.add(a, b)

    def subtract(self, a, b):
        return self.xp.subtract(a, b)

    def multiply(self, a, b):
        return self.xp.multiply(a, b)

    def divide(self, a, b):
        return self.xp.true_divide(a, b)

    def floor_divide(self, a, b):
        return self.xp.floor_divide(a, b)

    def mod(self, a, b):
        return self.xp.mod(a, b)

    def power(self, a, b):
        return self.xp.power(a, b)

    def negative(self, a):
        return self.xp.negative(a)

    def exp(self, a):
        return self.xp.exp(a)

    def log(self, a):
        return self.xp.log(a)

    def log1p(self, a):
        return self.xp.log1p(a)

    def sqrt(self, a):
        return self.xp.sqrt(a)

    def abs(self, a):
        return self.xp.abs(a)

    def sign(self, a):
        return self.xp.sign(a)

    def square(self, a):
        return self.xp.square(a)

    def floor(self, a):
        return self.xp.floor(a)

    def sin(self, a):
        return self.xp.sin(a)

    def cos(self, a):
        return self.xp.cos(a)

    def round(self, a):
        return self.xp.round(a)

    def maximum(self, a, b):
        return self.xp.maximum(a, b)

    def minimum(self, a, b):
        return self.xp.minimum(a, b)

    def clip(self, a, lo, hi):
        return self.xp.clip(a, lo, hi)

    def where(self, cond, a, b):
        return self.xp.where(cond, a, b)

    def cast(self, a, dtype):
        d = normalize_dtype(dtype)
        if a.dtype == d:
            return a
        if d.itemsize == 2 and d.kind != "i" and d.kind != "u":
            with np.errstate(over="ignore"):  # past float16's range is inf, silently, as on a GPU
                return a.astype(d)             # (loss scaling relies on it and skips the step)
        return a.astype(d)

    def compare(self, op: str, a, b):
        """Elementwise comparison; ``op`` is one of == != < <= > >=. Returns bool."""
        fn = {"==": self.xp.equal, "!=": self.xp.not_equal, "<": self.xp.less,
              "<=": self.xp.less_equal, ">": self.xp.greater, ">=": self.xp.greater_equal}
        return fn[op](a, b)

    def logical(self, op: str, a, b=None):
        """``op`` is and / or / xor / not on bool arrays."""
        xp = self.xp
        if op == "not":
            return xp.logical_not(a)
        return {"and": xp.logical_and, "or": xp.logical_or, "xor": xp.logical_xor}[op](a, b)

    def isnan(self, a):
        return self.xp.isnan(a)

    def isfinite(self, a):
        return self.xp.isfinite(a)

    # ------------------------------------------------------------ activations
    def relu(self, x):
        return self.xp.maximum(x, 0)

    def relu_grad(self, dy, x):
        """dy where x > 0, else 0."""
        return dy * (x > 0)

    def activation_grad(self, dy, y, activation):
        """Gradient through a fused activation (None, "linear", "relu", "relu6", "sigmoid", "tanh") from
        its output y."""
        if activation == "relu":
            return self.relu_grad(dy, y)
        if activation == "relu6":
            return self.where((y > 0) & (y < 6), dy, 0)
        if activation == "sigmoid":
            return self.multiply(dy, self.multiply(y, self.subtract(1, y)))
        if activation == "tanh":
            return self.multiply(dy, self.subtract(1, self.square(y)))
        return dy

    def sigmoid(self, x):
        xp = self.xp
        # Split by sign so that exp never overflows.
        e = xp.exp(-xp.abs(x))
        return xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)

    def tanh(self, x):
        return self.xp.tanh(x)

    def elu(self, x, alpha=1.0):
        xp = self.xp
        return xp.where(x > 0, x, alpha * xp.expm1(xp.minimum(x, 0))).astype(x.dtype, copy=False)

    def leaky_relu(self, x, alpha=0.2):
        return self.xp.where(x > 0, x, x * x.dtype.type(alpha))

    def softplus(self, x):
        xp = self.xp
        return (xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))).astype(x.dtype, copy=False)

    def softmax(self, x, axis=-1):
        xp = self.xp
        e = xp.exp(x - x.max(axis=axis, keepdims=True))
        e /= e.sum(axis=axis, keepdims=True)
        return e

    def log_softmax(self, x, axis=-1):
        xp = self.xp
        s = x - x.max(axis=axis, keepdims=True)
        return s - xp.log(xp.exp(s).sum(axis=axis, keepdims=True))

    def softmax_cross_entropy(self, logits, labels, axis=-1):
        """Per-row cross-entropy of softmax(logits) against probability ``labels``.

        logits, labels: same shape. Returns the shape without ``axis``, and
        the softmax (kept for the backward pass: ``(softmax - labels) * dy``).
        """
        logp = self.log_softmax(logits, axis)
        loss = -(labels * logp).sum(axis=axis)
        return loss, self.xp.exp(logp)

    def softmax_cross_entropy_grad(self, prob, labels, dy, axis=-1):
        """Gradient of ``softmax_cross_entropy`` with respect to the logits:
        ``(prob - labels) * dy`` with dy of the loss's shape expanded at ``axis``."""
        return (prob - labels) * self.xp.expand_dims(dy, axis)

    def sparse_softmax_cross_entropy(self, logits, labels):
        """``softmax_cross_entropy`` over the last axis for integer class ``labels``.

        logits [..., C] float; labels [...] integer. An index outside [0, C)
        has no class: its loss is 0 (and its gradient, below, 0). Returns
        (loss [...], softmax [..., C]).
        """
        return self.softmax_cross_entropy(logits, self.one_hot(labels, logits.shape[-1], logits.dtype), -1)

    def sparse_softmax_cross_entropy_grad(self, prob, labels, dy):
        """``(prob - one_hot(labels)) * dy[..., None]``, the logits' gradient of the loss above;
        0 in the rows whose label has no class (their loss is the constant 0)."""
        onehot = self.one_hot(labels, prob.shape[-1], prob.dtype)
        valid = onehot.sum(axis=-1, keepdims=True)
        return (prob * valid - onehot) * self.xp.expand_dims(dy, -1)

    # ------------------------------------------------------------- reductions
    def sum(self, a, axis=None, keepdims=False):
        """Sum; bool and int inputs sum as int32 (int64 stays int64), never a silent int64."""
        return a.sum(axis=axis, keepdims=keepdims, dtype=_int_acc(a.dtype))

    def mean(self, a, axis=None, keepdims=False):
        return a.mean(axis=axis, keepdims=keepdims)

    def max(self, a, axis=None, keepdims=False):
        return a.max(axis=axis, keepdims=keepdims)

    def min(self, a, axis=None, keepdims=False):
        return a.min(axis=axis, keepdims=keepdims)

    def prod(self, a, axis=None, keepdims=False):
        return a.prod(axis=axis, keepdims=keepdims, dtype=_int_acc(a.dtype))

    def argmax(self, a, axis=None):
        return a.argmax(axis=axis).astype(np.int32)

    def argmax_hits(self, a, labels):
        """float32 [...]: 1.0 where ``argmax(a, -1) == labels`` (a [..., C], C >= 1; labels
        [...] integer), else 0.0. The first maximum counts, a NaN as the maximum."""
        return (self.argmax(a, -1) == labels).astype(np.float32)

    def argmin(self, a, axis=None):
        return a.argmin(axis=axis).astype(np.int32)

    def any(self, a, axis=None, keepdims=False):
        return a.any(axis=axis, keepdims=keepdims)

    def all(self, a, axis=None, keepdims=False):
        return a.all(axis=axis, keepdims=keepdims)

    def sum_to_shape(self, g, shape):
        """Sum ``g`` over the axes that broadcasting expanded from ``shape``."""
        shape = tuple(shape)
        if g.shape == shape:
            return g
        lead = g.ndim - len(shape)
        axes = tuple(range(lead)) + tuple(
            i + lead for i, s in enumerate(shape) if s == 1 and g.shape[i + lead] != 1)
        if axes:
            g = g.sum(axis=axes, keepdims=True)
        return g.reshape(shape)

    # ------------------------------------------------------------------ shape
    def reshape(self, a, shape):
        return a.reshape(shape)

    def transpose(self, a, perm=None):
        return a.transpose(perm)

    def broadcast_to(self, a, shape):
        return self.xp.broadcast_to(a, shape)

    def concat(self, arrays, axis=0):
        return self.xp.concatenate(arrays, axis=axis)

    def stack(self, arrays, axis=0):
        return self.xp.stack(arrays, axis=axis)

    def getitem(self, a, key):
        return a[key]

    def getitem_grad(self, dy, shape, key):
        """Gradient of ``a[key]``: zeros of ``shape`` with ``dy`` added at ``key``.

        Repeated indices (advanced indexing) accumulate.
        """
        out = self.xp.zeros(shape, dtype=dy.dtype)
        self._add_at(out, key, dy)
        return out

    def _add_at(self, out, key, values):
        self.xp.add.at(out, key, values)

    def pad(self, a, pad_width, value=0.0):
        """Pad with a constant; ``pad_width`` is ((before, after), ...) per axis."""
        return self.xp.pad(a, pad_width, mode="constant", constant_values=value)

    def one_hot(self, indices, depth, dtype="float32"):
        """[..., depth] array with 1 at each index; out-of-range indices give zeros."""
        idx = indices.astype(np.int64)
        return (idx[..., None] == self.xp.arange(depth)).astype(normalize_dtype(dtype))

    def gather(self, a, indices, axis=0):
        """``take`` along ``axis``; raises IndexError for out-of-range indices."""
        n = a.shape[axis]
        if indices.size and (int(indices.min()) < -n or int(indices.max()) >= n):
            raise IndexError(f"gather: an index is out of range for axis {axis} of size {n}")
        return self.xp.take(a, indices, axis=axis)

    def gather_grad(self, dy, shape, indices, axis=0):
        """Gradient of gather: ``dy`` scattered and summed into zeros of ``shape``."""
        out = self.xp.zeros(shape, dtype=dy.dtype)
        moved = self.xp.moveaxis(out, axis, 0)
        ind = indices.reshape(-1) % shape[axis]
        upd = self.xp.moveaxis(dy, tuple(range(axis, axis + indices.ndim)),
                               tuple(range(indices.ndim)))
        self._add_at(moved, ind, upd.reshape((ind.size,) + moved.shape[1:]))
        return out

    def repeat(self, a, repeats, axis):
        return self.xp.repeat(a, repeats, axis=axis)

    # ----------------------------------------------------------------- matmul
    def matmul(self, a, b, transpose_a=False, transpose_b=False):
        """``a @ b`` with optional transposes of the last two axes.

        a: [..., m, k], b: [..., k, n] (after the transposes); leading axes
        broadcast. Returns [..., m, n].
        """
        if transpose_a:
            a = self.xp.swapaxes(a, -1, -2)
        if transpose_b:
            b = self.xp.swapaxes(b, -1, -2)
        return self.xp.matmul(a, b)

    def qr(self, a):
        """Reduced QR of a 2-D float array [m, n] (m >= n): (q [m, n], r [n, n]); for the
        Orthogonal initializer, not differentiable."""
        return self.xp.linalg.qr(a)

    def dense(self, x, w, b=None, activation=None):
        """Fused ``activation(x @ w + b)``; x [m, k], w [k, n], b [n].

        activation: None, "relu" or another name this backend's
        ``apply_activation`` knows. Backends may fuse it into one kernel.
        """
        y = self.matmul(x, w)
        if b is not None:
            y += b
        return self.apply_activation(y, activation)

    def dense_grad(self, dy, x, y, w, activation=None, with_bias=False, need_input=True, need_kernel=True):
        """Gradients of ``dense`` from its output gradient ``dy`` [m, n]: (dx, dw, db).

        y: the forward's output (read for relu, sigmoid and tanh). dx ([m, k])
        is None unless need_input, dw ([k, n]) None unless need_kernel, db
        ([n]) None unless with_bias. Backends may do it in fewer passes.
        """
        g = self.activation_grad(dy, y, activation)
        dx = self.matmul(g, w, False, True) if need_input else None
        dw = self.matmul(x, g, True, False) if need_kernel else None
        db = self.sum_to_shape(g, (g.shape[1],)) if with_bias else None
        return dx, dw, db

    def apply_activation(self, y, activation):
        if activation in (None, "linear"):
            return y
        if activation == "relu6":
            return self.clip(y, 0.0, 6.0)
        return getattr(self, activation)(y)

    # ------------------------------------------------------------ convolution
    def _windows(self, xp_pad, kh, kw, sh, sw, dh, dw, ho, wo):
        """A strided view [N, ho, wo, kh, kw, C] of the padded input (no copy)."""
        n, _, _, c = xp_pad.shape
        s0, s1, s2, s3 = xp_pad.strides
        return self.xp.lib.stride_tricks.as_strided(
            xp_pad, shape=(n, ho, wo, kh, kw, c),
            strides=(s0, s1 * sh, s2 * sw, s1 * dh, s2 * dw, s3))

    def conv_geometry(self, x_shape, k_shape, strides, padding, dilation):
        """(ho, wo, (pt, pb), (pl, pr)) for an NHWC input and [kh, kw, in, out] kernel."""
        # Each convolution asks two or three times per step: checked once per signature. The arguments
        # themselves are the key where they are hashable (the layers pass tuples and ints), else as tuples.
        try:
            key = (x_shape, k_shape, strides, padding, dilation)
            hit = _CONV_GEOMETRY.get(key)
        except TypeError:
            try:
                key = (tuple(x_shape), tuple(k_shape), strides if isinstance(strides, int) else tuple(strides),
                       padding, dilation if isinstance(dilation, int) else tuple(dilation))
                hit = _CONV_GEOMETRY.get(key)
            except TypeError:  # an odd argument: the checks below name it
                key = hit = None
        if hit is None:
            hit = self._conv_geometry(x_shape, k_shape, strides, padding, dilation)
            if key is not None:
                _CONV_GEOMETRY[key] = hit
        return hit

    def _conv_geometry(self, x_shape, k_shape, strides, padding, dilation):
        if len(x_shape) != 4:
            raise ValueError(f"conv2d expects a 4-D NHWC input, got shape {tuple(x_shape)}")
        if len(k_shape) != 4:
            raise ValueError(f"conv2d expects a 4-D [kh, kw, in, out] kernel, got shape {tuple(k_shape)}")
        if x_shape[3] != k_shape[2]:
            raise ValueError(
                f"conv2d: input has {x_shape[3]} channels but the kernel expects "
                f"{k_shape[2]} (input shape {tuple(x_shape)}, kernel shape {tuple(k_shape)})")
        sh, sw = _pair(strides, "strides")
        dh, dw = _pair(dilation, "dilation_rate")
        try:
            ho, ph = conv_output_size(x_shape[1], k_shape[0], sh, dh, padding)
            wo, pw = conv_output_size(x_shape[2], k_shape[1], sw, dw, padding)
        except ValueError as e:
            raise ValueError(f"conv2d: {e} (input shape {tuple(x_shape)}, kernel shape {tuple(k_shape)})") from None
        return ho, wo, ph, pw

    def _im2col(self, x, kh, kw, strides, padding, dilation):
        sh, sw = _pair(strides, "strides")
        dh, dw = _pair(dilation, "dilation_rate")
        ho, ph = conv_output_size(x.shape[1], kh, sh, dh, padding)
        wo, pw = conv_output_size(x.shape[2], kw, sw, dw, padding)
        if ph != (0, 0) or pw != (0, 0):
            x = self.xp.pad(x, ((0, 0), ph, pw, (0, 0)))
        win = self._windows(x, kh, kw, sh, sw, dh, dw, ho, wo)
        n, c = x.shape[0], x.shape[3]
        return win.reshape(n * ho * wo, kh * kw * c), ho, wo

    def conv2d(self, x, k, strides=(1, 1), padding="valid", dilation=(1, 1)):
        """2-D convolution (cross-correlation, as in TF).

        x: [N, H, W, C], k: [kh, kw, C, O] -> [N, Ho, Wo, O]. Raises
        ValueError when the channels differ or the window exceeds the input.
        """
        self.conv_geometry(x.shape, k.shape, strides, padding, dilation)
        kh, kw, c, o = k.shape
        cols, ho, wo = self._im2col(x, kh, kw, strides, padding, dilation)
        y = self.xp.matmul(cols, k.reshape(kh * kw * c, o))
        return y.reshape(x.shape[0], ho, wo, o)

    def conv2d_bias_act(self, x, k, b=None, activation=None, strides=(1, 1), padding="valid",
                        dilation=(1, 1), keep=None):
        """``activation(conv2d(x, k) + b)``, the Conv2D layer's forward pass in one primitive.

        b: [O] or None; activation: None, "linear", "relu", "sigmoid" or
        "tanh" (as in ``dense``). Backends may apply the bias and the
        activation while the convolution's output is still in cache.
        keep: None, or a dict the backend may fill with work that
        ``conv2d_grad_filter_kept`` can reuse (the CPU keeps its im2col
        columns); the generic version leaves it empty.
        """
        y = self.conv2d(x, k, strides, padding, dilation)
        if b is not None:
            y = self.xp.add(y, b)
        return self.apply_activation(y, activation)

    def conv2d_bias_act_grad(self, dy, x, y, k, activation=None, with_bias=False, need_input=True,
                             need_kernel=True, strides=(1, 1), padding="valid", dilation=(1, 1), keep=None):
        """Gradients of ``conv2d_bias_act`` from its output gradient ``dy``: (dx, dk, db).

        y: the forward's output (read for relu, sigmoid and tanh); keep: the
        dict the forward filled, or None. dx ([N, H, W, C]) is None unless
        need_input, dk ([kh, kw, C, O]) None unless need_kernel, db ([O])
        None unless with_bias. Backends may do it all in fewer passes (the
        CPU masks, pads and sums the bias inside its C kernels).
        """
        g = self.activation_grad(dy, y, activation)
        dx = self.conv2d_grad_input(g, k, x.shape, strides, padding, dilation) if need_input else None
        dk = self.conv2d_grad_filter_kept(keep or {}, x, g, k.shape, strides, padding, dilation) if need_kernel else None
        db = self.sum_to_shape(g, (k.shape[3],)) if with_bias else None
        return dx, dk, db

    def conv2d_grad_filter_kept(self, keep, x, dy, k_shape, strides=(1, 1), padding="valid",
                                dilation=(1, 1)):
        """``conv2d_grad_filter``, reusing what ``conv2d_bias_act`` left in ``keep`` (a dict, maybe empty)."""
        return self.conv2d_grad_filter(x, dy, k_shape, strides, padding, dilation)

    def conv2d_grad_filter(self, x, dy, k_shape, strides=(1, 1), padding="valid", dilation=(1, 1)):
        """Gradient of conv2d with respect to the kernel: [kh, kw, C, O]."""
        kh, kw, c, o = k_shape
        cols, ho, wo = self._im2col(x, kh, kw, strides, padding, dilation)
        dk = self.xp.matmul(cols.T, _rows_by(dy, 1))
        return dk.reshape(k_shape)

    def conv2d_grad_input(self, dy, k, x_shape, strides=(1, 1), padding="valid", dilation=(1, 1)):
        """Gradient of conv2d with respect to its input: an array of ``x_shape``.

        One matmul gives each output pixel's contribution to its window;
        the windows are then summed back with one strided add per kernel tap
        (kh*kw adds, no loop over pixels).
        """
        n, h, w, c = x_shape
        kh, kw, _, o = k.shape
        sh, sw = _pair(strides, "strides")
        dh, dw = _pair(dilation, "dilation_rate")
        ho, wo, ph, pw = self.conv_geometry(x_shape, k.shape, strides, padding, dilation)
        dcols = self.xp.matmul(_rows_by(dy, 1), k.reshape(kh * kw * c, o).T)
        dcols = dcols.reshape(n, ho, wo, kh, kw, c)
        hp, wp = h + ph[0] + ph[1], w + pw[0] + pw[1]
        # Room for the last window's reach so every strided slice has ho/wo rows.
        dxp = self.xp.zeros((n, max(hp, (ho - 1) * sh + (kh - 1) * dh + 1),
                             max(wp, (wo - 1) * sw + (kw - 1) * dw + 1), c), dtype=dy.dtype)
        for i in range(kh):
            for j in range(kw):
                r0, c0 = i * dh, j * dw
                dxp[:, r0:r0 + sh * (ho - 1) + 1:sh, c0:c0 + sw * (wo - 1) + 1:sw, :] += dcols[:, :, :, i, j, :]
        return dxp[:, ph[0]:ph[0] + h, pw[0]:pw[0] + w, :]

    # -------------------------------------------------- depthwise convolution
    def depthwise_geometry(self, x_shape, k_shape, strides, padding, dilation):
        """(ho, wo, (pt, pb), (pl, pr)) for an NHWC input and a [kh, kw, C, M] depthwise kernel."""
        if len(x_shape) != 4 or len(k_shape) != 4:
            raise ValueError(f"depthwise_conv2d expects a 4-D NHWC input and a 4-D [kh, kw, C, M] kernel, "
                             f"got shapes {tuple(x_shape)} and {tuple(k_shape)}")
        if x_shape[3] != k_shape[2]:
            raise ValueError(f"depthwise_conv2d: input has {x_shape[3]} channels but the kernel expects "
                             f"{k_shape[2]} (input shape {tuple(x_shape)}, kernel shape {tuple(k_shape)})")
        sh, sw = _pair(strides, "strides")
        dh, dw = _pair(dilation, "dilation_rate")
        try:
            ho, ph = conv_output_size(x_shape[1], k_shape[0], sh, dh, padding)
            wo, pw = conv_output_size(x_shape[2], k_shape[1], sw, dw, padding)
        except ValueError as e:
            raise ValueError(f"depthwise_conv2d: {e} (input shape {tuple(x_shape)}, "
                             f"kernel shape {tuple(k_shape)})") from None
        return ho, wo, ph, pw

    def _dw_taps(self, k_shape, strides, dilation, ho, wo):
        """(i, j, row slice, col slice) of every kernel tap into the padded input."""
        sh, sw = _pair(strides, "strides")
        dh, dw = _pair(dilation, "dilation_rate")
        for i in range(k_shape[0]):
            for j in range(k_shape[1]):
                yield i, j, slice(i * dh, i * dh + sh * (ho - 1) + 1, sh), slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)

    def depthwise_conv2d(self, x, k, strides=(1, 1), padding="valid", dilation=(1, 1)):
        """Depthwise 2-D convolution (TF's ``depthwise_conv2d_native``).

        x: [N, H, W, C], k: [kh, kw, C, M] -> [N, Ho, Wo, C*M]; output channel
        ``c*M + m`` is input channel c convolved with ``k[:, :, c, m]``.
        ValueError when the channels differ or the window exceeds the input.
        """
        ho, wo, ph, pw = self.depthwise_geometry(x.shape, k.shape, strides, padding, dilation)
        n, c, m = x.shape[0], x.shape[3], k.shape[3]
        if ph != (0, 0) or pw != (0, 0):
            x = self.xp.pad(x, ((0, 0), ph, pw, (0, 0)))
        y = self.xp.zeros((n, ho, wo, c, m), dtype=x.dtype)
        for i, j, rs, cs in self._dw_taps(k.shape, strides, dilation, ho, wo):
            y += x[:, rs, cs, :, None] * k[i, j]
        return y.reshape(n, ho, wo, c * m)

    def depthwise_conv2d_bias_act(self, x, k, b=None, activation=None, strides=(1, 1), padding="valid",
                                  dilation=(1, 1)):
        """``activation(depthwise_conv2d(x, k) + b)``: b [C*M] or None; activation None, "linear",
        "relu", "relu6", "sigmoid" or "tanh". Backends may apply the bias and the activation as each
        output is stored (one pass over the output instead of three)."""
        y = self.depthwise_conv2d(x, k, strides, padding, dilation)
        if b is not None:
            y = self.xp.add(y, b)
        return self.apply_activation(y, activation)

    def depthwise_conv2d_grad_input(self, dy, k, x_shape, strides=(1, 1), padding="valid", dilation=(1, 1)):
        """Gradient of depthwise_conv2d with respect to its input: an array of ``x_shape``."""
        n, h, w, c = x_shape
        kh, kw, _, m = k.shape
        sh, sw = _pair(strides, "strides")
        dh, dw = _pair(dilation, "dilation_rate")
        ho, wo, ph, pw = self.depthwise_geometry(x_shape, k.shape, strides, padding, dilation)
        dy5 = dy.reshape(n, ho, wo, c, m)
        # Room for the last window's reach so every strided slice has ho/wo rows.
        dxp = self.xp.zeros((n, max(h + ph[0] + ph[1], (ho - 1) * sh + (kh - 1) * dh + 1),
                             max(w + pw[0] + pw[1], (wo - 1) * sw + (kw - 1) * dw + 1), c), dtype=dy.dtype)
        for i, j, rs, cs in self._dw_taps(k.shape, strides, dilation, ho, wo):
            dxp[:, rs, cs, :] += (dy5 * k[i, j]).sum(axis=-1)
        return dxp[:, ph[0]:ph[0] + h, pw[0]:pw[0] + w, :]

    def depthwise_conv2d_grad_filter(self, x, dy, k_shape, strides=(1, 1), padding="valid", dilation=(1, 1)):
        """Gradient of depthwise_conv2d with respect to the kernel: [kh, kw, C, M]."""
        kh, kw, c, m = k_shape
        ho, wo, ph, pw = self.depthwise_geometry(x.shape, k_shape, strides, padding, dilation)
        if ph != (0, 0) or pw != (0, 0):
            x = self.xp.pad(x, ((0, 0), ph, pw, (0, 0)))
        dy3 = dy.reshape(math.prod(dy.shape[:-1]), c, m)  # not -1: C may be 0
        dk = self.xp.empty(tuple(k_shape), dtype=dy.dtype)
        for i, j, rs, cs in self._dw_taps(k_shape, strides, dilation, ho, wo):
            xs = _rows_by(x[:, rs, cs, :], 1)
            dk[i, j] = (xs[:, :, None] * dy3).sum(axis=0)
        return dk

    # --------------------------------------------------- fused recurrent cells
    # One time step of an LSTM / GRU after its matmuls: the gate math of Keras's cells
    # (sigmoid gates, tanh candidate and output) in one pass, forward and backward. The
    # backends' own versions (C on the CPU, kernels/rnn.cu on the GPU) compute the same.
    def lstm_step(self, z, c_prev):
        """One LSTM step from the pre-activations.

        z: [N, 4U] = x_t @ kernel + bias + h_prev @ recurrent_kernel, gates in
        Keras's order i, f, c (candidate), o; c_prev: [N, U]; both float, one dtype.
        Returns ``(h, c, act)``: h = o * tanh(c), c = f * c_prev + i * tanh(z_c)
        ([N, U] each) and act [N, 4U], the activated gates (i, f, tanh(z_c), o)
        that ``lstm_step_grad`` needs.
        """
        xp = self.xp
        u = c_prev.shape[-1]
        act = self.sigmoid(z)
        act[:, 2 * u:3 * u] = xp.tanh(z[:, 2 * u:3 * u])
        i, f, g, o = act[:, :u], act[:, u:2 * u], act[:, 2 * u:3 * u], act[:, 3 * u:]
        c = f * c_prev + i * g
        return o * xp.tanh(c), c, act

    def lstm_step_grad(self, dh, dc, act, c_prev, c):
        """The gradients of ``lstm_step``: ``(dz [N, 4U], dc_prev [N, U])``.

        dh, dc: the gradients reaching h and c ([N, U]; either may be None for
        zeros, or a broadcast view); act, c_prev, c as ``lstm_step`` gave / took.
        """
        xp = self.xp
        u = c.shape[-1]
        i, f, g, o = act[:, :u], act[:, u:2 * u], act[:, 2 * u:3 * u], act[:, 3 * u:]
        tc = xp.tanh(c)
        dz = xp.empty(act.shape, act.dtype)
        if dh is None:
            dct = xp.zeros(c.shape, c.dtype) if dc is None else dc + 0
            dz[:, 3 * u:] = 0
        else:
            dct = dh * o * (1 - tc * tc)
            if dc is not None:
                dct += dc
            dz[:, 3 * u:] = dh * tc * o * (1 - o)
        dz[:, :u] = dct * g * i * (1 - i)
        dz[:, u:2 * u] = dct * c_prev * f * (1 - f)
        dz[:, 2 * u:3 * u] = dct * i * (1 - g * g)
        return dz, dct * f

    def gru_step(self, xz, hz, h_prev):
        """One GRU step, ``reset_after=True`` (Keras 3's default).

        xz: [N, 3U] = x_t @ kernel + input bias; hz: [N, 3U] = h_prev @
        recurrent_kernel + recurrent bias; both in Keras's gate order z, r, h;
        h_prev: [N, U]. z = sigmoid(xz_z + hz_z), r = sigmoid(xz_r + hz_r),
        hh = tanh(xz_h + r * hz_h), h = z * h_prev + (1 - z) * hh.
        Returns ``(h [N, U], act [N, 3U])``, act = (z, r, hh) for ``gru_step_grad``.
        """
        xp = self.xp
        u = h_prev.shape[-1]
        act = xp.empty(xz.shape, xz.dtype)
        act[:, :2 * u] = self.sigmoid(xz[:, :2 * u] + hz[:, :2 * u])
        z, r = act[:, :u], act[:, u:2 * u]
        act[:, 2 * u:] = xp.tanh(xz[:, 2 * u:] + r * hz[:, 2 * u:])
        hh = act[:, 2 * u:]
        return hh + z * (h_prev - hh), act

    def gru_step_grad(self, dh, act, hz, h_prev):
        """The gradients of ``gru_step`` from dh [N, U]: ``(dxz [N, 3U], dhz [N, 3U], dh_prev [N, U])``."""
        xp = self.xp
        u = h_prev.shape[-1]
        z, r, hh = act[:, :u], act[:, u:2 * u], act[:, 2 * u:]
        dxz = xp.empty(act.shape, act.dtype)
        dzp = dh * (h_prev - hh) * z * (1 - z)
        dhp = dh * (1 - z) * (1 - hh * hh)
        dxz[:, :u] = dzp
        dxz[:, u:2 * u] = dhp * hz[:, 2 * u:] * r * (1 - r)
        dxz[:, 2 * u:] = dhp
        dhz = dxz.copy()
        dhz[:, 2 * u:] *= r
        return dxz, dhz, dh * z

    # ---------------------------------------------------------------- pooling
    def _pool_setup(self, x, pool_size, strides, padding, fill):
        ph_, pw_ = _pair(pool_size, "pool_size")
        sh, sw = _pair(strides if strides is not None else pool_size, "strides")
        if x.ndim != 4:
            raise ValueError(f"pooling expects a 4-D NHWC input, got shape {tuple(x.shape)}")
        ho, ph = conv_output_size(x.shape[1], ph_, sh, 1, padding)
        wo, pw = conv_output_size(x.shape[2], pw_, sw, 1, padding)
        if ph != (0, 0) or pw != (0, 0):
            x = self.xp.pad(x, ((0, 0), ph, pw, (0, 0)), constant_values=fill)
        return x, (ph_, pw_), (sh, sw), ho, wo, ph, pw

    def max_pool2d(self, x, pool_size=(2, 2), strides=None, padding="valid"):
        """Max pooling, NHWC -> [N, Ho, Wo, C]; padding never wins the max."""
        fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        xp_, (kh, kw), (sh, sw), ho, wo, _, _ = self._pool_setup(x, pool_size, strides, padding, fill)
        if (kh, kw) == (sh, sw) and not (xp_.shape[1] % kh or xp_.shape[2] % kw):
            # Non-overlapping windows: a reshape instead of a strided view reads memory in order.
            n, hp, wp, c = xp_.shape
            return xp_.reshape(n, ho, kh, wo, kw, c).max(axis=(2, 4))
        win = self._windows(xp_, kh, kw, sh, sw, 1, 1, ho, wo)
        return win.max(axis=(3, 4))

    def max_pool2d_grad(self, dy, x, y, pool_size=(2, 2), strides=None, padding="valid"):
        """Gradient of max pooling: dy routed to the first maximum of each window."""
        fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        xp_, (kh, kw), (sh, sw), ho, wo, ph, pw = self._pool_setup(x, pool_size, strides, padding, fill)
        win = self._windows(xp_, kh, kw, sh, sw, 1, 1, ho, wo)
        n, _, _, c = x.shape
        arg = win.reshape(n, ho, wo, kh * kw, c).argmax(axis=3)
        dxp = self.xp.zeros(xp_.shape, dtype=dy.dtype)
        for i in range(kh):
            for j in range(kw):
                hit = arg == (i * kw + j)
                dxp[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :] += dy * hit
        return dxp[:, ph[0]:ph[0] + x.shape[1], pw[0]:pw[0] + x.shape[2], :]

    def avg_pool2d(self, x, pool_size=(2, 2), strides=None, padding="valid"):
        """Average pooling, NHWC; with 'same' padding the padded cells are not counted."""
        xp_, (kh, kw), (sh, sw), ho, wo, ph, pw = self._pool_setup(x, pool_size, strides, padding, 0)
        win = self._windows(xp_, kh, kw, sh, sw, 1, 1, ho, wo)
        total = win.sum(axis=(3, 4))
        return (total / self._pool_counts(x.shape, (kh, kw), (sh, sw), ho, wo, ph, pw, x.dtype)).astype(x.dtype, copy=False)

    def _pool_counts(self, x_shape, k, s, ho, wo, ph, pw, dtype):
        """[1, Ho, Wo, 1] number of real (unpadded) cells in each window."""
        if ph == (0, 0) and pw == (0, 0):
            return dtype.type(k[0] * k[1])
        ones = self.xp.pad(self.xp.ones((1, x_shape[1], x_shape[2], 1), dtype=dtype), ((0, 0), ph, pw, (0, 0)))
        return self._windows(ones, k[0], k[1], s[0], s[1], 1, 1, ho, wo).sum(axis=(3, 4))

    def avg_pool2d_grad(self, dy, x_shape, pool_size=(2, 2), strides=None, padding="valid"):
        """Gradient of average pooling: an array of ``x_shape``."""
        kh, kw = _pair(pool_size, "pool_size")
        sh, sw = _pair(strides if strides is not None else pool_size, "strides")
        ho, ph = conv_output_size(x_shape[1], kh, sh, 1, padding)
        wo, pw = conv_output_size(x_shape[2], kw, sw, 1, padding)
        g = dy / self._pool_counts(x_shape, (kh, kw), (sh, sw), ho, wo, ph, pw, dy.dtype)
        n, h, w, c = x_shape
        dxp = self.xp.zeros((n, h + ph[0] + ph[1], w + pw[0] + pw[1], c), dtype=dy.dtype)
        for i in range(kh):
            for j in range(kw):
                dxp[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :] += g
        return dxp[:, ph[0]:ph[0] + h, pw[0]:pw[0] + w, :]

    # ---------------------------------------------------------- normalization
    @staticmethod
    def _bn_check(what, x, **per_channel):
        """ValueError unless x has a last axis and every given array is [C], C = x.shape[-1]."""
        if x.ndim < 1:
            raise ValueError(f"{what}: x must have a channel axis, got shape {tuple(x.shape)}")
        for name, a in per_channel.items():
            if a is not None and tuple(a.shape) != (x.shape[-1],):
                raise ValueError(f"{what}: {name} has shape {tuple(a.shape)}, expected ({x.shape[-1]},) "
                                 f"for x of shape {tuple(x.shape)}")

    def batch_norm_train(self, x, gamma=None, beta=None, epsilon=1e-3):
        """Batch normalization with the batch's statistics over every axis but the last.

        x: [..., C] float; gamma, beta: [C] or None (scale 1, shift 0).
        Returns (y, mean, var, inv_std): y = (x - mean) * inv_std * gamma +
        beta, x's shape and dtype; mean and var [C], var the biased batch
        variance (as Keras); inv_std = 1 / sqrt(var + epsilon) [C], which
        ``batch_norm_grad`` takes. Backends may do it in one read for the
        statistics and one pass for y.
        """
        self._bn_check("batch_norm_train", x, gamma=gamma, beta=beta)
        xp = self.xp
        red = tuple(range(x.ndim - 1))
        mean = xp.mean(x, axis=red)
        y = xp.subtract(x, mean)
        var = xp.mean(xp.square(y), axis=red)
        inv = xp.divide(1.0, xp.sqrt(var + epsilon))
        y *= inv
        if gamma is not None:
            y *= gamma
        if beta is not None:
            y += beta
        return y, mean, var, inv

    def batch_norm_grad(self, dy, x, mean, inv_std, gamma=None, need_input=True):
        """Gradients of ``batch_norm_train`` from its output gradient dy: (dx, dgamma, dbeta).

        dy, x: [..., C]; mean, inv_std: [C] as the forward returned them;
        gamma: [C] or None. With xhat = (x - mean) * inv_std and sums over
        every axis but the last (N rows): dbeta = sum(dy), dgamma =
        sum(dy * xhat) ([C], also when gamma is None), dx = gamma * inv_std
        / N * (N * dy - dbeta - xhat * dgamma) (x's shape; the gradient
        through the batch statistics), None unless need_input. Backends may
        take both sums in one read and dx in one more pass.
        """
        self._bn_check("batch_norm_grad", x, mean=mean, inv_std=inv_std, gamma=gamma)
        if tuple(dy.shape) != tuple(x.shape):
            raise ValueError(f"batch_norm_grad: dy has shape {tuple(dy.shape)}, x {tuple(x.shape)}")
        xp = self.xp
        red = tuple(range(x.ndim - 1))
        xhat = xp.multiply(xp.subtract(x, mean), inv_std)
        dbeta = xp.sum(dy, axis=red)
        dgamma = xp.sum(xp.multiply(dy, xhat), axis=red)
        if not need_input:
            return None, dgamma, dbeta
        n = x.size // x.shape[-1] if x.size else 1
        scale = inv_std if gamma is None else xp.multiply(inv_std, gamma)
        # As means (dy - mean(dy) - xhat * mean(dy * xhat)): no term N times larger than dx.
        dx = xp.subtract(xp.subtract(dy, dbeta / n), xp.multiply(xhat, dgamma / n))
        dx *= scale
        return dx, dgamma, dbeta

    # ------------------------------------------------ layer / RMS normalization
    def layer_norm(self, x, gamma=None, beta=None, epsilon=1e-3, rms=False):
        """Normalization of each row of x [rows, D] over its own D values.

        y = (x - mean) * inv_std * gamma + beta with the row's mean and biased
        variance (``rms``: mean taken as 0, so var = mean(x^2): RMS norm);
        gamma, beta: [D] or None. Returns (y [rows, D], mean [rows], inv_std
        [rows]), x's dtype; ``layer_norm_grad`` takes mean and inv_std.
        """
        if x.ndim != 2:
            raise ValueError(f"layer_norm: x must be [rows, D], got shape {tuple(x.shape)}")
        for name, a in (("gamma", gamma), ("beta", beta)):
            if a is not None and tuple(a.shape) != (x.shape[1],):
                raise ValueError(f"layer_norm: {name} has shape {tuple(a.shape)}, expected ({x.shape[1]},)")
        xp = self.xp
        mean = xp.zeros(x.shape[:1], x.dtype) if rms else xp.mean(x, axis=1)
        xc = x if rms else xp.subtract(x, mean[:, None])
        inv = xp.divide(1.0, xp.sqrt(xp.mean(xp.square(xc), axis=1) + epsilon)).astype(x.dtype)
        y = xp.multiply(xc, inv[:, None])
        if gamma is not None:
            y *= gamma
        if beta is not None:
            y += beta
        return y, mean, inv

    def layer_norm_grad(self, dy, x, mean, inv_std, gamma=None, rms=False, need_input=True):
        """Gradients of ``layer_norm``: (dx or None unless need_input, dgamma [D], dbeta [D]).

        With xhat = (x - mean) * inv_std and g = dy * gamma, per row:
        dx = inv_std * (g - mean(g) - xhat * mean(g * xhat)) (``rms``: without
        the mean(g) term); dgamma = sum over rows of dy * xhat, dbeta of dy.
        """
        if tuple(dy.shape) != tuple(x.shape) or x.ndim != 2:
            raise ValueError(f"layer_norm_grad: dy {tuple(dy.shape)} and x {tuple(x.shape)} must be one [rows, D]")
        xp = self.xp
        xhat = xp.multiply(xp.subtract(x, mean[:, None]), inv_std[:, None])
        dgamma = xp.sum(xp.multiply(dy, xhat), axis=0)
        dbeta = xp.sum(dy, axis=0)
        if not need_input:
            return None, dgamma, dbeta
        g = dy if gamma is None else xp.multiply(dy, gamma)
        dx = xp.subtract(g, xp.multiply(xhat, xp.mean(xp.multiply(g, xhat), axis=1, keepdims=True)))
        if not rms:
            dx -= xp.mean(g, axis=1, keepdims=True)
        dx *= inv_std[:, None]
        return dx, dgamma, dbeta

    def einsum(self, equation, a, b):
        """Two-operand ``numpy.einsum(equation, a, b)`` (contractions through BLAS where it can)."""
        return self.xp.einsum(equation, a, b, optimize=True)

    def _attention_scores(self, q, k, mask, heads, scale, causal):
        xp = self.xp
        bh, t, s = q.shape[0], q.shape[1], k.shape[1]
        sc = xp.matmul(q, xp.swapaxes(k, -1, -2)) * q.dtype.type(scale)
        keep = xp.ones((bh, t, s), bool)
        if mask is not None:
            m = xp.broadcast_to(mask != 0, (bh // heads, heads, t, s))
            keep &= m.reshape(bh, t, s)
        if causal:
            keep &= xp.tril(xp.ones((t, s), bool))
        return sc, keep

    def _attention_dropout(self, shape, dtype, rate, seed, counter):
        """attention's dropout factors [BH, T, S], None for rate 0: 1 / (1 - rate) where
        ``random_keyed(shape, seed, counter)`` >= rate, else 0 (the fused kernels' mask)."""
        if not 0 <= rate < 1:
            raise ValueError(f"attention dropout: rate must be in [0, 1), got {rate!r}")
        if rate == 0:
            return None
        u = self.random_keyed(shape, seed, counter, "uniform", "float64")  # float64: the compare is exact
        return (u >= rate) * dtype.type(1.0 / (1.0 - rate))

    def attention(self, q, k, v, mask=None, heads=1, scale=1.0, causal=False, rate=0.0, seed=0, counter=0):
        """Fused scaled dot-product attention over slabs: (out, lse).

        q [BH, T, D], k [BH, S, D], v [BH, S, E]; mask None or int32 [B|1, H|1, T|1, S]
        (0 = masked; BH = B * heads); ``causal`` masks key j > query i. out [BH, T, E] =
        softmax(q k^T * scale over the kept keys) v, 0 for a row with no key kept (as Keras's
        masked softmax); lse [BH, T] = log of the row's softmax denominator (+inf for such a
        row), which ``attention_grad`` takes. ``rate`` > 0: dropout on the probabilities with a
        mask that is a pure function of (seed, counter, element), as ``random_keyed``'s (lse is
        the undropped one's); ``attention_grad`` given the same arguments regenerates it.
        """
        xp = self.xp
        sc, keep = self._attention_scores(q, k, mask, heads, scale, causal)
        sc = xp.where(keep, sc, -xp.inf)
        m = sc.max(axis=-1, keepdims=True)
        any_kept = keep.any(axis=-1, keepdims=True)
        m = xp.where(any_kept, m, 0)
        p = xp.exp(sc - m)
        denom = p.sum(axis=-1, keepdims=True)
        p = p / xp.where(any_kept, denom, 1)
        z = self._attention_dropout(p.shape, q.dtype, rate, seed, counter)
        out = xp.matmul(p if z is None else p * z, v)
        lse = xp.where(any_kept, m + xp.log(xp.where(any_kept, denom, 1)), xp.inf)[..., 0]
        return out.astype(q.dtype), lse.astype(q.dtype)

    def attention_grad(self, dout, q, k, v, out, lse, mask=None, heads=1, scale=1.0, causal=False, rate=0.0,
                       seed=0, counter=0):
        """Gradients of ``attention`` (called with the same arguments) for its output gradient dout:
        (dq, dk, dv)."""
        xp = self.xp
        sc, keep = self._attention_scores(q, k, mask, heads, scale, causal)
        p = xp.where(keep, xp.exp(sc - lse[..., None]), 0)
        z = self._attention_dropout(p.shape, q.dtype, rate, seed, counter)
        dv = xp.matmul(xp.swapaxes(p if z is None else p * z, -1, -2), dout)
        dp = xp.matmul(dout, xp.swapaxes(v, -1, -2))
        if z is not None:
            dp *= z
        delta = (dout * out).sum(axis=-1, keepdims=True)
        ds = p * (dp - delta) * q.dtype.type(scale)
        return xp.matmul(ds, k), xp.matmul(xp.swapaxes(ds, -1, -2), q), dv

    def masked_softmax(self, x, mask=None, axis=-1):
        """Softmax of x over ``axis`` where ``mask`` (bool, broadcastable to x) is True.

        As Keras 3's Softmax layer: masked-out entries are replaced by -1e9
        before, and set to 0 after, so a row masked everywhere is all zeros.
        """
        if mask is None:
            return self.softmax(x, axis)
        xp = self.xp
        y = self.softmax(xp.where(mask, x, xp.asarray(-1e9, x.dtype)), axis)
        return xp.where(mask, y, xp.asarray(0, y.dtype))

    # -------------------------------------------------------------- optimizer
    def adam_update(self, p, g, m, v, lr, beta1, beta2, eps, step, weight_decay=0.0):
        """In-place Adam(W) step on parameter ``p`` with moments ``m`` and ``v``.

        ``lr`` is the learning rate of this step; ``step`` counts from 1.
        Decoupled weight decay (AdamW) when ``weight_decay`` > 0.
        """
        a = lr * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
        Backend._adam_rule(self, p, g, m, v, a, lr * weight_decay if weight_decay else None, beta1, beta2, eps)

    def _adam_rule(self, p, g, m, v, step_size, decay, beta1, beta2, eps):
        # step_size and decay are Python numbers or 0-d device arrays (a captured step's).
        xp = self.xp
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * xp.square(g)
        if decay is not None:
            p -= decay * p
        p -= step_size * m / (xp.sqrt(v) + eps)

    # The same rules with the step's scalars read from a float32 array ``hp``
    # on the device instead of Python numbers: a captured CUDA graph freezes
    # its launch arguments, so the host writes each step's values into hp
    # (set_scalars) before the replay. Results equal the Python-number forms.
    def adam_update_dev(self, p, g, m, v, hp, beta1, beta2, eps, decay=False):
        """``adam_update`` with hp = [step size, lr * weight_decay]: ``p -= hp[1] p``
        when ``decay``, then ``p -= hp[0] m / (sqrt(v) + eps)``."""
        Backend._adam_rule(self, p, g, m, v, hp[0], hp[1] if decay else None, beta1, beta2, eps)

    def sgd_update_dev(self, p, g, m, hp, momentum=0.0, nesterov=False):
        """``sgd_update`` with the learning rate hp[0]."""
        Backend.sgd_update(self, p, g, m, hp[0], momentum, nesterov)

    def rmsprop_update_dev(self, p, g, v, mg, mom, hp, rho, momentum, eps):
        """``rmsprop_update`` with the learning rate hp[0]."""
        Backend.rmsprop_update(self, p, g, v, mg, mom, hp[0], rho, momentum, eps)

    def weight_decay_update_dev(self, p, hp):
        """``weight_decay_update`` with lr * weight_decay read from hp[1]."""
        Backend.weight_decay_update(self, p, hp[1], 1.0)

    # One rule over many variables: what an optimizer's step calls once, so a
    # backend can do the whole step in one or a few launches (the CUDA one
    # does eight variables per launch). Lists run in parallel, one entry per
    # variable; with ``hp`` (a device array, as the *_dev forms take) the
    # Python-number ``lr`` and ``step`` are not used. Raise ValueError for
    # lists of different lengths.
    def adam_update_many(self, ps, gs, ms, vs, lr, beta1, beta2, eps, step, weight_decay=0.0,
                         decays=None, hp=None):
        """``adam_update`` (``adam_update_dev`` with hp) of every variable; decays: per
        variable, whether ``weight_decay`` (with hp: hp[1]) applies, default all."""
        decays = _per_variable("adam_update_many", ps, gs, ms, vs, decays=decays)
        for p, g, m, v, d in zip(ps, gs, ms, vs, decays):
            if hp is None:
                self.adam_update(p, g, m, v, lr, beta1, beta2, eps, step, weight_decay if d else 0.0)
            else:
                self.adam_update_dev(p, g, m, v, hp, beta1, beta2, eps, bool(weight_decay) and d)

    def sgd_update_many(self, ps, gs, ms, lr, momentum=0.0, nesterov=False, hp=None):
        """``sgd_update`` (``sgd_update_dev`` with hp) of every variable; ms entries may be None."""
        _per_variable("sgd_update_many", ps, gs, ms)
        for p, g, m in zip(ps, gs, ms):
            if hp is None:
                self.sgd_update(p, g, m, lr, momentum, nesterov)
            else:
                self.sgd_update_dev(p, g, m, hp, momentum, nesterov)

    def rmsprop_update_many(self, ps, gs, vs, mgs, moms, lr, rho, momentum, eps, hp=None):
        """``rmsprop_update`` (``rmsprop_update_dev`` with hp) of every variable; mgs and moms
        entries may be None."""
        _per_variable("rmsprop_update_many", ps, gs, vs, mgs, moms)
        for p, g, v, mg, mom in zip(ps, gs, vs, mgs, moms):
            if hp is None:
                self.rmsprop_update(p, g, v, mg, mom, lr, rho, momentum, eps)
            else:
                self.rmsprop_update_dev(p, g, v, mg, mom, hp, rho, momentum, eps)

    # Optimizer updates, Keras 3's formulas. Every array argument is a float
    # array of the parameter's shape and dtype, updated in place (nothing is
    # returned); scalars (lr, betas, step, ...) are Python numbers, so no
    # value leaves the device. A slot passed as None is not used.
    def weight_decay_update(self, p, lr, weight_decay):
        """Decoupled weight decay in place: ``p -= p * weight_decay * lr``."""
        p -= p * (weight_decay * lr)

    def sgd_update(self, p, g, m, lr, momentum=0.0, nesterov=False):
        """SGD in place. Without momentum (m None): ``p -= lr * g``. With it:
        ``m = momentum * m - lr * g``; ``p += m`` (nesterov: ``p += momentum * m - lr * g``)."""
        if m is None or not momentum:
            p -= lr * g
            return
        m *= momentum
        m -= lr * g
        if nesterov:
            p += momentum * m - lr * g
        else:
            p += m

    def adam_amsgrad_update(self, p, g, m, v, vhat, lr, beta1, beta2, eps, step):
        """Adam with AMSGrad in place: as ``adam_update``, but the step divides by
        ``sqrt(vhat) + eps`` where ``vhat = maximum(vhat, v)`` (kept in ``vhat``)."""
        xp = self.xp
        m += (g - m) * (1 - beta1)
        v += (xp.square(g) - v) * (1 - beta2)
        xp.maximum(vhat, v, out=vhat)
        a = lr * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
        p -= a * m / (xp.sqrt(vhat) + eps)

    def rmsprop_update(self, p, g, v, mg, mom, lr, rho, momentum, eps):
        """RMSprop in place. ``v = rho v + (1-rho) g^2``; centered (mg given):
        ``mg = rho mg + (1-rho) g`` and the denominator is ``sqrt(v - mg^2 + eps)``,
        else ``sqrt(v + eps)``; ``inc = lr g / denominator``; with momentum (mom
        given): ``mom = momentum mom + inc; p -= mom``, else ``p -= inc``."""
        xp = self.xp
        v *= rho
        v += (1 - rho) * xp.square(g)
        if mg is not None:
            mg *= rho
            mg += (1 - rho) * g
            inc = lr * g / xp.sqrt(v - xp.square(mg) + eps)
        else:
            inc = lr * g / xp.sqrt(v + eps)
        if mom is not None:
            mom *= momentum
            mom += inc
            p -= mom
        else:
            p -= inc

    def adagrad_update(self, p, g, acc, lr, eps):
        """Adagrad in place: ``acc += g^2; p -= lr g / sqrt(acc + eps)``."""
        acc += self.xp.square(g)
        p -= lr * g / self.xp.sqrt(acc + eps)

    def adadelta_update(self, p, g, acc_g, acc_d, lr, rho, eps):
        """Adadelta in place: ``acc_g = rho acc_g + (1-rho) g^2``;
        ``d = -sqrt(acc_d + eps) g / sqrt(acc_g + eps)``;
        ``acc_d = rho acc_d + (1-rho) d^2``; ``p += lr d``."""
        xp = self.xp
        acc_g *= rho
        acc_g += (1 - rho) * xp.square(g)
        d = -xp.sqrt(acc_d + eps) * g / xp.sqrt(acc_g + eps)
        acc_d *= rho
        acc_d += (1 - rho) * xp.square(d)
        p += lr * d

    def adamax_update(self, p, g, m, u, lr, beta1, beta2, eps, step):
        """Adamax in place: ``m += (g - m)(1-beta1)``; ``u = max(beta2 u, |g|)``;
        ``p -= lr m / ((1 - beta1^step)(u + eps))``; ``step`` counts from 1."""
        xp = self.xp
        m += (g - m) * (1 - beta1)
        u *= beta2
        xp.maximum(u, xp.abs(g), out=u)
        p -= (lr / (1 - beta1 ** step)) * m / (u + eps)

    def nadam_update(self, p, g, m, v, lr, beta1, beta2, eps, step, u_product):
        """Nadam in place (Dozat's momentum schedule ``u_t = beta1 (1 - 0.5 0.96^t)``).

        ``u_product`` is the product of ``u_1 .. u_step`` (this step's included);
        ``m``/``v`` are updated as Adam's; the step uses
        ``m_hat = u_{t+1} m / (1 - u_product u_{t+1}) + (1 - u_t) g / (1 - u_product)``,
        ``v_hat = v / (1 - beta2^step)``, ``p -= lr m_hat / (sqrt(v_hat) + eps)``.
        """
        xp = self.xp
        u_t = beta1 * (1.0 - 0.5 * 0.96 ** step)
        u_t1 = beta1 * (1.0 - 0.5 * 0.96 ** (step + 1))
        m += (g - m) * (1 - beta1)
        v += (xp.square(g) - v) * (1 - beta2)
        m_hat = (u_t1 / (1 - u_product * u_t1)) * m + ((1 - u_t) / (1 - u_product)) * g
        p -= lr * m_hat / (xp.sqrt(v / (1 - beta2 ** step)) + eps)
