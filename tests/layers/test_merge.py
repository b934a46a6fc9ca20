"""Merge layers (deepgpu/layers/merge.py) through the conformance harness.

A new merge layer adds its LayerCase entries here
(tests/layers/test_every_layer_has_cases.py fails until it does).
"""
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
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_layer(case, tfjs_batch):
    case.run(tfjs_batch=tfjs_batch)
