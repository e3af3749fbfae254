// `hetsynth synth`, `hetsynth explain`, `hetsynth check`: make a plan for a cluster, show it,
// and re-verify it.
#include <atomic>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "absl/strings/str_join.h"
#include "commands.h"
#include "hetsynth/costmodel/cluster.h"
#include "hetsynth/costmodel/mesh.h"
#include "hetsynth/instr/program.h"
#include "hetsynth/ir/regular_file.h"
#include "hetsynth/ir/input_limits.h"
#include "hetsynth/base/memory.h"
#include "hetsynth/base/status.h"
#include "hetsynth/base/temp_files.h"
#include "hetsynth/synth/synthesize.h"

namespace hetsynth::cli {
namespace {

std::string Ms(double s) { return fmt::format("{:.2f} ms", s * 1e3); }
// GB to two decimals; below 10 MB (which would print as 0.00 or 0.01 GB) in adaptive units.
std::string Gb(double b) { return b >= 1e7 ? fmt::format("{:.2f} GB", b / 1e9) : FormatBytes(b); }


struct SynthFlags {
  ModelOptions model;
  std::string cluster, out, baseline;
  double time_limit = 600;
  bool no_memory_limits = false;
  bool flat = false, no_overlap = false, mesh_levels = true, segments = true, verbose = false;
};

absl::Status RunSynth(const SynthFlags& f) {
  HS_ASSIGN_OR_RETURN(ir::ModelSpec spec, f.model.Resolve());
  HS_ASSIGN_OR_RETURN(ir::Graph g, ir::BuildModel(spec));
  HS_ASSIGN_OR_RETURN(costmodel::Cluster cluster, costmodel::ReadClusterFile(f.cluster));
  if (!(f.time_limit > 0) || !std::isfinite(f.time_limit)) {
    return absl::InvalidArgumentError(StrCat("--time-limit ", f.time_limit, "; expected finite seconds > 0"));
  }
  HS_RETURN_IF_ERROR(CheckOutputPath("-o", f.out));
  FlagPaths synth_inputs = {{"--cluster", f.cluster}};
  for (auto& in : ModelFileInput(f.model.name)) synth_inputs.push_back(in);
  HS_RETURN_IF_ERROR(RefuseSameFiles({{"-o", f.out}}, synth_inputs));
  synth::SynthOptions o;
  o.time_limit_s = f.time_limit;
  o.memory_limits = !f.no_memory_limits;
  const std::string chosen = f.baseline.empty() ? "synthesized" : f.baseline;
  HS_RETURN_IF_ERROR(synth::StrategyByName(chosen).status());
  fmt::print(stderr, "synthesizing {} for cluster '{}' ({} devices, {} classes; mesh {})\n", spec.ToString(), cluster.name,
             cluster.size(), cluster.Classes().size(), costmodel::MeshOf(cluster).Describe());
  std::vector<synth::Strategy> strategies = {SynthesizedStrategy(f.flat, f.no_overlap, f.mesh_levels, f.segments)};
  for (const std::string& b : synth::BaselineNames()) strategies.push_back(*synth::StrategyByName(b));
  std::vector<std::string> names;
  std::map<std::string, synth::SynthResult> results;
  std::map<std::string, std::string> failures;
  for (auto& [name, r] : synth::SynthesizeAll(g, cluster, strategies, o)) {
    names.push_back(name);
    if (r.ok() && f.verbose) {
      fmt::print(stderr, "{}: {} states expanded\n", name, r->states_expanded);
      for (const std::string& line : r->log) fmt::print(stderr, "  {}\n", line);
    }
    if (r.ok()) {
      results.emplace(name, std::move(*r));
    } else if (name == chosen || absl::IsDeadlineExceeded(r.status()) || absl::IsInternal(r.status())) {
      return absl::Status(r.status().code(), StrCat(spec.ToString(), " on cluster '", cluster.name, "': ", r.status().message()));
    } else {
      failures[name] = std::string(r.status().message());
    }
  }
  const synth::SynthResult& mine = results.at(chosen);
  const std::string text = instr::PlanToJson(g, MakePlan(spec, cluster, mine));
  HS_RETURN_IF_ERROR(WriteFileAtomically(f.out, text));

  double best_baseline = 0;
  for (const std::string& b : synth::BaselineNames()) {
    if (results.count(b) && (best_baseline == 0 || results.at(b).estimate.step_s < best_baseline)) {
      best_baseline = results.at(b).estimate.step_s;
    }
  }
  auto step_of = [&](const char* name) { return results.count(name) ? results.at(name).estimate.step_s : 0.0; };
  const double ddp_ev = step_of("ddp-ev"), hap = step_of("hap");
  fmt::print("{:<12} {:>14} {:>12} {:>12} {:>12} {:>10} {:>8} {:>10}\n", "plan", "predicted/step", "compute", "comm",
             "exposed", "vs ddp-ev", "vs hap", "synth time");
  for (const std::string& name : names) {
    if (!results.count(name)) {
      fmt::print("{:<12} {}\n", name, "infeasible: " + failures[name]);
      continue;
    }
    const synth::SynthResult& r = results.at(name);
    auto vs = [&](double base) { return base > 0 ? fmt::format("{:.2f}x", base / r.estimate.step_s) : std::string("n/a"); };
    fmt::print("{:<12} {:>14} {:>12} {:>12} {:>12} {:>10} {:>8} {:>9.2f}s\n", name, Ms(r.estimate.step_s),
               Ms(r.estimate.compute_s), Ms(r.estimate.communication_s), Ms(r.estimate.exposed_communication_s), vs(ddp_ev),
               vs(hap), r.seconds);
  }
  if (best_baseline > 0 && chosen == "synthesized") {
    fmt::print("synthesized plan: {:.2f}x faster than the best baseline (predicted)\n", best_baseline / mine.estimate.step_s);
  }
  fmt::print("wrote {} ({}, {} instructions); see 'hetsynth explain {}'\n", f.out, chosen,
             mine.program.instructions.size(), f.out);
  return absl::OkStatus();
}

absl::Status RunExplain(const std::string& path) {
  HS_ASSIGN_OR_RETURN(const LoadedPlan loaded, LoadPlan(path));
  const instr::Plan& plan = loaded.plan;
  const ir::Graph& g = loaded.graph;
  const instr::Program& p = plan.program;
  fmt::print("plan '{}': {} for {} (batch {}) on cluster '{}' ({} devices, fingerprint {})\n", path, plan.strategy,
             plan.model, plan.batch, plan.cluster, plan.devices.size(), plan.cluster_fingerprint);
  if (p.overlap) {
    fmt::print("predicted step {}: compute {}, communication {} of which {} exposed (not hidden by compute; a "
               "communication stream overlaps backward)\n",
               Ms(plan.predicted_step_time_s), Ms(plan.predicted_compute_s), Ms(plan.predicted_communication_s),
               Ms(plan.predicted_exposed_communication_s));
  } else {
    fmt::print("predicted step {} = compute {} + communication {} (no overlap: every collective blocks)\n",
               Ms(plan.predicted_step_time_s), Ms(plan.predicted_compute_s), Ms(plan.predicted_communication_s));
  }
  if (p.nodes.empty()) {
    fmt::print("mesh: one node; every collective at level world\n\n");
  } else {
    std::vector<std::string> sizes;
    for (const auto& node : p.nodes) sizes.push_back(std::to_string(node.size()));
    fmt::print("mesh: {} with {} nodes of {} devices; {}\n\n",
               instr::TwoLevelNodes(p.nodes, p.num_devices) ? "two-level" : "flat (ranks not node-major)", p.nodes.size(),
               absl::StrJoin(sizes, "/"),
               p.UsesMesh() ? "properties over mesh levels (nodes=outer, devices=inner; node shares = sums of the "
                              "devices' ratios, within-node shares = ratio / node share)"
                            : "world forms only, every collective at level world");
  }
  // Devices with identical ratios (in every segment) print as one column.
  auto same_ratios = [&](size_t a, size_t b) {
    for (const std::vector<double>& row : p.ratios) {
      if (row[a] != row[b]) return false;
    }
    return true;
  };
  std::vector<size_t> shown;
  for (size_t i = 0; i < plan.devices.size(); ++i) {
    bool seen = false;
    for (size_t j : shown) seen = seen || same_ratios(i, j);
    if (!seen) shown.push_back(i);
  }
  for (size_t seg = 0; seg < p.ratios.size(); ++seg) {
    if (seg == 0 && p.ratios.size() == 1) {
      fmt::print("ratios (segment 0; devices with equal ratios shown once, shard columns in this order):");
    } else if (seg == 0) {
      fmt::print("ratios per segment ({} rows: split groups no instruction ties together are cut by their own "
                 "segment's row; devices with equal ratios shown once, shard columns in this order)\n  segment 0:",
                 p.ratios.size());
    } else {
      fmt::print("\n  segment {}:", seg);
    }
    for (size_t i : shown) {
      int same = 0;
      for (size_t j = 0; j < plan.devices.size(); ++j) same += same_ratios(i, j);
      fmt::print("  {}{}={:.4f}", plan.devices[i], same > 1 ? fmt::format(" (x{})", same) : "", p.ratios[seg][i]);
    }
  }
  fmt::print("\n\n{:>4}  {:<62} {:>9} {:>9}  {}\n", "#", "instruction {pre} → {post}", "compute", "comm", "shards");
  for (size_t k = 0; k < p.instructions.size(); ++k) {
    const instr::Instruction& in = p.instructions[k];
    std::string head = in.kind == instr::InstrKind::kCompute
                           ? fmt::format("{} '{}' [{}]", instr::InstrKindName(in.kind), g.node(in.node).name,
                                         in.outer_rule ? fmt::format("nodes {} × devices {}", instr::RuleName(*in.outer_rule),
                                                                     instr::RuleName(in.rule))
                                                       : instr::RuleName(in.rule))
                           : fmt::format("{} '{}'", instr::InstrKindName(in.kind), g.value(in.tensor).name);
    const bool collective = in.kind == instr::InstrKind::kAllGather || in.kind == instr::InstrKind::kReduceScatter ||
                            in.kind == instr::InstrKind::kAllReduce || in.kind == instr::InstrKind::kAllToAll;
    if (p.ratios.size() > 1) head += fmt::format(" <seg {}>", in.segment);
    if (collective) {
      const std::string level(instr::LevelName(in.level));
      head += in.impl != instr::CollImpl::kNone ? fmt::format(" ({}, {})", instr::CollImplName(in.impl), level)
                                                : fmt::format(" ({})", level);
    }
    std::vector<std::string> pre, post;
    for (const auto& q : in.pre) pre.push_back(instr::PropertyString(g, q));
    for (const auto& q : in.post) post.push_back(instr::PropertyString(g, q));
    std::string shards;
    for (const auto& q : in.post) {
      if (q.Outer().kind != instr::PropKind::kGather && q.kind != instr::PropKind::kGather) continue;
      // World Gather: the split dim's length per shown device; a mixed form: the local shape.
      std::vector<std::string> parts;
      for (size_t i : shown) {
        if (!q.mixed) {
          parts.push_back(std::to_string(p.ShardLengths(g, q)[i]));
        } else {
          const ir::Shape s = p.LocalShape(g, q, static_cast<int>(i));
          std::vector<std::string> dims;
          for (int64_t d : s) dims.push_back(std::to_string(d));
          parts.push_back("[" + absl::StrJoin(dims, ",") + "]");
        }
      }
      shards = absl::StrJoin(parts, "/");
    }
    const double comp = k < plan.instruction_compute_s.size() ? plan.instruction_compute_s[k] : 0;
    const double comm = k < plan.instruction_communication_s.size() ? plan.instruction_communication_s[k] : 0;
    fmt::print("{:>4}  {:<62} {:>9} {:>9}  {}\n", k, head, comp > 0 ? Ms(comp) : "", comm > 0 ? Ms(comm) : "", shards);
    fmt::print("      {{{}}} → {{{}}}\n", absl::StrJoin(pre, ", "), absl::StrJoin(post, ", "));
  }
  if (!p.buckets.empty()) {
    fmt::print("\ngradient buckets (all-reduced in this order as backward makes them ready{}):\n",
               p.overlap ? ", on the communication stream" : "");
    for (size_t b = 0; b < p.buckets.size(); ++b) {
      double bytes = 0;
      for (ir::ValueId v : p.buckets[b].params) bytes += 4.0 * static_cast<double>(ir::NumElements(g.value(v).shape));
      const std::string first = g.value(p.buckets[b].params.front()).name;
      const std::string last = g.value(p.buckets[b].params.back()).name;
      const std::string how = p.buckets[b].kind == instr::Level::kNodes
                                  ? "nodes ring"
                                  : std::string(instr::CollImplName(p.buckets[b].impl));
      fmt::print("  {:>3}  {:<12} {:>9.2f} MiB  {} parameters: {}{}\n", b, how,
                 bytes / 1048576.0, p.buckets[b].params.size(), first,
                 p.buckets[b].params.size() > 1 ? " ... " + last : "");
    }
  } else if (p.num_devices > 1) {
    fmt::print("\ngradients: one blocking all-reduce per replicated parameter (no buckets)\n");
  }
  fmt::print("\nmemory per device (predicted / capacity):\n");
  for (size_t i = 0; i < plan.devices.size() && i < plan.predicted_memory_bytes.size(); ++i) {
    const double cap = i < plan.memory_capacity_bytes.size() ? plan.memory_capacity_bytes[i] : 0;
    fmt::print("  {:<16} {:>10} / {:>10}  ({:.0f}%){}\n", plan.devices[i], Gb(plan.predicted_memory_bytes[i]), Gb(cap),
               cap > 0 ? 100.0 * plan.predicted_memory_bytes[i] / cap : 0.0,
               cap > 0 && plan.predicted_memory_bytes[i] > cap ? "  over capacity (synthesized with --no-memory-limits?)" : "");
  }
  return absl::OkStatus();
}

absl::Status RunCheck(const std::string& path, const std::string& cluster_path) {
  HS_ASSIGN_OR_RETURN(const LoadedPlan loaded, LoadPlan(path));  // re-derives and checks every triple
  const instr::Plan& plan = loaded.plan;
  if (!cluster_path.empty()) {
    HS_ASSIGN_OR_RETURN(costmodel::Cluster c, costmodel::ReadClusterFile(cluster_path));
    HS_RETURN_IF_ERROR(CheckPlanCluster(plan, StrCat("plan '", path, "'"), c, StrCat("'", cluster_path, "'")));
    // It fits the cluster: every device's predicted memory within its capacity.
    for (size_t i = 0; i < plan.predicted_memory_bytes.size() && i < static_cast<size_t>(c.size()); ++i) {
      const double need = plan.predicted_memory_bytes[i], cap = c.devices[i].memory_bytes;
      if (cap > 0 && need > cap) {
        return absl::InvalidArgumentError(StrCat("plan '", path, "': device '", plan.devices[i], "' is predicted to hold ",
                                                 FormatBytes(need), ", over its capacity ", FormatBytes(cap), " in '",
                                                 cluster_path, "' (", fmt::format("{:.0f}", 100 * need / cap),
                                                 "%; synthesized with --no-memory-limits?)"));
      }
    }
  }
  const size_t n = plan.program.instructions.size(), groups = plan.program.groups.size();
  fmt::print("plan '{}' is valid: {} instruction{} reach{} the goal (the loss summed once); every parameter placed once; {} split "
             "group{} with exact shard lengths\n",
             path, n, n == 1 ? "" : "s", n == 1 ? "es" : "", groups, groups == 1 ? "" : "s");
  return absl::OkStatus();
}

}  // namespace

synth::Strategy SynthesizedStrategy(bool flat, bool no_overlap, bool mesh_levels, bool segments) {
  synth::Strategy s;
  s.segments = segments;
  if (flat) s.allow_hierarchical = false;
  if (no_overlap) s.overlap = false, s.bucket_bytes.clear();
  s.mesh_modes = mesh_levels;
  return s;
}

instr::Plan MakePlan(const ir::ModelSpec& spec, const costmodel::Cluster& c, const synth::SynthResult& r) {
  instr::Plan plan;
  FillRunHeader(spec, c, &plan);
  for (const costmodel::Device& d : c.devices) plan.memory_capacity_bytes.push_back(d.memory_bytes);
  plan.strategy = r.strategy;
  plan.program = r.program;
  plan.predicted_step_time_s = r.estimate.step_s;
  plan.predicted_compute_s = r.estimate.compute_s;
  plan.predicted_communication_s = r.estimate.communication_s;
  plan.predicted_exposed_communication_s = r.estimate.exposed_communication_s;
  plan.instruction_compute_s = r.estimate.instruction_compute_s;
  plan.instruction_communication_s = r.estimate.instruction_communication_s;
  plan.predicted_memory_bytes = r.estimate.memory_bytes;
  return plan;
}

namespace {
// A validator that reads the whole text as a T with from_chars (decimal, no blanks) and accepts
// it when `ok` says so; else "'TEXT'; expected WHAT".
template <class T, class Ok>
CLI::Validator Parsed(Ok ok, std::string what, std::string type) {
  return CLI::Validator(
      [ok, what](std::string& s) -> std::string {
        T v{};
        const char* end = s.data() + s.size();
        const auto [p, ec] = std::from_chars(s.data(), end, v);
        if (ec != std::errc() || p != end || !ok(v)) return StrCat("'", ir::Shorten(s), "'; expected ", what);
        return std::string();
      },
      std::move(type));
}

CLI::Validator IntAtLeast(int64_t min) {
  return Parsed<int64_t>([min](int64_t v) { return v >= min; }, StrCat("an integer >= ", min),
                         min > 0 ? "POSITIVE" : "NONNEGATIVE");
}
}  // namespace

CLI::Validator NonNegativeInt() { return IntAtLeast(0); }
CLI::Validator PositiveInt() { return IntAtLeast(1); }

CLI::Validator SeedValue() {
  return Parsed<uint64_t>([](uint64_t) { return true; }, "an integer from 0 to 2^64 - 1", "SEED");
}

CLI::Validator DilationFactor() {
  return Parsed<double>([](double v) { return v >= 1 && v <= 1e6; },
                        "a number from 1 to 1e6 (the time dilation factor K)", "K");
}

namespace {
std::atomic<bool> g_progress_open{false};  // a terminal progress line without its newline
}  // namespace

void PrintProgress(const std::string& line, bool last, bool plain) {
  static const bool tty = isatty(STDERR_FILENO) != 0;
  if (tty) {
    fmt::print(stderr, "\r{}{}", line, last ? "\n" : "");
    g_progress_open = !last;
  } else if (plain || last) {
    fmt::print(stderr, "{}\n", line);
  }
}

void EndProgressLine() {
  if (g_progress_open.exchange(false)) fmt::print(stderr, "\n");
}

absl::Status CheckOutputPath(const std::string& flag, const std::string& path, OutputWrite how) {
  if (path.empty()) return absl::OkStatus();
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(StrCat(flag, " '", ir::Shorten(path, 200), "' is a directory; expected a file name"));
  }
  if (how == OutputWrite::kReplace) {
    const std::filesystem::file_status st = std::filesystem::symlink_status(path, ec);
    if (std::filesystem::is_symlink(st)) {
      return absl::InvalidArgumentError(StrCat(flag, " '", ir::Shorten(path, 200), "' is a symbolic link (to '",
                                               ir::Shorten(std::filesystem::read_symlink(path, ec).string(), 200),
                                               "'); give the file itself: the file is written by replacing the path"));
    }
    if (std::filesystem::exists(st) && !std::filesystem::is_regular_file(st)) {
      const char* kind = std::filesystem::is_character_file(st) ? "a character device"
                         : std::filesystem::is_block_file(st)   ? "a block device"
                         : std::filesystem::is_fifo(st)         ? "a FIFO"
                         : std::filesystem::is_socket(st)       ? "a socket"
                                                                : "not a regular file";
      return absl::InvalidArgumentError(StrCat(flag, " '", ir::Shorten(path, 200), "' is ", kind,
                                               "; expected a regular file's name (the file is written by replacing the path)"));
    }
  }
  if (!std::filesystem::is_directory(dir, ec)) {
    return absl::InvalidArgumentError(StrCat(flag, " '", ir::Shorten(path, 200), "': directory '", ir::Shorten(dir.string(), 200),
                                             "' does not exist; create it first"));
  }
  // A file made (and removed) where the write will go, before minutes of work: access() says
  // yes to root everywhere, and in /proc or /sys no file can be made at all. A stream into an
  // existing file (a device: --metrics /dev/null) needs only that file to be writable.
  const bool exists = std::filesystem::exists(std::filesystem::symlink_status(path, ec));
  if (how == OutputWrite::kStream && exists) {
    if (::access(path.c_str(), W_OK) != 0) {
      return absl::InvalidArgumentError(StrCat(flag, " '", ir::Shorten(path, 200), "' is not writable (", std::strerror(errno), ")"));
    }
  } else {
    std::string probe = (dir / ".hetsynth-write-check.XXXXXX").string();
    const int fd = ::mkstemp(probe.data());
    if (fd < 0) {
      return absl::InvalidArgumentError(StrCat(flag, " '", ir::Shorten(path, 200), "': cannot create a file in directory '",
                                               ir::Shorten(dir.string(), 200), "' (", std::strerror(errno), ")"));
    }
    ::close(fd);
    ::unlink(probe.c_str());
  }
  return absl::OkStatus();
}

