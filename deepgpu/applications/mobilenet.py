"""MobileNet (Howard et al., 2017) as ``keras.applications.mobilenet``: the same layer names,
arguments (``alpha``, ``depth_multiplier``, ``dropout``) and parameter count (4,253,864 with the top
at alpha 1)."""
from __future__ import annotations

from .. import layers
from . import _common, imagenet_utils


def _conv_block(x, filters, alpha, strides):
    x = layers.Conv2D(int(filters * alpha), (3, 3), padding="same", use_bias=False, strides=strides,
                      name="conv1")(x)
    x = layers.BatchNormalization(axis=-1, name="conv1_bn")(x)
    return layers.ReLU(6.0, name="conv1_relu")(x)


def _depthwise_conv_block(x, pointwise_filters, alpha, depth_multiplier, strides=(1, 1), block_id=1):
    if strides != (1, 1):
        x = layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"conv_pad_{block_id}")(x)
    x = layers.DepthwiseConv2D((3, 3), padding="same" if strides == (1, 1) else "valid",
                               depth_multiplier=depth_multiplier, strides=strides, use_bias=False,
                               name=f"conv_dw_{block_id}")(x)
    x = layers.BatchNormalization(axis=-1, name=f"conv_dw_{block_id}_bn")(x)
    x = layers.ReLU(6.0, name=f"conv_dw_{block_id}_relu")(x)
    x = layers.Conv2D(int(pointwise_filters * alpha), (1, 1), padding="same", use_bias=False, strides=(1, 1),
                      name=f"conv_pw_{block_id}")(x)
    x = layers.BatchNormalization(axis=-1, name=f"conv_pw_{block_id}_bn")(x)
    return layers.ReLU(6.0, name=f"conv_pw_{block_id}_relu")(x)


_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


def MobileNet(input_shape=None, alpha=1.0, depth_multiplier=1, dropout=1e-3, include_top=True, weights=None,
              input_tensor=None, pooling=None, classes=1000, classifier_activation="softmax", name=None):
    """The MobileNet network (NHWC). ``alpha`` scales every layer's filters; ``depth_multiplier`` the
    depthwise steps' outputs; ``dropout`` the rate before the top's 1x1 classifier. ``weights``: None
    or a local file or TF.js folder (nothing is downloaded). ``name`` defaults to Keras's
    ``mobilenet_{alpha:0.2f}_{rows}``. Raises ValueError for bad arguments, ModelFileError for
    weights that do not fit."""
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha <= 0:
        raise ValueError(f"MobileNet: alpha must be a positive number, got {alpha!r}")
    if isinstance(depth_multiplier, bool) or not isinstance(depth_multiplier, int) or depth_multiplier < 1:
        raise ValueError(f"MobileNet: depth_multiplier must be a positive int, got {depth_multiplier!r}")
    default = 224
    if input_shape is not None and len(input_shape) == 3 and input_shape[0] == input_shape[1] \
            and input_shape[0] in (128, 160, 192, 224):
        default = input_shape[0]
    inputs, x, shape = _common.start("MobileNet", weights, include_top, classes, input_tensor, input_shape, default,
                                     pooling=pooling)
    x = _conv_block(x, 32, alpha, strides=(2, 2))
    for block_id, (filters, stride) in enumerate(_BLOCKS, start=1):
        x = _depthwise_conv_block(x, filters, alpha, depth_multiplier, strides=(stride, stride), block_id=block_id)
    if include_top:
        x = layers.GlobalAveragePooling2D(keepdims=True)(x)
        x = layers.Dropout(dropout, name="dropout")(x)
        x = layers.Conv2D(classes, (1, 1), padding="same", name="conv_preds")(x)
        x = layers.Reshape((classes,), name="reshape_2")(x)
        imagenet_utils.validate_activation(classifier_activation, weights)
        x = layers.Activation(activation=classifier_activation, name="predictions")(x)
    else:
        x = _common.pool(x, pooling)
    if name is None:
        name = f"mobilenet_{alpha:0.2f}_{shape[0]}"
    return _common.finish(inputs, x, name, weights)


def preprocess_input(x, data_format=None):
    """Keras's MobileNet preprocessing ("tf"): pixel values from [0, 255] to [-1, 1]."""
    return imagenet_utils.preprocess_input(x, data_format=data_format, mode="tf")
