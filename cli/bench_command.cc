// `hetsynth bench`: synthesize the plan and the baselines for a cluster, run each on (emulated)
// ranks, and report measured against predicted step times, speedups over dp-ev and over the best
// baseline, and the efficiency against the ideal bound.
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "backend_flags.h"
#include "commands.h"
#include "hetsynth/costmodel/cost.h"
#include "hetsynth/costmodel/mesh.h"
#include "hetsynth/instr/rules.h"
#include "hetsynth/ir/status.h"
#include "train.h"

namespace hetsynth::cli {
namespace {

struct BenchFlags {
  ModelOptions model;
  std::string cluster, out, baselines = "ddp-ev,ddp-cp,fsdp-even,hap,dp-ev,dp-cp,tp-even,zero-even", backend = "cpu",
                                  precision = "fp32";
  bool emulate_gpus = false;
  bool flat = false, no_overlap = false;
  int64_t steps = 10, warmup = 2;
  int ranks = 0;
  bool simulate = false;
  double time_limit = 600;
  uint64_t seed = 0;
};

struct Entry {
  std::string name;
  bool feasible = false;
  std::string why;  // infeasible: the synthesizer's reason
  std::string not_run;  // feasible but not run: why (instr::RuntimeSupports)
  instr::Plan plan;
  double predicted = 0, measured = NAN, exposed = 0;
  double compute = NAN, communication = NAN, idle = NAN;  // measured means over ranks
};

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
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) return false;
  {
    std::ofstream dat(dir + "/speedup.dat", std::ios::binary | std::ios::trunc);
    dat << "# plan predicted_ms measured_ms predicted_speedup measured_speedup (over the reference)\n";
    for (const Entry& e : entries) {
      if (!e.feasible) continue;
      auto num = [](double x) { return std::isfinite(x) ? fmt::format("{:.6g}", x) : std::string("?"); };
      dat << fmt::format("\"{}\" {} {} {} {}\n", e.name, num(e.predicted * 1e3), num(e.measured * 1e3),
                         num(dp_pred / e.predicted), num(dp_meas / e.measured));
    }
    if (!dat) return absl::InvalidArgumentError(StrCat("--out '", dir, "': cannot write speedup.dat"));
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
  gp << "set terminal pngcairo size 1000,560 font 'DejaVu Sans,11'\nset output '" << dir << "/speedup.png'\n"
     << plot << "\n"
     << "set terminal svg size 1000,560 font 'DejaVu Sans,11' dynamic\nset output '" << dir << "/speedup.svg'\n"
     << plot << "\n";
  const std::string script = dir + "/speedup.gp";
  {
    std::ofstream out(script, std::ios::binary | std::ios::trunc);
    out << gp.str();
    if (!out) return absl::InvalidArgumentError(StrCat("--out '", dir, "': cannot write speedup.gp"));
  }
  const std::string cmd = StrCat("gnuplot '", script, "' 2>'", dir, "/gnuplot.log'");
  if (std::system(cmd.c_str()) != 0) {
    return absl::InternalError(StrCat("gnuplot failed on ", script, "; see ", dir, "/gnuplot.log"));
  }
  return true;
}

absl::Status RunBench(const BenchFlags& f) {
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
  const std::string timing = cuda ? (f.emulate_gpus ? "wall clock on virtual GPUs (green contexts with SM shares by speed; "
                                                      "EMULATED mixed cluster, links are the GPU's memory)"
                                                    : "wall clock on GPUs (NCCL)")
                                  : "emulated on CPU ranks (docs/runtime.md)";
  if (f.steps < 1 || f.warmup < 0) {
    return absl::InvalidArgumentError(StrCat("--steps ", f.steps, " --warmup ", f.warmup, "; expected steps >= 1, warmup >= 0"));
  }
  if (f.time_limit <= 0) return absl::InvalidArgumentError(StrCat("--time-limit ", f.time_limit, "; expected seconds > 0"));
  if (!f.simulate && !UnderMpiLauncher() && cluster.size() > 32) {
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
  std::vector<synth::Strategy> strategies = {SynthesizedStrategy(f.flat, f.no_overlap)};
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
      if (!f.simulate) {
        if (absl::Status st = instr::RuntimeSupports(e.plan.program); !st.ok()) e.not_run = std::string(st.message());
      }
      if (lead) {
        std::ofstream out(f.out + "/" + name + ".plan.json", std::ios::binary | std::ios::trunc);
        out << instr::PlanToJson(g, e.plan);
        if (!out) return absl::InvalidArgumentError(StrCat("--out '", f.out, "': cannot write ", name, ".plan.json"));
      }
    }
    entries.push_back(std::move(e));
  }

