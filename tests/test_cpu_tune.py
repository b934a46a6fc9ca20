"""The CPU backend's measured choice among its ways to compute an op (kernels/cpu_tune.py).

Every candidate of every decision must give the same answer (they are chosen by
speed alone), decisions are kept on disk and reused, ``DEEPGPU_CPU_TUNE=off``
follows the fixed rules, and a damaged cache file costs only a new measurement.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from deepgpu import backends
from deepgpu.kernels import cpu, cpu_tune

pytestmark = pytest.mark.skipif(cpu.library() is None, reason="the CPU C kernels are not built here")


@pytest.fixture
def B():
    return backends.get("cpu")


@pytest.fixture
def all_ways(monkeypatch):
    """Make ``choose`` run every candidate and record (op, name, result)."""
    seen = []

    def choose(op, key, candidates):
        out = None
        for name, fn in candidates.items():
            r = fn()
            seen.append((op, name, r))
            out = r if out is None else out
        return out

    monkeypatch.setattr(cpu_tune, "choose", choose)
    return seen


def _agree(seen, op, rtol=2e-4):
    runs = [(name, r) for o, name, r in seen if o == op]
    assert len(runs) >= 2, f"{op}: only {[n for n, _ in runs]} ran"
    ref_name, ref = runs[0]
    for name, r in runs[1:]:
        ref_t = ref if isinstance(ref, tuple) else (ref,)
        r_t = r if isinstance(r, tuple) else (r,)
        for a, b in zip(ref_t, r_t):
            if a is None or b is None:
                assert a is None and b is None, f"{op}: {ref_name} vs {name}"
                continue
            assert a.shape == b.shape and a.dtype == b.dtype, f"{op}: {ref_name} {a.shape} vs {name} {b.shape}"
            scale = max(float(np.abs(a).max()), 1e-6)
            err = float(np.abs(a - b).max()) / scale
            assert err < rtol, f"{op}: {name} differs from {ref_name} by {err:.2e} (relative to max)"
    return [n for n, _ in runs]


CONV_CASES = [  # x shape, kernel shape, strides, padding, dilation
    ((3, 12, 12, 16), (3, 3, 16, 32), (1, 1), "same", (1, 1)),   # Winograd 2 and 4, direct, BLAS
    ((2, 11, 9, 32), (3, 3, 32, 16), (1, 1), "valid", (1, 1)),
    ((2, 13, 13, 5), (3, 3, 5, 32), (2, 2), "same", (1, 1)),     # strided
    ((2, 10, 10, 16), (3, 3, 16, 8), (1, 1), "same", (1, 1)),    # 8 output channels: padded C kernel
    ((2, 10, 10, 3), (5, 5, 3, 1), (1, 1), "valid", (1, 1)),     # 1 output channel
    ((2, 12, 12, 16), (3, 3, 16, 16), (1, 1), "same", (2, 2)),   # dilated
]


@pytest.mark.parametrize("xs,ks,s,p,d", CONV_CASES)
@pytest.mark.parametrize("relu", [False, True])
def test_conv_forward_candidates_agree(B, all_ways, xs, ks, s, p, d, relu):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xs).astype(np.float32)
    k = rng.standard_normal(ks).astype(np.float32)
    b = rng.standard_normal(ks[3]).astype(np.float32)
    B.conv2d_bias_act(x, k, b, "relu" if relu else None, s, p, d)
    names = _agree(all_ways, "conv2d")
    assert "blas" in names


@pytest.mark.parametrize("xs,ks,s,p,d", CONV_CASES)
def test_conv_gradient_candidates_agree(B, all_ways, xs, ks, s, p, d):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(xs).astype(np.float32)
    k = rng.standard_normal(ks).astype(np.float32)
    y = B.conv2d_bias_act(x, k, None, "relu", s, p, d)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    all_ways.clear()
    B.conv2d_bias_act_grad(dy, x, y, k, "relu", True, True, True, s, p, d)
    if ks[3] % 16 == 0:
        _agree(all_ways, "conv2d_grad")
    all_ways.clear()
    B.conv2d_grad_input(dy, k, xs, s, p, d)
    _agree(all_ways, "conv2d_grad_input")
    if ks[3] % 16 == 0:
        all_ways.clear()
        B.conv2d_grad_filter(x, dy, ks, s, p, d)
        _agree(all_ways, "conv2d_grad_filter")


@pytest.mark.parametrize("xs,ks,s,p", [((2, 5, 5, 16), (3, 3, 8, 16), (2, 2), "same"),
                                       ((2, 4, 6, 32), (4, 4, 3, 32), (2, 2), "valid"),
                                       ((1, 7, 7, 16), (3, 3, 16, 16), (3, 3), "valid"),
                                       ((2, 5, 6, 16), (5, 4, 5, 16), (2, 3), "same"),
                                       ((1, 3, 3, 16), (1, 1, 16, 16), (2, 2), "valid"),   # 1x1, stride 2
                                       ((1, 3, 4, 16), (2, 2, 16, 16), (3, 3), "valid")])  # kernel < stride
def test_transposed_conv_candidates_agree(B, all_ways, xs, ks, s, p):
    """Conv2DTranspose's forward (the input gradient of a strided convolution), spread on the C kernel too."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal(xs).astype(np.float32)
    k = rng.standard_normal(ks).astype(np.float32)
    hh = (xs[1] - 1) * s[0] + ks[0] if p == "valid" else xs[1] * s[0]
    ww = (xs[2] - 1) * s[1] + ks[1] if p == "valid" else xs[2] * s[1]
    # x plays dy: the output of the strided convolution whose input is [N, hh, ww, ks[2]].
    B.conv2d_grad_input(x, k, (xs[0], hh, ww, ks[2]), s, p)
    names = _agree(all_ways, "conv2d_grad_input")
    assert {"c-spread", "c-phase"} <= set(names) or ks[2] % 16


