#include <gtest/gtest.h>

#include <functional>
#include <set>

#include <nlohmann/json.hpp>

#include "hetsynth/instr/local_compute.h"
#include "hetsynth/instr/program.h"
#include "hetsynth/instr/rules.h"
#include "hetsynth/ir/models.h"
#include "hetsynth/ir/op_table.h"
#include "ir/op_samples.h"

namespace hetsynth::instr {
namespace {

using ir::ValueId;

// x[8,4] -> fc1 (6) -> relu -> head (3) -> cross-entropy
ir::Graph Tiny() {
  ir::Builder b("tiny");
  const ValueId x = b.Input("x", {8, 4});
  const ValueId labels = b.Input("labels", {8});
  const ValueId w1 = b.Parameter("fc1.weight", {6, 4}, ir::Init::Normal(0.1));
  const ValueId b1 = b.Parameter("fc1.bias", {6}, ir::Init::Zeros());
  const ValueId w2 = b.Parameter("head.weight", {3, 6}, ir::Init::Normal(0.1));
  const ValueId b2 = b.Parameter("head.bias", {3}, ir::Init::Zeros());
  const ValueId h = b.Relu("relu", b.Linear("fc1", x, w1, b1));
  b.SetLoss(b.Op("loss", ir::OpKind::kCrossEntropy, {b.Linear("head", h, w2, b2), labels}));
  return *std::move(b).Finish();
}

Instruction Place(const ir::Graph& g, const std::string& t, int dim = -1) {
  Instruction in;
  in.kind = g.value(g.Find(t)).kind == ir::ValueKind::kInput ? InstrKind::kPlaceInput : InstrKind::kPlaceParameter;
  in.tensor = g.Find(t);
  in.dim = dim;
  EXPECT_TRUE(DeriveTriple(g, in).ok());
  return in;
}

Instruction Compute(const ir::Graph& g, const std::string& node, RuleId rule) {
  Instruction in;
  in.kind = InstrKind::kCompute;
  in.node = g.value(g.Find(node)).producer;
  in.rule = rule;
  const absl::Status st = DeriveTriple(g, in);
  EXPECT_TRUE(st.ok()) << st;
  return in;
}

Instruction Collective(const ir::Graph& g, InstrKind kind, const std::string& t, int dim = -1) {
  Instruction in;
  in.kind = kind;
  in.tensor = g.Find(t);
  in.dim = dim;
  in.impl = kind == InstrKind::kAllReduce ? CollImpl::kRing
            : kind == InstrKind::kAllGather || kind == InstrKind::kReduceScatter ? CollImpl::kGrouped
                                                                                  : CollImpl::kNone;
  EXPECT_TRUE(DeriveTriple(g, in).ok());
  return in;
}

Program DataParallel(const ir::Graph& g, std::vector<double> ratios) {
  Program p;
  p.num_devices = static_cast<int>(ratios.size());
  p.ratios = {std::move(ratios)};
  p.instructions = {Place(g, "x", 0), Place(g, "labels", 0), Place(g, "fc1.weight"), Place(g, "fc1.bias"),
                    Place(g, "head.weight"), Place(g, "head.bias"), Compute(g, "fc1", "batch0"),
                    Compute(g, "relu", "split0"), Compute(g, "head", "batch0"), Compute(g, "loss", "batch0")};
  EXPECT_TRUE(BuildSplitGroups(g, p).ok());
  return p;
}

TEST(Rules, LinearHasReplicatedBatchColumnAndRowSplits) {
  const ir::Graph g = Tiny();
  std::vector<std::string> names;
  for (const ComputeRule& r : ShardingRules(g, g.value(g.Find("fc1")).producer)) names.push_back(RuleName(r.id));
  EXPECT_EQ(names, (std::vector<std::string>{"replicated", "batch0", "column", "row"}));
  const ComputeRule row = ShardingRules(g, g.value(g.Find("head")).producer)[3];
  EXPECT_EQ(PropertyString(g, row.post), "Reduce(head)");
  EXPECT_TRUE(row.bias_once);
  EXPECT_EQ(PropertyString(g, row.pre[0]), "Gather(relu, 1)");
}

TEST(Rules, AttentionHeadSplitCutsWholeHeads) {
  const ir::Graph g = *ir::BuildModel(*ir::MakeModelSpec("gpt", {}, 0, ir::Preset::kSmall));
  for (const ComputeRule& r : ShardingRules(g, g.value(g.Find("layers.0.attn")).producer)) {
    if (r.id != RuleId(RuleFamily::kHeads)) continue;
    ASSERT_EQ(r.split.size(), 4u);
    for (const SplitUse& u : r.split) EXPECT_EQ(u.max_atoms, 4);  // 4 heads of the small gpt
    return;
  }
  FAIL() << "no heads rule";
}

TEST(Rules, EveryNodeOfEveryModelHasTheReplicatedRuleFirst) {
  for (const ir::ModelInfo& m : ir::Models()) {
    const ir::Graph g = *ir::BuildModel(*ir::MakeModelSpec(m.name, {}, 0, ir::Preset::kSmall));
    for (size_t n = 0; n < g.nodes().size(); ++n) {
      const auto rules = ShardingRules(g, static_cast<ir::NodeId>(n));
      ASSERT_FALSE(rules.empty());
      EXPECT_EQ(rules[0].id, RuleId(RuleFamily::kReplicated));
      std::set<RuleId> ids;
      for (const ComputeRule& r : rules) {
        EXPECT_EQ(r.pre.size(), g.node(static_cast<ir::NodeId>(n)).inputs.size());
        EXPECT_TRUE(ids.insert(r.id).second) << "two rules " << r.id << " of " << g.node(static_cast<ir::NodeId>(n)).name;
        RuleId back;
        EXPECT_TRUE(ParseRuleName(RuleName(r.id), &back) && back == r.id) << r.id;
      }
    }
  }
}

TEST(RoundShares, SumsExactlyWithLargestRemainderAndLowIndexTies) {
  EXPECT_EQ(RoundShares({0.5, 0.3, 0.2}, 7), (std::vector<int64_t>{4, 2, 1}));
  EXPECT_EQ(RoundShares({1.0 / 3, 1.0 / 3, 1.0 / 3}, 4), (std::vector<int64_t>{2, 1, 1}));
  EXPECT_EQ(RoundShares({0.9, 0.1, 0.0}, 2), (std::vector<int64_t>{2, 0, 0}));
  EXPECT_EQ(RoundShares({0.25, 0.25, 0.25, 0.25}, 0), (std::vector<int64_t>{0, 0, 0, 0}));
}

TEST(Program, DataParallelChecksAndSplitsTheBatchByRatio) {
  const ir::Graph g = Tiny();
  const Program p = DataParallel(g, {0.5, 0.25, 0.25});
  const absl::Status st = CheckProgram(g, p);
  ASSERT_TRUE(st.ok()) << st;
  ASSERT_EQ(p.groups.size(), 1u);  // x, labels, fc1, relu, head: one batch split
  EXPECT_EQ(p.groups[0].atoms, 8);
  EXPECT_EQ(p.ShardLengths(g, Property::Gather(g.Find("relu"), 0)), (std::vector<int64_t>{4, 2, 2}));
}

TEST(Program, MegatronColumnThenRowReachesTheGoalWithOneAllReduce) {
  const ir::Graph g = Tiny();
  Program p;
  p.num_devices = 2;
  p.ratios = {{0.5, 0.5}};
  p.instructions = {Place(g, "x"), Place(g, "labels"), Place(g, "fc1.weight", 0), Place(g, "fc1.bias", 0),
                    Place(g, "head.weight", 1), Place(g, "head.bias"), Compute(g, "fc1", "column"),
                    Compute(g, "relu", "split1"), Compute(g, "head", "row"),
                    Collective(g, InstrKind::kAllReduce, "head"), Compute(g, "loss", "replicated")};
  ASSERT_TRUE(BuildSplitGroups(g, p).ok());
  const absl::Status st = CheckProgram(g, p);
  ASSERT_TRUE(st.ok()) << st;
  ASSERT_EQ(p.groups.size(), 1u);
  EXPECT_EQ(p.groups[0].atoms, 6);
  EXPECT_EQ(p.ShardLengths(g, Property::Gather(g.Find("head.weight"), 1)), (std::vector<int64_t>{3, 3}));
}

TEST(Program, CheckerRejectsBrokenPrograms) {
  const ir::Graph g = Tiny();
  auto error = [&](const Program& p) {
    const absl::Status st = CheckProgram(g, p);
    EXPECT_FALSE(st.ok());
    return std::string(st.message());
  };
  Program missing = DataParallel(g, {0.5, 0.5});
  missing.instructions.erase(missing.instructions.begin() + 2);  // fc1.weight never placed
  EXPECT_NE(error(missing).find("precondition Identity(fc1.weight) does not hold"), std::string::npos);

  Program reordered = DataParallel(g, {0.5, 0.5});
  std::swap(reordered.instructions[6], reordered.instructions[7]);  // relu before fc1
  EXPECT_NE(error(reordered).find("instruction 6 (compute 'relu' (split0)): precondition Gather(fc1, 0)"),
            std::string::npos);

  Program twice = DataParallel(g, {0.5, 0.5});
  twice.instructions.push_back(twice.instructions[9]);
  EXPECT_NE(error(twice).find("computed twice"), std::string::npos);

  Program lying = DataParallel(g, {0.5, 0.5});
  lying.instructions[6].post = {Property::Identity(g.Find("fc1"))};
  EXPECT_NE(error(lying).find("does not match its definition"), std::string::npos);

  Program counts = DataParallel(g, {0.5, 0.5});
  counts.groups[0].counts = {5, 4};
  EXPECT_NE(error(counts).find("summing to 9; expected 2 summing to 8"), std::string::npos);

  Program no_goal = DataParallel(g, {0.5, 0.5});
  no_goal.instructions.pop_back();
  EXPECT_NE(error(no_goal).find("never reaches the goal Reduce(loss)"), std::string::npos);
}

// A valid two-device data-parallel plan of Tiny, without predictions.
Plan TinyPlan(const ir::Graph& g) {
  Plan plan;
  plan.model = "tiny";
  plan.batch = 8;
  plan.cluster = "two";
  plan.cluster_fingerprint = "0123456789abcdef";
  plan.devices = {"a", "b"};
  plan.strategy = "dp-cp";
  plan.program = DataParallel(g, {0.75, 0.25});
  return plan;
}

TEST(PlanJson, RoundTripsAndRefusesACorruptedTriple) {
  const ir::Graph g = Tiny();
  Plan plan = TinyPlan(g);
  const std::string text = PlanToJson(g, plan);
  absl::StatusOr<Plan> back = PlanFromJson(g, text, "p.json");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(PlanToJson(g, *back), text);
  EXPECT_EQ(back->program.groups[0].counts, (std::vector<int64_t>{6, 2}));
  // Counts are what the ratios give (largest-remainder rounding), not a free choice: other
  // counts would make explain's shares contradict them.
  plan.program.groups[0].counts = {5, 3};
  EXPECT_NE(PlanFromJson(g, PlanToJson(g, plan), "p.json")
                .status()
                .message()
                .find("plan 'p.json': splits[0].counts: [5, 3]; expected [6, 2], what ratios[0] gives 8 atoms"),
            std::string::npos)
      << PlanFromJson(g, PlanToJson(g, plan), "p.json").status();

  std::string corrupt = text;
  const std::string from = "\"Gather(fc1, 0)\"";
  corrupt.replace(corrupt.find(from), from.size(), "\"Identity(fc1)\"");
  absl::StatusOr<Plan> bad = PlanFromJson(g, corrupt, "p.json");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("plan 'p.json': program[6]: stated triple"), std::string::npos) << bad.status();
}

// A valid two-device data-parallel plan of Tiny as JSON, with predictions, for editing.
nlohmann::json TinyPlanJson(const ir::Graph& g) {
  Plan plan = TinyPlan(g);
  plan.predicted_step_time_s = 2;
  plan.predicted_compute_s = 1;
  plan.predicted_communication_s = 1;
  plan.predicted_exposed_communication_s = 1;
  plan.instruction_compute_s.assign(plan.program.instructions.size(), 0.1);
  plan.instruction_communication_s.assign(plan.program.instructions.size(), 0);
  plan.predicted_memory_bytes = {1000, 500};
  plan.memory_capacity_bytes = {1e9, 1e9};
  return nlohmann::json::parse(PlanToJson(g, plan));
}

// Every bad field is one line naming the file, the field's position, its value and what was
// expected: wrong JSON types, unknown fields, out-of-range segments and predictions, counts the
// ratios do not give, unused ratio rows, a malformed fingerprint or device name, and documents
// that are empty, truncated or not objects.
TEST(PlanJson, BadFieldsNamePositionValueAndExpectation) {
  const ir::Graph g = Tiny();
  const nlohmann::json good = TinyPlanJson(g);
  ASSERT_TRUE(PlanFromJson(g, good.dump(1), "p.json").ok()) << PlanFromJson(g, good.dump(1), "p.json").status();
  ASSERT_EQ(good["program"][6]["op"], "compute");
  struct Case {
    std::function<void(nlohmann::json&)> edit;
    std::string message;  // the whole line after "plan 'p.json': " (a prefix of it where it lists names)
  };
  const std::vector<Case> cases = {
      {[](auto& j) { j["program"][6]["op"] = 5; }, "program[6].op: 5; expected a string"},
      {[](auto& j) { j["program"][0]["tensor"] = 5; }, "program[0].tensor: 5; expected a string"},
      {[](auto& j) { j["program"][6]["node"] = nlohmann::json::array(); }, "program[6].node: []; expected a string"},
      {[](auto& j) { j["program"][6]["rule"] = 1; }, "program[6].rule: 1; expected a string"},
      {[](auto& j) { j["program"][0]["impl"] = true; }, "program[0].impl: true; expected a string"},
      {[](auto& j) { j["program"][0]["pre"] = "x"; }, "program[0].pre: \"x\"; expected an array of properties"},
      {[](auto& j) { j["format"] = 5; }, "format: 5; expected \"hetsynth-plan\""},
      {[](auto& j) { j["strategy"] = 5; }, "strategy: 5; expected a string"},
      {[](auto& j) { j["overlap"] = "yes"; }, "overlap: \"yes\"; expected true or false"},
      {[](auto& j) { j["model"]["name"] = 5; }, "model.name: 5; expected a string"},
      {[](auto& j) { j["splits"][0]["counts"] = "6,2"; }, "splits[0].counts: \"6,2\"; expected an array of atom counts"},
      {[](auto& j) { j["buckets"] = {{{"params", "x"}}}; }, "buckets[0].params: \"x\"; expected an array of parameter names"},
      // Unknown fields, at every level.
      {[](auto& j) { j["program"][6]["segmnet"] = 0; },
       "program[6]: unknown field 'segmnet'; did you mean 'segment'? (expected one of: "},
      {[](auto& j) { j["strategyy"] = "x"; }, "unknown field 'strategyy'; did you mean 'strategy'? (expected one of: "},
      {[](auto& j) { j["splits"][0]["atom"] = 8; }, "splits[0]: unknown field 'atom'; did you mean 'atoms'?"},
      {[](auto& j) { j["buckets"] = {{{"params", {"head.bias"}}, {"byte", 12}}}; },
       "buckets[0]: unknown field 'byte'; did you mean 'bytes'?"},
      {[](auto& j) { j["model"]["batchh"] = 8; }, "model: unknown field 'batchh'; did you mean 'batch'?"},
      {[](auto& j) { j["cluster"]["device"] = 8; }, "cluster: unknown field 'device'; did you mean 'devices'?"},
      {[](auto& j) { j["predicted"]["compute"] = 1; }, "predicted: unknown field 'compute'"},
      {[](auto& j) { j["mesh"] = {{"nodes", {{0}, {1}}}, {"node", 1}}; }, "mesh: unknown field 'node'; did you mean 'nodes'?"},
      {[](auto& j) { j["program"][0]["rule"] = "batch0"; }, "program[0]: unknown field 'rule' (expected one of: "},
      // Segments: a row of ratios, on instructions and on splits.
      {[](auto& j) { j["program"][6]["segment"] = -1; },
       "program[6].segment: -1; expected an integer in [0, 0] (a row of ratios; the plan has 1)"},
      {[](auto& j) { j["splits"][0]["segment"] = 5; },
       "splits[0].segment: 5; expected an integer in [0, 0] (a row of ratios; the plan has 1)"},
      {[](auto& j) { j["splits"][0]["segment"] = 1000000; }, "splits[0].segment: 1000000; expected an integer in [0, 0]"},
      // Predictions: finite, non-negative, sane, one per device or instruction.
      {[](auto& j) { j["predicted"]["memory_bytes"][0] = -1; }, "predicted.memory_bytes[0]: -1; expected finite bytes in [0, 1e+30]"},
      {[](auto& j) { j["predicted"]["memory_bytes"] = {1000}; },
       "predicted.memory_bytes: 1 numbers; expected 2 (one per device) or none"},
      {[](auto& j) { j["predicted"]["communication_s"] = -1; },
       "predicted.communication_s: -1; expected finite seconds in [0, 1e+09]"},
      {[](auto& j) { j["predicted"]["compute_s"] = -0.5; }, "predicted.compute_s: -0.5; expected finite seconds"},
      {[](auto& j) { j["predicted_step_time_s"] = 1e308; }, "predicted_step_time_s: 1e+308; expected finite seconds in [0, 1e+09]"},
      {[](auto& j) { j["predicted"]["memory_capacity_bytes"][1] = 0; },
       "predicted.memory_capacity_bytes[1]: 0; expected finite bytes in [1, 1e+30]"},
      {[](auto& j) { j["predicted"]["instruction_compute_s"] = {0.5}; },
       "predicted.instruction_compute_s: 1 numbers; expected 10 (one per instruction) or none"},
      // Counts are the ratios' rounding; every ratio row is used.
      {[](auto& j) { j["ratios"] = {{1, 0}}; }, "splits[0].counts: [6, 2]; expected [8, 0], what ratios[0] gives 8 atoms"},
      {[](auto& j) { j["ratios"].push_back({0.5, 0.5}); }, "ratios[1]: no instruction uses segment 1"},
      {[](auto& j) { j["ratios"][0][0] = 2; }, "ratios[0][0]: 2; expected finite ratio in [0, 1]"},
      // The cluster header.
      {[](auto& j) { j["cluster"]["fingerprint"] = "zz"; }, "cluster.fingerprint: \"zz\"; expected 16 hex digits"},
      {[](auto& j) { j["cluster"]["devices"][0] = ""; }, "cluster.devices[0]: \"\"; expected a device name"},
      {[](auto& j) { j["mesh"] = {{"nodes", {{0}, {2}}}}; }, "mesh.nodes[1][0]: 2; expected an integer in [0, 1] (a rank)"},
  };
  for (size_t k = 0; k < cases.size(); ++k) {
    nlohmann::json j = good;
    cases[k].edit(j);
    const absl::StatusOr<Plan> p = PlanFromJson(g, j.dump(1), "p.json");
    ASSERT_FALSE(p.ok()) << k << ": " << cases[k].message;
    EXPECT_EQ(std::string(p.status().message()).rfind("plan 'p.json': " + cases[k].message, 0), 0u) << k << ": " << p.status();
  }
  // Documents: empty, truncated (with nlohmann's position), not an object.
  const std::string text = good.dump(1);
  auto error = [&](const std::string& t) { return std::string(PlanFromJson(g, t, "p.json").status().message()); };
  EXPECT_EQ(error(""), "plan 'p.json': is empty; expected a JSON object");
  EXPECT_EQ(error(" \n"), "plan 'p.json': is empty; expected a JSON object");
  EXPECT_EQ(error(text.substr(0, text.size() / 2)).rfind("plan 'p.json': is not valid JSON (line ", 0), 0u)
      << error(text.substr(0, text.size() / 2));
  EXPECT_EQ(error("[1, 2]"), "plan 'p.json': is an array; expected a JSON object");
  // A key twice in one object (nlohmann would keep the last): "strategy" again, first thing.
  EXPECT_EQ(error("{\"strategy\": \"x\", " + text.substr(1)),
            "plan 'p.json': field 'strategy' appears twice in one object; expected each once");
  // The header alone (explain's first read) checks the same fields.
  nlohmann::json j = good;
  j["cluster"]["fingerprint"] = "zz";
  EXPECT_EQ(std::string(PlanHeaderFromJson(j.dump(), "p.json").status().message()).rfind("plan 'p.json': cluster.fingerprint", 0), 0u);
}

// The replicated parameters of DataParallel in ready order: placed fc1.weight, fc1.bias,
// head.weight, head.bias, so ready head.bias, head.weight, fc1.bias, fc1.weight.
std::vector<ValueId> ReadyOrder(const ir::Graph& g) {
  return {g.Find("head.bias"), g.Find("head.weight"), g.Find("fc1.bias"), g.Find("fc1.weight")};
}

TEST(Program, BucketsCoverTheReplicatedParametersOnceInReadyOrder) {
  const ir::Graph g = Tiny();
  Program p = DataParallel(g, {0.5, 0.5});
  EXPECT_EQ(ReplicatedParametersInReadyOrder(p), ReadyOrder(g));
  const std::vector<ValueId> r = ReadyOrder(g);
  p.buckets = {{{r[0], r[1]}, CollImpl::kRing}, {{r[2], r[3]}, CollImpl::kRing}};
  ASSERT_TRUE(CheckProgram(g, p).ok()) << CheckProgram(g, p);
  auto error = [&](const Program& q) {
    const absl::Status st = CheckProgram(g, q);
    EXPECT_FALSE(st.ok());
    return std::string(st.message());
  };
  Program swapped = p;
  std::swap(swapped.buckets[0].params[0], swapped.buckets[0].params[1]);
  EXPECT_NE(error(swapped).find("bucket 0 lists 'head.weight' where 'head.bias' is expected"), std::string::npos)
      << error(swapped);
  Program missing = p;
  missing.buckets[1].params.pop_back();
  EXPECT_NE(error(missing).find("the buckets cover 3 of 4 replicated parameters; 'fc1.weight' is in none"),
            std::string::npos);
  Program empty = p;
  empty.buckets.push_back({});
  EXPECT_NE(error(empty).find("bucket 2 is empty"), std::string::npos);
  Program padded = p;
  padded.buckets[0].impl = CollImpl::kPadded;
  EXPECT_NE(error(padded).find("bucket 0 has implementation 'padded'; expected ring or hierarchical"), std::string::npos);
  Program hierarchical = p;
  hierarchical.buckets[0].impl = CollImpl::kHierarchical;  // one node, or none given
  EXPECT_NE(error(hierarchical).find("needs a two-level mesh"), std::string::npos);
}

TEST(Program, HierarchicalNeedsTwoNodesWithNodeMajorRanks) {
  const ir::Graph g = Tiny();
  Program p;
  p.num_devices = 2;
  p.ratios = {{0.5, 0.5}};
  p.instructions = {Place(g, "x"), Place(g, "labels"), Place(g, "fc1.weight", 0), Place(g, "fc1.bias", 0),
                    Place(g, "head.weight", 1), Place(g, "head.bias"), Compute(g, "fc1", "column"),
                    Compute(g, "relu", "split1"), Compute(g, "head", "row"),
                    Collective(g, InstrKind::kAllReduce, "head"), Compute(g, "loss", "replicated")};
  p.instructions[9].impl = CollImpl::kHierarchical;
  ASSERT_TRUE(BuildSplitGroups(g, p).ok());
  EXPECT_NE(CheckProgram(g, p).message().find("instruction 9 (all_reduce 'head'): hierarchical needs a two-level mesh"),
            std::string::npos)
      << CheckProgram(g, p);
  p.nodes = {{0}, {1}};
  EXPECT_TRUE(CheckProgram(g, p).ok()) << CheckProgram(g, p);
  EXPECT_TRUE(TwoLevelNodes({{0, 1}, {2}}, 3));
  EXPECT_FALSE(TwoLevelNodes({{0, 2}, {1}}, 3));  // not node-major
  EXPECT_FALSE(TwoLevelNodes({{0, 1, 2}}, 3));    // one node
  p.nodes = {{0}, {0}};
  EXPECT_NE(CheckProgram(g, p).message().find("do not list each of the 2 devices exactly once"), std::string::npos);
  p.nodes = {};
  p.instructions[9].impl = CollImpl::kGrouped;  // not an all-reduce's
  EXPECT_NE(CheckProgram(g, p).message().find("implementation 'grouped' is not one of all_reduce's (ring or hierarchical)"),
            std::string::npos);
}

TEST(PlanJson, VersionTwoRoundTripsBucketsOverlapAndMeshAndVersionOneStillLoads) {
  const ir::Graph g = Tiny();
  Plan plan;
  plan.model = "tiny";
  plan.batch = 8;
  plan.cluster = "two";
  plan.cluster_fingerprint = "0123456789abcdef";
  plan.devices = {"a", "b"};
  plan.strategy = "ddp-ev";
  plan.program = DataParallel(g, {0.5, 0.5});
  const std::vector<ValueId> r = ReadyOrder(g);
  plan.program.buckets = {{{r[0], r[1], r[2]}, CollImpl::kHierarchical}, {{r[3]}, CollImpl::kRing}};
  plan.program.overlap = true;
  plan.program.nodes = {{0}, {1}};
  plan.predicted_exposed_communication_s = 0.25;
  const std::string text = PlanToJson(g, plan);
  EXPECT_NE(text.find("\"version\": 3"), std::string::npos);
  // A world-only program says nothing of levels: its file is version 2's apart from the number.
  EXPECT_EQ(text.find("level"), std::string::npos);
  EXPECT_EQ(text.find("outer"), std::string::npos);
  std::string v2 = text;
  v2.replace(v2.find("\"version\": 3"), 12, "\"version\": 2");
  ASSERT_TRUE(PlanFromJson(g, v2, "v2.json").ok()) << PlanFromJson(g, v2, "v2.json").status();
  // head.bias 3 + head.weight 18 + fc1.bias 6 floats: 108 bytes.
  EXPECT_NE(text.find("\"bytes\": 108.0"), std::string::npos) << text;
  absl::StatusOr<Plan> back = PlanFromJson(g, text, "p.json");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(PlanToJson(g, *back), text);
  EXPECT_EQ(back->program.buckets.size(), 2u);
  EXPECT_EQ(back->program.buckets[0].impl, CollImpl::kHierarchical);
  EXPECT_TRUE(back->program.overlap);
  EXPECT_EQ(back->predicted_exposed_communication_s, 0.25);

  // Version 1: no buckets, an all-reduce without impl is ring, a gather without impl grouped.
  Plan v1;
  v1.model = "tiny";
  v1.batch = 8;
  v1.cluster = "two";
  v1.cluster_fingerprint = "0123456789abcdef";
  v1.devices = {"a", "b"};
  v1.program.num_devices = 2;
  v1.program.ratios = {{0.5, 0.5}};
  v1.program.instructions = {Place(g, "x"), Place(g, "labels"), Place(g, "fc1.weight", 0), Place(g, "fc1.bias", 0),
                             Place(g, "head.weight", 1), Place(g, "head.bias"), Compute(g, "fc1", "column"),
                             Compute(g, "relu", "split1"), Compute(g, "head", "row"),
                             Collective(g, InstrKind::kAllReduce, "head"), Compute(g, "loss", "replicated")};
  ASSERT_TRUE(BuildSplitGroups(g, v1.program).ok());
  std::string old = PlanToJson(g, v1);
  old.replace(old.find("\"version\": 3"), 12, "\"version\": 1");
  const size_t impl = old.find("\"impl\": \"ring\",");
  ASSERT_NE(impl, std::string::npos) << old;
  old.erase(impl, std::string("\"impl\": \"ring\",").size());
  absl::StatusOr<Plan> loaded = PlanFromJson(g, old, "old.json");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->program.instructions[9].impl, CollImpl::kRing);
  EXPECT_TRUE(loaded->program.buckets.empty());

