"""``deepgpu bench``: the same networks in deepgpu, PyTorch and Keras, side by side.

    deepgpu bench [--backend cpu|cuda] [--compare torch,keras] [--model cnn,dnn]
                  [--batch-size 128] [--steps 10] [--rounds 5] [--threads N]
                  [--input-size 28] [--global-pool] [--json FILE] [--keep-env]

Each framework runs in its own worker process (so peak resident memory is
its own), with the same network, the same random data (one seeded
generator), the same batch size, Adam(1e-3) and the same thread count. The
parent alternates the workers, A B C A B C ..., ``--rounds`` times, each
time timing ``--steps`` training steps (``train_on_batch`` in deepgpu and
Keras, the usual zero_grad/forward/backward/step in PyTorch) and one
prediction of 1,000 images; the table gives medians over all of them.

OpenBLAS reads ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` when it
loads; on the machines this project runs on they are set and halve NumPy's
matmul speed, so the workers start without them (the command says so;
``--keep-env`` keeps them). Nothing else in the environment is changed.

The parent does no math; workers talk to it in JSON lines on stdin/stdout.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time

SLOW_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
FRAMEWORKS = ("deepgpu", "torch", "keras")
PREDICT_N = 1000


# ------------------------------------------------------------------ shared


def _peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (ru_maxrss is KB on Linux)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def _data(n, size, seed=0):
    """(x [n, size, size, 1] float32 in [0, 1), y [n] int32): the same in every worker."""
    from .backends import get

    cpu = get("cpu")
    cpu.seed(seed)
    x = cpu.random_uniform((n, size, size, 1))
    y = cpu.random_uniform((n,), 0, 10, "int32")
    return x, y


def load_fashion_mnist(data_dir):
    """(x [60000, 28, 28, 1] float32 in [0, 1], y [60000] int32) from the IDX files in ``data_dir``."""
    import gzip
    import struct

    from .backends import get

    cpu = get("cpu")

    def read(name):
        for fn in (name, name + ".gz"):
            path = os.path.join(data_dir, fn)
            if os.path.exists(path):
                with (gzip.open if fn.endswith(".gz") else open)(path, "rb") as f:
                    raw = f.read()
                ndim = raw[3]
                dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
                return cpu.reshape(cpu.asarray(memoryview(raw)[4 + 4 * ndim:], "uint8"), dims)
        raise FileNotFoundError(f"{name}(.gz) is not in {data_dir}")

    x = read("train-images-idx3-ubyte")
    x = cpu.reshape(cpu.cast(x, "float32"), x.shape + (1,))
    x *= 1 / 255  # in place, float32: no float64 copy of the 60,000 images
    return x, cpu.cast(read("train-labels-idx1-ubyte"), "int32")


def _median(v):
    s = sorted(v)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_info() -> list:
    """threadpoolctl's view of the BLAS / OpenMP libraries loaded in this process."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"note": "threadpoolctl is not installed (pip install 'deepgpu[bench]')"}]
    keep = ("internal_api", "version", "architecture", "num_threads", "threading_layer")
    return [{k: d[k] for k in keep if k in d} for d in threadpool_info()]


# ---------------------------------------------------------------- networks


def _deepgpu_model(name, size, global_pool):
    from . import layers as L
    from . import zoo
    from .models import Sequential

    if name == "dnn":
        return zoo.dnn(input_shape=(size, size, 1))
    if not global_pool:
        return zoo.convnet(input_shape=(size, size, 1))
    return Sequential([
        L.Conv2D(32, 3, activation="relu", input_shape=(size, size, 1)),
        L.Conv2D(32, 3, activation="relu"),
        L.MaxPooling2D(2),
        L.Conv2D(64, 3, activation="relu"),
        L.Conv2D(64, 3, activation="relu"),
        L.MaxPooling2D(2),
        L.GlobalAveragePooling2D(),
        L.Dropout(0.25),
        L.Dense(512, activation="relu"),
        L.Dropout(0.5),
        L.Dense(10, activation="softmax"),
    ])


