"""Recurrent layers: the cells, RNN, SimpleRNN / LSTM / GRU, Bidirectional, TimeDistributed.

Sequences are [batch, time, features]. A cell computes one time step
(the Keras cell protocol: ``state_size``, ``call(inputs, states, training=None)
-> (output, new_states)``); ``RNN(cell)`` runs it over time in Python, above
the backend, so autograd and masks need nothing special. For deepgpu's own
cells the input projection of all time steps is one matmul before the loop;
each step then does one matmul with the recurrent kernel and the gate math of
``_simple_step`` / ``_lstm_step`` / ``_gru_step`` (the single place to swap in
fused kernels).

Masks ([batch, time] bool, from Embedding(mask_zero=True), Masking or
``mask=``) are handled as Keras does: at a masked step the states keep their
previous values and the output repeats the previous output (zeros when
``zero_output_for_mask``, as Bidirectional sets for sequences).
"""
from __future__ import annotations

import inspect

from .. import activations, initializers, ops, regularizers
from ..autograd import Node, is_grad_enabled, register_gradient
from ..tensor import Tensor, zeros
from ._utils import WeightedLayer, act_config, constraint_config, constraint_get, init_config, reg_config
from .base import InputSpec, Layer, fmt_shape
from .embedding import check_not_ragged, step_mask


# -------------------------------------------------------------- step math
def _simple_step(z, activation):
    """SimpleRNN: ``h = activation(z)``, z = x_proj_t + h_prev @ recurrent_kernel [N, units]."""
    return activation(z)


def _lstm_step(z, c_prev, activation, recurrent_activation):
    """LSTM from the pre-activations z = x_proj_t + h_prev @ recurrent_kernel [N, 4 units]
    (bias inside x_proj; gates in Keras's order i, f, c, o) and the carry c_prev [N, units].
    Returns (h, c)."""
    if activation is activations.tanh and recurrent_activation is activations.sigmoid:
        return ops.lstm_cell(z, c_prev)  # the fused cell: one pass each way (C / CUDA kernels)
    i, f, g, o = ops.split(z, 4, axis=-1)
    i, f, o = recurrent_activation(i), recurrent_activation(f), recurrent_activation(o)
    c = f * c_prev + i * activation(g)
    return o * activation(c), c


def _gru_step(x_proj, h_rec, h_prev, activation, recurrent_activation):
    """GRU with reset_after=True (Keras's default). x_proj = x @ kernel + input_bias and
    h_rec = h_prev @ recurrent_kernel + recurrent_bias, both [N, 3 units] in Keras's gate
    order z, r, h. Returns h."""
    if activation is activations.tanh and recurrent_activation is activations.sigmoid:
        return ops.gru_cell(x_proj, h_rec, h_prev)  # the fused cell
    xz, xr, xh = ops.split(x_proj, 3, axis=-1)
    rz, rr, rh = ops.split(h_rec, 3, axis=-1)
    z = recurrent_activation(xz + rz)
    r = recurrent_activation(xr + rr)
    hh = activation(xh + r * rh)
    return z * h_prev + (1.0 - z) * hh


def _gru_step_reset_before(x_proj, h_prev, h_rec, kernel_h, activation, recurrent_activation):
    """GRU with reset_after=False (TF.js's only form, Keras 2's default): the reset gate scales
    h_prev before its matmul with the candidate's recurrent kernel ``kernel_h`` [units, units].
    h_rec = h_prev @ recurrent_kernel[:, :2 units] (gates z, r). Returns h."""
    xz, xr, xh = ops.split(x_proj, 3, axis=-1)
    rz, rr = ops.split(h_rec, 2, axis=-1)
    z = recurrent_activation(xz + rz)
    r = recurrent_activation(xr + rr)
    hh = activation(xh + ops.matmul(r * h_prev, kernel_h))
    return z * h_prev + (1.0 - z) * hh


# ------------------------------------------------------ time steps, cheaply
class _StepGrads:
    """The gradient of a sequence cut into time steps, gathered step by step.

    The autograd engine adds the gradients that reach one tensor with ``+``;
    slicing a [T, N, ...] tensor T times the usual way would add T full-size
    arrays (O(T^2) work). Each step's rule gives one of these instead: ``+``
    collects the steps, and the hub's rule writes them into one array."""

    __slots__ = ("shape", "parts")

    def __init__(self, shape, t, dy):
        self.shape, self.parts = shape, [(t, dy)]

    def __add__(self, other):
        self.parts.extend(other.parts)
        return self

    def array(self, B):
        buf = B.zeros(self.shape, self.parts[0][1].dtype)
        for t, dy in self.parts:
            buf[t] += dy
        return buf


@register_gradient("rnn_time_hub")
def _time_hub_grad(node, g):
    g = g.array(node.B) if isinstance(g, _StepGrads) else g
    return (node.B.transpose(g, node.attrs["perm"]),)


@register_gradient("rnn_time_step")
def _time_step_grad(node, dy):
    return (_StepGrads(node.inputs[0].shape, node.attrs["t"], dy),)


def _time_steps(x):
    """[N, T, ...] -> a list of T tensors [N, ...] (differentiable, gradients gathered in one array)."""
    B = x._backend
    perm = (1, 0) + tuple(range(2, x.ndim))
    tm = B.transpose(x.data, perm)
    if not (is_grad_enabled() and x.requires_grad):
        return [Tensor(tm[t], B) for t in range(tm.shape[0])]
    hub = Tensor(tm, B, requires_grad=True, node=Node("rnn_time_hub", (x,), None, {"perm": perm}, B))
    return [Tensor(tm[t], B, requires_grad=True, node=Node("rnn_time_step", (hub,), None, {"t": t}, B))
            for t in range(tm.shape[0])]


# ------------------------------------------------------------------ cells
def _rate(value, what, cls):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{cls}: {what} must be a number in [0, 1), got {value!r}")
    return float(value)


def _units(value, cls):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{cls}: units must be a positive int, got {value!r}")
    return value


def _dropout_mask(like, shape, rate):
    """0 or 1/(1-rate) of ``shape``, drawn by the backend's dropout (which a recorded CUDA graph
    redraws at every replay)."""
    B = like._backend
    return Tensor(B.dropout(B.ones(tuple(shape), like.dtype), rate)[0], B)


