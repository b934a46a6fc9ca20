"""Core layers: Dense, Activation, Lambda."""
from __future__ import annotations

from .. import activations, initializers, ops, regularizers
from .base import InputSpec, Layer
from ._utils import (WeightedLayer, act_config, constraint_config, constraint_get, init_config,
                     reg_config, shape_error)

_FUSED = {activations.linear: None, activations.relu: "relu", activations.sigmoid: "sigmoid",
          activations.tanh: "tanh"}


class Dense(WeightedLayer):
    """``activation(inputs @ kernel + bias)``; kernel [in, units], applied over the last axis."""

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(units, bool) or not isinstance(units, int) or units <= 0:
            raise ValueError(f"Dense: units must be a positive int, got {units!r}")
        self.units = units
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraint_get(kernel_constraint, "Dense", "kernel_constraint")
        self.bias_constraint = constraint_get(bias_constraint, "Dense", "bias_constraint")
        self._setup_activity(activity_regularizer)
        self.input_spec = InputSpec(min_ndim=2)
        self.kernel = self.bias = None

    def build(self, input_shape):
        in_dim = input_shape[-1]
        if in_dim is None:
            raise shape_error(self, "the last axis of the input must have a known size", input_shape)
        self.kernel = self.add_weight("kernel", (in_dim, self.units), self.kernel_initializer,
                                      self.kernel_regularizer, constraint=self.kernel_constraint)
        if self.use_bias:
            self.bias = self.add_weight("bias", (self.units,), self.bias_initializer,
                                        self.bias_regularizer, constraint=self.bias_constraint)
        self.input_spec = InputSpec(min_ndim=2, axes={-1: in_dim})
        self.built = True

    def call(self, inputs):
        x = self._cast_in(inputs)
        fused = _FUSED.get(self.activation, False)
        act = fused if fused is not False else None
        if x.ndim == 2:
            y = ops.dense(x, self.kernel, self.bias, act)
        else:
            lead = x.shape[:-1]
            y = ops.dense(ops.reshape(x, (-1, x.shape[-1])), self.kernel, self.bias, act)
            y = ops.reshape(y, lead + (self.units,))
        if fused is False:
            y = self.activation(y)
        return self._activity(y)

    def compute_output_shape(self, input_shape):
        return activations.output_shape(self.activation, tuple(input_shape[:-1]) + (self.units,))

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "activation": act_config(self.activation), "use_bias": self.use_bias,
                "kernel_initializer": init_config(self.kernel_initializer),
                "bias_initializer": init_config(self.bias_initializer),
                "kernel_regularizer": reg_config(self.kernel_regularizer),
                "bias_regularizer": reg_config(self.bias_regularizer),
                "activity_regularizer": reg_config(self.activity_regularizer),
                "kernel_constraint": constraint_config(self.kernel_constraint),
                "bias_constraint": constraint_config(self.bias_constraint)}


class Activation(Layer):
    """Applies an activation function by name or callable."""

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)

    def call(self, inputs):
        return self.activation(inputs)

    def compute_output_shape(self, input_shape):
        return activations.output_shape(self.activation, input_shape)

    def get_config(self):
        return {**super().get_config(), "activation": act_config(self.activation)}


class Lambda(Layer):
    """Wraps ``function(inputs, **arguments)`` (built from deepgpu ops) as a layer.

    ``output_shape`` (without the batch axis, or a function of the input
    shape) is needed only where the output shape cannot be found by running
    the function on zeros. Its config names the function; loading it needs
    the function in ``custom_objects`` or registered with ``register_serializable``.
    """

    def __init__(self, function, output_shape=None, mask=None, arguments=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(function, str):
            from ..registry import custom_objects
            fn = custom_objects().get(function)
            if fn is None:
                raise ValueError(
                    f"Lambda: function {function!r} is unknown; register it with "
                    f"@deepgpu.register_serializable() or pass custom_objects")
            function = fn
        if not callable(function):
            raise ValueError(f"Lambda: function must be callable, got {function!r}")
        self.function = function
        self._output_shape = output_shape
        self.arguments = dict(arguments or {})

    def call(self, inputs):
        return self.function(inputs, **self.arguments)

    def compute_output_shape(self, input_shape):
        if self._output_shape is None:
            return super().compute_output_shape(input_shape)
        if callable(self._output_shape):
            return tuple(self._output_shape(input_shape))
        first = input_shape[0][0] if isinstance(input_shape, list) else input_shape[0]
        return (first,) + tuple(self._output_shape)

    def get_config(self):
        out = self._output_shape
        return {**super().get_config(), "function": getattr(self.function, "__name__", repr(self.function)),
                "output_shape": list(out) if isinstance(out, (tuple, list)) else None,
                "arguments": self.arguments}
