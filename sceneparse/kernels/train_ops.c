/* Training kernels for channels_last (NHWC) float32 tensors on the CPU, loaded by native.py.

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

/* Per-channel sums of (x - ref) and (x - ref)^2 over the M rows of x (rows of C floats), into sum / sq
   (double, overwritten; returns -1 when out of memory). Blocks of 64 rows are summed in float, then folded into double: accurate and
   vectorised. Each thread sums its own rows; the threads' sums are added at the end, in thread order. */
int sp_bn_stats(const float *x, int64_t C, int64_t M, const float *ref, double *sum, double *sq)
{
    const int nt = omp_get_max_threads();
    double *part = calloc((size_t)nt * 2 * C, sizeof(double));
    if (!part) return -1;
#pragma omp parallel num_threads(nt)
    {
        float bs[C], bq[C];
        double *ts = part + (size_t)omp_get_thread_num() * 2 * C, *tq = ts + C;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < M; r += 64) {
            int64_t e = r + 64 < M ? r + 64 : M;
            for (int64_t c = 0; c < C; c++) bs[c] = bq[c] = 0.0f;
            for (int64_t i = r; i < e; i++) {
                const float *xr = x + i * C;
                for (int64_t c = 0; c < C; c++) {
                    float d = xr[c] - ref[c];
                    bs[c] += d;
                    bq[c] += d * d;
                }
            }
            for (int64_t c = 0; c < C; c++) {
                ts[c] += bs[c];
                tq[c] += bq[c];
            }
        }
    }
    partial_sums(part, nt, C, sum, sq);
    return 0;
}

/* y = act(x * scale + shift) over the M rows. */
void sp_bn_act_fwd(const float *x, float *y, int64_t C, int64_t M, const float *scale, const float *shift, int act)
{
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < M; i++) {
        const float *xr = x + i * C;
        float *yr = y + i * C;
        if (act == ACT_RELU6) {
            for (int64_t c = 0; c < C; c++) {
                float z = xr[c] * scale[c] + shift[c];
                z = z > 0.0f ? z : 0.0f;
                yr[c] = z < 6.0f ? z : 6.0f;
            }
        } else if (act == ACT_RELU) {
            for (int64_t c = 0; c < C; c++) {
                float z = xr[c] * scale[c] + shift[c];
                yr[c] = z > 0.0f ? z : 0.0f;
            }
        } else {
            for (int64_t c = 0; c < C; c++) yr[c] = xr[c] * scale[c] + shift[c];
        }
    }
}

/* The activation's gradient mask recomputed from the input: g = dy where the activation passes it. As
   PyTorch: ReLU passes where its output is > 0, ReLU6 (hardtanh) where 0 < output < 6. */
static inline float act_grad(float dy, float z, int act)
{
    if (act == ACT_RELU6) return (z > 0.0f && z < 6.0f) ? dy : 0.0f;
    if (act == ACT_RELU) return z > 0.0f ? dy : 0.0f;
    return dy;
}

/* sg[c] = sum g, sgx[c] = sum g * (x - mean) over the M rows, g = dy masked by the activation (double,
   overwritten; per-thread sums as in sp_bn_stats). */
