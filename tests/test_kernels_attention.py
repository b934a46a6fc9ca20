"""kernels/attention.cu (fused attention, flash-style online softmax) against the generic backend
version in float64, under the CPU emulation of our kernels (and on a GPU where usable); the generic
version against the composite ops (matmul, masked softmax, matmul) and finite differences."""
from __future__ import annotations

import numpy as np
import pytest

from deepgpu import backends, kernels as K
from deepgpu.testing.emulation import current_custom

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


# ------------------------------------------------------------ dropout inside the fused kernels
# The mask of element (bh, i, j) is random_keyed's hash of (seed, counter, flat index), regenerated
# backward; the NumPy reference (Backend.attention with rate, seed, counter) draws the same one.
DROP_CASES = [(2, 2, 5, 7, 3, 4), (1, 3, 33, 40, 8, 8), (2, 1, 70, 65, 16, 5)]


def _slabs(b, h, t, s, d, e):
    return (RNG.standard_normal((b * h, t, d)).astype(F32), RNG.standard_normal((b * h, s, d)).astype(F32),
            RNG.standard_normal((b * h, s, e)).astype(F32), RNG.standard_normal((b * h, t, e)).astype(F32))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kind", [None, "keys", "full"])
@pytest.mark.parametrize("b,h,t,s,d,e", DROP_CASES)
def test_attention_dropout_kernels_match_the_reference(xp, b, h, t, s, d, e, kind, causal):
    cpu = backends.get("cpu")
    q, k, v, dout = _slabs(b, h, t, s, d, e)
    mask = _mask(b, h, t, s, kind)
    scale, rate, seed, counter = 1.0 / np.sqrt(d), 0.3, 1234, 5
    f64 = (lambda a: a.astype(np.float64))
    dev = (lambda a: None if a is None else xp.asarray(a))
    out, lse = cpu.attention(f64(q), f64(k), f64(v), mask, h, scale, causal, rate, seed, counter)
    plain, plain_lse = cpu.attention(f64(q), f64(k), f64(v), mask, h, scale, causal)
    assert not np.allclose(out, plain), "the dropout changed nothing"
    np.testing.assert_array_equal(lse, plain_lse)  # lse is the undropped softmax's
    key = cpu._keyed_key(seed, counter)
    got_out, got_lse = K.attention(dev(q), dev(k), dev(v), dev(mask), h, scale, causal, rate, key)
    check(got_out, out, f"out {kind} causal={causal}")
    check(got_lse, lse, f"lse {kind} causal={causal}")
    ref = cpu.attention_grad(f64(dout), f64(q), f64(k), f64(v), out, lse, mask, h, scale, causal, rate, seed,
                             counter)
    got = K.attention_grad(dev(dout), dev(q), dev(k), dev(v), got_out, got_lse, dev(mask), h, scale, causal, rate,
                           key)
    for name, a, want in zip(("dq", "dk", "dv"), got, ref):
        check(a, want, f"{name} {kind} causal={causal}")


def _kept(xp, rate, key, replay=None, n=64):
    """The kernel's keep mask over [n, n, n] (as float 0/1): uniform probabilities (q = 0) against
    one-hot values (v = I), so out_ij = z_ij / n."""
    q, k = xp.zeros((n, n, 8), F32), xp.asarray(RNG.standard_normal((n, n, 8)).astype(F32))
    v = xp.asarray(np.broadcast_to(np.eye(n, dtype=F32), (n, n, n)).copy())
    out, _ = K.attention(q, k, v, None, 1, 1.0, False, rate, key, replay)
    return np.rint(host(out) * n * (1.0 - rate))


def test_attention_dropout_mask_statistics_and_keys(xp):
    cpu = backends.get("cpu")
    rate, n = 0.1, 64
    kept = _kept(xp, rate, cpu._keyed_key(7, 1))
    assert set(np.unique(kept)) <= {0.0, 1.0}
    want = cpu.random_keyed((n, n, n), 7, 1, "uniform", "float64") >= rate  # the same keep-mask function
    np.testing.assert_array_equal(kept.astype(bool), want)
    frac = 1.0 - kept.mean()  # 262,144 draws: std of the fraction about 0.0006
    assert abs(frac - rate) < 0.005, frac
    other = _kept(xp, rate, cpu._keyed_key(7, 2))
    assert 0.1 < (other != kept).mean() < 0.25  # about 2 rate (1 - rate) = 0.18 for independent masks
    # a captured step's replay count enters the key as the CUDA backend's _keyed_key mixes it in
    key = cpu._keyed_key(7, 1)
    replayed = _kept(xp, rate, key, xp.asarray(np.array([3], np.uint64)))
    with np.errstate(over="ignore"):
        mixed = np.uint64(3) * np.uint64(0x632BE59BD9B4E019) + key
    np.testing.assert_array_equal(replayed, _kept(xp, rate, mixed))
    assert (replayed != kept).any()


