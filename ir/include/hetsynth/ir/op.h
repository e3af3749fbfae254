// Operator kinds of the model IR and their attributes.
//
// Every tensor is fp32 with a static shape. Integer data (token ids, class labels, MoE routing
// indices) is stored as exactly representable fp32 values (< 2^24). Layouts follow PyTorch:
// images are NCHW, linear weights are [out, in], conv weights are [out, in, kh, kw].
//
// Shape legend used in comments: B batch, T sequence, C hidden/channels, H heads, K classes,
// V vocabulary, S tokens (= B·T), E experts, P expert capacity, F feed-forward width.
// Everything else about an operator (arity, shape, FLOPs, sharding) is in its op_table.h entry.
//
//   OpKind kind;
//   if (!ParseOpName("layer_norm", &kind)) ...;   // OpKind::kLayerNorm
//   OpName(kind);                                 // "layer_norm"
//   AttrNames(kind);                              // {"eps"}
//   #define CASE(Camel, snake) case OpKind::k##Camel: return Camel##Forward(...);
//   switch (kind) { HETSYNTH_IR_OPS(CASE) }       // dispatch generated from the list
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace hetsynth::ir {

// Every operator, once: X(CamelName, "snake_name"). The list generates OpKind (kCamelName, in
// this order), kNumOpKinds and the order of the operator table (op_table.h), whose entry i is
// checked at compile time to describe kind i. CamelName is the stem of generated dispatch
// (e.g. a CPU kernel pair CamelNameForward/CamelNameBackward); snake_name is the name in graph
// JSON and messages. Adding an operator: one line here, one entry in ir/src/op_table.cc, its
// kernels. Shapes (legend above):
//   linear               (x[..., in], W[out, in], b[out]?) -> [..., out]; y = x·Wᵀ + b
//   matmul               (a[..., m, k], b[..., k, n] or b[k, n]) -> [..., m, n]
//   add                  (a, b) -> shape(a); b's shape is a suffix of a's (numpy broadcast)
//   mul                  (a, b) -> shape(a); elementwise, same broadcast rule as add
//   relu                 (x) -> shape(x)
//   gelu                 (x) -> shape(x); exact: x·Φ(x) = 0.5·x·(1 + erf(x/√2))
//   dropout              (x) -> shape(x); attrs p, seed; identity when p == 0
//   layer_norm           (x[..., C], gamma[C], beta[C]) -> [..., C]; attr eps; biased variance
//   softmax              (x) -> shape(x); over the last dim
//   log_softmax          (x) -> shape(x); over the last dim
//   attention            (q[B,T,C], k[B,T,C], v[B,T,C]) -> [B,T,C]; attrs heads, causal;
//                        per head softmax(q·kᵀ/√(C/H) + mask)·v
//   causal_mask          (s[..., T, T]) -> same; entries above the diagonal set to -inf
//   embedding            (ids[...], table[V, C]) -> [..., C]; ids must be integers in [0, V)
//   conv2d               (x[B,Ci,H,W], W[Co,Ci,k,k], b[Co]?) -> [B,Co,H',W']; attrs kernel,
//                        stride, padding; H' = (H + 2·padding − kernel)/stride + 1
//   max_pool2d           (x[B,C,H,W]) -> [B,C,H',W']; attrs kernel, stride; no padding
//   adaptive_avg_pool2d  (x[B,C,H,W]) -> [B,C,out_h,out_w]; PyTorch's bin boundaries
//   flatten              (x) -> dims [axis, end) merged into one; attr axis
//   reshape              (x) -> attr shape (same element count)
//   transpose            (x) -> dims axis and axis2 swapped
//   concat               (a, b, ...) -> concatenated along attr axis
//   slice                (x) -> x[..., start:start+length, ...] along attr axis
//   expand               (x) -> attr shape; dims of size 1 broadcast (numpy rules, x may have
//                        fewer dims)
//   cross_entropy        (logits[..., K], labels[...]) -> [] scalar; mean over all positions
//   top_k_gate           (logits[S, E]) -> route[S, k, 3]; attrs k, capacity; docs/models.md
//   moe_dispatch         (x[S, C], route[S, k, 3]) -> [E, P, C]; attrs experts, capacity
//   moe_combine          (y[E, P, C], route[S, k, 3]) -> [S, C]
#define HETSYNTH_IR_OPS(X)                          \
  X(Linear, "linear")                               \
  X(MatMul, "matmul")                               \
  X(Add, "add")                                     \
  X(Mul, "mul")                                     \
  X(Relu, "relu")                                   \
  X(Gelu, "gelu")                                   \
  X(Dropout, "dropout")                             \
  X(LayerNorm, "layer_norm")                        \
  X(Softmax, "softmax")                             \
  X(LogSoftmax, "log_softmax")                      \
  X(Attention, "attention")                         \
  X(CausalMask, "causal_mask")                      \
  X(Embedding, "embedding")                         \
  X(Conv2d, "conv2d")                               \
  X(MaxPool2d, "max_pool2d")                        \
  X(AdaptiveAvgPool2d, "adaptive_avg_pool2d")       \
  X(Flatten, "flatten")                             \
  X(Reshape, "reshape")                             \
  X(Transpose, "transpose")                         \
  X(Concat, "concat")                               \
  X(Slice, "slice")                                 \
  X(Expand, "expand")                               \
  X(CrossEntropy, "cross_entropy")                  \
  X(TopKGate, "top_k_gate")                         \
  X(MoEDispatch, "moe_dispatch")                    \
  X(MoECombine, "moe_combine")

enum class OpKind : uint8_t {
#define HETSYNTH_IR_OP_ENUM_(camel, snake) k##camel,
  HETSYNTH_IR_OPS(HETSYNTH_IR_OP_ENUM_)
#undef HETSYNTH_IR_OP_ENUM_
};

inline constexpr int kNumOpKinds = 0
#define HETSYNTH_IR_OP_COUNT_(camel, snake) +1
    HETSYNTH_IR_OPS(HETSYNTH_IR_OP_COUNT_)
#undef HETSYNTH_IR_OP_COUNT_
    ;

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
  double eps = 1e-5;            // layer_norm: added to the variance
  double p = 0.0;               // dropout: drop probability in [0, 1)
  uint64_t seed = 0;            // dropout: mask stream
  int64_t kernel = 0;           // conv2d / max_pool2d: square window size
  int64_t stride = 1;           // conv2d / max_pool2d: step
  int64_t padding = 0;          // conv2d: zero padding on each side
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
