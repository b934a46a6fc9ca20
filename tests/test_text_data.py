"""pad_sequences and text_dataset_from_directory (Keras 3's arguments and results)."""
import numpy as np
import pytest

import deepgpu as dg
from deepgpu.preprocessing.sequence import pad_sequences


def test_pad_sequences_pre_post_maxlen_value():
    seqs = [[1, 2, 3], [4], [], [5, 6, 7, 8]]
    np.testing.assert_array_equal(pad_sequences(seqs), [[0, 1, 2, 3], [0, 0, 0, 4], [0, 0, 0, 0], [5, 6, 7, 8]])
    np.testing.assert_array_equal(pad_sequences(seqs, maxlen=2), [[2, 3], [0, 4], [0, 0], [7, 8]])
    np.testing.assert_array_equal(pad_sequences(seqs, maxlen=3, padding="post", truncating="post", value=-1),
                                  [[1, 2, 3], [4, -1, -1], [-1, -1, -1], [5, 6, 7]])
    assert pad_sequences(seqs).dtype == np.int32
    floats = pad_sequences([[0.5], [1.5, 2.5]], dtype="float32", value=np.nan)
    assert floats.dtype == np.float32 and np.isnan(floats[0, 0]) and floats[1, 1] == 2.5
    vectors = pad_sequences([np.ones((2, 3)), np.ones((1, 3))], maxlen=3)
    assert vectors.shape == (3 - 1, 3, 3) and vectors[1, :2].sum() == 0
    assert pad_sequences([], maxlen=4).shape == (0, 4)
    np.testing.assert_array_equal(pad_sequences([["a", "b"], ["c"]], dtype=object, value="<pad>"),
                                  np.array([["a", "b"], ["<pad>", "c"]], dtype=object))
    assert dg.utils.pad_sequences is dg.preprocessing.pad_sequences is pad_sequences


def test_pad_sequences_matches_keras_where_installed():
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(0)
    seqs = [list(rng.integers(1, 9, rng.integers(0, 7))) for _ in range(20)]
    for kw in (dict(), dict(maxlen=4), dict(maxlen=5, padding="post"), dict(maxlen=3, truncating="post", value=9)):
        np.testing.assert_array_equal(pad_sequences(seqs, **kw), keras.utils.pad_sequences(seqs, **kw))


def test_pad_sequences_bad_input_says_what():
    with pytest.raises(ValueError, match="sequence 1 is not a sequence"):
        pad_sequences([[1], 2])
    with pytest.raises(ValueError, match="padding"):
        pad_sequences([[1]], padding="middle")
    with pytest.raises(ValueError, match="truncating"):
        pad_sequences([[1]], truncating="both")
    with pytest.raises(ValueError, match="maxlen"):
        pad_sequences([[1]], maxlen=-1)
    with pytest.raises(ValueError, match="sequence 1.*shape"):
        pad_sequences([np.ones((2, 3)), np.ones((1, 4))])
    with pytest.raises(ValueError, match="str padding value"):
        pad_sequences([[1]], value="x")
    with pytest.raises(ValueError, match="list"):
        pad_sequences("abc")


def _folder(tmp_path):
    root = tmp_path / "texts"
    files = {"neg": ["bad film", "awful", "dull plot", "boring"], "pos": ["great film", "loved it", "superb"]}
    for cls, texts in files.items():
        (root / cls).mkdir(parents=True)
        for i, t in enumerate(texts):
            (root / cls / f"{i}.txt").write_text(t + " " + "x" * i)
    (root / "neg" / "ignored.md").write_text("not a txt file")
    (root / "top.txt").write_text("outside any class")
    return root, files


def _all(ds):
    xs, ys = [], []
    for x, y in ds:
        xs += [str(t) for t in x]
        ys += list(y)
    return xs, np.asarray(ys)


def test_text_dataset_from_directory_labels_from_subfolders(tmp_path):
    root, files = _folder(tmp_path)
    ds = dg.utils.text_dataset_from_directory(root, batch_size=3, shuffle=False, verbose=False)
    assert ds.class_names == ["neg", "pos"]
    texts, labels = _all(ds)
    assert len(texts) == 7 and labels.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert texts[0] == "bad film " and texts[4] == "great film "
    x, y = next(iter(ds))
    assert x.shape == (3,) and y.dtype == np.int32
    cut = dg.preprocessing.text_dataset_from_directory(root, batch_size=None, shuffle=False, max_length=4,
                                                       label_mode="categorical", verbose=False)
    x0, y0 = next(iter(cut))
    assert str(x0) == "bad " and y0.tolist() == [1.0, 0.0]
    binary = dg.utils.text_dataset_from_directory(root, label_mode="binary", shuffle=False, verbose=False)
    assert next(iter(binary))[1].shape == (7, 1)
    only = dg.utils.text_dataset_from_directory(root, labels=None, shuffle=False, verbose=False)
    assert next(iter(only)).shape == (8,)  # every .txt file, the top-level one too


def test_text_dataset_from_directory_split_is_seeded_and_disjoint(tmp_path):
    root, _ = _folder(tmp_path)
    train, val = dg.utils.text_dataset_from_directory(root, validation_split=0.3, subset="both", seed=7,
                                                      batch_size=2, verbose=False)
    tx, ty = _all(train)
    vx, vy = _all(val)
    assert len(vx) == 2 and len(tx) == 5 and not set(tx) & set(vx)
    again = dg.utils.text_dataset_from_directory(root, validation_split=0.3, subset="validation", seed=7,
                                                 verbose=False)
    assert sorted(_all(again)[0]) == sorted(vx)
    # The pairs stay together through the shuffle.
    for t, y in zip(tx + vx, list(ty) + list(vy)):
        assert (y == 1) == (t.split()[0] in ("great", "loved", "superb"))


def test_text_dataset_from_directory_bad_arguments(tmp_path):
    root, _ = _folder(tmp_path)
    f = dg.utils.text_dataset_from_directory
    with pytest.raises(FileNotFoundError, match="no such folder"):
        f(tmp_path / "nope")
    with pytest.raises(ValueError, match="label_mode"):
        f(root, label_mode="sparse")
    with pytest.raises(ValueError, match="seed"):
        f(root, validation_split=0.2, subset="training")
    with pytest.raises(ValueError, match="go together"):
        f(root, validation_split=0.2, seed=1)
    with pytest.raises(ValueError, match="class_names"):
        f(root, class_names=["neg", "other"])
    with pytest.raises(ValueError, match="batch_size"):
        f(root, batch_size=0)
    with pytest.raises(ValueError, match="2 classes"):
        (root / "meh").mkdir()
        f(root, label_mode="binary")


def test_text_dataset_from_directory_lists_files_in_keras_order(tmp_path):
    """Keras takes folders by path, then each folder's files by name: "a-b" sorts before "a/x"
    ('-' < '/'), so with labels=None or a labels list a-b/3.txt comes before a/x/2.txt."""
    for rel in ("top.txt", "a/1.txt", "a/z.txt", "a/x/2.txt", "a-b/3.txt", "b/4.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    texts = [t for t in dg.utils.text_dataset_from_directory(tmp_path, labels=None, batch_size=None,
                                                             shuffle=False, verbose=False)]
    got = [t.decode() if isinstance(t, bytes) else str(t) for t in texts]
    assert got == ["top.txt", "a/1.txt", "a/z.txt", "a-b/3.txt", "a/x/2.txt", "b/4.txt"]
