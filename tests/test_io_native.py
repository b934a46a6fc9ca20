"""deepgpu's own model file: round trips, exact resume of training, atomic writes, bad files."""
import json
import os
import zipfile

import numpy as np
import pytest

import deepgpu as dg
from deepgpu import Input, Model, Sequential, zoo
from deepgpu.callbacks import ModelCheckpoint
from deepgpu.io import ModelFileError
from deepgpu.layers import Add, BatchNormalization, Concatenate, Conv2D, Dense, Dropout, Flatten, Layer


def _xy(n=64, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype("float32")
    y = np.eye(k, dtype="float32")[rng.integers(0, k, n)]
    return x, y


def _mlp(seed=0):
    dg.set_seed(seed)
    m = Sequential([Dense(16, activation="relu", input_shape=(6,)), Dropout(0.2), Dense(3, activation="softmax")])
    m.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return m


def _functional(seed=0):
    dg.set_seed(seed)
    inp = Input((6,))
    a = Dense(8, activation="relu")(inp)
    b = Dense(8, activation="tanh")(inp)
    h = BatchNormalization()(Add()([a, b]))
    out = Dense(3, activation="softmax")(Concatenate()([h, a]))
    m = Model(inp, out)
    m.compile(optimizer=dg.optimizers.RMSprop(0.01, momentum=0.5), loss="categorical_crossentropy",
              metrics=["accuracy", dg.metrics.Precision(name="prec")])
    return m


@pytest.mark.parametrize("make", [_mlp, _functional])
def test_save_load_same_predictions_config_and_optimizer(backend, tmp_path, make):
    x, y = _xy()
    m = make()
    m.fit(x, y, epochs=2, batch_size=16, verbose=0)
    path = tmp_path / "m.dgm"
    m.save(path)
    m2 = dg.models.load_model(path)
    assert type(m2) is type(m) and m2.name == m.name
    assert [l.name for l in m2.layers] == [l.name for l in m.layers]
    np.testing.assert_array_equal(m2.predict(x, verbose=0).data_sync(), m.predict(x, verbose=0).data_sync())
    assert type(m2.optimizer) is type(m.optimizer)
    assert m2.optimizer.iterations == m.optimizer.iterations == 8
    for a, b in zip(m2.optimizer.get_weights(), m.optimizer.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert m2.get_config() == m.get_config()


def test_resume_is_exactly_an_uninterrupted_run(backend, tmp_path):
    """2 epochs, save, load in a fresh model, 2 more == 4 epochs in one go (same seeds)."""
    x, y = _xy(96)

    def run(split):
        m = _mlp(seed=3)
        dg.set_seed(10)
        h1 = m.fit(x, y, epochs=2, batch_size=16, verbose=0).history["loss"]
        if split:
            m.save(tmp_path / "ckpt.dgm")
            m = dg.models.load_model(tmp_path / "ckpt.dgm")
        dg.set_seed(11)
        h2 = m.fit(x, y, epochs=2, batch_size=16, verbose=0).history["loss"]
        return h1 + h2, m.get_weights()

    losses_a, w_a = run(False)
    losses_b, w_b = run(True)
    assert losses_a == losses_b
    for a, b in zip(w_a, w_b):
        np.testing.assert_array_equal(a, b)


def test_uncompiled_and_include_optimizer_false(tmp_path):
    m = Sequential([Dense(4, input_shape=(3,))])
    m.save(tmp_path / "a.dgm")
    m2 = dg.models.load_model(tmp_path / "a.dgm")
    assert not m2.compiled
    m = _mlp()
    m.fit(*_xy(), epochs=1, verbose=0)
    m.save(tmp_path / "b.dgm", include_optimizer=False)
    assert "optimizer.npz" not in zipfile.ZipFile(tmp_path / "b.dgm").namelist()
    assert not dg.models.load_model(tmp_path / "b.dgm").compiled
    m3 = dg.models.load_model(tmp_path / "b.dgm", compile=False)
    np.testing.assert_array_equal(m3.get_weights()[0], m.get_weights()[0])


def test_seed_convnet_round_trip(tmp_path):
    m = zoo.convnet()
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    m.save(tmp_path / "c.dgm")
    m2 = dg.models.load_model(tmp_path / "c.dgm")
    assert m2.count_params() == 594_922
    np.testing.assert_array_equal(m2.predict(x, verbose=0).data_sync(), m.predict(x, verbose=0).data_sync())


def test_save_weights_load_weights(backend, tmp_path):
    x, _ = _xy()
    a, b = _functional(1), _functional(2)
    assert not np.array_equal(a.get_weights()[0], b.get_weights()[0])
    a.save_weights(tmp_path / "w.dgw")
    b.load_weights(tmp_path / "w.dgw")
    np.testing.assert_array_equal(a.predict(x, verbose=0).data_sync(), b.predict(x, verbose=0).data_sync())
    # A full model file also gives its weights.
    a.save(tmp_path / "full.dgm")
    c = _functional(5)
    c.load_weights(tmp_path / "full.dgm")
    np.testing.assert_array_equal(c.get_weights()[0], a.get_weights()[0])
    with pytest.raises(ModelFileError, match="holds only weights"):
        dg.models.load_model(tmp_path / "w.dgw")


def test_weights_that_do_not_fit_change_nothing(tmp_path):
    small = Sequential([Dense(4, input_shape=(6,)), Dense(3)])
    small.save_weights(tmp_path / "s.dgw")
    other = Sequential([Dense(5, input_shape=(6,)), Dense(3)])
    before = other.get_weights()
    with pytest.raises(ValueError, match=r"shape \(6, 4\).*\(6, 5\)"):
        other.load_weights(tmp_path / "s.dgw")
    fewer = Sequential([Dense(3, input_shape=(6,))])
    with pytest.raises(ValueError, match="2 weight|4 weight"):
        fewer.load_weights(tmp_path / "s.dgw")
    for a, b in zip(before, other.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_bad_files_raise_clear_errors(tmp_path):
    m = _mlp()
    good = tmp_path / "good.dgm"
    m.save(good)
    data = good.read_bytes()
    trunc = tmp_path / "trunc.dgm"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated|not a complete zip"):
        dg.models.load_model(trunc)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ModelFileError, match="not a deepgpu file"):
        dg.models.load_model(text)
    with pytest.raises(FileNotFoundError):
        dg.models.load_model(tmp_path / "missing.dgm")
    kz = tmp_path / "model.keras"
    with zipfile.ZipFile(kz, "w") as z:
        z.writestr("config.json", "{}")
        z.writestr("model.weights.h5", b"")
    # load_model reads Keras files too: this one's architecture is empty.
    with pytest.raises(ModelFileError, match="not a Sequential or functional model"):
        dg.models.load_model(kz)
    # A member missing, a damaged weights member, an unknown layer class.
    def rewrite(name, drop=None, replace=None):
        p = tmp_path / name
        with zipfile.ZipFile(good) as src, zipfile.ZipFile(p, "w") as dst:
            for n in src.namelist():
                if n == drop:
                    continue
                dst.writestr(n, replace[1] if replace and replace[0] == n else src.read(n))
        return p
    with pytest.raises(ModelFileError, match="weights.npz"):
        dg.models.load_model(rewrite("now.dgm", drop="weights.npz"))
    with pytest.raises(ModelFileError, match="damaged"):
        dg.models.load_model(rewrite("dmg.dgm", replace=("weights.npz", b"PK\x03\x04junk")))
    cfg = json.loads(zipfile.ZipFile(good).read("config.json"))
    cfg["config"]["layers"][0]["class_name"] = "Nope"
    with pytest.raises(ValueError, match="unknown layer class 'Nope'"):
        dg.models.load_model(rewrite("cls.dgm", replace=("config.json", json.dumps(cfg))))
    meta = json.loads(zipfile.ZipFile(good).read("deepgpu.json"))
    meta["format_version"] = 99
    with pytest.raises(ModelFileError, match="newer deepgpu"):
        dg.models.load_model(rewrite("new.dgm", replace=("deepgpu.json", json.dumps(meta))))


def test_write_is_atomic(tmp_path, monkeypatch):
    m = _mlp()
    path = tmp_path / "m.dgm"
    m.save(path)
    before = path.read_bytes()
    m.fit(*_xy(), epochs=1, verbose=0)

    real = zipfile.ZipFile.writestr

    def failing(self, name, data, *a, **k):
        if name == "weights.npz":  # mid-file: some members already written
            raise OSError("disk full (simulated)")
        return real(self, name, data, *a, **k)
    with monkeypatch.context() as mp:
        mp.setattr(zipfile.ZipFile, "writestr", failing)
        with pytest.raises(OSError, match="disk full"):
            m.save(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.dgm"]  # no temporary left behind
    with pytest.raises(FileExistsError):
        m.save(path, overwrite=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        m.save(tmp_path / "no" / "such" / "dir.dgm")


def test_unbuilt_and_subclassed_models(tmp_path):
    with pytest.raises(ValueError, match="not built"):
        Sequential([Dense(3)]).save(tmp_path / "x.dgm")

    class Sub(Model):
        def __init__(self):
            super().__init__()
            self.d = Dense(2)

        def call(self, x, training=None):
            return self.d(x)

    s = Sub()
    s(dg.tensor(np.ones((1, 3), "float32")))
    # A subclassed model saves (its constructor takes no arguments: Keras 3's automatic config), and
    # loads where its class is known (tests/test_subclassing.py); unregistered, the load names it.
    s.save(tmp_path / "sub.dgm")
    with pytest.raises(ModelFileError, match=r"unknown layer class 'Sub'.*custom_objects"):
        dg.models.load_model(tmp_path / "sub.dgm")
    np.testing.assert_array_equal(dg.models.load_model(tmp_path / "sub.dgm", custom_objects={"Sub": Sub}).get_weights()[0],
                                  s.get_weights()[0])
    s.save_weights(tmp_path / "sub.dgw")
    t = Sub()
    t(dg.tensor(np.ones((1, 3), "float32")))
    t.load_weights(tmp_path / "sub.dgw")
    np.testing.assert_array_equal(t.get_weights()[0], s.get_weights()[0])


def test_custom_layer_loss_and_activation(tmp_path):
    @dg.register_serializable()
    class Scale(Layer):
        def __init__(self, factor=2.0, **kw):
            super().__init__(**kw)
            self.factor = factor

        def call(self, x, training=None):
            return x * self.factor

        def get_config(self):
            return {**super().get_config(), "factor": self.factor}

    def my_loss(y_true, y_pred):
        return dg.ops.mean((y_true - y_pred) ** 2, axis=-1)

    m = Sequential([Dense(3, input_shape=(6,)), Scale(3.0)])
    m.compile(optimizer="sgd", loss=my_loss)
    x, y = _xy()
    m.fit(x, y, epochs=1, verbose=0)
    m.save(tmp_path / "c.dgm")
    with pytest.raises(ValueError, match="custom_objects=.*my_loss"):
        dg.models.load_model(tmp_path / "c.dgm")
    m2 = dg.models.load_model(tmp_path / "c.dgm", custom_objects={"my_loss": my_loss})
    assert m2.layers[-1].factor == 3.0
    np.testing.assert_allclose(m2.predict(x, verbose=0).data_sync(), m.predict(x, verbose=0).data_sync())
    assert m2.evaluate(x, y, verbose=0) == pytest.approx(m.evaluate(x, y, verbose=0))


def test_model_checkpoint_best_only_and_every_epoch(tmp_path):
    x, y = _xy(96)
    m = _mlp()
    every = ModelCheckpoint(str(tmp_path / "ep{epoch:02d}.dgm"))
    best = ModelCheckpoint(str(tmp_path / "best.dgm"), monitor="loss", save_best_only=True)
    hist = m.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[every, best])
    assert sorted(p.name for p in tmp_path.glob("ep*.dgm")) == ["ep01.dgm", "ep02.dgm", "ep03.dgm"]
    m3 = dg.models.load_model(tmp_path / "ep03.dgm")
    np.testing.assert_array_equal(m3.predict(x, verbose=0).data_sync(), m.predict(x, verbose=0).data_sync())
    losses = hist.history["loss"]
    best_epoch = int(np.argmin(losses)) + 1
    mb = dg.models.load_model(tmp_path / "best.dgm")
    eb = dg.models.load_model(tmp_path / f"ep{best_epoch:02d}.dgm")
    for a, b in zip(mb.get_weights(), eb.get_weights()):
        np.testing.assert_array_equal(a, b)
    wo = ModelCheckpoint(str(tmp_path / "w.dgw"), save_weights_only=True)
    m.fit(x, y, epochs=1, verbose=0, callbacks=[wo])
    fresh = _mlp(seed=9)
    fresh.load_weights(tmp_path / "w.dgw")
    np.testing.assert_array_equal(fresh.get_weights()[0], m.get_weights()[0])


@pytest.mark.cuda
def test_trained_on_gpu_loads_on_cpu(tmp_path):
    x, y = _xy()
    with dg.use_backend("cuda"):
        m = _mlp()
        m.fit(x, y, epochs=2, verbose=0)
        m.save(tmp_path / "g.dgm")
        pred_gpu = m.predict(x, verbose=0).data_sync()
    with dg.use_backend("cpu"):
        m2 = dg.models.load_model(tmp_path / "g.dgm")
        np.testing.assert_allclose(m2.predict(x, verbose=0).data_sync(), pred_gpu, rtol=1e-5, atol=1e-6)


# ------------------------------------------------ checked before anything changes
def _rezip(src, dst, replace=None, add=None):
    """A copy of the zip ``src`` at ``dst`` with members replaced (name -> bytes) or added."""
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as b:
        for n in a.namelist():
            b.writestr(n, (replace or {}).get(n, a.read(n)))
        for n, data in (add or {}).items():
            b.writestr(n, data)
    return dst


def _npz(arrays):
    import io
    buf = io.BytesIO()
    np.savez(buf, **{f"w{i:05d}": a for i, a in enumerate(arrays)})
    return buf.getvalue()


def test_a_dtype_other_than_the_manifest_says_is_refused(tmp_path):
    m = Sequential([Dense(4, input_shape=(3,)), Dense(2)])
    m.save_weights(tmp_path / "w.dgw")
    manifest = json.loads(zipfile.ZipFile(tmp_path / "w.dgw").read("weights.json"))
    manifest[1]["dtype"] = "float16"  # the array stays float32
    bad = _rezip(tmp_path / "w.dgw", tmp_path / "bad.dgw", {"weights.json": json.dumps(manifest)})
    before = m.get_weights()
    with pytest.raises(ModelFileError, match=r"'dense\w*/bias' is float16 \(4,\) in weights.json but float32"):
        m.load_weights(bad)
    m.save(tmp_path / "m.dgm")
    manifest = json.loads(zipfile.ZipFile(tmp_path / "m.dgm").read("weights.json"))
    manifest[0]["dtype"] = "float64"
    bad = _rezip(tmp_path / "m.dgm", tmp_path / "bad.dgm", {"weights.json": json.dumps(manifest)})
    with pytest.raises(ModelFileError, match="float64.*in weights.json but float32"):
        dg.models.load_model(bad)
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", [np.array([1 + 2j, 3j], np.complex64), np.array(["ab", "cd"])],
                         ids=["complex", "string"])
def test_a_bad_last_array_leaves_the_model_as_it_was(tmp_path, bad):
    """Every array is read and checked before the first is assigned: no half-loaded model."""
    m = Sequential([Dense(2, input_shape=(3,)), Dense(2)])
    m.save_weights(tmp_path / "w.dgw")
    arrays = [np.full(w.shape, 7, np.float32) for w in m.weights]
    arrays[-1] = bad
    manifest = [{"name": w.name, "shape": list(w.shape), "dtype": str(a.dtype)} for w, a in zip(m.weights, arrays)]
    path = _rezip(tmp_path / "w.dgw", tmp_path / "bad.dgw",
                  {"weights.json": json.dumps(manifest), "weights.npz": _npz(arrays)})
    before = m.get_weights()
    with pytest.raises(ModelFileError, match="not a real number type"):
        m.load_weights(path)
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)
    manifest[-1]["dtype"] = "float32"  # a manifest that lies about it
    path = _rezip(tmp_path / "w.dgw", tmp_path / "bad2.dgw",
                  {"weights.json": json.dumps(manifest), "weights.npz": _npz(arrays)})
    with pytest.raises(ModelFileError, match="not real numbers"):
        m.load_weights(path)
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_member_that_unpacks_to_much_more_is_not_read(tmp_path):
    """A small file holding a member of 64 MiB of zeros: refused from the zip's directory, unread."""
    import tracemalloc

    m = Sequential([Dense(4, input_shape=(3,)), Dense(2)])
    m.save(tmp_path / "m.dgm")
    zeros = bytes(1 << 20)
    for member in ("weights.npz", "config.json", "extra.bin"):
        path = tmp_path / f"bomb-{member}.dgm"
        with zipfile.ZipFile(tmp_path / "m.dgm") as a, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as b:
            for n in a.namelist():
                if n != member:
                    b.writestr(n, a.read(n))
            with b.open(member, "w") as f:
                for _ in range(64):
                    f.write(zeros)
        assert path.stat().st_size < 1 << 20
        tracemalloc.start()
        try:
            if member == "extra.bin":
                dg.models.load_model(path)  # a member nobody asks for is never read
            else:
                with pytest.raises(ModelFileError, match=f"member '{member}' unpacks to 67108864 bytes"):
                    dg.models.load_model(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 8 << 20, f"{member}: {peak} bytes allocated"


def test_interrupted_saves_leave_temporaries_that_the_next_save_removes(tmp_path):
    m = _mlp()
    path = tmp_path / "m.dgm"
    m.save(path)
    # What a save killed mid-write leaves (an unlocked temporary), and another target's.
    (tmp_path / ".deepgpu-m.dgm.0123abcd.tmp").write_bytes(b"PK\x03\x04half")
    (tmp_path / ".deepgpu-other.dgm.0123abcd.tmp").write_bytes(b"x")
    m.save(path)
    assert sorted(os.listdir(tmp_path)) == [".deepgpu-other.dgm.0123abcd.tmp", "m.dgm"]
    dg.models.load_model(path)
