"""Autograd: grad, grads, value_and_grad(s), variable_grads, no_grad, accumulation, frozen variables."""
import gc

import numpy as np
import pytest

import deepgpu as dg
from deepgpu.autograd import GRADIENTS


def host(t):
    return t.data_sync()


def test_grad(backend):
    g = dg.grad(lambda x: dg.sum(x * x * x))(dg.tensor([1.0, -2.0, 3.0]))
    assert isinstance(g, dg.Tensor) and g.backend == backend and g.dtype == "float32"
    np.testing.assert_allclose(host(g), [3.0, 12.0, 27.0])


def test_grad_accepts_lists_and_arrays(backend):
    f = dg.grad(lambda x: dg.sum(dg.square(x)))
    np.testing.assert_allclose(host(f([1.0, 2.0])), [2.0, 4.0])
    g = f(np.array([1.0, 2.0]))  # float64 NumPy input is cast at the boundary
    assert g.dtype == "float32"
    np.testing.assert_allclose(host(g), [2.0, 4.0])


def test_grad_with_dy(backend):
    dy = dg.tensor([[1.0, 2.0], [3.0, 4.0]])
    g = dg.grad(lambda x: x * 3.0)(dg.ones((2, 2)), dy)
    np.testing.assert_allclose(host(g), [[3, 6], [9, 12]])
    g = dg.grad(lambda x: x * 3.0)(dg.ones((2, 2)), dy=[[1.0, 1.0], [1.0, 1.0]])
    np.testing.assert_allclose(host(g), np.full((2, 2), 3.0))


def test_grads(backend):
    a, b = dg.tensor([1.0, 2.0]), dg.tensor([3.0, 5.0])
    ga, gb = dg.grads(lambda a, b: dg.sum(a * b + a))([a, b])
    np.testing.assert_allclose(host(ga), [4.0, 6.0])
    np.testing.assert_allclose(host(gb), [1.0, 2.0])


def test_value_and_grad(backend):
    y, g = dg.value_and_grad(lambda x: dg.sum(dg.exp(x)))(dg.tensor([0.0, 1.0]))
    np.testing.assert_allclose(host(y), 1 + np.e, rtol=1e-6)
    np.testing.assert_allclose(host(g), [1.0, np.e], rtol=1e-6)
    assert not y.requires_grad  # the returned value carries no graph


def test_value_and_grads(backend):
    y, (ga, gb) = dg.value_and_grads(lambda a, b: dg.sum(a @ b))([dg.ones((2, 3)), dg.fill((3, 4), 2.0)])
    assert float(host(y)) == 48.0
    np.testing.assert_allclose(host(ga), np.full((2, 3), 8.0))
    np.testing.assert_allclose(host(gb), np.full((3, 4), 2.0))


def test_unused_input_gets_zeros(backend):
    ga, gb = dg.grads(lambda a, b: dg.sum(a * 2.0))([dg.ones((3,)), dg.ones((2, 2))])
    np.testing.assert_allclose(host(ga), [2.0, 2.0, 2.0])
    assert gb.shape == (2, 2)
    np.testing.assert_array_equal(host(gb), np.zeros((2, 2)))


def test_output_is_the_input(backend):
    g = dg.grad(lambda x: x)(dg.ones((2,)), dg.tensor([3.0, 4.0]))
    np.testing.assert_allclose(host(g), [3.0, 4.0])


def test_gradient_accumulates_when_a_tensor_is_used_twice(backend):
    g = dg.grad(lambda x: dg.sum(x * x + x))(dg.tensor([1.0, 2.0]))
    np.testing.assert_allclose(host(g), [3.0, 5.0])
    # A diamond: y = a + b with a = 2x, b = x^2, and x reused at the end.
    def f(x):
        a = x * 2.0
        b = x * x
        return dg.sum((a + b) * x)
    np.testing.assert_allclose(host(dg.grad(f)(dg.tensor([1.0, 3.0]))), [4 * 1 + 3 * 1, 4 * 3 + 3 * 9])


