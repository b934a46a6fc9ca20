"""Every Backend primitive, on every available backend, against an independent NumPy reference.

References are written here with plain NumPy (and naive loops for the
convolution and pooling family), in float64, and compared with the backend's
float32 result: relative error under 1e-4. On a CPU-only machine these check
the NumPy backend; on a GPU machine the same tests run again on "cuda".
"""
import inspect
import math

import numpy as np
import pytest

from deepgpu import backends
from deepgpu.backends.base import Backend
from deepgpu.backends.cupy_backend import CupyBackend
from deepgpu.backends.numpy_backend import NumpyBackend

RNG = np.random.default_rng(7)
F32 = np.float32

# Names of the primitives a test below checks; test_every_primitive_is_covered
# makes sure a primitive added to Backend gets a parity test too.
COVERED = set()


def covers(*names):
    def deco(fn):
        COVERED.update(names)
        return fn
    return deco


@pytest.fixture
def B(backend):
    return backends.current()


def r(*shape, lo=-1.0, hi=1.0):
    return RNG.uniform(lo, hi, size=shape).astype(F32)


def host(B, a):
    out = B.to_numpy(a)
    assert isinstance(out, np.ndarray)
    return out


def close(B, actual, ref, rtol=1e-4, dtype=F32):
    """Backend array vs float64 reference: same shape, dtype, max error under rtol * max|ref|."""
    a = host(B, actual)
    ref = np.asarray(ref)
    assert a.shape == ref.shape, f"shape {a.shape} != reference {ref.shape}"
    if dtype is not None:
        assert a.dtype == np.dtype(dtype), f"dtype {a.dtype} != {np.dtype(dtype)}"
    scale = max(float(np.abs(ref).max(initial=0.0)), 1e-6)
    err = float(np.abs(a.astype(np.float64) - ref).max(initial=0.0))
    assert err <= rtol * scale, f"max error {err:.3g} exceeds {rtol} * {scale:.3g}"


def same(B, actual, ref, dtype=None):
    a = host(B, actual)
    assert a.shape == np.shape(ref)
    if dtype is not None:
        assert a.dtype == np.dtype(dtype), f"dtype {a.dtype} != {np.dtype(dtype)}"
    np.testing.assert_array_equal(a, ref)


def up(B, *arrays):
    return [B.asarray(a, a.dtype) for a in arrays]


# -------------------------------------------------------------- interface

def _methods(cls):
    return {n: v for n, v in vars(cls).items() if inspect.isfunction(v)}


def _interface():
    """Backend's methods, those its mixins (backends/conv3d.py) bring included."""
    out = {}
    for cls in reversed(Backend.__mro__[:-1]):
        out.update(_methods(cls))
    return out


def test_every_backend_method_is_implemented_with_the_base_signature():
    base = _interface()
    assert len(base) > 80
    for cls in (NumpyBackend, CupyBackend):
        for name, fn in base.items():
            impl = getattr(cls, name, None)
            assert callable(impl), f"{cls.__name__} lacks {name}"
            assert inspect.signature(impl) == inspect.signature(fn), (
                f"{cls.__name__}.{name}{inspect.signature(impl)} differs from "
                f"Backend.{name}{inspect.signature(fn)}")
        for name, fn in _methods(cls).items():
            if name in base:
                continue
            assert name.startswith("_"), f"{cls.__name__}.{name} is public but not part of the Backend interface"


def test_every_primitive_is_covered():
    public = {n for n in _interface() if not n.startswith("_")}
    missing = sorted(public - COVERED)
    assert not missing, f"primitives without a parity test in this file: {missing}"


def test_backend_names():
    assert NumpyBackend.name == "cpu" and CupyBackend.name == "cuda"


# --------------------------------------------------------- info / creation

@covers("is_array", "sync", "memory_info", "to_numpy", "copy")
def test_info_and_transfers(B, backend):
    a = B.asarray(np.arange(6, dtype=F32).reshape(2, 3))
    assert B.is_array(a)
    assert not B.is_array([1, 2]) and not B.is_array(3.0)
    assert B.sync() is None
    assert isinstance(B.memory_info(), dict)
    if backend == "cuda":
        assert not B.is_array(np.zeros(2))
        assert {"pool_used_bytes", "pool_total_bytes"} <= set(B.memory_info())
    h = B.to_numpy(a)
    h[0, 0] = 99
    same(B, a, np.arange(6, dtype=F32).reshape(2, 3))
    c = B.copy(a)
    c[0, 0] = 42
    assert host(B, a)[0, 0] == 0 and host(B, c)[0, 0] == 42
    assert repr(B) == f"<deepgpu backend {backend!r}>"


@covers("asarray")
def test_asarray(B):
    same(B, B.asarray([[1, 2], [3, 4]]), np.array([[1, 2], [3, 4]], np.int32), "int32")
    same(B, B.asarray(np.arange(3, dtype=np.int64)), np.arange(3), "int32")
    close(B, B.asarray(np.array([0.1, 0.2], np.float64)), [0.1, 0.2])
    close(B, B.asarray([0.5, 1.5]), [0.5, 1.5])
    close(B, B.asarray(np.array([1.0, 2.0]), "float64"), [1.0, 2.0], dtype="float64")
    same(B, B.asarray([True, False]), [True, False], "bool")
    same(B, B.asarray(3), np.int32(3), "int32")
    same(B, B.asarray([1, 2], "float16"), np.array([1, 2], np.float16), "float16")
    same(B, B.asarray(np.array([1, 200], np.uint8)), [1, 200], "int32")
    a = B.asarray([1.0, 2.0])
    same(B, B.asarray(a, "int32"), [1, 2], "int32")
    with pytest.raises(TypeError):
        B.asarray(["a", "b"])
    with pytest.raises(TypeError):
        B.asarray({"a": 1})
    with pytest.raises(TypeError):
        B.asarray([[1, 2], [3]])
    with pytest.raises(ValueError):
        B.asarray([1, 2], "complex64")


@covers("zeros", "ones", "full", "arange")
def test_constant_creation(B):
    same(B, B.zeros((2, 3)), np.zeros((2, 3), F32), "float32")
    same(B, B.ones((4,), "int32"), np.ones(4, np.int32), "int32")
    same(B, B.full((2, 2), 2.5), np.full((2, 2), 2.5, F32), "float32")
    same(B, B.full((3,), 7, "int32"), np.full(3, 7), "int32")
    same(B, B.arange(5), np.arange(5), "int32")
    same(B, B.arange(2, 11, 3), np.array([2, 5, 8]), "int32")
    close(B, B.arange(0, 1, 0.25, "float32"), [0, 0.25, 0.5, 0.75])


# ------------------------------------------------------------------ random
# Initial values are drawn on the host from one seeded generator, so the
# same seed gives the same numbers on every backend.

@covers("seed", "random_normal")
def test_random_normal_is_the_seeded_host_generator(B):
    B.seed(11)
    a = B.random_normal((3, 4), 0.5, 2.0)
    close(B, a, np.random.default_rng(11).normal(0.5, 2.0, size=(3, 4)).astype(F32))
    B.seed(11)
    same(B, B.random_normal((3, 4), 0.5, 2.0), host(B, a))


@covers("random_uniform")
def test_random_uniform(B):
    B.seed(5)
    a = B.random_uniform((500,), -2.0, 3.0)
    close(B, a, np.random.default_rng(5).uniform(-2.0, 3.0, size=500).astype(F32))
    h = host(B, a)
    assert h.min() >= -2.0 and h.max() < 3.0
    B.seed(5)
    i = host(B, B.random_uniform((1000,), 0, 4, "int32"))
    assert i.dtype == np.int32 and set(np.unique(i)) == {0, 1, 2, 3}


@covers("truncated_normal")
def test_truncated_normal(B):
    B.seed(3)
    h = host(B, B.truncated_normal((2000,), 1.0, 0.5))
    assert h.dtype == F32
    assert h.min() >= 0.0 and h.max() <= 2.0
    assert abs(h.mean() - 1.0) < 0.05
    B.seed(3)
    same(B, B.truncated_normal((2000,), 1.0, 0.5), h)


@covers("permutation")
def test_permutation(B):
    B.seed(9)
    p = np.asarray(B.permutation(10))
    np.testing.assert_array_equal(np.sort(p), np.arange(10))
    np.testing.assert_array_equal(p, np.random.default_rng(9).permutation(10))


@covers("dropout_mask")
def test_dropout_mask(B):
    B.seed(1)
    m = host(B, B.dropout_mask((100, 100), 0.25))
    assert m.dtype == F32
    vals = set(np.unique(m).tolist())
    assert vals == {0.0, np.float32(1 / 0.75)}
    assert abs((m == 0).mean() - 0.25) < 0.02
    assert abs(m.mean() - 1.0) < 0.03


@covers("dropout")
@pytest.mark.parametrize("shape", [(100, 100), (3, 7, 5), (1,)])
def test_dropout(B, shape):
    """The product is x times the mask it returns; the mask as dropout_mask's."""
    B.seed(2)
    x = r(*shape, lo=0.5, hi=1.5)
    y, mask = B.dropout(B.asarray(x), 0.25)
    m = host(B, mask)
    assert m.shape == shape and m.dtype == F32
    assert set(np.unique(m).tolist()) <= {0.0, np.float32(1 / 0.75)}
    close(B, y, x.astype(np.float64) * m, rtol=1e-6)
    if m.size > 1000:
        assert abs((m == 0).mean() - 0.25) < 0.02
    y0, m0 = B.dropout(B.asarray(x), 0.0)
    close(B, y0, x, rtol=0)
    same(B, m0, np.ones(shape, F32))


# ------------------------------------------------------------- elementwise

BINARY = {
    "add": np.add, "subtract": np.subtract, "multiply": np.multiply, "divide": np.divide,
    "maximum": np.maximum, "minimum": np.minimum,
}


@covers(*BINARY)
@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("sa,sb", [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1), (1, 5))])
def test_binary(B, name, sa, sb):
    a, b = r(*sa), r(*sb, lo=0.5, hi=2.0) * np.sign(r(*sb))
    out = getattr(B, name)(*up(B, a, b))
    close(B, out, BINARY[name](a.astype(np.float64), b.astype(np.float64)))


@covers("floor_divide", "mod")
def test_floor_divide_mod(B):
    a = np.array([7.5, -7.5, 3.25, -0.75, 9.0], F32)
    b = np.array([2.0, 2.0, -1.5, 0.5, 4.0], F32)
    close(B, B.floor_divide(*up(B, a, b)), [3, -4, -3, -2, 2])
    close(B, B.mod(*up(B, a, b)), [1.5, 0.5, -1.25, 0.25, 1.0])
    ai, bi = np.array([7, -7, 9], np.int32), np.array([2, 2, -4], np.int32)
    same(B, B.floor_divide(*up(B, ai, bi)), [3, -4, -3], "int32")
    same(B, B.mod(*up(B, ai, bi)), [1, 1, -3], "int32")


@covers("power")
def test_power(B):
    a, b = r(3, 4, lo=0.5, hi=2.0), r(3, 4, lo=-2, hi=2)
    close(B, B.power(*up(B, a, b)), np.exp(b.astype(np.float64) * np.log(a.astype(np.float64))))
    x = r(5)
    close(B, B.power(B.asarray(x), B.asarray(np.float32(3.0))), x.astype(np.float64) ** 3)


UNARY = {
    "negative": (lambda x: -x, (-2, 2)),
    "exp": (np.exp, (-3, 3)),
    "log": (np.log, (0.1, 5)),
    "log1p": (np.log1p, (-0.5, 5)),
    "sqrt": (np.sqrt, (0.01, 4)),
    "abs": (np.abs, (-2, 2)),
    "sign": (np.sign, (-2, 2)),
    "square": (lambda x: x * x, (-2, 2)),
    "floor": (np.floor, (-3, 3)),
    "round": (np.round, (-3, 3)),
    "relu": (lambda x: np.where(x > 0, x, 0.0), (-2, 2)),
    "sigmoid": (lambda x: 1 / (1 + np.exp(-x)), (-30, 30)),
    "tanh": (np.tanh, (-4, 4)),
    "sin": (np.sin, (-7, 7)),
    "cos": (np.cos, (-7, 7)),
    "softplus": (lambda x: np.log(1 + np.exp(x)), (-20, 20)),
}


@covers(*UNARY)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(B, name):
    ref, (lo, hi) = UNARY[name]
    x = r(4, 5, lo=lo, hi=hi)
    if name == "round":
        x[np.abs(x - np.floor(x) - 0.5) < 0.01] += 0.1
    close(B, getattr(B, name)(B.asarray(x)), ref(x.astype(np.float64)))


def test_unary_float64_stays_float64(B):
    x = np.linspace(-2, 2, 9)
    refs = {"exp": np.exp(x), "sigmoid": 1 / (1 + np.exp(-x)), "tanh": np.tanh(x),
            "softplus": np.log1p(np.exp(x)), "relu": np.maximum(x, 0),
            "elu": np.where(x > 0, x, np.exp(x) - 1), "leaky_relu": np.where(x > 0, x, 0.2 * x)}
    for name, ref in refs.items():
        close(B, getattr(B, name)(B.asarray(x, "float64")), ref, rtol=1e-12, dtype="float64")


