// GPU dense operators (linear, matmul, attention) against the CPU kernels (gpu_op_check.h).
#include <utility>
#include <vector>

#include "gpu_op_check.h"
#include "ops/dense.h"

namespace hetsynth::runtime::testing {
namespace {

template <class X>
using GpuDenseTest = GpuOpTest<X>;
TYPED_TEST_SUITE(GpuDenseTest, GpuExecutors);

ir::Attrs AttentionAttrs(int64_t heads, bool causal) {
  ir::Attrs a;
  a.heads = heads;
  a.causal = causal;
  return a;
}

// [..., C] → its channels [start, start + len).
Tensor SliceLast(const Tensor& t, int64_t start, int64_t len) {
  const int64_t c = t.dim(-1), rows = t.numel() / c;
  ir::Shape s = t.shape;
  s.back() = len;
  Tensor r(s);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < len; ++j) r.data[static_cast<size_t>(i * len + j)] = t.data[static_cast<size_t>(i * c + start + j)];
  }
  return r;
}

// One GPU operator call on host inputs: forward `forward_steps` times (reusing the saved state,
// as the trainer does from step to step), then backward with the gradients of the inputs
// marked in `want`. Returns the output and the gradients (empty tensors where not wanted).
template <class X, class Fwd, class Bwd>
std::pair<Tensor, std::vector<Tensor>> RunGpu(X& x, const ir::Node& node, const std::vector<Tensor>& inputs,
                                              const ir::Shape& out_shape, const Tensor& dout,
                                              const std::vector<bool>& want, Fwd fwd, Bwd bwd,
                                              int forward_steps = 1) {
  std::vector<typename X::Tensor> in;
  for (const Tensor& t : inputs) in.push_back(x.Upload(t));
  std::vector<const typename X::Tensor*> in_ptr;
  for (const auto& t : in) in_ptr.push_back(&t);
  KernelContext ctx{0};
  gpu::Saved<X> saved;
  typename X::Tensor out = x.Make(out_shape);
  for (int s = 0; s < forward_steps; ++s) {
    x.Zero(out.ptr(), out.numel());
    fwd(x, node, ctx, in_ptr, out, saved);
  }
  typename X::Tensor gdout = x.Upload(dout);
  std::vector<typename X::Tensor> store;
  for (size_t i = 0; i < inputs.size(); ++i) store.push_back(x.Make(want[i] ? inputs[i].shape : ir::Shape{0}));
  std::vector<typename X::Tensor*> din(inputs.size(), nullptr);
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (want[i]) din[i] = &store[i];
  }
  bwd(x, node, ctx, in_ptr, out, gdout, saved, din);
  std::vector<Tensor> grads(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (want[i]) grads[i] = x.Download(store[i]);
  }
  return {x.Download(out), grads};
}

// The CPU reference of one call: output and all input gradients.
std::pair<Tensor, std::vector<Tensor>> RunCpu(const ir::Node& node, const std::vector<Tensor>& inputs,
                                              const ir::Shape& out_shape, const Tensor& dout) {
  KernelContext ctx{0};
  std::vector<const Tensor*> in;
  for (const Tensor& t : inputs) in.push_back(&t);
  Tensor out(out_shape);
  SavedState saved;
  Forward(node, ctx, in, out, saved);
  std::vector<Tensor> grads;
  for (const Tensor& t : inputs) grads.emplace_back(t.shape);
  std::vector<Tensor*> din;
  for (Tensor& g : grads) din.push_back(&g);
  Backward(node, ctx, in, out, dout, saved, din);
  return {out, grads};
}

TYPED_TEST(GpuDenseTest, Linear) {
  using X = TypeParam;
  struct Shapes {
    ir::Shape x, w;
    bool bias;
  };
  for (const Shapes& s : std::vector<Shapes>{{{2, 5, 8}, {6, 8}, true},
                                             {{2, 5, 8}, {6, 8}, false},
                                             {{3, 8}, {6, 8}, true},
                                             {{1, 1}, {1, 1}, true},
                                             {{1, 1, 1}, {1, 1}, false},
                                             {{4, 1, 3, 7}, {5, 7}, true},
                                             {{7}, {3, 7}, true},
                                             {{2, 3, 1}, {9, 1}, true},
                                             {{300, 4}, {3, 4}, true}}) {
    std::vector<ir::Shape> shapes = {s.x, s.w};
    if (s.bias) shapes.push_back({s.w[0]});
    ExpectMatchesCpu(this->x(), RandomCase(ir::OpKind::kLinear, shapes), &gpu::LinearForward<X>,
                     &gpu::LinearBackward<X>);
  }
}

