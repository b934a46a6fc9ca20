"""deepgpu's own file format: one zip file per model.

Members (all written by ``save_model``; ``save_weights`` writes only the
first and ``weights.*``):

- ``deepgpu.json``: ``{"format": "deepgpu.model" | "deepgpu.weights",
  "format_version": 1, "deepgpu_version": ..., "class_name": ...}``
- ``config.json``: the architecture, ``{"class_name", "config"}`` (tf.keras 2
  dialect, the same tree ``model.get_config()`` gives)
- ``weights.json`` + ``weights.npz``: every weight in ``model.weights`` order,
  names and shapes in the JSON, arrays as ``w00000.npy``, ...
- ``compile.json``: optimizer, loss, metrics and loss weights, when compiled
- ``optimizer.npz``: the optimizer's full state (``get_weights()``), when built

Writes go to a temporary file beside the target and are renamed over it only
when complete, so a crash mid-save leaves the previous file intact. Loading
checks everything (members, JSON, classes, weight count and shapes) before it
changes anything.
"""
from __future__ import annotations

import io as _io
import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT_VERSION = 1
_MODEL = "deepgpu.model"
_WEIGHTS = "deepgpu.weights"


class ModelFileError(ValueError):
    """A file that is not a readable deepgpu model / weights file (names the file and the problem)."""


# ------------------------------------------------------------------ writing
def _npz_bytes(arrays) -> bytes:
    buf = _io.BytesIO()
    np.savez(buf, **{f"w{i:05d}": np.asarray(a) for i, a in enumerate(arrays)})
    return buf.getvalue()


