// `hetsynth profile`: measure this host and write a cluster file in which this host is the
// fastest device, so that the cost model's predictions compare with the CPU emulation of a
// mixed cluster (runtime/src/executor.cc: each rank's kernel thread CPU time stretched by
// max_flops / flops_i, a collective on the threads communicator charged by the thread CPU time
// it takes, virtual clocks synchronized before it). docs/cluster-format.md, "Profiling this host".
// This file measures, prints and writes; what the measurements mean for the cost model (the
// classification of nodes, the α–β fit, the emulated cluster) is costmodel/calibrate.h.
//
//   hetsynth profile --model gpt --small --like examples/clusters/mixed-4.json -o emulated.json
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>

#include <fmt/format.h>

#include "commands.h"
#include "hetsynth/costmodel/calibrate.h"
#include "hetsynth/costmodel/cluster.h"
#include "hetsynth/costmodel/cost.h"
#include "hetsynth/instr/program.h"
#include "hetsynth/instr/rules.h"
#include "hetsynth/ir/status.h"
#include "hetsynth/runtime/collectives.h"
#include "hetsynth/runtime/comm.h"
#include "hetsynth/runtime/cpu_time.h"
#include "hetsynth/runtime/cuda.h"
#include "hetsynth/runtime/cuda_backend.h"
#include "hetsynth/runtime/data.h"
#include "hetsynth/runtime/executor.h"
#include "hetsynth/runtime/trainer.h"

namespace hetsynth::cli {
namespace {

constexpr int kDefaultRanks = 4;          // without --like
constexpr int kMaxDefaultRanks = 64;      // default --ranks from a --like cluster is capped here
constexpr int kMaxRanks = 1024;
constexpr int64_t kDefaultMaxBytes = int64_t{16} << 20;  // 4M floats

struct ProfileFlags {
  ModelOptions model;
  std::string like, out;
  std::string backend = "cpu";  // cpu | cuda
  std::string precision;        // cuda only; empty: fp32
  int ranks = 0;  // 0: the --like cluster's device count (at most kMaxDefaultRanks), else 4
  int repeats = 5;
  int64_t max_bytes = kDefaultMaxBytes;
};

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

double PhysicalRamBytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<double>(pages) * static_cast<double>(page) : 0.0;
}

std::string Bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  return fmt::format("{:.4g} {}", b, units[u]);
}

// ---- 1. kernels ------------------------------------------------------------------------------

// Runs 1 warm-up + `repeats` timed training steps of runtime::Trainer on this thread, timing
// each node's forward + backward kernel calls (Trainer::SetKernelTimer: thread CPU time) and the
// Adam update of every parameter, and takes medians over the timed steps.
absl::StatusOr<costmodel::KernelTimes> TimeKernels(const ir::ModelSpec& spec, const ir::Graph& g, int repeats) {
  HS_ASSIGN_OR_RETURN(runtime::DataSource data, runtime::DataSource::Synthetic(spec, g, /*seed=*/0));
  HS_ASSIGN_OR_RETURN(auto trainer, runtime::Trainer::Create(g, runtime::OptimizerConfig{}, /*seed=*/0));
  runtime::Optimizer optimizer(runtime::OptimizerConfig{});  // Adam, the default
  const size_t num_nodes = g.nodes().size();
  std::vector<double> t(num_nodes, 0.0);
  costmodel::KernelTimes result;
  result.backward.assign(num_nodes, false);
  trainer->SetKernelTimer([&](ir::NodeId node, bool backward, double seconds) {
    t[static_cast<size_t>(node)] += seconds;
    if (backward) result.backward[static_cast<size_t>(node)] = true;
  });
  std::vector<std::vector<double>> samples(num_nodes);
  std::vector<double> optimizer_samples;
  for (int step = 0; step <= repeats; ++step) {  // step 0 warms up
    HS_ASSIGN_OR_RETURN(runtime::Batch batch, data.Get(step));
    std::fill(t.begin(), t.end(), 0.0);
    std::map<std::string, runtime::Tensor> grads;
    HS_RETURN_IF_ERROR(trainer->Gradients(batch, &grads).status());
    // The optimizer update, memory-bound work the cost model charges per parameter.
    const double o0 = runtime::ThreadCpuSeconds();
    optimizer.Step(trainer->parameters(), grads);
    const double opt_s = runtime::ThreadCpuSeconds() - o0;
    if (step > 0) {
      for (size_t n = 0; n < num_nodes; ++n) samples[n].push_back(t[n]);
      optimizer_samples.push_back(opt_s);
    }
  }
  for (size_t n = 0; n < num_nodes; ++n) result.seconds.push_back(Median(samples[n]));
  result.optimizer_s = Median(optimizer_samples);
  return result;
}

