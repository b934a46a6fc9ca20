// Fused float32 elementwise kernels and small reductions, each one launch where
// CuPy's array operators would take several: optimizer updates (over one
// parameter or one flat buffer of all of them), softmax + cross-entropy,
// dropout, bias + activation, relu gradient, column sums.
//
// Elementwise kernels use grid-stride loops over n elements, any 1-D grid.
// Pointers documented "may be null" select a variant at run time.
#include "common.cuh"  // dg_activate, the DG_ACT_* codes, DG_NEG_INF

#define DG_GRID_STRIDE(i, n)                                                     \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \
         i += (long long)gridDim.x * blockDim.x)

// ------------------------------------------------------------- optimizers
// The update rules, one element each; the one-tensor kernels below and
// dg_update_many apply them.
//
// Adam(W), as Backend.adam_update: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// p -= decay p (decay = lr * weight_decay, 0 for plain Adam);
// p -= step_size m / (sqrt(v) + eps), step_size = lr sqrt(1-b2^t) / (1-b1^t).
__device__ __forceinline__ void dg_adam_at(long long i, float* p, const float* g, float* m, float* v,
                                           float b1, float b2, float eps, float step_size, float decay)
{
    const float gi = g[i];
    const float mi = b1 * m[i] + (1.0f - b1) * gi;
    const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float pi = p[i];
    if (decay != 0.0f) pi -= decay * pi;
    p[i] = pi - step_size * mi / (sqrtf(vi) + eps);
}

// SGD, as Backend.sgd_update. mom may be null (plain SGD: p -= lr g); else
// mom = momentum mom - lr g and p += mom (nesterov: p += momentum mom - lr g).
__device__ __forceinline__ void dg_sgd_at(long long i, float* p, const float* g, float* mom, float lr,
                                          float momentum, int nesterov)
{
    const float gi = g[i];
    if (!mom) {
        p[i] -= lr * gi;
        return;
    }
    const float mi = momentum * mom[i] - lr * gi;
    mom[i] = mi;
    p[i] += nesterov ? momentum * mi - lr * gi : mi;
}

// RMSprop, as Backend.rmsprop_update. v = rho v + (1-rho) g^2. mg may be null;
// if given (centered), mg = rho mg + (1-rho) g and the denominator is
// sqrt(v - mg^2 + eps), else sqrt(v + eps). inc = lr g / denominator. mom may
// be null; if given, mom = momentum mom + inc and p -= mom, else p -= inc.
__device__ __forceinline__ void dg_rmsprop_at(long long i, float* p, const float* g, float* v, float* mg,
                                              float* mom, float lr, float rho, float momentum, float eps)
{
    const float gi = g[i];
    const float vi = rho * v[i] + (1.0f - rho) * gi * gi;
    v[i] = vi;
    float denom;
    if (mg) {
        const float mgi = rho * mg[i] + (1.0f - rho) * gi;
        mg[i] = mgi;
        denom = sqrtf(vi - mgi * mgi + eps);
    } else {
        denom = sqrtf(vi + eps);
    }
    const float inc = lr * gi / denom;
    if (mom) {
        const float mo = momentum * mom[i] + inc;
        mom[i] = mo;
        p[i] -= mo;
    } else {
        p[i] -= inc;
    }
}

// hp may be null; if given (a step inside a CUDA graph, whose launch
// arguments are frozen), Adam's step_size = hp[0] and decay = hp[1] * decay,
// SGD's and RMSprop's lr = hp[0], read at run time so that each replay takes
// the host's values for its step.
extern "C" __global__ void dg_adam(float* p, const float* g, float* m, float* v, long long n,
                                   float b1, float b2, float eps, float step_size, float decay,
                                   const float* hp)
{
    if (hp) {
        step_size = hp[0];
        decay *= hp[1];
    }
    DG_GRID_STRIDE(i, n) dg_adam_at(i, p, g, m, v, b1, b2, eps, step_size, decay);
}

extern "C" __global__ void dg_sgd(float* p, const float* g, float* mom, long long n, float lr,
                                  float momentum, int nesterov, const float* hp)
{
    if (hp) lr = hp[0];
    DG_GRID_STRIDE(i, n) dg_sgd_at(i, p, g, mom, lr, momentum, nesterov);
}

