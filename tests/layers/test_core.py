"""Core layers (deepgpu/layers/core.py: Dense, Activation, Lambda) through the conformance harness.

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
