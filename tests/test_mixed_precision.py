"""Mixed precision as Keras 3 has it (issue 20): dtype policies, autocasting layers, float32
losses, LossScaleOptimizer, saved files, and the CPU's 16-bit primitives."""
from __future__ import annotations

import os

import numpy as np
import pytest

import deepgpu as dg
from deepgpu import backends, layers, losses, mixed_precision as mp, optimizers
from deepgpu.autograd import backward, enable_grad
from deepgpu.tensor import Tensor, Variable

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "keras")


@pytest.fixture(autouse=True)
def _float32_after():
    yield
    mp.set_global_policy(None)


@pytest.fixture
def cpu():
    with dg.use_backend("cpu"):
        yield backends.get("cpu")


# ------------------------------------------------------------------ policies
@pytest.mark.parametrize("name,compute,variable", [
    ("float32", "float32", "float32"), ("float16", "float16", "float16"), ("bfloat16", "bfloat16", "bfloat16"),
    ("float64", "float64", "float64"), ("mixed_float16", "float16", "float32"),
    ("mixed_bfloat16", "bfloat16", "float32")])
def test_policy_names(name, compute, variable):
    p = mp.DTypePolicy(name)
    assert (p.name, p.compute_dtype, p.variable_dtype) == (name, compute, variable)
    assert repr(p) == f'<DTypePolicy "{name}">' and p == mp.Policy(name) and p.get_config() == {"name": name}
    assert mp.get(mp.serialize(p)) == p
    assert mp.serialize(p) == {"module": "keras", "class_name": "DTypePolicy", "config": {"name": name},
                               "registered_name": None}


def test_global_policy_and_its_spellings():
    assert mp.global_policy().name == "float32"
    mp.set_global_policy("mixed_float16")
    assert mp.global_policy() == mp.DTypePolicy("mixed_float16") == dg.dtype_policy()
    assert layers.Dense(2).dtype_policy.name == "mixed_float16"
    dg.set_dtype_policy(dg.DTypePolicy("mixed_bfloat16"))
    assert dg.dtype_policies.get(None).name == "mixed_bfloat16"
    mp.set_global_policy(None)
    assert mp.global_policy().name == "float32"


def test_bad_policy_names_say_which_are_valid():
    with pytest.raises(ValueError, match="mixed_float16.*mixed_bfloat16"):
        mp.DTypePolicy("mixed_float8")
    with pytest.raises(ValueError, match="valid policies"):
        mp.set_global_policy("half")
    with pytest.raises(TypeError, match="must be a string"):
        mp.DTypePolicy(16)
    with pytest.raises(ValueError, match="valid policies"):
        layers.Dense(2, dtype="mixed_float32")
    with pytest.raises(ValueError, match="DTypePolicy"):
        mp.get({"class_name": "QuantizedDTypePolicy", "config": {"mode": "int8"}})


def test_layer_dtype_properties_and_config():
    d = layers.Dense(3, dtype="mixed_float16")
    assert (d.dtype, d.compute_dtype, d.variable_dtype) == ("float32", "float16", "float32")
    assert d.dtype_policy == mp.DTypePolicy("mixed_float16")
    assert layers.Dense(3, dtype=mp.DTypePolicy("mixed_bfloat16")).compute_dtype == "bfloat16"
    cfg = d.get_config()
    assert cfg["dtype"] == "mixed_float16"
    assert layers.Dense.from_config(cfg).dtype_policy.name == "mixed_float16"
    assert layers.Dense(3).get_config()["dtype"] == "float32"
    assert dg.Input((3,), dtype="int32").dtype == "int32"


