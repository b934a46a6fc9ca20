"""The seeds' code examples, in deepgpu, on every backend (issue 3's list)."""
import numpy as np
import pytest

import deepgpu as dg
from deepgpu import Input, Model, Sequential
from deepgpu.layers import (Activation, Conv2D, Dense, Dropout, Flatten, MaxPooling2D, ReLU)


def _totals(model):
    text = model.summary(return_string=True)
    get = lambda key: int(next(l for l in text.splitlines() if l.startswith(key)).split(":")[1].replace(",", ""))
    return get("Total params"), get("Trainable params"), get("Non-trainable params"), text


def test_tfjs_linear_regression_predicts_9_for_5(backend):
    model = Sequential()
    model.add(Dense(units=1, input_shape=[1]))
    model.compile(loss="meanSquaredError", optimizer="sgd")
    xs = dg.tensor2d([1, 2, 3, 4], [4, 1])
    ys = dg.tensor2d([1, 3, 5, 7], [4, 1])
    model.fit(xs, ys, epochs=400, verbose=0)
    pred = model.predict(dg.tensor2d([5], [1, 1]))
    assert pred.backend == backend
    assert abs(pred.data_sync()[0, 0] - 9) < 0.3


def test_tfjs_summary_with_positions_and_print_fn():
    model = Sequential()
    model.add(Dense(units=1, input_shape=[1]))
    lines = []
    model.summary(30, [100, 50, 25], lambda x: lines.append("output: " + x))
    assert all(len(l) <= len("output: ") + 30 for l in lines)
    assert "output: Total params: 2" in lines
    assert any("Layer (type)" in l for l in lines)


def test_tfjs_two_dense_layers_shapes():
    model = Sequential()
    model.add(Dense(units=32, input_shape=[100]))
    model.add(Dense(units=4))
    assert model.output_shape == (None, 4)
    assert model.count_params() == 100 * 32 + 32 + 32 * 4 + 4


@pytest.mark.parametrize("variant", ["relu_layers", "activation_arg"])
def test_dbd_regressor_summary_261(variant):
    model = Sequential()
    if variant == "relu_layers":
        model.add(Dense(10, input_shape=(13,)))
        model.add(ReLU())
        model.add(Dense(10))
        model.add(ReLU())
        model.add(Dense(1))
    else:
        model.add(Dense(10, input_shape=(13,), activation="relu"))
        model.add(Dense(10, activation="relu"))
        model.add(Dense(1))
    total, trainable, frozen, text = _totals(model)
    assert (total, trainable, frozen) == (261, 261, 0)
    params = [l.count_params() for l in model.layers if isinstance(l, Dense)]
    assert params == [140, 110, 11]
    assert "(None, 10)" in text and "(None, 1)" in text
    model.compile(loss="mse", optimizer="rmsprop")


def test_dbd_functional_regressor_and_list_constructor():
    inputs = Input((13,))
    x = Dense(10)(inputs)
    hidden = Dense(10)(x)
    output = Dense(1)(hidden)
    model = Model(inputs, output)
    assert _totals(model)[:3] == (261, 261, 0)
    seq = Sequential([Dense(10, input_shape=(13,)), Dense(10), Dense(1)])
    assert seq.count_params() == 261


