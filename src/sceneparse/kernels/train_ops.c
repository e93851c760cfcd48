/* Training kernels for channels_last (NHWC) float32 or bfloat16 tensors on the CPU, loaded by native.py.

   Built with -fopenmp and loaded after torch, so the loops run on torch's own OpenMP threads (one thread
   pool: a second one would compete with torch's spinning workers for the cores). Innermost loops run over channels (or over output columns) with unit
   stride, so the compiler vectorises them; channel loops are tiled by TILE so that accumulators stay in
   registers.

   1. BatchNorm in training mode (batch statistics) fused with its activation (identity, ReLU, ReLU6),
      forward and backward (Ioffe & Szegedy 2015, Alg. 1 and the gradient of Sec. 3).
   2. Depthwise convolution (groups == channels) with any kernel, stride, zero padding and dilation:
      forward, gradient of the input, gradient of the weight.
   3. Bilinear upsampling (align_corners=False) fused with softmax cross-entropy: loss and the gradient of
      the low-resolution logits in one pass, without any full-resolution tensor.
*/
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

enum { ACT_NONE = 0, ACT_RELU = 1, ACT_RELU6 = 2 };

/* ------------------------------------------------------------------ BatchNorm + activation */

/* a[c] / b[c] = the threads' partial sums part[t] = (a_t[C], b_t[C]) added in thread order (the same result
   every run for a given thread count: the static schedule gives each thread the same rows); frees part. */
static void partial_sums(double *part, int nt, int64_t C, double *a, double *b)
{
    for (int64_t c = 0; c < C; c++) a[c] = b[c] = 0.0;
    for (int t = 0; t < nt; t++)
        for (int64_t c = 0; c < C; c++) {
            a[c] += part[(size_t)t * 2 * C + c];
            b[c] += part[(size_t)t * 2 * C + C + c];
        }
    free(part);
}

/* The activation's gradient mask recomputed from the input: g = dy where the activation passes it. As
   PyTorch: ReLU passes where its output is > 0, ReLU6 (hardtanh) where 0 < output < 6. */
static inline float act_grad(float dy, float z, int act)
{
    if (act == ACT_RELU6) return (z > 0.0f && z < 6.0f) ? dy : 0.0f;
    if (act == ACT_RELU) return z > 0.0f ? dy : 0.0f;
    return dy;
}

/* ------------------------------------------------------------------ depthwise convolution */

typedef struct {
    int64_t N, H, W, C, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw;
} dwshape;

/* Channel vectors of 16 floats (GCC / Clang vector extensions: one AVX-512 register, two AVX2 ones); loads
   and stores need only float alignment. A tile of 64 channels is 4 vectors kept in registers over the taps;
   the channels past the last full tile (C % 64) go 16 at a time, then one by one. */
typedef float v16 __attribute__((vector_size(64), aligned(4)));
#define VL 16
static inline v16 vld(const float *p) { return *(const v16 *)p; }
static inline void vst(float *p, v16 v) { *(v16 *)p = v; }

/* The taps of one output position that read inside the input: their input offsets (in floats, relative to
   x's image start) and weight offsets (tap index * C). Returns the count. */
static inline int64_t fwd_taps(const dwshape *s, int64_t oh, int64_t ow, int64_t *xo, int64_t *wo)
{
    int64_t t = 0;
    for (int64_t i = 0; i < s->KH; i++) {
        int64_t ih = oh * s->sh - s->ph + i * s->dh;
        if (ih < 0 || ih >= s->H) continue;
        for (int64_t j = 0; j < s->KW; j++) {
            int64_t iw = ow * s->sw - s->pw + j * s->dw;
            if (iw < 0 || iw >= s->W) continue;
            xo[t] = (ih * s->W + iw) * s->C;
            wo[t++] = (i * s->KW + j) * s->C;
        }
    }
    return t;
}

