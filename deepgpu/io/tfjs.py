"""TensorFlow.js Layers format: a folder with ``model.json`` and binary weight shards.

``save_tfjs`` writes what ``tf.loadLayersModel`` in ``@tensorflow/tfjs`` 4.x
reads:

- ``model.json``: ``{"format": "layers-model", "generatedBy", "convertedBy",
  "modelTopology": {"keras_version", "backend", "model_config": {class_name,
  config}}, "weightsManifest": [{"paths": [...], "weights": [{"name",
  "shape", "dtype"}, ...]}]}``. The config is in the tf.keras 2 dialect that
  tfjs-layers understands (InputLayer with ``batch_input_shape``, ``dtype``
  a plain string), weight names are ``<layer name>/<weight>`` (``dense/kernel``),
  without the model's name in front.
- ``group1-shard{i}of{n}.bin``: every weight as float32 little-endian, in
  manifest order, the byte stream cut into shards of at most 4 MiB.

``load_tfjs`` reads such a folder back, and also folders written by TF.js
itself (``model.save``), by ``tensorflowjs_converter`` from tf.keras 2, and
by the converter from Keras 3 (``batch_shape``, DTypePolicy dtypes,
``module`` / ``registered_name`` keys, ``args``/``kwargs`` inbound nodes,
weight names ``<model>/<layer>/<weight>``).
"""
from __future__ import annotations

import json
import math
import os
import re

import numpy as np

from . import _atomic, _tfjs_quant
from .native import JSON_LIMIT, ModelFileError, reading, shape_of

SHARD_BYTES = 4 * 1024 * 1024
# The tf.keras release whose config dialect the topology follows; readers look
# at keras_version to tell the dialect (the writer is named in generatedBy).
_KERAS_DIALECT = "2.15.0"
_SHARD_RE = re.compile(r"^group\d+-shard\d+of\d+\.bin$")
# The format's byte order is little-endian whatever the host's.
_DTYPES = {"float32": "<f4", "int32": "<i4", "bool": "|b1", "float16": "<f2", "uint8": "|u1", "uint16": "<u2"}


# ------------------------------------------------------------------ writing
# What tfjs-layers 4.22 can rebuild; checked against the real library in
# tests/test_io_tfjs.py. A deepgpu layer or activation outside these would
# fail in the browser, or (hard_sigmoid) silently compute something else.
_TFJS_LAYERS = {
    "InputLayer", "Sequential", "Model", "Functional", "Dense", "Activation", "ReLU", "LeakyReLU", "ELU",
    "Softmax", "Dropout", "Flatten", "Reshape", "Permute", "RepeatVector", "Conv2D", "Conv2DTranspose",
    "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D", "BatchNormalization",
    "Add", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "ZeroPadding2D", "UpSampling2D",
    "Cropping2D", "LayerNormalization", "Dot",
}
_TFJS_LAYERS |= {"Conv1D", "MaxPooling1D", "AveragePooling1D", "GlobalAveragePooling1D", "GlobalMaxPooling1D",
                 "SpatialDropout1D"}  # the 1-D layers TF.js has (issue 16)
_TFJS_LAYERS |= {"DepthwiseConv2D", "SeparableConv2D"}  # issue 17
_TFJS_LAYERS |= {"Conv3D", "Conv3DTranspose", "MaxPooling3D", "AveragePooling3D"}  # issue 17: the 3-D layers TF.js has
_TFJS_LAYERS |= {"Embedding", "Masking"}  # issue 16
_TFJS_LAYERS |= {"RNN", "SimpleRNN", "LSTM", "GRU", "SimpleRNNCell", "LSTMCell", "GRUCell", "StackedRNNCells",
                 "Bidirectional", "TimeDistributed", "ConvLSTM2D", "ConvLSTM2DCell"}  # issue 16; _rnn_interop.tfjs_out checks them
