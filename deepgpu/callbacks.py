"""Callbacks, as in Keras: hooks the training loop calls at fixed points.

The model contract they use: ``model.stop_training`` (bool),
``model.optimizer.learning_rate`` (a settable float), ``model.get_weights()``
/ ``model.set_weights(list)``, ``model.save(path)``, ``model.save_weights(path)``.

Logs at the end of an epoch are plain dicts of Python floats. Batch logs may
be a lazy mapping whose values are read from the device when accessed, so
callbacks read them with ``logs.get(key)`` and only when they need them.
"""
from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Iterable, Mapping

_HOOKS = (
    "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
    "on_train_batch_begin", "on_train_batch_end", "on_test_begin", "on_test_end",
    "on_test_batch_begin", "on_test_batch_end", "on_predict_begin", "on_predict_end",
    "on_predict_batch_begin", "on_predict_batch_end",
)


class Callback:
    """Base class; every hook does nothing. ``self.model`` and ``self.params``
    are set by the training loop (``set_model``, ``set_params``)."""

    def __init__(self):
        self.model = None
        self.params = {}
        self.validation_data = None

    def set_params(self, params):
        self.params = params

    def set_model(self, model):
        self.model = model

    # Keras 2 aliases: on_batch_* run for training batches.
    def on_batch_begin(self, batch, logs=None):
        pass

    def on_batch_end(self, batch, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_batch_begin(self, batch, logs=None):
        self.on_batch_begin(batch, logs=logs)

    def on_train_batch_end(self, batch, logs=None):
        self.on_batch_end(batch, logs=logs)

    def on_test_batch_begin(self, batch, logs=None):
        pass

    def on_test_batch_end(self, batch, logs=None):
        pass

    def on_predict_batch_begin(self, batch, logs=None):
        pass

    def on_predict_batch_end(self, batch, logs=None):
        pass

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_test_begin(self, logs=None):
        pass

    def on_test_end(self, logs=None):
        pass

    def on_predict_begin(self, logs=None):
        pass

    def on_predict_end(self, logs=None):
        pass


class CallbackList(Callback):
    """Dispatches each hook to every callback in order."""

    def __init__(self, callbacks=None, model=None, params=None, add_history=False):
        super().__init__()
        self.callbacks = list(callbacks or [])
        self.history = None
        if add_history and not any(isinstance(c, History) for c in self.callbacks):
            self.history = History()
            self.callbacks.append(self.history)
        if model is not None:
            self.set_model(model)
        if params is not None:
            self.set_params(params)

    def append(self, callback):
        self.callbacks.append(callback)
        if self.model is not None:
            callback.set_model(self.model)
        if self.params:
            callback.set_params(self.params)

    def set_model(self, model):
        super().set_model(model)
        for c in self.callbacks:
            c.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        for c in self.callbacks:
            c.set_params(params)

    def __iter__(self):
        return iter(self.callbacks)

    def __len__(self):
        return len(self.callbacks)

    def __call__(self, hook, *args):
        """``callbacks("on_epoch_end", epoch, logs)``: call one hook by name."""
        for c in self.callbacks:
            getattr(c, hook)(*args)


def _dispatcher(hook):
    def method(self, *args, **kwargs):
        for c in self.callbacks:
            getattr(c, hook)(*args, **kwargs)
    method.__name__ = hook
    return method


for _h in _HOOKS + ("on_batch_begin", "on_batch_end"):
    setattr(CallbackList, _h, _dispatcher(_h))


class History(Callback):
    """Records the epoch logs: ``history`` is {name: [value per epoch]}, ``epoch`` the epoch indices.

    ``set_model`` makes it the model's ``history`` attribute, as Keras does.
    """

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def set_model(self, model):
        super().set_model(model)
        try:
            model.history = self
        except AttributeError:
            pass

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


# TF.js spellings of LambdaCallback's arguments.
_CAMEL = {
    "onTrainBegin": "on_train_begin", "onTrainEnd": "on_train_end",
    "onEpochBegin": "on_epoch_begin", "onEpochEnd": "on_epoch_end",
    "onBatchBegin": "on_batch_begin", "onBatchEnd": "on_batch_end",
    "onTrainBatchBegin": "on_train_batch_begin", "onTrainBatchEnd": "on_train_batch_end",
    "onTestBegin": "on_test_begin", "onTestEnd": "on_test_end",
    "onTestBatchBegin": "on_test_batch_begin", "onTestBatchEnd": "on_test_batch_end",
    "onPredictBegin": "on_predict_begin", "onPredictEnd": "on_predict_end",
    "onPredictBatchBegin": "on_predict_batch_begin", "onPredictBatchEnd": "on_predict_batch_end",
}


class LambdaCallback(Callback):
    """A callback from plain functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``.

    Accepts every hook name (``on_train_begin(logs)``, ``on_epoch_end(epoch,
    logs)``, ``on_batch_end(batch, logs)``, ...) and the TF.js spellings
    (``onEpochEnd``, ``onBatchEnd``, ``onTrainBegin``, ...; ``onYield`` is
    accepted and ignored).
    """

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_train_begin=None, on_train_end=None,
                 on_train_batch_begin=None, on_train_batch_end=None, **kwargs):
        super().__init__()
        fns = {"on_epoch_begin": on_epoch_begin, "on_epoch_end": on_epoch_end,
               "on_train_begin": on_train_begin, "on_train_end": on_train_end,
               "on_train_batch_begin": on_train_batch_begin, "on_train_batch_end": on_train_batch_end}
        kwargs.pop("onYield", None)
        valid = set(_HOOKS) | {"on_batch_begin", "on_batch_end"}
        for k, fn in kwargs.items():
            name = _CAMEL.get(k, k)
            if name not in valid:
                raise TypeError(f"LambdaCallback() got an unexpected keyword argument {k!r}; valid: "
                                f"{', '.join(sorted(valid))} (or their TF.js camelCase spellings)")
            fns[name] = fn
        for name, fn in fns.items():
            if fn is None:
                continue
            if not callable(fn):
                raise TypeError(f"LambdaCallback: {name} must be callable, got {type(fn).__name__}")
            setattr(self, name, _adapt(fn))


