"""The CPU backend's own overrides against the generic primitives of ``Backend``, and its allocator setting.

test_backend_parity.py checks every primitive against a NumPy reference on
small arrays; here the overrides run on shapes large enough to take their
fast paths (several work-buffer chunks, threaded copies) and must give what
the generic version in backends/base.py gives.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from deepgpu.backends import numpy_backend
from deepgpu.backends.base import Backend
from deepgpu.backends.numpy_backend import NumpyBackend

RNG = np.random.default_rng(11)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def r(*shape):
    return RNG.uniform(-1, 1, size=shape).astype(np.float32)


@pytest.fixture
def cpu(monkeypatch):
    # A small work buffer so that even test-sized batches are split into several chunks.
    monkeypatch.setattr(numpy_backend, "WORKSPACE_BYTES", 64 << 10)
    monkeypatch.setattr(numpy_backend, "_PARALLEL_MIN_BYTES", 1 << 10)
    b = NumpyBackend()
    b.threads = 2
    return b


def close(a, b, rtol=1e-5):
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, a.dtype, b.shape, b.dtype)
    scale = max(float(np.abs(b).max()), 1e-6)
    err = float(np.abs(a.astype(np.float64) - b).max())
    assert err <= rtol * scale, f"max error {err:.3g} over {rtol} * {scale:.3g}"


def run_python(code, **env):
    e = dict(os.environ)
    e.update(env)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e,
                       cwd=os.path.dirname(REPO), timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_allocator_keeps_freed_memory_unless_told_not_to():
    code = ("from deepgpu.backends import get; import platform\n"
            "print(get('cpu').memory_info()['malloc_keeps_freed'], platform.libc_ver()[0])")
    kept, libc = run_python(code, DEEPGPU_MALLOC="").split()
    assert kept == ("True" if libc == "glibc" else "False")
    assert run_python(code, DEEPGPU_MALLOC="system").split()[0] == "False"
