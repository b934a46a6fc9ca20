"""Augmentation layers (deepgpu/layers/preprocessing/augmentation.py) through the conformance harness,
the transform primitive against TensorFlow and by finite differences, and the factor rules."""
import numpy as np
import pytest

from deepgpu import backends, layers as L, ops, tensor
from deepgpu.autograd import backward, enable_grad
from deepgpu.testing import LayerCase as C

_NO_TFJS = {"tfjs": "TF.js has no such layer"}
_SIDE = {"tfjs": "TF.js resizes at random at inference too", "keras": "Keras 3 has no RandomWidth / RandomHeight"}
_SIDE_SKIP = {"build": "the resized side is None in compute_output_shape (it changes per training batch)",
              "training": "the training output has another shape; test_random_width_height_resize_in_training"}
CASES = [
    C(L.RandomFlip, {}, (10, 5, 6, 3), (None, 5, 6, 3), training="random", unsupported=_NO_TFJS),
    C(L.RandomFlip, dict(mode="vertical"), (10, 5, 6, 2), (None, 5, 6, 2), training="random", unsupported=_NO_TFJS),
    C(L.RandomRotation, dict(factor=0.2), (2, 6, 5, 2), (None, 6, 5, 2), training="random", unsupported=_NO_TFJS),
    C(L.RandomRotation, dict(factor=(-0.1, 0.3), fill_mode="constant", fill_value=0.5, interpolation="nearest"),
      (2, 6, 5, 1), (None, 6, 5, 1), training="random", unsupported=_NO_TFJS),
    C(L.RandomZoom, dict(height_factor=0.3), (2, 6, 7, 2), (None, 6, 7, 2), training="random", unsupported=_NO_TFJS),
    C(L.RandomZoom, dict(height_factor=(-0.2, 0.1), width_factor=0.2, fill_mode="wrap"), (2, 6, 7, 1),
      (None, 6, 7, 1), training="random", unsupported=_NO_TFJS),
    C(L.RandomTranslation, dict(height_factor=0.2, width_factor=0.1, fill_mode="nearest"), (2, 6, 7, 2),
      (None, 6, 7, 2), training="random", unsupported=_NO_TFJS),
    C(L.RandomContrast, dict(factor=0.5, value_range=(-3, 3)), (3, 4, 5, 2), (None, 4, 5, 2), training="random",
      unsupported=_NO_TFJS),
    C(L.RandomBrightness, dict(factor=0.2, value_range=(-3, 3)), (3, 4, 5, 2), (None, 4, 5, 2), training="random",
      unsupported=_NO_TFJS),
    C(L.RandomCrop, dict(height=3, width=4), (2, 6, 7, 2), (None, 3, 4, 2), training="random",
      unsupported=_NO_TFJS,
      skip={"keras_real": "Keras 3.15 returns the input uncropped at inference (its documentation and tf.keras 2 "
                          "crop the centre, as deepgpu does)"}),
    C(L.RandomWidth, dict(factor=0.4), (2, 5, 6, 2), (None, 5, None, 2), training="random", unsupported=_SIDE,
      skip=_SIDE_SKIP),
    C(L.RandomHeight, dict(factor=(-0.3, 0.5), interpolation="nearest"), (2, 5, 6, 1), (None, None, 6, 1),
      training="random", unsupported=_SIDE, skip=_SIDE_SKIP),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_layer(case, tfjs_batch):
    case.run(tfjs_batch=tfjs_batch)


_T = np.array([[1.1, 0.3, -2.2, -0.2, 0.9, 1.7, 0.01, -0.02], [0.7, -0.4, 3.1, 0.5, 1.3, -4.0, 0.0, 0.0]])


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("fill_mode", ["constant", "nearest", "reflect", "wrap"])
def test_image_transform_equals_tensorflow(interpolation, fill_mode):
    tf = pytest.importorskip("tensorflow")
    x = np.random.default_rng(0).standard_normal((2, 7, 6, 3)).astype(np.float32)
    t = _T.astype(np.float32)
    want = tf.raw_ops.ImageProjectiveTransformV3(images=x, transforms=t, output_shape=[9, 8], fill_value=0.5,
                                                 interpolation=interpolation.upper(),
                                                 fill_mode=fill_mode.upper()).numpy()
    got = ops.image_transform(tensor(x), t, (9, 8), interpolation, fill_mode, 0.5).data_sync()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("fill_mode", ["constant", "reflect", "wrap", "nearest"])
def test_image_transform_gradient_by_finite_differences(interpolation, fill_mode):
    rng = np.random.default_rng(1)
    x = tensor(rng.standard_normal((2, 5, 4, 2)), "float64")
    x.requires_grad = True
    r = rng.standard_normal((2, 6, 5, 2))

    def f():
        return ops.sum(ops.image_transform(x, _T, (6, 5), interpolation, fill_mode, 0.25) * tensor(r, "float64"))

    with enable_grad():
        (g,) = backward(f(), [x])
    g = backends.current().to_numpy(g)
    flat = x.data.reshape(-1)
    num = np.empty(flat.size)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + 1e-6
        plus = float(f().data_sync())
        flat[i] = old - 1e-6
        minus = float(f().data_sync())
        flat[i] = old
        num[i] = (plus - minus) / 2e-6
    np.testing.assert_allclose(g.reshape(-1), num, rtol=1e-6, atol=1e-6)


def test_fresh_values_per_batch_and_seeded_reproduction():
    x = tensor(np.random.default_rng(2).standard_normal((8, 6, 6, 1)).astype(np.float32))
    layer = L.RandomRotation(0.3, seed=4)
    a, b = (layer(x, training=True).data_sync() for _ in range(2))
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(L.RandomRotation(0.3, seed=4)(x, training=True).data_sync(), a)
    np.testing.assert_array_equal(layer(x).data_sync(), x.data_sync())  # inference: identity


def test_random_width_height_resize_in_training():
    x = tensor(np.random.default_rng(3).standard_normal((2, 10, 12, 1)).astype(np.float32))
    widths = {L.RandomWidth(0.5)(x, training=True).shape[2] for _ in range(8)}
    assert len(widths) > 1 and all(6 <= w <= 18 for w in widths)
    y = L.RandomHeight((0.5, 0.5))(x, training=True)
    assert y.shape == (2, 15, 12, 1)
    np.testing.assert_array_equal(L.RandomHeight(0.5)(x).data_sync(), x.data_sync())


def test_flip_and_translation_values():
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4, 1)
    y = L.RandomFlip("horizontal", seed=0)(tensor(x), training=True).data_sync()
    for i in range(2):
        assert np.array_equal(y[i], x[i]) or np.array_equal(y[i], x[i, :, ::-1])
    x = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4, 1)
    layer = L.RandomTranslation((0.25, 0.25), (0.0, 0.0), fill_mode="constant")  # one row down, exactly
    y = layer(tensor(x), training=True).data_sync()
    np.testing.assert_allclose(y[:, 1:], x[:, :3], atol=1e-5)
    np.testing.assert_allclose(y[:, 0], 0.0)


