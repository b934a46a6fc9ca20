"""The eager step's host-cost shortcuts (issue 22 section 2) keep the semantics they replace."""
import numpy as np
import pytest

import deepgpu as dg
from deepgpu import layers, losses, optimizers, regularizers
from deepgpu.models import Model, Sequential


class _Fixed(layers.Layer):
    """A layer whose class defines ``losses`` itself: the cached walk must ask it as is."""

    def call(self, x):
        return x

    @property
    def losses(self):
        return [dg.tensor(np.float32(0.25))]


class _Block(Model):
    """A subclassed model nesting a regularized layer (found through attribute tracking)."""

    def __init__(self):
        super().__init__()
        self.inner = layers.Dense(3, kernel_regularizer=regularizers.L2(0.5), activity_regularizer=regularizers.L1(0.1))

    def call(self, x):
        return self.inner(x)


def test_training_loss_adds_every_penalty_through_the_cached_walk():
    dg.set_seed(0)
    model = Sequential([layers.Dense(4, kernel_regularizer=regularizers.L1(0.01)), _Block(), _Fixed(),
                        layers.Dense(2)])
    model.compile(optimizer=optimizers.SGD(0.0), loss="mse")
    x = np.random.default_rng(0).uniform(-1, 1, (5, 6)).astype("float32")
    y = np.zeros((5, 2), "float32")
    for _ in range(2):  # the second step reads the cached layer walk
        loss = model.train_on_batch(x, y)
        out = model(x, training=True)  # refreshes the activity penalty for the same input
        penalties = sum(float(p.data_sync()) for p in model.losses)
        assert len(model.losses) == 4
        plain = float(losses.mean_squared_error(dg.tensor(y), out).data_sync().mean())
        assert loss == pytest.approx(plain + penalties, rel=1e-5)
    assert model._loss_sources.key is model._train_vars


@pytest.mark.parametrize("labels, ok", [([0, 9, 3], True), ([0.0, 9.5], True), ([], True),
                                        ([0, 10], False), ([-1, 2], False), ([np.nan, 1.0], False)])
def test_check_labels_range_shortcut_agrees_with_the_full_check(labels, ok):
    t = dg.tensor(np.asarray(labels, "float32" if any(isinstance(v, float) for v in labels) else "int32"),
                  backend="cpu")
    if ok:
        losses.check_labels(t, 10)
    else:
        with pytest.raises(ValueError, match="outside \\[0, 10\\)"):
            losses.check_labels(t, 10)
    losses.check_labels(dg.tensor(np.asarray([0, -1], "int32"), backend="cpu"), 10, ignore_class=-1)


@pytest.mark.parametrize("make", [
    lambda: np.empty((3, 5), np.float32),                 # the fast path: a writable C-contiguous buffer
    lambda: np.empty((4, 6), np.float32)[1:],             # a view at an offset
    lambda: np.empty((4, 6), np.float32)[:, 1:],          # not C-contiguous: the fallback
    lambda: np.empty((4, 6), np.float32).T,               # Fortran order: the fallback
    lambda: np.frombuffer(b"abcdefgh", np.float32),       # read-only: the fallback
    lambda: np.empty(0, np.float32),                      # empty: the fallback
    lambda: np.arange(6, dtype=">f8")[2:],                # non-native byte order, at an offset
    lambda: np.zeros((2, 3), np.float32).view(np.recarray),  # a subclass
])
@pytest.mark.parametrize("direct", [True, False])
def test_kernel_pointer_is_numpys_address(make, direct, monkeypatch):
    """_ptr reads the data pointer from the array object where probes confirm where it lies (CPython),
    else through a ctypes view of the buffer: both give NumPy's own address."""
    from deepgpu.kernels import runtime

    if direct:
        assert runtime._NP_DATA_AT is not None  # CPython with NumPy's C layout, as here
    else:
        monkeypatch.setattr(runtime, "_NP_DATA_AT", None)
    a = make()
    assert runtime._ptr(a) == a.ctypes.data
    assert runtime._aligned16(a) == (a.ctypes.data % 16 == 0)


