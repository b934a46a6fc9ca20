"""Differentiable 3-D convolution and pooling over NDHWC tensors (re-exported by ``deepgpu.ops``).

Each op is one backend primitive forward and one (or two) backward; the generic
primitives (backends/conv3d.py) run the 3-D convolution through the backend's 2-D one.
"""
from __future__ import annotations

import builtins

from .autograd import register_gradient
from .backends.base import conv_output_size
from .backends.conv3d import triple
from .ops import _backend_of, _make, _promote, _t, cast, _is_float


def _conv3d_args(strides, padding, dilation_rate):
    padding = padding.lower() if isinstance(padding, str) else padding
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    s, d = triple(strides, "strides"), triple(dilation_rate, "dilation_rate")
    if builtins.max(s) > 1 and builtins.max(d) > 1:
        raise ValueError("strides > 1 together with dilation_rate > 1 is not supported (as in TF)")
    return s, padding, d


def conv3d(x, kernel, strides=1, padding="valid", dilation_rate=1):
    """3-D convolution. x: [N, D, H, W, C], kernel: [kd, kh, kw, C, O] -> [N, Do, Ho, Wo, O].

    ValueError when the ranks or channels differ or the window does not fit the input.
    """
    B = _backend_of(x, kernel)
    x, kernel = _promote(_t(x, B), _t(kernel, B))
    s, p, d = _conv3d_args(strides, padding, dilation_rate)
    B.conv3d_geometry(x.shape, kernel.shape, s, p, d)
    y = B.conv3d(x.data, kernel.data, s, p, d)
    return _make("conv3d", y, (x, kernel), B, s=s, p=p, d=d)


@register_gradient("conv3d")
def _conv3d_grad(node, dy):
    x, k = node.inputs
    B, a = node.B, node.attrs
    gx = B.conv3d_grad_input(dy, k.data, x.shape, a["s"], a["p"], a["d"]) if x.requires_grad else None
    gk = B.conv3d_grad_filter(x.data, dy, k.shape, a["s"], a["p"], a["d"]) if k.requires_grad else None
    return gx, gk


def conv3d_transpose(x, kernel, output_shape, strides=1, padding="valid", dilation_rate=1):
    """Transposed 3-D convolution (the gradient of conv3d with respect to its input).

    x: [N, D, H, W, C], kernel: [kd, kh, kw, O, C] as in Keras's Conv3DTranspose;
    output_shape [N, Do, Ho, Wo, O] must map back to x's shape under conv3d (ValueError otherwise).
    """
    B = _backend_of(x, kernel)
    x, kernel = _promote(_t(x, B), _t(kernel, B))
    s, p, d = _conv3d_args(strides, padding, dilation_rate)
    if x.ndim != 5 or kernel.ndim != 5 or kernel.shape[4] != x.shape[4]:
        raise ValueError(f"conv3d_transpose: input {x.shape} does not fit kernel {kernel.shape} "
                         f"[kd, kh, kw, out, in]")
    output_shape = tuple(int(v) for v in output_shape)
    k_fwd = tuple(kernel.shape[:3]) + (kernel.shape[3], kernel.shape[4])
    out, _ = B.conv3d_geometry(output_shape, k_fwd, s, p, d)
    if out != tuple(x.shape[1:4]):
        raise ValueError(f"conv3d_transpose: output_shape {output_shape} does not map back to input {x.shape}")
    y = B.conv3d_grad_input(x.data, kernel.data, output_shape, s, p, d)
    return _make("conv3d_transpose", y, (x, kernel), B, s=s, p=p, d=d)


@register_gradient("conv3d_transpose")
def _conv3d_transpose_grad(node, dy):
    x, k = node.inputs
    B, a = node.B, node.attrs
    gx = B.conv3d(dy, k.data, a["s"], a["p"], a["d"]) if x.requires_grad else None
    gk = B.conv3d_grad_filter(dy, x.data, k.shape, a["s"], a["p"], a["d"]) if k.requires_grad else None
    return gx, gk


def _pool3d_args(x, pool_size, strides, padding):
    padding = padding.lower() if isinstance(padding, str) else padding
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    ps = triple(pool_size, "pool_size")
    st = ps if strides is None else triple(strides, "strides")
    if x.ndim != 5:
        raise ValueError(f"3-D pooling expects a 5-D NDHWC input, got shape {x.shape}")
    try:
        for i in range(3):
            conv_output_size(x.shape[1 + i], ps[i], st[i], 1, padding)
    except ValueError as e:
        raise ValueError(f"3-D pooling: {e} (input shape {x.shape}, pool_size {ps})") from None
    return ps, st, padding


def max_pool3d(x, pool_size=2, strides=None, padding="valid"):
    """Max pooling over NDHWC windows; strides default to the pool size."""
    B = _backend_of(x)
    x = _t(x, B)
    ps, st, p = _pool3d_args(x, pool_size, strides, padding)
    y = B.max_pool3d(x.data, ps, st, p)
    return _make("max_pool3d", y, (x,), B, saved=y, ps=ps, st=st, p=p)


@register_gradient("max_pool3d")
def _max_pool3d_grad(node, dy):
    a = node.attrs
    return (node.B.max_pool3d_grad(dy, node.inputs[0].data, node.saved, a["ps"], a["st"], a["p"]),)


def avg_pool3d(x, pool_size=2, strides=None, padding="valid"):
    """Average pooling over NDHWC windows (padded cells are not counted)."""
    B = _backend_of(x)
    x = _t(x, B)
    if not _is_float(x.dtype):
        x = cast(x, "float32")
    ps, st, p = _pool3d_args(x, pool_size, strides, padding)
    y = B.avg_pool3d(x.data, ps, st, p)
    return _make("avg_pool3d", y, (x,), B, ps=ps, st=st, p=p)


@register_gradient("avg_pool3d")
def _avg_pool3d_grad(node, dy):
    a = node.attrs
    return (node.B.avg_pool3d_grad(dy, node.inputs[0].shape, a["ps"], a["st"], a["p"]),)
