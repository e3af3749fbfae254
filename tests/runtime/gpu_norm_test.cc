// GPU normalization operators (layer norm, softmax, log-softmax, cross entropy, batch_moments,
// batch_norm, mse_loss) against the CPU kernels (gpu_op_check.h), including cross entropy,
// batch_moments and mse_loss on pieces (ctx.shard) and cross entropy's label check.
#include <limits>

#include "gpu_op_check.h"
#include "ops/norm.h"

namespace hetsynth::runtime::testing {
namespace {

template <class X>
using GpuNormTest = GpuOpTest<X>;
TYPED_TEST_SUITE(GpuNormTest, GpuExecutors);

constexpr float kInf = std::numeric_limits<float>::infinity();

// Labels for logits of `shape`: class ids spread over [0, K).
Tensor Labels(const ir::Shape& logits_shape, int64_t mul = 5) {
  const int64_t k = logits_shape.back();
  Tensor labels(ir::Shape(logits_shape.begin(), logits_shape.end() - 1));
  for (int64_t i = 0; i < labels.numel(); ++i) {
    labels.data[static_cast<size_t>(i)] = static_cast<float>((i * mul + i / 3) % k);
  }
  return labels;
}

OpCase CrossEntropyCase(const ir::Shape& logits_shape, float scale = 1.0f, uint32_t seed = 1) {
  OpCase c = RandomCase(ir::OpKind::kCrossEntropy, {logits_shape, {}}, {}, seed);
  for (float& v : c.inputs[0].data) v *= scale;
  c.inputs[1] = Labels(logits_shape);
  return c;
}

TYPED_TEST(GpuNormTest, LayerNorm) {
  using X = TypeParam;
  for (const ir::Shape& s : {ir::Shape{5}, ir::Shape{3, 4, 7}, ir::Shape{1, 1}, ir::Shape{2, 1},
                             ir::Shape{1, 33}, ir::Shape{6, 130}, ir::Shape{2, 1, 3, 9}}) {
    for (double eps : {1e-5, 1e-2}) {
      ir::Attrs a;
      a.eps = eps;
      OpCase c = RandomCase(ir::OpKind::kLayerNorm, {s, {s.back()}, {s.back()}}, a);
      ExpectMatchesCpu(this->x(), c, &gpu::LayerNormForward<X>, &gpu::LayerNormBackward<X>);
    }
  }
}

// Rows far from zero (the two-pass variance) and of very different scales.
TYPED_TEST(GpuNormTest, LayerNormOffsetRows) {
  using X = TypeParam;
  OpCase c = RandomCase(ir::OpKind::kLayerNorm, {{4, 17}, {17}, {17}}, {}, 3);
  for (int64_t i = 0; i < 4 * 17; ++i) {
    float& v = c.inputs[0].data[static_cast<size_t>(i)];
    v = v * (i < 17 ? 1e-3f : i < 34 ? 100.0f : 1.0f) + (i >= 51 ? 1000.0f : 0.0f);
  }
  ExpectMatchesCpu(this->x(), c, &gpu::LayerNormForward<X>, &gpu::LayerNormBackward<X>);
}

TYPED_TEST(GpuNormTest, Softmax) {
  using X = TypeParam;
  for (const ir::Shape& s : {ir::Shape{5}, ir::Shape{3, 4, 7}, ir::Shape{1}, ir::Shape{2, 1},
                             ir::Shape{1, 1, 1}, ir::Shape{4, 300}}) {
    for (float scale : {1.0f, 40.0f}) {
      OpCase c = RandomCase(ir::OpKind::kSoftmax, {s});
      for (float& v : c.inputs[0].data) v *= scale;
      ExpectMatchesCpu(this->x(), c, &gpu::SoftmaxForward<X>, &gpu::SoftmaxBackward<X>);
    }
  }
}

TYPED_TEST(GpuNormTest, LogSoftmax) {
  using X = TypeParam;
  for (const ir::Shape& s : {ir::Shape{5}, ir::Shape{3, 4, 7}, ir::Shape{1}, ir::Shape{2, 1},
                             ir::Shape{1, 1, 1}, ir::Shape{4, 300}}) {
    for (float scale : {1.0f, 40.0f}) {
      OpCase c = RandomCase(ir::OpKind::kLogSoftmax, {s});
      for (float& v : c.inputs[0].data) v *= scale;
      ExpectMatchesCpu(this->x(), c, &gpu::LogSoftmaxForward<X>, &gpu::LogSoftmaxBackward<X>);
    }
  }
}

// -inf entries give exactly 0 (softmax) / -inf (log-softmax) while the row has a finite entry;
// a row of only -inf gives NaN, as on the CPU; a NaN entry makes its row NaN.
TYPED_TEST(GpuNormTest, SoftmaxSpecialValues) {
  using X = TypeParam;
  for (ir::OpKind kind : {ir::OpKind::kSoftmax, ir::OpKind::kLogSoftmax}) {
    OpCase masked = RandomCase(kind, {{3, 6}});
    for (int64_t i = 0; i < 18; ++i) {
      if (i % 6 > i / 6 + 1) masked.inputs[0].data[static_cast<size_t>(i)] = -kInf;
    }
    OpCase special = masked;
    for (int64_t j = 0; j < 6; ++j) special.inputs[0].data[static_cast<size_t>(j)] = -kInf;
    special.inputs[0].data[8] = std::numeric_limits<float>::quiet_NaN();
    for (const OpCase* c : {&masked, &special}) {
      if (kind == ir::OpKind::kSoftmax) {
        ExpectMatchesCpu(this->x(), *c, &gpu::SoftmaxForward<X>, &gpu::SoftmaxBackward<X>);
      } else {
        ExpectMatchesCpu(this->x(), *c, &gpu::LogSoftmaxForward<X>, &gpu::LogSoftmaxBackward<X>);
      }
    }
  }
}

TYPED_TEST(GpuNormTest, CrossEntropy) {
  using X = TypeParam;
  // {600, 7}: more rows than one chunk of the loss's reduction (256), and not a multiple.
  for (const ir::Shape& s : {ir::Shape{4, 5}, ir::Shape{2, 3, 6}, ir::Shape{1, 1}, ir::Shape{3, 21},
                             ir::Shape{1, 40}, ir::Shape{600, 7}, ir::Shape{5, 1}, ir::Shape{3}}) {
    for (float scale : {1.0f, 30.0f}) {
      ExpectMatchesCpu(this->x(), CrossEntropyCase(s, scale), &gpu::CrossEntropyForward<X>,
                       &gpu::CrossEntropyBackward<X>);
    }
  }
  // More rows than two passes of 256-row chunks reduce (65,536): a third pass (the loss once
  // counted only the first 65,536 rows).
  ExpectMatchesCpu(this->x(), CrossEntropyCase({70001, 2}), &gpu::CrossEntropyForward<X>, &gpu::CrossEntropyBackward<X>);
}

// -inf logits away from the label: their probability is exactly 0.
TYPED_TEST(GpuNormTest, CrossEntropyMaskedLogits) {
  using X = TypeParam;
  OpCase c = CrossEntropyCase({4, 6});
  for (int64_t i = 0; i < 4; ++i) {
    for (int64_t j = 0; j < 6; ++j) {
      if (j != static_cast<int64_t>(c.inputs[1].data[static_cast<size_t>(i)]) && (i + j) % 2 == 0) {
        c.inputs[0].data[static_cast<size_t>(i * 6 + j)] = -kInf;
      }
    }
  }
  ExpectMatchesCpu(this->x(), c, &gpu::CrossEntropyForward<X>, &gpu::CrossEntropyBackward<X>);
}

// Rows [start, start + length) of `t` along `dim`.
Tensor SliceOf(const Tensor& t, int dim, int64_t start, int64_t length) {
  ir::Shape shape = t.shape;
  shape[static_cast<size_t>(dim)] = length;
  Tensor piece(shape);
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < dim; ++d) outer *= t.shape[static_cast<size_t>(d)];
  for (size_t d = static_cast<size_t>(dim) + 1; d < t.shape.size(); ++d) inner *= t.shape[d];
  const int64_t full = t.shape[static_cast<size_t>(dim)];
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t r = 0; r < length; ++r) {
      for (int64_t k = 0; k < inner; ++k) {
        piece.data[static_cast<size_t>((o * length + r) * inner + k)] =
            t.data[static_cast<size_t>((o * full + start + r) * inner + k)];
      }
    }
  }
  return piece;
}

