// The search ⇄ ratio-LP alternation, bucket choice and the baselines (see synthesize.h).
#include "hetsynth/synth/synthesize.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "hetsynth/base/status.h"
#include "mesh_lift.h"
#include "z3_session.h"

namespace hetsynth::synth {

absl::Status ValidateSynthOptions(const SynthOptions& o) {
  auto positive = [](const char* field, double v, const char* meaning) -> absl::Status {
    if (std::isfinite(v) && v > 0) return absl::OkStatus();
    return absl::InvalidArgumentError(StrCat("synth options: ", field, " is ", v, "; expected a finite number > 0 (",
                                             meaning, ")"));
  };
  HS_RETURN_IF_ERROR(positive("time_limit_s", o.time_limit_s, "seconds of wall clock for the whole synthesis"));
  if (o.max_rounds < 1) {
    return absl::InvalidArgumentError(StrCat("synth options: max_rounds is ", o.max_rounds,
                                             "; expected at least 1 (search ⇄ ratio rounds)"));
  }
  if (o.max_states < 1) {
    return absl::InvalidArgumentError(StrCat("synth options: max_states is ", o.max_states,
                                             "; expected at least 1 (states one search may expand)"));
  }
  HS_RETURN_IF_ERROR(positive("cost.parameter_state_factor", o.cost.parameter_state_factor,
                              "bytes kept per parameter byte; Adam: 4, SGD: 2"));
  HS_RETURN_IF_ERROR(positive("cost.optimizer_bytes_factor", o.cost.optimizer_bytes_factor,
                              "bytes the update moves per parameter byte; Adam: 7"));
  return absl::OkStatus();
}

std::vector<std::string> BaselineNames() {
  return {"ddp-ev", "ddp-cp", "fsdp-even", "megatron", "hap", "dp-ev", "dp-cp", "tp-even", "zero-even"};
}

absl::StatusOr<Strategy> StrategyByName(const std::string& name) {
  Strategy s;
  s.name = name;
  if (name == "synthesized") return s;
  s.optimize_ratios = false;
  // docs/baselines.md says what each imitates and where its constants come from.
  if (name == "ddp-ev" || name == "ddp-cp" || name == "fsdp-even") {
    // PyTorch DDP over NCCL: replicated parameters, 25 MiB gradient buckets all-reduced on a
    // communication stream during backward, ring or hierarchical as NCCL's topology detection
    // would pick. FSDP (ZeRO-3): parameters sharded, all-gathered ahead of use on that stream.
    s.even_ratios = name != "ddp-cp";
    s.only_dim0_splits = true;
    s.allow_sharded_params = false;
    s.allow_replicated_params = name != "fsdp-even";
    s.allow_zero_params = name == "fsdp-even";
    s.bucket_bytes = name == "fsdp-even" ? std::vector<double>{} : std::vector<double>{25 << 20};
    return s;
  }
  if (name == "hap") {
    // The reference system's search space in our cost model: world forms, padded all-gather,
    // no row-parallel / partial-sum rules, one ratio segment, no memory rows, no overlap, no
    // buckets, collectives priced over the slowest link with one bandwidth.
    s.optimize_ratios = true;
    s.allow_reduce_rules = false;
    s.allow_grouped = false;
    s.allow_hierarchical = false;
    s.overlap = false;
    s.bucket_bytes = {};
    s.flat_world_link_pricing = true;
    s.memory_rows = false;
    return s;
  }
  // Today's baselines, kept for continuity: every collective blocks, one all-reduce per
  // gradient, flat collectives.
  s.overlap = false;
  s.bucket_bytes = {};
  s.allow_hierarchical = false;
  if (name == "dp-ev" || name == "dp-cp" || name == "zero-even") {
    // Data parallel: every device trains on its slice of the batch with the whole model.
    s.even_ratios = name != "dp-cp";
    s.only_dim0_splits = true;
    s.allow_sharded_params = false;
    s.allow_replicated_params = name != "zero-even";
    s.allow_zero_params = name == "zero-even";
    return s;
  }
  if (name == "tp-even") {
    // Tensor parallel (Megatron-style): whole batch everywhere, weights split evenly.
    s.even_ratios = true;
    s.inputs_replicated = true;
    s.allow_zero_params = false;
    return s;
  }
  if (name == "megatron") {
    // Megatron-LM's usual layout: tensor parallel inside each node (column / row / heads /
    // vocab rules, whole node batch on every device of the node, even shares) × data parallel
    // across nodes (even node shares); replicated gradients in 25 MiB buckets, sharded ones
    // all-reduced across nodes, on a communication stream (the dp-nodes mode, spec §3/§7a).
    s.dp_nodes = true;
    s.even_ratios = true;
    s.inputs_replicated = true;
    s.split_weights_with_activations = true;
    s.allow_zero_params = false;
    s.overlap = true;
    s.allow_hierarchical = true;
    s.bucket_bytes = {25 << 20};
    return s;
  }
  return absl::InvalidArgumentError(StrCat("unknown strategy '", name, "'; expected synthesized or one of ",
                                           absl::StrJoin(BaselineNames(), ", ")));
}

absl::StatusOr<costmodel::Estimate> ApplyRatios(const ir::Graph& g, const costmodel::Cluster& c,
                                                instr::Program& p, const std::vector<double>& ratios,
                                                const SynthOptions& o) {
  return ApplyRatios(g, costmodel::ClusterModel(c), p, ratios, o);
}

absl::StatusOr<costmodel::Estimate> ApplyRatios(const ir::Graph& g, const costmodel::ClusterModel& m,
                                                instr::Program& p, const std::vector<double>& ratios,
                                                const SynthOptions& o) {
  p.ratios = {ratios};
  for (instr::Instruction& in : p.instructions) in.segment = 0;
  return EstimateProgram(g, m, p, o);
}

absl::StatusOr<costmodel::Estimate> EstimateProgram(const ir::Graph& g, const costmodel::ClusterModel& m,
                                                    instr::Program& p, const SynthOptions& o) {
  HS_RETURN_IF_ERROR(instr::BuildSplitGroups(g, p));
  HS_RETURN_IF_ERROR(instr::CheckProgram(g, p));
  const costmodel::ProgramCost pc = costmodel::DescribeCost(g, p, m, o.cost);
  return costmodel::Evaluate(pc, costmodel::ProgramShares(p), m, p.instructions.size());
}

std::vector<instr::Bucket> MakeBuckets(const ir::Graph& g, const costmodel::ClusterModel& m, const Strategy& s,
                                       const instr::Program& p, double bytes) {
  std::vector<instr::Bucket> out;
  double in_bucket = 0;
  for (ir::ValueId v : instr::ReplicatedParametersInReadyOrder(p)) {
    const double b = costmodel::ValueBytes(g, v);
    if (out.empty() || bytes <= 0 || in_bucket + b > bytes) {
      out.push_back({});
      in_bucket = 0;
    }
    out.back().params.push_back(v);
    in_bucket += b;
  }
  // Parameters whole over the nodes and split within them: buckets of kind nodes, same size rule.
  const size_t world_count = out.size();
  in_bucket = 0;
  for (ir::ValueId v : instr::NodeSyncParametersInReadyOrder(p)) {
    const double b = costmodel::ValueBytes(g, v);
    if (out.size() == world_count || bytes <= 0 || in_bucket + b > bytes) {
      out.push_back({});
      out.back().kind = instr::Level::kNodes;
      in_bucket = 0;
    }
    out.back().params.push_back(v);
    in_bucket += b;
  }
  const bool hierarchical = s.allow_hierarchical && m.hierarchical();
  for (instr::Bucket& b : out) {
    b.impl = instr::CollImpl::kRing;
    if (!hierarchical || b.kind != instr::Level::kWorld) continue;
    const costmodel::Term ring = costmodel::BucketTerm(g, b);
    instr::Bucket h = b;
    h.impl = instr::CollImpl::kHierarchical;
    const costmodel::Term hier = costmodel::BucketTerm(g, h);
    const std::vector<double> even(static_cast<size_t>(m.size()), 1.0 / m.size());
    if (costmodel::TermTime(hier, even, m) < costmodel::TermTime(ring, even, m)) b.impl = instr::CollImpl::kHierarchical;
  }
  return out;
}

void ChooseBuckets(const ir::Graph& g, const costmodel::ClusterModel& m, const Strategy& s, const SynthOptions& o,
                   instr::Program& p) {
  p.buckets.clear();
  if (p.num_devices < 2 || s.bucket_bytes.empty() ||
      (instr::ReplicatedParametersInReadyOrder(p).empty() && instr::NodeSyncParametersInReadyOrder(p).empty())) {
    return;
  }
  const costmodel::Shares shares = costmodel::ProgramShares(p);
  double best = std::numeric_limits<double>::infinity();
  std::vector<instr::Bucket> chosen;
  for (double size : s.bucket_bytes) {
    p.buckets = MakeBuckets(g, m, s, p, size);
    const double step = costmodel::Evaluate(costmodel::DescribeCost(g, p, m, o.cost), shares, m, p.instructions.size()).step_s;
    if (step < best * (1 - 1e-12)) best = step, chosen = p.buckets;
  }
  p.buckets = std::move(chosen);
}

namespace {

std::vector<double> InitialRatios(const costmodel::Cluster& c, bool even) {
  std::vector<double> r;
  const double total = c.TotalFlops();
  for (const costmodel::Device& d : c.devices) r.push_back(even ? 1.0 / c.size() : d.flops / total);
  return r;
}

// Ratios ∝ memory capacity: a start from which memory-tight devices can still fit.
std::vector<double> MemoryRatios(const costmodel::Cluster& c) {
  double total = 0;
  for (const costmodel::Device& d : c.devices) total += d.memory_bytes;
  std::vector<double> r;
  for (const costmodel::Device& d : c.devices) r.push_back(d.memory_bytes / total);
  return r;
}

bool Fits(const costmodel::Estimate& e, const costmodel::Cluster& c) {
  for (size_t i = 0; i < e.memory_bytes.size(); ++i) {
    if (e.memory_bytes[i] > c.devices[i].memory_bytes) return false;
  }
  return true;
}

// The device with the least memory to spare under an estimate.
std::string TightestDevice(const costmodel::Estimate& e, const costmodel::Cluster& c) {
  size_t worst = 0;
  for (size_t i = 0; i < e.memory_bytes.size(); ++i) {
    if (e.memory_bytes[i] / c.devices[i].memory_bytes > e.memory_bytes[worst] / c.devices[worst].memory_bytes) worst = i;
  }
  return StrCat("device '", c.devices[worst].name, "' needs ", static_cast<int64_t>(e.memory_bytes[worst]),
                " bytes and has ", static_cast<int64_t>(c.devices[worst].memory_bytes));
}

// A failure of the solver (a Z3 exception or an `unknown` answer, see ratio_lp.cc), which no
// other round or start makes up for, unlike the outcomes "nothing fits" (ResourceExhausted).
// The safety stop (DeadlineExceeded) ends everything too.
bool IsFatal(const absl::Status& s) { return absl::IsInternal(s) || absl::IsDeadlineExceeded(s); }

// What one Synthesize call shares across its starts: the cluster's two price models and the
// safety clock.
struct Engine {
  const ir::Graph& g;
  const costmodel::Cluster& c;
  const SynthOptions& o;
  costmodel::ClusterModel topology;
  costmodel::ClusterModel flat;
  std::chrono::steady_clock::time_point start;
  mutable Z3Session z3;  // the LPs' and memory oracles' context