  std::string future = text;
  future.replace(future.find("\"version\": 3"), 12, "\"version\": 4");
  const std::string refused = "plan 'new.json': field 'version': 4; expected 1, 2 or 3 (a newer plan needs a newer hetsynth)";
  EXPECT_EQ(PlanFromJson(g, future, "new.json").status().message(), refused);
  EXPECT_EQ(PlanHeaderFromJson(future, "new.json").status().message(), refused);
}

// Mixed forms on 2 nodes × 2 devices (topology spec §2–§4): tensor parallel inside each node
// (fc1 column, head row, an all-reduce at level devices) × data parallel across nodes (every
// activation split on dim 0 over the nodes, parameters whole on every node).
Instruction PlaceMesh(const ir::Graph& g, const std::string& t, Placement outer, int dim = -1) {
  Instruction in;
  in.kind = g.value(g.Find(t)).kind == ir::ValueKind::kInput ? InstrKind::kPlaceInput : InstrKind::kPlaceParameter;
  in.tensor = g.Find(t);
  in.dim = dim;
  in.outer = outer;
  const absl::Status st = DeriveTriple(g, in);
  EXPECT_TRUE(st.ok()) << st;
  return in;
}

Instruction ComputeMesh(const ir::Graph& g, const std::string& node, RuleId outer, RuleId inner) {
  Instruction in;
  in.kind = InstrKind::kCompute;
  in.node = g.value(g.Find(node)).producer;
  in.rule = inner;
  in.outer_rule = outer;
  const absl::Status st = DeriveTriple(g, in);
  EXPECT_TRUE(st.ok()) << st;
  return in;
}