extern "C" __global__ void dg_rmsprop(float* p, const float* g, float* v, float* mg, float* mom,
                                      long long n, float lr, float rho, float momentum, float eps,
                                      const float* hp)
{
    if (hp) lr = hp[0];
    DG_GRID_STRIDE(i, n) dg_rmsprop_at(i, p, g, v, mg, mom, lr, rho, momentum, eps);
}

// One rule applied to up to eight variables in one launch (the optimizer's
// whole step is one or a few launches instead of one per variable; the
// launch, not the arithmetic, is what a small variable costs). Variable t is
// (p_t, g_t, its slots a_t, b_t, c_t, n_t elements); the first `count` are
// used, the rest are null. rule 0: Adam, slots (m, v), scalars (b1, b2, eps,
// step_size, decay), decay applied to the variables whose bit is set in
// decay_mask. rule 1: SGD, slot (mom or null), scalars (momentum, -, -, lr),
// flag = nesterov. rule 2: RMSprop, slots (v, mg or null, mom or null),
// scalars (rho, momentum, eps, lr). hp as in the kernels above.
// The parameters are spelled out (not an array of pointers in device memory)
// so that a CUDA graph records them with the launch.
extern "C" __global__ void dg_update_many(int rule, int count, int decay_mask, int flag, float s0,
                                          float s1, float s2, float s3, float decay, const float* hp,
                                          float* p0, const float* g0, float* a0, float* b0, float* c0, long long n0,
                                          float* p1, const float* g1, float* a1, float* b1, float* c1, long long n1,
                                          float* p2, const float* g2, float* a2, float* b2, float* c2, long long n2,
                                          float* p3, const float* g3, float* a3, float* b3, float* c3, long long n3,
                                          float* p4, const float* g4, float* a4, float* b4, float* c4, long long n4,
                                          float* p5, const float* g5, float* a5, float* b5, float* c5, long long n5,
                                          float* p6, const float* g6, float* a6, float* b6, float* c6, long long n6,
                                          float* p7, const float* g7, float* a7, float* b7, float* c7, long long n7)
{
    float* const P[8] = {p0, p1, p2, p3, p4, p5, p6, p7};
    const float* const G[8] = {g0, g1, g2, g3, g4, g5, g6, g7};
    float* const A[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
    float* const B[8] = {b0, b1, b2, b3, b4, b5, b6, b7};
    float* const C[8] = {c0, c1, c2, c3, c4, c5, c6, c7};
    const long long N[8] = {n0, n1, n2, n3, n4, n5, n6, n7};
    if (hp) {
        s3 = hp[0];
        if (rule == 0) decay *= hp[1];
    }
    for (int t = 0; t < count && t < 8; ++t) {
        if (rule == 0) {
            const float dt = (decay_mask >> t) & 1 ? decay : 0.0f;
            DG_GRID_STRIDE(i, N[t]) dg_adam_at(i, P[t], G[t], A[t], B[t], s0, s1, s2, s3, dt);
        } else if (rule == 1) {
            DG_GRID_STRIDE(i, N[t]) dg_sgd_at(i, P[t], G[t], A[t], s3, s0, flag);
        } else {
            DG_GRID_STRIDE(i, N[t]) dg_rmsprop_at(i, P[t], G[t], A[t], B[t], C[t], s3, s0, s1, s2);
        }
    }
}

// ------------------------------------------------- softmax + cross-entropy
// Sum (op 0) or max (op 1) of v over the block; blockDim.x is a power of two
// <= 256. Every thread of the block must call it (it synchronises).
__device__ __forceinline__ float dg_block_reduce(float v, int op)
{
    __shared__ float red[256];
    const int tid = threadIdx.x;
    red[tid] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (tid < s) red[tid] = op ? fmaxf(red[tid], red[tid + s]) : red[tid] + red[tid + s];
        __syncthreads();
    }
    const float r = red[0];
    __syncthreads();  // red is reused by the next call
    return r;
}

// The maximum of row x [cols] and the sum of exp(x - max) over it, for the
// whole block (the three row kernels below share it).
__device__ __forceinline__ void dg_row_max_sumexp(const float* x, int cols, float& mx, float& se)
{
    mx = DG_NEG_INF;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) mx = fmaxf(mx, x[c]);
    mx = dg_block_reduce(mx, 1);
    se = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) se += expf(x[c] - mx);
    se = dg_block_reduce(se, 0);
}

