// `hetsynth profile --network`: measure each link class of a cluster — on the emulated cluster
// of this host (docs/emulated-cluster.md), or on a real one when started under mpirun — through
// the executor's own collectives over MPI, and write the α–β fits and collective tables into the
// cluster file (docs/cluster-format.md, "Profiling the network"; docs/emulated-cluster.md).
//
// Run outside mpirun, it brings up the emulated cluster of --cluster (or uses the one named
// --network-name that is up) and runs itself on one rank per device there. Under mpirun (every
// rank): the times are wall clock ÷ K (HETSYNTH_DILATION; 1 on a real cluster), each the median
// over the repeats of the slowest rank's time, for tensors of 4, 16, 64, … floats up to
// --max-bytes cut into shards in proportion to the devices' FLOP/s:
//
//   1. intra-node: on each node with two or more devices in turn (the other ranks wait), grouped
//      all-gather, grouped reduce-scatter and all-reduce among that node's ranks → the node's
//      intra_node link (costmodel::FitLink) and, from the largest node, the intra_node tables;
//   2. inter-node, one flow per NIC: the same among one rank per node → links.inter_node's
//      latency (α); its bandwidth is printed against the configured one but not written (it is
//      what `cluster up` shapes the NICs to);
//   3. inter-node, every rank (several flows share each NIC): the same over the world → the
//      inter_node tables, which the cost model uses for every collective that spans nodes.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>
#include <thread>

#include <fmt/format.h>

#include "commands.h"
#include "emulated_cluster.h"
#include "hetsynth/costmodel/calibrate.h"
#include "hetsynth/costmodel/cluster.h"
#include "hetsynth/instr/program.h"
#include "hetsynth/base/median.h"
#include "hetsynth/base/status.h"
#include "hetsynth/runtime/collectives.h"
#include "hetsynth/runtime/comm.h"
#include "hetsynth/runtime/pacer.h"
#include "network_profile.h"
#include "train.h"

