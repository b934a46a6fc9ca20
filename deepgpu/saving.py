"""Keras 3's ``keras.saving`` spellings.

    @dg.saving.register_keras_serializable(package="my_package")
    class MyModel(dg.Model): ...
    dg.saving.save_model(model, "m.keras")
    model = dg.saving.load_model("m.keras")
"""
from __future__ import annotations

from .models import load_model
from .registry import custom_objects as get_custom_objects, register_keras_serializable
from .registry import registered_name as get_registered_name

__all__ = ["register_keras_serializable", "get_registered_name", "get_registered_object", "get_custom_objects",
           "load_model", "save_model"]


def get_registered_object(name, custom_objects=None):
    """The class or function registered as ``name`` (or in ``custom_objects``), None if there is none."""
    if custom_objects and name in custom_objects:
        return custom_objects[name]
    return get_custom_objects().get(name)


def save_model(model, filepath, overwrite=True, **kwargs):
    """``model.save(filepath)``: the format follows the extension (.keras, .h5, .dgm)."""
    model.save(filepath, overwrite=overwrite, **kwargs)
