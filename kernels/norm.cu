// Batch normalization over the last axis of x [rows, C] (channels-last), float32, as
// Backend.batch_norm_train and batch_norm_grad: the training forward in two launches
// (dg_bn_stats, dg_bn_apply) and its backward in two (dg_bn_grad_sums, dg_bn_grad_input).
// No cuBLAS, no host reads: a CUDA graph records them.
//
// The two reductions share one layout (as dg_col_sum in elementwise.cu): a block is
// blockDim.x channels (a power of two <= 32) x blockDim.y row lanes, 256 threads;
// blockIdx.x picks the channels, blockIdx.y the rows [y * rows_per, (y + 1) * rows_per).
// Lane ty reads rows r0 + ty, r0 + ty + blockDim.y, ... (a warp reads whole rows:
// coalesced), and the lanes' results are merged pairwise in shared memory. A block writes
// its result to part[blockIdx.y]; with gridDim.y > 1 the last block of a column of blocks
// to finish (counted in counters[blockIdx.x], which it leaves at 0 for the next launch)
// merges the parts, lane ty taking parts ty, ty + blockDim.y, ... and then the same
// pairwise merge, so the result does not depend on which block finished last. That block
// writes the per-channel outputs the elementwise kernel of the pair reads.
#include "common.cuh"

// Chan et al.: (n, m, q) (count, mean, sum of squared deviations) absorbs (nb, mb, qb).
__device__ __forceinline__ void dg_bn_merge(float& n, float& m, float& q, float nb, float mb, float qb)
{
    if (nb == 0.0f) return;
    const float t = n + nb, f = nb / t, d = mb - m;
    m += d * f;
    q += qb + d * d * n * f;
    n = t;
}

// The block's lanes merged into lane 0: on return (after a barrier) slot tx of the
// shared arrays holds channel tx's (n, m, q). Every thread of the block must call it.
__device__ void dg_bn_tree_stats(float* sn, float* sm, float* sq, float n, float m, float q)
{
    const int bx = blockDim.x, t = threadIdx.y * bx + threadIdx.x;
    sn[t] = n;
    sm[t] = m;
    sq[t] = q;
    __syncthreads();
    for (int half = blockDim.y / 2; half > 0; half >>= 1) {
        if ((int)threadIdx.y < half) {
            float a = sn[t], b = sm[t], c = sq[t];
            dg_bn_merge(a, b, c, sn[t + half * bx], sm[t + half * bx], sq[t + half * bx]);
            sn[t] = a;
            sm[t] = b;
            sq[t] = c;
        }
        __syncthreads();
    }
}

// The same for two plain sums.
__device__ void dg_bn_tree_sums(float* sa, float* sb, float a, float b)
{
    const int bx = blockDim.x, t = threadIdx.y * bx + threadIdx.x;
    sa[t] = a;
    sb[t] = b;
    __syncthreads();
    for (int half = blockDim.y / 2; half > 0; half >>= 1) {
        if ((int)threadIdx.y < half) {
            sa[t] += sa[t + half * bx];
            sb[t] += sb[t + half * bx];
        }
        __syncthreads();
    }
}

// True in the one block of this column that finishes last (every block must call it, after
// writing its part); that block then reads the others' parts (with __ldcg: from L2).
__device__ bool dg_bn_last_block(int* counters, int* flag)
{
    __threadfence();  // this block's part is visible before the count says it is there
    __syncthreads();
    if (threadIdx.x == 0 && threadIdx.y == 0) {
        int* count = counters + blockIdx.x;
        *flag = atomicAdd(count, 1) == (int)gridDim.y - 1;
        if (*flag) *count = 0;  // every block has counted: ready for the next launch
    }
    __syncthreads();
    const bool last = *flag != 0;
    if (last) __threadfence();
    return last;
}

__device__ __forceinline__ float dg_bn_rows_of(long long k, long long rows, long long rows_per)
{
    const long long end = rows < (k + 1) * rows_per ? rows : (k + 1) * rows_per;
    return (float)(end - k * rows_per);
}

