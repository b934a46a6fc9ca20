"""Legacy .h5 files of the Keras 2 releases (issue 17): real tf_keras 2.21 files and files rebuilt as Keras
2.0.8 (TensorFlow and Theano), 2.1.6, 2.2.0, 2.2.4 and tf.keras 1.x (2.2.4-tf) wrote them
(tests/fixtures/keras/make_keras2_fixtures.py) load with tf_keras's predictions; what cannot load fails naming the layer and the file."""
import glob
import json
import os
import shutil

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from deepgpu.io import KerasFileError, load_keras  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "keras")
FILES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(FIXTURES, "k2_*.h5")))


def _case(name):
    """(release, model) of a fixture file name ``k2_<release>_<model>.h5``."""
    release, model = name[len("k2_"):-len(".h5")].split("_", 1)
    return release, model


def _expected(model):
    with np.load(os.path.join(FIXTURES, f"k2_{model}.npz")) as z:
        xs = [z[f"x{i}"] for i in range(8) if f"x{i}" in z]
        return (xs if len(xs) > 1 else xs[0]), z["y"]


def _predict(model, x):
    return model.predict(x, verbose=0).data_sync()


def test_the_sweep_covers_every_release_and_model():
    cases = {_case(n) for n in FILES}
    releases = {r for r, _ in cases}
    assert {"2.0.8", "2.0.8-theano", "2.1.6", "2.2.0", "2.2.4", "2.2.4-tf", "tfk2.21"} <= releases
    assert {m for r, m in cases if r == "tfk2.21"} == {
        "convnet", "two_input", "rnn", "rnn2", "conv_misc", "nested", "nested_rnn", "mobilenet", "transfer", "cudnn",
        "zoo"}


@pytest.mark.parametrize("name", FILES)
def test_keras2_h5_predicts_as_tf_keras(name):
    release, model_name = _case(name)
    path = os.path.join(FIXTURES, name)
    with h5py.File(path, "r") as f:
        version = f.attrs["keras_version"]
        version = version.decode() if isinstance(version, bytes) else str(version)
        config = json.loads(f.attrs["model_config"])
    assert version.startswith(release.split("-")[0].replace("tfk", ""))
    if release in ("2.0.8", "2.0.8-theano", "2.1.6", "2.2.0") and config["class_name"] == "Sequential":
        assert isinstance(config["config"], list)  # the bare-list dialect is what this file tests
    x, y = _expected(model_name)
    model = load_keras(path)
    got = _predict(model, x)
    assert got.shape == y.shape
    assert np.abs(got - y).max() < 1e-5


def _copy(tmp_path, name):
    dst = tmp_path / name
    shutil.copy(os.path.join(FIXTURES, name), dst)
    return dst


