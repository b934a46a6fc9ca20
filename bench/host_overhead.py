"""Host time of the CUDA backend's eager step without a GPU: deepgpu's own Python per step.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 bench/host_overhead.py \
        [--batch 2] [--steps 200] [--rounds 5] [--nets convnet,resnet20] [--no-torch] [--profile 12]

Runs ``train_on_batch`` and ``predict_on_batch`` on the CuPy backend's custom-kernel
path over NumPy arrays with every launch of our kernels replaced by a no-op (the
outputs are left uninitialised; nothing reads them but the loss's float), at
batch 2, so that what remains is the Python of layers, autograd, the backend
and the launchers (argument checks, plans, packing). The CuPy routines the
backend still calls (the loss's mean, the metric sums, ...) run as NumPy's on
these tiny arrays: a few microseconds each, less than CuPy's own host cost
per launch (about 10 us), which this does not include.

Prints, per network: host CPU microseconds per step (process time, median of the rounds' means),
our launches and the CuPy routine calls per step (by routine), and with
``--profile N`` the top N functions of the training step by own CPU time
(sampled on SIGPROF ticks, not traced). Beside it, in the same run and alternated round by round, PyTorch's CPU
eager step at batch 2 (one thread: its dispatch cost plus the small compute) on
the same network and on a thin copy (every conv / hidden width 4).
"""
from __future__ import annotations

import argparse
import collections
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np

NETS = {"convnet": ((28, 28, 1), "seed convnet (zoo.convnet, 28x28x1)"),
        "resnet20": ((32, 32, 3), "ResNet-20 (3 stages x 3 basic blocks, 16/32/64, 32x32x3)")}


# ------------------------------------------------------------------ deepgpu side
def _deepgpu_net(net, widths=(16, 32, 64)):
    from deepgpu import layers as L
    from deepgpu import zoo
    from deepgpu.layers.base import Input
    from deepgpu.models import Model

    shape = NETS[net][0]
    if net == "convnet":
        return zoo.convnet(input_shape=shape)
    inputs = Input(shape=shape)
    x = L.Conv2D(widths[0], 3, padding="same", use_bias=False)(inputs)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    for i, f in enumerate(widths):
        for j in range(3):
            x = zoo._residual_block(x, f, 2 if i > 0 and j == 0 else 1)
    x = L.GlobalAveragePooling2D()(x)
    return Model(inputs, L.Dense(10, activation="softmax")(x), name="resnet20")


class _Launches:
    """The kernel hook: counts launches and does no work."""

    def __init__(self):
        self.n = 0
        self.by_name = collections.Counter()

    def __call__(self, name, grid, block, args):
        self.n += 1
        self.by_name[name] += 1


def _setup_backend():
    import deepgpu
    from deepgpu import backends
    from deepgpu import kernels as K
    from deepgpu.testing.emulation import CountingXP, custom_backend

    B = custom_backend(np)
    B.to_numpy = lambda a: np.array(a, copy=True)
    backends._instances["cuda"] = B
    backends._state.backend = B
    hook = _Launches()
    K._emulator = hook
    deepgpu.set_seed(0)
    return B, hook, CountingXP


def _deepgpu_case(net, batch):
    from deepgpu import optimizers
    from deepgpu.tensor import Tensor

    B, hook, CountingXP = _setup_backend()
    # The no-op launches leave np.empty garbage in every output, and NumPy's warnings on it (overflow
    # in the metrics' and the loss's routines) cost about 35 us a step; CuPy checks no floating-point
    # errors, so neither would a GPU step. Set for the process: the peers do not use NumPy's state.
    np.seterr(all="ignore")
    model = _deepgpu_net(net)
    model.compile(optimizer=optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = Tensor(rng.uniform(0, 1, (batch,) + NETS[net][0]).astype(np.float32), B)
    y = Tensor(rng.integers(0, 10, batch).astype(np.int32), B)
    train = lambda: model.train_on_batch(x, y)  # noqa: E731
    predict = lambda: model.predict_on_batch(x)  # noqa: E731
    for _ in range(3):  # plans, slots, metric state
        train()
        predict()

    def counts(fn, steps=3):
        real = B.xp
        cx = CountingXP(real)
        B.xp = cx
        n0, names0 = hook.n, collections.Counter(hook.by_name)
        try:
            for _ in range(steps):
                fn()
        finally:
            B.xp = real
        ours = (hook.n - n0) / steps
        by = {k: v / steps for k, v in (hook.by_name - names0).items()}
        return ours, by, {k: v / steps for k, v in cx.calls.items()}

    return {"train": train, "predict": predict, "counts": counts, "model": model}


# ------------------------------------------------------------------ PyTorch side
def _torch_net(net, width):
    import torch
    from torch import nn

    if net == "convnet":
        w1, w2, hidden = (32, 64, 512) if width is None else (width, width, width)
        return nn.Sequential(
            nn.Conv2d(1, w1, 3), nn.ReLU(), nn.Conv2d(w1, w1, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w1, w2, 3), nn.ReLU(), nn.Conv2d(w2, w2, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.25), nn.Linear(w2 * 4 * 4, hidden), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(hidden, 10))

    def bn(c):
        return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)

    class Block(nn.Module):
        def __init__(self, cin, f, stride):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(cin, f, 3, stride, 1, bias=False), bn(f)
            self.c2, self.b2 = nn.Conv2d(f, f, 3, 1, 1, bias=False), bn(f)
            self.short = (nn.Sequential(nn.Conv2d(cin, f, 1, stride, bias=False), bn(f))
                          if stride != 1 or cin != f else nn.Identity())

        def forward(self, x):
            y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
            return torch.relu(y + self.short(x))

    widths = (16, 32, 64) if width is None else (width,) * 3
    mods, cin = [nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), bn(widths[0]), nn.ReLU()], widths[0]
    for i, f in enumerate(widths):
        for j in range(3):
            mods.append(Block(cin, f, 2 if i > 0 and j == 0 else 1))
            cin = f
    return nn.Sequential(*mods, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10))


