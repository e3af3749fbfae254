#include "hetsynth/runtime/kernels.h"

#include "hetsynth/base/status.h"
#include "ops.h"

namespace hetsynth::runtime {

namespace {
using ForwardFn = void (*)(const ir::Node&, const KernelContext&, cpu::In, Tensor&, SavedState&);
using BackwardFn = void (*)(const ir::Node&, const KernelContext&, cpu::In, const Tensor&,
                            const Tensor&, const SavedState&, cpu::DIn);
struct Pair {
  ForwardFn forward;
  BackwardFn backward;
};

// One case per op kind, generated from the op list: an op without its kernel pair in ops.h is a
// compile error naming it ('SigmoidForward' is not a member of ...).
Pair Lookup(ir::OpKind kind) {
  switch (kind) {
#define HS_KERNEL_CASE(Camel, snake) \
  case ir::OpKind::k##Camel:         \
    return Pair{&cpu::Camel##Forward, &cpu::Camel##Backward};
    HETSYNTH_IR_OPS(HS_KERNEL_CASE)
#undef HS_KERNEL_CASE
  }
  return {};
}
}  // namespace

bool ForwardWritesWholeOutput(ir::OpKind kind) {
  switch (kind) {
    case ir::OpKind::kLinear:     // Gemm with beta 0, then the bias added to what it wrote
    case ir::OpKind::kMatMul:     // Gemm with beta 0 over every batch
    case ir::OpKind::kAdd:        // out[i] = a[i] + b[broadcast(i)] for every i
    case ir::OpKind::kGelu:       // out[i] = gelu(x[i])
    case ir::OpKind::kLayerNorm:  // every row normalized into out
      return true;
    default:
      return false;
  }
}

void Forward(const ir::Node& node, const KernelContext& ctx, std::span<const Tensor* const> in,
             Tensor& out, SavedState& saved) {
  Lookup(node.kind).forward(node, ctx, in, out, saved);
}

void Backward(const ir::Node& node, const KernelContext& ctx, std::span<const Tensor* const> in,
              const Tensor& out, const Tensor& dout, const SavedState& saved,
              std::span<Tensor* const> din) {
  Lookup(node.kind).backward(node, ctx, in, out, dout, saved, din);
}

}  // namespace hetsynth::runtime
