"""Normalization layers (deepgpu/layers/normalization.py) through the conformance harness.

A new normalization layer adds its LayerCase entries here
(tests/layers/test_every_layer_has_cases.py fails until it does).
"""
import numpy as np
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
    C(L.LayerNormalization, {}, (4, 5, 8), (None, 5, 8), expected_num_weights=2, expected_num_params=16,
      unsupported={}),
    C(L.LayerNormalization, dict(axis=[1, 2], epsilon=1e-5, center=False), (3, 4, 5), (None, 4, 5),
      expected_num_params=20, unsupported={}),
    C(L.LayerNormalization, dict(axis=1, gamma_regularizer="l2"), (3, 6, 2), (None, 6, 2), expected_num_params=12,
      unsupported={}),
    C(L.LayerNormalization, dict(rms_scaling=True), (4, 7), (None, 7), expected_num_weights=1,
      unsupported={"tfjs": "TF.js's LayerNormalization has no rms_scaling"}),
    C(L.RMSNormalization, {}, (4, 3, 6), (None, 3, 6), expected_num_params=6,
      unsupported={"tfjs": "TF.js has no RMSNormalization"}),
    C(L.RMSNormalization, dict(axis=[1, 2], epsilon=1e-3), (2, 3, 4), (None, 3, 4), expected_num_params=12,
      unsupported={"tfjs": "TF.js has no RMSNormalization"}),
    C(L.GroupNormalization, dict(groups=2), (3, 4, 4, 6), (None, 4, 4, 6), expected_num_params=12,
      unsupported={"tfjs": "TF.js has no GroupNormalization"}),
    C(L.GroupNormalization, dict(groups=-1, axis=1, center=False), (3, 4, 5), (None, 4, 5), expected_num_params=4,
      unsupported={"tfjs": "TF.js has no GroupNormalization"}),
    C(L.UnitNormalization, {}, (4, 6), (None, 6), expected_num_weights=0,
      unsupported={"tfjs": "TF.js has no UnitNormalization"}),
    C(L.UnitNormalization, dict(axis=[1, 2]), (3, 4, 5), (None, 4, 5),
      unsupported={"tfjs": "TF.js has no UnitNormalization"}),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_layer(case, tfjs_batch):
    case.run(tfjs_batch=tfjs_batch)


@pytest.mark.parametrize("axis,shape", [(1, (5, 3, 4)), (2, (5, 3, 4, 2))])
def test_save_tfjs_refuses_batch_norm_off_the_last_axis(tfjs_agrees_or_refuses, axis, shape):
    tfjs_agrees_or_refuses(C(L.BatchNormalization, dict(axis=axis), shape))


# Values against Keras 3.15 itself (where installed): the same weights, the same input.
@pytest.mark.parametrize("name,kwargs", [
    ("LayerNormalization", {}), ("LayerNormalization", dict(axis=[1, 3], epsilon=1e-5)),
    ("LayerNormalization", dict(rms_scaling=True)), ("RMSNormalization", dict(axis=[2, 3])),
    ("GroupNormalization", dict(groups=3)), ("GroupNormalization", dict(groups=-1, axis=2)),
    ("UnitNormalization", dict(axis=[1, 2]))])
def test_matches_keras(name, kwargs):
    keras = pytest.importorskip("keras")
    import warnings

    x = np.random.default_rng(0).standard_normal((3, 4, 5, 6)).astype(np.float32)
    ours, theirs = getattr(L, name)(**kwargs), getattr(keras.layers, name)(**kwargs)
    ours(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras's deprecation warning for rms_scaling
        theirs(x)
        rng = np.random.default_rng(1)
        for a, b in zip(ours.weights, theirs.weights):
            v = rng.standard_normal(b.shape).astype(np.float32)
            a.assign(v)
            b.assign(v)
        want = np.asarray(theirs(x))
    np.testing.assert_allclose(ours(x).data_sync(), want, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("make,shape,match", [
    (lambda: L.LayerNormalization(axis=3), (2, 3, 4), r"axis 3 is out of range.*\(None, 3, 4\)"),
    (lambda: L.LayerNormalization(axis=[0]), (2, 3), "batch axis"),
    (lambda: L.GroupNormalization(groups=4), (2, 3, 6), r"6 channels.*4 groups"),
    (lambda: L.RMSNormalization(axis=[1, -2]), (2, 3, 4), "names an axis twice"),
])
def test_bad_axes_name_the_layer(make, shape, match):
    layer = make()
    with pytest.raises(ValueError, match=match) as e:
        layer(np.ones(shape, np.float32))
    assert layer.name in str(e.value)


def test_bad_arguments():
    with pytest.raises(ValueError, match="LayerNormalization: axis"):
        L.LayerNormalization(axis="last")
    with pytest.raises(ValueError, match="GroupNormalization: groups"):
        L.GroupNormalization(groups=0)
    with pytest.raises(ValueError, match="epsilon"):
        L.RMSNormalization(epsilon=0)


@pytest.mark.parametrize("axis,rms,shape", [(-1, False, (3, 5)), ((1, 2), False, (2, 3, 4)),
                                            ((1, 3), False, (2, 3, 2, 4)), (-1, True, (4, 6)), ((0, 2), True, (3, 2, 4))])
def test_layer_norm_op_gradients(axis, rms, shape):
    from deepgpu import ops
    from deepgpu.testing import check_gradients

    rng = np.random.default_rng(3)
    pshape = tuple(shape[a] for a in sorted(a % len(shape) for a in ((axis,) if isinstance(axis, int) else axis)))
    x, g, b = rng.uniform(-1, 2, shape), rng.uniform(0.5, 1.5, pshape), rng.uniform(-1, 1, pshape)
    check_gradients(lambda x, g, b: ops.layer_norm(x, g, b, axis, 1e-3, rms=rms), [x, g, b])
    check_gradients(lambda x: ops.layer_norm(x, None, None, axis, 1e-3, rms=rms), [x])


def test_onnx_layer_norm_is_the_onnx_op():
    """Opset 17 and later: ONNX's own LayerNormalization op (over trailing axes); opset 13: its arithmetic."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import os
    import tempfile

    from deepgpu.io.onnx import export_onnx
    from deepgpu.models import Sequential

    model = Sequential([L.Input((5, 6)), L.LayerNormalization(epsilon=1e-5)])
    with tempfile.TemporaryDirectory() as d:
        for opset, has in ((17, True), (13, False)):
            path = os.path.join(d, f"ln{opset}.onnx")
            export_onnx(model, path, opset=opset)
            ops = {n.op_type for n in onnx.load(path).graph.node}
            assert ("LayerNormalization" in ops) is has, ops