# ------------------------------------------------------------- autocasting
def test_dense_computes_in_float16_and_its_float32_kernel_gets_float32_gradients(cpu):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 5)).astype(np.float32)
    d = layers.Dense(4, activation="relu", dtype="mixed_float16")
    ref = layers.Dense(4, activation="relu")
    with enable_grad():
        y = d(dg.tensor(x))
        loss = dg.mean(dg.cast(y, "float32") ** 2)
    assert y.dtype == "float16" and d.kernel.dtype == "float32" and isinstance(d.kernel, Variable)
    gk, gb = backward(loss, [d.kernel, d.bias])
    assert gk.dtype == np.float32 and gb.dtype == np.float32
    ref.build((None, 5))
    ref.set_weights(d.get_weights())
    with enable_grad():
        y32 = ref(dg.tensor(x))
        rk, rb = backward(dg.mean(y32 ** 2), [ref.kernel, ref.bias])
    np.testing.assert_allclose(y.data_sync().astype(np.float32), y32.data_sync(), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(gk, rk, rtol=1e-2, atol=1e-3)
    np.testing.assert_allclose(gb, rb, rtol=1e-2, atol=1e-3)


def test_float32_softmax_after_mixed_layers(cpu):
    mp.set_global_policy("mixed_float16")
    inp = dg.Input((4,))
    h = layers.Dense(6)(inp)
    out = layers.Activation("softmax", dtype="float32")(h)
    assert h.dtype == "float16" and out.dtype == "float32"
    m = dg.Model(inp, out)
    y = m.predict(np.ones((2, 4), np.float32))
    assert y.dtype == "float32"
    np.testing.assert_allclose(y.data_sync().sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("make", [lambda: layers.BatchNormalization(), lambda: layers.LayerNormalization(),
                                  lambda: layers.GroupNormalization(groups=2)], ids=["bn", "ln", "gn"])
def test_normalization_statistics_in_float32(cpu, make):
    """Keras casts 16-bit inputs to float32 for the statistics; gamma / beta / moving stats stay float32."""
    mp.set_global_policy("mixed_float16")
    layer = make()
    x = (np.random.default_rng(1).normal(size=(16, 4)) * 300 + 2000).astype(np.float32)
    x16 = dg.cast(dg.tensor(x), "float16")
    y = layer(x16, training=True)
    assert y.dtype == "float16" and {w.dtype for w in layer.weights} == {"float32"}
    mp.set_global_policy(None)
    ref = make()
    ref.build((None, 4))
    y32 = ref(dg.tensor(x16.data_sync().astype(np.float32)), training=True)
    np.testing.assert_allclose(y.data_sync().astype(np.float32), y32.data_sync(), atol=4e-3, rtol=4e-3)
    if hasattr(layer, "moving_mean"):
        np.testing.assert_allclose(layer.moving_mean.data_sync(), ref.moving_mean.data_sync(), rtol=1e-6)


def _model(kind):
    dg.set_seed(0)
    if kind == "dense":
        return dg.Sequential([layers.Input((6,)), layers.Dense(16, activation="relu"), layers.Dense(3),
                              layers.Activation("softmax", dtype="float32")]), (6,)
    if kind == "conv":
        return dg.Sequential([layers.Input((8, 8, 2)), layers.Conv2D(8, 3, activation="relu"),
                              layers.BatchNormalization(), layers.MaxPooling2D(), layers.Flatten(),
                              layers.Dropout(0.1),
                              layers.Dense(3, activation="softmax")]), (8, 8, 2)
    return dg.Sequential([layers.Input((5, 3)), layers.Conv1D(8, 2, padding="same"), layers.LSTM(8, return_sequences=True),
                          layers.GRU(8), layers.LayerNormalization(), layers.Dense(3, activation="softmax")]), (5, 3)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("kind", ["dense", "conv", "rnn"])
def test_small_models_train_on_the_cpu(cpu, policy, kind):
    mp.set_global_policy(policy)
    model, shape = _model(kind)
    mp.set_global_policy(None)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64,) + shape).astype(np.float32)
    y = (x.reshape(64, -1)[:, :3].argmax(axis=1)).astype(np.int32)
    model.compile(optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"])
    assert isinstance(model.optimizer, mp.LossScaleOptimizer) == (policy == "mixed_float16")
    h = model.fit(x, y, epochs=6, batch_size=16, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0] - 0.05, h.history["loss"]
    compute = mp.DTypePolicy(policy).compute_dtype
    hidden = [l for l in model.layers if l.compute_dtype == compute]
    assert hidden and {w.dtype for w in model.weights} == {"float32"}
    out = model.layers[0](dg.tensor(x[:4]))
    assert out.dtype == compute
    assert np.isfinite(model.predict(x[:4]).data_sync().astype(np.float32)).all()


def test_subclassed_model_under_mixed_float16(cpu):
    class Net(dg.Model):
        def __init__(self):
            super().__init__()
            self.hidden, self.logits = layers.Dense(8, activation="relu"), layers.Dense(3)
            self.probs = layers.Activation("softmax", dtype="float32")

        def call(self, x, training=None):
            h = self.hidden(x)
            assert h.dtype == "float16"
            return self.probs(self.logits(h))

    mp.set_global_policy("mixed_float16")
    net = Net()
    mp.set_global_policy(None)
    net.compile(optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(64, 5)).astype(np.float32)
    h = net.fit(x, (x[:, 0] > 0).astype(np.int32), epochs=4, verbose=0)
    assert isinstance(net.optimizer, mp.LossScaleOptimizer) and h.history["loss"][-1] < h.history["loss"][0]
    assert net.predict(x).dtype == "float32"


# --------------------------------------------------------- LossScaleOptimizer
def _vars(seed=0):
    rng = np.random.default_rng(seed)
    return [Variable(dg.tensor(rng.normal(size=s).astype(np.float32)), name=f"w{i}")
            for i, s in enumerate([(3, 2), (2,)])]


def _grads(step, bad):
    rng = np.random.default_rng(100 + step)
    gs = [rng.normal(size=s).astype(np.float32) for s in [(3, 2), (2,)]]
    if bad:
        gs[1][0] = np.inf if step % 2 else np.nan
    return gs


BAD = {1, 4, 5}


def test_loss_scale_skips_bad_steps_halves_and_grows(cpu):
    vs = _vars()
    opt = mp.LossScaleOptimizer(optimizers.SGD(0.1), initial_scale=8.0, dynamic_growth_steps=2)
    scale = 8.0
    # 0 ok (8), 1 bad (halved: 4), 2 ok, 3 ok (second in a row: 8), 4 bad (4), 5 bad (2), 6 ok, 7 ok (4)
    for step in range(8):
        before = [v.data_sync().copy() for v in vs]
        gs = _grads(step, step in BAD)
        opt.apply_gradients([(dg.tensor(g * scale), v) for g, v in zip(gs, vs)])
        if step in BAD:
            for v, b in zip(vs, before):
                np.testing.assert_array_equal(v.data_sync(), b)
        else:
            for v, b, g in zip(vs, before, gs):
                np.testing.assert_allclose(v.data_sync(), b - 0.1 * g, rtol=1e-6)
        scale = float(opt.dynamic_scale.data_sync())
        assert scale == [8.0, 4.0, 4.0, 8.0, 4.0, 2.0, 2.0, 4.0][step]
    assert int(opt.step_counter.data_sync()) == 0
    assert opt.iterations == 5  # the inner optimizer counts the applied steps only, as Keras


def test_loss_scale_device_path_selects_back_without_host_reads(cpu):
    """The path of a device backend (and of a recorded step): the update runs, where() keeps the old values."""
    eager_vs, dev_vs = _vars(), _vars()
    eager = mp.LossScaleOptimizer(optimizers.Adam(0.05), initial_scale=8.0, dynamic_growth_steps=2)
    dev = mp.LossScaleOptimizer(optimizers.Adam(0.05), initial_scale=8.0, dynamic_growth_steps=2)
    dev._host_check = False  # the path a CUDA backend takes
    B = cpu
    for step in range(6):
        gs = _grads(step, step in BAD)
        s = float(eager.dynamic_scale.data_sync()) if eager.dynamic_scale is not None else 8.0
        eager.apply_gradients([(dg.tensor(g * s), v) for g, v in zip(gs, eager_vs)])
        grads = [(Tensor(B.asarray(g * s), B), v) for g, v in zip(gs, dev_vs)]
        B.capturing = True  # any host read now raises
        try:
            dev.apply_gradients(grads)
        finally:
            B.capturing = False
        assert float(dev.dynamic_scale.data_sync()) == float(eager.dynamic_scale.data_sync())
        assert int(dev.step_counter.data_sync()) == int(eager.step_counter.data_sync())
    # Variables agree except for Adam's bias correction: the device path counts skipped steps too.
    assert dev.iterations == 6 and eager.iterations == 6 - len(BAD & set(range(6)))
    for a, b in zip(dev_vs, eager_vs):
        assert np.isfinite(a.data_sync()).all()
        np.testing.assert_allclose(a.data_sync(), b.data_sync(), atol=0.06)


def test_loss_scale_matches_keras():
    keras = pytest.importorskip("keras")
    kvs = [keras.Variable(v.data_sync()) for v in _vars()]
    kopt = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(0.05), initial_scale=8.0,
                                               dynamic_growth_steps=2)
    with dg.use_backend("cpu"):
        vs = _vars()
        opt = mp.LossScaleOptimizer(optimizers.Adam(0.05), initial_scale=8.0, dynamic_growth_steps=2)
        for step in range(8):
            gs = _grads(step, step in BAD)
            s = 8.0 if opt.dynamic_scale is None else float(opt.dynamic_scale.data_sync())
            assert s == float(np.asarray(kopt.dynamic_scale)) if kopt.built else s == 8.0
            opt.apply_gradients([(dg.tensor(g * s), v) for g, v in zip(gs, vs)])
            kopt.apply([keras.ops.convert_to_tensor(g * s) for g in gs], kvs)
        assert float(opt.dynamic_scale.data_sync()) == float(np.asarray(kopt.dynamic_scale))
        assert int(opt.step_counter.data_sync()) == int(np.asarray(kopt.step_counter))
        assert opt.iterations == int(np.asarray(kopt.iterations))
        for v, k in zip(vs, kvs):
            np.testing.assert_allclose(v.data_sync(), np.asarray(k), rtol=1e-5, atol=1e-6)


