#include <gtest/gtest.h>

#include "hetsynth/ir/models.h"

namespace hetsynth::ir {
namespace {

TEST(Models, ZooHasTheFiveModelsInOrder) {
  EXPECT_EQ(ModelNames(), "mlp, gpt, vit, vgg19, moe");
}

TEST(Models, EveryModelBuildsAtDefaultAndSmallSizes) {
  for (const ModelInfo& m : Models()) {
    for (Preset p : {Preset::kDefault, Preset::kSmall}) {
      absl::StatusOr<ModelSpec> spec = MakeModelSpec(m.name, {}, 0, p);
      ASSERT_TRUE(spec.ok()) << spec.status();
      absl::StatusOr<Graph> g = BuildModel(*spec);
      ASSERT_TRUE(g.ok()) << m.name << ": " << g.status();
      EXPECT_TRUE(g->Validate().ok());
      EXPECT_GT(g->TotalFlops().forward, 0);
    }
  }
}

TEST(Models, GptDefaultParameterCountMatchesTheDefinition) {
  const Graph g = *BuildModel(*MakeModelSpec("gpt", {}, 0));
  const int64_t v = 33278, t = 128, c = 768, f = 3072, layers = 12;
  const int64_t block = 4 * (c * c + c) + (f * c + f) + (c * f + c) + 4 * c;
  EXPECT_EQ(g.NumParameterElements(), v * c + t * c + layers * block + 2 * c + v * c);
  EXPECT_EQ(g.value(g.Find("tokens")).shape, (Shape{32, 128}));
  EXPECT_EQ(g.value(g.Find("layers.11.mlp.fc1.weight")).shape, (Shape{3072, 768}));
}

TEST(Models, VitHasClassTokenAndPatchGrid) {
  const Graph g = *BuildModel(*MakeModelSpec("vit", {}, 0));
  EXPECT_EQ(g.value(g.Find("pos_emb.weight")).shape, (Shape{65, 768}));  // 8x8 patches + class token
  EXPECT_EQ(g.value(g.Find("patch_embed.weight")).shape, (Shape{768, 3, 4, 4}));
}

TEST(Models, Vgg19HasSixteenConvsAndThreeLinears) {
  const Graph g = *BuildModel(*MakeModelSpec("vgg19", {}, 0));
  int convs = 0, linears = 0;
  for (const Node& n : g.nodes()) {
    convs += n.kind == OpKind::kConv2d;
    linears += n.kind == OpKind::kLinear;
  }
  EXPECT_EQ(convs, 16);
  EXPECT_EQ(linears, 3);
  EXPECT_EQ(g.value(g.Find("features.15.weight")).shape, (Shape{512, 512, 3, 3}));
}

TEST(Models, Vgg19Pool7IsTorchvisionsClassifier) {
  // AdaptiveAvgPool2d(7) on the 1×1 map of a 32×32 image repeats it: 512·49 = 25088 features.
  const Graph g = *BuildModel(*MakeModelSpec("vgg19", {"pool=7"}, 0));
  EXPECT_EQ(g.value(g.Find("avgpool")).shape, (Shape{32, 512, 7, 7}));
  EXPECT_EQ(g.value(g.Find("classifier.0.weight")).shape, (Shape{4096, 25088}));
  // Convolutions: Σ (9·in·out + out) over the VGG19 configuration = 20,024,384; the classifier
  // 25088·4096 + 4096 + 4096·4096 + 4096 + 4096·10 + 10 = 119,586,826.
  EXPECT_EQ(g.NumParameterElements(), 20024384 + 119586826);
  EXPECT_FALSE(MakeModelSpec("vgg19", {"pool=0"}, 0).ok() && BuildModel(*MakeModelSpec("vgg19", {"pool=0"}, 0)).ok());
}

TEST(Models, MoeReplacesEveryOtherFfnWithExperts) {
  const Graph g = *BuildModel(*MakeModelSpec("moe", {"experts=4"}, 8, Preset::kSmall));
  EXPECT_NE(g.Find("layers.0.mlp.fc1.weight"), kNoValue);
  EXPECT_NE(g.Find("layers.1.moe.fc1.weight"), kNoValue);
  EXPECT_EQ(g.Find("layers.1.mlp.fc1.weight"), kNoValue);
  // capacity = ceil(2 · S · 1.25 / E) with S = 8·16 tokens.
  EXPECT_EQ(g.value(g.Find("layers.1.moe.dispatch")).shape, (Shape{4, 80, 32}));
}

TEST(Models, OverridesAndErrors) {
  const ModelSpec s = *MakeModelSpec("gpt", {"layers=3", "hidden=48", "heads=6"}, 2, Preset::kSmall);
  EXPECT_EQ(s.Int("layers"), 3);
  EXPECT_EQ(s.batch, 2);
  auto msg = [](absl::StatusOr<ModelSpec> s) { return std::string(s.status().message()); };
  EXPECT_NE(msg(MakeModelSpec("nosuch", {}, 0)).find("known models: mlp, gpt, vit, vgg19, moe"), std::string::npos);
  EXPECT_NE(msg(MakeModelSpec("gpt", {"depth=3"}, 0)).find("no hyperparameter 'depth'"), std::string::npos);
  EXPECT_NE(msg(MakeModelSpec("gpt", {"layers=2.5"}, 0)).find("layers='2.5'; expected a positive integer"),
            std::string::npos);
  EXPECT_NE(msg(MakeModelSpec("gpt", {"layers"}, 0)).find("expected KEY=VALUE"), std::string::npos);
  const absl::StatusOr<Graph> g = BuildModel(*MakeModelSpec("gpt", {"heads=5"}, 0, Preset::kSmall));
  ASSERT_FALSE(g.ok());
  EXPECT_NE(std::string(g.status().message()).find("heads=5 does not divide hidden=32"), std::string::npos);
  EXPECT_FALSE(BuildModel(*MakeModelSpec("vgg19", {"image=48"}, 0)).ok());
}

}  // namespace
}  // namespace hetsynth::ir
