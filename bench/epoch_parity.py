"""The seed convnet (or DNN) trained on Fashion-MNIST on one backend, from seeded initial weights.

    python3 bench/epoch_parity.py --backend cpu  --out cpu.json
    python3 bench/epoch_parity.py --backend cuda --out cuda.json [--cuda-graph]

The initial weights come from ``set_seed(--seed)`` through the host
generator, so they are the same bytes on every backend (the JSON records
their checksum to prove it); the batch order is the same too. Dropout
masks are not: each backend draws its own. Trains ``--epochs`` epochs
(Adam 1e-3, batch 128, images scaled to [0, 1]) and writes the test loss
and accuracy with the time taken.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", required=True, choices=("cpu", "cuda"))
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--model", choices=("cnn", "dnn"), default="cnn")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cuda-graph", action="store_true")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import numpy as np

    import deepgpu as dg
    from deepgpu import zoo
    from deepgpu.data import fashion_mnist

    dg.set_backend(args.backend)
    (x, y), (xt, yt) = fashion_mnist.load_data(args.data_dir)
    x = (x.astype(np.float32) / 255.0).reshape(-1, 28, 28, 1)
    xt = (xt.astype(np.float32) / 255.0).reshape(-1, 28, 28, 1)
    dg.set_seed(args.seed)
    model = zoo.convnet() if args.model == "cnn" else zoo.dnn()
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(w).tobytes() for w in model.get_weights())).hexdigest()
    model.compile(optimizer=dg.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], cuda_graph=args.cuda_graph)
    t0 = time.perf_counter()
    hist = model.fit(x, y, batch_size=128, epochs=args.epochs, verbose=2)
    train_s = time.perf_counter() - t0
    loss, acc = model.evaluate(xt, yt, batch_size=512)
    res = {"model": args.model, "backend": args.backend, "cuda_graph": args.cuda_graph, "epochs": args.epochs, "seed": args.seed,
           "initial_weights_sha256": digest, "train_s": round(train_s, 2),
           "history": hist.history, "test_loss": loss, "test_accuracy": acc,
           "deepgpu": dg.__version__, "numpy": np.__version__}
    if args.backend == "cuda":
        import cupy
        res["cupy"] = cupy.__version__
        res["device"] = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps({k: res[k] for k in ("model", "backend", "epochs", "test_accuracy", "test_loss", "train_s",
                                          "initial_weights_sha256")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
