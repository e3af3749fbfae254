// GPU elementwise operators against the CPU kernels (gpu_op_check.h).
#include "gpu/elementwise.h"
#include "gpu_op_check.h"

namespace hetsynth::runtime::testing {
namespace {

template <class X>
using GpuElementwiseTest = GpuOpTest<X>;
TYPED_TEST_SUITE(GpuElementwiseTest, GpuExecutors);

TYPED_TEST(GpuElementwiseTest, Relu) {
  using X = TypeParam;
  for (const ir::Shape& s : {ir::Shape{5}, ir::Shape{3, 4, 7}, ir::Shape{1}}) {
    ExpectMatchesCpu(this->x(), RandomCase(ir::OpKind::kRelu, {s}), &gpu::ReluForward<X>, &gpu::ReluBackward<X>);
  }
}

}  // namespace
}  // namespace hetsynth::runtime::testing
