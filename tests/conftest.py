import numpy as np
import pytest

import deepgpu
from deepgpu import kernels as K
from deepgpu.testing.emulation import emulation_status, emulator
from deepgpu.testing import backend  # noqa: F401  (the backend-parametrized fixture)


@pytest.fixture(autouse=True)
def _seed_and_cpu_default():
    """Every test starts seeded, with gradients on and the previous backend restored."""
    deepgpu.set_seed(1234)
    prev = deepgpu.get_backend()
    yield
    deepgpu.set_backend(prev)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip, with the reason, where no usable GPU is found."""
    ok, why = deepgpu.cuda_status()
    if ok:
        return
    skip = pytest.mark.skip(reason=f"no CUDA backend here: {why}")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


# The kernel test files (tests/test_kernels_*.py) share these: a kernel runs under the CPU
# emulation, built once per process and kept on disk keyed by the sources, or on a GPU.
@pytest.fixture(scope="session")
def _emulator():
    ok, why = emulation_status()
    if not ok:
        pytest.skip(why)
    return emulator()


@pytest.fixture(params=["emulated", pytest.param("cuda", marks=pytest.mark.cuda)])
def xp(request):
    """The array module of the mode: NumPy under the emulation, CuPy on the GPU."""
    if request.param == "emulated":
        emu = request.getfixturevalue("_emulator")
        K._emulator = emu
        try:
            yield np
        finally:
            K._emulator = None
    else:
        ok, why = deepgpu.cuda_status()
        if not ok:
            pytest.skip(why)
        import cupy
        yield cupy
        cupy.cuda.get_current_stream().synchronize()
