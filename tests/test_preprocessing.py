"""deepgpu.preprocessing: labels, Normalizer, splits, batches and image resizing."""
import json
import math

import numpy as np
import pytest

import deepgpu as dg
from deepgpu.preprocessing import (
    Normalizer, batches, resize_bilinear, resize_nearest_neighbor, to_categorical, train_test_split,
)
from deepgpu.testing import assert_close, check_gradients

# ------------------------------------------------------------ to_categorical


def test_to_categorical():
    y = to_categorical([0, 2, 1, 2])
    assert y.dtype == np.float32 and y.shape == (4, 3)
    np.testing.assert_array_equal(y, np.eye(3, dtype=np.float32)[[0, 2, 1, 2]])
    assert to_categorical(np.array([[1], [0]]), 4).shape == (2, 4)     # trailing 1 dropped
    assert to_categorical(np.array([[1, 0], [2, 3]]), 5).shape == (2, 2, 5)
    assert to_categorical(np.array([1.0, 0.0]), dtype="int32").dtype == np.int32
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        to_categorical([0, 3], num_classes=3)
    with pytest.raises(ValueError, match="whole numbers"):
        to_categorical([0.5])


# -------------------------------------------------------------- Normalizer


def test_normalizer_fits_on_training_data_only():
    rng = np.random.default_rng(0)
    x_train = rng.normal(5, 3, (200, 4))
    x_test = rng.normal(-2, 1, (50, 4))
    norm = Normalizer().fit(x_train)
    np.testing.assert_allclose(norm.mean.ravel(), x_train.mean(0), rtol=1e-6)
    np.testing.assert_allclose(norm.std.ravel(), x_train.std(0), rtol=1e-6)
    z = norm.transform(x_train.astype(np.float32))
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-5)
    # Test data uses the training statistics, not its own.
    zt = norm.transform(x_test)
    np.testing.assert_allclose(zt, (x_test - x_train.mean(0)) / x_train.std(0), rtol=1e-5, atol=1e-6)
    assert abs(zt.mean()) > 1
    np.testing.assert_allclose(norm.inverse_transform(zt), x_test, rtol=1e-5, atol=1e-5)


def test_normalizer_constant_feature_axes_and_config():
    x = np.stack([np.arange(6.0), np.full(6, 7.0)], axis=1)
    norm = Normalizer()
    z = norm.fit_transform(x)
    assert np.isfinite(z).all() and np.all(z[:, 1] == 0)
    # Per-pixel statistics of images, or one scalar over everything.
    imgs = np.random.default_rng(1).random((10, 3, 3))
    assert Normalizer(axis=0).fit(imgs).mean.shape == (1, 3, 3)
    n_all = Normalizer(axis=None).fit(imgs)
    assert n_all.mean.shape == (1, 1, 1) and abs(n_all.transform(imgs).std() - 1) < 1e-5
    # The config is JSON and restores the same transform.
    cfg = json.loads(json.dumps(norm.get_config()))
    clone = Normalizer.from_config(cfg)
    np.testing.assert_array_equal(clone.transform(x), z)
    assert Normalizer.from_config(Normalizer(axis=(0, 1)).get_config()).axis == (0, 1)
    with pytest.raises(RuntimeError, match="call fit"):
        Normalizer().transform(x)


