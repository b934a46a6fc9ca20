"""Host-side text processing: what ``TextVectorization`` does before any number reaches a backend.

Strings never go to a device: they are standardized, split, n-grammed and
looked up here, in plain Python, and only the integer ids (or the
multi-hot / count / TF-IDF rows) become arrays. The rules are Keras 3's (which
are TensorFlow's string ops):

- "lower" lowercases ASCII letters only (``tf.strings.lower``); other letters
  are left as they are.
- "strip_punctuation" removes ASCII punctuation (Python's
  ``string.punctuation``, Keras's regex).
- "whitespace" splits on runs of ASCII whitespace, dropping empty tokens;
  "character" splits into Unicode code points.
- n-grams of each width are joined by one space; all 1-grams come first,
  then the 2-grams, and so on (``tf.strings.ngrams``).
- A vocabulary learned by ``adapt`` is sorted by count, most frequent first,
  ties broken by the token, higher first (Keras's ``np.lexsort(...)[::-1]``).
"""
from __future__ import annotations

import collections
import math
import re
import string

import numpy as np

__all__ = ["standardize", "split", "ngrams", "as_string_array", "is_string_data", "learn_vocabulary",
           "TEXT_ENCODING"]

TEXT_ENCODING = "utf-8"
_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_NO_PUNCT = str.maketrans("", "", string.punctuation)
_WHITESPACE = re.compile(r"[ \t\n\v\f\r]+")


def _text(s, encoding=TEXT_ENCODING):
    if isinstance(s, (bytes, np.bytes_)):
        return bytes(s).decode(encoding)
    return str(s)


def is_string_data(x) -> bool:
    """Whether ``x`` is text: a str / bytes, a NumPy array of strings (or objects), or a
    (nested) list / tuple whose first leaf is a str or bytes."""
    if isinstance(x, (str, bytes, np.str_, np.bytes_)):
        return True
    kind = getattr(getattr(x, "dtype", None), "kind", None)
    if kind is not None:
        if kind in "US":
            return True
        if kind == "O" and getattr(x, "size", 0):
            return isinstance(x.flat[0], (str, bytes))
        return False
    while isinstance(x, (list, tuple)) and x:
        x = x[0]
    return isinstance(x, (str, bytes))


def as_string_array(x, who="text", encoding=TEXT_ENCODING):
    """``x`` as a NumPy object array of Python str (bytes decoded); same shape.

    Raises TypeError naming ``who`` when an element is not a str or bytes
    (a number, None), ValueError for ragged nested lists.
    """
    if isinstance(x, np.ndarray) and x.dtype.kind == "U":
        return x.astype(object)
    if isinstance(x, (str, bytes, np.str_, np.bytes_)):
        return np.asarray(_text(x, encoding), dtype=object)
    try:
        arr = np.asarray(x, dtype=object)
    except ValueError as e:
        raise ValueError(f"{who}: the strings must form a rectangular array; got ragged nested lists ({e})") \
            from None
    out = np.empty(arr.shape, dtype=object)
    flat_in, flat_out = arr.reshape(-1), out.reshape(-1)
    for i, s in enumerate(flat_in):
        if isinstance(s, (str, np.str_)):
            flat_out[i] = str(s)
        elif isinstance(s, (bytes, np.bytes_)):
            flat_out[i] = bytes(s).decode(encoding)
        else:
            raise TypeError(f"{who} expects strings, got an element of type {type(s).__name__} ({s!r:.40}) "
                            f"at flat position {i}")
    return out


def standardize(texts, how, who="text"):
    """Apply ``how`` (None, "lower", "strip_punctuation", "lower_and_strip_punctuation" or a
    callable) to the object array ``texts``; returns an object array of the same shape.

    A callable receives a NumPy array of unicode strings (dtype ``<U``), as Keras 3 gives it on
    non-TensorFlow backends, and must return strings of the same shape.
    """
    if how is None:
        return texts
    if callable(how):
        got = how(texts.astype(str) if texts.size else np.asarray(texts, dtype=str))
        out = as_string_array(np.asarray(got), f"{who}: the standardize callable's result")
        if out.shape != texts.shape:
            raise ValueError(f"{who}: the standardize callable returned shape {out.shape} for inputs of shape "
                             f"{texts.shape}; it must keep the shape")
        return out
    lower = how in ("lower", "lower_and_strip_punctuation")
    strip = how in ("strip_punctuation", "lower_and_strip_punctuation")
    out = np.empty(texts.shape, dtype=object)
    flat_in, flat_out = texts.reshape(-1), out.reshape(-1)
    for i, s in enumerate(flat_in):
        if lower:
            s = s.translate(_LOWER)
        if strip:
            s = s.translate(_NO_PUNCT)
        flat_out[i] = s
    return out


