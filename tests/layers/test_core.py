"""Core layers (deepgpu/layers/core.py) through the conformance harness.

Each LayerCase is one configuration and input spec of a layer class; the
harness (deepgpu.testing.run_layer_test) runs every check on it. A new
core layer adds its cases here; tests/layers/test_every_layer_has_cases.py
fails until it does.
"""
import pytest

from deepgpu import layers as L
from deepgpu import ops, register_serializable, regularizers
from deepgpu.testing import LayerCase as C
from deepgpu.testing import TfjsNodeBatch


@register_serializable()
def layer_cases_scaled_tanh(x):
    """A registered function for the Lambda cases (a config names its function)."""
    return ops.tanh(x) * 2.0


_NO_LAMBDA = "Lambda holds Python code"
# tfjs-layers' Flatten demands rank >= 3 and refuses the folder save_tfjs writes (test below).
_FLATTEN_RANK2 = "TF.js's Flatten takes inputs of rank 3 or more; save_tfjs does not refuse rank 2 yet"
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
    C(L.Dropout, dict(rate=0.5), (4, 6), (None, 6), training="random"),
    C(L.Dropout, dict(rate=0.3, noise_shape=[None, 1, 4], seed=3), (3, 5, 4), (None, 5, 4), training="random"),
    C(L.Dropout, dict(rate=0.2, noise_shape=[None, 1], seed=1), (3, 4), (None, 4), training="random"),
    C(L.Flatten, {}, (2, 3, 4), (None, 12)),
    C(L.Flatten, {}, (2, 3, 4, 5), (None, 60)),
    C(L.Flatten, {}, (2, 3), (None, 3), skip={"tfjs_node": _FLATTEN_RANK2}),
    C(L.Reshape, dict(target_shape=(6, 2)), (2, 3, 4), (None, 6, 2)),
    C(L.Reshape, dict(target_shape=(-1, 3)), (2, 12), (None, 4, 3)),
    C(L.Reshape, dict(target_shape=(4, -1)), (2, 3, 4, 5), (None, 4, 15)),
    C(L.Reshape, dict(target_shape=(12,)), (2, 3, 4), (None, 12)),
    C(L.Permute, dict(dims=(2, 1)), (2, 3, 4), (None, 4, 3)),
    C(L.Permute, dict(dims=(3, 1, 2)), (2, 3, 4, 2), (None, 2, 3, 4)),
    C(L.RepeatVector, dict(n=3), (2, 5), (None, 3, 5)),
    C(L.Lambda, dict(function=layer_cases_scaled_tanh), (3, 4), (None, 4),
      unsupported={"tfjs": _NO_LAMBDA, "keras": _NO_LAMBDA, "onnx": _NO_LAMBDA}),
    C(L.Lambda, dict(function=layer_cases_scaled_tanh, output_shape=(2, 3)), (2, 2, 3), (None, 2, 3),
      unsupported={"tfjs": _NO_LAMBDA, "keras": _NO_LAMBDA, "onnx": _NO_LAMBDA}),
]


@pytest.fixture(scope="module")
def tfjs_batch():
    return TfjsNodeBatch(CASES)  # one node process for the whole family


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_layer(case, tfjs_batch):
    case.run(tfjs_batch=tfjs_batch)


@pytest.mark.xfail(strict=True, reason=_FLATTEN_RANK2)
def test_tfjs_gap_flatten_of_rank_2(tfjs_agrees_or_refuses):
    tfjs_agrees_or_refuses(C(L.Flatten, {}, (2, 3)))
