"""Data: ``Dataset`` (tf.data's pipeline, deepgpu/data/dataset.py), the IDX reader,
Fashion-MNIST, MNIST, scikit-learn's digits, and preprocessing.

Users reach the loaders as ``deepgpu.datasets`` (``load_idx``,
``fashion_mnist``, ``mnist``, ``digits``; each dataset module has
``load_data()`` returning ``(x_train, y_train), (x_test, y_test)`` as NumPy
arrays, as Keras does) and the helpers as ``deepgpu.preprocessing``. This
folder is the host I/O boundary, so it may use NumPy directly.
"""
from . import digits, fashion_mnist, mnist  # noqa: F401
from .dataset import (AUTOTUNE, INFINITE_CARDINALITY, UNKNOWN_CARDINALITY, Dataset, TensorSpec,  # noqa: F401
                      array, generator, zip)
from .csv_reader import CSVError, csv, make_csv_dataset  # noqa: F401
from .idx import IDXError, load_idx, save_idx  # noqa: F401
from .image_folder import UnreadableImageError, image_dataset_from_directory  # noqa: F401
from .decode import decode_image, read_file  # noqa: F401

__all__ = ["load_idx", "save_idx", "IDXError", "fashion_mnist", "mnist", "digits",
           "Dataset", "TensorSpec", "AUTOTUNE", "INFINITE_CARDINALITY", "UNKNOWN_CARDINALITY",
           "array", "generator", "zip", "csv", "make_csv_dataset", "CSVError",
           "image_dataset_from_directory", "UnreadableImageError", "decode_image", "read_file"]
