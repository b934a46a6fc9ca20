// Layer / RMS normalization over the rows of x [rows, D] (float32), as Backend.layer_norm and
// layer_norm_grad: the forward in one launch (dg_ln_fwd), the backward in two (dg_ln_grad_input,
// dg_ln_grad_params). No atomics, no host reads: deterministic, and a CUDA graph records them.
//
// dg_ln_fwd and dg_ln_grad_input: one block per row (blocks stride over the rows), its
// blockDim.x threads (a power of two, <= 256) stride over the row's D values (a warp reads
// consecutive values: coalesced); sums are merged pairwise in shared memory. The forward reads
// the row three times (mean, squared deviations, y): two passes for the variance, as stable as
// the NumPy version, and the row stays in L1/L2 between them.
// dg_ln_grad_params: the column sums dgamma = sum dy * xhat, dbeta = sum dy as in norm.cu's
// statistics: blocks of 32 columns x (blockDim.y) row lanes, each block owning its columns over
// every row, lanes merged pairwise.
#include "common.cuh"

// Sum of v over the block's threads (x only); every thread must call it; red holds blockDim.x.
__device__ float dg_ln_block_sum(float v, float* red)
{
    const int t = threadIdx.x;
    red[t] = v;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half >>= 1) {
        if (t < half) red[t] += red[t + half];
        __syncthreads();
    }
    const float r = red[0];
    __syncthreads();  // red is reused by the next call
    return r;
}

// y = (x - mean) * inv * gamma + beta per row; mean [rows] (0 when rms), inv [rows] = 1 / sqrt(var + eps).
// gamma, beta [D] may be null.
extern "C" __global__ void dg_ln_fwd(const float* __restrict__ x, const float* gamma, const float* beta,
                                     float* __restrict__ y, float* mean, float* inv, long long rows, int D,
                                     float eps, int rms)
{
    __shared__ float red[256];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* xr = x + r * D;
        float m = 0.0f;
        if (!rms) {
            float s = 0.0f;
            for (int j = threadIdx.x; j < D; j += blockDim.x) s += xr[j];
            m = dg_ln_block_sum(s, red) / (float)D;
        }
        float q = 0.0f;
        for (int j = threadIdx.x; j < D; j += blockDim.x) {
            const float d = xr[j] - m;
            q += d * d;
        }
        const float iv = 1.0f / sqrtf(dg_ln_block_sum(q, red) / (float)D + eps);
        float* yr = y + r * D;
        for (int j = threadIdx.x; j < D; j += blockDim.x) {
            float v = (xr[j] - m) * iv;
            if (gamma) v *= gamma[j];
            if (beta) v += beta[j];
            yr[j] = v;
        }
        if (threadIdx.x == 0) {
            mean[r] = m;
            inv[r] = iv;
        }
    }
}

// dx = inv * (g - mean(g) - xhat * mean(g * xhat)) per row (rms: without mean(g)), g = dy * gamma,
// xhat = (x - mean) * inv; gamma may be null.
extern "C" __global__ void dg_ln_grad_input(const float* __restrict__ dy, const float* __restrict__ x,
                                            const float* gamma, const float* mean, const float* inv,
                                            float* __restrict__ dx, long long rows, int D, int rms)
{
    __shared__ float red[256];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* xr = x + r * D;
        const float* dyr = dy + r * D;
        const float m = mean[r], iv = inv[r];
        float a = 0.0f, b = 0.0f;
        for (int j = threadIdx.x; j < D; j += blockDim.x) {
            const float g = gamma ? dyr[j] * gamma[j] : dyr[j];
            a += g;
            b += g * (xr[j] - m) * iv;
        }
        const float ma = rms ? 0.0f : dg_ln_block_sum(a, red) / (float)D;
        const float mb = dg_ln_block_sum(b, red) / (float)D;
        float* dxr = dx + r * D;
        for (int j = threadIdx.x; j < D; j += blockDim.x) {
            const float g = gamma ? dyr[j] * gamma[j] : dyr[j];
            dxr[j] = iv * (g - ma - (xr[j] - m) * iv * mb);
        }
    }
}

// dgamma[j] = sum over rows of dy * (x - mean) * inv, dbeta[j] = sum of dy; block (32 columns, lanes).
extern "C" __global__ void dg_ln_grad_params(const float* __restrict__ dy, const float* __restrict__ x,
                                             const float* mean, const float* inv, float* dgamma, float* dbeta,
                                             long long rows, int D)
{
    __shared__ float sa[256], sb[256];
    const int tx = threadIdx.x, ty = threadIdx.y, bx = blockDim.x, t = ty * bx + tx;
    const int j = blockIdx.x * bx + tx;
    float a = 0.0f, b = 0.0f;
    if (j < D) {
        for (long long r = ty; r < rows; r += blockDim.y) {
            const float g = dy[r * D + j];
            a += g * (x[r * D + j] - mean[r]) * inv[r];
            b += g;
        }
    }
    sa[t] = a;
    sb[t] = b;
    __syncthreads();
    for (int half = blockDim.y / 2; half > 0; half >>= 1) {
        if (ty < half) {
            sa[t] += sa[t + half * bx];
            sb[t] += sb[t + half * bx];
        }
        __syncthreads();
    }
    if (ty == 0 && j < D) {
        dgamma[j] = sa[tx];
        dbeta[j] = sb[tx];
    }
}
