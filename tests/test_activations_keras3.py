"""The Keras 3 activations deepgpu added beside its first set (celu, glu, hard_shrink,
hard_tanh, log_sigmoid, soft_shrink, sparse_plus, sparse_sigmoid, sparsemax, squareplus,
tanh_shrink, threshold): values against NumPy references on every backend and against
Keras 3 itself, float64 finite-difference gradients, names, serialization and the
file formats that can or cannot hold them."""
import numpy as np
import pytest

import deepgpu as dg
from deepgpu import activations, layers
from deepgpu.testing import assert_close, backend, check_gradients  # noqa: F401  (backend: fixture)

RNG = np.random.default_rng(18)


def _softplus(x):
    return np.logaddexp(0.0, x)


def _sparsemax(x, axis=-1):
    """Martins & Astudillo (2016), Algorithm 1, by sorting."""
    z = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    zs = -np.sort(-z, axis=-1)
    cs = np.cumsum(zs, axis=-1)
    r = np.arange(1, z.shape[-1] + 1)
    k = np.sum(1 + r * zs > cs, axis=-1, keepdims=True)
    tau = (np.take_along_axis(cs, k - 1, axis=-1) - 1) / k
    return np.moveaxis(np.maximum(z - tau, 0.0), -1, axis)


def _glu(x, axis=-1):
    a, b = np.split(x, 2, axis=axis)
    return a / (1 + np.exp(-b))


# name -> (kwargs, NumPy reference)
NP_REF = {
    "celu": ({}, lambda x: np.maximum(x, 0) + np.minimum(0, np.expm1(x))),
    "celu_a": ({"alpha": 0.5}, lambda x: np.maximum(x, 0) + np.minimum(0, 0.5 * np.expm1(x / 0.5))),
    "glu": ({}, _glu),
    "glu_axis0": ({"axis": 0}, lambda x: _glu(x, 0)),
    "hard_shrink": ({}, lambda x: np.where(np.abs(x) > 0.5, x, 0.0)),
    "hard_shrink_t": ({"threshold": 1.5}, lambda x: np.where(np.abs(x) > 1.5, x, 0.0)),
    "hard_tanh": ({}, lambda x: np.clip(x, -1, 1)),
    "log_sigmoid": ({}, lambda x: -_softplus(-x)),
    "soft_shrink": ({}, lambda x: np.sign(x) * np.maximum(np.abs(x) - 0.5, 0)),
    "soft_shrink_t": ({"threshold": 1.0}, lambda x: np.sign(x) * np.maximum(np.abs(x) - 1.0, 0)),
    "sparse_plus": ({}, lambda x: np.where(x <= -1, 0.0, np.where(x >= 1, x, (x + 1) ** 2 / 4))),
    "sparse_sigmoid": ({}, lambda x: np.clip((x + 1) / 2, 0, 1)),
    "sparsemax": ({}, _sparsemax),
    "sparsemax_axis0": ({"axis": 0}, lambda x: _sparsemax(x, 0)),
    "squareplus": ({}, lambda x: (x + np.sqrt(x * x + 4)) / 2),
    "squareplus_b": ({"b": 1.0}, lambda x: (x + np.sqrt(x * x + 1)) / 2),
    "tanh_shrink": ({}, lambda x: x - np.tanh(x)),
    "threshold": ({"threshold": 0.3, "default_value": -2.0}, lambda x: np.where(x > 0.3, x, -2.0)),
}
NEW = ["celu", "glu", "hard_shrink", "hard_tanh", "log_sigmoid", "soft_shrink", "sparse_plus",
       "sparse_sigmoid", "sparsemax", "squareplus", "tanh_shrink", "threshold"]


def _fn(key):
    kwargs, _ = NP_REF[key]
    f = activations.get(key.split("_axis")[0] if key.startswith(("glu", "sparsemax")) else
                        key[:-2] if key.endswith(("_a", "_t", "_b")) else key)
    return lambda x: f(x, **kwargs)


def _data(shape=(4, 6), scale=2.0):
    x = RNG.standard_normal(shape) * scale
    # keep finite differences and float32 comparisons off the kinks (0, +-0.5, +-1, +-1.5, 0.3)
    for kink in (0.0, 0.3, 0.5, -0.5, 1.0, -1.0, 1.5, -1.5):
        x[np.abs(x - kink) < 1e-2] = 0.77
    return x


@pytest.mark.parametrize("key", sorted(NP_REF))
def test_forward_matches_numpy(backend, key):
    x = _data().astype(np.float32)
    assert_close(_fn(key)(dg.tensor(x)), NP_REF[key][1](x.astype(np.float64)), 1e-5, 1e-6)


@pytest.mark.parametrize("key", sorted(NP_REF))
def test_gradients_match_finite_differences(key):
    x = _data((4, 4))
    check_gradients(_fn(key), [x])


def test_sparsemax_is_a_projection_onto_the_simplex():
    x = RNG.standard_normal((5, 7)) * 0.3  # closely spaced: several entries in the support
    y = activations.sparsemax(dg.tensor(x, "float64")).array_sync()
    y = np.asarray(y)
    assert (y >= 0).all()
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-12)
    assert ((y > 0).sum(-1) > 1).any()
    # ties: equal logits share the mass
    assert_close(activations.sparsemax(dg.tensor(np.array([[2.0, 2.0, -3.0]]))), np.array([[0.5, 0.5, 0.0]]))


