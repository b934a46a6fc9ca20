/* Batch normalization over the last axis of a channels-last float32 array, for the CPU
 * backend (built with cpu_conv.c into one library by kernels/cpu.py; driven by
 * NumpyBackend.batch_norm_train and batch_norm_grad).
 *
 * The array is read as [rows, C]. Every function takes rows [r0, r1): the backend's
 * threads split the rows, each writes its own per-channel partial results, and the
 * caller combines them. Rows go in groups of K = 16 / gcd(C, 16): a group is P = K*C
 * floats, a whole number of vectors at every width below, so the loops over a group run
 * on full vectors whatever C is (C = 3: K = 16, P = 48). Per-channel values arrive tiled
 * to P floats (channel c at c, C + c, ...; the caller tiles them), so they line up with
 * a group lane by lane. Rows after the last whole group (fewer than K) run scalar.
 *
 * Sums are taken in float vectors over blocks of about 16 KB (which stay in L1) and
 * added into double per block, so the rounding does not grow with the row count.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* One native register per vector, as in cpu_conv.c (64-byte vectors without AVX-512
 * spill to the stack). Every width divides 16, hence K above. */
#if defined(__AVX512F__)
#define VW 16
#elif defined(__AVX__)
#define VW 8
#else
#define VW 4
#endif

typedef float vf __attribute__((vector_size(VW * 4), aligned(4)));

#define LOADU(p) (*(const vf *)(p))
#define STOREU(p, v) (*(vf *)(p) = (v))
#define BN_BLOCK 4096 /* floats per block: 16 KB */

/* Whole groups per block. */
static inline long block_groups(int P) { return P >= BN_BLOCK ? 1 : BN_BLOCK / P; }

/* out[c] = sum over k < K of acc[k*C + c]: a group's lanes back to channels. */
static inline void fold(const float *acc, int C, int K, double *out) {
    for (int c = 0; c < C; c++) out[c] = acc[c];
    for (int k = 1; k < K; k++)
        for (int c = 0; c < C; c++) out[c] += acc[k * C + c];
}

/* Merges a block of nb rows into the running mean and m2 of n rows (Chan et al.): bs, the
 * block's per-channel sums of x - shift; bq, of (x - rep)^2, rep its mean rounded to float. */
static void merge(double *mean, double *m2, double n, const float *shift, const double *bs,
                  const double *bq, const float *rep, double nb, int C) {
    const double tot = n + nb;
    for (int c = 0; c < C; c++) {
        const double bm = shift[c] + bs[c] / nb, off = bm - rep[c];
        const double q = bq[c] - nb * off * off; /* deviations from bm, not from rep */
        const double d = bm - mean[c];
        mean[c] += d * (nb / tot);
        m2[c] += q + d * d * (n * nb / tot);
    }
}

/* Per-channel mean and M2 (sum of squared deviations from the mean) of rows [r0, r1),
 * into mean[C] and m2[C]. Each block's mean is taken first, then its squared deviations
 * from that mean (a second pass over the block while it is in L1), and the block is
 * merged into the running values: as stable as two passes over all the rows, with x
 * read from memory once. The first pass sums x - (the range's first row), not x: float
 * sums of values far from zero (a mean of 1000, a spread of 1) would lose the digits
 * that matter. Returns -1 when out of memory, else 0. */
int dg_bn_stats(const float *x, int C, int K, long r0, long r1, double *mean, double *m2) {
    const int P = K * C;
    float *acc = malloc(3 * (size_t)P * sizeof(float));
    double *bs = malloc(2 * (size_t)C * sizeof(double));
    if (!acc || !bs) {
        free(acc);
        free(bs);
        return -1;
    }
    float *rep = acc + P, *shift = acc + 2 * P; /* the block's mean and the shift, tiled */
    double *bq = bs + C;
    for (int c = 0; c < C; c++) mean[c] = m2[c] = 0.0;
    const float *p = x + r0 * C;
    for (int k = 0; k < K; k++) memcpy(shift + k * C, p, C * sizeof(float));
    const long groups = (r1 - r0) / K, gb = block_groups(P), left = (r1 - r0) - groups * K;
    double n = 0.0;
    for (long t0 = 0; t0 < groups; t0 += gb, p += gb * P) {
        const long g = groups - t0 < gb ? groups - t0 : gb;
        const double nb = (double)g * K;
        for (int j = 0; j < P; j += VW) {
            const vf s = LOADU(shift + j);
            vf a = {0};
            for (long t = 0; t < g; t++) a += LOADU(p + t * P + j) - s;
            STOREU(acc + j, a);
        }
        fold(acc, C, K, bs);
        for (int c = 0; c < C; c++) rep[c] = (float)(shift[c] + bs[c] / nb);
        for (int k = 1; k < K; k++) memcpy(rep + k * C, rep, C * sizeof(float));
        for (int j = 0; j < P; j += VW) {
            const vf m = LOADU(rep + j);
            vf a = {0};
            for (long t = 0; t < g; t++) {
                const vf d = LOADU(p + t * P + j) - m;
                a += d * d;
            }
            STOREU(acc + j, a);
        }
        fold(acc, C, K, bq);
        merge(mean, m2, n, shift, bs, bq, rep, nb, C);
        n += nb;
    }
    if (left > 0) { /* fewer than K rows after the last group */
        p = x + r0 * C + groups * P;
        for (int c = 0; c < C; c++) {
            float s = 0.0f, q = 0.0f;
            for (long r = 0; r < left; r++) s += p[r * C + c] - shift[c];
            rep[c] = (float)(shift[c] + s / (double)left);
            for (long r = 0; r < left; r++) {
                const float d = p[r * C + c] - rep[c];
                q += d * d;
            }
            bs[c] = s;
            bq[c] = q;
        }
        merge(mean, m2, n, shift, bs, bq, rep, (double)left, C);
    }
    free(acc);
    free(bs);
    return 0;
}

