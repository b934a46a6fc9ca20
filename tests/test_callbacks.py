"""Callbacks driven by a tiny fake model and a fake training loop."""
import collections.abc
import csv
import math

import numpy as np
import pytest

from deepgpu import callbacks as C
from deepgpu import optimizers


class FakeModel:
    def __init__(self, lr=0.1):
        self.stop_training = False
        self.optimizer = optimizers.SGD(lr)
        self.weights = [np.zeros(2)]
        self.saved = []

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, ws):
        self.weights = [np.array(w) for w in ws]

    def save(self, path):
        self.saved.append(("model", path))

    def save_weights(self, path):
        self.saved.append(("weights", path))


class LazyLogs(collections.abc.Mapping):
    """Like the training loop's batch logs: values computed on access, counted."""

    def __init__(self, values):
        self.values, self.reads = values, 0

    def __getitem__(self, k):
        self.reads += 1
        return self.values[k]

    def __iter__(self):
        return iter(self.values)

    def __len__(self):
        return len(self.values)


def fit(model, cbs, epoch_logs, steps=2, batch_logs=None):
    """Run hooks like fit(): weights become [epoch, epoch] during epoch `epoch`."""
    cl = C.CallbackList(cbs, model=model, params={"epochs": len(epoch_logs), "steps": steps})
    cl.on_train_begin({})
    logs, last = {}, None
    try:
        for epoch, logs in enumerate(epoch_logs):
            if model.stop_training:
                break
            last = epoch
            cl.on_epoch_begin(epoch, {})
            model.weights = [np.full(2, float(epoch))]
            for b in range(steps):
                cl.on_train_batch_begin(b, {})
                cl.on_train_batch_end(b, batch_logs(epoch, b) if batch_logs else LazyLogs({"loss": 1.0}))
                if model.stop_training:
                    break
            logs = dict(logs)
            cl.on_epoch_end(epoch, logs)
    finally:
        cl.on_train_end(logs)
    return last


def losses_(*vals, key="val_loss"):
    return [{"loss": 1.0, key: v} for v in vals]


# ------------------------------------------------------------ EarlyStopping

def test_early_stopping_patience():
    m = FakeModel()
    es = C.EarlyStopping(patience=2)
    last = fit(m, [es], losses_(1.0, 0.9, 0.95, 0.91, 0.5, 0.4))
    assert m.stop_training and es.stopped_epoch == 3 and last == 3
    assert es.best == 0.9 and es.best_epoch == 1


def test_early_stopping_min_delta_mode_and_baseline():
    m = FakeModel()
    es = C.EarlyStopping(monitor="val_accuracy", patience=1, min_delta=0.05)
    fit(m, [es], losses_(0.5, 0.6, 0.62, 0.64, key="val_accuracy"))
    assert es.mode == "max" and es.stopped_epoch == 2
    m = FakeModel()
    es = C.EarlyStopping(patience=2, baseline=0.5)
    fit(m, [es], losses_(0.9, 0.95, 0.97, 0.99))  # the first epoch does not beat the baseline
    assert es.stopped_epoch == 1
    m = FakeModel()
    es = C.EarlyStopping(patience=2)
    fit(m, [es], losses_(0.9, 0.95, 0.97, 0.99))
    assert es.stopped_epoch == 2
    m = FakeModel()
    es = C.EarlyStopping(patience=0, start_from_epoch=3)
    fit(m, [es], losses_(1.0, 2.0, 3.0, 4.0, 5.0, 6.0))
    assert es.stopped_epoch == 4


@pytest.mark.parametrize("vals,best", [((1.0, 0.5, 0.7, 0.8, 0.9), 1), ((1.0, 0.9, 0.3, 0.4), 2)])
def test_restore_best_weights_however_training_ends(vals, best):
    """Restored when patience runs out (first case) and when it never does (second)."""
    m = FakeModel()
    es = C.EarlyStopping(patience=2, restore_best_weights=True)
    fit(m, [es], losses_(*vals))
    np.testing.assert_array_equal(m.weights[0], [best, best])


