/* The gate math of one LSTM / GRU time step (after its matmuls) for the CPU backend,
 * float32, forward and backward each in one pass over the gates (built with cpu_conv.c
 * into one library by kernels/cpu.py; driven by NumpyBackend.lstm_step, lstm_step_grad,
 * gru_step, gru_step_grad, which document the arrays).
 *
 * Every function takes rows [r0, r1) (the backend's threads may split a large batch) and
 * row strides (ld*) in floats for its inputs, so that column slices of a wider array
 * need no copy; outputs are contiguous. A gradient input passed as NULL is zeros.
 *
 * The gates run on GCC / clang vectors of VW floats (as cpu_norm.c): exp is a Cephes-style
 * polynomial (about 2 ulp, arguments clamped to [-87, 88]) computed on every lane, where
 * libm's expf would run one lane at a time and the compiler will not if-convert the clamps
 * into vector code by itself; sigmoid and tanh are built on it, tanh with its odd series
 * near 0 (where (1 - e^-2a) / (1 + e^-2a) would cancel). The last VW - 1 or fewer
 * columns of a row go through the same code on a zero-padded vector.
 */
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__)
#define VW 16
#elif defined(__AVX__)
#define VW 8
#else
#define VW 4
#endif

typedef float vf __attribute__((vector_size(VW * 4), aligned(4)));
typedef int32_t vi __attribute__((vector_size(VW * 4), aligned(4)));

static inline vf sp(float a) {
    vf v;
    for (int k = 0; k < VW; k++) v[k] = a;
    return v;
}

/* m lanes from p (m <= VW; the rest zero) and back. Inlined with m = VW (a constant) they are
 * plain vector loads and stores; only a row's last columns pay for a variable memcpy. */
static inline __attribute__((always_inline)) vf ld(const float *p, int m) {
    if (m == VW)
        return *(const vf *)p; /* vf is aligned(4): an unaligned vector load */
    vf v = sp(0.0f);
    memcpy(&v, p, (size_t)m * sizeof(float));
    return v;
}

static inline __attribute__((always_inline)) void st(float *p, vf v, int m) {
    if (m == VW)
        *(vf *)p = v;
    else
        memcpy(p, &v, (size_t)m * sizeof(float));
}

static inline vf sel(vi mask, vf a, vf b) { return (vf)((mask & (vi)a) | (~mask & (vi)b)); }

