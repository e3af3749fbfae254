// `hetsynth train --plan PLAN` end to end: a synthesized plan for mixed-4 run on 4 thread ranks (and,
// where this build has MPI, on 4 mpirun processes) — metrics, trace, losses equal to single-device
// training, checkpoints that move between 4 ranks and one device, one-line errors, and dying ranks;
// and a two-node plan (hierarchical gradient all-reduce overlapped with backward) on 6 ranks.
#include <stdlib.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "hetsynth/base/memory.h"
#include "hetsynth/runtime/cuda.h"

namespace {

using nlohmann::json;

const std::string kSource = HETSYNTH_SOURCE_DIR;
const std::string kMixed4 = kSource + "/examples/clusters/mixed-4.json";
const std::vector<std::string> kDevices = {"fast0", "fast1", "half0", "quarter0"};

struct Result {
  int code;  // exit status; 124 when `timeout` had to stop it; -1 when killed by a signal
  std::string out, err;
  double seconds;
};

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class TrainPlan : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string tmpl = ::testing::TempDir() + "/train_plan_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr) << tmpl;
    dir_ = tmpl;
    plan_ = Path("mlp-plan.json");
    // The full synthesized plan: gradient buckets overlapped with backward.
    const Result r = Hetsynth("synth --model mlp --small --cluster " + kMixed4 + " -o " + plan_);
    ASSERT_EQ(r.code, 0) << r.out << r.err;
  }
  static void TearDownTestSuite() {
    if (!dir_.empty() && !::testing::Test::HasFailure()) {
      (void)std::system(("rm -rf '" + dir_ + "'").c_str());
    }
  }
  void SetUp() override { ASSERT_FALSE(plan_.empty()) << "synth failed in SetUpTestSuite"; }

  static std::string Path(const std::string& name) { return dir_ + "/" + name; }

  // Runs `prefix BIN args` through the shell under `timeout`, stdout and stderr captured apart.
  static Result Shell(const std::string& command, int timeout_s = 60) {
    static int n = 0;
    const std::string out = Path("out." + std::to_string(++n)), err = Path("err." + std::to_string(n));
    const std::string cmd = "timeout -k 5 " + std::to_string(timeout_s) + " " + command + " >" + out + " 2>" + err +
                            " </dev/null";
    const auto t0 = std::chrono::steady_clock::now();
    const int status = std::system(cmd.c_str());
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, Slurp(out), Slurp(err), s};
  }
  static Result Hetsynth(const std::string& args, const std::string& env = "", int timeout_s = 60) {
    return Shell((env.empty() ? "" : "env " + env + " ") + HETSYNTH_BIN + " " + args, timeout_s);
  }

  // A baseline's plan (dp-ev, dp-cp, tp-even, zero-even) for the same model and cluster.
  static std::string Baseline(const std::string& name) {
    const std::string p = Path("mlp-" + name + ".json");
    const Result r = Hetsynth("synth --model mlp --small --cluster " + kMixed4 + " --baseline " + name + " -o " + p);
    EXPECT_EQ(r.code, 0) << name << "\n" << r.out << r.err;
    return p;
  }

  // Every metrics line parsed; fails the test on a line that is not JSON.
  static std::vector<json> Metrics(const std::string& path) {
    std::vector<json> lines;
    std::ifstream in(path);
    EXPECT_TRUE(in.good()) << path;
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      try {
        lines.push_back(json::parse(line));
      } catch (const json::exception& e) {
        ADD_FAILURE() << path << ": not JSON: " << line << "\n" << e.what();
      }
    }
    return lines;
  }
  static std::vector<double> Losses(const std::string& path) {
    std::vector<double> out;
    for (const json& j : Metrics(path)) out.push_back(j.at("loss").get<double>());
    return out;
  }

  static std::string dir_, plan_;
};

std::string TrainPlan::dir_, TrainPlan::plan_;

