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