def test_sigmoid_softplus_extremes(B):
    x = np.array([-1000.0, -80.0, 0.0, 80.0, 1000.0], F32)
    s = host(B, B.sigmoid(B.asarray(x)))
    assert np.isfinite(s).all()
    np.testing.assert_allclose(s, [0, 0, 0.5, 1, 1], atol=1e-30)
    sp = host(B, B.softplus(B.asarray(x)))
    assert np.isfinite(sp).all()
    np.testing.assert_allclose(sp, [0, 0, math.log(2), 80, 1000], rtol=1e-6, atol=1e-30)


@covers("elu", "leaky_relu")
@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_elu_leaky_relu(B, alpha):
    x = r(4, 5, lo=-3, hi=3)
    xd = x.astype(np.float64)
    close(B, B.elu(B.asarray(x), alpha), np.where(xd > 0, xd, alpha * (np.exp(xd) - 1)))
    close(B, B.leaky_relu(B.asarray(x), alpha), np.where(xd > 0, xd, alpha * xd))


@covers("relu_grad")
def test_relu_grad(B):
    x, dy = r(4, 5), r(4, 5)
    close(B, B.relu_grad(*up(B, dy, x)), np.where(x > 0, dy, 0.0))


@covers("clip")
def test_clip(B):
    x = r(4, 5, lo=-2, hi=2)
    close(B, B.clip(B.asarray(x), -0.5, 0.75), np.minimum(np.maximum(x, -0.5), 0.75))


@covers("where")
def test_where(B):
    c = r(3, 4) > 0
    a, b = r(3, 4), r(4)
    out = B.where(B.asarray(c), *up(B, a, b))
    close(B, out, np.array([[a[i, j] if c[i, j] else b[j] for j in range(4)] for i in range(3)]))


@covers("cast")
def test_cast(B):
    x = np.array([1.7, -2.2, 0.0, 3.5], F32)
    a = B.asarray(x)
    assert B.cast(a, "float32") is a
    same(B, B.cast(a, "int32"), np.array([1, -2, 0, 3]), "int32")
    same(B, B.cast(a, "bool"), [True, True, False, True], "bool")
    close(B, B.cast(a, "float64"), x.astype(np.float64), dtype="float64")
    close(B, B.cast(a, "float16"), x.astype(np.float16), rtol=1e-3, dtype="float16")
    with pytest.raises(ValueError):
        B.cast(a, "float128")


@covers("compare")
@pytest.mark.parametrize("op,ref", [("==", np.equal), ("!=", np.not_equal), ("<", np.less),
                                    ("<=", np.less_equal), (">", np.greater), (">=", np.greater_equal)])
def test_compare(B, op, ref):
    a = np.array([[1, 2, 3], [4, 5, 6]], F32)
    b = np.array([3, 2, 1], F32)
    same(B, B.compare(op, *up(B, a, b)), ref(a, b), "bool")


@covers("logical")
def test_logical(B):
    a = np.array([True, True, False, False])
    b = np.array([True, False, True, False])
    da, db = up(B, a, b)
    same(B, B.logical("and", da, db), [True, False, False, False], "bool")
    same(B, B.logical("or", da, db), [True, True, True, False], "bool")
    same(B, B.logical("xor", da, db), [False, True, True, False], "bool")
    same(B, B.logical("not", da), [False, False, True, True], "bool")


@covers("isnan", "isfinite")
def test_isnan_isfinite(B):
    x = np.array([1.0, np.nan, np.inf, -np.inf, 0.0], F32)
    same(B, B.isnan(B.asarray(x)), [False, True, False, False, False], "bool")
    same(B, B.isfinite(B.asarray(x)), [True, False, False, False, True], "bool")


# --------------------------------------------------------------- softmax

def _ref_softmax(x, axis):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@covers("softmax", "log_softmax")
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax(B, axis):
    x = r(3, 4, 5, lo=-5, hi=5)
    close(B, B.softmax(B.asarray(x), axis), _ref_softmax(x, axis))
    close(B, B.log_softmax(B.asarray(x), axis), np.log(_ref_softmax(x, axis)))


def test_softmax_large_logits(B):
    x = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1000.0, -1000.0]], F32)
    close(B, B.softmax(B.asarray(x)), _ref_softmax(x, -1))
    ls = host(B, B.log_softmax(B.asarray(x)))
    assert np.isfinite(ls).all()


@covers("softmax_cross_entropy")
@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_cross_entropy(B, axis):
    logits = r(4, 6, lo=-4, hi=4)
    labels = r(4, 6, lo=0, hi=1)
    labels /= labels.sum(axis=axis, keepdims=True)
    loss, p = B.softmax_cross_entropy(*up(B, logits, labels), axis)
    ref_p = _ref_softmax(logits, axis)
    close(B, loss, -(labels * np.log(ref_p)).sum(axis=axis))
    close(B, p, ref_p)


@covers("softmax_cross_entropy_grad")
@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_cross_entropy_grad(B, axis):
    p, labels = r(4, 6, lo=0, hi=1), r(4, 6, lo=0, hi=1)
    dy = r(*np.delete(np.array((4, 6)), axis))
    close(B, B.softmax_cross_entropy_grad(*up(B, p, labels, dy), axis),
          (p.astype(np.float64) - labels) * np.expand_dims(dy, axis))


@covers("sparse_softmax_cross_entropy", "sparse_softmax_cross_entropy_grad")
@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 300), (1, 1)])
@pytest.mark.parametrize("label_dtype", ["int32", "int64", "uint8"])
def test_sparse_softmax_cross_entropy(B, shape, label_dtype):
    logits = r(*shape, lo=-6, hi=6)
    classes = shape[-1]
    labels = RNG.integers(0, classes, shape[:-1])
    flat = labels.reshape(-1)
    if flat.size > 2 and label_dtype != "uint8":
        flat[1] = -1  # no class: loss 0 and gradient 0 (the row is ignored)
    if flat.size > 3:
        flat[2] = classes
    labels = labels.astype(label_dtype)
    ref_p = _ref_softmax(logits, -1)
    onehot = (labels[..., None].astype(np.int64) == np.arange(classes)).astype(np.float64)
    loss, p = B.sparse_softmax_cross_entropy(B.asarray(logits), B.asarray(labels, label_dtype))
    close(B, loss, -(onehot * np.log(ref_p)).sum(axis=-1))
    close(B, p, ref_p)
    dy = r(*shape[:-1])
    g = B.sparse_softmax_cross_entropy_grad(p, B.asarray(labels, label_dtype), B.asarray(dy))
    close(B, g, (ref_p * onehot.sum(-1, keepdims=True) - onehot) * dy[..., None])  # 0 where no class


# ------------------------------------------------------------- reductions

REDUCTIONS = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min, "prod": np.prod}


@covers(*REDUCTIONS)
@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@pytest.mark.parametrize("axis,keepdims", [(None, False), (None, True), (0, False), (1, True), ((0, 2), False),
                                           ((0, 1, 2), True)])
def test_reductions(B, name, axis, keepdims):
    x = r(3, 4, 2, lo=0.5, hi=1.5) * np.sign(r(3, 4, 2))
    close(B, getattr(B, name)(B.asarray(x), axis=axis, keepdims=keepdims),
          REDUCTIONS[name](x.astype(np.float64), axis=axis, keepdims=keepdims))


@covers("argmax", "argmin")
@pytest.mark.parametrize("axis", [None, 0, 1, -1])
def test_argmax_argmin(B, axis):
    x = r(5, 6)
    same(B, B.argmax(B.asarray(x), axis), np.argmax(x, axis), "int32")
    same(B, B.argmin(B.asarray(x), axis), np.argmin(x, axis), "int32")


@covers("argmax_hits")
@pytest.mark.parametrize("shape", [(6, 5), (2, 3, 4), (4, 1)])
def test_argmax_hits(B, shape):
    for dt in ("int32", "int64"):
        x = r(*shape)
        flat = x.reshape(-1, shape[-1])
        if shape[-1] > 2:
            flat[0, 1] = flat[0, 2] = flat[0].max() + 1  # a tie: the first maximum counts
            if dt == "int32":  # (int64 labels take CuPy's argmax on a GPU, whose NaN rule is CuPy's)
                flat[1, 2] = np.nan  # a NaN is the maximum, as in np.argmax
        want = np.argmax(x, -1)
        labels = want.copy()
        labels.reshape(-1)[::2] = (labels.reshape(-1)[::2] + 1) % shape[-1]  # every other row misses
        same(B, B.argmax_hits(B.asarray(x), B.asarray(labels, dt)), (want == labels).astype(F32), "float32")


@covers("any", "all")
def test_any_all(B):
    x = np.array([[True, False, False], [True, True, True]])
    a = B.asarray(x)
    same(B, B.any(a), True)
    same(B, B.all(a), False)
    same(B, B.any(a, axis=0), [True, True, True])
    same(B, B.all(a, axis=1), [False, True])
    same(B, B.all(a, axis=1, keepdims=True), [[False], [True]])


@covers("sum_to_shape")
@pytest.mark.parametrize("gshape,shape", [((2, 3, 4), (4,)), ((2, 3, 4), (3, 1)), ((2, 3, 4), (2, 1, 4)),
                                          ((2, 3, 4), (1, 1, 1)), ((2, 3), (2, 3)), ((2, 3), ())])
def test_sum_to_shape(B, gshape, shape):
    g = r(*gshape)
    ref = g.astype(np.float64)
    lead = len(gshape) - len(shape)
    for _ in range(lead):
        ref = ref.sum(axis=0)
    for i, s in enumerate(shape):
        if s == 1 and ref.shape[i] != 1:
            ref = ref.sum(axis=i, keepdims=True)
    close(B, B.sum_to_shape(B.asarray(g), shape), ref)


# ------------------------------------------------------------------ shape

@covers("reshape", "transpose", "broadcast_to")
def test_reshape_transpose_broadcast(B):
    x = r(2, 3, 4)
    a = B.asarray(x)
    same(B, B.reshape(a, (4, 6)), x.reshape(4, 6))
    same(B, B.reshape(a, (-1, 2)), x.reshape(12, 2))
    same(B, B.transpose(a), np.einsum("ijk->kji", x))
    same(B, B.transpose(a, (1, 2, 0)), np.einsum("ijk->jki", x))
    same(B, B.broadcast_to(B.asarray(x[:, :1, :]), (2, 3, 4)), np.repeat(x[:, :1, :], 3, axis=1))
    same(B, B.broadcast_to(B.asarray(x[0, 0]), (3, 2, 4)), np.array([[x[0, 0]] * 2] * 3))


@covers("concat", "stack")
def test_concat_stack(B):
    a, b, c = r(2, 3), r(2, 1), r(2, 2)
    same(B, B.concat(up(B, a, b, c), axis=1),
         np.array([list(a[i]) + list(b[i]) + list(c[i]) for i in range(2)], F32))
    same(B, B.concat(up(B, a, a), axis=0), np.array(list(a) + list(a)))
    same(B, B.stack(up(B, a, a * 2), axis=0), np.array([a, a * 2]))
    st = host(B, B.stack(up(B, a, a * 2), axis=2))
    assert st.shape == (2, 3, 2)
    np.testing.assert_array_equal(st[..., 0], a)
    np.testing.assert_array_equal(st[..., 1], a * 2)


@covers("getitem")
def test_getitem(B):
    x = r(4, 5)
    a = B.asarray(x)
    same(B, B.getitem(a, (1, slice(1, 4))), x[1, 1:4])
    same(B, B.getitem(a, (slice(None, None, -2), Ellipsis)), x[::-2])
    idx = np.array([3, 0, 3], np.int32)
    same(B, B.getitem(a, B.asarray(idx)), np.array([x[3], x[0], x[3]]))
    mask = x > 0
    same(B, B.getitem(a, B.asarray(mask)), np.array([v for v in x.ravel() if v > 0], F32))


@covers("getitem_grad")
def test_getitem_grad_basic(B):
    dy = r(2, 3)
    out = B.getitem_grad(B.asarray(dy), (4, 5), (slice(1, 3), slice(0, 5, 2)))
    ref = np.zeros((4, 5))
    for i in range(2):
        for j in range(3):
            ref[1 + i, 2 * j] = dy[i, j]
    close(B, out, ref)


def test_getitem_grad_repeated_indices_accumulate(B):
    idx = np.array([2, 0, 2, 2], np.int32)
    dy = r(4, 3)
    out = B.getitem_grad(B.asarray(dy), (3, 3), B.asarray(idx))
    ref = np.zeros((3, 3))
    for k, i in enumerate(idx):
        ref[i] += dy[k]
    close(B, out, ref)
    # Two index arrays with a repeated pair.
    rows, cols = np.array([0, 1, 0], np.int32), np.array([2, 1, 2], np.int32)
    dy2 = r(3)
    out2 = B.getitem_grad(B.asarray(dy2), (2, 3), (B.asarray(rows), B.asarray(cols)))
    ref2 = np.zeros((2, 3))
    for k in range(3):
        ref2[rows[k], cols[k]] += dy2[k]
    close(B, out2, ref2)


