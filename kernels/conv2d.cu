// NHWC float32 convolution (cross-correlation, as TF) with kernel [KH, KW, C, O],
// as implicit GEMMs on the shared tile core: the im2col matrix is never
// materialised, each tile load computes its input address on the fly.
//
// Geometry (every kernel takes the same list): input [N, H, W, C], output
// [N, HO, WO, O], strides SH, SW, padding before PT (rows) and PL (cols),
// dilation DH, DW. Input row ih of output row oh and tap i is
// oh*SH - PT + i*DH; cells outside the input read as zero.
//
// dg_conv2d_<op>[_<tile>]: the suffix names the tile (DgTile<tile> in
// gemm_core.cuh), none for 128x128. flags: bit 0, the GEMM's A operand may
// be read as float4; bit 1, B; bit 2, the output may be written as float4
// (kernels/conv.py says when: channel counts that are multiples of 4, and
// every array the operand reads 16-byte aligned); bit 3 (filter gradient
// only), the bias row: see dg_conv_grad_filter.
// Grid: (ceil(rows / BM), ceil(cols / BN), splits), block: the tile's THREADS.
//
// The gradients take ym, the forward's output, or null: when given, each
// load of dy is masked by (ym > 0) (the gradient through a fused ReLU, as
// dg_relu_grad), so no masked copy of dy is made.
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
    return x[((n * g.H + ih) * g.W + iw) * g.C + c];
}

// ---------------------------------------------------------------- forward
// y[(n, oh, ow), o] = act(sum_k im2col(m, k) * w[k, o] + bias[o]).
// Offsets inside one image (or the kernel, or dy) fit in int: the launcher
// checks that every array has fewer than 2^31 elements.
//
// A = im2col, k-fast: with C % 4 == 0 four consecutive k are four channels of one pixel.
struct DgFwdA {
    const float* x;
    DgConvGeom g;
    struct Ctx {
        const float* img;  // x[n]
        int ih0, iw0;      // input cell of tap (0, 0)
    };
    struct Kst {
        int c, j, i;  // k = (i * KW + j) * C + c
    };
    __device__ __forceinline__ Ctx ctx(int m) const
    {
        const int ow = m % g.WO;
        const int t = m / g.WO;
        const int oh = t % g.HO;
        const int n = t / g.HO;
        Ctx c = {x + (long long)n * g.H * g.W * g.C, oh * g.SH - g.PT, ow * g.SW - g.PL};
        return c;
    }
    __device__ __forceinline__ Kst kst(int k) const
    {
        const int t = k / g.C;
        Kst s = {k - t * g.C, t % g.KW, t / g.KW};
        return s;
    }
    __device__ __forceinline__ void next(Kst& s, int step) const { dg_carry(s.c, g.C, s.j, g.KW, s.i, step); }
    __device__ __forceinline__ float4 vec(const Ctx& c, const Kst& s) const
    {
        const int ih = c.ih0 + s.i * g.DH;
        const int iw = c.iw0 + s.j * g.DW;
        if ((unsigned)ih >= (unsigned)g.H || (unsigned)iw >= (unsigned)g.W)
            return make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        return dg_ld4(c.img + ((ih * g.W + iw) * g.C + s.c));
    }
    __device__ __forceinline__ float one(int m, int k) const { return dg_im2col(x, g, m, k); }
};

struct DgFwdB {  // B(o, k) = w[k, o], o-fast
    const float* w;
    int O;
    typedef const float* Ctx;
    typedef int Kst;
    __device__ __forceinline__ Ctx ctx(int o) const { return w + o; }
    __device__ __forceinline__ Kst kst(int k) const { return k; }
    __device__ __forceinline__ void next(Kst& k, int step) const { k += step; }
    __device__ __forceinline__ float4 vec(Ctx c, Kst k) const { return dg_ld4(c + k * O); }
    __device__ __forceinline__ float one(int o, int k) const { return w[k * O + o]; }
};

template <class T>
__device__ __forceinline__ void dg_conv_fwd(const float* x, const float* w, const float* bias,
                                            float* y, int N, int H, int W, int C, int O, int KH,
                                            int KW, int SH, int SW, int PT, int PL, int DH, int DW,
                                            int HO, int WO, int act, int flags)
{
    DgConvGeom g = {N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW, HO, WO};
    DgFwdA la = {x, g};
    DgFwdB lb = {w, O};
    dg_gemm_tile<T, true, false>(N * HO * WO, O, 0, KH * KW * C, blockIdx.x * T::BM,
                                 blockIdx.y * T::BN, flags & 1, flags & 2, flags & 4, la, lb, y, O,
                                 bias, act);
}

