"""How the recurrent layers and wrappers (issue 16) meet the TF.js and Keras file formats.

Called from ``tfjs.py`` and ``keras.py`` with small hooks, so those shared files stay short:

- TF.js: nested layer configs (an RNN's ``cell`` / ``cells``, a wrapper's ``layer``) are checked
  like top-level ones; TF.js's GRU has only ``reset_after=False``; TF.js's (and Keras 2's)
  hard_sigmoid, ``clip(0.2 x + 0.5, 0, 1)``, the default recurrent activation of its LSTM and
  GRU, loads as deepgpu's ``tfjs_hard_sigmoid`` and is written back as ``hard_sigmoid``.
- Keras 3: a recurrent layer keeps its weights in its cell's group (``<path>/cell/vars``, a
  stack's cells at ``<path>/cell/cells/<lstm_cell...>``), a wrapper in its inner layers'
  (``<path>/layer``, ``<path>/forward_layer``, ``<path>/backward_layer``); nested configs are
  translated between the two dialects recursively.
"""
from __future__ import annotations

_NESTED = ("cell", "layer", "backward_layer")
_ACT_KEYS = ("activation", "recurrent_activation")
_HARD_SIGMOID = ("hard_sigmoid", "hardSigmoid")


# ------------------------------------------------------------------- TF.js
def tfjs_out(cls, cfg, refuse, check_nested):
    """Adjust or refuse one layer config for TF.js (before the activation checks); ``check_nested``
    checks an inner ``{class_name, config}``."""
    for key in _ACT_KEYS:
        if cfg.get(key) == "tfjs_hard_sigmoid":
            cfg[key] = "hard_sigmoid"  # TF.js's own definition
        elif key == "recurrent_activation" and cfg.get(key) == "hard_sigmoid":
            refuse("uses hard_sigmoid as its recurrent_activation, which TF.js computes as Keras 2 did "
                   "(0.2 x + 0.5), not as deepgpu and Keras 3 do (relu6(x + 3) / 6)")
    if cls in ("GRU", "GRUCell") and cfg.get("reset_after", True):
        refuse("has reset_after=True (Keras 3's default), and TF.js's GRU has only reset_after=False; build it "
               "with GRU(..., reset_after=False) to save for TF.js")
    if cls == "Bidirectional" and cfg.get("backward_layer") is not None:
        refuse("has a backward_layer of its own, which TF.js's Bidirectional does not take")
    if cls in ("LSTM", "GRU", "SimpleRNN", "RNN") and cfg.get("zero_output_for_mask"):
        refuse("has zero_output_for_mask=True, which TF.js's RNN does not have")
    for key in ("zero_output_for_mask", "seed"):
        cfg.pop(key, None)  # not TF.js options (False / None: TF.js's behaviour)
    for key in _NESTED:
        if isinstance(cfg.get(key), dict):
            if cls == "Bidirectional" and isinstance(cfg[key].get("config"), dict):
                cfg[key]["config"].pop("zero_output_for_mask", None)  # TF.js's Bidirectional does this itself
            check_nested(cfg[key])
    for c in cfg.get("cells") or []:
        check_nested(c)


def tfjs_in(node, keras3):
    """In place, for one config dict of a TF.js file: TF.js's hard_sigmoid and GRU default."""
    if not keras3:
        for key in _ACT_KEYS:
            if node.get(key) in _HARD_SIGMOID:
                node[key] = "tfjs_hard_sigmoid"
    if node.get("class_name") in ("GRU", "GRUCell") and isinstance(node.get("config"), dict):
        node["config"].setdefault("reset_after", False)  # TF.js's GRU has only this form


# ------------------------------------------------------------------ Keras 3
def keras_sublayers(layer):
    """[(relative h5 path, layer)] where Keras keeps the weights below ``layer`` (empty for others)."""
    fn = getattr(layer, "_keras_sublayers", None)
    return fn() if fn is not None else []


def keras_subpaths(path, layer):
    from .keras import _keras_snake

    out, used = [], {}
    for rel, sub in keras_sublayers(layer):
        if rel.endswith("/"):  # named by class, made unique as Keras does: lstm_cell, lstm_cell_1
            base = _keras_snake(type(sub).__name__)
            rel += base if base not in used else f"{base}_{used[base] + 1}"
            used[base] = used.get(base, -1) + 1
        out.append((f"{path}/{rel}", sub))
        out += keras_subpaths(f"{path}/{rel}", sub)
    return out


