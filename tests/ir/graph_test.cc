#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <tuple>

#include "hetsynth/ir/graph.h"
#include "hetsynth/ir/graph_json.h"
#include "hetsynth/ir/models.h"
#include "hetsynth/ir/op_table.h"
#include "ir/op_samples.h"

namespace hetsynth::ir {
namespace {

std::string Error(const absl::StatusOr<ValueId>& v) {
  EXPECT_FALSE(v.ok());
  return std::string(v.status().message());
}

TEST(Graph, LinearShapeAndFlopsAreExact) {
  Graph g("t");
  const ValueId x = *g.AddInput("x", {4, 8});
  const ValueId w = *g.AddParameter("w", {3, 8}, Init::Normal(0.1));
  const ValueId b = *g.AddParameter("b", {3}, Init::Zeros());
  const ValueId y = *g.AddOp("y", OpKind::kLinear, {x, w, b});
  EXPECT_EQ(g.value(y).shape, (Shape{4, 3}));
  const Flops f = g.NodeFlops(g.value(y).producer);
  EXPECT_DOUBLE_EQ(f.forward, 2.0 * 4 * 8 * 3 + 12);
  EXPECT_DOUBLE_EQ(f.backward, 4.0 * 4 * 8 * 3 + 12);
}

TEST(Graph, LinearRejectsMismatchedWeightNamingNodeAndShapes) {
  Graph g("t");
  const ValueId x = *g.AddInput("x", {4, 8});
  const ValueId w = *g.AddParameter("w", {3, 7}, Init::Zeros());
  const std::string msg = Error(g.AddOp("fc", OpKind::kLinear, {x, w}));
  EXPECT_NE(msg.find("node 'fc'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[3,7]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected weight [out, 8]"), std::string::npos) << msg;
}

TEST(Graph, ShapeErrorsOfOtherOps) {
  Graph g("t");
  const ValueId a = *g.AddInput("a", {2, 3, 4});
  const ValueId b = *g.AddInput("b", {5});
  EXPECT_NE(Error(g.AddOp("add", OpKind::kAdd, {a, b})).find("does not broadcast"), std::string::npos);
  Attrs heads;
  heads.heads = 3;
  EXPECT_NE(Error(g.AddOp("att", OpKind::kAttention, {a, a, a}, heads)).find("heads=3"), std::string::npos);
  Attrs rs;
  rs.shape = {5, 5};
  EXPECT_NE(Error(g.AddOp("rs", OpKind::kReshape, {a}, rs)).find("element counts differ"), std::string::npos);
  Attrs sl;
  sl.axis = 1;
  sl.start = 2;
  sl.length = 2;
  EXPECT_NE(Error(g.AddOp("sl", OpKind::kSlice, {a}, sl)).find("start=2 length=2"), std::string::npos);
  const ValueId labels = *g.AddInput("labels", {3});
  EXPECT_NE(Error(g.AddOp("ce", OpKind::kCrossEntropy, {a, labels})).find("do not match"), std::string::npos);
  EXPECT_NE(Error(g.AddOp("a", OpKind::kRelu, {a})).find("duplicate value name 'a'"), std::string::npos);
  EXPECT_NE(Error(g.AddOp("r", OpKind::kRelu, {42})).find("does not exist"), std::string::npos);
  EXPECT_FALSE(g.SetLoss(a).ok());  // not a scalar
}

TEST(Graph, BroadcastAddAcceptsSuffixAndOnes) {
  Graph g("t");
  const ValueId a = *g.AddInput("a", {2, 3, 4});
  EXPECT_TRUE(g.AddOp("s1", OpKind::kAdd, {a, *g.AddInput("b1", {4})}).ok());
  EXPECT_TRUE(g.AddOp("s2", OpKind::kAdd, {a, *g.AddInput("b2", {3, 1})}).ok());
  EXPECT_TRUE(g.AddOp("s3", OpKind::kMul, {a, *g.AddInput("b3", {2, 1, 4})}).ok());
}

TEST(GraphJson, EveryModelRoundTripsByteForByte) {
  for (const ModelInfo& m : Models()) {
    const ModelSpec spec = *MakeModelSpec(m.name, {}, 0, Preset::kSmall);
    const Graph g = *BuildModel(spec);
    const std::string text = GraphToJson(g);
    absl::StatusOr<Graph> back = GraphFromJson(text, "mem");
    ASSERT_TRUE(back.ok()) << m.name << ": " << back.status();
    EXPECT_EQ(GraphToJson(*back), text) << m.name;
    EXPECT_EQ(back->nodes().size(), g.nodes().size());
    EXPECT_DOUBLE_EQ(back->TotalFlops().forward, g.TotalFlops().forward);
  }
}

// A frozen parameter (an imported model's constant) stays frozen through a graph file.
TEST(GraphJson, FrozenParametersRoundTrip) {
  Graph g("frozen");
  const ValueId x = *g.AddInput("x", {2, 3});
  const ValueId k = *g.AddConstant("k", {3}, {1, 2, 3});
  const ValueId w = *g.AddParameter("w", {3}, Init::Ones());
  const ValueId y = *g.AddOp("y", OpKind::kMul, {x, k});
  ASSERT_TRUE(g.SetLoss(*g.AddOp("z", OpKind::kMseLoss, {*g.AddOp("yw", OpKind::kMul, {y, w}), x})).ok());
  g.StoreWeightsIn("frozen.safetensors");  // the constant's values live in the weights file
  const std::string text = GraphToJson(g);
  EXPECT_NE(text.find(R"("frozen": true)"), std::string::npos) << text;
  absl::StatusOr<Graph> back = GraphFromJson(text, "mem");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->value(back->Find("k")).frozen);
  EXPECT_FALSE(back->value(back->Find("w")).frozen);
  std::string bad = text;
  bad.replace(bad.find(R"("frozen": true)"), 14, R"("frozen": "no")");
  absl::StatusOr<Graph> b = GraphFromJson(bad, "bad.json");
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("'frozen' is \"no\"; expected true or false"), std::string::npos) << b.status();
}

