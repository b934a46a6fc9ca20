/* Direct NHWC convolution for the CPU backend (float32), compiled on first use
 * with the machine's C compiler (-O3 -march=native) by deepgpu/kernels/cpu.py.
 *
 * Why direct and not im2col + BLAS: with 32 or 64 output channels the GEMM of
 * an im2col matrix is skinny (N = O) and the im2col copy moves 9x the input;
 * together they ran at 200-290 GFLOP/s on a 2-core Zen 5 where this loop
 * nest keeps every accumulator in registers and reaches 315-490 GFLOP/s
 * (bench/NOTES.md, change 11).
 *
 * Portable C: GCC/Clang vector extensions, one native register per vector. The
 * width and the register blocks follow the instruction set the file is compiled
 * for (-march=native), as BLAS kernels do: a block's accumulators plus its loaded
 * vectors must fit the register file, or the compiler keeps them on the stack
 * (64-byte vectors on an AVX2 machine compiled to 1,995 stack references for 56
 * FMAs and ran 10x slower than BLAS; issue 13).
 *   AVX-512: 16 floats, 32 registers.   AVX/AVX2: 8 floats, 16 registers.
 *   AArch64 NEON: 4 floats, 32 registers.   anything else: 4 floats, 16 registers.
 * Channel counts stay multiples of 16 (every width divides 16).
 */
#include <stddef.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

#if defined(__AVX512F__)
#define VW 16
#define DG_ISA "avx512"
#elif defined(__AVX__)
#define VW 8
#define DG_ISA "avx2"
#else
#define VW 4
#if defined(__aarch64__)
#define DG_ISA "neon"
#else
#define DG_ISA "generic"
#endif
#endif

#if defined(__AVX512F__) || defined(__aarch64__)
#define DG_REGS 32
#else
#define DG_REGS 16
#endif

typedef float vf __attribute__((vector_size(VW * 4), aligned(4)));
typedef int vfi __attribute__((vector_size(VW * 4), aligned(4)));

#define LOADU(p) (*(const vf *)(p))
#define STOREU(p, v) (*(vf *)(p) = (v))

/* The fused activation of the forward epilogues: act 1 relu, 2 relu6 (MobileNet's ReLU(6)). */
static inline vf act_vec(vf a, int act) {
    if (act) a = (vf)((vfi)a & (a > 0));
    if (act == 2) {
        const vf six = (vf){0} + 6.0f;
        const vfi over = a > six;
        a = (vf)(((vfi)a & ~over) | ((vfi)six & over));
    }
    return a;
}

/* The instruction set and vector width this build uses (for `deepgpu info`). */
const char *dg_isa(void) { return DG_ISA; }
int dg_vector_width(void) { return VW; }

/* R output pixels of one row x V*VW output channels, all R*V accumulators in
 * registers: per input channel, V kernel vectors are loaded once and each of
 * the R input values is broadcast once (R*V FMAs for R + V loads). Only the taps
 * ky0 <= ky < ky1, kx0 <= kx < kx1 are summed (the others fall in the padding);
 * pixel r, tap (ky, kx) reads x[base + r*pixstep + ky*dy_off + kx*dx_off + c]. */
#define DG_BLOCK(R, V)                                                                         \
    static inline void blk_##R##_##V(const float *x, long base, const float *k,               \
                                     const float *bias, float *y, int C, int O, size_t pixstep, \
                                     int KW, int ky0, int ky1, int kx0, int kx1, size_t dy_off, \
                                     size_t dx_off, int relu) {                                \
        vf acc[R][V];                                                                         \
        for (int r = 0; r < R; r++)                                                            \
            for (int v = 0; v < V; v++) acc[r][v] = bias ? LOADU(bias + VW * v) : (vf){0};    \
        for (int ky = ky0; ky < ky1; ky++)                                                     \
            for (int kx = kx0; kx < kx1; kx++) {                                               \
                const float *xp = x + (base + (long)(ky * dy_off + kx * dx_off));              \
                const float *kp = k + ((size_t)ky * KW + kx) * C * O;                          \
                for (int c = 0; c < C; c++) {                                                  \
                    vf kv[V];                                                                 \
                    for (int v = 0; v < V; v++) kv[v] = LOADU(kp + (size_t)c * O + VW * v);    \
                    for (int r = 0; r < R; r++) {                                              \
                        float s = xp[r * pixstep + c];                                         \
                        for (int v = 0; v < V; v++) acc[r][v] += s * kv[v];                    \
                    }                                                                          \
                }                                                                              \
            }                                                                                  \
        for (int r = 0; r < R; r++)                                                            \
            for (int v = 0; v < V; v++) {                                                      \
                vf a = acc[r][v];                                                             \
                a = act_vec(a, relu);                                                          \
                STOREU(y + (size_t)r * O + VW * v, a);                                         \
            }                                                                                  \
    }