// Rows of logits and labels [rows, cols]: loss[r] = -sum(labels * log_softmax),
// prob = softmax (kept for the backward pass). One block per row; blockDim.x
// a power of two <= 256.
extern "C" __global__ void dg_softmax_xent_fwd(const float* logits, const float* labels,
                                               float* loss, float* prob, int rows, int cols)
{
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* x = logits + (long long)r * cols;
        const float* t = labels + (long long)r * cols;
        float mx, se;
        dg_row_max_sumexp(x, cols, mx, se);
        const float lse = logf(se);
        float l = 0.0f;
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            const float lp = (x[c] - mx) - lse;
            l -= t[c] * lp;
            prob[(long long)r * cols + c] = expf(lp);
        }
        l = dg_block_reduce(l, 0);
        if (threadIdx.x == 0) loss[r] = l;
    }
}

// Gradient of the loss above with respect to the logits: (prob - labels) * dy[row].
extern "C" __global__ void dg_softmax_xent_bwd(const float* prob, const float* labels,
                                               const float* dy, float* dlogits, int rows,
                                               int cols)
{
    const long long n = (long long)rows * cols;
    DG_GRID_STRIDE(i, n) {
        dlogits[i] = (prob[i] - labels[i]) * dy[i / cols];
    }
}

// As dg_softmax_xent_fwd for integer class labels [rows]: loss[r] =
// -log_softmax(x_r)[labels[r]]; a label outside [0, cols) has no class: loss
// 0, and gradient 0 below (the row is ignored). No one-hot array is made.
extern "C" __global__ void dg_sparse_xent_fwd(const float* logits, const int* labels, float* loss,
                                              float* prob, int rows, int cols)
{
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* x = logits + (long long)r * cols;
        float mx, se;
        dg_row_max_sumexp(x, cols, mx, se);
        const float lse = logf(se);
        for (int c = threadIdx.x; c < cols; c += blockDim.x)
            prob[(long long)r * cols + c] = expf((x[c] - mx) - lse);
        if (threadIdx.x == 0) {
            const int k = labels[r];
            loss[r] = (k >= 0 && k < cols) ? -((x[k] - mx) - lse) : 0.0f;
        }
    }
}

// Its gradient with respect to the logits: (prob - onehot(labels)) * dy[row],
// 0 in a row whose label has no class.
extern "C" __global__ void dg_sparse_xent_bwd(const float* prob, const int* labels, const float* dy,
                                              float* dlogits, int rows, int cols)
{
    const long long n = (long long)rows * cols;
    DG_GRID_STRIDE(i, n) {
        const long long r = i / cols;
        const int k = labels[r];
        const float hit = k == (int)(i - r * cols) ? 1.0f : 0.0f;
        dlogits[i] = (k >= 0 && k < cols) ? (prob[i] - hit) * dy[r] : 0.0f;
    }
}

// Softmax over rows [rows, cols], as Backend.softmax on the last axis:
// exp(x - max) / sum. One block per row; blockDim.x a power of two <= 256.
extern "C" __global__ void dg_softmax_rows(const float* x, float* y, int rows, int cols)
{
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* xr = x + (long long)r * cols;
        float mx, se;
        dg_row_max_sumexp(xr, cols, mx, se);
        for (int c = threadIdx.x; c < cols; c += blockDim.x)
            y[(long long)r * cols + c] = expf(xr[c] - mx) / se;
    }
}

// hits[r] = 1 where the first maximum of row r of x [rows, cols] is at
// column labels[r], else 0 (a NaN counts as the maximum, as NumPy's argmax
// takes it). One thread per row: rows of class scores are short.
extern "C" __global__ void dg_argmax_hits(const float* x, const int* labels, float* hits, int rows, int cols)
{
    DG_GRID_STRIDE(r, rows) {
        const float* xr = x + r * cols;
        int best = 0;
        float bv = xr[0];
        for (int c = 1; c < cols; ++c) {
            const float v = xr[c];
            if (v > bv || (v != v && bv == bv)) {
                bv = v;
                best = c;
            }
        }
        hits[r] = best == labels[r] ? 1.0f : 0.0f;
    }
}