Instruction AtLevel(const ir::Graph& g, InstrKind kind, const std::string& t, Level level,
                    std::optional<Placement> outer, int dim = -1) {
  Instruction in;
  in.kind = kind;
  in.tensor = g.Find(t);
  in.dim = dim;
  in.level = level;
  in.outer = outer;
  in.impl = kind == InstrKind::kAllReduce ? CollImpl::kRing : CollImpl::kPadded;
  const absl::Status st = DeriveTriple(g, in);
  EXPECT_TRUE(st.ok()) << st;
  return in;
}

constexpr Placement kG0{PropKind::kGather, 0};
constexpr Placement kI{PropKind::kIdentity, -1};

Program MegatronInsideDpAcross(const ir::Graph& g, std::vector<double> ratios) {
  Program p;
  p.num_devices = 4;
  p.nodes = {{0, 1}, {2, 3}};
  p.ratios = {std::move(ratios)};
  p.instructions = {PlaceMesh(g, "x", kG0), PlaceMesh(g, "labels", kG0), PlaceMesh(g, "fc1.weight", kI, 0),
                    PlaceMesh(g, "fc1.bias", kI, 0), PlaceMesh(g, "head.weight", kI, 1), Place(g, "head.bias"),
                    ComputeMesh(g, "fc1", "batch0", "column"), ComputeMesh(g, "relu", "split0", "split1"),
                    ComputeMesh(g, "head", "batch0", "row"),
                    AtLevel(g, InstrKind::kAllReduce, "head", Level::kDevices, kG0),
                    ComputeMesh(g, "loss", "batch0", "replicated")};
  EXPECT_TRUE(BuildSplitGroups(g, p).ok()) << BuildSplitGroups(g, p);
  return p;
}

