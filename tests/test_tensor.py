"""Tensor: creation, properties, operators, indexing, reductions, dtypes, display, memory."""
import gc

import numpy as np
import pytest

import deepgpu as dg


def host(t):
    assert isinstance(t, dg.Tensor)
    return t.data_sync()


# ---------------------------------------------------------------- creation

def test_tensor_from_lists_and_arrays(backend):
    t = dg.tensor([[1.5, 2.0], [3.0, 4.0]])
    assert t.shape == (2, 2) and t.dtype == "float32" and t.ndim == 2 and t.size == 4
    assert t.backend == backend == dg.get_backend()
    np.testing.assert_array_equal(host(t), [[1.5, 2.0], [3.0, 4.0]])
    assert dg.tensor([1, 2, 3]).dtype == "int32"
    assert dg.tensor([True, False]).dtype == "bool"
    assert dg.tensor(2.5).shape == () and dg.tensor(2.5).ndim == 0
    assert dg.tensor([1, 2], dtype="float64").dtype == "float64"
    assert dg.tensor([1, 2, 3, 4, 5, 6], shape=(2, 3)).shape == (2, 3)
    assert dg.tensor2d([1, 2, 3, 4], (2, 2)).shape == (2, 2)
    assert dg.scalar(3).shape == ()


def test_tensor_from_tensor(backend):
    t = dg.tensor([1, 2])
    assert dg.tensor(t) is t
    f = dg.tensor(t, "float32")
    assert f.dtype == "float32" and t.dtype == "int32"
    c = dg.tensor(t, backend="cpu")
    assert c.backend == "cpu"
    np.testing.assert_array_equal(host(c), [1, 2])


def test_no_silent_float64_or_int64(backend):
    assert dg.tensor(np.array([0.1, 0.2], dtype=np.float64)).dtype == "float32"
    assert dg.tensor(np.float64(1.5)).dtype == "float32"
    assert dg.tensor(np.arange(4, dtype=np.int64)).dtype == "int32"
    assert dg.tensor(7).dtype == "int32"
    i = dg.tensor([1, 2, 3])
    assert (i + 0.5).dtype == "float32"
    assert (0.5 + i).dtype == "float32"
    assert (i * 2.0).dtype == "float32"
    assert (i / 2).dtype == "float32"
    assert (i * 2).dtype == "int32"
    assert (i + np.float64(0.5)).dtype == "float32"
    assert (np.array([0.5, 0.5, 0.5]) + i).dtype == "float32"
    assert (i + np.array([1, 2, 3], dtype=np.int64)).dtype == "int32"
    f = dg.tensor([1.0, 2.0])
    assert (f * np.float64(3.0)).dtype == "float32"
    assert (np.float64(3.0) * f).dtype == "float32"
    assert (f ** 2).dtype == "float32" and (2 ** f).dtype == "float32"
    assert i.mean().dtype == "float32"
    assert i.sum().dtype == "int32" and i.sum(axis=0).dtype == "int32"
    assert dg.tensor([True, False, True]).sum().dtype == "int32"
    assert dg.prod(i).dtype == "int32"
    assert dg.exp(i).dtype == "float32" and dg.sqrt(i).dtype == "float32"