// The executor drops the bias on ranks that do not hold it: two inputs, and a din of size 2.
TYPED_TEST(GpuDenseTest, LinearWithoutBiasInput) {
  using X = TypeParam;
  const std::vector<Tensor> inputs = {RandomTensor({2, 5, 8}, 3), RandomTensor({6, 8}, 4)};
  ir::Node node;
  node.name = "fc";
  node.kind = ir::OpKind::kLinear;
  const ir::Shape out_shape = {2, 5, 6};
  const Tensor dout = RandomTensor(out_shape, 5);
  const auto [cpu_out, cpu_grads] = RunCpu(node, inputs, out_shape, dout);
  const auto [out, grads] = RunGpu(this->x(), node, inputs, out_shape, dout, {true, true}, &gpu::LinearForward<X>,
                                   &gpu::LinearBackward<X>);
  EXPECT_LE(RelativeError(out, cpu_out), 1e-5);
  EXPECT_LE(RelativeError(grads[0], cpu_grads[0]), 1e-5);
  EXPECT_LE(RelativeError(grads[1], cpu_grads[1]), 1e-5);
}

// Only some gradients wanted (frozen weight, input without gradient).
TYPED_TEST(GpuDenseTest, LinearPartialGradients) {
  using X = TypeParam;
  const std::vector<Tensor> inputs = {RandomTensor({3, 4, 5}, 8), RandomTensor({7, 5}, 9), RandomTensor({7}, 10)};
  ir::Node node;
  node.name = "fc";
  node.kind = ir::OpKind::kLinear;
  const ir::Shape out_shape = {3, 4, 7};
  const Tensor dout = RandomTensor(out_shape, 11);
  const auto [cpu_out, cpu_grads] = RunCpu(node, inputs, out_shape, dout);
  for (const std::vector<bool>& want : std::vector<std::vector<bool>>{{true, false, false}, {false, true, false}, {false, false, true}}) {
    const auto [out, grads] = RunGpu(this->x(), node, inputs, out_shape, dout, want, &gpu::LinearForward<X>,
                                     &gpu::LinearBackward<X>);
    EXPECT_LE(RelativeError(out, cpu_out), 1e-5);
    for (size_t i = 0; i < 3; ++i) {
      if (want[i]) {
        EXPECT_LE(RelativeError(grads[i], cpu_grads[i]), 1e-5) << "input " << i;
      }
    }
  }
}

TYPED_TEST(GpuDenseTest, MatMul) {
  using X = TypeParam;
  for (const auto& [a, b] : std::vector<std::pair<ir::Shape, ir::Shape>>{
           {{2, 5, 8}, {8, 6}},          // shared 2-D right operand
           {{5, 8}, {8, 6}},             // plain
           {{1, 1}, {1, 1}},
           {{2, 3, 5, 8}, {8, 1}},
           {{2, 5, 8}, {2, 8, 6}},       // batched
           {{2, 3, 5, 8}, {2, 3, 8, 6}},
           {{3, 1, 4}, {3, 4, 1}},
           {{1, 7, 3}, {1, 3, 5}},
           {{4, 2, 1, 3}, {4, 2, 3, 2}}}) {
    ExpectMatchesCpu(this->x(), RandomCase(ir::OpKind::kMatMul, {a, b}), &gpu::MatMulForward<X>,
                     &gpu::MatMulBackward<X>);
  }
}

TYPED_TEST(GpuDenseTest, Attention) {
  using X = TypeParam;
  struct Case {
    ir::Shape s;
    int64_t heads;
  };
  for (bool causal : {false, true}) {
    for (const Case& c : std::vector<Case>{{{2, 5, 8}, 2},
                                           {{2, 5, 8}, 1},
                                           {{2, 5, 8}, 8},  // D = 1
                                           {{1, 7, 12}, 3},
                                           {{3, 1, 6}, 2},  // T = 1
                                           {{1, 1, 1}, 1},
                                           {{2, 9, 20}, 4}}) {
      ExpectMatchesCpu(this->x(), RandomCase(ir::OpKind::kAttention, {c.s, c.s, c.s}, AttentionAttrs(c.heads, causal)),
                       &gpu::AttentionForward<X>, &gpu::AttentionBackward<X>);
    }
  }
}

