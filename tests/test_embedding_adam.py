"""Adam on an Embedding whose batch repeats token ids: deepgpu sums the occurrences' gradients
into one dense gradient row and takes one Adam step per row (Keras 3 on JAX / PyTorch, and
Keras-TF with a dense gradient). Keras 3 on TensorFlow differs: its gradient is a tf.IndexedSlices
with one row per occurrence, and its Adam squares those rows before they are summed (``v`` gets
``sum g_i^2``, not ``(sum g_i)^2``; checked against Keras 3.15.1 on these batches); bench/bilstm_parity.py measures that difference
on the fortunes BiLSTM (issue 16). The reference here is written from the formulas."""
import numpy as np

import deepgpu as dg
from deepgpu import layers, optimizers
from deepgpu.autograd import GradientTape

LR, B1, B2, EPS = 0.1, 0.9, 0.999, 1e-7
BATCHES = [(np.array([[1, 1, 1, 2]]), np.array([1.0, 2.0, 3.0, 4.0])),
           (np.array([[3, 3, 2, 0]]), np.array([-1.0, 0.5, 2.0, 1.5]))]


def _dense_adam(w, squares_per_occurrence):
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, (ids, gw) in enumerate(BATCHES, 1):
        g, g2 = np.zeros_like(w), np.zeros_like(w)
        np.add.at(g[:, 0], ids.ravel(), gw)
        np.add.at(g2[:, 0], ids.ravel(), gw * gw)
        m += (1 - B1) * (g - m)
        # Keras-TF squares the tf.IndexedSlices row by row before they are summed
        v += (1 - B2) * ((g2 if squares_per_occurrence else g * g) - v)
        alpha = LR * np.sqrt(1 - B2 ** t) / (1 - B1 ** t)
        w = w - alpha * m / (np.sqrt(v) + EPS)
    return w


def test_adam_sums_repeated_ids_into_one_dense_step():
    emb = layers.Embedding(5, 1, embeddings_initializer="zeros")
    emb.build((1, 4))
    opt = optimizers.Adam(LR)
    for ids, gw in BATCHES:
        with GradientTape() as tape:
            loss = dg.sum(emb(dg.tensor(ids.astype("int32")))[0, :, 0] * dg.tensor(gw, "float32"))
        opt.apply(tape.gradient(loss, emb.trainable_variables), emb.trainable_variables)
    got = emb.get_weights()[0].astype(np.float64)
    want = _dense_adam(np.zeros((5, 1)), squares_per_occurrence=False)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # the two rules are far apart here (row 1: 3 occurrences, row 3: 2)
    assert np.abs(want - _dense_adam(np.zeros((5, 1)), squares_per_occurrence=True)).max() > 0.03
