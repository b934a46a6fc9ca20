"""Pooling layers (deepgpu/layers/pooling.py) through the conformance harness.

A new pooling layer adds its LayerCase entries here
(tests/layers/test_every_layer_has_cases.py fails until it does).
"""
import numpy as np
import pytest

from deepgpu import layers as L
from deepgpu.testing import LayerCase as C

CASES = [
    C(L.MaxPooling2D, {}, (2, 4, 4, 3), (None, 2, 2, 3), expected_num_weights=0),
    C(L.MaxPooling2D, dict(pool_size=3, strides=2, padding="same"), (2, 5, 5, 2), (None, 3, 3, 2)),
    C(L.MaxPooling2D, dict(pool_size=(2, 1), strides=(1, 2)), (1, 3, 5, 2), (None, 2, 3, 2)),
    C(L.MaxPooling2D, dict(pool_size=2), (2, 6, 5, 3), (None, 3, 2, 3)),
    C(L.AveragePooling2D, {}, (2, 4, 4, 3), (None, 2, 2, 3)),
    C(L.AveragePooling2D, dict(pool_size=3, strides=1, padding="same"), (2, 4, 3, 2), (None, 4, 3, 2)),
    C(L.AveragePooling2D, dict(pool_size=3, strides=2, padding="same"), (2, 6, 5, 3), (None, 3, 3, 3)),
    C(L.GlobalAveragePooling2D, {}, (2, 3, 4, 5), (None, 5)),
    C(L.GlobalAveragePooling2D, dict(keepdims=True), (2, 3, 4, 5), (None, 1, 1, 5),
      unsupported={"tfjs": "TF.js ignores keepdims"}),
    C(L.GlobalMaxPooling2D, {}, (2, 3, 4, 5), (None, 5)),
    C(L.GlobalMaxPooling2D, dict(keepdims=True), (2, 6, 5, 3), (None, 1, 1, 3),
      unsupported={"tfjs": "TF.js ignores keepdims"}),
]

# 1-D (issue 16)
CASES += [
    C(L.MaxPooling1D, {}, (2, 6, 3), (None, 3, 3), expected_num_weights=0),
    C(L.MaxPooling1D, dict(pool_size=3, strides=2, padding="same"), (2, 7, 2), (None, 4, 2)),
    C(L.AveragePooling1D, dict(pool_size=3), (2, 7, 2), (None, 2, 2)),
    C(L.AveragePooling1D, dict(pool_size=4, strides=3, padding="same"), (2, 8, 3), (None, 3, 3)),
    C(L.GlobalAveragePooling1D, {}, (2, 5, 3), (None, 3)),
    C(L.GlobalAveragePooling1D, {}, (3, 5, 2), (None, 2), id="masked",
      input_mask=np.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], bool), expected_output_mask=None),
    C(L.GlobalAveragePooling1D, dict(keepdims=True), (2, 5, 3), (None, 1, 3),
      unsupported={"tfjs": "TF.js ignores keepdims"}),
    C(L.GlobalMaxPooling1D, {}, (2, 5, 3), (None, 3)),
    C(L.GlobalMaxPooling1D, dict(keepdims=True), (2, 4, 3), (None, 1, 3),
      unsupported={"tfjs": "TF.js ignores keepdims"}),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_layer(case, tfjs_batch):
    case.run(tfjs_batch=tfjs_batch)
