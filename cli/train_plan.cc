// `hetsynth train --plan PLAN`: run a synthesized plan across a backend's ranks — in-process
// threads or virtual GPUs, or one process per rank under mpirun / srun — with the flags of
// single-device training.
#include <unistd.h>

#include <csignal>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include "absl/cleanup/cleanup.h"
#include "hetsynth/costmodel/cluster.h"
#include "hetsynth/base/status.h"
#include "backend_flags.h"
#include "hetsynth/runtime/backend.h"
#include "hetsynth/runtime/comm.h"
#include "hetsynth/runtime/data.h"
#include "hetsynth/runtime/executor.h"
#include "hetsynth/runtime/pacer.h"
#include "train.h"

namespace hetsynth::cli {
namespace {

// Set by mpirun (Open MPI), by MPICH/Intel MPI and by srun's PMI/PMIx plugins.
bool LaunchedByMpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"}) {
    if (std::getenv(var) != nullptr) return true;
  }
  return false;
}

// The rank the launcher gave this process (0 when not under one).
int RankFromLauncher() {
  for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"}) {
    if (const char* v = std::getenv(var)) return std::atoi(v);
  }
  return 0;
}

// The process count the launcher started (0 when unknown or not under one).
int SizeFromLauncher() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"}) {
    if (const char* v = std::getenv(var); v != nullptr && LaunchedByMpi()) return std::atoi(v);
  }
  return 0;
}

std::string Ms(double s) { return fmt::format("{:.2f} ms", s * 1e3); }

// The plan needs one rank per device; `ranks` is what this run has.
absl::Status RankCountError(const std::string& plan_path, const instr::Plan& plan, int ranks, bool mpi) {
  std::string names;
  for (const std::string& d : plan.devices) names += (names.empty() ? "" : ", ") + d;
  return absl::InvalidArgumentError(StrCat("plan '", plan_path, "' is for ", plan.devices.size(), " devices (", names,
                                           ") but ", mpi ? "the MPI launcher started " : "--ranks asks for ", ranks,
                                           mpi ? " processes" : " ranks", "; run one rank per device"));
}

struct Mean {
  double sum = 0;
  int n = 0;
  void Add(double x) { sum += x, ++n; }
  double get() const { return n > 0 ? sum / n : 0; }
};

// Test hook: HETSYNTH_TEST_KILL_RANK=R[:STEP[:kill]] makes rank R die as optimizer step STEP
// (default 2) starts, while the other ranks are already inside it — a rank that crashes (exit 3
// under a launcher; an exception on threads) or, with ":kill", is killed with SIGKILL (launcher).
void MaybeDie(int rank, int64_t step, bool mpi) {
  const char* spec = std::getenv("HETSYNTH_TEST_KILL_RANK");
  if (spec == nullptr) return;
  int r = -1;
  long s = 2;
  char how[8] = "";
  if (std::sscanf(spec, "%d:%ld:%7s", &r, &s, how) < 1 || r != rank || s != step) return;
  fmt::print(stderr, "rank {}: HETSYNTH_TEST_KILL_RANK: dying in step {}\n", rank, step);
  if (mpi && std::string(how) == "kill") ::raise(SIGKILL);
  if (mpi) std::_Exit(3);
  throw std::runtime_error("killed by HETSYNTH_TEST_KILL_RANK");
}

// Test hook: HETSYNTH_TEST_SNAPSHOT_DELAY_MS=M makes every rank but the one HETSYNTH_TEST_KILL_RANK
// names wait M ms between a snapshot's exchange and its write, so that the dying rank has
// written its own and died while the others are still in that window (elastic.sh, MPI kill).
void MaybeDelaySnapshot(int rank) {
  const char* ms = std::getenv("HETSYNTH_TEST_SNAPSHOT_DELAY_MS");
  if (ms == nullptr) return;
  const char* spec = std::getenv("HETSYNTH_TEST_KILL_RANK");
  int dying = -1;
  if (spec != nullptr && std::sscanf(spec, "%d", &dying) == 1 && dying == rank) return;
  std::this_thread::sleep_for(std::chrono::milliseconds(std::atol(ms)));
}

