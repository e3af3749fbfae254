// `hetsynth bench`: synthesize the plan and the baselines for a cluster, run each on (emulated)
// ranks, and report measured against predicted step times, speedups over dp-ev and over the best
// baseline, and the efficiency against the ideal bound.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "backend_flags.h"
#include "commands.h"
#include "emulated_cluster.h"
#include "refit.h"
#include "refit_names.h"
#include "inference.h"
#include "hetsynth/costmodel/cost.h"
#include "hetsynth/costmodel/mesh.h"
#include "hetsynth/instr/rules.h"
#include "hetsynth/base/median.h"
#include "hetsynth/base/status.h"
#include "hetsynth/runtime/grad_sync.h"
#include "train.h"

namespace hetsynth::cli {
namespace {

struct BenchFlags {
  ModelOptions model;
  std::string cluster, out, baselines = "ddp-ev,ddp-cp,fsdp-even,megatron,hap,dp-ev,dp-cp,tp-even,zero-even", backend = "cpu",
                                  precision = "fp32";
  bool emulate_gpus = false;
  bool flat = false, no_overlap = false, mesh_levels = true, segments = true;
  int64_t steps = 10, warmup = 2;
  // In-process runs: the plans run in turn `rounds` times, steps/rounds measured steps each.
  int64_t rounds = 4;
  int ranks = 0;
  bool simulate = false;
  double time_limit = 600;
  uint64_t seed = 0;
  // --emulate-network: run every plan as real mpirun ranks across an emulated cluster (network
  // namespaces, shaped NICs; docs/emulated-cluster.md) with time dilation K.
  bool emulate_network = false;
  double dilation = -1;      // -1: DefaultDilation
  std::string network_name;  // use (or bring up) the emulated cluster of this name; empty: a temporary one
  std::string mpirun = "mpirun";
  int refit = 0;  // --refit N: at most N rounds of measure → refit the cost model → re-synthesize
  bool inference = false;  // --inference: placement methods' inference latency instead of training plans
  int requests = 5;        // --inference: requests per method
};

// The rounds in-process runs take: --rounds, at most one per measured step.
int64_t Rounds(const BenchFlags& f) { return std::clamp<int64_t>(f.rounds, 1, std::max<int64_t>(1, f.steps)); }

struct Entry {
  std::string name;
  bool feasible = false;
  std::string why;  // infeasible: the synthesizer's reason
  std::string not_run;  // feasible but not run: why (instr::RuntimeSupports)
  std::string note;     // ran a variant: why (--emulate-network falls back to a plan the runtime runs)
  instr::Plan plan;
  double predicted = 0, measured = NAN, exposed = 0;
  double compute = NAN, communication = NAN, idle = NAN, overlapped = NAN;  // measured means over ranks
  double late = NAN;  // --emulate-network: mean over ranks of the time paced work ran late
  costmodel::Estimate estimate;  // the cost model's, per instruction (--refit compares with the trace)
  // Per device (rank): the compute the cost model gives it (costmodel::DeviceComputeSeconds) and
  // what its rank measured, mean per step (empty when not run).
  std::vector<double> device_compute_pred, device_compute_meas;
};

// Mean of the measured steps (after `warmup`) of a `hetsynth train --metrics` file.
absl::Status ReadMeasured(const std::string& path, int64_t warmup, Entry& e) {
  std::ifstream in(path);
  if (!in) return absl::InternalError(StrCat("the ranks wrote no metrics file '", path, "'"));
  std::string line;
  int64_t i = 0;
  double n = 0, t = 0, c = 0, x = 0, w = 0, l = 0, h = 0;
  std::vector<double> ranks;
  while (std::getline(in, line)) {
    if (line.empty() || i++ < warmup) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("step_time_s") || !j.contains("ranks") || !j["ranks"].is_array()) {
      return absl::InternalError(StrCat("'", path, "': bad line: ", line));
    }
    t += j["step_time_s"].get<double>(), c += j["compute_s"].get<double>();
    x += j["communication_s"].get<double>(), w += j["idle_s"].get<double>(), l += j.value("late_s", 0.0);
    h += j.value("overlapped_s", 0.0);
    ranks.resize(j["ranks"].size(), 0.0);
    for (size_t r = 0; r < ranks.size(); ++r) ranks[r] += j["ranks"][r].value("compute_s", 0.0);
    ++n;
  }
  if (n == 0) return absl::InternalError(StrCat("'", path, "' has no measured step (", i, " lines, ", warmup, " warm-up)"));
  e.measured = t / n, e.compute = c / n, e.communication = x / n, e.idle = w / n, e.late = l / n, e.overlapped = h / n;
  e.device_compute_meas.clear();
  for (double r : ranks) e.device_compute_meas.push_back(r / n);
  return absl::OkStatus();
}

std::string Ms(double s) { return std::isfinite(s) ? fmt::format("{:.2f}", s * 1e3) : "—"; }

// Total work of one training step divided by the sum of the devices' throughputs: the step time
// of a perfect split with free communication.
double IdealStepTime(const ir::Graph& g, const costmodel::Cluster& c) {
  double flops = 0, bandwidth = 0;
  for (const costmodel::Device& d : c.devices) flops += d.flops, bandwidth += d.memory_bandwidth;
  const costmodel::ClusterModel m(c);
  double t = 0;
  for (size_t n = 0; n < g.nodes().size(); ++n) {
    const ir::NodeId id = static_cast<ir::NodeId>(n);
    const costmodel::Term term = costmodel::ComputeTerm(g, id, instr::ShardingRules(g, id).at(0), m);
    t += term.coefficient / (term.memory_bound ? bandwidth : flops);
  }
  return t;
}

nlohmann::json Num(double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr); }