def test_loss_scale_arguments_and_state():
    with pytest.raises(ValueError, match="dynamic=False"):
        mp.LossScaleOptimizer(optimizers.SGD(), dynamic=False)
    with pytest.raises(ValueError, match="clipnorm"):
        mp.LossScaleOptimizer(optimizers.SGD(), clipnorm=1.0)
    with pytest.raises(ValueError, match="initial_scale"):
        mp.LossScaleOptimizer(optimizers.SGD(), initial_scale=0)
    with pytest.raises(ValueError, match="dynamic_growth_steps"):
        mp.LossScaleOptimizer(optimizers.SGD(), dynamic_growth_steps=0)
    with dg.use_backend("cpu"):
        vs = _vars()
        opt = mp.LossScaleOptimizer("adam", initial_scale=64.0, dynamic_growth_steps=3)
        for step in range(5):
            opt.apply_gradients([(dg.tensor(g), v) for g, v in zip(_grads(step, step == 2), vs)])
        state = opt.get_weights()
        cfg = optimizers.serialize(opt)
        twin = optimizers.get(cfg)
        assert isinstance(twin, mp.LossScaleOptimizer) and isinstance(twin.inner_optimizer, optimizers.Adam)
        assert (twin.initial_scale, twin.dynamic_growth_steps) == (64.0, 3)
        twin.set_weights(state)  # before any step: kept until the variables are known
        vs2 = [Variable(dg.tensor(v.data_sync())) for v in vs]
        twin.build(vs2)
        assert float(twin.dynamic_scale.data_sync()) == float(opt.dynamic_scale.data_sync()) == 32.0
        assert int(twin.step_counter.data_sync()) == int(opt.step_counter.data_sync()) == 2
        g = _grads(9, False)
        opt.apply_gradients([(dg.tensor(a), v) for a, v in zip(g, vs)])
        twin.apply_gradients([(dg.tensor(a), v) for a, v in zip(g, vs2)])
        for a, b in zip(vs, vs2):
            np.testing.assert_allclose(a.data_sync(), b.data_sync(), rtol=1e-6)
        assert float(twin.dynamic_scale.data_sync()) == 64.0  # the third finite step in a row doubles it