namespace hetsynth::cli {
namespace {

// all_to_all is timed for its table only (the α–β fit takes the other three).
constexpr int kOps = 4, kFitOps = 3;
constexpr const char* kOpNames[kOps] = {"all_gather", "reduce_scatter", "all_reduce", "all_to_all"};
constexpr costmodel::TermKind kOpKinds[kFitOps] = {costmodel::TermKind::kGatherGrouped,
                                                   costmodel::TermKind::kGatherGrouped, costmodel::TermKind::kAllReduce};

// Shard lengths of `total` floats among `devices`, in proportion to their FLOP/s.
std::vector<int64_t> Shares(const costmodel::Cluster& c, const std::vector<int>& devices, int64_t total) {
  std::vector<double> speeds;
  for (int d : devices) speeds.push_back(c.devices[static_cast<size_t>(d)].flops);
  return instr::RoundShares(speeds, total);
}

struct Timed {
  int op = 0;
  std::vector<int64_t> lengths;   // shards along dim 0 (all_to_all: of a side × side matrix, in elements)
  std::vector<int64_t> lengths2;  // all_to_all: the shards along dim 1 it turns them into
  int64_t side = 0;               // all_to_all: the matrix's side
  double seconds = 0;  // modelled: median over the repeats of the slowest rank's wall time ÷ K
};

// What TimeGroup times among `devices`, in order: per size, the four ops (sizes whose shares
// leave a device without a piece are skipped; all_to_all only for sizes that are squares).
std::vector<Timed> Plan(const costmodel::Cluster& c, const std::vector<int>& devices, const std::vector<int64_t>& sizes) {
  std::vector<Timed> out;
  for (int64_t total : sizes) {
    const std::vector<int64_t> lengths = Shares(c, devices, total);
    if (std::count(lengths.begin(), lengths.end(), 0) > 0) continue;
    for (int op = 0; op < kFitOps; ++op) out.push_back({op, lengths, {}, 0, 0});
    const int64_t side = std::llround(std::sqrt(static_cast<double>(total)));
    const std::vector<int64_t> rows = Shares(c, devices, side);
    if (side * side != total || std::count(rows.begin(), rows.end(), 0) > 0) continue;
    std::vector<int64_t> elems;
    for (int64_t r : rows) elems.push_back(r * side);
    out.push_back({3, elems, rows, side, 0});
  }
  return out;
}

// Times the three collectives among the ranks of `sub` (this rank's index there: sub.rank())
// for every size. Every rank of `sub` calls it; the result is the same on all of them.
absl::StatusOr<std::vector<Timed>> TimeGroup(runtime::Communicator& sub, const costmodel::Cluster& c,
                                             const std::vector<int>& devices, const std::vector<int64_t>& sizes,
                                             int repeats, double k) {
  std::vector<Timed> out = Plan(c, devices, sizes);
  const size_t me = static_cast<size_t>(sub.rank());
  for (Timed& x : out) {
    const int64_t total = std::accumulate(x.lengths.begin(), x.lengths.end(), int64_t{0});
    const ir::Shape full = x.op == 3 ? ir::Shape{x.side, x.side} : ir::Shape{total};
    runtime::Tensor piece(x.op == 3 ? ir::Shape{x.lengths2[me], x.side} : ir::Shape{x.lengths[me]}, 1.0f), whole(full, 1.0f);
    std::vector<double> worst;
    for (int rep = 0; rep <= repeats; ++rep) {
      HS_RETURN_IF_ERROR(sub.Barrier());
      const double t0 = runtime::Pacer::Now();
      if (x.op == 0) {
        HS_RETURN_IF_ERROR(runtime::AllGatherAlong(sub, piece, full, 0, x.lengths, runtime::CommImpl::kGrouped).status());
      } else if (x.op == 1) {
        HS_RETURN_IF_ERROR(runtime::ReduceScatterAlong(sub, whole, 0, x.lengths, runtime::CommImpl::kGrouped).status());
      } else if (x.op == 2) {
        runtime::Tensor data = whole;
        HS_RETURN_IF_ERROR(sub.AllReduce(data.ptr(), data.numel()));
      } else {
        HS_RETURN_IF_ERROR(runtime::AllToAllAlong(sub, piece, full, 0, x.lengths2, 1, x.lengths2).status());
      }
      const float mine = static_cast<float>((runtime::Pacer::Now() - t0) / k);
      std::vector<float> all(static_cast<size_t>(sub.size()));
      HS_RETURN_IF_ERROR(sub.AllGatherV(&mine, all.data(), std::vector<int64_t>(all.size(), 1), runtime::CommImpl::kGrouped));
      if (rep > 0) worst.push_back(*std::max_element(all.begin(), all.end()));  // rep 0 warms up
    }
    x.seconds = std::max(1e-9, Median(worst));
  }
  return out;
}

costmodel::LinkFit Fit(const std::vector<Timed>& t) {
  std::vector<costmodel::LinkSample> samples;
  for (const Timed& x : t) {
    if (x.op < kFitOps) samples.push_back(costmodel::MakeLinkSample(kOpKinds[x.op], x.lengths, x.seconds));
  }
  return costmodel::FitLink(samples);
}

std::vector<costmodel::CollectiveTable> Tables(const std::vector<Timed>& t, const std::string& link) {
  std::vector<costmodel::CollectiveTable> out;
  for (int op = 0; op < kOps; ++op) {
    costmodel::CollectiveTable table{kOpNames[op], link, {}};
    for (const Timed& x : t) {
      if (x.op != op) continue;
      const double bytes = 4.0 * static_cast<double>(std::accumulate(x.lengths.begin(), x.lengths.end(), int64_t{0}));
      if (!table.samples.empty() && bytes <= table.samples.back().bytes) continue;
      table.samples.push_back({bytes, x.seconds});
    }
    if (!table.samples.empty()) out.push_back(std::move(table));
  }
  return out;
}

void PrintTimes(const std::string& what, const std::vector<Timed>& t) {
  for (const Timed& x : t) {
    const int64_t total = std::accumulate(x.lengths.begin(), x.lengths.end(), int64_t{0});
    fmt::print(stderr, "profile --network: {:<34} {:<15} {:>9.4g} KiB  {:>10.1f} us\n", what, kOpNames[x.op],
               4.0 * static_cast<double>(total) / 1024, x.seconds * 1e6);
  }
}

// Under mpirun: every rank measures; rank 0 writes the file.
absl::Status MeasureUnderMpi(const NetworkProfileFlags& f) {
  HS_ASSIGN_OR_RETURN(costmodel::Cluster c, costmodel::ReadClusterFile(f.cluster));
  double k = runtime::DilationFromEnv();
  if (k < 0) return absl::InvalidArgumentError(StrCat(runtime::kDilationEnv, ": expected a number >= 1"));
  if (k == 0) k = 1;
  HS_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Communicator> world, runtime::MpiWorld());
  if (world->size() != c.size()) {
    return absl::InvalidArgumentError(StrCat("--cluster '", f.cluster, "' has ", c.size(), " devices but mpirun started ",
                                             world->size(), " ranks; run one rank per device"));
  }
  const int rank = world->rank();
  const bool lead = rank == 0;
  const int my_node = c.devices[static_cast<size_t>(rank)].node;
  std::vector<std::vector<int>> node_devices(c.nodes.size());
  for (int d = 0; d < c.size(); ++d) node_devices[static_cast<size_t>(c.devices[static_cast<size_t>(d)].node)].push_back(d);
  std::vector<int64_t> sizes;
  for (int64_t s = 4; 4 * s <= f.max_bytes; s *= 4) sizes.push_back(s);
  if (lead) {
    fmt::print(stderr, "profile --network: {} ranks on {} nodes, dilation K = {:g} (times are wall clock / K), sizes 16 B to {} B\n",
               c.size(), c.nodes.size(), k, 4 * sizes.back());
  }

