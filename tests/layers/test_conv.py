"""Convolution layers (deepgpu/layers/conv.py) through the conformance harness.

A new convolution layer adds its LayerCase entries here
(tests/layers/test_every_layer_has_cases.py fails until it does).
"""
import pytest

from deepgpu import layers as L
from deepgpu.testing import LayerCase as C

# TF.js's Conv2DTranspose has no output_padding: it computes another output size (test below).
_OUTPUT_PADDING = "TF.js's Conv2DTranspose has no output_padding"
CASES = [
    C(L.Conv2D, dict(filters=3, kernel_size=3), (2, 5, 5, 2), (None, 3, 3, 3), expected_num_weights=2),
    C(L.Conv2D, dict(filters=2, kernel_size=(2, 3), strides=(2, 1), padding="same", activation="relu"),
      (2, 5, 4, 3), (None, 3, 4, 2)),
    C(L.Conv2D, dict(filters=2, kernel_size=3, dilation_rate=2, padding="same", use_bias=False,
                     activation="sigmoid"), (1, 6, 5, 2), (None, 6, 5, 2), expected_num_weights=1),
    C(L.Conv2D, dict(filters=4, kernel_size=1, activation="tanh"), (3, 3, 3, 2), (None, 3, 3, 4)),
    C(L.Conv2D, dict(filters=8, kernel_size=3, padding="same", activation="relu"), (2, 6, 6, 3), (None, 6, 6, 8),
      expected_num_params=3 * 3 * 3 * 8 + 8),
    C(L.Conv2D, dict(filters=2, kernel_size=(2, 3), strides=(1, 2), use_bias=False), (1, 5, 7, 2), (None, 4, 3, 2),
      expected_num_params=2 * 3 * 2 * 2),
    C(L.Conv2DTranspose, dict(filters=3, kernel_size=3, strides=2, padding="same"), (2, 3, 3, 2), (None, 6, 6, 3)),
    C(L.Conv2DTranspose, dict(filters=2, kernel_size=(3, 2), strides=(2, 1), activation="relu"),
      (2, 3, 4, 2), (None, 7, 5, 2)),
    C(L.Conv2DTranspose, dict(filters=2, kernel_size=3, strides=2, output_padding=1, use_bias=False),
      (1, 3, 3, 2), (None, 8, 8, 2), unsupported={"tfjs": _OUTPUT_PADDING}),
    C(L.Conv2DTranspose, dict(filters=5, kernel_size=3, strides=2, padding="same", output_padding=1,
                              activation="sigmoid"), (2, 4, 4, 3), (None, 8, 8, 5),
      expected_num_params=3 * 3 * 5 * 3 + 5),
]

# 1-D (issue 16): TF.js has Conv1D, but neither groups nor causal padding (which it refuses to run).
CASES += [
    C(L.Conv1D, dict(filters=3, kernel_size=3), (2, 7, 2), (None, 5, 3), expected_num_params=3 * 2 * 3 + 3),
    C(L.Conv1D, dict(filters=4, kernel_size=2, strides=2, padding="same", activation="relu"), (2, 7, 3),
      (None, 4, 4)),
    C(L.Conv1D, dict(filters=2, kernel_size=3, dilation_rate=2, padding="same", use_bias=False,
                     activation="tanh"), (1, 8, 2), (None, 8, 2), expected_num_weights=1),
    C(L.Conv1D, dict(filters=3, kernel_size=3, padding="causal", dilation_rate=2), (2, 6, 2), (None, 6, 3),
      unsupported={"tfjs": "TF.js's Conv1D refuses causal padding"}),
    C(L.Conv1D, dict(filters=6, kernel_size=2, groups=2, activation="sigmoid"), (2, 5, 4), (None, 4, 6),
      expected_num_params=2 * 2 * 6 + 6, unsupported={"tfjs": "TF.js's Conv1D has no groups"}),
    C(L.Conv1DTranspose, dict(filters=3, kernel_size=3, strides=2, padding="same"), (2, 4, 2), (None, 8, 3),
      unsupported={"tfjs": "TF.js has no Conv1DTranspose"}),
    C(L.Conv1DTranspose, dict(filters=2, kernel_size=4, strides=3, output_padding=1, activation="relu"),
      (2, 3, 3), (None, 11, 2), expected_num_params=4 * 2 * 3 + 2,
      unsupported={"tfjs": "TF.js has no Conv1DTranspose"}),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_layer(case, tfjs_batch):
    case.run(tfjs_batch=tfjs_batch)


def test_save_tfjs_refuses_conv2d_transpose_output_padding(tfjs_agrees_or_refuses):
    tfjs_agrees_or_refuses(C(L.Conv2DTranspose, dict(filters=2, kernel_size=3, strides=2, output_padding=1),
                             (1, 3, 3, 2)))
