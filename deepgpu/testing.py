"""A small kit for testing code built on deepgpu, on every backend.

* ``backend_params()``: pytest params "cpu" and "cuda" (the latter marked
  ``cuda`` and skipped where no GPU is usable); ``backend`` is a ready
  fixture (``from deepgpu.testing import backend`` in a conftest).
* ``assert_close(actual, expected, rtol=1e-4, atol=1e-5)``: Tensors or arrays.
* ``check_gradients(f, inputs)``: autograd against central finite
  differences in float64 on the CPU backend.
"""
from __future__ import annotations

import numpy as np

from . import backends
from .autograd import grads
from .tensor import Tensor, tensor


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


def run_layer_test(layer_cls, kwargs=None, input_shape=None, expected_output_shape=None,
                   input_data=None, expected_output=None, expected_num_weights=None,
                   expected_num_trainable_weights=None, expected_num_params=None, training=False,
                   rtol=1e-4, atol=1e-5, seed=0):
    """Check one layer class end to end; returns the CPU output as a NumPy array.

    ``layer_cls(**kwargs)`` is called on random float32 data of
    ``input_shape`` (batch included; a list of shapes for merge layers) or on
    ``input_data``. Checked: ``compute_output_shape`` (batch None) and a
    symbolic call through ``Input`` agree with the real output's shape (and
    ``expected_output_shape``); the weight / trainable-weight / parameter
    counts; ``get_config`` -> ``from_config`` gives the same config, and the
    clone with the same weights gives the same output; the output equals
    ``expected_output`` when given; every other available backend gives the
    CPU's output from the same weights (skipped when ``training`` makes the
    output random).
    """
    from .layers.base import Input

    kwargs = dict(kwargs or {})
    multi = input_data is not None and isinstance(input_data, (list, tuple)) or (
        input_data is None and isinstance(input_shape, list))
    if input_data is None:
        rng = np.random.default_rng(seed)
        shapes = input_shape if multi else [input_shape]
        input_data = [rng.standard_normal(tuple(s)).astype(np.float32) for s in shapes]
    else:
        input_data = [np.asarray(a) for a in (input_data if multi else [input_data])]

    def run(layer, B):
        with backends.use_backend(B):
            xs = [tensor(a, str(a.dtype)) for a in input_data]
            return layer(xs if multi else xs[0], training=training)

    with backends.use_backend("cpu"):
        layer = layer_cls(**kwargs)
        out = run(layer, "cpu")
        outs = out if isinstance(out, (list, tuple)) else [out]
        got = [(None,) + tuple(o.shape[1:]) for o in outs]
        in_shapes = [(None,) + a.shape[1:] for a in input_data]
        computed = layer.compute_output_shape(in_shapes if multi else in_shapes[0])
        computed = [tuple(c) for c in (computed if isinstance(computed, list) else [computed])]
        assert computed == got, f"{layer_cls.__name__}: compute_output_shape {computed} != real {got}"
        if expected_output_shape is not None:
            exp = expected_output_shape if isinstance(expected_output_shape, list) else [expected_output_shape]
            exp = [tuple(e) for e in exp]
            assert got == exp, f"{layer_cls.__name__}: output shape {got} != expected {exp}"
        if expected_num_weights is not None:
            assert len(layer.weights) == expected_num_weights, (
                f"{layer_cls.__name__}: {len(layer.weights)} weights, expected {expected_num_weights}")
        if expected_num_trainable_weights is not None:
            assert len(layer.trainable_weights) == expected_num_trainable_weights, (
                f"{layer_cls.__name__}: {len(layer.trainable_weights)} trainable weights, "
                f"expected {expected_num_trainable_weights}")
        if expected_num_params is not None:
            assert layer.count_params() == expected_num_params, (
                f"{layer_cls.__name__}: {layer.count_params()} params, expected {expected_num_params}")
        result = [o.data_sync() for o in outs]
        if expected_output is not None:
            exp = expected_output if isinstance(expected_output, (list, tuple)) else [expected_output]
            for r, e in zip(result, exp):
                assert_close(r, e, rtol, atol, msg=f"{layer_cls.__name__} output")

        # Symbolic call through Input.
        cfg = layer.get_config()
        sym_layer = layer_cls.from_config(dict(cfg, name=cfg["name"] + "_sym"))
        syms = [Input(shape=a.shape[1:], dtype=str(a.dtype)) for a in input_data]
        sym_out = sym_layer(syms if multi else syms[0])
        sym_shapes = [tuple(s.shape) for s in (sym_out if isinstance(sym_out, list) else [sym_out])]
        assert sym_shapes == got, f"{layer_cls.__name__}: symbolic output shape {sym_shapes} != real {got}"

        # Config round trip, and the clone computes the same with the same weights.
        clone = layer_cls.from_config(cfg)
        assert clone.get_config() == cfg, (
            f"{layer_cls.__name__}: config changed in a round trip:\n{cfg}\n{clone.get_config()}")
        weights = layer.get_weights()
        if not training:
            run(clone, "cpu")
            clone.set_weights(weights)
            for r, c in zip(result, [o.data_sync() for o in _as_list(run(clone, "cpu"))]):
                assert_close(c, r, rtol, atol, msg=f"{layer_cls.__name__} clone output")

    # Every other backend from the same weights.
    ok, _ = backends.cuda_status()
    if ok and not training:
        other = layer_cls.from_config(cfg)
        with backends.use_backend("cuda"):
            run(other, "cuda")
            other.set_weights(weights)
            for r, c in zip(result, [o.data_sync() for o in _as_list(run(other, "cuda"))]):
                assert_close(c, r, max(rtol, 1e-4), max(atol, 1e-4), msg=f"{layer_cls.__name__} on cuda")
    return result if len(result) > 1 else result[0]


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]
