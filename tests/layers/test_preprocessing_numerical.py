"""Normalization and Discretization (deepgpu/layers/preprocessing/numerical.py) through the harness,
and adapt() against NumPy."""
import numpy as np
import pytest

from deepgpu import layers as L
from deepgpu import tensor
from deepgpu.testing import LayerCase as C

_NO_TFJS = "TF.js has no {} layer"
CASES = [
    C(L.Normalization, {}, (4, 5), (None, 5), expected_num_weights=3, expected_num_trainable_weights=0,
      unsupported={"tfjs": _NO_TFJS.format("Normalization")}),
    C(L.Normalization, dict(axis=None, mean=0.5, variance=4.0), (3, 4), (None, 4),
      unsupported={"tfjs": _NO_TFJS.format("Normalization")}),
    C(L.Normalization, dict(mean=[0.1, -0.2, 0.3], variance=[1.0, 2.0, 0.5]), (2, 4, 4, 3), (None, 4, 4, 3),
      unsupported={"tfjs": _NO_TFJS.format("Normalization")}),
    C(L.Normalization, dict(axis=(1, 2), invert=True), (2, 3, 4, 2), (None, 3, 4, 2),
      unsupported={"tfjs": _NO_TFJS.format("Normalization")}),
    C(L.Discretization, dict(bin_boundaries=[-0.5, 0.0, 0.7]), (4, 5), (None, 5),
      unsupported={"tfjs": _NO_TFJS.format("Discretization"), "onnx": "int64 output: only float32 exports"},
      skip={"gradients": "a step function: no gradient"}),
    C(L.Discretization, dict(bin_boundaries=[-1.0, 1.0], output_mode="one_hot"), (3, 4), (None, 4, 3),
      unsupported={"tfjs": _NO_TFJS.format("Discretization"), "onnx": "no ONNX export of bucketing"},
      skip={"gradients": "a step function: no gradient"}),
    C(L.Discretization, dict(bin_boundaries=[0.0], output_mode="count"), (3, 4), (None, 2),
      unsupported={"tfjs": _NO_TFJS.format("Discretization"), "onnx": "no ONNX export of bucketing"},
      skip={"gradients": "a step function: no gradient"}),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_layer(case, tfjs_batch):
    int_out = case.layer_cls is L.Discretization and case.init_kwargs.get("output_mode", "int") == "int"
    case.run(tfjs_batch=tfjs_batch, **({"expected_output_dtype": "int64"} if int_out else {}))


def test_normalization_adapt_on_array_and_batches():
    x = np.random.default_rng(0).normal(3.0, 2.0, (100, 4, 3)).astype(np.float32)
    for data in (x, (x[i:i + 7] for i in range(0, 100, 7)), [(x[:50], None), (x[50:], None)]):
        layer = L.Normalization(axis=-1)
        layer.adapt(data)
        np.testing.assert_allclose(layer.mean.data_sync(), x.reshape(-1, 3).mean(0), rtol=1e-5)
        np.testing.assert_allclose(layer.variance.data_sync(), x.reshape(-1, 3).var(0), rtol=1e-4)
        assert int(layer.count.data_sync()) == 400
        y = layer(tensor(x)).data_sync()
        np.testing.assert_allclose(y.reshape(-1, 3).mean(0), 0, atol=1e-4)


def test_normalization_adapt_refused_when_given_stats():
    with pytest.raises(ValueError, match="Normalization"):
        L.Normalization(mean=0.0, variance=1.0).adapt(np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="both"):
        L.Normalization(mean=0.0)


def test_discretization_adapt_quantiles_and_bucketing():
    x = np.arange(100, dtype=np.float32).reshape(25, 4)
    layer = L.Discretization(num_bins=4)
    layer.adapt(x)
    assert layer.bin_boundaries == [25.0, 50.0, 75.0]
    got = layer(tensor(np.array([[-1.0, 25.0, 49.9, 99.0]], np.float32))).data_sync()
    np.testing.assert_array_equal(got, [[0, 1, 1, 3]])  # boundaries[i-1] <= x < boundaries[i]
    with pytest.raises(ValueError, match="adapt"):
        L.Discretization(num_bins=3)(tensor(x))
