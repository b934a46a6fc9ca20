// Float32 matrix products C = act(op(A) @ op(B) + bias), row-major.
//
// dg_matmul_<ta><tb>[_<tile>]: n = as stored, t = transposed; the suffix
// names the tile (DgTile<tile> in gemm_core.cuh), none for 128x128. A is
// stored [M, K] (or [K, M] when transposed) with row stride lda; B is stored
// [K, N] (or [N, K]) with row stride ldb; C is [M, N] with row stride ldc.
// bias [N] may be null; act is a DG_ACT_* code.
//
// blockIdx.z = item * splits + s walks a batch and splits of K: item z's
// matrices start at z * stride_{a,b,c} (a stride of 0 broadcasts one matrix
// over the batch), split s sums k in [s * k_chunk, (s + 1) * k_chunk).
// k_chunk is a multiple of the tile's BK. With splits > 1 each split writes
// its partial sums to work [batch, splits, M, N] and the last split of each
// tile to finish (counted in counters[batch, tiles], zero before the launch
// and left zero after it) adds them and applies the epilogue: one launch,
// deterministic. work and counters are unused (may be null) with one split.
// flags: bit 0, A may be read as float4 (its row stride and base are
// multiples of 4 floats); bit 1, the same for B; bit 2, for C.
// Grid: (ceil(M / BM), ceil(N / BN), batch * splits), block: the tile's THREADS.
#include "gemm_core.cuh"

template <bool T>
struct DgMatA {  // A(m, k); k-fast unless transposed
    const float* p;
    int ld;
    typedef const float* Ctx;
    typedef int Kst;
    __device__ __forceinline__ Ctx ctx(int m) const { return T ? p + m : p + (long long)m * ld; }
    __device__ __forceinline__ Kst kst(int k) const { return k; }
    __device__ __forceinline__ void next(Kst& k, int step) const { k += step; }
    __device__ __forceinline__ float4 vec(Ctx c, int k) const
    {
        return T ? dg_ld4(c + (long long)k * ld) : dg_ld4(c + k);
    }
    __device__ __forceinline__ float one(int m, int k) const
    {
        return T ? p[(long long)k * ld + m] : p[(long long)m * ld + k];
    }
};

template <bool T>
struct DgMatB {  // B(n, k) of the stored [K, N] (or [N, K] when transposed: then k-fast)
    const float* p;
    int ld;
    typedef const float* Ctx;
    typedef int Kst;
    __device__ __forceinline__ Ctx ctx(int n) const { return T ? p + (long long)n * ld : p + n; }
    __device__ __forceinline__ Kst kst(int k) const { return k; }
    __device__ __forceinline__ void next(Kst& k, int step) const { k += step; }
    __device__ __forceinline__ float4 vec(Ctx c, int k) const
    {
        return T ? dg_ld4(c + k) : dg_ld4(c + (long long)k * ld);
    }
    __device__ __forceinline__ float one(int n, int k) const
    {
        return T ? p[(long long)n * ld + k] : p[(long long)k * ld + n];
    }
};

template <class T, bool TA, bool TB>
__device__ __forceinline__ void dg_matmul(const float* a, const float* b, float* c,
                                          const float* bias, float* work, int* counters, int M,
                                          int N, int K, int lda, int ldb, int ldc,
                                          long long stride_a, long long stride_b,
                                          long long stride_c, int act, int splits, int k_chunk,
                                          int flags)
{
    const int s = blockIdx.z % splits;
    const long long z = blockIdx.z / splits;
    const int k_begin = s * k_chunk;
    const int k_end = K - k_begin < k_chunk ? K : k_begin + k_chunk;
    const int m0 = blockIdx.x * T::BM, n0 = blockIdx.y * T::BN;
    DgMatA<TA> la = {a + z * stride_a, lda};
    DgMatB<TB> lb = {b + z * stride_b, ldb};
    c += z * stride_c;
    // One call site: the GEMM is inlined once whether it writes C or a partial sum.
    const long long mn = (long long)M * N;
    float* parts = work + z * splits * mn;
    const bool whole = splits == 1;
    dg_gemm_tile<T, !TA, TB>(M, N, k_begin, k_end, m0, n0, flags & 1, flags & 2,
                             whole ? (flags & 4) != 0 : (N & 3) == 0, la, lb,
                             whole ? c : parts + s * mn, whole ? ldc : N, whole ? bias : nullptr,
                             whole ? act : DG_ACT_NONE);
    if (whole) return;

    // The last of the tile's splits to finish adds all of them, in split order
    // (so the result does not depend on which finished last), and applies the
    // epilogue. The fence makes each thread's partial sums visible to that
    // block before the count says they are there.
    __shared__ int dg_last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        int* count = counters + (z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
        dg_last = atomicAdd(count, 1) == splits - 1;
        if (dg_last) *count = 0;  // every split has counted: ready for the next launch
    }
    __syncthreads();
    if (!dg_last) return;
    __threadfence();
    for (int e = threadIdx.x; e < T::BM * T::BN; e += T::THREADS) {
        const int m = m0 + e / T::BN, n = n0 + e % T::BN;
        if (m >= M || n >= N) continue;
        const float* p = parts + (long long)m * N + n;
        float v = 0.0f;
        for (int q = 0; q < splits; ++q) v += __ldcg(p + q * mn);  // L2: other SMs wrote them
        c[(long long)m * ldc + n] = dg_activate(bias ? v + bias[n] : v, act);
    }
}

