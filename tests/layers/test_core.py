"""Core layers (deepgpu/layers/core.py: Dense, Activation, Lambda) through the conformance harness.

Each LayerCase is one configuration and input spec of a layer class; the
harness (deepgpu.testing.run_layer_test) runs every check on it. A new
core layer adds its cases here; tests/layers/test_every_layer_has_cases.py
fails until it does.
"""
import numpy as np
import pytest

from deepgpu import layers as L
from deepgpu import ops, register_serializable, regularizers
from deepgpu.testing import LayerCase as C


@register_serializable()
def layer_cases_scaled_tanh(x):
    """A registered function for the Lambda cases (a config names its function)."""
    return ops.tanh(x) * 2.0


_NO_LAMBDA = "Lambda holds Python code"
_NO_TFJS_ACT = "TF.js has no such activation"
_NO_EINSUM = {"tfjs": "TF.js has no EinsumDense"}

CASES = [
    C(L.Dense, dict(units=4), (3, 5), (None, 4), expected_num_weights=2),
    C(L.Dense, dict(units=3, activation="tanh", use_bias=False, kernel_regularizer="l2"), (2, 3, 4), (None, 3, 3),
      expected_num_weights=1),
    C(L.Dense, dict(units=2, activation="gelu", kernel_initializer="he_normal", bias_initializer="ones"),
      (3, 6), (None, 2)),
    C(L.Dense, dict(units=7, activation="relu", kernel_initializer="he_normal",
                    kernel_regularizer=regularizers.L2(0.01)), (2, 13), (None, 7), expected_num_params=13 * 7 + 7),
    C(L.Activation, dict(activation="softmax"), (2, 3, 5), (None, 3, 5)),
    C(L.Activation, dict(activation="selu"), (2, 3, 4), (None, 3, 4)),
    # Keras 3 activations TF.js lacks (save_tfjs refuses them, naming the layer)
    C(L.Dense, dict(units=3, activation="log_sigmoid"), (2, 5), (None, 3), unsupported={"tfjs": _NO_TFJS_ACT}),
    C(L.Dense, dict(units=4, activation="hard_tanh"), (2, 3, 5), (None, 3, 4), unsupported={"tfjs": _NO_TFJS_ACT}),
    C(L.Dense, dict(units=4, activation="celu"), (3, 5), (None, 4), unsupported={"tfjs": _NO_TFJS_ACT}),
    C(L.Activation, dict(activation="squareplus"), (2, 3, 4), (None, 3, 4), unsupported={"tfjs": _NO_TFJS_ACT}),
    C(L.Activation, dict(activation="tanh_shrink"), (2, 6), (None, 6), unsupported={"tfjs": _NO_TFJS_ACT}),
    C(L.Activation, dict(activation="soft_shrink"), (2, 3, 4), (None, 3, 4), unsupported={"tfjs": _NO_TFJS_ACT}),
    C(L.Activation, dict(activation="sparse_sigmoid"), (2, 5), (None, 5), unsupported={"tfjs": _NO_TFJS_ACT}),
    C(L.Activation, dict(activation="glu"), (2, 3, 6), (None, 3, 3), unsupported={"tfjs": _NO_TFJS_ACT}),
    C(L.Activation, dict(activation="sparse_plus"), (2, 5), (None, 5), unsupported={"tfjs": _NO_TFJS_ACT}),
    C(L.Dense, dict(units=5, activation="sparsemax"), (3, 4), (None, 5),
      unsupported={"tfjs": _NO_TFJS_ACT},
      skip={"keras_real": "Keras 3.15's sparsemax computes a wrong threshold when more than one entry is in "
                          "the support (keras-team/keras#23425, fixed upstream by #23469); deepgpu computes "
                          "the projection onto the simplex"}),
    C(L.Lambda, dict(function=layer_cases_scaled_tanh), (3, 4), (None, 4),
      unsupported={"tfjs": _NO_LAMBDA, "keras": _NO_LAMBDA, "onnx": _NO_LAMBDA}),
    C(L.Lambda, dict(function=layer_cases_scaled_tanh, output_shape=(2, 3)), (2, 2, 3), (None, 2, 3),
      unsupported={"tfjs": _NO_LAMBDA, "keras": _NO_LAMBDA, "onnx": _NO_LAMBDA}),
    C(L.EinsumDense, dict(equation="abc,cd->abd", output_shape=(None, 6), bias_axes="d"), (2, 3, 4), (None, 3, 6),
      expected_num_params=30, unsupported=_NO_EINSUM),
    C(L.EinsumDense, dict(equation="abc,cde->abde", output_shape=(None, 2, 3), bias_axes="de"), (2, 3, 4),
      (None, 3, 2, 3), expected_num_params=30, unsupported=_NO_EINSUM),
    C(L.EinsumDense, dict(equation="abcd,cde->abe", output_shape=(None, 5), bias_axes="e", activation="relu"),
      (2, 3, 2, 4), (None, 3, 5), expected_num_params=45, unsupported=_NO_EINSUM),
    C(L.EinsumDense, dict(equation="...b,bc->...c", output_shape=4), (2, 3, 5), (None, 3, 4), expected_num_params=20,
      unsupported=_NO_EINSUM),
    C(L.EinsumDense, dict(equation="ab,bc->ac", output_shape=3, bias_axes="c"), (4, 5), (None, 3),
      expected_num_params=18, unsupported=_NO_EINSUM),
    C(L.Identity, {}, (2, 3, 4), (None, 3, 4), unsupported={"tfjs": "TF.js has no Identity layer"}),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_layer(case, tfjs_batch):
    case.run(tfjs_batch=tfjs_batch)


@pytest.mark.parametrize("eq,out,bias,shape", [
    ("abc,cd->abd", (5, 8), "d", (2, 5, 4)), ("abc,cde->abde", (None, 3, 2), "de", (2, 5, 4)),
    ("abcd,cde->abe", (5, 7), "e", (2, 5, 3, 2)), ("...b,bc->...c", 8, "c", (2, 5, 4)),
    ("ab,bc->ac", 3, None, (2, 4)), ("abc,cd->abd", (5, 6), "bd", (2, 5, 4))])
def test_einsum_dense_matches_keras(eq, out, bias, shape):
    keras = pytest.importorskip("keras")
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ours, theirs = L.EinsumDense(eq, out, bias_axes=bias), keras.layers.EinsumDense(eq, out, bias_axes=bias)
    ours(x)
    theirs(x)
    rng = np.random.default_rng(1)
    for a, b in zip(ours.weights, theirs.weights):
        assert tuple(a.shape) == tuple(b.shape)
        v = rng.standard_normal(b.shape).astype(np.float32)
        a.assign(v)
        b.assign(v)
    np.testing.assert_allclose(ours(x).data_sync(), np.asarray(theirs(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs,shape,match", [
    (dict(equation="abc,cd->abd", output_shape=(4, 6)), (2, 3, 5), r"shared axis 'b' \(3 vs 4\)"),
    (dict(equation="abc,cd->abz", output_shape=(3, 6)), (2, 3, 5), "output axis 'z'"),
    (dict(equation="abc,cd->abd", output_shape=(3, 6), bias_axes="x"), (2, 3, 5), "bias axis 'x'"),
    (dict(equation="ab+c", output_shape=6), (2, 3), "must be a string"),
])
def test_einsum_dense_bad_input(kwargs, shape, match):
    with pytest.raises(ValueError, match=match):
        L.EinsumDense(**kwargs)(np.ones(shape, np.float32))
