"""deepgpu.constraints (issue 20): Keras 3's MaxNorm / MinMaxNorm / UnitNorm / NonNeg, by name and
class, in layer configs, applied after every optimizer step."""
import numpy as np
import pytest

import deepgpu as dg
from deepgpu import constraints as C
from deepgpu import layers as L

W = np.random.default_rng(0).normal(0, 2, (5, 4)).astype("float32")
CW = np.random.default_rng(1).normal(0, 1, (3, 3, 2, 4)).astype("float32")


def _norms(w, axis):
    return np.sqrt((w.astype("float64") ** 2).sum(axis=axis, keepdims=True))


def _expected(name, w, axis=0, **kw):
    """Keras 3's formulas (keras/src/constraints/constraints.py), in float64."""
    w = w.astype("float64")
    n = _norms(w, axis)
    if name == "max_norm":
        return w * (np.clip(n, 0, kw.get("max_value", 2)) / (1e-7 + n))
    if name == "unit_norm":
        return w / (1e-7 + n)
    if name == "min_max_norm":
        lo, hi, rate = kw.get("min_value", 0.0), kw.get("max_value", 1.0), kw.get("rate", 1.0)
        return w * ((rate * np.clip(n, lo, hi) + (1 - rate) * n) / (1e-7 + n))
    return w * (w >= 0)


CASES = [("max_norm", {}), ("max_norm", {"max_value": 1.5, "axis": 1}), ("unit_norm", {}),
         ("unit_norm", {"axis": [0, 1, 2]}), ("min_max_norm", {"min_value": 2.0, "max_value": 3.0, "rate": 0.5}),
         ("min_max_norm", {"axis": [0, 1, 2]}), ("non_neg", {})]


@pytest.mark.parametrize("name,kw", CASES)
def test_values_against_keras_formulas(name, kw):
    w = CW if isinstance(kw.get("axis"), list) else W
    c = C.get({"class_name": name, "config": kw}) if kw else C.get(name)
    got = c(dg.tensor(w)).data_sync()
    axis = tuple(kw["axis"]) if isinstance(kw.get("axis"), list) else kw.get("axis", 0)
    np.testing.assert_allclose(got, _expected(name, w, axis, **{k: v for k, v in kw.items() if k != "axis"}),
                               rtol=1e-5, atol=1e-6)
    # a round trip through the config gives the same constraint
    assert type(C.get(C.serialize(c))) is type(c) and C.get(C.serialize(c)).get_config() == c.get_config()


@pytest.mark.parametrize("name,kw", CASES)
def test_values_match_keras(name, kw):
    keras = pytest.importorskip("keras")
    w = CW if isinstance(kw.get("axis"), list) else W
    cls = {"max_norm": "MaxNorm", "unit_norm": "UnitNorm", "min_max_norm": "MinMaxNorm", "non_neg": "NonNeg"}[name]
    kc = getattr(keras.constraints, cls)(**kw)
    want = keras.ops.convert_to_numpy(kc(keras.ops.convert_to_tensor(w)))
    got = getattr(C, cls)(**kw)(dg.tensor(w)).data_sync()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert getattr(C, cls)(**kw).get_config() == {k: (float(v) if isinstance(v, int) and k != "axis" else v)
                                                   for k, v in kc.get_config().items()}


def test_names_aliases_and_bad_input():
    for spelling in ("max_norm", "MaxNorm", "maxNorm", "maxnorm"):
        assert isinstance(C.get(spelling), C.MaxNorm)
    assert C.max_norm is C.MaxNorm and C.non_neg is C.NonNeg and C.unit_norm is C.UnitNorm
    assert C.min_max_norm is C.MinMaxNorm
    assert C.get(None) is None
    f = lambda w: w  # noqa: E731
    assert C.get(f) is f
    with pytest.raises(ValueError, match="unknown constraint 'max_norms'; valid names"):
        C.get("max_norms")
    with pytest.raises(TypeError, match="a constraint must be"):
        C.get(3)
    with pytest.raises(ValueError, match="MinMaxNorm: min_value .* must not exceed max_value"):
        C.MinMaxNorm(2.0, 1.0)
    with pytest.raises(ValueError, match=r"MinMaxNorm: rate must be a number in \[0.0, 1.0\]"):
        C.MinMaxNorm(rate=1.5)
    with pytest.raises(ValueError, match="MaxNorm: axis must be"):
        C.MaxNorm(axis="0")
    with pytest.raises(ValueError, match=r"Dense: kernel_constraint: unknown constraint 'nonneg2'"):
        L.Dense(2, kernel_constraint="nonneg2")


