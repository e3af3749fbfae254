// Launch instantiations of the elementwise functors (elementwise_kernels.h, and the shared
// unary math's runtime/ops/unary_math.h for every op in its list).
#include "exec/launch.cuh"
#include "hetsynth/runtime/ops/unary_math.h"
#include "ops/elementwise_kernels.h"

namespace hetsynth::runtime::gpu {
#define HS_GPU_FOR_UNARY(Op) \
  HS_GPU_FOR(ops::UnaryFwd<ir::OpKind::k##Op>) HS_GPU_FOR(ops::UnaryBwd<ir::OpKind::k##Op>)
HETSYNTH_UNARY_MATH_OPS(HS_GPU_FOR_UNARY)
#undef HS_GPU_FOR_UNARY
HS_GPU_FOR(BroadcastAddFwd)
HS_GPU_FOR(BroadcastMulFwd)
HS_GPU_FOR(BroadcastCopy)
HS_GPU_FOR(AccumulateFn)
HS_GPU_FOR(MulBwdA)
HS_GPU_FOR(ReduceBroadcast)
HS_GPU_FOR(GeluFwd)
HS_GPU_FOR(GeluBwd)
HS_GPU_FOR(DropoutFn)
HS_GPU_FOR(CausalMaskFwd)
HS_GPU_FOR(CausalMaskBwd)
HS_GPU_FOR(ClipFwd)
HS_GPU_FOR(ClipBwd)
}  // namespace hetsynth::runtime::gpu
