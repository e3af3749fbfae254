// Device functors of the plan executor on GPUs (backend.h): slices along one dim (to take a
// rank's piece, pack pieces for a collective, and place them back) and the renumbering of MoE
// routes for the "experts" rule.
#pragma once

#include "hetsynth/runtime/ops/hd.h"

namespace hetsynth::runtime::gpu {

// A tensor seen as [outer, full, inner] around one dim; the piece is [outer, len, inner] at
// rows [start, start + len) of that dim. Call i covers piece element i.
struct SliceCopy {
  const float* src;  // the whole tensor
  float* dst;        // the piece (contiguous)
  int64_t len, full, inner, start;
  HS_HD void operator()(int64_t i) const {
    const int64_t in = i % inner, j = (i / inner) % len, o = i / (inner * len);
    dst[i] = src[(o * full + start + j) * inner + in];
  }
};

// The inverse: writes (or, with add, adds) the contiguous piece into the whole tensor.
struct PlaceCopy {
  const float* src;  // the piece
  float* dst;        // the whole tensor
  int64_t len, full, inner, start;
  int add;
  HS_HD void operator()(int64_t i) const {
    const int64_t in = i % inner, j = (i / inner) % len, o = i / (inner * len);
    float& d = dst[(o * full + start + j) * inner + in];
    d = add ? d + src[i] : src[i];
  }
};

// Routes are (expert, slot, weight) triples naming global experts: keep this rank's experts
// [offset, offset + local), renumbered from 0; the others become expert 0, slot −1 (dropped).
struct RenumberRoutesFn {
  float* r;
  float offset, local;
  HS_HD void operator()(int64_t t) const {
    float* e = r + 3 * t;
    const float expert = e[0] - offset;
    if (expert >= 0 && expert < local) {
      e[0] = expert;
    } else {
      e[0] = 0;
      e[1] = -1;
    }
  }
};

}  // namespace hetsynth::runtime::gpu
