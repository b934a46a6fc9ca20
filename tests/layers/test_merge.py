"""Merge layers (deepgpu/layers/merge.py) through the conformance harness.

A new merge layer adds its LayerCase entries here
(tests/layers/test_every_layer_has_cases.py fails until it does).
"""
import numpy as np
import pytest

from deepgpu import layers as L
from deepgpu.testing import LayerCase as C

TWO = [(2, 3, 4), (2, 3, 4)]
CASES = [
    C(L.Add, {}, TWO, (None, 3, 4)),
    C(L.Add, {}, [(2, 5)] * 3, (None, 5)),
    C(L.Subtract, {}, [(2, 3), (2, 3)], (None, 3), unsupported={"tfjs": "TF.js Layers has no Subtract"}),
    C(L.Multiply, {}, TWO, (None, 3, 4)),
    C(L.Multiply, {}, [(2, 5)] * 3, (None, 5)),
    C(L.Average, {}, TWO, (None, 3, 4)),
    C(L.Average, {}, [(2, 3, 4)] * 3, (None, 3, 4)),
    C(L.Maximum, {}, TWO, (None, 3, 4)),
    C(L.Maximum, {}, [(2, 3, 4)] * 3, (None, 3, 4)),
    C(L.Minimum, {}, [(2, 5)] * 3, (None, 5)),
    C(L.Concatenate, {}, [(2, 3, 4), (2, 3, 2)], (None, 3, 6)),
    C(L.Concatenate, dict(axis=1), [(2, 3, 4), (2, 2, 4)], (None, 5, 4)),
    C(L.Dot, dict(axes=2), [(2, 3, 4), (2, 5, 4)], (None, 3, 5)),
    C(L.Dot, dict(axes=(1, 2), normalize=True), [(2, 4, 3), (2, 5, 4)], (None, 3, 5),
      ),
    C(L.Dot, dict(axes=-1), [(3, 4), (3, 4)], (None, 1)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_layer(case, tfjs_batch):
    case.run(tfjs_batch=tfjs_batch)


def test_dot_matches_keras():
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 5, 4)).astype(np.float32), rng.standard_normal((2, 6, 4)).astype(np.float32)
    for axes, norm in [(2, False), ((2, 2), True), (-1, True)]:
        want = np.asarray(keras.layers.Dot(axes, normalize=norm)([x, y]))
        np.testing.assert_allclose(L.Dot(axes, normalize=norm)([x, y]).data_sync(), want, rtol=1e-5, atol=1e-6)


def test_dot_bad_input_names_the_layer():
    layer = L.Dot(axes=2, name="d")
    with pytest.raises(ValueError, match=r"'d' \(Dot\).*axis 2 of the first has size 4, axis 2 of the second 3"):
        layer([np.ones((2, 3, 4), np.float32), np.ones((2, 5, 3), np.float32)])
    with pytest.raises(ValueError, match="batch axis"):
        L.Dot(axes=0)([np.ones((2, 3), np.float32), np.ones((2, 3), np.float32)])
    with pytest.raises(ValueError, match="Dot: axes"):
        L.Dot(axes=(1, 2, 3))


@pytest.mark.parametrize("fn,cls", [(L.dot, L.Dot), (L.subtract, L.Subtract), (L.multiply, L.Multiply),
                                    (L.average, L.Average), (L.maximum, L.Maximum), (L.minimum, L.Minimum)])
def test_functional_forms(fn, cls):
    from deepgpu.models import Model

    a, b = L.Input((3,)), L.Input((3,))
    out = fn([a, b], axes=-1) if fn is L.dot else fn([a, b])
    assert isinstance(out.node.layer, cls)
    x, y = np.random.default_rng(1).standard_normal((2, 2, 3)).astype(np.float32)
    got = Model([a, b], out).predict([x, y], verbose=0)
    got = got.data_sync() if hasattr(got, "data_sync") else np.asarray(got)
    want = {L.Dot: lambda: (x * y).sum(-1, keepdims=True), L.Subtract: lambda: x - y, L.Multiply: lambda: x * y,
            L.Average: lambda: (x + y) / 2, L.Maximum: lambda: np.maximum(x, y),
            L.Minimum: lambda: np.minimum(x, y)}[cls]()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