class _Cell(WeightedLayer):
    """What deepgpu's cells share: arguments, weights, dropout masks (one per sequence, as Keras)
    and the split of a step into an input projection and a recurrent part."""

    _gates = 1

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", kernel_regularizer=None, recurrent_regularizer=None,
                 bias_regularizer=None, kernel_constraint=None, recurrent_constraint=None,
                 bias_constraint=None, dropout=0.0, recurrent_dropout=0.0, seed=None, implementation=None,
                 **kwargs):
        del implementation  # Keras 2 / TF.js: a speed choice, the same values
        super().__init__(**kwargs)
        cls = type(self).__name__
        self.units = _units(units, cls)
        self.activation = activations.get(activation)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraint_get(kernel_constraint, cls, "kernel_constraint")
        self.recurrent_constraint = constraint_get(recurrent_constraint, cls, "recurrent_constraint")
        self.bias_constraint = constraint_get(bias_constraint, cls, "bias_constraint")
        self.dropout = _rate(dropout, "dropout", cls)
        self.recurrent_dropout = _rate(recurrent_dropout, "recurrent_dropout", cls)
        self.seed = seed
        self.kernel = self.recurrent_kernel = self.bias = None
        self._dp_mask = self._rec_dp_mask = None

    @property
    def state_size(self):
        return self.units

    @property
    def output_size(self):
        return self.units

    def _bias_shape(self):
        return (self._gates * self.units,)

    def _bias_init(self):
        return self.bias_initializer

    def build(self, input_shape):
        in_dim = input_shape[-1]
        if in_dim is None:
            raise ValueError(f"layer {self.name!r} ({type(self).__name__}): the last axis of the input must "
                             f"have a known size; received input shape {fmt_shape(input_shape)}")
        g = self._gates * self.units
        self.kernel = self.add_weight("kernel", (in_dim, g), self.kernel_initializer, self.kernel_regularizer,
                                      constraint=self.kernel_constraint)
        self.recurrent_kernel = self.add_weight("recurrent_kernel", (self.units, g), self.recurrent_initializer,
                                                self.recurrent_regularizer, constraint=self.recurrent_constraint)
        if self.use_bias:
            self.bias = self.add_weight("bias", self._bias_shape(), self._bias_init(), self.bias_regularizer,
                                        constraint=self.bias_constraint)
        self.built = True

    # Dropout masks: drawn at the first step of a sequence, kept for all its steps.
    def reset_dropout_mask(self):
        self._dp_mask = None

    def reset_recurrent_dropout_mask(self):
        self._rec_dp_mask = None

    _step_rank = 2  # the rank of one step's input: [N, features]

    def _input_dropped(self, x, training):
        """``x`` (one step, or a sequence [N, T, ...]) times the sequence's input dropout mask
        (one mask of a step's shape, the same for every step, as Keras)."""
        if not training or self.dropout == 0:
            return x
        seq = x.ndim > self._step_rank
        if self._dp_mask is None:
            step = (x.shape[0],) + tuple(x.shape[2:] if seq else x.shape[1:])
            self._dp_mask = _dropout_mask(x, step, self.dropout)
        m = self._dp_mask
        return x * (ops.reshape(m, (m.shape[0], 1) + tuple(m.shape[1:])) if seq else m)

    def _state_dropped(self, h, training):
        if not training or self.recurrent_dropout == 0:
            return h
        if self._rec_dp_mask is None:
            self._rec_dp_mask = _dropout_mask(h, h.shape, self.recurrent_dropout)
        return h * self._rec_dp_mask

    def _input_bias(self):
        return self.bias

    # Within one sequence, slices of the weights are taken once (not at every step).
    def _begin(self):
        self._cache = {}

    def _end(self):
        self._cache = None

    def _cached(self, key, make):
        cache = getattr(self, "_cache", None)
        if cache is None:
            return make()
        if key not in cache:
            cache[key] = make()
        return cache[key]

    def _project(self, x, training=None):
        """x [..., in] -> x @ kernel + input bias [..., gates * units], with input dropout (one matmul)."""
        x = self._input_dropped(self._cast_in(x), training)
        lead = x.shape[:-1]
        y = ops.dense(ops.reshape(x, (-1, x.shape[-1])), self.kernel, self._input_bias())
        return ops.reshape(y, lead + (y.shape[-1],))

    def _recur(self, xp, states, training=None):
        raise NotImplementedError

    def call(self, inputs, states, training=None):
        """One step: inputs [N, in], states (a list, or one Tensor) -> (output [N, units], new states)."""
        single = isinstance(states, Tensor)
        out, new = self._recur(self._project(inputs, training), [states] if single else list(states), training)
        return out, (new[0] if single else new)

    def get_initial_state(self, batch_size=None, like=None):
        sizes = self.state_size if isinstance(self.state_size, (list, tuple)) else [self.state_size]
        kw = {} if like is None else {"backend": like.backend}
        return [zeros((batch_size, s), self.compute_dtype, **kw) for s in sizes]  # the states' dtype in call

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        cfg = {**super().get_config(), "units": self.units, "activation": act_config(self.activation),
               "recurrent_activation": act_config(self.recurrent_activation), "use_bias": self.use_bias,
               "kernel_initializer": init_config(self.kernel_initializer),
               "recurrent_initializer": init_config(self.recurrent_initializer),
               "bias_initializer": init_config(self.bias_initializer),
               "kernel_regularizer": reg_config(self.kernel_regularizer),
               "recurrent_regularizer": reg_config(self.recurrent_regularizer),
               "bias_regularizer": reg_config(self.bias_regularizer),
               "kernel_constraint": constraint_config(self.kernel_constraint),
               "recurrent_constraint": constraint_config(self.recurrent_constraint),
               "bias_constraint": constraint_config(self.bias_constraint),
               "dropout": self.dropout, "recurrent_dropout": self.recurrent_dropout, "seed": self.seed}
        return cfg


class SimpleRNNCell(_Cell):
    """``h = activation(x @ kernel + h_prev @ recurrent_kernel + bias)``; state [N, units]."""

    def __init__(self, units, activation="tanh", use_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros", kernel_regularizer=None,
                 recurrent_regularizer=None, bias_regularizer=None, kernel_constraint=None,
                 recurrent_constraint=None, bias_constraint=None, dropout=0.0, recurrent_dropout=0.0, seed=None,
                 **kwargs):
        super().__init__(units, activation, "sigmoid", use_bias, kernel_initializer, recurrent_initializer,
                         bias_initializer, kernel_regularizer, recurrent_regularizer, bias_regularizer,
                         kernel_constraint, recurrent_constraint, bias_constraint, dropout, recurrent_dropout,
                         seed, **kwargs)

    def _recur(self, xp, states, training=None):
        h_prev = states[0]
        z = xp + ops.matmul(self._state_dropped(h_prev, training), self.recurrent_kernel)
        h = _simple_step(z, self.activation)
        return h, [h]

    def get_config(self):
        cfg = super().get_config()
        del cfg["recurrent_activation"]
        return cfg


class LSTMCell(_Cell):
    """LSTM step (gates i, f, c, o as Keras); states [h, c], each [N, units].

    ``unit_forget_bias`` initializes the forget gate's bias to 1 (the rest
    with ``bias_initializer``), as Keras.
    """

    _gates = 4

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 unit_forget_bias=True, kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 kernel_constraint=None, recurrent_constraint=None, bias_constraint=None, dropout=0.0,
                 recurrent_dropout=0.0, seed=None, **kwargs):
        super().__init__(units, activation, recurrent_activation, use_bias, kernel_initializer,
                         recurrent_initializer, bias_initializer, kernel_regularizer, recurrent_regularizer,
                         bias_regularizer, kernel_constraint, recurrent_constraint, bias_constraint, dropout,
                         recurrent_dropout, seed, **kwargs)
        # TF.js writes null for "not set", which builds as False there.
        self.unit_forget_bias = bool(unit_forget_bias)

    @property
    def state_size(self):
        return [self.units, self.units]

    def _bias_init(self):
        if not self.unit_forget_bias:
            return self.bias_initializer
        base, u = self.bias_initializer, self.units

        def init(shape, dtype="float32"):
            return ops.concat([base((u,), dtype), initializers.get("ones")((u,), dtype),
                               base((2 * u,), dtype)], axis=0)
        return init

    def _recur(self, xp, states, training=None):
        h_prev, c_prev = states
        z = xp + ops.matmul(self._state_dropped(h_prev, training), self.recurrent_kernel)
        h, c = _lstm_step(z, c_prev, self.activation, self.recurrent_activation)
        return h, [h, c]

    def get_config(self):
        return {**super().get_config(), "unit_forget_bias": self.unit_forget_bias}