DG_BLOCK(1, 1) DG_BLOCK(2, 1) DG_BLOCK(3, 1) DG_BLOCK(4, 1) DG_BLOCK(5, 1) DG_BLOCK(6, 1)
DG_BLOCK(7, 1) DG_BLOCK(8, 1) DG_BLOCK(9, 1) DG_BLOCK(10, 1) DG_BLOCK(11, 1) DG_BLOCK(12, 1)
DG_BLOCK(13, 1) DG_BLOCK(14, 1)
DG_BLOCK(1, 2) DG_BLOCK(2, 2) DG_BLOCK(3, 2) DG_BLOCK(4, 2) DG_BLOCK(5, 2) DG_BLOCK(6, 2)
DG_BLOCK(7, 2) DG_BLOCK(8, 2) DG_BLOCK(9, 2) DG_BLOCK(10, 2) DG_BLOCK(11, 2) DG_BLOCK(12, 2)

/* The widest register block per vector count: R * V accumulators plus V kernel
 * vectors stay within the 32 AVX-512 registers. Output channels go 32 at a time
 * (V = 2) even when there are 64: with R = 12 each kernel vector serves twice
 * the pixels of a V = 4 block, which ran 2.6 vs 1.2 ms on the seed's fourth
 * layer (its 147 KB kernel streams from L2; bench/NOTES.md change 11). */
#if DG_REGS == 32
#define DG_RMAX(V) ((V) == 2 ? 12 : 14)
#else
/* 16 registers: 6 x 2 vectors is the classic AVX2 GEMM block (12 accumulators, 2 kernel
 * vectors, 1 broadcast). */
#define DG_RMAX(V) ((V) == 2 ? 6 : 12)
#endif
/* The most output channels one pass covers (two vectors). */
#define DG_CH (2 * VW)

#define DG_CASE(R, V)                                                                          \
    case R:                                                                                    \
        blk_##R##_##V(x, base, k, bias, y, C, O, pixstep, KW, ky0, ky1, kx0, kx1, dy_off,     \
                      dx_off, relu);                                                           \
        break;

/* One block of R pixels (1 <= R <= DG_RMAX(V)): a switch to the unrolled versions. */
static void block(int R, int V, const float *x, long base, const float *k, const float *bias,
                  float *y, int C, int O, size_t pixstep, int KW, int ky0, int ky1, int kx0,
                  int kx1, size_t dy_off, size_t dx_off, int relu) {
    if (V == 2) {
        switch (R) {
            DG_CASE(1, 2) DG_CASE(2, 2) DG_CASE(3, 2) DG_CASE(4, 2) DG_CASE(5, 2) DG_CASE(6, 2)
            DG_CASE(7, 2) DG_CASE(8, 2) DG_CASE(9, 2) DG_CASE(10, 2) DG_CASE(11, 2) DG_CASE(12, 2)
        }
    } else {
        switch (R) {
            DG_CASE(1, 1) DG_CASE(2, 1) DG_CASE(3, 1) DG_CASE(4, 1) DG_CASE(5, 1) DG_CASE(6, 1)
            DG_CASE(7, 1) DG_CASE(8, 1) DG_CASE(9, 1) DG_CASE(10, 1) DG_CASE(11, 1) DG_CASE(12, 1)
            DG_CASE(13, 1) DG_CASE(14, 1)
        }
    }
}

/* The taps t in [0, K) whose input coordinate i0 + t*D lies in [0, L): [*t0, *t1). */
static void tap_range(long i0, int K, int D, int L, int *t0, int *t1) {
    int a = 0, b = K;
    if (i0 < 0) a = (int)((-i0 + D - 1) / D);
    if (i0 + (long)(K - 1) * D >= L) b = i0 >= L ? 0 : (int)((L - 1 - i0) / D + 1);
    *t0 = a;
    *t1 = b > a ? b : a;
}

/* y[n, oy, ox, :] = act(bias + sum_{ky,kx,c} x[n, oy*SH + ky*DH - PT, ox*SW + kx*DW - PL, c] * k[ky, kx, c, :])
 * (act: relu 0 none, 1 relu, 2 relu6) with x read as 0 outside [0, H) x [0, W) (the padding is never
 * stored), for the output rows row0 <= n*HO + oy < row1 (so threads can split the work).
 * x: [N, H, W, C]; k: [KH, KW, C, O]; bias: [O] or NULL; y: [N, HO, WO, O]; all
 * C-contiguous float32; O a multiple of 16. */
