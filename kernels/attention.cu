// Fused scaled dot-product attention over [BH, T, D] slabs (float32), as Backend.attention and
// attention_grad: softmax(q k^T * scale, mask) v without writing the [T, S] score matrix out.
// Forward: one launch (dg_attn_fwd); backward: two (dg_attn_bwd_dq, which also writes
// delta = rowsum(dout * out), then dg_attn_bwd_dkv). No atomics, no host reads.
//
// Layout: q [BH, T, D], k [BH, S, D], v [BH, S, E], out [BH, T, E], lse [BH, T] (the log of the
// row's softmax denominator plus its max; +inf for a row masked everywhere, whose output is 0,
// as Keras's masked softmax gives). mask: int32, 0 = masked, broadcast through element strides
// (mb, mh, mq; the key axis is contiguous) with H heads per batch entry; null: no mask.
// causal: key j > query i is masked.
//
// Dropout on the probabilities, flash-attention style: thresh > 0 drops element (bh, i, j) where
// the 24-bit uniform of random_keyed's hash (splitmix64 of its flat index (bh * T + i) * S + j and a
// key) is below thresh / 2^24, and scales the survivors by keep_scale = 1 / (1 - rate); the same
// function regenerates the mask in the backward kernels, so nothing is stored. key is
// Backend._keyed_key(seed, counter); replay, when not null, is a captured graph's replay count
// mixed in as the CUDA backend's _keyed_key does, so each replay draws a new mask. lse is that of
// the undropped softmax; with z the kept mask / (1 - rate): out_i = sum_j p_ij z_ij v_j,
// dv_j = sum_i p_ij z_ij dout_i, dp_ij = z_ij (dout_i . v_j), ds_ij = p_ij (dp_ij - delta_i).
//
// dg_attn_fwd: a block is ATT_TILE query rows of one slab, one thread per row; the keys and
// values go through shared memory ATT_TILE rows at a time, and each thread keeps its row's
// running max, denominator and output (the online softmax of flash attention). D, E <= ATT_MAXD.
#include "common.cuh"

#define ATT_TILE 32
#define ATT_MAXD 64
#define ATT_POS_INF (__int_as_float(0x7f800000))

__device__ __forceinline__ bool dg_att_keep(const int* mask, long long mb, long long mh, long long mq, int H,
                                            long long bh, int i, int j, int causal)
{
    if (causal && j > i) return false;
    if (!mask) return true;
    const long long b = bh / H, h = bh % H;
    return mask[b * mb + h * mh + (long long)i * mq + j] != 0;
}

__device__ __forceinline__ unsigned long long dg_att_key(unsigned long long key, const unsigned long long* replay)
{
    return replay ? *replay * 0x632BE59BD9B4E019ull + key : key;
}

// The dropout factor of element (bh, i, j): keep_scale, or 0 where dropped (1 with no dropout).
__device__ __forceinline__ float dg_att_drop(unsigned long long key, int thresh, float keep_scale, long long bh,
                                             int T, int S, int i, int j)
{
    if (thresh <= 0) return 1.0f;
    unsigned long long z = (unsigned long long)((bh * T + i) * S + j) * 0x9E3779B97F4A7C15ull + key;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (int)(z >> 40) >= thresh ? keep_scale : 0.0f;
}

