"""evaluate and predict recorded as CUDA graphs (deepgpu/models/graph_eval.py), on the emulated path.

The recording stand-in is tests/test_graph_recording.py's ``recording`` fixture: the step runs
once under the capture guard, and each "replay" runs it again under the guard and writes the
recorded result buffers, as a real replay does. Checked here: recorded and eager give the same
values, replays are used (recordings vs replays counted), a ragged last batch gets its own
recording, weights changed in place are seen and replaced ones re-recorded, and a model that
cannot record falls back with one warning ("auto") or raises (True).
"""
from __future__ import annotations

import collections
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import deepgpu as dg
from deepgpu import layers, ops
from deepgpu.backends.base import GraphCaptureError
from deepgpu.backends.cupy_backend import CupyBackend
from deepgpu.testing.emulation import emulation_status

sys.path.insert(0, str(Path(__file__).resolve().parent))  # importlib mode: the sibling module by name
from test_graph_recording import (  # noqa: E402, F401
    _Replayed, _data, _host_reading_loss, _net, _string_model, recording)

pytestmark = pytest.mark.skipif(not emulation_status()[0], reason=emulation_status()[1])


def _pair(models, **compile_kw):
    """(recorded model, eager model) with the same weights, both compiled; the recorded one is models[-1]."""
    eager = _net()
    eager.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  cuda_graph=False)
    models.append(_net())
    models[-1].compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                       **compile_kw)
    return models[-1], eager


def _counts(model, kind):
    steps = [s for k, s in model._graph_inference.steps.items() if k[0] == kind]
    return len(steps), sum(s.graph.replays for s in steps)


def test_predict_records_replays_and_matches_eager(recording):
    B, models = recording
    x, _ = _data(40)
    model, eager = _pair(models)
    want = eager.predict(x, batch_size=16).data_sync()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        got = [model.predict(x, batch_size=16).data_sync() for _ in range(3)]
    for g in got:
        np.testing.assert_allclose(g, want, rtol=1e-6, atol=1e-7)
    # Batches 16, 16, 8. Call 1: the 16s run eagerly once, are recorded at the second (1 replay), the 8
    # runs eagerly; call 2: two replays of 16, the 8 recorded (1); call 3: three replays.
    assert _counts(model, "predict") == (2, 1 + 3 + 3)
    assert not model._graph_inference.failed


def test_evaluate_records_replays_and_matches_eager(recording):
    B, models = recording
    x, y = _data(40)
    model, eager = _pair(models)
    want = eager.evaluate(x, y, batch_size=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = [model.evaluate(x, y, batch_size=16) for _ in range(3)]
        # fit's validation goes through the same recordings
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False, validation_data=(x, y))
    for g in got:
        np.testing.assert_allclose(g, want, rtol=1e-6)
    n, replays = _counts(model, "evaluate")
    assert n == 2 and replays >= 1 + 3 + 3 + 3
    # The loss and accuracy sums accumulate on the device in the recording; weighted evaluation too.
    sw = np.linspace(0.5, 2.0, 40).astype(np.float32)
    want_w = eager.evaluate(x, y, batch_size=16, sample_weight=sw, return_dict=True)
    for _ in range(2):
        got_w = model.evaluate(x, y, batch_size=16, sample_weight=sw, return_dict=True)
    assert _counts(model, "evaluate")[0] == 2  # at most two per kind: the weighted ones ran eagerly
    model_w, eager_w = _pair(models)
    want_w = eager_w.evaluate(x, y, batch_size=16, sample_weight=sw, return_dict=True)
    for _ in range(3):
        got_w = model_w.evaluate(x, y, batch_size=16, sample_weight=sw, return_dict=True)
    assert _counts(model_w, "evaluate") == (2, 1 + 3 + 3)
    for k in want_w:
        np.testing.assert_allclose(got_w[k], want_w[k], rtol=1e-6)