  // 1. Intra-node, one node at a time.
  costmodel::Cluster out = c;
  std::vector<Timed> largest_node;
  size_t largest = 0;
  HS_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Communicator> node_comm, world->Split(my_node, rank));
  for (size_t j = 0; j < c.nodes.size(); ++j) {
    HS_RETURN_IF_ERROR(world->Barrier());
    if (node_devices[j].size() < 2) continue;
    std::vector<Timed> t;
    if (static_cast<size_t>(my_node) == j) {
      HS_ASSIGN_OR_RETURN(t, TimeGroup(*node_comm, c, node_devices[j], sizes, f.repeats, k));
    }
    // Rank 0 learns node j's result from node j's first rank (times as floats).
    const int first = node_devices[j][0];
    std::vector<Timed> got = Plan(c, node_devices[j], sizes);
    std::vector<float> buf(got.size(), 0.0f);
    if (rank == first) {
      for (size_t i = 0; i < t.size() && i < buf.size(); ++i) buf[i] = static_cast<float>(t[i].seconds);
    }
    HS_RETURN_IF_ERROR(world->Broadcast(buf.data(), static_cast<int64_t>(buf.size()), first));
    if (!lead) continue;
    for (size_t i = 0; i < got.size(); ++i) got[i].seconds = std::max(1e-9, static_cast<double>(buf[i]));
    PrintTimes(fmt::format("intra-node '{}' ({} ranks)", c.nodes[j].name, node_devices[j].size()), got);
    const costmodel::LinkFit fit = Fit(got);
    fmt::print("intra-node '{}' ({} ranks): latency {:.3g} us, bandwidth {:.4g} MB/s (fit rms relative error {:.0f}%); "
               "configured {:.3g} us, {:.4g} MB/s\n",
               c.nodes[j].name, node_devices[j].size(), fit.alpha * 1e6, 1e-6 / fit.beta, 100 * fit.rms_relative,
               c.nodes[j].intra.latency * 1e6, c.nodes[j].intra.bandwidth / 1e6);
    out.nodes[j].intra = fit.link();
    if (node_devices[j].size() > largest) largest = node_devices[j].size(), largest_node = got;
  }