// DIR/speedup.{png,svg} with gnuplot: per plan, predicted and measured step time side by side,
// each labelled with its speedup over `reference` (whose times are dp_pred / dp_meas). False
// when gnuplot is not installed.
absl::StatusOr<bool> Plot(const std::string& dir, const std::vector<Entry>& entries, const std::string& title,
                          bool simulated, double dp_pred, double dp_meas, const std::string& reference,
                          const std::string& measured_on) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) return false;  // before writing the data
  {
    std::ostringstream dat;
    dat << "# plan predicted_ms measured_ms predicted_speedup measured_speedup (over the reference)\n";
    for (const Entry& e : entries) {
      if (!e.feasible) continue;
      auto num = [](double x) { return std::isfinite(x) ? fmt::format("{:.6g}", x) : std::string("?"); };
      dat << fmt::format("\"{}\" {} {} {} {}\n", e.name, num(e.predicted * 1e3), num(e.measured * 1e3),
                         num(dp_pred / e.predicted), num(dp_meas / e.measured));
    }
    HS_RETURN_IF_ERROR(WriteFileAtomically(dir + "/speedup.dat", dat.str()));
  }
  std::string quoted_title = title;
  for (char& c : quoted_title) {
    if (c == '"') c = '\'';
  }
  std::ostringstream gp;
  gp << "set datafile missing '?'\n"
     << "set style data histograms\nset style histogram clustered gap 1\n"
     << "set style fill solid 0.9 border -1\nset boxwidth 0.9\n"
     << "set grid ytics\nset yrange [0:*]\nset key top right\nset offsets 0, 0, graph 0.12, 0\n"
     << "set ylabel 'step time (ms)'\n"
     << "set title \"" << quoted_title << "\\n"
     << (simulated ? "predicted by the cost model (not run)" : "predicted vs measured on " + measured_on)
     << "; labels: speedup over " << reference << "\" noenhanced\n";
  const std::string data = "'" + dir + "/speedup.dat'";
  std::string plot = "plot " + data + " using 2:xtic(1) title 'predicted' lc rgb '#9ecae1', " + data + " using ($0" +
                     (simulated ? "" : "-0.17") + "):2:(sprintf('%.2fx', $4)) with labels offset 0,0.8 notitle";
  if (!simulated) {
    plot += ", " + data + " using 3 title 'measured' lc rgb '#2b6ca3', " + data +
            " using ($0+0.17):3:(sprintf('%.2fx', $5)) with labels offset 0,0.8 notitle";
  }
  return RunGnuplot(dir, "speedup", gp.str(), plot);
}

// --emulate-network: runs every runnable entry as `hetsynth train --plan` on one mpirun rank per
// device across the emulated cluster (brought up here, or the one named --network-name when it is
// up), paced by time dilation K; fills each entry's measured times from its metrics file (wall
// clock ÷ K). Returns the timing line for the report.
absl::StatusOr<std::string> RunOnEmulatedNetwork(const BenchFlags& f, const costmodel::Cluster& cluster,
                                                 std::vector<Entry>& entries) {
  // Ctrl-C: the temporary cluster is torn down; --refit installed the handler already.
  HS_ASSIGN_OR_RETURN(const EmulatedLaunch emu,
                      EmulatedLaunch::Open(cluster, f.cluster, f.network_name, f.dilation, "b", f.mpirun));
  const double k = emu.dilation();
  for (Entry& e : entries) {
    if (!e.feasible || !e.not_run.empty()) continue;
    const std::string base = f.out + "/" + e.name;
    std::error_code ec;
    std::filesystem::remove(base + ".metrics.jsonl", ec);
    // Each rank's output goes to its own log: the report stays readable.
    const std::vector<std::string> cmd = {
        "sh", "-c", "p=$1; shift; exec \"$@\" >\"$p.rank$OMPI_COMM_WORLD_RANK.log\" 2>&1", "sh", base, emu.program(), "train",
        "--plan", base + ".plan.json", "--steps", std::to_string(f.warmup + f.steps), "--seed", std::to_string(f.seed),
        "--metrics", base + ".metrics.jsonl", "--trace", base + ".trace.json"};
    fmt::print(stderr, "running {} on {} mpirun ranks across emulated cluster '{}' (K = {:g}): {} steps ...\n", e.name,
               cluster.size(), emu.state().name, k, f.warmup + f.steps);
    HS_ASSIGN_OR_RETURN(const int status, emu.Run(cmd));
    if (status != 0) {
      e.not_run = StrCat("the ranks failed (mpirun exit status ", status, "; logs ", base, ".rank*.log)");
      fmt::print(stderr, "{}: {}\n", e.name, e.not_run);
      continue;
    }
    HS_RETURN_IF_ERROR(ReadMeasured(base + ".metrics.jsonl", f.warmup, e));
    fmt::print(stderr, "  {}: {} ms/step (wall clock / K), predicted {} ms{}\n", e.name, Ms(e.measured), Ms(e.predicted),
               e.late > 0.02 * e.measured ? fmt::format("; paced work ran late by {} ms/step: the host did not keep up, "
                                                        "raise --dilation", Ms(e.late))
                                          : "");
  }
  const EmulatedClusterState& st = emu.state();
  return fmt::format(
      "wall clock / K (K = {:g}) of real mpirun ranks across an EMULATED {}-node network on this host: network "
      "namespaces, each node's NIC shaped (tc tbf) to {:.3g} MB/s = inter-node {:.3g} MB/s / K; EMULATED device speeds: "
      "each rank paced K x slower than its device (its CPU time x max flops / its flops); links inside a node are "
      "shared memory, not scaled (docs/emulated-cluster.md)",
      k, st.nodes.size(), st.shaped_bytes_per_s / 1e6, st.bandwidth / 1e6);
}

