"""Which file format a path asks for, by its extension, as Keras 3 decides it.

``model.save`` / ``model.save_weights`` / ``model.load_weights`` and
``deepgpu.models.load_model`` go through here, so ``model.save("m.keras")``
writes what Keras reads, not deepgpu's own zip under Keras's name.
"""
from __future__ import annotations

import os
import zipfile

MODEL_EXTENSIONS = {".dgm": "deepgpu's own (architecture, weights, compile settings, optimizer state)",
                    ".keras": "Keras 3 (architecture and weights; keras.saving.load_model reads it)",
                    ".h5": "Keras's legacy HDF5 (architecture and weights)", ".hdf5": "the same as .h5"}
WEIGHTS_EXTENSIONS = {".dgw": "deepgpu's own", ".weights.h5": "Keras 3 (keras.Model.load_weights reads it)"}


def _ext(path, choices) -> str:
    name = os.fspath(path).lower()
    return next((e for e in sorted(choices, key=len, reverse=True) if name.endswith(e)), "")


def _format(path, choices, what, lead) -> str:
    ext = _ext(path, choices)
    if ext:
        return ext
    raise ValueError(f"{lead}{os.fspath(path)!r}: the extension names no {what} format; use "
                     + " or ".join(f"{e} ({desc})" for e, desc in choices.items()))


def model_format(path) -> str:
    """'.dgm', '.keras', '.h5' or '.hdf5' for ``path``; ValueError naming the choices for any other."""
    return _format(path, MODEL_EXTENSIONS, "model", "cannot save ")


def weights_format(path) -> str:
    """'.dgw' or '.weights.h5' for ``path``; ValueError naming the choices for any other extension."""
    return _format(path, WEIGHTS_EXTENSIONS, "weights", "")


def save_model(model, path, overwrite=True, include_optimizer=True) -> None:
    """``model.save``: .dgm (deepgpu), .keras (Keras 3) or .h5 (legacy Keras), by the extension."""
    fmt = model_format(path)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{os.fspath(path)!r} exists and overwrite=False")
    if fmt == ".keras":
        from .keras import save_keras
        save_keras(model, path)
    elif fmt in (".h5", ".hdf5"):
        from .keras import save_keras_h5
        save_keras_h5(model, path)
    else:
        from .native import save_model as save_native
        save_native(model, path, include_optimizer=include_optimizer)


def save_weights(model, path, overwrite=True) -> None:
    """``model.save_weights``: .dgw (deepgpu) or .weights.h5 (Keras 3), by the extension."""
    fmt = weights_format(path)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{os.fspath(path)!r} exists and overwrite=False")
    if fmt == ".weights.h5" and _subclassed(model):
        from . import keras_subclassed
        keras_subclassed.save(model, path)
    elif fmt == ".weights.h5":
        from .keras import save_keras_weights
        save_keras_weights(model, path)
    else:
        from .native import save_weights as save_native
        save_native(model, path)


def load_weights(model, path) -> None:
    """``model.load_weights``: a Keras 3 .weights.h5 file by its name, else deepgpu's own file
    (.dgw, or the weights of a .dgm). Nothing is assigned unless everything fits."""
    if os.fspath(path).lower().endswith(".weights.h5") and _subclassed(model):
        from . import keras_subclassed
        keras_subclassed.load(model, path)
    elif os.fspath(path).lower().endswith(".weights.h5"):
        from .keras import load_keras_weights
        load_keras_weights(model, path)
    else:
        from .native import load_weights as load_native
        load_native(model, path)


def _subclassed(model) -> bool:
    """A Model subclass with its own call(): Keras lays its weights out by attribute."""
    check = getattr(model, "_subclassed", None)
    return bool(check()) if callable(check) else False


def load_model(path, custom_objects=None, compile=True):
    """``deepgpu.models.load_model``: deepgpu's .dgm, a Keras 3 .keras or a legacy Keras .h5 file,
    told apart by content (a deepgpu zip holds ``deepgpu.json``)."""
    from . import keras, native

    p = os.fspath(path)
    if os.path.isfile(p):
        with open(p, "rb") as fh:
            head = fh.read(8)
        keras_file = head == keras.HDF5_MAGIC
        if not keras_file and zipfile.is_zipfile(p):
            try:
                with zipfile.ZipFile(p) as z:
                    names = set(z.namelist())
            except (zipfile.BadZipFile, OSError, ValueError):
                names = set()  # the native loader says what is wrong with it
            keras_file = "deepgpu.json" not in names and "config.json" in names
        if keras_file:
            return keras.load_keras(p, custom_objects=custom_objects)
    return native.load_model(p, custom_objects=custom_objects, compile=compile)
