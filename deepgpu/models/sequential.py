"""Sequential: a plain stack of layers, each feeding the next."""
from __future__ import annotations

from ..layers.base import InputLayer, Layer, SymbolicTensor, _as_input
from ..tensor import Tensor, tensor
from .model import Model


class Sequential(Model):
    """``Sequential(layers=None, name=None)``; grow it with ``add``, shrink with ``pop``.

    The input shape comes from the first layer's ``input_shape`` (or an
    ``Input``/``InputLayer`` added first); otherwise the model is built on
    its first call. A layer that does not fit is refused by ``add`` with a
    ValueError naming it and both shapes, and the model stays as it was.
    """

    def __init__(self, layers=None, name=None, trainable=True):
        super().__init__(name=name, trainable=trainable)
        self._functional = False
        self._stack: list = []
        self._input_layer = None
        self._chain = None  # [input symbol, output of layer 1, ...] once the input shape is known
        for layer in layers or []:
            self.add(layer)

    def add(self, layer) -> None:
        if isinstance(layer, SymbolicTensor):
            if layer.node is None or not isinstance(layer.node.layer, InputLayer):
                raise TypeError("Sequential.add accepts layers or an Input(); got another symbolic tensor")
            layer = layer.node.layer
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add expects a Layer, got {type(layer).__name__}")
        if isinstance(layer, InputLayer):
            if self._stack or self._input_layer is not None:
                raise ValueError("an InputLayer can only be the first thing added to a Sequential model")
            self._input_layer = layer
            self._chain = [layer.output]
            return
        if any(layer is l for l in self._stack):
            raise ValueError(f"layer {layer.name!r} is already in model {self.name!r}")
        if any(layer.name == l.name for l in self._stack):
            raise ValueError(f"model {self.name!r} already has a layer named {layer.name!r}")
        if self._chain is None and not self._stack and layer._batch_input_shape is not None:
            self._input_layer = InputLayer(batch_input_shape=layer._batch_input_shape,
                                           name=f"{layer.name}_input")
            self._chain = [self._input_layer.output]
        if self._chain is not None:
            n_nodes = len(layer._inbound_nodes)
            try:
                out = layer(self._chain[-1])
            except Exception:
                del layer._inbound_nodes[n_nodes:]
                if not self._stack and self._input_layer is not None and len(self._chain) == 1 \
                        and self._input_layer.name == f"{layer.name}_input":
                    self._input_layer, self._chain = None, None
                raise
            if isinstance(out, list):
                raise ValueError(
                    f"layer {layer.name!r} returns {len(out)} outputs; Sequential layers must return one "
                    f"(use the functional Model for this)")
            self._chain.append(out)
        self._stack.append(layer)
        self._tracked_layers = list(self._stack)
        self.built = self._chain is not None

    def pop(self) -> Layer:
        """Remove and return the last layer."""
        if not self._stack:
            raise TypeError(f"there are no layers in model {self.name!r} to pop")
        layer = self._stack.pop()
        if self._chain is not None and len(self._chain) > 1:
            self._chain.pop()
            if layer._inbound_nodes:
                layer._inbound_nodes.pop()
        self._tracked_layers = list(self._stack)
        return layer

    def _sublayers(self):
        return list(self._stack)

    @property
    def layers(self) -> list:
        """The layers in order (the input layer is not listed, as in Keras)."""
        return list(self._stack)

    @property
    def inputs(self):
        return [self._chain[0]] if self._chain else []

    @property
    def outputs(self):
        return [self._chain[-1]] if self._chain else []

    @property
    def input_names(self):
        return [self._chain[0].node.layer.name] if self._chain else []

    @property
    def output_names(self):
        return [self._stack[-1].name] if self._stack else []

    def get_layer(self, name=None, index=None):
        return Model.get_layer(self, name, index)

    def build(self, input_shape=None) -> None:
        """Build for ``input_shape`` (batch axis included, may be None)."""
        if self._chain is not None:
            return
        if input_shape is None:
            raise ValueError(f"model {self.name!r} needs an input shape to build")
        self._input_layer = InputLayer(batch_input_shape=tuple(input_shape), name=f"{self.name}_input",
                                       dtype=getattr(self, "_input_dtype", None))
        chain = [self._input_layer.output]
        for layer in self._stack:
            chain.append(layer(chain[-1]))
        self._chain = chain
        self.built = True

    def _maybe_build(self, input_shape):
        if self._chain is None:
            self.build(input_shape)

    def __call__(self, inputs, training=None, **kwargs):
        if isinstance(inputs, SymbolicTensor):
            return Layer.__call__(self, inputs, training=training, **kwargs)
        if not self._stack:
            raise ValueError(f"model {self.name!r} has no layers")
        if isinstance(inputs, dict):
            inputs = self._structure_inputs(inputs)[0]
        x = _as_input(inputs, self)
        if self._chain is None:
            self._input_dtype = None if isinstance(x, Tensor) else "string"
            self.build((None,) + x.shape[1:])
        return self.call(x, training=training)

    def call(self, inputs, training=None):
        x = inputs
        exp, got = self._chain[0].shape[1:], x.shape[1:]
        # exp == got: the usual fully known input shape, decided without a generator per call
        if len(exp) != x.ndim - 1 or (exp != got and any(e is not None and e != g for e, g in zip(exp, got))):
            raise ValueError(
                f"Input 0 of model {self.name!r} is incompatible: expected shape "
                f"{(None,) + tuple(exp)}, got {x.shape}")
        for layer in self._stack:
            x = layer(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        if self._chain is None:
            self.build(input_shape)
        return self._chain[-1].shape

    def get_config(self) -> dict:
        from .serialization import sequential_config
        return sequential_config(self)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        from .serialization import sequential_from_config
        return sequential_from_config(config, custom_objects)
