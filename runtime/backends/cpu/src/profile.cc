// The CPU backend's Profile (backend.h): the raw measurements behind `hetsynth profile` on this
// host — per-node kernel times of the CPU trainer, the optimizer update, how much slower the
// plan executor computes a step than its kernels' medians add up to, and collectives on thread
// ranks. The CLI (cli/profile_command.cc) classifies and fits them as it does a GPU's.
//
// Clock: the calling thread's CPU time (CLOCK_THREAD_CPUTIME_ID), the clock the plan executor
// charges kernels and thread-rank collectives with when it emulates devices (executor_impl.h,
// Compute and Communicate).
#include <algorithm>
#include <numeric>
#include <vector>

#include <fmt/format.h>

#include "cpu_backend.h"
#include "hetsynth/instr/program.h"
#include "hetsynth/base/median.h"
#include "hetsynth/base/memory.h"
#include "hetsynth/base/status.h"
#include "hetsynth/runtime/backend.h"
#include "hetsynth/runtime/collectives.h"
#include "hetsynth/runtime/comm.h"
#include "hetsynth/runtime/cpu_time.h"
#include "hetsynth/runtime/executor.h"
#include "hetsynth/runtime/host_allocator.h"
#include "hetsynth/ir/op_table.h"
#include "hetsynth/runtime/kernels.h"
#include "hetsynth/runtime/profile_collectives.h"
#include "hetsynth/runtime/profile_kernels.h"
#include "hetsynth/runtime/trainer.h"

