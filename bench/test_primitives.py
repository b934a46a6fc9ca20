"""Primitive benchmarks: each backend primitive at the shapes the seed convnet uses.

Rates: matmul and convolutions count 2*m*n*k FLOPs; pooling, the loss and
Adam count the bytes read and written once (their floor is memory).
"""
from __future__ import annotations

import pytest

from benchutil import rand, timed

# (name, x shape NHWC, kernel [kh, kw, in, out]) of the seed convnet at batch 128.
CONVS = [
    ("conv1", (128, 28, 28, 1), (3, 3, 1, 32)),
    ("conv2", (128, 26, 26, 32), (3, 3, 32, 32)),
    ("conv3", (128, 12, 12, 32), (3, 3, 32, 64)),
    ("conv4", (128, 10, 10, 64), (3, 3, 64, 64)),
]
CONV_IDS = [c[0] for c in CONVS]


def _conv_flops(x_shape, k_shape):
    n, h, w, _ = x_shape
    kh, kw, c, o = k_shape
    return 2.0 * n * (h - kh + 1) * (w - kw + 1) * kh * kw * c * o


@pytest.mark.parametrize("m,k,n", [(1024, 1024, 1024), (128, 9216, 512), (128, 784, 512)],
                         ids=["square1024", "dense9216x512", "dense784x512"])
def test_matmul(benchmark, B, rng, m, k, n):
    a, b = rand(B, rng, (m, k)), rand(B, rng, (k, n))
    timed(benchmark, B, lambda: B.matmul(a, b), flops=2.0 * m * n * k)


@pytest.mark.parametrize("name,xs,ks", CONVS, ids=CONV_IDS)
def test_conv2d_forward(benchmark, B, rng, name, xs, ks):
    x, k = rand(B, rng, xs), rand(B, rng, ks)
    timed(benchmark, B, lambda: B.conv2d(x, k), flops=_conv_flops(xs, ks))


@pytest.mark.parametrize("name,xs,ks", CONVS, ids=CONV_IDS)
def test_conv2d_grad_filter(benchmark, B, rng, name, xs, ks):
    x = rand(B, rng, xs)
    ho, wo = xs[1] - ks[0] + 1, xs[2] - ks[1] + 1
    dy = rand(B, rng, (xs[0], ho, wo, ks[3]))
    timed(benchmark, B, lambda: B.conv2d_grad_filter(x, dy, ks), flops=_conv_flops(xs, ks))


@pytest.mark.parametrize("name,xs,ks", CONVS[1:], ids=CONV_IDS[1:])
def test_conv2d_grad_input(benchmark, B, rng, name, xs, ks):
    k = rand(B, rng, ks)
    ho, wo = xs[1] - ks[0] + 1, xs[2] - ks[1] + 1
    dy = rand(B, rng, (xs[0], ho, wo, ks[3]))
    timed(benchmark, B, lambda: B.conv2d_grad_input(dy, k, xs), flops=_conv_flops(xs, ks))


POOLS = [((128, 24, 24, 32),), ((128, 8, 8, 64),)]


@pytest.mark.parametrize("xs", [(128, 24, 24, 32), (128, 8, 8, 64)], ids=["pool1", "pool2"])
def test_max_pool_forward(benchmark, B, rng, xs):
    x = rand(B, rng, xs)
    nb = x.nbytes * 1.25
    timed(benchmark, B, lambda: B.max_pool2d(x, (2, 2)), nbytes=nb)


@pytest.mark.parametrize("xs", [(128, 24, 24, 32), (128, 8, 8, 64)], ids=["pool1", "pool2"])
def test_max_pool_backward(benchmark, B, rng, xs):
    x = rand(B, rng, xs)
    y = B.max_pool2d(x, (2, 2))
    dy = rand(B, rng, y.shape)
    nb = x.nbytes * 2 + y.nbytes * 2  # read x, y, dy; write dx
    timed(benchmark, B, lambda: B.max_pool2d_grad(dy, x, y, (2, 2)), nbytes=nb)


@pytest.mark.parametrize("xs", [(128, 24, 24, 32)], ids=["pool1"])
def test_avg_pool_forward(benchmark, B, rng, xs):
    x = rand(B, rng, xs)
    timed(benchmark, B, lambda: B.avg_pool2d(x, (2, 2)), nbytes=x.nbytes * 1.25)


@pytest.mark.parametrize("xs", [(128, 24, 24, 32)], ids=["pool1"])
def test_avg_pool_backward(benchmark, B, rng, xs):
    dy = rand(B, rng, (xs[0], xs[1] // 2, xs[2] // 2, xs[3]))
    timed(benchmark, B, lambda: B.avg_pool2d_grad(dy, xs, (2, 2)), nbytes=dy.nbytes * 5)


@pytest.mark.parametrize("n,c", [(128, 10), (4096, 1000)], ids=["batch128x10", "4096x1000"])
def test_softmax_cross_entropy(benchmark, B, rng, n, c):
    logits = rand(B, rng, (n, c))
    labels = B.one_hot(B.asarray(rng.integers(0, c, n), "int32"), c)
    timed(benchmark, B, lambda: B.softmax_cross_entropy(logits, labels), nbytes=logits.nbytes * 3)


@pytest.mark.parametrize("size", [594_922, 4_000_000], ids=["convnet_params", "4M"])
def test_adam_update(benchmark, B, rng, size):
    p, g = rand(B, rng, (size,)), rand(B, rng, (size,))
    m, v = B.zeros((size,)), B.zeros((size,))
    state = {"step": 0}

    def step():
        state["step"] += 1
        B.adam_update(p, g, m, v, 1e-3, 0.9, 0.999, 1e-7, state["step"])

    timed(benchmark, B, step, nbytes=p.nbytes * 7)  # read p g m v, write p m v
