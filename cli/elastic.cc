// `hetsynth train --elastic`: the elastic agent (docs/elastic.md). It runs training in membership
// epochs: each epoch synthesizes a plan for the cluster file's devices that are members now, runs
// it — thread ranks in this process, or one MPI process per device under mpirun — from the last
// snapshot, and ends when the steps are done, a rank is lost (the survivors resume from the last
// snapshot on a plan made without it) or a join/leave request arrives (`hetsynth elastic join`;
// the next step boundary snapshots and re-plans with it).
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "absl/strings/str_join.h"
#include "commands.h"
#include "hetsynth/base/status.h"
#include "hetsynth/base/temp_files.h"
#include "hetsynth/base/this_program.h"
#include "hetsynth/costmodel/cluster.h"
#include "hetsynth/runtime/training.h"
#include "train.h"

extern char** environ;

namespace hetsynth::cli {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::system_clock;

double UnixNow() { return std::chrono::duration<double>(Clock::now().time_since_epoch()).count(); }
double UnixOf(Clock::time_point t) { return std::chrono::duration<double>(t.time_since_epoch()).count(); }

// ---- The run directory ---------------------------------------------------------------------
//   agent           the agent's cluster file and members (for `elastic join` to check against)
//   requests/N      one membership request each: "join DEVICE AT_STEP" or "leave DEVICE AT_STEP"
//   membership.jsonl one line per epoch and per recovery
//   cluster-epoch-E.json, plan-epoch-E.json, metrics-epoch-E.jsonl, resume-epoch-E.safetensors
//   epoch-E/        MPI workers: pid-R, exit-R, snap-R-STEP.safetensors

std::string EpochDir(const std::string& dir, int epoch) { return fmt::format("{}/epoch-{}", dir, epoch); }

struct Request {
  std::string file, kind, device;
  int64_t at_step = 0;
};

// The requests waiting in DIR/requests, oldest first; those due at `step` when step >= 0.
std::vector<Request> Requests(const std::string& dir, int64_t step) {
  std::vector<Request> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir + "/requests", ec)) {
    const std::string name = e.path().filename().string();
    if (name.ends_with(".tmp") || !e.is_regular_file(ec)) continue;
    std::ifstream in(e.path());
    Request r;
    r.file = e.path().string();
    if (!(in >> r.kind >> r.device >> r.at_step)) continue;
    if (step < 0 || r.at_step <= step) out.push_back(std::move(r));
  }
  std::sort(out.begin(), out.end(), [](const Request& a, const Request& b) { return a.file < b.file; });
  return out;
}

// ---- MPI workers ---------------------------------------------------------------------------

char g_terminated_path[4096];
// From the end of a step that a snapshot follows until every rank has written it, SIGTERM waits
// (ElasticHooks::hold_termination): a rank that dies after the buddy exchange then still leaves
// the survivors a common snapshot. If the wait never ends (a partner died before the exchange),
// the launcher's or the agent's SIGKILL ends it.
volatile sig_atomic_t g_holding = 0, g_terminate_pending = 0;

void OnTerminate(int) {
  // Async-signal-safe: the launcher (or the agent) stops this survivor of a lost rank; say so,
  // then go.
  if (g_holding != 0) {
    g_terminate_pending = 1;
    return;
  }
  const int fd = ::open(g_terminated_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) {
    const char msg[] = "terminated\n";
    (void)!::write(fd, msg, sizeof msg - 1);
    ::close(fd);
  }
  RemoveTempFilesNow();  // a file being written (not a held snapshot: that waits above)
  ::_exit(143);
}

// Rank r's snapshot files in an epoch directory: step → path.
std::map<int64_t, std::string> SnapshotFiles(const std::string& epoch_dir, int rank) {
  std::map<int64_t, std::string> out;
  const std::string prefix = fmt::format("snap-{}-", rank);
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(epoch_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!name.starts_with(prefix) || !name.ends_with(".safetensors")) continue;
    const std::string num = name.substr(prefix.size(), name.size() - prefix.size() - 12);
    char* end = nullptr;
    const long long step = std::strtoll(num.c_str(), &end, 10);
    if (end != num.c_str() && *end == '\0') out[step] = e.path().string();
  }
  return out;
}

// --snapshot-every: N >= 1, or "auto" (0).
absl::StatusOr<int64_t> SnapshotEvery(const std::string& text) {
  if (text == "auto") return 0;
  char* end = nullptr;
  const long long n = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || n < 1) {
    return absl::InvalidArgumentError(StrCat("--snapshot-every '", text, "'; expected an integer >= 1 or auto"));
  }
  return n;
}

}  // namespace

