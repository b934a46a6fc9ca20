"""Launchers of conv2d.cu: NHWC convolution forward and its two gradients, as implicit GEMMs.

The tiles are gemm.py's. The helpers of runtime.py are read from the package
at each call (tests replace some of them there).
"""
from __future__ import annotations

import math

import numpy as np

from .. import kernels as K
from ..backends.base import _pair, conv_output_size
from .gemm import GEMM_TILES, _gemm_grid, _kname, _split, _threads
from .runtime import register

CONV_TILES = ("128x128", "128x64", "128x32", "64x64", "32x32")

register("conv2d.cu", tuple(_kname(f"dg_conv2d_{op}", t) for op in ("fwd", "grad_input", "grad_filter")
                            for t in CONV_TILES) + ("dg_conv2d_sum_splits",))


def _key(v):
    return v if type(v) is tuple or v is None or isinstance(v, (int, str)) else tuple(v)


def _conv_geom(x_shape, k_shape, strides, padding, dilation):
    n, h, w, c = x_shape
    kh, kw, c2, o = k_shape
    if c != c2:
        raise ValueError(f"conv2d: input has {c} channels but the kernel expects {c2}")
    sh, sw = _pair(strides, "strides")
    dh, dw = _pair(dilation, "dilation_rate")
    ho, ph = conv_output_size(h, kh, sh, dh, padding)
    wo, pw = conv_output_size(w, kw, sw, dw, padding)
    for size in (n * h * w * c, n * ho * wo * o, kh * kw * c * o):  # flat indices the kernels form in int
        K._i32(size)
    return tuple(K._i32(v) for v in (n, h, w, c, o, kh, kw, sh, sw, ph[0], pw[0], dh, dw, ho, wo))


