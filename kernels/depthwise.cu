// NHWC float32 depthwise convolution: forward, input gradient, filter gradient.
//
// Geometry (every kernel takes the same list): input [N, H, W, C], kernel [KH, KW, C, M],
// output [N, HO, WO, C*M], strides SH, SW, dilations DH, DW, padding before PT (rows) and
// PL (cols). Output channel q = c*M + m reads input channel c = q / M (TF's order), so a
// kernel tap and an output pixel share the index q. `wide` = 1 when an array holds 2^31
// elements or more (64-bit offsets); else the index math stays in 32 bits.
//
// A depthwise 3x3 does 9 multiply-adds per value read: it is bound by memory. Each work item
// is one element with the channel fastest, so a warp reads and writes contiguous memory, and
// the window's reads of neighbouring pixels hit L1/L2. The padding is skipped, never stored.
//
// dg_dw_fwd: one item per output element, the window summed in a register, then bias [C*M] (may be
//   null) and the DG_ACT_* activation act applied before the store (an inference-folded
//   DepthwiseConv2D -> BatchNormalization -> ReLU6 in one launch).
// dg_dw_grad_input: one item per input element, gathering from every output whose window
//   holds it (no atomics, no zeroed output, the same result on every run).
// dg_dw_grad_filter_part: block (q-chunk of 32, tap, split s) sums its channels over the
//   pixels p = s*8 + lane (step S*8): 32 channels x 8 pixel lanes per block, reduced in shared
//   memory into part[s][tap][q]; dg_dw_grad_filter_sum adds the S parts into dk (two launches,
//   deterministic, no atomics).
#include "common.cuh"

template <typename I>
__device__ __forceinline__ void dg_dw_fwd_t(const float* x, const float* k, const float* bias, float* y, int N,
                                            int H, int W, int C, int M, int KH, int KW, int HO, int WO, int SH,
                                            int SW, int DH, int DW, int PT, int PL, int act)
{
    const I CM = (I)C * M, total = (I)N * HO * WO * CM;
    for (I e = (I)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (I)gridDim.x * blockDim.x) {
        const int q = (int)(e % CM);
        I t = e / CM;
        const int ow = (int)(t % WO);
        t /= WO;
        const int oh = (int)(t % HO);
        const I n = t / HO;
        const int c = q / M;
        float acc = 0.0f;
        for (int i = 0; i < KH; ++i) {
            const int ih = oh * SH - PT + i * DH;
            if (ih < 0 || ih >= H) continue;
            for (int j = 0; j < KW; ++j) {
                const int iw = ow * SW - PL + j * DW;
                if (iw < 0 || iw >= W) continue;
                acc += x[((n * H + ih) * W + iw) * C + c] * k[(I)(i * KW + j) * CM + q];
            }
        }
        y[e] = dg_activate(bias ? acc + bias[q] : acc, act);
    }
}

extern "C" __global__ void dg_dw_fwd(const float* x, const float* k, const float* bias, float* y, int N, int H,
                                     int W, int C, int M, int KH, int KW, int HO, int WO, int SH, int SW, int DH,
                                     int DW, int PT, int PL, int act, int wide)
{
    if (wide)
        dg_dw_fwd_t<long long>(x, k, bias, y, N, H, W, C, M, KH, KW, HO, WO, SH, SW, DH, DW, PT, PL, act);
    else
        dg_dw_fwd_t<int>(x, k, bias, y, N, H, W, C, M, KH, KW, HO, WO, SH, SW, DH, DW, PT, PL, act);
}