/* y = (x - mean) * scale + shift over rows [r0, r1); mean_t, scale_t, shift_t tiled to P
 * floats, shift_t NULL for no shift. y may be x. */
void dg_bn_apply(const float *x, float *y, const float *mean_t, const float *scale_t,
                 const float *shift_t, int C, int K, long r0, long r1) {
    const int P = K * C;
    const long groups = (r1 - r0) / K;
    const float *xp = x + r0 * C;
    float *yp = y + r0 * C;
    for (long t = 0; t < groups; t++, xp += P, yp += P) {
        if (shift_t)
            for (int j = 0; j < P; j += VW)
                STOREU(yp + j, (LOADU(xp + j) - LOADU(mean_t + j)) * LOADU(scale_t + j) + LOADU(shift_t + j));
        else
            for (int j = 0; j < P; j += VW)
                STOREU(yp + j, (LOADU(xp + j) - LOADU(mean_t + j)) * LOADU(scale_t + j));
    }
    /* Fewer than K rows left: element e is channel e % C, which the tiled arrays hold at e. */
    const long rest = (r1 - r0 - groups * K) * C;
    for (long e = 0; e < rest; e++)
        yp[e] = (xp[e] - mean_t[e]) * scale_t[e] + (shift_t ? shift_t[e] : 0.0f);
}

/* The two per-channel sums of the backward pass over rows [r0, r1), in one read of dy and
 * x: sdy[c] = sum of dy, sdx[c] = sum of dy * (x - mean) (mean_t tiled to P floats).
 * Returns -1 when out of memory, else 0. */
int dg_bn_grad_sums(const float *dy, const float *x, const float *mean_t, int C, int K, long r0,
                    long r1, double *sdy, double *sdx) {
    const int P = K * C;
    float *acc = malloc(2 * (size_t)P * sizeof(float));
    double *part = malloc(2 * (size_t)C * sizeof(double));
    if (!acc || !part) {
        free(acc);
        free(part);
        return -1;
    }
    float *acc2 = acc + P;
    for (int c = 0; c < C; c++) sdy[c] = sdx[c] = 0.0;
    const float *gp = dy + r0 * C, *xp = x + r0 * C;
    const long groups = (r1 - r0) / K, gb = block_groups(P);
    for (long t0 = 0; t0 < groups; t0 += gb) {
        const long g = groups - t0 < gb ? groups - t0 : gb;
        const float *gq = gp + t0 * P, *xq = xp + t0 * P;
        for (int j = 0; j < P; j += VW) {
            const vf m = LOADU(mean_t + j);
            vf a = {0}, b = {0};
            for (long t = 0; t < g; t++) {
                const vf d = LOADU(gq + t * P + j);
                a += d;
                b += d * (LOADU(xq + t * P + j) - m);
            }
            STOREU(acc + j, a);
            STOREU(acc2 + j, b);
        }
        fold(acc, C, K, part);
        fold(acc2, C, K, part + C);
        for (int c = 0; c < C; c++) {
            sdy[c] += part[c];
            sdx[c] += part[C + c];
        }
    }
    const long rest = (r1 - r0 - groups * K) * C;
    gp += groups * P;
    xp += groups * P;
    for (long e = 0; e < rest; e++) {
        sdy[e % C] += gp[e];
        sdx[e % C] += (double)gp[e] * (xp[e] - mean_t[e]);
    }
    free(acc);
    free(part);
    return 0;
}

/* dx = p * dy + q * (x - mean) + s over rows [r0, r1), the coefficients and mean tiled to P
 * floats (the caller makes p, q, s from the sums of dg_bn_grad_sums). */
void dg_bn_grad_input(const float *dy, const float *x, float *dx, const float *mean_t,
                      const float *p_t, const float *q_t, const float *s_t, int C, int K, long r0,
                      long r1) {
    const int P = K * C;
    const long groups = (r1 - r0) / K;
    const float *gp = dy + r0 * C, *xp = x + r0 * C;
    float *op = dx + r0 * C;
    for (long t = 0; t < groups; t++, gp += P, xp += P, op += P)
        for (int j = 0; j < P; j += VW)
            STOREU(op + j, LOADU(p_t + j) * LOADU(gp + j) + LOADU(q_t + j) * (LOADU(xp + j) - LOADU(mean_t + j))
                               + LOADU(s_t + j));
    const long rest = (r1 - r0 - groups * K) * C;
    for (long e = 0; e < rest; e++) op[e] = p_t[e] * gp[e] + q_t[e] * (xp[e] - mean_t[e]) + s_t[e];
}

