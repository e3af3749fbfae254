// GPU elementwise operators (contracts in ops.h; semantics exactly those of cpu/elementwise.cc).
#pragma once

#include "gpu/elementwise_kernels.h"
#include "gpu/ops.h"

namespace hetsynth::runtime::gpu {

template <class X>
void ReluForward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, typename X::Tensor& out,
                 Saved<X>& saved) {
  x.For(out.numel(), ReluFwd{in[0]->ptr(), out.ptr()});
}

template <class X>
void ReluBackward(X& x, const ir::Node& node, const KernelContext& ctx, TIn<X> in, const typename X::Tensor& out,
                  const typename X::Tensor& dout, const Saved<X>& saved, TDIn<X> din) {
  if (!din[0]) return;
  x.For(dout.numel(), ReluBwd{in[0]->ptr(), dout.ptr(), din[0]->ptr()});
}

}  // namespace hetsynth::runtime::gpu
