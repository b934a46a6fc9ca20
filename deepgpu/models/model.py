"""Model: a functional graph of layers (or a subclass with its own ``call``).

``Model(inputs, outputs)`` walks back from ``outputs`` to ``inputs`` through
the nodes that layers recorded when called on symbolic tensors, and runs
those nodes in order. A Model is itself a Layer, so it can be called on new
inputs and nested in another model.
"""
from __future__ import annotations

from ..autograd import is_grad_enabled
from ..layers.base import InputLayer, Layer, SymbolicTensor, _as_input, _flatten
from ..layers.tracking import tracked_layers
from ..tensor import Tensor, tensor
from . import fusion
from .steps import StepsMixin, auto_config
from .summary import print_summary
from .training import Trainer


class Model(StepsMixin, Trainer, Layer):
    """A model of layers: ``Model(inputs, outputs, name=None)``.

    inputs / outputs: a SymbolicTensor from ``Input`` (or a layer's output),
    or a list / dict of them. Without them, subclass Model and define
    ``call(inputs, training=None)``: layers set as attributes (also in lists
    and dicts) are tracked; the model is built by its first call (or
    ``build(input_shape)``), and ``train_step`` / ``test_step`` /
    ``predict_step`` may be overridden as in Keras 3 (see ``StepsMixin``).
    """

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        # Keras 3's automatic config: a subclass whose constructor takes plain values
        # (str, int, float, bool, None, and lists / dicts of them) saves without get_config.
        obj._auto_config = auto_config(cls, args, kwargs)
        return obj

    _reads_strings = True  # a model may start with a TextVectorization

    def __init__(self, inputs=None, outputs=None, name=None, trainable=True, **kwargs):
        self._tracked_layers = []
        Layer.__init__(self, name=name, trainable=trainable, **kwargs)
        Trainer.__init__(self)
        self._functional = inputs is not None
        if (inputs is None) != (outputs is None):
            raise ValueError("Model needs both inputs and outputs (or neither, when subclassing)")
        if self._functional:
            self._init_graph(inputs, outputs)

    # ------------------------------------------------------------ the graph
    def _init_graph(self, inputs, outputs):
        self._input_is_dict = isinstance(inputs, dict)
        self._output_is_dict = isinstance(outputs, dict)
        self._output_names_dict = list(outputs) if self._output_is_dict else None
        self._input_names_dict = list(inputs) if self._input_is_dict else None
        self._single_input = isinstance(inputs, SymbolicTensor)
        self._single_output = isinstance(outputs, SymbolicTensor)
        ins = _flatten(inputs)
        outs = _flatten(outputs)
        for t in ins + outs:
            if not isinstance(t, SymbolicTensor):
                raise TypeError(
                    f"Model inputs and outputs must be symbolic tensors (from Input or a layer "
                    f"called on one), got {type(t).__name__}")
        self._inputs, self._outputs = ins, outs
        in_ids = {id(t) for t in ins}
        order, seen = [], set()

        def visit(t, path):
            if id(t) in in_ids:
                return
            node = t.node
            if node is None or isinstance(node.layer, InputLayer):
                raise ValueError(
                    f"Graph disconnected: cannot reach {t!r} from the model's inputs "
                    f"{[i.name for i in ins]}; every path must start at one of them")
            if id(node) in seen:
                return
            if id(node) in path:
                raise ValueError("the layer graph has a cycle")
            path.add(id(node))
            for i in node.inputs:
                visit(i, path)
            path.discard(id(node))
            seen.add(id(node))
            order.append(node)

        for o in outs:
            visit(o, set())
        self._nodes = order
        layers = []
        for t in ins:
            if t.node is not None and t.node.layer not in layers:
                layers.append(t.node.layer)
        for n in order:
            if n.layer not in layers:
                layers.append(n.layer)
        self._graph_layers = layers
        names = [layer.name for layer in layers]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"layer names must be unique within a model; repeated: {sorted(dup)}")
        self.built = True

    def _sublayers(self):
        if self._functional:
            return [layer for layer in self._graph_layers if not isinstance(layer, InputLayer)]
        return tracked_layers(self)

    def _subclassed(self) -> bool:
        """True for a Model subclass defining its own ``call`` (neither functional nor Sequential)."""
        from .sequential import Sequential
        return not self._functional and not isinstance(self, Sequential)

    @property
    def layers(self) -> list:
        """The model's layers in graph order (InputLayers included, as Keras does); for a
        subclassed model, the layers its attributes hold, in the order they were set."""
        if self._functional:
            return list(self._graph_layers)
        return tracked_layers(self)

    @property
    def inputs(self) -> list:
        return list(self._inputs) if self._functional else []

    @property
    def outputs(self) -> list:
        return list(self._outputs) if self._functional else []

    @property
    def input(self):
        ins = self.inputs
        if not ins:
            raise AttributeError(f"model {self.name!r} has no symbolic inputs yet")
        return ins[0] if len(ins) == 1 else ins

    @property
    def output(self):
        outs = self.outputs
        if not outs:
            raise AttributeError(f"model {self.name!r} has no symbolic outputs yet")
        return outs[0] if len(outs) == 1 else outs

    @property
    def input_shape(self):
        i = self.input
        return [t.shape for t in i] if isinstance(i, list) else i.shape

    @property
    def output_shape(self):
        o = self.output
        return [t.shape for t in o] if isinstance(o, list) else o.shape

    @property
    def input_names(self) -> list:
        return [t.node.layer.name for t in self._inputs]

    @property
    def output_names(self) -> list:
        if not self._functional:
            return self._subclassed_output_names()
        if self._output_is_dict:
            return list(self._output_names_dict)
        return [t.node.layer.name for t in self._outputs]

    def get_layer(self, name=None, index=None) -> Layer:
        """The layer called ``name`` (or at ``index``); ValueError naming the valid ones."""
        if index is not None:
            if not 0 <= index < len(self.layers):
                raise ValueError(f"index {index} is out of range: the model has {len(self.layers)} layers")
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"no layer named {name!r}; the layers are {[l.name for l in self.layers]}")

    # ---------------------------------------------------------------- calls
    def _structure_inputs(self, inputs):
        """Flat list of Tensors in model-input order from a tensor, list or dict.

        A dict is matched by name (the keys of a dict given as ``inputs`` to
        Model, else the input layers' names); an unknown or missing key is a
        ValueError listing the expected names.
        """
        if isinstance(inputs, dict):
            if getattr(self, "_input_is_dict", False):
                names = list(self._input_names_dict)
            else:
                names = self.input_names if (self._functional or self.inputs) else []
            if not names:
                raise ValueError(f"model {self.name!r} has no named inputs yet, so a dict of inputs "
                                 f"({sorted(inputs)}) cannot be matched; pass the arrays themselves")
            missing = [k for k in names if k not in inputs]
            unknown = [k for k in inputs if k not in names]
            if missing or unknown:
                raise ValueError(
                    f"model {self.name!r}: the input dict's keys must be the input names {names}; "
                    f"got {list(inputs)} (missing {missing}, unknown {unknown})")
            return [inputs[k] for k in names]
        if isinstance(inputs, (list, tuple)):
            return list(inputs)
        return [inputs]

    def call(self, inputs, training=None):
        if not self._functional:
            raise NotImplementedError(
                f"model {self.name!r} was built without inputs/outputs; subclasses must define call()")
        flat = self._structure_inputs(inputs)
        if len(flat) != len(self._inputs):
            raise ValueError(
                f"model {self.name!r} expects {len(self._inputs)} input(s), got {len(flat)}")
        values = {}
        for sym, x in zip(self._inputs, flat):
            x = _as_input(x, self)  # text stays on the host for its TextVectorization
            exp = sym.shape[1:]
            got = x.shape[1:]
            if len(exp) != len(got) or any(e is not None and e != g for e, g in zip(exp, got)):
                raise ValueError(
                    f"Input {sym.node.layer.name!r} of model {self.name!r} is incompatible: "
                    f"expected shape {('None',) + tuple(exp)}, got {x.shape}")
            values[id(sym)] = x
        # Inference folds BatchNormalization into the convolution before it (models/fusion.py).
        folds = fusion.plan(self) if not training and not is_grad_enabled() else {}
        skip = set()
        for i, node in enumerate(self._nodes):
            if i in skip:
                continue
            if i in folds:
                j, k, cap = folds[i]
                last = self._nodes[j if k is None else k]
                skip.update((j, k))
                values[id(last.outputs[0])] = fusion.run(node.layer, self._nodes[j].layer, cap, k is not None,
                                                         values[id(node.inputs[0])])
                continue
            args = [values[id(t)] for t in node.inputs]
            y = node.layer(args if node.is_list else args[0], training=training, **node.kwargs)
            ys = y if isinstance(y, (list, tuple)) else [y]
            for sym, v in zip(node.outputs, ys):
                values[id(sym)] = v
        outs = [values[id(o)] for o in self._outputs]
        if self._functional and self._output_is_dict:
            return dict(zip(self._output_names_dict, outs))
        return outs[0] if self._single_output else outs

    def __call__(self, inputs, training=None, **kwargs):
        if self._functional and isinstance(inputs, dict):
            flat = self._structure_inputs(inputs)
            inputs = flat[0] if len(flat) == 1 else flat
        out = Layer.__call__(self, inputs, training=training, **kwargs)
        if not self._functional:
            self._note_outputs(out)
        return out

    def compute_mask(self, inputs, previous_mask=None):
        # The inner layers attached their masks to the outputs already (Keras's Functional does
        # the same); a model adds none of its own, and does not warn that it drops one.
        return None

    def compute_output_shape(self, input_shape):
        if not self._functional:
            return Layer.compute_output_shape(self, input_shape)
        shapes = [o.shape for o in self._outputs]
        return shapes[0] if self._single_output else shapes

    def _maybe_build(self, input_shape):
        if self._functional:
            return
        if not self.built and type(self).build is Model.build:
            # The call that follows builds every sublayer; no separate pass on zeros.
            self.built = True
            self._build_input_shape = input_shape
            if not self._trainable:  # sublayers made in __init__ freeze with their owner
                for layer in self._sublayers():
                    layer.trainable = False
            return
        Layer._maybe_build(self, input_shape)

    def build(self, input_shape=None):
        """Create the weights of a subclassed model for ``input_shape`` (batch axis included,
        may be None; a list of shapes for several inputs) by one call on zeros, as Keras
        builds one. A functional model is built already."""
        if self._functional or self.built:
            self.built = True
            return
        self._build_on_zeros(input_shape)

    # -------------------------------------------------------------- display
    def summary(self, line_length=None, positions=None, print_fn=None, return_string=False,
                expand_nested=False, show_trainable=False, **kwargs):
        """Print the Keras layer table and the parameter totals.

        line_length: total width (default 65, or 98 with the "Connected to"
        column for functional models); positions: column ends, as fractions
        or absolute; print_fn: called with each line instead of print.
        expand_nested: list a nested model's layers under it (marked ``└``,
        indented per level); show_trainable: a "Trainable" column (Y / N, "-"
        for a layer without weights), as Keras 3 prints them. Returns the text
        when ``return_string`` is true. ``layer_range`` is refused (TypeError).
        """
        if kwargs:
            raise TypeError(f"summary() got unexpected keyword argument(s) {sorted(kwargs)}")
        return print_summary(self, line_length, positions, print_fn, return_string, expand_nested, show_trainable)

    def get_config(self) -> dict:
        """The graph as Keras's functional config: layers with inbound nodes, inputs, outputs.

        A subclassed model returns ``{name, trainable, dtype}`` to an override
        that calls ``super().get_config()``; without an override, its
        constructor's arguments when they are plain values (Keras 3's automatic
        config), else NotImplementedError saying to write ``get_config``."""
        if not self._functional:
            return self._subclassed_config()
        from .serialization import functional_config
        return functional_config(self)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """A functional model from its graph config; a subclass from ``cls(**config)``."""
        if not all(k in config for k in ("layers", "input_layers", "output_layers")) and cls is not Model:
            return cls(**config)
        from .serialization import functional_from_config
        return functional_from_config(config, custom_objects)
