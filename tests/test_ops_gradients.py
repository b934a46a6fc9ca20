"""Finite-difference gradient checks (float64, CPU) for every differentiable op.

Each check compares deepgpu's reverse-mode gradient of ``sum(f(*xs) * r)``
(r a fixed random cotangent) with central differences. Inputs are random
(never zeros) and small; non-smooth ops get inputs away from their kinks.
"""
import numpy as np
import pytest

import deepgpu as dg
from deepgpu.testing import check_gradients

RNG = np.random.default_rng(20240601)


def rnd(*shape, lo=-1.0, hi=1.0):
    return RNG.uniform(lo, hi, size=shape)


def away(*shape, gap=0.1, scale=1.0):
    """Random values with |v| >= gap (away from 0, where relu/abs/... have kinks)."""
    mag = RNG.uniform(gap, scale + gap, size=shape)
    return mag * RNG.choice([-1.0, 1.0], size=shape)


def distinct(*shape):
    """A random permutation of well-separated values (no ties for max/min/pooling)."""
    n = int(np.prod(shape))
    return (RNG.permutation(n) * 0.1 - 0.05 * n + RNG.uniform(-0.02, 0.02, n)).reshape(shape)


# ------------------------------------------------------------- elementwise

@pytest.mark.parametrize("fn", [dg.add, dg.subtract, dg.multiply, dg.divide])
@pytest.mark.parametrize("sa,sb", [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 3), (4, 3)), ((3, 1), (1, 2))])
def test_binary_broadcasting(fn, sa, sb):
    b = away(*sb, gap=0.5) if fn is dg.divide else rnd(*sb)
    check_gradients(fn, [rnd(*sa), b])


def test_operators():
    check_gradients(lambda a, b: (a + b) * a - b / (a * a + 1.5) + (-a) ** 2, [rnd(3, 2), rnd(3, 2)])


def test_reflected_operators():
    check_gradients(lambda a: 2.0 - a + 3.0 * a + 1.0 / (a + 2.0) + 2.0 ** a, [rnd(4)])


def test_negative():
    check_gradients(dg.negative, [rnd(2, 3)])


def test_exp():
    check_gradients(dg.exp, [rnd(2, 3)])


def test_log():
    check_gradients(dg.log, [rnd(2, 3, lo=0.5, hi=2.0)])


def test_log1p():
    check_gradients(dg.log1p, [rnd(2, 3, lo=0.0, hi=2.0)])


def test_sqrt():
    check_gradients(dg.sqrt, [rnd(2, 3, lo=0.5, hi=2.0)])


def test_rsqrt_reciprocal():
    check_gradients(lambda x: dg.rsqrt(x) + dg.reciprocal(x), [rnd(5, lo=0.5, hi=2.0)])


def test_abs():
    check_gradients(dg.abs, [away(3, 4)])


def test_square():
    check_gradients(dg.square, [rnd(3, 4)])


def test_pow_both_inputs():
    check_gradients(dg.pow, [rnd(3, 4, lo=0.5, hi=2.0), rnd(3, 4)])


def test_pow_broadcast_exponent():
    check_gradients(dg.pow, [rnd(3, 4, lo=0.5, hi=2.0), rnd(4)])


def test_pow_scalar_exponent_negative_base():
    check_gradients(lambda x: dg.pow(x, 3.0), [rnd(6)])
    check_gradients(lambda x: x ** 2, [rnd(6)])


def _apart(shape, gap=0.2):
    a = rnd(*shape)
    return a, a + away(*shape, gap=gap)


def test_maximum():
    a, b = _apart((3, 4))
    check_gradients(dg.maximum, [a, b])


def test_minimum():
    a, b = _apart((3, 4))
    check_gradients(dg.minimum, [a, b])


def test_maximum_broadcast():
    a = np.array([[0.3, -0.7, 1.2], [0.9, 0.1, -0.4]])
    b = np.array([0.5, -0.2, 0.0])
    check_gradients(dg.maximum, [a, b])
    check_gradients(dg.minimum, [a, b])


def test_maximum_with_scalar():
    check_gradients(lambda x: dg.maximum(x, 0.05) + dg.minimum(x, -0.05), [away(3, 4)])