absl::Status ElasticWorkerStart(const TrainOptions& o, int rank, ElasticHooks* hooks) {
  const std::string dir = EpochDir(o.elastic_worker, o.elastic_epoch);
  std::error_code ec;
  fs::create_directories(dir, ec);
  const std::string term = fmt::format("{}/exit-{}", dir, rank);
  if (term.size() >= sizeof g_terminated_path) return absl::InvalidArgumentError("--elastic-worker: path too long");
  std::snprintf(g_terminated_path, sizeof g_terminated_path, "%s", term.c_str());
  struct sigaction sa = {};
  sa.sa_handler = OnTerminate;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGTERM, &sa, nullptr);
  HS_RETURN_IF_ERROR(WriteFileAtomically(fmt::format("{}/pid-{}", dir, rank), std::to_string(::getpid()) + "\n"));
  HS_ASSIGN_OR_RETURN(hooks->snapshot_every, SnapshotEvery(o.snapshot_every));
  hooks->hold_termination = [](bool hold) {
    g_holding = hold ? 1 : 0;
    if (!hold && g_terminate_pending != 0) OnTerminate(SIGTERM);
  };
  hooks->keep = [dir, rank](runtime::RankSnapshot s) {
    const std::string path = fmt::format("{}/snap-{}-{}.safetensors", dir, rank, s.step);
    const absl::Status st = runtime::WriteRankSnapshot(path, s);
    if (!st.ok()) {
      fmt::print(stderr, "rank {}: elastic snapshot: {}\n", rank, std::string(st.message()));
      return;
    }
    // Keep this snapshot and the one before it (the newest may be incomplete on other ranks).
    std::map<int64_t, std::string> files = SnapshotFiles(dir, rank);
    while (files.size() > 2) {
      std::error_code e;
      fs::remove(files.begin()->second, e);
      files.erase(files.begin());
    }
  };
  const std::string root = o.elastic_worker;
  hooks->change_requested = [root](int64_t step) { return !Requests(root, step).empty(); };
  return absl::OkStatus();
}

void ElasticWorkerEnd(const TrainOptions& o, int rank, const ElasticHooks& hooks, const absl::Status& st) {
  const std::string text = !st.ok() ? StrCat("error ", st.message(), "\n")
                           : (hooks.stopped_at >= 0 ? StrCat("stopped ", hooks.stopped_at) : std::string("done")) +
                                 fmt::format(" snapshots {} {:.6f} steps {:.6f}\n", hooks.snapshots, hooks.snapshot_s,
                                             hooks.step_wall_s);
  // Rank 0 knows where the run stopped; the others only that they stopped.
  (void)WriteFileAtomically(fmt::format("{}/exit-{}", EpochDir(o.elastic_worker, o.elastic_epoch), rank), text);
}

namespace {

// ---- The agent -----------------------------------------------------------------------------

struct Epoch {
  int index = 0;
  int64_t start_step = 0;
  std::vector<std::string> members;  // cluster order; rank r is members[r]
};

// What one epoch's run ended with.
struct EpochEnd {
  absl::Status status;            // the run's; a lost rank makes it fail
  std::vector<int> lost;          // ranks lost (dead, killed, stopped)
  std::string cause;
  double detected_unix = 0;
  int64_t stopped_at = -1;        // a membership change at this step
  std::vector<runtime::RankSnapshot> snapshots;  // the survivors' newest common snapshot (by rank)
  std::vector<std::string> unreadable;  // snapshot files skipped, with why (torn, non-finite)
  int snapshots_taken = 0;        // rank 0's wall clock in snapshots and in steps
  double snapshot_s = 0, step_wall_s = 0;
};

std::string JsonEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
    out += c;
  }
  return out;
}

std::string JsonList(const std::vector<std::string>& v) {
  std::string out;
  for (const std::string& s : v) out += fmt::format("{}\"{}\"", out.empty() ? "" : ", ", s);
  return "[" + out + "]";
}

// The newest step every survivor holds a snapshot of, and those snapshots.
absl::StatusOr<std::vector<runtime::RankSnapshot>> NewestCommon(std::map<int, std::vector<runtime::RankSnapshot>> held,
                                                                 const std::vector<int>& survivors) {
  std::set<int64_t> common;
  for (size_t k = 0; k < survivors.size(); ++k) {
    std::set<int64_t> steps;
    for (const runtime::RankSnapshot& s : held[survivors[k]]) steps.insert(s.step);
    if (k == 0) {
      common = steps;
    } else {
      std::set<int64_t> both;
      for (int64_t x : steps) if (common.count(x)) both.insert(x);
      common = both;
    }
  }
  if (common.empty()) return absl::FailedPreconditionError("elastic: the survivors hold no snapshot of one step");
  const int64_t step = *common.rbegin();
  std::vector<runtime::RankSnapshot> out;
  for (int r : survivors) {
    for (runtime::RankSnapshot& s : held[r]) {
      if (s.step == step) out.push_back(std::move(s));
    }
  }
  return out;
}

// One epoch on thread ranks in this process.
EpochEnd RunThreadEpoch(const TrainOptions& e, const runtime::Backend& backend, const runtime::Checkpoint* start,
                        const std::string& dir) {
  std::mutex mu;
  std::map<int, std::vector<runtime::RankSnapshot>> held;
  ElasticHooks hooks;
  hooks.snapshot_every = SnapshotEvery(e.snapshot_every).value_or(0);  // checked by RunElastic
  hooks.start = start;
  hooks.keep = [&](runtime::RankSnapshot s) {
    std::lock_guard<std::mutex> lock(mu);
    std::vector<runtime::RankSnapshot>& mine = held[s.rank];
    mine.push_back(std::move(s));
    if (mine.size() > 2) mine.erase(mine.begin());
  };
  hooks.change_requested = [&dir](int64_t step) { return !Requests(dir, step).empty(); };
  TrainOptions run = e;
  run.hooks = &hooks;
  EpochEnd end;
  end.status = TrainPlan(run, backend);
  end.lost = hooks.lost;
  end.cause = hooks.cause;
  end.detected_unix = hooks.lost.empty() ? 0 : UnixOf(hooks.detected);
  end.stopped_at = hooks.stopped_at;
  end.snapshots_taken = hooks.snapshots;
  end.snapshot_s = hooks.snapshot_s;
  end.step_wall_s = hooks.step_wall_s;
  if (end.status.ok() && end.stopped_at < 0) return end;
  std::vector<int> survivors;
  for (const auto& [r, snaps] : held) {
    if (std::find(end.lost.begin(), end.lost.end(), r) == end.lost.end()) survivors.push_back(r);
  }
  // Only the survivors' memory counts: a lost device's own snapshot is gone with it.
  auto common = NewestCommon(std::move(held), survivors);
  if (common.ok()) end.snapshots = std::move(*common);
  return end;
}

