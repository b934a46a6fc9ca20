"""Debian's ``fortunes`` quotations as a text-classification dataset: which category is a quote from?

    from deepgpu.datasets import fortunes
    (x_train, y_train), (x_test, y_test) = fortunes.load_data()
    names = fortunes.get_label_names()      # names[y] is the category of a label y

The data is the ``fortunes`` package's files (``apt-get install fortunes``): one file per
category under /usr/share/games/fortunes, entries separated by lines holding only ``%``.
Nothing is downloaded. x: NumPy object arrays of str (each entry with its surrounding
whitespace stripped); y: int32 labels, the index of the category in sorted name order.
"""
from __future__ import annotations

import os

import numpy as np

__all__ = ["load_data", "get_label_names", "read_categories", "DEFAULT_DIR", "INSTALL_HINT"]

DEFAULT_DIR = "/usr/share/games/fortunes"
INSTALL_HINT = "apt-get install fortunes"


def _entries(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    out, cur = [], []
    for line in text.split("\n"):
        if line.rstrip("\r") == "%":
            out.append("\n".join(cur).strip())
            cur = []
        else:
            cur.append(line)
    out.append("\n".join(cur).strip())
    return [e for e in out if e]


def read_categories(path=None) -> dict:
    """{category: [entries]} of every fortune file under ``path`` (default /usr/share/games/fortunes):
    the regular files there, without the ``.dat`` indexes and the ``.u8`` links; each entry once.

    Raises FileNotFoundError with the install hint when the folder is missing or holds no file.
    """
    folder = os.fspath(path) if path is not None else DEFAULT_DIR
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"fortunes: no folder {folder!r}; install the data with: {INSTALL_HINT}")
    out = {}
    for name in sorted(os.listdir(folder)):
        full = os.path.join(folder, name)
        if name.startswith(".") or name.endswith((".dat", ".u8")) or os.path.islink(full) \
                or not os.path.isfile(full):
            continue
        out[name] = list(dict.fromkeys(_entries(full)))
    if not out:
        raise FileNotFoundError(f"fortunes: {folder!r} holds no fortune files; install the data with: "
                                f"{INSTALL_HINT}")
    return out


def _usable(path, min_entries):
    cats = read_categories(path)
    # A quote filed under two categories has no single answer: it is left out of both.
    seen = {}
    for name, entries in cats.items():
        for e in entries:
            seen[e] = seen.get(e, 0) + 1
    cats = {n: [e for e in es if seen[e] == 1] for n, es in cats.items()}
    kept = {n: es for n, es in cats.items() if len(es) >= min_entries}
    if not kept:
        sizes = {n: len(es) for n, es in cats.items()}
        raise ValueError(f"fortunes: no category has at least {min_entries} entries (sizes: {sizes})")
    return kept


def _check(min_entries, test_split):
    if isinstance(min_entries, bool) or not isinstance(min_entries, int) or min_entries < 2:
        raise ValueError(f"fortunes: min_entries must be an integer >= 2, got {min_entries!r}")
    if not 0 < test_split < 1:
        raise ValueError(f"fortunes: test_split must be between 0 and 1 (exclusive), got {test_split!r}")


def get_label_names(path=None, min_entries=300) -> list:
    """The category names, in label order, of the categories with at least ``min_entries`` entries."""
    _check(min_entries, 0.5)
    return sorted(_usable(path, min_entries))


def load_data(path=None, min_entries=300, test_split=0.2, seed=113):
    """``(x_train, y_train), (x_test, y_test)``: the entries of the categories with at least
    ``min_entries`` distinct entries (quotes filed under several categories left out), split per
    category (stratified): ``round(test_split * n)`` of each category's n entries go to the test set,
    chosen by a NumPy generator seeded with ``seed``; each set is then shuffled with it. The same
    files and arguments give the same split.

    Raises FileNotFoundError naming ``apt-get install fortunes`` when the data is missing,
    ValueError for bad arguments or when no category is large enough.
    """
    _check(min_entries, test_split)
    cats = _usable(path, min_entries)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label, name in enumerate(sorted(cats)):
        entries = cats[name]
        order = rng.permutation(len(entries))
        n_test = int(round(test_split * len(entries)))
        test += [(entries[i], label) for i in order[:n_test]]
        train += [(entries[i], label) for i in order[n_test:]]

    def arrays(pairs):
        pairs = [pairs[i] for i in rng.permutation(len(pairs))]
        x = np.empty(len(pairs), dtype=object)
        x[:] = [p[0] for p in pairs]
        return x, np.asarray([p[1] for p in pairs], np.int32)

    return arrays(train), arrays(test)
