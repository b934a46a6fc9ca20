// Tiled float32 GEMM core shared by matmul.cu and conv2d.cu.
//
// C[M, N] = sum_k A(m, k) * B(n, k), where A and B are read through loader
// objects: a plain (possibly transposed) matrix for matmul, an implicit
// im2col view for the convolutions. A block computes one BM x BN tile of C
// with TX * TY threads, each owning TM x TN outputs.
//
// Per k-step of BK the block loads the next A and B tiles from global memory
// into registers, multiplies the tiles already in shared memory, then writes
// the registers into the other shared buffer: one barrier per k-step, and
// the global latency hidden behind BK rank-1 updates. Loads move 4
// consecutive elements along the operand's contiguous axis as one float4
// when the launcher says the layout allows it (vec flags), else 4 scalars;
// the edges of the matrix always take the scalar path.
//
// kernels/__init__.py inlines this file into each source before compiling,
// so CuPy's cache key covers it.
#pragma once
#include "common.cuh"

// The default tile (the largest); kernels/__init__.py TILE_* must match (a test checks).
#define DG_BM 128
#define DG_BN 128
#define DG_BK 8
#define DG_TM 8
#define DG_TN 8

template <int BM_, int BN_, int BK_, int TM_, int TN_>
struct DgTile {
    static constexpr int BM = BM_, BN = BN_, BK = BK_, TM = TM_, TN = TN_;
    static constexpr int TX = BN / TN, TY = BM / TM, THREADS = TX * TY;
    static_assert(TM % 4 == 0 && TN % 4 == 0 && BK % 4 == 0, "outputs and k-steps come in fours");
    static_assert(THREADS % 32 == 0, "whole warps");
};

// Every configuration the launchers pick from (kernels/__init__.py GEMM_TILES must match).
typedef DgTile<128, 128, 8, 8, 8> DgTile128x128;  // big GEMMs: 64 outputs per thread
typedef DgTile<128, 64, 16, 8, 4> DgTile128x64;   // 64 output channels (wide M)
typedef DgTile<128, 32, 16, 8, 4> DgTile128x32;   // 32 output channels
typedef DgTile<64, 64, 16, 8, 4> DgTile64x64;     // mid-sized and split-K GEMMs
typedef DgTile<32, 32, 16, 4, 4> DgTile32x32;     // few rows (filter gradient of a thin layer)

__device__ __forceinline__ float4 dg_ld4(const float* p)
{
    return *reinterpret_cast<const float4*>(p);
}

__device__ __forceinline__ void dg_st4(float* p, float4 v)
{
    *reinterpret_cast<float4*>(p) = v;
}

// dg_relu_mask (common.cuh) on 4 elements: v * (y > 0) for the relu-masked gradient loads.
__device__ __forceinline__ float4 dg_relu_mask4(float4 v, float4 y)
{
    return make_float4(dg_relu_mask(v.x, y.x), dg_relu_mask(v.y, y.y), dg_relu_mask(v.z, y.z),
                       dg_relu_mask(v.w, y.w));
}

// Loaders. Each operand is indexed (outer, k): A by (m, k), B by (n, k).
//   Ctx ctx(outer)          per-thread state for one outer index, made once per block
//   Kst kst(k)              a k position in the loader's own terms (a convolution
//                           tap and channel, say), made once per block...
//   void next(kst&, step)   ...and moved on by whole k-steps, so that the k-loop
//                           divides only when a position wraps
//   float4 vec(ctx, kst)    4 consecutive elements along the operand's fast axis:
//                           (outer, k..k+3) when K_FAST, else (outer..outer+3, k);
//                           called only inside the bounds and when the launcher
//                           set the operand's vec flag
//   float one(outer, k)     one element, inside the bounds
// K_FAST: consecutive k of the operand are adjacent in memory. It decides how
// the threads split a tile, so that each reads contiguous memory.

// a += step, carrying into b (modulo na) and c: the mixed-radix counters of the loaders' Kst.
__device__ __forceinline__ void dg_carry(int& a, int na, int& b, int nb, int& c, int step)
{
    a += step;
    if (a >= na) {
        const int q = a / na;
        a -= q * na;
        b += q;
        if (b >= nb) {
            const int q2 = b / nb;
            b -= q2 * nb;
            c += q2;
        }
    }
}

// One group of 4 elements along the operand's fast axis into r; zeros outside
// [0, limit) x [.., k_end). FAST: the caller knows the group is inside and vec set.
template <bool KFAST, bool FAST, class L>
__device__ __forceinline__ void dg_load_group(const L& l, const typename L::Ctx& c,
                                              const typename L::Kst& ks, int o, int k, int limit,
                                              int k_end, bool vec, float (&r)[4])
{
    if (FAST || (KFAST ? (o < limit && vec && k + 4 <= k_end) : (k < k_end && vec && o + 4 <= limit))) {
        const float4 v = l.vec(c, ks);
        r[0] = v.x; r[1] = v.y; r[2] = v.z; r[3] = v.w;
    } else {
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            if (KFAST)
                r[q] = (o < limit && k + q < k_end) ? l.one(o, k + q) : 0.0f;
            else
                r[q] = (k < k_end && o + q < limit) ? l.one(o + q, k) : 0.0f;
        }
    }
}

