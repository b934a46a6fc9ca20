"""Keras's ``keras.utils`` helpers under the same names: ``set_random_seed``,
``to_categorical``, ``plot_model``, and ``clone_model`` (also ``deepgpu.models.clone_model``)."""
from __future__ import annotations

# Keras's keras.utils data helpers (issue 19): deepgpu/data/image_folder.py.
from .data.image_folder import (array_to_img, image_dataset_from_directory, img_to_array,  # noqa: F401
                                load_img, save_img)
from .data.py_dataset import PyDataset, Sequence  # noqa: F401
from .data.sequence import pad_sequences  # noqa: F401
from .data.text_folder import text_dataset_from_directory  # noqa: F401


def set_random_seed(seed: int) -> None:
    """Seed deepgpu's random draws (weights, dropout, shuffling, splits): ``deepgpu.set_seed``."""
    from . import set_seed
    set_seed(seed)


def to_categorical(y, num_classes=None, dtype="float32"):
    """One-hot rows for integer class labels (Keras's ``to_categorical``; see deepgpu.preprocessing)."""
    from .preprocessing import to_categorical as one_hot
    return one_hot(y, num_classes, dtype)


def plot_model(model, to_file="model.png", show_shapes=False, show_layer_names=True, rankdir="TB",
               expand_nested=False, dpi=200, **kwargs):
    """Draw ``model``'s layer graph to ``to_file`` (Keras's signature; deepgpu.plotting.plot_model):
    ``show_shapes``, ``show_layer_names``, ``rankdir`` ("TB", "LR", "BT", "RL"), ``expand_nested``
    and ``dpi`` as in Keras. Keras's other options (``show_dtype``, ``show_trainable``, ...) are
    accepted and not drawn. Returns what deepgpu.plotting.plot_model returns.
    """
    from .plotting import plot_model as draw
    return draw(model, to_file, show_shapes=show_shapes, dpi=dpi, show_layer_names=show_layer_names,
                rankdir=rankdir, expand_nested=expand_nested)


def clone_model(model, custom_objects=None):
    """A new model with ``model``'s architecture and freshly initialized weights (as Keras's
    ``clone_model``): built from its config, sharing nothing with it. Raises NotImplementedError
    for a subclassed model (no config)."""
    from .models.serialization import model_from_config
    from .registry import serialize_layer
    return model_from_config(serialize_layer(model), custom_objects)
