// An emulated multi-node cluster on this machine (docs/emulated-cluster.md): one Linux network
// namespace per node of a cluster file, joined through a bridge in a hub namespace by veth pairs,
// each node's NIC shaped in both directions with `tc` token bucket (tbf) at the inter-node
// bandwidth ÷ the dilation factor K; ranks started by Open MPI's mpirun inside the namespaces
// through an rsh agent that runs `ip netns exec`, TCP between nodes, shared memory inside one.
//
// Nothing is created or changed in the root namespace's networking: the veth pairs are created
// inside our namespaces, the addresses (10.213.0.0/16) exist only there, and every name starts
// with "hs-<name>-". What Up creates is recorded in a state file (/run/hetsynth/<name>.json, with
// the hostfile and rsh agent next to it) so that `cluster down|run|status` in another process find
// it, and so that leftovers of a process that died are found and removed by the next Up.
//
//   HS_ASSIGN_OR_RETURN(costmodel::Cluster c, costmodel::ReadClusterFile(path));
//   HS_ASSIGN_OR_RETURN(EmulatedCluster emu, EmulatedCluster::Up(c, path, {.name = "b1", .dilation = 50}));
//   HS_ASSIGN_OR_RETURN(int status, emu.Run({"hetsynth", "train", "--plan", "p.json"}));
//   // emu's destructor tears everything down (emu.Keep() leaves it up, as `cluster up` does)
//
// Signals: inside a ScopedInterruptHandler, SIGINT/SIGTERM/SIGHUP are recorded instead of killing
// the process: Up stops between steps and tears down, Run forwards the signal to mpirun and
// returns, so the owner's destructor still runs. Up, Down and Run need root.
#pragma once

#include <csignal>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "hetsynth/costmodel/cluster.h"

namespace hetsynth::cli {

inline constexpr const char* kEmulatedClusterStateDir = "/run/hetsynth";
inline constexpr const char* kDefaultEmulatedClusterName = "default";
// Rates below this (after ÷ K) are refused: tbf is meaningless at a few bytes per second.
inline constexpr double kMinShapedBytesPerSecond = 1000;
inline constexpr int kMaxEmulatedNodes = 512;

struct EmulatedClusterOptions {
  std::string name = kDefaultEmulatedClusterName;  // [a-z0-9]{1,12}; namespaces are hs-<name>-…
  double dilation = 1;                              // K >= 1: every link rate ÷ K
  bool persistent = false;  // true: `cluster up` (owned by nobody); false: owned by this process
};

struct EmulatedNode {
  std::string name;     // the cluster file's node name
  std::string netns;    // hs-<name>-n<j>
  std::string address;  // of eth0 in netns, without the prefix length
  std::string hub_port; // the veth peer in the hub namespace: n<j>
  std::vector<std::string> devices;  // the cluster file's devices on this node, in rank order
};

// What Up created, as recorded in the state file.
struct EmulatedClusterState {
  std::string name;
  std::string cluster_file, cluster_name;
  double dilation = 1;
  double bandwidth = 0;        // inter-node bytes/s per direction, from the cluster file
  double latency = 0;          // inter-node seconds per message, from the cluster file (not modelled)
  double shaped_bytes_per_s = 0;  // bandwidth / dilation, what tbf enforces (bits rounded)
  int64_t rate_bits = 0;       // tc rate, bit/s
  int64_t burst_bytes = 0;     // tc burst
  int64_t limit_bytes = 0;     // tc queue limit
  std::string hub_netns, hub_address;
  std::vector<EmulatedNode> nodes;
  std::vector<int> rank_node;  // node index of every device (= rank), in cluster file order
  int owner_pid = 0;           // 0: persistent (`cluster up`); else the process that owns it
  int64_t owner_start = 0;     // owner's start time (/proc/PID/stat field 22), against pid reuse
  std::string phase;           // "creating" while Up runs, then "up"

