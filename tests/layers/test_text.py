"""Text layers (deepgpu/layers/text.py) through the conformance harness, and TextVectorization's
Keras 3 semantics: standardize, split, n-grams, the vocabulary's order, the output modes, saving.

String inputs go to the harness as ``input_data`` (a NumPy str array); a text layer has no
gradient and no device kernel, and TF.js and ONNX have no text layers (saving raises, naming it).
"""
import json
import zipfile

import numpy as np
import pytest

import deepgpu as dg
from deepgpu import layers as L
from deepgpu.layers.text import TextVectorization
from deepgpu.testing import LayerCase as C

TEXTS = np.array(["The cat sat on the mat.", "A dog, a cat!", "the END", "", "Cats & dogs; the (big) mat"])
VOCAB = ["the", "cat", "mat", "a", "dog", "sat"]
_NO_FORMAT = {"tfjs": "TF.js has no TextVectorization layer", "onnx": "ONNX has no string tokenization here"}
_HOST = {"cuda_emulated": "host-side string processing: no device kernel", "cuda": "host-side string processing"}


def _case(kwargs, data=TEXTS, out_shape=None, **kw):
    return C(TextVectorization, kwargs, data.shape, out_shape, input_data=data, unsupported=dict(_NO_FORMAT),
             skip=dict(_HOST), expected_num_weights=0, wrong_rank_shape=(2, 2, 2), **kw)


