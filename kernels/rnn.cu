// The gate math of one LSTM / GRU time step after its matmuls, float32, as
// Backend.lstm_step / lstm_step_grad / gru_step / gru_step_grad: one launch each way,
// one thread per (row, unit) reading that unit's gates. Arrays are C-contiguous [N, K];
// total = N * u. Pointers documented "may be null" are zeros when null. No host reads:
// a CUDA graph records the whole time loop.
#include "common.cuh"

#define DG_RNN_LOOP(k, total)                                                       \
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < (total); \
         k += (long long)gridDim.x * blockDim.x)

__device__ __forceinline__ float dg_rnn_sigmoid(float v)
{
    // Split by sign so that expf never overflows (as Backend.sigmoid).
    const float e = expf(-fabsf(v));
    return v >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
}

// z [N, 4u] (gates i, f, c, o), cp [N, u] -> h, c [N, u], act [N, 4u] = (i, f, tanh(z_c), o).
extern "C" __global__ void dg_lstm_fwd(const float* __restrict__ z, const float* __restrict__ cp, float* h,
                                       float* c, float* act, long long total, int u)
{
    DG_RNN_LOOP(k, total) {
        const long long n = k / u, j = k - n * u, g4 = n * 4 * u + j;
        const float i = dg_rnn_sigmoid(z[g4]), f = dg_rnn_sigmoid(z[g4 + u]);
        const float g = tanhf(z[g4 + 2 * u]), o = dg_rnn_sigmoid(z[g4 + 3 * u]);
        const float cn = f * cp[k] + i * g;
        act[g4] = i;
        act[g4 + u] = f;
        act[g4 + 2 * u] = g;
        act[g4 + 3 * u] = o;
        c[k] = cn;
        h[k] = o * tanhf(cn);
    }
}

// dh, dc [N, u] (either may be null), act [N, 4u], cp, c [N, u] -> dz [N, 4u], dcp [N, u].
extern "C" __global__ void dg_lstm_bwd(const float* __restrict__ dh, const float* __restrict__ dc,
                                       const float* __restrict__ act, const float* __restrict__ cp,
                                       const float* __restrict__ c, float* dz, float* dcp, long long total, int u)
{
    DG_RNN_LOOP(k, total) {
        const long long n = k / u, j = k - n * u, g4 = n * 4 * u + j;
        const float i = act[g4], f = act[g4 + u], g = act[g4 + 2 * u], o = act[g4 + 3 * u];
        float dct = dc ? dc[k] : 0.0f, dout = 0.0f;
        if (dh) {
            const float tc = tanhf(c[k]), d = dh[k];
            dct += d * o * (1.0f - tc * tc);
            dout = d * tc * o * (1.0f - o);
        }
        dz[g4] = dct * g * i * (1.0f - i);
        dz[g4 + u] = dct * cp[k] * f * (1.0f - f);
        dz[g4 + 2 * u] = dct * i * (1.0f - g * g);
        dz[g4 + 3 * u] = dout;
        dcp[k] = dct * f;
    }
}

// xz, hz [N, 3u] (gates z, r, h), hp [N, u] -> h [N, u], act [N, 3u] = (z, r, hh).
extern "C" __global__ void dg_gru_fwd(const float* __restrict__ xz, const float* __restrict__ hz,
                                      const float* __restrict__ hp, float* h, float* act, long long total, int u)
{
    DG_RNN_LOOP(k, total) {
        const long long n = k / u, j = k - n * u, g3 = n * 3 * u + j;
        const float zg = dg_rnn_sigmoid(xz[g3] + hz[g3]);
        const float rg = dg_rnn_sigmoid(xz[g3 + u] + hz[g3 + u]);
        const float hh = tanhf(xz[g3 + 2 * u] + rg * hz[g3 + 2 * u]);
        act[g3] = zg;
        act[g3 + u] = rg;
        act[g3 + 2 * u] = hh;
        h[k] = hh + zg * (hp[k] - hh);
    }
}

// dh [N, u], act [N, 3u], hz [N, 3u], hp [N, u] -> dxz, dhz [N, 3u], dhp [N, u].
extern "C" __global__ void dg_gru_bwd(const float* __restrict__ dh, const float* __restrict__ act,
                                      const float* __restrict__ hz, const float* __restrict__ hp, float* dxz,
                                      float* dhz, float* dhp, long long total, int u)
{
    DG_RNN_LOOP(k, total) {
        const long long n = k / u, j = k - n * u, g3 = n * 3 * u + j;
        const float zg = act[g3], rg = act[g3 + u], hh = act[g3 + 2 * u], d = dh[k];
        const float dzp = d * (hp[k] - hh) * zg * (1.0f - zg);
        const float dhp_ = d * (1.0f - zg) * (1.0f - hh * hh);
        const float drp = dhp_ * hz[g3 + 2 * u] * rg * (1.0f - rg);
        dxz[g3] = dzp;
        dxz[g3 + u] = drp;
        dxz[g3 + 2 * u] = dhp_;
        dhz[g3] = dzp;
        dhz[g3 + u] = drp;
        dhz[g3 + 2 * u] = dhp_ * rg;
        dhp[k] = d * zg;
    }
}
