"""Every loader fed thousands of damaged files: each loads, or raises ModelFileError with one line
naming the file; nothing else escapes, and a failed ``load_weights`` changes nothing.

Damage comes at three levels (hypothesis draws it): bytes (flips, overwrites, cuts, insertions,
deletions), the members of the zip containers (dropped, damaged, added), and the JSON inside (any
value replaced by another, any key or item dropped). HDF5 is damaged through h5py (datasets
dropped, reshaped, retyped or replaced by groups; attributes rewritten) and by truncation, not by
arbitrary byte edits: libhdf5 itself can loop forever on some of those (reading a variable-length
string attribute whose heap address was hit), which no caller can guard against, and a ``.keras``
file's zip CRC stops byte damage before HDF5 sees it.

The examples are derandomized and bounded by ``max_examples`` (no deadlines), so CI runs the same
files every time; all of them together take about a minute on two cores.
"""
from __future__ import annotations

import functools
import io
import json
import os
import zipfile

import h5py
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import deepgpu as dg  # noqa: E402
from deepgpu import Input, Model  # noqa: E402
from deepgpu.io import ModelFileError, load_keras, load_tfjs, save_keras, save_tfjs  # noqa: E402
from deepgpu.layers import Add, BatchNormalization, Dense  # noqa: E402


def fuzz(n):
    return settings(max_examples=n, derandomize=True, database=None, deadline=None, print_blob=True,
                    suppress_health_check=list(HealthCheck))


def _model(seed=0):
    dg.set_seed(seed)
    inp = Input((3,), name="x")
    h = BatchNormalization()(Dense(4, activation="relu")(inp))
    out = Add()([Dense(2)(h), Dense(2, activation="tanh")(h)])
    m = Model(inp, out, name="fz")
    m.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(seed)
    m.fit(rng.random((8, 3), dtype=np.float32), rng.random((8, 2), dtype=np.float32), epochs=1, verbose=0)
    return m


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """The valid files every example damages: {kind: bytes or {name: bytes}}, and a scratch folder."""
    d = tmp_path_factory.mktemp("fuzz")
    m = _model()
    m.save(d / "m.dgm")
    m.save_weights(d / "w.dgw")
    save_tfjs(m, d / "tfjs")
    save_keras(m, d / "m.keras")
    with zipfile.ZipFile(d / "m.keras") as z:
        keras = {n: z.read(n) for n in z.namelist()}
    out = {"dgm": (d / "m.dgm").read_bytes(), "dgw": (d / "w.dgw").read_bytes(),
           "tfjs": {n: (d / "tfjs" / n).read_bytes() for n in os.listdir(d / "tfjs")},
           "keras": keras, "h5": _legacy_h5(m, d / "m.h5"), "dir": d / "work", "model": m}
    out["dir"].mkdir()
    return _Seeds(out)


class _Seeds(dict):
    def __repr__(self):  # hypothesis prints the arguments of a failing example: not these bytes
        return "seeds"


def _legacy_h5(model, path):
    """tf.keras 2's whole-model .h5 layout: model_config attribute, model_weights/<layer>/<weight>."""
    from deepgpu.io.keras import _keras_model
    spec = _keras_model(model)
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(spec)
        g = f.create_group("model_weights")
        named = [l for l in model.layers if l.weights]
        g.attrs["layer_names"] = [l.name.encode() for l in named]
        for layer in named:
            lg = g.create_group(layer.name)
            names = [f"{layer.name}/{w.name.split('/')[-1]}:0" for w in layer.weights]
            lg.attrs["weight_names"] = [n.encode() for n in names]
            for n, w in zip(names, layer.weights):
                lg.create_dataset(n, data=w.data_sync())
    return path.read_bytes()


# ------------------------------------------------------------------ damage
def _bytes_damage(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for op, pos, arg in ops:
        if not b:
            break
        pos %= len(b)
        if op == "flip":
            b[pos] ^= 1 << (arg % 8)
        elif op == "set":
            b[pos] = arg % 256
        elif op == "cut":
            del b[pos:]
        elif op == "insert":
            b[pos:pos] = bytes([arg % 256]) * (1 + arg % 7)
        elif op == "delete":
            del b[pos:pos + 1 + arg % 64]
        elif op == "zero":
            b[pos:pos + 1 + arg % 64] = bytes(len(b[pos:pos + 1 + arg % 64]))
    return bytes(b)


byte_ops = st.lists(st.tuples(st.sampled_from(["flip", "set", "cut", "insert", "delete", "zero"]),
                              st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=4)

_WORDS = ["", "x", "Dense", "InputLayer", "Sequential", "Functional", "Model", "float32", "int32",
          "complex64", "<U3", "relu", "layers-model", "graph-model", "deepgpu.model", "deepgpu.weights",
          "dense", "dense/kernel", "config", "class_name", "group1-shard1of1.bin", "../m.dgm", "uint8"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 40) | st.floats(-100, 100)
    | st.sampled_from([float("nan"), float("inf"), 2 ** 63, -(2 ** 31)]) | st.sampled_from(_WORDS),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_WORDS), inner, max_size=3),
    max_leaves=6)