def test_normalizer_on_tensors(backend):
    rng = np.random.default_rng(2)
    x = rng.normal(3, 2, (20, 5)).astype(np.float32)
    norm = Normalizer().fit(x)
    t = dg.tensor(x)
    z = norm.transform(t)
    assert isinstance(z, dg.Tensor) and z.backend == t.backend and z.dtype == "float32"
    assert_close(z, norm.transform(x), rtol=1e-5, atol=1e-5)
    assert_close(norm.inverse_transform(z), x, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(Normalizer().fit(t).mean, norm.mean, rtol=1e-6)


# ---------------------------------------------------------- train_test_split


def test_train_test_split_basics():
    x = np.arange(100).reshape(50, 2)
    y = np.arange(50)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, seed=3)
    assert xtr.shape == (40, 2) and xte.shape == (10, 2) and len(ytr) == 40 and len(yte) == 10
    np.testing.assert_array_equal(xtr[:, 0] // 2, ytr)             # rows stay paired
    assert sorted(np.concatenate([ytr, yte]).tolist()) == list(range(50))
    again = train_test_split(x, y, test_size=0.2, seed=3)
    np.testing.assert_array_equal(again[3], yte)
    assert not np.array_equal(train_test_split(x, y, test_size=0.2, seed=4)[3], yte)
    assert len(train_test_split(y, test_size=0.33)[1]) == math.ceil(0.33 * 50)
    assert len(train_test_split(y, test_size=7)[1]) == 7
    _, te = train_test_split(y, test_size=5, shuffle=False)
    np.testing.assert_array_equal(te, np.arange(45, 50))
    lst_tr, lst_te = train_test_split(list("abcdefgh"), test_size=2, seed=0)
    assert isinstance(lst_tr, list) and sorted(lst_tr + lst_te) == list("abcdefgh")
    with pytest.raises(ValueError, match="array 1 has 3 samples"):
        train_test_split(y, y[:3])
    with pytest.raises(ValueError, match="test_size"):
        train_test_split(y, test_size=1.5)


@pytest.mark.parametrize("test_size", [0.25, 0.1, 13])
def test_train_test_split_stratified(test_size):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2, 3], [100, 50, 30, 7])
    rng.shuffle(y)
    x = np.arange(len(y))
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_size, seed=1, stratify=y)
    n_test = math.ceil(test_size * len(y)) if isinstance(test_size, float) else test_size
    assert len(yte) == n_test and len(ytr) == len(y) - n_test
    np.testing.assert_array_equal(y[xte], yte)
    counts = np.bincount(y)
    assert np.all(np.abs(np.bincount(yte, minlength=4) - counts * n_test / len(y)) <= 1)
    assert np.all(np.bincount(yte, minlength=4) >= 1) and np.all(np.bincount(ytr, minlength=4) >= 1)
    assert sorted(np.concatenate([xtr, xte]).tolist()) == list(range(len(y)))
    with pytest.raises(ValueError, match="stratify needs shuffle=True"):
        train_test_split(x, y, stratify=y, shuffle=False)
    with pytest.raises(ValueError, match="at least 2 samples of each class"):
        train_test_split(x, np.r_[y[:-1], 9], stratify=np.r_[y[:-1], 9])


def test_train_test_split_tensors_stay_on_backend(backend):
    x = dg.tensor(np.arange(20, dtype=np.float32).reshape(10, 2))
    xtr, xte = train_test_split(x, test_size=3, seed=0)
    assert xtr.backend == x.backend and xtr.shape == (7, 2) and xte.shape == (3, 2)
    assert sorted(np.concatenate([xtr.data_sync(), xte.data_sync()])[:, 0].tolist()) == list(range(0, 20, 2))


# ------------------------------------------------------------------ batches


class CountingArray(np.ndarray):
    """Records how many rows each indexing takes, to prove no full copy is made."""
    taken: list = []

    def __getitem__(self, key):
        rows = key if not isinstance(key, tuple) else key[0]
        if isinstance(rows, slice):
            n = len(range(*rows.indices(self.shape[0])))
        else:
            n = np.asarray(rows).shape[0] if np.ndim(rows) else 1
        CountingArray.taken.append(n)
        return np.asarray(self).__getitem__(key)


