#include "hetsynth/costmodel/cluster.h"
#include "hetsynth/base/status.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

namespace hetsynth::costmodel {
namespace {

using nlohmann::json;

const std::string kClusters = std::string(HETSYNTH_SOURCE_DIR) + "/examples/clusters/";

Cluster Load(const std::string& file) {
  absl::StatusOr<Cluster> c = ReadClusterFile(kClusters + file);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *std::move(c) : Cluster{};
}

// Two nodes (n1 overrides the intra link), a type table, a named device, an inline device and a
// name_prefix entry: every feature, small enough to mutate in each malformed-file test.
json Base() {
  return json::parse(R"({
    "format": "hetsynth-cluster", "version": 1, "name": "lab",
    "device_types": {
      "V100": {"flops": 3.86e12, "memory_bytes": 34359738368, "memory_bandwidth": 9.0e11},
      "P100": {"flops": 2.15e12, "memory_bytes": 17179869184, "memory_bandwidth": 7.32e11}
    },
    "nodes": [{"name": "n0"}, {"name": "n1", "intra_node": {"bandwidth": 1.2e10, "latency": 1e-5}}],
    "devices": [
      {"name": "gpu0", "type": "V100", "node": "n0"},
      {"name": "gpu1", "type": "custom", "node": "n0", "flops": 1e12, "memory_bytes": 8e9,
       "memory_bandwidth": 3e11},
      {"name_prefix": "n1/gpu", "count": 4, "type": "P100", "node": "n1"}
    ],
    "links": {"intra_node": {"bandwidth": 1.5e11, "latency": 5e-6},
              "inter_node": {"bandwidth": 1.3e9, "latency": 2.5e-5}},
    "collectives": [{"op": "all_reduce", "link": "inter_node",
                     "samples": [[1048576, 0.0021], [16777216, 0.027]]}]
  })");
}

// The error message for `j`, failing the test when it parses.
std::string Error(const json& j) {
  absl::StatusOr<Cluster> c = ParseCluster(j.dump(), "lab.json");
  EXPECT_FALSE(c.ok()) << "parsed, but should not have:\n" << j.dump(1);
  if (c.ok()) return "";
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
  const std::string msg(c.status().message());
  EXPECT_EQ(msg.rfind("cluster 'lab.json': ", 0), 0u) << msg;  // always names the file first
  return msg;
}

#define EXPECT_HAS(msg, part) EXPECT_NE((msg).find(part), std::string::npos) << (msg)

// --- The example files -------------------------------------------------------------------------

TEST(ClusterExamples, EveryExampleFileParses) {
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kClusters)) {
    if (entry.path().extension() != ".json") continue;
    ++files;
    absl::StatusOr<Cluster> c = ReadClusterFile(entry.path().string());
    EXPECT_TRUE(c.ok()) << c.status();
  }
  EXPECT_GE(files, 4);
}

TEST(ClusterExamples, Reference64HasTwoNodesOfV100AndSixOfP100) {
  const Cluster c = Load("reference-64.json");
  EXPECT_EQ(c.name, "reference-64");
  EXPECT_EQ(c.size(), 64);
  EXPECT_EQ(c.nodes.size(), 8u);
  const std::vector<DeviceClass> classes = c.Classes();
  ASSERT_EQ(classes.size(), 2u);
  EXPECT_EQ(classes[0].key.rfind("V100 ", 0), 0u) << classes[0].key;
  EXPECT_EQ(classes[1].key.rfind("P100 ", 0), 0u) << classes[1].key;
  EXPECT_EQ(classes[0].devices.size(), 16u);
  EXPECT_EQ(classes[1].devices.size(), 48u);
  EXPECT_EQ(classes[0].devices.front(), 0);
  EXPECT_EQ(classes[1].devices.front(), 16);
  EXPECT_EQ(c.devices[0].name, "n0/gpu0");
  EXPECT_EQ(c.devices[63].name, "n7/gpu7");
  EXPECT_EQ(c.devices[63].node, 7);
  EXPECT_DOUBLE_EQ(c.devices[0].flops, 3.86e12);
  EXPECT_DOUBLE_EQ(c.devices[0].memory_bytes, 34359738368.0);
  EXPECT_DOUBLE_EQ(c.devices[16].flops, 2.15e12);
  EXPECT_DOUBLE_EQ(c.devices[16].memory_bytes, 17179869184.0);
  EXPECT_DOUBLE_EQ(c.TotalFlops(), 16 * 3.86e12 + 48 * 2.15e12);
  EXPECT_EQ(c.WorldLink(), (Link{1.3e9, 2.5e-5}));
  EXPECT_EQ(c.nodes[0].intra, (Link{1.5e11, 5e-6}));
  EXPECT_EQ(c.nodes[7].intra, (Link{1.2e10, 1e-5}));
}