// A loss split into pieces along `dim` (`lengths` each): every piece (ctx.shard) matches the CPU,
// and the pieces' losses add up to the whole tensor's. Fwd/Bwd: the loss's GPU operator pair.
struct LossSplit {
  ir::Shape full;
  int dim;
  std::vector<int64_t> lengths;
};

template <class X, class Fwd, class Bwd>
void ExpectPiecesSumToWhole(X& x, const OpCase& whole, const LossSplit& sp, Fwd fwd, Bwd bwd) {
  ExpectMatchesCpu(x, whole, fwd, bwd);
  const ir::Node node = CaseNode(whole);
  auto loss_of = [&](const std::vector<Tensor>& inputs, const KernelContext& ctx) {
    auto a = x.Upload(inputs[0]);
    auto b = x.Upload(inputs[1]);
    auto loss = x.Make({});
    gpu::Saved<X> saved;
    fwd(x, node, ctx, std::vector<const typename X::Tensor*>{&a, &b}, loss, saved);
    return static_cast<double>(x.Download(loss).data[0]);
  };
  const double full_loss = loss_of(whole.inputs, KernelContext{});
  double sum = 0;
  int64_t start = 0;
  for (int64_t len : sp.lengths) {
    OpCase c = whole;
    c.inputs = {SliceOf(whole.inputs[0], sp.dim, start, len), SliceOf(whole.inputs[1], sp.dim, start, len)};
    c.has_shard = true;
    c.shard = ShardInfo{sp.full, sp.dim, start};
    ExpectMatchesCpu(x, c, fwd, bwd);
    KernelContext ctx;
    ctx.shard = &c.shard;
    sum += loss_of(c.inputs, ctx);
    start += len;
  }
  EXPECT_NEAR(sum, full_loss, 1e-5 * std::max(1.0, std::fabs(full_loss))) << ir::ShapeString(sp.full);
}

