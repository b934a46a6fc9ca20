"""Layout rules that keep the package installable and the hardware behind one door.

* backends/ and kernels/ install as deepgpu.backends and deepgpu.kernels, so no
  module may import them by their bare top-level names (that would make a
  second registry when run from the repository root).
* Every package folder is listed in pyproject.toml (the list is by hand).
* Only backends/ and kernels/ import numpy or cupy for math; the few host-side
  exceptions are listed in ALLOWED_ARRAY_IMPORTS with the reason.
"""
import ast
import importlib
import importlib.metadata
import tomllib
from pathlib import Path

import pytest

import deepgpu

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("deepgpu", "backends", "kernels")
ARRAY_LIBS = {"numpy", "cupy", "cupyx"}

# path relative to ROOT -> None (the whole file or folder) or the set of
# functions allowed to import numpy / cupy; each with its reason.
ALLOWED_ARRAY_IMPORTS = {
    "deepgpu/testing": None,             # compares results on the host, in NumPy
    "deepgpu/tensor.py": {"to_string"},  # formats values for print(); after data_sync()
    "deepgpu/cli.py": {"cmd_info"},      # reports NumPy/CuPy versions and devices, no math
    "deepgpu/data": None,                # host I/O boundary: files to arrays
    "deepgpu/io": None,                  # host I/O boundary: weights to and from files
    "deepgpu/applications/imagenet_utils.py": {"preprocess_input"},  # NumPy images in, NumPy out, as Keras
    # NCCL's communicator holds cupy.cuda.nccl handles and device buffers, use_local_gpu picks the
    # rank's device, and MPI's bfloat16 sum op is handed raw host buffers: communication, no math.
    "deepgpu/distributed/comm.py": {"nccl_available", "__init__", "use_local_gpu", "_sum"},
}


def python_files():
    for d in SOURCE_DIRS:
        yield from sorted((ROOT / d).rglob("*.py"))


def rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


def imports(tree):
    """(top-level module name, level, enclosing function name or None, line) of every import."""
    out = []

    def visit(node, func):
        for child in ast.iter_child_nodes(node):
            f = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
            if isinstance(child, ast.Import):
                for a in child.names:
                    out.append((a.name.split(".")[0], 0, func, child.lineno))
            elif isinstance(child, ast.ImportFrom):
                mod = (child.module or "").split(".")[0]
                out.append((mod, child.level, func, child.lineno))
            visit(child, f)
    visit(tree, None)
    return out


def parsed():
    for p in python_files():
        yield p, ast.parse(p.read_text(encoding="utf-8"), filename=str(p))


def test_sources_found():
    names = {rel(p) for p in python_files()}
    assert {"backends/base.py", "backends/__init__.py", "kernels/__init__.py", "deepgpu/ops.py"} <= names


def test_no_bare_backends_or_kernels_imports():
    bad = []
    for p, tree in parsed():
        for mod, level, _, line in imports(tree):
            if level == 0 and mod in ("backends", "kernels"):
                bad.append(f"{rel(p)}:{line} imports {mod!r}; use deepgpu.{mod} or a relative import")
    assert not bad, "\n".join(bad)


def _allowed(path: str, func):
    for key, funcs in ALLOWED_ARRAY_IMPORTS.items():
        if path == key or path.startswith(key + "/"):
            return funcs is None or func in funcs
    return False


def test_numpy_and_cupy_only_behind_the_backend_door():
    bad = []
    for p, tree in parsed():
        path = rel(p)
        if path.startswith(("backends/", "kernels/")):
            continue
        for mod, level, func, line in imports(tree):
            if level == 0 and mod in ARRAY_LIBS and not _allowed(path, func):
                where = f" in {func}()" if func else ""
                bad.append(f"{path}:{line}{where} imports {mod}; call the backend (deepgpu.backends) instead")
    assert not bad, "\n".join(bad)


def test_allow_list_entries_exist():
    for key, funcs in ALLOWED_ARRAY_IMPORTS.items():
        p = ROOT / key
        if key.endswith(".py"):
            assert p.is_file(), key
            if funcs:
                defined = {n.name for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.FunctionDef)}
                assert funcs <= defined, f"{key}: {funcs - defined} not defined"


def _pyproject():
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _package_name(folder: Path) -> str:
    r = folder.relative_to(ROOT).parts
    if r[0] in ("backends", "kernels"):
        r = ("deepgpu",) + r
    return ".".join(r)


def test_every_package_folder_is_listed_in_pyproject():
    cfg = _pyproject()["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = {_package_name(init.parent) for d in SOURCE_DIRS for init in (ROOT / d).rglob("__init__.py")}
    missing = sorted(found - listed)
    assert not missing, f"package folders missing from [tool.setuptools] packages: {missing}"
    assert cfg["package-dir"] == {"deepgpu": "deepgpu", "deepgpu.backends": "backends",
                                  "deepgpu.kernels": "kernels"}


def test_listed_packages_exist():
    cfg = _pyproject()["tool"]["setuptools"]
    for pkg in cfg["packages"]:
        parts = pkg.split(".")
        assert parts[0] == "deepgpu", pkg
        if len(parts) > 1 and parts[1] in ("backends", "kernels"):
            folder = ROOT.joinpath(*parts[1:])
        else:
            folder = ROOT.joinpath(*parts)
        assert folder.is_dir(), f"{pkg} is listed but {rel(folder)} does not exist"


def test_folders_with_modules_are_packages():
    for d in SOURCE_DIRS:
        for folder in [ROOT / d] + [p for p in (ROOT / d).rglob("*") if p.is_dir()]:
            if folder.name == "__pycache__":
                continue
            if any(folder.glob("*.py")):
                assert (folder / "__init__.py").is_file(), f"{rel(folder)} has modules but no __init__.py"


def test_kernel_sources_are_package_data():
    import fnmatch
    patterns = _pyproject()["tool"]["setuptools"]["package-data"]["deepgpu.kernels"]
    sources = [p.name for p in (ROOT / "kernels").iterdir() if p.suffix in (".cu", ".cuh", ".c")]
    assert "cpu_conv.c" in sources and "matmul.cu" in sources
    for name in sources:  # the CUDA and the CPU kernels both ship in the wheel
        assert any(fnmatch.fnmatch(name, pat) for pat in patterns), f"{name} is not package data"


def test_installed_names():
    import deepgpu.backends
    import deepgpu.kernels
    assert Path(deepgpu.backends.__file__).resolve().parent == ROOT / "backends"
    assert Path(deepgpu.kernels.__file__).resolve().parent == ROOT / "kernels"
    assert importlib.metadata.version("deepgpu") == deepgpu.__version__ == _pyproject()["project"]["version"]


@pytest.mark.parametrize("extra", ["cuda", "test"])
def test_extras(extra):
    assert extra in _pyproject()["project"]["optional-dependencies"]


def test_every_submodule_imports():
    for p in python_files():
        path = rel(p)
        if path.startswith(("backends/", "kernels/")):
            name = "deepgpu." + path[:-3].replace("/", ".")
        else:
            name = path[:-3].replace("/", ".")
        importlib.import_module(name.removesuffix(".__init__"))  # CuPy is imported only on use
