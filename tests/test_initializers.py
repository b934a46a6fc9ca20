"""Initializers (statistics, fans, names, configs) and regularizers."""
import math

import numpy as np
import pytest

import deepgpu as dg
from deepgpu import initializers as I
from deepgpu import layers, regularizers
from deepgpu.testing import assert_close, check_gradients


def draw(init, shape, backend="cpu"):
    with dg.use_backend(backend):
        t = init(shape)
        assert t.shape == tuple(shape) and t.dtype == "float32"
        return t.data_sync().astype(np.float64)


def test_constant_initializers(backend):
    assert (draw(I.Zeros(), (3, 4), backend) == 0).all()
    assert (draw(I.Ones(), (5,), backend) == 1).all()
    assert (draw(I.Constant(2.5), (2, 2), backend) == 2.5).all()
    assert_close(draw(I.Identity(2.0), (3, 4), backend), 2.0 * np.eye(3, 4))
    assert I.Zeros()((2,), "float64").dtype == "float64"


def test_random_initializers_statistics(backend):
    x = draw(I.RandomNormal(1.0, 0.5), (300, 200), backend)
    assert abs(x.mean() - 1.0) < 0.01 and abs(x.std() - 0.5) < 0.01
    x = draw(I.RandomUniform(-2.0, 1.0), (300, 200), backend)
    assert x.min() >= -2.0 and x.max() < 1.0 and abs(x.mean() + 0.5) < 0.02
    x = draw(I.TruncatedNormal(0.0, 2.0), (300, 200), backend)
    assert np.abs(x).max() <= 4.0 + 1e-6
    assert abs(x.std() - 2.0 * 0.87962566103423978) < 0.03


def test_compute_fans():
    assert I.compute_fans((5,)) == (5, 5)
    assert I.compute_fans((4, 7)) == (4, 7)
    assert I.compute_fans((3, 3, 16, 32)) == (144, 288)


@pytest.mark.parametrize("init,fan,scale,dist", [
    (I.GlorotUniform(), "avg", 1.0, "uniform"), (I.GlorotNormal(), "avg", 1.0, "truncated"),
    (I.HeNormal(), "in", 2.0, "truncated"), (I.HeUniform(), "in", 2.0, "uniform"),
    (I.LecunNormal(), "in", 1.0, "truncated"), (I.LecunUniform(), "in", 1.0, "uniform"),
    (I.VarianceScaling(3.0, "fan_out", "untruncated_normal"), "out", 3.0, "normal"),
    (I.VarianceScaling(0.5, "fan_out", "uniform"), "out", 0.5, "uniform"),
])
@pytest.mark.parametrize("shape", [(300, 200), (3, 3, 40, 60)])
def test_variance_scaling_statistics(init, fan, scale, dist, shape):
    fan_in, fan_out = I.compute_fans(shape)
    n = {"in": fan_in, "out": fan_out, "avg": (fan_in + fan_out) / 2}[fan]
    std = math.sqrt(scale / n)
    x = draw(init, shape)
    assert abs(x.mean()) < 0.02 * std * 10
    assert abs(x.std() - std) < 0.03 * std, (x.std(), std)
    if dist == "uniform":
        assert np.abs(x).max() <= math.sqrt(3) * std + 1e-6
    if dist == "truncated":
        assert np.abs(x).max() <= 2 * std / 0.87962566103423978 + 1e-6


def test_seeded_initializer_repeats_and_same_on_every_backend(backend):
    a = draw(I.GlorotUniform(seed=7), (4, 5))
    assert_close(a, draw(I.GlorotUniform(seed=7), (4, 5)))
    assert_close(a, draw(I.GlorotUniform(seed=7), (4, 5), backend))
    assert not np.allclose(a, draw(I.GlorotUniform(seed=8), (4, 5)))


@pytest.mark.parametrize("name,cls", [
    ("glorot_uniform", I.GlorotUniform), ("GlorotUniform", I.GlorotUniform), ("glorotUniform", I.GlorotUniform),
    ("he_normal", I.HeNormal), ("heNormal", I.HeNormal), ("HeUniform", I.HeUniform),
    ("lecun_normal", I.LecunNormal), ("varianceScaling", I.VarianceScaling),
    ("VarianceScaling", I.VarianceScaling), ("randomNormal", I.RandomNormal),
    ("random_uniform", I.RandomUniform), ("truncatedNormal", I.TruncatedNormal), ("zeros", I.Zeros),
    ("ones", I.Ones), ("Zeros", I.Zeros), ("constant", I.Constant), ("glorot_normal", I.GlorotNormal),
])
def test_get_by_name(name, cls):
    assert type(I.get(name)) is cls


