import pytest

import deepgpu
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
