"""Synchronized batch normalization: ``BatchNormalization(synchronized=True)`` across ranks.

Forward: the channels' sums and the sample counts are all-reduced for the
global mean, then the sums of squared deviations for the global (biased)
variance (two passes, as one process computes it; summing x and x^2 in one
go loses digits in float32). Backward: the two per-channel gradient sums
(of dy and of dy * xhat) are all-reduced, so dx is the gradient through the
global statistics. dgamma / dbeta stay the rank's own sums: DataParallel
averages them with the other gradients, which with equal shares gives the
one-process gradient of the global batch.
"""
from __future__ import annotations

from ..autograd import register_gradient
from ..ops import _axes, _backend_of, _bn_grads, _inverse_perm, _make, _t, cast
from ..tensor import Tensor


def _allreduce_sum(comm, B, a):
    buf = B.copy(a).reshape(-1)
    comm.all_reduce(buf, "sum")
    return buf


def sync_batch_norm(x, gamma, beta, axis, epsilon, comm):
    """``ops.batch_norm`` with the statistics of every rank's batch: (y, mean, variance), mean and
    variance [C] the global ones (no gradient). Every rank must call it at the same point."""
    B = _backend_of(x, gamma, beta)
    x = _t(x, B)
    if str(x.dtype) in ("float16", "bfloat16"):  # 16-bit sums over a global batch overflow: float32 inside
        y, mean, var = sync_batch_norm(cast(x, "float32"), gamma, beta, axis, epsilon, comm)
        return cast(y, str(x.dtype)), mean, var
    ax = _axes(axis, x.ndim)[0]
    params = [_t(p, B, x.dtype) for p in (gamma, beta) if p is not None]
    perm = None if ax == x.ndim - 1 else tuple(i for i in range(x.ndim) if i != ax) + (ax,)
    xl = x.data if perm is None else B.transpose(x.data, perm)
    c = xl.shape[-1]
    rows = B.reshape(xl, (-1, c))
    n_local = rows.shape[0]
    first = _allreduce_sum(comm, B, B.concat([B.sum(rows, axis=0), B.full((1,), float(n_local), rows.dtype)]))
    n = first[c:]  # the global count, kept on the device (no host read per step)
    mean = B.divide(first[:c], n)
    centred = B.subtract(rows, mean)
    var = B.divide(_allreduce_sum(comm, B, B.sum(B.square(centred), axis=0)), n)
    inv = B.divide(1.0, B.sqrt(B.add(var, float(epsilon))))
    y = B.multiply(centred, inv)
    g = params[0].data if gamma is not None else None
    if g is not None:
        y = B.multiply(y, g)
    if beta is not None:
        y = B.add(y, params[-1].data)
    y = B.reshape(y, xl.shape)
    if perm is not None:
        y = B.transpose(y, _inverse_perm(perm))
    out = _make("sync_batch_norm", y, (x, *params), B, saved=(rows, mean, inv, xl.shape), perm=perm,
                has_gamma=gamma is not None, has_beta=beta is not None, comm=comm, n=n)
    return out, Tensor(mean, B), Tensor(var, B)


@register_gradient("sync_batch_norm")
def _sync_batch_norm_grad(node, dy):
    B, (rows, mean, inv, lshape), a = node.B, node.saved, node.attrs
    x, perm = node.inputs[0], a["perm"]
    gamma = node.inputs[1] if a["has_gamma"] else None
    c = rows.shape[-1]
    if perm is not None:
        dy = B.transpose(dy, perm)
    dy = B.reshape(dy, (-1, c))
    xhat = B.multiply(B.subtract(rows, mean), inv)
    dbeta = B.sum(dy, axis=0)
    dgamma = B.sum(B.multiply(dy, xhat), axis=0)
    dx = None
    if x.requires_grad:
        sums = _allreduce_sum(a["comm"], B, B.concat([dbeta, dgamma]))
        n = a["n"]
        scale = inv if gamma is None else B.multiply(inv, gamma.data)
        dx = B.subtract(B.subtract(dy, B.divide(sums[:c], n)), B.multiply(xhat, B.divide(sums[c:], n)))
        dx = B.reshape(B.multiply(dx, scale), lshape)
        if perm is not None:
            dx = B.transpose(dx, _inverse_perm(perm))
    return _bn_grads(node, dx, dgamma, dbeta)
