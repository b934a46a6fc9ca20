"""Keras 3's TensorBoard, BackupAndRestore and SwapEMAWeights callbacks (re-exported by
``deepgpu.callbacks``)."""
from __future__ import annotations

import json
import os
import time

from .callbacks import Callback, History, ProgbarLogger, _plain

__all__ = ["SwapEMAWeights", "BackupAndRestore", "TensorBoard"]


# ----------------------------------------------------------------- SwapEMAWeights
class SwapEMAWeights(Callback):
    """Evaluate (and predict) with the optimizer's moving averages of the weights
    (``optimizer(use_ema=True)``), as Keras 3: swapped in at ``on_test_begin`` and back at
    ``on_test_end``. ``swap_on_epoch=True`` also keeps the averages in the model between
    epochs, so that ModelCheckpoint saves them (place this callback before it).
    ValueError at the first swap when the optimizer keeps no averages."""

    def __init__(self, swap_on_epoch=False):
        super().__init__()
        self.swap_on_epoch = bool(swap_on_epoch)
        self._ema_weights_in_model = False

    def _swap(self):
        opt = getattr(self.model, "optimizer", None)
        if opt is None or not getattr(opt, "use_ema", False):
            raise ValueError("SwapEMAWeights needs an optimizer created with use_ema=True; the model's is "
                             f"{type(opt).__name__ if opt is not None else None} without it")
        opt.swap_ema_weights()

    def on_epoch_begin(self, epoch, logs=None):
        if self.swap_on_epoch and self._ema_weights_in_model:
            self._swap()
            self._ema_weights_in_model = False

    def on_epoch_end(self, epoch, logs=None):
        if self.swap_on_epoch and not self._ema_weights_in_model:
            self._swap()
            self._ema_weights_in_model = True
            if epoch == self.params.get("epochs", 0) - 1:
                # the averages stay in the model at the end: both copies hold them
                opt = self.model.optimizer
                for v in opt._vars:
                    opt._ema_vars[id(v)].assign(v)

    def on_test_begin(self, logs=None):
        if not self._ema_weights_in_model:
            self._swap()
            self._ema_weights_in_model = True

    def on_test_end(self, logs=None):
        if self._ema_weights_in_model:
            self._swap()
            self._ema_weights_in_model = False

    on_predict_begin = on_test_begin
    on_predict_end = on_test_end


# --------------------------------------------------------------- BackupAndRestore


def _callback_state(cb) -> dict:
    """The plain-valued attributes of a callback (counters, best values, wait times)."""
    skip = {"model", "params", "validation_data", "_siblings"}
    return {k: v for k, v in vars(cb).items() if k not in skip and _plain(v)}