@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_cover_every_sample_once_without_full_copies(shuffle):
    n, bs = 103, 16
    x = np.arange(n * 3).reshape(n, 3).view(CountingArray)
    y = np.arange(n)
    CountingArray.taken = []
    seen = []
    sizes = []
    for xb, yb in batches(x, y, batch_size=bs, shuffle=shuffle, seed=0):
        assert type(xb) is np.ndarray and xb.shape[1:] == (3,) and len(xb) == len(yb)
        np.testing.assert_array_equal(xb[:, 0] // 3, yb)
        sizes.append(len(xb))
        seen += yb.tolist()
    assert sizes == [bs] * (n // bs) + [n % bs]
    assert sorted(seen) == list(range(n))
    assert (seen != list(range(n))) == shuffle
    assert max(CountingArray.taken) <= bs and len(CountingArray.taken) == len(sizes)
    if not shuffle:
        first = next(batches(np.asarray(x), batch_size=bs, shuffle=False))
        assert np.shares_memory(first, np.asarray(x))                # slices are views


def test_batches_structures_and_options():
    n = 10
    x = {"a": np.arange(n), "b": np.arange(n) * 10}
    y = [np.arange(n) + 100, np.arange(n) + 200]
    out = list(batches(x, y, batch_size=4, seed=1))
    assert [len(xb["a"]) for xb, _ in out] == [4, 4, 2]
    for xb, (y0, y1) in out:
        np.testing.assert_array_equal(xb["b"], xb["a"] * 10)
        np.testing.assert_array_equal(y0, xb["a"] + 100)
        np.testing.assert_array_equal(y1, xb["a"] + 200)
    assert [len(b) for b in batches(np.arange(n), batch_size=4, drop_remainder=True)] == [4, 4]
    # Same seed, same order; one Generator gives a new order each epoch.
    order = lambda s: np.concatenate(list(batches(np.arange(n), batch_size=3, seed=s)))  # noqa: E731
    np.testing.assert_array_equal(order(5), order(5))
    g = np.random.default_rng(0)
    assert not np.array_equal(order(g), order(g))
    with pytest.raises(ValueError, match="x has 10 samples, y has 3"):
        next(batches(np.arange(n), np.arange(3)))
    with pytest.raises(ValueError, match="different numbers of samples"):
        next(batches([np.arange(3), np.arange(4)]))


def test_batches_of_tensors(backend):
    x = dg.tensor(np.arange(14, dtype=np.float32).reshape(7, 2))
    y = np.arange(7)
    got = []
    for xb, yb in batches(x, y, batch_size=3, seed=0):
        assert isinstance(xb, dg.Tensor) and xb.backend == x.backend
        np.testing.assert_array_equal(xb.data_sync()[:, 0] / 2, yb)
        got += yb.tolist()
    assert sorted(got) == list(range(7))


# ------------------------------------------------------------- image resize


def ref_bilinear(x, oh, ow, align_corners=False, half_pixel_centers=True):
    """TF's ResizeBilinear (resize_bilinear_op.cc) written out pixel by pixel."""
    n, h, w, c = x.shape
    out = np.zeros((n, oh, ow, c))

    def scale(i, o):
        return (i - 1) / (o - 1) if align_corners and o > 1 else i / o

    def src(o, s):
        return (o + 0.5) * s - 0.5 if half_pixel_centers else o * s

    for oy in range(oh):
        fy = src(oy, scale(h, oh))
        y0, y1, ly = max(math.floor(fy), 0), min(math.ceil(fy), h - 1), fy - math.floor(fy)
        for ox in range(ow):
            fx = src(ox, scale(w, ow))
            x0, x1, lx = max(math.floor(fx), 0), min(math.ceil(fx), w - 1), fx - math.floor(fx)
            top = x[:, y0, x0] + (x[:, y0, x1] - x[:, y0, x0]) * lx
            bottom = x[:, y1, x0] + (x[:, y1, x1] - x[:, y1, x0]) * lx
            out[:, oy, ox] = top + (bottom - top) * ly
    return out


def ref_nearest(x, oh, ow, align_corners=False, half_pixel_centers=True):
    """TF's ResizeNearestNeighbor (resize_nearest_neighbor_op.cc) pixel by pixel."""
    n, h, w, c = x.shape

    def pick(o, i, n_out):
        s = (i - 1) / (n_out - 1) if align_corners and n_out > 1 else i / n_out
        f = (o + 0.5) * s if half_pixel_centers else o * s
        k = int(math.floor(f + 0.5)) if align_corners else int(math.floor(f))
        return max(0, min(k, i - 1))

    out = np.zeros((n, oh, ow, c), x.dtype)
    for oy in range(oh):
        for ox in range(ow):
            out[:, oy, ox] = x[:, pick(oy, h, oh), pick(ox, w, ow)]
    return out


SIZES = [((5, 7), (9, 4)), ((4, 4), (2, 2)), ((3, 6), (3, 6)), ((6, 5), (1, 11)), ((1, 1), (3, 2))]
MODES = [dict(), dict(align_corners=True, half_pixel_centers=False),
         dict(align_corners=False, half_pixel_centers=False)]


@pytest.mark.parametrize("mode", MODES, ids=["half_pixel", "align_corners", "legacy"])
def test_resize_matches_reference(backend, mode):
    rng = np.random.default_rng(0)
    for (h, w), (oh, ow) in SIZES:
        x = rng.standard_normal((2, h, w, 3)).astype(np.float32)
        t = dg.tensor(x)
        y = resize_bilinear(t, (oh, ow), **mode)
        assert y.shape == (2, oh, ow, 3) and y.dtype == "float32" and y.backend == t.backend
        assert_close(y, ref_bilinear(x, oh, ow, **mode).astype(np.float32), rtol=1e-5, atol=1e-5)
        y = resize_nearest_neighbor(t, (oh, ow), **mode)
        assert y.shape == (2, oh, ow, 3) and y.dtype == "float32"
        assert_close(y, ref_nearest(x, oh, ow, **mode), rtol=0, atol=0)
        # [H, W, C] input gives [OH, OW, C].
        assert resize_bilinear(dg.tensor(x[0]), (oh, ow), **mode).shape == (oh, ow, 3)
        assert resize_nearest_neighbor(dg.tensor(x[0]), (oh, ow), **mode).shape == (oh, ow, 3)


def test_resize_known_tf_values(backend):
    # tf.image.resize([[0, 1], [2, 3]], (4, 4)) with "bilinear" and "nearest".
    img = np.array([[0, 1], [2, 3]], np.uint8).reshape(1, 2, 2, 1)
    bil = resize_bilinear(img, (4, 4))
    assert bil.dtype == "float32"          # integer images come back as float32, as in TF
    assert_close(bil.reshape(4, 4), np.array(
        [[0, .25, .75, 1], [.5, .75, 1.25, 1.5], [1.5, 1.75, 2.25, 2.5], [2, 2.25, 2.75, 3]], np.float32))
    near = resize_nearest_neighbor(dg.tensor(img, "int32"), (4, 4))
    assert near.dtype == "int32"
    np.testing.assert_array_equal(near.data_sync().reshape(4, 4), np.repeat(np.repeat([[0, 1], [2, 3]], 2, 0), 2, 1))
    corners = resize_bilinear(img, (3, 3), align_corners=True, half_pixel_centers=False)
    assert_close(corners.reshape(3, 3), np.array([[0, .5, 1], [1, 1.5, 2], [2, 2.5, 3]], np.float32))
    big = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    # Downsampling 4 -> 2 with half-pixel centres takes rows/columns 1 and 3 (nearest)
    # and averages pairs (bilinear).
    assert_close(resize_nearest_neighbor(big, (2, 2)).reshape(2, 2), np.array([[5, 7], [13, 15]], np.float32))
    assert_close(resize_bilinear(big, (2, 2)).reshape(2, 2), np.array([[2.5, 4.5], [10.5, 12.5]], np.float32))


def test_resize_gradients():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 2))
    for mode in MODES:
        check_gradients(lambda t: resize_bilinear(t, (5, 3), **mode), [x])
        check_gradients(lambda t: resize_nearest_neighbor(t, (5, 6), **mode), [x])
    check_gradients(lambda t: resize_bilinear(t, (2, 7)), [x[0]])
    # float64 stays float64.
    with dg.use_backend("cpu"):
        assert resize_bilinear(dg.tensor(x, "float64"), (2, 2)).dtype == "float64"


