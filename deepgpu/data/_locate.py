"""Finding the four MNIST-style IDX files on disk, and saying where we looked."""
from __future__ import annotations

import os

import numpy as np

from .idx import load_idx

# The standard names; ".gz" or not, and the "train-images.idx3-ubyte" spelling
# some archives use, are all accepted.
FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
ENV_VAR = "DEEPGPU_DATA"


def _variants(stem):
    dotted = stem.replace("-idx", ".idx")
    return [stem + ".gz", stem, dotted + ".gz", dotted]


def _find_in(folder):
    """{key: file path} for the four files in ``folder``, and the list of missing stems."""
    found, missing = {}, []
    for key, stem in FILES.items():
        for name in _variants(stem):
            p = os.path.join(folder, name)
            if os.path.isfile(p):
                found[key] = p
                break
        else:
            missing.append(stem)
    return found, missing


def candidate_folders(path, subdir, system_dirs, keras_root=False):
    """The folders searched, in order: ``path`` (and ``path/subdir``) when given,
    otherwise ``$DEEPGPU_DATA`` (and its ``subdir``), the system folders and
    Keras's cache ``~/.keras/datasets/subdir`` (and ``~/.keras/datasets`` itself
    when ``keras_root``, where Keras keeps ``mnist.npz``)."""
    if path is not None:
        p = os.fspath(path)
        return [p, os.path.join(p, subdir)]
    out = []
    env = os.environ.get(ENV_VAR)
    if env:
        out += [env, os.path.join(env, subdir)]
    out += list(system_dirs)
    keras = os.path.join(os.path.expanduser("~"), ".keras", "datasets")
    out += [keras] if keras_root else []
    out.append(os.path.join(keras, subdir))
    return out


def load_mnist_like(title, path, subdir, system_dirs, how_to_get, npz_name=None):
    """Load the four IDX files of an MNIST-style dataset from the first folder
    that holds all four (or a Keras ``npz_name`` archive); FileNotFoundError
    listing every folder looked in and ``how_to_get`` otherwise."""
    folders = candidate_folders(path, subdir, system_dirs, keras_root=npz_name is not None)
    notes = []
    for folder in folders:
        if npz_name is not None and os.path.isfile(os.path.join(folder, npz_name)):
            return _from_npz(os.path.join(folder, npz_name), title)
        if not os.path.isdir(folder):
            notes.append(f"  {folder}  (no such folder)")
            continue
        found, missing = _find_in(folder)
        if not missing:
            return _from_files(found, title)
        notes.append(f"  {folder}  (missing {', '.join(m + '[.gz]' for m in missing)})")
    if path is None and not os.environ.get(ENV_VAR):
        notes.insert(0, f"  ${ENV_VAR}  (not set)")
    where = "in the folder given as path" if path is not None else "anywhere"
    raise FileNotFoundError(
        f"{title}: did not find the four files {', '.join(s + '[.gz]' for s in FILES.values())} "
        f"{where}. Looked in:\n" + "\n".join(notes) + "\n" + how_to_get)


def _check(title, x, y, split, src):
    if x.ndim != 3 or x.dtype != np.uint8:
        raise ValueError(f"{title}: {src} holds {x.dtype.name} images of shape {x.shape}, "
                         f"expected uint8 [n, rows, cols]")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"{title}: {split} has {len(x)} images but labels of shape {y.shape} "
                         f"(from {src})")


def _from_files(found, title):
    a = {k: load_idx(p) for k, p in found.items()}
    for split in ("train", "test"):
        _check(title, a["x_" + split], a["y_" + split], split, found["x_" + split])
    return (a["x_train"], a["y_train"].astype(np.uint8)), (a["x_test"], a["y_test"].astype(np.uint8))


def _from_npz(npz, title):
    with np.load(npz, allow_pickle=False) as f:
        a = {k: f[k] for k in FILES}
    for split in ("train", "test"):
        _check(title, a["x_" + split], a["y_" + split], split, npz)
    return (a["x_train"], a["y_train"].astype(np.uint8)), (a["x_test"], a["y_test"].astype(np.uint8))
