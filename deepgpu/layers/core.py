"""Core layers: Dense, Activation, Lambda, EinsumDense, Identity."""
from __future__ import annotations

from .. import activations, initializers, ops, regularizers
from .base import InputSpec, Layer
from ._utils import (WeightedLayer, act_config, constraint_config, constraint_get, init_config,
                     reg_config, shape_error)

_FUSED = {activations.linear: None, activations.relu: "relu", activations.sigmoid: "sigmoid",
          activations.tanh: "tanh"}


class Dense(WeightedLayer):
    """``activation(inputs @ kernel + bias)``; kernel [in, units], applied over the last axis."""

    supports_masking = True  # the input mask passes through, as in Keras

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

    supports_masking = True  # the input mask passes through, as in Keras

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


def _analyze_einsum(layer, equation, bias_axes, input_shape, output_shape):
    """(kernel_shape, bias_shape or None, full output shape, kernel's input axes, output axes), as Keras."""
    import re

    def fail(why):
        raise ValueError(f"layer {layer.name!r} (EinsumDense): {why}; equation {equation!r}, "
                         f"input shape {tuple(input_shape)}")

    eq = re.sub(r"\.\.\.", "0", equation.replace(" ", ""))
    left = False
    m = re.fullmatch("([a-zA-Z]+),([a-zA-Z]+)->([a-zA-Z]+)", eq)
    if not m:
        m = re.fullmatch("0([a-zA-Z]+),([a-zA-Z]+)->0([a-zA-Z]+)", eq)
        left = bool(m)
    if not m:
        m = re.fullmatch("([a-zA-Z]{2,})0,([a-zA-Z]+)->([a-zA-Z]+)0", eq)
    if not m:
        fail("equations must have the form X,Y->Z, ...X,Y->...Z or X...,Y->Z...")
    ins, ws, outs = m.groups()
    elided = len(input_shape) - len(ins)
    if elided < 0 or (elided and "0" not in eq):
        fail(f"the input spec {ins!r} names {len(ins)} axes")
    out = [input_shape[0]] + list(output_shape)
    if elided > 0 and left:
        for i in range(1, elided):
            out.insert(1, input_shape[i])
    elif elided > 0:
        out += list(input_shape[len(input_shape) - elided:])
    if left:
        in_map = {d: (i + elided) - len(input_shape) for i, d in enumerate(ins)}
        out_map = {d: i + elided for i, d in enumerate(outs)}
    else:
        in_map = {d: i for i, d in enumerate(ins)}
        out_map = {d: i for i, d in enumerate(outs)}
    if len(out) != len(outs) + (elided if elided > 0 else 0):
        fail(f"output_shape {tuple(output_shape)} does not give the {len(outs) - 1} non-batch output axes "
             f"of {outs!r}")
    for d in ins:
        if d in out_map:
            o = out[out_map[d]]
            if o is not None and o != input_shape[in_map[d]]:
                fail(f"the input and output_shape differ at the shared axis {d!r} "
                     f"({input_shape[in_map[d]]} vs {o})")
            out[out_map[d]] = input_shape[in_map[d]]
    for d in outs:
        if d not in ins and d not in ws:
            fail(f"the output axis {d!r} is in neither the input nor the weight spec")
    kernel, in_axes, out_axes = [], [], []
    for i, d in enumerate(ws):
        if d in out_map:
            kernel.append(out[out_map[d]])
            out_axes.append(i)
        elif d in in_map:
            kernel.append(input_shape[in_map[d]])
            in_axes.append(i)
        else:
            fail(f"the weight axis {d!r} is in neither the input nor the output spec")
    if any(k is None for k in kernel):
        fail(f"the kernel's shape {kernel} needs every input axis it contracts to have a known size")
    bias = None
    if bias_axes:
        for c in bias_axes:
            if c not in outs:
                fail(f"the bias axis {c!r} is not in the output spec {outs!r}")
        first = min(outs.find(c) for c in bias_axes)
        idx = {c: out[i + (elided if left and elided > 0 else 0)] for i, c in enumerate(outs)}
        bias = [idx[c] if c in bias_axes else 1 for c in outs[first:]]
        if not left and elided > 0:
            bias += [1] * elided
    return kernel, bias, tuple(out), in_axes, out_axes


