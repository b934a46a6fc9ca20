"""Legacy ``.h5`` files of every Keras 2 release (keras-team Keras 2.0-2.3, tf.keras / tf_keras 2.x), read
through ``keras.py`` with small hooks: ``legacy_spec`` (the config), ``attr_list`` (names that Keras split
over several attributes), ``cudnn_weights`` (Keras 2's cuDNN layers), ``match_nested`` (a nested model's
weights) and ``convert_weights`` (Theano's convolution kernels).

The spellings, release by release, and how each is checked (``tests/test_io_keras2.py`` over the
fixtures of ``tests/fixtures/keras/make_keras2_fixtures.py``; "real": written by tf_keras itself,
"rebuilt": attributes written as that release wrote them, from its source, around tf_keras's weights;
every fixture's predictions are compared with tf_keras's own, within 1e-5):

==============  ===========================================================================  ============
Release         What differs (source: github.com/keras-team/keras at the tag)                Fixtures
==============  ===========================================================================  ============
2.0.x           Sequential config a bare LIST of layers, no InputLayer, the first layer      rebuilt:
                carries ``batch_input_shape``; functional class ``Model``; initializers as   convnet,
                ``VarianceScaling`` configs, ``l2`` as ``L1L2``; LSTM/GRU ``implementation`` two_input,
                0, recurrent activation ``hard_sigmoid`` (Keras 2's ``0.2 x + 0.5``, not    rnn, rnn2,
                Keras 3's), GRU without ``reset_after`` (so False); BN ``axis`` an int;      conv_misc,
                attributes as bytes (h5py 2); a nested model's outer nodes numbered from 1   nested,
                (keras/models.py, engine/topology.py at 2.0.8)                               nested_rnn
2.0.x Theano    backend ``theano``: Conv1D/2D/3D, Conv2DTranspose, ConvLSTM2D kernels        rebuilt:
                flipped (topology.py ``preprocess_weights_for_loading``); weight names       convnet,
                without ``:0``                                                               conv_misc
2.0.9-2.3.1     ``CuDNNLSTM`` / ``CuDNNGRU``: weights in cuDNN's layout, LSTM bias doubled    rebuilt:
(tf.keras 1.x)  (engine/saving.py 2.2.4 ``_convert_rnn_weights``)                            cudnn
2.1.x           GRU ``reset_after`` from 2.1.5; MobileNet's ``Activation(relu6)``;           rebuilt:
                ``layer_names`` / ``weight_names`` split as ``layer_names0``, ``...1`` over  rnn,
                64 KiB (topology.py ``save_attributes_to_hdf5_group``, 2.1.6)                mobilenet
2.2.0-2.2.2     Sequential still a list; ``ReLU(max_value)`` layer                           rebuilt:
                                                                                             nested,
                                                                                             mobilenet
2.2.3-2.3.1     Sequential a dict ``{"name", "layers"}`` (engine/sequential.py 2.2.3);       rebuilt:
                ``_SeparableConv`` drops Conv's ``kernel_*`` keys; nested models' weights    convnet,
                named ``lstm_1/kernel:0``, ``bidirectional_1/forward_gru_1/...``             two_input,
                                                                                             rnn2, nested,
                                                                                             nested_rnn,
                                                                                             mobilenet,
                                                                                             transfer
tf.keras 1.x    ``keras_version`` "2.2.4-tf"; initializer configs carry ``dtype`` (TF's      rebuilt:
                init_ops); BN ``axis`` the built list                                        convnet, rnn,
                                                                                             nested,
                                                                                             mobilenet
tf.keras 2.x    ``Functional`` class (TF 2.4+), Sequential with its InputLayer (``sparse``,  real, by
(to 2.15,       ``ragged``), initializers by class name with ``module`` keys, weight names   tf_keras
tf_keras 2.21)  ``lstm/lstm_cell/kernel:0``, DepthwiseConv2D ``groups`` and SeparableConv2D  2.21: all
                ``kernel_*`` leftovers, ConvLSTM2D ``time_major``, LeakyReLU / ELU           eleven, zoo
                ``alpha``; nested models' outer nodes from 1 only when built on an Input     with the 1-D,
                (functional.py ``_should_skip_first_node``, v2.6.0)                          3-D, ConvLSTM
                                                                                             and activation
                                                                                             layers
==============  ===========================================================================  ============

``training_config`` is not read (the model comes back uncompiled), so Keras 2's optimizer spellings
(``lr``, ``decay``) cannot break a load. Refused with the layer and the file named: Keras 1 files and
layers (``Merge``, ``Convolution2D``, ``output_dim`` / ``init`` configs), ``Lambda`` (Python bytecode),
and tf.keras's recorded TensorFlow ops (``TFOpLambda``, ``SlicingOpLambda``, ``TensorFlowOpLayer``).
``CuDNNLSTM`` / ``CuDNNGRU`` (Keras 2.0.9-2.3, tf.keras 1.x) load as LSTM / GRU(reset_after=True) with their
weights converted as Keras 2 did (at the top level of the file's model; inside a nested model they are refused).
"""
from __future__ import annotations

