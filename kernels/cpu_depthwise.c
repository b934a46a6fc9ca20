/* Depthwise NHWC convolution for the CPU backend (float32): forward, input gradient, filter
 * gradient. Built with cpu_conv.c into one library by deepgpu/kernels/cpu.py.
 *
 * A depthwise 3x3 does 9 multiply-adds per value it reads, so it is bound by memory, not
 * arithmetic: each kernel makes one pass over its input and output, its innermost loop runs
 * over the channels (contiguous in NHWC, vectorized by the compiler), and the padding is
 * skipped by clipping the taps instead of being stored. Kernel [kh, kw, C, M]; output channel
 * q = c*M + m reads input channel c = q / M (TF's order), so the kernel tap and an output
 * pixel share one index q.
 *
 * The forward pass applies the layer's bias and activation (act: 0 none, 1 relu, 2 relu6) as it
 * stores each output, so an inference-folded DepthwiseConv2D -> BatchNormalization -> ReLU6 of
 * MobileNetV2 makes one pass over its output instead of three.
 *
 * Work is split by the caller over rows (n*Ho output rows, or n*H input rows for the input
 * gradient: each row is written by one thread only); the filter gradient sums into a buffer per
 * call that the caller adds up.
 */
#include <string.h>

/* The taps [*lo, *hi) of a kernel axis that fall inside the input for output position o. */
static inline void tap_range(int o, int stride, int pad, int dil, int k, int size, int *lo, int *hi) {
    int base = o * stride - pad, a = 0, b = k;
    while (a < b && base + a * dil < 0) a++;
    while (b > a && base + (b - 1) * dil >= size) b--;
    *lo = a;
    *hi = b;
}

/* v + b, then the activation act (0 none, 1 relu, 2 relu6); NaN stays NaN, as NumPy's maximum. */
static inline float epilogue(float v, const float *restrict b, int q, int act) {
    if (b) v += b[q];
    if (act) v = v < 0.0f ? 0.0f : v;
    if (act == 2) v = v > 6.0f ? 6.0f : v;
    return v;
}

/* One output pixel's channels q0 .. q0+nb-1 (m == 1) summed over the taps in registers, then
 * stored once (instead of a load and a store of the output per tap). nb is a constant at each
 * call: 32 floats are 4 AVX2 / 2 AVX-512 registers of accumulators, 8 one AVX2 register. */
static inline __attribute__((always_inline)) void fwd_block(
        const float *restrict xrow, const float *restrict k, const float *restrict b, float *restrict yp, int q0,
        const int nb, int w, int c, int kw, int oh, int ow, int sh, int sw, int dh, int dw, int pt, int pl, int i0,
        int i1, int j0, int j1, int act) {
    float acc[32] = {0};
    for (int i = i0; i < i1; i++) {
        const int ih = oh * sh - pt + i * dh;
        for (int j = j0; j < j1; j++) {
            const float *restrict xp = xrow + ((long)ih * w + ow * sw - pl + j * dw) * c + q0;
            const float *restrict kp = k + (long)(i * kw + j) * c + q0;
            for (int q = 0; q < nb; q++) acc[q] += xp[q] * kp[q];
        }
    }
    for (int q = 0; q < nb; q++) yp[q0 + q] = epilogue(acc[q], b, q0 + q, act);
}

/* y[r] for output rows r0 <= r < r1 of n*Ho; x [N, H, W, C], k [kh, kw, C, M], b [C*M] or NULL,
 * y [N, Ho, Wo, C*M] = act(conv + b). */
