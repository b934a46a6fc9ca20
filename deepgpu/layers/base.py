"""Layer base class, symbolic tensors and the functional-graph bookkeeping.

A Layer builds its weights from the first input shape it sees, is callable
on a concrete Tensor (runs ``call``) or on a symbolic tensor from ``Input``
(records a graph node and returns symbolic outputs, as Keras's functional
API does). Shapes given to ``build`` / ``compute_output_shape`` include the
batch axis as ``None``.

Masks (Keras 3 semantics). A mask is a bool Tensor attached to a Tensor as
``_keras_mask`` (read / write with ``get_keras_mask`` / ``set_keras_mask``);
usually shaped like the input without its feature axis, e.g. (batch, time).
- A layer whose ``call`` has a ``mask`` parameter receives the mask of its
  input (a list of masks, or None when none has one, for a list input); with
  several tensor arguments (``call(query, value, query_mask=None, ...)``),
  each ``<arg>_mask`` parameter receives that argument's mask.
- After the call, a layer with ``supports_masking`` (True when it overrides
  ``compute_mask(inputs, previous_mask=None)``, or set it True) attaches
  ``compute_mask(inputs, previous_mask)`` to its outputs (a list for several
  outputs); the default ``compute_mask`` passes the input mask through. A
  layer without it drops the mask, with Keras's warning.
- Symbolic tensors carry ``_keras_mask`` too (a bool SymbolicTensor, or None);
  losses and metrics weight by the prediction's mask (losses.apply_mask).
"""
from __future__ import annotations

import inspect
import re
import threading
import warnings

from ..autograd import no_grad
from ..tensor import Tensor, Variable, tensor
from . import _autocast

_names = threading.local()


def _snake(name: str) -> str:
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", s).lower()  # Conv2D -> conv2d, as Keras


def unique_name(base: str) -> str:
    """``base``, then ``base_1``, ``base_2``... as Keras names layers."""
    counts = getattr(_names, "counts", None)
    if counts is None:
        counts = _names.counts = {}
    n = counts.get(base, 0)
    counts[base] = n + 1
    return base if n == 0 else f"{base}_{n}"


def reset_names() -> None:
    """Start layer names from ``dense``, ``conv2d``... again (as ``clear_session``)."""
    _names.counts = {}


def get_keras_mask(x):
    """The mask attached to ``x`` (a Tensor or SymbolicTensor), or None."""
    return getattr(x, "_keras_mask", None)


def set_keras_mask(x, mask) -> None:
    """Attach ``mask`` (a bool Tensor, or None to remove it) to the Tensor ``x``."""
    x._keras_mask = mask


def _masks_of(inputs):
    """The mask of ``inputs``: one mask, a list of masks (None when no element has one), or None."""
    if isinstance(inputs, (list, tuple)):
        ms = [getattr(i, "_keras_mask", None) for i in inputs]
        return ms if any(m is not None for m in ms) else None
    return getattr(inputs, "_keras_mask", None)


def _is_tensor_arg(v):
    if isinstance(v, (list, tuple)):
        return bool(v) and all(isinstance(i, (Tensor, SymbolicTensor)) for i in v)
    return isinstance(v, (Tensor, SymbolicTensor))


def _shape_tuple(shape):
    return tuple(None if d is None else int(d) for d in shape)


def fmt_shape(shape) -> str:
    if isinstance(shape, list):
        return "[" + ", ".join(fmt_shape(s) for s in shape) + "]"
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


class SymbolicTensor:
    """A placeholder for a value in a functional graph: shape (batch None) and dtype.

    ``node`` is the graph Node that produced it, ``index`` its position
    among that node's outputs.
    """

    _keras_mask = None

    def __init__(self, shape, dtype="float32", node=None, index=0, name=None):
        self.shape = _shape_tuple(shape)
        self.dtype = dtype
        self.node = node
        self.index = index
        self.name = name

    @property
    def ndim(self):
        return len(self.shape)

    def __repr__(self):
        who = f" from {self.node.layer.name!r}" if self.node is not None else ""
        return f"<SymbolicTensor shape={fmt_shape(self.shape)} dtype={self.dtype}{who}>"


class Node:
    """One call of a layer inside a functional graph."""

    def __init__(self, layer, inputs, input_structure_is_list, kwargs):
        self.layer = layer
        self.inputs = list(inputs)
        self.is_list = input_structure_is_list
        self.kwargs = kwargs
        self.outputs: list = []

    @property
    def inbound_layers(self):
        return [t.node.layer for t in self.inputs if t.node is not None]


