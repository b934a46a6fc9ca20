"""Launchers of elementwise.cu's optimizer updates (Adam, SGD, RMSprop; one variable or many per
launch), and ``set_scalars``, which writes the hyperparameters a captured step's update reads.

Helpers shared with the other launchers are read from the package at each
call (tests replace some of them there).
"""
from __future__ import annotations

import numpy as np

from .. import kernels as K
from .runtime import _F32, register

register("elementwise.cu", ("dg_adam", "dg_sgd", "dg_rmsprop", "dg_update_many", "dg_set_scalars"))


# In place, one launch each. p, g and the slots may be views of one flat
# buffer holding every parameter: then one launch updates the whole model.
def _scalars(hp, what, k):
    """The device scalar array of a graph step: float32 with at least ``k`` values."""
    if hp is None:
        return None
    if hp.dtype != _F32 or hp.size < k:
        raise ValueError(f"{what}: hp must be a float32 array of at least {k} values, got {hp.dtype} {hp.shape}")
    return hp


def adam(p, g, m, v, lr, beta1, beta2, eps, step, weight_decay=0.0, hp=None):
    """Adam(W) step in place, as Backend.adam_update; ``step`` counts from 1.

    hp: None, or a device float32 array [step_size, lr * weight_decay] read
    when the kernel runs (a captured step); then ``lr`` and ``step`` are
    unused and ``weight_decay`` only says whether to decay (non-zero).
    """
    n = p.size
    for a, what in ((p, "p"), (m, "m"), (v, "v")):
        K._inplace(a, f"adam {what}", n)
    g = K._check(g, "adam g")
    hp = _scalars(hp, "adam", 2)
    if hp is None:
        step_size, decay = lr * (1 - beta2 ** step) ** 0.5 / (1 - beta1 ** step), lr * weight_decay
    else:
        step_size, decay = 0.0, 1.0 if weight_decay else 0.0
    if n:
        K._launch("dg_adam", K._grid1d(n), (K.BLOCK,),
                  (p, g, m, v, K._i64(n), K._f32(beta1), K._f32(beta2), K._f32(eps), K._f32(step_size),
                   K._f32(decay), hp))


def sgd(p, g, m, lr, momentum=0.0, nesterov=False, hp=None):
    """SGD step in place, as Backend.sgd_update (m None or momentum 0: plain SGD).

    hp: None, or a device float32 array [lr, ...] read when the kernel runs.
    """
    n = p.size
    K._inplace(p, "sgd p", n)
    g = K._check(g, "sgd g")
    if m is None or not momentum:
        m = None
    else:
        K._inplace(m, "sgd m", n)
    hp = _scalars(hp, "sgd", 1)
    if n:
        K._launch("dg_sgd", K._grid1d(n), (K.BLOCK,),
                  (p, g, m, K._i64(n), K._f32(0.0 if hp is not None else lr), K._f32(momentum),
                   np.int32(bool(nesterov)), hp))


def rmsprop(p, g, v, mg, mom, lr, rho, momentum, eps, hp=None):
    """RMSprop step in place, as Backend.rmsprop_update (mg, mom may be None).

    hp: None, or a device float32 array [lr, ...] read when the kernel runs.
    """
    n = p.size
    for a, what in ((p, "p"), (v, "v"), (mg, "mg"), (mom, "mom")):
        if a is not None:
            K._inplace(a, f"rmsprop {what}", n)
    g = K._check(g, "rmsprop g")
    hp = _scalars(hp, "rmsprop", 1)
    if n:
        K._launch("dg_rmsprop", K._grid1d(n), (K.BLOCK,),
                  (p, g, v, mg, mom, K._i64(n), K._f32(0.0 if hp is not None else lr), K._f32(rho),
                   K._f32(momentum), K._f32(eps), hp))


MANY = 8  # variables per dg_update_many launch: the kernel spells out eight parameter sets
# (parameters and slots, by identity) -> _VarSets. An optimizer passes the same arrays every step, and an
# in-place operand's dtype, size and layout do not change, so they are checked, and the launches' fixed
# arguments made, once. The entry holds the arrays, so their ids are not reused while it exists; a few
# entries at most (a model and its copies), the oldest dropped.
_var_sets: dict = {}
_VAR_SETS_MAX = 4


class _VarSets:
    """One checked set of variables: per variable (size, p, (slots padded to 3, size as int64)), and per
    group of MANY with work (start, stop, count as int32, grid, the unused parameter sets' arguments)."""

    def __init__(self, arrays, sets):
        self.arrays, self.sets, self.masks = arrays, sets, {}
        self.groups = []
        n = len(sets)
        for start in range(0, n, MANY):
            stop = min(start + MANY, n)
            work = max(sets[k][0] for k in range(start, stop))
            if work:  # a group of empty variables launches nothing
                self.groups.append((start, stop, np.int32(stop - start), K._grid1d(work),
                                    (None, None, None, None, None, K._i64(0)) * (MANY - (stop - start))))

    def group_masks(self, decay_mask):
        """Per group, its variables' bits of ``decay_mask`` as the kernel's int32 (kept per mask)."""
        masks = self.masks.get(decay_mask)
        if masks is None:
            masks = self.masks[decay_mask] = [np.int32((decay_mask >> start) & ((1 << (stop - start)) - 1))
                                              for start, stop, *_ in self.groups]
        return masks


