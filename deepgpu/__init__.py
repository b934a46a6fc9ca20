"""deepgpu: Keras / TensorFlow.js-style deep learning on NumPy or CUDA.

    import deepgpu as dg
    dg.set_backend("cpu")            # or "cuda", or "auto" (the default)
    x = dg.tensor([[1, 2], [3, 4]])
    (x @ x).data_sync()              # the one way values reach the host
"""
__version__ = "0.1.0"

from .backends import (  # noqa: F401
    BackendUnavailableError, GraphCaptureError, available_backends, cuda_status, get_backend, set_backend,
    use_backend,
)
from .tensor import (  # noqa: F401
    DisposedTensorError, Tensor, Variable, arange, dispose, tensor1d, tensor2d, tidy, fill, memory, ones, ones_like, random_normal, random_uniform,
    scalar, set_seed, tensor, truncated_normal, zeros, zeros_like,
)
from .autograd import (  # noqa: F401
    enable_grad, grad, grads, is_grad_enabled, no_grad, value_and_grad, value_and_grads,
    variable_grads,
)
from .ops import (  # noqa: F401
    abs, add, all, any, argmax, argmin, avg_pool, avg_pool2d, broadcast_to, cast, clip,
    clip_by_value, concat, concatenate, conv2d, conv2d_transpose, dense, divide, dropout, elu,
    equal, exp, expand_dims, floor, floor_divide, gather, getitem, greater, greater_equal,
    leaky_relu, less, less_equal, log, log1p, log_softmax, logical_and, logical_not, logical_or,
    logsumexp, mat_mul, matmul, max, max_pool, max_pool2d, maximum, mean, min, minimum, mod,
    multiply, negative, not_equal, one_hot, pad, pow, prod, reciprocal, relu, repeat, reshape,
    round, rsqrt, sigmoid, sign, slice, softmax, softmax_cross_entropy, softplus, sparse_softmax_cross_entropy,
    split, sqrt, square, squeeze, stack, std, subtract, sum, tanh, tile, transpose, unstack, variance, where,
)

# TF.js short names.
sub = subtract
mul = multiply
div = divide
neg = negative

from .layers.base import Input  # noqa: F401,E402
from .models import Model, Sequential, load_model, register_serializable  # noqa: F401,E402
from . import config  # noqa: F401,E402  (enable_tensor_float_32_execution, ...)

# Submodules load on first use (deepgpu.layers, deepgpu.losses, ...), so that
# `import deepgpu` stays quick.
_SUBMODULES = {
    "layers", "models", "losses", "metrics", "optimizers", "callbacks", "activations",
    "initializers", "regularizers", "datasets", "preprocessing", "io", "testing", "kernels",
    "backends", "tuning", "plotting", "data", "ops", "autograd", "cli", "zoo", "utils",
    "constraints", "distributed", "mixed_precision", "dtype_policies", "saving",
}


def __getattr__(name):
    if name in _SUBMODULES:
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    if name in ("DTypePolicy", "set_dtype_policy", "dtype_policy"):  # keras.DTypePolicy, keras.config's names
        from . import mixed_precision
        return getattr(mixed_precision, name)
    if name in ("plot_history", "plot_model"):
        from . import plotting
        return getattr(plotting, name)
    raise AttributeError(f"module 'deepgpu' has no attribute {name!r}")
