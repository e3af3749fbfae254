// The backend-independent parts of running an inference placement (infer_impl.h).
#include <algorithm>

#include "hetsynth/runtime/infer_impl.h"

namespace hetsynth::runtime::infer_detail {

ir::NodeId LossNode(const ir::Graph& g) { return g.loss() == ir::kNoValue ? -1 : g.value(g.loss()).producer; }

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

Layout Layout::Of(const ir::Graph& g, const instr::InferencePlacement& p) {
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

absl::Status CheckRequests(const instr::InferencePlacement& p, int requests, const InferOptions& o) {
  if (requests < 1) return absl::InvalidArgumentError("infer: at least one request");
  if (o.dilation > 0 && p.device_flops.size() != p.devices.size()) {
    return absl::InvalidArgumentError("infer: emulation needs the placement's cluster.device_flops; write it again with 'hetsynth place'");
  }
  return absl::OkStatus();
}

absl::Status CheckRun(const Communicator& comm, const ir::Graph& g, const instr::InferencePlacement& p,
                      const Layout& layout, int requests, const InferOptions& o) {
  HS_RETURN_IF_ERROR(CheckRequests(p, requests, o));
  const int nr = static_cast<int>(layout.devices.size());
  if (comm.size() != nr) {
    return absl::InvalidArgumentError(StrCat("infer: the placement uses ", nr, " devices, so it runs on ", nr,
                                             " processes (mpirun -np ", nr, "); this job has ", comm.size()));
  }
  if (static_cast<int64_t>(g.values().size()) >= Communicator::kMaxTag) {
    return absl::InvalidArgumentError(StrCat("infer: model '", g.name(), "' has ", g.values().size(),
                                             " values; point-to-point tags allow ", Communicator::kMaxTag - 1));
  }
  return absl::OkStatus();
}

}  // namespace hetsynth::runtime::infer_detail
