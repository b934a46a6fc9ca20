"""Process-wide numeric switches, with TensorFlow's ``tf.config.experimental`` spellings."""
from __future__ import annotations

# One flag in a list: kernels/tensorcore.py reads it at each launch, without a call.
_TF32 = [False]


def enable_tensor_float_32_execution(enabled: bool) -> None:
    """Let float32 matmuls and 2-D convolutions on the CUDA backend run on tensor cores in TF32.

    Off by default: float32 stays strict IEEE float32 unless you opt in, as
    PyTorch's ``torch.backends.cuda.matmul.allow_tf32`` (TensorFlow turns it on
    by default; we do not). When on, the inputs of ``matmul``, ``dense``,
    ``conv2d`` and both convolution gradients are rounded to TF32 (8-bit
    exponent, 10-bit mantissa instead of 23: a relative rounding error of up
    to 2**-11, about 4.9e-4, per input) and the products are summed in
    float32. Measured on uniform(-1, 1) data under the kernels' emulation
    (matmuls with k from 45 to 1152, 3x3 convolutions and both gradients),
    the largest error relative to the largest output is 2.3e-4 to 3.3e-4 in
    TF32 against 1.8e-7 to 9.2e-7 in strict float32: a training run
    normally does not notice, a numerical gradient check does.
    Needs sm_80 or newer (A100, H100, H200). The CPU backend ignores the
    switch (it is always strict float32). A step already recorded as a CUDA
    graph keeps the kernels it was recorded with: set this before ``fit``.
    """
    _TF32[0] = bool(enabled)


def tensor_float_32_execution_enabled() -> bool:
    """Whether float32 matmuls and convolutions may run in TF32 on the CUDA backend (default False)."""
    return _TF32[0]
