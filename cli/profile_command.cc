// `hetsynth profile`: measure a backend's device — this host, or a GPU — and write a cluster
// file in which it is the fastest device, so that the cost model's predictions compare with the
// emulation of a mixed cluster on it (on the CPU: each rank's kernel thread CPU time stretched by
// max_flops / flops_i, a collective on the threads communicator charged by the thread CPU time it
// takes, virtual clocks synchronized before it; on a GPU: virtual GPUs with SM shares by speed).
// docs/cluster-format.md, "Profiling this host". The backend measures (Backend::Profile); this
// file prints and writes; what the measurements mean for the cost model (the classification of
// nodes, the α–β fit, the emulated cluster) is costmodel/calibrate.h.
//
//   hetsynth profile --model gpt --small --like examples/clusters/mixed-4.json -o emulated.json
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>

#include <fmt/format.h>

#include "backend_flags.h"
#include "commands.h"
#include "network_profile.h"
#include "hetsynth/costmodel/calibrate.h"
#include "hetsynth/costmodel/cluster.h"
#include "hetsynth/costmodel/cost.h"
#include "hetsynth/instr/program.h"
#include "hetsynth/base/memory.h"
#include "hetsynth/base/status.h"
#include "hetsynth/runtime/backend.h"
#include "hetsynth/runtime/data.h"

