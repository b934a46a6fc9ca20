"""Depthwise, separable and grouped convolutions in files people already have: a Keras 3 model
(.keras and legacy .h5, written by tests/fixtures/keras/make_depthwise_fixtures.py) and a TF.js
model (written by tests/fixtures/tfjs/make_depthwise_fixture.js) load and predict as they did;
and ours go back out to Keras and ONNX."""
import json
import os

import numpy as np
import pytest

from deepgpu.io import load_keras, load_tfjs

HERE = os.path.dirname(os.path.abspath(__file__))
KERAS = os.path.join(HERE, "fixtures", "keras")
TFJS = os.path.join(HERE, "fixtures", "tfjs", "tfjs_depthwise")


def _predict(model, x):
    return model.predict(x, verbose=0).data_sync()


def _keras_fixture():
    with np.load(os.path.join(KERAS, "depthwise_func.npz"), allow_pickle=False) as z:
        return z["x"], z["y"]


@pytest.mark.parametrize("ext", ["keras", "h5"])
def test_keras_written_depthwise_model_predicts_as_keras(ext):
    pytest.importorskip("h5py")
    x, y = _keras_fixture()
    model = load_keras(os.path.join(KERAS, f"depthwise_func.{ext}"))
    layers = {layer.name: layer for layer in model.layers}
    assert layers["dw1"].depth_multiplier == 2 and layers["grouped"].groups == 4
    assert layers["dw_dilated"].dilation_rate == (2, 2) and layers["dw1_relu"].max_value == 6.0
    np.testing.assert_allclose(_predict(model, x), y, rtol=1e-4, atol=1e-5)


def test_tfjs_written_depthwise_model_predicts_as_tfjs():
    with open(os.path.join(TFJS, "check.json")) as f:
        doc = json.load(f)
    x, y = (np.asarray(doc[k]["data"], np.float32).reshape(doc[k]["shape"]) for k in ("input", "output"))
    model = load_tfjs(TFJS)
    assert model.get_layer("conv_dw_1").depth_multiplier == 2
    np.testing.assert_allclose(_predict(model, x), y, rtol=1e-4, atol=1e-5)


def test_onnx_export_of_the_keras_model_runs_in_onnxruntime(tmp_path):
    pytest.importorskip("h5py")
    ort = pytest.importorskip("onnxruntime")
    from deepgpu.io import export_onnx

    x, y = _keras_fixture()
    model = load_keras(os.path.join(KERAS, "depthwise_func.keras"))
    export_onnx(model, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, y, rtol=1e-4, atol=1e-5)
