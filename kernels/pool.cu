// NHWC float32 max and average pooling, forward and backward.
//
// Geometry (every kernel takes the same list): input [N, H, W, C], output
// [N, HO, WO, C], window KH x KW, strides SH, SW, padding before PT (rows)
// and PL (cols). Window (oh, ow) covers input rows oh*SH - PT + [0, KH).
// One thread per output element (forward) or input element (backward), C
// fastest so that a warp reads contiguous memory; grid-stride loops.
//
// The backward kernels gather (each input element sums over the windows
// that contain it) rather than scatter, so they need no atomics, no zeroed
// output, and give the same result on every run.
#include "common.cuh"

// Max of window (oh, ow) in the order numpy.argmax sees it: cells in
// row-major order, padding cells read as -inf, the first maximum wins and a
// NaN beats any number. Returns the winning cell's index i*KW + j.
__device__ __forceinline__ int dg_window_argmax(const float* x, long long base, int H, int W,
                                                int C, int KH, int KW, int h0, int w0,
                                                float* best_out)
{
    float best = 0.0f;
    int arg = -1;
    for (int i = 0; i < KH; ++i) {
        const int h = h0 + i;
        for (int j = 0; j < KW; ++j) {
            const int w = w0 + j;
            const float v = (h >= 0 && h < H && w >= 0 && w < W)
                                ? x[base + ((long long)h * W + w) * C]
                                : DG_NEG_INF;
            if (arg < 0 || v > best || (v != v && best == best)) {
                best = v;
                arg = i * KW + j;
            }
        }
    }
    *best_out = best;
    return arg;
}

extern "C" __global__ void dg_max_pool_fwd(const float* x, float* y, int N, int H, int W,
                                           int C, int HO, int WO, int KH, int KW, int SH,
                                           int SW, int PT, int PL)
{
    const long long total = (long long)N * HO * WO * C;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const int c = (int)(e % C);
        long long t = e / C;
        const int ow = (int)(t % WO);
        t /= WO;
        const int oh = (int)(t % HO);
        const int n = (int)(t / HO);
        float best;
        dg_window_argmax(x, (long long)n * H * W * C + c, H, W, C, KH, KW, oh * SH - PT,
                         ow * SW - PL, &best);
        y[e] = best;
    }
}

// First and last output index (inclusive) whose window, of size K with stride
// S and padding P, covers input index h; lo > hi when none does.
__device__ __forceinline__ void dg_windows_covering(int h, int K, int S, int P, int OUT,
                                                    int* lo, int* hi)
{
    const int a = h + P - K + 1;  // o*S >= a
    *lo = a <= 0 ? 0 : (a + S - 1) / S;
    const int b = (h + P) / S;    // o*S <= h + P (h + P >= 0)
    *hi = b < OUT - 1 ? b : OUT - 1;
}

extern "C" __global__ void dg_max_pool_bwd(const float* x, const float* dy, float* dx, int N,
                                           int H, int W, int C, int HO, int WO, int KH, int KW,
                                           int SH, int SW, int PT, int PL)
{
    const long long total = (long long)N * H * W * C;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const int c = (int)(e % C);
        long long t = e / C;
        const int w = (int)(t % W);
        t /= W;
        const int h = (int)(t % H);
        const int n = (int)(t / H);
        int oh_lo, oh_hi, ow_lo, ow_hi;
        dg_windows_covering(h, KH, SH, PT, HO, &oh_lo, &oh_hi);
        dg_windows_covering(w, KW, SW, PL, WO, &ow_lo, &ow_hi);
        const long long base = (long long)n * H * W * C + c;
        float acc = 0.0f;
        for (int oh = oh_lo; oh <= oh_hi; ++oh) {
            for (int ow = ow_lo; ow <= ow_hi; ++ow) {
                const int h0 = oh * SH - PT, w0 = ow * SW - PL;
                float best;
                const int arg = dg_window_argmax(x, base, H, W, C, KH, KW, h0, w0, &best);
                if (arg == (h - h0) * KW + (w - w0))
                    acc += dy[(((long long)n * HO + oh) * WO + ow) * C + c];
            }
        }
        dx[e] = acc;
    }
}

// Number of input cells (padding excluded) in window o along one axis.
__device__ __forceinline__ int dg_window_count(int o, int K, int S, int P, int size)
{
    const int a = o * S - P;
    const int lo = a < 0 ? 0 : a;
    const int hi = a + K < size ? a + K : size;
    return hi - lo;
}

extern "C" __global__ void dg_avg_pool_fwd(const float* x, float* y, int N, int H, int W,
                                           int C, int HO, int WO, int KH, int KW, int SH,
                                           int SW, int PT, int PL)
{
    const long long total = (long long)N * HO * WO * C;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const int c = (int)(e % C);
        long long t = e / C;
        const int ow = (int)(t % WO);
        t /= WO;
        const int oh = (int)(t % HO);
        const int n = (int)(t / HO);
        const int h0 = oh * SH - PT, w0 = ow * SW - PL;
        float s = 0.0f;
        for (int i = 0; i < KH; ++i) {
            const int h = h0 + i;
            if (h < 0 || h >= H) continue;
            for (int j = 0; j < KW; ++j) {
                const int w = w0 + j;
                if (w < 0 || w >= W) continue;
                s += x[(((long long)n * H + h) * W + w) * C + c];
            }
        }
        const int count = dg_window_count(oh, KH, SH, PT, H) * dg_window_count(ow, KW, SW, PL, W);
        y[e] = s / (float)count;
    }
}

extern "C" __global__ void dg_avg_pool_bwd(const float* dy, float* dx, int N, int H, int W,
                                           int C, int HO, int WO, int KH, int KW, int SH,
                                           int SW, int PT, int PL)
{
    const long long total = (long long)N * H * W * C;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const int c = (int)(e % C);
        long long t = e / C;
        const int w = (int)(t % W);
        t /= W;
        const int h = (int)(t % H);
        const int n = (int)(t / H);
        int oh_lo, oh_hi, ow_lo, ow_hi;
        dg_windows_covering(h, KH, SH, PT, HO, &oh_lo, &oh_hi);
        dg_windows_covering(w, KW, SW, PL, WO, &ow_lo, &ow_hi);
        float acc = 0.0f;
        for (int oh = oh_lo; oh <= oh_hi; ++oh) {
            const int ch = dg_window_count(oh, KH, SH, PT, H);
            for (int ow = ow_lo; ow <= ow_hi; ++ow) {
                const int count = ch * dg_window_count(ow, KW, SW, PL, W);
                acc += dy[(((long long)n * HO + oh) * WO + ow) * C + c] / (float)count;
            }
        }
        dx[e] = acc;
    }
}