def test_update_many_checks_parameters_once_and_gradients_every_step(monkeypatch):
    from deepgpu import kernels as K
    from deepgpu.kernels import updates

    launches = []
    monkeypatch.setattr(K, "_emulator", lambda name, grid, block, args: launches.append(args))
    monkeypatch.setattr(updates, "_var_sets", {})
    ps = [np.zeros(n, np.float32) for n in (3, 5)]
    ms, vs = [np.zeros_like(p) for p in ps], [np.zeros_like(p) for p in ps]
    gs = [np.ones_like(p) for p in ps]
    for _ in range(2):  # the second step reuses the checked parameter sets
        K.adam_many(ps, gs, ms, vs, 1e-3, 0.9, 0.999, 1e-7, 1)
    assert len(updates._var_sets) == 1 and len(launches) == 2
    args = launches[1][10:22]  # after rule, count, mask, flag, 5 floats, hp: (p, g, m, v, -, size) per variable
    assert [a is b for a, b in zip(args, (ps[0], gs[0], ms[0], vs[0], None))] == [True] * 5 and args[5] == 3
    assert args[6] is ps[1] and args[7] is gs[1] and args[11] == 5
    with pytest.raises(ValueError, match="gradient 1 has 4 elements"):
        K.adam_many(ps, [gs[0], np.ones(4, np.float32)], ms, vs, 1e-3, 0.9, 0.999, 1e-7, 2)
    with pytest.raises(ValueError, match="parameter 1 or its slots"):
        K.adam_many(ps, gs, ms, [vs[0], np.zeros(5, np.float64)], 1e-3, 0.9, 0.999, 1e-7, 2)
    assert len(launches) == 2  # nothing launched for a refused step


@pytest.mark.parametrize("opt", [lambda: optimizers.Adam(1e-2, weight_decay=0.1), lambda: optimizers.SGD(0.1, momentum=0.9),
                                 lambda: optimizers.Adam(1e-2, clipnorm=0.5)])
def test_raw_gradients_step_equals_apply_gradients(opt):
    from deepgpu import constraints

    rng = np.random.default_rng(1)
    values = [rng.standard_normal(s).astype(np.float32) for s in ((3, 4), (4,), (2,))]
    grads = [rng.standard_normal(v.shape).astype(np.float32) for v in values]

    def variables():
        return [dg.Variable(values[0], constraint=constraints.NonNeg()), dg.Variable(values[1]),
                dg.Variable(values[2], trainable=False)]

    a, b = variables(), variables()
    oa, ob = opt(), opt()
    B = a[0]._backend
    for _ in range(3):
        oa.apply_gradients([(dg.tensor(grads[0]), a[0]), (None, a[1]), (dg.tensor(grads[2]), a[2])])
        ob._apply_raw_gradients([B.asarray(grads[0]), None, B.asarray(grads[2])], b)
    assert oa.iterations == ob.iterations == 3
    for va, vb in zip(a, b):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())
    with pytest.raises(ValueError, match="gradient of shape"):
        ob._apply_raw_gradients([B.asarray(grads[1]), None, None], b)


def test_metric_read_on_the_host_equals_the_device_result():
    from deepgpu import metrics

    rng = np.random.default_rng(2)
    m, w = metrics.Mean(), metrics.Mean()
    for n in (3, 7, 5):  # counts that are not powers of two: the division rounds
        v = rng.standard_normal(n).astype(np.float32) * 1e3
        m.update_state(dg.tensor(v))
        w.update_state(dg.tensor(v[:1]), sample_weight=n / 3)  # a host count from a Python weight
    for metric in (m, w):
        assert metric._read() == float(metric.result().item())
    acc = metrics.SparseCategoricalAccuracy()
    acc.update_state(dg.tensor(np.array([0, 1, 2], np.int32)), dg.tensor(rng.random((3, 3)).astype(np.float32)))
    assert acc._read() == float(acc.result().item())
    weighted = metrics.Mean()  # a device count: result() itself
    weighted.update_state(dg.tensor(np.ones(3, np.float32)), sample_weight=dg.tensor(np.array([1, 2, 0], np.float32)))
    assert weighted._read() == float(weighted.result().item())


def test_train_on_batch_takes_a_whole_tensor_batch_as_is():
    from deepgpu.models.training import _take

    t = dg.tensor(np.arange(12, dtype=np.float32).reshape(4, 3))
    B = t._backend
    assert _take(t, slice(0, 4), B) is t
    part = _take(t, slice(1, 3), B)
    assert part is not t and part.shape == (2, 3) and part.numpy()[0, 0] == 3
    model = Sequential([layers.Dense(2, input_shape=(3,))])
    model.compile(optimizer=optimizers.SGD(0.1), loss="mse")
    twin = Sequential([layers.Dense(2, input_shape=(3,))])
    twin.compile(optimizer=optimizers.SGD(0.1), loss="mse")
    twin.set_weights(model.get_weights())
    y = np.ones((4, 2), np.float32)
    assert model.train_on_batch(t, dg.tensor(y)) == twin.train_on_batch(t.numpy(), y)
    for a, b in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_real_launch_passes_null_pointers_for_none(monkeypatch):
    from deepgpu import kernels as K
    from deepgpu.kernels import runtime

    got = []
    monkeypatch.setattr(K, "_emulator", None)
    monkeypatch.setattr(runtime, "function", lambda name: lambda grid, block, args: got.append((name, args)))
    a = np.zeros(2, np.float32)
    runtime._launch("dg_x", (1,), (32,), (a, None, np.int32(3)))
    (name, args), = got
    assert name == "dg_x" and type(args) is tuple and args[0] is a and args[1] is runtime._NULL and args[2] == 3