// ---------------------------------------------------- gradient of the input
// dx[(n, h, w), c] = sum over k = (i, j, o) of dy[n, oh, ow, o] * w[i, j, c, o]
// where h = oh*SH - PT + i*DH (and the same for w); taps whose oh is not an
// integer in [0, HO) contribute nothing. A is k-fast (o contiguous in dy);
// with ym, A is dy * (ym > 0).
struct DgGradInA {
    const float* dy;
    const float* ym;  // null, or the ReLU output that masks dy (same layout)
    DgConvGeom g;
    struct Ctx {
        const float* img;  // dy[n]
        int th0, tw0;      // h + PT, w + PL
    };
    struct Kst {
        int o, j, i;  // k = (i * KW + j) * O + o
    };
    __device__ __forceinline__ Ctx ctx(int m) const
    {
        const int w_ = m % g.W;
        const int t = m / g.W;
        const int h = t % g.H;
        const int n = t / g.H;
        Ctx c = {dy + (long long)n * g.HO * g.WO * g.O, h + g.PT, w_ + g.PL};
        return c;
    }
    __device__ __forceinline__ Kst kst(int k) const
    {
        const int t = k / g.O;
        Kst s = {k - t * g.O, t % g.KW, t / g.KW};
        return s;
    }
    __device__ __forceinline__ void next(Kst& s, int step) const { dg_carry(s.o, g.O, s.j, g.KW, s.i, step); }
    // dy[n, oh, ow] for tap (i, j), or null where the tap falls between or outside outputs.
    __device__ __forceinline__ const float* cell(const Ctx& c, int i, int j) const
    {
        int oh = c.th0 - i * g.DH;
        int ow = c.tw0 - j * g.DW;
        if (oh < 0 || ow < 0) return nullptr;
        if (g.SH != 1 || g.SW != 1) {  // uniform: stride 1 needs no division
            const int th = oh, tw = ow;
            oh = th / g.SH;
            ow = tw / g.SW;
            if (oh * g.SH != th || ow * g.SW != tw) return nullptr;
        }
        if (oh >= g.HO || ow >= g.WO) return nullptr;
        return c.img + (oh * g.WO + ow) * g.O;
    }
    __device__ __forceinline__ float4 vec(const Ctx& c, const Kst& s) const
    {
        const float* p = cell(c, s.i, s.j);
        if (!p) return make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        const float4 v = dg_ld4(p + s.o);
        return ym ? dg_relu_mask4(v, dg_ld4(ym + (p - dy) + s.o)) : v;
    }
    __device__ __forceinline__ float one(int m, int k) const
    {
        const Kst s = kst(k);
        const float* p = cell(ctx(m), s.i, s.j);
        if (!p) return 0.0f;
        return ym ? dg_relu_mask(p[s.o], ym[(p - dy) + s.o]) : p[s.o];
    }
};

struct DgGradInB {  // B(c, k = (i, j, o)) = w[i, j, c, o], k-fast
    const float* w;
    int C, O;
    typedef const float* Ctx;  // w[0, 0, c]
    struct Kst {
        int o, ij;
    };
    __device__ __forceinline__ Ctx ctx(int c) const { return w + c * O; }
    __device__ __forceinline__ Kst kst(int k) const
    {
        Kst s = {k % O, k / O};
        return s;
    }
    __device__ __forceinline__ void next(Kst& s, int step) const
    {
        s.o += step;
        if (s.o >= O) {
            const int q = s.o / O;
            s.o -= q * O;
            s.ij += q;
        }
    }
    __device__ __forceinline__ float4 vec(Ctx p, const Kst& s) const { return dg_ld4(p + s.ij * C * O + s.o); }
    __device__ __forceinline__ float one(int c, int k) const { return w[((k / O) * C + c) * O + k % O]; }
};

template <class T>
__device__ __forceinline__ void dg_conv_grad_input(const float* dy, const float* ym, const float* w,
                                                   float* dx, int N, int H, int W, int C, int O,
                                                   int KH, int KW, int SH, int SW, int PT, int PL,
                                                   int DH, int DW, int HO, int WO, int flags)
{
    DgConvGeom g = {N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW, HO, WO};
    DgGradInA la = {dy, ym, g};
    DgGradInB lb = {w, C, O};
    dg_gemm_tile<T, true, true>(N * H * W, C, 0, KH * KW * O, blockIdx.x * T::BM,
                                blockIdx.y * T::BN, flags & 1, flags & 2, flags & 4, la, lb, dx, C,
                                nullptr, DG_ACT_NONE);
}

