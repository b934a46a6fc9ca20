"""Seed 003's "Invariance": the seed convnet on a 2,000-image stratified subset of Fashion-MNIST,
with and without an augmentation stack, tested on all 10,000 test images, beside Keras doing the same.

    python3 bench/augment_quality.py --epochs 30 --seeds 0 1 2

The subset: 200 images of each class, drawn once with NumPy's default_rng(0) (the same arrays for
every run and both libraries). Augmentation: RandomFlip("horizontal"), RandomRotation(0.05),
RandomZoom(0.1), RandomTranslation(0.1, 0.1) (Keras 3's layers and deepgpu's, same arguments), in
front of the seed convnet (deepgpu.zoo.convnet: 594,922 parameters). Adam 1e-3, batch 128, sparse
categorical cross-entropy. The runs alternate deepgpu / Keras per seed and setting. Prints one JSON
line per run, then a summary line (means, and the gain from augmentation for each library).
Needs keras (with TensorFlow) installed by hand for the Keras half (--peers none skips it).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

AUG = dict(flip="horizontal", rotation=0.05, zoom=0.1, translation=(0.1, 0.1))


def subset(x, y, per_class=200, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in range(10)])
    rng.shuffle(idx)
    return x[idx], y[idx]


def conv_layers(L):
    return [L.Conv2D(32, 3, activation="relu"), L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(2),
            L.Conv2D(64, 3, activation="relu"), L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2),
            L.Flatten(), L.Dropout(0.25), L.Dense(512, activation="relu"), L.Dropout(0.5),
            L.Dense(10, activation="softmax")]


def aug_layers(L, seed):
    return [L.RandomFlip(AUG["flip"], seed=seed), L.RandomRotation(AUG["rotation"], seed=seed + 1),
            L.RandomZoom(AUG["zoom"], seed=seed + 2),
            L.RandomTranslation(*AUG["translation"], seed=seed + 3)]


def run_deepgpu(data, seed, augment, epochs):
    import deepgpu as dg
    from deepgpu import layers as L

    dg.utils.set_random_seed(seed) if hasattr(dg, "utils") else dg.set_seed(seed)
    (x, y), (xt, yt) = data
    model = dg.Sequential([L.Input((28, 28, 1))] + (aug_layers(L, seed) if augment else []) + conv_layers(L))
    assert model.count_params() == 594922, model.count_params()
    model.compile(optimizer=dg.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    t = time.perf_counter()
    model.fit(x, y, batch_size=128, epochs=epochs, verbose=0, shuffle=True)
    fit_s = time.perf_counter() - t
    return float(model.evaluate(xt, yt, batch_size=500, verbose=0)[1]), fit_s


def run_keras(data, seed, augment, epochs):
    import keras
    L = keras.layers
    keras.utils.set_random_seed(seed)
    (x, y), (xt, yt) = data
    model = keras.Sequential([keras.Input((28, 28, 1))] + (aug_layers(L, seed) if augment else []) + conv_layers(L))
    assert model.count_params() == 594922, model.count_params()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    t = time.perf_counter()
    model.fit(x, y, batch_size=128, epochs=epochs, verbose=0, shuffle=True)
    fit_s = time.perf_counter() - t
    return float(model.evaluate(xt, yt, batch_size=500, verbose=0)[1]), fit_s


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--peers", choices=("keras", "none"), default="keras")
    args = ap.parse_args(argv)

    import numpy as np

    from deepgpu.datasets import fashion_mnist

    (x, y), (xt, yt) = fashion_mnist.load_data()
    x, y = subset(x, y)
    x = (x.astype(np.float32) / 255.0).reshape(-1, 28, 28, 1)
    xt = (xt.astype(np.float32) / 255.0).reshape(-1, 28, 28, 1)
    data = ((x, y.astype(np.int32)), (xt, yt.astype(np.int32)))
    libs = [("deepgpu", run_deepgpu)] + ([("keras", run_keras)] if args.peers == "keras" else [])
    acc = {}
    for seed in args.seeds:
        for augment in (False, True):
            order = libs if (seed + augment) % 2 == 0 else libs[::-1]  # alternate who runs first
            for name, fn in order:
                a, s = fn(data, seed, augment, args.epochs)
                acc.setdefault((name, augment), []).append(a)
                print(json.dumps({"lib": name, "seed": seed, "augment": augment, "epochs": args.epochs,
                                  "test_accuracy": round(a, 4), "fit_seconds": round(s, 1)}), flush=True)
    summary = {}
    for name, _ in libs:
        plain, aug = acc[(name, False)], acc[(name, True)]
        summary[name] = {"plain_mean": round(statistics.mean(plain), 4), "augmented_mean": round(statistics.mean(aug), 4),
                         "gain": round(statistics.mean(aug) - statistics.mean(plain), 4),
                         "plain_sd": round(statistics.pstdev(plain), 4), "augmented_sd": round(statistics.pstdev(aug), 4)}
    print(json.dumps({"summary": summary, "seeds": args.seeds, "epochs": args.epochs}), flush=True)


if __name__ == "__main__":
    main()
