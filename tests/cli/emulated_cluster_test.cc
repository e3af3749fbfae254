// `hetsynth cluster up|down|run|status` against the real thing: network namespaces, a bridge,
// veth pairs, tc tbf and mpirun on this machine. Checks what is created (namespaces, addresses,
// qdisc rates), that ranks run in their node's namespace, that 2 steps of a plan across two
// namespaces give the losses of one device, that the shaped rate is measured, and that nothing is
// left behind — after `down`, after a failure halfway, after SIGTERM/SIGINT, and (by the next run)
// after SIGKILL. Skips with the reason where it is not root or namespaces are not permitted.
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <regex>
#include <sstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli/run_hetsynth.h"

namespace {

using hetsynth::cli_testing::ExpectError;
using nlohmann::json;

const std::string kBin = HETSYNTH_BIN;

struct Out {
  int code;  // exit status; 128 + N when killed by signal N
  std::string text;  // stdout and stderr together
};

Out Sh(const std::string& cmd) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), out};
}

// Runs hetsynth with a time limit (the whole suite should take ~30 s).
Out Hs(const std::string& args, int timeout_s = 60) {
  return Sh("timeout -k 5 " + std::to_string(timeout_s) + " " + kBin + " " + args + " </dev/null");
}

bool Contains(const std::string& text, const std::string& needle) { return text.find(needle) != std::string::npos; }

// Exit 2 and exactly one error line, the last, containing `needle`.
void ExpectOneErrorLine(const Out& r, const std::string& needle) {
  EXPECT_EQ(r.code, 2) << r.text;
  size_t errors = 0;
  for (size_t at = r.text.find("error:"); at != std::string::npos; at = r.text.find("error:", at + 1)) ++errors;
  EXPECT_EQ(errors, 1u) << r.text;
  const size_t last = r.text.rfind('\n', r.text.size() - 2);
  const std::string line = r.text.substr(last == std::string::npos ? 0 : last + 1);
  EXPECT_EQ(line.rfind("hetsynth: error: ", 0), 0u) << r.text;
  EXPECT_TRUE(Contains(line, needle)) << needle << "\n" << r.text;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<double> Losses(const std::string& metrics) {
  std::vector<double> out;
  std::istringstream in(Slurp(metrics));
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(json::parse(line).at("loss").get<double>());
  }
  return out;
}

// A 2-node cluster: node a with one fast device, node b with one half-speed device, inter-node
// 1.25 GB/s (10 Gbit/s) with 10 µs latency; --dilation 100 shapes it to 100 Mbit/s.
constexpr const char* kTwoNodes = R"({
 "format": "hetsynth-cluster", "version": 1, "name": "two-node",
 "device_types": {
  "fast": {"flops": 4e10, "memory_bytes": 17179869184, "memory_bandwidth": 2e10},
  "half": {"flops": 2e10, "memory_bytes": 8589934592, "memory_bandwidth": 2e10}
 },
 "nodes": [{"name": "a"}, {"name": "b"}],
 "devices": [{"name": "fast0", "type": "fast", "node": "a"}, {"name": "half0", "type": "half", "node": "b"}],
 "links": {"intra_node": {"bandwidth": 1e10, "latency": 2e-6}, "inter_node": {"bandwidth": 1.25e9, "latency": 1e-5}}
}
)";

