"""deepgpu.data.csv and the image-folder reader / image helpers (Pillow)."""
import os

import numpy as np
import pytest

import deepgpu as dg
from deepgpu.data import CSVError, UnreadableImageError
from deepgpu.utils import array_to_img, image_dataset_from_directory, img_to_array, load_img, save_img

PIL = pytest.importorskip("PIL")
pytest.importorskip("PIL.Image")
import PIL.Image  # noqa: E402


def write(path, text):
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------------ CSV
def test_csv_header_label_and_types(tmp_path):
    f = write(tmp_path / "a.csv", "age,name,label\n30,ann,1\n41,bob,0\n")
    rows = list(dg.data.csv(f, label_name="label"))
    feats, lab = rows[0]
    assert set(feats) == {"age", "name"} and feats["age"].dtype == np.float32 and float(feats["age"]) == 30
    assert str(feats["name"]) == "ann" and float(lab) == 1
    b = list(dg.data.csv(f, label_name="label", column_defaults=[0, "", 0]).batch(2))[0]
    assert b[0]["age"].dtype == np.int32 and b[0]["age"].tolist() == [30, 41] and b[1].tolist() == [1, 0]


def test_csv_defaults_select_and_no_header(tmp_path):
    f = write(tmp_path / "b.csv", "1,,x\n2,5,y\n")
    rows = list(dg.data.csv(f, header=False, column_names=["a", "b", "c"], column_defaults=[0.0, -1.0, ""],
                            select_columns=["a", "b"]))
    assert [float(r["b"]) for r in rows] == [-1.0, 5.0] and set(rows[0]) == {"a", "b"}


def test_csv_tfjs_column_configs(tmp_path):
    f = write(tmp_path / "c.csv", "x1,x2,y\n1,2,0\n3,4,1\n")
    rows = list(dg.data.csv(f, columnConfigs={"y": {"isLabel": True}}))
    assert float(rows[1]["xs"]["x2"]) == 4 and float(rows[1]["ys"]["y"]) == 1


def test_make_csv_dataset_rejects_bad_inference_rows(tmp_path):
    f = write(tmp_path / "n.csv", "a,b\n1,2\n")
    for bad in (-1, None, 2.5):
        with pytest.raises(ValueError, match="num_rows_for_inference must be an int >= 0"):
            dg.data.make_csv_dataset(f, batch_size=1, num_rows_for_inference=bad)


def test_csv_errors_name_file_line_column(tmp_path):
    f = write(tmp_path / "bad.csv", "a,b\n1,2\n3,oops\n")
    with pytest.raises(CSVError, match=r"bad\.csv, line 3, column 'b': cannot parse 'oops' as float32"):
        list(dg.data.csv(f))
    with pytest.raises(CSVError, match=r"bad\.csv, line 1: no column 'label'"):
        dg.data.csv(f, label_name="label")
    g = write(tmp_path / "short.csv", "a,b,c\n1,2,3\n4,5\n")
    with pytest.raises(CSVError, match=r"short\.csv, line 3: 2 fields, expected 3 \(column 'c' is missing\)"):
        list(dg.data.csv(g))
    h = write(tmp_path / "gap.csv", "a,b\n1,\n")
    with pytest.raises(CSVError, match=r"gap\.csv, line 2, column 'b': missing value"):
        list(dg.data.csv(h, column_defaults=[0, []]))
    with pytest.raises(FileNotFoundError, match="nothing"):
        dg.data.csv(str(tmp_path / "nothing*.csv"))


def test_make_csv_dataset(tmp_path):
    f = write(tmp_path / "m.csv", "a,y\n" + "".join(f"{i},{i % 2}\n" for i in range(10)))
    feats, y = next(iter(dg.data.make_csv_dataset(f, batch_size=4, label_name="y", num_epochs=1, shuffle_seed=1)))
    assert feats["a"].shape == (4,) and y.shape == (4,)



def test_make_csv_dataset_infers_tf_types_over_many_rows(tmp_path):
    """tf.data's inference: int32 / int64 / float32 / string over the first 100 rows (a column
    whose first value is numeric and a later one not is a string), empty fields filled with 0, 0.0, ""."""
    f = write(tmp_path / "t.csv", "i,f,s,big,y\n1,2.5,7,1,0\n3,4,A12,5000000000,1\n5,,,,0\n")
    feats, y = next(iter(dg.data.make_csv_dataset(f, batch_size=3, label_name="y", num_epochs=1, shuffle=False)))
    got = {k: (v.dtype, v.tolist()) for k, v in feats.items()}
    assert got == {"i": (np.int32, [1, 3, 5]), "f": (np.float32, [2.5, 4.0, 0.0]),
                   "s": (np.dtype("<U3"), ["7", "A12", ""]), "big": (np.int64, [1, 5000000000, 0])}
    assert y.dtype == np.int32 and y.tolist() == [0, 1, 0]
    # past num_rows_for_inference the type is fixed: a later string is a named error
    with pytest.raises(CSVError, match=r"t.csv, line 3, column 's': cannot parse 'A12' as int32"):
        list(dg.data.make_csv_dataset(f, batch_size=3, num_epochs=1, shuffle=False, num_rows_for_inference=1))


