"""kernels/rnn.cu (the fused LSTM / GRU cells) against the NumPy backend in float64, emulated on
the CPU (deepgpu.testing.emulation; see tests/test_kernels_cuda.py) and on a GPU where one is
usable; the CuPy backend's custom path and its launch budget: one launch per cell each way."""
from __future__ import annotations

import numpy as np
import pytest

from deepgpu import backends, kernels as K
from deepgpu.testing import assert_scaled_close as check
from deepgpu.testing.emulation import current_custom, custom_backend

RNG = np.random.default_rng(1616)
F32 = np.float32


def _cpu():
    return backends.get("cpu")


def f64(a):
    return np.asarray(a, np.float64)


@pytest.mark.parametrize("n,u", [(1, 1), (3, 5), (64, 33), (2, 300)])
def test_lstm_kernels(xp, n, u):
    z, c_prev = RNG.normal(0, 2, (n, 4 * u)).astype(F32), RNG.normal(0, 1, (n, u)).astype(F32)
    dh, dc = RNG.normal(0, 1, (n, u)).astype(F32), RNG.normal(0, 1, (n, u)).astype(F32)
    ref = _cpu().lstm_step(f64(z), f64(c_prev))
    got = K.lstm_step(xp.asarray(z), xp.asarray(c_prev))
    for a, want, name in zip(got, ref, ("h", "c", "act")):
        check(a, want, f"lstm_step {name} {n}x{u}")
    for gh, gc in ((dh, dc), (dh, None), (None, dc)):
        want = _cpu().lstm_step_grad(None if gh is None else f64(gh), None if gc is None else f64(gc), ref[2],
                                     f64(c_prev), ref[1])
        dz, dcp = K.lstm_step_grad(None if gh is None else xp.asarray(gh), None if gc is None else xp.asarray(gc),
                                   got[2], xp.asarray(c_prev), got[1])
        check(dz, want[0], f"lstm_step_grad dz {n}x{u} dh={gh is not None} dc={gc is not None}")
        check(dcp, want[1], f"lstm_step_grad dc_prev {n}x{u}")


@pytest.mark.parametrize("n,u", [(1, 1), (3, 5), (64, 33), (2, 300)])
def test_gru_kernels(xp, n, u):
    xz, hz = RNG.normal(0, 2, (n, 3 * u)).astype(F32), RNG.normal(0, 2, (n, 3 * u)).astype(F32)
    h_prev, dh = RNG.normal(0, 1, (n, u)).astype(F32), RNG.normal(0, 1, (n, u)).astype(F32)
    ref = _cpu().gru_step(f64(xz), f64(hz), f64(h_prev))
    h, act = K.gru_step(xp.asarray(xz), xp.asarray(hz), xp.asarray(h_prev))
    check(h, ref[0], f"gru_step h {n}x{u}")
    check(act, ref[1], f"gru_step act {n}x{u}")
    want = _cpu().gru_step_grad(f64(dh), ref[1], f64(hz), f64(h_prev))
    got = K.gru_step_grad(xp.asarray(dh), act, xp.asarray(hz), xp.asarray(h_prev))
    for a, w, name in zip(got, want, ("dxz", "dhz", "dh_prev")):
        check(a, w, f"gru_step_grad {name} {n}x{u}")


def test_strided_operands_are_copied(xp):
    """A column slice of a wider projection is not C-contiguous: the launcher copies it."""
    u = 4
    big = RNG.normal(0, 1, (3, 8 * u)).astype(F32)
    c_prev = RNG.normal(0, 1, (3, u)).astype(F32)
    ref = _cpu().lstm_step(f64(big[:, 4 * u:]), f64(c_prev))
    h, c, _ = K.lstm_step(xp.asarray(big)[:, 4 * u:], xp.asarray(c_prev))
    check(h, ref[0], "lstm_step h from a slice")