class CliEmulatedCluster : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string tmpl = ::testing::TempDir() + "/emulated_cluster_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    chmod(dir_.c_str(), 0755);  // readable by the non-root run
    cluster_ = dir_ + "/two-node.json";
    std::ofstream(cluster_) << kTwoNodes;
    if (geteuid() != 0) {
      skip_ = "not root (uid " + std::to_string(geteuid()) + "): the emulated cluster needs network namespaces and tc";
      return;
    }
    // Namespaces may be forbidden (unprivileged containers): try one that is not ours to keep.
    const std::string probe = "hsprobe" + std::to_string(getpid());
    const Out add = Sh("ip netns add " + probe);
    // Entering one (ip -n) also needs a remountable / (a plain chroot has none).
    const Out enter = add.code == 0 ? Sh("ip -n " + probe + " link set lo up") : add;
    Sh("ip netns delete " + probe);
    if (add.code != 0) skip_ = "network namespaces are not permitted here: 'ip netns add' says: " + add.text;
    else if (enter.code != 0) skip_ = "network namespaces cannot be entered here: 'ip -n NS link set lo up' says: " + enter.text;
    const Out tc = Sh("tc -V");
    if (tc.code != 0) skip_ = "tc is not available: " + tc.text;
    mpirun_ok_ = Sh("mpirun --version").text.find("Open MPI") != std::string::npos;
  }
  static void TearDownTestSuite() {
    if (!dir_.empty() && !::testing::Test::HasFailure()) (void)std::system(("rm -rf '" + dir_ + "'").c_str());
  }
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    static int n = 0;
    const char suffix[2] = {static_cast<char>('a' + n++ % 26), '\0'};
    name_ = "t";
    name_ += std::to_string(getpid());
    name_ += suffix;
    root_links_ = RootLinks();
  }
  void TearDown() override {
    if (!skip_.empty()) return;
    Hs("cluster down --name " + name_);
    ExpectNothingLeft();
  }
  void NeedMpirun() {
    if (!mpirun_ok_) GTEST_SKIP() << "Open MPI's mpirun is not available";
#ifndef HETSYNTH_TEST_MPIEXEC
    GTEST_SKIP() << "hetsynth was built without MPI";
#endif
  }

  static std::string RootLinks() {
    std::string names;
    std::istringstream in(Sh("ip -o link show").text);
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream w(line);
      std::string idx, name;
      w >> idx >> name;
      names += name + " ";
    }
    return names;
  }
  std::vector<std::string> OurNamespaces() const {
    std::vector<std::string> out;
    std::istringstream in(Sh("ip netns list").text);
    std::string ns;
    while (in >> ns) {
      if (ns.rfind("hs-" + name_ + "-", 0) == 0) out.push_back(ns);
      std::string rest;
      std::getline(in, rest);
    }
    return out;
  }
  bool StateFileExists() const { return access(("/run/hetsynth/" + name_ + ".json").c_str(), F_OK) == 0; }
  void ExpectNothingLeft() const {
    const std::vector<std::string> left = OurNamespaces();
    EXPECT_TRUE(left.empty()) << "left behind: " << ::testing::PrintToString(left);
    for (const char* ext : {".json", ".hosts", ".agent", ".json.tmp"}) {
      EXPECT_NE(access(("/run/hetsynth/" + name_ + ext).c_str(), F_OK), 0) << "left behind: " << name_ << ext;
    }
    EXPECT_EQ(RootLinks(), root_links_) << "the root namespace's links changed";
  }
  // `sleep SECONDS` processes (from /proc): the ranks of StartSleepingRun.
  static int CountSleeps(const std::string& seconds) {
    int count = 0;
    DIR* d = opendir("/proc");
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
      const std::string cmdline = Slurp(std::string("/proc/") + e->d_name + "/cmdline");
      if (cmdline == std::string("sleep\0", 6) + seconds + std::string("\0", 1)) ++count;
    }
    closedir(d);
    return count;
  }

  // Starts `hetsynth cluster run --cluster ... --name NAME -- sleep SECONDS` and waits until its
  // ranks sleep inside the namespaces; returns its pid.
  pid_t StartSleepingRun(const std::string& seconds) {
    const pid_t pid = fork();
    if (pid == 0) {
      const std::string log = dir_ + "/" + name_ + ".log";
      freopen(log.c_str(), "w", stdout);
      freopen(log.c_str(), "a", stderr);
      execl(kBin.c_str(), kBin.c_str(), "cluster", "run", "--cluster", cluster_.c_str(), "--name", name_.c_str(), "--",
            "sleep", seconds.c_str(), nullptr);
      _exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (CountSleeps(seconds) < 2 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_EQ(CountSleeps(seconds), 2) << "both ranks should be sleeping:\n" << Slurp(dir_ + "/" + name_ + ".log");
    return pid;
  }
  // waitpid with a limit; the wait status, or -1 when it did not exit in time (then killed).
  static int WaitFor(pid_t pid, int seconds) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    int st = 0;
    while (waitpid(pid, &st, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return st;
  }

  static std::string dir_, cluster_, skip_;
  static bool mpirun_ok_;
  std::string name_, root_links_;
};

std::string CliEmulatedCluster::dir_, CliEmulatedCluster::cluster_, CliEmulatedCluster::skip_;
bool CliEmulatedCluster::mpirun_ok_ = false;

TEST_F(CliEmulatedCluster, UpCreatesShapedNamespacesAndDownRemovesThem) {
  const Out up = Hs("cluster up --cluster " + cluster_ + " --dilation 100 --name " + name_);
  ASSERT_EQ(up.code, 0) << up.text;
  EXPECT_TRUE(Contains(up.text, "tbf 100 Mbit/s (12.5 MB/s)")) << up.text;
  EXPECT_TRUE(Contains(up.text, "not modelled: links.inter_node.latency 10 µs")) << up.text;

  const std::string hub = "hs-" + name_ + "-hub", n0 = "hs-" + name_ + "-n0", n1 = "hs-" + name_ + "-n1";
  std::vector<std::string> ns = OurNamespaces();
  std::sort(ns.begin(), ns.end());
  EXPECT_EQ(ns, (std::vector<std::string>{hub, n0, n1}));
  EXPECT_TRUE(StateFileExists());
  // Addresses only inside the node namespaces; loopback up everywhere.
  EXPECT_TRUE(Contains(Sh("ip -n " + n0 + " -o -4 addr show dev eth0").text, "10.213.0.1/16"));
  EXPECT_TRUE(Contains(Sh("ip -n " + n1 + " -o -4 addr show dev eth0").text, "10.213.0.2/16"));
  for (const std::string& s : {hub, n0, n1}) {
    EXPECT_TRUE(Contains(Sh("ip -n " + s + " link show lo").text, "UP")) << s;
  }
  EXPECT_TRUE(Contains(Sh("ip -n " + hub + " -d link show n1").text, "master br0"));
  // Both directions of both NICs shaped at 1.25 GB/s ÷ 100 = 100 Mbit/s.
  for (const auto& [where, dev] : std::vector<std::pair<std::string, std::string>>{
           {n0, "eth0"}, {n1, "eth0"}, {hub, "n0"}, {hub, "n1"}}) {
    const std::string q = Sh("tc -n " + where + " qdisc show dev " + dev).text;
    EXPECT_TRUE(Contains(q, "tbf") && Contains(q, "rate 100Mbit")) << where << " " << dev << ": " << q;
  }
  const Out status = Hs("cluster status --name " + name_);
  EXPECT_EQ(status.code, 0) << status.text;
  EXPECT_TRUE(Contains(status.text, n1 + ": out ")) << status.text;
  EXPECT_TRUE(Contains(Hs("cluster status").text, name_)) << "listed";

  ExpectError("cluster up --cluster " + cluster_ + " --name " + name_, "emulated cluster '" + name_ + "' is already up");

  const Out down = Hs("cluster down --name " + name_);
  EXPECT_EQ(down.code, 0) << down.text;
  EXPECT_TRUE(Contains(down.text, "namespace " + hub)) << down.text;
  ExpectNothingLeft();
  const Out again = Hs("cluster down --name " + name_);
  EXPECT_EQ(again.code, 0) << again.text;
  EXPECT_TRUE(Contains(again.text, "nothing to remove")) << again.text;
}

TEST_F(CliEmulatedCluster, RanksRunInTheirNodesNamespaceAndTheExitStatusPassesThrough) {
  NeedMpirun();
  const Out r = Hs("cluster run --cluster " + cluster_ + " --dilation 100 --name " + name_ +
                   " -- sh -c 'echo \"rank=$OMPI_COMM_WORLD_RANK ns=$(ip netns identify) host=$(hostname) "
                   "addr=$(ip -o -4 addr show dev eth0 | tr -s \" \" | cut -d\" \" -f4) k=$HETSYNTH_DILATION\"'");
  ASSERT_EQ(r.code, 0) << r.text;
  for (int rank : {0, 1}) {
    const std::string ns = "hs-" + name_ + "-n" + std::to_string(rank);
    const std::string want = "rank=" + std::to_string(rank) + " ns=" + ns + " host=" + ns + " addr=10.213.0." +
                             std::to_string(rank + 1) + "/16 k=100";
    EXPECT_TRUE(Contains(r.text, want)) << want << "\n" << r.text;
  }
  ExpectNothingLeft();

  const Out fail = Hs("cluster run --cluster " + cluster_ + " --name " + name_ + " -- sh -c 'exit 3'");
  EXPECT_EQ(fail.code, 3) << fail.text;
  EXPECT_TRUE(Contains(fail.text, "the command exited with status 3")) << fail.text;
}

TEST_F(CliEmulatedCluster, TwoStepsOfAPlanAcrossTwoNamespacesMatchOneDevice) {
  NeedMpirun();
  const std::string plan = dir_ + "/plan.json", one = dir_ + "/one.jsonl", two = dir_ + "/two.jsonl";
  const Out synth = Hs("synth --model mlp --small --cluster " + cluster_ + " -o " + plan);
  ASSERT_EQ(synth.code, 0) << synth.text;
  const Out single = Hs("train --model mlp --small --steps 2 --quiet --metrics " + one);
  ASSERT_EQ(single.code, 0) << single.text;
  const Out r = Hs("cluster run --cluster " + cluster_ + " --dilation 100 --name " + name_ + " -- " + kBin +
                   " train --plan " + plan + " --steps 2 --quiet --metrics " + two);
  ASSERT_EQ(r.code, 0) << r.text;
  EXPECT_TRUE(Contains(r.text, "on 2 ranks")) << r.text;
  const std::vector<double> want = Losses(one), got = Losses(two);
  ASSERT_EQ(got.size(), 2u) << r.text;
  ASSERT_EQ(want.size(), 2u);
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_LE(std::abs(got[i] - want[i]), 1e-5 * std::abs(want[i])) << "step " << i + 1 << ": " << got[i] << " vs " << want[i];
  }
}

TEST_F(CliEmulatedCluster, BenchEmulateNetworkRunsEveryPlanAsMpiRanksWithDilation) {
  NeedMpirun();
  const std::string out = dir_ + "/bench-" + name_;
  const Out r = Hs("bench --model mlp --small --cluster " + cluster_ + " --emulate-network --dilation 20 --network-name " +
                       name_ + " --baselines ddp-ev --steps 1 --warmup 0 --out " + out,
                   120);
  ASSERT_EQ(r.code, 0) << r.text;
  EXPECT_TRUE(Contains(r.text, "EMULATED")) << r.text;
  EXPECT_TRUE(Contains(r.text, "dilation K = 20")) << r.text;
  const nlohmann::json j = nlohmann::json::parse(Slurp(out + "/results.json"));
  EXPECT_TRUE(j.at("emulated_network").get<bool>());
  int ran = 0;
  for (const auto& p : j.at("plans")) {
    if (!p.at("measured_step_time_s").is_number()) continue;
    EXPECT_GT(p.at("measured_step_time_s").get<double>(), 0) << p.dump();
    EXPECT_EQ(access((out + "/" + p.at("plan").get<std::string>() + ".trace.json").c_str(), F_OK), 0);
    ++ran;
  }
  EXPECT_EQ(ran, 2) << j.dump(1);
  // The ranks ran in the two namespaces: each rank's log is there.
  EXPECT_EQ(access((out + "/synthesized.rank1.log").c_str(), F_OK), 0);
  EXPECT_NE(Slurp(out + "/results.csv").find("synthesized,1,1,"), std::string::npos);
  // The temporary-named cluster (--network-name) was brought up by bench and is gone again.
  EXPECT_TRUE(OurNamespaces().empty());
}

TEST_F(CliEmulatedCluster, ProfileNetworkWritesInterNodeTablesAndKeepsTheShapedBandwidth) {
  NeedMpirun();
  const std::string out = dir_ + "/net-" + name_ + ".json";
  const Out r = Hs("profile --network --cluster " + cluster_ + " --network-name " + name_ +
                       " --dilation 20 --repeats 1 --max-bytes 4096 -o " + out,
                   120);
  ASSERT_EQ(r.code, 0) << r.text;
  const nlohmann::json c = nlohmann::json::parse(Slurp(out));
  EXPECT_EQ(c.at("links").at("inter_node").at("bandwidth").get<double>(), 1.25e9);
  std::set<std::string> ops;
  for (const auto& t : c.at("collectives")) {
    EXPECT_EQ(t.at("link").get<std::string>(), "inter_node");  // one device per node: no intra-node table
    ops.insert(t.at("op").get<std::string>());
    EXPECT_GE(t.at("samples").size(), 2u);
  }
  EXPECT_EQ(ops, (std::set<std::string>{"all_gather", "all_reduce", "all_to_all", "reduce_scatter"}));
  EXPECT_TRUE(Contains(r.text, "inter-node, one flow per NIC")) << r.text;
  // What it wrote is a cluster file the synthesizer takes.
  const Out synth = Hs("synth --model mlp --small --cluster " + out + " --flat --no-overlap -o " + dir_ + "/p-" + name_ + ".json");
  EXPECT_EQ(synth.code, 0) << synth.text;
}

TEST_F(CliEmulatedCluster, ProbeMeasuresTheShapedRateBothWays) {
  NeedMpirun();
  const Out r = Hs("cluster run --cluster " + cluster_ + " --dilation 100 --name " + name_ + " -- " + kBin +
                   " cluster probe --seconds 1");
  ASSERT_EQ(r.code, 0) << r.text;
  const std::regex line(R"((into|out of) rank 0 \(node a\) together \(1 inter-node flow\): measured ([0-9.]+) MB/s, configured 12\.50 MB/s, ratio ([0-9.]+))");
  int found = 0;
  for (std::sregex_iterator it(r.text.begin(), r.text.end(), line), end; it != end; ++it, ++found) {
    const double ratio = std::stod((*it)[3]);
    // TCP payload over tbf's wire bytes is 0.956 at MTU 1500; a loaded host gets a little less.
    EXPECT_GT(ratio, 0.8) << (*it)[0];
    EXPECT_LT(ratio, 1.02) << (*it)[0];
  }
  EXPECT_EQ(found, 2) << r.text;
}

TEST_F(CliEmulatedCluster, SigtermAndSigintTearDown) {
  NeedMpirun();
  for (const int sig : {SIGTERM, SIGINT}) {
    const std::string seconds = "61." + std::to_string(sig) + std::to_string(getpid());
    const pid_t pid = StartSleepingRun(seconds);
    EXPECT_EQ(OurNamespaces().size(), 3u);
    kill(pid, sig);
    const int st = WaitFor(pid, 30);
    ASSERT_NE(st, -1) << "did not exit after signal " << sig;
    EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == sig) << "wait status " << st;
    const std::string log = Slurp(dir_ + "/" + name_ + ".log");
    EXPECT_TRUE(Contains(log, "emulated cluster '" + name_ + "' is torn down")) << log;
    ExpectNothingLeft();
    EXPECT_EQ(CountSleeps(seconds), 0) << "ranks left running";
  }
}

