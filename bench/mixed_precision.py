"""Training step time of a small convnet in float32 and under mixed precision, deepgpu beside its peers.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 bench/mixed_precision.py [--backend cpu|cuda]
        [--threads 2] [--rounds 3] [--batch 128]

Conv2D(32, 3, relu), MaxPooling2D, Conv2D(64, 3, relu), MaxPooling2D, Flatten,
Dense(128, relu), Dense(10), float32 softmax; 28x28x1 inputs, Adam, sparse
categorical crossentropy. One ``train_on_batch`` (a step with its host read of
the loss) per call; the median of 5 timed calls per round after two warm-up
steps, peers alternated round by round. deepgpu: "float32" and
"mixed_float16" (with its LossScaleOptimizer); Keras 3 (its installed
backend): the same two policies; PyTorch: float32 and autocast (bfloat16 on
the CPU, float16 with a GradScaler on CUDA). Peers not installed are skipped.

On the CPU nothing gains from 16 bits: deepgpu computes its heavy primitives
in float32 and rounds (casts both ways are extra passes), NumPy has no fast
float16 arithmetic, so mixed_float16 is expected to be slower there. The
speed-up is the GPU's (tensor cores); ``--backend cuda`` measures it.
"""
import argparse
import os
import statistics
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--backend", default="cpu", choices=["cpu", "cuda"])
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--batch", type=int, default=128)
args = ap.parse_args()
for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "DEEPGPU_NUM_THREADS",
          "TF_NUM_INTRAOP_THREADS"):
    os.environ[k] = str(args.threads)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import deepgpu as dg  # noqa: E402
from benchutil import alternated  # noqa: E402  (bench/, beside this script)
from deepgpu import layers as L, mixed_precision  # noqa: E402

dg.set_backend(args.backend)
N = args.batch
rng = np.random.default_rng(0)
X = rng.uniform(0, 1, (N, 28, 28, 1)).astype("float32")
Y = rng.integers(0, 10, N).astype("int32")
steps, versions = {}, {"deepgpu": dg.__version__}


def deepgpu_step(policy):
    mixed_precision.set_global_policy(policy)
    try:
        dg.set_seed(0)
        m = dg.Sequential([L.Input((28, 28, 1)), L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(),
                           L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(), L.Flatten(),
                           L.Dense(128, activation="relu"), L.Dense(10),
                           L.Activation("softmax", dtype="float32")])
    finally:
        mixed_precision.set_global_policy(None)
    m.compile("adam", "sparse_categorical_crossentropy")
    x, y = dg.tensor(X), dg.tensor(Y)
    return lambda: m.train_on_batch(x, y)


for pol in ("float32", "mixed_float16"):
    steps[f"deepgpu {pol}"] = deepgpu_step(pol)

try:
    import keras
    versions["keras"] = f"{keras.__version__} ({keras.backend.backend()})"

    def keras_step(policy):
        keras.mixed_precision.set_global_policy(policy)
        try:
            keras.utils.set_random_seed(0)
            m = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(32, 3, activation="relu"),
                                  keras.layers.MaxPooling2D(), keras.layers.Conv2D(64, 3, activation="relu"),
                                  keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                                  keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10),
                                  keras.layers.Activation("softmax", dtype="float32")])
            m.compile("adam", "sparse_categorical_crossentropy")
        finally:
            keras.mixed_precision.set_global_policy("float32")
        return lambda: m.train_on_batch(X, Y)

    if args.backend == "cpu":
        for pol in ("float32", "mixed_float16"):
            steps[f"keras {pol}"] = keras_step(pol)
except ImportError:
    print("keras: not installed, skipped")

try:
    import torch
    versions["torch"] = torch.__version__
    torch.set_num_threads(args.threads)
    dev = "cuda" if args.backend == "cuda" else "cpu"
    half = torch.float16 if dev == "cuda" else torch.bfloat16

    def torch_step(autocast):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                  torch.nn.Conv2d(32, 64, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                  torch.nn.Flatten(), torch.nn.Linear(64 * 5 * 5, 128), torch.nn.ReLU(),
                                  torch.nn.Linear(128, 10)).to(dev)
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        scaler = torch.amp.GradScaler(dev, enabled=autocast and half == torch.float16)
        x = torch.tensor(X).permute(0, 3, 1, 2).contiguous().to(dev)
        y = torch.tensor(Y, dtype=torch.long).to(dev)

        def step():
            opt.zero_grad()
            with torch.autocast(dev, dtype=half, enabled=autocast):
                loss = torch.nn.functional.cross_entropy(net(x).float(), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            return loss.item()
        return step

    steps["torch float32"] = torch_step(False)
    steps[f"torch autocast {str(half).split('.')[-1]}"] = torch_step(True)
except ImportError:
    print("torch: not installed, skipped")

times = alternated(steps, args.rounds, warmup=2)
names = list(steps)
print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, backend {args.backend}, batch {N}, threads "
      f"{args.threads}, load {os.getloadavg()[0]:.1f}; " + ", ".join(f"{k} {v}" for k, v in versions.items()))
for name in names:
    ms = [t * 1e3 for t in times[name]]
    print(f"  {name:28s} {statistics.median(ms):8.1f} ms/step  (rounds: {', '.join(f'{m:.1f}' for m in ms)})")
