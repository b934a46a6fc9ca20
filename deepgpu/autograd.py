"""Reverse-mode automatic differentiation, written once above the backends.

Each op that has an input needing a gradient links its output to a
``Node`` (op name, inputs, saved arrays, attributes). Gradient rules are
registered by op name with ``register_gradient`` and written with backend
primitives on raw arrays, so they hold on every backend. The graph lives
only as long as the tensors that reference it; there is no global tape.

Public: ``grad``, ``grads``, ``value_and_grad``, ``value_and_grads``,
``variable_grads``, ``no_grad``, ``enable_grad``, ``is_grad_enabled``, ``GradientTape``.
"""
from __future__ import annotations

import functools
import threading

from .tensor import Tensor, Variable

GRADIENTS: dict = {}


class _GradState(threading.local):
    enabled = True  # per thread; the class attribute is each new thread's start value


_state = _GradState()
# id(sources list) -> fn(k, grad), called by ``backward`` as soon as the gradient of sources[k] is
# final (DataParallel starts reducing a bucket of gradients while the rest of backward runs).
READY_HOOKS: dict = {}


def register_gradient(op: str):
    """Decorator: ``fn(node, dy) -> tuple`` of input gradients (raw arrays or None)."""
    def deco(fn):
        GRADIENTS[op] = fn
        return fn
    return deco


class Node:
    """How a tensor was made: enough to send its gradient to its inputs."""

    __slots__ = ("op", "inputs", "saved", "attrs", "B")

    def __init__(self, op, inputs, saved, attrs, B):
        self.op = op
        self.inputs = inputs
        self.saved = saved
        self.attrs = attrs
        self.B = B

    def __repr__(self):
        return f"<Node {self.op} of {len(self.inputs)} input(s)>"


def is_grad_enabled() -> bool:
    return _state.enabled


class _GradMode:
    """Sets whether ops record gradient links for the block, and restores the previous setting after.
    A class, not a contextlib generator: a train step enters a few of these, and the generator
    machinery cost several times more per block."""

    _enabled = True
    _prev = None  # the setting to restore while entered; None when not

    def __enter__(self):
        if self._prev is not None:  # entered twice at once, the first exit would restore the wrong setting
            raise RuntimeError(f"this {type(self).__name__}() is already entered (in this block or another "
                               f"thread): use a new one per with block")
        self._prev = _state.enabled
        _state.enabled = self._enabled

    def __exit__(self, *exc):
        _state.enabled = self._prev
        self._prev = None

    def __call__(self, fn):
        """As a decorator (``@no_grad()``), as the contextlib versions were: each call of ``fn`` enters
        a fresh instance, so recursive calls and threads each restore their own previous setting."""
        mode = type(self)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with mode():
                return fn(*args, **kwargs)

        return wrapper


class no_grad(_GradMode):
    """Inside the block no op records a gradient link (inference, updates)."""

    _enabled = False


class enable_grad(_GradMode):
    """Inside the block ops record gradient links (inside ``no_grad`` too)."""


def _topo(root: Tensor) -> list:
    """Tensors that need a gradient, in an order where each comes after its inputs."""
    order, seen = [], set()
    stack = [(root, False)]
    push, pop, add = stack.append, stack.pop, seen.add
    while stack:
        t, expanded = pop()
        if expanded:
            order.append(t)
            continue
        if id(t) in seen:
            continue
        add(id(t))
        push((t, True))
        node = t._node
        if node is not None:
            # Leaves (weights) are pushed first so they are popped after their siblings' subgraphs:
            # in the reversed order a weight then comes right after its last consumer, and its
            # gradient is final early in backward (DataParallel reduces it while the rest runs).
            # The order of the other tensors, and so every sum, is unchanged.
            inner = None
            for i in node.inputs:
                if i.requires_grad and id(i) not in seen:
                    if i._node is None:
                        push((i, False))
                    elif inner is None:
                        inner = [i]
                    else:
                        inner.append(i)
            if inner is not None:
                for i in inner:
                    push((i, False))
    return order