extern "C" __global__ void dg_attn_fwd(const float* __restrict__ q, const float* __restrict__ k,
                                       const float* __restrict__ v, const int* mask, float* __restrict__ out,
                                       float* __restrict__ lse, int T, int S, int D, int E, int H, long long mb,
                                       long long mh, long long mq, float scale, int causal,
                                       float keep_scale, int thresh, unsigned long long key,
                                       const unsigned long long* replay)
{
    __shared__ float ks[ATT_TILE * ATT_MAXD], vs[ATT_TILE * ATT_MAXD];
    const long long bh = blockIdx.y;
    const unsigned long long rk = dg_att_key(key, replay);
    const int i = blockIdx.x * ATT_TILE + threadIdx.x;
    const bool row = i < T;
    float qr[ATT_MAXD], acc[ATT_MAXD];
    for (int d = 0; d < D; ++d) qr[d] = row ? q[(bh * T + i) * D + d] * scale : 0.0f;
    for (int e = 0; e < E; ++e) acc[e] = 0.0f;
    float m = DG_NEG_INF, l = 0.0f;
    for (int j0 = 0; j0 < S; j0 += ATT_TILE) {
        const int n = S - j0 < ATT_TILE ? S - j0 : ATT_TILE;
        for (int t = threadIdx.x; t < n * D; t += blockDim.x) ks[t] = k[(bh * S + j0) * D + t];
        for (int t = threadIdx.x; t < n * E; t += blockDim.x) vs[t] = v[(bh * S + j0) * E + t];
        __syncthreads();
        if (row) {
            for (int jj = 0; jj < n; ++jj) {
                const int j = j0 + jj;
                if (!dg_att_keep(mask, mb, mh, mq, H, bh, i, j, causal)) continue;
                float s = 0.0f;
                for (int d = 0; d < D; ++d) s += qr[d] * ks[jj * D + d];
                if (s > m) {  // rescale what was summed so far to the new max
                    const float c = expf(m - s);
                    l *= c;
                    for (int e = 0; e < E; ++e) acc[e] *= c;
                    m = s;
                }
                const float p = expf(s - m);
                l += p;
                const float pz = p * dg_att_drop(rk, thresh, keep_scale, bh, T, S, i, j);
                for (int e = 0; e < E; ++e) acc[e] += pz * vs[jj * E + e];
            }
        }
        __syncthreads();
    }
    if (row) {
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        for (int e = 0; e < E; ++e) out[(bh * T + i) * E + e] = acc[e] * inv;
        lse[bh * T + i] = l > 0.0f ? m + logf(l) : ATT_POS_INF;
    }
}

// dq = scale * sum_j p_ij (dp_ij - delta_i) k_j, dp_ij = dout_i . v_j, p_ij = exp(q_i . k_j * scale - lse_i);
// delta_i = dout_i . out_i is written for dg_attn_bwd_dkv. One thread per query row, as the forward.
extern "C" __global__ void dg_attn_bwd_dq(const float* __restrict__ q, const float* __restrict__ k,
                                          const float* __restrict__ v, const int* mask,
                                          const float* __restrict__ out, const float* __restrict__ dout,
                                          const float* __restrict__ lse, float* __restrict__ delta,
                                          float* __restrict__ dq, int T, int S, int D, int E, int H, long long mb,
                                          long long mh, long long mq, float scale, int causal,
                                          float keep_scale, int thresh, unsigned long long key,
                                          const unsigned long long* replay)
{
    __shared__ float ks[ATT_TILE * ATT_MAXD], vs[ATT_TILE * ATT_MAXD];
    const long long bh = blockIdx.y;
    const unsigned long long rk = dg_att_key(key, replay);
    const int i = blockIdx.x * ATT_TILE + threadIdx.x;
    const bool row = i < T;
    float qr[ATT_MAXD], gr[ATT_MAXD], acc[ATT_MAXD];
    float dl = 0.0f, L = ATT_POS_INF;
    if (row) {
        for (int d = 0; d < D; ++d) qr[d] = q[(bh * T + i) * D + d] * scale;
        for (int e = 0; e < E; ++e) {
            gr[e] = dout[(bh * T + i) * E + e];
            dl += gr[e] * out[(bh * T + i) * E + e];
        }
        L = lse[bh * T + i];
        delta[bh * T + i] = dl;
    }
    for (int d = 0; d < D; ++d) acc[d] = 0.0f;
    for (int j0 = 0; j0 < S; j0 += ATT_TILE) {
        const int n = S - j0 < ATT_TILE ? S - j0 : ATT_TILE;
        for (int t = threadIdx.x; t < n * D; t += blockDim.x) ks[t] = k[(bh * S + j0) * D + t];
        for (int t = threadIdx.x; t < n * E; t += blockDim.x) vs[t] = v[(bh * S + j0) * E + t];
        __syncthreads();
        if (row && L != ATT_POS_INF) {
            for (int jj = 0; jj < n; ++jj) {
                if (!dg_att_keep(mask, mb, mh, mq, H, bh, i, j0 + jj, causal)) continue;
                float s = 0.0f, dp = 0.0f;
                for (int d = 0; d < D; ++d) s += qr[d] * ks[jj * D + d];
                for (int e = 0; e < E; ++e) dp += gr[e] * vs[jj * E + e];
                dp *= dg_att_drop(rk, thresh, keep_scale, bh, T, S, i, j0 + jj);
                const float ds = expf(s - L) * (dp - dl);
                for (int d = 0; d < D; ++d) acc[d] += ds * ks[jj * D + d];
            }
        }
        __syncthreads();
    }
    if (row)
        for (int d = 0; d < D; ++d) dq[(bh * T + i) * D + d] = acc[d] * scale;
}

