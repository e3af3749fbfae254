// The windows of 2-D pooling, written once for both backends (C++17, host and device: hd.h):
// the CPU kernels (backends/cpu/src/conv.cc) and the GPU functors (backends/cuda/src/ops/
// conv_kernels.h) take avg_pool2d's windows and divisors, and the windows covering an input
// element in backward, from here.
#pragma once

#include <stdint.h>

#include "hetsynth/runtime/ops/hd.h"

namespace hetsynth::runtime::ops {

// Output (oh, ow)'s window over an input plane [h, w], clipped to it: [h0, h1) × [w0, w1); and
// avg_pool2d's divisor, the window's elements within the padded input with count_include_pad,
// else within the input. k×k windows, step s, padding p.
struct PoolWindow {
  int64_t h0, h1, w0, w1;
  double divisor;
};
HS_HD inline PoolWindow AvgPoolWindow(int64_t k, int64_t s, int64_t p, bool count_include_pad, int64_t h, int64_t w,
                                      int64_t oh, int64_t ow) {
  const int64_t hs = oh * s - p, ws = ow * s - p;
  const int64_t he = hs + k < h + p ? hs + k : h + p, we = ws + k < w + p ? ws + k : w + p;  // in the padded input
  PoolWindow r{hs > 0 ? hs : 0, he < h ? he : h, ws > 0 ? ws : 0, we < w ? we : w, 0.0};
  r.divisor = count_include_pad ? static_cast<double>((he - hs) * (we - ws))
                                : static_cast<double>((r.h1 - r.h0) * (r.w1 - r.w0));
  return r;
}

// Along one dim: the outputs [*o0, *o1] (of `outs`) whose window covers input element i, those
// with o·s <= i + p < o·s + k. Empty when *o0 > *o1.
HS_HD inline void CoveringWindows(int64_t i, int64_t k, int64_t s, int64_t p, int64_t outs, int64_t* o0, int64_t* o1) {
  const int64_t ip = i + p;
  *o0 = ip < k ? 0 : (ip - k) / s + 1;
  *o1 = ip / s < outs - 1 ? ip / s : outs - 1;
}

}  // namespace hetsynth::runtime::ops
