"""Optimizers against independent NumPy versions of Keras 3's formulas, on every backend."""
import math

import numpy as np
import pytest

import deepgpu as dg
from deepgpu import optimizers
from deepgpu.optimizers import schedules
from deepgpu.testing import assert_close

RNG = np.random.default_rng(5)
A = RNG.uniform(0.5, 2.0, size=(3, 4))
Bq = RNG.normal(size=(3, 4))
W0 = RNG.normal(size=(3, 4))


def quad_grad(w):
    return A * w + Bq  # gradient of 0.5 * sum(A w^2) + sum(Bq w)


def quad_loss(v):
    return dg.sum(dg.tensor(A, "float32") * v * v) * 0.5 + dg.sum(dg.tensor(Bq, "float32") * v)


class Ref:
    """Keras 3 update rules in float64 NumPy, written from the formulas."""

    def __init__(self, kind, lr=0.01, **kw):
        self.kind, self.lr, self.kw, self.t, self.s = kind, lr, kw, 0, {}
        self.u_prod = 1.0

    def slot(self, name, like, init=0.0):
        return self.s.setdefault(name, np.full_like(like, init))

    def step(self, w, g):
        self.t += 1
        t, lr, kw = self.t, self.lr, self.kw
        if kw.get("weight_decay"):
            w = w - w * kw["weight_decay"] * lr
        if self.kind == "sgd":
            mom = kw.get("momentum", 0.0)
            if not mom:
                return w - lr * g
            m = self.s["m"] = mom * self.slot("m", w) - lr * g
            return w + (mom * m - lr * g if kw.get("nesterov") else m)
        if self.kind == "adam":
            b1, b2, eps = 0.9, 0.999, 1e-7
            m = self.s["m"] = b1 * self.slot("m", w) + (1 - b1) * g
            v = self.s["v"] = b2 * self.slot("v", w) + (1 - b2) * g * g
            if kw.get("amsgrad"):
                v = self.s["vh"] = np.maximum(self.slot("vh", w), v)
            alpha = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            return w - alpha * m / (np.sqrt(v) + eps)
        if self.kind == "rmsprop":
            rho, mom, eps = 0.9, kw.get("momentum", 0.0), 1e-7
            v = self.s["v"] = rho * self.slot("v", w) + (1 - rho) * g * g
            if kw.get("centered"):
                mg = self.s["mg"] = rho * self.slot("mg", w) + (1 - rho) * g
                inc = lr * g / np.sqrt(v - mg * mg + eps)
            else:
                inc = lr * g / np.sqrt(v + eps)
            if mom:
                mm = self.s["mom"] = mom * self.slot("mom", w) + inc
                return w - mm
            return w - inc
        if self.kind == "adagrad":
            acc = self.s["acc"] = self.slot("acc", w, 0.1) + g * g
            return w - lr * g / np.sqrt(acc + 1e-7)
        if self.kind == "adadelta":
            rho, eps = 0.95, 1e-7
            ag = self.s["ag"] = rho * self.slot("ag", w) + (1 - rho) * g * g
            d = -np.sqrt(self.slot("ad", w) + eps) * g / np.sqrt(ag + eps)
            self.s["ad"] = rho * self.s["ad"] + (1 - rho) * d * d
            return w + lr * d
        if self.kind == "adamax":
            b1, b2, eps = 0.9, 0.999, 1e-7
            m = self.s["m"] = b1 * self.slot("m", w) + (1 - b1) * g
            u = self.s["u"] = np.maximum(b2 * self.slot("u", w), np.abs(g))
            return w - lr / (1 - b1 ** t) * m / (u + eps)
        if self.kind == "nadam":
            b1, b2, eps = 0.9, 0.999, 1e-7
            u_t = b1 * (1 - 0.5 * 0.96 ** t)
            u_t1 = b1 * (1 - 0.5 * 0.96 ** (t + 1))
            self.u_prod *= u_t
            m = self.s["m"] = b1 * self.slot("m", w) + (1 - b1) * g
            v = self.s["v"] = b2 * self.slot("v", w) + (1 - b2) * g * g
            m_hat = u_t1 * m / (1 - self.u_prod * u_t1) + (1 - u_t) * g / (1 - self.u_prod)
            return w - lr * m_hat / (np.sqrt(v / (1 - b2 ** t)) + eps)
        raise KeyError(self.kind)


