"""Keras 3's focal, Dice and Tversky losses and the "mean" / "mean_with_sample_weight" reductions
(issue 20): against NumPy formulas (always) and Keras 3.15 itself (where installed)."""
import numpy as np
import pytest

import deepgpu as dg
from deepgpu import losses as Ls

RNG = np.random.default_rng(0)
YB = (RNG.random((6, 4)) > 0.5).astype("float32")
PB = RNG.uniform(0.02, 0.98, (6, 4)).astype("float32")
LOGITS = RNG.normal(0, 2, (6, 4)).astype("float32")
YC = np.eye(4, dtype="float32")[RNG.integers(0, 4, 6)]
PC = RNG.uniform(0.05, 1.0, (6, 4)).astype("float32")
PC /= PC.sum(-1, keepdims=True)
SW = RNG.uniform(0, 2, 6).astype("float32")
EPS = 1e-7


def _sig(x):
    return 1 / (1 + np.exp(-x.astype("float64")))


def np_bfce(y, p, balance=False, alpha=0.25, gamma=2.0, logits=False, smooth=0.0):
    y, p = y.astype("float64"), p.astype("float64")
    y = y * (1 - smooth) + 0.5 * smooth
    p = _sig(p) if logits else p
    pc = np.clip(p, EPS, 1 - EPS)
    bce = -(y * np.log(pc) + (1 - y) * np.log(1 - pc))
    pt = y * p + (1 - y) * (1 - p)
    f = (1 - pt) ** gamma * bce
    if balance:
        f = (y * alpha + (1 - y) * (1 - alpha)) * f
    return f.mean(-1)


