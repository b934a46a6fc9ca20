// Tiled float32 GEMM core shared by matmul.cu and conv2d.cu.
//
// C[M, N] = sum_k A(m, k) * B(k, n), where A and B are read through loader
// functors: a plain (possibly transposed) matrix for matmul, an implicit
// im2col view for the convolutions. The block computes one DG_BM x DG_BN
// tile of C; each of its DG_THREADS threads owns DG_TM x DG_TN outputs at
// rows ty + 16 i and columns tx + 16 j (strided, so that the shared-memory
// reads of a warp hit distinct banks and the final stores are coalesced).
//
// Written for correctness first: one shared-memory stage, no double
// buffering, no vector loads. kernels/__init__.py inlines this file into
// each source before compiling, so CuPy's cache key covers it.
#pragma once
#include "common.cuh"

#define DG_BM 64
#define DG_BN 64
#define DG_BK 16
#define DG_TM 4
#define DG_TN 4
#define DG_TX (DG_BN / DG_TN)  // 16 threads across the columns
#define DG_TY (DG_BM / DG_TM)  // 16 threads down the rows
#define DG_THREADS (DG_TX * DG_TY)

// A_KFAST: consecutive k of A are adjacent in memory (load a tile row-wise);
// B_NFAST: consecutive n of B are adjacent. These only choose the order in
// which the threads fetch a tile, so that a warp reads contiguous memory.
// Rows and columns outside [0, M) x [0, N) and k outside [k_begin, k_end)
// read as zero; loaders are called only inside those bounds.
template <bool A_KFAST, bool B_NFAST, class LoadA, class LoadB, class Store>
__device__ __forceinline__ void dg_gemm_tile(int M, int N, int k_begin, int k_end,
                                             const LoadA& load_a, const LoadB& load_b,
                                             const Store& store)
{
    __shared__ float As[DG_BK][DG_BM];
    __shared__ float Bs[DG_BK][DG_BN];

    const int tid = threadIdx.x;
    const int tx = tid % DG_TX;
    const int ty = tid / DG_TX;
    // Row tiles on x (a limit of 2^31 - 1 blocks: a convolution has N*HO*WO
    // rows), column tiles on y (at most 65535, so N <= 4,194,240).
    const int m0 = blockIdx.x * DG_BM;
    const int n0 = blockIdx.y * DG_BN;

    float acc[DG_TM][DG_TN];
    for (int i = 0; i < DG_TM; ++i)
        for (int j = 0; j < DG_TN; ++j)
            acc[i][j] = 0.0f;

    for (int k0 = k_begin; k0 < k_end; k0 += DG_BK) {
        for (int e = tid; e < DG_BM * DG_BK; e += DG_THREADS) {
            int mm, kk;
            if (A_KFAST) { mm = e / DG_BK; kk = e % DG_BK; }
            else         { kk = e / DG_BM; mm = e % DG_BM; }
            const int m = m0 + mm, k = k0 + kk;
            As[kk][mm] = (m < M && k < k_end) ? load_a(m, k) : 0.0f;
        }
        for (int e = tid; e < DG_BN * DG_BK; e += DG_THREADS) {
            int nn, kk;
            if (B_NFAST) { kk = e / DG_BN; nn = e % DG_BN; }
            else         { nn = e / DG_BK; kk = e % DG_BK; }
            const int n = n0 + nn, k = k0 + kk;
            Bs[kk][nn] = (n < N && k < k_end) ? load_b(k, n) : 0.0f;
        }
        __syncthreads();
        for (int kk = 0; kk < DG_BK; ++kk) {
            float a[DG_TM], b[DG_TN];
            for (int i = 0; i < DG_TM; ++i) a[i] = As[kk][ty + DG_TY * i];
            for (int j = 0; j < DG_TN; ++j) b[j] = Bs[kk][tx + DG_TX * j];
            for (int i = 0; i < DG_TM; ++i)
                for (int j = 0; j < DG_TN; ++j)
                    acc[i][j] += a[i] * b[j];
        }
        // The next iteration overwrites the tiles: wait until all have read them.
        __syncthreads();
    }

    for (int i = 0; i < DG_TM; ++i) {
        const int m = m0 + ty + DG_TY * i;
        if (m >= M) continue;
        for (int j = 0; j < DG_TN; ++j) {
            const int n = n0 + tx + DG_TX * j;
            if (n < N) store(m, n, acc[i][j]);
        }
    }
}
