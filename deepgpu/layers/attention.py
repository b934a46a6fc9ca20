"""Attention layers: MultiHeadAttention, GroupedQueryAttention (GroupQueryAttention),
Attention, AdditiveAttention, with Keras 3's arguments, weight layout and masks.

MultiHeadAttention and GroupedQueryAttention are called as Keras's are,
``layer(query, value, key=None, attention_mask=None, ...)``; the tensors
travel as one list input ``[query, value(, key)]`` (so ``layer([query,
value])`` works too, and a functional model records one node); a Keras file
writes them as separate arguments, as Keras does. Masks:
Keras masks attached to query / value / key (``Embedding(mask_zero=True)``),
or passed as query_mask / value_mask / key_mask, are combined as Keras's
``_compute_attention_mask`` does, with ``attention_mask`` [B, T, S] and the
causal mask (GroupedQueryAttention, as Keras 3.15's, uses only the masks
passed as arguments). A mask of the wrong shape
or dtype is a ValueError naming the layer and the shapes.

The projections are EinsumDense sublayers named as Keras names them
(query, key, value, attention_output), so Keras files load: a
``.keras`` file keeps their weights under ``query_dense``, ``key_dense``,
``value_dense``, ``output_dense`` (``_keras_sublayers``).
"""
from __future__ import annotations

import math

from .. import initializers, ops, regularizers
from ..tensor import Tensor, tensor, zeros_like
from .base import Layer, SymbolicTensor, fmt_shape
from .core import EinsumDense
from ._random import StepRandom
from ._utils import WeightedLayer, constraint_config, constraint_get, init_config, reg_config

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _proj_equation(free_dims, bound_dims, output_dims):
    """Keras's _build_proj_equation: (equation, bias_axes, output rank)."""
    i = free_dims
    inp = _LETTERS[:free_dims] + _LETTERS[i:i + bound_dims]
    kernel = _LETTERS[i:i + bound_dims] + _LETTERS[i + bound_dims:i + bound_dims + output_dims]
    out = _LETTERS[:free_dims] + _LETTERS[i + bound_dims:i + bound_dims + output_dims]
    return f"{inp},{kernel}->{out}", _LETTERS[i + bound_dims:i + bound_dims + output_dims], len(out)


def _attention_equations(rank, attn_axes):
    """Keras's _build_attention_equation for projected tensors of ``rank``: (dot, combine, scores rank)."""
    target = _LETTERS[:rank]
    batch = [i for i in range(rank) if i not in attn_axes and i != rank - 1]
    source, off = "", rank
    for i in range(rank):
        if i in batch or i == rank - 1:
            source += target[i]
        else:
            source += _LETTERS[off]
            off += 1
    product = "".join([target[i] for i in batch] + [target[i] for i in attn_axes] + [source[i] for i in attn_axes])
    return f"{source},{target}->{product}", f"{product},{source}->{target}", len(product)


def _bool_mask(layer, m, what):
    """A mask as a bool backend array; ValueError naming the layer for a non-bool / non-int dtype."""
    if m is None:
        return None
    if isinstance(m, SymbolicTensor):
        raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}): {what} must be a concrete mask "
                         f"(an array or Tensor); a mask inside a functional model comes from the inputs' "
                         f"Keras masks (Embedding(mask_zero=True))")
    t = m if isinstance(m, Tensor) else tensor(m)
    dt = str(t.dtype)
    if dt == "bool":
        return t
    if dt.startswith(("int", "uint")):
        return ops.not_equal(t, 0)
    raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}): {what} must be bool (or int 0/1), "
                     f"got dtype {dt}")


def _band(like, tq, ts, causal, window=None):
    """Bool [1, tq, ts] on ``like``'s backend: key j allowed for query i when j <= i (``causal``)
    and |i - j| < ``window`` (when given)."""
    B = like._backend
    rows = B.reshape(B.arange(tq), (1, tq, 1))
    cols = B.reshape(B.arange(ts), (1, 1, ts))
    m = B.compare(">=", rows, cols) if causal else B.compare(">=", B.zeros((1, tq, ts), "int32"), 0)
    if window is not None:
        m = B.logical("and", m, B.compare("<", B.abs(B.subtract(rows, cols)), window))
    return Tensor(m, B)