def test_backend_many_update_remembers_float32_parameters_but_checks_each_gradient(monkeypatch):
    """CupyBackend._f32_many caches its verdict per set of parameters and slots (by identity): a new
    set with a float64 slot, or float64 gradients for a cached set, still take the generic path."""
    from deepgpu import kernels as K
    from deepgpu.backends import cupy_backend
    from deepgpu.testing.emulation import custom_backend

    B = custom_backend(np)
    prev = B.kernels
    B.kernels = "custom"
    launches = []
    monkeypatch.setattr(K, "_emulator", lambda name, grid, block, args: launches.append(name))
    monkeypatch.setattr(cupy_backend, "_F32_SETS", {})
    try:
        ps = [np.zeros(n, np.float32) for n in (3, 5)]
        ms, vs = [np.zeros_like(p) for p in ps], [np.zeros_like(p) for p in ps]
        gs = [np.ones_like(p) for p in ps]
        for _ in range(2):
            B.adam_update_many(ps, gs, ms, vs, 1e-3, 0.9, 0.999, 1e-7, 1)
        assert launches == ["dg_update_many"] * 2 and len(cupy_backend._F32_SETS) == 1
        before = ps[0].copy()
        B.adam_update_many(ps, [g.astype(np.float64) for g in gs], ms, vs, 1e-3, 0.9, 0.999, 1e-7, 1)
        assert len(launches) == 2 and not np.array_equal(ps[0], before)  # the generic update ran
        vs64 = [vs[0], np.zeros(5, np.float64)]
        B.adam_update_many(ps, gs, ms, vs64, 1e-3, 0.9, 0.999, 1e-7, 1)
        # the generic form: per variable (the float32 one on its own kernel), no many-variable launch
        assert launches[2:] == ["dg_adam"] and len(cupy_backend._F32_SETS) == 2 and vs64[1].any()
    finally:
        B.kernels = prev


def test_update_many_group_masks_follow_each_calls_decays(monkeypatch):
    """The launch plan kept per parameter set gives each call's own weight-decay mask, per group of eight."""
    from deepgpu import kernels as K
    from deepgpu.kernels import updates

    launches = []
    monkeypatch.setattr(K, "_emulator", lambda name, grid, block, args: launches.append(args))
    monkeypatch.setattr(updates, "_var_sets", {})
    ps = [np.zeros(3, np.float32) for _ in range(10)]
    ms, vs = [np.zeros_like(p) for p in ps], [np.zeros_like(p) for p in ps]
    gs = [np.ones_like(p) for p in ps]
    for decays in ([i % 3 == 0 for i in range(10)], [i == 9 for i in range(10)]):
        K.adam_many(ps, gs, ms, vs, 1e-3, 0.9, 0.999, 1e-7, 1, 0.1, decays)
    assert len(updates._var_sets) == 1
    assert [(int(a[1]), int(a[2])) for a in launches] == [(8, 0b01001001), (2, 0b10), (8, 0), (2, 0b10)]


def test_conv_gradient_launchers_check_dy_on_every_plan(monkeypatch):
    """The dy shape check of the convolution gradients lives in the plan made per signature (dy's shape is
    in its key): a wrong dy is refused before and after the right one's plan is cached, naming the launcher."""
    from deepgpu import kernels as K

    monkeypatch.setattr(K, "_emulator", lambda name, grid, block, args: None)
    x, k = np.zeros((2, 6, 6, 4), np.float32), np.zeros((3, 3, 4, 8), np.float32)
    good, bad = np.zeros((2, 4, 4, 8), np.float32), np.zeros((2, 4, 5, 8), np.float32)
    for dy in (bad, good, bad):
        for what, call in (("grad_input", lambda: K.conv2d_grad_input(dy, k, x.shape)),
                           ("grad_filter", lambda: K.conv2d_grad_filter(x, dy, k.shape, with_bias=True))):
            if dy is good:
                call()
                continue
            with pytest.raises(ValueError, match=rf"conv2d_{what}: dy has shape \(2, 4, 5, 8\), expected \(2, 4, 4, 8\)"):
                call()
    with pytest.raises(ValueError, match="activation 'gelu' is not fused"):
        K.conv2d(x, k, activation="gelu")