TEST(Mesh, MixedFormsSpellTheirLevelsAndWorldPairsAreWorldForms) {
  const ir::Graph g = Tiny();
  const ValueId x = g.Find("x");
  EXPECT_EQ(Property::Mesh(x, kG0, kG0), Property::Gather(x, 0));
  EXPECT_EQ(Property::Mesh(x, kI, kI), Property::Identity(x));
  EXPECT_EQ(PropertyString(g, Property::Mesh(x, kG0, kI)), "Mesh(x; nodes=Gather(0), devices=Identity)");
  EXPECT_EQ(PropertyString(g, Property::Mesh(x, {PropKind::kReduce, -1}, {PropKind::kGather, 1})),
            "Mesh(x; nodes=Reduce, devices=Gather(1))");
  Placement back;
  EXPECT_TRUE(ParsePlacement("Gather(12)", &back) && back == (Placement{PropKind::kGather, 12}));
  EXPECT_FALSE(ParsePlacement("Gather(01)", &back));
  EXPECT_FALSE(ParsePlacement("gather(1)", &back));
  // The same rule at both levels is the world rule.
  const Instruction world = ComputeMesh(g, "fc1", "batch0", "batch0");
  EXPECT_EQ(world.post[0], Property::Gather(g.Find("fc1"), 0));
}

