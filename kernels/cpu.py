"""C kernels for the CPU backend, compiled on first use with the machine's C compiler.

The sources (``SOURCES``, beside this file) are built once per machine with
``-O3 -march=native`` into a shared library kept in the kernel cache
(``$DEEPGPU_KERNEL_CACHE/cpu`` when set, else ``$XDG_CACHE_HOME/deepgpu/cpu``
or ``~/.cache/deepgpu/cpu``), keyed by the source, the compiler, its flags
and the CPU, and loaded with ctypes (calls release the GIL, so the backend's
threads run them side by side).

The first build happens once per machine: concurrent processes take turns
on a lock file beside the library (``filelock``), and the second finds the
first one's library. The compiler runs in its own process group with its
temporary files in a folder removed afterwards; it is bounded in CPU time
(``BUILD_CPU_S`` per process, so a busy machine only makes it slower) and, as a
backstop, in wall time (``$DEEPGPU_CPU_BUILD_TIMEOUT``, default ``BUILD_WALL_S``),
after which the whole group is killed. A SHA-256 of the library is kept
beside it and checked before loading: a damaged cached library is rebuilt.

``DEEPGPU_CPU_KERNELS`` chooses: ``auto`` (default: use them when they build,
else stay on NumPy + BLAS and say why in ``deepgpu info``), ``c`` (use them;
a failed build raises ``KernelCompileError``), ``numpy`` (never).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from importlib import resources

from filelock import FileLock, Timeout

SOURCES = ("cpu_conv.c", "cpu_norm.c", "cpu_depthwise.c")  # compiled together into one shared library
SOURCES += ("cpu_rnn.c",)  # the fused LSTM / GRU cells (issue 16)
SOURCES += ("cpu_half.c",)  # float16 <-> float32 with F16C (mixed precision, issue 20)
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-shared", "-fPIC")
# Without -march=native (a compiler that does not know it): still vectorised, less wide.
FALLBACK_FLAGS = ("-O3", "-fno-math-errno", "-shared", "-fPIC")
BUILD_CPU_S = 600  # CPU seconds each compiler process may use (the build needs about 10)
BUILD_WALL_S = 1800  # wall-clock backstop for a compiler that hangs without using the CPU

_lock = threading.Lock()
_state: dict = {}  # "lib": CDLL or None, "why": str


class KernelCompileError(RuntimeError):
    """The CPU kernels failed to build; names the compiler, its flags and its message."""


def mode() -> str:
    """``auto``, ``c`` or ``numpy``, from ``DEEPGPU_CPU_KERNELS``; ValueError for anything else."""
    m = os.environ.get("DEEPGPU_CPU_KERNELS", "auto").strip().lower() or "auto"
    if m not in ("auto", "c", "numpy"):
        raise ValueError(f"DEEPGPU_CPU_KERNELS={m!r}: expected 'auto', 'c' or 'numpy'")
    return m


def cache_dir() -> str:
    """Where the built library is kept."""
    root = os.environ.get("DEEPGPU_KERNEL_CACHE")
    if root:
        return os.path.join(root, "cpu")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "deepgpu", "cpu")


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_id() -> str:
    """The CPU's model and feature flags: a library built for one CPU may not run on another."""
    ident = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            ident += "".join(ln for ln in f if ln.startswith(("model name", "flags", "Features")))
    except OSError:
        pass
    return ident


def _version(cc: str) -> str:
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _wall_limit() -> float:
    env = os.environ.get("DEEPGPU_CPU_BUILD_TIMEOUT")
    return float(env) if env else BUILD_WALL_S


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _intact(path: str) -> bool:
    """Whether ``path`` exists and matches the SHA-256 recorded beside it when it was built."""
    try:
        with open(path + ".sha256") as f:
            return f.read().strip() == _digest(path)
    except OSError:
        return False


def _compile(cmd, tmpdir: str) -> str | None:
    """Run the compiler in its own process group, temporaries in ``tmpdir``, CPU-time bounded; the
    whole group is killed at the wall-clock limit. Its message on failure."""
    env = dict(os.environ, TMPDIR=tmpdir, TMP=tmpdir, TEMP=tmpdir)
    if os.name == "posix" and os.path.exists("/bin/sh"):
        # RLIMIT_CPU is inherited by cc1 and as; set by the shell rather than a preexec_fn, which is
        # unsafe in a process with threads.
        cmd = ["/bin/sh", "-c", 'ulimit -t "$0" 2>/dev/null; exec "$@"', str(BUILD_CPU_S), *cmd]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                         start_new_session=os.name == "posix")
    try:
        out, _ = p.communicate(timeout=_wall_limit())
    except subprocess.TimeoutExpired:
        if os.name == "posix":
            os.killpg(p.pid, signal.SIGKILL)
        else:
            p.kill()
        p.communicate()
        return f"the compiler ran longer than {_wall_limit():g} s (DEEPGPU_CPU_BUILD_TIMEOUT) and was stopped"
    if p.returncode != 0:  # past BUILD_CPU_S, the compiler's own message says "CPU time limit exceeded"
        return out.strip() or f"exit status {p.returncode}"
    return None


