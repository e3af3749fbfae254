// Inference placement shared by `hetsynth place`, `hetsynth infer` and `hetsynth bench
// --inference` (docs/inference.md): solving every method on a cluster, the placement file of one
// of them, and measuring a placement on CPU thread ranks against the one-device forward.
//
//   HS_ASSIGN_OR_RETURN(PlacementSolve s, SolvePlacements(spec, graph, cluster, "c.json", 100, 60));
//   instr::InferencePlacement pl = PlacementOf(spec, cluster, s, "milp");
//   HS_ASSIGN_OR_RETURN(InferMeasurement m, MeasureInference(graph, spec, pl, {.requests = 5, .emulate = true}));
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "hetsynth/costmodel/cluster.h"
#include "hetsynth/instr/inference_placement.h"
#include "hetsynth/ir/graph.h"
#include "hetsynth/ir/models.h"
#include "hetsynth/synth/placement.h"

namespace hetsynth::cli {

// The placement methods, in table order.
const std::vector<std::string>& PlacementMethodNames();

// Every method's placement of `graph` on `cluster`: the baselines, then the MILP seeded with the
// best of them (InvalidArgument, naming `cluster_path`, when nothing fits; also when `method`,
// the one the caller wants, is a baseline that found no placement — before the MILP's solve).
struct PlacementSolve {
  synth::PlacementProblem problem;
  std::vector<synth::PlacementMethodResult> results;  // PlacementMethodNames() order, milp last
  synth::MilpResult milp;
  double best_heuristic_s = 0;  // the fastest baseline's latency (0: none feasible)
};
absl::StatusOr<PlacementSolve> SolvePlacements(const ir::ModelSpec& spec, const ir::Graph& graph,
                                               const costmodel::Cluster& cluster, const std::string& cluster_path,
                                               int max_coarse_nodes, double time_limit_s, const std::string& method = "");

// The placement file of `method` (which must be feasible in `s`), with every method's summary.
instr::InferencePlacement PlacementOf(const ir::ModelSpec& spec, const costmodel::Cluster& cluster,
                                      const PlacementSolve& s, const std::string& method);

struct InferRequestOptions {
  int requests = 1;
  uint64_t seed = 0;      // parameters and synthetic inputs
  bool emulate = false;   // pace the ranks to the placement's devices (time dilation)
  double dilation = 0;    // with emulate: K (0: twice what fits this host's cores)
  std::string source;     // the placement's file, for messages
  bool mpi = false;       // one process per rank under mpirun (MpiWorld) instead of thread ranks
  std::string backend = "cpu";  // the ranks' devices: cpu, or cuda (one GPU per rank; no emulate)
  bool progress = false;  // say on stderr how long a long emulated run will take
  double deadline_s = 300;  // MPI and GPU thread ranks: how long a rank waits for another
};

// One placement run on CPU thread ranks (MPI processes under mpirun; GPUs with backend cuda):
// latency (a warm-up request, then each request alone, the median), throughput (all requests
// pipelined) and the check against the one-device forward on the same backend, computed once
// by the reporting process after a warm-up pass (InternalError when the outputs differ by more
// than 1e-5 × max |finite output|, or a NaN stands against a number).
struct InferMeasurement {
  double latency_wall_s = 0;  // wall clock, median
  double latency_s = 0;       // modelled: wall ÷ K when emulated, else the wall clock
  double one_device_s = 0;    // the one-device forward per request, wall clock
  double requests_per_s = 0;  // pipelined, modelled time
  double late_s = 0;          // modelled seconds the paced groups ran late
  double max_diff = 0;        // largest |ranks − one device| over every output (inf: a NaN on one side only)
  double cpu_max_diff = 0;    // GPU ranks: the same against the CPU's forward (reported, not checked)
  double dilation = 0;        // K used (0: not emulated)
  int ranks = 0;
  int64_t messages = 0;
  double bytes = 0;
  bool reporter = true;  // this process has the results (false on MPI ranks other than 0)
};
absl::StatusOr<InferMeasurement> MeasureInference(const ir::Graph& graph, const ir::ModelSpec& spec,
                                                  const instr::InferencePlacement& placement,
                                                  const InferRequestOptions& o);

// `hetsynth bench --inference`: every placement method of `spec` on the cluster file
// `cluster_path`, predicted and (unless `simulate`) measured on emulated CPU thread ranks; writes
// DIR/results.{json,csv,md}, DIR/latency.{png,svg} (with gnuplot) and each method's placement
// file DIR/<method>.placement.json, and prints the table.
struct BenchInferenceOptions {
  ir::ModelSpec spec;
  std::string cluster_path, out;
  int requests = 5;
  uint64_t seed = 0;
  double dilation = 0;  // 0: twice what fits this host's cores, per placement
  double time_limit_s = 60;
  int max_coarse_nodes = 100;
  bool simulate = false;
};
absl::Status RunBenchInference(const BenchInferenceOptions& o);

// A latency in ms, or µs below a millisecond (the small presets run in microseconds).
std::string LatencyText(double s);

}  // namespace hetsynth::cli
