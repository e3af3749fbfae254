// Launch instantiations of the dense functors (dense_kernels.h).
#include "exec/launch.cuh"
#include "ops/dense_kernels.h"

namespace hetsynth::runtime::gpu {
HS_GPU_FOR(BiasAddRows)
HS_GPU_FOR(BiasGradCols)
HS_GPU_FOR(PackHeads)
HS_GPU_FOR(UnpackHeadsAdd)
HS_GPU_FOR(AttnSoftmaxRows)
HS_GPU_FOR(AttnSoftmaxBwdRows)
}  // namespace hetsynth::runtime::gpu
