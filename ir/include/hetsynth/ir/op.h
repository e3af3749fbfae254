// Operator kinds of the model IR and their attributes.
//
// Every tensor is fp32 with a static shape. Integer data (token ids, class labels, MoE routing
// indices) is stored as exactly representable fp32 values (< 2^24). Layouts follow PyTorch:
// images are NCHW, linear weights are [out, in], conv weights are [out, in, kh, kw].
//
// Shape legend used in comments: B batch, T sequence, C hidden/channels, H heads, K classes,
// V vocabulary, S tokens (= B·T), E experts, P expert capacity, F feed-forward width.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace hetsynth::ir {

enum class OpKind : uint8_t {
  kLinear,             // (x[..., in], W[out, in], b[out]?) -> [..., out]; y = x·Wᵀ + b
  kMatMul,             // (a[..., m, k], b[..., k, n] or b[k, n]) -> [..., m, n]
  kAdd,                // (a, b) -> shape(a); b's shape is a suffix of a's (numpy broadcast)
  kMul,                // (a, b) -> shape(a); elementwise, same broadcast rule as add
  kRelu,               // (x) -> shape(x)
  kGelu,               // (x) -> shape(x); exact: x·Φ(x) = 0.5·x·(1 + erf(x/√2))
  kDropout,            // (x) -> shape(x); attrs p, seed; identity when p == 0
  kLayerNorm,          // (x[..., C], gamma[C], beta[C]) -> [..., C]; attr eps; biased variance
  kSoftmax,            // (x) -> shape(x); over the last dim
  kLogSoftmax,         // (x) -> shape(x); over the last dim
  kAttention,          // (q[B,T,C], k[B,T,C], v[B,T,C]) -> [B,T,C]; attrs heads, causal;
                       // per head softmax(q·kᵀ/√(C/H) + mask)·v
  kCausalMask,         // (s[..., T, T]) -> same; entries above the diagonal set to -inf
  kEmbedding,          // (ids[...], table[V, C]) -> [..., C]; ids must be integers in [0, V)
  kConv2d,             // (x[B,Ci,H,W], W[Co,Ci,k,k], b[Co]?) -> [B,Co,H',W']; attrs kernel,
                       // stride, padding; H' = (H + 2·padding − kernel)/stride + 1
  kMaxPool2d,          // (x[B,C,H,W]) -> [B,C,H',W']; attrs kernel, stride; no padding
  kAdaptiveAvgPool2d,  // (x[B,C,H,W]) -> [B,C,out_h,out_w]; PyTorch's bin boundaries
  kFlatten,            // (x) -> dims [axis, end) merged into one; attr axis
  kReshape,            // (x) -> attr shape (same element count)
  kTranspose,          // (x) -> dims axis and axis2 swapped
  kConcat,             // (a, b, ...) -> concatenated along attr axis
  kSlice,              // (x) -> x[..., start:start+length, ...] along attr axis
  kExpand,             // (x) -> attr shape; dims of size 1 broadcast (numpy rules, x may
                       // have fewer dims)
  kCrossEntropy,       // (logits[..., K], labels[...]) -> [] scalar; mean over all positions
  kTopKGate,           // (logits[S, E]) -> route[S, k, 3]; attrs k, capacity; see docs/models.md
  kMoEDispatch,        // (x[S, C], route[S, k, 3]) -> [E, P, C]; attrs experts, capacity
  kMoECombine,         // (y[E, P, C], route[S, k, 3]) -> [S, C]
};

inline constexpr int kNumOpKinds = static_cast<int>(OpKind::kMoECombine) + 1;

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