class GRUCell(_Cell):
    """GRU step (gates z, r, h as Keras); state [N, units].

    ``reset_after=True`` (Keras 3's default, cuDNN's form): bias [2, 3 units]
    (input and recurrent), the reset gate applied after the recurrent matmul.
    ``reset_after=False`` (TF.js's only form, Keras 2's default before 2.x):
    bias [3 units], the reset gate applied to h_prev before it.
    """

    _gates = 3

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None, kernel_constraint=None,
                 recurrent_constraint=None, bias_constraint=None, dropout=0.0, recurrent_dropout=0.0,
                 reset_after=True, seed=None, **kwargs):
        super().__init__(units, activation, recurrent_activation, use_bias, kernel_initializer,
                         recurrent_initializer, bias_initializer, kernel_regularizer, recurrent_regularizer,
                         bias_regularizer, kernel_constraint, recurrent_constraint, bias_constraint, dropout,
                         recurrent_dropout, seed, **kwargs)
        self.reset_after = bool(reset_after)

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _input_bias(self):
        if self.bias is None or not self.reset_after:
            return self.bias
        return self.bias[0]

    def _recur(self, xp, states, training=None):
        h_prev = states[0]
        hd = self._state_dropped(h_prev, training)
        u = self.units
        if self.reset_after:
            h_rec = ops.matmul(hd, self.recurrent_kernel)
            if self.bias is not None:
                h_rec = h_rec + self._cached("recurrent_bias", lambda: self.bias[1])
            h = _gru_step(xp, h_rec, h_prev, self.activation, self.recurrent_activation)
        else:
            rk = self.recurrent_kernel
            h_rec = ops.matmul(hd, self._cached("rk_zr", lambda: rk[:, :2 * u]))
            h = _gru_step_reset_before(xp, h_prev, h_rec, self._cached("rk_h", lambda: rk[:, 2 * u:]),
                                       self.activation, self.recurrent_activation)
        return h, [h]

    def set_weights(self, weights):
        _check_gru_bias(self, self, weights)
        super().set_weights(weights)

    def get_config(self):
        return {**super().get_config(), "reset_after": self.reset_after}


def _check_gru_bias(layer, cell, weights):
    """A clear error when the bias given is the other reset_after form's."""
    weights = list(weights)
    if not cell.use_bias or len(weights) != 3:
        return
    got = tuple(getattr(weights[2], "shape", ()))
    want = cell._bias_shape()
    if got != want and got in ((3 * cell.units,), (2, 3 * cell.units)):
        other = not cell.reset_after
        raise ValueError(
            f"layer {layer.name!r} ({type(layer).__name__}) has reset_after={cell.reset_after} and so a bias of "
            f"shape {want}; the weights given have a bias of shape {got}, from a GRU with reset_after={other} "
            f"({'TF.js' if not other else 'Keras 3'}'s default is {other}); build the layer with "
            f"reset_after={other} to load them")


class StackedRNNCells(Layer):
    """Several cells run as one: each step feeds the output of one cell to the next.

    ``state_size`` lists every cell's states in order; the output is the last cell's.
    """

    def __init__(self, cells, **kwargs):
        super().__init__(**kwargs)
        cells = [_deserialize(c) for c in cells]
        for c in cells:
            _check_cell(c, "StackedRNNCells")
        if not cells:
            raise ValueError("StackedRNNCells needs at least one cell")
        self.cells = cells

    def _sublayers(self):
        return [c for c in self.cells if isinstance(c, Layer)]

    def _keras_sublayers(self):
        # Keras names each cell's group by its class in snake_case, made unique ("cells/lstm_cell").
        return [("cells/", c) for c in self.cells]

    @property
    def state_size(self):
        out = []
        for c in self.cells:
            s = c.state_size
            out.extend(s if isinstance(s, (list, tuple)) else [s])
        return out

    @property
    def output_size(self):
        last = self.cells[-1]
        return getattr(last, "output_size", None) or _sizes(last.state_size)[0]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for c in self.cells:
            if isinstance(c, Layer) and not c.built:
                c.build(shape)
                c.built = True
                c._build_input_shape = shape
            out = getattr(c, "output_size", None) or _sizes(c.state_size)[0]
            shape = shape[:-1] + (out,)
        self.built = True

    def call(self, inputs, states, training=None):
        states = list(states)
        x, new, k = inputs, [], 0
        for c in self.cells:
            n = len(_sizes(c.state_size))
            own = states[k:k + n]
            k += n
            x, ns = _cell_call(c, x, own, training)
            new.extend(ns if isinstance(ns, (list, tuple)) else [ns])
        return x, new

    def get_initial_state(self, batch_size=None, like=None):
        out = []
        for c in self.cells:
            out.extend(_initial_states(c, batch_size, like))
        return out

    def get_config(self):
        from ..registry import serialize_layer
        return {**super().get_config(), "cells": [serialize_layer(c) for c in self.cells]}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        cfg = dict(config)
        cfg["cells"] = [_deserialize(_with_dtype(c, cfg.get("dtype")), custom_objects) for c in cfg["cells"]]
        return cls(**cfg)


def _sizes(state_size):
    return list(state_size) if isinstance(state_size, (list, tuple)) else [state_size]


def _deserialize(obj, custom=None):
    if isinstance(obj, dict):
        from ..registry import deserialize_layer
        return deserialize_layer(obj, custom)
    return obj


def _check_cell(cell, where):
    if not callable(getattr(cell, "call", None)):
        raise ValueError(f"{where}: a cell needs a call(inputs, states) method; got {cell!r}")
    size = getattr(cell, "state_size", None)
    if size is None or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in _sizes(size)):
        raise ValueError(f"{where}: a cell needs a state_size (a positive int, or a list of them, one per state); "
                         f"{type(cell).__name__} has {size!r}")


def _cell_call(cell, x, states, training):
    kw = {"training": training} if getattr(cell, "_call_accepts_training", False) else {}
    out = cell.call(x, states, **kw)
    if not (isinstance(out, (list, tuple)) and len(out) == 2):
        raise ValueError(f"cell {getattr(cell, 'name', cell)!r}: call(inputs, states) must return "
                         f"(output, new_states); got {type(out).__name__}")
    return out


