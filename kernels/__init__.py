"""CUDA C++ kernels for the cuda backend, compiled lazily with cupy.RawModule.

The ``.cu`` sources live beside this file and are loaded through
``importlib.resources`` so that installed and editable copies behave alike.
Importing this module never touches CUDA: a source is compiled at its first
launch (or by ``precompile()``), once per process and device, and the binary
is kept in CuPy's on-disk kernel cache (``$DEEPGPU_KERNEL_CACHE`` when set,
else CuPy's own: ``$CUPY_CACHE_DIR`` or ``~/.cupy/kernel_cache``).

The launchers (``matmul``, ``conv2d``, ...) take float32 C-contiguous
device arrays, check shapes, allocate outputs unless ``out=`` is given, and
launch on the current stream; they never synchronise or read values back.
One module per kernel family, beside its ``.cu`` file:

  runtime.py       sources, compiling and caching, the launch, argument checks
  gemm.py          matmul.cu: matmul, dense; the GEMM tiles of gemm_core.cuh
  conv.py          conv2d.cu: conv2d and its two gradients
  pool.py          pool.cu: max and average pooling and their gradients
  updates.py       elementwise.cu: Adam, SGD, RMSprop (one variable or many), set_scalars
  softmax_xent.py  elementwise.cu: softmax, softmax cross-entropy, argmax_hits
  elementwise.py   elementwise.cu: dropout, bias_act, relu_grad, col_sum, counter_add
  norm.py          norm.cu: batch normalization, training forward and backward
  layernorm.py     layernorm.cu: layer / RMS normalization, forward and backward
  attention.py     attention.cu: fused scaled dot-product attention, forward and backward
  depthwise.py     depthwise.cu: depthwise convolution and its two gradients
  tensorcore.py    tensorcore.cu: matmul and conv2d (+ gradients) on tensor cores, TF32 / float16 / bfloat16
  image.py         image.cu: the projective image transform (augmentation, resize) and its gradient

This module loads them and re-exports their names, the private helpers too:
tests and bench/ use them as ``kernels.X``, and the launcher modules read the
helpers from here at each call, so that what a test replaces here is used.

Status: checked by a CPU emulation of the kernels (tests/test_kernels_cuda.py)
and, up to 5f89e4a, on an H100; the CuPy backend uses them by default
(``DEEPGPU_KERNELS=cupy`` for CuPy's routines). dg_update_many,
dg_sparse_xent_*, dg_softmax_rows, dg_argmax_hits and norm.cu's dg_bn_* came
later and have run only under the emulation so far (bench/GPU_KERNELS.md).
"""
from .runtime import (  # noqa: F401
    ACTIVATIONS, BLOCK, KERNELS, OPTIONS, KernelCompileError, _FLAGS, _INCLUDE, _INT_MAX, _MAX_GRID_Y, _NULL, _ONCE,
    _act, _aligned16, _cache_dir_applied, _check, _counters, _counters_old, _device_id, _f32, _file_of,
    _functions, _grid1d, _grid_items, _i32, _i64, _inplace, _launch, _lock, _module, _modules, _output, _plans,
    _ptr, _sm_count, _sm_counts, _split_counters, _vec4, _xp, cache_dir, function, precompile, register, source,
    sources,
)
# In this order KERNELS lists the files as before: matmul.cu, conv2d.cu, pool.cu, elementwise.cu, norm.cu.
from .gemm import (  # noqa: F401
    GEMM_THREADS, GEMM_TILES, MATMUL_TILES, TILE_K, TILE_M, TILE_N, _gemm_grid, _kname, _matmul_plan,
    _matmul_split, _split, _threads, dense, matmul,
)
from .conv import (  # noqa: F401
    CONV_TILES, _conv_geom, _conv_launch, _conv_plan, _conv_tile, _key, conv2d, conv2d_grad_filter,
    conv2d_grad_input,
)
from .pool import (  # noqa: F401
    _POOL_WIDE_FROM, _pool_geom, _pool_launch, _tile_work, _tiles, avg_pool2d, avg_pool2d_grad, max_pool2d,
    max_pool2d_grad,
)
from .updates import (  # noqa: F401
    MANY, _scalars, _update_many, adam, adam_many, rmsprop, rmsprop_many, set_scalars, sgd, sgd_many,
)
from .softmax_xent import (  # noqa: F401
    _labels, _row_threads, argmax_hits, softmax, softmax_cross_entropy, softmax_cross_entropy_grad,
    sparse_softmax_cross_entropy, sparse_softmax_cross_entropy_grad,
)
from .elementwise import (  # noqa: F401
    _col_sum_pass, bias_act, col_sum, counter_add, dropout, dropout_offsets, relu_grad,
)
from .norm import batch_norm_grad, batch_norm_train  # noqa: F401
from .depthwise import (  # noqa: F401
    _DW_WIDE_FROM, depthwise_conv2d, depthwise_conv2d_grad_filter, depthwise_conv2d_grad_input,
)
from .rnn import gru_step, gru_step_grad, lstm_step, lstm_step_grad  # noqa: F401  (rnn.cu: fused cells)
from .layernorm import layer_norm, layer_norm_grad  # noqa: F401  (layernorm.cu: layer / RMS norm)
from .attention import attention, attention_grad  # noqa: F401  (attention.cu: fused attention)
from . import tensorcore  # noqa: F401  (tensorcore.cu: TF32 and 16-bit GEMM / convolutions)
from .image import _IT_WIDE_FROM, image_transform, image_transform_grad  # noqa: F401  (image.cu)

# The launch hook, kept here where tests set it: None, or a CPU emulation of
# the kernels, a callable (name, grid, block, args) taking a CuPy launch's
# arguments. runtime._launch reads it at each launch.
_emulator = None

__all__ = ["KernelCompileError", "sources", "source", "cache_dir", "precompile", "function",
           "matmul", "dense", "conv2d", "conv2d_grad_input", "conv2d_grad_filter",
           "max_pool2d", "max_pool2d_grad", "avg_pool2d", "avg_pool2d_grad", "adam", "sgd",
           "rmsprop", "adam_many", "sgd_many", "rmsprop_many", "softmax_cross_entropy",
           "softmax_cross_entropy_grad", "sparse_softmax_cross_entropy",
           "sparse_softmax_cross_entropy_grad", "softmax", "argmax_hits", "dropout",
           "bias_act", "relu_grad", "col_sum", "set_scalars", "counter_add", "batch_norm_train",
           "batch_norm_grad", "depthwise_conv2d", "depthwise_conv2d_grad_input", "depthwise_conv2d_grad_filter",
           "image_transform", "image_transform_grad"]
