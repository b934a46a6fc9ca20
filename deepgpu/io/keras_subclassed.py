"""Keras 3 ``.weights.h5`` files of subclassed models (and of layers holding layers).

Keras 3 addresses such weights by attribute: a layer held as ``self.inp`` has its
variables under ``inp/vars/0, 1...``; layers in a list or dict ``self.blocks`` under
``blocks/<class name in snake case>[_n]/vars/...`` (numbered per container, nested
containers as ``container[_n]``); attributes are visited in sorted order with private
ones last, a layer reached twice is written once, and a model's ``layers`` list counts
as one of its public attributes. The model's own variables sit at ``vars``. What a
compiled Keras model adds (optimizer, metrics) is not written, and ignored on reading.
"""
from __future__ import annotations

import io as _io
import os

from .keras import HDF5_MAGIC, KerasFileError, _h5py, _keras_snake, _read_dataset, _weights_limit
from .native import atomic_write, reading

_BASE_ATTRS = None


def _base_attrs():
    """Attributes every deepgpu Layer / Model has: not the user's, so not walked."""
    global _BASE_ATTRS
    if _BASE_ATTRS is None:
        from ..layers.base import Layer
        from ..models.model import Model
        _BASE_ATTRS = frozenset(vars(Layer(name="probe"))) | frozenset(vars(Model(name="probe")))
    return _BASE_ATTRS


def _name_key(name):
    return f"~{name}" if name.startswith("_") else name  # Keras visits private attributes last


def _unique(name, used):
    if name in used:
        used[name] += 1
        return f"{name}_{used[name]}"
    used[name] = 0
    return name


def _own(layer):
    from ..models.model import Model
    from ..registry import lookup_class
    if isinstance(layer, Model):
        return list(layer._weights)
    try:
        builtin = lookup_class(type(layer).__name__) is type(layer) and type(layer).__module__.startswith("deepgpu.")
    except ValueError:
        builtin = False
    # a library layer keeps all its variables itself, in Keras's order; a user's layer only its own
    return list(layer.weights) if builtin and not layer._sublayers() else list(layer._weights)


def keras_paths(model) -> list:
    """``[(group path, [its own Variables])]`` for ``model`` and every layer it holds, as Keras
    3 lays out a subclassed model's weights file."""
    from ..layers.base import Layer
    from ..models.model import Model

    out, seen = [], set()

    def walk(obj, path):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        out.append((path, _own(obj)))
        attrs = {k: v for k, v in vars(obj).items() if k not in _base_attrs()}
        if isinstance(obj, Model):
            attrs.setdefault("layers", obj.layers)
        for key in sorted(attrs, key=_name_key):
            value = attrs[key]
            sub = f"{path}/{key}" if path else key
            if isinstance(value, Layer):
                walk(value, sub)
            elif isinstance(value, (list, tuple, dict)):
                container(value, sub, set())

    def container(c, path, seen_containers):
        if id(c) in seen_containers:
            return
        seen_containers.add(id(c))
        used = {}
        for item in (list(c.values()) if isinstance(c, dict) else c):
            if isinstance(item, Layer):
                walk(item, f"{path}/{_unique(_keras_snake(type(item).__name__), used)}")
            elif isinstance(item, (list, tuple, dict)):
                container(item, f"{path}/{_unique('container', used)}", seen_containers)

    walk(model, "")
    return out


def weights_h5(model) -> bytes:
    """The bytes of ``model``'s weights in Keras 3's layout for subclassed models."""
    h5py = _h5py()
    buf = _io.BytesIO()
    with h5py.File(buf, "w") as f:
        for group_path, weights in keras_paths(model):
            g = f.require_group(f"{group_path}/vars" if group_path else "vars")
            for i, w in enumerate(weights):
                g.create_dataset(str(i), data=w.data_sync())
    return buf.getvalue()


def save(model, path) -> None:
    """Write ``model``'s weights in Keras 3's layout for subclassed models (atomic)."""
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built yet, so it has no weights to save")
    data = weights_h5(model)
    atomic_write(path, lambda fh: fh.write(data))


def read_weights(model, h5bytes, path) -> list:
    """``[(Variable, array)]`` for ``model`` from the bytes of a weights file in that layout,
    every array read and checked (KerasFileError naming ``path`` and the group otherwise)."""
    h5py = _h5py()
    pairs = []
    with h5py.File(_io.BytesIO(h5bytes), "r") as f:
        for group_path, weights in keras_paths(model):
            where = f"{group_path}/vars" if group_path else "vars"
            if not weights:
                continue
            g = f.get(where)
            if g is None or not isinstance(g, h5py.Group):
                raise KerasFileError(f"{path!r} has no {where!r}: the file was not written for model "
                                     f"{model.name!r} ({type(model).__name__}), whose layer at {group_path!r} "
                                     f"holds {len(weights)} weight(s)")
            if len(g) != len(weights):
                raise KerasFileError(f"{path!r}: {where!r} holds {len(g)} arrays, model {model.name!r} has "
                                     f"{len(weights)} weight(s) there ({[w.name for w in weights]})")
            for i, w in enumerate(weights):
                pairs.append((w, _read_dataset(g.get(str(i)), w, f"{where}/{i}", path)))
    return pairs


def load(model, path) -> None:
    """Set ``model``'s weights from a Keras 3 ``.weights.h5`` file of a subclassed model, matched by
    attribute path; everything is read and checked first (KerasFileError naming the path)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built yet: build it before loading weights into it")
    with reading(path) as ctx:
        ctx.what = "the HDF5 weights"
        with open(path, "rb") as fh:
            if fh.read(8) != HDF5_MAGIC:
                raise KerasFileError(f"{path!r} is not an HDF5 file, so not a Keras .weights.h5 file")
        if os.path.getsize(path) > _weights_limit(model):
            raise KerasFileError(f"{path!r} is {os.path.getsize(path)} bytes, far more than the weights of "
                                 f"model {model.name!r} need")
        with open(path, "rb") as fh:
            pairs = read_weights(model, fh.read(), path)
    for w, a in pairs:
        w.assign(a)