absl::Status RunBench(const BenchFlags& f, std::vector<Entry>* keep = nullptr, ir::Graph* graph = nullptr) {
  HS_ASSIGN_OR_RETURN(ir::ModelSpec spec, f.model.Resolve());
  HS_ASSIGN_OR_RETURN(ir::Graph g, ir::BuildModel(spec));
  HS_ASSIGN_OR_RETURN(costmodel::Cluster cluster, costmodel::ReadClusterFile(f.cluster));
  HS_ASSIGN_OR_RETURN(const runtime::Backend* backend, BackendFlag(f.backend));
  const runtime::BackendCapabilities& caps = backend->capabilities();
  // The texts below say how GPU ranks are timed when the backend times by the wall clock.
  const bool cuda = !caps.emulated_timing;
  if (f.emulate_gpus && !backend->supports_emulate_gpus()) {
    return NeedsBackendFlag("--emulate-gpus", [](const runtime::Backend& b) { return b.supports_emulate_gpus(); });
  }
  // --simulate runs nothing: a precision is only checked against the backend that will run it.
  if (caps.precisions.size() == 1 || !f.simulate) HS_RETURN_IF_ERROR(CheckPrecisionFlag(*backend, f.precision, false));
  if (!caps.thread_ranks && !f.simulate && !UnderMpiLauncher() && !f.emulate_gpus && cluster.size() > 1) {
    return absl::InvalidArgumentError(StrCat("--backend ", backend->name(), " with a ", cluster.size(),
                                             "-device cluster: run one process per ", caps.device, " (mpirun -np ",
                                             cluster.size(), " ...), or add --emulate-gpus to emulate the devices on one ",
                                             caps.device));
  }
  if (!f.simulate) HS_RETURN_IF_ERROR(RequireAvailable(*backend));
  // How the runs are timed, for the output.
  std::string timing = cuda ? (f.emulate_gpus ? "wall clock on virtual GPUs (green contexts with SM shares by speed; "
                                                      "EMULATED mixed cluster, links are the GPU's memory)"
                                                    : "wall clock on GPUs (NCCL)")
                                  : "emulated on CPU ranks (docs/runtime.md)";
  if (f.emulate_network) {
    if (f.simulate) return absl::InvalidArgumentError("--emulate-network runs the plans; drop --simulate");
    if (cuda || f.emulate_gpus) {
      return absl::InvalidArgumentError(StrCat("--emulate-network runs CPU ranks paced by time dilation; drop --backend ",
                                               backend->name(), f.emulate_gpus ? " and --emulate-gpus" : ""));
    }
    if (UnderMpiLauncher()) {
      return absl::InvalidArgumentError("--emulate-network starts its own mpirun across the emulated cluster; run bench "
                                        "once, not under mpirun/srun");
    }
    if (f.ranks > 0) return absl::InvalidArgumentError("--ranks: with --emulate-network there is one rank per device");
    if (f.dilation != -1 && !(f.dilation >= 1)) {
      return absl::InvalidArgumentError(StrCat("--dilation ", f.dilation, ": expected a number >= 1"));
    }
  } else if (f.dilation != -1 || !f.network_name.empty()) {
    return absl::InvalidArgumentError(StrCat(f.dilation != -1 ? "--dilation" : "--network-name",
                                             " is for --emulate-network"));
  }
  if (f.ranks > 0 && f.ranks != cluster.size()) {
    return absl::InvalidArgumentError(StrCat("--ranks ", f.ranks, ": every plan runs one rank per device of cluster '",
                                             cluster.name, "' (", cluster.size(), "); drop --ranks"));
  }
  if (f.steps < 1 || f.warmup < 0) {
    return absl::InvalidArgumentError(StrCat("--steps ", f.steps, " --warmup ", f.warmup, "; expected steps >= 1, warmup >= 0"));
  }
  if (f.time_limit <= 0) return absl::InvalidArgumentError(StrCat("--time-limit ", f.time_limit, "; expected seconds > 0"));
  if (!f.simulate && !UnderMpiLauncher() && !f.emulate_network && cluster.size() > 32) {
    return absl::InvalidArgumentError(StrCat("--cluster '", f.cluster, "' has ", cluster.size(),
                                             " devices: running it takes as many ranks, more than thread ranks on one host "
                                             "should emulate; add --simulate for the cost model's answer, or run under "
                                             "mpirun with ", cluster.size(), " processes"));
  }
  std::vector<std::string> names = {"synthesized"};
  const std::vector<std::string> known = synth::BaselineNames();
  for (const std::string& b : std::vector<std::string>(absl::StrSplit(f.baselines, ',', absl::SkipEmpty()))) {
    if (std::find(known.begin(), known.end(), b) == known.end()) {
      return absl::InvalidArgumentError(StrCat("--baselines: unknown baseline '", b, "'; expected a comma-separated list of ",
                                               absl::StrJoin(known, ", ")));
    }
    if (std::find(names.begin(), names.end(), b) == names.end()) names.push_back(b);
  }
  const bool lead = LauncherRank() == 0;
  std::error_code ec;
  std::filesystem::create_directories(f.out, ec);
  if (ec || !std::filesystem::is_directory(f.out)) {
    return absl::InvalidArgumentError(StrCat("--out '", f.out, "': cannot create the directory (", ec.message(), ")"));
  }

  // Plans.
  synth::SynthOptions so;
  so.time_limit_s = f.time_limit;
  std::vector<synth::Strategy> strategies = {SynthesizedStrategy(f.flat, f.no_overlap, f.mesh_levels, f.segments)};
  for (size_t k = 1; k < names.size(); ++k) strategies.push_back(*synth::StrategyByName(names[k]));
  if (lead) fmt::print(stderr, "synthesizing the plan and {} baselines for {} on '{}' ...\n", names.size() - 1,
                       spec.ToString(), cluster.name);
  std::vector<Entry> entries;
  for (auto& [name, r] : synth::SynthesizeAll(g, cluster, strategies, so)) {
    Entry e;
    e.name = name;
    if (!r.ok()) {
      if (name == "synthesized" || absl::IsDeadlineExceeded(r.status()) || absl::IsInternal(r.status())) return r.status();
      e.why = std::string(r.status().message());
    } else {
      e.feasible = true;
      e.plan = MakePlan(spec, cluster, *r);
      e.predicted = r->estimate.step_s;
      e.exposed = r->estimate.exposed_communication_s;
      e.estimate = r->estimate;
      const costmodel::ClusterModel model(cluster);
      e.device_compute_pred = costmodel::DeviceComputeSeconds(costmodel::DescribeCost(g, r->program, model, so.cost),
                                                              costmodel::ProgramShares(r->program), model);
      if (!f.simulate) {
        if (absl::Status st = instr::RuntimeSupports(e.plan.program); !st.ok()) e.not_run = std::string(st.message());
      }
      if (lead) {
        HS_RETURN_IF_ERROR(WriteFileAtomically(f.out + "/" + name + ".plan.json", instr::PlanToJson(g, e.plan)));
      }
    }
    entries.push_back(std::move(e));
  }


  // Runs.
  HS_ASSIGN_OR_RETURN(runtime::DataSource data, runtime::DataSource::Synthetic(spec, g, f.seed));
  std::vector<double> flops;
  for (const costmodel::Device& d : cluster.devices) flops.push_back(d.flops);
  if (f.emulate_network) {
    HS_ASSIGN_OR_RETURN(timing, RunOnEmulatedNetwork(f, cluster, entries));
  } else if (!f.simulate) {
    // The plans run in turn, `rounds` times, each time after its warm-up steps, so that a slow
    // stretch of this host (other tenants, clock changes) falls on every plan alike; a plan's
    // measured step is the median of all its measured steps, the breakdowns their means.
    const int64_t rounds = Rounds(f);
    std::vector<std::vector<runtime::StepMetrics>> kept(entries.size());
    for (int64_t round = 0; round < rounds; ++round) {
      const int64_t round_steps = f.steps / rounds + (round < f.steps % rounds ? 1 : 0);
      for (size_t k = 0; k < entries.size(); ++k) {
        Entry& e = entries[k];
        if (!e.feasible || !e.not_run.empty()) continue;
        PlanRun p;
        p.plan = &e.plan;
        p.plan_path = f.out + "/" + e.name + ".plan.json";
        p.graph = &g;
        p.spec = spec;
        p.flops = flops;
        p.data = &data;
        p.seed = f.seed;
        p.steps = f.warmup + round_steps;
        p.ranks = f.ranks;
        p.trace = f.out + "/" + e.name + ".trace.json";
        p.backend = backend;
        p.precision = f.precision;
        p.emulate_gpus = f.emulate_gpus;
        p.on_step = [&](int64_t i, const runtime::StepMetrics& m) {
          const std::string line =
              fmt::format("running {:<12} {}step {:>3}/{}{}  {} ms/step ({})", e.name,
                          rounds > 1 ? fmt::format("round {}/{} ", round + 1, rounds) : "", i + 1, p.steps,
                          i < f.warmup ? " (warm-up)" : "", Ms(m.step_time_s), cuda ? "GPU wall clock" : "emulated");
          PrintProgress(line, i + 1 == p.steps, false);
        };
        HS_ASSIGN_OR_RETURN(std::vector<runtime::StepMetrics> steps, RunPlan(p));
        if (!lead) continue;
        for (size_t i = static_cast<size_t>(f.warmup); i < steps.size(); ++i) kept[k].push_back(steps[i]);
      }
    }
    for (size_t k = 0; k < entries.size() && lead; ++k) {
      Entry& e = entries[k];
      if (kept[k].empty()) continue;
      std::vector<double> step_times;
      double c = 0, x = 0, w = 0, h = 0;
      const double n = static_cast<double>(kept[k].size()), per = n * static_cast<double>(cluster.size());
      e.device_compute_meas.assign(static_cast<size_t>(cluster.size()), 0.0);
      for (const runtime::StepMetrics& m : kept[k]) {
        step_times.push_back(m.step_time_s);
        for (size_t r = 0; r < m.ranks.size(); ++r) {
          const runtime::RankTimes& rt = m.ranks[r];
          c += rt.compute_s, x += rt.communication_s, w += rt.idle_s, h += rt.overlapped_s;
          if (r < e.device_compute_meas.size()) e.device_compute_meas[r] += rt.compute_s / n;
        }
      }
      e.measured = Median(step_times);
      e.compute = c / per, e.communication = x / per, e.idle = w / per, e.overlapped = h / per;
    }
  }
  if (!lead) return absl::OkStatus();

  // Results.
  const double ideal = IdealStepTime(g, cluster);
  auto time_of = [&](const std::string& name, bool measured) -> double {
    for (const Entry& e : entries) {
      if (e.name == name && e.feasible) return measured ? e.measured : e.predicted;
    }
    return NAN;
  };
  auto best_baseline = [&](bool measured) {
    double best = NAN;
    for (const Entry& e : entries) {
      const double t = measured ? e.measured : e.predicted;
      if (e.name != "synthesized" && e.feasible && std::isfinite(t) && !(best <= t)) best = t;
    }
    return best;
  };
  const double dp_pred = time_of("dp-ev", false), dp_meas = time_of("dp-ev", true);
  const double ddp_pred = time_of("ddp-ev", false), ddp_meas = time_of("ddp-ev", true);
  const double hap_pred = time_of("hap", false), hap_meas = time_of("hap", true);
  const double best_pred = best_baseline(false), best_meas = best_baseline(true);
  nlohmann::json plans = nlohmann::json::array();
  for (const Entry& e : entries) {
    nlohmann::json j = {{"plan", e.name}, {"feasible", e.feasible}};
    if (!e.feasible) {
      j["infeasible"] = e.why;
      plans.push_back(j);
      continue;
    }
    j["predicted_step_time_s"] = e.predicted;
    j["predicted_exposed_communication_s"] = e.exposed;
    j["measured_step_time_s"] = Num(e.measured);
    if (!e.not_run.empty()) j["not_run"] = e.not_run;
    if (!e.note.empty()) j["note"] = e.note;
    if (f.emulate_network) j["measured_late_s"] = Num(e.late);
    j["measured_breakdown_s"] = {{"compute", Num(e.compute)},
                                 {"communication", Num(e.communication)},
                                 {"idle", Num(e.idle)},
                                 {"overlapped_communication", Num(e.overlapped)}};
    j["predicted_speedup_vs_ddp_ev"] = Num(ddp_pred / e.predicted);
    j["measured_speedup_vs_ddp_ev"] = Num(ddp_meas / e.measured);
    j["predicted_speedup_vs_hap"] = Num(hap_pred / e.predicted);
    j["measured_speedup_vs_hap"] = Num(hap_meas / e.measured);
    j["predicted_speedup_vs_dp_ev"] = Num(dp_pred / e.predicted);
    j["measured_speedup_vs_dp_ev"] = Num(dp_meas / e.measured);
    j["predicted_speedup_vs_best_baseline"] = Num(best_pred / e.predicted);
    j["measured_speedup_vs_best_baseline"] = Num(best_meas / e.measured);
    j["efficiency_predicted"] = ideal / e.predicted;
    j["efficiency_measured"] = Num(ideal / e.measured);
    j["prediction_error"] = Num(e.predicted / e.measured - 1);
    nlohmann::json devices = nlohmann::json::array();
    for (size_t i = 0; i < e.device_compute_pred.size(); ++i) {
      devices.push_back({{"device", cluster.devices[i].name},
                         {"predicted_compute_s", e.device_compute_pred[i]},
                         {"measured_compute_s", Num(i < e.device_compute_meas.size() ? e.device_compute_meas[i] : NAN)}});
    }
    j["compute_per_device"] = devices;
    j["plan_file"] = e.name + ".plan.json";
    if (!f.simulate && e.not_run.empty()) j["trace_file"] = e.name + ".trace.json";
    plans.push_back(j);
  }
  nlohmann::json root = {{"model", spec.ToString()},
                         {"cluster", cluster.name},
                         {"devices", cluster.size()},
                         {"mesh", costmodel::MeshOf(cluster).Describe()},
                         {"simulated", f.simulate},
                         {"emulated_network", f.emulate_network},
                         {"timing", f.simulate ? "predicted by the cost model" : timing},
                         {"steps", f.steps},
                         {"warmup", f.warmup},
                         {"seed", f.seed},
                         {"ideal_step_time_s", ideal},
                         {"plans", plans}};
  HS_RETURN_IF_ERROR(WriteFileAtomically(f.out + "/results.json", root.dump(1) + "\n"));

  std::ostringstream md;
  md << fmt::format("{} on cluster `{}` ({} devices, {}); {}; ideal step (total work / Σ device throughput, no "
                    "communication) {} ms\n\n",
                    spec.ToString(), cluster.name, cluster.size(), costmodel::MeshOf(cluster).Describe(),
                    f.simulate ? "**predicted** by the cost model (not run)"
                    : f.emulate_network
                        ? fmt::format("measured over {} steps after {} warm-up (mean), timing: {}", f.steps, f.warmup, timing)
                        : fmt::format("measured over {} steps in {} rounds of the plans in turn, each after {} warm-up "
                                      "(median step), timing: {}",
                                      f.steps, Rounds(f), f.warmup, timing),
                    Ms(ideal));
  if (f.simulate) {
    md << "| plan | predicted ms | exposed comm. ms | vs ddp-ev | vs hap | vs best baseline | efficiency |\n"
          "|---|---:|---:|---:|---:|---:|---:|\n";
  } else {
    md << "| plan | predicted ms | measured ms | error | vs ddp-ev (pred / meas) | vs hap (pred / meas) | "
          "vs best baseline (pred / meas) | efficiency (pred / meas) |\n|---|---:|---:|---:|---:|---:|---:|---:|\n";
  }
  for (const Entry& e : entries) {
    if (!e.feasible) {
      md << fmt::format("| {} | infeasible |{}\n", e.name, f.simulate ? " | | | | |" : " | | | | | |");
      continue;
    }
    auto x = [](double v) { return std::isfinite(v) ? fmt::format("{:.2f}x", v) : std::string("—"); };
    if (f.simulate) {
      md << fmt::format("| {} | {} | {} | {} | {} | {} | {:.1f}% |\n", e.name, Ms(e.predicted), Ms(e.exposed),
                        x(ddp_pred / e.predicted), x(hap_pred / e.predicted), x(best_pred / e.predicted),
                        100 * ideal / e.predicted);
      continue;
    }
    const double err = e.predicted / e.measured - 1;
    md << fmt::format("| {} | {} | {} | {} | {} / {} | {} / {} | {} / {} | {:.0f}% / {} |\n", e.name, Ms(e.predicted),
                      e.not_run.empty() ? Ms(e.measured) : std::string("not run"),
                      std::isfinite(err) ? fmt::format("{:+.0f}%", 100 * err) : "—", x(ddp_pred / e.predicted),
                      x(ddp_meas / e.measured), x(hap_pred / e.predicted), x(hap_meas / e.measured),
                      x(best_pred / e.predicted), x(best_meas / e.measured), 100 * ideal / e.predicted,
                      std::isfinite(e.measured) ? fmt::format("{:.0f}%", 100 * ideal / e.measured) : "—");
  }
  for (const Entry& e : entries) {
    if (!e.feasible) md << fmt::format("\n{} is infeasible: {}\n", e.name, e.why);
    if (!e.not_run.empty()) md << fmt::format("\n{} was not run: {}\n", e.name, e.not_run);
    if (!e.note.empty()) md << fmt::format("\n{}: {}\n", e.name, e.note);
  }
  // Compute per device, where a rank is a column a reader can scan (a few devices).
  if (!f.simulate && cluster.size() <= 16) {
    md << "\nCompute per device, ms per step, measured / predicted (each rank's compute_s; the cost model's share of "
          "every compute term and optimizer update on that device):\n\n| plan |";
    for (const costmodel::Device& d : cluster.devices) md << " " << d.name << " |";
    md << "\n|---|";
    for (int i = 0; i < cluster.size(); ++i) md << "---:|";
    md << "\n";
    for (const Entry& e : entries) {
      if (!e.feasible || e.device_compute_meas.size() != e.device_compute_pred.size()) continue;
      md << "| " << e.name << " |";
      for (size_t i = 0; i < e.device_compute_pred.size(); ++i) {
        md << " " << Ms(e.device_compute_meas[i]) << " / " << Ms(e.device_compute_pred[i]) << " |";
      }
      md << "\n";
    }
  }
  if (f.emulate_network) {
    md << "\nDevice speeds and link rates are EMULATED (time dilation; docs/emulated-cluster.md): processes, TCP, "
          "shared memory and NIC sharing are real.\n";
  }
  {
    std::ostringstream csv;
    csv << "plan,feasible,run,predicted_s,measured_s,ideal_s,prediction_error,measured_speedup_vs_ddp_ev,"
           "measured_speedup_vs_hap,predicted_speedup_vs_ddp_ev,predicted_speedup_vs_hap,compute_s,communication_s,"
           "idle_s,late_s\n";
    auto v = [](double x) { return std::isfinite(x) ? fmt::format("{:.6g}", x) : std::string(); };
    for (const Entry& e : entries) {
      const bool ran = e.feasible && e.not_run.empty() && std::isfinite(e.measured);
      csv << fmt::format("{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n", e.name, e.feasible ? 1 : 0, ran ? 1 : 0,
                         e.feasible ? v(e.predicted) : "", v(e.measured), v(ideal),
                         v((e.predicted - e.measured) / e.measured), v(ddp_meas / e.measured), v(hap_meas / e.measured),
                         e.feasible ? v(ddp_pred / e.predicted) : "", e.feasible ? v(hap_pred / e.predicted) : "",
                         v(e.compute), v(e.communication), v(e.idle), v(e.late));
    }
    HS_RETURN_IF_ERROR(WriteFileAtomically(f.out + "/results.csv", csv.str()));
  }
  HS_RETURN_IF_ERROR(WriteFileAtomically(f.out + "/results.md", md.str()));
  fmt::print("{}\n", md.str());
  // Bars are labelled with the speedup over ddp-ev (else dp-ev, else the best baseline).
  const bool over_ddp = std::isfinite(ddp_pred), over_dp = std::isfinite(dp_pred);
  HS_ASSIGN_OR_RETURN(const bool plotted,
                      Plot(f.out, entries, StrCat(spec.name, " (batch ", spec.batch, ") on ", cluster.name), f.simulate,
                           over_ddp ? ddp_pred : over_dp ? dp_pred : best_pred,
                           over_ddp ? ddp_meas : over_dp ? dp_meas : best_meas,
                           over_ddp ? "ddp-ev" : over_dp ? "dp-ev" : "the best baseline (dp-ev does not fit)",
                           cuda ? (f.emulate_gpus ? "virtual GPUs (green contexts)" : "GPUs")
                           : f.emulate_network ? "an emulated network (time dilation)"
                                               : "emulated CPU ranks"));
  fmt::print("wrote {0}/results.json, results.csv, results.md{1}, plans{2} to {0}/\n", f.out,
             plotted ? ", speedup.png, speedup.svg" : "", f.simulate ? "" : " and Chrome traces");
  if (!plotted) fmt::print("gnuplot not found: no plots (scripts/install-deps installs gnuplot-nox)\n");
  if (keep != nullptr) *keep = std::move(entries);
  if (graph != nullptr) *graph = std::move(g);
  return absl::OkStatus();
}