void ExpectLossesNear(const std::vector<double>& got, const std::vector<double>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(std::isfinite(got[i])) << what << " step " << i + 1;
    EXPECT_LE(std::abs(got[i] - want[i]), 1e-5 * std::abs(want[i])) << what << " step " << i + 1 << ": " << got[i]
                                                                     << " vs " << want[i];
  }
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// Exit status 2 and exactly one error line, the last one on stderr, naming every needle.
void ExpectError(const Result& r, const std::string& what, const std::vector<std::string>& needles) {
  EXPECT_EQ(r.code, 2) << what << "\nstdout:\n" << r.out << "stderr:\n" << r.err;
  const std::vector<std::string> lines = Lines(r.err);
  size_t errors = 0;
  for (const std::string& l : lines) errors += l.rfind("hetsynth: error:", 0) == 0;
  EXPECT_EQ(errors, 1u) << what << "\n" << r.err;
  EXPECT_EQ(r.err.find("error:"), r.err.rfind("error:")) << what << ": more than one error\n" << r.err;
  ASSERT_FALSE(lines.empty()) << what;
  const std::string& last = lines.back();
  EXPECT_EQ(last.rfind("hetsynth: error:", 0), 0u) << what << "\n" << r.err;
  for (const std::string& n : needles) EXPECT_NE(last.find(n), std::string::npos) << what << ": no '" << n << "' in\n" << last;
  EXPECT_EQ(r.out.find("trained"), std::string::npos) << what << "\n" << r.out;
}

// ---------------------------------------------------------------------------------------------

