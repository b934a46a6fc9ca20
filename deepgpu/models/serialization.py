"""Model architectures as Keras-style configs ({class_name, config} trees) and back.

The dialect is tf.keras 2's, which TF.js Layers reads: InputLayer with
``batch_input_shape``, functional ``inbound_nodes`` as
``[[[layer_name, node_index, tensor_index, {}], ...]]``.
"""
from __future__ import annotations

_CUSTOM: dict = {}


def register_serializable(name=None):
    """Decorator: make a custom Layer / loss / activation class or function loadable by name."""
    def deco(obj):
        _CUSTOM[name or obj.__name__] = obj
        return obj
    return deco


def custom_objects() -> dict:
    return dict(_CUSTOM)


def _lookup_class(class_name, custom):
    from .. import layers
    from .model import Model
    from .sequential import Sequential

    if custom and class_name in custom:
        return custom[class_name]
    if class_name in _CUSTOM:
        return _CUSTOM[class_name]
    if class_name in ("Sequential",):
        return Sequential
    if class_name in ("Model", "Functional"):
        return Model
    if class_name == "InputLayer":
        from ..layers.base import InputLayer
        return InputLayer
    cls = getattr(layers, class_name, None)
    if isinstance(cls, type):
        return cls
    raise ValueError(
        f"unknown layer class {class_name!r}: it is not a deepgpu layer; pass it in "
        f"custom_objects={{'{class_name}': cls}} or decorate it with @register_serializable()")


def serialize_layer(layer) -> dict:
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def deserialize_layer(spec, custom=None):
    if not isinstance(spec, dict) or "class_name" not in spec:
        raise ValueError(f"a layer must be described as {{'class_name':..., 'config':...}}, got {spec!r}")
    cls = _lookup_class(spec["class_name"], custom)
    cfg = dict(spec.get("config") or {})
    try:
        if "custom_objects" in cls.from_config.__code__.co_varnames:
            return cls.from_config(cfg, custom_objects=custom)
        return cls.from_config(cfg)
    except TypeError as e:
        raise ValueError(f"cannot build layer {spec['class_name']} from its config: {e}") from None


def sequential_config(model) -> dict:
    layers = []
    if model._input_layer is not None:
        layers.append(serialize_layer(model._input_layer))
    layers += [serialize_layer(l) for l in model.layers]
    return {"name": model.name, "layers": layers}


def sequential_from_config(config, custom=None):
    from ..layers.base import InputLayer
    from .sequential import Sequential

    model = Sequential(name=config.get("name"))
    for spec in config.get("layers", []):
        layer = deserialize_layer(spec, custom)
        if isinstance(layer, InputLayer):
            model.add(layer)
        else:
            model.add(layer)
    return model


def _model_nodes(model):
    """For each layer, the indices (within that layer) of the nodes that belong to the model."""
    mine = {id(n) for n in model._nodes}
    for t in model._inputs:
        mine.add(id(t.node))
    return {id(l): [i for i, n in enumerate(l._inbound_nodes) if id(n) in mine] for l in model.layers}


def functional_config(model) -> dict:
    node_ids = _model_nodes(model)

    def ref(t):
        layer = t.node.layer
        idx = layer._inbound_nodes.index(t.node)
        return [layer.name, node_ids[id(layer)].index(idx), t.index, {}]

    layers = []
    for layer in model.layers:
        inbound = []
        for i in node_ids[id(layer)]:
            node = layer._inbound_nodes[i]
            if node.inputs:
                inbound.append([ref(t) for t in node.inputs])
        entry = serialize_layer(layer)
        entry["name"] = layer.name
        entry["inbound_nodes"] = inbound
        layers.append(entry)
    return {
        "name": model.name,
        "layers": layers,
        "input_layers": [ref(t)[:3] for t in model._inputs],
        "output_layers": [ref(t)[:3] for t in model._outputs],
    }


def functional_from_config(config, custom=None):
    from ..layers.base import InputLayer
    from .model import Model

    created, outputs, pending = {}, {}, []
    for spec in config["layers"]:
        layer = deserialize_layer(spec, custom)
        name = spec.get("name", layer.name)
        created[name] = layer
        outputs[name] = []
        if isinstance(layer, InputLayer):
            outputs[name].append([layer.output])
        pending += [(name, k, node) for k, node in enumerate(spec.get("inbound_nodes", []))]

    def available(ref):
        got = outputs.get(ref[0], [])
        return ref[1] < len(got) and ref[2] < len(got[ref[1]])

    # A shared layer may be called on a layer listed after it (Keras lists each
    # layer once, at its first call), so calls wait until their inputs exist;
    # each layer's calls still run in their order, which fixes node indices.
    while pending:
        waiting = []
        for name, k, node in pending:
            if len(outputs[name]) != k or not all(available(ref) for ref in node):
                waiting.append((name, k, node))
                continue
            args = [outputs[ref[0]][ref[1]][ref[2]] for ref in node]
            out = created[name](args if len(args) > 1 else args[0])
            outputs[name].append(out if isinstance(out, list) else [out])
        if len(waiting) == len(pending):
            name, k, node = waiting[0]
            ref = next((r for r in node if not available(r)), node[0])
            raise ValueError(f"layer {name!r} takes input from {ref[0]!r} node {ref[1]}, which no layer of "
                             f"the config produces")
        pending = waiting

    def pick(refs):
        return [outputs[r[0]][r[1]][r[2]] for r in refs]

    ins, outs = pick(config["input_layers"]), pick(config["output_layers"])
    return Model(ins if len(ins) > 1 else ins[0], outs if len(outs) > 1 else outs[0],
                 name=config.get("name"))


def model_from_config(spec, custom_objects=None):
    """A model from ``{"class_name": "Sequential" | "Model" | "Functional", "config": ...}``."""
    return deserialize_layer(spec, custom_objects)