  Engine(const ir::Graph& graph, const costmodel::Cluster& cluster, const SynthOptions& opts)
      : g(graph), c(cluster), o(opts), topology(cluster), flat(cluster, costmodel::Pricing::kFlatWorldLink),
        start(std::chrono::steady_clock::now()) {}

  const costmodel::ClusterModel& SearchModel(const Strategy& s) const { return s.flat_world_link_pricing ? flat : topology; }
  double Elapsed() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); }
  // The options of one step: the safety stop is what is left of the whole budget; memory as
  // the strategy sees it.
  SynthOptions StepOptions(const Strategy& s) const {
    SynthOptions step = o;
    step.time_limit_s = std::max(1e-3, o.time_limit_s - Elapsed());
    step.memory_limits = o.memory_limits && s.memory_rows;
    return step;
  }
  absl::Status CheckClock() const { return Elapsed() < o.time_limit_s ? absl::OkStatus() : Timeout(); }
  absl::Status Timeout() const {
    return absl::DeadlineExceededError(StrCat("synthesis exceeded the time limit of ", o.time_limit_s,
                                              " s (a safety stop: the plan must not depend on the machine's speed, "
                                              "so none is returned); raise --time-limit"));
  }
};

// Picks the cheapest allowed implementation of every collective at the program's ratios.
void Reimplement(const Engine& en, const Strategy& s, instr::Program& p) {
  const costmodel::ClusterModel& m = en.SearchModel(s);
  const costmodel::Shares shares = costmodel::ProgramShares(p);
  for (instr::Instruction& in : p.instructions) {
    if (in.level != instr::Level::kWorld) continue;  // chosen on the node by the inner search
    std::vector<instr::CollImpl> impls;
    if (in.kind == instr::InstrKind::kAllGather || in.kind == instr::InstrKind::kReduceScatter) {
      impls = {instr::CollImpl::kPadded};
      if (s.allow_grouped) impls.push_back(instr::CollImpl::kGrouped);
    } else if (in.kind == instr::InstrKind::kAllReduce) {
      impls = {instr::CollImpl::kRing};
    } else {
      continue;
    }
    if (s.allow_hierarchical && m.hierarchical()) impls.push_back(instr::CollImpl::kHierarchical);
    const instr::Property& split = in.pre[0].kind == instr::PropKind::kGather ? in.pre[0] : in.post[0];
    const int group = split.kind == instr::PropKind::kGather ? p.GroupOf(split) : -1;
    const std::vector<double> even(static_cast<size_t>(p.num_devices), 1.0 / p.num_devices);
    const std::vector<double>& sh = group >= 0 ? shares[static_cast<size_t>(group)] : even;
    // The first implementation with the least time (ties keep the simpler one).
    double best = std::numeric_limits<double>::infinity();
    instr::CollImpl chosen = impls.front();
    for (instr::CollImpl impl : impls) {
      in.impl = impl;
      const double t = costmodel::TermTime(costmodel::CollectiveTerm(en.g, in), sh, m);
      if (t < best) best = t, chosen = impl;
    }
    in.impl = chosen;
  }
}