def _common_sublayer_kwargs(layer):
    return dict(kernel_initializer=initializers.get(init_config(layer.kernel_initializer)),
                bias_initializer=initializers.get(init_config(layer.bias_initializer)),
                kernel_regularizer=layer.kernel_regularizer, bias_regularizer=layer.bias_regularizer,
                activity_regularizer=layer.activity_regularizer, kernel_constraint=layer.kernel_constraint,
                bias_constraint=layer.bias_constraint, dtype=layer.dtype_policy)


class _QKVAttention(WeightedLayer):
    """Shared by MultiHeadAttention and GroupedQueryAttention: the call convention, masks, config."""

    # Keras calls these layers with query, value (, key) as separate arguments, and these call
    # options are recorded in a model's config.
    _keras_positional_inputs = True
    _keras_call_kwargs = ("use_causal_mask", "return_attention_scores")

    def _init_common(self, dropout, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                     bias_regularizer, activity_regularizer, kernel_constraint, bias_constraint, seed, use_gate,
                     sliding_window, flash_attention):
        who = type(self).__name__
        if not 0 <= dropout < 1:
            raise ValueError(f"{who}: dropout must be in [0, 1), got {dropout!r}")
        if sliding_window is not None and (isinstance(sliding_window, bool) or not isinstance(sliding_window, int)
                                           or sliding_window <= 0):
            raise ValueError(f"{who}: sliding_window must be None or a positive int, got {sliding_window!r}")
        self.dropout = float(dropout)
        self.use_bias = bool(use_bias)
        self.use_gate = bool(use_gate)
        self.sliding_window = sliding_window
        self.flash_attention = flash_attention
        self.seed = seed
        self._random = None
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraint_get(kernel_constraint, who, "kernel_constraint")
        self.bias_constraint = constraint_get(bias_constraint, who, "bias_constraint")
        self._setup_activity(activity_regularizer)
        self._want_scores = False
        self._query_dense = self._key_dense = self._value_dense = self._output_dense = self._gate_dense = None

    def _dropout_key(self):
        """(seed, counter) of the fused attention kernel's next dropout mask."""
        if self._random is None:  # made at first use: a seed drawn at construction would shift set_seed's stream
            self._random = StepRandom(self.seed)
        return self._random.next_key()

    # Called as Keras's: layer(query, value, key=None, ...); one list input underneath.
    def __call__(self, query, value=None, key=None, query_mask=None, value_mask=None, key_mask=None,
                 attention_mask=None, return_attention_scores=False, training=None, use_causal_mask=False,
                 **kwargs):
        if value is None:
            if not isinstance(query, (list, tuple)) or len(query) not in (2, 3):
                raise ValueError(f"layer {self.name!r} ({type(self).__name__}) must be called on query and value "
                                 f"(and optionally key): layer(query, value) or layer([query, value])")
            inputs = list(query)
        else:
            inputs = [query, value] + ([key] if key is not None else [])
        kw = dict(kwargs)
        if return_attention_scores:
            kw["return_attention_scores"] = True
        if use_causal_mask:
            kw["use_causal_mask"] = True
        if attention_mask is not None:
            kw["attention_mask"] = attention_mask
        if any(m is not None for m in (query_mask, value_mask, key_mask)):
            kw["explicit_masks"] = [query_mask, value_mask] + ([key_mask] if len(inputs) == 3 else [])
        self._want_scores = bool(return_attention_scores)
        try:
            return super().__call__(inputs, training=training, **kw)
        finally:
            self._want_scores = False

    def _shapes3(self, input_shape):
        if not isinstance(input_shape, list) or len(input_shape) not in (2, 3):
            raise ValueError(f"layer {self.name!r} ({type(self).__name__}) takes [query, value] or "
                             f"[query, value, key], got input shape {fmt_shape(input_shape)}")
        q, v = tuple(input_shape[0]), tuple(input_shape[1])
        k = tuple(input_shape[2]) if len(input_shape) == 3 else v
        if v[1:-1] != k[1:-1]:
            raise ValueError(f"layer {self.name!r} ({type(self).__name__}): value and key must agree on every "
                             f"axis but the last; value has shape {fmt_shape(v)}, key {fmt_shape(k)}")
        if not (len(q) == len(v) >= 3):
            raise ValueError(f"layer {self.name!r} ({type(self).__name__}): query and value must have the same "
                             f"rank (3 or more: batch, positions, features); query has shape {fmt_shape(q)}, "
                             f"value {fmt_shape(v)}")
        for s, what in ((q, "query"), (v, "value"), (k, "key")):
            if s[-1] is None:
                raise ValueError(f"layer {self.name!r} ({type(self).__name__}): the last axis of {what} must "
                                 f"have a known size, got {fmt_shape(s)}")
        return q, v, k

    def _same_batch(self, inputs):
        """Query, value and key must hold the same batch: the projections would broadcast a batch of 1."""
        shapes = [tuple(x.shape) for x in inputs]
        if len({s[0] for s in shapes if s[0] is not None}) > 1:
            names = ("query", "value", "key")[:len(shapes)]
            raise ValueError(f"layer {self.name!r} ({type(self).__name__}): query, value and key must have the "
                             f"same batch size; got " + ", ".join(f"{n} {fmt_shape(s)}" for n, s in zip(names, shapes)))

    def _sublayers(self):
        return [s for s in (self._query_dense, self._key_dense, self._gate_dense, self._value_dense,
                            self._output_dense) if s is not None]

    _keras_prefix = ""  # MultiHeadAttention's projections are public properties in Keras, GQA's are not

    def _keras_sublayers(self):
        """[(HDF5 group below this layer's, sublayer)] where Keras 3 keeps the projections' weights."""
        p = self._keras_prefix
        out = [(f"{p}query_dense", self._query_dense), (f"{p}key_dense", self._key_dense),
               (f"{p}value_dense", self._value_dense), (f"{p}output_dense", self._output_dense)]
        if self._gate_dense is not None:
            out.append(("_gate_dense", self._gate_dense))
        return out

    def keras_build_config(self):
        """Keras 3's build_config for this layer: the three shapes by name."""
        shapes = self._build_input_shape
        names = ("query_shape", "value_shape", "key_shape")
        return {"shapes_dict": {n: list(s) for n, s in zip(names, shapes)}}

    # Whether the inputs' own Keras masks are used. Keras 3.15's GroupedQueryAttention, unlike its
    # MultiHeadAttention, uses only masks passed as arguments (a Keras-trained model computes so).
    _auto_masks = True

    def _masks(self, mask, explicit, inputs):
        """The query / value / key masks: those passed as arguments, else the inputs' Keras masks."""
        auto = mask if isinstance(mask, (list, tuple)) and self._auto_masks else [None] * len(inputs)
        given = explicit if explicit is not None else [None] * len(inputs)
        merged = [g if g is not None else (auto[i] if i < len(auto) else None) for i, g in enumerate(given)]
        return self._check_masks(merged, inputs)

    def _check_masks(self, masks, inputs):
        """Each Keras mask [B, positions...] of query / value / key as a bool Tensor, checked against its input."""
        out = []
        names = ("query_mask", "value_mask", "key_mask")
        for i, x in enumerate(inputs):
            m = masks[i] if masks is not None and i < len(masks) else None
            m = _bool_mask(self, m, names[i])
            if m is not None and tuple(m.shape) != tuple(x.shape[:-1]):
                raise ValueError(f"layer {self.name!r} ({type(self).__name__}): {names[i]} must have shape "
                                 f"{fmt_shape(x.shape[:-1])} (the input's shape without its last axis), got "
                                 f"{fmt_shape(m.shape)}")
            out.append(m)
        return out

    def _combined_mask(self, q, v, masks, attention_mask, use_causal_mask, tq, ts):
        """Keras's _compute_attention_mask: bool [B or 1, T..., S...] or None.

        q, v: the inputs; masks: their checked Keras masks; tq, ts: the query's
        and the value's attention-axis shapes.
        """
        qm, vm = masks[0], masks[1]
        km = masks[2] if len(masks) > 2 else None
        nq, ns = len(tq), len(ts)
        auto = None
        if qm is not None:
            auto = ops.reshape(qm, qm.shape + (1,) * ns)
        for m in (vm, km):
            if m is not None:
                e = ops.reshape(m, m.shape[:1] + (1,) * nq + m.shape[1:])
                auto = e if auto is None else ops.logical_and(auto, e)
        if use_causal_mask or self.sliding_window is not None:
            if nq != 1 or ns != 1:
                raise ValueError(f"layer {self.name!r} ({type(self).__name__}): use_causal_mask and "
                                 f"sliding_window need one attention axis, got query positions {tq}")
            c = _band(q, tq[0], ts[0], use_causal_mask, self.sliding_window)
            auto = c if auto is None else ops.logical_and(auto, c)
        am = _bool_mask(self, attention_mask, "attention_mask")
        if am is not None:
            want = (q.shape[0],) + tuple(tq) + tuple(ts)
            if am.ndim != len(want) or any(a not in (1, w) for a, w in zip(am.shape, want)):
                raise ValueError(f"layer {self.name!r} ({type(self).__name__}): attention_mask must have shape "
                                 f"{fmt_shape(want)} (batch, query positions, value positions), got "
                                 f"{fmt_shape(am.shape)}")
        if auto is not None:
            am = auto if am is None else ops.logical_and(am, auto)
        return am

    def compute_mask(self, inputs, previous_mask=None):
        if isinstance(previous_mask, (list, tuple)):
            return previous_mask[0]
        return previous_mask

    def _project(self, dense, x):
        """``dense(x)`` with x's Keras mask set aside (it is applied through the attention mask)."""
        m = getattr(x, "_keras_mask", None)
        if m is None:
            return dense(x)
        x._keras_mask = None
        try:
            return dense(x)
        finally:
            x._keras_mask = m

    def _common_config(self):
        return {"dropout": self.dropout, "use_bias": self.use_bias, "use_gate": self.use_gate,
                "sliding_window": self.sliding_window,
                "kernel_initializer": init_config(self.kernel_initializer),
                "bias_initializer": init_config(self.bias_initializer),
                "kernel_regularizer": reg_config(self.kernel_regularizer),
                "bias_regularizer": reg_config(self.bias_regularizer),
                "activity_regularizer": reg_config(self.activity_regularizer),
                "kernel_constraint": constraint_config(self.kernel_constraint),
                "bias_constraint": constraint_config(self.bias_constraint), "seed": self.seed}


