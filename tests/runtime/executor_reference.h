// Shared by the executor tests (threads, in executor_test.cc) and the MPI check
// (executor_mpi_main.cc): a plan for a built-in model on the mixed-4 example cluster, training
// it on one device (the reference) and across ranks, and comparing the two.
#pragma once

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_join.h"
#include "hetsynth/costmodel/cluster.h"
#include "hetsynth/ir/models.h"
#include "hetsynth/base/status.h"
#include "hetsynth/runtime/comm.h"
#include "hetsynth/runtime/data.h"
#include "hetsynth/runtime/executor.h"
#include "hetsynth/runtime/trainer.h"
#include "hetsynth/synth/synthesize.h"

#ifndef HETSYNTH_TEST_TIMEOUT_SCALE
#define HETSYNTH_TEST_TIMEOUT_SCALE 1
#endif

namespace hetsynth::runtime::testing {

struct PlanCase {
  PlanCase() = default;
  PlanCase(std::string m, std::string s, std::vector<std::string> a = {}, int k = 0, std::string v = "")
      : model(std::move(m)), strategy(std::move(s)), args(std::move(a)), per_node(k), variant(std::move(v)) {}
  std::string model, strategy;
  std::vector<std::string> args;  // model overrides on the small preset
  // 0: the mixed-4 example cluster. k >= 1: TwoNodeCluster(k), 2k devices on two nodes.
  int per_node = 0;
  // What the test makes of the synthesized program (ApplyVariant): "" as synthesized,
  // "hier", "buckets", "overlap", "all" (hierarchical + buckets + overlap), "blocking".
  std::string variant;
  std::string Name() const {
    std::string n = model + "_" + strategy;
    for (const std::string& a : args) n += "_" + a;
    if (per_node > 0) n += StrCat("_2x", per_node);
    if (!variant.empty()) n += "_" + variant;
    for (char& ch : n) {
      if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
    }
    return n;
  }
};

struct Setup {
  ir::ModelSpec spec;
  ir::Graph graph;
  instr::Plan plan;
  DataSource data;
  OptimizerConfig optimizer;
  std::vector<double> slowdown;  // per rank: max flops / flops
};

// Two nodes of k devices each behind a slow NIC (1 Gbit/s): node a's devices fast, node b's
// half of them at half speed and the rest at quarter speed.
inline std::string TwoNodeCluster(int k) {
  std::string devices;
  for (int i = 0; i < 2 * k; ++i) {
    const std::string type = i < k ? "fast" : (i < k + k / 2 ? "half" : "quarter");
    devices += StrCat(i ? "," : "", "{\"name\": \"", i < k ? "a/" : "b/", type, i, "\", \"type\": \"", type,
                      "\", \"node\": \"", i < k ? "a" : "b", "\"}");
  }
  return StrCat(R"({"format": "hetsynth-cluster", "version": 1, "name": "two-node-2x)", k, R"(",
    "device_types": {
      "fast": {"flops": 4e10, "memory_bytes": 17179869184, "memory_bandwidth": 2e10},
      "half": {"flops": 2e10, "memory_bytes": 8589934592, "memory_bandwidth": 2e10},
      "quarter": {"flops": 1e10, "memory_bytes": 4294967296, "memory_bandwidth": 2e10}},
    "nodes": [{"name": "a"}, {"name": "b"}],
    "devices": [)", devices, R"(],
    "links": {"intra_node": {"bandwidth": 1e10, "latency": 2e-6},
              "inter_node": {"bandwidth": 1.25e8, "latency": 5e-5}}})");
}