/* Output columns [*lo, *hi) of a row whose taps all read inside the input's width. */
static inline void interior_cols(const dwshape *s, int64_t *lo, int64_t *hi)
{
    int64_t a = (s->pw + s->sw - 1) / s->sw, last = s->W - 1 - (s->KW - 1) * s->dw + s->pw;
    int64_t b = last < 0 ? 0 : last / s->sw + 1;
    if (b > s->OW) b = s->OW;
    if (a > b) a = b;
    *lo = a;
    *hi = b;
}

/* Whether output row oh has all its taps inside the input's height and the register-blocked kernels below
   apply (square 3x3 or 5x5 kernel, channels a multiple of 16). */
static inline int blocked_row(const dwshape *s, int64_t oh)
{
    int64_t ih = oh * s->sh - s->ph;
    return s->KH == s->KW && (s->KH == 3 || s->KH == 5) && s->C % VL == 0 && ih >= 0
           && ih + (s->KH - 1) * s->dh < s->H;
}

/* bfloat16 <-> float32: a bfloat16 is the top half of a float32; rounding to nearest even on the way down
   (infinity stays infinity, NaN stays NaN, values above the largest bfloat16 round to infinity). */
typedef uint16_t h16 __attribute__((vector_size(32), aligned(2)));
typedef uint32_t u16v __attribute__((vector_size(64)));
static inline float b2f(uint16_t v)
{
    union { uint32_t u; float f; } t = {(uint32_t)v << 16};
    return t.f;
}
static inline uint16_t f2b(float f)
{
    union { float f; uint32_t u; } t = {f};
    if ((t.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((t.u >> 16) | 0x40u); /* NaN: stays a (quiet) NaN */
    return (uint16_t)((t.u + 0x7fffu + ((t.u >> 16) & 1u)) >> 16);
}
static inline v16 bld(const uint16_t *p) { return (v16)(__builtin_convertvector(*(const h16 *)p, u16v) << 16); }
static inline void bst(uint16_t *p, v16 v)
{
    u16v u = (u16v)v;
    u16v r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16, nan = (u16v)((u & 0x7fffffffu) > 0x7f800000u);
    r = (r & ~nan) | (((u >> 16) | 0x40u) & nan); /* NaNs stay (quiet) NaNs, as in f2b */
    *(h16 *)p = __builtin_convertvector(r, h16);
}

#define ACT_T float
#define SUF(name) name##_f32
#define LD(p) (*(p))
#define ST(p, v) (*(p) = (v))
#define VLD(p) vld(p)
#define VST(p, v) vst(p, v)
#include "train_ops_act.h"
#undef ACT_T
#undef SUF
#undef LD
#undef ST
#undef VLD
#undef VST

#define ACT_T uint16_t
#define SUF(name) name##_bf16
#define LD(p) b2f(*(p))
#define ST(p, v) (*(p) = f2b(v))
#define VLD(p) bld(p)
#define VST(p, v) bst(p, v)
#include "train_ops_act.h"

/* ------------------------------------------------------------------ upsampling + cross-entropy */

/* exp and log that the compiler vectorises (Cephes' single-precision polynomials, ~1 ulp on the ranges used
   here: exp of values <= 0, log of values in [1, K]). */
static inline float vexp(float x)
{
    x = x < -87.0f ? -87.0f : x;
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } u;
    u.i = ((int32_t)n + 127) << 23;
    return p * u.f;
}

static inline float vlog(float x)
{
    union { float f; int32_t i; } u = {x};
    int32_t e = ((u.i >> 23) & 0xff) - 126;
    u.i = (u.i & 0x007fffff) | 0x3f000000; /* mantissa in [0.5, 1) */
    float m = u.f;
    if (m < 0.707106781186547524f) {
        e -= 1;
        m = m + m - 1.0f;
    } else {
        m = m - 1.0f;
    }
    float z = m * m;
    float y = 7.0376836292e-2f;
    y = y * m - 1.1514610310e-1f;
    y = y * m + 1.1676998740e-1f;
    y = y * m - 1.2420140846e-1f;
    y = y * m + 1.4249322787e-1f;
    y = y * m - 1.6668057665e-1f;
    y = y * m + 2.0000714765e-1f;
    y = y * m - 2.4999993993e-1f;
    y = y * m + 3.3333331174e-1f;
    y = y * m * z;
    float fe = (float)e;
    y += -2.12194440e-4f * fe;
    y += -0.5f * z;
    return m + y + 0.693359375f * fe;
}

/* One image: rows (K, h, W) holds its logits upsampled along the width (sp_hrows). For the output rows
   [oy0, oy1), blend two rows as the bilinear upsampling does (same rounding as sp_vargmax), take the
   softmax cross-entropy against target (H, W) int64 (ignore_index skipped), add the loss to *loss and the
   labelled pixels to *count, and add the gradient of the summed loss w.r.t. rows to drows (K, h, W).
   z, m, zt, inv, t: scratch of K*W, W, W, W floats and W int32. */
void sp_upce_rows(const float *rows, int64_t K, int64_t h, int64_t W, int64_t oy0, int64_t oy1, const int32_t *y0,
                  const int32_t *y1, const float *wy0, const float *wy1, const int64_t *target, int64_t ignore,
                  float *drows, double *loss, int64_t *count, float *z, float *m, float *zt, float *inv,
                  int32_t *t)
{
    double total = 0.0;
    int64_t labelled = 0;
    const int32_t ign = (int32_t)ignore;
    for (int64_t oy = oy0; oy < oy1; oy++) {
        const int64_t a = y0[oy], b = y1[oy];
        const float w0 = wy0[oy], w1 = wy1[oy];
        for (int64_t x = 0; x < W; x++) t[x] = (int32_t)target[oy * W + x]; /* 32-bit lanes like the floats */
        for (int64_t k = 0; k < K; k++) {
            const float *ra = rows + (k * h + a) * W, *rb = rows + (k * h + b) * W;
            float *zk = z + k * W;
            for (int64_t x = 0; x < W; x++) zk[x] = fmaf(ra[x], w0, rb[x] * w1);
        }
        for (int64_t x = 0; x < W; x++) {
            m[x] = z[x];
            zt[x] = t[x] == 0 ? z[x] : 0.0f;
        }
        for (int64_t k = 1; k < K; k++) {
            const float *zk = z + k * W;
            for (int64_t x = 0; x < W; x++) {
                m[x] = zk[x] > m[x] ? zk[x] : m[x];
                zt[x] = t[x] == (int32_t)k ? zk[x] : zt[x];
            }
        }
        for (int64_t x = 0; x < W; x++) inv[x] = 0.0f; /* the sum of exponentials, then its inverse */
        for (int64_t k = 0; k < K; k++) {
            float *zk = z + k * W;
            for (int64_t x = 0; x < W; x++) {
                float e = vexp(zk[x] - m[x]);
                zk[x] = e;
                inv[x] += e;
            }
        }
        float row_loss = 0.0f;
        int64_t row_count = 0;
        for (int64_t x = 0; x < W; x++) {
            int valid = t[x] != ign;
            float l = vlog(inv[x]) + m[x] - zt[x];
            row_loss += valid ? l : 0.0f;
            row_count += valid;
            inv[x] = valid ? 1.0f / inv[x] : 0.0f;
        }
        total += row_loss;
        labelled += row_count;
        for (int64_t k = 0; k < K; k++) {
            const float *ek = z + k * W;
            float *da = drows + (k * h + a) * W, *db = drows + (k * h + b) * W;
            for (int64_t x = 0; x < W; x++) {
                float g = ek[x] * inv[x] - ((t[x] != ign && t[x] == (int32_t)k) ? 1.0f : 0.0f);
                da[x] += w0 * g;
                db[x] += w1 * g;
            }
        }
    }
    *loss += total;
    *count += labelled;
}

/* The width half of the upsampling's gradient: dlogits (R, w) += the transpose of the column blend applied to
   drows (R, W), R = K * h rows. */
static void upce_hback(const float *drows, int64_t R, int64_t W, int64_t w, const int32_t *x0, const int32_t *x1,
                       const float *wx0, const float *wx1, float *dlogits)
{
    for (int64_t r = 0; r < R; r++) {
        const float *d = drows + r * W;
        float *o = dlogits + r * w;
        for (int64_t x = 0; x < W; x++) {
            o[x0[x]] += wx0[x] * d[x];
            o[x1[x]] += wx1[x] * d[x];
        }
    }
}

/* A batch of N images, one per thread at a time: rows (N, K, h, W) are the width-upsampled logits, target
   (N, H, W); loss[n] / count[n] get each image's summed CE and labelled pixels; dlogits (N, K, h, w), zeroed
   by the caller, the gradient of the summed loss. drows: N * K*h*W floats zeroed by the caller; scratch:
   N * (K + 4) * W floats. */
void sp_upce(const float *rows, int64_t N, int64_t K, int64_t h, int64_t W, int64_t H, int64_t w, const int32_t *y0,
             const int32_t *y1, const float *wy0, const float *wy1, const int32_t *x0, const int32_t *x1,
             const float *wx0, const float *wx1, const int64_t *target, int64_t ignore, float *drows, float *scratch,
             double *loss, int64_t *count, float *dlogits)
{
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t n = 0; n < N; n++) {
        const int64_t R = K * h;
        float *z = scratch + n * (K + 4) * W, *dr = drows + n * R * W;
        loss[n] = 0.0;
        count[n] = 0;
        sp_upce_rows(rows + n * R * W, K, h, W, 0, H, y0, y1, wy0, wy1, target + n * H * W, ignore, dr,
                     loss + n, count + n, z, z + K * W, z + (K + 1) * W, z + (K + 2) * W, (int32_t *)(z + (K + 3) * W));
        upce_hback(dr, R, W, w, x0, x1, wx0, wx1, dlogits + n * R * w);
    }
}

