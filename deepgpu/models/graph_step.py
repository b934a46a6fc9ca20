"""Training steps recorded once as a CUDA graph and replayed per batch.

On the CUDA backend this is the default (``compile(cuda_graph="auto")``);
``cuda_graph=False`` turns it off and ``True`` insists (a step that cannot be
recorded then raises GraphCaptureError instead of running eagerly). For each batch
signature (the shapes and dtypes of x, y and sample weights) the trainer
runs the first batch eagerly (it builds the optimizer's slots and the
metrics' state, and compiles kernels), records the second one with
``Backend.capture_graph`` and replays that recording from then on: one
launch for forward, loss, backward, clipping, the optimizer update and the
metric sums, instead of hundreds of Python-driven launches.

What a replay cannot redo is done around it, on the host:

* The batch is copied into the input buffers the graph reads.
* The optimizer's per-step scalars (learning rate, Adam's bias-corrected
  step size) are written into a small device array that the recorded
  updates read (``Optimizer.apply_gradients_in_graph``), so schedules and
  ``learning_rate`` changes keep working; ``iterations`` counts replays.
  An optimizer with no in-graph form (AMSGrad, Adagrad, ..., or variables
  with constraints) runs its usual ``apply_gradients`` after each replay on
  the gradients the graph wrote.
* The metrics' Python-side counts are advanced by the change the recorded
  step made to them (``Metric._replay_host``).

Dropout draws new masks at every replay (a device replay count enters its
random stream). Under "auto", a signature whose capture fails (an op that
reads values on the host) stays eager, and the model warns once, naming why
(later failures of other signatures are remembered, not warned again); a
backend that cannot capture (the "cupy" kernel path, the CPU) runs eagerly
without a word.
"""
from __future__ import annotations

import warnings

from ..backends.base import GraphCaptureError
from ..tensor import Tensor

# Each recording keeps a private copy of the step's activations on the
# device, so only a few signatures (the full batch, the last partial one)
# are recorded per model; others run eagerly.
MAX_GRAPHS = 2

# compile(cuda_graph=...): record where possible and fall back with one warning, never, or always.
MODES = ("auto", False, True)


def graph_mode(value):
    """``compile``'s ``cuda_graph`` as one of MODES (1 / 0 as True / False); ValueError otherwise."""
    for m in MODES:
        # "auto" read back from a saved file is equal to the literal, not the same object
        if value is m or (isinstance(m, str) and value == m) \
                or (isinstance(m, bool) and not isinstance(value, str) and value == m):
            return m
    raise ValueError(f"compile(): cuda_graph must be one of {', '.join(map(repr, MODES))}, got {value!r}")


def _signature(arrays):
    return tuple(None if t is None else (tuple(t.shape), str(t.dtype)) for t in arrays)


class _Recorder:
    """What the training recorder and graph_eval's inference recorder share: the mode, the
    recordings by key, and how a step that cannot be recorded is refused."""

    def __init__(self, model, mode):
        self.model = model
        self.insist = mode is True  # True: a step that cannot be recorded raises; "auto": warn once, eager
        self.steps = {}      # key -> recorded step
        self.warm = set()    # keys whose eager first batch has run
        self.failed = {}     # key -> reason
        self.warned = False

    def _refuse(self, why, warning, error=None, stacklevel=5):
        """Under cuda_graph=True raise ``error`` (or a GraphCaptureError naming ``why``); else
        warn once per recorder with ``warning``. Returns None: the caller runs eagerly."""
        if self.insist:
            if error is not None:
                raise error
            raise GraphCaptureError(f"model {self.model.name!r} was compiled with cuda_graph=True, but {why}")
        if not self.warned:
            self.warned = True
            warnings.warn(f"model {self.model.name!r}: {warning}", RuntimeWarning, stacklevel=stacklevel)
        return None

    @property
    def graph_bytes(self) -> int:
        """Device bytes held by the recorded steps' private pools."""
        return sum(s.graph.pool_bytes for s in self.steps.values())


_EAGER = "the training step runs without a CUDA graph (eagerly): "


