"""Dtype policies and mixed precision, as Keras 3 has them.

    import deepgpu as dg
    dg.mixed_precision.set_global_policy("mixed_float16")   # or keras.config's set_dtype_policy
    layer = dg.layers.Dense(10)          # computes in float16, keeps float32 variables
    layer.compute_dtype, layer.variable_dtype, layer.dtype   # 'float16', 'float32', 'float32'
    out = dg.layers.Activation("softmax", dtype="float32")   # a float32 output, as Keras's recipe

A policy's name is one of ``POLICY_NAMES``: "float32", "float16", "bfloat16",
"float64" (compute and variables in that dtype), "mixed_float16" or
"mixed_bfloat16" (compute in 16 bits, variables in float32). Layers created
without ``dtype=`` take the global policy at their creation.

Inside a layer's call (deepgpu.layers.base.Layer.__call__) floating inputs are
cast to the compute dtype, the layer's float variables are read cast to it
(a differentiable cast, so gradients reach the float32 variables in float32),
and floating outputs come out in it. Losses and metrics are computed in
float32. ``Model.compile`` under "mixed_float16" wraps the optimizer in a
``LossScaleOptimizer`` (dynamic loss scaling), as Keras 3's ``auto_scale_loss``.

bfloat16 needs the ``ml_dtypes`` package (``pip install "deepgpu[mixed]"``).
On the CPU the heavy primitives (matmul, convolutions, pooling,
normalization, recurrent steps) compute in float32 and round their results to
the 16-bit dtype, as the GPU's 16-bit-input, float32-accumulate kernels do.
"""
from __future__ import annotations

from . import ops  # once here: every training step calls float32_outputs

__all__ = ["DTypePolicy", "FloatDTypePolicy", "Policy", "POLICY_NAMES", "set_global_policy", "global_policy",
           "set_dtype_policy", "dtype_policy", "get", "serialize", "deserialize", "LossScaleOptimizer",
           "is_half", "HALF_DTYPES"]

POLICY_NAMES = ("float32", "float16", "bfloat16", "float64", "mixed_float16", "mixed_bfloat16")
# Layers that take integers, booleans or strings (Input, lookups) have these plain policies.
OTHER_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool", "string")
HALF_DTYPES = ("float16", "bfloat16")

_SPLIT = {"mixed_float16": ("float16", "float32"), "mixed_bfloat16": ("bfloat16", "float32")}


def is_half(dtype) -> bool:
    """True for the 16-bit float dtypes (float16, bfloat16), given by name or dtype."""
    return str(dtype) in HALF_DTYPES


def _bad_name(name):
    return ValueError(f"cannot convert {name!r} to a dtype policy; valid policies: "
                      f"{', '.join(repr(n) for n in POLICY_NAMES)} (or a non-float dtype name for layers "
                      f"that take integers: {', '.join(OTHER_DTYPES)})")


