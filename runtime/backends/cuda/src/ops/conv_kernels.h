// Device functors of the convolution and pooling operators (conv.h). C++17; see hd.h.
//
// Conv2d works on a column matrix of `m` consecutive images of a chunk: rows (input channel,
// kernel row, kernel column), columns (image i, output pixel p) at i·pixels + p, so a row is
// ld = m·pixels long — the layout of cpu/src/conv.cc. Every functor here is a gather (one call per
// element it writes, looping over what that element sums), so none needs atomics.
#pragma once

#include "hetsynth/runtime/ops/hd.h"
#include "hetsynth/runtime/ops/pool_window.h"

namespace hetsynth::runtime::gpu {

// Sizes of one convolution (cpu/src/conv.cc's ConvDims).
struct ConvGeom {
  int64_t ci = 0, h = 0, w = 0;  // input image [ci, h, w]
  int64_t co = 0, k = 0;         // weight [co, ci/groups, k, k] (conv.h: groups in Gemm batches)
  int64_t stride = 1, pad = 0;
  int64_t ho = 0, wo = 0;        // output image [co, ho, wo]
};

// col[r, i·pixels + p] = image i's input pixel under kernel tap r at output pixel p (0 in the
// padding); one call per column-matrix entry (rows · m · pixels), x the chunk's first image.
struct ConvIm2Col {
  ConvGeom g;
  int64_t m;  // images in the chunk
  const float* x;
  float* col;
  HS_HD void operator()(int64_t e) const {
    const int64_t np = g.ho * g.wo, ld = m * np;
    const int64_t r = e / ld, q = e - r * ld;
    const int64_t i = q / np, p = q - i * np;
    const int64_t oh = p / g.wo, ow = p - oh * g.wo;
    const int64_t kw = r % g.k, kh = (r / g.k) % g.k, c = r / (g.k * g.k);
    const int64_t ih = oh * g.stride - g.pad + kh, iw = ow * g.stride - g.pad + kw;
    col[e] = (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w) ? 0.0f
                                                         : x[((i * g.ci + c) * g.h + ih) * g.w + iw];
  }
};

// The adjoint of ConvIm2Col as a gather: one call per input element of the chunk (m·ci·h·w),
// adding up the column entries read from it, in (kh, kw) order like cpu/src/conv.cc's Col2ImAdd.
struct ConvCol2Im {
  ConvGeom g;
  int64_t m;
  const float* dcol;
  float* dx;  // the chunk's first image
  HS_HD void operator()(int64_t e) const {
    const int64_t np = g.ho * g.wo, ld = m * np;
    const int64_t iw = e % g.w, ih = (e / g.w) % g.h, c = (e / (g.w * g.h)) % g.ci;
    const int64_t i = e / (g.w * g.h * g.ci);
    float acc = 0.0f;
    for (int64_t kh = 0; kh < g.k; ++kh) {
      const int64_t th = ih + g.pad - kh;  // oh · stride
      if (th < 0 || th % g.stride != 0 || th / g.stride >= g.ho) continue;
      const int64_t oh = th / g.stride;
      for (int64_t kw = 0; kw < g.k; ++kw) {
        const int64_t tw = iw + g.pad - kw;  // ow · stride
        if (tw < 0 || tw % g.stride != 0 || tw / g.stride >= g.wo) continue;
        const int64_t ow = tw / g.stride;
        acc += dcol[((c * g.k + kh) * g.k + kw) * ld + i * np + oh * g.wo + ow];
      }
    }
    dx[e] += acc;
  }
};

// The chunk's output images from the Gemm's [co, m·pixels] result, plus the bias (nullptr: none):
// y[i, o, p] = mat[o, i·pixels + p] + bias[o]; one call per output element (m·co·pixels).
struct ConvMatToImages {
  ConvGeom g;
  int64_t m;
  const float* mat;
  const float* bias;
  float* y;
  HS_HD void operator()(int64_t e) const {
    const int64_t np = g.ho * g.wo;
    const int64_t p = e % np, o = (e / np) % g.co, i = e / (np * g.co);
    const float v = mat[o * m * np + i * np + p];
    y[e] = bias ? v + bias[o] : v;
  }
};

// y[b, o, p] += bias[o]; one call per output element.
struct ConvAddBias {
  int64_t co, np;
  const float* bias;
  float* y;
  HS_HD void operator()(int64_t e) const { y[e] += bias[(e / np) % co]; }
};

// The inverse gather: mat[o, i·pixels + p] = dy[i, o, p]; one call per element (co·m·pixels).
struct ConvImagesToMat {
  ConvGeom g;
  int64_t m;
  const float* dy;
  float* mat;
  HS_HD void operator()(int64_t e) const {
    const int64_t np = g.ho * g.wo, ld = m * np;
    const int64_t o = e / ld, q = e - o * ld;
    const int64_t i = q / np, p = q - i * np;
    mat[e] = dy[(i * g.co + o) * np + p];
  }
};

// Bias gradient: db[o] += Σ_b Σ_p dy[b, o, p], summed in double in the CPU kernel's order; one call
// per output channel (a block-per-channel reduction would be faster for large batches and images).
struct ConvBiasGrad {
  int64_t batch, co, np;
  const float* dy;
  float* db;
  HS_HD void operator()(int64_t o) const {
    double sum = 0;
    for (int64_t b = 0; b < batch; ++b) {
      const float* go = dy + (b * co + o) * np;
      for (int64_t p = 0; p < np; ++p) sum += go[p];
    }
    db[o] += static_cast<float>(sum);
  }
};

// Max pooling over k×k windows with step s and −inf padding p of planes [h, w] to [ho, wo] (the
// output's shape: ceil_mode only adds windows); one call per output element. The window is
// clipped to the input: p < k, and with ceil_mode a window starts inside the input or its left
// padding (ir::PoolOutputSize), so it keeps an input element, and padding is never the maximum.
// Keeps the first maximum in row-major window order (strict >) and saves its index in the plane
// as float, exactly as cpu/src/conv.cc.
struct MaxPoolFwd {
  int64_t h, w, ho, wo, k, s, p;
  const float* x;
  float* y;
  float* arg;
  HS_HD void operator()(int64_t o) const {
    const int64_t ow = o % wo, oh = (o / wo) % ho, n = o / (wo * ho);
    const float* xp = x + n * h * w;
    const int64_t i0 = oh * s - p > 0 ? oh * s - p : 0, i1 = oh * s - p + k < h ? oh * s - p + k : h;
    const int64_t j0 = ow * s - p > 0 ? ow * s - p : 0, j1 = ow * s - p + k < w ? ow * s - p + k : w;
    int64_t best = i0 * w + j0;
    for (int64_t i = i0; i < i1; ++i) {
      for (int64_t j = j0; j < j1; ++j) {
        if (xp[i * w + j] > xp[best]) best = i * w + j;
      }
    }
    y[o] = xp[best];
    arg[o] = static_cast<float>(best);
  }
};

// Max pooling backward as a gather: one call per input element, adding the gradients of the
// windows (in output order) whose saved argmax is this element — overlapping windows (s < k)
// may pick the same one. Clipping does not matter here: an input element is in a window's
// clipped part iff it is in the whole window.
struct MaxPoolBwd {
  int64_t h, w, ho, wo, k, s, p;
  const float* dy;
  const float* arg;
  float* dx;
  HS_HD void operator()(int64_t e) const {
    const int64_t j = e % w, i = (e / w) % h, n = e / (w * h);
    const int64_t local = i * w + j;
    int64_t oh0, oh1, ow0, ow1;
    ops::CoveringWindows(i, k, s, p, ho, &oh0, &oh1);
    ops::CoveringWindows(j, k, s, p, wo, &ow0, &ow1);
    float acc = 0.0f;
    for (int64_t oh = oh0; oh <= oh1; ++oh) {
      for (int64_t ow = ow0; ow <= ow1; ++ow) {
        const int64_t o = (n * ho + oh) * wo + ow;
        if (static_cast<int64_t>(arg[o]) == local) acc += dy[o];
      }
    }
    dx[e] += acc;
  }
};

// Average pooling geometry of planes [h, w] to [ho, wo] (the output's shape), k×k windows with
// step s and zero padding p: runtime/ops' AvgPoolWindow, on the device too.
struct AvgPoolGeom {
  int64_t h, w, ho, wo, k, s, p;
  bool count_include_pad;

