"""deepgpu.data.decode_image / read_file and the decoder of image_dataset_from_directory:
the same pixels as Pillow's whether or not imagecodecs (the fast path) is installed."""
import io

import numpy as np
import pytest

PIL = pytest.importorskip("PIL.Image")

from deepgpu.data import decode as dec  # noqa: E402
from deepgpu.data import decode_image, image_dataset_from_directory, read_file  # noqa: E402
from deepgpu.data.decode import UnreadableImageError  # noqa: E402

RNG = np.random.default_rng(7)


def _encoded():
    """(label, bytes) of images in the formats and modes a folder of images holds."""
    rgb = RNG.integers(0, 256, (9, 13, 3), dtype=np.uint8)
    gray = RNG.integers(0, 256, (9, 13), dtype=np.uint8)
    rgba = RNG.integers(0, 256, (9, 13, 4), dtype=np.uint8)
    out = []

    def put(label, im, fmt, **kw):
        b = io.BytesIO()
        im.save(b, fmt, **kw)
        out.append((label, b.getvalue()))
    put("png L", PIL.fromarray(gray), "PNG")
    put("png RGB", PIL.fromarray(rgb), "PNG")
    put("png RGBA", PIL.fromarray(rgba), "PNG")
    put("png LA", PIL.fromarray(rgba[:, :, :2], "LA"), "PNG")
    put("png 1-bit", PIL.fromarray(gray > 127), "PNG")
    put("png 16-bit", PIL.fromarray(gray.astype(np.uint16) * 200), "PNG")
    pal = PIL.fromarray(rgb).convert("P", palette=PIL.Palette.ADAPTIVE, colors=16)
    put("png P", pal, "PNG")
    put("png P + transparency", pal, "PNG", transparency=3)
    put("jpeg RGB 4:4:4", PIL.fromarray(rgb), "JPEG", quality=90, subsampling=0)
    put("jpeg RGB 4:2:0", PIL.fromarray(rgb), "JPEG", quality=75, subsampling=2)
    put("jpeg L", PIL.fromarray(gray), "JPEG", quality=90)
    put("jpeg CMYK", PIL.fromarray(rgb).convert("CMYK"), "JPEG")
    put("gif", PIL.fromarray(rgb).convert("P"), "GIF")
    put("bmp", PIL.fromarray(rgb), "BMP")
    return out


def _pillow(data, mode):
    with PIL.open(io.BytesIO(data)) as im:
        im.load()
        if im.mode == "P" and "transparency" in im.info:
            im = im.convert("RGBA")
        elif im.mode == "I;16":  # tf.io.decode_image keeps the high byte; Pillow's convert clips
            im = PIL.fromarray((np.asarray(im) >> 8).astype(np.uint8), "L")
        a = np.asarray(im.convert(mode))
    return a[:, :, None] if a.ndim == 2 else a


@pytest.mark.parametrize("fast", [True, False], ids=["imagecodecs-if-installed", "pillow-only"])
def test_decode_image_equals_pillow(monkeypatch, fast):
    if not fast:
        monkeypatch.setattr(dec, "_FAST", {})
    for label, data in _encoded():
        for channels, mode in ((1, "L"), (3, "RGB"), (4, "RGBA")):
            got = decode_image(data, channels=channels)
            want = _pillow(data, mode)
            assert got.dtype == np.uint8 and got.shape == want.shape, (label, channels, got.shape, want.shape)
            np.testing.assert_array_equal(got, want, err_msg=f"{label}, channels={channels}")
        stored = decode_image(data)
        assert stored.shape[:2] == (9, 13) and stored.shape[2] in (1, 3, 4), label


def test_decode_image_stored_channels():
    by = dict(_encoded())
    assert decode_image(by["png L"]).shape[2] == 1
    assert decode_image(by["png RGB"]).shape[2] == 3
    assert decode_image(by["png RGBA"]).shape[2] == 4
    assert decode_image(by["png P + transparency"]).shape[2] == 4
    assert decode_image(memoryview(by["jpeg L"])).shape[2] == 1