@covers("pad")
def test_pad(B):
    x = r(2, 3)
    out = B.pad(B.asarray(x), ((1, 0), (2, 1)), 0.5)
    ref = np.full((3, 6), 0.5)
    ref[1:, 2:5] = x
    close(B, out, ref)


@covers("one_hot")
def test_one_hot(B):
    idx = np.array([[0, 3], [2, 5]], np.int32)
    out = B.one_hot(B.asarray(idx), 4)
    ref = np.zeros((2, 2, 4))
    for i in range(2):
        for j in range(2):
            if idx[i, j] < 4:
                ref[i, j, idx[i, j]] = 1
    same(B, out, ref, "float32")
    same(B, B.one_hot(B.asarray(idx), 4, "int32"), ref.astype(np.int32), "int32")


@covers("gather")
def test_gather(B):
    x = r(4, 3, 2)
    idx = np.array([[3, 0], [1, 3]], np.int32)
    out = B.gather(B.asarray(x), B.asarray(idx), 0)
    ref = np.array([[x[3], x[0]], [x[1], x[3]]])
    same(B, out, ref)
    out1 = B.gather(B.asarray(x), B.asarray(np.array([2, -1], np.int32)), 1)
    same(B, out1, np.stack([x[:, 2], x[:, 2]], axis=1))
    with pytest.raises(IndexError):
        B.gather(B.asarray(x), B.asarray(np.array([4], np.int32)), 0)


@covers("gather_grad")
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_gather_grad(B, axis):
    shape = (3, 4, 2)
    idx = np.array([[1, 0], [1, 1]], np.int32)
    dyshape = shape[:axis] + idx.shape + shape[axis + 1:]
    dy = r(*dyshape)
    out = B.gather_grad(B.asarray(dy), shape, B.asarray(idx), axis)
    ref = np.zeros(shape)
    for pos in np.ndindex(*dyshape):
        before, ij, after = pos[:axis], pos[axis:axis + 2], pos[axis + 2:]
        ref[before + (idx[ij],) + after] += dy[pos]
    close(B, out, ref)


@covers("repeat")
def test_repeat(B):
    x = r(2, 3)
    same(B, B.repeat(B.asarray(x), 2, 1), np.array([[v for v in row for _ in range(2)] for row in x]))
    same(B, B.repeat(B.asarray(x), 3, 0), np.array([row for row in x for _ in range(3)]))


# ----------------------------------------------------------------- matmul

