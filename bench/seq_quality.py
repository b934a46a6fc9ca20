"""Sequence-model quality beside Keras 3 (issue 16): the fortunes classifiers and the seattle-weather LSTM.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 bench/seq_quality.py --seeds 0 1 2 \
        --tasks lstm conv1d weather --out bench/seq_quality.json

fortunes (``apt-get install fortunes``): deepgpu.datasets.fortunes' split (17 categories, 9,315
training / 2,332 test quotations); one TextVectorization (10,000 tokens, 64 steps) learned by
deepgpu on the training quotations gives both frameworks the same id arrays (Keras's own
TextVectorization learns the same vocabulary: tests/layers/test_text.py). Networks as
deepgpu.zoo builds them: "lstm" Embedding(10000, 64, mask_zero) -> Bidirectional(LSTM(64)) ->
Dropout(0.3) -> Dense(17, softmax); "conv1d" Embedding(10000, 64) -> Conv1D(128, 5, relu) ->
GlobalMaxPooling1D -> Dropout(0.3) -> Dense(17, softmax). Adam(1e-3), batch 64, sparse
categorical cross-entropy, no validation split, the test accuracy after the last epoch
(5 epochs for "lstm", 6 for "conv1d").

seattle-weather (``pip install vega_datasets``): 14-day windows of 4 measurements -> the next
day's temp_max, chronological split (1,158 / 289); zoo.weather_lstm: Normalization (training
mean and variance) -> LSTM(32) -> Dense(1) -> Rescaling (training target std and mean); Adam(1e-3),
batch 32, MSE, 30 epochs; the test MAE in deg C after the last epoch.

Each (task, seed) trains deepgpu, then Keras (alternated, each in a fresh process with one
thread). Results go to --out as JSON lines (appended as they finish); the summary table (mean and
standard deviation per framework) is printed at the end. Keras 3 with TensorFlow is installed by
hand; deepgpu never depends on it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

EPOCHS = {"lstm": 5, "conv1d": 6, "weather": 30, "transformer": 5}
BATCH = {"lstm": 64, "conv1d": 64, "weather": 32, "transformer": 32}
MAX_TOKENS, SEQ_LEN = 10_000, 64


def _fortunes_ids(seq_len):
    from deepgpu.datasets import fortunes
    from deepgpu.layers import TextVectorization

    (xtr, ytr), (xte, yte) = fortunes.load_data()
    tv = TextVectorization(max_tokens=MAX_TOKENS, output_sequence_length=seq_len)
    tv.adapt(xtr)
    return (tv(xtr).data_sync(), ytr), (tv(xte).data_sync(), yte), tv.vocabulary_size(), int(ytr.max()) + 1


def _weather():
    from deepgpu.datasets import seattle_weather
    (xtr, ytr), (xte, yte) = seattle_weather.load_data()
    days = xtr.reshape(-1, xtr.shape[-1])
    return (xtr, ytr.reshape(-1, 1)), (xte, yte.reshape(-1, 1)), days.mean(0), days.var(0)


def _transformer(L, Input, Model, Layer, vocab, classes, seq_len, embed_dim=32, num_heads=2, ff_dim=32, rate=0.1):
    """Keras's "text classification with Transformer" recipe (keras.io/examples/nlp/
    text_classification_with_transformer), written once for both frameworks' functional APIs:
    token + position embedding, one Transformer block (MultiHeadAttention(key_dim=embed_dim),
    dropout 0.1, residual, LayerNormalization(1e-6), Dense(ff_dim, relu) -> Dense(embed_dim),
    dropout ``rate``, residual, LayerNormalization(1e-6)), GlobalAveragePooling1D, Dropout(rate),
    Dense(20, relu), Dropout(rate), Dense(classes, softmax). The position embedding is the
    recipe's Embedding(maxlen, embed_dim) looked up at 0..maxlen-1, held as the same
    (maxlen, embed_dim) table with the same uniform(-0.05, 0.05) initializer and added."""

    class TokenAndPositionEmbedding(Layer):
        def __init__(self, maxlen, vocab_size, dim, **kwargs):
            super().__init__(**kwargs)
            self.maxlen, self.dim = maxlen, dim
            self.token_emb = L.Embedding(vocab_size, dim)

        def build(self, input_shape):
            self.pos_emb = self.add_weight(shape=(self.maxlen, self.dim), initializer="uniform", name="pos_emb")

        def call(self, x):
            return self.token_emb(x) + self.pos_emb

    inputs = Input((seq_len,), dtype="int32")
    x = TokenAndPositionEmbedding(seq_len, vocab, embed_dim)(inputs)
    a = L.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)(x, x)
    x = L.LayerNormalization(epsilon=1e-6)(L.Add()([x, L.Dropout(rate)(a)]))
    f = L.Dense(embed_dim)(L.Dense(ff_dim, activation="relu")(x))
    x = L.LayerNormalization(epsilon=1e-6)(L.Add()([x, L.Dropout(rate)(f)]))
    x = L.Dropout(rate)(L.GlobalAveragePooling1D()(x))
    x = L.Dropout(rate)(L.Dense(20, activation="relu")(x))
    return Model(inputs, L.Dense(classes, activation="softmax")(x))


def _keras_model(keras, task, vocab, classes, seq_len, stats=None):
    L = keras.layers
    if task == "transformer":
        return _transformer(L, keras.Input, keras.Model, keras.layers.Layer, vocab, classes, seq_len)
    if task == "weather":
        mean, var, ym, ys = stats
        inputs = keras.Input((14, 4))
        x = L.Normalization(mean=mean, variance=var)(inputs)
        x = L.Dense(1)(L.LSTM(32)(x))
        return keras.Model(inputs, L.Rescaling(ys, offset=ym)(x))
    inputs = keras.Input((seq_len,), dtype="int32")
    if task == "lstm":
        x = L.Embedding(vocab, 64, mask_zero=True)(inputs)
        x = L.Bidirectional(L.LSTM(64))(x)
    else:
        x = L.Embedding(vocab, 64)(inputs)
        x = L.GlobalMaxPooling1D()(L.Conv1D(128, 5, activation="relu")(x))
    x = L.Dropout(0.3)(x)
    return keras.Model(inputs, L.Dense(classes, activation="softmax")(x))


def _dense_adam(keras, lr):
    """Keras's Adam fed dense gradients ("keras-dense"). On the TensorFlow backend an Embedding's
    gradient is a tf.IndexedSlices with one row per token occurrence, and Keras's Adam squares
    those rows before they are summed into the second moment: a token seen n times in a batch
    gets v from sum g_i^2 instead of (sum g_i)^2 (up to sqrt(n) times larger steps when the
    occurrences agree; tests/test_embedding_adam.py has the rule). Keras on JAX or PyTorch,
    and deepgpu, run plain dense Adam; this is Keras-TF made to do the same
    (bench/bilstm_parity.py shows the step-by-step difference)."""
    import tensorflow as tf

    class DenseAdam(keras.optimizers.Adam):
        def apply(self, grads, trainable_variables=None):
            grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
            return super().apply(grads, trainable_variables)

    return DenseAdam(lr)


def worker(framework, task, seed, epochs, seq_len=SEQ_LEN):
    """Train one network; returns the result dict (test accuracy or MAE, seconds)."""
    if task == "weather":
        (x, y), (xt, yt), mean, var = _weather()
        ym, ys = float(y.mean()), float(y.std())
        vocab = classes = None
    else:
        (x, y), (xt, yt), vocab, classes = _fortunes_ids(seq_len)
    t0 = time.perf_counter()
    if framework in ("keras", "keras-dense"):
        import keras
        keras.utils.set_random_seed(seed)
        model = _keras_model(keras, task, vocab, classes, seq_len, (mean, var, ym, ys) if task == "weather" else None)
        opt = keras.optimizers.Adam(1e-3) if framework == "keras" else _dense_adam(keras, 1e-3)
        version = f"{framework} {keras.__version__} ({keras.backend.backend()})"
    else:
        import deepgpu as dg
        from deepgpu import zoo
        dg.set_seed(seed)
        if task == "weather":
            model = zoo.weather_lstm(x.shape[1:], mean=mean, variance=var, target_mean=ym, target_std=ys)
        elif task == "transformer":
            from deepgpu import layers as DL
            from deepgpu.models import Model
            model = _transformer(DL, DL.Input, Model, DL.Layer, vocab, classes, seq_len)
        else:
            model = zoo.SEQUENCE_MODELS[("fortunes", task)](vocab, classes, seq_len)
        opt = dg.optimizers.Adam(1e-3)
        version = f"deepgpu {dg.__version__} ({dg.get_backend()})"
    if task == "weather":
        model.compile(optimizer=opt, loss="mse", metrics=["mae"])
        model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
        _, score = model.evaluate(xt, yt, batch_size=256, verbose=0)
    else:
        model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, y, batch_size=BATCH[task], epochs=epochs, verbose=0)
        _, score = model.evaluate(xt, yt, batch_size=256, verbose=0)
    return {"framework": version, "task": task, "seed": seed, "epochs": epochs,
            "sequence_length": None if task == "weather" else seq_len,
            "metric": "test_mae" if task == "weather" else "test_accuracy", "value": float(score),
            "seconds": round(time.perf_counter() - t0, 1)}


def summarize(rows):
    lines = ["| task | metric | framework | seeds | mean | std | values | s / run |", "|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["task"], r["framework"].split()[0]) for r in rows})
    for task, fw in keys:
        rs = [r for r in rows if r["task"] == task and r["framework"].split()[0] == fw]
        vals = [r["value"] for r in rs]
        pct = rs[0]["metric"] == "test_accuracy"
        f = (lambda v: f"{v * 100:.2f}%") if pct else (lambda v: f"{v:.3f}")
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        lines.append(f"| {task} | {rs[0]['metric']} | {rs[0]['framework']} | {len(rs)} | {f(statistics.mean(vals))} "
                     f"| {f(sd)} | {', '.join(f(v) for v in vals)} | "
                     f"{statistics.mean(r['seconds'] for r in rs):.0f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", nargs="+", choices=("lstm", "conv1d", "weather", "transformer"), default=["lstm", "conv1d", "weather"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=None, help="default: 5 for lstm and transformer, 6 for conv1d, 30 for weather")
    ap.add_argument("--frameworks", nargs="+", choices=("deepgpu", "keras", "keras-dense"), default=["deepgpu", "keras"])
    ap.add_argument("--seq-len", type=int, default=SEQ_LEN, help="fortunes: tokens per quotation (default 64)")
    ap.add_argument("--out", default=None, help="append one JSON line per run here")
    ap.add_argument("--worker", nargs=3, metavar=("FRAMEWORK", "TASK", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        fw, task, seed = args.worker
        print(json.dumps(worker(fw, task, int(seed), args.epochs or EPOCHS[task], args.seq_len)))
        return 0
    # One thread each: on a machine shared with other work, OpenBLAS's second thread spins and a
    # 64x64 @ 64x256 product took 7 ms instead of 0.1 ms (measured 2026-12-02); quality, not speed, is
    # measured here.
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", TF_NUM_INTRAOP_THREADS="1",
               TF_NUM_INTEROP_THREADS="1", TF_CPP_MIN_LOG_LEVEL="3")
    rows = []
    for task in args.tasks:
        for seed in args.seeds:
            for fw in args.frameworks:
                cmd = [sys.executable, __file__, "--worker", fw, task, str(seed), "--seq-len", str(args.seq_len)]
                if args.epochs:
                    cmd += ["--epochs", str(args.epochs)]
                p = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if p.returncode != 0:
                    print(f"{fw} {task} seed {seed} failed:\n{p.stderr[-3000:]}", file=sys.stderr)
                    continue
                row = json.loads(p.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(row) + "\n")
    print(summarize(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
