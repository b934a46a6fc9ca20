"""The CUDA kernel sources compile, and the Python side names only kernels that exist.

Runs without a GPU: nvcc (when on PATH) builds every ``.cu`` file for sm_90
down to a cubin (so ptxas checks registers and shared memory too), and
NVRTC (when its library is found) compiles the exact text and options
``cupy.RawModule`` compiles at run time. A failure shows the compiler's output.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import re
import shutil
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from deepgpu import kernels as K

ROOT = Path(__file__).resolve().parents[1]
ARCH = "sm_90"  # the H100 of the GPU machine
KERNEL_DEF = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(')
CU_FILES = sorted(n for n in K.sources() if n.endswith(".cu"))


def test_every_kernel_file_is_listed():
    assert CU_FILES == sorted(K.KERNELS), "kernels.KERNELS must list every .cu file (precompile uses it)"


@pytest.mark.parametrize("file", CU_FILES)
def test_named_kernels_exist_and_every_kernel_is_named(file):
    defined = KERNEL_DEF.findall(K.source(file))
    assert len(defined) == len(set(defined)), f"{file}: a kernel is defined twice: {defined}"
    missing = set(K.KERNELS[file]) - set(defined)
    assert not missing, f"{file}: kernels.py launches {sorted(missing)}, which the source does not define"
    unnamed = set(defined) - set(K.KERNELS[file])
    assert not unnamed, f"{file}: {sorted(unnamed)} are not listed in kernels.KERNELS (precompile skips them)"


def test_launched_kernel_names_are_listed():
    # __init__.py and the launcher modules beside it (norm.py, ...).
    text = "".join(f.read_text() for f in sorted((ROOT / "kernels").glob("*.py")))
    launched = set(re.findall(r'_launch\(\s*"(\w+)"', text))
    launched |= {"dg_matmul_" + a + b for a in "nt" for b in "nt"}  # the name is built in matmul()
    listed = {n for names in K.KERNELS.values() for n in names}
    assert launched <= listed, f"launched but not listed: {sorted(launched - listed)}"


def test_tile_constants_match_the_header():
    text = K.sources()["gemm_core.cuh"] + K.sources()["common.cuh"]
    val = {m.group(1): m.group(2) for m in re.finditer(r"#define (DG_\w+) (\S+)", text)}
    assert (int(val["DG_BM"]), int(val["DG_BN"]), int(val["DG_BK"])) == (K.TILE_M, K.TILE_N, K.TILE_K)
    threads = (K.TILE_N // int(val["DG_TN"])) * (K.TILE_M // int(val["DG_TM"]))
    assert threads == K.GEMM_THREADS
    assert {"relu": 1, "sigmoid": 2, "tanh": 3} == {
        n: int(val[f"DG_ACT_{n.upper()}"]) for n in ("relu", "sigmoid", "tanh")}


def test_headers_ship_as_package_data():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = cfg["tool"]["setuptools"]["package-data"]["deepgpu.kernels"]
    assert "*.cu" in data and "*.cuh" in data


def test_inlined_source_has_no_local_includes():
    for file in CU_FILES:
        src = K.source(file)
        assert not re.search(r'#\s*include\s*"', src), f"{file}: a local include was not inlined"


def test_importing_the_kernels_touches_no_cuda():
    code = ("import sys, deepgpu, deepgpu.kernels, deepgpu.backends.cupy_backend; "
            "assert 'cupy' not in sys.modules, 'cupy was imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_compile_error_names_file_function_and_message():
    e = K.KernelCompileError("pool.cu", "dg_max_pool_fwd", "pool.cu(3): error: identifier \"q\" is undefined")
    assert "pool.cu" in str(e) and "dg_max_pool_fwd" in str(e) and "undefined" in str(e)
    assert isinstance(e, RuntimeError)


# ---------------------------------------------------------------- nvcc
@pytest.fixture(scope="module")
def nvcc_runs(tmp_path_factory):
    """Start every file's nvcc at once (they take seconds each); file -> (cmd, Popen)."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not on PATH (CUDA toolkit not installed)")
    tmp = tmp_path_factory.mktemp("nvcc")
    runs = {}
    for file in CU_FILES:
        cmd = ["nvcc", f"-arch={ARCH}", "-cubin", "-std=c++17", "-Werror", "all-warnings",
               "-Xptxas", "-warn-spills", "-I", str(ROOT / "kernels"),
               "-o", str(tmp / (file + ".cubin")), str(ROOT / "kernels" / file)]
        runs[file] = (cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return runs


@pytest.mark.parametrize("file", CU_FILES)
def test_nvcc_compiles(file, nvcc_runs):
    cmd, proc = nvcc_runs[file]
    out, _ = proc.communicate()
    assert proc.returncode == 0, f"nvcc failed on {file}:\n{' '.join(cmd)}\n{out}"
    assert Path(cmd[cmd.index("-o") + 1]).stat().st_size > 0


def test_tensorcore_compiles_for_sm80(tmp_path):
    """tensorcore.cu's wmma TF32 / bfloat16 fragments need sm_80: the A100 builds it too (sm_90 above)."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not on PATH (CUDA toolkit not installed)")
    cmd = ["nvcc", "-arch=sm_80", "-cubin", "-std=c++17", "-Werror", "all-warnings", "-Xptxas", "-warn-spills",
           "-I", str(ROOT / "kernels"), "-o", str(tmp_path / "tc.cubin"), str(ROOT / "kernels" / "tensorcore.cu")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"nvcc failed:\n{' '.join(cmd)}\n{r.stdout}{r.stderr}"


# --------------------------------------------------------------- NVRTC
def _nvrtc():
    try:
        from cuda import pathfinder
        return ctypes.CDLL(pathfinder.load_nvidia_dynamic_lib("nvrtc").abs_path)
    except Exception:
        pass
    names = [ctypes.util.find_library("nvrtc")]
    for pat in ("/usr/local/cuda*/lib64/libnvrtc.so*", "/usr/local/cuda*/targets/*/lib/libnvrtc.so*"):
        names += sorted(glob.glob(pat))
    for n in names:
        if n:
            try:
                return ctypes.CDLL(n)
            except OSError:
                continue
    return None


NVRTC = _nvrtc()


def _nvrtc_compile(src, name, options):
    lib = NVRTC
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), name.encode(), 0, None, None) == 0
    opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
    rc = lib.nvrtcCompileProgram(prog, len(options), opts)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    cubin = ctypes.c_size_t()
    if rc == 0:
        lib.nvrtcGetCUBINSize(prog, ctypes.byref(cubin))
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return rc, log.value.decode(errors="replace"), cubin.value


@pytest.fixture(scope="module")
def nvrtc_runs():
    """Every file through NVRTC, in parallel threads (ctypes releases the GIL); file -> future."""
    if NVRTC is None:
        pytest.skip("no NVRTC library found (pip install nvidia-cuda-nvrtc)")
    # CuPy's RawModule adds -ftz=true, the device's arch and the CUDA headers' folder to our
    # OPTIONS (tensorcore.cu includes <mma.h>, <cuda_fp16.h>, <cuda_bf16.h> from there).
    options = list(K.OPTIONS) + ["-ftz=true", f"-arch={ARCH}"]
    nvcc = shutil.which("nvcc")
    for root in (os.environ.get("CUDA_PATH"), nvcc and str(Path(nvcc).resolve().parents[1]), "/usr/local/cuda"):
        if root and (Path(root) / "include" / "mma.h").exists():
            options.append(f"-I{Path(root) / 'include'}")
            break
    with ThreadPoolExecutor(len(CU_FILES)) as pool:
        futs = {f: pool.submit(_nvrtc_compile, K.source(f), f, options) for f in CU_FILES}
        yield options, futs


@pytest.mark.parametrize("file", CU_FILES)
def test_nvrtc_compiles_what_cupy_compiles(file, nvrtc_runs):
    options, futs = nvrtc_runs
    rc, log, cubin = futs[file].result()
    assert rc == 0, f"NVRTC failed on {file} ({options}):\n{log}"
    assert cubin > 0
    assert "warning" not in log.lower(), f"NVRTC warned on {file}:\n{log}"


@pytest.mark.skipif(NVRTC is None, reason="no NVRTC library found")
def test_nvrtc_reports_errors():
    rc, log, _ = _nvrtc_compile('extern "C" __global__ void k(float* x) { x[0] = q; }', "bad.cu",
                                [f"-arch={ARCH}"])
    assert rc != 0 and "q" in log


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPGPU_KERNEL_CACHE", str(tmp_path))
    assert K.cache_dir() == str(tmp_path)
    monkeypatch.delenv("DEEPGPU_KERNEL_CACHE")
    monkeypatch.setenv("CUPY_CACHE_DIR", str(tmp_path / "c"))
    assert K.cache_dir() == str(tmp_path / "c")
    assert os.path.isabs(K.cache_dir())
