"""Whole-network benchmarks: one training step and one prediction batch of the
seed convnet and the Flatten-512-512-10 network (the issue's two networks),
on every available backend. Peers are timed by ``deepgpu bench``, not here.

Rates: images/s from the median, and GFLOP/s from the FLOPs of the step
(forward 2*MACs; a training step counts 3x the forward's FLOPs, less the
first convolution's input gradient that is never computed).
"""
from __future__ import annotations

import pytest

import deepgpu as dg
from deepgpu import zoo
from deepgpu.tensor import Tensor

from benchutil import timed

optimizers = pytest.importorskip("deepgpu.optimizers", reason="deepgpu.optimizers has not landed")

BATCH = 128
# Forward FLOPs per image (2 * multiply-adds) of each network at 28x28x1.
CNN_FWD = 2 * (26 * 26 * 9 * 32 + 24 * 24 * 288 * 32 + 10 * 10 * 288 * 64 + 8 * 8 * 576 * 64
               + 1024 * 512 + 512 * 10)
CNN_TRAIN = 3 * CNN_FWD - 2 * 26 * 26 * 9 * 32
DNN_FWD = 2 * (784 * 512 + 512 * 512 + 512 * 10)
DNN_TRAIN = 3 * DNN_FWD - 2 * 784 * 512
NETS = {"cnn": (zoo.convnet, CNN_FWD, CNN_TRAIN), "dnn": (zoo.dnn, DNN_FWD, DNN_TRAIN)}


def _setup(B, name):
    dg.set_seed(0)
    model = NETS[name][0]()
    model.compile(optimizer=optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    x = B.random_uniform((BATCH, 28, 28, 1))
    y = B.random_uniform((BATCH,), 0, 10, "int32")
    return model, Tensor(x, B), Tensor(y, B)


@pytest.mark.parametrize("name", list(NETS))
def test_train_step(benchmark, B, name):
    model, x, y = _setup(B, name)
    for _ in range(2):
        model.train_on_batch(x, y)
    timed(benchmark, B, lambda: model.train_on_batch(x, y), flops=BATCH * NETS[name][2])
    if benchmark.stats is not None:
        benchmark.extra_info["images/s"] = round(BATCH / benchmark.stats.stats.median)


@pytest.mark.parametrize("name", list(NETS))
def test_predict_batch(benchmark, B, name):
    model, x, _ = _setup(B, name)
    model.predict_on_batch(x)
    timed(benchmark, B, lambda: model.predict_on_batch(x), flops=BATCH * NETS[name][1])
    if benchmark.stats is not None:
        benchmark.extra_info["images/s"] = round(BATCH / benchmark.stats.stats.median)
