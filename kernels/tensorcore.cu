// Tensor-core GEMM and convolution kernels (nvcuda::wmma, sm_80 and later):
// the same products as matmul.cu and conv2d.cu, with the inputs rounded to
// the tensor cores' precision and float32 accumulation.
//
//   _tf32  float32 arrays, inputs rounded to TF32 (10-bit mantissa, round to
//          nearest, ties away: wmma::__float_to_tf32) when staged in shared
//          memory; output float32. Opt-in (deepgpu.config).
//   _f16   __half arrays in and out, float32 accumulators (mixed precision).
//   _bf16  __nv_bfloat16 arrays in and out, float32 accumulators.
//
// A block of 128 threads (4 warps, 2 x 2) computes a 64 x 64 tile of C, each
// warp 32 x 32 as 2 x 2 fragments of 16 x 16. Per k-step of 32 the block
// stages A and B in shared memory (zeros outside the matrix, so any M, N, K
// work), then each warp runs its mma_syncs; the accumulators go through
// shared memory to a coalesced epilogue (bias, activation, conversion).
// Operands are read through small loaders (one element at a time, along the
// operand's contiguous axis) as in gemm_core.cuh: a plain or transposed
// matrix, or an implicit im2col view of a convolution.
//
// Grid: (ceil(M / 64), ceil(N / 64), z), block: 128 threads; z walks the
// batch of matmul and the splits of the filter gradient's reduction.
#include <mma.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include "common.cuh"

#define DG_TC_BM 64
#define DG_TC_BN 64
#define DG_TC_BK 32
#define DG_TC_THREADS 128

// Precision policies: In, the arrays' element; S, the staged (shared-memory)
// element; F, the wmma fragment element; FK, the fragment's k; PAD keeps
// fragment rows 32-byte aligned and spreads them over the banks.
struct DgTcTf32 {
    typedef float In;
    typedef float S;
    typedef nvcuda::wmma::precision::tf32 F;
    static constexpr int FK = 8, PAD = 4;
    static __device__ __forceinline__ S stage(In v) { return nvcuda::wmma::__float_to_tf32(v); }
    static __device__ __forceinline__ S zero() { return 0.0f; }
    static __device__ __forceinline__ float tof(In v) { return v; }
    static __device__ __forceinline__ In from(float v) { return v; }
};

struct DgTcF16 {
    typedef __half In;
    typedef __half S;
    typedef __half F;
    static constexpr int FK = 16, PAD = 8;
    static __device__ __forceinline__ S stage(In v) { return v; }
    static __device__ __forceinline__ S zero() { return __float2half_rn(0.0f); }
    static __device__ __forceinline__ float tof(In v) { return __half2float(v); }
    static __device__ __forceinline__ In from(float v) { return __float2half_rn(v); }
};

struct DgTcBf16 {
    typedef __nv_bfloat16 In;
    typedef __nv_bfloat16 S;
    typedef __nv_bfloat16 F;
    static constexpr int FK = 16, PAD = 8;
    static __device__ __forceinline__ S stage(In v) { return v; }
    static __device__ __forceinline__ S zero() { return __float2bfloat16_rn(0.0f); }
    static __device__ __forceinline__ float tof(In v) { return __bfloat162float(v); }
    static __device__ __forceinline__ In from(float v) { return __float2bfloat16_rn(v); }
};

template <class P>
struct __align__(32) DgTcSmem {
    typename P::S a[DG_TC_BM][DG_TC_BK + P::PAD];  // A(m, k): row-major matrix_a
    typename P::S b[DG_TC_BN][DG_TC_BK + P::PAD];  // B(n, k): column-major matrix_b
    float c[DG_TC_BM][DG_TC_BN + 4];               // the block's accumulators
};

// Stage rows [o0, o0 + R) x k in [k0, k0 + BK) of an operand (outer, k) into
// dst[R][BK + PAD]. k_fast: consecutive k are adjacent in memory, so
// consecutive threads take consecutive k (else consecutive outer indices).
template <class P, int R, class L>
__device__ __forceinline__ void dg_tc_stage(typename P::S (*dst)[DG_TC_BK + P::PAD], const L& l,
                                            int o0, int limit, int k0, int k_end, bool k_fast)
{
    for (int e = threadIdx.x; e < R * DG_TC_BK; e += DG_TC_THREADS) {
        const int r = k_fast ? e / DG_TC_BK : e % R;
        const int k = k_fast ? e % DG_TC_BK : e / R;
        const int o = o0 + r, kk = k0 + k;
        dst[r][k] = (o < limit && kk < k_end) ? P::stage(l.one(o, kk)) : P::zero();
    }
}

