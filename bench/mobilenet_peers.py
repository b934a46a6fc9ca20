"""MobileNetV2 (224x224x3, 1000 classes) in deepgpu beside PyTorch and Keras on the CPU, one run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 bench/mobilenet_peers.py \
        [--rounds 3] [--steps 2] [--batch 32] [--predict 100] [--size 224] [--threads 2] [--out FILE.json]
        [--baseline DIR]

``--steps 0`` times predict only (no training step, not even the warm-up one).

``--baseline DIR`` adds a worker "deepgpu-base" that imports deepgpu from DIR (an older checkout,
e.g. ``git archive <commit> | tar -x -C DIR``), timed in the same rounds: before / after figures.

For issue 17. Each framework runs in its own worker process (its own thread pools), built and
warmed up once (one training step, one predict); the parent then alternates them round by round
(the starting worker rotated each round), one worker busy at a time, so that noise from other
work on a shared machine hits all of them alike. Per round a worker times ``--steps`` training
steps at ``--batch`` and one predict of ``--predict`` images (batches of 32). The table gives the
median over all rounds.

The networks: ``deepgpu.applications.MobileNetV2(weights=None)``,
``keras.applications.MobileNetV2(weights=None)`` (Keras 3 on TensorFlow) and
``torchvision.models.mobilenet_v2()`` when torchvision is installed, else the same network
written here in PyTorch (NCHW; inverted residual blocks as Keras's, BatchNorm eps 1e-3,
ReLU6, dropout-free head); the header gives each one's parameter count (PyTorch keeps the
BatchNorm running statistics as buffers, not parameters: 34,112 fewer). All train with
Adam(1e-3) and sparse categorical cross-entropy on the same random data, float32, ``--threads``
threads (``DEEPGPU_NUM_THREADS``, the BLAS and OpenMP variables, ``torch.set_num_threads``,
TensorFlow's intra-op pool; inter-op 1).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WORKERS = ("deepgpu", "torch", "keras")
BASE = "deepgpu-base"


def _data(a):
    import numpy as np
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (a.batch, a.size, a.size, 3)).astype("float32")
    y = rng.integers(0, 1000, a.batch).astype("int32")
    xp = rng.uniform(-1, 1, (a.predict, a.size, a.size, 3)).astype("float32")
    return x, y, xp


def _torch_mobilenet_v2():
    import torch.nn as nn

    def cbr(i, o, k=1, s=1, groups=1, act=True):
        mods = [nn.Conv2d(i, o, k, s, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(o, eps=1e-3)]
        return mods + ([nn.ReLU6(inplace=True)] if act else [])

    class Block(nn.Module):
        def __init__(self, i, o, s, e):
            super().__init__()
            h = i * e
            self.res = s == 1 and i == o
            self.body = nn.Sequential(*((cbr(i, h) if e != 1 else []) + cbr(h, h, 3, s, groups=h) + cbr(h, o, act=False)))

        def forward(self, x):
            return x + self.body(x) if self.res else self.body(x)

    cfg = [(16, 1, 1), (24, 2, 6), (24, 1, 6), (32, 2, 6), (32, 1, 6), (32, 1, 6), (64, 2, 6), (64, 1, 6),
           (64, 1, 6), (64, 1, 6), (96, 1, 6), (96, 1, 6), (96, 1, 6), (160, 2, 6), (160, 1, 6), (160, 1, 6),
           (320, 1, 6)]
    mods, c = cbr(3, 32, 3, 2), 32
    for o, s, e in cfg:
        mods.append(Block(c, o, s, e))
        c = o
    mods += cbr(c, 1280) + [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, 1000)]
    return nn.Sequential(*mods)


def _worker_setup(kind, a):
    """(train_step(), predict(), parameter count, version string) for one framework."""
    x, y, xp = _data(a)
    if kind in ("deepgpu", BASE):
        import deepgpu as dg
        from deepgpu import applications, optimizers
        from deepgpu.kernels import cpu
        m = applications.MobileNetV2(weights=None, input_shape=(a.size, a.size, 3))
        m.compile(optimizer=optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        return (lambda: m.train_on_batch(x, y), lambda: m.predict(xp, batch_size=32, verbose=0).data_sync(),
                m.count_params(), f"deepgpu {dg.__version__} from {os.path.dirname(os.path.dirname(dg.__file__))}, "
                                   f"CPU kernels {cpu.status()}")
    if kind == "torch":
        import torch
        torch.set_num_threads(a.threads)
        try:
            import torchvision
            m, how = torchvision.models.mobilenet_v2(), f"torchvision {torchvision.__version__}"
        except ImportError:
            m, how = _torch_mobilenet_v2(), "written in bench/mobilenet_peers.py"
        opt = torch.optim.Adam(m.parameters(), 1e-3)
        tx, ty = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y.astype("int64"))
        txp = torch.from_numpy(xp.transpose(0, 3, 1, 2).copy())
        loss_fn = torch.nn.CrossEntropyLoss()

        def step():
            m.train()
            opt.zero_grad()
            loss = loss_fn(m(tx), ty)
            loss.backward()
            opt.step()
            return loss.item()

        def predict():
            m.eval()
            with torch.no_grad():
                return [m(txp[i:i + 32]).numpy() for i in range(0, len(txp), 32)]

        return step, predict, sum(p.numel() for p in m.parameters()), f"PyTorch {torch.__version__} ({how})"
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    m = keras.applications.MobileNetV2(weights=None, input_shape=(a.size, a.size, 3))
    m.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    return (lambda: m.train_on_batch(x, y), lambda: m.predict(xp, batch_size=32, verbose=0), m.count_params(),
            f"Keras {keras.__version__} on TensorFlow {tf.__version__}")


def worker(kind, a) -> int:
    step, predict, params, version = _worker_setup(kind, a)
    if a.steps:
        step()
    predict()
    print(json.dumps({"ready": kind, "params": params, "version": version}), flush=True)
    for line in sys.stdin:
        if line.strip() != "round":
            break
        steps = []
        for _ in range(a.steps):
            t = time.perf_counter()
            step()
            steps.append(time.perf_counter() - t)
        t = time.perf_counter()
        predict()
        print(json.dumps({"steps": steps, "predict": time.perf_counter() - t}), flush=True)
    return 0


def _env(a):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env.update(DEEPGPU_NUM_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads),
               OPENBLAS_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads), TF_CPP_MIN_LOG_LEVEL="2",
               KERAS_BACKEND="tensorflow", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--predict", type=int, default=100)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--peers", default=",".join(WORKERS))
    p.add_argument("--out")
    p.add_argument("--baseline", help="an older deepgpu checkout, timed as the worker deepgpu-base")
    p.add_argument("--worker", choices=WORKERS + (BASE,), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return worker(a.worker, a)
    slow = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ]
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
          f"load {os.getloadavg()[0]:.1f}; unset in the workers: {slow or 'none were set'}", flush=True)
    args = [sys.executable, os.path.abspath(__file__), "--steps", str(a.steps), "--batch", str(a.batch),
            "--predict", str(a.predict), "--size", str(a.size), "--threads", str(a.threads)]
    procs, info = {}, {}
    for kind in a.peers.split(",") + ([BASE] if a.baseline else []):
        env = _env(a)
        if kind == BASE:
            env["PYTHONPATH"] = os.path.abspath(a.baseline)
        proc = subprocess.Popen(args + ["--worker", kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, env=env)
        line = proc.stdout.readline()
        if not line:
            print(f"# {kind}: the worker did not start (not installed?); skipped", flush=True)
            continue
        procs[kind], info[kind] = proc, json.loads(line)
        print(f"# {kind}: {info[kind]['version']}; {info[kind]['params']:,} parameters", flush=True)
    times = {k: {"steps": [], "predict": []} for k in procs}
    kinds = list(procs)
    for r in range(a.rounds):
        for kind in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
            procs[kind].stdin.write("round\n")
            procs[kind].stdin.flush()
            res = json.loads(procs[kind].stdout.readline())
            times[kind]["steps"] += res["steps"]
            times[kind]["predict"].append(res["predict"])
            print(f"# round {r + 1} {kind}: steps {[round(s, 2) for s in res['steps']]} s, "
                  f"predict {res['predict']:.2f} s (load {os.getloadavg()[0]:.1f})", flush=True)
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()
    print(f"\n| MobileNetV2 {a.size}x{a.size}x3 | " + " | ".join(kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    if a.steps:
        print(f"| train step, batch {a.batch} (s) | " + " | ".join(f"{statistics.median(times[k]['steps']):.2f}"
                                                           for k in kinds) + " |")
    print(f"| predict {a.predict} images (s) | " + " | ".join(f"{statistics.median(times[k]['predict']):.2f}"
                                                    for k in kinds) + " |")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"args": vars(a), "info": info, "times": times}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
