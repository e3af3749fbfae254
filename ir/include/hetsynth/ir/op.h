// Operator kinds of the model IR and their attributes.
//
// Every tensor is fp32 with a static shape. Integer data (token ids, class labels, MoE routing
// indices) is stored as exactly representable fp32 values (< 2^24). Layouts follow PyTorch:
// images are NCHW, linear weights are [out, in], conv weights are [out, in, kh, kw].
//
// Shape legend used in comments: B batch, T sequence, C hidden/channels, H heads, K classes,
// V vocabulary, S tokens (= B·T), E experts, P expert capacity, F feed-forward width.
// The operator kinds themselves are listed in op_kind.h (HETSYNTH_IR_OPS); everything else about
// an operator (arity, shape, FLOPs, sharding) is in its op_table.h entry.
//
//   OpKind kind;
//   if (!ParseOpName("layer_norm", &kind)) ...;   // OpKind::kLayerNorm
//   OpName(kind);                                 // "layer_norm"
//   AttrNames(kind);                              // {"eps"}
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "hetsynth/ir/op_kind.h"

namespace hetsynth::ir {

// The snake_case name used in graph JSON and messages ("linear", "layer_norm", ...).
std::string_view OpName(OpKind kind);
// Inverse of OpName; false when the name is unknown.
bool ParseOpName(std::string_view name, OpKind* kind);

// Attributes of every op kind in one flat struct; each kind reads only the fields it
// documents (AttrNames lists them). Defaults are the values a field has when unused.
struct Attrs {
  int64_t axis = -1;            // softmax/concat/slice/flatten/transpose dim (negative counts
                                // from the end)
  int64_t axis2 = -2;           // transpose: the other dim
  int64_t start = 0;            // slice: first index
  int64_t length = 0;           // slice: number of indices
  std::vector<int64_t> shape;   // reshape/expand: target shape
  int64_t heads = 0;            // attention: number of heads (divides C)
  bool causal = false;          // attention: mask future positions
  double eps = 1e-5;            // layer_norm / batch_norm: added to the variance
  double p = 0.0;               // dropout: drop probability in [0, 1)
  uint64_t seed = 0;            // dropout: mask stream
  int64_t kernel = 0;           // conv2d / max_pool2d: square window size
  int64_t stride = 1;           // conv2d / max_pool2d: step
  int64_t padding = 0;          // conv2d: zero padding on each side; max_pool2d: −inf padding
  int64_t groups = 1;           // conv2d: channel groups (divides Ci and Co)
  bool ceil_mode = false;       // max_pool2d / avg_pool2d: round the output size up
  bool count_include_pad = false;  // avg_pool2d: divide by the window including its padding
  double min = 0.0;             // clip: lower bound
  double max = 0.0;             // clip: upper bound
  int64_t out_h = 1;            // adaptive_avg_pool2d: output height
  int64_t out_w = 1;            // adaptive_avg_pool2d: output width
  int64_t k = 2;                // top_k_gate: experts per token
  int64_t experts = 0;          // moe_dispatch: number of experts E
  int64_t capacity = 0;         // top_k_gate / moe_dispatch: slots per expert P

  bool operator==(const Attrs&) const = default;
};

// The attribute fields an op kind reads, by their JSON names.
std::vector<std::string_view> AttrNames(OpKind kind);

}  // namespace hetsynth::ir