def test_clip():
    x = away(4, 5, gap=0.05, scale=2.0)
    x[np.abs(np.abs(x) - 0.5) < 0.05] += 0.2  # away from the clip bounds too
    check_gradients(lambda t: dg.clip(t, -0.5, 0.5), [x])


def test_where():
    cond = dg.tensor(rnd(3, 4) > 0)
    check_gradients(lambda a, b: dg.where(cond, a, b), [rnd(3, 4), rnd(3, 4)])


def test_where_broadcast():
    cond = dg.tensor(np.array([True, False, True, False]))
    check_gradients(lambda a, b: dg.where(cond, a, b), [rnd(3, 4), rnd(3, 1)])


def test_cast_gradient_flows_back_in_the_input_dtype():
    x = dg.tensor(rnd(3, 4), "float64")
    r = rnd(3, 4)
    g = dg.grad(lambda t: dg.sum(dg.cast(t, "float32") * dg.tensor(r, "float32")))(x)
    assert g.dtype == "float64"
    np.testing.assert_allclose(g.data_sync(), r, rtol=1e-6)
    # float -> float64 -> float round trip is differentiable.
    check_gradients(lambda t: dg.cast(dg.cast(t, "float64") * 2.0, "float64"), [rnd(3)])


def test_cast_to_int_is_not_differentiable():
    x = dg.tensor(rnd(3), "float64")
    g = dg.grad(lambda t: dg.sum(t * 1.0 + dg.cast(dg.cast(t * 10, "int32"), "float64")))(x)
    np.testing.assert_allclose(g.data_sync(), np.ones(3))


# ------------------------------------------------------------------ matmul

@pytest.mark.parametrize("sa,sb,ta,tb", [
    ((3, 4), (4, 5), False, False),
    ((4, 3), (4, 5), True, False),
    ((3, 4), (5, 4), False, True),
    ((4, 3), (5, 4), True, True),
    ((2, 3, 4), (2, 4, 5), False, False),
    ((2, 3, 4), (4, 5), False, False),
    ((3, 4), (2, 4, 5), False, False),
    ((2, 1, 4, 3), (3, 5, 4), True, True),
])
def test_matmul(sa, sb, ta, tb):
    check_gradients(lambda a, b: dg.matmul(a, b, transpose_a=ta, transpose_b=tb), [rnd(*sa), rnd(*sb)])


@pytest.mark.parametrize("sa,sb", [((4,), (4, 3)), ((3, 4), (4,)), ((4,), (4,)), ((4,), (2, 4, 3))])
def test_matmul_1d_operands(sa, sb):
    check_gradients(dg.matmul, [rnd(*sa), rnd(*sb)])


def test_matmul_operator():
    check_gradients(lambda a, b: a @ b, [rnd(2, 3), rnd(3, 2)])


# ------------------------------------------------------------------- shape

@pytest.mark.parametrize("perm", [None, (1, 0, 2), (2, 0, 1), (0, 2, 1)])
def test_transpose(perm):
    check_gradients(lambda x: dg.transpose(x, perm), [rnd(2, 3, 4)])


def test_transpose_property():
    check_gradients(lambda x: x.T, [rnd(2, 3)])


@pytest.mark.parametrize("shape", [(6, 2), (-1,), (3, -1, 2), (12,)])
def test_reshape(shape):
    check_gradients(lambda x: dg.reshape(x, shape), [rnd(3, 4)])


def test_expand_dims_squeeze():
    check_gradients(lambda x: dg.squeeze(dg.expand_dims(x, 1) * 2.0, 1), [rnd(3, 4)])
    check_gradients(lambda x: dg.squeeze(x), [rnd(3, 1, 4)])


@pytest.mark.parametrize("src,dst", [((4,), (3, 4)), ((3, 1), (3, 4)), ((1, 4), (2, 3, 4)), ((2, 1, 3), (2, 4, 3))])
def test_broadcast_to(src, dst):
    check_gradients(lambda x: dg.broadcast_to(x, dst), [rnd(*src)])


# -------------------------------------------------------------- reductions

AXES = [(None, False), (0, False), (1, True), (-1, False), ((0, 2), False), ((0, 2), True), ((0, 1, 2), False),
        (None, True)]


@pytest.mark.parametrize("axis,keepdims", AXES)
@pytest.mark.parametrize("fn", [dg.sum, dg.mean])
def test_sum_mean(fn, axis, keepdims):
    check_gradients(lambda x: fn(x, axis=axis, keepdims=keepdims), [rnd(2, 3, 4)])