// Makes the synthesized program the plan kind under test, through the instr API, and checks
// that it is one (an error otherwise — the test would not test it):
//   hier:    every all-gather, reduce-scatter, all-reduce and bucket hierarchical (needs the
//            program's two-level mesh; without buckets, one bucket per replicated gradient),
//            no overlap;
//   buckets: the replicated gradients in two buckets (first half, second half of the ready
//            order), no overlap;
//   overlap: the plan's buckets, overlapped;
//   all:     hierarchical, two buckets (when there are 3 or more replicated gradients),
//            overlapped;
//   blocking: no buckets (one all-reduce per gradient, world or across nodes), no overlap.
inline absl::Status ApplyVariant(const ir::Graph& g, instr::Program& p, const std::string& variant) {
  if (variant.empty()) return absl::OkStatus();
  if (variant == "blocking") {
    p.buckets.clear();
    p.overlap = false;
    return instr::CheckProgram(g, p);
  }
  const bool hier = variant == "hier" || variant == "all";
  const bool buckets = variant == "buckets" || variant == "all";
  p.overlap = variant == "overlap" || variant == "all";
  const std::vector<ir::ValueId> ready = instr::ReplicatedParametersInReadyOrder(p);
  if (buckets && (variant == "buckets" || ready.size() >= 3)) {
    if (ready.size() < 3) return absl::FailedPreconditionError(StrCat(ready.size(), " replicated parameters: no buckets to make"));
    const size_t half = ready.size() / 2;
    p.buckets = {{{ready.begin(), ready.begin() + static_cast<std::ptrdiff_t>(half)}, instr::CollImpl::kRing},
                 {{ready.begin() + static_cast<std::ptrdiff_t>(half), ready.end()}, instr::CollImpl::kRing}};
  }
  if (hier && p.buckets.empty()) {
    for (ir::ValueId v : ready) p.buckets.push_back({{v}, instr::CollImpl::kRing});
  }
  if (hier) {
    if (!instr::TwoLevelNodes(p.nodes, p.num_devices)) return absl::FailedPreconditionError("the program has no two-level mesh");
    int n = 0;
    for (instr::Instruction& in : p.instructions) {
      if (in.kind == instr::InstrKind::kAllGather || in.kind == instr::InstrKind::kReduceScatter ||
          in.kind == instr::InstrKind::kAllReduce) {
        in.impl = instr::CollImpl::kHierarchical;
        ++n;
      }
    }
    for (instr::Bucket& b : p.buckets) {
      b.impl = instr::CollImpl::kHierarchical;
      ++n;
    }
    if (n == 0) return absl::FailedPreconditionError("nothing to make hierarchical");
  }
  return instr::CheckProgram(g, p);
}