TEST(ClusterExamples, Homogeneous8IsOneClassOnOneNode) {
  const Cluster c = Load("homogeneous-8.json");
  EXPECT_EQ(c.size(), 8);
  EXPECT_EQ(c.nodes.size(), 1u);
  ASSERT_EQ(c.Classes().size(), 1u);
  EXPECT_EQ(c.Classes()[0].devices.size(), 8u);
  EXPECT_EQ(c.WorldLink(), (Link{1.5e11, 5e-6}));  // one node: NVLink, not the network
}

TEST(ClusterExamples, Mixed4HasRelativeSpeedsOneOneHalfQuarter) {
  const Cluster c = Load("mixed-4.json");
  ASSERT_EQ(c.size(), 4);
  EXPECT_EQ(c.nodes.size(), 1u);
  EXPECT_EQ(c.Classes().size(), 3u);
  const double fast = c.devices[0].flops;
  EXPECT_DOUBLE_EQ(c.devices[1].flops / fast, 1.0);
  EXPECT_DOUBLE_EQ(c.devices[2].flops / fast, 0.5);
  EXPECT_DOUBLE_EQ(c.devices[3].flops / fast, 0.25);
  EXPECT_EQ(c.devices[3].name, "quarter0");
  // Too small for a full gpt replica with Adam (~124M params x 16 bytes ~ 2 GB).
  EXPECT_LT(c.devices[3].memory_bytes, 124e6 * 16);
  EXPECT_GT(c.devices[0].memory_bytes, 124e6 * 16);
}

TEST(ClusterExamples, Large1024HasFourClassesOn128Nodes) {
  const Cluster c = Load("large-1024.json");
  EXPECT_EQ(c.size(), 1024);
  EXPECT_EQ(c.nodes.size(), 128u);
  const std::vector<DeviceClass> classes = c.Classes();
  ASSERT_EQ(classes.size(), 4u);
  std::set<std::string> types;
  for (const DeviceClass& k : classes) {
    EXPECT_EQ(k.devices.size(), 256u) << k.key;
    types.insert(c.devices[k.devices.front()].type);
  }
  EXPECT_EQ(types, (std::set<std::string>{"H100", "A100", "V100", "P100"}));
}

// --- Links ---------------------------------------------------------------------------------------

TEST(ClusterLinks, GroupLinkIsIntraOnOneNodeAndInterAcrossNodes) {
  const Cluster c = Load("reference-64.json");
  EXPECT_EQ(c.GroupLink({0, 1, 2, 7}), (Link{1.5e11, 5e-6}));   // n0: NVLink
  EXPECT_EQ(c.GroupLink({3}), (Link{1.5e11, 5e-6}));            // one device: its node's link
  EXPECT_EQ(c.GroupLink({16, 17, 23}), (Link{1.2e10, 1e-5}));   // n2: the PCIe override
  EXPECT_EQ(c.GroupLink({0, 8}), (Link{1.3e9, 2.5e-5}));        // n0 + n1: the network
  EXPECT_EQ(c.GroupLink({0, 1, 16, 17}), (Link{1.3e9, 2.5e-5}));
}