@pytest.mark.parametrize("axis,keepdims", AXES)
@pytest.mark.parametrize("fn", [dg.max, dg.min])
def test_max_min(fn, axis, keepdims):
    check_gradients(lambda x: fn(x, axis=axis, keepdims=keepdims), [distinct(2, 3, 4)])


def test_max_ties_share_the_gradient():
    x = dg.tensor(np.array([[1.0, 3.0, 3.0], [2.0, 0.5, 2.0]]), "float64")
    g = dg.grad(lambda t: dg.sum(dg.max(t, axis=1)))(x)
    np.testing.assert_allclose(g.data_sync(), [[0, 0.5, 0.5], [0.5, 0, 0.5]])


def test_tensor_methods_reduce():
    check_gradients(lambda x: x.sum(axis=0) + x.mean(axis=0) + x.max(axis=0) + x.min(axis=0), [distinct(3, 4)])


@pytest.mark.parametrize("axis,keepdims", [(None, False), (1, False), (-1, True), ((0, 2), False), (None, True)])
def test_logsumexp(axis, keepdims):
    check_gradients(lambda x: dg.logsumexp(x, axis=axis, keepdims=keepdims), [rnd(2, 3, 4, lo=-3, hi=3)])


def test_variance_std():
    check_gradients(lambda x: dg.variance(x, axis=1), [rnd(3, 5)])
    check_gradients(lambda x: dg.std(x, axis=0, keepdims=True), [rnd(4, 3)])


# ------------------------------------------------------------ join / split

@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat(axis):
    shapes = {0: [(2, 3), (1, 3), (3, 3)], 1: [(2, 1), (2, 3), (2, 2)], -1: [(2, 2), (2, 1), (2, 3)]}[axis]
    check_gradients(lambda a, b, c: dg.concat([a, b, c], axis=axis), [rnd(*s) for s in shapes])


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_stack(axis):
    check_gradients(lambda a, b: dg.stack([a, b], axis=axis), [rnd(2, 3), rnd(2, 3)])


def test_split_unstack():
    check_gradients(lambda x: dg.concat([p * (i + 1.0) for i, p in enumerate(dg.split(x, [1, 3], axis=1))], 1),
                    [rnd(2, 4)])
    check_gradients(lambda x: dg.stack(dg.unstack(x, axis=1)[::-1], axis=0), [rnd(2, 3)])


def test_tile():
    check_gradients(lambda x: dg.tile(x, (2, 3)), [rnd(2, 3)])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_repeat(axis):
    check_gradients(lambda x: dg.repeat(x, 3, axis), [rnd(2, 3, 2)])


# ----------------------------------------------------------------- indexing

@pytest.mark.parametrize("begin,size", [((1, 0), (2, 3)), ((0, 2), (-1, 2)), ((2,), (1,)), ((1, 1), None)])
def test_slice(begin, size):
    check_gradients(lambda x: dg.slice(x, begin, size), [rnd(4, 5)])


@pytest.mark.parametrize("key", [
    1, -1, (slice(1, 3),), (slice(None), 2), (slice(None, None, 2), slice(3, 0, -1)), (Ellipsis, 1),
    (None, 1, slice(1, None)), (1, 2),
])
def test_getitem_basic(key):
    check_gradients(lambda x: x[key], [rnd(4, 5)])


def test_getitem_advanced_repeated_indices():
    check_gradients(lambda x: x[[0, 2, 0, 0, 3]], [rnd(4, 3)])
    check_gradients(lambda x: x[:, [1, 1, 0]], [rnd(2, 3)])
    idx = dg.tensor(np.array([[0, 1], [1, 1]]), "int32")
    check_gradients(lambda x: x[idx], [rnd(3, 2)])
    check_gradients(lambda x: dg.getitem(x, ([0, 0, 2], [1, 1, 0])), [rnd(3, 2)])


def test_getitem_bool_mask():
    mask = dg.tensor(np.array([[True, False, True], [False, True, True]]))
    check_gradients(lambda x: x[mask], [rnd(2, 3)])