namespace {
// Whether two paths name one file: the same inode when both exist, else the same absolute path.
bool SameFile(const std::string& a, const std::string& b) {
  std::error_code ec;
  if (std::filesystem::exists(a, ec) && std::filesystem::exists(b, ec)) return std::filesystem::equivalent(a, b, ec);
  const std::filesystem::path x = std::filesystem::weakly_canonical(a, ec), y = std::filesystem::weakly_canonical(b, ec);
  return !ec && x == y;
}
}  // namespace

absl::Status RefuseSameFiles(const FlagPaths& outputs, const FlagPaths& inputs) {
  for (size_t i = 0; i < outputs.size(); ++i) {
    const auto& [flag, path] = outputs[i];
    if (path.empty()) continue;
    for (const auto& [in_flag, in_path] : inputs) {
      if (!in_path.empty() && SameFile(path, in_path)) {
        return absl::InvalidArgumentError(StrCat(flag, " '", ir::Shorten(path, 200), "' is the file of ", in_flag, " '",
                                                 ir::Shorten(in_path, 200), "'; writing it would destroy the input; give another name"));
      }
    }
    for (size_t j = 0; j < i; ++j) {
      if (!outputs[j].second.empty() && SameFile(path, outputs[j].second)) {
        return absl::InvalidArgumentError(StrCat(flag, " '", ir::Shorten(path, 200), "' is also the file of ", outputs[j].first,
                                                 "; give each output its own file"));
      }
    }
  }
  return absl::OkStatus();
}

