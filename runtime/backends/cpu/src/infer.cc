// Inference placements on CPU thread ranks (infer.h).
#include "hetsynth/runtime/infer.h"

#include <algorithm>
#include <barrier>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include "hetsynth/base/status.h"
#include "hetsynth/runtime/kernels.h"
#include "hetsynth/runtime/pacer.h"
#include "cpu_backend.h"

namespace hetsynth::runtime {
namespace {

using infer_detail::Layout;
using infer_detail::OutputValues;

// Runs one node on the CPU; `get` returns an input tensor (parameter, graph input or activation).
template <typename Get>
Tensor RunNode(const ir::Graph& g, ir::NodeId n, Get&& get) {
  cpu::CpuBackend b;
  return infer_detail::RunNode(b, g, n, get);
}

// A rank's inbox: (request, value) → tensor and the moment it may be delivered, filled by
// other ranks.
struct Mailbox {
  using Clock = std::chrono::steady_clock;
  std::mutex mu;
  std::condition_variable cv;
  std::map<std::pair<int, ir::ValueId>, std::pair<Tensor, Clock::time_point>> box;

  void Put(int request, ir::ValueId v, Tensor t, double delay_s) {
    const auto at = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(delay_s));
    {
      std::lock_guard<std::mutex> l(mu);
      box[{request, v}] = {std::move(t), at};
    }
    cv.notify_all();
  }
  Tensor Take(int request, ir::ValueId v) {
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return box.count({request, v}) > 0; });
    const auto at = box[{request, v}].second;
    while (Clock::now() < at) cv.wait_until(l, at);
    Tensor t = std::move(box[{request, v}].first);
    box.erase({request, v});
    return t;
  }
};

}  // namespace

absl::StatusOr<Outputs> ForwardOneDevice(const ir::Graph& g, const std::map<std::string, Tensor>& params, const Batch& batch) {
  HS_ASSIGN_OR_RETURN(std::vector<Outputs> out, infer_detail::ForwardOneDevice(cpu::CpuBackend{}, g, params, {batch}, false));
  return std::move(out.front());
}

absl::StatusOr<InferRun> RunPlacement(const ir::Graph& g, const instr::InferencePlacement& p,
                                      const std::map<std::string, Tensor>& params, const std::vector<Batch>& requests,
                                      const InferOptions& o) {
  const int nreq = static_cast<int>(requests.size());
  HS_RETURN_IF_ERROR(infer_detail::CheckRequests(p, nreq, o));
  const double fastest = p.device_flops.empty() ? 1 : *std::max_element(p.device_flops.begin(), p.device_flops.end());
  const Layout layout = Layout::Of(g, p);
  const std::vector<int>& devices = layout.devices;
  const int nr = static_cast<int>(devices.size());
  const std::vector<int>& rank_of_op = layout.rank_of_op;
  const std::vector<std::vector<int>>& groups_of = layout.groups_of;
  const std::vector<std::map<int, double>>& readers = layout.readers;
  const std::vector<std::vector<ir::ValueId>>& received = layout.received;
  const std::vector<ir::ValueId> outputs = OutputValues(g);
  std::vector<Mailbox> inbox(nr);
  InferRun run;
  run.ranks = nr;
  run.outputs.assign(nreq, {});
  run.finish_s.assign(nreq, 0);
  std::mutex out_mu;
  std::vector<int> outputs_left(nreq, static_cast<int>(outputs.size()));
  std::vector<int64_t> messages(nr, 0);
  std::vector<double> bytes(nr, 0), late(nr, 0);
  run.dilation = o.dilation;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::chrono::steady_clock::time_point> start(nreq, t0);
  int next_request = 1;
  std::barrier sync(nr, [&]() noexcept {
    if (next_request < nreq) start[next_request++] = std::chrono::steady_clock::now();
  });
  std::vector<std::thread> threads;
  for (int r = 0; r < nr; ++r) {
    threads.emplace_back([&, r] {
      Pacer pacer(o.dilation, p.device_flops.empty() ? 1.0 : fastest / p.device_flops[devices[r]]);
      pacer.StartStep();
      for (int q = 0; q < nreq; ++q) {
        std::map<ir::ValueId, Tensor> local;  // this rank's activations of request q
        auto get = [&](ir::ValueId v) -> const Tensor& {
          const ir::Value& val = g.value(v);
          if (val.kind == ir::ValueKind::kParameter) return params.at(val.name);
          if (val.kind == ir::ValueKind::kInput) return requests[q].at(val.name);
          auto it = local.find(v);
          if (it == local.end()) it = local.emplace(v, inbox[r].Take(q, v)).first;  // receive
          return it->second;
        };
        for (int k : groups_of[r]) {
          for (ir::ValueId v : received[k]) {  // receive first: waiting is not the group's work
            if (!local.count(v)) local.emplace(v, inbox[r].Take(q, v));
          }
          pacer.Work([&] {
            // Emulated: the executor's turn (cpu_time.h). Held only while computing: the group's
            // inputs from other ranks were received before.
            std::unique_lock<std::mutex> turn;
            if (pacer.on()) turn = std::unique_lock<std::mutex>(ComputeTurn());
            for (ir::NodeId n : p.groups[k].ops) local[g.node(n).output] = RunNode(g, n, get);
          });
          late[r] += pacer.Settle();
          for (ir::NodeId n : p.groups[k].ops) {
            const ir::ValueId v = g.node(n).output;
            for (const auto& [dest, transfer_s] : readers[v]) {  // send
              inbox[dest].Put(q, v, local[v], o.dilation > 0 ? o.dilation * transfer_s : 0.0);
              ++messages[r];
              bytes[r] += 4.0 * static_cast<double>(local[v].numel());
            }
          }
        }
        for (ir::ValueId v : outputs) {
          if (rank_of_op[g.value(v).producer] != r) continue;
          std::lock_guard<std::mutex> l(out_mu);
          if (o.keep_outputs) run.outputs[q][g.value(v).name] = local.at(v);
          if (--outputs_left[q] == 0) {
            run.finish_s[q] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start[q]).count();
          }
        }
        if (o.sequential) {
          late[r] += pacer.Settle();
          sync.arrive_and_wait();
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  run.total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (int r = 0; r < nr; ++r) run.messages += messages[r], run.bytes += bytes[r], run.late_s = std::max(run.late_s, late[r]);
  return run;
}

absl::StatusOr<InferRun> RunPlacementOnRanks(Communicator& comm, const ir::Graph& g, const instr::InferencePlacement& p,
                                             const std::map<std::string, Tensor>& params,
                                             const std::vector<Batch>& requests, const InferOptions& o) {
  return infer_detail::RunOnRanks(cpu::CpuBackend{}, comm, g, p, params, requests, o);
}

}  // namespace hetsynth::runtime