def _adapt(fn):
    """Call ``fn`` with as many of the hook's arguments as it takes (TF.js passes (epoch, logs))."""
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
        varargs = any(p.kind in (p.VAR_POSITIONAL,) for p in params)
        n = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
    except (TypeError, ValueError):
        varargs, n = True, 0

    def call(*args, **kwargs):
        if "logs" in kwargs:
            args = args + (kwargs.pop("logs"),)
        return fn(*args) if varargs or n >= len(args) else fn(*args[:n])
    return call


# ------------------------------------------------------------ monitoring


def _maximize(monitor: str) -> bool:
    m = (monitor[4:] if monitor.startswith("val_") else monitor).lower()
    return ("acc" in m or m.endswith("auc") or m.startswith("fmeasure")
            or m.endswith("precision") or m.endswith("recall"))


def _resolve_mode(mode, monitor, cls):
    if mode not in ("auto", "min", "max"):
        warnings.warn(f"{cls} mode {mode!r} is unknown, falling back to 'auto'", stacklevel=3)
        mode = "auto"
    if mode == "auto":
        mode = "max" if _maximize(monitor) else "min"
    return mode


def _value(logs, key):
    if logs is None:
        return None
    v = logs.get(key) if isinstance(logs, Mapping) else None
    if v is None:
        return None
    return float(v.item()) if hasattr(v, "item") and not isinstance(v, (int, float)) else float(v)


