"""Model architectures as Keras-style configs ({class_name, config} trees) and back.

The dialect is tf.keras 2's, which TF.js Layers reads: InputLayer with
``batch_input_shape``, functional ``inbound_nodes`` as
``[[[layer_name, node_index, tensor_index, {}], ...]]``.
"""
from __future__ import annotations

# The registry lives below the layers (deepgpu/registry.py); its names stay
# importable from here for code written against this module.
from ..registry import (  # noqa: F401
    _CUSTOM, custom_objects, deserialize_layer, lookup_class, register_serializable, serialize_layer,
)
from ..registry import lookup_class as _lookup_class  # noqa: F401


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


def _call_kwargs(layer, node) -> dict:
    """The call options a layer declares (``_keras_call_kwargs``) that this node was called with."""
    return {k: node.kwargs[k] for k in getattr(layer, "_keras_call_kwargs", ()) if node.kwargs.get(k)}


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
                refs = [ref(t) for t in node.inputs]
                kw = _call_kwargs(layer, node)
                if kw:
                    refs[0][3] = kw  # tf.keras 2's place for a call's keyword arguments
                inbound.append(refs)
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
            kw = node[0][3] if len(node[0]) > 3 and isinstance(node[0][3], dict) else {}
            out = created[name](args if len(args) > 1 else args[0], **kw)
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


def model_from_json(json_string, custom_objects=None):
    """A model (fresh weights) from ``model.to_json()``; ValueError naming what is wrong for bad JSON."""
    import json
    try:
        spec = json.loads(json_string)
    except (TypeError, ValueError) as e:
        raise ValueError(f"model_from_json: not a JSON model description ({e})") from None
    if not isinstance(spec, dict) or "class_name" not in spec or "config" not in spec:
        raise ValueError("model_from_json: expected {\"class_name\": ..., \"config\": ...} as model.to_json() "
                         "writes")
    return model_from_config(spec, custom_objects)