// dv_j = sum_i p_ij dout_i, dk_j = scale * sum_i p_ij (dp_ij - delta_i) q_i: one thread per key row,
// the queries (q, dout, lse, delta) through shared memory ATT_TILE rows at a time.
extern "C" __global__ void dg_attn_bwd_dkv(const float* __restrict__ q, const float* __restrict__ k,
                                           const float* __restrict__ v, const int* mask,
                                           const float* __restrict__ dout, const float* __restrict__ lse,
                                           const float* __restrict__ delta, float* __restrict__ dk,
                                           float* __restrict__ dv, int T, int S, int D, int E, int H, long long mb,
                                           long long mh, long long mq, float scale, int causal,
                                           float keep_scale, int thresh, unsigned long long key,
                                           const unsigned long long* replay)
{
    __shared__ float qs[ATT_TILE * ATT_MAXD], gs[ATT_TILE * ATT_MAXD], ls[ATT_TILE], ds_[ATT_TILE];
    const long long bh = blockIdx.y;
    const unsigned long long rk = dg_att_key(key, replay);
    const int j = blockIdx.x * ATT_TILE + threadIdx.x;
    const bool col = j < S;
    float kr[ATT_MAXD], vr[ATT_MAXD], ak[ATT_MAXD], av[ATT_MAXD];
    for (int d = 0; d < D; ++d) {
        kr[d] = col ? k[(bh * S + j) * D + d] : 0.0f;
        ak[d] = 0.0f;
    }
    for (int e = 0; e < E; ++e) {
        vr[e] = col ? v[(bh * S + j) * E + e] : 0.0f;
        av[e] = 0.0f;
    }
    for (int i0 = 0; i0 < T; i0 += ATT_TILE) {
        const int n = T - i0 < ATT_TILE ? T - i0 : ATT_TILE;
        for (int t = threadIdx.x; t < n * D; t += blockDim.x) qs[t] = q[(bh * T + i0) * D + t] * scale;
        for (int t = threadIdx.x; t < n * E; t += blockDim.x) gs[t] = dout[(bh * T + i0) * E + t];
        for (int t = threadIdx.x; t < n; t += blockDim.x) {
            ls[t] = lse[bh * T + i0 + t];
            ds_[t] = delta[bh * T + i0 + t];
        }
        __syncthreads();
        if (col) {
            for (int ii = 0; ii < n; ++ii) {
                const int i = i0 + ii;
                if (ls[ii] == ATT_POS_INF || !dg_att_keep(mask, mb, mh, mq, H, bh, i, j, causal)) continue;
                float s = 0.0f, dp = 0.0f;
                for (int d = 0; d < D; ++d) s += qs[ii * D + d] * kr[d];
                for (int e = 0; e < E; ++e) dp += gs[ii * E + e] * vr[e];
                const float z = dg_att_drop(rk, thresh, keep_scale, bh, T, S, i, j);
                const float p = expf(s - ls[ii]);
                const float g = p * (z * dp - ds_[ii]);
                const float pz = p * z;
                for (int e = 0; e < E; ++e) av[e] += pz * gs[ii * E + e];
                for (int d = 0; d < D; ++d) ak[d] += g * qs[ii * D + d];  // qs holds q * scale
            }
        }
        __syncthreads();
    }
    if (col) {
        for (int d = 0; d < D; ++d) dk[(bh * S + j) * D + d] = ak[d];
        for (int e = 0; e < E; ++e) dv[(bh * S + j) * E + e] = av[e];
    }
}
