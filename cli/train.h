// `hetsynth train`: the flags shared by single-device training (train_command.cc) and running a
// plan across ranks (train_plan.cc).
#pragma once

#include <chrono>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "commands.h"
#include "hetsynth/runtime/backend.h"
#include "hetsynth/runtime/data.h"
#include "hetsynth/runtime/executor.h"
#include "hetsynth/runtime/optimizer.h"
#include "hetsynth/runtime/snapshot.h"

namespace hetsynth::cli {

// Elastic training (elastic.cc, docs/elastic.md): what the agent hands one membership epoch's
// run of a plan, and what the run tells it back.
struct ElasticHooks {
  int64_t snapshot_every = 0;                             // > 0: snapshot every that many optimizer steps; 0: auto
  std::function<void(runtime::RankSnapshot)> keep;        // every rank, after each snapshot (thread-safe)
  std::function<bool(int64_t step)> change_requested;     // rank 0, at each step boundary
  // Every rank: true when a step ends that a snapshot follows, false once every rank has kept
  // it. An MPI worker defers a SIGTERM that comes in between (docs/elastic.md).
  std::function<void(bool)> hold_termination;
  const runtime::Checkpoint* start = nullptr;             // restore every rank from it first (threads)
  // Filled by the run.
  std::vector<int> lost;                                  // thread ranks that died
  std::string cause;                                      // how the first of them died
  std::chrono::system_clock::time_point detected;         // when
  int64_t stopped_at = -1;                                // >= 0: stopped at this step for a membership change
  // Rank 0's wall clock, for the overhead: snapshots taken, seconds in them, seconds in steps.
  int snapshots = 0;
  double snapshot_s = 0, step_wall_s = 0;
};

struct TrainOptions {
  ModelOptions model;
  int64_t steps = 0;
  std::string optimizer = "adam";
  double lr = 0;          // used when --lr is given; else the optimizer's default
  double momentum = 0;
  double weight_decay = 0;
  uint64_t seed = 0;
  std::string data, load, save, metrics;
  int64_t save_every = 0;  // one device: also save every N steps (0: only at the end)
  bool quiet = false;
  // Across ranks.
  std::string plan, cluster, trace;
  int ranks = 0;           // used when --ranks is given
  bool no_emulate = false;
  bool bitwise = false;  // --bitwise: one device's bits on every batch piece (ExecutorOptions::bitwise)
  // --dilation K (or HETSYNTH_DILATION, which `hetsynth cluster run` exports): real-time pacing
  // on CPU ranks, every device K× slower than modelled (runtime/pacer.h); 0: off.
  double dilation = 0;
  double deadline = 300;  // --deadline: seconds a collective may wait for the other ranks
  // --backend: a registered backend's name (runtime::FindBackend); --precision: GEMM arithmetic,
  // one the backend offers; --emulate-gpus: a plan's devices as virtual GPUs of one GPU.
  std::string backend = "cpu", precision = "fp32";
  bool emulate_gpus = false;
  // Elastic training (elastic.cc): --elastic runs the agent; it runs each membership epoch's plan
  // with `hooks` (thread ranks) or as mpirun workers given --elastic-worker DIR and --elastic-epoch.
  bool elastic = false;
  std::string snapshot_every = "auto";  // N, or auto: within 1% of the step time
  std::string elastic_dir, members, workers = "threads", mpirun, mpirun_args;
  std::string elastic_worker;  // DIR: this process is one MPI worker of an elastic run
  int elastic_epoch = -1;      // >= 0: metrics lines carry the epoch and the wall-clock time
  ElasticHooks* hooks = nullptr;
  std::set<std::string> given;  // the flags on the command line (long names), for context checks
  bool Given(const std::string& flag) const { return given.count(flag) > 0; }

  absl::StatusOr<runtime::OptimizerConfig> Optimizer() const;
  // The numeric flags in their sane ranges and the output paths writable: checked before any work.
  absl::Status Validate() const;
};

// The error for a loss that is NaN or infinite at optimizer step `step` (counted as checkpoints
// count). After an update: the flags that can cause it, with their values. At a run's first step
// (`first`), before this run has updated anything, the learning rate plays no part: the starting
// weights or the data are not finite or overflow.
absl::Status NonFiniteLoss(float loss, int64_t step, bool first, const runtime::OptimizerConfig& cfg);

// Runs o.plan on `backend`'s ranks: threads, or MPI ranks when started by mpirun/srun (cpu); GPUs.
absl::Status TrainPlan(const TrainOptions& o, const runtime::Backend& backend);

// InvalidArgument "WHAT needs at least N GiB; this machine has M GiB; HINT" when `bytes` exceed
// this machine's physical memory (checked before anything is allocated); OK otherwise.
absl::Status CheckHostMemory(double bytes, const std::string& what, const std::string& hint);

// One run of a plan: every rank executes it; rank 0 gets the metrics (on_step, and the result).
struct PlanRun {
  const instr::Plan* plan = nullptr;
  std::string plan_path;           // for messages
  const ir::Graph* graph = nullptr;
  ir::ModelSpec spec;
  std::vector<double> flops;       // per device, for the emulation (empty: all equal)
  runtime::OptimizerConfig optimizer;
  const runtime::DataSource* data = nullptr;
  uint64_t seed = 0;
  int64_t steps = 0;
  bool emulate = true;
  bool bitwise = false;            // ExecutorOptions::bitwise
  double dilation = 0;             // > 0: time dilation K (ExecutorOptions::dilation)
  int ranks = 0;                   // 0: one per plan device
  std::string load, save, trace;
  double deadline = 300;           // seconds a collective may make no progress (threads and MPI)
  // What the ranks run on (e.g. GPUs: NCCL under mpirun, or virtual GPUs with emulate_gpus).
  const runtime::Backend* backend = nullptr;
  std::string precision = "fp32";
  bool emulate_gpus = false;
  std::string* gpu_description = nullptr;  // filled with what the GPU ranks run on
  std::function<void(int64_t index, const runtime::StepMetrics&)> on_step;  // rank 0
  ElasticHooks* elastic = nullptr;  // elastic runs: snapshots, membership changes, deaths
};
// Thread ranks, or MPI ranks under a launcher. Rank 0 returns every step's metrics; the others
// return an empty list.
absl::StatusOr<std::vector<runtime::StepMetrics>> RunPlan(const PlanRun& run);
// `hetsynth train --elastic` (elastic.cc): the agent.
absl::Status RunElastic(const TrainOptions& o, const runtime::Backend& backend);
// An MPI worker of an elastic run (--elastic-worker DIR): its pid file and SIGTERM record, the
// hooks writing its snapshots to DIR and reading membership requests from it, and at the end the
// exit record the agent reads.
absl::Status ElasticWorkerStart(const TrainOptions& o, int rank, ElasticHooks* hooks);
void ElasticWorkerEnd(const TrainOptions& o, int rank, const ElasticHooks& hooks, const absl::Status& st);

// Whether this process was started by mpirun / srun, and the rank it gave (0 when not).
bool UnderMpiLauncher();
int LauncherRank();

}  // namespace hetsynth::cli
