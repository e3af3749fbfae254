// `hetsynth place`: inference placement of a model's forward graph on a cluster (docs/inference.md):
// coarsen, run the baselines, solve the MILP seeded with the best of them, print the table and
// write the chosen placement. `hetsynth place --check FILE` re-reads a placement file.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "absl/strings/str_join.h"
#include "commands.h"
#include "hetsynth/base/status.h"
#include "hetsynth/costmodel/cluster.h"
#include "hetsynth/runtime/data.h"
#include "hetsynth/runtime/infer.h"
#include "hetsynth/runtime/pacer.h"
#include "hetsynth/runtime/training.h"
#include "hetsynth/instr/inference_placement.h"
#include "hetsynth/synth/placement.h"

namespace hetsynth::cli {
namespace {

struct PlaceFlags {
  ModelOptions model;
  std::string cluster, out, method = "milp", check;
  double time_limit = 60;
  int max_nodes = 100;
  bool markdown = false;
};

// Seconds in ms, or µs below a millisecond (the small presets run in microseconds).
std::string Ms(double s) { return s < 1e-3 ? fmt::format("{:.3f} us", s * 1e6) : fmt::format("{:.3f} ms", s * 1e3); }

const std::vector<std::string>& MethodNames() {
  static const std::vector<std::string> names = {"single", "even", "speed", "heft", "milp"};
  return names;
}

struct LoadedPlacement {
  instr::InferencePlacement placement;
  ir::ModelSpec spec;
  ir::Graph graph;
};

// A placement file and the model it was made for, rebuilt from its header.
absl::StatusOr<LoadedPlacement> LoadPlacement(const std::string& path) {
  HS_ASSIGN_OR_RETURN(std::string text, ReadText(path, "placement"));
  HS_ASSIGN_OR_RETURN(instr::InferencePlacement header, instr::InferencePlacementHeaderFromJson(text, path));
  HS_ASSIGN_OR_RETURN(FileModel m, RebuildFileModel("placement", path, header.model, header.model_args, header.batch));
  HS_ASSIGN_OR_RETURN(instr::InferencePlacement pl, instr::InferencePlacementFromJson(m.graph, text, path));
  return LoadedPlacement{std::move(pl), std::move(m.spec), std::move(m.graph)};
}

absl::Status RunCheck(const PlaceFlags& f) {
  HS_ASSIGN_OR_RETURN(LoadedPlacement loaded, LoadPlacement(f.check));
  const instr::InferencePlacement& pl = loaded.placement;
  const ir::Graph* g = &loaded.graph;
  std::string extra;
  if (!f.cluster.empty()) {
    HS_ASSIGN_OR_RETURN(costmodel::Cluster c, costmodel::ReadClusterFile(f.cluster));
    if (c.Fingerprint() != pl.cluster_fingerprint || static_cast<size_t>(c.size()) != pl.devices.size()) {
      return absl::InvalidArgumentError(StrCat("placement '", f.check, "' was made for cluster '", pl.cluster, "' (fingerprint ",
                                               pl.cluster_fingerprint, "), not for '", f.cluster, "' (fingerprint ",
                                               c.Fingerprint(), ")"));
    }
    // Re-price the file's groups on this cluster: the schedule of its placement, groups in file order.
    synth::PlacementOptions po;
    for (const instr::InferencePlacementGroup& gr : pl.groups) po.groups.push_back(gr.ops);
    HS_ASSIGN_OR_RETURN(synth::PlacementProblem p, synth::BuildPlacementProblem(*g, c, po));
    std::vector<int> device_of_op(g->nodes().size(), 0);
    for (const instr::InferencePlacementGroup& gr : pl.groups) {
      for (ir::NodeId n : gr.ops) device_of_op[n] = gr.device;
    }
    std::map<ir::NodeId, double> start_of_op;  // each group's first op → the file's start time
    for (const instr::InferencePlacementGroup& gr : pl.groups) start_of_op[gr.ops.front()] = gr.start_s;
    std::vector<int> device;
    std::vector<std::pair<double, int>> by_start;  // the file's order on each device: by start time
    for (size_t i = 0; i < p.nodes.size(); ++i) {
      device.push_back(device_of_op[p.nodes[i].ops.front()]);
      by_start.push_back({start_of_op[p.nodes[i].ops.front()], static_cast<int>(i)});
    }
    std::sort(by_start.begin(), by_start.end());
    std::vector<synth::CoarseId> order;
    for (const auto& [t, i] : by_start) order.push_back(i);
    // Start times that contradict the dependencies (a hand-edited file): topological order instead.
    std::vector<int> pos(p.nodes.size());
    for (size_t k = 0; k < order.size(); ++k) pos[order[k]] = static_cast<int>(k);
    for (const synth::CoarseEdge& e : p.edges) {
      if (pos[e.from] > pos[e.to]) order.clear();
    }
    const synth::Schedule s = synth::Evaluate(p, device, order);
    HS_RETURN_IF_ERROR(synth::CheckMemory(p, device));
    extra = fmt::format("; on '{}' it takes {} (predicted, the file says {}) and fits every device's memory", f.cluster,
                        Ms(s.latency), Ms(pl.predicted_latency_s));
  }
  fmt::print("placement '{}' is valid: {} for {} (batch {}), {} groups over {} devices of cluster '{}'{}\n", f.check, pl.method,
             pl.model, pl.batch, pl.groups.size(), pl.devices.size(), pl.cluster, extra);
  return absl::OkStatus();
}

absl::Status RunPlace(const PlaceFlags& f) {
  if (!f.check.empty()) {
    if (!f.model.name.empty()) return absl::InvalidArgumentError("place: give --model or --check, not both");
    return RunCheck(f);
  }
  if (f.model.name.empty()) return absl::InvalidArgumentError("place: --model is required (or --check FILE)");
  if (f.cluster.empty()) return absl::InvalidArgumentError("place: --cluster is required");
  if (f.out.empty()) return absl::InvalidArgumentError("place: -o is required");
  if (!(f.time_limit > 0) || !std::isfinite(f.time_limit)) {
    return absl::InvalidArgumentError(StrCat("--time-limit ", f.time_limit, "; expected finite seconds > 0"));
  }
  if (std::find(MethodNames().begin(), MethodNames().end(), f.method) == MethodNames().end()) {
    return absl::InvalidArgumentError(StrCat("--method '", f.method, "'; expected one of ", absl::StrJoin(MethodNames(), ", ")));
  }
  HS_ASSIGN_OR_RETURN(ir::ModelSpec spec, f.model.Resolve());
  HS_ASSIGN_OR_RETURN(ir::Graph g, ir::BuildModel(spec));
  HS_ASSIGN_OR_RETURN(costmodel::Cluster cluster, costmodel::ReadClusterFile(f.cluster));
  HS_RETURN_IF_ERROR(CheckOutputPath("-o", f.out));
  HS_ASSIGN_OR_RETURN(synth::PlacementProblem p, synth::BuildPlacementProblem(g, cluster, [&] {
    synth::PlacementOptions po;
    po.max_coarse_nodes = f.max_nodes;
    return po;
  }()));
  fmt::print(stderr, "placing {} on cluster '{}' ({} devices): {} coarse nodes from {} forward ops, {} edges; times predicted "
             "from the cluster file's FLOP/s, memory bandwidth and links\n",
             spec.ToString(), cluster.name, cluster.size(), p.nodes.size(), synth::ForwardNodes(g).size(), p.edges.size());

  std::vector<synth::PlacementMethodResult> results = synth::PlacementBaselines(p);
  const synth::Schedule* seed = nullptr;
  for (const auto& r : results) {
    if (r.status.ok() && (seed == nullptr || r.schedule.latency < seed->latency)) seed = &r.schedule;
  }
  const double best_heuristic = seed ? seed->latency : 0;
  synth::MilpOptions mo;
  mo.time_limit_s = f.time_limit;
  absl::StatusOr<synth::MilpResult> milp = synth::SolvePlacementMilp(p, seed, mo);
  if (!milp.ok()) {
    if (absl::IsResourceExhausted(milp.status())) {
      return absl::InvalidArgumentError(StrCat("place: ", spec.ToString(), " fits no placement on cluster '", f.cluster,
                                               "': ", milp.status().message()));
    }
    return milp.status();
  }
  HS_CHECK(seed == nullptr || milp->schedule.latency <= seed->latency, "the MILP returned a placement worse than its seed");
  synth::PlacementMethodResult mr;
  mr.method = "milp";
  mr.schedule = milp->schedule;
  mr.solve_seconds = milp->solve_seconds;
  results.push_back(mr);

  auto used = [&](const synth::Schedule& s) {
    std::vector<int> d = s.device;
    std::sort(d.begin(), d.end());
    return std::unique(d.begin(), d.end()) - d.begin();
  };
  const std::string gap = fmt::format("gap {:.2f}%{}{}", 100 * milp->gap, milp->optimal ? " (optimal)" : "",
                                      milp->timed_out ? " (time limit)" : "");
  if (f.markdown) {
    fmt::print("| method | latency | vs best heuristic | devices used | solve time | note |\n|---|---|---|---|---|---|\n");
  } else {
    fmt::print("{:<7} {:>12} {:>18} {:>6} {:>11}  {}\n", "method", "latency", "vs best heuristic", "used", "solve time", "note");
  }
  for (const auto& r : results) {
    std::string note = r.status.ok() ? "" : std::string(r.status.message());
    if (r.method == "milp") note = StrCat(gap, ", lower bound ", Ms(milp->lower_bound), ", ", milp->solver_calls, " Z3 calls, ",
                                          milp->devices_modelled, " devices modelled");
    const std::string lat = r.status.ok() ? Ms(r.schedule.latency) : "infeasible";
    const std::string vs = r.status.ok() && best_heuristic > 0 ? fmt::format("{:.3f}x", best_heuristic / r.schedule.latency) : "-";
    const std::string u = r.status.ok() ? std::to_string(used(r.schedule)) : "-";
    const std::string t = fmt::format("{:.3f} s", r.solve_seconds);
    if (f.markdown) {
      fmt::print("| {} | {} | {} | {} | {} | {} |\n", r.method, lat, vs, u, t, note);
    } else {
      fmt::print("{:<7} {:>12} {:>18} {:>6} {:>11}  {}\n", r.method, lat, vs, u, t, note);
    }
  }

  const synth::PlacementMethodResult* chosen = nullptr;
  for (const auto& r : results) {
    if (r.method == f.method) chosen = &r;
  }
  if (!chosen->status.ok()) {
    return absl::InvalidArgumentError(StrCat("--method ", f.method, " found no placement: ", chosen->status.message()));
  }
  instr::InferencePlacement out;
  out.model = spec.name;
  out.model_args = spec.args;
  out.batch = spec.batch;
  out.cluster = cluster.name;
  out.cluster_fingerprint = cluster.Fingerprint();
  for (const auto& d : cluster.devices) out.devices.push_back(d.name);
  out.method = f.method;
  out.predicted_latency_s = chosen->schedule.latency;
  for (size_t i = 0; i < p.nodes.size(); ++i) {
    instr::InferencePlacementGroup gr;
    gr.name = p.nodes[i].name;
    gr.ops = p.nodes[i].ops;
    gr.device = chosen->schedule.device[i];
    gr.start_s = chosen->schedule.start[i];
    gr.finish_s = chosen->schedule.finish[i];
    out.groups.push_back(std::move(gr));
  }
  for (const auto& d : cluster.devices) out.device_flops.push_back(d.flops);
  for (const synth::CoarseEdge& e : p.edges) {
    out.edges.push_back({e.from, e.to, e.bytes,
                         p.Transfer(chosen->schedule.device[e.from], chosen->schedule.device[e.to], e.bytes)});
  }
  for (const auto& r : results) {
    instr::InferencePlacementMethod m;
    m.method = r.method;
    m.feasible = r.status.ok();
    m.latency_s = r.status.ok() ? r.schedule.latency : 0;
    m.solve_s = r.solve_seconds;
    m.note = r.status.ok() ? "" : std::string(r.status.message());
    out.methods.push_back(std::move(m));
  }
  out.lower_bound_s = milp->lower_bound;
  out.gap = milp->gap;
  out.optimal = milp->optimal;
  out.solve_s = milp->solve_seconds;
  out.solver_calls = milp->solver_calls;
  std::ofstream file(f.out, std::ios::binary | std::ios::trunc);
  file << instr::InferencePlacementToJson(g, out);
  file.close();
  if (!file) return absl::InvalidArgumentError(StrCat("-o '", f.out, "': cannot write the placement"));
  fmt::print("wrote {} ({}: {} on {} of {} devices, predicted {}; milp {:.2f}x the best heuristic)\n", f.out, f.method,
             p.nodes.size(), used(chosen->schedule), cluster.size(), Ms(chosen->schedule.latency),
             best_heuristic > 0 ? best_heuristic / milp->schedule.latency : 0.0);
  return absl::OkStatus();
}

struct InferFlags {
  std::string placement;
  int requests = 1;
  int64_t seed = 0;
  bool emulate = false;
  double dilation = 0;
};

absl::Status RunInfer(const InferFlags& f) {
  HS_ASSIGN_OR_RETURN(LoadedPlacement loaded, LoadPlacement(f.placement));
  const ir::Graph& g = loaded.graph;
  const uint64_t seed = static_cast<uint64_t>(f.seed);
  std::map<std::string, runtime::Tensor> params;
  for (ir::ValueId v : g.parameters()) params[g.value(v).name] = runtime::InitParameter(g.value(v), seed);
  HS_ASSIGN_OR_RETURN(runtime::DataSource data, runtime::DataSource::Synthetic(loaded.spec, g, seed));
  std::vector<runtime::Batch> requests;
  for (int q = 0; q < f.requests; ++q) {
    HS_ASSIGN_OR_RETURN(runtime::Batch b, data.Get(q));
    requests.push_back(std::move(b));
  }
  // The one-device forward of every request (this thread), timed.
  std::vector<runtime::Outputs> reference;
  const auto t0 = std::chrono::steady_clock::now();
  for (const runtime::Batch& b : requests) {
    HS_ASSIGN_OR_RETURN(runtime::Outputs o, runtime::ForwardOneDevice(g, params, b));
    reference.push_back(std::move(o));
  }
  const double one_device_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / f.requests;
  runtime::InferOptions io;
  if (f.emulate) {
    const auto& fl = loaded.placement.device_flops;
    if (fl.size() != loaded.placement.devices.size()) {
      return absl::InvalidArgumentError(StrCat("placement '", f.placement, "': no cluster.device_flops; --emulate needs them (write it again with 'hetsynth place')"));
    }
    if (f.dilation != 0 && !(f.dilation >= 1 && std::isfinite(f.dilation))) {
      return absl::InvalidArgumentError(StrCat("--dilation ", f.dilation, "; expected a number >= 1"));
    }
    std::set<int> used;
    for (const auto& gr : loaded.placement.groups) used.insert(gr.device);
    const double fmax = *std::max_element(fl.begin(), fl.end());
    double sum = 0;
    for (int d : used) sum += fl[d] / fmax;
    // Twice the dilation that fits the ranks' compute on this host's cores: the host is shared.
    io.dilation = f.dilation > 0 ? f.dilation : 2 * runtime::DilationForCores(sum, std::thread::hardware_concurrency());
  }
  // Latency: a warm-up request, then each request alone (the median); throughput: all of them
  // pipelined through the ranks.
  std::vector<runtime::Batch> with_warmup = {requests[0]};
  with_warmup.insert(with_warmup.end(), requests.begin(), requests.end());
  runtime::InferOptions seq = io;
  seq.sequential = true;
  seq.keep_outputs = false;  // the check below uses the pipelined run's
  HS_ASSIGN_OR_RETURN(runtime::InferRun one_by_one, runtime::RunPlacement(g, loaded.placement, params, with_warmup, seq));
  std::vector<double> alone(one_by_one.finish_s.begin() + 1, one_by_one.finish_s.end());
  std::sort(alone.begin(), alone.end());
  const double latency_wall = alone[alone.size() / 2];
  HS_ASSIGN_OR_RETURN(runtime::InferRun run, runtime::RunPlacement(g, loaded.placement, params, requests, io));
  double max_diff = 0, scale = 1;
  for (int q = 0; q < f.requests; ++q) {
    for (const auto& [name, ref] : reference[q]) {
      const auto it = run.outputs[q].find(name);
      if (it == run.outputs[q].end() || it->second.shape != ref.shape) {
        return absl::InternalError(StrCat("infer: request ", q, ": output '", name, "' missing or misshaped on the ranks"));
      }
      for (int64_t i = 0; i < ref.numel(); ++i) {
        max_diff = std::max(max_diff, static_cast<double>(std::abs(it->second.data[i] - ref.data[i])));
        scale = std::max(scale, static_cast<double>(std::abs(ref.data[i])));
      }
    }
  }
  if (!(max_diff <= 1e-5 * scale)) {
    return absl::InternalError(StrCat("infer: the ranks' outputs differ from the one-device forward by ", max_diff,
                                      " (more than 1e-5 x ", scale, ")"));
  }
  fmt::print("infer: {} placement '{}' ({}) on {} thread ranks, {} requests: outputs equal the one-device forward "
             "(max |diff| {:.3g}); {} point-to-point transfers, {:.3f} MB\n",
             loaded.spec.ToString(), f.placement, loaded.placement.method, run.ranks, f.requests, max_diff, run.messages,
             run.bytes / 1e6);
  if (f.emulate) {
    const double k = run.dilation, measured = latency_wall / k, predicted = loaded.placement.predicted_latency_s;
    fmt::print("emulated cluster '{}' (dilation K={}: ranks paced to the file's device FLOP/s relative to the fastest = this "
               "host, messages delayed by K x their predicted transfer time; times below are wall clock / K): latency "
               "{} measured (median of {} requests after a warm-up), {} predicted ({:+.1f}%), {:.2f} requests/s pipelined; ran late {}\n",
               loaded.placement.cluster, k, Ms(measured), f.requests, Ms(predicted), 100 * (predicted - measured) / measured,
               f.requests / (run.total_s / k), Ms(run.late_s));
  } else {
    fmt::print("measured on this host (ranks are threads at host speed, not paced to the cluster's devices): latency "
               "{} (median of {} requests after a warm-up), one-device forward {}, {:.2f} requests/s pipelined; predicted for cluster '{}': {} (not comparable; "
               "--emulate paces them)\n",
               Ms(latency_wall), f.requests, Ms(one_device_s), f.requests / run.total_s, loaded.placement.cluster,
               Ms(loaded.placement.predicted_latency_s));
  }
  return absl::OkStatus();
}

}  // namespace

Runner RegisterInfer(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("infer", "Run a placement's forward pass on CPU thread ranks and check it against one device");
  auto f = std::make_shared<InferFlags>();
  cmd->add_option("--placement", f->placement, "placement file from 'hetsynth place'")->required()->type_name("FILE");
  cmd->add_option("--requests", f->requests, "batches, pipelined through the ranks")->check(PositiveInt())->capture_default_str();
  cmd->add_option("--seed", f->seed, "parameters and synthetic inputs")->check(NonNegativeInt())->capture_default_str();
  cmd->add_flag("--emulate", f->emulate,
                "emulate the placement's cluster: pace ranks to its device speeds (fastest = this host), delay messages by "
                "their predicted transfer time, under time dilation");
  cmd->add_option("--dilation", f->dilation, "with --emulate: time dilation K (default: twice what fits this host's cores)");
  return [f] { return RunInfer(*f); };
}

Runner RegisterPlace(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("place", "Place a model's forward graph on a cluster for minimum inference latency (MILP + baselines)");
  auto f = std::make_shared<PlaceFlags>();
  cmd->add_option("--model", f->model.name, "model: built-in (" + ir::ModelNames() + ") or a file (.onnx, graph .json)");
  f->model.AddFlags(*cmd);
  cmd->add_option("--cluster", f->cluster, "cluster file (docs/cluster-format.md)")->type_name("FILE");
  cmd->add_option("-o,--out", f->out, "where to write the placement (JSON, docs/inference.md)")->type_name("PLACEMENT");
  cmd->add_option("--method", f->method, "which method's placement to write: " + absl::StrJoin(MethodNames(), ", "))
      ->capture_default_str();
  cmd->add_option("--time-limit", f->time_limit, "seconds for the MILP; when reached, the best placement and its gap are reported")
      ->capture_default_str();
  cmd->add_option("--max-nodes", f->max_nodes, "coarse nodes at most (pure chains are merged beyond the fusion rule)")
      ->check(PositiveInt())
      ->capture_default_str();
  cmd->add_flag("--markdown", f->markdown, "print the table as Markdown");
  cmd->add_option("--check", f->check, "re-read a placement file and check it against its model (and --cluster)")->type_name("FILE");
  return [f] { return RunPlace(*f); };
}

}  // namespace hetsynth::cli
