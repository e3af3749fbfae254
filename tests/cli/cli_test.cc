// The hetsynth binary end to end: exit codes and one-line messages for bad input.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
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

TEST(Cli, ModelsListsTheZoo) {
  const Result r = Hetsynth("models");
  EXPECT_EQ(r.code, 0);
  for (const char* m : {"mlp", "gpt", "vit", "vgg19", "moe"}) {
    EXPECT_NE(r.output.find(std::string(m) + "  —"), std::string::npos) << m;
  }
  const Result one = Hetsynth("models gpt --small");
  EXPECT_EQ(one.code, 0);
  EXPECT_NE(one.output.find("layers.1.mlp.fc2.weight"), std::string::npos);
  EXPECT_NE(one.output.find("tokens"), std::string::npos);
}

TEST(Cli, UnknownModelListsTheKnownOnes) {
  ExpectError("train --model nosuch --steps 1", "unknown model 'nosuch'; known models: mlp, gpt, vit, vgg19, moe");
  ExpectError("models nosuch", "known models: mlp, gpt, vit, vgg19, moe");
}

TEST(Cli, GraphFilesWorkWhereverAModelIsNamed) {
  const std::string g = Tmp("cli_graph.json");
  ASSERT_EQ(Hetsynth("models --model mlp --small --graph-out " + g).code, 0);
  const auto r = Hetsynth("train --model " + g + " --steps 2 --quiet");
  EXPECT_EQ(r.code, 0) << r.output;
  const std::string plan = Tmp("cli_graph_plan.json");
  const std::string cluster = std::string(HETSYNTH_SOURCE_DIR) + "/examples/clusters/mixed-4.json";
  ASSERT_EQ(Hetsynth("synth --model " + g + " --cluster " + cluster + " --flat --no-overlap -o " + plan).code, 0);
  EXPECT_EQ(Hetsynth("train --plan " + plan + " --steps 1 --quiet").code, 0);
  EXPECT_EQ(Hetsynth("explain " + plan).code, 0);
  ExpectError("train --model " + g + " --steps 1 --batch 3", "graph files have fixed shapes");
  ExpectError("train --model " + g + " --steps 1 --model-arg hidden=4", "takes no hyperparameters");
  ExpectError("train --model /nonexistent/m.onnx --steps 1", "/nonexistent/m.onnx");
  // A plan refuses a graph file that changed since.
  ASSERT_EQ(Hetsynth("models --model mlp --small --batch 4 --graph-out " + g).code, 0);
  ExpectError("train --plan " + plan + " --steps 1", "has changed");
}

TEST(Cli, BadFlagsAndHyperparameters) {
  ExpectError("train --model gpt --small --steps 1 --model-arg depth=3", "no hyperparameter 'depth'");
  ExpectError("train --model gpt --small --steps 1 --model-arg heads=5", "heads=5 does not divide hidden=32");
  ExpectError("train --model gpt --small", "--steps is required");
  ExpectError("train --model gpt --small --steps 1 --frobnicate", "frobnicate");
  ExpectError("train --model gpt --small --steps 1 --optimizer rmsprop", "expected sgd or adam");
  ExpectError("train --model gpt --small --steps 1 --lr -1", "--lr -1; expected a positive number");
  ExpectError("frob", "frob");
}

TEST(Cli, ElasticRefusesBadFlagsAndRequests) {
  const std::string c = std::string(HETSYNTH_SOURCE_DIR) + "/examples/clusters/mixed-4.json";
  const std::string base = "train --elastic --model gpt --small --steps 2 --quiet --cluster " + c;
  ExpectError("train --elastic --model gpt --small --steps 2", "--elastic needs --cluster FILE");
  ExpectError(base + " --workers slurm", "--workers slurm; expected threads or mpi");
  ExpectError(base + " --snapshot-every 0", "--snapshot-every '0'; expected an integer >= 1 or auto");
  ExpectError(base + " --members fast0,gpu9", "--members: device 'gpu9' is not in cluster");
  ExpectError(base + " --ranks 2", "--ranks does not apply to --elastic");
  const std::string dir = Tmp("cli_elastic_run");
  ExpectError("elastic join --dir " + dir + "-none half0", "no elastic run there");
  // A finished run leaves its agent file: requests are checked against its cluster and members.
  ASSERT_EQ(Hetsynth(base + " --members fast0,fast1 --elastic-dir " + dir).code, 0);
  ExpectError("elastic join --dir " + dir + " gpu9", "device 'gpu9' is not in cluster file");
  ExpectError("elastic join --dir " + dir + " fast1", "device 'fast1' is already a member (fast0, fast1)");
  ExpectError("elastic leave --dir " + dir + " half0", "device 'half0' is not a member");
  ExpectError("elastic join --dir " + dir + " half0 --at-step -1", "--at-step");
}