def _separable(n, d, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype("float32")
    w = rng.standard_normal((d, 1))
    return x, ((x @ w) > 0).astype("float32")


@pytest.mark.parametrize("style", ["activation_layers", "functional"])
def test_dbd_binary_classifier_learns(backend, style):
    x, y = _separable(512, 13, 0)
    if style == "activation_layers":
        model = Sequential()
        model.add(Dense(10, input_shape=(13,)))
        model.add(Activation("relu"))
        model.add(Dense(10))
        model.add(Activation("relu"))
        model.add(Dense(1))
        model.add(Activation("sigmoid"))
    else:
        inputs = Input((13,))
        h = Activation("relu")(Dense(10)(inputs))
        h = Activation("relu")(Dense(10)(h))
        model = Model(inputs, Activation("sigmoid")(Dense(1)(h)))
    model.compile(loss="binary_crossentropy", optimizer="rmsprop", metrics=["accuracy"])
    # RMSprop at lr 1e-3 needs ~25 epochs of 16 batches on this separable set.
    hist = model.fit(x, y, epochs=25, batch_size=32, verbose=0)
    assert hist.history["loss"][-1] < 0.6 * hist.history["loss"][0]
    assert hist.history["accuracy"][-1] > 0.85


def test_dbd_multiclass_classifier_learns(backend):
    rng = np.random.default_rng(1)
    centers = rng.standard_normal((5, 4)) * 3
    labels = rng.integers(0, 5, 600)
    x = (centers[labels] + rng.standard_normal((600, 4))).astype("float32")
    y = np.eye(5, dtype="float32")[labels]
    model = Sequential()
    model.add(Dense(10, input_shape=(4,), activation="relu"))
    model.add(Dense(10, activation="relu"))
    model.add(Dense(5, activation="softmax"))
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    hist = model.fit(x, y, epochs=10, batch_size=32, verbose=0)
    assert hist.history["loss"][-1] < 0.7 * hist.history["loss"][0]


def test_dbd_multilabel_classifier_learns(backend):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((600, 3)).astype("float32")
    y = ((x @ rng.standard_normal((3, 7))) > 0.3).astype("float32")
    model = Sequential()
    model.add(Dense(10, input_shape=(3,), activation="relu"))
    model.add(Dense(10, activation="relu"))
    model.add(Dense(7, activation="sigmoid"))
    model.compile(loss="binary_crossentropy", optimizer="rmsprop", metrics=["accuracy"])
    hist = model.fit(x, y, epochs=10, batch_size=32, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]


def test_dbd_multitask_two_heads_learn(backend):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((600, 3)).astype("float32")
    y1 = np.eye(5, dtype="float32")[(x[:, 0] > 0) + 2 * (x[:, 1] > 0) + (x[:, 2] > 1)]
    y2 = np.eye(2, dtype="float32")[(x.sum(1) > 0).astype(int)]
    inputs = Input((3,))
    h = Dense(10, activation="relu")(inputs)
    h = Dense(10, activation="relu")(h)
    out1 = Dense(5, activation="softmax")(h)
    out2 = Dense(2, activation="softmax")(h)
    model = Model(inputs, [out1, out2])
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    hist = model.fit(x, [y1, y2], epochs=10, batch_size=32, verbose=0)
    keys = set(hist.history)
    n1, n2 = model.output_names
    assert {"loss", f"{n1}_loss", f"{n2}_loss", f"{n1}_accuracy", f"{n2}_accuracy"} <= keys
    assert hist.history["loss"][-1] < hist.history["loss"][0]


def test_dbd_image_dnn_summary_669706():
    model = Sequential()
    model.add(Flatten(input_shape=(28, 28)))
    model.add(Dense(512))
    model.add(ReLU())
    model.add(Dense(512))
    model.add(ReLU())
    model.add(Dense(10))
    model.add(Activation("softmax"))
    assert _totals(model)[:3] == (669706, 669706, 0)
    assert model.layers[0].output_shape == (None, 784)


def test_dbd_image_dnn_with_dropout_trains(backend):
    rng = np.random.default_rng(4)
    x = rng.random((256, 28, 28)).astype("float32")
    labels = (x[:, :14].mean((1, 2)) > x[:, 14:].mean((1, 2))).astype(int)
    y = np.eye(10, dtype="float32")[labels]
    model = Sequential()
    model.add(Flatten(input_shape=(28, 28)))
    model.add(Dense(512))
    model.add(Dropout(0.5))
    model.add(ReLU())
    model.add(Dense(512))
    model.add(Dropout(0.5))
    model.add(ReLU())
    model.add(Dense(10))
    model.add(Activation("softmax"))
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    hist = model.fit(x, y, epochs=3, batch_size=64, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    # Dropout is off at inference: two predictions agree exactly.
    a, b = model.predict(x[:8]).data_sync(), model.predict(x[:8]).data_sync()
    np.testing.assert_array_equal(a, b)


def seed_convnet():
    model = Sequential()
    model.add(Conv2D(32, 3, activation="relu", input_shape=(28, 28, 1)))
    model.add(Conv2D(32, 3, activation="relu"))
    model.add(MaxPooling2D(2))
    model.add(Conv2D(64, 3, activation="relu"))
    model.add(Conv2D(64, 3, activation="relu"))
    model.add(MaxPooling2D(2))
    model.add(Flatten())
    model.add(Dropout(0.25))
    model.add(Dense(512, activation="relu"))
    model.add(Dropout(0.5))
    model.add(Dense(10, activation="softmax"))
    return model


def test_tfjs_convnet_summary_matches_seed():
    model = seed_convnet()
    total, trainable, frozen, text = _totals(model)
    assert (total, trainable, frozen) == (594922, 594922, 0)
    shapes = [l.output_shape for l in model.layers]
    assert shapes == [(None, 26, 26, 32), (None, 24, 24, 32), (None, 12, 12, 32), (None, 10, 10, 64),
                      (None, 8, 8, 64), (None, 4, 4, 64), (None, 1024), (None, 1024), (None, 512),
                      (None, 512), (None, 10)]
    assert [l.count_params() for l in model.layers] == [320, 9248, 0, 18496, 36928, 0, 0, 0, 524800, 0, 5130]


def test_tfjs_convnet_trains_with_validation_and_on_epoch_end(backend):
    rng = np.random.default_rng(5)
    x = rng.random((96, 28, 28, 1)).astype("float32")
    labels = (x[:, :14].mean((1, 2, 3)) > x[:, 14:].mean((1, 2, 3))).astype(int)
    y = np.eye(10, dtype="float32")[labels]
    model = seed_convnet()
    model.compile(optimizer=dg.optimizers.SGD(0.15), loss="categoricalCrossentropy", metrics=["accuracy"])
    seen = []
    hist = model.fit(x[:64], y[:64], batch_size=32, epochs=2, validation_data=(x[64:], y[64:]),
                     callbacks={"onEpochEnd": lambda epoch, logs: seen.append((epoch, logs["val_loss"]))},
                     verbose=0)
    assert [e for e, _ in seen] == [0, 1]
    assert hist.history["val_loss"] == [v for _, v in seen]
    assert set(hist.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}


def test_transfer_learning_truncate_freeze_new_head_fine_tune(backend):
    rng = np.random.default_rng(6)
    x = rng.random((64, 8, 8, 1)).astype("float32")
    y = (x.mean((1, 2, 3)) > 0.5).astype("int32")
    base = Sequential([
        Conv2D(4, 3, activation="relu", padding="same", input_shape=(8, 8, 1), name="conv_1"),
        MaxPooling2D(2, name="pool_1"),
        Conv2D(4, 3, activation="relu", name="conv_3"),
        Flatten(name="flat"),
        Dense(3, activation="softmax", name="old_head"),
    ])
    base.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    base.fit(x, y, epochs=1, verbose=0)
    truncated = Model(base.inputs, base.get_layer("conv_3").output)
    assert truncated.output_shape == (None, 2, 2, 4)
    for layer in truncated.layers:
        layer.trainable = False
    head_in = Flatten()(truncated.outputs[0])
    model = Model(truncated.inputs, Dense(2, activation="softmax", name="new_head")(head_in))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    total, trainable, frozen, _ = _totals(model)
    conv_params = 4 * 9 + 4 + 4 * 4 * 9 + 4
    assert frozen == conv_params and trainable == 16 * 2 + 2
    before = [w.copy() for w in base.get_layer("conv_1").get_weights()]
    head_before = model.get_layer("new_head").get_weights()[0].copy()
    model.fit(x, y, epochs=2, verbose=0)
    for a, b in zip(before, base.get_layer("conv_1").get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(head_before, model.get_layer("new_head").get_weights()[0])
    # Unfreeze: takes effect at the next compile and keeps the weights.
    for layer in truncated.layers:
        layer.trainable = True
    model.compile(optimizer=dg.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    for a, b in zip(before, base.get_layer("conv_1").get_weights()):
        np.testing.assert_array_equal(a, b)
    assert _totals(model)[2] == 0
    model.fit(x, y, epochs=1, verbose=0)
    assert not np.array_equal(before[0], base.get_layer("conv_1").get_weights()[0])


def test_grid_search_returns_best_and_every_trial():
    from deepgpu.tuning import grid_search

    rng = np.random.default_rng(7)
    x = rng.standard_normal((128, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]])).astype("float32")

    def build(units, learning_rate):
        m = Sequential([Dense(units, activation="relu", input_shape=(3,)), Dense(1)])
        m.compile(optimizer=dg.optimizers.Adam(learning_rate), loss="mse")
        return m

    res = grid_search(build, {"units": [4, 16], "learning_rate": [1e-5, 1e-2]}, x, y, epochs=3, seed=0)
    assert len(res.trials) == 4
    assert res.best_val_loss == min(t["val_loss"] for t in res.trials)
    assert res.best_params["learning_rate"] == 1e-2