class InputSpec:
    """What a layer accepts: rank (``ndim`` or ``min_ndim``) and fixed ``axes`` sizes."""

    def __init__(self, ndim=None, min_ndim=None, axes=None):
        self.ndim = ndim
        self.min_ndim = min_ndim
        self.axes = dict(axes or {})


def _flatten(x):
    if isinstance(x, (list, tuple)):
        out = []
        for i in x:
            out.extend(_flatten(i))
        return out
    if isinstance(x, dict):
        return _flatten(list(x.values()))
    return [x]


class Layer:
    """Base class of all layers.

    Subclasses implement ``build(input_shape)`` (create weights with
    ``add_weight``), ``call(inputs, training=None)`` and
    ``compute_output_shape(input_shape)``, and extend ``get_config()``.
    Common arguments: ``name``, ``trainable``, ``dtype``, ``input_shape``
    (without the batch axis), ``batch_input_shape``, ``batch_size``,
    ``input_dim``.
    """

    def __init__(self, trainable=True, name=None, dtype=None, input_shape=None,
                 batch_input_shape=None, batch_size=None, input_dim=None, **kwargs):
        # TF.js spellings of the shape arguments.
        if "inputShape" in kwargs:
            input_shape = kwargs.pop("inputShape")
        if "batchInputShape" in kwargs:
            batch_input_shape = kwargs.pop("batchInputShape")
        if "inputDim" in kwargs:
            input_dim = kwargs.pop("inputDim")
        if kwargs:
            raise TypeError(
                f"{type(self).__name__}: unexpected keyword argument(s) {', '.join(sorted(kwargs))}")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"{type(self).__name__}: name must be a non-empty string, got {name!r}")
        self.name = name or unique_name(_snake(type(self).__name__))
        self._trainable = bool(trainable)
        self.dtype = dtype  # a name, a DTypePolicy, or None for the global policy
        self.built = False
        self._weights: list = []
        self._regularizers: list = []
        self._inbound_nodes: list = []
        self.input_spec = None
        if input_dim is not None and input_shape is None:
            input_shape = (input_dim,)
        if batch_input_shape is not None:
            self._batch_input_shape = _shape_tuple(batch_input_shape)
        elif input_shape is not None:
            if isinstance(input_shape, int):
                input_shape = (input_shape,)
            self._batch_input_shape = (batch_size,) + _shape_tuple(input_shape)
        else:
            self._batch_input_shape = None
        self._build_input_shape = None
        params = inspect.signature(self.call).parameters
        self._call_accepts_training = "training" in params
        self._call_params = frozenset(params)
        self._call_first_arg = next(iter(params), "inputs")

    # ------------------------------------------------------------- dtypes
    @property
    def dtype_policy(self):
        """The layer's DTypePolicy (deepgpu.mixed_precision)."""
        return self._dtype_policy

    @dtype_policy.setter
    def dtype_policy(self, value):
        from .. import mixed_precision
        self._dtype_policy = mixed_precision.get(value)

    @property
    def dtype(self) -> str:
        """The dtype of the layer's variables (Keras 3: an alias of ``variable_dtype``).
        Set it to a name, a DTypePolicy or None (the global policy) to change the policy."""
        return self._dtype_policy._variable_dtype

    @dtype.setter
    def dtype(self, value):
        self.dtype_policy = value

    @property
    def compute_dtype(self) -> str:
        return self._dtype_policy._compute_dtype

    @property
    def variable_dtype(self) -> str:
        return self._dtype_policy._variable_dtype

    # ------------------------------------------------------------- weights
    def add_weight(self, name=None, shape=None, initializer="glorot_uniform", regularizer=None,
                   trainable=True, constraint=None, dtype=None, autocast=None) -> Variable:
        """Create, track and return a Variable named ``<layer>/<name>``. Keras 3's order
        (``add_weight(shape, initializer, ...)``, the name optional) is taken too.
        autocast: read the variable in the compute dtype inside ``call`` under a mixed
        policy (default: for trainable variables; state that ``call`` updates in place,
        created non-trainable, is not cast)."""
        if not isinstance(name, str) and name is not None:  # Keras 3: add_weight(shape, initializer, ...)
            if shape is not None:
                initializer = shape
            name, shape = None, name
        if shape is None:
            raise TypeError(f"layer {self.name!r}: add_weight() needs a shape")
        if name is None:
            name = f"variable_{len(self._weights)}" if self._weights else "variable"
        if initializer is None:
            initializer = "glorot_uniform" if str(dtype or self.dtype).startswith(("float", "bfloat")) else "zeros"
        if callable(initializer) and not isinstance(initializer, type):
            init = initializer
        else:
            from .. import initializers
            init = initializers.get(initializer)
        value = init(tuple(int(s) for s in shape), dtype or self.dtype)
        v = Variable(value, trainable=trainable and self._trainable, name=f"{self.name}/{name}")
        v._user_trainable = trainable
        if autocast is not None:
            v._autocast = bool(autocast)
        v.constraint = constraint
        self._weights.append(v)
        if regularizer is not None:
            from .. import regularizers
            self._regularizers.append((regularizers.get(regularizer), v))
        return v

    @property
    def trainable(self) -> bool:
        return self._trainable

    @trainable.setter
    def trainable(self, flag):
        self._trainable = bool(flag)
        for v in self._weights:
            v.set_trainable(bool(flag) and getattr(v, "_user_trainable", True))
        for layer in self._sublayers():
            layer.trainable = flag

    def _sublayers(self) -> list:
        """Layers owned by this one: by default those held as attributes (directly or in
        lists / dicts), as Keras tracks them; wrappers and models may say otherwise."""
        from .tracking import tracked_layers
        return tracked_layers(self)

    @property
    def weights(self) -> list:
        out = list(self._weights)
        for layer in self._sublayers():
            out.extend(w for w in layer.weights if all(w is not o for o in out))
        return out

    @property
    def trainable_weights(self) -> list:
        return [w for w in self.weights if w.trainable]

    @property
    def non_trainable_weights(self) -> list:
        return [w for w in self.weights if not w.trainable]

    variables = weights
    trainable_variables = trainable_weights
    non_trainable_variables = non_trainable_weights

    def count_params(self) -> int:
        if not self.built:
            raise ValueError(
                f"layer {self.name!r} is not built yet, so it has no weights to count; "
                f"call it on an input or give it an input_shape")
        return sum(w.size for w in self.weights)

    def get_weights(self) -> list:
        """The weights as NumPy arrays (host copies), in ``weights`` order."""
        return [w.data_sync() for w in self.weights]

    def set_weights(self, weights) -> None:
        """Set every weight from NumPy arrays in ``weights`` order.

        Raises ValueError naming the layer when the count or a shape differs;
        nothing is changed then.
        """
        ws = self.weights
        weights = list(weights)
        if len(weights) != len(ws):
            raise ValueError(
                f"layer {self.name!r} expects {len(ws)} weight arrays "
                f"({[w.shape for w in ws]}), got {len(weights)}")
        for w, value in zip(ws, weights):
            shape = tuple(getattr(value, "shape", ()))
            if shape != w.shape:
                raise ValueError(
                    f"layer {self.name!r}: weight {w.name!r} has shape {w.shape}, "
                    f"the value given has shape {shape}")
        for w, value in zip(ws, weights):
            w.assign(value)

    def _own_losses(self) -> list:
        """This layer's penalties, without its sublayers' (the training step caches the walk)."""
        return [reg(v) for reg, v in self._regularizers if v.trainable]

    @property
    def losses(self) -> list:
        """Regularization penalties of this layer's (and sublayers') weights, as Tensors."""
        out = self._own_losses()
        for layer in self._sublayers():
            out.extend(layer.losses)
        return out

    # ---------------------------------------------------------- building
    def build(self, input_shape) -> None:
        self.built = True

    def _maybe_build(self, input_shape) -> None:
        if not self.built:
            self._check_spec(input_shape)
            self.build(input_shape)
            self.built = True
            self._build_input_shape = input_shape
            if not self._trainable:  # sublayers made in __init__ freeze with their owner
                for layer in self._sublayers():
                    layer.trainable = False

    def compute_output_shape(self, input_shape):
        """Output shape (batch None) for ``input_shape``; default: run on zeros."""
        shapes = input_shape if isinstance(input_shape, list) else [input_shape]
        if any(d is None for s in shapes for d in s[1:]):
            raise NotImplementedError(
                f"{type(self).__name__} cannot infer its output shape for {input_shape}")
        with no_grad():
            zs = [tensor(_zeros((1,) + tuple(s[1:])), self.dtype) for s in shapes]
            y = self.call(zs if isinstance(input_shape, list) else zs[0], **self._training_kw(False))
        if isinstance(y, (list, tuple)):
            return [(None,) + t.shape[1:] for t in y]
        return (None,) + y.shape[1:]

    def _training_kw(self, training):
        return {"training": training} if self._call_accepts_training else {}

    def _check_spec(self, input_shape) -> None:
        spec = self.input_spec
        if spec is None or isinstance(input_shape, list):
            return
        nd = len(input_shape)
        if spec.ndim is not None and nd != spec.ndim:
            raise ValueError(
                f"Input 0 of layer {self.name!r} ({type(self).__name__}) is incompatible: "
                f"expected ndim={spec.ndim}{self._built_for()}, found ndim={nd}; "
                f"full shape received: {fmt_shape(input_shape)}")
        if spec.min_ndim is not None and nd < spec.min_ndim:
            raise ValueError(
                f"Input 0 of layer {self.name!r} ({type(self).__name__}) is incompatible: "
                f"expected min_ndim={spec.min_ndim}{self._built_for()}, found ndim={nd}; "
                f"full shape received: {fmt_shape(input_shape)}")
        for ax, size in spec.axes.items():
            got = input_shape[ax] if -nd <= ax < nd else None
            if got is not None and got != size:
                raise ValueError(
                    f"Input 0 of layer {self.name!r} ({type(self).__name__}) is incompatible: "
                    f"expected axis {ax} of the input to have size {size}{self._built_for()}, "
                    f"but received input with shape {fmt_shape(input_shape)}")

    def _built_for(self) -> str:
        """The suffix ' (built for (None, 28, 28, 1))' of a built layer's input errors, which then
        name both shapes; formatted only when raising (every call checks its input)."""
        built = self._build_input_shape
        return f" (built for {fmt_shape(built)})" if built is not None and not isinstance(built, list) else ""

    # ------------------------------------------------------------- masking
    @property
    def supports_masking(self) -> bool:
        """Whether outputs get ``compute_mask``'s mask (default: True when ``compute_mask`` is overridden)."""
        v = self.__dict__.get("_supports_masking")
        return type(self).compute_mask is not Layer.compute_mask if v is None else v

    @supports_masking.setter
    def supports_masking(self, value):
        self._supports_masking = bool(value)

    def compute_mask(self, inputs, previous_mask=None):
        """The output mask for ``inputs`` given the input mask; by default the input mask."""
        return previous_mask

    def _fill_masks(self, inputs, kwargs):
        """Add ``mask`` / ``<arg>_mask`` to ``kwargs`` as Keras does; returns the previous mask."""
        if not kwargs and type(inputs) is Tensor:  # the common eager call, in fewer steps
            first = getattr(inputs, "_keras_mask", None)
            if "mask" in self._call_params:
                kwargs["mask"] = first
            return first
        first = _masks_of(inputs)
        params = self._call_params
        # As Keras: other tensor arguments (a tensor or a list of them, e.g. an RNN's initial_state)
        # make each argument's mask go to ``<arg>_mask``, and ``mask`` is not filled.
        tensor_kw = [k for k, v in kwargs.items() if not k.endswith("mask") and _is_tensor_arg(v)]
        if not tensor_kw:
            if "mask" in params and kwargs.get("mask") is None:
                kwargs["mask"] = first
        else:
            args = [(self._call_first_arg, inputs)] + [(k, kwargs[k]) for k in tensor_kw]
            for k, v in args:
                if f"{k}_mask" in params and kwargs.get(f"{k}_mask") is None:
                    kwargs[f"{k}_mask"] = _masks_of(v)
        return kwargs["mask"] if kwargs.get("mask") is not None else first

    def _warn_mask_dropped(self):
        warnings.warn(
            f"Layer {self.name!r} (of type {type(self).__name__}) was passed an input with a mask attached "
            f"to it. However, this layer does not support masking and will therefore destroy the mask "
            f"information. Downstream layers will not see the mask.", stacklevel=3)

    def _set_output_masks(self, inputs, outputs, previous_mask):
        if not self.supports_masking:
            if previous_mask is not None:
                self._warn_mask_dropped()
            return
        outs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        if all(getattr(o, "_keras_mask", None) is not None for o in outs):
            return
        masks = self.compute_mask(inputs, previous_mask)
        if masks is None:
            return
        for o, m in zip(outs, masks if isinstance(masks, (list, tuple)) else [masks]):
            if m is not None and isinstance(o, Tensor) and getattr(o, "_keras_mask", None) is None:
                o._keras_mask = m

    def _symbolic_masks(self, syms, is_list, outs, previous_mask):
        """Attach symbolic output masks: compute_mask run on stand-ins (None sizes -> 1), shapes mapped back."""
        if not self.supports_masking:
            if previous_mask is not None:
                self._warn_mask_dropped()
            return
        if type(self).compute_mask is Layer.compute_mask:
            masks = previous_mask
        else:
            def stand_in(s, dtype):
                return tensor(_zeros(tuple(1 if d is None else d for d in s.shape)), dtype)

            xs = [stand_in(s, s.dtype) for s in syms]
            prev = previous_mask
            if prev is not None:
                prev = [None if m is None else stand_in(m, "bool") for m in prev] if isinstance(prev, list) \
                    else stand_in(prev, "bool")
            with no_grad():
                got = self.compute_mask(xs if is_list else xs[0], prev)
            if got is None:
                return
            ref = syms[0].shape
            masks = []
            for m in (got if isinstance(got, (list, tuple)) else [got]):
                if m is None:
                    masks.append(None)
                    continue
                dims = [None if (i < len(ref) and ref[i] is None) else d for i, d in enumerate(m.shape)]
                masks.append(SymbolicTensor([None] + dims[1:], "bool", name=f"{self.name}/mask"))
            masks = masks if isinstance(got, (list, tuple)) else masks[0]
        if masks is None:
            return
        for o, m in zip(outs, masks if isinstance(masks, list) else [masks]):
            o._keras_mask = m

    # ------------------------------------------------------------- calling
    def call(self, inputs, training=None):
        raise NotImplementedError(f"{type(self).__name__} does not implement call()")

    def __call__(self, inputs, training=None, **kwargs):
        if type(inputs) is Tensor:  # the common eager call: one concrete tensor, nothing to flatten
            shapes = (None,) + inputs.data.shape[1:]
        elif any(isinstance(t, SymbolicTensor) for t in _flatten(inputs)):
            return self._call_symbolic(inputs, kwargs)
        elif isinstance(inputs, (list, tuple)):
            inputs = [_as_input(i, self) for i in inputs]
            shapes = [(None,) + i.shape[1:] for i in inputs]
        else:
            inputs = _as_input(inputs, self)
            shapes = (None,) + inputs.shape[1:]
        self._maybe_build(shapes)
        self._check_spec(shapes)
        cast = _autocast.plan(self, inputs)  # None unless a 16-bit float is involved
        if cast is not None:
            inputs = _autocast.cast_tree(inputs, cast[0])
        previous_mask = self._fill_masks(inputs, kwargs)
        if cast is None:
            out = (self.call(inputs, training=training, **kwargs) if self._call_accepts_training
                   else self.call(inputs, **kwargs))
        else:
            swapped = _autocast.swap_variables(self) if cast[1] else ()
            try:
                out = self.call(inputs, **self._training_kw(training), **kwargs)
            finally:
                _autocast.restore(swapped)
            out = _autocast.cast_tree(out, cast[2])
        # With no mask coming in, only an overridden compute_mask can make one (the default returns
        # the previous mask): most layers of a step skip the mask bookkeeping.
        if previous_mask is not None or (type(self).compute_mask is not Layer.compute_mask
                                         and self.supports_masking):
            self._set_output_masks(inputs, out, previous_mask)
        return out

    def apply(self, inputs, training=None, **kwargs):
        """TF.js's name for calling a layer (``layer.apply(symbolic_tensor)``)."""
        return self(inputs, training=training, **kwargs)

    def _call_symbolic(self, inputs, kwargs):
        is_list = isinstance(inputs, (list, tuple))
        syms = list(inputs) if is_list else [inputs]
        for s in syms:
            if not isinstance(s, SymbolicTensor):
                raise TypeError(
                    f"layer {self.name!r}: cannot mix symbolic inputs (from Input) with "
                    f"concrete values ({type(s).__name__}) in one call")
        shapes = [s.shape for s in syms] if is_list else syms[0].shape
        self._maybe_build(shapes)
        self._check_spec(shapes)
        out_shape = self.compute_output_shape(shapes)
        node = Node(self, syms, is_list, kwargs)
        multi = isinstance(out_shape, list)
        outs = [SymbolicTensor(s, self.compute_dtype, node, i, name=f"{self.name}/out{i}")
                for i, s in enumerate(out_shape if multi else [out_shape])]
        node.outputs = outs
        self._inbound_nodes.append(node)
        prev = _masks_of(syms if is_list else syms[0])
        if isinstance(kwargs.get("mask"), SymbolicTensor):
            prev = kwargs["mask"]
        self._symbolic_masks(syms, is_list, outs, prev)
        return outs if multi else outs[0]

    # ---------------------------------------------------- graph properties
    def _first_node(self, what):
        if not self._inbound_nodes:
            raise AttributeError(
                f"layer {self.name!r} has not been called on a symbolic input, so it has no {what}")
        return self._inbound_nodes[0]

    @property
    def input(self):
        n = self._first_node("input")
        return n.inputs if n.is_list else n.inputs[0]

    @property
    def output(self):
        n = self._first_node("output")
        return n.outputs if len(n.outputs) > 1 else n.outputs[0]

    @property
    def input_shape(self):
        if self._inbound_nodes:
            i = self.input
            return [t.shape for t in i] if isinstance(i, list) else i.shape
        if self._build_input_shape is not None:
            return self._build_input_shape
        if self._batch_input_shape is not None:
            return self._batch_input_shape
        raise AttributeError(f"layer {self.name!r} has no input shape yet")

    @property
    def output_shape(self):
        if self._inbound_nodes:
            o = self.output
            return [t.shape for t in o] if isinstance(o, list) else o.shape
        return self.compute_output_shape(self.input_shape)

    @property
    def inbound_layer_names(self) -> list:
        if not self._inbound_nodes:
            return []
        return [layer.name for layer in self._inbound_nodes[0].inbound_layers]

    # -------------------------------------------------------------- config
    def get_config(self) -> dict:
        """Constructor arguments as plain JSON-able values (Keras's keys)."""
        # The policy's name: "mixed_float16" keeps the compute dtype too (a plain dtype otherwise).
        cfg = {"name": self.name, "trainable": self.trainable, "dtype": self._dtype_policy.name}
        if self._batch_input_shape is not None:
            cfg["batch_input_shape"] = list(self._batch_input_shape)
        return cfg

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r}, built={self.built}>"


