"""Depthwise convolution: the op's forward against a per-channel conv2d, its gradients by finite
differences, and every backend implementation (generic, C kernel) against each other."""
import numpy as np
import pytest

import deepgpu as dg
from deepgpu.backends import current
from deepgpu.backends.base import Backend
from deepgpu.testing import check_gradients

RNG = np.random.default_rng(20261202)

# x shape, kernel shape [kh, kw, C, M], strides, padding, dilation
CASES = [
    ((1, 5, 5, 2), (3, 3, 2, 1), 1, "valid", 1),
    ((2, 5, 4, 3), (3, 3, 3, 2), 1, "same", 1),
    ((1, 7, 6, 2), (3, 3, 2, 1), 2, "same", 1),
    ((2, 7, 7, 1), (3, 2, 1, 3), 2, "valid", 1),
    ((1, 6, 7, 2), (2, 2, 2, 2), (1, 2), "same", 1),
    ((1, 7, 7, 2), (3, 3, 2, 1), 1, "valid", 2),
    ((1, 6, 5, 2), (3, 3, 2, 2), 1, "same", (2, 1)),
    ((2, 4, 5, 3), (1, 1, 3, 2), 1, "valid", 1),
    ((1, 7, 6, 2), (5, 5, 2, 1), 1, "same", 1),
]


def reference(x, k, s, p, d):
    """Each input channel convolved by conv2d with its own [kh, kw, 1, M] kernel."""
    c, m = k.shape[2], k.shape[3]
    outs = [dg.conv2d(dg.tensor(x[..., i:i + 1], "float64"), dg.tensor(k[:, :, i:i + 1, :], "float64"),
                      strides=s, padding=p, dilation_rate=d).data_sync() for i in range(c)]
    return np.stack(outs, axis=3).reshape(*outs[0].shape[:3], c * m)


