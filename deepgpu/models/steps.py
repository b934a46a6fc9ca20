"""Keras 3's step API and what subclassed models need, mixed into Model.

``fit`` / ``evaluate`` / ``predict`` call ``train_step(data)`` /
``test_step(data)`` / ``predict_step(data)`` when a model overrides them, as
Keras 3 does: ``data`` is ``(x, y)`` or ``(x, y, sample_weight)`` (``(x,)``
for predict), x and y a Tensor each (lists for several inputs or outputs).
A step returns a dict of results (Tensors or numbers; a dict value is
flattened into the logs). Inside one, the tools are Keras's:

    class MyModel(dg.Model):
        def train_step(self, data):
            x, y = data
            with dg.autograd.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self.compute_loss(y=y, y_pred=y_pred)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply(grads, self.trainable_variables)
            for m in self.metrics:
                m.update_state(loss) if m.name == "loss" else m.update_state(y, y_pred)
            return {m.name: m.result() for m in self.metrics}

Without overrides the loop runs its own (faster) step, which
``super().train_step(data)`` also runs.
"""
from __future__ import annotations

import inspect

from ..autograd import no_grad
from ..tensor import Tensor, tensor
from ..callbacks import _plain
from .training import Trainer



def auto_config(cls, args, kwargs):
    """The constructor's arguments of ``cls(*args, **kwargs)`` (defaults filled, ``name`` left to
    get_config) when they are all plain values, else None (Keras 3's automatic config)."""
    from .model import Model
    if cls is Model or "get_config" in vars(cls) or not args and not kwargs and cls.__init__ is Model.__init__:
        return None
    try:
        sig = inspect.signature(cls.__init__)
        bound = sig.bind(None, *args, **kwargs)
    except (TypeError, ValueError):
        return None
    if any(p.kind in (p.POSITIONAL_ONLY, p.VAR_POSITIONAL) for p in sig.parameters.values()):
        return None
    bound.apply_defaults()
    out = dict(bound.arguments)
    out.pop(next(iter(sig.parameters)))  # self
    for p in sig.parameters.values():
        if p.kind == p.VAR_KEYWORD:
            out.update(out.pop(p.name, {}))
    out.pop("name", None)
    return out if _plain(out) else None


def unpack_x_y_sample_weight(data):
    """``(x, y, sample_weight)`` from ``data``: ``x``, ``(x,)``, ``(x, y)`` or ``(x, y, sample_weight)``
    (Keras's ``keras.utils.unpack_x_y_sample_weight``); missing parts are None."""
    if isinstance(data, list):
        data = tuple(data)
    if not isinstance(data, tuple):
        return data, None, None
    if len(data) == 1:
        return data[0], None, None
    if len(data) == 2:
        return data[0], data[1], None
    if len(data) == 3:
        return data
    raise ValueError(f"data must be x, (x,), (x, y) or (x, y, sample_weight); got a tuple of {len(data)} items")


def _flat_logs(logs, where):
    if logs is None:
        return {}
    if not isinstance(logs, dict):
        raise TypeError(f"{where}() must return a dict of results ({{'loss': ..., ...}}), "
                        f"got {type(logs).__name__}")
    out = {}
    for k, v in logs.items():
        if isinstance(v, dict):
            out.update(_flat_logs(v, where))
        else:
            out[k] = v
    return out


def _as_float(v) -> float:
    if isinstance(v, Tensor):
        return float(v.item())
    return float(v)


class CompileMetrics:
    """The metrics given to ``compile`` as one object (Keras 3's ``compile_metrics``):
    ``update_state(y, y_pred, sample_weight=None)`` updates each on its output
    (the weighted ones with ``sample_weight``); ``result()`` is a dict by name."""

    name = "compile_metrics"

    def __init__(self, model):
        self._model = model

    def _lists(self, y, y_pred):
        m = self._model
        return m._targets_as_tensors(y), m._outs_list(y_pred)

    def update_state(self, y, y_pred, sample_weight=None):
        ys, outs = self._lists(y, y_pred)
        sw = None if sample_weight is None else (
            sample_weight if isinstance(sample_weight, Tensor) else tensor(sample_weight))
        with no_grad():
            outs = [Tensor(o.data, o._backend) for o in outs]
            for ms, yt, yp in zip(self._model._metrics, ys, outs):
                for metric in ms:
                    metric.update_state(yt, yp)
            for ms, yt, yp in zip(self._model._weighted_metrics, ys, outs):
                for metric in ms:
                    metric.update_state(yt, yp, sample_weight=sw)

    def _all(self):
        return [x for ms in list(self._model._metrics) + list(self._model._weighted_metrics) for x in ms]

    def result(self) -> dict:
        return {metric.name: metric.result() for metric in self._all()}

    def reset_state(self):
        for metric in self._all():
            metric.reset_state()

    reset_states = reset_state

    def __repr__(self):
        return f"<CompileMetrics {[m.name for m in self._all()]}>"


