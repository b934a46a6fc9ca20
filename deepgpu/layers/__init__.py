"""Keras-style layers: ``deepgpu.layers.Dense(10, activation="relu")`` and the rest.

All run on every backend, build their weights from the first input shape,
and round-trip through ``get_config()`` / ``from_config()``.
"""
import sys as _sys

from .. import registry as _registry
from .base import Input, InputLayer, InputSpec, Layer  # noqa: F401
from .conv import Conv2D, Conv2DTranspose  # noqa: F401
from .activation import ELU, LeakyReLU, ReLU, Softmax  # noqa: F401
from .core import Activation, Dense, Lambda  # noqa: F401
from .merge import (  # noqa: F401
    Add, Average, Concatenate, Maximum, Minimum, Multiply, Subtract, add, concatenate,
)
from .normalization import BatchNormalization  # noqa: F401
from .pooling import (  # noqa: F401
    AveragePooling2D, AvgPool2D, GlobalAveragePooling2D, GlobalAvgPool2D, GlobalMaxPool2D,
    GlobalMaxPooling2D, MaxPool2D, MaxPooling2D,
)
from .regularization import Dropout  # noqa: F401
from .reshaping import (  # noqa: F401
    Cropping2D, Flatten, Permute, RepeatVector, Reshape, UpSampling2D, ZeroPadding2D,
)

Convolution2D = Conv2D
Convolution2DTranspose = Conv2DTranspose
Conv2DTransposed = Conv2DTranspose

# Configs name layers by class (aliases such as Convolution2D too): the
# registry finds them on this module, including classes set on it later.
_registry.register_namespace(_sys.modules[__name__])

__all__ = [
    "Layer", "InputLayer", "Input", "InputSpec",
    "Dense", "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "Dropout", "Flatten", "Reshape",
    "Permute", "RepeatVector", "Lambda",
    "Conv2D", "Conv2DTranspose", "Convolution2D", "Convolution2DTranspose",
    "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D",
    "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D", "GlobalMaxPool2D",
    "BatchNormalization",
    "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "add", "concatenate",
    "ZeroPadding2D", "UpSampling2D", "Cropping2D",
]