def np_cfce(y, p, alpha=0.25, gamma=2.0, logits=False, smooth=0.0):
    y, p = y.astype("float64"), p.astype("float64")
    y = y * (1 - smooth) + smooth / y.shape[-1]
    if logits:
        p = np.exp(p - p.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
    o = np.clip(p / p.sum(-1, keepdims=True), EPS, 1 - EPS)
    return ((1 - o) ** gamma * alpha * -y * np.log(o)).sum(-1)


def np_dice(y, p, axis=None):
    y, p = y.astype("float64"), p.astype("float64")
    return 1 - 2 * (y * p).sum(axis) / (y.sum(axis) + p.sum(axis) + EPS)


def np_tversky(y, p, alpha=0.5, beta=0.5, axis=None):
    y, p = y.astype("float64"), p.astype("float64")
    tp = (y * p).sum(axis)
    return 1 - tp / (tp + alpha * ((1 - p) * y).sum(axis) + beta * (p * (1 - y)).sum(axis) + EPS)


CASES = [
    ("BinaryFocalCrossentropy", {}, YB, PB, np_bfce(YB, PB)),
    ("BinaryFocalCrossentropy", {"apply_class_balancing": True, "alpha": 0.4, "gamma": 1.5}, YB, PB,
     np_bfce(YB, PB, True, 0.4, 1.5)),
    ("BinaryFocalCrossentropy", {"from_logits": True, "label_smoothing": 0.1}, YB, LOGITS,
     np_bfce(YB, LOGITS, logits=True, smooth=0.1)),
    ("CategoricalFocalCrossentropy", {}, YC, PC, np_cfce(YC, PC)),
    ("CategoricalFocalCrossentropy", {"alpha": 0.5, "gamma": 3.0, "from_logits": True, "label_smoothing": 0.2},
     YC, LOGITS, np_cfce(YC, LOGITS, 0.5, 3.0, True, 0.2)),
    ("Dice", {}, YB, PB, np_dice(YB, PB)),
    ("Dice", {"axis": -1}, YB, PB, np_dice(YB, PB, -1)),
    ("Tversky", {}, YB, PB, np_tversky(YB, PB)),
    ("Tversky", {"alpha": 0.7, "beta": 0.3, "axis": -1}, YB, PB, np_tversky(YB, PB, 0.7, 0.3, -1)),
]


@pytest.mark.parametrize("cls,kw,y,p,per", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_against_numpy(cls, kw, y, p, per):
    loss = getattr(Ls, cls)(**kw)
    got = loss(dg.tensor(y), dg.tensor(p)).item()
    assert got == pytest.approx(float(np.mean(per)), rel=1e-5, abs=1e-7)
    # the function form gives the per-sample values; the name and the config rebuild the class
    fn = getattr(Ls, Ls._snake(cls))
    np.testing.assert_allclose(fn(dg.tensor(y), dg.tensor(p), **kw).data_sync(), per, rtol=1e-5, atol=1e-7)
    back = Ls.get(Ls.serialize(loss))
    assert type(back) is type(loss) and back.get_config() == loss.get_config()
    assert type(Ls.get(Ls._snake(cls))) is type(loss)


@pytest.mark.parametrize("cls,kw,y,p,per", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_against_keras(cls, kw, y, p, per):
    keras = pytest.importorskip("keras")
    for reduction in ("sum_over_batch_size", "sum", "mean"):
        want = float(keras.ops.convert_to_numpy(getattr(keras.losses, cls)(reduction=reduction, **kw)(y, p)))
        got = getattr(Ls, cls)(reduction=reduction, **kw)(dg.tensor(y), dg.tensor(p)).item()
        assert got == pytest.approx(want, rel=2e-5, abs=1e-6), reduction
    if np.ndim(per):
        for reduction in ("sum_over_batch_size", "mean_with_sample_weight", "none"):
            want = keras.ops.convert_to_numpy(getattr(keras.losses, cls)(reduction=reduction, **kw)(y, p, SW))
            got = getattr(Ls, cls)(reduction=reduction, **kw)(dg.tensor(y), dg.tensor(p), SW).data_sync()
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


def test_reductions():
    per = np.asarray([1.0, 2.0, 3.0, 6.0], "float32")
    y = dg.tensor(per[:, None])
    p = dg.tensor(np.zeros((4, 1), "float32"))
    mae = Ls.MeanAbsoluteError
    w = np.asarray([1.0, 0.0, 1.0, 2.0], "float32")
    assert mae(reduction="mean")(y, p, w).item() == pytest.approx((1 + 3 + 12) / 4)
    assert mae(reduction="mean_with_sample_weight")(y, p, w).item() == pytest.approx((1 + 3 + 12) / 4.0)
    w2 = np.asarray([0.5, 0.5, 0.5, 0.5], "float32")
    assert mae(reduction="mean_with_sample_weight")(y, p, w2).item() == pytest.approx(12 / 2.0 / 2.0)
    assert mae(reduction="mean_with_sample_weight")(y, p).item() == pytest.approx(3.0)  # no weights: the mean
    assert mae(reduction="mean_with_sample_weight")(y, p, np.zeros(4, "float32")).item() == 0.0  # not NaN
    with pytest.raises(ValueError, match="reduction must be one of"):
        mae(reduction="avg")
    # a model trains with a focal loss given by name
    x = np.random.default_rng(1).normal(size=(64, 3)).astype("float32")
    t = (x[:, :1] > 0).astype("float32")
    m = dg.Sequential([dg.layers.Dense(1, activation="sigmoid", input_shape=(3,))])
    m.compile(dg.optimizers.Adam(0.05), "binary_focal_crossentropy")
    h = m.fit(x, t, epochs=10, verbose=0).history["loss"]
    assert h[-1] < h[0] / 2


# ------------------------------------------------------------------------ CTC
def _ctc_brute(logits, labels):
    """-log of the summed probability of every path that collapses (merge repeats, drop blanks 0)
    to the label: all classes ** time paths enumerated."""
    import itertools
    t_len, c = logits.shape
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p = p / p.sum(-1, keepdims=True)
    target = [int(v) for v in labels if v != 0]
    total = 0.0
    for path in itertools.product(range(c), repeat=t_len):
        collapsed = [k for k, _ in itertools.groupby(path) if k != 0]
        if collapsed == target:
            total += float(np.prod([p[t, path[t]] for t in range(t_len)], dtype="float64"))
    return -np.log(total)


CTC_LOGITS = RNG.normal(size=(4, 5, 4)).astype("float32")
CTC_LABELS = np.array([[1, 2, 0], [3, 3, 0], [2, 0, 0], [1, 3, 2]], "int32")


def test_ctc_against_every_alignment():
    want = [_ctc_brute(CTC_LOGITS[i], CTC_LABELS[i]) for i in range(4)]
    np.testing.assert_allclose(Ls.ctc(dg.tensor(CTC_LABELS), dg.tensor(CTC_LOGITS)).data_sync(), want, rtol=1e-5)
    assert Ls.CTC()(dg.tensor(CTC_LABELS), dg.tensor(CTC_LOGITS)).item() == pytest.approx(np.mean(want), rel=1e-5)
    assert type(Ls.get("ctc")) is Ls.CTC
    # the gradient by autograd equals finite differences of the forward (float64 host copy)
    g = dg.grad(lambda z: dg.ops.sum(Ls.ctc(dg.tensor(CTC_LABELS[:2]), z)))(dg.tensor(CTC_LOGITS[:2]))
    eps, k = 1e-3, (1, 2, 3)
    up, down = CTC_LOGITS[:2].astype("float64").copy(), CTC_LOGITS[:2].astype("float64").copy()
    up[k] += eps
    down[k] -= eps
    fd = (sum(_ctc_brute(up[i], CTC_LABELS[i]) for i in range(2))
          - sum(_ctc_brute(down[i], CTC_LABELS[i]) for i in range(2))) / (2 * eps)
    assert g.data_sync()[k] == pytest.approx(fd, rel=1e-3, abs=1e-4)
    with pytest.raises(ValueError, match=r"ctc: expected y_true \(batch, max_length\)"):
        Ls.ctc(dg.tensor(CTC_LABELS[:, 0]), dg.tensor(CTC_LOGITS))


def test_ctc_matches_keras():
    keras = pytest.importorskip("keras")
    want = keras.ops.convert_to_numpy(keras.losses.ctc(CTC_LABELS, CTC_LOGITS))
    np.testing.assert_allclose(Ls.ctc(dg.tensor(CTC_LABELS), dg.tensor(CTC_LOGITS)).data_sync(), want,
                               rtol=1e-4, atol=1e-5)