@pytest.mark.parametrize("make,match", [
    (lambda: L.RandomRotation(1.5), r"RandomRotation: factor must be .*\[-1.0, 1.0\]"),
    (lambda: L.RandomZoom(-1.0), r"RandomZoom: height_factor must be .*\(-1.0, 1.0\]"),
    (lambda: L.RandomZoom(0.2, width_factor=(0.1, 2.0)), r"RandomZoom: width_factor"),
    (lambda: L.RandomTranslation(0.1, (0.1, 0.2, 0.3)), r"RandomTranslation: width_factor"),
    (lambda: L.RandomContrast(1.5), r"RandomContrast: factor must be .*\[0.0, 1.0\]"),
    (lambda: L.RandomBrightness("a"), r"RandomBrightness: factor"),
    (lambda: L.RandomWidth(-2), r"RandomWidth: factor"),
    (lambda: L.RandomRotation(0.1, fill_mode="mirror"), r"RandomRotation: fill_mode"),
    (lambda: L.RandomFlip("diagonal"), r"RandomFlip: mode"),
])
def test_bad_factors_name_the_layer_and_range(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_transform_rows_are_keras_matrices_of_the_seeded_draws():
    """The rows built on the device from the layer's draws equal Keras 3's matrices computed on the
    host (float64) from the same seeded draws, and the draws stay within the factor's range."""
    from deepgpu.layers._random import StepRandom
    x = tensor(np.zeros((6, 5, 7, 1), np.float32))
    n, h, w = 6, 5, 7
    cx, cy = (w - 1) / 2, (h - 1) / 2

    rot = L.RandomRotation((-0.2, 0.3), seed=3).transforms(x, n, h, w).data_sync()
    a = StepRandom(3).host_uniform(x, (n,), -0.4 * np.pi, 0.6 * np.pi)
    assert ((a >= -0.4 * np.pi) & (a <= 0.6 * np.pi)).all() and np.ptp(a) > 0
    c, s = np.cos(a), np.sin(a)
    want = np.stack([c, -s, cx - cx * c + cy * s, s, c, cy - cx * s - cy * c, 0 * a, 0 * a], 1)
    np.testing.assert_allclose(rot, want, atol=2e-6)

    zoom = L.RandomZoom((-0.3, 0.2), width_factor=(0.1, 0.4), seed=4).transforms(x, n, h, w).data_sync()
    r = StepRandom(4)
    zy, zx = r.host_uniform(x, (n,), 0.7, 1.2), r.host_uniform(x, (n,), 1.1, 1.4)
    z = 0 * zy
    np.testing.assert_allclose(zoom, np.stack([zx, z, cx * (1 - zx), z, zy, cy * (1 - zy), z, z], 1), atol=2e-6)

    shift = L.RandomTranslation(0.2, (-0.1, 0.3), seed=5).transforms(x, n, h, w).data_sync()
    r = StepRandom(5)
    dy, dx = r.host_uniform(x, (n,), -0.2, 0.2) * h, r.host_uniform(x, (n,), -0.1, 0.3) * w
    one = z + 1
    np.testing.assert_allclose(shift, np.stack([one, z, -dx, z, one, -dy, z, z], 1), atol=2e-6)


def test_random_crop_takes_the_same_window_on_the_device_as_on_the_cpu():
    """On the CUDA backend (emulated here) the crop offset stays on the device (a whole-pixel "nearest"
    transform, which records); on the CPU it is read back and sliced. Same seed, same windows, same
    gradient (the window's upstream values, zero elsewhere)."""
    from deepgpu.tensor import Tensor
    from deepgpu.testing.emulation import emulated_cuda, emulation_status
    ok, why = emulation_status()
    if not ok:
        pytest.skip(why)
    x = np.random.default_rng(4).standard_normal((3, 9, 8, 2)).astype(np.float32)
    r = np.random.default_rng(5).standard_normal((3, 4, 3, 2)).astype(np.float32)

    def run(B):
        layer, out = L.RandomCrop(4, 3, seed=6), []
        for _ in range(4):
            xt = Tensor(B.asarray(x), B, requires_grad=True)
            with enable_grad():
                y = layer(xt, training=True)
                (g,) = backward(ops.sum(y * Tensor(B.asarray(r), B)), [xt])
            out.append((B.to_numpy(y.data), B.to_numpy(g)))
        return out

    cpu = run(backends.current())
    with emulated_cuda() as B:
        dev = run(B)
    for (yc, gc), (yd, gd) in zip(cpu, dev):
        np.testing.assert_array_equal(yd, yc)
        np.testing.assert_array_equal(gd, gc)
        assert np.count_nonzero(gc) == r.size
    assert len({a.tobytes() for a, _ in cpu}) > 1  # a new window per batch


@pytest.mark.parametrize("make,budget", [
    (lambda: L.RandomRotation(0.2), 17), (lambda: L.RandomZoom(0.2, 0.3), 13),
    (lambda: L.RandomTranslation(0.1, 0.2), 14), (lambda: L.RandomCrop(5, 6), 12), (lambda: L.RandomFlip(), 4)],
    ids=["rotation", "zoom", "translation", "crop", "flip"])
def test_device_draw_launch_budget(make, budget):
    """Top-level backend calls that launch work (views left out) in one eager training call on the CUDA
    backend (emulated): the draw, the transform rows built from it, one image_transform (whose own CuPy
    routines are the generic implementation's). The budget is this commit's count: more shows up here."""
    import collections

    from deepgpu.backends.cupy_backend import CupyBackend
    from deepgpu.tensor import Tensor
    from deepgpu.testing.emulation import emulated_cuda, emulation_status
    ok, why = emulation_status()
    if not ok:
        pytest.skip(why)
    with emulated_cuda() as B:
        x = Tensor(B.asarray(np.random.default_rng(0).random((4, 8, 8, 2), np.float32)), B)
        layer = make()
        layer(x, training=True)
        calls, depth = collections.Counter(), [0]

        def wrap(name, fn):
            def inner(*a, **k):
                if not depth[0]:
                    calls[name] += 1
                depth[0] += 1
                try:
                    return fn(*a, **k)
                finally:
                    depth[0] -= 1
            return inner

        names = [n for n in dir(CupyBackend) if not n.startswith("_") and callable(getattr(CupyBackend, n))]
        try:
            for n in names:
                setattr(B, n, wrap(n, getattr(B, n)))
            layer(x, training=True)
        finally:
            for n in names:
                B.__dict__.pop(n, None)
    launching = {n: c for n, c in calls.items() if n not in ("reshape", "getitem")}
    assert sum(launching.values()) <= budget, launching
    assert calls["random_keyed"] >= 1 and "to_numpy" not in calls, dict(calls)