  // 2. Inter-node, one rank per node: one flow through each NIC.
  HS_RETURN_IF_ERROR(world->Barrier());
  std::vector<int> leaders;
  for (const std::vector<int>& d : node_devices) leaders.push_back(d[0]);
  const bool leader = std::find(leaders.begin(), leaders.end(), rank) != leaders.end();
  HS_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Communicator> lead_comm,
                      world->Split(leader ? 0 : runtime::Communicator::kNoColor, rank));
  std::vector<Timed> single;
  if (c.nodes.size() >= 2 && leader) {
    HS_ASSIGN_OR_RETURN(single, TimeGroup(*lead_comm, c, leaders, sizes, f.repeats, k));
  }
  HS_RETURN_IF_ERROR(world->Barrier());

  // 3. Every rank: several flows share each NIC.
  std::vector<int> all(static_cast<size_t>(c.size()));
  std::iota(all.begin(), all.end(), 0);
  std::vector<Timed> shared;
  if (c.nodes.size() >= 2) {
    HS_ASSIGN_OR_RETURN(shared, TimeGroup(*world, c, all, sizes, f.repeats, k));
  }
  if (!lead) return absl::OkStatus();

  std::vector<costmodel::CollectiveTable> tables;
  if (!largest_node.empty()) {
    out.collectives.clear();
    for (auto& t : Tables(largest_node, "intra_node")) tables.push_back(std::move(t));
  }
  if (c.nodes.size() >= 2) {
    PrintTimes(fmt::format("inter-node, 1 flow per NIC ({} ranks)", leaders.size()), single);
    PrintTimes(fmt::format("inter-node, all {} ranks", c.size()), shared);
    const costmodel::LinkFit one = Fit(single), many = Fit(shared);
    fmt::print("inter-node, one flow per NIC ({} ranks): latency {:.3g} us, bandwidth {:.4g} MB/s = {:.3f} x the "
               "configured {:.4g} MB/s (fit rms relative error {:.0f}%)\n",
               leaders.size(), one.alpha * 1e6, 1e-6 / one.beta, 1 / one.beta / c.inter_node.bandwidth,
               c.inter_node.bandwidth / 1e6, 100 * one.rms_relative);
    fmt::print("inter-node, all {} ranks (NICs shared by several flows): as one flat link, latency {:.3g} us, "
               "bandwidth {:.4g} MB/s (fit rms relative error {:.0f}%): written as inter_node tables\n",
               c.size(), many.alpha * 1e6, 1e-6 / many.beta, 100 * many.rms_relative);
    out.inter_node.latency = one.alpha;
    for (auto& t : Tables(shared, "inter_node")) tables.push_back(std::move(t));
  }
  out.collectives = std::move(tables);
  const std::string text = costmodel::ClusterToJson(out);
  HS_RETURN_IF_ERROR(costmodel::ParseCluster(text, f.out).status());
  HS_RETURN_IF_ERROR(WriteFileAtomically(f.out, text));
  fmt::print("wrote {} (cluster '{}', {} devices, {} collective tables; links.inter_node.bandwidth kept at the "
             "configured {:.4g} MB/s, the rate `cluster up` shapes to)\n",
             f.out, out.name, out.size(), out.collectives.size(), out.inter_node.bandwidth / 1e6);
  return absl::OkStatus();
}

}  // namespace

absl::Status ProfileNetwork(const NetworkProfileFlags& f) {
  if (f.cluster.empty()) return absl::InvalidArgumentError("profile --network needs --cluster FILE");
  if (f.repeats < 1) return absl::InvalidArgumentError(StrCat("--repeats ", f.repeats, "; expected at least 1"));
  if (f.max_bytes < 16) return absl::InvalidArgumentError(StrCat("--max-bytes ", f.max_bytes, "; expected at least 16"));
  if (UnderMpiLauncher()) return MeasureUnderMpi(f);
  if (!runtime::MpiAvailable()) return absl::FailedPreconditionError("profile --network needs a build with MPI");
  HS_ASSIGN_OR_RETURN(costmodel::Cluster c, costmodel::ReadClusterFile(f.cluster));
  if (f.out.empty()) return absl::InvalidArgumentError("-o is required: the cluster file to write");
  HS_RETURN_IF_ERROR(CheckOutputPath("-o", f.out));
  HS_ASSIGN_OR_RETURN(const EmulatedLaunch emu,
                      EmulatedLaunch::Open(c, f.cluster, f.network_name, f.dilation, "p", f.mpirun));
  HS_ASSIGN_OR_RETURN(const int status,
                      emu.Run({emu.program(), "profile", "--network", "--cluster", f.cluster, "-o", f.out, "--repeats",
                               std::to_string(f.repeats), "--max-bytes", std::to_string(f.max_bytes)}));
  if (status != 0) return absl::InternalError(StrCat("the profiling ranks failed (mpirun exit status ", status, ")"));
  return absl::OkStatus();
}

}  // namespace hetsynth::cli
