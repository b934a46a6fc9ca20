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
        # Keras 3.15's SpatialDropout1D takes neither (its get_config leaves them out too).
        del cfg["noise_shape"]
        cfg.pop("trainable", None)
        return cfg


class _SpatialDropoutND(Dropout):
    _rank = None

    def __init__(self, rate, data_format=None, seed=None, noise_shape=None, **kwargs):
        from ._utils import channels_last

        name = type(self).__name__
        if noise_shape is not None:
            raise ValueError(f"{name}: noise_shape is fixed to [batch, 1, ..., channels]; got {noise_shape!r}")
        super().__init__(rate, None, seed, **kwargs)
        self.data_format = channels_last(data_format, name)
        self.noise_shape = (None,) + (1,) * (self._rank - 2) + (None,)
        self.input_spec = InputSpec(ndim=self._rank)

    def get_config(self):
        cfg = super().get_config()
        del cfg["noise_shape"]
        cfg.pop("trainable", None)  # Keras 3.15's SpatialDropout2D/3D take no trainable argument
        return {**cfg, "data_format": self.data_format}


class SpatialDropout2D(_SpatialDropoutND):
    """[N, H, W, C]: drops whole feature maps (one decision per example and channel), only when training."""

    _rank = 4


class SpatialDropout3D(_SpatialDropoutND):
    """[N, D, H, W, C]: drops whole feature volumes (one decision per example and channel), only when training."""

    _rank = 5


class ActivityRegularization(Layer):
    """Identity that adds ``l1 * sum|x| + l2 * sum(x^2)`` (divided by the batch size, as Keras 3)
    to the model's losses."""

    supports_masking = True

    def __init__(self, l1=0.0, l2=0.0, **kwargs):
        from ._utils import WeightedLayer

        super().__init__(**kwargs)
        for k, v in (("l1", l1), ("l2", l2)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"ActivityRegularization: {k} must be a number >= 0, got {v!r}")
        self.l1, self.l2 = float(l1), float(l2)
        WeightedLayer._setup_activity(self, {"class_name": "L1L2", "config": {"l1": self.l1, "l2": self.l2}})

    def call(self, inputs):
        from ._utils import WeightedLayer
        return WeightedLayer._activity(self, inputs)

    def _own_losses(self):
        state = getattr(self, "_activity_state", None)
        return Layer._own_losses(self) + list(getattr(state, "losses", ()))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "l1": self.l1, "l2": self.l2}