// Statistics: part [gridDim.y, 2, C] (work: the blocks' means and squared deviations);
// out: mean, var (biased), inv = 1 / sqrt(var + eps), scale = inv * gamma (gamma may be
// null: inv), each [C]. Within a lane, Welford's update (one read of x, stable).
extern "C" __global__ void dg_bn_stats(
    const float* __restrict__ x, const float* gamma, float* part, int* counters, float* mean, float* var,
    float* inv, float* scale, long long rows, int C, long long rows_per, float eps)
{
    __shared__ float sn[256], sm[256], sq[256];
    __shared__ int flag;
    const int tx = threadIdx.x, ty = threadIdx.y, c = blockIdx.x * blockDim.x + tx;
    const long long r0 = blockIdx.y * rows_per;
    const long long r1 = rows < r0 + rows_per ? rows : r0 + rows_per;
    float n = 0.0f, m = 0.0f, q = 0.0f;
    if (c < C) {
        for (long long r = r0 + ty; r < r1; r += blockDim.y) {
            const float v = x[r * C + c];
            n += 1.0f;
            const float d = v - m;
            m += d / n;
            q += d * (v - m);
        }
    }
    dg_bn_tree_stats(sn, sm, sq, n, m, q);
    const int splits = gridDim.y;
    if (splits > 1) {
        if (ty == 0 && c < C) {
            part[2LL * blockIdx.y * C + c] = sm[tx];
            part[(2LL * blockIdx.y + 1) * C + c] = sq[tx];
        }
        if (!dg_bn_last_block(counters, &flag)) return;
        n = m = q = 0.0f;
        if (c < C) {
            for (int k = ty; k < splits; k += blockDim.y)
                dg_bn_merge(n, m, q, dg_bn_rows_of(k, rows, rows_per), __ldcg(part + 2LL * k * C + c),
                            __ldcg(part + (2LL * k + 1) * C + c));
        }
        dg_bn_tree_stats(sn, sm, sq, n, m, q);
    }
    if (ty == 0 && c < C) {
        const float v = fmaxf(sq[tx] / (float)rows, 0.0f);
        const float iv = 1.0f / sqrtf(v + eps);
        mean[c] = sm[tx];
        var[c] = v;
        inv[c] = iv;
        scale[c] = gamma ? iv * gamma[c] : iv;
    }
}

__device__ __forceinline__ float4 dg_bn_ld4(const float* p)
{
    return *reinterpret_cast<const float4*>(p);
}

__device__ __forceinline__ void dg_bn_st4(float* p, float4 v)
{
    *reinterpret_cast<float4*>(p) = v;
}

// y = (x - mean) * scale + beta over x [rows, C]; beta may be null. vec = 4: C % 4 == 0
// and every pointer 16-byte aligned. The channel moves by a fixed step per iteration (one
// 64-bit modulo per thread, as dg_bias_act).
template <int V>
__device__ void dg_bn_apply_body(const float* x, const float* mean, const float* scale, const float* beta,
                                 float* y, long long n, int C)
{
    const long long groups = n / V, stride = (long long)gridDim.x * blockDim.x;
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    const int cg = C / V;
    int c = (int)(i % cg);
    const int step = (int)(stride % cg);
    for (; i < groups; i += stride) {
        if constexpr (V == 4) {
            const float4 v = dg_bn_ld4(x + 4 * i), m = dg_bn_ld4(mean + 4 * c), s = dg_bn_ld4(scale + 4 * c);
            float4 r = make_float4((v.x - m.x) * s.x, (v.y - m.y) * s.y, (v.z - m.z) * s.z, (v.w - m.w) * s.w);
            if (beta) {
                const float4 b = dg_bn_ld4(beta + 4 * c);
                r.x += b.x;
                r.y += b.y;
                r.z += b.z;
                r.w += b.w;
            }
            dg_bn_st4(y + 4 * i, r);
        } else {
            y[i] = (x[i] - mean[c]) * scale[c] + (beta ? beta[c] : 0.0f);
        }
        c += step;
        if (c >= cg) c -= cg;
    }
}

extern "C" __global__ void dg_bn_apply(const float* __restrict__ x, const float* mean, const float* scale,
                                       const float* beta, float* __restrict__ y, long long rows, int C, int vec)
{
    if (vec == 4)
        dg_bn_apply_body<4>(x, mean, scale, beta, y, rows * C, C);
    else
        dg_bn_apply_body<1>(x, mean, scale, beta, y, rows * C, C);
}

