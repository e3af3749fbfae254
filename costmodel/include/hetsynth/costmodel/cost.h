// What a program costs on a cluster: time per training step and memory per device.
//
// A program is priced as a list of terms, each linear in the devices' shares of a split (the
// fraction of a split dim a device holds) or in a maximum over them, so the synthesizer can both
// evaluate a program for given shares and hand the same terms to its ratio LP:
//   compute  flops·share_i / F_i  (GEMM-class)  or  bytes·share_i / BW_i  (memory-bound),
//            share_i = 1 for replicated work; a term takes its slowest device; GEMM-class terms
//            on devices with a GEMM operand bandwidth G_i add (whole + split·share_i) / G_i,
//            the operands the rule leaves whole and those it splits (ComputeSeconds);
//   collectives, priced by ClusterModel (cluster_model.h) by the links they cross and the NICs
//            they share (docs/topology.md); on one node the α–β table CollectiveCost:
//            padded all-gather / reduce-scatter  (n−1)·(α + β·B·max_i share_i)
//            grouped (true sizes)                n·α + β·B·max_i max(1 − share_i, (n−1)·share_i)
//            all-to-all                          (n−1)·α + β·B·max_i share_i
//            all-reduce (ring)                   2(n−1)·α + 2(n−1)/n·β·B
//            and hierarchical all-gather / reduce-scatter / all-reduce on two-level meshes;
//   a replicated parameter's gradient all-reduce once per step (its placement's dual), or one
//            per bucket of parameters;
//   the optimizer update, bytes moved / memory bandwidth, per device holding the parameter;
//   memory  Σ bytes·share_i (or full bytes) of parameters × optimizer factor, activations and
//           what kernels save for backward (ir::Graph::NodeSavedElements, split as the output).
// A step is the critical path of two streams (Evaluate): compute (forward, then backward in
// reverse, activation collectives and their duals blocking it) and, when the program overlaps,
// communication (ZeRO parameter gathers prefetched in forward; bucket all-reduces and ZeRO
// gradient reduce-scatters in backward, each starting when its gradients are ready and the
// previous one is done); the optimizer runs after both. Without overlap every term adds, as in
// the reference system (DESIGN §4).
//
//   const ClusterModel m(cluster);
//   ProgramCost pc = DescribeCost(graph, program, m, CostOptions{});
//   Estimate e = Evaluate(pc, ProgramShares(program), m, program.instructions.size());
#pragma once

#include <string>
#include <vector>

#include "hetsynth/costmodel/cluster.h"
#include "hetsynth/costmodel/cluster_model.h"
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

// Where a term runs in the step (Evaluate's two streams).
enum class TermRole : uint8_t {
  kStep,             // compute, or an activation collective and its backward dual: blocks compute
  kParameterGather,  // ZeRO: a parameter's all-gather for use and its gradient's reduce-scatter
  kGradientSync,     // the all-reduce of replicated gradients (one parameter or one bucket), backward
  kOptimizer,        // a parameter's update, after every gradient is synchronized
};

struct Term {
  TermKind kind = TermKind::kFree;
  TermRole role = TermRole::kStep;
  int instruction = -1;     // index in the program (or -1 during search)
  int group = -1;           // split group whose shares it uses (-1: none)
  int group2 = -1;          // all-to-all: the split of its result (-1: the same as group)
  double coefficient = 0;   // compute: FLOPs or bytes of the whole op, forward + backward
  double forward_fraction = 1;  // compute: the forward pass's part of coefficient, in [0, 1]
  bool memory_bound = false;  // compute: priced by memory bandwidth instead of FLOP/s
  // Compute, GEMM-class: bytes the kernel streams of its operands, inputs and output
  // (OperandBytes), priced at the device's gemm_operand_bandwidth where it has one: `whole` on
  // every device whatever its share (operands the rule leaves whole: a batch shard's weight, a
  // column shard's input, a partial sum), `split` × the device's share (operands it splits).
  double operand_bytes_whole = 0;
  double operand_bytes_split = 0;
  instr::InstrKind op = instr::InstrKind::kCompute;  // collectives: the forward collective
  double bytes = 0;         // collectives: bytes of the whole tensor
  double times = 1;         // collectives: 1 = op once (in backward for gradient syncs);
                            // 2 = op forward and its dual in backward
  // Mesh levels (kComputeMesh and the kDevices*/kNodes* kinds): the group whose shares give each
  // node's share S_j (a nodes group, or a world group summed over the node's devices); -1: none.
  int node_group = -1;
  bool node_group_world = false;
  int node_group2 = -1;       // all-to-all across nodes: the result's
  bool node_group2_world = false;
  // devices level: `group` is a world group whose within-node shares are s_i / S_j.
  bool within_from_world = false;
};

struct MemoryTerm {
  double bytes = 0;  // of the whole tensor (parameters: × the state factor)
  int group = -1;    // -1: every device holds all of it
  int node_group = -1;  // a mixed form split over the nodes: × the node's share
  bool node_group_world = false;
};

