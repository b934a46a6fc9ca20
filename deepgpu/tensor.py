"""Tensor: a backend array plus the autograd link to the op that made it.

Values reach the host only through ``data_sync()`` (a NumPy copy), as in
TF.js. A CUDA tensor refuses implicit conversion (``np.asarray(t)``,
``float(t)``, ``bool(t)``) with a TypeError naming ``data_sync()``; a CPU
tensor allows it, since no transfer is hidden there.
"""
from __future__ import annotations

from . import backends as _backends
from .backends.base import normalize_dtype

# Live tensors per backend name, {id(tensor): its bytes}, as tf.memory() reports them. Each tensor
# stores itself at birth and pops itself in __del__: one dict store or pop is a single C call under the
# GIL, so counts stay exact across threads without a lock (whose acquire / release, with the counter
# updates, were most of a tensor's bookkeeping; a training step makes and frees a few dozen tensors).
_live: dict[str, dict] = {}


_DTYPE_NAMES: dict = {}


class DisposedTensorError(RuntimeError):
    """A tensor released by ``dispose()`` was read or used in an op (TF.js: "Tensor is disposed")."""


def _disposed_error(*_args, **_kwargs):
    raise DisposedTensorError("tensor is disposed: its memory was released by dispose(), so it cannot "
                              "be read or used in an op")


class _Disposed:
    """Stands in for a disposed tensor's array: keeps ``shape`` and ``dtype`` (as TF.js
    does) and raises DisposedTensorError on any other use, NumPy and CuPy calls included."""

    __slots__ = ("shape", "dtype", "ndim", "size", "nbytes")

    def __init__(self, shape, dtype):
        self.shape, self.dtype = tuple(shape), dtype
        self.ndim, self.nbytes = len(self.shape), 0
        self.size = 1
        for d in self.shape:
            self.size *= d

    def __getattr__(self, name):
        _disposed_error()

    __array__ = __array_ufunc__ = __array_function__ = __getitem__ = __setitem__ = __iter__ = __len__ = _disposed_error
    __float__ = __int__ = __bool__ = __index__ = __neg__ = __pos__ = __abs__ = __invert__ = _disposed_error


for _op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor",
            "lt", "le", "gt", "ge"):
    setattr(_Disposed, f"__{_op}__", _disposed_error)
    setattr(_Disposed, f"__r{_op}__", _disposed_error)
    setattr(_Disposed, f"__i{_op}__", _disposed_error)


