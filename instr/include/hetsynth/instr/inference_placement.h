// InferencePlacement files (docs/inference.md, "InferencePlacement file"): which device runs each fused group of a
// model's forward graph, written by `hetsynth place` and read back by `hetsynth place --check`
// (and by whatever runs a placement). Like plan files they name the model (to rebuild its graph)
// and the cluster (name, fingerprint, device names in rank order); groups name their ops, so a
// file is checked against the rebuilt graph: every forward op (every node but the one producing
// the loss) exactly once, each group's device a valid rank.
//
//   absl::StatusOr<InferencePlacement> h = InferencePlacementHeaderFromJson(text, "p.json");   // model, cluster
//   absl::StatusOr<InferencePlacement> p = InferencePlacementFromJson(graph, text, "p.json");  // + groups, checked
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "hetsynth/ir/graph.h"

namespace hetsynth::instr {

struct InferencePlacementGroup {
  std::string name;               // the first op's name
  std::vector<ir::NodeId> ops;    // graph nodes, ascending
  int device = 0;                 // rank (index into InferencePlacement::devices)
  double start_s = 0, finish_s = 0;  // predicted, seconds from the batch's start
};

// One method computed in the same run (the chosen one included).
struct InferencePlacementMethod {
  std::string method;        // single | even | speed | heft | milp
  bool feasible = false;     // false: `note` says why no placement fits
  double latency_s = 0;      // predicted latency of one batch (feasible only)
  double solve_s = 0;        // seconds to compute it
  std::string note;
};

struct InferencePlacement {
  std::string model;
  std::map<std::string, double> model_args;
  int64_t batch = 0;
  std::string cluster, cluster_fingerprint;
  std::vector<std::string> devices;  // rank order
  std::vector<double> device_flops;  // FLOP/s per device (empty when the file has none): emulated speeds
  std::string method;                // the method whose groups these are
  double predicted_latency_s = 0;
  std::vector<InferencePlacementGroup> groups;  // a topological order
  struct Edge {
    int from = 0, to = 0;  // group indices
    double bytes = 0;
    double transfer_s = 0;  // predicted seconds of the message between the two groups' devices (0 on one device)
  };
  std::vector<Edge> edges;
  std::vector<InferencePlacementMethod> methods;
  // The MILP's proof: lower bound, gap = (latency - lower) / latency, solve time.
  double lower_bound_s = 0, gap = 0, solve_s = 0;
  bool optimal = false;
  int solver_calls = 0;  // Z3 checks it took (0: the lower bound alone met the best heuristic)
};

// The methods `hetsynth place` computes, in the order it runs them (milp last): what a file's
// `method` and `methods[k].method` may name.
const std::vector<std::string>& PlacementMethodNames();

std::string InferencePlacementToJson(const ir::Graph& g, const InferencePlacement& p);
// Model and cluster fields only (to build the graph before reading the groups).
absl::StatusOr<InferencePlacement> InferencePlacementHeaderFromJson(const std::string& text, const std::string& source);
absl::StatusOr<InferencePlacement> InferencePlacementFromJson(const ir::Graph& g, const std::string& text, const std::string& source);

}  // namespace hetsynth::instr
