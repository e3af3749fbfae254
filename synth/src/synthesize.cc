// The search ⇄ ratio-LP alternation and the baselines (see synthesize.h).
#include "hetsynth/synth/synthesize.h"

#include <chrono>
#include <cmath>
#include <optional>

#include "absl/strings/str_join.h"
#include "hetsynth/ir/status.h"

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
  HS_RETURN_IF_ERROR(positive("cost.parameter_state_factor", o.cost.parameter_state_factor,
                              "bytes kept per parameter byte; Adam: 4, SGD: 2"));
  HS_RETURN_IF_ERROR(positive("cost.optimizer_bytes_factor", o.cost.optimizer_bytes_factor,
                              "bytes the update moves per parameter byte; Adam: 7"));
  return absl::OkStatus();
}

std::vector<std::string> BaselineNames() { return {"dp-ev", "dp-cp", "tp-even", "zero-even"}; }

absl::StatusOr<Strategy> StrategyByName(const std::string& name) {
  Strategy s;
  s.name = name;
  if (name == "synthesized") return s;
  s.optimize_ratios = false;
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
  return absl::InvalidArgumentError(StrCat("unknown strategy '", name, "'; expected synthesized or one of ",
                                           absl::StrJoin(BaselineNames(), ", ")));
}

absl::StatusOr<costmodel::Estimate> ApplyRatios(const ir::Graph& g, const costmodel::Cluster& c,
                                                instr::Program& p, const std::vector<double>& ratios,
                                                const SynthOptions& o) {
  p.ratios = {ratios};
  HS_RETURN_IF_ERROR(instr::BuildSplitGroups(g, p));
  HS_RETURN_IF_ERROR(instr::CheckProgram(g, p));
  const costmodel::ProgramCost pc = costmodel::DescribeCost(g, p, c, o.cost);
  return costmodel::Evaluate(pc, costmodel::ProgramShares(p), c, p.instructions.size());
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
// other round or start makes up for, unlike the outcomes "nothing fits" (ResourceExhausted) and
// "out of time" (DeadlineExceeded).
bool IsSolverFailure(const absl::Status& s) { return absl::IsInternal(s); }

}  // namespace

namespace {

// One run of the alternation from the given initial ratios.
absl::StatusOr<SynthResult> Alternate(const ir::Graph& g, const costmodel::Cluster& c, const Strategy& s,
                                      const SynthOptions& o, std::vector<double> ratios, double deadline_s,
                                      const std::chrono::steady_clock::time_point start) {
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  SynthResult best;
  best.strategy = s.name;
  bool have = false;
  SynthOptions round_opts = o;
  for (int round = 0; round < (s.optimize_ratios ? o.max_rounds : 1); ++round) {
    round_opts.time_limit_s = std::max(0.5, deadline_s - elapsed());
    int64_t expanded = 0;
    absl::StatusOr<instr::Program> prog = SearchProgram(g, c, ratios, s, round_opts, &expanded);
    if (!prog.ok()) {
      if (have && !IsSolverFailure(prog.status())) break;  // keep the best program of the earlier rounds
      if (absl::IsResourceExhausted(prog.status())) {
        // Explain with the cheapest memory-blind program.
        SynthOptions blind = round_opts;
        blind.memory_limits = false;
        absl::StatusOr<instr::Program> any = SearchProgram(g, c, ratios, s, blind);
        if (any.ok()) {
          absl::StatusOr<costmodel::Estimate> e = ApplyRatios(g, c, *any, ratios, o);
          if (e.ok()) {
            return absl::ResourceExhaustedError(StrCat("the model fits nowhere: no ", s.name,
                                                       " program fits every device's memory; e.g. ",
                                                       TightestDevice(*e, c)));
          }
        }
      }
      return prog.status();
    }
    best.states_expanded += expanded;
    std::vector<double> next = ratios;
    if (s.optimize_ratios) {
      absl::StatusOr<std::vector<double>> lp = OptimizeRatios(g, c, *prog, o);
      if (lp.ok()) next = *lp;
      if (!lp.ok() && IsSolverFailure(lp.status())) return lp.status();  // else: no ratios fit; keep these
    }
    HS_ASSIGN_OR_RETURN(costmodel::Estimate e, ApplyRatios(g, c, *prog, next, o));
    // The LP's continuous ratios fit; rounding shares to whole atoms can push a small device
    // over. Shrink the ratios of devices over capacity until the rounded shares fit.
    for (int repair = 0; o.memory_limits && !Fits(e, c) && repair < 16; ++repair) {
      for (size_t i = 0; i < next.size(); ++i) {
        if (e.memory_bytes[i] > c.devices[i].memory_bytes) next[i] *= 0.9;
      }
      double sum = 0;
      for (double r : next) sum += r;
      for (double& r : next) r /= sum;
      HS_ASSIGN_OR_RETURN(e, ApplyRatios(g, c, *prog, next, o));
    }
    best.log.push_back(StrCat("round ", round + 1, ": ", prog->instructions.size(), " instructions, ", expanded,
                              " states, predicted ", e.step_s * 1e3, " ms/step"));
    const bool better = !have || e.step_s < best.estimate.step_s * (1 - 1e-9);
    if (better) {
      best.program = std::move(*prog);
      best.estimate = e;
      best.rounds = round + 1;
      have = true;
    }
    if (!better || next == ratios || elapsed() > deadline_s) break;
    ratios = next;
  }
  if (o.memory_limits && !Fits(best.estimate, c)) {
    return absl::ResourceExhaustedError(StrCat("the model fits nowhere: ", TightestDevice(best.estimate, c)));
  }
  return best;
}

}  // namespace

