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

namespace hetsynth::runtime {
namespace {

ir::NodeId LossNode(const ir::Graph& g) { return g.loss() == ir::kNoValue ? -1 : g.value(g.loss()).producer; }

// Values of forward nodes that no forward node reads.
std::vector<ir::ValueId> OutputValues(const ir::Graph& g) {
  const ir::NodeId loss = LossNode(g);
  std::vector<char> read(g.values().size(), 0);
  for (ir::NodeId n = 0; n < static_cast<ir::NodeId>(g.nodes().size()); ++n) {
    if (n == loss) continue;
    for (ir::ValueId v : g.node(n).inputs) read[v] = 1;
  }
  std::vector<ir::ValueId> out;
  for (ir::NodeId n = 0; n < static_cast<ir::NodeId>(g.nodes().size()); ++n) {
    if (n != loss && !read[g.node(n).output]) out.push_back(g.node(n).output);
  }
  return out;
}

// Runs one node; `get` returns an input tensor (parameter, graph input or activation).
template <typename Get>
Tensor RunNode(const ir::Graph& g, ir::NodeId n, Get&& get) {
  const ir::Node& node = g.node(n);
  std::vector<const Tensor*> in;
  for (ir::ValueId v : node.inputs) in.push_back(&get(v));
  // As the trainer makes them (MakeForwardOutput): no zero fill where the kernel writes it all.
  Tensor out = ForwardWritesWholeOutput(node.kind) ? Tensor::Uninitialized(g.value(node.output).shape)
                                                   : Tensor(g.value(node.output).shape);
  SavedState saved;
  KernelContext ctx;
  Forward(node, ctx, in, out, saved);
  return out;
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

  static Layout Of(const ir::Graph& g, const instr::InferencePlacement& p) {
    Layout l;
    for (const auto& gr : p.groups) l.devices.push_back(gr.device);
    std::sort(l.devices.begin(), l.devices.end());
    l.devices.erase(std::unique(l.devices.begin(), l.devices.end()), l.devices.end());
    l.rank_of_op.assign(g.nodes().size(), -1);
    l.groups_of.resize(l.devices.size());
    std::vector<int> group_of_op(g.nodes().size(), -1);
    for (size_t k = 0; k < p.groups.size(); ++k) {
      const int r =
          static_cast<int>(std::lower_bound(l.devices.begin(), l.devices.end(), p.groups[k].device) - l.devices.begin());
      l.groups_of[r].push_back(static_cast<int>(k));
      for (ir::NodeId n : p.groups[k].ops) l.rank_of_op[n] = r, group_of_op[n] = static_cast<int>(k);
    }
    std::map<std::pair<int, int>, double> edge_s;
    for (const auto& e : p.edges) edge_s[{e.from, e.to}] = e.transfer_s;
    const ir::NodeId loss = LossNode(g);
    l.readers.resize(g.values().size());
    l.received.resize(p.groups.size());
    for (ir::NodeId n = 0; n < static_cast<ir::NodeId>(g.nodes().size()); ++n) {
      if (n == loss) continue;
      for (ir::ValueId v : g.node(n).inputs) {
        const ir::NodeId q = g.value(v).producer;
        if (q < 0 || l.rank_of_op[q] == l.rank_of_op[n]) continue;
        const auto it = edge_s.find({group_of_op[q], group_of_op[n]});
        double& d = l.readers[v][l.rank_of_op[n]];
        d = std::max(d, it == edge_s.end() ? 0.0 : it->second);
        auto& in = l.received[group_of_op[n]];
        if (std::find(in.begin(), in.end(), v) == in.end()) in.push_back(v);
      }
    }
    return l;
  }
};

}  // namespace

absl::StatusOr<Outputs> ForwardOneDevice(const ir::Graph& g, const std::map<std::string, Tensor>& params, const Batch& batch) {
  std::map<ir::ValueId, Tensor> acts;
  auto get = [&](ir::ValueId v) -> const Tensor& {
    const ir::Value& val = g.value(v);
    if (val.kind == ir::ValueKind::kParameter) return params.at(val.name);
    if (val.kind == ir::ValueKind::kInput) return batch.at(val.name);
    return acts.at(v);
  };
  const ir::NodeId loss = LossNode(g);
  for (ir::NodeId n = 0; n < static_cast<ir::NodeId>(g.nodes().size()); ++n) {
    if (n != loss) acts[g.node(n).output] = RunNode(g, n, get);
  }
  Outputs out;
  for (ir::ValueId v : OutputValues(g)) out[g.value(v).name] = acts.at(v);
  return out;
}

absl::StatusOr<InferRun> RunPlacement(const ir::Graph& g, const instr::InferencePlacement& p,
                                      const std::map<std::string, Tensor>& params, const std::vector<Batch>& requests,
                                      const InferOptions& o) {
  const int nreq = static_cast<int>(requests.size());
  if (nreq < 1) return absl::InvalidArgumentError("infer: at least one request");
  if (o.dilation > 0 && p.device_flops.size() != p.devices.size()) {
    return absl::InvalidArgumentError("infer: emulation needs the placement's cluster.device_flops; write it again with 'hetsynth place'");
  }
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
  const int nreq = static_cast<int>(requests.size());
  if (nreq < 1) return absl::InvalidArgumentError("infer: at least one request");
  if (o.dilation > 0 && p.device_flops.size() != p.devices.size()) {
    return absl::InvalidArgumentError("infer: emulation needs the placement's cluster.device_flops; write it again with 'hetsynth place'");
  }
  const Layout layout = Layout::Of(g, p);
  const int nr = static_cast<int>(layout.devices.size());
  if (comm.size() != nr) {
    return absl::InvalidArgumentError(StrCat("infer: the placement uses ", nr, " devices, so it runs on ", nr,
                                             " processes (mpirun -np ", nr, "); this job has ", comm.size()));
  }
  if (static_cast<int64_t>(g.values().size()) >= Communicator::kMaxTag) {
    return absl::InvalidArgumentError(StrCat("infer: model '", g.name(), "' has ", g.values().size(),
                                             " values; point-to-point tags allow ", Communicator::kMaxTag - 1));
  }
  const int r = comm.rank();
  const double fastest = p.device_flops.empty() ? 1 : *std::max_element(p.device_flops.begin(), p.device_flops.end());
  Pacer pacer(o.dilation, p.device_flops.empty() ? 1.0 : fastest / p.device_flops[layout.devices[r]]);
  const std::vector<ir::ValueId> outputs = OutputValues(g);
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
  for (int q = 0; q < nreq; ++q) {
    if (o.sequential) {
      HS_RETURN_IF_ERROR(comm.Barrier());
      start = Clock::now();
    }
    std::map<ir::ValueId, Tensor> local;  // this rank's activations of request q
    auto get = [&](ir::ValueId v) -> const Tensor& {
      const ir::Value& val = g.value(v);
      if (val.kind == ir::ValueKind::kParameter) return params.at(val.name);
      if (val.kind == ir::ValueKind::kInput) return requests[q].at(val.name);
      return local.at(v);
    };
    auto receive = [&](ir::ValueId v, int from) -> absl::Status {
      Tensor t = Tensor::Uninitialized(g.value(v).shape);
      HS_RETURN_IF_ERROR(comm.Recv(t.ptr(), t.numel(), from, static_cast<int>(v)));
      run.bytes += 4.0 * static_cast<double>(t.numel());
      ++run.messages;
      local.emplace(v, std::move(t));
      return absl::OkStatus();
    };
    for (int k : layout.groups_of[r]) {
      for (ir::ValueId v : layout.received[k]) {  // receive first: waiting is not the group's work
        if (!local.count(v)) HS_RETURN_IF_ERROR(receive(v, layout.rank_of_op[g.value(v).producer]));
      }
      pacer.Work([&] {
        for (ir::NodeId n : p.groups[k].ops) local[g.node(n).output] = RunNode(g, n, get);
      });
      run.late_s += pacer.Settle();
      for (ir::NodeId n : p.groups[k].ops) {  // send
        const ir::ValueId v = g.node(n).output;
        for (const auto& [dest, transfer_s] : layout.readers[v]) {
          const Tensor& t = local.at(v);
          HS_RETURN_IF_ERROR(comm.SendAsync(std::vector<float>(t.data.begin(), t.data.end()), dest, static_cast<int>(v)));
        }
      }
    }
    // The outputs meet on rank 0.
    for (ir::ValueId v : outputs) {
      const int owner = layout.rank_of_op[g.value(v).producer];
      if (owner == r && r != 0) {
        const Tensor& t = local.at(v);
        HS_RETURN_IF_ERROR(comm.SendAsync(std::vector<float>(t.data.begin(), t.data.end()), 0, static_cast<int>(v)));
      } else if (r == 0) {
        if (owner != 0) HS_RETURN_IF_ERROR(receive(v, owner));
        if (o.keep_outputs) run.outputs[q][g.value(v).name] = local.at(v);
      }
    }
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

}  // namespace hetsynth::runtime