FlagPaths ModelFileInput(const std::string& name) {
  if (ir::IsModelFile(name)) return {{"--model", name}};
  return {};
}

namespace {
// The process's file-creation mask (read once: umask can only be read by setting it).
mode_t ProcessUmask() {
  static const mode_t mask = [] {
    const mode_t m = ::umask(0);
    ::umask(m);
    return m;
  }();
  return mask;
}
}  // namespace

absl::Status WriteFileAtomically(const std::string& path, const std::string& text, mode_t mode) {
  // A temporary name of its own (mkstemps: PATH.XXXXXX.tmp), so two processes writing the same
  // file never write into one temporary; each renames a whole file over PATH.
  std::string tmp = path + ".XXXXXX.tmp";
  const int fd = mkstemps(tmp.data(), 4);
  auto fail = [&](int err) {
    if (fd >= 0) std::remove(tmp.c_str());
    return absl::InvalidArgumentError(StrCat("cannot write '", path, "' (", std::strerror(err), ")"));
  };
  if (fd < 0) return fail(errno);
  const TempFileGuard guard(tmp);  // removed if SIGINT/SIGTERM/SIGHUP arrives before the rename
  for (size_t done = 0; done < text.size();) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      ::close(fd);
      return fail(err);
    }
    done += static_cast<size_t>(n);
  }
  fchmod(fd, mode & ~ProcessUmask());  // as a file created with `mode` would get (mkstemps makes 0600)
  if (::close(fd) != 0) return fail(errno);  // a full disk or a network file system may show only here
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    return absl::InternalError(StrCat("cannot rename '", tmp, "' to '", path, "': ", std::strerror(err)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadText(const std::string& path, const char* what) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(StrCat(what, " '", path, "': is a directory; expected a ", what, " file"));
  }
  // A FIFO or a device would block or never end: only a regular file is read.
  absl::StatusOr<std::string> text = ir::ReadRegularFile(path, StrCat(what, " '", path, "'"));
  if (absl::IsNotFound(text.status())) return absl::NotFoundError(StrCat(what, " '", path, "': cannot open file"));
  return text;
}

