// What a program costs on a cluster: time per training step and memory per device.
//
// A program is priced as a list of terms, each linear in the devices' shares of a split (the
// fraction of a split dim a device holds) or in the maximum share, so the synthesizer can both
// evaluate a program for given shares and hand the same terms to its ratio LP:
//   compute  flops·share_i / F_i  (GEMM-class)  or  bytes·share_i / BW_i  (memory-bound),
//            share_i = 1 for replicated work; a step time adds the slowest device per term;
//   collectives (α–β over the slowest link of the group, forward + backward dual; one table,
//   CollectiveCost, that TermTime, the ratio LP and the link calibration all read):
//            padded all-gather / reduce-scatter  (n−1)·(α + β·B·max_i share_i)
//            grouped (true sizes)                n·α + β·B·max_i max(1 − share_i, (n−1)·share_i)
//            all-to-all                          (n−1)·α + β·B·max_i share_i
//            all-reduce (ring)                   2(n−1)·α + 2(n−1)/n·β·B
//   a replicated parameter's gradient all-reduce once per step (its placement's dual);
//   the optimizer update, bytes moved / memory bandwidth, per device holding the parameter;
//   memory  Σ bytes·share_i (or full bytes) of parameters × optimizer factor and activations.
// Compute and communication add (no overlap), as in the reference system (DESIGN §4).
//
//   ProgramCost pc = DescribeCost(graph, program, cluster, CostOptions{});
//   Estimate e = Evaluate(pc, ProgramShares(program), cluster);
#pragma once

#include <string>
#include <vector>

#include "hetsynth/costmodel/cluster.h"
#include "hetsynth/instr/program.h"
#include "hetsynth/ir/graph.h"

namespace hetsynth::costmodel {

struct CostOptions {
  // Bytes kept per parameter byte: value + gradient + optimizer state (Adam: 4, SGD: 2).
  double parameter_state_factor = 4.0;
  // Bytes the optimizer update moves per parameter byte, on the device holding the parameter
  // (replicated: every device; sharded: by share). Adam reads p, g, m, v and writes p, m, v: 7.
  double optimizer_bytes_factor = 7.0;
};

enum class TermKind : uint8_t {
  kComputeSplit,      // coefficient · share_i / speed_i
  kComputeFull,       // coefficient / speed_i
  kGatherPadded,      // all-gather / reduce-scatter, padded
  kGatherGrouped,     // all-gather / reduce-scatter, grouped point-to-point
  kAllToAll,
  kAllReduce,
  kFree,
};

struct Term {
  TermKind kind = TermKind::kFree;
  int instruction = -1;     // index in the program (or -1 during search)
  int group = -1;           // split group whose shares it uses (-1: none)
  double coefficient = 0;   // compute: FLOPs or bytes of the whole op, forward + backward
  bool memory_bound = false;  // compute: priced by memory bandwidth instead of FLOP/s
  double bytes = 0;         // collectives: bytes of the whole tensor
  double times = 1;         // collectives: how often per step (2 = forward + backward dual)
};

struct MemoryTerm {
  double bytes = 0;  // of the whole tensor (parameters: × the state factor)
  int group = -1;    // -1: every device holds all of it
};

struct ProgramCost {
  std::vector<Term> terms;
  std::vector<MemoryTerm> memory;
};

// Shares by split group: shares[g][i] = counts_i / atoms.
using Shares = std::vector<std::vector<double>>;
Shares ProgramShares(const instr::Program& p);

// Bytes of one element: every tensor is priced as fp32.
inline constexpr double kElementBytes = 4.0;
// Bytes of a whole tensor of the graph (fp32).
double ValueBytes(const ir::Graph& g, ir::ValueId v);
// Bytes a memory-bound node moves, forward + backward: 3 × (its inputs' and output's bytes) —
// forward reads the inputs and writes the output, backward about twice that. The one
// definition ComputeTerm and the profile's calibration (calibrate.h) price nodes with.
double NodeComputeBytes(const ir::Graph& g, ir::NodeId node);

// Whether an op is better priced by bytes / memory bandwidth than by FLOPs / FLOP/s on the
// cluster's average device.
bool MemoryBound(double flops, double bytes, const Cluster& c);

// What a collective's volume depends on in the shares s_i (i < n) of the split it uses.
enum class ShareMeasure : uint8_t {
  kNone,        // 1: a ring all-reduce of a whole tensor moves the same bytes whatever the split
  kMaxShare,    // max_i s_i: every device waits for (or pads to) the largest shard
  kGroupedMax,  // max_i max(1 − s_i, (n−1)·s_i): the busiest device's receives or sends when
                // each device sends its own shard to every other one (grouped)
};
double MeasureShares(ShareMeasure m, int n, const std::vector<double>& shares);

// How the α–β model prices one collective over n ≥ 2 devices, B bytes of the whole tensor:
//   seconds = rounds · (latencies·α + volume·β·B·MeasureShares(measure, n, shares))
// with α the link's latency (s) and β its seconds per byte. padded: n−1 rounds, each one α and
// the largest shard; grouped: n·α and the busiest device's traffic; all-to-all: (n−1)·α and
// the largest shard; ring all-reduce: 2(n−1)·α and 2(n−1)/n·B. Non-collective kinds: all zero.
struct CollectiveCoefficients {
  double rounds = 0;     // steps one after another, each priced as below
  double latencies = 0;  // α per round
  double volume = 0;     // multiples of B·measure per round, independent of the shares
  ShareMeasure measure = ShareMeasure::kNone;
};
CollectiveCoefficients CollectiveCost(TermKind kind, int n);
// Seconds of one collective under the coefficients: `measure` from MeasureShares, `alpha` in
// seconds, `beta` in seconds per byte, `bytes` of the whole tensor.
double CollectiveSeconds(const CollectiveCoefficients& k, double measure, double alpha, double beta, double bytes);

// The compute term of running `node` under rule `rule` (forward + backward).
Term ComputeTerm(const ir::Graph& g, ir::NodeId node, const instr::ComputeRule& rule, const Cluster& c);
// The term of a collective instruction (its implementation decides padded or grouped).
Term CollectiveTerm(const ir::Graph& g, const instr::Instruction& in);
// A replicated parameter's gradient all-reduce.
Term GradientAllReduceTerm(const ir::Graph& g, ir::ValueId param);
// The optimizer update of a parameter (memory-bound): on every device when replicated, by share
// when sharded (the caller sets the group).
Term OptimizerTerm(const ir::Graph& g, ir::ValueId param, bool sharded, const CostOptions& o);

// Time of one term on the cluster when the split it uses has these per-device shares.
double TermTime(const Term& t, const std::vector<double>& shares, const Cluster& c);

ProgramCost DescribeCost(const ir::Graph& g, const instr::Program& p, const Cluster& c, const CostOptions& o);

struct Estimate {
  double step_s = 0;
  double compute_s = 0;
  double communication_s = 0;
  std::vector<double> instruction_compute_s;        // per instruction
  std::vector<double> instruction_communication_s;  // per instruction
  std::vector<double> memory_bytes;                 // per device
};

Estimate Evaluate(const ProgramCost& pc, const Shares& shares, const Cluster& c, size_t num_instructions);

}  // namespace hetsynth::costmodel