class BackupAndRestore(Callback):
    """Resume a ``fit`` that was interrupted (an exception, a killed process), as Keras 3.

    Saves, in ``backup_dir``, one file (written atomically) with the model's weights, the
    optimizer's state, the epoch and step reached, and the state of the other callbacks
    (their plain-valued attributes: EarlyStopping's wait and best, ...): after each epoch
    (``save_freq="epoch"``: when the next begins, once every callback has seen the epoch's
    end) or every ``save_freq`` training steps (an int). A later
    ``fit`` with this callback restores all of it and goes on from that epoch, skipping the
    steps already done in it. The backup is removed when a fit ends normally
    (``delete_checkpoint``); ``double_checkpoint`` keeps the previous one, used when the
    latest cannot be read. The model must be built before ``fit`` (ValueError). Works with
    array inputs (fit's own loop); other data sources resume at the epoch. Under
    ``DataParallel`` rank 0 alone writes, reads and deletes the backup and sends what it
    restored to the other ranks.
    """

    def __init__(self, backup_dir, save_freq="epoch", double_checkpoint=False, delete_checkpoint=True):
        super().__init__()
        if not backup_dir:
            raise ValueError("BackupAndRestore: backup_dir is empty; give a folder for the backup")
        if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(save_freq, int)
                                     or save_freq < 1):
            raise ValueError(f"BackupAndRestore: save_freq must be 'epoch' or an integer >= 1, got {save_freq!r}")
        self.backup_dir = os.fspath(backup_dir)
        self.save_freq = save_freq
        self.double_checkpoint = bool(double_checkpoint)
        self.delete_checkpoint = bool(delete_checkpoint)
        self._path = os.path.join(self.backup_dir, "latest.dgbackup")
        self._prev_path = self._path + ".bkp"
        self._epoch = 0
        self._steps_in_epoch = 0
        self._since_save = 0
        self._pending_states = None
        self._save_pending = False
        self._completed = False

    # ------------------------------------------------------------ writing
    def _others(self):
        return [cb for cb in getattr(self, "_siblings", []) if cb is not self
                and not isinstance(cb, (History, ProgbarLogger))]

    def _world(self):
        """The model's DataParallel when it trains on several ranks, else None."""
        dp = getattr(self.model, "_distribute", None)
        return dp if dp is not None and getattr(dp.comm, "size", 1) > 1 else None

    def _writes(self):
        dp = self._world()
        return dp is None or dp.is_main

    def _save(self):
        from .io import native
        if not self._writes():
            return
        model = self.model
        os.makedirs(self.backup_dir, exist_ok=True)
        if self.double_checkpoint and os.path.exists(self._path):
            os.replace(self._path, self._prev_path)
        meta = {"epoch": self._epoch, "step": self._steps_in_epoch,
                "callbacks": {f"{i}:{type(cb).__name__}": _callback_state(cb) for i, cb in enumerate(self._others())}}
        members = {"deepgpu.json": native._meta(native._WEIGHTS, model)}
        members.update(native._weights_members(model))
        opt = getattr(model, "optimizer", None)
        if opt is not None:
            members["optimizer.npz"] = native._npz_bytes(opt.get_weights_for(model._vars_to_train()))
        members["training_metadata.json"] = json.dumps(meta).encode()
        native._atomic_zip(self._path, members)

    # ------------------------------------------------------------ reading
    def _load(self, path):
        from .io import native
        model = self.model
        with native._archive(path) as ar:
            meta = ar.json("training_metadata.json")
            arrays = ar.weights(model)
            opt_state = None
            if "optimizer.npz" in ar.infos and getattr(model, "optimizer", None) is not None:
                need = 4 * sum(int(a.nbytes) + 4096 for a in arrays) + (1 << 20)
                opt_state = ar.arrays("optimizer.npz", need)
        for w, a in zip(model.weights, arrays):
            w.assign(a)
        if opt_state is not None:
            model.optimizer.set_weights(opt_state, var_list=model._vars_to_train())
        return meta

    def _restore(self):
        """The backup's metadata after restoring the model from it, or None without a backup."""
        model = self.model
        if not (os.path.exists(self._path) or os.path.exists(self._prev_path)):
            return None
        if not model.built:
            raise ValueError(f"BackupAndRestore: model {model.name!r} must be built before fit() to restore "
                             f"its weights (call it on a batch of data first)")
        from .io.native import ModelFileError
        try:
            return self._load(self._path)
        except (FileNotFoundError, ModelFileError):
            if not os.path.exists(self._prev_path):
                raise
            return self._load(self._prev_path)

    def on_train_begin(self, logs=None):
        model = self.model
        self._epoch, self._steps_in_epoch, self._since_save, self._completed = 0, 0, 0, False
        self._save_pending = False
        dp = self._world()
        meta = self._restore() if self._writes() else None
        if dp is not None:  # rank 0 read it: every rank resumes alike
            meta = dp.comm.bcast_obj(meta)
            if meta is not None:
                dp.sync_from_main(model)
        if meta is None:
            return
        epoch, step = int(meta.get("epoch", 0)), int(meta.get("step", 0))
        model._resume_at = (epoch, step)
        self._epoch, self._steps_in_epoch = epoch, step
        self._pending_states = meta.get("callbacks") or {}

    def on_epoch_begin(self, epoch, logs=None):
        # The others' on_train_begin has run (and reset them): now their saved state goes back.
        if self._pending_states:
            # matched as the k-th callback of its class: under DataParallel the ranks other than 0
            # lack the file-writing ones, so positions differ from the saving rank's
            saved = {}
            for key, state in self._pending_states.items():
                saved.setdefault(key.split(":", 1)[1], []).append(state)
            seen = {}
            for cb in self._others():
                name = type(cb).__name__
                k = seen[name] = seen.get(name, -1) + 1
                for attr, v in (saved.get(name, [])[k:k + 1] or [{}])[0].items():
                    setattr(cb, attr, v)
        self._pending_states = None
        self._epoch = epoch
        if self._save_pending:
            # saved here, not at the epoch's end, so that the callbacks after this one have
            # updated their state for that epoch (EarlyStopping's best, ...)
            self._save_pending = False
            self._save()

    def on_train_batch_end(self, batch, logs=None):
        self._steps_in_epoch = batch + 1
        if self.save_freq != "epoch":
            self._since_save += 1
            if self._since_save >= self.save_freq:
                self._since_save = 0
                self._save()

    def on_epoch_end(self, epoch, logs=None):
        self._epoch, self._steps_in_epoch = epoch + 1, 0
        # fit's loop calls on_train_end after an exception too: only a fit that ran to its
        # end (or was stopped by a callback) deletes the backup
        self._completed = epoch + 1 >= self.params.get("epochs", 0) or bool(getattr(self.model, "stop_training",
                                                                                        False))
        if self.save_freq == "epoch":
            self._save_pending = not self._completed

    def on_train_end(self, logs=None):
        self.model.__dict__.pop("_resume_at", None)  # a loop that did not take it must not leave it
        completed, self._completed = getattr(self, "_completed", False), False
        if self.delete_checkpoint and completed and self._writes():
            for p in (self._path, self._prev_path):
                if os.path.exists(p):
                    os.remove(p)
            try:
                os.rmdir(self.backup_dir)
            except OSError:
                pass  # not empty: the user's files stay


