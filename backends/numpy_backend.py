"""The CPU backend: NumPy, with BLAS doing the heavy lifting."""
from __future__ import annotations

import numpy as np

from .base import Backend


class NumpyBackend(Backend):
    """CPU backend. Arrays are ``numpy.ndarray``."""

    name = "cpu"
    xp = np

    def is_array(self, a) -> bool:
        return isinstance(a, np.ndarray)

    def memory_info(self) -> dict:
        return {}