TEST(ClusterLinks, GroupLinkAcrossNodesIsBoundedByASlowerIntraLink) {
  // large-1024's network (2.5e10 B/s) is faster than a P100 node's PCIe (1.2e10 B/s).
  const Cluster c = Load("large-1024.json");
  const int p100 = 96 * 8;  // first device of the first P100 node
  EXPECT_EQ(c.GroupLink({0, 8}), (Link{2.5e10, 1e-5}));               // H100 nodes, one device each
  EXPECT_EQ(c.GroupLink({p100, p100 + 8}), (Link{2.5e10, 1e-5}));     // one device per P100 node
  EXPECT_EQ(c.GroupLink({p100, p100 + 1, p100 + 8}), (Link{1.2e10, 1e-5}));  // crosses PCIe too
  EXPECT_EQ(c.WorldLink(), (Link{1.2e10, 1e-5}));
}

// --- Canonical form and fingerprint ----------------------------------------------------------------

TEST(ClusterJson, RoundTripKeepsEverythingAndTheFingerprint) {
  absl::StatusOr<Cluster> a = ParseCluster(Base().dump(), "lab.json");
  ASSERT_TRUE(a.ok()) << a.status();
  const std::string text = ClusterToJson(*a);
  absl::StatusOr<Cluster> b = ParseCluster(text, "canonical.json");
  ASSERT_TRUE(b.ok()) << b.status() << "\n" << text;
  EXPECT_EQ(ClusterToJson(*b), text);
  EXPECT_EQ(b->Fingerprint(), a->Fingerprint());
  EXPECT_EQ(a->Fingerprint().size(), 16u);
  EXPECT_EQ(a->Fingerprint().find_first_not_of("0123456789abcdef"), std::string::npos);
  ASSERT_EQ(b->size(), 6);
  EXPECT_EQ(b->name, "lab");
  EXPECT_EQ(b->devices[1].type, "custom");
  EXPECT_DOUBLE_EQ(b->devices[1].memory_bytes, 8e9);
  EXPECT_EQ(b->devices[5].name, "n1/gpu3");
  EXPECT_EQ(b->nodes[1].intra, (Link{1.2e10, 1e-5}));
  ASSERT_EQ(b->collectives.size(), 1u);
  EXPECT_EQ(b->collectives[0].op, "all_reduce");
  EXPECT_EQ(b->collectives[0].link, "inter_node");
  ASSERT_EQ(b->collectives[0].samples.size(), 2u);
  EXPECT_DOUBLE_EQ(b->collectives[0].samples[1].seconds, 0.027);
}

TEST(ClusterJson, ForwardRatesAreOptionalAndRoundTrip) {
  json j = Base();
  j["device_types"]["V100"]["forward_flops"] = 3e12;
  j["devices"][1]["forward_memory_bandwidth"] = 2e11;
  absl::StatusOr<Cluster> a = ParseCluster(j.dump(), "lab.json");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_DOUBLE_EQ(a->devices[0].forward_flops, 3e12);
  EXPECT_EQ(a->devices[0].forward_memory_bandwidth, 0);
  EXPECT_DOUBLE_EQ(a->devices[0].ForwardMemoryBandwidth(), 9e11);  // absent: the training rate
  EXPECT_DOUBLE_EQ(a->devices[1].forward_memory_bandwidth, 2e11);
  EXPECT_DOUBLE_EQ(a->devices[2].ForwardFlops(), 2.15e12);
  const std::string text = ClusterToJson(*a);
  absl::StatusOr<Cluster> b = ParseCluster(text, "canonical.json");
  ASSERT_TRUE(b.ok()) << b.status() << "\n" << text;
  EXPECT_EQ(ClusterToJson(*b), text);
  EXPECT_EQ(b->Fingerprint(), a->Fingerprint());
  // A file without them writes (and fingerprints) as before they existed.
  const absl::StatusOr<Cluster> base = ParseCluster(Base().dump(), "lab.json");
  ASSERT_TRUE(base.ok());
  EXPECT_EQ(ClusterToJson(*base).find("forward"), std::string::npos);
  EXPECT_NE(base->Fingerprint(), a->Fingerprint());
  j["device_types"]["V100"]["forward_flops"] = -1;
  EXPECT_HAS(Error(j), "device_types.V100: forward_flops=-1; expected a positive number (FLOP/s)");
  j = Base();
  j["devices"][1]["forward_memory_bandwidth"] = 0;
  EXPECT_HAS(Error(j), "devices[1] ('gpu1'): forward_memory_bandwidth=0; expected a positive number (bytes/s)");
}

