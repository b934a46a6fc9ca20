"""Recorded by default: compile(cuda_graph="auto") on the CUDA backend, and which layers record.

Without a GPU: the CUDA backend's custom-kernel path runs over NumPy with the
kernels emulated (deepgpu.testing.emulation). A CUDA graph cannot be made
there, so ``capture_graph`` is replaced by one that runs the step under the
capture guard (``B.capturing``: host reads, syncs and uploads raise
GraphCaptureError) and whose "replay" runs the step's Python again under the
guard, leaving the metrics' host counts as a real replay does. What this
checks is whether a step can be recorded, and what compile's modes do with a
step that cannot; the GPU tests of tests/test_graph_step.py check real replays.
"""
from __future__ import annotations

import types
import warnings

import numpy as np
import pytest

import deepgpu as dg
from deepgpu import autograd, backends, layers, ops
from deepgpu.backends.base import Backend, GraphCaptureError
from deepgpu.backends.cupy_backend import CupyBackend
from deepgpu.tensor import Tensor
from deepgpu.testing.emulation import emulated_cuda, emulation_status

pytestmark = pytest.mark.skipif(not emulation_status()[0], reason=emulation_status()[1])


class _HostRandomGuard:
    """Stands in for Backend._rng while recording: a host draw cannot be replayed."""

    def __getattr__(self, name):
        raise GraphCaptureError("a random draw on the host (Backend._rng) inside a captured step: a replay "
                                "would reuse the recorded values")


class _Guarded:
    """``B.capturing`` on, host reads and host random draws refused, and (as the GPU refuses them) uploads of
    Python data that is not a scalar; NumPy arrays are the device's arrays here, so an upload of
    a host NumPy array is not caught (the GPU tests catch it)."""

    def __init__(self, B):
        self.B = B

    def __enter__(self):
        B = self.B
        self.rng, Backend._rng = Backend._rng, _HostRandomGuard()
        real = B.asarray

        def asarray(data, dtype=None):
            if not isinstance(data, np.ndarray) and np.ndim(data) > 0:
                B._refuse_in_capture(f"an upload of host data ({type(data).__name__})")
            return real(data, dtype)

        B.asarray = asarray
        # The emulation reads arrays back through an instance attribute; the guard goes in front.
        self.to_numpy = B.__dict__.get("to_numpy")
        read = B.to_numpy

        def to_numpy(a):
            B._refuse_in_capture("a read of device values (data_sync, item, float)")
            return read(a)

        B.to_numpy = to_numpy
        if B._replay_count is None:  # made by capture_graph: the device count each replay advances
            B._replay_count = np.ones(1, np.uint64)
        B.capturing = True
        return B

    def __exit__(self, *exc):
        self.B.capturing = False
        self.B.__dict__.pop("asarray", None)
        if self.to_numpy is None:
            self.B.__dict__.pop("to_numpy", None)
        else:
            self.B.to_numpy = self.to_numpy
        Backend._rng = self.rng


def _write_into(recorded, new):
    """A replay writes the recorded step's result buffers again: ``new`` copied into ``recorded``."""
    if isinstance(recorded, (list, tuple)):
        for r, n in zip(recorded, new):
            _write_into(r, n)
    elif recorded is not None:
        recorded[...] = new


class _Replayed:
    def __init__(self, B, fn, model, result):
        self.B, self.fn, self.model, self.result, self.replays = B, fn, model, result, 0
        self.pool_bytes = 0

    def replay(self):
        metrics = _metrics(self.model)
        host = [m._host_state() for m in metrics]
        with _Guarded(self.B):
            _write_into(self.result, self.fn())
        for m, h in zip(metrics, host):  # a replay redoes device work only
            m._set_host_state(h)
        self.replays += 1


def _metrics(model):
    return model._all_metrics() if hasattr(model, "_loss_tracker") else []  # none before compile


def _device_state(model):
    """The arrays a step writes in place: weights, metric states, optimizer slots."""
    vs = list(model.weights) + [v for m in _metrics(model) for v in (m._vars or {}).values()]
    opt = getattr(model, "optimizer", None)
    vs += list(getattr(opt, "variables", None) or [])
    if getattr(model, "_finite_steps", None) is not None:
        vs.append(model._finite_steps)
    return [v.data for v in vs]


