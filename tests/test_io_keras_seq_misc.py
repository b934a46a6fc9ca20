"""Keras-written .keras files of the sequence and attention layers that the Transformer, RNN and
Conv1D fixtures leave out (tests/fixtures/keras/make_seq_misc_fixtures.py, Keras 3.15): deepgpu
predicts as Keras did, and Keras reads deepgpu's copy back and predicts the same."""
from __future__ import annotations

import os

import numpy as np
import pytest

from deepgpu.io.keras import load_keras, save_keras

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "keras")
LAYERS = {
    "attention_misc": {"Attention", "AdditiveAttention", "MultiHeadAttention", "EinsumDense", "GroupNormalization",
                       "UnitNormalization", "LayerNormalization", "Identity", "Average", "Maximum", "Minimum",
                       "Multiply", "Subtract", "Dot"},
    "rnn_misc": {"ConvLSTM2D", "RNN", "Bidirectional"},
}


def _host(a):
    return a.data_sync() if hasattr(a, "data_sync") else np.asarray(a)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_keras_written_file_predicts_as_keras_and_goes_back(tmp_path, name):
    with np.load(os.path.join(FIXTURES, f"{name}.npz")) as z:
        xs = [z[f"x{i}"] for i in range(sum(k.startswith("x") for k in z.files))]
        want = [z[f"y{i}"] for i in range(sum(k.startswith("y") for k in z.files))]
    model = load_keras(os.path.join(FIXTURES, f"{name}.keras"))
    assert LAYERS[name] <= {type(layer).__name__ for layer in model.layers}
    got = model.predict(xs if len(xs) > 1 else xs[0], verbose=0)
    got = [_host(g) for g in (got if isinstance(got, (list, tuple)) else [got])]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert np.abs(g - w).max() <= 1e-5 * max(1.0, np.abs(w).max())
    keras = pytest.importorskip("keras")
    path = str(tmp_path / "again.keras")
    save_keras(model, path)
    back = keras.saving.load_model(path).predict(xs if len(xs) > 1 else xs[0], verbose=0)
    for b, w in zip(back if isinstance(back, (list, tuple)) else [back], want):
        assert np.abs(np.asarray(b) - w).max() <= 1e-5 * max(1.0, np.abs(w).max())