absl::StatusOr<FileModel> RebuildFileModel(const char* what, const std::string& path, const std::string& model,
                                           const std::map<std::string, double>& model_args, int64_t batch) {
  std::vector<std::string> args;
  for (const auto& [k, v] : model_args) args.push_back(fmt::format("{}={}", k, v));
  absl::StatusOr<ir::ModelSpec> spec = ir::MakeModelSpec(model, args, batch);
  if (!spec.ok()) return absl::InvalidArgumentError(StrCat(what, " '", path, "': model: ", spec.status().message()));
  absl::StatusOr<ir::Graph> g = ir::BuildModel(*spec);
  if (!g.ok()) return absl::InvalidArgumentError(StrCat(what, " '", path, "': model: ", g.status().message()));
  return FileModel{std::move(*spec), std::move(*g)};
}

absl::StatusOr<LoadedPlan> LoadPlan(const std::string& path) {
  HS_ASSIGN_OR_RETURN(std::string text, ReadText(path, "plan"));
  HS_ASSIGN_OR_RETURN(instr::Plan header, instr::PlanHeaderFromJson(text, path));
  HS_ASSIGN_OR_RETURN(FileModel m, RebuildFileModel("plan", path, header.model, header.model_args, header.batch));
  HS_ASSIGN_OR_RETURN(instr::Plan plan, instr::PlanFromJson(m.graph, text, path));
  return LoadedPlan{std::move(plan), std::move(m.spec), std::move(m.graph)};
}