@pytest.fixture
def recording(monkeypatch):
    """The emulated custom-kernel backend, made to 'record' as described above; yields (B, models)."""
    models = []
    with emulated_cuda() as B:
        monkeypatch.setattr(CupyBackend, "supports_graphs", property(lambda self: self._custom))

        def capture_graph(fn):
            # A capture records device work without running it: the state it writes is put back after.
            state = _device_state(models[-1])
            saved = [a.copy() for a in state]
            try:
                with _Guarded(B):
                    result = fn()
            except GraphCaptureError:
                raise
            except Exception as e:  # as the real capture: any failure inside is a capture failure
                raise GraphCaptureError(f"the step could not be captured as a CUDA graph: "
                                        f"{type(e).__name__}: {e}") from e
            finally:
                for a, b in zip(state, saved):
                    a[...] = b
            return _Replayed(B, fn, models[-1], result), result

        B.capture_graph = capture_graph
        try:
            yield B, models
        finally:
            B.__dict__.pop("capture_graph", None)


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, 8, 8, 1)).astype(np.float32), rng.integers(0, 4, n).astype(np.int32)


def _net(seed=3):
    dg.set_seed(seed)
    return dg.Sequential([layers.Conv2D(4, 3, activation="relu", padding="same", input_shape=(8, 8, 1)),
                          layers.MaxPooling2D(2), layers.Flatten(), layers.Dropout(0.25),
                          layers.Dense(4, activation="softmax")])


def test_compile_modes():
    m = _net()
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert m._compile_config["cuda_graph"] == "auto" and m._graph_trainer is not None
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", cuda_graph=False)
    assert m._graph_trainer is None
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", cuda_graph=True)
    assert m._compile_config["cuda_graph"] is True and m._graph_trainer.insist
    with pytest.raises(ValueError, match=r"cuda_graph must be one of 'auto', False, True, got 'always'"):
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", cuda_graph="always")
    assert m._compile_config["cuda_graph"] is True  # the refused compile changed nothing


@pytest.mark.parametrize("mode", ["auto", True, False])
def test_the_mode_survives_save_and_load(tmp_path, mode):
    m = _net()
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", cuda_graph=mode)
    m.save(tmp_path / "m.dgm")
    loaded = dg.models.load_model(tmp_path / "m.dgm")
    assert loaded._compile_config["cuda_graph"] == mode
    assert (loaded._graph_trainer is None) == (mode is False)
    assert loaded._graph_trainer is None or loaded._graph_trainer.insist == (mode is True)


def test_auto_records_the_step_by_default(recording):
    B, models = recording
    x, y = _data()
    models.append(_net())
    models[-1].compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        h = models[-1].fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False)
    gt = models[-1]._graph_trainer
    assert len(gt.steps) == 2 and not gt.failed  # the full batch of 16 and the last one of 8
    # Batches of 16 run eagerly once, are recorded at the second and replay from then on (1 + 2 + 2);
    # the batch of 8 runs eagerly in epoch 1, is recorded in epoch 2 (0 + 1 + 1).
    assert sum(s.graph.replays for s in gt.steps.values()) == (1 + 2 + 2) + (0 + 1 + 1)
    assert np.isfinite(h.history["loss"]).all() and models[-1].optimizer.iterations == 9


def _sequence_net(kind):
    """Issue 16's and 18's networks, small: padding masks from Embedding(mask_zero), dropout inside."""
    dg.set_seed(4)
    inp = layers.Input((7,), dtype="int32")
    x = layers.Embedding(20, 8, mask_zero=True)(inp)
    if kind == "bilstm":
        x = layers.Bidirectional(layers.LSTM(4, dropout=0.2, recurrent_dropout=0.2))(x)
    else:
        a = layers.MultiHeadAttention(2, 4, dropout=0.1)(x, x)
        x = layers.GlobalAveragePooling1D()(layers.LayerNormalization()(layers.Add()([x, a])))
    return dg.Model(inp, layers.Dense(3, activation="softmax")(x))


@pytest.mark.parametrize("kind", ["bilstm", "transformer"])
def test_the_time_loop_and_the_attention_record_with_masks_and_dropout(recording, kind):
    B, models = recording
    rng = np.random.default_rng(6)
    x = rng.integers(1, 20, (16, 7)).astype(np.int32)
    x[::2, 4:] = 0  # every other sequence padded
    y = rng.integers(0, 3, 16).astype(np.int32)
    models.append(_sequence_net(kind))
    models[-1].compile(optimizer="adam", loss="sparse_categorical_crossentropy", cuda_graph=True)
    h = models[-1].fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    gt = models[-1]._graph_trainer
    # The batch of 8 runs eagerly once, is recorded at the second and replays from then on (1 + 2).
    assert len(gt.steps) == 1 and not gt.failed
    assert sum(s.graph.replays for s in gt.steps.values()) == 3
    assert np.isfinite(h.history["loss"]).all()