// ---- 2. collectives --------------------------------------------------------------------------

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

// For each size of CollectiveSizes, split over the ranks in proportion to `shares` (the plan
// ratios this cluster will get: like's relative speeds) as a plan's tensors are:
// Barrier, then time through the executor's own code path (runtime/collectives.h, packing
// included) a grouped all-gather, after another Barrier a grouped reduce-scatter, and after a
// third an all-reduce of the whole size; per size and op the median over `repeats` (after one
// warm-up) of the slowest rank's time. Time is each rank's thread CPU time, the clock the
// executor charges a collective with when it emulates devices on thread ranks
// (runtime/src/executor.cc, Communicate): waiting for the other threads sleeps on a condition
// variable and is not counted, the copying and summing a rank does is.
absl::StatusOr<std::vector<CommSample>> TimeCollectives(int n, int repeats, int64_t max_bytes,
                                                        const std::vector<double>& shares) {
  constexpr int kOps = kCommOps;
  const std::vector<int64_t> sizes = CollectiveSizes(max_bytes);
  const size_t num_sizes = sizes.size(), per_size = static_cast<size_t>(repeats + 1);
  // seconds[((size · kOps + op) · per_size + rep) · n + rank], each rank writing its own slots.
  std::vector<double> seconds(num_sizes * kOps * per_size * static_cast<size_t>(n), 0.0);
  auto slot = [&](size_t s, int op, int rep, int rank) -> double& {
    return seconds[((s * kOps + static_cast<size_t>(op)) * per_size + static_cast<size_t>(rep)) * n + rank];
  };
  HS_RETURN_IF_ERROR(runtime::RunThreadRanks(n, [&](runtime::Communicator& comm) -> absl::Status {
    for (size_t s = 0; s < num_sizes; ++s) {
      const std::vector<int64_t> lengths = instr::RoundShares(shares, sizes[s]);
      const ir::Shape full = {sizes[s]};
      runtime::Tensor piece({lengths[static_cast<size_t>(comm.rank())]}, 1.0f), whole(full, 1.0f);
      for (int rep = 0; rep <= repeats; ++rep) {
        HS_RETURN_IF_ERROR(comm.Barrier());
        double t0 = runtime::ThreadCpuSeconds();
        HS_RETURN_IF_ERROR(runtime::AllGatherAlong(comm, piece, full, 0, lengths, runtime::CommImpl::kGrouped).status());
        slot(s, 0, rep, comm.rank()) = runtime::ThreadCpuSeconds() - t0;
        HS_RETURN_IF_ERROR(comm.Barrier());
        t0 = runtime::ThreadCpuSeconds();
        HS_RETURN_IF_ERROR(runtime::ReduceScatterAlong(comm, whole, 0, lengths, runtime::CommImpl::kGrouped).status());
        slot(s, 1, rep, comm.rank()) = runtime::ThreadCpuSeconds() - t0;
        HS_RETURN_IF_ERROR(comm.Barrier());
        runtime::Tensor data = whole;
        t0 = runtime::ThreadCpuSeconds();
        HS_RETURN_IF_ERROR(comm.AllReduce(data.ptr(), data.numel()));
        slot(s, 2, rep, comm.rank()) = runtime::ThreadCpuSeconds() - t0;
        HS_RETURN_IF_ERROR(comm.Barrier());
        t0 = runtime::ThreadCpuSeconds();
        HS_RETURN_IF_ERROR(runtime::AllGatherAlong(comm, piece, full, 0, lengths, runtime::CommImpl::kPadded).status());
        slot(s, 3, rep, comm.rank()) = runtime::ThreadCpuSeconds() - t0;
      }
    }
    return absl::OkStatus();
  }));
  std::vector<CommSample> out;
  for (size_t s = 0; s < num_sizes; ++s) {
    const std::vector<int64_t> lengths = instr::RoundShares(shares, sizes[s]);
    for (int op = 0; op < kOps; ++op) {
      std::vector<double> worst;
      for (int rep = 1; rep <= repeats; ++rep) {  // rep 0 warms up
        double w = 0;
        for (int r = 0; r < n; ++r) w = std::max(w, slot(s, op, rep, r));
        worst.push_back(w);
      }
      out.push_back(MakeSample(op, lengths, Median(worst)));
    }
  }
  return out;
}