def _torch_model(name, size, global_pool):
    from torch import nn

    if name == "dnn":
        return nn.Sequential(nn.Flatten(), nn.Linear(size * size, 512), nn.ReLU(),
                             nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    s = ((size - 4) // 2 - 4) // 2
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten()] if global_pool else [nn.Flatten()]
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        *head, nn.Dropout(0.25), nn.Linear(64 if global_pool else 64 * s * s, 512), nn.ReLU(),
        nn.Dropout(0.5), nn.Linear(512, 10))  # softmax is inside CrossEntropyLoss


def _keras_model(name, size, global_pool):
    import keras
    from keras import layers as L

    inp = keras.Input((size, size, 1))
    if name == "dnn":
        body = [L.Flatten(), L.Dense(512, activation="relu"), L.Dense(512, activation="relu")]
    else:
        body = [L.Conv2D(32, 3, activation="relu"), L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(2),
                L.Conv2D(64, 3, activation="relu"), L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2),
                L.GlobalAveragePooling2D() if global_pool else L.Flatten(), L.Dropout(0.25),
                L.Dense(512, activation="relu"), L.Dropout(0.5)]
    return keras.Sequential([inp] + body + [L.Dense(10, activation="softmax")])


# ------------------------------------------------------------------ workers


class _Runner:
    """One framework's network, ready to time: ``train(steps)``, ``predict()``."""

    def __init__(self, a):
        self.a = a
        n_batches = 4
        x, y = _data(n_batches * a.batch_size + PREDICT_N, a.input_size)
        self.batches = [(x[i * a.batch_size:(i + 1) * a.batch_size], y[i * a.batch_size:(i + 1) * a.batch_size])
                        for i in range(n_batches)]
        self.x_pred = x[-PREDICT_N:]
        self.k = 0

    def next_batch(self):
        b = self.batches[self.k % len(self.batches)]
        self.k += 1
        return b

    def epoch(self, data_dir):
        """One epoch of Fashion-MNIST in batches; returns its wall time in seconds."""
        x, y = load_fashion_mnist(data_dir)
        t = time.perf_counter()
        self.fit_epoch(x, y)
        return time.perf_counter() - t

    def fit_epoch(self, x, y):
        bs = self.a.batch_size
        for i in range(0, x.shape[0], bs):
            self.batches = [(x[i:i + bs], y[i:i + bs])]
            self.k = 0
            self.step()

    def train(self, steps):
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            self.step()
            times.append(time.perf_counter() - t)
        return times


class _DeepgpuRunner(_Runner):
    name = "deepgpu"

    def __init__(self, a):
        import deepgpu as dg

        dg.set_backend(a.backend)
        dg.set_seed(0)
        super().__init__(a)
        self.B = dg.backends.current()
        self.model = _deepgpu_model(a.model, a.input_size, a.global_pool)
        self.n_params = self.model.count_params()
        # The user's path: compile + train_on_batch (Trainer, losses, optimizers modules).
        self.model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")

    def step(self):
        x, y = self.next_batch()
        self.model.train_on_batch(x, y)  # returns the loss as a float: one sync per step, as Keras

    def fit_epoch(self, x, y):
        self.model.fit(x, y, batch_size=self.a.batch_size, epochs=1, verbose=0)

    def predict(self):
        t = time.perf_counter()
        self.model.predict(self.x_pred, batch_size=self.a.batch_size).data_sync()
        return time.perf_counter() - t

    def versions(self):
        from . import __version__
        v = {"deepgpu": __version__, "numpy": sys.modules["numpy"].__version__, "backend": self.B.name,
             "step": "train_on_batch"}
        if self.B.name == "cuda":
            v["cupy"] = sys.modules["cupy"].__version__
        return v


