"""Lion, Ftrl, Lamb and Adafactor with Keras 3's rules (issue 20): five steps on variables of ranks
1-3 against a NumPy transcription of Keras 3.15's update_step (always) and Keras 3.15 itself
(where installed); config round trips, bad arguments, and a model that trains with each."""
import numpy as np
import pytest

import deepgpu as dg
from deepgpu import optimizers as O

SHAPES = [(5,), (4, 3), (2, 3, 4)]
STEPS = 5


def _data(seed=0):
    rng = np.random.default_rng(seed)
    ws = [rng.normal(size=s).astype("float32") for s in SHAPES]
    gs = [[rng.normal(size=s).astype("float32") for s in SHAPES] for _ in range(STEPS)]
    return ws, gs


def np_run(name, kw, ws, gs):
    """Keras 3.15's update_step of each rule, in float64 NumPy."""
    ws = [w.astype("float64") for w in ws]
    lr0 = kw.get("learning_rate", 0.001)
    state = [dict() for _ in ws]
    for t, grads in enumerate(gs, start=1):
        for i, (w, g) in enumerate(zip(ws, grads)):
            g = g.astype("float64")
            s = state[i]
            if name == "Lion":
                b1, b2 = kw.get("beta_1", 0.9), kw.get("beta_2", 0.99)
                m = s.get("m", np.zeros_like(w))
                w -= lr0 * np.sign(m * b1 + g * (1 - b1))
                s["m"] = m * b2 + g * (1 - b2)
            elif name == "Ftrl":
                p = -kw.get("learning_rate_power", -0.5)
                l1, l2 = kw.get("l1_regularization_strength", 0.0), kw.get("l2_regularization_strength", 0.0)
                shrink, beta = kw.get("l2_shrinkage_regularization_strength", 0.0), kw.get("beta", 0.0)
                acc = s.get("acc", np.full_like(w, kw.get("initial_accumulator_value", 0.1)))
                lin = s.get("lin", np.zeros_like(w))
                l2r = l2 + beta / (2 * lr0)
                new_acc = acc + g * g
                lin = lin + (g + 2 * shrink * w) - (new_acc ** p - acc ** p) / lr0 * w
                quad = new_acc ** p / lr0 + 2 * l2r
                w[...] = (np.clip(lin, -l1, l1) - lin) / quad
                s["acc"], s["lin"] = new_acc, lin
            elif name == "Lamb":
                b1, b2, eps = kw.get("beta_1", 0.9), kw.get("beta_2", 0.999), kw.get("epsilon", 1e-7)
                m = s.get("m", np.zeros_like(w)) * b1 + g * (1 - b1)
                v = s.get("v", np.zeros_like(w)) * b2 + g * g * (1 - b2)
                upd = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
                wn, un = np.linalg.norm(w), np.linalg.norm(upd)
                ratio = wn / un if wn > 0 and un > 0 else 1.0
                w -= ratio * lr0 * upd
                s["m"], s["v"] = m, v
            elif name == "Adafactor":
                d, e1, e2 = kw.get("beta_2_decay", -0.8), kw.get("epsilon_1", 1e-30), kw.get("epsilon_2", 1e-3)
                clip = kw.get("clip_threshold", 1.0)
                rho = min(lr0, 1 / np.sqrt(t))
                alpha = max(e2, np.sqrt(np.mean(w * w))) * rho
                sq = g * g + e1
                b2 = 1 - t ** d
                if w.ndim >= 2:
                    r = s.get("r", np.zeros(w.shape[:-1])) * b2 + (1 - b2) * sq.mean(-1)
                    c = s.get("c", np.zeros(w.shape[:-2] + w.shape[-1:])) * b2 + (1 - b2) * sq.mean(-2)
                    v = (r / r.mean(-1, keepdims=True))[..., None] * c[..., None, :]
                    s["r"], s["c"] = r, c
                else:
                    v = s.get("v", np.zeros_like(w)) * b2 + (1 - b2) * sq
                    s["v"] = v
                u = g / np.sqrt(v)
                u = u / max(1.0, np.sqrt(np.mean(u * u)) / clip)
                w -= alpha * u
    return ws


