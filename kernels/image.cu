// NHWC float32 projective image transform (Backend.image_transform, as
// tf.raw_ops.ImageProjectiveTransformV3) and its gradient for the images.
//
// Input [N, H, W, C], output [N, OH, OW, C]; transform rows tr [N or 1, 8] read with stride TS
// (8, or 0 for one row shared by the batch): output pixel (x, y) samples the input at
// ((a0 x + a1 y + a2) / k, (b0 x + b1 y + b2) / k), k = c0 x + c1 y + 1. INTERP: 0 nearest,
// 1 bilinear; MODE (fill mode): 0 constant, 1 nearest, 2 reflect, 3 wrap. A tap outside the
// image reads FILL. `wide` = 1 when an array holds 2^31 elements or more (64-bit offsets).
//
// The arithmetic is the NumPy backend's, step by step in float32 and never contracted into
// FMAs, so both backends pick the same taps (a coordinate one rounding off a whole pixel
// would take another nearest pixel) and the same weights. Each work item is one output
// element, channel fastest: a warp reads and writes contiguous memory.
//
// dg_image_transform: one item per output element, its 1 or 4 taps summed in tap order.
// dg_image_transform_grad: one item per dy element, adding dy * weight into dx (zeroed by the
//   caller) at each tap inside the image with atomicAdd (a bilinear transform's taps overlap),
//   as the generic CuPy path's scatter_add does.