// One entry point per transpose combination and tile (plain names, no
// macros, so the tests can find every kernel in the source text). The
// 128x128 tiles hold 64 accumulators per thread: the launch bounds keep them
// within 128 registers, so that two blocks share an SM.
extern "C" {
__global__ void __launch_bounds__(256, 2) dg_matmul_nn(const float* a, const float* b, float* c,
                                                       const float* bias, float* work,
                                                       int* counters, int M, int N, int K, int lda,
                                                       int ldb, int ldc, long long stride_a,
                                                       long long stride_b, long long stride_c,
                                                       int act, int splits, int k_chunk, int flags);
__global__ void __launch_bounds__(256, 2) dg_matmul_nt(const float* a, const float* b, float* c,
                                                       const float* bias, float* work,
                                                       int* counters, int M, int N, int K, int lda,
                                                       int ldb, int ldc, long long stride_a,
                                                       long long stride_b, long long stride_c,
                                                       int act, int splits, int k_chunk, int flags);
__global__ void __launch_bounds__(256, 2) dg_matmul_tn(const float* a, const float* b, float* c,
                                                       const float* bias, float* work,
                                                       int* counters, int M, int N, int K, int lda,
                                                       int ldb, int ldc, long long stride_a,
                                                       long long stride_b, long long stride_c,
                                                       int act, int splits, int k_chunk, int flags);
__global__ void __launch_bounds__(256, 2) dg_matmul_tt(const float* a, const float* b, float* c,
                                                       const float* bias, float* work,
                                                       int* counters, int M, int N, int K, int lda,
                                                       int ldb, int ldc, long long stride_a,
                                                       long long stride_b, long long stride_c,
                                                       int act, int splits, int k_chunk, int flags);
}

extern "C" __global__ void dg_matmul_nn(const float* a, const float* b, float* c, const float* bias,
                                        float* work, int* counters, int M, int N, int K, int lda,
                                        int ldb, int ldc, long long stride_a, long long stride_b,
                                        long long stride_c, int act, int splits, int k_chunk,
                                        int flags)
{
    dg_matmul<DgTile128x128, false, false>(a, b, c, bias, work, counters, M, N, K, lda, ldb, ldc,
                                           stride_a, stride_b, stride_c, act, splits, k_chunk,
                                           flags);
}

extern "C" __global__ void dg_matmul_nt(const float* a, const float* b, float* c, const float* bias,
                                        float* work, int* counters, int M, int N, int K, int lda,
                                        int ldb, int ldc, long long stride_a, long long stride_b,
                                        long long stride_c, int act, int splits, int k_chunk,
                                        int flags)
{
    dg_matmul<DgTile128x128, false, true>(a, b, c, bias, work, counters, M, N, K, lda, ldb, ldc,
                                          stride_a, stride_b, stride_c, act, splits, k_chunk,
                                          flags);
}

extern "C" __global__ void dg_matmul_tn(const float* a, const float* b, float* c, const float* bias,
                                        float* work, int* counters, int M, int N, int K, int lda,
                                        int ldb, int ldc, long long stride_a, long long stride_b,
                                        long long stride_c, int act, int splits, int k_chunk,
                                        int flags)
{
    dg_matmul<DgTile128x128, true, false>(a, b, c, bias, work, counters, M, N, K, lda, ldb, ldc,
                                          stride_a, stride_b, stride_c, act, splits, k_chunk,
                                          flags);
}

extern "C" __global__ void dg_matmul_tt(const float* a, const float* b, float* c, const float* bias,
                                        float* work, int* counters, int M, int N, int K, int lda,
                                        int ldb, int ldc, long long stride_a, long long stride_b,
                                        long long stride_c, int act, int splits, int k_chunk,
                                        int flags)
{
    dg_matmul<DgTile128x128, true, true>(a, b, c, bias, work, counters, M, N, K, lda, ldb, ldc,
                                         stride_a, stride_b, stride_c, act, splits, k_chunk, flags);
}