// --------------------------------------------------- gradient of the kernel
// dw[(i, j, c), o] = sum over m = (n, oh, ow) of im2col(m, (i, j, c)) * dy[m, o].
// The reduction over m is long and the output small, so it is split over
// blockIdx.z: split z sums m in [z*chunk, min((z+1)*chunk, M)) into
// out + z * (rows*O); dg_conv2d_sum_splits adds the splits.
// chunk must be a multiple of the tile's BK.
// flags bit 3, the bias row: A gets one more row, KH*KW*C, of ones, so that
// row KH*KW*C of out is sum over m of dy[m, o], the bias gradient, from the
// same launches (rows = KH*KW*C + 1; else rows = KH*KW*C). The ones row is
// never read as float4: A's float4 loads need C % 4 == 0, so the row starts
// a group of 4 that crosses the edge, and such groups take scalar loads.
// A(r = (i, j, c), m) = im2col(m, r), r-fast (c contiguous in x); 1 for r >= KH*KW*C.
struct DgGradWA {
    const float* x;
    int taps;  // KH*KW*C
    DgConvGeom g;
    struct Ctx {
        int c, dh, dw;  // channel, and input offset of tap (i, j) from (oh*SH, ow*SW)
    };
    struct Kst {
        int ow, oh, n;  // m = (n * HO + oh) * WO + ow
    };
    __device__ __forceinline__ Ctx ctx(int r) const
    {
        const int t = r / g.C;
        Ctx c = {r - t * g.C, (t / g.KW) * g.DH - g.PT, (t % g.KW) * g.DW - g.PL};
        return c;
    }
    __device__ __forceinline__ Kst kst(int m) const
    {
        const int t = m / g.WO;
        Kst s = {m - t * g.WO, t % g.HO, t / g.HO};
        return s;
    }
    __device__ __forceinline__ void next(Kst& s, int step) const { dg_carry(s.ow, g.WO, s.oh, g.HO, s.n, step); }
    __device__ __forceinline__ float4 vec(const Ctx& c, const Kst& s) const
    {
        const int ih = s.oh * g.SH + c.dh;
        const int iw = s.ow * g.SW + c.dw;
        if ((unsigned)ih >= (unsigned)g.H || (unsigned)iw >= (unsigned)g.W)
            return make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        return dg_ld4(x + (((s.n * g.H + ih) * g.W + iw) * g.C + c.c));
    }
    __device__ __forceinline__ float one(int r, int m) const
    {
        return r < taps ? dg_im2col(x, g, m, r) : 1.0f;
    }
};

struct DgGradWB {  // B(o, m) = dy[m, o], o-fast; with ym, dy[m, o] * (ym[m, o] > 0)
    const float* dy;
    const float* ym;  // null, or the ReLU output that masks dy (same layout)
    int O;
    typedef int Ctx;  // o: an offset, not a pointer, so that dy and ym share it
    typedef int Kst;
    __device__ __forceinline__ Ctx ctx(int o) const { return o; }
    __device__ __forceinline__ Kst kst(int m) const { return m; }
    __device__ __forceinline__ void next(Kst& m, int step) const { m += step; }
    __device__ __forceinline__ float4 vec(Ctx o, Kst m) const
    {
        const float4 v = dg_ld4(dy + (m * O + o));
        return ym ? dg_relu_mask4(v, dg_ld4(ym + (m * O + o))) : v;
    }
    __device__ __forceinline__ float one(int o, int m) const
    {
        return ym ? dg_relu_mask(dy[m * O + o], ym[m * O + o]) : dy[m * O + o];
    }
};

template <class T>
__device__ __forceinline__ void dg_conv_grad_filter(const float* x, const float* dy,
                                                    const float* ym, float* out, int N, int H,
                                                    int W, int C, int O, int KH, int KW, int SH,
                                                    int SW, int PT, int PL, int DH, int DW, int HO,
                                                    int WO, int chunk, int flags)
{
    DgConvGeom g = {N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW, HO, WO};
    const int taps = KH * KW * C;
    const int rows = taps + ((flags >> 3) & 1);
    const int total = N * HO * WO;
    const int k_begin = blockIdx.z * chunk;
    const int k_end = total - k_begin < chunk ? total : k_begin + chunk;
    DgGradWA la = {x, taps, g};
    DgGradWB lb = {dy, ym, O};
    dg_gemm_tile<T, false, false>(rows, O, k_begin, k_end, blockIdx.x * T::BM, blockIdx.y * T::BN,
                                  flags & 1, flags & 2, flags & 4, la, lb,
                                  out + (long long)blockIdx.z * rows * O, O, nullptr, DG_ACT_NONE);
}

