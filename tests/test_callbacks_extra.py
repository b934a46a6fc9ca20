"""TensorBoard, BackupAndRestore, SwapEMAWeights and the optimizers' use_ema (issue 20)."""
import os

import numpy as np
import pytest

import deepgpu as dg
from deepgpu import callbacks as C
from deepgpu import layers as L
from deepgpu import optimizers as O

RNG = np.random.default_rng(0)
X = RNG.normal(size=(48, 4)).astype("float32")
Y = (X @ RNG.normal(size=(4, 2))).astype("float32")


def _model(seed=0, opt=None):
    dg.utils.set_random_seed(seed)
    m = dg.Sequential([L.Dense(6, activation="tanh", input_shape=(4,)), L.Dense(2)])
    m.compile(opt or O.Adam(0.01), "mse")
    return m


# ------------------------------------------------------------------------ EMA
def test_use_ema_moving_average_overwrite_and_state():
    opt = O.SGD(0.1, use_ema=True, ema_momentum=0.8)
    v = dg.Variable(dg.tensor(np.array([1.0, -1.0], "float32")))
    grads = [np.array([1.0, 2.0], "float32"), np.array([-3.0, 0.5], "float32"), np.array([0.5, 0.5], "float32")]
    w, avg = np.array([1.0, -1.0]), None
    for g in grads:
        opt.apply([dg.tensor(g)], [v])
        w = w - 0.1 * g
        avg = w.copy() if avg is None else 0.8 * avg + 0.2 * w  # the first step copies the variable
    np.testing.assert_allclose(v.data_sync(), w, rtol=1e-6)
    np.testing.assert_allclose(opt._ema_vars[id(v)].data_sync(), avg, rtol=1e-6)
    state = opt.get_weights()
    assert len(state) == 2 and opt.get_config()["use_ema"] is True  # iterations, the average (no slots)
    opt.finalize_variable_values([v])
    np.testing.assert_allclose(v.data_sync(), avg, rtol=1e-6)
    # every ema_overwrite_frequency steps the variables take the averages
    o2 = O.SGD(0.1, use_ema=True, ema_momentum=0.5, ema_overwrite_frequency=2)
    u = dg.Variable(dg.tensor(np.zeros(2, "float32")))
    o2.apply([dg.tensor(np.ones(2, "float32"))], [u])    # u = -0.1, avg = -0.1
    o2.apply([dg.tensor(np.ones(2, "float32"))], [u])    # u = -0.2, avg = -0.15, then u = avg
    np.testing.assert_allclose(u.data_sync(), -0.15, rtol=1e-6)
    with pytest.raises(ValueError, match="ema_momentum must be a number in"):
        O.Adam(use_ema=True, ema_momentum=1.5)
    with pytest.raises(ValueError, match="ema_overwrite_frequency must be an integer"):
        O.Adam(use_ema=True, ema_overwrite_frequency=0)


def test_use_ema_matches_keras():
    keras = pytest.importorskip("keras")
    ws = [RNG.normal(size=(3, 2)).astype("float32"), RNG.normal(size=(2,)).astype("float32")]
    gs = [[RNG.normal(size=w.shape).astype("float32") for w in ws] for _ in range(4)]
    kopt = keras.optimizers.Adam(0.05, use_ema=True, ema_momentum=0.7, ema_overwrite_frequency=3)
    kvs = [keras.Variable(w) for w in ws]
    opt = O.Adam(0.05, use_ema=True, ema_momentum=0.7, ema_overwrite_frequency=3)
    vs = [dg.Variable(dg.tensor(w)) for w in ws]
    for g in gs:
        kopt.apply([keras.ops.convert_to_tensor(x) for x in g], kvs)
        opt.apply([dg.tensor(x) for x in g], vs)
    kopt.finalize_variable_values(kvs)
    opt.finalize_variable_values(vs)
    for a, b in zip(vs, kvs):
        np.testing.assert_allclose(a.data_sync(), keras.ops.convert_to_numpy(b), rtol=1e-5, atol=1e-6)


