// Device functors of the elementwise operators (elementwise.h). C++17; see hd.h.
#pragma once

#include "gpu/hd.h"

namespace hetsynth::runtime::gpu {

struct ReluFwd {
  const float* x;
  float* y;
  HS_HD void operator()(int64_t i) const { y[i] = x[i] > 0.0f ? x[i] : 0.0f; }
};

struct ReluBwd {
  const float* x;
  const float* g;
  float* dx;
  HS_HD void operator()(int64_t i) const { dx[i] += x[i] > 0.0f ? g[i] : 0.0f; }
};

}  // namespace hetsynth::runtime::gpu
