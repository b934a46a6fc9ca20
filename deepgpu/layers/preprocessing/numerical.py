"""Numerical preprocessing layers: Normalization (with adapt), Discretization (bins, with adapt)."""
from __future__ import annotations

from ... import ops
from ...tensor import Tensor, tensor
from ..base import Layer
from .._utils import shape_error
from .categorical import encode

_EPSILON = 1e-7  # Keras's backend.epsilon(): the floor of sqrt(variance)


def _batches(data, who):
    """The batches of ``data`` as float64 Tensors: one array / Tensor, or an iterable of them (or of
    (x, y) pairs, whose x is taken). ValueError naming the layer when there is nothing to read."""
    if isinstance(data, Tensor) or hasattr(data, "shape"):
        yield tensor(data, "float64") if not isinstance(data, Tensor) else ops.cast(data, "float64")
        return
    if isinstance(data, (list, tuple)) and data and all(isinstance(v, (int, float)) for v in data):
        yield tensor(list(data), "float64")
        return
    try:
        it = iter(data)
    except TypeError:
        raise ValueError(f"{who}.adapt: data must be an array, a Tensor or an iterable of batches, "
                         f"got {type(data).__name__}") from None
    for item in it:
        if isinstance(item, tuple):
            item = item[0]
        yield item if isinstance(item, Tensor) and item.dtype == "float64" else (
            ops.cast(item, "float64") if isinstance(item, Tensor) else tensor(item, "float64"))


