"""The fused recurrent cells (deepgpu.ops.lstm_cell / gru_cell; backends' lstm_step, gru_step and
their _grad): values against the gate formulas written out in NumPy, float64 finite-difference
gradients, the C kernels against the generic NumPy version, bad shapes named."""
import numpy as np
import pytest

import deepgpu as dg
from deepgpu import ops
from deepgpu.backends.base import Backend
from deepgpu.testing import check_gradients

RNG = np.random.default_rng(16)


def sig(x):
    return np.exp(-np.logaddexp(0, -x))  # 1 / (1 + e^-x) without overflow


def lstm_ref(z, c_prev):
    u = c_prev.shape[1]
    i, f, g, o = sig(z[:, :u]), sig(z[:, u:2 * u]), np.tanh(z[:, 2 * u:3 * u]), sig(z[:, 3 * u:])
    c = f * c_prev + i * g
    return o * np.tanh(c), c


def gru_ref(xz, hz, h_prev):
    u = h_prev.shape[1]
    z = sig(xz[:, :u] + hz[:, :u])
    r = sig(xz[:, u:2 * u] + hz[:, u:2 * u])
    hh = np.tanh(xz[:, 2 * u:] + r * hz[:, 2 * u:])
    return z * h_prev + (1 - z) * hh


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n,u", [(3, 5), (1, 1), (7, 16)])
def test_lstm_cell_values(backend, dtype, n, u):
    z, c_prev = RNG.normal(0, 2, (n, 4 * u)), RNG.normal(0, 1, (n, u))
    h, c = ops.lstm_cell(dg.tensor(z, dtype), dg.tensor(c_prev, dtype))
    h_ref, c_ref = lstm_ref(z, c_prev)
    tol = 1e-6 if dtype == "float32" else 1e-12
    assert h.dtype == c.dtype == dtype
    np.testing.assert_allclose(h.data_sync(), h_ref, atol=tol, rtol=tol)
    np.testing.assert_allclose(c.data_sync(), c_ref, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n,u", [(3, 5), (1, 1), (7, 16)])
def test_gru_cell_values(backend, dtype, n, u):
    xz, hz, h_prev = RNG.normal(0, 2, (n, 3 * u)), RNG.normal(0, 2, (n, 3 * u)), RNG.normal(0, 1, (n, u))
    h = ops.gru_cell(dg.tensor(xz, dtype), dg.tensor(hz, dtype), dg.tensor(h_prev, dtype))
    tol = 1e-6 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(h.data_sync(), gru_ref(xz, hz, h_prev), atol=tol, rtol=tol)


def test_large_pre_activations_stay_finite():
    z = np.array([[80.0, -80.0, 90.0, -90.0], [-1e4, 1e4, -1e4, 1e4]], "float32")
    h, c = ops.lstm_cell(dg.tensor(z), dg.tensor(np.ones((2, 1), "float32")))
    h_ref, c_ref = lstm_ref(z.astype(np.float64), np.ones((2, 1)))
    np.testing.assert_allclose(c.data_sync(), c_ref, atol=1e-6)
    np.testing.assert_allclose(h.data_sync(), h_ref, atol=1e-6)


# ------------------------------------------------------ gradients (float64, CPU)
@pytest.mark.parametrize("use", ["both", "h", "c"])
def test_lstm_cell_gradients(use):
    n, u = 3, 4
    z, c_prev = RNG.normal(0, 1.5, (n, 4 * u)), RNG.normal(0, 1, (n, u))

    def f(z, c_prev):
        h, c = ops.lstm_cell(z, c_prev)
        return {"both": h * 1.5 + c * c, "h": h, "c": c}[use]
    check_gradients(f, [z, c_prev])


def test_lstm_cell_gradients_through_two_steps():
    """h and c of one step feed the next (as in a layer's time loop): both paths get their share."""
    n, u = 2, 3
    z1, z2w, c0 = RNG.normal(0, 1, (n, 4 * u)), RNG.normal(0, 0.5, (u, 4 * u)), RNG.normal(0, 1, (n, u))

    def f(z1, w, c0):
        h1, c1 = ops.lstm_cell(z1, c0)
        h2, c2 = ops.lstm_cell(z1 * 0.5 + dg.matmul(h1, w), c1)
        return h2 + c2 * h1
    check_gradients(f, [z1, z2w, c0])


def test_gru_cell_gradients():
    n, u = 3, 4
    xz, hz, h_prev = RNG.normal(0, 1.5, (n, 3 * u)), RNG.normal(0, 1.5, (n, 3 * u)), RNG.normal(0, 1, (n, u))
    check_gradients(ops.gru_cell, [xz, hz, h_prev])


def test_gru_cell_gradients_through_two_steps():
    n, u = 2, 3
    xz, w, h0 = RNG.normal(0, 1, (n, 3 * u)), RNG.normal(0, 0.5, (u, 3 * u)), RNG.normal(0, 1, (n, u))

    def f(xz, w, h0):
        h1 = ops.gru_cell(xz, dg.matmul(h0, w), h0)
        return ops.gru_cell(xz * 0.5, dg.matmul(h1, w), h1) * h1
    check_gradients(f, [xz, w, h0])


# --------------------------------------------- each backend's kernels vs the generic version
def _cpu():
    from deepgpu import backends
    with backends.use_backend("cpu"):
        return backends.current()


@pytest.mark.parametrize("n,u", [(1, 1), (5, 3), (64, 128), (3, 37), (2, 8)])
def test_cpu_kernels_match_the_generic_version(n, u):
    from deepgpu.kernels import cpu

    B = _cpu()
    z = RNG.normal(0, 2, (n, 4 * u)).astype("float32")
    c_prev = RNG.normal(0, 1, (n, u)).astype("float32")
    if cpu.library() is not None:  # else both sides are the generic version, and this checks nothing
        assert B._rnn_lib(z, c_prev) is not None
    h, c, act = B.lstm_step(z, c_prev)
    hg, cg, actg = Backend.lstm_step(B, z, c_prev)
    for a, b in ((h, hg), (c, cg), (act, actg)):
        np.testing.assert_allclose(a, b, atol=2e-6, rtol=1e-5)
    dh, dc = RNG.normal(0, 1, (n, u)).astype("float32"), RNG.normal(0, 1, (n, u)).astype("float32")
    zero = np.broadcast_to(np.float32(0), (n, u))
    for args in ((dh, dc), (dh, None), (None, dc), (dh, zero)):
        got = B.lstm_step_grad(*args, act, c_prev, c)
        want = Backend.lstm_step_grad(B, *args, actg, c_prev, cg)
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, atol=2e-6, rtol=1e-5)
    xz, hz = RNG.normal(0, 2, (n, 3 * u)).astype("float32"), RNG.normal(0, 2, (n, 3 * u)).astype("float32")
    h, act = B.gru_step(xz, hz, c_prev)
    hg, actg = Backend.gru_step(B, xz, hz, c_prev)
    np.testing.assert_allclose(h, hg, atol=2e-6, rtol=1e-5)
    np.testing.assert_allclose(act, actg, atol=2e-6, rtol=1e-5)
    for a, b in zip(B.gru_step_grad(dh, act, hz, c_prev), Backend.gru_step_grad(B, dh, actg, hz, c_prev)):
        np.testing.assert_allclose(a, b, atol=2e-6, rtol=1e-5)


