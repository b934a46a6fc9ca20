"""The GPU backend: CuPy for elementwise work and reductions.

The hot primitives (matmul, conv2d, pooling, optimizer updates) are the
places where our own kernels from ``deepgpu.kernels`` slot in behind the same
names; until a kernel covers a case the generic CuPy version in
``Backend`` runs.
"""
from __future__ import annotations

import numpy as np

from .base import Backend


class CupyBackend(Backend):
    """CUDA backend. Arrays are ``cupy.ndarray`` on the current device."""

    name = "cuda"

    def __init__(self):
        import cupy
        import cupyx

        self.xp = cupy
        self._cupyx = cupyx
        self._pool = cupy.get_default_memory_pool()
        self.device_name = cupy.cuda.runtime.getDeviceProperties(
            cupy.cuda.Device().id)["name"].decode()

    def is_array(self, a) -> bool:
        return isinstance(a, self.xp.ndarray)

    def asarray(self, data, dtype=None):
        if isinstance(data, self.xp.ndarray):
            return super().asarray(data, dtype)
        # Shape and dtype are settled on the host, then one upload.
        host = Backend.asarray(_HOST, data, dtype)
        return self.xp.asarray(host)

    def to_numpy(self, a) -> np.ndarray:
        return self.xp.asnumpy(a)

    def sync(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()

    def memory_info(self) -> dict:
        free, total = self.xp.cuda.runtime.memGetInfo()
        return {
            "pool_used_bytes": int(self._pool.used_bytes()),
            "pool_total_bytes": int(self._pool.total_bytes()),
            "device_free_bytes": int(free),
            "device_total_bytes": int(total),
            "device": self.device_name,
        }

    def permutation(self, n: int):
        return Backend.permutation(self, n)

    def dropout_mask(self, shape, rate: float, dtype="float32"):
        keep = self.xp.random.random_sample(shape, dtype=np.float32) >= rate
        return keep.astype(dtype) * np.dtype(dtype).type(1.0 / (1.0 - rate))

    def seed(self, n: int) -> None:
        super().seed(n)
        self.xp.random.seed(n)

    def _add_at(self, out, key, values):
        self._cupyx.scatter_add(out, key, values)


class _HostHelper(Backend):
    name = "host"
    xp = np


_HOST = _HostHelper()
