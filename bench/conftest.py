"""Shared fixtures of the benchmark suites (run with ``python3 -m pytest bench -q``).

Every suite runs on each backend ``deepgpu.available_backends()`` lists. A
timed function ends with the backend's ``sync()`` so that GPU work is
counted; achieved rates go into ``benchmark.extra_info`` (GFLOP/s or GB/s,
from the median time) and show in ``--benchmark-json`` output.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import deepgpu
from deepgpu import backends

# pytest runs with --import-mode=importlib: make bench/benchutil.py importable.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(params=deepgpu.available_backends())
def B(request):
    """The Backend instance, made active for the test."""
    with backends.use_backend(request.param) as b:
        yield b


@pytest.fixture
def rng():
    return np.random.default_rng(0)