def test_resize_gradient_parity(backend):
    """The gradient on this backend equals the NumPy reference's adjoint."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 4, 5, 2)).astype(np.float32)
    dy = rng.standard_normal((1, 6, 3, 2)).astype(np.float32)
    (g,) = dg.grads(lambda t: resize_bilinear(t, (6, 3)))([dg.tensor(x)], dy=dg.tensor(dy))
    # Adjoint of the linear reference map, built column by column.
    ref = np.zeros(x.size)
    for i in range(x.size):
        e = np.zeros(x.size)
        e[i] = 1
        ref[i] = (ref_bilinear(e.reshape(x.shape), 6, 3) * dy).sum()
    assert_close(g, ref.reshape(x.shape).astype(np.float32), rtol=1e-4, atol=1e-5)


def test_resize_errors():
    x = dg.tensor(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[N, H, W, C\] or \[H, W, C\], got shape \(2, 3\)"):
        resize_bilinear(x, (4, 4))
    img = dg.tensor(np.zeros((1, 3, 3, 1), np.float32))
    with pytest.raises(ValueError, match="size must be"):
        resize_nearest_neighbor(img, (0, 4))
    with pytest.raises(ValueError, match="size must be"):
        resize_bilinear(img, 4)
    with pytest.raises(ValueError, match="align_corners=True needs half_pixel_centers=False"):
        resize_bilinear(img, (4, 4), align_corners=True)


def test_preprocessing_namespace():
    assert dg.preprocessing.to_categorical is to_categorical
