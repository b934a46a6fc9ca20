"""kernels/layernorm.cu against the NumPy backend (float64), under the CPU emulation of our kernels
(and on a GPU where one is usable), and the launch count of the layer_norm op on the custom path."""
from __future__ import annotations

import numpy as np
import pytest

from deepgpu import backends, kernels as K
from deepgpu.testing import assert_scaled_close as check
from deepgpu.testing.emulation import current_custom, custom_backend

RNG = np.random.default_rng(20261202)
F32 = np.float32


def rnd(*shape, lo=-1.0, hi=1.0):
    return RNG.uniform(lo, hi, size=shape).astype(F32)


def _nan_outputs(xp, monkeypatch):
    real = xp.empty

    def empty(shape, dtype=F32, *a, **k):
        out = real(shape, dtype, *a, **k)
        out.fill(np.nan)
        return out

    monkeypatch.setattr(xp, "empty", empty)


# rows x D: D below, at and above one block's threads, not a multiple of anything; rows past a wave.
SHAPES = [(1, 1), (3, 5), (7, 33), (4, 128), (5, 300), (70, 17), (2, 1030)]


@pytest.mark.parametrize("rms", [False, True])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("rows,d", SHAPES)
def test_layer_norm(xp, monkeypatch, rows, d, affine, rms):
    cpu = backends.get("cpu")
    x = rnd(rows, d, lo=-2.0, hi=4.0)  # a mean away from 0
    g, b = (rnd(d, lo=0.5, hi=1.5), rnd(d)) if affine else (None, None)
    dy = rnd(rows, d)
    f64 = (lambda a: None if a is None else a.astype(np.float64))
    ref = cpu.layer_norm(f64(x), f64(g), f64(b), 1e-3, rms)
    dev = (lambda a: None if a is None else xp.asarray(a))
    _nan_outputs(xp, monkeypatch)
    got = K.layer_norm(dev(x), dev(g), dev(b), 1e-3, rms)
    for name, a, want in zip(("y", "mean", "inv_std"), got, ref):
        check(a, want, f"layer_norm {name} {rows}x{d} rms={rms}")
    gref = cpu.layer_norm_grad(f64(dy), f64(x), ref[1], ref[2], f64(g), rms)
    grads = K.layer_norm_grad(dev(dy), dev(x), got[1], got[2], dev(g), rms)
    for name, a, want in zip(("dx", "dgamma", "dbeta"), grads, gref):
        check(a, want, f"layer_norm_grad {name} {rows}x{d} rms={rms}")
    none, dg, db = K.layer_norm_grad(dev(dy), dev(x), got[1], got[2], dev(g), rms, need_input=False)
    assert none is None
    check(dg, gref[1], "dgamma without dx")
    check(db, gref[2], "dbeta without dx")


def test_layer_norm_launcher_errors():
    x = rnd(4, 6)
    with pytest.raises(ValueError, match=r"gamma: expected shape \(6,\), got \(5,\)"):
        K.layer_norm(x, rnd(5))
    with pytest.raises(ValueError, match=r"non-empty \[rows, D\]"):
        K.layer_norm(np.zeros((0, 4), F32))
    with pytest.raises(TypeError, match="float32"):
        K.layer_norm_grad(x.astype(np.float64), x, rnd(4), rnd(4))


def test_backend_custom_path_and_fallback(xp):
    """The CuPy backend's layer_norm / _grad take the kernels for float32 [rows, D] (1 + 2 launches) and
    the generic version for float64."""
    B = custom_backend(xp)
    cpu = backends.get("cpu")
    x, g, b, dy = rnd(6, 10), rnd(10), rnd(10), rnd(6, 10)
    launches = []
    real, prev = K._emulator, B.kernels

    def count(name, grid, block, args):
        launches.append(name)
        if real is not None:
            real(name, grid, block, args)
        else:
            K.function(name)(grid, block, tuple(K._NULL if a is None else a for a in args))

    K._emulator, B.kernels = count, "custom"
    try:
        y, mean, inv = B.layer_norm(xp.asarray(x), xp.asarray(g), xp.asarray(b), 1e-3)
        dx, dgamma, dbeta = B.layer_norm_grad(xp.asarray(dy), xp.asarray(x), mean, inv, xp.asarray(g))
    finally:
        K._emulator, B.kernels = real, prev
    assert launches == ["dg_ln_fwd", "dg_ln_grad_input", "dg_ln_grad_params"], launches
    ref = cpu.layer_norm(x.astype(np.float64), g.astype(np.float64), b.astype(np.float64), 1e-3)
    check(y, ref[0], "backend layer_norm")
    y64 = B.layer_norm(xp.asarray(x.astype(np.float64)), None, None, 1e-3)[0]
    assert y64.dtype == np.float64


def test_layer_norm_op_launch_budget(_emulator):
    """ops.layer_norm and its gradient on the custom path: one of our launches forward, two backward
    (the generic version is about ten CuPy routines each way); a Transformer block has two of them."""
    from deepgpu import autograd, ops
    from deepgpu.tensor import Tensor

    calls = []
    K._emulator = lambda name, grid, block, args: (calls.append(name), _emulator(name, grid, block, args))
    try:
        with current_custom(np) as B:
            x = Tensor(rnd(4, 7, 16), B)
            g, b = Tensor(rnd(16, lo=0.5, hi=1.5), B), Tensor(rnd(16), B)
            dy = Tensor(rnd(4, 7, 16), B)
            f = autograd.grads(lambda x, g, b: ops.layer_norm(x, g, b))
            gx, gg, gb = f([x, g, b], dy)
    finally:
        K._emulator = None
    assert calls == ["dg_ln_fwd", "dg_ln_grad_input", "dg_ln_grad_params"], calls
    cpu = backends.get("cpu")
    x64 = x.data.astype(np.float64).reshape(28, 16)
    _, mean, inv = cpu.layer_norm(x64, g.data.astype(np.float64), None, 1e-3)
    ref = cpu.layer_norm_grad(dy.data.astype(np.float64).reshape(28, 16), x64, mean, inv, g.data.astype(np.float64))
    check(gx.data.reshape(28, 16), ref[0], "the op's input gradient")
    check(gg.data, ref[1], "the op's gamma gradient")
