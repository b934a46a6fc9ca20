"""Conv1D (on the 2-D primitives over a unit height axis) beside PyTorch's nn.Conv1d, one run, alternated.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 bench/conv1d_micro.py [--threads 2] [--rounds 3]

For issue 16's question whether Conv1D needs a dedicated path: forward + backward (input and
weight gradients) of Conv1D(128, 5, padding="same", activation="relu") on [64, 200, 128]
float32, the median of 5 timed calls per round after one warm-up, deepgpu and PyTorch
alternated round by round. Threads: ``--threads`` for the BLAS, deepgpu and torch.
"""
import argparse
import os
import statistics
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--rounds", type=int, default=3)
args = ap.parse_args()
for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "DEEPGPU_NUM_THREADS"):
    os.environ[k] = str(args.threads)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import deepgpu as dg  # noqa: E402
from benchutil import alternated  # noqa: E402  (bench/, beside this script)
import numpy as np  # noqa: E402
from deepgpu import layers as L, ops  # noqa: E402
from deepgpu.autograd import variable_grads  # noqa: E402

N, T, C, F, K = 64, 200, 128, 128, 5
x = np.random.default_rng(0).standard_normal((N, T, C)).astype("float32")
layer = L.Conv1D(F, K, padding="same", activation="relu")
xt = dg.tensor(x)
xt.requires_grad = True
layer(xt)
steps = {"deepgpu": lambda: variable_grads(lambda: ops.sum(layer(xt)), layer.trainable_weights + [xt])}
try:
    import torch
    torch.set_num_threads(args.threads)
    conv = torch.nn.Conv1d(C, F, K, padding=K // 2)
    tx = torch.tensor(x).transpose(1, 2).contiguous().requires_grad_()

    def torch_step():
        conv.zero_grad()
        tx.grad = None
        torch.relu(conv(tx)).sum().backward()
    steps["torch"] = torch_step
except ImportError:
    print("torch: not installed, skipped")
times = alternated(steps, args.rounds)
print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()[0]:.1f}, threads {args.threads}; "
      f"deepgpu {dg.__version__}" + (f", torch {torch.__version__}" if "torch" in steps else ""))
for name, ts in times.items():
    print(f"{name:8} {statistics.median(ts) * 1e3:7.0f} ms  (rounds: {', '.join(f'{t * 1e3:.0f}' for t in ts)})")
