// NHWC float32 max and average pooling, forward and backward.
//
// Geometry (every kernel takes the same list): input [N, H, W, C], output
// [N, HO, WO, C], window KH x KW, strides SH, SW, padding before PT (rows)
// and PL (cols). Window (oh, ow) covers input rows oh*SH - PT + [0, KH).
// Then `vec` and `wide`, chosen by the launcher:
//   vec = 4: each thread moves 4 channels with 16-byte accesses (C % 4 == 0
//     and every pointer 16-byte aligned), else 1;
//   wide = 1: the arrays hold 2^31 elements or more, so flat offsets need
//     64 bits (then vec = 1); else the index math stays in 32 bits, where a
//     division costs a fraction of a 64-bit one.
// A work item is V consecutive channels of one output element (forward) or
// input element (backward), C fastest so that a warp reads contiguous memory;
// grid-stride loops.
//
// Backward: dg_*_pool_bwd gather (each input element sums over the windows
// that contain it), so they need no atomics, no zeroed output, and give the
// same result on every run. When windows tile the input (stride == window,
// no padding before), dg_*_pool_bwd_tiles instead give each window's cells
// to one work item, which reads the window once and writes every cell of it.
#include "common.cuh"

// V channels in registers; V = 4 travels as one float4.
template <int V>
struct dg_vec {
    float v[V];
};

template <int V>
__device__ __forceinline__ dg_vec<V> dg_load(const float* p)
{
    dg_vec<V> r;
    if constexpr (V == 4) {
        const float4 q = *reinterpret_cast<const float4*>(p);
        r.v[0] = q.x;
        r.v[1] = q.y;
        r.v[2] = q.z;
        r.v[3] = q.w;
    } else {
        for (int k = 0; k < V; ++k) r.v[k] = p[k];
    }
    return r;
}

template <int V>
__device__ __forceinline__ void dg_store(float* p, const dg_vec<V>& a)
{
    if constexpr (V == 4) {
        float4 q;
        q.x = a.v[0];
        q.y = a.v[1];
        q.z = a.v[2];
        q.w = a.v[3];
        *reinterpret_cast<float4*>(p) = q;
    } else {
        for (int k = 0; k < V; ++k) p[k] = a.v[k];
    }
}

template <int V>
__device__ __forceinline__ dg_vec<V> dg_fill(float f)
{
    dg_vec<V> r;
    for (int k = 0; k < V; ++k) r.v[k] = f;
    return r;
}

// Item e of an [N, A, B, CV] grid -> (n, a, b, cv); I is the index type.
template <typename I>
__device__ __forceinline__ void dg_split(I e, I CV, I B, I A, int* n, int* a, int* b, int* cv)
{
    *cv = (int)(e % CV);
    I t = e / CV;
    *b = (int)(t % B);
    t /= B;
    *a = (int)(t % A);
    *n = (int)(t / A);
}

#define DG_ITEMS(I, e, total)                                                         \
    for (I e = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; e < (total);           \
         e += (I)gridDim.x * (I)blockDim.x)

// Max of window (h0, w0) per channel, in the order numpy.argmax sees it:
// cells in row-major order, padding cells read as -inf, the first maximum
// wins and a NaN beats any number. arg[k] gets the winning cell i*KW + j.
// xn points at channel 0 of this item in image n.
template <int V>
__device__ __forceinline__ void dg_argmax_step(const dg_vec<V>& v, int cell, dg_vec<V>& best,
                                               int (&arg)[V])
{
    for (int k = 0; k < V; ++k) {
        const float b = best.v[k], x = v.v[k];
        if (arg[k] < 0 || x > b || (x != x && b == b)) {
            best.v[k] = x;
            arg[k] = cell;
        }
    }
}

