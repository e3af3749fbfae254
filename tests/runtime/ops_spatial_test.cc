// CPU kernels for attention, convolution, pooling and mixture-of-experts routing: gradients
// against finite differences, forward values against naive loops and hand-made examples.
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "hetsynth/ir/graph.h"
#include "hetsynth/runtime/kernels.h"
#include "hetsynth/runtime/shard.h"
#include "runtime/gradcheck.h"

namespace hetsynth::runtime {
namespace {

using ir::Attrs;
using ir::OpKind;
using ir::Shape;
using testing::Case;
using testing::CheckGradients;
using testing::GradCase;
using testing::MakeNode;

Tensor RandomTensor(Shape shape, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Tensor t(std::move(shape));
  for (float& v : t.data) v = normal(rng);
  return t;
}

// Distinct values 0.1 apart in a random order, so that a ±1e-2 perturbation never changes
// which element of a pooling window is the largest.
Tensor SeparatedTensor(Shape shape, uint32_t seed) {
  Tensor t(std::move(shape));
  std::vector<int> perm(t.data.size());
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(seed));
  for (size_t i = 0; i < perm.size(); ++i) t.data[i] = 0.1f * float(perm[i] - int(perm.size() / 2));
  return t;
}

Tensor RunForward(OpKind kind, const Attrs& attrs, std::vector<const Tensor*> in,
                  SavedState* saved = nullptr) {
  return testing::RunForward(kind, attrs, std::move(in), 0, saved);
}

Tensor MakeRoute(const std::vector<std::vector<std::array<float, 3>>>& entries) {
  const auto tokens = static_cast<int64_t>(entries.size());
  const auto k = static_cast<int64_t>(entries[0].size());
  Tensor route({tokens, k, 3});
  for (int64_t s = 0; s < tokens; ++s) {
    for (int64_t j = 0; j < k; ++j) {
      for (int64_t c = 0; c < 3; ++c) route.at({s, j, c}) = entries[s][j][c];
    }
  }
  return route;
}

// Expert, slot and weight of every choice; slots go 0, 1 per expert with some choices dropped.
Tensor FixedRoute() {
  return MakeRoute({{{{0, 0, 0.6f}}, {{1, 0, 0.4f}}},
                    {{{1, 1, 0.7f}}, {{2, 0, -0.3f}}},
                    {{{0, 1, 0.5f}}, {{2, -1, 0.5f}}},
                    {{{2, 1, 0.8f}}, {{0, -1, 0.2f}}},
                    {{{1, -1, 0.9f}}, {{0, -1, 1.1f}}}});
}

// ---------------------------------------------------------------------------------------------
// Attention

Attrs AttentionAttrs(int64_t heads, bool causal) {
  Attrs a;
  a.heads = heads;
  a.causal = causal;
  return a;
}

// softmax(q·kᵀ/√D + mask)·v per (batch, head), in double with plain loops.
Tensor NaiveAttention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t heads,
                      bool causal) {
  const int64_t nb = q.dim(0), t = q.dim(1), c = q.dim(2), d = c / heads;
  Tensor out(q.shape);
  for (int64_t b = 0; b < nb; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < t; ++i) {
        std::vector<double> p(t, 0.0);
        double mx = -1e300, sum = 0;
        const int64_t n = causal ? i + 1 : t;
        for (int64_t j = 0; j < n; ++j) {
          for (int64_t e = 0; e < d; ++e)
            p[j] += double(q.at({b, i, h * d + e})) * k.at({b, j, h * d + e});
          p[j] /= std::sqrt(double(d));
          mx = std::max(mx, p[j]);
        }
        for (int64_t j = 0; j < n; ++j) sum += p[j] = std::exp(p[j] - mx);
        for (int64_t e = 0; e < d; ++e) {
          double o = 0;
          for (int64_t j = 0; j < n; ++j) o += p[j] / sum * v.at({b, j, h * d + e});
          out.at({b, i, h * d + e}) = static_cast<float>(o);
        }
      }
    }
  }
  return out;
}

TEST(AttentionTest, MatchesNaiveLoops) {
  for (int64_t heads : {1, 3}) {
    for (bool causal : {false, true}) {
      const Tensor q = RandomTensor({2, 5, 6}, 1), k = RandomTensor({2, 5, 6}, 2),
                   v = RandomTensor({2, 5, 6}, 3);
      const Tensor out =
          RunForward(OpKind::kAttention, AttentionAttrs(heads, causal), {&q, &k, &v});
      const Tensor want = NaiveAttention(q, k, v, heads, causal);
      for (int64_t i = 0; i < out.numel(); ++i) {
        ASSERT_NEAR(out.data[i], want.data[i], 1e-5)
            << "heads=" << heads << " causal=" << causal << " element " << i;
      }
    }
  }
}

TEST(AttentionTest, SinglePositionReturnsValues) {
  const Tensor q = RandomTensor({3, 1, 6}, 4), k = RandomTensor({3, 1, 6}, 5),
               v = RandomTensor({3, 1, 6}, 6);
  for (bool causal : {false, true}) {
    const Tensor out = RunForward(OpKind::kAttention, AttentionAttrs(2, causal), {&q, &k, &v});
    for (int64_t i = 0; i < v.numel(); ++i) EXPECT_FLOAT_EQ(out.data[i], v.data[i]);
  }
}

