"""Mistakes and bad luck (issue 15): no data loss, no silent wrong result, errors
before the first update that name the argument and leave the model as it was."""
import gc
import threading
import warnings

import numpy as np
import pytest

import deepgpu as dg
from deepgpu import layers, losses, metrics, optimizers
from deepgpu.models import Model, Sequential, load_model

RNG = np.random.default_rng(0)


def dense_model(classes=3, features=4, **compile_kw):
    m = Sequential([layers.Dense(8, activation="relu", input_shape=(features,)),
                    layers.Dense(classes, activation="softmax")])
    kw = {"optimizer": optimizers.Adam(1e-2), "loss": "sparse_categorical_crossentropy"}
    kw.update(compile_kw)
    m.compile(**kw)
    return m


def data(n=40, features=4, classes=3):
    x = RNG.normal(size=(n, features)).astype(np.float32)
    y = RNG.integers(0, classes, n).astype(np.int32)
    return x, y


def weights_of(m):
    return [w.data_sync().copy() for w in m.weights]


def same_weights(a, b):
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


# ------------------------------------------------------- shared optimizer

def test_compile_refuses_an_optimizer_another_model_uses():
    opt = optimizers.Adam(1e-2)
    m1 = dense_model(optimizer=opt)
    m2 = Sequential([layers.Dense(3, input_shape=(4,))])
    with pytest.raises(ValueError, match="already used by model") as e:
        m2.compile(optimizer=opt, loss="mse")
    assert m1.name in str(e.value)
    assert not m2.compiled
    m1.compile(optimizer=opt, loss="sparse_categorical_crossentropy")  # the same model again: fine


def test_compile_refuses_an_optimizer_built_for_other_variables():
    opt = optimizers.Adam(1e-2)
    m1 = dense_model(optimizer=opt)
    m1.fit(*data(), epochs=1, verbose=0)
    m1.compile(optimizer="sgd", loss="mse")  # m1 lets go of opt, which keeps m1's slots
    m2 = dense_model(optimizer="adam")
    with pytest.raises(ValueError, match="built for other variables"):
        m2.compile(optimizer=opt, loss="mse")


def test_a_dropped_model_does_not_hold_its_optimizer():
    opt = optimizers.Adam(1e-2)
    m1 = dense_model(optimizer=opt)
    del m1
    m2 = dense_model(optimizer=opt)  # no error: m1 is gone (after a collection)
    assert m2.optimizer is opt
    gc.collect()


def test_save_writes_only_this_models_optimizer_slots(tmp_path):
    """Layers frozen after training: the optimizer holds slots for more variables than the
    model trains now; the saved file must still load and resume exactly."""
    x, y = data()
    m = dense_model()
    m.fit(x, y, epochs=2, batch_size=8, verbose=0)
    m.layers[0].trainable = False
    m.compile(optimizer=m.optimizer, loss="sparse_categorical_crossentropy")
    m.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    m.save(tmp_path / "m.dgm")
    m2 = load_model(tmp_path / "m.dgm")
    m.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    m2.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    for a, b in zip(weights_of(m), weights_of(m2)):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------- dict inputs

def two_input_model():
    a = layers.Input(shape=(3,), name="a")
    b = layers.Input(shape=(2,), name="b")
    out = layers.Dense(1)(layers.Concatenate()([a, b]))
    m = Model([a, b], out)
    m.compile(optimizer="sgd", loss="mse")
    return m


def test_dict_inputs_are_matched_by_name():
    m = two_input_model()
    x1 = RNG.normal(size=(6, 3)).astype(np.float32)
    x2 = RNG.normal(size=(6, 2)).astype(np.float32)
    ref = m.predict([x1, x2]).data_sync()
    np.testing.assert_array_equal(m.predict({"b": x2, "a": x1}).data_sync(), ref)
    np.testing.assert_array_equal(m({"b": x2, "a": x1}).data_sync(), ref)
    y = np.zeros((6, 1), np.float32)
    assert np.isclose(m.evaluate({"b": x2, "a": x1}, y), m.evaluate([x1, x2], y))


@pytest.mark.parametrize("call", ["predict", "call", "fit", "evaluate"])
def test_unknown_or_missing_input_name_is_an_error(call):
    m = two_input_model()
    x1 = np.ones((6, 3), np.float32)
    x2 = np.ones((6, 2), np.float32)
    y = np.zeros((6, 1), np.float32)
    before = weights_of(m)
    for bad in ({"a": x1, "typo": x2}, {"a": x1}):
        with pytest.raises(ValueError, match=r"\['a', 'b'\]"):
            if call == "predict":
                m.predict(bad)
            elif call == "call":
                m(bad)
            elif call == "fit":
                m.fit(bad, y, verbose=0)
            else:
                m.evaluate(bad, y)
    assert same_weights(before, weights_of(m))