TEST_F(TrainPlan, RunsFourRanksWithMetricsTraceAndCheckpoint) {
  const std::string m = Path("run.jsonl"), t = Path("run-trace.json"), c = Path("run.safetensors");
  const Result r = Hetsynth("train --plan " + plan_ + " --steps 5 --optimizer sgd --lr 0.01 --metrics " + m + " --trace " +
                            t + " --save " + c);
  ASSERT_EQ(r.code, 0) << r.out << r.err;

  const std::vector<json> lines = Metrics(m);
  ASSERT_EQ(lines.size(), 5u) << Slurp(m);
  for (size_t i = 0; i < lines.size(); ++i) {
    const json& j = lines[i];
    SCOPED_TRACE(j.dump());
    EXPECT_EQ(j.at("step").get<int>(), static_cast<int>(i) + 1);
    EXPECT_TRUE(std::isfinite(j.at("loss").get<double>()));
    EXPECT_GT(j.at("loss").get<double>(), 0);
    for (const char* k : {"step_time_s", "compute_s", "communication_s", "idle_s", "overlapped_s"}) {
      ASSERT_TRUE(j.at(k).is_number()) << k;
      EXPECT_GE(j.at(k).get<double>(), 0) << k;
    }
    EXPECT_GT(j.at("step_time_s").get<double>(), 0);
    EXPECT_GT(j.at("compute_s").get<double>(), 0);
    EXPECT_EQ(j.at("emulated"), json(true));
    const json& ranks = j.at("ranks");
    ASSERT_TRUE(ranks.is_array());
    ASSERT_EQ(ranks.size(), 4u);
    for (const char* f : {"compute_s", "communication_s", "idle_s"}) {  // the top-level times: means over ranks
      double mean = 0;
      for (const json& rk : ranks) mean += rk.at(f).get<double>() / 4;
      EXPECT_NEAR(j.at(f).get<double>(), mean, 2e-6) << f;
    }
    for (size_t k = 0; k < ranks.size(); ++k) {
      EXPECT_EQ(ranks[k].at("device").get<std::string>(), kDevices[k]);
      for (const char* f : {"compute_s", "communication_s", "idle_s"}) EXPECT_GE(ranks[k].at(f).get<double>(), 0) << f;
      EXPECT_GT(ranks[k].at("compute_s").get<double>(), 0);
      // No rank's account exceeds the step (the slowest rank's time), give or take rounding.
      const double sum = ranks[k].at("compute_s").get<double>() + ranks[k].at("communication_s").get<double>() +
                         ranks[k].at("idle_s").get<double>();
      EXPECT_LE(sum, j.at("step_time_s").get<double>() * 1.01 + 1e-5) << "rank " << k;
    }
  }

  json trace;
  ASSERT_NO_THROW(trace = json::parse(Slurp(t))) << Slurp(t).substr(0, 500);
  ASSERT_TRUE(trace.contains("traceEvents") && trace["traceEvents"].is_array()) << trace.dump().substr(0, 500);
  std::set<int> pids, compute_pids, comm_pids;
  for (const json& e : trace["traceEvents"]) {
    if (e.value("ph", "") != "X") continue;
    const int pid = e.at("pid").get<int>();
    pids.insert(pid);
    const std::string cat = e.value("cat", "");
    if (cat == "compute") compute_pids.insert(pid);
    if (cat == "communication") comm_pids.insert(pid);
    EXPECT_GE(e.at("dur").get<double>(), 0) << e.dump();
  }
  EXPECT_EQ(pids, (std::set<int>{0, 1, 2, 3}));
  EXPECT_EQ(compute_pids, (std::set<int>{0, 1, 2, 3}));
  EXPECT_FALSE(comm_pids.empty());

  std::ifstream ckpt(c, std::ios::binary);
  EXPECT_TRUE(ckpt.good()) << c;

  EXPECT_NE(r.out.find("emulated"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("predicted"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("loss"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("EMULATED"), std::string::npos) << r.err;
  for (const std::string& d : kDevices) EXPECT_NE(r.err.find(d), std::string::npos) << d << "\n" << r.err;
}

TEST_F(TrainPlan, LossesEqualSingleDeviceTraining) {
  const std::string one = Path("one.jsonl");
  const Result single = Hetsynth("train --model mlp --small --steps 5 --optimizer sgd --lr 0.01 --metrics " + one);
  ASSERT_EQ(single.code, 0) << single.err;
  const std::vector<double> want = Losses(one);
  ASSERT_EQ(want.size(), 5u);

  const std::string m = Path("eq.jsonl");
  const Result r = Hetsynth("train --plan " + plan_ + " --steps 5 --optimizer sgd --lr 0.01 --quiet --metrics " + m);
  ASSERT_EQ(r.code, 0) << r.err;
  ExpectLossesNear(Losses(m), want, "synthesized plan");
}

// Time dilation (runtime/pacer.h) paces the ranks in real time: the same numbers, wall clock ÷ K
// reported, and a step lasts at least K × the slowest rank's paced compute.
TEST_F(TrainPlan, DilationPacesInRealTimeAndChangesNoNumber) {
  const std::string plain = Path("plain.jsonl"), dilated = Path("dilated.jsonl");
  ASSERT_EQ(Hetsynth("train --plan " + plan_ + " --steps 3 --quiet --metrics " + plain).code, 0);
  const auto t0 = std::chrono::steady_clock::now();
  const Result r = Hetsynth("train --plan " + plan_ + " --steps 3 --metrics " + dilated, "HETSYNTH_DILATION=5");
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("TIME DILATION K = 5"), std::string::npos) << r.err;
  EXPECT_EQ(Losses(dilated), Losses(plain));
  double slowest = 0, steps = 0;
  for (const json& j : Metrics(dilated)) {
    EXPECT_EQ(j.at("dilation").get<double>(), 5);
    EXPECT_GE(j.at("late_s").get<double>(), 0);
    EXPECT_EQ(j.at("idle_s").get<double>(), 0);  // waiting is inside the collectives' real time
    double compute = 0;
    for (const json& rank : j.at("ranks")) compute = std::max(compute, rank.at("compute_s").get<double>());
    EXPECT_GE(j.at("step_time_s").get<double>(), compute * (1 - 1e-6)) << j.dump();
    slowest += compute, ++steps;
  }
  EXPECT_EQ(steps, 3);
  EXPECT_GE(wall, 5 * slowest) << "paced: the steps' real time is at least K x their compute";
  const Result bad = Hetsynth("train --plan " + plan_ + " --steps 1 --dilation 0.5");
  EXPECT_EQ(bad.code, 2) << bad.err;
  EXPECT_NE(bad.err.find("--dilation: '0.5'; expected a number from 1 to 1e6"), std::string::npos) << bad.err;
}

TEST_F(TrainPlan, BaselinePlansEqualSingleDeviceTraining) {
  const std::string one = Path("one-b.jsonl");
  ASSERT_EQ(Hetsynth("train --model mlp --small --steps 3 --optimizer sgd --lr 0.01 --metrics " + one).code, 0);
  const std::vector<double> want = Losses(one);
  for (const char* b : {"dp-ev", "dp-cp", "tp-even", "zero-even"}) {
    const std::string p = Baseline(b), m = Path(std::string(b) + ".jsonl");
    const Result r = Hetsynth("train --plan " + p + " --steps 3 --optimizer sgd --lr 0.01 --quiet --metrics " + m);
    ASSERT_EQ(r.code, 0) << b << "\n" << r.err;
    ExpectLossesNear(Losses(m), want, b);
  }
}

TEST_F(TrainPlan, CheckpointFromFourRanksResumesOnOneDevice) {
  const std::string full = Path("full5.jsonl");
  ASSERT_EQ(Hetsynth("train --model mlp --small --steps 5 --metrics " + full).code, 0);
  const std::vector<double> all = Losses(full);
  ASSERT_EQ(all.size(), 5u);

  const std::string a = Path("ranks3.safetensors"), x = Path("resumed1.jsonl");
  const Result save = Hetsynth("train --plan " + plan_ + " --steps 3 --quiet --save " + a);
  ASSERT_EQ(save.code, 0) << save.err;
  const Result resume = Hetsynth("train --model mlp --small --load " + a + " --steps 2 --metrics " + x);
  ASSERT_EQ(resume.code, 0) << resume.err;
  const std::vector<json> lines = Metrics(x);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].at("step").get<int>(), 4);  // the optimizer's step count came along
  ExpectLossesNear(Losses(x), {all[3], all[4]}, "4 ranks -> 1 device");
}