# Noise, activation and preprocessing layers TF.js has (issue 17); _preprocessing_for_tfjs refuses
# the ones TF.js computes otherwise.
_TFJS_LAYERS |= {"GaussianNoise", "GaussianDropout", "AlphaDropout", "PReLU", "ThresholdedReLU", "Rescaling",
                 "CenterCrop", "CategoryEncoding", "Resizing", "RandomWidth", "RandomHeight"}


def _preprocessing_for_tfjs(cls, cfg, refuse):
    """Refusals where TF.js 4.22 computes other values or cannot load the layer (issue 17)."""
    if cls == "Resizing":
        refuse("resizes with align_corners when crop_to_aspect_ratio is False and without half-pixel centres "
               "otherwise, and it has no crop or pad to an aspect ratio: other values than deepgpu and Keras")
    elif cls in ("CenterCrop", "CategoryEncoding"):
        refuse(f"cannot be loaded by TF.js 4.22: its {cls}.computeOutputShape overwrites the shape of its "
               "input in place, so the model's input then expects the output's shape")
    elif cls in ("RandomWidth", "RandomHeight"):
        refuse("is resized at random by TF.js at inference too (deepgpu and Keras leave the input as it is); "
               "remove the augmentation layers before saving for inference")
_TO_TFJS_INIT = {"LecunNormal": "LeCunNormal", "LecunUniform": "LeCunUniform"}  # TF.js's spelling
_FROM_TFJS_INIT = {v: k for k, v in _TO_TFJS_INIT.items()}
_TFJS_ACTIVATIONS = {"linear", "relu", "relu6", "sigmoid", "tanh", "softmax", "log_softmax", "elu", "selu",
                     "softplus", "softsign", "swish", "silu", "gelu", "mish"}


def _input_ranks(model, into=None) -> dict:
    """{layer name: rank of its built input} over ``model`` and its nested models (single-input layers)."""
    into = {} if into is None else into
    for layer in getattr(model, "layers", []):
        shape = getattr(layer, "_build_input_shape", None)
        if isinstance(shape, (tuple, list)) and shape and all(isinstance(d, (int, type(None))) for d in shape):
            into[layer.name] = len(shape)
        _input_ranks(layer, into)
    return into


