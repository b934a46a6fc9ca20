"""Metrics against NumPy references, on every backend; state stays on the device."""
import numpy as np
import pytest

import deepgpu as dg
from deepgpu import losses, metrics
from deepgpu.tensor import Tensor
from deepgpu.testing import assert_close

RNG = np.random.default_rng(11)


def batches(n_batches=2, n=12, k=4):
    out = []
    for _ in range(n_batches):
        lab = RNG.integers(0, k, n)
        p = RNG.random((n, k)).astype(np.float32)
        p /= p.sum(-1, keepdims=True)
        sw = RNG.random(n).astype(np.float32)
        out.append((lab, np.eye(k, dtype=np.float32)[lab], p, sw))
    return out


def run(metric, data, use_sw):
    for y, p, sw in data:
        metric.update_state(dg.tensor(y), dg.tensor(p), sample_weight=dg.tensor(sw) if use_sw else None)
    r = metric.result()
    assert isinstance(r, Tensor) and r.backend == dg.get_backend()
    return r


def wmean(vals, sws, use_sw):
    v = np.concatenate(vals)
    if not use_sw:
        return v.mean()
    w = np.concatenate(sws)
    return (v * w).sum() / w.sum()


def topk_ref(lab, p, k):
    target = p[np.arange(len(lab)), lab]
    return ((p > target[:, None]).sum(-1) < k).astype(float)


@pytest.mark.parametrize("use_sw", [False, True])
def test_accuracy_family_and_regression_metrics(backend, use_sw):
    data = batches()
    sws = [b[3] for b in data]
    cases = [
        (metrics.CategoricalAccuracy(), [(oh, p) for _, oh, p, _ in data],
         [(oh.argmax(-1) == p.argmax(-1)).astype(float) for _, oh, p, _ in data]),
        (metrics.SparseCategoricalAccuracy(), [(lab, p) for lab, _, p, _ in data],
         [(lab == p.argmax(-1)).astype(float) for lab, _, p, _ in data]),
        (metrics.SparseCategoricalAccuracy(), [(lab[:, None], p) for lab, _, p, _ in data],
         [(lab == p.argmax(-1)).astype(float) for lab, _, p, _ in data]),
        (metrics.TopKCategoricalAccuracy(k=2), [(oh, p) for _, oh, p, _ in data],
         [topk_ref(lab, p, 2) for lab, _, p, _ in data]),
        (metrics.SparseTopKCategoricalAccuracy(k=3), [(lab, p) for lab, _, p, _ in data],
         [topk_ref(lab, p, 3) for lab, _, p, _ in data]),
        (metrics.BinaryAccuracy(threshold=0.3), [(oh, p) for _, oh, p, _ in data],
         [(oh == (p > 0.3)).mean(-1) for _, oh, p, _ in data]),
        (metrics.Accuracy(), [(lab, p.argmax(-1)) for lab, _, p, _ in data],
         [(lab == p.argmax(-1)).astype(float) for lab, _, p, _ in data]),
        (metrics.MeanSquaredError(), [(oh, p) for _, oh, p, _ in data],
         [((oh - p) ** 2).mean(-1) for _, oh, p, _ in data]),
        (metrics.MeanAbsoluteError(), [(oh, p) for _, oh, p, _ in data],
         [np.abs(oh - p).mean(-1) for _, oh, p, _ in data]),
    ]
    for m, ys, vals in cases:
        got = run(m, [(y, p, sw) for (y, p), sw in zip(ys, sws)], use_sw)
        assert_close(got, np.float32(wmean(vals, sws, use_sw)), rtol=1e-5, atol=1e-6, msg=m.name)


def test_top_k_ties_count_as_in():
    p = np.array([[0.5, 0.5, 0.0], [0.2, 0.4, 0.4]], np.float32)
    got = metrics.sparse_top_k_categorical_accuracy(dg.tensor([1, 2]), dg.tensor(p), k=1).data_sync()
    np.testing.assert_array_equal(got, [1.0, 1.0])


def test_mean_and_sum(backend):
    m = metrics.Mean()
    assert_close(m.result(), np.float32(0.0))
    m.update_state(dg.tensor([1.0, 2.0, 3.0]))
    m.update_state(dg.tensor(10.0), sample_weight=3)      # the loop's (batch loss, batch size)
    assert_close(m.result(), np.float32((6 + 30) / 6))
    m.update_state(dg.tensor([[1.0, 3.0]]), sample_weight=dg.tensor([2.0]))  # per-sample mean 2, weight 2
    assert_close(m.result(), np.float32((36 + 4) / 8))
    m.reset_state()
    assert_close(m.result(), np.float32(0.0))
    s = metrics.Sum()
    s.update_state(dg.tensor([1.0, 2.0]), sample_weight=dg.tensor([1.0, 3.0]))
    assert_close(s.result(), np.float32(7.0))


