"""Losses against independent NumPy references, their gradients, reductions, names and shape checks."""
import numpy as np
import pytest

import deepgpu as dg
from deepgpu import losses
from deepgpu.testing import assert_close, check_gradients

RNG = np.random.default_rng(3)
EPS = 1e-7


def probs(*shape):
    p = RNG.random(shape) + 0.05
    return p / p.sum(-1, keepdims=True)


def onehot(labels, n):
    return np.eye(n)[labels]


def np_log_softmax(x):
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


# ---------------------------------------------------------- NumPy references

def ref_mse(t, p):
    return ((t - p) ** 2).mean(-1)


def ref_mae(t, p):
    return np.abs(t - p).mean(-1)


def ref_huber(t, p, d=1.0):
    e = np.abs(p - t)
    return np.where(e <= d, 0.5 * e ** 2, d * e - 0.5 * d * d).mean(-1)


def ref_bce(t, p, logits=False, ls=0.0):
    t = t * (1 - ls) + 0.5 * ls
    if logits:  # log(1 + e^x) - t x, through logaddexp
        return (np.logaddexp(0, p) - t * p).mean(-1)
    p = np.clip(p, EPS, 1 - EPS)
    return -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean(-1)


def ref_cce(t, p, logits=False, ls=0.0):
    t = t * (1 - ls) + ls / t.shape[-1]
    if logits:
        return -(t * np_log_softmax(p)).sum(-1)
    p = np.clip(p / p.sum(-1, keepdims=True), EPS, 1 - EPS)
    return -(t * np.log(p)).sum(-1)


def ref_kld(t, p):
    t, p = np.clip(t, EPS, 1), np.clip(p, EPS, 1)
    return (t * np.log(t / p)).sum(-1)


def test_regression_losses_match_numpy(backend):
    t, p = RNG.normal(size=(6, 4)), RNG.normal(size=(6, 4)) * 2
    T, P = dg.tensor(t), dg.tensor(p)
    assert_close(losses.mean_squared_error(T, P), ref_mse(t, p))
    assert_close(losses.mean_absolute_error(T, P), ref_mae(t, p))
    assert_close(losses.huber(T, P), ref_huber(t, p))
    assert_close(losses.huber(T, P, delta=0.3), ref_huber(t, p, 0.3))
    assert_close(losses.mean_absolute_percentage_error(T, P),
                 100 * np.abs((t - p) / np.maximum(np.abs(t), EPS)).mean(-1), rtol=1e-4)
    assert_close(losses.log_cosh(T, P), np.log(np.cosh(p - t)).mean(-1), rtol=1e-4, atol=1e-5)
    out = losses.mse(T, P)
    assert out.shape == (6,) and out.backend == backend


def test_rank_of_targets_is_matched_like_keras(backend):
    t, p = RNG.normal(size=(5,)), RNG.normal(size=(5, 1))
    assert_close(losses.mse(dg.tensor(t), dg.tensor(p)), (t - p[:, 0]) ** 2)
    assert losses.mse(dg.tensor(t), dg.tensor(p)).shape == (5,)


@pytest.mark.parametrize("ls", [0.0, 0.2])
def test_binary_crossentropy(backend, ls):
    t = RNG.integers(0, 2, size=(7, 3)).astype(float)
    logits = RNG.normal(size=(7, 3)) * 3
    p = 1 / (1 + np.exp(-logits))
    assert_close(losses.binary_crossentropy(dg.tensor(t), dg.tensor(p), label_smoothing=ls), ref_bce(t, p, ls=ls))
    assert_close(losses.binary_crossentropy(dg.tensor(t), dg.tensor(logits), from_logits=True, label_smoothing=ls),
                 ref_bce(t, logits, True, ls))


