// `hetsynth bench` end to end: measured and simulated results (JSON fields, table, plans,
// traces, plots), and bad input exiting 2 with one line.
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli/run_hetsynth.h"

namespace {

using hetsynth::cli_testing::ExpectError;
using hetsynth::cli_testing::Hetsynth;
using hetsynth::cli_testing::Result;

std::string Dir(const std::string& name) { return ::testing::TempDir() + "/bench_test_" + name; }
const std::string kClusters = std::string(HETSYNTH_SOURCE_DIR) + "/examples/clusters/";
bool HaveGnuplot() { return std::system("command -v gnuplot >/dev/null 2>&1") == 0; }

nlohmann::json Load(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

TEST(CliBench, MeasuresPlanAndBaselineOnEmulatedRanks) {
  const std::string out = Dir("measured");
  std::filesystem::remove_all(out);
  const Result r = Hetsynth("bench --model mlp --small --cluster " + kClusters + "mixed-4.json --baselines dp-ev,tp-even " +
                            "--steps 2 --warmup 1 --out " + out);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("emulated"), std::string::npos) << r.output;
  const nlohmann::json j = Load(out + "/results.json");
  EXPECT_EQ(j["simulated"], false);
  ASSERT_EQ(j["plans"].size(), 3u);
  EXPECT_GT(j["ideal_step_time_s"].get<double>(), 0);
  for (const auto& p : j["plans"]) {
    const std::string name = p["plan"];
    ASSERT_TRUE(p["feasible"].get<bool>()) << name;
    EXPECT_GT(p["predicted_step_time_s"].get<double>(), 0) << name;
    EXPECT_GT(p["measured_step_time_s"].get<double>(), 0) << name;
    EXPECT_TRUE(std::isfinite(p["measured_speedup_vs_dp_ev"].get<double>())) << name;
    EXPECT_TRUE(std::isfinite(p["prediction_error"].get<double>())) << name;
    EXPECT_GT(p["efficiency_measured"].get<double>(), 0) << name;
    EXPECT_TRUE(std::filesystem::exists(out + "/" + name + ".plan.json")) << name;
    EXPECT_TRUE(std::filesystem::exists(out + "/" + name + ".trace.json")) << name;
    // Each device's compute, predicted and measured (its rank's), in the cluster's order.
    const auto& devices = p["compute_per_device"];
    ASSERT_EQ(devices.size(), 4u) << name;
    const std::vector<std::string> names = {"fast0", "fast1", "half0", "quarter0"};
    for (size_t i = 0; i < devices.size(); ++i) {
      EXPECT_EQ(devices[i]["device"], names[i]) << name;
      EXPECT_GT(devices[i]["predicted_compute_s"].get<double>(), 0) << name;
      EXPECT_GT(devices[i]["measured_compute_s"].get<double>(), 0) << name;
    }
  }
  // dp-ev splits the batch evenly: the two fast devices get the same compute.
  EXPECT_DOUBLE_EQ(j["plans"][1]["compute_per_device"][0]["predicted_compute_s"].get<double>(),
                   j["plans"][1]["compute_per_device"][1]["predicted_compute_s"].get<double>());
  EXPECT_DOUBLE_EQ(j["plans"][1]["measured_speedup_vs_dp_ev"].get<double>(), 1.0);  // dp-ev itself
  EXPECT_TRUE(std::filesystem::exists(out + "/results.md"));
  if (HaveGnuplot()) {
    EXPECT_GT(std::filesystem::file_size(out + "/speedup.png"), 1000u);
    EXPECT_GT(std::filesystem::file_size(out + "/speedup.svg"), 1000u);
  }
  // A plan written by bench runs with train --plan.
  const Result t = Hetsynth("train --plan " + out + "/synthesized.plan.json --steps 1 --quiet");
  EXPECT_EQ(t.code, 0) << t.output;
}

TEST(CliBench, SimulatesTheReferenceCluster) {
  const std::string out = Dir("simulated");
  std::filesystem::remove_all(out);
  const Result r = Hetsynth("bench --simulate --model gpt --small --batch 256 --cluster " + kClusters +
                            "reference-64.json --out " + out);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("predicted"), std::string::npos) << r.output;
  const nlohmann::json j = Load(out + "/results.json");
  EXPECT_EQ(j["simulated"], true);
  EXPECT_EQ(j["devices"], 64);
  ASSERT_EQ(j["plans"].size(), 10u);  // synthesized and every baseline (megatron included)
  EXPECT_EQ(j["mesh"], "two-level: 8 nodes x 8 devices");
  for (const auto& p : j["plans"]) {
    if (!p["feasible"].get<bool>()) continue;
    EXPECT_TRUE(p["measured_step_time_s"].is_null()) << p.dump();
    EXPECT_GT(p["predicted_speedup_vs_ddp_ev"].get<double>(), 0) << p.dump();
    EXPECT_GT(p["predicted_speedup_vs_hap"].get<double>(), 0) << p.dump();
    EXPECT_GE(p["predicted_exposed_communication_s"].get<double>(), 0) << p.dump();
  }
  EXPECT_EQ(j["plans"][1]["plan"], "ddp-ev");
  EXPECT_DOUBLE_EQ(j["plans"][1]["predicted_speedup_vs_ddp_ev"].get<double>(), 1.0);
  // Never slower than any baseline (synthesis keeps re-optimized baselines).
  EXPECT_GE(j["plans"][0]["predicted_speedup_vs_best_baseline"].get<double>(), 1.0 - 1e-9);
  EXPECT_FALSE(std::filesystem::exists(out + "/synthesized.trace.json"));
}

