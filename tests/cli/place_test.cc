// `hetsynth place` end to end: a placement is written and checked; infeasible problems and
// malformed placement files exit 2 with one line naming the file, the field and the value.
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli/run_hetsynth.h"

namespace {

using hetsynth::cli_testing::ExpectError;
using hetsynth::cli_testing::Hetsynth;
using hetsynth::cli_testing::Result;

std::string Tmp(const std::string& name) { return ::testing::TempDir() + "/" + name; }
std::string Cluster(const std::string& name) { return std::string(HETSYNTH_SOURCE_DIR) + "/examples/clusters/" + name + ".json"; }

std::string Placed() {
  const std::string out = Tmp("place_vit.json");
  const Result r = Hetsynth("place --model vit --small --cluster " + Cluster("mixed-4") + " -o " + out + " --time-limit 20");
  EXPECT_EQ(r.code, 0) << r.output;
  for (const char* m : {"single", "even", "speed", "heft", "milp"}) EXPECT_NE(r.output.find(std::string("\n") + m + " "), std::string::npos) << m;
  EXPECT_NE(r.output.find("gap"), std::string::npos);
  return out;
}

nlohmann::json Read(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

void Write(const std::string& path, const nlohmann::json& j) { std::ofstream(path) << j.dump(1); }

TEST(Place, WritesAPlacementThatChecks) {
  const std::string out = Placed();
  const nlohmann::json j = Read(out);
  EXPECT_EQ(j["format"], "hetsynth-placement");
  EXPECT_EQ(j["method"], "milp");
  // The MILP is never worse than a feasible baseline.
  double milp = -1;
  for (const auto& m : j["methods"]) {
    if (m["method"] == "milp") milp = m["latency_s"].get<double>();
  }
  ASSERT_GT(milp, 0);
  for (const auto& m : j["methods"]) {
    if (m["feasible"].get<bool>()) {
      EXPECT_LE(milp, m["latency_s"].get<double>()) << m["method"];
    }
  }
  const Result r = Hetsynth("place --check " + out + " --cluster " + Cluster("mixed-4"));
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("is valid"), std::string::npos) << r.output;
  // Re-priced on the same cluster, the file's groups, devices and order give its prediction.
  const size_t at = r.output.find("it takes ");
  ASSERT_NE(at, std::string::npos) << r.output;
  const std::string took = r.output.substr(at + 9, r.output.find(" (predicted", at) - at - 9);
  EXPECT_NE(r.output.find("the file says " + took + ")"), std::string::npos) << r.output;
  ExpectError("place --check " + out + " --cluster " + Cluster("reference-64"), "was made for cluster 'mixed-4'");
  // Another method's placement.
  const std::string heft = Tmp("place_heft.json");
  ASSERT_EQ(Hetsynth("place --model vgg19 --small --cluster " + Cluster("mixed-4") + " --method heft -o " + heft).code, 0);
  EXPECT_EQ(Read(heft)["method"], "heft");
}

TEST(Place, InfeasibleModelExits2WithOneLine) {
  // Every device holds 1 MB; vgg19's small preset needs more for its largest layer.
  nlohmann::json c = Read(Cluster("mixed-4"));
  for (auto& [name, t] : c["device_types"].items()) t["memory_bytes"] = 1e6;
  const std::string tiny = Tmp("tiny-cluster.json");
  Write(tiny, c);
  ExpectError("place --model vgg19 --small --cluster " + tiny + " -o " + Tmp("never.json"), "fits no placement on cluster");
}

TEST(Place, BadFlagsExit2WithOneLine) {
  const std::string c = Cluster("mixed-4");
  ExpectError("place --model gpt --small --cluster " + c + " -o " + Tmp("x.json") + " --method greedy", "--method 'greedy'");
  ExpectError("place --model gpt --small --cluster " + c + " -o " + Tmp("x.json") + " --time-limit -1", "--time-limit -1");
  ExpectError("place --model gpt --small --cluster " + c, "-o is required");
  ExpectError("place --model gpt --small --cluster " + c + " -o /nonexistent/dir/p.json", "/nonexistent/dir");
  ExpectError("place --check /nonexistent/p.json", "/nonexistent/p.json");
}

// A placement of one group has no edges whose bytes would show a batch or an argument edited
// after `place`: the graph's element count does.
TEST(Place, EditedModelOfAOneGroupPlacementIsRefused) {
  const std::string out = Tmp("one_group.json");
  const Result placed = Hetsynth("place --model mlp --small --cluster " + Cluster("mixed-4") + " --max-nodes 1 -o " + out);
  ASSERT_EQ(placed.code, 0) << placed.output;
  nlohmann::json j = Read(out);
  ASSERT_EQ(j["groups"].size(), 1u);
  ASSERT_EQ(j.count("edges") == 0 || j["edges"].empty(), true);
  const std::string bad = Tmp("one_group_edited.json");
  j["model"]["batch"] = 64;
  Write(bad, j);
  ExpectError("infer --placement " + bad, "model_elements: ");
  ExpectError("place --check " + bad, "(mlp, batch 64, its args) has ");
  j = Read(out);
  j["model"]["args"]["hidden"] = 64;
  Write(bad, j);
  ExpectError("infer --placement " + bad, "the file was placed for another model, batch or args");
  j = Read(out);
  j.erase("model_elements");  // a file from before the field, but nothing else ties it to the model
  Write(bad, j);
  ExpectError("place --check " + bad, "model_elements: missing, and no edges");
  const std::string multi = Tmp("multi_group.json");
  ASSERT_EQ(Hetsynth("place --model mlp --small --cluster " + Cluster("mixed-4") + " --method even -o " + multi).code, 0);
  j = Read(multi);
  ASSERT_FALSE(j["edges"].empty());
  j.erase("model_elements");  // with edges, a file from before the field is still read
  Write(bad, j);
  EXPECT_EQ(Hetsynth("place --check " + bad).code, 0);
}

// place --check with the file's cluster re-prices the groups: a group moved, a predicted time or
// a transfer edited after `place` is refused, with the figure that disagrees.
TEST(Place, CheckRefusesFiguresTheGroupsDoNotCost) {
  const std::string out = Tmp("check_even.json");
  ASSERT_EQ(Hetsynth("place --model gpt --small --cluster " + Cluster("mixed-4") + " --method even -o " + out).code, 0);
  EXPECT_EQ(Hetsynth("place --check " + out + " --cluster " + Cluster("mixed-4")).code, 0);
  const std::string bad = Tmp("check_even_edited.json");
  nlohmann::json j = Read(out);
  j["predicted_latency_s"] = j["predicted_latency_s"].get<double>() * 1.5;
  Write(bad, j);
  ExpectError("place --check " + bad + " --cluster " + Cluster("mixed-4"), "but its groups take");
  j = Read(out);
  ASSERT_FALSE(j["edges"].empty());
  for (auto& e : j["edges"]) e[3] = e[3].get<double>() * 2 + 1e-3;
  Write(bad, j);
  ExpectError("place --check " + bad + " --cluster " + Cluster("mixed-4"), "edges[0][3]: transfer_s");
  j = Read(out);
  j["groups"][1]["finish_s"] = 0.0;
  j["groups"][1]["start_s"] = 1e-3;
  Write(bad, j);
  ExpectError("place --check " + bad, "groups[1].finish_s: 0; expected no earlier than its start_s 0.001");
  j = Read(out);
  j.erase("predicted_latency_s");
  Write(bad, j);
  ExpectError("infer --placement " + bad, "predicted_latency_s");
}

TEST(Place, MalformedPlacementFilesExit2NamingFileFieldValue) {
  const std::string out = Placed();
  const nlohmann::json good = Read(out);
  struct Case {
    std::function<void(nlohmann::json&)> edit;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {[](nlohmann::json& j) { j["version"] = 7; }, "field 'version': 7; expected 1"},
      {[](nlohmann::json& j) { j["model_elements"] = j["model_elements"].get<int64_t>() + 1; },
       "the file was placed for another model, batch or args"},
      {[](nlohmann::json& j) { j["format"] = "hetsynth-plan"; }, "field 'format': \"hetsynth-plan\""},
      {[](nlohmann::json& j) { j["groups"][0]["device"] = "gpu9"; }, "groups[0].device: 'gpu9' is not in cluster.devices"},
      {[](nlohmann::json& j) { j["groups"][1]["ops"].push_back("nosuch"); }, "'nosuch' is not an op"},
      {[](nlohmann::json& j) { j["groups"][2]["ops"].push_back(j["groups"][0]["ops"][0]); }, "is placed twice"},
      {[](nlohmann::json& j) { j["groups"].erase(j["groups"].size() - 1); }, "is in no group"},
      {[](nlohmann::json& j) { j["groups"][0]["ops"].push_back("loss"); }, "'loss' is the loss"},
      {[](nlohmann::json& j) { std::swap(j["groups"][0], j["groups"][1]); }, "expected groups in dependency order"},
      {[](nlohmann::json& j) { j["model"]["batch"] = -3; }, "model.batch: -3; expected a positive integer"},
      {[](nlohmann::json& j) { j["model"]["args"]["hidden"] = "wide"; }, "model.args.hidden: \"wide\"; expected a number"},
      {[](nlohmann::json& j) { j["solver"]["gap"] = 2; }, "solver.gap: 2; expected finite fraction in [0, 1]"},
      {[](nlohmann::json& j) { j["edges"][0] = {3, 1, 5}; }, "edges[0]: [3,1,5]"},
      {[](nlohmann::json& j) { j["edges"][0][3] = -2; }, "expected [from, to, bytes, transfer_s]"},
      {[](nlohmann::json& j) { j["edges"][0].erase(3); }, "expected [from, to, bytes, transfer_s]"},  // no transfer_s
      {[](nlohmann::json& j) { j["model"]["batch"] = 0; }, "model.batch: 0; expected a positive integer"},
      {[](nlohmann::json& j) { j["cluster"]["device_flops"] = {1, 2}; }, "cluster.device_flops: 2 numbers; expected 4 FLOP/s, one per device"},
      {[](nlohmann::json& j) { j["groups"][0]["start_s"] = -1; }, "groups[0].start_s: -1"},
      // Only the methods `place` computes; no unknown fields; the edges the groups imply.
      {[](nlohmann::json& j) { j["method"] = "magic"; }, "method: \"magic\"; expected one of single, even, speed, heft, milp"},
      {[](nlohmann::json& j) { j["methods"][0]["method"] = "milpp"; }, "methods[0].method: \"milpp\"; did you mean 'milp'?"},
      {[](nlohmann::json& j) { j["predicted_latency"] = 1; }, "unknown field 'predicted_latency'; did you mean 'predicted_latency_s'?"},
      {[](nlohmann::json& j) { j["groups"][0]["devise"] = "fast0"; }, "groups[0]: unknown field 'devise'; did you mean 'device'?"},
      {[](nlohmann::json& j) { j["solver"]["gapp"] = 0; }, "solver: unknown field 'gapp'; did you mean 'gap'?"},
      {[](nlohmann::json& j) { j.erase("edges"); }, "edges: missing; expected an array of [from, to, bytes, transfer_s]"},
      {[](nlohmann::json& j) { j["edges"] = nlohmann::json::array(); }, "field 'edges': no edge ["},
      {[](nlohmann::json& j) { j["edges"][0][2] = j["edges"][0][2].get<double>() + 4; }, "bytes; expected "},
      {[](nlohmann::json& j) { j["edges"].push_back(j["edges"][0]); }, "lists the pair a second time"},
      {[](nlohmann::json& j) { j["model"]["batch"] = 1099511627776; }, "at batch 1099511627776)"},
      {[](nlohmann::json& j) { j["groups"][0]["ops"] = 5; }, "groups[0].ops: 5; expected a non-empty array of op names"},
      {[](nlohmann::json& j) { j["cluster"]["fingerprint"] = "zz"; }, "cluster.fingerprint: \"zz\"; expected 16 hex digits"},
  };
  for (size_t k = 0; k < cases.size(); ++k) {
    nlohmann::json j = good;
    cases[k].edit(j);
    const std::string bad = Tmp("bad_placement_" + std::to_string(k) + ".json");
    Write(bad, j);
    ExpectError("place --check " + bad, "placement '" + bad + "': ");
    ExpectError("place --check " + bad, cases[k].needle);
  }
  const std::string garbage = Tmp("garbage_placement.json");
  std::ofstream(garbage) << "{ not json";
  ExpectError("place --check " + garbage, "placement '" + garbage + "': is not valid JSON (line 1, column ");
  const std::string empty = Tmp("empty_placement.json");
  std::ofstream(empty).flush();
  ExpectError("place --check " + empty, "placement '" + empty + "': is empty; expected a JSON object");
  ExpectError("place --check " + ::testing::TempDir(), "': is a directory; expected a placement file");
}

TEST(Infer, PlacementsOnThreadRanksEqualTheOneDeviceForward) {
  for (const char* model : {"gpt", "moe", "vgg19"}) {
    const std::string out = Tmp(std::string("infer_") + model + ".json");
    // An even pipeline spreads the groups over all four devices: every edge between stages is a transfer.
    const Result placed = Hetsynth(std::string("place --model ") + model + " --small --cluster " + Cluster("mixed-4") +
                                   " --method even -o " + out);
    ASSERT_EQ(placed.code, 0) << placed.output;
    const Result r = Hetsynth("infer --placement " + out + " --requests 3");
    EXPECT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("on 4 thread ranks, 3 requests: outputs equal the one-device forward"), std::string::npos)
        << r.output;
    EXPECT_EQ(r.output.find(" 0 point-to-point transfers"), std::string::npos) << r.output;
  }
  ExpectError("infer --placement /nonexistent/p.json", "/nonexistent/p.json");
  ExpectError("infer --placement " + Tmp("infer_gpt.json") + " --requests 0", "--requests");
  const std::string bad = Tmp("infer_bad.json");
  nlohmann::json j = Read(Tmp("infer_gpt.json"));
  j["groups"][0]["device"] = "nowhere";
  Write(bad, j);
  ExpectError("infer --placement " + bad, "groups[0].device: 'nowhere' is not in cluster.devices");
  // Emulated: paced ranks and delayed messages still give the one-device outputs.
  const Result e = Hetsynth("infer --placement " + Tmp("infer_gpt.json") + " --requests 2 --emulate --dilation 2");
  EXPECT_EQ(e.code, 0) << e.output;
  EXPECT_NE(e.output.find("outputs equal the one-device forward"), std::string::npos) << e.output;
  EXPECT_NE(e.output.find("emulated cluster 'mixed-4' (dilation K=2"), std::string::npos) << e.output;
  ExpectError("infer --placement " + Tmp("infer_gpt.json") + " --emulate --dilation 0.5", "--dilation: '0.5'; expected a number from 1 to 1e6");
  nlohmann::json nf = Read(Tmp("infer_gpt.json"));
  nf["cluster"].erase("device_flops");
  Write(bad, nf);
  ExpectError("infer --placement " + bad + " --emulate", "no cluster.device_flops; --emulate needs them");
  // Figures that would pace or delay for years are refused before anything runs.
  nlohmann::json slow = Read(Tmp("infer_gpt.json"));
  for (auto& e : slow["edges"]) e[3] = 1e9;
  Write(bad, slow);
  ExpectError("infer --placement " + bad + " --emulate", "--emulate would take about");
  slow = Read(Tmp("infer_gpt.json"));
  slow["cluster"]["device_flops"][1] = 1e-300;
  Write(bad, slow);
  ExpectError("infer --placement " + bad + " --emulate", "times slower than the fastest; --emulate paces to at most a million");
  // GPU ranks: paced emulation is for CPU ranks; without a GPU, one line saying why.
  ExpectError("infer --placement " + Tmp("infer_gpt.json") + " --backend cuda --emulate", "--emulate paces CPU ranks");
  ExpectError("infer --placement " + Tmp("infer_gpt.json") + " --backend tpu", "--backend tpu; expected cpu or cuda");
  const Result gpu = Hetsynth("infer --placement " + Tmp("infer_gpt.json") + " --backend cuda");
  if (gpu.output.find("no GPU") != std::string::npos) {
    ExpectError("infer --placement " + Tmp("infer_gpt.json") + " --backend cuda", "--backend cuda: no GPU: ");
  } else {
    EXPECT_EQ(gpu.code, 0) << gpu.output;
    EXPECT_NE(gpu.output.find("outputs equal the one-device forward on a GPU"), std::string::npos) << gpu.output;
  }
}