TEST_F(CliEmulatedCluster, LeftoversOfAKilledRunAreRemovedByTheNextRun) {
  NeedMpirun();
  const std::string seconds = "62." + std::to_string(getpid());
  const pid_t pid = StartSleepingRun(seconds);
  kill(pid, SIGKILL);
  WaitFor(pid, 10);
  EXPECT_EQ(OurNamespaces().size(), 3u) << "SIGKILL leaves the namespaces";
  EXPECT_TRUE(StateFileExists());
  const Out next = Hs("cluster run --cluster " + cluster_ + " --name " + name_ + " -- true");
  EXPECT_EQ(next.code, 0) << next.text;
  EXPECT_TRUE(Contains(next.text, "removing leftovers of emulated cluster '" + name_ + "'")) << next.text;
  ExpectNothingLeft();
  EXPECT_EQ(CountSleeps(seconds), 0) << "ranks of the killed run left running";
}

TEST_F(CliEmulatedCluster, AFailureHalfwayLeavesNothing) {
  // Steps: hub (5: netns, lo, bridge, address, up), then per node 9 (netns, lo, veth, address,
  // tbf out, tbf in, master, 2 up): fail in the hub, in node 0's veth and tbf, in node 1.
  for (const int step : {1, 4, 8, 11, 18}) {
    const Out r = Sh("env HETSYNTH_TEST_CLUSTER_FAIL_STEP=" + std::to_string(step) + " " + kBin + " cluster up --cluster " +
                     cluster_ + " --name " + name_);
    ExpectOneErrorLine(r, "HETSYNTH_TEST_CLUSTER_FAIL_STEP=" + std::to_string(step) + ": failing after");
    ExpectNothingLeft();
  }
}

