"""TensorFlow.js Layers format: round trips, the dialect TF.js reads, shards, bad folders, real TF.js.

The tests marked ``node`` run the real ``@tensorflow/tfjs`` 4.22 in Node
(``tests/js/tfjs_check.js``); they skip, saying why, where ``node`` or
``tests/js/node_modules`` (``cd tests/js && npm ci``) is missing.
"""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

import deepgpu as dg
from deepgpu import Input, Model, Sequential, zoo
from deepgpu.io import ModelFileError, load_tfjs, save_tfjs
from deepgpu.io import tfjs as tfjs_mod
from deepgpu.layers.base import reset_names
from deepgpu import layers as L
from deepgpu.layers import Add, BatchNormalization, Concatenate, Conv2D, Dense, Flatten, MaxPooling2D

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures", "tfjs")
JS_DIR = os.path.join(HERE, "js")


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _predict(model, x):
    """The prediction as one array (several outputs flattened and concatenated)."""
    y = model.predict(x, verbose=0)
    if isinstance(y, list):
        return np.concatenate([t.data_sync().reshape(len(x), -1) for t in y], axis=1)
    return y.data_sync()


def _from_json(obj, n):
    if isinstance(obj, list):
        return np.concatenate([_from_json(o, n).reshape(n, -1) for o in obj], axis=1)
    return np.asarray(obj["data"], dtype="float32").reshape(obj["shape"])


