"""Weight initializers with Keras's names, arguments and statistics.

An initializer is called as ``init(shape, dtype="float32") -> Tensor`` on the
current backend. Random values come from the backend's seeded host generator
(so one seed gives the same weights on every backend); an initializer given
a ``seed`` reseeds that generator before it draws, so it returns the same
values at every call.

``get(identifier)`` accepts an instance, a callable, a snake_case name
(``"glorot_uniform"``), a class name (``"GlorotUniform"``), a TF.js name
(``"glorotUniform"``, ``"varianceScaling"``) or a ``{"class_name", "config"}``
dict; ``serialize(init)`` gives that dict back.
"""
from __future__ import annotations

import math
import re

from . import ops
from .tensor import Tensor, arange, fill, ones, random_normal, random_uniform, truncated_normal, zeros


def _shape(shape):
    if isinstance(shape, int):
        return (shape,)
    return tuple(int(s) for s in shape)


class Initializer:
    """Base class: ``__call__(shape, dtype)`` and ``get_config()``."""

    def __call__(self, shape, dtype="float32") -> Tensor:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Zeros(Initializer):
    def __call__(self, shape, dtype="float32"):
        return zeros(_shape(shape), dtype)


class Ones(Initializer):
    def __call__(self, shape, dtype="float32"):
        return ones(_shape(shape), dtype)


class Constant(Initializer):
    def __init__(self, value=0.0):
        self.value = value

    def __call__(self, shape, dtype="float32"):
        return fill(_shape(shape), self.value, dtype)

    def get_config(self):
        return {"value": self.value}


class RandomNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean, self.stddev, self.seed = mean, stddev, seed

    def __call__(self, shape, dtype="float32"):
        return random_normal(_shape(shape), self.mean, self.stddev, dtype, seed=self.seed)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class RandomUniform(Initializer):
    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        self.minval, self.maxval, self.seed = minval, maxval, seed

    def __call__(self, shape, dtype="float32"):
        return random_uniform(_shape(shape), self.minval, self.maxval, dtype, seed=self.seed)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


class TruncatedNormal(Initializer):
    """Normal values redrawn until within two standard deviations of the mean."""

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean, self.stddev, self.seed = mean, stddev, seed

    def __call__(self, shape, dtype="float32"):
        return truncated_normal(_shape(shape), self.mean, self.stddev, dtype, seed=self.seed)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


def compute_fans(shape):
    """(fan_in, fan_out) as Keras computes them; conv kernels [..., in, out]
    count the receptive field times the channels."""
    shape = _shape(shape)
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = 1
    for d in shape[:-2]:
        receptive *= d
    return shape[-2] * receptive, shape[-1] * receptive


_MODES = {"fan_in": "fan_in", "fan_out": "fan_out", "fan_avg": "fan_avg",
          "fanIn": "fan_in", "fanOut": "fan_out", "fanAvg": "fan_avg"}
_DISTRIBUTIONS = {"truncated_normal": "truncated_normal", "truncatedNormal": "truncated_normal",
                  "normal": "truncated_normal", "untruncated_normal": "untruncated_normal",
                  "untruncatedNormal": "untruncated_normal", "uniform": "uniform"}


class VarianceScaling(Initializer):
    """Values with variance ``scale / n``, n the fan chosen by ``mode``.

    distribution "truncated_normal" (stddev corrected by 0.87962566103423978,
    the stddev of a unit normal truncated at two), "untruncated_normal" or
    "uniform" (within ``sqrt(3 * scale / n)``).
    """

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        if scale <= 0:
            raise ValueError(f"VarianceScaling: scale must be positive, got {scale}")
        if mode not in _MODES:
            raise ValueError(f"VarianceScaling: mode must be one of fan_in, fan_out, fan_avg, got {mode!r}")
        if distribution not in _DISTRIBUTIONS:
            raise ValueError(
                f"VarianceScaling: distribution must be one of truncated_normal, untruncated_normal, "
                f"uniform, got {distribution!r}")
        self.scale = float(scale)
        self.mode = _MODES[mode]
        self.distribution = _DISTRIBUTIONS[distribution]
        self.seed = seed

    def __call__(self, shape, dtype="float32"):
        shape = _shape(shape)
        fan_in, fan_out = compute_fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        scale = self.scale / max(1.0, n)
        if self.distribution == "truncated_normal":
            return truncated_normal(shape, 0.0, math.sqrt(scale) / 0.87962566103423978, dtype, seed=self.seed)
        if self.distribution == "untruncated_normal":
            return random_normal(shape, 0.0, math.sqrt(scale), dtype, seed=self.seed)
        limit = math.sqrt(3.0 * scale)
        return random_uniform(shape, -limit, limit, dtype, seed=self.seed)

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution,
                "seed": self.seed}


class _Fixed(VarianceScaling):
    _args = (1.0, "fan_in", "truncated_normal")

    def __init__(self, seed=None):
        super().__init__(*self._args, seed=seed)

    def get_config(self):
        return {"seed": self.seed}


class GlorotUniform(_Fixed):
    _args = (1.0, "fan_avg", "uniform")


