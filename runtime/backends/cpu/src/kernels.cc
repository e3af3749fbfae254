#include "hetsynth/runtime/kernels.h"

#include "hetsynth/ir/status.h"
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

Pair Lookup(ir::OpKind kind) {
  using K = ir::OpKind;
#define HS_PAIR(Op) Pair{&cpu::Op##Forward, &cpu::Op##Backward}
  switch (kind) {
    case K::kLinear: return HS_PAIR(Linear);
    case K::kMatMul: return HS_PAIR(MatMul);
    case K::kAdd: return HS_PAIR(Add);
    case K::kMul: return HS_PAIR(Mul);
    case K::kRelu: return HS_PAIR(Relu);
    case K::kGelu: return HS_PAIR(Gelu);
    case K::kDropout: return HS_PAIR(Dropout);
    case K::kLayerNorm: return HS_PAIR(LayerNorm);
    case K::kSoftmax: return HS_PAIR(Softmax);
    case K::kLogSoftmax: return HS_PAIR(LogSoftmax);
    case K::kAttention: return HS_PAIR(Attention);
    case K::kCausalMask: return HS_PAIR(CausalMask);
    case K::kEmbedding: return HS_PAIR(Embedding);
    case K::kConv2d: return HS_PAIR(Conv2d);
    case K::kMaxPool2d: return HS_PAIR(MaxPool2d);
    case K::kAdaptiveAvgPool2d: return HS_PAIR(AdaptiveAvgPool2d);
    case K::kFlatten: return HS_PAIR(Flatten);
    case K::kReshape: return HS_PAIR(Reshape);
    case K::kTranspose: return HS_PAIR(Transpose);
    case K::kConcat: return HS_PAIR(Concat);
    case K::kSlice: return HS_PAIR(Slice);
    case K::kExpand: return HS_PAIR(Expand);
    case K::kCrossEntropy: return HS_PAIR(CrossEntropy);
    case K::kTopKGate: return HS_PAIR(TopKGate);
    case K::kMoEDispatch: return HS_PAIR(MoEDispatch);
    case K::kMoECombine: return HS_PAIR(MoECombine);
  }
#undef HS_PAIR
  return {};
}
}  // namespace

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