TEST_F(TrainPlan, CheckpointFromOneDeviceResumesOnFourRanks) {
  const std::string full = Path("full5b.jsonl");
  ASSERT_EQ(Hetsynth("train --model mlp --small --steps 5 --metrics " + full).code, 0);
  const std::vector<double> all = Losses(full);
  ASSERT_EQ(all.size(), 5u);

  const std::string a = Path("one3.safetensors"), x = Path("resumed4.jsonl");
  const Result save = Hetsynth("train --model mlp --small --steps 3 --save " + a);
  ASSERT_EQ(save.code, 0) << save.err;
  const Result resume = Hetsynth("train --plan " + plan_ + " --load " + a + " --steps 2 --quiet --metrics " + x);
  ASSERT_EQ(resume.code, 0) << resume.err;
  const std::vector<json> lines = Metrics(x);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].at("step").get<int>(), 4);
  ExpectLossesNear(Losses(x), {all[3], all[4]}, "1 device -> 4 ranks");
}

TEST_F(TrainPlan, TwoNodePlanWithHierarchicalOverlappedBucketsEqualsOneDevice) {
  // The full synthesized plan for two nodes (2 fast devices; 2 half and 2 quarter speed) behind a
  // slow NIC: a hierarchical gradient all-reduce on the communication stream. It runs as planned
  // and trains like one device.
  const std::string cluster = kSource + "/examples/clusters/two-node-mixed.json";
  const std::string plan = Path("gpt-two-node.json");
  const Result s = Hetsynth("synth --model gpt --small --cluster " + cluster + " -o " + plan);
  ASSERT_EQ(s.code, 0) << s.out << s.err;
  const json pj = json::parse(Slurp(plan));
  EXPECT_EQ(pj.at("overlap"), json(true));
  EXPECT_EQ(pj.at("mesh").at("nodes").size(), 2u);
  bool hierarchical = false;
  for (const json& b : pj.at("buckets")) hierarchical |= b.value("impl", "") == "hierarchical";
  for (const json& in : pj.at("program")) hierarchical |= in.value("impl", "") == "hierarchical";
  EXPECT_TRUE(hierarchical) << pj.at("buckets").dump();

  const std::string one = Path("gpt-one.jsonl"), m = Path("gpt-two-node.jsonl"), t = Path("gpt-two-node-trace.json");
  ASSERT_EQ(Hetsynth("train --model gpt --small --steps 4 --optimizer sgd --lr 0.01 --metrics " + one).code, 0);
  const Result r = Hetsynth("train --plan " + plan + " --steps 4 --optimizer sgd --lr 0.01 --metrics " + m + " --trace " + t);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  ExpectLossesNear(Losses(m), Losses(one), "two-node plan on 6 thread ranks");
  EXPECT_NE(r.out.find("overlapped with compute"), std::string::npos) << r.out;
  // The communication stream is a track of its own in the trace.
  std::set<int> stream_pids;
  const json trace = json::parse(Slurp(t));
  for (const json& e : trace.at("traceEvents")) {
    if (e.value("ph", "") == "X" && e.value("tid", 0) == 1) {
      EXPECT_EQ(e.value("cat", ""), "communication") << e.dump();
      stream_pids.insert(e.at("pid").get<int>());
    }
  }
  EXPECT_EQ(stream_pids, (std::set<int>{0, 1, 2, 3, 4, 5}));}

