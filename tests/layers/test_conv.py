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
    # Grouped (issue 17): each group of channels has its own filters.
    C(L.Conv2D, dict(filters=4, kernel_size=3, groups=2), (2, 5, 5, 4), (None, 3, 3, 4),
      expected_num_params=3 * 3 * 2 * 4 + 4, unsupported={"tfjs": "TF.js's Conv2D has no groups"}),
    C(L.Conv2D, dict(filters=6, kernel_size=(2, 3), strides=2, padding="same", groups=3, activation="relu",
                     use_bias=False), (1, 6, 5, 3), (None, 3, 3, 6), expected_num_params=2 * 3 * 1 * 6,
      unsupported={"tfjs": "TF.js's Conv2D has no groups"}),
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
    C(L.DepthwiseConv1D, dict(kernel_size=3, depth_multiplier=2, padding="same", strides=2), (2, 7, 3),
      (None, 4, 6), expected_num_params=3 * 3 * 2 + 6, unsupported={"tfjs": "TF.js has no DepthwiseConv1D"}),
    C(L.DepthwiseConv1D, dict(kernel_size=2, dilation_rate=2, activation="relu", use_bias=False), (2, 6, 2),
      (None, 4, 2), expected_num_weights=1, unsupported={"tfjs": "TF.js has no DepthwiseConv1D"}),
    C(L.SeparableConv1D, dict(filters=4, kernel_size=3, depth_multiplier=2, padding="same", activation="relu"),
      (2, 6, 3), (None, 6, 4), expected_num_params=3 * 3 * 2 + 6 * 4 + 4,
      unsupported={"tfjs": "TF.js has no SeparableConv1D"}),
    C(L.SeparableConv1D, dict(filters=3, kernel_size=2, strides=2, activation="tanh"), (2, 7, 2), (None, 3, 3),
      unsupported={"tfjs": "TF.js has no SeparableConv1D"}),
]


@pytest.mark.parametrize("make, shape, match", [
    (lambda: L.Conv1D(2, 5), (1, 3, 2), r"'conv1d[^']*' \(Conv1D\).*kernel_size 5.*\(None, 3, 2\)"),
    (lambda: L.Conv1D(4, 2, groups=2), (1, 5, 3), r"\(Conv1D\): groups=2 must divide the input channels \(3\)"),
    (lambda: L.Conv1D(3, 2, groups=2), None, r"Conv1D: filters \(3\) must be divisible by groups \(2\)"),
    (lambda: L.Conv1D(3, 2, padding="full"), None, r"Conv1D: padding must be 'valid', 'same' or 'causal'"),
    (lambda: L.Conv1D(3, (2, 2)), None, r"Conv1D: kernel_size must be a positive int or a list of one"),
    (lambda: L.Conv1DTranspose(3, 2, padding="causal"), None, r"Conv1DTranspose: padding 'causal' is not supported"),
    (lambda: L.Conv1DTranspose(3, 2, strides=2, output_padding=2), None,
     r"Conv1DTranspose: output_padding \(2\) must be smaller than strides \(2\)"),
    (lambda: L.DepthwiseConv1D(4), (1, 3, 2), r"\(DepthwiseConv1D\).*kernel_size 4"),
    (lambda: L.SeparableConv1D(2, 3, padding="causal"), None, r"SeparableConv1D: padding 'causal'"),
    (lambda: L.Conv1D(2, 3), (1, 5, 5, 2), r"\(Conv1D\)|conv1d"),
])
def test_conv1d_bad_input_names_the_layer(make, shape, match):
    """Bad arguments fail at construction, a bad input at the first call; the layer stays unbuilt."""
    import numpy as np

    from deepgpu import tensor
    if shape is None:
        with pytest.raises(ValueError, match=match):
            make()
        return
    layer = make()
    with pytest.raises(ValueError, match=match):
        layer(tensor(np.ones(shape, "float32")))
    assert not layer.weights


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_layer(case, tfjs_batch):
    case.run(tfjs_batch=tfjs_batch)


def test_save_tfjs_refuses_conv2d_transpose_output_padding(tfjs_agrees_or_refuses):
    tfjs_agrees_or_refuses(C(L.Conv2DTranspose, dict(filters=2, kernel_size=3, strides=2, output_padding=1),
                             (1, 3, 3, 2)))