def test_launcher_errors():
    with pytest.raises(ValueError, match=r"lstm_step z: expected shape \(2, 12\), got \(2, 10\)"):
        K.lstm_step(np.zeros((2, 10), F32), np.zeros((2, 3), F32))
    with pytest.raises(TypeError, match="float32"):
        K.gru_step(np.zeros((2, 9)), np.zeros((2, 9)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"non-empty \[N, units\]"):
        K.gru_step(np.zeros((0, 9), F32), np.zeros((0, 9), F32), np.zeros((0, 3), F32))


def _counting(B):
    launches, real = [], K._emulator

    def count(name, grid, block, args):
        launches.append(name)
        if real is not None:
            real(name, grid, block, args)
        else:
            K.function(name)(grid, block, tuple(K._NULL if a is None else a for a in args))
    return launches, count


def test_backend_custom_path_and_fallbacks(xp):
    """The CuPy backend's primitives: float32 through rnn.cu (one launch each), float64 through the
    generic version."""
    B = custom_backend(xp)
    n, u = 4, 6
    z, c_prev = RNG.normal(0, 2, (n, 4 * u)).astype(F32), RNG.normal(0, 1, (n, u)).astype(F32)
    xz, hz = RNG.normal(0, 2, (n, 3 * u)).astype(F32), RNG.normal(0, 2, (n, 3 * u)).astype(F32)
    dh = RNG.normal(0, 1, (n, u)).astype(F32)
    launches, count = _counting(B)
    prev_emu, prev_mode = K._emulator, B.kernels
    K._emulator, B.kernels = count, "custom"
    try:
        h, c, act = B.lstm_step(xp.asarray(z), xp.asarray(c_prev))
        dz, dcp = B.lstm_step_grad(xp.asarray(dh), None, act, xp.asarray(c_prev), c)
        hg, actg = B.gru_step(xp.asarray(xz), xp.asarray(hz), xp.asarray(c_prev))
        grads = B.gru_step_grad(xp.asarray(dh), actg, xp.asarray(hz), xp.asarray(c_prev))
        h64 = B.lstm_step(xp.asarray(f64(z)), xp.asarray(f64(c_prev)))[0]
    finally:
        K._emulator, B.kernels = prev_emu, prev_mode
    assert launches == ["dg_lstm_fwd", "dg_lstm_bwd", "dg_gru_fwd", "dg_gru_bwd"], launches
    C = _cpu()
    ref = C.lstm_step(f64(z), f64(c_prev))
    check(h, ref[0], "backend lstm h")
    check(dz, C.lstm_step_grad(f64(dh), None, ref[2], f64(c_prev), ref[1])[0], "backend lstm dz")
    gref = C.gru_step(f64(xz), f64(hz), f64(c_prev))
    check(hg, gref[0], "backend gru h")
    for a, w in zip(grads, C.gru_step_grad(f64(dh), gref[1], f64(hz), f64(c_prev))):
        check(a, w, "backend gru grads")
    assert h64.dtype == np.float64
    check(h64, ref[0], "backend float64 fallback")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cell_op_launch_budget(_emulator, cell):
    """ops.lstm_cell / gru_cell and their gradients on the custom path: exactly one of our launches
    each way (the composite gate math it replaces ran about 20 CuPy kernels each way per step)."""
    from deepgpu import autograd, ops
    from deepgpu.tensor import Tensor

    n, u = 3, 5
    K._emulator = _emulator
    try:
        with current_custom(np) as B:
            launches, count = _counting(B)
            K._emulator = count
            if cell == "lstm":
                z = Tensor(RNG.normal(0, 1, (n, 4 * u)).astype(F32), B)
                c0 = Tensor(RNG.normal(0, 1, (n, u)).astype(F32), B)
                f = autograd.grads(lambda z, c0: ops.lstm_cell(z, c0)[0])
                f([z, c0], Tensor(np.ones((n, u), F32), B))
            else:
                xz, hz = (Tensor(RNG.normal(0, 1, (n, 3 * u)).astype(F32), B) for _ in range(2))
                h0 = Tensor(RNG.normal(0, 1, (n, u)).astype(F32), B)
                f = autograd.grads(lambda xz, hz, h0: ops.gru_cell(xz, hz, h0))
                f([xz, hz, h0], Tensor(np.ones((n, u), F32), B))
    finally:
        K._emulator = None
    assert launches == [f"dg_{cell}_fwd", f"dg_{cell}_bwd"], launches
