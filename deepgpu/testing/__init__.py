"""A small kit for testing code built on deepgpu, on every backend.

* ``backend_params()``: pytest params "cpu" and "cuda" (the latter marked
  ``cuda`` and skipped where no GPU is usable); ``backend`` is a ready
  fixture (``from deepgpu.testing import backend`` in a conftest).
* ``assert_close(actual, expected, rtol=1e-4, atol=1e-5)``: Tensors or arrays.
* ``assert_scaled_close(actual, ref, what, rtol=1e-4)``: a kernel's output
  against a float64 reference, the error scaled by the reference's size.
* ``check_gradients(f, inputs)``: autograd against central finite
  differences in float64 on the CPU backend.
* ``run_layer_test(layer_cls, init_kwargs, input_shape, ...)``: one layer
  class through every path (shapes, config, each file format, gradients,
  training behaviour, frozen weights, the CUDA paths); ``LayerCase`` holds
  its arguments as a layer family's sample case (deepgpu.testing.layer_test).
"""
from __future__ import annotations

import numpy as np

from .. import backends
from ..autograd import grads
from ..tensor import Tensor, tensor


def _host(x):
    if isinstance(x, Tensor):
        return x.data_sync()
    return np.asarray(x)


def assert_close(actual, expected, rtol=1e-4, atol=1e-5, msg=""):
    """Raise AssertionError unless |actual - expected| <= atol + rtol * |expected| everywhere."""
    a, e = _host(actual), _host(expected)
    if a.shape != e.shape:
        raise AssertionError(f"{msg} shapes differ: {a.shape} vs {e.shape}")
    np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=msg)


def assert_scaled_close(actual, ref, what, rtol=1e-4):
    """Raise AssertionError (naming ``what``) unless ``actual`` (NumPy, CuPy or a Tensor) has ``ref``'s
    shape, every element written (finite: the emulation fills outputs with NaN first) and its largest
    error within ``rtol`` times ``ref``'s largest magnitude (at least 1e-6)."""
    a = (actual.get() if hasattr(actual, "get") else _host(actual)).astype(np.float64)
    ref = np.asarray(ref, np.float64)
    if a.shape != ref.shape:
        raise AssertionError(f"{what}: shape {a.shape} != {ref.shape}")
    if not np.isfinite(a).all():
        raise AssertionError(f"{what}: {int((~np.isfinite(a)).sum())} elements not written (NaN left)")
    scale = max(float(np.abs(ref).max(initial=0.0)), 1e-6)
    err = float(np.abs(a - ref).max(initial=0.0))
    if err > rtol * scale:
        raise AssertionError(f"{what}: max error {err:.3g} > {rtol} * {scale:.3g}")


def backend_params():
    """pytest.param entries for every backend; CUDA ones are marked and skip cleanly."""
    import pytest

    ok, why = backends.cuda_status()
    return [
        pytest.param("cpu", id="cpu"),
        pytest.param("cuda", id="cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not ok, reason=why)]),
    ]


def _backend_fixture():
    import pytest

    @pytest.fixture(params=backend_params())
    def backend(request):
        """Runs the test with the given backend active; yields its name."""
        with backends.use_backend(request.param):
            yield request.param
    return backend


try:
    backend = _backend_fixture()
except ImportError:  # pytest is only needed by the test helpers
    backend = None


def numeric_gradients(f, inputs, eps=1e-6, seed=0):
    """Central-difference gradients of ``sum(f(*inputs) * r)`` for a fixed random r.

    inputs: NumPy arrays (converted to float64). Returns (list of arrays, r).
    """
    xs = [np.array(x, dtype=np.float64) for x in inputs]
    with backends.use_backend("cpu"):
        out = _host(f(*[tensor(x, "float64") for x in xs]))
        r = np.random.default_rng(seed).standard_normal(out.shape)
        out_grads = []
        for x in xs:
            g = np.zeros_like(x)
            it = np.nditer(x, flags=["multi_index"])
            for _ in it:
                i = it.multi_index
                old = x[i]
                x[i] = old + eps
                plus = (_host(f(*[tensor(v, "float64") for v in xs])) * r).sum()
                x[i] = old - eps
                minus = (_host(f(*[tensor(v, "float64") for v in xs])) * r).sum()
                x[i] = old
                g[i] = (plus - minus) / (2 * eps)
            out_grads.append(g)
    return out_grads, r


def check_gradients(f, inputs, rtol=1e-5, atol=1e-6, eps=1e-6, seed=0):
    """Assert that deepgpu's gradients of ``f`` match finite differences.

    f: function of Tensors returning a Tensor; inputs: arrays (float64 is
    used). Raises AssertionError naming the input whose gradient differs.
    """
    num, r = numeric_gradients(f, inputs, eps, seed)
    with backends.use_backend("cpu"):
        xs = [tensor(np.asarray(x, dtype=np.float64), "float64") for x in inputs]
        ana = grads(f)(xs, dy=tensor(r, "float64"))
    for k, (a, n) in enumerate(zip(ana, num)):
        assert_close(a, n, rtol=rtol, atol=atol, msg=f"gradient of input {k}")


from .layer_test import (  # noqa: E402,F401
    CHECKS, FORMATS, LayerCase, LayerTestReport, SkipCheck, TfjsNodeBatch, run_layer_test, tfjs_node_status,
)