def _edit_config(path, edit):
    with h5py.File(path, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        edit(cfg)
        f.attrs["model_config"] = np.bytes_(json.dumps(cfg).encode())


def _layers(cfg):
    c = cfg["config"]
    return c if isinstance(c, list) else c["layers"]


def test_theano_kernels_are_flipped_and_keras2_hard_sigmoid_is_kept(tmp_path):
    x, y = _expected("convnet")
    p = _copy(tmp_path, "k2_2.0.8-theano_convnet.h5")
    with h5py.File(p, "r+") as f:
        f.attrs["backend"] = np.bytes_(b"tensorflow")  # the same kernels, read as TensorFlow's
    assert np.abs(_predict(load_keras(p), x) - y).max() > 1e-3
    rnn = load_keras(os.path.join(FIXTURES, "k2_2.0.8_rnn.h5"))
    lstm, gru = rnn.layers[1], rnn.layers[2]
    assert lstm.get_config()["recurrent_activation"] == "tfjs_hard_sigmoid"  # clip(0.2 x + 0.5), Keras 2's
    assert gru.get_config()["reset_after"] is False


def test_nested_model_and_split_names():
    nested = load_keras(os.path.join(FIXTURES, "k2_2.0.8_nested.h5"))
    inner = nested.get_layer("sequential_1")
    assert [type(layer).__name__ for layer in inner.layers] == ["Dense", "BatchNormalization"]
    with h5py.File(os.path.join(FIXTURES, "k2_2.1.6_mobilenet.h5"), "r") as f:
        assert "layer_names" not in f["model_weights"].attrs and "layer_names1" in f["model_weights"].attrs
    mobile = load_keras(os.path.join(FIXTURES, "k2_2.1.6_mobilenet.h5"))
    assert "DepthwiseConv2D" in [type(layer).__name__ for layer in mobile.layers]


def _lambda(cfg):
    layers = _layers(cfg)
    layers[1] = {"class_name": "Lambda", "config": {
        "name": "lambda_1", "trainable": True, "function": ["4wEAAAAAAAAAAQAAAAIAAABDAAAAcwgAAAB8AGQBFABTACkCTg==",
                                                           None, None],
        "function_type": "lambda", "output_shape": None, "output_shape_type": "raw", "arguments": {}}}


def _merge(cfg):
    _layers(cfg)[1] = {"class_name": "Merge", "config": {"name": "merge_1", "mode": "concat", "concat_axis": -1}}


def _cudnn(cfg):
    _layers(cfg)[1]["class_name"] = "CuDNNLSTM"


def _channels_first(cfg):
    _layers(cfg)[0]["config"]["data_format"] = "channels_first"


def _constraint(cfg):
    _layers(cfg)[-1]["config"]["kernel_constraint"] = {"class_name": "NoSuchConstraint", "config": {}}


def _keras1_dense(cfg):
    dense = _layers(cfg)[-1]["config"]
    dense["output_dim"] = dense.pop("units")
    dense["init"] = "glorot_uniform"


@pytest.mark.parametrize("fixture,edit,match", [
    ("k2_2.0.8_convnet.h5", _lambda, r"'lambda_1' \(Lambda\).*bytecode"),
    ("k2_2.0.8_convnet.h5", _merge, r"'merge_1' \(Merge\) is a Keras 1 layer"),
    ("k2_2.0.8_rnn.h5", _cudnn, r"'lstm_1'.*are not those of a cuDNN layer with 4 gates"),
    ("k2_2.2.4_convnet.h5", _channels_first, r"'conv2d_1' \(Conv2D\).*channels_first"),
    ("k2_2.2.4_convnet.h5", _constraint, r"'dense_1' \(Dense\).*constraint"),
    ("k2_2.0.8_convnet.h5", _keras1_dense, r"'dense_1' \(Dense\) is a Keras 1 layer \(options init\)"),
])
def test_what_cannot_load_is_refused_by_name(tmp_path, fixture, edit, match):
    p = _copy(tmp_path, fixture)
    _edit_config(p, edit)
    with pytest.raises(ValueError, match=match) as info:
        load_keras(p)
    assert fixture in str(info.value)  # the file is named too


def test_keras1_file_is_refused(tmp_path):
    p = _copy(tmp_path, "k2_2.0.8_convnet.h5")
    with h5py.File(p, "r+") as f:
        f.attrs["keras_version"] = np.bytes_(b"1.2.2")
    with pytest.raises(KerasFileError, match=r"k2_2.0.8_convnet.h5.*Keras 1.2.2 \(Keras 1\)"):
        load_keras(p)


def _rename_weights(path, group, rename):
    """Give the weights under model_weights/<group> new names (``rename(index, name)``), as other writers did."""
    with h5py.File(path, "r+") as f:
        g = f[f"model_weights/{group}"]
        old = [n.decode() for n in g.attrs["weight_names"]]
        data = [g[n][()] for n in old]
        for n in old:
            del g[n]
        new = [rename(i, n) for i, n in enumerate(old)]
        g.attrs["weight_names"] = np.array([n.encode() for n in new])
        for n, a in zip(new, data):
            g.create_dataset(n, data=a)


@pytest.mark.parametrize("rename", [
    lambda i, n: f"model_1/{n}",  # with the outer model's name scope
    lambda i, n: n.split(":")[0],  # without ":0" (Theano, CNTK)
    lambda i, n: f"param_{i}",  # Keras 2.0's name for a weight without one: matched in Keras's order
])
def test_nested_weight_names_of_other_writers(tmp_path, rename):
    p = _copy(tmp_path, "k2_2.2.4_nested_rnn.h5")
    _rename_weights(p, "sequential_1", rename)
    x, y = _expected("nested_rnn")
    assert np.abs(_predict(load_keras(p), x) - y).max() < 1e-5


def test_nested_weights_that_fit_neither_by_name_nor_order(tmp_path):
    p = _copy(tmp_path, "k2_2.2.4_nested.h5")
    _rename_weights(p, "sequential_1", lambda i, n: f"param_{i}")
    with h5py.File(p, "r+") as f:  # the kernel and the bias listed the other way round
        g = f["model_weights/sequential_1"]
        names = [n.decode() for n in g.attrs["weight_names"]]
        g.attrs["weight_names"] = np.array([n.encode() for n in [names[1], names[0]] + names[2:]])
    with pytest.raises(KerasFileError, match=r"k2_2.2.4_nested.h5.*model_weights/sequential_1.*neither by name "
                                             r"nor in order"):
        load_keras(p)
