"""Launchers of pool.cu: max and average pooling, NHWC, forward and backward.

Helpers shared with the other launchers are read from the package at each
call, and so is ``_POOL_WIDE_FROM``: tests replace them there.
"""
from __future__ import annotations

import numpy as np

from .. import kernels as K
from ..backends.base import _pair, conv_output_size
from .runtime import register

register("pool.cu", ("dg_max_pool_fwd", "dg_max_pool_bwd", "dg_max_pool_bwd_tiles", "dg_avg_pool_fwd",
                     "dg_avg_pool_bwd", "dg_avg_pool_bwd_tiles"))


def _pool_geom(x_shape, pool_size, strides, padding):
    n, h, w, c = x_shape
    kh, kw = _pair(pool_size, "pool_size")
    sh, sw = _pair(strides if strides is not None else pool_size, "strides")
    ho, ph = conv_output_size(h, kh, sh, 1, padding)
    wo, pw = conv_output_size(w, kw, sw, 1, padding)
    return tuple(K._i32(v) for v in (n, h, w, c, ho, wo, kh, kw, sh, sw, ph[0], pw[0]))


# Array size from which the pooling kernels index in 64 bits. Tests lower it on
# the package, which is where _pool_launch reads it.
_POOL_WIDE_FROM = 2**31


def _pool_launch(name, g, sizes, arrays, work):
    """Launch pooling kernel ``name`` over ``work`` elements (items x channels of one vector).

    vec = 4 (16-byte accesses) when C % 4 == 0 and every pointer is aligned;
    wide = 1 (64-bit flat offsets) when an array holds 2^31 elements or more.
    """
    wide = max(sizes) >= K._POOL_WIDE_FROM
    vec = 4 if not wide and int(g[3]) % 4 == 0 and K._aligned16(*arrays) else 1
    K._launch(name, K._grid_items(work // vec), (K.BLOCK,), tuple(arrays) + g + (np.int32(vec), np.int32(wide)))


def _tiles(g):
    """Windows tile the input (stride == window, no padding before): each input cell has <= 1 window."""
    kh, kw, sh, sw, pt, pl = (int(v) for v in g[6:])
    return (sh, sw, pt, pl) == (kh, kw, 0, 0)


def _tile_work(g):
    n, h, w, c, kh, kw = (int(g[i]) for i in (0, 1, 2, 3, 6, 7))
    return n * -(-h // kh) * -(-w // kw) * c


def max_pool2d(x, pool_size=(2, 2), strides=None, padding="valid", out=None):
    """Max pooling, NHWC, as Backend.max_pool2d."""
    x = K._check(x, "max_pool2d x")
    g = _pool_geom(x.shape, pool_size, strides, padding)
    out = K._output(K._xp(x), out, (int(g[0]), int(g[4]), int(g[5]), int(g[3])), "max_pool2d out")
    if out.size:
        _pool_launch("dg_max_pool_fwd", g, (x.size, out.size), (x, out), out.size)
    return out


def max_pool2d_grad(dy, x, pool_size=(2, 2), strides=None, padding="valid", out=None):
    """Gradient of max pooling: dy to the first maximum of each window (Backend.max_pool2d_grad)."""
    x, dy = K._check(x, "max_pool2d_grad x"), K._check(dy, "max_pool2d_grad dy")
    g = _pool_geom(x.shape, pool_size, strides, padding)
    K._check(dy, "max_pool2d_grad dy", (int(g[0]), int(g[4]), int(g[5]), int(g[3])))
    out = K._output(K._xp(x), out, x.shape, "max_pool2d_grad out")
    if out.size:
        if _tiles(g):
            _pool_launch("dg_max_pool_bwd_tiles", g, (x.size, dy.size), (x, dy, out), _tile_work(g))
        else:
            _pool_launch("dg_max_pool_bwd", g, (x.size, dy.size), (x, dy, out), out.size)
    return out


def avg_pool2d(x, pool_size=(2, 2), strides=None, padding="valid", out=None):
    """Average pooling, NHWC; padded cells are not counted (Backend.avg_pool2d)."""
    x = K._check(x, "avg_pool2d x")
    g = _pool_geom(x.shape, pool_size, strides, padding)
    out = K._output(K._xp(x), out, (int(g[0]), int(g[4]), int(g[5]), int(g[3])), "avg_pool2d out")
    if out.size:
        _pool_launch("dg_avg_pool_fwd", g, (x.size, out.size), (x, out), out.size)
    return out


def avg_pool2d_grad(dy, x_shape, pool_size=(2, 2), strides=None, padding="valid", out=None):
    """Gradient of average pooling: an array of ``x_shape`` (Backend.avg_pool2d_grad)."""
    dy = K._check(dy, "avg_pool2d_grad dy")
    g = _pool_geom(tuple(x_shape), pool_size, strides, padding)
    K._check(dy, "avg_pool2d_grad dy", (int(g[0]), int(g[4]), int(g[5]), int(g[3])))
    out = K._output(K._xp(dy), out, tuple(x_shape), "avg_pool2d_grad out")
    if out.size:
        if _tiles(g):
            _pool_launch("dg_avg_pool_bwd_tiles", g, (out.size, dy.size), (dy, out), _tile_work(g))
        else:
            _pool_launch("dg_avg_pool_bwd", g, (out.size, dy.size), (dy, out), out.size)
    return out