// A process state letter from /proc/PID/stat ('R', 'S', 'T', 'Z', ...), or 0 when it is gone.
char ProcessState(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string line;
  if (!std::getline(in, line)) return 0;
  const size_t paren = line.rfind(')');
  return paren == std::string::npos || paren + 2 >= line.size() ? 0 : line[paren + 2];
}

// The text of a small file, "" when it does not exist (yet).
std::string ReadSmall(const std::string& path) { return ReadText(path, "file").value_or(""); }

// One epoch as mpirun workers: starts them, watches their processes (a worker gone without its
// exit record is lost; one stopped while others have ended, or past the deadline, too), and on a
// loss stops the job at once.
EpochEnd RunMpiEpoch(const TrainOptions& e, int ranks, const std::string& dir, const std::vector<std::string>& worker_args) {
  EpochEnd end;
  const std::string edir = EpochDir(dir, e.elastic_epoch);
  std::error_code ec;
  fs::remove_all(edir, ec);
  fs::create_directories(edir, ec);
  std::vector<std::string> args = {e.mpirun.empty() ? "mpirun" : e.mpirun, "--oversubscribe"};
  if (::geteuid() == 0) args.push_back("--allow-run-as-root");
  args.insert(args.end(), {"-np", std::to_string(ranks)});
  std::istringstream extra(e.mpirun_args);
  for (std::string a; extra >> a;) args.push_back(a);
  for (const char* hook : {"HETSYNTH_TEST_KILL_RANK", "HETSYNTH_TEST_SNAPSHOT_DELAY_MS"}) {
    if (std::getenv(hook) != nullptr) args.insert(args.end(), {"-x", hook});
  }
  args.insert(args.end(), worker_args.begin(), worker_args.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t launcher = 0;
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);  // its own group: stopped as one
  posix_spawnattr_setpgroup(&attr, 0);
  const int rc = posix_spawnp(&launcher, argv[0], nullptr, &attr, argv.data(), environ);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    end.status = absl::FailedPreconditionError(StrCat("elastic: cannot start '", args[0], "': ", std::strerror(rc),
                                                      "; install Open MPI or pass --mpirun PATH"));
    return end;
  }
  std::vector<pid_t> pids(static_cast<size_t>(ranks), 0);
  std::vector<double> stopped_since(static_cast<size_t>(ranks), 0);
  auto has_record = [&](int r) { return fs::exists(fmt::format("{}/exit-{}", edir, r)); };
  int wstatus = 0;
  bool killed = false;
  for (;;) {
    const pid_t w = ::waitpid(launcher, &wstatus, WNOHANG);
    if (w == launcher) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (killed) continue;
    bool any_ended = false;
    for (int r = 0; r < ranks; ++r) any_ended = any_ended || has_record(r);
    std::vector<int> lost;
    for (int r = 0; r < ranks; ++r) {
      pid_t& pid = pids[static_cast<size_t>(r)];
      if (pid == 0) {
        const std::string text = ReadSmall(fmt::format("{}/pid-{}", edir, r));
        if (!text.empty()) pid = static_cast<pid_t>(std::atol(text.c_str()));
        continue;
      }
      // A worker that wrote its exit record has finished, whatever its state while it exits
      // (LeakSanitizer's exit check, for one, holds it in a tracing stop, 't').
      if (has_record(r)) continue;
      const char state = ProcessState(pid);
      if (state == 0 || state == 'Z' || state == 'X') {
        lost.push_back(r);
      } else if (state == 'T' || state == 't') {
        double& since = stopped_since[static_cast<size_t>(r)];
        if (since == 0) since = UnixNow();
        if (any_ended || UnixNow() - since > e.deadline) lost.push_back(r);
      } else {
        stopped_since[static_cast<size_t>(r)] = 0;
      }
    }
    if (lost.empty()) continue;
    end.detected_unix = UnixNow();
    end.lost = lost;
    for (int r : lost) {
      const char state = ProcessState(pids[static_cast<size_t>(r)]);
      end.cause += fmt::format("{}rank {} {}", end.cause.empty() ? "" : "; ", r,
                               state == 'T' || state == 't' ? "stopped" : "died");
    }
    // Stop the job now: the launcher's group, then whatever worker is left (stopped ones too).
    ::kill(-launcher, SIGTERM);
    for (pid_t pid : pids) {
      if (pid > 0 && (ProcessState(pid) == 'T' || ProcessState(pid) == 't')) ::kill(pid, SIGKILL);
    }
    killed = true;
    std::thread([launcher, pids] {
      std::this_thread::sleep_for(std::chrono::seconds(3));
      ::kill(-launcher, SIGKILL);
      for (pid_t pid : pids) if (pid > 0) ::kill(pid, SIGKILL);
    }).detach();
  }
  std::vector<std::string> records(static_cast<size_t>(ranks));
  for (int r = 0; r < ranks; ++r) records[static_cast<size_t>(r)] = ReadSmall(fmt::format("{}/exit-{}", edir, r));
  if (!killed) {
    // The launcher ended by itself: workers gone without a record were lost (crashed before it
    // could be seen, or never started).
    for (int r = 0; r < ranks; ++r) {
      if (records[static_cast<size_t>(r)].empty()) end.lost.push_back(r);
    }
    if (!end.lost.empty()) {
      end.detected_unix = UnixNow();
      end.cause = fmt::format("rank{} {} ended without a word", end.lost.size() > 1 ? "s" : "",
                              absl::StrJoin(end.lost, ", "));
    }
  }
  const std::string& first = records[0];
  if (const size_t at = first.find(" snapshots "); at != std::string::npos) {
    std::sscanf(first.c_str() + at, " snapshots %d %lf steps %lf", &end.snapshots_taken, &end.snapshot_s, &end.step_wall_s);
  }
  if (end.lost.empty()) {
    if (first.starts_with("stopped ")) {
      end.stopped_at = std::atoll(first.c_str() + 8);
    } else if (!(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0)) {
      std::string why;
      for (const std::string& rec : records) {
        if (rec.starts_with("error ")) {
          why = rec.substr(6);
          break;
        }
      }
      while (!why.empty() && why.back() == '\n') why.pop_back();
      end.status = absl::AbortedError(why.empty() ? StrCat("elastic: mpirun ended with status ", wstatus) : why);
      return end;
    }
  } else if (end.lost.size() == static_cast<size_t>(ranks)) {
    end.status = absl::AbortedError(StrCat("elastic: every rank was lost (", end.cause, ")"));
    return end;
  } else {
    end.status = absl::AbortedError(end.cause);
  }
  if (end.lost.empty() && end.stopped_at < 0) return end;  // done
  std::vector<int> survivors;
  std::map<int, std::vector<runtime::RankSnapshot>> held;
  for (int r = 0; r < ranks; ++r) {
    if (std::find(end.lost.begin(), end.lost.end(), r) != end.lost.end()) continue;
    survivors.push_back(r);
    for (const auto& [step, path] : SnapshotFiles(edir, r)) {
      absl::StatusOr<runtime::RankSnapshot> s = runtime::ReadRankSnapshot(path);
      if (s.ok()) {
        held[r].push_back(std::move(*s));
      } else {  // a torn file (rank stopped while writing) or a corrupt one is skipped, and said so
        end.unreadable.push_back(std::string(s.status().message()));
      }
    }
  }
  auto common = NewestCommon(std::move(held), survivors);
  if (common.ok()) end.snapshots = std::move(*common);
  return end;
}

