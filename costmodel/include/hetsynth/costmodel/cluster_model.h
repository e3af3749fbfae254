// What the cost model derives from a cluster once: the mesh, the links every collective crosses,
// the per-node NICs, the profiled collective tables, and the price of every collective
// implementation as a function of the shares (docs/topology.md). Built once per synthesis; the
// terms of cost.h are priced against it (TermTime), so nothing that depends only on the cluster
// is recomputed per term.
//
// A collective's price is a sequence of phases run one after another; each phase takes as long
// as its slowest piece, and a piece is latency + bytes · (a linear function of the devices'
// shares), or, for the all-to-all's NIC traffic, bytes · max(S_j(1 − S'_j), S'_j(1 − S_j)) for
// node j's shares S_j before and S'_j after. Every formula of spec §4.2/§4.3 is of this form:
//   flat (padded, grouped, all-to-all, ring): one phase, latency = the slowest link the group
//     crosses × the rounds, pieces = the device-link term (the slowest intra link of a node
//     holding two or more devices) and the NIC term (each node's bytes through its NIC in either
//     direction × β_net); on a single node the NIC term is absent and every price is today's
//     α–β formula (CollectiveCost);
//   hierarchical (two-level mesh): all-reduce = intra reduce-scatter → ring across nodes → intra
//     all-gather; all-gather = intra all-gather of the node piece (grouped) → exchange across
//     nodes → intra all-gather of what arrived; reduce-scatter = its transpose.
// A profiled table for (op, link class) replaces the estimate of that op entirely (TableSeconds).
//
//   const ClusterModel m(cluster);                       // cluster must outlive m
//   double s = m.Seconds(TermKind::kAllReduce, instr::InstrKind::kAllReduce, 4e8, shares, shares);
//   const CollectivePrice& p = m.Price(TermKind::kGatherGrouped);   // what the ratio LP reads
#pragma once

#include <array>
#include <utility>
#include <vector>

#include "hetsynth/costmodel/cluster.h"
#include "hetsynth/costmodel/mesh.h"
#include "hetsynth/instr/program.h"

namespace hetsynth::costmodel {

enum class TermKind : uint8_t {
  kComputeSplit,           // coefficient · share_i / speed_i
  kComputeFull,            // coefficient / speed_i
  kGatherPadded,           // all-gather / reduce-scatter: ring of shards padded to the largest
  kGatherGrouped,          // all-gather / reduce-scatter: grouped point-to-point sends of true sizes
  kGatherHierarchical,     // all-gather / reduce-scatter: inside nodes, across nodes, inside nodes
  kAllToAll,
  kAllReduce,              // ring over all devices
  kAllReduceHierarchical,  // intra reduce-scatter → all-reduce across nodes → intra all-gather
  // Mesh levels (topology spec §4.1, §4.4; priced by MeshSeconds, not by a CollectivePrice):
  kDevicesGatherPadded,    // inside every node at once: padded all-gather / reduce-scatter
  kDevicesGatherGrouped,   // ... grouped
  kDevicesAllReduce,       // ... ring all-reduce
  kDevicesAllToAll,        // ... all-to-all
  kNodesGather,            // across nodes: all-gather (G d, I) → (I, I) / its reduce-scatter
  kNodesAllReduce,         // across nodes: all-reduce (R, I) → (I, I)
  kNodesAllToAll,          // across nodes: node pieces exchanged
  kNodesGradientSync,      // the gradient of a (I, G e) parameter: every device's piece
                           // all-reduced with the same-position devices of the other nodes
  kComputeMesh,            // a mesh rule: coefficient · inner share_i · node share_j / speed_i
  kFree,
};
inline constexpr int kNumTermKinds = static_cast<int>(TermKind::kFree) + 1;

bool IsCollective(TermKind k);

// latency + bytes · (per_byte + Σ coefficient_i · share_i), or the all-to-all NIC exchange.
struct PricePiece {
  double latency = 0;   // seconds
  double per_byte = 0;  // seconds per byte, whatever the shares
  std::vector<std::pair<DeviceId, double>> shares;  // seconds per byte per unit of device i's share
  NodeId exchange_node = -1;  // ≥ 0: bytes · exchange · max(S_j(1 − S'_j), S'_j(1 − S_j)) instead
  double exchange = 0;        // seconds per byte
};

// A phase takes as long as its slowest piece; phases add.
struct CollectivePrice {
  std::vector<std::vector<PricePiece>> phases;
};

// Seconds of a price for `bytes` bytes of the whole tensor under the shares of its split
// (`post`: the all-to-all's shares after; otherwise equal to `shares`), nodes from `mesh`.
double EvaluatePrice(const CollectivePrice& p, double bytes, const std::vector<double>& shares,
                     const std::vector<double>& post, const Mesh& mesh);

// A profiled table's seconds for `bytes` (the whole tensor): piecewise-linear between samples;
// below the first sample the first sample's seconds (latency-bound: a smaller message is not
// cheaper than the smallest one measured); above the last, the last segment extended (with a
// single sample: proportional to bytes, bandwidth-bound).
double TableSeconds(const CollectiveTable& t, double bytes);

// How collectives are priced.
enum class Pricing : uint8_t {
  kTopology,       // by the links crossed and the NICs shared, hierarchical where possible, tables
  kFlatWorldLink,  // the reference system's view (the `hap` baseline): every collective one α–β
                   // over the slowest link of all devices (Cluster::WorldLink), no NIC, no
                   // hierarchy, no tables — CollectiveCost with that link
};

class ClusterModel {
 public:
  explicit ClusterModel(const Cluster& c, Pricing pricing = Pricing::kTopology);
  Pricing pricing() const { return pricing_; }

