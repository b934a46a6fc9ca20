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
    C(L.SpatialDropout2D, dict(rate=0.5), (2, 3, 4, 5), (None, 3, 4, 5), training="random",
      unsupported={"tfjs": "TF.js has SpatialDropout1D only"}),
    C(L.SpatialDropout3D, dict(rate=0.4), (2, 2, 3, 2, 4), (None, 2, 3, 2, 4), training="random",
      unsupported={"tfjs": "TF.js has SpatialDropout1D only"}),
    C(L.ActivityRegularization, dict(l1=0.01, l2=0.1), (3, 4), (None, 4),
      unsupported={"tfjs": "TF.js has no ActivityRegularization"}),
]

# 1-D (issue 16)
CASES += [
    C(L.SpatialDropout1D, dict(rate=0.5), (3, 5, 4), (None, 5, 4), training="random"),
    C(L.SpatialDropout1D, dict(rate=0.2, seed=7), (2, 3, 6), (None, 3, 6), training="random"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_layer(case, tfjs_batch):
    case.run(tfjs_batch=tfjs_batch)


def test_activity_regularization_adds_keras3_penalty():
    import numpy as np
    from deepgpu import tensor

    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    layer = L.ActivityRegularization(l1=0.01, l2=0.1)
    y = layer(tensor(x))
    np.testing.assert_array_equal(y.data_sync(), x)
    want = (0.01 * np.abs(x).sum() + 0.1 * np.square(x).sum()) / 4  # divided by the batch size, as Keras 3
    assert len(layer.losses) == 1
    np.testing.assert_allclose(float(layer.losses[0].data_sync()), want, rtol=1e-5)


def test_spatial_dropout2d_drops_whole_channels():
    import numpy as np
    from deepgpu import tensor

    x = np.ones((8, 5, 6, 16), np.float32)
    y = L.SpatialDropout2D(0.5)(tensor(x), training=True).data_sync()
    per_map = y.reshape(8, 30, 16)
    assert (per_map.min(axis=1) == per_map.max(axis=1)).all()  # one decision per (example, channel)
    assert set(np.unique(y)) <= {0.0, 2.0}