class EarlyStopping(Callback):
    """Stop training when ``monitor`` has stopped improving for ``patience`` epochs.

    mode "auto" maximizes accuracy-like names (acc, accuracy, auc, precision,
    recall) and minimizes the rest. ``restore_best_weights`` puts back the
    weights of the best epoch at the end of training, however it ends (also
    when patience never ran out). No check before ``start_from_epoch``.
    """

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto", baseline=None,
                 restore_best_weights=False, start_from_epoch=0):
        super().__init__()
        self.monitor = monitor
        self.patience = int(patience)
        self.verbose = verbose
        self.baseline = baseline
        self.min_delta = abs(min_delta)
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = start_from_epoch
        self.mode = _resolve_mode(mode, monitor, "EarlyStopping")
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0

    def _better(self, current, reference):
        if reference is None:
            return True
        if self.mode == "min":
            return current + self.min_delta < reference
        return current - self.min_delta > reference

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        current = _value(logs, self.monitor)
        if current is None:
            warnings.warn(
                f"EarlyStopping is conditioned on {self.monitor!r}, which is not available. Available "
                f"metrics are: {', '.join(logs or {})}", stacklevel=2)
            return
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
            self.best_epoch = epoch
        self.wait += 1
        if self._better(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._better(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model (or its weights) every epoch or every ``save_freq`` batches.

    ``filepath`` is formatted with ``epoch`` (1-based), ``batch`` (when saving
    by batch) and the logs: ``"ckpt-{epoch:02d}-{val_loss:.2f}.dgm"``.
    ``save_best_only`` saves only when ``monitor`` improves (mode as in
    EarlyStopping); ``initial_value_threshold`` sets the value to beat.
    """

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False, save_weights_only=False,
                 mode="auto", save_freq="epoch", initial_value_threshold=None):
        super().__init__()
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only
        from .io import by_name
        # As Keras 3: a path whose extension names no format fails here, not after the first epoch.
        (by_name.weights_format if save_weights_only else by_name.model_format)(self.filepath)
        if save_freq != "epoch" and not (isinstance(save_freq, int) and save_freq > 0):
            raise ValueError(f"save_freq must be 'epoch' or a positive int, got {save_freq!r}")
        self.save_freq = save_freq
        self.mode = _resolve_mode(mode, monitor, "ModelCheckpoint")
        self.best = initial_value_threshold
        if self.best is None:
            self.best = math.inf if self.mode == "min" else -math.inf
        self._current_epoch = 0
        self._batches_seen = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq == "epoch":
            return
        self._batches_seen += 1
        if self._batches_seen >= self.save_freq:
            self._batches_seen = 0
            self._save(self._current_epoch, batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch, None, logs)

    def _path(self, epoch, batch, logs):
        fields = {k: _value(logs, k) for k in (logs or {})} if logs else {}
        try:
            if batch is None or "batch" in fields:
                return self.filepath.format(epoch=epoch + 1, **fields)
            return self.filepath.format(epoch=epoch + 1, batch=batch + 1, **fields)
        except KeyError as e:
            raise KeyError(f"ModelCheckpoint: filepath {self.filepath!r} names {e}, which is not in the logs "
                           f"(available: {', '.join(fields)})") from None

    def _save(self, epoch, batch, logs):
        path = self._path(epoch, batch, logs)
        if self.save_best_only:
            current = _value(logs, self.monitor)
            if current is None:
                warnings.warn(f"Can save best model only with {self.monitor!r} available, skipping", stacklevel=3)
                return
            better = current < self.best if self.mode == "min" else current > self.best
            if not better:
                if self.verbose > 0:
                    print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")
                return
            if self.verbose > 0:
                print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to {current:.5f}, "
                      f"saving model to {path}")
            self.best = current
        elif self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: saving model to {path}")
        d = os.path.dirname(path)
        if d:
            os.makedirs(d, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)


class TerminateOnNaN(Callback):
    """Stop training as soon as a batch's loss is NaN or infinite (reads the loss every batch)."""

    def on_batch_end(self, batch, logs=None):
        loss = _value(logs, "loss")
        if loss is not None and not math.isfinite(loss):
            print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True


class LearningRateScheduler(Callback):
    """Set the learning rate at each epoch's start to ``schedule(epoch, lr)``
    (or ``schedule(epoch)``); the value is logged as ``learning_rate``."""

    def __init__(self, schedule, verbose=0):
        super().__init__()
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_begin(self, epoch, logs=None):
        opt = self.model.optimizer
        lr = float(opt.learning_rate)
        try:
            lr = self.schedule(epoch, lr)
        except TypeError:  # a schedule of the epoch alone
            lr = self.schedule(epoch)
        if hasattr(lr, "item") and not isinstance(lr, (int, float)):
            lr = lr.item()
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr):
            raise ValueError(f"the output of the schedule function should be a finite float, got {lr!r}")
        opt.learning_rate = float(lr)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr}.")

    def on_epoch_end(self, epoch, logs=None):
        if isinstance(logs, dict):
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved
    (by more than ``min_delta``) for ``patience`` epochs; wait ``cooldown``
    epochs after a reduction; never go below ``min_lr``."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0, **kwargs):
        super().__init__()
        if "epsilon" in kwargs:  # the Keras 2 spelling
            min_delta = kwargs.pop("epsilon")
        if kwargs:
            raise TypeError(f"ReduceLROnPlateau() got unexpected keyword argument(s) {sorted(kwargs)}")
        if factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau does not support a factor >= 1.0, got factor={factor}")
        self.monitor = monitor
        self.factor = float(factor)
        self.patience = int(patience)
        self.verbose = verbose
        self.min_delta = float(min_delta)
        self.cooldown = int(cooldown)
        self.min_lr = float(min_lr)
        if mode not in ("auto", "min", "max"):
            warnings.warn(f"ReduceLROnPlateau mode {mode!r} is unknown, falling back to 'auto'", stacklevel=2)
            mode = "auto"
        # Keras: "auto" maximizes only names containing "acc".
        self.mode = ("max" if "acc" in monitor else "min") if mode == "auto" else mode
        self._reset()

    def _reset(self):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.cooldown_counter = 0
        self.wait = 0

    def _better(self, current):
        if self.mode == "min":
            return current < self.best - self.min_delta
        return current > self.best + self.min_delta

    def in_cooldown(self):
        return self.cooldown_counter > 0

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        opt = self.model.optimizer
        if isinstance(logs, dict):
            logs["learning_rate"] = float(opt.learning_rate)
        current = _value(logs, self.monitor)
        if current is None:
            warnings.warn(f"Learning rate reduction is conditioned on {self.monitor!r}, which is not "
                          f"available. Available metrics are: {', '.join(logs or {})}", stacklevel=2)
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._better(current):
            self.best = current
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience:
                old = float(opt.learning_rate)
                if old > self.min_lr:
                    new = max(old * self.factor, self.min_lr)
                    opt.learning_rate = new
                    if self.verbose > 0:
                        print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new}.")
                    self.cooldown_counter = self.cooldown
                    self.wait = 0