  std::string StatePath() const;  // /run/hetsynth/<name>.json
  std::string HostfilePath() const;
  std::string AgentPath() const;
};

// Beyond this shaped rate per NIC this host stops shaping faithfully (docs/emulated-cluster.md,
// "Measured"): the default dilation keeps the links at or below it.
inline constexpr double kMaxFaithfulShapedBytesPerSecond = 125e6;

// The default dilation factor K for cluster `c` on `cores` cores, and a line saying why: the
// larger of (a) the K at which the ranks' paced CPU use, Σ flops_i / max flops (the fastest
// device runs at this host's speed), fits the cores with 1.5× headroom (runtime::DilationForCores)
// and (b) the K that brings the inter-node rate down to kMaxFaithfulShapedBytesPerSecond.
double DefaultDilation(const costmodel::Cluster& c, int cores, std::string* why = nullptr);

// OK when `name` is a valid cluster name; else InvalidArgument naming it and what is expected.
absl::Status CheckEmulatedClusterName(const std::string& name);
// The state file of cluster `name` (any user may read it); NotFound when it is not up.
absl::StatusOr<EmulatedClusterState> ReadEmulatedClusterState(const std::string& name);

// While alive, SIGINT, SIGTERM and SIGHUP are recorded (and forwarded to a running mpirun when
// another process sent them) instead of terminating the process. One at a time.
class ScopedInterruptHandler {
 public:
  ScopedInterruptHandler();
  ~ScopedInterruptHandler();
  ScopedInterruptHandler(const ScopedInterruptHandler&) = delete;
  ScopedInterruptHandler& operator=(const ScopedInterruptHandler&) = delete;
  // The first signal received, 0 if none.
  static int Received();
  // Whether one is alive (a caller that may run inside another's scope installs none then).
  static bool Installed();
};

class EmulatedCluster;
// The emulated cluster a command runs on: the one named `network_name` when it is up (it must
// have been brought up for `c`: same ranks and NIC rate; `dilation` -1 takes its K, any other
// value must equal it), otherwise a new one named `network_name` (or `<prefix><pid>`) with
// `dilation` (-1: DefaultDilation for this host's cores, printed with its reason), described on
// stderr. `*k` gets the dilation in force.
absl::StatusOr<EmulatedCluster> AttachOrBringUp(const costmodel::Cluster& c, const std::string& cluster_file,
                                                const std::string& network_name, double dilation,
                                                const std::string& prefix, double* k);

struct EmulatedRunOptions {
  std::string mpirun = "mpirun";            // Open MPI's; a name on PATH or a path
  std::vector<std::string> mpirun_args;     // extra arguments before the command
  int kill_grace_s = 10;  // after forwarding a signal, SIGKILL mpirun if it has not exited by then
};

class EmulatedCluster {
 public:
  // Creates the emulated cluster of `c` (read from `cluster_file`). First removes leftovers of
  // clusters whose owner died, refuses a name that is up or in use, checks root and the tools, and
  // on any failure (or a signal under ScopedInterruptHandler) removes what it created.
  static absl::StatusOr<EmulatedCluster> Up(const costmodel::Cluster& c, const std::string& cluster_file,
                                            const EmulatedClusterOptions& options);
  // A cluster that is up (created by `cluster up`, or by a live process): not owned, so the
  // destructor leaves it up. NotFound when `name` is not up.
  static absl::StatusOr<EmulatedCluster> Attach(const std::string& name);
  // Removes everything of cluster `name` (processes still inside its namespaces are killed,
  // namespaces with their links and qdiscs, state files). Idempotent: OK when nothing is there.
  // `removed` (optional) gets one line per thing removed.
  static absl::Status Down(const std::string& name, std::vector<std::string>* removed = nullptr);
  // States of every cluster in the state directory, by name.
  static std::vector<EmulatedClusterState> List();

  EmulatedCluster(EmulatedCluster&& other) noexcept;
  EmulatedCluster& operator=(EmulatedCluster&& other) noexcept;
  EmulatedCluster(const EmulatedCluster&) = delete;
  EmulatedCluster& operator=(const EmulatedCluster&) = delete;
  ~EmulatedCluster();  // Down() when owned and not kept; errors are printed, not thrown

