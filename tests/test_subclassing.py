"""Subclassed models and layers end to end (issue 20): tracking, build, compile / fit / evaluate /
predict / summary, save / load with a registered class, custom train_step / test_step / predict_step."""
import numpy as np
import pytest

import deepgpu as dg
from deepgpu import layers
from deepgpu.autograd import GradientTape
from deepgpu.models import load_model, register_serializable
from deepgpu.testing import LayerCase


@register_serializable()
class TwoTower(dg.Model):
    """Layers as attributes, in a list and in a dict; plain constructor arguments (automatic config)."""

    def __init__(self, units=8, depth=2, **kwargs):
        super().__init__(**kwargs)
        self.units, self.depth = units, depth
        self.inp = layers.Dense(units, activation="relu")
        self.blocks = [layers.Dense(units, activation="tanh") for _ in range(depth)]
        self.heads = {"out": layers.Dense(1)}

    def call(self, x, training=None):
        h = self.inp(x)
        for b in self.blocks:
            h = h + b(h)
        return self.heads["out"](h)


@register_serializable()
class Residual(layers.Layer):
    """A subclassed Layer with a sublayer and a weight of its own (Keras 3's add_weight keywords)."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.proj = layers.Dense(units)

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(self.units,), initializer="ones", name="scale")

    def call(self, x):
        return x + self.proj(x) * self.scale

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@register_serializable()
class WithConfig(dg.Model):
    """get_config written by hand (a layer argument that is not a plain value)."""

    def __init__(self, hidden, **kwargs):
        super().__init__(**kwargs)
        self.hidden_cfg = hidden
        self.res = Residual(4)
        self.out = layers.Dense(2, activation="softmax")

    def call(self, x, training=None):
        return self.out(self.res(x))

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden_cfg}


def _data(n=96, d=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype("float32")
    return x, (x[:, :1] * 2 - x[:, 1:2]).astype("float32")


def test_tracking_build_and_counts():
    m = TwoTower(units=8, depth=3)
    assert not m.built and m.weights == []
    m.build((None, 4))
    assert m.built
    assert [type(l).__name__ for l in m.layers] == ["Dense"] * 5
    assert len(m.weights) == 10 and m.count_params() == 4 * 8 + 8 + 3 * (8 * 8 + 8) + 9
    # a layer appended to a tracked list after the assignment is found too
    m.blocks.append(layers.Dense(8))
    m(np.zeros((2, 4), "float32"))
    assert len(m.layers) == 6 and len(m.weights) == 12
    r = Residual(4)
    r(np.zeros((2, 4), "float32"))
    assert [w.name.split("/")[-1] for w in r.weights] == ["scale", "kernel", "bias"]
    r.trainable = False
    assert r.proj.trainable is False and r.trainable_weights == []


def test_compile_before_the_first_call_then_fit_evaluate_predict_summary():
    x, y = _data()
    m = TwoTower()
    m.compile(dg.optimizers.Adam(0.01), "mse", metrics=["mae"])  # not built yet: Keras allows this
    hist = m.fit(x, y, epochs=15, batch_size=16, verbose=0, validation_split=0.25)
    assert hist.history["loss"][-1] < hist.history["loss"][0] / 4
    assert set(hist.history) == {"loss", "mae", "val_loss", "val_mae"}
    logs = m.evaluate(x, y, return_dict=True)
    assert set(logs) == {"loss", "mae"} and logs["loss"] < 1
    assert m.predict(x).shape == (96, 1)
    text = m.summary(return_string=True)
    assert "two_tower" in text and "Total params: 193" in text


def test_output_structure_must_match_the_compiled_losses():
    x, y = _data()
    m = TwoTower()
    m.compile("adam", loss=["mse", "mse"])
    with pytest.raises(ValueError, match=r"compiled for outputs \['output_1', 'output_2'\].*returned \['output_1'\]"):
        m.fit(x, [y, y], epochs=1, verbose=0)


def test_save_and_load_model_with_registered_classes(tmp_path):
    x, y = _data()
    for model in (TwoTower(units=6, depth=1, name="tt"), WithConfig(hidden={"a": [1, 2]})):
        yy = y if isinstance(model, TwoTower) else (y > 0).astype("int32")[:, 0]
        model.compile("adam", "mse" if isinstance(model, TwoTower) else "sparse_categorical_crossentropy")
        model.fit(x, yy, epochs=2, verbose=0)
        want = model.predict(x).data_sync()
        path = str(tmp_path / f"{model.name}.dgm")
        model.save(path)
        back = load_model(path)
        assert type(back) is type(model) and back.name == model.name
        np.testing.assert_allclose(back.predict(x).data_sync(), want, rtol=1e-6, atol=1e-6)
        # compiled with the optimizer state: training goes on
        assert back.optimizer.iterations == model.optimizer.iterations
        back.fit(x, yy, epochs=1, verbose=0)
        # weights only
        wpath = str(tmp_path / f"{model.name}.dgw")
        model.save_weights(wpath)
        fresh = type(model).from_config(model.get_config())
        fresh.build((None, 4))
        fresh.load_weights(wpath)
        np.testing.assert_allclose(fresh.predict(x).data_sync(), want, rtol=1e-6, atol=1e-6)
    t = TwoTower(units=3)
    assert t.get_config() == {"name": t.name, "trainable": True, "dtype": "float32", "units": 3, "depth": 2}


def test_a_constructor_argument_that_is_not_plain_needs_get_config(tmp_path):
    class Opaque(dg.Model):
        def __init__(self, layer, **kwargs):
            super().__init__(**kwargs)
            self.layer = layer

        def call(self, x):
            return self.layer(x)

    m = Opaque(layers.Dense(2))
    m(np.zeros((1, 3), "float32"))
    with pytest.raises(NotImplementedError, match=r"Opaque.*define get_config\(\)"):
        m.get_config()
    with pytest.raises(NotImplementedError, match="Opaque"):
        m.save(str(tmp_path / "o.dgm"))
    assert not (tmp_path / "o.dgm").exists()


class CustomSteps(dg.Model):
    """Keras 3's custom train_step / test_step, written as its guide writes them."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.d1 = layers.Dense(16, activation="relu")
        self.d2 = layers.Dense(1)
        self.steps_seen = 0

    def call(self, x, training=None):
        return self.d2(self.d1(x))

    def train_step(self, data):
        x, y = data
        with GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(y=y, y_pred=y_pred)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        self.steps_seen += 1
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            else:
                metric.update_state(y, y_pred)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, y = data
        y_pred = self(x, training=False)
        loss = self.compute_loss(y=y, y_pred=y_pred)
        self._loss_tracker.update_state(loss)
        return {**self.compute_metrics(x, y, y_pred), "twice_loss": 2 * self._loss_tracker.result()}

    def predict_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        return self(x, training=False) * 10


