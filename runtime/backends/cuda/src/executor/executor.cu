// Launch instantiations of the executor's functors (executor_kernels.h).
#include "exec/launch.cuh"
#include "executor/executor_kernels.h"

namespace hetsynth::runtime::gpu {
HS_GPU_FOR(SliceCopy)
HS_GPU_FOR(PlaceCopy)
HS_GPU_FOR(RenumberRoutesFn)
}  // namespace hetsynth::runtime::gpu