def _host_reading_loss(y_true, y_pred):
    scale = float(dg.mean(y_pred).item())  # read on the host: cannot be recorded
    return dg.losses.sparse_categorical_crossentropy(y_true, y_pred) * (1.0 + 0.0 * scale)


def test_auto_falls_back_to_eager_with_one_warning_naming_why(recording):
    B, models = recording
    x, y = _data()
    models.append(_net())
    models[-1].compile(optimizer="adam", loss=_host_reading_loss)
    with pytest.warns(RuntimeWarning, match="read of device values") as got:
        h = models[-1].fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False)
    assert len([w for w in got if "CUDA graph" in str(w.message)]) == 1  # two shapes failed, one warning
    gt = models[-1]._graph_trainer
    assert not gt.steps and len(gt.failed) == 2
    assert np.isfinite(h.history["loss"]).all() and models[-1].optimizer.iterations == 9


def test_true_insists(recording):
    B, models = recording
    x, y = _data()
    models.append(_net())
    models[-1].compile(optimizer="adam", loss=_host_reading_loss, cuda_graph=True)
    with pytest.raises(GraphCaptureError, match="read of device values"):
        models[-1].fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    B.kernels = "cupy"
    try:
        with pytest.raises(GraphCaptureError, match="cannot record"):
            models[-1].train_on_batch(x[:16], y[:16])
    finally:
        B.kernels = "custom"


# ---------------------------------------------------------------- every layer
# Layer classes whose training step cannot be recorded today, each with its reason. A layer
# that stops recording fails test_every_layer_records; one that starts recording must be
# taken off this list (the test says so).
_SIDE = ("draws the output's width / height per batch (Keras's semantics: the shape changes from batch to "
         "batch), and a recorded step has fixed shapes")
NOT_RECORDED = {
    "RandomHeight": _SIDE,
    "RandomWidth": _SIDE,
}
# Cases with inputs no device holds (strings): nothing to record.
HOST_INPUT = {"TextVectorization": "takes strings, which stay on the host (no device array holds text)"}


def _first_cases():
    import sys
    from pathlib import Path
    here = str(Path(__file__).resolve().parent / "layers")
    if here not in sys.path:
        sys.path.insert(0, here)
    from test_every_layer_has_cases import EXEMPT, family_cases, registered_layer_classes
    first = {}
    for cases in family_cases().values():
        for c in cases:
            first.setdefault(c.layer_cls, c)
    return [(cls, first.get(cls)) for cls in registered_layer_classes() if cls not in EXEMPT]


def _train_call(layer, xs):
    """One forward (training=True) and backward through the layer's float inputs and weights."""
    ins = xs if len(xs) > 1 else xs[0]
    out = layer(ins, training=True)
    outs = [o for o in (out if isinstance(out, (list, tuple)) else [out]) if o.dtype.startswith("float")]
    if not outs:
        return
    total = ops.sum(outs[0] * outs[0])
    for o in outs[1:]:
        total = total + ops.sum(o * o)
    srcs = [w for w in layer.trainable_weights] + [x for x in xs if x.requires_grad]
    autograd.backward(total, srcs)


def _record_status(cls, case):
    """None when the class's first case records; else why not (a string)."""
    from deepgpu.testing.layer_test import make_inputs
    arrays = case.input_data if case.input_data is not None else make_inputs(case.input_shape, case.input_dtype)
    arrays = arrays if isinstance(arrays, list) else [arrays]
    if any(np.asarray(a).dtype.kind not in "biuf" for a in arrays):
        return "host input"
    B = backends.current()
    dg.set_seed(0)
    layer = cls(**case.init_kwargs)
    xs = [Tensor(B.asarray(np.asarray(a)), B, requires_grad=np.asarray(a).dtype.kind == "f") for a in arrays]
    _train_call(layer, xs)  # builds weights and state eagerly, as the first (eager) batch does
    try:
        with _Guarded(B):
            _train_call(layer, xs)
    except GraphCaptureError as e:
        return str(e).split(":")[0]
    return None


