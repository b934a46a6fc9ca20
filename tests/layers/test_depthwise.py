"""Depthwise and separable convolution layers (deepgpu/layers/depthwise.py) through the harness."""
import numpy as np
import pytest

import deepgpu as dg
from deepgpu import layers as L
from deepgpu.testing import LayerCase as C

# tfjs-layers 4.22's DepthwiseConv2D passes dilations=null to tf.depthwiseConv2d (its SeparableConv2D does not).
_TFJS_DILATION = "TF.js's DepthwiseConv2D ignores dilation_rate"
CASES = [
    C(L.DepthwiseConv2D, dict(kernel_size=3), (2, 5, 5, 3), (None, 3, 3, 3), expected_num_weights=2,
      expected_num_params=3 * 3 * 3 + 3),
    C(L.DepthwiseConv2D, dict(kernel_size=(3, 2), strides=2, padding="same", depth_multiplier=2,
                              activation="relu"), (2, 5, 4, 3), (None, 3, 2, 6),
      expected_num_params=3 * 2 * 3 * 2 + 6),
    C(L.DepthwiseConv2D, dict(kernel_size=3, dilation_rate=2, padding="same", use_bias=False),
      (1, 6, 5, 2), (None, 6, 5, 2), expected_num_weights=1, unsupported={"tfjs": _TFJS_DILATION}),
    C(L.DepthwiseConv2D, dict(kernel_size=3, strides=2, padding="same", depth_multiplier=3,
                              activation="sigmoid"), (2, 6, 6, 2), (None, 3, 3, 6)),
    C(L.SeparableConv2D, dict(filters=4, kernel_size=3), (2, 5, 5, 3), (None, 3, 3, 4), expected_num_weights=3,
      expected_num_params=3 * 3 * 3 + 3 * 4 + 4),
    C(L.SeparableConv2D, dict(filters=3, kernel_size=(2, 3), strides=2, padding="same", depth_multiplier=2,
                              activation="relu"), (2, 6, 5, 2), (None, 3, 3, 3)),
    C(L.SeparableConv2D, dict(filters=2, kernel_size=3, dilation_rate=2, padding="same", use_bias=False,
                              activation="tanh"), (1, 6, 6, 3), (None, 6, 6, 2), expected_num_weights=2),
    C(L.SeparableConv2D, dict(filters=5, kernel_size=3, activation="elu"), (2, 5, 5, 2), (None, 3, 3, 5)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_layer(case, tfjs_batch):
    case.run(tfjs_batch=tfjs_batch)


@pytest.mark.parametrize("cls,kw", [(L.DepthwiseConv2D, {}), (L.SeparableConv2D, {"filters": 2})])
def test_depth_multiplier_must_be_positive(cls, kw):
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=f"{cls.__name__}: depth_multiplier must be a positive int"):
            cls(kernel_size=3, depth_multiplier=bad, **kw)


def test_window_larger_than_input_names_the_layer():
    layer = L.DepthwiseConv2D(5, name="dw")
    with pytest.raises(ValueError, match="'dw' .*DepthwiseConv2D.*kernel_size"):
        layer(dg.ones((1, 3, 3, 2)))
    assert not layer.built and layer.weights == []


def test_depthwise_output_channel_order_is_keras():
    """Output channel c*M + m is input channel c through kernel[:, :, c, m]."""
    layer = L.DepthwiseConv2D(1, depth_multiplier=2, use_bias=False)
    layer.build((None, 2, 2, 3))
    k = np.arange(1, 7, dtype=np.float32).reshape(1, 1, 3, 2)
    layer.depthwise_kernel.assign(k)
    x = np.random.default_rng(0).normal(size=(1, 2, 2, 3)).astype(np.float32)
    y = layer(dg.tensor(x)).data_sync()
    want = (x[..., :, None] * k[0, 0]).reshape(1, 2, 2, 6)
    np.testing.assert_allclose(y, want, rtol=1e-6)
    assert layer.kernel is layer.depthwise_kernel  # Keras 3's attribute name


def test_groups_must_divide_filters_and_channels():
    with pytest.raises(ValueError, match=r"Conv2D: filters \(6\) must be divisible by groups \(4\)"):
        L.Conv2D(6, 3, groups=4)
    with pytest.raises(ValueError, match="Conv2D: groups must be a positive int"):
        L.Conv2D(6, 3, groups=0)
    layer = L.Conv2D(6, 3, groups=3, name="grouped")
    with pytest.raises(ValueError, match=r"'grouped' \(Conv2D\): groups=3 must divide the input channels \(4\)"):
        layer(dg.ones((1, 5, 5, 4)))
    assert not layer.built and layer.weights == []