import copy

_MODELS = ("Sequential", "Functional", "Model")
_KERAS1_CLASSES = ("Merge", "Convolution1D", "Convolution2D", "Convolution3D", "AtrousConvolution1D",
                   "AtrousConvolution2D", "Deconvolution2D", "SeparableConvolution2D", "MaxoutDense", "Highway",
                   "TimeDistributedDense")
_KERAS1_KEYS = ("init", "nb_filter", "border_mode", "dim_ordering", "W_regularizer", "input_dtype")
_REFUSED = {
    "Lambda": "holds Python bytecode of the saving interpreter, which deepgpu does not run; rebuild the model "
              "in code (with deepgpu's Lambda) and load the weights",
    "TFOpLambda": "is a TensorFlow op tf.keras recorded from the model's code; rebuild it with a deepgpu layer",
    "SlicingOpLambda": "is a tensor slice tf.keras recorded from the model's code; rebuild it with a deepgpu "
                       "layer",
    "TensorFlowOpLayer": "is a TensorFlow op tf.keras recorded from the model's code; rebuild it with a deepgpu "
                         "layer",
}
# Keras 2's cuDNN layers load as the LSTM / GRU(reset_after=True) they equal (engine/saving.py 2.2.4
# ``_convert_rnn_weights``): (class, gates).
_CUDNN = {"CuDNNLSTM": ("LSTM", 4), "CuDNNGRU": ("GRU", 3)}
_NESTED = ("layer", "cell", "backward_layer", "forward_layer")
# Keras 2's preprocess_weights_for_loading: the layers whose kernels it flips between Theano and TF.
_FLIPPED = {"Conv1D": (0,), "Conv2D": (0,), "Conv3D": (0,), "Conv2DTranspose": (0,), "ConvLSTM2D": (0, 1)}


def _text(v):
    return v.decode("utf-8") if isinstance(v, bytes) else None if v is None else str(v)


def file_version(attrs):
    """``(keras_version, backend)`` of a legacy file's attributes (bytes under h5py 2, str under 3), or None."""
    return _text(attrs.get("keras_version")), _text(attrs.get("backend"))


def attr_list(group, name):
    """The names of attribute ``name``, joined from ``name0``, ``name1``... where Keras split them."""
    if name in group.attrs:
        return [_text(n) for n in group.attrs[name]]
    out, i = [], 0
    while f"{name}{i}" in group.attrs:
        out += [_text(n) for n in group.attrs[f"{name}{i}"]]
        i += 1
    return out


def _error(path, message):
    from .keras import KerasFileError
    return KerasFileError(f"{path!r}: {message}")


def legacy_spec(spec, attrs, path):
    """``spec`` (a legacy ``model_config``) in the dialect ``keras.py`` reads; raises KerasFileError for a
    Keras 1 file and for layers that cannot be loaded, naming them. Keras 3's legacy files pass unchanged."""
    version, _ = file_version(attrs)
    if version and version.startswith("1"):
        raise _error(path, f"written by Keras {version} (Keras 1), whose layer configs and weight layouts "
                           f"predate Keras 2; load it in Keras 2 and save it again")
    if version and version.split(".")[0].isdigit() and int(version.split(".")[0]) >= 3:
        return spec
    keras2 = bool(version)  # a file without keras_version: tf.keras 2's dialect, deepgpu's own activations
    spec = copy.deepcopy(spec)
    _walk(spec, keras2, path, "root")
    return spec