@pytest.mark.parametrize("opt", [lambda: optimizers.Adam(1e-2), lambda: optimizers.AdamW(1e-2, weight_decay=0.1),
                                 lambda: optimizers.RMSprop(1e-2, momentum=0.5)])
def test_optimizer_many_groups_follow_the_variable_list(opt):
    """The per-list grouping an optimizer keeps (_many_groups) is redone when the list changes (a frozen
    layer, a new variable): each step updates exactly the variables given, as a fresh optimizer's would."""
    rng = np.random.default_rng(2)
    values = [rng.standard_normal(s).astype(np.float32) for s in ((3, 4), (4,), (2,))]
    grads = [rng.standard_normal(v.shape).astype(np.float32) for v in values]
    lists = ([0, 1, 2], [0, 2], [0, 1, 2], [2, 1])

    def run(o, memo):
        vs = [dg.Variable(v) for v in values]
        for step, which in enumerate(lists):
            if not memo:
                o._groups_memo = None
            B = vs[0]._backend
            o._apply_raw_gradients([B.asarray(grads[i] * (step + 1)) for i in which], [vs[i] for i in which])
        return [v.numpy() for v in vs]

    got, want = run(opt(), True), run(opt(), False)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert not np.array_equal(got[1], values[1])


def test_dropout_launch_plan_is_per_size_and_rate(monkeypatch):
    """dropout's fixed scalars are planned per (size, rate): a new rate or size gets its own."""
    from deepgpu import kernels as K

    launches = []
    monkeypatch.setattr(K, "_emulator", lambda name, grid, block, args: launches.append((grid, args)))
    x = np.ones((3, 8), np.float32)
    for rate, a in ((0.5, x), (0.25, x), (0.5, x[:1]), (0.5, x)):
        K.dropout(a, rate, 7, 0)
    assert [(int(args[3]), float(args[4]), float(args[5])) for _, args in launches] == [
        (24, 0.5, 2.0), (24, 0.25, np.float32(1 / 0.75)), (8, 0.5, 2.0), (24, 0.5, 2.0)]
    assert launches[0][0] == K._grid1d(K.dropout_offsets(24)) and launches[2][0] == K._grid1d(K.dropout_offsets(8))


def test_conv_geometry_cache_takes_lists_and_tuples_alike():
    """conv_geometry's cache is keyed by the arguments as given where hashable, else as tuples: lists,
    tuples of NumPy ints and ints give the same answer, and a bad signature is never cached."""
    from deepgpu import backends

    B = backends.get("cpu")
    want = B.conv_geometry((2, 9, 9, 3), (3, 3, 3, 4), (2, 2), "same", (1, 1))
    assert want == (5, 5, (1, 1), (1, 1))
    assert B.conv_geometry([2, 9, 9, 3], [3, 3, 3, 4], [2, 2], "same", [1, 1]) == want
    assert B.conv_geometry(tuple(np.int64([2, 9, 9, 3])), (3, 3, 3, 4), 2, "same", 1) == want
    for _ in range(2):
        with pytest.raises(ValueError, match="input has 3 channels but the kernel expects 5"):
            B.conv_geometry((2, 9, 9, 3), (3, 3, 5, 4), (2, 2), "same", (1, 1))
        with pytest.raises(ValueError, match="strides must be an int or a pair"):
            B.conv_geometry([2, 9, 9, 3], [3, 3, 3, 4], [2, 2, 2], "same", [1, 1])


def test_dropout_launch_plan_keeps_each_rates_own_scale(monkeypatch):
    """The plan's key holds the rate's type: np.float32(r) scales by 1 / (1 - r) rounded in float32, the
    equal Python float in float64, as without the plan; a 0-d array rate (unhashable) is launched unplanned."""
    from deepgpu import kernels as K

    launches = []
    monkeypatch.setattr(K, "_emulator", lambda name, grid, block, args: launches.append(args))
    r32 = np.float32(0.43526623)  # one whose two roundings of 1 / (1 - r) differ
    assert np.float32(1.0 / (1.0 - r32)) != np.float32(1.0 / (1.0 - float(r32)))
    x = np.ones(8, np.float32)
    for rate in (r32, float(r32), np.array(r32), np.array(r32)):
        K.dropout(x, rate, 7, 0)
    assert [args[5] for args in launches] == [np.float32(1.0 / (1.0 - rate))
                                              for rate in (r32, float(r32), np.array(r32), np.array(r32))]
