"""The CPU backend's own overrides against the generic primitives of ``Backend``, and its allocator setting.

test_backend_parity.py checks every primitive against a NumPy reference on
small arrays; here the overrides run on shapes large enough to take their
fast paths (several work-buffer chunks, threaded copies) and must give what
the generic version in backends/base.py gives.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from deepgpu.backends import numpy_backend
from deepgpu.backends.base import Backend
from deepgpu.backends.numpy_backend import NumpyBackend
from deepgpu.kernels.cpu import SOURCES

RNG = np.random.default_rng(11)


def r(*shape):
    return RNG.uniform(-1, 1, size=shape).astype(np.float32)


@pytest.fixture(params=["numpy", "c"])
def cpu(request, monkeypatch):
    """The CPU backend on NumPy + BLAS only, or with its C convolution kernels."""
    # A small work buffer so that even test-sized batches are split into several chunks.
    monkeypatch.setattr(numpy_backend, "WORKSPACE_BYTES", 64 << 10)
    monkeypatch.setattr(numpy_backend, "_PARALLEL_MIN_BYTES", 1 << 10)
    b = NumpyBackend()
    b.threads = 2
    if request.param == "numpy":
        b._ck = False
    else:
        from deepgpu.kernels import cpu as ck
        if ck.library() is None:
            pytest.skip(f"CPU kernels: {ck.status()}")
    return b


def close(a, b, rtol=1e-5):
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, a.dtype, b.shape, b.dtype)
    scale = max(float(np.abs(b).max()), 1e-6)
    err = float(np.abs(a.astype(np.float64) - b).max())
    assert err <= rtol * scale, f"max error {err:.3g} over {rtol} * {scale:.3g}"


def run_python(code, **env):
    """stdout of ``code`` in a fresh interpreter, in an empty folder (where no checkout named
    ``deepgpu`` can shadow the installed package)."""
    e = dict(os.environ)
    e.update(env)
    with tempfile.TemporaryDirectory() as empty:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, cwd=empty,
                           timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_allocator_keeps_freed_memory_unless_told_not_to():
    code = ("from deepgpu.backends import get; import platform\n"
            "print(get('cpu').memory_info()['malloc_keeps_freed'], platform.libc_ver()[0])")
    kept, libc = run_python(code, DEEPGPU_MALLOC="").split()
    assert kept == ("True" if libc == "glibc" else "False")
    assert run_python(code, DEEPGPU_MALLOC="system").split()[0] == "False"


CONVS = [  # x shape, kernel shape, strides, padding: the seed convnet's layers, and odd ones
    ((9, 12, 12, 8), (3, 3, 8, 16), (1, 1), "valid"),
    ((5, 11, 10, 3), (3, 3, 3, 5), (1, 1), "same"),
    ((6, 13, 11, 4), (3, 2, 4, 6), (2, 2), "same"),
    ((7, 6, 6, 5), (1, 1, 5, 7), (1, 1), "valid"),
    ((9, 14, 14, 1), (3, 3, 1, 8), (1, 1), "valid"),  # few channels: columns built transposed
    ((6, 9, 10, 2), (3, 3, 2, 4), (2, 1), "same"),
    # Multiples of 16 output channels take the C kernels (when built): every register
    # block (V = 4, 2, 1 vectors; full rows, short tails, single pixels), strides, padding.
    ((3, 30, 31, 32), (3, 3, 32, 32), (1, 1), "valid"),
    ((2, 12, 19, 5), (3, 3, 5, 64), (1, 1), "same"),
    ((2, 13, 17, 3), (5, 5, 3, 112), (2, 2), "same"),
    ((4, 9, 23, 1), (3, 3, 1, 16), (1, 2), "valid"),
    ((2, 7, 9, 7), (2, 3, 7, 48), (1, 1), "valid"),
    ((1, 5, 5, 16), (5, 5, 16, 16), (1, 1), "valid"),
    ((2, 8, 9, 16), (2, 2, 16, 16), (1, 1), "same"),  # even kernel: one more pad row below than above
    ((2, 10, 7, 4), (4, 4, 4, 32), (1, 1), "same"),
    ((2, 3, 4, 16), (5, 5, 16, 32), (1, 1), "same"),  # every pixel at an edge, no interior block
]


@pytest.mark.parametrize("xs,ks,s,p", CONVS)
@pytest.mark.parametrize("activation", [None, "relu", "relu6", "sigmoid"])
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_bias_act_matches_the_generic_version(cpu, xs, ks, s, p, activation, bias):
    x, k, b = r(*xs), r(*ks) * 2, (r(ks[3]) if bias else None)  # k 2x: relu6's cap is reached
    out = cpu.conv2d_bias_act(x, k, b, activation, s, p, (1, 1))
    ref = Backend.conv2d_bias_act(cpu, x, k, b, activation, s, p, (1, 1))
    # Rounding scales with the sums before the activation, not with what relu6 leaves of them.
    pre = np.abs(Backend.conv2d_bias_act(cpu, x, k, b, None, s, p, (1, 1))).max()
    close(out, ref, rtol=1e-5 * max(1.0, pre / max(np.abs(ref).max(), 1e-6)))
    if activation == "relu6" and xs[3] * ks[0] * ks[1] >= 16:  # enough terms to pass 6
        assert out.max() == 6 and out.min() == 0, "the cap and the floor are reached"
    if bias and activation is None:  # and it is the generic composition, step by step
        close(out, Backend.apply_activation(cpu, Backend.conv2d(cpu, x, k, s, p, (1, 1)) + b, None))


@pytest.mark.parametrize("xs,ks,s,p", CONVS)
def test_conv2d_and_its_gradients_match_the_generic_versions(cpu, xs, ks, s, p):
    x, k = r(*xs), r(*ks)
    y = cpu.conv2d(x, k, s, p, (1, 1))
    close(y, Backend.conv2d(cpu, x, k, s, p, (1, 1)))
    dy = r(*y.shape)
    close(cpu.conv2d_grad_filter(x, dy, k.shape, s, p, (1, 1)),
          Backend.conv2d_grad_filter(cpu, x, dy, k.shape, s, p, (1, 1)), rtol=1e-4)
    close(cpu.conv2d_grad_input(dy, k, x.shape, s, p, (1, 1)),
          np.ascontiguousarray(Backend.conv2d_grad_input(cpu, dy, k, x.shape, s, p, (1, 1))), rtol=1e-4)


@pytest.mark.parametrize("xs,ks,s,p", CONVS)
@pytest.mark.parametrize("activation", [None, "relu", "tanh"])
def test_fused_conv_backward_matches_the_generic_version(cpu, xs, ks, s, p, activation):
    x, k, b = r(*xs), r(*ks), r(ks[3])
    y = cpu.conv2d_bias_act(x, k, b, activation, s, p, (1, 1))
    dy = r(*y.shape)
    got = cpu.conv2d_bias_act_grad(dy, x, y, k, activation, True, True, True, s, p, (1, 1))
    want = Backend.conv2d_bias_act_grad(cpu, dy, x, y, k, activation, True, True, True, s, p, (1, 1))
    for a, e in zip(got, want):
        close(a, np.ascontiguousarray(e), rtol=1e-4)


@pytest.mark.parametrize("tile", [2, 4, None])
@pytest.mark.parametrize("xs,p", [((3, 11, 13, 16), "valid"), ((2, 9, 7, 32), "same"), ((2, 5, 6, 16), "same")])
def test_3x3_convolutions_on_each_winograd_tile_match_the_generic_version(cpu, monkeypatch, tile, xs, p):
    """F(2x2, 3x3), F(4x4, 3x3) and the direct kernel (None) on sizes that leave partial tiles."""
    monkeypatch.setattr(numpy_backend, "WINOGRAD", tile is not None)
    monkeypatch.setattr(numpy_backend, "WINOGRAD_TILE", tile or "auto")
    x, k, b = r(*xs), r(3, 3, xs[3], 48), r(48)
    y = cpu.conv2d_bias_act(x, k, b, "relu", (1, 1), p, (1, 1))
    close(y, Backend.conv2d_bias_act(cpu, x, k, b, "relu", (1, 1), p, (1, 1)), rtol=2e-5)
    dy = r(*y.shape)
    close(cpu.conv2d_bias_act_grad(dy, x, y, k, "relu", True, True, True, (1, 1), p, (1, 1))[0],
          np.ascontiguousarray(Backend.conv2d_grad_input(cpu, dy * (y > 0), k, x.shape, (1, 1), p, (1, 1))), rtol=2e-5)


@pytest.mark.parametrize("d", [(2, 1), (1, 3)])
@pytest.mark.parametrize("p", ["valid", "same"])
def test_dilated_convolution_matches_the_generic_version(cpu, d, p):
    x, k, b = r(3, 14, 15, 6), r(3, 3, 6, 32), r(32)
    y = cpu.conv2d_bias_act(x, k, b, "relu", (1, 1), p, d)
    close(y, Backend.conv2d_bias_act(cpu, x, k, b, "relu", (1, 1), p, d))
    dy = r(*y.shape)
    close(cpu.conv2d_grad_input(dy, k, x.shape, (1, 1), p, d),
          np.ascontiguousarray(Backend.conv2d_grad_input(cpu, dy, k, x.shape, (1, 1), p, d)), rtol=1e-4)


def test_cpu_kernels_fall_back_or_fail_clearly_without_a_working_compiler(tmp_path):
    code = "from deepgpu.kernels import cpu\nprint(cpu.status())"
    env = {"DEEPGPU_KERNEL_CACHE": str(tmp_path), "CC": "false", "PATH": "/nonexistent"}
    assert run_python(code, **env).startswith("not used: no C compiler found")
    failing = tmp_path / "bin"
    failing.mkdir()
    cc = failing / "cc"
    cc.write_text("#!/bin/sh\necho 'cpu_conv.c:1: error: this compiler refuses' >&2\nexit 1\n")
    cc.chmod(0o755)
    env = {"DEEPGPU_KERNEL_CACHE": str(tmp_path / "cache"), "CC": str(cc)}
    out = run_python(code, **env)
    assert out.startswith(f"not used: the C kernels ({', '.join(SOURCES)}) did not build"), out
    # The backend then runs its convolutions on NumPy + BLAS.
    conv = ("import numpy as np, deepgpu.backends as b\nB = b.get('cpu')\n"
            "y = B.conv2d(np.ones((1, 5, 5, 2), np.float32), np.ones((3, 3, 2, 16), np.float32))\n"
            "print(float(y.sum()), B._ck)")
    assert run_python(conv, **env) == "2592.0 False"
    forced = ("from deepgpu.kernels import cpu\ntry:\n    cpu.library()\nexcept cpu.KernelCompileError as e:\n"
              "    print('refused:', e)")
    out = run_python(forced, DEEPGPU_CPU_KERNELS="c", **env)
    assert out.startswith("refused:") and "this compiler refuses" in out
    assert not list((tmp_path / "cache" / "cpu").glob("*.so"))  # nothing half-written left behind


def test_cpu_kernels_fall_back_when_the_cache_cannot_be_written(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    out = run_python("from deepgpu.kernels import cpu\nprint(cpu.status())", DEEPGPU_KERNEL_CACHE=str(blocker))
    assert out.startswith(f"not used: the C kernels ({', '.join(SOURCES)}) did not build") and "kernel cache" in out, out


def test_cpu_kernels_can_be_turned_off():
    code = ("from deepgpu.kernels import cpu; import deepgpu.backends as b\n"
            "print(cpu.status().split()[0], b.get('cpu')._direct_kernels is not None)")
    assert run_python(code, DEEPGPU_CPU_KERNELS="numpy").startswith("not")
    out = run_python("from deepgpu.kernels import cpu\ntry:\n    cpu.mode()\nexcept ValueError as e:\n    print(e)",
                     DEEPGPU_CPU_KERNELS="fortran")
    assert "DEEPGPU_CPU_KERNELS='fortran'" in out


@pytest.mark.parametrize("xs,ps,st,p", [
    ((5, 24, 24, 8), (2, 2), None, "valid"),
    ((3, 9, 6, 4), (3, 2), None, "same"),
    ((2, 8, 8, 3), (1, 2), (1, 2), "valid"),
    ((2, 7, 7, 3), (2, 2), None, "valid"),  # does not tile: the generic path
    ((2, 8, 8, 3), (3, 3), (2, 2), "same"),
])
def test_max_pool2d_and_its_gradient_match_the_generic_versions(cpu, xs, ps, st, p):
    x = r(*xs)
    x[0, 0, 0, 0] = np.nan  # NaN wins its window, as in NumPy's max, first in the window or not
    x[-1, 1, 1, -1] = np.nan
    y = cpu.max_pool2d(x, ps, st, p)
    ref = Backend.max_pool2d(cpu, x, ps, st, p)
    np.testing.assert_array_equal(y, ref)
    x = np.nan_to_num(x)
    x[:, 1::2] = x[:, ::2][:, :x[:, 1::2].shape[1]]  # ties: the first maximum takes the gradient
    y = cpu.max_pool2d(x, ps, st, p)
    dy = r(*y.shape)
    np.testing.assert_array_equal(cpu.max_pool2d_grad(dy, x, y, ps, st, p),
                                  np.ascontiguousarray(Backend.max_pool2d_grad(cpu, dy, x, y, ps, st, p)))


@pytest.mark.parametrize("xs,ks,s,p", CONVS)
def test_filter_gradient_from_kept_columns_matches_the_generic_version(cpu, xs, ks, s, p):
    x, k, b = r(*xs), r(*ks), r(ks[3])
    keep = {}
    y = cpu.conv2d_bias_act(x, k, b, "relu", s, p, (1, 1), keep)
    close(y, Backend.conv2d_bias_act(cpu, x, k, b, "relu", s, p, (1, 1)))
    if cpu._ck is False:  # the C kernels build no columns; NumPy + BLAS keeps them
        assert ks[:2] == (1, 1) or keep["cols"].shape == (y.size // ks[3], ks[0] * ks[1] * ks[2])
    dy = r(*y.shape)
    ref = Backend.conv2d_grad_filter(cpu, x, dy, k.shape, s, p, (1, 1))
    close(cpu.conv2d_grad_filter_kept(keep, x, dy, k.shape, s, p, (1, 1)), ref, rtol=1e-4)
    # Nothing kept, or columns kept for another geometry: rebuilt from x.
    close(cpu.conv2d_grad_filter_kept({}, x, dy, k.shape, s, p, (1, 1)), ref, rtol=1e-4)
    stale = {"cols": np.zeros((1, 1), np.float32), "key": ("another", "geometry")}
    close(cpu.conv2d_grad_filter_kept(stale, x, dy, k.shape, s, p, (1, 1)), ref, rtol=1e-4)


@pytest.mark.parametrize("shape", [(300, 700), (3, 3, 32, 64), (5,)])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_update_matches_the_generic_version(cpu, shape, weight_decay):
    p, g, m, v = r(*shape), r(*shape), r(*shape) * 0.1, np.abs(r(*shape)) * 0.1
    want = [a.copy() for a in (p, m, v)]
    for step in (1, 7):
        cpu.adam_update(p, g, m, v, 1e-3, 0.9, 0.999, 1e-7, step, weight_decay)
        Backend.adam_update(cpu, *want[:1], g, *want[1:], 1e-3, 0.9, 0.999, 1e-7, step, weight_decay)
        for got, ref in zip((p, m, v), want):
            np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)


def test_adam_update_many_matches_one_call_per_variable(cpu):
    """One call for many variables, split over the threads across variable boundaries; a plan
    for one set of arrays is not reused for new arrays, even when those get the freed ids."""
    rng = np.random.default_rng(4)
    shapes = [(300,), (1,), (0,), (17, 9), (2048,), (5,)]
    decays = [True, False, True, True, False, True]

    def arrays():
        return [[rng.uniform(-1, 1, s).astype(np.float32) for s in shapes] for _ in range(4)]

    def one_round():
        ps, gs, ms, vs = arrays()
        vs = [np.abs(v) for v in vs]
        ref = [[a.copy() for a in group] for group in (ps, ms, vs)]
        for i in range(len(shapes)):
            cpu.adam_update(ref[0][i], gs[i], ref[1][i], ref[2][i], 0.01, 0.9, 0.999, 1e-7, 2,
                            0.004 if decays[i] else 0.0)
        cpu.adam_update_many(ps, gs, ms, vs, 0.01, 0.9, 0.999, 1e-7, 2, 0.004, decays)
        for got, want in zip(ps + ms + vs, ref[0] + ref[1] + ref[2]):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)

    for _ in range(3):  # fresh arrays each round (CPython often hands the old ids out again)
        one_round()
    assert not any(r() is not None for plan in cpu._adam_plans.values() for r in plan[0])  # nothing kept alive


def test_adam_update_many_ignores_a_plan_of_dead_arrays(cpu):
    """A plan found under the new arrays' ids but made for arrays since freed is rebuilt."""
    if cpu._c_kernels(np.zeros(1, np.float32)) is None:
        pytest.skip("the C kernels are off on this path")
    ps, gs, ms, vs = ([np.full(7, v, np.float32)] for v in (1.0, 0.5, 0.0, 0.0))
    stale = [np.zeros(7, np.float32)]
    cpu.adam_update_many(stale, gs, [np.zeros(7, np.float32)], [np.zeros(7, np.float32)], 0.1, 0.9, 0.999,
                         1e-7, 1)
    (plan,) = cpu._adam_plans.values()
    cpu._adam_plans.clear()
    cpu._adam_plans[tuple(map(id, (*ps, *ms, *vs)))] = plan  # as if the freed ids had come back
    del stale
    cpu.adam_update_many(ps, gs, ms, vs, 0.1, 0.9, 0.999, 1e-7, 1)
    np.testing.assert_allclose(ps[0], 1.0 - 0.1, rtol=1e-5)  # step size lr on step 1, m / sqrt(v) = 1


