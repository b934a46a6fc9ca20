"""``text_dataset_from_directory``: a folder of ``.txt`` files, one subfolder per class (Keras 3's)."""
from __future__ import annotations

import os

import numpy as np

__all__ = ["text_dataset_from_directory", "index_text_directory"]

_LABEL_MODES = ("int", "categorical", "binary", None)


def _txt_files(folder, follow_links):
    from .image_folder import files_in_keras_order
    return files_in_keras_order(folder, follow_links, ".txt")


def index_text_directory(directory, labels="inferred", class_names=None, follow_links=False):
    """(file paths, integer labels or None, class names) of the ``.txt`` files under ``directory``.

    labels="inferred": one class per subfolder (sorted by name, or in the order of
    ``class_names``), files at the top level ignored; None: every ``.txt`` file, no labels; a list /
    tuple: one label per file. Files come in Keras's order (folders by path, each folder's files by
    name). Raises FileNotFoundError / ValueError naming the folder and what is wrong.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"text_dataset_from_directory: no such folder: {directory!r}")
    if labels == "inferred":
        subdirs = sorted(d for d in os.listdir(directory) if os.path.isdir(os.path.join(directory, d)))
        if class_names is not None:
            class_names = [str(c) for c in class_names]
            if sorted(class_names) != subdirs:
                raise ValueError(f"text_dataset_from_directory: class_names {class_names} must list exactly the "
                                 f"subfolders of {directory!r}: {subdirs}")
        else:
            class_names = subdirs
        paths, ids = [], []
        for k, name in enumerate(class_names):
            found = _txt_files(os.path.join(directory, name), follow_links)
            paths += found
            ids += [k] * len(found)
        return paths, np.asarray(ids, np.int32), class_names
    paths = _txt_files(directory, follow_links)
    if labels is None:
        if class_names is not None:
            raise ValueError("text_dataset_from_directory: class_names is only used with labels='inferred'")
        return paths, None, None
    if isinstance(labels, str) or not hasattr(labels, "__len__"):
        raise ValueError(f"text_dataset_from_directory: labels must be 'inferred', None, or a list of one "
                         f"integer label per file; got {labels!r:.60}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(paths):
        raise ValueError(f"text_dataset_from_directory: labels has {len(labels)} entries (shape {labels.shape}) "
                         f"but {directory!r} holds {len(paths)} .txt files")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"text_dataset_from_directory: labels must be integers, got dtype {labels.dtype}")
    names = class_names if class_names is not None else [str(i) for i in range(int(labels.max(initial=-1)) + 1)]
    return paths, labels.astype(np.int32), list(names)


def _split(paths, ids, validation_split, subset):
    n_val = int(validation_split * len(paths))
    cut = len(paths) - n_val
    if subset == "training":
        return paths[:cut], None if ids is None else ids[:cut]
    return paths[cut:], None if ids is None else ids[cut:]


def text_dataset_from_directory(directory, labels="inferred", label_mode="int", class_names=None, batch_size=32,
                                max_length=None, shuffle=True, seed=None, validation_split=None, subset=None,
                                follow_links=False, verbose=True, encoding="utf-8"):
    """A ``deepgpu.data.Dataset`` of ``(texts, labels)`` batches (texts alone when ``label_mode`` is None)
    from ``directory/<class>/*.txt``, as Keras 3's function.

    texts: NumPy str arrays of shape (batch,), read lazily, each cut to ``max_length`` characters
    (Keras cuts bytes; the same for ASCII). labels: int32 (batch,) for "int", float32 one-hot
    (batch, classes) for "categorical", float32 (batch, 1) for "binary" (two classes only).
    shuffle: the file order is shuffled once with ``seed`` (as Keras), then batches are drawn
    from a buffer of 8 batches, a new order each pass. validation_split (0 < v < 1) with
    subset "training", "validation" or "both" (a pair of datasets): the last fraction of the
    shuffled files is the validation set; it needs ``seed`` when shuffling. ``class_names`` is set
    on the returned dataset. batch_size=None yields single examples.
    Raises ValueError naming the bad argument before any file is read.
    """
    from .dataset import Dataset

    w = "text_dataset_from_directory"
    if label_mode not in _LABEL_MODES:
        raise ValueError(f'{w}: label_mode must be "int", "categorical", "binary" or None, got {label_mode!r}')
    if labels is None and label_mode is not None:
        label_mode = None  # Keras: no labels means no label mode
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise ValueError(f"{w}: batch_size must be None or a positive int, got {batch_size!r}")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)
                                   or max_length < 1):
        raise ValueError(f"{w}: max_length must be None or a positive int, got {max_length!r}")
    if validation_split is not None and not 0 < validation_split < 1:
        raise ValueError(f"{w}: validation_split must be between 0 and 1 (exclusive), got {validation_split!r}")
    if subset not in (None, "training", "validation", "both"):
        raise ValueError(f'{w}: subset must be "training", "validation", "both" or None, got {subset!r}')
    if (validation_split is None) != (subset is None):
        raise ValueError(f"{w}: validation_split and subset go together; got validation_split="
                         f"{validation_split!r}, subset={subset!r}")
    if validation_split is not None and shuffle and seed is None:
        raise ValueError(f"{w}: with validation_split and shuffle=True, pass a seed so that the training and "
                         f"validation subsets do not overlap")
    paths, ids, names = index_text_directory(directory, labels, class_names, follow_links)
    if label_mode == "binary" and len(names) != 2:
        raise ValueError(f'{w}: label_mode="binary" needs exactly 2 classes, {directory!r} has {len(names)}: '
                         f"{names}")
    if not paths:
        raise ValueError(f"{w}: no .txt files found in {directory!r}")
    if verbose:
        print(f"Found {len(paths)} files" + (f" belonging to {len(names)} classes." if names else "."))
    if shuffle:
        if seed is None:
            seed = int(np.random.randint(1_000_000))
        order = np.random.RandomState(seed).permutation(len(paths))
        paths = [paths[i] for i in order]
        ids = None if ids is None else ids[order]

    def build(sub):
        p, y = (paths, ids) if sub is None else _split(paths, ids, validation_split, sub)
        if sub is not None and verbose:
            print(f"Using {len(p)} files for {sub}.")

        def read(path):
            with open(path, encoding=encoding, errors="replace") as f:
                text = f.read()
            return np.asarray(text if max_length is None else text[:max_length])

        if label_mode is None:
            ds = Dataset.from_tensor_slices(np.asarray(p, dtype=object)).map(lambda path: read(str(path)))
        else:
            k = len(names)
            if label_mode == "int":
                lab = y
            elif label_mode == "binary":
                lab = y.astype(np.float32).reshape(-1, 1)
            else:
                lab = np.eye(k, dtype=np.float32)[y] if len(y) else np.zeros((0, k), np.float32)
            ds = Dataset.from_tensor_slices((np.asarray(p, dtype=object), lab)).map(
                lambda path, label: (read(str(path)), label))
        if shuffle:
            ds = ds.shuffle(8 * (batch_size or 1), seed=seed)
        if batch_size is not None:
            ds = ds.batch(batch_size)
        ds.class_names = names
        return ds

    if subset == "both":
        return build("training"), build("validation")
    return build(subset)
