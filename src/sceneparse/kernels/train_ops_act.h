/* The kernels of train_ops.c that read and write activation tensors, written once for an element type:
   train_ops.c includes this file twice, with ACT_T float (suffix _f32) and uint16_t holding bfloat16 (_bf16).
   Arithmetic is float32 either way; LD / ST and VLD / VST convert an element / 16 elements. */

/* Per-channel sums of (x - ref) and (x - ref)^2 over the M rows of x (rows of C floats), into sum / sq
   (double, overwritten; returns -1 when out of memory). Blocks of 64 rows are summed in float, then folded into double: accurate and
   vectorised. Each thread sums its own rows; the threads' sums are added at the end, in thread order. */
int SUF(sp_bn_stats)(const ACT_T *x, int64_t C, int64_t M, const float *ref, double *sum, double *sq)
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
                const ACT_T *xr = x + i * C;
                for (int64_t c = 0; c < C; c++) {
                    float d = LD(xr + c) - ref[c];
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
void SUF(sp_bn_act_fwd)(const ACT_T *x, ACT_T *y, int64_t C, int64_t M, const float *scale, const float *shift, int act)
{
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < M; i++) {
        const ACT_T *xr = x + i * C;
        ACT_T *yr = y + i * C;
        if (act == ACT_RELU6) {
            for (int64_t c = 0; c < C; c++) {
                float z = LD(xr + c) * scale[c] + shift[c];
                z = z > 0.0f ? z : 0.0f;
                ST(yr + c, z < 6.0f ? z : 6.0f);
            }
        } else if (act == ACT_RELU) {
            for (int64_t c = 0; c < C; c++) {
                float z = LD(xr + c) * scale[c] + shift[c];
                ST(yr + c, z > 0.0f ? z : 0.0f);
            }
        } else {
            for (int64_t c = 0; c < C; c++) ST(yr + c, LD(xr + c) * scale[c] + shift[c]);
        }
    }
}

/* sg[c] = sum g, sgx[c] = sum g * (x - mean) over the M rows, g = dy masked by the activation (double,
   overwritten; per-thread sums as in sp_bn_stats). */