INT_OPS = {
    "clip float bounds": (lambda i: dg.clip(i, 0.5, 2.5), "float32"),
    "clip int bounds": (lambda i: dg.clip(i, 0, 2), "int32"),
    "softmax": (lambda i: dg.softmax(i), "float32"),
    "log_softmax": (lambda i: dg.log_softmax(i), "float32"),
    "logsumexp": (lambda i: dg.logsumexp(i), "float32"),
    "concat int, float": (lambda i: dg.concat([i, i * 0.5]), "float32"),
    "concat float, int": (lambda i: dg.concat([i * 0.5, i]), "float32"),
    "stack int, float": (lambda i: dg.stack([i, i * 0.5]), "float32"),
    "matmul int @ float": (lambda i: dg.reshape(i, (1, 3)) @ dg.ones((3, 2)), "float32"),
    "dense int input": (lambda i: dg.dense(dg.reshape(i, (1, 3)), dg.ones((3, 2))), "float32"),
    "conv2d int input": (lambda i: dg.conv2d(dg.reshape(i, (1, 1, 3, 1)), dg.ones((1, 2, 1, 1))), "float32"),
    "conv2d_transpose int input": (lambda i: dg.conv2d_transpose(dg.reshape(i, (1, 1, 3, 1)),
                                                                 dg.ones((1, 2, 1, 1))), "float32"),
    "avg_pool2d int input": (lambda i: dg.avg_pool2d(dg.reshape(i, (1, 1, 3, 1)), (1, 2)), "float32"),
    "where int, float": (lambda i: dg.where(i > 1, i, 0.5), "float32"),
    "maximum int, float": (lambda i: dg.maximum(i, 2.5), "float32"),
    "sigmoid": (lambda i: dg.sigmoid(i), "float32"),
    "mean": (lambda i: dg.mean(i, axis=0), "float32"),
    "variance": (lambda i: dg.variance(i), "float32"),
    "floor_divide by float": (lambda i: i // 2.5, "float32"),
}


@pytest.mark.parametrize("name", sorted(INT_OPS))
def test_int_inputs_never_become_float64(backend, name):
    fn, want = INT_OPS[name]
    assert fn(dg.tensor([1, 2, 3])).dtype == want


def test_mixed_concat_keeps_the_float_values(backend):
    np.testing.assert_array_equal(host(dg.concat([dg.tensor([1, 2]), dg.tensor([0.5])])), [1.0, 2.0, 0.5])
    np.testing.assert_allclose(host(dg.avg_pool2d(dg.tensor([[[[1], [2]]]]), (1, 2))).ravel(), [1.5])


def test_zeros_ones_fill(backend):
    z = dg.zeros((2, 3))
    assert z.shape == (2, 3) and z.dtype == "float32" and z.backend == backend
    np.testing.assert_array_equal(host(z), np.zeros((2, 3)))
    o = dg.ones(4, "int32")
    assert o.shape == (4,) and o.dtype == "int32"
    np.testing.assert_array_equal(host(o), np.ones(4))
    f = dg.fill([2, 2], 3.5)
    np.testing.assert_array_equal(host(f), np.full((2, 2), 3.5))
    assert dg.fill((3,), 7, "int32").dtype == "int32"
    np.testing.assert_array_equal(host(dg.zeros_like(f)), np.zeros((2, 2)))
    np.testing.assert_array_equal(host(dg.ones_like(o)), np.ones(4))
    np.testing.assert_array_equal(host(dg.arange(2, 8, 2)), [2, 4, 6])
    with pytest.raises(ValueError):
        dg.zeros((2, -1))


def test_random_creation(backend):
    n = host(dg.random_normal((200, 50), mean=2.0, stddev=0.5))
    assert n.dtype == np.float32 and n.shape == (200, 50)
    assert abs(n.mean() - 2.0) < 0.02 and abs(n.std() - 0.5) < 0.02
    u = host(dg.random_uniform((10000,), -1.0, 3.0))
    assert u.min() >= -1.0 and u.max() < 3.0 and abs(u.mean() - 1.0) < 0.05
    assert dg.random_uniform((3,), 0, 10, dtype="int32").dtype == "int32"
    tn = host(dg.truncated_normal((5000,), stddev=1.0))
    assert np.abs(tn).max() <= 2.0


def test_set_seed_reproducibility(backend):
    dg.set_seed(42)
    a = host(dg.random_normal((5,)))
    b = host(dg.random_uniform((5,)))
    dg.set_seed(42)
    np.testing.assert_array_equal(host(dg.random_normal((5,))), a)
    np.testing.assert_array_equal(host(dg.random_uniform((5,))), b)
    dg.set_seed(43)
    assert not np.array_equal(host(dg.random_normal((5,))), a)
    np.testing.assert_array_equal(host(dg.random_normal((4,), seed=7)), host(dg.random_normal((4,), seed=7)))
    with pytest.raises(TypeError):
        dg.set_seed(1.5)


def test_same_seed_same_values_on_every_backend():
    results = []
    for name in dg.available_backends():
        with dg.use_backend(name):
            dg.set_seed(5)
            results.append(host(dg.random_normal((3, 3))))
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


# ------------------------------------------------------------- transfers

def test_data_sync_returns_a_numpy_copy(backend):
    t = dg.tensor([1.0, 2.0, 3.0])
    h = t.data_sync()
    assert isinstance(h, np.ndarray)
    h[0] = 100.0
    assert host(t)[0] == 1.0
    assert t.data_sync() is not t.data_sync()
    assert t.array_sync() == [1.0, 2.0, 3.0]
    assert dg.tensor([[2]]).item() == 2
    with pytest.raises(ValueError):
        t.item()


def test_cpu_tensor_converts_implicitly():
    with dg.use_backend("cpu"):
        t = dg.tensor([1.0, 2.0])
        np.testing.assert_array_equal(np.asarray(t), [1.0, 2.0])
        assert float(dg.tensor(2.5)) == 2.5
        assert int(dg.tensor(3)) == 3
        assert bool(dg.tensor(True)) is True
        assert [10, 20, 30][dg.tensor(1)] == 20


# -------------------------------------------------------------- operators

def test_arithmetic_operators(backend):
    a_np = np.array([[1.0, -2.0], [3.0, 4.0]], np.float32)
    b_np = np.array([0.5, 2.0], np.float32)
    a, b = dg.tensor(a_np), dg.tensor(b_np)
    cases = {
        "+": (a + b, a_np + b_np), "-": (a - b, a_np - b_np), "*": (a * b, a_np * b_np),
        "/": (a / b, a_np / b_np), "**": (dg.abs(a) ** b, np.abs(a_np) ** b_np),
        "@": (a @ a, a_np @ a_np), "neg": (-a, -a_np), "abs": (abs(a), np.abs(a_np)), "pos": (+a, a_np),
        "//": (a // b, a_np // b_np), "%": (a % b, a_np % b_np),
    }
    for op, (got, want) in cases.items():
        assert got.dtype == "float32", op
        np.testing.assert_allclose(host(got), want, rtol=1e-6, err_msg=op)


def test_reflected_operators(backend):
    a = dg.tensor([1.0, 2.0, 4.0])
    np.testing.assert_allclose(host(1 + a), [2, 3, 5])
    np.testing.assert_allclose(host(1 - a), [0, -1, -3])
    np.testing.assert_allclose(host(2 * a), [2, 4, 8])
    np.testing.assert_allclose(host(8 / a), [8, 4, 2])
    np.testing.assert_allclose(host(2 ** a), [2, 4, 16])
    m = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    r = m @ dg.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert isinstance(r, dg.Tensor)
    np.testing.assert_allclose(host(r), m @ [[1, 2], [3, 4]])


@pytest.mark.parametrize("op", ["+", "-", "*", "/", ">", "=="])
def test_numpy_array_on_the_left_gives_a_tensor(backend, op):
    left = np.array([[1.0, 2.0], [3.0, 4.0]])
    t = dg.tensor([2.0, 4.0])
    fn = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y,
          "/": lambda x, y: x / y, ">": lambda x, y: x > y, "==": lambda x, y: x == y}[op]
    got = fn(left, t)
    assert isinstance(got, dg.Tensor), type(got)
    assert got.backend == backend
    np.testing.assert_allclose(host(got), fn(left, np.array([2.0, 4.0])))


def test_comparisons(backend):
    a = dg.tensor([1, 2, 3])
    b = dg.tensor([3, 2, 1])
    for got, want in [(a == b, [0, 1, 0]), (a != b, [1, 0, 1]), (a < b, [1, 0, 0]),
                      (a <= b, [1, 1, 0]), (a > b, [0, 0, 1]), (a >= b, [0, 1, 1]),
                      (a > 1.5, [0, 1, 1]), (2 <= a, [0, 1, 1]), (a == 3, [0, 0, 1])]:
        assert got.dtype == "bool"
        np.testing.assert_array_equal(host(got), np.array(want, bool))
    assert a in {a}  # tensors stay hashable by identity


def test_broadcast_mismatch_raises(backend):
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4,\)"):
        dg.ones((2, 3)) + dg.ones((4,))


