// `hetsynth place`: inference placement of a model's forward graph on a cluster (docs/inference.md):
// coarsen, run the baselines, solve the MILP seeded with the best of them, print the table and
// write the chosen placement. `hetsynth place --check FILE` re-reads a placement file.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <tuple>
#include <memory>

#include <fmt/format.h>

#include "absl/strings/str_join.h"
#include "commands.h"
#include "backend_flags.h"
#include "inference.h"
#include "train.h"
#include "hetsynth/base/status.h"
#include "hetsynth/costmodel/cluster.h"
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

std::string Ms(double s) { return LatencyText(s); }

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
    // Each group's first op → the file's start and finish times.
    std::map<ir::NodeId, std::pair<double, double>> times_of_op;
    for (const instr::InferencePlacementGroup& gr : pl.groups) times_of_op[gr.ops.front()] = {gr.start_s, gr.finish_s};
    std::vector<int> device;
    // The file's order on each device: by start time, then finish time (a group of no work that
    // starts with another runs before it).
    std::vector<std::tuple<double, double, int>> by_start;
    for (size_t i = 0; i < p.nodes.size(); ++i) {
      device.push_back(device_of_op[p.nodes[i].ops.front()]);
      const auto [start, finish] = times_of_op[p.nodes[i].ops.front()];
      by_start.push_back({start, finish, static_cast<int>(i)});
    }
    std::sort(by_start.begin(), by_start.end());
    std::vector<synth::CoarseId> order;
    for (const auto& [t, f, i] : by_start) order.push_back(i);
    // Start times that contradict the dependencies (a hand-edited file): topological order instead.
    std::vector<int> pos(p.nodes.size());
    for (size_t k = 0; k < order.size(); ++k) pos[order[k]] = static_cast<int>(k);
    for (const synth::CoarseEdge& e : p.edges) {
      if (pos[e.from] > pos[e.to]) order.clear();
    }
    const synth::Schedule s = synth::Evaluate(p, device, order);
    HS_RETURN_IF_ERROR(synth::CheckMemory(p, device));
    // On the cluster it was made for, the file's own figures must be what its groups cost: an
    // edit after `place` (a group moved, a time or transfer changed) would otherwise mislead
    // `infer`, which emulates with them.
    auto differs = [](double a, double b) { return std::abs(a - b) > 1e-6 * std::max({std::abs(a), std::abs(b), 1e-12}); };
    if (differs(s.latency, pl.predicted_latency_s)) {
      return absl::InvalidArgumentError(StrCat("placement '", f.check, "': predicted_latency_s: ", Ms(pl.predicted_latency_s),
                                               ", but its groups take ", Ms(s.latency), " on '", f.cluster,
                                               "'; expected the file as 'hetsynth place' wrote it (a group moved or a time edited?)"));
    }
    for (size_t k = 0; k < pl.edges.size(); ++k) {
      const auto& e = pl.edges[k];
      const double want = p.Transfer(pl.groups[e.from].device, pl.groups[e.to].device, e.bytes);
      if (differs(e.transfer_s, want)) {
        return absl::InvalidArgumentError(StrCat("placement '", f.check, "': edges[", k, "][3]: transfer_s ", e.transfer_s,
                                                 "; the link from ", pl.devices[pl.groups[e.from].device], " to ",
                                                 pl.devices[pl.groups[e.to].device], " on '", f.cluster, "' takes ", want,
                                                 " s for its ", e.bytes, " bytes (a group moved after 'hetsynth place'?)"));
      }
    }
    extra = fmt::format("; on '{}' it takes {} (predicted, the file says {}) and fits every device's memory", f.cluster,
                        Ms(s.latency), Ms(pl.predicted_latency_s));
  }
  fmt::print("placement '{}' is valid: {} for {} (batch {}), {} group{} over {} devices of cluster '{}'{}\n", f.check, pl.method,
             pl.model, pl.batch, pl.groups.size(), pl.groups.size() == 1 ? "" : "s", pl.devices.size(), pl.cluster, extra);
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
  if (std::find(PlacementMethodNames().begin(), PlacementMethodNames().end(), f.method) == PlacementMethodNames().end()) {
    return absl::InvalidArgumentError(
        StrCat("--method '", f.method, "'; expected one of ", absl::StrJoin(PlacementMethodNames(), ", ")));
  }
  HS_ASSIGN_OR_RETURN(ir::ModelSpec spec, f.model.Resolve());
  HS_ASSIGN_OR_RETURN(ir::Graph g, ir::BuildModel(spec));
  HS_ASSIGN_OR_RETURN(costmodel::Cluster cluster, costmodel::ReadClusterFile(f.cluster));
  HS_RETURN_IF_ERROR(CheckOutputPath("-o", f.out));
  FlagPaths place_inputs = {{"--cluster", f.cluster}};
  for (auto& in : ModelFileInput(f.model.name)) place_inputs.push_back(in);
  HS_RETURN_IF_ERROR(RefuseSameFiles({{"-o", f.out}}, place_inputs));
  HS_ASSIGN_OR_RETURN(const PlacementSolve solved,
                      SolvePlacements(spec, g, cluster, f.cluster, f.max_nodes, f.time_limit, f.method));
  const synth::PlacementProblem& p = solved.problem;
  const std::vector<synth::PlacementMethodResult>& results = solved.results;
  const synth::MilpResult* milp = &solved.milp;
  const double best_heuristic = solved.best_heuristic_s;
  fmt::print(stderr, "placing {} on cluster '{}' ({} devices): {} coarse nodes from {} forward ops, {} edges; times predicted "
             "from the cluster file's forward rates, memory and links\n",
             spec.ToString(), cluster.name, cluster.size(), p.nodes.size(), synth::ForwardNodes(g).size(), p.edges.size());

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
  const instr::InferencePlacement out = PlacementOf(spec, cluster, solved, f.method);
  HS_RETURN_IF_ERROR(WriteFileAtomically(f.out, instr::InferencePlacementToJson(g, out)));
  fmt::print("wrote {} ({}: {} on {} of {} devices, predicted {}; milp {:.2f}x the best heuristic)\n", f.out, f.method,
             p.nodes.size(), used(chosen->schedule), cluster.size(), Ms(chosen->schedule.latency),
             best_heuristic > 0 ? best_heuristic / milp->schedule.latency : 0.0);
  return absl::OkStatus();
}