def _checked_sets(what, ps, slot_lists):
    arrays = (*ps, *(a for s in slot_lists for a in s))
    key = (what, tuple(map(id, arrays)))
    hit = _var_sets.get(key)
    if hit is not None:
        return hit
    pad = (None,) * (3 - len(slot_lists))
    sets = []
    for k, p in enumerate(ps):
        size = p.size
        slots = [s[k] for s in slot_lists]
        for a in [p] + slots:
            if a is not None and (a.dtype != _F32 or a.size != size or not a.flags.c_contiguous):
                K._inplace(a, f"{what} parameter {k} or its slots", size)  # raises, naming the rule
        sets.append((size, p, (*slots, *pad, np.int64(size))))
    if len(_var_sets) >= _VAR_SETS_MAX:
        del _var_sets[next(iter(_var_sets))]
    hit = _var_sets[key] = _VarSets(arrays, sets)
    return hit


def _update_many(rule, what, ps, gs, slot_lists, floats, decay_mask=0, flag=0, hp=None, hp_k=1):
    """Launch dg_update_many over ``ps`` in groups of MANY; slot_lists: per slot, one array (or None) per variable."""
    n = len(ps)
    if len(gs) != n or any(len(s) != n for s in slot_lists):
        raise ValueError(f"{what}: the per-variable lists have different lengths: {n} parameters, "
                         f"{len(gs)} gradients, slots {[len(s) for s in slot_lists]}")
    hp = _scalars(hp, what, hp_k)
    # Everything checked before the first launch: a step is applied whole or not at all.
    checked = _checked_sets(what, ps, slot_lists)
    sets = checked.sets
    args_of = []
    for k, g in enumerate(gs):
        size, p, rest = sets[k]
        if g.size != size:
            raise ValueError(f"{what}: gradient {k} has {g.size} elements for a parameter of {size}")
        if g.dtype != _F32 or not g.flags.c_contiguous:  # the message is formatted only for this case
            g = K._check(g, f"{what} gradient {k}")
        args_of.append((p, g) + rest)
    rule, flag = K._i32(rule), K._i32(flag)
    floats = tuple(K._f32(v) for v in tuple(floats) + (0.0,) * (5 - len(floats))) + (hp,)
    for (start, stop, count, grid, unused), mask in zip(checked.groups, checked.group_masks(decay_mask)):
        args = [rule, count, mask, flag, *floats]
        for k in range(start, stop):
            args += args_of[k]
        K._launch("dg_update_many", grid, (K.BLOCK,), tuple(args) + unused)


def adam_many(ps, gs, ms, vs, lr, beta1, beta2, eps, step, weight_decay=0.0, decays=None, hp=None):
    """``adam`` over lists of variables in ceil(len / MANY) launches, in place.

    decays: per variable, whether ``weight_decay`` applies (default: all).
    hp: as in ``adam`` ([step_size, lr * weight_decay], read at run time).
    Raises ValueError for lists of different lengths or mismatched arrays.
    """
    if hp is None:
        step_size, decay = lr * (1 - beta2 ** step) ** 0.5 / (1 - beta1 ** step), lr * weight_decay
    else:
        step_size, decay = 0.0, 1.0 if weight_decay else 0.0
    mask = sum(1 << i for i in range(len(ps)) if decays is None or decays[i]) if decay else 0
    _update_many(0, "adam_many", ps, gs, (ms, vs), (beta1, beta2, eps, step_size, decay), mask, hp=hp, hp_k=2)


def sgd_many(ps, gs, moms, lr, momentum=0.0, nesterov=False, hp=None):
    """``sgd`` over lists of variables (moms: None entries, or all None, for plain SGD)."""
    moms = [None] * len(ps) if moms is None or not momentum else moms
    _update_many(1, "sgd_many", ps, gs, (moms,), (momentum, 0.0, 0.0, 0.0 if hp is not None else lr),
                 flag=int(bool(nesterov)), hp=hp)


def rmsprop_many(ps, gs, vs, mgs, moms, lr, rho, momentum, eps, hp=None):
    """``rmsprop`` over lists of variables (mgs, moms: lists with None entries, or None)."""
    n = len(ps)
    mgs = [None] * n if mgs is None else mgs
    moms = [None] * n if moms is None else moms
    _update_many(2, "rmsprop_many", ps, gs, (vs, mgs, moms),
                 (rho, momentum, eps, 0.0 if hp is not None else lr), hp=hp)


def set_scalars(hp, values):
    """Write up to four Python floats into the device float32 array ``hp`` (one launch)."""
    values = [float(v) for v in values]
    if not 0 < len(values) <= 4 or hp.dtype != _F32 or hp.size < len(values):
        raise ValueError(f"set_scalars: 1 to 4 values into a float32 array of at least as many, "
                         f"got {len(values)} values for {hp.dtype} {hp.shape}")
    vals = values + [0.0] * (4 - len(values))
    K._launch("dg_set_scalars", (1,), (32,), (hp, np.int32(len(values))) + tuple(K._f32(v) for v in vals))