def test_model_saves_its_policy_and_loss_scale(cpu, tmp_path):
    mp.set_global_policy("mixed_float16")
    model, shape = _model("dense")
    mp.set_global_policy(None)
    model.compile(mp.LossScaleOptimizer(optimizers.Adam(1e-2), initial_scale=256.0, dynamic_growth_steps=3),
                  "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(32, 6)).astype(np.float32)
    y = np.arange(32) % 3
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert float(model.optimizer.dynamic_scale.data_sync()) == 512.0
    path = str(tmp_path / "m.dgm")
    model.save(path)
    back = dg.load_model(path)
    assert [l.dtype_policy.name for l in back.layers] == ["mixed_float16", "mixed_float16", "float32"]
    assert isinstance(back.optimizer, mp.LossScaleOptimizer)
    assert float(back.optimizer.get_weights()[-1]) == 512.0 and int(back.optimizer.get_weights()[-2]) == 1
    np.testing.assert_array_equal(back.predict(x).data_sync(), model.predict(x).data_sync())


# ------------------------------------------------------------- Keras files
def test_keras_mixed_float16_convnet_loads_and_predicts_as_keras():
    """tests/fixtures/keras/make_mixed_fixture.py: trained by Keras 3.15 under mixed_float16."""
    pytest.importorskip("h5py")
    with np.load(os.path.join(FIXTURE, "mixed_convnet.npz")) as z:
        x, y = z["x"], z["y"]
    for name in ("mixed_convnet.keras", "mixed_convnet.h5"):
        model = dg.load_model(os.path.join(FIXTURE, name))
        assert model.get_layer("conv2d").dtype_policy.name == "mixed_float16"
        assert model.get_layer("probs").dtype_policy.name == "float32"
        p = model.predict(x)
        assert p.dtype == "float32"
        # float16 activations: Keras (TF) rounds at other places than deepgpu's float32-compute-and-round
        np.testing.assert_allclose(p.data_sync(), y, atol=2e-3)
        assert (p.data_sync().argmax(1) == y.argmax(1)).mean() >= 0.9


def test_keras_mixed_bfloat16_dense_loads():
    pytest.importorskip("ml_dtypes")
    with np.load(os.path.join(FIXTURE, "mixed_bf16_dense.npz")) as z:
        x, y = z["x"], z["y"]
    model = dg.load_model(os.path.join(FIXTURE, "mixed_bf16_dense.keras"))
    p = model.predict(x)
    assert p.dtype == "bfloat16"
    np.testing.assert_allclose(p.data_sync().astype(np.float32), y, atol=0.04)


def test_keras_reads_deepgpu_mixed_models(cpu, tmp_path):
    keras = pytest.importorskip("keras")
    mp.set_global_policy("mixed_float16")
    model, _ = _model("dense")
    mp.set_global_policy(None)
    path = str(tmp_path / "m.keras")
    model.save(path)
    k = keras.models.load_model(path)
    assert [l.dtype_policy.name for l in k.layers] == ["mixed_float16", "mixed_float16", "float32"]
    x = np.random.default_rng(0).normal(size=(8, 6)).astype(np.float32)
    np.testing.assert_allclose(k.predict(x, verbose=0), model.predict(x).data_sync(), atol=2e-3)


def test_tfjs_export_is_the_float32_model(cpu, tmp_path):
    import json
    from deepgpu.io import tfjs
    mp.set_global_policy("mixed_float16")
    model, _ = _model("dense")
    mp.set_global_policy(None)
    tfjs.save_tfjs(model, str(tmp_path / "t"))
    doc = json.load(open(tmp_path / "t" / "model.json"))
    assert {l["config"].get("dtype") for l in doc["modelTopology"]["model_config"]["config"]["layers"]} == {"float32"}
    back = tfjs.load_tfjs(str(tmp_path / "t"))
    x = np.random.default_rng(0).normal(size=(8, 6)).astype(np.float32)
    np.testing.assert_allclose(back.predict(x).data_sync(), model.predict(x).data_sync(), atol=2e-3)


# ------------------------------------------------------------------ backends
def test_cpu_heavy_primitives_compute_in_float32_and_round(cpu):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(16, 64)).astype(np.float16)
    b = rng.normal(size=(64, 8)).astype(np.float16)
    got = cpu.matmul(a, b)
    want = (a.astype(np.float32) @ b.astype(np.float32)).astype(np.float16)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, want)
    x = rng.normal(size=(2, 6, 6, 16)).astype(np.float16)
    k = rng.normal(size=(3, 3, 16, 16)).astype(np.float16)
    got = cpu.conv2d(x, k)
    want = cpu.conv2d(x.astype(np.float32), k.astype(np.float32)).astype(np.float16)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, want)