void dg_conv2d_fwd(const float *x, const float *k, const float *bias, float *y, int H, int W,
                   int C, int KH, int KW, int O, int HO, int WO, int SH, int SW, int DH, int DW,
                   int PT, int PL, long row0, long row1, int relu) {
    const size_t pix = (size_t)SW * C;     /* to the next output pixel's window */
    const size_t dyo = (size_t)DH * W * C; /* one kernel row down */
    const size_t dxo = (size_t)DW * C;     /* one kernel column right */
    /* Pixels [lo, hi) have every kernel column inside the input: they go in wide blocks;
     * the few at the edges one by one with their own column range. */
    int lo = PL > 0 ? (PL + SW - 1) / SW : 0;
    int hi = (W - 1 + PL - (KW - 1) * DW) >= 0 ? (W - 1 + PL - (KW - 1) * DW) / SW + 1 : 0;
    if (lo > WO) lo = WO;
    if (hi > WO) hi = WO;
    if (hi < lo) hi = lo;
    for (long row = row0; row < row1; row++) {
        const long n = row / HO, oy = row % HO, iy0 = oy * SH - PT;
        int ky0, ky1;
        tap_range(iy0, KH, DH, H, &ky0, &ky1);
        const long rbase = ((long)n * H + iy0) * W * C;
        for (int o0 = 0; o0 < O;) {
            const int V = O - o0 >= 2 * VW ? 2 : 1;
            const float *b = bias ? bias + o0 : 0;
            float *yr = y + (size_t)row * WO * O + o0;
            for (int ox = 0; ox < WO; ox++) {
                if (ox == lo) {
                    /* Blocks of near-equal width: 10 pixels as 5 + 5, not 6 + 2 + 2. */
                    const int w = hi - lo, nb = (w + DG_RMAX(V) - 1) / DG_RMAX(V);
                    for (int i = 0; i < nb; i++) {
                        const int R = w / nb + (i < w % nb);
                        block(R, V, x, rbase + ((long)ox * SW - PL) * C, k + o0, b, yr + (size_t)ox * O,
                              C, O, pix, KW, ky0, ky1, 0, KW, dyo, dxo, relu);
                        ox += R;
                    }
                    if (ox >= WO) break;
                }
                int kx0, kx1;
                tap_range((long)ox * SW - PL, KW, DW, W, &kx0, &kx1);
                block(1, V, x, rbase + ((long)ox * SW - PL) * C, k + o0, b, yr + (size_t)ox * O, C, O,
                      pix, KW, ky0, ky1, kx0, kx1, dyo, dxo, relu);
            }
            o0 += VW * V;
        }
    }
}

/* ------------------------------------------------------------- filter gradient */

/* dk[tap, c0..c0+CB, o0..o0+VW*V] += sum over the group's pixels of x * g, with CB * V
 * accumulators in registers: per pixel, V gradient vectors are loaded and each of the
 * CB input values is broadcast once. g holds the group's rows, from output row row0. */
