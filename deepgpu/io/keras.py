"""Keras model files: read Keras 3 ``.keras`` and legacy HDF5 ``.h5`` files, write ``.keras``.

Reading translates the architecture into deepgpu layers (from either the
Keras 3 config dialect or tf.keras 2's) and loads the weights the way Keras
addresses them:

- ``.keras`` (a zip of ``config.json``, ``metadata.json``, ``model.weights.h5``):
  a layer's weights are the datasets ``0, 1, ...`` of the HDF5 group
  ``layers/<path>/vars``, where ``<path>`` is the layer's class name in
  snake_case made unique in ``model.layers`` order (``dense``, ``dense_1``...),
  not the layer's name; a nested model adds ``/<path>/layers/...``.
  A Sequential's own InputLayer is not in ``model.layers``, a functional
  model's InputLayers are.
- legacy ``.h5``: the architecture is the ``model_config`` attribute, the
  weights of a layer are in the group ``model_weights/<layer name>``, named
  by its ``weight_names`` attribute.

Everything is read and checked before the model is returned, so a bad file
raises (KerasFileError, or ValueError for an unknown layer class or an
option deepgpu lacks) and nothing is half-loaded. ``save_keras`` writes the
Keras 3 dialect and layout, which ``keras.saving.load_model`` reads.
Needs h5py (``pip install "deepgpu[interop]"``).
"""
from __future__ import annotations

import datetime
import inspect
import io as _io
import json
import os
import re
import zipfile

import numpy as np

from .native import JSON_LIMIT, ModelFileError, _atomic_zip, _one_line, atomic_write, fits, reading

_CONFIG, _METADATA, _WEIGHTS = "config.json", "metadata.json", "model.weights.h5"
_MODEL_CLASSES = ("Sequential", "Functional", "Model")


HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"  # the first 8 bytes of every HDF5 file


class KerasFileError(ModelFileError):
    """A file that is not a readable Keras model (names the file and the problem); a ModelFileError."""


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError('reading and writing Keras files needs h5py: pip install "deepgpu[interop]"') from None
    return h5py


