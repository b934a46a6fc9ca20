"""The counter-based random primitive behind noise and augmentation layers (backends.base.random_keyed)."""
import numpy as np
import pytest

from deepgpu import backends
from deepgpu.testing import emulation


def test_pure_function_of_seed_counter_and_element():
    B = backends.get("cpu")
    a = B.random_keyed((1000,), 3, 1)
    np.testing.assert_array_equal(a, B.random_keyed((1000,), 3, 1))
    assert not np.array_equal(a, B.random_keyed((1000,), 3, 2))
    assert not np.array_equal(a, B.random_keyed((1000,), 4, 1))
    np.testing.assert_array_equal(B.random_keyed((10, 100), 3, 1).ravel(), a)  # keyed on the flat index
    assert a.dtype == np.float32 and 0 <= a.min() and a.max() < 1


def test_distributions():
    B = backends.get("cpu")
    u = B.random_keyed((200_000,), 11, 5, "uniform", "float64")
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    n = B.random_keyed((200_000,), 11, 6, "normal", "float64")
    assert abs(n.mean()) < 0.01 and abs(n.std() - 1) < 0.01
    assert abs(np.mean(np.abs(n) > 1.96) - 0.05) < 0.005
    with pytest.raises(ValueError, match="kind"):
        B.random_keyed((3,), 1, 1, "poisson")


def test_captured_step_draws_anew_per_replay():
    # The CUDA backend over NumPy: while capturing, the device replay count joins the key.
    B = emulation.custom_backend(np)
    eager = B.random_keyed((64,), 7, 3)
    np.testing.assert_array_equal(eager, backends.get("cpu").random_keyed((64,), 7, 3))
    B.capturing, B._replay_count = True, np.ones(1, np.uint64)
    try:
        first = B.random_keyed((64,), 7, 3)
        assert B._graph_uses_dropout  # the captured graph then advances the count per replay
        B._replay_count += np.uint64(1)
        second = B.random_keyed((64,), 7, 3)
    finally:
        B.capturing = False
    assert not np.array_equal(first, eager) and not np.array_equal(first, second)
