"""The seed convnet on Fashion-MNIST in float32 and under mixed_float16 / mixed_bfloat16 (issue 20's bar:
mixed precision within 0.5 points of float32).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 bench/mixed_quality.py [--epochs 3]
        [--policies float32,mixed_float16] [--backend cpu]

deepgpu.zoo.convnet (594,922 parameters), Adam 1e-3, batch 128, seed 0, the
same data order for every policy; prints the test accuracy after each run.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402

import deepgpu as dg  # noqa: E402
from deepgpu import mixed_precision, zoo  # noqa: E402
from deepgpu.data import fashion_mnist  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--epochs", type=int, default=3)
ap.add_argument("--policies", default="float32,mixed_float16")
ap.add_argument("--backend", default="cpu")
args = ap.parse_args()
dg.set_backend(args.backend)
(x, y), (xt, yt) = fashion_mnist.load_data()
x = (x[..., None] / 255.0).astype(np.float32)
xt = (xt[..., None] / 255.0).astype(np.float32)
for policy in args.policies.split(","):
    mixed_precision.set_global_policy(policy)
    try:
        dg.set_seed(0)
        model = zoo.convnet()
    finally:
        mixed_precision.set_global_policy(None)
    model.compile(dg.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    t = time.perf_counter()
    h = model.fit(x, y, batch_size=128, epochs=args.epochs, verbose=0, shuffle=True)
    took = time.perf_counter() - t
    loss, acc = model.evaluate(xt, yt, batch_size=512)
    extra = ""
    if isinstance(model.optimizer, mixed_precision.LossScaleOptimizer):
        extra = f", final loss scale {float(model.optimizer.dynamic_scale.data_sync()):g}"
    print(f"{policy:15s} test accuracy {acc * 100:.2f}%  test loss {loss:.4f}  train loss "
          f"{h.history['loss'][-1]:.4f}  fit {took:.0f} s{extra}  ({time.strftime('%H:%M UTC', time.gmtime())}, "
          f"load {os.getloadavg()[0]:.0f})", flush=True)
