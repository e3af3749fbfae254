// Which inputs carry a gradient (kernel_contract.h): the op table says.
#include "hetsynth/runtime/kernel_contract.h"

#include "hetsynth/ir/op_table.h"

namespace hetsynth::runtime {

bool Differentiable(ir::OpKind kind, size_t input) { return ir::IsDifferentiableInput(kind, input); }

}  // namespace hetsynth::runtime