def _perturb(model, seed=1):
    """Move every weight off its initial value (biases off 0, variances off 1), so a lost weight shows."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        v = rng.uniform(-0.5, 0.5, w.shape)
        if w.name.endswith(("moving_variance", "gamma")):
            v += 1.0
        elif w.name.endswith("kernel"):
            v = w.data_sync() + 0.1 * v
        w.assign(v.astype("float32"))
    return model


def _dense_net():
    reset_names()  # layer names as in a fresh session: dense, dense_1, ...
    dg.set_seed(3)
    return _perturb(Sequential([Dense(16, activation="relu", input_shape=(7,)), Dense(8, activation="tanh"),
                                Dense(3, activation="softmax")], name="dense_net"))


def _convnet():
    reset_names()
    dg.set_seed(4)
    return _perturb(zoo.convnet())


def _functional():
    reset_names()
    dg.set_seed(5)
    inp = Input((6, 6, 2), name="image")
    a = Conv2D(4, 3, padding="same", use_bias=False)(inp)
    a = BatchNormalization()(a)
    b = Conv2D(4, 1, activation="relu")(inp)
    h = Concatenate()([Add()([a, b]), inp])
    out = Dense(3)(Flatten()(MaxPooling2D(2)(h)))
    return _perturb(Model(inp, out, name="branches"))


def _many_layers():
    """Every other layer and activation save_tfjs accepts, with non-default options where TF.js has them."""
    reset_names()
    dg.set_seed(7)
    inp = Input((24,))
    x = L.Dense(24, activation="selu", kernel_initializer="lecun_normal", kernel_regularizer="l2",
                bias_regularizer=dg.regularizers.L1L2(0.01, 0.02))(inp)
    x = L.Reshape((2, 3, 4))(x)
    x = L.Permute((2, 1, 3))(x)
    x = L.ZeroPadding2D(((1, 0), (0, 2)))(x)
    x = L.Cropping2D(((0, 1), (1, 0)))(x)
    x = L.UpSampling2D((2, 1))(x)
    x = L.Conv2DTranspose(3, 3, strides=2, padding="same", activation="softplus")(x)
    x = L.Conv2D(4, 3, dilation_rate=2, padding="same", activation="gelu", kernel_initializer="lecun_uniform",
                 kernel_regularizer="l1")(x)
    x = L.AveragePooling2D(2, padding="same")(x)
    x = L.BatchNormalization(center=False)(x)
    x = L.BatchNormalization(scale=False, epsilon=0.01)(x)
    g = L.GlobalMaxPooling2D()(x)
    v = L.Flatten()(L.RepeatVector(2)(L.GlobalAveragePooling2D()(x)))
    a = L.LeakyReLU(0.1)(L.Dense(5, activation="mish")(g))
    b = L.ReLU(max_value=0.3)(L.Dense(5, activation="swish")(v))
    c = L.ELU()(L.Dense(5, activation="softsign")(L.Dropout(0.5)(v)))
    m = [L.Multiply()([a, b]), L.Average()([a, c]), L.Maximum()([b, c]), L.Minimum()([a, b, c])]
    h = L.Dense(4)(L.Concatenate()(m))
    heads = [L.Softmax()(h), L.Activation("log_softmax")(h), L.Activation("tanh")(h),
             L.Dense(3, activation="relu6")(h), h]
    return _perturb(Model(inp, L.Concatenate()(heads), name="many_layers"))


def _nested():
    """A Sequential called twice inside a functional model, the second time on a layer listed after it."""
    reset_names()
    dg.set_seed(8)
    inner = Sequential([Dense(4, activation="relu", input_shape=(3,)), Dense(2)], name="inner")
    inp = Input((3,))
    first = Dense(2)(Concatenate()([inner(inp), inp]))
    return _perturb(Model(inp, [first, inner(Dense(3)(inp))], name="nested"))


MODELS = {"dense": (_dense_net, (5, 7)), "convnet": (_convnet, (3, 28, 28, 1)),
          "functional": (_functional, (4, 6, 6, 2)), "many_layers": (_many_layers, (3, 24)),
          "nested": (_nested, (4, 3))}


def _model_json(folder):
    with open(os.path.join(folder, "model.json")) as f:
        return json.load(f)


def _check(folder):
    with open(os.path.join(folder, "check.json")) as f:
        c = json.load(f)
    arr = [np.asarray(c[k]["data"], dtype="float32").reshape(c[k]["shape"]) for k in ("input", "output")]
    return arr[0], arr[1]


def _walk(obj):
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


# ----------------------------------------------------------------- round trips
@pytest.mark.parametrize("name", sorted(MODELS))
def test_round_trip_gives_the_same_model(tmp_path, name):
    make, shape = MODELS[name]
    model = make()
    save_tfjs(model, tmp_path / "web")
    back = load_tfjs(tmp_path / "web")
    assert type(back) is type(model)
    assert [w.name for w in back.weights] == [w.name for w in model.weights]
    for a, b in zip(model.weights, back.weights):
        np.testing.assert_array_equal(a.data_sync(), b.data_sync())
    x = _x(shape)
    np.testing.assert_array_equal(_predict(back, x), _predict(model, x))
    assert sorted(os.listdir(tmp_path)) == ["web"]  # no temporary folder left beside it


def test_saved_on_any_backend_loads_on_the_cpu(tmp_path, backend):
    model = _dense_net()
    x = _x((5, 7))
    expected = _predict(model, x)
    save_tfjs(model, tmp_path / "m")
    with dg.use_backend("cpu"):
        np.testing.assert_allclose(_predict(load_tfjs(tmp_path / "m"), x), expected, rtol=1e-5, atol=1e-6)


def test_model_json_is_the_dialect_tfjs_reads(tmp_path):
    model = _functional()
    save_tfjs(model, tmp_path / "m")
    doc = _model_json(tmp_path / "m")
    assert doc["format"] == "layers-model"
    assert doc["generatedBy"].startswith("deepgpu ") and "convertedBy" in doc
    topo = doc["modelTopology"]
    assert topo["keras_version"].startswith("2.") and topo["backend"] == "tensorflow"
    spec = topo["model_config"]
    assert spec["class_name"] == "Model"
    first = spec["config"]["layers"][0]
    assert first["class_name"] == "InputLayer"
    assert first["config"]["batch_input_shape"] == [None, 6, 6, 2]
    for node in _walk(spec):
        assert "batch_shape" not in node and "module" not in node and "registered_name" not in node
        if "dtype" in node:
            assert node["dtype"] == "float32"
    add = next(e for e in spec["config"]["layers"] if e["class_name"] == "Add")
    assert add["inbound_nodes"] == [[["batch_normalization", 0, 0, {}], ["conv2d_1", 0, 0, {}]]]
    (group,) = doc["weightsManifest"]
    assert group["paths"] == ["group1-shard1of1.bin"]
    assert group["weights"] == [{"name": w.name, "shape": list(w.shape), "dtype": "float32"} for w in model.weights]
    names = [w["name"] for w in group["weights"]]
    assert names[:5] == ["conv2d/kernel", "batch_normalization/gamma", "batch_normalization/beta",
                         "batch_normalization/moving_mean", "batch_normalization/moving_variance"]
    assert not any(n.startswith("branches/") for n in names)


def test_nested_model_calls_are_numbered_as_tfjs_does(tmp_path):
    """TF.js counts a nested model's own graph as its node 0, so its calls are nodes 1, 2, ..."""
    save_tfjs(_nested(), tmp_path / "m")
    cfg = _model_json(tmp_path / "m")["modelTopology"]["model_config"]["config"]
    refs = [r for e in cfg["layers"] for node in e["inbound_nodes"] for r in node if r[0] == "inner"]
    assert [r[1] for r in refs] == [1]
    assert ["inner", 2, 0] in cfg["output_layers"]


