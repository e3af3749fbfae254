// The operator kinds of the model IR, listed once (HETSYNTH_IR_OPS), and the OpKind enum the
// list generates. Plain C++17 (only <cstdint>), so that device code compiled by nvcc (the
// shared operator math, runtime/ops/unary_math.h) can name op kinds; the rest of an operator's
// description is in op.h (names, attributes) and op_table.h (its entry).
//
//   #define CASE(Camel, snake) case OpKind::k##Camel: return Camel##Forward(...);
//   switch (kind) { HETSYNTH_IR_OPS(CASE) }       // dispatch generated from the list
#pragma once

#include <cstdint>

namespace hetsynth::ir {

// Every operator, once: X(CamelName, "snake_name"). The list generates OpKind (kCamelName, in
// this order), kNumOpKinds and the order of the operator table (op_table.h), whose entry i is
// checked at compile time to describe kind i. CamelName is the stem of generated dispatch
// (e.g. a CPU kernel pair CamelNameForward/CamelNameBackward); snake_name is the name in graph
// JSON and messages. Adding an operator: one line here, one entry in ir/src/op_table.cc, its
// kernels (docs/architecture.md, "Adding an operator"). Shapes (legend in op.h):
//   linear               (x[..., in], W[out, in], b[out]?) -> [..., out]; y = x·Wᵀ + b
//   matmul               (a[..., m, k], b[..., k, n] or b[k, n]) -> [..., m, n]
//   add                  (a, b) -> shape(a); b's shape is a suffix of a's (numpy broadcast)
//   mul                  (a, b) -> shape(a); elementwise, same broadcast rule as add
//   relu                 (x) -> shape(x)
//   gelu                 (x) -> shape(x); exact: x·Φ(x) = 0.5·x·(1 + erf(x/√2))
//   sigmoid              (x) -> shape(x); 1/(1 + e^−x)
//   tanh                 (x) -> shape(x)
//   dropout              (x) -> shape(x); attrs p, seed; identity when p == 0
//   layer_norm           (x[..., C], gamma[C], beta[C]) -> [..., C]; attr eps; biased variance
//   softmax              (x) -> shape(x); over the last dim
//   log_softmax          (x) -> shape(x); over the last dim
//   attention            (q[B,T,C], k[B,T,C], v[B,T,C]) -> [B,T,C]; attrs heads, causal;
//                        per head softmax(q·kᵀ/√(C/H) + mask)·v
//   causal_mask          (s[..., T, T]) -> same; entries above the diagonal set to -inf
//   embedding            (ids[...], table[V, C]) -> [..., C]; ids must be integers in [0, V)
//   conv2d               (x[B,Ci,H,W], W[Co,Ci/groups,k,k], b[Co]?) -> [B,Co,H',W']; attrs
//                        kernel, stride, padding, groups (output channel o reads input
//                        channels of group o/(Co/groups) only; groups == Ci: depthwise);
//                        H' = (H + 2·padding − kernel)/stride + 1
//   max_pool2d           (x[B,C,H,W]) -> [B,C,H',W']; attrs kernel, stride, padding (−inf
//                        padding, below kernel), ceil_mode; H' = ⌊(H + 2·padding − kernel)/stride⌋
//                        + 1 (ceil_mode: PoolOutputSize in op_table.h)
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
//   clip                 (x) -> shape(x); attrs min, max: min(max(x, min), max) (ReLU6: 0, 6)
//   batch_moments        (x[B,C,...]) -> [2, C]: per channel the mean of x and of x² over
//                        every dim but 1 (batch normalization's batch statistics)
//   batch_norm           (x[B,C,...], m[2,C], gamma[C], beta[C]) -> shape(x); attr eps:
//                        (x − μ)/√(E[x²] − μ² + eps)·γ + β with μ = m[0], E[x²] = m[1]
//   mse_loss             (pred, target of the same shape) -> [] scalar; mean of (pred − target)²
//   erf                  (x) -> shape(x); the error function
//   avg_pool2d           (x[B,C,H,W]) -> [B,C,H',W']; attrs kernel, stride, padding, ceil_mode,
//                        count_include_pad: the mean over each window's input elements (or
//                        over the window within the padded input); H' as max_pool2d's
//   to_float16           (x) -> shape(x); x rounded to the nearest float16, ties to even (±inf
//                        from 65520 on), held in fp32 (ir/float_formats.h); the gradient is
//                        the output's gradient rounded alike, as PyTorch's x.half() passes it
//   to_bfloat16          (x) -> shape(x); the same for bfloat16
//   exp, log, abs, neg,  (x) -> shape(x); e^x, ln x, |x|, −x, 1/x, √x, ln(1 + e^x),
//   reciprocal, sqrt,    x/(1 + |x|), x·min(max(x + 3, 0), 6)/6 (torch.exp ... F.hardswish)
//   softplus, softsign,
//   hardswish
#define HETSYNTH_IR_OPS(X)                          \
  X(Linear, "linear")                               \
  X(MatMul, "matmul")                               \
  X(Add, "add")                                     \
  X(Mul, "mul")                                     \
  X(Relu, "relu")                                   \
  X(Gelu, "gelu")                                   \
  X(Sigmoid, "sigmoid")                             \
  X(Tanh, "tanh")                                   \
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
  X(MoECombine, "moe_combine")                      \
  X(Clip, "clip")                                   \
  X(BatchMoments, "batch_moments")                  \
  X(BatchNorm, "batch_norm")                        \
  X(MseLoss, "mse_loss")                            \
  X(AvgPool2d, "avg_pool2d")                        \
  X(Erf, "erf")                                     \
  X(ToFloat16, "to_float16")                        \
  X(ToBfloat16, "to_bfloat16")                      \
  X(Exp, "exp")                                     \
  X(Log, "log")                                     \
  X(Abs, "abs")                                     \
  X(Neg, "neg")                                     \
  X(Reciprocal, "reciprocal")                       \
  X(Sqrt, "sqrt")                                   \
  X(Softplus, "softplus")                           \
  X(Softsign, "softsign")                           \
  X(Hardswish, "hardswish")

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

}  // namespace hetsynth::ir
