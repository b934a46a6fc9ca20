"""Reshaping layers (deepgpu/layers/reshaping.py) through the conformance harness.

A new reshaping layer adds its LayerCase entries here
(tests/layers/test_every_layer_has_cases.py fails until it does).
"""
import pytest

from deepgpu import layers as L
from deepgpu.testing import LayerCase as C

# TF.js resizes without half-pixel centres (tf.image.resizeBilinear's default), Keras and
# deepgpu with them: the interior differs (test below).
_BILINEAR = "TF.js's bilinear UpSampling2D samples without half-pixel centres"
# tfjs-layers' Flatten demands rank >= 3 and refuses the folder save_tfjs writes (test below).
_FLATTEN_RANK2 = "TF.js's Flatten takes inputs of rank 3 or more"
CASES = [
    C(L.Flatten, {}, (2, 3, 4), (None, 12)),
    C(L.Flatten, {}, (2, 3, 4, 5), (None, 60)),
    C(L.Flatten, {}, (2, 3), (None, 3), unsupported={"tfjs": _FLATTEN_RANK2}),
    C(L.Reshape, dict(target_shape=(6, 2)), (2, 3, 4), (None, 6, 2)),
    C(L.Reshape, dict(target_shape=(-1, 3)), (2, 12), (None, 4, 3)),
    C(L.Reshape, dict(target_shape=(4, -1)), (2, 3, 4, 5), (None, 4, 15)),
    C(L.Reshape, dict(target_shape=(12,)), (2, 3, 4), (None, 12)),
    C(L.Permute, dict(dims=(2, 1)), (2, 3, 4), (None, 4, 3)),
    C(L.Permute, dict(dims=(3, 1, 2)), (2, 3, 4, 2), (None, 2, 3, 4)),
    C(L.RepeatVector, dict(n=3), (2, 5), (None, 3, 5)),
    C(L.ZeroPadding2D, {}, (2, 3, 3, 2), (None, 5, 5, 2)),
    C(L.ZeroPadding2D, dict(padding=(1, 2)), (2, 3, 4, 2), (None, 5, 8, 2)),
    C(L.ZeroPadding2D, dict(padding=((1, 0), (2, 1))), (2, 3, 4, 2), (None, 4, 7, 2)),
    C(L.Cropping2D, dict(cropping=1), (2, 3, 4, 2), (None, 1, 2, 2)),
    C(L.Cropping2D, dict(cropping=((1, 0), (0, 2))), (2, 4, 5, 3), (None, 3, 3, 3)),
    C(L.UpSampling2D, {}, (2, 2, 3, 2), (None, 4, 6, 2)),
    C(L.UpSampling2D, dict(size=(2, 3)), (2, 3, 4, 2), (None, 6, 12, 2)),
    C(L.UpSampling2D, dict(size=2, interpolation="bilinear"), (2, 3, 4, 2), (None, 6, 8, 2),
      unsupported={"tfjs": _BILINEAR}),
    C(L.UpSampling2D, dict(size=(2, 3), interpolation="bilinear"), (2, 3, 2, 2), (None, 6, 6, 2),
      unsupported={"tfjs": _BILINEAR}),
]

# 1-D (issue 16): TF.js has none of these three.
CASES += [
    C(L.ZeroPadding1D, {}, (2, 3, 2), (None, 5, 2), unsupported={"tfjs": "TF.js has no ZeroPadding1D"}),
    C(L.ZeroPadding1D, dict(padding=(0, 2)), (2, 3, 2), (None, 5, 2),
      unsupported={"tfjs": "TF.js has no ZeroPadding1D"}),
    C(L.Cropping1D, {}, (2, 5, 2), (None, 3, 2), unsupported={"tfjs": "TF.js has no Cropping1D"}),
    C(L.Cropping1D, dict(cropping=(2, 0)), (2, 5, 3), (None, 3, 3), unsupported={"tfjs": "TF.js has no Cropping1D"}),
    C(L.UpSampling1D, {}, (2, 3, 2), (None, 6, 2), unsupported={"tfjs": "TF.js has no UpSampling1D"}),
    C(L.UpSampling1D, dict(size=3), (2, 2, 3), (None, 6, 3), unsupported={"tfjs": "TF.js has no UpSampling1D"}),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_layer(case, tfjs_batch):
    case.run(tfjs_batch=tfjs_batch)


def test_save_tfjs_refuses_bilinear_upsampling(tfjs_agrees_or_refuses):
    tfjs_agrees_or_refuses(C(L.UpSampling2D, dict(size=2, interpolation="bilinear"), (2, 3, 4, 2)))


def test_save_tfjs_refuses_flatten_of_rank_2(tfjs_agrees_or_refuses):
    tfjs_agrees_or_refuses(C(L.Flatten, {}, (2, 3)))