def _torch_case(net, batch, width):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = _torch_net(net, width)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    h, w, c = NETS[net][0]
    x = torch.rand(batch, c, h, w)
    y = torch.randint(0, 10, (batch,))

    def train():
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return float(loss)

    def predict():
        model.eval()
        with torch.no_grad():
            return torch.softmax(model(x), -1).numpy()

    for _ in range(3):
        train()
        predict()
    return {"train": train, "predict": predict}


# ------------------------------------------------------------------ timing
def _mean_us(fn, steps):
    # CPU time of this process (all its threads): on a loaded machine it leaves out the time spent
    # waiting for a core, which wall time would add. The peers run on one thread.
    t0 = time.process_time()
    for _ in range(steps):
        fn()
    return (time.process_time() - t0) / steps * 1e6


def _frame_name(f):
    return f"{os.path.basename(f.f_code.co_filename)}:{f.f_code.co_firstlineno}({f.f_code.co_name})"


def _profile(fn, steps, top, interval=2e-4):
    """The top functions of ``fn`` by own CPU time: (own us, cumulative us per step, share, name).

    Sampled (SIGPROF on the process's CPU time, one stack walk per tick), not traced: cProfile
    adds about a microsecond to every call, which at this grain doubles the step and charges
    functions by their call counts, and its wall clock counts the time spent waiting for a core.
    """
    import signal

    own, cum, ticks = collections.Counter(), collections.Counter(), [0]

    def tick(_sig, frame):
        ticks[0] += 1
        own[_frame_name(frame)] += 1
        seen = set()
        while frame is not None:
            name = _frame_name(frame)
            if name not in seen:
                seen.add(name)
                cum[name] += 1
            frame = frame.f_back

    old = signal.signal(signal.SIGPROF, tick)
    t0 = time.process_time()
    signal.setitimer(signal.ITIMER_PROF, interval, interval)
    try:
        for _ in range(steps):
            fn()
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, old)
    per_tick = (time.process_time() - t0) / steps * 1e6 / max(ticks[0], 1)
    rows = [(n * per_tick, cum[name] * per_tick, n / max(ticks[0], 1), name) for name, n in own.most_common(top)]
    return rows, ticks[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=200, help="steps timed per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--nets", default="convnet,resnet20")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--profile", type=int, default=12, help="top N of the training step's profile (0: none)")
    a = ap.parse_args(argv)
    # No-op launches leave outputs uninitialised: NumPy's warnings about their values mean nothing here.
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
    np.seterr(all="ignore")
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import deepgpu

    torch = None
    if not a.no_torch:
        try:
            import torch
            torch.set_num_threads(1)
        except ImportError:
            print("(torch not installed: no peer figures)")
    print(f"deepgpu {getattr(deepgpu, '__version__', '?')}, numpy {np.__version__}"
          + (f", torch {torch.__version__} (1 thread)" if torch else "")
          + f", Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}; batch {a.batch}, {a.rounds} rounds x {a.steps} steps")
    for net in a.nets.split(","):
        d = _deepgpu_case(net, a.batch)
        cases = {"deepgpu (CUDA path, no-op launches)": d}
        if torch:
            cases["PyTorch CPU eager"] = _torch_case(net, a.batch, None)
            cases["PyTorch CPU eager, thin (width 4)"] = _torch_case(net, a.batch, 4)
        times = {k: {"train": [], "predict": []} for k in cases}
        for _ in range(a.rounds):  # peers alternated round by round
            for k, c in cases.items():
                for what in ("train", "predict"):
                    times[k][what].append(_mean_us(c[what], a.steps))
        print(f"\n== {NETS[net][1]}")
        print(f"{'':40s} {'train_on_batch us':>18s} {'predict_on_batch us':>20s}   (median of rounds; min-max)")
        for k, t in times.items():
            tr, pr = t["train"], t["predict"]
            print(f"{k:40s} {statistics.median(tr):11.0f} ({min(tr):.0f}-{max(tr):.0f}) "
                  f"{statistics.median(pr):10.0f} ({min(pr):.0f}-{max(pr):.0f})")
        for what in ("train", "predict"):
            ours, by, routines = d["counts"](d[what])
            print(f"{what}: {ours:.0f} of our launches per step "
                  f"({', '.join(f'{n} {v:g}' for n, v in sorted(by.items(), key=lambda kv: -kv[1]))})")
            alloc = {n: v for n, v in routines.items() if n in ("empty", "empty_like")}
            kern = {n: v for n, v in routines.items() if n not in alloc}
            print(f"{what}: {sum(kern.values()):g} CuPy routine calls per step "
                  f"({', '.join(f'{n} {v:g}' for n, v in sorted(kern.items(), key=lambda kv: -kv[1])) or 'none'})"
                  f"; allocations only: {sum(alloc.values()):g}")
        if a.profile:
            rows, n = _profile(d["train"], max(1000, a.steps * 10), a.profile)
            print(f"top {a.profile} of train_on_batch by own CPU time, {n} samples (us per step: own, "
                  f"cumulative; share of the samples):")
            for tt, ct, share, where in rows:
                print(f"  {tt:7.1f} {ct:8.1f} {share:6.1%}  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
