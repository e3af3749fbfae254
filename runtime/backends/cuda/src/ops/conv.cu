// Launch instantiations of the convolution and pooling functors (conv_kernels.h).
#include "exec/launch.cuh"
#include "ops/conv_kernels.h"

namespace hetsynth::runtime::gpu {
HS_GPU_FOR(ConvIm2Col)
HS_GPU_FOR(ConvCol2Im)
HS_GPU_FOR(ConvMatToImages)
HS_GPU_FOR(ConvAddBias)
HS_GPU_FOR(ConvImagesToMat)
HS_GPU_FOR(ConvBiasGrad)
HS_GPU_FOR(MaxPoolFwd)
HS_GPU_FOR(MaxPoolBwd)
HS_GPU_FOR(AdaptiveAvgPoolFwd)
HS_GPU_FOR(AdaptiveAvgPoolBwd)
HS_GPU_FOR(AvgPoolFwd)
HS_GPU_FOR(AvgPoolBwd)
}  // namespace hetsynth::runtime::gpu