def backward(out: Tensor, sources, dy=None) -> list:
    """Gradients of ``out`` with respect to each of ``sources`` (raw arrays or None).

    ``dy`` (raw array or Tensor) seeds the output's gradient; default ones.
    Each tensor's gradient is dropped once it is passed on to its inputs (the graph's saved arrays
    live as long as its tensors do).
    """
    B = out._backend
    if dy is None:
        g0 = B._scalar(1, out.dtype) if out.ndim == 0 else B.ones(out.shape, out.dtype)
    else:
        g0 = dy.data if isinstance(dy, Tensor) else B.asarray(dy, out.dtype)
        if tuple(g0.shape) != out.shape:
            raise ValueError(f"dy has shape {tuple(g0.shape)} but the output has shape {out.shape}")
    want = {id(s): k for k, s in enumerate(sources)}
    result = [None] * len(sources)
    if not out.requires_grad:
        return result
    grads = {id(out): g0}
    hook = READY_HOOKS.get(id(sources)) if READY_HOOKS else None
    pop, get, rules = grads.pop, grads.get, GRADIENTS
    for t in reversed(_topo(out)):
        tid = id(t)
        g = pop(tid, None)
        if g is None:
            continue
        k = want.get(tid)
        if k is not None:
            result[k] = g
            if hook is not None:
                hook(k, g)
        node = t._node
        if node is None:
            continue
        rule = rules.get(node.op)
        if rule is None:
            raise NotImplementedError(f"no gradient is registered for op {node.op!r}")
        for inp, ig in zip(node.inputs, rule(node, g)):
            if ig is None or not inp.requires_grad:
                continue
            if ig.shape != inp.data.shape:  # both arrays' shape tuples: no Tensor.shape copy per edge
                ig = B.sum_to_shape(ig, inp.shape)
            iid = id(inp)
            prev = get(iid)
            grads[iid] = ig if prev is None else prev + ig
    return result


def _as_sources(xs):
    out = []
    for x in xs:
        if isinstance(x, Variable) and x.requires_grad:
            out.append(x)
        elif isinstance(x, Tensor):  # a frozen Variable too: asked for explicitly, it gets a gradient
            out.append(Tensor(x.data, x._backend, requires_grad=True))
        else:
            from .tensor import tensor
            t = tensor(x)
            t.requires_grad = True
            out.append(t)
    return out


def _check_scalar_or_dy(y, dy, fname):
    if not isinstance(y, Tensor):
        raise TypeError(f"{fname}: f must return a Tensor, got {type(y).__name__}")
    if dy is None and y.size != 1:
        raise ValueError(
            f"{fname}: f returned shape {y.shape}; pass dy of that shape or return a scalar")


def _wrap(g, like: Tensor):
    if g is None:
        g = like._backend.zeros(like.shape, like.dtype)
    elif g.size > 1 and 0 in g.strides:
        # A broadcast view (e.g. the gradient of sum) is read-only or aliased: own the memory.
        g = like._backend.copy(g)
    return Tensor(g, like._backend)


def value_and_grads(f):
    """``f(*xs) -> y``; returns ``g(xs, dy=None) -> (y, [dy/dx for x in xs])``.

    As TF.js ``tf.valueAndGrads``. ``xs`` is a list of tensors or arrays.
    """
    def g(xs, dy=None):
        if not isinstance(xs, (list, tuple)):
            raise TypeError("value_and_grads: pass the inputs as a list")
        srcs = _as_sources(xs)
        with enable_grad():
            y = f(*srcs)
        _check_scalar_or_dy(y, dy, "value_and_grads")
        if not y.requires_grad:
            # As TF.js: a result computed without the inputs has no gradient to
            # give. Nested grad() lands here too: the inner gradient is a plain
            # value, so second derivatives would silently come out as zeros.
            raise ValueError(
                "cannot compute the gradient: f's result does not depend on its inputs through "
                "differentiable deepgpu ops (higher-order gradients, grad of grad, are not supported)")
        gs = backward(y, srcs, dy)
        return Tensor(y.data, y._backend), [_wrap(gi, s) for gi, s in zip(gs, srcs)]
    return g


def grads(f):
    """``f(*xs) -> y``; returns ``g(xs, dy=None) -> [dy/dx for x in xs]`` (TF.js ``tf.grads``)."""
    vg = value_and_grads(f)
    return lambda xs, dy=None: vg(xs, dy)[1]


