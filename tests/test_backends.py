"""The backend registry: choosing, switching and refusing backends."""
import os
import subprocess
import sys
import tempfile
import threading

import numpy as np
import pytest

import deepgpu as dg
from deepgpu import backends
from deepgpu.backends.numpy_backend import NumpyBackend

CUDA_OK, CUDA_WHY = backends.cuda_status()


def run_python(code, **env):
    """Run ``code`` in a fresh interpreter in an empty folder and return its stdout.

    Not the repository's parent: a checkout folder named ``deepgpu`` there would be
    imported as a namespace package instead of the installed one."""
    e = dict(os.environ)
    e.pop("DEEPGPU_BACKEND", None)
    e.update(env)
    with tempfile.TemporaryDirectory() as empty:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, cwd=empty,
                           timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def test_set_and_get_backend():
    assert dg.set_backend("cpu") == "cpu"
    assert dg.get_backend() == "cpu"
    assert dg.tensor([1.0]).backend == "cpu"
    assert dg.set_backend("CPU") == "cpu"
    assert dg.set_backend("auto") == ("cuda" if CUDA_OK else "cpu")
    assert dg.get_backend() == ("cuda" if CUDA_OK else "cpu")


def test_available_backends():
    av = dg.available_backends()
    assert av[0] == "cpu"
    assert ("cuda" in av) == CUDA_OK
    assert set(av) <= {"cpu", "cuda"}
    ok, why = dg.cuda_status()
    assert isinstance(ok, bool) and isinstance(why, str) and why


def test_backend_instances_are_shared():
    assert backends.get("cpu") is backends.get("cpu")
    assert isinstance(backends.get("cpu"), NumpyBackend)
    dg.set_backend("cpu")
    assert backends.current() is backends.get("cpu")


def test_use_backend_restores_previous():
    dg.set_backend("cpu")
    with dg.use_backend("cpu") as b:
        assert b is backends.get("cpu")
        assert dg.get_backend() == "cpu"
    assert dg.get_backend() == "cpu"


def test_use_backend_restores_even_on_exception(backend):
    prev = dg.get_backend()
    with pytest.raises(KeyError):
        with dg.use_backend("cpu"):
            assert dg.get_backend() == "cpu"
            raise KeyError("boom")
    assert dg.get_backend() == prev == backend


def test_use_backend_nested():
    dg.set_backend("cpu")
    names = dg.available_backends()
    with dg.use_backend(names[-1]):
        with dg.use_backend("cpu"):
            assert dg.get_backend() == "cpu"
        assert dg.get_backend() == names[-1]
    assert dg.get_backend() == "cpu"


@pytest.mark.parametrize("name", ["tpu", "gpu", "", "numpy", None, 3])
def test_unknown_name_raises_value_error_listing_valid_names(name):
    dg.set_backend("cpu")
    with pytest.raises(ValueError) as e:
        dg.set_backend(name)
    for valid in ("cpu", "cuda", "auto"):
        assert valid in str(e.value)
    with pytest.raises(ValueError):
        with dg.use_backend(name):
            pass
    assert dg.get_backend() == "cpu"


@pytest.mark.skipif(CUDA_OK, reason="CUDA is usable here")
def test_set_backend_cuda_without_cupy_raises_and_leaves_backend_unchanged():
    dg.set_backend("cpu")
    assert issubclass(dg.BackendUnavailableError, RuntimeError)
    with pytest.raises(dg.BackendUnavailableError) as e:
        dg.set_backend("cuda")
    assert "CuPy" in str(e.value) or "driver" in str(e.value) or "device" in str(e.value)
    assert dg.get_backend() == "cpu"
    with pytest.raises(dg.BackendUnavailableError):
        with dg.use_backend("cuda"):
            pass
    assert dg.get_backend() == "cpu"
    with pytest.raises(dg.BackendUnavailableError):
        dg.tensor([1.0], backend="cuda")


@pytest.mark.skipif(CUDA_OK, reason="CUDA is usable here")
def test_missing_cupy_is_named():
    import importlib.util
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed; the missing piece is the driver or the device")
    with pytest.raises(dg.BackendUnavailableError, match="CuPy is not installed"):
        dg.set_backend("cuda")


def test_threads_start_on_the_process_default():
    dg.set_backend("cpu")
    seen = []
    t = threading.Thread(target=lambda: seen.append(dg.get_backend()))
    t.start()
    t.join()
    assert seen == ["cpu"]


def test_tensor_to_same_backend_is_itself():
    with dg.use_backend("cpu"):
        t = dg.tensor([1.0, 2.0])
        assert t.to("cpu") is t


# ---------------------------------------------------------- environment

def test_env_var_cpu_is_respected():
    out = run_python("import deepgpu as dg; print(dg.get_backend(), dg.tensor([1.0]).backend)",
                     DEEPGPU_BACKEND="cpu")
    assert out == "cpu cpu"


def test_env_var_auto_and_default():
    want = "cuda" if CUDA_OK else "cpu"
    assert run_python("import deepgpu as dg; print(dg.get_backend())", DEEPGPU_BACKEND="auto") == want
    assert run_python("import deepgpu as dg; print(dg.get_backend())") == want