def _tfjs_layer(entry, ranks=None):
    """Check one ``{class_name, config}`` layer entry against what TF.js reads; rename keys in place.

    ranks: {layer name: input rank}, for the checks that depend on it.
    """
    from .. import layers as L

    cls, cfg = entry["class_name"], entry["config"]
    rank = (ranks or {}).get(cfg.get("name"))
    who = f"layer {cfg.get('name')!r} ({cls})"

    def refuse(why):
        raise ValueError(f"cannot save for TF.js: {who} {why}")

    if cls not in _TFJS_LAYERS:
        if isinstance(getattr(L, cls, None), type):
            refuse("has no TF.js counterpart")
        return  # a custom layer: the page must register a class of that name with TF.js
    _preprocessing_for_tfjs(cls, cfg, refuse)
    if cfg.get("dtype") in ("mixed_float16", "mixed_bfloat16", "float16", "bfloat16"):
        cfg["dtype"] = "float32"  # TF.js has no mixed precision: the float32 model (weights are float32)
    from ._rnn_interop import tfjs_out
    tfjs_out(cls, cfg, refuse, lambda inner: _tfjs_layer(inner, ranks))
    act = cfg.get("activation")
    if act is not None and act not in _TFJS_ACTIVATIONS:
        if act == "hard_sigmoid":
            refuse("uses hard_sigmoid, which TF.js computes as Keras 2 did (0.2 x + 0.5), not as deepgpu "
                   "and Keras 3 do (relu6(x + 3) / 6)")
        refuse(f"uses the activation {act!r}, which TF.js does not have")
    for key, value in list(cfg.items()):
        if key.endswith("_initializer") and isinstance(value, dict) and value.get("class_name") in _TO_TFJS_INIT:
            value["class_name"] = _TO_TFJS_INIT[value["class_name"]]
        elif key == "activity_regularizer" and value is not None:
            refuse("has an activity regularizer, which TF.js refuses to run (set it to None before saving)")
        elif key.endswith("_regularizer") and value is not None:
            kind = value.get("class_name") if isinstance(value, dict) else value
            if not isinstance(value, dict) or kind not in ("L1", "L2", "L1L2"):
                refuse(f"has the regularizer {kind!r}, which TF.js does not have")
            # TF.js has only L1L2, which covers L1 and L2.
            c = value.get("config") or {}
            cfg[key] = {"class_name": "L1L2", "config": {"l1": c.get("l1", 0.0), "l2": c.get("l2", 0.0)}}
        elif key.endswith("_constraint") and value is not None:
            refuse(f"has a weight constraint ({key}), which save_tfjs does not write")
    if cls == "LeakyReLU":
        cfg["alpha"] = cfg.pop("negative_slope")  # TF.js and tf.keras 2 name it alpha
    elif cls == "ReLU" and (cfg.get("negative_slope") or cfg.get("threshold")):
        refuse("has a negative_slope or threshold, and TF.js's ReLU has only max_value")
    elif cls == "ELU" and cfg.get("alpha", 1.0) != 1.0:
        refuse(f"has alpha={cfg['alpha']}; TF.js's ELU supports only alpha=1")
    elif cls == "Softmax" and cfg.get("axis") not in (-1, [-1]):
        refuse(f"normalizes over axis {cfg.get('axis')}; TF.js's softmax supports only the last axis")
    elif cls in ("GlobalAveragePooling2D", "GlobalMaxPooling2D") and cfg.get("keepdims"):
        refuse("has keepdims=True, which TF.js ignores")
    # Found by the conformance harness against the real tfjs 4.22 (tests/layers): TF.js loads
    # these and then predicts other values, or refuses the folder.
    elif cls == "BatchNormalization":
        axis = cfg.get("axis", -1)
        axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
        if not (axis == -1 or (rank is not None and isinstance(axis, int) and axis % rank == rank - 1)):
            refuse(f"normalizes over axis {axis}; TF.js's BatchNormalization gives other values for any "
                   "axis but the last")
    elif cls == "LayerNormalization":
        if cfg.pop("rms_scaling", False):
            refuse("has rms_scaling=True, which TF.js's LayerNormalization does not have")
    elif cls == "UpSampling2D" and cfg.get("interpolation", "nearest") != "nearest":
        refuse(f"uses {cfg['interpolation']!r} interpolation, which TF.js computes without half-pixel centres "
               "(other values than deepgpu and Keras)")
    elif cls == "Conv2DTranspose" and cfg.get("output_padding") is not None:
        from ..layers.conv import deconv_output_length as out_len
        two = (lambda v: list(v) if isinstance(v, (list, tuple)) else [v, v])
        ks, st, dl, op = (two(cfg.get(key, 1)) for key in ("kernel_size", "strides", "dilation_rate",
                                                            "output_padding"))
        pad = cfg.get("padding", "valid")
        # TF.js has no output_padding: it writes the size Keras gives without one. Only an
        # output_padding that changes that size cannot be carried.
        if any(out_len(1, k, s, pad, p, d) != out_len(1, k, s, pad, None, d) for k, s, d, p in zip(ks, st, dl, op)):
            refuse(f"has output_padding {cfg['output_padding']}, which changes the output size, and TF.js's "
                   "Conv2DTranspose has no output_padding")
    elif cls == "Flatten" and rank is not None and rank < 3:
        refuse(f"flattens a rank-{rank} input, and TF.js's Flatten takes rank 3 or more (on rank 2 it does "
               "nothing: remove it)")
    if cls == "Conv1D" and cfg.get("padding") == "causal":
        refuse("has padding='causal', which TF.js's Conv1D refuses to run")
    if cls == "DepthwiseConv2D" and cfg.get("dilation_rate", 1) not in (1, [1, 1], (1, 1)):
        # tfjs-layers 4.22 calls tf.depthwiseConv2d with dilations=null: it would predict other values.
        refuse(f"has dilation_rate={cfg['dilation_rate']}, which TF.js's DepthwiseConv2D ignores")
    if cls == "Conv2D" and cfg.get("groups", 1) != 1:
        refuse(f"has groups={cfg['groups']}, which TF.js's Conv2D does not have")
    if cls == "Conv1D" and cfg.get("groups", 1) != 1:
        refuse(f"has groups={cfg['groups']}, which TF.js's Conv1D does not have")
    if cls == "Conv3D" and cfg.get("groups", 1) != 1:  # issue 17
        refuse(f"has groups={cfg['groups']}, which TF.js's Conv3D does not have")
    if cls == "Conv3DTranspose" and cfg.get("output_padding") is not None:  # as Conv2DTranspose's above
        from ..layers.conv import deconv_output_length as out_len
        pad = cfg.get("padding", "valid")
        if any(out_len(1, k, s, pad, p, d) != out_len(1, k, s, pad, None, d) for k, s, d, p in
               zip(cfg["kernel_size"], cfg["strides"], cfg["dilation_rate"], cfg["output_padding"])):
            refuse(f"has output_padding {cfg['output_padding']}, which changes the output size, and TF.js's "
                   "Conv3DTranspose has no output_padding")
    if cls in ("GlobalAveragePooling1D", "GlobalMaxPooling1D") and cfg.get("keepdims"):
        refuse("has keepdims=True, which TF.js ignores")
    if cls in ("Sequential", "Model", "Functional"):
        for inner in cfg["layers"]:
            _tfjs_layer(inner, ranks)