TEST(Cli, BadFilesAreNamed) {
  ExpectError("train --model mlp --small --steps 1 --data /nonexistent/d.safetensors", "/nonexistent/d.safetensors");
  ExpectError("train --model mlp --small --steps 1 --load /nonexistent/c.safetensors", "/nonexistent/c.safetensors");
  const std::string garbage = Tmp("garbage.safetensors");
  std::ofstream(garbage) << "this is not a safetensors file";
  ExpectError("train --model mlp --small --steps 1 --load " + garbage, "garbage.safetensors");
  const std::string mlp = Tmp("cli_mlp.safetensors");
  ASSERT_EQ(Hetsynth("train --model mlp --small --steps 1 --quiet --save " + mlp).code, 0);
  ExpectError("train --model gpt --small --steps 1 --load " + mlp, "names model mlp but the model is 'gpt(");
  ExpectError("train --model mlp --small --steps 1 --data " + mlp, "no tensor 'labels'");
}

// Outputs never replace an input, a symbolic link or a device node, and a failed write is an error.
TEST(Cli, OutputsNeverDestroyInputsOrSpecialFiles) {
  const std::string ck = Tmp("own_input.safetensors");
  ASSERT_EQ(Hetsynth("train --model mlp --small --steps 1 --quiet --save " + ck).code, 0);
  std::ifstream before(ck, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(before)), std::istreambuf_iterator<char>());
  ExpectError("train --model mlp --small --steps 1 --load " + ck + " --metrics " + ck, "is the file of --load");
  ExpectError("train --plan x.json --steps 1 --load " + ck + " --trace " + ck, "is the file of --load");
  ExpectError("train --model mlp --small --steps 1 --data " + ck + " --save " + ck, "is the file of --data");
  ExpectError("train --model mlp --small --steps 1 --save " + Tmp("o.safetensors") + " --metrics " + Tmp("./o.safetensors"),
              "is also the file of --save");
  std::ifstream after(ck, std::ios::binary);
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(after)), std::istreambuf_iterator<char>()), bytes);
  // Resuming and saving back to the same checkpoint is the usual loop.
  EXPECT_EQ(Hetsynth("train --model mlp --small --steps 1 --quiet --load " + ck + " --save " + ck).code, 0);

  const std::string cluster = Tmp("own_cluster.json");
  std::ofstream(cluster) << std::ifstream(HETSYNTH_SOURCE_DIR "/examples/clusters/mixed-4.json").rdbuf();
  ExpectError("synth --model mlp --small --cluster " + cluster + " -o " + cluster, "is the file of --cluster");
  EXPECT_EQ(Hetsynth("check " + cluster).code, 2);  // still the cluster, not a plan
  ExpectError("train --model mlp --small --steps 1 --save /dev/null", "'/dev/null' is a character device");
  const std::string link = Tmp("link.safetensors");
  std::remove(link.c_str());
  ASSERT_EQ(symlink(ck.c_str(), link.c_str()), 0);
  ExpectError("train --model mlp --small --steps 1 --save " + link, "is a symbolic link");
  ExpectError("synth --model mlp --small --cluster " + cluster + " -o /dev/stdout", "is a symbolic link");
  // A FIFO would block the reader forever.
  const std::string fifo = Tmp("plan.fifo");
  std::remove(fifo.c_str());
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  ExpectError("check " + fifo, "is not a regular file");
  ExpectError("infer --placement " + fifo, "is not a regular file");
  ExpectError("train --model mlp --small --steps 1 --save " + fifo, "is a FIFO");
  // Where no file can be made (/proc, whatever access() says), before the solve, not after.
  ExpectError("synth --model mlp --small --cluster " + cluster + " -o /proc/hetsynth-never.json",
              "cannot create a file in directory '/proc'");
  ExpectError("place --model mlp --small --cluster " + cluster + " -o /proc/hetsynth-never.json",
              "cannot create a file in directory '/proc'");
  // A stream may be a device; a failed write stops the run with the step it failed at.
  EXPECT_EQ(Hetsynth("train --model mlp --small --steps 1 --quiet --metrics /dev/null").code, 0);
  ExpectError("train --model mlp --small --steps 2 --quiet --metrics /dev/full", "write failed at step 1");
}

