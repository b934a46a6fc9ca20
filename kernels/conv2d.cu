// NHWC float32 convolution (cross-correlation, as TF) with kernel [KH, KW, C, O],
// as implicit GEMMs on the shared tile core: the im2col matrix is never
// materialised, each tile load computes its input address on the fly.
//
// Geometry (every kernel takes the same list): input [N, H, W, C], output
// [N, HO, WO, O], strides SH, SW, padding before PT (rows) and PL (cols),
// dilation DH, DW. Input row ih of output row oh and tap i is
// oh*SH - PT + i*DH; cells outside the input read as zero.
// Grid: (ceil(rows/64), ceil(cols/64), splits), block: DG_THREADS.
#include "gemm_core.cuh"

struct DgConvGeom {
    int N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW, HO, WO;
};

// im2col(m, k): m = (n, oh, ow), k = (i, j, c); value of x or 0 in the padding.
__device__ __forceinline__ float dg_im2col(const float* x, const DgConvGeom& g, int m, int k)
{
    const int ow = m % g.WO;
    const int t = m / g.WO;
    const int oh = t % g.HO;
    const int n = t / g.HO;
    const int c = k % g.C;
    const int t2 = k / g.C;
    const int j = t2 % g.KW;
    const int i = t2 / g.KW;
    const int ih = oh * g.SH - g.PT + i * g.DH;
    const int iw = ow * g.SW - g.PL + j * g.DW;
    if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) return 0.0f;
    return x[(((long long)n * g.H + ih) * g.W + iw) * g.C + c];
}

// ---------------------------------------------------------------- forward
// y[(n, oh, ow), o] = act(sum_k im2col(m, k) * w[k, o] + bias[o]); bias may be null.
struct DgFwdA {
    const float* x;
    DgConvGeom g;
    __device__ __forceinline__ float operator()(int m, int k) const { return dg_im2col(x, g, m, k); }
};

struct DgFwdB {
    const float* w;
    int O;
    __device__ __forceinline__ float operator()(int k, int o) const { return w[(long long)k * O + o]; }
};

struct DgFwdStore {
    float* y;
    const float* bias;
    int O;
    int act;
    __device__ __forceinline__ void operator()(int m, int o, float v) const
    {
        if (bias) v += bias[o];
        y[(long long)m * O + o] = dg_activate(v, act);
    }
};

extern "C" __global__ void dg_conv2d_fwd(const float* x, const float* w, const float* bias,
                                         float* y, int N, int H, int W, int C, int O, int KH,
                                         int KW, int SH, int SW, int PT, int PL, int DH, int DW,
                                         int HO, int WO, int act)
{
    DgConvGeom g = {N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW, HO, WO};
    DgFwdA la = {x, g};
    DgFwdB lb = {w, O};
    DgFwdStore st = {y, bias, O, act};
    dg_gemm_tile<true, true>(N * HO * WO, O, 0, KH * KW * C, la, lb, st);
}

// ---------------------------------------------------- gradient of the input
// dx[(n, h, w), c] = sum over k = (i, j, o) of dy[n, oh, ow, o] * w[i, j, c, o]
// where h = oh*SH - PT + i*DH (and the same for w); taps whose oh is not an
// integer in [0, HO) contribute nothing.
struct DgGradInA {
    const float* dy;
    DgConvGeom g;
    __device__ __forceinline__ float operator()(int m, int k) const
    {
        const int w_ = m % g.W;
        const int t = m / g.W;
        const int h = t % g.H;
        const int n = t / g.H;
        const int o = k % g.O;
        const int t2 = k / g.O;
        const int j = t2 % g.KW;
        const int i = t2 / g.KW;
        const int th = h + g.PT - i * g.DH;
        const int tw = w_ + g.PL - j * g.DW;
        if (th < 0 || tw < 0 || th % g.SH != 0 || tw % g.SW != 0) return 0.0f;
        const int oh = th / g.SH, ow = tw / g.SW;
        if (oh >= g.HO || ow >= g.WO) return 0.0f;
        return dy[(((long long)n * g.HO + oh) * g.WO + ow) * g.O + o];
    }
};

struct DgGradInB {  // B(k = (i, j, o), c) = w[i, j, c, o]
    const float* w;
    int KW, C, O;
    __device__ __forceinline__ float operator()(int k, int c) const
    {
        const int o = k % O;
        const int ij = k / O;  // i * KW + j
        return w[((long long)ij * C + c) * O + o];
    }
};

struct DgPlainStore {
    float* out;
    int ld;
    __device__ __forceinline__ void operator()(int m, int n, float v) const
    {
        out[(long long)m * ld + n] = v;
    }
};

extern "C" __global__ void dg_conv2d_grad_input(const float* dy, const float* w, float* dx,
                                                int N, int H, int W, int C, int O, int KH,
                                                int KW, int SH, int SW, int PT, int PL, int DH,
                                                int DW, int HO, int WO)
{
    DgConvGeom g = {N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW, HO, WO};
    DgGradInA la = {dy, g};
    DgGradInB lb = {w, KW, C, O};
    DgPlainStore st = {dx, C};
    // B's k (o fastest) is contiguous in w; A's k is contiguous in dy.
    dg_gemm_tile<true, false>(N * H * W, C, 0, KH * KW * O, la, lb, st);
}

// --------------------------------------------------- gradient of the kernel
// dw[(i, j, c), o] = sum over m = (n, oh, ow) of im2col(m, (i, j, c)) * dy[m, o].
// The reduction over m is long and the output small, so it is split over
// blockIdx.z: split z sums m in [z*chunk, min((z+1)*chunk, M)) into
// out + z * (KH*KW*C*O); dg_sum_splits (elementwise.cu) adds the splits.
// chunk must be a multiple of DG_BK.
struct DgGradWA {  // A(r = (i, j, c), m) = im2col(m, r)
    const float* x;
    DgConvGeom g;
    __device__ __forceinline__ float operator()(int r, int m) const { return dg_im2col(x, g, m, r); }
};

struct DgGradWB {
    const float* dy;
    int O;
    __device__ __forceinline__ float operator()(int m, int o) const { return dy[(long long)m * O + o]; }
};

extern "C" __global__ void dg_conv2d_grad_filter(const float* x, const float* dy, float* out,
                                                 int N, int H, int W, int C, int O, int KH,
                                                 int KW, int SH, int SW, int PT, int PL, int DH,
                                                 int DW, int HO, int WO, int chunk)
{
    DgConvGeom g = {N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW, HO, WO};
    const int rows = KH * KW * C;
    const int total = N * HO * WO;
    const int k_begin = blockIdx.z * chunk;
    const int k_end = total < k_begin + chunk ? total : k_begin + chunk;
    DgGradWA la = {x, g};
    DgGradWB lb = {dy, O};
    DgPlainStore st = {out + (long long)blockIdx.z * rows * O, O};
    // A's rows (c fastest) are contiguous in x; B's columns are contiguous in dy.
    dg_gemm_tile<false, true>(rows, O, k_begin, k_end, la, lb, st);
}