def test_float16_conversion_matches_numpy(cpu):
    """backends/half.convert (the C kernels' F16C conversion) rounds as NumPy: to nearest even,
    overflow to inf, subnormals, signed zeros, NaN."""
    from deepgpu.backends.half import convert
    rng = np.random.default_rng(0)
    a = rng.normal(size=40000).astype(np.float32) * np.float32(10) ** rng.integers(-9, 6, 40000).astype(np.float32)
    a[:12] = [np.inf, -np.inf, np.nan, 65504, 65520, 65519.99, 6e-8, 3e-8, 2.98e-8, -0.0, 1e-40, 2049.0]
    with np.errstate(over="ignore"):
        want = a.astype(np.float16)
    got = convert(a, np.dtype("float16"))
    np.testing.assert_array_equal(got.view(np.uint16)[3:], want.view(np.uint16)[3:])
    assert np.isnan(got[2]) and got[0] == np.inf and got[1] == -np.inf
    np.testing.assert_array_equal(convert(want, np.dtype("float32")), want.astype(np.float32))
    np.testing.assert_array_equal(cpu.cast(a, "float16")[3:], want[3:])


def test_bfloat16_without_ml_dtypes_names_the_extra(monkeypatch):
    import sys
    from deepgpu.backends import half
    monkeypatch.setattr(half, "_bf16", None)
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)
    with pytest.raises(ImportError, match=r'pip install "deepgpu\[mixed\]"'):
        half.bfloat16()


