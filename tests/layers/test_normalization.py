"""Normalization layers (deepgpu/layers/normalization.py) through the conformance harness.

A new normalization layer adds its LayerCase entries here
(tests/layers/test_every_layer_has_cases.py fails until it does).
"""
import pytest

from deepgpu import layers as L
from deepgpu.testing import LayerCase as C

# TF.js 4.22 normalizes over another layout when axis is not the last one (test below).
_AXIS = "TF.js's BatchNormalization predicts other values for an axis other than the last"
CASES = [
    C(L.BatchNormalization, {}, (4, 3, 3, 2), (None, 3, 3, 2), training="deterministic",
      expected_num_weights=4, expected_num_trainable_weights=2),
    C(L.BatchNormalization, dict(axis=1, center=False), (5, 3, 4), (None, 3, 4), training="deterministic",
      expected_num_weights=3, unsupported={"tfjs": _AXIS}),
    C(L.BatchNormalization, dict(scale=False, momentum=0.9, epsilon=1e-2), (6, 4), (None, 4),
      training="deterministic", expected_num_weights=3),
    C(L.BatchNormalization, dict(momentum=0.9, epsilon=1e-5, gamma_regularizer="l2"), (4, 3, 3, 8), (None, 3, 3, 8),
      training="deterministic", expected_num_params=32, expected_num_weights=4, expected_num_trainable_weights=2),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_layer(case, tfjs_batch):
    case.run(tfjs_batch=tfjs_batch)


@pytest.mark.parametrize("axis,shape", [(1, (5, 3, 4)), (2, (5, 3, 4, 2))])
def test_save_tfjs_refuses_batch_norm_off_the_last_axis(tfjs_agrees_or_refuses, axis, shape):
    tfjs_agrees_or_refuses(C(L.BatchNormalization, dict(axis=axis), shape))
