// Running an inference placement (instr/inference_placement.h, docs/inference.md) as one rank of
// a communicator, over any backend: the algorithm shared by the CPU backend (MPI processes,
// infer.h) and the CUDA backend (one GPU per process), the way executor_impl.h shares the plan
// executor.
//
// Each rank runs its groups' forward kernels in the file's order on its device; an activation
// another rank reads travels as a point-to-point message of the communicator (host memory:
// a device backend downloads it before sending and uploads it after receiving); the outputs meet
// on rank 0. A backend B provides (as for executor_impl.h):
//   using Tensor = ...; using Saved = ...;
//   Tensor Make(shape) (zeros); optionally MakeOutput(node, shape);
//   Tensor FromHost(runtime::Tensor);  runtime::Tensor ToHost(const Tensor&);
//   void Forward(node, ctx, std::span<const Tensor* const> in, Tensor& out, Saved& saved);
//   void Wait();  absl::Status status();
//
//   HS_ASSIGN_OR_RETURN(InferRun run, infer_detail::RunOnRanks(cpu::CpuBackend{}, comm, g, p, params, requests, o));
#pragma once

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "hetsynth/base/status.h"
#include "hetsynth/instr/inference_placement.h"
#include "hetsynth/ir/graph.h"
#include "hetsynth/runtime/comm.h"
#include "hetsynth/runtime/data.h"
#include "hetsynth/runtime/kernel_contract.h"
#include "hetsynth/runtime/pacer.h"
#include "hetsynth/runtime/tensor.h"

namespace hetsynth::runtime {

// The forward graph's outputs (values of forward nodes no forward node reads), by name.
using Outputs = std::map<std::string, Tensor>;

struct InferRun {
  std::vector<Outputs> outputs;       // per request (empty without InferOptions::keep_outputs)
  std::vector<double> finish_s;       // per request: seconds from its start (sequential) or the run's start until its outputs are complete
  double total_s = 0;                 // all requests
  int ranks = 0;                      // threads used (devices hosting a group)
  int64_t messages = 0;               // point-to-point transfers
  double bytes = 0;                   // their payload
  double late_s = 0;                  // modelled seconds the paced groups ran late (host too slow for K)
  double dilation = 0;                // K used (0: not paced)
};

// Emulation of the placement's cluster on this host (docs/inference.md, "Running a placement"),
// with time dilation K as in docs/emulated-cluster.md: a rank of a device with FLOP/s f, in a
// file whose fastest device has f_max (this host, when the cluster came from `profile --like`),
// charges its kernels their thread CPU time × f_max / f and sleeps after each group until the
// group took K × that; a message is delivered K × the edge's predicted transfer seconds after it
// was sent. dilation 0: no pacing, no delays (host speed).
struct InferOptions {
  double dilation = 0;
  // One request at a time: every rank waits for the others between requests (latency), instead
  // of taking the next request as soon as its part of the last is done (throughput).
  bool sequential = false;
  // Keep every request's outputs (InferRun::outputs), to check them. Off for timing: outputs kept
  // past their request take memory from the host cache, so every request would map (and fault in)
  // fresh pages for the buffers they took — here 1 MB of logits, faulted in by the next
  // request's first attention, which tripled its time.
  bool keep_outputs = true;
};

namespace infer_detail {

// The graph's loss node (-1 when none): never run by inference.
ir::NodeId LossNode(const ir::Graph& g);
// Values of forward nodes that no forward node reads.
std::vector<ir::ValueId> OutputValues(const ir::Graph& g);

// Who runs what: the ranks (the devices hosting a group, in rank order), each op's rank, each
// rank's groups, and the activations that cross ranks.
struct Layout {
  std::vector<int> devices;                          // rank → device index
  std::vector<int> rank_of_op;                       // op → rank (-1: the loss)
  std::vector<std::vector<int>> groups_of;           // rank → its groups, in file order
  // Where each activation goes: the other ranks that read it, each with the predicted transfer
  // seconds of the group edge it travels on (the largest, when it feeds several groups there).
  std::vector<std::map<int, double>> readers;        // value → {rank → transfer seconds}
  std::vector<std::vector<ir::ValueId>> received;    // group → its inputs from other ranks