// Prices a program at its rows of ratios for the strategy: rows applied (each group cut by its
// segment's), buckets chosen by the strategy's model, estimated by that model (what the
// strategy's own decisions rest on). Price: one row, every instruction in segment 0.
absl::StatusOr<costmodel::Estimate> PriceRows(const Engine& en, const Strategy& s, instr::Program& p,
                                              const std::vector<std::vector<double>>& rows) {
  const costmodel::ClusterModel& m = en.SearchModel(s);
  p.ratios = rows;
  HS_RETURN_IF_ERROR(instr::BuildSplitGroups(en.g, p));
  ChooseBuckets(en.g, m, s, en.o, p);
  return EstimateProgram(en.g, m, p, en.o);
}

absl::StatusOr<costmodel::Estimate> Price(const Engine& en, const Strategy& s, instr::Program& p,
                                          const std::vector<double>& ratios) {
  for (instr::Instruction& in : p.instructions) in.segment = 0;
  return PriceRows(en, s, p, {ratios});
}

// The memory repair: the LP's continuous ratios fit; rounding shares to whole atoms can push a
// small device over. Shrink the ratios of devices over capacity (in every segment's row) until
// the rounded shares fit.
absl::StatusOr<costmodel::Estimate> RepairRows(const Engine& en, const Strategy& s, instr::Program& p,
                                               std::vector<std::vector<double>>& rows, costmodel::Estimate e) {
  for (int repair = 0; en.o.memory_limits && s.memory_rows && !Fits(e, en.c) && repair < 16; ++repair) {
    for (std::vector<double>& ratios : rows) {
      for (size_t i = 0; i < ratios.size(); ++i) {
        if (e.memory_bytes[i] > en.c.devices[i].memory_bytes) ratios[i] *= 0.9;
      }
      double sum = 0;
      for (double r : ratios) sum += r;
      for (double& r : ratios) r /= sum;
    }
    HS_ASSIGN_OR_RETURN(e, PriceRows(en, s, p, rows));
  }
  return e;
}

absl::StatusOr<costmodel::Estimate> Repair(const Engine& en, const Strategy& s, instr::Program& p,
                                           std::vector<double>& ratios, costmodel::Estimate e) {
  std::vector<std::vector<double>> rows = {ratios};
  HS_ASSIGN_OR_RETURN(e, RepairRows(en, s, p, rows, e));
  ratios = rows.front();
  return e;
}

