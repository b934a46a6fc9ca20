"""Keras 3's F1Score / FBetaScore, the IoU family and R2Score (issue 20): NumPy expectations (always)
and Keras 3.15 itself (where installed), over two batches with sample weights."""
import numpy as np
import pytest

import deepgpu as dg
from deepgpu import metrics as M

RNG = np.random.default_rng(0)
N, C = 12, 4
YT = np.eye(C, dtype="float32")[RNG.integers(0, C, N)]
YP = RNG.random((N, C)).astype("float32")
SW = RNG.uniform(0.5, 2.0, N).astype("float32")
LT = RNG.integers(0, C, (N, 3)).astype("int32")
LP = RNG.integers(0, C, (N, 3)).astype("float32")
RT = RNG.normal(size=(N, 3)).astype("float32")
RP = (RT + RNG.normal(scale=0.5, size=(N, 3))).astype("float32")


def run(metric, y, p, sw=None):
    for part in (slice(0, N // 2), slice(N // 2, N)):  # two batches: the state accumulates
        metric.update_state(dg.tensor(y[part]), dg.tensor(p[part]), None if sw is None else dg.tensor(sw[part]))
    return metric.result().data_sync()


def np_fbeta(y, p, beta=1.0, average=None, threshold=None, sw=None):
    y, p = y.astype("float64"), p.astype("float64")
    pred = (p > threshold) if threshold is not None else ((p >= p.max(-1, keepdims=True)) & (np.abs(p) > 1e-9))
    pred = pred.astype("float64")
    w = np.ones(len(y)) if sw is None else sw.astype("float64")
    ax = None if average == "micro" else 0
    tp = ((pred * y) * w[:, None]).sum(ax)
    fp = ((pred * (1 - y)) * w[:, None]).sum(ax)
    fn = (((1 - pred) * y) * w[:, None]).sum(ax)
    prec, rec = tp / (tp + fp + 1e-7), tp / (tp + fn + 1e-7)
    f = prec * rec / (beta ** 2 * prec + rec + 1e-7) * (1 + beta ** 2)
    if average == "weighted":
        iw = (y * w[:, None]).sum(0)
        return (f * iw / (iw.sum() + 1e-7)).sum()
    return f.mean() if average else f


def np_iou(t, p, n, ids, sw=None, ignore=None):
    t, p = t.reshape(-1).astype(int), p.reshape(-1).astype(int)
    w = np.ones(t.size) if sw is None else np.broadcast_to(sw.reshape(-1, *([1] * 0)), t.shape).astype("float64")
    cm = np.zeros((n, n))
    for a, b, ww in zip(t, p, w):
        if 0 <= a < n and 0 <= b < n and a != ignore:
            cm[a, b] += ww
    tp = np.diag(cm)
    den = cm.sum(0) + cm.sum(1) - tp
    tp, den = tp[ids], den[ids]
    valid = den > 1e-9
    return (tp / (den + 1e-7) * valid).sum() / (valid.sum() + 1e-7)


def np_r2(y, p, agg="uniform_average", sw=None, regressors=0):
    y, p = y.astype("float64"), p.astype("float64")
    w = np.ones_like(y) if sw is None else np.broadcast_to(sw[:, None], y.shape)
    s, ss, res, cnt = (y * w).sum(0), (y * y * w).sum(0), ((y - p) ** 2 * w).sum(0), w.sum(0)
    total = ss - s * (s / cnt)
    raw = 1 - res / total
    r2 = raw.mean() if agg == "uniform_average" else ((total * raw).sum() / total.sum() if agg else raw)
    if regressors:
        n = y.size
        r2 = 1 - (1 - r2) * (n - 1) / (n - regressors - 1)
    return r2


FCASES = [({}, None), ({"average": "macro"}, SW), ({"average": "micro", "threshold": 0.5}, None),
          ({"average": "weighted"}, SW), ({"beta": 2.0, "average": "macro", "threshold": 0.3}, SW)]


@pytest.mark.parametrize("kw,sw", FCASES)
def test_fbeta_and_f1(kw, sw):
    beta = kw.get("beta", 1.0)
    want = np_fbeta(YT, YP, beta, kw.get("average"), kw.get("threshold"), sw)
    got = run(M.FBetaScore(**kw) if "beta" in kw else M.F1Score(**kw), YT, YP, sw)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kw,sw", FCASES)
def test_fbeta_and_f1_match_keras(kw, sw):
    keras = pytest.importorskip("keras")
    cls = "FBetaScore" if "beta" in kw else "F1Score"
    km = getattr(keras.metrics, cls)(**{k: (float(v) if k in ("beta", "threshold") else v) for k, v in kw.items()})
    for part in (slice(0, N // 2), slice(N // 2, N)):
        km.update_state(YT[part], YP[part], None if sw is None else sw[part])
    np.testing.assert_allclose(run(getattr(M, cls)(**kw), YT, YP, sw), keras.ops.convert_to_numpy(km.result()),
                               rtol=1e-5, atol=1e-6)


def _iou_cases():
    return [
        ("IoU", {"num_classes": C, "target_class_ids": [0, 2]}, LT, LP, None,
         np_iou(LT, LP, C, [0, 2])),
        ("MeanIoU", {"num_classes": C}, LT, LP, SW[:, None] * np.ones((1, 3), "float32"),
         np_iou(LT, LP, C, list(range(C)), SW[:, None] * np.ones((1, 3)))),
        ("MeanIoU", {"num_classes": C, "ignore_class": 1}, LT, LP, None,
         np_iou(LT, LP, C, list(range(C)), ignore=1)),
        ("BinaryIoU", {"target_class_ids": [1], "threshold": 0.4}, (YT > 0).astype("float32"), YP, None,
         np_iou((YT > 0), (YP >= 0.4), 2, [1])),
        ("OneHotIoU", {"num_classes": C, "target_class_ids": [1, 3]}, YT, YP, None,
         np_iou(YT.argmax(-1), YP.argmax(-1), C, [1, 3])),
        ("OneHotMeanIoU", {"num_classes": C}, YT, YP, SW,
         np_iou(YT.argmax(-1), YP.argmax(-1), C, list(range(C)), SW)),
    ]


@pytest.mark.parametrize("case", range(6))
def test_iou_family(case):
    cls, kw, y, p, sw, want = _iou_cases()[case]
    m = getattr(M, cls)(**kw)
    np.testing.assert_allclose(run(m, y, p, sw), want, rtol=1e-5, atol=1e-6)
    back = M.get(M.serialize(m))
    assert type(back) is type(m) and back.get_config() == m.get_config()


@pytest.mark.parametrize("case", range(6))
def test_iou_family_matches_keras(case):
    keras = pytest.importorskip("keras")
    cls, kw, y, p, sw, _ = _iou_cases()[case]
    # Keras counts in int by default (it would truncate the float weights): ask it for float32
    km = getattr(keras.metrics, cls)(dtype="float32", **kw)
    for part in (slice(0, N // 2), slice(N // 2, N)):
        km.update_state(y[part], p[part], None if sw is None else sw[part])
    np.testing.assert_allclose(run(getattr(M, cls)(**kw), y, p, sw), keras.ops.convert_to_numpy(km.result()),
                               rtol=1e-5, atol=1e-6)


RCASES = [({}, None), ({"class_aggregation": "variance_weighted_average"}, SW), ({"class_aggregation": None}, SW),
          ({"num_regressors": 2}, None)]


@pytest.mark.parametrize("kw,sw", RCASES)
def test_r2(kw, sw):
    want = np_r2(RT, RP, kw.get("class_aggregation", "uniform_average"), sw, kw.get("num_regressors", 0))
    np.testing.assert_allclose(run(M.R2Score(**kw), RT, RP, sw), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kw,sw", RCASES)
def test_r2_matches_keras(kw, sw):
    keras = pytest.importorskip("keras")
    km = keras.metrics.R2Score(**kw)
    for part in (slice(0, N // 2), slice(N // 2, N)):
        km.update_state(RT[part], RP[part], None if sw is None else sw[part])
    np.testing.assert_allclose(run(M.R2Score(**kw), RT, RP, sw), keras.ops.convert_to_numpy(km.result()),
                               rtol=1e-5, atol=1e-6)


def test_bad_arguments_and_use_in_fit():
    with pytest.raises(ValueError, match="average must be"):
        M.F1Score(average="mean")
    with pytest.raises(ValueError, match="threshold must be"):
        M.F1Score(threshold=1.5)
    with pytest.raises(ValueError, match=r"target_class_ids must be class ids in \[0, 3\)"):
        M.IoU(3, [0, 3])
    with pytest.raises(ValueError, match=r"'mean_iou' cannot be made from its name alone.*MeanIoU\(\.\.\.\)"):
        M.get("mean_iou")
    with pytest.raises(ValueError, match="class_aggregation"):
        M.R2Score("mean")
    with pytest.raises(ValueError, match="expects 2-D inputs"):
        M.F1Score().update_state(dg.tensor(np.ones(3, "float32")), dg.tensor(np.ones(3, "float32")))
    m = M.F1Score(average="macro")
    m.update_state(dg.tensor(YT), dg.tensor(YP))
    m.reset_state()
    assert float(m.result().item()) == 0.0
    x = RNG.normal(size=(64, 3)).astype("float32")
    y = np.eye(2, dtype="float32")[(x[:, 0] > 0).astype(int)]
    model = dg.Sequential([dg.layers.Dense(2, activation="softmax", input_shape=(3,))])
    model.compile(dg.optimizers.Adam(0.05), "categorical_crossentropy",
                  metrics=[M.F1Score(average="macro"), M.OneHotMeanIoU(2), "r2_score"])
    h = model.fit(x, y, epochs=25, verbose=0).history
    assert h["f1_score"][-1] > 0.9 and h["one_hot_mean_io_u"][-1] > 0.8 and h["r2_score"][-1] > 0.5
    assert h["f1_score"][-1] > h["f1_score"][0]