namespace hetsynth::runtime::cpu {
namespace {

// Runs 1 warm-up + `repeats` timed training steps of the CPU Trainer on this thread, timing each
// node's forward + backward kernel calls (its kernel timer) and the update of every parameter,
// and takes medians over the timed steps; then the same over 1 + `repeats` forward-only passes.
absl::Status TimeKernels(const ir::Graph& g, const DataSource& data, const ProfileOptions& o, DeviceProfile& out) {
  HS_ASSIGN_OR_RETURN(auto trainer, Trainer::Create(g, o.optimizer, /*seed=*/0));
  Optimizer optimizer(o.optimizer);
  const size_t num_nodes = g.nodes().size();
  std::vector<double> t(num_nodes, 0.0);
  out.node_backward.assign(num_nodes, false);
  trainer->SetKernelTimer([&](ir::NodeId node, bool backward, double seconds) {
    t[static_cast<size_t>(node)] += seconds;
    if (backward) out.node_backward[static_cast<size_t>(node)] = true;
  });
  std::vector<std::vector<double>> samples(num_nodes);
  std::vector<double> optimizer_samples;
  for (int step = 0; step <= o.repeats; ++step) {  // step 0 warms up
    HS_ASSIGN_OR_RETURN(Batch batch, data.Get(step));
    std::fill(t.begin(), t.end(), 0.0);
    std::map<std::string, Tensor> grads;
    HS_RETURN_IF_ERROR(trainer->Gradients(batch, &grads).status());
    // The optimizer update, memory-bound work the cost model charges per parameter.
    const double o0 = ThreadCpuSeconds();
    optimizer.Step(trainer->parameters(), grads);
    const double opt_s = ThreadCpuSeconds() - o0;
    if (step > 0) {
      for (size_t n = 0; n < num_nodes; ++n) samples[n].push_back(t[n]);
      optimizer_samples.push_back(opt_s);
    }
  }
  out.node_seconds.clear();
  for (size_t n = 0; n < num_nodes; ++n) out.node_seconds.push_back(Median(samples[n]));
  out.optimizer_s = Median(optimizer_samples);
  // The forward alone, as inference runs it (the forward rates placement prices with).
  HS_ASSIGN_OR_RETURN(Batch batch, data.Get(0));
  HS_ASSIGN_OR_RETURN(out.node_forward_seconds,
                      NodeMedians(o.repeats, t, [&] { return trainer->Loss(batch).status(); }));
  return absl::OkStatus();
}

// GEMM-class nodes with parameters, each timed alone (forward + backward, thread CPU time) at
// all its rows and at an eighth of them, alternating, the least of each (at least 3 and at most
// 15 runs, about a quarter second per node); between runs a 32 MiB buffer is written, so the
// weight comes from memory as in a step where other kernels ran in between. Nodes equal in op,
// attributes and shapes are timed once. The batch is the first dim of every input that is not
// a parameter (a node whose rows cannot be cut by 8 is left out).
constexpr int64_t kOperandRowsDivisor = 8;
absl::Status TimeOperands(const ir::Graph& g, DeviceProfile& out) {
  const size_t num_nodes = g.nodes().size();
  out.node_rows_large_s.assign(num_nodes, 0.0);
  out.node_rows_small_s.assign(num_nodes, 0.0);
  out.operand_rows_ratio = 1.0 / static_cast<double>(kOperandRowsDivisor);
  HostVector flush(size_t{8} << 20);
  uint32_t seed = 12345;
  auto random = [&](const ir::Shape& shape) {
    Tensor t = Tensor::Uninitialized(shape);
    for (float& x : t.data) x = static_cast<float>((seed = seed * 1664525u + 1013904223u) >> 8) / 8388608.0f - 1.0f;
    return t;
  };
  std::vector<size_t> timed;  // nodes measured so far (representatives)
  for (size_t n = 0; n < num_nodes; ++n) {
    const ir::Node& node = g.nodes()[n];
    if (!ir::IsGemmLike(node.kind)) continue;
    bool has_param = false, cut = true;
    for (ir::ValueId v : node.inputs) {
      const ir::Value& val = g.value(v);
      if (val.kind == ir::ValueKind::kParameter) {
        has_param = true;
      } else if (val.shape.empty() || val.shape[0] % kOperandRowsDivisor != 0) {
        cut = false;
      }
    }
    const ir::Shape& out_shape = g.value(node.output).shape;
    if (!has_param || !cut || out_shape.empty() || out_shape[0] % kOperandRowsDivisor != 0) continue;
    // The same op on the same shapes: reuse its times.
    auto same = [&](size_t m) {
      const ir::Node& o = g.nodes()[m];
      if (o.kind != node.kind || !(o.attrs == node.attrs) || o.inputs.size() != node.inputs.size() ||
          g.value(o.output).shape != out_shape) {
        return false;
      }
      for (size_t i = 0; i < o.inputs.size(); ++i) {
        if (g.value(o.inputs[i]).shape != g.value(node.inputs[i]).shape ||
            g.value(o.inputs[i]).kind != g.value(node.inputs[i]).kind) {
          return false;
        }
      }
      return true;
    };
    if (auto it = std::find_if(timed.begin(), timed.end(), same); it != timed.end()) {
      out.node_rows_large_s[n] = out.node_rows_large_s[*it];
      out.node_rows_small_s[n] = out.node_rows_small_s[*it];
      continue;
    }
    // Inputs, their gradients (none for the model's inputs, as in training) and the output's, at
    // both row counts.
    struct Case {
      std::vector<Tensor> in, din;
      Tensor y, dy;
      std::vector<double> seconds;
    };
    Case cases[2];
    for (int c = 0; c < 2; ++c) {
      const int64_t div = c == 0 ? 1 : kOperandRowsDivisor;
      for (ir::ValueId v : node.inputs) {
        ir::Shape shape = g.value(v).shape;
        if (g.value(v).kind != ir::ValueKind::kParameter) shape[0] /= div;
        cases[c].in.push_back(random(shape));
        cases[c].din.push_back(Tensor(shape));
      }
      ir::Shape ys = out_shape;
      ys[0] /= div;
      cases[c].y = Tensor(ys);
      cases[c].dy = random(ys);
    }
    double spent = 0;
    for (int rep = 0; rep < 15 && (rep < 3 || spent < 0.25); ++rep) {
      for (Case& k : cases) {
        std::vector<const Tensor*> ins;
        std::vector<Tensor*> dins;
        for (size_t i = 0; i < k.in.size(); ++i) {
          ins.push_back(&k.in[i]);
          dins.push_back(g.value(node.inputs[i]).kind == ir::ValueKind::kInput ? nullptr : &k.din[i]);
        }
        std::fill(flush.begin(), flush.end(), static_cast<float>(rep));
        const double t0 = ThreadCpuSeconds();
        SavedState saved;
        Forward(node, KernelContext{}, ins, k.y, saved);
        Backward(node, KernelContext{}, ins, k.y, k.dy, saved, dins);
        const double dt = ThreadCpuSeconds() - t0;
        k.seconds.push_back(dt);
        spent += dt;
      }
    }
    out.node_rows_large_s[n] = *std::min_element(cases[0].seconds.begin(), cases[0].seconds.end());
    out.node_rows_small_s[n] = *std::min_element(cases[1].seconds.begin(), cases[1].seconds.end());
    timed.push_back(n);
  }
  return absl::OkStatus();
}

// The executor's kernels run among its own bookkeeping and among the other ranks' threads
// (collectives, wake-ups) on this host's few cores, which slows them down. Measured on `ranks`
// thread ranks that each run the whole model (the all-replicated plan): the median compute time
// of rank 0's step (after one warm-up) over `kernels`, the sum of the kernels' medians and the
// update.
absl::StatusOr<double> ExecutorScale(const ir::Graph& g, const DataSource& data, int ranks, int repeats,
                                     double kernels, const ProfileOptions& o) {
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
  ExecutorOptions eo;
  eo.optimizer = o.optimizer;
  std::vector<double> steps;
  HS_RETURN_IF_ERROR(RunThreadRanks(ranks, [&](Communicator& comm) -> absl::Status {
    HS_ASSIGN_OR_RETURN(auto ex, MakeCpuExecutor(g, plan, comm, eo));
    for (int i = 0; i <= repeats; ++i) {
      HS_ASSIGN_OR_RETURN(Batch batch, data.Get(i));
      HS_ASSIGN_OR_RETURN(StepMetrics sm, ex->Step(batch));
      // Step 0 warms up. Rank 0 runs the whole step (forward, backward, update); with a
      // replicated loss the others have no gradient to run backward on.
      if (i > 0 && comm.rank() == 0) steps.push_back(sm.ranks.at(0).compute_s);
    }
    return absl::OkStatus();
  }));
  const double scale = Median(steps) / kernels;
  if (o.progress) {
    o.progress(fmt::format("profile: the executor computes a step in {:.3f} ms on {} ranks, {:.2f}x its kernels' "
                           "medians; rates scaled by that",
                           Median(steps) * 1e3, ranks, scale));
  }
  return scale;
}

// For each tensor of o.collectives (shard lengths per rank): Barrier, then time through the
// executor's own code path (collectives.h, packing included) a grouped all-gather, after another
// Barrier a grouped reduce-scatter, after a third an all-reduce of the whole tensor and after a
// fourth a padded all-gather; per tensor and op the median over the repeats (after one warm-up)
// of the slowest rank's time. Time is each rank's thread CPU time: waiting for the other threads
// sleeps on a condition variable and is not counted, the copying and summing a rank does is.
absl::Status TimeCollectives(const ProfileOptions& o, DeviceProfile& out) {
  const int n = static_cast<int>(o.speeds.size());
  const size_t num = o.collectives.size();
  CollectiveTimings seconds(num, o.repeats, n);  // each rank writes its own slots
  HS_RETURN_IF_ERROR(RunThreadRanks(n, [&](Communicator& comm) -> absl::Status {
    for (size_t c = 0; c < num; ++c) {
      const std::vector<int64_t>& lengths = o.collectives[c];
      const int64_t total = std::accumulate(lengths.begin(), lengths.end(), int64_t{0});
      const ir::Shape full = {total};
      Tensor piece({lengths[static_cast<size_t>(comm.rank())]}, 1.0f), whole(full, 1.0f);
      for (int rep = 0; rep <= o.repeats; ++rep) {
        HS_RETURN_IF_ERROR(comm.Barrier());
        double t0 = ThreadCpuSeconds();
        HS_RETURN_IF_ERROR(AllGatherAlong(comm, piece, full, 0, lengths, CommImpl::kGrouped).status());
        seconds.at(c, 0, rep, comm.rank()) = ThreadCpuSeconds() - t0;
        HS_RETURN_IF_ERROR(comm.Barrier());
        t0 = ThreadCpuSeconds();
        HS_RETURN_IF_ERROR(ReduceScatterAlong(comm, whole, 0, lengths, CommImpl::kGrouped).status());
        seconds.at(c, 1, rep, comm.rank()) = ThreadCpuSeconds() - t0;
        HS_RETURN_IF_ERROR(comm.Barrier());
        Tensor data = whole;
        t0 = ThreadCpuSeconds();
        HS_RETURN_IF_ERROR(comm.AllReduce(data.ptr(), data.numel()));
        seconds.at(c, 2, rep, comm.rank()) = ThreadCpuSeconds() - t0;
        HS_RETURN_IF_ERROR(comm.Barrier());
        t0 = ThreadCpuSeconds();
        HS_RETURN_IF_ERROR(AllGatherAlong(comm, piece, full, 0, lengths, CommImpl::kPadded).status());
        seconds.at(c, 3, rep, comm.rank()) = ThreadCpuSeconds() - t0;
      }
    }
    return absl::OkStatus();
  }));
  seconds.AppendTo(o.collectives, out.collectives);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DeviceProfile> ProfileCpu(const ir::Graph& graph, const DataSource& data, const ProfileOptions& o) {
  if (o.repeats < 1) return absl::InvalidArgumentError(StrCat("repeats ", o.repeats, "; expected at least 1"));
  HS_RETURN_IF_ERROR(ValidateOptimizerConfig(o.optimizer));
  const int n = static_cast<int>(o.speeds.size());
  if (n == 1) return absl::InvalidArgumentError("1 thread rank for the collectives; expected 2 or more (or none)");
  for (const std::vector<int64_t>& lengths : o.collectives) {
    const bool negative = std::any_of(lengths.begin(), lengths.end(), [](int64_t l) { return l < 0; });
    if (static_cast<int>(lengths.size()) != n || negative) {
      return absl::InvalidArgumentError(StrCat("a collective with ", lengths.size(),
                                               " shard lengths; expected one non-negative length per rank (", n, ")"));
    }
  }
  DeviceProfile out;
  out.label = "host";
  out.cluster_type = "host";
  out.clock = "CPU time";
  out.memory_bytes = PhysicalRamBytes();

  // 1. Kernels.
  if (o.progress) {
    o.progress(fmt::format("profile: timing the kernels of {} on 1 thread: 1 warm-up + {} training step{}", o.model,
                           o.repeats, o.repeats == 1 ? "" : "s"));
  }
  HS_RETURN_IF_ERROR(TimeKernels(graph, data, o, out));
  const double kernels = std::accumulate(out.node_seconds.begin(), out.node_seconds.end(), 0.0);
  if (!(kernels > 0)) return out;  // nothing measurable: the caller says so
  if (o.progress) {
    o.progress(fmt::format("profile: timing each GEMM-class node with parameters alone at all its rows and at 1/{}",
                           kOperandRowsDivisor));
  }
  HS_RETURN_IF_ERROR(TimeOperands(graph, out));

  // 2. The executor's compute time against the kernels', on as many ranks as the collectives.
  if (n >= 2) {
    HS_ASSIGN_OR_RETURN(out.compute_scale, ExecutorScale(graph, data, n, o.repeats, kernels + out.optimizer_s, o));
  }

  // 3. Collectives.
  if (n >= 2 && !o.collectives.empty()) {
    const std::vector<int64_t>& largest = o.collectives.back();
    if (o.progress) {
      o.progress(fmt::format("profile: timing grouped and padded all-gather, grouped reduce-scatter (shards by device "
                             "speed) and all-reduce on {} thread ranks, 16 B to {}, 1 warm-up + {} repeat{} per size",
                             n, FormatBytes(4.0 * static_cast<double>(std::accumulate(largest.begin(), largest.end(), int64_t{0}))),
                             o.repeats, o.repeats == 1 ? "" : "s"));
    }
    HS_RETURN_IF_ERROR(TimeCollectives(o, out));
  }
  return out;
}

}  // namespace hetsynth::runtime::cpu