// One run of the alternation from the given initial ratios and gradient-sync weight.
absl::StatusOr<SynthResult> Alternate(const Engine& en, const Strategy& s, std::vector<double> ratios,
                                      double sync_weight) {
  const costmodel::ClusterModel& m = en.SearchModel(s);
  SynthResult best;
  best.strategy = s.name;
  bool have = false;
  for (int round = 0; round < (s.optimize_ratios ? en.o.max_rounds : 1); ++round) {
    HS_RETURN_IF_ERROR(en.CheckClock());
    const SynthOptions step = en.StepOptions(s);
    int64_t expanded = 0;
    absl::StatusOr<instr::Program> prog = SearchProgramIn(&en.z3, en.g, m, ratios, s, step, &expanded, sync_weight);
    best.states_expanded += expanded;
    if (!prog.ok()) {
      if (absl::IsDeadlineExceeded(prog.status())) return en.Timeout();  // names the whole budget
      if (IsFatal(prog.status())) return prog.status();
      if (have) break;  // keep the best program of the earlier rounds
      if (absl::IsResourceExhausted(prog.status()) && en.o.memory_limits && s.memory_rows) {
        // Explain with the cheapest memory-blind program.
        SynthOptions blind = step;
        blind.memory_limits = false;
        absl::StatusOr<instr::Program> any = SearchProgramIn(&en.z3, en.g, m, ratios, s, blind, nullptr, sync_weight);
        if (any.ok()) {
          absl::StatusOr<costmodel::Estimate> e = ApplyRatios(en.g, m, *any, ratios, en.o);
          if (e.ok()) {
            return absl::ResourceExhaustedError(StrCat("the model fits nowhere: no ", s.name,
                                                       " program fits every device's memory; e.g. ",
                                                       TightestDevice(*e, en.c)));
          }
        }
      }
      return prog.status();
    }
    HS_ASSIGN_OR_RETURN(costmodel::Estimate e, Price(en, s, *prog, ratios));
    std::vector<double> next = ratios;
    if (s.optimize_ratios) {
      absl::StatusOr<std::vector<double>> lp = OptimizeRatiosIn(en.z3, en.g, m, *prog, step);
      if (lp.ok()) next = *lp;
      if (!lp.ok() && IsFatal(lp.status())) return lp.status();  // else: no ratios fit; keep these
      HS_ASSIGN_OR_RETURN(e, Price(en, s, *prog, next));
      HS_ASSIGN_OR_RETURN(e, Repair(en, s, *prog, next, e));
    }
    best.log.push_back(StrCat("round ", round + 1, " (sync weight ", sync_weight, "): ", prog->instructions.size(),
                              " instructions, ", prog->buckets.size(), " buckets, ", expanded, " states, predicted ",
                              e.step_s * 1e3, " ms/step"));
    const bool better = !have || e.step_s < best.estimate.step_s * (1 - 1e-9);
    if (better) {
      best.program = std::move(*prog);
      best.estimate = e;
      best.rounds = round + 1;
      have = true;
    }
    if (!better || next == ratios) break;
    ratios = next;
  }
  if (en.o.memory_limits && s.memory_rows && !Fits(best.estimate, en.c)) {
    return absl::ResourceExhaustedError(StrCat("the model fits nowhere: ", TightestDevice(best.estimate, en.c)));
  }
  return best;
}

// Re-prices a result with the topology model (what every plan is reported in).
absl::Status Reprice(const Engine& en, SynthResult& r) {
  HS_ASSIGN_OR_RETURN(r.estimate, EstimateProgram(en.g, en.topology, r.program, en.o));
  return absl::OkStatus();
}

// The search's second guess at how much of a gradient synchronization the overlapped step pays:
// a tenth (measured on the reference workloads: 1 and 0.1 found the best plans; 0 makes every
// parameter ZeRO, whose gathers then look free).
constexpr double kHiddenSyncWeight = 0.1;

// A local improvement the additive search cannot see: for the largest parameters, switch a
// replicated one to ZeRO (sharded, all-gathered before use) or back, keep the switch when the
// critical path shortens. Consumers still see Identity(W), so the rest of the program stays.
// Deterministic: candidates by size, then value id; first improvement kept.
absl::StatusOr<bool> RefinePlacements(const Engine& en, const Strategy& s, instr::Program& p,
                                      costmodel::Estimate& e) {
  if (!s.overlap || p.num_devices < 2 || !s.allow_replicated_params || !s.allow_zero_params) return false;
  constexpr size_t kCandidates = 6;
  std::vector<std::pair<double, ir::ValueId>> params;
  for (const instr::Instruction& in : p.instructions) {
    // World placements only: a mixed form's slices belong to its node program.
    if (in.kind == instr::InstrKind::kPlaceParameter && !in.outer && (in.dim < 0 || in.dim == 0)) {
      params.push_back({-costmodel::ValueBytes(en.g, in.tensor), in.tensor});
    }
  }
  std::sort(params.begin(), params.end());
  bool changed = false;
  const std::vector<double> ratios = p.ratios.at(0);
  for (size_t k = 0; k < params.size() && k < kCandidates; ++k) {
    const ir::ValueId v = params[k].second;
    instr::Program q = p;
    size_t at = 0;
    while (!(q.instructions[at].kind == instr::InstrKind::kPlaceParameter && q.instructions[at].tensor == v)) ++at;
    const bool zero = at + 1 < q.instructions.size() && q.instructions[at + 1].kind == instr::InstrKind::kAllGather &&
                      q.instructions[at + 1].tensor == v && q.instructions[at + 1].level == instr::Level::kWorld &&
                      q.instructions[at].dim == 0;
    if (!zero && q.instructions[at].dim >= 0) continue;  // an owned shard (tensor parallel): not ours to change
    if (zero) {
      q.instructions.erase(q.instructions.begin() + static_cast<std::ptrdiff_t>(at) + 1);
      q.instructions[at].dim = -1;
    } else {
      if (en.g.value(v).shape.empty()) continue;
      q.instructions[at].dim = 0;
      instr::Instruction gather;
      gather.kind = instr::InstrKind::kAllGather;
      gather.tensor = v;
      gather.dim = 0;
      gather.impl = instr::CollImpl::kPadded;
      q.instructions.insert(q.instructions.begin() + static_cast<std::ptrdiff_t>(at) + 1, gather);
    }
    HS_RETURN_IF_ERROR(instr::DeriveTriple(en.g, q.instructions[at]));
    if (!zero) HS_RETURN_IF_ERROR(instr::DeriveTriple(en.g, q.instructions[at + 1]));
    q.ratios = {ratios};
    HS_RETURN_IF_ERROR(instr::BuildSplitGroups(en.g, q));
    Reimplement(en, s, q);
    absl::StatusOr<costmodel::Estimate> qe = Price(en, s, q, ratios);
    if (!qe.ok()) continue;
    if (qe->step_s < e.step_s * (1 - 1e-9) && (!en.o.memory_limits || !s.memory_rows || Fits(*qe, en.c))) {
      p = std::move(q);
      e = *qe;
      changed = true;
    }
  }
  return changed;
}