namespace hetsynth::cli {
namespace {

constexpr int kDefaultRanks = 4;          // without --like
constexpr int kMaxDefaultRanks = 64;      // default --ranks from a --like cluster is capped here
constexpr int64_t kDefaultMaxBytes = int64_t{16} << 20;  // 4M floats

struct ProfileFlags {
  ModelOptions model;
  std::string like, out;
  std::string backend = "cpu";  // a registered backend (runtime::FindBackend)
  std::string precision;        // empty: the backend's default (only backends with a choice take the flag)
  int ranks = -1;  // -1: the --like cluster's device count (at most kMaxDefaultRanks), else 4
  int repeats = 5;
  int64_t max_bytes = kDefaultMaxBytes;
  bool keep_links = false;  // with --like: write like's links, not the thread ranks' fit
  bool network = false;     // --network: network_profile.cc
  NetworkProfileFlags net;
};

// ---- What the cost model makes of the timings ------------------------------------------------

struct CommSample {
  const char* op;                 // a kCommOps name
  costmodel::LinkSample sample;   // seconds: median over repeats of the max over ranks
};

// The collectives timed, in this order, and how the cost model prices each (grouped all-gather
// and reduce-scatter with uneven shares, ring all-reduce, padded all-gather).
struct CommOp {
  const char* name;
  costmodel::TermKind kind;
};
constexpr int kCommOps = 4;
constexpr CommOp kCommOpTable[kCommOps] = {{"all_gather", costmodel::TermKind::kGatherGrouped},
                                           {"reduce_scatter", costmodel::TermKind::kGatherGrouped},
                                           {"all_reduce", costmodel::TermKind::kAllReduce},
                                           {"all_gather_padded", costmodel::TermKind::kGatherPadded}};

// The tensor sizes timed: 4, 16, 64, … elements up to max_bytes (1 when max_bytes < 16).
std::vector<int64_t> CollectiveSizes(int64_t max_bytes) {
  std::vector<int64_t> sizes;
  for (int64_t s = 4; 4 * s <= max_bytes; s *= 4) sizes.push_back(s);
  if (sizes.empty()) sizes.push_back(1);
  return sizes;
}

// A sample of collective kCommOpTable[op] over shards of `lengths` elements (one per rank), with
// the cost model's coefficients for the rounded shares (costmodel::MakeLinkSample). Both
// backends' samples go through here.
CommSample MakeSample(int op, const std::vector<int64_t>& lengths, double seconds) {
  return {kCommOpTable[op].name, costmodel::MakeLinkSample(kCommOpTable[op].kind, lengths, seconds)};
}

// What a backend measured, in the form the shared code below writes the cluster file from.
struct Measured {
  costmodel::KernelRates compute;  // the device's rates (classified; CPU: calibrated against the executor)
  std::vector<double> forward_seconds;  // per node: its forward alone (the forward rates' fit)
  std::vector<CommSample> samples;
  costmodel::EmulationTarget target;  // --like or --ranks devices; base "host" or "gpu"
  costmodel::OperandFit operands;     // GEMM operand bandwidth (CPU hosts; bytes_per_s 0: not fitted)
  double rows_ratio = 0;              // the operand fit's small rows / all rows
  std::string operands_skipped;       // why there is no fit, when it was tried
  std::string label;             // the summary's name for the device: "host" or "GPU"
  std::string ranks_label;       // e.g. "4 thread ranks", "4 virtual GPUs"
  std::string extra;             // one more summary line, or empty
};

// The cluster to write, but for the rates and the link: like's devices, or `ranks` devices of
// `memory_per_device` bytes named after `base`.
costmodel::EmulationTarget Target(const std::optional<costmodel::Cluster>& like, int ranks, double memory_per_device,
                                  const std::string& base) {
  costmodel::EmulationTarget t;
  t.like = like ? &*like : nullptr;
  t.ranks = ranks;
  t.memory_per_device = memory_per_device;
  t.base = base;
  return t;
}

// The cost model's rates for the measured node times (costmodel::CalibrateRates), with a
// progress line.
absl::StatusOr<costmodel::KernelRates> Classify(const ir::Graph& g, const costmodel::KernelTimes& times,
                                                const costmodel::EmulationTarget& target) {
  HS_ASSIGN_OR_RETURN(costmodel::KernelRates rates, costmodel::CalibrateRates(g, times, target, costmodel::CostOptions{}));
  fmt::print(stderr, "profile: {} compute-bound and {} memory-bound nodes timed ({} without backward left out){}\n",
             rates.compute_nodes, rates.memory_nodes, rates.skipped,
             rates.stable ? "" : fmt::format("; classification still changing after {} rounds", rates.rounds));
  return rates;
}

// Shards as plans for this cluster will cut them: in proportion to the devices' speeds (like's
// FLOP/s when it has `ranks` devices, else equal).
std::vector<double> Shares(const std::optional<costmodel::Cluster>& like, int ranks) {
  std::vector<double> shares(static_cast<size_t>(ranks), 1.0);
  if (like && like->size() == ranks) {
    for (int i = 0; i < ranks; ++i) shares[static_cast<size_t>(i)] = like->devices[static_cast<size_t>(i)].flops;
  }
  return shares;
}

// The GEMM operand bandwidth (costmodel::FitOperandBandwidth) from the backend's timings of
// GEMM-class nodes at two row counts; where there are none, m.operands_skipped says why.
void FitOperands(const ir::Graph& g, const runtime::DeviceProfile& p, Measured& m) {
  if (p.node_rows_large_s.empty()) {
    m.operands_skipped = "not measured on this backend";
    return;
  }
  absl::StatusOr<costmodel::OperandFit> fit =
      costmodel::FitOperandBandwidth(g, p.node_rows_large_s, p.node_rows_small_s, p.operand_rows_ratio);
  if (!fit.ok()) {
    m.operands_skipped = std::string(fit.status().message());
    return;
  }
  m.operands = *fit;
  m.rows_ratio = p.operand_rows_ratio;
  if (fit->bytes_per_s > 0) return;
  if (fit->nodes == 0) {
    m.operands_skipped = "no GEMM-class node with parameters whose rows divide by 8";
  } else if (fit->node_s < costmodel::kMinOperandNodeSeconds) {
    m.operands_skipped = fmt::format("its GEMM-class nodes with parameters take {:.3f} ms, under the {:.0f} ms that "
                                     "tells weight streaming from the cost of a call",
                                     fit->node_s * 1e3, costmodel::kMinOperandNodeSeconds * 1e3);
  } else {
    m.operands_skipped = fmt::format("{:.1f}% of their time does not shrink with the rows, outside {:.0f}–{:.0f}%",
                                     100 * fit->fixed_s / fit->node_s, costmodel::kMinOperandShare * 100,
                                     costmodel::kMaxOperandShare * 100);
  }
}

// Backend::Profile on device 0 — per node forward + backward times of its trainer, the
// optimizer update, collectives on `ranks` of its in-process ranks (threads, or virtual GPUs
// with SM shares) with shards by device speed — then the cost model's classification of the
// nodes and the samples of the link fit.
absl::StatusOr<Measured> Measure(const runtime::Backend& backend, const ProfileFlags& f, const ir::ModelSpec& spec,
                                 const ir::Graph& g, const std::optional<costmodel::Cluster>& like, int ranks) {
  const runtime::BackendCapabilities& caps = backend.capabilities();
  runtime::ProfileOptions o;
  o.device = 0;
  o.precision = f.precision.empty() ? caps.precisions.front() : f.precision;
  o.repeats = f.repeats;
  o.speeds = Shares(like, ranks);
  for (int64_t size : CollectiveSizes(f.max_bytes)) o.collectives.push_back(instr::RoundShares(o.speeds, size));
  o.model = spec.ToString();
  o.progress = [](const std::string& line) { fmt::print(stderr, "{}\n", line); };
  if (caps.host_memory) {
    // Per rank the buffers of the largest size: all-gather send + receive + padded staging, the
    // all-reduce data and its chunk (about 3.5 × --max-bytes); keep them within half the RAM.
    const double ram = PhysicalRamBytes();
    const double comm_bytes = 4.0 * static_cast<double>(f.max_bytes) * ranks;
    if (ram > 0 && comm_bytes > ram / 2) {
      return absl::InvalidArgumentError(StrCat("--ranks ", ranks, " × --max-bytes ", f.max_bytes, " needs about ",
                                               FormatBytes(comm_bytes), " for the collective buffers, more than half of this host's ",
                                               FormatBytes(ram), "; lower --max-bytes or --ranks"));
    }
  }
  HS_ASSIGN_OR_RETURN(runtime::DataSource data, runtime::DataSource::Synthetic(spec, g, /*seed=*/0));
  HS_ASSIGN_OR_RETURN(const runtime::DeviceProfile p, backend.Profile(g, data, o));

  Measured m;
  // In-process ranks share the device's memory.
  m.target = Target(like, ranks, p.memory_bytes > 0 ? p.memory_bytes / ranks : 1.0, p.cluster_type);
  m.label = p.label;
  m.ranks_label = fmt::format("{} {}", ranks, caps.profile_ranks);
  if (p.copy_bytes_per_s > 0) {
    m.extra = fmt::format("{:<13} {:.4g} GB/s device-to-device (bytes read + written; {})", p.label + " copy:",
                          p.copy_bytes_per_s / 1e9, p.device_name);
  }
  costmodel::KernelTimes times;
  times.seconds = p.node_seconds;
  times.backward = p.node_backward;
  times.optimizer_s = p.optimizer_s;
  double total_s = 0;
  for (double s : times.seconds) total_s += s;
  if (!(total_s > 0)) {
    return absl::InvalidArgumentError(StrCat("--model ", spec.name, ": its kernels took no measurable ", p.clock,
                                             "; use a larger model or --batch"));
  }
  FitOperands(g, p, m);
  times.operand_bytes_per_s = m.operands.bytes_per_s;
  HS_ASSIGN_OR_RETURN(m.compute, Classify(g, times, m.target));
  m.forward_seconds = p.node_forward_seconds;
  // Where the plan executor computes slower than the kernels alone, so do the emulated devices.
  m.compute.flops_per_s /= p.compute_scale;
  m.compute.bytes_per_s /= p.compute_scale;
  m.compute.operand_bytes_per_s /= p.compute_scale;
  if (!p.comm_description.empty()) fmt::print(stderr, "profile: collectives on {}\n", p.comm_description);
  for (const runtime::CollectiveTime& c : p.collectives) {
    int op = 0;
    while (op < kCommOps && c.op != kCommOpTable[op].name) ++op;
    if (op == kCommOps) return absl::InternalError(StrCat("the ", backend.name(), " backend timed an unknown collective '", c.op, "'"));
    m.samples.push_back(MakeSample(op, c.lengths, c.seconds));
  }
  return m;
}

absl::Status RunProfile(const ProfileFlags& f) {
  if (f.out.empty()) return absl::InvalidArgumentError("-o is required: the cluster file to write");
  HS_ASSIGN_OR_RETURN(const runtime::Backend* backend, BackendFlag(f.backend));
  if (!f.precision.empty()) HS_RETURN_IF_ERROR(CheckPrecisionFlag(*backend, f.precision, /*given=*/true));
  HS_RETURN_IF_ERROR(CheckOutputPath("-o", f.out));  // fail before minutes of measuring, not after
  if (f.repeats < 1) return absl::InvalidArgumentError(StrCat("--repeats ", f.repeats, "; expected at least 1"));
  if (f.max_bytes < 4) {
    return absl::InvalidArgumentError(StrCat("--max-bytes ", f.max_bytes, "; expected at least 4 (one float)"));
  }
  HS_RETURN_IF_ERROR(RequireAvailable(*backend));
  HS_ASSIGN_OR_RETURN(ir::ModelSpec spec, f.model.Resolve());
  HS_ASSIGN_OR_RETURN(ir::Graph g, ir::BuildModel(spec));
  std::optional<costmodel::Cluster> like;
  if (!f.like.empty()) {
    absl::StatusOr<costmodel::Cluster> c = costmodel::ReadClusterFile(f.like);
    if (!c.ok()) return absl::InvalidArgumentError(StrCat("--like: ", c.status().message()));
    like = std::move(*c);
  }
  int ranks = f.ranks;
  if (ranks == -1) ranks = like ? std::clamp(like->size(), 2, kMaxDefaultRanks) : kDefaultRanks;
  const int max_ranks = backend->capabilities().max_profile_ranks;
  if (ranks < 2 || ranks > max_ranks) {
    return absl::InvalidArgumentError(StrCat("--ranks ", ranks, "; expected 2 to ", max_ranks, " (the collectives are timed over that many ",
                                             backend->capabilities().profile_ranks, ")"));
  }

  HS_ASSIGN_OR_RETURN(const Measured m, Measure(*backend, f, spec, g, like, ranks));
  const costmodel::KernelRates& host = m.compute;
  std::vector<costmodel::LinkSample> samples;
  for (const CommSample& c : m.samples) {
    fmt::print(stderr, "profile:   {:<10} {:>12}  {:>10.1f} us\n", c.op, FormatBytes(c.sample.bytes), c.sample.seconds * 1e6);
    samples.push_back(c.sample);
  }
  const costmodel::LinkFit fit = costmodel::FitLink(samples);

  // 3. The cluster file.
  costmodel::Cluster out =
      costmodel::EmulatedCluster(m.target, host.flops_per_s, host.bytes_per_s, fit.link(), host.operand_bytes_per_s);
  if (f.keep_links) {
    if (!like) return absl::InvalidArgumentError("--keep-links needs --like (whose links to keep)");
    out.inter_node = like->inter_node;
    for (size_t j = 0; j < out.nodes.size(); ++j) out.nodes[j].intra = like->nodes[j].intra;
  }
  // Forward-only rates for inference placement (place, infer), from forward-only passes (not
  // scaled by the training executor's overhead: infer runs the kernels directly).
  costmodel::ForwardRates fwd;
  if (!m.forward_seconds.empty()) {
    HS_ASSIGN_OR_RETURN(fwd, costmodel::ForwardRatesOnCluster(g, m.forward_seconds, out));
    costmodel::SetForwardRates(out, fwd, host.flops_per_s, host.bytes_per_s);
  }
  const std::string text = costmodel::ClusterToJson(out);
  HS_RETURN_IF_ERROR(costmodel::ParseCluster(text, f.out).status());  // what we write must load
  HS_RETURN_IF_ERROR(WriteFileAtomically(f.out, text));

  // 4. Summary.
  fmt::print("{:<13} {:.4g} GFLOP/s GEMM-class ({} compute-bound nodes, {:.3f} ms/step){}\n", m.label + " compute:",
             host.flops_per_s / 1e9, host.compute_nodes, (host.compute_s + host.operand_s) * 1e3,
             host.flops_fallback ? "; no compute-bound node: all nodes' FLOPs over their time" : "");
  fmt::print("{:<13} {:.4g} GB/s ({} memory-bound nodes, {:.3f} ms/step){}\n", m.label + " memory:", host.bytes_per_s / 1e9,
             host.memory_nodes, host.memory_s * 1e3,
             host.bandwidth_fallback ? "; no memory-bound node: all nodes' bytes over their time" : "");
  if (host.operand_bytes_per_s > 0) {
    fmt::print("{:<13} {:.4g} GB/s GEMM operand streaming ({} GEMM-class nodes timed alone at all rows and 1/{:.0f}: "
               "{:.3f} of their {:.3f} ms does not shrink with the rows: their weights, which a batch shard streams "
               "whole)\n",
               m.label + " operands:", host.operand_bytes_per_s / 1e9, m.operands.nodes, 1 / m.rows_ratio,
               m.operands.fixed_s * 1e3, m.operands.node_s * 1e3);
  } else if (!m.operands_skipped.empty()) {
    fmt::print("{:<13} not priced apart ({})\n", m.label + " operands:", m.operands_skipped);
  }
  if (fwd.flops_per_s > 0 || fwd.bytes_per_s > 0) {
    fmt::print("{:<13} {:.4g} GFLOP/s, {:.4g} GB/s ({} compute-bound, {} memory-bound nodes, forward alone; "
               "inference placement prices with these)\n",
               m.label + " forward:", fwd.flops_per_s / 1e9, fwd.bytes_per_s / 1e9, fwd.compute_nodes, fwd.memory_nodes);
  }
  if (!m.extra.empty()) fmt::print("{}\n", m.extra);
  fmt::print("link ({}, {} samples): latency {:.3g} us, bandwidth {:.4g} GB/s (rms relative error {:.0f}%)\n",
             m.ranks_label, m.samples.size(), fit.alpha * 1e6, 1.0 / fit.beta / 1e9, fit.rms_relative * 100);
  if (static_cast<double>(f.max_bytes) < costmodel::kBetaMinBytes) {
    fmt::print("  warning: no collective of at least 256 KiB was timed (--max-bytes {}): this bandwidth is fitted on "
               "latency-bound sizes and is not a measurement of it{}; use --max-bytes 262144 or more\n",
               f.max_bytes, f.keep_links ? " (not written: --keep-links)" : "");
  }
  if (like) {
    for (const costmodel::DeviceClass& k : out.Classes()) {
      const costmodel::Device& d = out.devices[static_cast<size_t>(k.devices.front())];
      fmt::print("  {:<12} x{:<4} {:.4g} GFLOP/s  {:.4g} GB/s  ({:.3g} of this {})\n", d.type, k.devices.size(),
                 d.flops / 1e9, d.memory_bandwidth / 1e9, d.flops / host.flops_per_s, m.label);
    }
  }
  fmt::print("wrote {} (cluster '{}', {} devices, fingerprint {})\n", f.out, out.name, out.size(), out.Fingerprint());
  return absl::OkStatus();
}

}  // namespace

Runner RegisterProfile(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "profile",
      "Measure this host (kernels, thread collectives) or a GPU (--backend cuda) and write a cluster file with it as "
      "the fastest device");
  auto f = std::make_shared<ProfileFlags>();
  cmd->add_option("--model", f->model.name,
                  "model whose kernels are timed: built-in (" + ir::ModelNames() + ") or a file (.onnx, graph .json)");
  f->model.AddFlags(*cmd);
  cmd->add_option("--like", f->like,
                  "emulate this cluster: its devices and nodes, FLOP/s and bandwidth = this host × (flops / fastest "
                  "flops) (default: one type 'host')")
      ->type_name("CLUSTER.json");
  cmd->add_option("--ranks", f->ranks,
                  "thread ranks for the collectives and devices without --like (default: --like's device count, at "
                  "most 64; else 4)");
  cmd->add_option("--repeats", f->repeats, "timed training steps and timed repeats per collective size, after one warm-up")
      ->capture_default_str();
  cmd->add_option("--max-bytes", f->max_bytes,
                  "largest collective timed, in bytes (sizes 16 B, 64 B, ... up to this; the link bandwidth is fitted on "
                  "the sizes of at least 256 KiB)")
      ->capture_default_str();
  cmd->add_option("--backend", f->backend,
                  "cpu: this host's kernels and thread collectives; cuda: GPU 0's kernels and collectives among "
                  "virtual GPUs of it (needs a CUDA build and a visible GPU)")
      ->capture_default_str();
  cmd->add_option("--precision", f->precision, "with --backend cuda: GEMM arithmetic fp32 (default), tf32 or bf16");
  cmd->add_option("-o,--out", f->out, "cluster file to write")->required()->type_name("OUT.json");
  cmd->add_flag("--keep-links", f->keep_links,
                "with --like: write --like's links instead of the thread ranks' fit (then measure them with "
                "profile --network)");
  cmd->add_flag("--network", f->network,
                "measure the links instead: intra-node, inter-node and shared-NIC collectives over MPI on the emulated "
                "cluster of --cluster (or under mpirun), written into a copy of it with α–β fits and tables");
  cmd->add_option("--cluster", f->net.cluster, "with --network: the cluster to measure")->type_name("FILE");
  cmd->add_option("--network-name", f->net.network_name,
                  "with --network: use the emulated cluster of this name if it is up, else bring it up under this name");
  cmd->add_option("--dilation", f->net.dilation, "with --network: time dilation K (default: printed)")
      ->type_name("K")
      ->check(DilationFactor());
  cmd->add_option("--mpirun", f->net.mpirun, "with --network: Open MPI's mpirun")->capture_default_str();
  return [f]() -> absl::Status {
    if (f->network) {
      if (!f->model.name.empty() || !f->like.empty() || f->keep_links) {
        return absl::InvalidArgumentError("profile --network measures links only; drop --model, --like and --keep-links");
      }
      NetworkProfileFlags n = f->net;
      n.out = f->out;
      n.repeats = f->repeats;
      n.max_bytes = f->max_bytes == kDefaultMaxBytes ? n.max_bytes : f->max_bytes;
      return ProfileNetwork(n);
    }
    if (f->model.name.empty()) return absl::InvalidArgumentError("profile: --model is required (or --network)");
    if (!f->net.cluster.empty()) return absl::InvalidArgumentError("--cluster is for profile --network");
    return RunProfile(*f);
  };
}

}  // namespace hetsynth::cli
