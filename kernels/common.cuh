// Definitions shared by every kernel file. NVRTC compiles without the host
// headers (no math.h, so no INFINITY), hence the bit-pattern constant.
#pragma once

#define DG_NEG_INF (-__int_as_float(0x7f800000))

// Activation codes of the fused epilogues (kernels/__init__.py: ACTIVATIONS).
#define DG_ACT_NONE 0
#define DG_ACT_RELU 1
#define DG_ACT_SIGMOID 2
#define DG_ACT_TANH 3
#define DG_ACT_RELU6 4

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
    if (act == DG_ACT_RELU6) {  // MobileNet's ReLU(6); NaN stays NaN, as numpy.clip
        return v < 0.0f ? 0.0f : (v > 6.0f ? 6.0f : v);
    }
    return v;
}

// dy * (y > 0): the gradient through a ReLU from its output y (a NaN in dy stays NaN, as
// Backend.relu_grad's multiply).
__device__ __forceinline__ float dg_relu_mask(float dy, float y)
{
    return dy * (y > 0.0f ? 1.0f : 0.0f);
}

// out[i] = Cvt::from(sum over s of parts[s * n + i]): the K-splits of a filter gradient
// added up. Block (32, 8): 32 consecutive outputs (coalesced reads), each summed by 8
// threads over every 8th split, then those 8 added in a fixed order, so the result
// does not depend on scheduling. Cvt::from converts the float32 sum to T.
template <class Cvt, class T>
__device__ __forceinline__ void dg_sum_splits_into(const float* parts, T* out, int splits, int n)
{
    __shared__ float part[8][32];
    const int i = blockIdx.x * 32 + threadIdx.x;
    float v = 0.0f;
    if (i < n)
        for (int s = threadIdx.y; s < splits; s += 8) v += parts[(long long)s * n + i];
    part[threadIdx.y][threadIdx.x] = v;
    __syncthreads();
    if (threadIdx.y == 0 && i < n) {
        float t = part[0][threadIdx.x];
        for (int r = 1; r < 8; ++r) t += part[r][threadIdx.x];
        out[i] = Cvt::from(t);
    }
}

struct DgFloatOut {
    static __device__ __forceinline__ float from(float v) { return v; }
};
