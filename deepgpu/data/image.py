"""Image resizing on deepgpu Tensors (NHWC), on any backend, differentiable.

Built from deepgpu ops only: bilinear is two small matmuls with
interpolation matrices, nearest neighbour two gathers. NumPy here only
computes those matrices and indices from the sizes (host index math); it
never touches the image data. Reached as ``deepgpu.preprocessing``.
"""
from __future__ import annotations

import numpy as np

from .. import ops
from ..tensor import Tensor, tensor

__all__ = ["resize_bilinear", "resize_nearest_neighbor"]



def _images(images, op):
    t = images if isinstance(images, Tensor) else tensor(images)
    if t.ndim not in (3, 4):
        raise ValueError(f"{op}: images must be [N, H, W, C] or [H, W, C], got shape {t.shape}")
    return t


def _size(size, op):
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"{op}: size must be (height, width), got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"{op}: size must be positive, got {size!r}")
    return h, w


def _scale(n_in, n_out, align_corners):
    if align_corners and n_out > 1:
        return (n_in - 1) / (n_out - 1)
    return n_in / n_out


def _bilinear_matrix(n_in, n_out, align_corners, half_pixel_centers):
    """[n_out, n_in] weights of TF's ResizeBilinear along one axis (host index math)."""
    scale = _scale(n_in, n_out, align_corners)
    o = np.arange(n_out, dtype=np.float64)
    src = (o + 0.5) * scale - 0.5 if half_pixel_centers else o * scale
    lo_f = np.floor(src)
    lerp = src - lo_f
    lo = np.clip(lo_f, 0, n_in - 1).astype(np.int64)
    hi = np.clip(np.ceil(src), 0, n_in - 1).astype(np.int64)
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1 - lerp)
    np.add.at(m, (np.arange(n_out), hi), lerp)
    return m


def _nearest_index(n_in, n_out, align_corners, half_pixel_centers):
    """Source index of each output row/column, as TF's ResizeNearestNeighbor picks it."""
    scale = _scale(n_in, n_out, align_corners)
    o = np.arange(n_out, dtype=np.float64)
    src = (o + 0.5) * scale if half_pixel_centers else o * scale
    # TF rounds half away from zero with align_corners (roundf), else floors.
    idx = np.floor(src + 0.5) if align_corners else np.floor(src)
    return np.clip(idx, 0, n_in - 1).astype(np.int32)


def _check_modes(align_corners, half_pixel_centers, op):
    if align_corners and half_pixel_centers:
        raise ValueError(f"{op}: align_corners=True needs half_pixel_centers=False (as in TF)")


def resize_bilinear(images, size, align_corners=False, half_pixel_centers=True):
    """Bilinear resize of NHWC images to ``size = (height, width)``, as
    ``tf.image.resize(images, size, "bilinear")`` (half_pixel_centers=True;
    ``align_corners`` / legacy modes as TF.js ``resizeBilinear``).

    images: Tensor (or array) [N, H, W, C] or [H, W, C]. Returns a float
    Tensor on the same backend (float32 for integer input), differentiable
    with respect to ``images``. Computed as two small matmuls with
    interpolation matrices built once per call.
    """
    op = "resize_bilinear"
    _check_modes(align_corners, half_pixel_centers, op)
    x = _images(images, op)
    oh, ow = _size(size, op)
    squeeze = x.ndim == 3
    if squeeze:
        x = ops.expand_dims(x, 0)
    n, h, w, c = x.shape
    dt = x.dtype if x.dtype.startswith("float") else "float32"
    if x.dtype != dt:
        x = ops.cast(x, dt)
    my = tensor(_bilinear_matrix(h, oh, align_corners, half_pixel_centers), dt, backend=x.backend)
    mx = tensor(_bilinear_matrix(w, ow, align_corners, half_pixel_centers), dt, backend=x.backend)
    # Along W: [OW, W] @ [N*H, W, C] -> [N*H, OW, C]; along H: [OH, H] @ [N, H, OW*C].
    y = ops.matmul(mx, ops.reshape(x, (n * h, w, c)))
    y = ops.matmul(my, ops.reshape(y, (n, h, ow * c)))
    y = ops.reshape(y, (n, oh, ow, c))
    return ops.squeeze(y, 0) if squeeze else y


def resize_nearest_neighbor(images, size, align_corners=False, half_pixel_centers=True):
    """Nearest-neighbour resize of NHWC images to ``size = (height, width)``, as
    ``tf.image.resize(images, size, "nearest")`` (half_pixel_centers=True).

    images: Tensor (or array) [N, H, W, C] or [H, W, C]. Returns a Tensor of
    the same dtype and backend, differentiable (two gathers: each input
    pixel receives the gradient of every output pixel that copies it).
    """
    op = "resize_nearest_neighbor"
    _check_modes(align_corners, half_pixel_centers, op)
    x = _images(images, op)
    oh, ow = _size(size, op)
    ax = x.ndim - 3
    h, w = x.shape[ax], x.shape[ax + 1]
    iy = tensor(_nearest_index(h, oh, align_corners, half_pixel_centers), "int32", backend=x.backend)
    ix = tensor(_nearest_index(w, ow, align_corners, half_pixel_centers), "int32", backend=x.backend)
    return ops.gather(ops.gather(x, iy, axis=ax), ix, axis=ax + 1)
