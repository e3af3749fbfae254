// Calibrating the cost model from measurements: what `hetsynth profile` does with the times it
// takes (docs/cluster-format.md, "Profiling this host"). The CLI measures; the meaning of the
// numbers lives here, next to the formulas they calibrate, so that a fit cannot drift from the
// model it fits.
//
//   Kernels → device rates. Each node's measured forward + backward time is charged to the class
//   the cost model prices the node in (ComputeTerm: FLOPs for GEMM-class and compute-bound
//   nodes, NodeComputeBytes for memory-bound ones), the optimizer update to memory-bound work
//   (OptimizerTerm's bytes); FLOP/s and bandwidth are each class's work over its time. A node's
//   class depends on the cluster's average device, and the cluster written is built from these
//   rates, so CalibrateRates repeats the classification on that cluster until it stops changing.
//   Collectives → link. Each timed collective carries its α and β coefficients from the cost
//   model's table (CollectiveCost); FitLink takes α from the small ones and β from the large.
//   EmulatedCluster: the cluster file with the measured device as its fastest device.
//
//   EmulationTarget target{.like = &like, .ranks = 4, .memory_per_device = 8e9, .base = "host"};
//   absl::StatusOr<KernelRates> r = CalibrateRates(graph, times, target, CostOptions{});
//   std::vector<LinkSample> s = {MakeLinkSample(TermKind::kAllReduce, {256, 256}, 2.1e-5), ...};
//   const LinkFit fit = FitLink(s);
//   Cluster out = EmulatedCluster(target, r->flops_per_s, r->bytes_per_s, fit.link());
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "hetsynth/costmodel/cluster.h"
#include "hetsynth/costmodel/cost.h"
#include "hetsynth/ir/graph.h"

