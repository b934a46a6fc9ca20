"""Issue 20's everyday API: learning rate as a variable, summary(expand_nested, show_trainable),
Keras 3's add_weight order."""
import numpy as np
import pytest

import deepgpu as dg
from deepgpu import layers as L
from deepgpu.optimizers import schedules


def test_learning_rate_assign_and_numpy_read():
    opt = dg.optimizers.Adam(0.01)
    lr = opt.learning_rate
    assert lr == 0.01 and isinstance(lr, float)
    assert lr.numpy().dtype == np.float32 and float(lr.numpy()) == pytest.approx(0.01)
    assert lr.assign(0.25) == 0.25
    assert opt.learning_rate == 0.25 and opt.get_config()["learning_rate"] == 0.25
    opt.learning_rate.assign(dg.tensor(0.5))
    assert opt.learning_rate == 0.5
    with pytest.raises(ValueError, match="finite number >= 0"):
        opt.learning_rate.assign(-1.0)
    assert opt.learning_rate == 0.5
    # the assigned rate is the one the next step uses (SGD: p -= lr * g)
    sgd = dg.optimizers.SGD(1.0)
    v = dg.Variable(dg.tensor(np.ones(3, "float32")))
    sgd.learning_rate.assign(0.1)
    sgd.apply([dg.tensor(np.full(3, 2.0, "float32"))], [v])
    np.testing.assert_allclose(v.data_sync(), 0.8, rtol=1e-6)
    # a schedule still drives the rate; assigning a number to it is refused
    s = dg.optimizers.SGD(schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5))
    assert s.learning_rate == pytest.approx(0.1)
    s.apply([dg.tensor(np.ones(3, "float32"))], [dg.Variable(dg.tensor(np.ones(3, "float32")))])
    assert s.learning_rate == pytest.approx(0.05) and s.learning_rate.numpy() == np.float32(0.05)
    with pytest.raises(TypeError, match="LearningRateSchedule"):
        s.learning_rate.assign(0.2)


def test_summary_expand_nested_and_show_trainable():
    inner = dg.Sequential([L.Dense(4, input_shape=(3,)), L.Dropout(0.1), L.Dense(2)], name="inner")
    inner.layers[0].trainable = False
    i = dg.Input((3,))
    m = dg.Model(i, L.Dense(1, name="head")(inner(i)))
    plain = m.summary(return_string=True)
    assert "└" not in plain and "Trainable " not in plain.splitlines()[2]
    text = m.summary(return_string=True, expand_nested=True, show_trainable=True)
    lines = text.splitlines()
    assert lines[2].split()[-1] == "Trainable" and len(lines[1]) == len(plain.splitlines()[1]) + 12
    rows = [l for l in lines if " (" in l and "Layer (type)" not in l]
    names = [r.split(" (")[0].strip() for r in rows]
    assert [n.lstrip("└ ") for n in names][1:] == ["inner", inner.layers[0].name, inner.layers[1].name,
                                                   inner.layers[2].name, "head"]
    marks = [r.split()[-1] for r in rows]
    assert marks == ["-", "Y", "N", "-", "Y", "Y"]
    assert all(r.startswith("    └ ") for r in rows[2:5])
    with pytest.raises(TypeError, match="layer_range"):
        m.summary(layer_range=["a", "b"])


def test_summary_of_a_subclassed_model_expands_its_tracked_layers():
    class Net(dg.Model):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.body = dg.Sequential([L.Dense(3), L.Dense(3)], name="body")
            self.head = L.Dense(1)

        def call(self, x):
            return self.head(self.body(x))

    n = Net()
    n.build((None, 2))
    text = n.summary(return_string=True, expand_nested=True)
    assert text.count("    └ dense") == 2 and "Total params: 25" in text


def test_add_weight_in_keras_3_order():
    class Lin(L.Layer):
        def build(self, shape):
            self.w = self.add_weight((shape[-1], 2), "ones")
            self.b = self.add_weight(shape=(2,), initializer="zeros", name="bias")

        def call(self, x):
            return dg.ops.matmul(x, self.w) + self.b

    lay = Lin()
    np.testing.assert_array_equal(lay(np.ones((1, 3), "float32")).data_sync(), [[3.0, 3.0]])
    assert [w.name.split("/")[1] for w in lay.weights] == ["variable", "bias"]
    with pytest.raises(TypeError, match="needs a shape"):
        L.Layer().add_weight("w")


def test_evaluate_and_predict_with_steps():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 3)).astype("float32")
    y = rng.standard_normal((50, 1)).astype("float32")
    m = dg.Sequential([L.Dense(1, input_shape=(3,))])
    m.compile("sgd", "mse")
    pred = m.predict(x).data_sync()
    # steps=2 at batch 16: only the first 32 samples
    assert m.predict(x, batch_size=16, steps=2).shape == (32, 1)
    np.testing.assert_allclose(m.predict(x, batch_size=16, steps=2).data_sync(), pred[:32], rtol=1e-6)
    want = float(((pred[:32] - y[:32]) ** 2).mean())
    assert m.evaluate(x, y, batch_size=16, steps=2) == pytest.approx(want, rel=1e-5)
    assert m.evaluate(x, y, batch_size=16, steps=100) == pytest.approx(float(((pred - y) ** 2).mean()), rel=1e-5)
    for bad in (0, -1, 1.5, "2"):
        with pytest.raises(ValueError, match="steps must be an integer >= 1"):
            m.evaluate(x, y, steps=bad)
        with pytest.raises(ValueError, match="steps must be an integer >= 1"):
            m.predict(x, steps=bad)