_MODELS = ("Sequential", "Model", "Functional")


def _shift_nested_refs(spec, by, json_path=None):
    """In place: add ``by`` to the node index of every reference to a nested model, at every depth.

    TF.js counts a nested model's own internal graph as its node 0, so the
    first call of a nested model is node 1 in TF.js's files; deepgpu and
    Keras count calls from 0.
    """
    if spec.get("class_name") not in _MODELS:
        return
    cfg = spec["config"]
    entries = cfg.get("layers") or []
    for e in entries:
        _shift_nested_refs(e, by, json_path)
    if spec["class_name"] == "Sequential":
        return
    nested = {e.get("name") or e["config"].get("name") for e in entries if e.get("class_name") in _MODELS}

    def fix(ref):
        if isinstance(ref, list) and len(ref) >= 3 and ref[0] in nested and isinstance(ref[1], int):
            ref[1] += by
            if ref[1] < 0:
                raise ModelFileError(f"{json_path!r}: a reference to nested model {ref[0]!r} has node index "
                                     f"{ref[1] - by}, but TF.js counts that model's calls from 1")

    for e in entries:
        for node in e.get("inbound_nodes") or []:
            if isinstance(node, list):  # tf.keras 2 / TF.js: [[name, node, tensor, kwargs], ...]
                for ref in node:
                    fix(ref)
    for key in ("input_layers", "output_layers"):
        refs = cfg.get(key) or []
        for ref in (refs if refs and isinstance(refs[0], list) else [refs]):
            fix(ref)


def _refuse_masked_pooling(model):
    """TF.js's GlobalAveragePooling1D takes the plain mean: refuse one whose input carries a mask."""
    for layer in getattr(model, "layers", []):
        _refuse_masked_pooling(layer)
        if type(layer).__name__ == "GlobalAveragePooling1D" and any(
                getattr(t, "_keras_mask", None) is not None for node in getattr(layer, "_inbound_nodes", ())
                for t in node.inputs):
            raise ValueError(f"cannot save for TF.js: layer {layer.name!r} (GlobalAveragePooling1D) receives a "
                             f"mask (Embedding(mask_zero=True) or Masking), which TF.js's GlobalAveragePooling1D "
                             f"ignores (it takes the plain mean)")


def _model_json(model, manifest) -> dict:
    from .. import __version__
    from ..registry import serialize_layer

    spec = json.loads(json.dumps(serialize_layer(model)))  # a private copy to adjust
    _refuse_masked_pooling(model)
    _tfjs_layer(spec, _input_ranks(model))
    _shift_nested_refs(spec, +1)
    return {
        "format": "layers-model",
        "generatedBy": f"deepgpu {__version__}",
        "convertedBy": None,  # written directly, not by a converter (TF.js writes null too)
        "modelTopology": {"keras_version": _KERAS_DIALECT, "backend": "tensorflow", "model_config": spec},
        "weightsManifest": manifest,
    }