def test_broadcast_gradients_are_summed_to_the_input_shape(backend):
    ga, gb = dg.grads(lambda a, b: dg.sum(a * b))([dg.ones((3, 4)), dg.tensor([1.0, 2.0, 3.0, 4.0])])
    assert ga.shape == (3, 4) and gb.shape == (4,)
    np.testing.assert_allclose(host(gb), [3.0, 3.0, 3.0, 3.0])
    np.testing.assert_allclose(host(ga), np.tile([1.0, 2.0, 3.0, 4.0], (3, 1)))


def test_gradients_own_their_memory(backend):
    # The gradient of sum is a broadcast of dy; it must come back as a real, writable array.
    for f in (lambda x: dg.sum(x), lambda x: dg.mean(x), lambda x: dg.sum(dg.pad(x, [[1, 1], [0, 0]]))):
        g = dg.grad(f)(dg.ones((2, 3)))
        expected = host(g) + 1.0
        g.data += 1.0
        np.testing.assert_allclose(host(g), expected)


def test_variable_grads(backend):
    w = dg.Variable([[1.0, 2.0], [3.0, 4.0]], name="w")
    b = dg.Variable([0.5, -0.5], name="b")
    x = dg.tensor([[1.0, 1.0]])
    value, gs = dg.variable_grads(lambda: dg.sum(x @ w + b))
    assert float(host(value)) == 10.0
    assert set(gs) == {w, b}
    np.testing.assert_allclose(host(gs[w]), [[1.0, 1.0], [1.0, 1.0]])
    np.testing.assert_allclose(host(gs[b]), [1.0, 1.0])
    _, only = dg.variable_grads(lambda: dg.sum(x @ w + b), var_list=[b])
    assert list(only) == [b]


def test_frozen_variables_get_no_gradient(backend):
    w = dg.Variable([1.0, 2.0], name="w")
    frozen = dg.Variable([3.0, 4.0], trainable=False, name="frozen")
    _, gs = dg.variable_grads(lambda: dg.sum(w * frozen))
    assert list(gs) == [w]
    np.testing.assert_allclose(host(gs[w]), [3.0, 4.0])
    out = dg.sum(w * frozen)
    grads = out.backward()
    assert list(grads) == [w]
    _, gs = dg.variable_grads(lambda: dg.sum(w * frozen), var_list=[w, frozen])
    np.testing.assert_array_equal(host(gs[frozen]), [0.0, 0.0])
    # set_trainable switches it back on.
    frozen.set_trainable(True)
    _, gs = dg.variable_grads(lambda: dg.sum(w * frozen))
    assert set(gs) == {w, frozen}
    np.testing.assert_allclose(host(gs[frozen]), [1.0, 2.0])


def test_explicit_grad_of_a_frozen_variable(backend):
    v = dg.Variable([1.0, 2.0], trainable=False)
    np.testing.assert_allclose(host(dg.grad(lambda t: dg.sum(t * t))(v)), [2.0, 4.0])
    assert not v.requires_grad


def test_tensor_backward(backend):
    w = dg.Variable([2.0, 3.0])
    grads = dg.sum(w * w).backward()
    np.testing.assert_allclose(host(grads[w]), [4.0, 6.0])
    grads = (w * 2.0).backward(dg.tensor([1.0, 10.0]))
    np.testing.assert_allclose(host(grads[w]), [2.0, 20.0])