class Normalization(Layer):
    """(x - mean) / max(sqrt(variance), 1e-7) per index of ``axis`` (default the last); ``invert``
    undoes it. mean and variance are given, or computed by ``adapt(data)`` and then saved with the
    model as weights mean, variance and count (Keras's layout)."""

    def __init__(self, axis=-1, mean=None, variance=None, invert=False, **kwargs):
        super().__init__(**kwargs)
        if axis is None:
            axis = ()
        self.axis = (axis,) if isinstance(axis, int) else tuple(axis)
        if not all(isinstance(a, int) and not isinstance(a, bool) for a in self.axis):
            raise ValueError(f"Normalization: axis must be an int, a list of ints or None, got {axis!r}")
        if (mean is None) != (variance is None):
            raise ValueError(f"Normalization: give both mean and variance or neither; got mean={mean!r}, "
                             f"variance={variance!r}")
        self.input_mean, self.input_variance = mean, variance
        if mean is not None:
            m, v = tensor(mean, "float32"), tensor(variance, "float32")
            if m.shape != v.shape:
                raise ValueError(f"Normalization: mean and variance must have one shape, got {m.shape} and {v.shape}")
            if m.ndim > len(self.axis):
                raise ValueError(f"Normalization: mean has rank {m.ndim}, more than the {len(self.axis)} axes "
                                 f"{self.axis}")
        self.invert = bool(invert)
        self.mean = self.variance = self.count = None

    def build(self, input_shape):
        nd = len(input_shape)
        if any(not -nd <= a < nd for a in self.axis):
            raise shape_error(self, f"axis {self.axis} is out of range for an input of rank {nd}", input_shape)
        self._keep = tuple(sorted(a % nd for a in self.axis))
        if any(input_shape[d] is None for d in self._keep):
            raise shape_error(self, f"the kept axes {self._keep} need known sizes", input_shape)
        if 0 in self._keep:
            raise shape_error(self, "axis 0 (the batch) cannot be kept", input_shape)
        self._reduce = tuple(d for d in range(nd) if d not in self._keep)
        self._bshape = tuple(input_shape[d] if d in self._keep else 1 for d in range(nd))
        shape = tuple(input_shape[d] for d in self._keep)
        if self.input_mean is None:
            self.mean = self.add_weight("mean", shape, "zeros", trainable=False)
            self.variance = self.add_weight("variance", shape, "ones", trainable=False)
            self.count = self.add_weight("count", (), "zeros", trainable=False, dtype="int64")
        self.built = True

    def _stats(self, dtype, backend):
        if self.input_mean is not None:
            m = tensor(self.input_mean, dtype, backend=backend)
            v = tensor(self.input_variance, dtype, backend=backend)
            if m.ndim:  # aligned with the kept axes from the right, as Keras
                shape = [1] * len(self._bshape)
                for i in range(1, m.ndim + 1):
                    shape[self._keep[-i]] = m.shape[-i]
                m, v = ops.reshape(m, tuple(shape)), ops.reshape(v, tuple(shape))
            return m, v
        m, v = ops.reshape(self.mean, self._bshape), ops.reshape(self.variance, self._bshape)
        return (m, v) if m.dtype == dtype else (ops.cast(m, dtype), ops.cast(v, dtype))

    def call(self, inputs):
        x = inputs if inputs.dtype == self.dtype else ops.cast(inputs, self.dtype)
        m, v = self._stats(x.dtype, x.backend)
        sd = ops.maximum(ops.sqrt(v), _EPSILON)
        return m + x * sd if self.invert else (x - m) / sd

    def adapt(self, data, batch_size=None, steps=None):
        """Set mean and variance (biased, as Keras) from ``data``: an array / Tensor or an iterable of
        batches (or of (x, y) pairs). Raises ValueError when mean and variance were given."""
        if self.input_mean is not None:
            raise ValueError(f"layer {self.name!r} (Normalization) was given mean and variance; adapt() would "
                             f"replace them: make the layer without them")
        n, mean, m2 = 0, None, None
        for k, b in enumerate(_batches(data, "Normalization")):
            if steps is not None and k >= steps:
                break
            if not self.built:
                self._maybe_build((None,) + b.shape[1:])
            if b.ndim != len(self._bshape):
                raise shape_error(self, f"adapt data of rank {b.ndim}, the layer was built for rank "
                                        f"{len(self._bshape)}", b.shape)
            nb = 1
            for d in self._reduce:
                nb *= b.shape[d]
            bm = ops.mean(b, self._reduce, keepdims=True)
            bm2 = ops.sum(ops.square(b - bm), self._reduce, keepdims=True)
            if mean is None:
                n, mean, m2 = nb, bm, bm2
            else:  # Chan et al.: pairwise update of count, mean and sum of squared deviations
                delta, tot = bm - mean, n + nb
                mean = mean + delta * (nb / tot)
                m2 = m2 + bm2 + ops.square(delta) * (n * nb / tot)
                n = tot
        if mean is None:
            raise ValueError(f"layer {self.name!r} (Normalization): adapt() got no data")
        shape = tuple(self._bshape[d] for d in self._keep)
        self.mean.assign(ops.cast(ops.reshape(mean, shape), "float32").data_sync())
        self.variance.assign(ops.cast(ops.reshape(m2 / n, shape), "float32").data_sync())
        self.count.assign(tensor(n, "int64").data_sync())

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        def plain(v):
            return v.tolist() if hasattr(v, "tolist") else (list(v) if isinstance(v, tuple) else v)
        return {**super().get_config(), "axis": list(self.axis), "invert": self.invert,
                "mean": plain(self.input_mean), "variance": plain(self.input_variance)}