def _fan_init(init, in_axes, out_axes):
    """The kernel's initializer with its fans taken over in_axes / out_axes (as Keras's EinsumDense)."""
    def make(shape, dtype):
        fi = 1
        for i in in_axes:
            fi *= shape[i]
        fo = 1
        for i in out_axes:
            fo *= shape[i]
        # An iid draw: only its scale depends on the fans, so a [fan_in, fan_out] draw reshaped is exact.
        return init((fi, fo), dtype).reshape(shape)
    return make


class EinsumDense(WeightedLayer):
    """``activation(einsum(equation, inputs, kernel) + bias)``, as Keras's EinsumDense.

    ``equation``: "X,Y->Z" over the input, the kernel and the output (e.g.
    "abc,cd->abd", "abc,cde->abde", "abcd,cde->abe", "...b,bc->...c");
    ``output_shape``: the output's shape without the batch axis (an int
    for one axis; None for an axis taken from the input); ``bias_axes``: the
    output letters the bias spans. The kernel's shape follows from the
    equation, the input and output_shape. Weights: kernel, then bias.
    """

    def __init__(self, equation, output_shape, activation=None, bias_axes=None,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 **kwargs):
        super().__init__(**kwargs)
        if not isinstance(equation, str) or "->" not in equation:
            raise ValueError(f"EinsumDense: equation must be a string 'X,Y->Z', got {equation!r}")
        self.equation = equation
        shape = (output_shape,) if isinstance(output_shape, int) or output_shape is None else tuple(output_shape)
        if any(s is not None and (isinstance(s, bool) or not isinstance(s, int) or s <= 0) for s in shape):
            raise ValueError(f"EinsumDense: output_shape must hold positive ints or None, got {output_shape!r}")
        self.partial_output_shape = shape
        self.bias_axes = bias_axes
        self.activation = activations.get(activation)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraint_get(kernel_constraint, "EinsumDense", "kernel_constraint")
        self.bias_constraint = constraint_get(bias_constraint, "EinsumDense", "bias_constraint")
        self._setup_activity(activity_regularizer)
        self.kernel = self.bias = None

    def build(self, input_shape):
        kshape, bshape, full, in_axes, out_axes = _analyze_einsum(
            self, self.equation, self.bias_axes, tuple(input_shape), self.partial_output_shape)
        self.full_output_shape = full
        self.kernel = self.add_weight("kernel", kshape, _fan_init(self.kernel_initializer, in_axes, out_axes),
                                      self.kernel_regularizer, constraint=self.kernel_constraint)
        if bshape is not None:
            self.bias = self.add_weight("bias", bshape, self.bias_initializer, self.bias_regularizer,
                                        constraint=self.bias_constraint)
        self.input_spec = InputSpec(ndim=len(input_shape))
        self.built = True

    def call(self, inputs):
        x = self._cast_in(inputs)
        y = ops.einsum(self.equation, x, self.kernel)
        if self.bias is not None:
            y = y + self.bias
        return self._activity(self.activation(y))

    def compute_output_shape(self, input_shape):
        full = _analyze_einsum(self, self.equation, self.bias_axes, tuple(input_shape),
                               self.partial_output_shape)[2]
        return activations.output_shape(self.activation, full)

    def get_config(self):
        return {**super().get_config(), "equation": self.equation,
                "output_shape": list(self.partial_output_shape), "activation": act_config(self.activation),
                "bias_axes": self.bias_axes,
                "kernel_initializer": init_config(self.kernel_initializer),
                "bias_initializer": init_config(self.bias_initializer),
                "kernel_regularizer": reg_config(self.kernel_regularizer),
                "bias_regularizer": reg_config(self.bias_regularizer),
                "activity_regularizer": reg_config(self.activity_regularizer),
                "kernel_constraint": constraint_config(self.kernel_constraint),
                "bias_constraint": constraint_config(self.bias_constraint)}


class Identity(Layer):
    """Returns its input unchanged (a placeholder, as Keras's Identity)."""

    def call(self, inputs):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape
