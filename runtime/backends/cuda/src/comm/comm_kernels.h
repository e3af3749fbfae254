// Device functors of the GPU communicators (gpu_comm.h). C++17; see hd.h.
//
// The in-process device communicator reduces by reading every rank's buffer directly (all
// virtual devices share one GPU's memory) and summing in rank order, accumulating in float:
// out[i] = ((in₀[i] + in₁[i]) + in₂[i]) + … — the order the CPU communicators use, so the bits
// equal theirs. The same functor runs in a host loop for host buffers.
#pragma once

#include <stdint.h>

#include "hetsynth/runtime/ops/hd.h"

namespace hetsynth::runtime::gpu {

// Most ranks one RankSum reads (the device communicator's rank limit).
constexpr int kMaxCommRanks = 64;

// out[i] = rank-order float sum of in[0][i] … in[n-1][i]; n in [1, kMaxCommRanks]. out must not
// overlap any in[k] (another rank may still be reading it).
struct RankSum {
  const float* in[kMaxCommRanks];
  int n;
  float* out;
  HS_HD void operator()(int64_t i) const {
    float s = in[0][i];
    for (int k = 1; k < n; ++k) s += in[k][i];
    out[i] = s;
  }
};

}  // namespace hetsynth::runtime::gpu
