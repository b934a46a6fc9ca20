"""BatchNormalization."""
from __future__ import annotations

from .. import initializers, ops, regularizers
from ..autograd import no_grad
from .base import InputSpec
from ._utils import WeightedLayer, constraint_config, constraint_get, init_config, reg_config, shape_error


class BatchNormalization(WeightedLayer):
    """Normalizes each channel (``axis``) to zero mean and unit variance, then scales and shifts.

    Training (``training=True`` and the layer trainable): the batch's mean and
    (biased) variance are used, and the moving statistics are updated in
    place, ``moving = moving * momentum + batch * (1 - momentum)``.
    Inference (``training`` False or None, or a frozen layer, as Keras does
    for fine-tuning): the moving statistics are used. Weights in Keras's
    order: gamma, beta (trainable; absent when ``scale`` / ``center`` is
    False), moving_mean, moving_variance (non-trainable).
    """

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones",
                 moving_mean_initializer="zeros", moving_variance_initializer="ones",
                 beta_regularizer=None, gamma_regularizer=None, beta_constraint=None,
                 gamma_constraint=None, synchronized=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(axis, (list, tuple)):
            if len(axis) != 1:
                raise ValueError(f"BatchNormalization: only one axis is supported, got {axis!r}")
            axis = axis[0]
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise ValueError(f"BatchNormalization: axis must be an int, got {axis!r}")
        if not 0 <= momentum <= 1:
            raise ValueError(f"BatchNormalization: momentum must be in [0, 1], got {momentum}")
        if epsilon <= 0:
            raise ValueError(f"BatchNormalization: epsilon must be positive, got {epsilon}")
        self.axis = axis
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.synchronized = bool(synchronized)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_constraint = constraint_get(beta_constraint, "BatchNormalization", "beta_constraint")
        self.gamma_constraint = constraint_get(gamma_constraint, "BatchNormalization", "gamma_constraint")
        self._setup_activity(None)
        self.gamma = self.beta = self.moving_mean = self.moving_variance = None

    def build(self, input_shape):
        nd = len(input_shape)
        if not -nd <= self.axis < nd:
            raise shape_error(self, f"axis {self.axis} is out of range for an input of rank {nd}", input_shape)
        ax = self.axis % nd
        if ax == 0:
            raise shape_error(self, "axis 0 is the batch axis and cannot be normalized over", input_shape)
        c = input_shape[ax]
        if c is None:
            raise shape_error(self, f"axis {self.axis} of the input must have a known size", input_shape)
        shape = (c,)
        if self.scale:
            self.gamma = self.add_weight("gamma", shape, self.gamma_initializer, self.gamma_regularizer,
                                         constraint=self.gamma_constraint)
        if self.center:
            self.beta = self.add_weight("beta", shape, self.beta_initializer, self.beta_regularizer,
                                        constraint=self.beta_constraint)
        self.moving_mean = self.add_weight("moving_mean", shape, self.moving_mean_initializer, trainable=False)
        self.moving_variance = self.add_weight("moving_variance", shape, self.moving_variance_initializer,
                                               trainable=False)
        self.input_spec = InputSpec(ndim=nd, axes={ax: c})
        self.built = True

    def call(self, inputs, training=None):
        x = self._cast_in(inputs)
        if training and self.trainable:
            y, mean, var = ops.batch_norm(x, self.gamma, self.beta, self.axis, self.epsilon)
            with no_grad():
                m = self.momentum
                self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
                self.moving_variance.assign(self.moving_variance * m + var * (1.0 - m))
            return y
        shape = [1] * x.ndim
        shape[self.axis % x.ndim] = x.shape[self.axis % x.ndim]
        shape = tuple(shape)
        inv = ops.rsqrt(self.moving_variance + self.epsilon)
        if self.gamma is not None:
            inv = inv * self.gamma
        y = (x - ops.reshape(self.moving_mean, shape)) * ops.reshape(inv, shape)
        if self.beta is not None:
            y = y + ops.reshape(self.beta, shape)
        return y

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "momentum": self.momentum,
                "epsilon": self.epsilon, "center": self.center, "scale": self.scale,
                "beta_initializer": init_config(self.beta_initializer),
                "gamma_initializer": init_config(self.gamma_initializer),
                "moving_mean_initializer": init_config(self.moving_mean_initializer),
                "moving_variance_initializer": init_config(self.moving_variance_initializer),
                "beta_regularizer": reg_config(self.beta_regularizer),
                "gamma_regularizer": reg_config(self.gamma_regularizer),
                "beta_constraint": constraint_config(self.beta_constraint),
                "gamma_constraint": constraint_config(self.gamma_constraint),
                "synchronized": self.synchronized}