def test_recordings_read_the_weights_live_and_rerecord_replaced_ones(recording):
    B, models = recording
    x, y = _data(32)
    model, eager = _pair(models)
    for _ in range(2):
        model.predict(x, batch_size=16)
    assert _counts(model, "predict") == (1, 3)  # two batches of 16: eager, recorded (1), then 2
    # Training writes the weights in place (here through its own recorded step): the recording sees them.
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    eager.set_weights(model.get_weights())
    np.testing.assert_allclose(model.predict(x, batch_size=16).data_sync(),
                               eager.predict(x, batch_size=16).data_sync(), rtol=1e-6, atol=1e-7)
    assert _counts(model, "predict") == (1, 5)
    # A weight whose buffer is replaced (not written in place): the recording is dropped and made again.
    w = model.layers[0].kernel
    w.data = w.data * 0.5
    eager.layers[0].kernel.data = eager.layers[0].kernel.data * 0.5
    np.testing.assert_allclose(model.predict(x, batch_size=16).data_sync(),
                               eager.predict(x, batch_size=16).data_sync(), rtol=1e-6, atol=1e-7)
    assert _counts(model, "predict") == (1, 2)  # a new recording at once (the signature is warm), 2 replays


class _HostReading(layers.Layer):
    """Reads a value on the host at every call: cannot be recorded."""

    def call(self, inputs):
        return inputs * (1.0 + 0.0 * float(ops.mean(inputs).item()))


def test_a_model_that_cannot_record_falls_back_with_one_warning(recording):
    B, models = recording
    x, y = _data(40)
    models.append(dg.Sequential([layers.Flatten(input_shape=(8, 8, 1)), _HostReading(),
                                 layers.Dense(4, activation="softmax")]))
    model = models[-1]
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    want = model(dg.tensor(x)).data_sync()
    with pytest.warns(RuntimeWarning, match="predict's step runs without a CUDA graph.*read of device values") as got:
        outs = [model.predict(x, batch_size=16).data_sync() for _ in range(2)]
        model.evaluate(x, y, batch_size=16)
    assert len([w for w in got if "CUDA graph" in str(w.message)]) == 1  # two kinds, two shapes: one warning
    rec = model._graph_inference
    assert not rec.steps and len(rec.failed) == 3  # predict 16 and 8, evaluate 16 (its 8 is never tried)
    for o in outs:
        np.testing.assert_allclose(o, want, rtol=1e-6, atol=1e-7)
    # A loss that reads on the host: evaluate falls back, predict (no loss) records.
    x2, y2 = _data(32)
    models.append(_net())
    models[-1].compile(optimizer="adam", loss=_host_reading_loss)
    with pytest.warns(RuntimeWarning, match="evaluate's step runs without a CUDA graph"):
        for _ in range(2):
            models[-1].evaluate(x2, y2, batch_size=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2):
            models[-1].predict(x2, batch_size=16)
    assert _counts(models[-1], "predict") == (1, 3)


def test_true_insists_and_false_never_records(recording):
    B, models = recording
    x, y = _data(32)
    models.append(_net())
    models[-1].compile(optimizer="adam", loss=_host_reading_loss, cuda_graph=True)
    with pytest.raises(GraphCaptureError, match="read of device values"):
        models[-1].evaluate(x, y, batch_size=16)
    models.append(_net())
    models[-1].compile(optimizer="adam", loss="sparse_categorical_crossentropy", cuda_graph=False)
    for _ in range(3):
        models[-1].predict(x, batch_size=16)
        models[-1].evaluate(x, y, batch_size=16)
    assert "_graph_inference" not in vars(models[-1])
    # A model never compiled predicts under "auto".
    models.append(_net())
    for _ in range(2):
        models[-1].predict(x, batch_size=16)
    assert _counts(models[-1], "predict") == (1, 3)


