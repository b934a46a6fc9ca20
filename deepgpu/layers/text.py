"""Text preprocessing layers: ``TextVectorization`` (Keras 3's, without TensorFlow).

Strings stay on the host: the layer standardizes, splits and looks them up in
plain Python (deepgpu/data/text.py) and hands the next layer a Tensor of ids
(or of multi-hot / count / TF-IDF rows) on the current backend. A model whose
first layer is a TextVectorization takes a list or NumPy array of strings in
``predict`` / ``fit`` / ``__call__``.
"""
from __future__ import annotations

import codecs
import os

from ..data import text as T
from ..tensor import Tensor, tensor
from .base import Layer, SymbolicTensor, fmt_shape

_STANDARDIZE = ("lower_and_strip_punctuation", "lower", "strip_punctuation")
_SPLIT = ("whitespace", "character")
_MODES = ("int", "multi_hot", "count", "tf_idf")
_NUMERIC = ("float", "int", "uint", "bool", "complex", "bfloat")
MASK_TOKEN, OOV_TOKEN = "", "[UNK]"


def _fn_config(value):
    """A standardize / split setting as JSON: the string, None, or a function by its registered name."""
    if value is None or isinstance(value, str):
        return value
    return {"class_name": "function", "config": getattr(value, "__name__", type(value).__name__)}


def _fn_from_config(value, what, custom=None):
    if not isinstance(value, dict):
        return value
    from .. import registry

    name = value.get("config")
    fn = (custom or {}).get(name) or registry.custom_objects().get(name)
    if fn is None:
        raise ValueError(f"TextVectorization: the {what} function {name!r} of the config is unknown; pass it in "
                         f"custom_objects={{{name!r}: fn}} or decorate it with @register_serializable()")
    return fn