def test_sequential_dict_input_by_its_input_name():
    m = Sequential([layers.Input(shape=(4,), name="features"), layers.Dense(2)])
    x = np.ones((3, 4), np.float32)
    np.testing.assert_array_equal(m.predict({"features": x}).data_sync(), m.predict(x).data_sync())
    with pytest.raises(ValueError, match="features"):
        m.predict({"feature": x})


# ---------------------------------------------------------- class labels

@pytest.mark.parametrize("bad", [3, -1])
def test_labels_outside_the_classes_raise_in_fit_and_evaluate(bad):
    x, y = data()
    y[7] = bad
    m = dense_model(metrics=["accuracy"])
    before = weights_of(m)
    with pytest.raises(ValueError, match=rf"label {bad}.*\[0, 3\)"):
        m.fit(x, y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        m.evaluate(x, y)
    assert same_weights(before, weights_of(m)) and m.optimizer.iterations == 0
    with pytest.raises(ValueError, match=r"validation_data y.*\[0, 3\)"):
        m.fit(*data(), validation_data=(x, y), verbose=0)
    assert m.optimizer.iterations == 0


def test_sparse_loss_and_metrics_check_labels_when_called_directly():
    p = dg.tensor(np.full((4, 3), 1 / 3, np.float32))
    y = np.array([0, 1, 2, 5])
    with pytest.raises(ValueError, match="label 5"):
        losses.sparse_categorical_crossentropy(y, p)
    with pytest.raises(ValueError, match="label 5"):
        losses.SparseCategoricalCrossentropy()(y, p)
    with pytest.raises(ValueError, match="sparse_categorical_accuracy"):
        metrics.SparseCategoricalAccuracy().update_state(y, p)
    with pytest.raises(ValueError, match="sparse_top_k"):
        metrics.SparseTopKCategoricalAccuracy(k=2).update_state(y, p)


def test_ignore_class_as_keras():
    logits = RNG.normal(size=(5, 4)).astype(np.float32)
    y = np.array([1, -1, 3, 0, -1])
    lp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    valid = y != -1
    per = np.where(valid, -lp[np.arange(5), np.where(valid, y, 0)], 0.0)
    got = losses.sparse_categorical_crossentropy(y, dg.tensor(logits), from_logits=True, ignore_class=-1)
    np.testing.assert_allclose(got.data_sync(), per, rtol=1e-5, atol=1e-6)
    loss = losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1)
    np.testing.assert_allclose(loss(y, dg.tensor(logits)).item(), per.sum() / valid.sum(), rtol=1e-5)
    # A padding label inside the class range is ignored too, and gets no gradient.
    t = dg.Variable(logits)
    g = dg.grad(lambda v: losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)(
        np.array([1, 0, 3, 0, 2]), v))(t)
    assert np.all(g.data_sync()[[1, 3]] == 0) and np.any(g.data_sync()[0] != 0)
    # In fit: labels equal to ignore_class are accepted.
    x, yy = data()
    yy[::5] = -1
    m = dense_model(loss=losses.SparseCategoricalCrossentropy(ignore_class=-1))
    m.fit(x, yy, epochs=1, verbose=0)
    assert np.isfinite(m.evaluate(x, yy))


# ---------------------------------------------------------------- threads

def test_concurrent_evaluate_and_predict_give_each_caller_its_own_results():
    m = dense_model(metrics=["accuracy", "sparse_top_k_categorical_accuracy"])
    sets = [data(n=96) for _ in range(2)]
    want_eval = [m.evaluate(x, y, batch_size=4) for x, y in sets]
    want_pred = [m.predict(x, batch_size=4).data_sync() for x, _ in sets]
    wrong = []

    def work(k):
        x, y = sets[k]
        for _ in range(15):
            if not np.allclose(m.evaluate(x, y, batch_size=4), want_eval[k], rtol=1e-6):
                wrong.append(("evaluate", k))
            if not np.array_equal(m.predict(x, batch_size=4).data_sync(), want_pred[k]):
                wrong.append(("predict", k))

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


# ------------------------------------------------------- disposed tensors

