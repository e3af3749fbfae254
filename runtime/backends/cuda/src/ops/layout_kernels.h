// Device functors of the layout operators (layout.h). C++17; see hd.h.
//
// Nothing here computes: every functor moves (or, for a backward, adds) one element. The
// forwards are gathers (one call per output element); the backwards are gathers too except the
// embedding's, which scatter-adds into the table because one row may be used by many ids.
#pragma once

#include "hetsynth/runtime/ops/hd.h"

namespace hetsynth::runtime::gpu {

// dst[i] += src[i]: the backward of flatten and reshape (a plain copy forward).
struct LayoutAddInto {
  const float* src;
  float* dst;
  HS_HD void operator()(int64_t i) const { dst[i] += src[i]; }
};

// Blocks of `chunk` contiguous elements moved between two [outer, ·] views: for i = o · chunk + k,
// dst[o · dst_row + dst_off + k] (+)= src[o · src_row + src_off + k]. Concat and slice, both
// ways: with the smaller tensor on the unit-row side each call writes a distinct element, so
// the backward's adds need no atomics.
struct LayoutBlockMove {
  const float* src;
  float* dst;
  int64_t chunk;
  int64_t src_row, src_off;
  int64_t dst_row, dst_off;
  bool accumulate;
  HS_HD void operator()(int64_t i) const {
    const int64_t o = i / chunk, k = i - o * chunk;
    const float v = src[o * src_row + src_off + k];
    float& y = dst[o * dst_row + dst_off + k];
    y = accumulate ? y + v : v;
  }
};

// dst[i] (+)= src[walk.Offset(i)]: a transpose, walking dst in row-major order and src through
// permuted strides (the [P, B, M, A, Q] view of layout.h). Reads are strided when Q == 1; a
// shared-memory tiled transpose would coalesce both sides there.
struct LayoutGatherWalk {
  const float* src;
  float* dst;
  Walk walk;
  bool accumulate;
  HS_HD void operator()(int64_t i) const {
    const float v = src[walk.Offset(i)];
    dst[i] = accumulate ? dst[i] + v : v;
  }
};

// The row of the kernel's table that a float-encoded id names, or -1: the id must be an integer
// in [0, vocab) (the full vocabulary) and its row among the table's [first, first + count).
HS_HD inline int64_t EmbeddingRow(float id, int64_t first, int64_t count, int64_t vocab) {
  if (!(id >= 0.0f && id < static_cast<float>(vocab) && id == floorf(id))) return -1;
  const int64_t r = static_cast<int64_t>(id) - first;
  return r >= 0 && r < count ? r : -1;
}

// Counts into *bad (one float) the ids that are not row indices in [0, vocab); the host reads
// the count to report them (layout.h says when).
struct EmbeddingCheckIds {
  const float* ids;
  float* bad;
  int64_t vocab;
  HS_HD void operator()(int64_t n) const {
    const float id = ids[n];
    if (!(id >= 0.0f && id < static_cast<float>(vocab) && id == floorf(id))) AtomicAdd(bad, 1.0f);
  }
};

// out[n, j] = table[ids[n] - first, j] for i = n · c + j; zero where the table lacks the row
// (a table piece) or the id is no valid row index.
struct EmbeddingFwd {
  const float* ids;
  const float* table;
  float* out;
  int64_t c, first, count, vocab;
  HS_HD void operator()(int64_t i) const {
    const int64_t n = i / c, j = i - n * c;
    const int64_t r = EmbeddingRow(ids[n], first, count, vocab);
    out[i] = r >= 0 ? table[r * c + j] : 0.0f;
  }
};

// dtable[ids[n] - first, j] += dout[n, j] for i = n · c + j, skipping ids whose row the table
// lacks. Scatter-add: ids that repeat add into the same row. (A gather formulation would need
// the ids sorted by row first; atomics are cheap for the usual vocabularies.)
struct EmbeddingBwd {
  const float* ids;
  const float* dout;
  float* dtable;
  int64_t c, first, count, vocab;
  HS_HD void operator()(int64_t i) const {
    const int64_t n = i / c, j = i - n * c;
    const int64_t r = EmbeddingRow(ids[n], first, count, vocab);
    if (r >= 0) AtomicAdd(&dtable[r * c + j], dout[i]);
  }
};

}  // namespace hetsynth::runtime::gpu
