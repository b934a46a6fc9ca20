// Definitions shared by every kernel file. NVRTC compiles without the host
// headers (no math.h, so no INFINITY), hence the bit-pattern constant.
#pragma once

#define DG_NEG_INF (-__int_as_float(0x7f800000))

// Activation codes of the fused epilogues (kernels/__init__.py: ACTIVATIONS).
#define DG_ACT_NONE 0
#define DG_ACT_RELU 1
#define DG_ACT_SIGMOID 2
#define DG_ACT_TANH 3

__device__ __forceinline__ float dg_activate(float v, int act)
{
    if (act == DG_ACT_RELU) {
        return v < 0.0f ? 0.0f : v;  // NaN stays NaN, as numpy.maximum
    }
    if (act == DG_ACT_SIGMOID) {
        // Split by sign so that expf never overflows (as Backend.sigmoid).
        float e = expf(-fabsf(v));
        return v >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
    }
    if (act == DG_ACT_TANH) {
        return tanhf(v);
    }
    return v;
}