/* x [C] tiled K times into out [K*C]. */
static void tile(const float *x, int C, int K, float *out) {
    for (int k = 0; k < K; k++) memcpy(out + k * C, x, C * sizeof(float));
}

/* From the mean and M2 of all rows: stats [3, C] = mean, var (biased), inv_std = 1 /
 * sqrt(var + eps); tiles [3, K*C] = mean, scale = inv_std * gamma, shift = beta (0 when
 * beta is NULL), tiled for dg_bn_apply. gamma may be NULL (1). */
void dg_bn_finish(const double *mean, const double *m2, long rows, int C, int K, float eps,
                  const float *gamma, const float *beta, float *stats, float *tiles) {
    const int P = K * C;
    for (int c = 0; c < C; c++) {
        const double v = m2[c] > 0 ? m2[c] / rows : 0.0, inv = 1.0 / sqrt(v + eps);
        stats[c] = (float)mean[c];
        stats[C + c] = (float)v;
        stats[2 * C + c] = (float)inv;
        tiles[c] = (float)mean[c];
        tiles[P + c] = (float)(gamma ? inv * gamma[c] : inv);
        tiles[2 * P + c] = beta ? beta[c] : 0.0f;
    }
    for (int i = 0; i < 3; i++) tile(tiles + i * P, C, K, tiles + i * P);
}

/* The whole training forward in one call (an array too small to split over threads):
 * y [rows, C] and stats [3, C] as dg_bn_finish. Returns -1 when out of memory, else 0. */
int dg_bn_train(const float *x, float *y, const float *gamma, const float *beta, float eps, int C,
                int K, long rows, float *stats) {
    const int P = K * C;
    double *mean = malloc(2 * (size_t)C * sizeof(double));
    float *tiles = malloc(3 * (size_t)P * sizeof(float));
    int rc = -1;
    if (mean && tiles && dg_bn_stats(x, C, K, 0, rows, mean, mean + C) == 0) {
        dg_bn_finish(mean, mean + C, rows, C, K, eps, gamma, beta, stats, tiles);
        dg_bn_apply(x, y, tiles, tiles + P, beta ? tiles + 2 * P : NULL, C, K, 0, rows);
        rc = 0;
    }
    free(mean);
    free(tiles);
    return rc;
}

/* From the sums of dg_bn_grad_sums over all rows: grads [2, C] = dgamma = inv * sdx, dbeta =
 * sdy; tiles [3, K*C] = the factors p = gamma * inv, q = -p * inv * dgamma / rows, s = -p *
 * dbeta / rows of dx = p dy + q (x - mean) + s, tiled for dg_bn_grad_input (the generic
 * formula, gamma * inv / N * (N dy - dbeta - xhat dgamma), with its per-channel factors
 * gathered). gamma may be NULL (1). */
void dg_bn_grad_finish(const double *sdy, const double *sdx, long rows, int C, int K, const float *inv,
                       const float *gamma, float *grads, float *tiles) {
    const int P = K * C;
    for (int c = 0; c < C; c++) {
        const double iv = inv[c], dg = sdx[c] * iv, p = gamma ? gamma[c] * iv : iv;
        grads[c] = (float)dg;
        grads[C + c] = (float)sdy[c];
        tiles[c] = (float)p;
        tiles[P + c] = (float)(-p * iv * dg / rows);
        tiles[2 * P + c] = (float)(-p * sdy[c] / rows);
    }
    for (int i = 0; i < 3; i++) tile(tiles + i * P, C, K, tiles + i * P);
}

/* The whole backward in one call (an array too small to split over threads): grads [2, C] =
 * dgamma, dbeta, and dx [rows, C] unless dx is NULL. Returns -1 when out of memory, else 0. */
int dg_bn_grad(const float *dy, const float *x, float *dx, const float *mean, const float *inv,
               const float *gamma, int C, int K, long rows, float *grads) {
    const int P = K * C;
    double *sums = malloc(2 * (size_t)C * sizeof(double));
    float *tiles = malloc(4 * (size_t)P * sizeof(float));
    int rc = -1;
    if (sums && tiles) {
        float *mean_t = tiles + 3 * P;
        tile(mean, C, K, mean_t);
        if (dg_bn_grad_sums(dy, x, mean_t, C, K, 0, rows, sums, sums + C) == 0) {
            dg_bn_grad_finish(sums, sums + C, rows, C, K, inv, gamma, grads, tiles);
            if (dx) dg_bn_grad_input(dy, x, dx, mean_t, tiles, tiles + P, tiles + 2 * P, C, K, 0, rows);
            rc = 0;
        }
    }
    free(sums);
    free(tiles);
    return rc;
}
