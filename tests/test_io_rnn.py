"""The recurrent layers (issue 16) through whole-model files: models trained by real Keras 3
(tests/fixtures/keras/make_rnn_fixtures.py: Embedding(mask_zero) + LSTM + Bidirectional(GRU) +
TimeDistributed + GRU(reset_after=False); Masking + SimpleRNN(go_backwards) + LSTM states starting
another LSTM + stacked cells + Bidirectional(sum)) and by the real TF.js (tests/fixtures/tfjs/
make_rnn_fixture.js: TF.js's defaults, hard_sigmoid and reset_after=False), written back and read by
the real Keras / TF.js; ONNX refusing masked recurrent layers by name. Each layer's own format checks
are its harness cases (tests/layers/test_recurrent.py)."""
import json
import os

import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:keras")

import deepgpu as dg  # noqa: E402
from deepgpu.io import export_onnx, load_keras, load_tfjs, save_keras, save_tfjs  # noqa: E402
from deepgpu.testing.layer_test import SkipCheck, tfjs_predict  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures", "keras")
TFJS_RNN = os.path.join(HERE, "fixtures", "tfjs", "tfjs_rnn")
NAMES = ("rnn_text", "rnn_func")


def _fixture(name):
    with np.load(os.path.join(FIXTURES, f"{name}.npz"), allow_pickle=False) as z:
        return z["x"], z["y"]


def _predict(model, x):
    return model.predict(x, verbose=0).data_sync()


def _tfjs_check():
    with open(os.path.join(TFJS_RNN, "check.json")) as f:
        doc = json.load(f)
    return tuple(np.asarray(doc[k]["data"], np.float32).reshape(doc[k]["shape"]) for k in ("input", "output"))


@pytest.mark.parametrize("ext", ["keras", "h5"])
@pytest.mark.parametrize("name", NAMES)
def test_keras_trained_recurrent_models_predict_as_keras(name, ext):
    pytest.importorskip("h5py")
    x, y = _fixture(name)
    model = load_keras(os.path.join(FIXTURES, f"{name}.{ext}"))
    got = _predict(model, x)
    assert got.shape == y.shape
    assert np.abs(got - y).max() < 1e-5


def test_keras_fixture_layers_keep_their_arguments():
    pytest.importorskip("h5py")
    text = load_keras(os.path.join(FIXTURES, "rnn_text.keras"))
    kinds = [type(layer).__name__ for layer in text.layers]
    assert kinds == ["Embedding", "LSTM", "Bidirectional", "TimeDistributed", "GRU", "Dense"]
    assert text.layers[0].mask_zero and text.layers[1].return_sequences
    assert text.layers[2].forward_layer.cell.reset_after and not text.layers[4].cell.reset_after
    func = load_keras(os.path.join(FIXTURES, "rnn_func.keras"))
    names = {type(layer).__name__ for layer in func.layers}
    assert {"Masking", "SimpleRNN", "LSTM", "RNN", "Bidirectional"} <= names
    assert not {"NotEqual", "Any"} & names  # Keras 3's mask ops: the layers make the masks themselves


def test_saved_back_real_keras_predicts_the_same(tmp_path):
    keras = pytest.importorskip("keras")
    for name in NAMES:
        x, y = _fixture(name)
        model = load_keras(os.path.join(FIXTURES, f"{name}.keras"))
        path = str(tmp_path / f"{name}.keras")
        save_keras(model, path)
        again = load_keras(path)
        assert np.abs(_predict(again, x) - y).max() < 1e-5
        km = keras.saving.load_model(path)
        got = keras.ops.convert_to_numpy(km(x, training=False))
        assert np.abs(got - y).max() < 1e-5, name


def test_keras_gru_is_refused_for_tfjs_and_masked_rnn_for_onnx_naming_the_layer(tmp_path):
    pytest.importorskip("h5py")
    model = load_keras(os.path.join(FIXTURES, "rnn_text.keras"))
    with pytest.raises(ValueError, match=r"'bidirectional'.*\(Bidirectional\)|'gru'.*reset_after=True"):
        save_tfjs(model, str(tmp_path / "tfjs"))
    assert not os.path.exists(tmp_path / "tfjs")
    pytest.importorskip("onnx")
    with pytest.raises(ValueError, match=r"layer 'lstm' \(LSTM\) receives a mask"):
        export_onnx(model, str(tmp_path / "m.onnx"))
    assert not os.path.exists(tmp_path / "m.onnx")


def test_tfjs_trained_recurrent_model_predicts_as_tfjs_and_goes_back(tmp_path):
    x, y = _tfjs_check()
    model = load_tfjs(TFJS_RNN)
    assert np.abs(_predict(model, x) - y).max() < 1e-5
    lstm = model.layers[1]
    assert lstm.cell.recurrent_activation is dg.activations.tfjs_hard_sigmoid  # TF.js's default
    assert model.layers[2].forward_layer.cell.reset_after is False
    out = str(tmp_path / "again")
    save_tfjs(model, out)
    assert np.abs(_predict(load_tfjs(out), x) - y).max() < 1e-5
    try:
        js = tfjs_predict([(out, [x])])[0][0]
    except SkipCheck as e:
        pytest.skip(str(e))
    assert np.abs(js - y).max() < 1e-5
    # Keras 3 has no hard_sigmoid of TF.js's kind: writing a .keras file is refused, naming the layer
    with pytest.raises(ValueError, match=r"'lstm.*'.*tfjs_hard_sigmoid"):
        save_keras(model, str(tmp_path / "m.keras"))