class Tensor:
    """An n-dimensional array on one backend, with optional gradient tracking.

    Attributes: ``shape`` (tuple), ``dtype`` (str, e.g. "float32"), ``ndim``,
    ``size``, ``backend`` (name). Operators broadcast as NumPy does.
    """

    # _logits: for a softmax over the last axis, the tensor it was taken of, so
    # that crossentropy losses can use the fused, unclipped log-softmax form
    # (Keras does the same through ``_keras_logits``).
    # _keras_mask: the boolean mask a layer attached (layers.base.get_keras_mask); unset means none.
    __slots__ = ("data", "_backend", "requires_grad", "_node", "_logits", "_keras_mask", "__weakref__")
    # NumPy defers to Tensor's reflected operators (np_array + tensor -> Tensor).
    __array_ufunc__ = None

    def __init__(self, data, backend, requires_grad=False, node=None):
        self.data = data
        self._backend = backend
        self.requires_grad = requires_grad
        self._node = node
        self._logits = None
        live = _live.get(backend.name)
        if live is None:
            live = _live.setdefault(backend.name, {})
        live[id(self)] = int(data.nbytes)  # last: a failed __init__ leaves nothing for __del__ to undo

    def __del__(self):
        try:
            _live[self._backend.name].pop(id(self), None)
        except Exception:  # interpreter shutdown, or __init__ failed before _backend was set
            pass

    # ------------------------------------------------------------ properties
    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> str:
        dt = self.data.dtype
        name = _DTYPE_NAMES.get(dt)
        if name is None:  # NumPy builds dtype.name in Python: ~1 us, and ops ask for it often
            name = _DTYPE_NAMES[dt] = dt.name
        return name

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return int(self.data.size)

    @property
    def rank(self) -> int:
        return self.data.ndim

    @property
    def backend(self) -> str:
        return self._backend.name

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    # ------------------------------------------------------------- transfers
    def data_sync(self):
        """A NumPy copy of the values (waits for the device on CUDA).

        Raises DisposedTensorError after ``dispose()``.
        """
        if type(self.data) is _Disposed:
            _disposed_error()
        return self._backend.to_numpy(self.data)

    def numpy(self):
        """The values as a NumPy array: an explicit host read, as ``data_sync()`` (Keras's spelling)."""
        return self.data_sync()

    def array_sync(self):
        """The values as nested Python lists (or a scalar for 0-d)."""
        return self.data_sync().tolist()

    def item(self):
        """The single value as a Python scalar (a host transfer)."""
        if self.size != 1:
            raise ValueError(f"item() needs a tensor of one element, this one has shape {self.shape}")
        return self.data_sync().reshape(()).item()

    def to(self, backend: str) -> "Tensor":
        """A copy of this tensor on ``backend`` ("cpu", "cuda", "auto"); no gradient link."""
        b = _backends.get(backend)
        if b is self._backend:
            return self
        return Tensor(b.asarray(self.data_sync(), self.dtype), b)

    def _refuse(self, what):
        raise TypeError(
            f"{what} of a tensor on the {self.backend!r} backend would copy it to the host "
            f"silently; call .data_sync() to get a NumPy array")

    def __array__(self, dtype=None, copy=None):
        if self._backend.name != "cpu":
            self._refuse("np.asarray()")
        return self.data if dtype is None else self.data.astype(dtype)

    def __float__(self):
        if self._backend.name != "cpu":
            self._refuse("float()")
        return float(self.data)

    def __int__(self):
        if self._backend.name != "cpu":
            self._refuse("int()")
        return int(self.data)

    def __bool__(self):
        if self._backend.name != "cpu":
            self._refuse("bool()")
        return bool(self.data)

    def __index__(self):
        if self._backend.name != "cpu" or self.dtype not in ("int32", "int64", "uint8", "int8"):
            self._refuse("use as an index")
        return int(self.data)

    # --------------------------------------------------------------- display
    @property
    def is_disposed(self) -> bool:
        """True after ``dispose()`` (TF.js's ``isDisposed``)."""
        return type(self.data) is _Disposed

    def __repr__(self):
        if self.is_disposed:
            return f"Tensor(shape={self.shape}, dtype={self.dtype}, disposed)"
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, backend={self.backend}{grad})"

    def to_string(self, verbose=False) -> str:
        import numpy as np

        vals = np.array2string(self.data_sync(), separator=", ", threshold=60, edgeitems=3)
        head = "Tensor"
        if verbose:
            head += f"\n  dtype: {self.dtype}\n  rank: {self.ndim}\n  shape: {list(self.shape)}\n  values:"
        return f"{head}\n    " + vals.replace("\n", "\n    ")

    def print(self, verbose=False) -> None:
        """Print like TF.js ``tensor.print()`` (a host transfer)."""
        print(self.to_string(verbose))

    __hash__ = object.__hash__

    # ------------------------------------------------------ operator methods
    def __add__(self, o): return _ops().add(self, o)
    def __radd__(self, o): return _ops().add(o, self)
    def __sub__(self, o): return _ops().subtract(self, o)
    def __rsub__(self, o): return _ops().subtract(o, self)
    def __mul__(self, o): return _ops().multiply(self, o)
    def __rmul__(self, o): return _ops().multiply(o, self)
    def __truediv__(self, o): return _ops().divide(self, o)
    def __rtruediv__(self, o): return _ops().divide(o, self)
    def __floordiv__(self, o): return _ops().floor_divide(self, o)
    def __mod__(self, o): return _ops().mod(self, o)
    def __pow__(self, o): return _ops().pow(self, o)
    def __rpow__(self, o): return _ops().pow(o, self)
    def __matmul__(self, o): return _ops().matmul(self, o)
    def __rmatmul__(self, o): return _ops().matmul(o, self)
    def __neg__(self): return _ops().negative(self)
    def __pos__(self): return self
    def __abs__(self): return _ops().abs(self)
    def __eq__(self, o): return _ops().equal(self, o)
    def __ne__(self, o): return _ops().not_equal(self, o)
    def __lt__(self, o): return _ops().less(self, o)
    def __le__(self, o): return _ops().less_equal(self, o)
    def __gt__(self, o): return _ops().greater(self, o)
    def __ge__(self, o): return _ops().greater_equal(self, o)
    def __getitem__(self, key): return _ops().getitem(self, key)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        return _ops().reshape(self, shape)

    def transpose(self, *perm):
        if len(perm) == 1 and isinstance(perm[0], (tuple, list)):
            perm = perm[0]
        return _ops().transpose(self, perm or None)

    @property
    def T(self):
        return _ops().transpose(self)

    def flatten(self):
        return _ops().reshape(self, (-1,))

    def sum(self, axis=None, keepdims=False): return _ops().sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return _ops().mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return _ops().max(self, axis, keepdims)
    def min(self, axis=None, keepdims=False): return _ops().min(self, axis, keepdims)
    def argmax(self, axis=None): return _ops().argmax(self, axis)
    def argmin(self, axis=None): return _ops().argmin(self, axis)
    def astype(self, dtype): return _ops().cast(self, dtype)
    def square(self): return _ops().square(self)
    def sqrt(self): return _ops().sqrt(self)
    def exp(self): return _ops().exp(self)
    def log(self): return _ops().log(self)
    def abs(self): return _ops().abs(self)
    def relu(self): return _ops().relu(self)
    def sigmoid(self): return _ops().sigmoid(self)
    def tanh(self): return _ops().tanh(self)
    def softmax(self, axis=-1): return _ops().softmax(self, axis)
    def expand_dims(self, axis): return _ops().expand_dims(self, axis)
    def squeeze(self, axis=None): return _ops().squeeze(self, axis)
    def clip(self, lo, hi): return _ops().clip(self, lo, hi)

    def dispose(self):
        """Release this tensor's memory now. It keeps its ``shape`` and ``dtype``;
        reading it (``data_sync()``) or using it in an op then raises
        DisposedTensorError, as TF.js does. Disposing twice is harmless."""
        if self.is_disposed:
            return
        self._node = None
        self._logits = None
        self.data = _Disposed(self.data.shape, self.data.dtype)
        _live[self._backend.name].pop(id(self), None)  # as TF.js: memory() counts it no more

    def backward(self, dy=None):
        """Gradients of this tensor with respect to every Variable it depends on.

        Returns {Variable: gradient Tensor}. ``dy`` defaults to ones.
        """
        from .autograd import _backward_all_variables
        return _backward_all_variables(self, dy)