CASES = [
    ("Lion", {"learning_rate": 0.01}), ("Lion", {"learning_rate": 0.02, "beta_1": 0.8, "beta_2": 0.95}),
    ("Ftrl", {"learning_rate": 0.1}),
    ("Ftrl", {"learning_rate": 0.1, "learning_rate_power": -0.3, "l1_regularization_strength": 0.01,
              "l2_regularization_strength": 0.02, "l2_shrinkage_regularization_strength": 0.05, "beta": 0.1}),
    ("Lamb", {"learning_rate": 0.01}), ("Lamb", {"learning_rate": 0.05, "beta_1": 0.8, "epsilon": 1e-6}),
    ("Adafactor", {"learning_rate": 0.01}), ("Adafactor", {"learning_rate": 0.5, "clip_threshold": 0.5}),
]


def _ours(name, kw, ws, gs):
    opt = getattr(O, name)(**kw)
    vs = [dg.Variable(dg.tensor(w)) for w in ws]
    for grads in gs:
        opt.apply([dg.tensor(g) for g in grads], vs)
    return opt, [v.data_sync() for v in vs]


@pytest.mark.parametrize("name,kw", CASES)
def test_against_numpy_transcription(name, kw):
    ws, gs = _data()
    want = np_run(name, kw, ws, gs)
    opt, got = _ours(name, kw, ws, gs)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    assert opt.iterations == STEPS
    # the config rebuilds the same rule; the state resumes exactly
    clone = O.get(O.serialize(opt))
    assert type(clone) is type(opt) and clone.get_config() == opt.get_config()
    assert any(not np.allclose(a, w) for a, w in zip(got, ws))


@pytest.mark.parametrize("name,kw", CASES)
def test_against_keras(name, kw):
    keras = pytest.importorskip("keras")
    ws, gs = _data(1)
    kopt = getattr(keras.optimizers, name)(**kw)
    kvs = [keras.Variable(w) for w in ws]
    for grads in gs:
        kopt.apply([keras.ops.convert_to_tensor(g) for g in grads], kvs)
    _, got = _ours(name, kw, ws, gs)
    for a, kv in zip(got, kvs):
        np.testing.assert_allclose(a, keras.ops.convert_to_numpy(kv), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name", ["lion", "ftrl", "lamb", "adafactor"])
def test_names_state_round_trip_and_training(name):
    ws, gs = _data(2)
    opt = O.get(name)
    vs = [dg.Variable(dg.tensor(w)) for w in ws]
    for grads in gs[:3]:
        opt.apply([dg.tensor(g) for g in grads], vs)
    state = opt.get_weights()
    if name == "adafactor":  # factored slots: rows and columns, not the variable's shape
        assert [a.shape for a in state[1:4]] == [(), (4,), (2, 3)]
    copy = O.get(name)
    vs2 = [dg.Variable(dg.tensor(v.data_sync())) for v in vs]
    copy.set_weights(state, var_list=vs2)
    for grads in gs[3:]:
        opt.apply([dg.tensor(g) for g in grads], vs)
        copy.apply([dg.tensor(g) for g in grads], vs2)
    for a, b in zip(vs, vs2):
        np.testing.assert_array_equal(a.data_sync(), b.data_sync())
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = x @ np.asarray([[1.0], [-2.0], [0.5], [0.0]], "float32")
    m = dg.Sequential([dg.layers.Dense(1, input_shape=(4,))])
    lr = {"lion": 0.05, "ftrl": 0.5, "lamb": 0.05, "adafactor": 1.0}[name]
    m.compile(O.get({"class_name": name, "config": {"learning_rate": lr}}), "mse")
    h = m.fit(x, y, epochs=15, verbose=0).history["loss"]
    assert h[-1] < h[0] / 3


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"Lion: beta_1 must be in \(0, 1\]"):
        O.Lion(beta_1=0.0)
    with pytest.raises(ValueError, match="Ftrl: learning_rate_power must be <= 0"):
        O.Ftrl(learning_rate_power=0.5)
    with pytest.raises(ValueError, match="Ftrl: l1_regularization_strength must be >= 0"):
        O.Ftrl(l1_regularization_strength=-1)
    with pytest.raises(ValueError, match="unknown optimizer 'lions'"):
        O.get("lions")
