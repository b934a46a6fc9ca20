"""TF.js weight quantization, as ``tensorflowjs_converter --quantize_{uint8,uint16,float16}`` writes it.

A quantized manifest entry keeps its ``dtype`` (the weight's own, float32) and adds
``quantization``: ``{"dtype": "uint8" | "uint16", "scale": s, "min": m}`` (stored
integers q, value = q * s + m, one affine map per tensor) or ``{"dtype": "float16"}``
(IEEE half floats). Decoding follows tfjs-core's ``decodeWeights``: the affine map in
double precision, rounded to float32 (int32 weights: rounded to the nearest integer).
Encoding follows the converter: the per-tensor range [min, max] is nudged so that 0 is
a stored value whenever the range covers it, and a constant tensor stores zeros with
scale 1 and min the constant.
"""
import numpy as np

KINDS = ("uint8", "uint16", "float16")
_STORED = {"uint8": "<u1", "uint16": "<u2", "float16": "<f2"}


def check(kind) -> None:
    """Raise ValueError unless ``kind`` is None or one of KINDS."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"quantization must be None, 'uint8', 'uint16' or 'float16', got {kind!r}")


def stored_dtype(kind) -> str:
    return _STORED[kind]


def encode(a, kind):
    """(little-endian bytes, manifest ``quantization`` dict) of float32 array ``a`` quantized as ``kind``."""
    a = np.asarray(a, dtype=np.float32)
    if kind == "float16":
        return a.astype("<f2").tobytes(), {"dtype": "float16"}
    top = float(np.iinfo(np.dtype(_STORED[kind])).max)
    if a.size == 0:
        return b"", {"dtype": kind, "scale": 1.0, "min": 0.0}
    lo, hi = float(a.min()), float(a.max())
    if lo == hi:
        return np.zeros(a.shape, _STORED[kind]).tobytes(), {"dtype": kind, "scale": 1.0, "min": lo}
    scale = (hi - lo) / top
    if lo <= 0.0 <= hi:
        # Nudge the range so that 0 is exactly representable (zero padding, ReLU outputs, zero biases).
        lo = -float(np.round(-lo / scale)) * scale
        hi = top * scale + lo
    q = np.round((np.clip(a.astype(np.float64), lo, hi) - lo) / scale)
    return q.astype(_STORED[kind]).tobytes(), {"dtype": kind, "scale": scale, "min": lo}


def decode(raw, q, dtype):
    """The weight of numpy ``dtype`` ("float32" / "int32") that stored array ``raw`` quantized by ``q`` encodes."""
    if q["dtype"] == "float16":
        return raw.astype(np.float32)
    v = raw.astype(np.float64) * float(q["scale"]) + float(q["min"])
    if dtype == "int32":
        return np.round(v).astype(np.int32)
    return v.astype(np.float32)


def layout_error(q, dtype):
    """Why a manifest ``quantization`` value ``q`` on a weight of ``dtype`` cannot be read, or None."""
    if not isinstance(q, dict):
        return f"its quantization must be an object {{dtype, scale, min}}, got {q!r:.200}"
    kind = q.get("dtype")
    if kind not in KINDS:
        return f"it is quantized as {kind!r}; only uint8, uint16 and float16 are supported"
    if kind == "float16":
        if dtype != "float32":
            return f"float16 quantization is only for float32 weights, this one is {dtype}"
        return None
    if dtype not in ("float32", "int32"):
        return f"{kind} quantization is only for float32 and int32 weights, this one is {dtype}"
    for k in ("scale", "min"):
        v = q.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            return f"its {kind} quantization needs finite numbers scale and min, got {q!r:.200}"
    return None