struct InferFlags {
  std::string placement;
  int requests = 1;
  uint64_t seed = 0;
  bool emulate = false;
  double dilation = 0;
  std::string backend = "cpu";
  double deadline = 300;
};

absl::Status RunInfer(const InferFlags& f) {
  HS_ASSIGN_OR_RETURN(runtime::Backend* backend, BackendFlag(f.backend));
  if (f.emulate && !backend->capabilities().emulated_timing) {
    return absl::InvalidArgumentError(StrCat("--emulate paces CPU ranks; ", backend->capabilities().device,
                                             " ranks (--backend ", f.backend, ") run at their own speed"));
  }
  HS_RETURN_IF_ERROR(RequireAvailable(*backend));
  HS_ASSIGN_OR_RETURN(LoadedPlacement loaded, LoadPlacement(f.placement));
  const ir::Graph& g = loaded.graph;
  InferRequestOptions o;
  o.requests = f.requests;
  o.seed = f.seed;
  o.emulate = f.emulate;
  o.dilation = f.dilation;
  o.source = f.placement;
  o.backend = f.backend;
  o.deadline_s = f.deadline;
  o.mpi = UnderMpiLauncher();
  o.progress = !o.mpi || LauncherRank() == 0;
  if (!o.mpi || LauncherRank() == 0) {
    fmt::print(stderr, "running {} request{} of {} on the ranks of placement '{}' ({} group{}{}), then the one-device forward ...\n",
               f.requests, f.requests == 1 ? "" : "s", loaded.spec.ToString(), f.placement, loaded.placement.groups.size(),
               loaded.placement.groups.size() == 1 ? "" : "s", f.emulate ? ", emulated speeds" : "");
  }
  HS_ASSIGN_OR_RETURN(const InferMeasurement m, MeasureInference(g, loaded.spec, loaded.placement, o));
  if (!m.reporter) return absl::OkStatus();  // MPI: rank 0 reports
  const bool gpu = !backend->capabilities().host_memory;
  auto count = [](int64_t n, const char* one, const char* many) { return fmt::format("{} {}", n, n == 1 ? one : many); };
  const std::string ranks = o.mpi ? count(m.ranks, gpu ? "MPI process with a GPU" : "MPI process", gpu ? "MPI processes with a GPU each" : "MPI processes")
                            : count(m.ranks, gpu ? "GPU rank" : "thread rank", gpu ? "GPU ranks" : "thread ranks");
  fmt::print("infer: {} placement '{}' ({}) on {}, {}: outputs equal the one-device forward{} "
             "(max |diff| {:.3g}{}); {}, {:.3f} MB\n",
             loaded.spec.ToString(), f.placement, loaded.placement.method, ranks, count(f.requests, "request", "requests"),
             gpu ? " on a GPU" : "", m.max_diff, gpu ? fmt::format("; vs the CPU's forward {:.3g}", m.cpu_max_diff) : "",
             count(m.messages, "point-to-point transfer", "point-to-point transfers"), m.bytes / 1e6);
  // Pipelining needs several requests: one request's rate is only its cold run.
  const std::string throughput = f.requests > 1 ? fmt::format("{:.2f} requests/s pipelined", m.requests_per_s)
                                                : std::string("throughput: pipelining needs --requests 2 or more");
  if (f.emulate) {
    const double k = m.dilation, measured = m.latency_s, predicted = loaded.placement.predicted_latency_s;
    fmt::print("emulated cluster '{}' (dilation K={}: ranks paced to the file's device FLOP/s relative to the fastest = this "
               "host, {}; times below are wall clock / K): latency "
               "{} measured ({} after a warm-up), {} predicted ({:+.1f}%), {}; ran late {}\n",
               loaded.placement.cluster, k,
               o.mpi ? "messages over the processes' own links, not delayed" : "messages delayed by K x their predicted transfer time",
               Ms(measured), f.requests == 1 ? std::string("one request") : fmt::format("median of {} requests", f.requests), Ms(predicted),
               100 * (predicted - measured) / measured, throughput, Ms(m.late_s));
  } else {
    fmt::print("measured on {} (ranks at {} speed, not paced to the cluster's devices): latency "
               "{} ({} after a warm-up), one-device forward {}, {}; predicted for cluster '{}': {} (not comparable; "
               "--emulate paces them)\n",
               gpu ? "this host's GPUs" : "this host", gpu ? "GPU" : "host", Ms(m.latency_s),
               f.requests == 1 ? std::string("one request") : fmt::format("median of {} requests", f.requests), Ms(m.one_device_s),
               throughput, loaded.placement.cluster,
               Ms(loaded.placement.predicted_latency_s));
  }
  return absl::OkStatus();
}

}  // namespace