class CSVLogger(Callback):
    """Write one row per epoch (``epoch`` then the sorted log keys) to a CSV file.

    ``append`` continues an existing file (no second header). Missing values
    are written as "NA"; list values as "[a, b]".
    """

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.filename = os.fspath(filename)
        self.sep = separator
        self.append = append
        self.keys = None
        self.writer = None
        self.csv_file = None
        self._header = True

    def on_train_begin(self, logs=None):
        self._header = True
        if self.append and os.path.exists(self.filename):
            with open(self.filename, encoding="utf-8") as f:
                self._header = not bool(f.readline())
        d = os.path.dirname(self.filename)
        if d:
            os.makedirs(d, exist_ok=True)
        self.csv_file = open(self.filename, "a" if self.append else "w", newline="", encoding="utf-8")
        self.keys = None
        self.writer = None

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})

        def value(v):
            if isinstance(v, str):
                return v
            if isinstance(v, Iterable):
                return f"[{', '.join(map(str, v))}]"
            return v

        if self.keys is None:
            self.keys = sorted(logs)
            if not any(k.startswith("val_") for k in self.keys) and self.params.get("do_validation"):
                self.keys += ["val_" + k for k in self.keys]
        if self.writer is None:
            sep = self.sep

            class _Dialect(csv.excel):
                delimiter = sep

            self.writer = csv.DictWriter(self.csv_file, fieldnames=["epoch"] + self.keys, dialect=_Dialect,
                                         extrasaction="ignore")
            if self._header:
                self.writer.writeheader()
        row = {"epoch": epoch}
        row.update((k, value(logs.get(k, "NA"))) for k in self.keys)
        self.writer.writerow(row)
        self.csv_file.flush()

    def on_train_end(self, logs=None):
        if self.csv_file is not None:
            self.csv_file.close()
        self.csv_file = None
        self.writer = None


class ProgbarLogger(Callback):
    """Accepted for Keras compatibility; the training loop draws its own progress bar."""

    def __init__(self, count_mode="steps", stateful_metrics=None):
        super().__init__()


__all__ = ["Callback", "CallbackList", "History", "LambdaCallback", "EarlyStopping", "ModelCheckpoint",
           "TerminateOnNaN", "LearningRateScheduler", "ReduceLROnPlateau", "CSVLogger", "ProgbarLogger",
           "TensorBoard", "BackupAndRestore", "SwapEMAWeights"]

# Values a saved state or an automatic config can hold as they are (JSON's kinds), nested.
_PLAIN = (str, int, float, bool, type(None))


def _plain(value) -> bool:
    """True for str / int / float / bool / None, and lists, tuples and str-keyed dicts of them."""
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return isinstance(value, _PLAIN)


from .callbacks_extra import BackupAndRestore, SwapEMAWeights, TensorBoard  # noqa: E402
