// GPU elementwise operators against the CPU kernels (gpu_op_check.h).
#include <utility>
#include <vector>

#include "gpu_op_check.h"
#include "ops/elementwise.h"

namespace hetsynth::runtime::testing {
namespace {

template <class X>
using GpuElementwiseTest = GpuOpTest<X>;
TYPED_TEST_SUITE(GpuElementwiseTest, GpuExecutors);

// (a, b) shape pairs for add and mul: same shape, b a suffix of a, b with size-1 dims (general
// broadcast, including a's own size-1 dims and a scalar b), and a larger reduction.
std::vector<std::pair<ir::Shape, ir::Shape>> BroadcastPairs() {
  return {
      {{5}, {5}},
      {{3, 4, 7}, {3, 4, 7}},
      {{2, 5, 6}, {6}},
      {{2, 5, 6}, {5, 6}},
      {{4, 3, 5}, {3, 1}},
      {{4, 3, 5}, {4, 1, 5}},
      {{2, 1, 3}, {1, 3}},
      {{3, 1, 4}, {1, 4}},
      {{5}, {1}},
      {{1}, {1}},
      {{3, 4}, {}},
      {{2, 3, 4, 5}, {3, 1, 5}},
      {{2, 1, 3, 1, 4}, {3, 1, 1}},
      {{3, 2, 5, 4}, {1, 2, 1, 4}},
      {{64, 33, 17}, {17}},
      {{7, 9, 11}, {7, 1, 1}},
  };
}

TYPED_TEST(GpuElementwiseTest, Relu) {
  using X = TypeParam;
  for (const ir::Shape& s : {ir::Shape{5}, ir::Shape{3, 4, 7}, ir::Shape{1}}) {
    OpCase c = RandomCase(ir::OpKind::kRelu, {s});
    c.tol = 0.0;  // shared math (runtime/ops/unary_math.h): the same bits
    ExpectMatchesCpu(this->x(), c, &gpu::ReluForward<X>, &gpu::ReluBackward<X>);
  }
}

// The ops whose math is shared (runtime/ops/unary_math.h) compute the CPU's bits exactly: on
// the host, and on a GPU, where nvcc compiles the same functions (nothing in them can be fused
// differently). Random values, a range reaching both tails, and the special points: signed
// zeros, the switches of tanh (|x| = 0.625) and of its cap (9.1), ExpF's cut-off (−87), tiny
// and huge values, infinities.
template <class X, class Fwd, class Bwd>
void ExpectSameBits(X& x, ir::OpKind kind, Fwd fwd, Bwd bwd) {
  for (const ir::Shape& s : {ir::Shape{5}, ir::Shape{3, 4, 7}, ir::Shape{1}, ir::Shape{2, 1, 9}}) {
    OpCase c = RandomCase(kind, {s});
    c.tol = 0.0;
    ExpectMatchesCpu(x, c, fwd, bwd);
  }
  OpCase wide = RandomCase(kind, {{4, 257}});
  wide.inputs[0] = RandomTensor({4, 257}, 11, -30.0f, 30.0f);
  wide.tol = 0.0;
  ExpectMatchesCpu(x, wide, fwd, bwd);
  OpCase special = RandomCase(kind, {{16}});
  special.inputs[0].data = {0.0f,    -0.0f,  0.625f, -0.625f, 0.62499994f, 9.1f,   -9.1f,   9.100001f,
                            -87.0f,  -87.1f, 88.0f,  1e-30f,  -1e-38f,     1e-45f, INFINITY, -INFINITY};
  special.tol = 0.0;
  ExpectMatchesCpu(x, special, fwd, bwd);
}

TYPED_TEST(GpuElementwiseTest, SigmoidSameBitsAsCpu) {
  using X = TypeParam;
  ExpectSameBits(this->x(), ir::OpKind::kSigmoid, &gpu::SigmoidForward<X>, &gpu::SigmoidBackward<X>);
}

TYPED_TEST(GpuElementwiseTest, TanhSameBitsAsCpu) {
  using X = TypeParam;
  ExpectSameBits(this->x(), ir::OpKind::kTanh, &gpu::TanhForward<X>, &gpu::TanhBackward<X>);
}

TYPED_TEST(GpuElementwiseTest, Add) {
  using X = TypeParam;
  for (const auto& [a, b] : BroadcastPairs()) {
    SCOPED_TRACE(ir::ShapeString(a) + " + " + ir::ShapeString(b));
    ExpectMatchesCpu(this->x(), RandomCase(ir::OpKind::kAdd, {a, b}), &gpu::AddForward<X>, &gpu::AddBackward<X>);
  }
}

TYPED_TEST(GpuElementwiseTest, Mul) {
  using X = TypeParam;
  for (const auto& [a, b] : BroadcastPairs()) {
    SCOPED_TRACE(ir::ShapeString(a) + " * " + ir::ShapeString(b));
    ExpectMatchesCpu(this->x(), RandomCase(ir::OpKind::kMul, {a, b}, {}, 3), &gpu::MulForward<X>, &gpu::MulBackward<X>);
  }
}

TYPED_TEST(GpuElementwiseTest, Gelu) {
  using X = TypeParam;
  for (const ir::Shape& s : {ir::Shape{5}, ir::Shape{3, 4, 7}, ir::Shape{1}, ir::Shape{2, 1, 9}}) {
    ExpectMatchesCpu(this->x(), RandomCase(ir::OpKind::kGelu, {s}), &gpu::GeluForward<X>, &gpu::GeluBackward<X>);
  }
  // A wide range: the far negative tail (where Φ goes through erfc) and saturation.
  OpCase wide = RandomCase(ir::OpKind::kGelu, {{4, 257}});
  wide.inputs[0] = RandomTensor({4, 257}, 11, -12.0f, 12.0f);
  ExpectMatchesCpu(this->x(), wide, &gpu::GeluForward<X>, &gpu::GeluBackward<X>);
  // Exact special points: 0, ±large, and the exp cut-off region.
  OpCase special = RandomCase(ir::OpKind::kGelu, {{8}});
  special.inputs[0].data = {0.0f, -0.0f, 1e-8f, -1e-8f, 30.0f, -30.0f, -13.2f, 100.0f};
  ExpectMatchesCpu(this->x(), special, &gpu::GeluForward<X>, &gpu::GeluBackward<X>);
}

TYPED_TEST(GpuElementwiseTest, Dropout) {
  using X = TypeParam;
  for (double p : {0.0, 0.1, 0.5, 0.9}) {
    for (const ir::Shape& s : {ir::Shape{1}, ir::Shape{257}, ir::Shape{3, 4, 7}, ir::Shape{2, 1, 5, 3}}) {
      ir::Attrs attrs;
      attrs.p = p;
      attrs.seed = 1234;
      OpCase c = RandomCase(ir::OpKind::kDropout, {s}, attrs);
      c.step = 5;
      SCOPED_TRACE(StrCat("p=", p, " on ", ir::ShapeString(s)));
      ExpectMatchesCpu(this->x(), c, &gpu::DropoutForward<X>, &gpu::DropoutBackward<X>);
    }
  }
  // Other seeds and steps (including a large step and seed).
  for (auto [seed, step] : std::vector<std::pair<uint64_t, int64_t>>{{0, 0}, {7, 1}, {0xFFFFFFFFFFFFull, 123456789}}) {
    ir::Attrs attrs;
    attrs.p = 0.3;
    attrs.seed = seed;
    OpCase c = RandomCase(ir::OpKind::kDropout, {{6, 33}}, attrs);
    c.step = step;
    ExpectMatchesCpu(this->x(), c, &gpu::DropoutForward<X>, &gpu::DropoutBackward<X>);
  }
}

// A piece of a split tensor indexes the mask by its elements' places in the full tensor.
TYPED_TEST(GpuElementwiseTest, DropoutShard) {
  using X = TypeParam;
  struct Piece {
    ir::Shape full;
    int dim;
    int64_t start, len;
  };
  for (const Piece& pc : {Piece{{8, 5, 6}, 0, 2, 3}, Piece{{8, 5, 6}, 1, 1, 4}, Piece{{8, 5, 6}, 2, 3, 3},
                          Piece{{8, 5, 6}, 0, 0, 8}, Piece{{9}, 0, 4, 5}, Piece{{4, 7}, 1, 6, 1},
                          Piece{{3, 1, 10}, 1, 0, 1}}) {
    ir::Shape piece = pc.full;
    piece[static_cast<size_t>(pc.dim)] = pc.len;
    ir::Attrs attrs;
    attrs.p = 0.4;
    attrs.seed = 99;
    OpCase c = RandomCase(ir::OpKind::kDropout, {piece}, attrs);
    c.step = 3;
    c.has_shard = true;
    c.shard = ShardInfo{pc.full, pc.dim, pc.start};
    SCOPED_TRACE(StrCat(ir::ShapeString(piece), " of ", ir::ShapeString(pc.full), " dim ", pc.dim, " at ", pc.start));
    ExpectMatchesCpu(this->x(), c, &gpu::DropoutForward<X>, &gpu::DropoutBackward<X>);
  }
}

TYPED_TEST(GpuElementwiseTest, Expand) {
  using X = TypeParam;
  const std::vector<std::pair<ir::Shape, ir::Shape>> cases = {
      {{3, 1}, {2, 3, 4}}, {{4}, {3, 4}},       {{1}, {5, 2}},          {{2, 1, 3}, {2, 4, 3}},
      {{2, 3}, {2, 3}},    {{1, 1}, {1, 1}},    {{5, 1, 1}, {2, 5, 3, 7}}, {{17}, {40, 9, 17}},
  };
  for (const auto& [from, to] : cases) {
    ir::Attrs attrs;
    attrs.shape = to;
    SCOPED_TRACE(ir::ShapeString(from) + " -> " + ir::ShapeString(to));
    ExpectMatchesCpu(this->x(), RandomCase(ir::OpKind::kExpand, {from}, attrs), &gpu::ExpandForward<X>,
                     &gpu::ExpandBackward<X>);
  }
}

TYPED_TEST(GpuElementwiseTest, CausalMask) {
  using X = TypeParam;
  for (const ir::Shape& s : {ir::Shape{4, 4}, ir::Shape{2, 3, 5, 5}, ir::Shape{1, 1}, ir::Shape{3, 1, 1},
                             ir::Shape{2, 7, 7}}) {
    ExpectMatchesCpu(this->x(), RandomCase(ir::OpKind::kCausalMask, {s}), &gpu::CausalMaskForward<X>,
                     &gpu::CausalMaskBackward<X>);
  }
}

// clip: random values, values exactly at the bounds (gradient 0 there: it passes strictly
// inside), NaN and infinities; a ReLU6 range, a negative one and min == max.
TYPED_TEST(GpuElementwiseTest, Clip) {
  using X = TypeParam;
  for (const auto& [lo, hi] :
       {std::pair{0.0, 6.0}, std::pair{-0.5, 0.25}, std::pair{-2.0, -1.0}, std::pair{0.1, 0.1}}) {
    ir::Attrs a;
    a.min = lo;
    a.max = hi;
    for (const ir::Shape& s : {ir::Shape{5}, ir::Shape{3, 4, 7}, ir::Shape{1}}) {
      OpCase c = RandomCase(ir::OpKind::kClip, {s}, a);
      for (float& v : c.inputs[0].data) v *= 3.0f;
      ExpectMatchesCpu(this->x(), c, &gpu::ClipForward<X>, &gpu::ClipBackward<X>);
    }
    OpCase special = RandomCase(ir::OpKind::kClip, {{9}}, a);
    special.inputs[0].data = {static_cast<float>(lo), static_cast<float>(hi), 0.0f, -0.0f, NAN, INFINITY,
                              -INFINITY, 6.0000005f, -1e-30f};
    ExpectMatchesCpu(this->x(), special, &gpu::ClipForward<X>, &gpu::ClipBackward<X>);
  }
}

}  // namespace
}  // namespace hetsynth::runtime::testing