@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_categorical_and_sparse_crossentropy(backend, ls):
    labels = RNG.integers(0, 5, size=8)
    t, p, z = onehot(labels, 5), probs(8, 5), RNG.normal(size=(8, 5)) * 4
    assert_close(losses.categorical_crossentropy(dg.tensor(t), dg.tensor(p), label_smoothing=ls), ref_cce(t, p, ls=ls))
    assert_close(losses.categorical_crossentropy(dg.tensor(t), dg.tensor(z), from_logits=True, label_smoothing=ls),
                 ref_cce(t, z, True, ls))
    # Unnormalized probabilities are rescaled, as Keras does.
    assert_close(losses.categorical_crossentropy(dg.tensor(t), dg.tensor(p * 3)), ref_cce(t, p))
    for lab in (labels, labels[:, None], labels.astype(np.float32)):
        assert_close(losses.sparse_categorical_crossentropy(dg.tensor(lab), dg.tensor(p)), ref_cce(t, p))
        assert_close(losses.sparse_categorical_crossentropy(dg.tensor(lab), dg.tensor(z), from_logits=True),
                     ref_cce(t, z, True))


def test_kl_divergence(backend):
    t, p = probs(6, 4), probs(6, 4)
    t[0, 0] = 0.0
    assert_close(losses.kl_divergence(dg.tensor(t), dg.tensor(p)), ref_kld(t, p), atol=1e-6)
    assert losses.get("kullbackLeiblerDivergence").name == "kl_divergence"


def test_extreme_values_stay_finite(backend):
    z = np.array([[1000.0, -1000.0, 0.0], [-500.0, 500.0, 30.0]])
    t = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    cce = losses.categorical_crossentropy(dg.tensor(t), dg.tensor(z), from_logits=True).data_sync()
    assert np.isfinite(cce).all()
    assert_close(cce, ref_cce(t, z, True), rtol=1e-5)
    sce = losses.sparse_categorical_crossentropy(dg.tensor([1, 0]), dg.tensor(z), from_logits=True).data_sync()
    assert_close(sce, cce, rtol=1e-5)
    bz = np.array([[1000.0], [-1000.0], [80.0], [-80.0]])
    bt = np.array([[0.0], [1.0], [1.0], [0.0]])
    bce = losses.binary_crossentropy(dg.tensor(bt), dg.tensor(bz), from_logits=True).data_sync()
    assert np.isfinite(bce).all()
    assert_close(bce, ref_bce(bt, bz, True), rtol=1e-5)
    # Probabilities of exactly 0 and 1 are clipped, not log(0).
    pb = losses.binary_crossentropy(dg.tensor(bt), dg.tensor([[1.0], [0.0], [1.0], [0.0]])).data_sync()
    assert np.isfinite(pb).all()
    # (1 - 1e-7 rounds to 1 - 1.19e-7 in float32, as in Keras: a 1% difference at the clip.)
    assert_close(pb, ref_bce(bt, np.array([[1.0], [0.0], [1.0], [0.0]])), rtol=2e-2)
    pc = losses.categorical_crossentropy(dg.tensor(t), dg.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])).data_sync()
    assert np.isfinite(pc).all() and pc.max() == pytest.approx(-np.log(EPS), rel=1e-3)


def test_softmax_outputs_use_their_logits(backend):
    """A softmax output is traced to its logits: no clipping, the exact gradient p - y, one fused op."""
    z = np.array([[30.0, -10.0, 0.0, 2.0], [0.5, 1.0, -2.0, 0.0], [-40.0, 40.0, 1.0, 0.0]])
    labels = np.array([1, 2, 0])  # rows 0 and 2: the true class has p < 1e-7
    t = onehot(labels, 4)
    want = ref_cce(t, z, True)
    assert want[0] > -np.log(EPS) and want[2] > -np.log(EPS)  # the clipped form could not give these
    for name, fn, lab in (("cce", losses.categorical_crossentropy, t),
                          ("sparse", losses.sparse_categorical_crossentropy, labels)):
        seen = []

        def f(zt, fn=fn, lab=lab, seen=seen):
            seen.append(fn(dg.tensor(lab), dg.activations.softmax(zt)))
            return dg.sum(seen[-1])

        g = dg.grad(f)(dg.tensor(z.astype(np.float32))).data_sync()
        assert seen[0]._node.op == {"cce": "softmax_cross_entropy", "sparse": "sparse_softmax_cross_entropy"}[name]
        assert_close(seen[0].data_sync(), want, rtol=1e-5)
        p = np.exp(np_log_softmax(z))
        assert_close(g, p - t, atol=1e-6)
    # Not over the last axis, or not a softmax: the clipped probability form.
    p = probs(3, 4)
    assert_close(losses.categorical_crossentropy(dg.tensor(t), dg.tensor(p)), ref_cce(t, p))
    first = dg.activations.softmax(dg.tensor(z.T.astype(np.float32)), axis=0)
    assert first._logits is None
    assert_close(losses.categorical_crossentropy(dg.tensor(t), dg.ops.transpose(first)),
                 ref_cce(t, np.exp(np_log_softmax(z))), rtol=1e-5)