// Cell (h, w) of the image at xn, or `pad` in every lane outside it.
template <int V, typename I>
__device__ __forceinline__ dg_vec<V> dg_cell(const float* xn, int H, int W, int C, int h, int w,
                                             float pad)
{
    return (h >= 0 && h < H && w >= 0 && w < W) ? dg_load<V>(xn + ((I)h * W + w) * C)
                                                 : dg_fill<V>(pad);
}

// KHC, KWC: the window size when known at compile time (0: use KH, KW).
// Then every cell is loaded before the first comparison, so that all the
// window's loads are in flight at once.
template <int V, typename I, int KHC, int KWC>
__device__ __forceinline__ void dg_window_argmax(const float* xn, int H, int W, int C, int KH,
                                                 int KW, int h0, int w0, dg_vec<V>& best,
                                                 int (&arg)[V])
{
    for (int k = 0; k < V; ++k) {
        best.v[k] = 0.0f;
        arg[k] = -1;
    }
    if constexpr (KHC > 0 && KWC > 0) {
        dg_vec<V> cells[KHC * KWC];
#pragma unroll
        for (int q = 0; q < KHC * KWC; ++q)
            cells[q] = dg_cell<V, I>(xn, H, W, C, h0 + q / KWC, w0 + q % KWC, DG_NEG_INF);
#pragma unroll
        for (int q = 0; q < KHC * KWC; ++q) dg_argmax_step<V>(cells[q], q, best, arg);
    } else {
        for (int i = 0; i < KH; ++i)
            for (int j = 0; j < KW; ++j)
                dg_argmax_step<V>(dg_cell<V, I>(xn, H, W, C, h0 + i, w0 + j, DG_NEG_INF),
                                  i * KW + j, best, arg);
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

#define DG_POOL_PARAMS                                                                   \
    int N, int H, int W, int C, int HO, int WO, int KH, int KW, int SH, int SW, int PT, \
        int PL
#define DG_POOL_ARGS N, H, W, C, HO, WO, KH, KW, SH, SW, PT, PL

// Runs BODY<V, I, KHC, KWC>(ARGS): 32-bit indices with V = 4 or 1, and 2x2
// and 3x3 windows unrolled; 64-bit indices in one generic form.
#define DG_POOL_DISPATCH(BODY, ...)                                                  \
    do {                                                                             \
        if (wide) {                                                                  \
            BODY<1, long long, 0, 0>(__VA_ARGS__);                                   \
        } else if (vec == 4) {                                                       \
            if (KH == 2 && KW == 2) BODY<4, unsigned, 2, 2>(__VA_ARGS__);            \
            else if (KH == 3 && KW == 3) BODY<4, unsigned, 3, 3>(__VA_ARGS__);       \
            else BODY<4, unsigned, 0, 0>(__VA_ARGS__);                               \
        } else {                                                                     \
            if (KH == 2 && KW == 2) BODY<1, unsigned, 2, 2>(__VA_ARGS__);            \
            else if (KH == 3 && KW == 3) BODY<1, unsigned, 3, 3>(__VA_ARGS__);       \
            else BODY<1, unsigned, 0, 0>(__VA_ARGS__);                               \
        }                                                                            \
    } while (0)

// ---------------------------------------------------------------- max, forward
template <int V, typename I, int KHC, int KWC>
__device__ void dg_max_pool_fwd_body(const float* __restrict__ x, float* __restrict__ y,
                                     DG_POOL_PARAMS)
{
    const I CV = (I)(C / V);
    const I total = (I)N * HO * WO * CV;
    DG_ITEMS(I, e, total) {
        int n, oh, ow, cv;
        dg_split<I>(e, CV, (I)WO, (I)HO, &n, &oh, &ow, &cv);
        dg_vec<V> best;
        int arg[V];
        dg_window_argmax<V, I, KHC, KWC>(x + (I)n * H * W * C + (I)cv * V, H, W, C, KH, KW,
                                         oh * SH - PT, ow * SW - PL, best, arg);
        dg_store<V>(y + e * V, best);  // y's flat offset is e * V: C = CV * V
    }
}

extern "C" __global__ void dg_max_pool_fwd(
    const float* __restrict__ x, float* __restrict__ y,
    int N, int H, int W, int C, int HO, int WO, int KH, int KW, int SH, int SW, int PT, int PL,
    int vec, int wide)
{
    DG_POOL_DISPATCH(dg_max_pool_fwd_body, x, y, DG_POOL_ARGS);
}

// --------------------------------------------------------------- max, backward
template <int V, typename I, int KHC, int KWC>
__device__ void dg_max_pool_bwd_body(const float* __restrict__ x, const float* __restrict__ dy,
                                     float* __restrict__ dx, DG_POOL_PARAMS)
{
    const I CV = (I)(C / V);
    const I total = (I)N * H * W * CV;
    DG_ITEMS(I, e, total) {
        int n, h, w, cv;
        dg_split<I>(e, CV, (I)W, (I)H, &n, &h, &w, &cv);
        int oh_lo, oh_hi, ow_lo, ow_hi;
        dg_windows_covering(h, KH, SH, PT, HO, &oh_lo, &oh_hi);
        dg_windows_covering(w, KW, SW, PL, WO, &ow_lo, &ow_hi);
        const float* xn = x + (I)n * H * W * C + (I)cv * V;
        dg_vec<V> acc = dg_fill<V>(0.0f);
        for (int oh = oh_lo; oh <= oh_hi; ++oh) {
            for (int ow = ow_lo; ow <= ow_hi; ++ow) {
                const int h0 = oh * SH - PT, w0 = ow * SW - PL;
                dg_vec<V> best;
                int arg[V];
                dg_window_argmax<V, I, KHC, KWC>(xn, H, W, C, KH, KW, h0, w0, best, arg);
                const int mine = (h - h0) * KW + (w - w0);
                const dg_vec<V> g = dg_load<V>(dy + (((I)n * HO + oh) * WO + ow) * C + (I)cv * V);
                for (int k = 0; k < V; ++k)
                    if (arg[k] == mine) acc.v[k] += g.v[k];
            }
        }
        dg_store<V>(dx + e * V, acc);
    }
}

extern "C" __global__ void dg_max_pool_bwd(
    const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx,
    int N, int H, int W, int C, int HO, int WO, int KH, int KW, int SH, int SW, int PT, int PL,
    int vec, int wide)
{
    DG_POOL_DISPATCH(dg_max_pool_bwd_body, x, dy, dx, DG_POOL_ARGS);
}

// Tiles: SH == KH, SW == KW, PT == PL == 0. Tile (th, tw) holds input rows
// th*KH + [0, KH) and cols tw*KW + [0, KW), clipped to the image; there are
// ceil(H/KH) x ceil(W/KW) tiles. Tiles with th < HO and tw < WO are windows;
// the others (the rows and cols that "valid" pooling leaves out) get zeros.
// A window's clipped cells are padding after the image, which never wins a
// max: cell (0, 0) is always inside and comes first.
template <int V, typename I, int KHC, int KWC>
__device__ void dg_max_pool_bwd_tiles_body(const float* __restrict__ x,
                                           const float* __restrict__ dy,
                                           float* __restrict__ dx, DG_POOL_PARAMS)
{
    const int kh = KHC ? KHC : KH, kw = KWC ? KWC : KW;
    const int TH = (H + kh - 1) / kh, TW = (W + kw - 1) / kw;
    const I CV = (I)(C / V);
    const I total = (I)N * TH * TW * CV;
    DG_ITEMS(I, e, total) {
        int n, th, tw, cv;
        dg_split<I>(e, CV, (I)TW, (I)TH, &n, &th, &tw, &cv);
        const int h0 = th * kh, w0 = tw * kw;
        const I off = (I)n * H * W * C + (I)cv * V;
        const bool window = th < HO && tw < WO;
        dg_vec<V> g = dg_fill<V>(0.0f);
        int arg[V];
        for (int k = 0; k < V; ++k) arg[k] = -1;
        if (window) {
            g = dg_load<V>(dy + (((I)n * HO + th) * WO + tw) * C + (I)cv * V);  // in flight with x
            dg_vec<V> best;
            dg_window_argmax<V, I, KHC, KWC>(x + off, H, W, C, kh, kw, h0, w0, best, arg);
        }
#pragma unroll
        for (int i = 0; i < kh; ++i) {
            const int h = h0 + i;
#pragma unroll
            for (int j = 0; j < kw; ++j) {
                const int w = w0 + j;
                if (h >= H || w >= W) continue;
                dg_vec<V> out;
                for (int k = 0; k < V; ++k) out.v[k] = arg[k] == i * kw + j ? 0.0f + g.v[k] : 0.0f;
                dg_store<V>(dx + off + ((I)h * W + w) * C, out);
            }
        }
    }
}

extern "C" __global__ void dg_max_pool_bwd_tiles(
    const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx,
    int N, int H, int W, int C, int HO, int WO, int KH, int KW, int SH, int SW, int PT, int PL,
    int vec, int wide)
{
    DG_POOL_DISPATCH(dg_max_pool_bwd_tiles_body, x, dy, dx, DG_POOL_ARGS);
}

// ---------------------------------------------------------------- avg, forward
template <int V, typename I, int KHC, int KWC>
__device__ void dg_avg_pool_fwd_body(const float* __restrict__ x, float* __restrict__ y,
                                     DG_POOL_PARAMS)
{
    const int kh = KHC ? KHC : KH, kw = KWC ? KWC : KW;
    const I CV = (I)(C / V);
    const I total = (I)N * HO * WO * CV;
    DG_ITEMS(I, e, total) {
        int n, oh, ow, cv;
        dg_split<I>(e, CV, (I)WO, (I)HO, &n, &oh, &ow, &cv);
        const float* xn = x + (I)n * H * W * C + (I)cv * V;
        const int h0 = oh * SH - PT, w0 = ow * SW - PL;
        dg_vec<V> s = dg_fill<V>(0.0f);
        if constexpr (KHC > 0 && KWC > 0) {
            // All loads first, then the sum in row-major order; padding cells
            // add +0.0f, which leaves the sum bit for bit as skipping them.
            dg_vec<V> cells[KHC * KWC];
#pragma unroll
            for (int q = 0; q < KHC * KWC; ++q)
                cells[q] = dg_cell<V, I>(xn, H, W, C, h0 + q / KWC, w0 + q % KWC, 0.0f);
#pragma unroll
            for (int q = 0; q < KHC * KWC; ++q)
                for (int k = 0; k < V; ++k) s.v[k] += cells[q].v[k];
        } else {
            for (int i = 0; i < KH; ++i) {
                const int h = h0 + i;
                if (h < 0 || h >= H) continue;
                for (int j = 0; j < KW; ++j) {
                    const int w = w0 + j;
                    if (w < 0 || w >= W) continue;
                    const dg_vec<V> v = dg_load<V>(xn + ((I)h * W + w) * C);
                    for (int k = 0; k < V; ++k) s.v[k] += v.v[k];
                }
            }
        }
        const float count = (float)(dg_window_count(oh, kh, SH, PT, H) *
                                    dg_window_count(ow, kw, SW, PL, W));
        for (int k = 0; k < V; ++k) s.v[k] /= count;
        dg_store<V>(y + e * V, s);
    }
}

extern "C" __global__ void dg_avg_pool_fwd(
    const float* __restrict__ x, float* __restrict__ y,
    int N, int H, int W, int C, int HO, int WO, int KH, int KW, int SH, int SW, int PT, int PL,
    int vec, int wide)
{
    DG_POOL_DISPATCH(dg_avg_pool_fwd_body, x, y, DG_POOL_ARGS);
}

// --------------------------------------------------------------- avg, backward
template <int V, typename I, int KHC, int KWC>
__device__ void dg_avg_pool_bwd_body(const float* __restrict__ dy, float* __restrict__ dx,
                                     DG_POOL_PARAMS)
{
    const I CV = (I)(C / V);
    const I total = (I)N * H * W * CV;
    DG_ITEMS(I, e, total) {
        int n, h, w, cv;
        dg_split<I>(e, CV, (I)W, (I)H, &n, &h, &w, &cv);
        int oh_lo, oh_hi, ow_lo, ow_hi;
        dg_windows_covering(h, KH, SH, PT, HO, &oh_lo, &oh_hi);
        dg_windows_covering(w, KW, SW, PL, WO, &ow_lo, &ow_hi);
        dg_vec<V> acc = dg_fill<V>(0.0f);
        for (int oh = oh_lo; oh <= oh_hi; ++oh) {
            const int ch = dg_window_count(oh, KH, SH, PT, H);
            for (int ow = ow_lo; ow <= ow_hi; ++ow) {
                const float count = (float)(ch * dg_window_count(ow, KW, SW, PL, W));
                const dg_vec<V> g = dg_load<V>(dy + (((I)n * HO + oh) * WO + ow) * C + (I)cv * V);
                for (int k = 0; k < V; ++k) acc.v[k] += g.v[k] / count;
            }
        }
        dg_store<V>(dx + e * V, acc);
    }
}

extern "C" __global__ void dg_avg_pool_bwd(
    const float* __restrict__ dy, float* __restrict__ dx,
    int N, int H, int W, int C, int HO, int WO, int KH, int KW, int SH, int SW, int PT, int PL,
    int vec, int wide)
{
    DG_POOL_DISPATCH(dg_avg_pool_bwd_body, dy, dx, DG_POOL_ARGS);
}

// Tiles as for dg_max_pool_bwd_tiles: every cell of window (th, tw) gets
// dy / count (0.0f + that, as the gather adds it to zero); cells outside
// every window get zeros.
template <int V, typename I, int KHC, int KWC>
__device__ void dg_avg_pool_bwd_tiles_body(const float* __restrict__ dy, float* __restrict__ dx,
                                           DG_POOL_PARAMS)
{
    const int kh = KHC ? KHC : KH, kw = KWC ? KWC : KW;
    const int TH = (H + kh - 1) / kh, TW = (W + kw - 1) / kw;
    const I CV = (I)(C / V);
    const I total = (I)N * TH * TW * CV;
    DG_ITEMS(I, e, total) {
        int n, th, tw, cv;
        dg_split<I>(e, CV, (I)TW, (I)TH, &n, &th, &tw, &cv);
        const int h0 = th * kh, w0 = tw * kw;
        dg_vec<V> g = dg_fill<V>(0.0f);
        if (th < HO && tw < WO) {
            const float count = (float)(dg_window_count(th, kh, kh, 0, H) *
                                        dg_window_count(tw, kw, kw, 0, W));
            g = dg_load<V>(dy + (((I)n * HO + th) * WO + tw) * C + (I)cv * V);
            for (int k = 0; k < V; ++k) g.v[k] = 0.0f + g.v[k] / count;
        }
        const I off = (I)n * H * W * C + (I)cv * V;
#pragma unroll
        for (int i = 0; i < kh; ++i) {
            const int h = h0 + i;
#pragma unroll
            for (int j = 0; j < kw; ++j) {
                const int w = w0 + j;
                if (h >= H || w >= W) continue;
                dg_store<V>(dx + off + ((I)h * W + w) * C, g);
            }
        }
    }
}

extern "C" __global__ void dg_avg_pool_bwd_tiles(
    const float* __restrict__ dy, float* __restrict__ dx,
    int N, int H, int W, int C, int HO, int WO, int KH, int KW, int SH, int SW, int PT, int PL,
    int vec, int wide)
{
    DG_POOL_DISPATCH(dg_avg_pool_bwd_tiles_body, dy, dx, DG_POOL_ARGS);
}
