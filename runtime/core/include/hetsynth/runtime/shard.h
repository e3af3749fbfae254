// Slices of a tensor along one dim: what a rank holds under Gather(t, d), and the way back.
//
//   std::vector<int64_t> lengths = {3, 0, 5};          // per rank, sums to full.dim(d)
//   Tensor mine = Slice(full, d, Offset(lengths, rank), lengths[rank]);
//   Place(mine, d, Offset(lengths, rank), full);        // writes it back into full
#pragma once

#include <cstdint>
#include <vector>

#include "hetsynth/instr/local_compute.h"
#include "hetsynth/runtime/tensor.h"

namespace hetsynth::runtime {

// `s` with dim's size set to `len`.
ir::Shape WithDim(ir::Shape s, int dim, int64_t len);

// A shape seen as [outer, s[dim], inner] around one dim.
struct Around {
  int64_t outer = 1, len = 1, inner = 1;
};
Around AroundDim(const ir::Shape& s, int dim);

// The slices of x along dim by `lengths`, each made contiguous, concatenated in rank order (the
// flat layout the communicators' v-collectives use).
std::vector<float> PackAlong(const Tensor& x, int dim, const std::vector<int64_t>& lengths);
// Inverse of PackAlong: a tensor of `shape` from its slices along dim, concatenated in rank order.
Tensor UnpackAlong(const float* packed, const ir::Shape& shape, int dim, const std::vector<int64_t>& lengths);

// Σ lengths[0..rank).
int64_t Offset(const std::vector<int64_t>& lengths, int rank);

// x[..., start:start+length, ...] along dim (length may be 0).
Tensor Slice(const Tensor& x, int dim, int64_t start, int64_t length);

// Writes `part` into `full` at [start, start + part.dim(dim)) along dim.
void Place(const Tensor& part, int dim, int64_t start, Tensor& full);

// The slices of every rank concatenated in rank order along dim (inverse of slicing by lengths).
Tensor Concat(const std::vector<Tensor>& parts, int dim);

// A piece cut on several dims (instr::PieceCuts: a mixed form over a two-level mesh is cut at
// both levels, on different dims): x's box, and `part` written back into full's box.
Tensor SliceBox(const Tensor& x, const std::vector<instr::Cut>& cuts);
void PlaceBox(const Tensor& part, const std::vector<instr::Cut>& cuts, Tensor& full);

// x seen as [outer, len, inner] around dim, laid out as [len, outer, inner]: each row of dim one
// contiguous block, so the pieces of a split along dim tile the flat buffer in order (the
// layout AcrossNodesAllReduce takes); FromDimMajor writes such a buffer back into x.
std::vector<float> DimMajor(const Tensor& x, int dim);
void FromDimMajor(const float* src, int dim, Tensor& x);

}  // namespace hetsynth::runtime