template <typename I>
__device__ __forceinline__ void dg_dw_grad_input_t(const float* dy, const float* k, float* dx, int N, int H,
                                                   int W, int C, int M, int KH, int KW, int HO, int WO, int SH,
                                                   int SW, int DH, int DW, int PT, int PL)
{
    const I CM = (I)C * M, total = (I)N * H * W * C;
    for (I e = (I)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (I)gridDim.x * blockDim.x) {
        const int c = (int)(e % C);
        I t = e / C;
        const int iw = (int)(t % W);
        t /= W;
        const int ih = (int)(t % H);
        const I n = t / H;
        float acc = 0.0f;
        for (int i = 0; i < KH; ++i) {
            const int th = ih + PT - i * DH;  // oh * SH for the output row that reads ih at tap i
            if (th < 0 || th % SH) continue;
            const int oh = th / SH;
            if (oh >= HO) continue;
            for (int j = 0; j < KW; ++j) {
                const int tw = iw + PL - j * DW;
                if (tw < 0 || tw % SW) continue;
                const int ow = tw / SW;
                if (ow >= WO) continue;
                const float* g = dy + ((n * HO + oh) * WO + ow) * CM + (I)c * M;
                const float* kk = k + (I)(i * KW + j) * CM + (I)c * M;
                for (int m = 0; m < M; ++m) acc += g[m] * kk[m];
            }
        }
        dx[e] = acc;
    }
}

extern "C" __global__ void dg_dw_grad_input(const float* dy, const float* k, float* dx, int N, int H, int W,
                                            int C, int M, int KH, int KW, int HO, int WO, int SH, int SW,
                                            int DH, int DW, int PT, int PL, int wide)
{
    if (wide)
        dg_dw_grad_input_t<long long>(dy, k, dx, N, H, W, C, M, KH, KW, HO, WO, SH, SW, DH, DW, PT, PL);
    else
        dg_dw_grad_input_t<int>(dy, k, dx, N, H, W, C, M, KH, KW, HO, WO, SH, SW, DH, DW, PT, PL);
}

#define DG_DW_QB 32     // channels per block (threadIdx.x % 32)
#define DG_DW_LANES 8   // pixel lanes per block (threadIdx.x / 32)

// Launched with blockDim 256, grid (ceil(C*M / 32), KH*KW, S).
extern "C" __global__ void dg_dw_grad_filter_part(const float* x, const float* dy, float* part, int N, int H,
                                                  int W, int C, int M, int KH, int KW, int HO, int WO, int SH,
                                                  int SW, int DH, int DW, int PT, int PL)
{
    __shared__ float sums[DG_DW_LANES][DG_DW_QB];
    const int lane = threadIdx.x / DG_DW_QB, ql = threadIdx.x % DG_DW_QB;
    const int CM = C * M, q = blockIdx.x * DG_DW_QB + ql, tap = blockIdx.y, S = gridDim.z, s = blockIdx.z;
    const int i = tap / KW, j = tap % KW;
    const long long P = (long long)N * HO * WO;
    float acc = 0.0f;
    if (q < CM) {
        const int c = q / M;
        for (long long p = (long long)s * DG_DW_LANES + lane; p < P; p += (long long)S * DG_DW_LANES) {
            const int ow = (int)(p % WO);
            const long long t = p / WO;
            const int oh = (int)(t % HO);
            const long long n = t / HO;
            const int ih = oh * SH - PT + i * DH, iw = ow * SW - PL + j * DW;
            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
            acc += x[((n * H + ih) * W + iw) * C + c] * dy[p * CM + q];
        }
    }
    sums[lane][ql] = acc;
    __syncthreads();
    if (lane == 0 && q < CM) {
        float total = 0.0f;
        for (int l = 0; l < DG_DW_LANES; ++l) total += sums[l][ql];
        part[((long long)s * KH * KW + tap) * CM + q] = total;
    }
}

// dk[e] = sum over s of part[s][e], e < n = KH*KW*C*M.
extern "C" __global__ void dg_dw_grad_filter_sum(const float* part, float* dk, int n, int S)
{
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < n; e += gridDim.x * blockDim.x) {
        float total = 0.0f;
        for (int s = 0; s < S; ++s) total += part[(long long)s * n + e];
        dk[e] = total;
    }
}