TEST(Mesh, MegatronInsideDataParallelAcrossChecksWithSharesPerLevel) {
  const ir::Graph g = Tiny();
  // Node shares 0.5 / 0.5; within node 0: 0.6 / 0.4, within node 1: even.
  const Program p = MegatronInsideDpAcross(g, {0.3, 0.2, 0.25, 0.25});
  const absl::Status st = CheckProgram(g, p);
  ASSERT_TRUE(st.ok()) << st;
  ASSERT_EQ(p.groups.size(), 2u);
  // The batch over the nodes: x, labels, fc1, relu, head (8 rows), one count per node.
  const int batch = p.GroupOf(Property::Mesh(g.Find("relu"), kG0, {PropKind::kGather, 1}), Level::kNodes);
  ASSERT_GE(batch, 0);
  EXPECT_EQ(p.groups[static_cast<size_t>(batch)].level, Level::kNodes);
  EXPECT_EQ(p.groups[static_cast<size_t>(batch)].counts, (std::vector<int64_t>{4, 4}));
  // fc1's 6 output features within each node.
  const int features = p.GroupOf(Property::Mesh(g.Find("fc1.weight"), kI, kG0), Level::kDevices);
  ASSERT_GE(features, 0);
  EXPECT_EQ(p.groups[static_cast<size_t>(features)].level, Level::kDevices);
  EXPECT_EQ(p.groups[static_cast<size_t>(features)].counts, (std::vector<int64_t>{4, 2, 3, 3}));
  const Property relu = Property::Mesh(g.Find("relu"), kG0, {PropKind::kGather, 1});
  EXPECT_EQ(p.LocalShape(g, relu, 0), (ir::Shape{4, 4}));
  EXPECT_EQ(p.LocalShape(g, relu, 3), (ir::Shape{4, 3}));
  EXPECT_EQ(p.NodeLengths(g, relu), (std::vector<int64_t>{4, 4}));
  // The goal: the loss as node partial sums, whole on every device of a node.
  EXPECT_EQ(PropertyString(g, p.instructions.back().post[0]), "Mesh(loss; nodes=Reduce, devices=Identity)");
  EXPECT_TRUE(p.UsesMesh());
  EXPECT_TRUE(ReplicatedParametersInReadyOrder(p) == std::vector<ValueId>{g.Find("head.bias")});
  // The sliced parameters' gradients are all-reduced across nodes, in buckets of kind nodes.
  const std::vector<ValueId> across = {g.Find("head.weight"), g.Find("fc1.bias"), g.Find("fc1.weight")};
  EXPECT_EQ(NodeSyncParametersInReadyOrder(p), across);
  Program bucketed = p;
  bucketed.buckets = {{{g.Find("head.bias")}, CollImpl::kRing, Level::kWorld},
                      {{across[0], across[1]}, CollImpl::kRing, Level::kNodes},
                      {{across[2]}, CollImpl::kRing, Level::kNodes}};
  EXPECT_TRUE(CheckProgram(g, bucketed).ok()) << CheckProgram(g, bucketed);
  Program swapped = bucketed;
  std::swap(swapped.buckets[1].params[0], swapped.buckets[1].params[1]);
  EXPECT_NE(CheckProgram(g, swapped).message().find("bucket 1 lists 'fc1.bias' where 'head.weight' is expected"),
            std::string::npos)
      << CheckProgram(g, swapped);
  Program hier = bucketed;
  hier.buckets[2].impl = CollImpl::kHierarchical;
  EXPECT_NE(CheckProgram(g, hier).message().find("expected ring (a nodes bucket)"), std::string::npos);
  Program partial = bucketed;
  partial.buckets.pop_back();
  EXPECT_NE(CheckProgram(g, partial).message().find("cover 2 of 3 across-nodes parameters"),
            std::string::npos)
      << CheckProgram(g, partial);
}

TEST(Mesh, NodesLevelAllGatherEndsDataParallelAcrossNodes) {
  const ir::Graph g = Tiny();
  Program p;
  p.num_devices = 4;
  p.nodes = {{0, 1}, {2, 3}};
  p.ratios = {{0.25, 0.25, 0.25, 0.25}};
  p.instructions = {PlaceMesh(g, "x", kG0), Place(g, "labels"), Place(g, "fc1.weight"), Place(g, "fc1.bias"),
                    Place(g, "head.weight"), Place(g, "head.bias"),
                    ComputeMesh(g, "fc1", "batch0", "replicated"), ComputeMesh(g, "relu", "split0", "replicated"),
                    ComputeMesh(g, "head", "batch0", "replicated"),
                    AtLevel(g, InstrKind::kAllGather, "head", Level::kNodes, std::nullopt, 0),
                    Compute(g, "loss", "replicated")};
  ASSERT_TRUE(BuildSplitGroups(g, p).ok());
  const absl::Status st = CheckProgram(g, p);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(PropertyString(g, p.instructions[9].pre[0]), "Mesh(head; nodes=Gather(0), devices=Identity)");
  EXPECT_EQ(PropertyString(g, p.instructions[9].post[0]), "Identity(head)");
}

