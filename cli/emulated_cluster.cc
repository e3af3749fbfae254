// The emulated cluster: namespaces, bridge, veth pairs, tbf qdiscs, state files, mpirun across
// them. See emulated_cluster.h and docs/emulated-cluster.md.
#include "emulated_cluster.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "hetsynth/base/status.h"
#include "hetsynth/base/this_program.h"
#include "hetsynth/runtime/pacer.h"

namespace hetsynth::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Every address of an emulated cluster lies in this /16, which exists only inside its namespaces:
// node j is 10.213.<j / 250>.<j % 250 + 1>, the hub's bridge 10.213.255.254.
constexpr const char* kSubnet = "10.213.0.0/16";
constexpr int kPrefix = 16;
constexpr const char* kHubAddress = "10.213.255.254";
constexpr const char* kBridge = "br0";
constexpr const char* kNodeNic = "eth0";
constexpr int kMtu = 1500;

// ---- processes -------------------------------------------------------------------------------

// The signal ScopedInterruptHandler recorded, and the mpirun it forwards to.
volatile sig_atomic_t g_signal = 0;
volatile sig_atomic_t g_child = 0;
bool g_handler_installed = false;

void OnSignal(int sig, siginfo_t* info, void*) {
  if (g_signal == 0) g_signal = sig;
  // A terminal's Ctrl-C (si_code SI_KERNEL) already reached mpirun, which is in our foreground
  // process group; a kill(1) aimed at this process is passed on.
  if (g_child > 0 && info != nullptr && info->si_code <= 0) kill(static_cast<pid_t>(g_child), sig);
}

constexpr int kHandledSignals[] = {SIGINT, SIGTERM, SIGHUP};
struct sigaction g_old_actions[3];

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  return s;
}

