// Device functors of the optimizers (optim.h): the arithmetic of runtime/core/src/optimizer.cc,
// element by element, in the same order (PyTorch's single-tensor SGD and Adam); and the
// gradient accumulation the trainer and executor use.
#pragma once

#include "hetsynth/runtime/ops/hd.h"

namespace hetsynth::runtime::gpu {

// acc[i] += x[i].
struct Accumulate {
  float* acc;
  const float* x;
  HS_HD void operator()(int64_t i) const { acc[i] += x[i]; }
};

struct SgdStep {
  float* w;
  const float* g;
  float lr, wd;
  HS_HD void operator()(int64_t i) const { w[i] -= lr * (g[i] + wd * w[i]); }
};

struct SgdMomentumStep {
  float* w;
  const float* g;
  float* buf;
  float lr, wd, momentum;
  int fresh;  // first step: the buffer takes the gradient (PyTorch)
  HS_HD void operator()(int64_t i) const {
    const float d = g[i] + wd * w[i];
    buf[i] = fresh ? d : momentum * buf[i] + d;
    w[i] -= lr * buf[i];
  }
};

struct AdamStep {
  float* w;
  const float* g;
  float* m;
  float* v;
  float b1, b2, wd, step_size, bc2_sqrt, eps;
  HS_HD void operator()(int64_t i) const {
    const float d = g[i] + wd * w[i];
    m[i] += (d - m[i]) * (1.0f - b1);
    v[i] = v[i] * b2 + (1.0f - b2) * d * d;
    const float denom = sqrtf(v[i]) / bc2_sqrt + eps;
    w[i] -= step_size * (m[i] / denom);
  }
};

}  // namespace hetsynth::runtime::gpu