def _initial_states(cell, batch, like):
    fn = getattr(cell, "get_initial_state", None)
    if fn is not None and isinstance(cell, (_Cell, StackedRNNCells)):
        return fn(batch, like)
    if fn is not None:
        got = fn(batch_size=batch)
        return list(got) if isinstance(got, (list, tuple)) else [got]
    return [zeros((batch, s), like.dtype, backend=like.backend) for s in _sizes(cell.state_size)]


# -------------------------------------------------------------------- RNN
_RNN_KEYS = ("return_sequences", "return_state", "go_backwards", "stateful", "unroll", "zero_output_for_mask")


class RNN(WeightedLayer):
    """Runs ``cell`` over the time axis of [batch, time, features] inputs.

    ``RNN(cell, return_sequences=False, return_state=False, go_backwards=False,
    stateful=False, unroll=False, zero_output_for_mask=False)``; ``cell`` is a
    cell (deepgpu's or any object with ``state_size`` and ``call(inputs,
    states)``), or a list of cells (stacked). Call it as ``layer(x,
    initial_state=None, mask=None, training=None)``. Output: [batch, units]
    (the last step's), or [batch, time, units] with ``return_sequences`` (in the
    order processed: reversed with ``go_backwards``, as Keras); with
    ``return_state`` a list [output, *final states]. ``stateful`` keeps the
    final states of a batch as the initial states of the next (the batch size
    then stays fixed; ``reset_states()`` zeroes them). ``unroll`` is accepted
    for Keras compatibility: the loop always runs step by step in Python.
    """

    def __init__(self, cell, return_sequences=False, return_state=False, go_backwards=False, stateful=False,
                 unroll=False, zero_output_for_mask=False, activity_regularizer=None, time_major=False, **kwargs):
        if time_major:  # Keras 2 wrote it, always False in practice
            raise ValueError(f"{type(self).__name__}: time_major=True is not supported; inputs are "
                             f"[batch, time, features]")
        super().__init__(**kwargs)
        cell = _deserialize(cell)
        if isinstance(cell, (list, tuple)):
            cell = StackedRNNCells([_deserialize(c) for c in cell])
        _check_cell(cell, f"layer {self.name!r} ({type(self).__name__})")
        self.cell = cell
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.unroll = bool(unroll)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self._setup_activity(activity_regularizer)
        self.input_spec = InputSpec(min_ndim=3)
        self.states = None  # stateful: Variables, one per state
        self._symbolic_mask_seen = False

    supports_masking = True
    _keras_states_as_kwargs = True  # a graph node [x, *states] is Keras's call(x, initial_state=[...])

    def _sublayers(self):
        return [self.cell] if isinstance(self.cell, Layer) else []

    def _keras_sublayers(self):
        return [("cell", self.cell)]

    @property
    def state_size(self):
        return _sizes(self.cell.state_size)

    @property
    def output_size(self):
        return getattr(self.cell, "output_size", None) or self.state_size[0]

    def build(self, input_shape):
        states = None
        if isinstance(input_shape, list):  # [x, *initial states] from a symbolic call
            input_shape, states = input_shape[0], [tuple(s) for s in input_shape[1:]]
        if len(input_shape) < 3:
            raise ValueError(
                f"Input 0 of layer {self.name!r} ({type(self).__name__}) is incompatible: expected "
                f"[batch, time, features] (min_ndim=3), found shape {fmt_shape(input_shape)}")
        step = (input_shape[0],) + tuple(input_shape[2:])
        if isinstance(self.cell, Layer) and not self.cell.built:
            self.cell.build(step)
            self.cell.built = True
            self.cell._build_input_shape = step
        if states:
            self._check_symbolic_states(states, tuple(input_shape))
        self._name_weights()
        self.built = True

    def _check_symbolic_states(self, got, input_shape):
        """A functional graph's initial states must match the cell's state sizes (the batch may be None)."""
        want = self._state_shapes(input_shape)
        if len(got) != len(want) or any(len(g) != len(w) or any(a is not None and b is not None and a != b
                                                               for a, b in zip(g[1:], w[1:]))
                                         for g, w in zip(got, want)):
            raise ValueError(
                f"layer {self.name!r} ({type(self).__name__}): initial_state must be {len(want)} tensor(s) of "
                f"shape(s) {', '.join(map(fmt_shape, want))} (batch, state size); got {len(got)} of shape(s) "
                f"{', '.join(map(fmt_shape, got))}")

    def _name_weights(self):
        """Weights named ``<layer>/<weight>`` as TF.js names an RNN's (the cell is not in the name)."""
        if isinstance(self.cell, StackedRNNCells):  # TF.js numbers a stack's cells: <rnn>/RNNCell_0/kernel
            for i, c in enumerate(self.cell.cells):
                for w in getattr(c, "weights", []):
                    w.name = f"{self.name}/RNNCell_{i}/{w.name.split('/')[-1]}"
            return
        for w in getattr(self.cell, "weights", []):
            w.name = f"{self.name}/{w.name.split('/')[-1]}"

    def __call__(self, inputs, training=None, initial_state=None, **kwargs):
        from .base import SymbolicTensor

        check_not_ragged(self, inputs)
        if isinstance(inputs, SymbolicTensor) and inputs._keras_mask is not None:
            self._symbolic_mask_seen = True
        if initial_state is not None:
            states = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
            if any(isinstance(t, SymbolicTensor) for t in [inputs] + states):
                # In a functional graph the states are inputs of the node ([x, *states]), as in
                # Keras 2 and TF.js: the graph then runs, saves and loads them like any input.
                return super().__call__([inputs] + states, training=training, **kwargs)
            kwargs["initial_state"] = initial_state
        return super().__call__(inputs, training=training, **kwargs)

    # ------------------------------------------------------------- states
    def get_initial_state(self, batch_size, like=None):
        return _initial_states(self.cell, batch_size, like)

    def reset_states(self, states=None):
        """Zero the states of a stateful layer (or set them to ``states``: one array per state)."""
        if not self.stateful:
            raise AttributeError(f"layer {self.name!r} ({type(self).__name__}) is not stateful")
        if self.states is None:
            return
        if states is None:
            for v in self.states:
                v.assign(v.data_sync() * 0)
            return
        states = list(states) if isinstance(states, (list, tuple)) else [states]
        want = [tuple(v.shape) for v in self.states]
        got = [tuple(getattr(s, "shape", ())) for s in states]
        if got != want:
            raise ValueError(f"layer {self.name!r} ({type(self).__name__}): reset_states expects states of shapes "
                             f"{want}, got {got}")
        for v, s in zip(self.states, states):
            v.assign(s)

    reset_state = reset_states

    def _checked_initial(self, initial_state, batch, x):
        states = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
        states = [s if isinstance(s, Tensor) else _as_tensor(s, x) for s in states]
        want = self._state_shapes(tuple(x.shape))
        got = [tuple(s.shape) for s in states]
        if got != want:
            raise ValueError(
                f"layer {self.name!r} ({type(self).__name__}): initial_state must be {len(want)} tensor(s) of "
                f"shape(s) {want} (batch, state size); got {len(got)} of shape(s) {got}")
        return [s if s.dtype == x.dtype else ops.cast(s, x.dtype) for s in states]

    def _stateful_states(self, batch, x):
        from ..tensor import Variable

        if self.states is None:
            fixed = self._batch_input_shape[0] if self._batch_input_shape is not None else None
            if fixed is not None and fixed != batch:
                raise ValueError(self._batch_error(fixed, batch))
            self.states = [Variable(s.data_sync(), trainable=False, name=f"{self.name}/state_{i}")
                           for i, s in enumerate(self.get_initial_state(batch, x))]
            for v in self.states:
                v.set_trainable(False)
        elif self.states[0].shape[0] != batch:
            raise ValueError(self._batch_error(self.states[0].shape[0], batch))
        return [Tensor(v.data, v._backend) for v in self.states]

    def _batch_error(self, want, got):
        return (f"layer {self.name!r} ({type(self).__name__}) is stateful: its states hold batches of {want}, "
                f"and it received a batch of {got}; feed batches of {want} (a batch_size that divides the data), "
                f"or build a new layer for another batch size")

    # --------------------------------------------------------------- call
    def call(self, inputs, initial_state=None, mask=None, training=None):
        if isinstance(inputs, (list, tuple)):  # [x, *initial states] from a functional graph
            inputs, initial_state = inputs[0], list(inputs[1:]) or initial_state
            if isinstance(mask, (list, tuple)):
                # The masks that came with [x, *states]: Keras passes no mask with initial_state
                # (only one given as mask= counts), so neither does deepgpu.
                mask = None
        x = inputs
        if x.ndim < 3:
            raise ValueError(f"layer {self.name!r} ({type(self).__name__}) expects [batch, time, features], "
                             f"got shape {x.shape}")
        batch = x.shape[0]
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if mask is not None:
            mask = step_mask(self, mask, x)
        if initial_state is not None:
            states = self._checked_initial(initial_state, batch, x)
            if self.stateful:
                self._stateful_states(batch, x)  # the batch size check, before any work
        elif self.stateful:
            states = self._stateful_states(batch, x)
        else:
            states = self.get_initial_state(batch, x)
        last, outputs, states = self._loop(x, states, mask, training)
        if self.stateful:
            for v, s in zip(self.states, states):
                v.assign(s.data_sync() if v._backend is not s._backend else s.data)
        out = outputs if self.return_sequences else last
        out = self._activity(out)
        return [out] + list(states) if self.return_state else out

    def _loop(self, x, states, mask, training):
        cell = self.cell
        fast = isinstance(cell, _Cell)
        if fast:
            cell.reset_dropout_mask()
            cell.reset_recurrent_dropout_mask()
            cell._begin()
            xs = _time_steps(cell._project(x, training))
        else:
            for c in getattr(cell, "cells", [cell]):
                if isinstance(c, _Cell):
                    c.reset_dropout_mask()
                    c.reset_recurrent_dropout_mask()
            xs = _time_steps(x)
        if not xs:
            raise ValueError(f"layer {self.name!r} ({type(self).__name__}) received a sequence of 0 time steps")
        ms = None
        if mask is not None:
            rank = len(self.compute_output_shape(tuple(x.shape))[0] if self.return_state
                       else self.compute_output_shape(tuple(x.shape))) - (1 if self.return_sequences else 0)
            m = mask.data.reshape((x.shape[0], x.shape[1]) + (1,) * (rank - 1))
            ms = [Tensor(m[:, t], mask._backend) for t in range(x.shape[1])]
        order = range(len(xs) - 1, -1, -1) if self.go_backwards else range(len(xs))
        outs, prev = [], None
        for t in order:
            if fast:
                out, new = cell._recur(xs[t], states, training)
            else:
                # A list even for one state, as Keras and TF.js give it: cells written
                # after Keras's example read states[0].
                out, new = _cell_call(cell, xs[t], list(states), training)
                new = list(new) if isinstance(new, (list, tuple)) else [new]
            if ms is not None:
                m = ms[t]
                if prev is None:
                    prev = out * 0.0
                out = ops.where(m, out, out * 0.0 if self.zero_output_for_mask else prev)
                new = [ops.where(m, n, s) for n, s in zip(new, states)]
            prev, states = out, new
            if self.return_sequences:
                outs.append(out)
        if fast:
            cell._end()
        outputs = ops.stack(outs, axis=1) if self.return_sequences else None
        return prev, outputs, states

    def _state_shapes(self, input_shape):
        """The shape of each state for a [batch, time, ...] input shape."""
        return [(input_shape[0], s) for s in self.state_size]

    def _step_output_shape(self, input_shape):
        return (input_shape[0], self.output_size)

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, list):
            input_shape = input_shape[0]
        one = self._step_output_shape(input_shape)
        out = (one[0], input_shape[1]) + tuple(one[1:]) if self.return_sequences else one
        if self.return_state:
            return [out] + self._state_shapes(input_shape)
        return out

    def compute_mask(self, inputs, previous_mask=None):
        mask = previous_mask[0] if isinstance(previous_mask, (list, tuple)) else previous_mask
        out = mask if self.return_sequences else None
        if self.return_state:
            return [out] + [None] * len(self.state_size)
        return out

    def get_config(self):
        from ..registry import serialize_layer
        cfg = {**super().get_config(), **{k: getattr(self, k) for k in _RNN_KEYS}}
        if type(self) is RNN:
            cfg["cell"] = serialize_layer(self.cell)
            if self.activity_regularizer is not None:
                cfg["activity_regularizer"] = reg_config(self.activity_regularizer)
        return cfg

    @classmethod
    def from_config(cls, config, custom_objects=None):
        cfg = dict(config)
        if "cell" in cfg:
            cfg["cell"] = _deserialize(_with_dtype(cfg["cell"], cfg.get("dtype")), custom_objects)
        return cls(**cfg)


