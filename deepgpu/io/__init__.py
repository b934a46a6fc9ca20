"""Saving and loading models: deepgpu's own zip format (``native``), Keras files (``keras``),
the TF.js Layers format (``tfjs``) and ONNX export (``onnx``)."""
from .native import ModelFileError, load_model, load_weights, save_model, save_weights  # noqa: F401
from .keras import KerasFileError, load_keras, save_keras  # noqa: F401
from .onnx import export_onnx  # noqa: F401
from .tfjs import load_tfjs, save_tfjs  # noqa: F401

__all__ = ["ModelFileError", "load_model", "load_weights", "save_model", "save_weights",
           "KerasFileError", "load_keras", "save_keras", "export_onnx",
           "load_tfjs", "save_tfjs"]
