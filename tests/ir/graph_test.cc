#include <gtest/gtest.h>

#include "hetsynth/ir/graph.h"
#include "hetsynth/ir/graph_json.h"
#include "hetsynth/ir/models.h"

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

TEST(GraphJson, MalformedFilesNameTheFieldAndValue) {
  auto err = [](const std::string& text) {
    absl::StatusOr<Graph> g = GraphFromJson(text, "bad.json");
    EXPECT_FALSE(g.ok());
    return std::string(g.status().message());
  };
  EXPECT_NE(err("{").find("graph 'bad.json': document: not valid JSON"), std::string::npos);
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
}

}  // namespace
}  // namespace hetsynth::ir
