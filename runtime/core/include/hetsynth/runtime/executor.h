// The multi-rank executor: every rank interprets the same plan (instr::Plan) on its shards.
//
// Forward runs the plan's instructions in order — placements slice inputs and parameters,
// compute instructions run the local CPU kernels on the pieces their rule names, collectives go
// through a Communicator — keeping what backward needs. Backward runs in reverse: each compute
// instruction's local backward kernel and each collective's dual (all-gather ↔ reduce-scatter,
// all-reduce ↔ all-reduce, all-to-all reversed, slice ↔ zero padding, a replicated parameter's
// gradient all-reduce). Each rank then updates the parameter pieces it holds. With the same seed
// the parameters start as slices of the very tensors single-device training initializes, so n
// ranks and one device train the same model (docs/runtime.md).
//
// Timing on CPU ranks is emulated (docs/runtime.md): each kernel's thread CPU time is stretched
// by the rank's `slowdown`, and virtual clocks meet at every collective, so n ranks sharing a
// few cores time as n devices of the given relative speeds would.
//
//   HS_RETURN_IF_ERROR(RunThreadRanks(4, [&](Communicator& comm) -> absl::Status {
//     HS_ASSIGN_OR_RETURN(auto ex, Executor::Create(graph, plan, comm, options));
//     HS_ASSIGN_OR_RETURN(StepMetrics m, ex->Step(batch));   // the full batch on every rank
//     return absl::OkStatus();
//   }));
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "hetsynth/instr/program.h"
#include "hetsynth/ir/graph.h"
#include "hetsynth/runtime/comm.h"
#include "hetsynth/runtime/data.h"
#include "hetsynth/runtime/optimizer.h"
#include "hetsynth/runtime/snapshot.h"
#include "hetsynth/runtime/tensor.h"

namespace hetsynth::runtime {

struct ExecutorOptions {
  OptimizerConfig optimizer;
  uint64_t seed = 0;  // initialization (and, through the graph, dropout) as in single-device training
  // Emulated timing: compute time = thread CPU time × slowdown (this rank's max_flops / flops),
  // clocks synchronized at collectives. Off: wall-clock time, no synchronization.
  bool emulate = true;
  double slowdown = 1.0;
  // Time dilation K > 0 (pacer.h; the emulated cluster, docs/emulated-cluster.md): real time, no
  // virtual clocks; each stretch of local work is paced to K × its CPU time × slowdown, and every
  // time reported is wall clock ÷ K. Takes precedence over `emulate`. 0: off.
  double dilation = 0;
  bool trace = false;  // record trace events (TraceEvents())
  // Every image of a batch-split op computed with one device's bits (KernelContext::
  // one_device_bits; `train --plan --bitwise`): for comparing against a one-device run, at the
  // cost of whole chunks of small-map convolutions on ranks holding few images.
  bool bitwise = false;
  // Called on every rank at the end of each step with the optimizer steps done; rank 0's value
  // reaches every rank in StepMetrics::flags through the step's own report, so the ranks agree
  // on what the next step boundary does (elastic training: snapshot, membership change) without
  // a collective of their own. May be empty.
  std::function<float(int64_t steps)> step_flags;
};

// One rank's view of a step; times in seconds (emulated when ExecutorOptions::emulate).
// compute + communication + idle is the rank's compute stream, at most the step; with overlap
// the communication stream also moved data for `overlapped_s` while compute went on.
struct RankTimes {
  double compute_s = 0;
  double communication_s = 0;  // in blocking collectives, or waiting for the communication stream
  double idle_s = 0;           // waiting for slower ranks at collectives
  double overlapped_s = 0;     // the communication stream's work hidden behind compute (overlap)
  double late_s = 0;           // dilation: how much longer local work took than K × modelled (÷ K); 0 else
};

struct StepMetrics {
  int64_t step = 0;        // optimizer steps after this one (1-based, like the trainer's metrics)
  float loss = 0;          // the global loss (before the update)
  double step_time_s = 0;  // the slowest rank's time for the whole step
  std::vector<RankTimes> ranks;  // every rank's breakdown, in rank order
  float flags = 0;         // rank 0's ExecutorOptions::step_flags (0 when it has none)
};

// A span of a rank's timeline, for Chrome traces.
struct TraceEvent {
  std::string name;      // node or "all_gather(tensor)"
  std::string category;  // "compute", "communication", "idle", "optimizer"
  int rank = 0;
  double start_s = 0;    // from the start of the run
  double duration_s = 0;
  int track = 0;         // 0: the rank's compute stream; 1: its communication stream (overlap)
};

class Executor {
 public:
  // The executor on CPU ranks: the "cpu" backend object's MakeExecutor (backend.h), so the
  // program must link hetsynth_backend_cpu; other backends make theirs in Backend::RunRanks.
  // Checks that the plan fits the graph (CheckProgram) and the communicator (one rank per plan
  // device), and materializes this rank's parameter pieces. Collective: every rank calls it.
  static absl::StatusOr<std::unique_ptr<Executor>> Create(const ir::Graph& graph, const instr::Plan& plan,
                                                         Communicator& comm, ExecutorOptions options);
  ~Executor();

