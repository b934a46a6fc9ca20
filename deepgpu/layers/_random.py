"""Randomness for layers that draw inside a step (noise, augmentation).

Each such layer owns a ``StepRandom``: a seed (the layer's ``seed``, or one drawn from
the backend's seeded generator, so ``set_seed`` makes CPU runs reproducible) and a
counter advanced on every draw. Values come from the backend's counter-based
``random_keyed`` (a hash of seed, counter and element), so every batch draws new ones.
"""
from __future__ import annotations

from ..backends.base import Backend
from ..tensor import Tensor


class StepRandom:
    def __init__(self, seed=None):
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an int or None, got {seed!r}")
        self.seed = int(Backend._rng.integers(2**31)) if seed is None else int(seed)
        self.counter = 0

    def next_key(self):
        """(seed, counter) of a new draw, as ``random_keyed`` (or a fused kernel's mask) takes it."""
        self.counter += 1
        return self.seed, self.counter

    def _draw(self, like, shape, kind, dtype):
        B = like._backend
        return Tensor(B.random_keyed(tuple(int(d) for d in shape), *self.next_key(), kind, dtype or like.dtype), B)

    def uniform(self, like, shape, minval=0.0, maxval=1.0, dtype=None):
        """A Tensor of ``shape`` on ``like``'s backend, uniform in [minval, maxval) (no gradient)."""
        u = self._draw(like, shape, "uniform", dtype)
        if (minval, maxval) == (0.0, 1.0):
            return u
        return u * (maxval - minval) + minval

    def normal(self, like, shape, mean=0.0, stddev=1.0, dtype=None):
        """A Tensor of ``shape`` on ``like``'s backend, normal(mean, stddev) (no gradient)."""
        n = self._draw(like, shape, "normal", dtype)
        return n * stddev + mean if (mean, stddev) != (0.0, 1.0) else n

    def host_uniform(self, like, shape, minval, maxval):
        """Like ``uniform``, as a host float64 NumPy array (for per-example transform parameters)."""
        return self.uniform(like, shape, minval, maxval, "float64").data_sync()