// sm.c[m - m0][n - n0] = sum over k in [k_begin, k_end) of A(m, k) * B(n, k)
// for the 64 x 64 tile at (m0, n0); rows and columns outside M x N are zero.
template <class P, class LA, class LB>
__device__ __forceinline__ void dg_tc_gemm(DgTcSmem<P>& sm, int M, int N, int k_begin, int k_end,
                                           int m0, int n0, bool a_kfast, bool b_kfast,
                                           const LA& la, const LB& lb)
{
    using namespace nvcuda;
    const int warp = threadIdx.x / 32;
    const int wm = (warp / 2) * 32, wn = (warp % 2) * 32;
    constexpr int LD = DG_TC_BK + P::PAD;
    wmma::fragment<wmma::accumulator, 16, 16, P::FK, float> acc[2][2];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

    for (int k0 = k_begin; k0 < k_end; k0 += DG_TC_BK) {
        dg_tc_stage<P, DG_TC_BM>(sm.a, la, m0, M, k0, k_end, a_kfast);
        dg_tc_stage<P, DG_TC_BN>(sm.b, lb, n0, N, k0, k_end, b_kfast);
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < DG_TC_BK; kk += P::FK) {
            wmma::fragment<wmma::matrix_a, 16, 16, P::FK, typename P::F, wmma::row_major> fa[2];
            wmma::fragment<wmma::matrix_b, 16, 16, P::FK, typename P::F, wmma::col_major> fb[2];
#pragma unroll
            for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], &sm.a[wm + 16 * i][kk], LD);
#pragma unroll
            for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(fb[j], &sm.b[wn + 16 * j][kk], LD);
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
        }
        __syncthreads();  // the next k-step overwrites the staged tiles
    }
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j)
            wmma::store_matrix_sync(&sm.c[wm + 16 * i][wn + 16 * j], acc[i][j], DG_TC_BN + 4,
                                    wmma::mem_row_major);
    __syncthreads();
}

