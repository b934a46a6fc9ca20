"""Merge layers: Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, Dot (and their functional forms).

Each takes a list of inputs. Elementwise merges broadcast as Keras's do
(sizes equal, or one of them 1 or unknown); a mismatch raises ValueError
naming the layer and every input shape.
"""
from __future__ import annotations

from functools import reduce

from .. import ops
from ..tensor import ones
from .base import Layer, fmt_shape


class _Merge(Layer):
    _min_inputs = 1
    _max_inputs = None

    def _shapes(self, input_shape):
        if not isinstance(input_shape, list):
            raise ValueError(
                f"layer {self.name!r} ({type(self).__name__}) must be called on a list of inputs, "
                f"received a single input of shape {fmt_shape(input_shape)}")
        n = len(input_shape)
        if n < self._min_inputs or (self._max_inputs is not None and n > self._max_inputs):
            want = (f"exactly {self._max_inputs}" if self._min_inputs == self._max_inputs
                    else f"at least {self._min_inputs}")
            raise ValueError(
                f"layer {self.name!r} ({type(self).__name__}) must be called on {want} inputs, "
                f"received {n}: {fmt_shape(list(input_shape))}")
        return [tuple(s) for s in input_shape]

    def _error(self, shapes, why):
        return ValueError(
            f"layer {self.name!r} ({type(self).__name__}): inputs with shapes {fmt_shape(list(shapes))} "
            f"{why}")

    def build(self, input_shape):
        self.compute_output_shape(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        shapes = self._shapes(input_shape)
        rank = max(len(s) for s in shapes)
        out = []
        for i in range(1, rank + 1):
            dims = {s[-i] for s in shapes if i <= len(s)} - {1}
            known = {d for d in dims if d is not None}
            if len(known) > 1:
                raise self._error(shapes, "cannot be merged elementwise (their sizes differ and are not 1)")
            if known:
                out.append(known.pop())
            elif None in dims:
                out.append(None)
            else:
                out.append(1)
        return tuple(reversed(out))

    def compute_mask(self, inputs, previous_mask=None):
        """The inputs' masks combined with AND (None when no input has one), as Keras's merges."""
        if not isinstance(previous_mask, (list, tuple)):
            return previous_mask
        masks = [m for m in previous_mask if m is not None]
        return reduce(ops.logical_and, masks) if masks else None

    def call(self, inputs):
        shapes = [(None,) + tuple(x.shape[1:]) for x in inputs]
        self.compute_output_shape(shapes)
        for x in inputs[1:]:
            if x.shape[0] != inputs[0].shape[0]:
                raise self._error([x.shape for x in inputs], "have different batch sizes")
        return self._merge(list(inputs))


class Add(_Merge):
    """The elementwise sum of its inputs."""

    def _merge(self, xs):
        return reduce(ops.add, xs)


class Subtract(_Merge):
    """``inputs[0] - inputs[1]`` (exactly two inputs)."""
    _min_inputs = _max_inputs = 2

    def _merge(self, xs):
        return ops.subtract(xs[0], xs[1])


class Multiply(_Merge):
    def _merge(self, xs):
        return reduce(ops.multiply, xs)


class Average(_Merge):
    def _merge(self, xs):
        return reduce(ops.add, xs) * (1.0 / len(xs))


class Maximum(_Merge):
    def _merge(self, xs):
        return reduce(ops.maximum, xs)


class Minimum(_Merge):
    def _merge(self, xs):
        return reduce(ops.minimum, xs)


class Concatenate(_Merge):
    """Joins its inputs along ``axis``; every other axis must agree."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)

    def compute_output_shape(self, input_shape):
        shapes = self._shapes(input_shape)
        rank = len(shapes[0])
        if any(len(s) != rank for s in shapes):
            raise self._error(shapes, f"cannot be concatenated along axis {self.axis}: their ranks differ")
        if not -rank <= self.axis < rank:
            raise self._error(shapes, f"have no axis {self.axis}")
        ax = self.axis % rank
        out = list(shapes[0])
        for i in range(rank):
            dims = [s[i] for s in shapes]
            if i == ax:
                out[i] = None if any(d is None for d in dims) else sum(dims)
                continue
            known = {d for d in dims if d is not None}
            if len(known) > 1:
                raise self._error(shapes, f"cannot be concatenated along axis {self.axis}: "
                                          f"they differ on axis {i}")
            out[i] = known.pop() if known else None
        return tuple(out)

    def call(self, inputs):
        shapes = [(None,) + tuple(x.shape[1:]) for x in inputs]
        self.compute_output_shape(shapes)
        if self.axis % len(shapes[0]) != 0 and len({x.shape[0] for x in inputs}) > 1:
            raise self._error([x.shape for x in inputs], "have different batch sizes")
        return ops.concat(list(inputs), self.axis)

    def compute_mask(self, inputs, previous_mask=None):
        """As Keras 3: each input's mask (all True where it has none) spread over the input's shape,
        joined along ``axis``, then ``any`` over the last axis; None when no input has a mask."""
        if not isinstance(previous_mask, (list, tuple)) or all(m is None for m in previous_mask):
            return None
        full = []
        for x, m in zip(inputs, previous_mask):
            if m is None:
                m = ones(x.shape, "bool", backend=x._backend.name)
            elif m.ndim < x.ndim:
                m = ops.broadcast_to(ops.expand_dims(m, -1), x.shape)
            full.append(ops.cast(m, "bool"))
        return ops.any(ops.concat(full, self.axis), axis=-1)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


def add(inputs, **kwargs):
    """Functional form: ``Add(**kwargs)(inputs)``."""
    return Add(**kwargs)(inputs)


def concatenate(inputs, axis=-1, **kwargs):
    return Concatenate(axis=axis, **kwargs)(inputs)


class Dot(_Merge):
    """Dot product of two inputs along ``axes`` (an int, or one axis per input), per example.

    Keras's batch_dot: for inputs [b, n, d] and [b, m, d] with axes=2 the
    output is [b, n, m]; two [b, d] inputs give [b, 1]. ``normalize=True``
    L2-normalizes both along their axis first (cosine similarity). The batch
    axis cannot be an axis of the product.
    """
    _min_inputs = _max_inputs = 2

    def __init__(self, axes, normalize=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(axes, (list, tuple)):
            if len(axes) != 2 or any(isinstance(a, bool) or not isinstance(a, int) for a in axes):
                raise ValueError(f"Dot: axes must be an int or a pair of ints, got {axes!r}")
            axes = list(axes)
        elif isinstance(axes, bool) or not isinstance(axes, int):
            raise ValueError(f"Dot: axes must be an int or a pair of ints, got {axes!r}")
        self.axes = axes
        self.normalize = bool(normalize)
        self.supports_masking = False  # as Keras's Dot: the product has no mask

    def _axes_for(self, shapes):
        pair = [self.axes, self.axes] if isinstance(self.axes, int) else self.axes
        out = []
        for a, s in zip(pair, shapes):
            if not -len(s) <= a < len(s):
                raise self._error(shapes, f"have no axis {a} to take the dot product over")
            a %= len(s)
            if a == 0:
                raise self._error(shapes, "cannot take the dot product over the batch axis (axis 0)")
            out.append(a)
        return out

    def compute_output_shape(self, input_shape):
        shapes = self._shapes(input_shape)
        a1, a2 = self._axes_for(shapes)
        s1, s2 = list(shapes[0]), list(shapes[1])
        if s1[a1] is not None and s2[a2] is not None and s1[a1] != s2[a2]:
            raise self._error(shapes, f"cannot be multiplied: axis {a1} of the first has size {s1[a1]}, "
                                      f"axis {a2} of the second {s2[a2]}")
        s1.pop(a1)
        s2.pop(a2)
        out = s1 + s2[1:]
        return tuple(out + [1] if len(out) == 1 else out)

    def call(self, inputs):
        x1, x2 = inputs
        shapes = [(None,) + tuple(x.shape[1:]) for x in inputs]
        self.compute_output_shape(shapes)
        if x1.shape[0] != x2.shape[0]:
            raise self._error([x.shape for x in inputs], "have different batch sizes")
        a1, a2 = self._axes_for(shapes)
        if self.normalize:
            x1, x2 = _l2_normalize(x1, a1), _l2_normalize(x2, a2)
        letters = "bcdefghijklmnopqrstuvwxyz"
        n1, n2 = x1.ndim, x2.ndim
        s1 = "a" + letters[:n1 - 1]
        rest = letters[n1 - 1:]
        s2 = ["a"] + list(rest[:n2 - 1])
        s2[a2] = s1[a1]
        s2 = "".join(s2)
        out = "a" + "".join(c for i, c in enumerate(s1[1:], 1) if i != a1) + \
              "".join(c for i, c in enumerate(s2[1:], 1) if i != a2)
        y = ops.einsum(f"{s1},{s2}->{out}", x1, x2)
        return ops.reshape(y, (y.shape[0], 1)) if y.ndim == 1 else y

    def get_config(self):
        return {**super().get_config(), "axes": self.axes, "normalize": self.normalize}


def _l2_normalize(x, axis):
    # As keras.ops.normalize: x * min(1 / ||x||, 1 / epsilon), epsilon = 1e-7.
    inv = ops.rsqrt(ops.sum(ops.square(x), axis=axis, keepdims=True))
    return x * ops.minimum(inv, 1e7)


def dot(inputs, axes=-1, normalize=False, **kwargs):
    """Functional form: ``Dot(axes, normalize, **kwargs)(inputs)``."""
    return Dot(axes=axes, normalize=normalize, **kwargs)(inputs)


def subtract(inputs, **kwargs):
    """Functional form: ``Subtract(**kwargs)(inputs)``."""
    return Subtract(**kwargs)(inputs)


def multiply(inputs, **kwargs):
    """Functional form: ``Multiply(**kwargs)(inputs)``."""
    return Multiply(**kwargs)(inputs)


def average(inputs, **kwargs):
    """Functional form: ``Average(**kwargs)(inputs)``."""
    return Average(**kwargs)(inputs)


def maximum(inputs, **kwargs):
    """Functional form: ``Maximum(**kwargs)(inputs)``."""
    return Maximum(**kwargs)(inputs)


def minimum(inputs, **kwargs):
    """Functional form: ``Minimum(**kwargs)(inputs)``."""
    return Minimum(**kwargs)(inputs)