int SUF(sp_bn_act_bwd_reduce)(const ACT_T *x, const ACT_T *dy, int64_t C, int64_t M, const float *scale,
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
                const ACT_T *xr = x + i * C, *gr = dy + i * C;
                if (act == ACT_RELU6) {
                    for (int64_t c = 0; c < C; c++) {
                        float g = act_grad(LD(gr + c), LD(xr + c) * scale[c] + shift[c], ACT_RELU6);
                        bs[c] += g;
                        bx[c] += g * (LD(xr + c) - mean[c]);
                    }
                } else if (act == ACT_RELU) {
                    for (int64_t c = 0; c < C; c++) {
                        float g = act_grad(LD(gr + c), LD(xr + c) * scale[c] + shift[c], ACT_RELU);
                        bs[c] += g;
                        bx[c] += g * (LD(xr + c) - mean[c]);
                    }
                } else {
                    for (int64_t c = 0; c < C; c++) {
                        bs[c] += LD(gr + c);
                        bx[c] += LD(gr + c) * (LD(xr + c) - mean[c]);
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
void SUF(sp_bn_act_bwd_dx)(const ACT_T *x, const ACT_T *dy, ACT_T *dx, int64_t C, int64_t M, const float *scale,
                      const float *shift, const float *a, const float *b, const float *d, int act)
{
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < M; i++) {
        const ACT_T *xr = x + i * C, *gr = dy + i * C;
        ACT_T *o = dx + i * C;
        if (act == ACT_RELU6) {
            for (int64_t c = 0; c < C; c++)
                ST(o + c, a[c] * act_grad(LD(gr + c), LD(xr + c) * scale[c] + shift[c], ACT_RELU6) + b[c] * LD(xr + c) + d[c]);
        } else if (act == ACT_RELU) {
            for (int64_t c = 0; c < C; c++)
                ST(o + c, a[c] * act_grad(LD(gr + c), LD(xr + c) * scale[c] + shift[c], ACT_RELU) + b[c] * LD(xr + c) + d[c]);
        } else {
            for (int64_t c = 0; c < C; c++) ST(o + c, a[c] * LD(gr + c) + b[c] * LD(xr + c) + d[c]);
        }
    }
}

/* acc[c] (c in [0, C)) = init[c] + sum over the taps of a[ao[t] + c] * b[bo[t] + c], written to out. */
static inline void SUF(tap_dot)(const ACT_T *a, const int64_t *ao, const float *b, const int64_t *bo, int64_t taps,
                                int64_t C, const float *init, ACT_T *out)
{
    int64_t c0 = 0;
    for (; c0 + 4 * VL <= C; c0 += 4 * VL) {
        v16 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
        if (init) {
            s0 = vld(init + c0); s1 = vld(init + c0 + VL); s2 = vld(init + c0 + 2 * VL); s3 = vld(init + c0 + 3 * VL);
        }
        for (int64_t t = 0; t < taps; t++) {
            const ACT_T *x = a + ao[t] + c0;
            const float *w = b + bo[t] + c0;
            s0 += VLD(x) * vld(w);
            s1 += VLD(x + VL) * vld(w + VL);
            s2 += VLD(x + 2 * VL) * vld(w + 2 * VL);
            s3 += VLD(x + 3 * VL) * vld(w + 3 * VL);
        }
        VST(out + c0, s0); VST(out + c0 + VL, s1); VST(out + c0 + 2 * VL, s2); VST(out + c0 + 3 * VL, s3);
    }
    for (; c0 + VL <= C; c0 += VL) {
        v16 s0 = {0};
        if (init) s0 = vld(init + c0);
        for (int64_t t = 0; t < taps; t++) s0 += VLD(a + ao[t] + c0) * vld(b + bo[t] + c0);
        VST(out + c0, s0);
    }
    for (; c0 < C; c0++) {
        float s0 = init ? init[c0] : 0.0f;
        for (int64_t t = 0; t < taps; t++) s0 += LD(a + ao[t] + c0) * b[bo[t] + c0];
        ST(out + c0, s0);
    }
}

/* Register-blocked kernels for the interior columns [lo, hi) of one row, K x K taps: xrow points at the
   input row of the first tap (column 0), off[] are the taps' offsets from a column. The forward keeps the
   K*K weight vectors of 16 channels in registers and computes 4 output columns at a time (4 independent
   accumulator chains); the weight gradient keeps K*K accumulators in registers over the row. */
#define DW_BLOCKED_T(K)                                                                                        \
    static void SUF(dw_fwd_cols_##K)(const ACT_T *xrow, const float *wt, const float *bias, ACT_T *yrow,       \
                                     const dwshape *s, int64_t lo, int64_t hi)                                \
    {                                                                                                         \
        const int64_t C = s->C, step = s->sw * C;                                                             \
        int64_t off[K * K];                                                                                   \
        for (int i = 0; i < K; i++)                                                                           \
            for (int j = 0; j < K; j++) off[i * K + j] = (i * s->dh * s->W + j * s->dw) * C;                  \
        for (int64_t c0 = 0; c0 < C; c0 += VL) {                                                              \
            v16 w[K * K], b0 = {0};                                                                           \
            _Pragma("GCC unroll 25") for (int t = 0; t < K * K; t++) w[t] = vld(wt + t * C + c0);            \
            if (bias) b0 = vld(bias + c0);                                                                    \
            int64_t ow = lo;                                                                                  \
            for (; ow + 4 <= hi; ow += 4) {                                                                   \
                const ACT_T *p = xrow + (ow * s->sw - s->pw) * C + c0;                                        \
                v16 a0 = b0, a1 = b0, a2 = b0, a3 = b0;                                                       \
                _Pragma("GCC unroll 25") for (int t = 0; t < K * K; t++) {                                   \
                    a0 += w[t] * VLD(p + off[t]);                                                             \
                    a1 += w[t] * VLD(p + off[t] + step);                                                      \
                    a2 += w[t] * VLD(p + off[t] + 2 * step);                                                  \
                    a3 += w[t] * VLD(p + off[t] + 3 * step);                                                  \
                }                                                                                             \
                ACT_T *o = yrow + ow * C + c0;                                                                \
                VST(o, a0);                                                                                   \
                VST(o + C, a1);                                                                               \
                VST(o + 2 * C, a2);                                                                           \
                VST(o + 3 * C, a3);                                                                           \
            }                                                                                                 \
            for (; ow < hi; ow++) {                                                                           \
                const ACT_T *p = xrow + (ow * s->sw - s->pw) * C + c0;                                        \
                v16 a0 = b0;                                                                                  \
                _Pragma("GCC unroll 25") for (int t = 0; t < K * K; t++) a0 += w[t] * VLD(p + off[t]);       \
                VST(yrow + ow * C + c0, a0);                                                                  \
            }                                                                                                 \
        }                                                                                                     \
    }                                                                                                         \
    static void SUF(dw_wgrad_cols_##K)(const ACT_T *xrow, const ACT_T *grow, float *dwt, const dwshape *s,     \
                                       int64_t lo, int64_t hi)                                                \
    {                                                                                                         \
        const int64_t C = s->C;                                                                               \
        int64_t off[K * K];                                                                                   \
        for (int i = 0; i < K; i++)                                                                           \
            for (int j = 0; j < K; j++) off[i * K + j] = (i * s->dh * s->W + j * s->dw) * C;                  \
        for (int64_t c0 = 0; c0 < C; c0 += VL) {                                                              \
            v16 acc[K * K];                                                                                   \
            _Pragma("GCC unroll 25") for (int t = 0; t < K * K; t++) acc[t] = (v16){0};                      \
            for (int64_t ow = lo; ow < hi; ow++) {                                                            \
                const ACT_T *p = xrow + (ow * s->sw - s->pw) * C + c0;                                        \
                v16 g = VLD(grow + ow * C + c0);                                                              \
                _Pragma("GCC unroll 25") for (int t = 0; t < K * K; t++) acc[t] += g * VLD(p + off[t]);      \
            }                                                                                                 \
            _Pragma("GCC unroll 25") for (int t = 0; t < K * K; t++)                                         \
                vst(dwt + t * C + c0, vld(dwt + t * C + c0) + acc[t]);                                        \
        }                                                                                                     \
    }
DW_BLOCKED_T(3)
DW_BLOCKED_T(5)
#undef DW_BLOCKED_T

/* y[n, oh, ow, c] = bias[c] + sum_{i,j} x[n, oh*sh - ph + i*dh, ow*sw - pw + j*dw, c] * wt[i*KW + j, c]
   over all output rows q = n * OH + oh. wt is (KH*KW, C); bias may be NULL. */
void SUF(sp_dw_fwd)(const ACT_T *x, const float *wt, const float *bias, ACT_T *y, const dwshape *s)
{
    int64_t lo, hi;
    interior_cols(s, &lo, &hi);
#pragma omp parallel for schedule(static)
    for (int64_t q = 0; q < s->N * s->OH; q++) {
        int64_t xo[s->KH * s->KW], wo[s->KH * s->KW];
        int64_t n = q / s->OH, oh = q % s->OH;
        const ACT_T *xn = x + n * s->H * s->W * s->C;
        ACT_T *yrow = y + q * s->OW * s->C;
        int blocked = blocked_row(s, oh);
        for (int64_t ow = 0; ow < s->OW; ow++) {
            if (blocked && ow == lo && lo < hi) {
                const ACT_T *xrow = xn + (oh * s->sh - s->ph) * s->W * s->C;
                if (s->KH == 3)
                    SUF(dw_fwd_cols_3)(xrow, wt, bias, yrow, s, lo, hi);
                else
                    SUF(dw_fwd_cols_5)(xrow, wt, bias, yrow, s, lo, hi);
                ow = hi - 1;
                continue;
            }
            int64_t taps = fwd_taps(s, oh, ow, xo, wo);
            SUF(tap_dot)(xn, xo, wt, wo, taps, s->C, bias, yrow + ow * s->C);
        }
    }
}

/* dx[n, ih, iw, c] = sum of dy[n, oh, ow, c] * wt[i*KW + j, c] over the taps (i, j) for which
   ih = oh*sh - ph + i*dh and iw = ow*sw - pw + j*dw, over all input rows q = n * H + ih. */
void SUF(sp_dw_bwd_input)(const ACT_T *dy, const float *wt, ACT_T *dx, const dwshape *s)
{
#pragma omp parallel for schedule(static)
    for (int64_t q = 0; q < s->N * s->H; q++) {
        int64_t go[s->KH * s->KW], wo[s->KH * s->KW];
        int64_t n = q / s->H, ih = q % s->H;
        const ACT_T *gn = dy + n * s->OH * s->OW * s->C;
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
            SUF(tap_dot)(gn, go, wt, wo, taps, s->C, NULL, dx + (q * s->W + iw) * s->C);
        }
    }
}

/* Rows [q0, q1) of the weight gradient: dwt[i*KW + j, c] += dy[n, oh, ow, c] * x[n, ih, iw, c] over the
   output positions of rows q = n * OH + oh (the taps as in sp_dw_fwd). */
static void SUF(dw_bwd_weight_rows)(const ACT_T *x, const ACT_T *dy, float *dwt, const dwshape *s, int64_t q0, int64_t q1)
{
    const int64_t C = s->C;
    int64_t xo[s->KH * s->KW], wo[s->KH * s->KW];
    int64_t lo, hi;
    interior_cols(s, &lo, &hi);
    for (int64_t q = q0; q < q1; q++) {
        int64_t n = q / s->OH, oh = q % s->OH;
        const ACT_T *xn = x + n * s->H * s->W * C;
        int blocked = blocked_row(s, oh);
        for (int64_t ow = 0; ow < s->OW; ow++) {
            if (blocked && ow == lo && lo < hi) {
                const ACT_T *xrow = xn + (oh * s->sh - s->ph) * s->W * C, *grow = dy + q * s->OW * C;
                if (s->KH == 3)
                    SUF(dw_wgrad_cols_3)(xrow, grow, dwt, s, lo, hi);
                else
                    SUF(dw_wgrad_cols_5)(xrow, grow, dwt, s, lo, hi);
                ow = hi - 1;
                continue;
            }
            const ACT_T *g = dy + (q * s->OW + ow) * C;
            int64_t taps = fwd_taps(s, oh, ow, xo, wo);
            int64_t c0 = 0;
            for (; c0 + 4 * VL <= C; c0 += 4 * VL) {
                v16 g0 = VLD(g + c0), g1 = VLD(g + c0 + VL), g2 = VLD(g + c0 + 2 * VL), g3 = VLD(g + c0 + 3 * VL);
                for (int64_t t = 0; t < taps; t++) {
                    const ACT_T *xr = xn + xo[t] + c0;
                    float *acc = dwt + wo[t] + c0;
                    vst(acc, vld(acc) + g0 * VLD(xr));
                    vst(acc + VL, vld(acc + VL) + g1 * VLD(xr + VL));
                    vst(acc + 2 * VL, vld(acc + 2 * VL) + g2 * VLD(xr + 2 * VL));
                    vst(acc + 3 * VL, vld(acc + 3 * VL) + g3 * VLD(xr + 3 * VL));
                }
            }
            for (; c0 + VL <= C; c0 += VL) {
                v16 g0 = VLD(g + c0);
                for (int64_t t = 0; t < taps; t++) {
                    float *acc = dwt + wo[t] + c0;
                    vst(acc, vld(acc) + g0 * VLD(xn + xo[t] + c0));
                }
            }
            for (; c0 < C; c0++)
                for (int64_t t = 0; t < taps; t++) dwt[wo[t] + c0] += LD(g + c0) * LD(xn + xo[t] + c0);
        }
    }
}

/* dwt (KH*KW, C) = the weight gradient summed over all output positions. scratch: threads * KH*KW*C floats
   (one partial sum per thread, added at the end in thread order: deterministic for a thread count). */
void SUF(sp_dw_bwd_weight)(const ACT_T *x, const ACT_T *dy, float *dwt, const dwshape *s, float *scratch, int64_t threads)
{
    const int64_t T = s->KH * s->KW * s->C, rows = s->N * s->OH;
#pragma omp parallel num_threads(threads)
    {
        int64_t me = omp_get_thread_num(), nt = omp_get_num_threads();
        float *acc = scratch + me * T;
        memset(acc, 0, T * sizeof(float));
        int64_t step = (rows + nt - 1) / nt, a = me * step, b = a + step < rows ? a + step : rows;
        if (a < b) SUF(dw_bwd_weight_rows)(x, dy, acc, s, a, b);
#pragma omp barrier
#pragma omp for schedule(static)
        for (int64_t i = 0; i < T; i++) {
            float v = 0.0f;
            for (int64_t t = 0; t < nt; t++) v += scratch[t * T + i];
            dwt[i] = v;
        }
    }
}