class _TorchRunner(_Runner):
    name = "torch"

    def __init__(self, a):
        import torch

        torch.set_num_threads(a.threads)
        torch.manual_seed(0)
        super().__init__(a)
        self.torch = torch
        self.dev = torch.device("cuda" if a.backend == "cuda" else "cpu")
        nchw = lambda arr: torch.from_numpy(arr.transpose(0, 3, 1, 2).copy()).to(self.dev)  # noqa: E731
        self.batches = [(nchw(x), torch.from_numpy(y.astype("int64")).to(self.dev)) for x, y in self.batches]
        self.x_pred = nchw(self.x_pred)
        self.model = _torch_model(a.model, a.input_size, a.global_pool).to(self.dev)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.loss = torch.nn.CrossEntropyLoss()
        self.n_params = sum(p.numel() for p in self.model.parameters())

    def step(self):
        x, y = self.next_batch()
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(self.model(x), y)
        loss.backward()
        self.opt.step()
        loss.item()

    def fit_epoch(self, x, y):
        torch = self.torch
        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
        yt = torch.from_numpy(y.astype("int64"))
        del x, y
        perm = torch.randperm(xt.shape[0])
        bs = self.a.batch_size
        for i in range(0, xt.shape[0], bs):
            idx = perm[i:i + bs]
            self.batches = [(xt[idx].to(self.dev), yt[idx].to(self.dev))]
            self.k = 0
            self.step()

    def predict(self):
        t = time.perf_counter()
        self.model.eval()
        with self.torch.no_grad():
            outs = [self.torch.softmax(self.model(self.x_pred[i:i + self.a.batch_size]), 1)
                    for i in range(0, PREDICT_N, self.a.batch_size)]
            self.torch.cat(outs).cpu()
        return time.perf_counter() - t

    def versions(self):
        return {"torch": self.torch.__version__, "torch_threads": self.torch.get_num_threads(),
                "mkldnn": bool(self.torch.backends.mkldnn.is_available())}


class _KerasRunner(_Runner):
    name = "keras"

    def __init__(self, a):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(a.threads)
        tf.config.threading.set_inter_op_parallelism_threads(a.threads)
        if a.backend != "cuda":
            tf.config.set_visible_devices([], "GPU")
        import keras

        keras.utils.set_random_seed(0)
        super().__init__(a)
        self.tf, self.keras = tf, keras
        self.model = _keras_model(a.model, a.input_size, a.global_pool)
        self.model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        self.n_params = self.model.count_params()

    def step(self):
        x, y = self.next_batch()
        self.model.train_on_batch(x, y)  # returns the loss as a Python float

    def fit_epoch(self, x, y):
        self.model.fit(x, y, batch_size=self.a.batch_size, epochs=1, verbose=0)

    def predict(self):
        t = time.perf_counter()
        self.model.predict(self.x_pred, batch_size=self.a.batch_size, verbose=0)
        return time.perf_counter() - t

    def versions(self):
        return {"keras": self.keras.__version__, "tensorflow": self.tf.__version__,
                "tf_intra_threads": self.tf.config.threading.get_intra_op_parallelism_threads()}


RUNNERS = {"deepgpu": _DeepgpuRunner, "torch": _TorchRunner, "keras": _KerasRunner}


def _limit_blas(threads):
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(threads)


def worker(a) -> int:
    """Serve one framework: JSON commands on stdin, one JSON answer per line on stdout."""
    out = sys.stdout
    sys.stdout = sys.stderr  # frameworks' chatter must not mix with the protocol
    try:
        r = RUNNERS[a.worker](a)
        limits = _limit_blas(a.threads)
        for _ in range(a.warmup):
            r.step()
        r.predict()
        hello = {"ok": True, "params": int(r.n_params), "versions": r.versions(), "blas": blas_info(),
                 "rss_mb": _peak_rss_mb()}
    except Exception as e:  # reported to the parent, which prints it
        hello = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        r = limits = None
    print(json.dumps(hello), file=out, flush=True)
    if r is None:
        return 1
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "train":
            ans = {"times": r.train(cmd["steps"])}
        elif cmd["cmd"] == "predict":
            ans = {"time": r.predict()}
        elif cmd["cmd"] == "epoch":
            ans = {"time": r.epoch(cmd["data_dir"]), "rss_mb": _peak_rss_mb()}
        elif cmd["cmd"] == "rss":
            ans = {"rss_mb": _peak_rss_mb()}
        else:
            break
        print(json.dumps(ans), file=out, flush=True)
    del limits
    return 0


# ------------------------------------------------------------------ parent