class TextVectorization(Layer):
    """Strings to token ids or bag-of-token rows, with a vocabulary from ``adapt()`` or given.

    Input: strings of shape (batch,) or (batch, 1) (a list, a NumPy str / object / bytes array;
    any shape when ``split`` is None: the elements of a row are its tokens).
    Output: int32 (batch, output_sequence_length) for ``output_mode="int"`` (0 pads, 1 is the
    out-of-vocabulary id; without ``output_sequence_length``, the longest row of the batch);
    float32 (batch, depth) for "multi_hot", "count", "tf_idf" (depth: the vocabulary size, or
    ``max_tokens`` with ``pad_to_max_tokens``; id 0 is out-of-vocabulary). Keras gives int64 ids.

    standardize: "lower_and_strip_punctuation", "lower", "strip_punctuation", None or a callable
    (NumPy ``<U`` array -> strings of the same shape). split: "whitespace", "character", None or a
    callable (1-D ``<U`` array of the rows -> one token sequence per row). ngrams: None, n (1..n),
    or a tuple of widths. max_tokens: the vocabulary's size limit, special tokens included.
    vocabulary: a list of tokens (or a file of one per line; "" and "[UNK]" at its front are
    recognised), idf_weights beside it for "tf_idf". The vocabulary (and IDF weights) is part of
    ``get_config()``, so it is saved with the model in every format. Bad arguments and inputs raise
    ValueError / TypeError naming the layer.
    """

    def __init__(self, max_tokens=None, standardize="lower_and_strip_punctuation", split="whitespace", ngrams=None,
                 output_mode="int", output_sequence_length=None, pad_to_max_tokens=False, vocabulary=None,
                 idf_weights=None, sparse=False, ragged=False, encoding="utf-8", vocabulary_size=None,
                 has_input_vocabulary=None, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        who = f"TextVectorization {self.name!r}"
        if output_mode == "binary":
            output_mode = "multi_hot"
        if output_mode == "tf-idf":
            output_mode = "tf_idf"
        if output_mode not in _MODES:
            extra = " (one_hot is not supported for text; use multi_hot)" if output_mode == "one_hot" else ""
            raise ValueError(f"{who}: output_mode must be one of {_MODES}, got {output_mode!r}{extra}")
        if not (standardize is None or callable(standardize) or standardize in _STANDARDIZE
                or isinstance(standardize, dict)):
            raise ValueError(f"{who}: standardize must be one of {_STANDARDIZE}, None or a callable, "
                             f"got {standardize!r}")
        if not (split is None or callable(split) or split in _SPLIT or isinstance(split, dict)):
            raise ValueError(f"{who}: split must be one of {_SPLIT}, None or a callable, got {split!r}")
        if isinstance(ngrams, list):
            ngrams = tuple(ngrams)
        if ngrams is None:
            widths = None
        elif isinstance(ngrams, int) and not isinstance(ngrams, bool) and ngrams >= 1:
            widths = tuple(range(1, ngrams + 1))
        elif (isinstance(ngrams, tuple) and ngrams
              and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in ngrams)):
            widths = ngrams
        else:
            raise ValueError(f"{who}: ngrams must be None, a positive integer, or a tuple of positive integers; "
                             f"got {ngrams!r}")
        if output_sequence_length is not None:
            if output_mode != "int":
                raise ValueError(f"{who}: output_sequence_length must not be set if output_mode is not 'int'; "
                                 f"got output_sequence_length={output_sequence_length!r}, "
                                 f"output_mode={output_mode!r}")
            if (isinstance(output_sequence_length, bool) or not isinstance(output_sequence_length, int)
                    or output_sequence_length < 1):
                raise ValueError(f"{who}: output_sequence_length must be None or a positive integer, got "
                                 f"{output_sequence_length!r}")
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                       or max_tokens <= 1):
            raise ValueError(f"{who}: max_tokens must be None or an integer greater than 1, got {max_tokens!r}")
        if pad_to_max_tokens and max_tokens is None:
            raise ValueError(f"{who}: pad_to_max_tokens=True needs max_tokens")
        if sparse:
            raise ValueError(f"{who}: sparse=True is not supported (deepgpu has no sparse tensors)")
        if ragged:
            raise ValueError(f"{who}: ragged=True is not supported (deepgpu has no ragged tensors); use "
                             f"output_sequence_length or let each batch pad to its longest row")
        try:
            codecs.lookup(encoding)
        except (LookupError, TypeError):
            raise ValueError(f"{who}: unknown text encoding {encoding!r}") from None
        if idf_weights is not None and output_mode != "tf_idf":
            raise ValueError(f"{who}: idf_weights is only used with output_mode='tf_idf' (got {output_mode!r})")
        if output_mode == "tf_idf" and vocabulary is not None and idf_weights is None:
            raise ValueError(f"{who}: with output_mode='tf_idf', a given vocabulary needs idf_weights beside it")
        self.max_tokens = max_tokens
        self.standardize = _fn_from_config(standardize, "standardize")
        self.split = _fn_from_config(split, "split")
        self.ngrams = ngrams
        self._widths = widths
        self.output_mode = output_mode
        self.output_sequence_length = output_sequence_length
        self.pad_to_max_tokens = bool(pad_to_max_tokens)
        self.encoding = encoding
        self._has_input_vocabulary = (vocabulary is not None) if has_input_vocabulary is None \
            else bool(has_input_vocabulary)
        self._size_hint = vocabulary_size  # a config's size, for output shapes before the vocabulary loads
        self._tokens = None  # learned / given tokens, special tokens excluded
        self._index = {}
        self._idf = None
        self._idf_pending = None
        if vocabulary is not None:
            self.set_vocabulary(vocabulary, idf_weights)

    # ---------------------------------------------------------- vocabulary
    @property
    def _specials(self):
        return [MASK_TOKEN, OOV_TOKEN] if self.output_mode == "int" else [OOV_TOKEN]

    def _who(self):
        return f"layer {self.name!r} (TextVectorization)"

    def vocabulary_size(self) -> int:
        """The number of ids: special tokens included (``len(get_vocabulary())``)."""
        if self._tokens is None and self._size_hint is not None:
            return int(self._size_hint)
        return len(self._specials) + len(self._tokens or [])

    def get_vocabulary(self, include_special_tokens=True) -> list:
        """The tokens in id order: "" (padding, int mode only) and "[UNK]" first, then the learned ones."""
        toks = list(self._tokens or [])
        return self._specials + toks if include_special_tokens else toks

    def set_vocabulary(self, vocabulary, idf_weights=None) -> None:
        """Use ``vocabulary`` (a list / array of tokens, or a path to a file of one token per line),
        with ``idf_weights`` for "tf_idf" (same length). "" and "[UNK]" may lead it, in that order.
        Raises ValueError naming the layer for repeated tokens, special tokens elsewhere, a
        vocabulary over ``max_tokens`` or idf_weights that do not fit; nothing changes then."""
        who = self._who()
        if self.output_mode == "tf_idf" and idf_weights is None:
            raise ValueError(f"{who}: idf_weights must be given with the vocabulary when output_mode is 'tf_idf'")
        if self.output_mode != "tf_idf" and idf_weights is not None:
            raise ValueError(f"{who}: idf_weights is only used with output_mode='tf_idf' "
                             f"(output_mode is {self.output_mode!r})")
        if isinstance(vocabulary, (str, os.PathLike)):
            path = os.fspath(vocabulary)
            if not os.path.isfile(path):
                raise ValueError(f"{who}: vocabulary file {path!r} does not exist")
            if self.output_mode == "tf_idf":
                raise ValueError(f"{who}: output_mode 'tf_idf' does not support loading a vocabulary from a file")
            with open(path, encoding=self.encoding) as f:
                vocabulary = f.read().splitlines()
            while vocabulary and vocabulary[-1] == "":
                vocabulary.pop()
        vocab = [str(t) for t in T.as_string_array(list(vocabulary), f"{who}: vocabulary").reshape(-1)]
        specials = self._specials
        found = vocab[:len(specials)] == specials
        tokens = vocab[len(specials):] if found else vocab
        repeated = sorted({t for t in tokens if tokens.count(t) > 1}) if len(set(tokens)) != len(tokens) else []
        if repeated:
            raise ValueError(f"{who}: the vocabulary repeats {repeated[:10]}; each token must appear once")
        for tok in specials:
            if tok in tokens:
                raise ValueError(f"{who}: the special token {tok!r} is in the vocabulary at index "
                                 f"{vocab.index(tok)}; special tokens may only lead it, in this order: {specials}")
        if self.max_tokens is not None and len(specials) + len(tokens) > self.max_tokens:
            raise ValueError(f"{who}: the vocabulary has {len(specials) + len(tokens)} entries (special tokens "
                             f"included), more than max_tokens={self.max_tokens}")
        idf = None
        if idf_weights is not None:
            w = T.float_list(idf_weights)
            if len(w) != len(vocab):
                raise ValueError(f"{who}: idf_weights has {len(w)} entries for a vocabulary of {len(vocab)}; "
                                 f"they must be the same length")
            front = 0 if found else len(specials)
            back = (self.max_tokens - front - len(w)) if self.pad_to_max_tokens else 0
            idf = T.pad_idf(w, front, back) if front else T.pad_idf(w, 0, back)
        self._tokens = tokens
        self._index = {t: i for i, t in enumerate(self.get_vocabulary())}
        if self.output_mode != "int":
            self._index[MASK_TOKEN] = -1  # Keras drops "" from the bag
        self._idf = idf
        self._size_hint = None

    def adapt(self, data, batch_size=None, steps=None) -> None:
        """Learn the vocabulary (and for "tf_idf" the document frequencies) from ``data``: a list or
        NumPy array of strings, or an iterable of batches of strings (a ``deepgpu.data.Dataset``, a
        generator). steps: at most this many batches of an iterable. The most frequent
        ``max_tokens`` (less the special tokens) are kept. Raises ValueError for a layer given a
        vocabulary at construction, TypeError for data that is not text."""
        who = self._who()
        if self._has_input_vocabulary:
            raise ValueError(f"{who}: cannot adapt a layer whose vocabulary was given (vocabulary= argument); "
                             f"use set_vocabulary() to replace it")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise ValueError(f"{who}: steps must be None or a positive int, got {steps!r}")
        if isinstance(data, (str, bytes)):
            raise TypeError(f"{who}: adapt() needs a list or array of strings, not a single string")
        if isinstance(data, (list, tuple)) or hasattr(data, "dtype"):
            batches = [data]
        elif hasattr(data, "__iter__"):
            batches = data
        else:
            raise TypeError(f"{who}: adapt() needs strings (a list, a NumPy array, or an iterable of batches of "
                            f"them); got {type(data).__name__}")

        def rows():
            for k, batch in enumerate(batches):
                if steps is not None and k >= steps:
                    break
                if isinstance(batch, tuple) and len(batch) > 1 and not isinstance(batch[0], (str, bytes)):
                    raise TypeError(f"{who}: adapt() got a batch of {len(batch)} parts (texts and labels?); pass "
                                    f"the texts alone, e.g. dataset.map(lambda x, y: x)")
                texts = T.as_string_array(batch, f"{who}: adapt()")
                if texts.ndim == 0:
                    texts = texts.reshape(1)
                yield from self._tokenize(texts)

        learned = None if self.max_tokens is None else self.max_tokens - len(self._specials)
        tokens, idf = T.learn_vocabulary(rows(), learned, [MASK_TOKEN, OOV_TOKEN], self.output_mode == "tf_idf")
        self._tokens = None  # set_vocabulary checks against max_tokens from scratch
        if idf is not None:
            back = (self.max_tokens - len(self._specials) - len(tokens)) if self.pad_to_max_tokens else 0
            full = T.pad_idf(idf, len(self._specials), back)
            self.set_vocabulary(self._specials + tokens, full[:len(self._specials) + len(tokens)].tolist())
        else:
            self.set_vocabulary(self._specials + tokens)

    # ------------------------------------------------------------- calling
    def _tokenize(self, texts):
        who = self._who()
        texts = T.standardize(texts, self.standardize, who)
        return T.ngrams(T.split(texts, self.split, who), self._widths)

    def _check_text_shape(self, shape):
        if self.split is None:
            return
        if len(shape) > 2 or (len(shape) == 2 and shape[1] not in (1, None)):
            built = self._build_input_shape
            built = f" (built for {fmt_shape(built)})" if built is not None else ""
            raise ValueError(f"{self._who()}: to split strings into tokens the input must have shape (batch,) "
                             f"or (batch, 1){built}; received input shape {fmt_shape(shape)}")

    def _depth(self):
        return self.max_tokens if self.pad_to_max_tokens else self.vocabulary_size()

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        self._check_text_shape(shape)
        batch = shape[0] if shape else None
        if self.output_mode == "int":
            if self.split is None and self.output_sequence_length is None:
                return (batch,) + (tuple(shape[1:]) or (1,))
            return (batch, self.output_sequence_length)
        return (batch, self._depth())

    def __call__(self, inputs, training=None, **kwargs):
        if isinstance(inputs, SymbolicTensor):
            if str(inputs.dtype).startswith(_NUMERIC):
                raise TypeError(f"{self._who()} takes strings: give its Input dtype='string', not "
                                f"{inputs.dtype!r}")
            out = Layer.__call__(self, inputs, training=training, **kwargs)
            out.dtype = "int32" if self.output_mode == "int" else "float32"
            return out
        if isinstance(inputs, Tensor) or not T.is_string_data(inputs):
            got = f"a {inputs.dtype} Tensor" if isinstance(inputs, Tensor) else type(inputs).__name__
            raise TypeError(f"{self._who()} takes strings (a list or NumPy array of str / bytes), got {got}")
        texts = T.as_string_array(inputs, self._who(), self.encoding)
        if texts.ndim == 0:
            texts = texts.reshape(1)
        shape = (None,) + texts.shape[1:]
        self._check_text_shape(shape)
        self._maybe_build(shape)
        return self.call(texts)

    def call(self, inputs):
        if self._tokens is None:
            raise ValueError(f"{self._who()} has no vocabulary yet: call adapt() on sample texts, or give "
                             f"vocabulary= (or set_vocabulary())")
        rows = self._tokenize(inputs)
        if self.output_mode == "int":
            length = self.output_sequence_length
            if self.split is None and length is None:
                length = max(1, len(rows[0]) if rows else 1)
            return tensor(T.encode_int(rows, self._index, 1, length), "int32")
        return tensor(T.encode_bag(rows, self._index, 0, self._depth(), self.output_mode, self._idf), "float32")

    # -------------------------------------------------------------- config
    def get_config(self) -> dict:
        cfg = super().get_config()
        vocab = self.get_vocabulary() if self._tokens is not None else None
        idf = None
        if self._idf is not None and vocab is not None:
            idf = [float(v) for v in self._idf[:len(vocab)]]
        cfg.update({
            "max_tokens": self.max_tokens, "standardize": _fn_config(self.standardize),
            "split": _fn_config(self.split), "ngrams": list(self.ngrams) if isinstance(self.ngrams, tuple)
            else self.ngrams, "output_mode": self.output_mode, "output_sequence_length": self.output_sequence_length,
            "pad_to_max_tokens": self.pad_to_max_tokens, "sparse": False, "ragged": False,
            "vocabulary": vocab, "idf_weights": idf, "encoding": self.encoding,
            "vocabulary_size": self.vocabulary_size(), "has_input_vocabulary": self._has_input_vocabulary,
        })
        return cfg

    @classmethod
    def from_config(cls, config, custom_objects=None):
        cfg = dict(config)
        for key in ("standardize", "split"):
            cfg[key] = _fn_from_config(cfg.get(key), key, custom_objects)
        return cls(**cfg)

    # ------------------------------------------- Keras .keras file members
    def keras_variables(self) -> dict:
        """Arrays a Keras 3 ``.keras`` file keeps for this layer, by path under its group: the IDF
        weights ("tf_idf"), where Keras's layer and its inner StringLookup read them."""
        if self.output_mode != "tf_idf" or self._idf is None:
            return {}
        return {"vars/idf_weights": self._idf, "_lookup_layer/vars/idf_weights": self._idf}

    def load_keras_variables(self, arrays) -> None:
        """Take the IDF weights of a Keras file (``keras_variables``' keys); the vocabulary may come
        from the config or from the file's assets."""
        idf = arrays.get("vars/idf_weights")
        if idf is not None and self.output_mode == "tf_idf":
            self._idf_pending = T.float_list(idf)
            self._finish_keras_load()

    def load_keras_assets(self, files) -> None:
        """Take the vocabulary of a Keras 3 file's ``vocabulary.txt`` asset ({relative path: bytes}),
        which Keras writes for an adapted layer (its config then holds no vocabulary)."""
        data = files.get("vocabulary.txt")
        if data is None or (self._tokens is not None and self._has_input_vocabulary):
            return
        lines = data.decode(self.encoding).split("\n")
        while lines and lines[-1] == "":
            lines.pop()
        self._vocab_pending = lines
        self._finish_keras_load()

    def _finish_keras_load(self):
        vocab = getattr(self, "_vocab_pending", None)
        if vocab is None and self._tokens is not None:
            vocab = self.get_vocabulary()
        if vocab is None or (self.output_mode == "tf_idf" and self._idf_pending is None):
            return
        idf = self._idf_pending[:len(vocab)] if self.output_mode == "tf_idf" else None
        self.set_vocabulary(vocab, idf)
        self._vocab_pending = None