/* ------------------------------------------------------------------ bf16 depthwise forward with AVX512-BF16 */

/* 4. Depthwise convolution of bfloat16 NHWC tensors with the AVX512-BF16 dot product (vdpbf16ps): each
      instruction multiplies 16 channels by two taps at once (x_t * w_t + x_t' * w_t', products exact, summed in
      float32), on pairs of taps interleaved by unpacklo / unpackhi, so that a tap costs half an instruction per
      16 channels and no bfloat16 -> float32 conversion (the float32 kernel above spends three: two to convert,
      one to multiply-add). Weights are bfloat16 (what a bf16 model holds); the result is rounded to bfloat16
      once. Any kernel size, stride, zero padding and dilation; C a multiple of 32. */
#if defined(__AVX512BF16__) && defined(__AVX512BW__)
#include <immintrin.h>

int sp_has_dpbf16(void) { return 1; }

/* Packs wt (T = KH*KW taps, C) float32 (bfloat16 values) and bias (C, may be NULL) for sp_dw_fwd_dpbf16:
   wp (P = ceil(T / 2) pairs, C / 32 chunks, 2, 32) bfloat16, the pair's two taps interleaved in the order of
   unpacklo / unpackhi (a zero second tap when T is odd); bias_perm (C / 32, 2, 16) float32, the bias in the
   channel order of the two float32 accumulators. */
