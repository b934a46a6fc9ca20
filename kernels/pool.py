"""Launchers of pool.cu: max and average pooling, NHWC, forward and backward.

Helpers shared with the other launchers are read from the package at each
call, and so is ``_POOL_WIDE_FROM``: tests replace them there.
"""
from __future__ import annotations

import math

from .. import kernels as K
from ..backends.base import _pair, conv_output_size
from .conv import _key
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


def _pool_plan(op, x_shape, pool_size, strides, padding):
    """(pooled shape, kernel name, geometry scalars, work items, largest array, C % 4 == 0) of pooling
    op "max_pool" / "avg_pool" + "_fwd" / "_bwd" on an input of ``x_shape``, worked out once per signature."""
    key = (op, x_shape, _key(pool_size), _key(strides), padding)
    p = K._plans.get(key)
    if p is None:
        g = _pool_geom(x_shape, pool_size, strides, padding)
        pooled = (int(g[0]), int(g[4]), int(g[5]), int(g[3]))
        size_in, size_out = math.prod(x_shape), math.prod(pooled)
        if op.endswith("_fwd"):
            name, work = f"dg_{op}", size_out
        elif _tiles(g):
            name, work = f"dg_{op}_tiles", _tile_work(g)
        else:
            name, work = f"dg_{op}", size_in
        p = K._plans[key] = (pooled, name, g, work, max(size_in, size_out), int(g[3]) % 4 == 0)
    return p


def _pool_launch(plan, arrays):
    """Launch a pooling kernel of ``plan`` (``_pool_plan``) over its work items (of one vector each).

    vec = 4 (16-byte accesses) when C % 4 == 0 and every pointer is aligned;
    wide = 1 (64-bit flat offsets) when an array holds 2^31 elements or more.
    """
    _, name, g, work, largest, c4 = plan
    wide = largest >= K._POOL_WIDE_FROM
    vec = 4 if not wide and c4 and K._aligned16(*arrays) else 1
    K._launch(name, K._grid_items(work // vec), (K.BLOCK,), tuple(arrays) + g + (K._FLAGS[vec], K._FLAGS[wide]))


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
    plan = _pool_plan("max_pool_fwd", x.shape, pool_size, strides, padding)
    out = K._output(K._xp(x), out, plan[0], "max_pool2d out")
    if out.size:
        _pool_launch(plan, (x, out))
    return out


def max_pool2d_grad(dy, x, pool_size=(2, 2), strides=None, padding="valid", out=None):
    """Gradient of max pooling: dy to the first maximum of each window (Backend.max_pool2d_grad)."""
    x, dy = K._check(x, "max_pool2d_grad x"), K._check(dy, "max_pool2d_grad dy")
    plan = _pool_plan("max_pool_bwd", x.shape, pool_size, strides, padding)
    K._check(dy, "max_pool2d_grad dy", plan[0])
    out = K._output(K._xp(x), out, x.shape, "max_pool2d_grad out")
    if out.size:
        _pool_launch(plan, (x, dy, out))
    return out


def avg_pool2d(x, pool_size=(2, 2), strides=None, padding="valid", out=None):
    """Average pooling, NHWC; padded cells are not counted (Backend.avg_pool2d)."""
    x = K._check(x, "avg_pool2d x")
    plan = _pool_plan("avg_pool_fwd", x.shape, pool_size, strides, padding)
    out = K._output(K._xp(x), out, plan[0], "avg_pool2d out")
    if out.size:
        _pool_launch(plan, (x, out))
    return out


def avg_pool2d_grad(dy, x_shape, pool_size=(2, 2), strides=None, padding="valid", out=None):
    """Gradient of average pooling: an array of ``x_shape`` (Backend.avg_pool2d_grad)."""
    dy = K._check(dy, "avg_pool2d_grad dy")
    x_shape = tuple(int(v) for v in x_shape)
    plan = _pool_plan("avg_pool_bwd", x_shape, pool_size, strides, padding)
    K._check(dy, "avg_pool2d_grad dy", plan[0])
    out = K._output(K._xp(dy), out, x_shape, "avg_pool2d_grad out")
    if out.size:
        _pool_launch(plan, (dy, out))
    return out