// A piece of the logits (split on a leading dim) divides by the full row count, like the CPU;
// and the pieces' losses add up to the whole tensor's.
TYPED_TEST(GpuNormTest, CrossEntropyShard) {
  using X = TypeParam;
  for (const LossSplit& sp : {LossSplit{{6, 5}, 0, {2, 3, 1}}, LossSplit{{7, 3, 4}, 0, {4, 1, 2}},
                              LossSplit{{2, 6, 5}, 1, {1, 2, 3}}, LossSplit{{300, 9}, 0, {257, 43}}}) {
    ExpectPiecesSumToWhole(this->x(), CrossEntropyCase(sp.full, 2.0f, 11), sp, &gpu::CrossEntropyForward<X>,
                           &gpu::CrossEntropyBackward<X>);
  }
}

// Labels that are not class ids abort with the CPU's message (HS_CHECK), also from the device.
template <class X>
void CrossEntropyOn(X& x, const Tensor& logits, const Tensor& labels) {
  ir::Node node;
  node.name = "loss";
  node.kind = ir::OpKind::kCrossEntropy;
  auto l = x.Upload(logits);
  auto y = x.Upload(labels);
  auto out = x.Make({});
  gpu::Saved<X> saved;
  gpu::CrossEntropyForward<X>(x, node, KernelContext{}, std::vector<const typename X::Tensor*>{&l, &y}, out,
                              saved);
}

TYPED_TEST(GpuNormTest, CrossEntropyRejectsBadLabels) {
  // Re-executes the binary for each death: a forked child cannot use the parent's CUDA context.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const Tensor logits = RandomTensor({5, 4}, 3);
  Tensor labels(ir::Shape{5});
  labels.data = {0, 1, 2, 3, 0};
  CrossEntropyOn(this->x(), logits, labels);  // fine
  for (auto [at, v, text] : {std::tuple{3, 4.0f, "label 4 at position 3"},
                             std::tuple{0, -1.0f, "label -1 at position 0"},
                             std::tuple{2, 1.5f, "label 1.5 at position 2"}}) {
    Tensor bad = labels;
    bad.data[static_cast<size_t>(at)] = v;
    bad.data[4] = 9.0f;  // a later bad label: the message names the first
    EXPECT_DEATH(CrossEntropyOn(this->x(), logits, bad),
                 std::string("cross_entropy 'loss': ") + text + " is not a class id in \\[0, 4\\)");
  }
}