template <class T>
struct DgSmem {
    // +4 columns: a warp's transposed (k-fast) stores then spread over all
    // banks, and rows stay 16-byte aligned for the float4 reads.
    float a[2][T::BK][T::BM + 4];
    float b[2][T::BK][T::BN + 4];
};

// The k-loop: acc += the tile's products over [k_begin, k_end). FAST: the
// tile lies inside M x N, both operands may be read as float4 and the range
// is whole k-steps, so no load checks a bound.
template <class T, bool FAST, bool A_KFAST, bool B_KFAST, class LoadA, class LoadB>
__device__ __forceinline__ void dg_gemm_loop(float (&acc)[T::TM][T::TN], DgSmem<T>& sm, int M,
                                             int N, int k_begin, int k_end, int m0, int n0,
                                             bool vec_a, bool vec_b, int tx, int ty,
                                             const LoadA& la, const LoadB& lb)
{
    constexpr int BM = T::BM, BN = T::BN, BK = T::BK, TM = T::TM, TN = T::TN;
    constexpr int TX = T::TX, TY = T::TY, THREADS = T::THREADS;
    const int tid = threadIdx.x;

    // Group e of a tile goes to thread e % THREADS. For a k-fast operand a
    // group is (outer, 4 k's), else (4 outers, one k); consecutive threads
    // read consecutive memory either way.
    constexpr int GA = BM * BK / 4, IA = (GA + THREADS - 1) / THREADS;
    constexpr int GB = BN * BK / 4, IB = (GB + THREADS - 1) / THREADS;
    typename LoadA::Ctx ca[IA];
    typename LoadB::Ctx cb[IB];
    // A k-fast operand's groups of one thread all sit at the same k (THREADS
    // is a multiple of BK / 4): they share one Kst.
    constexpr int SA = A_KFAST ? 1 : IA, SB = B_KFAST ? 1 : IB;
    typename LoadA::Kst sa[SA];
    typename LoadB::Kst sb[SB];
    static_assert(THREADS % (BK / 4) == 0, "k offsets per thread");
    int oa[IA], ka[IA], ob[IB], kb[IB];  // the group's outer and k offsets in the tile
#pragma unroll
    for (int i = 0; i < IA; ++i) {
        const int e = tid + i * THREADS;
        oa[i] = A_KFAST ? e / (BK / 4) : (e % (BM / 4)) * 4;
        ka[i] = A_KFAST ? (e % (BK / 4)) * 4 : e / (BM / 4);
        ca[i] = la.ctx(m0 + oa[i]);
        if (i < SA) sa[i] = la.kst(k_begin + ka[i]);
    }
#pragma unroll
    for (int i = 0; i < IB; ++i) {
        const int e = tid + i * THREADS;
        ob[i] = B_KFAST ? e / (BK / 4) : (e % (BN / 4)) * 4;
        kb[i] = B_KFAST ? (e % (BK / 4)) * 4 : e / (BN / 4);
        cb[i] = lb.ctx(n0 + ob[i]);
        if (i < SB) sb[i] = lb.kst(k_begin + kb[i]);
    }
    float ra[IA][4], rb[IB][4];

    auto load = [&](int kt) {  // global -> registers, the k-step at kt (the Kst's position)
#pragma unroll
        for (int i = 0; i < IA; ++i) {
            if (GA % THREADS == 0 || tid + i * THREADS < GA) {
                dg_load_group<A_KFAST, FAST>(la, ca[i], sa[i % SA], m0 + oa[i], kt + ka[i], M, k_end, vec_a, ra[i]);
                if (!A_KFAST) la.next(sa[i % SA], BK);
            }
        }
        if (A_KFAST) la.next(sa[0], BK);
#pragma unroll
        for (int i = 0; i < IB; ++i) {
            if (GB % THREADS == 0 || tid + i * THREADS < GB) {
                dg_load_group<B_KFAST, FAST>(lb, cb[i], sb[i % SB], n0 + ob[i], kt + kb[i], N, k_end, vec_b, rb[i]);
                if (!B_KFAST) lb.next(sb[i % SB], BK);
            }
        }
        if (B_KFAST) lb.next(sb[0], BK);
    };
    auto store = [&](int s) {  // registers -> shared buffer s, stored [k][outer]
#pragma unroll
        for (int i = 0; i < IA; ++i) {
            if (GA % THREADS == 0 || tid + i * THREADS < GA) {
                if (A_KFAST) {
#pragma unroll
                    for (int q = 0; q < 4; ++q) sm.a[s][ka[i] + q][oa[i]] = ra[i][q];
                } else {
                    dg_st4(&sm.a[s][ka[i]][oa[i]], make_float4(ra[i][0], ra[i][1], ra[i][2], ra[i][3]));
                }
            }
        }
#pragma unroll
        for (int i = 0; i < IB; ++i) {
            if (GB % THREADS == 0 || tid + i * THREADS < GB) {
                if (B_KFAST) {
#pragma unroll
                    for (int q = 0; q < 4; ++q) sm.b[s][kb[i] + q][ob[i]] = rb[i][q];
                } else {
                    dg_st4(&sm.b[s][kb[i]][ob[i]], make_float4(rb[i][0], rb[i][1], rb[i][2], rb[i][3]));
                }
            }
        }
    };

    load(k_begin);
    store(0);
    __syncthreads();
    int cur = 0;
    for (int kt = k_begin; kt < k_end; kt += BK) {
        const bool more = kt + BK < k_end;
        if (more) load(kt + BK);
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            float a[TM], b[TN];
            // Thread (tx, ty) owns rows g*4*TY + 4*ty + i and columns h*4*TX + 4*tx + j.
#pragma unroll
            for (int g = 0; g < TM / 4; ++g) {
                const float4 v = dg_ld4(&sm.a[cur][kk][g * 4 * TY + 4 * ty]);
                a[4 * g] = v.x; a[4 * g + 1] = v.y; a[4 * g + 2] = v.z; a[4 * g + 3] = v.w;
            }
#pragma unroll
            for (int h = 0; h < TN / 4; ++h) {
                const float4 v = dg_ld4(&sm.b[cur][kk][h * 4 * TX + 4 * tx]);
                b[4 * h] = v.x; b[4 * h + 1] = v.y; b[4 * h + 2] = v.z; b[4 * h + 3] = v.w;
            }
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j)
                    acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        // The other buffer was last read before the previous barrier: free to fill.
        if (more) store(cur ^ 1);
        __syncthreads();
        cur ^= 1;
    }
}

