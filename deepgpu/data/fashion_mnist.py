"""Fashion-MNIST (Zalando): 60,000 + 10,000 grayscale 28x28 images of 10 kinds of clothing.

``load_data(path=None)`` returns ``(x_train, y_train), (x_test, y_test)``
like ``keras.datasets.fashion_mnist``: x uint8 [n, 28, 28] (0..255), y uint8
[n] (0..9, names in ``CLASS_NAMES``). No download: the four IDX files
(``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``; gzipped or
not) are looked for in

1. ``path`` (or ``path/fashion-mnist``) when given, and nowhere else;
2. otherwise ``$DEEPGPU_DATA`` and ``$DEEPGPU_DATA/fashion-mnist``,
   ``/usr/share/datasets/fashion-mnist`` (Debian/Ubuntu package
   ``dataset-fashion-mnist``), and Keras's cache ``~/.keras/datasets/fashion-mnist``.
"""
from ._locate import load_mnist_like

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot"]
SYSTEM_DIRS = ["/usr/share/datasets/fashion-mnist"]
HOW_TO_GET = (
    "Get them with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu; installs into "
    "/usr/share/datasets/fashion-mnist), or download the four .gz files from "
    "https://github.com/zalandoresearch/fashion-mnist (folder data/fashion) and pass "
    "path=THAT_FOLDER (deepgpu train --data-dir THAT_FOLDER) or set DEEPGPU_DATA=THAT_FOLDER.")


def load_data(path=None):
    """``(x_train, y_train), (x_test, y_test)``: uint8 [60000, 28, 28], uint8 [60000],
    uint8 [10000, 28, 28], uint8 [10000]. FileNotFoundError (listing every folder
    looked in and how to get the files) when they are nowhere."""
    return load_mnist_like("Fashion-MNIST", path, "fashion-mnist", SYSTEM_DIRS, HOW_TO_GET)