TEST_F(CliEmulatedCluster, MissingToolsAndNonRootAreOneLineErrors) {
  // A PATH without tc: named.
  const std::string only_ip = dir_ + "/only-ip";
  Sh("mkdir -p " + only_ip + " && ln -sf \"$(command -v ip)\" " + only_ip + "/ip");
  const Out no_tc = Sh("env PATH=" + only_ip + " " + kBin + " cluster up --cluster " + cluster_ + " --name " + name_);
  ExpectOneErrorLine(no_tc, "'tc' not found on PATH (iproute2)");
  const Out no_ip = Sh("env PATH=/nonexistent " + kBin + " cluster up --cluster " + cluster_ + " --name " + name_);
  ExpectOneErrorLine(no_ip, "'ip' not found on PATH");
  if (Sh("command -v setpriv").code == 0) {
    const Out nobody = Sh("setpriv --reuid=65534 --regid=65534 --clear-groups " + kBin + " cluster up --cluster " +
                          cluster_ + " --name " + name_);
    ExpectOneErrorLine(nobody, "cluster up needs root");
  }
  ExpectNothingLeft();
}

// Input errors are found before anything needs root, so these run everywhere.
TEST(CliEmulatedClusterInput, BadInputIsOneLineExitTwo) {
  const std::string dir = ::testing::TempDir();
  const std::string bad = dir + "/emulated-bad.json", slow = dir + "/emulated-slow.json";
  std::ofstream(bad) << "{\"format\": \"hetsynth-cluster\"}";
  std::string slow_text = kTwoNodes;
  slow_text.replace(slow_text.find("\"bandwidth\": 1.25e9"), 19, "\"bandwidth\": 5e3");
  std::ofstream(slow) << slow_text;
  ExpectError("cluster up --cluster /nonexistent/c.json", "/nonexistent/c.json");
  ExpectError("cluster up --cluster " + bad, "emulated-bad.json");
  ExpectError("cluster up --cluster " + slow + " --dilation 10", "links.inter_node.bandwidth 5000 B/s ÷ --dilation 10 = 500 B/s");
  ExpectError("cluster up --cluster " + slow + " --dilation 0", "--dilation: '0'; expected a number from 1 to 1e6");
  ExpectError("cluster up --cluster " + slow + " --name Bad-Name", "--name 'Bad-Name': expected 1 to 12 lower-case letters or digits");
  ExpectError("cluster up", "--cluster is required");
  ExpectError("cluster run --name nosuch -- true", "emulated cluster 'nosuch' is not up");
  ExpectError("cluster run --name nosuch", "cluster run: no command");
  ExpectError("cluster run --dilation 4 -- true", "--dilation requires --cluster");
  ExpectError("cluster status --name nosuch", "emulated cluster 'nosuch' is not up");
  ExpectError("cluster down --name ../etc", "--name '../etc'");
  ExpectError("cluster probe", "HETSYNTH_EMULATED_CLUSTER is not set");
}

}  // namespace