// Per-segment ratios (docs/topology.md, "Per-segment ratios"): split groups that no instruction ties
// together may be cut by different rows of ratios. A group's shares price its split compute —
// GEMM-class at FLOP/s, memory-bound at bytes/s — or, for a group without compute (a ZeRO
// shard), its memory and its collectives; the best single row is a compromise between them.
// Three segmentations are tried, in this order: {compute, storage}; {GEMM-class,
// memory-bound, storage}; and, where the program has at most kMaxSegments components (groups
// tied by some instruction), one row per component. The LP gives each segment its own ratios
// (OptimizeSegmentRatiosIn); a segmentation is kept when its step is at least kSegmentsPay
// shorter than the plan's so far and it fits, so a plan has more than one row only where that
// pays. Deterministic: segments are numbered by their first group.
constexpr double kSegmentsPay = 5e-3;
constexpr size_t kMaxSegments = 32;

absl::StatusOr<bool> RefineSegments(const Engine& en, const Strategy& s, instr::Program& p, costmodel::Estimate& e,
                                    std::vector<std::string>& log) {
  if (p.UsesMesh() || p.num_devices < 2 || p.groups.size() < 2 || p.ratios.size() != 1) return false;
  const size_t num_groups = p.groups.size();
  // Groups one instruction uses together must share a row: union them.
  std::vector<int> parent(num_groups);
  for (size_t i = 0; i < num_groups; ++i) parent[i] = static_cast<int>(i);
  auto find = [&](int x) {
    while (parent[static_cast<size_t>(x)] != x) {
      int& up = parent[static_cast<size_t>(x)];
      up = parent[static_cast<size_t>(up)];  // path halving
      x = up;
    }
    return x;
  };
  std::vector<std::vector<int>> used(p.instructions.size());
  for (size_t i = 0; i < p.instructions.size(); ++i) {
    const instr::Instruction& in = p.instructions[i];
    std::vector<instr::Property> props;
    if (in.kind == instr::InstrKind::kCompute) {
      HS_ASSIGN_OR_RETURN(const instr::ComputeRule rule, instr::InstructionRule(en.g, in));
      for (const instr::SplitUse& u : rule.split) props.push_back(u.prop);
    } else {
      props = in.pre;
      props.insert(props.end(), in.post.begin(), in.post.end());
    }
    for (const instr::Property& q : props) {
      if (q.kind != instr::PropKind::kGather) continue;
      const int gi = p.GroupOf(q);
      if (gi < 0) return absl::InternalError(StrCat("segments: instruction ", i, " uses a Gather outside every split group"));
      if (std::find(used[i].begin(), used[i].end(), gi) == used[i].end()) used[i].push_back(gi);
    }
    for (size_t k = 1; k < used[i].size(); ++k) {
      const int a = find(used[i][0]), b = find(used[i][k]);
      if (a != b) parent[static_cast<size_t>(std::max(a, b))] = std::min(a, b);
    }
  }
  // What each component's split compute costs at even shares on the fastest device: GEMM-class
  // seconds and memory-bound seconds.
  const costmodel::ClusterModel& m = en.SearchModel(s);
  double fmax = 0, bwmax = 0;
  for (const costmodel::Device& d : en.c.devices) fmax = std::max(fmax, d.flops), bwmax = std::max(bwmax, d.memory_bandwidth);
  const costmodel::ProgramCost pc = costmodel::DescribeCost(en.g, p, m, en.o.cost);
  std::vector<double> gemm(num_groups, 0.0), bound(num_groups, 0.0);
  for (const costmodel::Term& t : pc.terms) {
    // A sharded parameter's update is split work of its shard's group; it follows the shard's
    // row wherever the shard goes, so it does not make the shard a compute group.
    if (t.kind != costmodel::TermKind::kComputeSplit || t.group < 0 || t.role == costmodel::TermRole::kOptimizer) continue;
    const size_t root = static_cast<size_t>(find(t.group));
    if (t.memory_bound) {
      bound[root] += t.coefficient / bwmax;
    } else {
      gemm[root] += t.coefficient / fmax;
    }
  }
  // Each group's key in each segmentation: 0 compute / 1 storage; 0 GEMM-class / 1 memory-bound
  // / 2 storage; its component.
  std::vector<std::vector<int>> candidates(3, std::vector<int>(num_groups, 0));
  std::set<int> components;
  for (size_t gi = 0; gi < num_groups; ++gi) {
    const size_t root = static_cast<size_t>(find(static_cast<int>(gi)));
    const bool compute = gemm[root] + bound[root] > 0;
    candidates[0][gi] = compute ? 0 : 1;
    candidates[1][gi] = !compute ? 2 : gemm[root] >= bound[root] ? 0 : 1;
    candidates[2][gi] = static_cast<int>(root);
    components.insert(static_cast<int>(root));
  }
  if (components.size() > kMaxSegments) candidates.pop_back();
  const SynthOptions step = en.StepOptions(s);
  bool changed = false;
  std::vector<std::vector<int>> tried;  // segmentations solved (two candidates may coincide)
  // Every candidate starts from the one-row plan.
  const instr::Program one_row = p;
  const char* const kNames[] = {"{compute, storage}", "{GEMM-class, memory-bound, storage}", "one per component"};
  for (size_t cand = 0; cand < candidates.size(); ++cand) {
    const std::vector<int>& keys = candidates[cand];
    const std::string name = StrCat("segments ", kNames[cand], ": ");
    // Segments numbered by their first group.
    std::map<int, int> number;
    std::vector<int> segment_of_group(num_groups);
    for (size_t gi = 0; gi < num_groups; ++gi) {
      const auto it = number.try_emplace(keys[gi], static_cast<int>(number.size())).first;
      segment_of_group[gi] = it->second;
    }
    const int segments = static_cast<int>(number.size());
    if (segments < 2 || std::find(tried.begin(), tried.end(), segment_of_group) != tried.end()) continue;
    tried.push_back(segment_of_group);
    HS_RETURN_IF_ERROR(en.CheckClock());
    // The program with group gi cut by rows[segment_of_group[gi]].
    auto segmented = [&](const std::vector<int>& segment_of, std::vector<std::vector<double>> rows)
        -> absl::StatusOr<instr::Program> {
      instr::Program q = one_row;
      q.ratios = std::move(rows);
      for (size_t i = 0; i < q.instructions.size(); ++i) {
        q.instructions[i].segment = used[i].empty() ? 0 : segment_of[static_cast<size_t>(used[i].front())];
      }
      HS_RETURN_IF_ERROR(instr::BuildSplitGroups(en.g, q));
      bool same = q.groups.size() == num_groups;
      for (size_t gi = 0; same && gi < num_groups; ++gi) {
        same = q.groups[gi].members == one_row.groups[gi].members && q.groups[gi].segment == segment_of[gi];
      }
      if (!same) return absl::InternalError("segments: the split groups changed with their rows");
      return q;
    };
    HS_ASSIGN_OR_RETURN(instr::Program q,
                        segmented(segment_of_group, std::vector<std::vector<double>>(static_cast<size_t>(segments),
                                                                                     one_row.ratios.front())));
    absl::StatusOr<std::vector<std::vector<double>>> rows =
        OptimizeSegmentRatiosIn(en.z3, en.g, m, q, step, segment_of_group, segments);
    if (!rows.ok()) {
      if (IsFatal(rows.status())) return rows.status();
      log.push_back(StrCat(name, segments, " rows: ", rows.status().message()));
      continue;  // no ratios fit: keep one row
    }
    // Segments the LP gave equal rows are one segment. The LP's coefficients are rounded to 7
    // digits, so "equal" is within 1e-6 per device, and a row that close to the one-row plan's
    // (a segment whose terms never bind) is that row exactly.
    auto near = [](const std::vector<double>& a, const std::vector<double>& b) {
      for (size_t i = 0; i < a.size(); ++i) {
        if (std::abs(a[i] - b[i]) > 1e-6) return false;
      }
      return true;
    };
    std::vector<std::vector<double>> distinct;
    std::vector<int> renumber;
    for (std::vector<double> row : *rows) {
      if (near(row, one_row.ratios.front())) row = one_row.ratios.front();
      const auto it = std::find_if(distinct.begin(), distinct.end(), [&](const auto& d) { return near(row, d); });
      renumber.push_back(static_cast<int>(it - distinct.begin()));
      if (it == distinct.end()) distinct.push_back(row);
    }
    if (distinct.size() < 2) {
      log.push_back(StrCat(name, "the LP gives every segment one row"));
      continue;
    }
    for (int& seg : segment_of_group) seg = renumber[static_cast<size_t>(seg)];
    *rows = distinct;
    HS_ASSIGN_OR_RETURN(q, segmented(segment_of_group, *rows));
    Reimplement(en, s, q);  // each collective's cheapest implementation at its group's row
    absl::StatusOr<costmodel::Estimate> qe = PriceRows(en, s, q, *rows);
    if (qe.ok()) qe = RepairRows(en, s, q, *rows, *qe);
    if (!qe.ok()) {
      if (IsFatal(qe.status())) return qe.status();
      log.push_back(StrCat(name, rows->size(), " rows: not priced: ", qe.status().message()));
      continue;
    }
    if (en.o.memory_limits && s.memory_rows && !Fits(*qe, en.c)) {
      log.push_back(StrCat(name, rows->size(), " rows: not kept (", TightestDevice(*qe, en.c), ")"));
      continue;
    }
    const bool pays = qe->step_s < e.step_s * (1 - kSegmentsPay);
    std::string shown;
    for (const std::vector<double>& row : *rows) {
      shown += shown.empty() ? "[" : " [";
      for (size_t i = 0; i < row.size(); ++i) shown += StrCat(i ? " " : "", std::round(row[i] * 1e3) / 1e3);
      shown += "]";
    }
    log.push_back(StrCat(name, rows->size(), " rows ", shown, ": predicted ", qe->step_s * 1e3, " ms/step against ",
                         e.step_s * 1e3, pays ? ": kept" : ": not kept (pays under 0.5%)"));
    if (pays) {
      p = std::move(q);
      e = *qe;
      changed = true;
    }
  }
  return changed;
}