// Large score magnitudes: the softmax must subtract the row max (and the causal tail stay 0).
TYPED_TEST(GpuDenseTest, AttentionLargeScores) {
  using X = TypeParam;
  for (bool causal : {false, true}) {
    OpCase c = RandomCase(ir::OpKind::kAttention, {{2, 6, 8}, {2, 6, 8}, {2, 6, 8}}, AttentionAttrs(2, causal), 5);
    for (float& v : c.inputs[0].data) v *= 30.0f;
    for (float& v : c.inputs[1].data) v *= 30.0f;
    ExpectMatchesCpu(this->x(), c, &gpu::AttentionForward<X>, &gpu::AttentionBackward<X>);
  }
}

// Only some of dq, dk, dv wanted; and forward run twice on one saved state (buffer reuse).
TYPED_TEST(GpuDenseTest, AttentionPartialGradientsAndReuse) {
  using X = TypeParam;
  const ir::Shape s = {2, 5, 8};
  const std::vector<Tensor> inputs = {RandomTensor(s, 21), RandomTensor(s, 22), RandomTensor(s, 23)};
  ir::Node node;
  node.name = "attn";
  node.kind = ir::OpKind::kAttention;
  node.attrs = AttentionAttrs(2, true);
  const Tensor dout = RandomTensor(s, 24);
  const auto [cpu_out, cpu_grads] = RunCpu(node, inputs, s, dout);
  for (const std::vector<bool>& want : std::vector<std::vector<bool>>{
           {true, false, false}, {false, true, false}, {false, false, true}, {false, false, false}, {true, true, true}}) {
    const auto [out, grads] = RunGpu(this->x(), node, inputs, s, dout, want, &gpu::AttentionForward<X>,
                                     &gpu::AttentionBackward<X>, /*forward_steps=*/2);
    EXPECT_LE(RelativeError(out, cpu_out), 1e-5);
    for (size_t i = 0; i < 3; ++i) {
      if (want[i]) {
        EXPECT_LE(RelativeError(grads[i], cpu_grads[i]), 1e-5) << "input " << i;
      }
    }
  }
}

// As the executor runs a head-parallel attention: each rank gets the C slice of its heads and
// attrs.heads set to its local head count; the pieces must equal the slices of the full op.
TYPED_TEST(GpuDenseTest, AttentionLocalHeads) {
  using X = TypeParam;
  constexpr int64_t kB = 2, kT = 5, kC = 16, kHeads = 4;
  const ir::Shape s = {kB, kT, kC};
  for (bool causal : {false, true}) {
    for (int64_t ranks : {2, 4}) {
      const std::vector<Tensor> inputs = {RandomTensor(s, 31), RandomTensor(s, 32), RandomTensor(s, 33)};
      ir::Node full;
      full.name = "attn";
      full.kind = ir::OpKind::kAttention;
      full.attrs = AttentionAttrs(kHeads, causal);
      const Tensor dout = RandomTensor(s, 34);
      const auto [cpu_out, cpu_grads] = RunCpu(full, inputs, s, dout);
      ir::Node local = full;
      local.attrs.heads = kHeads / ranks;
      const int64_t width = kC / ranks;
      for (int64_t r = 0; r < ranks; ++r) {
        std::vector<Tensor> piece;
        for (const Tensor& t : inputs) piece.push_back(SliceLast(t, r * width, width));
        const ir::Shape ps = {kB, kT, width};
        const auto [out, grads] = RunGpu(this->x(), local, piece, ps, SliceLast(dout, r * width, width),
                                         {true, true, true}, &gpu::AttentionForward<X>, &gpu::AttentionBackward<X>);
        EXPECT_LE(RelativeError(out, SliceLast(cpu_out, r * width, width)), 1e-5) << "rank " << r << " of " << ranks;
        for (size_t i = 0; i < 3; ++i) {
          EXPECT_LE(RelativeError(grads[i], SliceLast(cpu_grads[i], r * width, width)), 1e-5)
              << "rank " << r << " of " << ranks << ", input " << i;
        }
      }
    }
  }
}

}  // namespace
}  // namespace hetsynth::runtime::testing
