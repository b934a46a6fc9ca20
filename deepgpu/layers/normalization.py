"""Normalization layers: BatchNormalization, LayerNormalization, RMSNormalization,
GroupNormalization, UnitNormalization (Keras 3 semantics)."""
from __future__ import annotations

from .. import initializers, ops, regularizers
from ..autograd import no_grad
from .base import InputSpec, Layer
from ._utils import WeightedLayer, constraint_config, constraint_get, init_config, reg_config, shape_error


class BatchNormalization(WeightedLayer):
    """Normalizes each channel (``axis``) to zero mean and unit variance, then scales and shifts.

    Training (``training=True`` and the layer trainable): the batch's mean and
    (biased) variance are used, and the moving statistics are updated in
    place, ``moving = moving * momentum + batch * (1 - momentum)``.
    Inference (``training`` False or None, or a frozen layer, as Keras does
    for fine-tuning): the moving statistics are used. Weights in Keras's
    order: gamma, beta (trainable; absent when ``scale`` / ``center`` is
    False), moving_mean, moving_variance (non-trainable). synchronized: in a
    DataParallel training step over more than one rank, training takes the
    statistics of the global batch (every rank's) and their gradients, and the
    moving statistics stay equal on all ranks; in one process it is plain
    batch normalization.
    """

    # Keras computes the statistics in float32 for 16-bit inputs (layers/_autocast.py).
    _float32_statistics = True

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
            comm = _sync_comm() if self.synchronized else None
            if comm is not None:  # statistics of every rank's batch (deepgpu/distributed/sync_bn.py)
                from ..distributed.sync_bn import sync_batch_norm
                y, mean, var = sync_batch_norm(x, self.gamma, self.beta, self.axis, self.epsilon, comm)
            else:
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


def _sync_comm():
    """The communicator of the DataParallel training step under way when it spans more than one rank,
    else None: BatchNormalization(synchronized=True) is plain batch normalization in one process and
    outside a distributed step (as Keras's outside a distribution strategy)."""
    from ..distributed.data_parallel import step_communicator
    comm = step_communicator()
    return comm if comm is not None and comm.size > 1 else None


def _axis_list(axis, who):
    """axis (an int or a list / tuple of ints) as a list of ints; ValueError naming the layer."""
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    if not axes or any(isinstance(a, bool) or not isinstance(a, int) for a in axes):
        raise ValueError(f"{who}: axis must be an int or a non-empty list of ints, got {axis!r}")
    return axes


def _resolve_axes(layer, axes, input_shape):
    """The axes as sorted non-negative ints for ``input_shape``; never the batch axis, sizes known."""
    nd = len(input_shape)
    out = []
    for a in axes:
        if not -nd <= a < nd:
            raise shape_error(layer, f"axis {a} is out of range for an input of rank {nd}", input_shape)
        a %= nd
        if a == 0:
            raise shape_error(layer, "axis 0 is the batch axis and cannot be normalized over", input_shape)
        if input_shape[a] is None:
            raise shape_error(layer, f"axis {a} of the input must have a known size", input_shape)
        out.append(a)
    if len(set(out)) != len(out):
        raise shape_error(layer, f"axis {axes} names an axis twice", input_shape)
    return sorted(out)


def _beta_gamma_config(layer) -> dict:
    """The config entries of a normalization layer's beta (offset) and gamma (scale) weights."""
    return {"beta_initializer": init_config(layer.beta_initializer),
            "gamma_initializer": init_config(layer.gamma_initializer),
            "beta_regularizer": reg_config(layer.beta_regularizer),
            "gamma_regularizer": reg_config(layer.gamma_regularizer),
            "beta_constraint": constraint_config(layer.beta_constraint),
            "gamma_constraint": constraint_config(layer.gamma_constraint)}


