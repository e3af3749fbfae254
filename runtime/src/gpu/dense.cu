// Launch instantiations of the dense functors (dense_kernels.h).
#include "gpu/dense_kernels.h"
#include "gpu/launch.cuh"

namespace hetsynth::runtime::gpu {
HS_GPU_FOR(BiasAddRows)
HS_GPU_FOR(BiasGradCols)
HS_GPU_FOR(PackHeads)
HS_GPU_FOR(UnpackHeadsAdd)
HS_GPU_FOR(AttnSoftmaxRows)
HS_GPU_FOR(AttnSoftmaxBwdRows)
}  // namespace hetsynth::runtime::gpu
