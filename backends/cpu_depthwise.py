"""The CPU backend's depthwise convolution on the C kernels of ``kernels/cpu_depthwise.c``.

Each function takes the backend (for its geometry check and its threads) and the loaded
library; float32, C-contiguous operands. The padding is never stored: the kernels skip the
taps that fall outside the input.
"""
from __future__ import annotations

import numpy as np

from .base import _pair


def _geometry(B, x_shape, k_shape, strides, padding, dilation):
    ho, wo, ph, pw = B.depthwise_geometry(x_shape, k_shape, strides, padding, dilation)
    (sh, sw), (dh, dw) = _pair(strides, "strides"), _pair(dilation, "dilation_rate")
    n, h, w, c = x_shape
    kh, kw, _, m = k_shape
    return n, ho, (h, w, c, m, kh, kw, ho, wo, sh, sw, dh, dw, ph[0], pw[0])


# The C kernel's activation codes (its epilogue).
ACTS = {None: 0, "linear": 0, "relu": 1, "relu6": 2}


def forward(B, lib, x, k, strides, padding, dilation, b=None, activation=None):
    """act(depthwise(x, k) + b) [N, Ho, Wo, C*M] (b [C*M] or None; activation a key of ``ACTS``),
    split over the n*Ho output rows; bias and activation are applied as each output is stored."""
    n, ho, geo = _geometry(B, x.shape, k.shape, strides, padding, dilation)
    x, k = np.ascontiguousarray(x), np.ascontiguousarray(k)
    bc = None if b is None else np.ascontiguousarray(b)  # held: the kernel reads it through a pointer
    bp = None if bc is None else bc.ctypes.data
    act = ACTS[activation]
    y = np.empty((n, ho, geo[7], geo[2] * geo[3]), np.float32)
    B._parallel(n * ho, lambda r0, r1: lib.dg_dw_fwd(x.ctypes.data, k.ctypes.data, bp, y.ctypes.data, *geo, r0, r1,
                                                     act), y.nbytes + x.nbytes)
    return y


def grad_input(B, lib, dy, k, x_shape, strides, padding, dilation):
    """dx [N, H, W, C], split over the n*H input rows (each gathers from the outputs that read it)."""
    n, _, geo = _geometry(B, x_shape, k.shape, strides, padding, dilation)
    dy, k = np.ascontiguousarray(dy, np.float32), np.ascontiguousarray(k)
    dx = np.empty(tuple(x_shape), np.float32)
    B._parallel(n * x_shape[1], lambda r0, r1: lib.dg_dw_grad_input(dy.ctypes.data, k.ctypes.data, dx.ctypes.data,
                                                                    *geo, r0, r1), dx.nbytes + dy.nbytes)
    return dx


def grad_filter(B, lib, x, dy, k_shape, strides, padding, dilation):
    """dk [kh, kw, C, M]: each part of the n*Ho output rows sums into its own buffer, added up here."""
    n, ho, geo = _geometry(B, x.shape, k_shape, strides, padding, dilation)
    x, dy = np.ascontiguousarray(x), np.ascontiguousarray(dy, np.float32)
    parts = []

    def run(r0, r1):
        part = np.zeros(tuple(k_shape), np.float32)
        lib.dg_dw_grad_filter(x.ctypes.data, dy.ctypes.data, part.ctypes.data, *geo, r0, r1)
        parts.append(part)  # list.append is atomic: the threads need no lock

    B._parallel(n * ho, run, x.nbytes + dy.nbytes)
    return parts[0] if len(parts) == 1 else np.sum(parts, axis=0, dtype=np.float32)