CASES = [
    _case(dict(vocabulary=VOCAB, output_sequence_length=6), out_shape=(None, 6)),
    _case(dict(vocabulary=VOCAB, output_sequence_length=4, ngrams=2, max_tokens=30), data=TEXTS.reshape(-1, 1),
          out_shape=(None, 4), id="ngrams-column"),
    _case(dict(vocabulary=VOCAB, output_mode="multi_hot"), out_shape=(None, 7)),
    _case(dict(vocabulary=VOCAB, output_mode="count", max_tokens=10, pad_to_max_tokens=True), out_shape=(None, 10)),
    _case(dict(vocabulary=VOCAB, output_mode="tf_idf", idf_weights=[0.5, 1.0, 1.5, 2.0, 0.25, 3.0]),
          out_shape=(None, 7)),
    _case(dict(vocabulary=list("abcdefghij"), split="character", standardize="lower", output_sequence_length=8),
          out_shape=(None, 8), id="characters"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_layer(case, tfjs_batch):
    case.run(tfjs_batch=tfjs_batch)


def _ids(layer, texts):
    return layer(np.asarray(texts)).data_sync()


def test_standardize_split_and_the_special_ids():
    tv = TextVectorization(vocabulary=VOCAB, output_sequence_length=7)
    # lowercased, punctuation gone ("&" too), "big" and "dogs" unknown (1), padded with 0 at the end
    np.testing.assert_array_equal(_ids(tv, ["The CAT, sat!", "big cat & dogs"]),
                                  [[2, 3, 7, 0, 0, 0, 0], [1, 3, 1, 0, 0, 0, 0]])
    assert tv.get_vocabulary() == ["", "[UNK]"] + VOCAB
    assert tv.get_vocabulary(include_special_tokens=False) == VOCAB
    assert tv.vocabulary_size() == 8
    # Keras lowercases ASCII only (tf.strings.lower), and splits on ASCII whitespace only
    raw = TextVectorization(standardize="lower", split="whitespace")
    raw.adapt(["ÉCOLE école A\u00a0b"])
    assert raw.get_vocabulary()[2:] == ["école", "École", "a\u00a0b"]  # Keras 3.15's order


def test_adapt_orders_by_count_then_token_descending_as_keras():
    tv = TextVectorization(max_tokens=20)
    tv.adapt(["The cat sat.", "the dog, the cat!", "a bird"])
    assert tv.get_vocabulary() == ["", "[UNK]", "the", "cat", "sat", "dog", "bird", "a"]
    small = TextVectorization(max_tokens=4)
    small.adapt(["The cat sat.", "the dog, the cat!", "a bird"])
    assert small.get_vocabulary() == ["", "[UNK]", "the", "cat"]


def test_adapt_takes_batches_from_a_dataset_and_a_generator():
    a, b, c = TextVectorization(), TextVectorization(), TextVectorization()
    a.adapt(list(TEXTS))
    b.adapt(dg.data.Dataset.from_tensor_slices(TEXTS).batch(2))
    c.adapt(iter([TEXTS[:2], list(TEXTS[2:])]))
    assert a.get_vocabulary() == b.get_vocabulary() == c.get_vocabulary()
    first = TextVectorization()
    first.adapt(dg.data.Dataset.from_tensor_slices(TEXTS).batch(2), steps=1)
    assert set(first.get_vocabulary()[2:]) == {"the", "cat", "sat", "on", "mat", "a", "dog"}
    with pytest.raises(TypeError, match="texts and labels"):
        a.adapt(dg.data.Dataset.from_tensor_slices((TEXTS, np.arange(5))).batch(2))


def test_ngrams_and_tf_idf_as_keras():
    tv = TextVectorization(output_mode="tf_idf", ngrams=2)
    tv.adapt(["The cat sat.", "the dog, the cat!", "a bird"])
    vocab = tv.get_vocabulary()
    assert vocab[:4] == ["[UNK]", "the", "the cat", "cat"]
    out = _ids(tv, ["the cat the", "bird"])
    idf_the = np.log(1 + 3 / (1 + 2))  # "the" is in 2 of 3 documents
    np.testing.assert_allclose(out[0, 1], 2 * idf_the, rtol=1e-6)   # counted twice
    np.testing.assert_allclose(out[1, vocab.index("bird")], np.log(1 + 3 / 2), rtol=1e-6)
    learned = np.log(1 + 3 / (1 + np.array([2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1])))
    assert out.shape == (2, 12)
    cfg = tv.get_config()
    np.testing.assert_allclose(cfg["idf_weights"][1:], learned, rtol=1e-6)
    np.testing.assert_allclose(cfg["idf_weights"][0], learned.astype(np.float32).mean(), rtol=1e-6)


def test_outputs_match_keras_where_installed():
    keras = pytest.importorskip("keras")
    corpus = [f"{w} {v}, {u}!" for w in ("The", "a", "cat", "Dog") for v in ("sat", "ran", "cat") for u in ("x", "y")]
    for kwargs in (dict(max_tokens=8, output_sequence_length=5), dict(output_mode="count", ngrams=2),
                   dict(output_mode="tf_idf", max_tokens=12, pad_to_max_tokens=True),
                   dict(split="character", output_mode="multi_hot")):
        k, d = keras.layers.TextVectorization(**kwargs), TextVectorization(**kwargs)
        k.adapt(corpus)
        d.adapt(corpus)
        assert [str(t) for t in k.get_vocabulary()] == d.get_vocabulary(), kwargs
        probe = np.array(["the cat ran, a dog!", "zebra", "x y x"])
        np.testing.assert_allclose(_ids(d, probe), keras.ops.convert_to_numpy(k(probe)), rtol=1e-5, atol=1e-6)


def test_a_model_starting_with_text_vectorization_predicts_and_trains_on_strings(tmp_path):
    tv = TextVectorization(max_tokens=50, output_sequence_length=4)
    tv.adapt(TEXTS)
    inputs = L.Input(shape=(1,), dtype="string")
    x = L.Dense(3)(tv(inputs))
    model = dg.models.Model(inputs, x)
    y_list = model.predict(["the cat", "dog mat sat"]).data_sync()
    y_col = model.predict(np.array([["the cat"], ["dog mat sat"]])).data_sync()
    np.testing.assert_array_equal(y_list, y_col)
    model.compile(optimizer="adam", loss="mse")
    model.fit(TEXTS, np.zeros((5, 3), np.float32), epochs=1, batch_size=2, verbose=0)
    for name in ("m.dgm", "m.keras"):
        model.save(tmp_path / name)
        again = dg.models.load_model(tmp_path / name)
        np.testing.assert_allclose(again.predict(TEXTS).data_sync(), model.predict(TEXTS).data_sync(), rtol=1e-6)
        assert again.layers[1].get_vocabulary() == tv.get_vocabulary()
    seq = dg.models.Sequential([TextVectorization(vocabulary=VOCAB, output_mode="multi_hot"), L.Dense(1)])
    assert seq.predict(["the cat", "a dog"]).shape == (2, 1)


def test_keras_adapted_layer_file_loads_its_vocabulary_from_the_assets(tmp_path):
    """A .keras file as Keras 3 writes an adapted layer: config without vocabulary, vocabulary.txt in
    assets/, IDF weights by name in the weights file."""
    tv = TextVectorization(output_mode="tf_idf")
    tv.adapt(TEXTS)
    model = dg.models.Sequential([L.Input(shape=(), dtype="string"), tv])
    path = tmp_path / "k.keras"
    model.save(path)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    spec = json.loads(members["config.json"])
    layer_cfg = spec["config"]["layers"][1]["config"]
    layer_cfg.update(vocabulary=None, idf_weights=None, has_input_vocabulary=False)
    members["config.json"] = json.dumps(spec).encode()
    vocab = "\n".join(tv.get_vocabulary()).encode()
    members["assets/layers/text_vectorization/vocabulary.txt"] = vocab
    keras_like = tmp_path / "keras_like.keras"
    with zipfile.ZipFile(keras_like, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    again = dg.models.load_model(keras_like)
    assert again.layers[0].get_vocabulary() == tv.get_vocabulary()
    np.testing.assert_allclose(again.predict(TEXTS).data_sync(), model.predict(TEXTS).data_sync(), rtol=1e-6)


def test_bad_arguments_and_inputs_name_the_layer():
    with pytest.raises(ValueError, match="output_mode"):
        TextVectorization(output_mode="bag")
    with pytest.raises(ValueError, match="output_sequence_length"):
        TextVectorization(output_mode="count", output_sequence_length=3)
    with pytest.raises(ValueError, match="pad_to_max_tokens"):
        TextVectorization(pad_to_max_tokens=True, output_mode="count")
    with pytest.raises(ValueError, match="idf_weights"):
        TextVectorization(output_mode="tf_idf", vocabulary=["a"])
    tv = TextVectorization(name="tok", max_tokens=4)
    with pytest.raises(ValueError, match="'tok'.*no vocabulary"):
        tv(["a b"])
    with pytest.raises(ValueError, match="repeats"):
        tv.set_vocabulary(["a", "b", "a"])
    with pytest.raises(ValueError, match="max_tokens=4"):
        tv.set_vocabulary(["a", "b", "c"])
    with pytest.raises(ValueError, match=r"special token '\[UNK\]'"):
        tv.set_vocabulary(["a", "[UNK]"])
    assert tv.get_vocabulary() == ["", "[UNK]"]  # nothing changed
    tv.set_vocabulary(["a", "b"])
    with pytest.raises(TypeError, match="'tok'.*strings"):
        tv(np.ones((2, 1), np.float32))
    with pytest.raises(TypeError, match="'tok'.*int"):
        tv(np.array(["a", 3], dtype=object))
    with pytest.raises(ValueError, match=r"'tok'.*\(batch,\) or \(batch, 1\).*\(None, 2\)"):
        tv(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="cannot adapt"):
        TextVectorization(vocabulary=["a"]).adapt(["a b"])
    with pytest.raises(TypeError, match="dtype='string'"):
        tv(L.Input(shape=(1,)))
