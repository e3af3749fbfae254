// Plan synthesis: from a model graph and a cluster, the SPMD program, sharding ratios, collective
// implementations and gradient buckets that train fastest under the cost model, within every
// device's memory.
//
// It alternates two exact steps (DESIGN §3):
//   1. Search: best-first A* over property sets, one operator per step (placements and
//      collectives fused into the step that needs them, each collective with its cheapest
//      implementation at the current ratios), each tensor computed once and communicated at most
//      once, dead properties dropped, a best-cost table per state, and the admissible heuristic
//      "remaining compute at these ratios, with no communication". g adds every term's time —
//      an additive guide, not the step: gradient synchronization, which the step overlaps with
//      backward, is charged `gradient_sync_weight` × its time (bucket latency amortized), and the
//      alternation runs with weights 1 and 0.1 (full price, mostly hidden). States whose memory
//      exceeds a device's capacity at the current ratios are pruned when no ratios can fit them.
//   2. Buckets and ratios: for the program found, the bucket size (one per parameter, 1, 4, 25
//      or 100 MiB) and each bucket's implementation that give the shortest critical path
//      (costmodel::Evaluate), then Z3 minimizes that critical path over the ratios of the device
//      classes subject to every class's memory capacity.
// starting from ratios ∝ FLOP/s and even ratios and stopping when the step time stops improving;
// every baseline's program is re-optimized too, and the best plan's largest parameters are tried
// replicated ↔ ZeRO under the critical path. On a two-level mesh the dp-nodes mode runs beside
// this world mode (topology spec §3, mesh_lift.h: the batch over the nodes, the inner level
// searched on one node of each kind and lifted); a plan over mesh levels is kept only when it
// beats the refined world plan. Baselines are the same search restricted to their
// strategy (synth::BaselineNames, docs/baselines.md), at fixed ratios. Every result is priced by
// the topology cost model (docs/topology.md), whatever a baseline searched with.
//
// Determinism: nothing depends on the clock. The search stops after `max_states` expansions
// (deterministically); `time_limit_s` is only a safety stop that fails the whole synthesis.
//
//   absl::StatusOr<SynthResult> r = Synthesize(graph, cluster, Strategy{}, SynthOptions{});
//   auto all = SynthesizeAll(graph, cluster, {Strategy{}, *StrategyByName("hap")}, SynthOptions{});
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "hetsynth/costmodel/cluster.h"
#include "hetsynth/costmodel/cluster_model.h"
#include "hetsynth/costmodel/cost.h"
#include "hetsynth/instr/program.h"
#include "hetsynth/ir/graph.h"

