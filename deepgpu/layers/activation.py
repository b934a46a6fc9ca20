"""Activation layers: ReLU, LeakyReLU, ELU, Softmax (the ``Activation`` layer is in core)."""
from __future__ import annotations

from .. import activations, ops
from .base import Layer
from ._utils import shape_error


class ReLU(Layer):
    """``min(x, max_value)`` above ``threshold``, ``negative_slope * (x - threshold)`` below."""

    supports_masking = True  # the input mask passes through, as in Keras

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0, **kwargs):
        super().__init__(**kwargs)
        if max_value is not None and max_value < 0:
            raise ValueError(f"ReLU: max_value must be >= 0 or None, got {max_value}")
        if negative_slope is None or negative_slope < 0:
            raise ValueError(f"ReLU: negative_slope must be >= 0, got {negative_slope}")
        if threshold is None:
            raise ValueError("ReLU: threshold must be a number, got None")
        self.max_value = None if max_value is None else float(max_value)
        self.negative_slope = float(negative_slope)
        self.threshold = float(threshold)

    def call(self, inputs):
        return activations.relu(inputs, self.negative_slope, self.max_value, self.threshold)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "max_value": self.max_value,
                "negative_slope": self.negative_slope, "threshold": self.threshold}


class LeakyReLU(Layer):
    """``x`` for x > 0, ``negative_slope * x`` otherwise (Keras 3 default 0.3; ``alpha`` accepted)."""

    supports_masking = True  # the input mask passes through, as in Keras

    def __init__(self, negative_slope=0.3, alpha=None, **kwargs):
        super().__init__(**kwargs)
        if alpha is not None:
            negative_slope = alpha
        if negative_slope is None or negative_slope < 0:
            raise ValueError(f"LeakyReLU: negative_slope must be >= 0, got {negative_slope}")
        self.negative_slope = float(negative_slope)

    @property
    def alpha(self):
        return self.negative_slope

    def call(self, inputs):
        return ops.leaky_relu(inputs, self.negative_slope)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "negative_slope": self.negative_slope}


class ELU(Layer):
    supports_masking = True  # the input mask passes through, as in Keras

    def __init__(self, alpha=1.0, **kwargs):
        super().__init__(**kwargs)
        self.alpha = float(alpha)

    def call(self, inputs):
        return ops.elu(inputs, self.alpha)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


class Softmax(Layer):
    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis

    def build(self, input_shape):
        nd = len(input_shape)
        axes = self.axis if isinstance(self.axis, (list, tuple)) else [self.axis]
        for a in axes:
            if not -nd <= a < nd:
                raise shape_error(self, f"axis {self.axis} is out of range for an input of rank {nd}", input_shape)
        self.built = True

    def call(self, inputs):
        if isinstance(self.axis, (list, tuple)):
            ax = tuple(self.axis)
            e = ops.exp(inputs - ops.max(inputs, ax, keepdims=True))
            return e / ops.sum(e, ax, keepdims=True)
        return ops.softmax(inputs, self.axis)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "axis": list(self.axis) if isinstance(self.axis, tuple) else self.axis}


class PReLU(Layer):
    """``x`` for x >= 0, ``alpha * x`` below, with a learned ``alpha`` per element of the input
    (one per channel with ``shared_axes=[1, 2]`` on images)."""

    def __init__(self, alpha_initializer="zeros", alpha_regularizer=None, alpha_constraint=None,
                 shared_axes=None, **kwargs):
        from .. import initializers, regularizers
        from ._utils import constraint_get

        super().__init__(**kwargs)
        self.alpha_initializer = initializers.get(alpha_initializer)
        self.alpha_regularizer = regularizers.get(alpha_regularizer)
        self.alpha_constraint = constraint_get(alpha_constraint, "PReLU", "alpha_constraint")
        if shared_axes is None:
            self.shared_axes = None
        else:
            axes = [shared_axes] if isinstance(shared_axes, int) else list(shared_axes)
            if not all(isinstance(a, int) and not isinstance(a, bool) and a >= 1 for a in axes):
                raise ValueError(f"PReLU: shared_axes must be axes >= 1 (the batch axis is 0), got {shared_axes!r}")
            self.shared_axes = axes

    def build(self, input_shape):
        shape = list(input_shape[1:])
        for a in self.shared_axes or []:
            if a >= len(input_shape):
                raise shape_error(self, f"shared axis {a} is out of range for an input of rank {len(input_shape)}",
                                  input_shape)
            shape[a - 1] = 1
        if any(d is None for d in shape):
            raise shape_error(self, "every axis that is not shared needs a known size", input_shape)
        self.alpha = self.add_weight("alpha", shape, self.alpha_initializer, self.alpha_regularizer,
                                     constraint=self.alpha_constraint)
        self.built = True

    def call(self, inputs):
        alpha = self.alpha if self.alpha.dtype == inputs.dtype else ops.cast(self.alpha, inputs.dtype)
        return ops.relu(inputs) - alpha * ops.relu(-inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        from ._utils import constraint_config, init_config, reg_config
        return {**super().get_config(), "alpha_initializer": init_config(self.alpha_initializer),
                "alpha_regularizer": reg_config(self.alpha_regularizer),
                "alpha_constraint": constraint_config(self.alpha_constraint), "shared_axes": self.shared_axes}


class ThresholdedReLU(Layer):
    """``x`` where x > theta, else 0 (tf.keras 2 and TF.js; Keras 3 writes it as ReLU(threshold=theta))."""

    def __init__(self, theta=1.0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(theta, bool) or not isinstance(theta, (int, float)) or theta < 0:
            raise ValueError(f"ThresholdedReLU: theta must be a number >= 0, got {theta!r}")
        self.theta = float(theta)

    def call(self, inputs):
        return inputs * ops.cast(ops.greater(inputs, self.theta), inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "theta": self.theta}

    def keras3_class_config(self, cfg):
        """Keras 3 has no ThresholdedReLU: a .keras file gets ReLU(threshold=theta), which computes the same."""
        keep = {k: cfg[k] for k in ("name", "trainable", "dtype") if k in cfg}
        return "ReLU", {**keep, "max_value": None, "negative_slope": 0.0, "threshold": cfg["theta"]}
