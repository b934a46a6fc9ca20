"""The seed convnet on Fashion-MNIST in float32 and under mixed_float16 / mixed_bfloat16 (issue 20's bar:
mixed precision within 0.5 points of float32).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 bench/mixed_quality.py [--epochs 3]
        [--policies float32,mixed_float16] [--seeds 0,1,2] [--backend cpu]

deepgpu.zoo.convnet (594,922 parameters), Adam 1e-3, batch 128; for each seed the same initial
weights and data order for every policy (policies alternate within a seed, so load drifts hit
them alike). Prints the test accuracy after each run, then mean +- std (sample) per policy.
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
ap.add_argument("--seeds", default="0", help="comma-separated seeds, one run per policy each")
ap.add_argument("--backend", default="cpu")
args = ap.parse_args()
seeds = [int(s) for s in args.seeds.split(",")]
dg.set_backend(args.backend)
(x, y), (xt, yt) = fashion_mnist.load_data()
x = (x[..., None] / 255.0).astype(np.float32)
xt = (xt[..., None] / 255.0).astype(np.float32)
accs = {}
for seed, policy in [(s, p) for s in seeds for p in args.policies.split(",")]:
    mixed_precision.set_global_policy(policy)
    try:
        dg.set_seed(seed)
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
    accs.setdefault(policy, []).append(acc * 100)
    print(f"{policy:15s} seed {seed} test accuracy {acc * 100:.2f}%  test loss {loss:.4f}  train loss "
          f"{h.history['loss'][-1]:.4f}  fit {took:.0f} s{extra}  ({time.strftime('%H:%M UTC', time.gmtime())}, "
          f"load {os.getloadavg()[0]:.0f})", flush=True)
for policy, a in accs.items():
    sd = np.std(a, ddof=1) if len(a) > 1 else float("nan")
    print(f"{policy:15s} mean {np.mean(a):.2f} +- {sd:.2f} % over seeds {args.seeds} "
          f"({', '.join(f'{v:.2f}' for v in a)})")