# --------------------------------------------------------- emulated CUDA
def test_mixed_float16_step_on_the_emulated_cuda_path_reads_nothing_back():
    from deepgpu.testing.emulation import emulated_cuda
    mp.set_global_policy("mixed_float16")
    try:
        with emulated_cuda() as B:
            dg.set_seed(0)
            shape = (6,)  # small: every launch is emulated in Python
            model = dg.Sequential([layers.Input(shape), layers.Dense(8, activation="relu"),
                                   layers.BatchNormalization(), layers.Dense(3),
                                   layers.Activation("softmax", dtype="float32")])
            model.compile("adam", "sparse_categorical_crossentropy")
            x = np.random.default_rng(0).normal(size=(16,) + shape).astype(np.float32)
            xb, yb = [Tensor(B.asarray(x), B)], [Tensor(B.asarray((np.arange(16) % 3).astype(np.int32)), B)]
            model._train_batch(xb, yb, None)  # the first step builds the slots and the scale
            before = [w.data_sync().copy() for w in model.trainable_weights]
            B.capturing = True  # as in a recording: a host read raises
            try:
                with losses.labels_checked():
                    model._train_batch(xb, yb, None)
            finally:
                B.capturing = False
            opt = model.optimizer
            assert isinstance(opt, mp.LossScaleOptimizer) and opt.iterations == 2
            assert float(opt.dynamic_scale.data_sync()) == 2.0 ** 15 and int(opt.step_counter.data_sync()) == 2
            assert any(np.abs(w.data_sync() - b).max() > 0 for w, b in zip(model.trainable_weights, before))
            assert model.layers[0](xb[0]).dtype == "float16"
    finally:
        mp.set_global_policy(None)
