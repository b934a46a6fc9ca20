"""MNIST: 60,000 + 10,000 grayscale 28x28 images of handwritten digits.

``load_data(path=None)`` returns ``(x_train, y_train), (x_test, y_test)``
like ``keras.datasets.mnist``: x uint8 [n, 28, 28] (0..255), y uint8 [n]
(0..9). No download: the four IDX files (``train-images-idx3-ubyte.gz``,
``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``,
``t10k-labels-idx1-ubyte.gz``; gzipped or not) or Keras's ``mnist.npz`` are
looked for in

1. ``path`` (or ``path/mnist``) when given, and nowhere else;
2. otherwise ``$DEEPGPU_DATA`` and ``$DEEPGPU_DATA/mnist``, and Keras's
   cache ``~/.keras/datasets`` (``mnist.npz``) / ``~/.keras/datasets/mnist``.

Debian has no MNIST package (only ``dataset-fashion-mnist``).
"""
from ._locate import load_mnist_like

SYSTEM_DIRS: list = []
HOW_TO_GET = (
    "Download the four .gz files from https://storage.googleapis.com/cvdf-datasets/mnist/ "
    "(e.g. .../train-images-idx3-ubyte.gz) into one folder and pass path=THAT_FOLDER "
    "(deepgpu train --data-dir THAT_FOLDER) or set DEEPGPU_DATA=THAT_FOLDER; Keras's "
    "mnist.npz in that folder works too. (Debian packages Fashion-MNIST, not MNIST: "
    "`sudo apt-get install dataset-fashion-mnist`.)")


def load_data(path=None):
    """``(x_train, y_train), (x_test, y_test)``: uint8 [60000, 28, 28], uint8 [60000],
    uint8 [10000, 28, 28], uint8 [10000]. FileNotFoundError (listing every folder
    looked in and how to get the files) when they are nowhere."""
    return load_mnist_like("MNIST", path, "mnist", SYSTEM_DIRS, HOW_TO_GET, npz_name="mnist.npz")