CASES = [
    ("sgd", optimizers.SGD, {}),
    ("sgd", optimizers.SGD, {"momentum": 0.9}),
    ("sgd", optimizers.SGD, {"momentum": 0.8, "nesterov": True}),
    ("sgd", optimizers.SGD, {"momentum": 0.5, "weight_decay": 0.1}),
    ("adam", optimizers.Adam, {}),
    ("adam", optimizers.Adam, {"amsgrad": True}),
    ("adam", optimizers.AdamW, {"weight_decay": 0.004}),
    ("adam", optimizers.AdamW, {"weight_decay": 0.05, "amsgrad": True}),
    ("rmsprop", optimizers.RMSprop, {}),
    ("rmsprop", optimizers.RMSprop, {"momentum": 0.9, "centered": True}),
    ("rmsprop", optimizers.RMSprop, {"momentum": 0.5}),
    ("adagrad", optimizers.Adagrad, {}),
    ("adadelta", optimizers.Adadelta, {}),
    ("adamax", optimizers.Adamax, {}),
    ("nadam", optimizers.Nadam, {}),
]


@pytest.mark.parametrize("kind,cls,kw", CASES, ids=[f"{c.__name__}-{k}" for _, c, k in CASES])
def test_steps_match_keras_formulas(backend, kind, cls, kw):
    lr = 0.05 if kind != "adadelta" else 1.0
    opt = cls(learning_rate=lr, **kw)
    ref = Ref(kind, lr, **kw)
    v = dg.Variable(W0.astype(np.float32))
    data = v.data
    w = W0.copy()
    for i in range(6):
        if i % 2:
            opt.minimize(lambda: quad_loss(v), [v])
        else:
            g = quad_grad(v.data_sync().astype(np.float64))
            opt.apply_gradients([(dg.tensor(g, "float32"), v)])
        w = ref.step(w, quad_grad(w))
    assert v.data is data, "the update must happen in place"
    assert opt.iterations == 6
    assert_close(v, w, rtol=2e-4, atol=1e-5)


@pytest.mark.parametrize("clip", [{"clipvalue": 0.3}, {"clipnorm": 0.5}, {"global_clipnorm": 0.7}])
def test_gradient_clipping(backend, clip):
    g1, g2 = RNG.normal(size=(3, 4)) * 2, RNG.normal(size=(5,)) * 2
    v1, v2 = dg.Variable(np.zeros((3, 4))), dg.Variable(np.zeros(5))
    optimizers.SGD(learning_rate=1.0, **clip).apply_gradients([(dg.tensor(g1), v1), (dg.tensor(g2), v2)])
    if "clipvalue" in clip:
        e1, e2 = np.clip(g1, -0.3, 0.3), np.clip(g2, -0.3, 0.3)
    elif "clipnorm" in clip:
        e1 = g1 * 0.5 / max(np.linalg.norm(g1), 0.5)
        e2 = g2 * 0.5 / max(np.linalg.norm(g2), 0.5)
    else:
        n = math.sqrt((g1 ** 2).sum() + (g2 ** 2).sum())
        e1, e2 = g1 * 0.7 / max(n, 0.7), g2 * 0.7 / max(n, 0.7)
    assert_close(v1, -e1, rtol=1e-5)
    assert_close(v2, -e2, rtol=1e-5)


def test_only_one_clip_option():
    with pytest.raises(ValueError, match="only one"):
        optimizers.Adam(clipnorm=1.0, clipvalue=1.0)


@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop", "adagrad", "adadelta", "adamax", "nadam", "adamw"])
def test_state_round_trip_resumes_exactly(backend, name):
    extra = {"momentum": 0.9} if name in ("sgd", "rmsprop") else {}
    opt = optimizers.get({"class_name": name, "config": {"learning_rate": 0.05, **extra}})
    vs = [dg.Variable(W0.astype(np.float32)), dg.Variable(np.ones(3, np.float32))]

    def grads(vars_):
        return [(dg.tensor(quad_grad(vars_[0].data_sync().astype(np.float64)), "float32"), vars_[0]),
                (vars_[1] * 0.5, vars_[1])]

    for _ in range(3):
        opt.apply_gradients(grads(vs))
    state = opt.get_weights()
    assert all(isinstance(a, np.ndarray) for a in state) and int(state[0]) == 3
    # A fresh optimizer from the config; state set before it is built (as after loading a model).
    opt2 = optimizers.get(optimizers.serialize(opt))
    vs2 = [dg.Variable(v.data_sync()) for v in vs]
    opt2.set_weights(state)
    for _ in range(3):
        opt.apply_gradients(grads(vs))
        opt2.apply_gradients(grads(vs2))
    assert opt2.iterations == opt.iterations == 6
    for a, b in zip(vs, vs2):
        np.testing.assert_array_equal(a.data_sync(), b.data_sync())
    for a, b in zip(opt.get_weights(), opt2.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="expected"):
        opt2.set_weights(state[:-1])


