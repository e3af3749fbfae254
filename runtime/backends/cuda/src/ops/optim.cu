// Launch instantiations of the optimizer functors (optim_kernels.h).
#include "exec/launch.cuh"
#include "ops/optim_kernels.h"

namespace hetsynth::runtime::gpu {
HS_GPU_FOR(Accumulate)
HS_GPU_FOR(SgdStep)
HS_GPU_FOR(SgdMomentumStep)
HS_GPU_FOR(AdamStep)
}  // namespace hetsynth::runtime::gpu
