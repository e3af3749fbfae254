// Plan synthesis: from a model graph and a cluster, the SPMD program and sharding ratios that
// train fastest under the cost model, within every device's memory.
//
// It alternates two exact steps (DESIGN §3):
//   1. Search: best-first A* over property sets, one operator per step (placements and
//      collectives fused into the step that needs them), each tensor computed once and
//      communicated at most once, dead properties dropped, a best-cost table per state, and the
//      admissible heuristic "remaining compute at these ratios, with no communication". States
//      whose memory exceeds a device's capacity at the current ratios are pruned.
//   2. Ratios: for the program found, Z3 minimizes the step time over the ratios of the device
//      classes (identical devices share a ratio) subject to every class's memory capacity.
// starting from ratios ∝ FLOP/s and stopping when the step time stops improving. Baselines are
// the same search restricted to their strategy, at fixed ratios.
//
//   absl::StatusOr<SynthResult> r = Synthesize(graph, cluster, SynthOptions{});
//   absl::StatusOr<SynthResult> dp = Baseline(graph, cluster, "dp-ev", SynthOptions{});
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "hetsynth/costmodel/cluster.h"
#include "hetsynth/costmodel/cost.h"
#include "hetsynth/instr/program.h"
#include "hetsynth/ir/graph.h"

namespace hetsynth::synth {

struct SynthOptions {
  costmodel::CostOptions cost;  // both factors finite and > 0
  double time_limit_s = 60;     // wall-clock budget for the whole synthesis, seconds; finite, > 0
  int max_rounds = 8;           // search ⇄ ratio rounds; >= 1
  bool memory_limits = true;    // enforce each device's memory capacity
};

// InvalidArgument naming the first bad field, its value and the range expected; OK otherwise.
// Synthesize, SearchProgram and OptimizeRatios call it first.
absl::Status ValidateSynthOptions(const SynthOptions& o);

// What the search may use; the synthesized plan allows everything.
struct Strategy {
  std::string name = "synthesized";
  bool optimize_ratios = true;     // run the ratio LP (false: keep the initial ratios)
  bool even_ratios = false;        // initial ratios even instead of ∝ FLOP/s
  bool only_dim0_splits = false;   // data parallel: Gather only on dim 0
  bool inputs_replicated = false;  // tensor parallel: every device reads whole inputs
  bool allow_replicated_params = true;
  bool allow_sharded_params = true;  // owned slices (tensor parallel)
  bool allow_zero_params = true;     // stored sharded, all-gathered for use (ZeRO-3)
};

// "synthesized", "dp-ev", "dp-cp", "tp-even", "zero-even"; error lists the names.
absl::StatusOr<Strategy> StrategyByName(const std::string& name);
std::vector<std::string> BaselineNames();

struct SynthResult {
  instr::Program program;
  costmodel::Estimate estimate;
  std::string strategy;
  int rounds = 0;
  double seconds = 0;
  int64_t states_expanded = 0;
  std::vector<std::string> log;  // one line per round
};

absl::StatusOr<SynthResult> Synthesize(const ir::Graph& g, const costmodel::Cluster& c,
                                       const Strategy& strategy, const SynthOptions& o);

// The search alone at fixed per-device ratios (exposed for tests and benchmarks).
absl::StatusOr<instr::Program> SearchProgram(const ir::Graph& g, const costmodel::Cluster& c,
                                             const std::vector<double>& ratios, const Strategy& s,
                                             const SynthOptions& o, int64_t* states_expanded = nullptr);

// The cost of the best program found by trying every choice with no pruning (exponential:
// tests compare it with SearchProgram on small graphs). Infinity when there is none.
double ExhaustiveSearchCost(const ir::Graph& g, const costmodel::Cluster& c, const std::vector<double>& ratios,
                            const Strategy& s, const SynthOptions& o);

// Ratios minimizing the step time of a fixed program (Z3 LP over device classes, memory rows
// when o.memory_limits); an error when no ratios fit the memory.
absl::StatusOr<std::vector<double>> OptimizeRatios(const ir::Graph& g, const costmodel::Cluster& c,
                                                   const instr::Program& p, const SynthOptions& o);

// Sets the program's ratios (one segment), rebuilds its split groups and prices it.
absl::StatusOr<costmodel::Estimate> ApplyRatios(const ir::Graph& g, const costmodel::Cluster& c,
                                                instr::Program& p, const std::vector<double>& ratios,
                                                const SynthOptions& o);

}  // namespace hetsynth::synth