static inline vf vexp(vf x) {
    x = sel(x < sp(-87.0f), sp(-87.0f), x);
    x = sel(x > sp(88.0f), sp(88.0f), x);
    vf t = x * 1.44269504088896341f;
    vi ni = __builtin_convertvector(t + sel(t >= sp(0.0f), sp(0.5f), sp(-0.5f)), vi); /* round half away */
    vf n = __builtin_convertvector(ni, vf);
    vf r = x - n * 0.693359375f + n * 2.12194440e-4f;
    vf p = sp(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    return p * (vf)((ni + 127) << 23);
}

static inline vf vsig(vf x) { return 1.0f / (1.0f + vexp(-x)); }

static inline vf vtanh(vf x) {
    vi sign = (vi)x & (vi)sp(-0.0f); /* the sign bit */
    vf a = (vf)((vi)x & ~(vi)sp(-0.0f));
    vf e = vexp(a * -2.0f);
    vf big = (1.0f - e) / (1.0f + e);
    vf x2 = a * a; /* tanh a = a - a^3/3 + 2a^5/15 - 17a^7/315 for small a */
    vf small = a * (1.0f + x2 * (-0.333333333f + x2 * (0.133333333f + x2 * -0.053968254f)));
    return (vf)((vi)sel(a < sp(0.0625f), small, big) | sign);
}

#define COLS static inline __attribute__((always_inline)) void
/* Columns [0, u) of a row: whole vectors, then the rest (fewer than VW) padded. */
#define OVER_COLUMNS(call)                                 \
    do {                                                   \
        int j = 0;                                         \
        for (; j + VW <= u; j += VW) call(VW);             \
        if (j < u) call(u - j);                            \
    } while (0)

COLS lstm_fwd_cols(const float *zr, const float *cpr, float *ar, float *hr, float *cr, int u, int j, int m) {
    vf i = vsig(ld(zr + j, m)), f = vsig(ld(zr + u + j, m));
    vf g = vtanh(ld(zr + 2 * u + j, m)), o = vsig(ld(zr + 3 * u + j, m));
    vf cn = f * ld(cpr + j, m) + i * g;
    st(ar + j, i, m);
    st(ar + u + j, f, m);
    st(ar + 2 * u + j, g, m);
    st(ar + 3 * u + j, o, m);
    st(cr + j, cn, m);
    st(hr + j, o * vtanh(cn), m);
}

void dg_lstm_fwd(const float *z, long ldz, const float *cp, long ldc, float *h, float *c, float *act, int u,
                 long r0, long r1) {
    for (long n = r0; n < r1; n++) {
        const float *zr = z + n * ldz, *cpr = cp + n * ldc;
        float *ar = act + n * 4L * u, *hr = h + n * u, *cr = c + n * u;
#define CALL(m) lstm_fwd_cols(zr, cpr, ar, hr, cr, u, j, m)
        OVER_COLUMNS(CALL);
#undef CALL
    }
}

COLS lstm_bwd_cols(const float *dhr, const float *dcr, const float *ar, const float *cpr, const float *cr,
                   float *dzr, float *dcpr, int u, int j, int m) {
    vf i = ld(ar + j, m), f = ld(ar + u + j, m), g = ld(ar + 2 * u + j, m), o = ld(ar + 3 * u + j, m);
    vf dct = dcr ? ld(dcr + j, m) : sp(0.0f), dout = sp(0.0f);
    if (dhr) { /* NULL when only c is used downstream: the o gate gets nothing */
        vf tc = vtanh(ld(cr + j, m)), d = ld(dhr + j, m);
        dct += d * o * (1.0f - tc * tc);
        dout = d * tc * o * (1.0f - o);
    }
    st(dzr + j, dct * g * i * (1.0f - i), m);
    st(dzr + u + j, dct * ld(cpr + j, m) * f * (1.0f - f), m);
    st(dzr + 2 * u + j, dct * i * (1.0f - g * g), m);
    st(dzr + 3 * u + j, dout, m);
    st(dcpr + j, dct * f, m);
}

void dg_lstm_bwd(const float *dh, long lddh, const float *dc, long lddc, const float *act, const float *cp,
                 long ldc, const float *c, float *dz, float *dcp, int u, long r0, long r1) {
    for (long n = r0; n < r1; n++) {
        const float *ar = act + n * 4L * u, *cpr = cp + n * ldc, *cr = c + n * u;
        const float *dhr = dh ? dh + n * lddh : NULL, *dcr = dc ? dc + n * lddc : NULL;
        float *dzr = dz + n * 4L * u, *dcpr = dcp + n * u;
#define CALL(m) lstm_bwd_cols(dhr, dcr, ar, cpr, cr, dzr, dcpr, u, j, m)
        OVER_COLUMNS(CALL);
#undef CALL
    }
}

COLS gru_fwd_cols(const float *xr, const float *hzr, const float *hpr, float *ar, float *out, int u, int j, int m) {
    vf zg = vsig(ld(xr + j, m) + ld(hzr + j, m));
    vf rg = vsig(ld(xr + u + j, m) + ld(hzr + u + j, m));
    vf hh = vtanh(ld(xr + 2 * u + j, m) + rg * ld(hzr + 2 * u + j, m));
    st(ar + j, zg, m);
    st(ar + u + j, rg, m);
    st(ar + 2 * u + j, hh, m);
    st(out + j, hh + zg * (ld(hpr + j, m) - hh), m);
}

void dg_gru_fwd(const float *xz, long ldx, const float *hz, long ldh, const float *hp, long ldp, float *h,
                float *act, int u, long r0, long r1) {
    for (long n = r0; n < r1; n++) {
        const float *xr = xz + n * ldx, *hzr = hz + n * ldh, *hpr = hp + n * ldp;
        float *ar = act + n * 3L * u, *out = h + n * u;
#define CALL(m) gru_fwd_cols(xr, hzr, hpr, ar, out, u, j, m)
        OVER_COLUMNS(CALL);
#undef CALL
    }
}

COLS gru_bwd_cols(const float *dhr, const float *ar, const float *hzh, const float *hpr, float *dxr, float *dhzr,
                  float *dpr, int u, int j, int m) {
    vf zg = ld(ar + j, m), rg = ld(ar + u + j, m), hh = ld(ar + 2 * u + j, m), d = ld(dhr + j, m);
    vf dzp = d * (ld(hpr + j, m) - hh) * zg * (1.0f - zg);
    vf dhp = d * (1.0f - zg) * (1.0f - hh * hh);
    vf drp = dhp * ld(hzh + j, m) * rg * (1.0f - rg);
    st(dxr + j, dzp, m);
    st(dxr + u + j, drp, m);
    st(dxr + 2 * u + j, dhp, m);
    st(dhzr + j, dzp, m);
    st(dhzr + u + j, drp, m);
    st(dhzr + 2 * u + j, dhp * rg, m);
    st(dpr + j, d * zg, m);
}

void dg_gru_bwd(const float *dh, long lddh, const float *act, const float *hz, long ldh, const float *hp,
                long ldp, float *dxz, float *dhz, float *dhp, int u, long r0, long r1) {
    for (long n = r0; n < r1; n++) {
        const float *dhr = dh + n * lddh, *hpr = hp + n * ldp, *hzh = hz + n * ldh + 2 * u;
        const float *ar = act + n * 3L * u;
        float *dxr = dxz + n * 3L * u, *dhzr = dhz + n * 3L * u, *dpr = dhp + n * u;
#define CALL(m) gru_bwd_cols(dhr, ar, hzh, hpr, dxr, dhzr, dpr, u, j, m)
        OVER_COLUMNS(CALL);
#undef CALL
    }
}
