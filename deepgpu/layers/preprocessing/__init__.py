"""Preprocessing layers that live in the model and save with it (one module per family):
image (Rescaling, Resizing, CenterCrop), numerical (Normalization, Discretization),
categorical (CategoryEncoding), augmentation (Random*: active only in training)."""
from .augmentation import (  # noqa: F401
    RandomBrightness, RandomContrast, RandomCrop, RandomFlip, RandomHeight, RandomRotation, RandomTranslation,
    RandomWidth, RandomZoom,
)
from .categorical import CategoryEncoding  # noqa: F401
from .image import CenterCrop, Rescaling, Resizing  # noqa: F401
from .numerical import Discretization, Normalization  # noqa: F401
