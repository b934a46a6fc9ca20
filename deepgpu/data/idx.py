"""The IDX file format of MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number ``00 00 <dtype> <ndim>``, then ``ndim``
big-endian uint32 sizes, then the values, big-endian, in C order. Files may
be gzipped; that is detected from the first two bytes (``1f 8b``), not from
the name.
"""
from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

# IDX type code -> big-endian NumPy dtype.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),   # unsigned byte
    0x09: np.dtype(">i1"),   # signed byte
    0x0B: np.dtype(">i2"),   # short
    0x0C: np.dtype(">i4"),   # int
    0x0D: np.dtype(">f4"),   # float
    0x0E: np.dtype(">f8"),   # double
}
_GZIP_MAGIC = b"\x1f\x8b"


class IDXError(ValueError):
    """A file that is not a valid IDX file (bad magic, truncated, wrong size)."""


def _read_bytes(path) -> bytearray:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != _GZIP_MAGIC:
        return bytearray(raw)
    try:
        return bytearray(gzip.decompress(raw))
    except (EOFError, OSError, zlib.error) as e:
        raise IDXError(f"{path}: the gzip stream is truncated or corrupt ({e}); "
                       f"download the file again") from None


def load_idx(path) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a NumPy array in native byte order.

    Returns an array of the file's shape and dtype (uint8, int8, int16,
    int32, float32 or float64). Raises IDXError (a ValueError) naming the
    file for a wrong magic number, an unknown type code, a truncated header
    or data, or trailing bytes; FileNotFoundError if there is no file.
    """
    path = os.fspath(path)
    buf = _read_bytes(path)
    if len(buf) < 4:
        raise IDXError(f"{path}: truncated: {len(buf)} bytes, an IDX file starts with a 4-byte "
                       f"magic number (00 00 <type> <ndim>)")
    if buf[0] != 0 or buf[1] != 0:
        raise IDXError(f"{path}: not an IDX file: magic number {bytes(buf[:4]).hex(' ')}, "
                       f"expected 00 00 <type> <ndim>")
    code, ndim = buf[2], buf[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X} ({d.name})" for c, d in IDX_DTYPES.items())
        raise IDXError(f"{path}: unknown IDX type code 0x{code:02X}; expected one of {known}")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise IDXError(f"{path}: truncated header: {ndim} dimensions need {header} bytes, "
                       f"the file has {len(buf)}")
    shape = tuple(int(s) for s in np.frombuffer(buf, ">u4", ndim, 4))
    dtype = IDX_DTYPES[code]
    count = int(np.prod(shape, dtype=np.int64)) if ndim else 1
    need = count * dtype.itemsize
    have = len(buf) - header
    if have < need:
        raise IDXError(f"{path}: truncated: shape {shape} of {dtype.name} needs {need} bytes of "
                       f"data, the file has {have}")
    if have > need:
        raise IDXError(f"{path}: size mismatch: shape {shape} of {dtype.name} needs {need} bytes "
                       f"of data, the file has {have - need} more")
    a = np.frombuffer(buf, dtype, count, header).reshape(shape)
    # A bytearray buffer keeps single-byte arrays writable without a copy.
    return a if dtype.itemsize == 1 else a.astype(dtype.newbyteorder("="))


def save_idx(path, array, compress=None) -> None:
    """Write ``array`` as an IDX file; gzipped when ``compress`` is true (default:
    when ``path`` ends in ``.gz``). Written to a temporary file, then renamed."""
    path = os.fspath(path)
    a = np.asarray(array)
    codes = {d.newbyteorder("=").name: c for c, d in IDX_DTYPES.items()}
    if a.dtype.name not in codes:
        raise ValueError(f"save_idx: dtype {a.dtype.name} has no IDX type code; use one of "
                         f"{sorted(codes)}")
    if a.ndim > 255:
        raise ValueError(f"save_idx: {a.ndim} dimensions, IDX allows at most 255")
    data = (bytes([0, 0, codes[a.dtype.name], a.ndim]) + np.asarray(a.shape, ">u4").tobytes()
            + np.ascontiguousarray(a, a.dtype.newbyteorder(">")).tobytes())
    if compress is None:
        compress = path.endswith(".gz")
    if compress:
        data = gzip.compress(data, mtime=0)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