def clean_env(threads, keep=False):
    """The workers' environment: without the slow OpenBLAS settings, with the thread count."""
    env = dict(os.environ)
    removed = {}
    if not keep:
        for k in SLOW_ENV:
            if k in env:
                removed[k] = env.pop(k)
    for k in THREAD_ENV:
        env[k] = str(threads)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["KERAS_BACKEND"] = "tensorflow"
    return env, removed


class _Worker:
    def __init__(self, fw, a, env):
        self.fw = fw
        args = [sys.executable, "-m", "deepgpu.bench", "--worker", fw, "--backend", a.backend,
                "--model", a.model, "--batch-size", str(a.batch_size), "--threads", str(a.threads),
                "--input-size", str(a.input_size), "--warmup", str(a.warmup)]
        if a.global_pool:
            args.append("--global-pool")
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE if a.quiet_workers else None, text=True, env=env)
        self.hello = None

    def ask(self, **cmd):
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        return self.read()

    def read(self):
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.fw} worker ended unexpectedly (exit status {self.p.wait()})")
        return json.loads(line)

    def close(self):
        try:
            self.p.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()


def _available(fw):
    import importlib.util

    mod = {"deepgpu": "deepgpu", "torch": "torch", "keras": "keras"}[fw]
    return importlib.util.find_spec(mod) is not None and (fw != "keras" or importlib.util.find_spec("tensorflow"))


def run_model(a, env, fws, say=print):
    """Start one worker per framework, alternate them, return per-framework results."""
    workers = []
    res = {}
    try:
        for fw in fws:  # start one at a time so that set-up does not overlap the others
            w = _Worker(fw, a, env)
            w.hello = w.read()
            if not w.hello.get("ok"):
                say(f"  {fw}: could not run: {w.hello.get('error')}")
                w.close()
                continue
            workers.append(w)
            res[fw] = {"step_times": [], "predict_times": [], **w.hello}
        if a.epoch:
            for w in workers:
                ans = w.ask(cmd="epoch", data_dir=a.data_dir)
                res[w.fw].update(epoch_s=ans["time"], epoch_rss_mb=ans["rss_mb"])
            return res
        for _ in range(a.rounds):
            for w in workers:
                res[w.fw]["step_times"] += w.ask(cmd="train", steps=a.steps)["times"]
            for w in workers:
                res[w.fw]["predict_times"].append(w.ask(cmd="predict")["time"])
        for w in workers:
            res[w.fw]["rss_mb"] = w.ask(cmd="rss")["rss_mb"]
    finally:
        for w in workers:
            w.close()
    for fw, r in res.items():
        r["step_ms"] = 1e3 * _median(r["step_times"])
        r["step_ms_min"] = 1e3 * min(r["step_times"])
        r["step_ms_max"] = 1e3 * max(r["step_times"])
        r["images_per_s"] = a.batch_size / (r["step_ms"] / 1e3)
        r["predict_ms"] = 1e3 * _median(r["predict_times"])
    return res


def format_table(model, res, a):
    head = (f"{'framework':<10} {'ms/step':>9} {'(min-max)':>15} {'images/s':>9} "
            f"{'predict 1k ms':>14} {'peak RSS MB':>12} {'deepgpu/peer':>13}")
    lines = [f"model {model}, batch {a.batch_size}, input {a.input_size}x{a.input_size}"
             + (", global pooling" if a.global_pool else "") + f", {a.threads} thread(s), backend {a.backend}",
             head, "-" * len(head)]
    me = res.get("deepgpu")
    for fw, r in res.items():
        ratio = ""
        if me is not None and fw != "deepgpu":
            ratio = f"{me['step_ms'] / r['step_ms']:.2f}x / {me['predict_ms'] / r['predict_ms']:.2f}x"
        lines.append(f"{fw:<10} {r['step_ms']:>9.2f} {r['step_ms_min']:>7.1f}-{r['step_ms_max']:<7.1f} "
                     f"{r['images_per_s']:>9.0f} {r['predict_ms']:>14.1f} {r['rss_mb']:>12.0f} {ratio:>13}")
    lines.append("deepgpu/peer: deepgpu's time over the peer's (training step / predict); below 1 is faster")
    return "\n".join(lines)