def test_decisions_are_measured_kept_and_reused(B, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPGPU_CPU_TUNE", "auto")
    monkeypatch.setattr(cpu_tune, "MIN_TIME_S", 0.0)
    path = tmp_path / "t.tune.json"
    monkeypatch.setattr(cpu_tune, "_state", {"path": str(path), "loaded": True, "table": {}, "session": {}})
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 14, 14, 16)).astype(np.float32)
    k = rng.standard_normal((3, 3, 16, 32)).astype(np.float32)
    y1 = B.conv2d_bias_act(x, k, None, "relu", (1, 1), "same")
    data = json.loads(path.read_text())
    (key, rec), = [(kk, v) for kk, v in data.items() if kk.startswith("conv2d ")]
    assert rec["why"] == "measured" and rec["choice"] in rec["ms"]
    assert {"blas", "direct", "winograd2", "winograd4"} <= set(rec["ms"])
    assert any(line.startswith(key) for line in cpu_tune.decisions())
    # A new process reads the file and takes the same way without timing.
    monkeypatch.setattr(cpu_tune, "_state", {"path": str(path), "loaded": False, "table": {}, "session": {}})
    monkeypatch.setattr(cpu_tune, "_path", lambda: str(path))
    ran = []
    real = cpu_tune.choose

    def spy(op, k_, candidates):
        wrapped = {n: (lambda n=n, f=f: (ran.append(n), f())[1]) for n, f in candidates.items()}
        return real(op, k_, wrapped)

    monkeypatch.setattr(cpu_tune, "choose", spy)
    y2 = B.conv2d_bias_act(x, k, None, "relu", (1, 1), "same")
    assert ran == [rec["choice"]]
    np.testing.assert_allclose(y1, y2, rtol=1e-4, atol=1e-4)


def test_damaged_cache_is_measured_again(tmp_path, monkeypatch):
    path = tmp_path / "t.tune.json"
    path.write_text('{"conv2d k": {"choice": 3}, "x": [')  # cut short mid-write by something else
    monkeypatch.setattr(cpu_tune, "_state", {"path": str(path), "loaded": False, "table": {}, "session": {}})
    monkeypatch.setattr(cpu_tune, "_path", lambda: str(path))
    monkeypatch.setattr(cpu_tune, "MIN_TIME_S", 0.0)
    monkeypatch.setenv("DEEPGPU_CPU_TUNE", "auto")
    out = cpu_tune.choose("op", "k", {"a": lambda: 1, "b": lambda: 1})
    assert out == 1 and json.loads(path.read_text())["op k"]["why"] == "measured"


def test_off_follows_the_rule(monkeypatch):
    monkeypatch.setenv("DEEPGPU_CPU_TUNE", "off")
    ran = []
    out = cpu_tune.choose("op", "k2", {"rule": lambda: ran.append("rule") or 1, "other": lambda: ran.append("o")})
    assert out == 1 and ran == ["rule"]


def test_bad_switch_value_is_named(monkeypatch):
    monkeypatch.setenv("DEEPGPU_CPU_TUNE", "fastest")
    with pytest.raises(ValueError, match="DEEPGPU_CPU_TUNE='fastest'"):
        cpu_tune.mode()


NUMPY_WAYS = {"blas", "full", "col2im"}  # the plain NumPy + BLAS path's own ways


@pytest.mark.parametrize("fast", ["numpy", "c"])
def test_the_default_takes_the_numpy_path_wherever_that_measures_faster(B, tmp_path, monkeypatch, fast):
    """The seed convnet's whole training step offers the NumPy path's way at every tuned op and
    follows the clock: so the default can be slower than ``DEEPGPU_CPU_KERNELS=numpy`` only by
    measurement noise. A virtual clock makes one side's ways cost 0.1 s and the other's 1 s."""
    import types

    from deepgpu import zoo

    clock = [0.0]
    monkeypatch.setattr(cpu_tune, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setenv("DEEPGPU_CPU_TUNE", "auto")
    monkeypatch.setattr(cpu_tune, "_state", {"path": str(tmp_path / "t.tune.json"), "loaded": True,
                                             "table": {}, "session": {}})
    real = cpu_tune.choose

    def costed(op, key, candidates):
        def wrap(name, fn):
            def run():
                out = fn()
                clock[0] += 0.1 if (name in NUMPY_WAYS) == (fast == "numpy") else 1.0
                return out
            return run
        return real(op, key, {n: wrap(n, f) for n, f in candidates.items()})

    monkeypatch.setattr(cpu_tune, "choose", costed)
    m = zoo.convnet()
    m.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    m.train_on_batch(rng.random((16, 28, 28, 1), np.float32), rng.integers(0, 10, 16))
    recs = cpu_tune._state["session"]
    ops = {k.split()[0] for k in recs}
    assert {"conv2d", "conv2d_grad", "conv2d_grad_input"} <= ops, ops
    for key, rec in recs.items():
        assert rec["why"] == "measured", (key, rec)
        assert NUMPY_WAYS & set(rec["ms"]), f"{key}: no NumPy-path way among {sorted(rec['ms'])}"
        assert (rec["choice"] in NUMPY_WAYS) == (fast == "numpy"), (key, rec)