absl::Status CheckPlanCluster(const instr::Plan& plan, const std::string& where, const costmodel::Cluster& c,
                              const std::string& cluster_label) {
  if (c.Fingerprint() != plan.cluster_fingerprint || static_cast<size_t>(c.size()) != plan.devices.size()) {
    return absl::InvalidArgumentError(StrCat(where, " was made for cluster '", plan.cluster, "' (fingerprint ",
                                             plan.cluster_fingerprint, ", ", plan.devices.size(), " devices), not for ",
                                             cluster_label, " (fingerprint ", c.Fingerprint(), ", ", c.size(),
                                             " devices)"));
  }
  // The same cluster has the same mesh: nodes as the cluster groups its devices (none for one node).
  const costmodel::Mesh mesh = costmodel::MeshOf(c);
  std::vector<std::vector<int>> nodes;
  if (mesh.num_nodes() >= 2) {
    for (const auto& devs : mesh.nodes) nodes.push_back(std::vector<int>(devs.begin(), devs.end()));
  }
  if (plan.program.nodes != nodes) {
    auto show = [](const std::vector<std::vector<int>>& n) {
      if (n.empty()) return std::string("none (one node)");
      std::vector<std::string> parts;
      for (const std::vector<int>& node : n) parts.push_back(StrCat("[", absl::StrJoin(node, ","), "]"));
      return StrCat("[", absl::StrJoin(parts, ","), "]");
    };
    return absl::InvalidArgumentError(StrCat(where, ": mesh.nodes: ", show(plan.program.nodes), "; expected ",
                                             show(nodes), ", the nodes of ", cluster_label));
  }
  return absl::OkStatus();
}