struct ProgramCost {
  std::vector<Term> terms;  // by instruction, in program order
  std::vector<MemoryTerm> memory;
  bool overlap = false;     // the program's communication stream (instr::Program::overlap)
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
bool MemoryBound(double flops, double bytes, const ClusterModel& m);

// Forward-only (inference) pricing, what placement (synth/placement.h) and the profile's
// forward calibration (calibrate.h) share. A node is memory-bound when the training model says
// so on `c` (ComputeTerm: not GEMM-like and MemoryBound); then its forward moves ForwardBytes
// (the inputs read and the output written: a third of NodeComputeBytes) at the device's
// forward bandwidth, else its forward FLOPs run at the device's forward FLOP/s.
bool ForwardMemoryBound(const ir::Graph& g, ir::NodeId node, const Cluster& c);
double ForwardBytes(const ir::Graph& g, ir::NodeId node);
double ForwardSeconds(const ir::Graph& g, ir::NodeId node, const Cluster& c, const Device& d);

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
Term ComputeTerm(const ir::Graph& g, ir::NodeId node, const instr::ComputeRule& rule, const ClusterModel& m);
Term ComputeTerm(const ir::Graph& g, ir::NodeId node, const instr::ComputeRule& rule, const Cluster& c);
// The term of a collective instruction: its kind and implementation decide the TermKind; a
// parameter's all-gather (ZeRO) has the role kParameterGather.
Term CollectiveTerm(const ir::Graph& g, const instr::Instruction& in);
// The TermKind of collective `kind` implemented as `impl` at `level` (kFree for non-collectives).
TermKind CollectiveKind(instr::InstrKind kind, instr::CollImpl impl, instr::Level level = instr::Level::kWorld);
// Whether a term kind is priced per mesh level (ClusterModel::MeshSeconds, kComputeMesh): what
// the ratio LP does not model (programs with such terms keep their ratios).
bool IsMeshKind(TermKind k);
// A replicated parameter's gradient all-reduce (ring unless `impl` says hierarchical).
Term GradientAllReduceTerm(const ir::Graph& g, ir::ValueId param, instr::CollImpl impl = instr::CollImpl::kRing);
// One bucket's all-reduce of its parameters' concatenated gradients.
Term BucketTerm(const ir::Graph& g, const instr::Bucket& b);
// The optimizer update of a parameter (memory-bound): on every device when replicated, by share
// when sharded (the caller sets the group).
Term OptimizerTerm(const ir::Graph& g, ir::ValueId param, bool sharded, const CostOptions& o);

// Bytes a GEMM-class node streams of one operand in forward + backward: 3 × its bytes (an input
// read forward, read again in backward, its gradient written; the output written, its gradient
// read twice). A shard streams the operands its rule leaves whole however little of the work it
// holds (a batch shard: the whole weight); the profile fits the rate (calibrate.h,
// FitOperandBandwidth) and the cluster file carries it (Device::gemm_operand_bandwidth).
double OperandBytes(const ir::Graph& g, ir::ValueId v);

// Seconds of a compute term on device d holding `share` of its split (1 for full work): its work
// over the device's rate, plus its operands (whole, and split × share) over the device's
// gemm_operand_bandwidth when it has one. What TermTime takes the slowest device's of, and the
// ratio LP prices full work with.
double ComputeSeconds(const Term& t, double share, const Device& d);

// A term's time on the cluster (forward + backward) when the split it uses has these per-device
// shares (`post`: the all-to-all result's; pass `shares` when it has none).
double TermTime(const Term& t, const std::vector<double>& shares, const std::vector<double>& post,
                const ClusterModel& m);
double TermTime(const Term& t, const std::vector<double>& shares, const ClusterModel& m);
// Convenience for one-off prices (builds a ClusterModel each call).
double TermTime(const Term& t, const std::vector<double>& shares, const Cluster& c);

// A term's time split into its forward part and its backward part (the optimizer's is backward).
struct TermParts {
  double forward = 0;   // seconds
  double backward = 0;  // seconds
};
TermParts TermSplit(const Term& t, const std::vector<double>& shares, const std::vector<double>& post,
                    const ClusterModel& m);

ProgramCost DescribeCost(const ir::Graph& g, const instr::Program& p, const ClusterModel& m, const CostOptions& o);
ProgramCost DescribeCost(const ir::Graph& g, const instr::Program& p, const Cluster& c, const CostOptions& o);

struct Estimate {
  double step_s = 0;                 // the critical path (without overlap: compute + communication)
  double compute_s = 0;              // Σ compute terms (slowest device per term)
  double communication_s = 0;        // Σ collective terms
  double exposed_communication_s = 0;  // step_s − compute_s: communication compute does not hide
  std::vector<double> instruction_compute_s;        // per instruction
  std::vector<double> instruction_communication_s;  // per instruction (a bucket: at the placement
                                                    // of the parameter that completes it)
  std::vector<double> memory_bytes;                 // per device
};

Estimate Evaluate(const ProgramCost& pc, const Shares& shares, const ClusterModel& m, size_t num_instructions);
Estimate Evaluate(const ProgramCost& pc, const Shares& shares, const Cluster& c, size_t num_instructions);

// Per device: the seconds of compute (kernels and optimizer updates) the program gives it — what
// each rank's compute_s measures (`bench --refit` compares them per device).
std::vector<double> DeviceComputeSeconds(const ProgramCost& pc, const Shares& shares, const ClusterModel& m);

}  // namespace hetsynth::costmodel