TEST_F(TrainPlan, PlanWithSeveralRatioSegmentsEqualsOneDevice) {
  // vgg19 on four nodes: the synthesized plan cuts the convolutions' batch by one row of ratios
  // and the ZeRO-sharded weights by another (segments); 8 thread ranks train like one device.
  const std::string cluster = kSource + "/examples/clusters/four-node-mixed.json";
  const std::string plan = Path("vgg19-segments.json");
  ASSERT_EQ(Hetsynth("synth --model vgg19 --small --cluster " + cluster + " -o " + plan).code, 0);
  const json pj = json::parse(Slurp(plan));
  ASSERT_GE(pj.at("ratios").size(), 2u) << pj.at("ratios").dump();
  const std::string one = Path("vgg19-one.jsonl"), m = Path("vgg19-segments.jsonl");
  ASSERT_EQ(Hetsynth("train --model vgg19 --small --steps 3 --optimizer sgd --lr 0.01 --quiet --metrics " + one).code, 0);
  const Result r = Hetsynth("train --plan " + plan + " --steps 3 --optimizer sgd --lr 0.01 --quiet --metrics " + m);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  ExpectLossesNear(Losses(m), Losses(one), "plan with ratio segments on 8 thread ranks");
  // --no-segments: one row; explain shows every row.
  const std::string flat = Path("vgg19-one-row.json");
  ASSERT_EQ(Hetsynth("synth --model vgg19 --small --no-segments --cluster " + cluster + " -o " + flat).code, 0);
  EXPECT_EQ(json::parse(Slurp(flat)).at("ratios").size(), 1u);
  const Result e = Hetsynth("explain " + plan);
  EXPECT_NE(e.out.find("segment 1:"), std::string::npos) << e.out;
}

TEST_F(TrainPlan, BadCombinationsExitTwoWithOneLine) {
  const std::string run = "train --plan " + plan_ + " --steps 1 ";
  ExpectError(Hetsynth(run + "--ranks 2"), "--ranks 2", {"is for 4 devices", "2", plan_});
  ExpectError(Hetsynth(run + "--model gpt"), "--model gpt", {"mlp", "gpt"});
  ExpectError(Hetsynth(run + "--cluster " + kSource + "/examples/clusters/homogeneous-8.json"), "--cluster homogeneous-8",
              {"not for", "homogeneous-8.json"});
  ExpectError(Hetsynth(run + "--model-arg hidden=8"), "--model-arg with --plan", {plan_, "--model-arg"});
  ExpectError(Hetsynth(run + "--small"), "--small with --plan", {plan_, "--small"});
  ExpectError(Hetsynth("train --model mlp --small --steps 1 --trace " + Path("t.json")), "--trace without --plan",
              {"--trace", "--plan"});
  ExpectError(Hetsynth("train --model mlp --small --steps 1 --ranks 4"), "--ranks without --plan", {"--ranks", "--plan"});
  ExpectError(Hetsynth("train --model mlp --small --steps 1 --bitwise"), "--bitwise without --plan", {"--bitwise", "--plan"});
  ExpectError(Hetsynth("train --steps 1"), "neither --model nor --plan", {"--model", "--plan"});
  // The CUDA backend's flags.
  ExpectError(Hetsynth(run + "--backend tpu"), "unknown backend", {"--backend tpu", "cpu or cuda"});
  ExpectError(Hetsynth(run + "--emulate-gpus"), "--emulate-gpus without cuda", {"--emulate-gpus", "--backend cuda"});
  ExpectError(Hetsynth(run + "--precision tf32"), "--precision on the CPU", {"--precision tf32", "--backend cuda"});
  ExpectError(Hetsynth(run + "--backend cuda --precision fp8"), "bad precision", {"fp8", "fp32, tf32 or bf16"});
  ExpectError(Hetsynth(run + "--backend cuda"), "4 GPUs without mpirun", {"mpirun -np 4", "--emulate-gpus"});
  ExpectError(Hetsynth(run + "--backend cuda --emulate-gpus --ranks 4"), "--ranks on GPUs", {"--ranks", "GPU ranks"});
  ExpectError(Hetsynth(run + "--backend cuda --emulate-gpus --bitwise"), "--bitwise on GPUs", {"--bitwise", "CPU ranks"});
  ExpectError(Hetsynth("train --model mlp --small --steps 1 --emulate-gpus"), "--emulate-gpus without a plan",
              {"--emulate-gpus", "--plan"});
}