def test_a_disposed_tensor_raises_on_use(backend):
    t = dg.ones((2, 3))
    t.dispose()
    assert t.is_disposed and t.shape == (2, 3) and "disposed" in repr(t)
    with pytest.raises(dg.DisposedTensorError, match="tensor is disposed"):
        t.data_sync()
    with pytest.raises(dg.DisposedTensorError, match="tensor is disposed"):
        t + 1
    with pytest.raises(dg.DisposedTensorError, match="tensor is disposed"):
        dg.matmul(dg.ones((4, 2)), t)
    s = dg.tensor(2.0)
    dg.dispose(s)
    with pytest.raises(dg.DisposedTensorError):
        s.item()
    dg.dispose(t)  # twice: harmless
    v = dg.Variable([1.0, 2.0])
    v.dispose()
    with pytest.raises(dg.DisposedTensorError):
        v.assign([3.0, 4.0])


# ------------------------------------- activity regularizer, weighted metrics

def test_activity_regularizer_is_divided_by_the_batch_size():
    """Keras 3's documented example: 0.25 from the kernel, 25 / 5 from the activity."""
    from deepgpu import regularizers
    layer = layers.Dense(5, input_dim=5, kernel_initializer="ones", kernel_regularizer=regularizers.L1(0.01),
                         activity_regularizer=regularizers.L2(0.01))
    layer(dg.ones((5, 5)) * 2.0)
    assert np.isclose(sum(float(v.item()) for v in layer.losses), 5.25, rtol=1e-6)


def test_activity_penalty_is_per_thread_and_none_before_a_call():
    import threading
    from deepgpu import regularizers
    layer = layers.Dense(2, input_dim=2, kernel_initializer="ones", activity_regularizer=regularizers.L2(0.5))
    assert layer.losses == []  # built, never called: no activity penalty yet
    layer(dg.ones((1, 2)))
    seen = []
    t = threading.Thread(target=lambda: seen.append(len(layer.losses)))
    t.start()
    t.join()
    assert seen == [0] and np.isclose(float(layer.losses[0].item()), 4.0)  # 0.5 * (2^2 + 2^2)


def regression_model(**compile_kw):
    m = Sequential([layers.Dense(1, input_shape=(2,), kernel_initializer="ones")])
    m.compile(optimizer=optimizers.SGD(0.0), loss="mae", **compile_kw)
    return m


def test_only_weighted_metrics_are_weighted():
    x = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], np.float32)
    y = np.zeros((4, 1), np.float32)
    sw = np.array([1.0, 0.0, 3.0, 0.0], np.float32)
    err = np.abs(x.sum(1))  # |prediction - 0|
    m = regression_model(metrics=["mae"], weighted_metrics=["mae", "mse"])
    assert m.metrics_names == ["loss", "mae", "weighted_mae", "mse"]
    logs = m.evaluate(x, y, sample_weight=sw, return_dict=True)
    assert np.isclose(logs["mae"], err.mean())
    assert np.isclose(logs["weighted_mae"], (err * sw).sum() / sw.sum())
    assert np.isclose(logs["mse"], (err ** 2 * sw).sum() / sw.sum())
    h = m.fit(x, y, sample_weight=sw, epochs=1, batch_size=4, verbose=0)
    assert set(h.history) == {"loss", "mae", "weighted_mae", "mse"}
    assert np.isclose(h.history["mae"][0], err.mean())
    # class_weight weighs the weighted metrics too, never the plain ones.
    m2 = dense_model(metrics=["accuracy"], weighted_metrics=["accuracy"])
    xc, yc = data()
    h = m2.fit(xc, yc, class_weight={0: 1.0, 1: 0.0, 2: 0.0}, epochs=1, batch_size=40, verbose=0)
    assert set(h.history) == {"loss", "accuracy", "weighted_accuracy"}


def test_weighted_metrics_survive_save_and_load(tmp_path):
    m = regression_model(weighted_metrics=["mse"])
    m.save(tmp_path / "w.dgm")
    assert load_model(tmp_path / "w.dgm").metrics_names == ["loss", "mse"]


# -------------------------------------------------------- argument checks