// ---- --refit: the closed loop ------------------------------------------------------------------

// The collective op whose inter_node table prices an instruction's communication: a placed
// parameter's is its gradient all-reduce; an all-gather's forward and a reduce-scatter's dual
// (and vice versa) are priced by the all_gather and reduce_scatter tables, scaled together.
std::string TableOp(instr::InstrKind k) {
  switch (k) {
    case instr::InstrKind::kAllGather:
    case instr::InstrKind::kReduceScatter: return "gather";
    case instr::InstrKind::kAllToAll: return "all_to_all";
    default: return "all_reduce";
  }
}

absl::Status AddMeasured(const std::string& dir, const Entry& e, const ir::Graph& g, int64_t warmup, RefitSums& sums) {
  // Step boundaries: the metrics file's step times (the trace's clock is their running sum).
  std::ifstream mf(dir + "/" + e.name + ".metrics.jsonl");
  std::vector<double> step_times;
  for (std::string line; std::getline(mf, line);) {
    if (line.empty()) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) return absl::InternalError(StrCat("bad metrics line in ", dir, "/", e.name, ".metrics.jsonl"));
    step_times.push_back(j.at("step_time_s").get<double>());
  }
  const int64_t measured_steps = static_cast<int64_t>(step_times.size()) - warmup;
  // Ranks are the cluster's devices in order (plans keep the cluster file's order).
  if (measured_steps < 1 || e.device_compute_meas.size() != e.device_compute_pred.size()) {
    return absl::InternalError(StrCat(e.name, ": no measured step to refit from"));
  }
  double t0 = 0;
  for (int64_t i = 0; i < warmup; ++i) t0 += step_times[static_cast<size_t>(i)];
  std::ifstream tf(dir + "/" + e.name + ".trace.json");
  const nlohmann::json trace = nlohmann::json::parse(tf, nullptr, false);
  if (trace.is_discarded()) return absl::InternalError(StrCat("cannot read ", dir, "/", e.name, ".trace.json"));
  // tensor name → per rank Σ seconds of its collectives ("op(x)", "op(grad x)", "op(grad x,
  // nodes)"); a gradient bucket's ("all_reduce(bucket k: n gradients…)") goes to the parameter
  // that completes it, where the cost model puts the bucket's price.
  std::map<std::string, std::map<int, double>> by_tensor;
  const runtime::GradBuckets buckets = runtime::GradBuckets::Of(e.plan.program);
  for (const auto& ev : trace.at("traceEvents")) {
    if (ev.value("ph", "") != "X" || ev.value("cat", "") != "communication") continue;
    if (ev.at("ts").get<double>() * 1e-6 < t0 - 1e-9) continue;  // warm-up
    std::string name = ev.at("name").get<std::string>();
    const size_t open = name.find('('), close = name.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close < open) continue;
    const std::string tensor = RefitTensorOf(name.substr(open + 1, close - open - 1), [&](size_t k) -> std::string {
      if (k >= buckets.buckets.size() || buckets.buckets[k].params.empty()) return "";
      return g.value(buckets.buckets[k].params.back()).name;
    });
    by_tensor[tensor][ev.at("pid").get<int>()] += ev.at("dur").get<double>() * 1e-6;
  }
  // Per tensor: the predicted communication of its instructions, by table op.
  const std::vector<instr::Instruction>& ins = e.plan.program.instructions;
  std::map<std::string, std::map<std::string, double>> predicted;  // tensor → op → seconds
  for (size_t i = 0; i < ins.size() && i < e.estimate.instruction_communication_s.size(); ++i) {
    const double c = e.estimate.instruction_communication_s[i];
    if (c <= 0 || ins[i].tensor < 0) continue;
    predicted[g.value(ins[i].tensor).name][TableOp(ins[i].kind)] += c;
  }
  const double n = static_cast<double>(measured_steps);
  for (const auto& [tensor, ops] : predicted) {
    double pred = 0;
    for (const auto& [op, t] : ops) pred += t;
    double meas = 0;
    if (auto it = by_tensor.find(tensor); it != by_tensor.end() && !it->second.empty()) {
      meas = std::numeric_limits<double>::infinity();
      for (const auto& [rank, t] : it->second) meas = std::min(meas, t / n);
    }
    for (const auto& [op, t] : ops) {  // a tensor's time split over its ops as predicted
      sums.comm[op].first += t;
      sums.comm[op].second += pred > 0 ? meas * t / pred : 0;
    }
  }
  sums.device_pred.resize(e.device_compute_pred.size(), 0.0);
  sums.device_meas.resize(e.device_compute_pred.size(), 0.0);
  for (size_t i = 0; i < e.device_compute_pred.size(); ++i) {
    sums.device_pred[i] += e.device_compute_pred[i];
    sums.device_meas[i] += e.device_compute_meas[i];
  }
  return absl::OkStatus();
}