def test_fit_ends_on_the_averages_and_swap_ema_weights_evaluates_with_them():
    m = _model(opt=O.Adam(0.05, use_ema=True, ema_momentum=0.9))
    seen = {}

    class Record(C.Callback):
        def on_test_begin(self, logs=None):
            seen["in_model_during_test"] = self.model.get_weights()

        def on_epoch_end(self, epoch, logs=None):
            opt = self.model.optimizer
            seen["averages"] = [opt._ema_vars[id(v)].data_sync() for v in opt._vars]
            seen["raw"] = self.model.get_weights()
            seen["val_loss"] = logs["val_loss"]

    m.fit(X, Y, epochs=2, batch_size=16, verbose=0, validation_data=(X, Y),
          callbacks=[C.SwapEMAWeights(), Record()])
    for a, b in zip(seen["in_model_during_test"], seen["averages"]):
        np.testing.assert_array_equal(a, b)   # evaluated with the averages
    assert any(not np.array_equal(a, b) for a, b in zip(seen["raw"], seen["averages"]))  # swapped back after
    for a, b in zip(m.get_weights(), seen["averages"]):
        np.testing.assert_array_equal(a, b)   # fit ends on the averages (finalize_variable_values)
    assert m.evaluate(X, Y) == pytest.approx(seen["val_loss"], rel=1e-5)
    plain = _model(opt=O.Adam(0.05))
    with pytest.raises(ValueError, match="use_ema=True"):
        plain.fit(X, Y, epochs=1, verbose=0, validation_data=(X, Y), callbacks=[C.SwapEMAWeights()])


# ----------------------------------------------------------- BackupAndRestore
class _Crash(C.Callback):
    def __init__(self, epoch, step):
        super().__init__()
        self.at = (epoch, step)
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise RuntimeError("power cut")


