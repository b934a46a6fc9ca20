"""Differentiable ops of the Transformer's building blocks: layer / RMS normalization,
masked softmax and scaled dot-product attention (re-exported by ``deepgpu.ops``).

Each is one node over one backend primitive each way where that pays
(``layer_norm`` / ``layer_norm_grad``, ``masked_softmax``); attention is
composed of batched matmuls over the head axes and the masked softmax.
"""
from __future__ import annotations

import math

from .autograd import register_gradient
from .ops import _axes, _backend_of, _inverse_perm, _is_float, _make, _t, cast, dropout, matmul, multiply
from .backends.base import Backend
from .tensor import Tensor


def _prod(shape):
    out = 1
    for s in shape:
        out *= int(s)
    return out


def layer_norm(x, gamma=None, beta=None, axis=-1, epsilon=1e-3, rms=False) -> Tensor:
    """Normalize ``x`` over ``axis`` (an int or a list of axes), then scale and shift.

    ``y = (x - mean) / sqrt(var + epsilon) * gamma + beta`` with the mean and
    biased variance over the given axes (``rms=True``: no mean subtracted,
    var = mean(x^2), as RMS normalization). gamma, beta: shaped as
    ``x.shape`` on those axes (sorted), or None. One node: the axes are moved
    last and flattened, one ``layer_norm`` backend call forward and one
    ``layer_norm_grad`` backward. Raises ValueError for an axis out of range
    or a parameter of the wrong shape.
    """
    B = _backend_of(x, gamma, beta)
    x = _t(x, B)
    if not _is_float(x.dtype):
        x = cast(x, "float32")
    axes = tuple(sorted(set(_axes(axis, x.ndim))))
    if not axes:
        raise ValueError("layer_norm: no axis to normalize over")
    pshape = tuple(x.shape[a] for a in axes)
    params = []
    for name, p in (("gamma", gamma), ("beta", beta)):
        if p is not None:
            p = _t(p, B, x.dtype)
            if tuple(p.shape) not in (pshape, (_prod(pshape),)):
                raise ValueError(f"layer_norm: {name} has shape {p.shape}, expected {pshape} for input "
                                 f"{x.shape} over axes {axes}")
            params.append(p)
    rest = tuple(i for i in range(x.ndim) if i not in axes)
    perm = None if rest + axes == tuple(range(x.ndim)) else rest + axes
    xt = x.data if perm is None else B.transpose(x.data, perm)
    tshape = tuple(xt.shape)
    d = _prod(pshape)
    x2 = B.reshape(xt, (-1, d) if d else (0, 0))
    g = params[0].data.reshape(d) if gamma is not None else None
    b = params[-1].data.reshape(d) if beta is not None else None
    y, mean, inv = B.layer_norm(x2, g, b, float(epsilon), bool(rms))
    y = B.reshape(y, tshape)
    if perm is not None:
        y = B.transpose(y, _inverse_perm(perm))
    return _make("layer_norm", y, (x, *params), B, saved=(x2, mean, inv), perm=perm, tshape=tshape,
                 has_gamma=gamma is not None, has_beta=beta is not None, rms=bool(rms))


@register_gradient("layer_norm")
def _layer_norm_grad(node, dy):
    B, (x2, mean, inv), a = node.B, node.saved, node.attrs
    x = node.inputs[0]
    gamma = node.inputs[1] if a["has_gamma"] else None
    if a["perm"] is not None:
        dy = B.transpose(dy, a["perm"])
    dy2 = B.reshape(dy, x2.shape)
    g = None if gamma is None else B.reshape(gamma.data, (x2.shape[1],))
    dx, dgamma, dbeta = B.layer_norm_grad(dy2, x2, mean, inv, g, a["rms"], need_input=x.requires_grad)
    if dx is not None:
        dx = B.reshape(dx, a["tshape"])
        if a["perm"] is not None:
            dx = B.transpose(dx, _inverse_perm(a["perm"]))
    out = [dx]
    if gamma is not None:
        out.append(B.reshape(dgamma, gamma.shape) if gamma.requires_grad else None)
    if a["has_beta"]:
        beta = node.inputs[-1]
        out.append(B.reshape(dbeta, beta.shape) if beta.requires_grad else None)
    return tuple(out)


def masked_softmax(x, mask=None, axis=-1) -> Tensor:
    """Softmax over ``axis`` where ``mask`` (bool, broadcastable to x) is True.

    Masked-out entries get probability 0 and a row masked everywhere is all
    zeros, as Keras 3's Softmax layer computes. The gradient is the
    softmax's (0 at masked entries).
    """
    B = _backend_of(x, mask)
    x = _t(x, B)
    if not _is_float(x.dtype):
        x = cast(x, "float32")
    ax = _axes(axis, x.ndim)[0]
    m = None
    if mask is not None:
        m = mask.data if isinstance(mask, Tensor) else B.asarray(mask)
        if m.dtype != bool:
            m = B.compare("!=", m, B.asarray(0, m.dtype))
        try:
            shape = _broadcast(tuple(m.shape), tuple(x.shape))
        except ValueError:
            shape = None
        if shape != tuple(x.shape):
            raise ValueError(f"masked_softmax: mask of shape {tuple(m.shape)} does not broadcast to the "
                             f"scores' shape {x.shape}")
    y = B.masked_softmax(x.data, m, ax)
    return _make("softmax", y, (x,), B, saved=y, axis=ax)