TEST(AttentionTest, CausalFirstPositionSeesOnlyItself) {
  const Tensor q = RandomTensor({2, 4, 6}, 7), k = RandomTensor({2, 4, 6}, 8),
               v = RandomTensor({2, 4, 6}, 9);
  const Tensor out = RunForward(OpKind::kAttention, AttentionAttrs(3, true), {&q, &k, &v});
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t c = 0; c < 6; ++c) EXPECT_FLOAT_EQ(out.at({b, 0, c}), v.at({b, 0, c}));
  }
  // And a later position does mix positions, so the check above is not vacuous.
  EXPECT_GT(std::abs(out.at({0, 3, 0}) - v.at({0, 3, 0})), 1e-4);
}

TEST(AttentionTest, GradientsMatchFiniteDifferences) {
  for (int64_t heads : {1, 3}) {
    for (bool causal : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "heads=" << heads << " causal=" << causal);
      CheckGradients(Case(OpKind::kAttention, {{2, 4, 6}, {2, 4, 6}, {2, 4, 6}},
                          AttentionAttrs(heads, causal)));
    }
  }
}

TEST(CausalMaskTest, MasksAboveDiagonal) {
  const Tensor s = RandomTensor({2, 3, 3}, 10);
  const Tensor out = RunForward(OpKind::kCausalMask, {}, {&s});
  for (int64_t n = 0; n < 2; ++n) {
    for (int64_t i = 0; i < 3; ++i) {
      for (int64_t j = 0; j < 3; ++j) {
        if (j > i) {
          EXPECT_EQ(out.at({n, i, j}), -std::numeric_limits<float>::infinity());
        } else {
          EXPECT_EQ(out.at({n, i, j}), s.at({n, i, j}));
        }
      }
    }
  }
}

