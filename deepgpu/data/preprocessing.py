"""Host-side preprocessing on NumPy arrays, at the boundary before data reaches a
backend: ``to_categorical``, ``Normalizer``, ``train_test_split``, ``batches``.
Reached as ``deepgpu.preprocessing``.
"""
from __future__ import annotations

import math

import numpy as np

from .. import ops
from ..tensor import Tensor, tensor

__all__ = ["to_categorical", "Normalizer", "train_test_split", "batches"]


# ------------------------------------------------------------------ labels


def to_categorical(y, num_classes=None, dtype="float32"):
    """One-hot encode integer class labels, as ``keras.utils.to_categorical``.

    y: array-like of ints in [0, num_classes), any shape (a trailing axis of
    size 1 is dropped, as Keras does). Returns a NumPy array of shape
    ``y.shape + (num_classes,)``; ``num_classes`` defaults to ``max(y) + 1``.
    """
    y = np.asarray(y)
    if y.dtype.kind == "f":
        if not np.all(np.mod(y, 1) == 0):
            raise ValueError("to_categorical: labels must be whole numbers, got non-integer floats")
    elif y.dtype.kind not in "iub":
        raise TypeError(f"to_categorical: labels must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.ndim > 1 and y.shape[-1] == 1:
        y = y.reshape(y.shape[:-1])
    if num_classes is None:
        num_classes = int(y.max()) + 1 if y.size else 0
    num_classes = int(num_classes)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"to_categorical: labels must be in [0, {num_classes}), "
                         f"got values from {int(y.min())} to {int(y.max())}")
    out = np.zeros(y.shape + (num_classes,), dtype=dtype)
    np.put_along_axis(out, y[..., None], 1, axis=-1)
    return out


# ------------------------------------------------------------- normaliser


