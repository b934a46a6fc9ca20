"""Keras's everyday helpers under Keras's names: dg.utils, Tensor.numpy, to_json / model_from_json,
clone_model."""
import numpy as np
import pytest

import deepgpu as dg
from deepgpu import layers as L


def _functional():
    a = L.Input((4,), name="a")
    h = L.BatchNormalization()(L.Dense(3, activation="relu")(a))
    return dg.Model(a, L.Dense(2)(h), name="f")


X = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)


@pytest.mark.parametrize("make", [_functional, lambda: dg.Sequential([L.Input((4,)), L.Dense(3), L.Dense(2)])])
def test_to_json_and_model_from_json_rebuild_the_architecture(make):
    m = make()
    back = dg.models.model_from_json(m.to_json())
    assert type(back) is type(m) and back.to_json() == m.to_json()
    back.set_weights(m.get_weights())
    np.testing.assert_array_equal(back.predict(X).numpy(), m.predict(X).numpy())


@pytest.mark.parametrize("bad", ["{not json", "[1, 2]", '{"config": {}}'])
def test_model_from_json_names_what_is_wrong(bad):
    with pytest.raises(ValueError, match="model_from_json"):
        dg.models.model_from_json(bad)


def test_clone_model_has_the_architecture_and_fresh_weights():
    m = _functional()
    for clone in (dg.utils.clone_model(m), dg.models.clone_model(m)):
        assert clone.to_json() == m.to_json()
        assert all(a is not b for a, b in zip(clone.weights, m.weights))
        kernel = clone.get_weights()[0]
        assert not np.array_equal(kernel, m.get_weights()[0])  # initialized anew
        clone.layers[1].kernel.assign(np.zeros_like(kernel))
        assert np.abs(m.layers[1].kernel.numpy()).sum() > 0  # nothing shared


def test_tensor_numpy_is_an_explicit_host_read():
    t = dg.tensor([[1.0, 2.0]])
    out = t.numpy()
    assert isinstance(out, np.ndarray) and out.tolist() == [[1.0, 2.0]]
    t.dispose()
    from deepgpu.tensor import DisposedTensorError
    with pytest.raises(DisposedTensorError):
        t.numpy()


def test_set_random_seed_and_to_categorical():
    dg.utils.set_random_seed(7)
    a = dg.random_normal((3,)).numpy()
    dg.utils.set_random_seed(7)
    np.testing.assert_array_equal(dg.random_normal((3,)).numpy(), a)
    np.testing.assert_array_equal(dg.utils.to_categorical([0, 2], 3), [[1, 0, 0], [0, 0, 1]])


def test_plot_model_takes_kerass_arguments(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "m.png"
    dg.utils.plot_model(_functional(), to_file=str(path), show_shapes=True, show_layer_names=True, dpi=50,
                        rankdir="TB", expand_nested=False)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