// Without a GPU, the CUDA backend says so and exits 2 (the GPU runs are in gpu_executor_test).
TEST_F(TrainPlan, CudaWithoutAGpuExitsTwo) {
  const hetsynth::runtime::CudaInfo info = hetsynth::runtime::ProbeCuda();
  if (info.devices > 0) GTEST_SKIP() << "a GPU is visible: " << info.first_name;
  ExpectError(Hetsynth("train --plan " + plan_ + " --steps 1 --backend cuda --emulate-gpus"), "plan on virtual GPUs",
              {"--backend cuda:", info.reason});
  ExpectError(Hetsynth("train --model mlp --small --steps 1 --backend cuda"), "one GPU", {"--backend cuda:", info.reason});
}

TEST_F(TrainPlan, BadPlanFilesAreNamed) {
  const std::string missing = Path("no-such-plan.json");
  ExpectError(Hetsynth("train --plan " + missing + " --steps 1"), "missing plan", {missing});

  const std::string text = Slurp(plan_);
  ASSERT_GT(text.size(), 100u);
  const std::string truncated = Path("truncated-plan.json");
  std::ofstream(truncated) << text.substr(0, text.size() / 2);
  ExpectError(Hetsynth("train --plan " + truncated + " --steps 1"), "truncated plan", {truncated});

  // A ratio changed: the shard lengths no longer add up and the plan check fails.
  json j = json::parse(text);
  ASSERT_TRUE(j.contains("program")) << text.substr(0, 500);
  json* ratios = nullptr;
  if (j["program"].is_object() && j["program"].contains("ratios")) ratios = &j["program"]["ratios"];
  if (ratios == nullptr && j.contains("ratios")) ratios = &j["ratios"];
  ASSERT_NE(ratios, nullptr) << "where are the ratios? " << text.substr(0, 800);
  ASSERT_TRUE(ratios->is_array() && !ratios->empty() && (*ratios)[0].is_array() && !(*ratios)[0].empty()) << ratios->dump();
  (*ratios)[0][0] = (*ratios)[0][0].get<double>() + 0.25;
  const std::string bad_ratio = Path("bad-ratio-plan.json");
  std::ofstream(bad_ratio) << j.dump(1);
  ExpectError(Hetsynth("train --plan " + bad_ratio + " --steps 1"), "plan with a changed ratio", {bad_ratio});
}

TEST_F(TrainPlan, CheckpointOfAnotherModelIsRefused) {
  const std::string gpt = Path("gpt.safetensors");
  ASSERT_EQ(Hetsynth("train --model gpt --small --steps 1 --quiet --save " + gpt).code, 0);
  ExpectError(Hetsynth("train --plan " + plan_ + " --steps 1 --load " + gpt), "gpt checkpoint into an mlp plan", {gpt});
  const std::string missing = Path("no-such.safetensors");
  ExpectError(Hetsynth("train --plan " + plan_ + " --steps 1 --load " + missing), "missing checkpoint", {missing});
}

TEST_F(TrainPlan, ThreadRankThatDiesFailsTheRunQuickly) {
  const std::string m = Path("die.jsonl");
  const Result r = Hetsynth("train --plan " + plan_ + " --steps 5 --metrics " + m, "HETSYNTH_TEST_KILL_RANK=2:2");
  EXPECT_NE(r.code, 0) << r.err;
  EXPECT_NE(r.code, 124) << "timed out:\n" << r.err;
  EXPECT_NE(r.code, -1) << "killed by a signal (crash?):\n" << r.err;
  EXPECT_LT(r.seconds, 30) << r.err;
  EXPECT_NE(r.err.find("rank 2"), std::string::npos) << r.err;
  const std::vector<std::string> lines = Lines(r.err);
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back().rfind("hetsynth: error:", 0), 0u) << r.err;
  EXPECT_NE(lines.back().find("rank 2"), std::string::npos) << r.err;
  EXPECT_EQ(r.out.find("trained"), std::string::npos) << r.out;
  EXPECT_EQ(Metrics(m).size(), 1u) << "step 1 completes, step 2 does not";
}

