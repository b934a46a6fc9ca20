"""Loading a ready-made network's weights from a local file, matched by layer name as Keras does.

Accepted: a Keras HDF5 file (``.h5``: the weights-only files Keras publishes for its applications,
or a whole saved model), a Keras 3 ``.keras`` or ``.weights.h5`` file, or a TF.js Layers folder
(or its ``model.json``). Layers of the file that the model lacks (a top left off with
``include_top=False``) are ignored; every array is read and checked before the first is assigned.
"""
from __future__ import annotations

import os
import zipfile

from ..io.keras import HDF5_MAGIC, KerasFileError, _h5py, _read_legacy_weights
from ..io.native import ModelFileError


def _fit(model, path, pairs):
    """Assign (weight, array) pairs after checking every shape; ModelFileError naming the file otherwise."""
    bad = [f"{w.name}: the file has {tuple(a.shape)}, the model {tuple(w.shape)}"
           for w, a in pairs if tuple(a.shape) != tuple(w.shape)]
    if bad:
        raise ModelFileError(f"the weights in {path!r} do not fit model {model.name!r} (is input_shape, "
                             f"include_top, classes or alpha as when the file was written?): " + "; ".join(bad[:4])
                             + (" ..." if len(bad) > 4 else ""))
    for w, a in pairs:
        w.assign(a.astype(w.dtype, copy=False))


def _tfjs_pairs(model, path):
    from ..io.tfjs import _read_model_json, _read_weights, _topology

    folder, json_path, doc = _read_model_json(path)
    _, manifest = _topology(doc, json_path)
    stored = {(n[:-2] if n.endswith(":0") else n): a for n, a in _read_weights(folder, json_path, manifest).items()}
    pairs, missing = [], []
    for w in model.weights:
        hits = [n for n in stored if n == w.name or n.endswith("/" + w.name)]
        if len(hits) != 1:
            missing.append(w.name if not hits else f"{w.name} (several: {hits[:3]})")
            continue
        pairs.append((w, stored[hits[0]]))
    if missing:
        raise ModelFileError(f"the TF.js folder {json_path!r} has no single weight for {len(missing)} weights of "
                             f"model {model.name!r}: {missing[:4]}{' ...' if len(missing) > 4 else ''}")
    return pairs


def _keras_zip_pairs(model, path):
    from ..io.keras import load_keras

    src = {layer.name: layer for layer in load_keras(path).layers}
    pairs = []
    for layer in model.layers:
        if not layer.weights:
            continue
        other = src.get(layer.name)
        if other is None or len(other.weights) != len(layer.weights):
            why = "no layer of that name" if other is None else f"{len(other.weights)} weights, not {len(layer.weights)}"
            raise ModelFileError(f"{path!r} does not fit model {model.name!r}: layer {layer.name!r}: {why}")
        pairs += [(w, o.data_sync()) for w, o in zip(layer.weights, other.weights)]
    return pairs


def keras_layer_order(model):
    """The names of a functional model's layers in the order Keras 3 lists them (``keras.ops.function.
    map_graph``: by decreasing depth from the outputs, then by first visit), which names the groups of
    a Keras 3 weights file; deepgpu's own order (depth-first) differs where branches meet (ResNet50)."""
    from ..layers.base import InputLayer

    first, post, done = {}, [], set()

    def visit(t):
        node = t.node
        if node is None or id(node) in done:
            return
        first.setdefault(node.layer.name, len(first))
        if not isinstance(node.layer, InputLayer):
            for i in node.inputs:
                visit(i)
        done.add(id(node))
        post.append(node)

    for o in model.outputs:
        visit(o)
    in_graph = {id(n) for n in post}
    node_depth, layer_depth = {}, {}
    for node in reversed(post):
        d = max(node_depth.get(id(node), 0), layer_depth.get(node.layer.name, 0))
        layer_depth[node.layer.name] = node_depth[id(node)] = d
        for t in node.inputs:
            if t.node is not None and id(t.node) in in_graph:
                node_depth[id(t.node)] = max(d + 1, node_depth.get(id(t.node), 0))
    return sorted(layer_depth, key=lambda name: (-layer_depth[name], first[name]))


def _keras3_pairs(model, path):
    """A Keras 3 ``.weights.h5``: groups named by layer class and position in Keras's layer order."""
    from ..io.keras import _keras_model, _read_keras3_weights, _weights_limit

    spec = _keras_model(model)
    if spec["class_name"] != "Sequential":
        rank = {name: i for i, name in enumerate(keras_layer_order(model))}
        spec["config"]["layers"].sort(key=lambda e: rank.get(e.get("name") or e["config"].get("name"), -1))
    if os.path.getsize(path) > _weights_limit(model):
        raise KerasFileError(f"{path!r} is {os.path.getsize(path)} bytes, far more than the weights of model "
                             f"{model.name!r} need")
    with open(path, "rb") as fh:
        return _read_keras3_weights(model, spec, fh.read(), path)


def load_weights(model, path):
    """Set ``model``'s weights from the local file or TF.js folder ``path`` (see the module's text).

    Raises FileNotFoundError, or ModelFileError (a subclass of ValueError) naming the file and the
    layer whose weights are missing or of another shape; the model is unchanged then.
    """
    path = os.fspath(path)
    if os.path.isdir(path) or path.endswith(".json"):
        return _fit(model, path, _tfjs_pairs(model, path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such weights file: {path!r}")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head == HDF5_MAGIC:
        h5py = _h5py()
        with h5py.File(path, "r") as f:
            if "layer_names" in f.attrs or "model_weights" in f:  # Keras 2 / tf.keras layout, by layer name
                group = f["model_weights"] if "model_weights" in f else f
                return _fit(model, path, [(w, a) for w, a in _read_legacy_weights(model, group, path)])
        return _fit(model, path, _keras3_pairs(model, path))
    if zipfile.is_zipfile(path):
        return _fit(model, path, _keras_zip_pairs(model, path))
    raise KerasFileError(f"{path!r} is neither a Keras HDF5 file, a .keras file nor a TF.js folder")
