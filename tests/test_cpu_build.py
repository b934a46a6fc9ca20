"""The CPU kernels' first build: once for processes that start together, the compiler's whole process
group stopped at the time limit with nothing left in the temp folder, a damaged cached library
rebuilt, and a CPU-time (not wall-clock) bound so that a busy machine does not fail the build.

A stand-in compiler (a Python script named by ``CC``) copies the library this test session uses
instead of compiling, so these tests take seconds and log every call."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from deepgpu.kernels import cpu

pytestmark = pytest.mark.skipif(os.name != "posix", reason="process groups and RLIMIT_CPU are POSIX")


@pytest.fixture(scope="module")
def built():
    path = cpu.library_path()
    if path is None:
        pytest.skip(f"the CPU kernels are not built here: {cpu.status()}")
    return path


def _fake_cc(folder, built, body=""):
    """A compiler that logs its call (and its CPU-time limit), runs ``body``, and copies ``built``."""
    log = folder / "cc.log"
    cc = folder / "fakecc"
    cc.write_text(f"#!{sys.executable}\n" + textwrap.dedent(f"""
        import os, resource, shutil, sys, time
        if sys.argv[1:] == ["--version"]:
            print("fakecc 1.0"); sys.exit(0)
        with open({str(log)!r}, "a") as f:
            f.write(f"build cpu-limit={{resource.getrlimit(resource.RLIMIT_CPU)[0]}}\\n")
        """) + textwrap.dedent(body) + textwrap.dedent(f"""
        shutil.copyfile({built!r}, sys.argv[sys.argv.index("-o") + 1])
        """))
    cc.chmod(0o755)
    return str(cc), log


def test_two_processes_starting_together_build_once(tmp_path, built):
    cc, log = _fake_cc(tmp_path, built, "time.sleep(2)")
    env = dict(os.environ, CC=cc, DEEPGPU_KERNEL_CACHE=str(tmp_path / "cache"), DEEPGPU_CPU_KERNELS="c")
    code = "from deepgpu.kernels import cpu; print(cpu.library() is not None)"
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [o[0].strip() for o in outs] == ["True", "True"], outs
    assert log.read_text().count("build") == 1, log.read_text()
    assert sum("waiting for another process" in o[1] for o in outs) == 1, outs


def test_a_timeout_stops_the_whole_compiler_and_leaves_no_temporary(tmp_path, built, monkeypatch):
    """The driver's children (cc1, as) die with it, and what they wrote in the temp folder goes."""
    grandchild = tmp_path / "grandchild.pid"
    cc, _ = _fake_cc(tmp_path, built, f"""
        import subprocess, tempfile
        with open(os.path.join(tempfile.gettempdir(), "ccXXXX.s"), "w") as f:
            f.write("assembly")  # as cc1 writes its output
        p = subprocess.Popen(["sleep", "120"])  # as cc1 runs under the driver
        open({str(grandchild)!r}, "w").write(str(p.pid))
        time.sleep(120)
    """)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    monkeypatch.setenv("DEEPGPU_CPU_BUILD_TIMEOUT", "3")
    srcs = {name: "" for name in cpu.SOURCES}
    err = cpu._build(cc, srcs, cpu.FLAGS, str(tmp_path / "cache" / "lib.so"))
    assert err is not None and "longer than 3 s" in err
    pid = int(grandchild.read_text())
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        assert state in ("Z", "X"), f"the compiler's child {pid} still runs (state {state})"
    except FileNotFoundError:
        pass  # gone and reaped
    assert os.listdir(temp) == []
    assert os.listdir(tmp_path / "cache") == []


def test_a_damaged_cached_library_is_rebuilt(tmp_path, built, monkeypatch):
    cc, log = _fake_cc(tmp_path, built)
    monkeypatch.setenv("CC", cc)
    monkeypatch.setenv("DEEPGPU_KERNEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cpu, "_state", {})
    lib, _ = cpu._load()
    assert lib is not None
    path = cpu._state["path"]
    with open(path, "r+b") as f:  # a flipped byte in the middle of the code
        f.seek(os.path.getsize(path) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    lib, _ = cpu._load()
    assert lib is not None
    assert log.read_text().count("build") == 2
    with open(path, "rb") as a, open(built, "rb") as b:
        assert a.read() == b.read()


def test_the_compiler_is_bounded_in_cpu_time_not_by_a_short_wall_clock(tmp_path, built, monkeypatch):
    """A machine busy with other work stretches the build's wall time, not its CPU time."""
    cc, log = _fake_cc(tmp_path, built)
    monkeypatch.delenv("DEEPGPU_CPU_BUILD_TIMEOUT", raising=False)
    assert cpu._build(cc, {n: "" for n in cpu.SOURCES}, cpu.FLAGS, str(tmp_path / "c" / "lib.so")) is None
    assert log.read_text().split() == ["build", f"cpu-limit={cpu.BUILD_CPU_S}"]
    assert cpu._wall_limit() >= 30 * 60