// "step": N and "unix_time": T of a metrics line.
int64_t StepOf(const std::string& line) {
  const size_t at = line.find("\"step\": ");
  return at == std::string::npos ? -1 : std::atoll(line.c_str() + at + 8);
}
double FieldOf(const std::string& line, const char* key) {
  const std::string k = StrCat("\"", key, "\": ");
  const size_t at = line.find(k);
  return at == std::string::npos ? 0 : std::atof(line.c_str() + at + k.size());
}

std::vector<std::string> Lines(const std::string& path) {
  std::vector<std::string> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

}  // namespace

absl::Status RunElastic(const TrainOptions& o, const runtime::Backend& backend) {
  if (o.cluster.empty()) return absl::InvalidArgumentError("--elastic needs --cluster FILE: the devices it may use (the source of truth for membership)");
  if (!o.plan.empty()) return absl::InvalidArgumentError("--elastic synthesizes its own plan for each membership; drop --plan and give --model");
  if (o.model.name.empty()) return absl::InvalidArgumentError("--elastic needs --model NAME (and its --model-arg/--batch/--small)");
  if (o.workers != "threads" && o.workers != "mpi") {
    return absl::InvalidArgumentError(StrCat("--workers ", o.workers, "; expected threads or mpi"));
  }
  HS_RETURN_IF_ERROR(SnapshotEvery(o.snapshot_every).status());
  if (backend.name() != "cpu") {
    return absl::InvalidArgumentError(StrCat("--elastic runs CPU ranks (threads or MPI processes); --backend ", backend.name(),
                                             " is not supported yet"));
  }
  if (UnderMpiLauncher()) {
    return absl::InvalidArgumentError("--elastic is the agent: run it once, not under mpirun; with --workers mpi it starts mpirun itself");
  }
  for (const auto& [flag, given] : {std::pair{"--ranks", o.Given("--ranks")}, {"--emulate-gpus", o.emulate_gpus}}) {
    if (given) return absl::InvalidArgumentError(StrCat(flag, " does not apply to --elastic"));
  }
  HS_ASSIGN_OR_RETURN(costmodel::Cluster cluster, costmodel::ReadClusterFile(o.cluster));
  HS_ASSIGN_OR_RETURN(ir::ModelSpec spec, o.model.Resolve());
  HS_ASSIGN_OR_RETURN(ir::Graph graph, ir::BuildModel(spec));
  if (!graph.running_stats().empty()) {
    return absl::FailedPreconditionError(StrCat("--model ", spec.ToString(), ": elastic training does not keep batch-norm "
                                                "running statistics (", graph.running_stats().front().name,
                                                ", ...); train it with train --plan"));
  }
  std::map<std::string, ir::Shape> shapes;
  for (ir::ValueId v : graph.parameters()) shapes[graph.value(v).name] = graph.value(v).shape;
  HS_ASSIGN_OR_RETURN(runtime::OptimizerConfig opt, o.Optimizer());

  // Members in cluster order.
  std::vector<std::string> members;
  {
    std::set<std::string> wanted;
    std::istringstream in(o.members);
    for (std::string m; std::getline(in, m, ',');) {
      if (m.empty()) continue;
      if (std::none_of(cluster.devices.begin(), cluster.devices.end(), [&](const costmodel::Device& d) { return d.name == m; })) {
        return absl::InvalidArgumentError(StrCat("--members: device '", m, "' is not in cluster '", o.cluster, "'"));
      }
      wanted.insert(m);
    }
    for (const costmodel::Device& d : cluster.devices) {
      if (wanted.empty() || wanted.count(d.name)) members.push_back(d.name);
    }
  }

  std::string dir = o.elastic_dir;
  if (dir.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    dir = fmt::format("{}/hetsynth-elastic-{}", fs::is_directory("/dev/shm") ? "/dev/shm" : tmp ? tmp : "/tmp", ::getpid());
  }
  std::error_code ec;
  fs::create_directories(dir + "/requests", ec);
  if (ec || ::access(dir.c_str(), W_OK) != 0) {
    return absl::InvalidArgumentError(StrCat("--elastic-dir '", dir, "': cannot create or write it"));
  }
  dir = fs::absolute(dir).string();
  // --trace: the agent's timeline (epochs, detection, re-planning, resharding) and rank 0's steps,
  // in wall-clock time from the start.
  const double t_start = UnixNow();
  std::vector<runtime::TraceEvent> trace;
  auto span = [&](int track, const std::string& name, const char* category, double begin_unix, double end_unix) {
    trace.push_back({name, category, track, begin_unix - t_start, std::max(end_unix - begin_unix, 1e-4), 0});
  };
  const std::string cluster_abs = fs::absolute(o.cluster).string();
  auto write_agent = [&](const std::vector<std::string>& m) {
    return WriteFileAtomically(dir + "/agent", StrCat(cluster_abs, "\n", absl::StrJoin(m, ","), "\n"));
  };
  HS_RETURN_IF_ERROR(write_agent(members));
  std::ofstream log(dir + "/membership.jsonl", std::ios::binary | std::ios::trunc);
  if (!o.quiet) {
    fmt::print(stderr,
               "elastic: training {} on cluster '{}' ({} of {} devices: {}), {} ranks; snapshots every {} steps, "
               "state in {} (membership log: membership.jsonl)\n",
               spec.ToString(), cluster.name, members.size(), cluster.size(), absl::StrJoin(members, ", "), o.workers,
               o.snapshot_every, dir);
  }

  std::vector<std::string> kept;   // metrics lines of the steps whose results stand, in order
  std::vector<int64_t> redone;     // steps done, then lost with an epoch and done again
  std::vector<std::string> summary;
  double recovery_pending = 0;     // detection time of the loss the next epoch recovers from
  double recovery_max = 0;
  int snapshots = 0;               // rank 0's wall clock in snapshots and in steps, over the epochs
  double snapshot_s = 0, step_wall_s = 0;
  // The state the next epoch starts from: --load's checkpoint or the seed's initialization at
  // first, then each resharded snapshot.
  runtime::Checkpoint resume;
  bool have_resume = false;
  if (!o.load.empty()) {
    HS_ASSIGN_OR_RETURN(resume, runtime::ReadCheckpoint(o.load, shapes, opt, spec.ToString()));
    runtime::PrintCheckpointNote(resume);
    have_resume = true;
  }
  const int64_t first_step = resume.step;
  int64_t step = first_step;
  Epoch ep;
  ep.members = members;
  HS_ASSIGN_OR_RETURN(const std::string exe, ThisProgramPath());
  for (;; ++ep.index) {
    ep.start_step = step;
    if (ep.index > 64) return absl::AbortedError("elastic: 64 membership epochs; giving up");
    // Re-plan for the members.
    const auto t0 = std::chrono::steady_clock::now();
    const double epoch_unix = UnixNow();
    HS_ASSIGN_OR_RETURN(costmodel::Cluster sub,
                        costmodel::SubCluster(cluster, ep.members, fmt::format("{}.epoch{}", cluster.name, ep.index)));
    const std::string cluster_path = fmt::format("{}/cluster-epoch-{}.json", dir, ep.index);
    const std::string plan_path = fmt::format("{}/plan-epoch-{}.json", dir, ep.index);
    HS_RETURN_IF_ERROR(WriteFileAtomically(cluster_path, costmodel::ClusterToJson(sub)));
    synth::SynthOptions so;
    const synth::Strategy strategy =
        SynthesizedStrategy(/*flat=*/false, /*no_overlap=*/false, /*mesh_levels=*/false, /*segments=*/true);
    absl::StatusOr<synth::SynthResult> r = synth::Synthesize(graph, sub, strategy, so);
    if (!r.ok()) return absl::Status(r.status().code(), StrCat("elastic: re-planning for ", absl::StrJoin(ep.members, ", "), ": ", r.status().message()));
    const instr::Plan plan = MakePlan(spec, sub, *r);
    HS_RETURN_IF_ERROR(WriteFileAtomically(plan_path, instr::PlanToJson(graph, plan)));
    const double replan_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    span(0, fmt::format("re-plan for {} devices", ep.members.size()), "re-plan", epoch_unix, epoch_unix + replan_s);
    std::string resume_path;
    if (have_resume) {
      // The reshard's input, kept on disk too: a fresh run can start from it (docs/elastic.md).
      resume_path = fmt::format("{}/resume-epoch-{}.safetensors", dir, ep.index);
      HS_RETURN_IF_ERROR(runtime::WriteCheckpoint(resume_path, spec.ToString(), resume.params, resume.state, opt.kind, resume.step));
    }
    if (!o.quiet) {
      fmt::print(stderr, "elastic: epoch {} from step {}: {} ranks ({}); plan {} predicts {:.2f} ms/step (re-planned in {:.2f} s)\n",
                 ep.index, step, ep.members.size(), absl::StrJoin(ep.members, ", "), plan_path, plan.predicted_step_time_s * 1e3, replan_s);
    }
    const std::string metrics_path = fmt::format("{}/metrics-epoch-{}.jsonl", dir, ep.index);
    TrainOptions e = o;
    e.elastic = false;
    e.plan = plan_path;
    e.cluster = cluster_path;
    e.model = ModelOptions{};
    e.steps = o.steps - (step - first_step);
    e.metrics = metrics_path;
    e.elastic_epoch = ep.index;
    e.load = have_resume && o.workers == "mpi" ? resume_path : "";
    e.elastic_worker.clear();
    EpochEnd end;
    if (o.workers == "threads") {
      end = RunThreadEpoch(e, backend, have_resume ? &resume : nullptr, dir);
    } else {
      std::vector<std::string> w = {exe, "train", "--plan", plan_path, "--cluster", cluster_path, "--steps",
                                    std::to_string(e.steps), "--metrics", metrics_path, "--elastic-worker", dir,
                                    "--elastic-epoch", std::to_string(ep.index), "--snapshot-every",
                                    o.snapshot_every, "--optimizer", o.optimizer,
                                    "--momentum", fmt::format("{}", o.momentum), "--weight-decay",
                                    fmt::format("{}", o.weight_decay), "--seed", std::to_string(o.seed),
                                    "--deadline", fmt::format("{}", o.deadline)};
      if (o.Given("--lr")) w.insert(w.end(), {"--lr", fmt::format("{}", o.lr)});
      if (!e.load.empty()) w.insert(w.end(), {"--load", e.load});
      if (!o.save.empty()) w.insert(w.end(), {"--save", fs::absolute(o.save).string()});
      if (!o.data.empty()) w.insert(w.end(), {"--data", fs::absolute(o.data).string()});
      if (o.no_emulate) w.push_back("--no-emulate");
      if (o.bitwise) w.push_back("--bitwise");
      if (o.dilation > 0) w.insert(w.end(), {"--dilation", fmt::format("{}", o.dilation)});
      if (o.quiet) w.push_back("--quiet");
      end = RunMpiEpoch(e, static_cast<int>(ep.members.size()), dir, w);
      if (!o.quiet) {
        for (const std::string& why : end.unreadable) fmt::print(stderr, "elastic: a snapshot file is not used: {}\n", why);
      }
    }
    // This epoch's steps: they stand up to where the next epoch starts.
    const std::vector<std::string> lines = Lines(metrics_path);
    span(0, fmt::format("epoch {}: {}", ep.index, absl::StrJoin(ep.members, ", ")), "epoch", epoch_unix, UnixNow());
    if (end.detected_unix > 0) span(0, StrCat("detected: ", end.cause), "detection", end.detected_unix, end.detected_unix);
    double prev = epoch_unix + replan_s;
    for (const std::string& line : lines) {
      const double at = FieldOf(line, "unix_time");
      span(1, fmt::format("step {}", StepOf(line)), "step", prev, at);
      prev = at;
    }
    if (recovery_pending > 0 && !lines.empty()) {
      const double rec = FieldOf(lines.front(), "unix_time") - recovery_pending;
      recovery_max = std::max(recovery_max, rec);
      log << fmt::format("{{\"epoch\": {}, \"event\": \"recovered\", \"recovery_s\": {:.3f}}}\n", ep.index, rec);
      log.flush();
      if (!o.quiet) fmt::print(stderr, "elastic: recovered in {:.2f} s (detection to the end of the first step on the new plan)\n", rec);
      recovery_pending = 0;
    }
    auto keep_until = [&](int64_t last) {
      for (const std::string& line : lines) {
        const int64_t s = StepOf(line);
        if (s <= last) {
          kept.push_back(line);
        } else {
          redone.push_back(s);
        }
      }
    };
    summary.push_back(fmt::format("epoch {}: {} ({} ranks) from step {}", ep.index, absl::StrJoin(ep.members, ", "), ep.members.size(), ep.start_step));
    snapshots += end.snapshots_taken;
    snapshot_s += end.snapshot_s;
    step_wall_s += end.step_wall_s;
    if (end.status.ok() && end.stopped_at < 0 && end.lost.empty()) {
      keep_until(std::numeric_limits<int64_t>::max());
      break;
    }
    if (end.lost.empty() && end.stopped_at < 0) return end.status;  // a failure no re-plan mends
    // The survivors' newest snapshot; failing that (none taken yet, or two neighbours lost), the
    // state this epoch started from, which the agent holds.
    const double reshard_unix = UnixNow();
    absl::StatusOr<runtime::Checkpoint> ck =
        end.snapshots.empty() ? absl::FailedPreconditionError("the survivors hold no snapshot of one step")
                              : runtime::AssembleSnapshot(end.snapshots, shapes);
    if (ck.ok()) {
      resume = std::move(*ck);
      have_resume = true;
      step = resume.step;
    } else {
      step = ep.start_step;
      if (!o.quiet) {
        fmt::print(stderr, "elastic: {}; resuming from the state epoch {} started from (step {})\n", std::string(ck.status().message()),
                   ep.index, step);
      }
    }
    keep_until(step);
    span(0, StrCat("reshard: snapshot of step ", step), "reshard", reshard_unix, UnixNow());
    std::vector<std::string> next = ep.members, lost, joined, left;
    std::string cause;
    // A rank lost: in the step after the last one rank 0 finished (no step ends without every rank).
    const int64_t lost_in = end.lost.empty() ? 0 : (lines.empty() ? ep.start_step : StepOf(lines.back())) + 1;
    if (!end.lost.empty()) {
      for (int rank : end.lost) lost.push_back(ep.members[static_cast<size_t>(rank)]);
      next.clear();
      for (const std::string& m : ep.members) {
        if (std::find(lost.begin(), lost.end(), m) == lost.end()) next.push_back(m);
      }
      cause = end.cause;
      recovery_pending = end.detected_unix;
      ::unsetenv("HETSYNTH_TEST_KILL_RANK");  // the test hook kills once
      if (!o.quiet) {
        fmt::print(stderr, "elastic: lost {} in step {} ({}); the {} survivors resume from the snapshot of step {}\n",
                   absl::StrJoin(lost, ", "), lost_in, end.cause, next.size(), step);
      }
    } else {
      for (const Request& q : Requests(dir, end.stopped_at)) {
        const bool member = std::find(next.begin(), next.end(), q.device) != next.end();
        const bool known = std::any_of(cluster.devices.begin(), cluster.devices.end(),
                                       [&](const costmodel::Device& d) { return d.name == q.device; });
        std::string verdict;
        if (q.kind == "join" && known && !member) {
          next.push_back(q.device);
          joined.push_back(q.device);
        } else if (q.kind == "leave" && member && next.size() > 1) {
          next.erase(std::find(next.begin(), next.end(), q.device));
          left.push_back(q.device);
        } else {
          verdict = StrCat("ignored: ", q.kind, " ", q.device, " (", !known ? "not in the cluster" : member ? "already a member" : q.kind == "leave" ? "not a member, or the last one" : "", ")");
          if (!o.quiet) fmt::print(stderr, "elastic: request {}\n", verdict);
        }
        fs::remove(q.file, ec);
      }
      std::vector<std::string> ordered;
      for (const costmodel::Device& d : cluster.devices) {
        if (std::find(next.begin(), next.end(), d.name) != next.end()) ordered.push_back(d.name);
      }
      next = ordered;
      cause = StrCat("requests at step ", end.stopped_at);
      // Rank 0 saw them as that step ended: its metrics line's time.
      for (const std::string& line : lines) {
        if (StepOf(line) == end.stopped_at) end.detected_unix = FieldOf(line, "unix_time");
      }
      if (!o.quiet) {
        fmt::print(stderr, "elastic: at step {}: {}{}{}\n", end.stopped_at, joined.empty() ? "" : "join " + absl::StrJoin(joined, ", "),
                   !joined.empty() && !left.empty() ? ", " : "", left.empty() ? "" : "leave " + absl::StrJoin(left, ", "));
      }
    }
    log << fmt::format(
        "{{\"epoch\": {}, \"event\": \"membership\", \"step\": {}, \"members\": {}, \"lost\": {}, \"joined\": {}, "
        "\"left\": {}, \"lost_in_step\": {}, \"cause\": \"{}\", \"detected_unix\": {:.6f}, \"plan\": \"plan-epoch-{}.json\"}}\n",
        ep.index + 1, step, JsonList(next), JsonList(lost), JsonList(joined), JsonList(left), lost_in, JsonEscape(cause),
        end.detected_unix, ep.index + 1);
    log.flush();
    ep.members = next;
    HS_RETURN_IF_ERROR(write_agent(ep.members));
  }
  log.close();  // the membership log is flushed after each line; a full disk shows here at the latest
  if (!log) return absl::InvalidArgumentError(StrCat("cannot write '", dir, "/membership.jsonl' (a write or its close failed)"));
  if (!o.trace.empty()) {
    HS_RETURN_IF_ERROR(runtime::WriteChromeTrace(o.trace, trace, {"elastic agent", "steps of rank 0 (wall clock)"},
                                                 StrCat("elastic run of ", spec.ToString(), " on ", cluster.name)));
  }
  if (!o.metrics.empty()) {
    std::string text;
    for (const std::string& line : kept) text += line + "\n";
    HS_RETURN_IF_ERROR(WriteFileAtomically(o.metrics, text));
  }
  // The default directory is in memory (/dev/shm) and only this run's: gone with its success. A
  // directory the user named keeps its plans, log and snapshots.
  if (o.elastic_dir.empty()) fs::remove_all(dir, ec);
  float first = NAN, last = NAN;
  if (!kept.empty()) first = static_cast<float>(FieldOf(kept.front(), "loss")), last = static_cast<float>(FieldOf(kept.back(), "loss"));
  fmt::print("trained {} elastically on cluster '{}' for {} steps in {} membership epoch{}: loss {:.4f} -> {:.4f}; {} steps redone{}\n",
             spec.ToString(), cluster.name, o.steps, ep.index + 1, ep.index ? "s" : "", first, last, redone.size(),
             recovery_max > 0 ? fmt::format("; slowest recovery {:.2f} s", recovery_max) : "");
  for (const std::string& s : summary) fmt::print("  {}\n", s);
  if (snapshots > 0 && step_wall_s > 0) {
    fmt::print("elastic overhead: {} snapshots (every {} steps) took {:.1f} ms, {:.2f}% of the steps' {:.1f} ms "
               "(rank 0's wall clock)\n",
               snapshots, o.snapshot_every, 1e3 * snapshot_s, 100 * snapshot_s / step_wall_s, 1e3 * step_wall_s);
  }
  return absl::OkStatus();
}