def _conv_tile(rows, cols, sm, tile):
    """The tile of a convolution GEMM: 128x32 for up to 32 channels, 64x64 for up to 64
    (measured faster than 128x64 there), 128x128 above; smaller while there are
    fewer tiles than SMs."""
    if tile is None:
        for tile in ("128x32" if cols <= 32 else "64x64" if cols <= 64 else "128x128", "64x64", "32x32"):
            bm, bn = GEMM_TILES[tile][:2]
            if -(-rows // bm) * -(-cols // bn) >= sm:
                break
    if tile not in CONV_TILES:
        raise ValueError(f"conv2d: tile {tile!r} is not one of {CONV_TILES}")
    return tile


def _conv_plan(xp, op, x_shape, k_shape, strides, padding, dilation, tile, splits=None, activation=None,
               bias_row=False, dy_shape=None):
    """(output shape, kernel, grid, block, scalars, (vec A, vec B, vec C) by shape, split sums, fixed flags);
    split sums: None, or the partial sums' shape and dg_conv2d_sum_splits's grid and scalars.

    activation: the forward's fused one. bias_row (filter gradient): the output is [kh*kw*C + 1, O], its
    last row the bias gradient. dy_shape (the gradients): checked against the forward's output shape.
    """
    g = _conv_geom(x_shape, k_shape, strides, padding, dilation)
    n, h, w, c, o, kh, kw, ho, wo = (int(g[i]) for i in (0, 1, 2, 3, 4, 5, 6, 13, 14))
    if dy_shape is not None and tuple(dy_shape) != (n, ho, wo, o):
        raise ValueError(f"conv2d_{op}: dy has shape {dy_shape}, expected {(n, ho, wo, o)}")
    sm = K._sm_count(xp)
    if op == "fwd":
        rows, cols, shape, vec = n * ho * wo, o, (n, ho, wo, o), (c % 4 == 0, o % 4 == 0, o % 4 == 0)
    elif op == "grad_input":
        rows, cols, shape, vec = n * h * w, c, tuple(x_shape), (o % 4 == 0, o % 4 == 0, c % 4 == 0)
    else:
        rows, cols, vec = kh * kw * c + bias_row, o, (c % 4 == 0, o % 4 == 0, o % 4 == 0)
        shape = (rows, o) if bias_row else tuple(k_shape)
    if c == 0 and o and n * ho * wo and (op == "fwd" or bias_row):
        # act(bias) of an empty sum, or a bias gradient beside an empty filter one: the backend's generic
        # path computes them (CupyBackend routes them there); the tiles' indexing divides by C.
        raise ValueError(f"conv2d_{op}: an input of 0 channels ({tuple(x_shape)}) is not launched")
    if not math.prod(shape) or (op == "grad_input" and o == 0) or (op == "grad_filter" and n * ho * wo == 0):
        # Nothing to write, or zeros (an empty sum): no launch; the tiles would load from empty operands.
        return shape, None, None, None, None, vec, None, 0
    if op != "grad_filter":
        tile = _conv_tile(rows, cols, sm, tile)
        extra = (K._act(activation),) if op == "fwd" else ()
        return shape, _kname(f"dg_conv2d_{op}", tile), _gemm_grid(rows, cols, 1, tile), _threads(tile), \
            g + extra, vec, None, 0
    if tile is None:
        # A 128-row tile would be mostly padding below 64 rows; the reduction is split to fill the GPU.
        tile = "32x32" if rows <= 64 else "128x32" if o <= 32 else "64x64" if o <= 64 else "128x128"
    tile = _conv_tile(rows, cols, sm, tile)
    bk, total = GEMM_TILES[tile][2], n * ho * wo
    grid = _gemm_grid(rows, cols, 1, tile)
    if splits is None:
        # About four blocks per SM, each at least 16 k-steps: more makes the partial sums cost more than they save.
        splits = max(1, min(4 * sm // (grid[0] * grid[1]), total // (16 * bk), 512))
    chunk, splits = _split(total, splits, bk)
    size = math.prod(shape)
    sums = ((splits,) + shape, (-(-size // 32),), (np.int32(splits), K._i32(size))) if splits > 1 else None
    return shape, _kname("dg_conv2d_grad_filter", tile), grid[:2] + (splits,), _threads(tile), \
        g + (K._i32(chunk),), vec, sums, 8 * bias_row


def _conv_launch(xp, key, args, arrays, out, what, a=0, b=1, ym=None):
    """Plan (cached) and launch one convolution kernel; arrays[a] and arrays[b] are its GEMM's A and
    B operands, ym (a gradient's relu mask, or None) is read beside dy, so as dy's operand."""
    p = K._plans.get(key)
    if p is None:
        p = K._plans[key] = _conv_plan(xp, *args)
    shape, name, grid, block, scalars, vec, sums, fixed = p
    out = K._output(xp, out, shape, what)
    if out.size == 0:
        return out
    if name is None:
        out.fill(0)
        return out
    dst = out if sums is None else xp.empty(sums[0], np.float32)
    flags = (fixed | (vec[0] and K._ptr(arrays[a]) % 16 == 0) | 2 * (vec[1] and K._ptr(arrays[b]) % 16 == 0)
             | 4 * (vec[2] and K._ptr(dst) % 16 == 0))
    if ym is not None and K._ptr(ym) % 16:
        flags &= ~1 if args[0] == "grad_input" else ~2  # dy is A of grad_input, B of grad_filter
    K._launch(name, grid, block, arrays + (dst,) + scalars + (K._FLAGS[flags],))
    if sums is not None:
        K._launch("dg_conv2d_sum_splits", sums[1], (32, 8), (dst, out) + sums[2])
    return out


def conv2d(x, k, strides=(1, 1), padding="valid", dilation=(1, 1), bias=None, activation=None, out=None,
           *, tile=None):
    """NHWC convolution as Backend.conv2d, with an optional fused ``act(. + bias)`` epilogue.

    x [N, H, W, C], k [kh, kw, C, O], bias [O] or None -> [N, Ho, Wo, O].
    ``tile`` (a name of CONV_TILES) overrides the choice made per shape.
    """
    xp = K._xp(x)
    x, k = K._check(x, "conv2d x"), K._check(k, "conv2d kernel")
    if bias is not None:
        bias = K._check(bias, "conv2d bias", (k.shape[3],))
    key = ("fwd", x.shape, k.shape, _key(strides), padding, _key(dilation), tile, activation, K._sm_count(xp))
    return _conv_launch(xp, key, ("fwd", x.shape, k.shape, strides, padding, dilation, tile, None, activation),
                        (x, k, bias), out, "conv2d out")


def _relu_out(ym, dy, what):
    """The relu output that masks dy (or None), checked against dy's shape."""
    return None if ym is None else K._check(ym, what, dy.shape)


def conv2d_grad_input(dy, k, x_shape, strides=(1, 1), padding="valid", dilation=(1, 1), out=None, *,
                      tile=None, relu_out=None):
    """Gradient of conv2d with respect to its input, as Backend.conv2d_grad_input.

    relu_out: None, or the forward's output y of a fused ReLU: dy is then read as
    ``dy * (y > 0)`` (the gradient through the ReLU) in the same launch.
    """
    xp = K._xp(dy)
    dy, k = K._check(dy, "conv2d_grad_input dy"), K._check(k, "conv2d_grad_input kernel")
    ym = _relu_out(relu_out, dy, "conv2d_grad_input relu_out")
    x_shape = tuple(map(int, x_shape))
    key = ("grad_input", x_shape, k.shape, dy.shape, _key(strides), padding, _key(dilation), tile, K._sm_count(xp))
    return _conv_launch(xp, key, ("grad_input", x_shape, k.shape, strides, padding, dilation, tile, None, None,
                                  False, dy.shape), (dy, ym, k), out, "conv2d_grad_input out", 0, 2, ym)


def conv2d_grad_filter(x, dy, k_shape, strides=(1, 1), padding="valid", dilation=(1, 1), out=None, *,
                       tile=None, splits=None, relu_out=None, with_bias=False):
    """Gradient of conv2d with respect to the kernel, as Backend.conv2d_grad_filter.

    The reduction over N*Ho*Wo is split over enough blocks to fill the GPU
    (about four per SM); the partial sums go to a work buffer and one more
    launch adds them (deterministic, no atomics). ``tile`` and ``splits``
    override the choice made per shape. relu_out: as conv2d_grad_input's.
    with_bias: also the bias gradient (dy's sum over N, Ho, Wo) from the same
    launches, as a row of ones below im2col; returns (dk, db) then, views of
    one [kh*kw*C + 1, O] array (``out``'s shape when given).
    """
    xp = K._xp(x)
    x, dy = K._check(x, "conv2d_grad_filter x"), K._check(dy, "conv2d_grad_filter dy")
    ym = _relu_out(relu_out, dy, "conv2d_grad_filter relu_out")
    k_shape = tuple(map(int, k_shape))
    with_bias = bool(with_bias)
    key = ("grad_filter", x.shape, k_shape, dy.shape, _key(strides), padding, _key(dilation), tile, splits,
           K._sm_count(xp), with_bias)
    out = _conv_launch(xp, key, ("grad_filter", x.shape, k_shape, strides, padding, dilation, tile, splits, None,
                                 with_bias, dy.shape), (x, dy, ym), out, "conv2d_grad_filter out", 0, 1, ym)
    if not with_bias:
        return out
    taps = out.shape[0] - 1
    return out[:taps].reshape(k_shape), out[taps]
