"""kernels/attention.cu (fused attention, flash-style online softmax) against the generic backend
version in float64, under the CPU emulation of our kernels (and on a GPU where usable); the generic
version against the composite ops (matmul, masked softmax, matmul) and finite differences."""
from __future__ import annotations

import numpy as np
import pytest

from deepgpu import backends, kernels as K

RNG = np.random.default_rng(18)
F32 = np.float32


def host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def check(actual, ref, what, rtol=1e-4):
    a, ref = host(actual).astype(np.float64), np.asarray(ref, np.float64)
    assert a.shape == ref.shape, f"{what}: shape {a.shape} != {ref.shape}"
    fin = np.isfinite(ref)
    assert np.array_equal(np.isfinite(a), fin), f"{what}: unwritten (NaN) or infinite elements differ"
    scale = max(float(np.abs(ref[fin]).max(initial=0.0)), 1e-6)
    err = float(np.abs(a[fin] - ref[fin]).max(initial=0.0))
    assert err <= rtol * scale, f"{what}: max error {err:.3g} > {rtol} * {scale:.3g}"


def _mask(b, h, t, s, kind):
    if kind is None:
        return None
    if kind == "keys":  # a padding mask over keys, broadcast over heads and queries
        m = (RNG.uniform(size=(b, 1, 1, s)) > 0.3).astype(np.int32)
        m[..., 0] = 1
        return m
    m = (RNG.uniform(size=(b, h, t, s)) > 0.4).astype(np.int32)  # full, some rows masked everywhere
    m[0, 0, 0] = 0
    return m


CASES = [(1, 1, 1, 1, 1, 1), (2, 2, 5, 7, 3, 4), (1, 3, 33, 40, 8, 8), (2, 1, 70, 65, 16, 5), (1, 2, 9, 9, 64, 64)]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kind", [None, "keys", "full"])
@pytest.mark.parametrize("b,h,t,s,d,e", CASES)
def test_attention_kernels(xp, b, h, t, s, d, e, kind, causal):
    cpu = backends.get("cpu")
    q, k = RNG.standard_normal((b * h, t, d)).astype(F32), RNG.standard_normal((b * h, s, d)).astype(F32)
    v, dout = RNG.standard_normal((b * h, s, e)).astype(F32), RNG.standard_normal((b * h, t, e)).astype(F32)
    mask = _mask(b, h, t, s, kind)
    scale = 1.0 / np.sqrt(d)
    f64 = (lambda a: a.astype(np.float64))
    out, lse = cpu.attention(f64(q), f64(k), f64(v), mask, h, scale, causal)
    dev = (lambda a: None if a is None else xp.asarray(a))
    got_out, got_lse = K.attention(dev(q), dev(k), dev(v), dev(mask), h, scale, causal)
    check(got_out, out, f"out {kind} causal={causal}")
    check(got_lse, lse, f"lse {kind} causal={causal}")
    ref = cpu.attention_grad(f64(dout), f64(q), f64(k), f64(v), out, lse, mask, h, scale, causal)
    got = K.attention_grad(dev(dout), dev(q), dev(k), dev(v), got_out, got_lse, dev(mask), h, scale, causal)
    for name, a, want in zip(("dq", "dk", "dv"), got, ref):
        check(a, want, f"{name} {kind} causal={causal}")


def test_generic_attention_matches_the_composite_ops_and_finite_differences():
    from deepgpu import ops
    from deepgpu.testing import check_gradients

    cpu = backends.get("cpu")
    b, h, t, s, d = 2, 2, 4, 5, 3
    q, k, v = (RNG.standard_normal((b * h, n, d)) for n in (t, s, s))
    mask = _mask(b, h, t, s, "keys")
    out, _ = cpu.attention(q, k, v, mask, h, 0.5, True)
    m = np.broadcast_to(mask != 0, (b, h, t, s)).reshape(b * h, t, s) & np.tril(np.ones((t, s), bool))
    want = ops.dot_product_attention(q, k, v, m, scale=0.5).data_sync()
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)  # the ops compute in float32

    def f(q, k, v):  # the generic backward through a one-off op, checked by finite differences
        from deepgpu.autograd import register_gradient
        from deepgpu.ops import _make

        @register_gradient("_test_fused_attention")
        def _g(node, dy):
            o, lse = node.saved
            return cpu.attention_grad(dy, *(i.data for i in node.inputs), o, lse, mask, h, 0.5, True)
        o, lse = cpu.attention(q.data, k.data, v.data, mask, h, 0.5, True)
        return _make("_test_fused_attention", o, (q, k, v), cpu, saved=(o, lse))

    check_gradients(f, [q, k, v])


def test_launcher_errors():
    q = np.zeros((2, 3, 4), F32)
    with pytest.raises(ValueError, match="do not fit"):
        K.attention(q, np.zeros((2, 3, 5), F32), np.zeros((2, 3, 4), F32))
    with pytest.raises(ValueError, match="D, E <= 64"):
        K.attention(np.zeros((1, 2, 65), F32), np.zeros((1, 2, 65), F32), np.zeros((1, 2, 3), F32))
    with pytest.raises(ValueError, match="int32"):
        K.attention(q, q, q, np.ones((1, 1, 3, 3), bool))


def test_layers_take_the_fused_kernels_on_the_custom_path(_emulator):
    """MultiHeadAttention on the (emulated) CUDA backend: one dg_attn_fwd forward, dg_attn_bwd_dq and
    dg_attn_bwd_dkv backward, and the same outputs and gradients as the CPU's composite path."""
    from deepgpu import autograd, layers as L
    from deepgpu.tensor import Tensor, tensor
    from deepgpu.testing.emulation import current_custom

    x = RNG.standard_normal((2, 6, 8)).astype(F32)
    am = (RNG.uniform(size=(2, 6, 6)) > 0.3)
    am[..., 0] = True
    cpu_layer = L.MultiHeadAttention(2, 4, use_bias=False)
    y_cpu = cpu_layer(x, x, attention_mask=am).data_sync()
    f = autograd.grads(lambda t: cpu_layer(t, t, attention_mask=am))
    g_cpu = f([tensor(x)], tensor(np.ones_like(y_cpu)))[0].data_sync()
    calls = []
    K._emulator = lambda name, grid, block, args: (calls.append(name), _emulator(name, grid, block, args))
    try:
        with current_custom(np) as B:
            layer = L.MultiHeadAttention(2, 4, use_bias=False)
            t = Tensor(x, B)
            layer(t, t)
            layer.set_weights(cpu_layer.get_weights())
            calls.clear()
            y = layer(t, t, attention_mask=am)
            g = autograd.grads(lambda t: layer(t, t, attention_mask=am))([t], Tensor(np.ones_like(y_cpu), B))[0]
    finally:
        K._emulator = None
    assert [c for c in calls if c.startswith("dg_attn")] == ["dg_attn_fwd", "dg_attn_fwd", "dg_attn_bwd_dq",
                                                             "dg_attn_bwd_dkv"], calls
    check(y.data, y_cpu, "output")
    check(g.data, g_cpu, "input gradient")