def test_softmax_model_loss_matches_from_logits(backend):
    """A softmax-output model's loss and gradients equal the same model with logits and from_logits=True."""
    dg.set_seed(5)
    x = RNG.normal(size=(16, 6)).astype(np.float32)
    y = RNG.integers(0, 3, size=16)
    a = dg.Sequential([dg.layers.Dense(3, activation="softmax", input_shape=(6,))])
    b = dg.Sequential([dg.layers.Dense(3, input_shape=(6,))])
    b.set_weights(a.get_weights())
    a.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    b.compile(optimizer="sgd", loss=losses.SparseCategoricalCrossentropy(from_logits=True))
    la, lb = a.train_on_batch(x, y), b.train_on_batch(x, y)
    assert la == pytest.approx(lb, rel=1e-6)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        assert_close(wa, wb, atol=1e-7)


# ------------------------------------------------------------------ gradients

T = RNG.normal(size=(3, 4))
P = RNG.normal(size=(3, 4))
LAB = onehot(np.array([0, 3, 1]), 4)


@pytest.mark.parametrize("fn,t,p", [
    (losses.mean_squared_error, T, P),
    (losses.mean_absolute_error, T, P),
    (lambda t, p: losses.huber(t, p, delta=0.7), T, P),
    (lambda t, p: losses.binary_crossentropy(t, p, from_logits=True, label_smoothing=0.1),
     RNG.integers(0, 2, (3, 4)).astype(float), P * 3),
    (losses.binary_crossentropy, RNG.integers(0, 2, (3, 4)).astype(float), RNG.uniform(0.05, 0.95, (3, 4))),
    (lambda t, p: losses.categorical_crossentropy(t, p, from_logits=True, label_smoothing=0.1), LAB, P * 2),
    (losses.categorical_crossentropy, LAB, RNG.uniform(0.05, 1.0, (3, 4))),
    (lambda t, p: losses.sparse_categorical_crossentropy(dg.tensor([0, 3, 1], backend="cpu"), p, from_logits=True),
     LAB, P),
    (losses.kl_divergence, probs(3, 4), probs(3, 4)),
    (losses.log_cosh, T, P),
], ids=["mse", "mae", "huber", "bce_logits", "bce", "cce_logits", "cce", "sparse_logits", "kld", "logcosh"])
def test_loss_gradients(fn, t, p):
    t_const = dg.tensor(t, "float64", backend="cpu")
    check_gradients(lambda pred: fn(t_const, pred), [p], rtol=1e-4, atol=1e-6)


# ------------------------------------------------------- classes, reduction

def test_loss_classes_reduce_and_weight(backend):
    t, p = RNG.normal(size=(4, 3)), RNG.normal(size=(4, 3))
    per = ref_mse(t, p)
    mse = losses.MeanSquaredError()
    assert_close(mse(dg.tensor(t), dg.tensor(p)), per.mean())
    sw = np.array([1.0, 0.0, 2.0, 0.5])
    assert_close(mse(dg.tensor(t), dg.tensor(p), sample_weight=dg.tensor(sw)), (per * sw).sum() / 4)
    assert_close(mse(t, dg.tensor(p), sample_weight=sw[:, None]), (per * sw).sum() / 4)
    assert_close(losses.MeanSquaredError(reduction="sum")(dg.tensor(t), dg.tensor(p)), per.sum())
    assert_close(losses.MeanSquaredError(reduction="none")(dg.tensor(t), dg.tensor(p)), per)
    with pytest.raises(ValueError, match="reduction"):
        losses.MeanSquaredError(reduction="mean_of_everything")


@pytest.mark.parametrize("loss", [
    losses.MeanSquaredError(), losses.MeanAbsoluteError(), losses.Huber(delta=2.0),
    losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.1),
    losses.CategoricalCrossentropy(label_smoothing=0.2), losses.SparseCategoricalCrossentropy(from_logits=True),
    losses.KLDivergence(name="kl"),
])
def test_loss_config_round_trip(loss):
    cfg = loss.get_config()
    clone = type(loss).from_config(cfg)
    assert clone.get_config() == cfg
    assert losses.get(losses.serialize(loss)).get_config() == cfg


