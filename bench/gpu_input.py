"""GPU: one epoch of the seed convnet fed three ways (issue 19), in one process:

* ``arrays``: host NumPy arrays, as ``fit`` has always done (gather + upload per batch);
* ``tensors``: the data uploaded once as Tensors, batched on the device (the array path);
* ``dataset``: a ``deepgpu.data.Dataset`` of host batches: the next batch uploaded from
  pinned buffers on a second stream while the step runs (stage_to_device);
* ``cache-device``: the same Dataset after ``cache("device")`` (no upload after epoch 1).

    python3 -m pytest -q -m cuda tests/test_data_device.py && python3 bench/gpu_input.py

Prints the epoch's wall time and ms/step (epoch 2 of each, after a warm-up
epoch; the device synchronised at the end), and the share of the epoch the
loop waited for data: (dataset epoch - tensors epoch) / dataset epoch.
Random data shaped like Fashion-MNIST (60,000 x 28 x 28 x 1, 10 classes).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def main():
    import deepgpu as dg
    from deepgpu import backends, zoo
    from deepgpu.data import Dataset

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--graph", action="store_true", help="compile(cuda_graph=True)")
    args = ap.parse_args()
    dg.set_backend("cuda")
    B = backends.current()
    rng = np.random.default_rng(0)
    x = rng.random((args.n, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, args.n).astype(np.int32)
    steps = -(-args.n // args.batch)

    def model():
        dg.set_seed(0)
        m = zoo.convnet()
        m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"], cuda_graph=args.graph)
        return m

    def epoch_time(m, **fit_args):
        B.sync()
        t = time.perf_counter()
        m.fit(epochs=1, verbose=0, **fit_args)
        B.sync()
        return time.perf_counter() - t

    ds = Dataset.from_tensor_slices((x, y)).batch(args.batch).prefetch(2)
    cached = Dataset.from_tensor_slices((x, y)).batch(args.batch).cache("device")
    xt, yt = dg.tensor(x), dg.tensor(y)
    ways = {
        "arrays": dict(x=x, y=y, batch_size=args.batch, shuffle=False),
        "tensors": dict(x=xt, y=yt, batch_size=args.batch, shuffle=False),
        "dataset": dict(x=ds),
        "cache-device": dict(x=cached),
    }
    res = {}
    for name, kw in ways.items():
        m = model()
        epoch_time(m, **kw)  # warm-up: kernels, graph recording, the device cache's first pass
        res[name] = epoch_time(m, **kw)
        print(f"{name:13s} epoch {res[name]:7.2f} s  {1e3 * res[name] / steps:6.2f} ms/step", flush=True)
    wait = (res["dataset"] - res["tensors"]) / res["dataset"]
    print(f"share of the dataset epoch spent beyond the on-device epoch (waiting for data): {100 * wait:.1f}%")
    print(f"device: {B.device_name}; memory: {B.memory_info()}")


if __name__ == "__main__":
    main()