def test_layer_configs_and_applied_after_every_step(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, (64, 5)).astype("float32")
    y = rng.normal(0, 10, (64, 3)).astype("float32")
    m = dg.Sequential([L.Dense(3, input_shape=(5,), kernel_constraint="max_norm", bias_constraint="non_neg")])
    cfg = m.layers[0].get_config()
    assert cfg["kernel_constraint"] == {"class_name": "MaxNorm", "config": {"max_value": 2.0, "axis": 0}}
    assert cfg["bias_constraint"] == {"class_name": "NonNeg", "config": {}}
    seen = []

    class Check(dg.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            k, b = m.layers[0].get_weights()
            seen.append((np.linalg.norm(k, axis=0).max(), b.min()))

    m.compile(dg.optimizers.SGD(0.5), "mse")
    m.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[Check()])
    assert len(seen) == 8
    assert max(s[0] for s in seen) <= 2.0 + 1e-5 and min(s[1] for s in seen) >= 0.0
    assert max(s[0] for s in seen) > 1.9  # the constraint was active: the unconstrained kernel grows past 2
    # the constraints survive save / load
    path = str(tmp_path / "c.dgm")
    m.save(path)
    back = dg.models.load_model(path)
    assert isinstance(back.layers[0].kernel_constraint, C.MaxNorm)
    assert isinstance(back.layers[0].bias_constraint, C.NonNeg)


def test_keras_files_carry_the_constraints(tmp_path):
    # A model with constraints saves as .keras / .h5 / .weights.h5 (it was refused), and each
    # format brings the constraint back, into deepgpu and into Keras 3.
    L = dg.layers
    m = dg.Sequential([L.Input((4,)), L.Dense(5, kernel_constraint=C.MaxNorm(1.5, axis=0)),
                       L.Dense(3, kernel_constraint="non_neg", bias_constraint=C.MinMaxNorm(0.0, 2.0))])
    x = np.random.default_rng(0).standard_normal((6, 4)).astype("float32")
    m.save_weights(str(tmp_path / "w.weights.h5"))
    for ext in ("keras", "h5"):
        path = str(tmp_path / f"m.{ext}")
        m.save(path)
        back = dg.models.load_model(path)
        assert back.layers[0].get_config()["kernel_constraint"] == {"class_name": "MaxNorm",
                                                                    "config": {"max_value": 1.5, "axis": 0}}
        assert isinstance(back.layers[1].kernel_constraint, C.NonNeg)
        assert back.layers[1].get_config()["bias_constraint"]["config"]["max_value"] == 2.0
        np.testing.assert_array_equal(back.predict(x).data_sync(), m.predict(x).data_sync())
    keras = pytest.importorskip("keras")
    km = keras.saving.load_model(str(tmp_path / "m.keras"))
    assert km.layers[0].kernel_constraint.get_config() == {"max_value": 1.5, "axis": 0}
    assert type(km.layers[1].kernel_constraint).__name__ == "NonNeg"
    km.layers[1].bias_constraint = keras.constraints.MinMaxNorm(0.0, 3.0)
    km.save(str(tmp_path / "k.keras"))
    assert dg.models.load_model(str(tmp_path / "k.keras")).layers[1].bias_constraint.max_value == 3.0


def test_a_custom_constraint_function_is_refused_for_keras_by_name(tmp_path):
    @dg.register_serializable()
    def clip_e20(w):
        return w

    m = dg.Sequential([dg.layers.Input((4,)), dg.layers.Dense(2, kernel_constraint=clip_e20)])
    with pytest.raises(ValueError, match=r"layer 'dense\w*' \(Dense\): custom constraint 'clip_e20'"):
        m.save(str(tmp_path / "m.keras"))