// One line per event: rank, category, name, start, duration, track, tab-separated.
std::string EventsText(const std::vector<runtime::TraceEvent>& events) {
  std::string out;
  for (const runtime::TraceEvent& e : events) {
    out += fmt::format("{}\t{}\t{}\t{:.9f}\t{:.9f}\t{}\n", e.rank, e.category, e.name, e.start_s, e.duration_s, e.track);
  }
  return out;
}

std::vector<runtime::TraceEvent> ParseEvents(const std::string& text) {
  std::vector<runtime::TraceEvent> out;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t end = text.find('\n', pos);
    std::vector<std::string> f;
    size_t a = pos;
    for (size_t b; (b = text.find('\t', a)) < end;) f.push_back(text.substr(a, b - a)), a = b + 1;
    f.push_back(text.substr(a, end - a));
    if (f.size() == 6) {
      out.push_back({f[2], f[1], std::atoi(f[0].c_str()), std::atof(f[3].c_str()), std::atof(f[4].c_str()),
                     std::atoi(f[5].c_str())});
    }
    pos = end + 1;
  }
  return out;
}

// Every rank's events at every rank: text carried as one float per byte.
absl::StatusOr<std::vector<runtime::TraceEvent>> GatherEvents(runtime::Communicator& comm,
                                                              const std::vector<runtime::TraceEvent>& mine) {
  const std::string text = EventsText(mine);
  const float size[2] = {static_cast<float>(text.size() >> 20), static_cast<float>(text.size() & 0xfffff)};
  std::vector<float> sizes(2 * static_cast<size_t>(comm.size()));
  HS_RETURN_IF_ERROR(comm.AllGatherV(size, sizes.data(), std::vector<int64_t>(static_cast<size_t>(comm.size()), 2),
                                     runtime::CommImpl::kGrouped));
  std::vector<int64_t> counts;
  int64_t total = 0;
  for (int r = 0; r < comm.size(); ++r) {
    counts.push_back((static_cast<int64_t>(sizes[2 * r]) << 20) + static_cast<int64_t>(sizes[2 * r + 1]));
    total += counts.back();
  }
  std::vector<float> send(text.begin(), text.end()), recv(static_cast<size_t>(total));
  for (size_t i = 0; i < text.size(); ++i) send[i] = static_cast<float>(static_cast<unsigned char>(text[i]));
  HS_RETURN_IF_ERROR(comm.AllGatherV(send.data(), recv.data(), counts, runtime::CommImpl::kGrouped));
  std::string all(recv.size(), '\0');
  for (size_t i = 0; i < recv.size(); ++i) all[i] = static_cast<char>(static_cast<unsigned char>(recv[i]));
  return ParseEvents(all);
}

}  // namespace

bool UnderMpiLauncher() { return LaunchedByMpi(); }
int LauncherRank() { return RankFromLauncher(); }

