// Launch instantiations of the communicators' functors (comm_kernels.h).
#include "gpu/comm_kernels.h"
#include "gpu/launch.cuh"

namespace hetsynth::runtime::gpu {
HS_GPU_FOR(RankSum)
}  // namespace hetsynth::runtime::gpu