void sp_dw_pack_dpbf16(const float *wt, const float *bias, int64_t T, int64_t C, uint16_t *wp, float *bias_perm)
{
    const int64_t P = (T + 1) / 2, K = C / 32;
    for (int64_t p = 0; p < P; p++)
        for (int64_t k = 0; k < K; k++)
            for (int64_t h = 0; h < 2; h++)
                for (int64_t lane = 0; lane < 4; lane++)
                    for (int64_t i = 0; i < 4; i++)
                        for (int64_t q = 0; q < 2; q++) {
                            const int64_t t = 2 * p + q, c = 32 * k + lane * 8 + h * 4 + i;
                            wp[((p * K + k) * 2 + h) * 32 + lane * 8 + i * 2 + q] = f2b(t < T ? wt[t * C + c] : 0.0f);
                        }
    for (int64_t k = 0; k < K; k++)
        for (int64_t h = 0; h < 2; h++)
            for (int64_t lane = 0; lane < 4; lane++)
                for (int64_t i = 0; i < 4; i++)
                    bias_perm[(k * 2 + h) * 16 + lane * 4 + i] = bias ? bias[32 * k + lane * 8 + h * 4 + i] : 0.0f;
}

/* y (N, OH, OW, C) = the depthwise convolution of x (N, H, W, C) with the packed weights; zeros: C bfloat16
   zeros, read by the taps that fall in the padding. Rows of the output in parallel. Returns -1 when out of
   memory (nothing written), else 0. */
