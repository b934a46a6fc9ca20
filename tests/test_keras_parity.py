"""Training steps against real Keras from the same weights (skipped where Keras is not installed)."""
import numpy as np
import pytest

import deepgpu as dg
from deepgpu import layers as L


def test_adam_steps_match_keras_from_the_same_weights():
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (256, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, 256).astype(np.int32)
    keras.utils.set_random_seed(0)
    km = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                           keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"),
                           keras.layers.Dense(10, activation="softmax")])
    km.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    dm = dg.Sequential([L.Conv2D(4, 3, activation="relu", input_shape=(8, 8, 1)), L.Flatten(),
                        L.Dense(32, activation="relu"), L.Dense(10, activation="softmax")])
    dm.set_weights(km.get_weights())
    dm.compile(optimizer=dg.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    for step in range(4):
        xb, yb = x[64 * step:64 * (step + 1)], y[64 * step:64 * (step + 1)]
        np.testing.assert_allclose(dm.train_on_batch(xb, yb), km.train_on_batch(xb, yb), rtol=1e-5)
    for a, b in zip(dm.get_weights(), km.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