// The backward's sums in one read of dy and x: dbeta = sum dy, dgamma = inv * sum dy *
// (x - mean), each [C]; part [gridDim.y, 2, C] is work. Also coef [3, C], the factors of
// dx = p dy + q (x - mean) + s for dg_bn_grad_input: p = gamma * inv (gamma may be null:
// inv), q = -p * inv * dgamma / rows, s = -p * dbeta / rows.
extern "C" __global__ void dg_bn_grad_sums(
    const float* __restrict__ dy, const float* __restrict__ x, const float* mean, const float* inv,
    const float* gamma, float* part, int* counters, float* dgamma, float* dbeta, float* coef, long long rows,
    int C, long long rows_per)
{
    __shared__ float sa[256], sb[256];
    __shared__ int flag;
    const int tx = threadIdx.x, ty = threadIdx.y, c = blockIdx.x * blockDim.x + tx;
    const long long r0 = blockIdx.y * rows_per;
    const long long r1 = rows < r0 + rows_per ? rows : r0 + rows_per;
    float a = 0.0f, b = 0.0f;
    if (c < C) {
        const float m = mean[c];
        for (long long r = r0 + ty; r < r1; r += blockDim.y) {
            const float g = dy[r * C + c];
            a += g;
            b += g * (x[r * C + c] - m);
        }
    }
    dg_bn_tree_sums(sa, sb, a, b);
    const int splits = gridDim.y;
    if (splits > 1) {
        if (ty == 0 && c < C) {
            part[2LL * blockIdx.y * C + c] = sa[tx];
            part[(2LL * blockIdx.y + 1) * C + c] = sb[tx];
        }
        if (!dg_bn_last_block(counters, &flag)) return;
        a = b = 0.0f;
        if (c < C) {
            for (int k = ty; k < splits; k += blockDim.y) {
                a += __ldcg(part + 2LL * k * C + c);
                b += __ldcg(part + (2LL * k + 1) * C + c);
            }
        }
        dg_bn_tree_sums(sa, sb, a, b);
    }
    if (ty == 0 && c < C) {
        const float iv = inv[c], db = sa[tx], dg = sb[tx] * iv;
        const float p = gamma ? gamma[c] * iv : iv;
        dbeta[c] = db;
        dgamma[c] = dg;
        coef[c] = p;
        coef[C + c] = -p * iv * dg / (float)rows;
        coef[2 * C + c] = -p * db / (float)rows;
    }
}

// dx = p dy + q (x - mean) + s, coef = [p; q; s] ([3, C]) from dg_bn_grad_sums. vec = 4:
// C % 4 == 0 and every pointer 16-byte aligned.
template <int V>
__device__ void dg_bn_grad_input_body(const float* dy, const float* x, const float* mean, const float* coef,
                                      float* dx, long long n, int C)
{
    const long long groups = n / V, stride = (long long)gridDim.x * blockDim.x;
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    const int cg = C / V;
    int c = (int)(i % cg);
    const int step = (int)(stride % cg);
    for (; i < groups; i += stride) {
        if constexpr (V == 4) {
            const float4 g = dg_bn_ld4(dy + 4 * i), v = dg_bn_ld4(x + 4 * i), m = dg_bn_ld4(mean + 4 * c);
            const float4 p = dg_bn_ld4(coef + 4 * c), q = dg_bn_ld4(coef + C + 4 * c),
                         s = dg_bn_ld4(coef + 2 * C + 4 * c);
            dg_bn_st4(dx + 4 * i, make_float4(p.x * g.x + q.x * (v.x - m.x) + s.x,
                                              p.y * g.y + q.y * (v.y - m.y) + s.y,
                                              p.z * g.z + q.z * (v.z - m.z) + s.z,
                                              p.w * g.w + q.w * (v.w - m.w) + s.w));
        } else {
            dx[i] = coef[c] * dy[i] + coef[C + c] * (x[i] - mean[c]) + coef[2 * C + c];
        }
        c += step;
        if (c >= cg) c -= cg;
    }
}

extern "C" __global__ void dg_bn_grad_input(const float* __restrict__ dy, const float* __restrict__ x,
                                            const float* mean, const float* coef, float* __restrict__ dx,
                                            long long rows, int C, int vec)
{
    if (vec == 4)
        dg_bn_grad_input_body<4>(dy, x, mean, coef, dx, rows * C, C);
    else
        dg_bn_grad_input_body<1>(dy, x, mean, coef, dx, rows * C, C);
}