void dg_dw_fwd(const float *restrict x, const float *restrict k, const float *restrict b, float *restrict y, int h,
               int w, int c, int m, int kh, int kw, int ho, int wo, int sh, int sw, int dh, int dw, int pt, int pl,
               long r0, long r1, int act) {
    const int cm = c * m;
    const int c32 = m == 1 ? c / 32 * 32 : 0, c8 = m == 1 ? c / 8 * 8 : 0;  /* channels done in blocks */
    for (long r = r0; r < r1; r++) {
        const long n = r / ho;
        const int oh = (int)(r % ho);
        int i0, i1;
        tap_range(oh, sh, pt, dh, kh, h, &i0, &i1);
        const float *restrict xrow = x + n * h * (long)w * c;
        for (int ow = 0; ow < wo; ow++) {
            float *restrict yp = y + (r * wo + ow) * (long)cm;
            int j0, j1;
            tap_range(ow, sw, pl, dw, kw, w, &j0, &j1);
            int q0 = 0;
            for (; q0 < c32; q0 += 32)
                fwd_block(xrow, k, b, yp, q0, 32, w, c, kw, oh, ow, sh, sw, dh, dw, pt, pl, i0, i1, j0, j1, act);
            for (; q0 < c8; q0 += 8)
                fwd_block(xrow, k, b, yp, q0, 8, w, c, kw, oh, ow, sh, sw, dh, dw, pt, pl, i0, i1, j0, j1, act);
            if (c8 == cm) continue;
            memset(yp + c8, 0, sizeof(float) * (cm - c8));
            for (int i = i0; i < i1; i++) {
                const int ih = oh * sh - pt + i * dh;
                for (int j = j0; j < j1; j++) {
                    const int iw = ow * sw - pl + j * dw;
                    const float *restrict xp = xrow + ((long)ih * w + iw) * c;
                    const float *restrict kp = k + (long)(i * kw + j) * cm;
                    if (m == 1) {
                        for (int q = c8; q < c; q++) yp[q] += xp[q] * kp[q];
                    } else {
                        for (int q = 0; q < c; q++)
                            for (int t = 0; t < m; t++) yp[q * m + t] += xp[q] * kp[q * m + t];
                    }
                }
            }
            if (b || act)
                for (int q = c8; q < cm; q++) yp[q] = epilogue(yp[q], b, q, act);
        }
    }
}

/* dx for input rows r0 <= r < r1 of n*H, gathered from every output pixel whose window holds it. */
void dg_dw_grad_input(const float *restrict dy, const float *restrict k, float *restrict dx, int h, int w,
                      int c, int m, int kh, int kw, int ho, int wo, int sh, int sw, int dh, int dw, int pt,
                      int pl, long r0, long r1) {
    const int cm = c * m;
    for (long r = r0; r < r1; r++) {
        const long n = r / h;
        const int ih = (int)(r % h);
        for (int iw = 0; iw < w; iw++) {
            float *restrict dp = dx + (r * w + iw) * (long)c;
            memset(dp, 0, sizeof(float) * c);
            for (int i = 0; i < kh; i++) {
                const int th = ih + pt - i * dh;  /* = oh * sh for the output row that reads ih at tap i */
                if (th < 0 || th % sh) continue;
                const int oh = th / sh;
                if (oh >= ho) continue;
                for (int j = 0; j < kw; j++) {
                    const int tw = iw + pl - j * dw;
                    if (tw < 0 || tw % sw) continue;
                    const int ow = tw / sw;
                    if (ow >= wo) continue;
                    const float *restrict gp = dy + ((n * ho + oh) * (long)wo + ow) * cm;
                    const float *restrict kp = k + (long)(i * kw + j) * cm;
                    if (m == 1) {
                        for (int q = 0; q < c; q++) dp[q] += gp[q] * kp[q];
                    } else {
                        for (int q = 0; q < c; q++) {
                            float s = 0.0f;
                            for (int t = 0; t < m; t++) s += gp[q * m + t] * kp[q * m + t];
                            dp[q] += s;
                        }
                    }
                }
            }
        }
    }
}

/* dk [kh, kw, C, M] += the contribution of output rows r0 <= r < r1 of n*Ho (dk zeroed by the caller). */
void dg_dw_grad_filter(const float *restrict x, const float *restrict dy, float *restrict dk, int h, int w,
                       int c, int m, int kh, int kw, int ho, int wo, int sh, int sw, int dh, int dw, int pt,
                       int pl, long r0, long r1) {
    const int cm = c * m;
    for (long r = r0; r < r1; r++) {
        const long n = r / ho;
        const int oh = (int)(r % ho);
        int i0, i1;
        tap_range(oh, sh, pt, dh, kh, h, &i0, &i1);
        for (int ow = 0; ow < wo; ow++) {
            const float *restrict gp = dy + (r * wo + ow) * (long)cm;
            int j0, j1;
            tap_range(ow, sw, pl, dw, kw, w, &j0, &j1);
            for (int i = i0; i < i1; i++) {
                const int ih = oh * sh - pt + i * dh;
                for (int j = j0; j < j1; j++) {
                    const int iw = ow * sw - pl + j * dw;
                    const float *restrict xp = x + ((n * h + ih) * (long)w + iw) * c;
                    float *restrict kp = dk + (long)(i * kw + j) * cm;
                    if (m == 1) {
                        for (int q = 0; q < c; q++) kp[q] += xp[q] * gp[q];
                    } else {
                        for (int q = 0; q < c; q++)
                            for (int t = 0; t < m; t++) kp[q * m + t] += xp[q] * gp[q * m + t];
                    }
                }
            }
        }
    }
}