@pytest.mark.parametrize("save_freq,crash", [("epoch", (2, 1)), (2, (1, 1)), (1, (0, 2))])
def test_backup_and_restore_resumes_exactly(tmp_path, save_freq, crash):
    ref = _model()
    ref.fit(X, Y, epochs=4, batch_size=16, shuffle=False, verbose=0)
    backup = str(tmp_path / "backup")
    m = _model()
    es = C.EarlyStopping(monitor="loss", patience=10)
    with pytest.raises(RuntimeError, match="power cut"):
        m.fit(X, Y, epochs=4, batch_size=16, shuffle=False, verbose=0,
              callbacks=[C.BackupAndRestore(backup, save_freq=save_freq), es, _Crash(*crash)])
    assert os.listdir(backup) == ["latest.dgbackup"]  # an interrupted fit keeps its backup
    best = es.best
    # a new process: a fresh model and optimizer (different weights), the same callbacks' kinds
    m2 = _model(seed=1)
    m2(X[:1])
    es2 = C.EarlyStopping(monitor="loss", patience=10)
    seen_epochs = []
    h = m2.fit(X, Y, epochs=4, batch_size=16, shuffle=False, verbose=0,
               callbacks=[C.BackupAndRestore(backup, save_freq=save_freq), es2,
                          C.LambdaCallback(on_epoch_begin=lambda e, logs: seen_epochs.append((e, es2.best)))])
    first, es_best = seen_epochs[0]
    assert first == crash[0]  # resumed at the epoch of the last backup (and past its steps)
    assert len(h.history["loss"]) == 4 - first
    if first:
        assert es_best == best  # EarlyStopping's state came back (its on_train_begin had reset it to inf)
    for a, b in zip(m2.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert m2.optimizer.iterations == ref.optimizer.iterations == 12
    assert not os.path.exists(backup)  # a fit that ends removes the backup


def test_backup_and_restore_bad_input(tmp_path):
    with pytest.raises(ValueError, match="backup_dir is empty"):
        C.BackupAndRestore("")
    with pytest.raises(ValueError, match="save_freq must be 'epoch' or an integer >= 1"):
        C.BackupAndRestore(str(tmp_path), save_freq="batch")


# ----------------------------------------------------------------- TensorBoard
def test_tensorboard_writes_event_files_tensorboard_reads(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    m = _model()
    logdir = str(tmp_path / "logs")
    m.fit(X, Y, epochs=3, batch_size=16, verbose=0, validation_data=(X, Y),
          callbacks=[C.TensorBoard(logdir, histogram_freq=1, update_freq=2, write_steps_per_second=True)])
    hist = m.history.history
    train = EventAccumulator(os.path.join(logdir, "train"), size_guidance={"histograms": 0, "tensors": 0})
    train.Reload()
    tags = train.Tags()
    assert {"epoch_loss", "epoch_learning_rate", "epoch_steps_per_second", "batch_loss"} <= set(tags["scalars"])
    np.testing.assert_allclose([e.value for e in train.Scalars("epoch_loss")], hist["loss"], rtol=1e-6)
    assert [e.step for e in train.Scalars("epoch_loss")] == [0, 1, 2]
    assert [e.step for e in train.Scalars("batch_loss")] == [2, 4, 6, 8]  # every 2 of the 9 steps
    names = [w.name for w in m.weights]
    assert sorted(tags["histograms"]) == sorted(n + "/histogram" for n in names)
    h = train.Histograms(names[0] + "/histogram")[-1].histogram_value
    k = m.weights[0].data_sync()
    assert h.num == k.size and h.min == pytest.approx(float(k.min())) and h.max == pytest.approx(float(k.max()))
    assert sum(h.bucket) == k.size and h.bucket_limit[-1] >= h.max
    want, _ = np.histogram(k.astype("float64"), bins=30)
    assert [int(c) for c in h.bucket] == list(want)
    assert "keras" in tags["tensors"]
    graph = train.Tensors("keras")[0].tensor_proto.string_val[0].decode()
    assert '"class_name": "Sequential"' in graph
    val = EventAccumulator(os.path.join(logdir, "validation"))
    val.Reload()
    np.testing.assert_allclose([e.value for e in val.Scalars("epoch_loss")], hist["val_loss"], rtol=1e-6)


def test_tensorboard_bad_input(tmp_path):
    pytest.importorskip("tensorboard")
    with pytest.raises(ValueError, match="update_freq must be"):
        C.TensorBoard(str(tmp_path), update_freq="often")
    with pytest.raises(ValueError, match="histogram_freq must be"):
        C.TensorBoard(str(tmp_path), histogram_freq=-1)
    with pytest.raises(ValueError, match="profile_batch"):
        C.TensorBoard(str(tmp_path), profile_batch=2)


def test_a_data_source_fit_resumes_at_the_epoch_and_ends_on_the_averages(tmp_path):
    class Batches(dg.utils.PyDataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return X[i * 16:(i + 1) * 16], Y[i * 16:(i + 1) * 16]

    backup = str(tmp_path / "b")
    m = _model(opt=O.Adam(0.05, use_ema=True))
    with pytest.raises(RuntimeError, match="power cut"):
        m.fit(Batches(), epochs=3, verbose=0, callbacks=[C.BackupAndRestore(backup), _Crash(2, 0)])
    m2 = _model(seed=1, opt=O.Adam(0.05, use_ema=True))
    m2(X[:1])
    seen = []
    m2.fit(Batches(), epochs=3, verbose=0,
           callbacks=[C.BackupAndRestore(backup), C.LambdaCallback(on_epoch_begin=lambda e, logs: seen.append(e))])
    assert seen == [2] and m2.optimizer.iterations == 9
    opt = m2.optimizer
    for v in opt._vars:  # fit ended on the moving averages
        np.testing.assert_array_equal(v.data_sync(), opt._ema_vars[id(v)].data_sync())