// Mesh-level instructions the synthesizer does not write today, in hand-made programs for the
// small mlp over 2 nodes × 2 (node shares 0.6 / 0.4, uneven inside node 0): nodes-level
// all-gather, slice, all-to-all, reduce-scatter and all-reduce; parameters split over the nodes
// and whole inside them ((G d, I)); a row rule over the nodes whose bias one node adds; the loss
// as node partial sums (R, I).
namespace hand {

using instr::Instruction;
using instr::InstrKind;
using instr::Level;
using instr::Placement;
constexpr Placement kI{instr::PropKind::kIdentity, -1};
constexpr Placement kG0{instr::PropKind::kGather, 0};

inline absl::StatusOr<Instruction> Derived(const ir::Graph& g, Instruction in) {
  HS_RETURN_IF_ERROR(instr::DeriveTriple(g, in));
  return in;
}
inline absl::StatusOr<Instruction> Place(const ir::Graph& g, const std::string& t, std::optional<Placement> outer = std::nullopt) {
  Instruction in;
  in.kind = g.value(g.Find(t)).kind == ir::ValueKind::kInput ? InstrKind::kPlaceInput : InstrKind::kPlaceParameter;
  in.tensor = g.Find(t);
  in.outer = outer;
  return Derived(g, in);
}
// Rule `inner` within the nodes, and `outer` over them (empty: a world rule).
inline absl::StatusOr<Instruction> Compute(const ir::Graph& g, const std::string& node, std::string_view inner,
                                    std::string_view outer = "") {
  Instruction in;
  in.kind = InstrKind::kCompute;
  in.node = g.value(g.Find(node)).producer;
  instr::RuleId id;
  if (!instr::ParseRuleName(inner, &id)) return absl::InvalidArgumentError(StrCat("no rule ", inner));
  in.rule = id;
  if (!outer.empty()) {
    if (!instr::ParseRuleName(outer, &id)) return absl::InvalidArgumentError(StrCat("no rule ", outer));
    in.outer_rule = id;
  }
  return Derived(g, in);
}
inline absl::StatusOr<Instruction> Nodes(const ir::Graph& g, InstrKind kind, const std::string& t, int dim = -1, int dim2 = -1) {
  Instruction in;
  in.kind = kind;
  in.tensor = g.Find(t);
  in.dim = dim;
  in.dim2 = dim2;
  in.level = Level::kNodes;
  in.impl = kind == InstrKind::kAllReduce                                           ? instr::CollImpl::kRing
            : kind == InstrKind::kAllGather || kind == InstrKind::kReduceScatter ? instr::CollImpl::kGrouped
                                                                                  : instr::CollImpl::kNone;
  return Derived(g, in);
}

// "gather": batch over the nodes, gathered across them, replicated, sliced again, the logits
// all-to-all'd to a class split and gathered. "scatter" / "reduce": layer 1 column-split over
// the nodes ((G0, I) parameters), the head a row rule over them, its node partials
// reduce-scattered to a batch split (loss (R, I)) or all-reduced (loss whole).
inline absl::StatusOr<instr::Program> Program(const ir::Graph& g, const std::string& kind) {
  instr::Program p;
  p.num_devices = 4;
  p.nodes = {{0, 1}, {2, 3}};
  p.ratios = {{0.4, 0.2, 0.2, 0.2}};
  std::vector<absl::StatusOr<Instruction>> ins;
  if (kind == "gather") {
    ins = {Place(g, "x", kG0), Place(g, "labels"), Place(g, "layers.0.weight"), Place(g, "layers.0.bias"),
           Compute(g, "layers.0.linear", "replicated", "batch0"), Compute(g, "layers.0.relu", "replicated", "split0"),
           Nodes(g, InstrKind::kAllGather, "layers.0.relu", 0), Place(g, "layers.1.weight"), Place(g, "layers.1.bias"),
           Compute(g, "layers.1.linear", "replicated"), Compute(g, "layers.1.relu", "replicated"),
           Nodes(g, InstrKind::kSlice, "layers.1.relu", 0), Place(g, "head.weight"), Place(g, "head.bias"),
           Compute(g, "head", "replicated", "batch0"), Nodes(g, InstrKind::kAllToAll, "head", 0, 1),
           Nodes(g, InstrKind::kAllGather, "head", 1), Compute(g, "loss", "replicated")};
  } else {
    ins = {Place(g, "x"), kind == "scatter" ? Place(g, "labels", kG0) : Place(g, "labels"), Place(g, "layers.0.weight"), Place(g, "layers.0.bias"),
           Compute(g, "layers.0.linear", "replicated"), Compute(g, "layers.0.relu", "replicated"),
           Place(g, "layers.1.weight", kG0), Place(g, "layers.1.bias", kG0),
           Compute(g, "layers.1.linear", "replicated", "column"), Compute(g, "layers.1.relu", "replicated", "split1"),
           Place(g, "head.weight", Placement{instr::PropKind::kGather, 1}), Place(g, "head.bias"),
           Compute(g, "head", "replicated", "row")};
    if (kind == "scatter") {
      ins.push_back(Nodes(g, InstrKind::kReduceScatter, "head", 0));
      ins.push_back(Compute(g, "loss", "replicated", "batch0"));
    } else {
      ins.push_back(Nodes(g, InstrKind::kAllReduce, "head"));
      ins.push_back(Compute(g, "loss", "replicated"));
    }
  }
  for (absl::StatusOr<Instruction>& in : ins) {
    HS_RETURN_IF_ERROR(in.status());
    p.instructions.push_back(*std::move(in));
  }
  HS_RETURN_IF_ERROR(instr::BuildSplitGroups(g, p));
  HS_RETURN_IF_ERROR(instr::CheckProgram(g, p));
  return p;
}

}  // namespace hand