class LayerNormalization(WeightedLayer):
    """Normalizes each example over ``axis`` (an int or a list), then scales by gamma and shifts by beta.

    ``y = (x - mean) / sqrt(var + epsilon) * gamma + beta``, the mean and the
    biased variance taken per example over ``axis``; gamma and beta have the
    input's sizes on those axes (sorted). ``rms_scaling=True`` is Keras 3's
    (deprecated) variant: ``x / sqrt(var + epsilon) * gamma``, with no mean
    subtracted and no beta. Weights in Keras's order: gamma, beta.
    TF.js's spellings of the arguments load too.
    """

    # Keras computes the statistics in float32 for 16-bit inputs (layers/_autocast.py).
    _float32_statistics = True

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True, rms_scaling=False,
                 beta_initializer="zeros", gamma_initializer="ones", beta_regularizer=None,
                 gamma_regularizer=None, beta_constraint=None, gamma_constraint=None, **kwargs):
        super().__init__(**kwargs)
        who = "LayerNormalization"
        self._axes = _axis_list(axis, who)
        self.axis = axis if isinstance(axis, int) else list(axis)
        if not epsilon > 0:
            raise ValueError(f"{who}: epsilon must be positive, got {epsilon}")
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.rms_scaling = bool(rms_scaling)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_constraint = constraint_get(beta_constraint, who, "beta_constraint")
        self.gamma_constraint = constraint_get(gamma_constraint, who, "gamma_constraint")
        self._setup_activity(None)
        self.gamma = self.beta = None

    def build(self, input_shape):
        axes = _resolve_axes(self, self._axes, input_shape)
        shape = tuple(input_shape[a] for a in axes)
        if self.scale or self.rms_scaling:
            self.gamma = self.add_weight("gamma", shape, self.gamma_initializer, self.gamma_regularizer,
                                         constraint=self.gamma_constraint)
        if self.center and not self.rms_scaling:
            self.beta = self.add_weight("beta", shape, self.beta_initializer, self.beta_regularizer,
                                        constraint=self.beta_constraint)
        self.input_spec = InputSpec(ndim=len(input_shape), axes={a: input_shape[a] for a in axes})
        self._resolved = axes
        self.built = True

    def call(self, inputs):
        x = self._cast_in(inputs)
        if self.rms_scaling:
            # Keras 3's rms_scaling divides by the centred variance but does not centre x.
            var = ops.variance(x, axis=tuple(self._resolved), keepdims=True)
            y = x * ops.rsqrt(var + self.epsilon)
            if self.gamma is not None:
                y = y * ops.reshape(self.gamma, self._param_shape(x.ndim))
            return y
        return ops.layer_norm(x, self.gamma, self.beta, self._resolved, self.epsilon)

    def _param_shape(self, nd):
        shape = [1] * nd
        for a in self._resolved:
            shape[a] = self.gamma.shape[self._resolved.index(a)]
        return tuple(shape)

    def compute_mask(self, inputs, previous_mask=None):
        return previous_mask  # masks pass through, as in Keras

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon, "center": self.center,
                "scale": self.scale, "rms_scaling": self.rms_scaling,
                **_beta_gamma_config(self)}


class RMSNormalization(WeightedLayer):
    """``x / sqrt(mean(x^2 over axis) + epsilon) * scale``; ``scale`` has the input's sizes on ``axis``."""

    # Keras computes the statistics in float32 for 16-bit inputs (layers/_autocast.py).
    _float32_statistics = True

    def __init__(self, axis=-1, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self._axes = _axis_list(axis, "RMSNormalization")
        self.axis = axis if isinstance(axis, int) else list(axis)
        if not epsilon > 0:
            raise ValueError(f"RMSNormalization: epsilon must be positive, got {epsilon}")
        self.epsilon = float(epsilon)
        self._setup_activity(None)
        self.scale = None

    def build(self, input_shape):
        axes = _resolve_axes(self, self._axes, input_shape)
        self.scale = self.add_weight("scale", tuple(input_shape[a] for a in axes), "ones")
        self.input_spec = InputSpec(ndim=len(input_shape), axes={a: input_shape[a] for a in axes})
        self._resolved = axes
        self.built = True

    def call(self, inputs):
        return ops.layer_norm(self._cast_in(inputs), self.scale, None, self._resolved, self.epsilon, rms=True)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon}