absl::StatusOr<SynthResult> DpNodes(const Engine& en, const Strategy& s, const Strategy& inner,
                                    const std::vector<std::vector<double>>& starts, double sync_weight);

// The synthesized plan: the alternation from several starts, and every baseline's program
// re-implemented, re-bucketed and re-optimized (each is in the search space), keeping the best —
// so the result is never worse than a baseline under the cost model.
absl::StatusOr<SynthResult> SynthesizeFull(const Engine& en, const Strategy& s,
                                           const std::vector<std::pair<std::string, const SynthResult*>>& seeds) {
  // The best world-mode plan (refined below) and the best plan over mesh levels, kept apart so
  // the world plan is exactly what it would be without the mesh modes.
  std::optional<SynthResult> best, best_mesh;
  absl::Status first_error = absl::OkStatus();
  absl::Status fatal = absl::OkStatus();
  int64_t states = 0;
  std::vector<std::string> log;
  auto consider = [&](absl::StatusOr<SynthResult> r) {
    if (!r.ok()) {
      if (first_error.ok()) first_error = r.status();
      if (fatal.ok() && IsFatal(r.status())) fatal = r.status();
      return;
    }
    states += r->states_expanded;
    log.insert(log.end(), r->log.begin(), r->log.end());
    std::optional<SynthResult>& slot = r->program.UsesMesh() ? best_mesh : best;
    if (!slot || r->estimate.step_s < slot->estimate.step_s * (1 - 1e-9)) slot = std::move(*r);
  };
  const std::vector<double> weights = s.overlap ? std::vector<double>{1.0, kHiddenSyncWeight} : std::vector<double>{1.0};
  for (double w : weights) {
    for (bool even : {false, true}) {
      if (fatal.ok()) consider(Alternate(en, s, InitialRatios(en.c, even), w));
    }
  }
  if (fatal.ok() && en.o.memory_limits && !best) consider(Alternate(en, s, MemoryRatios(en.c), 1.0));
  // The dp-nodes mode beside the world mode (spec §3), from ratios ∝ FLOP/s and even.
  if (s.mesh_modes && en.topology.mesh().two_level && !s.flat_world_link_pricing) {
    for (double w : weights) {
      if (!fatal.ok()) continue;
      absl::StatusOr<SynthResult> r = DpNodes(en, s, s, {InitialRatios(en.c, false), InitialRatios(en.c, true)}, w);
      // A graph without batch rules over the nodes simply has no dp-nodes plan.
      if (r.ok() || IsFatal(r.status())) consider(std::move(r));
    }
  }
  for (const auto& [name, seed] : seeds) {
    if (!fatal.ok() || seed == nullptr) continue;
    // A baseline over mesh levels (megatron) seeds only a search that may keep mesh plans.
    if (!s.mesh_modes && seed->program.UsesMesh()) continue;
    // As it is (its ratios), and with the LP's ratios, with this strategy's implementations,
    // overlap and buckets.
    for (bool optimize : {false, true}) {
      SynthResult r = *seed;
      r.strategy = s.name;
      r.states_expanded = 0;
      instr::Program& p = r.program;
      p.overlap = s.overlap && p.num_devices > 1;
      std::vector<double> ratios = p.ratios.at(0);
      absl::StatusOr<costmodel::Estimate> e = Price(en, s, p, ratios);
      if (!e.ok()) continue;
      Reimplement(en, s, p);
      if (optimize) {
        absl::StatusOr<std::vector<double>> lp = OptimizeRatiosIn(en.z3, en.g, en.SearchModel(s), p, en.StepOptions(s));
        if (!lp.ok()) {
          if (IsFatal(lp.status())) fatal = lp.status();
          continue;
        }
        ratios = *lp;
      }
      e = Price(en, s, p, ratios);
      if (!e.ok()) continue;
      e = Repair(en, s, p, ratios, *e);
      if (!e.ok() || (en.o.memory_limits && !Fits(*e, en.c))) continue;
      r.estimate = *e;
      r.log = {StrCat(name, "'s program", optimize ? " with optimized ratios" : "", ": predicted ", e->step_s * 1e3,
                      " ms/step")};
      consider(std::move(r));
    }
  }
  if (!fatal.ok()) return fatal;
  if (!best && best_mesh) best = std::move(best_mesh), best_mesh.reset();
  if (!best) return first_error;
  // Refine the best plan's placements, then its ratios once more.
  instr::Program p = best->program;
  costmodel::Estimate e = best->estimate;
  HS_ASSIGN_OR_RETURN(const bool refined, RefinePlacements(en, s, p, e));
  if (refined) {
    std::vector<double> ratios = p.ratios.at(0);
    absl::StatusOr<std::vector<double>> lp = OptimizeRatiosIn(en.z3, en.g, en.SearchModel(s), p, en.StepOptions(s));
    if (!lp.ok() && IsFatal(lp.status())) return lp.status();
    if (lp.ok()) {
      instr::Program q = p;
      std::vector<double> next = *lp;
      absl::StatusOr<costmodel::Estimate> qe = Price(en, s, q, next);
      if (qe.ok()) qe = Repair(en, s, q, next, *qe);
      if (qe.ok() && qe->step_s < e.step_s && (!en.o.memory_limits || Fits(*qe, en.c))) p = std::move(q), e = *qe;
    }
    log.push_back(StrCat("placements refined: predicted ", e.step_s * 1e3, " ms/step"));
    best->program = std::move(p);
    best->estimate = e;
  }
  if (!best->program.UsesMesh()) {
    // The collectives' implementations were chosen at the search's ratios, before the LP moved
    // them: choose again at the final ratios, keeping the plan if that is no shorter.
    instr::Program q = best->program;
    Reimplement(en, s, q);
    absl::StatusOr<costmodel::Estimate> qe = PriceRows(en, s, q, q.ratios);
    if (qe.ok() && qe->step_s < best->estimate.step_s * (1 - 1e-9) && (!en.o.memory_limits || Fits(*qe, en.c))) {
      log.push_back(StrCat("collectives re-implemented at the final ratios: predicted ", qe->step_s * 1e3, " ms/step"));
      best->program = std::move(q);
      best->estimate = *qe;
    }
  }
  if (s.segments) {
    HS_RETURN_IF_ERROR(RefineSegments(en, s, best->program, best->estimate, log).status());
  }
  if (best_mesh && best_mesh->estimate.step_s < best->estimate.step_s * (1 - 1e-9)) {
    log.push_back(StrCat("a plan over mesh levels wins: predicted ", best_mesh->estimate.step_s * 1e3, " ms/step"));
    best = std::move(best_mesh);
  }
  best->states_expanded = states;
  best->log = std::move(log);
  return std::move(*best);
}