def test_get_serialize_dicts_and_errors():
    vs = I.VarianceScaling(2.0, "fan_avg", "uniform", seed=1)
    d = I.serialize(vs)
    assert d == {"class_name": "VarianceScaling",
                 "config": {"scale": 2.0, "mode": "fan_avg", "distribution": "uniform", "seed": 1}}
    assert I.get(d).get_config() == vs.get_config()
    # TF.js's spelling of the config
    tfjs = I.get({"class_name": "VarianceScaling",
                  "config": {"scale": 1.0, "mode": "fanIn", "distribution": "normal", "seed": None}})
    assert (tfjs.mode, tfjs.distribution) == ("fan_in", "truncated_normal")
    assert I.get({"class_name": "RandomNormal", "config": {"mean": 1.0, "stddev": 2.0, "seed": None}}).stddev == 2.0
    assert type(I.get(I.HeNormal)) is I.HeNormal
    f = lambda shape, dtype="float32": dg.zeros(shape, dtype)  # noqa: E731
    assert I.get(f) is f
    with pytest.raises(ValueError, match="unknown initializer 'glorot'.*glorot_uniform.*he_normal"):
        I.get("glorot")
    with pytest.raises(ValueError, match="mode"):
        I.VarianceScaling(mode="fan")
    with pytest.raises(ValueError, match="distribution"):
        I.VarianceScaling(distribution="gamma")


def test_layer_uses_initializer():
    d = layers.Dense(3, kernel_initializer="ones", bias_initializer=I.Constant(0.5))
    d(dg.zeros((1, 4)))
    k, b = d.get_weights()
    assert (k == 1).all() and (b == 0.5).all()


# ---------------------------------------------------------------- regularizers

def test_regularizer_values_and_gradients():
    w = np.array([[1.0, -2.0], [3.0, -0.5]])
    t = dg.tensor(w, "float64")
    assert float(regularizers.L1(0.1)(t).data_sync()) == pytest.approx(0.1 * 6.5)
    assert float(regularizers.L2(0.1)(t).data_sync()) == pytest.approx(0.1 * 14.25)
    assert float(regularizers.L1L2(0.1, 0.2)(t).data_sync()) == pytest.approx(0.65 + 0.2 * 14.25)
    assert float(regularizers.L1L2()(t).data_sync()) == 0.0
    check_gradients(regularizers.L1L2(0.3, 0.7), [w])


def test_regularizer_get_and_serialize():
    assert isinstance(regularizers.get("l1"), regularizers.L1)
    assert isinstance(regularizers.get("l2"), regularizers.L2)
    r = regularizers.get("l1_l2")
    assert (r.l1, r.l2) == (0.01, 0.01)
    assert isinstance(regularizers.get("l1l2"), regularizers.L1L2)
    assert regularizers.get(None) is None
    r = regularizers.L1L2(0.5, 0.25)
    assert regularizers.get(regularizers.serialize(r)).get_config() == {"l1": 0.5, "l2": 0.25}
    assert regularizers.get({"class_name": "L2", "config": {"l2": 0.3}}).l2 == pytest.approx(0.3)
    assert regularizers.l1_l2(l1=0.1).get_config() == {"l1": 0.1, "l2": 0.01}
    with pytest.raises(ValueError, match="unknown regularizer 'l3'.*l1"):
        regularizers.get("l3")
    with pytest.raises(ValueError, match="non-negative"):
        regularizers.L2(-1)


def test_activity_regularizer_adds_a_loss():
    d = layers.Dense(2, kernel_initializer="ones", activity_regularizer=regularizers.L1(0.1))
    y = d(dg.ones((3, 4)))
    assert len(d.losses) == 1
    # Divided by the batch size (3), as Keras 3 does.
    assert float(d.losses[0].data_sync()) == pytest.approx(0.1 * np.abs(y.data_sync()).sum() / 3)
    assert layers.Dense.from_config(d.get_config()).activity_regularizer.get_config() == {"l1": pytest.approx(0.1)}