# --------------------------------------------------------------- indexing

def test_indexing_and_slicing(backend):
    x_np = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    x = dg.tensor(x_np)
    keys = [0, -1, (1, 2), (1, 2, 3), (slice(None), 1), (Ellipsis, -1), (slice(None, None, -1),),
            (0, slice(1, 3), slice(None, None, 2)), (None, 1), ([1, 0, 1],), (0, [2, 2, 0])]
    for k in keys:
        np.testing.assert_array_equal(host(x[k]), x_np[k], err_msg=str(k))
    np.testing.assert_array_equal(host(x[x > 10]), x_np[x_np > 10])
    np.testing.assert_array_equal(host(x[dg.tensor([1, 0])]), x_np[[1, 0]])
    assert len(x) == 2
    with pytest.raises(IndexError):
        x[2]
    with pytest.raises(TypeError):
        len(dg.tensor(1.0))


def test_slice_function(backend):
    x_np = np.arange(20, dtype=np.float32).reshape(4, 5)
    x = dg.tensor(x_np)
    np.testing.assert_array_equal(host(dg.slice(x, [1, 2], [2, 3])), x_np[1:3, 2:5])
    np.testing.assert_array_equal(host(dg.slice(x, [1, 1], [-1, 2])), x_np[1:, 1:3])
    with pytest.raises(ValueError):
        dg.slice(x, [3, 0], [2, 1])


