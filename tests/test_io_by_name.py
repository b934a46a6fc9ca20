"""model.save / save_weights / load_weights / load_model follow the file name as Keras 3 does:
.keras and .weights.h5 are Keras's formats (real Keras reads them), .dgm / .dgw deepgpu's, any
other extension an error naming the choices, and nothing is written for it."""
import os

import numpy as np
import pytest

import deepgpu as dg
from deepgpu import layers as L
from deepgpu.io import ModelFileError

pytest.importorskip("h5py")


def _model(seed=0):
    m = dg.Sequential([L.Input((4,)), L.Dense(3, activation="relu"), L.Dense(2)])
    m.compile("adam", "mse")
    rng = np.random.default_rng(seed)
    for w in m.weights:
        w.assign(rng.standard_normal(w.shape).astype(np.float32))
    return m


X = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)


def _pred(m):
    out = m.predict(X, verbose=0)
    return out.data_sync() if hasattr(out, "data_sync") else np.asarray(out)


def test_save_dot_keras_writes_keras_3_format_and_load_model_reads_it(tmp_path):
    m = _model()
    path = tmp_path / "m.keras"
    m.save(path)
    import zipfile
    assert {"config.json", "model.weights.h5"} <= set(zipfile.ZipFile(path).namelist())
    assert "deepgpu.json" not in zipfile.ZipFile(path).namelist()
    back = dg.models.load_model(path)
    np.testing.assert_allclose(_pred(back), _pred(m), rtol=1e-6)


@pytest.mark.parametrize("ext", [".h5", ".hdf5"])
def test_save_dot_h5_writes_legacy_keras_hdf5(tmp_path, ext):
    import h5py
    a = L.Input((4,), name="a")
    h = L.BatchNormalization()(L.Dense(3, activation="relu")(a))
    m = dg.Model(a, L.Dense(2)(h))
    rng = np.random.default_rng(3)
    for w in m.weights:
        w.assign(rng.uniform(0.5, 1.5, w.shape).astype(np.float32))
    m.save(tmp_path / f"m{ext}")
    with h5py.File(tmp_path / f"m{ext}") as f:
        assert "model_config" in f.attrs and "model_weights" in f
    np.testing.assert_allclose(_pred(dg.models.load_model(tmp_path / f"m{ext}")), _pred(m), rtol=1e-6)


def test_dot_dgm_stays_deepgpus_own_with_the_optimizer(tmp_path):
    m = _model()
    m.fit(X, np.zeros((5, 2), np.float32), verbose=0)
    m.save(tmp_path / "m.dgm")
    back = dg.models.load_model(tmp_path / "m.dgm")
    assert back.optimizer is not None
    np.testing.assert_allclose(_pred(back), _pred(m), rtol=1e-6)


@pytest.mark.parametrize("ext", [".weights.h5", ".dgw"])
def test_weights_round_trip_by_extension(tmp_path, ext):
    a, b = _model(0), _model(1)
    a.save_weights(tmp_path / f"w{ext}")
    b.load_weights(tmp_path / f"w{ext}")
    np.testing.assert_allclose(_pred(b), _pred(a), rtol=1e-6)


@pytest.mark.parametrize("call,name,match", [
    ("save", "m.zip", r"\.dgm .* or \.keras"),
    ("save", "m", r"\.dgm .* or \.keras"),
    ("save_weights", "w.h5", r"\.dgw .* or \.weights\.h5"),
    ("save_weights", "w.bin", r"\.dgw .* or \.weights\.h5"),
])
def test_an_extension_naming_no_format_is_an_error_and_writes_nothing(tmp_path, call, name, match):
    with pytest.raises(ValueError, match=match):
        getattr(_model(), call)(tmp_path / name)
    assert os.listdir(tmp_path) == []


def test_model_checkpoint_refuses_a_bad_extension_before_training():
    with pytest.raises(ValueError, match=r"\.dgm"):
        dg.callbacks.ModelCheckpoint("ckpt-{epoch:02d}.zip")
    with pytest.raises(ValueError, match=r"\.weights\.h5"):
        dg.callbacks.ModelCheckpoint("ckpt-{epoch:02d}.keras", save_weights_only=True)


def test_model_checkpoint_writes_keras_files(tmp_path):
    m = _model()
    cb = dg.callbacks.ModelCheckpoint(str(tmp_path / "ckpt-{epoch:02d}.keras"), monitor="loss")
    m.fit(X, np.zeros((5, 2), np.float32), epochs=2, verbose=0, callbacks=[cb])
    assert sorted(os.listdir(tmp_path)) == ["ckpt-01.keras", "ckpt-02.keras"]
    np.testing.assert_allclose(_pred(dg.models.load_model(tmp_path / "ckpt-02.keras")), _pred(m), rtol=1e-6)


def test_weights_that_do_not_fit_change_nothing(tmp_path):
    a = _model()
    a.save_weights(tmp_path / "w.weights.h5")
    other = dg.Sequential([L.Input((4,)), L.Dense(5), L.Dense(2)])
    before = [w.data_sync().copy() for w in other.weights]
    with pytest.raises(ModelFileError, match="w.weights.h5"):
        other.load_weights(tmp_path / "w.weights.h5")
    for w, b in zip(other.weights, before):
        np.testing.assert_array_equal(w.data_sync(), b)


# Keras converts h5py datasets with np.array(x), which NumPy 2 warns about for h5py 3.14's __array__.
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
def test_real_keras_reads_what_deepgpu_writes(tmp_path):
    keras = pytest.importorskip("keras")
    m = _model()
    m.save(tmp_path / "m.keras")
    m.save_weights(tmp_path / "w.weights.h5")
    m.save(tmp_path / "m.h5")
    for name in ("m.keras", "m.h5"):
        km = keras.saving.load_model(str(tmp_path / name))
        np.testing.assert_allclose(np.asarray(km.predict(X, verbose=0)), _pred(m), rtol=1e-5, atol=1e-6,
                                   err_msg=name)
    km2 = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"), keras.layers.Dense(2)])
    km2.load_weights(str(tmp_path / "w.weights.h5"))
    np.testing.assert_allclose(np.asarray(km2.predict(X, verbose=0)), _pred(m), rtol=1e-5, atol=1e-6)
    # And the other way: Keras's own .weights.h5 into deepgpu.
    km2.save_weights(str(tmp_path / "k.weights.h5"))
    d = _model(5)
    d.load_weights(tmp_path / "k.weights.h5")
    np.testing.assert_allclose(_pred(d), _pred(m), rtol=1e-5, atol=1e-6)
