"""Embedding and Masking (deepgpu/layers/embedding.py) through the conformance harness, and their masks."""
import numpy as np
import pytest

import deepgpu as dg
from deepgpu import layers as L
from deepgpu.layers.base import get_keras_mask
from deepgpu.testing import LayerCase as C

CASES = [
    C(L.Embedding, dict(input_dim=6, output_dim=3), (2, 5), (None, 5, 3), input_dtype="int32",
      expected_num_params=18),
    C(L.Embedding, dict(input_dim=5, output_dim=4, mask_zero=True, embeddings_initializer="glorot_uniform"),
      (3, 4), (None, 4, 4), input_dtype="int32"),
    C(L.Embedding, dict(input_dim=4, output_dim=2, embeddings_regularizer="l2"), (2, 3, 2), (None, 3, 2, 2),
      input_dtype="int32"),
    C(L.Masking, dict(mask_value=0.0), (2, 4, 3), (None, 4, 3)),
    C(L.Masking, dict(mask_value=-1.5), (2, 3, 2, 2), (None, 3, 2, 2)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_layer(case, tfjs_batch):
    case.run(tfjs_batch=tfjs_batch)


def test_embedding_values_mask_and_gradient():
    e = L.Embedding(5, 2, mask_zero=True)
    ids = np.array([[1, 4, 0], [0, 0, 3]])
    y = e(ids)
    table = e.get_weights()[0]
    np.testing.assert_array_equal(y.data_sync(), table[ids])
    np.testing.assert_array_equal(get_keras_mask(y).data_sync(), ids != 0)
    assert get_keras_mask(L.Embedding(5, 2)(ids)) is None
    # float ids (as Keras accepts) are cast
    np.testing.assert_array_equal(e(ids.astype("float32")).data_sync(), table[ids])


def test_embedding_refuses_ids_out_of_range_naming_the_layer():
    e = L.Embedding(5, 2, name="words")
    e(np.array([[1, 2]]))
    before = e.get_weights()[0].copy()
    for bad, lo, hi in ((np.array([[1, 5]]), 1, 5), (np.array([[-1, 2]]), -1, 2)):
        with pytest.raises(ValueError, match=rf"'words'.*\[0, 5\).*\[{lo}, {hi}\]"):
            e(bad)
    np.testing.assert_array_equal(e.get_weights()[0], before)
    model = dg.Sequential([L.Input((2,), dtype="int32"), L.Embedding(3, 2, name="emb")])
    with pytest.raises(ValueError, match="'emb'"):
        model.predict(np.array([[0, 3]]), verbose=0)


def test_ragged_sequences_are_refused_naming_the_layer():
    with pytest.raises(ValueError, match=r"'emb'.*ragged.*lengths 1, 3"):
        L.Embedding(5, 2, name="emb")([[1, 2, 3], [4]])
    with pytest.raises(ValueError, match="Masking.*ragged"):
        L.Masking()([[[1.0], [2.0]], [[3.0]]])


def test_masking_values_and_mask():
    x = np.arange(12, dtype="float32").reshape(2, 3, 2) + 1
    x[0, 1] = 0
    x[1, 2] = 0
    x[1, 0, 0] = 0  # one zero feature does not mask the step
    y = L.Masking()(x)
    np.testing.assert_array_equal(get_keras_mask(y).data_sync(), [[True, False, True], [True, True, False]])
    np.testing.assert_array_equal(y.data_sync(), x)
    x2 = x.copy()
    x2[0, 2] = 7.0
    y2 = L.Masking(7.0)(x2)
    assert not get_keras_mask(y2).data_sync()[0, 2]
    assert (y2.data_sync()[0, 2] == 0).all()


def test_embedding_config_from_tfjs_and_keras2_names():
    # TF.js and Keras 2 write input_length; it sets the input shape.
    e = L.Embedding.from_config({"input_dim": 7, "output_dim": 2, "input_length": 4, "mask_zero": True,
                                 "embeddings_initializer": {"class_name": "RandomUniform",
                                                            "config": {"minval": -0.05, "maxval": 0.05,
                                                                       "seed": None}}})
    model = dg.Sequential([e])
    assert model.output_shape == (None, 4, 2)


def test_ragged_data_for_a_model_is_refused_naming_the_first_layer():
    model = dg.Sequential([L.Input((None,), dtype="int32"), L.Embedding(10, 3, mask_zero=True, name="emb"),
                           L.GlobalAveragePooling1D()])
    model.compile(optimizer="sgd", loss="mse")
    for call in (lambda: model.predict([[1, 2, 3], [4]], verbose=0),
                 lambda: model.fit([[1, 2, 3], [4]], np.zeros((2, 3)), verbose=0)):
        with pytest.raises(ValueError, match=r"ragged list of 2 sequences \(lengths 1, 3\).*'emb', Embedding"):
            call()
    assert model.predict([[1, 2, 3], [4, 5, 6]], verbose=0).shape == (2, 3)
