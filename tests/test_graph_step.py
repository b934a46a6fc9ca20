"""Training steps recorded as CUDA graphs (compile(cuda_graph=True)).

On the CPU: the pieces a recording relies on (no host reads inside a step,
optimizer updates reading their scalars from a device array, the metrics'
host-count replay, the fallback when a backend cannot record). On a GPU
(marked ``cuda``): recorded steps against eager ones from the same weights.
"""
from __future__ import annotations

import numpy as np
import pytest

import deepgpu as dg
from deepgpu import backends, layers, losses, optimizers, zoo
from deepgpu.backends.base import GraphCaptureError
from deepgpu.tensor import Tensor, Variable

RNG = np.random.default_rng(7)


def _data(n=96, shape=(12, 12, 1), classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n,) + shape).astype(np.float32)
    y = rng.integers(0, classes, n).astype(np.int32)
    return x, y


def _small_convnet(dropout=0.0, bn=False, classes=4, seed=3):
    dg.set_seed(seed)
    seq = [layers.Conv2D(8, 3, activation="relu", input_shape=(12, 12, 1)),
           layers.MaxPooling2D(2)]
    if bn:
        seq.append(layers.BatchNormalization())
    seq += [layers.Conv2D(8, 3, padding="same", activation="relu"), layers.Flatten()]
    if dropout:
        seq.append(layers.Dropout(dropout))
    seq += [layers.Dense(16, activation="relu"), layers.Dense(classes, activation="softmax")]
    return dg.Sequential(seq)


# ------------------------------------------------------------------ CPU
def test_guard_refuses_host_reads_and_syncs():
    B = backends.get("cpu")
    a = B.asarray(np.ones(3, np.float32))
    B.capturing = True
    try:
        with pytest.raises(GraphCaptureError, match="read of device values"):
            Tensor(a, B).data_sync()
        with pytest.raises(GraphCaptureError, match="synchronisation"):
            B.sync()
    finally:
        B.capturing = False
    assert Tensor(a, B).data_sync().tolist() == [1, 1, 1]


@pytest.mark.parametrize("model_fn", [lambda: zoo.convnet(input_shape=(12, 12, 1), num_classes=4),
                                      lambda: _small_convnet(dropout=0.3, bn=True)],
                         ids=["seed-convnet", "bn-dropout"])
def test_a_training_step_reads_nothing_back(model_fn):
    """What a recording needs: forward, loss, backward, update and metrics without a host read."""
    model = model_fn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = _data(16)
    B = backends.current()
    xb, yb = [Tensor(B.asarray(x), B)], [Tensor(B.asarray(y), B)]
    model._count_finite = True  # as in fit: the step also counts finite losses
    model._train_batch(xb, yb, None)  # first step builds slots and metric state
    B.capturing = True
    try:
        with losses.labels_checked():  # as in fit, which checks the labels once beforehand
            model._train_batch(xb, yb, None)
    finally:
        B.capturing = False
    assert model.optimizer.iterations == 2 and model._finite_steps.item() == 2


OPTIMIZERS = [
    lambda: optimizers.Adam(1e-2),
    lambda: optimizers.AdamW(1e-2, weight_decay=0.05),
    lambda: optimizers.SGD(0.1),
    lambda: optimizers.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    lambda: optimizers.RMSprop(1e-2, momentum=0.5, centered=True),
    lambda: optimizers.Adam(optimizers.schedules.ExponentialDecay(1e-2, 2, 0.5), clipnorm=0.5),
]


@pytest.mark.parametrize("make", OPTIMIZERS, ids=["adam", "adamw", "sgd", "sgd-nesterov-wd", "rmsprop",
                                                  "adam-schedule-clip"])
