"""Models: Sequential, the functional Model, training, summary and (de)serialization."""
from .model import Model  # noqa: F401
from .sequential import Sequential  # noqa: F401
from .serialization import model_from_config, model_from_json, register_serializable  # noqa: F401
from .. import registry as _registry

Functional = Model

# Configs name models by class; the registry below the layers cannot import these.
_registry.register_builtin("Sequential", Sequential)
_registry.register_builtin("Model", Model)
_registry.register_builtin("Functional", Model)


def load_model(filepath, custom_objects=None, compile=True):
    """Load a model written by ``model.save``: deepgpu's ``.dgm`` (architecture, weights, compile
    settings, optimizer state), a Keras 3 ``.keras`` or a legacy Keras ``.h5`` file (uncompiled),
    told apart by content. Raises FileNotFoundError, or ModelFileError for a bad file."""
    from ..io import by_name
    return by_name.load_model(filepath, custom_objects=custom_objects, compile=compile)


def clone_model(model, custom_objects=None):
    """A new model with ``model``'s architecture and fresh weights (Keras's ``clone_model``)."""
    from ..utils import clone_model as clone
    return clone(model, custom_objects)