def _softmax_over(scores, mask, n_axes):
    """Masked softmax over the last ``n_axes`` axes of ``scores`` (flattened into one and back)."""
    if n_axes == 1:
        return ops.masked_softmax(scores, mask, -1)
    lead = scores.shape[:-n_axes]
    flat = ops.reshape(scores, lead + (-1,))
    m = None
    if mask is not None:
        m = ops.broadcast_to(mask, scores.shape)
        m = ops.reshape(m, lead + (-1,))
    return ops.reshape(ops.masked_softmax(flat, m, -1), scores.shape)


class MultiHeadAttention(_QKVAttention):
    """Multi-head attention as Keras 3's (the Transformer's "Attention is all you need").

    query [B, T..., dq], value [B, S..., dv], key [B, S..., dk] (default:
    value) -> [B, T..., output_shape or dq]. Each of ``num_heads`` heads
    projects to ``key_dim`` (query, key) and ``value_dim`` (value; default
    key_dim), attends over ``attention_axes`` (default: every axis but the
    batch and the features) with scores scaled by 1/sqrt(key_dim), softmax
    (masked), ``dropout`` on the probabilities when training, and the heads
    are projected back. ``return_attention_scores=True`` also returns the
    probabilities [B, num_heads, T..., S...]. Weights (Keras's order): query
    kernel [dq, heads, key_dim] and bias, key, value, attention_output
    kernel [heads, value_dim, out] and bias.
    """

    def __init__(self, num_heads, key_dim, value_dim=None, dropout=0.0, use_bias=True, output_shape=None,
                 attention_axes=None, flash_attention=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, seed=None,
                 use_gate=False, sliding_window=None, **kwargs):
        super().__init__(**kwargs)
        who = "MultiHeadAttention"
        for name, v in (("num_heads", num_heads), ("key_dim", key_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{who}: {name} must be a positive int, got {v!r}")
        if value_dim is not None and (isinstance(value_dim, bool) or not isinstance(value_dim, int)
                                      or value_dim <= 0):
            raise ValueError(f"{who}: value_dim must be None or a positive int, got {value_dim!r}")
        if output_shape is not None:
            shape = (output_shape,) if isinstance(output_shape, int) else tuple(output_shape)
            if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in shape):
                raise ValueError(f"{who}: output_shape must be a positive int or a tuple of them, "
                                 f"got {output_shape!r}")
            output_shape = shape
        if attention_axes is not None:
            axes = (attention_axes,) if isinstance(attention_axes, int) else tuple(attention_axes)
            if not axes or any(isinstance(a, bool) or not isinstance(a, int) for a in axes):
                raise ValueError(f"{who}: attention_axes must be None, an int or a list of ints, "
                                 f"got {attention_axes!r}")
            attention_axes = axes
        self.num_heads, self.key_dim = num_heads, key_dim
        self.value_dim = value_dim if value_dim else key_dim
        self._output_shape = output_shape
        self.attention_axes = attention_axes
        self._init_common(dropout, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                          bias_regularizer, activity_regularizer, kernel_constraint, bias_constraint, seed,
                          use_gate, sliding_window, flash_attention)

    def _axes_for(self, rank):
        """The attention axes of the projected tensors (rank = input rank + 1), checked."""
        if self.attention_axes is None:
            axes = tuple(range(1, rank - 2))
        else:
            axes = tuple(a if a >= 0 else (rank - 1) + a for a in self.attention_axes)
        bad = [a for a in axes if not 1 <= a <= rank - 3]
        if bad or len(set(axes)) != len(axes):
            raise ValueError(f"layer {self.name!r} (MultiHeadAttention): attention_axes {self.attention_axes} "
                             f"is out of range for inputs of rank {rank - 1} (valid: 1 .. {rank - 3}, the "
                             f"axes between the batch and the features, once each)")
        return tuple(sorted(axes))

    def build(self, input_shape):
        q, v, k = self._shapes3(input_shape)
        kw = _common_sublayer_kwargs(self)
        rank = len(q) + 1
        self._axes = self._axes_for(rank)

        def proj(name, shape, dim, **extra):
            eq, bias, out_rank = _proj_equation(len(shape) - 1, 1, 2)
            layer = EinsumDense(eq, [None] * (out_rank - 3) + [self.num_heads, dim],
                                bias_axes=bias if self.use_bias else None, name=name, **kw, **extra)
            layer._maybe_build(tuple(shape))
            return layer

        self._query_dense = proj("query", q, self.key_dim)
        self._key_dense = proj("key", k, self.key_dim)
        if self.use_gate:
            self._gate_dense = proj("gate", q, self.value_dim, activation="sigmoid")
        self._value_dense = proj("value", v, self.value_dim)
        out = list(self._output_shape) if self._output_shape else [q[-1]]
        eq, bias, out_rank = _proj_equation(len(q) - 1, 2, len(out))
        self._output_dense = EinsumDense(eq, [None] * (out_rank - 1 - len(out)) + out,
                                         bias_axes=bias if self.use_bias else None, name="attention_output", **kw)
        self._output_dense._maybe_build(tuple(q[:-1]) + (self.num_heads, self.value_dim))
        self._dot_eq, self._combine_eq, _ = _attention_equations(rank, self._axes)
        self.built = True

    def compute_output_shape(self, input_shape):
        q, v, k = self._shapes3(input_shape)
        out = tuple(q[:-1]) + (tuple(self._output_shape) if self._output_shape else (q[-1],))
        if not self._want_scores:
            return out
        axes = self._axes_for(len(q) + 1)
        return [out, (q[0], self.num_heads) + tuple(q[a] for a in axes) + tuple(v[a] for a in axes)]

    def call(self, inputs, mask=None, attention_mask=None, return_attention_scores=False, training=None,
             use_causal_mask=False, explicit_masks=None):
        self._same_batch(inputs)
        query, value = inputs[0], inputs[1]
        key = inputs[2] if len(inputs) > 2 else value
        masks = self._masks(mask, explicit_masks, list(inputs))
        tq = tuple(query.shape[a] for a in self._axes)
        ts = tuple(value.shape[a] for a in self._axes)
        am = self._combined_mask(query, value, masks, attention_mask, use_causal_mask, tq, ts)
        gate = self._project(self._gate_dense, query) if self._gate_dense is not None else None
        q = self._project(self._query_dense, query)
        k = self._project(self._key_dense, key)
        v = self._project(self._value_dense, value)
        out, probs = self._attend(q, k, v, am, training, return_attention_scores)
        if gate is not None:
            out = out * gate
        out = self._output_dense(out)
        return [out, probs] if return_attention_scores else out

    def _attend(self, q, k, v, mask, training, want_probs=True):
        """q [B, T..., N, H], k / v [B, S..., N, H]; mask [B|1, T..., S...] -> (out [B, T..., N, Hv], probs)."""
        scale = 1.0 / math.sqrt(float(self.key_dim))
        drop = self.dropout if training else 0.0
        if q.ndim == 4 and self._axes == (1,):
            # The common case: batched matmuls over [B, N] (one BLAS batched GEMM each way).
            qh, kh, vh = (ops.transpose(t, (0, 2, 1, 3)) for t in (q, k, v))
            m = None if mask is None else ops.expand_dims(mask, 1)
            got = ops.dot_product_attention(qh, kh, vh, m, scale=scale, dropout_rate=drop,
                                            training=bool(training), return_probs=want_probs,
                                            seed=self._dropout_key)
            out, probs = got if want_probs else (got, None)
            return ops.transpose(out, (0, 2, 1, 3)), probs
        scores = ops.einsum(self._dot_eq, k, q * scale)
        m = mask
        if m is not None:
            n = len(self._axes)
            while m.ndim < scores.ndim:
                m = ops.expand_dims(m, m.ndim - 2 * n)  # the heads (and other batch) axes, as Keras
        probs = _softmax_over(scores, m, len(self._axes))
        p = ops.dropout(probs, drop, training=True) if drop > 0 else probs
        return ops.einsum(self._combine_eq, p, v), probs

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "key_dim": self.key_dim,
                "value_dim": self.value_dim, "output_shape": list(self._output_shape) if self._output_shape else None,
                "attention_axes": list(self._axes) if self.built else (
                    list(self.attention_axes) if self.attention_axes is not None else None),
                **self._common_config()}