__device__ __forceinline__ void dg_tc_put(float* p, float v) { *p = v; }
__device__ __forceinline__ void dg_tc_put(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void dg_tc_put(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// out[m, n] = act(sm.c + bias[n]), rounded to Out, for the tile's cells inside
// M x N; consecutive threads write consecutive n.
template <class P, class Out>
__device__ __forceinline__ void dg_tc_epilogue(const DgTcSmem<P>& sm, int M, int N, int m0, int n0,
                                               Out* out, int ldc, const typename P::In* bias,
                                               int act)
{
    for (int e = threadIdx.x; e < DG_TC_BM * DG_TC_BN; e += DG_TC_THREADS) {
        const int m = m0 + e / DG_TC_BN, n = n0 + e % DG_TC_BN;
        if (m >= M || n >= N) continue;
        float v = sm.c[e / DG_TC_BN][e % DG_TC_BN];
        if (bias) v += P::tof(bias[n]);
        dg_tc_put(out + (long long)m * ldc + n, dg_activate(v, act));
    }
}

// ------------------------------------------------------------------ loaders
template <class T>
struct DgTcMatA {  // A(m, k) of the stored [M, K] (or [K, M] when transposed)
    const T* p;
    int ld, t;
    __device__ __forceinline__ T one(int m, int k) const
    {
        return t ? p[(long long)k * ld + m] : p[(long long)m * ld + k];
    }
};

template <class T>
struct DgTcMatB {  // B(n, k) of the stored [K, N] (or [N, K] when transposed)
    const T* p;
    int ld, t;
    __device__ __forceinline__ T one(int n, int k) const
    {
        return t ? p[(long long)n * ld + k] : p[(long long)k * ld + n];
    }
};

struct DgTcGeom {
    int N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW, HO, WO;
};

// im2col(m, k): m = (n, oh, ow), k = (i, j, c); x or zero in the padding.
template <class P>
__device__ __forceinline__ typename P::In dg_tc_im2col(const typename P::In* x, const DgTcGeom& g,
                                                       int m, int k)
{
    const int ow = m % g.WO, t = m / g.WO;
    const int oh = t % g.HO, n = t / g.HO;
    const int c = k % g.C, t2 = k / g.C;
    const int j = t2 % g.KW, i = t2 / g.KW;
    const int ih = oh * g.SH - g.PT + i * g.DH;
    const int iw = ow * g.SW - g.PL + j * g.DW;
    if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) return P::from(0.0f);
    return x[((long long)(n * g.H + ih) * g.W + iw) * g.C + c];
}

template <class P>
struct DgTcFwdA {  // A(m, k) = im2col(m, k), k-fast
    const typename P::In* x;
    DgTcGeom g;
    __device__ __forceinline__ typename P::In one(int m, int k) const { return dg_tc_im2col<P>(x, g, m, k); }
};

template <class P>
struct DgTcFwdB {  // B(o, k) = w[k, o], o-fast
    const typename P::In* w;
    int O;
    __device__ __forceinline__ typename P::In one(int o, int k) const { return w[(long long)k * O + o]; }
};

template <class P>
struct DgTcGradInA {  // A((n, h, w), (i, j, o)) = dy[n, oh, ow, o] where the tap lands, k-fast
    const typename P::In* dy;
    DgTcGeom g;
    __device__ __forceinline__ typename P::In one(int m, int k) const
    {
        const int w_ = m % g.W, t = m / g.W;
        const int h = t % g.H, n = t / g.H;
        const int o = k % g.O, t2 = k / g.O;
        const int j = t2 % g.KW, i = t2 / g.KW;
        const int th = h + g.PT - i * g.DH, tw = w_ + g.PL - j * g.DW;
        if (th < 0 || tw < 0 || th % g.SH || tw % g.SW) return P::from(0.0f);
        const int oh = th / g.SH, ow = tw / g.SW;
        if (oh >= g.HO || ow >= g.WO) return P::from(0.0f);
        return dy[((long long)(n * g.HO + oh) * g.WO + ow) * g.O + o];
    }
};

template <class P>
struct DgTcGradInB {  // B(c, (i, j, o)) = w[i, j, c, o], k-fast
    const typename P::In* w;
    int C, O;
    __device__ __forceinline__ typename P::In one(int c, int k) const
    {
        return w[((long long)(k / O) * C + c) * O + k % O];
    }
};

template <class P>
struct DgTcGradWA {  // A((i, j, c), m) = im2col(m, (i, j, c)), c-fast
    const typename P::In* x;
    DgTcGeom g;
    __device__ __forceinline__ typename P::In one(int r, int m) const { return dg_tc_im2col<P>(x, g, m, r); }
};

template <class P>
struct DgTcGradWB {  // B(o, m) = dy[m, o], o-fast
    const typename P::In* dy;
    int O;
    __device__ __forceinline__ typename P::In one(int o, int m) const { return dy[(long long)m * O + o]; }
};

// ------------------------------------------------------------------ kernels' bodies
// matmul: c = act(op(a) @ op(b) + bias) per batch item z = blockIdx.z, whose
// matrices start at z * stride_{a,b,c} (0 broadcasts one matrix); ta, tb: 1 = transposed.
template <class P>
__device__ __forceinline__ void dg_tc_matmul(const typename P::In* a, const typename P::In* b,
                                             typename P::In* c, const typename P::In* bias, int M,
                                             int N, int K, int lda, int ldb, int ldc,
                                             long long stride_a, long long stride_b,
                                             long long stride_c, int ta, int tb, int act)
{
    __shared__ DgTcSmem<P> sm;
    const long long z = blockIdx.z;
    DgTcMatA<typename P::In> la = {a + z * stride_a, lda, ta};
    DgTcMatB<typename P::In> lb = {b + z * stride_b, ldb, tb};
    const int m0 = blockIdx.x * DG_TC_BM, n0 = blockIdx.y * DG_TC_BN;
    dg_tc_gemm<P>(sm, M, N, 0, K, m0, n0, !ta, tb != 0, la, lb);
    dg_tc_epilogue<P, typename P::In>(sm, M, N, m0, n0, c + z * stride_c, ldc, bias, act);
}

template <class P>
__device__ __forceinline__ void dg_tc_conv_fwd(const typename P::In* x, const typename P::In* w,
                                               const typename P::In* bias, typename P::In* y,
                                               const DgTcGeom& g, int act)
{
    __shared__ DgTcSmem<P> sm;
    DgTcFwdA<P> la = {x, g};
    DgTcFwdB<P> lb = {w, g.O};
    const int M = g.N * g.HO * g.WO, m0 = blockIdx.x * DG_TC_BM, n0 = blockIdx.y * DG_TC_BN;
    dg_tc_gemm<P>(sm, M, g.O, 0, g.KH * g.KW * g.C, m0, n0, true, false, la, lb);
    dg_tc_epilogue<P, typename P::In>(sm, M, g.O, m0, n0, y, g.O, bias, act);
}

template <class P>
__device__ __forceinline__ void dg_tc_conv_grad_input(const typename P::In* dy,
                                                      const typename P::In* w,
                                                      typename P::In* dx, const DgTcGeom& g)
{
    __shared__ DgTcSmem<P> sm;
    DgTcGradInA<P> la = {dy, g};
    DgTcGradInB<P> lb = {w, g.C, g.O};
    const int M = g.N * g.H * g.W, m0 = blockIdx.x * DG_TC_BM, n0 = blockIdx.y * DG_TC_BN;
    dg_tc_gemm<P>(sm, M, g.C, 0, g.KH * g.KW * g.O, m0, n0, true, true, la, lb);
    dg_tc_epilogue<P, typename P::In>(sm, M, g.C, m0, n0, dx, g.C, nullptr, DG_ACT_NONE);
}

// Filter gradient, float32 out: split z = blockIdx.z sums m in [z*chunk,
// min((z+1)*chunk, N*HO*WO)) into out + z * (KH*KW*C*O). chunk is a multiple
// of DG_TC_BK. The launcher adds the splits (and converts to 16 bits) with
// dg_conv2d_sum_splits / dg_tc_sum_splits_* (common.cuh's dg_sum_splits_into), unless one
// float32 split is the result.
template <class P>
__device__ __forceinline__ void dg_tc_conv_grad_filter(const typename P::In* x,
                                                       const typename P::In* dy, float* out,
                                                       const DgTcGeom& g, int chunk)
{
    __shared__ DgTcSmem<P> sm;
    DgTcGradWA<P> la = {x, g};
    DgTcGradWB<P> lb = {dy, g.O};
    const int rows = g.KH * g.KW * g.C, total = g.N * g.HO * g.WO;
    const int k_begin = blockIdx.z * chunk;
    const int k_end = total - k_begin < chunk ? total : k_begin + chunk;
    const int m0 = blockIdx.x * DG_TC_BM, n0 = blockIdx.y * DG_TC_BN;
    dg_tc_gemm<P>(sm, rows, g.O, k_begin, k_end, m0, n0, false, false, la, lb);
    dg_tc_epilogue<P, float>(sm, rows, g.O, m0, n0, out + (long long)blockIdx.z * rows * g.O, g.O,
                             nullptr, DG_ACT_NONE);
}

// ------------------------------------------------------------------ entry points
// One per operation and precision (plain names, so the tests find every kernel
// in the source text). Convolution geometry as conv2d.cu.
extern "C" __global__ void dg_tc_matmul_tf32(const float* a, const float* b, float* c,
                                             const float* bias, int M, int N, int K, int lda,
                                             int ldb, int ldc, long long stride_a,
                                             long long stride_b, long long stride_c, int ta,
                                             int tb, int act)
{
    dg_tc_matmul<DgTcTf32>(a, b, c, bias, M, N, K, lda, ldb, ldc, stride_a, stride_b, stride_c, ta,
                           tb, act);
}

extern "C" __global__ void dg_tc_matmul_f16(const __half* a, const __half* b, __half* c,
                                            const __half* bias, int M, int N, int K, int lda,
                                            int ldb, int ldc, long long stride_a,
                                            long long stride_b, long long stride_c, int ta, int tb,
                                            int act)
{
    dg_tc_matmul<DgTcF16>(a, b, c, bias, M, N, K, lda, ldb, ldc, stride_a, stride_b, stride_c, ta,
                          tb, act);
}

extern "C" __global__ void dg_tc_matmul_bf16(const __nv_bfloat16* a, const __nv_bfloat16* b,
                                             __nv_bfloat16* c, const __nv_bfloat16* bias, int M,
                                             int N, int K, int lda, int ldb, int ldc,
                                             long long stride_a, long long stride_b,
                                             long long stride_c, int ta, int tb, int act)
{
    dg_tc_matmul<DgTcBf16>(a, b, c, bias, M, N, K, lda, ldb, ldc, stride_a, stride_b, stride_c, ta,
                           tb, act);
}

extern "C" __global__ void dg_tc_conv2d_fwd_tf32(const float* x, const float* w, const float* bias,
                                                 float* y, int N, int H, int W, int C, int O,
                                                 int KH, int KW, int SH, int SW, int PT, int PL,
                                                 int DH, int DW, int HO, int WO, int act)
{
    const DgTcGeom g = {N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW, HO, WO};
    dg_tc_conv_fwd<DgTcTf32>(x, w, bias, y, g, act);
}

extern "C" __global__ void dg_tc_conv2d_fwd_f16(const __half* x, const __half* w,
                                                const __half* bias, __half* y, int N, int H, int W,
                                                int C, int O, int KH, int KW, int SH, int SW,
                                                int PT, int PL, int DH, int DW, int HO, int WO,
                                                int act)
{
    const DgTcGeom g = {N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW, HO, WO};
    dg_tc_conv_fwd<DgTcF16>(x, w, bias, y, g, act);
}

extern "C" __global__ void dg_tc_conv2d_fwd_bf16(const __nv_bfloat16* x, const __nv_bfloat16* w,
                                                 const __nv_bfloat16* bias, __nv_bfloat16* y,
                                                 int N, int H, int W, int C, int O, int KH, int KW,
                                                 int SH, int SW, int PT, int PL, int DH, int DW,
                                                 int HO, int WO, int act)
{
    const DgTcGeom g = {N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW, HO, WO};
    dg_tc_conv_fwd<DgTcBf16>(x, w, bias, y, g, act);
}

extern "C" __global__ void dg_tc_conv2d_grad_input_tf32(const float* dy, const float* w, float* dx,
                                                        int N, int H, int W, int C, int O, int KH,
                                                        int KW, int SH, int SW, int PT, int PL,
                                                        int DH, int DW, int HO, int WO)
{
    const DgTcGeom g = {N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW, HO, WO};
    dg_tc_conv_grad_input<DgTcTf32>(dy, w, dx, g);
}

extern "C" __global__ void dg_tc_conv2d_grad_input_f16(const __half* dy, const __half* w,
                                                       __half* dx, int N, int H, int W, int C,
                                                       int O, int KH, int KW, int SH, int SW,
                                                       int PT, int PL, int DH, int DW, int HO,
                                                       int WO)
{
    const DgTcGeom g = {N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW, HO, WO};
    dg_tc_conv_grad_input<DgTcF16>(dy, w, dx, g);
}

extern "C" __global__ void dg_tc_conv2d_grad_input_bf16(const __nv_bfloat16* dy,
                                                        const __nv_bfloat16* w, __nv_bfloat16* dx,
                                                        int N, int H, int W, int C, int O, int KH,
                                                        int KW, int SH, int SW, int PT, int PL,
                                                        int DH, int DW, int HO, int WO)
{
    const DgTcGeom g = {N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW, HO, WO};
    dg_tc_conv_grad_input<DgTcBf16>(dy, w, dx, g);
}

extern "C" __global__ void dg_tc_conv2d_grad_filter_tf32(const float* x, const float* dy,
                                                         float* out, int N, int H, int W, int C,
                                                         int O, int KH, int KW, int SH, int SW,
                                                         int PT, int PL, int DH, int DW, int HO,
                                                         int WO, int chunk)
{
    const DgTcGeom g = {N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW, HO, WO};
    dg_tc_conv_grad_filter<DgTcTf32>(x, dy, out, g, chunk);
}

extern "C" __global__ void dg_tc_conv2d_grad_filter_f16(const __half* x, const __half* dy,
                                                        float* out, int N, int H, int W, int C,
                                                        int O, int KH, int KW, int SH, int SW,
                                                        int PT, int PL, int DH, int DW, int HO,
                                                        int WO, int chunk)
{
    const DgTcGeom g = {N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW, HO, WO};
    dg_tc_conv_grad_filter<DgTcF16>(x, dy, out, g, chunk);
}

extern "C" __global__ void dg_tc_conv2d_grad_filter_bf16(const __nv_bfloat16* x,
                                                         const __nv_bfloat16* dy, float* out,
                                                         int N, int H, int W, int C, int O, int KH,
                                                         int KW, int SH, int SW, int PT, int PL,
                                                         int DH, int DW, int HO, int WO, int chunk)
{
    const DgTcGeom g = {N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW, HO, WO};
    dg_tc_conv_grad_filter<DgTcBf16>(x, dy, out, g, chunk);
}

extern "C" __global__ void dg_tc_sum_splits_f16(const float* parts, __half* out, int splits, int n)
{
    dg_sum_splits_into<DgTcF16>(parts, out, splits, n);
}

extern "C" __global__ void dg_tc_sum_splits_bf16(const float* parts, __nv_bfloat16* out,
                                                 int splits, int n)
{
    dg_sum_splits_into<DgTcBf16>(parts, out, splits, n);
}
