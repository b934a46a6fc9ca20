"""Keras-style layers: ``deepgpu.layers.Dense(10, activation="relu")`` and the rest.

All run on every backend, build their weights from the first input shape,
and round-trip through ``get_config()`` / ``from_config()``.
"""
import sys as _sys

from .. import registry as _registry
from .base import Input, InputLayer, InputSpec, Layer  # noqa: F401
from .conv import Conv1D, Conv1DTranspose, Conv2D, Conv2DTranspose, Convolution1D, Convolution1DTranspose  # noqa: F401
from .conv import DepthwiseConv1D, SeparableConv1D, SeparableConvolution1D  # noqa: F401
from .pooling import (  # noqa: F401
    AveragePooling1D, AvgPool1D, GlobalAveragePooling1D, GlobalAvgPool1D, GlobalMaxPool1D, GlobalMaxPooling1D,
    MaxPool1D, MaxPooling1D,
)
from .regularization import SpatialDropout1D  # noqa: F401
from .reshaping import Cropping1D, UpSampling1D, ZeroPadding1D  # noqa: F401
from .depthwise import DepthwiseConv2D, SeparableConv2D  # noqa: F401
from .embedding import Embedding, Masking  # noqa: F401
from .recurrent import (  # noqa: F401
    GRU, LSTM, RNN, Bidirectional, ConvLSTM2D, ConvLSTM2DCell, GRUCell, LSTMCell, SimpleRNN, SimpleRNNCell,
    StackedRNNCells, TimeDistributed,
)
from .text import TextVectorization  # noqa: F401
from .activation import ELU, LeakyReLU, ReLU, Softmax  # noqa: F401
from .attention import (  # noqa: F401
    AdditiveAttention, Attention, GroupedQueryAttention, GroupQueryAttention, MultiHeadAttention,
)
from .core import Activation, Dense, EinsumDense, Identity, Lambda  # noqa: F401
from .merge import (  # noqa: F401
    Add, Average, Concatenate, Dot, Maximum, Minimum, Multiply, Subtract, add, average, concatenate, dot, maximum,
    minimum, multiply, subtract,
)
from .normalization import (  # noqa: F401
    BatchNormalization, GroupNormalization, LayerNormalization, RMSNormalization, UnitNormalization,
)
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
SeparableConvolution2D = SeparableConv2D

# Configs name layers by class (aliases such as Convolution2D too): the
# registry finds them on this module, including classes set on it later.
_registry.register_namespace(_sys.modules[__name__])

__all__ = [
    "Layer", "InputLayer", "Input", "InputSpec",
    "Dense", "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "Dropout", "Flatten", "Reshape",
    "Permute", "RepeatVector", "Lambda",
    "Conv2D", "Conv2DTranspose", "Convolution2D", "Convolution2DTranspose",
    "DepthwiseConv2D", "SeparableConv2D", "SeparableConvolution2D",
    "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D",
    "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D", "GlobalMaxPool2D",
    "BatchNormalization", "LayerNormalization", "RMSNormalization", "GroupNormalization", "UnitNormalization",
    "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "add", "concatenate",
    "Dot", "dot", "subtract", "multiply", "average", "maximum", "minimum", "EinsumDense", "Identity",
    "MultiHeadAttention", "GroupedQueryAttention", "GroupQueryAttention", "Attention", "AdditiveAttention",
    "ZeroPadding2D", "UpSampling2D", "Cropping2D",
    "Conv1D", "Conv1DTranspose", "Convolution1D", "Convolution1DTranspose", "MaxPooling1D", "AveragePooling1D",
    "GlobalMaxPooling1D", "GlobalAveragePooling1D", "MaxPool1D", "AvgPool1D", "GlobalMaxPool1D", "GlobalAvgPool1D",
    "UpSampling1D", "ZeroPadding1D", "Cropping1D", "SpatialDropout1D",
    "Embedding", "Masking",
    "DepthwiseConv1D", "SeparableConv1D", "SeparableConvolution1D",
    "RNN", "SimpleRNNCell", "LSTMCell", "GRUCell", "StackedRNNCells", "SimpleRNN", "LSTM", "GRU",
    "Bidirectional", "TimeDistributed", "ConvLSTM2D", "ConvLSTM2DCell",
    "TextVectorization",
]

# Noise, activation and preprocessing layers (issue 17).
from .activation import PReLU, ThresholdedReLU  # noqa: E402,F401
from .noise import AlphaDropout, GaussianDropout, GaussianNoise  # noqa: E402,F401
from .regularization import ActivityRegularization, SpatialDropout2D, SpatialDropout3D  # noqa: E402,F401
from .preprocessing import (  # noqa: E402,F401
    CategoryEncoding, CenterCrop, Discretization, Normalization, RandomBrightness, RandomContrast, RandomCrop,
    RandomFlip, RandomHeight, RandomRotation, RandomTranslation, RandomWidth, RandomZoom, Rescaling, Resizing,
)

__all__ += [
    "PReLU", "ThresholdedReLU", "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization",
    "SpatialDropout2D", "SpatialDropout3D", "Rescaling", "Resizing", "CenterCrop", "Normalization",
    "CategoryEncoding", "Discretization", "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation",
    "RandomContrast", "RandomBrightness", "RandomCrop", "RandomWidth", "RandomHeight",
]

# 3-D (volumetric) layers (issue 17).
from .volumetric import (  # noqa: E402,F401
    AveragePooling3D, AvgPool3D, Conv3D, Conv3DTranspose, Convolution3D, Convolution3DTranspose, Cropping3D,
    GlobalAveragePooling3D, GlobalAvgPool3D, GlobalMaxPool3D, GlobalMaxPooling3D, MaxPool3D, MaxPooling3D,
    UpSampling3D, ZeroPadding3D,
)

__all__ += [
    "Conv3D", "Conv3DTranspose", "Convolution3D", "Convolution3DTranspose", "MaxPooling3D", "AveragePooling3D",
    "MaxPool3D", "AvgPool3D", "GlobalMaxPooling3D", "GlobalAveragePooling3D", "GlobalMaxPool3D", "GlobalAvgPool3D",
    "UpSampling3D", "ZeroPadding3D", "Cropping3D",
]