// A write that fails part-way (here a file-size limit; a full disk alike) is an error naming the
// file, and leaves neither a partial output nor a temporary beside it.
TEST(Cli, FailedWritesLeaveNoPartialFiles) {
  const std::string dir = Tmp("limited");
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  auto limited = [&](const std::string& args) {
    // SIGXFSZ ignored, so the write past the limit fails with EFBIG instead of killing the process.
    const std::string cmd = "trap '' XFSZ; ulimit -f 2; exec " HETSYNTH_BIN " " + args + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    std::string out;
    char buf[4096];
    for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
    const int status = pclose(p);
    return Result{WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
  };
  const std::string cluster = HETSYNTH_SOURCE_DIR "/examples/clusters/mixed-4.json";
  Result r = limited("synth --model gpt --small --cluster " + cluster + " -o " + dir + "/plan.json");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("hetsynth: error: cannot write '" + dir + "/plan.json' (File too large)"), std::string::npos)
      << r.output;
  r = limited("bench --model gpt --small --cluster " + cluster + " --simulate --out " + dir + "/bench");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("hetsynth: error: cannot write '" + dir + "/bench/"), std::string::npos) << r.output;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    EXPECT_FALSE(e.path().string().ends_with(".tmp")) << e.path();
  }
  EXPECT_FALSE(std::filesystem::exists(dir + "/plan.json"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/bench/results.json"));
}

// Messages that name the real cause (found by the plan parity review).
TEST(Cli, MessagesNameTheRealCause) {
  const std::string one = Tmp("one_device.json");
  std::ofstream(one) << R"({"format": "hetsynth-cluster", "version": 1, "name": "one", "nodes": [{"name": "n0"}],
 "devices": [{"name": "g0", "type": "custom", "node": "n0", "flops": 4e10, "memory_bytes": 17179869184, "memory_bandwidth": 2e10}],
 "links": {"intra_node": {"bandwidth": 1e10, "latency": 2e-6}, "inter_node": {"bandwidth": 1e10, "latency": 2e-6}}})";
  for (const char* b : {"fsdp-even", "zero-even"}) {
    ExpectError(std::string("synth --model mlp --small --cluster ") + one + " --baseline " + b + " -o " + Tmp("never.json"),
                "shards every parameter across the devices (ZeRO) and needs at least 2; cluster 'one' has 1");
  }
  ExpectError("synth --model gpt --small --batch 1 --cluster " HETSYNTH_SOURCE_DIR "/examples/clusters/two-node-mixed.json "
              "--baseline megatron -o " + Tmp("never.json"),
              "use a batch of at least 2");
  // check --cluster: a plan made without memory limits that does not fit is not "valid".
  const std::string tight = Tmp("tight.json");
  std::ofstream(tight) << R"({"format": "hetsynth-cluster", "version": 1, "name": "tight", "nodes": [{"name": "n0"}], "devices": [
 {"name": "d0", "type": "custom", "node": "n0", "flops": 4e10, "memory_bytes": 200000, "memory_bandwidth": 2e10},
 {"name": "d1", "type": "custom", "node": "n0", "flops": 2e10, "memory_bytes": 170000, "memory_bandwidth": 2e10}],
 "links": {"intra_node": {"bandwidth": 1e10, "latency": 2e-6}, "inter_node": {"bandwidth": 1e10, "latency": 2e-6}}})";
  const std::string plan = Tmp("over_capacity.json");
  ASSERT_EQ(Hetsynth("synth --model moe --small --cluster " + tight + " --no-memory-limits -o " + plan).code, 0);
  ExpectError("check " + plan + " --cluster " + tight, "over its capacity");
  const Result explained = Hetsynth("explain " + plan);
  EXPECT_NE(explained.output.find("over capacity"), std::string::npos) << explained.output;
  EXPECT_NE(explained.output.find(" KiB"), std::string::npos) << explained.output;  // not 0.00 GB
  const Result zero = Hetsynth("train --model mlp --small --steps 0 --quiet");
  EXPECT_EQ(zero.code, 0) << zero.output;
  EXPECT_NE(zero.output.find("no steps run"), std::string::npos) << zero.output;
  EXPECT_EQ(zero.output.find("nan"), std::string::npos) << zero.output;
}