// ---- batch norm ----------------------------------------------------------------------------

// Shapes [B, C, ...]: one element, a 2-D [B, C], images, several per-channel chunks of the
// two-pass sums (kBatchNormChunk = 512) with chunks crossing image boundaries, and many rows of
// one element per channel.
const std::vector<ir::Shape>& BatchNormShapes() {
  static const std::vector<ir::Shape> shapes = {{1, 1},       {6, 3},          {2, 3, 7},   {4, 3, 5, 5},
                                                {3, 2, 700},  {5, 4, 13, 11},  {1000, 2},   {2, 1, 1, 1, 3}};
  return shapes;
}

TYPED_TEST(GpuNormTest, BatchMoments) {
  using X = TypeParam;
  for (const ir::Shape& s : BatchNormShapes()) {
    SCOPED_TRACE(ir::ShapeString(s));
    OpCase c = RandomCase(ir::OpKind::kBatchMoments, {s});
    for (float& v : c.inputs[0].data) v = 3.0f * v + 0.5f;  // a mean far from 0
    ExpectMatchesCpu(this->x(), c, &gpu::BatchMomentsForward<X>, &gpu::BatchMomentsBackward<X>);
  }
}

// A piece of x (ctx.shard) divides by the whole tensor's count per channel, as the CPU does, so
// that the pieces' moments add up to the whole's.
TYPED_TEST(GpuNormTest, BatchMomentsShard) {
  using X = TypeParam;
  struct Split {
    ir::Shape full;
    int dim;
    std::vector<int64_t> lengths;
  };
  for (const Split& sp : {Split{{6, 3, 4}, 0, {2, 3, 1}}, Split{{2, 3, 9, 4}, 2, {4, 5}},
                          Split{{700, 2}, 0, {600, 100}}}) {
    SCOPED_TRACE(ir::ShapeString(sp.full));
    const OpCase whole = RandomCase(ir::OpKind::kBatchMoments, {sp.full}, {}, 5);
    X& x = this->x();
    const ir::Node node = CaseNode(whole);
    auto xin = x.Upload(whole.inputs[0]);
    auto out = x.Make({2, sp.full[1]});
    gpu::Saved<X> saved;
    gpu::BatchMomentsForward<X>(x, node, KernelContext{}, std::vector<const typename X::Tensor*>{&xin}, out, saved);
    const Tensor full_moments = x.Download(out);
    std::vector<double> sum(full_moments.data.size(), 0.0);
    int64_t start = 0;
    for (int64_t len : sp.lengths) {
      OpCase c = whole;
      c.inputs = {SliceOf(whole.inputs[0], sp.dim, start, len)};
      c.has_shard = true;
      c.shard = ShardInfo{sp.full, sp.dim, start};
      ExpectMatchesCpu(x, c, &gpu::BatchMomentsForward<X>, &gpu::BatchMomentsBackward<X>);
      KernelContext ctx;
      ctx.shard = &c.shard;
      auto piece = x.Upload(c.inputs[0]);
      auto piece_out = x.Make({2, sp.full[1]});
      gpu::Saved<X> piece_saved;
      gpu::BatchMomentsForward<X>(x, node, ctx, std::vector<const typename X::Tensor*>{&piece}, piece_out,
                                  piece_saved);
      const Tensor m = x.Download(piece_out);
      for (size_t i = 0; i < sum.size(); ++i) sum[i] += m.data[i];
      start += len;
    }
    for (size_t i = 0; i < sum.size(); ++i) EXPECT_NEAR(sum[i], full_moments.data[i], 1e-5) << "moment " << i;
  }
}

