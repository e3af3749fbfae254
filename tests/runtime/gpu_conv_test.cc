// GPU convolution and pooling operators against the CPU kernels (gpu_op_check.h).
#include <cmath>

#include "gpu_op_check.h"
#include "ops/conv.h"

namespace hetsynth::runtime::testing {
namespace {

template <class X>
using GpuConvTest = GpuOpTest<X>;
TYPED_TEST_SUITE(GpuConvTest, GpuExecutors);

ir::Attrs ConvAttrs(int64_t kernel, int64_t stride, int64_t padding) {
  ir::Attrs a;
  a.kernel = kernel;
  a.stride = stride;
  a.padding = padding;
  return a;
}

// x [b, ci, h, w], weight [co, ci, k, k] and, when `bias`, bias [co].
OpCase ConvCase(ir::Shape x, int64_t co, int64_t k, int64_t stride, int64_t padding, bool bias) {
  std::vector<ir::Shape> shapes = {x, {co, x[1], k, k}};
  if (bias) shapes.push_back({co});
  return RandomCase(ir::OpKind::kConv2d, shapes, ConvAttrs(k, stride, padding));
}

// x [b, ci, h, w], weight [co, ci/groups, k, k] and, when `bias`, bias [co].
OpCase GroupedConvCase(ir::Shape x, int64_t co, int64_t k, int64_t stride, int64_t padding, int64_t groups,
                       bool bias) {
  std::vector<ir::Shape> shapes = {x, {co, x[1] / groups, k, k}};
  if (bias) shapes.push_back({co});
  ir::Attrs a = ConvAttrs(k, stride, padding);
  a.groups = groups;
  return RandomCase(ir::OpKind::kConv2d, shapes, a);
}

template <class X>
void CheckConv(X& x, const OpCase& c) {
  ExpectMatchesCpu(x, c, &gpu::Conv2dForward<X>, &gpu::Conv2dBackward<X>);
}

TYPED_TEST(GpuConvTest, Conv2dStrideAndPadding) {
  for (int64_t stride : {1, 2}) {
    for (int64_t padding : {0, 1}) {
      for (bool bias : {true, false}) {
        SCOPED_TRACE(StrCat("stride=", stride, " padding=", padding, " bias=", bias));
        CheckConv(this->x(), ConvCase({2, 3, 7, 7}, 4, 3, stride, padding, bias));
      }
    }
  }
}

TYPED_TEST(GpuConvTest, Conv2dOddShapes) {
  // Non-square images, stride larger than the kernel, padding wider than half the kernel.
  CheckConv(this->x(), ConvCase({2, 3, 5, 8}, 4, 3, 2, 1, true));
  CheckConv(this->x(), ConvCase({3, 2, 9, 6}, 5, 2, 3, 0, true));
  CheckConv(this->x(), ConvCase({1, 3, 4, 5}, 2, 3, 1, 2, true));
  // Size-1 dims: one image, one channel, a 1×1 image under a padded 3×3 kernel.
  CheckConv(this->x(), ConvCase({1, 1, 1, 1}, 1, 3, 1, 1, true));
  CheckConv(this->x(), ConvCase({1, 3, 3, 3}, 1, 3, 1, 0, false));
  // Kernel as large as the image.
  CheckConv(this->x(), ConvCase({2, 3, 7, 7}, 4, 7, 1, 0, true));
}

TYPED_TEST(GpuConvTest, Conv2dPointwise) {
  // 1×1, stride 1, unpadded: the images are their own column matrices (batched Gemm path).
  CheckConv(this->x(), ConvCase({2, 3, 7, 7}, 4, 1, 1, 0, true));
  CheckConv(this->x(), ConvCase({3, 5, 4, 3}, 2, 1, 1, 0, false));
  // 1×1 with stride or padding goes through the columns.
  CheckConv(this->x(), ConvCase({2, 3, 7, 7}, 4, 1, 2, 0, true));
  CheckConv(this->x(), ConvCase({2, 3, 7, 7}, 4, 1, 1, 1, true));
}

TYPED_TEST(GpuConvTest, Conv2dManyChunks) {
  // 29 images of 144 × 4096 column entries: more than one chunk's worth of columns (2^24), so
  // the images go in a chunk of 28 and a chunk of one.
  OpCase c = ConvCase({29, 16, 64, 64}, 2, 3, 1, 1, true);
  c.tol = 2e-5;  // dW sums 29 · 4096 products per entry, chunked differently from the CPU
  CheckConv(this->x(), c);
}

TYPED_TEST(GpuConvTest, Conv2dGroups) {
  for (int64_t stride : {1, 2}) {
    for (int64_t padding : {0, 1}) {
      for (bool bias : {true, false}) {
        SCOPED_TRACE(StrCat("stride=", stride, " padding=", padding, " bias=", bias));
        // Two groups of 2 input and 3 output channels.
        CheckConv(this->x(), GroupedConvCase({2, 4, 7, 7}, 6, 3, stride, padding, 2, bias));
        // Depthwise (groups = Ci = Co), and depthwise with two filters per channel.
        CheckConv(this->x(), GroupedConvCase({2, 3, 7, 6}, 3, 3, stride, padding, 3, bias));
        CheckConv(this->x(), GroupedConvCase({3, 3, 5, 7}, 6, 3, stride, padding, 3, bias));
      }
    }
  }
  // One image (the Gemm writes the output image itself), groups = Ci with one output each of a
  // 5×5 kernel, and 1×1 grouped convolutions (through the columns, not the batched-image path).
  CheckConv(this->x(), GroupedConvCase({1, 4, 6, 6}, 8, 3, 1, 1, 4, true));
  CheckConv(this->x(), GroupedConvCase({2, 4, 9, 9}, 4, 5, 2, 2, 4, true));
  CheckConv(this->x(), GroupedConvCase({2, 6, 5, 4}, 4, 1, 1, 0, 2, true));
  CheckConv(this->x(), GroupedConvCase({3, 6, 5, 4}, 6, 1, 1, 0, 6, false));
  CheckConv(this->x(), GroupedConvCase({2, 6, 5, 4}, 9, 1, 2, 1, 3, true));
}

TYPED_TEST(GpuConvTest, Conv2dGroupsManyChunks) {
  // As Conv2dManyChunks (a chunk of 28 images and one of 1), in 4 groups.
  OpCase c = GroupedConvCase({29, 16, 64, 64}, 4, 3, 1, 1, 4, true);
  c.tol = 2e-5;
  CheckConv(this->x(), c);
}

ir::Attrs PoolAttrs(int64_t kernel, int64_t stride, int64_t padding = 0) {
  ir::Attrs a;
  a.kernel = kernel;
  a.stride = stride;
  a.padding = padding;
  return a;
}

template <class X>
void CheckMaxPool(X& x, const OpCase& c) {
  ExpectMatchesCpu(x, c, &gpu::MaxPool2dForward<X>, &gpu::MaxPool2dBackward<X>);
}

TYPED_TEST(GpuConvTest, MaxPool2d) {
  struct Variant {
    ir::Shape x;
    int64_t kernel, stride;
  };
  for (const Variant& v : {Variant{{2, 3, 7, 7}, 3, 1}, Variant{{2, 3, 7, 7}, 3, 2}, Variant{{2, 3, 7, 7}, 2, 2},
                           Variant{{2, 3, 7, 7}, 3, 3}, Variant{{2, 3, 7, 7}, 2, 3}, Variant{{1, 1, 5, 4}, 3, 1},
                           Variant{{3, 2, 9, 5}, 5, 2}, Variant{{1, 1, 1, 1}, 1, 1}, Variant{{2, 1, 7, 7}, 7, 1}}) {
    SCOPED_TRACE(StrCat("x=", ir::ShapeString(v.x), " kernel=", v.kernel, " stride=", v.stride));
    CheckMaxPool(this->x(), RandomCase(ir::OpKind::kMaxPool2d, {v.x}, PoolAttrs(v.kernel, v.stride)));
  }
}

TYPED_TEST(GpuConvTest, MaxPool2dTies) {
  // Inputs of only three values: most windows hold several maxima, and overlapping windows pick
  // the same element. Forward must take the first maximum in row-major window order and
  // backward route every window's gradient to it.
  for (int64_t stride : {1, 2}) {
    OpCase c = RandomCase(ir::OpKind::kMaxPool2d, {{2, 3, 7, 7}}, PoolAttrs(3, stride));
    for (float& v : c.inputs[0].data) v = std::round(v);
    CheckMaxPool(this->x(), c);
    for (float& v : c.inputs[0].data) v = 0.5f;  // all equal
    CheckMaxPool(this->x(), c);
  }
}

// −inf padding of at most half the window: windows clipped to the image, which (all-negative
// inputs) a zero padding would get wrong, and ties.
TYPED_TEST(GpuConvTest, MaxPool2dPadding) {
  struct Variant {
    ir::Shape x;
    int64_t kernel, stride, padding;
  };
  for (const Variant& v :
       {Variant{{2, 3, 7, 7}, 3, 2, 1}, Variant{{2, 3, 8, 8}, 3, 2, 1}, Variant{{2, 3, 7, 7}, 3, 1, 1},
        Variant{{2, 3, 7, 6}, 2, 2, 1}, Variant{{1, 2, 9, 5}, 5, 2, 2}, Variant{{1, 2, 6, 9}, 4, 3, 2},
        Variant{{1, 1, 1, 1}, 3, 1, 1}, Variant{{1, 1, 1, 1}, 2, 1, 1}, Variant{{2, 1, 2, 3}, 5, 1, 2}}) {
    SCOPED_TRACE(
        StrCat("x=", ir::ShapeString(v.x), " kernel=", v.kernel, " stride=", v.stride, " padding=", v.padding));
    OpCase c = RandomCase(ir::OpKind::kMaxPool2d, {v.x}, PoolAttrs(v.kernel, v.stride, v.padding));
    CheckMaxPool(this->x(), c);
    for (float& v : c.inputs[0].data) v -= 2.0f;  // all negative
    CheckMaxPool(this->x(), c);
    for (float& v : c.inputs[0].data) v = std::round(v);  // ties
    CheckMaxPool(this->x(), c);
  }
}

// ceil_mode adds a last window that runs past the input (clipped), and padding may exceed half
// the window (p < k): windows of only a few input elements.
TYPED_TEST(GpuConvTest, MaxPool2dCeilModeAndWidePadding) {
  struct Variant {
    ir::Shape x;
    int64_t kernel, stride, padding;
    bool ceil_mode;
  };
  for (const Variant& v :
       {Variant{{2, 3, 7, 7}, 2, 2, 0, true}, Variant{{2, 3, 8, 6}, 3, 2, 1, true},
        Variant{{1, 2, 9, 5}, 3, 3, 0, true}, Variant{{2, 2, 6, 7}, 3, 2, 2, false},
        Variant{{2, 2, 6, 7}, 3, 2, 2, true}, Variant{{1, 1, 5, 5}, 4, 3, 3, true},
        Variant{{1, 1, 2, 3}, 3, 2, 2, true}, Variant{{1, 2, 5, 6}, 2, 2, 1, true}}) {
    SCOPED_TRACE(StrCat("x=", ir::ShapeString(v.x), " kernel=", v.kernel, " stride=", v.stride,
                        " padding=", v.padding, " ceil_mode=", v.ceil_mode));
    ir::Attrs a = PoolAttrs(v.kernel, v.stride, v.padding);
    a.ceil_mode = v.ceil_mode;
    OpCase c = RandomCase(ir::OpKind::kMaxPool2d, {v.x}, a);
    CheckMaxPool(this->x(), c);
    for (float& v : c.inputs[0].data) v -= 2.0f;  // all negative
    CheckMaxPool(this->x(), c);
    for (float& v : c.inputs[0].data) v = std::round(v);  // ties
    CheckMaxPool(this->x(), c);
  }
}

// Average pooling with zero padding, stride != kernel, ceil_mode (a clipped last window) and
// both divisors (count_include_pad on: the window within the padded input; off: within the input).
TYPED_TEST(GpuConvTest, AvgPool2d) {
  struct Variant {
    ir::Shape x;
    int64_t kernel, stride, padding;
    bool ceil_mode;
  };
  for (const Variant& v :
       {Variant{{2, 3, 7, 7}, 2, 2, 0, false}, Variant{{2, 3, 7, 7}, 3, 1, 1, false},
        Variant{{2, 3, 7, 7}, 3, 2, 1, false}, Variant{{2, 3, 7, 7}, 3, 2, 1, true},
        Variant{{2, 3, 8, 6}, 2, 2, 0, true}, Variant{{2, 3, 7, 7}, 2, 3, 0, false},
        Variant{{1, 2, 9, 5}, 3, 3, 0, true}, Variant{{1, 2, 9, 5}, 5, 2, 2, true},
        Variant{{2, 2, 6, 7}, 3, 2, 2, true}, Variant{{1, 1, 5, 5}, 4, 3, 3, true},
        Variant{{1, 1, 1, 1}, 3, 1, 1, false}, Variant{{1, 1, 1, 1}, 1, 1, 0, false},
        Variant{{2, 1, 7, 7}, 7, 1, 0, false}, Variant{{1, 2, 5, 6}, 2, 2, 1, true},
        Variant{{2, 3, 5, 5}, 3, 3, 0, true}}) {
    for (bool include_pad : {false, true}) {
      SCOPED_TRACE(StrCat("x=", ir::ShapeString(v.x), " kernel=", v.kernel, " stride=", v.stride,
                          " padding=", v.padding, " ceil_mode=", v.ceil_mode, " count_include_pad=", include_pad));
      ir::Attrs a = PoolAttrs(v.kernel, v.stride, v.padding);
      a.ceil_mode = v.ceil_mode;
      a.count_include_pad = include_pad;
      ExpectMatchesCpu(this->x(), RandomCase(ir::OpKind::kAvgPool2d, {v.x}, a), &gpu::AvgPool2dForward<TypeParam>,
                       &gpu::AvgPool2dBackward<TypeParam>);
    }
  }
}

template <class X>
void CheckAdaptive(X& x, const ir::Shape& in, int64_t out_h, int64_t out_w) {
  SCOPED_TRACE(StrCat("x=", ir::ShapeString(in), " to ", out_h, "x", out_w));
  ir::Attrs a;
  a.out_h = out_h;
  a.out_w = out_w;
  ExpectMatchesCpu(x, RandomCase(ir::OpKind::kAdaptiveAvgPool2d, {in}, a), &gpu::AdaptiveAvgPool2dForward<X>,
                   &gpu::AdaptiveAvgPool2dBackward<X>);
}

TYPED_TEST(GpuConvTest, AdaptiveAvgPool2d) {
  CheckAdaptive(this->x(), {2, 3, 7, 7}, 1, 1);
  CheckAdaptive(this->x(), {2, 3, 7, 7}, 2, 3);  // overlapping bins
  CheckAdaptive(this->x(), {2, 3, 7, 7}, 7, 7);  // the identity
  CheckAdaptive(this->x(), {2, 3, 7, 7}, 3, 5);
  CheckAdaptive(this->x(), {1, 2, 5, 3}, 4, 2);
  CheckAdaptive(this->x(), {2, 1, 8, 6}, 4, 3);  // bins that tile exactly
  CheckAdaptive(this->x(), {1, 1, 1, 1}, 1, 1);
  CheckAdaptive(this->x(), {2, 3, 9, 1}, 2, 1);
}

}  // namespace
}  // namespace hetsynth::runtime::testing