class Variable(Tensor):
    """A mutable tensor that holds a model's state (weights, statistics).

    ``trainable`` variables are differentiated by ``grad``-family functions
    and updated by optimizers. ``assign(value)`` replaces the values in place
    (same shape and dtype, else ValueError).
    """

    __slots__ = ("trainable", "name", "constraint", "_user_trainable")
    _uid = [0]

    def __init__(self, value, trainable=True, name=None, dtype=None, constraint=None):
        t = value if isinstance(value, Tensor) else tensor(value, dtype=dtype)
        data = t._backend.copy(t.data)
        if dtype is not None:
            data = t._backend.cast(data, dtype)
        super().__init__(data, t._backend, requires_grad=bool(trainable))
        self.trainable = bool(trainable)
        if name is None:
            Variable._uid[0] += 1
            name = f"Variable_{Variable._uid[0]}"
        self.name = name
        self.constraint = constraint
        self._user_trainable = bool(trainable)

    def __repr__(self):
        return (f"Variable(name={self.name!r}, shape={self.shape}, dtype={self.dtype}, "
                f"trainable={self.trainable}, backend={self.backend})")

    def set_trainable(self, flag: bool):
        self.trainable = bool(flag)
        self.requires_grad = bool(flag)

    def assign(self, value) -> "Variable":
        """Replace the values with ``value`` (Tensor, array or nested list)."""
        if isinstance(value, Tensor):
            if value._backend is not self._backend:
                raise ValueError(
                    f"cannot assign a tensor on the {value.backend!r} backend to variable "
                    f"{self.name!r} on {self.backend!r}")
            new = value.data
        else:
            new = self._backend.asarray(value, self.dtype)
        if tuple(new.shape) != self.shape:
            raise ValueError(
                f"cannot assign a value of shape {tuple(new.shape)} to variable {self.name!r} "
                f"of shape {self.shape}")
        self.data[...] = new
        return self

    def assign_add(self, value) -> "Variable":
        v = value.data if isinstance(value, Tensor) else self._backend.asarray(value, self.dtype)
        self.data += v
        return self

    def assign_sub(self, value) -> "Variable":
        v = value.data if isinstance(value, Tensor) else self._backend.asarray(value, self.dtype)
        self.data -= v
        return self


def _ops():
    from . import ops
    return ops


# --------------------------------------------------------------- creation
def _backend(backend=None):
    return _backends.current() if backend is None else _backends.get(backend)


def tensor(data, dtype=None, backend=None, shape=None) -> Tensor:
    """A tensor from nested lists, a NumPy array, a scalar or another Tensor.

    dtype: "float32" (default for float data), "int32" (default for int
    data), "bool", "float64" (explicit only), ... ValueError for an unknown
    dtype, TypeError for non-numeric data. ``shape`` reshapes flat values
    (as TF.js ``tf.tensor(values, shape)``).
    """
    if isinstance(data, Tensor):
        if dtype is not None and normalize_dtype(dtype).name != data.dtype:
            data = data.astype(dtype)
        t = data if backend is None else data.to(backend)
    else:
        b = _backend(backend)
        t = Tensor(b.asarray(data, dtype), b)
    return t if shape is None else t.reshape(tuple(shape))