class _CompiledLoss:
    """tf.keras 2's ``model.compiled_loss(y, y_pred, sample_weight=None, regularization_losses=None)``."""

    def __init__(self, model):
        self._model = model

    def __call__(self, y, y_pred, sample_weight=None, regularization_losses=None):
        m = self._model
        total, _ = m._compute_compiled_loss(y, y_pred, sample_weight, with_regularization=False)
        for r in regularization_losses or []:
            total = r if total is None else total + r
        if total is None:
            raise ValueError(f"model {m.name!r} has no compiled loss: pass loss= to compile()")
        return total


class StepsMixin:
    """Keras 3's ``train_step`` / ``test_step`` / ``predict_step``, ``compute_loss``,
    ``compute_metrics``, ``metrics``; and the build / config / outputs of subclassed models."""

    # ------------------------------------------------------- subclassed models
    def _subclassed_output_names(self) -> list:
        keys = self.__dict__.get("_out_keys")
        if keys is None:
            keys = self.__dict__.get("_assumed_out_keys") or ["output_1"]
        return list(keys)

    def _note_outputs(self, out):
        """Record the output structure of a subclassed model's call (its names, shapes)."""
        if isinstance(out, dict):
            keys, vals = list(out), list(out.values())
        elif isinstance(out, (list, tuple)):
            keys, vals = [f"output_{i + 1}" for i in range(len(out))], list(out)
        else:
            keys, vals = ["output_1"], [out]
        if not all(hasattr(v, "shape") for v in vals):
            return
        old = self.__dict__.get("_out_keys")
        if self.compiled and old is None and self.__dict__.get("_assumed_out_keys") \
                and keys != self._assumed_out_keys:
            raise ValueError(
                f"model {self.name!r} was compiled for outputs {self._assumed_out_keys} (from its loss), but "
                f"call() returned {keys}; give compile() one loss per output of call()")
        self._out_keys = keys
        self._out_shapes = [(None,) + tuple(v.shape[1:]) for v in vals]
        self._out_is_dict = isinstance(out, dict)

    def _output_shapes(self):
        if getattr(self, "_functional", True) or "_out_shapes" not in self.__dict__:
            return super()._output_shapes()
        return list(self._out_shapes)

    def _build_on_zeros(self, input_shape):
        from .. import backends
        if input_shape is None:
            raise ValueError(f"model {self.name!r}: build() needs an input shape, e.g. (None, 16)")
        many = isinstance(input_shape, list) and input_shape and isinstance(input_shape[0], (list, tuple))
        shapes = [tuple(s) for s in input_shape] if many else [tuple(input_shape)]
        B = backends.current()
        xs = []
        for s in shapes:
            if not all(d is None or (isinstance(d, int) and d > 0) for d in s):
                raise ValueError(f"model {self.name!r}: build() got input shape {s}; sizes must be positive "
                                 f"integers or None")
            xs.append(Tensor(B.zeros(tuple(1 if d is None else d for d in s)), B))
        shape_key = [(None,) + s[1:] for s in shapes] if many else (None,) + shapes[0][1:]
        self.built = True
        self._build_input_shape = shape_key
        with no_grad():
            self(xs if many else xs[0], training=False)

    def get_build_config(self):
        """``{"input_shape": ...}`` for a built subclassed model (None otherwise): what a loader
        needs to create the weights before setting them (Keras 3's build config)."""
        if not self._subclassed() or not self.built or self._build_input_shape is None:
            return None
        shape = self._build_input_shape
        return {"input_shape": [list(s) for s in shape] if isinstance(shape, list) else list(shape)}

    def build_from_config(self, config):
        shape = config.get("input_shape")
        if shape is not None and not self.built:
            if shape and isinstance(shape[0], list):
                shape = [tuple(s) for s in shape]
            else:
                shape = tuple(shape)
            self.build(shape)

    def _subclassed_config(self) -> dict:
        from ..layers.base import Layer
        from .model import Model
        base = Layer.get_config(self)
        base.pop("batch_input_shape", None)
        if type(self).get_config is not Model.get_config:
            return base  # an override calling super().get_config() adds its own keys
        auto = self.__dict__.get("_auto_config")
        if auto is None:
            raise NotImplementedError(
                f"model {self.name!r} ({type(self).__name__}) is a subclassed model whose constructor takes "
                f"values other than str / int / float / bool / None (or lists / dicts of them), so it cannot "
                f"describe itself: define get_config() returning its constructor arguments (and from_config "
                f"if they need rebuilding), and register the class with @register_serializable()")
        base.update(auto)
        params = inspect.signature(type(self).__init__).parameters
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            for key in ("name", "trainable", "dtype"):  # what cls(**config) could not take back
                if key not in params:
                    base.pop(key, None)
        return base

    def _allows_no_loss(self) -> bool:
        """compile() may go without a loss when train_step is the user's (it computes its own)."""
        return type(self).train_step is not StepsMixin.train_step

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None, weighted_metrics=None,
                cuda_graph="auto", **kwargs):
        if self._subclassed() and "_out_keys" not in self.__dict__:
            # Not called yet: the outputs are those the loss names (one unless a list / dict says more).
            if isinstance(loss, dict):
                self._assumed_out_keys = list(loss)
            elif isinstance(loss, (list, tuple)):
                self._assumed_out_keys = [f"output_{i + 1}" for i in range(len(loss))]
            else:
                self._assumed_out_keys = ["output_1"]
        return super().compile(optimizer=optimizer, loss=loss, metrics=metrics, loss_weights=loss_weights,
                               weighted_metrics=weighted_metrics, cuda_graph=cuda_graph, **kwargs)

    compile.__doc__ = Trainer.compile.__doc__

    # ----------------------------------------------------------- metrics
    @property
    def metrics(self) -> list:
        """The loss tracker, the compiled metrics (as one ``compile_metrics`` object), the
        per-output loss trackers, then the Metric objects held as public attributes (Keras 3's order)."""
        from ..layers.tracking import tracked
        from ..metrics import Metric
        out = []
        if self.compiled:
            out.append(self._loss_tracker)
            if any(ms for ms in list(self._metrics) + list(self._weighted_metrics)):
                cm = self.__dict__.get("_compile_metrics_obj")
                if cm is None:
                    cm = self._compile_metrics_obj = CompileMetrics(self)
                out.append(cm)
            out.extend(self._out_loss_trackers)
        for m in tracked(self, Metric, public_only=True):
            if all(m is not o for o in out):
                out.append(m)
        return out

    @property
    def compiled_metrics(self):
        """The compiled metrics as one object with ``update_state(y, y_pred, sample_weight=None)``."""
        self._require_compiled()
        cm = self.__dict__.get("_compile_metrics_obj")
        if cm is None:
            cm = self._compile_metrics_obj = CompileMetrics(self)
        return cm

    @property
    def compiled_loss(self):
        """tf.keras 2's ``compiled_loss(y, y_pred, sample_weight=None, regularization_losses=None)``."""
        self._require_compiled()
        return _CompiledLoss(self)

    def reset_metrics(self):
        """Reset every metric of ``metrics`` (and the compiled ones)."""
        for m in self.metrics:
            m.reset_state()
        if self.compiled:
            super()._reset_metrics()

    def get_metrics_result(self) -> dict:
        """``{name: result}`` of ``metrics`` (a dict result, such as compile_metrics', flattened)."""
        out = {}
        for m in self.metrics:
            r = m.result()
            if isinstance(r, dict):
                out.update(r)
            else:
                out[m.name] = r
        return out

    # -------------------------------------------------------------- losses
    def _targets_as_tensors(self, y):
        if y is None:
            return [None] * len(self.output_names)
        if isinstance(y, dict):
            names = self.output_names
            missing = [k for k in names if k not in y]
            if missing:
                raise ValueError(f"model {self.name!r}: y lacks output(s) {missing}; outputs are {names}")
            ys = [y[k] for k in names]
        else:
            ys = list(y) if isinstance(y, (list, tuple)) else [y]
        return [v if isinstance(v, Tensor) or v is None else tensor(v) for v in ys]

    def _compute_compiled_loss(self, y, y_pred, sample_weight, with_regularization=True):
        self._require_compiled()
        ys, outs = self._targets_as_tensors(y), self._outs_list(y_pred)
        if len(outs) != len(self._loss_fns):
            raise ValueError(f"model {self.name!r} was compiled with {len(self._loss_fns)} loss(es) for outputs "
                             f"{self.output_names}, but y_pred has {len(outs)} output(s)")
        sw = sample_weight if sample_weight is None or isinstance(sample_weight, Tensor) else tensor(sample_weight)
        return self._compute_loss(ys, outs, sw, with_regularization)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The total loss: the compiled loss(es) of ``y_pred`` against ``y`` (weighted by
        ``sample_weight``), plus the layers' regularization losses. ValueError when there is
        no loss at all (no loss given to compile, no regularizer)."""
        total, _ = self._compute_compiled_loss(y, y_pred, sample_weight)
        if total is None:
            raise ValueError(f"model {self.name!r}: no loss to compute; provide a loss argument in compile()")
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None) -> dict:
        """Update the compiled metrics with this batch and return ``get_metrics_result()``."""
        if self.compiled:
            self.compiled_metrics.update_state(y, y_pred, sample_weight)
        return self.get_metrics_result()

    # --------------------------------------------------------------- steps
    def _data(self, xb, yb=None, swb=None):
        x = xb[0] if len(xb) == 1 else list(xb)
        if yb is None:
            return (x,)
        y = yb[0] if len(yb) == 1 else list(yb)
        return (x, y) if swb is None else (x, y, swb)

    def _as_batch_lists(self, data):
        x, y, sw = unpack_x_y_sample_weight(data)
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        xs = [v if isinstance(v, Tensor) else tensor(v) for v in xs]
        ys = None if y is None else self._targets_as_tensors(y)
        if sw is not None and not isinstance(sw, Tensor):
            sw = tensor(sw)
        return xs, ys, sw

    def train_step(self, data):
        """One training step on ``data`` = ``(x, y)`` or ``(x, y, sample_weight)``: forward,
        compiled loss, gradients, optimizer update, metrics; returns ``get_metrics_result()``."""
        xs, ys, sw = self._as_batch_lists(data)
        Trainer._train_batch(self, xs, ys, sw)
        return self.get_metrics_result()

    def test_step(self, data):
        """One evaluation step on ``data``; returns ``get_metrics_result()``."""
        xs, ys, sw = self._as_batch_lists(data)
        Trainer._test_batch(self, xs, ys, sw)
        return self.get_metrics_result()

    def predict_step(self, data):
        """The model's outputs for ``data`` = ``x`` or ``(x,)``."""
        x, _, _ = unpack_x_y_sample_weight(data)
        return self(x, training=False)

    def _custom(self, name) -> bool:
        return getattr(type(self), name) is not getattr(StepsMixin, name)

    # The training loop's hooks: the user's step where there is one, else the loop's own.
    def _train_batch(self, xb, yb, swb):
        if not self.built and self._subclassed():
            # The weights must exist before the step lists the variables to train.
            with no_grad():
                self(xb[0] if len(xb) == 1 else list(xb), training=False)
            self._train_vars = None
        if not self._custom("train_step"):
            self._step_logs = None
            return super()._train_batch(xb, yb, swb)
        self._step_logs = _flat_logs(self.train_step(self._data(xb, yb, swb)), "train_step")

    def _test_batch(self, xb, yb, swb):
        if not self._custom("test_step"):
            self._step_logs = None
            return super()._test_batch(xb, yb, swb)
        with no_grad():
            self._step_logs = _flat_logs(self.test_step(self._data(xb, yb, swb)), "test_step")

    def _predict_batch(self, xb):
        if not self._custom("predict_step"):
            return super()._predict_batch(xb)
        return self.predict_step(self._data(xb))

    def _reset_metrics(self):
        self._step_logs = None
        if self._custom("train_step") or self._custom("test_step") or "metrics" in vars(type(self)):
            for m in self.metrics:
                m.reset_state()
        super()._reset_metrics()

    def _read_metrics(self, prefix=""):
        logs = self.__dict__.get("_step_logs")
        if logs is None:
            return super()._read_metrics(prefix)
        return {prefix + k: _as_float(v) for k, v in logs.items()}

    def _lazy_logs(self, prefix=""):
        logs = self.__dict__.get("_step_logs")
        if logs is None:
            return super()._lazy_logs(prefix)
        from .training import _LazyLogs
        return _LazyLogs({prefix + k: (lambda v=v: v if isinstance(v, Tensor) else tensor(float(v)))
                          for k, v in logs.items()})