TEST(Mesh, CheckerRefusesMixedFormsWithoutATwoLevelMeshAndBadCountsPerNode) {
  const ir::Graph g = Tiny();
  Program flat = MegatronInsideDpAcross(g, {0.25, 0.25, 0.25, 0.25});
  flat.nodes = {};
  EXPECT_NE(CheckProgram(g, flat).message().find("instruction 0 (place_input 'x'): mesh levels"), std::string::npos)
      << CheckProgram(g, flat);
  EXPECT_FALSE(BuildSplitGroups(g, flat).ok());
  Program counts = MegatronInsideDpAcross(g, {0.25, 0.25, 0.25, 0.25});
  for (SplitGroup& s : counts.groups) {
    if (s.level == Level::kDevices) s.counts = {3, 3, 4, 3};
  }
  EXPECT_NE(CheckProgram(g, counts).message().find("node 1's counts sum to 7; expected 6"), std::string::npos)
      << CheckProgram(g, counts);
  Program hier = MegatronInsideDpAcross(g, {0.25, 0.25, 0.25, 0.25});
  hier.instructions[9].impl = CollImpl::kHierarchical;
  EXPECT_NE(CheckProgram(g, hier).message().find("devices-level collective runs over one level"), std::string::npos);
  // A mixed-form placement needs a different inner placement.
  Instruction same;
  same.kind = InstrKind::kPlaceInput;
  same.tensor = g.Find("x");
  same.dim = 0;
  same.outer = kG0;
  EXPECT_NE(DeriveTriple(g, same).message().find("is a world form; omit 'outer'"), std::string::npos);
}

TEST(Mesh, PlanVersionThreeRoundTripsMixedFormsAndTheRuntimeRunsThem) {
  const ir::Graph g = Tiny();
  Plan plan;
  plan.model = "tiny";
  plan.batch = 8;
  plan.cluster = "two-by-two";
  plan.cluster_fingerprint = "0123456789abcdef";
  plan.devices = {"a", "b", "c", "d"};
  plan.strategy = "megatron";
  plan.program = MegatronInsideDpAcross(g, {0.3, 0.2, 0.25, 0.25});
  const std::string text = PlanToJson(g, plan);
  EXPECT_NE(text.find("\"outer_rule\": \"batch0\""), std::string::npos);
  EXPECT_NE(text.find("\"level\": \"devices\""), std::string::npos);
  EXPECT_NE(text.find("\"outer\": \"Gather(0)\""), std::string::npos);
  absl::StatusOr<Plan> back = PlanFromJson(g, text, "m.json");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(PlanToJson(g, *back), text);
  std::string old = text;
  old.replace(old.find("\"version\": 3"), 12, "\"version\": 2");
  EXPECT_NE(PlanFromJson(g, old, "m.json").status().message().find("needs plan version 3"), std::string::npos)
      << PlanFromJson(g, old, "m.json").status();
  // The runtime runs mesh levels (executor_test), but not an input partial over the nodes.
  EXPECT_TRUE(RuntimeSupports(plan.program).ok()) << RuntimeSupports(plan.program);
  Program partial = plan.program;
  partial.instructions[0] = PlaceMesh(g, "x", {PropKind::kReduce, -1});
  const absl::Status run = RuntimeSupports(partial);
  EXPECT_EQ(run.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(run.message().find("instruction 0 (place_input) places a tensor partial (Reduce) over the nodes"),
            std::string::npos)
      << run;
}

TEST(RuntimeSupports, AcceptsEveryPlanKindTheRuntimeRuns) {
  // Overlap, buckets and hierarchical buckets all run (executor_test's parity tests).
  const ir::Graph g = Tiny();
  Program p = DataParallel(g, {0.5, 0.5});
  EXPECT_TRUE(RuntimeSupports(p).ok());
  p.overlap = true;
  EXPECT_TRUE(RuntimeSupports(p).ok());
  const std::vector<ValueId> r = ReadyOrder(g);
  p.buckets = {{{r[0], r[1], r[2], r[3]}, CollImpl::kRing}};
  EXPECT_TRUE(RuntimeSupports(p).ok());
  p.nodes = {{0}, {1}};
  p.buckets[0].impl = CollImpl::kHierarchical;
  EXPECT_TRUE(CheckProgram(g, p).ok()) << CheckProgram(g, p);
  EXPECT_TRUE(RuntimeSupports(p).ok());
}

TEST(RuleId, NamesRoundTripAndOnlyExactNamesParse) {
  static_assert(RuleId("split1_2") == RuleId(RuleFamily::kSplit, 1, 2));
  static_assert(RuleId("out_channels") == RuleId(RuleFamily::kOutChannels));
  static_assert(RuleId("batch0") < RuleId("batch1") && RuleId("replicated") < RuleId("split0"));
  for (const char* name : {"replicated", "partial", "batch", "batch0", "batch12", "split3", "split1_2", "column", "row",
                           "rows", "columns", "inner", "heads", "hidden", "vocab", "out_channels", "in_channels",
                           "experts", "tokens"}) {
    RuleId id;
    ASSERT_TRUE(ParseRuleName(name, &id)) << name;
    EXPECT_EQ(RuleName(id), name);
    EXPECT_EQ(StrCat(id), name);
  }
  for (const char* bad : {"", "frob", "Batch0", "batch01", "batch-1", "split_1", "split1_", "split1__2", "split1_2_3",
                          "batch1234567", "heads "}) {
    RuleId id(RuleFamily::kTokens, 7);
    EXPECT_FALSE(ParseRuleName(bad, &id)) << bad;
    EXPECT_EQ(id, RuleId(RuleFamily::kTokens, 7)) << "a failed parse leaves the id alone";
  }
}

TEST(PlanJson, ARuleTheNodeLacksIsRefusedWithItsRules) {
  const ir::Graph g = Tiny();
  Plan plan;
  plan.model = "tiny";
  plan.batch = 8;
  plan.cluster = "two";
  plan.cluster_fingerprint = "0123456789abcdef";
  plan.devices = {"a", "b"};
  plan.program = DataParallel(g, {0.5, 0.5});
  const std::string text = PlanToJson(g, plan);
  const std::string from = "\"rule\": \"batch0\"";
  ASSERT_NE(text.find(from), std::string::npos) << text;
  for (const std::string rule : {"heads", "frob", "batch00"}) {
    std::string bad = text;
    bad.replace(bad.find(from), from.size(), StrCat("\"rule\": \"", rule, "\""));
    absl::StatusOr<Plan> back = PlanFromJson(g, bad, "p.json");
    ASSERT_FALSE(back.ok());
    EXPECT_EQ(back.status().message(), StrCat("plan 'p.json': program[6]: node 'fc1' has no rule '", rule,
                                              "'; its rules: replicated, batch0, column, row"));
  }
}

// Ops of a family (ir::Sharding) get their rules from their op table entry, with no code of
// their own in rules.cc: a new elementwise op (sigmoid, tanh) is sharded by its entry alone.
TEST(Rules, FamilyOpsGetTheirRulesFromTheOpTable) {
  int seen = 0;
  for (const ir::OpDef& def : ir::OpTable()) {
    using Family = ir::Sharding::Family;
    if (def.sharding.family != Family::kKeepDims && def.sharding.family != Family::kReplicatedOnly) continue;
    SCOPED_TRACE(std::string(def.name));
    ++seen;
    absl::StatusOr<ir::Graph> g = ir::testing::SampleGraph(def.kind);
    ASSERT_TRUE(g.ok()) << g.status();
    const ir::NodeId op = g->value(g->Find("op")).producer;
    const ir::Node& n = g->node(op);
    std::vector<ComputeRule> want(1);
    want[0].id = RuleFamily::kReplicated;
    for (ValueId v : n.inputs) want[0].pre.push_back(Property::Identity(v));
    want[0].post = Property::Identity(n.output);
    if (def.sharding.family == Family::kKeepDims) {
      const int rank = static_cast<int>(g->value(n.output).shape.size());
      for (int d = 0; d < rank - def.sharding.whole_trailing_dims; ++d) {
        ComputeRule r;
        r.id = RuleId(RuleFamily::kSplit, d);
        r.pre = {Property::Gather(n.inputs[0], d)};
        for (size_t i = 1; i < n.inputs.size(); ++i) r.pre.push_back(Property::Identity(n.inputs[i]));
        r.post = Property::Gather(n.output, d);
        want.push_back(r);
      }
    }
    const std::vector<ComputeRule> got = ShardingRules(*g, op);
    ASSERT_EQ(got.size(), want.size() + (def.sharding.partial != ir::Partial::kNone));
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(got[i].id, want[i].id);
      EXPECT_EQ(got[i].pre, want[i].pre) << got[i].id;
      EXPECT_EQ(got[i].post, want[i].post) << got[i].id;
    }
  }
  EXPECT_GE(seen, 10);
}

