// Inference placement shared by place, infer and bench --inference (inference.h).
#include "inference.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "commands.h"
#include "hetsynth/base/status.h"
#include "hetsynth/runtime/backend.h"
#include "hetsynth/runtime/comm.h"
#include "hetsynth/runtime/data.h"
#include "hetsynth/runtime/infer.h"
#include "hetsynth/runtime/pacer.h"
#include "hetsynth/runtime/training.h"

namespace hetsynth::cli {
namespace {
constexpr double kMaxEmulatedSlowdown = 1e6;
constexpr double kMaxEmulatedWallSeconds = 86400;
}  // namespace

const std::vector<std::string>& PlacementMethodNames() { return instr::PlacementMethodNames(); }

std::string LatencyText(double s) {
  if (s < 1e-3) return fmt::format("{:.3f} us", s * 1e6);
  return s < 10 ? fmt::format("{:.3f} ms", s * 1e3) : fmt::format("{:.4g} s", s);
}

absl::StatusOr<PlacementSolve> SolvePlacements(const ir::ModelSpec& spec, const ir::Graph& graph,
                                               const costmodel::Cluster& cluster, const std::string& cluster_path,
                                               int max_coarse_nodes, double time_limit_s, const std::string& method) {
  PlacementSolve s;
  synth::PlacementOptions po;
  po.max_coarse_nodes = max_coarse_nodes;
  HS_ASSIGN_OR_RETURN(s.problem, synth::BuildPlacementProblem(graph, cluster, po));
  s.results = synth::PlacementBaselines(s.problem);
  const synth::Schedule* seed = nullptr;
  for (const auto& r : s.results) {
    if (r.status.ok() && (seed == nullptr || r.schedule.latency < seed->latency)) seed = &r.schedule;
  }
  s.best_heuristic_s = seed ? seed->latency : 0;
  for (const auto& r : s.results) {
    if (r.method == method && !r.status.ok()) {
      return absl::InvalidArgumentError(StrCat("--method ", method, " found no placement: ", r.status.message()));
    }
  }
  synth::MilpOptions mo;
  mo.time_limit_s = time_limit_s;
  absl::StatusOr<synth::MilpResult> milp = synth::SolvePlacementMilp(s.problem, seed, mo);
  if (!milp.ok()) {
    if (absl::IsResourceExhausted(milp.status())) {
      return absl::InvalidArgumentError(StrCat("place: ", spec.ToString(), " fits no placement on cluster '", cluster_path,
                                               "': ", milp.status().message()));
    }
    return milp.status();
  }
  HS_CHECK(seed == nullptr || milp->schedule.latency <= seed->latency, "the MILP returned a placement worse than its seed");
  s.milp = *std::move(milp);
  synth::PlacementMethodResult mr;
  mr.method = "milp";
  mr.schedule = s.milp.schedule;
  mr.solve_seconds = s.milp.solve_seconds;
  s.results.push_back(std::move(mr));
  return s;
}

instr::InferencePlacement PlacementOf(const ir::ModelSpec& spec, const costmodel::Cluster& cluster,
                                      const PlacementSolve& s, const std::string& method) {
  const synth::PlacementProblem& p = s.problem;
  const synth::PlacementMethodResult* chosen = nullptr;
  for (const auto& r : s.results) {
    if (r.method == method) chosen = &r;
  }
  HS_CHECK(chosen != nullptr && chosen->status.ok(), "PlacementOf: the method has no placement");
  instr::InferencePlacement out;
  FillRunHeader(spec, cluster, &out);
  out.method = method;
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
  for (const synth::CoarseEdge& e : p.edges) {
    out.edges.push_back({e.from, e.to, e.bytes,
                         p.Transfer(chosen->schedule.device[e.from], chosen->schedule.device[e.to], e.bytes)});
  }
  for (const auto& r : s.results) {
    instr::InferencePlacementMethod m;
    m.method = r.method;
    m.feasible = r.status.ok();
    m.latency_s = r.status.ok() ? r.schedule.latency : 0;
    m.solve_s = r.solve_seconds;
    m.note = r.status.ok() ? "" : std::string(r.status.message());
    out.methods.push_back(std::move(m));
  }
  out.lower_bound_s = s.milp.lower_bound;
  out.gap = s.milp.gap;
  out.optimal = s.milp.optimal;
  out.solve_s = s.milp.solve_seconds;
  out.solver_calls = s.milp.solver_calls;
  return out;
}

absl::StatusOr<InferMeasurement> MeasureInference(const ir::Graph& g, const ir::ModelSpec& spec,
                                                  const instr::InferencePlacement& placement,
                                                  const InferRequestOptions& o) {
  std::map<std::string, runtime::Tensor> params;
  for (ir::ValueId v : g.parameters()) params[g.value(v).name] = runtime::InitParameter(g.value(v), o.seed);
  HS_ASSIGN_OR_RETURN(runtime::DataSource data, runtime::DataSource::Synthetic(spec, g, o.seed));
  std::vector<runtime::Batch> requests;
  for (int q = 0; q < o.requests; ++q) {
    HS_ASSIGN_OR_RETURN(runtime::Batch b, data.Get(q));
    requests.push_back(std::move(b));
  }
  InferMeasurement m;
  HS_ASSIGN_OR_RETURN(runtime::Backend* backend, runtime::FindBackend(o.backend));  // checked by the caller's flags
  const bool gpu = !backend->capabilities().host_memory;
  runtime::InferOptions io;
  if (o.emulate) {
    const auto& fl = placement.device_flops;
    if (fl.size() != placement.devices.size()) {
      return absl::InvalidArgumentError(StrCat("placement '", o.source,
                                               "': no cluster.device_flops; --emulate needs them (write it again with 'hetsynth place')"));
    }
    if (o.dilation != 0 && !(o.dilation >= 1 && std::isfinite(o.dilation))) {
      return absl::InvalidArgumentError(StrCat("--dilation ", o.dilation, "; expected a number >= 1"));
    }
    std::set<int> used;
    for (const auto& gr : placement.groups) used.insert(gr.device);
    const double fmax = *std::max_element(fl.begin(), fl.end());
    double sum = 0;
    for (int d : used) {
      // Paced to at most a million times slower than this host (as the largest dilation): beyond
      // that a file's FLOP/s are a typo, and the pace would overflow the clock.
      if (!(fmax / fl[d] <= kMaxEmulatedSlowdown)) {
        return absl::InvalidArgumentError(StrCat("placement '", o.source, "': cluster.device_flops: device '",
                                                 placement.devices[d], "' (", fl[d], " FLOP/s) is ", fmax / fl[d],
                                                 " times slower than the fastest; --emulate paces to at most a million times slower"));
      }
      sum += fl[d] / fmax;
    }
    // Twice the dilation that fits the ranks' compute on this host's cores: the host is shared.
    io.dilation = o.dilation > 0 ? o.dilation : 2 * runtime::DilationForCores(sum, std::thread::hardware_concurrency());
  }
  std::unique_ptr<runtime::Communicator> world;
  if (o.mpi) {
    runtime::SetCollectiveDeadline(o.deadline_s);
    HS_ASSIGN_OR_RETURN(world, runtime::MpiWorld());
  }
  m.reporter = !world || world->rank() == 0;
  if (o.emulate) {
    // The wall time the runs will take: 2 × requests + 1 batches, each K × its modelled time — at
    // least the predicted latency, the transfers it waits for, or this host's forward of one
    // request paced to the slowest device used. Said when long, refused past a day. Every rank
    // estimates alike (and so fails alike), timing one forward.
    double one_s = 0;
    HS_RETURN_IF_ERROR(backend->ForwardOneDevice(g, params, {requests.front()}, 0, &one_s).status());
    double transfers = 0, slowest = 1;
    for (const auto& e : placement.edges) transfers += e.transfer_s;
    const double fmax = *std::max_element(placement.device_flops.begin(), placement.device_flops.end());
    for (const auto& gr : placement.groups) slowest = std::max(slowest, fmax / placement.device_flops[gr.device]);
    const double batch_s = std::max({placement.predicted_latency_s, transfers, one_s * slowest});
    const double wall = io.dilation * (2.0 * o.requests + 1) * batch_s;
    if (wall > kMaxEmulatedWallSeconds) {
      return absl::InvalidArgumentError(StrCat("placement '", o.source, "': --emulate would take about ", fmt::format("{:.3g}", wall),
                                               " s (K=", io.dilation, " x ", 2 * o.requests + 1, " batches x ", LatencyText(batch_s),
                                               "); expected at most a day: check cluster.device_flops, predicted_latency_s "
                                               "and the edges' transfer_s (place --check --cluster re-prices them)"));
    }
    if (wall > 10 && o.progress) fmt::print(stderr, "emulating at K={}: about {:.0f} s of wall time\n", io.dilation, wall);
  }
  // Latency: a warm-up request, then each request alone (the median); throughput: all of them
  // pipelined through the ranks.
  std::vector<runtime::Batch> with_warmup = {requests[0]};
  with_warmup.insert(with_warmup.end(), requests.begin(), requests.end());
  runtime::InferOptions seq = io;
  seq.sequential = true;
  seq.keep_outputs = false;  // the check below uses the pipelined run's
  const int ranks = static_cast<int>(runtime::infer_detail::Layout::Of(g, placement).devices.size());
  auto run_placement = [&](const std::vector<runtime::Batch>& batches,
                           const runtime::InferOptions& opt) -> absl::StatusOr<runtime::InferRun> {
    if (world) return backend->RunPlacementRank(*world, g, placement, params, batches, opt, -1);
    if (!gpu) return runtime::RunPlacement(g, placement, params, batches, opt);
    // GPU ranks in this process: one thread each, rank r on GPU r mod the visible GPUs.
    runtime::InferRun first;
    HS_RETURN_IF_ERROR(runtime::RunThreadRanks(ranks, [&](runtime::Communicator& comm) -> absl::Status {
      HS_ASSIGN_OR_RETURN(runtime::InferRun r, backend->RunPlacementRank(comm, g, placement, params, batches, opt, comm.rank()));
      if (comm.rank() == 0) first = std::move(r);
      return absl::OkStatus();
    }, o.deadline_s));
    return first;
  };
  HS_ASSIGN_OR_RETURN(runtime::InferRun one_by_one, run_placement(with_warmup, seq));
  std::vector<double> alone(one_by_one.finish_s.begin() + 1, one_by_one.finish_s.end());
  std::sort(alone.begin(), alone.end());
  m.latency_wall_s = alone[alone.size() / 2];
  HS_ASSIGN_OR_RETURN(runtime::InferRun run, run_placement(requests, io));
  if (!m.reporter) return m;  // MPI: rank 0 checks and reports
  // The one-device forward of every request, after the placement's runs (under mpirun on rank 0
  // alone, while the other ranks are done: none waits on it) and warmed up as the latency run is.
  // On GPUs it runs on the same kind of device as the ranks (the check), and the CPU's forward is
  // compared too (reported, not checked: cuBLAS sums in another order).
  std::vector<runtime::Outputs> reference, cpu_reference;
  HS_ASSIGN_OR_RETURN(reference, backend->ForwardOneDevice(g, params, requests, o.mpi ? -1 : 0, &m.one_device_s));
  if (gpu) {
    for (const runtime::Batch& b : requests) {
      HS_ASSIGN_OR_RETURN(runtime::Outputs out, runtime::ForwardOneDevice(g, params, b));
      cpu_reference.push_back(std::move(out));
    }
  }
  // Every element compared (a NaN on either side is a difference, not skipped).
  auto compare = [&](const std::vector<runtime::Outputs>& refs, double* max_diff, double* scale) -> absl::Status {
    for (int q = 0; q < o.requests; ++q) {
      for (const auto& [name, ref] : refs[q]) {
        const auto it = run.outputs[q].find(name);
        if (it == run.outputs[q].end() || it->second.shape != ref.shape) {
          return absl::InternalError(StrCat("infer: request ", q, ": output '", name, "' missing or misshaped on the ranks"));
        }
        for (int64_t i = 0; i < ref.numel(); ++i) {
          const float a = it->second.data[i], r = ref.data[i];
          if (std::isfinite(r)) *scale = std::max(*scale, static_cast<double>(std::abs(r)));
          if (a == r || (std::isnan(a) && std::isnan(r))) continue;  // equal infinities, NaN for NaN
          const double d = std::abs(static_cast<double>(a) - static_cast<double>(r));
          *max_diff = std::isfinite(d) ? std::max(*max_diff, d) : INFINITY;
        }
      }
    }
    return absl::OkStatus();
  };
  double scale = 1;
  HS_RETURN_IF_ERROR(compare(reference, &m.max_diff, &scale));
  if (gpu) {
    double cpu_scale = 1;
    HS_RETURN_IF_ERROR(compare(cpu_reference, &m.cpu_max_diff, &cpu_scale));
  }
  if (!(m.max_diff <= 1e-5 * scale)) {
    return absl::InternalError(StrCat("infer: the ranks' outputs differ from the one-device forward by ", m.max_diff,
                                      " (more than 1e-5 x ", scale, ")"));
  }
  m.dilation = run.dilation;
  const double k = run.dilation > 0 ? run.dilation : 1;
  m.latency_s = m.latency_wall_s / k;
  m.requests_per_s = o.requests / (run.total_s / k);
  m.late_s = run.late_s;
  m.ranks = run.ranks;
  m.messages = run.messages;
  m.bytes = run.bytes;
  return m;
}

}  // namespace hetsynth::cli