def build_parser():
    p = argparse.ArgumentParser(prog="deepgpu bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--compare", default="torch,keras",
                   help="peers to run beside deepgpu, comma-separated (torch, keras); 'none' for none")
    p.add_argument("--model", default="cnn", help="cnn, dnn, or both comma-separated")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed training steps per round")
    p.add_argument("--rounds", type=int, default=5, help="A B C rounds")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--input-size", type=int, default=28)
    p.add_argument("--global-pool", action="store_true", help="the convnet with global average pooling")
    p.add_argument("--epoch", action="store_true",
                   help="instead: one epoch of Fashion-MNIST per framework, its time and peak resident memory")
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist",
                   help="folder of the Fashion-MNIST IDX files (Debian's dataset-fashion-mnist puts them here)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--keep-env", action="store_true", help=f"keep {' and '.join(SLOW_ENV)} for the workers")
    p.add_argument("--quiet-workers", action="store_true", help="hide the frameworks' own log output")
    p.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    if a.worker:
        return worker(a)
    peers = [] if a.compare.strip().lower() in ("", "none") else [s.strip() for s in a.compare.split(",")]
    bad = [p for p in peers if p not in ("torch", "keras")]
    if bad:
        print(f"deepgpu bench: error: unknown peer(s) {bad}; choose from torch, keras", file=sys.stderr)
        return 2
    fws = ["deepgpu"]
    for p in peers:
        if _available(p):
            fws.append(p)
        else:
            print(f"note: {p} is not installed here; skipping it "
                  f"({'pip install torch' if p == 'torch' else 'pip install tensorflow keras'})")
    env, removed = clean_env(a.threads, a.keep_env)
    if removed:
        print("note: unset " + ", ".join(f"{k}={v}" for k, v in removed.items())
              + " for the benchmark's worker processes (they slow OpenBLAS here; --keep-env keeps them)")
    elif not a.keep_env:
        print(f"note: {' and '.join(SLOW_ENV)} are not set here; nothing to unset")
    if "OPENBLAS_THREAD_TIMEOUT" in env:  # deepgpu sets it on import (backends/base.py); every worker inherits it
        print(f"note: OPENBLAS_THREAD_TIMEOUT={env['OPENBLAS_THREAD_TIMEOUT']} for every worker")
    report = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
              "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version()},
              "command": "deepgpu bench " + " ".join(argv if argv is not None else sys.argv[1:]),
              "unset_env": removed, "threads": a.threads, "models": {}}
    print(f"{report['date']}  {report['machine']['cpu']}, {report['machine']['cores']} cores, "
          f"Python {report['machine']['python']}")
    for model in [m.strip() for m in a.model.split(",")]:
        if model not in ("cnn", "dnn"):
            print(f"deepgpu bench: error: unknown model {model!r}; choose cnn or dnn", file=sys.stderr)
            return 2
        a1 = argparse.Namespace(**{**vars(a), "model": model})
        res = run_model(a1, env, fws)
        if a.epoch:
            report["models"][model] = res
            print(f"\nmodel {model}: one epoch of Fashion-MNIST (60,000 images), batch {a.batch_size}, "
                  f"{a.threads} thread(s)")
            print(f"{'framework':<10} {'epoch s':>9} {'peak RSS MB':>12}")
            for fw, r in res.items():
                print(f"{fw:<10} {r['epoch_s']:>9.1f} {r['epoch_rss_mb']:>12.0f}")
            continue
        report["models"][model] = {fw: {k: v for k, v in r.items() if k not in ("step_times",)}
                                   for fw, r in res.items()}
        print()
        print(format_table(model, res, a1))
        for fw, r in res.items():
            blas = "; ".join(f"{b.get('internal_api')} {b.get('version')} {b.get('architecture', '')} "
                             f"{b.get('num_threads')} thr" for b in r["blas"] if "internal_api" in b)
            print(f"  {fw}: {r['params']:,} params; {json.dumps(r['versions'])}; BLAS: {blas or 'n/a'}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