// x with moments m [2, C] that are x's own (as batch_moments gives them) or arbitrary, γ and β.
OpCase BatchNormCase(const ir::Shape& s, double eps, bool own_moments, uint32_t seed = 1) {
  const int64_t ch = s[1];
  ir::Attrs a;
  a.eps = eps;
  OpCase c = RandomCase(ir::OpKind::kBatchNorm, {s, {2, ch}, {ch}, {ch}}, a, seed);
  for (float& v : c.inputs[0].data) v = 2.0f * v + 0.25f;
  Tensor& m = c.inputs[1];
  for (int64_t k = 0; k < ch; ++k) {
    double s1 = 0, s2 = 0, n = 0;
    const int64_t inner = c.inputs[0].numel() / (s[0] * ch);
    for (int64_t b = 0; b < s[0]; ++b) {
      for (int64_t i = 0; i < inner; ++i) {
        const double v = c.inputs[0].data[static_cast<size_t>((b * ch + k) * inner + i)];
        s1 += v, s2 += v * v, n += 1;
      }
    }
    if (own_moments) {
      m.data[static_cast<size_t>(k)] = static_cast<float>(s1 / n);
      m.data[static_cast<size_t>(ch + k)] = static_cast<float>(s2 / n);
    } else {
      // A mean in [-1, 1) and a variance in [0.05, 1.05).
      const float mu = m.data[static_cast<size_t>(k)];
      m.data[static_cast<size_t>(ch + k)] = mu * mu + 0.55f + 0.5f * m.data[static_cast<size_t>(ch + k)];
    }
  }
  return c;
}

TYPED_TEST(GpuNormTest, BatchNorm) {
  using X = TypeParam;
  for (const ir::Shape& s : BatchNormShapes()) {
    for (double eps : {1e-5, 1e-1}) {
      for (bool own : {true, false}) {
        SCOPED_TRACE(StrCat(ir::ShapeString(s), " eps=", eps, " own moments=", own));
        OpCase c = BatchNormCase(s, eps, own);
        c.tol = 2e-5;  // the moments' gradient sums B·inner products per channel in another order
        ExpectMatchesCpu(this->x(), c, &gpu::BatchNormForward<X>, &gpu::BatchNormBackward<X>);
      }
    }
  }
}

// A variance that rounds below 0 (E[x²] < μ²) counts as 0, on both sides.
TYPED_TEST(GpuNormTest, BatchNormNegativeVariance) {
  using X = TypeParam;
  OpCase c = BatchNormCase({3, 2, 4}, 1e-3, false);
  c.inputs[1].data = {0.5f, -0.25f, 0.2499f, 0.0f};  // channel 0: E[x²] − μ² < 0; channel 1: v = 0
  ExpectMatchesCpu(this->x(), c, &gpu::BatchNormForward<X>, &gpu::BatchNormBackward<X>);
}

// ---- mse loss ------------------------------------------------------------------------------

OpCase MseLossCase(const ir::Shape& s, float offset = 0.0f, uint32_t seed = 1) {
  OpCase c = RandomCase(ir::OpKind::kMseLoss, {s, s}, {}, seed);
  for (float& v : c.inputs[0].data) v = 2.0f * v + offset;
  return c;
}

// Shapes: one element, small, one chunk of the sums (kMseLossChunk = 256) and a little more,
// two passes ({600, 7}: 17 partials) and three ({300, 300}: 352 partials, then 2).
TYPED_TEST(GpuNormTest, MseLoss) {
  using X = TypeParam;
  for (const ir::Shape& s : {ir::Shape{1}, ir::Shape{5}, ir::Shape{3, 4, 7}, ir::Shape{256}, ir::Shape{257},
                             ir::Shape{600, 7}, ir::Shape{300, 300}, ir::Shape{2, 1, 3, 9}}) {
    for (float offset : {0.0f, 50.0f}) {
      SCOPED_TRACE(StrCat(ir::ShapeString(s), " offset=", offset));
      ExpectMatchesCpu(this->x(), MseLossCase(s, offset), &gpu::MseLossForward<X>, &gpu::MseLossBackward<X>);
    }
  }
}