def test_every_layer_records():
    """The training step of each registered layer class (its first harness case) runs under
    the capture guard; NOT_RECORDED names those that cannot, with the reason."""
    broken, fixed, host = {}, [], []
    with emulated_cuda():
        for cls, case in _first_cases():
            if case is None:
                continue  # tests/layers/test_every_layer_has_cases.py fails for it
            why = _record_status(cls, case)
            name = cls.__name__
            if why == "host input":
                host.append(name)
            elif why is not None and name not in NOT_RECORDED:
                broken[name] = why
            elif why is None and name in NOT_RECORDED:
                fixed.append(name)
    assert not broken, f"layers whose training step cannot be recorded as a CUDA graph: {broken}"
    assert not fixed, f"these layers record now: take them off NOT_RECORDED: {fixed}"
    assert sorted(host) == sorted(HOST_INPUT), host


@pytest.mark.cuda
def test_default_compile_records_on_the_gpu_and_matches_eager():
    ok, why = dg.cuda_status()
    if not ok:
        pytest.skip(why)
    previous = backends.current()
    dg.set_backend("cuda")
    backends.current().kernels = "custom"
    try:
        x, y = _data()
        hist = {}
        for flag in (False, "auto"):
            model = _net()
            model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                          cuda_graph=flag)
            with warnings.catch_warnings():
                warnings.simplefilter("error", RuntimeWarning)  # no fallback warning
                hist[flag] = model.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False).history
        assert len(model._graph_trainer.steps) == 2 and not model._graph_trainer.failed
        # Dropout draws differently when recorded; the loss is of the same size, the accuracy a fraction.
        assert np.isfinite(hist["auto"]["loss"]).all()
        np.testing.assert_allclose(hist["auto"]["loss"][0], hist[False]["loss"][0], rtol=0.2)
    finally:
        backends._state.backend = previous


def _string_model(models):
    """A compiled model reading strings through TextVectorization, appended to ``models``; its (texts, y)."""
    texts = np.array([["the cat sat"], ["a dog"], ["the mat"], ["cat and dog"]], dtype=object)
    tv = layers.TextVectorization(max_tokens=20, output_sequence_length=3)
    tv.adapt(texts.ravel().tolist())
    inputs = layers.Input(shape=(1,), dtype="string")
    models.append(dg.models.Model(inputs, layers.Dense(2)(layers.Flatten()(layers.Embedding(20, 4)(tv(inputs))))))
    models[-1].compile(optimizer="adam", loss="mse")
    y = np.zeros((4, 2), np.float32)
    return texts, y


def test_a_model_reading_strings_trains_eagerly_with_one_warning(recording):
    """TextVectorization's strings stay on the host: 'auto' warns once and runs eagerly, True refuses."""
    B, models = recording
    texts, y = _string_model(models)
    with pytest.warns(RuntimeWarning, match="stays on the host") as got:
        h = models[-1].fit(texts, y, batch_size=2, epochs=2, verbose=0)
    assert len([w for w in got if "CUDA graph" in str(w.message)]) == 1
    assert not models[-1]._graph_trainer.steps and np.isfinite(h.history["loss"]).all()
    models[-1].compile(optimizer="adam", loss="mse", cuda_graph=True)
    with pytest.raises(GraphCaptureError, match="stays on the host"):
        models[-1].fit(texts, y, batch_size=2, epochs=1, verbose=0)