def test_custom_train_test_predict_steps():
    x, y = _data()
    m = CustomSteps()
    m.compile(dg.optimizers.Adam(0.01), "mse", metrics=["mae"])
    hist = m.fit(x, y, epochs=10, batch_size=32, verbose=0, validation_data=(x, y))
    assert m.steps_seen == 30 and m.optimizer.iterations == 30
    h = hist.history
    assert set(h) == {"loss", "mae", "val_loss", "val_mae", "val_twice_loss"}
    assert h["loss"][-1] < h["loss"][0] / 3
    np.testing.assert_allclose(h["val_twice_loss"], 2 * np.asarray(h["val_loss"]), rtol=1e-5)
    # the logged loss is this model's own mean over the epoch's batches
    ev = m.evaluate(x, y, return_dict=True, batch_size=96)
    y_pred = m(x).data_sync()
    assert ev["loss"] == pytest.approx(float(((y_pred - y) ** 2).mean()), rel=1e-5)
    assert ev["mae"] == pytest.approx(float(np.abs(y_pred - y).mean()), rel=1e-5)
    np.testing.assert_allclose(m.predict(x).data_sync(), 10 * y_pred, rtol=1e-5)


def test_super_train_step_and_a_custom_loss_tracker():
    class Tracked(dg.Model):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.d = layers.Dense(1)
            self.calls = dg.metrics.Sum(name="calls")

        def call(self, x):
            return self.d(x)

        def train_step(self, data):
            self.calls.update_state(dg.tensor(1.0))
            return super().train_step(data)

    x, y = _data()
    m = Tracked()
    m.compile("sgd", "mse")
    h = m.fit(x, y, epochs=2, batch_size=48, verbose=0).history
    assert h["calls"] == [2.0, 2.0]  # reset every epoch, as Keras resets model.metrics
    assert h["loss"][1] < h["loss"][0]


def test_a_train_step_may_go_without_a_compiled_loss_and_must_return_a_dict():
    class OwnLoss(dg.Model):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.d = layers.Dense(1)
            self.tracker = dg.metrics.Mean(name="loss")

        def call(self, x):
            return self.d(x)

        def train_step(self, data):
            x, y = data
            with GradientTape() as tape:
                loss = dg.ops.mean(dg.ops.abs(self(x, training=True) - y))
            self.optimizer.apply_gradients(zip(tape.gradient(loss, self.trainable_variables),
                                               self.trainable_variables))
            self.tracker.update_state(loss)
            return {"loss": self.tracker.result()}

    x, y = _data()
    m = OwnLoss()
    m.compile(optimizer=dg.optimizers.SGD(0.05))
    h = m.fit(x, y, epochs=5, verbose=0).history["loss"]
    assert h[-1] < h[0]
    with pytest.raises(ValueError, match="needs a loss"):
        TwoTower().compile("adam")

    class Bad(OwnLoss):
        def train_step(self, data):
            return 1.0

    b = Bad()
    b.compile(optimizer="sgd")
    with pytest.raises(TypeError, match=r"train_step\(\) must return a dict"):
        b.fit(x, y, epochs=1, verbose=0)