def test_a_replayed_batch_calls_the_backend_for_its_output_copy_only(recording, monkeypatch):
    """What a recorded predict batch still does on the host, counted: outside the replay, one backend
    call per batch (the output's copy out of the recording), and the final concatenation."""
    B, models = recording
    x, _ = _data(48)
    model, _ = _pair(models)
    for _ in range(2):
        model.predict(x, batch_size=16)  # all three batches of 16 are replays from the second call on
    calls, inside = collections.Counter(), [0]
    replay = _Replayed.replay

    def counted_replay(self):
        inside[0] += 1
        try:
            replay(self)
        finally:
            inside[0] -= 1

    def wrap(name, fn):
        def inner(*a, **k):
            if not inside[0]:
                calls[name] += 1
            return fn(*a, **k)
        return inner

    monkeypatch.setattr(_Replayed, "replay", counted_replay)
    names = [n for n in dir(CupyBackend) if not n.startswith("_") and callable(getattr(CupyBackend, n))
             and n not in ("capture_graph",)]
    for n in names:
        monkeypatch.setattr(B, n, wrap(n, getattr(B, n)))
    model.predict(x, batch_size=16)
    assert _counts(model, "predict") == (1, 2 + 3 + 3)
    # Host-side: x uploaded once, one output copy per batch, the concatenation at the end; the
    # batches' copies into the recording's input buffers are array writes (one device copy each).
    assert dict(calls) == {"asarray": 1, "copy": 3, "concat": 1}, dict(calls)


@pytest.mark.cuda
def test_recorded_predict_evaluate_and_augmentation_on_the_gpu():
    """Real CUDA graphs: predict / evaluate recorded match eager, and an augmentation stack's training
    step records and draws anew at each replay (its device replay count enters random_keyed)."""
    from deepgpu import backends
    ok, why = dg.cuda_status()
    if not ok:
        pytest.skip(why)
    previous = backends.current()
    dg.set_backend("cuda")
    backends.current().kernels = "custom"
    try:
        x, y = _data(40)
        res = {}
        for flag in (False, "auto"):
            model = _net()
            model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                          cuda_graph=flag)
            with warnings.catch_warnings():
                warnings.simplefilter("error", RuntimeWarning)
                res[flag] = ([model.predict(x, batch_size=16).data_sync() for _ in range(3)],
                             [model.evaluate(x, y, batch_size=16) for _ in range(3)])
        assert _counts(model, "predict") == (2, 7) and _counts(model, "evaluate") == (2, 7)
        for p in res["auto"][0]:
            np.testing.assert_allclose(p, res[False][0][0], rtol=1e-5, atol=1e-6)
        for e in res["auto"][1]:
            np.testing.assert_allclose(e, res[False][1][0], rtol=1e-5)
        dg.set_seed(1)
        aug = dg.Sequential([
            layers.RandomFlip(seed=1, input_shape=(8, 8, 1)), layers.RandomRotation(0.1, seed=2),
            layers.RandomZoom(0.2, seed=3), layers.RandomTranslation(0.1, 0.1, seed=4),
            layers.RandomCrop(6, 6, seed=5), layers.Conv2D(4, 3, activation="relu"), layers.Flatten(),
            layers.Dense(4, activation="softmax")])
        aug.compile(optimizer=dg.optimizers.SGD(1e-6), loss="sparse_categorical_crossentropy")
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            h = aug.fit(x[:32], y[:32], batch_size=16, epochs=4, verbose=0, shuffle=False)
        assert len(aug._graph_trainer.steps) == 1 and not aug._graph_trainer.failed
        assert len(set(np.round(h.history["loss"], 6))) == 4  # replays of the same batches draw anew
    finally:
        backends._state.backend = previous


def test_a_model_reading_strings_evaluates_eagerly_with_one_warning(recording):
    B, models = recording
    texts, y = _string_model(models)
    with pytest.warns(RuntimeWarning, match="evaluate's step runs eagerly: an input stays on the host") as got:
        losses = [models[-1].evaluate(texts, y, batch_size=2) for _ in range(2)]
    assert len([w for w in got if "CUDA graph" in str(w.message) or "eagerly" in str(w.message)]) == 1
    assert losses[0] == losses[1] and np.isfinite(losses[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # strings only: nothing on the device to record, nothing to say
        models[-1].predict(texts, batch_size=2)
