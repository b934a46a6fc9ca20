"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 images, no download.

``load_data(test_size=0.25, seed=0)`` returns ``(x_train, y_train), (x_test,
y_test)`` in the MNIST loaders' layout and dtypes: x uint8 [n, 8, 8] with
values 0..16 (``MAX_VALUE``; scale with ``x / 16.0``, not 255), y uint8 [n]
(0..9). The split is stratified (each digit keeps its share in both parts)
and reproducible: the same ``seed`` gives the same split. With the defaults:
1,347 training and 450 test images.

Needs scikit-learn (``pip install "deepgpu[data]"``).
"""
from __future__ import annotations

import numpy as np

NUM_SAMPLES = 1797
MAX_VALUE = 16


def _load_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "deepgpu.datasets.digits needs scikit-learn, which holds the digits images; install "
            "the optional extra with: pip install \"deepgpu[data]\" (or pip install scikit-learn)"
        ) from None
    return load_digits()


def load_all():
    """All 1,797 images and labels: x uint8 [1797, 8, 8] (0..16), y uint8 [1797]."""
    d = _load_digits()
    return d.images.astype(np.uint8), d.target.astype(np.uint8)


def load_data(test_size=0.25, seed=0):
    """``(x_train, y_train), (x_test, y_test)``: uint8 [n, 8, 8] images (0..16) and
    uint8 [n] labels, split stratified by digit with ``seed``. ``test_size``: a
    fraction in (0, 1) or a number of test images."""
    from .preprocessing import train_test_split

    x, y = load_all()
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, seed=seed, stratify=y)
    return (x_train, y_train), (x_test, y_test)