// ----------------------------------------------------------------- dropout
// Philox-4x32-10 (Salmon et al., SC'11): counter-based, so element i's random
// number depends only on (seed, offset, i). No generator state lives on the
// device and nothing calls cuRAND, so a CUDA graph can capture it.
__device__ __forceinline__ void dg_philox(unsigned int c[4], unsigned int k0, unsigned int k1)
{
    for (int r = 0; r < 10; ++r) {
        const unsigned int hi0 = __umulhi(0xD2511F53u, c[0]), lo0 = 0xD2511F53u * c[0];
        const unsigned int hi1 = __umulhi(0xCD9E8D57u, c[2]), lo1 = 0xCD9E8D57u * c[2];
        const unsigned int n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
        c[0] = n0;
        c[1] = lo1;
        c[2] = n2;
        c[3] = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
}

// mask[i] = scale if uniform(seed, offset, i) >= rate else 0, and, when x is
// not null, y[i] = x[i] * mask[i]. Counter (offset + i/4) gives the four
// numbers of elements 4(i/4) .. 4(i/4)+3; the caller advances offset by
// ceil(n/4) per call so that calls never reuse numbers. replay may be null
// (counter words 2 and 3 are 0); inside a CUDA graph it points at a device
// count that the graph advances after each replay, so that every replay
// draws new masks although its launch arguments are frozen.
extern "C" __global__ void dg_dropout(const float* x, float* y, float* mask, long long n,
                                      float rate, float scale, unsigned long long seed,
                                      unsigned long long offset,
                                      const unsigned long long* replay)
{
    const unsigned long long r = replay ? *replay : 0ull;
    const long long groups = (n + 3) / 4;
    DG_GRID_STRIDE(q, groups) {
        const unsigned long long ctr = offset + (unsigned long long)q;
        unsigned int c[4] = {(unsigned int)ctr, (unsigned int)(ctr >> 32), (unsigned int)r,
                             (unsigned int)(r >> 32)};
        dg_philox(c, (unsigned int)seed, (unsigned int)(seed >> 32));
        for (int k = 0; k < 4; ++k) {
            const long long i = 4 * q + k;
            if (i >= n) break;
            // 24 random bits: exactly representable uniforms in [0, 1).
            const float u = (float)(c[k] >> 8) * (1.0f / 16777216.0f);
            const float mk = u >= rate ? scale : 0.0f;
            mask[i] = mk;
            if (x) y[i] = x[i] * mk;
        }
    }
}

// ------------------------------------------------- graph-step bookkeeping
// Writes the n (<= 4) scalars of a step into hp: one launch, ordered on the
// stream before the graph replay that reads them (no host-to-device copy).
extern "C" __global__ void dg_set_scalars(float* hp, int n, float a, float b, float c, float d)
{
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        if (n > 0) hp[0] = a;
        if (n > 1) hp[1] = b;
        if (n > 2) hp[2] = c;
        if (n > 3) hp[3] = d;
    }
}

// *ctr += inc: the last node of a captured step advances its replay count.
extern "C" __global__ void dg_counter_add(unsigned long long* ctr, unsigned long long inc)
{
    if (blockIdx.x == 0 && threadIdx.x == 0) *ctr += inc;
}

// -------------------------------------------------- epilogues, gradients
// vec (bias_act, relu_grad, col_sum), chosen by the launcher: 4 when every
// pointer is 16-byte aligned and the sizes are multiples of 4 (see each
// kernel), so that one 16-byte access moves 4 elements; else 1.
__device__ __forceinline__ float4 dg_ld4(const float* p)
{
    return *reinterpret_cast<const float4*>(p);
}

__device__ __forceinline__ void dg_st4(float* p, float4 v)
{
    *reinterpret_cast<float4*>(p) = v;
}

// y[r, c] = act(x[r, c] + bias[c]) over rows x cols; bias may be null; y may be x.
// vec = 4: rows * cols % 4 == 0 and, with a bias, cols % 4 == 0.
template <int V>
__device__ void dg_bias_act_body(const float* x, const float* bias, float* y, long long n,
                                 int cols, int act)
{
    const long long groups = n / V;
    const long long stride = (long long)gridDim.x * blockDim.x;
    long long q = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    // The bias index moves by a fixed step per iteration: one 64-bit modulo
    // per thread instead of one per element.
    const int bcols = bias ? cols / V : 1;
    int c = (int)(q % bcols);
    const int step = (int)(stride % bcols);
    for (; q < groups; q += stride) {
        if constexpr (V == 4) {
            float4 v = dg_ld4(x + 4 * q);
            if (bias) {
                const float4 b = dg_ld4(bias + 4 * c);
                v.x += b.x;
                v.y += b.y;
                v.z += b.z;
                v.w += b.w;
            }
            v.x = dg_activate(v.x, act);
            v.y = dg_activate(v.y, act);
            v.z = dg_activate(v.z, act);
            v.w = dg_activate(v.w, act);
            dg_st4(y + 4 * q, v);
        } else {
            float v = x[q];
            if (bias) v += bias[c];
            y[q] = dg_activate(v, act);
        }
        c += step;
        if (c >= bcols) c -= bcols;
    }
}

