"""Evaluation and prediction steps recorded once as CUDA graphs and replayed per batch.

The inference half of graph_step.py (which records the training step), under the
same ``compile(cuda_graph=...)`` modes; a model never compiled predicts under
"auto". For each batch signature (shapes and dtypes of x, and for ``evaluate``
of y and the sample weights) the first batch runs eagerly, the second is
recorded with ``Backend.capture_graph`` and replayed from then on, so a ragged
last batch gets a recording of its own as in training (at most MAX_GRAPHS per
kind; other signatures run eagerly).

* evaluate's recording holds the forward pass, the compiled loss and the
  metric updates: the metric state accumulates on the device, and the metrics'
  Python-side counts are advanced by the change the recorded step made to them
  (``Metric._replay_host``), as in training.
* predict's recording holds the forward pass; after each replay its outputs are
  copied out of the recording's buffers (one device copy per output), which the
  next replay writes again.

A recording reads the device buffers of the weights and of the metric states it
saw: one that was replaced rather than written in place (weights moved, a metric
rebuilt) drops the recordings, and the next batches record again. Under "auto" a
signature whose recording fails runs eagerly, with one warning per model naming
why (the training step warns on its own); under True it raises
GraphCaptureError. Backends that cannot record run eagerly without a word.
"""
from __future__ import annotations

import threading

from ..backends.base import GraphCaptureError
from ..tensor import Tensor
from .graph_step import _Recorder, _signature

# Each recording keeps a private copy of the step's activations on the device:
# the full batch and the last partial one, per kind.
MAX_GRAPHS = 2


def _recorder(model):
    """The model's GraphInference for its current compile (None under cuda_graph=False)."""
    cfg = model.__dict__.get("_compile_config")
    mode = "auto" if cfg is None else cfg.get("cuda_graph", "auto")
    if mode is False:
        return None
    rec = model.__dict__.get("_graph_inference")
    if rec is None or rec.config is not cfg:  # a new compile: new loss and metrics to record
        rec = model.__dict__["_graph_inference"] = GraphInference(model, mode, cfg)
    return rec


def _backend_of(tensors):
    for t in tensors:
        if hasattr(t, "_backend"):
            return t._backend
    return None


def test_batch(model, xb, yb, swb) -> bool:
    """Run ``Trainer._test_batch`` as a recorded graph; False when the caller must run it eagerly."""
    B = _backend_of(list(xb) + list(yb))  # x may be strings on the host (TextVectorization)
    if B is None or B.capturing or not getattr(B, "supports_graphs", False) and B.name != "cuda":
        return False
    rec = _recorder(model)
    return rec is not None and rec.run("evaluate", B, list(xb), list(yb), swb) is not None


def predict_batch(model, xb):
    """The outputs of ``Trainer._predict_batch`` (a Tensor, or a list for several outputs) from a
    recorded graph; None when the caller must run it eagerly."""
    B = _backend_of(xb)
    if B is None or B.capturing or not getattr(B, "supports_graphs", False) and B.name != "cuda":
        return None
    rec = _recorder(model)
    outs = None if rec is None else rec.run("predict", B, list(xb), [], None)
    if outs is None:
        return None
    return outs[0] if len(outs) == 1 else outs


class GraphInference(_Recorder):
    """Recorded evaluate / predict steps of one model, for one compile of it."""

    def __init__(self, model, mode, config):
        super().__init__(model, mode)
        self.config = config
        self.lock = threading.Lock()  # predict may be called from several threads

    def run(self, kind, B, xs, ys, sw):
        """One batch through a recording: True (evaluate) or the output Tensors (predict); None when
        the caller must run the batch eagerly."""
        model = self.model
        if not getattr(B, "supports_graphs", False):
            if self.insist:
                raise GraphCaptureError(f"model {model.name!r} was compiled with cuda_graph=True, but the "
                                        f"backend cannot record ({B.kernels!r} kernel path; 'custom' records)")
            return None
        if getattr(model, "_distribute", None) is not None:
            return None
        if not all(hasattr(t, "_backend") for t in xs + ys):
            return self._fail(None, f"{kind}'s step runs eagerly: an input stays on the host (strings for "
                                    f"TextVectorization), so the step reads it each time")
        from .. import losses
        trusted = bool(getattr(losses._labels, "checked", False))  # fit / evaluate checked the labels once
        key = (kind, _signature(xs + ys + [sw]), trusted)
        with self.lock:
            step = self.steps.get(key)
            if step is not None and not step.current():
                del self.steps[key]  # a buffer it reads was replaced: record again
                self.warm.add(key)
                step = None
            if step is None:
                if key in self.failed or len(self._of(kind)) >= MAX_GRAPHS:
                    return None
                if key not in self.warm:
                    self.warm.add(key)
                    return None
                try:
                    step = _InferenceStep(model, B, kind, xs, ys, sw)
                except GraphCaptureError as e:
                    self.failed[key] = str(e)
                    return self._fail(e, f"{kind}'s step runs without a CUDA graph (eagerly): {e}")
                self.steps[key] = step
            return step.run(xs, ys, sw)

    def _of(self, kind):
        return [k for k in self.steps if k[0] == kind]

    def _fail(self, error, why):
        return self._refuse(why, why, error=error, stacklevel=6)


class _InferenceStep:
    """One recorded evaluate or predict step and the buffers it reads and writes."""

    def __init__(self, model, B, kind, xs, ys, sw):
        from ..autograd import no_grad
        from .training import Trainer

        self.model, self.B, self.kind = model, B, kind
        self.xs = [Tensor(B.copy(t.data), B) for t in xs]
        self.ys = [Tensor(B.copy(t.data), B) for t in ys]
        self.sw = None if sw is None else Tensor(B.copy(sw.data), B)
        self.inputs = self.xs + self.ys + ([self.sw] if self.sw is not None else [])
        metrics = model._all_metrics() if kind == "evaluate" else []
        before = [m._host_state() for m in metrics]

        def body():
            with no_grad():
                if kind == "evaluate":
                    Trainer._test_batch(model, self.xs, self.ys, self.sw)
                    return None
                return [o.data for o in model._outs_list(Trainer._predict_batch(model, self.xs))]

        try:
            self.graph, self.outs = B.capture_graph(body)
        finally:
            # The recording ran the step's Python once but none of its device work.
            after = [m._host_state() for m in metrics]
            for m, b in zip(metrics, before):
                m._set_host_state(b)
        self.metric_changes = list(zip(metrics, before, after))
        # The device buffers the recording reads (besides its own): kept, and checked before each replay.
        self.read = [(v, v.data) for v in model.weights]
        for m in metrics:
            self.read += [(v, v.data) for v in (m._vars or {}).values()]

    def current(self) -> bool:
        return all(v.data is a for v, a in self.read)

    def run(self, xs, ys, sw):
        for dst, src in zip(self.inputs, xs + ys + ([sw] if sw is not None else [])):
            dst.data[...] = src.data
        self.graph.replay()
        for m, before, after in self.metric_changes:
            m._replay_host(before, after)
        if self.kind == "evaluate":
            return True
        return [Tensor(self.B.copy(a), self.B) for a in self.outs]
