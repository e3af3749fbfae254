// Launch instantiations of the elementwise functors (elementwise_kernels.h).
#include "exec/launch.cuh"
#include "ops/elementwise_kernels.h"

namespace hetsynth::runtime::gpu {
HS_GPU_FOR(ReluFwd)
HS_GPU_FOR(ReluBwd)
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
}  // namespace hetsynth::runtime::gpu
