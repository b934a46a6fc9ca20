"""The peer of bench/epoch_parity.py: the same network and settings trained in Keras.

    python3 bench/keras_quality.py --model dnn --epochs 3 --seeds 0 1 2 3 4 5

Fashion-MNIST read by deepgpu's IDX reader (the same arrays), scaled to
[0, 1]; Adam 1e-3, batch 128, sparse categorical cross-entropy, all 60,000
training images, shuffled each epoch; the seed convnet or Flatten-512-512-10
as deepgpu.zoo builds them. Prints one JSON line per seed and the mean and
standard deviation of the test accuracy. Needs ``keras`` with a backend
(TensorFlow) installed by hand; deepgpu never depends on it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys


def build(keras, model):
    L = keras.layers
    if model == "dnn":
        return keras.Sequential([keras.Input((28, 28, 1)), L.Flatten(), L.Dense(512, activation="relu"),
                                 L.Dense(512, activation="relu"), L.Dense(10, activation="softmax")])
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(32, 3, activation="relu"), L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(64, 3, activation="relu"), L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2),
        L.Flatten(), L.Dropout(0.25), L.Dense(512, activation="relu"), L.Dropout(0.5),
        L.Dense(10, activation="softmax")])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=("cnn", "dnn"), default="cnn")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)

    import numpy as np

    from deepgpu.data import fashion_mnist

    import keras

    (x, y), (xt, yt) = fashion_mnist.load_data(args.data_dir)
    x = (x.astype(np.float32) / 255.0).reshape(-1, 28, 28, 1)
    xt = (xt.astype(np.float32) / 255.0).reshape(-1, 28, 28, 1)
    accs = []
    for seed in args.seeds:
        keras.utils.set_random_seed(seed)
        model = build(keras, args.model)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        model.fit(x, y, batch_size=128, epochs=args.epochs, verbose=0)
        loss, acc = model.evaluate(xt, yt, batch_size=512, verbose=0)
        accs.append(acc)
        print(json.dumps({"framework": f"keras {keras.__version__} ({keras.backend.backend()})",
                          "model": args.model, "epochs": args.epochs, "seed": seed,
                          "test_accuracy": round(float(acc), 4), "test_loss": round(float(loss), 4)}),
              flush=True)
    if len(accs) > 1:
        print(f"mean {statistics.mean(accs) * 100:.2f}%, sd {statistics.stdev(accs) * 100:.2f} points "
              f"over {len(accs)} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