def tensor1d(values, dtype=None):
    return tensor(values, dtype).reshape(-1)


def tensor2d(values, shape=None, dtype=None):
    """TF.js ``tf.tensor2d(values, shape)``: a rank-2 tensor."""
    t = tensor(values, dtype, shape=shape)
    if t.ndim != 2:
        raise ValueError(f"tensor2d needs rank-2 values or a 2-D shape, got shape {t.shape}")
    return t


def tidy(fn):
    """TF.js ``tf.tidy``: run ``fn`` and return its result.

    Python frees a tensor as soon as nothing refers to it, so the
    intermediates of ``fn`` are already released when it returns; this
    exists so TF.js code ports line for line.
    """
    return fn()


def dispose(*tensors):
    """TF.js ``tf.dispose``: release the given tensors' memory now (each then raises on use)."""
    for t in tensors:
        for x in (t if isinstance(t, (list, tuple)) else [t]):
            if isinstance(x, Tensor):
                x.dispose()


def scalar(value, dtype=None, backend=None) -> Tensor:
    return tensor(value, dtype, backend)


def _shape(shape):
    if isinstance(shape, int):
        return (shape,)
    try:
        s = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise TypeError(f"shape must be an int or a sequence of ints, got {shape!r}") from None
    if any(d < 0 for d in s):
        raise ValueError(f"shape must not have negative sizes, got {s}")
    return s


def zeros(shape, dtype="float32", backend=None) -> Tensor:
    b = _backend(backend)
    return Tensor(b.zeros(_shape(shape), dtype), b)


def ones(shape, dtype="float32", backend=None) -> Tensor:
    b = _backend(backend)
    return Tensor(b.ones(_shape(shape), dtype), b)


def fill(shape, value, dtype="float32", backend=None) -> Tensor:
    b = _backend(backend)
    return Tensor(b.full(_shape(shape), value, dtype), b)


def zeros_like(t: Tensor) -> Tensor:
    return Tensor(t._backend.zeros(t.shape, t.dtype), t._backend)


def ones_like(t: Tensor) -> Tensor:
    return Tensor(t._backend.ones(t.shape, t.dtype), t._backend)


def arange(start, stop=None, step=1, dtype="int32", backend=None) -> Tensor:
    b = _backend(backend)
    return Tensor(b.arange(start, stop, step, dtype), b)


def random_normal(shape, mean=0.0, stddev=1.0, dtype="float32", seed=None, backend=None) -> Tensor:
    """Normal samples; ``seed`` reseeds the generator first (as set_seed does)."""
    b = _backend(backend)
    if seed is not None:
        b.seed(seed)
    return Tensor(b.random_normal(_shape(shape), mean, stddev, dtype), b)


def random_uniform(shape, minval=0.0, maxval=1.0, dtype="float32", seed=None, backend=None) -> Tensor:
    """Uniform samples in [minval, maxval)."""
    b = _backend(backend)
    if seed is not None:
        b.seed(seed)
    return Tensor(b.random_uniform(_shape(shape), minval, maxval, dtype), b)


def truncated_normal(shape, mean=0.0, stddev=1.0, dtype="float32", seed=None, backend=None) -> Tensor:
    b = _backend(backend)
    if seed is not None:
        b.seed(seed)
    return Tensor(b.truncated_normal(_shape(shape), mean, stddev, dtype), b)


def set_seed(n: int) -> None:
    """Seed the random generators of every backend (present and future)."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"set_seed expects an int, got {type(n).__name__}")
    _backends.get("cpu").seed(n)
    for b in _backends.instantiated():
        b.seed(n)


def memory() -> dict:
    """Live tensors and their bytes, per backend and in all, plus device-pool figures.

    Keys: ``num_tensors``, ``num_bytes``, ``backends`` ({name: {num_tensors,
    num_bytes, ...memory_info}}).
    """
    out = {"num_tensors": 0, "num_bytes": 0, "backends": {}}
    counts = {}
    for name, live in list(_live.items()):
        live = live.copy()  # one C call: a snapshot even while other threads make and free tensors
        counts[name] = (len(live), sum(live.values()))
    for b in _backends.instantiated():
        n, nbytes = counts.get(b.name, (0, 0))
        out["backends"][b.name] = {"num_tensors": n, "num_bytes": nbytes, **b.memory_info()}
        out["num_tensors"] += n
        out["num_bytes"] += nbytes
    return out