class GraphTrainer(_Recorder):
    """The graph-mode half of ``Trainer._train_batch``; one per compiled model."""

    def __init__(self, model, mode="auto"):
        if mode not in MODES:
            raise ValueError(f"cuda_graph must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
        super().__init__(model, mode)

    def train_batch(self, xb, yb, swb) -> bool:
        """Run one training step through a graph; False when the caller must run it eagerly."""
        tensors = [t for t in list(xb) + list(yb) if hasattr(t, "_backend")]
        if not tensors:
            return False
        B = tensors[0]._backend
        if not getattr(B, "supports_graphs", False):
            if self.insist and B.name == "cuda":
                raise GraphCaptureError(f"model {self.model.name!r} was compiled with cuda_graph=True, but "
                                        f"the backend cannot record ({B.kernels!r} kernel path; 'custom' records)")
            return False
        dist = getattr(self.model, "_distribute", None)
        why = None if dist is None else dist.why_not_recorded()
        if why is not None:  # DataParallel records on NCCL only (MPI copies the gradients to the host)
            return bool(self._refuse(why, _EAGER + why))
        if len(tensors) < len(xb) + len(yb):
            # Host inputs (strings for TextVectorization) are read on the host at every step.
            why = "an input stays on the host (strings for TextVectorization), so the step reads it each time"
            return bool(self._refuse(why, _EAGER + why))
        vars_ = self.model._vars_to_train()
        # fit records a step that also counts finite losses; train_on_batch one that does not.
        key = (_signature(list(xb) + list(yb) + [swb]), tuple(id(v) for v in vars_),
               bool(getattr(self.model, "_count_finite", False)))
        step = self.steps.get(key)
        if step is None:
            if key in self.failed or len(self.steps) >= MAX_GRAPHS:
                return False
            if key not in self.warm:
                self.warm.add(key)
                return False
            try:
                step = _GraphStep(self.model, B, vars_, xb, yb, swb)
            except GraphCaptureError as e:
                self.failed[key] = str(e)
                return bool(self._refuse(str(e), _EAGER + str(e), error=e))
            self.steps[key] = step
        step.run(xb, yb, swb)
        return True


class _GraphStep:
    """One recorded training step and the buffers it reads and writes."""

    def __init__(self, model, B, vars_, xb, yb, swb):
        self.model, self.B, self.vars = model, B, vars_
        opt = model.optimizer
        opt.build(vars_)
        # Inputs live in buffers of their own that each batch is copied into.
        self.xs = [Tensor(B.copy(t.data), B) for t in xb]
        self.ys = [Tensor(B.copy(t.data), B) for t in yb]
        self.sw = None if swb is None else Tensor(B.copy(swb.data), B)
        self.in_graph_update = opt.can_update_in_graph(vars_)
        self.hp = B.zeros((4,), "float32") if self.in_graph_update else None
        metrics = model._all_metrics()
        before = [m._host_state() for m in metrics]

        def body():
            # under DataParallel (NCCL) the bucket reductions and SyncBN's are recorded with the step
            grads, finish = model._reduced_gradients(self.xs, self.ys, self.sw, vars_)
            if self.in_graph_update:
                opt.apply_gradients_in_graph(grads, vars_, self.hp)
            finish()
            return None if self.in_graph_update else grads

        try:
            self.graph, self.grads = B.capture_graph(body)
        finally:
            # The recording ran the step's Python once but none of its device
            # work: the metrics' host counts go back to where they were.
            after = [m._host_state() for m in metrics]
            for m, b in zip(metrics, before):
                m._set_host_state(b)
        self.metric_changes = list(zip(metrics, before, after))
        self.inputs = self.xs + self.ys + ([self.sw] if self.sw is not None else [])

    def run(self, xb, yb, swb):
        B, opt = self.B, self.model.optimizer
        for dst, src in zip(self.inputs, list(xb) + list(yb) + ([swb] if swb is not None else [])):
            dst.data[...] = src.data
        if self.in_graph_update:
            B.set_scalars(self.hp, opt.graph_scalars_for_next_step())
        self.graph.replay()
        if self.in_graph_update:
            opt.iterations += 1
        else:
            opt._apply_raw_gradients(self.grads, self.vars)
        for m, before, after in self.metric_changes:
            m._replay_host(before, after)
