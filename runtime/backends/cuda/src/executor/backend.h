// The plan executor's GPU backend (see executor_impl.h for the interface): tensors of an
// executor X (GpuExec: device memory of one GPU or one green context; HostExec: host memory, for
// testing the same code without a GPU), the GPU operators (dispatch.h), the device optimizer,
// and collectives that hand device pointers to the communicator (NCCL, the in-process device
// communicator — or, for HostExec, the thread communicator), packing strided slices with
// SliceCopy/PlaceCopy (collectives_along.h, shared with the CPU backend).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "comm/gpu_comm.h"
#include "executor/executor_kernels.h"
#include "hetsynth/runtime/collectives_along.h"
#include "hetsynth/runtime/executor_impl.h"
#include "hetsynth/runtime/shard.h"
#include "ops/dispatch.h"
#include "ops/optim.h"

namespace hetsynth::runtime::gpu {

template <class X>
struct GpuBackend {
  using Tensor = typename X::Tensor;
  using Saved = gpu::Saved<X>;
  using Optimizer = DeviceOptimizer<X>;
  static constexpr bool kHostTensors = false;  // batches are copied in, even on HostExec

  X* x;

  Tensor Make(ir::Shape shape) { return x->Make(std::move(shape)); }
  Tensor FromHost(const runtime::Tensor& t) { return x->Upload(t); }
  Tensor Clone(const Tensor& t) { return x->Clone(t); }
  runtime::Tensor ToHost(const Tensor& t) { return x->Download(t); }
  float ReadScalar(const Tensor& t) { return x->Read(t.ptr()); }

  // x[..., start:start+len, ...] along dim, into `dst` (contiguous).
  void SliceInto(const Tensor& src, int dim, int64_t start, int64_t len, float* dst) {
    const Around a = AroundDim(src.shape, dim);
    x->For(a.outer * len * a.inner, SliceCopy{src.ptr(), dst, len, a.len, a.inner, start});
  }
  // The contiguous piece `src` (len rows of dim) into `full` at rows [start, start + len).
  void PlaceFrom(const float* src, int dim, int64_t start, int64_t len, Tensor& full) {
    const Around a = AroundDim(full.shape, dim);
    x->For(a.outer * len * a.inner, PlaceCopy{src, full.ptr(), len, a.len, a.inner, start, 0});
  }

  Tensor Slice(const Tensor& t, int dim, int64_t start, int64_t len) {
    Tensor out = Make(WithDim(t.shape, dim, len));
    SliceInto(t, dim, start, len, out.ptr());
    return out;
  }
  void Place(const Tensor& part, int dim, int64_t start, Tensor& full) {
    PlaceFrom(part.ptr(), dim, start, part.dim(dim), full);
  }
  void AddInto(Tensor& acc, const Tensor& t) { x->For(acc.numel(), Accumulate{acc.ptr(), t.ptr()}); }

  // The contracts of collectives.h, on device pointers: collectives_along.h's one definition,
  // with this backend as the mover (SliceInto / PlaceFrom above).
  absl::StatusOr<Tensor> AllGatherAlong(Communicator& comm, const Tensor& piece, const ir::Shape& full, int d,
                                        const std::vector<int64_t>& lengths, CommImpl impl) {
    return along::AllGatherAlong(*this, comm, piece, full, d, lengths, impl);
  }
  absl::StatusOr<Tensor> ReduceScatterAlong(Communicator& comm, const Tensor& whole, int d,
                                            const std::vector<int64_t>& lengths, CommImpl impl) {
    return along::ReduceScatterAlong(*this, comm, whole, d, lengths, impl);
  }
  absl::StatusOr<Tensor> AllToAllAlong(Communicator& comm, const Tensor& piece, const ir::Shape& full, int d,
                                       const std::vector<int64_t>& ld, int d2, const std::vector<int64_t>& ld2) {
    return along::AllToAllAlong(*this, comm, piece, full, d, ld, d2, ld2);
  }

  void Forward(const ir::Node& node, const KernelContext& ctx, TIn<X> in, Tensor& out, Saved& saved) {
    gpu::Forward<X>(*x, node, ctx, in, out, saved);
  }
  void Backward(const ir::Node& node, const KernelContext& ctx, TIn<X> in, const Tensor& out, const Tensor& dout,
                const Saved& saved, TDIn<X> din) {
    gpu::Backward<X>(*x, node, ctx, in, out, dout, saved, din);
  }
  void RenumberRoutes(Tensor& r, int64_t offset, int64_t local) {
    x->For(r.numel() / 3, RenumberRoutesFn{r.ptr(), static_cast<float>(offset), static_cast<float>(local)});
  }

  Optimizer MakeOptimizer(const OptimizerConfig& cfg) { return Optimizer(cfg); }
  void OptimizerStep(Optimizer& o, std::map<std::string, Tensor>& params, const std::map<std::string, Tensor>& grads) {
    o.Step(*x, params, grads);
  }
  std::map<std::string, runtime::Tensor> StateTensors(const Optimizer& o) { return o.StateTensors(*x); }
  void RestoreState(Optimizer& o, const std::map<std::string, runtime::Tensor>& state, int64_t steps) {
    o.RestoreState(*x, state, steps);
  }
  void Wait() { (void)x->Synchronize(); }
  absl::Status status() const { return x->status(); }

  // The communication stream of overlapped plans (executor_impl.h, DeviceStreamBackend): a second
  // executor on the device, communicators whose work runs on it, the two streams' ordering (a
  // mark on one that the other waits for, on the device), and which executor this backend's
  // calls use (the executor points it at the second one while it issues a stream operation).
  static constexpr bool kDeviceStreams = true;
  using Stream = X;
  absl::StatusOr<std::unique_ptr<X>> ForkStream() { return x->Fork(); }
  absl::StatusOr<std::unique_ptr<Communicator>> SplitOnto(Communicator& c, X& s) {
    if constexpr (X::kOnGpu) {
      return gpu::SplitOnto(c, s);
    } else {
      return X::SplitOnto(c, s);  // host executors for tests (exec_host.h)
    }
  }
  std::shared_ptr<void> Mark() { return x->Mark(); }
  void WaitMark(const std::shared_ptr<void>& mark) { x->WaitMark(mark); }
  X* exec() const { return x; }
  void set_exec(X* e) { x = e; }
};

// One rank's plan executor on executor x (which must outlive it), exchanging through `comm`
// (whose collectives must accept x's tensors' pointers). ExecutorOptions::emulate should be
// false on real devices: times are then wall-clock, waiting for the device after every
// instruction.
template <class X>
absl::StatusOr<std::unique_ptr<Executor>> CreateDeviceExecutor(X& x, const ir::Graph& graph, const instr::Plan& plan,
                                                               Communicator& comm, ExecutorOptions options) {
  HS_ASSIGN_OR_RETURN(auto impl,
                      executor_detail::MakeExecutor(GpuBackend<X>{&x}, graph, plan, comm, options));
  return std::make_unique<Executor>(std::move(impl));
}

}  // namespace hetsynth::runtime::gpu