def test_decode_image_errors(tmp_path):
    with pytest.raises(UnreadableImageError, match=r"^cannot read image file 'x.png': cannot identify image file$"):
        decode_image(b"\x89PNG\r\n\x1a\n not a png", name="x.png")  # no "<_io.BytesIO object at 0x...>"
    with pytest.raises(UnreadableImageError, match="<bytes>"):
        decode_image(b"\xff\xd8\xff broken jpeg", channels=3)
    with pytest.raises(ValueError, match="channels"):
        decode_image(dict(_encoded())["png L"], channels=2)
    with pytest.raises(TypeError, match="read_file"):
        decode_image("a/path.png")
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc")
    assert read_file(p) == b"abc" and read_file(str(p)) == b"abc"


def test_16_bit_png_keeps_the_high_byte_as_tensorflow_does(tmp_path):
    """Keras's image_dataset_from_directory (tf.io.decode_image) maps a 16-bit PNG's v to v >> 8;
    Pillow's convert("L") would clip nearly every pixel to 255."""
    wide = RNG.integers(0, 65536, (6, 5), dtype=np.uint16)
    (tmp_path / "c").mkdir()
    PIL.fromarray(wide).save(tmp_path / "c" / "w.png")
    want = (wide >> 8).astype(np.uint8)[:, :, None]
    np.testing.assert_array_equal(decode_image(read_file(tmp_path / "c" / "w.png")), want)
    for mode, c in (("grayscale", 1), ("rgb", 3), ("rgba", 4)):
        x, _ = next(iter(image_dataset_from_directory(tmp_path, image_size=(6, 5), color_mode=mode,
                                                      batch_size=1, verbose=False)))
        np.testing.assert_array_equal(np.asarray(x)[0, :, :, :min(c, 3)],
                                      np.repeat(want, min(c, 3), axis=2).astype(np.float32), err_msg=mode)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    arrays = {}
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(6):
            a = RNG.integers(0, 256, (5, 4, 3), dtype=np.uint8)
            PIL.fromarray(a).save(root / c / f"{i}.png")
            arrays[str(root / c / f"{i}.png")] = a
    return root, arrays


def test_folder_pixels_exact_when_no_resize(folder):
    root, arrays = folder
    ds = image_dataset_from_directory(root, image_size=(5, 4), batch_size=5, seed=3, verbose=False)
    xs = np.concatenate([x for x, _ in ds])
    want = np.stack([arrays[p] for p in ds.file_paths]).astype(np.float32)
    assert xs.dtype == np.float32
    np.testing.assert_array_equal(xs, want)


def test_folder_skipped_files_refill_batches(folder):
    root, arrays = folder
    (root / "a" / "2b.png").write_bytes(b"\x89PNG broken")
    (root / "b" / "0b.png").write_bytes(b"garbage")
    ds = image_dataset_from_directory(root, image_size=(5, 4), batch_size=5, shuffle=False, verbose=False,
                                      skip_unreadable=True)
    with pytest.warns(RuntimeWarning) as caught:
        batches = list(ds)
    assert sorted(str(w.message).split("'")[1][-6:] for w in caught) == ["0b.png", "2b.png"]
    assert [x.shape[0] for x, _ in batches] == [5, 5, 2]
    good = [p for p in ds.file_paths if "b.png" not in p[-6:]]
    np.testing.assert_array_equal(np.concatenate([x for x, _ in batches]),
                                  np.stack([arrays[p] for p in good]).astype(np.float32))
    assert np.concatenate([y for _, y in batches]).tolist() == [0] * 6 + [1] * 6


def _decode_threads():
    import threading
    return {t for t in threading.enumerate() if t.name.startswith("deepgpu")}


def test_folder_stopped_early_joins_its_decoders(folder):
    import time
    root, _ = folder
    before = _decode_threads()
    ds = image_dataset_from_directory(root, image_size=(5, 4), batch_size=2, seed=1, verbose=False,
                                      num_parallel_calls=2).prefetch(2)
    for _ in ds:  # a loop left by break, with batch tasks still queued
        break
    deadline = time.time() + 5
    while _decode_threads() - before and time.time() < deadline:
        time.sleep(0.02)
    assert not _decode_threads() - before
    (root / "b" / "9.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(UnreadableImageError, match=r"9\.png"):
        list(image_dataset_from_directory(root, image_size=(5, 4), batch_size=4, verbose=False, seed=0))
    assert not _decode_threads() - before