extern "C" __global__ void dg_bias_act(const float* x, const float* bias, float* y,
                                       long long rows, int cols, int act, int vec)
{
    if (vec == 4)
        dg_bias_act_body<4>(x, bias, y, rows * cols, cols, act);
    else
        dg_bias_act_body<1>(x, bias, y, rows * cols, cols, act);
}

// dx = dy * (x > 0) (dg_relu_mask, common.cuh), as Backend.relu_grad. vec = 4: n % 4 == 0.

extern "C" __global__ void dg_relu_grad(const float* __restrict__ dy, const float* __restrict__ x,
                                        float* __restrict__ dx, long long n, int vec)
{
    if (vec == 4) {
        DG_GRID_STRIDE(q, n / 4) {
            const float4 g = dg_ld4(dy + 4 * q), v = dg_ld4(x + 4 * q);
            float4 r;
            r.x = dg_relu_mask(g.x, v.x);
            r.y = dg_relu_mask(g.y, v.y);
            r.z = dg_relu_mask(g.z, v.z);
            r.w = dg_relu_mask(g.w, v.w);
            dg_st4(dx + 4 * q, r);
        }
        return;
    }
    DG_GRID_STRIDE(i, n) {
        dx[i] = dg_relu_mask(dy[i], x[i]);
    }
}

// Column sums of x [rows, cols] (a bias gradient), deterministic. A thread
// sums V adjacent columns (vec = 4: cols % 4 == 0) over the rows r0 +
// threadIdx.y + k * blockDim.y; the blockDim.y partial sums of a column are
// then added pairwise in shared memory. Block: blockDim.x * blockDim.y <=
// 256, blockDim.y a power of two. blockIdx.y takes rows [y*rows_per,
// (y+1)*rows_per) and writes out[y * cols + col]; with gridDim.y > 1 the
// launcher sums those parts with this kernel again.
template <int V>
__device__ void dg_col_sum_body(const float* __restrict__ x, float* __restrict__ out,
                                long long rows, int cols, long long rows_per, float* part)
{
    const int col = (blockIdx.x * blockDim.x + threadIdx.x) * V;
    const long long r0 = blockIdx.y * rows_per;
    const long long r1 = rows < r0 + rows_per ? rows : r0 + rows_per;
    float s[V];
    for (int k = 0; k < V; ++k) s[k] = 0.0f;
    if (col < cols) {
#pragma unroll 4
        for (long long r = r0 + threadIdx.y; r < r1; r += blockDim.y) {
            if constexpr (V == 4) {
                const float4 v = dg_ld4(x + r * cols + col);
                s[0] += v.x;
                s[1] += v.y;
                s[2] += v.z;
                s[3] += v.w;
            } else {
                s[0] += x[r * cols + col];
            }
        }
    }
    const int t = threadIdx.y * blockDim.x + threadIdx.x;
    for (int k = 0; k < V; ++k) part[k * 256 + t] = s[k];
    __syncthreads();
    for (int half = blockDim.y / 2; half > 0; half >>= 1) {
        if (threadIdx.y < half)
            for (int k = 0; k < V; ++k) part[k * 256 + t] += part[k * 256 + t + half * blockDim.x];
        __syncthreads();
    }
    if (threadIdx.y == 0 && col < cols)
        for (int k = 0; k < V; ++k) out[(long long)blockIdx.y * cols + col + k] = part[k * 256 + t];
}

extern "C" __global__ void dg_col_sum(const float* __restrict__ x, float* __restrict__ out,
                                      long long rows, int cols, long long rows_per, int vec)
{
    __shared__ float part[4 * 256];
    if (vec == 4)
        dg_col_sum_body<4>(x, out, rows, cols, rows_per, part);
    else
        dg_col_sum_body<1>(x, out, rows, cols, rows_per, part);
}

// out[i] = sum over s < splits of parts[s * n + i] (split-K and split-row partials).
extern "C" __global__ void dg_sum_splits(const float* parts, float* out, int splits, long long n)
{
    DG_GRID_STRIDE(i, n) {
        float s = 0.0f;
        for (int k = 0; k < splits; ++k) s += parts[(long long)k * n + i];
        out[i] = s;
    }
}