def test_views_and_slices_are_accepted():
    """Column slices (a [N, 8U] projection cut in two) are not contiguous: same values as copies."""
    B = _cpu()
    u = 3
    big = RNG.normal(0, 1, (4, 8 * u)).astype("float32")
    z = big[:, :4 * u]
    c_prev = RNG.normal(0, 1, (4, 2 * u)).astype("float32")[:, u:]
    for a, b in zip(B.lstm_step(z, c_prev), B.lstm_step(z.copy(), c_prev.copy())):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ bad input
def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"lstm_cell: z must have shape \(2, 12\), got \(2, 10\)"):
        ops.lstm_cell(np.zeros((2, 10), "float32"), np.zeros((2, 3), "float32"))
    with pytest.raises(ValueError, match=r"lstm_cell: c_prev must have shape"):
        ops.lstm_cell(np.zeros((2, 12), "float32"), np.zeros((2, 3, 1), "float32"))
    with pytest.raises(ValueError, match=r"gru_cell: hz must have shape \(2, 9\), got \(3, 9\)"):
        ops.gru_cell(np.zeros((2, 9), "float32"), np.zeros((3, 9), "float32"), np.zeros((2, 3), "float32"))
    with pytest.raises(ValueError, match=r"gru_cell: .* must be a float tensor"):
        ops.gru_cell(np.zeros((2, 9), "int32"), np.zeros((2, 9), "int32"), np.zeros((2, 3), "int32"))


# -------------------------------------------------------------- in the layers
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_layers_take_the_fused_cell_and_match_the_composite_gates(monkeypatch, kind):
    """LSTM / GRU with tanh and sigmoid run the fused cell at every step; with the same functions
    given as other callables they take the composite gate math: same outputs and gradients."""
    from deepgpu import activations, autograd, layers as L

    calls = []
    name = "lstm_cell" if kind == "LSTM" else "gru_cell"
    real = getattr(ops, name)
    monkeypatch.setattr(ops, name, lambda *a: calls.append(1) or real(*a))
    x = dg.tensor(RNG.normal(0, 1, (3, 5, 4)).astype("float32"))
    fused = getattr(L, kind)(6, return_sequences=True)
    composite = getattr(L, kind)(6, return_sequences=True, activation=lambda v: activations.tanh(v),
                                 recurrent_activation=lambda v: activations.sigmoid(v))
    fused(x), composite(x)
    composite.set_weights([w + 0.1 * RNG.normal(0, 1, w.shape).astype("float32") for w in fused.get_weights()])
    fused.set_weights(composite.get_weights())
    calls.clear()
    outs = []
    for layer in (fused, composite):
        y, grads = autograd.variable_grads(lambda: ops.sum(layer(x) ** 2), layer.trainable_weights)
        outs.append((y.data_sync(), [grads[w].data_sync() for w in layer.trainable_weights]))
    assert len(calls) == 5  # the fused layer's five steps; none for the composite one
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-5)
    for a, b in zip(outs[0][1], outs[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_small_gemms_run_on_one_blas_thread_and_give_the_same_values():
    """NumpyBackend.matmul limits a small GEMM to one BLAS thread for that call only (a recurrent
    step's; waking the BLAS's sleeping threads costs more than the work): values unchanged."""
    B = _cpu()
    a, b = RNG.normal(0, 1, (64, 128)).astype("float32"), RNG.normal(0, 1, (512, 128)).astype("float32")
    np.testing.assert_allclose(B.matmul(a, b, transpose_b=True), a @ b.T, rtol=1e-5, atol=1e-4)
    one = B._one_blas_thread()
    if one:  # the thread-local setting is restored after the call
        prev = one(3)
        B.matmul(a, b, transpose_b=True)
        assert one(prev) == 3
