"""Regularization layers: Dropout (the noise and dropout variants join it here)."""
from __future__ import annotations

from .. import ops
from .base import InputSpec, Layer


class Dropout(Layer):
    """Zeroes a fraction ``rate`` of the inputs (scaling the rest by 1/(1-rate)), only when training."""

    supports_masking = True  # the input mask passes through, as in Keras

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 <= rate <= 1:
            raise ValueError(f"Dropout: rate must be a number in [0, 1], got {rate!r}")
        self.rate = float(rate)
        self.noise_shape = None if noise_shape is None else tuple(noise_shape)
        self.seed = seed

    def call(self, inputs, training=None):
        if not training or self.rate == 0:
            return inputs
        if self.rate == 1:
            return inputs * 0.0
        return ops.dropout(inputs, self.rate, self.noise_shape, training=True)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate,
                "noise_shape": None if self.noise_shape is None else list(self.noise_shape),
                "seed": self.seed}


class SpatialDropout1D(Dropout):
    """[N, steps, C]: drops whole channels (one decision per example and channel), only when training.

    ``noise_shape`` is accepted only as None (TF.js writes it); the mask's shape is [N, 1, C].
    """

    def __init__(self, rate, seed=None, noise_shape=None, **kwargs):
        if noise_shape is not None:
            raise ValueError(f"SpatialDropout1D: noise_shape is fixed to [batch, 1, channels]; "
                             f"got noise_shape={noise_shape!r}")
        super().__init__(rate, None, seed, **kwargs)
        self.noise_shape = (None, 1, None)
        self.input_spec = InputSpec(ndim=3)

    def get_config(self):
        cfg = super().get_config()
        del cfg["noise_shape"]
        return cfg
