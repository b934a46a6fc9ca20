"""Atomic replacement of a saved file or folder, and the cleaning of what an interrupted save left.

A save writes ``.deepgpu-<name>.<8 hex>.tmp`` beside its target ``<name>``
(a file, or for TF.js a folder) and then moves it into place: a file by
``os.replace``; a folder by exchanging the two with Linux's
``renameat2(RENAME_EXCHANGE)``, so the target is the old or the new folder at
every instant. Where the exchange is unavailable (another OS, a file system
without it), the old folder is first renamed to ``.deepgpu-<name>.<hex>.old``;
if the process dies before the new one takes its place, the next save or load
of the target renames that folder back.

The writer holds an exclusive ``flock`` on each temporary for as long as it
works on it; the kernel drops the lock however the process ends. So a
temporary that can be locked was abandoned, and the next save of the same
target removes it; one that cannot (a save running now, or a file system
without ``flock``) is left alone. The lock is on the temporary itself rather
than on a separate lock file (``filelock``'s way), so that it lives and dies
with the temporary and leaves nothing of its own behind.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import re
import secrets
import shutil
import sys

try:
    import fcntl
except ImportError:  # Windows: no flock, so abandoned temporaries are never recognised, only left
    fcntl = None

_NAME_MAX = 200  # keeps ".deepgpu-<name>.<hex>.tmp" under the usual 255-byte name limit


def _stem(target: str) -> str:
    base = os.path.basename(target)
    if len(base.encode()) > _NAME_MAX:
        base = "h" + hashlib.sha256(base.encode()).hexdigest()[:24]
    return ".deepgpu-" + base


def _pattern(target: str):
    return re.compile(re.escape(_stem(target)) + r"\.[0-9a-f]{8}\.(tmp|old)$")


def _try_lock(fd: int, block: bool) -> bool:
    """Take an exclusive flock on ``fd``; False when it is held elsewhere or flock is unavailable."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        return True
    except OSError:
        return False


def _same(fd: int, path: str) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def create_temp(target: str, folder: bool = False):
    """A new locked temporary beside ``target``: ``(path, fd)``; ``fd`` is open for writing for a file,
    read-only for a folder. Close ``fd`` (which releases the lock) once the temporary is moved or removed."""
    parent = os.path.dirname(target)
    while True:
        path = os.path.join(parent, f"{_stem(target)}.{secrets.token_hex(4)}.tmp")
        try:
            if folder:
                os.mkdir(path)
                fd = os.open(path, os.O_RDONLY)
            else:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        _try_lock(fd, block=True)
        # Between creating and locking, a cleaner may have found it unlocked and removed it.
        if _same(fd, path):
            return path, fd
        os.close(fd)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def discard(path: str, fd: int | None) -> None:
    """Remove a temporary of ours (after a failed save) and release it."""
    _remove(path)
    if fd is not None:
        os.close(fd)


def _abandoned(parent: str, target: str):
    """``(path, kind, fd)`` for each temporary of ``target`` that no live process holds, locked by us."""
    pat = _pattern(target)
    try:
        names = sorted(os.listdir(parent or "."))
    except OSError:
        return
    for name in names:
        m = pat.match(name)
        if not m:
            continue
        path = os.path.join(parent, name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        if _try_lock(fd, block=False) and _same(fd, path):
            yield path, m.group(1), fd
        else:
            os.close(fd)


def recover(target: str) -> bool:
    """When ``target`` is missing but an interrupted folder save left the old folder aside, put it
    back. True when something was put back."""
    if os.path.lexists(target):
        return False
    parent = os.path.dirname(target)
    for path, kind, fd in _abandoned(parent, target):
        try:
            if kind == "old" and not os.path.lexists(target):
                os.rename(path, target)
                return True
        finally:
            os.close(fd)
    return False


def clean(target: str) -> None:
    """Recover ``target`` if needed, then remove every abandoned temporary of it."""
    recover(target)
    for path, _, fd in _abandoned(os.path.dirname(target), target):
        try:
            _remove(path)
        finally:
            os.close(fd)


def replace_file(f, tmp: str, target: str) -> None:
    """Move the written temporary ``tmp`` (open as ``f``) over ``target``, then close ``f``."""
    f.flush()
    os.fsync(f.fileno())
    if fcntl is None:
        f.close()  # Windows cannot replace a file that is open
    os.replace(tmp, target)
    f.close()


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2
_libc = None


def _exchange(a: str, b: str) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); False where that is not available here."""
    global _libc
    if not sys.platform.startswith("linux"):
        return False
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                        ctypes.c_uint]
        except (OSError, AttributeError):
            _libc = False
    if not _libc:
        return False
    if _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
        return False  # this kernel or file system cannot exchange: the caller falls back
    raise OSError(err, os.strerror(err), a, None, b)


def replace_folder(tmp: str, target: str) -> None:
    """Put the finished folder ``tmp`` in the place of ``target`` (an existing folder or nothing).

    Afterwards the old folder, if any, is removed. On return or on an
    exception, ``target`` is the old or the new folder.
    """
    if not os.path.lexists(target):
        try:
            os.rename(tmp, target)
            return
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            # Another save put a folder there meanwhile: exchange with it below.
    if _exchange(tmp, target):
        _remove(tmp)  # now the old folder
        return
    # Two renames: the old folder goes aside, locked, under a name recover() knows.
    old = tmp[:-len(".tmp")] + ".old"
    fd = os.open(target, os.O_RDONLY)
    try:
        _try_lock(fd, block=True)
        os.rename(target, old)
        try:
            os.rename(tmp, target)
        except BaseException:
            os.rename(old, target)
            raise
        _remove(old)
    finally:
        os.close(fd)