class GlorotNormal(_Fixed):
    _args = (1.0, "fan_avg", "truncated_normal")


class HeNormal(_Fixed):
    _args = (2.0, "fan_in", "truncated_normal")


class HeUniform(_Fixed):
    _args = (2.0, "fan_in", "uniform")


class LecunNormal(_Fixed):
    _args = (1.0, "fan_in", "truncated_normal")


class LecunUniform(_Fixed):
    _args = (1.0, "fan_in", "uniform")


class Identity(Initializer):
    """``gain`` times the identity matrix (2-D shapes only)."""

    def __init__(self, gain=1.0):
        self.gain = gain

    def __call__(self, shape, dtype="float32"):
        shape = _shape(shape)
        if len(shape) != 2:
            raise ValueError(f"Identity initializer needs a 2-D shape, got {shape}")
        rows = ops.reshape(arange(shape[0]), (shape[0], 1))
        cols = ops.reshape(arange(shape[1]), (1, shape[1]))
        return ops.cast(ops.equal(rows, cols), dtype) * self.gain

    def get_config(self):
        return {"gain": self.gain}


class Orthogonal(Initializer):
    """``gain`` times a random orthogonal matrix (Keras's Orthogonal: the Q of a normal
    matrix's QR, signs fixed by R's diagonal); shapes of rank >= 2 are flattened to
    [prod(shape[:-1]), shape[-1]]. The default of recurrent kernels."""

    def __init__(self, gain=1.0, seed=None):
        self.gain, self.seed = gain, seed

    def __call__(self, shape, dtype="float32"):
        shape = _shape(shape)
        if len(shape) < 2:
            raise ValueError(f"Orthogonal initializer needs a shape of rank 2 or more, got {shape}")
        rows, cols = math.prod(shape[:-1]), shape[-1]
        a = random_normal((max(rows, cols), min(rows, cols)), 0.0, 1.0, "float64", seed=self.seed)
        B = a._backend
        q, r = (Tensor(m, B) for m in B.qr(a.data))
        n = min(rows, cols)
        diag = ops.sum(r * ops.cast(ops.equal(ops.reshape(arange(n), (n, 1)), ops.reshape(arange(n), (1, n))),
                                    "float64"), axis=0)
        q = q * ops.where(ops.less(diag, 0.0), -1.0, 1.0)
        if rows < cols:
            q = ops.transpose(q)
        return ops.cast(ops.reshape(q * float(self.gain), shape), dtype)

    def get_config(self):
        return {"gain": self.gain, "seed": self.seed}


_CLASSES = [Zeros, Ones, Constant, RandomNormal, RandomUniform, TruncatedNormal, VarianceScaling,
            GlorotUniform, GlorotNormal, HeNormal, HeUniform, LecunNormal, LecunUniform, Identity, Orthogonal]


def _snake(name):
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", s).lower()


def _camel(name):
    return name[0].lower() + name[1:]


_BY_NAME: dict = {}
for _c in _CLASSES:
    _BY_NAME[_c.__name__] = _c
    _BY_NAME[_snake(_c.__name__)] = _c
    _BY_NAME[_camel(_c.__name__)] = _c
_BY_NAME.update({"zero": Zeros, "one": Ones})
# Keras's short aliases (Embedding's default is "uniform")
_BY_NAME.update({"uniform": RandomUniform, "normal": RandomNormal, "truncated_normal": TruncatedNormal})


def _valid_names():
    return ", ".join(sorted(n for n in _BY_NAME if "_" in n or n.islower()))


def get(identifier):
    """An initializer from an instance, a callable, a name or a {"class_name", "config"} dict."""
    if identifier is None:
        return None
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, dict):
        name = identifier.get("class_name")
        cls = _BY_NAME.get(name) if isinstance(name, str) else None
        if cls is None:
            raise ValueError(f"unknown initializer {name!r} in {identifier!r}; valid names are: {_valid_names()}")
        cfg = dict(identifier.get("config") or {})
        if cls is VarianceScaling or issubclass(cls, _Fixed):
            cfg = {k: v for k, v in cfg.items() if k in ("scale", "mode", "distribution", "seed")}
            if issubclass(cls, _Fixed):
                cfg = {k: v for k, v in cfg.items() if k == "seed"}
        return cls.from_config(cfg)
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier)
        if cls is None:
            raise ValueError(f"unknown initializer {identifier!r}; valid names are: {_valid_names()}")
        return cls()
    if isinstance(identifier, type) and issubclass(identifier, Initializer):
        return identifier()
    if callable(identifier):
        return identifier
    raise TypeError(f"an initializer must be a name, a dict or a callable, got {type(identifier).__name__}")


def serialize(initializer) -> dict:
    """``{"class_name": ..., "config": ...}`` (a custom callable: its name and an empty config)."""
    if initializer is None:
        return None
    if isinstance(initializer, Initializer):
        return {"class_name": type(initializer).__name__, "config": initializer.get_config()}
    return {"class_name": getattr(initializer, "__name__", type(initializer).__name__), "config": {}}


def deserialize(config):
    return get(config)