  static Layout Of(const ir::Graph& g, const instr::InferencePlacement& p);
};

// At least one request, and the device speeds when paced: what every run of a placement needs
// (RunPlacement's thread ranks and CheckRun).
absl::Status CheckRequests(const instr::InferencePlacement& p, int requests, const InferOptions& o);

// What RunOnRanks checks before any message: CheckRequests, the communicator's size and the tags'
// range. The same on every rank.
absl::Status CheckRun(const Communicator& comm, const ir::Graph& g, const instr::InferencePlacement& p,
                      const Layout& layout, int requests, const InferOptions& o);

// Runs node n on backend b; `get` returns each input (parameter, graph input or activation).
template <class B, class Get>
typename B::Tensor RunNode(B& b, const ir::Graph& g, ir::NodeId n, Get&& get) {
  using T = typename B::Tensor;
  const ir::Node& node = g.node(n);
  std::vector<const T*> in;
  for (ir::ValueId v : node.inputs) in.push_back(&get(v));
  T out = MakeForwardOutput(b, node, g.value(node.output).shape);
  typename B::Saved saved;
  const KernelContext ctx;
  b.Forward(node, ctx, std::span<const T* const>(in), out, saved);
  return out;
}

// Every forward node in graph order on backend b's device, for each batch; the outputs come
// back to the host. Parameters are uploaded once, before the clock starts; with `warm_up` one
// untimed pass on the first batch comes first. *seconds (when given): wall seconds per batch,
// the device waited for (the outputs' download does).
template <class B>
absl::StatusOr<std::vector<Outputs>> ForwardOneDevice(B b, const ir::Graph& g, const std::map<std::string, Tensor>& params,
                                                      const std::vector<Batch>& batches, bool warm_up,
                                                      double* seconds = nullptr) {
  using T = typename B::Tensor;
  std::map<ir::ValueId, T> weights;
  if constexpr (!B::kHostTensors) {
    for (ir::ValueId v : g.parameters()) weights.emplace(v, b.FromHost(params.at(g.value(v).name)));
  }
  const ir::NodeId loss = LossNode(g);
  const std::vector<ir::ValueId> outputs = OutputValues(g);
  auto forward = [&](const Batch& batch) {
    std::map<ir::ValueId, T> held;  // this batch's inputs (device backends) and activations
    auto get = [&](ir::ValueId v) -> const T& {
      const ir::Value& val = g.value(v);
      if constexpr (B::kHostTensors) {
        if (val.kind == ir::ValueKind::kParameter) return params.at(val.name);
        if (val.kind == ir::ValueKind::kInput) return batch.at(val.name);
      } else {
        if (val.kind == ir::ValueKind::kParameter) return weights.at(v);
        if (val.kind == ir::ValueKind::kInput && !held.count(v)) return held.emplace(v, b.FromHost(batch.at(val.name))).first->second;
      }
      return held.at(v);
    };
    for (ir::NodeId n = 0; n < static_cast<ir::NodeId>(g.nodes().size()); ++n) {
      if (n != loss) held[g.node(n).output] = RunNode(b, g, n, get);
    }
    Outputs out;
    for (ir::ValueId v : outputs) out[g.value(v).name] = b.ToHost(held.at(v));
    return out;
  };
  if (warm_up && !batches.empty()) (void)forward(batches.front());
  HS_RETURN_IF_ERROR(b.status());
  std::vector<Outputs> out;
  const auto t0 = std::chrono::steady_clock::now();
  for (const Batch& batch : batches) out.push_back(forward(batch));
  if (seconds != nullptr && !batches.empty()) {
    *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / static_cast<double>(batches.size());
  }
  HS_RETURN_IF_ERROR(b.status());
  return out;
}

// This process's rank of a placement run (see RunPlacementOnRanks in infer.h for the contract).
// Parameters go to the device before the first barrier (as a deployed model's are), each
// request's inputs when a group first reads them (they arrive from the host with the request).
template <class B>
absl::StatusOr<InferRun> RunOnRanks(B b, Communicator& comm, const ir::Graph& g, const instr::InferencePlacement& p,
                                    const std::map<std::string, Tensor>& params, const std::vector<Batch>& requests,
                                    const InferOptions& o) {
  using T = typename B::Tensor;
  const int nreq = static_cast<int>(requests.size());
  const Layout layout = Layout::Of(g, p);
  HS_RETURN_IF_ERROR(CheckRun(comm, g, p, layout, nreq, o));
  const int nr = static_cast<int>(layout.devices.size());
  const int r = comm.rank();
  const double fastest = p.device_flops.empty() ? 1 : *std::max_element(p.device_flops.begin(), p.device_flops.end());
  Pacer pacer(o.dilation, p.device_flops.empty() ? 1.0 : fastest / p.device_flops[layout.devices[r]]);
  const std::vector<ir::ValueId> outputs = OutputValues(g);
  // This rank's parameters, on its device (host backends read them, and the inputs, in place).
  std::map<ir::ValueId, T> weights;
  for (int k : B::kHostTensors ? std::vector<int>{} : layout.groups_of[r]) {
    for (ir::NodeId n : p.groups[k].ops) {
      for (ir::ValueId v : g.node(n).inputs) {
        const ir::Value& val = g.value(v);
        if (val.kind == ir::ValueKind::kParameter && !weights.count(v)) weights.emplace(v, b.FromHost(params.at(val.name)));
      }
    }
  }
  b.Wait();
  HS_RETURN_IF_ERROR(b.status());
  InferRun run;
  run.ranks = nr;
  run.dilation = o.dilation;
  run.outputs.assign(nreq, {});
  run.finish_s.assign(nreq, 0);
  using Clock = std::chrono::steady_clock;
  HS_RETURN_IF_ERROR(comm.Barrier());
  const auto t0 = Clock::now();
  auto start = t0;
  pacer.StartStep();
  auto send = [&](const T& t, int dest, ir::ValueId v) -> absl::Status {
    if constexpr (B::kHostTensors) {
      return comm.SendAsync(std::vector<float>(t.data.begin(), t.data.end()), dest, static_cast<int>(v));
    } else {
      const Tensor host = b.ToHost(t);
      return comm.SendAsync(std::vector<float>(host.data.begin(), host.data.end()), dest, static_cast<int>(v));
    }
  };
  for (int q = 0; q < nreq; ++q) {
    if (o.sequential) {
      HS_RETURN_IF_ERROR(comm.Barrier());
      start = Clock::now();
    }
    std::map<ir::ValueId, T> local;  // this rank's activations and inputs of request q
    auto get = [&](ir::ValueId v) -> const T& {
      const ir::Value& val = g.value(v);
      if constexpr (B::kHostTensors) {
        if (val.kind == ir::ValueKind::kParameter) return params.at(val.name);
        if (val.kind == ir::ValueKind::kInput) return requests[q].at(val.name);
      }
      if (val.kind == ir::ValueKind::kParameter) return weights.at(v);
      auto it = local.find(v);
      if (it == local.end() && val.kind == ir::ValueKind::kInput) {
        it = local.emplace(v, b.FromHost(requests[q].at(val.name))).first;
      }
      return it != local.end() ? it->second : local.at(v);  // at(): throws for a value never received
    };
    auto receive = [&](ir::ValueId v, int from) -> absl::StatusOr<Tensor> {
      Tensor t = Tensor::Uninitialized(g.value(v).shape);
      HS_RETURN_IF_ERROR(comm.Recv(t.ptr(), t.numel(), from, static_cast<int>(v)));
      run.bytes += 4.0 * static_cast<double>(t.numel());
      ++run.messages;
      return t;
    };
    for (int k : layout.groups_of[r]) {
      for (ir::ValueId v : layout.received[k]) {  // receive first: waiting is not the group's work
        if (local.count(v)) continue;
        HS_ASSIGN_OR_RETURN(Tensor t, receive(v, layout.rank_of_op[g.value(v).producer]));
        local.emplace(v, b.FromHost(std::move(t)));
      }
      pacer.Work([&] {
        for (ir::NodeId n : p.groups[k].ops) local[g.node(n).output] = RunNode(b, g, n, get);
      });
      run.late_s += pacer.Settle();
      for (ir::NodeId n : p.groups[k].ops) {  // send
        const ir::ValueId v = g.node(n).output;
        for (const auto& [dest, transfer_s] : layout.readers[v]) HS_RETURN_IF_ERROR(send(local.at(v), dest, v));
      }
    }
    // The outputs meet on rank 0.
    for (ir::ValueId v : outputs) {
      const int owner = layout.rank_of_op[g.value(v).producer];
      if (owner == r && r != 0) {
        HS_RETURN_IF_ERROR(send(local.at(v), 0, v));
      } else if (r == 0) {
        if (owner != 0) {
          HS_ASSIGN_OR_RETURN(Tensor host, receive(v, owner));
          if (o.keep_outputs) run.outputs[q][g.value(v).name] = std::move(host);
        } else if (o.keep_outputs) {
          run.outputs[q][g.value(v).name] = b.ToHost(local.at(v));
        }
      }
    }
    b.Wait();  // the request is done when its outputs are (a device backend's queue included)
    HS_RETURN_IF_ERROR(b.status());
    if (r == 0) run.finish_s[q] = std::chrono::duration<double>(Clock::now() - start).count();
  }
  HS_RETURN_IF_ERROR(comm.FlushSends());
  // Transfers are counted where they are received (rank 0's outputs included) and summed; the
  // lateness is the latest rank's. This all-gather is also the closing barrier.
  const float mine[3] = {static_cast<float>(run.messages), static_cast<float>(run.bytes), static_cast<float>(run.late_s)};
  std::vector<float> all(3 * static_cast<size_t>(nr));
  HS_RETURN_IF_ERROR(comm.AllGatherV(mine, all.data(), std::vector<int64_t>(static_cast<size_t>(nr), 3), CommImpl::kGrouped));
  run.total_s = std::chrono::duration<double>(Clock::now() - t0).count();
  run.messages = 0, run.bytes = 0, run.late_s = 0;
  for (int k = 0; k < nr; ++k) {
    run.messages += static_cast<int64_t>(all[3 * k]);
    run.bytes += all[3 * k + 1];
    run.late_s = std::max(run.late_s, static_cast<double>(all[3 * k + 2]));
  }
  return run;
}

}  // namespace infer_detail
}  // namespace hetsynth::runtime
