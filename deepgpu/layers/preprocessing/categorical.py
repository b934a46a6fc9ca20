"""Categorical preprocessing: CategoryEncoding (one_hot, multi_hot, count)."""
from __future__ import annotations

from ... import ops
from ..base import Layer
from .._utils import shape_error

MODES = ("one_hot", "multi_hot", "count")
_TFJS_MODES = {"oneHot": "one_hot", "multiHot": "multi_hot"}


def encode(idx, depth, mode, dtype="float32", count_weights=None):
    """Integer ids [..., k] encoded over ``depth``: one_hot [..., k, depth] (k == 1 squeezed),
    multi_hot / count [..., depth] (presence / occurrences over the last axis; with
    ``count_weights`` of the ids' shape, count sums those weights instead of ones)."""
    oh = ops.one_hot(idx, depth, dtype)
    if mode == "one_hot":
        return ops.squeeze(oh, -2) if idx.ndim > 1 and idx.shape[-1] == 1 else oh
    if mode == "multi_hot":
        return ops.max(oh, -2)
    return ops.sum(oh if count_weights is None else oh * ops.expand_dims(count_weights, -1), -2)


class CategoryEncoding(Layer):
    """Integer ids in [0, num_tokens) to one-hot / multi-hot / count vectors (float32; Keras 3).

    one_hot: [N] or [N, 1] -> [N, num_tokens], [N, k] -> [N, k, num_tokens]; multi_hot and count:
    [N, k] -> [N, num_tokens]. ``count_weights`` (count mode, the ids' shape) weighs each id.
    An id out of range raises ValueError naming the layer, except inside a step being recorded
    as a CUDA graph, where it encodes as zeros (as Keras 3 does everywhere).
    """

    def __init__(self, num_tokens=None, output_mode="multi_hot", sparse=False, **kwargs):
        super().__init__(**kwargs)
        output_mode = _TFJS_MODES.get(output_mode, output_mode)
        if output_mode not in MODES:
            raise ValueError(f"CategoryEncoding: output_mode must be one of {MODES}, got {output_mode!r}")
        if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
            raise ValueError(f"CategoryEncoding: num_tokens must be a positive int, got {num_tokens!r}")
        if sparse:
            raise ValueError("CategoryEncoding: sparse=True is not supported (deepgpu has no sparse tensors)")
        self.num_tokens, self.output_mode, self.sparse = num_tokens, output_mode, False

    def build(self, input_shape):
        if self.output_mode != "one_hot" and len(input_shape) < 2:
            raise shape_error(self, f"{self.output_mode} needs ids of rank >= 2 ([batch, ids])", input_shape)
        self.built = True

    def call(self, inputs, count_weights=None):
        ids = inputs if inputs.dtype.startswith("int") else ops.cast(inputs, "int32")
        if count_weights is not None:
            if self.output_mode != "count":
                raise ValueError(f"layer {self.name!r} (CategoryEncoding): count_weights is used only when "
                                 f"output_mode='count', got output_mode={self.output_mode!r}")
            count_weights = ops.cast(count_weights, self.dtype)
            if tuple(count_weights.shape) != tuple(ids.shape):
                raise ValueError(f"layer {self.name!r} (CategoryEncoding): count_weights must have the ids' "
                                 f"shape {tuple(ids.shape)}, got {tuple(count_weights.shape)}")
        # The range check reads two numbers on the host, which a step being recorded cannot do
        # (the recording would refuse the whole step): there the ids go unchecked.
        if ids.size and not ids._backend.capturing:
            lo, hi = int(ops.min(ids).data_sync()), int(ops.max(ids).data_sync())
            if lo < 0 or hi >= self.num_tokens:
                raise ValueError(f"layer {self.name!r} (CategoryEncoding): ids must be in [0, {self.num_tokens}), "
                                 f"got values in [{lo}, {hi}]")
        return encode(ids, self.num_tokens, self.output_mode, self.dtype, count_weights)

    def compute_output_shape(self, input_shape):
        if self.output_mode == "one_hot" and (len(input_shape) == 1 or input_shape[-1] != 1):
            return tuple(input_shape) + (self.num_tokens,)
        return tuple(input_shape[:-1]) + (self.num_tokens,)

    def get_config(self):
        return {**super().get_config(), "num_tokens": self.num_tokens, "output_mode": self.output_mode,
                "sparse": self.sparse}