def test_restore_best_weights_when_training_is_interrupted():
    m = FakeModel()
    es = C.EarlyStopping(patience=5, restore_best_weights=True)

    class Boom(C.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(m, [es, Boom()], losses_(1.0, 0.2, 0.6, 0.1))
    np.testing.assert_array_equal(m.weights[0], [1.0, 1.0])


def test_early_stopping_warns_on_missing_monitor():
    with pytest.warns(UserWarning, match="val_loss"):
        fit(FakeModel(), [C.EarlyStopping()], [{"loss": 1.0}])


# --------------------------------------------------------- ReduceLROnPlateau

def test_reduce_lr_on_plateau():
    m = FakeModel(lr=1.0)
    seen = []
    rl = C.ReduceLROnPlateau(factor=0.5, patience=2, min_lr=0.2)
    rec = C.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(m.optimizer.learning_rate))
    fit(m, [rl, rec], losses_(1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5))
    assert seen == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.25, 0.2, 0.2, 0.2])


def test_reduce_lr_cooldown_and_logs():
    m = FakeModel(lr=1.0)
    seen, logs_seen = [], []
    rl = C.ReduceLROnPlateau(factor=0.1, patience=1, cooldown=2, min_delta=0.0)
    rec = C.LambdaCallback(on_epoch_end=lambda e, logs: (seen.append(m.optimizer.learning_rate),
                                                         logs_seen.append(logs.get("learning_rate"))))
    fit(m, [rl, rec], losses_(1.0, 1.0, 1.0, 1.0, 1.0, 1.0))
    # As Keras: the cooldown counts down at the start of each epoch's check.
    assert seen == pytest.approx([1.0, 0.1, 0.1, 0.01, 0.01, 0.001])
    assert logs_seen[:2] == pytest.approx([1.0, 1.0])  # the rate the epoch ran with
    with pytest.raises(ValueError, match="factor"):
        C.ReduceLROnPlateau(factor=1.5)


# --------------------------------------------------------------- CSVLogger

def test_csv_logger(tmp_path):
    path = tmp_path / "sub" / "log.csv"
    logs = [{"loss": 0.5, "acc": 0.25, "val_loss": 0.75}, {"loss": 0.25, "acc": 0.5, "val_loss": 0.5}]
    fit(FakeModel(), [C.CSVLogger(str(path))], logs)
    rows = list(csv.reader(open(path)))
    assert rows == [["epoch", "acc", "loss", "val_loss"], ["0", "0.25", "0.5", "0.75"], ["1", "0.5", "0.25", "0.5"]]
    fit(FakeModel(), [C.CSVLogger(str(path), append=True)], logs[:1])
    rows = list(csv.reader(open(path)))
    assert len(rows) == 4 and rows[3] == ["0", "0.25", "0.5", "0.75"]
    fit(FakeModel(), [C.CSVLogger(str(path), separator=";")], [{"loss": 1.0, "m": [1, 2]}])
    assert open(path).read().splitlines() == ["epoch;loss;m", "0;1.0;[1, 2]"]


# ----------------------------------------------------------- ModelCheckpoint

def test_model_checkpoint_best_only_and_formatting(tmp_path):
    m = FakeModel()
    pattern = str(tmp_path / "ckpt-{epoch:02d}-{val_loss:.2f}.dgm")
    fit(m, [C.ModelCheckpoint(pattern, save_best_only=True)], losses_(0.9, 0.95, 0.5, 0.7))
    assert m.saved == [("model", str(tmp_path / "ckpt-01-0.90.dgm")), ("model", str(tmp_path / "ckpt-03-0.50.dgm"))]
    m = FakeModel()
    fit(m, [C.ModelCheckpoint(str(tmp_path / "w{epoch}.dgw"), monitor="val_acc", save_best_only=True,
                              save_weights_only=True)],
        losses_(0.5, 0.7, 0.6, key="val_acc"))
    assert m.saved == [("weights", str(tmp_path / "w1.dgw")), ("weights", str(tmp_path / "w2.dgw"))]
    m = FakeModel()
    fit(m, [C.ModelCheckpoint(str(tmp_path / "e{epoch}.dgm"))], losses_(0.9, 0.95))
    assert [p for _, p in m.saved] == [str(tmp_path / "e1.dgm"), str(tmp_path / "e2.dgm")]


def test_model_checkpoint_by_batches(tmp_path):
    m = FakeModel()
    cb = C.ModelCheckpoint(str(tmp_path / "e{epoch}-b{batch}.dgm"), save_freq=3)
    fit(m, [cb], losses_(0.9, 0.8), steps=4)
    assert [p for _, p in m.saved] == [str(tmp_path / "e1-b3.dgm"), str(tmp_path / "e2-b2.dgm")]
    with pytest.raises(ValueError, match="save_freq"):
        C.ModelCheckpoint("x.dgm", save_freq="batch")