def test_gradient_tape():
    v = dg.Variable(dg.tensor(np.array([1.0, 2.0], "float32")))
    x = dg.tensor(np.array([3.0, 4.0], "float32"))
    unused = dg.Variable(dg.tensor(np.ones(2, "float32")))
    with GradientTape() as tape:
        tape.watch(x)
        y = dg.ops.sum(v * v * x)
    gv, gx, gu = tape.gradient(y, [v, x, unused])
    np.testing.assert_allclose(gv.data_sync(), [6.0, 16.0])
    np.testing.assert_allclose(gx.data_sync(), [1.0, 4.0])
    assert gu is None
    with pytest.raises(RuntimeError, match="once"):
        tape.gradient(y, [v])
    with pytest.raises(ValueError, match="persistent"):
        GradientTape(persistent=True)


_F32 = ("the sublayers made in __init__ are float32 whatever the outer dtype (as in Keras), so the float64 "
        "finite differences do not apply; test_custom_train_test_predict_steps trains through them")

# The conformance harness on a subclassed model and a subclassed layer, as layers of a functional model.
CASES = [
    LayerCase(TwoTower, {"units": 5, "depth": 2}, (3, 4), (None, 1), id="subclassed-model",
              unsupported={"keras": "a Python class", "onnx": "a Python class"},
              skip={"wrong_rank": "call() takes any rank", "gradients": _F32,
                    "tfjs": "TF.js matches weights by name, and a Python class rebuilt in a new process names its "
                            "sublayers anew (TF.js itself would need a JavaScript class)"}),
    LayerCase(Residual, {"units": 4}, (3, 4), (None, 4), id="subclassed-layer",
              unsupported={"keras": "a Python class", "onnx": "a Python class"},
              skip={"wrong_rank": "call() takes any rank", "gradients": _F32,
                    "tfjs": "TF.js matches weights by name, and a Python class rebuilt in a new process names its "
                            "sublayers anew (TF.js itself would need a JavaScript class)"}),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_harness(case):
    rep = case.run()
    assert {"build", "config", "native", "trainable"} <= set(rep.ran)


# Keras 3's .weights.h5 layout for subclassed models: by attribute (what Keras 3.15 wrote for the
# twins of these classes in tests below: h5py's listing of its file).
KERAS_LAYOUT = {
    "TwoTower": {"vars", "inp/vars/0", "inp/vars/1", "blocks/dense/vars/0", "blocks/dense/vars/1",
                 "blocks/dense_1/vars/0", "blocks/dense_1/vars/1", "heads/dense/vars/0", "heads/dense/vars/1"},
    "WithConfig": {"vars", "layers/dense/vars/0", "layers/dense/vars/1", "layers/residual/vars/0",
                   "layers/residual/proj/vars/0", "layers/residual/proj/vars/1"},
}


def _datasets(path):
    h5py = pytest.importorskip("h5py")
    out = set()
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.add(n) if isinstance(o, h5py.Dataset) or n == "vars" else None)
    return out


@pytest.mark.parametrize("cls", [TwoTower, WithConfig])
def test_keras_weights_file_of_a_subclassed_model(tmp_path, cls):
    x, _ = _data()
    m = cls(units=8, depth=2) if cls is TwoTower else cls(hidden=1)
    m.build((None, 4))
    path = str(tmp_path / "m.weights.h5")
    m.save_weights(path)
    assert _datasets(path) == KERAS_LAYOUT[cls.__name__]
    other = cls(units=8, depth=2) if cls is TwoTower else cls(hidden=1)
    other.build((None, 4))
    other.load_weights(path)
    np.testing.assert_array_equal(other.predict(x).data_sync(), m.predict(x).data_sync())
    bad = TwoTower(units=3)
    bad.build((None, 4))
    with pytest.raises(dg.io.ModelFileError, match="m.weights.h5"):
        bad.load_weights(path)


