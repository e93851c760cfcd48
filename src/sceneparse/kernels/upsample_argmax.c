/* Fused bilinear upsampling (align_corners=False) + argmax over classes, float32 in, int64 class ids out.
 *
 * Same index and weight rule as PyTorch's CPU upsample_bilinear2d (ATen/native/UpSample.h:
 * src = scale * (dst + 0.5) - 0.5 clamped at 0, lambda1 = src - floor(src), lambda0 = 1 - lambda1) and the
 * same two-tap arithmetic, written with explicit fused multiply-adds so that the compiler cannot reorder it
 * (built with -ffp-contract=off). Separable: each low-resolution row is first upsampled along the width
 * (K * h * W values), then every output row blends two of those rows per class and keeps the running
 * maximum (strictly greater wins: ties keep the lower class id, as torch.argmax does). The (K, H, W) float
 * tensor is never built.
 *
 * Called through ctypes from sceneparse/kernels/native.py, which also splits the rows over threads.
 */
#include <math.h>
#include <stdint.h>

void sp_axis(int64_t in, int64_t out, int32_t *i0, int32_t *i1, float *l0, float *l1) {
  const float scale = (float)in / (float)out;
  for (int64_t o = 0; o < out; ++o) {
    if (in == out) { i0[o] = i1[o] = (int32_t)o; l0[o] = 1.f; l1[o] = 0.f; continue; }
    float src = fmaf(scale, (float)o + 0.5f, -0.5f);
    if (src < 0.f) src = 0.f;
    int64_t k = (int64_t)floorf(src);
    if (k > in - 1) k = in - 1;
    float lam = src - (float)k;
    lam = lam < 0.f ? 0.f : (lam > 1.f ? 1.f : lam);
    i0[o] = (int32_t)k;
    i1[o] = (int32_t)(k + (k < in - 1 ? 1 : 0));
    l1[o] = lam;
    l0[o] = 1.f - lam;
  }
}

/* rows [r0, r1) of the (K*h, w) input -> (K*h, W) width-upsampled rows */
void sp_hrows(const float *src, int64_t w, int64_t W, int64_t r0, int64_t r1, const int32_t *x0,
              const int32_t *x1, const float *wx0, const float *wx1, float *rows) {
  for (int64_t r = r0; r < r1; ++r) {
    const float *a = src + r * w;
    float *o = rows + r * W;
    for (int64_t j = 0; j < W; ++j) o[j] = fmaf(a[x0[j]], wx0[j], a[x1[j]] * wx1[j]);
  }
}

/* output rows [yb, ye) of one image: rows is (K, h, W), out is (H, W); best and idx are W-long scratch */
void sp_vargmax(const float *rows, int64_t K, int64_t h, int64_t W, int64_t yb, int64_t ye,
                const int32_t *y0, const int32_t *y1, const float *wy0, const float *wy1, int64_t *out,
                float *best, int32_t *idx) {
  for (int64_t y = yb; y < ye; ++y) {
    const float a0 = wy0[y], a1 = wy1[y];
    for (int64_t k = 0; k < K; ++k) {
      const float *p = rows + (k * h + y0[y]) * W, *q = rows + (k * h + y1[y]) * W;
      if (k == 0) {
        for (int64_t j = 0; j < W; ++j) { best[j] = fmaf(p[j], a0, q[j] * a1); idx[j] = 0; }
      } else {
        const int32_t kk = (int32_t)k;
        for (int64_t j = 0; j < W; ++j) {
          const float v = fmaf(p[j], a0, q[j] * a1);
          const int g = v > best[j];
          best[j] = g ? v : best[j];
          idx[j] = g ? kk : idx[j];
        }
      }
    }
    int64_t *o = out + y * W;
    for (int64_t j = 0; j < W; ++j) o[j] = idx[j];
  }
}