def _build(cc: str, srcs: dict, flags, path: str) -> str | None:
    """Compile ``srcs`` (file name -> text) to ``path`` with its checksum beside it; the compiler's
    message on failure. Call with the build lock held: the temporary names are fixed, so what a
    killed build left is overwritten."""
    tmp = path + ".tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError as e:  # a cache folder we cannot write: say so, build nothing
        return f"cannot write the kernel cache {os.path.dirname(path)}: {e}"
    try:
        with tempfile.TemporaryDirectory(prefix="deepgpu-cc-") as d:
            c_files = []
            for name, text in srcs.items():
                c_files.append(os.path.join(d, name))
                with open(c_files[-1], "w") as f:
                    f.write(text)
            err = _compile([cc, *flags, "-o", tmp, *c_files], d)
        if err is not None:
            return err
        with open(tmp + ".sha256", "w") as f:
            f.write(_digest(tmp))
        os.replace(tmp + ".sha256", path + ".sha256")
        os.replace(tmp, path)
        return None
    except (OSError, subprocess.SubprocessError) as e:
        return str(e)
    finally:
        for leftover in (tmp, tmp + ".sha256"):
            if os.path.exists(leftover):
                os.unlink(leftover)


def _ensure(cc: str, srcs: dict, flags, path: str) -> str | None:
    """A checked library at ``path``, built under the cache's lock unless another process did; the
    build's message on failure."""
    if _intact(path):
        return None
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        lock = FileLock(path + ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            print(f"deepgpu: waiting for another process building the CPU kernels in {cache_dir()}",
                  file=sys.stderr, flush=True)
            lock.acquire(timeout=_wall_limit() + 60)
    except (OSError, Timeout) as e:
        return f"cannot lock the kernel cache {os.path.dirname(path)}: {e}"
    try:
        if _intact(path):  # built by the process we waited for
            return None
        if os.path.exists(path):
            why = "are damaged (checksum mismatch)" if os.path.exists(path + ".sha256") else \
                "have no checksum (an older deepgpu built them)"
            print(f"deepgpu: the cached CPU kernels {path} {why}; building them again", file=sys.stderr,
                  flush=True)
        # A build takes seconds and happens once per machine and source: say what the pause is.
        print(f"deepgpu: building the CPU kernels for this machine, once ({os.path.basename(cc)} "
              f"{' '.join(flags[:2])}; kept in {cache_dir()})", file=sys.stderr, flush=True)
        return _build(cc, srcs, flags, path)
    finally:
        lock.release()


def _declare(lib):
    P, I, L = ctypes.c_void_p, ctypes.c_int, ctypes.c_long
    lib.dg_conv2d_fwd.argtypes = [P, P, P, P] + [I] * 14 + [L, L, I]
    lib.dg_conv2d_fwd.restype = None
    lib.dg_conv2d_grad_filter.argtypes = [P, P, L, P, P, P] + [I] * 12 + [L, L]
    lib.dg_conv2d_grad_filter.restype = I
    lib.dg_mask_pad.argtypes = [P, P, P, P] + [I] * 5 + [L, L]
    lib.dg_conv2d_wino.argtypes = [P, P, P, P] + [I] * 8 + [L, L, I]
    lib.dg_conv2d_wino.restype = I
    lib.dg_conv2d_wino4.argtypes = [P, P, P, P] + [I] * 8 + [L, L, I]
    lib.dg_conv2d_wino4.restype = I
    F = ctypes.c_float
    lib.dg_adam.argtypes = [P, P, P, P, L, L, F, F, F, F, F]
    lib.dg_adam.restype = None
    lib.dg_adam_many.argtypes = [P, P, P, P, P, P, I, L, L, F, F, F, F]
    lib.dg_adam_many.restype = None
    lib.dg_mask_pad.restype = None
    lib.dg_max_pool_fwd.argtypes = [P, P] + [I] * 5 + [L, L]
    lib.dg_max_pool_fwd.restype = None
    lib.dg_max_pool_bwd.argtypes = [P, P, P, P] + [I] * 5 + [L, L]
    lib.dg_max_pool_bwd.restype = None
    lib.dg_isa.restype = ctypes.c_char_p
    lib.dg_isa.argtypes = []
    lib.dg_vector_width.restype = I
    lib.dg_vector_width.argtypes = []
    D = ctypes.c_void_p  # double arrays
    lib.dg_bn_stats.argtypes = [P, I, I, L, L, D, D]
    lib.dg_bn_stats.restype = I
    lib.dg_bn_apply.argtypes = [P, P, P, P, P, I, I, L, L]
    lib.dg_bn_apply.restype = None
    lib.dg_bn_grad_sums.argtypes = [P, P, P, I, I, L, L, D, D]
    lib.dg_bn_grad_sums.restype = I
    lib.dg_bn_grad_input.argtypes = [P, P, P, P, P, P, P, I, I, L, L]
    lib.dg_bn_grad_input.restype = None
    F = ctypes.c_float
    lib.dg_bn_finish.argtypes = [D, D, L, I, I, F, P, P, P, P]
    lib.dg_bn_finish.restype = None
    lib.dg_bn_train.argtypes = [P, P, P, P, F, I, I, L, P]
    lib.dg_bn_train.restype = I
    lib.dg_bn_grad_finish.argtypes = [D, D, L, I, I, P, P, P, P]
    lib.dg_bn_grad_finish.restype = None
    lib.dg_bn_grad.argtypes = [P, P, P, P, P, P, I, I, L, P]
    lib.dg_bn_grad.restype = I
    lib.dg_dw_fwd.argtypes = [P, P, P, P] + [I] * 14 + [L, L, I]  # cpu_depthwise.c
    for fn in (lib.dg_dw_grad_input, lib.dg_dw_grad_filter):
        fn.argtypes = [P, P, P] + [I] * 14 + [L, L]
    for fn in (lib.dg_dw_fwd, lib.dg_dw_grad_input, lib.dg_dw_grad_filter):
        fn.restype = None
    return lib


def _declare_rnn(lib):
    P, I, L = ctypes.c_void_p, ctypes.c_int, ctypes.c_long
    lib.dg_lstm_fwd.argtypes = [P, L, P, L, P, P, P, I, L, L]
    lib.dg_lstm_bwd.argtypes = [P, L, P, L, P, P, L, P, P, P, I, L, L]
    lib.dg_gru_fwd.argtypes = [P, L, P, L, P, L, P, P, I, L, L]
    lib.dg_gru_bwd.argtypes = [P, L, P, P, L, P, L, P, P, P, I, L, L]
    for fn in (lib.dg_lstm_fwd, lib.dg_lstm_bwd, lib.dg_gru_fwd, lib.dg_gru_bwd):
        fn.restype = None
    for fn in (lib.dg_f16_to_f32, lib.dg_f32_to_f16):
        fn.argtypes, fn.restype = [P, P, L], None
    return lib


def _load():
    m = mode()
    if m == "numpy":
        return None, "DEEPGPU_CPU_KERNELS=numpy"
    cc = _compiler()
    if cc is None:
        why = "no C compiler found (set CC, or install gcc or clang)"
        if m == "c":
            raise KernelCompileError(f"CPU kernels: {why}")
        return None, why
    srcs = {name: resources.files(__package__).joinpath(name).read_text() for name in SOURCES}
    version = _version(cc)
    errors = []
    for flags in (FLAGS, FALLBACK_FLAGS):
        key = hashlib.sha256("\0".join((*srcs.values(), cc, version, " ".join(flags), _cpu_id())).encode()).hexdigest()[:24]
        path = os.path.join(cache_dir(), f"dg_cpu_{key}.so")
        err = _ensure(cc, srcs, flags, path)
        if err is None:
            try:
                _state["path"] = path
                return _declare_rnn(_declare(ctypes.CDLL(path))), f"built with {os.path.basename(cc)} {' '.join(flags[:2])}"
            except (OSError, AttributeError) as e:
                err = f"could not load {path}: {e}"
        errors.append((f"{cc} {' '.join(flags)}", err))
    # One line for `deepgpu info` (the first failure's first line), everything for an error.
    first = next((ln for ln in errors[0][1].splitlines() if ln.strip()), "")
    if m == "c":
        raise KernelCompileError(f"the C kernels ({', '.join(SOURCES)}) did not build:\n" +
                                 "\n".join(f"{cmd}:\n{err}" for cmd, err in errors))
    return None, f"the C kernels ({', '.join(SOURCES)}) did not build: {first}"


def library():
    """The loaded kernels (a ctypes CDLL), or None when unavailable; built on the first call."""
    if "lib" not in _state:
        with _lock:
            if "lib" not in _state:
                _state["lib"], _state["why"] = _load()
    return _state["lib"]


def library_path() -> str | None:
    """The file of the loaded kernels, or None when they are not in use."""
    return _state.get("path") if library() is not None else None


def status() -> str:
    """One line: whether the CPU kernels are in use, and why not when they are not."""
    lib = library()
    if lib is None:
        return "not used: " + _state["why"]
    return f"in use ({_state['why']}; {lib.dg_isa().decode()}, {lib.dg_vector_width()} floats a vector)"