absl::StatusOr<std::vector<runtime::StepMetrics>> RunPlan(const PlanRun& p) {
  const instr::Plan& plan = *p.plan;
  // A plan the runtime would run differently from how it was planned is refused, not run.
  if (absl::Status st = instr::RuntimeSupports(plan.program); !st.ok()) {
    return absl::FailedPreconditionError(StrCat("plan '", p.plan_path, "': ", st.message()));
  }
  if (p.elastic != nullptr && p.graph != nullptr && !p.graph->running_stats().empty()) {
    return absl::FailedPreconditionError(StrCat("plan '", p.plan_path, "': elastic training does not keep batch-norm "
                                                "running statistics (", p.graph->running_stats().front().name,
                                                ", ...); train without --elastic"));
  }
  if (p.elastic != nullptr && plan.program.UsesMesh()) {
    return absl::FailedPreconditionError(StrCat("plan '", p.plan_path, "': elastic training snapshots plans over world "
                                                "forms only; this plan has properties over mesh levels (synthesize it "
                                                "with --no-mesh-levels)"));
  }
  const size_t n_dev = plan.devices.size();
  std::vector<double> flops = p.flops;
  if (flops.empty()) flops.assign(n_dev, 1.0);
  const double fastest = *std::max_element(flops.begin(), flops.end());
  const bool mpi = LaunchedByMpi();
  HS_CHECK(p.backend != nullptr, "RunPlan: no backend");
  const int ranks = p.ranks > 0 ? p.ranks : static_cast<int>(n_dev);
  // In-process ranks are known now; a launcher's are known to the communicator (below).
  if (!mpi && static_cast<size_t>(ranks) != n_dev) return RankCountError(p.plan_path, plan, ranks, mpi);

  std::mutex mu;
  std::vector<runtime::TraceEvent> events;
  std::vector<runtime::StepMetrics> out;
  auto run = [&](runtime::Communicator& comm, const runtime::MakeExecutorFn& make) -> absl::Status {
    const int rank = comm.rank();
    runtime::ExecutorOptions eo;
    eo.optimizer = p.optimizer;
    eo.seed = p.seed;
    eo.emulate = p.emulate;
    eo.bitwise = p.bitwise;
    eo.dilation = p.dilation;
    eo.slowdown = fastest / flops[static_cast<size_t>(rank)];
    eo.trace = !p.trace.empty();
    ElasticHooks* el = p.elastic;
    auto wall = [] { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); };
    // Elastic runs: rank 0 decides at the end of each step what the boundary after it does —
    // bit 0: stop for a membership change, bit 1: snapshot — and every rank learns it from the
    // step's own report (StepMetrics::flags). Snapshots come every snapshot_every steps, or with
    // 0 ("auto") as often as keeps them within kSnapshotBudget of rank 0's step time: every
    // ceil(snapshot seconds / (budget × mean step seconds)) steps.
    constexpr double kSnapshotBudget = 0.01;
    int64_t last_snapshot = 0, steps_timed = 0;
    // Until one is timed, a snapshot is taken to cost what copying the parameters and two state
    // tensors each twice (own and buddy) at 1 GB/s would.
    double last_snapshot_s = 0;
    for (ir::ValueId v : p.graph->parameters()) last_snapshot_s += 24e-9 * static_cast<double>(ir::NumElements(p.graph->value(v).shape));
    if (el != nullptr && rank == 0) {
      eo.step_flags = [&, el](int64_t step) -> float {
        int flags = el->change_requested && el->change_requested(step) ? 1 : 0;
        bool due;
        if (el->snapshot_every > 0) {
          due = step % el->snapshot_every == 0;
        } else {
          const double mean = steps_timed > 0 ? el->step_wall_s / static_cast<double>(steps_timed) : 0;
          due = mean > 0 && static_cast<double>(step - last_snapshot) * kSnapshotBudget * mean >= last_snapshot_s;
        }
        return static_cast<float>(flags | (due ? 2 : 0));
      };
    }
    HS_ASSIGN_OR_RETURN(auto ex, make(eo));
    if (!p.load.empty()) HS_RETURN_IF_ERROR(ex->Load(p.load, p.spec.ToString()));
    if (el != nullptr && el->start != nullptr) HS_RETURN_IF_ERROR(ex->Restore(*el->start));
    last_snapshot = ex->step();
    // Every rank snapshots together; rank 0 accounts the wall clock (ElasticHooks::snapshot_s).
    auto snapshot = [&]() -> absl::Status {
      const double t0 = wall();
      HS_ASSIGN_OR_RETURN(runtime::RankSnapshot s, ex->Snapshot());
      MaybeDelaySnapshot(rank);
      el->keep(std::move(s));
      // No rank goes on until every rank has kept its snapshot: a failure after this boundary
      // then always finds the survivors holding it.
      HS_RETURN_IF_ERROR(comm.Barrier());
      if (rank == 0) {
        last_snapshot_s = wall() - t0;
        last_snapshot = ex->step();
        el->snapshots += 1;
        el->snapshot_s += last_snapshot_s;
      }
      return absl::OkStatus();
    };
    // (No snapshot of the state the epoch starts from: the agent holds it — the checkpoint it
    // resharded, or the seed's initialization.)
    bool stopped = false;
    for (int64_t i = 0; i < p.steps; ++i) {
      HS_ASSIGN_OR_RETURN(runtime::Batch batch, p.data->Get(ex->step()));
      MaybeDie(rank, ex->step() + 1, mpi);
      const double step_start = el != nullptr && rank == 0 ? wall() : 0;
      HS_ASSIGN_OR_RETURN(runtime::StepMetrics m, ex->Step(batch));
      if (el != nullptr && rank == 0) el->step_wall_s += wall() - step_start, ++steps_timed;
      const int flags = static_cast<int>(m.flags);
      // From the step's report to the snapshot's write, a survivor is not stopped: a neighbour
      // that has already written its own and died must not leave this rank without one.
      const bool snapshot_follows = el != nullptr && i + 1 != p.steps && (flags & 3) != 0;
      if (snapshot_follows && el->hold_termination) el->hold_termination(true);
      absl::Cleanup release = [&] {
        if (snapshot_follows && el->hold_termination) el->hold_termination(false);
      };
      if (rank == 0) {
        if (!std::isfinite(m.loss)) {
          return NonFiniteLoss(m.loss, m.step, i == 0, p.optimizer);
        }
        if (p.on_step) p.on_step(i, m);
        out.push_back(std::move(m));
      }
      if (!snapshot_follows) continue;
      HS_RETURN_IF_ERROR(snapshot());
      if ((flags & 1) != 0) {
        if (rank == 0) el->stopped_at = ex->step();
        stopped = true;
        break;
      }
    }
    if (stopped) return absl::OkStatus();
    if (!p.save.empty()) HS_RETURN_IF_ERROR(ex->Save(p.save, p.spec.ToString()));
    if (!p.trace.empty()) {
      if (mpi) {  // (under CUDA, the NCCL communicator moves these host buffers over MPI)
        HS_ASSIGN_OR_RETURN(auto all, GatherEvents(comm, ex->TraceEvents()));
        if (rank == 0) events = std::move(all);
      } else {
        std::lock_guard<std::mutex> lock(mu);
        events.insert(events.end(), ex->TraceEvents().begin(), ex->TraceEvents().end());
      }
    }
    return absl::OkStatus();
  };

  runtime::RankOptions ro;
  ro.ranks = ranks;
  ro.launched = mpi;
  ro.precision = p.precision;
  ro.emulate_gpus = p.emulate_gpus;
  ro.speeds = flops;
  ro.description = p.gpu_description;
  ro.timeout_s = p.deadline;
  runtime::SetCollectiveDeadline(p.deadline);
  absl::Status st = p.backend->RunRanks(*p.graph, plan, ro, [&](runtime::Communicator& comm,
                                                                 const runtime::MakeExecutorFn& make) -> absl::Status {
    if (mpi) {
      // Every process finds the same mismatch and says it alike.
      if (p.ranks > 0 && p.ranks != comm.size()) {
        return absl::InvalidArgumentError(StrCat("--ranks ", p.ranks, " but the MPI launcher started ", comm.size(),
                                                 " processes; drop --ranks under mpirun/srun"));
      }
      if (static_cast<size_t>(comm.size()) != n_dev) return RankCountError(p.plan_path, plan, comm.size(), mpi);
      absl::Status s = run(comm, make);
      // Each process prints its own failure: say which rank it is.
      if (!s.ok() && comm.rank() != 0 && !s.GetPayload(runtime::kReportedPayload).has_value()) s = absl::Status(s.code(), StrCat("rank ", comm.rank(), ": ", s.message()));
      return s;
    }
    try {
      return run(comm, make);
    } catch (const std::exception& e) {
      const std::string cause = StrCat("rank ", comm.rank(), " died: ", e.what());
      if (p.elastic != nullptr) {
        std::lock_guard<std::mutex> lock(mu);
        if (p.elastic->lost.empty()) p.elastic->cause = cause, p.elastic->detected = std::chrono::system_clock::now();
        p.elastic->lost.push_back(comm.rank());
      }
      return absl::AbortedError(cause);
    }
  });
  HS_RETURN_IF_ERROR(st);
  if (!p.trace.empty() && (!mpi || LauncherRank() == 0)) {
    HS_RETURN_IF_ERROR(runtime::WriteChromeTrace(p.trace, events, plan.devices,
                                                 StrCat(plan.strategy, " plan for ", p.spec.ToString())));
  }
  return out;
}

