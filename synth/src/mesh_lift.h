// The dp-nodes search mode's building blocks (topology spec §3): a program over one node's
// devices, lifted to the whole two-level mesh with the outer level fixed to the batch rule over
// the nodes (activations split on dim 0 across nodes, parameters whole on every node).
//
//   costmodel::Cluster node = NodeCluster(cluster, j, num_nodes);   // node j alone
//   instr::Program inner = ...search on `node`...;
//   absl::StatusOr<instr::Program> whole = LiftDpNodes(graph, inner, mesh_nodes, num_devices);
#pragma once

#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "hetsynth/costmodel/cluster.h"
#include "hetsynth/instr/program.h"
#include "hetsynth/ir/graph.h"

namespace hetsynth::synth {

// Node j of a cluster as a cluster of its own (its devices and intra link). Its devices' FLOP/s,
// memory bandwidth and the intra link's bandwidth are multiplied by `scale`: a search on the
// whole-batch graph then prices each op as the node's 1/scale of the batch would cost (the
// batch over the nodes), which is what the inner level of dp-nodes runs.
costmodel::Cluster NodeCluster(const costmodel::Cluster& c, int node, double scale);

// The values split over the nodes by the outer batch rule: the model inputs and everything
// computed from them.
std::vector<bool> BatchedValues(const ir::Graph& g);

// Lifts `inner` (world forms over a node's devices) to the mesh `nodes` of `num_devices`
// ranks: every batched value gets the outer placement Gather(0) (the loss: Reduce), every
// other value Identity; compute instructions get the node's batch rule as their outer rule,
// the inner program's collectives run at level devices. Ratios, groups and buckets are left
// to the caller. An error names the first node without a batch rule over the nodes or whose
// pair of rules is not a mesh rule.
absl::StatusOr<instr::Program> LiftDpNodes(const ir::Graph& g, const instr::Program& inner,
                                           const std::vector<std::vector<int>>& nodes, int num_devices);

}  // namespace hetsynth::synth