inline absl::StatusOr<Setup> MakeSetup(const PlanCase& c) {
  Setup s;
  HS_ASSIGN_OR_RETURN(s.spec, ir::MakeModelSpec(c.model, c.args, 0, ir::Preset::kSmall));
  HS_ASSIGN_OR_RETURN(s.graph, ir::BuildModel(s.spec));
  costmodel::Cluster cluster;
  if (c.per_node > 0) {
    HS_ASSIGN_OR_RETURN(cluster, costmodel::ParseCluster(TwoNodeCluster(c.per_node), "two-node test cluster"));
  } else {
    HS_ASSIGN_OR_RETURN(cluster,
                        costmodel::ReadClusterFile(std::string(HETSYNTH_SOURCE_DIR) + "/examples/clusters/mixed-4.json"));
  }
  synth::SynthResult r;
  if (c.strategy.starts_with("hand-")) {
    // A hand-made program (hand::Program) for the small mlp on 2 nodes × 2.
    if (c.model != "mlp" || c.per_node != 2) return absl::InvalidArgumentError("hand-made programs are for mlp on 2x2");
    HS_ASSIGN_OR_RETURN(r.program, hand::Program(s.graph, c.strategy.substr(5)));
  } else {
    HS_ASSIGN_OR_RETURN(synth::Strategy strategy, synth::StrategyByName(c.strategy));
    synth::SynthOptions o;
    // Every rank synthesizes its own copy; sanitized builds (several times slower) get the same
    // factor on this limit as on the tests' time limits.
    o.time_limit_s = 60 * HETSYNTH_TEST_TIMEOUT_SCALE;
    HS_ASSIGN_OR_RETURN(r, synth::Synthesize(s.graph, cluster, strategy, o));
  }
  HS_RETURN_IF_ERROR(ApplyVariant(s.graph, r.program, c.variant));
  s.plan.model = s.spec.name;
  s.plan.model_args = s.spec.args;
  s.plan.batch = s.spec.batch;
  s.plan.cluster = cluster.name;
  s.plan.strategy = c.strategy;
  s.plan.program = r.program;
  double fastest = 0;
  for (const costmodel::Device& d : cluster.devices) fastest = std::max(fastest, d.flops);
  for (const costmodel::Device& d : cluster.devices) {
    s.plan.devices.push_back(d.name);
    s.slowdown.push_back(fastest / d.flops);
  }
  HS_ASSIGN_OR_RETURN(s.data, DataSource::Synthetic(s.spec, s.graph, 7));
  // SGD with momentum: Adam divides each gradient by its own magnitude, so on gradients that
  // are zero up to rounding (e.g. attention key biases) it turns rounding noise into ±lr steps;
  // and at a larger learning rate a ReLU or max-pool decision that rounding tips the other way
  // moves whole gradient entries (vgg19 at lr 0.05, step 5). Agreement here is ~4e-7.
  s.optimizer.kind = OptimizerKind::kSgd;
  s.optimizer.lr = 0.01;
  s.optimizer.momentum = 0.9;
  return s;
}

struct RunResult {
  std::vector<float> losses;
  std::map<std::string, Tensor> params;
};