# ------------------------------------------------------- shape and reduce

def test_reshape_transpose(backend):
    x_np = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    x = dg.tensor(x_np)
    assert x.reshape(6, 4).shape == (6, 4)
    assert x.reshape((4, -1)).shape == (4, 6)
    np.testing.assert_array_equal(host(x.reshape(-1)), x_np.ravel())
    np.testing.assert_array_equal(host(x.transpose()), x_np.transpose())
    np.testing.assert_array_equal(host(x.transpose(1, 0, 2)), x_np.transpose(1, 0, 2))
    np.testing.assert_array_equal(host(x.transpose((2, 0, 1))), x_np.transpose(2, 0, 1))
    np.testing.assert_array_equal(host(dg.tensor([[1, 2]]).T), [[1], [2]])
    assert x.flatten().shape == (24,)
    with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
        x.reshape(5, 5)
    with pytest.raises(ValueError):
        x.transpose(0, 0, 1)


@pytest.mark.parametrize("name", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize("axis,keepdims", [(None, False), (None, True), (0, False), (-1, True), ((0, 2), False),
                                           (1, True)])
def test_reductions(backend, name, axis, keepdims):
    x_np = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    got = getattr(dg.tensor(x_np), name)(axis=axis, keepdims=keepdims)
    want = getattr(np, name)(x_np, axis=axis, keepdims=keepdims)
    assert got.shape == np.shape(want) and got.dtype == "float32"
    np.testing.assert_allclose(host(got), want, rtol=1e-5, atol=1e-6)
    fn = getattr(dg, name)(dg.tensor(x_np), axis, keepdims)
    np.testing.assert_allclose(host(fn), want, rtol=1e-5, atol=1e-6)


def test_argmax_argmin(backend):
    x_np = np.array([[1.0, 5.0, 3.0], [7.0, 0.0, 2.0]], np.float32)
    x = dg.tensor(x_np)
    assert x.argmax().dtype == "int32"
    assert int(host(x.argmax())) == 3
    np.testing.assert_array_equal(host(x.argmax(axis=1)), [1, 0])
    np.testing.assert_array_equal(host(x.argmax(axis=0)), [1, 0, 0])
    np.testing.assert_array_equal(host(x.argmin(axis=-1)), [0, 1])
    with pytest.raises(ValueError):
        x.argmax(axis=2)


def test_reduction_axis_out_of_range(backend):
    with pytest.raises(ValueError, match="axis 3"):
        dg.ones((2, 2)).sum(axis=3)


def test_astype(backend):
    x = dg.tensor([1.7, -2.5, 0.0])
    i = x.astype("int32")
    assert i.dtype == "int32"
    np.testing.assert_array_equal(host(i), [1, -2, 0])
    assert x.astype("bool").dtype == "bool"
    assert x.astype("float64").dtype == "float64"
    assert x.astype("float32") is x
    with pytest.raises(ValueError):
        x.astype("complex128")


# ----------------------------------------------------------------- display

def test_print_like_tfjs(backend, capsys):
    dg.tensor([[1, 2], [3, 4]]).print()
    assert capsys.readouterr().out == "Tensor\n    [[1, 2],\n     [3, 4]]\n"
    dg.tensor([1.5, 2.0]).print(verbose=True)
    out = capsys.readouterr().out
    assert out.startswith("Tensor\n  dtype: float32\n  rank: 1\n  shape: [2]\n  values:\n")
    assert out.rstrip().endswith("[1.5, 2. ]")
    dg.tensor(2.5).print()
    assert capsys.readouterr().out == "Tensor\n    2.5\n"


def test_repr(backend):
    r = repr(dg.zeros((2, 3)))
    assert "shape=(2, 3)" in r and "float32" in r and backend in r
    v = dg.Variable(dg.zeros((2,)), name="w")
    assert "w" in repr(v) and "trainable=True" in repr(v)


def test_print_large_tensor_is_summarised(backend, capsys):
    dg.zeros((100, 100)).print()
    out = capsys.readouterr().out
    assert "..." in out and len(out.splitlines()) < 20


# ------------------------------------------------------------------ memory

def test_memory_counts_tensors_and_bytes(backend):
    gc.collect()
    before = dg.memory()
    assert {"num_tensors", "num_bytes", "backends"} <= set(before)
    assert backend in before["backends"]
    ts = [dg.zeros((250,)) for _ in range(4)]  # 4 x 1000 bytes
    mid = dg.memory()
    assert mid["num_tensors"] - before["num_tensors"] == 4
    assert mid["num_bytes"] - before["num_bytes"] == 4000
    b = mid["backends"][backend]
    assert b["num_bytes"] - before["backends"][backend]["num_bytes"] == 4000
    if backend == "cuda":
        assert "pool_used_bytes" in b
    del ts
    gc.collect()
    after = dg.memory()
    assert after["num_tensors"] == before["num_tensors"]
    assert after["num_bytes"] == before["num_bytes"]


def test_dispose_releases_memory(backend):
    gc.collect()
    before = dg.memory()
    t = dg.ones((1000,))
    assert dg.memory()["num_bytes"] == before["num_bytes"] + 4000
    dg.dispose(t)
    after = dg.memory()  # as TF.js's tf.memory(): neither its bytes nor the tensor count any more
    assert (after["num_bytes"], after["num_tensors"]) == (before["num_bytes"], before["num_tensors"])
    assert t.is_disposed and t.shape == (1000,)  # TF.js keeps the shape; use raises
    dg.dispose(t)
    del t
    gc.collect()
    assert dg.memory()["num_tensors"] == before["num_tensors"]  # disposing twice, then freeing: no change


def test_memory_counts_stay_exact_with_threads(backend):
    """Tensors made and freed in several threads at once (and one freed in another thread than the one
    that made it) leave the counts exactly where they were; a disposed tensor counts no more."""
    import threading
    gc.collect()
    before = dg.memory()
    handed = []

    def work(k):
        for i in range(300):
            t = dg.zeros((k + 1,)) * 2.0
            if i % 50 == 0:
                handed.append(t)  # freed later by the main thread
            del t

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gc.collect()
    mid = dg.memory()
    assert mid["num_tensors"] - before["num_tensors"] == len(handed) == 24
    assert mid["num_bytes"] - before["num_bytes"] == sum(t.data.nbytes for t in handed)
    nbytes = handed[0].data.nbytes
    dg.dispose(handed[0])
    assert dg.memory()["num_tensors"] == mid["num_tensors"] - 1
    assert dg.memory()["num_bytes"] == mid["num_bytes"] - nbytes
    handed.clear()
    gc.collect()
    after = dg.memory()
    assert (after["num_tensors"], after["num_bytes"]) == (before["num_tensors"], before["num_bytes"])


def test_memory_counts_stay_exact_after_a_failed_init_and_a_copy(backend):
    """A Tensor whose __init__ failed, and a copy.copy of one (made without __init__), leave no count
    behind when freed: __del__ takes away only what __init__ stored."""
    import copy
    from deepgpu import backends
    from deepgpu.tensor import Tensor

    class NoBytes:
        nbytes = "many"

    gc.collect()
    before = dg.memory()
    for _ in range(3):
        with pytest.raises(ValueError):
            Tensor(NoBytes(), backends.get(backend))
    t = dg.ones((10,))
    c = copy.copy(t)
    assert (dg.memory()["num_tensors"], dg.memory()["num_bytes"]) == (before["num_tensors"] + 1,
                                                                       before["num_bytes"] + 40)
    del t, c
    gc.collect()
    after = dg.memory()
    assert (after["num_tensors"], after["num_bytes"]) == (before["num_tensors"], before["num_bytes"])


# ---------------------------------------------------------------- Variable

def test_variable_assign(backend):
    v = dg.Variable([1.0, 2.0, 3.0], name="v")
    assert isinstance(v, dg.Tensor) and v.trainable and v.name == "v" and v.dtype == "float32"
    v.assign([4.0, 5.0, 6.0])
    np.testing.assert_array_equal(host(v), [4, 5, 6])
    v.assign(dg.tensor([7.0, 8.0, 9.0]))
    np.testing.assert_array_equal(host(v), [7, 8, 9])
    v.assign(np.array([0.5, 0.25, 0.125], dtype=np.float64))
    assert v.dtype == "float32"
    np.testing.assert_array_equal(host(v), [0.5, 0.25, 0.125])
    v.assign_add([1.0, 1.0, 1.0])
    v.assign_sub(dg.tensor([0.5, 0.5, 0.5]))
    np.testing.assert_array_equal(host(v), [1.0, 0.75, 0.625])
    with pytest.raises(ValueError, match=r"\(2,\).*\(3,\)"):
        v.assign([1.0, 2.0])
    with pytest.raises(ValueError):
        v.assign(dg.zeros((3, 1)))


def test_variable_copies_its_initial_value(backend):
    t = dg.tensor([1.0, 2.0])
    v = dg.Variable(t)
    v.assign([5.0, 5.0])
    np.testing.assert_array_equal(host(t), [1.0, 2.0])
    assert dg.Variable([1, 2]).dtype == "int32"
    assert dg.Variable([1, 2], dtype="float32").dtype == "float32"
    assert not dg.Variable([1.0], trainable=False).trainable
    a, b = dg.Variable([1.0]), dg.Variable([1.0])
    assert a.name != b.name