def test_in_graph_updates_equal_apply_gradients(backend, make):
    """Updates reading their scalars from a device array give apply_gradients's results."""
    B = backends.current()
    shapes = [(3, 4), (4,), (2, 2, 3)]
    init = [RNG.normal(size=s).astype(np.float32) for s in shapes]
    grads = [[RNG.normal(size=s).astype(np.float32) for s in shapes] for _ in range(3)]
    eager_vars = [Variable(dg.tensor(a), name=f"w{i}") for i, a in enumerate(init)]
    graph_vars = [Variable(dg.tensor(a), name=f"w{i}") for i, a in enumerate(init)]
    eager, graph = make(), make()
    graph.exclude_from_weight_decay(var_list=[graph_vars[1]])
    eager.exclude_from_weight_decay(var_list=[eager_vars[1]])
    hp = B.zeros((4,), "float32")
    assert graph.can_update_in_graph(graph_vars)
    for gs in grads:
        eager.apply_gradients([(dg.tensor(g), v) for g, v in zip(gs, eager_vars)])
        B.set_scalars(hp, graph.graph_scalars_for_next_step())
        graph.apply_gradients_in_graph([B.asarray(g) for g in gs], graph_vars, hp)
        graph.iterations += 1
    for e, g in zip(eager_vars, graph_vars):
        np.testing.assert_allclose(g.data_sync(), e.data_sync(), rtol=1e-5, atol=1e-6)
    for e, g in zip(eager.variables, graph.variables):
        np.testing.assert_allclose(g.data_sync(), e.data_sync(), rtol=1e-5, atol=1e-6)


def test_optimizers_without_an_in_graph_form_say_so():
    v = [Variable(dg.tensor(np.ones(3, np.float32)))]
    assert not optimizers.Adam(amsgrad=True).can_update_in_graph(v)
    assert not optimizers.Adagrad().can_update_in_graph(v)
    assert not optimizers.Nadam().can_update_in_graph(v)
    v[0].constraint = lambda w: w
    assert not optimizers.Adam().can_update_in_graph(v)


def test_mean_metric_replays_its_host_count():
    m = dg.metrics.Mean()
    before = m._host_state()
    m.update_state(dg.tensor([1.0, 2.0, 3.0]))
    after = m._host_state()
    m._replay_host(before, after)  # as a replay of the same step would
    m._state()["total"].assign_add(dg.tensor(6.0))
    assert m.result().item() == pytest.approx(2.0)
    assert m._host_count == 6.0


def test_cuda_graph_is_a_no_op_on_the_cpu():
    x, y = _data(64)
    results = []
    for flag in (False, True):
        model = _small_convnet()
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", cuda_graph=flag)
        h = model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
        results.append(h.history["loss"])
    np.testing.assert_allclose(results[1], results[0], rtol=1e-6)


def test_cuda_graph_survives_save_and_load(tmp_path):
    model = _small_convnet()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", cuda_graph=True)
    model.save(tmp_path / "m.dgm")
    loaded = dg.models.load_model(tmp_path / "m.dgm")
    assert loaded._compile_config["cuda_graph"] is True
    assert loaded._graph_trainer is not None


# ----------------------------------------------------------------- CUDA
def _cuda_or_skip():
    ok, why = dg.cuda_status()
    if not ok:
        pytest.skip(why)
    dg.set_backend("cuda")
    B = backends.current()
    B.kernels = "custom"
    return B


def _fit_pair(make_model, make_opt, compile_kw, x, y, epochs=3, batch_size=32, **fit_kw):
    """(eager history, graph history, eager model, graph model) from the same initial weights,
    each model with an optimizer of its own."""
    out = []
    for flag in (False, True):
        model = make_model()
        model.compile(optimizer=make_opt(), cuda_graph=flag, **compile_kw)
        h = model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=False, **fit_kw)
        out.append((h.history, model))
    return out[0][0], out[1][0], out[0][1], out[1][1]


@pytest.mark.cuda
@pytest.mark.parametrize("make_opt", [lambda: optimizers.Adam(3e-3), lambda: optimizers.SGD(0.05, momentum=0.9),
                                      lambda: optimizers.RMSprop(1e-3),
                                      lambda: optimizers.Adam(3e-3, amsgrad=True)],
                         ids=["adam", "sgd-momentum", "rmsprop", "amsgrad-outside-graph"])