def test_class_arguments_reach_the_function():
    t, z = np.array([[1.0], [0.0]]), np.array([[2.0], [-1.0]])
    got = losses.BinaryCrossentropy(from_logits=True)(dg.tensor(t), dg.tensor(z))
    assert_close(got, ref_bce(t, z, True).mean())
    assert losses.Huber(0.5).delta == 0.5
    with pytest.raises(TypeError):
        losses.Huber(dleta=1.0)


# ----------------------------------------------------------------------- get

@pytest.mark.parametrize("name,cls", [
    ("mse", losses.MeanSquaredError), ("mean_squared_error", losses.MeanSquaredError),
    ("meanSquaredError", losses.MeanSquaredError), ("MSE", losses.MeanSquaredError),
    ("mae", losses.MeanAbsoluteError), ("meanAbsoluteError", losses.MeanAbsoluteError),
    ("huber", losses.Huber), ("binary_crossentropy", losses.BinaryCrossentropy),
    ("binaryCrossentropy", losses.BinaryCrossentropy), ("categoricalCrossentropy", losses.CategoricalCrossentropy),
    ("sparse_categorical_crossentropy", losses.SparseCategoricalCrossentropy),
    ("sparseCategoricalCrossentropy", losses.SparseCategoricalCrossentropy),
    ("kld", losses.KLDivergence), ("kullbackLeiblerDivergence", losses.KLDivergence),
    ("CategoricalCrossentropy", losses.CategoricalCrossentropy),
])
def test_get_by_name(name, cls):
    assert type(losses.get(name)) is cls


def test_get_instances_callables_and_errors():
    inst = losses.Huber()
    assert losses.get(inst) is inst

    def my_loss(y_true, y_pred):
        return dg.mean(dg.square(y_true - y_pred), axis=-1)

    assert losses.get(my_loss) is my_loss
    assert losses.get({"class_name": "BinaryCrossentropy", "config": {"from_logits": True}}).from_logits
    with pytest.raises(ValueError, match="mean_squared_error") as e:
        losses.get("mean_squarred_error")
    assert "categorical_crossentropy" in str(e.value)
    with pytest.raises(TypeError):
        losses.get(3)


# -------------------------------------------------------------- check_shapes

def test_check_shapes():
    ok = [((None, 10), (None, 10), "categorical_crossentropy"), ((None,), (None, 10), "sparse_categorical_crossentropy"),
          ((None, 1), (None, 10), "sparseCategoricalCrossentropy"), ((None,), (None, 1), "mse"),
          ((None, 1), (None,), "mse"), ((None, 3), (None, 3), losses.MeanSquaredError()),
          ((None, 5), (None, 2), "my_custom_loss"), ((None, 1), (None, 1), losses.binary_crossentropy)]
    for t, p, name in ok:
        losses.check_shapes(t, p, name)
    with pytest.raises(ValueError, match=r"\(None, 9\).*\(None, 10\)"):
        losses.check_shapes((None, 9), (None, 10), "categorical_crossentropy")
    with pytest.raises(ValueError, match="sparse_categorical_crossentropy"):
        losses.check_shapes((None, 1), (None, 10), "categorical_crossentropy")
    with pytest.raises(ValueError, match=r"\(32, 4\).*\(64, 10\)"):
        losses.check_shapes((32, 4), (64, 10), "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"\(None, 3\).*\(None, 1\)"):
        losses.check_shapes((None, 3), (None, 1), "mse")
    with pytest.raises(ValueError, match="categorical_crossentropy"):
        losses.check_shapes((None, 10), (None, 10), "sparse_categorical_crossentropy") or None


def test_mismatched_labels_raise_at_call():
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(4, 5\)"):
        losses.categorical_crossentropy(dg.tensor(np.zeros((4, 3))), dg.tensor(np.zeros((4, 5))))
    with pytest.raises(ValueError, match="labels of shape"):
        losses.sparse_categorical_crossentropy(dg.tensor([1, 2]), dg.tensor(np.zeros((4, 5))))