// A program of one compute instruction (its split groups give the pieces).
Program OneCompute(const ir::Graph& g, const std::string& node, RuleId rule, std::vector<double> ratios) {
  Program p;
  p.num_devices = static_cast<int>(ratios.size());
  p.ratios = {std::move(ratios)};
  p.instructions = {Compute(g, node, rule)};
  const absl::Status st = BuildSplitGroups(g, p);
  EXPECT_TRUE(st.ok()) << st;
  return p;
}

LocalCompute Local(const ir::Graph& g, const Program& p, int rank) {
  absl::StatusOr<LocalCompute> lc = LocalComputeOf(g, p, 0, rank);
  EXPECT_TRUE(lc.ok()) << lc.status();
  return lc.ok() ? *std::move(lc) : LocalCompute{};
}

// For every rule of every op on three uneven devices, the local node applied to the rank's
// input pieces infers exactly the rank's output piece: the op table's LocalAttrs and the
// rules agree, so a kernel can run on the pieces as on whole tensors.
TEST(LocalCompute, EveryRuleOfEveryOpGivesPiecesItsKernelAccepts) {
  for (const ir::OpDef& def : ir::OpTable()) {
    absl::StatusOr<ir::Graph> g = ir::testing::SampleGraph(def.kind);
    ASSERT_TRUE(g.ok()) << g.status();
    const ir::NodeId op = g->value(g->Find("op")).producer;
    for (const ComputeRule& rule : ShardingRules(*g, op)) {
      SCOPED_TRACE(StrCat(def.name, " ", rule.id));
      const Program p = OneCompute(*g, "op", rule.id, {0.5, 0.3, 0.2});
      for (int rank = 0; rank < 3; ++rank) {
        const LocalCompute lc = Local(*g, p, rank);
        EXPECT_EQ(lc.rule.id, rule.id);
        EXPECT_EQ(lc.out_shape, PieceShape(*g, p, rule.post, rank));
        if (!rule.bias_once) {
          EXPECT_EQ(lc.num_inputs, g->node(op).inputs.size());
        }
        std::vector<ir::Shape> pieces;
        for (size_t i = 0; i < lc.num_inputs; ++i) pieces.push_back(PieceShape(*g, p, rule.pre[i], rank));
        ASSERT_FALSE(lc.skip) << "rank " << rank << ": the sample's pieces are all non-empty";
        absl::StatusOr<ir::Shape> inferred = ir::InferShape(def.kind, pieces, lc.node.attrs);
        ASSERT_TRUE(inferred.ok()) << "rank " << rank << ": " << inferred.status();
        EXPECT_EQ(*inferred, lc.out_shape) << "rank " << rank;
      }
    }
  }
}

TEST(LocalCompute, AttentionSplitByHeadsGetsTheLocalHeadCount) {
  ir::Builder b("att");
  const ValueId q = b.Input("q", {2, 3, 8});
  ir::Attrs a;
  a.heads = 4;  // head width 2
  b.SetLoss(b.Op("loss", ir::OpKind::kCrossEntropy, {b.Op("att", ir::OpKind::kAttention, {q, q, q}, a), b.Input("l", {2, 3})}));
  const ir::Graph g = *std::move(b).Finish();
  const Program heads = OneCompute(g, "att", "heads", {0.5, 0.25, 0.25});  // heads 2, 1, 1
  EXPECT_EQ(Local(g, heads, 0).node.attrs.heads, 2);
  EXPECT_EQ(Local(g, heads, 0).out_shape, (ir::Shape{2, 3, 4}));
  EXPECT_EQ(Local(g, heads, 2).node.attrs.heads, 1);
  EXPECT_EQ(Local(g, heads, 2).out_shape, (ir::Shape{2, 3, 2}));
  const Program batch = OneCompute(g, "att", "batch", {0.5, 0.5});
  EXPECT_EQ(Local(g, batch, 1).node.attrs.heads, 4);
  EXPECT_EQ(Local(g, batch, 1).out_shape, (ir::Shape{1, 3, 8}));
  EXPECT_FALSE(Local(g, batch, 1).shard.has_value());
}

TEST(LocalCompute, ReshapeAndExpandTargetTheOutputPiece) {
  ir::Builder b("rs");
  ir::Attrs rs, ex;
  rs.shape = {4, 12, 4};
  ex.shape = {4, 6, 8};
  const ValueId y = b.Op("rs", ir::OpKind::kReshape, {b.Input("x", {4, 6, 8})}, rs);
  const ValueId e = b.Op("ex", ir::OpKind::kExpand, {b.Input("c", {6, 1})}, ex);
  b.SetLoss(b.Op("loss", ir::OpKind::kCrossEntropy, {b.Op("sum", ir::OpKind::kAdd, {y, b.Reshape("er", e, {4, 12, 4})}), b.Input("l", {4, 12})}));
  const ir::Graph g = *std::move(b).Finish();
  const Program p = OneCompute(g, "rs", "split1_1", {0.5, 1.0 / 3, 1.0 / 6});  // 6 atoms: 3, 2, 1 rows of x
  EXPECT_EQ(Local(g, p, 0).node.attrs.shape, (ir::Shape{4, 6, 4}));
  EXPECT_EQ(Local(g, p, 2).node.attrs.shape, (ir::Shape{4, 2, 4}));
  const Program q = OneCompute(g, "ex", "split1", {0.5, 0.5});  // x's dim 0 follows y's dim 1
  EXPECT_EQ(Local(g, q, 1).node.attrs.shape, (ir::Shape{4, 3, 8}));
  EXPECT_EQ(Local(g, q, 1).out_shape, (ir::Shape{4, 3, 8}));
}