  // Runs.
  HS_ASSIGN_OR_RETURN(runtime::DataSource data, runtime::DataSource::Synthetic(spec, g, f.seed));
  std::vector<double> flops;
  for (const costmodel::Device& d : cluster.devices) flops.push_back(d.flops);
  if (!f.simulate) {
    for (Entry& e : entries) {
      if (!e.feasible || !e.not_run.empty()) continue;
      PlanRun p;
      p.plan = &e.plan;
      p.plan_path = f.out + "/" + e.name + ".plan.json";
      p.graph = &g;
      p.spec = spec;
      p.flops = flops;
      p.data = &data;
      p.seed = f.seed;
      p.steps = f.warmup + f.steps;
      p.ranks = f.ranks;
      p.trace = f.out + "/" + e.name + ".trace.json";
      p.backend = backend;
      p.precision = f.precision;
      p.emulate_gpus = f.emulate_gpus;
      const bool tty = isatty(STDERR_FILENO) != 0;
      p.on_step = [&](int64_t i, const runtime::StepMetrics& m) {
        const std::string line = fmt::format("running {:<12} step {:>3}/{}{}  {} ms/step ({})", e.name, i + 1,
                                             p.steps, i < f.warmup ? " (warm-up)" : "", Ms(m.step_time_s),
                                             cuda ? "GPU wall clock" : "emulated");
        if (tty) {
          fmt::print(stderr, "\r{}", line);
          if (i + 1 == p.steps) fmt::print(stderr, "\n");
        } else if (i + 1 == p.steps) {
          fmt::print(stderr, "{}\n", line);
        }
      };
      HS_ASSIGN_OR_RETURN(std::vector<runtime::StepMetrics> steps, RunPlan(p));
      if (!lead) continue;
      double t = 0, c = 0, x = 0, w = 0;
      for (size_t i = static_cast<size_t>(f.warmup); i < steps.size(); ++i) {
        t += steps[i].step_time_s;
        for (const runtime::RankTimes& r : steps[i].ranks) c += r.compute_s, x += r.communication_s, w += r.idle_s;
      }
      const double n = static_cast<double>(f.steps), per = n * static_cast<double>(cluster.size());
      e.measured = t / n, e.compute = c / per, e.communication = x / per, e.idle = w / per;
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
    j["measured_breakdown_s"] = {{"compute", Num(e.compute)}, {"communication", Num(e.communication)}, {"idle", Num(e.idle)}};
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
    j["plan_file"] = e.name + ".plan.json";
    if (!f.simulate && e.not_run.empty()) j["trace_file"] = e.name + ".trace.json";
    plans.push_back(j);
  }
  nlohmann::json root = {{"model", spec.ToString()},
                         {"cluster", cluster.name},
                         {"devices", cluster.size()},
                         {"mesh", costmodel::MeshOf(cluster).Describe()},
                         {"simulated", f.simulate},
                         {"timing", f.simulate ? "predicted by the cost model" : timing},
                         {"steps", f.steps},
                         {"warmup", f.warmup},
                         {"ideal_step_time_s", ideal},
                         {"plans", plans}};
  {
    std::ofstream out(f.out + "/results.json", std::ios::binary | std::ios::trunc);
    out << root.dump(1) << "\n";
    if (!out) return absl::InvalidArgumentError(StrCat("--out '", f.out, "': cannot write results.json"));
  }

  std::ostringstream md;
  md << fmt::format("{} on cluster `{}` ({} devices, {}); {}; ideal step (total work / Σ device throughput, no "
                    "communication) {} ms\n\n",
                    spec.ToString(), cluster.name, cluster.size(), costmodel::MeshOf(cluster).Describe(),
                    f.simulate ? "**predicted** by the cost model (not run)"
                               : fmt::format("measured over {} steps after {} warm-up, timing: {}", f.steps, f.warmup, timing),
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
  }
  {
    std::ofstream out(f.out + "/results.md", std::ios::binary | std::ios::trunc);
    out << md.str();
    if (!out) return absl::InvalidArgumentError(StrCat("--out '", f.out, "': cannot write results.md"));
  }
  fmt::print("{}\n", md.str());
  // Bars are labelled with the speedup over ddp-ev (else dp-ev, else the best baseline).
  const bool over_ddp = std::isfinite(ddp_pred), over_dp = std::isfinite(dp_pred);
  HS_ASSIGN_OR_RETURN(const bool plotted,
                      Plot(f.out, entries, StrCat(spec.name, " (batch ", spec.batch, ") on ", cluster.name), f.simulate,
                           over_ddp ? ddp_pred : over_dp ? dp_pred : best_pred,
                           over_ddp ? ddp_meas : over_dp ? dp_meas : best_meas,
                           over_ddp ? "ddp-ev" : over_dp ? "dp-ev" : "the best baseline (dp-ev does not fit)",
                           cuda ? (f.emulate_gpus ? "virtual GPUs (green contexts)" : "GPUs") : "emulated CPU ranks"));
  fmt::print("wrote {0}/results.json, {0}/results.md{1}, plans{2} to {0}/\n", f.out,
             plotted ? ", speedup.png, speedup.svg" : "", f.simulate ? "" : " and Chrome traces");
  if (!plotted) fmt::print("gnuplot not found: no plots (scripts/install-deps installs gnuplot-nox)\n");
  return absl::OkStatus();
}

}  // namespace

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
  cmd->add_option("--warmup", f->warmup, "unmeasured steps before them")->capture_default_str();
  cmd->add_option("--backend", f->backend, "cpu, or cuda (GPUs: one per process under mpirun, or --emulate-gpus)")
      ->capture_default_str();
  cmd->add_option("--precision", f->precision, "with --backend cuda: GEMM arithmetic fp32, tf32 or bf16")
      ->capture_default_str();
  cmd->add_flag("--emulate-gpus", f->emulate_gpus,
                "with --backend cuda: run the cluster's devices as green contexts of one GPU with SM shares "
                "proportional to their speeds");
  cmd->add_option("--ranks", f->ranks, "thread ranks (default: one per device)")->check(CLI::PositiveNumber);
  cmd->add_flag("--simulate", f->simulate, "predict with the cost model only (clusters you do not have)");
  cmd->add_option("--time-limit", f->time_limit,
                  "safety stop for synthesis, seconds: exceeding it fails (plans never depend on the clock)")
      ->capture_default_str();
  cmd->add_flag("--flat", f->flat, "synthesized plan: no hierarchical collectives");
  cmd->add_flag("--no-overlap", f->no_overlap,
                "synthesized plan: every collective blocks compute, one all-reduce per gradient (no buckets)");
  cmd->add_option("--seed", f->seed, "initialization and synthetic data seed")->capture_default_str();
  cmd->add_option("--out", f->out, "directory for results.json, results.md, plans and traces")->required()->type_name("DIR");
  return [f]() { return RunBench(*f); };
}

}  // namespace hetsynth::cli
