"""Where a GPU training step's time goes, per backend primitive.

    python3 bench/gpu_profile.py [--batch 128] [--steps 20] [--kernels custom|cupy]

Wraps every public method of the active CUDA backend so that each top-level
call records a pair of CUDA events around itself, runs ``--steps`` training
steps of the seed convnet (Adam, ``train_on_batch``), then prints per
primitive: calls per step, device milliseconds per step (event pairs) and
the host milliseconds spent inside the call (Python and launch overhead).
The events themselves add a little launch overhead; compare rows, not the
total with an unwrapped step.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import time

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--kernels", default="custom", choices=("custom", "cupy"))
    ap.add_argument("--json", default=None, help="also write the table here")
    args = ap.parse_args(argv)

    import cupy

    import deepgpu as dg
    from deepgpu import backends, optimizers, zoo
    from deepgpu.tensor import Tensor

    dg.set_backend("cuda")
    B = backends.current()
    B.kernels = args.kernels
    dg.set_seed(0)
    model = zoo.convnet()
    # The eager step's primitives are profiled: recording (the default, "auto") would hide them.
    model.compile(optimizer=optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", cuda_graph=False)
    rng = np.random.default_rng(0)
    x = Tensor(B.asarray(rng.uniform(0, 1, (args.batch, 28, 28, 1)).astype(np.float32)), B)
    y = Tensor(B.asarray(rng.integers(0, 10, args.batch).astype(np.int32)), B)
    for _ in range(3):
        model.train_on_batch(x, y)
    B.sync()

    records = []  # (name, start event, end event, host seconds)
    depth = [0]
    names = [n for n in dir(type(B)) if not n.startswith("_") and callable(getattr(type(B), n, None))
             and n not in ("sync", "to_numpy", "is_array", "memory_info", "seed", "permutation")]

    def wrap(name, fn):
        def inner(*a, **k):
            if depth[0]:
                return fn(*a, **k)
            depth[0] += 1
            s, e = cupy.cuda.Event(), cupy.cuda.Event()
            t0 = time.perf_counter()
            s.record()
            try:
                return fn(*a, **k)
            finally:
                e.record()
                records.append((name, s, e, time.perf_counter() - t0))
                depth[0] -= 1
        return inner

    for n in names:
        setattr(B, n, wrap(n, getattr(B, n)))
    t0 = time.perf_counter()
    for _ in range(args.steps):
        model.train_on_batch(x, y)
    B.sync()
    wall = (time.perf_counter() - t0) * 1e3 / args.steps
    for n in names:
        delattr(B, n)

    agg = collections.defaultdict(lambda: [0, 0.0, 0.0])
    for name, s, e, host in records:
        a = agg[name]
        a[0] += 1
        a[1] += cupy.cuda.get_elapsed_time(s, e)
        a[2] += host * 1e3
    rows = sorted(((n, c / args.steps, d / args.steps, h / args.steps) for n, (c, d, h) in agg.items()),
                  key=lambda r: -r[2])
    print(f"seed convnet, batch {args.batch}, kernels={args.kernels}: {wall:.3f} ms wall per step "
          f"(with the events)")
    print(f"{'primitive':28s} {'calls':>6s} {'device ms':>10s} {'host ms':>9s}")
    for n, c, d, h in rows:
        print(f"{n:28s} {c:6.1f} {d:10.4f} {h:9.4f}")
    print(f"{'total':28s} {sum(r[1] for r in rows):6.1f} {sum(r[2] for r in rows):10.4f} "
          f"{sum(r[3] for r in rows):9.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"batch": args.batch, "kernels": args.kernels, "wall_ms": wall,
                       "rows": [dict(zip(("primitive", "calls", "device_ms", "host_ms"), r)) for r in rows]},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