# ---------------------------------------------------------------------- TensorBoard
def _tb():
    try:
        from tensorboard.compat.proto import summary_pb2, tensor_pb2, types_pb2
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError as e:
        raise ImportError(f'callbacks.TensorBoard writes its event files with the tensorboard package: '
                          f'pip install "deepgpu[tensorboard]" ({e})') from None
    return summary_pb2, tensor_pb2, types_pb2, Event, EventFileWriter


class _Writer:
    """Scalars, histograms and the Keras-model graph as TensorBoard event records, through the
    tensorboard package's own EventFileWriter and protos (no TensorFlow needed)."""

    def __init__(self, logdir):
        self._pb, self._tensor, self._types, self._Event, EventFileWriter = _tb()
        os.makedirs(logdir, exist_ok=True)
        self._w = EventFileWriter(logdir)

    def _emit(self, value, step):
        self._w.add_event(self._Event(wall_time=time.time(), step=int(step),
                                      summary=self._pb.Summary(value=[value])))

    def scalar(self, tag, value, step):
        self._emit(self._pb.Summary.Value(tag=tag, simple_value=float(value)), step)

    def histogram(self, tag, values, step, bins=30):
        """``values``: a host array (``data_sync()``); its finite entries in ``bins`` equal buckets."""
        v = values.reshape(-1).astype("float64")
        v = v[(v == v) & (abs(v) != float("inf"))]
        if not v.size:
            return
        lo, hi = float(v.min()), float(v.max())
        width = (hi - lo) / bins if hi > lo else 1.0
        limits = [lo + width * (i + 1) for i in range(bins)]
        limits[-1] = max(limits[-1], hi)
        below = [int((v <= e).sum()) for e in limits]  # counts at or below each bucket's right edge
        counts = [below[0]] + [b - a for a, b in zip(below, below[1:])]
        hist = self._pb.HistogramProto(min=lo, max=hi, num=float(v.size), sum=float(v.sum()),
                                       sum_squares=float((v * v).sum()), bucket_limit=limits,
                                       bucket=[float(c) for c in counts])
        self._emit(self._pb.Summary.Value(tag=tag, histo=hist), step)

    def keras_graph(self, config_json, step=0):
        # What tf.summary's keras_model writes: the model's JSON under plugin graph_keras_model,
        # which TensorBoard's Graphs tab draws as the conceptual graph.
        meta = self._pb.SummaryMetadata(plugin_data=self._pb.SummaryMetadata.PluginData(
            plugin_name="graph_keras_model", content=b"1"))
        t = self._tensor.TensorProto(dtype=self._types.DT_STRING, string_val=[config_json.encode()])
        self._emit(self._pb.Summary.Value(tag="keras", metadata=meta, tensor=t), step)

    def flush(self):
        self._w.flush()

    def close(self):
        self._w.close()