# ------------------------------------------------ TerminateOnNaN, schedulers

def test_terminate_on_nan_reads_lazy_batch_logs():
    m = FakeModel()
    made = []

    def batch_logs(epoch, b):
        made.append(LazyLogs({"loss": math.nan if (epoch, b) == (1, 0) else 1.0}))
        return made[-1]

    last = fit(m, [C.TerminateOnNaN()], losses_(1, 1, 1, 1), batch_logs=batch_logs)
    assert m.stop_training and last == 1 and len(made) == 3
    # Without a callback that reads them, the batch logs are never read.
    made.clear()
    fit(FakeModel(), [C.History()], losses_(1, 1), batch_logs=batch_logs)
    assert made and all(logs.reads == 0 for logs in made)


def test_learning_rate_scheduler():
    m = FakeModel(lr=1.0)
    seen = []
    rec = C.LambdaCallback(on_epoch_begin=lambda e, logs: seen.append(m.optimizer.learning_rate))
    history = C.History()
    fit(m, [C.LearningRateScheduler(lambda epoch, lr: lr * 0.5 if epoch else lr), rec, history], losses_(1, 1, 1))
    assert seen == pytest.approx([1.0, 0.5, 0.25])
    assert history.history["learning_rate"] == pytest.approx([1.0, 0.5, 0.25])
    m = FakeModel()
    fit(m, [C.LearningRateScheduler(lambda epoch: 0.1 / (epoch + 1))], losses_(1, 1))
    assert m.optimizer.learning_rate == pytest.approx(0.05)
    with pytest.raises(ValueError, match="float"):
        fit(FakeModel(), [C.LearningRateScheduler(lambda e, lr: "fast")], losses_(1))


# --------------------------------------------------- History, Lambda, base

def test_history_records_epochs_and_sets_model_history():
    m = FakeModel()
    h = C.History()
    fit(m, [h], [{"loss": 1.0, "val_loss": 2.0}, {"loss": 0.5, "val_loss": 1.5}])
    assert m.history is h and h.epoch == [0, 1]
    assert h.history == {"loss": [1.0, 0.5], "val_loss": [2.0, 1.5]}


def test_lambda_callback_keras_and_tfjs_names():
    calls = []
    cb = C.LambdaCallback(onEpochEnd=lambda epoch, logs: calls.append(("end", epoch, logs["loss"])),
                          onTrainBegin=lambda logs: calls.append("begin"),
                          onBatchEnd=lambda batch, logs: calls.append(("batch", batch)),
                          on_train_end=lambda logs: calls.append("train_end"))
    fit(FakeModel(), [cb], [{"loss": 3.0}], steps=2)
    assert calls == ["begin", ("batch", 0), ("batch", 1), ("end", 0, 3.0), "train_end"]
    only_epoch = []
    fit(FakeModel(), [C.LambdaCallback(on_epoch_end=lambda epoch: only_epoch.append(epoch))], losses_(1, 1))
    assert only_epoch == [0, 1]
    with pytest.raises(TypeError, match="onEpochEnd|on_epoch_end"):
        C.LambdaCallback(on_epoch_ended=print)


def test_base_callback_has_every_hook_and_the_list_dispatches():
    hooks = ["on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_train_batch_begin",
             "on_train_batch_end", "on_test_begin", "on_test_end", "on_test_batch_begin", "on_test_batch_end",
             "on_predict_begin", "on_predict_end", "on_predict_batch_begin", "on_predict_batch_end"]
    base = C.Callback()
    for h in hooks:
        assert callable(getattr(base, h))

    class Rec(C.Callback):
        def __init__(self):
            super().__init__()
            self.calls = []

    rec = Rec()
    for h in hooks + ["on_batch_begin", "on_batch_end"]:
        setattr(rec, h, (lambda name: lambda *a, **k: rec.calls.append(name))(h))
    m = FakeModel()
    cl = C.CallbackList([rec], model=m, params={"epochs": 1})
    assert rec.model is m and rec.params == {"epochs": 1}
    for h in hooks:
        getattr(cl, h)(*([0, {}] if "batch" in h or "epoch" in h else [{}]))
    assert rec.calls == hooks
    cl("on_epoch_end", 0, {})
    assert rec.calls[-1] == "on_epoch_end"
    # Keras 2's on_batch_* run for training batches.
    plain = Rec()
    plain.on_batch_end = lambda batch, logs=None: plain.calls.append(batch)
    plain.on_train_batch_end(7, {})
    assert plain.calls == [7]
