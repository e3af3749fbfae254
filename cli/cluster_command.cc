// `hetsynth cluster up|down|run|status`: an emulated multi-node cluster on this machine — one
// network namespace per node, shaped veth links, mpirun across them (cli/emulated_cluster.h,
// docs/emulated-cluster.md).
//
//   hetsynth cluster up --cluster two-node.json --dilation 100 --name demo
//   hetsynth cluster run --name demo -- hetsynth train --plan plan.json --steps 5
//   hetsynth cluster down --name demo
//   hetsynth cluster run --cluster two-node.json --dilation 100 -- hetsynth cluster probe
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "commands.h"
#include "emulated_cluster.h"
#include "hetsynth/costmodel/cluster.h"
#include "hetsynth/base/status.h"

namespace hetsynth::cli {
namespace {

struct ClusterFlags {
  std::string cluster, name, mpirun = "mpirun";
  double dilation = -1;  // not given: DefaultDilation
  std::vector<std::string> command;
  bool verbose = false;
  ProbeOptions probe;
};

std::string Quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./=:,+@%") ==
                        std::string::npos) {
    return s;
  }
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// After the cluster is torn down: die of the same signal, so that the caller sees it.
[[noreturn]] void Reraise(int sig, const std::string& name, const char* what, bool torn_down = true) {
  fmt::print(stderr, "hetsynth: {}: interrupted by {}; emulated cluster '{}' {}\n", what, strsignal(sig), name,
             torn_down ? "is torn down" : "stays up");
  std::fflush(nullptr);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
  std::_Exit(128 + sig);
}

// --dilation K, or the default for the cluster on this host's cores (printed).
double DilationFor(const ClusterFlags& f, const costmodel::Cluster& c) {
  if (f.dilation != -1) return f.dilation;
  std::string why;
  const double k = DefaultDilation(c, static_cast<int>(std::max(1u, std::thread::hardware_concurrency())), &why);
  fmt::print(stderr, "{}\n", why);
  return k;
}

absl::Status Up(const ClusterFlags& f) {
  HS_ASSIGN_OR_RETURN(costmodel::Cluster c, costmodel::ReadClusterFile(f.cluster));
  std::optional<EmulatedCluster> emu;
  int sig = 0;
  {
    ScopedInterruptHandler interrupts;
    absl::StatusOr<EmulatedCluster> up = EmulatedCluster::Up(c, f.cluster, {.name = f.name, .dilation = DilationFor(f, c)});
    sig = ScopedInterruptHandler::Received();
    if (!up.ok() && sig == 0) return up.status();
    if (up.ok() && sig == 0) {
      HS_RETURN_IF_ERROR(up->Keep());
      emu.emplace(std::move(*up));
    }
    // Interrupted: Up removed what it made, or *up's destructor does here.
  }
  if (sig != 0) Reraise(sig, f.name, "cluster up");
  fmt::print("{}", emu->Describe());
  fmt::print("state {}; run ranks with 'hetsynth cluster run --name {} -- CMD...', remove with 'hetsynth cluster down "
             "--name {}'\n",
             emu->state().StatePath(), f.name, f.name);
  return absl::OkStatus();
}

absl::Status Down(const ClusterFlags& f) {
  ScopedInterruptHandler interrupts;  // a Ctrl-C does not cut the teardown short
  std::vector<std::string> removed;
  HS_RETURN_IF_ERROR(EmulatedCluster::Down(f.name, &removed));
  if (removed.empty()) {
    fmt::print("emulated cluster '{}': nothing to remove\n", f.name);
  } else {
    fmt::print("emulated cluster '{}' removed:\n", f.name);
    for (const std::string& r : removed) fmt::print("  {}\n", r);
  }
  return absl::OkStatus();
}

absl::Status Run(const ClusterFlags& f) {
  if (f.command.empty()) {
    return absl::InvalidArgumentError("cluster run: no command; usage: hetsynth cluster run [--name ID | --cluster FILE] -- CMD...");
  }
  int code = 0, sig = 0;
  std::string name = f.name;
  {
    ScopedInterruptHandler interrupts;
    std::optional<EmulatedCluster> emu;
    if (!f.cluster.empty()) {
      if (name.empty()) name = StrCat("r", getpid());
      HS_ASSIGN_OR_RETURN(costmodel::Cluster c, costmodel::ReadClusterFile(f.cluster));
      absl::StatusOr<EmulatedCluster> up = EmulatedCluster::Up(c, f.cluster, {.name = name, .dilation = DilationFor(f, c)});
      if (!up.ok() && ScopedInterruptHandler::Received() == 0) return up.status();
      if (up.ok()) emu.emplace(std::move(*up));  // else interrupted: Up removed what it made
      fmt::print(stderr, "{}", emu->Describe());
    } else {
      if (name.empty()) name = kDefaultEmulatedClusterName;
      HS_ASSIGN_OR_RETURN(EmulatedCluster attached, EmulatedCluster::Attach(name));
      emu.emplace(std::move(attached));
    }
    EmulatedRunOptions options;
    options.mpirun = f.mpirun;
    if (f.verbose && emu.has_value()) {
      std::string line;
      for (const std::string& a : emu->MpirunArgv(f.command, options)) line += (line.empty() ? "" : " ") + Quote(a);
      fmt::print(stderr, "hetsynth: in namespace {}: {}\n", emu->state().hub_netns, line);
    }
    absl::StatusOr<int> status = ScopedInterruptHandler::Received() == 0 && emu.has_value()
                                     ? emu->Run(f.command, options)
                                     : absl::StatusOr<int>(absl::CancelledError("interrupted"));
    sig = ScopedInterruptHandler::Received();
    if (!status.ok() && sig == 0) return status.status();  // emu's destructor tears down
    code = status.ok() ? *status : 1;
    // Torn down here (all-in-one form), before the exit status is passed on.
    if (!f.cluster.empty() && emu.has_value()) {
      const absl::Status down = emu->Down();
      if (!down.ok()) return down;
    }
  }
  if (sig != 0) Reraise(sig, name, "cluster run", /*torn_down=*/!f.cluster.empty());
  if (code != 0) {
    fmt::print(stderr, "hetsynth: cluster run: the command exited with status {}\n", code);
    std::fflush(nullptr);
    std::exit(code);
  }
  return absl::OkStatus();
}

absl::Status Status(const ClusterFlags& f) {
  if (f.name.empty()) {
    const std::vector<EmulatedClusterState> all = EmulatedCluster::List();
    if (all.empty()) fmt::print("no emulated clusters are up\n");
    for (const EmulatedClusterState& s : all) {
      fmt::print("{:<12} {} node{}, {} rank{}, {:.4g} MB/s per NIC (K = {:g}), {}{}\n", s.name, s.nodes.size(),
                 s.nodes.size() == 1 ? "" : "s", s.rank_node.size(), s.rank_node.size() == 1 ? "" : "s",
                 s.shaped_bytes_per_s / 1e6, s.dilation,
                 s.owner_pid == 0 ? std::string("up") : StrCat("owned by pid ", s.owner_pid), s.phase == "up" ? "" : " (being created)");
    }
    return absl::OkStatus();
  }
  HS_ASSIGN_OR_RETURN(EmulatedCluster emu, EmulatedCluster::Attach(f.name));
  fmt::print("{}", emu.Describe());
  if (geteuid() == 0) {
    // Bytes through each node's qdiscs so far.
    for (const EmulatedNode& n : emu.state().nodes) {
      auto sent = [](const std::string& ns, const std::string& dev) -> std::string {
        const std::string cmd = StrCat("tc -s -n ", ns, " qdisc show dev ", dev, " 2>/dev/null");
        FILE* p = popen(cmd.c_str(), "r");
        if (p == nullptr) return "?";
        std::string out;
        char buf[512];
        while (fgets(buf, sizeof buf, p) != nullptr) out += buf;
        pclose(p);
        const size_t at = out.find("Sent ");
        if (out.find("tbf") == std::string::npos || at == std::string::npos) return "no tbf qdisc!";
        return out.substr(at + 5, out.find(" bytes", at) - at - 5) + " B";
      };
      fmt::print("  {}: out {}, in {}\n", n.netns, sent(n.netns, "eth0"), sent(emu.state().hub_netns, n.hub_port));
    }
  }
  return absl::OkStatus();
}

}  // namespace