class Normalizer:
    """Z-score normalisation with a stored mean and standard deviation.

    ``fit(x_train)`` computes the statistics over ``axis`` (default 0: one
    mean and std per feature) on training data only; ``transform`` then
    applies ``(x - mean) / std`` to any data (training, validation, test)
    with those same statistics, as the TF.js Boston-housing example does.
    The std is the population std (ddof=0); a std of 0 (a constant
    feature) is replaced by 1, so that feature becomes 0 rather than NaN.

    Works on NumPy arrays (returns float32 unless x is float64) and on
    deepgpu Tensors (``transform`` then stays on the tensor's backend, with
    deepgpu ops, and is differentiable).
    """

    def __init__(self, axis=0, mean=None, std=None):
        self.axis = tuple(axis) if isinstance(axis, (list, tuple)) else axis
        self.mean = None if mean is None else np.asarray(mean, np.float32)
        self.std = None if std is None else np.asarray(std, np.float32)

    @property
    def fitted(self) -> bool:
        return self.mean is not None

    def fit(self, x, axis=None):
        """Compute the mean and std of ``x`` over ``axis`` (kept as size-1 axes,
        so they broadcast against ``x``). Returns self."""
        if axis is not None:
            self.axis = tuple(axis) if isinstance(axis, (list, tuple)) else axis
        if isinstance(x, Tensor):
            x = x.data_sync()   # a one-off, explicit transfer of the training data
        x = np.asarray(x)
        if x.size == 0:
            raise ValueError("Normalizer.fit: x is empty")
        # Accumulate in float64 without first copying all of x to float64.
        mean = x.mean(axis=self.axis, dtype=np.float64, keepdims=True)
        std = x.std(axis=self.axis, dtype=np.float64, keepdims=True)
        std[std == 0] = 1.0
        self.mean, self.std = mean.astype(np.float32), std.astype(np.float32)
        return self

    def _need_fit(self, what):
        if not self.fitted:
            raise RuntimeError(f"Normalizer.{what}: call fit(x_train) first")

    def transform(self, x):
        """``(x - mean) / std`` with the statistics from ``fit``."""
        self._need_fit("transform")

        if isinstance(x, Tensor):
            return ops.divide(ops.subtract(x, self._on(x, self.mean)), self._on(x, self.std))
        x = np.asarray(x)
        dt = np.float64 if x.dtype == np.float64 else np.float32
        return ((x - self.mean.astype(dt)) / self.std.astype(dt)).astype(dt, copy=False)

    def inverse_transform(self, x):
        """``x * std + mean``: back to the original units."""
        self._need_fit("inverse_transform")

        if isinstance(x, Tensor):
            return ops.add(ops.multiply(x, self._on(x, self.std)), self._on(x, self.mean))
        x = np.asarray(x)
        dt = np.float64 if x.dtype == np.float64 else np.float32
        return (x * self.std.astype(dt) + self.mean.astype(dt)).astype(dt, copy=False)

    def fit_transform(self, x, axis=None):
        return self.fit(x, axis).transform(x)

    @staticmethod
    def _on(x, stat):
        dt = x.dtype if x.dtype.startswith("float") else "float32"
        return tensor(stat, dt, backend=x.backend)

    def get_config(self) -> dict:
        """A JSON-ready dict: axis, and mean / std as nested lists (None before fit)."""
        return {
            "axis": list(self.axis) if isinstance(self.axis, tuple) else self.axis,
            "mean": None if self.mean is None else self.mean.tolist(),
            "std": None if self.std is None else self.std.tolist(),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        shape = None if self.mean is None else self.mean.shape
        return f"Normalizer(axis={self.axis!r}, fitted={self.fitted}, stats_shape={shape})"


# ------------------------------------------------------------------ splits


def _rng(seed):
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _length(a):
    if isinstance(a, (Tensor, np.ndarray)):
        return a.shape[0] if a.ndim else None
    return len(a)


def _take(a, idx):
    """Rows ``idx`` of an array, Tensor (stays on its backend) or list."""
    if isinstance(a, Tensor):
        return ops.gather(a, idx.astype(np.int32), axis=0)
    if isinstance(a, np.ndarray):
        return a[idx]
    return [a[i] for i in idx]


def _stratified_test_indices(labels, n_test, rng):
    classes, y = np.unique(labels, return_inverse=True)
    counts = np.bincount(y)
    if counts.min() < 2:
        raise ValueError(f"train_test_split: stratify needs at least 2 samples of each class; "
                         f"class {classes[counts.argmin()]!r} has {counts.min()}")
    if n_test < len(classes) or len(labels) - n_test < len(classes):
        raise ValueError(f"train_test_split: with stratify, the train and test sets each need at "
                         f"least one sample of each of the {len(classes)} classes "
                         f"(test size {n_test} of {len(labels)})")
    exact = counts * n_test / len(labels)
    take = np.floor(exact).astype(np.int64)
    # Largest remainders get the leftover test slots (ties broken at random).
    short = n_test - take.sum()
    order = np.lexsort((rng.random(len(classes)), -(exact - take)))
    take[order[:short]] += 1
    take = np.clip(take, 1, counts - 1)
    # Clipping can move the total off n_test by a few; put it back on the largest classes.
    diff = n_test - take.sum()
    for c in np.argsort(-counts):
        if diff == 0:
            break
        step = np.clip(diff, 1 - take[c], counts[c] - 1 - take[c])
        take[c] += step
        diff -= step
    test = [rng.permutation(np.flatnonzero(y == c))[:take[c]] for c in range(len(classes))]
    return np.concatenate(test)


def train_test_split(*arrays, test_size=0.25, seed=None, shuffle=True, stratify=None):
    """Split arrays (same first dimension) into train and test parts.

    Returns ``[a_train, a_test, b_train, b_test, ...]`` as scikit-learn does.
    test_size: a fraction in (0, 1) (rounded up) or a whole number of
    samples. seed: int, None or a ``np.random.Generator``; the same seed
    gives the same split. stratify: labels; each class then keeps its
    proportion in both parts (needs ``shuffle=True``). Arrays may be NumPy
    arrays, lists or deepgpu Tensors (split with ``gather`` on their backend).
    """
    if not arrays:
        raise ValueError("train_test_split: give at least one array")
    n = _length(arrays[0])
    for i, a in enumerate(arrays):
        if _length(a) != n:
            raise ValueError(f"train_test_split: array {i} has {_length(a)} samples, array 0 has {n}")
    if isinstance(test_size, float) and 0 < test_size < 1:
        n_test = math.ceil(test_size * n)
    elif isinstance(test_size, (int, np.integer)) and not isinstance(test_size, bool) and 0 < test_size < n:
        n_test = int(test_size)
    else:
        raise ValueError(f"train_test_split: test_size must be a fraction in (0, 1) or a count in "
                         f"[1, {n - 1}], got {test_size!r}")
    if n - n_test < 1:
        raise ValueError(f"train_test_split: test_size {test_size!r} leaves no training samples of {n}")
    rng = _rng(seed)
    if stratify is not None:
        if not shuffle:
            raise ValueError("train_test_split: stratify needs shuffle=True")
        labels = np.asarray(stratify)
        if len(labels) != n:
            raise ValueError(f"train_test_split: stratify has {len(labels)} labels for {n} samples")
        test = _stratified_test_indices(labels, n_test, rng)
        mask = np.ones(n, bool)
        mask[test] = False
        train = rng.permutation(np.flatnonzero(mask))
        test = rng.permutation(test)
    elif shuffle:
        perm = rng.permutation(n)
        train, test = perm[n_test:], perm[:n_test]
    else:
        train, test = np.arange(n - n_test), np.arange(n - n_test, n)
    out = []
    for a in arrays:
        out += [_take(a, train), _take(a, test)]
    return out


# ----------------------------------------------------------------- batches


def _structure_len(x):
    if isinstance(x, dict):
        lens = {k: _length(v) for k, v in x.items()}
    elif isinstance(x, (list, tuple)):
        lens = {i: _length(v) for i, v in enumerate(x)}
    else:
        return _length(x)
    if not lens:
        raise ValueError("batches: an empty list or dict of arrays")
    if len(set(lens.values())) != 1:
        raise ValueError(f"batches: the arrays have different numbers of samples: {lens}")
    return next(iter(lens.values()))


def _select(x, idx):
    if isinstance(x, dict):
        return {k: _select(v, idx) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_select(v, idx) for v in x)
    if isinstance(idx, slice):
        return x[idx]
    return _take(x, idx)


def batches(x, y=None, batch_size=32, shuffle=True, seed=None, drop_remainder=False):
    """Iterate over one epoch of ``(x_batch, y_batch)`` (or ``x_batch`` without y).

    Never copies the whole dataset: with ``shuffle`` only an index
    permutation is made, and each batch is taken by fancy indexing of just
    its rows; without, each batch is a slice (a view). x and y may be arrays
    (NumPy, or deepgpu Tensors), or lists / tuples / dicts of arrays with one
    first dimension; the batches have the same structure. seed: int, None
    or a ``np.random.Generator`` (pass one Generator to get a new order
    every epoch). The last batch is smaller unless ``drop_remainder``.
    """
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batches: batch_size must be >= 1, got {batch_size}")
    n = _structure_len(x)
    if y is not None and _structure_len(y) != n:
        raise ValueError(f"batches: x has {n} samples, y has {_structure_len(y)}")
    order = _rng(seed).permutation(n) if shuffle else None
    stop = n - n % batch_size if drop_remainder else n
    for start in range(0, stop, batch_size):
        end = min(start + batch_size, n)
        idx = order[start:end] if order is not None else slice(start, end)
        xb = _select(x, idx)
        yield xb if y is None else (xb, _select(y, idx))
