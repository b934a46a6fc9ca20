"""The steps every application function shares: argument checks, the input, the top, the weights."""
from __future__ import annotations

from .. import layers
from . import imagenet_utils


def start(what, weights, include_top, classes, input_tensor, input_shape, default_size, min_size=32,
          pooling=None):
    """Check the common arguments; (graph input, tensor to build on, (rows, cols, channels))."""
    imagenet_utils.check_weights_arg(weights, what)
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"{what}: pooling must be None, 'avg' or 'max', got {pooling!r}")
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise ValueError(f"{what}: classes must be a positive int, got {classes!r}")
    if input_shape is None and input_tensor is not None:
        input_shape = tuple(input_tensor.shape[1:])
    shape = imagenet_utils.obtain_input_shape(input_shape, default_size, min_size, include_top, what)
    inputs, x = imagenet_utils.image_input(input_tensor, shape)
    return inputs, x, shape


def pool(x, pooling, avg_name=None, max_name=None):
    """include_top=False's optional global pooling."""
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name=avg_name)(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name=max_name)(x)
    return x


def finish(inputs, outputs, name, weights):
    from ..models import Model
    from ._weights import load_weights

    model = Model(inputs, outputs, name=name)
    if weights is not None:
        load_weights(model, weights)
    return model
