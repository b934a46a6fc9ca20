"""``deepgpu.datasets``: Keras-style dataset loaders (no downloads).

    from deepgpu.datasets import fashion_mnist, digits
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    (x_train, y_train), (x_test, y_test) = digits.load_data()   # 8x8, values 0..16

``load_idx(path)`` reads any IDX file (gzipped or not). See ``deepgpu.data``.
"""
from .data import IDXError, digits, fashion_mnist, load_idx, mnist, save_idx  # noqa: F401
from .data import fortunes, seattle_weather  # noqa: F401  (Debian's fortunes; vega_datasets' CSV)

__all__ = ["load_idx", "save_idx", "IDXError", "fashion_mnist", "mnist", "digits", "fortunes", "seattle_weather"]