Runner RegisterSynth(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("synth", "Synthesize a training plan for a model on a cluster, next to the baselines");
  auto f = std::make_shared<SynthFlags>();
  cmd->add_option("--model", f->model.name, "model: built-in (" + ir::ModelNames() + ") or a file (.onnx, graph .json)")->required();
  f->model.AddFlags(*cmd);
  cmd->add_option("--cluster", f->cluster, "cluster file (docs/cluster-format.md)")->required()->type_name("FILE");
  cmd->add_option("-o,--out", f->out, "where to write the plan (JSON)")->required()->type_name("PLAN");
  cmd->add_option("--baseline", f->baseline,
                  "write this baseline's plan instead: " + absl::StrJoin(synth::BaselineNames(), ", "));
  cmd->add_option("--time-limit", f->time_limit,
                  "safety stop, seconds: synthesis that takes longer fails (the plan never depends on the clock)")
      ->capture_default_str();
  cmd->add_flag("--no-memory-limits", f->no_memory_limits, "ignore device memory capacities");
  cmd->add_flag("--flat", f->flat, "synthesized plan: no hierarchical collectives");
  cmd->add_flag("--no-overlap", f->no_overlap,
                "synthesized plan: every collective blocks compute, one all-reduce per gradient (no buckets)");
  cmd->add_flag("--mesh-levels,!--no-mesh-levels", f->mesh_levels,
                "synthesized plan: also search programs over mesh levels (data parallel across nodes x any "
                "program inside them; on by default, --no-mesh-levels: world forms only)");
  cmd->add_flag("--segments,!--no-segments", f->segments,
                "synthesized plan: split groups that no instruction ties together may take their own row of ratios "
                "where that shortens the predicted step by at least 0.5% (on by default; --no-segments: one row)");
  cmd->add_flag("--verbose", f->verbose, "print each plan's search rounds and states expanded to stderr");
  return [f]() { return RunSynth(*f); };
}

Runner RegisterExplain(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("explain", "Show a plan: instructions with their triples, ratios, shards, memory");
  auto path = std::make_shared<std::string>();
  cmd->add_option("plan", *path, "plan file")->required()->type_name("PLAN");
  return [path]() { return RunExplain(*path); };
}

Runner RegisterCheck(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("check", "Re-verify a plan's Hoare logic (and, with --cluster, that it fits the cluster)");
  auto path = std::make_shared<std::string>();
  auto cluster = std::make_shared<std::string>();
  cmd->add_option("plan", *path, "plan file")->required()->type_name("PLAN");
  cmd->add_option("--cluster", *cluster, "also check the plan was made for this cluster")->type_name("FILE");
  return [path, cluster]() { return RunCheck(*path, *cluster); };
}

}  // namespace hetsynth::cli
