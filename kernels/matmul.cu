// Float32 matrix products C = act(op(A) @ op(B) + bias), row-major.
//
// dg_matmul_<ta><tb>: n = as stored, t = transposed. A is stored [M, K]
// (or [K, M] when transposed) with row stride lda; B is stored [K, N] (or
// [N, K]) with row stride ldb; C is [M, N] with row stride ldc. blockIdx.z
// walks a batch: the matrices of item z start at z * stride_{a,b,c}
// (a stride of 0 broadcasts one matrix over the batch). bias [N] may be
// null; act is a DG_ACT_* code. Grid: (ceil(M/64), ceil(N/64), batch),
// block: DG_THREADS.
#include "gemm_core.cuh"

template <bool T>
struct DgMatA {  // A(m, k)
    const float* p;
    int ld;
    __device__ __forceinline__ float operator()(int m, int k) const
    {
        return T ? p[(long long)k * ld + m] : p[(long long)m * ld + k];
    }
};

template <bool T>
struct DgMatB {  // B(k, n)
    const float* p;
    int ld;
    __device__ __forceinline__ float operator()(int k, int n) const
    {
        return T ? p[(long long)n * ld + k] : p[(long long)k * ld + n];
    }
};

struct DgMatStore {
    float* c;
    const float* bias;
    int ld;
    int act;
    __device__ __forceinline__ void operator()(int m, int n, float v) const
    {
        if (bias) v += bias[n];
        c[(long long)m * ld + n] = dg_activate(v, act);
    }
};

template <bool TA, bool TB>
__device__ __forceinline__ void dg_matmul(const float* a, const float* b, float* c,
                                          const float* bias, int M, int N, int K,
                                          int lda, int ldb, int ldc, long long stride_a,
                                          long long stride_b, long long stride_c, int act)
{
    const long long z = blockIdx.z;
    DgMatA<TA> la = {a + z * stride_a, lda};
    DgMatB<TB> lb = {b + z * stride_b, ldb};
    DgMatStore st = {c + z * stride_c, bias, ldc, act};
    dg_gemm_tile<!TA, !TB>(M, N, 0, K, la, lb, st);
}

// One entry point per transpose combination (plain names, no macros, so the
// tests can find every kernel in the source text).
extern "C" __global__ void dg_matmul_nn(const float* a, const float* b, float* c,
                                      const float* bias, int M, int N, int K, int lda, int ldb,
                                      int ldc, long long stride_a, long long stride_b,
                                      long long stride_c, int act)
{
    dg_matmul<false, false>(a, b, c, bias, M, N, K, lda, ldb, ldc, stride_a, stride_b, stride_c, act);
}

extern "C" __global__ void dg_matmul_nt(const float* a, const float* b, float* c,
                                      const float* bias, int M, int N, int K, int lda, int ldb,
                                      int ldc, long long stride_a, long long stride_b,
                                      long long stride_c, int act)
{
    dg_matmul<false, true>(a, b, c, bias, M, N, K, lda, ldb, ldc, stride_a, stride_b, stride_c, act);
}

extern "C" __global__ void dg_matmul_tn(const float* a, const float* b, float* c,
                                      const float* bias, int M, int N, int K, int lda, int ldb,
                                      int ldc, long long stride_a, long long stride_b,
                                      long long stride_c, int act)
{
    dg_matmul<true, false>(a, b, c, bias, M, N, K, lda, ldb, ldc, stride_a, stride_b, stride_c, act);
}

extern "C" __global__ void dg_matmul_tt(const float* a, const float* b, float* c,
                                      const float* bias, int M, int N, int K, int lda, int ldb,
                                      int ldc, long long stride_a, long long stride_b,
                                      long long stride_c, int act)
{
    dg_matmul<true, true>(a, b, c, bias, M, N, K, lda, ldb, ldc, stride_a, stride_b, stride_c, act);
}