Runner RegisterCluster(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "cluster",
      "an emulated multi-node cluster on this machine (root): one network namespace per node of a cluster file, "
      "NICs shaped with tc tbf, ranks started by mpirun across them (docs/emulated-cluster.md)");
  cmd->require_subcommand(1);
  auto f = std::make_shared<ClusterFlags>();
  auto add_name = [&](CLI::App* sub, const char* help) { sub->add_option("--name", f->name, help)->type_name("ID"); };
  auto add_dilation = [&](CLI::App* sub) {
    return sub
        ->add_option("--dilation", f->dilation,
                     "time dilation K: every link rate / K, every rank paced K x slower than its device "
                     "(default: from the cluster and this host's cores, printed)")
        ->type_name("K")
        ->check(DilationFactor());
  };

  CLI::App* up = cmd->add_subcommand("up", "bring up the emulated cluster of a cluster file and leave it up");
  up->add_option("--cluster", f->cluster, "cluster file (docs/cluster-format.md)")->required()->type_name("FILE");
  add_dilation(up);
  add_name(up, "cluster name: namespaces hs-ID-hub, hs-ID-n0, ... (default 'default')");

  CLI::App* down = cmd->add_subcommand("down", "remove an emulated cluster and everything it made (idempotent)");
  add_name(down, "cluster name (default 'default')");

  CLI::App* run = cmd->add_subcommand(
      "run", "run CMD on one rank per device across an emulated cluster (mpirun); exits with CMD's status");
  add_name(run, "the cluster that is up (default 'default'); with --cluster, the temporary cluster's (default r<pid>)");
  CLI::Option* cluster = run->add_option(
      "--cluster", f->cluster, "bring up a temporary cluster from FILE for this run and always tear it down")
                             ->type_name("FILE");
  add_dilation(run)->needs(cluster);
  run->add_option("--mpirun", f->mpirun, "Open MPI's mpirun (default: mpirun on PATH)")->type_name("PATH");
  run->add_flag("-v,--verbose", f->verbose, "print the mpirun command line");
  run->add_option("command", f->command, "the command and its arguments, after --")->type_name("-- CMD...");

  CLI::App* status = cmd->add_subcommand("status", "list emulated clusters, or describe one with its byte counters");
  status->add_option("--name", f->name, "the cluster to describe (default: list all)")->type_name("ID");

  CLI::App* probe = cmd->add_subcommand(
      "probe", "measure the shaped links with TCP between ranks; run as 'hetsynth cluster run -- hetsynth cluster probe'");
  probe->group("");  // hidden: a tool for checking the emulation
  probe->add_option("--seconds", f->probe.seconds, "length of each transfer at the configured rate (default 2)")
      ->check(CLI::Range(0.05, 600.0));
  probe->add_option("--port", f->probe.port, "TCP port of rank 0 (default 7213)")->check(CLI::Range(1, 65535));

  return [=]() -> absl::Status {
    if (probe->parsed()) return RunClusterProbe(f->probe);
    if (f->name.empty() && !run->parsed() && !status->parsed()) f->name = kDefaultEmulatedClusterName;
    if (!f->name.empty()) HS_RETURN_IF_ERROR(CheckEmulatedClusterName(f->name));
    if (up->parsed()) return Up(*f);
    if (down->parsed()) return Down(*f);
    if (run->parsed()) return Run(*f);
    return Status(*f);
  };
}

}  // namespace hetsynth::cli
