"""Launchers of elementwise.cu's row kernels: softmax, softmax cross-entropy (one-hot and int32
labels) and its gradient, and ``argmax_hits`` (the accuracy of a batch).

Helpers shared with the other launchers are read from the package at each
call (tests replace some of them there).
"""
from __future__ import annotations

import numpy as np

from .. import kernels as K
from .runtime import register

_I32 = np.dtype(np.int32)  # a dtype, not the type: comparing with it skips a conversion per call

register("elementwise.cu", ("dg_softmax_xent_fwd", "dg_softmax_xent_bwd", "dg_sparse_xent_fwd", "dg_sparse_xent_bwd",
                            "dg_softmax_rows", "dg_argmax_hits"))


def softmax_cross_entropy(logits, labels, loss=None, prob=None):
    """Rows of logits, labels [rows, cols] -> (loss [rows], softmax [rows, cols])."""
    xp = K._xp(logits)
    logits = K._check(logits, "softmax_cross_entropy logits")
    labels = K._check(labels, "softmax_cross_entropy labels", logits.shape)
    if logits.ndim != 2:
        raise ValueError(f"softmax_cross_entropy: expected 2-D [rows, cols], got {logits.shape}")
    rows, cols = logits.shape
    loss = K._output(xp, loss, (rows,), "softmax_cross_entropy loss")
    prob = K._output(xp, prob, (rows, cols), "softmax_cross_entropy prob")
    if rows and cols:
        K._launch("dg_softmax_xent_fwd", (min(rows, 65536),), (_row_threads(cols),),
                  (logits, labels, loss, prob, K._i32(rows), K._i32(cols)))
    return loss, prob


def softmax_cross_entropy_grad(prob, labels, dy, out=None):
    """Gradient with respect to the logits: ``(prob - labels) * dy[:, None]``; dy [rows]."""
    prob = K._check(prob, "softmax_cross_entropy_grad prob")
    rows, cols = prob.shape
    labels = K._check(labels, "softmax_cross_entropy_grad labels", (rows, cols))
    dy = K._check(dy, "softmax_cross_entropy_grad dy", (rows,))
    out = K._output(K._xp(prob), out, (rows, cols), "softmax_cross_entropy_grad out")
    if out.size:
        K._launch("dg_softmax_xent_bwd", K._grid1d(out.size), (K.BLOCK,),
                  (prob, labels, dy, out, K._i32(rows), K._i32(cols)))
    return out


def _labels(labels, what, rows):
    if labels.dtype != _I32:
        raise TypeError(f"{what}: the custom kernels take int32 labels, got {labels.dtype}")
    if labels.size != rows:
        raise ValueError(f"{what}: {labels.size} labels for {rows} rows")
    return labels if labels.flags.c_contiguous else K._xp(labels).ascontiguousarray(labels)


def _row_threads(cols):
    # A power of two from 32 to 256 covering a row (dg_block_reduce's rule).
    threads = 32
    while threads < min(cols, 256):
        threads *= 2
    return threads


def sparse_softmax_cross_entropy(logits, labels, loss=None, prob=None):
    """Logits [rows, cols], int32 labels [rows] -> (loss [rows], softmax [rows, cols]).

    A label outside [0, cols) gives loss 0 and, in the gradient, a row of 0
    (Backend.sparse_softmax_cross_entropy's rule).
    """
    xp = K._xp(logits)
    logits = K._check(logits, "sparse_softmax_cross_entropy logits")
    if logits.ndim != 2:
        raise ValueError(f"sparse_softmax_cross_entropy: expected 2-D [rows, cols], got {logits.shape}")
    rows, cols = logits.shape
    labels = _labels(labels, "sparse_softmax_cross_entropy", rows)
    loss = K._output(xp, loss, (rows,), "sparse_softmax_cross_entropy loss")
    prob = K._output(xp, prob, (rows, cols), "sparse_softmax_cross_entropy prob")
    if rows and cols:
        K._launch("dg_sparse_xent_fwd", (min(rows, 65536),), (_row_threads(cols),),
                  (logits, labels, loss, prob, K._i32(rows), K._i32(cols)))
    elif rows:
        loss[...] = 0
    return loss, prob


def sparse_softmax_cross_entropy_grad(prob, labels, dy, out=None):
    """``(prob - onehot(labels)) * dy[:, None]`` (0 in rows without a class); prob [rows, cols],
    int32 labels [rows], dy [rows]."""
    prob = K._check(prob, "sparse_softmax_cross_entropy_grad prob")
    rows, cols = prob.shape
    labels = _labels(labels, "sparse_softmax_cross_entropy_grad", rows)
    dy = K._check(dy, "sparse_softmax_cross_entropy_grad dy", (rows,))
    out = K._output(K._xp(prob), out, (rows, cols), "sparse_softmax_cross_entropy_grad out")
    if out.size:
        K._launch("dg_sparse_xent_bwd", K._grid1d(out.size), (K.BLOCK,),
                  (prob, labels, dy, out, K._i32(rows), K._i32(cols)))
    return out


def softmax(x, out=None):
    """Softmax of each row of x [rows, cols] -> [rows, cols]."""
    x = K._check(x, "softmax x")
    if x.ndim != 2:
        raise ValueError(f"softmax: expected 2-D [rows, cols], got {x.shape}")
    rows, cols = x.shape
    out = K._output(K._xp(x), out, (rows, cols), "softmax out")
    if rows and cols:
        K._launch("dg_softmax_rows", (min(rows, 65536),), (_row_threads(cols),), (x, out, K._i32(rows), K._i32(cols)))
    return out


def argmax_hits(x, labels, out=None):
    """x [rows, cols] (cols >= 1), int32 labels [rows] -> float32 [rows]: 1 where argmax(x[r]) == labels[r]."""
    x = K._check(x, "argmax_hits x")
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"argmax_hits: expected 2-D [rows, cols] with cols >= 1, got {x.shape}")
    rows, cols = x.shape
    labels = _labels(labels, "argmax_hits", rows)
    out = K._output(K._xp(x), out, (rows,), "argmax_hits out")
    if rows:
        K._launch("dg_argmax_hits", K._grid1d(rows), (K.BLOCK,), (x, labels, out, K._i32(rows), K._i32(cols)))
    return out
