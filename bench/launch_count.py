"""Launches per training step of the seed convnet on the CUDA backend's custom-kernel path, without a GPU.

    python3 bench/launch_count.py [--batch 2] [--metrics accuracy] [--json out.json]

Runs ``train_on_batch`` of ``zoo.convnet()`` on the CuPy backend's methods over
NumPy arrays, with our ``.cu`` kernels compiled for the CPU (the emulation of
tests/test_kernels_cuda.py), and counts per backend primitive: its calls,
the custom kernels they launched, and how many calls launched none of ours
(those run CuPy's own routines on a GPU: one or more CuPy kernels each, or
only a view such as a reshape). On the GPU each launch costs host time (see
../shared/GPU_NOTES.md), so this count is what a change to the eager step's
launches can be checked by here; times are for bench/gpu_step.py on a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--metrics", nargs="*", default=["accuracy"])
    ap.add_argument("--steps", type=int, default=2, help="steps counted after one warm-up step")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    import deepgpu
    from deepgpu import backends, optimizers, zoo
    from deepgpu import kernels as K
    from deepgpu.backends.cupy_backend import CupyBackend
    from deepgpu.tensor import Tensor
    from deepgpu.testing.emulation import emulator
    from test_kernels_cuda import count_launches

    K._emulator = emulator()  # built once, kept on disk beside the CPU kernel cache
    B = CupyBackend.__new__(CupyBackend)  # its methods over NumPy: no GPU needed
    B.xp = np
    B._device = lambda: None  # no CUDA device to ask
    B._init_kernels("custom")
    B.to_numpy = lambda a: np.array(a, copy=True)
    backends._instances["cuda"] = B
    backends._state.backend = B
    deepgpu.set_seed(0)
    model = zoo.convnet()
    model.compile(optimizer=optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=list(args.metrics))
    rng = np.random.default_rng(0)
    x = Tensor(rng.uniform(0, 1, (args.batch, 28, 28, 1)).astype(np.float32), B)
    y = Tensor(rng.integers(0, 10, args.batch).astype(np.int32), B)
    model.train_on_batch(x, y)
    per = count_launches(B, lambda: model.train_on_batch(x, y), args.steps)
    print(f"seed convnet, train_on_batch, metrics {args.metrics}: per step, on the custom-kernel path")
    print(f"{'primitive':34s} {'calls':>6s} {'ours':>6s} {'CuPy/view':>10s}")
    for n, (c, ours, other) in sorted(per.items(), key=lambda kv: (-kv[1][1], -kv[1][0])):
        print(f"{n:34s} {c:6.1f} {ours:6.1f} {other:10.1f}")
    tot = [sum(v[i] for v in per.values()) for i in range(3)]
    print(f"{'total':34s} {tot[0]:6.1f} {tot[1]:6.1f} {tot[2]:10.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"batch": args.batch, "metrics": args.metrics, "per_step": per,
                       "total": dict(zip(("calls", "custom_launches", "calls_without_custom"), tot))}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