def test_layouts_are_tfjs_layouts(tmp_path):
    model = _convnet()
    save_tfjs(model, tmp_path / "m")
    shapes = {w["name"]: w["shape"] for w in _model_json(tmp_path / "m")["weightsManifest"][0]["weights"]}
    assert shapes["conv2d/kernel"] == [3, 3, 1, 32]  # [kh, kw, in, out]
    assert shapes["dense/kernel"] == [4 * 4 * 64, 512]  # [in, out]


def test_shards_hold_little_endian_float32_in_manifest_order(tmp_path):
    dg.set_seed(6)
    model = _perturb(Sequential([Dense(1100, input_shape=(1000,)), Dense(3)]))  # 4.4 MB of weights
    save_tfjs(model, tmp_path / "big")
    (group,) = _model_json(tmp_path / "big")["weightsManifest"]
    assert group["paths"] == ["group1-shard1of2.bin", "group1-shard2of2.bin"]
    sizes = [os.path.getsize(tmp_path / "big" / p) for p in group["paths"]]
    assert sizes[0] == 4 * 1024 * 1024
    assert sum(sizes) == 4 * sum(w.size for w in model.weights)
    data = b"".join((tmp_path / "big" / p).read_bytes() for p in group["paths"])
    expected = b"".join(np.asarray(w.data_sync(), dtype="<f4").tobytes() for w in model.weights)
    assert data == expected
    x = _x((2, 1000))
    np.testing.assert_array_equal(_predict(load_tfjs(tmp_path / "big"), x), _predict(model, x))


