"""Merge layers: Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate.

Each takes a list of inputs. Elementwise merges broadcast as Keras's do
(sizes equal, or one of them 1 or unknown); a mismatch raises ValueError
naming the layer and every input shape.
"""
from __future__ import annotations

from functools import reduce

from .. import ops
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

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


def add(inputs, **kwargs):
    """Functional form: ``Add(**kwargs)(inputs)``."""
    return Add(**kwargs)(inputs)


def concatenate(inputs, axis=-1, **kwargs):
    return Concatenate(axis=axis, **kwargs)(inputs)
