"""The 1-D layers (issue 16) through whole-model files: Keras 3's .keras / .h5 written by real
Keras (tests/fixtures/keras/make_conv1d_fixtures.py), models built and trained by the real
TF.js (tests/js/conv1d_build.js), ONNX run by onnxruntime, and Keras loading what deepgpu saves.
Each layer's own format checks are its harness cases (tests/layers/test_conv.py, test_pooling.py,
test_reshaping.py, test_regularization.py)."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:keras")

from deepgpu.io import export_onnx, load_keras, load_tfjs, save_keras, save_tfjs  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures", "keras")
JS_DIR = os.environ.get("DEEPGPU_TFJS_DIR") or os.path.join(HERE, "js")
NAMES = ("conv1d_seq", "conv1d_func")


def _fixture(name):
    with np.load(os.path.join(FIXTURES, f"{name}.npz"), allow_pickle=False) as z:
        return z["x"], z["y"]


def _predict(model, x):
    return model.predict(x, verbose=0).data_sync()


@pytest.mark.parametrize("ext", ["keras", "h5"])
@pytest.mark.parametrize("name", NAMES)
def test_keras_written_1d_models_predict_as_keras(backend, name, ext):
    pytest.importorskip("h5py")
    x, y = _fixture(name)
    model = load_keras(os.path.join(FIXTURES, f"{name}.{ext}"))
    got = _predict(model, x)
    assert got.shape == y.shape
    assert np.abs(got - y).max() < 1e-5


def test_keras_fixture_layers_keep_their_arguments():
    pytest.importorskip("h5py")
    model = load_keras(os.path.join(FIXTURES, "conv1d_seq.keras"))
    conv, grouped = model.layers[0], model.layers[1]
    assert (conv.padding, conv.dilation_rate, conv.kernel.shape) == ("causal", (2,), (3, 4, 6))
    assert (grouped.groups, grouped.kernel.shape) == (3, (2, 2, 6))
    sep = model.layers[3]
    assert (sep.depthwise_kernel.shape, sep.pointwise_kernel.shape) == ((3, 6, 2), (1, 12, 5))
    assert model.layers[7].kernel.shape == (3, 4, 5)  # Conv1DTranspose: [k, filters, in]


@pytest.mark.parametrize("name", NAMES)
def test_save_keras_round_trip_and_keras_loads_it(tmp_path, name):
    pytest.importorskip("h5py")
    x, y = _fixture(name)
    save_keras(load_keras(os.path.join(FIXTURES, f"{name}.h5")), tmp_path / "m.keras")
    assert np.abs(_predict(load_keras(tmp_path / "m.keras"), x) - y).max() < 1e-5
    try:
        import keras
    except Exception as e:  # not installed, or its backend missing
        pytest.skip(f"Keras 3 is not importable here ({type(e).__name__}: {e})")
    kmodel = keras.saving.load_model(str(tmp_path / "m.keras"))
    assert np.abs(np.asarray(kmodel.predict(x, verbose=0)) - y).max() < 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_onnxruntime_predicts_as_keras(tmp_path, name):
    pytest.importorskip("h5py")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    x, y = _fixture(name)
    model = load_keras(os.path.join(FIXTURES, f"{name}.keras"))
    export_onnx(model, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert np.abs(got - y).max() < 1e-5


def test_save_tfjs_refuses_what_tfjs_lacks_naming_the_layer(tmp_path):
    pytest.importorskip("h5py")
    model = load_keras(os.path.join(FIXTURES, "conv1d_seq.keras"))  # causal, grouped, separable, ...
    with pytest.raises(ValueError, match=r"layer '[^']+' \(Conv1D\) has padding='causal'"):
        save_tfjs(model, tmp_path / "js")
    assert not (tmp_path / "js").exists()


@pytest.fixture(scope="module")
def tfjs_trained(tmp_path_factory):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed, so the real @tensorflow/tfjs cannot run")
    if not os.path.isdir(os.path.join(JS_DIR, "node_modules", "@tensorflow", "tfjs")):
        pytest.skip("@tensorflow/tfjs is not installed: run (cd tests/js && npm ci)")
    out = tmp_path_factory.mktemp("tfjs_conv1d")
    proc = subprocess.run([node, os.path.join(JS_DIR, "conv1d_build.js"), str(out)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def _check(folder):
    doc = json.loads((folder / "check.json").read_text())
    return [np.asarray(doc[k]["data"], np.float32).reshape(doc[k]["shape"]) for k in ("input", "output")]


@pytest.mark.parametrize("name", ["conv1d", "pools"])
def test_tfjs_trained_1d_models_predict_as_tfjs(tfjs_trained, tmp_path, name):
    x, y_js = _check(tfjs_trained / name)
    model = load_tfjs(tfjs_trained / name)
    y = _predict(model, x)
    assert y.shape == y_js.shape
    assert np.abs(y - y_js).max() < 1e-5
    save_tfjs(model, tmp_path / "again")  # and back out in TF.js's dialect, same weights
    assert np.abs(_predict(load_tfjs(tmp_path / "again"), x) - y).max() == 0


def test_keras_reads_parallel_branches_of_one_class_by_its_own_layer_order(tmp_path):
    """Keras names a functional model's weight groups in its graph order, whatever the config's:
    the writers follow that order (conv1d_func has two Conv1D on parallel branches)."""
    pytest.importorskip("h5py")
    try:
        import keras
    except Exception as e:
        pytest.skip(f"Keras 3 is not importable here ({type(e).__name__}: {e})")
    x, y = _fixture("conv1d_func")
    model = load_keras(os.path.join(FIXTURES, "conv1d_func.h5"))
    model.save(tmp_path / "m.h5")
    kmodel = keras.saving.load_model(str(tmp_path / "m.h5"))
    assert np.abs(np.asarray(kmodel.predict(x, verbose=0)) - y).max() < 1e-5


@pytest.mark.parametrize("functional", [False, True])
def test_onnx_exports_the_masked_global_average(tmp_path, functional):
    """Embedding(mask_zero) and Masking masks, passed on unchanged, reach the export: a masked
    GlobalAveragePooling1D is the mean over the kept steps in onnxruntime too."""
    ort = pytest.importorskip("onnxruntime")
    from deepgpu import Input, Model, Sequential, layers as L

    ids = np.random.default_rng(9).integers(1, 10, (3, 7)).astype(np.int32)
    ids[0, 4:] = 0
    ids[1, :2] = 0  # padding in front too: the mask is not a prefix
    if functional:
        inp = Input((7,), dtype="int32")
        h = L.Dropout(0.2)(L.Dense(5)(L.Embedding(10, 4, mask_zero=True)(inp)))  # both pass the mask on
        model = Model(inp, L.Dense(2)(L.GlobalAveragePooling1D(keepdims=True)(h)))
    else:
        model = Sequential([Input((7,), dtype="int32"), L.Embedding(10, 4, mask_zero=True),
                            L.GlobalAveragePooling1D(), L.Dense(2)])
    export_onnx(model, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"))
    got = sess.run(None, {sess.get_inputs()[0].name: ids})[0]
    np.testing.assert_allclose(got, model.predict(ids, verbose=0).data_sync(), rtol=1e-5, atol=1e-6)
    x = np.random.default_rng(10).standard_normal((3, 7, 4)).astype(np.float32)
    x[0, 3:] = 0.0
    masking = Sequential([Input((7, 4)), L.Masking(0.0), L.GlobalAveragePooling1D()])
    export_onnx(masking, tmp_path / "k.onnx")
    sess = ort.InferenceSession(str(tmp_path / "k.onnx"))
    np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: x})[0],
                               masking.predict(x, verbose=0).data_sync(), rtol=1e-5, atol=1e-6)


def test_onnx_carries_the_mask_through_passing_layers_and_merges(tmp_path):
    """The mask passes TimeDistributed, SpatialDropout1D and Activation unchanged, and Add's output
    mask is the AND of its inputs' (two id sequences padded differently): onnxruntime as deepgpu."""
    ort = pytest.importorskip("onnxruntime")
    from deepgpu import Input, Model, layers as L

    rng = np.random.default_rng(11)
    ids, more = (rng.integers(1, 10, (3, 7)).astype(np.int32) for _ in range(2))
    ids[0, 5:] = 0
    more[1, :3] = 0
    a, b = Input((7,), dtype="int32"), Input((7,), dtype="int32")
    emb = L.Embedding(10, 4, mask_zero=True)
    x = L.Activation("tanh")(L.SpatialDropout1D(0.3)(L.TimeDistributed(L.Dense(4))(emb(a))))
    model = Model([a, b], L.GlobalAveragePooling1D()(L.Add()([x, emb(b)])))
    export_onnx(model, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"))
    got = sess.run(None, {i.name: v for i, v in zip(sess.get_inputs(), (ids, more))})[0]
    np.testing.assert_allclose(got, model.predict([ids, more], verbose=0).data_sync(), rtol=1e-5, atol=1e-6)


def test_save_tfjs_refuses_a_masked_global_average_naming_the_layer(tmp_path):
    """TF.js's GlobalAveragePooling1D ignores masks (the plain mean): save_tfjs refuses, writing nothing."""
    from deepgpu import Input, Sequential, layers as L

    model = Sequential([Input((7,), dtype="int32"), L.Embedding(10, 4, mask_zero=True),
                        L.GlobalAveragePooling1D(name="gap"), L.Dense(2)])
    with pytest.raises(ValueError, match=r"layer 'gap' \(GlobalAveragePooling1D\) receives a mask"):
        save_tfjs(model, tmp_path / "js")
    assert not (tmp_path / "js").exists()
    unmasked = Sequential([Input((7,), dtype="int32"), L.Embedding(10, 4), L.GlobalAveragePooling1D(), L.Dense(2)])
    save_tfjs(unmasked, tmp_path / "ok")
    assert (tmp_path / "ok" / "model.json").exists()