TEST(LocalCompute, DropoutEmbeddingAndCrossEntropyLocateTheirPiece) {
  ir::Builder b("loc");
  ir::Attrs drop;
  drop.p = 0.1;
  const ValueId emb = b.Op("emb", ir::OpKind::kEmbedding, {b.Input("ids", {4, 6}), b.Parameter("table", {10, 8}, ir::Init::Normal(1))});
  const ValueId d = b.Op("drop", ir::OpKind::kDropout, {emb}, drop);
  b.SetLoss(b.Op("loss", ir::OpKind::kCrossEntropy, {d, b.Input("labels", {4, 6})}));
  const ir::Graph g = *std::move(b).Finish();

  const Program dp = OneCompute(g, "drop", "split1", {0.5, 0.5});
  ASSERT_TRUE(Local(g, dp, 1).shard.has_value());
  EXPECT_EQ(Local(g, dp, 1).shard->full, (ir::Shape{4, 6, 8}));
  EXPECT_EQ(Local(g, dp, 1).shard->dim, 1);
  EXPECT_EQ(Local(g, dp, 1).shard->start, 3);
  EXPECT_FALSE(Local(g, OneCompute(g, "drop", "replicated", {0.5, 0.5}), 1).shard.has_value());

  const Program vocab = OneCompute(g, "emb", "vocab", {0.6, 0.4});  // table rows 6, 4
  const LocalCompute v1 = Local(g, vocab, 1);
  ASSERT_TRUE(v1.shard.has_value());
  EXPECT_EQ(v1.shard->full, (ir::Shape{10, 8}));
  EXPECT_EQ(v1.shard->dim, 0);
  EXPECT_EQ(v1.shard->start, 6);
  EXPECT_EQ(v1.out_shape, (ir::Shape{4, 6, 8}));  // a Reduce piece is whole
  EXPECT_FALSE(Local(g, OneCompute(g, "emb", "hidden", {0.5, 0.5}), 1).shard.has_value());  // dim 1: not needed
  EXPECT_FALSE(Local(g, OneCompute(g, "emb", "batch0", {0.5, 0.5}), 1).shard.has_value());

  const Program rows = OneCompute(g, "loss", "batch0", {0.75, 0.25});
  const LocalCompute c1 = Local(g, rows, 1);
  ASSERT_TRUE(c1.shard.has_value());
  EXPECT_EQ(c1.shard->full, (ir::Shape{4, 6, 8}));
  EXPECT_EQ(c1.shard->dim, 0);
  EXPECT_EQ(c1.shard->start, 3);
  EXPECT_EQ(c1.out_shape, ir::Shape{});
  const LocalCompute t1 = Local(g, OneCompute(g, "loss", "batch1", {0.5, 0.5}), 1);
  ASSERT_TRUE(t1.shard.has_value());
  EXPECT_EQ(t1.shard->dim, 1);
  EXPECT_EQ(t1.shard->start, 3);
}

TEST(LocalCompute, MoEExpertSplitRenumbersRoutesToTheRanksExperts) {
  ir::Builder b("moe");
  ir::Attrs gate, disp;
  gate.k = 2;
  gate.capacity = 6;
  disp.experts = 4;
  disp.capacity = 6;
  const ValueId x = b.Input("x", {12, 8});
  const ValueId route = b.Op("gate", ir::OpKind::kTopKGate, {b.Input("logits", {12, 4})}, gate);
  const ValueId buf = b.Op("dispatch", ir::OpKind::kMoEDispatch, {x, route}, disp);
  const ValueId y = b.Op("combine", ir::OpKind::kMoECombine, {buf, route});
  b.SetLoss(b.Op("loss", ir::OpKind::kCrossEntropy, {y, b.Input("labels", {12})}));
  const ir::Graph g = *std::move(b).Finish();

  const Program dispatch = OneCompute(g, "dispatch", "experts", {0.5, 0.25, 0.25});  // experts 2, 1, 1
  const LocalCompute d2 = Local(g, dispatch, 2);
  ASSERT_TRUE(d2.experts.has_value());
  EXPECT_EQ(d2.experts->route_input, 1);
  EXPECT_EQ(d2.experts->offset, 3);
  EXPECT_EQ(d2.experts->count, 1);
  EXPECT_EQ(d2.node.attrs.experts, 1);
  EXPECT_EQ(d2.out_shape, (ir::Shape{1, 6, 8}));
  EXPECT_EQ(Local(g, dispatch, 0).experts->count, 2);

  const Program combine = OneCompute(g, "combine", "experts", {0.5, 0.25, 0.25});
  const LocalCompute c1 = Local(g, combine, 1);
  ASSERT_TRUE(c1.experts.has_value());
  EXPECT_EQ(c1.experts->route_input, 1);
  EXPECT_EQ(c1.experts->offset, 2);
  EXPECT_EQ(c1.experts->count, 1);
  EXPECT_EQ(c1.out_shape, (ir::Shape{12, 8}));

  const LocalCompute tokens = Local(g, OneCompute(g, "dispatch", "tokens", {0.5, 0.5}), 1);
  EXPECT_FALSE(tokens.experts.has_value());
  EXPECT_EQ(tokens.node.attrs.experts, 4);
  EXPECT_FALSE(Local(g, OneCompute(g, "combine", "hidden", {0.5, 0.5}), 1).experts.has_value());
}

TEST(LocalCompute, BiasOnceGoesToTheRankWithTheLargestPiece) {
  const ir::Graph g = Tiny();  // fc1: x[8,4] · W[6,4]ᵀ + b[6]
  const Program row = OneCompute(g, "fc1", "row", {0.25, 0.5, 0.25});  // x's 4 columns: 1, 2, 1
  EXPECT_EQ(Local(g, row, 0).num_inputs, 2u);
  EXPECT_EQ(Local(g, row, 1).num_inputs, 3u);
  EXPECT_EQ(Local(g, row, 2).num_inputs, 2u);
  const Program tie = OneCompute(g, "fc1", "row", {0.5, 0.5});  // 2, 2: the first of equals
  EXPECT_EQ(Local(g, tie, 0).num_inputs, 3u);
  EXPECT_EQ(Local(g, tie, 1).num_inputs, 2u);
  EXPECT_EQ(Local(g, OneCompute(g, "fc1", "column", {0.5, 0.5}), 1).num_inputs, 3u);
}

TEST(LocalCompute, AnEmptyPieceIsSkipped) {
  const ir::Graph g = Tiny();
  const Program relu = OneCompute(g, "relu", "split0", {0.9, 0.1, 0.0});  // 8 rows: 7, 1, 0
  EXPECT_FALSE(Local(g, relu, 1).skip);
  EXPECT_TRUE(Local(g, relu, 2).skip);
  EXPECT_EQ(Local(g, relu, 2).out_shape, (ir::Shape{0, 6}));
  // An empty input piece with a whole (Reduce) output: nothing to compute, zeros out.
  const Program row = OneCompute(g, "fc1", "row", {0.9, 0.1, 0.0});  // 4 columns: 4, 0, 0
  EXPECT_FALSE(Local(g, row, 0).skip);
  EXPECT_TRUE(Local(g, row, 1).skip);
  EXPECT_EQ(Local(g, row, 1).out_shape, (ir::Shape{8, 6}));
}

TEST(LocalCompute, RefusesWhatIsNotAComputeInstructionOfTheProgram) {
  const ir::Graph g = Tiny();
  const Program p = DataParallel(g, {0.5, 0.5});
  EXPECT_EQ(LocalComputeOf(g, p, 0, 0).status().message(), "instruction 0 is place_input; expected a compute instruction");
  EXPECT_EQ(LocalComputeOf(g, p, 10, 0).status().message(), "instruction 10 does not exist; the program has 10 instructions");
  EXPECT_EQ(LocalComputeOf(g, p, 6, 2).status().message(), "rank 2 is out of range; expected 0 <= rank < 2");
  EXPECT_TRUE(LocalComputeOf(g, p, 6, 1).ok());
}

}  // namespace
}  // namespace hetsynth::instr
