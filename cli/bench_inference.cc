// `hetsynth bench --inference` (inference.h, docs/inference.md): every placement method's
// predicted latency and, on emulated CPU thread ranks, its measured one.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "hetsynth/base/median.h"
#include "hetsynth/base/status.h"
#include "hetsynth/costmodel/cluster.h"
#include "inference.h"
#include "train.h"

namespace hetsynth::cli {
namespace {

struct Row {
  std::string method;
  bool feasible = false;
  std::string why;  // infeasible: the method's reason
  int used = 0;     // devices hosting a group
  double predicted = 0, solve_s = 0;
  InferMeasurement measured;
  bool ran = false;
};

std::string Cell(double s) { return std::isfinite(s) ? LatencyText(s) : "—"; }

// DIR/latency.{png,svg}: per method, predicted and measured latency side by side, each measured
// bar labelled with its error against the prediction.
absl::StatusOr<bool> PlotLatency(const std::string& dir, const std::vector<Row>& rows, const std::string& title,
                                 bool simulated) {
  {
    std::ostringstream dat;
    dat << "# method predicted_ms measured_ms error_percent\n";
    for (const Row& r : rows) {
      if (!r.feasible) continue;
      const double m = r.ran ? r.measured.latency_s : NAN;
      dat << fmt::format("\"{}\" {:.6g} {} {}\n", r.method, r.predicted * 1e3, r.ran ? fmt::format("{:.6g}", m * 1e3) : "?",
                         r.ran ? fmt::format("{:.1f}", 100 * (r.predicted - m) / m) : "?");
    }
    HS_RETURN_IF_ERROR(WriteFileAtomically(dir + "/latency.dat", dat.str()));
  }
  std::string quoted = title;
  for (char& c : quoted) {
    if (c == '"') c = '\'';
  }
  const std::string setup =
      StrCat("set datafile missing '?'\nset style data histograms\nset style histogram clustered gap 1\n",
             "set style fill solid 0.9 border -1\nset boxwidth 0.9\nset grid ytics\nset yrange [0:*]\n",
             "set key top right\nset offsets 0, 0, graph 0.12, 0\nset ylabel 'latency of one batch (ms)'\n",
             "set title \"", quoted, "\\n",
             simulated ? "predicted by the cost model (not run)"
                       : "predicted vs measured on emulated CPU thread ranks; labels: (predicted - measured) / measured",
             "\" noenhanced\n");
  const std::string data = "'" + dir + "/latency.dat'";
  std::string plot = "plot " + data + " using 2:xtic(1) title 'predicted' lc rgb '#9ecae1'";
  if (!simulated) {
    plot += ", " + data + " using 3 title 'measured' lc rgb '#2b6ca3', " + data +
            " using ($0+0.17):3:(sprintf('%+.0f%%', $4)) with labels offset 0,0.8 notitle";
  }
  return RunGnuplot(dir, "latency", setup, plot);
}

}  // namespace

absl::Status RunBenchInference(const BenchInferenceOptions& o) {
  if (o.requests < 1) return absl::InvalidArgumentError(StrCat("--requests ", o.requests, "; expected at least 1"));
  if (o.dilation != 0 && !(o.dilation >= 1 && std::isfinite(o.dilation))) {
    return absl::InvalidArgumentError(StrCat("--dilation ", o.dilation, "; expected a number >= 1"));
  }
  if (UnderMpiLauncher()) {
    return absl::InvalidArgumentError("bench --inference runs each method on thread ranks in this process; under mpirun "
                                      "run 'hetsynth infer --placement FILE' (one process per device) instead");
  }
  HS_ASSIGN_OR_RETURN(ir::Graph g, ir::BuildModel(o.spec));
  HS_ASSIGN_OR_RETURN(costmodel::Cluster cluster, costmodel::ReadClusterFile(o.cluster_path));
  std::error_code ec;
  std::filesystem::create_directories(o.out, ec);
  if (ec || !std::filesystem::is_directory(o.out)) {
    return absl::InvalidArgumentError(StrCat("--out '", o.out, "': cannot create the directory (", ec.message(), ")"));
  }
  HS_ASSIGN_OR_RETURN(const PlacementSolve solved,
                      SolvePlacements(o.spec, g, cluster, o.cluster_path, o.max_coarse_nodes, o.time_limit_s));
  fmt::print(stderr, "bench --inference: {} on cluster '{}': {} coarse nodes; MILP {} in {:.2f} s{}\n", o.spec.ToString(),
             cluster.name, solved.problem.nodes.size(), solved.milp.optimal ? "optimal" : "not proven optimal",
             solved.milp.solve_seconds,
             o.simulate ? "; predicted only (--simulate)" : "; measuring each method on emulated CPU thread ranks");
  std::vector<Row> rows;
  std::vector<instr::InferencePlacement> placements;  // per row (feasible ones)
  std::vector<std::string> paths;
  for (const synth::PlacementMethodResult& r : solved.results) {
    Row row;
    row.method = r.method;
    row.feasible = r.status.ok();
    row.solve_s = r.solve_seconds;
    placements.emplace_back();
    paths.emplace_back();
    if (!row.feasible) {
      row.why = std::string(r.status.message());
      rows.push_back(std::move(row));
      continue;
    }
    row.predicted = r.schedule.latency;
    std::vector<int> d = r.schedule.device;
    std::sort(d.begin(), d.end());
    row.used = static_cast<int>(std::unique(d.begin(), d.end()) - d.begin());
    placements.back() = PlacementOf(o.spec, cluster, solved, r.method);
    paths.back() = StrCat(o.out, "/", r.method, ".placement.json");
    HS_RETURN_IF_ERROR(WriteFileAtomically(paths.back(), instr::InferencePlacementToJson(g, placements.back())));
    rows.push_back(std::move(row));
  }
  if (!o.simulate) {
    InferRequestOptions io;
    io.seed = o.seed;
    io.emulate = true;
    io.dilation = o.dilation;
    // Latency: `requests` rounds, each running one request (after a warm-up) of every method in
    // turn, so that a slow spell of a shared host spreads over the methods instead of landing on
    // one; the median per method. Then each method's requests pipelined (throughput) and checked
    // against the one-device forward.
    std::vector<std::vector<double>> samples(rows.size());
    for (int round = 0; round < o.requests; ++round) {
      fmt::print(stderr, "bench --inference: latency round {}/{}\n", round + 1, o.requests);
      for (size_t k = 0; k < rows.size(); ++k) {
        if (!rows[k].feasible) continue;
        io.requests = 1;
        io.source = paths[k];
        HS_ASSIGN_OR_RETURN(const InferMeasurement one, MeasureInference(g, o.spec, placements[k], io));
        samples[k].push_back(one.latency_s);
      }
    }
    for (size_t k = 0; k < rows.size(); ++k) {
      if (!rows[k].feasible) continue;
      fmt::print(stderr, "bench --inference: {}: {} requests pipelined on {} ranks\n", rows[k].method, o.requests,
                 rows[k].used);
      io.requests = o.requests;
      io.source = paths[k];
      HS_ASSIGN_OR_RETURN(rows[k].measured, MeasureInference(g, o.spec, placements[k], io));
      rows[k].measured.latency_s = Median(samples[k]);
      rows[k].measured.latency_wall_s = rows[k].measured.latency_s * std::max(1.0, rows[k].measured.dilation);
      rows[k].ran = true;
    }
  }

  // Tables and files.
  const std::string timing = o.simulate ? "predicted by the cost model (not run)"
                                        : "emulated on CPU thread ranks: paced to the cluster file's device FLOP/s "
                                          "relative to the fastest (this host) under time dilation, messages delayed by "
                                          "their predicted transfer time (docs/inference.md)";
  std::ostringstream md;
  md << fmt::format("{} on cluster `{}` ({} devices); {} coarse nodes; timing: {}; measured latency: median of {} requests "
                    "(each after a warm-up, alone; the methods in turn)\n\n",
                    o.spec.ToString(), cluster.name, cluster.size(), solved.problem.nodes.size(), timing, o.requests);
  md << "| method | devices used | predicted | measured | error | requests/s pipelined | ran late | dilation K | "
        "solve time |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  nlohmann::json methods = nlohmann::json::array();
  std::ostringstream csv;
  csv << "method,feasible,devices_used,predicted_s,measured_s,error,requests_per_s,late_s,dilation,solve_s\n";
  for (const Row& r : rows) {
    if (!r.feasible) {
      md << fmt::format("| {} | infeasible: {} | | | | | | | |\n", r.method, r.why);
      methods.push_back({{"method", r.method}, {"feasible", false}, {"why", r.why}});
      csv << r.method << ",false,,,,,,,,\n";
      continue;
    }
    const double m = r.ran ? r.measured.latency_s : NAN;
    const double err = r.ran ? (r.predicted - m) / m : NAN;
    md << fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {:.3f} s |\n", r.method, r.used, Cell(r.predicted), Cell(m),
                      r.ran ? fmt::format("{:+.1f}%", 100 * err) : "—",
                      r.ran ? fmt::format("{:.2f}", r.measured.requests_per_s) : "—",
                      r.ran ? Cell(r.measured.late_s) : "—", r.ran ? fmt::format("{:g}", r.measured.dilation) : "—",
                      r.solve_s);
    nlohmann::json j = {{"method", r.method},       {"feasible", true},   {"devices_used", r.used},
                        {"predicted_s", r.predicted}, {"solve_s", r.solve_s}, {"placement_file", r.method + ".placement.json"}};
    if (r.ran) {
      j["measured_s"] = m;
      j["error"] = err;
      j["requests_per_s"] = r.measured.requests_per_s;
      j["late_s"] = r.measured.late_s;
      j["dilation"] = r.measured.dilation;
      j["max_abs_diff_vs_one_device"] = r.measured.max_diff;
    }
    methods.push_back(std::move(j));
    csv << fmt::format("{},true,{},{:.9g},{},{},{},{},{},{:.6g}\n", r.method, r.used, r.predicted,
                       r.ran ? fmt::format("{:.9g}", m) : "", r.ran ? fmt::format("{:.6g}", err) : "",
                       r.ran ? fmt::format("{:.6g}", r.measured.requests_per_s) : "",
                       r.ran ? fmt::format("{:.6g}", r.measured.late_s) : "",
                       r.ran ? fmt::format("{:g}", r.measured.dilation) : "", r.solve_s);
  }
  md << fmt::format("\nMILP: gap {:.2f}%{}, lower bound {}, {} Z3 calls; the MILP is {:.3f}x the best heuristic "
                    "(predicted).{}\n",
                    100 * solved.milp.gap, solved.milp.optimal ? " (optimal)" : "", LatencyText(solved.milp.lower_bound),
                    solved.milp.solver_calls,
                    solved.best_heuristic_s > 0 ? solved.best_heuristic_s / solved.milp.schedule.latency : 0.0,
                    o.simulate ? "" : " Every measured method's outputs equal the one-device forward (within 1e-5).");
  const nlohmann::json results = {{"format", "hetsynth-bench-inference"},
                                  {"model", o.spec.ToString()},
                                  {"batch", o.spec.batch},
                                  {"cluster", cluster.name},
                                  {"cluster_file", o.cluster_path},
                                  {"requests", o.requests},
                                  {"seed", o.seed},
                                  {"simulated", o.simulate},
                                  {"timing", timing},
                                  {"coarse_nodes", solved.problem.nodes.size()},
                                  {"milp", {{"gap", solved.milp.gap}, {"optimal", solved.milp.optimal},
                                            {"lower_bound_s", solved.milp.lower_bound}, {"solve_s", solved.milp.solve_seconds}}},
                                  {"methods", methods}};
  HS_RETURN_IF_ERROR(WriteFileAtomically(o.out + "/results.json", results.dump(1) + "\n"));
  HS_RETURN_IF_ERROR(WriteFileAtomically(o.out + "/results.csv", csv.str()));
  HS_RETURN_IF_ERROR(WriteFileAtomically(o.out + "/results.md", md.str()));
  fmt::print("{}\n", md.str());
  HS_ASSIGN_OR_RETURN(const bool plotted,
                      PlotLatency(o.out, rows, StrCat(o.spec.name, " (batch ", o.spec.batch, ") on ", cluster.name,
                                                      ": inference latency per placement method"),
                                  o.simulate));
  fmt::print("wrote {0}/results.json, results.csv, results.md{1} and each method's placement file to {0}/\n", o.out,
             plotted ? ", latency.png, latency.svg" : " (no plot: gnuplot is not installed)");
  return absl::OkStatus();
}

}  // namespace hetsynth::cli