@pytest.mark.parametrize("paddings", [((1, 2), (0, 1)), ((0, 0), (3, 0)), ((2, 2), (2, 2))])
def test_pad(paddings):
    check_gradients(lambda x: dg.pad(x, paddings, constant_values=0.5), [rnd(2, 3)])


@pytest.mark.parametrize("axis", [0, 1])
def test_gather(axis):
    idx = [2, 0, 2, 1, 2]
    check_gradients(lambda x: dg.gather(x, idx, axis=axis), [rnd(3, 3, 2)])


def test_gather_2d_indices_and_negative():
    idx = dg.tensor(np.array([[0, 3], [3, -1]]), "int32")
    check_gradients(lambda x: dg.gather(x, idx, axis=1), [rnd(2, 4)])
    check_gradients(lambda x: dg.gather(x, idx, axis=0), [rnd(4, 3)])


# -------------------------------------------------------------- activations

def test_relu():
    check_gradients(dg.relu, [away(3, 4)])


def test_sigmoid():
    check_gradients(dg.sigmoid, [rnd(3, 4, lo=-4, hi=4)])


def test_tanh():
    check_gradients(dg.tanh, [rnd(3, 4, lo=-2, hi=2)])


def test_sin_cos():
    check_gradients(dg.ops.sin, [rnd(3, 4, lo=-4, hi=4)])
    check_gradients(dg.ops.cos, [rnd(3, 4, lo=-4, hi=4)])


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_elu(alpha):
    check_gradients(lambda x: dg.elu(x, alpha), [away(3, 4)])


@pytest.mark.parametrize("alpha", [0.2, 0.01])
def test_leaky_relu(alpha):
    check_gradients(lambda x: dg.leaky_relu(x, alpha), [away(3, 4)])


def test_softplus():
    check_gradients(dg.softplus, [rnd(3, 4, lo=-5, hi=5)])


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax(axis):
    check_gradients(lambda x: dg.softmax(x, axis=axis), [rnd(2, 3, 4, lo=-2, hi=2)])


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_log_softmax(axis):
    check_gradients(lambda x: dg.log_softmax(x, axis=axis), [rnd(2, 3, 4, lo=-2, hi=2)])


def _probs(*shape):
    p = rnd(*shape, lo=0.1, hi=1.0)
    return p / p.sum(axis=-1, keepdims=True)


def test_softmax_cross_entropy_both_inputs():
    check_gradients(dg.softmax_cross_entropy, [_probs(4, 5), rnd(4, 5, lo=-3, hi=3)])


def test_softmax_cross_entropy_axis0():
    p = rnd(3, 4, lo=0.1, hi=1.0)
    p /= p.sum(axis=0, keepdims=True)
    check_gradients(lambda lab, lg: dg.softmax_cross_entropy(lab, lg, axis=0), [p, rnd(3, 4)])


def test_softmax_cross_entropy_3d():
    labels = dg.tensor(_probs(2, 3, 4), "float64")
    check_gradients(lambda lg: dg.softmax_cross_entropy(labels, lg), [rnd(2, 3, 4)])


@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 6), (3, 1)])
def test_sparse_softmax_cross_entropy(shape):
    labels = RNG.integers(0, shape[-1], shape[:-1])
    labels.reshape(-1)[0] = shape[-1]  # a label with no class: loss 0, gradient 0
    t = dg.tensor(labels, "int32")
    check_gradients(lambda lg: dg.sparse_softmax_cross_entropy(t, lg), [rnd(*shape, lo=-3, hi=3)])
    onehot = dg.tensor((labels[..., None] == np.arange(shape[-1])).astype(np.float64), "float64")
    lg = dg.tensor(rnd(*shape), "float64")
    np.testing.assert_allclose(dg.sparse_softmax_cross_entropy(t, lg).data_sync(),
                               dg.softmax_cross_entropy(onehot, lg).data_sync(), rtol=1e-12)


def test_sparse_softmax_cross_entropy_errors():
    lg = dg.tensor(rnd(4, 5))
    with pytest.raises(TypeError, match="integer class indices"):
        dg.sparse_softmax_cross_entropy(dg.tensor([0.0, 1.0, 2.0, 3.0]), lg)
    with pytest.raises(ValueError, match=r"expected \(4,\)"):
        dg.sparse_softmax_cross_entropy(dg.tensor([0, 1, 2], "int32"), lg)
    with pytest.raises(ValueError, match="do not fit scores"):
        dg.ops.argmax_hits(lg, dg.tensor([0, 1], "int32"))