int sp_dw_fwd_dpbf16(const uint16_t *x, const uint16_t *wp, const float *bias_perm, uint16_t *y, const dwshape *s,
                     const uint16_t *zeros)
{
    const int64_t C = s->C, K = C / 32, T = s->KH * s->KW, P = (T + 1) / 2;
    uint16_t order[32]; /* vcvtne2ps2bf16(hi, lo) holds [lo | hi]: output channel j sits at order[j] */
    for (int j = 0; j < 32; j++) order[j] = (uint16_t)(j % 8 < 4 ? (j / 8) * 4 + j % 8 : 16 + (j / 8) * 4 + j % 8 - 4);
    const __m512i idx = _mm512_loadu_si512(order);
    const int nt = omp_get_max_threads();
    const uint16_t **all = malloc(sizeof(*all) * nt * s->OW * 2 * P); /* per thread: each column's tap rows */
    if (!all) return -1;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t q = 0; q < s->N * s->OH; q++) {
        const int64_t n = q / s->OH, oh = q % s->OH;
        const uint16_t *xn = x + n * s->H * s->W * C;
        uint16_t *yrow = y + q * s->OW * C;
        const uint16_t **ptrs = all + (size_t)omp_get_thread_num() * s->OW * 2 * P;
        for (int64_t ow = 0; ow < s->OW; ow++)
            for (int64_t t = 0; t < 2 * P; t++) {
                const uint16_t *ptr = zeros;
                if (t < T) {
                    const int64_t ih = oh * s->sh - s->ph + (t / s->KW) * s->dh, iw = ow * s->sw - s->pw + (t % s->KW) * s->dw;
                    if (ih >= 0 && ih < s->H && iw >= 0 && iw < s->W) ptr = xn + (ih * s->W + iw) * C;
                }
                ptrs[ow * 2 * P + t] = ptr;
            }
        for (int64_t k = 0; k < K; k++) {
            const uint16_t *wk = wp + k * 64;
            const __m512 b_lo = _mm512_loadu_ps(bias_perm + k * 32), b_hi = _mm512_loadu_ps(bias_perm + k * 32 + 16);
            for (int64_t ow = 0; ow < s->OW; ow++) {
                __m512 lo = b_lo, hi = b_hi;
                const uint16_t *const *pt = ptrs + ow * 2 * P;
                for (int64_t p = 0; p < P; p++) {
                    const __m512i a = _mm512_loadu_si512(pt[2 * p] + 32 * k), b = _mm512_loadu_si512(pt[2 * p + 1] + 32 * k);
                    const uint16_t *w = wk + p * K * 64;
                    lo = _mm512_dpbf16_ps(lo, (__m512bh)_mm512_unpacklo_epi16(a, b), (__m512bh)_mm512_loadu_si512(w));
                    hi = _mm512_dpbf16_ps(hi, (__m512bh)_mm512_unpackhi_epi16(a, b), (__m512bh)_mm512_loadu_si512(w + 32));
                }
                _mm512_storeu_si512(yrow + ow * C + 32 * k, _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(hi, lo)));
            }
        }
    }
    free(all);
    return 0;
}
#else
int sp_has_dpbf16(void) { return 0; }
void sp_dw_pack_dpbf16(const float *wt, const float *bias, int64_t T, int64_t C, uint16_t *wp, float *bias_perm) {}
int sp_dw_fwd_dpbf16(const uint16_t *x, const uint16_t *wp, const float *bias_perm, uint16_t *y, const dwshape *s,
                     const uint16_t *zeros) { return -1; }
#endif
