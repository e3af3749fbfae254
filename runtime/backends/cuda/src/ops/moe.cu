// Launch instantiations of the mixture-of-experts functors (moe_kernels.h).
#include "exec/launch.cuh"
#include "ops/moe_kernels.h"

namespace hetsynth::runtime::gpu {
HS_GPU_FOR(MoeRouteCheck)
HS_GPU_FOR(MoeSlotCheck)
HS_GPU_FOR(MoeFirstBadRoute)
HS_GPU_FOR(TopKGateRow)
HS_GPU_FOR(TopKGateSlots)
HS_GPU_FOR(TopKGateBwd)
HS_GPU_FOR(MoeDispatchFwd)
HS_GPU_FOR(MoeDispatchBwd)
HS_GPU_FOR(MoeCombineFwd)
HS_GPU_FOR(MoeCombineBwdY)
HS_GPU_FOR(MoeCombineBwdRoute)
}  // namespace hetsynth::runtime::gpu