# ------------------------------------------------------------------ images
@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for c, n in (("cat", 5), ("dog", 4), ("emu", 3)):
        (root / c).mkdir(parents=True)
        for i in range(n):
            a = rng.integers(0, 256, (10 + i, 14, 3), dtype=np.uint8)
            PIL.Image.fromarray(a).save(root / c / f"{i}.png")
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_labels_sizes_and_modes(folder, capsys):
    ds = image_dataset_from_directory(folder, image_size=(8, 6), batch_size=5, shuffle=False)
    assert "Found 12 files belonging to 3 classes." in capsys.readouterr().out
    assert ds.class_names == ["cat", "dog", "emu"] and len(ds) == 3
    batches = list(ds)
    x, y = batches[0]
    assert x.shape == (5, 8, 6, 3) and x.dtype == np.float32 and y.dtype == np.int32
    assert np.concatenate([b[1] for b in batches]).tolist() == [0] * 5 + [1] * 4 + [2] * 3
    g = next(iter(image_dataset_from_directory(folder, color_mode="grayscale", label_mode="categorical",
                                               image_size=(4, 4), batch_size=12, shuffle=False, verbose=False)))
    assert g[0].shape == (12, 4, 4, 1) and g[1].shape == (12, 3) and g[1].sum() == 12
    only = next(iter(image_dataset_from_directory(folder, labels=None, image_size=(4, 4), batch_size=2,
                                                  verbose=False)))
    assert only.shape == (2, 4, 4, 3)
    one = next(iter(image_dataset_from_directory(folder, image_size=(4, 4), batch_size=None, verbose=False)))
    assert one[0].shape == (4, 4, 3) and one[1].shape == ()


def test_image_folder_class_names_subset_and_bad_labels(folder):
    """Keras 3: class_names may name a subset of the subfolders (only their files, labelled in
    class_names' order); labels that are no list are named as such."""
    ds = image_dataset_from_directory(folder, class_names=["emu", "cat"], image_size=(4, 4), batch_size=20,
                                      shuffle=False, verbose=False)
    assert ds.class_names == ["emu", "cat"] and len(ds.file_paths) == 8
    assert np.asarray(next(iter(ds))[1]).tolist() == [0] * 3 + [1] * 5
    with pytest.raises(ValueError, match=r"must name distinct subfolders .*; no \['cow'\]"):
        image_dataset_from_directory(folder, class_names=["cat", "cow"])
    with pytest.raises(ValueError, match=r"labels must be 'inferred', None or a list .*got 'foo'"):
        image_dataset_from_directory(folder, labels="foo")
    for bad in (-1, 1.5):  # -1 made a one-hot row of the last class
        with pytest.raises(ValueError, match=rf"labels must be integers >= 0, got {bad} for .*1\.png'"):
            image_dataset_from_directory(folder, labels=[0, bad] + [0] * 10, label_mode="categorical")


def test_image_folder_split_seeded_disjoint_and_reshuffled(folder):
    tr, va = image_dataset_from_directory(folder, image_size=(4, 4), batch_size=3, validation_split=0.25,
                                          subset="both", seed=11, verbose=False)
    assert len(tr.file_paths) == 9 and len(va.file_paths) == 3
    assert not set(tr.file_paths) & set(va.file_paths)
    tr2 = image_dataset_from_directory(folder, image_size=(4, 4), validation_split=0.25, subset="training",
                                       seed=11, verbose=False)
    assert tr2.file_paths == tr.file_paths
    e1 = np.concatenate([b[1] for b in tr])
    e2 = np.concatenate([b[1] for b in tr])
    assert sorted(e1.tolist()) == sorted(e2.tolist())
    with pytest.raises(ValueError, match="give a seed"):
        image_dataset_from_directory(folder, validation_split=0.2, subset="training")
    with pytest.raises(ValueError, match="binary"):
        image_dataset_from_directory(folder, label_mode="binary")


