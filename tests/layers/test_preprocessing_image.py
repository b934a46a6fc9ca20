"""Image preprocessing layers (deepgpu/layers/preprocessing/image.py) through the conformance harness,
and Resizing against tf.image.resize where TensorFlow is installed."""
import numpy as np
import pytest

from deepgpu import layers as L
from deepgpu import ops, tensor
from deepgpu.testing import LayerCase as C

_TFJS_CROP = "TF.js 4.22's CenterCrop overwrites its input's shape (the folder cannot be loaded)"
_TFJS_RESIZE = "TF.js's Resizing uses align_corners (or no half-pixel centres): other values"
CASES = [
    C(L.Rescaling, dict(scale=1 / 255.0), (2, 4, 4, 3), (None, 4, 4, 3)),
    C(L.Rescaling, dict(scale=2.0, offset=-1.0), (3, 5), (None, 5)),
    C(L.Rescaling, dict(scale=0.5, offset=0.25), (2, 3, 3, 1), (None, 3, 3, 1), input_dtype="int32",
      skip={"gradients": "integer input: nothing to differentiate"}),
    C(L.Rescaling, dict(scale=[1.0, 0.5, 2.0], offset=[0.0, 1.0, -1.0]), (2, 3, 3, 3), (None, 3, 3, 3)),
    C(L.Resizing, dict(height=3, width=4), (2, 6, 7, 2), (None, 3, 4, 2), unsupported={"tfjs": _TFJS_RESIZE}),
    C(L.Resizing, dict(height=8, width=9), (2, 5, 4, 1), (None, 8, 9, 1), unsupported={"tfjs": _TFJS_RESIZE}),
    C(L.Resizing, dict(height=4, width=3, interpolation="nearest"), (2, 7, 5, 2), (None, 4, 3, 2),
      unsupported={"tfjs": _TFJS_RESIZE}),
    C(L.Resizing, dict(height=4, width=4, crop_to_aspect_ratio=True), (2, 6, 9, 2), (None, 4, 4, 2),
      unsupported={"tfjs": _TFJS_RESIZE}),
    C(L.Resizing, dict(height=4, width=4, pad_to_aspect_ratio=True, fill_value=0.5), (2, 6, 9, 2),
      (None, 4, 4, 2), unsupported={"tfjs": _TFJS_RESIZE}),
    C(L.CenterCrop, dict(height=3, width=4), (2, 6, 8, 2), (None, 3, 4, 2), unsupported={"tfjs": _TFJS_CROP}),
    C(L.CenterCrop, dict(height=4, width=4), (2, 5, 7, 1), (None, 4, 4, 1),
      unsupported={"tfjs": _TFJS_CROP}),
    C(L.CenterCrop, dict(height=8, width=4), (2, 5, 6, 1), (None, 8, 4, 1),
      unsupported={"tfjs": _TFJS_CROP}),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_layer(case, tfjs_batch):
    case.run(tfjs_batch=tfjs_batch)


@pytest.mark.parametrize("method", ["bilinear", "nearest"])
@pytest.mark.parametrize("size", [(3, 4), (11, 13), (7, 9), (16, 3)])
def test_resize_equals_tf_image_resize(method, size):
    tf = pytest.importorskip("tensorflow")
    x = np.random.default_rng(1).standard_normal((2, 7, 6, 3)).astype(np.float32)
    want = tf.image.resize(x, size, method=method).numpy()
    np.testing.assert_allclose(ops.resize(tensor(x), size, method).data_sync(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kw,match", [
    (dict(height=0, width=3), "height"), (dict(height=3, width=4, interpolation="bicubic"), "interpolation"),
    (dict(height=3, width=4, antialias=True), "antialias"),
    (dict(height=3, width=4, crop_to_aspect_ratio=True, pad_to_aspect_ratio=True), "pad_to_aspect_ratio")])
def test_resizing_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=f"Resizing: .*{match}|{match}"):
        L.Resizing(**kw)
