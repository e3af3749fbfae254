// The CPU backend's side of the algorithms in core — the plan executor (executor_impl.h) and the
// single-device trainer (trainer_impl.h): host tensors, the CPU kernels (kernels.h), collectives
// on host tensors (collectives.h) and the host optimizer; and the entry points behind the CPU's
// Backend object (backend.cc).
//
//   HS_ASSIGN_OR_RETURN(auto impl, executor_detail::MakeExecutor(cpu::CpuBackend{}, graph, plan, comm, options));
#pragma once

#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "hetsynth/runtime/backend.h"
#include "hetsynth/runtime/collectives.h"
#include "hetsynth/runtime/kernels.h"
#include "hetsynth/runtime/optimizer.h"
#include "hetsynth/runtime/shard.h"

namespace hetsynth::runtime::cpu {

struct CpuBackend {
  using Tensor = runtime::Tensor;
  using Saved = SavedState;
  using Optimizer = runtime::Optimizer;
  static constexpr bool kHostTensors = true;

  Tensor Make(ir::Shape shape) { return Tensor(std::move(shape)); }
  // A forward output for `node`: zero-filled, or uninitialized for the kernels that write all of
  // it (ForwardWritesWholeOutput). Optional for backends: callers fall back to Make.
  Tensor MakeOutput(const ir::Node& node, ir::Shape shape) {
    return ForwardWritesWholeOutput(node.kind) ? Tensor::Uninitialized(std::move(shape)) : Tensor(std::move(shape));
  }
  Tensor FromHost(Tensor t) { return t; }
  Tensor Clone(const Tensor& t) { return t; }
  Tensor ToHost(Tensor t) { return t; }  // by value: a tensor handed over moves, without a copy
  float ReadScalar(const Tensor& t) { return t.data.at(0); }
  Tensor Slice(const Tensor& x, int dim, int64_t start, int64_t len) { return runtime::Slice(x, dim, start, len); }
  void Place(const Tensor& part, int dim, int64_t start, Tensor& full) { runtime::Place(part, dim, start, full); }
  void AddInto(Tensor& acc, const Tensor& x) {
    for (int64_t i = 0; i < acc.numel(); ++i) acc.data[static_cast<size_t>(i)] += x.data[static_cast<size_t>(i)];
  }
  absl::StatusOr<Tensor> AllGatherAlong(Communicator& comm, const Tensor& piece, const ir::Shape& full, int d,
                                        const std::vector<int64_t>& lengths, CommImpl impl) {
    return runtime::AllGatherAlong(comm, piece, full, d, lengths, impl);
  }
  absl::StatusOr<Tensor> ReduceScatterAlong(Communicator& comm, const Tensor& whole, int d,
                                            const std::vector<int64_t>& lengths, CommImpl impl) {
    return runtime::ReduceScatterAlong(comm, whole, d, lengths, impl);
  }
  // The same packing around any flat collective (the hierarchical ones of mesh_collectives.h).
  absl::StatusOr<Tensor> GatherVia(const Tensor& piece, const ir::Shape& full, int d, const std::vector<int64_t>& lengths,
                                   const FlatGather& gather) {
    return runtime::GatherAlong(piece, full, d, lengths, gather);
  }
  absl::StatusOr<Tensor> ScatterVia(const Tensor& whole, int d, const std::vector<int64_t>& lengths, int rank,
                                    const FlatScatter& scatter) {
    return runtime::ScatterAlong(whole, d, lengths, rank, scatter);
  }
  absl::StatusOr<Tensor> AllToAllAlong(Communicator& comm, const Tensor& piece, const ir::Shape& full, int d,
                                       const std::vector<int64_t>& ld, int d2, const std::vector<int64_t>& ld2) {
    return runtime::AllToAllAlong(comm, piece, full, d, ld, d2, ld2);
  }
  void Forward(const ir::Node& node, const KernelContext& ctx, std::span<const Tensor* const> in, Tensor& out,
               Saved& saved) {
    runtime::Forward(node, ctx, in, out, saved);
  }
  void Backward(const ir::Node& node, const KernelContext& ctx, std::span<const Tensor* const> in, const Tensor& out,
                const Tensor& dout, const Saved& saved, std::span<Tensor* const> din) {
    runtime::Backward(node, ctx, in, out, dout, saved, din);
  }
  void RenumberRoutes(Tensor& r, int64_t offset, int64_t local) {
    for (int64_t e = 0; e + 2 < r.numel(); e += 3) {
      const float expert = r.data[static_cast<size_t>(e)] - static_cast<float>(offset);
      if (expert >= 0 && expert < static_cast<float>(local)) {
        r.data[static_cast<size_t>(e)] = expert;
      } else {
        r.data[static_cast<size_t>(e)] = 0;
        r.data[static_cast<size_t>(e) + 1] = -1;
      }
    }
  }
  Optimizer MakeOptimizer(const OptimizerConfig& cfg) { return Optimizer(cfg); }
  void OptimizerStep(Optimizer& o, std::map<std::string, Tensor>& params, const std::map<std::string, Tensor>& grads) {
    o.Step(params, grads);
  }
  std::map<std::string, Tensor> StateTensors(const Optimizer& o) { return o.StateTensors(); }
  void RestoreState(Optimizer& o, std::map<std::string, Tensor> state, int64_t steps) {
    o.RestoreState(std::move(state), steps);
  }
  void Wait() {}
  absl::Status status() const { return absl::OkStatus(); }
};

// This rank's plan executor on CPU ranks: core's algorithm over CpuBackend (executor.cc).
absl::StatusOr<std::unique_ptr<Executor>> MakeCpuExecutor(const ir::Graph& graph, const instr::Plan& plan,
                                                          Communicator& comm, ExecutorOptions options);

// Backend::Profile on this host (profile.cc).
absl::StatusOr<DeviceProfile> ProfileCpu(const ir::Graph& graph, const DataSource& data, const ProfileOptions& options);

}  // namespace hetsynth::runtime::cpu
