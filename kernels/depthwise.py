"""Launchers of depthwise.cu: depthwise convolution, NHWC, forward and both gradients.

Helpers shared with the other launchers are read from the package at each call (tests replace
them there), and so is ``_DW_WIDE_FROM``.
"""
from __future__ import annotations

import numpy as np

from .. import kernels as K
from ..backends.base import _pair, conv_output_size
from .runtime import register

register("depthwise.cu", ("dg_dw_fwd", "dg_dw_grad_input", "dg_dw_grad_filter_part", "dg_dw_grad_filter_sum"))

# Array size from which the kernels index in 64 bits; tests lower it on the package.
_DW_WIDE_FROM = 2**31
_DW_QB, _DW_LANES = 32, 8       # the filter gradient's block: 32 channels x 8 pixel lanes
_DW_PIXELS_PER_PART = 4096      # pixels one block of the filter gradient sums at least, before splitting


def _dw_geom(x_shape, k_shape, strides, padding, dilation):
    n, h, w, c = x_shape
    kh, kw, kc, m = k_shape
    if kc != c:
        raise ValueError(f"depthwise_conv2d: input has {c} channels but the kernel expects {kc}")
    sh, sw = _pair(strides, "strides")
    dh, dw = _pair(dilation, "dilation_rate")
    ho, ph = conv_output_size(h, kh, sh, dh, padding)
    wo, pw = conv_output_size(w, kw, sw, dw, padding)
    return tuple(K._i32(v) for v in (n, h, w, c, m, kh, kw, ho, wo, sh, sw, dh, dw, ph[0], pw[0]))


def _out_shape(g):
    return (int(g[0]), int(g[7]), int(g[8]), int(g[3]) * int(g[4]))


def _wide(*sizes):
    return np.int32(max(sizes) >= K._DW_WIDE_FROM)


def depthwise_conv2d(x, k, strides=(1, 1), padding="valid", dilation=(1, 1), out=None, *, bias=None,
                     activation=None):
    """[N, Ho, Wo, C*M] from x [N, H, W, C] and k [kh, kw, C, M] (Backend.depthwise_conv2d), with
    an optional fused ``activation(. + bias)`` epilogue (bias [C*M]; activation a key of
    ``ACTIVATIONS``) as Backend.depthwise_conv2d_bias_act: one launch."""
    x, k = K._check(x, "depthwise_conv2d x"), K._check(k, "depthwise_conv2d kernel")
    g = _dw_geom(x.shape, k.shape, strides, padding, dilation)
    if bias is not None:
        bias = K._check(bias, "depthwise_conv2d bias", (int(g[3]) * int(g[4]),))
    act = K._act(activation)
    out = K._output(K._xp(x), out, _out_shape(g), "depthwise_conv2d out")
    if out.size:
        K._launch("dg_dw_fwd", K._grid_items(out.size), (K.BLOCK,),
                  (x, k, bias, out) + g + (act, _wide(x.size, out.size)))
    return out


def depthwise_conv2d_grad_input(dy, k, x_shape, strides=(1, 1), padding="valid", dilation=(1, 1), out=None):
    """dx of ``x_shape`` (Backend.depthwise_conv2d_grad_input), gathered per input element."""
    k = K._check(k, "depthwise_conv2d_grad_input kernel")
    g = _dw_geom(tuple(x_shape), k.shape, strides, padding, dilation)
    dy = K._check(dy, "depthwise_conv2d_grad_input dy", _out_shape(g))
    out = K._output(K._xp(dy), out, tuple(x_shape), "depthwise_conv2d_grad_input out")
    if out.size:
        K._launch("dg_dw_grad_input", K._grid_items(out.size), (K.BLOCK,),
                  (dy, k, out) + g + (_wide(out.size, dy.size),))
    return out


def depthwise_conv2d_grad_filter(x, dy, k_shape, strides=(1, 1), padding="valid", dilation=(1, 1), out=None):
    """dk [kh, kw, C, M] (Backend.depthwise_conv2d_grad_filter): partial sums over S parts of the
    pixels (enough blocks for the device), then one launch adds them up."""
    x = K._check(x, "depthwise_conv2d_grad_filter x")
    g = _dw_geom(x.shape, tuple(k_shape), strides, padding, dilation)
    dy = K._check(dy, "depthwise_conv2d_grad_filter dy", _out_shape(g))
    xp = K._xp(x)
    out = K._output(xp, out, tuple(k_shape), "depthwise_conv2d_grad_filter out")
    n, ho, wo, cm = _out_shape(g)
    if not out.size:  # 0 channels or multiplier: nothing to write (and no blocks to split the pixels over)
        return out
    taps, pixels = int(g[5]) * int(g[6]), n * ho * wo
    qblocks = -(-cm // _DW_QB)
    # Split the pixels until the device has about 4 blocks per multiprocessor, each summing
    # at least _DW_PIXELS_PER_PART pixels; at most 65535 (gridDim.z).
    want = -(-4 * K._sm_count(xp) // (qblocks * taps))
    parts = max(1, min(want, pixels // _DW_PIXELS_PER_PART, 65535))
    part = out if parts == 1 else xp.empty((parts,) + tuple(k_shape), np.float32)
    K._launch("dg_dw_grad_filter_part", (qblocks, taps, parts), (_DW_QB * _DW_LANES,), (x, dy, part) + g)
    if parts > 1:
        K._launch("dg_dw_grad_filter_sum", K._grid1d(out.size), (K.BLOCK,),
                  (part, out, K._i32(out.size), np.int32(parts)))
    return out
