// Launch instantiations of the normalization functors (norm_kernels.h).
#include "exec/launch.cuh"
#include "ops/norm_kernels.h"

namespace hetsynth::runtime::gpu {
HS_GPU_FOR(LayerNormStats)
HS_GPU_FOR(LayerNormOut)
HS_GPU_FOR(LayerNormBwdStats)
HS_GPU_FOR(LayerNormBwdX)
HS_GPU_FOR(LayerNormBwdParams)
HS_GPU_FOR(SoftmaxStats)
HS_GPU_FOR(SoftmaxOut)
HS_GPU_FOR(RowDotStats)
HS_GPU_FOR(SoftmaxBwd)
HS_GPU_FOR(LogSumExpRows)
HS_GPU_FOR(LogSoftmaxOut)
HS_GPU_FOR(RowSumStats)
HS_GPU_FOR(LogSoftmaxBwd)
HS_GPU_FOR(CrossEntropyRows)
HS_GPU_FOR(CrossEntropyChunkSum)
HS_GPU_FOR(CrossEntropyLoss)
HS_GPU_FOR(CrossEntropyFirstBad)
HS_GPU_FOR(CrossEntropyBwd)
HS_GPU_FOR(BatchChannelPartials)
HS_GPU_FOR(BatchMomentsOut)
HS_GPU_FOR(BatchMomentsBwdScale)
HS_GPU_FOR(BatchMomentsBwdX)
HS_GPU_FOR(BatchNormScaleShift)
HS_GPU_FOR(BatchNormOut)
HS_GPU_FOR(BatchNormBwdChannel)
HS_GPU_FOR(BatchNormGradScale)
HS_GPU_FOR(BatchNormBwdX)
}  // namespace hetsynth::runtime::gpu