def test_recorded_steps_match_eager_steps(make_opt):
    B = _cuda_or_skip()
    x, y = _data(100)  # 100 = 3 full batches of 32 and one of 4: two recordings
    he, hg, me, mg = _fit_pair(lambda: _small_convnet(bn=True), make_opt,
                               dict(loss="sparse_categorical_crossentropy", metrics=["accuracy"]), x, y,
                               validation_data=(x[:40], y[:40]))
    for k in he:
        np.testing.assert_allclose(hg[k], he[k], rtol=2e-4, atol=1e-5, err_msg=k)
    for a, b in zip(mg.get_weights(), me.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    gt = mg._graph_trainer
    assert len(gt.steps) == 2 and not gt.failed
    # Full batches: the first runs eagerly, the second is recorded, then every one replays
    # (2 in epoch 1, 3 in each later one); the partial batch runs eagerly in epoch 1 and
    # replays from epoch 2 on.
    assert sum(s.graph.replays for s in gt.steps.values()) == (2 + 3 + 3) + (1 + 1)
    assert mg.optimizer.iterations == me.optimizer.iterations == 12
    assert B.memory_info()["pool_used_bytes"] >= 0


@pytest.mark.cuda
def test_recorded_dropout_draws_new_masks_each_replay():
    _cuda_or_skip()
    x, y = _data(32)
    model = _small_convnet(dropout=0.5)
    model.compile(optimizer=optimizers.SGD(0.0), loss="sparse_categorical_crossentropy", cuda_graph=True)
    losses = [model.train_on_batch(x, y) for _ in range(6)]  # lr 0: only the masks change
    assert len(model._graph_trainer.steps) == 1
    assert len({round(v, 6) for v in losses[2:]}) == 4, losses
    model2 = _small_convnet(dropout=0.5)
    model2.compile(optimizer="adam", loss="sparse_categorical_crossentropy", cuda_graph=True)
    h = model2.fit(x, y, batch_size=8, epochs=15, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]


@pytest.mark.cuda
def test_learning_rate_changes_reach_the_recorded_update():
    _cuda_or_skip()
    x, y = _data(64)
    def make_opt():
        return optimizers.Adam(optimizers.schedules.PiecewiseConstantDecay([3], [1e-2, 1e-4]))
    he, hg, me, mg = _fit_pair(_small_convnet, make_opt, dict(loss="sparse_categorical_crossentropy"), x, y,
                               epochs=4)
    np.testing.assert_allclose(hg["loss"], he["loss"], rtol=2e-4)
    model = _small_convnet()
    model.compile(optimizer=optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", cuda_graph=True)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False)
    assert len(model._graph_trainer.steps) == 1
    model.optimizer.learning_rate = 0.0  # a float set between steps is read at the next replay
    before = [w.copy() for w in model.get_weights()]
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.cuda
def test_a_backend_that_cannot_record_warns_and_trains_eagerly():
    B = _cuda_or_skip()
    B.kernels = "cupy"
    try:
        x, y = _data(64)
        model = _small_convnet()
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")  # cuda_graph="auto"
        h = model.fit(x, y, batch_size=32, epochs=2, verbose=0)
        assert not model._graph_trainer.steps and np.isfinite(h.history["loss"]).all()
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", cuda_graph=True)
        with pytest.raises(GraphCaptureError, match="cannot record"):  # True insists
            model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    finally:
        B.kernels = "custom"


@pytest.mark.cuda
def test_a_step_that_reads_the_host_is_refused_with_a_clear_error():
    B = _cuda_or_skip()

    def loss(y_true, y_pred):
        scale = float(dg.mean(y_pred).item())  # a host read: cannot be recorded
        return dg.losses.mean_squared_error(y_true, y_pred) * scale

    x = RNG.normal(size=(64, 5)).astype(np.float32)
    y = RNG.normal(size=(64, 1)).astype(np.float32)
    model = dg.Sequential([layers.Dense(4, input_shape=(5,)), layers.Dense(1)])
    model.compile(optimizer="sgd", loss=loss)  # cuda_graph="auto": one warning, then eager
    with pytest.warns(RuntimeWarning, match="read of device values"):
        model.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert not model._graph_trainer.steps and model._graph_trainer.failed
    # the failed recording left nothing behind: eager training goes on
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    B.sync()