def conf_counts(y, p, thr, sw=None):
    sw = np.ones_like(p) if sw is None else np.broadcast_to(sw[:, None], p.shape)
    pos, pred = y.ravel() > 0, (p.ravel()[None, :] > np.asarray(thr)[:, None])
    w = sw.ravel()
    return ((pred & pos) * w).sum(1), ((pred & ~pos) * w).sum(1), ((~pred & ~pos) * w).sum(1), ((~pred & pos) * w).sum(1)


@pytest.mark.parametrize("use_sw", [False, True])
def test_precision_recall(backend, use_sw):
    data = batches()
    y = np.concatenate([b[1] for b in data])
    p = np.concatenate([b[2] for b in data])
    sw = np.concatenate([b[3] for b in data]) if use_sw else None
    for thr in (None, 0.3, [0.1, 0.25, 0.6]):
        t = [0.5] if thr is None else ([thr] if isinstance(thr, float) else thr)
        tp, fp, tn, fn = conf_counts(y, p, t, sw)
        pr, rc = metrics.Precision(thresholds=thr), metrics.Recall(thresholds=thr)
        for m in (pr, rc):
            run(m, [(b[1], b[2], b[3]) for b in data], use_sw)
        exp_p, exp_r = tp / (tp + fp), tp / (tp + fn)
        if len(t) == 1:
            exp_p, exp_r = exp_p[0], exp_r[0]
        assert_close(pr.result(), np.float32(exp_p), rtol=1e-5)
        assert_close(rc.result(), np.float32(exp_r), rtol=1e-5)
    assert_close(metrics.Precision()(dg.tensor([0.0, 0.0]), dg.tensor([0.1, 0.2])), np.float32(0.0))  # 0/0 -> 0
    m = metrics.Precision(class_id=1, thresholds=0.2)
    m.update_state(dg.tensor(y), dg.tensor(p))
    tp, fp, _, _ = conf_counts(y[:, 1:2], p[:, 1:2], [0.2])
    assert_close(m.result(), np.float32(tp[0] / (tp[0] + fp[0])), rtol=1e-5)


def ref_auc(y, p, n=200, sw=None, curve="ROC"):
    thr = [-1e-7] + [(i + 1) / (n - 1) for i in range(n - 2)] + [1 + 1e-7]
    tp, fp, tn, fn = conf_counts(y, p, thr, sw)
    with np.errstate(invalid="ignore", divide="ignore"):
        rec = np.nan_to_num(tp / (tp + fn))
        if curve == "ROC":
            x, yy = np.nan_to_num(fp / (fp + tn)), rec
        else:
            x, yy = rec, np.nan_to_num(tp / (tp + fp))
    return ((x[:-1] - x[1:]) * (yy[:-1] + yy[1:]) / 2).sum()


