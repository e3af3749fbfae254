// Inference placements on CPU thread ranks (infer.h).
#include "hetsynth/runtime/infer.h"

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include "hetsynth/base/status.h"
#include "hetsynth/runtime/kernels.h"

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
  Tensor out(g.value(node.output).shape);
  SavedState saved;
  KernelContext ctx;
  Forward(node, ctx, in, out, saved);
  return out;
}

// A rank's inbox: (request, value) → tensor, filled by other ranks.
struct Mailbox {
  std::mutex mu;
  std::condition_variable cv;
  std::map<std::pair<int, ir::ValueId>, Tensor> box;

  void Put(int request, ir::ValueId v, Tensor t) {
    {
      std::lock_guard<std::mutex> l(mu);
      box[{request, v}] = std::move(t);
    }
    cv.notify_all();
  }
  Tensor Take(int request, ir::ValueId v) {
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return box.count({request, v}) > 0; });
    Tensor t = std::move(box[{request, v}]);
    box.erase({request, v});
    return t;
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
                                      const std::map<std::string, Tensor>& params, const std::vector<Batch>& requests) {
  const int nreq = static_cast<int>(requests.size());
  if (nreq < 1) return absl::InvalidArgumentError("infer: at least one request");
  // Ranks: the devices hosting a group, in rank order.
  std::vector<int> devices;
  for (const auto& gr : p.groups) devices.push_back(gr.device);
  std::sort(devices.begin(), devices.end());
  devices.erase(std::unique(devices.begin(), devices.end()), devices.end());
  const int nr = static_cast<int>(devices.size());
  std::vector<int> rank_of_op(g.nodes().size(), -1);
  std::vector<std::vector<int>> groups_of(nr);
  for (size_t k = 0; k < p.groups.size(); ++k) {
    const int r = static_cast<int>(std::lower_bound(devices.begin(), devices.end(), p.groups[k].device) - devices.begin());
    groups_of[r].push_back(static_cast<int>(k));
    for (ir::NodeId n : p.groups[k].ops) rank_of_op[n] = r;
  }
  // Where each activation goes: the other ranks that read it.
  const ir::NodeId loss = LossNode(g);
  std::vector<std::set<int>> readers(g.values().size());
  for (ir::NodeId n = 0; n < static_cast<ir::NodeId>(g.nodes().size()); ++n) {
    if (n == loss) continue;
    for (ir::ValueId v : g.node(n).inputs) {
      const ir::NodeId q = g.value(v).producer;
      if (q >= 0 && rank_of_op[q] != rank_of_op[n]) readers[v].insert(rank_of_op[n]);
    }
  }
  const std::vector<ir::ValueId> outputs = OutputValues(g);
  std::vector<Mailbox> inbox(nr);
  InferRun run;
  run.ranks = nr;
  run.outputs.assign(nreq, {});
  run.finish_s.assign(nreq, 0);
  std::mutex out_mu;
  std::vector<int> outputs_left(nreq, static_cast<int>(outputs.size()));
  std::vector<int64_t> messages(nr, 0);
  std::vector<double> bytes(nr, 0);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int r = 0; r < nr; ++r) {
    threads.emplace_back([&, r] {
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
          for (ir::NodeId n : p.groups[k].ops) {
            const ir::ValueId v = g.node(n).output;
            local[v] = RunNode(g, n, get);
            for (int dest : readers[v]) {  // send
              inbox[dest].Put(q, v, local[v]);
              ++messages[r];
              bytes[r] += 4.0 * static_cast<double>(local[v].numel());
            }
          }
        }
        for (ir::ValueId v : outputs) {
          if (rank_of_op[g.value(v).producer] != r) continue;
          std::lock_guard<std::mutex> l(out_mu);
          run.outputs[q][g.value(v).name] = local.at(v);
          if (--outputs_left[q] == 0) {
            run.finish_s[q] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          }
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  run.total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (int r = 0; r < nr; ++r) run.messages += messages[r], run.bytes += bytes[r];
  return run;
}

}  // namespace hetsynth::runtime