namespace hetsynth::costmodel {

// ---- kernels ---------------------------------------------------------------------------------

// One training step of a graph timed on one device.
struct KernelTimes {
  std::vector<double> seconds;  // per node: forward + backward, seconds
  std::vector<bool> backward;   // per node: whether its backward ran (a gradient reached its output)
  double optimizer_s = 0;       // the optimizer update of every parameter, seconds; 0: not timed
  // GEMM operand bandwidth (FitOperandBandwidth); > 0: a GEMM-class node's FLOPs are charged its
  // time less its operands' streaming (ComputeSeconds prices it apart). 0: not fitted.
  double operand_bytes_per_s = 0;
};

// A device's rates as the cost model prices with them, and the sums they come from.
struct KernelRates {
  double flops_per_s = 0;  // Device::flops: FLOP/s of GEMM-class and compute-bound work
  double bytes_per_s = 0;  // Device::memory_bandwidth: bytes/s of memory-bound work
  double operand_bytes_per_s = 0;  // Device::gemm_operand_bandwidth: KernelTimes' (0: not priced)
  double operand_s = 0;            // the GEMM nodes' operand time, taken out of compute_s
  double flops = 0;        // FLOPs of the compute-bound nodes
  double compute_s = 0;    // their seconds
  double bytes = 0;        // bytes of the memory-bound nodes and the optimizer update
  double memory_s = 0;     // their seconds
  int compute_nodes = 0;
  int memory_nodes = 0;
  int skipped = 0;                  // nodes left out: their backward did not run, the model counts it
  bool flops_fallback = false;      // no compute-bound node: all timed nodes' FLOPs over their time
  bool bandwidth_fallback = false;  // no memory-bound node: all timed nodes' bytes over their time
  std::vector<bool> memory_bound;   // per node: the class the cost model gives it on the cluster
  int rounds = 0;                   // CalibrateRates: classification rounds run (1 for RatesOnCluster)
  bool stable = false;              // CalibrateRates: the last round classified as the one before
};

// ---- GEMM operands ---------------------------------------------------------------------------

// Device::gemm_operand_bandwidth from GEMM-class nodes with parameters, each timed (forward +
// backward) at all its rows (`large_s`, per node; 0: not timed) and at `rows_ratio` of them
// (`small_s`). Such a node takes time(rows) ≈ rows·x + y: y, what does not shrink with the rows,
// is its parameters' streaming (OperandBytes of each parameter input); x = (t_large − t_small) /
// (1 − ratio), y = t_large − x. The rate is Σ OperandBytes / Σ y over the timed nodes. With it,
// RatesOnCluster takes every operand's streaming (ComputeSeconds) out of the FLOPs' time, so a
// node's price at all its rows stays what was measured. Not measurable (bytes_per_s 0) when
// none was timed; when their time at all rows is under kMinOperandNodeSeconds (microsecond
// kernels: what does not shrink is the call, not the weights); or when Σ y is under
// kMinOperandShare of that time (noise, not a cost) or over kMaxOperandShare (a per-call cost
// again). InvalidArgument when the times do not have one entry per node or the ratio is not in
// (0, 1).
inline constexpr double kMinOperandNodeSeconds = 1e-3;
inline constexpr double kMinOperandShare = 0.01;
inline constexpr double kMaxOperandShare = 0.5;
struct OperandFit {
  double bytes_per_s = 0;  // 0: not measurable
  double fixed_s = 0;      // Σ y, seconds: the timed nodes' time that does not shrink with the rows
  double node_s = 0;       // Σ t_large, seconds
  double bytes = 0;        // Σ OperandBytes of their parameters
  int nodes = 0;
};
absl::StatusOr<OperandFit> FitOperandBandwidth(const ir::Graph& g, const std::vector<double>& large_s,
                                               const std::vector<double>& small_s, double rows_ratio);

// One classification pass: every node classified as ComputeTerm does with its replicated rule
// on `c`, the timed nodes' FLOPs (bytes) and seconds summed per class, the optimizer update
// added to the memory-bound side. With no timed node of a class, that rate falls back to all
// timed nodes' FLOPs (or bytes) over all their time, a lower bound. `t` has one entry per node.
KernelRates RatesOnCluster(const ir::Graph& g, const KernelTimes& t, const Cluster& c, const CostOptions& o);

// The cluster a profile writes, apart from the measured rates and link.
struct EmulationTarget {
  const Cluster* like = nullptr;  // emulate this cluster's devices and nodes (not owned); nullptr:
                                  // `ranks` identical devices
  int ranks = 0;                  // devices without `like`
  double memory_per_device = 0;   // bytes per device without `like`
  std::string base = "host";      // without `like`: cluster name, device type, device-name prefix
};

// The measured device as the fastest device. Without `like`: `ranks` devices <base>0… of type
// <base> on one node "n0", cluster <base>. With it: like's devices, names, types and nodes,
// cluster "<like>-emulated", each device's flops and memory bandwidth = the measured ones ×
// (its flops / like's largest flops) (the emulation stretches every kernel by that ratio),
// memory kept, like's collective tables dropped (they describe the real cluster). Every link
// is `link`. flops, memory_bandwidth: FLOP/s and bytes/s of the measured device;
// operand_bandwidth its GEMM operand bandwidth (0: not priced), scaled per device like flops.
Cluster EmulatedCluster(const EmulationTarget& t, double flops, double memory_bandwidth, const Link& link,
                        double operand_bandwidth = 0);

// The rates that classify every node of `g` on the cluster built from them: start from the
// whole model's FLOPs and bytes over its total time, then RatesOnCluster on
// EmulatedCluster(target, rates) until the classification repeats (at most kMaxCalibrationRounds
// rounds; `stable` says whether it settled). The link plays no part in classifying.
// InvalidArgument when the times do not have one entry per node or do not add up to a
// positive, finite time.
inline constexpr int kMaxCalibrationRounds = 20;
absl::StatusOr<KernelRates> CalibrateRates(const ir::Graph& g, const KernelTimes& t, const EmulationTarget& target,
                                           const CostOptions& o);

// Forward-only rates (Device::forward_flops, forward_memory_bandwidth: what placement prices
// inference with, ForwardSeconds in cost.h) from per-node forward times on one device: each
// forward node but the loss classified as ForwardMemoryBound says on `c`, forward FLOPs (or
// ForwardBytes) over forward seconds per class. Nodes without a forward time are left out; a
// class with no timed node has rate 0 (the device's training rate then stands).
// InvalidArgument when `forward_seconds` does not have one entry per node.
struct ForwardRates {
  double flops_per_s = 0;  // 0: no compute-bound node timed
  double bytes_per_s = 0;  // 0: no memory-bound node timed
  int compute_nodes = 0;
  int memory_nodes = 0;
};
absl::StatusOr<ForwardRates> ForwardRatesOnCluster(const ir::Graph& g, const std::vector<double>& forward_seconds,
                                                   const Cluster& c);
// Gives every device of `c` forward rates in proportion to its training ones, as EmulatedCluster
// gives the measured device's rates: forward_flops = r.flops_per_s × flops / host_flops (and the
// same for bandwidth), where host_flops and host_bytes_per_s are the measured device's training
// rates. A zero rate in `r` leaves that field absent.
void SetForwardRates(Cluster& c, const ForwardRates& r, double host_flops, double host_bytes_per_s);

// ---- collectives -----------------------------------------------------------------------------

// One timed collective with the cost model's coefficients: seconds ≈ latencies·α + volume·β.
struct LinkSample {
  double bytes = 0;      // B: bytes of the whole tensor
  double seconds = 0;    // measured; at least 1 ns (a clock tick), never zero
  double latencies = 0;  // how many α the model charges: rounds · latencies of CollectiveCost
  double volume = 0;     // bytes the model charges β for: rounds · volume · measure(shares) · B
};

// The sample of a collective of `kind` (a collective TermKind) over a tensor cut into shards of
// `lengths` fp32 elements, one per device (at least 2 devices, at least one element in all),
// that took `seconds`; the shares are lengths_i / Σ lengths.
LinkSample MakeLinkSample(TermKind kind, const std::vector<int64_t>& lengths, double seconds);

// Samples of at most this many bytes fit α; of at least kBetaMinBytes, β.
inline constexpr double kAlphaMaxBytes = 4096;
inline constexpr double kBetaMinBytes = 262144;

struct LinkFit {
  double alpha = 0;         // seconds per message (Link::latency)
  double beta = 0;          // seconds per byte (1 / Link::bandwidth); 1e-12 when nothing fits
  double rms_relative = 0;  // root mean square of (predicted − measured) / measured, all samples
  Link link() const { return {1.0 / beta, alpha}; }
};

// α from the small collectives, where latency is all there is: the median of seconds /
// latencies over the samples of at most kAlphaMaxBytes. β from the large ones, which carry a
// step's communication time: least squares of (seconds − latencies·α) ≈ volume·β over the
// samples of at least kBetaMinBytes (when there are none, over all samples). A single relative
// fit over all sizes would let the many small sizes pull β down and under-price the large
// transfers by half.
LinkFit FitLink(const std::vector<LinkSample>& samples);

}  // namespace hetsynth::costmodel