TEST(Cli, TrainWritesMetricsAndResumes) {
  const std::string metrics = Tmp("m.jsonl"), ckpt = Tmp("cli_gpt.safetensors");
  const Result r = Hetsynth("train --model gpt --small --steps 3 --metrics " + metrics + " --save " + ckpt);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("loss"), std::string::npos);
  std::ifstream in(metrics);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    EXPECT_EQ(j.at("step").get<int>(), ++n);
    EXPECT_GT(j.at("loss").get<double>(), 0);
    EXPECT_GE(j.at("step_time_s").get<double>(), 0);
  }
  EXPECT_EQ(n, 3);
  const Result resumed = Hetsynth("train --model gpt --small --steps 2 --metrics " + metrics + " --load " + ckpt);
  ASSERT_EQ(resumed.code, 0) << resumed.output;
  std::ifstream in2(metrics);
  std::getline(in2, line);
  EXPECT_EQ(nlohmann::json::parse(line).at("step").get<int>(), 4);  // continues the step count
}

}  // namespace

namespace {

const std::string kMixed4 = std::string(HETSYNTH_SOURCE_DIR) + "/examples/clusters/mixed-4.json";

TEST(CliPlans, SynthWritesAPlanThatChecksAndExplains) {
  const std::string plan = Tmp("mlp-plan.json");
  const Result r = Hetsynth("synth --model mlp --small --cluster " + kMixed4 + " -o " + plan);
  ASSERT_EQ(r.code, 0) << r.output;
  for (const char* row : {"synthesized", "ddp-ev", "ddp-cp", "fsdp-even", "hap", "dp-ev", "dp-cp", "tp-even",
                          "zero-even", "exposed", "vs hap"}) {
    EXPECT_NE(r.output.find(row), std::string::npos) << row;
  }
  const Result check = Hetsynth("check " + plan + " --cluster " + kMixed4);
  EXPECT_EQ(check.code, 0) << check.output;
  EXPECT_NE(check.output.find("is valid"), std::string::npos);
  const Result explain = Hetsynth("explain " + plan);
  EXPECT_EQ(explain.code, 0) << explain.output;
  EXPECT_NE(explain.output.find("memory per device"), std::string::npos);
  EXPECT_NE(explain.output.find("→"), std::string::npos);
  EXPECT_NE(explain.output.find("exposed"), std::string::npos) << explain.output;
  EXPECT_NE(explain.output.find("mesh: one node"), std::string::npos) << explain.output;
}

TEST(CliPlans, ExplainShowsImplementationsLevelsBucketsAndTheMesh) {
  // Two nodes: the plan records them; DDP's gradients go in buckets with an implementation.
  const std::string cluster = std::string(HETSYNTH_SOURCE_DIR) + "/examples/clusters/two-node-mixed.json";
  const std::string plan = Tmp("mlp-ddp.json");
  const Result r = Hetsynth("synth --model mlp --small --cluster " + cluster + " --baseline ddp-ev -o " + plan);
  ASSERT_EQ(r.code, 0) << r.output;
  const Result explain = Hetsynth("explain " + plan);
  ASSERT_EQ(explain.code, 0) << explain.output;
  EXPECT_NE(explain.output.find("mesh: two-level with 2 nodes of 2/4 devices"), std::string::npos) << explain.output;
  EXPECT_NE(explain.output.find("gradient buckets"), std::string::npos) << explain.output;
  EXPECT_NE(explain.output.find("of which"), std::string::npos) << explain.output;  // exposed communication
  const bool impl = explain.output.find("  ring  ") != std::string::npos ||
                    explain.output.find("  hierarchical  ") != std::string::npos;
  EXPECT_TRUE(impl) << explain.output;
  // A flat, non-overlapped plan lists one all-reduce per gradient and world-level collectives.
  const std::string flat = Tmp("mlp-flat.json");
  ASSERT_EQ(Hetsynth("synth --model mlp --small --cluster " + cluster + " --flat --no-overlap -o " + flat).code, 0);
  const Result e2 = Hetsynth("explain " + flat);
  EXPECT_NE(e2.output.find("no overlap"), std::string::npos) << e2.output;
  EXPECT_EQ(e2.output.find("hierarchical"), std::string::npos) << e2.output;
  // A plan of an unknown format version is refused with one line.
  std::ifstream in(flat);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  text.replace(text.find("\"version\": 3"), 12, "\"version\": 9");
  std::ofstream(Tmp("v9.json")) << text;
  ExpectError("explain " + Tmp("v9.json"), "field 'version': 9; expected 1, 2 or 3 (a newer plan needs a newer hetsynth)");
}

TEST(CliPlans, CheckRejectsAHandCorruptedPlan) {
  const std::string plan = Tmp("mlp-plan2.json");
  ASSERT_EQ(Hetsynth("synth --model mlp --small --cluster " + kMixed4 + " -o " + plan).code, 0);
  std::ifstream in(plan);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Drop the first compute instruction's output property: its triple no longer matches.
  nlohmann::json j = nlohmann::json::parse(text);
  for (auto& ins : j["program"]) {
    if (ins["op"] == "compute") {
      ins["rule"] = "replicated";
      break;
    }
  }
  const std::string bad = Tmp("corrupt-plan.json");
  std::ofstream(bad) << j.dump(1);
  ExpectError("check " + bad, "corrupt-plan.json");
  ExpectError("check " + plan + " --cluster " + std::string(HETSYNTH_SOURCE_DIR) + "/examples/clusters/homogeneous-8.json",
              "was made for cluster 'mixed-4'");
  std::ofstream(Tmp("garbage-plan.json")) << "{\"format\": \"hetsynth-plan\", \"version\": 1, \"model\": 3}";
  ExpectError("check " + Tmp("garbage-plan.json"), "model");
  // With --cluster, the plan's mesh must be the cluster's nodes: mixed-4 is one node.
  nlohmann::json meshed = nlohmann::json::parse(text);
  meshed["mesh"] = {{"nodes", {{0, 1}, {2, 3}}}};
  std::ofstream(Tmp("meshed-plan.json")) << meshed.dump(1);
  ExpectError("check " + Tmp("meshed-plan.json") + " --cluster " + kMixed4,
              "plan '" + Tmp("meshed-plan.json") + "': mesh.nodes: [[0,1],[2,3]]; expected none (one node), the nodes of '" +
                  kMixed4 + "'");
  // Empty, truncated and directory plans each say which.
  std::ofstream(Tmp("empty-plan.json")).flush();
  ExpectError("check " + Tmp("empty-plan.json"), "plan '" + Tmp("empty-plan.json") + "': is empty; expected a JSON object");
  std::ofstream(Tmp("truncated-plan.json")) << text.substr(0, text.size() / 3);
  ExpectError("check " + Tmp("truncated-plan.json"), "plan '" + Tmp("truncated-plan.json") + "': is not valid JSON (line ");
  ExpectError("check " + ::testing::TempDir(), "': is a directory; expected a plan file");
}

TEST(Cli, AGraphWhoseWeightsFileIsMissingNamesTheGraphAndItsField) {
  const std::string g = Tmp("cli_graph_weights.json");
  ASSERT_EQ(Hetsynth("models --model mlp --small --graph-out " + g).code, 0);
  std::ifstream in(g);
  nlohmann::json j = nlohmann::json::parse(in);
  j["weights"] = "nope.safetensors";
  std::ofstream(g) << j.dump(1);
  ExpectError("train --model " + g + " --steps 1", "graph '" + g + "': weights: '" + ::testing::TempDir());
  ExpectError("train --model " + g + " --steps 1", "nope.safetensors' cannot be opened (No such file or directory)");
}

TEST(CliPlans, BadClusterAndInfeasibleProblemsExitTwo) {
  std::ofstream(Tmp("bad-cluster.json")) << "{\"format\": \"hetsynth-cluster\", \"version\": 1}";
  ExpectError("synth --model mlp --small --cluster " + Tmp("bad-cluster.json") + " -o " + Tmp("x.json"), "bad-cluster.json");
  ExpectError("synth --model mlp --small --cluster " + kMixed4 + " -o " + Tmp("x.json") + " --baseline nosuch",
              "unknown strategy 'nosuch'");
  // A default-size gpt replica (~3 GB with Adam and activations) cannot fit quarter0's 1 GiB.
  ExpectError("synth --model gpt --cluster " + kMixed4 + " -o " + Tmp("x.json") + " --baseline dp-ev",
              "device 'quarter0' needs");
}

}  // namespace
