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
