"""deepgpu beside PyTorch and Keras on the CPU: the same networks, one run, peers alternated.

    python3 bench/cpu_peers.py [--nets cnn,dnn,resnet,vgg,ae] [--rounds 5] [--batch 128]
                               [--threads 2] [--steps N] [--warmup N] [--quick] [--out FILE.json]

For issue 13 ("Measured, in bench/RESULTS.md"). Each framework runs in its
own worker process (its own thread pools), started one at a time; the
parent then alternates them round by round (deepgpu, deepgpu's NumPy path,
PyTorch, Keras, with the starting worker rotated each round), so that noise
from other work on a shared machine hits all of them alike. The table gives,
per network and framework, the median over all rounds of the time of one
training step after warm-up, and for the seed convnet and the DNN also the
median time to predict 1,000 images.

The workers:
  deepgpu        ``compile(optimizer=Adam(1e-3), loss=...)`` + ``train_on_batch``
  deepgpu-numpy  the same with ``DEEPGPU_CPU_KERNELS=numpy`` (the NumPy + BLAS path)
  torch          zero_grad + forward + loss + backward + ``Adam(1e-3).step()`` + ``loss.item()``, NCHW
  keras          Keras 3 on TensorFlow, ``compile`` + ``train_on_batch``
All use Adam(1e-3) and sparse categorical cross-entropy (the autoencoder: mean
squared error), float32, the same random data (one seeded NumPy generator),
the same batch size and ``--threads`` threads: ``DEEPGPU_NUM_THREADS`` and the
BLAS (``OPENBLAS/OMP/MKL_NUM_THREADS`` and threadpoolctl), ``torch.set_num_threads``,
TensorFlow's intra-op pool (inter-op: 1). ``OPENBLAS_CORETYPE`` and
``OPENBLAS_L2_SIZE`` are removed from every worker's environment (on the
machines this project runs on they are set and slow OpenBLAS down); the header
says whether they were set. The parent does not import deepgpu (nothing it sets
on import reaches the peers); the deepgpu worker imports deepgpu before NumPy,
as a user's script would.

A peer that is not installed is skipped with a line saying so. The cnn and dnn
twins in PyTorch and Keras are deepgpu's own (``deepgpu/bench.py``, as
``deepgpu bench`` runs them); the others are defined here once per framework,
and the table's parameter counts show that they match.

Networks (NHWC in deepgpu and Keras, NCHW in PyTorch):
  cnn     the seed convnet (``deepgpu.zoo.convnet``), 28x28x1
  dnn     Flatten-512-512-10 (``deepgpu.zoo.dnn``), 28x28x1
  resnet  ResNet-20 for CIFAR, 32x32x3: conv 16 + BN + ReLU, 3 stages (16, 32, 64) of
          ``--resnet-blocks`` (3) basic blocks of ``deepgpu.zoo``'s kind (two 3x3 convs without
          bias, BN after each; a 1x1 conv + BN shortcut where the shape changes), global
          average pooling, Dense 10 (``--resnet-blocks 1`` is exactly ``deepgpu.zoo.resnet``)
  vgg     64x64x3: [Conv w 3x3 same relu x2, MaxPool 2] for w in ``--vgg-widths`` (32,64,128),
          global average pooling, Dense 256 relu, Dense 10
  ae      convolutional autoencoder, 28x28x1: Conv 32 and Conv 64 (3x3, stride 2, same, relu),
          Conv2DTranspose 64 and 32 (3x3, stride 2, same, relu), Conv 1 3x3 sigmoid; MSE loss
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

SLOW_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # as deepgpu/bench.py's SLOW_ENV
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
PREDICT_N = 1000
PREDICT_NETS = ("cnn", "dnn")

# net: (input shape HWC, loss, steps per round, warm-up steps, label)
NETS = {
    "cnn": ((28, 28, 1), "sparse_categorical_crossentropy", 10, 3, "seed convnet (28x28x1)"),
    "dnn": ((28, 28, 1), "sparse_categorical_crossentropy", 20, 5, "Flatten-512-512-10 (28x28x1)"),
    "resnet": ((32, 32, 3), "sparse_categorical_crossentropy", 3, 2, "ResNet-20 (32x32x3)"),
    "vgg": ((64, 64, 3), "sparse_categorical_crossentropy", 2, 2, "VGG-style (64x64x3)"),
    "ae": ((28, 28, 1), "mse", 5, 3, "autoencoder, Conv2DTranspose (28x28x1)"),
}
# label, worker kind, extra environment
FRAMEWORKS = {
    "deepgpu": ("deepgpu", "deepgpu", {}),
    "deepgpu-numpy": ("deepgpu NumPy path", "deepgpu", {"DEEPGPU_CPU_KERNELS": "numpy"}),
    "torch": ("PyTorch", "torch", {}),
    "keras": ("Keras", "keras", {}),
}
PEERS = ("torch", "keras")


# ---------------------------------------------------------------- networks


def _deepgpu_model(net, a):
    from deepgpu import layers as L
    from deepgpu import zoo
    from deepgpu.layers.base import Input
    from deepgpu.models import Model, Sequential

    shape = NETS[net][0]
    if net == "cnn":
        return zoo.convnet(input_shape=shape)
    if net == "dnn":
        return zoo.dnn(input_shape=shape)
    if net == "resnet":
        if a.resnet_blocks == 1:
            return zoo.resnet(input_shape=shape, widths=(16, 32, 64))
        inputs = Input(shape=shape)
        x = L.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
        x = L.BatchNormalization()(x)
        x = L.ReLU()(x)
        for i, f in enumerate((16, 32, 64)):
            for j in range(a.resnet_blocks):
                x = zoo._residual_block(x, f, 2 if i > 0 and j == 0 else 1)
        x = L.GlobalAveragePooling2D()(x)
        return Model(inputs, L.Dense(10, activation="softmax")(x), name="resnet20")
    if net == "vgg":
        body = []
        for w in a.vgg_widths:
            first = {"input_shape": shape} if not body else {}
            body += [L.Conv2D(w, 3, padding="same", activation="relu", **first),
                     L.Conv2D(w, 3, padding="same", activation="relu"), L.MaxPooling2D(2)]
        return Sequential(body + [L.GlobalAveragePooling2D(), L.Dense(256, activation="relu"),
                                  L.Dense(10, activation="softmax")], name="vgg")
    if net == "ae":
        return Sequential([
            L.Conv2D(32, 3, strides=2, padding="same", activation="relu", input_shape=shape),
            L.Conv2D(64, 3, strides=2, padding="same", activation="relu"),
            L.Conv2DTranspose(64, 3, strides=2, padding="same", activation="relu"),
            L.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu"),
            L.Conv2D(1, 3, padding="same", activation="sigmoid"),
        ], name="autoencoder")
    raise ValueError(net)


def _torch_model(net, a):
    import torch
    from torch import nn

    if net in ("cnn", "dnn"):
        from deepgpu.bench import _torch_model as twin  # deepgpu bench's twins (torch is imported first)
        return twin(net, NETS[net][0][0], False)

    def bn(c):  # Keras's defaults (deepgpu's too): epsilon 1e-3, moving = 0.99 moving + 0.01 batch
        return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)

    if net == "resnet":
        class Block(nn.Module):
            def __init__(self, cin, f, stride):
                super().__init__()
                self.c1 = nn.Conv2d(cin, f, 3, stride, 1, bias=False)
                self.b1 = bn(f)
                self.c2 = nn.Conv2d(f, f, 3, 1, 1, bias=False)
                self.b2 = bn(f)
                self.short = (nn.Sequential(nn.Conv2d(cin, f, 1, stride, bias=False), bn(f))
                              if stride != 1 or cin != f else nn.Identity())

            def forward(self, x):
                y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
                return torch.relu(y + self.short(x))

        mods = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), bn(16), nn.ReLU()]
        cin = 16
        for i, f in enumerate((16, 32, 64)):
            for j in range(a.resnet_blocks):
                mods.append(Block(cin, f, 2 if i > 0 and j == 0 else 1))
                cin = f
        return nn.Sequential(*mods, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    if net == "vgg":
        mods, cin = [], 3
        for w in a.vgg_widths:
            mods += [nn.Conv2d(cin, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1), nn.ReLU(),
                     nn.MaxPool2d(2)]
            cin = w
        return nn.Sequential(*mods, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 256), nn.ReLU(),
                             nn.Linear(256, 10))
    if net == "ae":
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(64, 64, 3, 2, 1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 3, 2, 1, output_padding=1), nn.ReLU(),
            nn.Conv2d(32, 1, 3, 1, 1), nn.Sigmoid())
    raise ValueError(net)


def _keras_model(net, a):
    import keras
    from keras import layers as L

    shape = NETS[net][0]
    if net in ("cnn", "dnn"):
        from deepgpu.bench import _keras_model as twin  # deepgpu bench's twins
        return twin(net, shape[0], False)
    if net == "resnet":
        def block(x, f, stride):
            short = x
            y = L.Conv2D(f, 3, strides=stride, padding="same", use_bias=False)(x)
            y = L.ReLU()(L.BatchNormalization()(y))
            y = L.BatchNormalization()(L.Conv2D(f, 3, padding="same", use_bias=False)(y))
            if stride != 1 or short.shape[-1] != f:
                short = L.BatchNormalization()(L.Conv2D(f, 1, strides=stride, use_bias=False)(short))
            return L.ReLU()(L.Add()([y, short]))

        inputs = keras.Input(shape)
        x = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same", use_bias=False)(inputs)))
        for i, f in enumerate((16, 32, 64)):
            for j in range(a.resnet_blocks):
                x = block(x, f, 2 if i > 0 and j == 0 else 1)
        x = L.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, L.Dense(10, activation="softmax")(x))
    if net == "vgg":
        body = []
        for w in a.vgg_widths:
            body += [L.Conv2D(w, 3, padding="same", activation="relu"),
                     L.Conv2D(w, 3, padding="same", activation="relu"), L.MaxPooling2D(2)]
        return keras.Sequential([keras.Input(shape)] + body + [
            L.GlobalAveragePooling2D(), L.Dense(256, activation="relu"), L.Dense(10, activation="softmax")])
    if net == "ae":
        return keras.Sequential([
            keras.Input(shape),
            L.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
            L.Conv2D(64, 3, strides=2, padding="same", activation="relu"),
            L.Conv2DTranspose(64, 3, strides=2, padding="same", activation="relu"),
            L.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu"),
            L.Conv2D(1, 3, padding="same", activation="sigmoid"),
        ])
    raise ValueError(net)


# ------------------------------------------------------------------ workers


def _data(net, batch, n_batches=4, seed=0):
    """Batches [(x NHWC float32 in [0, 1), y)] and the 1,000 images to predict: the same bytes everywhere."""
    import numpy as np

    shape = NETS[net][0]
    rng = np.random.default_rng(seed)
    x = rng.random((n_batches * batch + PREDICT_N,) + shape, dtype=np.float32)
    y = rng.integers(0, 10, x.shape[0]).astype(np.int32)
    batches = []
    for i in range(n_batches):
        xb = x[i * batch:(i + 1) * batch]
        batches.append((xb, xb if NETS[net][1] == "mse" else y[i * batch:(i + 1) * batch]))
    return batches, x[-PREDICT_N:]


class _Runner:
    def __init__(self, a):
        self.a = a
        self.k = 0

    def next_batch(self):
        b = self.batches[self.k % len(self.batches)]
        self.k += 1
        return b

    def train(self, steps):
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            self.step()
            times.append(time.perf_counter() - t)
        return times

    def timed_predict(self):
        t = time.perf_counter()
        self.predict()
        return time.perf_counter() - t


class _DeepgpuRunner(_Runner):
    def __init__(self, a):
        import deepgpu as dg  # before NumPy: deepgpu's BLAS thread setting applies only then

        super().__init__(a)
        dg.set_backend("cpu")
        dg.set_seed(0)
        self.dg = dg
        self.batches, self.x_pred = _data(a.net, a.batch)
        self.model = _deepgpu_model(a.net, a)
        self.model.compile(optimizer=dg.optimizers.Adam(1e-3), loss=NETS[a.net][1])
        self.n_params = int(self.model.count_params())

    def step(self):
        x, y = self.next_batch()
        self.model.train_on_batch(x, y)  # returns the loss as a float: one sync per step, as Keras

    def predict(self):
        self.model.predict(self.x_pred, batch_size=self.a.batch).data_sync()

    def versions(self):
        import numpy as np

        dg = self.dg
        v = {"deepgpu": dg.__version__, "numpy": np.__version__, "python": platform.python_version(),
             "step": "compile + train_on_batch", "DEEPGPU_CPU_KERNELS": os.environ.get("DEEPGPU_CPU_KERNELS", ""),
             "DEEPGPU_CPU_TUNE": os.environ.get("DEEPGPU_CPU_TUNE", ""),
             "OPENBLAS_THREAD_TIMEOUT": os.environ.get("OPENBLAS_THREAD_TIMEOUT", "")}
        B = dg.backends.current()
        v["backend"] = B.name
        v["copy_threads"] = getattr(B, "threads", None)
        try:
            from deepgpu.kernels import cpu
            v["c_kernels"] = cpu.status()
        except Exception as e:  # the kernels are work in progress: report, never fail the run
            v["c_kernels"] = f"status unavailable ({type(e).__name__}: {e})"
        try:
            from deepgpu.kernels import cpu_tune
            v["tune"] = cpu_tune.mode()
            v["tune_decisions"] = list(cpu_tune.decisions())
        except Exception:
            pass
        return v


class _TorchRunner(_Runner):
    def __init__(self, a):
        import torch

        torch.set_num_threads(a.threads)
        torch.manual_seed(0)
        super().__init__(a)
        self.torch = torch
        batches, x_pred = _data(a.net, a.batch)
        nchw = lambda arr: torch.from_numpy(arr.transpose(0, 3, 1, 2).copy())  # noqa: E731
        mse = NETS[a.net][1] == "mse"
        self.batches = [(nchw(x), nchw(y) if mse else torch.from_numpy(y.astype("int64"))) for x, y in batches]
        self.x_pred = nchw(x_pred)
        self.model = _torch_model(a.net, a)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.loss = torch.nn.MSELoss() if mse else torch.nn.CrossEntropyLoss()  # softmax is in the loss
        # As Keras and deepgpu count them: BatchNorm's moving mean and variance too (torch's float buffers).
        self.n_params = int(sum(p.numel() for p in self.model.parameters())
                            + sum(b.numel() for b in self.model.buffers() if b.is_floating_point()))

    def step(self):
        x, y = self.next_batch()
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(self.model(x), y)
        loss.backward()
        self.opt.step()
        loss.item()

    def predict(self):
        torch = self.torch
        self.model.eval()
        with torch.no_grad():
            outs = [torch.softmax(self.model(self.x_pred[i:i + self.a.batch]), 1)
                    for i in range(0, PREDICT_N, self.a.batch)]
            torch.cat(outs).numpy()

    def versions(self):
        torch = self.torch
        return {"torch": torch.__version__, "threads": torch.get_num_threads(),
                "interop_threads": torch.get_num_interop_threads(),
                "mkldnn": bool(torch.backends.mkldnn.is_available()),
                "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")(),
                "layout": "NCHW"}


class _KerasRunner(_Runner):
    def __init__(self, a):
        import tensorflow as tf  # before keras, so that the thread pools are set before any op runs

        tf.config.threading.set_intra_op_parallelism_threads(a.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.set_visible_devices([], "GPU")
        import keras

        keras.utils.set_random_seed(0)
        super().__init__(a)
        self.tf, self.keras = tf, keras
        self.batches, self.x_pred = _data(a.net, a.batch)
        self.model = _keras_model(a.net, a)
        self.model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=NETS[a.net][1])
        self.n_params = int(self.model.count_params())

    def step(self):
        x, y = self.next_batch()
        self.model.train_on_batch(x, y)  # returns the loss as a Python float

    def predict(self):
        self.model.predict(self.x_pred, batch_size=self.a.batch, verbose=0)

    def versions(self):
        tf = self.tf
        return {"keras": self.keras.__version__, "keras_backend": self.keras.backend.backend(),
                "tensorflow": tf.__version__,
                "intra_threads": tf.config.threading.get_intra_op_parallelism_threads(),
                "inter_threads": tf.config.threading.get_inter_op_parallelism_threads(),
                "jit_compile": bool(getattr(self.model, "jit_compile", False)),
                "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default")}


RUNNERS = {"deepgpu": _DeepgpuRunner, "torch": _TorchRunner, "keras": _KerasRunner}


def worker(a) -> int:
    """Serve one framework: JSON commands on stdin, one JSON answer per line on stdout."""
    out = sys.stdout
    sys.stdout = sys.stderr  # frameworks' chatter must not mix with the protocol
    limits = None
    try:
        t0 = time.perf_counter()
        r = RUNNERS[a.worker](a)  # imports its framework (deepgpu before NumPy; torch / TF before deepgpu)
        from deepgpu.bench import _limit_blas, _peak_rss_mb, blas_info  # deepgpu bench's helpers

        limits = _limit_blas(a.threads)
        t1 = time.perf_counter()
        # At least --warmup steps and --warmup-s seconds: a fresh process's first steps fault its
        # memory in (here 60-150 ms a step for the first 4-5 DNN steps instead of 3-8 ms), and
        # deepgpu times its candidate paths at the first call of each shape.
        warm = r.train(a.warmup)
        while sum(warm) < a.warmup_s:
            warm += r.train(1)
        if a.net in PREDICT_NETS:
            r.timed_predict()
        hello = {"ok": True, "params": r.n_params, "versions": r.versions(), "blas": blas_info(),
                 "setup_s": t1 - t0, "warmup_times": warm, "rss_mb": _peak_rss_mb()}
    except Exception as e:  # reported to the parent, which prints it
        import traceback
        traceback.print_exc()
        hello = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        r = None
    print(json.dumps(hello), file=out, flush=True)
    if r is None:
        return 1
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "train":
            ans = {"times": r.train(cmd["steps"])}
        elif cmd["cmd"] == "predict":
            ans = {"time": r.timed_predict()}
        elif cmd["cmd"] == "rss":
            ans = {"rss_mb": _peak_rss_mb()}
        else:
            break
        print(json.dumps(ans), file=out, flush=True)
    del limits
    return 0


# ------------------------------------------------------------------ parent


class _Worker:
    def __init__(self, fw, net, a, env):
        self.fw = fw
        label, kind, extra = FRAMEWORKS[fw]
        self.label = label
        args = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--net", net, "--batch", str(a.batch),
                "--threads", str(a.threads), "--warmup", str(a.warmup_for(net)), "--warmup-s", str(a.warmup_s),
                "--resnet-blocks", str(a.resnet_blocks), "--vgg-widths", ",".join(map(str, a.vgg_widths))]
        self.log = tempfile.TemporaryFile(mode="w+")
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=None if a.verbose else self.log, text=True, env={**env, **extra},
                                  cwd=REPO)
        self.hello = None

    def ask(self, **cmd):
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        return self.read()

    def read(self):
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.fw} worker ended unexpectedly (exit status {self.p.wait()})"
                               + self.log_tail())
        return json.loads(line)

    def log_tail(self, n=15):
        try:
            self.log.seek(0)
            lines = [ln.rstrip() for ln in self.log.read().splitlines() if ln.strip()]
        except (OSError, ValueError):
            return ""
        return ("; its last output:\n      " + "\n      ".join(lines[-n:])) if lines else ""

    def close(self):
        try:
            self.p.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.log.close()


def run_net(net, fws, a, env, say):
    """One worker per framework, set up one at a time, then ``a.rounds`` alternated rounds."""
    workers, res = [], {}
    try:
        for fw in fws:
            w = _Worker(fw, net, a, env)
            w.hello = w.read()
            if not w.hello.get("ok"):
                say(f"  {fw}: could not run {net}: {w.hello.get('error')}{w.log_tail()}")
                w.close()
                continue
            workers.append(w)
            res[fw] = {"label": w.label, "step_times": [], "predict_times": [], **w.hello}
        steps = a.steps_for(net)
        for r in range(a.rounds):
            order = workers[r % len(workers):] + workers[:r % len(workers)] if workers else []
            for w in order:
                res[w.fw]["step_times"] += w.ask(cmd="train", steps=steps)["times"]
            if net in PREDICT_NETS:
                for w in order:
                    res[w.fw]["predict_times"].append(w.ask(cmd="predict")["time"])
        for w in workers:
            res[w.fw]["rss_mb"] = w.ask(cmd="rss")["rss_mb"]
    finally:
        for w in workers:
            w.close()
    for r in res.values():
        t = r["step_times"]
        if t:
            r.update(step_ms=1e3 * statistics.median(t), step_ms_min=1e3 * min(t), step_ms_max=1e3 * max(t))
        if r["predict_times"]:
            r["predict_ms"] = 1e3 * statistics.median(r["predict_times"])
    return res


def _lscpu() -> dict:
    info = {}
    try:
        txt = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                             env={**os.environ, "LC_ALL": "C"}).stdout
        for line in txt.splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                info[k.strip()] = v.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    if "Flags" not in info:
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    k, _, v = line.partition(":")
                    k = k.strip()
                    if k == "model name":
                        info.setdefault("Model name", v.strip())
                    elif k in ("flags", "Features"):
                        info.setdefault("Flags", v.strip())
        except OSError:
            pass
    flags = set(info.get("Flags", "").split())
    return {"model": info.get("Model name") or platform.processor() or platform.machine(),
            "family": info.get("CPU family", ""), "model_id": info.get("Model", ""),
            "arch": platform.machine(), "cpus": os.cpu_count(),
            "hypervisor": info.get("Hypervisor vendor", ""),
            "avx2": "avx2" in flags, "fma": "fma" in flags,
            "avx512": sorted(f for f in flags if f.startswith("avx512")),
            "neon": "asimd" in flags or "neon" in flags}


def _short(s, n):
    return s if len(s) <= n else s[:n].rsplit(" ", 1)[0] + " ..."


def _git() -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=20).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""
    changed = [ln[3:] for ln in git("status", "--porcelain", "--untracked-files=all", "--",
                                    "deepgpu", "backends", "kernels").splitlines()]
    return {"commit": git("rev-parse", "--short=10", "HEAD"), "subject": _short(git("log", "-1", "--format=%s"), 90),
            "uncommitted": changed}


def _installed(kind) -> str | None:
    """None when the worker kind can run here, else why not."""
    import importlib.util

    need = {"deepgpu": ["deepgpu"], "torch": ["torch"], "keras": ["keras", "tensorflow"]}[kind]
    missing = [m for m in need if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    hint = {"torch": "pip install torch==2.13.0 (the CPU wheel)", "keras": "pip install tensorflow-cpu keras"}
    return f"{', '.join(missing)} not installed ({hint.get(kind, '')})"


def _fmt_ms(v):
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def report_text(rep) -> str:
    m, L = rep["machine"], []
    L.append(f"# deepgpu vs peers on the CPU ({rep['date']})")
    L.append("")
    isa = ("AVX-512 (" + " ".join(m["avx512"]) + ")") if m["avx512"] else (
        "AVX2 + FMA, no AVX-512" if m["avx2"] and m["fma"] else "AVX2, no FMA" if m["avx2"] else
        "NEON" if m["neon"] else "no AVX2")
    L.append(f"- Machine: {m['model']} (CPU family {m['family']}, model {m['model_id']}), {m['arch']}, "
             f"{m['cpus']} CPUs, {isa}" + (f"; {m['hypervisor']} guest" if m["hypervisor"] else "")
             + f"; {m['platform']}")
    L.append(f"- Load average at start / end: {rep['load_start']} / {rep.get('load_end', '?')}")
    g = rep["git"]
    dirty = (f" + uncommitted changes in {', '.join(g['uncommitted'][:8])}"
             + (" ..." if len(g["uncommitted"]) > 8 else "")) if g["uncommitted"] else ""
    v = rep["versions"]
    dv = v.get("deepgpu", {})
    L.append(f"- Python {platform.python_version()}; NumPy {dv.get('numpy', '?')}; deepgpu {dv.get('deepgpu', '?')} "
             f"at commit {g['commit']} ({g['subject']}){dirty}")
    if dv:
        L.append(f"- deepgpu C kernels: {dv.get('c_kernels')}; tuning: {dv.get('tune', 'n/a')}; "
                 f"copy threads {dv.get('copy_threads')}; OPENBLAS_THREAD_TIMEOUT="
                 f"{dv.get('OPENBLAS_THREAD_TIMEOUT') or 'unset'} in the worker")
    tv = v.get("torch")
    L.append(f"- PyTorch {tv['torch']} ({tv['threads']} threads, mkldnn {tv['mkldnn']}, "
             f"CPU capability {tv['cpu_capability']}, {tv['layout']})" if tv else
             f"- PyTorch: skipped ({rep['skipped'].get('torch', 'not run')})")
    kv = v.get("keras")
    L.append(f"- Keras {kv['keras']} on {kv['keras_backend']} {kv['tensorflow']} (intra-op {kv['intra_threads']}, "
             f"inter-op {kv['inter_threads']} threads, jit_compile {kv['jit_compile']})" if kv else
             f"- Keras: skipped ({rep['skipped'].get('keras', 'not run')})")
    for fw, blas in rep["blas"].items():
        s = "; ".join(f"{b.get('internal_api')} {b.get('version')} {b.get('architecture', '')} "
                      f"{b.get('num_threads')} thr" for b in blas if "internal_api" in b)
        L.append(f"- BLAS / OpenMP in the {fw} worker (threadpoolctl): "
                 f"{s or (blas[0].get('note') if blas else 'none loaded')}")
    env = rep["env"]
    was = ", ".join(f"{k}={v}" for k, v in env["unset"].items())
    L.append(f"- {' and '.join(SLOW_ENV)}: unset in every worker ("
             + (f"they were set here: {was}" if was else "neither was set here") + "); "
             + ", ".join(f"{k}={env['threads_env'][k]}" for k in env["threads_env"]))
    L.append(f"- Method: {rep['threads']} threads each; batch {rep['batch']}; Adam(1e-3); sparse categorical "
             f"cross-entropy (autoencoder: MSE); float32; each worker warms up (at least "
             + ", ".join(f"{n} {rep['warmup'][n]}" for n in rep["nets"]) + f" steps and {rep['warmup_s']:g} s), "
             f"then {rep['rounds']} rounds, "
             f"workers alternated (first one rotated each round), each round timing "
             + ", ".join(f"{n} {rep['steps'][n]}" for n in rep["nets"]) + " steps; medians over all timed "
             "steps; predict 1,000 once per round (median)")
    L.append(f"- Command: `{rep['command']}`")
    for fw, why in rep["skipped"].items():
        L.append(f"- skipped {fw}: {why}")
    L.append("")
    fws = rep["frameworks"]
    labels = {fw: FRAMEWORKS[fw][0] for fw in fws}
    for fw, lab in (("torch", "PyTorch"), ("keras", "Keras")):
        if fw in labels and v.get(fw):
            labels[fw] = f"{lab} {v[fw][fw]}"
    L.append("Median ms (one training step; predict 1,000 images):")
    L.append("")
    L.append("| network, batch | " + " | ".join(labels[fw] for fw in fws) + " | deepgpu / faster peer |")
    L.append("|---|" + "---|" * (len(fws) + 1))
    for net in rep["nets"]:
        res = rep["results"].get(net, {})
        rows = [("step", "step_ms")] + ([("predict 1,000", "predict_ms")] if net in PREDICT_NETS else [])
        for what, key in rows:
            cells = [_fmt_ms(res.get(fw, {}).get(key)) for fw in fws]
            peers = [res[p][key] for p in PEERS if p in res and res[p].get(key)]
            me = res.get("deepgpu", {}).get(key)
            ratio = f"{me / min(peers):.2f}x" if me and peers else "-"
            L.append(f"| {NETS[net][4]}, {rep['batch']}: {what} | " + " | ".join(cells) + f" | {ratio} |")
    L.append("")
    L.append("Spread and size (step ms min-max over the timed steps, parameters, peak RSS):")
    L.append("")
    L.append("| network | framework | params | step ms median | min-max | steps | set-up + warm-up s | peak RSS MB |")
    L.append("|---|---|---|---|---|---|---|---|")
    for net in rep["nets"]:
        res = rep["results"].get(net, {})
        counts = {r["params"] for r in res.values()}
        for fw, r in res.items():
            flag = "" if len(counts) == 1 else " (differs!)"
            L.append(f"| {net} | {labels.get(fw, fw)} | {r['params']:,}{flag} | {_fmt_ms(r.get('step_ms'))} | "
                     f"{_fmt_ms(r.get('step_ms_min'))}-{_fmt_ms(r.get('step_ms_max'))} | {r['n_steps']} | "
                     f"{r['setup_s'] + sum(r['warmup_times']):.1f} | {r['rss_mb']:.0f} |")
        for fw, why in rep["failed"].get(net, {}).items():
            L.append(f"| {net} | {labels.get(fw, fw)} | could not run: {why.splitlines()[0][:120]} | | | | | |")
    return "\n".join(L)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nets", default="cnn,dnn,resnet,vgg,ae", help="comma-separated: " + ", ".join(NETS))
    p.add_argument("--frameworks", default="deepgpu,deepgpu-numpy,torch,keras",
                   help="comma-separated: " + ", ".join(FRAMEWORKS))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps per round and worker (default per network: "
                        + ", ".join(f"{n} {v[2]}" for n, v in NETS.items()) + ")")
    p.add_argument("--warmup", type=int, default=None,
                   help="warm-up steps (default per network: " + ", ".join(f"{n} {v[3]}" for n, v in NETS.items())
                        + "); deepgpu times its candidate paths at the first call of each shape")
    p.add_argument("--warmup-s", type=float, default=None,
                   help="and warm up for at least this many seconds (default 3; --quick: 1)")
    p.add_argument("--quick", action="store_true",
                   help="2 rounds, a fifth of the steps, 1 warm-up step (1 s): a smoke run")
    p.add_argument("--resnet-blocks", type=int, default=3, help="basic blocks per stage (3: ResNet-20)")
    p.add_argument("--vgg-widths", default="32,64,128", help="filters of the VGG stages (two convs each)")
    p.add_argument("--out", default=None, help="also write the results (raw times included) to this JSON file")
    p.add_argument("--verbose", action="store_true", help="show the workers' own output (else kept, shown on failure)")
    p.add_argument("--worker", choices=sorted(RUNNERS), help=argparse.SUPPRESS)
    p.add_argument("--net", help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = build_parser().parse_args(argv)
    a.vgg_widths = tuple(int(w) for w in str(a.vgg_widths).split(","))
    if a.worker:
        return worker(a)
    nets = [n.strip() for n in a.nets.split(",") if n.strip()]
    fws = [f.strip() for f in a.frameworks.split(",") if f.strip()]
    bad = [n for n in nets if n not in NETS] + [f for f in fws if f not in FRAMEWORKS]
    if bad:
        print(f"cpu_peers: unknown network(s) / framework(s): {bad}", file=sys.stderr)
        return 2
    if a.quick:
        a.rounds = min(a.rounds, 2)
    if a.warmup_s is None:
        a.warmup_s = 1.0 if a.quick else 3.0

    def steps_for(net):
        return a.steps if a.steps is not None else (max(1, NETS[net][2] // 5) if a.quick else NETS[net][2])

    def warmup_for(net):
        return a.warmup if a.warmup is not None else (1 if a.quick else NETS[net][3])

    a.steps_for, a.warmup_for = steps_for, warmup_for

    env = dict(os.environ)  # the parent never imports deepgpu: this is the caller's environment
    unset = {k: env.pop(k) for k in SLOW_ENV if k in env}
    threads_env = {k: str(a.threads) for k in THREAD_ENV}
    env.update(threads_env, DEEPGPU_NUM_THREADS=str(a.threads), KERAS_BACKEND="tensorflow")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    threads_env["DEEPGPU_NUM_THREADS"] = str(a.threads)

    skipped = {}
    for fw in list(fws):
        why = _installed(FRAMEWORKS[fw][1])
        if why:
            skipped[fw] = why
            fws.remove(fw)
            print(f"note: skipping {fw}: {why}", flush=True)
    cmd = shlex.join(["python3", os.path.relpath(os.path.abspath(__file__), REPO)] + list(argv))
    m = _lscpu()
    m["platform"] = platform.platform()
    rep = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": m, "git": _git(), "command": cmd, "nets": nets, "frameworks": fws, "skipped": skipped,
           "rounds": a.rounds, "batch": a.batch, "threads": a.threads,
           "steps": {n: steps_for(n) for n in nets}, "warmup": {n: warmup_for(n) for n in nets},
           "warmup_s": a.warmup_s,
           "resnet_blocks": a.resnet_blocks, "vgg_widths": list(a.vgg_widths),
           "env": {"unset": unset, "threads_env": threads_env},
           "load_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
           "versions": {}, "blas": {}, "results": {}, "failed": {}}
    print(f"{rep['date']}: {m['model']}, {m['cpus']} CPUs; nets {', '.join(nets)}; "
          f"frameworks {', '.join(fws)}; {a.rounds} rounds", flush=True)

    def say(s):
        print(s, flush=True)

    t_all = time.perf_counter()
    for net in nets:
        t = time.perf_counter()
        say(f"{net}: setting up {len(fws)} workers, then {a.rounds} rounds of {steps_for(net)} steps ...")
        res = run_net(net, fws, a, env, say)
        for fw in fws:
            if fw not in res:
                rep["failed"].setdefault(net, {})[fw] = "see the note above"
        for fw, r in res.items():
            r["n_steps"] = len(r["step_times"])
            rep["versions"][fw] = r["versions"]  # the last network's (deepgpu's lists its tuning decisions so far)
            rep["blas"][fw] = r["blas"]
        rep["results"][net] = res
        say("  " + "; ".join(f"{fw} {_fmt_ms(r.get('step_ms'))} ms" for fw, r in res.items())
            + f"  ({time.perf_counter() - t:.0f} s)")
    rep["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    rep["wall_s"] = time.perf_counter() - t_all
    print()
    print(report_text(rep))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rep, f, indent=1, default=str)
        print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