TEST(ClusterJson, GemmOperandBandwidthIsOptionalRoundTripsAndSeparatesClasses) {
  json j = Base();
  j["device_types"]["V100"]["gemm_operand_bandwidth"] = 4e11;
  absl::StatusOr<Cluster> a = ParseCluster(j.dump(), "lab.json");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_DOUBLE_EQ(a->devices[0].gemm_operand_bandwidth, 4e11);
  EXPECT_EQ(a->devices[2].gemm_operand_bandwidth, 0);  // a P100: absent, not priced apart
  const std::string text = ClusterToJson(*a);
  absl::StatusOr<Cluster> b = ParseCluster(text, "canonical.json");
  ASSERT_TRUE(b.ok()) << b.status() << "\n" << text;
  EXPECT_EQ(ClusterToJson(*b), text);
  const absl::StatusOr<Cluster> base = ParseCluster(Base().dump(), "lab.json");
  ASSERT_TRUE(base.ok());
  EXPECT_EQ(ClusterToJson(*base).find("gemm_operand"), std::string::npos);
  EXPECT_NE(base->Fingerprint(), a->Fingerprint());
  // The rate is part of a class's identity; a device may override its type's.
  EXPECT_NE(a->Classes()[0].key.find("gemm_operand_bandwidth=4e+11"), std::string::npos) << a->Classes()[0].key;
  j["devices"][1]["gemm_operand_bandwidth"] = 2e11;
  absl::StatusOr<Cluster> c = ParseCluster(j.dump(), "lab.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->devices[1].gemm_operand_bandwidth, 2e11);
  j["devices"][1]["gemm_operand_bandwidth"] = "fast";
  EXPECT_HAS(Error(j), "devices[1] ('gpu1'): gemm_operand_bandwidth=\"fast\"; expected a positive number (bytes/s)");
  j = Base();
  j["device_types"]["V100"]["gemm_operand_bandwidth"] = 0;
  EXPECT_HAS(Error(j), "device_types.V100: gemm_operand_bandwidth=0; expected a positive number (bytes/s)");
}

TEST(ClusterJson, ExamplesRoundTripToTheSameFingerprint) {
  for (const char* file : {"reference-64.json", "homogeneous-8.json", "mixed-4.json", "large-1024.json"}) {
    const Cluster a = Load(file);
    absl::StatusOr<Cluster> b = ParseCluster(ClusterToJson(a), file);
    ASSERT_TRUE(b.ok()) << file << ": " << b.status();
    EXPECT_EQ(b->Fingerprint(), a.Fingerprint()) << file;
    EXPECT_EQ(b->Classes().size(), a.Classes().size()) << file;
  }
}

TEST(ClusterJson, FingerprintChangesWithAnyNumber) {
  const std::string base = ParseCluster(Base().dump(), "lab.json")->Fingerprint();
  json j = Base();
  j["device_types"]["P100"]["flops"] = 2.16e12;
  EXPECT_NE(ParseCluster(j.dump(), "lab.json")->Fingerprint(), base);
  j = Base();
  j["links"]["inter_node"]["latency"] = 2.6e-5;
  EXPECT_NE(ParseCluster(j.dump(), "lab.json")->Fingerprint(), base);
  j = Base();
  j["collectives"][0]["samples"][0][1] = 0.0022;
  EXPECT_NE(ParseCluster(j.dump(), "lab.json")->Fingerprint(), base);
  // Field order in the file does not matter; only the cluster it describes.
  EXPECT_EQ(ParseCluster(Base().dump(2), "other-name.json")->Fingerprint(), base);
}

TEST(ClusterJson, EquivalentSpellingsShareTheFingerprint) {
  // Explicit names and inline numbers instead of name_prefix and a type: the same cluster.
  json j = Base();
  j["devices"].erase(2);
  for (int k = 0; k < 4; ++k) {
    j["devices"].push_back({{"name", StrCat("n1/gpu", k)}, {"type", "P100"}, {"node", "n1"},
                            {"flops", 2.15e12}, {"memory_bytes", 17179869184.0},
                            {"memory_bandwidth", 7.32e11}});
  }
  j["device_types"].erase("P100");
  absl::StatusOr<Cluster> c = ParseCluster(j.dump(), "lab.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->Fingerprint(), ParseCluster(Base().dump(), "lab.json")->Fingerprint());
  j["name"] = "lab2";
  EXPECT_NE(ParseCluster(j.dump(), "lab.json")->Fingerprint(), c->Fingerprint());
}

TEST(ClusterJson, InlineFieldsOverrideTheType) {
  json j = Base();
  j["devices"][0]["memory_bytes"] = 17179869184;  // a 16 GiB V100
  absl::StatusOr<Cluster> c = ParseCluster(j.dump(), "lab.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->devices[0].memory_bytes, 17179869184.0);
  EXPECT_DOUBLE_EQ(c->devices[0].flops, 3.86e12);
  // A V100 with less memory is its own class: it cannot take the same share.
  EXPECT_EQ(c->Classes().size(), 3u);
  absl::StatusOr<Cluster> back = ParseCluster(ClusterToJson(*c), "lab.json");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_DOUBLE_EQ(back->devices[0].memory_bytes, 17179869184.0);
}

TEST(ClusterJson, NameDefaultsToTheFileStem) {
  json j = Base();
  j.erase("name");
  absl::StatusOr<Cluster> c = ParseCluster(j.dump(), "dir/my-lab.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->name, "my-lab");
}

// --- Malformed files: one message naming the place, the field, the value and the expectation ------

TEST(ClusterErrors, MissingFileIsNotFound) {
  absl::StatusOr<Cluster> c = ReadClusterFile("/nonexistent/lab.json");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_HAS(std::string(c.status().message()), "cluster '/nonexistent/lab.json'");
}

TEST(ClusterErrors, NotJsonSaysWhere) {
  absl::StatusOr<Cluster> c = ParseCluster("{\"format\": \"hetsynth-cluster\",}", "lab.json");
  ASSERT_FALSE(c.ok());
  const std::string msg(c.status().message());
  EXPECT_HAS(msg, "cluster 'lab.json': not valid JSON");
  EXPECT_HAS(msg, "line 1, column");
  EXPECT_HAS(ParseCluster("[1, 2]", "lab.json").status().message(), "expected a JSON object");
}

TEST(ClusterErrors, NonFiniteNumberIsRejected) {
  // JSON has no infinity; an overflowing literal is the only way to write one.
  std::string text = Base().dump();
  text.replace(text.find("3860000000000.0"), 15, "1e999");
  absl::StatusOr<Cluster> c = ParseCluster(text, "lab.json");
  ASSERT_FALSE(c.ok());
  EXPECT_HAS(std::string(c.status().message()), "1e999");
}

TEST(ClusterErrors, WrongFormatOrVersion) {
  json j = Base();
  j["format"] = "hetsynth-graph";
  EXPECT_HAS(Error(j), "format=\"hetsynth-graph\"; expected \"hetsynth-cluster\"");
  j = Base();
  j["version"] = 2;
  EXPECT_HAS(Error(j), "version=2; expected 1");
  j = Base();
  j.erase("version");
  EXPECT_HAS(Error(j), "version=missing");
}

TEST(ClusterErrors, MissingRequiredFields) {
  for (const char* field : {"nodes", "devices", "links"}) {
    json j = Base();
    j.erase(field);
    EXPECT_HAS(Error(j), StrCat("missing required field '", field, "'"));
  }
  for (const char* link : {"intra_node", "inter_node"}) {
    json j = Base();
    j["links"].erase(link);
    EXPECT_HAS(Error(j), StrCat("links: missing required field '", link, "'"));
  }
  json j = Base();
  j["devices"][0].erase("node");
  EXPECT_HAS(Error(j), "devices[0] ('gpu0'): missing required field 'node'");
  j = Base();
  j["devices"][0].erase("type");
  EXPECT_HAS(Error(j), "devices[0] ('gpu0'): missing required field 'type'");
  j = Base();
  j["devices"][0].erase("name");
  EXPECT_HAS(Error(j), "devices[0]: missing required field 'name'");
  j = Base();
  j["links"]["inter_node"].erase("latency");
  EXPECT_HAS(Error(j), "links.inter_node: missing required field 'latency'");
  j = Base();
  j["device_types"]["V100"].erase("flops");
  EXPECT_HAS(Error(j), "device_types.V100: missing required field 'flops'");
  j = Base();
  j["devices"][2].erase("count");
  EXPECT_HAS(Error(j), "devices[2] (name_prefix 'n1/gpu'): missing required field 'count'");
}

TEST(ClusterErrors, WrongJsonTypes) {
  json j = Base();
  j["nodes"] = json::object();
  EXPECT_HAS(Error(j), "nodes is an object; expected an array");
  j = Base();
  j["devices"][0]["flops"] = "fast";
  EXPECT_HAS(Error(j), "devices[0] ('gpu0'): flops=\"fast\"; expected a positive number (FLOP/s)");
  j = Base();
  j["devices"][0]["node"] = 0;
  EXPECT_HAS(Error(j), "devices[0] ('gpu0'): node=0; expected a non-empty string");
  j = Base();
  j["links"]["intra_node"] = 1.5e11;
  EXPECT_HAS(Error(j), "links.intra_node: link is a number; expected {\"bandwidth\"");
  j = Base();
  j["devices"][1] = "gpu1";
  EXPECT_HAS(Error(j), "devices[1]: device is a string; expected an object");
  j = Base();
  j["collectives"][0]["samples"][0] = json::array({1, 2, 3});
  EXPECT_HAS(Error(j), "samples[0]=[1,2,3]; expected [bytes, seconds]");
}

TEST(ClusterErrors, NonPositiveNumbersNameDeviceFieldAndValue) {
  json j = Base();
  j["devices"][1]["memory_bytes"] = -2;
  EXPECT_HAS(Error(j), "cluster 'lab.json': devices[1] ('gpu1'): memory_bytes=-2; expected a positive number");
  j = Base();
  j["devices"][2]["flops"] = 0;
  EXPECT_HAS(Error(j), "devices[2] (name_prefix 'n1/gpu'): flops=0; expected a positive number (FLOP/s)");
  j = Base();
  j["device_types"]["P100"]["memory_bandwidth"] = -7.32e11;
  EXPECT_HAS(Error(j), "device_types.P100: memory_bandwidth=-7.32e+11; expected a positive number (bytes/s)");
  j = Base();
  j["links"]["inter_node"]["bandwidth"] = 0;
  EXPECT_HAS(Error(j), "links.inter_node: bandwidth=0; expected a positive number (bytes/s)");
  j = Base();
  j["nodes"][1]["intra_node"]["latency"] = -1e-5;
  EXPECT_HAS(Error(j), "nodes[1] ('n1').intra_node: latency=-1e-05; expected a non-negative number (seconds)");
}

TEST(ClusterErrors, ZeroLatencyIsAllowed) {
  json j = Base();
  j["links"]["intra_node"]["latency"] = 0;
  EXPECT_TRUE(ParseCluster(j.dump(), "lab.json").ok());
}

TEST(ClusterErrors, UnknownNodeListsTheKnownOnes) {
  json j = Base();
  j["devices"][0]["node"] = "n9";
  const std::string msg = Error(j);
  EXPECT_HAS(msg, "devices[0] ('gpu0'): node='n9' is not a node");
  EXPECT_HAS(msg, "known nodes: n0, n1");
  EXPECT_EQ(msg.find("did you mean"), std::string::npos) << msg;  // n0 and n1 are equally close
  j["devices"][0]["node"] = "n11";
  EXPECT_HAS(Error(j), "node='n11' is not a node; did you mean 'n1'?");
}

TEST(ClusterErrors, UnknownTypeListsTheKnownOnes) {
  json j = Base();
  j["devices"][0]["type"] = "V1OO";
  const std::string msg = Error(j);
  EXPECT_HAS(msg, "devices[0] ('gpu0'): type='V1OO' is not in device_types");
  EXPECT_HAS(msg, "did you mean 'V100'?");
  EXPECT_HAS(msg, "known types: P100, V100");
  // An unknown type is fine when the device gives every number inline (gpu1 'custom').
  j = Base();
  j["devices"][1].erase("memory_bandwidth");
  EXPECT_HAS(Error(j), "devices[1] ('gpu1'): type='custom' is not in device_types");
}

TEST(ClusterErrors, DuplicateNames) {
  json j = Base();
  j["devices"][1]["name"] = "gpu0";
  EXPECT_HAS(Error(j), "devices[1] ('gpu0'): duplicate device name 'gpu0' (first defined by devices[0] ('gpu0'))");
  j = Base();
  j["devices"][0]["name"] = "n1/gpu2";  // collides with an expanded name_prefix entry
  EXPECT_HAS(Error(j), "devices[2] (name_prefix 'n1/gpu'): duplicate device name 'n1/gpu2'");
  j = Base();
  j["nodes"][1]["name"] = "n0";
  EXPECT_HAS(Error(j), "nodes[1] ('n0'): duplicate node name 'n0' (first at nodes[0])");
}

TEST(ClusterErrors, CountBelowOne) {
  json j = Base();
  j["devices"][2]["count"] = 0;
  EXPECT_HAS(Error(j), "devices[2] (name_prefix 'n1/gpu'): count=0; expected an integer from 1 to");
  j["devices"][2]["count"] = 2.5;
  EXPECT_HAS(Error(j), "count=2.5; expected an integer");
  j = Base();
  j["devices"][0]["count"] = 2;
  EXPECT_HAS(Error(j), "devices[0] ('gpu0'): 'count' needs 'name_prefix'");
}

TEST(ClusterErrors, NoDevicesAtAll) {
  json j = Base();
  j["devices"] = json::array();
  EXPECT_HAS(Error(j), "devices: empty array; expected at least one device");
}

TEST(ClusterErrors, NodeWithoutDevices) {
  json j = Base();
  j["nodes"].push_back({{"name", "n2"}});
  EXPECT_HAS(Error(j), "nodes[2] ('n2'): no device is on this node");
}

TEST(ClusterErrors, UnknownFieldsAreTypos) {
  json j = Base();
  j["device"] = json::array();
  EXPECT_HAS(Error(j), "unknown field 'device'; did you mean 'devices'?");
  j = Base();
  j["devices"][0]["memory_byte"] = 1e9;
  EXPECT_HAS(Error(j), "devices[0] ('gpu0'): unknown field 'memory_byte'; did you mean 'memory_bytes'?");
  j = Base();
  j["nodes"][0]["intra"] = {{"bandwidth", 1}, {"latency", 0}};
  EXPECT_HAS(Error(j), "nodes[0] ('n0'): unknown field 'intra'");
  j = Base();
  j["links"]["inter_node"]["bw"] = 1;
  EXPECT_HAS(Error(j), "links.inter_node: unknown field 'bw'");
}

TEST(ClusterErrors, CollectiveSamplesMustBePositiveAndSorted) {
  json j = Base();
  j["collectives"][0]["samples"][0][0] = -1;
  EXPECT_HAS(Error(j), "collectives[0] (all_reduce, inter_node): samples[0]: bytes=-1; expected a positive number");
  j = Base();
  j["collectives"][0]["samples"][1][1] = 0;
  EXPECT_HAS(Error(j), "samples[1]: seconds=0; expected a positive number");
  j = Base();
  j["collectives"][0]["samples"][1][0] = 1048576;
  EXPECT_HAS(Error(j), "samples[1]: bytes=1048576 is not greater than samples[0] bytes=1048576; expected samples "
                       "sorted by strictly increasing bytes");
  j = Base();
  j["collectives"][0]["samples"] = json::array();
  EXPECT_HAS(Error(j), "samples is empty");
}

TEST(ClusterErrors, CollectiveOpAndLinkAreChecked) {
  json j = Base();
  j["collectives"][0]["op"] = "allreduce";
  EXPECT_HAS(Error(j), "collectives[0]: op='allreduce'; did you mean 'all_reduce'?");
  j = Base();
  j["collectives"][0]["link"] = "nvlink";
  EXPECT_HAS(Error(j), "collectives[0]: link='nvlink'");
  j = Base();
  j["collectives"].push_back(j["collectives"][0]);
  EXPECT_HAS(Error(j), "collectives[1] (all_reduce, inter_node): duplicate table (first at collectives[0])");
}

}  // namespace
}  // namespace hetsynth::costmodel