# -------------------------------------------------------------------- dense

@pytest.mark.parametrize("activation", [None, "linear", "relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_dense(activation, use_bias):
    x, w, b = rnd(4, 3), rnd(3, 5), rnd(5)
    pre = x @ w + (b if use_bias else 0)
    if activation == "relu":
        assert np.abs(pre).min() > 1e-4  # away from the kink
    if use_bias:
        check_gradients(lambda x, w, b: dg.dense(x, w, b, activation), [x, w, b])
    else:
        check_gradients(lambda x, w: dg.dense(x, w, None, activation), [x, w])


def test_dense_matches_unfused():
    x, w, b = rnd(4, 3), rnd(3, 5), rnd(5)
    for act, fn in [("relu", dg.relu), ("sigmoid", dg.sigmoid), ("tanh", dg.tanh)]:
        a = dg.dense(dg.tensor(x, "float64"), dg.tensor(w, "float64"), dg.tensor(b, "float64"), act)
        e = fn(dg.tensor(x, "float64") @ dg.tensor(w, "float64") + dg.tensor(b, "float64"))
        np.testing.assert_allclose(a.data_sync(), e.data_sync(), rtol=1e-12)


# ------------------------------------------------------------- convolution

CONV_CASES = [
    # x shape, kernel shape, strides, padding, dilation
    ((1, 5, 5, 2), (3, 3, 2, 3), 1, "valid", 1),
    ((2, 5, 4, 1), (3, 3, 1, 2), 1, "same", 1),
    ((1, 7, 6, 2), (3, 3, 2, 2), 2, "same", 1),
    ((2, 7, 7, 1), (3, 2, 1, 2), 2, "valid", 1),
    ((1, 6, 7, 2), (2, 2, 2, 2), (1, 2), "same", 1),
    ((1, 7, 7, 1), (3, 3, 1, 2), 1, "valid", 2),
    ((1, 6, 5, 2), (3, 3, 2, 1), 1, "same", 2),
    ((2, 4, 5, 3), (1, 1, 3, 2), 1, "valid", 1),
    ((1, 5, 5, 3), (1, 1, 3, 2), 2, "same", 1),
    ((1, 7, 6, 2), (5, 5, 2, 2), 1, "valid", 1),
    ((1, 5, 6, 1), (5, 5, 1, 2), 1, "same", 1),
    ((1, 4, 4, 1), (4, 4, 1, 1), 2, "same", 1),
]


@pytest.mark.parametrize("xs,ks,s,p,d", CONV_CASES)
def test_conv2d(xs, ks, s, p, d):
    check_gradients(lambda x, k: dg.conv2d(x, k, strides=s, padding=p, dilation_rate=d), [rnd(*xs), rnd(*ks)])


@pytest.mark.parametrize("activation", [None, "relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("xs,ks,s,p,d", [CONV_CASES[0], CONV_CASES[2], CONV_CASES[5]])
def test_conv2d_bias_act(xs, ks, s, p, d, activation):
    x, k, b = rnd(*xs), rnd(*ks), rnd(ks[3])
    if activation == "relu":  # keep the pre-activations away from relu's kink
        pre = dg.conv2d(dg.tensor(x, "float64"), dg.tensor(k, "float64"), s, p, d).data_sync() + b
        b = b + np.where(np.abs(pre).min(axis=(0, 1, 2)) < 1e-3, 0.01, 0.0)
    check_gradients(lambda x, k, b: dg.ops.conv2d_bias_act(x, k, b, activation, s, p, d), [x, k, b])
    check_gradients(lambda x, k: dg.ops.conv2d_bias_act(x, k, None, activation, s, p, d), [x, k])


def test_conv2d_bias_act_matches_unfused():
    x, k, b = (dg.tensor(a, "float64") for a in (rnd(2, 6, 5, 3), rnd(3, 3, 3, 4), rnd(4)))
    for act, fn in [(None, lambda y: y), ("relu", dg.relu), ("sigmoid", dg.sigmoid), ("tanh", dg.tanh)]:
        a = dg.ops.conv2d_bias_act(x, k, b, act, 1, "same")
        e = fn(dg.conv2d(x, k, 1, "same") + b)
        np.testing.assert_allclose(a.data_sync(), e.data_sync(), rtol=1e-12, atol=1e-14)


def test_conv2d_unbatched_input():
    check_gradients(lambda x, k: dg.conv2d(x, k, padding="same"), [rnd(4, 4, 2), rnd(3, 3, 2, 1)])


TCONV_CASES = [
    # x shape, kernel [kh, kw, out, in], strides, padding, dilation
    ((1, 3, 3, 2), (3, 3, 1, 2), 1, "valid", 1),
    ((2, 3, 2, 1), (3, 3, 2, 1), 2, "same", 1),
    ((1, 3, 3, 2), (2, 2, 2, 2), 2, "valid", 1),
    ((1, 4, 3, 1), (3, 3, 1, 1), 1, "same", 1),
    ((1, 3, 3, 1), (3, 3, 2, 1), 1, "valid", 2),
    ((1, 3, 2, 2), (3, 2, 1, 2), (2, 1), "same", 1),
]


@pytest.mark.parametrize("xs,ks,s,p,d", TCONV_CASES)
def test_conv2d_transpose(xs, ks, s, p, d):
    check_gradients(lambda x, k: dg.conv2d_transpose(x, k, strides=s, padding=p, dilation_rate=d),
                    [rnd(*xs), rnd(*ks)])


def test_conv2d_transpose_is_the_adjoint_of_conv2d():
    # <conv2d(x, k), y> == <x, conv2d_transpose(y, k)> for every x, y.
    x, k = rnd(2, 7, 6, 3), rnd(3, 3, 3, 4)
    for s, p in [(1, "valid"), (2, "same"), (2, "valid"), (1, "same")]:
        cx = dg.conv2d(dg.tensor(x, "float64"), dg.tensor(k, "float64"), strides=s, padding=p)
        y = rnd(*cx.shape)
        ty = dg.conv2d_transpose(dg.tensor(y, "float64"), dg.tensor(k, "float64"), output_shape=x.shape,
                                 strides=s, padding=p)
        np.testing.assert_allclose((cx.data_sync() * y).sum(), (x * ty.data_sync()).sum(), rtol=1e-10)


# ----------------------------------------------------------------- pooling

POOL_CASES = [
    # x shape, pool size, strides, padding
    ((1, 4, 4, 2), 2, None, "valid"),
    ((2, 5, 5, 1), 2, None, "valid"),
    ((1, 5, 5, 2), 3, 1, "valid"),
    ((1, 5, 6, 1), 3, 2, "same"),
    ((2, 5, 5, 1), 2, None, "same"),
    ((1, 6, 5, 2), (2, 3), (1, 2), "same"),
    ((1, 4, 4, 1), 3, 1, "same"),
    ((1, 3, 3, 2), 1, None, "valid"),
]


@pytest.mark.parametrize("xs,ps,st,p", POOL_CASES)
def test_max_pool2d(xs, ps, st, p):
    check_gradients(lambda x: dg.max_pool2d(x, ps, strides=st, padding=p), [distinct(*xs)])


@pytest.mark.parametrize("xs,ps,st,p", POOL_CASES)
def test_avg_pool2d(xs, ps, st, p):
    check_gradients(lambda x: dg.avg_pool2d(x, ps, strides=st, padding=p), [rnd(*xs)])


# ----------------------------------------------------------- normalization

@pytest.mark.parametrize("shape,axis", [((5, 4), -1), ((3, 2, 2, 3), -1), ((4, 3, 5), 1), ((3, 4, 2, 2), 2)])
@pytest.mark.parametrize("affine", ["both", "gamma", "beta", "none"])
def test_batch_norm(shape, axis, affine):
    """Through the batch statistics; another axis than the last goes through transposes."""
    c = shape[axis]
    x = rnd(*shape) * 2 + 0.5
    g, b = rnd(c, lo=0.5, hi=1.5), rnd(c)
    if affine == "both":
        check_gradients(lambda x, g, b: dg.ops.batch_norm(x, g, b, axis, 1e-3)[0], [x, g, b])
    elif affine == "gamma":
        check_gradients(lambda x, g: dg.ops.batch_norm(x, g, None, axis, 1e-3)[0], [x, g])
    elif affine == "beta":
        check_gradients(lambda x, b: dg.ops.batch_norm(x, None, b, axis, 1e-3)[0], [x, b])
    else:
        check_gradients(lambda x: dg.ops.batch_norm(x, None, None, axis, 1e-3)[0], [x])


def test_batch_norm_statistics_and_errors():
    x = rnd(6, 3, 4) * 3 + 1
    y, mean, var = dg.ops.batch_norm(dg.tensor(x, "float64"), None, None, 1, 1e-2)
    np.testing.assert_allclose(mean.data_sync(), x.mean((0, 2)), rtol=1e-12)
    np.testing.assert_allclose(var.data_sync(), x.var((0, 2)), rtol=1e-12)  # biased, as Keras
    want = (x - x.mean((0, 2), keepdims=True)) / np.sqrt(x.var((0, 2), keepdims=True) + 1e-2)
    np.testing.assert_allclose(y.data_sync(), want, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match=r"batch_norm: gamma has shape \(4,\), expected \(3,\)"):
        dg.ops.batch_norm(dg.tensor(x), dg.tensor(np.ones(4)), None, 1)
    # A gamma that needs no gradient (a constant) gets none; x still does.
    xt, gt = dg.tensor(x, "float64"), dg.tensor(np.ones(4), "float64")
    gx, = dg.grads(lambda x: dg.sum(dg.square(dg.ops.batch_norm(x, gt, None)[0])))([xt])
    assert gx.shape == x.shape and np.isfinite(gx.data_sync()).all()


# ----------------------------------------------------------------- dropout

@pytest.mark.parametrize("rate", [0.3, 0.5])
def test_dropout_gradient_is_the_mask(rate):
    x = dg.tensor(away(6, 7), "float64")
    dy = rnd(6, 7)
    y, g = dg.value_and_grad(lambda t: dg.dropout(t, rate))(x, dy=dg.tensor(dy, "float64"))
    mask = y.data_sync() / x.data_sync()
    kept = mask != 0
    assert 0 < kept.sum() < kept.size
    np.testing.assert_allclose(mask[kept], 1.0 / (1.0 - rate))
    np.testing.assert_allclose(g.data_sync(), dy * mask, rtol=1e-12)


def test_dropout_noise_shape_and_inference():
    x = dg.tensor(away(4, 5), "float64")
    g = dg.grad(lambda t: dg.sum(dg.dropout(t, 0.5, noise_shape=(1, 5))))(x).data_sync()
    assert (g == g[0]).all()  # one decision per column
    g2 = dg.grad(lambda t: dg.sum(dg.dropout(t, 0.5, training=False)))(x).data_sync()
    np.testing.assert_array_equal(g2, np.ones((4, 5)))


# ------------------------------------------------------------ compositions

def test_a_tensor_used_many_times():
    check_gradients(lambda x: x * x * x + dg.exp(x) * x - dg.sum(x * x, axis=0), [rnd(3, 2)])


def test_check_gradients_catches_a_wrong_rule():
    from deepgpu.autograd import GRADIENTS
    good = GRADIENTS["tanh"]
    GRADIENTS["tanh"] = lambda node, dy: (node.B.multiply(good(node, dy)[0], 1.01),)
    try:
        with pytest.raises(AssertionError, match="gradient of input 0"):
            check_gradients(dg.tanh, [rnd(3)])
    finally:
        GRADIENTS["tanh"] = good
    check_gradients(dg.tanh, [rnd(3)])


def test_small_network():
    def f(x, w1, b1, k):
        h = dg.conv2d(x, k, padding="same")
        h = dg.max_pool2d(dg.tanh(h), 2)
        h = dg.reshape(h, (h.shape[0], -1))
        return dg.log_softmax(dg.dense(h, w1, b1, "sigmoid"))
    check_gradients(f, [rnd(2, 4, 4, 1), rnd(8, 3), rnd(3), rnd(3, 3, 1, 2)])


def test_assert_close():
    from deepgpu.testing import assert_close
    assert_close(dg.tensor([1.0, 2.0]), np.array([1.0, 2.00001]))
    with pytest.raises(AssertionError, match="shapes differ"):
        assert_close(dg.tensor([1.0, 2.0]), np.array([[1.0, 2.0]]))
    with pytest.raises(AssertionError):
        assert_close(dg.tensor([1.0, 2.0]), np.array([1.0, 2.01]))
