// One valid node per operator kind, for the tests that walk the op table (graph_test,
// instr_test): an op without a sample here fails them, unless it is elementwise with one or two
// inputs of one shape and no attributes — those get a generic sample, so a new elementwise op
// (sigmoid, tanh, sub, ...) is checked without touching the tests.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "hetsynth/ir/graph.h"
#include "hetsynth/ir/op_table.h"
#include "hetsynth/base/status.h"

namespace hetsynth::ir::testing {

struct OpSample {
  std::vector<Shape> inputs;
  Attrs attrs;
};

// Dims are small but divisible enough that every split of every rule has non-empty pieces on
// two or three devices.
inline absl::StatusOr<OpSample> SampleOf(OpKind kind) {
  OpSample s;
  Attrs& a = s.attrs;
  switch (kind) {
    case OpKind::kLinear: s.inputs = {{4, 6, 8}, {10, 8}, {10}}; break;
    case OpKind::kMatMul: s.inputs = {{4, 6, 8}, {4, 8, 10}}; break;
    case OpKind::kMul: s.inputs = {{4, 6, 8}, {8}}; break;  // b broadcast onto a
    case OpKind::kDropout: s.inputs = {{4, 6, 8}}, a.p = 0.1, a.seed = 7; break;
    case OpKind::kLayerNorm: s.inputs = {{4, 6, 8}, {8}, {8}}; break;
    case OpKind::kAttention: s.inputs = {{4, 6, 8}, {4, 6, 8}, {4, 6, 8}}, a.heads = 4; break;
    case OpKind::kCausalMask: s.inputs = {{4, 6, 6}}; break;
    case OpKind::kEmbedding: s.inputs = {{4, 6}, {12, 8}}; break;
    case OpKind::kConv2d:
      s.inputs = {{4, 6, 8, 8}, {10, 6, 3, 3}, {10}}, a.kernel = 3, a.stride = 1, a.padding = 1;
      break;
    case OpKind::kMaxPool2d: s.inputs = {{4, 6, 8, 8}}, a.kernel = 2, a.stride = 2; break;
    case OpKind::kAdaptiveAvgPool2d: s.inputs = {{4, 6, 8, 8}}, a.out_h = 2, a.out_w = 2; break;
    case OpKind::kFlatten: s.inputs = {{4, 6, 2, 2}}, a.axis = 1; break;
    case OpKind::kReshape: s.inputs = {{4, 6, 8}}, a.shape = {4, 12, 4}; break;
    case OpKind::kTranspose: s.inputs = {{4, 6, 8}}, a.axis = 0, a.axis2 = 2; break;
    case OpKind::kConcat: s.inputs = {{4, 6, 8}, {4, 2, 8}}, a.axis = 1; break;
    case OpKind::kSlice: s.inputs = {{4, 6, 8}}, a.axis = 1, a.start = 1, a.length = 3; break;
    case OpKind::kExpand: s.inputs = {{6, 1}}, a.shape = {4, 6, 8}; break;
    case OpKind::kCrossEntropy: s.inputs = {{4, 6, 8}, {4, 6}}; break;
    case OpKind::kTopKGate: s.inputs = {{12, 4}}, a.k = 2, a.capacity = 6; break;
    case OpKind::kMoEDispatch: s.inputs = {{12, 8}, {12, 2, 3}}, a.experts = 4, a.capacity = 6; break;
    case OpKind::kMoECombine: s.inputs = {{4, 6, 8}, {12, 2, 3}}; break;
    case OpKind::kClip: s.inputs = {{4, 6, 8}}, a.min = -0.5, a.max = 0.7; break;
    case OpKind::kBatchMoments: s.inputs = {{4, 6, 4, 4}}; break;
    case OpKind::kAvgPool2d:
      s.inputs = {{4, 6, 7, 7}}, a.kernel = 3, a.stride = 2, a.padding = 1, a.ceil_mode = true;
      break;
    case OpKind::kMseLoss: s.inputs = {{4, 6, 8}, {4, 6, 8}}; break;
    case OpKind::kBatchNorm: s.inputs = {{4, 6, 4, 4}, {2, 6}, {6}, {6}}; break;
    default: {
      const OpDef& def = DefOf(kind);
      if (def.attrs[0].empty() && def.min_inputs <= 2) {
        s.inputs.assign(static_cast<size_t>(def.min_inputs), Shape{4, 6, 8});
        break;
      }
      return absl::NotFoundError(StrCat("op '", def.name, "' has attributes or several inputs: give it a sample in tests/ir/op_samples.h"));
    }
  }
  return s;
}

// A graph with the sample's inputs "in0", "in1", ... and its node "op" (no loss).
inline absl::StatusOr<Graph> SampleGraph(OpKind kind) {
  HS_ASSIGN_OR_RETURN(OpSample s, SampleOf(kind));
  Graph g("sample");
  std::vector<ValueId> in;
  for (size_t i = 0; i < s.inputs.size(); ++i) {
    HS_ASSIGN_OR_RETURN(ValueId v, g.AddInput(StrCat("in", i), s.inputs[i]));
    in.push_back(v);
  }
  HS_RETURN_IF_ERROR(g.AddOp("op", kind, in, s.attrs).status());
  return g;
}

}  // namespace hetsynth::ir::testing