// --refit N: round r runs the bench in OUT/round<r> on the round's cluster file, then refits the
// cost model's constants from the traces and writes the next round's file; stops when the mean
// prediction error stops improving (or after N rounds) and writes the best file to OUT/tuned.json.
absl::Status RunRefit(const BenchFlags& f) {
  if (!f.emulate_network) return absl::InvalidArgumentError("--refit needs --emulate-network (it refits from real runs)");
  if (f.refit < 1) return absl::InvalidArgumentError(StrCat("--refit ", f.refit, ": expected rounds >= 1"));
  std::error_code ec;
  std::filesystem::create_directories(f.out, ec);
  HS_ASSIGN_OR_RETURN(costmodel::Cluster cluster, costmodel::ReadClusterFile(f.cluster));
  // One emulated cluster for every round (the rounds change no link rate, only the cost model);
  // the rounds attach to it by name and take its dilation.
  HS_ASSIGN_OR_RETURN(const EmulatedLaunch emu,
                      EmulatedLaunch::Open(cluster, f.cluster, f.network_name, f.dilation, "t", f.mpirun));
  const std::string name = emu.state().name;
  std::string path = f.cluster;
  double best = std::numeric_limits<double>::infinity();
  std::string best_path;
  nlohmann::json rounds = nlohmann::json::array();
  std::vector<std::string> lines;
  for (int r = 0; r < f.refit; ++r) {
    BenchFlags fr = f;
    fr.cluster = path;
    fr.out = StrCat(f.out, "/round", r);
    fr.network_name = name;
    fr.dilation = -1;
    fmt::print(stderr, "=== refit round {}: cluster '{}' ===\n", r, path);
    std::vector<Entry> entries;
    ir::Graph g;
    HS_RETURN_IF_ERROR(RunBench(fr, &entries, &g));
    HS_ASSIGN_OR_RETURN(const costmodel::Cluster round_cluster, costmodel::ReadClusterFile(path));
    if (ScopedInterruptHandler::Received() != 0) return absl::CancelledError("interrupted");
    double sum = 0, worst = 0;
    int n = 0;
    nlohmann::json plans = nlohmann::json::object();
    std::string line = fmt::format("round {}:", r);
    RefitSums sums;
    for (const Entry& e : entries) {
      if (!e.feasible || !std::isfinite(e.measured)) continue;
      const double err = std::abs(e.predicted - e.measured) / e.measured;
      sum += err, worst = std::max(worst, err), ++n;
      plans[e.name] = {{"predicted_s", e.predicted}, {"measured_s", e.measured}, {"error", (e.predicted - e.measured) / e.measured}};
      line += fmt::format(" {} {:+.0f}%", e.name, 100 * (e.predicted - e.measured) / e.measured);
      HS_RETURN_IF_ERROR(AddMeasured(fr.out, e, g, f.warmup, sums));
    }
    if (n == 0) return absl::InternalError("refit: no plan ran");
    const double mean = sum / n;
    line += fmt::format("; mean |error| {:.1f}%, worst {:.1f}%", 100 * mean, 100 * worst);
    std::string said;
    const costmodel::Cluster next = Refit(round_cluster, sums, &said);
    line += fmt::format("; refit: {}", said);
    lines.push_back(line);
    fmt::print("{}\n", line);
    rounds.push_back({{"round", r}, {"cluster_file", path}, {"mean_abs_error", mean}, {"worst_abs_error", worst},
                      {"plans", plans}, {"refit", said}});
    const bool improved = mean < best * 0.98;
    if (improved) best = mean, best_path = path;
    if (!improved && r > 0) {
      fmt::print("the prediction error stopped improving (round {}: {:.1f}%, best {:.1f}%): stop\n", r, 100 * mean, 100 * best);
      break;
    }
    if (r + 1 < f.refit) {
      path = StrCat(f.out, "/round", r + 1, ".cluster.json");
      HS_RETURN_IF_ERROR(WriteFileAtomically(path, costmodel::ClusterToJson(next)));
    }
  }
  std::filesystem::copy_file(best_path, f.out + "/tuned.json", std::filesystem::copy_options::overwrite_existing, ec);
  if (ec) return absl::InvalidArgumentError(StrCat("--out '", f.out, "': cannot write tuned.json (", ec.message(), ")"));
  HS_RETURN_IF_ERROR(WriteFileAtomically(
      f.out + "/refit.json",
      nlohmann::json({{"rounds", rounds}, {"best_cluster_file", best_path}, {"best_mean_abs_error", best}}).dump(1) + "\n"));
  fmt::print("refit rounds:\n");
  for (const std::string& l : lines) fmt::print("  {}\n", l);
  fmt::print("best: {} (mean |error| {:.1f}%), copied to {}/tuned.json; per round: {}/round<r>/, {}/refit.json\n", best_path,
             100 * best, f.out, f.out, f.out);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<bool> RunGnuplot(const std::string& dir, const std::string& stem, const std::string& setup,
                                const std::string& plot) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) return false;
  const std::string script = dir + "/" + stem + ".gp";
  {
    std::ostringstream out;
    out << setup << "set terminal pngcairo size 1000,560 font 'DejaVu Sans,11'\nset output '" << dir << "/" << stem
        << ".png'\n"
        << plot << "\n"
        << "set terminal svg size 1000,560 font 'DejaVu Sans,11' dynamic\nset output '" << dir << "/" << stem << ".svg'\n"
        << plot << "\n";
    HS_RETURN_IF_ERROR(WriteFileAtomically(script, out.str()));
  }
  const std::string cmd = StrCat("gnuplot '", script, "' 2>'", dir, "/gnuplot.log'");
  if (std::system(cmd.c_str()) != 0) {
    return absl::InternalError(StrCat("gnuplot failed on ", script, "; see ", dir, "/gnuplot.log"));
  }
  return true;
}

