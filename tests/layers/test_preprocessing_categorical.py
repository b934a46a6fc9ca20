"""CategoryEncoding (deepgpu/layers/preprocessing/categorical.py) through the conformance harness."""
import numpy as np
import pytest

from deepgpu import layers as L
from deepgpu import tensor
from deepgpu.testing import LayerCase as C

_INT = "integer ids: nothing to differentiate"
_NO_ONNX = "integer ids in: deepgpu exports float32 layers only"
_TFJS = "TF.js 4.22's CategoryEncoding overwrites its input's shape (the folder cannot be loaded)"
CASES = [
    C(L.CategoryEncoding, dict(num_tokens=5, output_mode="one_hot"), (4,), (None, 5), input_dtype="int32",
      skip={"gradients": _INT}, unsupported={"onnx": _NO_ONNX, "tfjs": _TFJS}),
    C(L.CategoryEncoding, dict(num_tokens=4, output_mode="one_hot"), (3, 1), (None, 4), input_dtype="int32",
      skip={"gradients": _INT}, unsupported={"onnx": _NO_ONNX, "tfjs": _TFJS}),
    C(L.CategoryEncoding, dict(num_tokens=6), (3, 4), (None, 6), input_dtype="int32",
      skip={"gradients": _INT}, unsupported={"onnx": _NO_ONNX, "tfjs": _TFJS}),
    C(L.CategoryEncoding, dict(num_tokens=4, output_mode="count"), (3, 5), (None, 4), input_dtype="int32",
      skip={"gradients": _INT}, unsupported={"onnx": _NO_ONNX, "tfjs": _TFJS}),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_layer(case, tfjs_batch):
    case.run(tfjs_batch=tfjs_batch)


def test_values_and_out_of_range_ids():
    ids = tensor(np.array([[0, 2, 2], [3, 3, 1]]), "int32")
    np.testing.assert_array_equal(L.CategoryEncoding(4, "count")(ids).data_sync(), [[1, 0, 2, 0], [0, 1, 0, 2]])
    np.testing.assert_array_equal(L.CategoryEncoding(4, "multi_hot")(ids).data_sync(), [[1, 0, 1, 0], [0, 1, 0, 1]])
    with pytest.raises(ValueError, match=r"CategoryEncoding.*\[0, 3\)"):
        L.CategoryEncoding(3)(ids)
    with pytest.raises(ValueError, match="output_mode"):
        L.CategoryEncoding(3, "tf_idf")


def test_count_weights_as_keras():
    """Keras 3.15 gives these sums for the same ids and weights, and refuses weights outside count mode."""
    ids = tensor(np.array([[0, 2, 2], [3, 3, 1]]), "int32")
    w = np.array([[0.5, 1.5, 2.0], [1.0, 0.25, 3.0]], np.float32)
    np.testing.assert_array_equal(L.CategoryEncoding(4, "count")(ids, count_weights=w).data_sync(),
                                  [[0.5, 0, 3.5, 0], [0, 3.0, 0, 1.25]])
    with pytest.raises(ValueError, match="count_weights is used only when output_mode='count'"):
        L.CategoryEncoding(4, "multi_hot")(ids, count_weights=w)
    with pytest.raises(ValueError, match=r"count_weights must have the ids' shape \(2, 3\), got \(2, 2\)"):
        L.CategoryEncoding(4, "count")(ids, count_weights=w[:, :2])


def test_recorded_step_skips_the_host_check(monkeypatch):
    """While a step is being recorded the range check (a host read) is left out: an id out of range
    encodes as zeros there, as Keras 3 encodes it everywhere."""
    from deepgpu import backends
    B = backends.current()
    monkeypatch.setattr(B, "capturing", True)
    monkeypatch.setattr(B, "to_numpy", lambda a: pytest.fail("the layer read device values on the host"))
    out = L.CategoryEncoding(3, "one_hot")(tensor(np.array([0, 5, 2]), "int32"))
    monkeypatch.undo()
    np.testing.assert_array_equal(out.data_sync(), [[1, 0, 0], [0, 0, 0], [0, 0, 1]])
