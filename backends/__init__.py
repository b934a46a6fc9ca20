"""Backend registry: which backend runs deepgpu's math, and switching it.

``set_backend("cpu" | "cuda" | "auto")``, ``get_backend()``,
``use_backend(name)``, ``available_backends()``, ``cuda_status()``.
The default comes from ``$DEEPGPU_BACKEND``, else "auto" (CUDA where CuPy,
a driver and a device are usable, else the CPU). Nothing touches the GPU
until a CUDA backend is actually asked for.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import threading

from .base import Backend, GraphCaptureError  # noqa: F401  (re-exported)

log = logging.getLogger("deepgpu")

NAMES = ("cpu", "cuda", "auto")


class BackendUnavailableError(RuntimeError):
    """A backend was asked for explicitly but cannot run here."""


_instances: dict[str, Backend] = {}
_state = threading.local()
_default: list = []  # [resolved name] once decided
_cuda_cache: list = []  # [(ok, reason)]
_lock = threading.Lock()


def cuda_status(refresh: bool = False) -> tuple[bool, str]:
    """(usable, reason): whether CuPy, a CUDA driver and a device are present.

    Cheap when CuPy is not installed (no import is attempted); the result
    is cached for the process.
    """
    if _cuda_cache and not refresh:
        return _cuda_cache[0]
    if importlib.util.find_spec("cupy") is None:
        res = (False, "CuPy is not installed (pip install 'deepgpu[cuda]')")
    else:
        try:
            import cupy
        except Exception as e:  # a broken CuPy install names itself here
            res = (False, f"CuPy failed to import: {e}")
        else:
            try:
                n = cupy.cuda.runtime.getDeviceCount()
            except Exception as e:
                res = (False, f"CuPy is installed but the CUDA driver is not usable: {e}")
            else:
                res = (True, f"{n} CUDA device(s) found") if n > 0 else (
                    False, "CuPy and a CUDA driver are present but no CUDA device was found")
    _cuda_cache[:] = [res]
    return res


def _instance(name: str) -> Backend:
    with _lock:
        if name not in _instances:
            if name == "cpu":
                from .numpy_backend import NumpyBackend
                _instances[name] = NumpyBackend()
            else:
                ok, why = cuda_status()
                if not ok:
                    raise BackendUnavailableError(f"the 'cuda' backend is not available: {why}")
                from .cupy_backend import CupyBackend
                _instances[name] = CupyBackend()
        return _instances[name]


def _resolve(name) -> str:
    if not isinstance(name, str) or name.lower() not in NAMES:
        raise ValueError(f"unknown backend {name!r}; valid names are {', '.join(map(repr, NAMES))}")
    name = name.lower()
    if name == "auto":
        ok, why = cuda_status()
        chosen = "cuda" if ok else "cpu"
        log.debug("deepgpu backend 'auto' chose %r: %s", chosen, why)
        return chosen
    return name


def _default_name() -> str:
    if not _default:
        env = os.environ.get("DEEPGPU_BACKEND", "auto")
        try:
            _default.append(_resolve(env))
        except ValueError:
            raise ValueError(
                f"$DEEPGPU_BACKEND is {env!r}; valid names are {', '.join(map(repr, NAMES))}") from None
    return _default[0]


def current() -> Backend:
    """The active Backend instance (the thread's, else the process default)."""
    b = getattr(_state, "backend", None)
    if b is None:
        b = _instance(_default_name())
        _state.backend = b
    return b


def get_backend() -> str:
    """The resolved name of the active backend: "cpu" or "cuda"."""
    return current().name


def set_backend(name: str) -> str:
    """Make ``name`` ("cpu", "cuda" or "auto") the active backend; return the resolved name.

    Raises ValueError for an unknown name and BackendUnavailableError when
    CUDA is asked for and cannot run; the active backend is then unchanged.
    """
    resolved = _resolve(name)
    b = _instance(resolved)
    _state.backend = b
    _default[:] = [resolved]
    return resolved


def get(name: str) -> Backend:
    """The Backend instance for ``name`` without making it active."""
    b = _instances.get(name) if type(name) is str else None  # "cpu" made before: no lock, no resolving
    return b if b is not None else _instance(_resolve(name))


@contextlib.contextmanager
def use_backend(name: str):
    """Run a block on another backend, restoring the previous one afterwards."""
    prev = current()
    b = _instance(_resolve(name))
    _state.backend = b
    try:
        yield b
    finally:
        _state.backend = prev


def available_backends() -> list[str]:
    """Names of the backends usable here, "cpu" first."""
    return ["cpu"] + (["cuda"] if cuda_status()[0] else [])


def instantiated() -> list[Backend]:
    """Backends created so far in this process."""
    return list(_instances.values())
