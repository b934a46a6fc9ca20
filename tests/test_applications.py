"""deepgpu.applications: Keras's parameter counts, layer names, arguments and errors, weights from
local files (Keras 3 and legacy HDF5, .keras, TF.js), and preprocess_input."""
import re
import warnings

import numpy as np
import pytest

import deepgpu as dg
from deepgpu import applications as A
from deepgpu.applications._weights import keras_layer_order
from deepgpu.io.native import ModelFileError

def predict(model, x):
    return model.predict(x, verbose=0).data_sync()


# Keras 3.15's keras.applications counts (with the top, 224x224x3, 1000 classes).
KERAS_PARAMS = {"VGG16": 138_357_544, "ResNet50": 25_636_712, "MobileNet": 4_253_864, "MobileNetV2": 3_538_984}


@pytest.mark.parametrize("name", sorted(KERAS_PARAMS))
def test_parameter_counts_equal_keras(name):
    model = getattr(A, name)()
    assert model.count_params() == KERAS_PARAMS[name]
    assert model.output_shape == (None, 1000) and model.input_shape == (None, 224, 224, 3)


def test_small_variants_count_as_keras():
    # Counts from Keras 3.15 with the same arguments.
    assert A.MobileNetV2(alpha=0.35, input_shape=(64, 64, 3), include_top=False, pooling="avg").count_params() == 410_208
    assert A.MobileNet(alpha=0.5, depth_multiplier=2, input_shape=(64, 64, 3), classes=10).count_params() == 1_651_802
    assert A.MobileNetV2(input_shape=(96, 96, 3), classes=7).count_params() == 2_266_951
    assert A.VGG16(include_top=False, input_shape=(32, 32, 3)).count_params() == 14_714_688


def test_names_follow_keras():
    assert A.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), include_top=False).name == "mobilenetv2_0.35_96"
    assert A.MobileNet(input_shape=(128, 128, 3), include_top=False).name == "mobilenet_1.00_128"
    m = A.MobileNetV2(input_shape=(32, 32, 3), include_top=False)
    names = [layer.name for layer in m.layers]
    for want in ("Conv1", "bn_Conv1", "Conv1_relu", "expanded_conv_depthwise", "block_1_pad", "block_16_project_BN",
                 "Conv_1", "out_relu"):
        assert want in names
    r = A.ResNet50(include_top=False, input_shape=(32, 32, 3), pooling="max")
    assert r.layers[-1].name == "max_pool" and r.output_shape == (None, 2048)


def test_pooling_and_input_tensor():
    inp = dg.Input(shape=(40, 40, 3))
    m = A.MobileNet(input_tensor=inp, include_top=False, pooling="avg", alpha=0.25)
    assert m.output_shape == (None, 256)
    y = predict(m, np.random.default_rng(0).uniform(0, 1, (2, 40, 40, 3)).astype("float32"))
    assert y.shape == (2, 256) and np.isfinite(y).all()
    # A top on the network's features, as the transfer-learning recipes do.
    out = dg.layers.Dense(3, activation="softmax")(m.output)
    assert dg.Model(m.inputs, out).output_shape == (None, 3)


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="downloads nothing.*local file"):
        A.MobileNetV2(weights="imagenet")
    with pytest.raises(ValueError, match="does not exist"):
        A.ResNet50(weights="/no/such/file.h5")
    with pytest.raises(ValueError, match="pooling must be None, 'avg' or 'max'"):
        A.VGG16(include_top=False, pooling="mean")
    with pytest.raises(ValueError, match="at least 32x32"):
        A.MobileNetV2(input_shape=(16, 16, 3), include_top=False)
    with pytest.raises(ValueError, match="static `input_shape`"):
        A.ResNet50(input_shape=(None, None, 3))
    with pytest.raises(ValueError, match="MobileNet: depth_multiplier must be a positive int"):
        A.MobileNet(depth_multiplier=0)
    with pytest.raises(ValueError, match="classes must be a positive int"):
        A.MobileNetV2(classes=0)