def split(texts, how, who="text"):
    """Token lists, one per row of the object array ``texts`` (rank 1, or rank 2 with a last axis
    of 1 when ``how`` splits; any row length when ``how`` is None: its elements are the tokens).

    how: "whitespace", "character", None, or a callable that gets the 1-D array of the row strings
    (dtype ``<U``) and returns one sequence of tokens per row.
    """
    if texts.ndim == 0:
        texts = texts.reshape(1)
    if how is None:
        rows = texts.reshape(texts.shape[0], -1) if texts.ndim > 1 else texts.reshape(-1, 1)
        return [list(r) for r in rows]
    if texts.ndim > 1:
        if texts.ndim != 2 or texts.shape[-1] != 1:
            raise ValueError(f"{who}: to split strings into tokens the input must have shape (batch,) or "
                             f"(batch, 1); received shape {texts.shape}")
        texts = texts[:, 0]
    if how == "whitespace":
        return [[t for t in _WHITESPACE.split(s) if t] for s in texts]
    if how == "character":
        return [list(s) for s in texts]
    got = how(texts.astype(str) if texts.size else np.asarray(texts, dtype=str))
    rows = list(got)
    if len(rows) != len(texts):
        raise ValueError(f"{who}: the split callable returned {len(rows)} rows for {len(texts)} strings")
    return [[_text(t) for t in (r.tolist() if hasattr(r, "tolist") else r)] for r in rows]


def ngrams(tokens, widths):
    """``tokens`` (one list per row) with the n-grams of each width in ``widths`` (a tuple), joined by
    one space: all of the first width, then the next."""
    if widths is None:
        return tokens
    out = []
    for toks in tokens:
        row = []
        for w in widths:
            row.extend(toks if w == 1 else [" ".join(toks[i:i + w]) for i in range(len(toks) - w + 1)])
        out.append(row)
    return out


def learn_vocabulary(token_rows, max_learned, specials, want_idf):
    """(tokens, idf weights or None) learned from an iterable of token lists (one per document).

    Counts every token except ``specials``; keeps the ``max_learned`` most frequent (all when None),
    sorted by count then token, both descending. The IDF of a token is
    ``log(1 + documents / (1 + documents holding it))`` (Keras's formula).
    """
    counts = collections.Counter()
    docs = collections.Counter()
    n_docs = 0
    for toks in token_rows:
        counts.update(toks)
        if want_idf:
            docs.update(set(toks))
        n_docs += 1
    for s in specials:
        counts.pop(s, None)
    ordered = sorted(counts.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
    if max_learned is not None:
        ordered = ordered[:max(0, max_learned)]
    tokens = [t for t, _ in ordered]
    if not want_idf:
        return tokens, None
    idf = [math.log(1.0 + n_docs / (1.0 + docs[t])) for t in tokens]
    return tokens, idf


def encode_int(token_rows, index, oov, length):
    """int32 array (rows, length) of the ids of ``token_rows`` (a dict ``index``; ``oov`` for unknown
    tokens), cut or padded with 0 at the end; ``length`` None: the longest row."""
    if length is None:
        length = max((len(r) for r in token_rows), default=0)
    out = np.zeros((len(token_rows), length), np.int32)
    get = index.get
    for i, toks in enumerate(token_rows):
        ids = [get(t, oov) for t in toks[:length]]
        out[i, :len(ids)] = ids
    return out


def encode_bag(token_rows, index, oov, depth, mode, idf=None):
    """float32 array (rows, depth): per row, 1 for each id present ("multi_hot"), its count ("count"),
    or its count times ``idf`` ("tf_idf"). Tokens whose id is negative (the mask) are dropped."""
    out = np.zeros((len(token_rows), depth), np.float32)
    get = index.get
    for i, toks in enumerate(token_rows):
        ids = np.asarray([get(t, oov) for t in toks], np.int64)
        ids = ids[ids >= 0]
        if mode == "multi_hot":
            out[i, ids] = 1.0
        else:
            np.add.at(out[i], ids, 1.0)
    if mode == "tf_idf":
        out *= np.asarray(idf, np.float32)
    return out


def pad_idf(idf, front, back):
    """float32 IDF weights padded with ``front`` copies of their mean (Keras's weight for the OOV
    index) and ``back`` zeros."""
    w = np.asarray(idf, np.float32).reshape(-1)
    mean = np.float32(w.mean()) if w.size else np.float32(0.0)
    return np.concatenate([np.full(front, mean, np.float32), w, np.zeros(max(0, back), np.float32)])


def float_list(values):
    """``values`` (a list, tuple or array of numbers) as a flat list of Python floats."""
    return [float(v) for v in np.asarray(values, np.float64).reshape(-1)]


def is_text_list(x) -> bool:
    """Whether ``x`` is a list / tuple of strings (one batch of text, not a list of inputs)."""
    return isinstance(x, (list, tuple)) and bool(x) and isinstance(x[0], (str, bytes, np.str_, np.bytes_))


def fit_text_rank(xs, expected, who="x"):
    """The model inputs ``xs`` with text made NumPy object arrays, and a 1-D batch of strings given
    for an input of shape (None, 1) reshaped to (batch, 1) (as Keras 3 adjusts it)."""
    out = []
    for i, a in enumerate(xs):
        if is_text_list(a) or (isinstance(a, np.ndarray) and a.dtype.kind in "US"):
            a = as_string_array(a, who)
        if isinstance(a, np.ndarray) and a.dtype == object and i < len(expected):
            exp = expected[i]
            if a.ndim == 1 and len(exp) == 2 and exp[1] == 1:
                a = a.reshape(-1, 1)
        out.append(a)
    return out