@pytest.mark.parametrize("name", NEW)
def test_names_and_serialization(name):
    fn = activations.get(name)
    assert activations.serialize(fn) == name
    assert activations.deserialize(name) is fn
    camel = name.split("_")[0] + "".join(p.title() for p in name.split("_")[1:])
    assert activations.get(camel) is fn  # TF.js-style spelling
    assert activations.get("hard_swish") is activations.hard_silu


@pytest.mark.parametrize("name", ["log_sigmoid", "hard_tanh", "celu", "squareplus", "sparsemax", "glu"])
def test_by_name_in_layers(name):
    x = _data((2, 6)).astype(np.float32)
    ref = NP_REF[name][1]
    assert_close(layers.Activation(name)(dg.tensor(x)), ref(x.astype(np.float64)), 1e-5, 1e-6)
    dense = layers.Dense(4, activation=name)
    y = dense(dg.tensor(x))
    k, b = (np.asarray(w.array_sync()) for w in dense.weights)
    assert_close(y, ref(x.astype(np.float64) @ k + b), 1e-5, 1e-6)
    assert tuple(y.shape[1:]) == tuple(dense.compute_output_shape((None, 6))[1:])
    clone = layers.Dense.from_config(dense.get_config())
    assert clone.activation is activations.get(name)


def test_glu_odd_axis_is_a_clear_error():
    with pytest.raises(ValueError, match="even size"):
        activations.glu(dg.tensor(np.ones((2, 5), np.float32)))


def test_threshold_needs_its_arguments_as_in_keras():
    with pytest.raises(TypeError):
        activations.get("threshold")(dg.tensor(np.ones((2, 3), np.float32)))


# ------------------------------------------------------------- against Keras 3

KERAS_CASES = [
    ("celu", {}), ("celu", {"alpha": 0.5}), ("glu", {}), ("glu", {"axis": 1}),
    ("hard_shrink", {}), ("hard_shrink", {"threshold": 1.0}), ("hard_tanh", {}), ("log_sigmoid", {}),
    ("soft_shrink", {}), ("soft_shrink", {"threshold": 1.2}), ("sparse_plus", {}), ("sparse_sigmoid", {}),
    ("squareplus", {}), ("squareplus", {"b": 1}), ("tanh_shrink", {}),
    ("threshold", {"threshold": 0.3, "default_value": -2.0}), ("hard_swish", {}),
]


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


@pytest.mark.parametrize("name,kwargs", KERAS_CASES, ids=lambda v: str(v))
def test_values_match_keras(keras, name, kwargs):
    x = _data((3, 4, 6), 3.0).astype(np.float32)
    want = keras.ops.convert_to_numpy(getattr(keras.activations, name)(x, **kwargs))
    assert_close(activations.get(name)(dg.tensor(x), **kwargs), want, 1e-5, 1e-6)


def test_sparsemax_matches_keras_where_keras_is_right(keras):
    # Keras 3.15's sparsemax sums the cumulative sums over the support (keras-team/keras#23425,
    # fixed upstream by #23469), so it agrees with the projection only when one entry survives.
    x = np.array([[0.1, 3.0, -1.0, 0.5], [-2.0, -1.0, 2.5, 0.0]], np.float32)
    want = keras.ops.convert_to_numpy(keras.activations.sparsemax(x))
    assert_close(activations.sparsemax(dg.tensor(x)), want)
    assert_close(activations.sparsemax(dg.tensor(x)), _sparsemax(x))


@pytest.mark.parametrize("name", NEW[:-1])  # threshold has required arguments: not usable by name
def test_keras_resolves_the_names_deepgpu_writes(keras, name):
    assert keras.activations.serialize(keras.activations.get(name)) == activations.serialize(activations.get(name))


# ------------------------------------------------------------- file formats

def _model(name):
    m = dg.models.Sequential([layers.Input((6,)), layers.Dense(4, activation=name, name="d")])
    return m


@pytest.mark.parametrize("name", NEW[:-1])
def test_save_tfjs_refuses_naming_the_layer(tmp_path, name):
    from deepgpu.io import save_tfjs
    with pytest.raises(ValueError, match=r"(?s)d.*" + name):
        save_tfjs(_model(name), str(tmp_path / "m"))


@pytest.mark.parametrize("name", NEW[:-1])
def test_keras_file_round_trip(tmp_path, name):
    from deepgpu.io import load_keras, save_keras
    m = _model(name)
    x = _data((3, 6)).astype(np.float32)
    save_keras(m, str(tmp_path / "m.keras"))
    m2 = load_keras(str(tmp_path / "m.keras"))
    assert m2.layers[-1].activation is activations.get(name)
    assert_close(m2.predict(x, verbose=0), m.predict(x, verbose=0), 1e-6, 1e-7)


@pytest.mark.parametrize("opset", [13, 17, 18])
@pytest.mark.parametrize("name", NEW[:-1])
def test_onnx_export_matches_onnxruntime(tmp_path, name, opset):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from deepgpu.io import export_onnx
    m = _model(name)
    path = str(tmp_path / "m.onnx")
    export_onnx(m, path, opset=opset)
    x = (_data((3, 6)) * (0.3 if name == "sparsemax" else 1.0)).astype(np.float32)  # sparsemax: wide supports
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert_close(got, m.predict(x, verbose=0), 1e-5, 1e-6)