int sp_bn_act_bwd_reduce(const float *x, const float *dy, int64_t C, int64_t M, const float *scale,
                          const float *shift, const float *mean, int act, double *sg, double *sgx)
{
    const int nt = omp_get_max_threads();
    double *part = calloc((size_t)nt * 2 * C, sizeof(double));
    if (!part) return -1;
#pragma omp parallel num_threads(nt)
    {
        float bs[C], bx[C];
        double *ts = part + (size_t)omp_get_thread_num() * 2 * C, *tx = ts + C;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < M; r += 64) {
            int64_t e = r + 64 < M ? r + 64 : M;
            for (int64_t c = 0; c < C; c++) bs[c] = bx[c] = 0.0f;
            for (int64_t i = r; i < e; i++) {
                const float *xr = x + i * C, *gr = dy + i * C;
                if (act == ACT_RELU6) {
                    for (int64_t c = 0; c < C; c++) {
                        float g = act_grad(gr[c], xr[c] * scale[c] + shift[c], ACT_RELU6);
                        bs[c] += g;
                        bx[c] += g * (xr[c] - mean[c]);
                    }
                } else if (act == ACT_RELU) {
                    for (int64_t c = 0; c < C; c++) {
                        float g = act_grad(gr[c], xr[c] * scale[c] + shift[c], ACT_RELU);
                        bs[c] += g;
                        bx[c] += g * (xr[c] - mean[c]);
                    }
                } else {
                    for (int64_t c = 0; c < C; c++) {
                        bs[c] += gr[c];
                        bx[c] += gr[c] * (xr[c] - mean[c]);
                    }
                }
            }
            for (int64_t c = 0; c < C; c++) {
                ts[c] += bs[c];
                tx[c] += bx[c];
            }
        }
    }
    partial_sums(part, nt, C, sg, sgx);
    return 0;
}

/* dx = a * g + b * x + d over the M rows (the BatchNorm input gradient rearranged per channel). */
void sp_bn_act_bwd_dx(const float *x, const float *dy, float *dx, int64_t C, int64_t M, const float *scale,
                      const float *shift, const float *a, const float *b, const float *d, int act)
{
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < M; i++) {
        const float *xr = x + i * C, *gr = dy + i * C;
        float *o = dx + i * C;
        if (act == ACT_RELU6) {
            for (int64_t c = 0; c < C; c++)
                o[c] = a[c] * act_grad(gr[c], xr[c] * scale[c] + shift[c], ACT_RELU6) + b[c] * xr[c] + d[c];
        } else if (act == ACT_RELU) {
            for (int64_t c = 0; c < C; c++)
                o[c] = a[c] * act_grad(gr[c], xr[c] * scale[c] + shift[c], ACT_RELU) + b[c] * xr[c] + d[c];
        } else {
            for (int64_t c = 0; c < C; c++) o[c] = a[c] * gr[c] + b[c] * xr[c] + d[c];
        }
    }
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

/* acc[c] (c in [0, C)) = init[c] + sum over the taps of a[ao[t] + c] * b[bo[t] + c], written to out. */
static inline void tap_dot(const float *a, const int64_t *ao, const float *b, const int64_t *bo, int64_t taps,
                           int64_t C, const float *init, float *out)
{
    int64_t c0 = 0;
    for (; c0 + 4 * VL <= C; c0 += 4 * VL) {
        v16 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
        if (init) {
            s0 = vld(init + c0); s1 = vld(init + c0 + VL); s2 = vld(init + c0 + 2 * VL); s3 = vld(init + c0 + 3 * VL);
        }
        for (int64_t t = 0; t < taps; t++) {
            const float *x = a + ao[t] + c0, *w = b + bo[t] + c0;
            s0 += vld(x) * vld(w);
            s1 += vld(x + VL) * vld(w + VL);
            s2 += vld(x + 2 * VL) * vld(w + 2 * VL);
            s3 += vld(x + 3 * VL) * vld(w + 3 * VL);
        }
        vst(out + c0, s0); vst(out + c0 + VL, s1); vst(out + c0 + 2 * VL, s2); vst(out + c0 + 3 * VL, s3);
    }
    for (; c0 + VL <= C; c0 += VL) {
        v16 s0 = {0};
        if (init) s0 = vld(init + c0);
        for (int64_t t = 0; t < taps; t++) s0 += vld(a + ao[t] + c0) * vld(b + bo[t] + c0);
        vst(out + c0, s0);
    }
    for (; c0 < C; c0++) {
        float s0 = init ? init[c0] : 0.0f;
        for (int64_t t = 0; t < taps; t++) s0 += a[ao[t] + c0] * b[bo[t] + c0];
        out[c0] = s0;
    }
}