class GroupedQueryAttention(_QKVAttention):
    """Grouped-query attention as Keras 3's: ``num_query_heads`` query heads share
    ``num_key_value_heads`` key / value heads (which must divide them), each of ``head_dim``.

    query [B, T, d], value / key [B, S, dv] -> [B, T, d]. Weights: query
    kernel [d, query heads, head_dim] (+ bias), key and value kernels [dv,
    key/value heads, head_dim] (+ bias), attention_output [query heads,
    head_dim, d] (+ bias).
    """

    def __init__(self, head_dim, num_query_heads, num_key_value_heads, dropout=0.0, use_bias=True,
                 sliding_window=None, flash_attention=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, use_gate=False,
                 seed=None, **kwargs):
        super().__init__(**kwargs)
        who = "GroupedQueryAttention"
        for name, v in (("head_dim", head_dim), ("num_query_heads", num_query_heads),
                        ("num_key_value_heads", num_key_value_heads)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{who}: {name} must be a positive int, got {v!r}")
        if num_query_heads % num_key_value_heads:
            raise ValueError(f"{who}: num_query_heads ({num_query_heads}) must be a multiple of "
                             f"num_key_value_heads ({num_key_value_heads})")
        self.head_dim, self.num_query_heads, self.num_key_value_heads = head_dim, num_query_heads, num_key_value_heads
        self.num_repeats = num_query_heads // num_key_value_heads
        self._keras_prefix = "_"
        self._auto_masks = False
        self._init_common(dropout, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                          bias_regularizer, activity_regularizer, kernel_constraint, bias_constraint, seed,
                          use_gate, sliding_window, flash_attention)

    def build(self, input_shape):
        q, v, k = self._shapes3(input_shape)
        if len(q) != 3:
            raise ValueError(f"layer {self.name!r} (GroupedQueryAttention): query, value and key must be "
                             f"[batch, positions, features], got query {fmt_shape(q)}")
        kw = _common_sublayer_kwargs(self)
        bias = self.use_bias
        self._query_dense = EinsumDense("bqm,muh->bquh", (None, self.num_query_heads, self.head_dim),
                                        bias_axes="uh" if bias else None, name="query", **kw)
        self._query_dense._maybe_build(q)
        self._key_dense = EinsumDense("bkm,mvh->bkvh", (None, self.num_key_value_heads, self.head_dim),
                                      bias_axes="vh" if bias else None, name="key", **kw)
        self._key_dense._maybe_build(k)
        if self.use_gate:
            self._gate_dense = EinsumDense("bqm,muh->bquh", (None, self.num_query_heads, self.head_dim),
                                           bias_axes="uh" if bias else None, activation="sigmoid", name="gate", **kw)
            self._gate_dense._maybe_build(q)
        self._value_dense = EinsumDense("bkm,mvh->bkvh", (None, self.num_key_value_heads, self.head_dim),
                                        bias_axes="vh" if bias else None, name="value", **kw)
        self._value_dense._maybe_build(v)
        self._output_dense = EinsumDense("bquh,uhm->bqm", (None, q[-1]), bias_axes="m" if bias else None,
                                         name="attention_output", **kw)
        self._output_dense._maybe_build((None, None, self.num_query_heads, self.head_dim))
        self.built = True

    def compute_output_shape(self, input_shape):
        q, v, k = self._shapes3(input_shape)
        if q[-1] != v[-1]:
            raise ValueError(f"layer {self.name!r} (GroupedQueryAttention): the last axes of query and value "
                             f"must be equal, got query {fmt_shape(q)} and value {fmt_shape(v)}")
        if not self._want_scores:
            return q
        return [q, (q[0], self.num_query_heads, q[1], v[1])]

    def call(self, inputs, mask=None, attention_mask=None, return_attention_scores=False, training=None,
             use_causal_mask=False, explicit_masks=None):
        self._same_batch(inputs)
        query, value = inputs[0], inputs[1]
        key = inputs[2] if len(inputs) > 2 else value
        masks = self._masks(mask, explicit_masks, list(inputs))
        am = self._combined_mask(query, value, masks, attention_mask, use_causal_mask, (query.shape[1],),
                                 (value.shape[1],))
        gate = self._project(self._gate_dense, query) if self._gate_dense is not None else None
        q, k, v = (self._project(d, x) for d, x in ((self._query_dense, query), (self._key_dense, key),
                                                     (self._value_dense, value)))
        if self.num_repeats > 1:
            k, v = ops.repeat(k, self.num_repeats, 2), ops.repeat(v, self.num_repeats, 2)
        qh, kh, vh = (ops.transpose(t, (0, 2, 1, 3)) for t in (q, k, v))
        m = None if am is None else ops.expand_dims(am, 1)
        drop = self.dropout if training else 0.0
        got = ops.dot_product_attention(qh, kh, vh, m, scale=1.0 / math.sqrt(float(self.head_dim)),
                                        dropout_rate=drop, training=bool(training),
                                        return_probs=return_attention_scores, seed=self._dropout_key)
        out, probs = got if return_attention_scores else (got, None)
        out = ops.transpose(out, (0, 2, 1, 3))
        if gate is not None:
            out = out * gate
        out = self._output_dense(out)
        return [out, probs] if return_attention_scores else out

    def get_config(self):
        return {**super().get_config(), "head_dim": self.head_dim, "num_query_heads": self.num_query_heads,
                "num_key_value_heads": self.num_key_value_heads, **self._common_config()}


GroupQueryAttention = GroupedQueryAttention


class Attention(Layer):
    """Dot-product attention as Keras 3's (Luong): called on ``[query, value]`` or ``[query, value, key]``.

    query [B, Tq, d], value [B, Tv, dv], key [B, Tv, d] (default: value) ->
    [B, Tq, dv]. ``score_mode="dot"``: scores = query @ key^T (times a
    learned scalar ``scale`` when ``use_scale``); ``"concat"``: scores =
    concat_score_weight * sum(tanh(scale * (query + key))). Masks: the
    value's Keras mask (``mask=[query_mask, value_mask]``) and
    ``use_causal_mask`` remove keys; the query's mask zeroes its rows of the
    output and is passed on. ``dropout`` on the probabilities when training.
    ``return_attention_scores=True`` also returns them [B, Tq, Tv].
    """

    def __init__(self, use_scale=False, score_mode="dot", dropout=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if score_mode not in ("dot", "concat"):
            raise ValueError(f"{type(self).__name__}: score_mode must be 'dot' or 'concat', got {score_mode!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"{type(self).__name__}: dropout must be in [0, 1), got {dropout!r}")
        self.use_scale = bool(use_scale)
        self.score_mode = score_mode
        self.dropout = float(dropout)
        self.seed = seed
        self.scale = self.concat_score_weight = None
        self._want_scores = False

    _keras_call_kwargs = ("use_causal_mask", "return_attention_scores")

    def __call__(self, inputs, training=None, mask=None, return_attention_scores=False, use_causal_mask=False,
                 **kwargs):
        kw = dict(kwargs)
        if mask is not None:
            kw["mask"] = list(mask)
        if return_attention_scores:
            kw["return_attention_scores"] = True
        if use_causal_mask:
            kw["use_causal_mask"] = True
        self._want_scores = bool(return_attention_scores)
        try:
            return super().__call__(inputs, training=training, **kw)
        finally:
            self._want_scores = False

    def _validate(self, input_shape):
        name = type(self).__name__
        if not isinstance(input_shape, list) or len(input_shape) not in (2, 3):
            raise ValueError(f"layer {self.name!r} ({name}) must be called on [query, value] or "
                             f"[query, value, key], got input shape {fmt_shape(input_shape)}")
        q, v = tuple(input_shape[0]), tuple(input_shape[1])
        k = tuple(input_shape[2]) if len(input_shape) == 3 else v
        if len(q) != 3 or len(v) != 3 or len(k) != 3:
            raise ValueError(f"layer {self.name!r} ({name}): query, value and key must be [batch, positions, "
                             f"features], got shapes {fmt_shape(list(input_shape))}")
        if q[-1] is not None and k[-1] is not None and q[-1] != k[-1]:
            raise ValueError(f"layer {self.name!r} ({name}): query and key must have the same feature size, "
                             f"got query {fmt_shape(q)} and key {fmt_shape(k)}")
        if v[1] is not None and k[1] is not None and v[1] != k[1]:
            raise ValueError(f"layer {self.name!r} ({name}): value and key must have the same number of "
                             f"positions, got value {fmt_shape(v)} and key {fmt_shape(k)}")
        return q, v, k

    def build(self, input_shape):
        self._validate(input_shape)
        if self.use_scale:
            self.scale = self.add_weight("scale", (), "ones")
        if self.score_mode == "concat":
            self.concat_score_weight = self.add_weight("concat_score_weight", (), "ones")
        self.built = True

    def compute_output_shape(self, input_shape):
        q, v, k = self._validate(input_shape)
        out = q[:-1] + (v[-1],)
        return [out, q[:-1] + (k[1],)] if self._want_scores else out

    def _scores(self, q, k):
        if self.score_mode == "dot":
            s = ops.matmul(q, k, transpose_b=True)
            return s * self.scale if self.scale is not None else s
        t = ops.expand_dims(q, -2) + ops.expand_dims(k, -3)
        if self.scale is not None:
            t = t * self.scale
        return ops.sum(ops.tanh(t), axis=-1) * self.concat_score_weight

    def call(self, inputs, mask=None, training=None, return_attention_scores=False, use_causal_mask=False):
        q, v = inputs[0], inputs[1]
        k = inputs[2] if len(inputs) > 2 else v
        if mask is not None and (not isinstance(mask, (list, tuple)) or len(mask) not in (2, 3)):
            raise ValueError(f"layer {self.name!r} ({type(self).__name__}): mask must be a list "
                             f"[query_mask, value_mask], got {mask!r}")
        qm = _bool_mask(self, mask[0], "query_mask") if mask else None
        vm = _bool_mask(self, mask[1], "value_mask") if mask else None
        for m, x, what in ((qm, q, "query_mask"), (vm, v, "value_mask")):
            if m is not None and tuple(m.shape) != tuple(x.shape[:2]):
                raise ValueError(f"layer {self.name!r} ({type(self).__name__}): {what} must have shape "
                                 f"{fmt_shape(x.shape[:2])}, got {fmt_shape(m.shape)}")
        scores = self._scores(q, k)
        sm = None if vm is None else ops.expand_dims(vm, -2)
        if use_causal_mask:
            c = _band(scores, scores.shape[-2], scores.shape[-1], True)
            sm = c if sm is None else ops.logical_and(sm, c)
        if sm is not None:
            # As Keras: masked scores lowered by 1e9 (not replaced), then the softmax.
            scores = ops.where(sm, scores, scores - 1e9)
        probs = ops.softmax(scores, -1)
        p = ops.dropout(probs, self.dropout, training=True) if training and self.dropout > 0 else probs
        out = ops.matmul(p, v)
        if qm is not None:
            out = ops.where(ops.expand_dims(qm, -1), out, zeros_like(out))
        return [out, probs] if return_attention_scores else out

    def compute_mask(self, inputs, previous_mask=None):
        if isinstance(previous_mask, (list, tuple)):
            return previous_mask[0]
        return None

    def get_config(self):
        return {**super().get_config(), "use_scale": self.use_scale, "score_mode": self.score_mode,
                "dropout": self.dropout, "seed": self.seed}


class AdditiveAttention(Attention):
    """Additive (Bahdanau) attention as Keras 3's: scores = sum(scale * tanh(query + key), -1).

    ``scale`` [d] (glorot_uniform) when ``use_scale`` (default True); masks,
    dropout and outputs as ``Attention``.
    """

    def __init__(self, use_scale=True, dropout=0.0, **kwargs):
        kwargs.pop("score_mode", None)
        super().__init__(use_scale=use_scale, score_mode="dot", dropout=dropout, **kwargs)

    def build(self, input_shape):
        q, v, k = self._validate(input_shape)
        if self.use_scale:
            self.scale = self.add_weight("scale", (q[-1],), "glorot_uniform")
        self.built = True

    def _scores(self, q, k):
        t = ops.tanh(ops.expand_dims(q, -2) + ops.expand_dims(k, -3))
        if self.scale is not None:
            t = t * self.scale
        return ops.sum(t, axis=-1)

    def get_config(self):
        cfg = super().get_config()
        del cfg["score_mode"]
        return cfg