TEST(GraphJson, MalformedFilesNameTheFieldAndValue) {
  auto err = [](const std::string& text) {
    absl::StatusOr<Graph> g = GraphFromJson(text, "bad.json");
    EXPECT_FALSE(g.ok());
    return std::string(g.status().message());
  };
  EXPECT_NE(err("{").find("graph 'bad.json': document: not valid JSON (line "), std::string::npos) << err("{");
  EXPECT_EQ(err(""), "graph 'bad.json': document: is empty; expected a hetsynth-graph JSON object");
  {  // a directory where the graph file should be
    const std::string dir = ::testing::TempDir() + "/graph-dir.json";
    std::filesystem::create_directories(dir);
    EXPECT_EQ(std::string(ReadGraphFile(dir).status().message()),
              "graph '" + dir + "': is a directory; expected a graph file");
  }
  EXPECT_NE(err(R"({"format":"x"})").find("field 'format'"), std::string::npos);
  const std::string head = R"({"format":"hetsynth-graph","version":1,)";
  EXPECT_NE(err(head + R"("values":[{"name":"x","kind":"input","shape":[2,-1]}],"nodes":[],"loss":"x"})")
                .find("values[0]: 'shape' has -1"),
            std::string::npos);
  EXPECT_NE(err(head + R"("values":[{"name":"x","kind":"input","shape":[2]}],"nodes":[{"name":"y","op":"frob","inputs":["x"]}],"loss":"y"})")
                .find("nodes[0]: 'op' is \"frob\""),
            std::string::npos);
  EXPECT_NE(err(head + R"("values":[{"name":"x","kind":"input","shape":[2]}],"nodes":[{"name":"y","op":"relu","inputs":["z"]}],"loss":"y"})")
                .find("input \"z\" is not a value"),
            std::string::npos);
  EXPECT_NE(err(head + R"("values":[{"name":"x","kind":"input","shape":[2]}],"nodes":[{"name":"y","op":"relu","inputs":["x"],"attrs":{"heads":2}}],"loss":"y"})")
                .find("'heads'=2 is not an attribute"),
            std::string::npos);
  EXPECT_NE(err(head + R"("values":[{"name":"x","kind":"input","shape":[2]}],"nodes":[{"name":"y","op":"relu","inputs":["x"]}],"loss":"y"})")
                .find("expected a scalar"),
            std::string::npos);
  // Unknown fields are refused at every level, with the field's position and a hint.
  const std::string ok_values = R"("values":[{"name":"x","kind":"input","shape":[2]}],)";
  EXPECT_NE(err(head + ok_values + R"("nodes":[{"name":"y","op":"relu","inputs":["x"],"atrs":{}}],"loss":"y"})")
                .find("graph 'bad.json': nodes[0]: unknown field 'atrs'; did you mean 'attrs'?"),
            std::string::npos)
      << err(head + ok_values + R"("nodes":[{"name":"y","op":"relu","inputs":["x"],"atrs":{}}],"loss":"y"})");
  EXPECT_NE(err(head + ok_values + R"("nodes":[],"loss":"x","los":"x"})").find("graph 'bad.json': unknown field 'los'; did you mean 'loss'?"),
            std::string::npos);
  EXPECT_NE(err(head + R"("values":[{"name":"x","kind":"input","shape":[2],"frozn":true}],"nodes":[],"loss":"x"})")
                .find("values[0]: unknown field 'frozn'; did you mean 'frozen'?"),
            std::string::npos);
}