def test_augmentation_stack_records_and_draws_anew(recording):
    """Flip, rotation, zoom, translation and crop draw on the device (random_keyed): the step records,
    with no warning, and its replays see new draws (the training loss differs between epochs of the
    same batches while the weights barely move)."""
    B, models = recording
    x, y = _data(32)
    dg.set_seed(1)
    models.append(dg.Sequential([
        layers.RandomFlip(seed=1, input_shape=(8, 8, 1)), layers.RandomRotation(0.1, seed=2),
        layers.RandomZoom(0.2, seed=3), layers.RandomTranslation(0.1, 0.1, seed=4), layers.RandomCrop(6, 6, seed=5),
        layers.Conv2D(4, 3, activation="relu"), layers.Flatten(), layers.Dense(4, activation="softmax")]))
    models[-1].compile(optimizer=dg.optimizers.SGD(1e-6), loss="sparse_categorical_crossentropy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = models[-1].fit(x, y, batch_size=16, epochs=4, verbose=0, shuffle=False)
    gt = models[-1]._graph_trainer
    assert len(gt.steps) == 1 and not gt.failed
    assert sum(s.graph.replays for s in gt.steps.values()) == 1 + 2 + 2 + 2
    assert len(set(np.round(h.history["loss"], 6))) == 4


def test_random_width_trains_eagerly_with_one_warning_naming_the_shape(recording):
    B, models = recording
    x, y = _data(32)
    models.append(dg.Sequential([layers.RandomWidth(0.3, seed=1, input_shape=(8, 8, 1)),
                                 layers.Conv2D(4, 3, activation="relu"), layers.GlobalAveragePooling2D(),
                                 layers.Dense(4, activation="softmax")]))
    models[-1].compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with pytest.warns(RuntimeWarning, match="draws its output's size per batch") as got:
        h = models[-1].fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False)
    assert len([w for w in got if "CUDA graph" in str(w.message)]) == 1
    assert not models[-1]._graph_trainer.steps and np.isfinite(h.history["loss"]).all()


class _TwinComm:
    """A world of two whose other rank holds the same values (every sum is twice this rank's), for
    DataParallel on the emulated path; ``capturable`` as NCCL's (>= 2.9.6), or not, as MPI's."""

    def __init__(self, capturable):
        self.name, self.capturable = ("nccl", True) if capturable else ("mpi", False)
        self.rank, self.size, self.local_rank, self.local_size = 0, 2, 0, 1
        self.reduced = 0

    def all_reduce(self, buf, op="sum"):
        self.reduced += 1
        buf *= 2
        if op == "mean":
            buf /= 2
        return buf

    def start_all_reduce(self, buf, op="sum"):
        self.all_reduce(buf, op)
        return types.SimpleNamespace(poke=lambda: None, wait=lambda: None)

    def broadcast(self, buf, root=0):
        return buf

    def allgather_obj(self, obj):
        return [obj, obj]

    def bcast_obj(self, obj, root=0):
        return obj

    def barrier(self):
        pass


def _sync_bn_net():
    dg.set_seed(5)
    return dg.Sequential([layers.Conv2D(4, 3, use_bias=False, input_shape=(8, 8, 1)),
                          layers.BatchNormalization(synchronized=True), layers.Activation("relu"), layers.Flatten(),
                          layers.Dense(4, activation="softmax")])


def _dp_fit(models, comm, cuda_graph, epochs=3):
    models.append(_sync_bn_net())
    models[-1].compile(optimizer="adam", loss="sparse_categorical_crossentropy", cuda_graph=cuda_graph,
                       distribute=dg.distributed.DataParallel(bucket_mb=1e-4, seed=1))
    models[-1]._distribute.comm = comm
    x, y = _data(32)
    models[-1].fit(x, y, batch_size=16, epochs=epochs, verbose=0, shuffle=False)
    return models[-1]


def test_data_parallel_records_its_reductions_on_nccl(recording):
    """Issue 21: under DataParallel with a communicator NCCL can capture, the step records with its bucket
    reductions and SyncBN's; it trains as the eager DataParallel step. A host-memory (MPI) communicator
    trains eagerly with one warning naming why, and cuda_graph=True raises."""
    B, models = recording
    comm = _TwinComm(capturable=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rec = _dp_fit(models, comm, "auto")
    gt = rec._graph_trainer
    # 6 steps of 8 samples a rank (weights from rank 0 before the first): 2 eager (warm-up), then recorded
    # and replayed
    assert len(gt.steps) == 1 and not gt.failed and sum(s.graph.replays for s in gt.steps.values()) == 5
    assert comm.reduced > 0
    eager = _dp_fit(models, _TwinComm(capturable=True), False)
    for a, b in zip(rec.weights, eager.weights):
        np.testing.assert_allclose(a.data_sync(), b.data_sync(), rtol=1e-6, atol=1e-6)
    with pytest.warns(RuntimeWarning, match="'mpi' communicator reduces through host memory"):
        host = _dp_fit(models, _TwinComm(capturable=False), "auto", epochs=1)
    assert not host._graph_trainer.steps
    with pytest.raises(GraphCaptureError, match="compiled with cuda_graph=True, but DataParallel's 'mpi'"):
        _dp_fit(models, _TwinComm(capturable=False), True, epochs=1)