Runner RegisterInfer(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "infer", "Run a placement's forward pass on CPU thread ranks (MPI processes under mpirun; GPUs with --backend cuda) and check it against one device");
  auto f = std::make_shared<InferFlags>();
  cmd->add_option("--placement", f->placement, "placement file from 'hetsynth place'")->required()->type_name("FILE");
  cmd->add_option("--requests", f->requests, "batches, pipelined through the ranks")->check(PositiveInt())->capture_default_str();
  cmd->add_option("--seed", f->seed, "parameters and synthetic inputs")->check(SeedValue())->capture_default_str();
  cmd->add_flag("--emulate", f->emulate,
                "emulate the placement's cluster: pace ranks to its device speeds (fastest = this host), delay messages by "
                "their predicted transfer time, under time dilation");
  cmd->add_option("--dilation", f->dilation, "with --emulate: time dilation K (default: twice what fits this host's cores)")
      ->type_name("K")
      ->check(DilationFactor());
  cmd->add_option("--backend", f->backend,
                  "cpu, or cuda: each rank on a GPU (rank r on GPU r mod the visible GPUs; under mpirun the local rank's), "
                  "compared with one GPU's forward")
      ->capture_default_str();
  cmd->add_option("--deadline", f->deadline,
                  "seconds a rank may wait for another's message or collective before the run ends with one line "
                  "naming it (MPI processes, GPU ranks)")
      ->capture_default_str();
  return [f, cmd]() -> absl::Status {
    if (cmd->count("--dilation") > 0 && !f->emulate) return absl::InvalidArgumentError("--dilation is for --emulate");
    if (!(f->deadline > 0 && f->deadline <= 86400)) {
      return absl::InvalidArgumentError(StrCat("--deadline ", f->deadline, "; expected seconds in (0, 86400]"));
    }
    return RunInfer(*f);
  };
}

Runner RegisterPlace(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("place", "Place a model's forward graph on a cluster for minimum inference latency (MILP + baselines)");
  auto f = std::make_shared<PlaceFlags>();
  cmd->add_option("--model", f->model.name, "model: built-in (" + ir::ModelNames() + ") or a file (.onnx, graph .json)");
  f->model.AddFlags(*cmd);
  cmd->add_option("--cluster", f->cluster, "cluster file (docs/cluster-format.md)")->type_name("FILE");
  cmd->add_option("-o,--out", f->out, "where to write the placement (JSON, docs/inference.md)")->type_name("PLACEMENT");
  cmd->add_option("--method", f->method, "which method's placement to write: " + absl::StrJoin(PlacementMethodNames(), ", "))
      ->capture_default_str();
  cmd->add_option("--time-limit", f->time_limit, "seconds for the MILP; when reached, the best placement and its gap are reported")
      ->capture_default_str();
  cmd->add_option("--max-nodes", f->max_nodes, "coarse nodes at most (pure chains are merged beyond the fusion rule)")
      ->check(PositiveInt())
      ->capture_default_str();
  cmd->add_flag("--markdown", f->markdown, "print the table as Markdown");
  cmd->add_option("--check", f->check, "re-read a placement file and check it against its model (and --cluster)")->type_name("FILE");
  return [f, cmd]() -> absl::Status {
    if (!f->check.empty()) {
      for (const char* flag : {"--out", "--method", "--time-limit", "--max-nodes", "--markdown", "--batch", "--small",
                               "--model-arg", "--loss"}) {
        if (cmd->count(flag) > 0) {
          return absl::InvalidArgumentError(StrCat("place --check reads a placement; ", flag == std::string("--out") ? "-o" : flag,
                                                   " is for placing a --model"));
        }
      }
    }
    return RunPlace(*f);
  };
}

}  // namespace hetsynth::cli