@pytest.mark.parametrize("shape", [(64, 8, 8, 16), (1000, 3), (513, 37), (20001, 1), (3, 70), (2, 5, 24)])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_matches_the_generic_version(cpu, shape, affine):
    """Rows split over two threads (any count, not a multiple of the C kernels' row groups), any
    channel count; against the generic version on the same values in float64."""
    c = shape[-1]
    x = r(*shape) * 3 + 2
    g, b = (r(c) + 1.5, r(c)) if affine else (None, None)
    dy = r(*shape)
    f64 = (lambda a: None if a is None else a.astype(np.float64))
    got = cpu.batch_norm_train(x, g, b, 1e-3)
    want = Backend.batch_norm_train(cpu, f64(x), f64(g), f64(b), 1e-3)
    # NumPy's float32 mean over leading axes adds row after row (no pairwise sum), so its error
    # grows with the row count (6.9e-6 of 3.06 seen at 4,096 rows); the C kernel's blocks do not.
    rtol = 2e-6 if cpu._ck else 1e-5
    for a, w in zip(got, want):
        close(a, w.astype(np.float32), rtol=rtol)
    grads = cpu.batch_norm_grad(dy, x, got[1], got[3], g)
    want = Backend.batch_norm_grad(cpu, f64(dy), f64(x), f64(got[1]), f64(got[3]), f64(g))
    for a, w in zip(grads, want):
        close(a, w.astype(np.float32), rtol=2e-5)
    dx, dgamma, dbeta = cpu.batch_norm_grad(dy, x, got[1], got[3], g, need_input=False)
    assert dx is None
    close(dgamma, grads[1], rtol=1e-6)
    close(dbeta, grads[2], rtol=1e-6)