def _keras_snake(name):
    """Keras's snake_case of a class name (``Conv2D`` -> ``conv2d``), which names weight groups."""
    name = re.sub(r"\W+", "", name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


# ------------------------------------------------- Keras config -> deepgpu
# Keras options deepgpu has no equivalent for, dropped only at the value that
# means "off"; any other value is refused rather than silently ignored.
_IGNORABLE = {
    "quantization_config": lambda v, c: v is None,
    "lora_rank": lambda v, c: v is None,
    "lora_alpha": lambda v, c: v is None,
    "renorm": lambda v, c: not v,
    "renorm_clipping": lambda v, c: not c.get("renorm"),
    "renorm_momentum": lambda v, c: not c.get("renorm"),
    "sparse": lambda v, c: not v,
    "ragged": lambda v, c: not v,
    "optional": lambda v, c: not v,
    "groups": lambda v, c: v == 1,  # tf.keras 2's DepthwiseConv2D / SeparableConv2D inherit Conv2D's
    "autocast": lambda v, c: True,  # deepgpu autocasts every layer under a mixed policy, as Keras's default
}


def _accepted_keys(cls):
    """The constructor arguments of a deepgpu layer class, its base classes' included."""
    from ..layers.base import Layer

    keys = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            params = inspect.signature(init).parameters
            keys |= {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if klass is Layer:
            break
    return keys - {"self"}


def _who(cls_name, cfg):
    return f"layer {cfg.get('name')!r} ({cls_name})"


def _dtype(value, who):
    if isinstance(value, dict):  # Keras 3 DTypePolicy, tf.keras 2 Policy
        value = (value.get("config") or {}).get("name")
    if value is None:
        return None
    from ..mixed_precision import get
    try:
        return get(value).name  # float32, mixed_float16, mixed_bfloat16, int32, ...
    except (TypeError, ValueError) as e:
        raise ValueError(f"{who}: dtype policy {value!r} is not supported: {e}") from None


def _activation(value, custom, who):
    from .. import activations

    if isinstance(value, dict):  # a custom function: {"class_name": "function", "config": name}
        cfg = value.get("config")
        value = cfg if isinstance(cfg, str) else value.get("registered_name") or value.get("class_name")
    if value is None or callable(value):
        return value
    if custom and value in custom:
        return custom[value]
    try:
        activations.get(value)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{who}: {e}") from None
    return value


def _plain_object(value, getter, what, who):
    """An initializer / regularizer config with Keras 3's ``module`` keys removed, checked by deepgpu."""
    if value is None or isinstance(value, str):
        out = value
    elif isinstance(value, dict):
        out = {"class_name": value.get("class_name"), "config": dict(value.get("config") or {})}
    else:
        raise ValueError(f"{who}: unreadable {what} {value!r}")
    try:
        getter(out)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{who}: {e}") from None
    return out


def _layer_from_keras(cls_name, cfg, custom):
    from .. import constraints, initializers, regularizers
    from ..registry import lookup_class as _lookup_class

    cls = _lookup_class(cls_name, custom)
    who = _who(cls_name, cfg)
    # A custom class may take options deepgpu does not know: those are passed on, not refused.
    is_custom = bool(custom and cls_name in custom) or not cls.__module__.startswith("deepgpu.")
    accepted = _accepted_keys(cls)
    out = {}
    for key, value in cfg.items():
        if key == "dtype":
            value = _dtype(value, who)
        elif key == "batch_shape":
            key = "batch_input_shape"
        elif key.endswith("_initializer"):
            value = _plain_object(value, initializers.get, "initializer", who)
        elif key.endswith("_regularizer"):
            value = _plain_object(value, regularizers.get, "regularizer", who)
        elif key.endswith("_constraint"):
            value = _plain_object(value, constraints.get, "constraint", who)
        elif key in ("activation", "recurrent_activation"):
            value = _activation(value, custom, who)
        elif key in ("cell", "cells", "layer", "backward_layer"):  # an RNN's cell, a wrapper's layer
            from ._rnn_interop import keras_in
            value = keras_in(key, value, lambda c, v: _layer_from_keras(c, v, custom))
        if key not in accepted:
            if key in _IGNORABLE and _IGNORABLE[key](value, cfg):
                continue
            if not is_custom:
                raise ValueError(f"{who}: the Keras option {key}={value!r} has no deepgpu equivalent")
        out[key] = value
    return {"class_name": cls_name, "config": out}


def _ref(tensor_cfg, who):
    """A Keras 3 ``__keras_tensor__`` as tf.keras 2's ``[layer, node, tensor, {}]``."""
    if not (isinstance(tensor_cfg, dict) and tensor_cfg.get("class_name") == "__keras_tensor__"):
        raise ValueError(f"{who}: a call argument {tensor_cfg!r} is not a tensor of the graph")
    name, node, index = tensor_cfg["config"]["keras_history"]
    return [name, node, index, {}]


# Call options of attention layers that a Keras config records and deepgpu's calls take.
_CALL_OPTIONS = ("use_causal_mask", "return_attention_scores")
# Keras 3 exports some classes under another name than their class (which names weight groups).
_KERAS_CLASS_OUT = {"GroupedQueryAttention": "GroupQueryAttention"}
_KERAS_PATH_NAMES = {"GroupQueryAttention": "grouped_query_attention"}


def _node_from_keras(node, who):
    if isinstance(node, list):  # tf.keras 2: [[name, node, tensor, kwargs], ...]
        return [[r[0], r[1], r[2], {}] for r in node]
    args, kwargs = list(node.get("args") or []), dict(node.get("kwargs") or {})
    tensors = [a for a in args if a is not None]
    if len(tensors) > 1 and all(isinstance(a, dict) for a in tensors) and args[:len(tensors)] == tensors:
        args = [tensors]  # attention's call(query, value, key): one list input in deepgpu
    if not args or any(a is not None for a in args[1:]):
        raise ValueError(f"{who}: only calls with one tensor or one list of tensors are supported, "
                         f"got args {args!r}")
    options = {}
    from ._rnn_interop import keras3_initial_state
    states = keras3_initial_state(kwargs)  # an RNN's: inputs of the node after the sequence, as deepgpu runs them
    if states:
        args = [[args[0]] + states]
    for k, v in kwargs.items():
        if k in _CALL_OPTIONS and isinstance(v, bool):
            if v:
                options[k] = v
            continue
        # A recorded training flag (Keras's image preprocessing layers record training=True) is replaced by
        # the model call's own in Keras's Functional (operation_fn), as fit / predict set it here too;
        # mask=None is Keras's default.
        if v is not None and not (k == "training" and isinstance(v, bool)):
            raise ValueError(f"{who}: the call argument {k}={v!r} is not supported")
    first = args[0]
    refs = [_ref(t, who) for t in first] if isinstance(first, list) else [_ref(first, who)]
    if options:
        refs[0][3] = options
    return refs


def _refs(value, what):
    if isinstance(value, dict):
        raise ValueError(f"models with dict {what} are not supported when loading Keras files")
    if len(value) == 3 and isinstance(value[0], str):
        value = [value]
    return [list(r[:3]) for r in value]


def _from_keras(spec, custom):
    """A ``{class_name, config}`` entry (Keras 3 or tf.keras 2 dialect) in the dialect deepgpu reads."""
    if not isinstance(spec, dict) or "class_name" not in spec or not isinstance(spec.get("config"), dict):
        raise ValueError(f"a layer must be described as {{'class_name':..., 'config': {{...}}}}, got {spec!r}")
    cls_name, cfg = spec["class_name"], spec["config"]
    if cls_name in _MODEL_CLASSES:
        if "layers" not in cfg:
            raise ValueError(f"model {cfg.get('name')!r} ({cls_name}) has no layer list in its config (a "
                             f"subclassed Keras model); only Sequential and functional models can be read")
        if cls_name == "Sequential":
            layers = [_from_keras(e, custom) for e in cfg["layers"]]
            build = cfg.get("build_input_shape")
            if layers and layers[0]["class_name"] != "InputLayer" and build \
                    and "batch_input_shape" not in layers[0]["config"]:
                layers[0]["config"]["batch_input_shape"] = build
            return {"class_name": "Sequential", "config": {"name": cfg.get("name"), "layers": layers}}
        layers = []
        from ._rnn_interop import keras3_masks_implicit
        for entry in keras3_masks_implicit(cfg["layers"], _refs(cfg["output_layers"], "outputs")):
            conv = _from_keras(entry, custom)
            conv["name"] = entry.get("name") or entry["config"].get("name")
            who = _who(entry["class_name"], {"name": conv["name"]})
            conv["inbound_nodes"] = [_node_from_keras(n, who) for n in entry.get("inbound_nodes") or []]
            layers.append(conv)
        return {"class_name": "Functional", "config": {
            "name": cfg.get("name"), "layers": layers,
            "input_layers": _refs(cfg["input_layers"], "inputs"),
            "output_layers": _refs(cfg["output_layers"], "outputs")}}
    return _layer_from_keras(cls_name, cfg, custom)


def _build(spec, custom, path):
    from ..models.serialization import model_from_config

    if not isinstance(spec, dict) or spec.get("class_name") not in _MODEL_CLASSES:
        raise KerasFileError(f"{path!r}: the architecture is not a Sequential or functional model "
                             f"(class {spec.get('class_name') if isinstance(spec, dict) else spec!r})")
    try:
        converted = _from_keras(spec, custom)
    except (KeyError, IndexError, TypeError) as e:
        raise KerasFileError(f"{path!r}: the model config is malformed ({type(e).__name__}: {e})") from None
    try:
        return model_from_config(converted, custom)
    except (KeyError, IndexError) as e:  # a reference to a layer or node the config does not define
        raise KerasFileError(f"{path!r}: the model config is malformed ({type(e).__name__}: {e})") from None


# ------------------------------------------------------- weights, reading
def _by_name(model):
    layers = {layer.name: layer for layer in model.layers}
    inp = getattr(model, "_input_layer", None)
    if inp is not None:
        layers[inp.name] = inp
    return layers


def _keras3_paths(model, spec, prefix):
    """``(h5 group path, layer)`` for every layer of ``model`` (nested models too), as Keras names them."""
    entries = spec["config"]["layers"]
    if spec["class_name"] == "Sequential":  # Keras's Sequential.layers leaves out its InputLayer
        entries = [e for e in entries if e["class_name"] != "InputLayer"]
    elif "output_layers" in spec["config"]:  # Keras 3's mask ops: not built, and without weights
        from ._rnn_interop import keras3_masks_implicit
        entries = keras3_masks_implicit(entries, _refs(spec["config"]["output_layers"], "outputs"))
    layers, used, out = _by_name(model), {}, []
    for entry in entries:
        base = _KERAS_PATH_NAMES.get(entry["class_name"]) or _keras_snake(entry["class_name"])
        path = f"{prefix}/{base}" if base not in used else f"{prefix}/{base}_{used[base] + 1}"
        used[base] = used.get(base, -1) + 1
        name = entry.get("name") or entry["config"].get("name")
        layer = layers.get(name)
        if layer is None:
            raise KerasFileError(f"layer {name!r} of the config is missing from the built model")
        out.append((path, layer))
        from ._rnn_interop import keras_subpaths
        out += keras_subpaths(path, layer)  # an RNN's cell, a wrapper's layers
        if entry["class_name"] in _MODEL_CLASSES:
            out += _keras3_paths(layer, entry, f"{path}/layers")
    return out


def _own_weights(layer):
    from ..models.model import Model
    from ._rnn_interop import keras_sublayers
    return [] if isinstance(layer, Model) or keras_sublayers(layer) else layer.weights


def _read_dataset(node, w, where, path):
    """The array of the HDF5 dataset ``node`` for weight ``w``: its kind, shape and dtype are checked
    before its data is read (a damaged header may claim any size)."""
    h5py = _h5py()
    if not isinstance(node, (h5py.Dataset, np.ndarray)):  # an array: converted from Keras 2's cuDNN layout
        raise KerasFileError(f"{path!r}: {where} is not an HDF5 dataset")
    if tuple(node.shape or ()) != tuple(w.shape):
        from ._rnn_interop import shape_hint
        raise KerasFileError(f"{path!r}: weight {where} has shape {tuple(node.shape or ())}, but deepgpu's "
                             f"{w.name!r} has shape {tuple(w.shape)}"
                             + shape_hint(w.name, tuple(node.shape or ()), w.shape))
    if node.dtype.kind not in "biuf" or not fits(w, node.dtype):
        raise KerasFileError(f"{path!r}: weight {where} is {node.dtype}, which cannot be loaded into "
                             f"deepgpu's {w.dtype} {w.name!r}")
    return np.asarray(node[()], dtype=w.dtype)


def _weights_limit(model) -> int:
    """The most bytes a Keras weights file for ``model`` may hold: its weights, the optimizer's
    slots beside them (Keras keeps them in the same file: a few per weight) and HDF5's own
    structures, with room to spare."""
    return 4 * sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in model.weights) + (16 << 20)


def _read_keras3_weights(model, spec, h5bytes, path):
    h5py = _h5py()
    pairs = []
    try:
        f = h5py.File(_io.BytesIO(h5bytes), "r")
    except OSError as e:
        raise KerasFileError(f"{path!r}: {_WEIGHTS} is not a readable HDF5 file ({_one_line(e)})") from None
    with f:
        # tf.keras 2.13+ wrote the same layout under another top-level name.
        rename = "layers" not in f and "_layer_checkpoint_dependencies" in f
        for group_path, layer in _keras3_paths(model, spec, "layers"):
            weights = _own_weights(layer)
            gpath = group_path.replace("layers", "_layer_checkpoint_dependencies") if rename else group_path
            vars_path = f"{gpath}/vars"
            stored = f[vars_path] if vars_path in f else None
            if stored is not None and not isinstance(stored, h5py.Group):
                raise KerasFileError(f"{path!r}: {vars_path!r} in {_WEIGHTS} is not a group")
            n = 0 if stored is None else len(stored)
            if stored is not None and hasattr(layer, "load_keras_variables"):
                # Arrays Keras keeps by name, not as weights (TextVectorization's IDF weights).
                named = {f"vars/{k}": np.asarray(stored[k][()]) for k in stored if not k.isdigit()}
                n -= len(named)
                layer.load_keras_variables(named)
            if n != len(weights):
                raise KerasFileError(
                    f"{path!r}: layer {layer.name!r} ({type(layer).__name__}) has {len(weights)} weights in "
                    f"deepgpu, but {_WEIGHTS} holds {n} at {vars_path!r}")
            for i, w in enumerate(weights):
                key = str(i)
                if key not in stored:
                    raise KerasFileError(f"{path!r}: {_WEIGHTS} has no dataset {vars_path}/{key}")
                pairs.append((w, _read_dataset(stored[key], w, f"{vars_path}/{key}", path)))
    return pairs


def _decode(v):
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _read_legacy_weights(model, group, path):
    """Weights from tf.keras's ``model_weights`` group: per layer by order, in a nested model by name."""
    from ..models.model import Model

    stored = {}  # layer name -> [(weight name, dataset)], read once checked against the model
    from ._keras2 import attr_list, cudnn_weights  # names Keras 2 split over attributes; its cuDNN layers
    for lname in attr_list(group, "layer_names"):
        try:
            g = group[lname]
            stored[lname] = [(n, g[n]) for n in attr_list(g, "weight_names")]
        except (KeyError, OSError) as e:
            raise KerasFileError(f"{path!r}: the weights of layer {lname!r} are missing or damaged "
                                 f"under model_weights ({_one_line(e)})") from None
    stored = cudnn_weights(stored, group, path)
    pairs = []
    for layer in model.layers:
        weights = layer.weights
        if not weights:
            continue
        if layer.name not in stored:
            raise KerasFileError(f"{path!r}: no weights for layer {layer.name!r} ({type(layer).__name__}) "
                                 f"under model_weights")
        entries = stored[layer.name]
        if len(entries) != len(weights):
            raise KerasFileError(f"{path!r}: layer {layer.name!r} has {len(weights)} weights in deepgpu, the "
                                 f"file holds {len(entries)} ({[n for n, _ in entries]})")
        if isinstance(layer, Model):
            from ._keras2 import match_nested  # by name (RNN cells' scopes too), else in Keras's order
            pairs += [(w, a, f"model_weights/{layer.name}/{n}") for w, n, a in match_nested(layer, entries, path)]
        else:
            pairs += [(w, a, f"model_weights/{layer.name}/{n}") for w, (n, a) in zip(weights, entries)]
    return [(w, _read_dataset(a, w, where, path)) for w, a, where in pairs]


def _json(data, what, path):
    try:
        return json.loads(_decode(data))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KerasFileError(f"{path!r}: {what} is not valid JSON ({e})") from None


def _member(z, name, limit, path):
    info = z.getinfo(name)
    if info.file_size > limit:
        raise KerasFileError(f"{path!r}: member {name!r} unpacks to {info.file_size} bytes, more than the "
                             f"{limit} it can need; the file is damaged")
    return z.read(info)  # zipfile stops at the checked file_size


def _load_keras_zip(path, custom, ctx):
    try:
        z = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise KerasFileError(f"{path!r} is not a readable .keras file: damaged zip archive ({e})") from None
    with z:
        names = set(z.namelist())
        if "deepgpu.json" in names:
            raise KerasFileError(f"{path!r} is a deepgpu file, not a Keras file: use deepgpu.models.load_model")
        for member in (_CONFIG, _WEIGHTS):
            if member not in names:
                extra = ""
                if member == _WEIGHTS and any(n.startswith("model.weights") for n in names):
                    extra = " (weights in another store, e.g. .npz or sharded, are not supported)"
                raise KerasFileError(f"{path!r} is not a complete .keras file: member {member!r} is "
                                     f"missing{extra}")
        ctx.what = f"member {_CONFIG!r}"
        spec = _json(_member(z, _CONFIG, JSON_LIMIT, path), _CONFIG, path)
        ctx.what = "the architecture"
        subclassed = isinstance(spec, dict) and "class_name" in spec and spec["class_name"] not in _MODEL_CLASSES
        if subclassed:
            model = _load_subclassed(spec, custom, path)
        else:
            model = _build(spec, custom, path)
            for group_path, layer in _keras3_paths(model, spec, "layers"):
                if hasattr(layer, "load_keras_assets"):  # TextVectorization's vocabulary.txt
                    ctx.what = f"the assets of layer {layer.name!r}"
                    prefix = f"assets/{group_path}/"
                    layer.load_keras_assets({n[len(prefix):]: _member(z, n, JSON_LIMIT, path)
                                             for n in names if n.startswith(prefix)})
        limit = _weights_limit(model)
        ctx.what = f"member {_WEIGHTS!r}"
        h5bytes = _member(z, _WEIGHTS, limit, path)
    if subclassed:
        from . import keras_subclassed
        return model, keras_subclassed.read_weights(model, h5bytes, path)
    return model, _read_keras3_weights(model, spec, h5bytes, path)


def _load_legacy_h5(path, custom):
    h5py = _h5py()
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise KerasFileError(f"{path!r} could not be read as an HDF5 file ({_one_line(e)})") from None
    with f:
        if "model_config" not in f.attrs:
            raise KerasFileError(f"{path!r} is an HDF5 file without a model_config attribute (a weights-only "
                                 f"file?); load_keras needs a whole saved model")
        spec = _json(f.attrs["model_config"], "the model_config attribute", path)
        from . import _keras2  # the spellings of the Keras 2 releases
        model = _build(_keras2.legacy_spec(spec, f.attrs, path), custom, path)
        group = f["model_weights"] if "model_weights" in f else f
        if not isinstance(group, h5py.Group):
            raise KerasFileError(f"{path!r}: model_weights is not an HDF5 group")
        return model, _keras2.convert_weights(model, _read_legacy_weights(model, group, path), f.attrs)


def load_keras(path, custom_objects=None):
    """A deepgpu model from a Keras 3 ``.keras`` file or a legacy Keras ``.h5`` file.

    The kind is told from the content, not the name. Raises FileNotFoundError,
    or ModelFileError for anything wrong with the file (KerasFileError, its
    subclass: not a Keras file, a missing member, damage, weights that do not
    fit; a layer class or option deepgpu lacks: pass custom classes in
    ``custom_objects``). The model is returned uncompiled.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    if os.path.isdir(path):
        raise KerasFileError(f"{path!r} is a folder (a TensorFlow SavedModel?); load_keras reads .keras and "
                             f".h5 files")
    with open(path, "rb") as fh:
        head = fh.read(8)
    with reading(path) as ctx:
        if zipfile.is_zipfile(path) or head.startswith(b"PK"):
            model, pairs = _load_keras_zip(path, custom_objects, ctx)
        elif head == HDF5_MAGIC:
            ctx.what = "the HDF5 file"
            model, pairs = _load_legacy_h5(path, custom_objects)
        else:
            raise KerasFileError(f"{path!r} is neither a Keras .keras file (zip) nor a legacy Keras .h5 file "
                                 f"(HDF5)")
        for w, a in pairs:
            w.assign(a)
    return model


# ------------------------------------------------------------- writing
# Activation names Keras 3 resolves; others (gelu_new, custom functions) cannot be written.
_KERAS_ACTIVATIONS = {"linear", "relu", "relu6", "sigmoid", "hard_sigmoid", "hard_silu", "tanh", "softmax",
                      "log_softmax", "elu", "selu", "softplus", "softsign", "swish", "silu", "gelu",
                      "leaky_relu", "exponential", "mish", "celu", "glu", "hard_shrink", "hard_tanh",
                      "log_sigmoid", "soft_shrink", "sparse_plus", "sparse_sigmoid", "sparsemax", "squareplus",
                      "tanh_shrink", "threshold"}


def _policy(dtype):
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": dtype}, "registered_name": None}


def _keras_object(value, module, kind, who):
    if value is None:
        return None
    name = value if isinstance(value, str) else value["class_name"]  # a str: a registered function's name
    cls = None if isinstance(value, str) else getattr(kind, name, None)
    if not isinstance(cls, type):
        raise ValueError(f"{who}: custom {module.split('.')[-1][:-1]} {name!r} cannot be written for Keras")
    return {"module": module, "class_name": value["class_name"], "config": value["config"],
            "registered_name": None}


def _keras_layer_config(layer):
    from .. import constraints, initializers, layers, regularizers

    cls_name, who = type(layer).__name__, f"layer {layer.name!r} ({type(layer).__name__})"
    if getattr(layers, cls_name, None) is not type(layer) or cls_name == "Lambda":
        raise ValueError(f"{who} cannot be written for Keras: only deepgpu's built-in layers map to Keras "
                         f"classes (Lambda and custom layers do not)")
    cfg = layer.get_config()
    out = {}
    for key, value in cfg.items():
        if key == "batch_input_shape":
            continue  # the model's InputLayer carries the shape
        if key == "dtype":
            value = _policy(value)
        elif key.endswith("_initializer"):
            value = _keras_object(value, "keras.initializers", initializers, who)
        elif key.endswith("_regularizer"):
            value = _keras_object(value, "keras.regularizers", regularizers, who)
        elif key.endswith("_constraint"):
            value = _keras_object(value, "keras.constraints", constraints, who)
        elif key in ("activation", "recurrent_activation") and value not in _KERAS_ACTIVATIONS:
            raise ValueError(f"{who}: activation {value!r} has no Keras 3 equivalent")
        elif key in ("cell", "cells", "layer", "backward_layer"):
            from ._rnn_interop import keras_out
            value = keras_out(key, value, _keras_layer_config)
        out[key] = value
    return out


def _shape_list(shape):
    if isinstance(shape, list):
        return [_shape_list(s) for s in shape]
    return list(shape)


def _keras_layer(layer):
    from ..layers.base import InputLayer
    from ..models.model import Model

    if isinstance(layer, Model):
        return _keras_model(layer)
    if isinstance(layer, InputLayer):
        return {"module": "keras.layers", "class_name": "InputLayer",
                "config": {"batch_shape": list(layer._batch_input_shape), "dtype": layer.dtype,
                           "sparse": False, "name": layer.name},
                "registered_name": None}
    build = layer.keras_build_config() if hasattr(layer, "keras_build_config") else \
        {"input_shape": _shape_list(layer.input_shape)}
    name, cfg = type(layer).__name__, _keras_layer_config(layer)
    if hasattr(layer, "keras3_class_config"):  # a layer Keras 3 spells as another class (ThresholdedReLU)
        name, cfg = layer.keras3_class_config(cfg)
    return {"module": "keras.layers", "class_name": _KERAS_CLASS_OUT.get(name, name),
            "config": cfg, "registered_name": None, "build_config": build}


def _keras_order(model):
    """``model``'s layers in Keras 3's order (``keras.src.ops.function.map_graph``): by depth from the
    outputs, deepest first, ties by first visit in a depth-first walk from the outputs.

    Keras names a functional model's weight groups by this order whatever the config's order, so the
    config is written in it: two layers of one class on parallel branches then get the same paths in
    Keras as in deepgpu.
    """
    visit, done, nodes = {}, set(), []

    def walk(t):
        node = t.node
        if node is None or id(node) in done:
            return
        visit.setdefault(node.layer, len(visit))
        for parent in node.inputs:
            walk(parent)
        done.add(id(node))
        nodes.append(node)

    for t in model._outputs:
        walk(t)
    in_graph = {id(n) for n in nodes}
    node_depth, layer_depth = {}, {}
    for node in reversed(nodes):
        depth = max(node_depth.setdefault(id(node), 0), layer_depth.get(node.layer, 0))
        layer_depth[node.layer] = node_depth[id(node)] = depth
        for parent in node.inputs:
            if parent.node is not None and id(parent.node) in in_graph:
                node_depth[id(parent.node)] = max(depth + 1, node_depth.get(id(parent.node), 0))
    for t in model._inputs:  # inputs that no output depends on
        if t.node is not None and t.node.layer not in layer_depth:
            layer_depth[t.node.layer], visit[t.node.layer] = 0, -1
    order = sorted(layer_depth, key=lambda layer: (-layer_depth[layer], visit[layer]))
    rest = [layer for layer in model.layers if layer not in layer_depth]
    return order + rest


def _keras_model(model):
    from ..models.sequential import Sequential
    from ..models.serialization import _model_nodes

    if not model.built:
        raise ValueError(f"model {model.name!r} is not built yet: call it on data or give it an input shape")
    if isinstance(model, Sequential):
        in_shape = list(model._input_layer._batch_input_shape)
        layers = [_keras_layer(model._input_layer)] + [_keras_layer(l) for l in model.layers]
        return {"module": "keras", "class_name": "Sequential",
                "config": {"name": model.name, "trainable": model.trainable, "dtype": _policy(model.dtype_policy.name),
                           "layers": layers, "build_input_shape": in_shape},
                "registered_name": None, "build_config": {"input_shape": in_shape}}
    if not model._functional:
        raise NotImplementedError(f"model {model.name!r} ({type(model).__name__}) is a subclassed Model: the "
                                  f"legacy .h5 format holds only Sequential and functional models (as in Keras); "
                                  f"save it as .keras or .dgm, or its weights as .weights.h5")
    node_ids = _model_nodes(model)

    def tensor(t):
        layer = t.node.layer
        node = node_ids[id(layer)].index(layer._inbound_nodes.index(t.node))
        return {"class_name": "__keras_tensor__",
                "config": {"shape": list(t.shape), "dtype": t.dtype, "keras_history": [layer.name, node, t.index]}}

    layers = []
    for layer in _keras_order(model):
        entry = _keras_layer(layer)
        entry["name"] = layer.name
        entry["inbound_nodes"] = []
        for i in node_ids[id(layer)]:
            node = layer._inbound_nodes[i]
            if node.inputs:
                arg = [tensor(t) for t in node.inputs] if node.is_list else tensor(node.inputs[0])
                # Attention's query, value, key are separate arguments in Keras.
                args = arg if getattr(layer, "_keras_positional_inputs", False) else [arg]
                kw = {k: True for k in getattr(layer, "_keras_call_kwargs", ()) if node.kwargs.get(k)}
                if getattr(layer, "_keras_states_as_kwargs", False) and node.is_list:
                    # an RNN's [x, *initial states]: Keras's call(x, initial_state=[...])
                    args, kw = [arg[0]], dict(kw, initial_state=arg[1:])
                    entry["build_config"] = {"input_shape": list(node.inputs[0].shape)}
                entry["inbound_nodes"].append({"args": args, "kwargs": kw})
        layers.append(entry)

    def refs(ts):
        out = [tensor(t)["config"]["keras_history"] for t in ts]
        return out[0] if len(out) == 1 else out

    return {"module": "keras.src.models.functional", "class_name": "Functional",
            "config": {"name": model.name, "trainable": model.trainable, "layers": layers,
                       "input_layers": refs(model._inputs), "output_layers": refs(model._outputs)},
            "registered_name": "Functional", "build_config": {"input_shape": None}}


def _weights_h5(model, spec):
    h5py = _h5py()
    buf = _io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_group("vars").attrs["name"] = model.name
        for group_path, layer in _keras3_paths(model, spec, "layers"):
            g = f.require_group(group_path).create_group("vars")
            g.attrs["name"] = layer.name
            for i, w in enumerate(_own_weights(layer)):
                g.create_dataset(str(i), data=w.data_sync())
            for rel, value in (layer.keras_variables() if hasattr(layer, "keras_variables") else {}).items():
                f.create_dataset(f"{group_path}/{rel}", data=value)
    return buf.getvalue()


def save_keras_weights(model, path) -> None:
    """Write ``model``'s weights as a Keras 3 ``.weights.h5`` file (what ``keras.Model.save_weights``
    writes and ``load_weights`` reads; weights addressed by layer path, as in a ``.keras`` file).
    Atomic. Raises ValueError for an unbuilt model or one Keras 3 cannot describe."""
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built yet, so it has no weights to save")
    data = _weights_h5(model, _keras_model(model))
    atomic_write(path, lambda f: f.write(data))


def load_keras_weights(model, path) -> None:
    """Set ``model``'s weights from a Keras 3 ``.weights.h5`` file, matched by layer path as Keras
    does. Every array is read and checked before the first is assigned: a file that does not fit
    raises KerasFileError (naming the layer) and changes nothing."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built yet: build it before loading weights into it")
    spec = _keras_model(model)
    with reading(path) as ctx:
        ctx.what = "the HDF5 weights"
        with open(path, "rb") as fh:
            if fh.read(8) != HDF5_MAGIC:
                raise KerasFileError(f"{path!r} is not an HDF5 file, so not a Keras .weights.h5 file")
        limit = _weights_limit(model)
        if os.path.getsize(path) > limit:
            raise KerasFileError(f"{path!r} is {os.path.getsize(path)} bytes, far more than the weights of "
                                 f"model {model.name!r} need")
        with open(path, "rb") as fh:
            pairs = _read_keras3_weights(model, spec, fh.read(), path)
    for w, a in pairs:
        w.assign(a)


