"""Regularization layers (deepgpu/layers/regularization.py) through the conformance harness.

A new regularization layer adds its LayerCase entries here
(tests/layers/test_every_layer_has_cases.py fails until it does).
"""
import pytest

from deepgpu import layers as L
from deepgpu.testing import LayerCase as C

CASES = [
    C(L.Dropout, dict(rate=0.5), (4, 6), (None, 6), training="random"),
    C(L.Dropout, dict(rate=0.3, noise_shape=[None, 1, 4], seed=3), (3, 5, 4), (None, 5, 4), training="random"),
    C(L.Dropout, dict(rate=0.2, noise_shape=[None, 1], seed=1), (3, 4), (None, 4), training="random"),
]

# 1-D (issue 16)
CASES += [
    C(L.SpatialDropout1D, dict(rate=0.5), (3, 5, 4), (None, 5, 4), training="random"),
    C(L.SpatialDropout1D, dict(rate=0.2, seed=7), (2, 3, 6), (None, 3, 6), training="random"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_layer(case, tfjs_batch):
    case.run(tfjs_batch=tfjs_batch)