def _randomize(model, seed=0):
    """Every weight random (variances positive), so that a load that mixes weights up shows."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        v = rng.normal(0.0, 0.3, tuple(w.shape))
        if w.name.endswith("moving_variance"):
            v = np.abs(v) + 0.5
        w.assign(v.astype("float32"))


def test_weights_from_tfjs_and_deepgpu_written_files(tmp_path):
    src = A.MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), classes=5)
    _randomize(src)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    want = predict(src, x)
    dg.io.save_tfjs(src, tmp_path / "tfjs")
    src.save_weights(tmp_path / "w.weights.h5")
    src.save(tmp_path / "m.keras")
    src.save(tmp_path / "m.h5")
    for path in (tmp_path / "tfjs", tmp_path / "w.weights.h5", tmp_path / "m.keras", tmp_path / "m.h5"):
        got = A.MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), classes=5, weights=str(path))
        np.testing.assert_allclose(predict(got, x), want, rtol=1e-5, atol=1e-6, err_msg=str(path))
    # Without the top, the file's extra layers are left alone.
    notop = A.MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), include_top=False, weights=str(tmp_path / "m.h5"))
    np.testing.assert_array_equal(notop.get_layer("Conv_1").kernel.data_sync(), src.get_layer("Conv_1").kernel.data_sync())


def test_weights_that_do_not_fit_change_nothing(tmp_path):
    src = A.MobileNet(alpha=0.25, input_shape=(32, 32, 3), classes=5)
    src.save(tmp_path / "m.h5")
    src.save(tmp_path / "m.keras")
    for path in ("m.h5", "m.keras"):
        with pytest.raises(ValueError, match="shape") as e:
            A.MobileNet(alpha=0.5, input_shape=(32, 32, 3), classes=5, weights=str(tmp_path / path))
        assert path in str(e.value)
    other = A.MobileNet(alpha=0.25, input_shape=(32, 32, 3), classes=4)
    before = [w.data_sync().copy() for w in other.weights]
    from deepgpu.applications._weights import load_weights
    with pytest.raises(ModelFileError, match="conv_preds"):
        load_weights(other, str(tmp_path / "m.keras"))
    for b, w in zip(before, other.weights):
        np.testing.assert_array_equal(b, w.data_sync())


def test_preprocess_input_modes():
    x = np.array([[[[0.0, 127.5, 255.0]]]], dtype="float32")
    np.testing.assert_allclose(A.mobilenet_v2.preprocess_input(x), [[[[-1.0, 0.0, 1.0]]]])
    np.testing.assert_allclose(A.vgg16.preprocess_input(x), [[[[255 - 103.939, 127.5 - 116.779, 0 - 123.68]]]],
                               rtol=1e-6)
    np.testing.assert_allclose(A.imagenet_utils.preprocess_input(x, mode="torch"),
                               [[[[-0.485 / 0.229, (0.5 - 0.456) / 0.224, (1 - 0.406) / 0.225]]]], rtol=1e-5)
    assert x[0, 0, 0, 0] == 0.0  # the input is not changed
    t = A.resnet50.preprocess_input(dg.tensor(x))
    np.testing.assert_allclose(t.data_sync(), A.resnet50.preprocess_input(x), rtol=1e-6)
    ints = A.mobilenet.preprocess_input(np.array([[0, 255]], dtype="uint8"))
    assert ints.dtype == np.float32 and ints.tolist() == [[-1.0, 1.0]]


# ----------------------------------------------------------------- against real Keras, where installed
def test_layer_names_shapes_and_order_match_keras():
    keras = pytest.importorskip("keras")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fn, kw in [("MobileNetV2", dict(alpha=0.35, input_shape=(32, 32, 3), classes=3)),
                       ("MobileNet", dict(alpha=0.25, depth_multiplier=2, input_shape=(32, 32, 3),
                                          include_top=False, pooling="max")),
                       ("ResNet50", dict(input_shape=(32, 32, 3), include_top=False, pooling="avg"))]:
            k = getattr(keras.applications, fn)(weights=None, **kw)
            d = getattr(A, fn)(**kw)
            assert k.name == d.name and k.count_params() == d.count_params()
            auto = re.compile(r"^(global_(average|max)_pooling2d)(_\d+)?$")  # Keras's counters differ
            assert [auto.sub(r"\1", layer.name) for layer in k.layers][1:] == \
                [auto.sub(r"\1", n) for n in keras_layer_order(d)][1:]
            kshapes = {layer.name: [tuple(w.shape) for w in layer.weights] for layer in k.layers}
            for layer in d.layers[1:]:
                if layer.weights:
                    assert kshapes[layer.name] == [tuple(w.shape) for w in layer.weights], layer.name


def test_keras_written_mobilenetv2_loads_and_predicts_the_same(tmp_path):
    keras = pytest.importorskip("keras")
    pytest.importorskip("h5py")
    from keras.src.legacy.saving import legacy_h5_format
    import h5py

    kw = dict(alpha=0.35, input_shape=(32, 32, 3), classes=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        km = keras.applications.MobileNetV2(weights=None, **kw)
        rng = np.random.default_rng(3)
        km.set_weights([(np.abs(rng.normal(0, 0.3, tuple(w.shape))) + 0.5 if "variance" in w.path
                         else rng.normal(0, 0.3, tuple(w.shape))).astype("float32") for w in km.weights])
        x = rng.uniform(-1, 1, (3, 32, 32, 3)).astype("float32")
        want = km.predict(x, verbose=0)
        km.save(tmp_path / "k.keras")
        km.save_weights(tmp_path / "k.weights.h5")
        with h5py.File(tmp_path / "k_legacy.h5", "w") as f:  # the layout of Keras's published weight files
            legacy_h5_format.save_weights_to_hdf5_group(f, km)
    for name in ("k.keras", "k.weights.h5", "k_legacy.h5"):
        ours = A.MobileNetV2(weights=str(tmp_path / name), **kw)
        np.testing.assert_allclose(predict(ours, x), want, rtol=1e-4, atol=1e-4, err_msg=name)


def test_preprocess_input_matches_keras():
    keras = pytest.importorskip("keras")
    x = np.random.default_rng(2).uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    for mod in ("vgg16", "resnet50", "mobilenet", "mobilenet_v2"):
        want = getattr(keras.applications, mod).preprocess_input(x.copy())
        np.testing.assert_allclose(getattr(A, mod).preprocess_input(x), want, rtol=1e-6, atol=1e-4)
