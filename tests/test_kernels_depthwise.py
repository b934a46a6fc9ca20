"""depthwise.cu (deepgpu.kernels.depthwise) against the NumPy backend in float64, emulated on the
CPU and, where a GPU is usable, on it (marked cuda); and its launch count inside the op."""
from __future__ import annotations

import numpy as np
import pytest

from deepgpu import backends, kernels as K
from deepgpu.kernels import depthwise as DW
from deepgpu.testing import assert_scaled_close as check
from deepgpu.testing.emulation import current_custom

RNG = np.random.default_rng(20261202)


# x shape, kernel shape [kh, kw, C, M], strides, padding, dilation
CASES = [
    ((2, 7, 6, 3), (3, 3, 3, 1), 1, "same", 1),
    ((1, 9, 9, 40), (3, 3, 40, 1), 2, "same", 1),
    ((2, 8, 7, 5), (3, 2, 5, 3), (2, 1), "valid", 1),
    ((1, 9, 8, 4), (3, 3, 4, 2), 1, "same", (2, 1)),
    ((3, 5, 5, 33), (5, 5, 33, 1), 1, "same", 1),
    ((1, 4, 4, 1), (1, 1, 1, 4), 1, "valid", 1),
]


def _run(xp, xs, ks, s, p, d):
    cpu = backends.get("cpu")
    x = RNG.uniform(-1, 1, xs).astype(np.float32)
    k = RNG.uniform(-1, 1, ks).astype(np.float32)
    ref = cpu.depthwise_conv2d(x.astype(np.float64), k.astype(np.float64), s, p, d)
    dy = RNG.uniform(-1, 1, ref.shape).astype(np.float32)
    y = DW.depthwise_conv2d(xp.asarray(x), xp.asarray(k), s, p, d, out=xp.full(ref.shape, np.nan, np.float32))
    check(y, ref, "depthwise_conv2d")
    gx = DW.depthwise_conv2d_grad_input(xp.asarray(dy), xp.asarray(k), xs, s, p, d,
                                        out=xp.full(xs, np.nan, np.float32))
    check(gx, cpu.depthwise_conv2d_grad_input(dy.astype(np.float64), k.astype(np.float64), xs, s, p, d),
          "depthwise_conv2d_grad_input")
    gk = DW.depthwise_conv2d_grad_filter(xp.asarray(x), xp.asarray(dy), ks, s, p, d,
                                         out=xp.full(ks, np.nan, np.float32))
    check(gk, cpu.depthwise_conv2d_grad_filter(x.astype(np.float64), dy.astype(np.float64), ks, s, p, d),
          "depthwise_conv2d_grad_filter")


@pytest.mark.parametrize("xs,ks,s,p,d", CASES)
def test_depthwise_kernels(xp, xs, ks, s, p, d):
    _run(xp, xs, ks, s, p, d)


@pytest.mark.parametrize("activation", [None, "relu", "relu6", "sigmoid"])
@pytest.mark.parametrize("xs,ks,s,p,d", [CASES[1], CASES[2]])
def test_depthwise_bias_act_epilogue(xp, xs, ks, s, p, d, activation):
    """The forward's fused bias + activation (one launch) against the NumPy backend's composition."""
    cpu = backends.get("cpu")
    x = RNG.uniform(-3, 3, xs).astype(np.float32)
    k = RNG.uniform(-1, 1, ks).astype(np.float32)
    b = RNG.uniform(-1, 1, ks[2] * ks[3]).astype(np.float32)
    ref = cpu.depthwise_conv2d(x.astype(np.float64), k.astype(np.float64), s, p, d) + b
    ref = cpu.apply_activation(ref, activation)
    y = DW.depthwise_conv2d(xp.asarray(x), xp.asarray(k), s, p, d, out=xp.full(ref.shape, np.nan, np.float32),
                            bias=xp.asarray(b), activation=activation)
    check(y, ref, f"depthwise_conv2d + bias, {activation}")
    if activation == "relu6":
        assert (ref >= 6).any() and (ref <= 0).any()


