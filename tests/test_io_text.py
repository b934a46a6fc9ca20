"""Keras 3 files with TextVectorization: fixtures written by real Keras (tests/fixtures/keras/
make_text_fixtures.py) load into deepgpu with their vocabulary (Keras keeps an adapted layer's in
assets/, and TF-IDF weights by name), and predict as Keras did; deepgpu's own .keras file of such a
model loads back in real Keras where installed."""
import os

import numpy as np
import pytest

import deepgpu as dg

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "keras")


@pytest.fixture(scope="module")
def ref():
    return np.load(os.path.join(FIX, "text_fixtures.npz"))


@pytest.mark.parametrize("name, key, reshape", [("text_int", "int", True), ("text_tfidf", "tfidf", False)])
def test_keras_written_text_models_load_and_predict_as_keras(name, key, reshape, ref):
    model = dg.models.load_model(os.path.join(FIX, f"{name}.keras"))
    tv = next(layer for layer in model.layers if isinstance(layer, dg.layers.TextVectorization))
    assert tv.get_vocabulary() == [str(t) for t in ref[f"vocab_{key}"]]
    x = ref["x"].reshape(-1, 1) if reshape else ref["x"]
    np.testing.assert_allclose(model.predict(x).data_sync(), ref[f"y_{key}"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.predict(list(ref["x"])).data_sync(), ref[f"y_{key}"], rtol=1e-5, atol=1e-5)


def test_a_keras_fixture_saved_by_deepgpu_loads_in_real_keras(tmp_path, ref):
    keras = pytest.importorskip("keras")
    for name, key in (("text_int", "int"), ("text_tfidf", "tfidf")):
        model = dg.models.load_model(os.path.join(FIX, f"{name}.keras"))
        path = tmp_path / f"{name}.keras"
        model.save(path)
        km = keras.saving.load_model(path)
        x = ref["x"].reshape(-1, 1) if key == "int" else ref["x"]
        np.testing.assert_allclose(keras.ops.convert_to_numpy(km(x)), ref[f"y_{key}"], rtol=1e-5, atol=1e-5)