/* y[n, oh, ow, c] = bias[c] + sum_{i,j} x[n, oh*sh - ph + i*dh, ow*sw - pw + j*dw, c] * wt[i*KW + j, c]
   over all output rows q = n * OH + oh. wt is (KH*KW, C); bias may be NULL. */
void sp_dw_fwd(const float *x, const float *wt, const float *bias, float *y, const dwshape *s)
{
#pragma omp parallel for schedule(static)
    for (int64_t q = 0; q < s->N * s->OH; q++) {
        int64_t xo[s->KH * s->KW], wo[s->KH * s->KW];
        int64_t n = q / s->OH, oh = q % s->OH;
        const float *xn = x + n * s->H * s->W * s->C;
        for (int64_t ow = 0; ow < s->OW; ow++) {
            int64_t taps = fwd_taps(s, oh, ow, xo, wo);
            tap_dot(xn, xo, wt, wo, taps, s->C, bias, y + (q * s->OW + ow) * s->C);
        }
    }
}

/* dx[n, ih, iw, c] = sum of dy[n, oh, ow, c] * wt[i*KW + j, c] over the taps (i, j) for which
   ih = oh*sh - ph + i*dh and iw = ow*sw - pw + j*dw, over all input rows q = n * H + ih. */
void sp_dw_bwd_input(const float *dy, const float *wt, float *dx, const dwshape *s)
{
#pragma omp parallel for schedule(static)
    for (int64_t q = 0; q < s->N * s->H; q++) {
        int64_t go[s->KH * s->KW], wo[s->KH * s->KW];
        int64_t n = q / s->H, ih = q % s->H;
        const float *gn = dy + n * s->OH * s->OW * s->C;
        for (int64_t iw = 0; iw < s->W; iw++) {
            int64_t taps = 0;
            for (int64_t i = 0; i < s->KH; i++) {
                int64_t t = ih + s->ph - i * s->dh;
                if (t < 0 || t % s->sh) continue;
                int64_t oh = t / s->sh;
                if (oh >= s->OH) continue;
                for (int64_t j = 0; j < s->KW; j++) {
                    int64_t u = iw + s->pw - j * s->dw;
                    if (u < 0 || u % s->sw) continue;
                    int64_t ow = u / s->sw;
                    if (ow >= s->OW) continue;
                    go[taps] = (oh * s->OW + ow) * s->C;
                    wo[taps++] = (i * s->KW + j) * s->C;
                }
            }
            tap_dot(gn, go, wt, wo, taps, s->C, NULL, dx + (q * s->W + iw) * s->C);
        }
    }
}

/* Rows [q0, q1) of the weight gradient: dwt[i*KW + j, c] += dy[n, oh, ow, c] * x[n, ih, iw, c] over the
   output positions of rows q = n * OH + oh (the taps as in sp_dw_fwd). */
static void dw_bwd_weight_rows(const float *x, const float *dy, float *dwt, const dwshape *s, int64_t q0, int64_t q1)
{
    const int64_t C = s->C;
    int64_t xo[s->KH * s->KW], wo[s->KH * s->KW];
    for (int64_t q = q0; q < q1; q++) {
        int64_t n = q / s->OH, oh = q % s->OH;
        const float *xn = x + n * s->H * s->W * C;
        for (int64_t ow = 0; ow < s->OW; ow++) {
            const float *g = dy + (q * s->OW + ow) * C;
            int64_t taps = fwd_taps(s, oh, ow, xo, wo);
            int64_t c0 = 0;
            for (; c0 + 4 * VL <= C; c0 += 4 * VL) {
                v16 g0 = vld(g + c0), g1 = vld(g + c0 + VL), g2 = vld(g + c0 + 2 * VL), g3 = vld(g + c0 + 3 * VL);
                for (int64_t t = 0; t < taps; t++) {
                    const float *xr = xn + xo[t] + c0;
                    float *acc = dwt + wo[t] + c0;
                    vst(acc, vld(acc) + g0 * vld(xr));
                    vst(acc + VL, vld(acc + VL) + g1 * vld(xr + VL));
                    vst(acc + 2 * VL, vld(acc + 2 * VL) + g2 * vld(xr + 2 * VL));
                    vst(acc + 3 * VL, vld(acc + 3 * VL) + g3 * vld(xr + 3 * VL));
                }
            }
            for (; c0 + VL <= C; c0 += VL) {
                v16 g0 = vld(g + c0);
                for (int64_t t = 0; t < taps; t++) {
                    float *acc = dwt + wo[t] + c0;
                    vst(acc, vld(acc) + g0 * vld(xn + xo[t] + c0));
                }
            }
            for (; c0 < C; c0++)
                for (int64_t t = 0; t < taps; t++) dwt[wo[t] + c0] += g[c0] * xn[xo[t] + c0];
        }
    }
}