def test_no_grad_records_no_graph(backend):
    w = dg.Variable([1.0, 2.0])
    assert dg.is_grad_enabled()
    with dg.no_grad():
        assert not dg.is_grad_enabled()
        y = dg.sum(dg.exp(w * w))
        z = dg.matmul(dg.reshape(w, (1, 2)), dg.reshape(w, (2, 1)))
    assert dg.is_grad_enabled()
    for t in (y, z):
        assert not t.requires_grad and t._node is None
    # Nesting and exceptions restore the previous state.
    with pytest.raises(RuntimeError):
        with dg.no_grad():
            with dg.no_grad():
                pass
            assert not dg.is_grad_enabled()
            raise RuntimeError
    assert dg.is_grad_enabled()
    with dg.no_grad():
        with dg.enable_grad():
            assert (w * 2.0).requires_grad
        assert not (w * 2.0).requires_grad


def test_grad_mode_is_per_thread_and_an_error_passes_through(backend):
    import threading
    seen = []
    with dg.no_grad():
        t = threading.Thread(target=lambda: seen.append(dg.is_grad_enabled()))
        t.start()
        t.join()
        assert not dg.is_grad_enabled()
    assert seen == [True]  # a new thread starts with recording on, whatever another thread set
    with pytest.raises(KeyError):
        with dg.no_grad():
            with dg.enable_grad():
                raise KeyError("x")
    assert dg.is_grad_enabled()
    mode = dg.no_grad()
    assert mode.__enter__() is None  # `with no_grad() as x` binds None, as before
    mode.__exit__(None, None, None)
    assert dg.is_grad_enabled()


def test_grad_modes_work_as_decorators(backend):
    """``@no_grad()`` / ``@enable_grad()`` decorate a function, as the contextlib versions did: each call
    runs in its own block (recursion and threads each restore their own previous setting)."""
    import threading

    @dg.no_grad()
    def off(depth):
        inner = off(depth - 1) if depth else None
        return dg.is_grad_enabled(), inner

    @dg.enable_grad()
    def on():
        return dg.is_grad_enabled(), off(2)

    assert off.__name__ == "off"
    assert off(2) == (False, (False, (False, None))) and dg.is_grad_enabled()
    with dg.no_grad():
        assert on() == (True, (False, (False, (False, None))))
        assert not dg.is_grad_enabled()
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(off(3)[0])) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [False] * 4 and dg.is_grad_enabled()

    @dg.no_grad()
    def fail():
        raise KeyError("x")

    with pytest.raises(KeyError):
        fail()
    assert dg.is_grad_enabled()


def test_a_grad_mode_entered_twice_at_once_raises(backend):
    """One no_grad() entered again before it exits (nested, or from another thread) would restore the
    wrong setting on the way out and leave recording off for good: refused, as the contextlib version
    refused any second use. Entered again after it exits, it works."""
    mode = dg.no_grad()
    with mode:
        with pytest.raises(RuntimeError, match="no_grad.*already entered"):
            with mode:
                pass
        assert not dg.is_grad_enabled()
    assert dg.is_grad_enabled()
    with mode:
        assert not dg.is_grad_enabled()
    assert dg.is_grad_enabled()


def test_grad_functions_work_inside_no_grad(backend):
    with dg.no_grad():
        g = dg.grad(lambda x: dg.sum(x * x))(dg.tensor([3.0]))
    np.testing.assert_allclose(host(g), [6.0])


def test_with_grad_disabled_ops_on_variables_build_nothing(backend):
    w = dg.Variable([1.0])
    y = w * 2.0
    assert y.requires_grad and y._node is not None and y._node.op == "multiply"
    c = dg.tensor([1.0]) * 2.0
    assert not c.requires_grad and c._node is None


def test_errors(backend):
    x = dg.tensor([1.0, 2.0])
    with pytest.raises(ValueError, match="shape"):
        dg.grad(lambda t: t * 2.0)(x)  # non-scalar output and no dy
    with pytest.raises(ValueError, match="shape"):
        dg.value_and_grad(lambda t: t * 2.0)(x)
    with pytest.raises(ValueError, match="shape"):
        dg.variable_grads(lambda: dg.Variable([1.0, 2.0]) * 2.0)
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        dg.grad(lambda t: t * 2.0)(x, dy=[1.0, 2.0, 3.0])  # dy of the wrong shape
    with pytest.raises(TypeError, match="Tensor"):
        dg.grad(lambda t: 3.0)(x)
    with pytest.raises(TypeError, match="list"):
        dg.grads(lambda t: dg.sum(t))(x)


