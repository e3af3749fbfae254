// Launch instantiations of the communicators' functors (comm_kernels.h).
#include "comm/comm_kernels.h"
#include "exec/launch.cuh"

namespace hetsynth::runtime::gpu {
HS_GPU_FOR(RankSum)
}  // namespace hetsynth::runtime::gpu
