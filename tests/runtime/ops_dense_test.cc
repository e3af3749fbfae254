// Tests of the dense, elementwise, normalization and layout CPU kernels: finite-difference
// gradient checks for every op and broadcast variant, exact forward values for hand-computed
// cases, the dropout stream, the add-into-din contract, and the programming-error checks.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <set>
#include <vector>

#include <gtest/gtest.h>

#include "hetsynth/ir/float_formats.h"
#include "hetsynth/ir/graph.h"
#include "hetsynth/runtime/kernels.h"
#include "runtime/gradcheck.h"

namespace hetsynth::runtime {
namespace {

using ir::Attrs;
using ir::OpKind;
using ir::Shape;
using testing::CheckGradients;
using testing::Case;
using testing::GradCase;
using testing::MakeNode;

constexpr float kInf = std::numeric_limits<float>::infinity();

Tensor Make(Shape shape, std::vector<float> values) {
  Tensor t(std::move(shape));
  EXPECT_EQ(t.numel(), static_cast<int64_t>(values.size()));
  t.data.assign(values.begin(), values.end());
  return t;
}

// testing::RunForward on a list of tensors.
Tensor RunForward(OpKind kind, const std::vector<Tensor>& inputs, const Attrs& attrs = {},
                  int64_t step = 0, SavedState* saved_out = nullptr) {
  std::vector<const Tensor*> ptrs;
  for (const Tensor& t : inputs) ptrs.push_back(&t);
  return testing::RunForward(kind, attrs, ptrs, step, saved_out);
}

Tensor Iota(Shape shape, float scale = 1.0f, float offset = 0.0f) {
  Tensor t(std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data[i] = offset + scale * static_cast<float>(i);
  return t;
}

Attrs AxisAttrs(int64_t axis, int64_t axis2 = -2) {
  Attrs a;
  a.axis = axis;
  a.axis2 = axis2;
  return a;
}

// ---------------------------------------------------------------------------------------------
// Gradient checks

TEST(DenseGradTest, LinearWithBias) { CheckGradients(Case(OpKind::kLinear, {{4, 5}, {3, 5}, {3}})); }
TEST(DenseGradTest, LinearWithoutBias) { CheckGradients(Case(OpKind::kLinear, {{4, 5}, {3, 5}})); }
TEST(DenseGradTest, LinearWith3dInput) {
  CheckGradients(Case(OpKind::kLinear, {{2, 3, 5}, {4, 5}, {4}}));
}

TEST(DenseGradTest, MatMul2d) { CheckGradients(Case(OpKind::kMatMul, {{3, 4}, {4, 2}})); }
TEST(DenseGradTest, MatMulSharedRhs) {
  CheckGradients(Case(OpKind::kMatMul, {{2, 3, 4}, {4, 5}}));
}
TEST(DenseGradTest, MatMulBatched) {
  CheckGradients(Case(OpKind::kMatMul, {{2, 2, 3, 4}, {2, 2, 4, 5}}));
}

class BroadcastGradTest : public ::testing::TestWithParam<OpKind> {};

TEST_P(BroadcastGradTest, SameShape) { CheckGradients(Case(GetParam(), {{2, 3, 4}, {2, 3, 4}})); }
TEST_P(BroadcastGradTest, TrailingVector) { CheckGradients(Case(GetParam(), {{2, 3, 4}, {4}})); }
TEST_P(BroadcastGradTest, MiddleColumn) { CheckGradients(Case(GetParam(), {{2, 3, 4}, {3, 1}})); }
TEST_P(BroadcastGradTest, InnerAndOuterBroadcast) {
  CheckGradients(Case(GetParam(), {{2, 3, 4}, {2, 1, 4}}));
}
TEST_P(BroadcastGradTest, ScalarLikeOperand) { CheckGradients(Case(GetParam(), {{2, 3}, {1}})); }

INSTANTIATE_TEST_SUITE_P(AddMul, BroadcastGradTest,
                         ::testing::Values(OpKind::kAdd, OpKind::kMul),
                         [](const auto& info) { return std::string(ir::OpName(info.param)); });

TEST(ElementwiseGradTest, Relu) {
  // Fixed values away from the kink at 0, where a finite difference is meaningless.
  Tensor x({3, 8});
  for (int64_t i = 0; i < x.numel(); ++i) x.data[i] = (i % 2 ? 1.0f : -1.0f) * (0.1f + 0.07f * i);
  GradCase c = Case(OpKind::kRelu, {{3, 8}});
  c.fixed = {{0, x}};
  CheckGradients(c);
}

TEST(ElementwiseGradTest, Gelu) { CheckGradients(Case(OpKind::kGelu, {{3, 7}})); }
TEST(ElementwiseGradTest, Sigmoid) { CheckGradients(Case(OpKind::kSigmoid, {{3, 7}})); }
TEST(ElementwiseGradTest, Tanh) { CheckGradients(Case(OpKind::kTanh, {{3, 7}})); }

// Both sides of the switch from the polynomial (|x| < 0.625) to the exponential form, and the
// saturated tails, where σ' and tanh' are tiny.
TEST(ElementwiseGradTest, SigmoidAndTanhAcrossTheirRanges) {
  for (OpKind kind : {OpKind::kSigmoid, OpKind::kTanh}) {
    SCOPED_TRACE(ir::OpName(kind));
    GradCase c = Case(kind, {{12}});
    c.fixed = {{0, Make({12}, {-12, -6, -2.5f, -0.7f, -0.63f, -0.6f, -0.1f, 0.2f, 0.61f, 0.64f, 3, 9})}};
    c.step = 1e-3;
    CheckGradients(c);
  }
}

TEST(ElementwiseGradTest, DropoutWithFixedMask) {
  Attrs a;
  a.p = 0.3;
  a.seed = 1234;
  CheckGradients(Case(OpKind::kDropout, {{4, 25}}, a));
}

TEST(ElementwiseGradTest, DropoutIdentity) { CheckGradients(Case(OpKind::kDropout, {{3, 5}})); }

TEST(ElementwiseGradTest, ExpandBatchDim) {
  Attrs a;
  a.shape = {3, 1, 6};
  CheckGradients(Case(OpKind::kExpand, {{1, 1, 6}}, a));
}

TEST(ElementwiseGradTest, ExpandLowerRank) {
  Attrs a;
  a.shape = {2, 3, 6};
  CheckGradients(Case(OpKind::kExpand, {{6}}, a));
}

TEST(ElementwiseGradTest, ExpandColumn) {
  Attrs a;
  a.shape = {2, 3, 4};
  CheckGradients(Case(OpKind::kExpand, {{3, 1}}, a));
}

TEST(NormGradTest, LayerNorm) { CheckGradients(Case(OpKind::kLayerNorm, {{3, 8}, {8}, {8}})); }
TEST(NormGradTest, LayerNorm3d) {
  CheckGradients(Case(OpKind::kLayerNorm, {{2, 3, 6}, {6}, {6}}));
}
TEST(NormGradTest, Softmax) { CheckGradients(Case(OpKind::kSoftmax, {{2, 3, 7}})); }
TEST(NormGradTest, LogSoftmax) { CheckGradients(Case(OpKind::kLogSoftmax, {{2, 3, 7}})); }
// Rows longer than the kernels' 8-lane reductions, with a ragged tail.
TEST(NormGradTest, SoftmaxLongRows) { CheckGradients(Case(OpKind::kSoftmax, {{3, 19}})); }
TEST(NormGradTest, LogSoftmaxLongRows) { CheckGradients(Case(OpKind::kLogSoftmax, {{3, 19}})); }

TEST(NormGradTest, CrossEntropy) {
  GradCase c = Case(OpKind::kCrossEntropy, {{4, 5}, {4}});
  c.fixed = {{1, Make({4}, {0, 3, 1, 4})}};
  c.no_grad = {1};
  CheckGradients(c);
}

TEST(NormGradTest, CrossEntropyManyClasses) {
  GradCase c = Case(OpKind::kCrossEntropy, {{3, 21}, {3}});
  c.fixed = {{1, Make({3}, {20, 0, 9})}};
  c.no_grad = {1};
  CheckGradients(c);
}

TEST(NormGradTest, CrossEntropy3d) {
  GradCase c = Case(OpKind::kCrossEntropy, {{2, 3, 6}, {2, 3}});
  c.fixed = {{1, Make({2, 3}, {5, 0, 2, 2, 1, 3})}};
  c.no_grad = {1};
  CheckGradients(c);
}

TEST(LayoutGradTest, EmbeddingWithRepeatedIds) {
  GradCase c = Case(OpKind::kEmbedding, {{2, 3}, {5, 4}});
  c.fixed = {{0, Make({2, 3}, {1, 4, 1, 0, 3, 1})}};
  c.no_grad = {0};
  CheckGradients(c);
}

TEST(LayoutGradTest, Flatten) {
  Attrs a;
  a.axis = 1;
  CheckGradients(Case(OpKind::kFlatten, {{2, 3, 4}}, a));
}

TEST(LayoutGradTest, Reshape) {
  Attrs a;
  a.shape = {4, 6};
  CheckGradients(Case(OpKind::kReshape, {{2, 3, 4}}, a));
}

TEST(LayoutGradTest, TransposeMiddleDims) {
  CheckGradients(Case(OpKind::kTranspose, {{2, 3, 4, 5}}, AxisAttrs(1, 2)));
}
TEST(LayoutGradTest, TransposeOuterDims) {
  CheckGradients(Case(OpKind::kTranspose, {{2, 3, 4, 5}}, AxisAttrs(0, -1)));
}
TEST(LayoutGradTest, TransposeLastTwoLarge) {
  // Larger than one 32×32 tile in both dims, with ragged edges.
  CheckGradients(Case(OpKind::kTranspose, {{2, 37, 45}}, AxisAttrs(-1, -2)));
}

TEST(LayoutGradTest, ConcatThreeInputs) {
  CheckGradients(Case(OpKind::kConcat, {{2, 3, 4}, {2, 1, 4}, {2, 2, 4}}, AxisAttrs(1)));
}
TEST(LayoutGradTest, ConcatLastAxis) {
  CheckGradients(Case(OpKind::kConcat, {{2, 3}, {2, 2}, {2, 1}}, AxisAttrs(-1)));
}

TEST(LayoutGradTest, Slice) {
  Attrs a;
  a.axis = 1;
  a.start = 1;
  a.length = 3;
  CheckGradients(Case(OpKind::kSlice, {{2, 5, 3}}, a));
}

// ---------------------------------------------------------------------------------------------
// Backward adds into din instead of overwriting it.

struct AccumCase {
  OpKind kind;
  std::vector<Shape> shapes;
  Attrs attrs;
};

TEST(KernelContractTest, BackwardAddsIntoPrefilledGradients) {
  Attrs expand;
  expand.shape = {2, 3, 4};
  Attrs drop;
  drop.p = 0.5;
  Attrs slice;
  slice.axis = 0;
  slice.start = 1;
  slice.length = 1;
  const std::vector<AccumCase> cases = {
      {OpKind::kLinear, {{3, 4}, {2, 4}, {2}}, {}},
      {OpKind::kMatMul, {{2, 3, 4}, {2, 4, 2}}, {}},
      {OpKind::kAdd, {{2, 3, 4}, {3, 1}}, {}},
      {OpKind::kMul, {{2, 3, 4}, {4}}, {}},
      {OpKind::kRelu, {{5}}, {}},
      {OpKind::kGelu, {{5}}, {}},
      {OpKind::kSigmoid, {{5}}, {}},
      {OpKind::kTanh, {{5}}, {}},
      {OpKind::kDropout, {{50}}, drop},
      {OpKind::kExpand, {{3, 1}}, expand},
      {OpKind::kLayerNorm, {{2, 4}, {4}, {4}}, {}},
      {OpKind::kSoftmax, {{2, 4}}, {}},
      {OpKind::kLogSoftmax, {{2, 4}}, {}},
      {OpKind::kTranspose, {{2, 3, 4}}, AxisAttrs(0, 2)},
      {OpKind::kConcat, {{2, 3}, {2, 2}}, AxisAttrs(1)},
      {OpKind::kSlice, {{2, 3}}, slice},
  };
  for (const AccumCase& c : cases) {
    SCOPED_TRACE(ir::OpName(c.kind));
    std::vector<Tensor> inputs;
    for (const Shape& s : c.shapes) inputs.push_back(Iota(s, 0.37f, -1.1f));
    SavedState saved;
    const Tensor out = RunForward(c.kind, inputs, c.attrs, 0, &saved);
    const Tensor dout = Iota(out.shape, -0.21f, 0.6f);
    std::vector<const Tensor*> in;
    for (const Tensor& t : inputs) in.push_back(&t);
    const ir::Node node = MakeNode(c.kind, c.attrs);
    std::vector<Tensor> zero, ones;
    for (const Tensor& t : inputs) {
      zero.emplace_back(t.shape, 0.0f);
      ones.emplace_back(t.shape, 1.0f);
    }
    std::vector<Tensor*> dz, d1;
    for (size_t i = 0; i < inputs.size(); ++i) {
      dz.push_back(&zero[i]);
      d1.push_back(&ones[i]);
    }
    Backward(node, KernelContext{}, in, out, dout, saved, dz);
    Backward(node, KernelContext{}, in, out, dout, saved, d1);
    for (size_t i = 0; i < inputs.size(); ++i) {
      for (int64_t e = 0; e < inputs[i].numel(); ++e) {
        EXPECT_NEAR(ones[i].data[e], zero[i].data[e] + 1.0f, 1e-5f) << "input " << i;
      }
    }
  }
}

// The kernels that may get an uninitialized output (ForwardWritesWholeOutput) give the same bits
// on an output full of NaNs as on a zero-filled one; every such kind has a case here.
TEST(KernelContractTest, WholeOutputKernelsIgnoreWhatOutHeld) {
  const std::vector<AccumCase> cases = {
      {OpKind::kLinear, {{2, 3, 4}, {5, 4}, {5}}, {}},
      {OpKind::kLinear, {{3, 4}, {2, 4}}, {}},
      {OpKind::kMatMul, {{2, 3, 4}, {2, 4, 2}}, {}},
      {OpKind::kMatMul, {{2, 3, 4}, {4, 5}}, {}},
      {OpKind::kAdd, {{2, 3, 4}, {2, 3, 4}}, {}},
      {OpKind::kAdd, {{2, 3, 4}, {4}}, {}},
      {OpKind::kAdd, {{2, 3, 4}, {3, 1}}, {}},
      {OpKind::kGelu, {{37}}, {}},
      {OpKind::kLayerNorm, {{3, 8}, {8}, {8}}, {}},
  };
  std::set<OpKind> covered;
  for (const AccumCase& c : cases) {
    SCOPED_TRACE(ir::OpName(c.kind));
    ASSERT_TRUE(ForwardWritesWholeOutput(c.kind));
    covered.insert(c.kind);
    std::vector<Tensor> inputs;
    for (const Shape& s : c.shapes) inputs.push_back(Iota(s, 0.37f, -1.1f));
    const Tensor zero_out = RunForward(c.kind, inputs, c.attrs);
    std::vector<const Tensor*> in;
    for (const Tensor& t : inputs) in.push_back(&t);
    Tensor nan_out(zero_out.shape, std::numeric_limits<float>::quiet_NaN());
    SavedState saved;
    Forward(MakeNode(c.kind, c.attrs), KernelContext{}, in, nan_out, saved);
    for (int64_t e = 0; e < zero_out.numel(); ++e) {
      ASSERT_EQ(std::bit_cast<uint32_t>(nan_out.data[e]), std::bit_cast<uint32_t>(zero_out.data[e])) << "element " << e;
    }
  }
#define HS_CHECK_COVERED(Camel, snake) \
  if (ForwardWritesWholeOutput(OpKind::k##Camel)) {                         \
    EXPECT_TRUE(covered.count(OpKind::k##Camel)) << snake;                   \
  }
  HETSYNTH_IR_OPS(HS_CHECK_COVERED)
#undef HS_CHECK_COVERED
}

// ---------------------------------------------------------------------------------------------
// Forward values

TEST(DenseForwardTest, LinearMatchesHandComputedValues) {
  const Tensor x = Make({2, 2}, {1, 2, 3, 4});
  const Tensor w = Make({3, 2}, {1, 0, 0, 1, 1, -1});
  const Tensor b = Make({3}, {10, 20, 30});
  const Tensor y = RunForward(OpKind::kLinear, {x, w, b});
  EXPECT_EQ(y.shape, (Shape{2, 3}));
  EXPECT_EQ(y.data, (std::vector<float>{11, 22, 29, 13, 24, 29}));
}

TEST(DenseForwardTest, MatMulBatchedAndSharedMatchNaive) {
  const Tensor a = Iota({2, 3, 4}, 0.5f, -2.0f);
  const Tensor bb = Iota({2, 4, 5}, 0.25f, -1.0f);
  const Tensor bs = Iota({4, 5}, -0.5f, 3.0f);
  const Tensor yb = RunForward(OpKind::kMatMul, {a, bb});
  const Tensor ys = RunForward(OpKind::kMatMul, {a, bs});
  for (int64_t i = 0; i < 2; ++i) {
    for (int64_t m = 0; m < 3; ++m) {
      for (int64_t n = 0; n < 5; ++n) {
        float eb = 0, es = 0;
        for (int64_t k = 0; k < 4; ++k) {
          eb += a.at({i, m, k}) * bb.at({i, k, n});
          es += a.at({i, m, k}) * bs.at({k, n});
        }
        EXPECT_NEAR(yb.at({i, m, n}), eb, 1e-4f);
        EXPECT_NEAR(ys.at({i, m, n}), es, 1e-4f);
      }
    }
  }
}

TEST(ElementwiseForwardTest, AddBroadcastsColumnAlongMiddleDim) {
  const Tensor a = Iota({2, 3, 4});
  const Tensor b = Make({3, 1}, {100, 200, 300});
  const Tensor y = RunForward(OpKind::kAdd, {a, b});
  for (int64_t i = 0; i < 2; ++i) {
    for (int64_t j = 0; j < 3; ++j) {
      for (int64_t k = 0; k < 4; ++k) {
        EXPECT_EQ(y.at({i, j, k}), a.at({i, j, k}) + 100.0f * (j + 1));
      }
    }
  }
}

TEST(ElementwiseForwardTest, MulBroadcastsTrailingVector) {
  const Tensor a = Iota({2, 3});
  const Tensor b = Make({3}, {1, -1, 2});
  EXPECT_EQ(RunForward(OpKind::kMul, {a, b}).data, (std::vector<float>{0, -1, 4, 3, -4, 10}));
}

TEST(ElementwiseForwardTest, ReluZeroesNegatives) {
  EXPECT_EQ(RunForward(OpKind::kRelu, {Make({4}, {-2, -0.0f, 0.5f, 3})}).data,
            (std::vector<float>{0, 0, 0.5f, 3}));
}

TEST(ElementwiseForwardTest, ReluKeepsNaNAsPyTorchDoes) {
  const Tensor y = RunForward(OpKind::kRelu, {Make({2}, {std::nanf(""), -1})});
  EXPECT_TRUE(std::isnan(y.data[0]));  // max(x, 0) would hide a NaN from upstream
  EXPECT_EQ(y.data[1], 0.0f);
}

TEST(ElementwiseForwardTest, GeluIsExactErfForm) {
  const Tensor y = RunForward(OpKind::kGelu, {Make({3}, {0, 1, -1})});
  EXPECT_EQ(y.data[0], 0.0f);
  EXPECT_NEAR(y.data[1], 0.8413447460685429, 1e-6);
  EXPECT_NEAR(y.data[2], -0.15865525393145707, 1e-6);
}

TEST(ElementwiseForwardTest, GeluKeepsRelativeAccuracyInBothTails) {
  // Float 1 + erf(x/√2) cancels to 0 near x = −6; the kernel must not.
  const std::vector<float> xs = {-9, -6, -3, -0.5f, 0.5f, 3, 10};
  const Tensor y = RunForward(OpKind::kGelu, {Make({7}, xs)});
  for (size_t i = 0; i < xs.size(); ++i) {
    const double want = xs[i] * 0.5 * std::erfc(-double(xs[i]) / std::sqrt(2.0));
    EXPECT_NEAR(y.data[i], want, 1e-4 * std::abs(want)) << "x = " << xs[i];
  }
}

// erf within 3e-7 of the double-precision function (Abramowitz & Stegun's 1.5e-7 plus float
// rounding; relative below |x| = 0.5, where it is a series), odd, with the IEEE special values.
TEST(ElementwiseForwardTest, ErfIsAccurate) {
  Tensor x({20001});
  for (int64_t i = 0; i < x.numel(); ++i) x.data[i] = -5.0f + 0.0005f * static_cast<float>(i);
  const Tensor y = RunForward(OpKind::kErf, {x});
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double v = x.data[i], want = std::erf(v);
    ASSERT_LE(std::abs(y.data[i] - want), std::abs(v) < 0.5 ? 4e-7 * std::abs(want) : 3e-7) << "erf(" << v << ")";
  }
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const Tensor special = Make({6}, {0.0f, -0.0f, kInf, -kInf, nan, 1e-30f});
  const Tensor e = RunForward(OpKind::kErf, {special});
  EXPECT_EQ(std::vector<float>(e.data.begin(), e.data.begin() + 4), (std::vector<float>{0.0f, -0.0f, 1.0f, -1.0f}));
  EXPECT_TRUE(std::signbit(e.data[1])) << "erf(-0) is -0";
  EXPECT_TRUE(std::isnan(e.data[4]));
  EXPECT_NEAR(e.data[5], 1.1283791670955126e-30, 1e-36);
}

// exp, log and softplus within a few ulp of the double-precision functions over their ranges,
// with the IEEE special values; sqrt, reciprocal, abs, neg, softsign and hardswish as float
// arithmetic gives them.
TEST(ElementwiseForwardTest, ExpLogSoftplusAreAccurateToAFewUlp) {
  auto ulps = [](double want, float got) {
    if (want == 0) return static_cast<double>(std::abs(got));
    return std::abs(got - want) / std::ldexp(1.0, std::ilogb(static_cast<float>(want)) - 23);
  };
  std::vector<float> xs;
  for (int64_t i = 0; i <= 40000; ++i) xs.push_back(-100.0f + 0.0047f * static_cast<float>(i));  // [-100, 88]
  Tensor x({static_cast<int64_t>(xs.size())});
  std::copy(xs.begin(), xs.end(), x.data.begin());
  const Tensor e = RunForward(OpKind::kExp, {x}), sp = RunForward(OpKind::kSoftplus, {x});
  for (size_t i = 0; i < xs.size(); ++i) {
    const double v = xs[i];
    if (std::exp(v) > 1e-37) {
      ASSERT_LE(ulps(std::exp(v), e.data[i]), 5) << "exp(" << v << ")";
    }
    const double want = v > 20 ? v : std::log1p(std::exp(v));
    if (want > 1e-37) {
      ASSERT_LE(ulps(want, sp.data[i]), 4) << "softplus(" << v << ")";
    }
  }
  // log over every 4099th positive float (subnormals to the largest).
  std::vector<float> ps;
  for (uint64_t u = 1; u < 0x7f800000u; u += 4099) ps.push_back(std::bit_cast<float>(static_cast<uint32_t>(u)));
  Tensor p({static_cast<int64_t>(ps.size())});
  std::copy(ps.begin(), ps.end(), p.data.begin());
  const Tensor l = RunForward(OpKind::kLog, {p});
  for (size_t i = 0; i < ps.size(); ++i) {
    const double want = std::log(static_cast<double>(ps[i]));
    ASSERT_LE(std::abs(want) < 1e-3 ? std::abs(l.data[i] - want) / 1e-10 : ulps(want, l.data[i]), 3) << "log(" << ps[i] << ")";
  }
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const Tensor special = Make({6}, {0.0f, -1.0f, kInf, -kInf, nan, 89.0f});
  const Tensor ls = RunForward(OpKind::kLog, {special}), es = RunForward(OpKind::kExp, {special});
  EXPECT_EQ(ls.data[0], -kInf);
  EXPECT_TRUE(std::isnan(ls.data[1]));
  EXPECT_EQ(ls.data[2], kInf);
  EXPECT_TRUE(std::isnan(ls.data[4]));
  EXPECT_EQ(es.data[2], kInf);
  EXPECT_EQ(es.data[3], 0.0f);
  EXPECT_TRUE(std::isnan(es.data[4]));
  EXPECT_EQ(es.data[5], kInf);
  const Tensor v = Make({5}, {-4.0f, -1.5f, 0.0f, 2.0f, 9.0f});
  const Tensor sq = RunForward(OpKind::kSqrt, {v}), rc = RunForward(OpKind::kReciprocal, {v}), ab = RunForward(OpKind::kAbs, {v}),
               ng = RunForward(OpKind::kNeg, {v}), ss = RunForward(OpKind::kSoftsign, {v}), hs = RunForward(OpKind::kHardswish, {v});
  for (int i = 0; i < 5; ++i) {
    const float a = v.data[i];
    if (a >= 0) {
      EXPECT_EQ(sq.data[i], std::sqrt(a));
    }
    EXPECT_EQ(rc.data[i], 1.0f / a);
    EXPECT_EQ(ab.data[i], std::abs(a));
    EXPECT_EQ(ng.data[i], -a);
    EXPECT_EQ(ss.data[i], a / (1.0f + std::abs(a)));
    EXPECT_EQ(hs.data[i], a * std::min(std::max(a + 3.0f, 0.0f), 6.0f) / 6.0f);
  }
}

// `edges`, then every 4099th float bit pattern but NaNs: all signs, exponents and many mantissas.
std::vector<float> SweptFloats(std::vector<float> edges) {
  for (uint64_t u = 0; u < (uint64_t{1} << 32); u += 4099) {
    const float f = std::bit_cast<float>(static_cast<uint32_t>(u));
    if (!std::isnan(f)) edges.push_back(f);
  }
  return edges;
}

// to_float16 rounds as the compiler's own float16 conversion does (GCC's _Float16: IEEE
// round-to-nearest-even, subnormals, overflow to inf), over a spread of every float's bit
// patterns and the boundaries; every float16 decodes to a value it keeps.
TEST(ElementwiseForwardTest, ToFloat16RoundsAsTheCompilersFloat16) {
  const std::vector<float> xs = SweptFloats({0.0f, -0.0f, 65504.0f, 65519.996f, 65520.0f, -65520.0f, 6.1035156e-05f,
                                              6.1e-05f, 5.9604645e-08f, 2.9802322e-08f, 2.9802326e-08f,
                                              1.0f + 1.0f / 2048, 1.0f + 3.0f / 2048});
  const Tensor y = RunForward(OpKind::kToFloat16, {Make({static_cast<int64_t>(xs.size())}, xs)});
  for (size_t i = 0; i < xs.size(); ++i) {
    const float want = static_cast<float>(static_cast<_Float16>(xs[i]));
    ASSERT_EQ(std::bit_cast<uint32_t>(y.data[i]), std::bit_cast<uint32_t>(want)) << "to_float16(" << xs[i] << ")";
  }
  for (uint32_t h = 0; h < 65536; ++h) {
    const float v = ir::Float16BitsToFloat(static_cast<uint16_t>(h));
    const float want = static_cast<float>(std::bit_cast<_Float16>(static_cast<uint16_t>(h)));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(v) && std::isnan(ir::RoundToFloat16(v))) << h;
      continue;
    }
    ASSERT_EQ(std::bit_cast<uint32_t>(v), std::bit_cast<uint32_t>(want)) << "float16 bits " << h;
    ASSERT_EQ(std::bit_cast<uint32_t>(ir::RoundToFloat16(v)), std::bit_cast<uint32_t>(v)) << "float16 bits " << h;
  }
}

// to_bfloat16 picks the nearer of the two bfloat16 values around x (by exact distance in double),
// the one with an even last bit on a tie; overflow goes to inf, NaN stays NaN.
TEST(ElementwiseForwardTest, ToBfloat16RoundsToNearestEven) {
  const std::vector<float> xs = SweptFloats({0.0f, -0.0f, 1.0f + 1.0f / 256, 1.0f + 3.0f / 256, 3.3961514e38f, -kInf});
  const Tensor y = RunForward(OpKind::kToBfloat16, {Make({static_cast<int64_t>(xs.size())}, xs)});
  for (size_t i = 0; i < xs.size(); ++i) {
    const uint32_t bits = std::bit_cast<uint32_t>(xs[i]);
    const uint32_t lo = bits & 0xffff0000u;
    float want = std::bit_cast<float>(lo);
    if ((bits & 0xffffu) != 0 && !std::isinf(xs[i])) {
      const uint32_t hi_bits = lo + 0x10000u;  // the next bfloat16 away from 0 (may be inf)
      const double up = (hi_bits & 0x7fffffffu) >= 0x7f800000u
                            ? std::ldexp(1.0, 128) * (std::signbit(xs[i]) ? -1 : 1)  // past the largest
                            : static_cast<double>(std::bit_cast<float>(hi_bits));
      const double d_lo = std::abs(static_cast<double>(xs[i]) - want), d_hi = std::abs(up - xs[i]);
      if (d_hi < d_lo || (d_hi == d_lo && (lo & 0x10000u) != 0)) want = std::bit_cast<float>(hi_bits);
    }
    ASSERT_EQ(std::bit_cast<uint32_t>(y.data[i]), std::bit_cast<uint32_t>(want)) << "to_bfloat16(" << xs[i] << ")";
  }
  const Tensor n = RunForward(OpKind::kToBfloat16, {Make({1}, {std::numeric_limits<float>::quiet_NaN()})});
  EXPECT_TRUE(std::isnan(n.data[0]));
}

// Within 3 ulp of the double-precision function (the measured maxima over every float are 2.4
// and 1.3 ulp), odd/symmetric as the functions are, with the IEEE special values.
TEST(ElementwiseForwardTest, SigmoidAndTanhAreAccurateToAFewUlp) {
  Tensor x({20001});
  for (int64_t i = 0; i < x.numel(); ++i) x.data[i] = -20.0f + 0.002f * static_cast<float>(i);
  const Tensor s = RunForward(OpKind::kSigmoid, {x}), t = RunForward(OpKind::kTanh, {x});
  auto ulps = [](double want, float got) {
    return std::abs(got - want) / std::ldexp(1.0, std::ilogb(static_cast<float>(want)) - 23);
  };
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double v = x.data[i];
    ASSERT_LE(ulps(1.0 / (1.0 + std::exp(-v)), s.data[i]), 3.0) << "sigmoid(" << v << ") = " << s.data[i];
    if (v != 0) {
      ASSERT_LE(ulps(std::tanh(v), t.data[i]), 3.0) << "tanh(" << v << ") = " << t.data[i];
    }
  }
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const Tensor special = Make({7}, {0.0f, -0.0f, kInf, -kInf, nan, 1e-30f, -100.0f});
  const Tensor ss = RunForward(OpKind::kSigmoid, {special}), ts = RunForward(OpKind::kTanh, {special});
  EXPECT_EQ(std::vector<float>(ss.data.begin(), ss.data.begin() + 4), (std::vector<float>{0.5f, 0.5f, 1.0f, 0.0f}));
  EXPECT_TRUE(std::isnan(ss.data[4]));
  EXPECT_EQ(ss.data[6], 0.0f);
  EXPECT_EQ(std::vector<float>(ts.data.begin(), ts.data.begin() + 4), (std::vector<float>{0.0f, -0.0f, 1.0f, -1.0f}));
  EXPECT_TRUE(std::signbit(ts.data[1])) << "tanh(-0) is -0";
  EXPECT_TRUE(std::isnan(ts.data[4]));
  EXPECT_EQ(ts.data[5], 1e-30f);
}

TEST(ElementwiseForwardTest, ExpandRepeatsAlongBroadcastDims) {
  Attrs a;
  a.shape = {2, 2, 3};
  const Tensor y = RunForward(OpKind::kExpand, {Make({2, 1}, {5, 7})}, a);
  EXPECT_EQ(y.data, (std::vector<float>{5, 5, 5, 7, 7, 7, 5, 5, 5, 7, 7, 7}));
}

// ---------------------------------------------------------------------------------------------
// Dropout stream

// The documented stream, written out independently of the kernel:
// u = (splitmix64(seed ^ splitmix64(step ^ splitmix64(j))) >> 40) · 2^-24; keep iff u >= p.
uint64_t ReferenceSplitMix64(uint64_t x) {
  uint64_t z = x + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

bool ReferenceKept(uint64_t seed, uint64_t step, uint64_t j, double p) {
  const double u = static_cast<double>(
                       ReferenceSplitMix64(seed ^ ReferenceSplitMix64(step ^ ReferenceSplitMix64(j))) >>
                       40) *
                   std::ldexp(1.0, -24);
  return u >= p;
}

Attrs DropoutAttrs(double p, uint64_t seed) {
  Attrs a;
  a.p = p;
  a.seed = seed;
  return a;
}

TEST(DropoutTest, ZeroProbabilityIsExactIdentity) {
  const Tensor x = Iota({1000}, 0.013f, -5.0f);
  EXPECT_EQ(RunForward(OpKind::kDropout, {x}, DropoutAttrs(0.0, 9), 3).data, x.data);
}

TEST(DropoutTest, MaskFollowsTheDocumentedStream) {
  const double p = 0.3;
  const Tensor x(Shape{20000}, 1.0f);
  const Tensor y = RunForward(OpKind::kDropout, {x}, DropoutAttrs(p, 42), 7);
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  int64_t kept = 0;
  for (int64_t j = 0; j < x.numel(); ++j) {
    const bool want = ReferenceKept(42, 7, static_cast<uint64_t>(j), p);
    ASSERT_EQ(y.data[j], want ? scale : 0.0f) << "element " << j;
    kept += want;
  }
  // 20000 Bernoulli(0.7) draws: the standard deviation of the kept fraction is 0.0032.
  EXPECT_NEAR(static_cast<double>(kept) / x.numel(), 1.0 - p, 0.015);
}

TEST(DropoutTest, SameSeedAndStepGiveSameMask) {
  const Tensor x = Iota({5000}, 0.01f, 1.0f);
  EXPECT_EQ(RunForward(OpKind::kDropout, {x}, DropoutAttrs(0.5, 11), 4).data,
            RunForward(OpKind::kDropout, {x}, DropoutAttrs(0.5, 11), 4).data);
}

TEST(DropoutTest, StepAndSeedChangeTheMask) {
  const Tensor x(Shape{5000}, 1.0f);
  const Tensor base = RunForward(OpKind::kDropout, {x}, DropoutAttrs(0.5, 11), 4);
  const Tensor next_step = RunForward(OpKind::kDropout, {x}, DropoutAttrs(0.5, 11), 5);
  const Tensor other_seed = RunForward(OpKind::kDropout, {x}, DropoutAttrs(0.5, 12), 4);
  auto differing = [&](const Tensor& t) {
    int64_t n = 0;
    for (int64_t j = 0; j < x.numel(); ++j) n += (t.data[j] == 0.0f) != (base.data[j] == 0.0f);
    return n;
  };
  // Independent masks with p = 0.5 disagree on half the elements.
  EXPECT_GT(differing(next_step), 2000);
  EXPECT_GT(differing(other_seed), 2000);
}

TEST(DropoutTest, BackwardUsesTheForwardMask) {
  const Attrs a = DropoutAttrs(0.25, 77);
  const Tensor x = Iota({300}, 0.1f, 0.05f);
  const Tensor y = RunForward(OpKind::kDropout, {x}, a, 2);
  const Tensor dy(Shape{300}, 1.0f);
  Tensor dx(Shape{300});
  const Tensor* in[] = {&x};
  Tensor* din[] = {&dx};
  Backward(MakeNode(OpKind::kDropout, a), KernelContext{2}, in, y, dy, SavedState{}, din);
  for (int64_t j = 0; j < 300; ++j) {
    EXPECT_EQ(dx.data[j] == 0.0f, y.data[j] == 0.0f) << "element " << j;
  }
}

// ---------------------------------------------------------------------------------------------
// Normalization values

TEST(NormForwardTest, LayerNormOfKnownRow) {
  Attrs a;
  a.eps = 1e-5;
  SavedState saved;
  const Tensor y = RunForward(OpKind::kLayerNorm,
                              {Make({2, 4}, {1, 2, 3, 4, 1, 2, 3, 4}), Make({4}, {1, 1, 2, 2}),
                               Make({4}, {0, 0, 1, 1})},
                              a, 0, &saved);
  // mean 2.5, biased variance 1.25, rstd = 1/√1.25001.
  const std::vector<double> want = {-1.3416354199689269, -0.447211806656309, 1.894423613312618,
                                    3.6832708399378538};
  for (int64_t r = 0; r < 2; ++r) {
    for (int64_t j = 0; j < 4; ++j) EXPECT_NEAR(y.at({r, j}), want[j], 1e-5);
  }
  ASSERT_EQ(saved.tensors.size(), 2u);
  EXPECT_FLOAT_EQ(saved.tensors[0].data[0], 2.5f);
  EXPECT_NEAR(saved.tensors[1].data[0], 0.894423613, 1e-6);
}

TEST(NormForwardTest, SoftmaxRowsSumToOne) {
  const Tensor x = Iota({3, 7}, 1.7f, -12.0f);
  const Tensor y = RunForward(OpKind::kSoftmax, {x});
  for (int64_t r = 0; r < 3; ++r) {
    double s = 0;
    for (int64_t j = 0; j < 7; ++j) s += y.at({r, j});
    EXPECT_NEAR(s, 1.0, 1e-6);
  }
}

TEST(NormForwardTest, SoftmaxOfLongMaskedRowMatchesDoubleReference) {
  Tensor x({2, 37});
  for (int64_t i = 0; i < x.numel(); ++i) {
    x.data[i] = i % 3 == 1 ? -kInf : std::sin(0.7f * static_cast<float>(i)) * 6.0f;
  }
  const Tensor y = RunForward(OpKind::kSoftmax, {x});
  const Tensor ly = RunForward(OpKind::kLogSoftmax, {x});
  for (int64_t r = 0; r < 2; ++r) {
    const float* xr = x.ptr() + r * 37;
    double m = -kInf, s = 0;
    for (int64_t j = 0; j < 37; ++j) m = std::max(m, double(xr[j]));
    for (int64_t j = 0; j < 37; ++j) s += std::exp(double(xr[j]) - m);
    for (int64_t j = 0; j < 37; ++j) {
      const double want = std::exp(double(xr[j]) - m) / s;
      if (std::isinf(xr[j])) {
        EXPECT_EQ(y.at({r, j}), 0.0f);
        EXPECT_EQ(ly.at({r, j}), -kInf);
        continue;
      }
      EXPECT_NEAR(y.at({r, j}), want, 1e-6 * want) << r << "," << j;
      EXPECT_NEAR(ly.at({r, j}), std::log(want), 1e-5) << r << "," << j;
    }
  }
}

TEST(NormForwardTest, SoftmaxIsStableForLargeLogits) {
  const Tensor y = RunForward(OpKind::kSoftmax, {Make({1, 2}, {1000, 1000})});
  EXPECT_EQ(y.data, (std::vector<float>{0.5f, 0.5f}));
  // The same in a long row whose max sits in the vectorized part, not the tail.
  Tensor x({1, 21});
  x.data[3] = 1000;
  const Tensor ly = RunForward(OpKind::kLogSoftmax, {x});
  EXPECT_EQ(ly.data[3], 0.0f);
  EXPECT_EQ(ly.data[0], -1000.0f);
  const Tensor ce = RunForward(OpKind::kCrossEntropy, {x, Make({1}, {3})});
  EXPECT_EQ(ce.data[0], 0.0f);
}

TEST(NormForwardTest, SoftmaxAndLogSoftmaxHandleNegativeInfinity) {
  const Tensor x = Make({2, 3}, {0, -kInf, 0, -kInf, 3, -kInf});
  const Tensor y = RunForward(OpKind::kSoftmax, {x});
  EXPECT_EQ(y.data, (std::vector<float>{0.5f, 0, 0.5f, 0, 1, 0}));
  const Tensor ly = RunForward(OpKind::kLogSoftmax, {x});
  EXPECT_NEAR(ly.data[0], -std::log(2.0), 1e-6);
  EXPECT_EQ(ly.data[1], -kInf);
  EXPECT_NEAR(ly.data[2], -std::log(2.0), 1e-6);
  EXPECT_EQ(ly.data[4], 0.0f);

  // The -inf entries get no gradient and the others stay finite.
  const Tensor dy = Make({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor dx({2, 3});
  const Tensor* in[] = {&x};
  Tensor* din[] = {&dx};
  Backward(MakeNode(OpKind::kSoftmax, {}), KernelContext{}, in, y, dy, SavedState{}, din);
  EXPECT_EQ(dx.data, (std::vector<float>{-0.5f, 0, 0.5f, 0, 0, 0}));
}

TEST(NormForwardTest, CrossEntropyOfKnown2x3Case) {
  const Tensor logits = Make({2, 3}, {1, 2, 3, 1, 1, 1});
  const Tensor labels = Make({2}, {2, 0});
  SavedState saved;
  const Tensor loss = RunForward(OpKind::kCrossEntropy, {logits, labels}, {}, 0, &saved);
  ASSERT_EQ(loss.shape, Shape{});
  ASSERT_EQ(loss.numel(), 1);
  // ((log(e + e² + e³) − 3) + log 3) / 2
  EXPECT_NEAR(loss.data[0], 0.753109126556245, 1e-6);
  ASSERT_EQ(saved.tensors.size(), 1u);
  EXPECT_EQ(saved.tensors[0].numel(), 2) << "only the per-row logsumexp is kept";

  const Tensor dloss = Make({}, {2.0f});
  Tensor dlogits({2, 3});
  const Tensor* in[] = {&logits, &labels};
  Tensor* din[] = {&dlogits, nullptr};
  Backward(MakeNode(OpKind::kCrossEntropy, {}), KernelContext{}, in, loss, dloss, saved, din);
  // (softmax − onehot) · dout / N with dout = 2, N = 2.
  const std::vector<double> want = {0.09003057317038046, 0.24472847105479767,
                                    0.6652409557748219 - 1, 1.0 / 3 - 1, 1.0 / 3, 1.0 / 3};
  for (int64_t i = 0; i < 6; ++i) EXPECT_NEAR(dlogits.data[i], want[i], 1e-6) << i;
}

TEST(NormForwardTest, CrossEntropyIsStableForLargeLogits) {
  const Tensor logits = Make({2, 3}, {1000, 0, -1000, 1000, 0, -1000});
  const Tensor loss = RunForward(OpKind::kCrossEntropy, {logits, Make({2}, {0, 1})});
  EXPECT_NEAR(loss.data[0], 500.0, 1e-3);  // (0 + 1000) / 2
}

TEST(NormDeathTest, CrossEntropyRejectsOutOfRangeLabel) {
  const Tensor logits = Make({2, 3}, {1, 2, 3, 1, 1, 1});
  EXPECT_DEATH(RunForward(OpKind::kCrossEntropy, {logits, Make({2}, {0, 3})}), "label 3");
  EXPECT_DEATH(RunForward(OpKind::kCrossEntropy, {logits, Make({2}, {-1, 0})}), "label -1");
}

// ---------------------------------------------------------------------------------------------
// Layout values

TEST(LayoutForwardTest, EmbeddingGathersRows) {
  const Tensor table = Iota({4, 2});
  const Tensor y = RunForward(OpKind::kEmbedding, {Make({3}, {3, 0, 3}), table});
  EXPECT_EQ(y.shape, (Shape{3, 2}));
  EXPECT_EQ(y.data, (std::vector<float>{6, 7, 0, 1, 6, 7}));
}

TEST(LayoutDeathTest, EmbeddingRejectsOutOfRangeId) {
  EXPECT_DEATH(RunForward(OpKind::kEmbedding, {Make({2}, {1, 4}), Iota({4, 2})}), "id 4");
}

TEST(LayoutForwardTest, TransposeLastTwoDimsMatchesNaive) {
  const Tensor x = Iota({3, 37, 45});
  const Tensor y = RunForward(OpKind::kTranspose, {x}, AxisAttrs(1, 2));
  ASSERT_EQ(y.shape, (Shape{3, 45, 37}));
  for (int64_t b = 0; b < 3; ++b) {
    for (int64_t i = 0; i < 37; ++i) {
      for (int64_t j = 0; j < 45; ++j) ASSERT_EQ(y.at({b, j, i}), x.at({b, i, j}));
    }
  }
}

TEST(LayoutForwardTest, TransposeOuterDimsWithInnerRunMatchesNaive) {
  const Tensor x = Iota({2, 3, 4, 5});
  const Tensor y = RunForward(OpKind::kTranspose, {x}, AxisAttrs(0, -2));
  ASSERT_EQ(y.shape, (Shape{4, 3, 2, 5}));
  for (int64_t a = 0; a < 2; ++a) {
    for (int64_t b = 0; b < 3; ++b) {
      for (int64_t c = 0; c < 4; ++c) {
        for (int64_t d = 0; d < 5; ++d) ASSERT_EQ(y.at({c, b, a, d}), x.at({a, b, c, d}));
      }
    }
  }
}

TEST(LayoutForwardTest, ConcatAndSliceInvertEachOther) {
  const Tensor a = Iota({2, 2, 3});
  const Tensor b = Iota({2, 1, 3}, 1.0f, 100.0f);
  const Tensor cat = RunForward(OpKind::kConcat, {a, b}, AxisAttrs(1));
  ASSERT_EQ(cat.shape, (Shape{2, 3, 3}));
  Attrs s;
  s.axis = 1;
  s.start = 2;
  s.length = 1;
  EXPECT_EQ(RunForward(OpKind::kSlice, {cat}, s).data, b.data);
  s.start = 0;
  s.length = 2;
  EXPECT_EQ(RunForward(OpKind::kSlice, {cat}, s).data, a.data);
}

}  // namespace
}  // namespace hetsynth::runtime