namespace {

struct RequestFlags {
  std::string dir, device;
  int64_t at_step = 0;
};

absl::Status MakeRequest(const std::string& kind, const RequestFlags& f) {
  const std::string agent = ReadSmall(f.dir + "/agent");
  if (agent.empty()) {
    return absl::InvalidArgumentError(StrCat("--dir '", f.dir, "': no elastic run there (no '", f.dir,
                                             "/agent'); expected the --elastic-dir of a running `hetsynth train --elastic`"));
  }
  std::istringstream in(agent);
  std::string cluster_path, members_line;
  std::getline(in, cluster_path);
  std::getline(in, members_line);
  HS_ASSIGN_OR_RETURN(costmodel::Cluster cluster, costmodel::ReadClusterFile(cluster_path));
  const bool known = std::any_of(cluster.devices.begin(), cluster.devices.end(),
                                 [&](const costmodel::Device& d) { return d.name == f.device; });
  if (!known) {
    std::vector<std::string> names;
    for (const costmodel::Device& d : cluster.devices) names.push_back(d.name);
    return absl::InvalidArgumentError(StrCat("device '", f.device, "' is not in cluster file '", cluster_path,
                                             "'; expected one of ", absl::StrJoin(names, ", ")));
  }
  std::vector<std::string> members;
  std::istringstream ms(members_line);
  for (std::string m; std::getline(ms, m, ',');) members.push_back(m);
  const bool member = std::find(members.begin(), members.end(), f.device) != members.end();
  if (kind == "join" && member) {
    return absl::InvalidArgumentError(StrCat("device '", f.device, "' is already a member (", absl::StrJoin(members, ", "), ")"));
  }
  if (kind == "leave" && !member) {
    return absl::InvalidArgumentError(StrCat("device '", f.device, "' is not a member (", absl::StrJoin(members, ", "), ")"));
  }
  if (kind == "leave" && members.size() == 1) {
    return absl::InvalidArgumentError(StrCat("device '", f.device, "' is the last member; stop the run instead"));
  }
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
  const std::string path = fmt::format("{}/requests/{:020d}-{}", f.dir, ns, ::getpid());
  HS_RETURN_IF_ERROR(WriteFileAtomically(path, fmt::format("{} {} {}\n", kind, f.device, f.at_step)));
  fmt::print("asked the elastic run in {} to {} {} at its first step boundary at or after step {}\n", f.dir,
             kind == "join" ? "add" : "remove", f.device, f.at_step);
  return absl::OkStatus();
}

}  // namespace

Runner RegisterElastic(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("elastic", "Ask a running `hetsynth train --elastic` to add or remove a device");
  cmd->require_subcommand(1);
  auto f = std::make_shared<RequestFlags>();
  auto kind = std::make_shared<std::string>();
  for (const char* k : {"join", "leave"}) {
    CLI::App* sub = cmd->add_subcommand(k, std::string(k) == "join"
                                               ? "Add a device of the cluster file: the run re-plans with it at the next step boundary"
                                               : "Remove a device: the run snapshots, re-plans without it and goes on");
    sub->add_option("--dir", f->dir, "the run's --elastic-dir (printed when it starts)")->required()->type_name("DIR");
    sub->add_option("device", f->device, "device name in the cluster file")->required();
    sub->add_option("--at-step", f->at_step, "not before this optimizer step (default: the next boundary)")
        ->check(NonNegativeInt());
    sub->callback([kind, k] { *kind = k; });
  }
  return [f, kind] { return MakeRequest(*kind, *f); };
}

}  // namespace hetsynth::cli