absl::Status TrainPlan(const TrainOptions& o, const runtime::Backend& backend) {
  HS_ASSIGN_OR_RETURN(LoadedPlan loaded, LoadPlan(o.plan));
  if (absl::Status st = instr::RuntimeSupports(loaded.plan.program); !st.ok()) {
    return absl::FailedPreconditionError(StrCat("plan '", o.plan, "': ", st.message()));
  }
  const instr::Plan plan = std::move(loaded.plan);
  const ir::Graph graph = std::move(loaded.graph);
  const std::string where = StrCat("plan '", o.plan, "'");
  if (!o.model.name.empty() && o.model.name != plan.model) {
    return absl::InvalidArgumentError(StrCat("--model ", o.model.name, " but ", where, " is for model '", plan.model,
                                             "'; drop --model or pick the plan for ", o.model.name));
  }
  if (!o.model.args.empty() || o.model.batch != 0 || o.model.small) {
    return absl::InvalidArgumentError(StrCat(where, " fixes the model's hyperparameters and batch (", plan.batch,
                                             "); drop --model-arg/--batch/--small, or synthesize a plan for them"));
  }
  PlanRun p;
  p.plan = &plan;
  p.plan_path = o.plan;
  p.graph = &graph;
  p.spec = std::move(loaded.spec);

  p.flops = plan.device_flops;
  if (!o.cluster.empty()) {
    HS_ASSIGN_OR_RETURN(costmodel::Cluster c, costmodel::ReadClusterFile(o.cluster));
    HS_RETURN_IF_ERROR(CheckPlanCluster(plan, where, c, StrCat("--cluster '", o.cluster, "'")));
    p.flops.clear();
    for (const costmodel::Device& d : c.devices) p.flops.push_back(d.flops);
  }
  const size_t n_dev = plan.devices.size();
  if (p.flops.empty()) p.flops.assign(n_dev, 1.0);
  const double fastest = *std::max_element(p.flops.begin(), p.flops.end());
  const bool lead = !LaunchedByMpi() || RankFromLauncher() == 0;

  HS_ASSIGN_OR_RETURN(p.optimizer, o.Optimizer());
  runtime::DataSource data;
  if (o.data.empty()) {
    HS_ASSIGN_OR_RETURN(data, runtime::DataSource::Synthetic(p.spec, graph, o.seed));
  } else {
    HS_ASSIGN_OR_RETURN(data, runtime::DataSource::FromFile(o.data, graph));
  }
  p.data = &data;
  p.seed = o.seed;
  p.steps = o.steps;
  p.emulate = !o.no_emulate;
  p.bitwise = o.bitwise;
  p.dilation = o.dilation;
  if (p.dilation == 0) {
    p.dilation = runtime::DilationFromEnv();
    if (p.dilation < 0) {
      return absl::InvalidArgumentError(StrCat(runtime::kDilationEnv, "='", std::getenv(runtime::kDilationEnv),
                                               "': expected a number >= 1 (the time dilation factor K)"));
    }
  } else if (p.dilation < 1) {
    return absl::InvalidArgumentError(StrCat("--dilation ", o.dilation, ": expected a number >= 1"));
  }
  if (p.dilation > 0 && o.no_emulate) {
    return absl::InvalidArgumentError(StrCat("--no-emulate with --dilation/", runtime::kDilationEnv,
                                             ": dilation paces CPU ranks in real time; drop one of them"));
  }
  p.ranks = o.Given("--ranks") ? o.ranks : 0;
  p.backend = &backend;
  p.precision = o.precision;
  p.emulate_gpus = o.emulate_gpus;
  const runtime::BackendCapabilities& caps = backend.capabilities();
  if (!caps.thread_ranks && !LaunchedByMpi() && !o.emulate_gpus && n_dev > 1) {
    return absl::InvalidArgumentError(StrCat(where, " has ", n_dev, " devices: with --backend ", backend.name(),
                                             " run one process per ", caps.device, " (mpirun -np ", n_dev,
                                             " ...), or add --emulate-gpus to emulate them on one ", caps.device));
  }
  if (o.emulate_gpus && !backend.supports_emulate_gpus()) {
    return NeedsBackendFlag("--emulate-gpus", [](const runtime::Backend& b) { return b.supports_emulate_gpus(); });
  }
  if (o.emulate_gpus && LaunchedByMpi()) {
    return absl::InvalidArgumentError("--emulate-gpus runs every plan device in one process; do not start it with mpirun/srun");
  }
  // Thread ranks can be counted and emulated; device ranks are one per device and wall-clock timed.
  if (!caps.emulated_timing && p.dilation > 0) {
    return absl::InvalidArgumentError(StrCat("--dilation/", runtime::kDilationEnv, " is for CPU ranks; ", caps.device,
                                             " ranks are wall-clock timed"));
  }
  if ((!caps.thread_ranks && o.Given("--ranks")) || (!caps.emulated_timing && o.no_emulate)) {
    return absl::InvalidArgumentError(StrCat(o.Given("--ranks") ? "--ranks" : "--no-emulate", " is for CPU ranks; ",
                                             caps.device,
                                             " ranks are one per plan device and always wall-clock timed"));
  }
  if (o.bitwise && !caps.host_memory) {
    return absl::InvalidArgumentError(StrCat("--bitwise is for CPU ranks; ", caps.device,
                                             " ranks' GEMM libraries choose their kernels by shape, so a batch "
                                             "piece's bits are not one device's"));
  }
  HS_RETURN_IF_ERROR(RequireAvailable(backend));
  // Host memory, before anything is allocated: the plan's predicted memory of the ranks this
  // process holds — every rank for thread ranks, its own under a launcher (a lower bound of what
  // its host holds; the launcher may place more ranks there).
  if (caps.host_memory && plan.predicted_memory_bytes.size() == n_dev) {
    double need = 0;
    if (LaunchedByMpi()) {
      const int r = RankFromLauncher();
      if (r >= 0 && static_cast<size_t>(r) < n_dev) need = plan.predicted_memory_bytes[static_cast<size_t>(r)];
    } else {
      for (double b : plan.predicted_memory_bytes) need += b;
    }
    const std::string what = LaunchedByMpi() ? StrCat(where, " on rank ", RankFromLauncher())
                                             : StrCat(where, " on ", n_dev, " thread ranks in this process");
    HS_RETURN_IF_ERROR(CheckHostMemory(
        need, what, "run it under mpirun across machines, or synthesize a plan for a smaller --batch or model"));
  }
  std::string gpu_description;
  p.gpu_description = &gpu_description;
  const bool wall_clock = o.no_emulate || !caps.emulated_timing;
  const bool dilated = p.dilation > 0;
  p.load = o.load.empty() ? graph.weights_file() : o.load;  // an imported graph's weights
  p.save = o.save;
  p.deadline = o.deadline;
  p.trace = o.trace;
  ElasticHooks worker_hooks;
  if (o.hooks != nullptr) {
    p.elastic = o.hooks;
  } else if (!o.elastic_worker.empty()) {
    HS_RETURN_IF_ERROR(ElasticWorkerStart(o, RankFromLauncher(), &worker_hooks));
    p.elastic = &worker_hooks;
  }
  const int ranks = LaunchedByMpi() ? SizeFromLauncher() : o.Given("--ranks") ? o.ranks : static_cast<int>(n_dev);
  if (ranks > 0 && static_cast<size_t>(ranks) != n_dev) {  // RunPlan checks again with the communicator
    return RankCountError(o.plan, plan, ranks, LaunchedByMpi());
  }
  std::ofstream metrics;
  std::string metrics_error;  // the first failed write
  if (!o.metrics.empty() && lead) {
    metrics.open(o.metrics, std::ios::binary | std::ios::trunc);
    if (!metrics) return absl::InvalidArgumentError(StrCat("--metrics '", o.metrics, "': cannot open for writing"));
  }
  if (!o.trace.empty() && lead) {
    std::ofstream probe(o.trace, std::ios::binary | std::ios::trunc);
    if (!probe) return absl::InvalidArgumentError(StrCat("--trace '", o.trace, "': cannot open for writing"));
  }

  if (lead && !o.quiet) {
    std::string devs;
    for (size_t i = 0; i < n_dev; ++i) devs += fmt::format("{}{} x{:.2f}", i ? ", " : "", plan.devices[i], p.flops[i] / fastest);
    runtime::RankOptions ro;
    ro.launched = LaunchedByMpi();
    ro.emulate_gpus = o.emulate_gpus;
    const std::string kind = backend.RankKind(ro);
    fmt::print(stderr, "training {} with plan '{}' ({}, cluster '{}') on {} {} ranks: {} steps, {} lr {:g}, {}\n",
               p.spec.ToString(), o.plan, plan.strategy, plan.cluster, ranks, kind, o.steps, o.optimizer,
               p.optimizer.lr, data.description());
    if (!caps.emulated_timing) {
      fmt::print(stderr, "timing: wall clock on the {}{}; devices: {}\n", caps.device,
                 o.emulate_gpus ? fmt::format("s (EMULATED mixed cluster: {}; links are the {}'s own memory)",
                                              caps.virtual_devices, caps.device)
                                : "",
                 devs);
    } else if (o.no_emulate) {
      fmt::print(stderr, "timing: wall clock (--no-emulate); devices: {}\n", devs);
    } else if (dilated) {
      fmt::print(stderr,
                 "timing: TIME DILATION K = {:g} — wall clock ÷ K; each rank's local work is paced to K × its CPU "
                 "time × its device's slowdown (EMULATED device speeds: {}); collectives take real time "
                 "(docs/emulated-cluster.md)\n",
                 p.dilation, devs);
    } else {
      fmt::print(stderr,
                 "timing: EMULATED on this CPU — each rank's kernel CPU time is stretched by its device's "
                 "relative speed ({}), clocks meet at every collective (docs/runtime.md)\n",
                 devs);
    }
  }

  Mean step_time, compute, comm_time, idle, hidden, late;
  float first_loss = NAN, last_loss = NAN;
  const int64_t every = std::max<int64_t>(1, o.steps / 10);
  // Elastic runs: the membership epoch and the wall-clock time the step ended (recovery times).
  auto elastic_fields = [&]() -> std::string {
    if (o.elastic_epoch < 0) return "";
    const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    return fmt::format("\"epoch\": {}, \"unix_time\": {:.6f}, ", o.elastic_epoch, now);
  };
  p.on_step = [&](int64_t i, const runtime::StepMetrics& m) {
    Mean c, x, w, h, l;
    for (const runtime::RankTimes& t : m.ranks) {
      c.Add(t.compute_s), x.Add(t.communication_s), w.Add(t.idle_s), h.Add(t.overlapped_s), l.Add(t.late_s);
    }
    if (i == 0) first_loss = m.loss;
    last_loss = m.loss;
    if (i > 0 || o.steps == 1) {  // the first step warms caches and allocators
      step_time.Add(m.step_time_s), compute.Add(c.get()), comm_time.Add(x.get()), idle.Add(w.get()), hidden.Add(h.get());
      late.Add(l.get());
    }
    if (metrics.is_open()) {
      std::string per_rank;
      for (size_t r = 0; r < m.ranks.size(); ++r) {
        per_rank += fmt::format(
            "{}{{\"device\": \"{}\", \"compute_s\": {:.6f}, \"communication_s\": {:.6f}, \"idle_s\": {:.6f}, "
            "\"overlapped_s\": {:.6f}}}",
            r ? ", " : "", plan.devices[r], m.ranks[r].compute_s, m.ranks[r].communication_s, m.ranks[r].idle_s,
            m.ranks[r].overlapped_s);
      }
      metrics << fmt::format(
          "{{\"step\": {}, \"loss\": {}, \"step_time_s\": {:.6f}, \"compute_s\": {:.6f}, \"communication_s\": {:.6f}, "
          "\"idle_s\": {:.6f}, \"overlapped_s\": {:.6f}, \"late_s\": {:.6f}, \"emulated\": {}, \"dilation\": {:g}, "
          "{}\"ranks\": [{}]}}\n",
          m.step, m.loss, m.step_time_s, c.get(), x.get(), w.get(), h.get(), l.get(), wall_clock ? "false" : "true",
          p.dilation, elastic_fields(), per_rank);
      metrics.flush();
      if (!metrics) {  // a full disk, /dev/full: said when the run ends (this callback cannot stop it)
        metrics_error = StrCat("--metrics '", o.metrics, "': write failed at step ", m.step, " (", std::strerror(errno),
                               "); the run finished, its metrics file is incomplete");
        metrics.close();
      }
    }
    if (o.quiet) return;
    const std::string line =
        // Optimizer steps as checkpoints and --metrics count them: a run from --load or an elastic
        // epoch's snapshot continues their count.
        fmt::format("step {:>5}/{}  loss {:.4f}  {} /step (compute {}, comm {}, idle {}; mean over ranks)",
                    m.step, m.step - (i + 1) + o.steps,
                    m.loss, Ms(m.step_time_s), Ms(c.get()), Ms(x.get()), Ms(w.get()));
    PrintProgress(line, i + 1 == o.steps, (i + 1) % every == 0 || i == 0);
  };
  const absl::Status run_status = RunPlan(p).status();
  if (!o.elastic_worker.empty()) ElasticWorkerEnd(o, RankFromLauncher(), worker_hooks, run_status);
  HS_RETURN_IF_ERROR(run_status);
  if (!metrics_error.empty()) return absl::InvalidArgumentError(metrics_error);
  if (!lead || o.elastic_epoch >= 0) return absl::OkStatus();  // the elastic agent sums up its epochs
  if (!gpu_description.empty() && !o.quiet) fmt::print(stderr, "ran on {}\n", gpu_description);
  if (!o.save.empty() && !o.quiet) fmt::print(stderr, "checkpoint (full tensors) written to {}\n", o.save);
  if (!o.trace.empty() && !o.quiet) {
    fmt::print(stderr, "trace of {} ranks written to {} (open in https://ui.perfetto.dev)\n", ranks, o.trace);
  }
  if (o.steps == 0) {
    fmt::print("{} with plan '{}' ({}) on {} rank{}: no steps run (--steps 0)\n", p.spec.name, o.plan, plan.strategy, ranks,
               ranks == 1 ? "" : "s");
  } else {
    fmt::print("trained {} with plan '{}' ({}) on {} rank{} for {} step{}: loss {:.4f} -> {:.4f}\n", p.spec.name, o.plan,
               plan.strategy, ranks, ranks == 1 ? "" : "s", o.steps, o.steps == 1 ? "" : "s", first_loss, last_loss);
  }
  if (o.steps > 0) {
    const std::string hidden_text =
        plan.program.overlap ? fmt::format("; {} more communication overlapped with compute", Ms(hidden.get())) : "";
    fmt::print("step time {} {} (compute {}, communication {}, idle {}{}; mean over ranks{}); predicted {}\n",
               Ms(step_time.get()),
               wall_clock ? "wall clock" : dilated ? fmt::format("wall clock / K={:g}", p.dilation) : "emulated",
               Ms(compute.get()), Ms(comm_time.get()), Ms(idle.get()), hidden_text,
               o.steps > 1 ? ", steps after the first" : "", Ms(plan.predicted_step_time_s));
  }
  return absl::OkStatus();
}

}  // namespace hetsynth::cli