class Discretization(Layer):
    """Bucket index of each value: i where boundaries[i-1] <= x < boundaries[i] (``output_mode`` "int",
    int64), or that index encoded ("one_hot", "multi_hot", "count"; float32) over len(boundaries) + 1
    bins. ``bin_boundaries`` given, or ``num_bins`` and ``adapt(data)`` (quantile boundaries)."""

    MODES = ("int", "one_hot", "multi_hot", "count")

    def __init__(self, bin_boundaries=None, num_bins=None, epsilon=0.01, output_mode="int", sparse=False,
                 **kwargs):
        if "dtype" not in kwargs or kwargs["dtype"] is None:
            kwargs["dtype"] = "int64" if output_mode == "int" else "float32"
        super().__init__(**kwargs)
        if output_mode not in self.MODES:
            raise ValueError(f"Discretization: output_mode must be one of {self.MODES}, got {output_mode!r}")
        if sparse:
            raise ValueError("Discretization: sparse=True is not supported (deepgpu has no sparse tensors)")
        if (bin_boundaries is None) == (num_bins is None):
            raise ValueError(f"Discretization: give exactly one of bin_boundaries and num_bins; got "
                             f"bin_boundaries={bin_boundaries!r}, num_bins={num_bins!r}")
        if num_bins is not None and (isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1):
            raise ValueError(f"Discretization: num_bins must be a positive int, got {num_bins!r}")
        if bin_boundaries is not None:
            b = [float(v) for v in bin_boundaries]
            if any(x > y for x, y in zip(b, b[1:])):
                raise ValueError(f"Discretization: bin_boundaries must be sorted, got {bin_boundaries!r}")
            bin_boundaries = b
        self.bin_boundaries, self.num_bins = bin_boundaries, num_bins
        self.epsilon, self.output_mode, self.sparse = float(epsilon), output_mode, False

    def call(self, inputs):
        if self.bin_boundaries is None:
            raise ValueError(f"layer {self.name!r} (Discretization) has num_bins={self.num_bins} and no "
                             f"boundaries yet: call adapt(data) first")
        x = inputs if inputs.dtype.startswith("float") else ops.cast(inputs, "float32")
        if self.bin_boundaries:
            # Uploaded once per backend, dtype and boundaries: a recorded step cannot upload.
            key = (x.backend, x.dtype, tuple(self.bin_boundaries))
            if self.__dict__.get("_bnd_key") != key:
                self.__dict__["_bnd"] = tensor(self.bin_boundaries, x.dtype, backend=x.backend)
                self.__dict__["_bnd_key"] = key
            bnd = self.__dict__["_bnd"]
            idx = ops.sum(ops.cast(ops.greater_equal(ops.expand_dims(x, -1), bnd), "int64"), -1)
        else:
            idx = ops.cast(x * 0, "int64")
        if self.output_mode == "int":
            return idx if self.dtype == "int64" else ops.cast(idx, self.dtype)
        return encode(idx, len(self.bin_boundaries) + 1, self.output_mode, self.dtype)

    def adapt(self, data, batch_size=None, steps=None):
        """Boundaries at the i / num_bins quantiles (i = 1 .. num_bins - 1) of every value in ``data``."""
        if self.num_bins is None:
            raise ValueError(f"layer {self.name!r} (Discretization) was given bin_boundaries; adapt() needs "
                             f"num_bins instead")
        values = []
        for k, b in enumerate(_batches(data, "Discretization")):
            if steps is not None and k >= steps:
                break
            values.extend(b.data_sync().ravel().tolist())
        if not values:
            raise ValueError(f"layer {self.name!r} (Discretization): adapt() got no data")
        values.sort()
        n = len(values)
        self.bin_boundaries = [values[min(int(i * n / self.num_bins), n - 1)] for i in range(1, self.num_bins)]

    def compute_output_shape(self, input_shape):
        if self.output_mode == "int":
            return input_shape
        depth = None if self.bin_boundaries is None else len(self.bin_boundaries) + 1
        if self.output_mode == "one_hot":
            return tuple(input_shape) + (depth,)
        return tuple(input_shape[:-1]) + (depth,)

    def get_config(self):
        cfg = super().get_config()
        cfg.pop("trainable", None)  # Keras 3.15's Discretization takes no trainable argument
        return {**cfg, "bin_boundaries": self.bin_boundaries, "num_bins": self.num_bins,
                "epsilon": self.epsilon, "output_mode": self.output_mode, "sparse": self.sparse}