def _places(node, out):
    """Every (container, key) in a JSON tree."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        out.append((node, k))
        _places(v, out)
    return out


@st.composite
def json_damage(draw, text: bytes) -> bytes:
    try:
        doc = json.loads(text)
    except ValueError:  # already damaged as bytes
        return text
    for _ in range(draw(st.integers(1, 3))):
        places = _places(doc, [])
        if not places:
            doc = draw(json_values)
            break
        parent, key = places[draw(st.integers(0, len(places) - 1))]
        if draw(st.booleans()):
            parent[key] = draw(json_values)
        elif isinstance(parent, dict):
            del parent[key]
        else:
            parent.pop(key)
    return json.dumps(doc).encode()


@st.composite
def zip_damage(draw, members: dict) -> bytes:
    """A zip of ``members`` with one to three of them dropped, damaged or added; valid CRCs."""
    members = dict(members)
    names = sorted(members)
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(names))
        how = draw(st.sampled_from(["json", "json", "bytes", "drop", "add"]))
        if how == "drop":
            members.pop(name, None)
        elif how == "add":
            members[draw(st.sampled_from(names + ["extra.bin"]))] = draw(st.binary(max_size=64))
        elif name in members:
            data = members[name]
            if how == "json" and name.endswith(".json"):
                members[name] = draw(json_damage(data))
            else:
                members[name] = _bytes_damage(data, draw(byte_ops))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for n, data in members.items():
            z.writestr(n, data)
    return buf.getvalue()


def _members(data: bytes) -> dict:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


def _loads_or_says_why(load, path):
    """``load()`` returns, or raises ModelFileError in one line naming ``path``."""
    try:
        return load()
    except ModelFileError as e:
        msg = str(e)
        assert "\n" not in msg, msg
        assert os.path.basename(os.fspath(path)) in msg, msg
        return None


# ------------------------------------------------------------------ native
@fuzz(600)
@given(data=st.data())
def test_load_model_bytes(seeds, data):
    path = seeds["dir"] / "b.dgm"
    path.write_bytes(_bytes_damage(seeds["dgm"], data.draw(byte_ops)))
    _loads_or_says_why(lambda: dg.models.load_model(path), path)


@fuzz(1000)
@given(data=st.data())
def test_load_model_members(seeds, data):
    path = seeds["dir"] / "m.dgm"
    path.write_bytes(data.draw(zip_damage(_members(seeds["dgm"]))))
    _loads_or_says_why(lambda: dg.models.load_model(path), path)


@fuzz(1000)
@given(data=st.data())
def test_load_weights_changes_nothing_when_it_fails(seeds, data):
    path = seeds["dir"] / "w.dgw"
    if data.draw(st.booleans()):
        path.write_bytes(data.draw(zip_damage(_members(seeds["dgw"]))))
    else:
        path.write_bytes(_bytes_damage(seeds["dgw"], data.draw(byte_ops)))
    m = seeds["model"]
    before = m.get_weights()
    try:
        m.load_weights(path)
    except ModelFileError as e:
        assert "\n" not in str(e) and "w.dgw" in str(e), str(e)
        for a, b in zip(before, m.get_weights()):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ TF.js
@fuzz(1200)
@given(data=st.data())
def test_load_tfjs(seeds, data):
    folder = seeds["dir"] / "tfjs"
    folder.mkdir(exist_ok=True)
    files = dict(seeds["tfjs"])
    for _ in range(data.draw(st.integers(1, 2))):
        name = data.draw(st.sampled_from(sorted(files)))
        how = data.draw(st.sampled_from(["json", "json", "bytes", "drop"] if name == "model.json"
                                        else ["bytes", "drop"]))
        if how == "drop":
            files.pop(name, None)
        elif name in files:
            files[name] = (data.draw(json_damage(files[name])) if how == "json"
                           else _bytes_damage(files[name], data.draw(byte_ops)))
    for n in os.listdir(folder):
        os.unlink(folder / n)
    for n, b in files.items():
        (folder / n).write_bytes(b)
    _loads_or_says_why(lambda: load_tfjs(folder), folder)


# ------------------------------------------------------------------ Keras
@functools.lru_cache(maxsize=4)
def _h5_layout(data: bytes, top: str):
    """The dataset and group paths under ``top`` of an HDF5 file."""
    datasets, groups = [], [top]
    with h5py.File(io.BytesIO(data), "r") as f:
        f[top].visititems(lambda n, o: (datasets if isinstance(o, h5py.Dataset) else groups).append(f"{top}/{n}"))
    return datasets, groups


@st.composite
def h5_damage(draw, data: bytes, top: str) -> bytes:
    """The HDF5 file ``data`` edited through h5py (in a copy) with one to three things changed under
    ``top``: a dataset dropped, reshaped, retyped or replaced by a group, an attribute rewritten, a
    dataset added."""
    datasets, groups = _h5_layout(data, top)
    buf = io.BytesIO(data)
    with h5py.File(buf, "r+") as f:
        for _ in range(draw(st.integers(1, 3))):
            how = draw(st.sampled_from(["drop", "reshape", "retype", "group", "attr", "extra"]))
            if how in ("drop", "reshape", "retype", "group"):
                names = [n for n in datasets if isinstance(f.get(n), h5py.Dataset)]
                if not names:
                    continue
                name = draw(st.sampled_from(names))
                old = np.asarray(f[name][()])
                if old.dtype.kind not in "biuf":
                    old = np.zeros(old.shape, np.float32)
                del f[name]
                if how == "reshape":
                    f[name] = np.zeros(draw(st.lists(st.integers(0, 5), max_size=3)), np.float32)
                elif how == "retype":
                    kind = draw(st.sampled_from(["complex64", "int64", "float64", "bool", "S3"]))
                    f[name] = old.astype(kind) if kind != "S3" else np.full(old.shape, b"abc")
                elif how == "group":
                    f.create_group(name)
            else:
                owners = [g for g in groups if isinstance(f.get(g), h5py.Group)] or ["/"]
                owner = f[draw(st.sampled_from(owners))]
                if how == "attr":
                    key = draw(st.sampled_from(sorted(owner.attrs) + ["layer_names", "weight_names"]))
                    owner.attrs[key] = draw(st.sampled_from([b"", b"nope", "x", 3, [b"dense"], [b"a", b"b"],
                                                             np.zeros(2, np.float32)]))
                else:
                    name = draw(st.sampled_from(["0", "1", "9", "extra"]))
                    if name not in owner:
                        owner.create_dataset(name, data=[1.0])
    return buf.getvalue()


@fuzz(700)
@given(data=st.data())
def test_load_keras_members(seeds, data):
    path = seeds["dir"] / "m.keras"
    members = dict(seeds["keras"])
    if data.draw(st.booleans()):
        members["model.weights.h5"] = data.draw(h5_damage(members["model.weights.h5"], "layers"))
    if data.draw(st.booleans()):
        blob = data.draw(zip_damage(members))
    else:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for n, b in members.items():
                z.writestr(n, b)
        blob = buf.getvalue()
        if data.draw(st.booleans()):
            blob = _bytes_damage(blob, data.draw(byte_ops))
    path.write_bytes(blob)
    _loads_or_says_why(lambda: load_keras(path), path)


@fuzz(500)
@given(data=st.data())
def test_load_keras_legacy_h5(seeds, data):
    path = seeds["dir"] / "m.h5"
    blob = seeds["h5"]
    how = data.draw(st.sampled_from(["structure", "structure", "config", "cut"]))
    if how == "structure":
        blob = data.draw(h5_damage(blob, "model_weights"))
    elif how == "config":
        with h5py.File(io.BytesIO(blob), "r") as f:
            text = f.attrs["model_config"]
        text = data.draw(json_damage(text.encode() if isinstance(text, str) else text))
        buf = io.BytesIO(blob)
        with h5py.File(buf, "r+") as f:
            f.attrs["model_config"] = text.decode()
        blob = buf.getvalue()
    else:
        blob = blob[:data.draw(st.integers(0, len(blob) - 1))]
    path.write_bytes(blob)
    _loads_or_says_why(lambda: load_keras(path), path)


# ------------------------------------------------------------------ not a model at all
@pytest.mark.parametrize("content", [b"", b"hello, world\n", b"\x89PNG\r\n\x1a\n" + bytes(64),
                                     b"PK\x05\x06" + bytes(18), b"\x89HDF\r\n\x1a\n" + bytes(40),
                                     bytes(range(256)) * 4], ids=["empty", "text", "png", "empty-zip",
                                                                  "hdf5-header", "binary"])
def test_a_file_that_is_not_a_model_says_so_in_one_line(tmp_path, content):
    path = tmp_path / "thing.bin"
    path.write_bytes(content)
    m = _model()
    folder = tmp_path / "web"
    folder.mkdir()
    (folder / "model.json").write_bytes(content)
    for load, p in [(lambda: dg.models.load_model(path), path), (lambda: m.load_weights(path), path),
                    (lambda: load_keras(path), path), (lambda: load_tfjs(folder), folder)]:
        with pytest.raises(ModelFileError) as e:
            load()
        msg = str(e.value)
        assert "\n" not in msg and os.path.basename(p) in msg and "not" in msg, msg