def test_image_folder_split_matches_keras(folder):
    keras = pytest.importorskip("keras")
    kt = keras.utils.image_dataset_from_directory(str(folder), image_size=(4, 4), validation_split=0.25,
                                                  subset="validation", seed=11, verbose=False)
    ours = image_dataset_from_directory(folder, image_size=(4, 4), validation_split=0.25, subset="validation",
                                        seed=11, verbose=False)
    assert sorted(kt.file_paths) == sorted(ours.file_paths) and kt.class_names == ours.class_names


def test_image_folder_lists_files_in_keras_order(tmp_path):
    """Keras (iter_valid_files) takes folders by path, then each folder's files by name: b/z.png
    comes before b/sub/3.png. The file order decides a seeded split and which file a labels list
    entry labels. label_mode=None is labels=None: every image, root files first, no class_names."""
    for rel in ("z.png", "a.png", "a/1.png", "b/2.png", "b/z.png", "b/sub/3.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / rel)
    kw = dict(image_size=(2, 2), shuffle=False, verbose=False)

    def rel(ds):
        return [os.path.relpath(p, tmp_path).replace(os.sep, "/") for p in ds.file_paths]
    assert rel(image_dataset_from_directory(tmp_path, **kw)) == ["a/1.png", "b/2.png", "b/z.png", "b/sub/3.png"]
    every = ["a.png", "z.png", "a/1.png", "b/2.png", "b/z.png", "b/sub/3.png"]
    ds = image_dataset_from_directory(tmp_path, labels=list(range(6)), **kw)
    assert rel(ds) == every and np.concatenate([y for _, y in ds]).tolist() == list(range(6))
    none = image_dataset_from_directory(tmp_path, label_mode=None, **kw)
    assert rel(none) == every and none.class_names is None
    assert next(iter(none)).shape == (6, 2, 2, 3)


def test_crop_to_aspect_ratio(tmp_path):
    root = tmp_path / "r" / "a"
    root.mkdir(parents=True)
    a = np.zeros((10, 30, 3), np.uint8)
    a[:, 10:20] = 255  # the centre third is white
    PIL.Image.fromarray(a).save(root / "x.png")
    x, _ = next(iter(image_dataset_from_directory(tmp_path / "r", image_size=(10, 10), batch_size=1,
                                                  crop_to_aspect_ratio=True, interpolation="nearest",
                                                  verbose=False)))
    assert x.min() == 255  # only the centre square was kept
    # 13 x 20 to 2:3: Keras keeps int(13 * 3 / 2) = 19 rows from the top (start int(0.5) = 0), not 20
    b = np.zeros((20, 13, 3), np.uint8)
    b[19] = 255
    PIL.Image.fromarray(b).save(root / "x.png")
    for crop in (lambda: next(iter(image_dataset_from_directory(
            tmp_path / "r", image_size=(3, 2), batch_size=1, crop_to_aspect_ratio=True, interpolation="area",
            verbose=False)))[0][0],
                 lambda: img_to_array(load_img(root / "x.png", target_size=(3, 2), interpolation="box",
                                               keep_aspect_ratio=True))):
        assert np.asarray(crop()).max() == 0


def test_unreadable_image_named_or_skipped(folder):
    (folder / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    ds = image_dataset_from_directory(folder, image_size=(4, 4), batch_size=4, shuffle=False, verbose=False)
    with pytest.raises(UnreadableImageError, match=r"broken\.png"):
        list(ds)
    ok = image_dataset_from_directory(folder, image_size=(4, 4), batch_size=4, shuffle=False, verbose=False,
                                      skip_unreadable=True)
    with pytest.warns(RuntimeWarning, match=r"broken\.png"):
        n = sum(b[0].shape[0] for b in ok)
    assert n == 12


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_a_file_that_cannot_be_read_is_unreadable_too(folder):
    """A dangling link (like a file without read permission) is named, and skip_unreadable skips it."""
    os.symlink(folder / "no-such-target.png", folder / "cat" / "dangling.png")
    kw = dict(image_size=(4, 4), batch_size=4, shuffle=False, verbose=False)
    with pytest.raises(UnreadableImageError, match=r"dangling\.png'"):
        list(image_dataset_from_directory(folder, **kw))
    with pytest.warns(RuntimeWarning, match=r"dangling\.png"):
        assert sum(b[0].shape[0] for b in image_dataset_from_directory(folder, skip_unreadable=True, **kw)) == 12


def test_image_folder_processes_and_threads_agree(folder):
    """Forked workers writing into shared memory give the threads' batches, skips and all."""
    import multiprocessing
    (folder / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    kw = dict(image_size=(6, 5), batch_size=5, seed=3, verbose=False, skip_unreadable=True, num_parallel_calls=2)
    got = {}
    for mp in (False, True):
        ds = image_dataset_from_directory(folder, use_multiprocessing=mp, **kw)
        assert ds._opts["processes"] is mp
        with pytest.warns(RuntimeWarning, match=r"broken\.png"):
            got[mp] = [(x, y) for _ in range(2) for x, y in ds]  # two epochs: the second reshuffles
    assert [x.shape for x, _ in got[True]] == [(5, 6, 5, 3), (5, 6, 5, 3), (2, 6, 5, 3)] * 2
    for (xa, ya), (xb, yb) in zip(got[False], got[True]):
        assert xb.dtype == np.float32
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    # an epoch stopped after its first batch joins every worker
    kids = set(multiprocessing.active_children())
    it = iter(image_dataset_from_directory(folder, use_multiprocessing=True, **kw))
    next(it)
    it.close()
    assert not set(multiprocessing.active_children()) - kids
    with pytest.raises(ValueError, match="use_multiprocessing must be None, True or False"):
        image_dataset_from_directory(folder, use_multiprocessing="yes", verbose=False)
    with pytest.raises(ValueError, match="use_multiprocessing=True decodes whole batches"):
        image_dataset_from_directory(folder, use_multiprocessing=True, batch_size=None, image_size=None,
                                     verbose=False)


def test_image_folder_auto_workers_by_pass_size(folder, monkeypatch):
    """use_multiprocessing=None: threads for a small pass (forking would cost more than it saves),
    forked processes from _PROCESS_MIN_FILES files on."""
    import multiprocessing

    from deepgpu.data import image_folder
    kids = set(multiprocessing.active_children())

    def workers_during_first_batch():
        it = iter(image_dataset_from_directory(folder, image_size=(4, 4), batch_size=2, seed=0, verbose=False))
        next(it)
        n = len(set(multiprocessing.active_children()) - kids)
        it.close()
        return n
    assert workers_during_first_batch() == 0
    monkeypatch.setattr(image_folder, "_PROCESS_MIN_FILES", 12)
    assert workers_during_first_batch() > 0
    assert not set(multiprocessing.active_children()) - kids


def test_image_folder_process_error_names_file(folder):
    (folder / "emu" / "zz.png").write_bytes(b"\x89PNG truncated")
    ds = image_dataset_from_directory(folder, image_size=(4, 4), batch_size=3, shuffle=False, verbose=False,
                                      use_multiprocessing=True)
    with pytest.raises(UnreadableImageError, match=r"zz\.png"):
        list(ds)


def test_load_save_roundtrip(tmp_path):
    a = np.random.default_rng(1).integers(0, 256, (6, 5, 3)).astype("float32")
    p = tmp_path / "o.png"
    save_img(p, a, scale=False)
    img = load_img(p)
    assert img.size == (5, 6)
    np.testing.assert_array_equal(img_to_array(img), a)
    assert img_to_array(img, data_format="channels_first").shape == (3, 6, 5)
    g = img_to_array(load_img(p, color_mode="grayscale", target_size=(3, 2)))
    assert g.shape == (3, 2, 1)
    scaled = img_to_array(array_to_img(np.array([[[0.0], [0.5], [1.0]]])))
    assert scaled.ravel().tolist() == [0, 128, 255]
    (tmp_path / "junk.jpg").write_text("no")
    with pytest.raises(UnreadableImageError, match=r"junk\.jpg"):
        load_img(tmp_path / "junk.jpg")
    with pytest.raises(FileNotFoundError):
        load_img(tmp_path / "absent.png")
    assert os.path.exists(p)


def test_load_img_16_bit_gray(tmp_path):
    """Keras's load_img keeps a 16-bit gray PNG's values in grayscale; rgb keeps the high byte
    (image_dataset_from_directory's pixels) where Pillow's convert would clip to 255."""
    wide = np.random.default_rng(2).integers(0, 65536, (4, 3), dtype=np.uint16)
    PIL.Image.fromarray(wide).save(tmp_path / "w.png")
    np.testing.assert_array_equal(img_to_array(load_img(tmp_path / "w.png", color_mode="grayscale"))[:, :, 0], wide)
    small = load_img(tmp_path / "w.png", color_mode="grayscale", target_size=(2, 3), interpolation="bilinear")
    assert small.size == (3, 2) and img_to_array(small).max() > 255
    np.testing.assert_array_equal(img_to_array(load_img(tmp_path / "w.png"))[:, :, 1], wide >> 8)
