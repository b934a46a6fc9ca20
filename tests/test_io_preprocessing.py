"""Issue-17 layers in files Keras 3 wrote (tests/fixtures/keras/make_preprocessing_fixtures.py): they
load and predict as Keras did; and they go back out to Keras and ONNX."""
import os

import numpy as np
import pytest

from deepgpu.io import load_keras, save_keras

KERAS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "keras")


def _fixture(name):
    with np.load(os.path.join(KERAS, f"{name}.npz"), allow_pickle=False) as z:
        return z["x"], z["y"]


def _predict(model, x):
    return model.predict(x, verbose=0).data_sync()


@pytest.mark.parametrize("name,ext", [("preprocessing_image", "keras"), ("preprocessing_tabular", "keras"),
                                      ("preprocessing_tabular", "h5")])
def test_keras_written_model_predicts_as_keras(name, ext):
    pytest.importorskip("h5py")
    x, y = _fixture(name)
    model = load_keras(os.path.join(KERAS, f"{name}.{ext}"))
    np.testing.assert_allclose(_predict(model, x), y, rtol=1e-4, atol=1e-5)


def test_loaded_layers_keep_their_arguments_and_adapted_state():
    pytest.importorskip("h5py")
    model = load_keras(os.path.join(KERAS, "preprocessing_image.keras"))
    layers = {layer.name: layer for layer in model.layers}
    assert layers["prelu"].shared_axes == [1, 2] and layers["prelu"].alpha.shape == (1, 1, 6)
    assert layers["shift"].fill_mode == "wrap" and layers["rotate"].fill_mode == "constant"
    mean = layers["norm"].mean.data_sync()
    assert mean.shape == (3,) and np.abs(mean - 0.3).max() < 0.1  # adapted by Keras on normal(0.3, 0.5) data
    assert layers["resize"].height == 11 and layers["crop"].width == 8


def test_round_trip_through_our_keras_writer(tmp_path):
    pytest.importorskip("h5py")
    x, y = _fixture("preprocessing_image")
    model = load_keras(os.path.join(KERAS, "preprocessing_image.keras"))
    save_keras(model, tmp_path / "again.keras")
    np.testing.assert_allclose(_predict(load_keras(tmp_path / "again.keras"), x), y, rtol=1e-4, atol=1e-5)


def test_onnx_export_of_the_keras_model_runs_in_onnxruntime(tmp_path):
    pytest.importorskip("h5py")
    ort = pytest.importorskip("onnxruntime")
    from deepgpu.io import export_onnx

    x, y = _fixture("preprocessing_image")
    model = load_keras(os.path.join(KERAS, "preprocessing_image.keras"))
    export_onnx(model, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, y, rtol=1e-4, atol=1e-5)


def test_tfjs_written_model_with_prelu_noise_and_rescaling_predicts_as_tfjs():
    import json

    from deepgpu.io import load_tfjs

    folder = os.path.join(os.path.dirname(KERAS), "tfjs", "tfjs_noise_prelu")  # make_noise_prelu_fixture.js
    with open(os.path.join(folder, "check.json")) as f:
        doc = json.load(f)
    x, y = (np.asarray(doc[k]["data"], np.float32).reshape(doc[k]["shape"]) for k in ("input", "output"))
    model = load_tfjs(folder)
    assert model.get_layer("prelu").shared_axes == [1, 2] and model.get_layer("thresh").theta == 0.1
    np.testing.assert_allclose(_predict(model, x), y, rtol=1e-4, atol=1e-5)