// out[m, n] = act(sum_k A(m, k) B(n, k) + bias[n]) for the tile at (m0, n0);
// out has row stride ldc, bias may be null, act is a DG_ACT_* code. vec_a,
// vec_b: the loaders' vec may be used; vec_c: rows of out may be written as
// float4 (ldc and out are multiples of 4 floats).
template <class T, bool A_KFAST, bool B_KFAST, class LoadA, class LoadB>
__device__ __forceinline__ void dg_gemm_tile(int M, int N, int k_begin, int k_end, int m0, int n0,
                                             bool vec_a, bool vec_b, bool vec_c,
                                             const LoadA& la, const LoadB& lb, float* out,
                                             int ldc, const float* bias, int act)
{
    constexpr int TM = T::TM, TN = T::TN, TX = T::TX, TY = T::TY;
    __shared__ __align__(16) DgSmem<T> sm;

    // A warp covers 8 columns x 4 rows of threads (or all TX columns when
    // fewer): its float4 reads of a k-row then touch 4 distinct A and 8
    // distinct B addresses, one shared-memory wavefront each.
    constexpr int LX = TX < 8 ? TX : 8;
    constexpr int LY = 32 / LX;
    constexpr int WX = TX / LX;
    static_assert(TY % LY == 0, "warp layout");
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int tx = (warp % WX) * LX + lane % LX;
    const int ty = (warp / WX) * LY + lane / LX;

    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j)
            acc[i][j] = 0.0f;

    if (vec_a && vec_b && m0 + T::BM <= M && n0 + T::BN <= N && (k_end - k_begin) % T::BK == 0)
        dg_gemm_loop<T, true, A_KFAST, B_KFAST>(acc, sm, M, N, k_begin, k_end, m0, n0, vec_a, vec_b,
                                                tx, ty, la, lb);
    else
        dg_gemm_loop<T, false, A_KFAST, B_KFAST>(acc, sm, M, N, k_begin, k_end, m0, n0, vec_a, vec_b,
                                                 tx, ty, la, lb);

    // Epilogue in place first: with 64 accumulators live, doing it per store
    // costs registers the 128x128 tile does not have.
#pragma unroll
    for (int j = 0; j < TN; ++j) {
        const int n = n0 + (j / 4) * 4 * TX + 4 * tx + j % 4;
        const float bv = (bias && n < N) ? bias[n] : 0.0f;
#pragma unroll
        for (int i = 0; i < TM; ++i) acc[i][j] = dg_activate(acc[i][j] + bv, act);
    }
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int m = m0 + (i / 4) * 4 * TY + 4 * ty + i % 4;
        if (m >= M) continue;
        float* row = out + (long long)m * ldc;
#pragma unroll
        for (int h = 0; h < TN / 4; ++h) {
            const int n = n0 + h * 4 * TX + 4 * tx;
            if (vec_c && n + 4 <= N) {
                dg_st4(row + n, make_float4(acc[i][4 * h], acc[i][4 * h + 1], acc[i][4 * h + 2],
                                            acc[i][4 * h + 3]));
            } else {
#pragma unroll
                for (int j = 0; j < 4; ++j)
                    if (n + j < N) row[n + j] = acc[i][4 * h + j];
            }
        }
    }
}
