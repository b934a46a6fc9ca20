"""3-D layers in files people already have (issue 17): a Keras 3 model (.keras and legacy .h5,
written by tests/fixtures/keras/make_volumetric_fixtures.py) loads and predicts as Keras did,
and goes back out to .keras and ONNX with the same predictions."""
import os

import numpy as np
import pytest

from deepgpu.io import load_keras

HERE = os.path.dirname(os.path.abspath(__file__))
KERAS = os.path.join(HERE, "fixtures", "keras")


def _fixture():
    with np.load(os.path.join(KERAS, "volumetric_func.npz"), allow_pickle=False) as z:
        return z["x"], z["y"]


def _predict(model, x):
    return np.asarray(model.predict(x, verbose=0).data_sync())


@pytest.mark.parametrize("ext", ["keras", "h5"])
def test_keras_written_volumetric_model_predicts_as_keras(ext):
    pytest.importorskip("h5py")
    x, y = _fixture()
    model = load_keras(os.path.join(KERAS, f"volumetric_func.{ext}"))
    layers = {layer.name: layer for layer in model.layers}
    assert layers["c_grouped"].groups == 2 and layers["c_grouped"].dilation_rate == (1, 2, 2)
    assert layers["deconv"].output_padding == (1, 0, 1) and layers["c_strided"].strides == (1, 2, 1)
    assert layers["pad"].padding == ((0, 1), (1, 1), (0, 0)) and layers["up"].size == (1, 2, 1)
    assert model.count_params() == 671
    np.testing.assert_allclose(_predict(model, x), y, rtol=1e-4, atol=1e-5)


def test_volumetric_model_goes_back_out_to_keras_and_onnx(tmp_path):
    pytest.importorskip("h5py")
    ort = pytest.importorskip("onnxruntime")
    from deepgpu.io import export_onnx, save_keras

    x, y = _fixture()
    model = load_keras(os.path.join(KERAS, "volumetric_func.keras"))
    save_keras(model, tmp_path / "again.keras")
    np.testing.assert_allclose(_predict(load_keras(tmp_path / "again.keras"), x), y, rtol=1e-4, atol=1e-5)
    export_onnx(model, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, y, rtol=1e-4, atol=1e-5)


def test_save_tfjs_refuses_the_3d_layers_tfjs_lacks(tmp_path):
    from deepgpu.io import save_tfjs

    model = load_keras(os.path.join(KERAS, "volumetric_func.keras"))
    with pytest.raises(ValueError, match=r"'c_grouped' \(Conv3D\).*groups=2"):
        save_tfjs(model, tmp_path / "web")
    assert not os.path.exists(tmp_path / "web")