// ---------------------------------------------------------------------------------------------
// MPI: only where hetsynth was built with MPI and mpirun runs here.

class TrainPlanMpi : public TrainPlan {
 protected:
  void SetUp() override {
    TrainPlan::SetUp();
#ifndef HETSYNTH_TEST_MPIEXEC
    GTEST_SKIP() << "hetsynth was built without MPI";
#else
    mpirun_ = HETSYNTH_TEST_MPIEXEC;
    if (mpirun_.empty()) mpirun_ = "mpirun";
    const Result v = Shell(mpirun_ + " --version", 30);
    if (v.code != 0) GTEST_SKIP() << "'" << mpirun_ << " --version' failed: " << v.out << v.err;
#endif
  }
  Result Mpirun(const std::string& args, const std::string& extra_env = "", const std::string& pass = "",
                int timeout_s = 120, int np = 4) {
    return Shell("env OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1 " + extra_env +
                     " " + mpirun_ + " --oversubscribe --allow-run-as-root -np " + std::to_string(np) + " " + pass +
                     " " + HETSYNTH_BIN + " " + args,
                 timeout_s);
  }
  // Synthesizes `model --small` for examples/clusters/`cluster`.json, trains it `steps` SGD steps
  // on `np` mpirun processes and on one device, expects equal losses; returns the plan.
  json SynthesizedPlanOnMpiEqualsOneDevice(const std::string& model, const std::string& cluster, int np, int steps,
                                           const std::string& what) {
    const std::string plan = Path(model + "-" + cluster + "-mpi.json");
    const std::string train = " --steps " + std::to_string(steps) + " --optimizer sgd --lr 0.01 --quiet --metrics ";
    const Result s = Hetsynth("synth --model " + model + " --small --cluster " + kSource + "/examples/clusters/" + cluster +
                              ".json -o " + plan);
    if (s.code != 0) {
      ADD_FAILURE() << what << ": synth failed\n" << s.out << s.err;
      return json::object({{"ratios", json::array()}});
    }
    const std::string one = Path(model + "-one-mpi.jsonl"), m = Path(model + "-" + cluster + "-mpi.jsonl");
    EXPECT_EQ(Hetsynth("train --model " + model + " --small" + train + one).code, 0) << what;
    const Result r = Mpirun("train --plan " + plan + train + m, "", "", 180, np);
    EXPECT_EQ(r.code, 0) << r.out << r.err;
    ExpectLossesNear(Losses(m), Losses(one), what);
    return json::parse(Slurp(plan));
  }
  std::string mpirun_;
};

TEST_F(TrainPlanMpi, MpiRanksTrainLikeThreadRanks) {
  const std::string threads = Path("threads.jsonl");
  const Result t = Hetsynth("train --plan " + plan_ + " --steps 5 --optimizer sgd --lr 0.01 --quiet --metrics " + threads);
  ASSERT_EQ(t.code, 0) << t.err;

  const std::string m = Path("mpi.jsonl"), trace = Path("mpi-trace.json");
  const Result r = Mpirun("train --plan " + plan_ + " --steps 5 --optimizer sgd --lr 0.01 --metrics " + m + " --trace " + trace);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.err.find("MPI ranks"), std::string::npos) << r.err;
  ExpectLossesNear(Losses(m), Losses(threads), "MPI vs threads");
  // Printed once (rank 0), not by every process.
  size_t trained = 0;
  for (size_t at = r.out.find("trained"); at != std::string::npos; at = r.out.find("trained", at + 1)) ++trained;
  EXPECT_EQ(trained, 1u) << r.out;

  json j;
  ASSERT_NO_THROW(j = json::parse(Slurp(trace)));
  std::set<int> pids;
  for (const json& e : j.at("traceEvents")) {
    if (e.value("ph", "") == "X" && e.value("cat", "") == "compute") pids.insert(e.at("pid").get<int>());
  }
  EXPECT_EQ(pids, (std::set<int>{0, 1, 2, 3}));
}