class DTypePolicy:
    """A layer's dtype policy: the dtype it computes in and the dtype of its variables.

    name: one of ``POLICY_NAMES`` (None: the global policy's name). A name
    that is not a string raises TypeError, an unknown one ValueError listing
    the valid names. ``compute_dtype`` / ``variable_dtype`` are dtype names.
    """

    def __init__(self, name=None):
        if name is None:
            name = global_policy().name
        if not isinstance(name, str):
            raise TypeError(f"a dtype policy's name must be a string such as 'mixed_float16', got "
                            f"{name!r} (of type {type(name).__name__})")
        if name not in POLICY_NAMES and name not in OTHER_DTYPES:
            raise _bad_name(name)
        self._name = name
        self._compute_dtype, self._variable_dtype = _SPLIT.get(name, (name, name))

    @property
    def name(self) -> str:
        return self._name

    @property
    def compute_dtype(self) -> str:
        """The dtype of the layer's inputs, computations and outputs."""
        return self._compute_dtype

    @property
    def variable_dtype(self) -> str:
        """The dtype the layer creates its variables in."""
        return self._variable_dtype

    @property
    def quantization_mode(self):
        return None  # Keras's quantized policies are not supported

    @property
    def is_mixed(self) -> bool:
        return self._compute_dtype != self._variable_dtype

    def get_config(self) -> dict:
        return {"name": self._name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f'<DTypePolicy "{self._name}">'

    def __eq__(self, other):
        return isinstance(other, DTypePolicy) and other._name == self._name

    def __hash__(self):
        return hash(("DTypePolicy", self._name))


FloatDTypePolicy = DTypePolicy  # Keras 3 aliases
Policy = DTypePolicy

_global = None  # None: "float32"


def global_policy() -> DTypePolicy:
    """The policy of layers created without ``dtype=`` (default: "float32")."""
    return _global if _global is not None else DTypePolicy("float32")


def set_global_policy(policy) -> None:
    """Set the global policy from a name (see ``POLICY_NAMES``), a DTypePolicy, or None
    (back to "float32"). Layers created afterwards take it; existing layers keep theirs.
    ValueError lists the valid names for an unknown one."""
    global _global
    if policy is None:
        _global = None
        return
    if isinstance(policy, DTypePolicy):
        _global = policy
    elif isinstance(policy, str):
        _global = DTypePolicy(policy)
    else:
        raise ValueError(f"set_global_policy: expected a policy name ({', '.join(POLICY_NAMES)}) or a "
                         f"DTypePolicy, got {policy!r}")


# keras.config's spellings.
set_dtype_policy = set_global_policy
dtype_policy = global_policy


def get(identifier) -> DTypePolicy:
    """A DTypePolicy from None (the global policy), a name, a DTypePolicy, or a
    Keras config dict (``{"class_name": "DTypePolicy", "config": {"name": ...}}``,
    also tf.keras 2's ``Policy``). ValueError otherwise, listing the valid names."""
    if identifier is None:
        return global_policy()
    if isinstance(identifier, DTypePolicy):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        return DTypePolicy(identifier)
    name = getattr(identifier, "name", None)  # a NumPy dtype
    if not isinstance(name, str) and isinstance(identifier, type):
        name = identifier.__name__  # numpy.float32, ml_dtypes.bfloat16
    if isinstance(name, str) and (name in POLICY_NAMES or name in OTHER_DTYPES):
        return DTypePolicy(name)
    raise ValueError(f"cannot interpret dtype {identifier!r}: expected a string such as 'float32' or "
                     f"'mixed_float16' (valid: {', '.join(POLICY_NAMES)}) or a DTypePolicy")


def serialize(policy) -> dict:
    """Keras 3's config of a policy, as ``.keras`` files hold it."""
    policy = get(policy)
    return {"module": "keras", "class_name": "DTypePolicy", "config": policy.get_config(), "registered_name": None}


def deserialize(config) -> DTypePolicy:
    """The policy of a Keras config dict (``serialize``'s form, or tf.keras 2's ``Policy``)."""
    if not isinstance(config, dict):
        return get(config)
    cls = config.get("class_name")
    if cls not in ("DTypePolicy", "FloatDTypePolicy", "Policy"):
        raise ValueError(f"cannot interpret dtype config {config!r}: only Keras's DTypePolicy / Policy are "
                         f"supported (valid names: {', '.join(POLICY_NAMES)})")
    inner = config.get("config") or {}
    return DTypePolicy(inner.get("name"))


def __getattr__(name):
    if name == "LossScaleOptimizer":  # loads the optimizers only when asked for
        from .optimizers import LossScaleOptimizer
        return LossScaleOptimizer
    raise AttributeError(f"module 'deepgpu.mixed_precision' has no attribute {name!r}")


def float32_outputs(outs) -> list:
    """``outs`` (a list of model outputs) with 16-bit float Tensors cast to float32 (a
    differentiable cast keeping the mask, and the logits a softmax was taken of): losses and
    metrics compute in float32, as Keras casts them."""
    res = []
    for o in outs:
        dtype = getattr(o, "dtype", None)
        if dtype in HALF_DTYPES and hasattr(o, "_backend"):
            t = ops.cast(o, "float32")
            mask = getattr(o, "_keras_mask", None)
            if mask is not None:
                t._keras_mask = mask
            if getattr(o, "_logits", None) is not None:
                t._logits = ops.cast(o._logits, "float32")
            o = t
        res.append(o)
    return res