def test_attention_dropout_rate_zero_is_the_plain_kernel(xp):
    q, k, v, _ = _slabs(2, 2, 9, 11, 8, 8)
    q, k, v = xp.asarray(q), xp.asarray(k), xp.asarray(v)
    plain = host(K.attention(q, k, v, None, 2, 0.5, True)[0])
    np.testing.assert_array_equal(host(K.attention(q, k, v, None, 2, 0.5, True, 0.0, 99)[0]), plain)
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        K.attention(q, k, v, None, 2, 0.5, True, 1.0, 99)


def test_training_dropout_takes_the_fused_kernels(_emulator):
    """ops.dot_product_attention(training, dropout_rate) on the custom path: the same three launches as
    without dropout (no dropout kernel, no score matrix), values and gradients as the NumPy reference
    with the same key; MultiHeadAttention(dropout) draws a new key per call."""
    from deepgpu import autograd, layers as L, ops
    from deepgpu.tensor import Tensor

    cpu = backends.get("cpu")
    b, h, t, s, d = 2, 2, 6, 7, 4
    q, k, v = (RNG.standard_normal((b, h, n, d)).astype(F32) for n in (t, s, s))
    dy = RNG.standard_normal((b, h, t, d)).astype(F32)
    calls = []
    K._emulator = lambda name, grid, block, args: (calls.append(name), _emulator(name, grid, block, args))
    try:
        with current_custom(np) as B:
            f = autograd.grads(lambda q, k, v: ops.dot_product_attention(q, k, v, is_causal=True, dropout_rate=0.25,
                                                                         training=True, seed=(11, 3)))
            grads = f([Tensor(a, B) for a in (q, k, v)], Tensor(dy, B))
            budget = list(calls)
            y = ops.dot_product_attention(Tensor(q, B), Tensor(k, B), Tensor(v, B), is_causal=True,
                                          dropout_rate=0.25, training=True, seed=(11, 3)).data
            layer = L.MultiHeadAttention(2, 4, dropout=0.5, seed=3)
            x = Tensor(RNG.standard_normal((2, 5, 8)).astype(F32), B)
            calls.clear()
            y1, y2 = (layer(x, x, training=True).data for _ in range(2))
            layer_calls = [c for c in calls if c.startswith(("dg_attn", "dg_dropout"))]
    finally:
        K._emulator = None
    assert budget == ["dg_attn_fwd", "dg_attn_bwd_dq", "dg_attn_bwd_dkv"], budget
    assert layer_calls == ["dg_attn_fwd", "dg_attn_fwd"], calls
    assert not np.allclose(y1, y2), "two training calls drew the same dropout mask"
    f64 = (lambda a: a.reshape(b * h, -1, d).astype(np.float64))
    out, lse = cpu.attention(f64(q), f64(k), f64(v), None, h, 0.5, True, 0.25, 11, 3)
    check(y.reshape(b * h, t, d), out, "op output")
    ref = cpu.attention_grad(f64(dy), f64(q), f64(k), f64(v), out, lse, None, h, 0.5, True, 0.25, 11, 3)
    for name, g, want in zip(("dq", "dk", "dv"), grads, ref):
        check(g.data.reshape(want.shape), want, f"op {name}")


def test_captured_attention_dropout_keys_on_the_replay_count(_emulator):
    """Inside a capture the kernels read the device replay count, as the generic path's random_keyed
    does through _keyed_key, so a recorded step draws a new mask each replay."""
    from deepgpu.backends.base import Backend

    q, k, v, _ = _slabs(1, 2, 8, 9, 4, 4)
    K._emulator = _emulator
    try:
        with current_custom(np) as B:
            B.capturing, B._replay_count = True, np.array([4], np.uint64)
            try:
                got = B.attention(q, k, v, None, 2, 0.5, False, 0.4, 21, 2)[0]
                want = Backend.attention(B, q, k, v, None, 2, 0.5, False, 0.4, 21, 2)[0]
                uses = B._graph_uses_dropout
                B._replay_count[0] = 5
                later = B.attention(q, k, v, None, 2, 0.5, False, 0.4, 21, 2)[0]
            finally:
                B.capturing = False
    finally:
        K._emulator = None
    assert uses
    check(got, want, "captured output")
    assert not np.allclose(got, later), "the replay count did not change the mask"
