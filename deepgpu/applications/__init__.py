"""Ready-made networks with Keras's names, arguments, layer names and parameter counts.

``VGG16``, ``ResNet50``, ``MobileNet``, ``MobileNetV2``; each module has Keras's
``preprocess_input``. Pretrained weights come only from a local file (``weights=`` a Keras
``.h5`` / ``.keras`` / ``.weights.h5`` file or a TF.js folder): nothing is downloaded.
"""
from . import imagenet_utils, mobilenet, mobilenet_v2, resnet, vgg16  # noqa: F401
from .mobilenet import MobileNet  # noqa: F401
from .mobilenet_v2 import MobileNetV2  # noqa: F401
from .resnet import ResNet50  # noqa: F401
from .vgg16 import VGG16  # noqa: F401

resnet50 = resnet  # keras.applications.resnet50

__all__ = ["VGG16", "ResNet50", "MobileNet", "MobileNetV2", "vgg16", "resnet", "resnet50", "mobilenet",
           "mobilenet_v2", "imagenet_utils"]