def test_weights_may_span_shards(tmp_path):
    model = _dense_net()
    save_tfjs(model, tmp_path / "m", shard_bytes=100)
    paths = _model_json(tmp_path / "m")["weightsManifest"][0]["paths"]
    n = -(-4 * sum(w.size for w in model.weights) // 100)
    assert paths == [f"group1-shard{i}of{n}.bin" for i in range(1, n + 1)]
    x = _x((5, 7))
    np.testing.assert_array_equal(_predict(load_tfjs(tmp_path / "m"), x), _predict(model, x))
    with pytest.raises(ValueError, match="shard_bytes"):
        save_tfjs(model, tmp_path / "n", shard_bytes=0)


def test_leaky_relu_is_written_with_tfjs_name(tmp_path):
    reset_names()
    save_tfjs(Sequential([L.LeakyReLU(0.1, input_shape=(3,))]), tmp_path / "m")
    cfg = _model_json(tmp_path / "m")["modelTopology"]["model_config"]["config"]["layers"][1]["config"]
    assert cfg["alpha"] == pytest.approx(0.1) and "negative_slope" not in cfg
    assert load_tfjs(tmp_path / "m").layers[0].negative_slope == pytest.approx(0.1)


@pytest.mark.parametrize("layer, why", [
    (L.ReLU(negative_slope=0.1), "TF.js's ReLU has only max_value"),
    (L.ELU(alpha=0.5), "supports only alpha=1"),
    (L.Activation("hard_sigmoid"), r"Keras 2 did \(0.2 x \+ 0.5\)"),
    (L.Dense(2, activation="exponential"), "activation 'exponential', which TF.js does not have"),
    (L.Dense(2, activation="gelu_new"), "activation 'gelu_new'"),
    (L.Reshape((2, 2)), None), (L.Softmax(axis=1), "only the last axis"),
])
def test_save_refuses_what_tfjs_lacks_or_computes_differently(tmp_path, layer, why):
    model = Sequential([Dense(4, input_shape=(3,)), layer])
    if why is None:  # Reshape only sets up the Softmax-over-axis-1 case and saves fine
        save_tfjs(model, tmp_path / "ok")
        return
    with pytest.raises(ValueError, match=rf"cannot save for TF.js: layer {layer.name!r}.*{why}"):
        save_tfjs(model, tmp_path / "m")
    assert not os.path.exists(tmp_path / "m") and os.listdir(tmp_path) == []


def test_initializers_and_regularizers_are_written_as_tfjs_names_them(tmp_path):
    reset_names()
    model = Sequential([Dense(3, input_shape=(2,), kernel_initializer="lecun_normal", kernel_regularizer="l2",
                              bias_initializer="lecun_uniform", bias_regularizer="l1")])
    save_tfjs(model, tmp_path / "m")
    cfg = _model_json(tmp_path / "m")["modelTopology"]["model_config"]["config"]["layers"][1]["config"]
    assert cfg["kernel_initializer"]["class_name"] == "LeCunNormal"
    assert cfg["bias_initializer"]["class_name"] == "LeCunUniform"
    assert cfg["kernel_regularizer"] == {"class_name": "L1L2", "config": {"l1": 0.0, "l2": pytest.approx(0.01)}}
    assert cfg["bias_regularizer"] == {"class_name": "L1L2", "config": {"l1": pytest.approx(0.01), "l2": 0.0}}
    back = load_tfjs(tmp_path / "m").layers[0]
    assert type(back.kernel_initializer).__name__ == "LecunNormal"
    assert back.kernel_regularizer.l2 == pytest.approx(0.01) and back.bias_regularizer.l1 == pytest.approx(0.01)


def test_save_refuses_layers_tfjs_does_not_have(tmp_path):
    inp = Input((3,))
    model = Model(inp, L.Subtract()([Dense(2)(inp), Dense(2)(inp)]))
    with pytest.raises(ValueError, match=r"\(Subtract\) has no TF.js counterpart"):
        save_tfjs(model, tmp_path / "m")
    conv = Sequential([Conv2D(2, 1, input_shape=(3, 3, 1)), L.GlobalAveragePooling2D(keepdims=True)])
    with pytest.raises(ValueError, match="keepdims=True, which TF.js ignores"):
        save_tfjs(conv, tmp_path / "m")
    active = Sequential([Dense(2, input_shape=(3,), activity_regularizer="l2")])
    with pytest.raises(ValueError, match="activity regularizer, which TF.js refuses to run"):
        save_tfjs(active, tmp_path / "m")
    constrained = Sequential([Dense(2, input_shape=(3,), kernel_constraint=lambda w: w)])
    with pytest.raises(ValueError, match=r"weight constraint \(kernel_constraint\)"):
        save_tfjs(constrained, tmp_path / "m")
    assert os.listdir(tmp_path) == []


def test_keras2_hard_sigmoid_loads_as_tfjs_defines_it(saved):
    def use_hard_sigmoid(doc):
        doc["modelTopology"]["model_config"]["config"]["layers"][1]["config"]["activation"] = "hard_sigmoid"
    _edit_json(saved, use_hard_sigmoid)
    # TF.js and tf.keras 2: clip(0.2 x + 0.5, 0, 1), the default recurrent activation of TF.js's LSTM
    assert load_tfjs(saved).layers[0].activation is dg.activations.tfjs_hard_sigmoid
    _edit_json(saved, lambda doc: doc["modelTopology"].update(keras_version="3.5.0"))
    assert load_tfjs(saved).layers[0].activation is dg.activations.hard_sigmoid  # Keras 3's, as deepgpu's


# -------------------------------------------------------------- atomic writes
def test_save_replaces_a_previous_export(tmp_path):
    save_tfjs(_convnet(), tmp_path / "m")  # two shards' worth is not needed: any old export
    model = _dense_net()
    save_tfjs(model, tmp_path / "m")
    assert sorted(os.listdir(tmp_path / "m")) == ["group1-shard1of1.bin", "model.json"]
    x = _x((5, 7))
    np.testing.assert_array_equal(_predict(load_tfjs(tmp_path / "m"), x), _predict(model, x))
    assert sorted(os.listdir(tmp_path)) == ["m"]


def test_a_failed_save_keeps_the_old_export(tmp_path, monkeypatch):
    old = _dense_net()
    save_tfjs(old, tmp_path / "m")
    before = {p: (tmp_path / "m" / p).read_bytes() for p in os.listdir(tmp_path / "m")}
    calls = []

    def failing(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        with open(path, "wb") as f:
            f.write(data)

    monkeypatch.setattr(tfjs_mod, "_write_file", failing)
    with pytest.raises(OSError, match="disk full"):
        save_tfjs(_convnet(), tmp_path / "m")
    assert {p: (tmp_path / "m" / p).read_bytes() for p in os.listdir(tmp_path / "m")} == before
    assert sorted(os.listdir(tmp_path)) == ["m"]


def test_save_refuses_to_replace_other_things(tmp_path):
    model = _dense_net()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="todo.txt"):
        save_tfjs(model, tmp_path / "notes")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        save_tfjs(model, tmp_path / "afile")
    with pytest.raises(ValueError, match="not built"):
        save_tfjs(Sequential([Dense(2)]), tmp_path / "unbuilt")
    assert sorted(os.listdir(tmp_path)) == ["afile", "notes"]


def test_save_creates_missing_parent_folders(tmp_path):
    save_tfjs(_dense_net(), tmp_path / "web" / "models" / "m")
    assert sorted(os.listdir(tmp_path / "web" / "models")) == ["m"]
    assert load_tfjs(tmp_path / "web" / "models" / "m").count_params() == _dense_net().count_params()


def _can_exchange(tmp_path):
    from deepgpu.io import _atomic
    a, b = tmp_path / "probe_a", tmp_path / "probe_b"
    a.mkdir(), b.mkdir()
    try:
        return _atomic._exchange(str(a), str(b))
    finally:
        a.rmdir(), b.rmdir()


def test_the_folder_is_old_or_new_at_every_instant(tmp_path, monkeypatch):
    """No step of a save that replaces an export leaves the target missing (renameat2 exchange)."""
    if not _can_exchange(tmp_path):
        pytest.skip("this file system cannot exchange two folders; the fallback is tested below")
    old, new = _dense_net(), _convnet()
    target = tmp_path / "m"
    save_tfjs(old, target)
    seen = []
    real_rename, real_replace = os.rename, os.replace

    def watch(real):
        def run(a, b, *args, **kw):
            seen.append((os.fspath(a), os.path.isfile(target / "model.json")))
            return real(a, b, *args, **kw)
        return run

    monkeypatch.setattr(os, "rename", watch(real_rename))
    monkeypatch.setattr(os, "replace", watch(real_replace))
    save_tfjs(new, target)
    assert all(present for _, present in seen), seen
    x = _x((2, 28, 28, 1))
    np.testing.assert_array_equal(_predict(load_tfjs(target), x), _predict(new, x))
    assert sorted(os.listdir(tmp_path)) == ["m"]


def test_a_save_killed_between_two_renames_is_undone_by_the_next_load_or_save(tmp_path, monkeypatch):
    """Where folders cannot be exchanged the old one is moved aside first; a process killed right
    then leaves no model folder, and load_tfjs (or the next save) puts the old one back."""
    from deepgpu.io import _atomic

    old = _dense_net()
    target = tmp_path / "m"
    save_tfjs(old, target)
    before = {p: (target / p).read_bytes() for p in os.listdir(target)}
    # What the dead process left: the old export aside, the new one complete but not in place.
    os.rename(target, tmp_path / ".deepgpu-m.0123abcd.old")
    save_tfjs(_convnet(), tmp_path / "elsewhere")
    os.rename(tmp_path / "elsewhere", tmp_path / ".deepgpu-m.0123abcd.tmp")
    x = _x((5, 7))
    np.testing.assert_array_equal(_predict(load_tfjs(target), x), _predict(old, x))
    assert {p: (target / p).read_bytes() for p in os.listdir(target)} == before
    # The next save removes the rest, and with the exchange unavailable still ends old-or-new.
    monkeypatch.setattr(_atomic, "_exchange", lambda a, b: False)
    save_tfjs(_convnet(), target)
    assert sorted(os.listdir(tmp_path)) == ["m"]
    os.rename(target, tmp_path / ".deepgpu-m.4567cdef.old")
    save_tfjs(old, target)  # the next save, too, recovers first and then replaces
    np.testing.assert_array_equal(_predict(load_tfjs(target), x), _predict(old, x))
    assert sorted(os.listdir(tmp_path)) == ["m"]


def test_a_running_save_s_temporary_is_not_removed(tmp_path):
    """Only temporaries no process holds (flock) are litter: a concurrent save's are left alone."""
    from deepgpu.io import _atomic

    target = str(tmp_path / "m")
    tmp, fd = _atomic.create_temp(target, folder=True)
    try:
        save_tfjs(_dense_net(), target)
        assert os.path.isdir(tmp)
    finally:
        _atomic.discard(tmp, fd)
    assert sorted(os.listdir(tmp_path)) == ["m"]


# -------------------------------------------------------------- bad folders
@pytest.fixture
def saved(tmp_path):
    save_tfjs(_dense_net(), tmp_path / "m")
    return tmp_path / "m"


def _edit_json(folder, fn):
    doc = _model_json(folder)
    fn(doc)
    (folder / "model.json").write_text(json.dumps(doc))


def test_missing_folder_or_model_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_tfjs(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match="no model.json"):
        load_tfjs(tmp_path / "empty")


def test_truncated_model_json(saved):
    text = (saved / "model.json").read_text()
    (saved / "model.json").write_text(text[: len(text) // 2])
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_tfjs(saved)


def test_missing_shard(saved):
    os.remove(saved / "group1-shard1of1.bin")
    with pytest.raises(ModelFileError, match="group1-shard1of1.bin.*missing"):
        load_tfjs(saved)


def test_shard_of_the_wrong_size(saved):
    data = (saved / "group1-shard1of1.bin").read_bytes()
    (saved / "group1-shard1of1.bin").write_bytes(data[:-4])
    with pytest.raises(ModelFileError, match=rf"hold {len(data) - 4} bytes.*need {len(data)}"):
        load_tfjs(saved)


def test_shard_outside_the_folder_is_refused(saved):
    _edit_json(saved, lambda doc: doc["weightsManifest"][0].update(paths=["../m/group1-shard1of1.bin"]))
    load_tfjs(saved)  # still inside
    _edit_json(saved, lambda doc: doc["weightsManifest"][0].update(paths=["../../etc/passwd"]))
    with pytest.raises(ModelFileError, match="lies outside the model's folder"):
        load_tfjs(saved)


def test_quantized_weights_are_dequantized(saved):
    """tensorflowjs_converter --quantize_uint8 / _uint16 / _float16: value = q * scale + min, or float16."""
    doc = _model_json(saved)
    entries = doc["weightsManifest"][0]["weights"]
    values = [np.asarray(v, dtype="float32") for v in load_tfjs(saved).get_weights()]
    rng = np.random.default_rng(0)
    chunks, expected = [], []
    for i, (entry, v) in enumerate(zip(entries, values)):
        kind = ("uint8", "uint16", "float16")[i % 3]
        if kind == "float16":
            q = v.astype("<f2")
            expected.append(q.astype("float32"))
            entry["quantization"] = {"dtype": "float16"}
        else:
            top = 255 if kind == "uint8" else 65535
            lo, scale = float(v.min()), float(v.max() - v.min()) / top
            q = rng.integers(0, top + 1, v.shape).astype("<u1" if kind == "uint8" else "<u2")
            # tfjs-core's decodeWeights: the affine map in double precision, stored as float32.
            expected.append((q.astype("float64") * scale + lo).astype("float32"))
            entry["quantization"] = {"dtype": kind, "min": lo, "scale": scale}
        chunks.append(q.tobytes())
    (saved / "model.json").write_text(json.dumps(doc))
    (saved / "group1-shard1of1.bin").write_bytes(b"".join(chunks))
    for got, want in zip(load_tfjs(saved).get_weights(), expected):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bad, message", [
    ({"dtype": "uint8", "min": -1.0}, "needs finite numbers scale and min"),
    ({"dtype": "uint16", "scale": "0.1", "min": 0.0}, "needs finite numbers scale and min"),
    ({"dtype": "int4", "scale": 0.1, "min": 0.0}, "quantized as 'int4'; only uint8, uint16 and float16"),
    ("uint8", "must be an object"),
])
def test_bad_quantization_is_refused_naming_file_and_weight(saved, bad, message):
    def spoil(doc):
        doc["weightsManifest"][0]["weights"][1]["quantization"] = bad
    _edit_json(saved, spoil)
    name = _model_json(saved)["weightsManifest"][0]["weights"][1]["name"]
    with pytest.raises(ModelFileError, match=rf"model\.json.*weight {name!r}: .*{message}"):
        load_tfjs(saved)


@pytest.mark.parametrize("kind", ["uint8", "uint16", "float16"])
@pytest.mark.parametrize("name", ["convnet", "functional"])
def test_quantized_save_round_trips_within_the_quantization_error(tmp_path, kind, name):
    make, shape = MODELS[name]
    model = make()
    save_tfjs(model, tmp_path / "web", quantization=kind)
    entries = _model_json(tmp_path / "web")["weightsManifest"][0]["weights"]
    assert all(e["dtype"] == "float32" and e["quantization"]["dtype"] == kind for e in entries)
    itemsize = 1 if kind == "uint8" else 2
    assert os.path.getsize(tmp_path / "web" / "group1-shard1of1.bin") == itemsize * sum(
        int(np.prod(e["shape"])) for e in entries)
    back = load_tfjs(tmp_path / "web")
    for w, b, e in zip(model.weights, back.weights, entries):
        a, got = np.asarray(w.data_sync()), np.asarray(b.data_sync())
        if kind == "float16":
            np.testing.assert_array_equal(got, a.astype("float16").astype("float32"))
            continue
        q = e["quantization"]
        # Half a step of rounding (and float32 storage of the result).
        assert np.abs(got - a).max() <= q["scale"] / 2 * (1 + 1e-5) + 1e-7 * np.abs(a).max()
        if a.min() <= 0 <= a.max() and a.min() < a.max():
            assert np.any(got == 0) or not np.any(a == 0)  # 0 is a stored value: zeros stay zeros
            np.testing.assert_array_equal(got[a == 0], 0)
    x = _x(shape)
    tol = {"uint8": 0.1, "uint16": 1e-3, "float16": 1e-2}[kind]
    assert np.abs(_predict(back, x) - _predict(model, x)).max() < tol


def test_quantized_constant_tensor_and_bad_option(tmp_path):
    model = MODELS["dense"][0]()
    bias = model.weights[1]
    bias.assign(np.full(bias.shape, 0.25, "float32"))
    save_tfjs(model, tmp_path / "web", quantization="uint8")
    e = _model_json(tmp_path / "web")["weightsManifest"][0]["weights"][1]
    assert e["quantization"] == {"dtype": "uint8", "scale": 1.0, "min": 0.25}
    np.testing.assert_array_equal(load_tfjs(tmp_path / "web").weights[1].data_sync(), bias.data_sync())
    with pytest.raises(ValueError, match="quantization must be None, 'uint8', 'uint16' or 'float16', got 'int8'"):
        save_tfjs(model, tmp_path / "other", quantization="int8")
    assert not os.path.exists(tmp_path / "other")


def test_unknown_layer_class(saved):
    def rename(doc):
        doc["modelTopology"]["model_config"]["config"]["layers"][1]["class_name"] = "FancyDense"
    _edit_json(saved, rename)
    with pytest.raises(ValueError, match="unknown layer class 'FancyDense'"):
        load_tfjs(saved)

    class FancyDense(Dense):
        pass
    model = load_tfjs(saved, custom_objects={"FancyDense": FancyDense})
    assert type(model.layers[0]) is FancyDense


def test_weights_that_do_not_fit(saved):
    def widen(doc):
        doc["modelTopology"]["model_config"]["config"]["layers"][1]["config"]["units"] = 17
    original = _model_json(saved)
    _edit_json(saved, widen)
    with pytest.raises(ModelFileError, match=r"'dense/kernel' has shape \(7, 16\).*has \(7, 17\)"):
        load_tfjs(saved)

    def drop_last_layer(doc):
        doc["modelTopology"]["model_config"]["config"]["layers"].pop()
    (saved / "model.json").write_text(json.dumps(original))
    _edit_json(saved, drop_last_layer)
    with pytest.raises(ModelFileError, match=r"no place for: \['dense_2/kernel', 'dense_2/bias'\]"):
        load_tfjs(saved)

    def rename_weight(doc):
        doc["weightsManifest"][0]["weights"][0]["name"] = "other/kernel"
    (saved / "model.json").write_text(json.dumps(original))
    _edit_json(saved, rename_weight)
    with pytest.raises(ModelFileError, match=r"'dense/kernel' \(7, 16\) has no stored value"):
        load_tfjs(saved)


def test_graph_models_and_other_formats_are_refused(saved):
    _edit_json(saved, lambda doc: doc.update(format="graph-model"))
    with pytest.raises(ModelFileError, match="graph model"):
        load_tfjs(saved)
    _edit_json(saved, lambda doc: (doc.update(format="layers-model"), doc.pop("modelTopology")))
    with pytest.raises(ModelFileError, match="no modelTopology"):
        load_tfjs(saved)


def test_model_json_path_is_accepted(saved):
    model = load_tfjs(saved / "model.json")
    assert [w.name for w in model.weights][0] == "dense/kernel"


# ------------------------------------------------- files written by others
@pytest.mark.parametrize("name", ["tfjs_functional", "keras3_functional", "keras3_sequential"])
def test_fixtures_written_elsewhere_load_and_predict_the_same(name):
    folder = os.path.join(FIXTURES, name)
    model = load_tfjs(folder)
    x, y = _check(folder)
    np.testing.assert_allclose(_predict(model, x), y, rtol=0, atol=1e-5)


def test_tfjs_fixture_is_tfjs_own_dialect():
    """The TF.js-written fixture really differs from what deepgpu writes, so the test above means something."""
    doc = _model_json(os.path.join(FIXTURES, "tfjs_functional"))
    assert "model_config" not in doc["modelTopology"] and doc["modelTopology"]["class_name"] == "Model"
    (group,) = doc["weightsManifest"]
    assert group["paths"] == ["./weights.bin"]
    names = [w["name"] for w in group["weights"]]
    assert names[-2:] == ["batch_normalization_BatchNormalization1/moving_mean",
                          "batch_normalization_BatchNormalization1/moving_variance"]  # trainable first


def test_keras3_fixture_is_keras3_dialect_and_resaves_as_tfkeras2(tmp_path):
    folder = os.path.join(FIXTURES, "keras3_sequential")
    doc = _model_json(folder)
    layers = doc["modelTopology"]["model_config"]["config"]["layers"]
    assert "batch_shape" in layers[0]["config"]
    assert isinstance(layers[1]["config"]["dtype"], dict)
    assert doc["weightsManifest"][0]["weights"][0]["name"] == "k3_sequential/dense_1/kernel"
    model = load_tfjs(folder)
    save_tfjs(model, tmp_path / "fixed")
    fixed = _model_json(tmp_path / "fixed")
    layers = fixed["modelTopology"]["model_config"]["config"]["layers"]
    assert layers[0]["config"]["batch_input_shape"] == [None, 6]
    assert all(isinstance(e["config"]["dtype"], str) for e in layers)
    assert fixed["weightsManifest"][0]["weights"][0]["name"] == "dense_1/kernel"


# ------------------------------------------------------------ the real TF.js
def _node_or_skip():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed, so the real @tensorflow/tfjs cannot run")
    if not os.path.isdir(os.path.join(JS_DIR, "node_modules", "@tensorflow", "tfjs")):
        pytest.skip("@tensorflow/tfjs is not installed: run (cd tests/js && npm ci)")
    return node


def _run_node(*args):
    node = _node_or_skip()
    proc = subprocess.run([node, os.path.join(JS_DIR, "tfjs_check.js"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"tfjs_check.js {args[0]} failed:\n{proc.stderr[-4000:]}")


def _array_json(path, a):
    path.write_text(json.dumps({"shape": list(a.shape), "data": a.ravel().tolist()}))


NODE_CASES = sorted(MODELS) + ["keras3_functional"]


@pytest.fixture(scope="module")
def tfjs_predictions(tmp_path_factory):
    """{case: (deepgpu's prediction, TF.js's)} for models deepgpu saved, all run in one Node process."""
    _node_or_skip()
    root = tmp_path_factory.mktemp("to_tfjs")
    args, expected = [], {}
    for name in NODE_CASES:
        if name in MODELS:
            make, shape = MODELS[name]
            model, x = make(), _x(shape, seed=9)
        else:  # a Keras 3 conversion, which TF.js cannot read as it is, passed through deepgpu
            model = load_tfjs(os.path.join(FIXTURES, name))
            x, _ = _check(os.path.join(FIXTURES, name))
        save_tfjs(model, root / name)
        _array_json(root / f"{name}.x.json", x)
        args += [root / name, root / f"{name}.x.json", root / f"{name}.y.json"]
        expected[name] = _predict(model, x)
    _run_node("predict", *args)
    out = {}
    for name in NODE_CASES:
        got = json.loads((root / f"{name}.y.json").read_text())
        out[name] = (expected[name], _from_json(got, len(expected[name])))
    return out


@pytest.mark.parametrize("name", NODE_CASES)
def test_real_tfjs_predicts_what_deepgpu_predicts(tfjs_predictions, name):
    y, y_js = tfjs_predictions[name]
    assert y_js.shape == y.shape
    assert np.abs(y_js - y).max() < 1e-5


def test_real_tfjs_reads_quantized_weights_deepgpu_writes(tmp_path):
    """TF.js dequantizes what save_tfjs(quantization=...) writes exactly as load_tfjs does."""
    _node_or_skip()
    make, shape = MODELS["functional"]
    model, x = make(), _x(shape, seed=9)
    _array_json(tmp_path / "x.json", x)
    kinds, args = ("uint8", "uint16", "float16"), []
    for kind in kinds:
        save_tfjs(model, tmp_path / kind, quantization=kind)
        args += [tmp_path / kind, tmp_path / "x.json", tmp_path / f"{kind}.y.json"]
    _run_node("predict", *args)
    y = _predict(model, x)
    for kind in kinds:
        y_back = _predict(load_tfjs(tmp_path / kind), x)
        y_js = _from_json(json.loads((tmp_path / f"{kind}.y.json").read_text()), len(y))
        assert y_js.shape == y.shape
        assert np.abs(y_js - y_back).max() < 1e-5, kind
        assert np.abs(y_js - y).max() < {"uint8": 0.1, "uint16": 1e-3, "float16": 1e-2}[kind], kind


def test_real_tfjs_refuses_keras3_conversions_as_they_are(tmp_path):
    """The breakage deepgpu works around: TF.js cannot read Keras 3's batch_shape."""
    name = "keras3_functional"
    x, _ = _check(os.path.join(FIXTURES, name))
    _array_json(tmp_path / "x.json", x)
    with pytest.raises(AssertionError, match="batchInputShape"):
        _run_node("predict", os.path.join(FIXTURES, name), tmp_path / "x.json", tmp_path / "y.json")


@pytest.fixture(scope="module")
def tfjs_built(tmp_path_factory):
    out = tmp_path_factory.mktemp("tfjs_built")
    _run_node("build", out)
    return out


@pytest.mark.parametrize("name", ["dense", "conv", "functional", "nested"])
def test_deepgpu_predicts_what_real_tfjs_predicts(tfjs_built, name):
    folder = tfjs_built / name
    model = load_tfjs(folder)
    x, y_js = _check(folder)
    y = _predict(model, x)
    assert y.shape == y_js.shape
    assert np.abs(y - y_js).max() < 1e-5