class TensorBoard(Callback):
    """Log for TensorBoard, as Keras 3: ``TensorBoard(log_dir="logs", histogram_freq=0,
    write_graph=True, write_steps_per_second=False, update_freq="epoch")``.

    Writes event files under ``log_dir/train`` and ``log_dir/validation``: each epoch's
    logs as ``epoch_<name>`` scalars (validation ones, without ``val_``, in validation);
    with ``update_freq`` an int N (or "batch": 1), ``batch_<name>`` every N training steps
    (step: the optimizer's iteration count); every ``histogram_freq`` epochs a histogram of
    each weight (``<weight name>/histogram``); with ``write_graph`` the model's architecture
    under the "keras" tag, which TensorBoard's Graphs tab draws (a subclassed model without
    a config writes none). Events go through the tensorboard package (the
    ``deepgpu[tensorboard]`` extra): ImportError naming it when missing. Keras's
    ``write_images``, ``profile_batch`` and ``embeddings_freq`` are accepted only at their
    off values (ValueError otherwise).
    """

    def __init__(self, log_dir="logs", histogram_freq=0, write_graph=True, write_images=False,
                 write_steps_per_second=False, update_freq="epoch", profile_batch=0, embeddings_freq=0,
                 embeddings_metadata=None):
        super().__init__()
        _tb()  # the missing package is said at once, not at the first epoch
        if isinstance(histogram_freq, bool) or not isinstance(histogram_freq, int) or histogram_freq < 0:
            raise ValueError(f"TensorBoard: histogram_freq must be an integer >= 0, got {histogram_freq!r}")
        if update_freq == "batch":
            update_freq = 1
        if update_freq != "epoch" and (isinstance(update_freq, bool) or not isinstance(update_freq, int)
                                       or update_freq < 1):
            raise ValueError(f"TensorBoard: update_freq must be 'epoch', 'batch' or an integer >= 1, got "
                             f"{update_freq!r}")
        for what, value in (("write_images", write_images), ("profile_batch", profile_batch),
                            ("embeddings_freq", embeddings_freq)):
            if value:
                raise ValueError(f"TensorBoard: {what}={value!r} is not supported (deepgpu writes scalars, "
                                 f"histograms and the graph)")
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq = histogram_freq
        self.write_graph = bool(write_graph)
        self.write_steps_per_second = bool(write_steps_per_second)
        self.update_freq = update_freq
        self._writers = {}
        self._epoch_start = None
        self._steps = 0

    def _writer(self, which):
        if which not in self._writers:
            self._writers[which] = _Writer(os.path.join(self.log_dir, which))
        return self._writers[which]

    def _step(self):
        opt = getattr(self.model, "optimizer", None)
        return int(getattr(opt, "iterations", 0) or 0)

    def on_train_begin(self, logs=None):
        if self.write_graph:
            try:
                cfg = self.model.to_json()
            except (NotImplementedError, TypeError, ValueError, AttributeError):
                cfg = None  # a subclassed model that cannot describe itself
            if cfg is not None:
                self._writer("train").keras_graph(cfg)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1
        if self.update_freq == "epoch" or not logs:
            return
        step = self._step()
        if step % self.update_freq:
            return
        w = self._writer("train")
        for k in logs:
            value = logs.get(k)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                w.scalar("batch_" + k, value, step)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        train, val = self._writer("train"), None
        for k, v in logs.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            if k.startswith("val_"):
                val = val or self._writer("validation")
                val.scalar("epoch_" + k[4:], v, epoch)
                val.scalar(f"evaluation_{k[4:]}_vs_iterations", v, self._step())
            else:
                train.scalar("epoch_" + k, v, epoch)
        opt = getattr(self.model, "optimizer", None)
        if opt is not None and "learning_rate" not in logs:
            train.scalar("epoch_learning_rate", float(opt.learning_rate), epoch)
        if self.write_steps_per_second and self._epoch_start is not None:
            dt = time.perf_counter() - self._epoch_start
            train.scalar("epoch_steps_per_second", self._steps / dt if dt > 0 else 0.0, epoch)
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            for layer in self.model.layers:
                for wt in layer.weights:
                    train.histogram(wt.name.replace(":", "_") + "/histogram", wt.data_sync(), epoch)
        for w in self._writers.values():
            w.flush()

    def on_train_end(self, logs=None):
        for w in self._writers.values():
            w.close()
        self._writers = {}