def _with_dtype(spec, dtype):
    """A nested layer config given the wrapper's dtype (a float64 copy of a model stays float64 throughout)."""
    if not isinstance(spec, dict) or dtype is None or not isinstance(spec.get("config"), dict):
        return spec
    cfg = dict(spec["config"], dtype=dtype)
    if "cells" in cfg:
        cfg["cells"] = [_with_dtype(c, dtype) for c in cfg["cells"]]
    for k in ("cell", "layer", "backward_layer"):
        if k in cfg:
            cfg[k] = _with_dtype(cfg[k], dtype)
    return {**spec, "config": cfg}


def _as_tensor(value, like):
    from ..tensor import tensor
    return tensor(value, like.dtype, backend=like.backend)


class _CellRNN(RNN):
    """SimpleRNN, LSTM and GRU: an RNN that builds its own cell from the cell's arguments."""

    _cell_cls = None

    def __init__(self, units, return_sequences=False, return_state=False, go_backwards=False, stateful=False,
                 unroll=False, zero_output_for_mask=False, activity_regularizer=None, use_cudnn="auto", name=None,
                 trainable=True, dtype=None, input_shape=None, batch_input_shape=None, batch_size=None,
                 input_dim=None, implementation=None, time_major=False, **cell_kwargs):
        # Keras 3's use_cudnn and Keras 2's implementation pick an implementation: the values are the same.
        del use_cudnn, implementation
        if time_major:
            raise ValueError(f"{type(self).__name__}: time_major=True is not supported; inputs are "
                             f"[batch, time, features]")
        shape_kw = {k: cell_kwargs.pop(k) for k in ("inputShape", "batchInputShape", "inputDim") if k in cell_kwargs}
        cell = self._cell_cls(units, dtype=dtype, trainable=trainable,
                              name=f"{name}_cell" if name else None, **cell_kwargs)
        super().__init__(cell, return_sequences, return_state, go_backwards, stateful, unroll, zero_output_for_mask,
                         activity_regularizer, name=name, trainable=trainable, dtype=dtype, input_shape=input_shape,
                         batch_input_shape=batch_input_shape, batch_size=batch_size, input_dim=input_dim, **shape_kw)

    def __getattr__(self, key):
        # units, activation, dropout...: the cell's (Keras's LSTM exposes them the same way).
        if key.startswith("_") or key in ("cell",):
            raise AttributeError(key)
        cell = self.__dict__.get("cell")
        if cell is not None and hasattr(cell, key):
            return getattr(cell, key)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {key!r}")

    def get_config(self):
        cell = self.cell.get_config()
        for k in ("name", "trainable", "dtype"):
            cell.pop(k, None)
        return {**super().get_config(), **cell, "activity_regularizer": reg_config(self.activity_regularizer)}


