"""Sequential and functional models: building, calling, summary, configs, training API, errors."""
import io
import sys

import numpy as np
import pytest

import deepgpu as dg
from deepgpu import Input, Model, Sequential
from deepgpu.layers import Add, Concatenate, Conv2D, Dense, Dropout, Flatten


def _data(n=64, d=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype("float32")
    y = np.eye(k, dtype="float32")[rng.integers(0, k, n)]
    return x, y


# ---------------------------------------------------------------- Sequential


def test_sequential_add_pop_and_names():
    m = Sequential()
    m.add(Dense(8, input_shape=(4,)))
    m.add(Dense(3))
    assert [l.name for l in m.layers][0].startswith("dense")
    assert m.output_shape == (None, 3)
    popped = m.pop()
    assert isinstance(popped, Dense) and m.output_shape == (None, 8)
    m.add(Dense(2))
    assert m.output_shape == (None, 2)
    with pytest.raises(TypeError):
        Sequential().pop()


def test_sequential_call_checks_the_input_shape():
    m = Sequential([Input((None, 3)), Dense(2)])
    assert m(np.ones((2, 5, 3), np.float32)).shape == (2, 5, 2)  # None matches any size
    for bad in (np.ones((2, 5, 4), np.float32), np.ones((2, 3), np.float32), np.ones((2, 1, 5, 3), np.float32)):
        with pytest.raises(ValueError, match=r"Input 0 of model .* is incompatible: expected shape \(None, None, 3\)"):
            m(bad)
    m1 = Sequential([Input(()), Dropout(0.5)])  # a batch of scalars: a 0-d input still does not fit
    with pytest.raises(ValueError, match=r"expected shape \(None,\), got \(\)"):
        m1(dg.tensor(1.0))


def test_layer_names_are_unique_and_keras_like():
    a, b, c = Dense(1), Dense(1), Dense(1)
    base = a.name
    assert b.name != base and c.name != b.name
    assert b.name.startswith("dense_")


def test_sequential_deferred_build_on_first_call(backend):
    m = Sequential([Dense(5), Dense(2)])
    assert not m.built
    y = m(dg.ones((3, 7)))
    assert y.shape == (3, 2) and m.built
    assert m.layers[0].count_params() == 7 * 5 + 5


def test_sequential_with_input_first():
    m = Sequential()
    m.add(Input(shape=(6,)))
    m.add(Dense(2))
    assert m.input_shape == (None, 6)
    assert m.count_params() == 14


def test_add_wrong_shape_names_layer_and_shapes_and_leaves_model_unchanged():
    m = Sequential([Flatten(input_shape=(4, 4)), Dense(3)])
    conv = Conv2D(2, 3)
    with pytest.raises(ValueError) as e:
        m.add(conv)
    msg = str(e.value)
    assert conv.name in msg and "(None, 3)" in msg
    assert len(m.layers) == 2 and m.output_shape == (None, 3)
    m.add(Dense(1))
    assert m.output_shape == (None, 1)


def test_call_with_wrong_input_shape_raises_with_both_shapes(backend):
    m = Sequential([Dense(3, input_shape=(4,))])
    with pytest.raises(ValueError) as e:
        m(dg.ones((2, 5)))
    assert "5" in str(e.value) and "4" in str(e.value)


# ---------------------------------------------------------------- functional


def test_functional_dag_multiple_inputs_outputs_shared_layer_and_skip(backend):
    a, b = Input((4,), name="a"), Input((4,), name="b")
    shared = Dense(4, name="shared")
    ha, hb = shared(a), shared(b)
    skip = Add(name="skip")([ha, a])
    cat = Concatenate(name="cat")([skip, hb])
    out1 = Dense(2, name="out1")(cat)
    out2 = Dense(1, name="out2")(hb)
    model = Model([a, b], [out1, out2])
    assert model.output_names == ["out1", "out2"]
    xa, xb = np.ones((3, 4), "float32"), np.full((3, 4), 2, "float32")
    o1, o2 = model([xa, xb])
    assert o1.shape == (3, 2) and o2.shape == (3, 1)
    # Shared layer weights counted once.
    assert model.count_params() == (16 + 4) + (8 * 2 + 2) + (4 + 1)
    text = model.summary(return_string=True)
    assert "Connected to" in text and "shared[0][0]" in text or "shared" in text


def test_functional_graph_disconnected_error():
    a, b = Input((2,)), Input((2,))
    out = Add()([a, b])
    with pytest.raises(ValueError, match="[Dd]isconnected"):
        Model(a, out)


def test_model_as_layer_and_truncation(backend):
    inp = Input((5,))
    h = Dense(4, name="h1")(inp)
    out = Dense(2, name="o")(h)
    inner = Model(inp, out, name="inner")
    trunc = Model(inner.inputs, inner.get_layer("h1").output)
    assert trunc.output_shape == (None, 4)
    new_in = Input((5,))
    outer = Model(new_in, Dense(1)(inner(new_in)))
    x = np.ones((2, 5), "float32")
    assert outer(x).shape == (2, 1)
    np.testing.assert_allclose(trunc(x).data_sync(), inner.get_layer("h1")(dg.tensor(x)).data_sync(), rtol=1e-6)
    with pytest.raises(ValueError, match="no layer named"):
        inner.get_layer("nope")


def test_get_config_round_trip_sequential_and_functional(backend):
    m = Sequential([Dense(4, activation="relu", input_shape=(3,)), Dropout(0.2), Dense(2)])
    m2 = Sequential.from_config(m.get_config())
    m2.set_weights(m.get_weights())
    x = np.random.default_rng(0).standard_normal((5, 3)).astype("float32")
    np.testing.assert_allclose(m.predict(x).data_sync(), m2.predict(x).data_sync(), rtol=1e-6)

    a = Input((3,))
    h = Dense(4)(a)
    model = Model(a, [Dense(2)(h), Add()([h, h])])
    clone = Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    for p, q in zip(model.predict(x), clone.predict(x)):
        np.testing.assert_allclose(p.data_sync(), q.data_sync(), rtol=1e-6)


# ------------------------------------------------------------------ training


def test_fit_evaluate_predict_api(backend):
    x, y = _data()
    m = Sequential([Dense(8, activation="relu", input_shape=(4,)), Dense(3, activation="softmax")])
    m.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    hist = m.fit(x, y, epochs=2, batch_size=16, validation_split=0.25, verbose=0)
    assert set(hist.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(hist.history["loss"]) == 2
    res = m.evaluate(x, y, verbose=0)
    assert isinstance(res, list) and len(res) == 2 and all(isinstance(v, float) for v in res)
    d = m.evaluate(x, y, return_dict=True)
    assert set(d) == {"loss", "accuracy"}
    p = m.predict(x, batch_size=10)
    assert isinstance(p, dg.Tensor) and p.shape == (64, 3) and p.backend == backend
    assert isinstance(m.train_on_batch(x[:8], y[:8]), list)
    assert isinstance(m.test_on_batch(x[:8], y[:8]), list)
    assert m.predict_on_batch(x[:8]).shape == (8, 3)


def test_fit_accepts_tensors_dicts_and_validation_data(backend):
    a, b = Input((4,), name="a"), Input((2,), name="b")
    out = Dense(1, name="out")(Concatenate()([a, b]))
    m = Model({"a": a, "b": b}, {"out": out})
    m.compile(optimizer="sgd", loss={"out": "mse"})
    rng = np.random.default_rng(1)
    xa, xb = rng.standard_normal((32, 4)).astype("float32"), rng.standard_normal((32, 2)).astype("float32")
    y = rng.standard_normal((32, 1)).astype("float32")
    hist = m.fit({"a": dg.tensor(xa), "b": xb}, {"out": y}, epochs=2, batch_size=8,
                 validation_data=({"a": xa, "b": xb}, {"out": y}), verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert "val_loss" in hist.history


def test_fit_before_compile_and_mismatched_lengths_raise():
    x, y = _data()
    m = Sequential([Dense(3, input_shape=(4,))])
    w0 = m.get_weights()
    with pytest.raises(RuntimeError, match="compile"):
        m.fit(x, y)
    m.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError) as e:
        m.fit(x, y[:10], verbose=0)
    assert "64" in str(e.value) and "10" in str(e.value)
    for a, b in zip(w0, m.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_loss_that_does_not_fit_output_raises_and_changes_nothing():
    x, _ = _data()
    m = Sequential([Dense(3, activation="softmax", input_shape=(4,))])
    m.compile(optimizer="adam", loss="categorical_crossentropy")
    w0 = m.get_weights()
    with pytest.raises(ValueError) as e:
        m.fit(x, np.zeros((64, 5), "float32"), verbose=0)
    assert "5" in str(e.value) and "3" in str(e.value)
    for a, b in zip(w0, m.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kw,word", [({"optimizer": "adamx"}, "adam"), ({"loss": "msee"}, "mse"),
                                     ({"metrics": ["acuracy"]}, "accuracy")])
def test_unknown_names_list_valid_ones_and_leave_model_uncompiled(kw, word):
    m = Sequential([Dense(3, input_shape=(4,))])
    args = {"optimizer": "sgd", "loss": "mse", **kw}
    with pytest.raises(ValueError) as e:
        m.compile(**args)
    assert word in str(e.value)
    assert not m.compiled


def test_unknown_activation_lists_valid_ones():
    with pytest.raises(ValueError) as e:
        Dense(3, activation="rellu")
    assert "relu" in str(e.value)


def test_custom_loss_callable(backend):
    x, y = _data()
    m = Sequential([Dense(3, input_shape=(4,))])
    m.compile(optimizer="sgd", loss=lambda t, p: dg.mean(dg.square(t - p), axis=-1))
    h = m.fit(x, y, epochs=3, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]


def test_progress_output_verbose_modes(capsys):
    x, y = _data()
    m = Sequential([Dense(3, input_shape=(4,))])
    m.compile(optimizer="sgd", loss="mse")
    m.fit(x, y, epochs=2, batch_size=16, verbose=2)
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out
    assert out.count("4/4") == 2 and "loss:" in out and "\r" not in out
    m.fit(x, y, epochs=1, verbose=0)
    assert capsys.readouterr().out == ""


def test_class_weight_changes_the_loss():
    x, y = _data()
    m = Sequential([Dense(3, activation="softmax", input_shape=(4,))])
    m.compile(optimizer="sgd", loss="categorical_crossentropy")
    w = m.get_weights()
    a = m.fit(x, y, epochs=1, shuffle=False, verbose=0).history["loss"][0]
    m.set_weights(w)
    b = m.fit(x, y, epochs=1, shuffle=False, verbose=0, class_weight={0: 5.0, 1: 1.0, 2: 1.0}).history["loss"][0]
    assert a != pytest.approx(b)


def test_fit_sgd_matches_the_gradient_descent_recurrence(backend):
    """TF.js's first example: fit() with plain SGD is exactly full-batch GD on MSE."""
    dg.set_seed(0)
    model = dg.Sequential([dg.layers.Dense(1, input_shape=[1])])
    model.compile(loss="meanSquaredError", optimizer="sgd")
    w = float(model.get_weights()[0][0, 0])
    b = 0.0
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = 2 * x - 1
    model.fit(x.reshape(4, 1).astype("float32"), y.reshape(4, 1).astype("float32"), epochs=50, verbose=0)
    for _ in range(50):
        g = 2 * (w * x + b - y) / 4
        w, b = w - 0.01 * float((g * x).sum()), b - 0.01 * float(g.sum())
    kernel, bias = model.get_weights()
    np.testing.assert_allclose([kernel[0, 0], bias[0]], [w, b], rtol=1e-4, atol=1e-5)