def _keras_two_tower(keras):
    """TwoTower's twin in Keras 3."""
    class KTwoTower(keras.Model):
        def __init__(self, units=8, depth=2, **kw):
            super().__init__(**kw)
            self.units, self.depth = units, depth
            self.inp = keras.layers.Dense(units, activation="relu")
            self.blocks = [keras.layers.Dense(units, activation="tanh") for _ in range(depth)]
            self.heads = {"out": keras.layers.Dense(1)}

        def call(self, x):
            h = self.inp(x)
            for b in self.blocks:
                h = h + b(h)
            return self.heads["out"](h)

        def get_config(self):
            return {**super().get_config(), "units": self.units, "depth": self.depth}
    return KTwoTower


def test_keras_3_reads_and_writes_the_same_subclassed_weights(tmp_path):
    keras = pytest.importorskip("keras")
    KTwoTower = _keras_two_tower(keras)
    x, _ = _data()
    km = KTwoTower()
    km(x[:1])
    kpath = str(tmp_path / "keras.weights.h5")
    km.save_weights(kpath)
    assert _datasets(kpath) == KERAS_LAYOUT["TwoTower"]
    m = TwoTower(units=8, depth=2)
    m.build((None, 4))
    m.load_weights(kpath)
    want = keras.ops.convert_to_numpy(km(x))
    np.testing.assert_allclose(m.predict(x).data_sync(), want, rtol=1e-5, atol=1e-6)
    # and back: deepgpu's file into Keras
    m2 = TwoTower(units=8, depth=2)
    m2.build((None, 4))
    dpath = str(tmp_path / "dg.weights.h5")
    m2.save_weights(dpath)
    km.load_weights(dpath)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(km(x)), m2.predict(x).data_sync(), rtol=1e-5, atol=1e-6)


def test_keras_file_of_a_subclassed_model(tmp_path):
    # Keras 3 saves a subclassed model as .keras (its only save format); so must we, and read it back.
    x, y = _data()
    for model in (TwoTower(units=6, depth=1), WithConfig(hidden={"a": [1, 2]})):
        model(x[:2])
        path = str(tmp_path / f"{model.name}.keras")
        model.save(path)
        back = load_model(path)
        assert type(back) is type(model) and back.get_config() == model.get_config()
        np.testing.assert_array_equal(back.predict(x).data_sync(), model.predict(x).data_sync())
    with pytest.raises(NotImplementedError, match=r"save it as \.keras or \.dgm"):
        model.save(str(tmp_path / "m.h5"))
    unbuilt = TwoTower()
    with pytest.raises(ValueError, match="not built"):
        unbuilt.save(str(tmp_path / "u.keras"))


def test_keras_file_of_an_unregistered_or_packaged_class(tmp_path):
    x, _ = _data()

    @dg.saving.register_keras_serializable(package="pkg_e20")
    class Packaged(dg.Model):
        def __init__(self, units=3, **kw):
            super().__init__(**kw)
            self.units = units
            self.d = layers.Dense(units)

        def call(self, x):
            return self.d(x)

    class Unregistered(Packaged):
        pass

    assert dg.saving.get_registered_name(Packaged) == "pkg_e20>Packaged"
    m = Packaged()
    m(x[:1])
    m.save(str(tmp_path / "p.keras"))
    back = dg.saving.load_model(str(tmp_path / "p.keras"))
    assert type(back) is Packaged
    np.testing.assert_array_equal(back.predict(x).data_sync(), m.predict(x).data_sync())
    u = Unregistered()
    u(x[:1])
    dg.saving.save_model(u, str(tmp_path / "u.keras"))
    with pytest.raises(dg.io.ModelFileError, match=r"class 'Unregistered'.*custom_objects"):
        load_model(str(tmp_path / "u.keras"))
    back = load_model(str(tmp_path / "u.keras"), custom_objects={"Unregistered": Unregistered})
    np.testing.assert_array_equal(back.predict(x).data_sync(), u.predict(x).data_sync())


def test_keras_3_reads_and_writes_a_subclassed_keras_file(tmp_path):
    keras = pytest.importorskip("keras")
    KTwoTower = _keras_two_tower(keras)
    x, _ = _data()
    m = TwoTower(units=5, depth=2)
    m(x[:1])
    m.save(str(tmp_path / "dg.keras"))
    km = keras.saving.load_model(str(tmp_path / "dg.keras"), custom_objects={"TwoTower": KTwoTower})
    np.testing.assert_allclose(keras.ops.convert_to_numpy(km(x)), m.predict(x).data_sync(), rtol=1e-5, atol=1e-6)
    km2 = KTwoTower(units=5, depth=2)
    km2(x[:1])
    km2.save(str(tmp_path / "k.keras"))
    back = load_model(str(tmp_path / "k.keras"), custom_objects={"KTwoTower": TwoTower})
    np.testing.assert_allclose(back.predict(x).data_sync(), keras.ops.convert_to_numpy(km2(x)), rtol=1e-5,
                               atol=1e-6)
