"""Step-by-step parity of the fortunes BiLSTM (issue 16) with Keras 3: same initial weights, same batches.

    python3 bench/bilstm_parity.py --steps 1 10 100 [--dropout 0.3] [--seq-len 64] [--keras-dense-adam]
    python3 bench/bilstm_parity.py --model transformer --batch 32 --steps 1 10 [--keras-dense-adam]

Builds Keras's Embedding(mask_zero) -> Bidirectional(LSTM) -> Dropout -> Dense(softmax) and
deepgpu.zoo.text_lstm, copies Keras's initial weights into deepgpu, then compares the loss and
every gradient on one batch of real fortunes ids, and the weights after N train_on_batch steps
of Adam(1e-3) over the same sequence of batches (no shuffle). With dropout on the two frameworks
draw different masks, so only the statistics can be compared there (printed, not asserted).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def build(vocab, classes, seq_len, dropout, seed, model="lstm"):
    import keras
    import deepgpu as dg
    from deepgpu import zoo
    L = keras.layers
    keras.utils.set_random_seed(seed)
    dg.set_seed(seed)
    if model == "transformer":
        from seq_quality import _transformer
        from deepgpu import layers as DL
        from deepgpu.models import Model
        km = _transformer(L, keras.Input, keras.Model, L.Layer, vocab, classes, seq_len, rate=dropout)
        dm = _transformer(DL, DL.Input, Model, DL.Layer, vocab, classes, seq_len, rate=dropout)
    else:
        inputs = keras.Input((seq_len,), dtype="int32")
        x = L.Embedding(vocab, 64, mask_zero=True)(inputs)
        x = L.Bidirectional(L.LSTM(64))(x)
        x = L.Dropout(dropout)(x)
        km = keras.Model(inputs, L.Dense(classes, activation="softmax")(x))
        dm = zoo.text_lstm(vocab, classes, seq_len, dropout=dropout)
    kw = km.get_weights()
    dw = dm.get_weights()
    assert [w.shape for w in kw] == [w.shape for w in dw], ([w.shape for w in kw], [w.shape for w in dw])
    dm.set_weights(kw)
    return km, dm


def grads(km, dm, x, y):
    import tensorflow as tf
    import keras
    import deepgpu as dg
    kloss_fn = keras.losses.SparseCategoricalCrossentropy()
    with tf.GradientTape() as tape:
        kl = kloss_fn(y, km(x, training=False))
    kg = [g.numpy() if not isinstance(g, tf.IndexedSlices) else tf.convert_to_tensor(g).numpy()
          for g in tape.gradient(kl, km.trainable_variables)]
    dloss_fn = dg.losses.SparseCategoricalCrossentropy()
    from deepgpu.autograd import GradientTape
    with GradientTape() as tape:
        dl = dloss_fn(dg.tensor(y), dm(dg.tensor(x), training=False))
    dgr = [g.data_sync() for g in tape.gradient(dl, dm.trainable_variables)]
    return float(kl), float(dl.data_sync()), kg, dgr


def dense_adam(lr):
    """Keras's Adam fed dense gradients. On the TensorFlow backend an Embedding's
    gradient is a tf.IndexedSlices with one row per token occurrence, and Keras's Adam squares
    those rows before they are summed into the second moment: a token seen n times in a batch
    gets v from sum g_i^2 instead of (sum g_i)^2 (up to sqrt(n) times larger steps when the
    occurrences agree; tests/test_embedding_adam.py has the rule). Keras on JAX or
    PyTorch backends, and deepgpu, run plain dense Adam. This subclass densifies first."""
    import keras
    import tensorflow as tf

    class DenseAdam(keras.optimizers.Adam):
        def apply(self, grads, trainable_variables=None):
            grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
            return super().apply(grads, trainable_variables)

    return DenseAdam(lr)


def rel(a, b):
    return float(np.abs(a - b).max() / (np.abs(a).max() + 1e-30))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 10, 100])
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--model", choices=("lstm", "transformer"), default="lstm",
                    help="lstm: the BiLSTM above; transformer: seq_quality.py's Transformer recipe")
    ap.add_argument("--keras-dense-adam", action="store_true",
                    help="densify Keras's tf.IndexedSlices embedding gradient before Adam (see the docstring)")
    args = ap.parse_args()
    from seq_quality import _fortunes_ids
    (x, y), _, vocab, classes = _fortunes_ids(args.seq_len)
    x = x.astype("int32")
    y = y.astype("int32")
    import keras
    import deepgpu as dg
    km, dm = build(vocab, classes, args.seq_len, args.dropout, args.seed, args.model)
    names = [v.path if hasattr(v, "path") else v.name for v in km.trainable_variables]
    xb, yb = x[:args.batch], y[:args.batch]
    kl, dl, kg, dgr = grads(km, dm, xb, yb)
    print(f"loss on batch 0 at init: keras {kl:.7f} deepgpu {dl:.7f}")
    for n, a, b in zip(names, kg, dgr):
        print(f"  grad {n:55s} {str(a.shape):14s} max|g| {np.abs(a).max():.3e}  rel.err {rel(a, b):.2e}")
    km.compile(optimizer=dense_adam(1e-3) if args.keras_dense_adam else keras.optimizers.Adam(1e-3),
               loss="sparse_categorical_crossentropy")
    dm.compile(optimizer=dg.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", cuda_graph=False)
    nb = len(x) // args.batch
    done = 0
    for target in sorted(args.steps):
        klosses, dlosses = [], []
        while done < target:
            i = done % nb
            sl = slice(i * args.batch, (i + 1) * args.batch)
            klosses.append(float(km.train_on_batch(x[sl], y[sl])))
            dlosses.append(float(dm.train_on_batch(x[sl], y[sl])))
            done += 1
        print(f"after {target} steps: last loss keras {klosses[-1]:.6f} deepgpu {dlosses[-1]:.6f}; "
              f"mean of these steps keras {np.mean(klosses):.6f} deepgpu {np.mean(dlosses):.6f}")
        for n, a, b in zip(names, km.get_weights(), dm.get_weights()):
            print(f"  weight {n:55s} rel.err {rel(a, b):.2e}")


if __name__ == "__main__":
    main()
