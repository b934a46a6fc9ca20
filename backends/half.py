"""16-bit floats on the backends: bfloat16 through ml_dtypes, and float32 compute for the CPU.

NumPy has float16 but computes its matmul without BLAS and our C kernels take
float32 only; bfloat16 is not a NumPy dtype at all (``ml_dtypes`` adds it). So
on the CPU the heavy primitives (``UPCAST``) take 16-bit inputs as float32,
compute, and round their floating results back to the input's 16-bit dtype:
the values a GPU's 16-bit-input, float32-accumulate kernels give.
Elementwise primitives stay in the 16-bit dtype (NumPy rounds each result).
"""
from __future__ import annotations

import functools

import numpy as np

MIXED_EXTRA = 'pip install "deepgpu[mixed]"'
_F16 = np.dtype("float16")
_F32 = np.dtype("float32")
_bf16 = None


def bfloat16():
    """NumPy's dtype for bfloat16 (from ``ml_dtypes``); ImportError naming the extra without it."""
    global _bf16
    if _bf16 is None:
        try:
            import ml_dtypes
        except ImportError:
            raise ImportError(f"bfloat16 needs the ml_dtypes package: {MIXED_EXTRA}") from None
        _bf16 = np.dtype(ml_dtypes.bfloat16)
    return _bf16


def is_half_dtype(dt) -> bool:
    """True for float16 and bfloat16 NumPy / CuPy dtypes."""
    return dt is not None and (dt is _F16 or (dt.itemsize == 2 and (dt.kind == "f" or dt.name == "bfloat16")))


def check_cupy_bfloat16():
    """ImportError unless the installed CuPy can hold bfloat16 arrays (CuPy 14+ with ml_dtypes)."""
    import cupy
    bfloat16()
    major = int(str(cupy.__version__).split(".")[0])
    if major < 14:
        raise ImportError(f"bfloat16 on the cuda backend needs CuPy 14 or newer with ml_dtypes (installed: CuPy "
                          f"{cupy.__version__}); install deepgpu[cuda13] and deepgpu[mixed], or use "
                          f"'mixed_float16'")


def _is_half(a) -> bool:
    return is_half_dtype(getattr(a, "dtype", None))


_FAST_MIN = 1 << 14  # smaller arrays: NumPy's call costs less than ours
_lib = []  # [CDLL or None], looked up once


def _c_kernels():
    if not _lib:
        try:
            from ..kernels import cpu
            _lib.append(cpu.library())
        except Exception:  # no compiler, a failed build: NumPy converts
            _lib.append(None)
    return _lib[0]


def convert(a, dtype):
    """``a.astype(dtype)`` for float16 <-> float32 with the C kernels' F16C conversion
    (NumPy's is element by element in software, 30x slower); NumPy otherwise."""
    if a.size >= _FAST_MIN and isinstance(a, np.ndarray) and a.flags.c_contiguous and \
            ((a.dtype == _F16 and dtype == _F32) or (a.dtype == _F32 and dtype == _F16)):
        lib = _c_kernels()
        if lib is not None:
            out = np.empty(a.shape, dtype)
            fn = lib.dg_f16_to_f32 if dtype == _F32 else lib.dg_f32_to_f16
            fn(a.ctypes.data, out.ctypes.data, a.size)
            return out
    if dtype.itemsize == 2:
        with np.errstate(over="ignore"):  # beyond float16's range rounds to inf, silently as on a GPU
            return a.astype(dtype)
    return a.astype(dtype)


def _up(a):
    return convert(a, _F32) if _is_half(a) else a


def _down(out, half):
    if isinstance(out, tuple):
        return tuple(_down(o, half) for o in out)
    if isinstance(out, list):
        return [_down(o, half) for o in out]
    dt = getattr(out, "dtype", None)
    if dt is not None and dt == _F32 and hasattr(out, "astype"):
        return convert(out, half)
    return out


def _upcasting(fn):
    @functools.wraps(fn)
    def run(self, *args, **kwargs):
        half = None
        for a in args:
            if _is_half(a):
                half = a.dtype
                break
        else:
            for a in kwargs.values():
                if _is_half(a):
                    half = a.dtype
                    break
        if half is None:
            return fn(self, *args, **kwargs)
        args = tuple(_up(a) for a in args)
        kwargs = {k: _up(v) for k, v in kwargs.items()}
        return _down(fn(self, *args, **kwargs), half)
    run._upcasts_half = True
    return run


# Primitives whose CPU forms are float32-only (C kernels, BLAS) or accumulate: they
# compute in float32 for 16-bit inputs and round their results.
UPCAST = (
    "matmul", "dense", "einsum", "sum", "mean", "sum_to_shape",
    "conv2d", "conv2d_bias_act", "conv2d_bias_act_grad", "conv2d_grad_filter_kept", "conv2d_grad_filter",
    "conv2d_grad_input", "depthwise_conv2d", "depthwise_conv2d_bias_act", "depthwise_conv2d_grad_input",
    "depthwise_conv2d_grad_filter",
    "conv3d", "conv3d_grad_input", "conv3d_grad_filter",
    "max_pool2d", "max_pool2d_grad", "avg_pool2d", "avg_pool2d_grad",
    "max_pool3d", "max_pool3d_grad", "avg_pool3d", "avg_pool3d_grad",
    "batch_norm_train", "batch_norm_grad", "layer_norm", "layer_norm_grad",
    "lstm_step", "lstm_step_grad", "gru_step", "gru_step_grad",
    "softmax", "log_softmax", "masked_softmax", "softmax_cross_entropy", "softmax_cross_entropy_grad",
    "sparse_softmax_cross_entropy", "sparse_softmax_cross_entropy_grad",
    "attention", "attention_grad", "image_transform", "image_transform_grad",
)


def _fast_cast(fn):
    @functools.wraps(fn)
    def cast(self, a, dtype):
        dt = getattr(a, "dtype", None)
        if dt is _F16 or (dt is not None and dt.itemsize == 4 and dt.kind == "f"):
            d = np.dtype(dtype) if dtype in ("float16", "float32") else None
            if d is not None and d != dt:
                return convert(a, d)
        return fn(self, a, dtype)
    cast._upcasts_half = True
    return cast


def upcast_half_primitives(cls, names=UPCAST):
    """Wrap ``cls``'s primitives ``names`` so 16-bit inputs compute in float32 (see the module
    docstring; float32 / float64 calls pass straight through), and its ``cast`` so float16 <->
    float32 goes through ``convert``. Returns ``cls``."""
    if not getattr(cls.cast, "_upcasts_half", False):
        cls.cast = _fast_cast(cls.cast)
    for n in names:
        fn = getattr(cls, n, None)
        if fn is not None and not getattr(fn, "_upcasts_half", False):
            setattr(cls, n, _upcasting(fn))
    return cls