def value_and_grad(f):
    """``f(x) -> y``; returns ``g(x, dy=None) -> (y, dy/dx)``."""
    vg = value_and_grads(f)

    def g(x, dy=None):
        y, gs = vg([x], dy)
        return y, gs[0]
    return g


def grad(f):
    """``f(x) -> y``; returns ``g(x, dy=None) -> dy/dx`` (TF.js ``tf.grad``)."""
    vg = value_and_grad(f)
    return lambda x, dy=None: vg(x, dy)[1]


def variable_grads(f, var_list=None):
    """Run ``f()`` and differentiate it with respect to trainable Variables.

    Returns ``(value, {variable: gradient Tensor})`` for the variables in
    ``var_list``, or for every trainable Variable ``f`` used.
    """
    with enable_grad():
        y = f()
    _check_scalar_or_dy(y, None, "variable_grads")
    if var_list is None:
        var_list = [t for t in _topo(y) if isinstance(t, Variable) and t.trainable]
    gs = backward(y, var_list)
    return Tensor(y.data, y._backend), {v: _wrap(g, v) for v, g in zip(var_list, gs)}


def _backward_all_variables(y, dy=None):
    var_list = [t for t in _topo(y) if isinstance(t, Variable) and t.trainable]
    gs = backward(y, var_list, dy)
    return {v: _wrap(g, v) for v, g in zip(var_list, gs)}


class GradientTape:
    """TF's tape, for Keras 3 ``train_step`` code::

        with GradientTape() as tape:
            loss = model.compute_loss(y=y, y_pred=model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)

    deepgpu records every op on the tensors themselves, so the tape only turns
    recording on (inside ``no_grad`` too) and runs ``backward``. Trainable
    Variables are watched always; ``watch(t)`` makes a plain Tensor a source.
    ``gradient`` may be called once (the pass frees the graph), and gives None
    for a source the target does not depend on, as TF does.
    """

    def __init__(self, persistent=False, watch_accessed_variables=True):
        if persistent:
            raise ValueError("GradientTape(persistent=True) is not supported: the backward pass frees the "
                             "graph; take one gradient of the sum of the targets, or record twice")
        self._ctx = None
        self._used = False

    def __enter__(self):
        self._ctx = enable_grad()
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        ctx, self._ctx = self._ctx, None
        return ctx.__exit__(*exc)

    def watch(self, tensor) -> None:
        """Make ``tensor`` (a Tensor, or a list of them) a source of gradients from now on."""
        for t in tensor if isinstance(tensor, (list, tuple)) else [tensor]:
            if not isinstance(t, Tensor):
                raise TypeError(f"GradientTape.watch takes Tensors, got {type(t).__name__}")
            if not t.requires_grad:
                t.requires_grad = True

    def gradient(self, target, sources):
        """d target / d sources: a Tensor (or None) per source, in the structure of ``sources``
        (one, a list / tuple, or a dict). ``target`` must be a scalar Tensor (a non-scalar one
        is summed, as TF does)."""
        if self._used:
            raise RuntimeError("GradientTape.gradient can only be called once on a tape (the backward pass "
                               "frees the recorded graph)")
        if not isinstance(target, Tensor):
            raise TypeError(f"GradientTape.gradient: target must be a Tensor, got {type(target).__name__}")
        self._used = True
        if isinstance(sources, dict):
            keys, flat = list(sources), list(sources.values())
        elif isinstance(sources, (list, tuple)):
            keys, flat = None, list(sources)
        else:
            keys, flat = None, [sources]
        for s in flat:
            if not isinstance(s, Tensor):
                raise TypeError(f"GradientTape.gradient: sources must be Tensors / Variables, got "
                                f"{type(s).__name__}")
        dy = None
        if target.ndim:
            dy = target._backend.ones(target.shape, target.dtype)
        gs = backward(target, flat, dy)
        out = [None if g is None else _wrap(g, s) for g, s in zip(gs, flat)]
        if keys is not None:
            return dict(zip(keys, out))
        if isinstance(sources, (list, tuple)):
            return type(sources)(out) if isinstance(sources, tuple) else out
        return out[0]
