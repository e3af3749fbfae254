// bench --refit's mapping from traced collectives to the tensors the cost model priced them at
// (cli/refit_names.h): a bucket's all-reduce is compared with the price at the parameter that
// completes it, and mesh-level suffixes are dropped.
#include "refit_names.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace hetsynth::cli {
namespace {

TEST(RefitNames, EventsMapToThePricedTensor) {
  const std::vector<std::string> last = {"head.weight", "layers.1.attn.q.weight"};
  auto of = [&](const std::string& inside) {
    return RefitTensorOf(inside, [&](size_t k) { return k < last.size() ? last[k] : std::string(); });
  };
  EXPECT_EQ(of("embed"), "embed");
  EXPECT_EQ(of("grad layers.0.ln2"), "layers.0.ln2");
  EXPECT_EQ(of("grad tok_emb.weight, nodes"), "tok_emb.weight");
  EXPECT_EQ(of("grad layers.1.w, devices"), "layers.1.w");
  EXPECT_EQ(of("bucket 0: 14 gradients"), "head.weight");
  EXPECT_EQ(of("bucket 1: 10 gradients, nodes"), "layers.1.attn.q.weight");
  EXPECT_EQ(of("bucket 7: 3 gradients"), "bucket 7: 3 gradients");  // no such bucket: kept
  EXPECT_EQ(of("bucketed.weight"), "bucketed.weight");
}

}  // namespace
}  // namespace hetsynth::cli