def keras_in(key, value, convert):
    """A nested layer config of a Keras file in deepgpu's dialect (``convert(class_name, config)``)."""
    if key in _NESTED and isinstance(value, dict) and "class_name" in value:
        return convert(value["class_name"], value.get("config") or {})
    if key == "cells" and isinstance(value, list):
        return [convert(v["class_name"], v.get("config") or {}) for v in value]
    return value


def keras_out(key, value, layer_config):
    """A nested deepgpu layer config as Keras 3 writes it (``layer_config(layer)`` for the inner layer)."""
    from ..registry import deserialize_layer

    def one(spec):
        inner = deserialize_layer(spec)
        return {"module": "keras.layers", "class_name": type(inner).__name__, "config": layer_config(inner),
                "registered_name": None}
    if key in _NESTED and isinstance(value, dict) and "class_name" in value:
        return one(value)
    if key == "cells" and isinstance(value, list):
        return [one(v) for v in value]
    return value


def _history(value):
    """The keras_history of a Keras 3 ``__keras_tensor__`` dict, else None."""
    if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
        return (value.get("config") or {}).get("keras_history")
    return None


def _refs_in(v):
    if isinstance(v, dict):
        h = _history(v)
        if h:
            return [h[0]]
        return [n for x in v.values() for n in _refs_in(x)]
    if isinstance(v, list):
        return [n for x in v for n in _refs_in(x)]
    return []


def keras3_masks_implicit(entries, outputs):
    """Keras 3 writes a functional model's masks as explicit ops (``NotEqual``, ``Any``... feeding
    ``mask=`` call arguments). deepgpu's layers make and pass the same masks themselves: the
    ``mask`` arguments are dropped, and so are the layers that only fed them (not inputs, not
    outputs). Returns the layer entries to read (copies where changed)."""
    if any(not isinstance(n, dict) for e in entries for n in e.get("inbound_nodes") or []):
        return entries  # tf.keras 2 nodes carry no masks
    by_name = {e.get("name"): e for e in entries}
    keep_always = {o[0] for o in outputs if isinstance(o, list) and o and isinstance(o[0], str)}
    keep_always |= {e.get("name") for e in entries if e.get("class_name") == "InputLayer"}

    def data_refs(e):  # what a layer reads besides masks
        out = []
        for node in e.get("inbound_nodes") or []:
            out += _refs_in(node.get("args"))
            out += _refs_in({k: v for k, v in (node.get("kwargs") or {}).items() if k != "mask"})
        return out

    candidates = {n for e in entries for node in e.get("inbound_nodes") or []
                  for n in _refs_in((node.get("kwargs") or {}).get("mask"))}
    drop = set()
    while True:
        readers = {}
        for e in entries:
            if e.get("name") not in drop:
                for n in data_refs(e):
                    readers.setdefault(n, set()).add(e.get("name"))
        new = {n for n in candidates - drop - keep_always if n in by_name and not readers.get(n)}
        if not new:
            break
        drop |= new
        candidates |= {r for n in new for r in data_refs(by_name[n])}
    out = []
    for e in entries:
        if e.get("name") in drop:
            continue
        nodes = [{**n, "kwargs": {k: v for k, v in (n.get("kwargs") or {}).items() if k != "mask"}}
                 for n in e.get("inbound_nodes") or []]
        out.append({**e, "inbound_nodes": nodes})
    return out


def keras3_initial_state(kwargs):
    """An RNN call's ``initial_state`` keras tensors (removed from ``kwargs``), to join the node's inputs."""
    states = kwargs.pop("initial_state", None)
    if states is None:
        return []
    return list(states) if isinstance(states, list) else [states]


def shape_hint(weight_name, stored, wanted):
    """A hint for a weight-shape mismatch that is a GRU's other reset_after form, else ""."""
    stored, wanted = tuple(stored), tuple(wanted)
    if not str(weight_name).endswith("bias"):
        return ""
    if len(stored) == 1 and len(wanted) == 2 and wanted[0] == 2 and wanted[1] == stored[0] and stored[0] % 3 == 0:
        return ("; a GRU bias of shape (3 units,) comes from reset_after=False (TF.js's form): build the "
                "layer with reset_after=False to load it")
    if len(stored) == 2 and stored[0] == 2 and len(wanted) == 1 and stored[1] == wanted[0] and wanted[0] % 3 == 0:
        return ("; a GRU bias of shape (2, 3 units) comes from reset_after=True (Keras 3's default): build the "
                "layer with reset_after=True to load it")
    return ""
