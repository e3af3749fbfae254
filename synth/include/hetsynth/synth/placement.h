// Inference placement (docs/inference.md): the forward graph of a model coarsened into fused
// groups, each group placed whole on one device so that one batch finishes as early as possible.
//
// The problem (PlacementProblem) is a DAG of coarse nodes, each with its seconds on every device
// and the bytes it occupies there (weights + activations), edges carrying bytes between coarse
// nodes, device memory capacities and the α–β links between devices (a device's node link inside
// a node, the network between nodes, as costmodel::Cluster::GroupLink prices a pair). A device
// runs one coarse node at a time; a transfer starts when its producer finishes and delays the
// consumer by latency + bytes / bandwidth; links are not shared (no contention is modelled).
//
// Methods: the baselines (fastest single device that fits, pipeline by count, pipeline by speed,
// HEFT list scheduling) and the exact MILP solved with Z3 (SolvePlacementMilp): binaries
// x[i][d], start times, per-edge transfer delays, disjunctions for unordered pairs sharing a
// device, memory rows; the makespan bound is bisected between a proven lower bound and the best
// schedule found (seeded by the best baseline), so a time limit still leaves a reported gap.
//
//   absl::StatusOr<PlacementProblem> p = BuildPlacementProblem(graph, cluster);
//   std::vector<PlacementMethodResult> base = PlacementBaselines(*p);
//   absl::StatusOr<MilpResult> m = SolvePlacementMilp(*p, &best_baseline_schedule, MilpOptions{});
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "hetsynth/costmodel/cluster.h"
#include "hetsynth/ir/graph.h"

namespace hetsynth::synth {

using CoarseId = int;  // index into PlacementProblem::nodes (a topological order)

struct CoarseNode {
  std::string name;                // the first op's name
  std::vector<ir::NodeId> ops;     // graph nodes fused into it, in graph order (empty in hand-made problems)
  double flops = 0;                // forward FLOPs of its ops
  std::vector<double> seconds;     // per device: forward time of its ops on that device
  double weight_bytes = 0;         // parameters its ops read (fp32)
  double activation_bytes = 0;     // its output and input activations (fp32): see docs/inference.md
  double memory_bytes() const { return weight_bytes + activation_bytes; }
};

struct CoarseEdge {
  CoarseId from = 0, to = 0;  // from < to
  double bytes = 0;           // activations from → to (one message)
};

struct PlacementProblem {
  std::vector<CoarseNode> nodes;  // topological order
  std::vector<CoarseEdge> edges;  // unique (from, to) pairs
  std::vector<std::string> device_names;
  std::vector<double> device_flops;     // FLOP/s, orders devices for the speed baseline
  std::vector<double> capacity_bytes;   // per device; memory of the coarse nodes placed there must fit
  std::vector<int> device_node;         // the cluster node of each device
  std::vector<costmodel::Link> node_link;  // per cluster node: its intra-node link
  costmodel::Link inter_node;

  int num_devices() const { return static_cast<int>(device_names.size()); }
  // Seconds to move `bytes` from device a to device b: 0 on one device.
  double Transfer(int a, int b, double bytes) const;
};

struct PlacementOptions {
  // Coarse nodes at most: when the fusion rule leaves more, adjacent groups on pure chains are
  // merged (smallest combined forward time first) until this many remain; >= 1.
  int max_coarse_nodes = 100;
  // When not empty: these groups of forward ops are the coarse nodes (a placement file's, to
  // re-price it), instead of the fusion rule; every forward op in exactly one, in an order where
  // no group reads a later one.
  std::vector<std::vector<ir::NodeId>> groups;
};

// The forward graph: every node but the loss node (the one producing Graph::loss()).
std::vector<ir::NodeId> ForwardNodes(const ir::Graph& g);

// Coarsens the forward graph (docs/inference.md, "Coarsening") and prices it on the cluster:
// each op's forward time on a device is its forward FLOPs over the device's FLOP/s, or for a
// memory-bound op (costmodel::MemoryBound on this cluster, as training prices it) the bytes it
// reads and writes over the device's memory bandwidth.
absl::StatusOr<PlacementProblem> BuildPlacementProblem(const ir::Graph& g, const costmodel::Cluster& c,
                                                       const PlacementOptions& o = {});

// A placement with its schedule.
struct Schedule {
  std::vector<int> device;                  // per coarse node
  std::vector<CoarseId> order;              // the order the nodes were scheduled in (topological)
  std::vector<double> start, finish;        // seconds, per coarse node
  double latency = 0;                       // max finish
};

// As-soon-as-possible schedule of a placement, nodes taken in `order` (a topological order;
// empty = 0..n-1), each device running its nodes in that order.
Schedule Evaluate(const PlacementProblem& p, const std::vector<int>& device, std::vector<CoarseId> order = {});
// Memory per device of a placement (bytes).
std::vector<double> DeviceMemory(const PlacementProblem& p, const std::vector<int>& device);
// OK, or ResourceExhausted naming the first device over its capacity.
absl::Status CheckMemory(const PlacementProblem& p, const std::vector<int>& device);

struct PlacementMethodResult {
  std::string method;      // "single", "even", "speed", "heft", "milp"
  absl::Status status;     // not OK: the method found no placement that fits (the reason)
  Schedule schedule;
  double solve_seconds = 0;
};

// The four baselines, in that order (docs/inference.md, "Baselines").
std::vector<PlacementMethodResult> PlacementBaselines(const PlacementProblem& p);

struct MilpOptions {
  double time_limit_s = 60;     // wall clock for the whole solve; finite, > 0
  double gap_tolerance = 1e-4;  // stop when (upper - lower) / upper <= this; in [0, 1)
};

struct MilpResult {
  Schedule schedule;          // the best placement found (the seed when nothing better was)
  double lower_bound = 0;     // proven: no placement finishes earlier (seconds)
  double gap = 0;             // (latency - lower_bound) / latency
  bool optimal = false;       // gap <= gap_tolerance
  bool timed_out = false;     // the time limit stopped the bisection
  double solve_seconds = 0;
  int solver_calls = 0;
  int variables = 0;          // Boolean placement/order variables in the model
  int devices_modelled = 0;   // after dropping interchangeable devices beyond the node count
};

// Minimizes the latency of one batch exactly (up to gap_tolerance and the time limit). `seed`,
// when given and memory-feasible, is the starting upper bound and the answer if nothing better
// is found. No placement fits → ResourceExhausted (one line: the largest coarse node and the
// largest device capacity); Z3 errors → Internal.
absl::StatusOr<MilpResult> SolvePlacementMilp(const PlacementProblem& p, const Schedule* seed, const MilpOptions& o);

}  // namespace hetsynth::synth