def _walk(spec, keras2, path, where):
    """Rewrite one config in place; ``where``: "root" (the file's model), "top" (a layer of it, or inside
    such a layer's wrapper), "inner" (inside a nested model)."""
    if not isinstance(spec, dict):
        return
    cls, cfg = spec.get("class_name"), spec.get("config")
    if cls in _MODELS:
        if cls == "Sequential" and isinstance(cfg, list):  # Keras 2.0-2.2.2: the layers alone
            cfg = spec["config"] = {"name": spec.get("name"), "layers": cfg}  # a nested one's from its entry
        if isinstance(cfg, dict) and isinstance(cfg.get("layers"), list):
            for entry in cfg["layers"]:
                _walk(entry, keras2, path, "top" if where == "root" else "inner")
            if cls != "Sequential":
                _renumber_nested(cfg)
        return
    name = cfg.get("name") if isinstance(cfg, dict) else spec.get("name")
    who = f"layer {name!r} ({cls})"
    if cls in _KERAS1_CLASSES or (isinstance(cfg, dict) and any(k in cfg for k in _KERAS1_KEYS)):
        keys = [k for k in _KERAS1_KEYS if isinstance(cfg, dict) and k in cfg]
        raise _error(path, f"{who} is a Keras 1 layer{' (options ' + ', '.join(keys) + ')' if keys else ''}; "
                           f"load the file in Keras 2 and save it again")
    if cls in _REFUSED:
        raise _error(path, f"{who} {_REFUSED[cls]}")
    if not isinstance(cfg, dict):
        return
    if cls in _CUDNN:
        if where != "top":
            raise _error(path, f"{who} is inside a nested model; deepgpu converts the weights of Keras 2's cuDNN "
                               f"layers only at the top level of a file")
        spec["class_name"] = cls = _CUDNN[cls][0]
        cfg.update(activation="tanh", recurrent_activation="sigmoid", use_bias=True)  # what cuDNN computes
        if cls == "GRU":
            cfg["reset_after"] = True
    if cfg.get("data_format") == "channels_first":  # common in Theano-era files
        raise _error(path, f"{who} has data_format='channels_first'; deepgpu's images are channels_last (NHWC)")
    for key, value in cfg.items():  # tf.keras 1.x's initializers (TF's init_ops) carry their dtype
        if key.endswith("_initializer") and isinstance(value, dict) and isinstance(value.get("config"), dict):
            value["config"].pop("dtype", None)
    if keras2:
        for key in ("activation", "recurrent_activation"):
            if cfg.get(key) == "hard_sigmoid":  # Keras 2's clip(0.2 x + 0.5), not Keras 3's relu6(x + 3) / 6
                cfg[key] = "tfjs_hard_sigmoid"
    if cls in ("SeparableConv1D", "SeparableConv2D"):  # tf.keras's leftovers of Conv's config, never used
        cfg.pop("kernel_initializer", None)
        for key in ("kernel_regularizer", "kernel_constraint"):
            if cfg.get(key, 0) is None:
                del cfg[key]
    if cfg.get("time_major") is False:  # tf.keras's RNN default, written by ConvLSTM2D too
        del cfg["time_major"]
    if cls in ("GRU", "GRUCell"):
        cfg.setdefault("reset_after", False)  # Keras 2.0-2.1.4 had only this form, and wrote no key
    for key in _NESTED:
        _walk(cfg.get(key), keras2, path, where)
    for cell in cfg.get("cells") or []:
        _walk(cell, keras2, path, where)


def _renumber_nested(cfg):
    """A nested model's nodes in a Keras 2 functional config count from 1 (its own first node, built on
    its Input, is not written; Keras 2's Container.get_config, tf.keras's _should_skip_first_node);
    deepgpu counts the calls in the outer model from 0."""
    nested = {e.get("name") or (e.get("config") or {}).get("name") for e in cfg["layers"]
              if e.get("class_name") in _MODELS}
    if not nested:
        return
    refs = []  # every [name, node, tensor, ...] list that points at a nested model
    for e in cfg["layers"]:
        for node in e.get("inbound_nodes") or []:
            if isinstance(node, list):
                refs += [r for r in node if isinstance(r, list) and r and r[0] in nested]
    for key in ("input_layers", "output_layers"):
        value = cfg.get(key) or []
        value = [value] if value and isinstance(value[0], str) else value
        refs += [r for r in value if isinstance(r, list) and r and r[0] in nested]
    for name in nested:
        mine = [r for r in refs if r[0] == name and len(r) > 1 and isinstance(r[1], int)]
        if mine and min(r[1] for r in mine) >= 1:
            for r in mine:
                r[1] -= 1


def _cudnn_owners(spec):
    """{name of a layer of the file's model: gates} for the cuDNN layers there (or inside its wrappers)."""
    cfg = spec.get("config") if isinstance(spec, dict) else None
    entries = cfg if isinstance(cfg, list) else (cfg or {}).get("layers") if isinstance(cfg, dict) else None
    out = {}
    for e in entries or []:
        if not isinstance(e, dict) or not isinstance(e.get("config"), dict):
            continue
        inner = [e] + [e["config"][k] for k in _NESTED if isinstance(e["config"].get(k), dict)]
        for x in inner:
            if x.get("class_name") in _CUDNN:
                out[e["config"].get("name") or e.get("name")] = _CUDNN[x["class_name"]][1]
    return out