// out[i] = sum over s of parts[s * n + i], the splits of dg_conv2d_grad_filter.
// Block (32, 8), as dg_sum_splits_into (common.cuh) says.
extern "C" __global__ void dg_conv2d_sum_splits(const float* parts, float* out, int splits, int n)
{
    dg_sum_splits_into<DgFloatOut>(parts, out, splits, n);
}

// One entry point per operation and tile (plain names, no macros, so the
// tests can find every kernel in the source text). The 128x128 tiles hold
// 64 accumulators per thread: the launch bounds keep them within 128
// registers, so that two blocks share an SM.
extern "C" {
__global__ void __launch_bounds__(256, 2) dg_conv2d_fwd(const float* x, const float* w,
                                                        const float* bias, float* y, int N, int H,
                                                        int W, int C, int O, int KH, int KW, int SH,
                                                        int SW, int PT, int PL, int DH, int DW,
                                                        int HO, int WO, int act, int flags);
__global__ void __launch_bounds__(256, 2) dg_conv2d_grad_input(const float* dy, const float* ym,
                                                               const float* w, float* dx, int N,
                                                               int H, int W, int C, int O, int KH,
                                                               int KW, int SH, int SW, int PT,
                                                               int PL, int DH, int DW, int HO,
                                                               int WO, int flags);
__global__ void __launch_bounds__(256, 2) dg_conv2d_grad_filter(const float* x, const float* dy,
                                                                const float* ym, float* out, int N,
                                                                int H, int W, int C, int O, int KH,
                                                                int KW, int SH, int SW, int PT,
                                                                int PL, int DH, int DW, int HO,
                                                                int WO, int chunk, int flags);
}

extern "C" __global__ void dg_conv2d_fwd(const float* x, const float* w, const float* bias,
                                         float* y, int N, int H, int W, int C, int O, int KH,
                                         int KW, int SH, int SW, int PT, int PL, int DH, int DW,
                                         int HO, int WO, int act, int flags)
{
    dg_conv_fwd<DgTile128x128>(x, w, bias, y, N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW, HO, WO,
                               act, flags);
}

extern "C" __global__ void dg_conv2d_fwd_128x64(const float* x, const float* w, const float* bias,
                                                float* y, int N, int H, int W, int C, int O, int KH,
                                                int KW, int SH, int SW, int PT, int PL, int DH,
                                                int DW, int HO, int WO, int act, int flags)
{
    dg_conv_fwd<DgTile128x64>(x, w, bias, y, N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW, HO, WO,
                              act, flags);
}

extern "C" __global__ void dg_conv2d_fwd_128x32(const float* x, const float* w, const float* bias,
                                                float* y, int N, int H, int W, int C, int O, int KH,
                                                int KW, int SH, int SW, int PT, int PL, int DH,
                                                int DW, int HO, int WO, int act, int flags)
{
    dg_conv_fwd<DgTile128x32>(x, w, bias, y, N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW, HO, WO,
                              act, flags);
}

extern "C" __global__ void dg_conv2d_fwd_64x64(const float* x, const float* w, const float* bias,
                                               float* y, int N, int H, int W, int C, int O, int KH,
                                               int KW, int SH, int SW, int PT, int PL, int DH,
                                               int DW, int HO, int WO, int act, int flags)
{
    dg_conv_fwd<DgTile64x64>(x, w, bias, y, N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW, HO, WO,
                             act, flags);
}

extern "C" __global__ void dg_conv2d_fwd_32x32(const float* x, const float* w, const float* bias,
                                               float* y, int N, int H, int W, int C, int O, int KH,
                                               int KW, int SH, int SW, int PT, int PL, int DH,
                                               int DW, int HO, int WO, int act, int flags)
{
    dg_conv_fwd<DgTile32x32>(x, w, bias, y, N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW, HO, WO,
                             act, flags);
}

extern "C" __global__ void dg_conv2d_grad_input(const float* dy, const float* ym, const float* w,
                                                float* dx, int N, int H, int W, int C, int O,
                                                int KH, int KW, int SH, int SW, int PT, int PL,
                                                int DH, int DW, int HO, int WO, int flags)
{
    dg_conv_grad_input<DgTile128x128>(dy, ym, w, dx, N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW,
                                      HO, WO, flags);
}

