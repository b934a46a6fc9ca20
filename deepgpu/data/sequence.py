"""``pad_sequences``: a list of sequences of different lengths as one rectangular array (Keras's)."""
from __future__ import annotations

import numpy as np

__all__ = ["pad_sequences"]


def pad_sequences(sequences, maxlen=None, dtype="int32", padding="pre", truncating="pre", value=0.0):
    """Pad (or cut) each sequence to ``maxlen`` steps; returns a NumPy array ``(len(sequences), maxlen)``
    plus the shape of one step (sequences of vectors keep it).

    maxlen: the length (default: the longest sequence). padding / truncating: "pre" (at the start,
    the default, as Keras) or "post" (at the end). value: the fill. Raises ValueError naming the
    sequence when one is not a sequence, when the steps differ in shape, or for an unknown
    padding / truncating; a str ``value`` needs a string or object ``dtype``.
    """
    if isinstance(sequences, (str, bytes)) or not hasattr(sequences, "__len__"):
        raise ValueError(f"pad_sequences: sequences must be a list (or array) of sequences, got "
                         f"{type(sequences).__name__}")
    if padding not in ("pre", "post"):
        raise ValueError(f'pad_sequences: padding must be "pre" or "post", got {padding!r}')
    if truncating not in ("pre", "post"):
        raise ValueError(f'pad_sequences: truncating must be "pre" or "post", got {truncating!r}')
    if maxlen is not None and (isinstance(maxlen, bool) or not isinstance(maxlen, (int, np.integer))
                               or maxlen < 0):
        raise ValueError(f"pad_sequences: maxlen must be None or an integer >= 0, got {maxlen!r}")
    lengths, step_shape, found = [], (), False
    for i, s in enumerate(sequences):
        if isinstance(s, (str, bytes)) or not hasattr(s, "__len__"):
            raise ValueError(f"pad_sequences: sequence {i} is not a sequence (a list or array of steps): "
                             f"{type(s).__name__} {s!r:.40}")
        lengths.append(len(s))
        if not found and len(s):
            step_shape = np.asarray(s).shape[1:]
            found = True
    if maxlen is None:
        maxlen = max(lengths, default=0)
    np_dtype = np.dtype(dtype)
    if isinstance(value, str) and np_dtype != object and np_dtype.kind not in "US":
        raise ValueError(f"pad_sequences: dtype {dtype!r} cannot hold the str padding value {value!r}; "
                         f"use dtype=object")
    out = np.full((len(lengths), int(maxlen)) + tuple(step_shape), value, dtype=np_dtype)
    if maxlen == 0:
        return out
    for i, s in enumerate(sequences):
        if not len(s):
            continue
        kept = s[-maxlen:] if truncating == "pre" else s[:maxlen]
        try:
            kept = np.asarray(kept, dtype=np_dtype)
        except (TypeError, ValueError) as e:
            raise ValueError(f"pad_sequences: sequence {i} cannot be read as {np_dtype} steps of shape "
                             f"{tuple(step_shape)}: {e}") from None
        if kept.shape[1:] != tuple(step_shape):
            raise ValueError(f"pad_sequences: the steps of sequence {i} have shape {kept.shape[1:]}, those of "
                             f"the first non-empty sequence {tuple(step_shape)}; all steps must have one shape")
        if padding == "post":
            out[i, :len(kept)] = kept
        else:
            out[i, -len(kept):] = kept
    return out
