"""Activation layers (deepgpu/layers/activation.py) through the conformance harness.

A new activation layer adds its LayerCase entries here
(tests/layers/test_every_layer_has_cases.py fails until it does).
"""
import pytest

from deepgpu import layers as L
from deepgpu.testing import LayerCase as C

CASES = [
    C(L.ReLU, {}, (3, 4), (None, 4)),
    C(L.ReLU, dict(max_value=0.8), (2, 3, 2), (None, 3, 2)),
    C(L.ReLU, dict(max_value=1.0, negative_slope=0.1, threshold=0.3), (3, 4), (None, 4),
      unsupported={"tfjs": "TF.js's ReLU has only max_value"}),
    C(L.ReLU, dict(negative_slope=0.2, threshold=0.1), (2, 3, 4), (None, 3, 4),
      unsupported={"tfjs": "TF.js's ReLU has only max_value"}),
    C(L.LeakyReLU, dict(negative_slope=0.2), (2, 3, 4), (None, 3, 4)),
    C(L.ELU, {}, (3, 4), (None, 4)),
    C(L.ELU, dict(alpha=0.7), (2, 3, 4), (None, 3, 4), unsupported={"tfjs": "TF.js's ELU has only alpha=1"}),
    C(L.Softmax, {}, (2, 5), (None, 5)),
    C(L.Softmax, dict(axis=1), (2, 3, 4), (None, 3, 4),
      unsupported={"tfjs": "TF.js's Softmax normalizes over the last axis only"}),
    C(L.Softmax, dict(axis=[1, 2]), (2, 3, 4), (None, 3, 4),
      unsupported={"tfjs": "TF.js's Softmax normalizes over the last axis only",
                   "onnx": "ONNX's Softmax takes one axis"}),
    C(L.PReLU, {}, (3, 4), (None, 4), expected_num_params=4),
    C(L.PReLU, dict(shared_axes=[1, 2], alpha_initializer="ones"), (2, 3, 4, 5), (None, 3, 4, 5),
      expected_num_params=5),
    C(L.PReLU, dict(shared_axes=1, alpha_regularizer="l2"), (2, 3, 4), (None, 3, 4), expected_num_params=4),
    C(L.ThresholdedReLU, {}, (3, 4), (None, 4)),
    C(L.ThresholdedReLU, dict(theta=0.3), (2, 3, 4), (None, 3, 4)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_layer(case, tfjs_batch):
    case.run(tfjs_batch=tfjs_batch)
