"""The layers that start a sequence model: Embedding (token ids -> vectors) and Masking.

Both make the mask that recurrent layers, pooling, losses and metrics read
(see the mask notes in ``layers.base``): ``Embedding(mask_zero=True)`` masks
the id 0, ``Masking(mask_value)`` the time steps whose features all equal
``mask_value``.
"""
from __future__ import annotations

from .. import initializers, ops, regularizers
from ._utils import WeightedLayer, constraint_config, constraint_get, init_config, reg_config
from ..tensor import Tensor, tensor
from .base import Layer


def _positive_int(value, what, cls):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{cls}: {what} must be a positive int, got {value!r}")
    return value


def check_not_ragged(layer, inputs):
    """ValueError naming ``layer`` when ``inputs`` is a ragged Python list of sequences."""
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(s, (list, tuple)) for s in inputs):
        lengths = sorted({len(s) for s in inputs})
        if len(lengths) > 1:
            shown = ", ".join(map(str, lengths[:6])) + (" ..." if len(lengths) > 6 else "")
            raise ValueError(
                f"layer {layer.name!r} ({type(layer).__name__}) got a ragged list of {len(inputs)} sequences "
                f"(lengths {shown}); it needs one length: pad them to one length (pad_sequences) "
                f"and mask the padding (Embedding(mask_zero=True) or Masking)")


def step_mask(layer, mask, x):
    """A [batch, time] (or [batch, time, 1]) mask for the [batch, time, ...] input ``x``, as bool;
    ValueError naming ``layer`` for any other shape."""
    want = tuple(x.shape[:2])
    if tuple(mask.shape) not in (want, want + (1,)):
        raise ValueError(
            f"layer {layer.name!r} ({type(layer).__name__}): the mask must have shape (batch, time) = "
            f"{want} for an input of shape {tuple(x.shape)}; got a mask of shape {tuple(mask.shape)}")
    if not isinstance(mask, Tensor):  # a host array given as mask= in an eager call
        return tensor(mask, "bool", backend=x.backend)
    return mask if mask.dtype == "bool" else ops.cast(mask, "bool")


def check_not_ragged_data(model, x, where):
    """ValueError when ``x``, for a model of one input, is a ragged Python list of sequences
    (names the model's first layer, which would get it)."""
    if not (isinstance(x, (list, tuple)) and len(x) > 1 and all(isinstance(s, (list, tuple)) for s in x)):
        return
    lengths = sorted({len(s) for s in x})
    if len(lengths) > 1 and all(not isinstance(v, (list, tuple)) for s in x for v in s):
        first = next((layer for layer in getattr(model, "layers", []) if type(layer).__name__ != "InputLayer"),
                     None)
        who = f" (its first layer {first.name!r}, {type(first).__name__})" if first is not None else ""
        shown = ", ".join(map(str, lengths[:6])) + (" ..." if len(lengths) > 6 else "")
        raise ValueError(
            f"{where}(): x is a ragged list of {len(x)} sequences (lengths {shown}); model {model.name!r}{who} "
            f"needs one length: pad them to one length (pad_sequences) and mask the padding "
            f"(Embedding(mask_zero=True) or Masking)")


class Embedding(WeightedLayer):
    """Token ids [batch, ...] (ints in [0, input_dim)) -> vectors [batch, ..., output_dim].

    ``Embedding(input_dim, output_dim, embeddings_initializer="uniform",
    embeddings_regularizer=None, embeddings_constraint=None, mask_zero=False)``.
    With ``mask_zero`` the id 0 is padding: the output's mask is ``ids != 0``
    (so ``input_dim`` counts the padding id too). Float ids are cast to int32.
    An id outside [0, input_dim) raises a ValueError naming the layer and the
    range of the ids received. ``input_length`` (Keras 2, TF.js) is accepted as
    the input shape ``(input_length,)``.
    """

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform", embeddings_regularizer=None,
                 embeddings_constraint=None, mask_zero=False, activity_regularizer=None, input_length=None,
                 **kwargs):
        if input_length is not None and not any(k in kwargs for k in ("input_shape", "batch_input_shape",
                                                                      "inputShape", "batchInputShape")):
            kwargs["input_shape"] = (input_length,) if isinstance(input_length, int) else tuple(input_length)
        super().__init__(**kwargs)
        self.input_dim = _positive_int(input_dim, "input_dim", "Embedding")
        self.output_dim = _positive_int(output_dim, "output_dim", "Embedding")
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.embeddings_regularizer = regularizers.get(embeddings_regularizer)
        self.embeddings_constraint = constraint_get(embeddings_constraint, "Embedding", "embeddings_constraint")
        self.mask_zero = bool(mask_zero)
        self._setup_activity(activity_regularizer)
        self.embeddings = None

    def build(self, input_shape):
        self.embeddings = self.add_weight("embeddings", (self.input_dim, self.output_dim),
                                          self.embeddings_initializer, self.embeddings_regularizer,
                                          constraint=self.embeddings_constraint)
        self.built = True

    def __call__(self, inputs, training=None, **kwargs):
        check_not_ragged(self, inputs)
        return super().__call__(inputs, training=training, **kwargs)

    def _ids(self, inputs):
        ids = inputs if inputs.dtype == "int32" else ops.cast(inputs, "int32")
        # The check reads two numbers on the host, which a step being recorded as a CUDA graph
        # cannot do: there the ids go unchecked.
        if ids.size and not getattr(ids._backend, "capturing", False):
            lo, hi = int(ops.min(ids).item()), int(ops.max(ids).item())
            if lo < 0 or hi >= self.input_dim:
                raise ValueError(
                    f"layer {self.name!r} (Embedding): token ids must be in [0, {self.input_dim}) "
                    f"(input_dim={self.input_dim}); received ids in [{lo}, {hi}]")
        return ids

    def call(self, inputs):
        return self._activity(ops.gather(self.embeddings, self._ids(inputs), axis=0))

    def compute_mask(self, inputs, previous_mask=None):
        if not self.mask_zero:
            return None
        return ops.not_equal(inputs, 0)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim,
                "embeddings_initializer": init_config(self.embeddings_initializer),
                "embeddings_regularizer": reg_config(self.embeddings_regularizer),
                "activity_regularizer": reg_config(self.activity_regularizer),
                "embeddings_constraint": constraint_config(self.embeddings_constraint),
                "mask_zero": self.mask_zero}


class Masking(Layer):
    """Masks the time steps whose features all equal ``mask_value`` (input [batch, time, ...]).

    The output is the input with those steps set to 0, and its mask is
    ``any(inputs != mask_value, axis=-1)``, as Keras's Masking.
    """

    def __init__(self, mask_value=0.0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(mask_value, bool) or not isinstance(mask_value, (int, float)):
            raise ValueError(f"Masking: mask_value must be a number, got {mask_value!r}")
        self.mask_value = float(mask_value)

    def __call__(self, inputs, training=None, **kwargs):
        check_not_ragged(self, inputs)
        return super().__call__(inputs, training=training, **kwargs)

    def _keep(self, inputs):
        return ops.any(ops.not_equal(inputs, self.mask_value), axis=-1, keepdims=True)

    def call(self, inputs):
        keep = self._keep(inputs)
        out = ops.where(keep, inputs, 0.0)
        out._keras_mask = ops.squeeze(keep, -1)
        return out

    def compute_mask(self, inputs, previous_mask=None):
        return ops.squeeze(self._keep(inputs), -1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mask_value": self.mask_value}


__all__ = ["Embedding", "Masking", "check_not_ragged", "check_not_ragged_data"]