#define DG_GF_BLOCK(CB, V)                                                                     \
    static inline void gfb_##CB##_##V(const float *x, const float *g, float *dk, int O,       \
                                      long rows, int HO, int WO, size_t xrow, size_t xpix,    \
                                      size_t xn, long row0, size_t grow) {                    \
        vf acc[CB][V];                                                                        \
        for (int c = 0; c < CB; c++)                                                           \
            for (int v = 0; v < V; v++) acc[c][v] = LOADU(dk + (size_t)c * O + VW * v);       \
        for (long i = 0; i < rows; i++) {                                                      \
            const long row = row0 + i, n = row / HO, oy = row % HO;                            \
            const float *xr = x + n * xn + oy * xrow;                                          \
            const float *dr = g + (size_t)i * grow;                                            \
            for (int ox = 0; ox < WO; ox++) {                                                  \
                vf d[V];                                                                      \
                for (int v = 0; v < V; v++) d[v] = LOADU(dr + (size_t)ox * O + VW * v);        \
                const float *xp = xr + ox * xpix;                                              \
                for (int c = 0; c < CB; c++) {                                                 \
                    float s = xp[c];                                                           \
                    for (int v = 0; v < V; v++) acc[c][v] += s * d[v];                         \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
        for (int c = 0; c < CB; c++)                                                           \
            for (int v = 0; v < V; v++) STOREU(dk + (size_t)c * O + VW * v, acc[c][v]);        \
    }

DG_GF_BLOCK(1, 1) DG_GF_BLOCK(2, 1) DG_GF_BLOCK(3, 1) DG_GF_BLOCK(4, 1) DG_GF_BLOCK(5, 1) DG_GF_BLOCK(6, 1)
DG_GF_BLOCK(7, 1) DG_GF_BLOCK(8, 1) DG_GF_BLOCK(9, 1) DG_GF_BLOCK(10, 1) DG_GF_BLOCK(11, 1) DG_GF_BLOCK(12, 1)
DG_GF_BLOCK(13, 1) DG_GF_BLOCK(14, 1) DG_GF_BLOCK(15, 1) DG_GF_BLOCK(16, 1) DG_GF_BLOCK(17, 1) DG_GF_BLOCK(18, 1)
DG_GF_BLOCK(19, 1) DG_GF_BLOCK(20, 1) DG_GF_BLOCK(21, 1) DG_GF_BLOCK(22, 1) DG_GF_BLOCK(23, 1) DG_GF_BLOCK(24, 1)
DG_GF_BLOCK(1, 2) DG_GF_BLOCK(2, 2) DG_GF_BLOCK(3, 2) DG_GF_BLOCK(4, 2) DG_GF_BLOCK(5, 2) DG_GF_BLOCK(6, 2)
DG_GF_BLOCK(7, 2) DG_GF_BLOCK(8, 2) DG_GF_BLOCK(9, 2) DG_GF_BLOCK(10, 2) DG_GF_BLOCK(11, 2) DG_GF_BLOCK(12, 2)
DG_GF_BLOCK(13, 2) DG_GF_BLOCK(14, 2)


#if DG_REGS == 32
#define DG_GF_CBMAX(V) ((V) == 2 ? 14 : 24)
#else
#define DG_GF_CBMAX(V) ((V) == 2 ? 6 : 12)
#endif

#define DG_GF_CASE(CB, V) \
    case CB: gfb_##CB##_##V(x, g, dk, O, rows, HO, WO, xrow, xpix, xn, row0, grow); break;

static void gf_block(int CB, int V, const float *x, const float *g, float *dk, int O, long rows,
                     int HO, int WO, size_t xrow, size_t xpix, size_t xn, long row0, size_t grow) {
    if (V == 2) {
        switch (CB) {
            DG_GF_CASE(1, 2) DG_GF_CASE(2, 2) DG_GF_CASE(3, 2) DG_GF_CASE(4, 2) DG_GF_CASE(5, 2) DG_GF_CASE(6, 2)
            DG_GF_CASE(7, 2) DG_GF_CASE(8, 2) DG_GF_CASE(9, 2) DG_GF_CASE(10, 2) DG_GF_CASE(11, 2) DG_GF_CASE(12, 2)
            DG_GF_CASE(13, 2) DG_GF_CASE(14, 2)
        }
    } else {
        switch (CB) {
            DG_GF_CASE(1, 1) DG_GF_CASE(2, 1) DG_GF_CASE(3, 1) DG_GF_CASE(4, 1) DG_GF_CASE(5, 1) DG_GF_CASE(6, 1)
            DG_GF_CASE(7, 1) DG_GF_CASE(8, 1) DG_GF_CASE(9, 1) DG_GF_CASE(10, 1) DG_GF_CASE(11, 1) DG_GF_CASE(12, 1)
            DG_GF_CASE(13, 1) DG_GF_CASE(14, 1) DG_GF_CASE(15, 1) DG_GF_CASE(16, 1) DG_GF_CASE(17, 1) DG_GF_CASE(18, 1)
            DG_GF_CASE(19, 1) DG_GF_CASE(20, 1) DG_GF_CASE(21, 1) DG_GF_CASE(22, 1) DG_GF_CASE(23, 1) DG_GF_CASE(24, 1)
        }
    }
}

/* dk[ky, kx, c, o] += sum over rows row0 <= n*HO + oy < row1 and all ox of
 *     x[n, oy*SH + ky*DH, ox*SW + kx*DW, c] * g[n, oy, ox, o]
 * and db[o] += sum g[n, oy, ox, o] (db may be NULL), where g = dy, or dy * (y > 0) when y
 * (the output of a relu) is given. x: [N, H, W, C], already padded; y: [N, HO, WO, O]; dy
 * the same but with dystride floats from one output row to the next (a padded row);
 * dk: [KH, KW, C, O]; dk and db accumulate (threads give each its own); all C-contiguous
 * float32; O a multiple of 16. Returns 0, or -1 when out of memory. */
int dg_conv2d_grad_filter(const float *x, const float *dy, long dystride, const float *y, float *dk,
                          float *db, int H, int W, int C, int KH, int KW, int O, int HO, int WO,
                          int SH, int SW, int DH, int DW, long row0, long row1) {
    const size_t xrow = (size_t)SH * W * C, xpix = (size_t)SW * C, xn = (size_t)H * W * C;
    const size_t grow = (size_t)WO * O;
    /* Rows in groups whose gradient (~32 KB) stays in cache across every tap and channel block;
     * the masked gradient of a group is made once, in a buffer, with its bias sum. */
    long group = 32768 / ((long)grow * 4);
    if (group < 1) group = 1;
    float *buf = 0;
    if (y || db) {
        buf = malloc((size_t)group * grow * sizeof(float));
        if (!buf) return -1;
    }
    for (long g0 = row0; g0 < row1; g0 += group) {
        const long rows = (row1 - g0 < group) ? row1 - g0 : group;
        const float *g = dy + (size_t)g0 * dystride;
        size_t gstride = dystride;
        if (buf) {
            gstride = grow;
            const size_t m = (size_t)rows * grow;
            for (long i = 0; i < rows; i++)
                for (size_t j = 0; j < grow; j++)
                    buf[i * grow + j] = (!y || y[(g0 + i) * grow + j] > 0) ? g[i * dystride + j] : 0.0f;
            if (db)
                for (size_t p = 0; p < m; p += O)
                    for (int o = 0; o < O; o++) db[o] += buf[p + o];
            g = buf;
        }
        for (int ky = 0; ky < KH; ky++)
            for (int kx = 0; kx < KW; kx++) {
                const float *xt = x + (size_t)ky * DH * W * C + (size_t)kx * DW * C;
                float *dkt = dk + ((size_t)ky * KW + kx) * C * O;
                for (int o0 = 0; o0 < O;) {
                    const int V = O - o0 >= 2 * VW ? 2 : 1;
                    const int nb = (C + DG_GF_CBMAX(V) - 1) / DG_GF_CBMAX(V);
                    for (int i = 0, c0 = 0; i < nb; i++) {
                        const int CB = C / nb + (i < C % nb);
                        gf_block(CB, V, xt + c0, g + o0, dkt + (size_t)c0 * O + o0, O, rows, HO, WO,
                                 xrow, xpix, xn, g0, gstride);
                        c0 += CB;
                    }
                    o0 += VW * V;
                }
            }
    }
    free(buf);
    return 0;
}

/* g = dy, or dy where y > 0 when y (a relu's output) is given, stored with PL zero pixels
 * before and PR after each row: out[n, i, PL + j, :] = g[n, i, j, :]; and db[c] += sum of
 * g[..., c] when db is given. dy, y: [N, HO, WO, C]; out: [N, HO, PL + WO + PR, C]; rows
 * row0 <= n*HO + i < row1. */
void dg_mask_pad(const float *dy, const float *y, float *out, float *db, int HO, int WO, int C,
                 int PL, int PR, long row0, long row1) {
    const size_t orow = (size_t)(PL + WO + PR) * C, irow = (size_t)WO * C;
    (void)HO;
    for (long row = row0; row < row1; row++) {
        float *o = out + (size_t)row * orow;
        memset(o, 0, (size_t)PL * C * sizeof(float));
        memset(o + (size_t)(PL + WO) * C, 0, (size_t)PR * C * sizeof(float));
        const float *src = dy + (size_t)row * irow, *ys = y ? y + (size_t)row * irow : 0;
        float *dst = o + (size_t)PL * C;
        if (ys)
            for (size_t i = 0; i < irow; i++) dst[i] = ys[i] > 0 ? src[i] : 0.0f;
        else
            memcpy(dst, src, irow * sizeof(float));
        if (db)
            for (size_t p = 0; p < irow; p += C)
                for (int c = 0; c < C; c++) db[c] += dst[p + c];
    }
}

/* ---------------------------------------------------------------- max pooling */

/* Windows of KH x KW with the same strides, tiling x exactly (no padding needed).
 * x: [N, H, W, C]; y: [N, H/KH, W/KW, C]; rows row0 <= n*HO + oy < row1. NaN wins its
 * window, as NumPy's maximum does. */
void dg_max_pool_fwd(const float *x, float *y, int H, int W, int C, int KH, int KW, long row0,
                     long row1) {
    const int HO = H / KH, WO = W / KW;
    for (long row = row0; row < row1; row++) {
        const long n = row / HO, oy = row % HO;
        for (int ox = 0; ox < WO; ox++) {
            float *yp = y + ((size_t)row * WO + ox) * C;
            const float *x0 = x + (((size_t)n * H + (size_t)oy * KH) * W + (size_t)ox * KW) * C;
            for (int c = 0; c < C; c++) yp[c] = x0[c];
            for (int i = 0; i < KH; i++)
                for (int j = (i == 0); j < KW; j++) {
                    const float *xp = x0 + ((size_t)i * W + j) * C;
                    for (int c = 0; c < C; c++) {
                        const float v = xp[c], m = yp[c];
                        yp[c] = (v > m || v != v) ? v : m;
                    }
                }
        }
    }
}

/* dx = dy at the first position of each window holding the window's maximum y, 0 elsewhere.
 * Shapes as in dg_max_pool_fwd; dx: [N, H, W, C]; y must be finite (the caller checks). */
void dg_max_pool_bwd(const float *x, const float *y, const float *dy, float *dx, int H, int W, int C,
                     int KH, int KW, long row0, long row1) {
    const int HO = H / KH, WO = W / KW;
    for (long row = row0; row < row1; row++) {
        const long n = row / HO, oy = row % HO;
        for (int ox = 0; ox < WO; ox++) {
            const size_t o = ((size_t)row * WO + ox) * C;
            const size_t base = (((size_t)n * H + (size_t)oy * KH) * W + (size_t)ox * KW) * C;
            for (int c0 = 0; c0 < C; c0 += 64) {
                const int cn = C - c0 < 64 ? C - c0 : 64;
                int taken[64] = {0};
                for (int i = 0; i < KH; i++)
                    for (int j = 0; j < KW; j++) {
                        const size_t p = base + ((size_t)i * W + j) * C + c0;
                        for (int c = 0; c < cn; c++) {
                            const int hit = (x[p + c] == y[o + c0 + c]) & !taken[c];
                            dx[p + c] = hit ? dy[o + c0 + c] : 0.0f;
                            taken[c] |= hit;
                        }
                    }
            }
        }
    }
}

/* ------------------------------------------------------------------- Adam */

/* In-place Adam(W) on elements [i0, i1): m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
 * p -= wd p (when wd > 0, the decoupled decay lr * weight_decay, with the old p); then
 * p -= a m / (sqrt(v) + eps), a the bias-corrected step size. One pass instead of NumPy's
 * twelve. */
void dg_adam(float *p, const float *g, float *m, float *v, long i0, long i1, float a, float b1,
             float b2, float eps, float wd) {
    const float c1 = 1.0f - b1, c2 = 1.0f - b2;
    for (long i = i0; i < i1; i++) {
        const float gi = g[i];
        const float mi = b1 * m[i] + c1 * gi;
        const float vi = b2 * v[i] + c2 * gi * gi;
        float pi = p[i];
        if (wd > 0) pi -= wd * pi;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - a * mi / (sqrtf(vi) + eps);
    }
}

/* dg_adam over several variables at once: elements [i0, i1) of their concatenation
 * (variable t holds n[t] elements; wd[t] its decay). One call per thread for a whole
 * optimizer step instead of one per variable. */
void dg_adam_many(float *const *p, const float *const *g, float *const *m, float *const *v,
                  const long *n, const float *wd, int count, long i0, long i1, float a, float b1,
                  float b2, float eps) {
    long off = 0;
    for (int t = 0; t < count && off < i1; off += n[t], t++) {
        const long lo = i0 > off ? i0 - off : 0, hi = i1 - off < n[t] ? i1 - off : n[t];
        if (lo < hi) dg_adam(p[t], g[t], m[t], v[t], lo, hi, a, b1, b2, eps, wd[t]);
    }
}

/* ------------------------------------------------ Winograd, 3x3, stride 1 */

/* A 3x3, stride-1, undilated convolution computed on m x m output tiles from a x a input
 * tiles (a = m + 2): y_tile = A^T [ (G g G^T) .* (B^T d B) ] A, summed over input channels.
 * The elementwise product over the a*a transformed positions becomes a*a small products of
 * [tiles, C] x [C, O]: a*a multiplies per m*m outputs instead of 9 each. Two tile sizes:
 *   F(2x2, 3x3), a = 4: 4 multiplies per output.
 *     B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], A^T = [1 1 1 0; 0 1 -1 -1]
 *   F(4x4, 3x3), a = 6: 2.25 per output, more rounding (Lavin and Gray).
 *     B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]
 *     A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
 * The kernel transform U = G g G^T ([a*a, C, O]) is made by the caller. Tiles go through
 * in blocks of up to DG_WR: transformed into a small buffer, multiplied with U DG_CH output
 * channels at a time (register blocks as in the direct kernel), transformed back. */
#define DG_WR 12

/* B^T and A^T applied to one line of a tile (VW channels per vf). */
static inline void bt4(const vf d[4], vf r[4]) {
    r[0] = d[0] - d[2];
    r[1] = d[1] + d[2];
    r[2] = d[2] - d[1];
    r[3] = d[1] - d[3];
}

static inline void at4(const vf m[4], vf o[2]) {
    o[0] = m[0] + m[1] + m[2];
    o[1] = m[1] - m[2] - m[3];
}

static inline void bt6(const vf d[6], vf r[6]) {
    const vf four = d[4] - 4 * d[2];           /* shared terms */
    const vf a = d[3] - 4 * d[1], b = d[3] - d[1];
    r[0] = 4 * d[0] - 5 * d[2] + d[4];
    r[1] = four + a;                              /* -4 d1 - 4 d2 + d3 + d4 */
    r[2] = four - a;                              /*  4 d1 - 4 d2 - d3 + d4 */
    r[3] = d[4] - d[2] + 2 * b;                   /* -2 d1 - d2 + 2 d3 + d4 */
    r[4] = d[4] - d[2] - 2 * b;                   /*  2 d1 - d2 - 2 d3 + d4 */
    r[5] = 4 * d[1] - 5 * d[3] + d[5];
}

static inline void at6(const vf m[6], vf o[4]) {
    const vf s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
    o[0] = m[0] + s12 + s34;
    o[1] = d12 + 2 * d34;
    o[2] = s12 + 4 * s34;
    o[3] = d12 + 8 * d34 + m[5];
}

/* M[xi][r][v] = sum_c V[xi][r][c] * U[xi][c][o0 + VW*v] for r < R and the nx positions of a block. */
#define DG_WGEMM(R, V)                                                                         \
    static inline void wg_##R##_##V(const float *Vt, const float *U, float *M, int C, int O,  \
                                    int R_stride, int nx) {                                    \
        for (int xi = 0; xi < nx; xi++) {                                                      \
            const float *vx = Vt + (size_t)xi * R_stride * C;                                  \
            const float *ux = U + (size_t)xi * C * O;                                          \
            vf acc[R][V];                                                                     \
            for (int r = 0; r < R; r++)                                                        \
                for (int v = 0; v < V; v++) acc[r][v] = (vf){0};                              \
            for (int c = 0; c < C; c++) {                                                      \
                vf kv[V];                                                                     \
                for (int v = 0; v < V; v++) kv[v] = LOADU(ux + (size_t)c * O + VW * v);        \
                for (int r = 0; r < R; r++) {                                                  \
                    float s = vx[(size_t)r * C + c];                                           \
                    for (int v = 0; v < V; v++) acc[r][v] += s * kv[v];                        \
                }                                                                              \
            }                                                                                  \
            for (int r = 0; r < R; r++)                                                        \
                for (int v = 0; v < V; v++)                                                    \
                    STOREU(M + ((size_t)xi * R_stride + r) * DG_CH + VW * v, acc[r][v]);           \
        }                                                                                      \
    }

DG_WGEMM(1, 2) DG_WGEMM(2, 2) DG_WGEMM(3, 2) DG_WGEMM(4, 2) DG_WGEMM(5, 2) DG_WGEMM(6, 2)
DG_WGEMM(7, 2) DG_WGEMM(8, 2) DG_WGEMM(9, 2) DG_WGEMM(10, 2) DG_WGEMM(11, 2) DG_WGEMM(12, 2)
DG_WGEMM(1, 1) DG_WGEMM(2, 1) DG_WGEMM(3, 1) DG_WGEMM(4, 1) DG_WGEMM(5, 1) DG_WGEMM(6, 1)
DG_WGEMM(7, 1) DG_WGEMM(8, 1) DG_WGEMM(9, 1) DG_WGEMM(10, 1) DG_WGEMM(11, 1) DG_WGEMM(12, 1)

#define DG_WCASE(R, V) \
    case R: wg_##R##_##V(Vt, U, M, C, O, DG_WR, nx); break;

/* M[xi][r][:] = V[xi][r][:] U[xi] for the nx transform positions (16 or 36), R <= DG_RMAX(V). */
static void wino_gemm_block(int R, int V, const float *Vt, const float *U, float *M, int C, int O, int nx) {
    if (V == 2) {
        switch (R) {
            DG_WCASE(1, 2) DG_WCASE(2, 2) DG_WCASE(3, 2) DG_WCASE(4, 2) DG_WCASE(5, 2) DG_WCASE(6, 2)
            DG_WCASE(7, 2) DG_WCASE(8, 2) DG_WCASE(9, 2) DG_WCASE(10, 2) DG_WCASE(11, 2) DG_WCASE(12, 2)
        }
    } else {
        switch (R) {
            DG_WCASE(1, 1) DG_WCASE(2, 1) DG_WCASE(3, 1) DG_WCASE(4, 1) DG_WCASE(5, 1) DG_WCASE(6, 1)
            DG_WCASE(7, 1) DG_WCASE(8, 1) DG_WCASE(9, 1) DG_WCASE(10, 1) DG_WCASE(11, 1) DG_WCASE(12, 1)
        }
    }
}

/* wino_gemm_block over R <= DG_WR tiles, in register blocks of near-equal height. */
static void wino_gemm(int R, int V, const float *Vt, const float *U, float *M, int C, int O, int nx) {
    const int nb = (R + DG_RMAX(V) - 1) / DG_RMAX(V);
    for (int i = 0, r0 = 0; i < nb; i++) {
        const int Rb = R / nb + (i < R % nb);
        wino_gemm_block(Rb, V, Vt + (size_t)r0 * C, U, M + (size_t)r0 * DG_CH, C, O, nx);
        r0 += Rb;
    }
}


/* The tile loop for input tiles of side A (4 or 6; inlined with A constant, so every
 * transform loop unrolls): see dg_conv2d_wino and dg_conv2d_wino4. */
static inline __attribute__((always_inline)) int wino_conv(
        const int A, const float *x, const float *U, const float *bias, float *y, int H, int W,
        int C, int O, int HO, int WO, int PT, int PL, long t0, long t1, int relu) {
    const int T = A - 2, NX = A * A;
    const int TY = (HO + T - 1) / T, TX = (WO + T - 1) / T;
    float *Vt = malloc((size_t)NX * DG_WR * C * sizeof(float));
    float *M = malloc((size_t)NX * DG_WR * DG_CH * sizeof(float));
    if (!Vt || !M) {
        free(Vt);
        free(M);
        return -1;
    }
    const vf zero = {0};
    /* Blocks of DG_WR consecutive tiles, across tile rows and images: short rows (a
     * 10x10 input has 4 tiles a row) would otherwise reuse each U vector only 4 times. */
    const long end = t1 * TX;
    for (long id0 = t0 * TX; id0 < end; id0 += DG_WR) {
        const int R = end - id0 < DG_WR ? (int)(end - id0) : DG_WR;
        /* Input transform B^T d B of the block's R tiles, VW channels at a time. */
        for (int r = 0; r < R; r++) {
            const long id = id0 + r, trow = id / TX, n = trow / TY;
            const long iy0 = (long)T * (trow % TY) - PT, ix0 = (long)T * (id % TX) - PL;
            for (int c = 0; c < C; c += VW) {
                vf d[6][6], t[6][6];
                for (int i = 0; i < A; i++)
                    for (int j = 0; j < A; j++) {
                        const long iy = iy0 + i, ix = ix0 + j;
                        d[i][j] = (iy >= 0 && iy < H && ix >= 0 && ix < W)
                                      ? LOADU(x + (((size_t)n * H + iy) * W + ix) * C + c)
                                      : zero;
                    }
                for (int j = 0; j < A; j++) { /* B^T d: down each column */
                    vf col[6], res[6];
                    for (int i = 0; i < A; i++) col[i] = d[i][j];
                    if (A == 4) bt4(col, res); else bt6(col, res);
                    for (int i = 0; i < A; i++) t[i][j] = res[i];
                }
                for (int i = 0; i < A; i++) { /* (B^T d) B: along each row */
                    vf res[6];
                    if (A == 4) bt4(t[i], res); else bt6(t[i], res);
                    for (int j = 0; j < A; j++) STOREU(Vt + ((size_t)(A * i + j) * DG_WR + r) * C + c, res[j]);
                }
            }
        }
        for (int o0 = 0; o0 < O;) {
            const int V = O - o0 >= 2 * VW ? 2 : 1;
            wino_gemm(R, V, Vt, U + o0, M, C, O, NX);
            /* Output transform A^T M A of each tile, bias, relu, and the store (edges clipped). */
            for (int r = 0; r < R; r++) {
                const long id = id0 + r, trow = id / TX, n = trow / TY, ty = trow % TY, tx = id % TX;
                for (int v = 0; v < V; v++) {
                    vf s[4][6]; /* A^T M: down each column */
                    for (int j = 0; j < A; j++) {
                        vf col[6], res[4];
                        for (int i = 0; i < A; i++) col[i] = LOADU(M + ((size_t)(A * i + j) * DG_WR + r) * DG_CH + VW * v);
                        if (A == 4) at4(col, res); else at6(col, res);
                        for (int i = 0; i < T; i++) s[i][j] = res[i];
                    }
                    const vf b = bias ? LOADU(bias + o0 + VW * v) : zero;
                    for (int i = 0; i < T; i++) {
                        const long oy = (long)T * ty + i;
                        if (oy >= HO) break;
                        vf out[4];
                        if (A == 4) at4(s[i], out); else at6(s[i], out);
                        for (int j = 0; j < T; j++) {
                            const long ox = (long)T * tx + j;
                            if (ox >= WO) break;
                            vf a = out[j] + b;
                            a = act_vec(a, relu);
                            STOREU(y + (((size_t)n * HO + oy) * WO + ox) * O + o0 + VW * v, a);
                        }
                    }
                }
            }
            o0 += VW * V;
        }
    }
    free(Vt);
    free(M);
    return 0;
}

/* y[n, oy, ox, :] = act(bias + sum_{ky,kx,c} x[n, oy + ky - PT, ox + kx - PL, c] * k[ky, kx, c, :]),
 * x read as 0 outside [0, H) x [0, W), on F(2x2, 3x3) tiles, for the 2-row tile rows
 * t0 <= n*ceil(HO/2) + ty < t1. x: [N, H, W, C]; U: [16, C, O] (the caller's G k G^T);
 * bias: [O] or NULL; y: [N, HO, WO, O]; C and O multiples of 16. Returns 0, or -1 when out
 * of memory. */
int dg_conv2d_wino(const float *x, const float *U, const float *bias, float *y, int H, int W, int C,
                   int O, int HO, int WO, int PT, int PL, long t0, long t1, int relu) {
    return wino_conv(4, x, U, bias, y, H, W, C, O, HO, WO, PT, PL, t0, t1, relu);
}

/* As dg_conv2d_wino, on F(4x4, 3x3) tiles: 4-row tile rows t0 <= n*ceil(HO/4) + ty < t1 and
 * U: [36, C, O]. */
int dg_conv2d_wino4(const float *x, const float *U, const float *bias, float *y, int H, int W, int C,
                    int O, int HO, int WO, int PT, int PL, long t0, long t1, int relu) {
    return wino_conv(6, x, U, bias, y, H, W, C, O, HO, WO, PT, PL, t0, t1, relu);
}