def test_env_var_unknown_name_is_a_value_error():
    code = ("import deepgpu as dg\n"
            "try:\n    dg.get_backend()\nexcept ValueError as e:\n    print('ValueError', e)\n")
    out = run_python(code, DEEPGPU_BACKEND="gpu")
    assert out.startswith("ValueError") and "gpu" in out and "'cpu'" in out


@pytest.mark.skipif(CUDA_OK, reason="CUDA is usable here")
def test_env_var_cuda_without_gpu_raises():
    code = ("import deepgpu as dg\n"
            "try:\n    dg.tensor([1.0])\nexcept dg.BackendUnavailableError as e:\n    print('unavailable')\n")
    assert run_python(code, DEEPGPU_BACKEND="cuda") == "unavailable"


def test_cpu_backend_never_imports_cupy():
    code = ("import sys, deepgpu as dg\n"
            "x = dg.tensor([[1.0, 2.0]]); w = dg.Variable(dg.ones((2, 3)))\n"
            "dg.variable_grads(lambda: dg.sum(dg.relu(x @ w)))\n"
            "dg.conv2d(dg.ones((1, 4, 4, 1)), dg.ones((3, 3, 1, 2))).data_sync()\n"
            "dg.memory(); dg.set_seed(1)\n"
            "print(dg.get_backend(), sorted(m for m in sys.modules if m.split('.')[0] in ('cupy', 'cupyx')))\n")
    assert run_python(code, DEEPGPU_BACKEND="cpu") == "cpu []"


def test_deepgpu_is_the_installed_package_not_the_checkout_root():
    out = run_python("import deepgpu, deepgpu.backends as b; print(b.__name__, b.NAMES)")
    assert out.startswith("deepgpu.backends")


# ---------------------------------------------------- mixing backends

class _OtherBackend(NumpyBackend):
    name = "other"


def test_mixing_tensors_of_two_backends_raises():
    dg.set_backend("cpu")
    other = _OtherBackend()
    a = dg.tensor([1.0, 2.0])
    b = dg.Tensor(other.asarray([3.0, 4.0]), other)
    for fn in (lambda: a + b, lambda: b * a, lambda: dg.matmul(a, b), lambda: dg.concat([a, b]),
               lambda: dg.where(dg.tensor([True, False]), a, b), lambda: dg.stack([a, b])):
        with pytest.raises(ValueError, match="'cpu'.*'other'|'other'.*'cpu'"):
            fn()


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA_OK, reason=CUDA_WHY)
def test_mixing_cpu_and_cuda_tensors_raises():
    c = dg.tensor([1.0, 2.0], backend="cpu")
    g = dg.tensor([1.0, 2.0], backend="cuda")
    with pytest.raises(ValueError, match="backend"):
        c + g
    with pytest.raises(ValueError, match="backend"):
        dg.matmul(g, c)
    np.testing.assert_array_equal((c + g.to("cpu")).data_sync(), [2.0, 4.0])
    np.testing.assert_array_equal((c.to("cuda") + g).data_sync(), [2.0, 4.0])


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA_OK, reason=CUDA_WHY)
def test_cuda_tensor_refuses_implicit_conversion():
    with dg.use_backend("cuda"):
        t = dg.tensor([1.5])
        assert t.backend == "cuda"
        for convert in (np.asarray, float, bool, int, np.array):
            with pytest.raises(TypeError, match=r"data_sync\(\)"):
                convert(t)
        with pytest.raises(TypeError, match=r"data_sync\(\)"):
            [1, 2][dg.tensor(1)]
        assert isinstance(t.data_sync(), np.ndarray)
        assert t.data_sync()[0] == 1.5


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA_OK, reason=CUDA_WHY)
def test_cuda_memory_reports_the_pool():
    with dg.use_backend("cuda"):
        t = dg.ones((1024,))
        m = dg.memory()["backends"]["cuda"]
        assert m["num_bytes"] >= 4096
        assert m["pool_used_bytes"] >= 4096
        del t


def test_shared_number_constants_keep_their_value_sign_and_dtype():
    """Python numbers used as operands become shared 0-d arrays (no fill launch per op on a GPU);
    sharing must never mix up 0.0 and -0.0, ints and floats, or dtypes."""
    import deepgpu as dg
    x = dg.tensor([1.0, 2.0])
    assert (x * 0.0).data_sync().tolist() == [0.0, 0.0]
    with np.errstate(divide="ignore"):
        assert (1.0 / (x * -0.0)).data_sync().tolist() == [-np.inf, -np.inf]
        assert (1.0 / (x * 0.0)).data_sync().tolist() == [np.inf, np.inf]
    i = dg.tensor([3, 4], "int32")
    assert (i * 2).dtype == "int32" and (x * 2).dtype == "float32"
    assert (dg.cast(x, "float64") * 0.5).dtype == "float64"
    B = dg.backends.get("cpu")
    assert B._scalar(2.0, "float32") is B._scalar(2.0, "float32")
    assert B._scalar(2.0, "float32") is not B._scalar(2.0, "float64")