def _weights_stream(model, quantization=None):
    """(manifest entries, one bytes object of all weights as float32 little-endian, or quantized
    per tensor as ``quantization`` says: see deepgpu/io/_tfjs_quant.py)."""
    entries, chunks, seen = [], [], set()
    for w in model.weights:
        if w.name in seen:
            raise ValueError(f"model {model.name!r} has two weights named {w.name!r}; TF.js matches weights "
                             f"by name, so layer names must be unique")
        seen.add(w.name)
        a = np.ascontiguousarray(w.data_sync(), dtype="<f4")
        entries.append({"name": w.name, "shape": [int(d) for d in a.shape], "dtype": "float32"})
        if quantization is None:
            chunks.append(a.tobytes())
        else:
            data, entries[-1]["quantization"] = _tfjs_quant.encode(a, quantization)
            chunks.append(data)
    return entries, b"".join(chunks)


def _is_tfjs_leftover(name) -> bool:
    return name == "model.json" or name == "weights.bin" or bool(_SHARD_RE.match(name))


def _write_file(path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_tfjs(model, directory, shard_bytes=SHARD_BYTES, quantization=None) -> None:
    """Write ``model`` as a TF.js Layers model: ``directory/model.json`` + ``group1-shard{i}of{n}.bin``.

    Weights are stored as float32 little-endian, cut into shards of at most
    ``shard_bytes`` (4 MiB, as tensorflowjs_converter). ``quantization``
    "uint8" / "uint16" stores each weight as integers q with a per-tensor
    ``scale`` and ``min`` in the manifest (value = q * scale + min, range
    nudged so 0 is exact, as ``tensorflowjs_converter --quantize_uint8``);
    "float16" stores half floats (ValueError for another value). The folder is written
    beside the target (``.deepgpu-<name>.<hex>.tmp``) and moved into place,
    so a crash leaves either the old folder or the new one. An existing
    ``directory`` is replaced only if it is empty or holds nothing but a previous TF.js export (FileExistsError
    otherwise, and for a file); missing parent folders are created. On Linux
    the two folders are exchanged in one step, so ``directory`` is the old or
    the new export at every instant; elsewhere a crash between two renames
    leaves the old folder aside, and the next save or ``load_tfjs`` puts it
    back. Each save removes what interrupted ones left. TF.js has no mixed
    precision: a model under a 16-bit dtype policy ("mixed_float16", ...) is
    written as the float32 model (its float32 weights, float32 layers). Raises
    ValueError for an unbuilt model, or for a layer, activation or option
    that TF.js lacks or computes differently (naming the layer), and
    NotImplementedError for a subclassed model (no config).
    """
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built yet: call it on data or give it an input shape "
                         f"before saving")
    if int(shard_bytes) <= 0:
        raise ValueError(f"shard_bytes must be a positive number of bytes, got {shard_bytes!r}")
    shard_bytes = int(shard_bytes)
    _tfjs_quant.check(quantization)
    target = os.path.abspath(os.fspath(directory))
    parent = os.path.dirname(target)
    if os.path.exists(target):
        if not os.path.isdir(target):
            raise FileExistsError(f"cannot save a TF.js model to {target!r}: it is a file, not a folder")
        others = sorted(n for n in os.listdir(target) if not _is_tfjs_leftover(n))
        if others:
            raise FileExistsError(
                f"cannot save a TF.js model to {target!r}: the folder holds other files ({', '.join(others[:5])}"
                f"{', ...' if len(others) > 5 else ''}); it is replaced only when empty or a previous TF.js export")

    # Everything that can fail (config, TF.js checks, weights) is done before writing.
    entries, data = _weights_stream(model, quantization)
    n = max(1, -(-len(data) // shard_bytes))
    names = [f"group1-shard{i + 1}of{n}.bin" for i in range(n)]
    doc = _model_json(model, [{"paths": names, "weights": entries}])
    text = json.dumps(doc).encode("utf-8")

    os.makedirs(parent, exist_ok=True)  # as tfjs-node's file:// saver and the converter do
    _atomic.clean(target)  # what interrupted saves of this target left
    tmp, fd = _atomic.create_temp(target, folder=True)
    try:
        for i, name in enumerate(names):
            _write_file(os.path.join(tmp, name), data[i * shard_bytes:(i + 1) * shard_bytes])
        _write_file(os.path.join(tmp, "model.json"), text)
        _atomic.replace_folder(tmp, target)
    except BaseException:
        _atomic.discard(tmp, None)
        raise
    finally:
        os.close(fd)


# ------------------------------------------------------------------ reading
def _read_model_json(directory):
    path = os.fspath(directory)
    if not os.path.exists(path):
        # A save that died between its two renames (where folders cannot be exchanged) left the
        # old folder aside: put it back.
        is_json = os.path.basename(path).endswith(".json")
        _atomic.recover(os.path.abspath(os.path.dirname(path) if is_json else path))
    if os.path.isfile(path) and os.path.basename(path).endswith(".json"):
        folder, json_path = os.path.dirname(os.path.abspath(path)), path
    else:
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such folder: {path!r}")
        if not os.path.isdir(path):
            raise ModelFileError(f"{path!r} is a file, not a TF.js model folder (a folder holding model.json "
                                 f"and its weight shards)")
        folder, json_path = path, os.path.join(path, "model.json")
        if not os.path.isfile(json_path):
            raise ModelFileError(f"{path!r} is not a TF.js model folder: it has no model.json")
    if os.path.getsize(json_path) > JSON_LIMIT:
        raise ModelFileError(f"{json_path!r} is {os.path.getsize(json_path)} bytes, more than a model.json can "
                             f"need ({JSON_LIMIT}); it is not a TF.js model.json")
    try:
        with open(json_path, "rb") as f:
            doc = json.loads(f.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{json_path!r} is not valid JSON ({e}); the file may be truncated") from None
    if not isinstance(doc, dict):
        raise ModelFileError(f"{json_path!r} is not a TF.js model.json: it holds a {type(doc).__name__}, "
                             f"not an object")
    return folder, json_path, doc


def _topology(doc, json_path):
    fmt = doc.get("format")
    if fmt == "graph-model":
        raise ModelFileError(f"{json_path!r} is a TF.js graph model (converted from a SavedModel or a frozen "
                             f"graph); only Layers models (format 'layers-model') can be loaded")
    if fmt not in (None, "layers-model"):
        raise ModelFileError(f"{json_path!r}: unknown format {fmt!r} (expected 'layers-model')")
    topo = doc.get("modelTopology")
    if not isinstance(topo, dict):
        raise ModelFileError(f"{json_path!r} has no modelTopology object, so it holds no architecture")
    # The converter nests the model under model_config; TF.js's own save does not.
    spec = topo.get("model_config", topo)
    if not isinstance(spec, dict) or "class_name" not in spec or not isinstance(spec.get("config"), dict):
        raise ModelFileError(f"{json_path!r}: modelTopology is not a Keras {{class_name, config}} tree")
    manifest = doc.get("weightsManifest")
    if manifest is None:
        manifest = []
    if not isinstance(manifest, list) or not all(
            isinstance(g, dict) and isinstance(g.get("paths"), list) and isinstance(g.get("weights"), list)
            for g in manifest):
        raise ModelFileError(f"{json_path!r}: weightsManifest must be a list of {{paths, weights}} groups")
    spec = {"class_name": spec["class_name"], "config": spec["config"]}
    version = str(topo.get("keras_version") or "")
    _from_tfjs_dialect(spec, version.startswith("3."), json_path)
    # Files from TF.js (and deepgpu, which writes for it) number a nested
    # model's calls from 1; Keras's and the converter's from 0.
    if version.startswith("tfjs") or str(doc.get("generatedBy") or "").startswith("deepgpu"):
        _shift_nested_refs(spec, -1, json_path)
    return spec, manifest


def _from_tfjs_dialect(node, keras3, json_path):
    """In place: TF.js's initializer spellings to Keras's; hard_sigmoid, unless the file is Keras 3's,
    as TF.js and tf.keras 2 define it (clip(0.2 x + 0.5, 0, 1)): deepgpu's ``tfjs_hard_sigmoid``
    (its ``hard_sigmoid`` is Keras 3's relu6(x + 3) / 6); a GRU without reset_after: False, TF.js's.
    """
    from ._rnn_interop import tfjs_in

    if isinstance(node, dict):
        if node.get("class_name") in _FROM_TFJS_INIT:
            node["class_name"] = _FROM_TFJS_INIT[node["class_name"]]
        tfjs_in(node, keras3)
        for v in node.values():
            _from_tfjs_dialect(v, keras3, json_path)
    elif isinstance(node, list):
        for v in node:
            _from_tfjs_dialect(v, keras3, json_path)


def _entry_layout(entry, where):
    """(stored numpy dtype, shape, target dtype, dequantization or None) of a manifest entry, checked."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ModelFileError(f"{where}: a weight entry must be {{name, shape, dtype}}, got {entry!r:.200}")
    where = f"{where} weight {entry['name']!r}"
    shape = shape_of(entry.get("shape"), where)
    dtype = entry.get("dtype", "float32")
    if dtype not in ("float32", "int32", "bool"):
        raise ModelFileError(f"{where} has dtype {dtype!r}; only float32, int32 and bool are supported")
    q = entry.get("quantization")
    if q is None:
        return _DTYPES[dtype], shape, dtype, None
    why = _tfjs_quant.layout_error(q, dtype)
    if why is not None:
        raise ModelFileError(f"{where}: {why}")
    return _tfjs_quant.stored_dtype(q["dtype"]), shape, dtype, q


def _read_weights(folder, json_path, manifest):
    """{manifest name: numpy array} for every weight in every group; shard sizes are checked against
    the manifest before any is read."""
    out = {}
    for gi, group in enumerate(manifest, start=1):
        where = f"{json_path!r} weight group {gi}"
        layouts = [_entry_layout(e, where) for e in group["weights"]]
        need = sum(np.dtype(st).itemsize * math.prod(shape) for st, shape, _, _ in layouts)
        files = []
        for p in group["paths"]:
            if not isinstance(p, str):
                raise ModelFileError(f"{where}: shard path {p!r} is not a string")
            file = os.path.normpath(os.path.join(folder, p))
            # A downloaded model.json must not make us read files outside its folder.
            if os.path.commonpath([os.path.abspath(folder), os.path.abspath(file)]) != os.path.abspath(folder):
                raise ModelFileError(f"{where}: weight shard {p!r} lies outside the model's folder")
            if not os.path.isfile(file):
                raise ModelFileError(f"{where}: weight shard {p!r} is missing (looked for {file!r})")
            files.append(file)
        sizes = [os.path.getsize(f) for f in files]
        if sum(sizes) != need:
            listed = ", ".join(f"{p} {n} B" for p, n in zip(group["paths"], sizes))
            raise ModelFileError(f"{where}: the shards hold {sum(sizes)} bytes ({listed}) but the manifest's "
                                 f"weights need {need}; a shard is truncated or from another model")
        blobs = []
        for file in files:
            with open(file, "rb") as f:
                blobs.append(f.read(need + 1))
        data = b"".join(blobs)
        if len(data) != need:
            raise ModelFileError(f"{where}: the shards changed while being read")
        offset = 0
        for entry, (stored, shape, dtype, q) in zip(group["weights"], layouts):
            count = math.prod(shape)
            a = np.frombuffer(data, dtype=stored, count=count, offset=offset).reshape(shape)
            offset += np.dtype(stored).itemsize * count
            if q is not None:
                a = _tfjs_quant.decode(a, q, dtype)
            name = entry["name"]
            if name in out:
                raise ModelFileError(f"{where}: weight {name!r} appears twice in the manifest")
            out[name] = a.astype(np.dtype(_DTYPES[dtype]).newbyteorder("="))
    return out


def _match(model, stored, json_path):
    """Pair each model weight with a stored array by name; every check before anything is assigned.

    ``dense/kernel`` matches ``dense/kernel`` or, when that is absent, a single
    ``<prefix>/dense/kernel`` (Keras 3's converter puts the model's name first).
    """
    def plain(name):
        return name[:-2] if name.endswith(":0") else name

    by_name = {plain(n): n for n in stored}
    pairs, used, problems = [], set(), []
    for w in model.weights:
        key = by_name.get(w.name)
        if key is None:
            hits = [n for p, n in by_name.items() if p.endswith("/" + w.name)]
            if len(hits) > 1:
                problems.append(f"model weight {w.name!r} matches several stored weights {hits}")
                continue
            key = hits[0] if hits else None
        if key is None:
            problems.append(f"model weight {w.name!r} {tuple(w.shape)} has no stored value")
            continue
        if key in used:
            problems.append(f"stored weight {key!r} matches more than one model weight")
            continue
        used.add(key)
        a = stored[key]
        if tuple(a.shape) != tuple(w.shape):
            from ._rnn_interop import shape_hint
            problems.append(f"stored weight {key!r} has shape {tuple(a.shape)}, the model's {w.name!r} "
                            f"has {tuple(w.shape)}" + shape_hint(w.name, a.shape, w.shape))
            continue
        pairs.append((w, a))
    extra = [n for n in stored if n not in used]
    if extra:
        problems.append(f"stored weights the model has no place for: {extra[:8]}{' ...' if len(extra) > 8 else ''}")
    if problems:
        raise ModelFileError(f"the weights in {json_path!r} do not fit model {model.name!r}: "
                             + "; ".join(problems[:6]) + (" ..." if len(problems) > 6 else ""))
    return pairs


def load_tfjs(directory, custom_objects=None):
    """A deepgpu model from a TF.js Layers model folder (``model.json`` + shards), on the current backend.

    ``directory`` may also be the path of the model.json itself. Reads
    deepgpu's own files and those written by TF.js or tensorflowjs_converter
    (from tf.keras 2 or Keras 3). Weights are matched by name and cast to the
    layers' dtype. Raises FileNotFoundError; ModelFileError (no model.json,
    invalid JSON, a graph model, a missing or wrongly sized shard, weights
    that do not fit the architecture, a layer class or option deepgpu lacks:
    custom layers go in ``custom_objects``), and no other type for a bad
    folder. Everything is checked before the model is returned.
    """
    from ..models.serialization import model_from_config
    from .keras import _from_keras

    with reading(directory) as ctx:
        ctx.what = "model.json"
        folder, json_path, doc = _read_model_json(directory)
        ctx.what = "the topology"
        spec, manifest = _topology(doc, json_path)
        ctx.what = "the weight shards"
        stored = _read_weights(folder, json_path, manifest)
        if spec["class_name"] not in ("Sequential", "Model", "Functional"):
            raise ModelFileError(f"{json_path!r}: the topology is a {spec['class_name']!r}, not a Sequential or "
                                 f"functional model")
        ctx.what = "the model config"
        try:
            converted = _from_keras(spec, custom_objects)
        except (KeyError, IndexError, TypeError) as e:
            raise ModelFileError(f"{json_path!r}: the model config is malformed ({type(e).__name__}: {e})") from None
        except ValueError as e:
            raise ModelFileError(f"cannot load the TF.js model {json_path!r}: {e}") from None
        try:
            model = model_from_config(converted, custom_objects)
        except ValueError as e:
            raise ModelFileError(f"cannot load the TF.js model {json_path!r}: {e}") from None
        pairs = [(w, a.astype(w.dtype, copy=False)) for w, a in _match(model, stored, json_path)]
        for w, a in pairs:
            w.assign(a)
    return model
