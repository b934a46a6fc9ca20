"""deepgpu.datasets: the IDX reader, the MNIST-style loaders and digits."""
import gzip
import os
import struct
import sys

import numpy as np
import pytest

from deepgpu import datasets
from deepgpu.data import _locate, fashion_mnist, mnist
from deepgpu.datasets import IDXError, digits, load_idx, save_idx

CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D,
         np.float64: 0x0E}


def idx_bytes(a):
    """IDX bytes written by hand (independently of save_idx)."""
    a = np.asarray(a)
    head = bytes([0, 0, CODES[a.dtype.type], a.ndim]) + b"".join(struct.pack(">I", s) for s in a.shape)
    return head + a.astype(a.dtype.newbyteorder(">")).tobytes()


def write(path, data, gz=False):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("dtype", list(CODES))
@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_every_dtype(tmp_path, dtype, gz):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    # The name says nothing: gzip is detected from the magic bytes.
    p = write(tmp_path / "data.bin", idx_bytes(a), gz)
    b = load_idx(p)
    assert b.dtype == a.dtype and b.dtype.isnative and b.shape == a.shape
    np.testing.assert_array_equal(b, a)


def test_load_idx_ranks_and_writable(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    b = load_idx(write(tmp_path / "l.gz", idx_bytes(labels), gz=True))
    np.testing.assert_array_equal(b, labels)
    b[0] = 7                                    # arrays come back writable, as Keras's do
    scalar = load_idx(write(tmp_path / "s", idx_bytes(np.array(5, np.int32))))
    assert scalar.shape == () and scalar == 5


@pytest.mark.parametrize("compress", [False, True])
def test_save_idx_round_trip(tmp_path, compress):
    a = np.random.default_rng(1).integers(-1000, 1000, (2, 3, 4)).astype(np.int16)
    p = tmp_path / ("x.gz" if compress else "x")
    save_idx(p, a)
    assert (p.read_bytes()[:2] == b"\x1f\x8b") == compress
    np.testing.assert_array_equal(load_idx(p), a)
    assert p.read_bytes() == (gzip.compress(idx_bytes(a), mtime=0) if compress else idx_bytes(a))
    with pytest.raises(ValueError, match="int64"):
        save_idx(tmp_path / "y", np.zeros(3, np.int64))


def test_load_idx_errors_name_the_file(tmp_path):
    good = idx_bytes(np.arange(24, dtype=np.int32).reshape(2, 3, 4))
    cases = {
        "short": (good[:3], "truncated: 3 bytes"),
        "magic": (b"\x08\x03" + good[2:], "not an IDX file: magic number 08 03 0c 03"),
        "code": (good[:2] + b"\x07" + good[3:], "unknown IDX type code 0x07"),
        "header": (good[:10], "truncated header: 3 dimensions need 16 bytes"),
        "data": (good[:-5], r"truncated: shape \(2, 3, 4\) of int32 needs 96 bytes of data, the file has 91"),
        "extra": (good + b"\0\0", "size mismatch: .* the file has 2 more"),
    }
    for name, (data, msg) in cases.items():
        p = write(tmp_path / name, data)
        with pytest.raises(IDXError, match=msg) as e:
            load_idx(p)
        assert str(p) in str(e.value)
        assert isinstance(e.value, ValueError)
    p = write(tmp_path / "trunc.gz", gzip.compress(good)[:-10])
    with pytest.raises(IDXError, match="gzip stream is truncated or corrupt") as e:
        load_idx(p)
    assert str(p) in str(e.value)
    with pytest.raises(FileNotFoundError):
        load_idx(tmp_path / "nothing")


# ---------------------------------------------------------------- loaders


def fake_dataset(folder, n_train=6, n_test=4, gz=True, dotted=False, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for key, stem in _locate.FILES.items():
        name = stem.replace("-idx", ".idx") if dotted else stem
        write(folder / (name + (".gz" if gz else "")), idx_bytes(arrays[key]), gz)
    return arrays


def check_loaded(result, arrays):
    (xtr, ytr), (xte, yte) = result
    for got, key in ((xtr, "x_train"), (ytr, "y_train"), (xte, "x_test"), (yte, "y_test")):
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, arrays[key])


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """No system folders, no DEEPGPU_DATA, an empty home: only what a test puts there."""
    monkeypatch.delenv("DEEPGPU_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIRS", [str(tmp_path / "debian" / "fashion-mnist")])
    return tmp_path


@pytest.mark.parametrize("module", [fashion_mnist, mnist])
@pytest.mark.parametrize("gz,dotted", [(True, False), (False, False), (False, True)])
def test_load_data_from_path(nowhere, module, gz, dotted):
    arrays = fake_dataset(nowhere / "d", gz=gz, dotted=dotted)
    check_loaded(module.load_data(nowhere / "d"), arrays)
    check_loaded(module.load_data(str(nowhere / "d")), arrays)


def test_load_data_path_subfolder_and_env(nowhere, monkeypatch):
    arrays = fake_dataset(nowhere / "root" / "fashion-mnist")
    check_loaded(fashion_mnist.load_data(nowhere / "root"), arrays)
    monkeypatch.setenv("DEEPGPU_DATA", str(nowhere / "root"))
    check_loaded(fashion_mnist.load_data(), arrays)
    # DEEPGPU_DATA pointing straight at the files works too, and wins over system folders.
    other = fake_dataset(nowhere / "debian" / "fashion-mnist", seed=5)
    check_loaded(fashion_mnist.load_data(), arrays)
    monkeypatch.delenv("DEEPGPU_DATA")
    check_loaded(fashion_mnist.load_data(), other)


def test_mnist_reads_keras_npz(nowhere):
    rng = np.random.default_rng(3)
    arrays = {"x_train": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
              "y_train": rng.integers(0, 10, 5).astype(np.uint8),
              "x_test": rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
              "y_test": rng.integers(0, 10, 2).astype(np.uint8)}
    keras = nowhere / "home" / ".keras" / "datasets"
    keras.mkdir(parents=True)
    np.savez(keras / "mnist.npz", **arrays)
    check_loaded(mnist.load_data(), arrays)


def test_explicit_path_is_the_only_place(nowhere, monkeypatch):
    fake_dataset(nowhere / "env")
    monkeypatch.setenv("DEEPGPU_DATA", str(nowhere / "env"))
    (nowhere / "empty").mkdir()
    with pytest.raises(FileNotFoundError) as e:
        fashion_mnist.load_data(nowhere / "empty")
    msg = str(e.value)
    assert "in the folder given as path" in msg
    assert str(nowhere / "empty") in msg and str(nowhere / "env") not in msg


def test_missing_everywhere_lists_places_and_remedy(nowhere, monkeypatch):
    env = nowhere / "env"
    env.mkdir()
    fake_dataset(env / "partial")
    (env / "partial" / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv("DEEPGPU_DATA", str(env / "partial"))
    with pytest.raises(FileNotFoundError) as e:
        fashion_mnist.load_data()
    msg = str(e.value)
    for place in (env / "partial", env / "partial" / "fashion-mnist", nowhere / "debian" / "fashion-mnist",
                  nowhere / "home" / ".keras" / "datasets" / "fashion-mnist"):
        assert str(place) in msg
    assert "missing t10k-labels-idx1-ubyte[.gz])" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "DEEPGPU_DATA" in msg and "path=" in msg
    monkeypatch.delenv("DEEPGPU_DATA")
    with pytest.raises(FileNotFoundError) as e:
        mnist.load_data()
    msg = str(e.value)
    assert "$DEEPGPU_DATA  (not set)" in msg and "cvdf-datasets/mnist" in msg
    assert str(nowhere / "home" / ".keras" / "datasets") in msg


def test_load_data_checks_the_arrays(nowhere):
    fake_dataset(nowhere / "d")
    write(nowhere / "d" / "train-labels-idx1-ubyte.gz", idx_bytes(np.zeros(5, np.uint8)), gz=True)
    with pytest.raises(ValueError, match="train has 6 images but labels of shape"):
        fashion_mnist.load_data(nowhere / "d")


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.delenv("DEEPGPU_DATA", raising=False)
    (xtr, ytr), (xte, yte) = datasets.fashion_mnist.load_data()
    assert xtr.shape == (60000, 28, 28) and ytr.shape == (60000,)
    assert xte.shape == (10000, 28, 28) and yte.shape == (10000,)
    assert xtr.dtype == ytr.dtype == np.uint8
    assert np.bincount(ytr).tolist() == [6000] * 10 and np.bincount(yte).tolist() == [1000] * 10
    assert ytr[:5].tolist() == [9, 0, 0, 3, 0]


# ----------------------------------------------------------------- digits


def test_digits_split():
    pytest.importorskip("sklearn")
    (xtr, ytr), (xte, yte) = digits.load_data()
    assert xtr.shape == (1347, 8, 8) and xte.shape == (450, 8, 8)
    assert xtr.dtype == xte.dtype == ytr.dtype == yte.dtype == np.uint8
    assert xtr.max() == digits.MAX_VALUE and xtr.min() == 0
    # Reproducible, and a different seed gives a different split.
    (xtr2, ytr2), (xte2, yte2) = digits.load_data(seed=0)
    np.testing.assert_array_equal(xtr, xtr2)
    np.testing.assert_array_equal(yte, yte2)
    (_, ytr3), _ = digits.load_data(seed=1)
    assert not np.array_equal(ytr, ytr3)
    # Stratified: each digit's share of the test set matches its share overall.
    _, y_all = digits.load_all()
    share = np.bincount(y_all) / len(y_all)
    assert np.abs(np.bincount(yte, minlength=10) - share * len(yte)).max() <= 1
    assert np.abs(np.bincount(ytr, minlength=10) - share * len(ytr)).max() <= 1
    # Train and test together are exactly the dataset.
    x_all, _ = digits.load_all()
    key = lambda x: sorted(map(bytes, x.reshape(len(x), -1)))  # noqa: E731
    assert key(np.concatenate([xtr, xte])) == key(x_all)
    (_, _), (xs, _) = digits.load_data(test_size=100)
    assert len(xs) == 100


def test_digits_without_sklearn(monkeypatch):
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")] + ["sklearn"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r'pip install "deepgpu\[data\]"'):
        digits.load_data()


def test_datasets_namespace():
    import deepgpu
    assert deepgpu.datasets.load_idx is load_idx
    for m in ("fashion_mnist", "mnist", "digits"):
        assert callable(getattr(deepgpu.datasets, m).load_data)