def cudnn_weights(stored, group, path):
    """``stored`` ({layer name: [(weight name, dataset)]} of a legacy file) with the weights of Keras 2's
    CuDNNLSTM / CuDNNGRU in LSTM / GRU(reset_after=True) form: per gate, input kernels transposed from
    cuDNN's column-major layout and recurrent kernels transposed; an LSTM's two biases summed, a GRU's
    stacked (engine/saving.py 2.2.4 ``_convert_rnn_weights``). Raises KerasFileError for shapes that are
    not a cuDNN layer's."""
    import json

    import numpy as np

    try:
        spec = json.loads(_text(group.file.attrs.get("model_config")) or "null")
    except ValueError:
        return stored
    for name, gates in _cudnn_owners(spec).items():
        entries, out = stored.get(name) or [], []
        if len(entries) % 3:
            raise _error(path, f"layer {name!r} (a Keras 2 cuDNN layer) has {len(entries)} weights, not kernel, "
                               f"recurrent kernel and bias per direction")
        for i in range(0, len(entries), 3):
            (kn, k), (rn, r), (bn, b) = entries[i:i + 3]
            units = r.shape[0] if len(r.shape) == 2 else 0
            if not units or r.shape != (units, gates * units) or len(k.shape) != 2 \
                    or k.shape[1] != gates * units or b.shape != (2 * gates * units,):
                raise _error(path, f"layer {name!r}: weights {kn} {k.shape}, {rn} {r.shape}, {bn} {b.shape} are not "
                                   f"those of a cuDNN layer with {gates} gates")
            k, r, b = np.asarray(k[()]), np.asarray(r[()]), np.asarray(b[()])
            k = np.hstack([x.T.reshape(x.shape, order="F") for x in np.hsplit(k, gates)])
            r = np.hstack([x.T for x in np.hsplit(r, gates)])
            b = b[:gates * units] + b[gates * units:] if gates == 4 else b.reshape(2, -1)
            out += [(kn, k), (rn, r), (bn, b)]
        stored[name] = out
    return stored


def match_nested(layer, entries, path):
    """[(weight, stored name, dataset)] for nested model ``layer``'s weights from its group's ``entries``:
    by name (the stored name less ``:0`` and tf.keras's ``<rnn>_cell`` scopes, ending in deepgpu's
    ``<layer>/<weight>``), else in Keras's order (trainable weights first, as ``load_weights`` assigns them)
    where every shape fits. Raises KerasFileError when neither matches."""
    norm = [("/".join(p for p in n.split(":")[0].split("/") if not p.endswith("_cell")), n, a) for n, a in entries]
    out, used = [], set()
    for w in layer.weights:
        hits = [i for i, (k, _, _) in enumerate(norm) if i not in used and (k == w.name or k.endswith("/" + w.name))]
        if len(hits) != 1:
            break
        used.add(hits[0])
        out.append((w, norm[hits[0]][1], norm[hits[0]][2]))
    else:
        return out
    order = list(layer.trainable_weights) + list(layer.non_trainable_weights)
    if len(order) == len(entries) and all(tuple(a.shape) == tuple(w.shape) for w, (_, a) in zip(order, entries)):
        return [(w, n, a) for w, (n, a) in zip(order, entries)]
    raise _error(path, f"the weights under model_weights/{layer.name} ({[n for n, _ in entries]}) fit the weights "
                       f"of nested model {layer.name!r} ({[w.name for w in layer.weights]}) neither by name nor "
                       f"in order")


def convert_weights(model, pairs, attrs):
    """``pairs`` of (weight, array) with Theano's convolution kernels flipped into TensorFlow's (Keras 2's
    ``preprocess_weights_for_loading``: Theano convolves, TensorFlow and CNTK correlate)."""
    version, backend = file_version(attrs)
    if backend != "theano" or not (version or "").startswith("2"):
        return pairs
    flip = {}
    for layer in _all_layers(model):
        for i in _FLIPPED.get(type(layer).__name__, ()):
            w = layer.weights[i]
            flip[id(w)] = w.shape
    out = []
    for w, a in pairs:
        if id(w) in flip:
            a = a[(slice(None, None, -1),) * (a.ndim - 2)].copy()
        out.append((w, a))
    return out


def _all_layers(model):
    for layer in getattr(model, "layers", ()):
        yield layer
        if hasattr(layer, "layers") and layer is not model:
            yield from _all_layers(layer)
