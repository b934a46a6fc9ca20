"""Image bytes to uint8 arrays: ``read_file`` and ``decode_image`` (tf.io's names), and the
decoder behind ``image_dataset_from_directory``.

Pillow decodes everything, but on small images most of its time is Python
(plugin lookup, chunk parsing, ``tobytes``) under the GIL: 28x28 PNGs cost
~100 us of CPU each through ``Image.open`` + ``np.asarray`` against ~26 us
through imagecodecs (bench/input_profile.py). So where imagecodecs (in the
``data`` extra; a well-kept wrapper of libpng and libjpeg-turbo whose decoders
release the GIL) is installed, 8-bit PNGs and baseline JPEGs whose stored
channels are the ones asked for decode through it; everything else (palette,
16-bit, transparency keys, GIF, BMP, a mode conversion, a file imagecodecs
refuses) goes through Pillow (a 16-bit gray image keeps its high byte, as
tf.io.decode_image does, where Pillow's convert would clip). Both give the same
pixels (libjpeg-turbo with the same default DCT and upsampling under both;
checked in tests/test_data_decode.py), so results do not depend on which is
installed.
"""
from __future__ import annotations

import io
import os
import re

import numpy as np

__all__ = ["read_file", "decode_image", "UnreadableImageError"]

_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
_PNG = b"\x89PNG\r\n\x1a\n"
# PNG IHDR colour types whose 8-bit pixels are stored as the channels Pillow gives:
# gray (L), truecolour (RGB), truecolour + alpha (RGBA); palette / gray + alpha differ.
_PNG_TYPES = {0: 1, 2: 3, 6: 4}

try:  # optional (the data extra): the fast path
    import imagecodecs as _ic
    _FAST = {"png": _ic.png_decode, "jpeg": _ic.jpeg8_decode}
    if not (_ic.PNG.available and _ic.JPEG8.available):  # a build without libpng or libjpeg
        _FAST = {}
except (ImportError, AttributeError):  # pragma: no cover - depends on the environment
    _FAST = {}


class UnreadableImageError(ValueError):
    """An image file Pillow cannot open or decode (names the file)."""


def _pil():
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is in the data extra
        raise ImportError("reading images needs Pillow: pip install 'deepgpu[data]' (or pip install pillow)") from None
    return Image


def read_file(path) -> bytes:
    """The bytes of the file at ``path`` (tf.io.read_file)."""
    with open(os.fspath(path), "rb") as f:
        return f.read()


def _fast_channels(data):
    """The channel count imagecodecs would return for ``data`` equal to Pillow's, or None."""
    if data[:8] == _PNG and len(data) >= 26 and data[12:16] == b"IHDR":
        return _PNG_TYPES.get(data[25]) if data[24] == 8 else None
    if data[:2] == b"\xff\xd8":
        return 0  # known after decoding: 1 (L) or 3 (RGB); CMYK (4) goes to Pillow
    return None


def _decode_fast(data, channels):
    stored = _fast_channels(data)
    if stored is None or not _FAST or (stored and channels and stored != channels):
        return None
    try:
        a = _FAST["png" if stored else "jpeg"](data)
    except Exception:  # noqa: BLE001 - Pillow decides, and names the file in its error
        return None
    if a.ndim == 2:
        a = a[:, :, None]
    got = a.shape[2]
    if a.dtype != np.uint8 or got not in (1, 3, 4) or (not stored and got == 4) or (channels and got != channels):
        return None
    return a


# 16-bit gray PNGs open in these modes; Pillow's convert() to L / RGB clips them at 255
_WIDE_GRAY = ("I;16", "I;16B", "I;16L", "I")


def _gray8(im, Image):
    """A 16-bit gray image as 8-bit L, keeping the high byte (tf.io.decode_image's uint16 -> uint8)."""
    a = np.asarray(im)
    return Image.fromarray((np.clip(a, 0, 65535).astype(np.uint32) >> 8).astype(np.uint8), "L")


def _why(error):
    """Pillow's message without the buffer it names ("<_io.BytesIO object at 0x...>"): the
    caller names the file."""
    return re.sub(r" <_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(error))


def open_image(source, mode, where, wide_gray=False):
    """A loaded PIL Image in ``mode`` ("L", "RGB", "RGBA") from a path or bytes; raises
    UnreadableImageError naming ``where`` (the file) when Pillow cannot decode it.
    wide_gray: a 16-bit gray image asked for as "L" stays 16-bit (Keras's load_img)."""
    Image = _pil()
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source) as im:
            im.load()
            # palette images with transparency convert through RGBA, as Keras's loader does
            if im.mode == "P" and mode != "P" and "transparency" in im.info:
                im = im.convert("RGBA")
            elif im.mode in _WIDE_GRAY and mode in _MODES.values():
                if wide_gray and mode == "L":
                    return im
                im = _gray8(im, Image)
            # the pixels are loaded: the image outlives its (now closed) file
            return im.convert(mode) if im.mode != mode else im
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError) as e:  # Pillow's "cannot identify", truncated data...
        raise UnreadableImageError(f"cannot read image file {where!r}: {_why(e)}") from e


def decode_array(data, channels, where):
    """uint8 [H, W, channels] from encoded image bytes (channels 1, 3 or 4: gray, RGB, RGBA,
    converted as Pillow converts); imagecodecs where it gives Pillow's pixels, else Pillow."""
    a = _decode_fast(data, channels)
    if a is not None:
        return a
    a = np.asarray(open_image(data, _MODES[channels], where))
    return a[:, :, None] if a.ndim == 2 else a


def _stored_channels(data, where):
    """1, 3 or 4: the channels of the image in ``data`` as stored (gray, colour, with alpha)."""
    Image = _pil()
    try:
        with Image.open(io.BytesIO(data)) as im:
            mode, info = im.mode, im.info
    except (OSError, SyntaxError, ValueError) as e:
        raise UnreadableImageError(f"cannot read image file {where!r}: {_why(e)}") from e
    if mode in ("1", "L", "I", "I;16", "I;16B", "F"):
        return 1
    return 4 if mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in info else 3


def decode_image(contents, channels=0, name=None):
    """An image's pixels from its encoded bytes (PNG, JPEG, GIF, BMP, ...): [H, W, C] (tf.io.decode_image).

    uint8 in 0..255. channels: 0 (as stored: 1 for gray, 3 for colour, 4 with
    alpha), 1, 3 or 4 (converted as Pillow converts). name: the file named in
    errors. Raises UnreadableImageError when the bytes are no readable image,
    ValueError for another ``channels``, TypeError when ``contents`` is not bytes.
    """
    if channels not in (0, 1, 3, 4):
        raise ValueError(f"decode_image(): channels must be 0, 1, 3 or 4, got {channels!r}")
    if not isinstance(contents, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_image(): contents must be bytes (read_file(path)), got {type(contents).__name__}")
    contents = bytes(contents) if isinstance(contents, memoryview) else contents
    where = name or "<bytes>"
    if channels:
        a = decode_array(contents, channels, where)
    else:
        a = _decode_fast(contents, 0)
        if a is None:
            stored = _stored_channels(contents, where)
            a = decode_array(contents, stored, where)
    return a
