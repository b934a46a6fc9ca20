"""``deepgpu.preprocessing``: labels, z-score normalisation, splits, batches, image resizing.

Host-side helpers work on NumPy arrays at the boundary, before data goes to
a backend: ``to_categorical``, ``Normalizer``, ``train_test_split``,
``batches``. The image ops ``resize_bilinear`` and ``resize_nearest_neighbor``
work on deepgpu Tensors on any backend and are differentiable (built from
deepgpu ops: two small matmuls, or two gathers). The code lives in
``deepgpu/data/`` (the host I/O boundary, where NumPy is allowed).
"""
from .data.image import resize_bilinear, resize_nearest_neighbor  # noqa: F401
from .data.preprocessing import Normalizer, batches, to_categorical, train_test_split  # noqa: F401
from .data import sequence  # noqa: F401
from .data.sequence import pad_sequences  # noqa: F401
from .data.text_folder import text_dataset_from_directory  # noqa: F401

# tf.keras's ``preprocessing.sequence.pad_sequences`` path: importable as a submodule too
# (``from deepgpu.preprocessing.sequence import pad_sequences``), as os.path is.
import sys as _sys  # noqa: E402

_sys.modules[__name__ + ".sequence"] = sequence

__all__ = ["to_categorical", "Normalizer", "train_test_split", "batches", "resize_bilinear",
           "resize_nearest_neighbor", "sequence", "pad_sequences", "text_dataset_from_directory"]
