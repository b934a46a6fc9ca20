"""The layout keeps its layers (issue 14): nothing under deepgpu/layers/ imports deepgpu/models/.

The (de)serialization registry (deepgpu/registry.py) sits below the layers:
layers, activations, models and io use it, and it uses none of them. Imports
are read with ``ast`` (those inside functions too), and, in a fresh process,
the layers are loaded without the umbrella ``deepgpu/__init__.py`` (which
re-exports everything, models included) to show they need nothing above them.
"""
import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _folders():
    """{package name: folder}, as pyproject.toml's package-dir maps them (backends/ is deepgpu.backends)."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        dirs = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    return {name: ROOT / folder for name, folder in dirs.items()}


def _modules():
    """{module name: (path, is_package)} of every .py file the installed packages hold."""
    out = {}
    for pkg, folder in _folders().items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            if is_pkg:
                parts.pop()
            out[".".join([pkg] + parts)] = (path, is_pkg)
    return out


MODULES = _modules()


def _imports(name):
    """[(line, module imported)] of module ``name``: every deepgpu module its import statements name."""
    path, is_pkg = MODULES[name]
    package = name if is_pkg else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module
            found.append((node.lineno, base))
            # `from pkg import sub` imports the submodule pkg.sub.
            found += [(node.lineno, f"{base}.{a.name}") for a in node.names if f"{base}.{a.name}" in MODULES]
    return [(line, mod) for line, mod in found if mod == "deepgpu" or mod.startswith("deepgpu.")]


def _under(mod, package):
    return mod == package or mod.startswith(package + ".")


def test_the_module_list_sees_the_layers_and_the_registry():
    assert "deepgpu.layers.core" in MODULES and "deepgpu.registry" in MODULES
    assert MODULES["deepgpu.backends"][0] == ROOT / "backends" / "__init__.py"


def test_no_module_under_layers_imports_models():
    bad = [f"{MODULES[name][0].relative_to(ROOT)}:{line} imports {mod}"
           for name in MODULES if _under(name, "deepgpu.layers")
           for line, mod in _imports(name) if _under(mod, "deepgpu.models")]
    assert not bad, "deepgpu/layers/ must not import deepgpu/models/ (the registry is deepgpu/registry.py): " + \
        "; ".join(bad)


def test_the_registry_imports_nothing_of_deepgpu():
    assert _imports("deepgpu.registry") == []


def test_nothing_the_layers_import_leads_to_models_or_io():
    """Followed through every module the layers import (and theirs), no path reaches models/ or io/.

    The umbrella deepgpu/__init__.py is not followed: it re-exports the whole
    API by design. A package's own __init__ is (importing a.b.c runs a.b).
    """
    start = [n for n in MODULES if _under(n, "deepgpu.layers")] + ["deepgpu.registry"]
    parent = {n: None for n in start}
    todo = list(start)
    while todo:
        name = todo.pop()
        for _, mod in _imports(name):
            parts = mod.split(".")
            for k in range(2, len(parts) + 1):
                m = ".".join(parts[:k])
                if m in MODULES and m not in parent:
                    parent[m] = name
                    todo.append(m)
    reached = sorted(m for m in parent if _under(m, "deepgpu.models") or _under(m, "deepgpu.io"))

    def chain(m):
        out = [m]
        while parent[out[-1]] is not None:
            out.append(parent[out[-1]])
        return " <- ".join(out)

    assert not reached, "the layers reach models/ or io/: " + "; ".join(chain(m) for m in reached)


# Loads deepgpu.layers with deepgpu/__init__.py replaced by an empty package,
# builds, calls and round-trips layers through the registry, and prints which
# deepgpu modules were loaded.
_BARE_LAYERS = r"""
import importlib.util, sys, types
spec = importlib.util.find_spec("deepgpu")
pkg = types.ModuleType("deepgpu")
pkg.__path__, pkg.__spec__ = list(spec.submodule_search_locations), spec
sys.modules["deepgpu"] = pkg
import numpy as np
import deepgpu.layers as L
from deepgpu import registry
from deepgpu.tensor import tensor
x = tensor(np.ones((2, 4), np.float32))
for layer in (L.Dense(3, activation="relu"), L.Dropout(0.5), L.Reshape((2, 2))):
    again = registry.deserialize_layer(registry.serialize_layer(layer))
    assert type(again) is type(layer), again
    assert again(x).shape == layer(x).shape
assert registry.lookup_class("Convolution2D") is L.Conv2D
print(" ".join(sorted(m for m in sys.modules if m.startswith("deepgpu"))))
"""


def test_layers_load_and_round_trip_without_models():
    r = subprocess.run([sys.executable, "-c", _BARE_LAYERS], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    loaded = r.stdout.split()
    assert "deepgpu.layers.core" in loaded
    above = [m for m in loaded if _under(m, "deepgpu.models") or _under(m, "deepgpu.io")]
    assert not above, f"loading the layers loaded {above}"


def test_each_package_imports_first_in_a_fresh_process():
    """No import circle left to trip on: each of these can be the first deepgpu import."""
    for mod in ("deepgpu.registry", "deepgpu.layers", "deepgpu.activations", "deepgpu.models.serialization",
                "deepgpu.io.native", "deepgpu.kernels"):
        r = subprocess.run([sys.executable, "-c", f"import {mod}"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"import {mod}: {r.stderr}"


def test_the_registry_names_stay_where_they_were():
    import deepgpu
    from deepgpu import models, registry
    from deepgpu.models import serialization

    moved = {"register_serializable": "register_serializable", "custom_objects": "custom_objects",
             "serialize_layer": "serialize_layer", "deserialize_layer": "deserialize_layer",
             "_lookup_class": "lookup_class", "_CUSTOM": "_CUSTOM"}
    for old, new in moved.items():
        assert getattr(serialization, old) is getattr(registry, new), old
    assert deepgpu.register_serializable is models.register_serializable is registry.register_serializable
    assert serialization.deserialize_layer({"class_name": "Sequential", "config": {"layers": []}}).__class__ \
        is models.Sequential
    assert registry.lookup_class("Functional") is registry.lookup_class("Model") is models.Model


def test_kernels_init_only_loads_and_re_exports():
    """Launchers live in their family's module beside its .cu file (kernels/gemm.py, conv.py, ...)."""
    tree = ast.parse((ROOT / "kernels" / "__init__.py").read_text())
    defined = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    assert not defined, f"kernels/__init__.py defines {defined}; put them in the module of their kernel family"


def test_every_kernel_launched_is_registered_by_its_family():
    import deepgpu.kernels as K

    for file, names in K.KERNELS.items():
        assert (ROOT / "kernels" / file).is_file(), file
        assert len(set(names)) == len(names), f"{file}: a kernel registered twice"
        assert all(K._file_of[n] == file for n in names)