namespace hetsynth::synth {

struct SynthOptions {
  costmodel::CostOptions cost;  // both factors finite and > 0
  // Safety stop, seconds of wall clock for one Synthesize call; finite, > 0. Exceeding it fails
  // with DeadlineExceeded (never a different plan): results do not depend on the clock.
  double time_limit_s = 600;
  int max_rounds = 8;             // search ⇄ ratio rounds; >= 1
  // States one search may expand before it gives up (OutOfRange; the alternation keeps the
  // best program of earlier rounds); >= 1. Deterministic, unlike a time budget.
  int64_t max_states = 4000000;
  bool memory_limits = true;      // enforce each device's memory capacity
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
  // Tensor parallel only (megatron): weight matrices (rank ≥ 2 parameters) are owned as slices,
  // never whole on every device, and no rule splits an activation beside a whole matrix — linear
  // layers run column / row; vectors (layer norms, biases) may stay whole.
  bool split_weights_with_activations = false;
  bool allow_replicated_params = true;
  bool allow_sharded_params = true;  // owned slices (tensor parallel)
  bool allow_zero_params = true;     // stored sharded, all-gathered for use (ZeRO-3)
  bool allow_reduce_rules = true;    // rules with a Reduce (partial-sum) result other than the loss
  bool allow_grouped = true;         // grouped all-gather / reduce-scatter (else padded)
  bool allow_hierarchical = true;    // hierarchical collectives on a two-level mesh
  bool overlap = true;               // a communication stream beside compute (Program::overlap)
  // Gradient bucket sizes to choose from, bytes; 0 = one bucket per parameter. Empty: no
  // buckets (one blocking all-reduce per parameter).
  std::vector<double> bucket_bytes = {0, 1 << 20, 4 << 20, 25 << 20, 100 << 20};
  // Search and ratio LP price collectives as the reference system did (ClusterModel's
  // kFlatWorldLink); the result is still priced by topology. `hap` only.
  bool flat_world_link_pricing = false;
  bool memory_rows = true;           // the LP and the search respect memory (else ignore it)
  // Search modes on a two-level mesh (topology spec §3). `dp_nodes`: only the dp-nodes mode —
  // the outer level is the batch rule over the nodes, the inner level searched on one node
  // with this strategy's restrictions (megatron: tensor parallel inside the node). `mesh_modes`:
  // a synthesized plan also runs the dp-nodes mode beside the world mode and keeps the better.
  bool dp_nodes = false;
  bool mesh_modes = true;
  // Per-segment ratios: split groups no instruction ties together may take their own row of
  // ratios where that shortens the step (RefineSegments in synthesize.cc). Read by the
  // synthesized strategy only: baselines keep one row (the reference system's space has one).
  bool segments = true;
};

// "synthesized" or a baseline (BaselineNames). The error lists the names.
absl::StatusOr<Strategy> StrategyByName(const std::string& name);
// ddp-ev, ddp-cp, fsdp-even, megatron, hap, dp-ev, dp-cp, tp-even, zero-even (docs/baselines.md).
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

// Every baseline synthesized once, then each strategy of `strategies` (a baseline's name gets
// that baseline's result; any other, e.g. "synthesized", is synthesized with the baselines'
// programs as extra starting points instead of searching them again). Results in the order of
// `strategies`. What `hetsynth synth` and `bench` call.
std::vector<std::pair<std::string, absl::StatusOr<SynthResult>>> SynthesizeAll(
    const ir::Graph& g, const costmodel::Cluster& c, const std::vector<Strategy>& strategies, const SynthOptions& o);

// The search alone at fixed per-device ratios (exposed for tests and benchmarks): the program
// with its collectives' implementations and the strategy's overlap, without buckets.
// `gradient_sync_weight` scales the gradient synchronization the search charges (see above).
absl::StatusOr<instr::Program> SearchProgram(const ir::Graph& g, const costmodel::Cluster& c,
                                             const std::vector<double>& ratios, const Strategy& s,
                                             const SynthOptions& o, int64_t* states_expanded = nullptr,
                                             double gradient_sync_weight = 1.0);
absl::StatusOr<instr::Program> SearchProgram(const ir::Graph& g, const costmodel::ClusterModel& m,
                                             const std::vector<double>& ratios, const Strategy& s,
                                             const SynthOptions& o, int64_t* states_expanded = nullptr,
                                             double gradient_sync_weight = 1.0);

// The buckets for a program's replicated parameters that give the shortest step at its ratios
// among the strategy's bucket sizes (each bucket ring or hierarchical, whichever is cheaper);
// ties go to the earlier size. Sets p.buckets (empty without replicated parameters or sizes).
void ChooseBuckets(const ir::Graph& g, const costmodel::ClusterModel& m, const Strategy& s,
                   const SynthOptions& o, instr::Program& p);
// Buckets of at most `bytes` (0: one per parameter), closed when the next gradient would pass
// the size, in ready order; each with the cheaper implementation by `m`.
std::vector<instr::Bucket> MakeBuckets(const ir::Graph& g, const costmodel::ClusterModel& m, const Strategy& s,
                                       const instr::Program& p, double bytes);

// The cost of the best program found by trying every choice with no pruning (exponential:
// tests compare it with SearchProgram on small graphs). Infinity when there is none.
double ExhaustiveSearchCost(const ir::Graph& g, const costmodel::Cluster& c, const std::vector<double>& ratios,
                            const Strategy& s, const SynthOptions& o);

// Ratios minimizing the step time of a fixed one-row program (Z3 LP over device classes, memory
// rows when o.memory_limits); an error when no ratios fit the memory, FailedPrecondition for a
// program with several rows of ratios.
absl::StatusOr<std::vector<double>> OptimizeRatios(const ir::Graph& g, const costmodel::Cluster& c,
                                                   const instr::Program& p, const SynthOptions& o);
absl::StatusOr<std::vector<double>> OptimizeRatios(const ir::Graph& g, const costmodel::ClusterModel& m,
                                                   const instr::Program& p, const SynthOptions& o);

// The same LP with one row of ratios per segment: split group i is cut by row
// segment_of_group[i] (in [0, segments)); each row sums to 1, each device's memory is summed
// over the rows, and ties among optima go to the rows closest to where each segment started
// (row s of the program's ratios, or its last). One segment is OptimizeRatios' LP exactly.
absl::StatusOr<std::vector<std::vector<double>>> OptimizeSegmentRatios(const ir::Graph& g,
                                                                       const costmodel::ClusterModel& m,
                                                                       const instr::Program& p, const SynthOptions& o,
                                                                       const std::vector<int>& segment_of_group,
                                                                       int segments);

// Sets the program's ratios (one row; every instruction's segment 0), rebuilds its split groups
// and prices it.
absl::StatusOr<costmodel::Estimate> ApplyRatios(const ir::Graph& g, const costmodel::Cluster& c,
                                                instr::Program& p, const std::vector<double>& ratios,
                                                const SynthOptions& o);
absl::StatusOr<costmodel::Estimate> ApplyRatios(const ir::Graph& g, const costmodel::ClusterModel& m,
                                                instr::Program& p, const std::vector<double>& ratios,
                                                const SynthOptions& o);
// Rebuilds the program's split groups from its own ratios (every segment's row) and prices it.
absl::StatusOr<costmodel::Estimate> EstimateProgram(const ir::Graph& g, const costmodel::ClusterModel& m,
                                                    instr::Program& p, const SynthOptions& o);

}  // namespace hetsynth::synth