def _broadcast(a, b):
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        p = a[-i] if i <= len(a) else 1
        q = b[-i] if i <= len(b) else 1
        if p != q and p != 1 and q != 1:
            raise ValueError("not broadcastable")
        out.append(q if p == 1 else p)
    return tuple(reversed(out))


def dot_product_attention(query, key, value, mask=None, scale=None, is_causal=False, dropout_rate=0.0,
                          training=False, return_probs=False, seed=None):
    """``softmax(query @ key^T * scale, mask) @ value`` over the last two axes.

    query [..., Tq, D], key [..., Tk, D], value [..., Tk, Dv]; leading axes
    (batch, heads) broadcast. ``scale`` defaults to 1 / sqrt(D). ``mask``:
    bool (or 0/1) broadcastable to [..., Tq, Tk], True where a query may
    attend; ``is_causal`` also masks key j > query i. Dropout with
    ``dropout_rate`` on the probabilities when ``training``. Returns the
    output [..., Tq, Dv], and the probabilities too when ``return_probs``.

    Where the backend's fused kernel runs (CUDA), dropout is inside it, its mask
    a hash of (seed, counter, element) regenerated backward; ``seed`` gives that
    key: an int, a (seed, counter) pair, or a callable returning such a pair
    (called only then; layers pass their own); None draws one from the
    backend's seeded generator. Elsewhere dropout is ``ops.dropout``'s.
    """
    B = _backend_of(query, key, value)
    q, k, v = _t(query, B), _t(key, B), _t(value, B)
    if q.ndim < 2 or k.ndim != q.ndim or v.ndim != q.ndim or q.shape[-1] != k.shape[-1] \
            or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"dot_product_attention: query {q.shape}, key {k.shape} and value {v.shape} do not "
                         f"fit ([..., Tq, D], [..., Tk, D], [..., Tk, Dv])")
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    dropping = training and dropout_rate > 0
    if dropping and not 0 < dropout_rate < 1:
        raise ValueError(f"dot_product_attention: dropout_rate must be in [0, 1), got {dropout_rate!r}")
    if not return_probs and _fused_applies(B, q, k, v, mask):
        drop = (float(dropout_rate),) + _dropout_key(seed) if dropping else ()
        return _fused_attention(B, q, k, v, mask, float(scale), bool(is_causal), drop)
    scores = matmul(q, k, transpose_b=True)
    if scale != 1.0:
        scores = multiply(scores, float(scale))
    m = None
    if mask is not None:
        m = mask.data if isinstance(mask, Tensor) else B.asarray(mask)
        if m.dtype != bool:
            m = B.compare("!=", m, B.asarray(0, m.dtype))
    if is_causal:
        tq, tk = scores.shape[-2], scores.shape[-1]
        causal = B.compare(">=", B.reshape(B.arange(tq), (tq, 1)), B.reshape(B.arange(tk), (1, tk)))
        m = causal if m is None else B.logical("and", m, causal)
    probs = masked_softmax(scores, m if m is None else Tensor(m, B), -1)
    p = dropout(probs, dropout_rate, training=True) if training and dropout_rate > 0 else probs
    out = matmul(p, v)
    return (out, probs) if return_probs else out




def _fused_applies(B, q, k, v, mask):
    """Whether the backend's fused attention kernel takes this case: the CUDA backend, float32
    [B, N, T, D] slabs with D, E <= 64, and a mask (if any) [B|1, 1|N, T|1, S]."""
    if B.name != "cuda" or q.ndim != 4 or q.dtype != "float32" or k.dtype != "float32" or v.dtype != "float32":
        return False
    if q.shape[-1] > 64 or v.shape[-1] > 64 or k.shape[:2] != q.shape[:2] or v.shape[:2] != q.shape[:2]:
        return False
    if mask is None:
        return True
    ms = tuple(mask.shape)
    return len(ms) == 4 and ms[0] in (1, q.shape[0]) and ms[1] in (1, q.shape[1]) and ms[2] in (1, q.shape[2]) \
        and ms[3] == k.shape[2]


def _dropout_key(seed):
    """(seed, counter) of the fused kernel's dropout mask from dot_product_attention's ``seed``."""
    if callable(seed):
        seed = seed()
    if seed is None:
        return int(Backend._rng.integers(2**63)), 0
    if isinstance(seed, tuple) and len(seed) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in seed):
        return seed
    if isinstance(seed, int) and not isinstance(seed, bool):
        return int(seed), 0
    raise ValueError(f"dot_product_attention: seed must be None, an int, a (seed, counter) pair of ints or a "
                     f"callable returning one, got {seed!r}")