  const Cluster& cluster() const { return *c_; }
  const Mesh& mesh() const { return mesh_; }
  int size() const { return c_->size(); }
  // Hierarchical implementations exist: the mesh is two-level (and pricing by topology).
  bool hierarchical() const { return mesh_.two_level && pricing_ == Pricing::kTopology; }
  // The link that bounds a collective over every device (Cluster::WorldLink, computed once).
  const Link& world_link() const { return world_; }
  double total_flops() const { return total_flops_; }
  double total_bandwidth() const { return total_bandwidth_; }

  // The α–β–NIC price of one collective implemented as `kind` over all devices (empty phases
  // for non-collective kinds, for hierarchical kinds on a flat mesh and on one device).
  const CollectivePrice& Price(TermKind kind) const { return prices_[static_cast<size_t>(kind)]; }
  // The profiled table that prices `op` over all devices on this cluster, or nullptr: the
  // inter_node table when the devices span nodes, else the intra_node one.
  const CollectiveTable* Table(instr::InstrKind op) const;
  // Seconds of one `op` (all_gather, reduce_scatter, all_reduce, all_to_all) implemented as
  // `kind`: the table's when there is one, else EvaluatePrice of Price(kind). 0 on one device.
  double Seconds(TermKind kind, instr::InstrKind op, double bytes, const std::vector<double>& shares,
                 const std::vector<double>& post) const;
  // Seconds of a mesh-level collective (the kDevices*/kNodes* kinds) on a two-level mesh:
  // `node_share` per node (the node piece's fraction of the tensor: S_j, or 1), `within` per
  // device (its share of its node's piece along the split, Σ over a node = 1; empty when the
  // op has no inner split), `node_share2` the all-to-all result's node shares.
  double MeshSeconds(TermKind kind, double bytes, const std::vector<double>& node_share,
                     const std::vector<double>& within, const std::vector<double>& node_share2) const;

 private:
  const Cluster* c_;
  Pricing pricing_;
  Mesh mesh_;
  Link world_;
  double total_flops_ = 0, total_bandwidth_ = 0;
  std::array<CollectivePrice, kNumTermKinds> prices_;
  std::array<const CollectiveTable*, 4> tables_{};  // all_gather, reduce_scatter, all_reduce, all_to_all
};

}  // namespace hetsynth::costmodel
