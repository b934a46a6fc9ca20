"""Keras files: fixtures written by real Keras load with Keras's predictions; save_keras round trips
(through Keras itself where it is installed); bad files fail with errors naming the problem."""
import json
import os
import zipfile

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")
# Keras's NumPy backend under NumPy 2 warns from its own code; not deepgpu's concern.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:keras")

import deepgpu as dg  # noqa: E402
from deepgpu import Input, Model, Sequential, zoo  # noqa: E402
from deepgpu import layers as L  # noqa: E402
from deepgpu.io import KerasFileError, load_keras, save_keras  # noqa: E402
from deepgpu.models.serialization import serialize_layer  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "keras")
NAMES = ("dense", "convnet", "functional")


def _predict(model, x):
    return model.predict(x, verbose=0).data_sync()


def _randomize(model, seed=0):
    """Weights away from their initial values (BatchNormalization variances kept positive)."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if "variance" in w.name:
            w.assign(rng.uniform(0.5, 2.0, w.shape).astype("float32"))
        else:
            w.assign(rng.normal(0.0, 0.4, w.shape).astype("float32"))
    return model


def _many_layers():
    """A functional model using most layer kinds that have a Keras class."""
    inp = Input((10, 10, 3), name="pixels")
    a = L.Conv2D(4, 3, padding="same", activation="relu", kernel_regularizer="l2")(inp)
    b = L.Conv2DTranspose(4, 3, strides=2, padding="same")(a)
    b = L.MaxPooling2D(2)(b)
    c = L.Concatenate()([a, b, inp])
    c = L.Cropping2D(((1, 0), (0, 1)))(c)
    c = L.ZeroPadding2D(1)(c)
    c = L.UpSampling2D(2)(c)
    c = L.AveragePooling2D(2)(c)
    d = L.BatchNormalization(momentum=0.9)(c)
    d = L.ReLU(max_value=6.0)(L.ELU()(L.LeakyReLU(0.2)(d)))
    e, f = L.GlobalMaxPooling2D()(d), L.GlobalAveragePooling2D()(d)
    g, h = L.Subtract()([e, f]), L.Multiply()([e, f])
    k = L.Average()([L.Maximum()([g, h]), L.Minimum()([g, h])])
    k = L.Dense(12, activation="gelu")(k)
    k = L.Flatten()(L.Permute((2, 1))(L.Reshape((3, 4))(k)))
    k = L.Flatten()(L.RepeatVector(2)(k))
    k = L.Activation("swish")(L.Dropout(0.2)(k))
    out = L.Softmax()(L.Dense(5)(k))
    return Model(inp, out, name="many")


def _fixture(name):
    with np.load(os.path.join(FIXTURES, f"{name}.npz"), allow_pickle=False) as z:
        return z["x"], z["y"]


# ----------------------------------------------------------------- fixtures from real Keras
@pytest.mark.parametrize("ext", ["keras", "h5"])
@pytest.mark.parametrize("name", NAMES)
def test_keras_fixture_predicts_as_keras(backend, name, ext):
    x, y = _fixture(name)
    model = load_keras(os.path.join(FIXTURES, f"{name}.{ext}"))
    got = _predict(model, x)
    assert got.shape == y.shape
    assert np.abs(got - y).max() < 1e-5


def test_keras_fixture_architecture_and_weights():
    model = load_keras(os.path.join(FIXTURES, "functional.keras"))
    kinds = [type(layer).__name__ for layer in model.layers]
    for kind in ("InputLayer", "Conv2D", "BatchNormalization", "ReLU", "Add", "Concatenate", "ZeroPadding2D",
                 "Activation", "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Dense"):
        assert kind in kinds
    assert model.layers[0].name == "image"
    bn = next(layer for layer in model.layers if isinstance(layer, L.BatchNormalization))
    # The fixture's statistics are random: not the initial zeros and ones.
    assert np.abs(bn.moving_mean.data_sync()).min() > 0
    assert not np.allclose(bn.moving_variance.data_sync(), 1.0)
    conv = load_keras(os.path.join(FIXTURES, "convnet.h5"))
    assert [type(layer).__name__ for layer in conv.layers] == [
        "Conv2D", "MaxPooling2D", "Conv2D", "BatchNormalization", "LeakyReLU", "AveragePooling2D", "Flatten",
        "Dense"]
    assert conv.layers[2].strides == (1, 2) and conv.layers[2].kernel_size == (3, 2)


# ------------------------------------------------------------------------- writing
def _roundtrip_models():
    return {"convnet": (lambda: zoo.convnet(), (28, 28, 1)),
            "resnet": (lambda: zoo.resnet(input_shape=(12, 12, 3), widths=(4, 8, 8)), (12, 12, 3)),
            "many": (_many_layers, (10, 10, 3))}


@pytest.mark.parametrize("name", ["convnet", "resnet", "many"])
def test_save_keras_load_keras_roundtrip(tmp_path, name):
    build, shape = _roundtrip_models()[name]
    model = _randomize(build())
    x = np.random.default_rng(1).normal(size=(3,) + shape).astype("float32")
    path = tmp_path / "m.keras"
    save_keras(model, path)
    back = load_keras(path)
    assert [layer.name for layer in back.layers] == [layer.name for layer in model.layers]
    assert np.abs(_predict(back, x) - _predict(model, x)).max() == 0.0


def test_save_keras_writes_keras3_dialect_and_layout(tmp_path):
    model = _randomize(_many_layers())
    save_keras(model, tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        assert set(z.namelist()) == {"metadata.json", "config.json", "model.weights.h5"}
        cfg = json.loads(z.read("config.json"))
        h5 = z.read("model.weights.h5")
    assert cfg["class_name"] == "Functional" and cfg["registered_name"] == "Functional"
    entries = cfg["config"]["layers"]

    def first(cls):
        return next(e for e in entries if e["class_name"] == cls)
    assert first("InputLayer")["config"]["batch_shape"] == [None, 10, 10, 3]
    conv = first("Conv2D")
    assert conv["module"] == "keras.layers"
    assert conv["config"]["dtype"]["class_name"] == "DTypePolicy"
    assert conv["config"]["kernel_regularizer"]["class_name"] == "L2"
    arg = conv["inbound_nodes"][0]["args"][0]
    assert arg["class_name"] == "__keras_tensor__" and arg["config"]["keras_history"] == ["pixels", 0, 0]
    concat_args = first("Concatenate")["inbound_nodes"][0]["args"][0]
    assert isinstance(concat_args, list) and len(concat_args) == 3
    assert cfg["config"]["input_layers"] == ["pixels", 0, 0]
    import io
    with h5py.File(io.BytesIO(h5), "r") as f:
        conv_layer = model.get_layer(conv["name"])
        np.testing.assert_array_equal(f["layers/conv2d/vars/0"][()], conv_layer.kernel.data_sync())
        np.testing.assert_array_equal(f["layers/conv2d/vars/1"][()], conv_layer.bias.data_sync())
        # Keras names groups by class in model.layers order, whatever the layers' names.
        dense = [layer for layer in model.layers if isinstance(layer, L.Dense)]
        assert f["layers/dense/vars"].attrs["name"] == dense[0].name
        assert f["layers/dense_1/vars"].attrs["name"] == dense[1].name
        np.testing.assert_array_equal(f["layers/dense_1/vars/0"][()], dense[1].kernel.data_sync())
        assert len(f["layers/batch_normalization/vars"]) == 4
        assert f["layers/input_layer/vars"].attrs["name"] == "pixels"
        assert f["vars"].attrs["name"] == "many"


def test_save_keras_sequential_has_input_layer(tmp_path):
    model = _randomize(Sequential([L.Dense(4, activation="relu", input_shape=(3,)), L.Dense(2)], name="s"))
    save_keras(model, tmp_path / "s.keras")
    with zipfile.ZipFile(tmp_path / "s.keras") as z:
        cfg = json.loads(z.read("config.json"))
        with h5py.File(z.open("model.weights.h5"), "r") as f:
            assert sorted(f["layers"]) == ["dense", "dense_1"]  # a Sequential's InputLayer has no group
    first = cfg["config"]["layers"][0]
    assert first["class_name"] == "InputLayer" and first["config"]["batch_shape"] == [None, 3]
    x = np.ones((2, 3), "float32")
    np.testing.assert_array_equal(_predict(load_keras(tmp_path / "s.keras"), x), _predict(model, x))


def test_save_keras_refuses_what_keras_cannot_read(tmp_path):
    inp = Input((4,))
    lam = Model(inp, L.Lambda(lambda t: t * 2.0, name="double")(inp))
    target = tmp_path / "m.keras"
    target.write_bytes(b"previous")
    with pytest.raises(ValueError, match="'double' \\(Lambda\\)"):
        save_keras(lam, target)
    assert target.read_bytes() == b"previous"  # nothing half-written
    with pytest.raises(ValueError, match="gelu_new"):
        save_keras(Sequential([L.Dense(2, activation="gelu_new", input_shape=(3,))]), target)
    with pytest.raises(ValueError, match="not built"):
        save_keras(Sequential([L.Dense(2)]), target)

    class Sub(Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(2)

        def call(self, x, training=None):
            return self.d(x)
    sub = Sub()
    sub(np.ones((1, 3), "float32"))
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]  # no temporary left behind
    # A subclassed model is no longer refused: Keras 3 writes them too (tests/test_subclassing.py reads them back).
    save_keras(sub, target)
    assert zipfile.is_zipfile(target)


def test_nested_model_roundtrip(tmp_path):
    inner = Sequential([L.Dense(5, activation="relu", input_shape=(6,)), L.BatchNormalization()], name="inner")
    inp = Input((6,))
    model = _randomize(Model(inp, L.Dense(2)(inner(inp)), name="outer"))
    save_keras(model, tmp_path / "n.keras")
    with zipfile.ZipFile(tmp_path / "n.keras") as z, h5py.File(z.open("model.weights.h5"), "r") as f:
        assert len(f["layers/sequential/layers/batch_normalization/vars"]) == 4
    x = np.random.default_rng(2).normal(size=(4, 6)).astype("float32")
    np.testing.assert_array_equal(_predict(load_keras(tmp_path / "n.keras"), x), _predict(model, x))


def _tf_keras2_h5(model, path):
    """A legacy .h5 as tf.keras 2 wrote it: its config dialect, ``name:0`` weight names."""
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(serialize_layer(model)).encode()
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = np.array([layer.name.encode() for layer in model.layers])
        for layer in model.layers:
            lg = g.create_group(layer.name)
            names = [f"{w.name}:0" for w in layer.weights]
            lg.attrs["weight_names"] = np.array([n.encode() for n in names])
            for n, w in zip(names, layer.weights):
                lg.create_dataset(n, data=w.data_sync())


def test_legacy_h5_in_tf_keras2_dialect(tmp_path):
    inp = Input((5,))
    a = L.Dense(4, activation="relu")(inp)
    b = L.BatchNormalization()(L.Dense(4)(inp))
    model = _randomize(Model(inp, L.Dense(2)(L.Concatenate()([L.Add()([a, b]), a]))))
    _tf_keras2_h5(model, tmp_path / "old.h5")
    x = np.random.default_rng(3).normal(size=(3, 5)).astype("float32")
    np.testing.assert_array_equal(_predict(load_keras(tmp_path / "old.h5"), x), _predict(model, x))


# --------------------------------------------------------------------------- bad files
def _rewrite_keras(src, dst, config=None, drop=(), moves=()):
    """Copy a .keras file, replacing its config, dropping members, moving weight groups."""
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist() if n not in drop}
    if config is not None:
        members["config.json"] = json.dumps(config).encode()
    if moves:
        import io
        buf = io.BytesIO(members["model.weights.h5"])
        with h5py.File(buf, "r+") as f:
            for a, b in moves:
                f.move(a, b)
        members["model.weights.h5"] = buf.getvalue()
    with zipfile.ZipFile(dst, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)


def _fixture_config(name="functional"):
    with zipfile.ZipFile(os.path.join(FIXTURES, f"{name}.keras")) as z:
        return json.loads(z.read("config.json"))


def test_not_a_keras_file(tmp_path):
    p = tmp_path / "notes.keras"
    p.write_text("just text")
    with pytest.raises(KerasFileError, match="neither a Keras .keras file"):
        load_keras(p)
    with pytest.raises(FileNotFoundError):
        load_keras(tmp_path / "missing.keras")
    with pytest.raises(KerasFileError, match="folder"):
        load_keras(tmp_path)


def test_truncated_keras_file(tmp_path):
    data = open(os.path.join(FIXTURES, "convnet.keras"), "rb").read()
    p = tmp_path / "cut.keras"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(KerasFileError, match="cut.keras"):
        load_keras(p)


@pytest.mark.parametrize("member", ["config.json", "model.weights.h5"])
def test_missing_member(tmp_path, member):
    p = tmp_path / "m.keras"
    _rewrite_keras(os.path.join(FIXTURES, "dense.keras"), p, drop=(member,))
    with pytest.raises(KerasFileError, match=f"member '{member}' is missing"):
        load_keras(p)


def test_unknown_layer_class_and_custom_objects(tmp_path):
    cfg = _fixture_config("dense")
    cfg["config"]["layers"][1]["class_name"] = "FancyDense"
    p = tmp_path / "m.keras"
    _rewrite_keras(os.path.join(FIXTURES, "dense.keras"), p, config=cfg)
    with pytest.raises(ValueError, match="unknown layer class 'FancyDense'"):
        load_keras(p)
    # Keras files the weights of a FancyDense under its class name, and numbers the Dense after it anew.
    _rewrite_keras(os.path.join(FIXTURES, "dense.keras"), p, config=cfg, moves=[
        ("layers/dense", "layers/fancy_dense"), ("layers/dense_1", "layers/dense"),
        ("layers/dense_2", "layers/dense_1")])

    class FancyDense(L.Dense):
        pass
    model = load_keras(p, custom_objects={"FancyDense": FancyDense})
    x, y = _fixture("dense")
    assert isinstance(model.layers[0], FancyDense)
    assert np.abs(_predict(model, x) - y).max() < 1e-5


def test_keras_option_without_equivalent(tmp_path):
    cfg = _fixture_config("functional")
    bn = next(e for e in cfg["config"]["layers"] if e["class_name"] == "BatchNormalization")
    bn["config"]["renorm"] = True
    p = tmp_path / "m.keras"
    _rewrite_keras(os.path.join(FIXTURES, "functional.keras"), p, config=cfg)
    with pytest.raises(ValueError, match=f"'{bn['name']}' \\(BatchNormalization\\).*renorm=True"):
        load_keras(p)


def test_weights_that_do_not_fit(tmp_path):
    cfg = _fixture_config("dense")
    cfg["config"]["layers"][1]["config"]["units"] = 17
    p = tmp_path / "m.keras"
    _rewrite_keras(os.path.join(FIXTURES, "dense.keras"), p, config=cfg)
    with pytest.raises(KerasFileError, match=r"layers/dense/vars/0 has shape \(8, 16\).*\(8, 17\)"):
        load_keras(p)


def test_deepgpu_file_and_weights_only_h5(tmp_path):
    model = Sequential([L.Dense(2, input_shape=(3,))])
    model.save(tmp_path / "native.dgm")
    with pytest.raises(KerasFileError, match="deepgpu file"):
        load_keras(tmp_path / "native.dgm")
    with h5py.File(tmp_path / "w.h5", "w") as f:
        f.attrs["layer_names"] = np.array([b"dense"])
    with pytest.raises(KerasFileError, match="without a model_config"):
        load_keras(tmp_path / "w.h5")


# ------------------------------------------------------------------ through Keras itself
@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "numpy")
    try:
        import keras
    except Exception as e:  # not installed, or its backend (jax for "numpy") missing
        pytest.skip(f"Keras 3 is not importable here ({type(e).__name__}: {e})")
    if not keras.__version__.startswith("3."):
        pytest.skip(f"Keras {keras.__version__} is not Keras 3")
    return keras


@pytest.mark.parametrize("name", ["convnet", "resnet", "many"])
def test_keras_loads_what_deepgpu_saves(tmp_path, keras, name):
    build, shape = _roundtrip_models()[name]
    model = _randomize(build())
    x = np.random.default_rng(4).normal(size=(3,) + shape).astype("float32")
    save_keras(model, tmp_path / "m.keras")
    kmodel = keras.saving.load_model(str(tmp_path / "m.keras"))
    assert np.abs(np.asarray(kmodel.predict(x, verbose=0)) - _predict(model, x)).max() < 1e-5
    # and back: Keras's own save of that model loads in deepgpu
    kmodel.save(str(tmp_path / "k.keras"))
    assert np.abs(_predict(load_keras(tmp_path / "k.keras"), x) - _predict(model, x)).max() < 1e-5


def test_keras_fixture_through_deepgpu_back_to_keras(tmp_path, keras):
    x, y = _fixture("functional")
    save_keras(load_keras(os.path.join(FIXTURES, "functional.h5")), tmp_path / "f.keras")
    kmodel = keras.saving.load_model(str(tmp_path / "f.keras"))
    assert np.abs(np.asarray(kmodel.predict(x, verbose=0)) - y).max() < 1e-5


def test_malformed_config_and_missing_weights(tmp_path):
    cfg = _fixture_config("functional")
    del cfg["config"]["output_layers"]
    p = tmp_path / "m.keras"
    _rewrite_keras(os.path.join(FIXTURES, "functional.keras"), p, config=cfg)
    with pytest.raises(KerasFileError, match="malformed.*output_layers"):
        load_keras(p)
    _rewrite_keras(os.path.join(FIXTURES, "dense.keras"), p, moves=[("layers/dense_1", "layers/elsewhere")])
    with pytest.raises(KerasFileError, match="holds 0 at 'layers/dense_1/vars'"):
        load_keras(p)
    h5 = tmp_path / "m.h5"
    with open(os.path.join(FIXTURES, "dense.h5"), "rb") as src:
        h5.write_bytes(src.read())
    with h5py.File(h5, "r+") as f:
        del f["model_weights/dense_1"]
    with pytest.raises(KerasFileError, match="layer 'dense_1' are missing or damaged"):
        load_keras(h5)