def test_none_gradients_and_frozen_variables_are_skipped():
    a, b, c = dg.Variable([1.0, 2.0]), dg.Variable([3.0]), dg.Variable([5.0], trainable=False)
    opt = optimizers.SGD(0.5)
    opt.apply_gradients([(dg.tensor([1.0, 1.0]), a), (None, b), (dg.tensor([1.0]), c)])
    assert_close(a, np.array([0.5, 1.5]))
    assert_close(b, np.array([3.0]))
    assert_close(c, np.array([5.0]))
    assert opt.iterations == 1
    with pytest.raises(ValueError, match="shape"):
        opt.apply_gradients([(dg.tensor([1.0, 2.0, 3.0]), a)])


def test_weight_decay_exclusion():
    a, b = dg.Variable([1.0], name="kernel"), dg.Variable([1.0], name="dense/bias")
    opt = optimizers.AdamW(learning_rate=0.1, weight_decay=0.5)
    opt.exclude_from_weight_decay(var_names=["bias"])
    opt.apply_gradients([(dg.tensor([0.0]), a), (dg.tensor([0.0]), b)])
    assert_close(a, np.array([0.95]))
    assert_close(b, np.array([1.0]))


# ------------------------------------------------------- learning rate

def test_learning_rate_is_settable_and_schedules_follow_the_step():
    opt = optimizers.SGD(0.1)
    opt.learning_rate = 0.02
    assert opt.learning_rate == 0.02 and opt.get_config()["learning_rate"] == 0.02
    sched = schedules.ExponentialDecay(1.0, decay_steps=2, decay_rate=0.5)
    opt = optimizers.SGD(sched)
    v = dg.Variable([0.0])
    for k in range(3):
        assert opt.learning_rate == pytest.approx(0.5 ** (k / 2))
        opt.apply_gradients([(dg.tensor([1.0]), v)])
    assert_close(v, np.array([-(1 + 0.5 ** 0.5 + 0.5)]))
    with pytest.raises(TypeError, match="LearningRateSchedule"):
        opt.learning_rate = 0.1
    clone = optimizers.get(optimizers.serialize(opt))
    assert isinstance(clone._learning_rate, schedules.ExponentialDecay)
    assert clone.get_config() == opt.get_config()


def test_schedule_values():
    e = schedules.ExponentialDecay(0.1, 10, 0.9, staircase=True)
    assert [e(s) for s in (0, 9, 10, 25)] == pytest.approx([0.1, 0.1, 0.09, 0.1 * 0.9 ** 2])
    assert schedules.ExponentialDecay(0.1, 10, 0.9)(5) == pytest.approx(0.1 * 0.9 ** 0.5)
    p = schedules.PiecewiseConstantDecay([10, 20], [1.0, 0.5, 0.1])
    assert [p(s) for s in (0, 10, 11, 20, 21, 1000)] == [1.0, 1.0, 0.5, 0.5, 0.1, 0.1]
    with pytest.raises(ValueError, match="1 less"):
        schedules.PiecewiseConstantDecay([10], [1.0])
    c = schedules.CosineDecay(1.0, 100, alpha=0.1)
    for s in (0, 25, 50, 100, 150):
        d = 0.5 * (1 + math.cos(math.pi * min(s, 100) / 100))
        assert c(s) == pytest.approx(0.9 * d + 0.1)
    w = schedules.CosineDecay(0.0, 10, warmup_target=1.0, warmup_steps=5)
    assert w(0) == 0.0 and w(2.5) == pytest.approx(0.5) and w(5) == pytest.approx(1.0)
    for s in (e, p, c):
        assert type(s).from_config(s.get_config()).get_config() == s.get_config()


# -------------------------------------------------------------------- get

@pytest.mark.parametrize("name,cls", [
    ("sgd", optimizers.SGD), ("SGD", optimizers.SGD), ("adam", optimizers.Adam), ("Adam", optimizers.Adam),
    ("adamw", optimizers.AdamW), ("rmsprop", optimizers.RMSprop), ("RMSProp", optimizers.RMSprop),
    ("adagrad", optimizers.Adagrad), ("adadelta", optimizers.Adadelta), ("adamax", optimizers.Adamax),
    ("nadam", optimizers.Nadam),
])
def test_get_by_name(name, cls):
    opt = optimizers.get(name)
    assert type(opt) is cls
    assert type(opt).from_config(opt.get_config()).get_config() == opt.get_config()


def test_get_defaults_instances_and_errors():
    assert optimizers.get("sgd").learning_rate == 0.01
    assert optimizers.get("adam").learning_rate == 0.001
    assert optimizers.get("rmsprop").get_config()["rho"] == 0.9
    opt = optimizers.Adam()
    assert optimizers.get(opt) is opt
    assert optimizers.get({"class_name": "Adam", "config": {"learning_rate": 0.1}}).learning_rate == 0.1
    with pytest.raises(ValueError, match="adam") as e:
        optimizers.get("adamm")
    assert "rmsprop" in str(e.value) and "sgd" in str(e.value)
    with pytest.raises(TypeError):
        optimizers.Adam(bogus=1)
