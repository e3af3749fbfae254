// Launch instantiations of the elementwise functors (elementwise_kernels.h).
#include "gpu/elementwise_kernels.h"
#include "gpu/launch.cuh"

namespace hetsynth::runtime::gpu {
HS_GPU_FOR(ReluFwd)
HS_GPU_FOR(ReluBwd)
}  // namespace hetsynth::runtime::gpu
