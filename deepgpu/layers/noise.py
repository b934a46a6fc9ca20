"""Noise layers, active only in training: GaussianNoise, GaussianDropout, AlphaDropout (Keras 3)."""
from __future__ import annotations

import math

from .. import ops
from ._random import StepRandom
from .base import Layer

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _rate(rate, who):
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise ValueError(f"{who}: rate must be a number in [0, 1], got {rate!r}")
    return float(rate)


class _Noise(Layer):
    supports_masking = True

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self._random = StepRandom(seed)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


class GaussianNoise(_Noise):
    """Adds normal noise of standard deviation ``stddev`` in training; identity at inference."""

    def __init__(self, stddev, seed=None, **kwargs):
        super().__init__(seed, **kwargs)
        if isinstance(stddev, bool) or not isinstance(stddev, (int, float)) or stddev < 0:
            raise ValueError(f"GaussianNoise: stddev must be a number >= 0, got {stddev!r}")
        self.stddev = float(stddev)

    def call(self, inputs, training=None):
        if not training or self.stddev == 0:
            return inputs
        return inputs + self._random.normal(inputs, inputs.shape, 0.0, self.stddev)

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev}


class GaussianDropout(_Noise):
    """Multiplies by normal noise of mean 1 and stddev sqrt(rate / (1 - rate)) in training."""

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(seed, **kwargs)
        self.rate = _rate(rate, "GaussianDropout")

    def call(self, inputs, training=None):
        if not training or not 0 < self.rate < 1:
            return inputs
        return inputs * self._random.normal(inputs, inputs.shape, 1.0, math.sqrt(self.rate / (1.0 - self.rate)))

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


class AlphaDropout(_Noise):
    """SELU-preserving dropout: dropped units take SELU's negative saturation value, then an affine
    map keeps mean and variance (Keras 3's formula). ``noise_shape`` broadcasts the mask."""

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(seed, **kwargs)
        self.rate = _rate(rate, "AlphaDropout")
        self.noise_shape = None if noise_shape is None else tuple(noise_shape)

    def call(self, inputs, training=None):
        if not training or not 0 < self.rate < 1:
            return inputs
        shape = inputs.shape if self.noise_shape is None else tuple(
            inputs.shape[i] if s is None else int(s) for i, s in enumerate(self.noise_shape))
        alpha_p = -_SELU_ALPHA * _SELU_SCALE
        kept = ops.cast(ops.greater_equal(self._random.uniform(inputs, shape), self.rate), inputs.dtype)
        a = ((1 - self.rate) * (1 + self.rate * alpha_p ** 2)) ** -0.5
        b = -a * alpha_p * self.rate
        return (inputs * kept + (1.0 - kept) * alpha_p) * a + b

    def get_config(self):
        return {**super().get_config(), "rate": self.rate,
                "noise_shape": None if self.noise_shape is None else list(self.noise_shape)}