TEST(CliBench, RunsPlansOverMeshLevelsOnTwoNodes) {
  // megatron (tensor parallel inside each node, data parallel across them) is measured like any
  // plan, and its plan file trains.
  const std::string out = Dir("mesh");
  std::filesystem::remove_all(out);
  const Result r = Hetsynth("bench --model gpt --small --cluster " + kClusters + "two-node-mixed.json --baselines megatron --steps 1 --warmup 0 --out " + out);
  ASSERT_EQ(r.code, 0) << r.output;
  const nlohmann::json j = Load(out + "/results.json");
  ASSERT_EQ(j["plans"].size(), 2u);
  EXPECT_EQ(j["plans"][1]["plan"], "megatron");
  EXPECT_GT(j["plans"][1]["measured_step_time_s"].get<double>(), 0) << j["plans"][1].dump();
  const Result t = Hetsynth("train --plan " + out + "/megatron.plan.json --steps 1 --quiet");
  EXPECT_EQ(t.code, 0) << t.output;
}

TEST(CliBench, BadInputExitsTwoWithOneLine) {
  const std::string mixed = " --cluster " + kClusters + "mixed-4.json --out " + Dir("bad");
  for (const auto& [args, needle] : std::vector<std::pair<std::string, std::string>>{
           {"bench --model mlp --small" + mixed + " --baselines dp-ev,nosuch", "unknown baseline 'nosuch'"},
           {"bench --model mlp --small" + mixed + " --backend cuda", "--emulate-gpus"},
           {"bench --model mlp --small" + mixed + " --backend tpu", "--backend tpu"},
           {"bench --model mlp --small" + mixed + " --emulate-gpus", "--emulate-gpus needs --backend cuda"},
           {"bench --model mlp --small" + mixed + " --steps 0", "--steps 0"},
           {"bench --model mlp --small --cluster " + kClusters + "reference-64.json --out " + Dir("bad"), "--simulate"},
           {"bench --model mlp --small --cluster /nonexistent.json --out " + Dir("bad"), "/nonexistent.json"},
           {"bench --model nosuch" + mixed, "unknown model 'nosuch'"},
       }) {
    ExpectError(args, needle);
  }
}

}  // namespace
