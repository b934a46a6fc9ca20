"""CUDA C++ kernels for the cuda backend, compiled lazily with cupy.RawModule.

The ``.cu`` sources live beside this file and are loaded through
``importlib.resources`` so that installed and editable copies behave alike.
"""
from __future__ import annotations

from importlib import resources


def sources() -> dict[str, str]:
    """Map of kernel file name -> CUDA source text shipped with deepgpu."""
    root = resources.files("deepgpu.kernels")
    return {p.name: p.read_text() for p in root.iterdir() if p.name.endswith((".cu", ".cuh"))}