__device__ __forceinline__ float dg_it_mul(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

__device__ __forceinline__ float dg_it_add(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}

// Clipped to [0, hi]; NaN stays NaN (fminf / fmaxf would turn it into a number), so a
// degenerate transform reads FILL rather than some pixel.
__device__ __forceinline__ float dg_it_clip(float c, float hi)
{
    return c < 0.0f ? 0.0f : (c > hi ? hi : c);
}

// A source coordinate mapped into [0, n - 1] by the fill mode (Backend._fill_coord).
__device__ __forceinline__ float dg_it_fill_coord(float c, int n, int mode)
{
    if (mode == 0)
        return c;
    if (n <= 1)
        return 0.0f;
    const float fn = (float)n, hi = (float)(n - 1);
    float m = c;
    if (mode == 2) {  // reflect: d c b a | a b c d | d c b a
        const float sz2 = 2.0f * fn;
        m = fmodf(c, sz2);
        if (m < 0.0f)
            m = dg_it_add(m, sz2);  // the sign of the divisor, as numpy.mod
        if (m >= fn)
            m = dg_it_add(dg_it_add(sz2, -m), -1.0f);
    } else if (mode == 3) {  // wrap, TF's arithmetic
        if (c < 0.0f)
            m = dg_it_add(c, dg_it_mul(fn, dg_it_add(truncf(-c / hi), 1.0f)));
        else if (c > hi)
            m = dg_it_add(c, -dg_it_mul(fn, truncf(c / hi)));
    }
    return dg_it_clip(m, hi);
}

// The taps of output element e (n, oy, ox, c): up to 4 (offset of the input element it reads,
// weight); a tap outside the image has offset -1. Returns the number of taps.
template <typename I>
__device__ __forceinline__ int dg_it_taps(I e, const float* tr, int TS, int H, int W, int C, int OH, int OW,
                                          int interp, int mode, long long* at, float* w)
{
    const int c = (int)(e % C);
    I p = e / C;
    const int ox = (int)(p % OW);
    p /= OW;
    const int oy = (int)(p % OH);
    const I n = p / OH;
    const I base = n * H * W * C + c;
    const float* r = tr + n * TS;
    const float fx = (float)ox, fy = (float)oy;
    const float k = dg_it_add(dg_it_add(dg_it_mul(r[6], fx), dg_it_mul(r[7], fy)), 1.0f);
    const float sx = dg_it_fill_coord(dg_it_add(dg_it_add(dg_it_mul(r[0], fx), dg_it_mul(r[1], fy)), r[2]) / k,
                                      W, mode);
    const float sy = dg_it_fill_coord(dg_it_add(dg_it_add(dg_it_mul(r[3], fx), dg_it_mul(r[4], fy)), r[5]) / k,
                                      H, mode);
    const float hy = (float)(H - 1), hx = (float)(W - 1);
    if (interp == 0) {  // std::round: halves away from zero
        const float iy = sy >= 0.0f ? floorf(dg_it_add(sy, 0.5f)) : ceilf(dg_it_add(sy, -0.5f));
        const float ix = sx >= 0.0f ? floorf(dg_it_add(sx, 0.5f)) : ceilf(dg_it_add(sx, -0.5f));
        const bool ok = iy >= 0.0f && iy <= hy && ix >= 0.0f && ix <= hx;
        at[0] = ok ? (long long)(base + ((I)iy * W + (I)ix) * C) : -1;
        w[0] = 1.0f;
        return 1;
    }
    const float y0 = floorf(sy), x0 = floorf(sx);
    const float dy = dg_it_add(sy, -y0), dx = dg_it_add(sx, -x0);
    const float ry = dg_it_add(1.0f, -dy), rx = dg_it_add(1.0f, -dx);
    for (int i = 0; i < 4; ++i) {
        const float iy = i < 2 ? y0 : dg_it_add(y0, 1.0f), ix = i % 2 ? dg_it_add(x0, 1.0f) : x0;
        const bool ok = iy >= 0.0f && iy <= hy && ix >= 0.0f && ix <= hx;
        at[i] = ok ? (long long)(base + ((I)iy * W + (I)ix) * C) : -1;
        w[i] = dg_it_mul(i < 2 ? ry : dy, i % 2 ? dx : rx);
    }
    return 4;
}

template <typename I>
__device__ __forceinline__ void dg_image_transform_t(const float* x, const float* tr, float* y, int N, int H,
                                                     int W, int C, int OH, int OW, int TS, int interp, int mode,
                                                     float fill)
{
    const I total = (I)N * OH * OW * C;
    for (I e = (I)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (I)gridDim.x * blockDim.x) {
        long long at[4];
        float w[4];
        const int taps = dg_it_taps<I>(e, tr, TS, H, W, C, OH, OW, interp, mode, at, w);
        float acc = 0.0f;
        for (int i = 0; i < taps; ++i) {
            const float v = at[i] >= 0 ? x[(I)at[i]] : fill;
            const float term = interp == 0 ? v : dg_it_mul(v, w[i]);
            acc = i == 0 ? term : dg_it_add(acc, term);
        }
        y[e] = acc;
    }
}

extern "C" __global__ void dg_image_transform(const float* x, const float* tr, float* y, int N, int H, int W,
                                              int C, int OH, int OW, int TS, int interp, int mode, float fill,
                                              int wide)
{
    if (wide)
        dg_image_transform_t<long long>(x, tr, y, N, H, W, C, OH, OW, TS, interp, mode, fill);
    else
        dg_image_transform_t<int>(x, tr, y, N, H, W, C, OH, OW, TS, interp, mode, fill);
}

template <typename I>
__device__ __forceinline__ void dg_image_transform_grad_t(const float* dy, const float* tr, float* dx, int N,
                                                          int H, int W, int C, int OH, int OW, int TS,
                                                          int interp, int mode)
{
    const I total = (I)N * OH * OW * C;
    for (I e = (I)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (I)gridDim.x * blockDim.x) {
        long long at[4];
        float w[4];
        const int taps = dg_it_taps<I>(e, tr, TS, H, W, C, OH, OW, interp, mode, at, w);
        const float g = dy[e];
        for (int i = 0; i < taps; ++i)
            if (at[i] >= 0)
                atomicAdd(dx + (I)at[i], dg_it_mul(g, w[i]));
    }
}

extern "C" __global__ void dg_image_transform_grad(const float* dy, const float* tr, float* dx, int N, int H,
                                                   int W, int C, int OH, int OW, int TS, int interp, int mode,
                                                   int wide)
{
    if (wide)
        dg_image_transform_grad_t<long long>(dy, tr, dx, N, H, W, C, OH, OW, TS, interp, mode);
    else
        dg_image_transform_grad_t<int>(dy, tr, dx, N, H, W, C, OH, OW, TS, interp, mode);
}
