"""3-D layers (deepgpu/layers/volumetric.py) through the conformance harness (issue 17).

TF.js 4.22 has Conv3D, Conv3DTranspose, MaxPooling3D and AveragePooling3D; the others
are refused by save_tfjs, naming the layer.
"""
import numpy as np
import pytest

from deepgpu import layers as L
from deepgpu import ops, tensor
from deepgpu.testing import LayerCase as C

_NO_TFJS = {"tfjs": "TF.js 4.22 has no such layer"}
_NO_GROUPS = {"tfjs": "TF.js's Conv3D has no groups"}
_NO_OUTPUT_PADDING = {"tfjs": "TF.js's Conv3DTranspose has no output_padding"}

CASES = [
    C(L.Conv3D, dict(filters=3, kernel_size=2), (2, 3, 4, 4, 2), (None, 2, 3, 3, 3),
      expected_num_params=2 * 2 * 2 * 2 * 3 + 3),
    C(L.Conv3D, dict(filters=2, kernel_size=(3, 2, 3), strides=(2, 1, 2), padding="same", activation="relu"),
      (2, 5, 4, 5, 3), (None, 3, 4, 3, 2)),
    C(L.Conv3D, dict(filters=2, kernel_size=2, dilation_rate=(2, 1, 2), padding="same", use_bias=False,
                     activation="tanh"), (1, 5, 3, 4, 2), (None, 5, 3, 4, 2), expected_num_weights=1),
    C(L.Conv3D, dict(filters=4, kernel_size=(1, 2, 2), groups=2), (2, 2, 3, 3, 4), (None, 2, 2, 2, 4),
      expected_num_params=1 * 2 * 2 * 2 * 4 + 4, unsupported=_NO_GROUPS),
    C(L.Conv3DTranspose, dict(filters=2, kernel_size=3, strides=2, padding="same"), (2, 2, 3, 2, 3),
      (None, 4, 6, 4, 2), expected_num_params=3 * 3 * 3 * 2 * 3 + 2),
    C(L.Conv3DTranspose, dict(filters=3, kernel_size=(2, 3, 2), strides=(1, 2, 1), activation="sigmoid"),
      (2, 3, 2, 3, 2), (None, 4, 5, 4, 3)),
    C(L.Conv3DTranspose, dict(filters=2, kernel_size=2, strides=2, output_padding=1, use_bias=False),
      (1, 2, 2, 3, 2), (None, 5, 5, 7, 2), expected_num_weights=1, unsupported=_NO_OUTPUT_PADDING),
    C(L.MaxPooling3D, {}, (2, 4, 4, 6, 3), (None, 2, 2, 3, 3), expected_num_weights=0),
    C(L.MaxPooling3D, dict(pool_size=(3, 2, 2), strides=(2, 1, 2), padding="same"), (2, 5, 3, 4, 2),
      (None, 3, 3, 2, 2)),
    C(L.AveragePooling3D, dict(pool_size=2), (2, 4, 5, 4, 2), (None, 2, 2, 2, 2)),
    C(L.AveragePooling3D, dict(pool_size=(2, 3, 3), strides=(1, 2, 2), padding="same"), (2, 3, 5, 4, 2),
      (None, 3, 3, 2, 2)),
    C(L.GlobalAveragePooling3D, {}, (2, 3, 2, 4, 5), (None, 5), unsupported=_NO_TFJS),
    C(L.GlobalAveragePooling3D, dict(keepdims=True), (2, 2, 3, 2, 3), (None, 1, 1, 1, 3), unsupported=_NO_TFJS),
    C(L.GlobalMaxPooling3D, {}, (2, 3, 2, 4, 5), (None, 5), unsupported=_NO_TFJS),
    C(L.GlobalMaxPooling3D, dict(keepdims=True), (2, 2, 3, 2, 3), (None, 1, 1, 1, 3), unsupported=_NO_TFJS),
    C(L.UpSampling3D, {}, (2, 2, 3, 2, 2), (None, 4, 6, 4, 2), unsupported=_NO_TFJS),
    C(L.UpSampling3D, dict(size=(1, 3, 2)), (2, 2, 2, 3, 2), (None, 2, 6, 6, 2), unsupported=_NO_TFJS),
    C(L.ZeroPadding3D, {}, (2, 2, 3, 2, 2), (None, 4, 5, 4, 2), unsupported=_NO_TFJS),
    C(L.ZeroPadding3D, dict(padding=((0, 2), (1, 0), (2, 1))), (2, 2, 2, 3, 2), (None, 4, 3, 6, 2),
      unsupported=_NO_TFJS),
    C(L.Cropping3D, {}, (2, 3, 4, 4, 2), (None, 1, 2, 2, 2), unsupported=_NO_TFJS),
    C(L.Cropping3D, dict(cropping=((0, 1), (1, 1), (2, 0))), (2, 3, 4, 4, 2), (None, 2, 2, 2, 2),
      unsupported=_NO_TFJS),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_layer(case, tfjs_batch):
    case.run(tfjs_batch=tfjs_batch)


@pytest.mark.parametrize("make, shape, match", [
    (lambda: L.Conv3D(2, 4), (1, 3, 5, 5, 2), r"'conv3d[^']*' \(Conv3D\): kernel_size \(4, 4, 4\) does not fit"
                                              r".*\(None, 3, 5, 5, 2\)"),
    (lambda: L.Conv3D(4, 2, groups=2), (1, 3, 3, 3, 3), r"\(Conv3D\): groups=2 must divide the input channels \(3\)"),
    (lambda: L.Conv3D(3, 2, groups=2), None, r"Conv3D: filters \(3\) must be divisible by groups \(2\)"),
    (lambda: L.Conv3D(3, (2, 2)), None, r"Conv3D: kernel_size must be an int or three positive ints"),
    (lambda: L.Conv3D(3, 2, strides=2, dilation_rate=2), None, r"Conv3D: strides > 1 together with dilation"),
    (lambda: L.Conv3D(3, 2, data_format="channels_first"), None, r"Conv3D: data_format='channels_first'"),
    (lambda: L.Conv3D(3, 2), (1, 4, 4, 2), r"conv3d.*expected ndim=5|\(Conv3D\)"),
    (lambda: L.Conv3DTranspose(3, 2, strides=2, output_padding=2), None,
     r"Conv3DTranspose: output_padding \(2, 2, 2\) must be smaller than strides \(2, 2, 2\)"),
    (lambda: L.MaxPooling3D(3), (1, 2, 4, 4, 1), r"\(MaxPooling3D\): pool_size \(3, 3, 3\) with padding 'valid'"),
    (lambda: L.AveragePooling3D(0), None, r"AveragePooling3D: pool_size must be an int or three positive ints"),
    (lambda: L.ZeroPadding3D((1, -1, 0)), None, r"ZeroPadding3D: padding must be an int, three ints"),
    (lambda: L.Cropping3D(((1, 1), (2, 2), (0, 0))), (1, 3, 4, 5, 1),
     r"\(Cropping3D\): cropping .* removes the whole volume"),
    (lambda: L.UpSampling3D((2, 2)), None, r"UpSampling3D: size must be an int or three positive ints"),
])
def test_bad_input_names_the_layer(make, shape, match):
    """Bad arguments fail at construction, a bad input at the first call; the layer stays unbuilt."""
    if shape is None:
        with pytest.raises(ValueError, match=match):
            make()
        return
    layer = make()
    with pytest.raises(ValueError, match=match):
        layer(tensor(np.ones(shape, "float32")))
    assert not layer.weights


def _conv3d_reference(x, k, strides, dilation, pads):
    """Direct sum over output positions and kernel taps, float64."""
    x = np.pad(x, ((0, 0), *pads, (0, 0)))
    kd, kh, kw = k.shape[:3]
    out = [(x.shape[1 + i] - (k.shape[i] - 1) * dilation[i] - 1) // strides[i] + 1 for i in range(3)]
    y = np.zeros((x.shape[0], *out, k.shape[4]))
    for a in range(kd):
        for b in range(kh):
            for c in range(kw):
                win = x[:, a * dilation[0]::strides[0], b * dilation[1]::strides[1], c * dilation[2]::strides[2]]
                y += win[:, :out[0], :out[1], :out[2]] @ k[a, b, c]
    return y


@pytest.mark.parametrize("strides, dilation, padding, pads", [
    ((1, 1, 1), (1, 1, 1), "valid", ((0, 0),) * 3),
    ((2, 1, 2), (1, 1, 1), "same", ((1, 1), (1, 1), (1, 1))),
    ((1, 1, 1), (2, 1, 1), "same", ((2, 2), (1, 1), (1, 1))),
])
def test_conv3d_matches_the_direct_sum(strides, dilation, padding, pads):
    rng = np.random.default_rng(1)
    x, k = rng.standard_normal((2, 5, 4, 5, 3)), rng.standard_normal((3, 3, 3, 3, 2))
    y = ops.conv3d(tensor(x), tensor(k), strides, padding, dilation).numpy()
    # float32 (tensor's default) against the float64 sum
    np.testing.assert_allclose(y, _conv3d_reference(x, k, strides, dilation, pads), rtol=1e-5, atol=2e-5)
