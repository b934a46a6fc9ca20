"""Launchers of image.cu: the projective image transform (NHWC) and its gradient for the images.

Helpers shared with the other launchers are read from the package at each call (tests replace
them there), and so is ``_IT_WIDE_FROM``.
"""
from __future__ import annotations

import numpy as np

from .. import kernels as K
from .runtime import register

register("image.cu", ("dg_image_transform", "dg_image_transform_grad"))

# The codes image.cu reads; the names are Backend.image_transform's.
INTERPOLATIONS = {"nearest": 0, "bilinear": 1}
FILL_MODES = {"constant": 0, "nearest": 1, "reflect": 2, "wrap": 3}
# Array size from which the kernels index in 64 bits; tests lower it on the package.
_IT_WIDE_FROM = 2**31


def _codes(interpolation, fill_mode):
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
    if fill_mode not in FILL_MODES:
        raise ValueError(f"fill_mode must be one of {tuple(FILL_MODES)}, got {fill_mode!r}")
    return np.int32(INTERPOLATIONS[interpolation]), np.int32(FILL_MODES[fill_mode])


def _args(x_shape, transforms, out_h, out_w, interpolation, fill_mode, what):
    """(transform rows, the kernels' size arguments from N to the row stride, the two codes)."""
    n, h, w, c = (int(d) for d in x_shape)
    t = K._check(transforms, f"{what} transforms")
    if t.ndim != 2 or t.shape[1] != 8 or t.shape[0] not in (1, n):
        raise ValueError(f"{what}: transforms must have 1 or {n} rows of 8, got shape {tuple(t.shape)}")
    sizes = tuple(K._i32(v) for v in (n, h, w, c, out_h, out_w)) + (np.int32(0 if t.shape[0] == 1 else 8),)
    return t, sizes, _codes(interpolation, fill_mode)


def _wide(*sizes):
    return np.int32(max(sizes) >= K._IT_WIDE_FROM)


def image_transform(x, transforms, out_h, out_w, interpolation="bilinear", fill_mode="constant", fill_value=0.0,
                    out=None):
    """[N, out_h, out_w, C] from x [N, H, W, C] and float32 rows [N or 1, 8] (Backend.image_transform):
    one launch."""
    x = K._check(x, "image_transform x")
    t, sizes, codes = _args(x.shape, transforms, out_h, out_w, interpolation, fill_mode, "image_transform")
    shape = (x.shape[0], int(out_h), int(out_w), x.shape[3])
    out = K._output(K._xp(x), out, shape, "image_transform out")
    if out.size:
        K._launch("dg_image_transform", K._grid_items(out.size), (K.BLOCK,),
                  (x, t, out) + sizes + codes + (K._f32(fill_value), _wide(x.size, out.size)))
    return out


def image_transform_grad(dy, x_shape, transforms, interpolation="bilinear", fill_mode="constant", out=None):
    """dx of ``x_shape`` (Backend.image_transform_grad): zeroed, then one launch adds each dy element
    into its taps."""
    x_shape = tuple(int(d) for d in x_shape)
    dy = K._check(dy, "image_transform_grad dy")
    if dy.ndim != 4 or (dy.shape[0], dy.shape[3]) != (x_shape[0], x_shape[3]):
        raise ValueError(f"image_transform_grad: dy of shape {tuple(dy.shape)} does not fit images of shape "
                         f"{x_shape}")
    t, sizes, codes = _args(x_shape, transforms, dy.shape[1], dy.shape[2], interpolation, fill_mode,
                            "image_transform_grad")
    out = K._output(K._xp(dy), out, x_shape, "image_transform_grad out")
    out.fill(0.0)
    if dy.size and out.size:
        K._launch("dg_image_transform_grad", K._grid_items(dy.size), (K.BLOCK,),
                  (dy, t, out) + sizes + codes + (_wide(dy.size, out.size),))
    return out
