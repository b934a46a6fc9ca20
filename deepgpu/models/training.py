"""compile / fit / evaluate / predict, written once for every backend.

The loop keeps the running loss and metrics on the device and reads them
only when it prints, when a callback reads a batch log, or at the end of an
epoch. Host data (NumPy arrays) is moved to the device one batch at a time;
data already on the device (Tensors) is batched there.
"""
from __future__ import annotations

import collections.abc
import math

from .. import backends
from ..autograd import backward, enable_grad, no_grad
from ..tensor import Tensor, tensor
from .graph_step import GraphTrainer
from .progbar import Progbar


class _LazyLogs(collections.abc.Mapping):
    """Batch logs whose values are read from the device only when asked for."""

    def __init__(self, sources):
        self._sources = sources  # name -> zero-arg callable returning a scalar Tensor
        self._cache = {}

    def __getitem__(self, key):
        if key not in self._cache:
            self._cache[key] = float(self._sources[key]().item())
        return self._cache[key]

    def __iter__(self):
        return iter(self._sources)

    def __len__(self):
        return len(self._sources)


class _Callbacks:
    """Calls a hook on every callback."""

    def __init__(self, callbacks, model, params):
        self.items = list(callbacks)
        for cb in self.items:
            cb.set_model(model)
            cb.set_params(params)

    def __call__(self, hook, *args):
        for cb in self.items:
            getattr(cb, hook)(*args)


def _as_list(x):
    if x is None:
        return None
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


def _length(a):
    return a.shape[0] if hasattr(a, "shape") and len(a.shape) else len(a)


def _take(a, idx, B):
    """Rows ``idx`` (host int array or a slice) of ``a`` as a Tensor on backend ``B``."""
    if isinstance(a, Tensor):
        if isinstance(idx, slice):
            return a[idx]
        return a[Tensor(B.asarray(idx, "int32"), B)]
    part = a[idx]
    return Tensor(B.asarray(part), B)