extern "C" __global__ void dg_conv2d_grad_input_128x64(const float* dy, const float* ym,
                                                       const float* w, float* dx, int N, int H,
                                                       int W, int C, int O, int KH, int KW, int SH,
                                                       int SW, int PT, int PL, int DH, int DW,
                                                       int HO, int WO, int flags)
{
    dg_conv_grad_input<DgTile128x64>(dy, ym, w, dx, N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW,
                                     HO, WO, flags);
}

extern "C" __global__ void dg_conv2d_grad_input_128x32(const float* dy, const float* ym,
                                                       const float* w, float* dx, int N, int H,
                                                       int W, int C, int O, int KH, int KW, int SH,
                                                       int SW, int PT, int PL, int DH, int DW,
                                                       int HO, int WO, int flags)
{
    dg_conv_grad_input<DgTile128x32>(dy, ym, w, dx, N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW,
                                     HO, WO, flags);
}

extern "C" __global__ void dg_conv2d_grad_input_64x64(const float* dy, const float* ym,
                                                      const float* w, float* dx, int N, int H,
                                                      int W, int C, int O, int KH, int KW, int SH,
                                                      int SW, int PT, int PL, int DH, int DW,
                                                      int HO, int WO, int flags)
{
    dg_conv_grad_input<DgTile64x64>(dy, ym, w, dx, N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW,
                                    HO, WO, flags);
}

extern "C" __global__ void dg_conv2d_grad_input_32x32(const float* dy, const float* ym,
                                                      const float* w, float* dx, int N, int H,
                                                      int W, int C, int O, int KH, int KW, int SH,
                                                      int SW, int PT, int PL, int DH, int DW,
                                                      int HO, int WO, int flags)
{
    dg_conv_grad_input<DgTile32x32>(dy, ym, w, dx, N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW,
                                    HO, WO, flags);
}

extern "C" __global__ void dg_conv2d_grad_filter(const float* x, const float* dy, const float* ym,
                                                 float* out, int N, int H, int W, int C, int O,
                                                 int KH, int KW, int SH, int SW, int PT, int PL,
                                                 int DH, int DW, int HO, int WO, int chunk,
                                                 int flags)
{
    dg_conv_grad_filter<DgTile128x128>(x, dy, ym, out, N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH,
                                       DW, HO, WO, chunk, flags);
}

extern "C" __global__ void dg_conv2d_grad_filter_128x64(const float* x, const float* dy,
                                                        const float* ym, float* out, int N, int H,
                                                        int W, int C, int O, int KH, int KW, int SH,
                                                        int SW, int PT, int PL, int DH, int DW,
                                                        int HO, int WO, int chunk, int flags)
{
    dg_conv_grad_filter<DgTile128x64>(x, dy, ym, out, N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW,
                                      HO, WO, chunk, flags);
}

extern "C" __global__ void dg_conv2d_grad_filter_128x32(const float* x, const float* dy,
                                                        const float* ym, float* out, int N, int H,
                                                        int W, int C, int O, int KH, int KW, int SH,
                                                        int SW, int PT, int PL, int DH, int DW,
                                                        int HO, int WO, int chunk, int flags)
{
    dg_conv_grad_filter<DgTile128x32>(x, dy, ym, out, N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW,
                                      HO, WO, chunk, flags);
}

extern "C" __global__ void dg_conv2d_grad_filter_64x64(const float* x, const float* dy,
                                                       const float* ym, float* out, int N, int H,
                                                       int W, int C, int O, int KH, int KW, int SH,
                                                       int SW, int PT, int PL, int DH, int DW,
                                                       int HO, int WO, int chunk, int flags)
{
    dg_conv_grad_filter<DgTile64x64>(x, dy, ym, out, N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW,
                                     HO, WO, chunk, flags);
}

extern "C" __global__ void dg_conv2d_grad_filter_32x32(const float* x, const float* dy,
                                                       const float* ym, float* out, int N, int H,
                                                       int W, int C, int O, int KH, int KW, int SH,
                                                       int SW, int PT, int PL, int DH, int DW,
                                                       int HO, int WO, int chunk, int flags)
{
    dg_conv_grad_filter<DgTile32x32>(x, dy, ym, out, N, H, W, C, O, KH, KW, SH, SW, PT, PL, DH, DW,
                                     HO, WO, chunk, flags);
}
