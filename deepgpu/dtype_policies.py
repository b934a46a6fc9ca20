"""Keras 3's ``keras.dtype_policies`` names: DTypePolicy, get, serialize, deserialize (see deepgpu.mixed_precision)."""
from .mixed_precision import DTypePolicy, FloatDTypePolicy, deserialize, get, serialize  # noqa: F401

__all__ = ["DTypePolicy", "FloatDTypePolicy", "get", "serialize", "deserialize"]