def _ref_matmul(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    if a.ndim == 2 and b.ndim == 2:
        return np.array([[sum(a[i, k] * b[k, j] for k in range(a.shape[1])) for j in range(b.shape[1])]
                         for i in range(a.shape[0])])
    return np.einsum("...ik,...kj->...ij", a, b)


@covers("matmul")
@pytest.mark.parametrize("sa,sb,ta,tb", [
    ((5, 7), (7, 3), False, False), ((7, 5), (7, 3), True, False), ((5, 7), (3, 7), False, True),
    ((7, 5), (3, 7), True, True), ((2, 5, 7), (2, 7, 3), False, False), ((2, 5, 7), (7, 3), False, False),
    ((3, 1, 4, 6), (2, 6, 5), False, False), ((2, 6, 4), (2, 5, 6), True, True),
])
def test_matmul(B, sa, sb, ta, tb):
    a, b = r(*sa), r(*sb)
    ra = np.swapaxes(a, -1, -2) if ta else a
    rb = np.swapaxes(b, -1, -2) if tb else b
    close(B, B.matmul(*up(B, a, b), ta, tb), _ref_matmul(ra, rb))


def test_matmul_larger(B):
    a, b = r(64, 200), r(200, 48)
    close(B, B.matmul(*up(B, a, b)), a.astype(np.float64) @ b.astype(np.float64))


ACTS = {None: lambda y: y, "linear": lambda y: y, "relu": lambda y: np.maximum(y, 0),
        "relu6": lambda y: np.clip(y, 0, 6), "sigmoid": lambda y: 1 / (1 + np.exp(-y)), "tanh": np.tanh,
        "elu": lambda y: np.where(y > 0, y, np.exp(y) - 1)}


@covers("dense", "apply_activation")
@pytest.mark.parametrize("activation", list(ACTS))
@pytest.mark.parametrize("bias", [True, False])
def test_dense(B, activation, bias):
    x, w, b = r(6, 5), r(5, 4), r(4)
    pre = _ref_matmul(x, w) + (b if bias else 0)
    out = B.dense(B.asarray(x), B.asarray(w), B.asarray(b) if bias else None, activation)
    close(B, out, ACTS[activation](pre))
    close(B, B.apply_activation(B.asarray(pre.astype(F32)), activation), ACTS[activation](pre))


@covers("dense_grad")
@pytest.mark.parametrize("activation", [None, "relu", "sigmoid", "tanh"])
def test_dense_grad(B, activation):
    x, w, b, dy = r(6, 5), r(5, 7), r(7), r(6, 7)
    y = ACTS[activation](_ref_matmul(x, w) + b).astype(F32)
    g = dy * {None: 1, "relu": y > 0, "sigmoid": y * (1 - y), "tanh": 1 - y * y}[activation]
    dx, dw, db = B.dense_grad(*up(B, dy, x, y, w), activation, True)
    close(B, dx, _ref_matmul(g, w.T))
    close(B, dw, _ref_matmul(x.T, g))
    close(B, db, g.sum(axis=0))
    dx, dw, db = B.dense_grad(*up(B, dy, x, y, w), activation, False, False, True)
    assert dx is None and db is None
    close(B, dw, _ref_matmul(x.T, g))


# ----------------------------------------------------------- convolution

def _same_pads(n, k, s, d):
    eff = (k - 1) * d + 1
    out = -(-n // s)
    total = max((out - 1) * s + eff - n, 0)
    return out, total // 2, total - total // 2


def _geometry(xshape, kshape, s, p, d):
    outs, pads = [], []
    for i in (0, 1):
        n, k = xshape[1 + i], kshape[i]
        if p == "valid":
            outs.append((n - (k - 1) * d[i] - 1) // s[i] + 1)
            pads.append((0, 0))
        else:
            o, before, after = _same_pads(n, k, s[i], d[i])
            outs.append(o)
            pads.append((before, after))
    return outs, pads


def _padded(x, pads, value=0.0):
    n, h, w, c = x.shape
    (t, b), (le, ri) = pads
    out = np.full((n, h + t + b, w + le + ri, c), value, dtype=np.float64)
    out[:, t:t + h, le:le + w, :] = x
    return out


def ref_conv2d(x, k, s, p, d):
    (ho, wo), pads = _geometry(x.shape, k.shape, s, p, d)
    xp = _padded(x, pads)
    kh, kw, c, o = k.shape
    y = np.zeros((x.shape[0], ho, wo, o))
    for n in range(x.shape[0]):
        for i in range(ho):
            for j in range(wo):
                for a in range(kh):
                    for b in range(kw):
                        y[n, i, j] += xp[n, i * s[0] + a * d[0], j * s[1] + b * d[1]] @ k[a, b]
    return y


def ref_conv2d_grad_input(dy, k, xshape, s, p, d):
    (ho, wo), pads = _geometry(xshape, k.shape, s, p, d)
    n_, h, w, c = xshape
    kh, kw = k.shape[:2]
    dxp = np.zeros((n_, h + sum(pads[0]) + kh * d[0] + s[0], w + sum(pads[1]) + kw * d[1] + s[1], c))
    for n in range(n_):
        for i in range(ho):
            for j in range(wo):
                for a in range(kh):
                    for b in range(kw):
                        dxp[n, i * s[0] + a * d[0], j * s[1] + b * d[1]] += k[a, b] @ dy[n, i, j]
    return dxp[:, pads[0][0]:pads[0][0] + h, pads[1][0]:pads[1][0] + w]


def ref_conv2d_grad_filter(x, dy, kshape, s, p, d):
    (ho, wo), pads = _geometry(x.shape, kshape, s, p, d)
    xp = _padded(x, pads)
    kh, kw, c, o = kshape
    dk = np.zeros(kshape)
    for n in range(x.shape[0]):
        for i in range(ho):
            for j in range(wo):
                for a in range(kh):
                    for b in range(kw):
                        dk[a, b] += np.outer(xp[n, i * s[0] + a * d[0], j * s[1] + b * d[1]], dy[n, i, j])
    return dk


CONV_CASES = [
    # x shape, kernel shape, strides, padding, dilation
    ((2, 7, 6, 3), (3, 3, 3, 4), (1, 1), "valid", (1, 1)),
    ((1, 7, 6, 3), (3, 3, 3, 4), (1, 1), "same", (1, 1)),
    ((2, 9, 8, 2), (3, 3, 2, 5), (2, 2), "same", (1, 1)),
    ((2, 9, 8, 2), (3, 2, 2, 3), (2, 2), "valid", (1, 1)),
    ((1, 8, 9, 2), (2, 2, 2, 3), (1, 2), "same", (1, 1)),
    ((1, 9, 9, 2), (3, 3, 2, 2), (1, 1), "valid", (2, 2)),
    ((2, 8, 7, 1), (3, 3, 1, 2), (1, 1), "same", (2, 1)),
    ((3, 5, 5, 4), (1, 1, 4, 3), (1, 1), "valid", (1, 1)),
    ((1, 6, 6, 4), (1, 1, 4, 3), (2, 2), "same", (1, 1)),
    ((1, 9, 8, 2), (5, 5, 2, 3), (1, 1), "same", (1, 1)),
    ((1, 9, 8, 2), (5, 5, 2, 3), (2, 2), "valid", (1, 1)),
    ((2, 4, 4, 3), (4, 4, 3, 2), (1, 1), "valid", (1, 1)),
]


@covers("conv2d", "conv_geometry")
@pytest.mark.parametrize("xs,ks,s,p,d", CONV_CASES)
def test_conv2d(B, xs, ks, s, p, d):
    x, k = r(*xs), r(*ks)
    ref = ref_conv2d(x, k, s, p, d)
    (ho, wo), pads = _geometry(xs, ks, s, p, d)
    assert B.conv_geometry(xs, ks, s, p, d) == (ho, wo, pads[0], pads[1])
    close(B, B.conv2d(*up(B, x, k), s, p, d), ref)


@covers("conv2d_grad_input")
@pytest.mark.parametrize("xs,ks,s,p,d", CONV_CASES)
def test_conv2d_grad_input(B, xs, ks, s, p, d):
    k = r(*ks)
    (ho, wo), _ = _geometry(xs, ks, s, p, d)
    dy = r(xs[0], ho, wo, ks[3])
    close(B, B.conv2d_grad_input(*up(B, dy, k), xs, s, p, d), ref_conv2d_grad_input(dy, k, xs, s, p, d))


@covers("conv2d_grad_filter")
@pytest.mark.parametrize("xs,ks,s,p,d", CONV_CASES)
def test_conv2d_grad_filter(B, xs, ks, s, p, d):
    x = r(*xs)
    (ho, wo), _ = _geometry(xs, ks, s, p, d)
    dy = r(xs[0], ho, wo, ks[3])
    close(B, B.conv2d_grad_filter(*up(B, x, dy), ks, s, p, d), ref_conv2d_grad_filter(x, dy, ks, s, p, d))


@covers("conv2d_bias_act")
@pytest.mark.parametrize("activation", [None, "linear", "relu", "relu6", "sigmoid", "tanh"])
@pytest.mark.parametrize("xs,ks,s,p,d", CONV_CASES[:4] + CONV_CASES[7:8])
def test_conv2d_bias_act(B, xs, ks, s, p, d, activation):
    x, k, b = r(*xs) * 4, r(*ks), r(ks[3])  # x 4x: relu6's cap is reached
    pre = ref_conv2d(x, k, s, p, d)
    close(B, B.conv2d_bias_act(*up(B, x, k, b), activation, s, p, d), ACTS[activation](pre + b))
    close(B, B.conv2d_bias_act(*up(B, x, k), None, activation, s, p, d), ACTS[activation](pre))


ACT_GRADS = {None: lambda y: np.ones_like(y), "linear": lambda y: np.ones_like(y),
             "relu": lambda y: (y > 0).astype(y.dtype), "relu6": lambda y: ((y > 0) & (y < 6)).astype(y.dtype),
             "sigmoid": lambda y: y * (1 - y),
             "tanh": lambda y: 1 - y * y}


@covers("activation_grad")
@pytest.mark.parametrize("activation", list(ACT_GRADS))
def test_activation_grad(B, activation):
    y, dy = ACTS[activation](r(4, 6) * 8).astype(F32), r(4, 6)
    close(B, B.activation_grad(*up(B, dy, y), activation), dy * ACT_GRADS[activation](y.astype(np.float64)))


# Sixteen output (and input) channels: the CPU backend's C kernels take these.
GRAD_CASES = CONV_CASES[:3] + CONV_CASES[5:6] + [
    ((2, 7, 6, 16), (3, 3, 16, 16), (1, 1), "same", (1, 1)),
    ((2, 9, 8, 3), (3, 3, 3, 32), (2, 2), "same", (1, 1)),
    ((1, 9, 9, 16), (3, 3, 16, 16), (1, 1), "valid", (2, 1)),
]


@covers("conv2d_bias_act_grad")
@pytest.mark.parametrize("activation", [None, "relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("xs,ks,s,p,d", GRAD_CASES)
def test_conv2d_bias_act_grad(B, xs, ks, s, p, d, activation):
    x, k, b = r(*xs), r(*ks), r(ks[3])
    y = ACTS[activation](ref_conv2d(x, k, s, p, d) + b).astype(F32)
    dy = r(*y.shape)
    g = dy * ACT_GRADS[activation](y.astype(np.float64))
    dx, dk, db = B.conv2d_bias_act_grad(*up(B, dy, x, y, k), activation, True, True, True, s, p, d)
    close(B, dx, ref_conv2d_grad_input(g, k, xs, s, p, d))
    close(B, dk, ref_conv2d_grad_filter(x, g, ks, s, p, d))
    close(B, db, g.sum(axis=(0, 1, 2)))
    # Only what is asked for; the forward's kept work (if any) is used.
    keep = {}
    B.conv2d_bias_act(*up(B, x, k, b), activation, s, p, d, keep)
    dx, dk, db = B.conv2d_bias_act_grad(*up(B, dy, x, y, k), activation, False, False, True, s, p, d, keep)
    assert dx is None and db is None
    close(B, dk, ref_conv2d_grad_filter(x, g, ks, s, p, d))
    dx, dk, db = B.conv2d_bias_act_grad(*up(B, dy, x, y, k), activation, True, True, False, s, p, d)
    assert dk is None
    close(B, dx, ref_conv2d_grad_input(g, k, xs, s, p, d))
    close(B, db, g.sum(axis=(0, 1, 2)))


@covers("conv2d_grad_filter_kept")
@pytest.mark.parametrize("xs,ks,s,p,d", CONV_CASES)
def test_conv2d_grad_filter_kept(B, xs, ks, s, p, d):
    x, k = r(*xs), r(*ks)
    keep = {}
    y = B.conv2d_bias_act(*up(B, x, k), None, "relu", s, p, d, keep)
    close(B, y, np.maximum(ref_conv2d(x, k, s, p, d), 0))
    dy = r(*host(B, y).shape)
    ref = ref_conv2d_grad_filter(x, dy, ks, s, p, d)
    close(B, B.conv2d_grad_filter_kept(keep, *up(B, x, dy), ks, s, p, d), ref)
    close(B, B.conv2d_grad_filter_kept({}, *up(B, x, dy), ks, s, p, d), ref)  # nothing kept


def test_conv2d_non_contiguous_input(B):
    x = r(2, 6, 7, 3)
    xt = np.ascontiguousarray(np.transpose(x, (0, 2, 1, 3)))  # [2, 7, 6, 3]
    a = B.transpose(B.asarray(xt), (0, 2, 1, 3))  # a strided view of x's values
    k = r(3, 3, 3, 2)
    close(B, B.conv2d(a, B.asarray(k), (1, 1), "same", (1, 1)), ref_conv2d(x, k, (1, 1), "same", (1, 1)))


# --------------------------------------------------------------- pooling

def _pool_geometry(xshape, ps, st, p):
    return _geometry(xshape, ps, st, p, (1, 1))


def ref_max_pool(x, ps, st, p):
    (ho, wo), pads = _pool_geometry(x.shape, ps, st, p)
    xp = _padded(x, pads, -np.inf)
    y = np.zeros((x.shape[0], ho, wo, x.shape[3]))
    for i in range(ho):
        for j in range(wo):
            y[:, i, j] = xp[:, i * st[0]:i * st[0] + ps[0], j * st[1]:j * st[1] + ps[1]].max(axis=(1, 2))
    return y


def ref_max_pool_grad(dy, x, ps, st, p):
    (ho, wo), pads = _pool_geometry(x.shape, ps, st, p)
    xp = _padded(x, pads, -np.inf)
    dxp = np.zeros_like(xp)
    for n in range(x.shape[0]):
        for c in range(x.shape[3]):
            for i in range(ho):
                for j in range(wo):
                    win = xp[n, i * st[0]:i * st[0] + ps[0], j * st[1]:j * st[1] + ps[1], c]
                    a, b = np.unravel_index(np.argmax(win), win.shape)
                    dxp[n, i * st[0] + a, j * st[1] + b, c] += dy[n, i, j, c]
    return dxp[:, pads[0][0]:pads[0][0] + x.shape[1], pads[1][0]:pads[1][0] + x.shape[2]]


def _counts(xshape, ps, st, p):
    (ho, wo), pads = _pool_geometry(xshape, ps, st, p)
    ones = _padded(np.ones((1,) + tuple(xshape[1:3]) + (1,)), pads)
    cnt = np.zeros((ho, wo))
    for i in range(ho):
        for j in range(wo):
            cnt[i, j] = ones[0, i * st[0]:i * st[0] + ps[0], j * st[1]:j * st[1] + ps[1], 0].sum()
    return cnt, pads, ho, wo


def ref_avg_pool(x, ps, st, p):
    cnt, pads, ho, wo = _counts(x.shape, ps, st, p)
    xp = _padded(x, pads)
    y = np.zeros((x.shape[0], ho, wo, x.shape[3]))
    for i in range(ho):
        for j in range(wo):
            y[:, i, j] = xp[:, i * st[0]:i * st[0] + ps[0], j * st[1]:j * st[1] + ps[1]].sum(axis=(1, 2)) / cnt[i, j]
    return y


def ref_avg_pool_grad(dy, xshape, ps, st, p):
    cnt, pads, ho, wo = _counts(xshape, ps, st, p)
    n, h, w, c = xshape
    dxp = np.zeros((n, h + sum(pads[0]), w + sum(pads[1]), c))
    for i in range(ho):
        for j in range(wo):
            dxp[:, i * st[0]:i * st[0] + ps[0], j * st[1]:j * st[1] + ps[1]] += \
                dy[:, i, j][:, None, None, :] / cnt[i, j]
    return dxp[:, pads[0][0]:pads[0][0] + h, pads[1][0]:pads[1][0] + w]


POOL_CASES = [
    # x shape, pool size, strides, padding
    ((2, 8, 8, 3), (2, 2), (2, 2), "valid"),
    ((2, 7, 7, 2), (2, 2), (2, 2), "valid"),
    ((1, 7, 6, 2), (3, 3), (1, 1), "valid"),
    ((2, 7, 8, 2), (3, 3), (2, 2), "same"),
    ((1, 7, 7, 3), (2, 2), (2, 2), "same"),
    ((1, 6, 7, 2), (2, 3), (1, 2), "same"),
    ((1, 5, 5, 1), (3, 3), (1, 1), "same"),
    ((1, 9, 9, 2), (3, 3), (3, 3), "valid"),
    ((1, 4, 4, 2), (1, 1), (1, 1), "valid"),
]


def _distinct(*shape):
    n = int(np.prod(shape))
    return (RNG.permutation(n).astype(np.float64) / n - 0.5).reshape(shape).astype(F32)


@covers("max_pool2d")
@pytest.mark.parametrize("xs,ps,st,p", POOL_CASES)
def test_max_pool2d(B, xs, ps, st, p):
    x = _distinct(*xs)
    close(B, B.max_pool2d(B.asarray(x), ps, st, p), ref_max_pool(x, ps, st, p))


@covers("max_pool2d_grad")
@pytest.mark.parametrize("xs,ps,st,p", POOL_CASES)
def test_max_pool2d_grad(B, xs, ps, st, p):
    x = _distinct(*xs)
    ax = B.asarray(x)
    y = B.max_pool2d(ax, ps, st, p)
    dy = r(*host(B, y).shape)
    close(B, B.max_pool2d_grad(B.asarray(dy), ax, y, ps, st, p), ref_max_pool_grad(dy, x, ps, st, p))


def test_max_pool2d_default_strides(B):
    x = _distinct(1, 6, 6, 2)
    close(B, B.max_pool2d(B.asarray(x), (3, 3)), ref_max_pool(x, (3, 3), (3, 3), "valid"))


@covers("avg_pool2d")
@pytest.mark.parametrize("xs,ps,st,p", POOL_CASES)
def test_avg_pool2d(B, xs, ps, st, p):
    x = r(*xs)
    close(B, B.avg_pool2d(B.asarray(x), ps, st, p), ref_avg_pool(x, ps, st, p))


@covers("avg_pool2d_grad")
@pytest.mark.parametrize("xs,ps,st,p", POOL_CASES)
def test_avg_pool2d_grad(B, xs, ps, st, p):
    (ho, wo), _ = _pool_geometry(xs, ps, st, p)
    dy = r(xs[0], ho, wo, xs[3])
    close(B, B.avg_pool2d_grad(B.asarray(dy), xs, ps, st, p), ref_avg_pool_grad(dy, xs, ps, st, p))


# --------------------------------------------------------- normalization

def _bn_ref(x, gamma, beta, eps):
    """Batch normalization over every axis but the last, written out in float64."""
    x = x.astype(np.float64)
    red = tuple(range(x.ndim - 1))
    mean, var = x.mean(red), x.var(red)
    inv = 1.0 / np.sqrt(var + eps)
    y = (x - mean) * inv * (1.0 if gamma is None else gamma) + (0.0 if beta is None else beta)
    return y, mean, var, inv


def _bn_grad_ref(dy, x, gamma, eps):
    """Its gradients by the chain rule through mean and var, step by step (float64)."""
    dy, x = dy.astype(np.float64), x.astype(np.float64)
    red = tuple(range(x.ndim - 1))
    n = x.size // x.shape[-1]
    mean, var = x.mean(red), x.var(red)
    inv = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean) * inv
    g = 1.0 if gamma is None else gamma.astype(np.float64)
    dxhat = dy * g
    dvar = (dxhat * (x - mean)).sum(red) * -0.5 * inv ** 3
    dmean = -(dxhat * inv).sum(red) + dvar * -2.0 * (x - mean).sum(red) / n
    dx = dxhat * inv + dvar * 2.0 * (x - mean) / n + dmean / n
    return dx, (dy * xhat).sum(red), dy.sum(red)


@covers("batch_norm_train", "batch_norm_grad")
@pytest.mark.parametrize("shape", [(4, 3), (6, 5, 5, 16), (3, 7, 2, 37), (300, 9)])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm(B, shape, affine):
    c = shape[-1]
    x = r(*shape, lo=-2.0, hi=4.0)
    g, b = (r(c, lo=0.5, hi=1.5), r(c)) if affine else (None, None)
    dy = r(*shape)
    y, mean, var, inv = B.batch_norm_train(*up(B, x), *(up(B, g, b) if affine else (None, None)), 1e-3)
    for got, want in zip((y, mean, var, inv), _bn_ref(x, g, b, 1e-3)):
        close(B, got, want)
    dx, dgamma, dbeta = B.batch_norm_grad(*up(B, dy, x), mean, inv, *(up(B, g) if affine else (None,)))
    for got, want in zip((dx, dgamma, dbeta), _bn_grad_ref(dy, x, g, 1e-3)):
        close(B, got, want)
    none, dgamma2, _ = B.batch_norm_grad(*up(B, dy, x), mean, inv, None, need_input=False)
    assert none is None
    close(B, dgamma2, _bn_grad_ref(dy, x, None, 1e-3)[1])


def test_batch_norm_float64_and_bad_shapes(B):
    x = r(5, 4).astype(np.float64)
    y, mean, var, inv = B.batch_norm_train(*up(B, x), None, None, 1e-3)
    close(B, y, _bn_ref(x, None, None, 1e-3)[0], dtype=np.float64)
    with pytest.raises(ValueError, match=r"gamma has shape \(3,\), expected \(4,\)"):
        B.batch_norm_train(*up(B, r(5, 4), r(3)), None, 1e-3)
    with pytest.raises(ValueError, match=r"beta has shape \(4, 1\), expected \(4,\)"):
        B.batch_norm_train(*up(B, r(5, 4)), None, *up(B, r(4, 1)), 1e-3)
    with pytest.raises(ValueError, match=r"dy has shape \(5, 3\)"):
        B.batch_norm_grad(*up(B, r(5, 3), r(5, 4), r(4), r(4)))


# ------------------------------------------------------------- optimizer

@covers("adam_update")
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_update(B, weight_decay):
    p0, m0, v0 = r(5, 3), r(5, 3) * 0.1, r(5, 3, lo=0, hi=0.01)
    p, m, v = p0.astype(np.float64), m0.astype(np.float64), v0.astype(np.float64)
    dp, dm, dv = up(B, p0, m0, v0)
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-7
    for step in (1, 2, 3):
        g = r(5, 3)
        B.adam_update(dp, B.asarray(g), dm, dv, lr, b1, b2, eps, step, weight_decay)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g.astype(np.float64) ** 2
        # Keras's form: the bias corrections folded into the step size, eps added to sqrt(v).
        alpha = lr * math.sqrt(1 - b2 ** step) / (1 - b1 ** step)
        p = p - lr * weight_decay * p
        p = p - alpha * m / (np.sqrt(v) + eps)
    close(B, dm, m)
    close(B, dv, v)
    close(B, dp, p, rtol=1e-4)


@covers("adam_update_many", "sgd_update_many", "rmsprop_update_many")
@pytest.mark.parametrize("rule", ["adam", "sgd", "rmsprop"])
@pytest.mark.parametrize("graph", [False, True])
def test_update_many_equals_one_update_per_variable(B, rule, graph):
    """The many-variable forms (eleven variables: two launches of the CUDA kernel's eight) give
    exactly what the one-variable rules give, variable by variable, with or without device scalars."""
    shapes = [(3, 3, 2, 4), (4,), (0,), (7, 5), (1,), (33,), (2, 2), (5,), (9, 3), (6,), (257,)]
    lr, wd, step = 0.01, 0.004, 3
    decays = [i % 3 != 1 for i in range(len(shapes))]
    nslots = {"adam": 2, "sgd": 1, "rmsprop": 3}[rule]

    def fresh():
        rng = np.random.default_rng(5)
        ps = [B.asarray(rng.uniform(-1, 1, s).astype(F32)) for s in shapes]
        slots = [[B.asarray(rng.uniform(0, 0.01, s).astype(F32)) for s in shapes] for _ in range(nslots)]
        if rule == "rmsprop":
            slots[1] = [None if i % 2 else B.zeros(s, "float32") for i, s in enumerate(shapes)]  # some centered
        return ps, slots

    gs = [B.asarray(r(*s)) for s in shapes]
    hp = B.zeros((4,), "float32")
    a_ps, a_slots = fresh()
    b_ps, b_slots = fresh()
    if rule == "adam":
        step_size = lr * math.sqrt(1 - 0.999 ** step) / (1 - 0.9 ** step)
        B.set_scalars(hp, [step_size, lr * wd])
        for i in range(len(shapes)):
            B.adam_update(a_ps[i], gs[i], a_slots[0][i], a_slots[1][i], lr, 0.9, 0.999, 1e-7, step,
                          wd if decays[i] else 0.0)
        B.adam_update_many(b_ps, gs, *b_slots, 0.0 if graph else lr, 0.9, 0.999, 1e-7, 0 if graph else step, wd,
                           decays, hp=hp if graph else None)
    elif rule == "sgd":
        B.set_scalars(hp, [lr])
        for i in range(len(shapes)):
            B.sgd_update(a_ps[i], gs[i], a_slots[0][i], lr, 0.9, True)
        B.sgd_update_many(b_ps, gs, b_slots[0], 0.0 if graph else lr, 0.9, True, hp=hp if graph else None)
    else:
        B.set_scalars(hp, [lr])
        for i in range(len(shapes)):
            B.rmsprop_update(a_ps[i], gs[i], a_slots[0][i], a_slots[1][i], a_slots[2][i], lr, 0.9, 0.5, 1e-7)
        B.rmsprop_update_many(b_ps, gs, *b_slots, 0.0 if graph else lr, 0.9, 0.5, 1e-7,
                              hp=hp if graph else None)
    for a, b in zip(a_ps + [x for s in a_slots for x in s], b_ps + [x for s in b_slots for x in s]):
        if a is not None:  # (device scalars are float32 where the host's are float64: 1e-5)
            close(B, b, host(B, a).astype(np.float64), rtol=1e-5 if graph else 1e-6)
    with pytest.raises(ValueError, match="different lengths"):
        if rule == "adam":
            B.adam_update_many(b_ps, gs[:-1], *b_slots, lr, 0.9, 0.999, 1e-7, step)
        elif rule == "sgd":
            B.sgd_update_many(b_ps, gs[:-1], b_slots[0], lr, 0.9)
        else:
            B.rmsprop_update_many(b_ps, gs[:-1], *b_slots, lr, 0.9, 0.5, 1e-7)


def _ref_opt_step(name, p, g, s, step):
    """Float64 NumPy references of Keras 3's update rules; ``s`` holds the slots."""
    lr = 0.01
    if name == "weight_decay_update":
        return p - p * 0.004 * lr
    if name == "sgd_update":
        s["m"] = 0.9 * s["m"] - lr * g
        return p + 0.9 * s["m"] - lr * g  # nesterov
    if name == "adam_amsgrad_update":
        s["m"] = 0.9 * s["m"] + 0.1 * g
        s["v"] = 0.999 * s["v"] + 0.001 * g * g
        s["vh"] = np.maximum(s["vh"], s["v"])
        return p - lr * math.sqrt(1 - 0.999 ** step) / (1 - 0.9 ** step) * s["m"] / (np.sqrt(s["vh"]) + 1e-7)
    if name == "rmsprop_update":  # centered, with momentum
        s["v"] = 0.9 * s["v"] + 0.1 * g * g
        s["mg"] = 0.9 * s["mg"] + 0.1 * g
        s["mom"] = 0.5 * s["mom"] + lr * g / np.sqrt(s["v"] - s["mg"] ** 2 + 1e-7)
        return p - s["mom"]
    if name == "adagrad_update":
        s["acc"] = s["acc"] + g * g
        return p - lr * g / np.sqrt(s["acc"] + 1e-7)
    if name == "adadelta_update":
        s["ag"] = 0.95 * s["ag"] + 0.05 * g * g
        d = -np.sqrt(s["ad"] + 1e-7) * g / np.sqrt(s["ag"] + 1e-7)
        s["ad"] = 0.95 * s["ad"] + 0.05 * d * d
        return p + lr * d
    if name == "adamax_update":
        s["m"] = 0.9 * s["m"] + 0.1 * g
        s["u"] = np.maximum(0.999 * s["u"], np.abs(g))
        return p - lr / (1 - 0.9 ** step) * s["m"] / (s["u"] + 1e-7)
    if name == "nadam_update":
        ut = 0.9 * (1 - 0.5 * 0.96 ** step)
        ut1 = 0.9 * (1 - 0.5 * 0.96 ** (step + 1))
        s["prod"] *= ut
        s["m"] = 0.9 * s["m"] + 0.1 * g
        s["v"] = 0.999 * s["v"] + 0.001 * g * g
        mh = ut1 * s["m"] / (1 - s["prod"] * ut1) + (1 - ut) * g / (1 - s["prod"])
        return p - lr * mh / (np.sqrt(s["v"] / (1 - 0.999 ** step)) + 1e-7)
    raise KeyError(name)


def _call_opt(B, name, dp, g, ds, step, prod):
    lr = 0.01
    if name == "weight_decay_update":
        B.weight_decay_update(dp, lr, 0.004)
    elif name == "sgd_update":
        B.sgd_update(dp, g, ds["m"], lr, 0.9, True)
    elif name == "adam_amsgrad_update":
        B.adam_amsgrad_update(dp, g, ds["m"], ds["v"], ds["vh"], lr, 0.9, 0.999, 1e-7, step)
    elif name == "rmsprop_update":
        B.rmsprop_update(dp, g, ds["v"], ds["mg"], ds["mom"], lr, 0.9, 0.5, 1e-7)
    elif name == "adagrad_update":
        B.adagrad_update(dp, g, ds["acc"], lr, 1e-7)
    elif name == "adadelta_update":
        B.adadelta_update(dp, g, ds["ag"], ds["ad"], lr, 0.95, 1e-7)
    elif name == "adamax_update":
        B.adamax_update(dp, g, ds["m"], ds["u"], lr, 0.9, 0.999, 1e-7, step)
    elif name == "nadam_update":
        B.nadam_update(dp, g, ds["m"], ds["v"], lr, 0.9, 0.999, 1e-7, step, prod)


_OPT_SLOTS = {
    "weight_decay_update": (), "sgd_update": ("m",), "adam_amsgrad_update": ("m", "v", "vh"),
    "rmsprop_update": ("v", "mg", "mom"), "adagrad_update": ("acc",), "adadelta_update": ("ag", "ad"),
    "adamax_update": ("m", "u"), "nadam_update": ("m", "v"),
}


@covers(*_OPT_SLOTS)
@pytest.mark.parametrize("name", sorted(_OPT_SLOTS))
def test_optimizer_updates(B, name):
    p0 = r(4, 3)
    slots0 = {k: r(4, 3, lo=0.0, hi=0.01) for k in _OPT_SLOTS[name]}
    if "acc" in slots0:
        slots0["acc"] += F32(0.1)
    if "mg" in slots0:
        slots0["mg"][:] = 0  # v - mg^2 stays positive, as it does from zeros
    p = p0.astype(np.float64)
    s = {k: v.astype(np.float64) for k, v in slots0.items()}
    s["prod"] = 1.0
    dp = B.asarray(p0)
    ds = {k: B.asarray(v) for k, v in slots0.items()}
    for step in (1, 2, 3):
        g = r(4, 3)
        p = _ref_opt_step(name, p, g.astype(np.float64), s, step)
        _call_opt(B, name, dp, B.asarray(g), ds, step, s["prod"])
    close(B, dp, p, rtol=1e-4)
    for k in ds:
        close(B, ds[k], s[k], rtol=1e-4)


# ------------------------------------------- updates inside a captured step
@covers("set_scalars", "adam_update_dev", "sgd_update_dev", "rmsprop_update_dev", "weight_decay_update_dev")
def test_device_scalar_updates_equal_their_python_scalar_twins(B):
    """The *_dev updates read their scalars from a device array and give the plain rules' results."""
    hp = B.zeros((4,), "float32")
    B.set_scalars(hp, [0.5, -2.0, 3.25])
    same(B, hp, np.array([0.5, -2.0, 3.25, 0.0], F32))
    lr, wd, b1, b2, eps = 0.01, 0.004, 0.9, 0.999, 1e-7
    p0, g0, m0, v0, mg0 = r(4, 3), r(4, 3), r(4, 3) * 0.1, r(4, 3, lo=0, hi=0.01), np.zeros((4, 3), F32)
    for step in (1, 3):
        a, b = up(B, p0, m0, v0), up(B, p0, m0, v0)
        g = B.asarray(g0)
        B.adam_update(*a[:1], g, *a[1:], lr, b1, b2, eps, step, wd)
        B.set_scalars(hp, [lr * math.sqrt(1 - b2 ** step) / (1 - b1 ** step), lr * wd])
        B.adam_update_dev(b[0], g, b[1], b[2], hp, b1, b2, eps, True)
        for x, y in zip(a, b):
            close(B, y, host(B, x).astype(np.float64), rtol=1e-6)
    B.set_scalars(hp, [lr, lr * wd])
    for mom, nest in ((0.0, False), (0.9, True)):
        a, b = up(B, p0, m0), up(B, p0, m0)
        B.sgd_update(a[0], B.asarray(g0), a[1], lr, mom, nest)
        B.sgd_update_dev(b[0], B.asarray(g0), b[1], hp, mom, nest)
        close(B, b[0], host(B, a[0]).astype(np.float64), rtol=1e-6)
    a, b = up(B, p0, v0, mg0, m0), up(B, p0, v0, mg0, m0)
    B.rmsprop_update(a[0], B.asarray(g0), a[1], a[2], a[3], lr, 0.9, 0.5, eps)
    B.rmsprop_update_dev(b[0], B.asarray(g0), b[1], b[2], b[3], hp, 0.9, 0.5, eps)
    close(B, b[0], host(B, a[0]).astype(np.float64), rtol=1e-6)
    a, b = up(B, p0), up(B, p0)
    B.weight_decay_update(a[0], lr, wd)
    B.weight_decay_update_dev(b[0], hp)
    close(B, b[0], host(B, a[0]).astype(np.float64), rtol=1e-6)


@covers("capture_graph")
def test_capture_graph(B):
    """A recorded sequence replays with new inputs; backends without graphs refuse clearly."""
    from deepgpu.backends.base import GraphCaptureError

    x = B.asarray(r(8, 5))
    w = B.asarray(r(5, 3))
    if not B.supports_graphs:
        with pytest.raises(GraphCaptureError, match="cannot capture|custom kernels"):
            B.capture_graph(lambda: B.dense(x, w, None, "relu"))
        return
    graph, y = B.capture_graph(lambda: B.dense(x, w, None, "relu"))
    x2 = r(8, 5)
    x[...] = B.asarray(x2)
    graph.replay()
    close(B, y, np.maximum(x2.astype(np.float64) @ host(B, w), 0))
    with pytest.raises(GraphCaptureError, match="read of device values"):
        B.capture_graph(lambda: B.to_numpy(x))
    assert not B.capturing


# ------------------------------------------------ depthwise convolution

def ref_depthwise(x, k, s, p, d):
    (ho, wo), pads = _geometry(x.shape, k.shape, s, p, d)
    xp = _padded(x, pads)
    kh, kw, c, m = k.shape
    y = np.zeros((x.shape[0], ho, wo, c, m))
    for i in range(ho):
        for j in range(wo):
            for a in range(kh):
                for b in range(kw):
                    y[:, i, j] += xp[:, i * s[0] + a * d[0], j * s[1] + b * d[1], :, None] * k[a, b]
    return y.reshape(x.shape[0], ho, wo, c * m)


def ref_depthwise_grad_input(dy, k, xshape, s, p, d):
    (ho, wo), pads = _geometry(xshape, k.shape, s, p, d)
    n_, h, w, c = xshape
    kh, kw, _, m = k.shape
    dy5 = dy.reshape(n_, ho, wo, c, m)
    dxp = np.zeros((n_, h + sum(pads[0]) + kh * d[0] + s[0], w + sum(pads[1]) + kw * d[1] + s[1], c))
    for i in range(ho):
        for j in range(wo):
            for a in range(kh):
                for b in range(kw):
                    dxp[:, i * s[0] + a * d[0], j * s[1] + b * d[1]] += (dy5[:, i, j] * k[a, b]).sum(-1)
    return dxp[:, pads[0][0]:pads[0][0] + h, pads[1][0]:pads[1][0] + w]


def ref_depthwise_grad_filter(x, dy, kshape, s, p, d):
    (ho, wo), pads = _geometry(x.shape, kshape, s, p, d)
    xp = _padded(x, pads)
    kh, kw, c, m = kshape
    dy5 = dy.reshape(x.shape[0], ho, wo, c, m)
    dk = np.zeros(kshape)
    for i in range(ho):
        for j in range(wo):
            for a in range(kh):
                for b in range(kw):
                    dk[a, b] += (xp[:, i * s[0] + a * d[0], j * s[1] + b * d[1], :, None] * dy5[:, i, j]).sum(0)
    return dk


# float64 operands skip the CPU backend's float32 C kernels: the generic implementation.
DTYPES = [(F32, 1e-4), (np.float64, 1e-9)]

DW_CASES = [
    # x shape, kernel shape [kh, kw, C, M], strides, padding, dilation
    ((2, 7, 6, 3), (3, 3, 3, 1), (1, 1), "valid", (1, 1)),
    ((1, 7, 6, 3), (3, 3, 3, 2), (1, 1), "same", (1, 1)),
    ((2, 9, 8, 2), (3, 2, 2, 3), (2, 2), "same", (1, 1)),
    ((1, 9, 9, 2), (3, 3, 2, 2), (1, 2), "valid", (2, 1)),
    ((2, 8, 7, 16), (3, 3, 16, 1), (1, 1), "same", (1, 1)),  # many channels: the C kernels
    ((1, 9, 8, 16), (5, 5, 16, 2), (2, 2), "same", (1, 1)),
]


@covers("depthwise_conv2d", "depthwise_geometry")
@pytest.mark.parametrize("dt,tol", DTYPES)
@pytest.mark.parametrize("xs,ks,s,p,d", DW_CASES)
def test_depthwise_conv2d(B, xs, ks, s, p, d, dt, tol):
    x, k = r(*xs).astype(dt), r(*ks).astype(dt)
    (ho, wo), pads = _geometry(xs, ks, s, p, d)
    assert B.depthwise_geometry(xs, ks, s, p, d) == (ho, wo, pads[0], pads[1])
    close(B, B.depthwise_conv2d(*up(B, x, k), s, p, d), ref_depthwise(x, k, s, p, d), tol, dt)


def test_depthwise_geometry_refuses_bad_shapes(B):
    with pytest.raises(ValueError, match="channels"):
        B.depthwise_geometry((1, 5, 5, 3), (3, 3, 2, 1), (1, 1), "valid", (1, 1))
    with pytest.raises(ValueError, match="4-D"):
        B.depthwise_geometry((5, 5, 3), (3, 3, 3, 1), (1, 1), "valid", (1, 1))


@covers("depthwise_conv2d_bias_act")
@pytest.mark.parametrize("activation", [None, "relu", "relu6", "tanh"])
@pytest.mark.parametrize("xs,ks,s,p,d", DW_CASES[:1] + DW_CASES[4:])
def test_depthwise_conv2d_bias_act(B, xs, ks, s, p, d, activation):
    x, k, b = r(*xs) * 4, r(*ks), r(ks[2] * ks[3])  # x 4x: relu6's cap is reached
    pre = ref_depthwise(x, k, s, p, d)
    close(B, B.depthwise_conv2d_bias_act(*up(B, x, k, b), activation, s, p, d), ACTS[activation](pre + b))
    close(B, B.depthwise_conv2d_bias_act(*up(B, x, k), None, activation, s, p, d), ACTS[activation](pre))


@covers("depthwise_conv2d_grad_input")
@pytest.mark.parametrize("dt,tol", DTYPES)
@pytest.mark.parametrize("xs,ks,s,p,d", DW_CASES)
def test_depthwise_conv2d_grad_input(B, xs, ks, s, p, d, dt, tol):
    k = r(*ks).astype(dt)
    (ho, wo), _ = _geometry(xs, ks, s, p, d)
    dy = r(xs[0], ho, wo, ks[2] * ks[3]).astype(dt)
    close(B, B.depthwise_conv2d_grad_input(*up(B, dy, k), xs, s, p, d),
          ref_depthwise_grad_input(dy, k, xs, s, p, d), tol, dt)


@covers("depthwise_conv2d_grad_filter")
@pytest.mark.parametrize("dt,tol", DTYPES)
@pytest.mark.parametrize("xs,ks,s,p,d", DW_CASES)
def test_depthwise_conv2d_grad_filter(B, xs, ks, s, p, d, dt, tol):
    x = r(*xs).astype(dt)
    (ho, wo), _ = _geometry(xs, ks, s, p, d)
    dy = r(xs[0], ho, wo, ks[2] * ks[3]).astype(dt)
    close(B, B.depthwise_conv2d_grad_filter(*up(B, x, dy), ks, s, p, d),
          ref_depthwise_grad_filter(x, dy, ks, s, p, d), tol, dt)


# ------------------------------------------------------ numerical gradients

def _fd(f, arrays, i, eps=1e-6):
    """Central float64 finite differences of the scalar f(*arrays) in arrays[i]."""
    arrays = [None if a is None else np.array(a, dtype=np.float64) for a in arrays]
    a = arrays[i]
    g = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + eps
        hi = f(*arrays)
        a[idx] = old - eps
        lo = f(*arrays)
        a[idx] = old
        g[idx] = (hi - lo) / (2 * eps)
    return g


def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


# -------------------------------------------------- fused recurrent cells

def ref_lstm(z, c_prev):
    u = c_prev.shape[-1]
    i, f, g, o = _sig(z[:, :u]), _sig(z[:, u:2 * u]), np.tanh(z[:, 2 * u:3 * u]), _sig(z[:, 3 * u:])
    c = f * c_prev + i * g
    return o * np.tanh(c), c, np.concatenate([i, f, g, o], axis=1)


@covers("lstm_step")
@pytest.mark.parametrize("dt,tol", DTYPES)
@pytest.mark.parametrize("n,u", [(3, 4), (5, 16)])
def test_lstm_step(B, n, u, dt, tol):
    z, c_prev = r(n, 4 * u, lo=-3, hi=3).astype(dt), r(n, u, lo=-2, hi=2).astype(dt)
    h, c, act = B.lstm_step(*up(B, z, c_prev))
    rh, rc, ract = ref_lstm(z.astype(np.float64), c_prev.astype(np.float64))
    close(B, h, rh, tol, dt)
    close(B, c, rc, tol, dt)
    close(B, act, ract, tol, dt)


@covers("lstm_step_grad")
@pytest.mark.parametrize("n,u", [(3, 4), (5, 16)])
@pytest.mark.parametrize("which", ["both", "dh", "dc", "view"])
@pytest.mark.parametrize("dt,tol", [(F32, 1e-4), (np.float64, 1e-7)])  # 1e-7: the differences' own error
def test_lstm_step_grad(B, n, u, which, dt, tol):
    z, c_prev = r(n, 4 * u, lo=-3, hi=3).astype(dt), r(n, u, lo=-2, hi=2).astype(dt)
    dh = r(n, u).astype(dt) if which != "dc" else None
    dc = r(n, u).astype(dt) if which != "dh" else None
    if which == "view":  # dc a broadcast view of one row, as a sum_to_shape-free caller passes it
        dc = np.broadcast_to(r(1, u).astype(dt), (n, u))

    def loss(z, c_prev):
        h, c, _ = ref_lstm(z, c_prev)
        return (0.0 if dh is None else (h * dh).sum()) + (0.0 if dc is None else (c * dc).sum())

    _, c, act = ref_lstm(z.astype(np.float64), c_prev.astype(np.float64))
    dcb = None if dc is None else B.asarray(dc)
    if which == "view":
        dcb = B.broadcast_to(B.asarray(np.ascontiguousarray(dc[:1])), (n, u))
    dz, dc_prev = B.lstm_step_grad(None if dh is None else B.asarray(dh), dcb,
                                   *up(B, act.astype(dt), c_prev, c.astype(dt)))
    close(B, dz, _fd(loss, [z, c_prev], 0), tol, dt)
    close(B, dc_prev, _fd(loss, [z, c_prev], 1), tol, dt)


def ref_gru(xz, hz, h_prev):
    u = h_prev.shape[-1]
    z = _sig(xz[:, :u] + hz[:, :u])
    rr = _sig(xz[:, u:2 * u] + hz[:, u:2 * u])
    hh = np.tanh(xz[:, 2 * u:] + rr * hz[:, 2 * u:])
    return z * h_prev + (1 - z) * hh, np.concatenate([z, rr, hh], axis=1)


@covers("gru_step")
@pytest.mark.parametrize("dt,tol", DTYPES)
@pytest.mark.parametrize("n,u", [(3, 4), (5, 16)])
def test_gru_step(B, n, u, dt, tol):
    xz, hz, h_prev = (a.astype(dt) for a in (r(n, 3 * u, lo=-3, hi=3), r(n, 3 * u, lo=-3, hi=3), r(n, u)))
    h, act = B.gru_step(*up(B, xz, hz, h_prev))
    rh, ract = ref_gru(*(a.astype(np.float64) for a in (xz, hz, h_prev)))
    close(B, h, rh, tol, dt)
    close(B, act, ract, tol, dt)


@covers("gru_step_grad")
@pytest.mark.parametrize("n,u", [(3, 4), (5, 16)])
@pytest.mark.parametrize("dt,tol", [(F32, 1e-4), (np.float64, 1e-7)])  # 1e-7: the differences' own error
def test_gru_step_grad(B, n, u, dt, tol):
    xz, hz, h_prev, dh = (a.astype(dt) for a in (r(n, 3 * u, lo=-3, hi=3), r(n, 3 * u, lo=-3, hi=3),
                                                 r(n, u), r(n, u)))

    def loss(xz, hz, h_prev):
        return (ref_gru(xz, hz, h_prev)[0] * dh).sum()

    _, act = ref_gru(*(a.astype(np.float64) for a in (xz, hz, h_prev)))
    dxz, dhz, dh_prev = B.gru_step_grad(*up(B, dh, act.astype(dt), hz, h_prev))
    for got, i in ((dxz, 0), (dhz, 1), (dh_prev, 2)):
        close(B, got, _fd(loss, [xz, hz, h_prev], i), tol, dt)


# ------------------------------------------------ layer / RMS normalization

def ref_layer_norm(x, gamma, beta, eps, rms):
    mean = np.zeros(x.shape[0]) if rms else x.mean(axis=1)
    xc = x - mean[:, None]
    inv = 1.0 / np.sqrt((xc * xc).mean(axis=1) + eps)
    y = xc * inv[:, None]
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y, mean, inv


@covers("layer_norm")
@pytest.mark.parametrize("rms", [False, True])
@pytest.mark.parametrize("affine", [False, True])
def test_layer_norm(B, rms, affine):
    x = r(6, 10, lo=-2, hi=3)
    gamma, beta = (r(10), r(10)) if affine else (None, None)
    y, mean, inv = B.layer_norm(B.asarray(x), *(None if a is None else B.asarray(a) for a in (gamma, beta)),
                                1e-3, rms)
    ry, rmean, rinv = ref_layer_norm(x.astype(np.float64), gamma, beta, 1e-3, rms)
    close(B, y, ry)
    close(B, mean, rmean)
    close(B, inv, rinv)
    with pytest.raises(ValueError, match="gamma"):
        B.layer_norm(B.asarray(x), B.asarray(r(9)))


@covers("layer_norm_grad")
@pytest.mark.parametrize("rms", [False, True])
@pytest.mark.parametrize("affine", [False, True])
def test_layer_norm_grad(B, rms, affine):
    x, dy = r(5, 8, lo=-2, hi=3), r(5, 8)
    gamma, beta = (r(8), r(8)) if affine else (None, None)
    eps = 1e-3

    def loss(x, gamma, beta):
        return (ref_layer_norm(x, gamma, beta, eps, rms)[0] * dy).sum()

    _, mean, inv = ref_layer_norm(x.astype(np.float64), gamma, beta, eps, rms)
    args = up(B, dy, x, mean.astype(F32), inv.astype(F32))
    g = None if gamma is None else B.asarray(gamma)
    dx, dgamma, dbeta = B.layer_norm_grad(*args, g, rms, True)
    close(B, dx, _fd(loss, [x, gamma, beta], 0))
    xhat = (x.astype(np.float64) - mean[:, None]) * inv[:, None]
    close(B, dgamma, (dy * xhat).sum(axis=0))
    close(B, dbeta, dy.astype(np.float64).sum(axis=0))
    if affine:
        close(B, dgamma, _fd(loss, [x, gamma, beta], 1))
        close(B, dbeta, _fd(loss, [x, gamma, beta], 2))
    none, dgamma2, _ = B.layer_norm_grad(*args, g, rms, False)
    assert none is None
    close(B, dgamma2, (dy * xhat).sum(axis=0))


# ------------------------------------------------------ einsum / qr

EINSUM_CASES = [
    ("bij,bjk->bik", (2, 3, 4), (2, 4, 5), lambda a, b: a @ b),
    ("ij,kj->ik", (3, 4), (5, 4), lambda a, b: a @ b.T),
    ("bhtd,bhsd->bhts", (2, 2, 3, 4), (2, 2, 5, 4), lambda a, b: a @ np.swapaxes(b, -1, -2)),
    ("abc,cd->abd", (2, 3, 4), (4, 5), lambda a, b: (a.reshape(6, 4) @ b).reshape(2, 3, 5)),
    ("i,i->", (7,), (7,), lambda a, b: np.array((a * b).sum())),
    ("ij,j->i", (3, 4), (4,), lambda a, b: (a * b).sum(axis=1)),
    ("i,j->ij", (3,), (4,), lambda a, b: a[:, None] * b[None, :]),
    ("btd,d->bt", (2, 3, 4), (4,), lambda a, b: (a * b).sum(-1)),
]


@covers("einsum")
@pytest.mark.parametrize("eq,sa,sb,ref", EINSUM_CASES)
def test_einsum(B, eq, sa, sb, ref):
    a, b = r(*sa), r(*sb)
    close(B, B.einsum(eq, *up(B, a, b)), ref(a.astype(np.float64), b.astype(np.float64)))


@covers("qr")
@pytest.mark.parametrize("shape", [(5, 3), (4, 4), (8, 1)])
def test_qr(B, shape):
    a = r(*shape)
    q, rr = (host(B, t).astype(np.float64) for t in B.qr(B.asarray(a)))
    m, n = shape
    assert q.shape == (m, n) and rr.shape == (n, n)
    np.testing.assert_allclose(q @ rr, a, atol=1e-5)
    np.testing.assert_allclose(q.T @ q, np.eye(n), atol=1e-5)
    np.testing.assert_array_equal(np.tril(rr, -1), 0)
    # R is unique up to the signs of its rows: |R| is R of the Cholesky factor of a^T a.
    chol = np.linalg.cholesky(a.astype(np.float64).T @ a.astype(np.float64)).T
    np.testing.assert_allclose(np.abs(rr), np.abs(chol), atol=1e-5)


# ------------------------------------------------------ attention / softmax

def ref_attention(q, k, v, mask, heads, scale, causal):
    bh, t, _ = q.shape
    s = k.shape[1]
    keep = np.ones((bh, t, s), bool)
    if mask is not None:
        keep &= np.broadcast_to(mask != 0, (bh // heads, heads, t, s)).reshape(bh, t, s)
    if causal:
        keep &= np.arange(s)[None, :] <= np.arange(t)[:, None]
    out = np.zeros((bh, t, v.shape[2]))
    lse = np.full((bh, t), np.inf)
    for b in range(bh):
        for i in range(t):
            js = np.nonzero(keep[b, i])[0]
            if len(js) == 0:
                continue
            sc = np.array([scale * (q[b, i] @ k[b, j]) for j in js])
            e = np.exp(sc - sc.max())
            out[b, i] = (e[:, None] * v[b, js]).sum(0) / e.sum()
            lse[b, i] = sc.max() + np.log(e.sum())
    return out, lse


ATTN_CASES = [
    # batch, heads, T, S, D, E, mask shape or None, causal
    (2, 1, 3, 4, 3, 2, None, False),
    (1, 2, 4, 4, 3, 3, None, True),
    (2, 2, 3, 5, 4, 2, (2, 1, 1, 5), False),
    (1, 2, 3, 4, 2, 3, (1, 2, 3, 4), True),
]


def _attn_inputs(b, h, t, s, d, e, mshape):
    q, k, v = r(b * h, t, d), r(b * h, s, d), r(b * h, s, e)
    mask = None
    if mshape is not None:
        mask = (RNG.uniform(size=mshape) > 0.3).astype(np.int32)
        mask[0, 0, 0] = 0  # a query row with no key kept (a padded sequence): output 0
    return q, k, v, mask


@covers("attention")
@pytest.mark.parametrize("b,h,t,s,d,e,mshape,causal", ATTN_CASES)
def test_attention(B, b, h, t, s, d, e, mshape, causal):
    q, k, v, mask = _attn_inputs(b, h, t, s, d, e, mshape)
    scale = 1 / math.sqrt(d)
    out, lse = B.attention(*up(B, q, k, v), None if mask is None else B.asarray(mask, np.int32), h, scale, causal)
    rout, rlse = ref_attention(*(a.astype(np.float64) for a in (q, k, v)), mask, h, scale, causal)
    close(B, out, rout)
    got = host(B, lse)
    assert got.shape == rlse.shape and got.dtype == F32
    assert np.array_equal(np.isinf(got), np.isinf(rlse))
    fin = np.isfinite(rlse)
    np.testing.assert_allclose(got[fin], rlse[fin], rtol=1e-5, atol=1e-5)


@covers("attention_grad")
@pytest.mark.parametrize("b,h,t,s,d,e,mshape,causal", ATTN_CASES)
def test_attention_grad(B, b, h, t, s, d, e, mshape, causal):
    q, k, v, mask = _attn_inputs(b, h, t, s, d, e, mshape)
    scale = 1 / math.sqrt(d)
    dout = r(b * h, t, e)

    def loss(q, k, v):
        return (ref_attention(q, k, v, mask, h, scale, causal)[0] * dout).sum()

    rout, rlse = ref_attention(*(a.astype(np.float64) for a in (q, k, v)), mask, h, scale, causal)
    dq, dk, dv = B.attention_grad(*up(B, dout, q, k, v, rout.astype(F32), rlse.astype(F32)),
                                  None if mask is None else B.asarray(mask, np.int32), h, scale, causal)
    for got, i in ((dq, 0), (dk, 1), (dv, 2)):
        close(B, got, _fd(loss, [q, k, v], i))


@covers("masked_softmax")
@pytest.mark.parametrize("axis", [-1, 1])
def test_masked_softmax(B, axis):
    x = r(3, 4, 5, lo=-3, hi=3)
    close(B, B.masked_softmax(B.asarray(x), None, axis), _ref_softmax(x.astype(np.float64), axis))
    mask = RNG.uniform(size=(3, 1, 5) if axis == -1 else (3, 4, 1)) > 0.4
    mask[0] = False  # every entry of a row masked: all zeros
    xd = x.astype(np.float64)
    e = np.where(mask, np.exp(xd - xd.max(axis=axis, keepdims=True)), 0.0)
    den = e.sum(axis=axis, keepdims=True)
    ref = np.where(den > 0, e / np.where(den > 0, den, 1), 0.0)
    close(B, B.masked_softmax(B.asarray(x), B.asarray(mask, bool), axis), ref)


# ------------------------------------------------------ image transforms

def _tf_map(c, n, mode):
    """TF's ImageProjectiveTransformV3 coordinate mapping, one scalar at a time."""
    if mode == "constant":
        return c
    if mode == "reflect":
        if c < 0:
            if n <= 1:
                c = 0.0
            else:
                sz2 = 2 * n
                if c < -sz2:
                    c = sz2 * math.trunc(-c / sz2) + c
                c = c + sz2 if c < -n else -c - 1
        elif c > n - 1:
            if n <= 1:
                c = 0.0
            else:
                sz2 = 2 * n
                c -= sz2 * math.trunc(c / sz2)
                if c >= n:
                    c = sz2 - c - 1
    elif mode == "wrap":
        if c < 0:
            c = 0.0 if n <= 1 else c + n * (math.trunc(-c / (n - 1)) + 1)
        elif c > n - 1:
            c = 0.0 if n <= 1 else c - n * math.trunc(c / (n - 1))
    return min(max(c, 0.0), n - 1.0)


def _transform_matrix(xshape, t, out_h, out_w, interpolation, fill_mode):
    """The linear map x -> image_transform(x) (fill 0) as a dense [N*oh*ow, N*H*W] matrix."""
    n_, h, w, _ = xshape
    t = np.broadcast_to(np.asarray(t, np.float64).reshape(-1, 8), (n_, 8))
    M = np.zeros((n_ * out_h * out_w, n_ * h * w))
    outside = np.zeros(n_ * out_h * out_w)  # weight on fill_value
    for n in range(n_):
        a0, a1, a2, b0, b1, b2, c0, c1 = t[n]
        for y in range(out_h):
            for x in range(out_w):
                row = (n * out_h + y) * out_w + x
                k = c0 * x + c1 * y + 1.0
                sx = _tf_map((a0 * x + a1 * y + a2) / k, w, fill_mode)
                sy = _tf_map((b0 * x + b1 * y + b2) / k, h, fill_mode)
                if interpolation == "nearest":
                    # A point within float32 rounding of a tie rounds either way: keep test transforms off them.
                    for c in (sx, sy):
                        d = abs(c - math.floor(c) - 0.5)
                        assert d == 0.0 or d > 1e-4, f"source coordinate {c} is next to a rounding tie"
                    rnd = lambda c: math.floor(c + 0.5) if c >= 0 else math.ceil(c - 0.5)  # noqa: E731
                    taps = [(rnd(sy), rnd(sx), 1.0)]
                else:
                    y0, x0 = math.floor(sy), math.floor(sx)
                    fy, fx = sy - y0, sx - x0
                    taps = [(y0, x0, (1 - fy) * (1 - fx)), (y0, x0 + 1, (1 - fy) * fx),
                            (y0 + 1, x0, fy * (1 - fx)), (y0 + 1, x0 + 1, fy * fx)]
                for iy, ix, wt in taps:
                    if 0 <= iy < h and 0 <= ix < w:
                        M[row, (n * h + iy) * w + ix] += wt
                    else:
                        outside[row] += wt
    return M, outside


TRANSFORMS = [
    [1, 0, 0, 0, 1, 0, 0, 0],                      # identity
    [1, 0, 1.5, 0, 1, -2.25, 0, 0],                # translation, out of range on two sides
    [0.8123, -0.3071, 1.2191, 0.3517, 0.9043, -0.7129, 0, 0],  # rotation + scale
    [1.1037, 0.1013, -0.4129, -0.2063, 0.9521, 0.6197, 0.0213, -0.0317],  # projective
]


@covers("image_transform")
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("fill_mode", ["constant", "nearest", "reflect", "wrap"])
def test_image_transform(B, interpolation, fill_mode):
    x = r(2, 5, 6, 3)
    t = np.array([TRANSFORMS[2], TRANSFORMS[3]], F32)
    out_h, out_w = 6, 5
    fill = 0.5
    M, outside = _transform_matrix(x.shape, t, out_h, out_w, interpolation, fill_mode)
    rows = x.astype(np.float64).reshape(-1, 3)
    ref = (M @ rows + outside[:, None] * (fill if fill_mode == "constant" else 0.0)).reshape(2, out_h, out_w, 3)
    got = B.image_transform(*up(B, x, t), out_h, out_w, interpolation, fill_mode, fill)
    close(B, got, ref)
    for tr in TRANSFORMS[:2]:  # one [1, 8] row for the batch
        t1 = np.array([tr], F32)
        M, outside = _transform_matrix(x.shape, t1, 5, 6, interpolation, fill_mode)
        ref = (M @ rows + outside[:, None] * (fill if fill_mode == "constant" else 0.0)).reshape(2, 5, 6, 3)
        close(B, B.image_transform(*up(B, x, t1), 5, 6, interpolation, fill_mode, fill), ref)


def test_image_transform_refuses_bad_arguments(B):
    x, t = up(B, r(1, 4, 4, 1), np.array([TRANSFORMS[0]], F32))
    with pytest.raises(ValueError, match="interpolation"):
        B.image_transform(x, t, 4, 4, "bicubic")
    with pytest.raises(ValueError, match="fill_mode"):
        B.image_transform(x, t, 4, 4, "bilinear", "mirror")


@covers("image_transform_grad")
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("fill_mode", ["constant", "nearest", "reflect", "wrap"])
def test_image_transform_grad(B, interpolation, fill_mode):
    # The transform is linear in x: its gradient is the transposed map.
    xs = (2, 5, 6, 3)
    t = np.array([TRANSFORMS[1], TRANSFORMS[3]], F32)
    out_h, out_w = 4, 7
    dy = r(2, out_h, out_w, 3)
    M, _ = _transform_matrix(xs, t, out_h, out_w, interpolation, fill_mode)
    ref = (M.T @ dy.astype(np.float64).reshape(-1, 3)).reshape(xs)
    close(B, B.image_transform_grad(B.asarray(dy), xs, B.asarray(t), interpolation, fill_mode), ref)


# ---------------------------------------------- keyed randomness / staging

@covers("random_keyed")
@pytest.mark.parametrize("kind", ["uniform", "normal"])
def test_random_keyed(B, kind):
    shape = (64, 100)
    a = host(B, B.random_keyed(shape, 11, 3, kind))
    assert a.shape == shape and a.dtype == F32
    same(B, B.random_keyed(shape, 11, 3, kind), a)
    for other in (B.random_keyed(shape, 11, 4, kind), B.random_keyed(shape, 12, 3, kind)):
        o = host(B, other)
        assert np.mean(o == a) < 0.01
    # The first elements do not depend on the size of the draw.
    np.testing.assert_array_equal(host(B, B.random_keyed((10,), 11, 3, kind)), a.reshape(-1)[:10])
    n = a.size
    if kind == "uniform":
        assert a.min() >= 0 and a.max() < 1
        assert abs(a.mean() - 0.5) < 5 * math.sqrt(1 / 12 / n)
        assert abs(a.var() - 1 / 12) < 0.005
    else:
        assert np.isfinite(a).all()
        assert abs(a.mean()) < 5 / math.sqrt(n)
        assert abs(a.std() - 1) < 0.03
        assert abs(np.mean(np.abs(a) < 1) - 0.6827) < 0.02
    assert host(B, B.random_keyed((3, 4), 1, 0, kind, "float64")).dtype == np.float64
    with pytest.raises(ValueError, match="kind"):
        B.random_keyed((3,), 1, 0, "poisson")


@covers("stage_to_device", "wait_staged")
def test_stage_to_device(B):
    f32, f64, i32 = r(4, 3), RNG.normal(size=(5,)), np.arange(6, dtype=np.int32).reshape(2, 3)
    text = np.array(["a", "bc"])
    arrays, ticket = B.stage_to_device([f32, f64, i32, text])
    assert B.wait_staged(ticket) is None
    assert len(arrays) == 4
    same(B, arrays[0], f32, F32)
    same(B, arrays[1], f64.astype(F32), F32)
    same(B, arrays[2], i32, np.int32)
    assert arrays[3] is text
    assert all(B.is_array(a) for a in arrays[:3])


# ------------------------------------------- 3-D convolution and pooling

def _geometry3(xshape, kshape, s, p, d):
    outs, pads = [], []
    for i in range(3):
        n, k = xshape[1 + i], kshape[i]
        if p == "valid":
            outs.append((n - (k - 1) * d[i] - 1) // s[i] + 1)
            pads.append((0, 0))
        else:
            o, before, after = _same_pads(n, k, s[i], d[i])
            outs.append(o)
            pads.append((before, after))
    return tuple(outs), tuple(pads)


def _padded3(x, pads, value=0.0, extra=0):
    n, dd, h, w, c = x.shape
    (f, bk), (t, b), (le, ri) = pads
    out = np.full((n, dd + f + bk + extra, h + t + b + extra, w + le + ri + extra, c), value, dtype=np.float64)
    out[:, f:f + dd, t:t + h, le:le + w, :] = x
    return out


def _taps3(out, k, s, d):
    for i in range(out[0]):
        for j in range(out[1]):
            for l in range(out[2]):  # noqa: E741
                for a in range(k[0]):
                    for b in range(k[1]):
                        for c in range(k[2]):
                            yield (i, j, l), (a, b, c), (i * s[0] + a * d[0], j * s[1] + b * d[1], l * s[2] + c * d[2])


def ref_conv3d(x, k, s, p, d):
    out, pads = _geometry3(x.shape, k.shape, s, p, d)
    xp = _padded3(x, pads)
    y = np.zeros((x.shape[0], *out, k.shape[4]))
    for o, t, src in _taps3(out, k.shape, s, d):
        y[(slice(None), *o)] += xp[(slice(None), *src)] @ k[t]
    return y


def ref_conv3d_grad_input(dy, k, xshape, s, p, d):
    out, pads = _geometry3(xshape, k.shape, s, p, d)
    dxp = _padded3(np.zeros(xshape), pads, extra=max(k.shape[:3]) * max(d) + max(s))
    for o, t, src in _taps3(out, k.shape, s, d):
        dxp[(slice(None), *src)] += dy[(slice(None), *o)] @ k[t].T
    (f, _), (t0, _), (l0, _) = pads
    return dxp[:, f:f + xshape[1], t0:t0 + xshape[2], l0:l0 + xshape[3]]


def ref_conv3d_grad_filter(x, dy, kshape, s, p, d):
    out, pads = _geometry3(x.shape, kshape, s, p, d)
    xp = _padded3(x, pads)
    dk = np.zeros(kshape)
    for o, t, src in _taps3(out, kshape, s, d):
        dk[t] += xp[(slice(None), *src)].T @ dy[(slice(None), *o)]
    return dk


CONV3D_CASES = [
    # x shape NDHWC, kernel [kd, kh, kw, C, O], strides, padding, dilation
    ((2, 4, 5, 4, 2), (2, 3, 2, 2, 3), (1, 1, 1), "valid", (1, 1, 1)),
    ((1, 5, 4, 5, 3), (3, 3, 3, 3, 2), (1, 1, 1), "same", (1, 1, 1)),
    ((2, 5, 6, 5, 2), (3, 2, 3, 2, 2), (2, 2, 1), "same", (1, 1, 1)),
    ((1, 6, 5, 5, 1), (2, 2, 2, 1, 2), (2, 1, 2), "valid", (2, 1, 1)),
    ((1, 4, 4, 4, 2), (1, 1, 1, 2, 3), (1, 1, 1), "valid", (1, 1, 1)),
]


@covers("conv3d", "conv3d_geometry")
@pytest.mark.parametrize("xs,ks,s,p,d", CONV3D_CASES)
def test_conv3d(B, xs, ks, s, p, d):
    x, k = r(*xs), r(*ks)
    assert B.conv3d_geometry(xs, ks, s, p, d) == _geometry3(xs, ks, s, p, d)
    close(B, B.conv3d(*up(B, x, k), s, p, d), ref_conv3d(x, k, s, p, d))


def test_conv3d_geometry_refuses_bad_shapes(B):
    with pytest.raises(ValueError, match="channels"):
        B.conv3d_geometry((1, 4, 4, 4, 3), (2, 2, 2, 2, 1), 1, "valid", 1)
    with pytest.raises(ValueError, match="5-D"):
        B.conv3d_geometry((4, 4, 4, 3), (2, 2, 2, 3, 1), 1, "valid", 1)


@covers("conv3d_grad_input")
@pytest.mark.parametrize("xs,ks,s,p,d", CONV3D_CASES)
def test_conv3d_grad_input(B, xs, ks, s, p, d):
    k = r(*ks)
    out, _ = _geometry3(xs, ks, s, p, d)
    dy = r(xs[0], *out, ks[4])
    close(B, B.conv3d_grad_input(*up(B, dy, k), xs, s, p, d), ref_conv3d_grad_input(dy, k, xs, s, p, d))


@covers("conv3d_grad_filter")
@pytest.mark.parametrize("xs,ks,s,p,d", CONV3D_CASES)
def test_conv3d_grad_filter(B, xs, ks, s, p, d):
    x = r(*xs)
    out, _ = _geometry3(xs, ks, s, p, d)
    dy = r(xs[0], *out, ks[4])
    close(B, B.conv3d_grad_filter(*up(B, x, dy), ks, s, p, d), ref_conv3d_grad_filter(x, dy, ks, s, p, d))


def _pool3_windows(xshape, ps, st, p):
    out, pads = _geometry3(xshape, ps, st, p, (1, 1, 1))
    wins = []
    for i in range(out[0]):
        for j in range(out[1]):
            for l in range(out[2]):  # noqa: E741
                wins.append(((i, j, l), (slice(i * st[0], i * st[0] + ps[0]), slice(j * st[1], j * st[1] + ps[1]),
                                         slice(l * st[2], l * st[2] + ps[2]))))
    return out, pads, wins


def ref_max_pool3d(x, ps, st, p):
    out, pads, wins = _pool3_windows(x.shape, ps, st, p)
    xp = _padded3(x, pads, -np.inf)
    y = np.zeros((x.shape[0], *out, x.shape[4]))
    for o, w in wins:
        y[(slice(None), *o)] = xp[(slice(None), *w)].max(axis=(1, 2, 3))
    return y


def ref_max_pool3d_grad(dy, x, ps, st, p):
    out, pads, wins = _pool3_windows(x.shape, ps, st, p)
    xp = _padded3(x, pads, -np.inf)
    dxp = np.zeros_like(xp)
    for n in range(x.shape[0]):
        for c in range(x.shape[4]):
            for o, w in wins:
                win = xp[(n, *w, c)]
                a, b, e = np.unravel_index(np.argmax(win), win.shape)
                dxp[n, w[0].start + a, w[1].start + b, w[2].start + e, c] += dy[(n, *o, c)]
    (f, _), (t, _), (le, _) = pads
    return dxp[:, f:f + x.shape[1], t:t + x.shape[2], le:le + x.shape[3]]


def ref_avg_pool3d(x, ps, st, p):
    out, pads, wins = _pool3_windows(x.shape, ps, st, p)
    xp = _padded3(x, pads)
    ones = _padded3(np.ones((1, *x.shape[1:4], 1)), pads)
    y = np.zeros((x.shape[0], *out, x.shape[4]))
    for o, w in wins:
        y[(slice(None), *o)] = xp[(slice(None), *w)].sum(axis=(1, 2, 3)) / ones[(0, *w, 0)].sum()
    return y


def ref_avg_pool3d_grad(dy, xshape, ps, st, p):
    out, pads, wins = _pool3_windows(xshape, ps, st, p)
    ones = _padded3(np.ones((1, *xshape[1:4], 1)), pads)
    dxp = _padded3(np.zeros(xshape), pads)
    for o, w in wins:
        dxp[(slice(None), *w)] += dy[(slice(None), *o)][:, None, None, None, :] / ones[(0, *w, 0)].sum()
    (f, _), (t, _), (le, _) = pads
    return dxp[:, f:f + xshape[1], t:t + xshape[2], le:le + xshape[3]]


POOL3D_CASES = [
    # x shape, pool size, strides, padding
    ((2, 4, 4, 4, 2), (2, 2, 2), (2, 2, 2), "valid"),
    ((1, 5, 5, 4, 2), (2, 2, 2), (2, 2, 2), "valid"),
    ((1, 5, 4, 5, 2), (3, 2, 3), (1, 2, 1), "valid"),
    ((2, 5, 5, 5, 1), (3, 3, 3), (2, 2, 2), "same"),
    ((1, 4, 5, 3, 3), (2, 3, 2), (1, 1, 2), "same"),
]


@covers("max_pool3d")
@pytest.mark.parametrize("xs,ps,st,p", POOL3D_CASES)
def test_max_pool3d(B, xs, ps, st, p):
    x = _distinct(*xs)
    close(B, B.max_pool3d(B.asarray(x), ps, st, p), ref_max_pool3d(x, ps, st, p))


@covers("max_pool3d_grad")
@pytest.mark.parametrize("xs,ps,st,p", POOL3D_CASES)
def test_max_pool3d_grad(B, xs, ps, st, p):
    x = _distinct(*xs)
    ax = B.asarray(x)
    y = B.max_pool3d(ax, ps, st, p)
    dy = r(*host(B, y).shape)
    close(B, B.max_pool3d_grad(B.asarray(dy), ax, y, ps, st, p), ref_max_pool3d_grad(dy, x, ps, st, p))


def test_pool3d_default_strides(B):
    x = _distinct(1, 4, 6, 6, 2)
    close(B, B.max_pool3d(B.asarray(x), (2, 3, 3)), ref_max_pool3d(x, (2, 3, 3), (2, 3, 3), "valid"))
    close(B, B.avg_pool3d(B.asarray(x), (2, 3, 3)), ref_avg_pool3d(x, (2, 3, 3), (2, 3, 3), "valid"))


@covers("avg_pool3d")
@pytest.mark.parametrize("xs,ps,st,p", POOL3D_CASES)
def test_avg_pool3d(B, xs, ps, st, p):
    x = r(*xs)
    close(B, B.avg_pool3d(B.asarray(x), ps, st, p), ref_avg_pool3d(x, ps, st, p))


@covers("avg_pool3d_grad")
@pytest.mark.parametrize("xs,ps,st,p", POOL3D_CASES)
def test_avg_pool3d_grad(B, xs, ps, st, p):
    out, _ = _geometry3(xs, ps, st, p, (1, 1, 1))
    dy = r(xs[0], *out, xs[4])
    close(B, B.avg_pool3d_grad(B.asarray(dy), xs, ps, st, p), ref_avg_pool3d_grad(dy, xs, ps, st, p))