def save_keras_h5(model, path) -> None:
    """Write ``model`` (architecture and weights) as a legacy Keras ``.h5`` file, laid out as Keras 3
    writes one: the ``model_config`` attribute in the Keras 3 dialect, and per layer of
    ``model.layers`` a group of ``model_weights`` naming its weights trainable first (a nested
    model's: all of its layers'). ``keras.saving.load_model`` reads it. Atomic."""
    from ..models.model import Model

    h5py = _h5py()
    spec = _keras_model(model)
    buf = _io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.attrs["backend"], f.attrs["keras_version"] = "tensorflow", "3.0.0"
        f.attrs["model_config"] = json.dumps({"class_name": spec["class_name"], "config": spec["config"]})
        mw = f.create_group("model_weights")
        mw.attrs["backend"], mw.attrs["keras_version"] = "tensorflow", "3.0.0"
        # Keras 3 matches legacy weight groups to its layers by position: its order, not deepgpu's.
        ordered = _keras_order(model) if getattr(model, "_functional", False) else model.layers
        mw.attrs["layer_names"] = np.array([layer.name.encode() for layer in ordered], dtype="S")
        for layer in ordered:
            g = mw.create_group(layer.name)
            nested = isinstance(layer, Model)
            weights = list(layer.trainable_weights) + list(layer.non_trainable_weights)
            names = [f"{layer.name if nested else model.name}/{w.name}" for w in weights]
            g.attrs["weight_names"] = np.array([n.encode() for n in names], dtype="S")
            for n, w in zip(names, weights):
                g.create_dataset(n, data=w.data_sync())
        top = mw.create_group("top_level_model_weights")
        top.attrs["weight_names"] = np.array([], dtype="S")
    data = buf.getvalue()
    atomic_write(path, lambda fh: fh.write(data))


