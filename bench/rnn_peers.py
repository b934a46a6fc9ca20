"""Recurrent text classifiers: deepgpu beside PyTorch and Keras on the CPU, one run, peers alternated.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 bench/rnn_peers.py [--nets lstm,gru,bilstm]
        [--rounds 5] [--steps 3] [--threads 2] [--frameworks deepgpu,torch,keras] [--out FILE.json]

For issue 16: Embedding(20000, 128) + LSTM(128) + Dense(2, softmax), sequences of 200 token
ids, batch 64, sparse categorical cross-entropy, Adam(1e-3): the time of one training step
after warm-up. ``gru``: the same with GRU(128) (reset_after=True, Keras's default and
PyTorch's form); ``bilstm``: two stacked Bidirectional(LSTM(128)) layers (the first returning
sequences; concat merge) before the Dense.

Each framework runs in its own worker process (its own thread pools), started once; the
parent then alternates them round by round (the starting worker rotated each round), so
that other work on a shared machine hits all of them alike, and reports per net and
framework the median over rounds of the per-step time (each round: ``--steps`` steps).
  deepgpu  Sequential + ``compile`` + ``train_on_batch`` (the fused C cell each step)
  torch    nn.Embedding + nn.LSTM / nn.GRU (batch_first; 2 layers, bidirectional for bilstm),
           the last layer's final hidden state(s) -> nn.Linear; zero_grad, forward, loss,
           backward, Adam step, ``loss.item()``
  keras    Keras 3 on TensorFlow, the deepgpu model's twin, ``train_on_batch``
Threads: ``--threads`` for the BLAS (``OPENBLAS/OMP/MKL_NUM_THREADS``), ``DEEPGPU_NUM_THREADS``,
``torch.set_num_threads``, TensorFlow's intra-op pool (inter-op 1). ``OPENBLAS_CORETYPE`` and
``OPENBLAS_L2_SIZE`` are removed from the workers' environment. A peer that is not installed
is skipped with a line saying so.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
VOCAB, EMBED, UNITS, SEQ, BATCH, CLASSES = 20000, 128, 128, 200, 64, 2


def _data():
    import numpy as np
    rng = np.random.default_rng(16)
    return (rng.integers(1, VOCAB, (BATCH, SEQ)).astype("int32"), rng.integers(0, CLASSES, BATCH).astype("int32"))


# ------------------------------------------------------------------ workers
def _deepgpu(net):
    import deepgpu as dg
    from deepgpu import layers as L, optimizers

    dg.set_seed(0)
    rnn = {"lstm": lambda: [L.LSTM(UNITS)], "gru": lambda: [L.GRU(UNITS)],
           "bilstm": lambda: [L.Bidirectional(L.LSTM(UNITS, return_sequences=True)),
                              L.Bidirectional(L.LSTM(UNITS))]}[net]()
    model = dg.Sequential([L.Input((SEQ,), dtype="int32"), L.Embedding(VOCAB, EMBED), *rnn,
                           L.Dense(CLASSES, activation="softmax")])
    model.compile(optimizer=optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    x, y = _data()
    return lambda: model.train_on_batch(x, y), model.count_params()


def _torch(net, threads):
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(VOCAB, EMBED)
            kind = nn.GRU if net == "gru" else nn.LSTM
            bi = net == "bilstm"
            self.rnn = kind(EMBED, UNITS, num_layers=2 if bi else 1, bidirectional=bi, batch_first=True)
            self.out = nn.Linear(UNITS * (2 if bi else 1), CLASSES)

        def forward(self, x):
            _, state = self.rnn(self.embed(x))
            h = state[0] if isinstance(state, tuple) else state  # [layers * directions, N, units]
            h = torch.cat([h[-2], h[-1]], 1) if net == "bilstm" else h[-1]
            return self.out(h)

    model = Net()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = nn.CrossEntropyLoss()
    x, y = (torch.as_tensor(a).long() for a in _data())

    def step():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()
    return step, sum(p.numel() for p in model.parameters())


def _keras(net, threads):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(0)
    rnn = {"lstm": lambda: [L.LSTM(UNITS)], "gru": lambda: [L.GRU(UNITS)],
           "bilstm": lambda: [L.Bidirectional(L.LSTM(UNITS, return_sequences=True)),
                              L.Bidirectional(L.LSTM(UNITS))]}[net]()
    model = keras.Sequential([keras.Input((SEQ,), dtype="int32"), L.Embedding(VOCAB, EMBED), *rnn,
                              L.Dense(CLASSES, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    x, y = _data()
    return lambda: model.train_on_batch(x, y), model.count_params()


def worker(framework, nets, threads):
    """Reads ``NET STEPS`` lines; answers each with a JSON line {net, seconds per step, params}."""
    if framework == "deepgpu":
        import deepgpu  # noqa: F401  (before NumPy, as a user's script)
    steps = {}
    for net in nets:
        make = {"deepgpu": lambda n: _deepgpu(n), "torch": lambda n: _torch(n, threads),
                "keras": lambda n: _keras(n, threads)}[framework]
        step, params = make(net)
        step()  # warm-up: builds, compiles, allocates
        step()
        steps[net] = (step, params)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        net, n = line.split()
        step, params = steps[net]
        t = time.perf_counter()
        for _ in range(int(n)):
            step()
        print(json.dumps({"net": net, "s": (time.perf_counter() - t) / int(n), "params": params}), flush=True)


# ------------------------------------------------------------------- parent
def _installed(framework):
    mod = {"deepgpu": "deepgpu", "torch": "torch", "keras": "keras"}[framework]
    r = subprocess.run([sys.executable, "-c", f"import {mod}"], capture_output=True, cwd=REPO)
    return r.returncode == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", default="lstm,gru,bilstm")
    ap.add_argument("--frameworks", default="deepgpu,torch,keras")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    nets = args.nets.split(",")
    if args.worker:
        worker(args.worker, nets, args.threads)
        return
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    t = str(args.threads)
    env.update(OMP_NUM_THREADS=t, OPENBLAS_NUM_THREADS=t, MKL_NUM_THREADS=t, DEEPGPU_NUM_THREADS=t,
               PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""))
    workers = {}
    for fw in args.frameworks.split(","):
        if not _installed(fw):
            print(f"{fw}: not installed, skipped")
            continue
        p = subprocess.Popen([sys.executable, __file__, "--worker", fw, "--nets", args.nets, "--threads", t],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
        workers[fw] = p
    for fw, p in workers.items():  # started one at a time above; wait for each to be warm
        line = p.stdout.readline()
        if not line:
            sys.exit(f"{fw}: the worker died while building its models")
    times = {(fw, net): [] for fw in workers for net in nets}
    params = {}
    order = list(workers)
    for r in range(args.rounds):
        k = r % len(order)
        for fw in order[k:] + order[:k]:
            p = workers[fw]
            for net in nets:
                p.stdin.write(f"{net} {args.steps}\n")
                p.stdin.flush()
                got = json.loads(p.stdout.readline())
                times[(fw, net)].append(got["s"])
                params[(fw, net)] = got["params"]
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    for p in workers.values():
        p.stdin.close()
        p.wait()
    versions = {}
    for fw, mod in (("torch", "torch"), ("keras", "keras"), ("deepgpu", "deepgpu")):
        if fw in workers:
            r = subprocess.run([sys.executable, "-c", f"import {mod}; print({mod}.__version__)"], capture_output=True,
                               text=True, env=env, cwd=REPO)
            versions[fw] = r.stdout.strip()
    print(f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}; threads {t}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("versions:", ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"{'net':8} " + " ".join(f"{fw + ' ms/step':>18}" for fw in workers) + "   params")
    result = {"rounds": args.rounds, "steps": args.steps, "threads": args.threads, "versions": versions, "nets": {}}
    for net in nets:
        med = {fw: statistics.median(times[(fw, net)]) * 1e3 for fw in workers}
        print(f"{net:8} " + " ".join(f"{med[fw]:18.0f}" for fw in workers) + "   " +
              ", ".join(f"{fw} {params[(fw, net)]:,}" for fw in workers))
        result["nets"][net] = {"median_ms": med, "all_ms": {fw: [s * 1e3 for s in times[(fw, net)]] for fw in workers},
                               "params": {fw: params[(fw, net)] for fw in workers}}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