// The dp-nodes mode (spec §3): for each kind of node (device count, types, link), the inner
// level searched on that node alone with strategy `inner` (speeds scaled by the node count: the
// node's share of the batch), lifted to the mesh (LiftDpNodes) and priced at each of `starts`
// (world ratios) with `s`'s implementations, overlap and buckets; the best that fits.
absl::StatusOr<SynthResult> DpNodes(const Engine& en, const Strategy& s, const Strategy& inner,
                                    const std::vector<std::vector<double>>& starts, double sync_weight) {
  const costmodel::Mesh& mesh = en.topology.mesh();
  if (!mesh.two_level) {
    return absl::FailedPreconditionError(StrCat("strategy '", s.name, "' needs a two-level mesh (", mesh.Describe(), ")"));
  }
  std::vector<std::vector<int>> nodes(mesh.nodes.begin(), mesh.nodes.end());
  std::vector<std::string> seen;
  std::optional<SynthResult> best;
  absl::Status error = absl::OkStatus();
  for (int j = 0; j < mesh.num_nodes(); ++j) {
    // A node kind: its devices' classes and its intra link.
    const costmodel::Cluster sub = NodeCluster(en.c, j, mesh.num_nodes());
    std::string key = StrCat(sub.nodes[0].intra.bandwidth, "/", sub.nodes[0].intra.latency);
    for (const costmodel::DeviceClass& k : sub.Classes()) key += StrCat("|", k.key, "x", k.devices.size());
    if (std::find(seen.begin(), seen.end(), key) != seen.end()) continue;
    seen.push_back(key);
    HS_RETURN_IF_ERROR(en.CheckClock());
    const costmodel::ClusterModel sm(sub);
    std::vector<double> sub_ratios = InitialRatios(sub, inner.even_ratios);
    SynthOptions step = en.StepOptions(s);
    step.memory_limits = false;  // memory is checked on the lifted program
    int64_t expanded = 0;
    absl::StatusOr<instr::Program> prog = SearchProgramIn(&en.z3, en.g, sm, sub_ratios, inner, step, &expanded, sync_weight);
    if (!prog.ok()) {
      if (IsFatal(prog.status())) return prog.status();
      if (error.ok()) error = prog.status();
      continue;
    }
    absl::StatusOr<instr::Program> lifted = LiftDpNodes(en.g, *prog, nodes, en.c.size());
    if (!lifted.ok()) {
      if (error.ok()) error = lifted.status();
      continue;
    }
    lifted->overlap = s.overlap && en.c.size() > 1;
    for (const std::vector<double>& ratios : starts) {
      instr::Program q = *lifted;
      absl::StatusOr<costmodel::Estimate> e = Price(en, s, q, ratios);
      if (!e.ok()) {
        if (error.ok()) error = e.status();
        continue;
      }
      if (en.o.memory_limits && s.memory_rows && !Fits(*e, en.c)) {
        if (error.ok()) error = absl::ResourceExhaustedError(StrCat("the model fits nowhere: ", TightestDevice(*e, en.c)));
        continue;
      }
      SynthResult r;
      r.strategy = s.name;
      r.program = std::move(q);
      r.estimate = *e;
      r.rounds = 1;
      r.states_expanded = expanded;
      r.log = {StrCat("dp-nodes (inner level searched on node ", en.c.nodes[static_cast<size_t>(j)].name,
                      ", sync weight ", sync_weight, "): ", r.program.instructions.size(), " instructions, predicted ",
                      e->step_s * 1e3, " ms/step")};
      if (!best || r.estimate.step_s < best->estimate.step_s * (1 - 1e-9)) best = std::move(r);
    }
  }
  if (!best) return error.ok() ? absl::FailedPreconditionError("dp-nodes: no node searched") : error;
  return std::move(*best);
}