/* dwt (KH*KW, C) = the weight gradient summed over all output positions. scratch: threads * KH*KW*C floats
   (one partial sum per thread, added at the end in thread order: deterministic for a thread count). */
void sp_dw_bwd_weight(const float *x, const float *dy, float *dwt, const dwshape *s, float *scratch, int64_t threads)
{
    const int64_t T = s->KH * s->KW * s->C, rows = s->N * s->OH;
#pragma omp parallel num_threads(threads)
    {
        int64_t me = omp_get_thread_num(), nt = omp_get_num_threads();
        float *acc = scratch + me * T;
        memset(acc, 0, T * sizeof(float));
        int64_t step = (rows + nt - 1) / nt, a = me * step, b = a + step < rows ? a + step : rows;
        if (a < b) dw_bwd_weight_rows(x, dy, acc, s, a, b);
#pragma omp barrier
#pragma omp for schedule(static)
        for (int64_t i = 0; i < T; i++) {
            float v = 0.0f;
            for (int64_t t = 0; t < nt; t++) v += scratch[t * T + i];
            dwt[i] = v;
        }
    }
}

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
   z, m, s, inv: scratch of K*W, W, W, W floats. */
void sp_upce_rows(const float *rows, int64_t K, int64_t h, int64_t W, int64_t oy0, int64_t oy1, const int32_t *y0,
                  const int32_t *y1, const float *wy0, const float *wy1, const int64_t *target, int64_t ignore,
                  float *drows, double *loss, int64_t *count, float *z, float *m, float *zt, float *inv)
{
    double total = 0.0;
    int64_t labelled = 0;
    for (int64_t oy = oy0; oy < oy1; oy++) {
        const int64_t a = y0[oy], b = y1[oy];
        const float w0 = wy0[oy], w1 = wy1[oy];
        const int64_t *t = target + oy * W;
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
                zt[x] = t[x] == k ? zk[x] : zt[x];
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
            int valid = t[x] != ignore;
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
                float g = ek[x] * inv[x] - ((t[x] == k) ? 1.0f : 0.0f);
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
   N * (K + 3) * W floats. */
void sp_upce(const float *rows, int64_t N, int64_t K, int64_t h, int64_t W, int64_t H, int64_t w, const int32_t *y0,
             const int32_t *y1, const float *wy0, const float *wy1, const int32_t *x0, const int32_t *x1,
             const float *wx0, const float *wx1, const int64_t *target, int64_t ignore, float *drows, float *scratch,
             double *loss, int64_t *count, float *dlogits)
{
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t n = 0; n < N; n++) {
        const int64_t R = K * h;
        float *z = scratch + n * (K + 3) * W, *dr = drows + n * R * W;
        loss[n] = 0.0;
        count[n] = 0;
        sp_upce_rows(rows + n * R * W, K, h, W, 0, H, y0, y1, wy0, wy1, target + n * H * W, ignore, dr,
                     loss + n, count + n, z, z + K * W, z + (K + 1) * W, z + (K + 2) * W);
        upce_hback(dr, R, W, w, x0, x1, wx0, wx1, dlogits + n * R * w);
    }
}
