"""One augmented batch's statistics, deepgpu vs Keras, layer by layer (issue 17, seed 003 "Invariance").

    python3 bench/augment_batch_stats.py

512 images of augment_quality.py's subset through each augmentation layer alone (training=True) and
the whole stack, 2 seeds each, in both libraries; prints the mean of each statistic. Needs keras.
"""
import os, sys, json
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
from augment_quality import subset
from deepgpu.datasets import fashion_mnist
(x, y), _ = fashion_mnist.load_data()
x, y = subset(x, y)
x = (x.astype(np.float32) / 255.0).reshape(-1, 28, 28, 1)[:512]

def stats(x0, out):
    d = out - x0
    return dict(mean=float(out.mean()), std=float(out.std()), zeros=float((out == 0).mean()),
                mad=float(np.abs(d).mean()), unchanged=float((np.abs(d).reshape(len(x0), -1).max(1) < 1e-6).mean()),
                corr=float(np.corrcoef(x0.ravel(), out.ravel())[0, 1]),
                com_x=float(((out.sum(axis=(1, 3)) * np.arange(28)).sum(1) / np.maximum(out.sum(axis=(1, 2, 3)), 1e-6)).std()),
                mass=float(out.sum(axis=(1, 2, 3)).mean() / x0.sum(axis=(1, 2, 3)).mean()))

def layers(L, seed):
    return {"flip": L.RandomFlip("horizontal", seed=seed), "rotation": L.RandomRotation(0.05, seed=seed + 1),
            "zoom": L.RandomZoom(0.1, seed=seed + 2), "translation": L.RandomTranslation(0.1, 0.1, seed=seed + 3)}

from deepgpu import layers as DL
import keras
KL = keras.layers
res = {}
for lib, L in (("deepgpu", DL), ("keras", KL)):
    for seed in (0, 1):
        lay = layers(L, seed)
        for name, l in lay.items():
            out = np.asarray(l(x, training=True))
            res.setdefault((lib, name), []).append(stats(x, out))
        out = x
        for l in layers(L, seed + 10).values():
            out = np.asarray(l(out, training=True))
        res.setdefault((lib, "stack"), []).append(stats(x, out))
for name in ("flip", "rotation", "zoom", "translation", "stack"):
    for lib in ("deepgpu", "keras"):
        r = res[(lib, name)]
        avg = {k: round(float(np.mean([s[k] for s in r])), 4) for k in r[0]}
        print(name.ljust(12), lib.ljust(8), json.dumps(avg))