  // Leave it up: the state becomes persistent (owned by nobody) for `cluster down` to remove.
  absl::Status Keep();
  // Tears down now (owned or not).
  absl::Status Down();

  // Runs `command` on one rank per device under mpirun (inside the hub namespace), rank i in the
  // namespace of device i's node; stdin, stdout and stderr are this process's. Returns mpirun's
  // exit status, 128 + N when it died of signal N. Exports HETSYNTH_EMULATED_CLUSTER=<name> and
  // HETSYNTH_DILATION=<K> to every rank; defaults (unless set) OMPI_MCA_mpi_yield_when_idle=1 and
  // OMPI_MCA_btl_vader_single_copy_mechanism=none.
  absl::StatusOr<int> Run(const std::vector<std::string>& command, const EmulatedRunOptions& options = {}) const;
  // The mpirun argument vector Run uses (for printing and tests).
  std::vector<std::string> MpirunArgv(const std::vector<std::string>& command, const EmulatedRunOptions& options) const;

  const EmulatedClusterState& state() const { return state_; }
  // Several lines: namespaces, addresses, devices, shaped rates and what is not modelled.
  std::string Describe() const;

 private:
  explicit EmulatedCluster(EmulatedClusterState s, bool owned) : state_(std::move(s)), owned_(owned) {}
  EmulatedClusterState state_;
  bool owned_ = false;  // the destructor tears down
};

// This program run again on one mpirun rank per device across an emulated cluster: what `bench
// --emulate-network` and `profile --network` share. Open installs a ScopedInterruptHandler
// (unless one is), attaches to or brings up the cluster (AttachOrBringUp, with the same
// arguments) and finds this program; `mpirun` is EmulatedRunOptions::mpirun. Destroyed, it tears
// the cluster down when it brought it up, then removes the handler it installed.
class EmulatedLaunch {
 public:
  static absl::StatusOr<EmulatedLaunch> Open(const costmodel::Cluster& c, const std::string& cluster_file,
                                             const std::string& network_name, double dilation,
                                             const std::string& prefix, const std::string& mpirun);

  // EmulatedCluster::Run: mpirun's exit status; Cancelled "interrupted; the emulated cluster is
  // torn down" when a signal came meanwhile.
  absl::StatusOr<int> Run(const std::vector<std::string>& command) const;

  const std::string& program() const { return program_; }  // this program's path, for the command
  double dilation() const { return dilation_; }            // K in force
  const EmulatedClusterState& state() const { return cluster_.state(); }

 private:
  EmulatedLaunch(std::unique_ptr<ScopedInterruptHandler> interrupts, EmulatedCluster cluster, double dilation,
                 std::string program, EmulatedRunOptions run_options)
      : interrupts_(std::move(interrupts)),
        cluster_(std::move(cluster)),
        dilation_(dilation),
        program_(std::move(program)),
        run_options_(std::move(run_options)) {}

  std::unique_ptr<ScopedInterruptHandler> interrupts_;  // declared first: outlives cluster_; null when one was installed
  EmulatedCluster cluster_;
  double dilation_;
  std::string program_;
  EmulatedRunOptions run_options_;
};

// The probe behind `hetsynth cluster run -- hetsynth cluster probe`: run as every rank of an
// emulated cluster (reads HETSYNTH_EMULATED_CLUSTER and OMPI_COMM_WORLD_RANK/SIZE), measures with
// plain TCP sockets the rate of every rank → rank 0 flow, then rank 0 → every rank, all flows of
// one direction at once, and a 1-byte round trip; rank 0 prints measured vs configured.
struct ProbeOptions {
  double seconds = 2;  // each direction's transfer lasts about this long at the configured rate
  int port = 7213;
};
absl::Status RunClusterProbe(const ProbeOptions& options);

}  // namespace hetsynth::cli