def test_fused_depthwise_op_is_one_launch(_emulator):
    """ops.depthwise_conv2d_bias_act (a folded DepthwiseConv2D -> BatchNormalization -> ReLU6) on the
    custom path: one launch, no separate bias add or clip."""
    from deepgpu import ops
    from deepgpu.tensor import Tensor

    calls = []
    K._emulator = lambda name, grid, block, args: (calls.append(name), _emulator(name, grid, block, args))
    try:
        with current_custom(np) as B:
            def unfused(*args):
                raise AssertionError("the generic composition ran (depthwise_conv2d + add + clip)")
            B.depthwise_conv2d = unfused
            x = RNG.uniform(-3, 3, (2, 7, 7, 40)).astype(np.float32)
            k = RNG.uniform(-1, 1, (3, 3, 40, 1)).astype(np.float32)
            b = RNG.uniform(-1, 1, 40).astype(np.float32)
            y = ops.depthwise_conv2d_bias_act(Tensor(x, B), Tensor(k, B), Tensor(b, B), "relu6", 2, "same")
    finally:
        K._emulator = None
    assert calls == ["dg_dw_fwd"], calls
    cpu = backends.get("cpu")
    ref = np.clip(cpu.depthwise_conv2d(x.astype(np.float64), k.astype(np.float64), 2, "same", 1) + b, 0, 6)
    check(y.data, ref, "the fused op")


def test_split_filter_gradient_and_wide_indices(xp, monkeypatch):
    """The filter gradient in several parts (added up by a second launch), and 64-bit offsets."""
    seen = []
    launch = K._launch
    monkeypatch.setattr(K, "_launch", lambda name, grid, block, args: (seen.append((name, grid)),
                                                                       launch(name, grid, block, args)))
    monkeypatch.setattr(K, "_sm_count", lambda xp_: 64)
    monkeypatch.setattr(DW, "_DW_PIXELS_PER_PART", 8)
    monkeypatch.setattr(K, "_DW_WIDE_FROM", 1)
    _run(xp, (2, 6, 6, 8), (3, 3, 8, 1), 1, "same", 1)
    part = [g for name, g in seen if name == "dg_dw_grad_filter_part"]
    assert part and part[0][2] > 1 and "dg_dw_grad_filter_sum" in [name for name, _ in seen]


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="3 channels but the kernel expects 2"):
        DW.depthwise_conv2d(np.zeros((1, 4, 4, 3), np.float32), np.zeros((3, 3, 2, 1), np.float32))
    with pytest.raises(TypeError, match="float32"):
        DW.depthwise_conv2d(np.zeros((1, 4, 4, 2)), np.zeros((3, 3, 2, 1), np.float32))
    with pytest.raises(ValueError, match=r"bias: expected shape \(6,\)"):
        DW.depthwise_conv2d(np.zeros((1, 4, 4, 3), np.float32), np.zeros((3, 3, 3, 2), np.float32),
                            bias=np.zeros(3, np.float32))


def test_depthwise_op_launch_budget(_emulator):
    """ops.depthwise_conv2d and its gradient on the custom path: one of our launches forward, one
    for the input gradient, one (or two, when split) for the filter gradient; no CuPy routine."""
    from deepgpu import autograd, ops
    from deepgpu.tensor import Tensor

    calls = []
    K._emulator = lambda name, grid, block, args: (calls.append(name), _emulator(name, grid, block, args))
    try:
        with current_custom(np) as B:
            x = Tensor(RNG.uniform(-1, 1, (2, 6, 6, 8)).astype(np.float32), B)
            k = Tensor(RNG.uniform(-1, 1, (3, 3, 8, 1)).astype(np.float32), B)
            dy = Tensor(RNG.uniform(-1, 1, (2, 6, 6, 8)).astype(np.float32), B)
            f = autograd.grads(lambda x, k: ops.depthwise_conv2d(x, k, 1, "same"))
            gx, gk = f([x, k], dy)
    finally:
        K._emulator = None
    assert calls == ["dg_dw_fwd", "dg_dw_grad_input", "dg_dw_grad_filter_part"], calls
    cpu = backends.get("cpu")
    ref = cpu.depthwise_conv2d_grad_filter(x.data.astype(np.float64), dy.data.astype(np.float64), (3, 3, 8, 1),
                                           1, "same", 1)
    check(gk.data, ref, "the op's filter gradient")