TEST(CausalMaskTest, BackwardPassesOnlyUnmaskedEntries) {
  const Tensor s = RandomTensor({2, 3, 3}, 11);
  const Tensor dout = RandomTensor({2, 3, 3}, 12);
  SavedState saved;
  const Tensor out = RunForward(OpKind::kCausalMask, {}, {&s}, &saved);
  Tensor ds(s.shape, 0.5f);  // gradients accumulate onto what is there
  const Tensor* in[] = {&s};
  Tensor* din[] = {&ds};
  Backward(MakeNode(OpKind::kCausalMask, {}), KernelContext{}, in, out, dout, saved, din);
  for (int64_t n = 0; n < 2; ++n) {
    for (int64_t i = 0; i < 3; ++i) {
      for (int64_t j = 0; j < 3; ++j) {
        EXPECT_FLOAT_EQ(ds.at({n, i, j}), 0.5f + (j <= i ? dout.at({n, i, j}) : 0.0f));
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Convolution and pooling

Attrs ConvAttrs(int64_t kernel, int64_t stride, int64_t padding) {
  Attrs a;
  a.kernel = kernel;
  a.stride = stride;
  a.padding = padding;
  return a;
}

Tensor NaiveConv(const Tensor& x, const Tensor& w, const Tensor* b, const Attrs& a) {
  const int64_t nb = x.dim(0), ci = x.dim(1), h = x.dim(2), wd = x.dim(3), co = w.dim(0);
  const int64_t k = a.kernel, ho = (h + 2 * a.padding - k) / a.stride + 1,
                wo = (wd + 2 * a.padding - k) / a.stride + 1;
  Tensor out({nb, co, ho, wo});
  for (int64_t n = 0; n < nb; ++n) {
    for (int64_t o = 0; o < co; ++o) {
      for (int64_t oh = 0; oh < ho; ++oh) {
        for (int64_t ow = 0; ow < wo; ++ow) {
          double sum = b ? b->data[o] : 0.0;
          for (int64_t c = 0; c < ci; ++c) {
            for (int64_t kh = 0; kh < k; ++kh) {
              for (int64_t kw = 0; kw < k; ++kw) {
                const int64_t ih = oh * a.stride - a.padding + kh,
                              iw = ow * a.stride - a.padding + kw;
                if (ih < 0 || ih >= h || iw < 0 || iw >= wd) continue;
                sum += double(x.at({n, c, ih, iw})) * w.at({o, c, kh, kw});
              }
            }
          }
          out.at({n, o, oh, ow}) = static_cast<float>(sum);
        }
      }
    }
  }
  return out;
}

// The kernel lowers several small images into one Gemm and large ones (>= 256 output
// pixels) one at a time, so the configurations cover both, and a batch that does not split
// evenly into chunks.
struct ConvConfig {
  int64_t batch, kernel, stride, padding, h, w;
  bool bias;
};

const ConvConfig kConvConfigs[] = {
    {2, 3, 1, 1, 5, 6, true},     // chunks of 2 small images
    {2, 2, 2, 0, 7, 6, false},    // stride 2 skips the last row
    {2, 3, 2, 2, 6, 5, true},     // padding wider than a stride
    {2, 1, 1, 0, 4, 3, true},     // pointwise, chunked
    {3, 3, 1, 1, 16, 17, true},   // one image at a time
    {3, 1, 1, 0, 16, 16, false},  // pointwise on the image itself
    {4, 3, 1, 1, 10, 10, true},   // chunks of 3 then 1
};

TEST(Conv2dTest, MatchesNaiveLoops) {
  for (const ConvConfig& cfg : kConvConfigs) {
    SCOPED_TRACE(::testing::Message()
                 << "batch=" << cfg.batch << " kernel=" << cfg.kernel << " stride=" << cfg.stride
                 << " padding=" << cfg.padding << " image=" << cfg.h << "x" << cfg.w);
    const Attrs a = ConvAttrs(cfg.kernel, cfg.stride, cfg.padding);
    const Tensor x = RandomTensor({cfg.batch, 3, cfg.h, cfg.w}, 20);
    const Tensor w = RandomTensor({4, 3, cfg.kernel, cfg.kernel}, 21);
    const Tensor b = RandomTensor({4}, 22);
    const Tensor out = cfg.bias ? RunForward(OpKind::kConv2d, a, {&x, &w, &b})
                                : RunForward(OpKind::kConv2d, a, {&x, &w});
    const Tensor want = NaiveConv(x, w, cfg.bias ? &b : nullptr, a);
    ASSERT_EQ(out.shape, want.shape);
    for (int64_t i = 0; i < out.numel(); ++i) ASSERT_NEAR(out.data[i], want.data[i], 1e-4) << i;
  }
}

TEST(Conv2dTest, GradientsInEveryConfiguration) {
  for (const ConvConfig& cfg : kConvConfigs) {
    SCOPED_TRACE(::testing::Message()
                 << "batch=" << cfg.batch << " kernel=" << cfg.kernel << " stride=" << cfg.stride
                 << " padding=" << cfg.padding << " image=" << cfg.h << "x" << cfg.w);
    std::vector<Shape> shapes = {{cfg.batch, 2, cfg.h, cfg.w}, {3, 2, cfg.kernel, cfg.kernel}};
    if (cfg.bias) shapes.push_back({3});
    CheckGradients(Case(OpKind::kConv2d, shapes, ConvAttrs(cfg.kernel, cfg.stride, cfg.padding)));
  }
}

TEST(Conv2dTest, GradientsWithBiasStride1Pad1) {
  CheckGradients(Case(OpKind::kConv2d, {{2, 3, 5, 5}, {4, 3, 3, 3}, {4}}, ConvAttrs(3, 1, 1)));
}

TEST(Conv2dTest, GradientsWithoutBiasStride2Pad0) {
  // Width and height 7 leave the last row and column outside every window: their gradient
  // must be exactly zero, which the finite differences check.
  GradCase c = Case(OpKind::kConv2d, {{2, 2, 7, 7}, {3, 2, 2, 2}}, ConvAttrs(2, 2, 0));
  c.max_elems = 200;
  CheckGradients(c);
}

TEST(MaxPool2dTest, TiesPickFirstInWindowOrder) {
  // One 2×2 window whose maximum 5 appears at (0,1) and (1,0): the gradient goes to (0,1).
  Tensor x({1, 1, 2, 2});
  x.data = {1.0f, 5.0f, 5.0f, 2.0f};
  Attrs a = ConvAttrs(2, 2, 0);
  SavedState saved;
  const Tensor out = RunForward(OpKind::kMaxPool2d, a, {&x}, &saved);
  ASSERT_EQ(out.shape, (Shape{1, 1, 1, 1}));
  EXPECT_EQ(out.data[0], 5.0f);
  Tensor dout(out.shape, 3.0f), dx(x.shape);
  const Tensor* in[] = {&x};
  Tensor* din[] = {&dx};
  Backward(MakeNode(OpKind::kMaxPool2d, a), KernelContext{}, in, out, dout, saved, din);
  EXPECT_EQ(dx.data, (std::vector<float>{0.0f, 3.0f, 0.0f, 0.0f}));
}

TEST(MaxPool2dTest, ForwardTakesWindowMaxima) {
  Tensor x({1, 1, 3, 4});
  x.data = {1, 9, 2, 0,  //
            4, 3, 8, 7,  //
            6, 5, 1, 2};
  const Tensor out = RunForward(OpKind::kMaxPool2d, ConvAttrs(2, 1, 0), {&x});
  EXPECT_EQ(out.data, (std::vector<float>{9, 9, 8, 6, 8, 8}));
}

TEST(MaxPool2dTest, GradientsNonOverlapping) {
  GradCase c = Case(OpKind::kMaxPool2d, {{2, 2, 6, 6}}, ConvAttrs(2, 2, 0));
  c.fixed[0] = SeparatedTensor({2, 2, 6, 6}, 30);
  c.max_elems = 200;
  CheckGradients(c);
}

TEST(MaxPool2dTest, GradientsOverlapping) {
  GradCase c = Case(OpKind::kMaxPool2d, {{1, 2, 7, 7}}, ConvAttrs(3, 2, 0));
  c.fixed[0] = SeparatedTensor({1, 2, 7, 7}, 31);
  c.max_elems = 200;
  CheckGradients(c);
}

// A grouped convolution is its groups' ungrouped convolutions side by side.
TEST(Conv2dTest, GroupedMatchesEachGroupsConvolution) {
  for (const int64_t groups : {2, 6}) {  // 6: depthwise
    SCOPED_TRACE(::testing::Message() << "groups=" << groups);
    Attrs a = ConvAttrs(3, 2, 1);
    a.groups = groups;
    const int64_t ci = 6, co = 12, cig = ci / groups, cog = co / groups;
    const Tensor x = RandomTensor({3, ci, 7, 6}, 23);
    const Tensor w = RandomTensor({co, cig, 3, 3}, 24);
    const Tensor b = RandomTensor({co}, 25);
    const Tensor out = RunForward(OpKind::kConv2d, a, {&x, &w, &b});
    Attrs one = a;
    one.groups = 1;
    for (int64_t gi = 0; gi < groups; ++gi) {
      Tensor xg({3, cig, 7, 6}), wg({cog, cig, 3, 3}), bg({cog});
      for (int64_t n = 0; n < 3; ++n) {
        for (int64_t c = 0; c < cig; ++c) {
          for (int64_t i = 0; i < 42; ++i) xg.data[(n * cig + c) * 42 + i] = x.data[(n * ci + gi * cig + c) * 42 + i];
        }
      }
      std::copy_n(w.data.begin() + gi * cog * cig * 9, cog * cig * 9, wg.data.begin());
      std::copy_n(b.data.begin() + gi * cog, cog, bg.data.begin());
      const Tensor want = NaiveConv(xg, wg, &bg, one);
      for (int64_t n = 0; n < 3; ++n) {
        for (int64_t o = 0; o < cog; ++o) {
          for (int64_t p = 0; p < want.dim(2) * want.dim(3); ++p) {
            ASSERT_NEAR(out.data[((n * co + gi * cog + o) * want.dim(2) * want.dim(3)) + p],
                        want.data[(n * cog + o) * want.dim(2) * want.dim(3) + p], 1e-4);
          }
        }
      }
    }
  }
}

// With ctx.one_device_bits, a batch piece (ctx.shard: images [start, start + n) of the whole
// batch) gives each of its images the bits the whole batch gives it, forward and dx: the kernel
// lowers images in chunks cut in the whole batch, and Eigen's bits for a column depend on the
// width of the matrix and the column's place in it (without the flag a piece chunks its own
// images and differs: checked below). 8×8 maps chunk 4 images at a time; the split is mixed-4's
// of 32 images, and a depthwise conv as MobileNet's.
TEST(Conv2dTest, BatchPiecesGiveTheWholeBatchsBits) {
  const std::vector<int64_t> counts = {12, 11, 6, 3};
  for (const int64_t groups : {1, 8}) {
    SCOPED_TRACE(::testing::Message() << "groups=" << groups);
    Attrs a = ConvAttrs(groups == 1 ? 1 : 3, 1, groups == 1 ? 0 : 1);
    a.groups = groups;
    const int64_t ci = 8, co = 24, k = a.kernel, image = ci * 64, out_image = co * 64;
    const Tensor x = RandomTensor({32, ci, 8, 8}, 60);
    const Tensor w = RandomTensor({co, ci / groups, k, k}, 61);
    const Tensor dy = RandomTensor({32, co, 8, 8}, 62);
    const ir::Node node = MakeNode(OpKind::kConv2d, a);
    auto run = [&](int64_t start, int64_t n, const ShardInfo* shard, bool bits, Tensor* y, Tensor* dx) {
      Tensor piece({n, ci, 8, 8}), dpiece({n, co, 8, 8}), dw(w.shape);
      std::copy_n(x.data.begin() + start * image, n * image, piece.data.begin());
      std::copy_n(dy.data.begin() + start * out_image, n * out_image, dpiece.data.begin());
      KernelContext ctx;
      ctx.shard = shard;
      ctx.one_device_bits = bits;
      *y = Tensor({n, co, 8, 8});
      *dx = Tensor(piece.shape);
      SavedState saved;
      const Tensor* in[] = {&piece, &w};
      Tensor* din[] = {dx, &dw};
      Forward(node, ctx, in, *y, saved);
      Backward(node, ctx, in, *y, dpiece, saved, din);
    };
    Tensor whole_y, whole_dx;
    run(0, 32, nullptr, false, &whole_y, &whole_dx);
    int64_t start = 0, unplaced_differ = 0;
    for (const int64_t n : counts) {
      ShardInfo shard;
      shard.full = x.shape;
      shard.dim = 0;
      shard.start = start;
      Tensor y, dx, y_alone, dx_alone;
      run(start, n, &shard, true, &y, &dx);
      for (int64_t i = 0; i < y.numel(); ++i) ASSERT_EQ(y.data[i], whole_y.data[start * out_image + i]) << start << " " << i;
      for (int64_t i = 0; i < dx.numel(); ++i) ASSERT_EQ(dx.data[i], whole_dx.data[start * image + i]) << start << " " << i;
      run(start, n, &shard, false, &y_alone, &dx_alone);
      for (int64_t i = 0; i < y.numel(); ++i) unplaced_differ += y_alone.data[i] != y.data[i];
      start += n;
    }
    if (groups == 1) {
      EXPECT_GT(unplaced_differ, 0) << "Eigen gave the same bits at every width: the test shows nothing";
    }
  }
}

TEST(Conv2dTest, GroupedGradients) {
  for (const int64_t groups : {2, 4}) {  // 4: depthwise
    SCOPED_TRACE(::testing::Message() << "groups=" << groups);
    Attrs a = ConvAttrs(3, 1, 1);
    a.groups = groups;
    CheckGradients(Case(OpKind::kConv2d, {{2, 4, 5, 5}, {8, 4 / groups, 3, 3}, {8}}, a));
  }
}

TEST(MaxPool2dTest, PaddingIsNeverTheMaximum) {
  // ResNet's stem pool (3×3, stride 2, padding 1) on all-negative values: −inf padding, so
  // every output is an input element.
  Tensor x({1, 1, 4, 4});
  for (int64_t i = 0; i < 16; ++i) x.data[i] = -1.0f - static_cast<float>(i);
  const Tensor out = RunForward(OpKind::kMaxPool2d, ConvAttrs(3, 2, 1), {&x});
  ASSERT_EQ(out.shape, (Shape{1, 1, 2, 2}));
  EXPECT_EQ(out.data, (std::vector<float>{-1, -2, -5, -6}));
}

TEST(MaxPool2dTest, GradientsPadded) {
  GradCase c = Case(OpKind::kMaxPool2d, {{2, 2, 7, 7}}, ConvAttrs(3, 2, 1));
  c.fixed[0] = SeparatedTensor({2, 2, 7, 7}, 32);
  c.max_elems = 200;
  CheckGradients(c);
}

// ---------------------------------------------------------------------------------------------
// Batch normalization (batch_moments, batch_norm) and clip

TEST(BatchNormTest, MomentsThenNormMatchTwoPassStatistics) {
  const Tensor x = RandomTensor({3, 4, 5, 2}, 40);
  const Tensor gamma = RandomTensor({4}, 41), beta = RandomTensor({4}, 42);
  const Tensor m = RunForward(OpKind::kBatchMoments, {}, {&x});
  ASSERT_EQ(m.shape, (Shape{2, 4}));
  Attrs a;
  a.eps = 1e-3;
  const Tensor y = RunForward(OpKind::kBatchNorm, a, {&x, &m, &gamma, &beta});
  for (int64_t c = 0; c < 4; ++c) {
    double mean = 0, var = 0;
    for (int64_t n = 0; n < 3; ++n) {
      for (int64_t i = 0; i < 10; ++i) mean += x.data[(n * 4 + c) * 10 + i] / 30.0;
    }
    for (int64_t n = 0; n < 3; ++n) {
      for (int64_t i = 0; i < 10; ++i) var += std::pow(x.data[(n * 4 + c) * 10 + i] - mean, 2) / 30.0;
    }
    EXPECT_NEAR(m.data[c], mean, 1e-6);
    EXPECT_NEAR(m.data[4 + c], var + mean * mean, 1e-5);
    for (int64_t n = 0; n < 3; ++n) {
      for (int64_t i = 0; i < 10; ++i) {
        const int64_t e = (n * 4 + c) * 10 + i;
        EXPECT_NEAR(y.data[e], (x.data[e] - mean) / std::sqrt(var + 1e-3) * gamma.data[c] + beta.data[c], 1e-5);
      }
    }
  }
}

// Backward through both ops is the usual batch-norm gradient
// dx = γ·r/N·(N·dy − Σdy − x̂·Σ dy·x̂), with r = 1/√(var + eps).
TEST(BatchNormTest, BackwardThroughBothOpsIsTheBatchNormGradient) {
  const Tensor x = RandomTensor({4, 3, 3, 3}, 43), dy = RandomTensor({4, 3, 3, 3}, 44);
  const Tensor gamma = RandomTensor({3}, 45), beta = RandomTensor({3}, 46);
  Attrs a;
  a.eps = 1e-5;
  SavedState ms, ns;
  const Tensor m = RunForward(OpKind::kBatchMoments, {}, {&x}, &ms);
  const Tensor y = RunForward(OpKind::kBatchNorm, a, {&x, &m, &gamma, &beta}, &ns);
  Tensor dx(x.shape), dm(m.shape), dg(gamma.shape), db(beta.shape);
  {
    const Tensor* in[] = {&x, &m, &gamma, &beta};
    Tensor* din[] = {&dx, &dm, &dg, &db};
    Backward(MakeNode(OpKind::kBatchNorm, a), KernelContext{}, in, y, dy, ns, din);
  }
  {
    const Tensor* in[] = {&x};
    Tensor* din[] = {&dx};
    Backward(MakeNode(OpKind::kBatchMoments, {}), KernelContext{}, in, m, dm, ms, din);
  }
  const double n = 36;
  for (int64_t c = 0; c < 3; ++c) {
    const double mean = m.data[c], r = 1 / std::sqrt(m.data[3 + c] - mean * mean + 1e-5);
    double sdy = 0, sdyxh = 0;
    for (int64_t b = 0; b < 4; ++b) {
      for (int64_t i = 0; i < 9; ++i) {
        const int64_t e = (b * 3 + c) * 9 + i;
        sdy += dy.data[e];
        sdyxh += dy.data[e] * (x.data[e] - mean) * r;
      }
    }
    EXPECT_NEAR(db.data[c], sdy, 1e-4);
    EXPECT_NEAR(dg.data[c], sdyxh, 1e-4);
    for (int64_t b = 0; b < 4; ++b) {
      for (int64_t i = 0; i < 9; ++i) {
        const int64_t e = (b * 3 + c) * 9 + i;
        const double want = gamma.data[c] * r / n * (n * dy.data[e] - sdy - (x.data[e] - mean) * r * sdyxh);
        EXPECT_NEAR(dx.data[e], want, 1e-4 * std::max(1.0, std::abs(want))) << c << " " << e;
      }
    }
  }
}

TEST(BatchNormTest, GradientsOfEachOp) {
  CheckGradients(Case(OpKind::kBatchMoments, {{3, 4, 2, 3}}, {}));
  // Moments of a real batch (variance well above 0 at every perturbation).
  const Tensor x = RandomTensor({3, 4, 2, 3}, 47);
  GradCase c = Case(OpKind::kBatchNorm, {{3, 4, 2, 3}, {2, 4}, {4}, {4}}, {});
  c.fixed[0] = x;
  c.fixed[1] = RunForward(OpKind::kBatchMoments, {}, {&x});
  CheckGradients(c);
}

// batch_moments of images [start, start + len) of x, as the piece a batch-split plan gives a
// rank (ctx.shard); `saved` gets the kernel's remainder.
Tensor PieceMoments(const Tensor& x, int64_t start, int64_t len, SavedState& saved) {
  const int64_t image = x.numel() / x.dim(0);
  Tensor piece(WithDim(x.shape, 0, len));
  std::copy_n(x.data.begin() + start * image, len * image, piece.data.begin());
  ShardInfo shard;
  shard.full = x.shape;
  shard.dim = 0;
  shard.start = start;
  KernelContext ctx;
  ctx.shard = &shard;
  Tensor out({2, x.dim(1)});
  const Tensor* in[] = {&piece};
  Forward(MakeNode(OpKind::kBatchMoments, {}), ctx, in, out, saved);
  return out;
}

// Split over the batch, each piece divides by the whole batch's count (its shard): the pieces'
// moments sum to the whole's, as a batch-split plan all-reduces them.
TEST(BatchNormTest, PiecesMomentsSumToTheWhole) {
  const Tensor x = RandomTensor({4, 3, 2, 2}, 48);
  const Tensor whole = RunForward(OpKind::kBatchMoments, {}, {&x});
  Tensor sum(whole.shape);
  for (int64_t start : {0, 1}) {
    SavedState saved;
    const Tensor out = PieceMoments(x, start, start == 0 ? 1 : 3, saved);
    for (int64_t i = 0; i < out.numel(); ++i) sum.data[i] += out.data[i];
    // The remainder: what rounding to float dropped, well under half an ulp of the moment.
    ASSERT_EQ(saved.remainder.shape, out.shape);
    for (int64_t i = 0; i < out.numel(); ++i) {
      EXPECT_LE(std::abs(saved.remainder.data[i]), std::abs(out.data[i]) * 0x1p-24f) << i;
    }
  }
  for (int64_t i = 0; i < whole.numel(); ++i) EXPECT_NEAR(sum.data[i], whole.data[i], 1e-6);
}

// A channel whose input is one constant: the pieces' moments with their remainders, summed in
// double, round to exactly the whole batch's (the constant, and its square as one device
// rounds it), where the float sum of the rounded pieces does not — and a mean off by an ulp
// makes x − μ nonzero, which a ReLU after batch norm turns into a different gradient.
TEST(BatchNormTest, PiecesWithRemaindersSumToTheWholesBits) {
  Tensor x({32, 1, 3, 3});
  std::fill(x.data.begin(), x.data.end(), 0.7123456f);
  const Tensor whole = RunForward(OpKind::kBatchMoments, {}, {&x});
  std::vector<double> total(2, 0.0);
  std::vector<float> rounded(2, 0.0f);
  int64_t start = 0;
  for (const int64_t len : {12, 11, 6, 3}) {
    SavedState saved;
    const Tensor out = PieceMoments(x, start, len, saved);
    for (size_t i = 0; i < 2; ++i) {
      total[i] += double(out.data[i]) + double(saved.remainder.data[i]);
      rounded[i] += out.data[i];
    }
    start += len;
  }
  EXPECT_EQ(whole.data[0], 0.7123456f);
  for (size_t i = 0; i < 2; ++i) EXPECT_EQ(static_cast<float>(total[i]), whole.data[i]) << i;
  EXPECT_TRUE(rounded[0] != whole.data[0] || rounded[1] != whole.data[1]) << "the float sum was exact: the test shows nothing";
}

TEST(ClipTest, ClampsAndPassesGradientStrictlyInside) {
  Attrs a;
  a.min = 0;
  a.max = 6;
  Tensor x({5});
  x.data = {-1.0f, 0.0f, 3.0f, 6.0f, 7.5f};
  SavedState saved;
  const Tensor y = RunForward(OpKind::kClip, a, {&x}, &saved);
  EXPECT_EQ(y.data, (std::vector<float>{0, 0, 3, 6, 6}));
  Tensor dy(x.shape, 2.0f), dx(x.shape);
  const Tensor* in[] = {&x};
  Tensor* din[] = {&dx};
  Backward(MakeNode(OpKind::kClip, a), KernelContext{}, in, y, dy, saved, din);
  EXPECT_EQ(dx.data, (std::vector<float>{0, 0, 2, 0, 0}));
}

Attrs PoolAttrs(int64_t out_h, int64_t out_w) {
  Attrs a;
  a.out_h = out_h;
  a.out_w = out_w;
  return a;
}

TEST(AdaptiveAvgPool2dTest, UsesPyTorchBins) {
  // 5 rows into 2 bins: [0,3) and [2,5); 7 columns into 3 bins: [0,3), [2,5), [4,7).
  const Tensor x = RandomTensor({2, 3, 5, 7}, 40);
  const Tensor out = RunForward(OpKind::kAdaptiveAvgPool2d, PoolAttrs(2, 3), {&x});
  ASSERT_EQ(out.shape, (Shape{2, 3, 2, 3}));
  const int64_t rows[2][2] = {{0, 3}, {2, 5}};
  const int64_t cols[3][2] = {{0, 3}, {2, 5}, {4, 7}};
  for (int64_t n = 0; n < 2; ++n) {
    for (int64_t c = 0; c < 3; ++c) {
      for (int64_t i = 0; i < 2; ++i) {
        for (int64_t j = 0; j < 3; ++j) {
          double sum = 0;
          for (int64_t r = rows[i][0]; r < rows[i][1]; ++r) {
            for (int64_t q = cols[j][0]; q < cols[j][1]; ++q) sum += x.at({n, c, r, q});
          }
          EXPECT_NEAR(out.at({n, c, i, j}), sum / 9.0, 1e-5);
        }
      }
    }
  }
}

TEST(AdaptiveAvgPool2dTest, GradientsUnevenBins) {
  GradCase c = Case(OpKind::kAdaptiveAvgPool2d, {{2, 3, 5, 7}}, PoolAttrs(2, 3));
  c.max_elems = 210;
  CheckGradients(c);
}

// ---------------------------------------------------------------------------------------------
// Mixture of experts

Attrs GateAttrs(int64_t k, int64_t capacity) {
  Attrs a;
  a.k = k;
  a.capacity = capacity;
  return a;
}

Attrs MoEAttrs(int64_t experts, int64_t capacity) {
  Attrs a;
  a.experts = experts;
  a.capacity = capacity;
  return a;
}

TEST(TopKGateTest, HandMadeExampleWithCapacityOne) {
  // Logits are log-probabilities, so softmax returns these rows.
  const float probs[4][3] = {{0.5f, 0.3f, 0.2f},   // 0 then 1
                             {0.1f, 0.6f, 0.3f},   // 1 then 2
                             {0.4f, 0.4f, 0.2f},   // tie: 0 then 1
                             {0.7f, 0.1f, 0.2f}};  // 0 then 2
  Tensor logits({4, 3});
  for (int64_t s = 0; s < 4; ++s) {
    for (int64_t e = 0; e < 3; ++e) logits.at({s, e}) = std::log(probs[s][e]);
  }
  const Tensor route = RunForward(OpKind::kTopKGate, GateAttrs(2, 1), {&logits});
  ASSERT_EQ(route.shape, (Shape{4, 2, 3}));
  // First choices claim slots in token order (token 2 and 3 find expert 0 full); then second
  // choices: token 0's expert 1 was taken by token 1's first choice, token 1 gets expert 2's
  // only slot, and token 3 comes too late for it.
  const float want[4][2][3] = {{{0, 0, 0.625f}, {1, -1, 0.375f}},
                               {{1, 0, 2.0f / 3}, {2, 0, 1.0f / 3}},
                               {{0, -1, 0.5f}, {1, -1, 0.5f}},
                               {{0, -1, 0.7f / 0.9f}, {2, -1, 0.2f / 0.9f}}};
  for (int64_t s = 0; s < 4; ++s) {
    for (int64_t j = 0; j < 2; ++j) {
      SCOPED_TRACE(::testing::Message() << "token " << s << " choice " << j);
      EXPECT_EQ(route.at({s, j, 0}), want[s][j][0]);
      EXPECT_EQ(route.at({s, j, 1}), want[s][j][1]);
      EXPECT_NEAR(route.at({s, j, 2}), want[s][j][2], 1e-6);
    }
  }
}

TEST(TopKGateTest, GradientsWithDroppedSlots) {
  // Each row is a shuffled 0, 0.6, 1.2, 1.8 (plus a row offset), far from any tie.
  const int64_t tokens = 6, experts = 4;
  Tensor logits({tokens, experts});
  std::mt19937 rng(50);
  for (int64_t s = 0; s < tokens; ++s) {
    std::vector<float> row = {0.0f, 0.6f, 1.2f, 1.8f};
    std::shuffle(row.begin(), row.end(), rng);
    for (int64_t e = 0; e < experts; ++e) logits.at({s, e}) = row[e] + 0.1f * float(s);
  }
  const Attrs a = GateAttrs(2, 2);
  const Tensor route = RunForward(OpKind::kTopKGate, a, {&logits});
  int dropped = 0;
  for (int64_t s = 0; s < tokens; ++s)
    dropped += route.at({s, 1, 1}) < 0 || route.at({s, 0, 1}) < 0;
  ASSERT_GT(dropped, 0) << "capacity 2 for 12 choices over 4 experts must drop some";
  GradCase c = Case(OpKind::kTopKGate, {logits.shape}, a);
  c.fixed[0] = logits;
  CheckGradients(c);
}

TEST(MoEDispatchTest, Gradients) {
  GradCase c = Case(OpKind::kMoEDispatch, {{5, 4}, {5, 2, 3}}, MoEAttrs(3, 2));
  c.fixed[1] = FixedRoute();
  CheckGradients(c);
}

TEST(MoEDispatchTest, DroppedChoicesLeaveSlotsEmpty) {
  const Tensor x = RandomTensor({5, 4}, 60);
  const Tensor route = FixedRoute();
  const Tensor out = RunForward(OpKind::kMoEDispatch, MoEAttrs(3, 3), {&x, &route});
  // Slot 2 of every expert is unused by the route.
  for (int64_t e = 0; e < 3; ++e) {
    for (int64_t c = 0; c < 4; ++c) EXPECT_EQ(out.at({e, 2, c}), 0.0f);
  }
  for (int64_t c = 0; c < 4; ++c) {
    EXPECT_EQ(out.at({1, 1, c}), x.at({1, c}));
    EXPECT_EQ(out.at({2, 1, c}), x.at({3, c}));
  }
}

TEST(MoECombineTest, Gradients) {
  GradCase c = Case(OpKind::kMoECombine, {{3, 2, 4}, {5, 2, 3}}, {});
  c.fixed[1] = FixedRoute();
  // Channels 0 and 1 of the route are indices; only the weights (channel 2) are checked.
  c.skip = [](size_t input, int64_t elem) { return input == 1 && elem % 3 != 2; };
  CheckGradients(c);
}

TEST(MoETest, DispatchCombineRoundTripReproducesTokens) {
  // Capacity = tokens, so no expert can overflow; the gate's weights sum to 1 per token.
  const int64_t tokens = 6, experts = 4, channels = 5;
  const Tensor logits = RandomTensor({tokens, experts}, 70);
  const Tensor x = RandomTensor({tokens, channels}, 71);
  const Tensor route = RunForward(OpKind::kTopKGate, GateAttrs(2, tokens), {&logits});
  for (int64_t i = 1; i < route.numel(); i += 3) ASSERT_GE(route.data[i], 0.0f);
  const Tensor slots = RunForward(OpKind::kMoEDispatch, MoEAttrs(experts, tokens), {&x, &route});
  const Tensor back = RunForward(OpKind::kMoECombine, {}, {&slots, &route});
  ASSERT_EQ(back.shape, x.shape);
  for (int64_t i = 0; i < x.numel(); ++i) EXPECT_NEAR(back.data[i], x.data[i], 1e-5);
}

// ---------------------------------------------------------------------------------------------
// Backward adds into din (a value read by several nodes collects all their gradients there):
// starting from ones must give the gradient from zeros plus one, element by element.

void ExpectBackwardAccumulates(OpKind kind, const Attrs& attrs, const std::vector<Tensor>& in) {
  std::vector<const Tensor*> ptrs;
  for (const Tensor& t : in) ptrs.push_back(&t);
  SavedState saved;
  const Tensor out = RunForward(kind, attrs, ptrs, &saved);
  const Tensor dout = RandomTensor(out.shape, 80);
  auto backward = [&](float start) {
    std::vector<Tensor> grads;
    for (const Tensor& t : in) grads.emplace_back(t.shape, start);
    std::vector<Tensor*> din;
    for (size_t i = 0; i < in.size(); ++i)
      din.push_back(Differentiable(kind, i) ? &grads[i] : nullptr);
    Backward(MakeNode(kind, attrs), KernelContext{}, ptrs, out, dout, saved, din);
    return grads;
  };
  const std::vector<Tensor> from_zero = backward(0.0f), from_one = backward(1.0f);
  for (size_t i = 0; i < in.size(); ++i) {
    if (!Differentiable(kind, i)) continue;
    for (int64_t e = 0; e < in[i].numel(); ++e) {
      ASSERT_NEAR(from_one[i].data[e], from_zero[i].data[e] + 1.0f, 1e-5)
          << ir::OpName(kind) << " input " << i << " element " << e;
    }
  }
}

TEST(BackwardTest, AddsIntoExistingGradients) {
  ExpectBackwardAccumulates(
      OpKind::kAttention, AttentionAttrs(2, true),
      {RandomTensor({2, 3, 4}, 1), RandomTensor({2, 3, 4}, 2), RandomTensor({2, 3, 4}, 3)});
  for (const ConvConfig& cfg : kConvConfigs) {
    SCOPED_TRACE(::testing::Message() << "conv batch=" << cfg.batch << " kernel=" << cfg.kernel
                                      << " image=" << cfg.h << "x" << cfg.w);
    ExpectBackwardAccumulates(
        OpKind::kConv2d, ConvAttrs(cfg.kernel, cfg.stride, cfg.padding),
        {RandomTensor({cfg.batch, 2, cfg.h, cfg.w}, 4),
         RandomTensor({3, 2, cfg.kernel, cfg.kernel}, 5), RandomTensor({3}, 6)});
  }
  ExpectBackwardAccumulates(OpKind::kMaxPool2d, ConvAttrs(3, 2, 0),
                            {SeparatedTensor({1, 2, 7, 7}, 7)});
  ExpectBackwardAccumulates(OpKind::kAdaptiveAvgPool2d, PoolAttrs(2, 3),
                            {RandomTensor({1, 2, 5, 7}, 8)});
  ExpectBackwardAccumulates(OpKind::kTopKGate, GateAttrs(2, 2), {RandomTensor({6, 4}, 9)});
  ExpectBackwardAccumulates(OpKind::kMoEDispatch, MoEAttrs(3, 2),
                            {RandomTensor({5, 4}, 10), FixedRoute()});
  ExpectBackwardAccumulates(OpKind::kMoECombine, {}, {RandomTensor({3, 2, 4}, 11), FixedRoute()});
}

}  // namespace
}  // namespace hetsynth::runtime