def _as_input(x, layer):
    """``x`` as a Tensor; text (strings) stays a host array for a layer that reads strings
    (``_reads_strings``: models, TextVectorization), as no backend holds strings."""
    if isinstance(x, Tensor):
        return x
    if getattr(layer, "_reads_strings", False):
        from ..data.text import is_string_data
        if is_string_data(x):
            return x
    return tensor(x)


def _zeros(shape):
    from .. import backends
    return backends.current().zeros(shape)


class InputLayer(Layer):
    """The entry point of a functional graph; ``Input()`` creates one."""

    def __init__(self, input_shape=None, batch_size=None, dtype=None, name=None,
                 batch_input_shape=None, batch_shape=None, **kwargs):
        if batch_shape is not None and batch_input_shape is None:
            batch_input_shape = batch_shape  # Keras 3 spelling
        if input_shape is None and batch_input_shape is None:
            raise ValueError("InputLayer needs input_shape (without the batch axis) or batch_input_shape")
        super().__init__(name=name or unique_name("input_layer"), dtype=dtype or "float32",
                         input_shape=input_shape, batch_input_shape=batch_input_shape,
                         batch_size=batch_size, **kwargs)
        self.built = True
        node = Node(self, [], False, {})
        out = SymbolicTensor(self._batch_input_shape, self.dtype, node, 0, name=self.name)
        node.outputs = [out]
        self._inbound_nodes.append(node)

    def call(self, inputs):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    @property
    def input_shape(self):
        return self._batch_input_shape

    @property
    def output_shape(self):
        return self._batch_input_shape

    def get_config(self):
        return {"batch_input_shape": list(self._batch_input_shape), "dtype": self.dtype,
                "name": self.name}


def Input(shape=None, batch_size=None, name=None, dtype=None, batch_shape=None, tensor=None):
    """A symbolic input for the functional API; ``shape`` excludes the batch axis."""
    if tensor is not None:
        raise ValueError("Input(tensor=...) is not supported; pass shape=")
    if shape is None and batch_shape is None:
        raise ValueError("Input needs shape= (without the batch axis) or batch_shape=")
    if shape is not None:
        if isinstance(shape, int):
            shape = (shape,)
        shape = tuple(shape)
    layer = InputLayer(input_shape=shape, batch_size=batch_size, name=name, dtype=dtype,
                       batch_input_shape=batch_shape)
    return layer.output