  // One training step on the full batch (each rank takes its rows from it); collective.
  absl::StatusOr<StepMetrics> Step(const Batch& batch);

  // The full parameters, gathered from the pieces (collective; every rank gets them).
  absl::StatusOr<std::map<std::string, Tensor>> FullParameters();
  // Writes a checkpoint of full tensors (WriteCheckpoint) from rank 0; collective.
  absl::Status Save(const std::string& path, const std::string& model);
  // Loads a checkpoint of full tensors on every rank and keeps this rank's pieces; collective.
  // `model`, when not empty, must be the checkpoint's architecture (ReadCheckpoint); rank 0
  // prints the checkpoint's note, if any.
  absl::Status Load(const std::string& path, const std::string& model = "");
  // The same from a checkpoint in memory (elastic training's reshard); not collective.
  absl::Status Restore(const Checkpoint& ck);
  // This rank's snapshot of the training state at the current step (snapshot.h): its own pieces
  // plus a copy of the pieces of the rank before it, exchanged in one all-to-all; collective.
  absl::StatusOr<RankSnapshot> Snapshot();

  int64_t step() const;
  int rank() const;
  // Events recorded so far on this rank (ExecutorOptions::trace).
  const std::vector<TraceEvent>& TraceEvents() const;

  // One rank's executor on some backend (executor_impl.h); Create makes the CPU one.
  struct Impl {
    virtual ~Impl() = default;
    virtual absl::StatusOr<StepMetrics> Step(const Batch& batch) = 0;
    virtual absl::StatusOr<std::map<std::string, Tensor>> FullParameters() = 0;
    virtual absl::Status Save(const std::string& path, const std::string& model) = 0;
    virtual absl::Status Load(const std::string& path, const std::string& model) = 0;
    virtual absl::Status Restore(const Checkpoint& ck) = 0;
    virtual absl::StatusOr<RankSnapshot> Snapshot() = 0;
    virtual int64_t steps() const = 0;
    virtual int rank_index() const = 0;
    virtual const std::vector<TraceEvent>& trace_events() const = 0;
  };
  explicit Executor(std::unique_ptr<Impl> impl);

 private:
  std::unique_ptr<Impl> impl_;
};

// Writes the events of every rank as a Chrome trace (JSON object format; opens in Perfetto and
// chrome://tracing): one process per rank named by `rank_names`, times in microseconds.
absl::Status WriteChromeTrace(const std::string& path, const std::vector<TraceEvent>& events,
                              const std::vector<std::string>& rank_names, const std::string& title);

}  // namespace hetsynth::runtime