class GroupNormalization(WeightedLayer):
    """Splits the channels (``axis``) into ``groups`` and normalizes each example over each group
    (the group's channels and every other non-batch axis), then scales and shifts per channel.

    ``groups=-1``: one group per channel (instance normalization). The
    channel count must be a multiple of ``groups``. Weights: gamma, beta [C].
    """

    # Keras computes the statistics in float32 for 16-bit inputs (layers/_autocast.py).
    _float32_statistics = True

    def __init__(self, groups=32, axis=-1, epsilon=1e-3, center=True, scale=True, beta_initializer="zeros",
                 gamma_initializer="ones", beta_regularizer=None, gamma_regularizer=None, beta_constraint=None,
                 gamma_constraint=None, **kwargs):
        super().__init__(**kwargs)
        who = "GroupNormalization"
        if isinstance(groups, bool) or not isinstance(groups, int) or (groups <= 0 and groups != -1):
            raise ValueError(f"{who}: groups must be a positive int or -1 (instance normalization), got {groups!r}")
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise ValueError(f"{who}: axis must be an int, got {axis!r}")
        if not epsilon > 0:
            raise ValueError(f"{who}: epsilon must be positive, got {epsilon}")
        self.groups, self.axis, self.epsilon = groups, axis, float(epsilon)
        self.center, self.scale = bool(center), bool(scale)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_constraint = constraint_get(beta_constraint, who, "beta_constraint")
        self.gamma_constraint = constraint_get(gamma_constraint, who, "gamma_constraint")
        self._setup_activity(None)
        self.gamma = self.beta = None

    def build(self, input_shape):
        ax = _resolve_axes(self, [self.axis], input_shape)[0]
        c = input_shape[ax]
        groups = c if self.groups == -1 else self.groups
        if c < groups or c % groups:
            raise shape_error(self, f"the {c} channels on axis {self.axis} cannot be split into {groups} "
                                    f"groups (groups must divide the channel count)", input_shape)
        self._groups, self._ax = groups, ax
        if self.scale:
            self.gamma = self.add_weight("gamma", (c,), self.gamma_initializer, self.gamma_regularizer,
                                         constraint=self.gamma_constraint)
        if self.center:
            self.beta = self.add_weight("beta", (c,), self.beta_initializer, self.beta_regularizer,
                                        constraint=self.beta_constraint)
        self.input_spec = InputSpec(ndim=len(input_shape), axes={ax: c})
        self.built = True

    def call(self, inputs):
        x = self._cast_in(inputs)
        nd, ax, g = x.ndim, self._ax, self._groups
        c = x.shape[ax]
        gshape = x.shape[:ax] + (g, c // g) + x.shape[ax + 1:]
        xg = ops.reshape(x, gshape)
        red = tuple(i for i in range(1, nd + 1) if i != ax)  # every axis of the group but the batch's
        y = ops.reshape(ops.layer_norm(xg, None, None, red, self.epsilon), x.shape)
        pshape = [1] * nd
        pshape[ax] = c
        if self.gamma is not None:
            y = y * ops.reshape(self.gamma, tuple(pshape))
        if self.beta is not None:
            y = y + ops.reshape(self.beta, tuple(pshape))
        return y

    def compute_mask(self, inputs, previous_mask=None):
        return previous_mask  # masks pass through, as in Keras

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "axis": self.axis, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale,
                **_beta_gamma_config(self)}


class UnitNormalization(Layer):
    """Scales each example to unit L2 norm over ``axis`` (an int or a list): ``x / max(||x||, 1e-12)``."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self._axes = _axis_list(axis, "UnitNormalization")
        self.axis = axis if isinstance(axis, int) else list(axis)

    def build(self, input_shape):
        self._resolved = tuple(_resolve_axes(self, self._axes, input_shape))
        self.built = True

    def call(self, inputs):
        x = inputs if inputs.dtype == self.dtype else ops.cast(inputs, self.dtype)
        inv = ops.rsqrt(ops.sum(ops.square(x), axis=self._resolved, keepdims=True))
        return x * ops.minimum(inv, 1e12)

    def compute_mask(self, inputs, previous_mask=None):
        return previous_mask  # masks pass through, as in Keras

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}
