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

Writes go to a temporary file beside the target (``.deepgpu-<name>.<hex>.tmp``)
and are renamed over it only when complete, so a crash mid-save leaves the
previous file intact; the next save of the same target removes what an
interrupted one left (``_atomic``). Loading reads each member within a size
limit (JSON members up to ``JSON_LIMIT`` bytes; arrays up to what the manifest's
shapes need) and checks everything (members, JSON, classes, weight count,
shapes and dtypes) before it changes anything. Whatever is wrong with the file,
the error is a ``ModelFileError``.
"""
from __future__ import annotations

import contextlib
import io as _io
import json
import math
import os
import zipfile

import numpy as np

from . import _atomic

FORMAT_VERSION = 1
_MODEL = "deepgpu.model"
_WEIGHTS = "deepgpu.weights"
# No JSON member deepgpu, TF.js or Keras writes comes near this; a larger one is damage.
JSON_LIMIT = 16 << 20
# Room for one array's .npy header and zip entry beside its data.
_ARRAY_SLACK = 64 << 10


class ModelFileError(ValueError):
    """A file that cannot be loaded: damaged, truncated, of another kind, or with weights that do not
    fit the model. Every loader (``load_model``, ``load_weights``, ``load_tfjs``, ``load_keras``)
    raises this type, and no other, for a bad file; the message is one line naming the file and the
    problem."""


def _one_line(e) -> str:
    return " ".join(str(e).split()) or type(e).__name__


class _Reading:
    what = "the file"  # the part being read, for errors raised from inside a library


@contextlib.contextmanager
def reading(path):
    """Context of a loader: any exception that a bad ``path`` makes a parser raise (``zlib.error``,
    ``zipfile`` and h5py errors, ``KeyError``, ``TypeError``, ...) leaves it as a ModelFileError
    naming ``path``. Set ``.what`` of the yielded object to name the part being read."""
    ctx = _Reading()
    try:
        yield ctx
    except ModelFileError as e:
        msg = _one_line(e)
        if msg != str(e) or os.fspath(path) not in msg:
            raise type(e)(msg if os.fspath(path) in msg else f"{os.fspath(path)!r}: {msg}") from None
        raise
    except (FileNotFoundError, PermissionError, MemoryError, ImportError):
        raise  # not the file's content: a missing file, no access, no memory, no h5py
    except ValueError as e:  # deepgpu's own checks (an unknown layer class, ...) and numpy's
        msg = _one_line(e)
        raise ModelFileError(msg if os.fspath(path) in msg else f"{os.fspath(path)!r}: {msg}") from None
    except Exception as e:
        kind = type(e).__qualname__ if type(e).__module__ == "builtins" else \
            f"{type(e).__module__}.{type(e).__qualname__}"
        raise ModelFileError(f"{os.fspath(path)!r} is damaged ({ctx.what}): {kind}: {_one_line(e)}") from e


# ------------------------------------------------------------------ writing
def _npz_bytes(arrays) -> bytes:
    buf = _io.BytesIO()
    np.savez(buf, **{f"w{i:05d}": np.asarray(a) for i, a in enumerate(arrays)})
    return buf.getvalue()


def _atomic_zip(path, members: dict) -> None:
    """Write ``members`` (name -> bytes) as a zip at ``path`` atomically; first remove what
    interrupted saves of ``path`` left."""
    def write(f):
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for name, data in members.items():
                z.writestr(name, data)

    atomic_write(path, write)


def atomic_write(path, write) -> None:
    """Have ``write(f)`` fill a temporary beside ``path``, then move it over ``path`` in one step;
    first remove what interrupted saves of ``path`` left."""
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot save to {path!r}: folder {folder!r} does not exist")
    _atomic.clean(path)
    tmp, fd = _atomic.create_temp(path)
    f = os.fdopen(fd, "wb")
    try:
        write(f)
        _atomic.replace_file(f, tmp, path)
    except BaseException:
        _atomic.discard(tmp, None)
        f.close()
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
    from ..registry import custom_objects

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
            "weighted_metrics": _fn_name(cc.get("weighted_metrics"), "metric"),
            "cuda_graph": cc.get("cuda_graph", "auto")}
    out = {"compile.json": json.dumps(spec).encode()}
    if model.optimizer.built:
        # Only this model's slots, in the order load_model builds them: what
        # set_weights(state, var_list=model._vars_to_train()) accepts.
        out["optimizer.npz"] = _npz_bytes(model.optimizer.get_weights_for(model._vars_to_train()))
    return out


def save_model(model, path, include_optimizer=True) -> None:
    """Write ``model`` (architecture, weights, compile settings, optimizer state) to one zip file.

    Raises NotImplementedError for a subclassed model (no architecture
    config: use ``save_weights``), ValueError for an unbuilt model.
    """
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built yet: call it on data or give it an input shape "
                         f"before saving")
    from ..registry import serialize_layer

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
def real_dtype(name, where):
    """The numpy dtype a file names for an array; ModelFileError unless a real number or bool type."""
    try:
        dt = np.dtype(name) if isinstance(name, str) else None
    except TypeError:
        dt = None
    if dt is None or dt.kind not in "biuf":
        raise ModelFileError(f"{where}: dtype {name!r} is not a real number type (weights are float, int "
                             f"or bool)")
    return dt


def shape_of(value, where):
    """A shape a file gives: a list of non-negative ints, as a tuple; ModelFileError otherwise."""
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise ModelFileError(f"{where}: shape {value!r} is not a list of non-negative integers")
    return tuple(value)


def fits(weight, dtype) -> bool:
    """Whether values of ``dtype`` may be loaded into ``weight``: float into float, int or bool into
    int or bool (cast to the weight's own dtype)."""
    floating = np.dtype(weight.dtype).kind == "f"
    return dtype.kind == "f" if floating else dtype.kind in "biu"


def _npy(data: bytes, where):
    """The array in .npy bytes; the header (shape, dtype) is checked against the data's length before
    anything is allocated."""
    fp = _io.BytesIO(data)
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    else:
        raise ModelFileError(f"{where}: .npy format version {version} is not one numpy writes for numbers")
    if dtype.kind not in "biuf" or dtype.hasobject:
        raise ModelFileError(f"{where}: holds an array of dtype {dtype}, not real numbers")
    count = math.prod(shape)
    if count * dtype.itemsize != len(data) - fp.tell():
        raise ModelFileError(f"{where}: its header promises {shape} {dtype} ({count * dtype.itemsize} bytes), "
                             f"it holds {len(data) - fp.tell()} bytes")
    a = np.frombuffer(data, dtype, count, offset=fp.tell())
    return a.reshape(shape[::-1]).T if fortran else a.reshape(shape)


class _Archive:
    """An open deepgpu file: members read on demand, each within a size limit."""

    def __init__(self, path, ctx):
        self.path, self.ctx = path, ctx
        try:
            self.zip = zipfile.ZipFile(path)
        except zipfile.BadZipFile as e:
            raise ModelFileError(f"{path!r} is not a deepgpu file: not a complete zip archive ({e}); "
                                 f"it may be truncated or of another type") from None
        self.infos = {i.filename: i for i in self.zip.infolist()}
        if "deepgpu.json" not in self.infos:
            hint = ""
            if "config.json" in self.infos and "model.weights.h5" in self.infos:
                hint = " (it looks like a Keras 3 .keras file: use deepgpu.io.load_keras)"
            raise ModelFileError(f"{path!r} is a zip file but not a deepgpu file: it has no deepgpu.json{hint}")
        self.meta = self.json("deepgpu.json")
        if not isinstance(self.meta, dict):
            raise ModelFileError(f"{path!r}: deepgpu.json is not a JSON object")
        fmt, version = self.meta.get("format"), self.meta.get("format_version", 0)
        if fmt not in (_MODEL, _WEIGHTS):
            raise ModelFileError(f"{path!r}: unknown format {fmt!r} in deepgpu.json")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ModelFileError(f"{path!r}: format_version {version!r} in deepgpu.json is not a number")
        if version > FORMAT_VERSION:
            raise ModelFileError(f"{path!r} was written by a newer deepgpu (format version {version}, this "
                                 f"one reads up to {FORMAT_VERSION})")

    def read(self, name, limit):
        if name not in self.infos:
            raise ModelFileError(f"{self.path!r} is incomplete: member {name!r} is missing")
        info = self.infos[name]
        if info.file_size > limit:
            raise ModelFileError(f"{self.path!r}: member {name!r} unpacks to {info.file_size} bytes, more than "
                                 f"the {limit} it can need; the file is damaged")
        self.ctx.what = f"member {name!r}"
        return self.zip.read(info)  # zipfile stops at the checked file_size

    def json(self, name):
        try:
            return json.loads(self.read(name, JSON_LIMIT).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelFileError(f"{self.path!r}: member {name!r} is not valid JSON ({e})") from None

    def arrays(self, name, limit, expect=None):
        """The arrays ``w00000``, ``w00001``, ... of an .npz member. With ``expect`` (the manifest's
        ``(name, shape, dtype)``), each one's header is checked against it before its data is read."""
        where = f"{self.path!r} member {name!r}"
        try:
            inner = zipfile.ZipFile(_io.BytesIO(self.read(name, limit)))
        except zipfile.BadZipFile as e:
            raise ModelFileError(f"{where} is damaged: not an .npz archive ({e})") from None
        with inner:
            infos = {i.filename: i for i in inner.infolist()}
            keys = [f"w{i:05d}.npy" for i in range(len(infos))]
            if sorted(infos) != keys:
                raise ModelFileError(f"{where} is damaged: it holds {sorted(infos)[:4]}..., not the arrays "
                                     f"w00000.npy, w00001.npy, ... in order")
            if expect is not None and len(keys) != len(expect):
                raise ModelFileError(f"{self.path!r}: weights.json lists {len(expect)} weights, {name} holds "
                                     f"{len(keys)}")
            if sum(i.file_size for i in infos.values()) > limit:
                raise ModelFileError(f"{where} is damaged: its arrays unpack to more than {limit} bytes")
            out = []
            for i, key in enumerate(keys):
                a = _npy(inner.read(infos[key]), f"{where} array {key}")
                if expect is not None:
                    wname, shape, dtype = expect[i]
                    if a.shape != shape or a.dtype != dtype:
                        raise ModelFileError(
                            f"{self.path!r}: weight {wname!r} is {dtype} {shape} in weights.json but "
                            f"{a.dtype} {a.shape} in {name}")
                out.append(a)
        return out

    def manifest(self):
        """weights.json checked: ``[(name, shape, dtype)]``."""
        m = self.json("weights.json")
        where = f"{self.path!r} weights.json"
        if not isinstance(m, list) or not all(isinstance(e, dict) for e in m):
            raise ModelFileError(f"{where} is not a list of {{name, shape, dtype}} objects")
        out = []
        for i, e in enumerate(m):
            name = e.get("name")
            if not isinstance(name, str):
                raise ModelFileError(f"{where}: entry {i} has no name")
            out.append((name, shape_of(e.get("shape"), f"{where} weight {name!r}"),
                        real_dtype(e.get("dtype"), f"{where} weight {name!r}")))
        return out

    def weights(self, model):
        """The weight arrays, checked against the manifest and ``model`` and cast to its weights' dtypes."""
        manifest = self.manifest()
        _check_fit(model, manifest, self.path)
        need = sum(math.prod(shape) * dt.itemsize + _ARRAY_SLACK for _, shape, dt in manifest) + _ARRAY_SLACK
        arrays = self.arrays("weights.npz", need, manifest)
        return [a.astype(w.dtype) for w, a in zip(model.weights, arrays)]


@contextlib.contextmanager
def _archive(path):
    """The open, checked archive at ``path``, inside ``reading(path)``."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    if os.path.isdir(path):
        raise ModelFileError(f"{path!r} is a folder, not a deepgpu file (for a TF.js model.json folder use "
                             f"deepgpu.io.load_tfjs)")
    with reading(path) as ctx:
        ar = _Archive(path, ctx)
        with ar.zip:
            yield ar


def _check_fit(model, manifest, path):
    ws = model.weights
    if len(ws) != len(manifest):
        raise ModelFileError(
            f"the weights in {path!r} do not fit model {model.name!r}: the file has {len(manifest)} weight "
            f"arrays ({[m[0] for m in manifest][:6]}...), the model has {len(ws)}")
    for w, (name, shape, dtype) in zip(ws, manifest):
        if shape != tuple(w.shape):
            raise ModelFileError(
                f"the weights in {path!r} do not fit model {model.name!r}: weight {name!r} in the file "
                f"has shape {shape}, the model's {w.name!r} has {tuple(w.shape)}")
        if not fits(w, dtype):
            raise ModelFileError(
                f"the weights in {path!r} do not fit model {model.name!r}: weight {name!r} in the file "
                f"is {dtype}, the model's {w.name!r} is {w.dtype}")


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
        from ..registry import custom_objects
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
    Raises FileNotFoundError, or ModelFileError for anything wrong with the
    file (not a deepgpu model file, truncated, damaged, an unknown layer
    class, weights that do not fit).
    """
    from .. import optimizers as O
    from ..registry import deserialize_layer

    with _archive(path) as ar:
        if ar.meta["format"] != _MODEL:
            raise ModelFileError(f"{ar.path!r} holds only weights (save_weights); build the model in code and "
                                 f"call model.load_weights({ar.path!r})")
        cfg = ar.json("config.json")
        compile_spec = ar.json("compile.json") if (compile and "compile.json" in ar.infos) else None
        ar.ctx.what = "the architecture in config.json"
        model = deserialize_layer(cfg, custom_objects)
        arrays = ar.weights(model)
        if compile_spec is not None:
            ar.ctx.what = "the compile settings in compile.json"
            opt = O.get(compile_spec["optimizer"])
            model.compile(optimizer=opt, loss=_restore_fn(compile_spec["loss"], custom_objects, "loss"),
                          metrics=_restore_fn(compile_spec["metrics"], custom_objects, "metric"),
                          loss_weights=compile_spec.get("loss_weights"),
                          weighted_metrics=_restore_fn(compile_spec.get("weighted_metrics"), custom_objects, "metric"),
                          cuda_graph=compile_spec.get("cuda_graph", "auto"))
            if "optimizer.npz" in ar.infos:
                # Slots are a few per weight (Adam's two; three with amsgrad) and a counter.
                need = 4 * sum(int(a.nbytes) + _ARRAY_SLACK for a in arrays) + 4 * _ARRAY_SLACK
                ar.ctx.what = "the optimizer state in optimizer.npz"
                opt.set_weights(ar.arrays("optimizer.npz", need), var_list=model._vars_to_train())
        _assign_all(model, arrays)
    return model


def load_weights(model, path) -> None:
    """Set ``model``'s weights from a file written by ``save_weights`` or ``save_model``.

    Weights are matched by order; the count, every shape and dtype are
    checked and every array read before the first is assigned, so a bad or
    non-fitting file (ModelFileError, naming the weight) changes nothing.
    """
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built yet: build it (call it on data or give it an "
                         f"input shape) before loading weights into it")
    with _archive(path) as ar:
        arrays = ar.weights(model)
        _assign_all(model, arrays)