// Prediction equal to the target: loss and gradients exactly 0; a NaN prediction or an infinite
// target gives a NaN / +inf loss as on the CPU; a squared difference above float's range (1e40)
// whose mean is within it gives that finite mean, as the CPU's double sum does.
TYPED_TEST(GpuNormTest, MseLossSpecialValues) {
  using X = TypeParam;
  OpCase same = MseLossCase({4, 5});
  same.inputs[1] = same.inputs[0];
  same.tol = 0;
  ExpectMatchesCpu(this->x(), same, &gpu::MseLossForward<X>, &gpu::MseLossBackward<X>);
  OpCase nan = MseLossCase({3, 6});
  nan.inputs[0].data[7] = std::numeric_limits<float>::quiet_NaN();
  ExpectMatchesCpu(this->x(), nan, &gpu::MseLossForward<X>, &gpu::MseLossBackward<X>);
  OpCase inf = MseLossCase({3, 6});
  inf.inputs[1].data[4] = kInf;
  ExpectMatchesCpu(this->x(), inf, &gpu::MseLossForward<X>, &gpu::MseLossBackward<X>);
  OpCase big = MseLossCase({1000});
  big.inputs[0].data[3] = 1e20f;  // loss ≈ 1e40 / 1000
  ExpectMatchesCpu(this->x(), big, &gpu::MseLossForward<X>, &gpu::MseLossBackward<X>);
}

// Either input gradient may be missing (din null): the other is as with both.
TYPED_TEST(GpuNormTest, MseLossOneGradient) {
  using X = TypeParam;
  X& x = this->x();
  const OpCase c = MseLossCase({5, 9});
  const ir::Node node = CaseNode(c);
  auto p = x.Upload(c.inputs[0]);
  auto t = x.Upload(c.inputs[1]);
  const std::vector<const typename X::Tensor*> in = {&p, &t};
  auto out = x.Make({});
  gpu::Saved<X> saved;
  gpu::MseLossForward<X>(x, node, KernelContext{}, in, out, saved);
  const Tensor dloss = RandomTensor({}, 3);
  auto dout = x.Upload(dloss);
  std::vector<Tensor> cpu_din = {Tensor(c.inputs[0].shape), Tensor(c.inputs[1].shape)};
  {
    const std::vector<const Tensor*> cpu_in = {&c.inputs[0], &c.inputs[1]};
    Tensor cpu_out(ir::Shape{});
    SavedState cpu_saved;
    Forward(node, KernelContext{}, cpu_in, cpu_out, cpu_saved);
    Backward(node, KernelContext{}, cpu_in, cpu_out, dloss, cpu_saved, std::vector<Tensor*>{&cpu_din[0], &cpu_din[1]});
  }
  for (size_t only : {size_t{0}, size_t{1}}) {
    SCOPED_TRACE(StrCat("only the gradient of input ", only));
    auto d = x.Make(c.inputs[only].shape);
    std::vector<typename X::Tensor*> din = {nullptr, nullptr};
    din[only] = &d;
    gpu::MseLossBackward<X>(x, node, KernelContext{}, in, out, dout, saved, din);
    EXPECT_LE(RelativeError(x.Download(d), cpu_din[only]), 1e-6);
  }
  std::vector<typename X::Tensor*> none = {nullptr, nullptr};
  gpu::MseLossBackward<X>(x, node, KernelContext{}, in, out, dout, saved, none);  // nothing to do
}

// A piece of the prediction and target (ctx.shard, split on any dim) divides by the whole
// tensor's element count, like the CPU, so that the pieces' losses add up to the whole's.
TYPED_TEST(GpuNormTest, MseLossShard) {
  using X = TypeParam;
  for (const LossSplit& sp : {LossSplit{{6, 5}, 0, {2, 3, 1}}, LossSplit{{2, 6, 5}, 1, {1, 2, 3}},
                              LossSplit{{4, 3, 7}, 2, {5, 2}}, LossSplit{{300, 9}, 0, {257, 43}},
                              LossSplit{{10}, 0, {7, 3}}}) {
    SCOPED_TRACE(StrCat(ir::ShapeString(sp.full), " split on dim ", sp.dim));
    ExpectPiecesSumToWhole(this->x(), MseLossCase(sp.full, 0.5f, 11), sp, &gpu::MseLossForward<X>,
                           &gpu::MseLossBackward<X>);
  }
}

}  // namespace
}  // namespace hetsynth::runtime::testing