TEST(BenchInference, EveryMethodPredictedMeasuredAndCheckedInOneRun) {
  const std::string dir = Tmp("bench_inference");
  const Result r = Hetsynth("bench --inference --model gpt --small --cluster " + Cluster("mixed-4") +
                            " --requests 2 --dilation 2 --time-limit 20 --out " + dir);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("| method | devices used | predicted | measured | error |"), std::string::npos) << r.output;
  const nlohmann::json j = Read(dir + "/results.json");
  EXPECT_EQ(j["format"], "hetsynth-bench-inference");
  EXPECT_FALSE(j["simulated"].get<bool>());
  ASSERT_EQ(j["methods"].size(), 5u);
  const char* methods[] = {"single", "even", "speed", "heft", "milp"};
  for (size_t k = 0; k < 5; ++k) {
    const nlohmann::json& m = j["methods"][k];
    EXPECT_EQ(m["method"], methods[k]);
    ASSERT_TRUE(m["feasible"].get<bool>()) << m.dump();
    EXPECT_GT(m["predicted_s"].get<double>(), 0) << m.dump();
    EXPECT_GT(m["measured_s"].get<double>(), 0) << m.dump();
    EXPECT_EQ(m["dilation"].get<double>(), 2) << m.dump();
    EXPECT_LE(m["max_abs_diff_vs_one_device"].get<double>(), 1e-5) << m.dump();
    // Each method's placement file is written and checks against its cluster.
    const std::string file = dir + "/" + m["placement_file"].get<std::string>();
    const Result c = Hetsynth("place --check " + file + " --cluster " + Cluster("mixed-4"));
    EXPECT_EQ(c.code, 0) << c.output;
  }
  // --simulate: predictions only.
  const std::string sim = Tmp("bench_inference_sim");
  const Result s = Hetsynth("bench --inference --model vit --small --cluster " + Cluster("reference-64") +
                            " --simulate --time-limit 20 --out " + sim);
  ASSERT_EQ(s.code, 0) << s.output;
  const nlohmann::json js = Read(sim + "/results.json");
  EXPECT_TRUE(js["simulated"].get<bool>());
  for (const nlohmann::json& m : js["methods"]) EXPECT_FALSE(m.contains("measured_s")) << m.dump();
  // Training-plan flags are refused with --inference, and --requests without it.
  ExpectError("bench --inference --model gpt --small --cluster " + Cluster("mixed-4") + " --steps 3 --out " + dir,
              "--steps is for training plans");
  ExpectError("bench --model gpt --small --cluster " + Cluster("mixed-4") + " --requests 3 --out " + dir,
              "--requests is for --inference");
  ExpectError("bench --inference --model gpt --small --cluster " + Cluster("mixed-4") + " --dilation 0.5 --out " + dir,
              "--dilation: '0.5'; expected a number from 1 to 1e6");
}

}  // namespace