@pytest.mark.parametrize("xs,ks,s,p,d", CASES)
def test_forward_matches_per_channel_conv2d(xs, ks, s, p, d):
    x, k = RNG.normal(size=xs), RNG.normal(size=ks)
    y = dg.ops.depthwise_conv2d(dg.tensor(x, "float64"), dg.tensor(k, "float64"), s, p, d).data_sync()
    np.testing.assert_allclose(y, reference(x, k, s, p, d), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("xs,ks,s,p,d", CASES)
def test_gradients(xs, ks, s, p, d):
    check_gradients(lambda x, k: dg.ops.depthwise_conv2d(x, k, s, p, d),
                    [RNG.uniform(-1, 1, xs), RNG.uniform(-1, 1, ks)])


def test_unbatched_input():
    check_gradients(lambda x, k: dg.ops.depthwise_conv2d(x, k, padding="same"),
                    [RNG.uniform(-1, 1, (4, 4, 2)), RNG.uniform(-1, 1, (3, 3, 2, 2))])


@pytest.mark.parametrize("xs,ks,s,p,d", CASES + [
    ((2, 9, 11, 40), (3, 3, 40, 1), 1, "same", 1),
    ((3, 12, 10, 24), (3, 3, 24, 1), 2, "same", 1),
    ((1, 8, 8, 19), (3, 3, 19, 2), 1, "valid", 1),
    ((2, 10, 9, 32), (5, 5, 32, 1), 2, "valid", 1),
    ((1, 9, 9, 16), (3, 3, 16, 1), 1, "same", 2),
])
def test_backend_matches_generic_float32(xs, ks, s, p, d):
    """The active backend's float32 primitives (C kernels on the CPU) equal the generic ones."""
    B = current()
    x = RNG.normal(size=xs).astype(np.float32)
    k = RNG.normal(size=ks).astype(np.float32)
    y = Backend.depthwise_conv2d(B, B.asarray(x), B.asarray(k), s, p, d)
    dy = RNG.normal(size=y.shape).astype(np.float32)
    got = (B.depthwise_conv2d(B.asarray(x), B.asarray(k), s, p, d),
           B.depthwise_conv2d_grad_input(B.asarray(dy), B.asarray(k), xs, s, p, d),
           B.depthwise_conv2d_grad_filter(B.asarray(x), B.asarray(dy), ks, s, p, d))
    want = (y, Backend.depthwise_conv2d_grad_input(B, B.asarray(dy), B.asarray(k), xs, s, p, d),
            Backend.depthwise_conv2d_grad_filter(B, B.asarray(x), B.asarray(dy), ks, s, p, d))
    for g, w in zip(got, want):
        assert g.dtype == np.float32 and g.shape == w.shape
        np.testing.assert_allclose(B.to_numpy(g), B.to_numpy(w), rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("activation", [None, "relu", "relu6", "tanh"])
@pytest.mark.parametrize("xs,ks,s,p,d", [CASES[1], CASES[3], CASES[6]])
def test_bias_act_gradients(xs, ks, s, p, d, activation):
    x, k, b = RNG.uniform(-3, 3, xs), RNG.uniform(-1, 1, ks), RNG.uniform(-1, 1, ks[2] * ks[3])
    if activation in ("relu", "relu6"):  # keep the pre-activations away from the kinks at 0 and 6
        pre = dg.ops.depthwise_conv2d(dg.tensor(x, "float64"), dg.tensor(k, "float64"), s, p, d).data_sync() + b
        assert not np.all((pre > 0) & (pre < 6)), "some values are clipped"
        near = np.minimum(np.abs(pre), np.abs(pre - 6)).min(axis=(0, 1, 2)) < 1e-3
        b = b + np.where(near, 0.01, 0.0)
    check_gradients(lambda x, k, b: dg.ops.depthwise_conv2d_bias_act(x, k, b, activation, s, p, d), [x, k, b])
    check_gradients(lambda x, k: dg.ops.depthwise_conv2d_bias_act(x, k, None, activation, s, p, d), [x, k])


@pytest.mark.parametrize("activation,fn", [(None, lambda y: y), ("relu", dg.relu),
                                           ("relu6", lambda y: dg.ops.clip(y, 0.0, 6.0))])
@pytest.mark.parametrize("xs,ks,s,p,d", [
    ((2, 9, 11, 40), (3, 3, 40, 1), 1, "same", 1),   # blocks of 32 and 8 channels
    ((3, 12, 10, 37), (3, 3, 37, 1), 2, "same", 1),  # and a tail of 5
    ((1, 8, 8, 3), (3, 3, 3, 2), 1, "valid", 1),     # depth multiplier 2: the generic loop
])
def test_bias_act_equals_the_unfused_ops(xs, ks, s, p, d, activation, fn):
    """float32 on the active backend (the CPU's C epilogue) against depthwise_conv2d + bias, then
    the activation."""
    x = dg.tensor(RNG.uniform(-3, 3, xs).astype(np.float32))
    k = dg.tensor(RNG.uniform(-1, 1, ks).astype(np.float32))
    b = dg.tensor(RNG.uniform(-1, 1, ks[2] * ks[3]).astype(np.float32))
    want = fn(dg.ops.depthwise_conv2d(x, k, s, p, d) + b).data_sync()
    got = dg.ops.depthwise_conv2d_bias_act(x, k, b, activation, s, p, d).data_sync()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if activation == "relu6":
        assert (got == 6).any() and (got == 0).any()


def test_bias_act_refuses_bad_bias_and_activation():
    x, k = dg.tensor(RNG.normal(size=(1, 5, 5, 3))), dg.tensor(RNG.normal(size=(3, 3, 3, 2)))
    with pytest.raises(ValueError, match=r"bias of shape \(3,\) for 6 output channels"):
        dg.ops.depthwise_conv2d_bias_act(x, k, np.zeros(3))
    with pytest.raises(ValueError, match="activation 'gelu' is not one of"):
        dg.ops.depthwise_conv2d_bias_act(x, k, None, "gelu")


def test_bad_shapes_name_what_was_expected():
    x = dg.tensor(RNG.normal(size=(1, 5, 5, 3)))
    with pytest.raises(ValueError, match="3 channels but the kernel expects 2"):
        dg.ops.depthwise_conv2d(x, dg.tensor(RNG.normal(size=(3, 3, 2, 1))))
    with pytest.raises(ValueError, match="smaller than the window"):
        dg.ops.depthwise_conv2d(x, dg.tensor(RNG.normal(size=(7, 7, 3, 1))))