def _with_signature(cls):
    """Give ``cls.__init__`` the full signature (the cell's arguments, then RNN's), so that
    ``help()`` and the file loaders that check option names see every argument."""
    inner = cls.__dict__.get("__init__", _CellRNN.__init__)

    def __init__(self, *args, **kwargs):
        inner(self, *args, **kwargs)

    cell = [p for n, p in inspect.signature(cls._cell_cls.__init__).parameters.items()
            if n not in ("self", "kwargs")]
    names = {p.name for p in cell}
    rnn = [p.replace(kind=p.KEYWORD_ONLY) for n, p in inspect.signature(inner).parameters.items()
           if n not in ("self", "units", "filters", "kernel_size", "cell_kwargs") and n not in names]
    self_p = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    kw = inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)
    __init__.__signature__ = inspect.Signature([self_p] + cell + rnn + [kw])
    __init__.__doc__ = cls.__doc__
    cls.__init__ = __init__
    return cls


@_with_signature
class SimpleRNN(_CellRNN):
    """A fully connected RNN: ``SimpleRNN(units, activation="tanh", ...)`` (SimpleRNNCell's and RNN's arguments)."""

    _cell_cls = SimpleRNNCell


@_with_signature
class LSTM(_CellRNN):
    """Long short-term memory: ``LSTM(units, activation="tanh", recurrent_activation="sigmoid",
    unit_forget_bias=True, dropout=0., recurrent_dropout=0., return_sequences=False, ...)``
    (LSTMCell's and RNN's arguments). Weights: kernel [in, 4u], recurrent_kernel [u, 4u], bias [4u]."""

    _cell_cls = LSTMCell


@_with_signature
class GRU(_CellRNN):
    """Gated recurrent unit: ``GRU(units, reset_after=True, ...)`` (GRUCell's and RNN's arguments).

    Weights: kernel [in, 3u], recurrent_kernel [u, 3u], bias [2, 3u] (reset_after=True, Keras 3's
    default) or [3u] (reset_after=False, TF.js's). Loading weights of the other form raises,
    naming the layer and the reset_after to use.
    """

    _cell_cls = GRUCell

    def set_weights(self, weights):
        _check_gru_bias(self, self.cell, weights)
        super().set_weights(weights)