class Trainer:
    """The training half of Model; mixed into it."""

    def __init__(self):
        self.optimizer = None
        self.compiled = False
        self.stop_training = False
        self.history = None
        self._loss_fns = None
        self._graph_trainer = None

    # -------------------------------------------------------------- compile
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None,
                weighted_metrics=None, cuda_graph=False, **kwargs):
        """Configure training.

        optimizer: name or Optimizer. loss: name, Loss, callable
        ``loss(y_true, y_pred)``, or a list / dict (by output name) for
        several outputs. metrics: list of names or Metric objects (applied
        to every output), or a list of lists / dict per output.
        loss_weights: list or dict scaling each output's loss.
        cuda_graph: on the "cuda" backend, record the training step as a
        CUDA graph (per batch shape, from the second batch on) and replay it
        (see deepgpu.models.graph_step); no effect on other backends.
        Raises ValueError for unknown names (listing the valid ones).
        """
        from .. import losses as losses_mod
        from .. import metrics as metrics_mod
        from .. import optimizers as opt_mod

        for k in kwargs:
            if k not in ("run_eagerly", "jit_compile", "steps_per_execution"):
                raise TypeError(f"compile() got an unexpected keyword argument {k!r}")
        if loss is None:
            raise ValueError("compile() needs a loss (a name such as 'mse', a Loss, or a callable)")
        names = self.output_names
        n = len(names)
        opt = opt_mod.get(optimizer)
        loss_fns = self._per_output(loss, names, "loss")
        loss_fns = [None if l is None else losses_mod.get(l) for l in loss_fns]
        if loss_weights is None:
            lw = [1.0] * n
        else:
            lw = self._per_output(loss_weights, names, "loss_weights")
            lw = [1.0 if w is None else float(w) for w in lw]
        if metrics is None:
            per_metrics = [[] for _ in range(n)]
        elif isinstance(metrics, dict):
            per_metrics = [_as_list(metrics.get(nm)) or [] for nm in names]
            bad = set(metrics) - set(names)
            if bad:
                raise ValueError(f"compile(): metrics for unknown output(s) {sorted(bad)}; outputs are {names}")
        elif isinstance(metrics, (list, tuple)) and metrics and all(isinstance(m, (list, tuple)) for m in metrics):
            if len(metrics) != n:
                raise ValueError(f"compile(): {len(metrics)} metric lists for {n} outputs")
            per_metrics = [list(m) for m in metrics]
        else:
            per_metrics = [list(_as_list(metrics)) for _ in range(n)]
        out_shapes = self._output_shapes()
        metric_objs = []
        for i, ms in enumerate(per_metrics):
            objs = []
            for m in ms:
                obj = metrics_mod.get(m, loss=loss_fns[i], output_shape=out_shapes[i] if out_shapes else None)
                if n > 1:
                    obj.name = f"{names[i]}_{obj.name}"
                objs.append(obj)
            metric_objs.append(objs)
        # Everything resolved: only now change the model.
        self.optimizer = opt
        self._loss_fns = loss_fns
        self._loss_weights = lw
        self._metrics = metric_objs
        self._loss_tracker = metrics_mod.Mean(name="loss")
        self._out_loss_trackers = [metrics_mod.Mean(name=f"{nm}_loss") for nm in names] if n > 1 else []
        self._compile_config = {"optimizer": opt, "loss": loss, "metrics": metrics, "loss_weights": loss_weights,
                                "cuda_graph": bool(cuda_graph)}
        self._train_vars = None
        self._graph_trainer = GraphTrainer(self) if cuda_graph else None
        self.compiled = True

    def _per_output(self, spec, names, what):
        n = len(names)
        if isinstance(spec, dict):
            bad = set(spec) - set(names)
            if bad:
                raise ValueError(f"compile(): {what} for unknown output(s) {sorted(bad)}; outputs are {names}")
            return [spec.get(nm) for nm in names]
        if isinstance(spec, (list, tuple)):
            if len(spec) != n:
                raise ValueError(f"compile(): {len(spec)} {what} entries for a model with {n} output(s) {names}")
            return list(spec)
        return [spec] * n

    def _output_shapes(self):
        outs = self.outputs
        return [o.shape for o in outs] if outs else None

    @property
    def metrics_names(self) -> list:
        names = ["loss"] + [t.name for t in getattr(self, "_out_loss_trackers", [])]
        for ms in getattr(self, "_metrics", []):
            names += [m.name for m in ms]
        return names

    def _require_compiled(self):
        if not self.compiled:
            raise RuntimeError(
                f"model {self.name!r} must be compiled before training or evaluating: "
                f"call model.compile(optimizer=..., loss=...)")

    # ------------------------------------------------------------ the data
    def _inputs_list(self, x, what="x"):
        if x is None:
            raise ValueError(f"{what} is None")
        if isinstance(x, dict):
            return self._structure_inputs(x) if hasattr(self, "_structure_inputs") else list(x.values())
        return _as_list(x)

    def _targets_list(self, y):
        if y is None:
            return None
        names = self.output_names
        if isinstance(y, dict):
            missing = [k for k in names if k not in y]
            if missing:
                raise ValueError(f"y is missing the output(s) {missing}; outputs are {names}")
            return [y[k] for k in names]
        ys = _as_list(y)
        if len(ys) != len(names):
            raise ValueError(f"y has {len(ys)} array(s) but the model has {len(names)} output(s) {names}")
        return ys

    def _check_data(self, xs, ys, sw=None):
        n = _length(xs[0])
        for i, a in enumerate(xs):
            if _length(a) != n:
                raise ValueError(f"input arrays have different lengths: {[_length(a) for a in xs]}")
        if ys is not None:
            for a in ys:
                if _length(a) != n:
                    raise ValueError(
                        f"x and y have different numbers of samples: x has {n}, y has {_length(a)}")
        if sw is not None and _length(sw) != n:
            raise ValueError(f"sample_weight has {_length(sw)} entries for {n} samples")
        return n

    def _check_targets(self, ys):
        from .. import losses as losses_mod

        shapes = self._output_shapes()
        if not shapes or not hasattr(losses_mod, "check_shapes"):
            return
        for fn, yt, shape in zip(self._loss_fns, ys, shapes):
            if fn is None:
                continue
            name = getattr(fn, "name", getattr(fn, "__name__", "loss"))
            losses_mod.check_shapes((None,) + tuple(yt.shape[1:]), shape, name)

    def _class_weights(self, ys, class_weight):
        # Host-side: map each sample's class to its weight once, before training.
        y = ys[0].data_sync() if isinstance(ys[0], Tensor) else ys[0]
        cpu = backends.get("cpu")
        y = cpu.asarray(y)
        labels = cpu.argmax(y, axis=-1) if (y.ndim > 1 and y.shape[-1] > 1) else y.reshape(-1).astype("int32")
        top = max(int(labels.max()), max(class_weight)) + 1
        table = cpu.asarray([float(class_weight.get(i, 1.0)) for i in range(top)])
        return table[labels]

    # --------------------------------------------------------------- steps
    def _vars_to_train(self):
        if self._train_vars is None:
            self._train_vars = [w for w in self.trainable_weights]
        return [v for v in self._train_vars if v.trainable]

    def _compute_loss(self, ys, outs, sw):
        total = None
        per_out = []
        for fn, w, yt, yp in zip(self._loss_fns, self._loss_weights, ys, outs):
            if fn is None:
                per_out.append(None)
                continue
            val = _apply_loss(fn, yt, yp, sw)
            per_out.append(val)
            term = val if w == 1.0 else val * w
            total = term if total is None else total + term
        for reg in self.losses:
            total = total + reg
        return total, per_out

    def _outs_list(self, out):
        if isinstance(out, dict):
            return [out[k] for k in self.output_names]
        return list(out) if isinstance(out, (list, tuple)) else [out]

    def _update_metrics(self, ys, outs, sw, total, per_out):
        n = _length(outs[0])
        self._loss_tracker.update_state(total, sample_weight=n)
        for tr, v in zip(self._out_loss_trackers, per_out):
            if v is not None:
                tr.update_state(v, sample_weight=n)
        for ms, yt, yp in zip(self._metrics, ys, outs):
            for m in ms:
                m.update_state(yt, yp, sample_weight=sw)

    def _all_metrics(self):
        out = [self._loss_tracker] + list(self._out_loss_trackers)
        for ms in self._metrics:
            out.extend(ms)
        return out

    def _reset_metrics(self):
        for m in self._all_metrics():
            m.reset_state()

    def _train_batch(self, xb, yb, swb):
        if self._graph_trainer is not None and self._graph_trainer.train_batch(xb, yb, swb):
            return
        vars_ = self._vars_to_train()
        gs, finish = self._gradients(xb, yb, swb, vars_)
        B = vars_[0]._backend if vars_ else backends.current()
        self.optimizer.apply_gradients(
            [(None if g is None else Tensor(g, B), v) for g, v in zip(gs, vars_)])
        finish()

    def _gradients(self, xb, yb, swb, vars_):
        """Forward in training mode, loss, backward: (raw gradients of ``vars_``,
        a call that adds this batch to the metrics). Shared by the eager and
        the recorded (graph_step) training steps."""
        with enable_grad():
            out = self(xb if len(xb) > 1 else xb[0], training=True)
            outs = self._outs_list(out)
            total, per_out = self._compute_loss(yb, outs, swb)
        gs = backward(total, vars_)
        B = total._backend

        def finish():
            with no_grad():
                self._update_metrics(yb, [Tensor(o.data, B) for o in outs], swb,
                                     Tensor(total.data, B), per_out)
        return gs, finish

    def _test_batch(self, xb, yb, swb):
        with no_grad():
            out = self(xb if len(xb) > 1 else xb[0], training=False)
            outs = self._outs_list(out)
            total, per_out = self._compute_loss(yb, outs, swb)
            self._update_metrics(yb, outs, swb, total, per_out)

    def _lazy_logs(self, prefix=""):
        return _LazyLogs({prefix + m.name: m.result for m in self._all_metrics()})

    def _read_metrics(self, prefix=""):
        return {prefix + m.name: float(m.result().item()) for m in self._all_metrics()}

    def _batches(self, n, batch_size, shuffle):
        B = backends.current()
        order = B.permutation(n) if shuffle else None
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield order[start:stop] if order is not None else slice(start, stop)

    def _slice(self, arrays, idx):
        B = backends.current()
        return [_take(a, idx, B) for a in arrays]

    # ------------------------------------------------------------------ fit
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None,
            sample_weight=None, initial_epoch=0, steps_per_epoch=None, validation_batch_size=None,
            validation_freq=1):
        """Train for ``epochs`` epochs; returns a History (``.history`` holds
        ``loss``, each metric, and ``val_`` versions).

        x / y: NumPy arrays or Tensors, or lists / dicts of them for several
        inputs / outputs. Raises RuntimeError before compile(), ValueError for
        mismatched lengths or targets that do not fit the outputs.
        """
        from .. import callbacks as cb_mod

        self._require_compiled()
        batch_size = 32 if batch_size is None else int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= validation_split < 1:
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split}")
        verbose = 1 if verbose == "auto" else int(verbose)
        xs, ys = self._inputs_list(x), self._targets_list(y)
        if ys is None:
            raise ValueError("fit() needs targets y")
        n = self._check_data(xs, ys, sample_weight)
        self._check_targets(ys)
        sw = sample_weight
        if class_weight:
            sw = self._class_weights(ys, class_weight)
        val = None
        if validation_data is not None:
            vd = list(validation_data)
            if len(vd) not in (2, 3):
                raise ValueError("validation_data must be (x_val, y_val) or (x_val, y_val, sample_weight)")
            vx, vy = self._inputs_list(vd[0], "x_val"), self._targets_list(vd[1])
            self._check_data(vx, vy)
            val = (vx, vy, vd[2] if len(vd) == 3 else None)
        elif validation_split:
            split = int(n * (1 - validation_split))
            if split == 0 or split == n:
                raise ValueError(f"validation_split={validation_split} leaves no samples on one side of {n}")
            cut = slice(split, n)
            val = ([a[cut] for a in xs], [a[cut] for a in ys], None if sw is None else sw[cut])
            xs, ys = [a[:split] for a in xs], [a[:split] for a in ys]
            sw = None if sw is None else sw[:split]
            n = split
        steps = math.ceil(n / batch_size)
        if steps_per_epoch is not None:
            steps = min(steps, int(steps_per_epoch))
        if isinstance(callbacks, dict):  # TF.js style: {"onEpochEnd": fn, ...}
            callbacks = [cb_mod.LambdaCallback(**callbacks)]
        history = cb_mod.History()
        cbs = _Callbacks(list(callbacks or []) + [history], self,
                         {"epochs": epochs, "steps": steps, "verbose": verbose, "batch_size": batch_size,
                          "samples": n})
        self.stop_training = False
        self.history = history
        cbs("on_train_begin", {})
        epoch_logs = {}
        try:
            for epoch in range(initial_epoch, epochs):
                if self.stop_training:
                    break
                self._reset_metrics()
                cbs("on_epoch_begin", epoch, {})
                if verbose:
                    print(f"Epoch {epoch + 1}/{epochs}")
                bar = Progbar(steps, verbose=verbose)
                for step, idx in enumerate(self._batches(n, batch_size, shuffle)):
                    if step >= steps:
                        break
                    cbs("on_train_batch_begin", step, {})
                    xb, yb = self._slice(xs, idx), self._slice(ys, idx)
                    swb = None if sw is None else self._slice([sw], idx)[0]
                    self._train_batch(xb, yb, swb)
                    cbs("on_train_batch_end", step, self._lazy_logs())
                    bar.update(step + 1, lambda: list(self._read_metrics().items()))
                    if self.stop_training:
                        break
                epoch_logs = self._read_metrics()
                if val is not None and (epoch + 1) % validation_freq == 0:
                    vlogs = self._evaluate_arrays(*val, validation_batch_size or batch_size, cbs)
                    epoch_logs.update({"val_" + k: v for k, v in vlogs.items()})
                bar.update(step + 1, lambda: list(epoch_logs.items()), final=True)
                cbs("on_epoch_end", epoch, epoch_logs)
        finally:
            cbs("on_train_end", epoch_logs)
        return history

    # ------------------------------------------------------------- evaluate
    def _evaluate_arrays(self, xs, ys, sw, batch_size, cbs=None, verbose=0):
        n = self._check_data(xs, ys, sw)
        self._reset_metrics()
        if cbs:
            cbs("on_test_begin", {})
        steps = math.ceil(n / batch_size)
        bar = Progbar(steps, verbose=verbose)
        for step, idx in enumerate(self._batches(n, batch_size, False)):
            if cbs:
                cbs("on_test_batch_begin", step, {})
            xb, yb = self._slice(xs, idx), self._slice(ys, idx)
            swb = None if sw is None else self._slice([sw], idx)[0]
            self._test_batch(xb, yb, swb)
            if cbs:
                cbs("on_test_batch_end", step, self._lazy_logs())
            bar.update(step + 1, lambda: list(self._read_metrics().items()))
        logs = self._read_metrics()
        bar.update(steps, lambda: list(logs.items()), final=True)
        if cbs:
            cbs("on_test_end", logs)
        return logs

    def evaluate(self, x=None, y=None, batch_size=None, verbose=0, sample_weight=None,
                 callbacks=None, return_dict=False):
        """Loss and metrics on (x, y): a float, a list [loss, metric...], or a dict."""
        self._require_compiled()
        xs, ys = self._inputs_list(x), self._targets_list(y)
        if ys is None:
            raise ValueError("evaluate() needs targets y")
        self._check_data(xs, ys, sample_weight)
        self._check_targets(ys)
        cbs = _Callbacks(callbacks, self, {"verbose": verbose}) if callbacks else None
        logs = self._evaluate_arrays(xs, ys, sample_weight, int(batch_size or 32), cbs, verbose)
        if return_dict:
            return logs
        vals = list(logs.values())
        return vals[0] if len(vals) == 1 else vals

    # -------------------------------------------------------------- predict
    def predict(self, x, batch_size=None, verbose=0, callbacks=None):
        """Outputs for ``x`` as a Tensor (a list of Tensors for several outputs).

        The values stay on the device; call ``.data_sync()`` for NumPy.
        """
        from .. import ops

        xs = self._inputs_list(x)
        n = self._check_data(xs, None)
        batch_size = int(batch_size or 32)
        cbs = _Callbacks(callbacks, self, {"verbose": verbose}) if callbacks else None
        if cbs:
            cbs("on_predict_begin", {})
        parts = None
        steps = math.ceil(n / batch_size)
        bar = Progbar(steps, verbose=verbose)
        with no_grad():
            for step, idx in enumerate(self._batches(n, batch_size, False)):
                if cbs:
                    cbs("on_predict_batch_begin", step, {})
                xb = self._slice(xs, idx)
                outs = self._outs_list(self(xb if len(xb) > 1 else xb[0], training=False))
                parts = [[o] for o in outs] if parts is None else [p + [o] for p, o in zip(parts, outs)]
                if cbs:
                    cbs("on_predict_batch_end", step, {"outputs": outs})
                bar.update(step + 1)
        bar.update(steps, final=True)
        if cbs:
            cbs("on_predict_end", {})
        if parts is None:
            raise ValueError("predict() got no samples")
        res = [p[0] if len(p) == 1 else ops.concat(p, axis=0) for p in parts]
        return res[0] if len(res) == 1 else res

    # ---------------------------------------------------- single-batch API
    def train_on_batch(self, x, y, sample_weight=None, class_weight=None, return_dict=False):
        """One optimizer step on one batch; returns the loss (and metrics) for that batch."""
        self._require_compiled()
        xs, ys = self._inputs_list(x), self._targets_list(y)
        self._check_data(xs, ys, sample_weight)
        self._check_targets(ys)
        sw = self._class_weights(ys, class_weight) if class_weight else sample_weight
        B = backends.current()
        idx = slice(0, _length(xs[0]))
        self._reset_metrics()
        self._train_batch([_take(a, idx, B) for a in xs], [_take(a, idx, B) for a in ys],
                          None if sw is None else _take(sw, idx, B))
        return self._single_result(return_dict)

    def test_on_batch(self, x, y, sample_weight=None, return_dict=False):
        self._require_compiled()
        xs, ys = self._inputs_list(x), self._targets_list(y)
        self._check_data(xs, ys, sample_weight)
        B = backends.current()
        idx = slice(0, _length(xs[0]))
        self._reset_metrics()
        self._test_batch([_take(a, idx, B) for a in xs], [_take(a, idx, B) for a in ys],
                         None if sample_weight is None else _take(sample_weight, idx, B))
        return self._single_result(return_dict)

    def predict_on_batch(self, x):
        xs = self._inputs_list(x)
        with no_grad():
            xs = [a if isinstance(a, Tensor) else tensor(a) for a in xs]
            return self(xs if len(xs) > 1 else xs[0], training=False)

    def _single_result(self, return_dict):
        logs = self._read_metrics()
        if return_dict:
            return logs
        vals = list(logs.values())
        return vals[0] if len(vals) == 1 else vals

    # ------------------------------------------------------------ weights
    def save(self, filepath, overwrite=True):
        """Write the whole model (architecture, weights, compile config, optimizer state)."""
        from ..io import native
        native.save_model(self, filepath, overwrite=overwrite)

    def save_weights(self, filepath, overwrite=True):
        from ..io import native
        native.save_weights(self, filepath, overwrite=overwrite)

    def load_weights(self, filepath):
        from ..io import native
        native.load_weights(self, filepath)


def _apply_loss(fn, y_true, y_pred, sample_weight):
    """Scalar mean loss; plain callables return per-sample values that are averaged here."""
    from .. import losses as losses_mod
    from .. import ops

    if isinstance(fn, getattr(losses_mod, "Loss", ())):
        return fn(y_true, y_pred, sample_weight=sample_weight)
    per = fn(y_true, y_pred)
    if not isinstance(per, Tensor):
        raise TypeError(f"loss function {fn!r} returned {type(per).__name__}, not a Tensor")
    if per.ndim > 1:
        per = ops.mean(per, axis=tuple(range(1, per.ndim)))
    if sample_weight is not None:
        return ops.sum(per * sample_weight) / per.shape[0] if per.ndim else per
    return ops.mean(per)