Runner RegisterBench(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "bench", "Synthesize a plan and the baselines for a cluster, run each on emulated ranks, compare measured, "
               "predicted and ideal step times");
  auto f = std::make_shared<BenchFlags>();
  cmd->add_option("--model", f->model.name, "model: built-in (" + ir::ModelNames() + ") or a file (.onnx, graph .json)")->required();
  f->model.AddFlags(*cmd);
  cmd->add_option("--cluster", f->cluster, "cluster file (docs/cluster-format.md)")->required()->type_name("FILE");
  cmd->add_option("--baselines", f->baselines, "comma-separated baselines to compare with")->capture_default_str();
  cmd->add_option("--steps", f->steps, "measured steps per plan")->capture_default_str();
  cmd->add_option("--warmup", f->warmup, "unmeasured steps before them (in every round)")->capture_default_str();
  cmd->add_option("--rounds", f->rounds,
                  "in-process runs: run the plans in turn this many times, --steps / N measured steps each, and take "
                  "each plan's median step (a slow stretch of the host falls on every plan alike)")
      ->check(PositiveInt())
      ->capture_default_str();
  cmd->add_option("--backend", f->backend, "cpu, or cuda (GPUs: one per process under mpirun, or --emulate-gpus)")
      ->capture_default_str();
  cmd->add_option("--precision", f->precision, "with --backend cuda: GEMM arithmetic fp32, tf32 or bf16")
      ->capture_default_str();
  cmd->add_flag("--emulate-gpus", f->emulate_gpus,
                "with --backend cuda: run the cluster's devices as green contexts of one GPU with SM shares "
                "proportional to their speeds");
  cmd->add_option("--ranks", f->ranks, "thread ranks: one per device (the default; any other count is refused)")
      ->check(PositiveInt());
  cmd->add_flag("--simulate", f->simulate, "predict with the cost model only (clusters you do not have)");
  cmd->add_option("--time-limit", f->time_limit,
                  "safety stop for synthesis, seconds: exceeding it fails (plans never depend on the clock); with "
                  "--inference the MILP's limit (default 60): reaching it reports the best placement and its gap")
      ->capture_default_str();
  cmd->add_flag("--flat", f->flat, "synthesized plan: no hierarchical collectives");
  cmd->add_flag("--no-overlap", f->no_overlap,
                "synthesized plan: every collective blocks compute, one all-reduce per gradient (no buckets)");
  cmd->add_flag("--mesh-levels,!--no-mesh-levels", f->mesh_levels,
                "synthesized plan: also search programs over mesh levels (data parallel across nodes x any program "
                "inside them; on by default, --no-mesh-levels: world forms only)");
  cmd->add_flag("--segments,!--no-segments", f->segments,
                "synthesized plan: split groups that no instruction ties together may take their own row of ratios "
                "where that shortens the predicted step by at least 0.5% (on by default; --no-segments: one row)");
  cmd->add_flag("--emulate-network", f->emulate_network,
                "run every plan as real mpirun ranks across an emulated multi-node cluster on this host (network "
                "namespaces, shaped NICs, time dilation; root; docs/emulated-cluster.md)");
  cmd->add_option("--dilation", f->dilation,
                  "with --emulate-network or --inference: time dilation K (default: from the cluster and this host's "
                  "cores, printed)")
      ->type_name("K")
      ->check(DilationFactor());
  cmd->add_option("--network-name", f->network_name,
                  "with --emulate-network: use the emulated cluster of this name if it is up (hetsynth cluster up), "
                  "else bring it up under this name (default: a temporary one)");
  cmd->add_option("--mpirun", f->mpirun, "with --emulate-network: Open MPI's mpirun")->capture_default_str();
  cmd->add_option("--seed", f->seed, "initialization and synthetic data seed")->capture_default_str()->check(SeedValue());
  cmd->add_option("--out", f->out, "directory for results.json, results.md, plans and traces")->required()->type_name("DIR");
  cmd->add_option("--refit", f->refit,
                  "with --emulate-network: closed loop of at most N rounds — run, refit each device class's compute rates "
                  "and the inter-node collective tables from the metrics and traces, re-synthesize — until the "
                  "prediction error stops improving")
      ->type_name("N");
  cmd->add_flag("--inference", f->inference,
                "compare inference placements instead of training plans: every method of 'hetsynth place' (single, even, "
                "speed, heft, milp), predicted and measured on emulated CPU thread ranks (docs/inference.md)");
  cmd->add_option("--requests", f->requests, "with --inference: requests per method (latency: their median)")
      ->check(PositiveInt())
      ->capture_default_str();
  return [f, cmd]() -> absl::Status {
    if (!f->inference) {
      if (cmd->count("--requests") > 0) return absl::InvalidArgumentError("--requests is for --inference");
      return f->refit > 0 ? RunRefit(*f) : RunBench(*f);
    }
    for (const char* flag : {"--baselines", "--steps", "--warmup", "--rounds", "--backend", "--precision", "--emulate-gpus",
                             "--ranks", "--flat", "--no-overlap", "--mesh-levels", "--segments", "--emulate-network", "--network-name",
                             "--mpirun", "--refit"}) {
      if (cmd->count(flag) > 0) {
        // (--mesh-levels counts its negation too)
        return absl::InvalidArgumentError(StrCat(std::string_view(flag) == "--mesh-levels"  ? "--mesh-levels/--no-mesh-levels"
                                                 : std::string_view(flag) == "--segments" ? "--segments/--no-segments"
                                                                                          : flag,
                                                 " is for training plans; --inference runs placements on CPU thread "
                                                 "ranks (flags: --model, --small, --model-arg, --batch, --loss, --cluster, "
                                                 "--requests, --dilation, --time-limit, --seed, --simulate, --out)"));
      }
    }
    BenchInferenceOptions o;
    HS_ASSIGN_OR_RETURN(o.spec, f->model.Resolve());
    o.cluster_path = f->cluster;
    o.out = f->out;
    o.requests = f->requests;
    o.seed = f->seed;
    o.dilation = f->dilation == -1 ? 0 : f->dilation;
    o.time_limit_s = cmd->count("--time-limit") > 0 ? f->time_limit : 60;
    o.simulate = f->simulate;
    return RunBenchInference(o);
  };
}

}  // namespace hetsynth::cli