inline absl::StatusOr<RunResult> TrainSingle(const Setup& s, int steps, const std::string& load = "",
                                             const std::string& save = "") {
  HS_ASSIGN_OR_RETURN(auto trainer, Trainer::Create(s.graph, s.optimizer, 3));
  if (!load.empty()) HS_RETURN_IF_ERROR(trainer->Load(load));
  RunResult out;
  for (int i = 0; i < steps; ++i) {
    HS_ASSIGN_OR_RETURN(Batch batch, s.data.Get(trainer->step()));
    HS_ASSIGN_OR_RETURN(float loss, trainer->Step(batch));
    out.losses.push_back(loss);
  }
  if (!save.empty()) HS_RETURN_IF_ERROR(trainer->Save(save, s.spec.ToString()));
  out.params = trainer->parameters();
  return out;
}

// `steps` training steps of a plan executor (any backend's) on the setup's data, appending each
// step's loss to out.losses.
template <class Ex>
absl::Status RunSteps(const Setup& s, Ex& ex, int steps, RunResult& out) {
  for (int i = 0; i < steps; ++i) {
    HS_ASSIGN_OR_RETURN(Batch batch, s.data.Get(ex.step()));
    HS_ASSIGN_OR_RETURN(StepMetrics m, ex.Step(batch));
    out.losses.push_back(m.loss);
  }
  return absl::OkStatus();
}

inline absl::StatusOr<RunResult> TrainPlan(const Setup& s, Communicator& comm, int steps, const std::string& load = "",
                                           const std::string& save = "") {
  ExecutorOptions o;
  o.optimizer = s.optimizer;
  o.seed = 3;
  o.slowdown = s.slowdown.at(static_cast<size_t>(comm.rank()));
  HS_ASSIGN_OR_RETURN(auto ex, Executor::Create(s.graph, s.plan, comm, o));
  if (!load.empty()) HS_RETURN_IF_ERROR(ex->Load(load));
  RunResult out;
  HS_RETURN_IF_ERROR(RunSteps(s, *ex, steps, out));
  if (!save.empty()) HS_RETURN_IF_ERROR(ex->Save(save, s.spec.ToString()));
  HS_ASSIGN_OR_RETURN(out.params, ex->FullParameters());
  return out;
}

// "" when every parameter of `got` equals `ref` within tol relative to the tensor's largest
// magnitude; else the worst offenders.
inline std::string CompareParams(const std::map<std::string, Tensor>& ref, const std::map<std::string, Tensor>& got,
                                 double tol) {
  std::vector<std::string> bad;
  for (const auto& [name, r] : ref) {
    auto it = got.find(name);
    if (it == got.end() || it->second.shape != r.shape) {
      bad.push_back(name + ": missing or wrong shape");
      continue;
    }
    double scale = 0, diff = 0;
    for (int64_t i = 0; i < r.numel(); ++i) {
      scale = std::max(scale, std::abs(double(r.data[i])));
      diff = std::max(diff, std::abs(double(r.data[i]) - double(it->second.data[i])));
    }
    if (!(diff <= tol * std::max(scale, 1e-3))) bad.push_back(StrCat(name, ": max diff ", diff, " of max |x| ", scale));
  }
  if (got.size() != ref.size()) bad.push_back(StrCat(got.size(), " parameters instead of ", ref.size()));
  return absl::StrJoin(bad, "; ");
}

inline std::string Compare(const RunResult& ref, const RunResult& got, double tol) {
  std::vector<std::string> bad;
  if (got.losses.size() != ref.losses.size()) bad.push_back("different number of steps");
  for (size_t i = 0; i < std::min(ref.losses.size(), got.losses.size()); ++i) {
    if (!(std::abs(ref.losses[i] - got.losses[i]) <= tol * std::abs(ref.losses[i]))) {
      bad.push_back(StrCat("loss of step ", i + 1, ": ", got.losses[i], " vs ", ref.losses[i]));
    }
  }
  const std::string p = CompareParams(ref.params, got.params, tol);
  if (!p.empty()) bad.push_back(p);
  return absl::StrJoin(bad, "; ");
}

}  // namespace hetsynth::runtime::testing