def test_batch_norm_statistics_are_stable_far_from_zero(cpu):
    """The C kernels, a mean 1000 standard deviations away: mean and variance right to float32
    rounding (no sum of squares; sums of x - a shift). The generic version's float32 mean (NumPy
    adds the rows one by one along axis 0) is off by about 3e-5 of the variance here."""
    if cpu._c_kernels(np.zeros(1, np.float32)) is None:
        pytest.skip("the C kernels are off on this path")
    x = (r(4096, 16) + 1000.0).astype(np.float32)
    _, mean, var, _ = cpu.batch_norm_train(x, None, None, 1e-3)
    want = x.astype(np.float64).var(0)
    close(var, want.astype(np.float32), rtol=1e-6)
    close(mean, x.astype(np.float64).mean(0).astype(np.float32), rtol=1e-7)


def test_batch_norm_takes_strided_input_and_keeps_the_errors(cpu):
    x = r(6, 40, 5).transpose(1, 0, 2)  # not contiguous
    y, mean, var, inv = cpu.batch_norm_train(x, None, None, 1e-3)
    ref = Backend.batch_norm_train(cpu, x.astype(np.float64), None, None, 1e-3)
    close(y, ref[0].astype(np.float32), rtol=2e-6)
    with pytest.raises(ValueError, match=r"gamma has shape \(4,\), expected \(5,\)"):
        cpu.batch_norm_train(x, r(4), None, 1e-3)
    with pytest.raises(ValueError, match=r"inv_std has shape \(3,\)"):
        cpu.batch_norm_grad(x, x, mean, r(3))