TEST_F(TrainPlanMpi, TwoNodePlanOnSixMpiProcessesEqualsOneDevice) {
  // The two-node plan (hierarchical bucket overlapped with backward on an MPI communication
  // thread) under mpirun, one process per device.
  SynthesizedPlanOnMpiEqualsOneDevice("gpt", "two-node-mixed", 6, 4, "two-node plan on 6 MPI processes");
}

TEST_F(TrainPlanMpi, PlanWithSeveralRatioSegmentsOnEightMpiProcessesEqualsOneDevice) {
  const json plan = SynthesizedPlanOnMpiEqualsOneDevice("vgg19", "four-node-mixed", 8, 3, "plan with ratio segments on 8 MPI processes");
  EXPECT_GE(plan.at("ratios").size(), 2u) << plan.at("ratios").dump();
}

TEST_F(TrainPlanMpi, MegatronPlanOverMeshLevelsTrainsEndToEnd) {
  // Tensor parallel inside each node × data parallel across the two nodes (mixed forms, mesh
  // rules, devices-level collectives, an across-nodes bucket on the communication thread) on 6
  // MPI processes; its checkpoint (whole tensors assembled from the pieces) resumes one device.
  const std::string cluster = kSource + "/examples/clusters/two-node-mixed.json";
  const std::string plan = Path("gpt-megatron-mpi.json");
  ASSERT_EQ(Hetsynth("synth --model gpt --small --cluster " + cluster + " --baseline megatron -o " + plan).code, 0);
  const std::string one = Path("gpt-one-meg.jsonl"), m = Path("gpt-megatron-mpi.jsonl"), ck = Path("meg.safetensors");
  ASSERT_EQ(Hetsynth("train --model gpt --small --steps 6 --optimizer sgd --lr 0.01 --metrics " + one).code, 0);
  const Result r = Mpirun("train --plan " + plan + " --steps 3 --optimizer sgd --lr 0.01 --quiet --metrics " + m +
                              " --save " + ck,
                          "", "", 180, 6);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const std::string rest = Path("gpt-rest-meg.jsonl");
  const Result t = Hetsynth("train --model gpt --small --steps 3 --optimizer sgd --lr 0.01 --quiet --load " + ck +
                            " --metrics " + rest);
  ASSERT_EQ(t.code, 0) << t.err;
  std::vector<double> both = Losses(m);
  for (double l : Losses(rest)) both.push_back(l);
  ExpectLossesNear(both, Losses(one), "megatron on 6 MPI processes, then one device from its checkpoint");
}

TEST_F(TrainPlanMpi, MpiRankThatDiesFailsTheRun) {
  const Result r = Mpirun("train --plan " + plan_ + " --steps 5", "HETSYNTH_TEST_KILL_RANK=2:2",
                          "-x HETSYNTH_TEST_KILL_RANK", 90);
  EXPECT_NE(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.code, 124) << "timed out:\n" << r.err;
  EXPECT_LT(r.seconds, 60) << r.err;
  EXPECT_NE(r.err.find("rank 2"), std::string::npos) << r.err;
}

// A plan whose thread ranks together need more than this machine's memory is refused before
// anything is allocated: one line with the plan's predicted need and the machine's memory.
TEST_F(TrainPlan, PlanLargerThanThisMachineIsRefusedBeforeAllocating) {
  const std::string big = Path("gpt-ref64-b2048.json");
  const Result s = Hetsynth("synth --model gpt --batch 2048 --cluster " + kSource +
                            "/examples/clusters/reference-64.json -o " + big);
  ASSERT_EQ(s.code, 0) << s.err;
  const nlohmann::json plan = nlohmann::json::parse(Slurp(big));
  double need = 0;
  for (double b : plan["predicted"]["memory_bytes"]) need += b;
  const double have = hetsynth::PhysicalRamBytes();
  if (!(need > have)) GTEST_SKIP() << "the plan's " << need / 1073741824.0 << " GiB fit in this machine's " << have / 1073741824.0 << " GiB";
  const Result r = Hetsynth("train --plan " + big + " --steps 1");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("on 64 thread ranks in this process needs at least"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("GiB; this machine has"), std::string::npos) << r.err;
  EXPECT_LT(r.seconds, 20) << "refused only after allocating? " << r.err;
}

}  // namespace