BAD_FIT = [
    ({"epochs": -1}, "epochs", "-1"),
    ({"epochs": 2.5}, "epochs", "2.5"),
    ({"epochs": 2, "initial_epoch": 3}, "initial_epoch", "3"),
    ({"batch_size": 0}, "batch_size", "0"),
    ({"batch_size": -4}, "batch_size", "-4"),
    ({"steps_per_epoch": 0}, "steps_per_epoch", "0"),
    ({"validation_freq": 0}, "validation_freq", "0"),
    ({"verbose": "yes"}, "verbose", "'yes'"),
    ({"validation_split": 1.5}, "validation_split", "1.5"),
    ({"class_weight": {"0": 1.0, "1": 2.0}}, "class_weight", "'0'"),
    ({"validation_data": (np.ones((5, 7), np.float32), np.zeros(5, np.int32))}, "validation_data", "(5, 7)"),
    ({"validation_data": (np.ones((5, 4), np.float32), np.zeros((5, 2, 2), np.int32))}, "validation_data y",
     "(None, 2, 2)"),
]


@pytest.mark.parametrize("kw,name,value", BAD_FIT)
def test_fit_checks_every_argument_before_the_first_update(kw, name, value):
    x, y = data()
    m = dense_model()
    before = weights_of(m)
    with pytest.raises(ValueError) as e:
        m.fit(x, y, **{"verbose": 0, **kw})
    assert name in str(e.value) and value in str(e.value), str(e.value)
    assert same_weights(before, weights_of(m))
    assert m.optimizer.iterations == 0 and m.history is None


def test_bad_x_y_and_batch_sizes_elsewhere():
    x, y = data()
    m = dense_model()
    with pytest.raises(ValueError, match="x must be a NumPy array.*'abc'"):
        m.fit("abc", y, verbose=0)
    with pytest.raises(ValueError, match="x must be a NumPy array"):
        m.predict("abc")
    with pytest.raises(ValueError, match="batch_size.*0"):
        m.evaluate(x, y, batch_size=0)
    with pytest.raises(ValueError, match="batch_size.*-1"):
        m.predict(x, batch_size=-1)
    with pytest.raises(ValueError, match=r"x is empty \(0 samples"):
        m.fit(x[:0], y[:0], verbose=0)
    with pytest.raises(ValueError, match="empty"):
        m.evaluate(x[:0], y[:0])
    with pytest.raises(ValueError, match="empty"):
        m.predict(x[:0])
    with pytest.raises(ValueError, match="class_weight and sample_weight"):
        m.fit(x, y, class_weight={0: 1.0}, sample_weight=np.ones(len(x)), verbose=0)
    assert m.optimizer.iterations == 0


@pytest.mark.parametrize("lr", [-0.1, float("nan"), float("inf")])
def test_learning_rate_must_be_a_finite_non_negative_number(lr):
    with pytest.raises(ValueError, match="learning_rate"):
        optimizers.Adam(lr)
    opt = optimizers.SGD(0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        opt.learning_rate = lr
    assert opt.learning_rate == 0.1
    bad = optimizers.SGD(lambda: lr)
    with pytest.raises(ValueError, match="learning rate schedule"):
        bad.apply_gradients([(dg.ones((2,)), dg.Variable([1.0, 2.0]))])


# ------------------------------------------------------------- NaN / Inf

@pytest.mark.parametrize("where", ["x", "y", "validation"])
def test_non_finite_data_is_refused_before_training(where):
    x, y = data()
    y = y.astype(np.float32)
    vx, vy = data(n=10)
    if where == "x":
        x[13, 2] = np.nan
    elif where == "y":
        y[5] = np.inf
    else:
        vx[4, 0] = -np.inf
    m = dense_model()
    before = weights_of(m)
    with pytest.raises(ValueError, match="NaN or Inf") as e:
        m.fit(x, y, validation_data=(vx, vy), verbose=0)
    sample = {"x": "sample 13", "y": "sample 5", "validation": "sample 4"}[where]
    assert sample in str(e.value) and "check_numerics=False" in str(e.value)
    assert same_weights(before, weights_of(m))
    if where == "x":
        with pytest.raises(ValueError, match="NaN or Inf"):
            m.evaluate(x, y)


def test_a_loss_turning_nan_is_reported_once_with_epoch_and_step():
    x, y = data(n=40)
    x[22] = np.nan  # batch 3 of 5 (batch_size 8, no shuffling)
    m = dense_model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=0, check_numerics=False)
    msgs = [str(w.message) for w in caught if "loss became" in str(w.message)]
    assert len(msgs) == 1, msgs
    assert "epoch 1/3, step 3/5" in msgs[0]


def test_labels_are_checked_for_a_model_built_by_its_first_step():
    x, y = data()
    y[-1] = 7
    m = Sequential([layers.Dense(3, activation="softmax")])  # no input shape: built by fit
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="label 7"):
        m.fit(x, y, batch_size=40, verbose=0)
    assert m.optimizer.iterations == 0