  HS_HD ops::PoolWindow Window(int64_t oh, int64_t ow) const {
    return ops::AvgPoolWindow(k, s, p, count_include_pad, h, w, oh, ow);
  }
};

// Average pooling; one call per output element, summing its window in double in row-major order
// like cpu/src/conv.cc.
struct AvgPoolFwd {
  AvgPoolGeom g;
  const float* x;
  float* y;
  HS_HD void operator()(int64_t o) const {
    const int64_t ow = o % g.wo, oh = (o / g.wo) % g.ho, n = o / (g.wo * g.ho);
    const float* xp = x + n * g.h * g.w;
    const ops::PoolWindow win = g.Window(oh, ow);
    double sum = 0;
    for (int64_t i = win.h0; i < win.h1; ++i) {
      for (int64_t j = win.w0; j < win.w1; ++j) sum += xp[i * g.w + j];
    }
    y[o] = static_cast<float>(sum / win.divisor);
  }
};

// Average pooling backward as a gather: one call per input element, adding dy / divisor (as
// float, like the CPU kernel) of every window that covers it, in output order.
struct AvgPoolBwd {
  AvgPoolGeom g;
  const float* dy;
  float* dx;
  HS_HD void operator()(int64_t e) const {
    const int64_t j = e % g.w, i = (e / g.w) % g.h, n = e / (g.w * g.h);
    int64_t oh0, oh1, ow0, ow1;
    ops::CoveringWindows(i, g.k, g.s, g.p, g.ho, &oh0, &oh1);
    ops::CoveringWindows(j, g.k, g.s, g.p, g.wo, &ow0, &ow1);
    float acc = 0.0f;
    for (int64_t oh = oh0; oh <= oh1; ++oh) {
      for (int64_t ow = ow0; ow <= ow1; ++ow) {
        acc += static_cast<float>(dy[(n * g.ho + oh) * g.wo + ow] / g.Window(oh, ow).divisor);
      }
    }
    dx[e] += acc;
  }
};

// PyTorch's adaptive pooling bin i of n over a dim of size len: [⌊i·len/n⌋, ⌈(i+1)·len/n⌉).
HS_HD inline int64_t AdaptiveBinStart(int64_t i, int64_t len, int64_t n) { return i * len / n; }
HS_HD inline int64_t AdaptiveBinEnd(int64_t i, int64_t len, int64_t n) { return ((i + 1) * len + n - 1) / n; }

// Adaptive average pooling of planes [h, w] to [ho, wo]; one call per output element, summing
// its bin in double.
struct AdaptiveAvgPoolFwd {
  int64_t h, w, ho, wo;
  const float* x;
  float* y;
  HS_HD void operator()(int64_t o) const {
    const int64_t ow = o % wo, oh = (o / wo) % ho, n = o / (wo * ho);
    const float* xp = x + n * h * w;
    const int64_t h0 = AdaptiveBinStart(oh, h, ho), h1 = AdaptiveBinEnd(oh, h, ho);
    const int64_t w0 = AdaptiveBinStart(ow, w, wo), w1 = AdaptiveBinEnd(ow, w, wo);
    double sum = 0;
    for (int64_t i = h0; i < h1; ++i) {
      for (int64_t j = w0; j < w1; ++j) sum += xp[i * w + j];
    }
    y[o] = static_cast<float>(sum / static_cast<double>((h1 - h0) * (w1 - w0)));
  }
};

// Adaptive average pooling backward as a gather: one call per input element, adding
// dy / (bin size) of every bin that contains it (bins overlap when n does not divide len), in
// output order like the CPU kernel.
struct AdaptiveAvgPoolBwd {
  int64_t h, w, ho, wo;
  const float* dy;
  float* dx;
  HS_HD void operator()(int64_t e) const {
    const int64_t j = e % w, i = (e / w) % h, n = e / (w * h);
    // Bins oh with start(oh) <= i < end(oh): oh in [⌊i·ho/h⌋, ⌊((i+1)·ho − 1)/h⌋].
    const int64_t oh0 = i * ho / h, oh1 = ((i + 1) * ho - 1) / h;
    const int64_t ow0 = j * wo / w, ow1 = ((j + 1) * wo - 1) / w;
    float acc = 0.0f;
    for (int64_t oh = oh0; oh <= oh1 && oh < ho; ++oh) {
      const int64_t h0 = AdaptiveBinStart(oh, h, ho), h1 = AdaptiveBinEnd(oh, h, ho);
      if (i < h0 || i >= h1) continue;
      for (int64_t ow = ow0; ow <= ow1 && ow < wo; ++ow) {
        const int64_t w0 = AdaptiveBinStart(ow, w, wo), w1 = AdaptiveBinEnd(ow, w, wo);
        if (j < w0 || j >= w1) continue;
        acc += dy[(n * ho + oh) * wo + ow] / static_cast<float>((h1 - h0) * (w1 - w0));
      }
    }
    dx[e] += acc;
  }
};

}  // namespace hetsynth::runtime::gpu