def _fused_attention(B, q, k, v, mask, scale, causal, drop):
    """One ``attention`` backend call forward, one ``attention_grad`` backward (the fused kernels);
    drop: () or (rate, seed, counter) of the dropout on the probabilities."""
    b, n, t, d = q.shape
    s, e = k.shape[2], v.shape[-1]
    m = None
    if mask is not None:
        m = mask.data if isinstance(mask, Tensor) else B.asarray(mask)
        m = B.cast(m if m.dtype == bool else B.compare("!=", m, B.asarray(0, m.dtype)), "int32")
    q3, k3, v3 = (B.reshape(a.data, (b * n,) + a.shape[2:]) for a in (q, k, v))
    out, lse = B.attention(q3, k3, v3, m, n, scale, causal, *drop)
    return _make("fused_attention", B.reshape(out, (b, n, t, e)), (q, k, v), B,
                 saved=(q3, k3, v3, out, lse, m), heads=n, scale=scale, causal=causal, drop=drop,
                 shapes=(q.shape, k.shape, v.shape))


@register_gradient("fused_attention")
def _fused_attention_grad(node, dy):
    B, (q3, k3, v3, out, lse, m), a = node.B, node.saved, node.attrs
    dq, dk, dv = B.attention_grad(B.reshape(dy, out.shape), q3, k3, v3, out, lse, m, a["heads"], a["scale"],
                                  a["causal"], *a["drop"])
    return tuple(B.reshape(g, shape) for g, shape in zip((dq, dk, dv), a["shapes"]))


def _einsum_parts(equation):
    eq = equation.replace(" ", "")
    if eq.count("->") != 1 or eq.split("->")[0].count(",") != 1:
        raise ValueError(f"einsum: equation {equation!r} must have the form 'in1,in2->out'")
    ins, out = eq.split("->")
    a, b = ins.split(",")
    for spec in (a, b, out):
        letters = spec.replace("...", "")
        if not letters.isalpha() and letters or len(set(letters)) != len(letters) or spec.count(".") not in (0, 3):
            raise ValueError(f"einsum: {spec!r} in {equation!r} must be distinct letters, with at most one '...'")
    return a, b, out


def einsum(equation, a, b) -> Tensor:
    """Two-operand einsum (``"abc,cd->abd"``, ``"...b,bc->...c"``), differentiable in both.

    Each letter of an operand must appear in the other operand or in the
    output (an axis summed within one operand alone has no gradient rule
    here); ``...`` stands for the same leading or trailing axes wherever it
    appears. Raises ValueError naming the equation otherwise.
    """
    B = _backend_of(a, b)
    a, b = _t(a, B), _t(b, B)
    sa, sb, so = _einsum_parts(equation)
    for spec, other in ((sa, sb + so), (sb, sa + so)):
        lone = [c for c in spec.replace("...", "") if c not in other]
        if lone:
            raise ValueError(f"einsum {equation!r}: axis {lone[0]!r} is summed within one operand alone")
    if "..." in sa + sb and "..." not in so:
        raise ValueError(f"einsum {equation!r}: '...' must appear in the output too")
    proj = _projection(sa, sb, so, a, b)
    if proj is not None:
        return proj
    y = B.einsum(f"{sa},{sb}->{so}", a.data, b.data)
    return _make("einsum", y, (a, b), B, specs=(sa, sb, so))


def _projection(sa, sb, so, a, b):
    """A projection ``F C, C O -> F O`` (every EinsumDense of attention) as one 2-D matmul, or None.

    One GEMM through the backend's matmul (its BLAS and kernels) instead of einsum's path search
    and tensordot; F may be ``...``.
    """
    from .ops import reshape

    nc = next((i for i in range(len(sb) + 1) if sb[:i] != sa[len(sa) - i:]), len(sb) + 1) - 1
    c = sb[:nc]
    f, o = sa[:len(sa) - nc], sb[nc:]
    if not c or "..." in sb or so != f + o or "..." in c:
        return None
    lead = a.shape[:a.ndim - nc]
    kdim = _prod(a.shape[a.ndim - nc:])
    if tuple(b.shape[:nc]) != tuple(a.shape[a.ndim - nc:]):
        return None
    y = matmul(reshape(a, (-1, kdim)), reshape(b, (kdim, -1)))
    return reshape(y, tuple(lead) + tuple(b.shape[nc:]))


@register_gradient("einsum")
def _einsum_grad(node, dy):
    B, (sa, sb, so) = node.B, node.attrs["specs"]
    a, b = node.inputs
    ga = gb = None
    if a.requires_grad:
        ga = B.einsum(f"{so},{sb}->{sa}", dy, b.data)
        if "..." in sa and tuple(ga.shape) != a.shape:
            ga = B.sum_to_shape(ga, a.shape)
    if b.requires_grad:
        gb = B.einsum(f"{so},{sa}->{sb}", dy, a.data)
        if "..." in sb and tuple(gb.shape) != b.shape:
            gb = B.sum_to_shape(gb, b.shape)
    return ga, gb


__all__ = ["layer_norm", "masked_softmax", "dot_product_attention", "einsum"]
