"""What the ready-made networks share, as in ``keras.applications.imagenet_utils``: the input-shape
rules, the padding of a strided depthwise step, ``preprocess_input`` and loading weights from a
local file (nothing is ever downloaded)."""
from __future__ import annotations

import os
import warnings

from .. import activations, ops
from ..tensor import Tensor

_NO_DOWNLOAD = (
    "deepgpu downloads nothing: weights='imagenet' is not available. Pass weights= the path of a local "
    "file instead: a Keras .h5 weights or model file (e.g. the {what} file Keras keeps in ~/.keras/models/), "
    "a Keras 3 .keras or .weights.h5 file, or a TF.js Layers model folder (its model.json and shards)")


def check_weights_arg(weights, what):
    """ValueError unless ``weights`` is None or an existing local path; 'imagenet' says how to pass a file."""
    if weights is None:
        return
    if isinstance(weights, str) and weights.lower() == "imagenet":
        raise ValueError(_NO_DOWNLOAD.format(what=what))
    if not isinstance(weights, (str, os.PathLike)) or not os.path.exists(weights):
        raise ValueError(f"The `weights` argument should be None (random initialization) or the path of a "
                         f"local weights file or TF.js folder; received weights={weights!r}, which does not exist")


def obtain_input_shape(input_shape, default_size, min_size, require_flatten, what):
    """The (rows, cols, channels) input shape, as Keras's ``obtain_input_shape`` for channels_last."""
    if input_shape is not None:
        try:
            input_shape = tuple(None if d is None else int(d) for d in input_shape)
        except (TypeError, ValueError):
            raise ValueError(f"{what}: `input_shape` must be a tuple of three integers, got {input_shape!r}") from None
        if len(input_shape) != 3:
            raise ValueError(f"{what}: `input_shape` must be a tuple of three integers (rows, cols, channels), "
                             f"got {input_shape!r}")
        if input_shape[-1] not in (1, 3):
            warnings.warn(f"This model usually expects 1 or 3 input channels. However, it was passed an "
                          f"input_shape with {input_shape[-1]} input channels.", stacklevel=3)
        if any(d is not None and d < min_size for d in input_shape[:2]):
            raise ValueError(f"{what}: input size must be at least {min_size}x{min_size}; received "
                             f"input_shape={input_shape}")
    else:
        input_shape = (default_size, default_size, 3) if require_flatten else (None, None, 3)
    if require_flatten and None in input_shape:
        raise ValueError(f"{what}: if `include_top` is True, you should specify a static `input_shape`; "
                         f"received input_shape={input_shape}")
    return input_shape


def validate_activation(classifier_activation, weights):
    """With pretrained weights only None and softmax are allowed on the top layer (as Keras)."""
    if weights is None:
        return
    fn = activations.get(classifier_activation)
    if fn not in (activations.get("softmax"), activations.get(None)):
        raise ValueError("Only `None` and `softmax` activations are allowed for the `classifier_activation` "
                         "argument when using pretrained weights, with `include_top=True`; received "
                         f"classifier_activation={classifier_activation!r}")


def correct_pad(shape, kernel_size):
    """The ZeroPadding2D padding before a stride-2 'valid' convolution, from the input's (H, W, C) shape."""
    if isinstance(kernel_size, int):
        kernel_size = (kernel_size, kernel_size)
    adjust = (1, 1) if shape[0] is None else (1 - shape[0] % 2, 1 - shape[1] % 2)
    correct = (kernel_size[0] // 2, kernel_size[1] // 2)
    return ((correct[0] - adjust[0], correct[0]), (correct[1] - adjust[1], correct[1]))


def image_input(input_tensor, input_shape):
    """(the graph's input tensor, the tensor to build on) for ``input_tensor`` / ``input_shape``."""
    from ..layers.base import Input, SymbolicTensor

    if input_tensor is None:
        x = Input(shape=input_shape)
        return x, x
    if not isinstance(input_tensor, SymbolicTensor):
        raise ValueError(f"input_tensor must be a symbolic tensor (deepgpu.Input(...) or a layer's output in a "
                         f"functional graph); received {type(input_tensor).__name__}")
    if input_shape is not None and tuple(input_tensor.shape[1:]) != tuple(input_shape):
        raise ValueError(f"input_tensor has shape {input_tensor.shape[1:]} (without the batch axis), which "
                         f"differs from input_shape {tuple(input_shape)}")
    sources = _source_inputs(input_tensor)
    return (sources[0] if len(sources) == 1 else sources), input_tensor


def _source_inputs(t):
    from ..layers.base import InputLayer

    out, todo, seen = [], [t], set()
    while todo:
        s = todo.pop()
        if id(s) in seen:
            continue
        seen.add(id(s))
        if s.node is None or isinstance(s.node.layer, InputLayer):
            out.append(s)
        else:
            todo.extend(s.node.inputs)
    return out


# --------------------------------------------------------------------- preprocess_input
_CAFFE_MEAN = (103.939, 116.779, 123.68)
_TORCH_MEAN, _TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def preprocess_input(x, data_format=None, mode="caffe"):
    """Keras's ImageNet preprocessing of RGB images [..., H, W, 3] with values in [0, 255].

    mode "caffe": RGB to BGR, then minus the ImageNet mean per channel (VGG16, ResNet50);
    "tf": scaled to [-1, 1] (MobileNet, MobileNetV2); "torch": to [0, 1], then normalized per
    channel. A NumPy array or list gives a new float32 NumPy array (the input is not changed); a
    deepgpu Tensor gives a Tensor. Raises ValueError for another mode or data_format.
    """
    if mode not in ("caffe", "tf", "torch"):
        raise ValueError(f"preprocess_input: mode must be 'caffe', 'tf' or 'torch', got {mode!r}")
    if data_format not in (None, "channels_last"):
        raise ValueError(f"preprocess_input: deepgpu images are channels_last, got data_format={data_format!r}")
    if isinstance(x, Tensor):
        if not x.dtype.startswith("float"):
            x = ops.cast(x, "float32")
        if mode == "tf":
            return x / 127.5 - 1.0
        if mode == "torch":
            return (x / 255.0 - _const(x, _TORCH_MEAN)) / _const(x, _TORCH_STD)
        bgr = ops.concat([x[..., 2:3], x[..., 1:2], x[..., 0:1]], axis=-1)
        return bgr - _const(x, _CAFFE_MEAN)
    import numpy as np  # NumPy images in, NumPy images out (host data, as Keras returns them)

    a = np.asarray(x)
    a = a.astype(a.dtype if a.dtype.kind == "f" else np.float32, copy=True)
    if mode == "tf":
        a /= 127.5
        a -= 1.0
        return a
    if mode == "torch":
        a /= 255.0
        a -= np.asarray(_TORCH_MEAN, a.dtype)
        a /= np.asarray(_TORCH_STD, a.dtype)
        return a
    a = a[..., ::-1].copy()
    a -= np.asarray(_CAFFE_MEAN, a.dtype)
    return a


def _const(like, values):
    from ..tensor import tensor
    return tensor(list(values), like.dtype)