@pytest.mark.parametrize("use_sw", [False, True])
def test_auc(backend, use_sw):
    data = batches(3, n=40, k=1)
    y = np.concatenate([(b[2][:, :1] * 0 + RNG.integers(0, 2, (40, 1))).astype(np.float32) for b in data])
    p = np.clip(y * 0.3 + RNG.random(y.shape) * 0.7, 0, 1).astype(np.float32)
    sw = RNG.random(len(y)).astype(np.float32)
    m = metrics.AUC()
    for i in range(0, len(y), 40):
        m.update_state(dg.tensor(y[i:i + 40]), dg.tensor(p[i:i + 40]),
                       sample_weight=dg.tensor(sw[i:i + 40]) if use_sw else None)
    exp = ref_auc(y, p, sw=sw if use_sw else None)
    assert_close(m.result(), np.float32(exp), rtol=1e-5)
    if not use_sw:  # close to the exact rank statistic
        pos, neg = p[y > 0], p[y == 0]
        exact = ((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())
        assert abs(float(m.result().item()) - exact) < 0.01
    for method in ("minoring", "majoring"):
        m2 = metrics.AUC(num_thresholds=50, summation_method=method)
        m2.update_state(dg.tensor(y), dg.tensor(p))
        assert 0.5 < float(m2.result().item()) <= 1.0
    pr = metrics.AUC(curve="PR", summation_method="majoring")
    pr.update_state(dg.tensor(y), dg.tensor(p))
    assert 0.4 < float(pr.result().item()) <= 1.0
    pri = metrics.AUC(curve="PR")
    pri.update_state(dg.tensor(y), dg.tensor(p))
    assert abs(float(pri.result().item()) - ref_auc(y, p, curve="PR")) < 0.05


def test_update_and_result_never_read_the_device(monkeypatch):
    """State is accumulated with ops: no data_sync / to_numpy during update_state or result."""
    data = batches()

    def boom(*a, **k):
        raise AssertionError("host transfer in a metric")

    ms = [metrics.get(n, loss="categorical_crossentropy") for n in
          ("accuracy", "mse", "mae", "precision", "recall", "auc", "top_k_categorical_accuracy")]
    ys = [(dg.tensor(b[1]), dg.tensor(b[2]), dg.tensor(b[3])) for b in data]
    monkeypatch.setattr(Tensor, "data_sync", boom)
    monkeypatch.setattr(Tensor, "item", boom)
    monkeypatch.setattr(type(dg.backends.get("cpu")), "to_numpy", boom)
    for m in ms:
        for y, p, sw in ys:
            m.update_state(y, p, sample_weight=sw)
        m.result()
    monkeypatch.undo()
    assert all(np.isfinite(m.result().data_sync()) for m in ms)


def test_reset_and_call(backend):
    m = metrics.BinaryAccuracy()
    assert_close(m(dg.tensor([[1.0], [0.0]]), dg.tensor([[0.9], [0.8]])), np.float32(0.5))
    m.reset_state()
    assert_close(m(dg.tensor([1.0, 0.0]), dg.tensor([0.9, 0.1])), np.float32(1.0))
    assert len(m.variables) == 2


# ----------------------------------------------------------------------- get

@pytest.mark.parametrize("loss,shape,cls", [
    ("binary_crossentropy", (None, 1), metrics.BinaryAccuracy),
    ("binaryCrossentropy", (None, 3), metrics.BinaryAccuracy),
    ("categorical_crossentropy", (None, 10), metrics.CategoricalAccuracy),
    (losses.CategoricalCrossentropy(from_logits=True), (None, 10), metrics.CategoricalAccuracy),
    ("sparse_categorical_crossentropy", (None, 10), metrics.SparseCategoricalAccuracy),
    (losses.SparseCategoricalCrossentropy(), (None, 10), metrics.SparseCategoricalAccuracy),
    ("mse", (None, 1), metrics.BinaryAccuracy),
    ("mse", (None, 4), metrics.CategoricalAccuracy),
    (None, None, metrics.CategoricalAccuracy),
])
def test_accuracy_is_chosen_from_the_loss(loss, shape, cls):
    for name in ("accuracy", "acc"):
        m = metrics.get(name, loss=loss, output_shape=shape)
        assert type(m) is cls and m.name == name


def test_accuracy_from_logits_thresholds_at_zero_and_sparse_by_target_shape():
    m = metrics.get("acc", loss=losses.BinaryCrossentropy(from_logits=True), output_shape=(None, 1))
    assert m.threshold == 0.0
    m = metrics.get("accuracy", loss=lambda t, p: p, output_shape=(None, 5), y_true_shape=(None,))
    assert type(m) is metrics.SparseCategoricalAccuracy
    assert type(metrics.get("crossentropy", loss="sparse_categorical_crossentropy")) is \
        metrics.SparseCategoricalCrossentropy


@pytest.mark.parametrize("name,cls", [
    ("binary_accuracy", metrics.BinaryAccuracy), ("binaryAccuracy", metrics.BinaryAccuracy),
    ("categoricalAccuracy", metrics.CategoricalAccuracy), ("sparseCategoricalAccuracy", metrics.SparseCategoricalAccuracy),
    ("top_k_categorical_accuracy", metrics.TopKCategoricalAccuracy), ("topKCategoricalAccuracy", metrics.TopKCategoricalAccuracy),
    ("mse", metrics.MeanSquaredError), ("MSE", metrics.MeanSquaredError), ("meanSquaredError", metrics.MeanSquaredError),
    ("mae", metrics.MeanAbsoluteError), ("meanAbsoluteError", metrics.MeanAbsoluteError),
    ("precision", metrics.Precision), ("recall", metrics.Recall), ("AUC", metrics.AUC), ("auc", metrics.AUC),
    ("binaryCrossentropy", metrics.BinaryCrossentropy),
])
def test_get_by_name_keeps_the_written_name(name, cls):
    m = metrics.get(name)
    assert type(m) is cls and m.name == name


def test_get_instances_callables_configs_and_errors():
    a = metrics.AUC(num_thresholds=50)
    assert metrics.get(a) is a

    def my_metric(y_true, y_pred):
        return dg.mean(dg.abs(y_true - y_pred), axis=-1)

    w = metrics.get(my_metric)
    assert w.name == "my_metric"
    w.update_state(dg.tensor([[1.0, 2.0]]), dg.tensor([[2.0, 2.0]]))
    assert_close(w.result(), np.float32(0.5))
    cfg = metrics.serialize(metrics.TopKCategoricalAccuracy(k=3, name="top3"))
    m = metrics.get(cfg)
    assert m.k == 3 and m.name == "top3" and m.get_config() == cfg["config"]
    assert metrics.AUC.from_config(a.get_config()).get_config() == a.get_config()
    with pytest.raises(ValueError, match="binary_accuracy") as e:
        metrics.get("accuracyy")
    assert "sparse_categorical_accuracy" in str(e.value)