absl::StatusOr<SynthResult> RunStrategy(const Engine& en, const Strategy& s,
                                        const std::vector<std::pair<std::string, const SynthResult*>>& seeds) {
  const double started = en.Elapsed();
  if (s.allow_zero_params && !s.allow_replicated_params && !s.allow_sharded_params && en.c.size() < 2) {
    // Otherwise no parameter would have a placement, and the search would blame memory.
    return absl::FailedPreconditionError(StrCat("strategy '", s.name, "' shards every parameter across the devices (ZeRO) "
                                                "and needs at least 2; cluster '", en.c.name, "' has 1"));
  }
  absl::StatusOr<SynthResult> r;
  if (s.dp_nodes) {
    r = DpNodes(en, s, s, {InitialRatios(en.c, s.even_ratios)}, 1.0);
  } else if (!s.optimize_ratios) {
    r = Alternate(en, s, InitialRatios(en.c, s.even_ratios), 1.0);
  } else if (s.name == "hap") {
    // The reference system alternates from ratios ∝ FLOP/s with its own cost model.
    r = Alternate(en, s, InitialRatios(en.c, false), 1.0);
  } else {
    r = SynthesizeFull(en, s, seeds);
  }
  if (!r.ok()) return r;
  HS_RETURN_IF_ERROR(Reprice(en, *r));
  r->seconds = en.Elapsed() - started;
  return r;
}

}  // namespace

absl::StatusOr<SynthResult> Synthesize(const ir::Graph& g, const costmodel::Cluster& c, const Strategy& s,
                                       const SynthOptions& o) {
  HS_RETURN_IF_ERROR(ValidateSynthOptions(o));
  const Engine en(g, c, o);
  std::vector<std::pair<std::string, absl::StatusOr<SynthResult>>> bases;
  std::vector<std::pair<std::string, const SynthResult*>> seeds;
  if (s.optimize_ratios && !s.flat_world_link_pricing) {
    for (const std::string& name : BaselineNames()) {
      const Strategy b = *StrategyByName(name);
      bases.push_back({name, RunStrategy(en, b, {})});
      if (!bases.back().second.ok() && IsFatal(bases.back().second.status())) return bases.back().second.status();
    }
    for (const auto& [name, r] : bases) seeds.push_back({name, r.ok() ? &*r : nullptr});
  }
  return RunStrategy(en, s, seeds);
}

std::vector<std::pair<std::string, absl::StatusOr<SynthResult>>> SynthesizeAll(
    const ir::Graph& g, const costmodel::Cluster& c, const std::vector<Strategy>& strategies, const SynthOptions& o) {
  std::vector<std::pair<std::string, absl::StatusOr<SynthResult>>> out;
  const absl::Status valid = ValidateSynthOptions(o);
  if (!valid.ok()) {
    for (const Strategy& s : strategies) out.push_back({s.name, valid});
    return out;
  }
  // Baselines first (each once), then every other strategy, seeded with all of them.
  const Engine en(g, c, o);
  std::vector<std::pair<std::string, absl::StatusOr<SynthResult>>> bases;
  const std::vector<std::string> names = BaselineNames();
  for (const std::string& name : names) {
    const Strategy b = *StrategyByName(name);
    bases.push_back({name, RunStrategy(en, b, {})});
    if (!bases.back().second.ok() && absl::IsDeadlineExceeded(bases.back().second.status())) break;
  }
  std::vector<std::pair<std::string, const SynthResult*>> seeds;
  for (const auto& [name, r] : bases) seeds.push_back({name, r.ok() ? &*r : nullptr});
  for (const Strategy& s : strategies) {
    const auto it = std::find_if(bases.begin(), bases.end(), [&](const auto& b) { return b.first == s.name; });
    if (it != bases.end()) {
      out.push_back({s.name, it->second});
      continue;
    }
    if (std::find(names.begin(), names.end(), s.name) != names.end()) {  // not reached: stopped by the clock
      out.push_back({s.name, en.Timeout()});
      continue;
    }
    const bool seeded = s.optimize_ratios && !s.flat_world_link_pricing;
    out.push_back({s.name, RunStrategy(en, s, seeded ? seeds : std::vector<std::pair<std::string, const SynthResult*>>{})});
  }
  return out;
}

}  // namespace hetsynth::synth
