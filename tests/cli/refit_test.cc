// bench --refit's update of the cost model (cli/refit.h): per device class, measured ÷ predicted
// compute divides the class's rates; inter_node tables scale by their op's ratio; clamps.
#include "refit.h"

#include <gtest/gtest.h>

namespace hetsynth::cli {
namespace {

// Two fast devices on node a, one half and one quarter on node b; an inter_node all-reduce table.
costmodel::Cluster Mixed() {
  costmodel::Cluster c;
  c.name = "mixed";
  c.nodes = {{"a", {1e10, 1e-6}}, {"b", {1e10, 1e-6}}};
  c.inter_node = {1e8, 1e-5};
  c.devices = {{"f0", "fast", 0, 4e12, 1e10, 4e11},
               {"f1", "fast", 0, 4e12, 1e10, 4e11},
               {"h0", "half", 1, 2e12, 1e10, 2e11},
               {"q0", "quarter", 1, 1e12, 1e10, 1e11}};
  c.collectives = {{"all_reduce", "inter_node", {{1e6, 0.01}, {4e6, 0.04}}},
                   {"all_gather", "intra_node", {{1e6, 0.001}}}};
  return c;
}

TEST(Refit, EachDeviceClassGetsItsOwnComputeRatio) {
  RefitSums s;
  // fast: predicted 1 + 1, measured 1.1 + 1.3 → ×1.2; half ×1 ; quarter 1 → 2: ×2.
  s.device_pred = {1.0, 1.0, 1.0, 1.0};
  s.device_meas = {1.1, 1.3, 1.0, 2.0};
  std::string said;
  const costmodel::Cluster next = Refit(Mixed(), s, &said);
  EXPECT_DOUBLE_EQ(next.devices[0].flops, 4e12 / 1.2);
  EXPECT_DOUBLE_EQ(next.devices[1].flops, 4e12 / 1.2);  // a class stays alike
  EXPECT_DOUBLE_EQ(next.devices[1].memory_bandwidth, 4e11 / 1.2);
  EXPECT_DOUBLE_EQ(next.devices[2].flops, 2e12);
  EXPECT_DOUBLE_EQ(next.devices[3].flops, 5e11);
  EXPECT_DOUBLE_EQ(next.devices[3].memory_bandwidth, 5e10);
  EXPECT_EQ(next.Classes().size(), 3u);
  EXPECT_EQ(said, "compute fast x1.200, half x1.000, quarter x2.000");
}

TEST(Refit, ClassesOfOneTypeAreNamedByTheirFirstDevice) {
  costmodel::Cluster c = Mixed();
  c.devices[3].type = "half";  // a half device on node b whose speed differs: a second class
  RefitSums s;
  s.device_pred = {1.0, 1.0, 1.0, 1.0};
  s.device_meas = {1.0, 1.0, 1.5, 2.0};
  std::string said;
  Refit(c, s, &said);
  EXPECT_EQ(said, "compute fast x1.000, half[h0] x1.500, half[q0] x2.000");
}

TEST(Refit, RatiosAreClampedAndUnmeasuredClassesKept) {
  RefitSums s;
  s.device_pred = {1.0, 1.0, 1.0, 0.0};  // nothing predicted on the quarter device: kept
  s.device_meas = {10.0, 10.0, 0.01, 0.5};
  std::string said;
  const costmodel::Cluster next = Refit(Mixed(), s, &said);
  EXPECT_DOUBLE_EQ(next.devices[0].flops, 1e12);  // ×10 clamped to ×4
  EXPECT_DOUBLE_EQ(next.devices[2].flops, 8e12);  // ×0.01 clamped to ×0.25
  EXPECT_DOUBLE_EQ(next.devices[3].flops, 1e12);
}

TEST(Refit, InterNodeTablesScaleByTheirOpsRatio) {
  RefitSums s;
  s.comm["all_reduce"] = {0.02, 0.03};  // ×1.5
  s.comm["gather"] = {0.01, 0.02};      // no inter_node gather table here
  std::string said;
  const costmodel::Cluster next = Refit(Mixed(), s, &said);
  EXPECT_DOUBLE_EQ(next.collectives[0].samples[0].seconds, 0.015);
  EXPECT_DOUBLE_EQ(next.collectives[0].samples[1].seconds, 0.06);
  EXPECT_DOUBLE_EQ(next.collectives[1].samples[0].seconds, 0.001);  // intra_node: untouched
  EXPECT_NE(said.find("all_reduce x1.500"), std::string::npos) << said;
  EXPECT_NE(said.find("gather x2.000 (no inter_node table: not applied)"), std::string::npos) << said;
}

}  // namespace
}  // namespace hetsynth::cli