extern "C" __global__ void dg_matmul_nn_64x64(const float* a, const float* b, float* c,
                                              const float* bias, float* work, int* counters, int M,
                                              int N, int K, int lda, int ldb, int ldc,
                                              long long stride_a, long long stride_b,
                                              long long stride_c, int act, int splits, int k_chunk,
                                              int flags)
{
    dg_matmul<DgTile64x64, false, false>(a, b, c, bias, work, counters, M, N, K, lda, ldb, ldc,
                                         stride_a, stride_b, stride_c, act, splits, k_chunk, flags);
}

extern "C" __global__ void dg_matmul_nt_64x64(const float* a, const float* b, float* c,
                                              const float* bias, float* work, int* counters, int M,
                                              int N, int K, int lda, int ldb, int ldc,
                                              long long stride_a, long long stride_b,
                                              long long stride_c, int act, int splits, int k_chunk,
                                              int flags)
{
    dg_matmul<DgTile64x64, false, true>(a, b, c, bias, work, counters, M, N, K, lda, ldb, ldc,
                                        stride_a, stride_b, stride_c, act, splits, k_chunk, flags);
}

extern "C" __global__ void dg_matmul_tn_64x64(const float* a, const float* b, float* c,
                                              const float* bias, float* work, int* counters, int M,
                                              int N, int K, int lda, int ldb, int ldc,
                                              long long stride_a, long long stride_b,
                                              long long stride_c, int act, int splits, int k_chunk,
                                              int flags)
{
    dg_matmul<DgTile64x64, true, false>(a, b, c, bias, work, counters, M, N, K, lda, ldb, ldc,
                                        stride_a, stride_b, stride_c, act, splits, k_chunk, flags);
}

extern "C" __global__ void dg_matmul_tt_64x64(const float* a, const float* b, float* c,
                                              const float* bias, float* work, int* counters, int M,
                                              int N, int K, int lda, int ldb, int ldc,
                                              long long stride_a, long long stride_b,
                                              long long stride_c, int act, int splits, int k_chunk,
                                              int flags)
{
    dg_matmul<DgTile64x64, true, true>(a, b, c, bias, work, counters, M, N, K, lda, ldb, ldc,
                                       stride_a, stride_b, stride_c, act, splits, k_chunk, flags);
}

extern "C" __global__ void dg_matmul_nn_32x32(const float* a, const float* b, float* c,
                                              const float* bias, float* work, int* counters, int M,
                                              int N, int K, int lda, int ldb, int ldc,
                                              long long stride_a, long long stride_b,
                                              long long stride_c, int act, int splits, int k_chunk,
                                              int flags)
{
    dg_matmul<DgTile32x32, false, false>(a, b, c, bias, work, counters, M, N, K, lda, ldb, ldc,
                                         stride_a, stride_b, stride_c, act, splits, k_chunk, flags);
}

extern "C" __global__ void dg_matmul_nt_32x32(const float* a, const float* b, float* c,
                                              const float* bias, float* work, int* counters, int M,
                                              int N, int K, int lda, int ldb, int ldc,
                                              long long stride_a, long long stride_b,
                                              long long stride_c, int act, int splits, int k_chunk,
                                              int flags)
{
    dg_matmul<DgTile32x32, false, true>(a, b, c, bias, work, counters, M, N, K, lda, ldb, ldc,
                                        stride_a, stride_b, stride_c, act, splits, k_chunk, flags);
}

extern "C" __global__ void dg_matmul_tn_32x32(const float* a, const float* b, float* c,
                                              const float* bias, float* work, int* counters, int M,
                                              int N, int K, int lda, int ldb, int ldc,
                                              long long stride_a, long long stride_b,
                                              long long stride_c, int act, int splits, int k_chunk,
                                              int flags)
{
    dg_matmul<DgTile32x32, true, false>(a, b, c, bias, work, counters, M, N, K, lda, ldb, ldc,
                                        stride_a, stride_b, stride_c, act, splits, k_chunk, flags);
}

extern "C" __global__ void dg_matmul_tt_32x32(const float* a, const float* b, float* c,
                                              const float* bias, float* work, int* counters, int M,
                                              int N, int K, int lda, int ldb, int ldc,
                                              long long stride_a, long long stride_b,
                                              long long stride_c, int act, int splits, int k_chunk,
                                              int flags)
{
    dg_matmul<DgTile32x32, true, true>(a, b, c, bias, work, counters, M, N, K, lda, ldb, ldc,
                                       stride_a, stride_b, stride_c, act, splits, k_chunk, flags);
}