// The op table, walked: every kind has a complete entry, and an op that fails these checks
// (a new op without its sample, arity, shape or FLOPs) fails here.
TEST(OpTable, EveryOpKindHasACompleteEntry) {
  ASSERT_EQ(OpTable().size(), static_cast<size_t>(kNumOpKinds));
  for (int k = 0; k < kNumOpKinds; ++k) {
    const auto kind = static_cast<OpKind>(k);
    const OpDef& def = DefOf(kind);
    SCOPED_TRACE(std::string(def.name));
    EXPECT_EQ(def.kind, kind);
    EXPECT_EQ(OpName(kind), def.name);
    OpKind back;
    ASSERT_TRUE(ParseOpName(def.name, &back));
    EXPECT_EQ(back, kind);
    EXPECT_FALSE(def.camel.empty());
    EXPECT_TRUE(std::all_of(def.name.begin(), def.name.end(),
                            [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'; }));
    EXPECT_GE(def.min_inputs, 1);
    EXPECT_TRUE(def.max_inputs == kVariadic || def.max_inputs >= def.min_inputs);
    EXPECT_LE(def.min_inputs, 4);  // batch_norm: x, moments, gamma, beta
    ASSERT_NE(def.shape, nullptr);
    ASSERT_NE(def.flops, nullptr);

    // A sample node: its shape infers and its FLOPs are finite and non-negative (positive for
    // GEMMs); the graph round-trips through JSON with its attributes.
    absl::StatusOr<Graph> sample = testing::SampleGraph(kind);
    ASSERT_TRUE(sample.ok()) << sample.status();
    const NodeId op = sample->value(sample->Find("op")).producer;
    const Flops f = sample->NodeFlops(op);
    EXPECT_TRUE(std::isfinite(f.forward) && f.forward >= 0) << f.forward;
    EXPECT_TRUE(std::isfinite(f.backward) && f.backward >= 0) << f.backward;
    if (IsGemmLike(kind)) {
      EXPECT_GT(f.forward, 0);
    }
    Graph g = *std::move(sample);
    ValueId loss = g.Find("op");
    const int64_t n = NumElements(g.value(loss).shape);
    if (!g.value(loss).shape.empty()) {  // a loss over the output, as one-class logits [n, 1]
      Attrs column;
      column.shape = {n, 1};
      loss = *g.AddOp("loss", OpKind::kCrossEntropy, {*g.AddOp("column", OpKind::kReshape, {loss}, column),
                                                       *g.AddInput("labels", {n})});
    }
    ASSERT_TRUE(g.SetLoss(loss).ok());
    absl::StatusOr<Graph> back_json = GraphFromJson(GraphToJson(g), "sample.json");
    ASSERT_TRUE(back_json.ok()) << back_json.status();
    EXPECT_EQ(back_json->node(op).attrs, g.node(op).attrs);

    // The wrong number of inputs is refused, naming the node.
    Graph h("arity");
    const ValueId x = *h.AddInput("x", {4, 6, 8});
    const size_t wrong = def.max_inputs == kVariadic ? static_cast<size_t>(def.min_inputs - 1)
                                                     : static_cast<size_t>(def.max_inputs + 1);
    const std::string msg = Error(h.AddOp("bad", kind, std::vector<ValueId>(wrong, x)));
    EXPECT_NE(msg.find("node 'bad'"), std::string::npos) << msg;
    EXPECT_NE(msg.find(StrCat(" but got ", wrong)), std::string::npos) << msg;
  }
}

TEST(OpTable, ArityMessagesAreWorded) {
  Graph g("t");
  const ValueId x = *g.AddInput("x", {2, 3});
  EXPECT_EQ(Error(g.AddOp("r", OpKind::kRelu, {x, x})), "node 'r' (relu of 'x', 'x'): takes 1 inputs but got 2");
  EXPECT_EQ(Error(g.AddOp("l", OpKind::kLinear, {x})), "node 'l' (linear of 'x'): takes 2 to 3 inputs but got 1");
  EXPECT_EQ(Error(g.AddOp("c", OpKind::kConcat, {})), "node 'c' (concat of ): takes at least 1 input but got 0");
}

TEST(OpTable, IntegerInputsGetNoGradientAndGemmsAreTheMatrixOps) {
  EXPECT_FALSE(IsDifferentiableInput(OpKind::kEmbedding, 0));  // ids
  EXPECT_TRUE(IsDifferentiableInput(OpKind::kEmbedding, 1));
  EXPECT_TRUE(IsDifferentiableInput(OpKind::kCrossEntropy, 0));
  EXPECT_FALSE(IsDifferentiableInput(OpKind::kCrossEntropy, 1));  // labels
  EXPECT_TRUE(IsDifferentiableInput(OpKind::kMoEDispatch, 0));
  EXPECT_FALSE(IsDifferentiableInput(OpKind::kMoEDispatch, 1));  // the route only selects
  EXPECT_TRUE(IsDifferentiableInput(OpKind::kMoECombine, 1));    // the route carries gate weights
  EXPECT_TRUE(IsDifferentiableInput(OpKind::kConcat, 40));
  // Labels index the logits' last dim, ids the table's rows; no other op takes integers.
  std::vector<OpKind> integers;
  for (const OpDef& def : OpTable()) {
    if (def.integer_input.input != kNoOperand) integers.push_back(def.kind);
  }
  EXPECT_EQ(integers, (std::vector<OpKind>{OpKind::kEmbedding, OpKind::kCrossEntropy}));
  const IntegerInput labels = DefOf(OpKind::kCrossEntropy).integer_input;
  EXPECT_EQ(std::tuple(labels.input, labels.bound_input, labels.bound_dim), std::tuple(1, 0, -1));
  const IntegerInput ids = DefOf(OpKind::kEmbedding).integer_input;
  EXPECT_EQ(std::tuple(ids.input, ids.bound_input, ids.bound_dim), std::tuple(0, 1, 0));
  std::vector<OpKind> gemm;
  for (const OpDef& def : OpTable()) {
    if (IsGemmLike(def.kind)) gemm.push_back(def.kind);
  }
  EXPECT_EQ(gemm, (std::vector<OpKind>{OpKind::kLinear, OpKind::kMatMul, OpKind::kAttention, OpKind::kConv2d}));
}

// What an elementwise op needs besides its kernels is its entry: its shape, FLOPs, JSON name
// and sharding family come from there (instr_test checks the rules that follow from it).
TEST(OpTable, ElementwiseOpsAreDescribedByTheirEntryAlone) {
  int seen = 0;
  for (const OpDef& def : OpTable()) {
    if (def.sharding.family != Sharding::Family::kKeepDims || def.sharding.whole_trailing_dims != 0) continue;
    SCOPED_TRACE(std::string(def.name));
    ++seen;
    EXPECT_EQ(def.min_inputs, 1);
    absl::StatusOr<testing::OpSample> s = testing::SampleOf(def.kind);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(InferShape(def.kind, s->inputs, s->attrs).value(), s->inputs[0]);
    EXPECT_EQ(def.local_attrs, nullptr);
    EXPECT_EQ(def.routes.input, kNoOperand);
  }
  EXPECT_GE(seen, 3);  // relu, gelu, dropout, ...
}

}  // namespace
}  // namespace hetsynth::ir