absl::StatusOr<SynthResult> Synthesize(const ir::Graph& g, const costmodel::Cluster& c, const Strategy& s,
                                       const SynthOptions& o) {
  HS_RETURN_IF_ERROR(ValidateSynthOptions(o));
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  if (!s.optimize_ratios) {
    HS_ASSIGN_OR_RETURN(SynthResult r, Alternate(g, c, s, o, InitialRatios(c, s.even_ratios), o.time_limit_s, start));
    r.seconds = elapsed();
    return r;
  }
  // The alternation is a local search: start it from ratios ∝ FLOP/s, from even ratios and from
  // ratios ∝ memory when neither found a plan that fits (a small device may only fit a small
  // share), and
  // also re-optimize the ratios of every baseline's program (each is in the search space), so
  // the result is never worse than the best baseline under the cost model.
  std::optional<SynthResult> best;
  absl::Status first_error = absl::OkStatus();
  absl::Status solver_failure = absl::OkStatus();
  auto consider = [&](absl::StatusOr<SynthResult> r) {
    if (!r.ok()) {
      if (first_error.ok()) first_error = r.status();
      if (solver_failure.ok() && IsSolverFailure(r.status())) solver_failure = r.status();
      return;
    }
    if (!best || r->estimate.step_s < best->estimate.step_s * (1 - 1e-9)) {
      const int64_t states = best ? best->states_expanded : 0;
      std::vector<std::string> log = best ? best->log : std::vector<std::string>{};
      best = std::move(*r);
      best->states_expanded += states;
      log.insert(log.end(), best->log.begin(), best->log.end());
      best->log = std::move(log);
    } else {
      best->states_expanded += r->states_expanded;
      best->log.insert(best->log.end(), r->log.begin(), r->log.end());
    }
  };
  const double budget = o.time_limit_s;
  consider(Alternate(g, c, s, o, InitialRatios(c, false), 0.4 * budget, start));
  consider(Alternate(g, c, s, o, InitialRatios(c, true), 0.6 * budget, start));
  if (o.memory_limits && !best) consider(Alternate(g, c, s, o, MemoryRatios(c), 0.8 * budget, start));
  for (const std::string& name : BaselineNames()) {
    if (elapsed() > budget) break;
    const Strategy b = *StrategyByName(name);
    absl::StatusOr<SynthResult> base = Alternate(g, c, b, o, InitialRatios(c, b.even_ratios), budget, start);
    if (!base.ok() && IsSolverFailure(base.status())) return base.status();
    if (!base.ok()) continue;
    absl::StatusOr<std::vector<double>> lp = OptimizeRatios(g, c, base->program, o);
    if (!lp.ok() && IsSolverFailure(lp.status())) return lp.status();
    if (!lp.ok()) continue;
    absl::StatusOr<costmodel::Estimate> e = ApplyRatios(g, c, base->program, *lp, o);
    if (!e.ok() || (o.memory_limits && !Fits(*e, c))) continue;
    base->estimate = *e;
    base->strategy = s.name;
    base->log = {StrCat(name, "'s program with optimized ratios: predicted ", e->step_s * 1e3, " ms/step")};
    consider(std::move(base));
  }
  if (!solver_failure.ok()) return solver_failure;
  if (!best) return first_error;
  best->seconds = elapsed();
  return std::move(*best);
}

}  // namespace hetsynth::synth
