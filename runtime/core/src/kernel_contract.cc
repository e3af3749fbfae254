// Which inputs carry a gradient (kernel_contract.h).
#include "hetsynth/runtime/kernel_contract.h"

namespace hetsynth::runtime {

bool Differentiable(ir::OpKind kind, size_t input) {
  using K = ir::OpKind;
  switch (kind) {
    case K::kEmbedding: return input == 1;        // ids are integers
    case K::kCrossEntropy: return input == 0;     // labels are integers
    case K::kMoEDispatch: return input == 0;      // the route only selects slots
    case K::kMoECombine: return true;             // route carries the gate weights
    default: return true;
  }
}

}  // namespace hetsynth::runtime