# ------------------------------------------------------------ ConvLSTM2D
def _conv_len(n, k, s, padding, d):
    if n is None:
        return None
    if padding == "same":
        return -(-n // s)
    return (n - (k - 1) * d - 1) // s + 1


class ConvLSTM2DCell(LSTMCell):
    """An LSTM step whose matmuls are convolutions: input [N, H, W, C] -> h [N, H', W', filters].

    kernel [kh, kw, C, 4 filters] (strides, padding, dilation_rate apply to it), recurrent_kernel
    [kh, kw, filters, 4 filters] ('same', stride 1), bias [4 filters]; gates i, f, c, o as Keras.
    """

    _step_rank = 4

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1,
                 activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 unit_forget_bias=True, kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 kernel_constraint=None, recurrent_constraint=None, bias_constraint=None, dropout=0.0,
                 recurrent_dropout=0.0, seed=None, **kwargs):
        from ._utils import channels_last, padding_arg, pair
        super().__init__(filters, activation, recurrent_activation, use_bias, kernel_initializer,
                         recurrent_initializer, bias_initializer, unit_forget_bias, kernel_regularizer,
                         recurrent_regularizer, bias_regularizer, kernel_constraint, recurrent_constraint,
                         bias_constraint, dropout, recurrent_dropout, seed, **kwargs)
        cls = type(self).__name__
        self.filters = self.units
        self.kernel_size = pair(kernel_size, "kernel_size", cls)
        self.strides = pair(strides, "strides", cls)
        self.dilation_rate = pair(dilation_rate, "dilation_rate", cls)
        self.padding = padding_arg(padding, cls)
        self.data_format = channels_last(data_format, cls)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(f"{cls}: strides > 1 and dilation_rate > 1 cannot be combined (as in Keras)")

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(f"layer {self.name!r} ({type(self).__name__}) expects steps [batch, rows, cols, "
                             f"channels] with known channels; received {fmt_shape(input_shape)}")
        kh, kw = self.kernel_size
        g = 4 * self.filters
        self.kernel = self.add_weight("kernel", (kh, kw, input_shape[-1], g), self.kernel_initializer,
                                      self.kernel_regularizer, constraint=self.kernel_constraint)
        self.recurrent_kernel = self.add_weight("recurrent_kernel", (kh, kw, self.filters, g),
                                                self.recurrent_initializer, self.recurrent_regularizer,
                                                constraint=self.recurrent_constraint)
        if self.use_bias:
            self.bias = self.add_weight("bias", (g,), self._bias_init(), self.bias_regularizer,
                                        constraint=self.bias_constraint)
        self.built = True

    def output_spatial(self, rows, cols):
        return tuple(_conv_len(n, k, st, self.padding, d) for n, k, st, d in
                     zip((rows, cols), self.kernel_size, self.strides, self.dilation_rate))

    def _project(self, x, training=None):
        x = self._input_dropped(self._cast_in(x), training)
        seq = x.ndim == 5
        folded = ops.reshape(x, (-1,) + tuple(x.shape[2:])) if seq else x
        y = ops.conv2d(folded, self.kernel, self.strides, self.padding, self.dilation_rate)
        if self.bias is not None:
            y = y + self.bias
        return ops.reshape(y, (x.shape[0], x.shape[1]) + tuple(y.shape[1:])) if seq else y

    def _recur(self, xp, states, training=None):
        h_prev, c_prev = states
        z = xp + ops.conv2d(self._state_dropped(h_prev, training), self.recurrent_kernel, 1, "same")
        g = z.shape[-1]
        h, c = _lstm_step(ops.reshape(z, (-1, g)), ops.reshape(c_prev, (-1, g // 4)), self.activation,
                          self.recurrent_activation)
        return ops.reshape(h, h_prev.shape), [ops.reshape(h, h_prev.shape), ops.reshape(c, c_prev.shape)]

    def get_initial_state(self, batch_size=None, like=None):
        rows, cols = self.output_spatial(like.shape[-3], like.shape[-2])
        return [zeros((batch_size, rows, cols, self.filters), self.dtype, backend=like.backend) for _ in range(2)]

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self.output_spatial(input_shape[1], input_shape[2]) + (self.filters,)

    def get_config(self):
        cfg = super().get_config()
        units = cfg.pop("units")
        return {**cfg, "filters": units, "kernel_size": list(self.kernel_size), "strides": list(self.strides),
                "padding": self.padding, "data_format": self.data_format,
                "dilation_rate": list(self.dilation_rate)}


class ConvLSTM2D(RNN):
    _cell_cls = ConvLSTM2DCell

    """A convolutional LSTM over [batch, time, rows, cols, channels]:
    ``ConvLSTM2D(filters, kernel_size, strides=1, padding="valid", dilation_rate=1, activation="tanh",
    recurrent_activation="sigmoid", ..., return_sequences=False, return_state=False, go_backwards=False,
    stateful=False)`` (ConvLSTM2DCell's and RNN's arguments). Output [batch, rows', cols', filters], or
    [batch, time, rows', cols', filters] with return_sequences."""

    def __init__(self, filters, kernel_size, return_sequences=False, return_state=False, go_backwards=False,
                 stateful=False, unroll=False, zero_output_for_mask=False, activity_regularizer=None, name=None,
                 trainable=True, dtype=None, input_shape=None, batch_input_shape=None, batch_size=None,
                 input_dim=None, **cell_kwargs):
        shape_kw = {k: cell_kwargs.pop(k) for k in ("inputShape", "batchInputShape", "inputDim") if k in cell_kwargs}
        cell = ConvLSTM2DCell(filters, kernel_size, dtype=dtype, trainable=trainable,
                              name=f"{name}_cell" if name else None, **cell_kwargs)
        super().__init__(cell, return_sequences, return_state, go_backwards, stateful, unroll, zero_output_for_mask,
                         activity_regularizer, name=name, trainable=trainable, dtype=dtype, input_shape=input_shape,
                         batch_input_shape=batch_input_shape, batch_size=batch_size, input_dim=input_dim, **shape_kw)
        self.input_spec = InputSpec(ndim=5)

    __getattr__ = _CellRNN.__getattr__

    def build(self, input_shape):
        if isinstance(input_shape, list):
            input_shape = input_shape[0]
        if len(input_shape) != 5:
            raise ValueError(
                f"Input 0 of layer {self.name!r} (ConvLSTM2D) is incompatible: expected [batch, time, rows, cols, "
                f"channels] (ndim=5), found shape {fmt_shape(input_shape)}")
        super().build(input_shape)

    def _state_shapes(self, input_shape):
        spatial = self.cell.output_spatial(input_shape[2], input_shape[3])
        return [(input_shape[0],) + spatial + (self.cell.filters,)] * 2

    def _step_output_shape(self, input_shape):
        return self._state_shapes(input_shape)[0]

    def get_config(self):
        cell = self.cell.get_config()
        for k in ("name", "trainable", "dtype"):
            cell.pop(k, None)
        return {**super().get_config(), **cell, "activity_regularizer": reg_config(self.activity_regularizer)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


ConvLSTM2D = _with_signature(ConvLSTM2D)


# -------------------------------------------------------------- wrappers
_MERGE_MODES = ("sum", "mul", "concat", "ave", None)


class Bidirectional(Layer):
    """Runs a recurrent layer forwards and a copy (or ``backward_layer``) backwards, and merges them.

    ``Bidirectional(layer, merge_mode="concat", backward_layer=None)``;
    merge_mode: "concat", "sum", "mul", "ave", or None (a list [forward,
    backward]). The backward output is flipped back to the input's time order
    when it is a sequence. With ``return_state`` the output is followed by the
    forward states, then the backward ones. Weights: the forward layer's, then
    the backward layer's.
    """

    def __init__(self, layer, merge_mode="concat", weights=None, backward_layer=None, **kwargs):
        super().__init__(**kwargs)
        layer = _deserialize(layer)
        backward_layer = _deserialize(backward_layer)
        if not isinstance(layer, RNN):
            raise ValueError(f"Bidirectional: layer must be a recurrent layer (RNN, LSTM, GRU, SimpleRNN); got "
                             f"{type(layer).__name__}")
        if merge_mode not in _MERGE_MODES:
            raise ValueError(f"Bidirectional: merge_mode must be one of {list(_MERGE_MODES)}, got {merge_mode!r}")
        if weights is not None:
            raise ValueError("Bidirectional: weights= is not supported; call set_weights after building")
        cfg = layer.get_config()
        self.forward_layer = type(layer).from_config({**cfg, "name": f"forward_{layer.name}"})
        if backward_layer is None:
            self.backward_layer = type(layer).from_config({**cfg, "name": f"backward_{layer.name}",
                                                           "go_backwards": not layer.go_backwards})
        else:
            if not isinstance(backward_layer, RNN):
                raise ValueError(f"Bidirectional: backward_layer must be a recurrent layer; got "
                                 f"{type(backward_layer).__name__}")
            for k in ("return_sequences", "return_state"):
                if getattr(backward_layer, k) != getattr(layer, k):
                    raise ValueError(f"Bidirectional: layer and backward_layer must agree on {k} "
                                     f"({getattr(layer, k)} vs {getattr(backward_layer, k)})")
            if backward_layer.go_backwards == layer.go_backwards:
                raise ValueError("Bidirectional: backward_layer must have go_backwards opposite to layer's "
                                 f"({layer.go_backwards}); it has {backward_layer.go_backwards}")
            self.backward_layer = backward_layer
        self._user_backward = backward_layer is not None
        self.merge_mode = merge_mode
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state
        self.stateful = layer.stateful
        for rnn in (self.forward_layer, self.backward_layer):
            # As Keras: a masked step's output is zero in a sequence, so the two directions line up.
            rnn.zero_output_for_mask = rnn.return_sequences
        self.input_spec = InputSpec(min_ndim=3)

    supports_masking = True

    def _sublayers(self):
        return [self.forward_layer, self.backward_layer]

    def _keras_sublayers(self):
        return [("forward_layer", self.forward_layer), ("backward_layer", self.backward_layer)]

    def build(self, input_shape):
        states = None
        if isinstance(input_shape, list):  # [x, *initial states] from a symbolic call
            input_shape, states = input_shape[0], [tuple(s) for s in input_shape[1:]]
        for rnn in (self.forward_layer, self.backward_layer):
            if not rnn.built:
                rnn._maybe_build(tuple(input_shape))
        if states:
            fw, bw = self._split_states(states)
            try:
                self.forward_layer._check_symbolic_states(fw, tuple(input_shape))
                self.backward_layer._check_symbolic_states(bw, tuple(input_shape))
            except ValueError as e:
                raise ValueError(f"layer {self.name!r} (Bidirectional): {e}") from None
        for rnn in (self.forward_layer, self.backward_layer):
            for w in rnn.weights:  # TF.js's names: <bidirectional>/<forward_lstm>/kernel
                w.name = f"{self.name}/{rnn.name}/{w.name.split('/')[-1]}"
        self.built = True

    def __call__(self, inputs, training=None, initial_state=None, **kwargs):
        from .base import SymbolicTensor
        if isinstance(inputs, SymbolicTensor) and inputs._keras_mask is not None:
            self.forward_layer._symbolic_mask_seen = self.backward_layer._symbolic_mask_seen = True
        if initial_state is not None:
            states = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
            if any(isinstance(t, SymbolicTensor) for t in [inputs] + states):
                return super().__call__([inputs] + states, training=training, **kwargs)  # as RNN does
            kwargs["initial_state"] = initial_state
        return super().__call__(inputs, training=training, **kwargs)

    _keras_states_as_kwargs = True

    def _split_states(self, states):
        """(forward, backward) initial states: the forward layer's come first."""
        n = len(self.forward_layer.state_size)
        if len(states) != 2 * n:
            raise ValueError(f"layer {self.name!r} (Bidirectional): initial_state must hold {2 * n} tensors "
                             f"(the forward layer's {n}, then the backward layer's); got {len(states)}")
        return states[:n], states[n:]

    def call(self, inputs, initial_state=None, mask=None, training=None):
        if isinstance(inputs, (list, tuple)):  # [x, *initial states] from a functional graph
            inputs, initial_state = inputs[0], list(inputs[1:]) or initial_state
            if isinstance(mask, (list, tuple)):
                mask = None  # Keras passes no mask with initial_state
        fw_init = bw_init = None
        if initial_state is not None:
            fw_init, bw_init = self._split_states(list(initial_state))
        kw = {"mask": mask, "training": training}
        fw = self.forward_layer.call(inputs, initial_state=fw_init, **kw)
        bw = self.backward_layer.call(inputs, initial_state=bw_init, **kw)
        if self.return_state:
            fw, fw_states = fw[0], fw[1:]
            bw, bw_states = bw[0], bw[1:]
        if self.return_sequences:
            bw = ops.stack(_time_steps(bw)[::-1], axis=1)
        if self.merge_mode == "concat":
            out = ops.concat([fw, bw], axis=-1)
        elif self.merge_mode == "sum":
            out = fw + bw
        elif self.merge_mode == "mul":
            out = fw * bw
        elif self.merge_mode == "ave":
            out = (fw + bw) * 0.5
        else:
            out = [fw, bw]
        if self.return_state:
            return (out if isinstance(out, list) else [out]) + list(fw_states) + list(bw_states)
        return out

    def reset_states(self, states=None):
        for rnn in (self.forward_layer, self.backward_layer):
            rnn.reset_states()

    reset_state = reset_states

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, list):
            input_shape = input_shape[0]
        fw = self.forward_layer.compute_output_shape(input_shape)
        out, states = (fw[0], fw[1:]) if self.return_state else (fw, [])
        if self.merge_mode == "concat":
            out = tuple(out[:-1]) + (2 * out[-1],)
            outs = [out]
        elif self.merge_mode is None:
            outs = [out, out]
        else:
            outs = [out]
        if self.return_state:
            return outs + list(states) * 2
        return outs if len(outs) > 1 else outs[0]

    def compute_mask(self, inputs, previous_mask=None):
        mask = previous_mask[0] if isinstance(previous_mask, (list, tuple)) else previous_mask
        out = mask if self.return_sequences else None
        n_out = 2 if self.merge_mode is None else 1
        if self.return_state:
            return [out] * n_out + [None] * (2 * len(self.forward_layer.state_size))
        return [out] * n_out if n_out > 1 else out

    def get_config(self):
        from ..registry import serialize_layer
        fw = serialize_layer(self.forward_layer)
        fw["config"]["name"] = fw["config"]["name"][len("forward_"):]
        cfg = {**super().get_config(), "layer": fw, "merge_mode": self.merge_mode}
        if self._user_backward:
            cfg["backward_layer"] = serialize_layer(self.backward_layer)
        return cfg

    @classmethod
    def from_config(cls, config, custom_objects=None):
        cfg = dict(config)
        cfg["layer"] = _deserialize(_with_dtype(cfg["layer"], cfg.get("dtype")), custom_objects)
        if cfg.get("backward_layer") is not None:
            cfg["backward_layer"] = _deserialize(_with_dtype(cfg["backward_layer"], cfg.get("dtype")),
                                                 custom_objects)
        return cls(**cfg)


class TimeDistributed(Layer):
    """Applies ``layer`` to every time step: [batch, time, ...] -> [batch, time, ...layer's output].

    The steps are folded into the batch for one call of ``layer`` (so
    ``layer`` sees [batch * time, ...]). A mask passes through.
    """

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        layer = _deserialize(layer)
        if not isinstance(layer, Layer):
            raise ValueError(f"TimeDistributed: layer must be a Layer, got {type(layer).__name__}")
        self.layer = layer
        self.input_spec = InputSpec(min_ndim=3)

    supports_masking = True

    def _sublayers(self):
        return [self.layer]

    def _keras_sublayers(self):
        return [("layer", self.layer)]

    def _inner_shape(self, input_shape):
        return (None,) + tuple(input_shape[2:])

    def build(self, input_shape):
        self.layer._maybe_build(self._inner_shape(input_shape))
        for w in self.layer.weights:  # TF.js's names: <time_distributed>/kernel
            w.name = f"{self.name}/{w.name.split('/')[-1]}"
        self.built = True

    def call(self, inputs, training=None, mask=None):
        b, t = inputs.shape[0], inputs.shape[1]
        folded = ops.reshape(inputs, (b * t,) + inputs.shape[2:])
        kw = {"training": training} if self.layer._call_accepts_training else {}
        y = self.layer.call(folded, **kw)
        return ops.reshape(y, (b, t) + y.shape[1:])

    def compute_output_shape(self, input_shape):
        inner = self.layer.compute_output_shape(self._inner_shape(input_shape))
        return (input_shape[0], input_shape[1]) + tuple(inner[1:])

    def get_config(self):
        from ..registry import serialize_layer
        return {**super().get_config(), "layer": serialize_layer(self.layer)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        cfg = dict(config)
        cfg["layer"] = _deserialize(_with_dtype(cfg["layer"], cfg.get("dtype")), custom_objects)
        return cls(**cfg)


__all__ = ["RNN", "SimpleRNNCell", "LSTMCell", "GRUCell", "StackedRNNCells", "SimpleRNN", "LSTM", "GRU",
           "Bidirectional", "TimeDistributed", "ConvLSTM2DCell", "ConvLSTM2D"]