def _atomic_zip(path, members: dict) -> None:
    """Write ``members`` (name -> bytes) as a zip at ``path`` atomically."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot save to {path!r}: folder {folder!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".deepgpu-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as z:
                for name, data in members.items():
                    z.writestr(name, data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _meta(kind, model) -> bytes:
    from .. import __version__
    return json.dumps({"format": kind, "format_version": FORMAT_VERSION, "deepgpu_version": __version__,
                       "class_name": type(model).__name__, "name": model.name}).encode()


def _weights_members(model) -> dict:
    ws = model.weights
    arrays = [w.data_sync() for w in ws]
    manifest = [{"name": w.name, "shape": list(w.shape), "dtype": str(a.dtype)} for w, a in zip(ws, arrays)]
    return {"weights.json": json.dumps(manifest).encode(), "weights.npz": _npz_bytes(arrays)}


def _fn_name(obj, what):
    """A JSON-able description of a loss / metric given at compile()."""
    from .. import losses as L
    from .. import metrics as M
    from ..models.serialization import custom_objects

    if obj is None or isinstance(obj, (str, int, float)):
        return obj
    if isinstance(obj, dict):
        return {"__dict__": {k: _fn_name(v, what) for k, v in obj.items()}}
    if isinstance(obj, (list, tuple)):
        return [_fn_name(v, what) for v in obj]
    if isinstance(obj, L.Loss):
        return {"__loss__": L.serialize(obj)}
    if isinstance(obj, M.Metric):
        return {"__metric__": M.serialize(obj)}
    if callable(obj):
        name = getattr(obj, "__name__", None)
        reg = custom_objects()
        if name and (reg.get(name) is obj or getattr(L, name, None) is obj or getattr(M, name, None) is obj):
            return {"__callable__": name}
        # Saved by name all the same: load_model then needs custom_objects={name: fn}.
        return {"__callable__": name or repr(obj)}
    raise TypeError(f"cannot save {what} {obj!r}: not a name, a Loss/Metric or a function")


def _compile_members(model) -> dict:
    if not getattr(model, "compiled", False):
        return {}
    from .. import optimizers as O

    cc = model._compile_config
    spec = {"optimizer": O.serialize(model.optimizer), "loss": _fn_name(cc["loss"], "loss"),
            "metrics": _fn_name(cc["metrics"], "metric"), "loss_weights": cc["loss_weights"],
            "cuda_graph": bool(cc.get("cuda_graph", False))}
    out = {"compile.json": json.dumps(spec).encode()}
    if model.optimizer.built:
        out["optimizer.npz"] = _npz_bytes(model.optimizer.get_weights())
    return out


def save_model(model, path, include_optimizer=True) -> None:
    """Write ``model`` (architecture, weights, compile settings, optimizer state) to one zip file.

    Raises NotImplementedError for a subclassed model (no architecture
    config: use ``save_weights``), ValueError for an unbuilt model.
    """
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built yet: call it on data or give it an input shape "
                         f"before saving")
    from ..models.serialization import serialize_layer

    members = {"deepgpu.json": _meta(_MODEL, model),
               "config.json": json.dumps(serialize_layer(model)).encode()}
    members.update(_weights_members(model))
    if include_optimizer:
        members.update(_compile_members(model))
    _atomic_zip(path, members)


def save_weights(model, path) -> None:
    """Write only the weights of ``model`` (in ``model.weights`` order) to one zip file."""
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built yet, so it has no weights to save")
    members = {"deepgpu.json": _meta(_WEIGHTS, model)}
    members.update(_weights_members(model))
    _atomic_zip(path, members)


# ------------------------------------------------------------------ reading
class _Archive:
    """The checked members of a deepgpu file."""

    def __init__(self, path):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"no such file: {self.path!r}")
        if os.path.isdir(self.path):
            raise ModelFileError(
                f"{self.path!r} is a folder, not a deepgpu file (for a TF.js model.json folder use "
                f"deepgpu.io.load_tfjs)")
        try:
            with zipfile.ZipFile(self.path) as z:
                self.members = {n: z.read(n) for n in z.namelist()}
        except zipfile.BadZipFile as e:
            raise ModelFileError(f"{self.path!r} is not a deepgpu file: not a complete zip archive ({e}); "
                                 f"it may be truncated or of another type") from None
        except (zipfile.LargeZipFile, OSError, EOFError, ValueError) as e:
            raise ModelFileError(f"{self.path!r} could not be read as a deepgpu file: {e}") from None
        if "deepgpu.json" not in self.members:
            hint = ""
            if "config.json" in self.members and "model.weights.h5" in self.members:
                hint = " (it looks like a Keras 3 .keras file: use deepgpu.io.load_keras)"
            raise ModelFileError(f"{self.path!r} is a zip file but not a deepgpu file: it has no "
                                 f"deepgpu.json{hint}")
        self.meta = self.json("deepgpu.json")
        fmt = self.meta.get("format")
        if fmt not in (_MODEL, _WEIGHTS):
            raise ModelFileError(f"{self.path!r}: unknown format {fmt!r} in deepgpu.json")
        if int(self.meta.get("format_version", 0)) > FORMAT_VERSION:
            raise ModelFileError(
                f"{self.path!r} was written by a newer deepgpu (format version {self.meta['format_version']}, "
                f"this one reads up to {FORMAT_VERSION})")

    def need(self, name):
        if name not in self.members:
            raise ModelFileError(f"{self.path!r} is incomplete: member {name!r} is missing")
        return self.members[name]

    def json(self, name):
        try:
            return json.loads(self.need(name).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelFileError(f"{self.path!r}: member {name!r} is not valid JSON ({e})") from None

    def arrays(self, name):
        try:
            with np.load(_io.BytesIO(self.need(name)), allow_pickle=False) as z:
                keys = sorted(z.files)
                return [z[k] for k in keys]
        except ModelFileError:
            raise
        except Exception as e:  # numpy raises several types for a damaged npz
            raise ModelFileError(f"{self.path!r}: member {name!r} is damaged ({type(e).__name__}: {e})") from None

    def weights(self):
        manifest = self.json("weights.json")
        arrays = self.arrays("weights.npz")
        if len(manifest) != len(arrays):
            raise ModelFileError(f"{self.path!r}: weights.json lists {len(manifest)} weights, "
                                 f"weights.npz holds {len(arrays)}")
        return manifest, arrays


def _check_fit(model, manifest, arrays, path):
    ws = model.weights
    if len(ws) != len(arrays):
        raise ValueError(
            f"the weights in {path!r} do not fit model {model.name!r}: the file has {len(arrays)} weight "
            f"arrays ({[m['name'] for m in manifest][:6]}...), the model has {len(ws)}")
    for w, m, a in zip(ws, manifest, arrays):
        if tuple(a.shape) != tuple(w.shape):
            raise ValueError(
                f"the weights in {path!r} do not fit model {model.name!r}: weight {m['name']!r} in the file "
                f"has shape {tuple(a.shape)}, the model's {w.name!r} has {tuple(w.shape)}")


def _assign_all(model, arrays):
    for w, a in zip(model.weights, arrays):
        w.assign(a)


def _restore_fn(spec, custom, what):
    from .. import losses as L
    from .. import metrics as M

    if spec is None or isinstance(spec, (str, int, float)):
        return spec
    if isinstance(spec, list):
        return [_restore_fn(s, custom, what) for s in spec]
    if "__dict__" in spec:
        return {k: _restore_fn(v, custom, what) for k, v in spec["__dict__"].items()}
    if "__loss__" in spec:
        return L.get(spec["__loss__"])
    if "__metric__" in spec:
        return M.get(spec["__metric__"])
    if "__callable__" in spec:
        from ..models.serialization import custom_objects
        name = spec["__callable__"]
        reg = {**custom_objects(), **(custom or {})}
        if name in reg:
            return reg[name]
        for mod in (L, M):
            fn = getattr(mod, name, None)
            if callable(fn):
                return fn
        raise ValueError(f"the saved model uses a custom {what} {name!r}: pass it to load_model in "
                         f"custom_objects={{'{name}': fn}} or decorate it with @register_serializable()")
    raise ModelFileError(f"unreadable {what} entry {spec!r} in compile.json")


def load_model(path, custom_objects=None, compile=True):
    """Read a file written by ``model.save`` / ``save_model``, on the current backend.

    Restores the architecture, weights and (``compile=True``) the compile
    settings and optimizer state, so ``fit`` goes on where it stopped.
    Raises FileNotFoundError, ModelFileError (not a deepgpu model file,
    truncated, damaged), ValueError (unknown layer class, weights that do not
    fit); nothing is half-loaded.
    """
    from .. import optimizers as O
    from ..models.serialization import deserialize_layer

    ar = _Archive(path)
    if ar.meta["format"] != _MODEL:
        raise ModelFileError(f"{ar.path!r} holds only weights (save_weights); build the model in code and call "
                             f"model.load_weights({ar.path!r})")
    cfg = ar.json("config.json")
    manifest, arrays = ar.weights()
    compile_spec = ar.json("compile.json") if (compile and "compile.json" in ar.members) else None
    opt_state = ar.arrays("optimizer.npz") if (compile_spec and "optimizer.npz" in ar.members) else None
    model = deserialize_layer(cfg, custom_objects)
    _check_fit(model, manifest, arrays, ar.path)
    if compile_spec is not None:
        opt = O.get(compile_spec["optimizer"])
        model.compile(optimizer=opt, loss=_restore_fn(compile_spec["loss"], custom_objects, "loss"),
                      metrics=_restore_fn(compile_spec["metrics"], custom_objects, "metric"),
                      loss_weights=compile_spec.get("loss_weights"),
                      cuda_graph=bool(compile_spec.get("cuda_graph", False)))
        if opt_state is not None:
            opt.set_weights(opt_state, var_list=model._vars_to_train())
    _assign_all(model, arrays)
    return model


def load_weights(model, path) -> None:
    """Set ``model``'s weights from a file written by ``save_weights`` or ``save_model``.

    Weights are matched by order; the count and every shape are checked
    first (ValueError naming the weight), so a mismatch changes nothing.
    """
    ar = _Archive(path)
    manifest, arrays = ar.weights()
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built yet: build it (call it on data or give it an "
                         f"input shape) before loading weights into it")
    _check_fit(model, manifest, arrays, ar.path)
    _assign_all(model, arrays)
