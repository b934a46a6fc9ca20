"""The GPU backend: CuPy for elementwise work and reductions.

The hot primitives (matmul, dense, conv2d and its gradients, pooling,
optimizer updates, softmax cross-entropy, dropout, relu and bias gradients)
can run on our own kernels from ``deepgpu.kernels`` behind the same names.
Which path runs is chosen by ``$DEEPGPU_KERNELS`` when the backend is made,
or later by setting ``backend.kernels``:

* ``"cupy"`` (the default): CuPy's own routines (cuBLAS, its elementwise
  kernels), exactly the generic ``Backend`` code.
* ``"custom"``: our kernels wherever they take the case (float32 arrays;
  see each method); anything else falls back to the ``"cupy"`` path.

The default stays ``"cupy"`` because the custom kernels have been compiled
(nvcc, sm_90) and checked in a CPU emulation, but not yet run on a GPU;
a GPU session that passes tests/test_kernels_cuda.py can flip it.
"""
from __future__ import annotations

import os

import numpy as np

from .. import kernels as _K
from .base import Backend, normalize_dtype

KERNEL_PATHS = ("cupy", "custom")


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
        env = os.environ.get("DEEPGPU_KERNELS", "cupy")
        if env not in KERNEL_PATHS:
            raise ValueError(f"$DEEPGPU_KERNELS is {env!r}; valid values are {', '.join(map(repr, KERNEL_PATHS))}")
        self._init_kernels(env)

    # ------------------------------------------------------ kernel path
    def _init_kernels(self, mode):
        self.kernels = mode
        # Dropout's counter-based generator: a seed and an offset advanced
        # per call. The offset is a launch argument, so a CUDA graph replay
        # would repeat the masks of its capture (a device-side counter is
        # needed before dropout can live inside a captured step).
        self._dropout_seed = int(Backend._rng.integers(2**63))
        self._dropout_offset = 0

    @property
    def kernels(self) -> str:
        """Which kernels run the hot primitives: "cupy" (CuPy's routines) or "custom" (ours)."""
        return self._kernels

    @kernels.setter
    def kernels(self, mode: str) -> None:
        if mode not in KERNEL_PATHS:
            raise ValueError(f"kernels must be one of {', '.join(map(repr, KERNEL_PATHS))}, got {mode!r}")
        self._kernels = mode
        self._custom = mode == "custom"

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
        if self._custom and normalize_dtype(dtype) == np.float32 and 0 <= rate < 1:
            # One launch, no cuRAND (which a CUDA graph capture refuses).
            mask = self.xp.empty(shape, np.float32)
            _K.dropout(None, rate, self._dropout_seed, self._dropout_offset, mask=mask)
            self._dropout_offset += _K.dropout_offsets(mask.size)
            return mask
        keep = self.xp.random.random_sample(shape, dtype=np.float32) >= rate
        return keep.astype(dtype) * np.dtype(dtype).type(1.0 / (1.0 - rate))

    def seed(self, n: int) -> None:
        super().seed(n)
        self.xp.random.seed(n)
        self._dropout_seed, self._dropout_offset = int(n), 0

    def _add_at(self, out, key, values):
        self._cupyx.scatter_add(out, key, values)

    # ------------------------------------------- the hot primitives
    # Each takes the custom kernels when self.kernels == "custom" and the
    # case is one they handle; otherwise the generic (CuPy) version runs,
    # which also raises the interface's errors for bad shapes.
    def _f32(self, *arrays) -> bool:
        return self._custom and all(a.dtype == np.float32 for a in arrays)

    def _f32_inplace(self, *arrays) -> bool:
        return self._f32(*arrays) and all(a.flags.c_contiguous and a.size == arrays[0].size for a in arrays)

    def matmul(self, a, b, transpose_a=False, transpose_b=False):
        if (self._f32(a, b) and a.ndim >= 2 and b.ndim >= 2
                and (a.ndim == 2 or b.ndim == 2 or a.shape[:-2] == b.shape[:-2])
                and (b.shape[-1] if transpose_b else b.shape[-2]) == (a.shape[-2] if transpose_a else a.shape[-1])):
            return _K.matmul(a, b, transpose_a, transpose_b)
        return super().matmul(a, b, transpose_a, transpose_b)

    def dense(self, x, w, b=None, activation=None):
        if (self._f32(x, w) and x.ndim == 2 and w.ndim == 2 and x.shape[1] == w.shape[0]
                and activation in _K.ACTIVATIONS
                and (b is None or (b.dtype == np.float32 and b.shape == (w.shape[1],)))):
            return _K.dense(x, w, b, activation)  # matmul + bias + activation in one launch
        return super().dense(x, w, b, activation)

    def conv2d(self, x, k, strides=(1, 1), padding="valid", dilation=(1, 1)):
        if self._f32(x, k):
            self.conv_geometry(x.shape, k.shape, strides, padding, dilation)  # the interface's errors
            return _K.conv2d(x, k, strides, padding, dilation)
        return super().conv2d(x, k, strides, padding, dilation)

    def conv2d_grad_filter(self, x, dy, k_shape, strides=(1, 1), padding="valid", dilation=(1, 1)):
        if self._f32(x, dy):
            self.conv_geometry(x.shape, k_shape, strides, padding, dilation)
            return _K.conv2d_grad_filter(x, dy, tuple(k_shape), strides, padding, dilation)
        return super().conv2d_grad_filter(x, dy, k_shape, strides, padding, dilation)

    def conv2d_grad_input(self, dy, k, x_shape, strides=(1, 1), padding="valid", dilation=(1, 1)):
        if self._f32(dy, k):
            self.conv_geometry(tuple(x_shape), k.shape, strides, padding, dilation)
            return _K.conv2d_grad_input(dy, k, tuple(x_shape), strides, padding, dilation)
        return super().conv2d_grad_input(dy, k, x_shape, strides, padding, dilation)

    def max_pool2d(self, x, pool_size=(2, 2), strides=None, padding="valid"):
        if self._f32(x) and x.ndim == 4:
            return _K.max_pool2d(x, pool_size, strides, padding)
        return super().max_pool2d(x, pool_size, strides, padding)

    def max_pool2d_grad(self, dy, x, y, pool_size=(2, 2), strides=None, padding="valid"):
        if self._f32(dy, x) and x.ndim == 4:
            return _K.max_pool2d_grad(dy, x, pool_size, strides, padding)
        return super().max_pool2d_grad(dy, x, y, pool_size, strides, padding)

    def avg_pool2d(self, x, pool_size=(2, 2), strides=None, padding="valid"):
        if self._f32(x) and x.ndim == 4:
            return _K.avg_pool2d(x, pool_size, strides, padding)
        return super().avg_pool2d(x, pool_size, strides, padding)

    def avg_pool2d_grad(self, dy, x_shape, pool_size=(2, 2), strides=None, padding="valid"):
        if self._f32(dy) and len(x_shape) == 4:
            return _K.avg_pool2d_grad(dy, tuple(x_shape), pool_size, strides, padding)
        return super().avg_pool2d_grad(dy, x_shape, pool_size, strides, padding)

    def adam_update(self, p, g, m, v, lr, beta1, beta2, eps, step, weight_decay=0.0):
        if self._f32_inplace(p, m, v) and self._f32(g) and g.size == p.size:
            _K.adam(p, g, m, v, lr, beta1, beta2, eps, step, weight_decay)
            return
        super().adam_update(p, g, m, v, lr, beta1, beta2, eps, step, weight_decay)

    def sgd_update(self, p, g, m, lr, momentum=0.0, nesterov=False):
        slots = (p,) if m is None or not momentum else (p, m)
        if self._f32_inplace(*slots) and self._f32(g) and g.size == p.size:
            _K.sgd(p, g, m, lr, momentum, nesterov)
            return
        super().sgd_update(p, g, m, lr, momentum, nesterov)

    def rmsprop_update(self, p, g, v, mg, mom, lr, rho, momentum, eps):
        slots = tuple(a for a in (p, v, mg, mom) if a is not None)
        if self._f32_inplace(*slots) and self._f32(g) and g.size == p.size:
            _K.rmsprop(p, g, v, mg, mom, lr, rho, momentum, eps)
            return
        super().rmsprop_update(p, g, v, mg, mom, lr, rho, momentum, eps)

    def softmax_cross_entropy(self, logits, labels, axis=-1):
        if (self._f32(logits, labels) and logits.ndim >= 1 and logits.shape == labels.shape
                and axis in (-1, logits.ndim - 1)):
            cols = logits.shape[-1]
            loss, prob = _K.softmax_cross_entropy(logits.reshape(-1, cols), labels.reshape(-1, cols))
            return loss.reshape(logits.shape[:-1]), prob.reshape(logits.shape)
        return super().softmax_cross_entropy(logits, labels, axis)

    def relu_grad(self, dy, x):
        if self._f32(dy, x) and dy.shape == x.shape:
            return _K.relu_grad(dy, x)  # one launch instead of a compare and a multiply
        return super().relu_grad(dy, x)

    def sum_to_shape(self, g, shape):
        shape = tuple(shape)
        lead = g.ndim - len(shape)
        if self._f32(g) and shape and lead > 0 and tuple(g.shape[lead:]) == shape:
            # Only leading axes were broadcast (a bias): column sums in one deterministic pass.
            cols = int(np.prod(shape, dtype=np.int64))
            return _K.col_sum(g.reshape(-1, cols)).reshape(shape)
        return super().sum_to_shape(g, shape)


class _HostHelper(Backend):
    name = "host"
    xp = np


_HOST = _HostHelper()