std::string Join(const std::vector<std::string>& v, const char* sep = " ") {
  std::string out;
  for (const std::string& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

// The absolute path of `name` (or `name` itself when it contains a '/' and is executable); empty
// when not found.
std::string FindOnPath(const std::string& name) {
  if (name.find('/') != std::string::npos) return access(name.c_str(), X_OK) == 0 ? name : "";
  const char* path = std::getenv("PATH");
  std::stringstream ss(path != nullptr ? path : "/usr/sbin:/usr/bin:/sbin:/bin");
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    if (dir.empty()) continue;
    const std::string p = dir + "/" + name;
    struct stat st {};
    if (stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

void ResetSignalsInChild() {
  for (int sig : kHandledSignals) signal(sig, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
}

struct ToolResult {
  int status = -1;     // exit status; 128 + N when killed by signal N; 127 when it could not start
  std::string output;  // stdout and stderr together
};

// Runs argv (argv[0] an absolute path) to completion with stdout and stderr captured. The child
// gets its own process group, so a terminal's Ctrl-C does not cut a setup or teardown step short.
ToolResult RunTool(const std::vector<std::string>& argv) {
  ToolResult r;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    r.output = StrCat("pipe: ", std::strerror(errno));
    return r;
  }
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) {
    r.output = StrCat("fork: ", std::strerror(errno));
    close(fds[0]), close(fds[1]);
    return r;
  }
  if (pid == 0) {
    setpgid(0, 0);
    ResetSignalsInChild();
    const int null = open("/dev/null", O_RDONLY);
    if (null >= 0) dup2(null, 0);
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    execv(args[0], args.data());
    const std::string msg = StrCat("cannot run ", argv[0], ": ", std::strerror(errno), "\n");
    (void)!write(2, msg.data(), msg.size());
    _exit(127);
  }
  close(fds[1]);
  char buf[4096];
  for (;;) {
    const ssize_t n = read(fds[0], buf, sizeof buf);
    if (n > 0) {
      r.output.append(buf, static_cast<size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  close(fds[0]);
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

// /proc/PID/stat field 22 (start time in clock ticks since boot); -1 when there is no such process.
int64_t ProcessStartTime(int pid) {
  if (pid <= 0) return -1;
  std::ifstream in(StrCat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = text.rfind(')');
  if (!in.good() && text.empty()) return -1;
  if (close == std::string::npos) return -1;
  std::istringstream fields(text.substr(close + 2));
  std::string f;
  for (int i = 3; i <= 22 && fields >> f; ++i) {
    if (i == 22) return std::atoll(f.c_str());
  }
  return -1;
}

bool OwnerAlive(const EmulatedClusterState& s) {
  return s.owner_pid > 0 && ProcessStartTime(s.owner_pid) == s.owner_start;
}

// ---- tools -----------------------------------------------------------------------------------

struct Tools {
  std::string ip, tc;
};

absl::Status RequireRoot(const char* what) {
  if (geteuid() != 0) {
    return absl::PermissionDeniedError(StrCat(what, " needs root (network namespaces, veth pairs and tc); running as uid ",
                                              geteuid()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> RequireTool(const std::string& name, const char* package, const char* why) {
  std::string p = FindOnPath(name);
  if (p.empty()) {
    return absl::FailedPreconditionError(StrCat("'", name, "' not found on PATH (", package, "); ", why));
  }
  return p;
}

absl::StatusOr<Tools> FindTools() {
  Tools t;
  HS_ASSIGN_OR_RETURN(t.ip, RequireTool("ip", "iproute2", "the emulated cluster is made with 'ip netns' and 'ip link'"));
  HS_ASSIGN_OR_RETURN(t.tc, RequireTool("tc", "iproute2", "the emulated cluster shapes links with 'tc qdisc ... tbf'"));
  return t;
}

// Runs one setup step; on failure the error says which capability is missing.
absl::Status Step(const std::vector<std::string>& argv, const std::string& capability) {
  const ToolResult r = RunTool(argv);
  if (r.status == 0) return absl::OkStatus();
  std::vector<std::string> shown(argv);
  shown[0] = fs::path(shown[0]).filename();
  std::string out = Trim(r.output);
  for (char& ch : out) if (ch == '\n') ch = ' ';
  return absl::FailedPreconditionError(StrCat(capability, ": '", Join(shown), "' failed (exit ", r.status, ")",
                                              out.empty() ? "" : ": " + out));
}

// Names of every network namespace (`ip netns list`, first word of each line).
std::vector<std::string> ListNetns(const Tools& t) {
  std::vector<std::string> out;
  const ToolResult r = RunTool({t.ip, "netns", "list"});
  std::istringstream in(r.output);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string w;
    if (words >> w) out.push_back(w);
  }
  return out;
}

// Namespaces of cluster `name`: hs-<name>-hub and hs-<name>-n<digits>; node namespaces first.
std::vector<std::string> NetnsOf(const Tools& t, const std::string& name) {
  const std::regex re("hs-" + name + "-(hub|n[0-9]+)");
  std::vector<std::string> nodes, hub;
  for (const std::string& ns : ListNetns(t)) {
    if (!std::regex_match(ns, re)) continue;
    (ns == "hs-" + name + "-hub" ? hub : nodes).push_back(ns);
  }
  nodes.insert(nodes.end(), hub.begin(), hub.end());
  return nodes;
}

std::vector<int> PidsIn(const Tools& t, const std::string& ns) {
  std::vector<int> pids;
  std::istringstream in(RunTool({t.ip, "netns", "pids", ns}).output);
  int pid;
  while (in >> pid) {
    if (pid > 0 && pid != getpid()) pids.push_back(pid);
  }
  return pids;
}

// SIGTERM, then after up to 2 s SIGKILL, every process inside namespace `ns`.
void KillProcessesIn(const Tools& t, const std::string& ns, std::vector<std::string>* removed) {
  std::vector<int> pids = PidsIn(t, ns);
  if (pids.empty()) return;
  for (int pid : pids) kill(pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (!(pids = PidsIn(t, ns)).empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (int pid : pids) kill(pid, SIGKILL);
  if (removed != nullptr) removed->push_back(StrCat("processes still inside ", ns, " (terminated)"));
}

// An exclusive lock on the state directory for the duration of a state change.
class StateLock {
 public:
  StateLock() {
    fs::create_directories(kEmulatedClusterStateDir);
    fd_ = open(kEmulatedClusterStateDir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd_ >= 0) {
      while (flock(fd_, LOCK_EX) != 0 && errno == EINTR) {
      }
    }
  }
  ~StateLock() {
    if (fd_ >= 0) close(fd_);
  }
  StateLock(const StateLock&) = delete;
  StateLock& operator=(const StateLock&) = delete;

 private:
  int fd_ = -1;
};

std::string StatePathOf(const std::string& name) { return StrCat(kEmulatedClusterStateDir, "/", name, ".json"); }

json ToJson(const EmulatedClusterState& s) {
  json nodes = json::array();
  for (const EmulatedNode& n : s.nodes) {
    nodes.push_back({{"name", n.name}, {"netns", n.netns}, {"address", n.address}, {"hub_port", n.hub_port},
                     {"devices", n.devices}});
  }
  return {{"format", "hetsynth-emulated-cluster"},
          {"version", 1},
          {"name", s.name},
          {"cluster_file", s.cluster_file},
          {"cluster_name", s.cluster_name},
          {"dilation", s.dilation},
          {"inter_node", {{"bandwidth", s.bandwidth}, {"latency", s.latency}}},
          {"shaped_bytes_per_s", s.shaped_bytes_per_s},
          {"tbf", {{"rate_bits", s.rate_bits}, {"burst_bytes", s.burst_bytes}, {"limit_bytes", s.limit_bytes}}},
          {"subnet", kSubnet},
          {"hub", {{"netns", s.hub_netns}, {"address", s.hub_address}, {"bridge", kBridge}}},
          {"nodes", nodes},
          {"rank_node", s.rank_node},
          {"owner_pid", s.owner_pid},
          {"owner_start", s.owner_start},
          {"phase", s.phase}};
}

absl::StatusOr<EmulatedClusterState> FromJson(const json& j, const std::string& path) {
  try {
    EmulatedClusterState s;
    s.name = j.at("name").get<std::string>();
    s.cluster_file = j.at("cluster_file").get<std::string>();
    s.cluster_name = j.at("cluster_name").get<std::string>();
    s.dilation = j.at("dilation").get<double>();
    s.bandwidth = j.at("inter_node").at("bandwidth").get<double>();
    s.latency = j.at("inter_node").at("latency").get<double>();
    s.shaped_bytes_per_s = j.at("shaped_bytes_per_s").get<double>();
    s.rate_bits = j.at("tbf").at("rate_bits").get<int64_t>();
    s.burst_bytes = j.at("tbf").at("burst_bytes").get<int64_t>();
    s.limit_bytes = j.at("tbf").at("limit_bytes").get<int64_t>();
    s.hub_netns = j.at("hub").at("netns").get<std::string>();
    s.hub_address = j.at("hub").at("address").get<std::string>();
    for (const json& n : j.at("nodes")) {
      s.nodes.push_back({n.at("name").get<std::string>(), n.at("netns").get<std::string>(),
                         n.at("address").get<std::string>(), n.at("hub_port").get<std::string>(),
                         n.at("devices").get<std::vector<std::string>>()});
    }
    s.rank_node = j.at("rank_node").get<std::vector<int>>();
    s.owner_pid = j.at("owner_pid").get<int>();
    s.owner_start = j.at("owner_start").get<int64_t>();
    s.phase = j.at("phase").get<std::string>();
    return s;
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(StrCat("emulated cluster state '", path, "' is damaged: ", e.what(),
                                             "; remove it with 'hetsynth cluster down'"));
  }
}

absl::StatusOr<EmulatedClusterState> ReadState(const std::string& name) {
  const std::string path = StatePathOf(name);
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(StrCat("emulated cluster '", name, "' is not up (no ", path, ")"));
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(StrCat("emulated cluster state '", path, "' is not JSON: ", e.what(),
                                             "; remove it with 'hetsynth cluster down --name ", name, "'"));
  }
  return FromJson(j, path);
}

absl::Status WriteState(const EmulatedClusterState& s) {
  return WriteFileAtomically(s.StatePath(), ToJson(s).dump(1) + "\n");
}

// The rsh agent Open MPI calls as AGENT [OPTIONS] HOST COMMAND...: COMMAND (one shell command line,
// as ssh would pass it on) runs in HOST's namespace, in a UTS namespace of its own whose hostname
// is the node's namespace name.
std::string AgentScript(const EmulatedClusterState& s, const std::string& ip, const std::string& unshare) {
  std::string cases;
  for (const EmulatedNode& n : s.nodes) cases += fmt::format("  {}) ns={} ;;\n", n.address, n.netns);
  return fmt::format(
      "#!/bin/sh\n"
      "# rsh agent of emulated cluster '{}', written by 'hetsynth cluster up'. Open MPI runs it as\n"
      "# AGENT [OPTIONS] HOST COMMAND...; COMMAND runs inside HOST's network namespace.\n"
      "while [ $# -gt 0 ] && [ \"${{1#-}}\" != \"$1\" ]; do shift; done\n"
      "host=$1\n"
      "shift\n"
      "case \"$host\" in\n"
      "{}"
      "  *) echo \"hetsynth cluster agent: '$host' is not a node of emulated cluster '{}'\" >&2; exit 1 ;;\n"
      "esac\n"
      "exec {} netns exec \"$ns\" {} --uts /bin/sh -c \"hostname $ns && $*\"\n",
      s.name, cases, s.name, ip, unshare);
}

std::string Hostfile(const EmulatedClusterState& s) {
  std::string out = fmt::format("# ranks of emulated cluster '{}' in rank order (Open MPI's seq mapper)\n", s.name);
  for (int node : s.rank_node) out += s.nodes[static_cast<size_t>(node)].address + "\n";
  return out;
}

std::string Rate(double bytes_per_s) {
  const char* units[] = {"B/s", "kB/s", "MB/s", "GB/s", "TB/s"};
  int u = 0;
  while (bytes_per_s >= 1000 && u < 4) bytes_per_s /= 1000, ++u;
  return fmt::format("{:.4g} {}", bytes_per_s, units[u]);
}

std::string BitRate(double bits_per_s) {
  const char* units[] = {"bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"};
  int u = 0;
  while (bits_per_s >= 1000 && u < 4) bits_per_s /= 1000, ++u;
  return fmt::format("{:.4g} {}", bits_per_s, units[u]);
}

std::string Seconds(double s) {
  if (s >= 1) return fmt::format("{:.3g} s", s);
  if (s >= 1e-3) return fmt::format("{:.3g} ms", s * 1e3);
  return fmt::format("{:.3g} µs", s * 1e6);
}

absl::Status DownLocked(const std::string& name, const Tools& t, std::vector<std::string>* removed) {
  const std::vector<std::string> namespaces = NetnsOf(t, name);
  for (const std::string& ns : namespaces) KillProcessesIn(t, ns, removed);
  std::vector<std::string> failed;
  for (const std::string& ns : namespaces) {
    const ToolResult r = RunTool({t.ip, "netns", "delete", ns});
    if (r.status != 0) {
      failed.push_back(StrCat(ns, " (", Trim(r.output), ")"));
    } else if (removed != nullptr) {
      removed->push_back(StrCat("namespace ", ns, ns.ends_with("-hub") ? " with its bridge and veth ends"
                                                                        : " with its eth0 and tbf qdiscs"));
    }
  }
  const std::string state = StatePathOf(name);
  for (const std::string& path : {state, StrCat(kEmulatedClusterStateDir, "/", name, ".hosts"),
                                  StrCat(kEmulatedClusterStateDir, "/", name, ".agent")}) {
    std::error_code ec;
    if (fs::remove(path, ec) && removed != nullptr) removed->push_back(StrCat("file ", path));
  }
  // A temporary left by an interrupted write (WriteFileAtomically: STATE.XXXXXX.tmp).
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(kEmulatedClusterStateDir, ec)) {
    const std::string f = e.path().string();
    if (f.size() == state.size() + 11 && f.starts_with(state + ".") && f.ends_with(".tmp") && fs::remove(f, ec) &&
        removed != nullptr) {
      removed->push_back(StrCat("file ", f));
    }
  }
  for (const std::string& ns : NetnsOf(t, name)) failed.push_back(StrCat(ns, " (still listed)"));
  if (!failed.empty()) {
    return absl::InternalError(StrCat("emulated cluster '", name, "': could not remove namespace ", Join(failed, ", ")));
  }
  return absl::OkStatus();
}

// Test hook: HETSYNTH_TEST_CLUSTER_FAIL_STEP=N makes Up fail after its N-th setup step, so that
// tests see the teardown of a half-made cluster.
int FailStep() {
  const char* v = std::getenv("HETSYNTH_TEST_CLUSTER_FAIL_STEP");
  return v != nullptr ? std::atoi(v) : 0;
}

}  // namespace

// ---- public ----------------------------------------------------------------------------------

std::string EmulatedClusterState::StatePath() const { return StatePathOf(name); }
std::string EmulatedClusterState::HostfilePath() const { return StrCat(kEmulatedClusterStateDir, "/", name, ".hosts"); }
std::string EmulatedClusterState::AgentPath() const { return StrCat(kEmulatedClusterStateDir, "/", name, ".agent"); }

double DefaultDilation(const costmodel::Cluster& c, int cores, std::string* why) {
  double fastest = 0, sum = 0;
  for (const costmodel::Device& d : c.devices) fastest = std::max(fastest, d.flops);
  for (const costmodel::Device& d : c.devices) sum += d.flops / fastest;
  const double k_cpu = runtime::DilationForCores(sum, cores);
  const double k_net = std::max(1.0, std::ceil(c.inter_node.bandwidth / kMaxFaithfulShapedBytesPerSecond - 1e-9));
  const double k = std::max(k_cpu, k_net);
  if (why != nullptr) {
    *why = fmt::format(
        "default dilation K = {:g}: max of {:g} (ranks' CPU use: sum of relative speeds {:.3g} x 1.5 headroom / {} "
        "core{}) and {:g} (inter-node {:.3g} MB/s / K <= {:g} MB/s, what this host shapes faithfully)",
        k, k_cpu, sum, cores, cores == 1 ? "" : "s", k_net, c.inter_node.bandwidth / 1e6,
        kMaxFaithfulShapedBytesPerSecond / 1e6);
  }
  return k;
}

absl::Status CheckEmulatedClusterName(const std::string& name) {
  if (!std::regex_match(name, std::regex("[a-z0-9]{1,12}"))) {
    return absl::InvalidArgumentError(StrCat("--name '", name, "': expected 1 to 12 lower-case letters or digits"));
  }
  return absl::OkStatus();
}

absl::StatusOr<EmulatedClusterState> ReadEmulatedClusterState(const std::string& name) { return ReadState(name); }

ScopedInterruptHandler::ScopedInterruptHandler() {
  HS_CHECK(!g_handler_installed, "one ScopedInterruptHandler at a time");
  g_handler_installed = true;
  g_signal = 0;
  g_child = 0;
  struct sigaction sa {};
  sa.sa_sigaction = OnSignal;
  sa.sa_flags = SA_SIGINFO;  // no SA_RESTART: waits return EINTR and look at the flag
  sigemptyset(&sa.sa_mask);
  for (size_t i = 0; i < 3; ++i) sigaction(kHandledSignals[i], &sa, &g_old_actions[i]);
}

ScopedInterruptHandler::~ScopedInterruptHandler() {
  for (size_t i = 0; i < 3; ++i) sigaction(kHandledSignals[i], &g_old_actions[i], nullptr);
  g_handler_installed = false;
}

int ScopedInterruptHandler::Received() { return g_signal; }

bool ScopedInterruptHandler::Installed() { return g_handler_installed; }

absl::StatusOr<EmulatedCluster> EmulatedCluster::Up(const costmodel::Cluster& c, const std::string& cluster_file,
                                                    const EmulatedClusterOptions& o) {
  HS_RETURN_IF_ERROR(CheckEmulatedClusterName(o.name));
  if (!std::isfinite(o.dilation) || o.dilation < 1) {
    return absl::InvalidArgumentError(StrCat("--dilation ", o.dilation, ": expected a number >= 1 (link rates are divided by it)"));
  }
  if (c.nodes.empty()) return absl::InvalidArgumentError(StrCat("cluster file '", cluster_file, "' has no nodes"));
  if (c.nodes.size() > static_cast<size_t>(kMaxEmulatedNodes)) {
    return absl::InvalidArgumentError(StrCat("cluster file '", cluster_file, "' has ", c.nodes.size(),
                                             " nodes; the emulated cluster makes at most ", kMaxEmulatedNodes));
  }
  EmulatedClusterState s;
  s.name = o.name;
  s.cluster_file = fs::absolute(cluster_file).lexically_normal();
  s.cluster_name = c.name;
  s.dilation = o.dilation;
  s.bandwidth = c.inter_node.bandwidth;
  s.latency = c.inter_node.latency;
  s.rate_bits = std::llround(c.inter_node.bandwidth * 8 / o.dilation);
  s.shaped_bytes_per_s = static_cast<double>(s.rate_bits) / 8;
  if (s.shaped_bytes_per_s < kMinShapedBytesPerSecond) {
    return absl::InvalidArgumentError(StrCat("cluster file '", cluster_file, "': links.inter_node.bandwidth ",
                                             c.inter_node.bandwidth, " B/s ÷ --dilation ", o.dilation, " = ",
                                             c.inter_node.bandwidth / o.dilation, " B/s; expected at least ", kMinShapedBytesPerSecond,
                                             " B/s to shape with tbf"));
  }
  // tbf: a bucket of ~4 ms at the rate (at least 3 full frames, at most 4 MiB; a small bucket keeps
  // bursts honest) and a queue of ~50 ms (at least 64 KiB).
  s.burst_bytes = std::clamp<int64_t>(std::llround(s.shaped_bytes_per_s * 0.004), 3 * (kMtu + 14), int64_t{4} << 20);
  s.limit_bytes = s.burst_bytes + std::max<int64_t>(std::llround(s.shaped_bytes_per_s * 0.05), int64_t{64} << 10);
  s.hub_netns = StrCat("hs-", o.name, "-hub");
  s.hub_address = kHubAddress;
  for (size_t j = 0; j < c.nodes.size(); ++j) {
    s.nodes.push_back({c.nodes[j].name, StrCat("hs-", o.name, "-n", j), StrCat("10.213.", j / 250, ".", j % 250 + 1),
                       StrCat("n", j), {}});
  }
  for (const costmodel::Device& d : c.devices) {
    s.nodes[static_cast<size_t>(d.node)].devices.push_back(d.name);
    s.rank_node.push_back(d.node);
  }

  HS_RETURN_IF_ERROR(RequireRoot("cluster up"));
  HS_ASSIGN_OR_RETURN(Tools t, FindTools());
  HS_ASSIGN_OR_RETURN(std::string unshare,
                      RequireTool("unshare", "util-linux", "ranks get their node's hostname from 'unshare --uts'"));

  StateLock lock;
  // Leftovers of clusters whose owner died; this name's own state.
  for (const EmulatedClusterState& other : List()) {
    if (other.owner_pid == 0 || OwnerAlive(other)) continue;
    fmt::print(stderr, "hetsynth: removing leftovers of emulated cluster '{}' (its owner, pid {}, is gone)\n",
               other.name, other.owner_pid);
    HS_RETURN_IF_ERROR(DownLocked(other.name, t, nullptr));
  }
  if (absl::StatusOr<EmulatedClusterState> old = ReadState(o.name); old.ok()) {
    if (old->owner_pid == 0) {
      return absl::AlreadyExistsError(StrCat("emulated cluster '", o.name, "' is already up (", old->StatePath(),
                                             "); remove it with 'hetsynth cluster down --name ", o.name,
                                             "' or pick another --name"));
    }
    return absl::AlreadyExistsError(StrCat("emulated cluster '", o.name, "' is in use by pid ", old->owner_pid,
                                           "; pick another --name"));
  } else if (!absl::IsNotFound(old.status())) {
    return old.status();
  }
  if (!NetnsOf(t, o.name).empty()) {
    fmt::print(stderr, "hetsynth: removing leftover namespaces of emulated cluster '{}'\n", o.name);
    HS_RETURN_IF_ERROR(DownLocked(o.name, t, nullptr));
  }

  s.owner_pid = getpid();
  s.owner_start = ProcessStartTime(s.owner_pid);
  s.phase = "creating";
  HS_RETURN_IF_ERROR(WriteState(s));  // first, so that a crash from here on leaves a findable state

  int steps = 0;
  const int fail_at = FailStep();
  const std::string ip = t.ip, tc = t.tc;
  auto run = [&](std::vector<std::string> argv, const std::string& capability) -> absl::Status {
    if (const int sig = ScopedInterruptHandler::Received()) {
      return absl::CancelledError(StrCat("interrupted by signal ", sig, " (", strsignal(sig), ") while bringing up '",
                                         o.name, "'"));
    }
    HS_RETURN_IF_ERROR(Step(argv, capability));
    if (++steps == fail_at) {
      return absl::InternalError(StrCat("HETSYNTH_TEST_CLUSTER_FAIL_STEP=", fail_at, ": failing after '",
                                        Join(std::vector<std::string>(argv.begin() + 1, argv.end())), "'"));
    }
    return absl::OkStatus();
  };
  auto tbf = [&](const std::string& ns, const std::string& dev) -> std::vector<std::string> {
    return {tc, "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", StrCat(s.rate_bits, "bit"),
            "burst", StrCat(s.burst_bytes), "limit", StrCat(s.limit_bytes)};
  };
  auto create = [&]() -> absl::Status {
    const std::string& hub = s.hub_netns;
    HS_RETURN_IF_ERROR(run({ip, "netns", "add", hub}, "network namespaces are unavailable"));
    HS_RETURN_IF_ERROR(run({ip, "-n", hub, "link", "set", "lo", "up"}, "loopback in a namespace"));
    HS_RETURN_IF_ERROR(run({ip, "-n", hub, "link", "add", kBridge, "type", "bridge"}, "bridges are unavailable"));
    HS_RETURN_IF_ERROR(run({ip, "-n", hub, "addr", "add", StrCat(kHubAddress, "/", kPrefix), "dev", kBridge},
                           "addresses in a namespace"));
    HS_RETURN_IF_ERROR(run({ip, "-n", hub, "link", "set", kBridge, "up"}, "bridges are unavailable"));
    for (const EmulatedNode& n : s.nodes) {
      HS_RETURN_IF_ERROR(run({ip, "netns", "add", n.netns}, "network namespaces are unavailable"));
      HS_RETURN_IF_ERROR(run({ip, "-n", n.netns, "link", "set", "lo", "up"}, "loopback in a namespace"));
      // Dilation stretches the idle gaps between a rank's transfers K×, past TCP's idle timeout
      // (about one RTO), which would restart every transfer in slow start; the modelled cluster's
      // gaps are K× shorter. Not counted as a step (HETSYNTH_TEST_CLUSTER_FAIL_STEP).
      HS_RETURN_IF_ERROR(Step({ip, "netns", "exec", n.netns, "sh", "-c",
                               "echo 0 > /proc/sys/net/ipv4/tcp_slow_start_after_idle"},
                              "per-namespace TCP settings"));
      HS_RETURN_IF_ERROR(run({ip, "-n", n.netns, "link", "add", kNodeNic, "mtu", StrCat(kMtu), "type", "veth", "peer",
                              "name", n.hub_port, "mtu", StrCat(kMtu), "netns", hub},
                             "veth pairs are unavailable"));
      HS_RETURN_IF_ERROR(run({ip, "-n", n.netns, "addr", "add", StrCat(n.address, "/", kPrefix), "dev", kNodeNic},
                             "addresses in a namespace"));
      HS_RETURN_IF_ERROR(run(tbf(n.netns, kNodeNic), "tc tbf is unavailable"));
      HS_RETURN_IF_ERROR(run(tbf(hub, n.hub_port), "tc tbf is unavailable"));
      HS_RETURN_IF_ERROR(run({ip, "-n", hub, "link", "set", n.hub_port, "master", kBridge}, "bridges are unavailable"));
      HS_RETURN_IF_ERROR(run({ip, "-n", hub, "link", "set", n.hub_port, "up"}, "veth pairs are unavailable"));
      HS_RETURN_IF_ERROR(run({ip, "-n", n.netns, "link", "set", kNodeNic, "up"}, "veth pairs are unavailable"));
    }
    HS_RETURN_IF_ERROR(WriteFileAtomically(s.HostfilePath(), Hostfile(s)));
    HS_RETURN_IF_ERROR(WriteFileAtomically(s.AgentPath(), AgentScript(s, ip, unshare), 0755));
    s.phase = "up";
    return WriteState(s);
  };
  if (absl::Status st = create(); !st.ok()) {
    std::vector<std::string> removed;
    const absl::Status down = DownLocked(o.name, t, &removed);
    if (!down.ok()) return absl::Status(st.code(), StrCat(st.message(), "; and tearing down: ", down.message()));
    return st;
  }
  return EmulatedCluster(std::move(s), /*owned=*/true);
}

absl::StatusOr<EmulatedCluster> EmulatedCluster::Attach(const std::string& name) {
  HS_RETURN_IF_ERROR(CheckEmulatedClusterName(name));
  absl::StatusOr<EmulatedClusterState> read = ReadState(name);
  if (absl::IsNotFound(read.status())) {
    return absl::NotFoundError(StrCat(read.status().message(), "; bring it up with 'hetsynth cluster up --cluster FILE --name ",
                                      name, "' or use 'cluster run --cluster FILE'"));
  }
  HS_ASSIGN_OR_RETURN(EmulatedClusterState s, std::move(read));
  if (s.owner_pid != 0 && !OwnerAlive(s)) {
    return absl::FailedPreconditionError(StrCat("emulated cluster '", name, "' is a leftover (its owner, pid ",
                                                s.owner_pid, ", is gone); remove it with 'hetsynth cluster down --name ",
                                                name, "'"));
  }
  if (s.phase != "up") {
    return absl::FailedPreconditionError(StrCat("emulated cluster '", name, "' is still being created by pid ", s.owner_pid));
  }
  return EmulatedCluster(std::move(s), /*owned=*/false);
}

absl::Status EmulatedCluster::Down(const std::string& name, std::vector<std::string>* removed) {
  HS_RETURN_IF_ERROR(CheckEmulatedClusterName(name));
  HS_RETURN_IF_ERROR(RequireRoot("cluster down"));
  HS_ASSIGN_OR_RETURN(Tools t, FindTools());
  StateLock lock;
  return DownLocked(name, t, removed);
}

std::vector<EmulatedClusterState> EmulatedCluster::List() {
  std::vector<EmulatedClusterState> out;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(kEmulatedClusterStateDir, ec)) {
    const fs::path p = e.path();
    if (p.extension() != ".json") continue;
    const std::string name = p.stem();
    if (!CheckEmulatedClusterName(name).ok()) continue;
    absl::StatusOr<EmulatedClusterState> s = ReadState(name);
    if (s.ok()) out.push_back(std::move(*s));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return out;
}

EmulatedCluster::EmulatedCluster(EmulatedCluster&& other) noexcept
    : state_(std::move(other.state_)), owned_(std::exchange(other.owned_, false)) {}

EmulatedCluster& EmulatedCluster::operator=(EmulatedCluster&& other) noexcept {
  if (this != &other) {
    if (owned_) (void)Down();
    state_ = std::move(other.state_);
    owned_ = std::exchange(other.owned_, false);
  }
  return *this;
}

EmulatedCluster::~EmulatedCluster() {
  if (!owned_) return;
  if (const absl::Status st = Down(); !st.ok()) {
    fmt::print(stderr, "hetsynth: tearing down emulated cluster '{}': {}\n", state_.name, std::string(st.message()));
  }
}

absl::Status EmulatedCluster::Keep() {
  StateLock lock;
  state_.owner_pid = 0;
  state_.owner_start = 0;
  HS_RETURN_IF_ERROR(WriteState(state_));
  owned_ = false;
  return absl::OkStatus();
}

absl::Status EmulatedCluster::Down() {
  owned_ = false;
  return Down(state_.name);
}

std::vector<std::string> EmulatedCluster::MpirunArgv(const std::vector<std::string>& command,
                                                     const EmulatedRunOptions& o) const {
  std::vector<std::string> argv = {o.mpirun};
  if (geteuid() == 0) argv.push_back("--allow-run-as-root");
  for (const char* a :
       {"--oversubscribe", "--bind-to", "none", "--mca", "rmaps", "seq", "--mca", "btl", "tcp,self,vader", "--mca",
        "btl_tcp_if_include", kSubnet, "--mca", "oob_tcp_if_include", kSubnet, "-x", "HETSYNTH_EMULATED_CLUSTER", "-x",
        "HETSYNTH_DILATION"}) {
    argv.push_back(a);
  }
  for (const std::string& a : {std::string("--hostfile"), state_.HostfilePath(), std::string("--mca"),
                               std::string("plm_rsh_agent"), state_.AgentPath(), std::string("-np"),
                               StrCat(state_.rank_node.size())}) {
    argv.push_back(a);
  }
  argv.insert(argv.end(), o.mpirun_args.begin(), o.mpirun_args.end());
  argv.insert(argv.end(), command.begin(), command.end());
  return argv;
}

absl::StatusOr<int> EmulatedCluster::Run(const std::vector<std::string>& command, const EmulatedRunOptions& o) const {
  if (command.empty()) return absl::InvalidArgumentError("cluster run: no command to run");
  if (state_.rank_node.empty()) {
    return absl::InvalidArgumentError(StrCat("emulated cluster '", state_.name, "' has no devices to run ranks on"));
  }
  HS_RETURN_IF_ERROR(RequireRoot("cluster run"));
  HS_ASSIGN_OR_RETURN(Tools t, FindTools());
  HS_ASSIGN_OR_RETURN(std::string mpirun, RequireTool(o.mpirun, "openmpi-bin", "cluster run starts ranks with Open MPI's mpirun"));
  const ToolResult version = RunTool({mpirun, "--version"});
  if (version.output.find("Open MPI") == std::string::npos) {
    return absl::FailedPreconditionError(StrCat("cluster run needs Open MPI's mpirun (for --mca plm_rsh_agent); '", mpirun,
                                                " --version' says: ", Trim(version.output)));
  }
  for (const std::string& ns : {state_.hub_netns, state_.nodes.front().netns}) {
    if (access(StrCat("/run/netns/", ns).c_str(), F_OK) != 0) {
      return absl::FailedPreconditionError(StrCat("emulated cluster '", state_.name, "': namespace ", ns,
                                                  " is missing; recreate it with 'hetsynth cluster down --name ",
                                                  state_.name, "' and 'cluster up'"));
    }
  }
  EmulatedRunOptions resolved = o;
  resolved.mpirun = mpirun;
  std::vector<std::string> argv = {t.ip, "netns", "exec", state_.hub_netns};
  for (const std::string& a : MpirunArgv(command, resolved)) argv.push_back(a);
  if (const int sig = ScopedInterruptHandler::Received()) {
    return absl::CancelledError(StrCat("interrupted by signal ", sig, " (", strsignal(sig), ") before the run"));
  }

  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const std::string dilation = fmt::format("{:g}", state_.dilation);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError(StrCat("fork: ", std::strerror(errno)));
  if (pid == 0) {
    // mpirun dies with us (SIGKILL included); the ranks die with mpirun.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(128 + SIGTERM);
    ResetSignalsInChild();
    setenv("HETSYNTH_EMULATED_CLUSTER", state_.name.c_str(), 1);
    setenv("HETSYNTH_DILATION", dilation.c_str(), 1);
    // Shared-memory single copy needs ptrace rights that containers often lack.
    setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 0);
    // Ranks usually outnumber cores here; busy-polling ranks starve the softirq work that moves
    // packets through veth, bridge and tbf (a 6-rank step went from ~750 ms to ~36 ms with this).
    setenv("OMPI_MCA_mpi_yield_when_idle", "1", 0);
    execv(args[0], args.data());
    fmt::print(stderr, "hetsynth: cannot run {}: {}\n", args[0], std::strerror(errno));
    _exit(127);
  }
  g_child = pid;
  int st = 0;
  std::chrono::steady_clock::time_point signalled{};
  bool killed = false;
  for (;;) {
    const pid_t w = waitpid(pid, &st, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) {
      g_child = 0;
      return absl::InternalError(StrCat("waitpid: ", std::strerror(errno)));
    }
    if (ScopedInterruptHandler::Received() != 0 && !killed) {
      const auto now = std::chrono::steady_clock::now();
      if (signalled == std::chrono::steady_clock::time_point{}) {
        signalled = now;
      } else if (now - signalled > std::chrono::seconds(o.kill_grace_s)) {
        kill(pid, SIGKILL);
        killed = true;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  g_child = 0;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

std::string EmulatedCluster::Describe() const {
  const EmulatedClusterState& s = state_;
  std::string out = fmt::format("emulated cluster '{}': {} node{}, {} rank{}, from '{}' (cluster '{}'), dilation K = {:g}\n",
                                s.name, s.nodes.size(), s.nodes.size() == 1 ? "" : "s", s.rank_node.size(),
                                s.rank_node.size() == 1 ? "" : "s", s.cluster_file, s.cluster_name, s.dilation);
  out += fmt::format("  hub   {:<18} bridge {} {}/{}\n", s.hub_netns, kBridge, s.hub_address, kPrefix);
  for (const EmulatedNode& n : s.nodes) {
    out += fmt::format("  node  {:<18} {} {}/{}  (cluster node '{}': {})\n", n.netns, kNodeNic, n.address, kPrefix,
                       n.name, n.devices.empty() ? std::string("no devices") : Join(n.devices, ", "));
  }
  out += fmt::format("  every node's NIC: tbf {} ({}) out on eth0 and in on the hub's port = links.inter_node.bandwidth "
                     "{} ÷ {:g}; burst {} B, queue {} B\n",
                     BitRate(static_cast<double>(s.rate_bits)), Rate(s.shaped_bytes_per_s), Rate(s.bandwidth),
                     s.dilation, s.burst_bytes, s.limit_bytes);
  out += fmt::format("  not modelled: links.inter_node.latency {} (× K = {}); netem is unavailable, the veth path "
                     "adds only tens of µs\n",
                     Seconds(s.latency), Seconds(s.latency * s.dilation));
  out += "  not scaled: transfers between ranks of one node (shared memory at memcpy speed)\n";
  return out;
}

absl::StatusOr<EmulatedCluster> AttachOrBringUp(const costmodel::Cluster& c, const std::string& cluster_file,
                                                const std::string& network_name, double dilation,
                                                const std::string& prefix, double* k) {
  if (!network_name.empty()) {
    absl::StatusOr<EmulatedCluster> up = EmulatedCluster::Attach(network_name);
    if (up.ok()) {
      const EmulatedClusterState& st = up->state();
      if (st.rank_node.size() != static_cast<size_t>(c.size()) || st.bandwidth != c.inter_node.bandwidth) {
        return absl::InvalidArgumentError(StrCat("--network-name ", network_name, ": the emulated cluster that is up ('",
                                                 st.cluster_file, "', ", st.rank_node.size(), " ranks) is not --cluster '",
                                                 cluster_file, "' (", c.size(), " devices); take it down or pick another name"));
      }
      if (dilation != -1 && dilation != st.dilation) {
        return absl::InvalidArgumentError(StrCat("--dilation ", dilation, " but emulated cluster '", network_name,
                                                 "' is up with dilation ", st.dilation, "; drop --dilation"));
      }
      *k = st.dilation;
      fmt::print(stderr, "using emulated cluster '{}' (up, dilation K = {:g})\n", network_name, *k);
      return up;
    }
    if (!absl::IsNotFound(up.status())) return up.status();
  }
  *k = dilation;
  if (*k == -1) {
    std::string why;
    *k = DefaultDilation(c, static_cast<int>(std::max(1u, std::thread::hardware_concurrency())), &why);
    fmt::print(stderr, "{}\n", why);
  }
  const std::string name = network_name.empty() ? StrCat(prefix, getpid()) : network_name;
  absl::StatusOr<EmulatedCluster> up = EmulatedCluster::Up(c, cluster_file, {.name = name, .dilation = *k});
  if (!up.ok()) {
    if (ScopedInterruptHandler::Received() != 0) {
      return absl::CancelledError("interrupted while bringing up the emulated cluster");
    }
    return up.status();
  }
  fmt::print(stderr, "{}", up->Describe());
  return up;
}

absl::StatusOr<EmulatedLaunch> EmulatedLaunch::Open(const costmodel::Cluster& c, const std::string& cluster_file,
                                                    const std::string& network_name, double dilation,
                                                    const std::string& prefix, const std::string& mpirun) {
  // Ctrl-C: a cluster brought up here is torn down (EmulatedCluster's destructor).
  std::unique_ptr<ScopedInterruptHandler> interrupts;
  if (!ScopedInterruptHandler::Installed()) interrupts = std::make_unique<ScopedInterruptHandler>();
  double k = -1;
  HS_ASSIGN_OR_RETURN(EmulatedCluster cluster, AttachOrBringUp(c, cluster_file, network_name, dilation, prefix, &k));
  HS_ASSIGN_OR_RETURN(std::string program, ThisProgramPath());
  EmulatedRunOptions run_options;
  run_options.mpirun = mpirun;
  return EmulatedLaunch(std::move(interrupts), std::move(cluster), k, std::move(program), std::move(run_options));
}

absl::StatusOr<int> EmulatedLaunch::Run(const std::vector<std::string>& command) const {
  HS_ASSIGN_OR_RETURN(const int status, cluster_.Run(command, run_options_));
  if (ScopedInterruptHandler::Received() != 0) return absl::CancelledError("interrupted; the emulated cluster is torn down");
  return status;
}

}  // namespace hetsynth::cli