// What a backend measured, in the form the shared code below writes the cluster file from.
struct Measured {
  costmodel::KernelRates compute;  // the device's rates (classified; CPU: calibrated against the executor)
  std::vector<CommSample> samples;
  costmodel::EmulationTarget target;  // --like or --ranks devices; base "host" or "gpu"
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

absl::StatusOr<Measured> MeasureCpu(const ProfileFlags& f, const ir::ModelSpec& spec, const ir::Graph& g,
                                    const std::optional<costmodel::Cluster>& like, int ranks) {
  const double ram = PhysicalRamBytes();
  // Per rank the buffers of the largest size: all-gather send + receive + padded staging, the
  // all-reduce data and its chunk (about 3.5 × --max-bytes); keep them within half the RAM.
  const double comm_bytes = 4.0 * static_cast<double>(f.max_bytes) * ranks;
  if (ram > 0 && comm_bytes > ram / 2) {
    return absl::InvalidArgumentError(StrCat("--ranks ", ranks, " × --max-bytes ", f.max_bytes, " needs about ",
                                             Bytes(comm_bytes), " for the collective buffers, more than half of this host's ",
                                             Bytes(ram), "; lower --max-bytes or --ranks"));
  }
  Measured m;
  m.target = Target(like, ranks, ram > 0 ? ram / ranks : 1.0, "host");
  m.label = "host";
  m.ranks_label = fmt::format("{} thread ranks", ranks);

  // 1. Kernels.
  fmt::print(stderr, "profile: timing the kernels of {} on 1 thread: 1 warm-up + {} training step{}\n",
             spec.ToString(), f.repeats, f.repeats == 1 ? "" : "s");
  HS_ASSIGN_OR_RETURN(costmodel::KernelTimes times, TimeKernels(spec, g, f.repeats));
  double total_s = 0;
  for (double s : times.seconds) total_s += s;
  if (!(total_s > 0)) {
    return absl::InvalidArgumentError(StrCat("--model ", spec.name,
                                             ": its kernels took no measurable CPU time; use a larger model or --batch"));
  }
  costmodel::KernelRates& host = m.compute;
  HS_ASSIGN_OR_RETURN(host, Classify(g, times, m.target));

  // The executor's kernels run among its own bookkeeping and among the other ranks' threads
  // (collectives, wake-ups) on this host's few cores, which slows them down; scale both rates so
  // that the cost model's single-device step is the executor's emulated compute time for it,
  // measured on N ranks that each run the whole model (the all-replicated plan).
  double calibration = 1.0;
  {
    instr::Plan plan;
    instr::Program& prog = plan.program;
    prog.num_devices = ranks;
    prog.ratios = {std::vector<double>(static_cast<size_t>(ranks), 1.0 / ranks)};
    for (int r = 0; r < ranks; ++r) plan.devices.push_back(fmt::format("host{}", r));
    auto add = [&](instr::Instruction in) -> absl::Status {
      HS_RETURN_IF_ERROR(instr::DeriveTriple(g, in));
      prog.instructions.push_back(std::move(in));
      return absl::OkStatus();
    };
    for (size_t v = 0; v < g.values().size(); ++v) {
      const ir::ValueKind kind = g.values()[v].kind;
      if (kind == ir::ValueKind::kActivation) continue;
      instr::Instruction in;
      in.kind = kind == ir::ValueKind::kInput ? instr::InstrKind::kPlaceInput : instr::InstrKind::kPlaceParameter;
      in.tensor = static_cast<ir::ValueId>(v);
      HS_RETURN_IF_ERROR(add(in));
    }
    for (size_t n = 0; n < g.nodes().size(); ++n) {
      instr::Instruction in;
      in.kind = instr::InstrKind::kCompute;
      in.node = static_cast<ir::NodeId>(n);
      in.rule = "replicated";
      HS_RETURN_IF_ERROR(add(in));
    }
    HS_RETURN_IF_ERROR(instr::BuildSplitGroups(g, prog));
    HS_ASSIGN_OR_RETURN(runtime::DataSource data, runtime::DataSource::Synthetic(spec, g, /*seed=*/0));
    std::vector<double> steps;
    HS_RETURN_IF_ERROR(runtime::RunThreadRanks(ranks, [&](runtime::Communicator& comm) -> absl::Status {
      HS_ASSIGN_OR_RETURN(auto ex, runtime::Executor::Create(g, plan, comm, runtime::ExecutorOptions{}));
      for (int i = 0; i <= f.repeats; ++i) {
        HS_ASSIGN_OR_RETURN(runtime::Batch batch, data.Get(i));
        HS_ASSIGN_OR_RETURN(runtime::StepMetrics sm, ex->Step(batch));
        // Step 0 warms up. Rank 0 runs the whole step (forward, backward, update); with a
        // replicated loss the others have no gradient to run backward on.
        if (i > 0 && comm.rank() == 0) steps.push_back(sm.ranks.at(0).compute_s);
      }
      return absl::OkStatus();
    }));
    const double kernels = total_s + times.optimizer_s;
    calibration = Median(steps) / kernels;
    fmt::print(stderr, "profile: the executor computes a step in {:.3f} ms on {} ranks, {:.2f}x its kernels' medians; rates scaled by that\n",
               Median(steps) * 1e3, ranks, calibration);
    host.flops_per_s /= calibration;
    host.bytes_per_s /= calibration;
  }

  // 2. Collectives.
  int64_t largest_bytes = 4;
  while (largest_bytes <= f.max_bytes / 4) largest_bytes *= 4;
  fmt::print(stderr, "profile: timing grouped and padded all-gather, grouped reduce-scatter (shards by device speed) and all-reduce "
                     "on {} thread ranks, 16 B to {}, 1 warm-up + {} repeat{} per size\n",
             ranks, Bytes(static_cast<double>(largest_bytes)), f.repeats,
             f.repeats == 1 ? "" : "s");
  HS_ASSIGN_OR_RETURN(m.samples, TimeCollectives(ranks, f.repeats, f.max_bytes, Shares(like, ranks)));
  return m;
}

// The GPU: runtime::ProfileCuda on GPU 0 — per node forward + backward wall-clock seconds of the
// GPU trainer (waiting for the GPU around each operator), the optimizer update, a device-to-device
// copy, and the collectives on `ranks` virtual GPUs of this GPU (SM shares and shards by device
// speed) — then the same classification and samples as the CPU's. No executor calibration: the
// GPU plan executor, too, charges wall clock after waiting for the GPU around each instruction.
absl::StatusOr<Measured> MeasureCuda(const ProfileFlags& f, const ir::ModelSpec& spec, const ir::Graph& g,
                                     const std::optional<costmodel::Cluster>& like, int ranks) {
  runtime::CudaProfileOptions o;
  o.device = 0;
  o.precision = f.precision.empty() ? "fp32" : f.precision;
  o.repeats = f.repeats;
  o.speeds = Shares(like, ranks);
  const std::vector<int64_t> sizes = CollectiveSizes(f.max_bytes);
  for (int64_t size : sizes) o.collectives.push_back(instr::RoundShares(o.speeds, size));
  HS_ASSIGN_OR_RETURN(runtime::DataSource data, runtime::DataSource::Synthetic(spec, g, /*seed=*/0));
  HS_ASSIGN_OR_RETURN(runtime::Batch batch, data.Get(0));

  fmt::print(stderr, "profile: timing on GPU 0 ({}, {}) the kernels of {}: 1 warm-up + {} training step{}; the optimizer "
                     "update; a device-to-device copy of up to {}\n",
             runtime::ProbeCuda().first_name, o.precision, spec.ToString(), f.repeats, f.repeats == 1 ? "" : "s",
             Bytes(static_cast<double>(o.copy_bytes)));
  fmt::print(stderr, "profile: then grouped and padded all-gather, grouped reduce-scatter and all-reduce on {} virtual GPUs "
                     "(SMs and shards by device speed), {} to {}, 1 warm-up + {} repeat{} per size\n",
             ranks, Bytes(4.0 * static_cast<double>(sizes.front())), Bytes(4.0 * static_cast<double>(sizes.back())),
             f.repeats, f.repeats == 1 ? "" : "s");
  absl::StatusOr<runtime::CudaProfile> p = runtime::ProfileCuda(g, batch, o);
  HS_RETURN_IF_ERROR(p.status());

  Measured m;
  m.target = Target(like, ranks, p->memory_bytes / ranks, "gpu");  // the virtual GPUs share the one GPU's memory
  m.label = "GPU";
  m.ranks_label = fmt::format("{} virtual GPUs", ranks);
  m.extra = fmt::format("GPU copy:     {:.4g} GB/s device-to-device (bytes read + written; {})", p->copy_bytes_per_s / 1e9,
                        p->device_name);
  costmodel::KernelTimes times;
  times.seconds = p->node_seconds;
  times.backward = p->node_backward;
  times.optimizer_s = p->optimizer_s;
  double total_s = 0;
  for (double s : times.seconds) total_s += s;
  if (!(total_s > 0)) {
    return absl::InvalidArgumentError(StrCat("--model ", spec.name, ": its kernels took no measurable time on the GPU"));
  }
  HS_ASSIGN_OR_RETURN(m.compute, Classify(g, times, m.target));
  fmt::print(stderr, "profile: collectives on {}\n", p->comm_description);
  for (const runtime::CudaCollectiveTime& c : p->collectives) {
    int op = 0;
    while (op < kCommOps && c.op != kCommOpTable[op].name) ++op;
    if (op == kCommOps) return absl::InternalError(StrCat("ProfileCuda timed an unknown collective '", c.op, "'"));
    m.samples.push_back(MakeSample(op, c.lengths, c.seconds));
  }
  return m;
}

absl::Status RunProfile(const ProfileFlags& f) {
  if (f.out.empty()) return absl::InvalidArgumentError("-o is required: the cluster file to write");
  if (f.backend != "cpu" && f.backend != "cuda") {
    return absl::InvalidArgumentError(StrCat("--backend ", f.backend, "; expected cpu or cuda"));
  }
  const bool cuda = f.backend == "cuda";
  if (!f.precision.empty() && !cuda) {
    return absl::InvalidArgumentError(StrCat("--precision ", f.precision, " needs --backend cuda (the CPU computes in fp32)"));
  }
  if (!f.precision.empty() && f.precision != "fp32" && f.precision != "tf32" && f.precision != "bf16") {
    return absl::InvalidArgumentError(StrCat("--precision ", f.precision, "; expected fp32, tf32 or bf16"));
  }
  {
    // Fail before minutes of measuring, not after.
    const std::filesystem::path dir = std::filesystem::path(f.out).parent_path();
    std::error_code ec;
    if (!dir.empty() && !std::filesystem::is_directory(dir, ec)) {
      return absl::InvalidArgumentError(StrCat("-o '", f.out, "': directory '", dir.string(), "' does not exist"));
    }
  }
  if (f.repeats < 1) return absl::InvalidArgumentError(StrCat("--repeats ", f.repeats, "; expected at least 1"));
  if (f.max_bytes < 4) {
    return absl::InvalidArgumentError(StrCat("--max-bytes ", f.max_bytes, "; expected at least 4 (one float)"));
  }
  if (cuda) {
    HS_RETURN_IF_ERROR(RequireGpu());
  }
  HS_ASSIGN_OR_RETURN(ir::ModelSpec spec, f.model.Resolve());
  HS_ASSIGN_OR_RETURN(ir::Graph g, ir::BuildModel(spec));
  std::optional<costmodel::Cluster> like;
  if (!f.like.empty()) {
    absl::StatusOr<costmodel::Cluster> c = costmodel::ReadClusterFile(f.like);
    if (!c.ok()) return absl::InvalidArgumentError(StrCat("--like: ", c.status().message()));
    like = std::move(*c);
  }
  int ranks = f.ranks;
  if (ranks == 0) ranks = like ? std::clamp(like->size(), 2, kMaxDefaultRanks) : kDefaultRanks;
  const int max_ranks = cuda ? kMaxDefaultRanks : kMaxRanks;  // virtual GPUs: at most 64
  if (ranks < 2 || ranks > max_ranks) {
    return absl::InvalidArgumentError(StrCat("--ranks ", ranks, "; expected 2 to ", max_ranks, " (the collectives are timed over that many ",
                                             cuda ? "virtual GPUs" : "thread ranks", ")"));
  }

  HS_ASSIGN_OR_RETURN(const Measured m, cuda ? MeasureCuda(f, spec, g, like, ranks) : MeasureCpu(f, spec, g, like, ranks));
  const costmodel::KernelRates& host = m.compute;
  std::vector<costmodel::LinkSample> samples;
  for (const CommSample& c : m.samples) {
    fmt::print(stderr, "profile:   {:<10} {:>12}  {:>10.1f} us\n", c.op, Bytes(c.sample.bytes), c.sample.seconds * 1e6);
    samples.push_back(c.sample);
  }
  const costmodel::LinkFit fit = costmodel::FitLink(samples);

  // 3. The cluster file.
  const costmodel::Cluster out = costmodel::EmulatedCluster(m.target, host.flops_per_s, host.bytes_per_s, fit.link());
  const std::string text = costmodel::ClusterToJson(out);
  HS_RETURN_IF_ERROR(costmodel::ParseCluster(text, f.out).status());  // what we write must load
  std::ofstream file(f.out, std::ios::binary | std::ios::trunc);
  file << text;
  file.close();
  if (!file) return absl::InvalidArgumentError(StrCat("-o '", f.out, "': cannot write the cluster file"));

  // 4. Summary.
  fmt::print("{:<13} {:.4g} GFLOP/s GEMM-class ({} compute-bound nodes, {:.3f} ms/step){}\n", m.label + " compute:",
             host.flops_per_s / 1e9, host.compute_nodes, host.compute_s * 1e3,
             host.flops_fallback ? "; no compute-bound node: all nodes' FLOPs over their time" : "");
  fmt::print("{:<13} {:.4g} GB/s ({} memory-bound nodes, {:.3f} ms/step){}\n", m.label + " memory:", host.bytes_per_s / 1e9,
             host.memory_nodes, host.memory_s * 1e3,
             host.bandwidth_fallback ? "; no memory-bound node: all nodes' bytes over their time" : "");
  if (!m.extra.empty()) fmt::print("{}\n", m.extra);
  fmt::print("link ({}, {} samples): latency {:.3g} us, bandwidth {:.4g} GB/s (rms relative error {:.0f}%)\n",
             m.ranks_label, m.samples.size(), fit.alpha * 1e6, 1.0 / fit.beta / 1e9, fit.rms_relative * 100);
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
  cmd->add_option("--model", f->model.name, "model whose kernels are timed (" + ir::ModelNames() + ")")->required();
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
  cmd->add_option("--max-bytes", f->max_bytes, "largest collective timed, in bytes (sizes 4 B, 16 B, ... up to this)")
      ->capture_default_str();
  cmd->add_option("--backend", f->backend,
                  "cpu: this host's kernels and thread collectives; cuda: GPU 0's kernels and collectives among "
                  "virtual GPUs of it (needs a CUDA build and a visible GPU)")
      ->capture_default_str();
  cmd->add_option("--precision", f->precision, "with --backend cuda: GEMM arithmetic fp32 (default), tf32 or bf16");
  cmd->add_option("-o,--out", f->out, "cluster file to write")->required()->type_name("OUT.json");
  return [f]() { return RunProfile(*f); };
}

}  // namespace hetsynth::cli