def test_missing_gradient_rule_is_a_clear_error(backend):
    saved = GRADIENTS.pop("exp")
    try:
        with pytest.raises(NotImplementedError, match="exp"):
            dg.grad(lambda t: dg.sum(dg.exp(t)))(dg.tensor([1.0]))
    finally:
        GRADIENTS["exp"] = saved


def test_graph_is_freed(backend):
    w = dg.Variable(dg.random_normal((50, 50)))
    x = dg.random_normal((8, 50))
    for _ in range(2):  # warm up any caches
        dg.variable_grads(lambda: dg.mean(dg.relu(x @ w)))
    gc.collect()
    before = dg.memory()
    for _ in range(5):
        value, gs = dg.variable_grads(lambda: dg.mean(dg.relu(x @ w)))
    del value, gs
    gc.collect()
    after = dg.memory()
    assert after["num_tensors"] == before["num_tensors"]
    assert after["num_bytes"] == before["num_bytes"]


def test_training_loop_decreases_loss(backend):
    dg.set_seed(0)
    x = dg.random_normal((32, 3))
    true_w = dg.tensor([[1.0], [-2.0], [0.5]])
    y = x @ true_w + 0.3
    w = dg.Variable(dg.zeros((3, 1)))
    b = dg.Variable(dg.zeros((1,)))
    losses = []
    for _ in range(100):
        loss, gs = dg.variable_grads(lambda: dg.mean(dg.square(x @ w + b - y)))
        losses.append(float(host(loss)))
        with dg.no_grad():
            w.assign_sub(gs[w] * 0.1)
            b.assign_sub(gs[b] * 0.1)
    assert losses[-1] < 1e-3 * losses[0]
    np.testing.assert_allclose(host(w).ravel(), [1.0, -2.0, 0.5], atol=1e-2)
    np.testing.assert_allclose(host(b), [0.3], atol=1e-2)


def test_grad_of_a_result_unrelated_to_the_input_raises():
    x = dg.tensor([1.0, 2.0])
    with pytest.raises(ValueError, match="does not depend"):
        dg.grad(lambda t: dg.tensor(3.0))(x)
    # grad of grad would otherwise be silently zero
    inner = dg.grad(lambda t: (t * t * t).sum())
    with pytest.raises(ValueError, match="higher-order"):
        dg.grad(lambda t: inner(t).sum())(x)
    # a partly connected result still differentiates (unused input -> zeros)
    ga, gb = dg.grads(lambda a, b: (a * 2).sum())([x, x])
    np.testing.assert_array_equal(ga.data_sync(), [2, 2])
    np.testing.assert_array_equal(gb.data_sync(), [0, 0])


def test_backward_order_puts_each_weight_right_after_its_last_consumer(backend):
    """DataParallel reduces a weight's gradient as soon as backward has it: the order _topo gives (read
    backwards) must visit a weight right after the op that uses it, before the rest of the graph."""
    from deepgpu.autograd import _topo
    x = dg.tensor([[1.0, 2.0]])
    w1, b1, w2, b2 = dg.Variable([[1.0], [2.0]]), dg.Variable([0.5]), dg.Variable([[3.0]]), dg.Variable([0.1])
    m1 = dg.matmul(x, w1)
    a1 = m1 + b1
    h = dg.relu(a1)
    m2 = dg.matmul(h, w2)
    a2 = m2 + b2
    y = dg.sum(a2)
    assert [id(t) for t in reversed(_topo(y))] == [id(t) for t in (y, a2, b2, m2, w2, h, a1, b1, m1, w1)]