def _subclassed_spec(model) -> dict:
    """Keras 3's config.json entry of a built subclassed model."""
    build = model.get_build_config()
    if build is None:
        raise ValueError(f"model {model.name!r} is not built yet: call it on data or build() it before saving")
    from ..registry import registered_name

    cls = type(model)
    return {"module": None, "class_name": cls.__name__, "config": model.get_config(),
            "registered_name": registered_name(cls), "build_config": build}


def _load_subclassed(spec, custom, path):
    """The model a subclassed model's config.json entry names, built, with fresh weights."""
    from ..registry import deserialize_layer, lookup_class
    from ..models.model import Model

    name = spec.get("registered_name") or spec["class_name"]
    try:
        try:
            cls = lookup_class(name, custom)
        except ValueError:
            cls = lookup_class(spec["class_name"], custom)  # registered under another package
    except ValueError:
        raise KerasFileError(f"{path!r} holds a subclassed model of class {name!r}, which is not registered: "
                             f"pass custom_objects={{'{name}': cls}} or decorate the class with "
                             f"@register_keras_serializable()") from None
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise KerasFileError(f"{path!r}: class {name!r} of the architecture is not a deepgpu Model subclass "
                             f"({cls!r})")
    if not isinstance(spec.get("build_config"), dict):
        raise KerasFileError(f"{path!r}: the subclassed model {name!r} has no build_config, so its weights "
                             f"cannot be created before loading them")
    return deserialize_layer({"class_name": name, "config": spec.get("config"),
                              "build_config": spec["build_config"]}, {name: cls})


def save_keras(model, path) -> None:
    """Write ``model`` (architecture and weights) as a Keras 3 ``.keras`` file.

    Keras 3 reads it with ``keras.saving.load_model(path)``; the compile
    settings and optimizer state are not written. A subclassed model is
    written as Keras writes one: its class name and ``get_config()``, its build
    shape, and its weights laid out by attribute (a reader needs the class:
    registered, or in ``custom_objects``). Raises ValueError for an unbuilt
    model, or a layer, activation, initializer or constraint that has no
    Keras 3 equivalent. The write is atomic.
    """
    from .. import __version__
    from .by_name import _subclassed

    if _subclassed(model):
        from . import keras_subclassed
        spec, weights = _subclassed_spec(model), keras_subclassed.weights_h5(model)
    else:
        spec = _keras_model(model)
        weights = _weights_h5(model, spec)
    # Keras does not read metadata.json when loading; "3.0.0" names the format it introduced.
    meta = {"keras_version": "3.0.0", "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
            "saved_by": f"deepgpu {__version__}"}
    _atomic_zip(path, {_METADATA: json.dumps(meta).encode(), _CONFIG: json.dumps(spec).encode(),
                       _WEIGHTS: weights})
