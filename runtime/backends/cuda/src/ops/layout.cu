// Launch instantiations of the layout functors (layout_kernels.h).
#include "exec/launch.cuh"
#include "ops/layout_kernels.h"

namespace hetsynth::runtime::gpu {
HS_GPU_FOR(LayoutAddInto)
HS_GPU_FOR(LayoutBlockMove)
HS_GPU_FOR(LayoutGatherWalk)
HS_GPU_FOR(EmbeddingCheckIds)
HS_GPU_FOR(EmbeddingFwd)
HS_GPU_FOR(EmbeddingBwd)
}  // namespace hetsynth::runtime::gpu
