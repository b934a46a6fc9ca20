"""Generic 3-D convolution and pooling primitives over NDHWC arrays, mixed into ``Backend``.

A 3-D convolution runs as ``kd`` 2-D ones: for kernel depth tap i, the input depth
slices that tap reads (offset ``i * dilation_d``, step ``stride_d``) are folded into the
batch axis ([N * Do, H, W, C]) and convolved with ``kernel[i]`` by the backend's own
``conv2d`` (im2col + one GEMM on the CPU, the tiled kernel on the GPU); the ``kd``
results are summed. The gradients go through ``conv2d_grad_input`` /
``conv2d_grad_filter`` the same way. Pooling reads strided windows (no copy).
"""
from __future__ import annotations

import numpy as np

from . import base as _base


def triple(v, what):
    """An int or three ints as a tuple of three positive ints; ValueError otherwise."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        t = (int(v),) * 3
    else:
        try:
            t = tuple(int(a) for a in v)
        except (TypeError, ValueError):
            t = ()
    if len(t) != 3 or min(t) < 1:
        raise ValueError(f"{what} must be a positive int or three positive ints, got {v!r}")
    return t


class Conv3DMixin:
    def conv3d_geometry(self, x_shape, k_shape, strides, padding, dilation):
        """((Do, Ho, Wo), (pads per spatial axis)) for an NDHWC input and a [kd, kh, kw, in, out] kernel."""
        if len(x_shape) != 5:
            raise ValueError(f"conv3d expects a 5-D NDHWC input, got shape {tuple(x_shape)}")
        if len(k_shape) != 5:
            raise ValueError(f"conv3d expects a 5-D [kd, kh, kw, in, out] kernel, got shape {tuple(k_shape)}")
        if x_shape[4] != k_shape[3]:
            raise ValueError(f"conv3d: input has {x_shape[4]} channels but the kernel expects {k_shape[3]} "
                             f"(input shape {tuple(x_shape)}, kernel shape {tuple(k_shape)})")
        s, d = triple(strides, "strides"), triple(dilation, "dilation_rate")
        out, pads = [], []
        try:
            for i in range(3):
                o, p = _base.conv_output_size(x_shape[1 + i], k_shape[i], s[i], d[i], padding)
                out.append(o)
                pads.append(p)
        except ValueError as e:
            raise ValueError(f"conv3d: {e} (input shape {tuple(x_shape)}, kernel shape {tuple(k_shape)})") from None
        return tuple(out), tuple(pads)

    def _depth_tap(self, xpad, i, sd, dd, do):
        """Depth slices tap i reads, folded into the batch: [N * Do, H, W, C] (contiguous)."""
        n, _, h, w, c = xpad.shape
        xs = xpad[:, i * dd:i * dd + sd * (do - 1) + 1:sd]
        return self.xp.ascontiguousarray(xs).reshape(n * do, h, w, c)

    def conv3d(self, x, k, strides=(1, 1, 1), padding="valid", dilation=(1, 1, 1)):
        """3-D convolution (cross-correlation). x: [N, D, H, W, C], k: [kd, kh, kw, C, O] -> [N, Do, Ho, Wo, O]."""
        (do, ho, wo), (pd, _, _) = self.conv3d_geometry(x.shape, k.shape, strides, padding, dilation)
        s, d = triple(strides, "strides"), triple(dilation, "dilation_rate")
        n, o = x.shape[0], k.shape[4]
        if pd != (0, 0):
            x = self.xp.pad(x, ((0, 0), pd, (0, 0), (0, 0), (0, 0)))
        y = None
        for i in range(k.shape[0]):
            yi = self.conv2d(self._depth_tap(x, i, s[0], d[0], do), self.xp.ascontiguousarray(k[i]),
                             s[1:], padding, d[1:])
            if y is None:
                y = yi
            else:
                y += yi
        return y.reshape(n, do, ho, wo, o)

    def conv3d_grad_input(self, dy, k, x_shape, strides=(1, 1, 1), padding="valid", dilation=(1, 1, 1)):
        """Gradient of conv3d with respect to its input: an array of ``x_shape`` (also the transposed conv)."""
        (do, ho, wo), (pd, _, _) = self.conv3d_geometry(x_shape, k.shape, strides, padding, dilation)
        s, d = triple(strides, "strides"), triple(dilation, "dilation_rate")
        n, depth, h, w, c = x_shape
        kd, o = k.shape[0], k.shape[4]
        dy2 = self.xp.ascontiguousarray(dy).reshape(n * do, ho, wo, o)
        # Room for the last window's reach so every strided slice has Do planes.
        dp = max(depth + pd[0] + pd[1], (do - 1) * s[0] + (kd - 1) * d[0] + 1)
        dxp = self.xp.zeros((n, dp, h, w, c), dtype=dy.dtype)
        for i in range(kd):
            g = self.conv2d_grad_input(dy2, self.xp.ascontiguousarray(k[i]), (n * do, h, w, c), s[1:], padding, d[1:])
            dxp[:, i * d[0]:i * d[0] + s[0] * (do - 1) + 1:s[0]] += g.reshape(n, do, h, w, c)
        return dxp[:, pd[0]:pd[0] + depth]

    def conv3d_grad_filter(self, x, dy, k_shape, strides=(1, 1, 1), padding="valid", dilation=(1, 1, 1)):
        """Gradient of conv3d with respect to the kernel: [kd, kh, kw, C, O]."""
        (do, ho, wo), (pd, _, _) = self.conv3d_geometry(x.shape, k_shape, strides, padding, dilation)
        s, d = triple(strides, "strides"), triple(dilation, "dilation_rate")
        n, o = x.shape[0], k_shape[4]
        if pd != (0, 0):
            x = self.xp.pad(x, ((0, 0), pd, (0, 0), (0, 0), (0, 0)))
        dy2 = self.xp.ascontiguousarray(dy).reshape(n * do, ho, wo, o)
        dk = self.xp.empty(tuple(k_shape), dtype=dy.dtype)
        for i in range(k_shape[0]):
            dk[i] = self.conv2d_grad_filter(self._depth_tap(x, i, s[0], d[0], do), dy2, tuple(k_shape[1:]),
                                            s[1:], padding, d[1:])
        return dk

    # ------------------------------------------------------------ pooling
    def _pool3d_setup(self, x, pool_size, strides, padding, fill):
        if x.ndim != 5:
            raise ValueError(f"3-D pooling expects a 5-D NDHWC input, got shape {tuple(x.shape)}")
        k = triple(pool_size, "pool_size")
        s = k if strides is None else triple(strides, "strides")
        out, pads = [], []
        for i in range(3):
            o, p = _base.conv_output_size(x.shape[1 + i], k[i], s[i], 1, padding)
            out.append(o)
            pads.append(p)
        if any(p != (0, 0) for p in pads):
            x = self.xp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=fill)
        return x, k, s, tuple(out), tuple(pads)

    def _windows3d(self, xpad, k, s, out):
        """A strided view [N, Do, Ho, Wo, kd, kh, kw, C] of the padded input (no copy)."""
        n, c = xpad.shape[0], xpad.shape[4]
        s0, s1, s2, s3, s4 = xpad.strides
        return self.xp.lib.stride_tricks.as_strided(
            xpad, shape=(n, *out, *k, c), strides=(s0, s1 * s[0], s2 * s[1], s3 * s[2], s1, s2, s3, s4))

    def _scatter3d(self, dxp, k, s, out, parts):
        """Add ``parts(tap)`` ([N, Do, Ho, Wo, C]) into each tap's strided positions of ``dxp``."""
        for a in range(k[0]):
            for b in range(k[1]):
                for c in range(k[2]):
                    dxp[:, a:a + s[0] * (out[0] - 1) + 1:s[0], b:b + s[1] * (out[1] - 1) + 1:s[1],
                        c:c + s[2] * (out[2] - 1) + 1:s[2], :] += parts((a * k[1] + b) * k[2] + c)
        return dxp

    def max_pool3d(self, x, pool_size=(2, 2, 2), strides=None, padding="valid"):
        """Max pooling, NDHWC -> [N, Do, Ho, Wo, C]; padding never wins the max."""
        fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        xp_, k, s, out, _ = self._pool3d_setup(x, pool_size, strides, padding, fill)
        return self._windows3d(xp_, k, s, out).max(axis=(4, 5, 6))

    def max_pool3d_grad(self, dy, x, y, pool_size=(2, 2, 2), strides=None, padding="valid"):
        """Gradient of 3-D max pooling: dy routed to the first maximum of each window."""
        fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        xp_, k, s, out, pads = self._pool3d_setup(x, pool_size, strides, padding, fill)
        n, c = x.shape[0], x.shape[4]
        arg = self._windows3d(xp_, k, s, out).reshape(n, *out, k[0] * k[1] * k[2], c).argmax(axis=4)
        dxp = self._scatter3d(self.xp.zeros(xp_.shape, dtype=dy.dtype), k, s, out, lambda t: dy * (arg == t))
        (d0, _), (h0, _), (w0, _) = pads
        return dxp[:, d0:d0 + x.shape[1], h0:h0 + x.shape[2], w0:w0 + x.shape[3], :]

    def _pool3d_counts(self, x_shape, k, s, out, pads, dtype):
        """[1, Do, Ho, Wo, 1] number of real (unpadded) cells in each window."""
        if all(p == (0, 0) for p in pads):
            return dtype.type(k[0] * k[1] * k[2])
        ones = self.xp.pad(self.xp.ones((1, *x_shape[1:4], 1), dtype=dtype), ((0, 0), *pads, (0, 0)))
        return self._windows3d(ones, k, s, out).sum(axis=(4, 5, 6))

    def avg_pool3d(self, x, pool_size=(2, 2, 2), strides=None, padding="valid"):
        """Average pooling, NDHWC; with 'same' padding the padded cells are not counted."""
        xp_, k, s, out, pads = self._pool3d_setup(x, pool_size, strides, padding, 0)
        total = self._windows3d(xp_, k, s, out).sum(axis=(4, 5, 6))
        return (total / self._pool3d_counts(x.shape, k, s, out, pads, x.dtype)).astype(x.dtype, copy=False)

    def avg_pool3d_grad(self, dy, x_shape, pool_size=(2, 2, 2), strides=None, padding="valid"):
        """Gradient of 3-D average pooling: an array of ``x_shape``."""
        k = triple(pool_size, "pool_size")
        s = k if strides is None else triple(strides, "strides")
        out, pads = [], []
        for i in range(3):
            o, p = _base.conv_output_size(x_shape[1 + i], k[i], s[i], 1, padding)
            out.append(o)
            pads.append(p)
        out, pads = tuple(out), tuple(pads)
        g = dy / self._pool3d_counts(x_shape, k, s, out, pads, dy.dtype)
        padded = tuple(x_shape[1 + i] + pads[i][0] + pads[i][1] for i in range(3))
        dxp = self._scatter3d(self.xp.zeros((x_shape[0], *padded, x_shape[4]), dtype=dy.dtype), k, s, out,
                              lambda t: g)
        (d0, _), (h0, _), (w0, _) = pads
        return dxp[:, d0:d0 + x_shape[1], h0:h0 + x_shape[2], w0:w0 + x_shape[3], :]
