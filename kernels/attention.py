"""Launchers of attention.cu: fused scaled dot-product attention over [BH, T, D] slabs, forward and backward.

The backend gives q [BH, T, D], k [BH, S, D], v [BH, S, E] (D, E <= 64) and an int32 mask
broadcast through element strides; one launch forward, two backward, none reading back.
Dropout on the probabilities (rate, key, replay) is regenerated in the backward kernels, not stored.
"""
from __future__ import annotations

import math

import numpy as np

from .. import kernels as K
from .runtime import register

register("attention.cu", ("dg_attn_fwd", "dg_attn_bwd_dq", "dg_attn_bwd_dkv"))

ATT_TILE = 32  # as attention.cu
ATT_MAXD = 64


def _shapes(q, k, v, what):
    if q.ndim != 3 or k.ndim != 3 or v.ndim != 3 or k.shape[0] != q.shape[0] or v.shape[0] != q.shape[0] \
            or k.shape[2] != q.shape[2] or v.shape[1] != k.shape[1]:
        raise ValueError(f"{what}: q [BH, T, D], k [BH, S, D], v [BH, S, E] do not fit: "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    bh, t, d = q.shape
    s, e = k.shape[1], v.shape[2]
    if min(bh, t, s, d, e) < 1 or d > ATT_MAXD or e > ATT_MAXD:
        raise ValueError(f"{what}: needs non-empty slabs with D, E <= {ATT_MAXD}, got D={d}, E={e}")
    return bh, t, s, d, e


def _mask_args(mask, heads):
    """(int32 mask or None, batch / head / query element strides); mask [B|1, H|1, T|1, S] int32."""
    if mask is None:
        return None, (0, 0, 0)
    if mask.dtype != np.int32 or mask.ndim != 4 or mask.strides[3] != 4:
        raise ValueError("attention mask: expected int32 [B|1, H|1, T|1, S] with a contiguous key axis")
    st = [0 if mask.shape[i] == 1 else mask.strides[i] // 4 for i in range(3)]
    if mask.shape[1] not in (1, heads):
        raise ValueError(f"attention mask: {mask.shape[1]} heads, the slabs have {heads}")
    return mask, tuple(st)


def _tail(q, k, v, heads, mb, mh, mq, scale, causal, rate, key, replay):
    """The launch arguments after the arrays, as the three kernels take them."""
    if not 0 <= rate < 1:
        raise ValueError(f"attention dropout: rate must be in [0, 1), got {rate!r}")
    if replay is not None and (replay.dtype != np.uint64 or replay.size != 1):
        raise ValueError(f"attention dropout: replay must be a uint64 array of one value, got "
                         f"{replay.dtype} {replay.shape}")
    # An element is kept where its 24-bit uniform u >= rate, i.e. u * 2^24 >= ceil(rate * 2^24).
    thresh = math.ceil(rate * 2**24) if rate > 0 else 0
    return (K._i32(q.shape[1]), K._i32(k.shape[1]), K._i32(q.shape[2]), K._i32(v.shape[2]), K._i32(heads),
            K._i64(mb), K._i64(mh), K._i64(mq), K._f32(scale), np.int32(bool(causal)),
            K._f32(1.0 / (1.0 - rate)), np.int32(thresh), np.uint64(int(key) % 2**64), replay)


def attention(q, k, v, mask=None, heads=1, scale=1.0, causal=False, rate=0.0, key=0, replay=None):
    """(out [BH, T, E], lse [BH, T]) as ``Backend.attention``; dropout ``rate`` with the keyed
    mask of ``key`` (``Backend._keyed_key``), ``replay`` a captured graph's uint64 [1] count or None."""
    xp = K._xp(q)
    q, k, v = (K._check(a, f"attention {n}") for a, n in ((q, "q"), (k, "k"), (v, "v")))
    bh, t, s, d, e = _shapes(q, k, v, "attention")
    mask, (mb, mh, mq) = _mask_args(mask, heads)
    out = xp.empty((bh, t, e), np.float32)
    lse = xp.empty((bh, t), np.float32)
    K._launch("dg_attn_fwd", (-(-t // ATT_TILE), bh), (ATT_TILE,),
              (q, k, v, mask, out, lse) + _tail(q, k, v, heads, mb, mh, mq, scale, causal, rate, key, replay))
    return out, lse


def attention_grad(dout, q, k, v, out, lse, mask=None, heads=1, scale=1.0, causal=False, rate=0.0, key=0,
                   replay=None):
    """(dq, dk, dv) as ``Backend.attention_grad``; the dropout arguments as the forward call's."""
    xp = K._xp(q)
    q, k, v = (K._check(a, f"attention_grad {n}") for a, n in ((q, "q"), (k, "k"), (v, "v")))
    bh, t, s, d, e = _shapes(q, k, v, "attention_grad")
    out = K._check(out, "attention_grad out", (bh, t, e))
    dout = K._check(dout, "attention_grad dout", (bh, t, e))
    lse = K._check(lse, "attention_grad lse", (bh, t))
    mask, (mb, mh, mq) = _mask_args(mask, heads)
    delta = xp.empty((bh, t), np.float32)
    dq = xp.empty((bh, t, d), np.float32)
    dk = xp.empty((bh, s, d), np.float32)
    dv = xp.empty((bh, s, e), np.float32)
    tail = _tail(q, k, v, heads, mb, mh, mq, scale, causal, rate, key, replay)
    K._launch("dg_attn_bwd_dq", (-(-t // ATT_TILE), bh), (ATT_TILE,), (q, k, v, mask, out, dout, lse, delta, dq) + tail)
    K._launch("dg_attn_bwd_dkv", (-(-s // ATT_TILE), bh), (ATT_TILE,), (q, k, v, mask, dout, lse, delta, dk, dv) + tail)
    return dq, dk, dv
