"""VGG16 (Simonyan and Zisserman, 2014) as ``keras.applications.vgg16``: the same layer names,
arguments and parameter count (138,357,544 with the top)."""
from __future__ import annotations

from .. import layers
from . import _common, imagenet_utils


def VGG16(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None, classes=1000,
          classifier_activation="softmax", name="vgg16"):
    """The VGG16 network (NHWC). ``weights``: None or a local file or TF.js folder (nothing is downloaded;
    "imagenet" raises, saying how to pass a file). ``input_shape`` (rows, cols, channels), at least 32x32;
    with ``include_top`` it must be static (default (224, 224, 3)). ``pooling`` ("avg" / "max") applies
    without the top. Raises ValueError for bad arguments, ModelFileError for weights that do not fit."""
    inputs, x, _ = _common.start("VGG16", weights, include_top, classes, input_tensor, input_shape, 224,
                                 pooling=pooling)
    for block, (filters, convs) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)], start=1):
        for i in range(1, convs + 1):
            x = layers.Conv2D(filters, (3, 3), activation="relu", padding="same", name=f"block{block}_conv{i}")(x)
        x = layers.MaxPooling2D((2, 2), strides=(2, 2), name=f"block{block}_pool")(x)
    if include_top:
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(4096, activation="relu", name="fc1")(x)
        x = layers.Dense(4096, activation="relu", name="fc2")(x)
        imagenet_utils.validate_activation(classifier_activation, weights)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    else:
        x = _common.pool(x, pooling)
    return _common.finish(inputs, x, name, weights)


def preprocess_input(x, data_format=None):
    """Keras's VGG16 preprocessing ("caffe"): RGB to BGR, minus the ImageNet channel means."""
    return imagenet_utils.preprocess_input(x, data_format=data_format, mode="caffe")
