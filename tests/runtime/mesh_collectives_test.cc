// The mesh collectives (mesh_collectives.h) on thread ranks against direct computation, bit for
// bit (the references add within a node in rank order, then across nodes in node order), on
// meshes 2×2, 2×4, 4×2, uneven 2+4, 1+3, 3+1+2, one node and one device per node; uneven and
// zero shares; and the bytes each crosses between nodes against the spec's formulas.
#include "hetsynth/runtime/mesh_collectives.h"

#include <gtest/gtest.h>

#include <bit>
#include <chrono>
#include <cmath>
#include <iomanip>
#include <map>
#include <mutex>
#include <random>
#include <vector>

#include "hetsynth/base/status.h"
#include "hetsynth/runtime/comm.h"
#include "runtime/comm_reference.h"

namespace hetsynth::runtime {
namespace {

using comm_testing::Buffers;
using comm_testing::FirstOf;
using comm_testing::MeshCounts;
using comm_testing::MeshSum;
using comm_testing::NodeOf;
using comm_testing::Random;
using comm_testing::RankOrderSum;
using comm_testing::Sum;

::testing::AssertionResult SameBits(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "size " << got.size() << ", expected " << want.size();
  }
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::bit_cast<uint32_t>(got[i]) != std::bit_cast<uint32_t>(want[i])) {
      return ::testing::AssertionFailure() << std::setprecision(9) << "element " << i << " is " << got[i]
                                           << ", expected " << want[i];
    }
  }
  return ::testing::AssertionSuccess();
}

int64_t Offset(const std::vector<int64_t>& counts, int r) {
  int64_t at = 0;
  for (int k = 0; k < r; ++k) at += counts[k];
  return at;
}

std::string Name(const std::vector<int>& sizes) {
  std::string s;
  for (size_t j = 0; j < sizes.size(); ++j) s += StrCat(j ? "_" : "", sizes[j]);
  return s;
}

// Runs fn(mesh comms) on the mesh's ranks (thread ranks, one node communicator each).
absl::Status OnMesh(const std::vector<int>& sizes, const std::function<absl::Status(const MeshComms&)>& fn,
                    double timeout_s = 30) {
  HS_ASSIGN_OR_RETURN(Mesh mesh, Mesh::FromSizes(sizes));
  return RunThreadRanks(
      mesh.ranks(),
      [&](Communicator& world) -> absl::Status {
        HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> node, SplitByNode(world, mesh));
        return fn(MeshComms{world, *node, mesh});
      },
      timeout_s);
}

// ---- Mesh -------------------------------------------------------------------------------------

TEST(Mesh, DescribesNodeMajorRanks) {
  absl::StatusOr<Mesh> m = Mesh::FromNodes({{0, 1}, {2, 3, 4, 5}});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->ranks(), 6);
  EXPECT_EQ(m->nodes(), 2);
  EXPECT_EQ(m->size(1), 4);
  EXPECT_EQ(m->first(1), 2);
  EXPECT_EQ(m->node_of(1), 0);
  EXPECT_EQ(m->node_of(2), 1);
  EXPECT_EQ(m->local(5), 3);
  EXPECT_EQ(m->ToString(), "2+4");
}

TEST(Mesh, RejectsRanksThatAreNotNodeMajorAndEmptyNodes) {
  absl::Status s = Mesh::FromNodes({{0, 2}, {1, 3}}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("node 0 lists rank 2 where rank 1 was expected"), std::string::npos) << s;
  s = Mesh::FromSizes({2, 0}).status();
  EXPECT_NE(s.message().find("node 1 has 0 ranks; expected >= 1"), std::string::npos) << s;
  EXPECT_EQ(Mesh::FromSizes({}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Mesh, SplitByNodeGivesEachRankItsNode) {
  std::vector<int> size(6), rank(6);
  ASSERT_TRUE(OnMesh({2, 4}, [&](const MeshComms& c) {
                size[c.world.rank()] = c.node.size();
                rank[c.world.rank()] = c.node.rank();
                return absl::OkStatus();
              }).ok());
  EXPECT_EQ(size, (std::vector<int>{2, 2, 4, 4, 4, 4}));
  EXPECT_EQ(rank, (std::vector<int>{0, 1, 0, 1, 2, 3}));
}

// ---- every function against direct computation ----------------------------------------------

class MeshCollectives : public ::testing::TestWithParam<std::vector<int>> {
 protected:
  const std::vector<int>& sizes() const { return GetParam(); }
  int n() const { return static_cast<int>(Sum(std::vector<int64_t>(sizes().begin(), sizes().end()))); }
  int nodes() const { return static_cast<int>(sizes().size()); }
  void Run(const std::function<absl::Status(const MeshComms&)>& fn) {
    absl::Status s = OnMesh(sizes(), fn);
    ASSERT_TRUE(s.ok()) << s;
  }
};

TEST_P(MeshCollectives, HierarchicalAllReduceSumsWithinNodesThenAcrossInNodeOrder) {
  for (int64_t count : {0, 1, 3, 7, 1000, 4099}) {
    std::mt19937 rng(static_cast<uint32_t>(count));
    Buffers data(n());
    for (auto& d : data) d = Random(rng, count);
    const std::vector<float> want = MeshSum(data, sizes());
    Run([&](const MeshComms& c) { return HierarchicalAllReduce(c, data[c.world.rank()].data(), count); });
    for (int r = 0; r < n(); ++r) EXPECT_TRUE(SameBits(data[r], want)) << "rank " << r << ", count " << count;
  }
}

// Count patterns: uneven with zeros inside nodes; a whole node empty; everything on the last rank.
std::vector<std::vector<int64_t>> CountCases(const std::vector<int>& sizes, uint32_t seed) {
  std::mt19937 rng(seed);
  const int n = static_cast<int>(NodeOf(sizes).size());
  std::vector<std::vector<int64_t>> cases;
  for (int t = 0; t < 3; ++t) {
    cases.push_back(MeshCounts(rng, sizes, [&](int j) { return int64_t{37} * (j + 1) + 100 * t; }));
  }
  cases.push_back(MeshCounts(rng, sizes, [&](int j) { return j == 0 ? 0 : int64_t{29}; }));
  std::vector<int64_t> last(n, 0);
  last[n - 1] = 11;
  cases.push_back(last);
  cases.push_back(std::vector<int64_t>(n, 0));
  return cases;
}

TEST_P(MeshCollectives, HierarchicalAllGatherVConcatenatesInRankOrder) {
  uint32_t seed = 1;
  for (const std::vector<int64_t>& counts : CountCases(sizes(), 11)) {
    std::mt19937 rng(seed++);
    Buffers shards(n());
    std::vector<float> want;
    for (int r = 0; r < n(); ++r) {
      shards[r] = Random(rng, counts[r]);
      want.insert(want.end(), shards[r].begin(), shards[r].end());
    }
    Buffers got(n(), std::vector<float>(want.size(), -7.0f)), in_place(n(), std::vector<float>(want.size(), -7.0f));
    Run([&](const MeshComms& c) -> absl::Status {
      const int r = c.world.rank();
      HS_RETURN_IF_ERROR(HierarchicalAllGatherV(c, shards[r].data(), got[r].data(), counts));
      float* mine = in_place[r].data() + Offset(counts, r);
      std::copy(shards[r].begin(), shards[r].end(), mine);
      return HierarchicalAllGatherV(c, mine, in_place[r].data(), counts);
    });
    for (int r = 0; r < n(); ++r) {
      EXPECT_TRUE(SameBits(got[r], want)) << "rank " << r;
      EXPECT_TRUE(SameBits(in_place[r], want)) << "in place, rank " << r;
    }
  }
}

TEST_P(MeshCollectives, HierarchicalReduceScatterVGivesEachRankItsSegmentOfTheMeshSum) {
  uint32_t seed = 100;
  for (const std::vector<int64_t>& counts : CountCases(sizes(), 12)) {
    std::mt19937 rng(seed++);
    Buffers in(n());
    for (auto& v : in) v = Random(rng, Sum(counts));
    const std::vector<float> sum = MeshSum(in, sizes());
    Buffers got(n());
    for (int r = 0; r < n(); ++r) got[r].assign(counts[r], -7.0f);
    Run([&](const MeshComms& c) {
      const int r = c.world.rank();
      return HierarchicalReduceScatterV(c, in[r].data(), got[r].data(), counts);
    });
    int64_t at = 0;
    for (int r = 0; r < n(); ++r) {
      EXPECT_TRUE(SameBits(got[r], std::vector<float>(sum.begin() + at, sum.begin() + at + counts[r]))) << "rank " << r;
      at += counts[r];
    }
  }
}

// The all-gather and the reduce-scatter are transposes: <AG(x), y> = <x, RS(y)> summed over ranks.
TEST_P(MeshCollectives, HierarchicalAllGatherAndReduceScatterAreTransposes) {
  const std::vector<int64_t> counts = CountCases(sizes(), 13)[0];
  std::mt19937 rng(5);
  Buffers x(n()), y(n()), ag(n(), std::vector<float>(Sum(counts))), rs(n());
  for (int r = 0; r < n(); ++r) {
    x[r] = Random(rng, counts[r]);
    y[r] = Random(rng, Sum(counts));
    rs[r].resize(counts[r]);
  }
  Run([&](const MeshComms& c) -> absl::Status {
    const int r = c.world.rank();
    HS_RETURN_IF_ERROR(HierarchicalAllGatherV(c, x[r].data(), ag[r].data(), counts));
    return HierarchicalReduceScatterV(c, y[r].data(), rs[r].data(), counts);
  });
  double lhs = 0, rhs = 0;
  for (int r = 0; r < n(); ++r) {
    for (size_t i = 0; i < ag[r].size(); ++i) lhs += static_cast<double>(ag[r][i]) * y[r][i];
    for (size_t i = 0; i < rs[r].size(); ++i) rhs += static_cast<double>(x[r][i]) * rs[r][i];
  }
  EXPECT_NEAR(lhs, rhs, 1e-4 * (1 + std::abs(lhs)));
}

TEST_P(MeshCollectives, NodesAllGatherVConcatenatesTheNodePieces) {
  std::mt19937 rng(7);
  for (int t = 0; t < 4; ++t) {
    std::vector<int64_t> node_counts(nodes());
    for (int j = 0; j < nodes(); ++j) node_counts[j] = t == 3 ? 0 : (t == 2 && j == 0 ? 0 : 13 * j + 5 * t + 1);
    Buffers pieces(nodes());
    std::vector<float> want;
    for (int j = 0; j < nodes(); ++j) {
      pieces[j] = Random(rng, node_counts[j]);
      want.insert(want.end(), pieces[j].begin(), pieces[j].end());
    }
    const std::vector<int> node = NodeOf(sizes());
    Buffers got(n(), std::vector<float>(want.size(), -7.0f));
    Run([&](const MeshComms& c) {
      const int r = c.world.rank();
      return NodesAllGatherV(c, pieces[node[r]].data(), got[r].data(), node_counts);
    });
    for (int r = 0; r < n(); ++r) EXPECT_TRUE(SameBits(got[r], want)) << "rank " << r << ", case " << t;
  }
}

TEST_P(MeshCollectives, NodesReduceScatterVLeavesPartialsThatSumToTheNodePiece) {
  std::mt19937 rng(8);
  for (int t = 0; t < 3; ++t) {
    std::vector<int64_t> node_counts(nodes());
    for (int j = 0; j < nodes(); ++j) node_counts[j] = t == 2 && j == 0 ? 0 : 17 * j + 9 * t + 2;
    Buffers in(n());
    for (auto& v : in) v = Random(rng, Sum(node_counts));
    Buffers got(n());
    const std::vector<int> node = NodeOf(sizes());
    for (int r = 0; r < n(); ++r) got[r].assign(node_counts[node[r]], -7.0f);
    Run([&](const MeshComms& c) {
      const int r = c.world.rank();
      return NodesReduceScatterV(c, in[r].data(), got[r].data(), node_counts);
    });
    for (int r = 0; r < n(); ++r) {
      EXPECT_TRUE(SameBits(got[r], comm_testing::NodesReduceScatterReference(in, sizes(), node_counts, r)))
          << "rank " << r;
    }
    // (G d, R): a node's devices' pieces sum to the node's piece of the total.
    const std::vector<float> total = RankOrderSum(in);
    int64_t start = 0;
    for (int j = 0; j < nodes(); ++j) {
      const int f = FirstOf(sizes(), j);
      for (int64_t i = 0; i < node_counts[j]; ++i) {
        double s = 0;
        for (int m = 0; m < sizes()[j]; ++m) s += got[f + m][i];
        EXPECT_NEAR(s, total[start + i], 1e-5 * n()) << "node " << j << " element " << i;
      }
      start += node_counts[j];
    }
  }
}

TEST_P(MeshCollectives, NodesAllGatherAndReduceScatterAreTransposes) {
  std::vector<int64_t> node_counts(nodes());
  for (int j = 0; j < nodes(); ++j) node_counts[j] = 11 * j + 3;
  std::mt19937 rng(9);
  const std::vector<int> node = NodeOf(sizes());
  Buffers x(n()), y(n()), ag(n(), std::vector<float>(Sum(node_counts))), rs(n());
  for (int r = 0; r < n(); ++r) {
    x[r] = Random(rng, node_counts[node[r]]);  // (G d, I) would repeat it; any x tests the transpose
    y[r] = Random(rng, Sum(node_counts));
    rs[r].resize(node_counts[node[r]]);
  }
  // NodesAllGatherV reads one piece per node: use the node's first device's x on all of them.
  Run([&](const MeshComms& c) -> absl::Status {
    const int r = c.world.rank();
    HS_RETURN_IF_ERROR(NodesAllGatherV(c, x[c.mesh.first(node[r])].data(), ag[r].data(), node_counts));
    return NodesReduceScatterV(c, y[r].data(), rs[r].data(), node_counts);
  });
  double lhs = 0, rhs = 0;
  for (int r = 0; r < n(); ++r) {
    for (size_t i = 0; i < ag[r].size(); ++i) lhs += static_cast<double>(ag[r][i]) * y[r][i];
    const std::vector<float>& xr = x[FirstOf(sizes(), node[r])];
    for (size_t i = 0; i < rs[r].size(); ++i) rhs += static_cast<double>(xr[i]) * rs[r][i];
  }
  EXPECT_NEAR(lhs, rhs, 1e-4 * (1 + std::abs(lhs)));
}

TEST_P(MeshCollectives, AcrossNodesAllReduceSumsOverlappingPiecesInNodeOrder) {
  std::mt19937 rng(10);
  for (int64_t total : {0, 1, 5, 97, 1000}) {
    const std::vector<int64_t> counts = MeshCounts(rng, sizes(), [&](int) { return total; });
    Buffers pieces(n());
    for (int r = 0; r < n(); ++r) pieces[r] = Random(rng, counts[r]);
    const Buffers want = comm_testing::AcrossNodesReference(pieces, sizes(), counts);
    Run([&](const MeshComms& c) {
      const int r = c.world.rank();
      return AcrossNodesAllReduce(c, pieces[r].data(), counts);
    });
    for (int r = 0; r < n(); ++r) EXPECT_TRUE(SameBits(pieces[r], want[r])) << "rank " << r << ", T " << total;
  }
}

TEST_P(MeshCollectives, AcrossNodesAllReduceOfABucketEqualsOneCallPerTensor) {
  // Several tensors, each with its own cuts inside the nodes (and an empty one), in one call.
  std::mt19937 rng(11);
  const std::vector<int64_t> totals = {97, 0, 1000, 5};
  std::vector<std::vector<int64_t>> counts;
  std::vector<Buffers> pieces, want;
  for (int64_t total : totals) {
    counts.push_back(MeshCounts(rng, sizes(), [&](int) { return total; }));
    Buffers p(n());
    for (int r = 0; r < n(); ++r) p[r] = Random(rng, counts.back()[r]);
    want.push_back(comm_testing::AcrossNodesReference(p, sizes(), counts.back()));
    pieces.push_back(std::move(p));
  }
  Run([&](const MeshComms& c) {
    const int r = c.world.rank();
    std::vector<float*> ptrs;
    for (Buffers& p : pieces) ptrs.push_back(p[r].data());
    return AcrossNodesAllReduce(c, ptrs, counts);
  });
  for (size_t k = 0; k < totals.size(); ++k) {
    for (int r = 0; r < n(); ++r) EXPECT_TRUE(SameBits(pieces[k][r], want[k][r])) << "tensor " << k << ", rank " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(Meshes, MeshCollectives,
                         ::testing::Values(std::vector<int>{2, 2}, std::vector<int>{4, 4}, std::vector<int>{2, 2, 2, 2},
                                           std::vector<int>{2, 4}, std::vector<int>{1, 3}, std::vector<int>{3, 1, 2},
                                           std::vector<int>{4}, std::vector<int>{1, 1, 1}),
                         [](const auto& info) { return StrCat("nodes_", Name(info.param)); });

// ---- bytes between nodes ----------------------------------------------------------------------

// Counts the elements each rank sends to every other rank through the world communicator.
class Counting final : public comm_testing::Forwarding {
 public:
  Counting(Communicator& inner, std::vector<std::vector<int64_t>>* sent, std::mutex* mu)
      : Forwarding(inner), sent_(sent), mu_(mu) {}
  absl::Status AllToAllV(const float* s, const std::vector<int64_t>& sc, float* r,
                         const std::vector<int64_t>& rc) override {
    {
      std::lock_guard<std::mutex> lock(*mu_);
      for (size_t k = 0; k < sc.size(); ++k) (*sent_)[rank()][k] += sc[k];
    }
    return inner_.AllToAllV(s, sc, r, rc);
  }
  absl::Status AllGatherV(const float* s, float* r, const std::vector<int64_t>& c, CommImpl i) override {
    ++gathers_;  // the argument agreement: one small all-gather per call
    return inner_.AllGatherV(s, r, c, i);
  }
  absl::Status AllReduce(float*, int64_t) override { return absl::InternalError("no world all-reduce expected"); }
  absl::Status ReduceScatterV(const float*, float*, const std::vector<int64_t>&, CommImpl) override {
    return absl::InternalError("no world reduce-scatter expected");
  }
  int gathers() const { return gathers_; }

 private:
  std::vector<std::vector<int64_t>>* sent_;
  std::mutex* mu_;
  int gathers_ = 0;
};

struct Traffic {
  std::vector<int64_t> node_out, node_in;  // elements leaving / entering each node
  std::vector<int64_t> rank_out;           // elements each rank sends to other nodes
};

// Runs fn with a counting world and sums what crossed between nodes.
Traffic Measure(const std::vector<int>& sizes, const std::function<absl::Status(const MeshComms&)>& fn) {
  const std::vector<int> node = NodeOf(sizes);
  const int n = static_cast<int>(node.size());
  std::vector<std::vector<int64_t>> sent(n, std::vector<int64_t>(n, 0));
  std::mutex mu;
  absl::Status s = RunThreadRanks(n, [&](Communicator& world) -> absl::Status {
    HS_ASSIGN_OR_RETURN(Mesh mesh, Mesh::FromSizes(sizes));
    HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> nodec, SplitByNode(world, mesh));
    Counting counting(world, &sent, &mu);
    HS_RETURN_IF_ERROR(fn(MeshComms{counting, *nodec, mesh}));
    if (counting.gathers() != 1) return absl::InternalError(StrCat(counting.gathers(), " world all-gathers"));
    return absl::OkStatus();
  });
  EXPECT_TRUE(s.ok()) << s;
  Traffic t{std::vector<int64_t>(sizes.size()), std::vector<int64_t>(sizes.size()), std::vector<int64_t>(n)};
  for (int a = 0; a < n; ++a) {
    for (int b = 0; b < n; ++b) {
      // A rank's sends to itself are local copies; to another rank of its node, intra traffic
      // the world exchange must not carry.
      EXPECT_TRUE(a == b || node[a] != node[b] || sent[a][b] == 0) << "rank " << a << " sent to rank " << b << " on its node";
      if (node[a] == node[b]) continue;
      t.node_out[node[a]] += sent[a][b];
      t.node_in[node[b]] += sent[a][b];
      t.rank_out[a] += sent[a][b];
    }
  }
  return t;
}

class NicTraffic : public ::testing::TestWithParam<std::vector<int>> {};

TEST_P(NicTraffic, AllReduceMovesTwoNMinusOneOverNOfTheTensorPerNodeSpreadOverItsDevices) {
  const std::vector<int>& sizes = GetParam();
  const int N = static_cast<int>(sizes.size()), n = static_cast<int>(NodeOf(sizes).size());
  const int64_t B = 100003;
  Buffers data(n, std::vector<float>(B, 1.0f));
  const Traffic t = Measure(sizes, [&](const MeshComms& c) {
    return HierarchicalAllReduce(c, data[c.world.rank()].data(), B);
  });
  const double want = 2.0 * (N - 1) / N * B;
  const double slack = 2.0 * N * n;  // rounding of the parts of each elementary interval
  for (int j = 0; j < N; ++j) {
    EXPECT_NEAR(t.node_out[j], want, slack) << "node " << j;
    EXPECT_NEAR(t.node_in[j], want, slack) << "node " << j;
    for (int r = FirstOf(sizes, j); r < FirstOf(sizes, j) + sizes[j]; ++r) {
      EXPECT_NEAR(t.rank_out[r], want / sizes[j], slack) << "rank " << r << ": 1/k of its node's bytes";
    }
  }
  EXPECT_EQ(data[n - 1][B - 1], static_cast<float>(n));
}

TEST_P(NicTraffic, AllGatherSendsEachNodePieceToEveryOtherNodeOnce) {
  const std::vector<int>& sizes = GetParam();
  const int N = static_cast<int>(sizes.size()), n = static_cast<int>(NodeOf(sizes).size());
  std::mt19937 rng(3);
  const std::vector<int64_t> counts = MeshCounts(rng, sizes, [](int j) { return int64_t{1000} * (j + 1); });
  const int64_t B = Sum(counts);
  Buffers shard(n), full(n, std::vector<float>(B)), back(n);
  for (int r = 0; r < n; ++r) {
    shard[r].assign(counts[r], 1.0f);
    back[r].resize(counts[r]);
  }
  const Traffic ag = Measure(sizes, [&](const MeshComms& c) {
    const int r = c.world.rank();
    return HierarchicalAllGatherV(c, shard[r].data(), full[r].data(), counts);
  });
  const Traffic rs = Measure(sizes, [&](const MeshComms& c) {
    const int r = c.world.rank();
    return HierarchicalReduceScatterV(c, full[r].data(), back[r].data(), counts);
  });
  for (int j = 0; j < N; ++j) {
    int64_t S = 0;  // node j's piece
    for (int r = FirstOf(sizes, j); r < FirstOf(sizes, j) + sizes[j]; ++r) S += counts[r];
    EXPECT_EQ(ag.node_out[j], S * (N - 1)) << "node " << j;
    EXPECT_EQ(ag.node_in[j], B - S) << "node " << j;
    EXPECT_EQ(rs.node_out[j], B - S) << "node " << j << " (the transpose)";
    EXPECT_EQ(rs.node_in[j], S * (N - 1)) << "node " << j << " (the transpose)";
  }
}

TEST_P(NicTraffic, NodesLevelAllGatherAndItsTransposeCrossEveryNicOnce) {
  const std::vector<int>& sizes = GetParam();
  const int N = static_cast<int>(sizes.size()), n = static_cast<int>(NodeOf(sizes).size());
  std::vector<int64_t> node_counts(N);
  for (int j = 0; j < N; ++j) node_counts[j] = 777 * (j + 1);
  const int64_t B = Sum(node_counts);
  const std::vector<int> node = NodeOf(sizes);
  Buffers piece(N), full(n, std::vector<float>(B, 1.0f)), back(n);
  for (int j = 0; j < N; ++j) piece[j].assign(node_counts[j], 1.0f);
  for (int r = 0; r < n; ++r) back[r].resize(node_counts[node[r]]);
  const Traffic ag = Measure(sizes, [&](const MeshComms& c) {
    const int r = c.world.rank();
    return NodesAllGatherV(c, piece[node[r]].data(), full[r].data(), node_counts);
  });
  const Traffic rs = Measure(sizes, [&](const MeshComms& c) {
    const int r = c.world.rank();
    return NodesReduceScatterV(c, full[r].data(), back[r].data(), node_counts);
  });
  for (int j = 0; j < N; ++j) {
    EXPECT_EQ(ag.node_out[j], node_counts[j] * (N - 1)) << "node " << j;
    EXPECT_EQ(ag.node_in[j], B - node_counts[j]) << "node " << j;
    EXPECT_EQ(rs.node_out[j], B - node_counts[j]) << "node " << j;
    EXPECT_EQ(rs.node_in[j], node_counts[j] * (N - 1)) << "node " << j;
  }
}

INSTANTIATE_TEST_SUITE_P(Meshes, NicTraffic,
                         ::testing::Values(std::vector<int>{2, 2}, std::vector<int>{4, 4}, std::vector<int>{2, 2, 2, 2},
                                           std::vector<int>{2, 4}, std::vector<int>{1, 3}, std::vector<int>{3, 1, 2}),
                         [](const auto& info) { return StrCat("nodes_", Name(info.param)); });

// ---- arguments ----------------------------------------------------------------------------------

std::vector<absl::Status> StatusesOn(const std::vector<int>& sizes, const std::function<absl::Status(const MeshComms&)>& fn) {
  std::vector<absl::Status> got(NodeOf(sizes).size());
  OnMesh(sizes, [&](const MeshComms& c) { return got[c.world.rank()] = fn(c); }, /*timeout_s=*/5).IgnoreError();
  return got;
}

void ExpectAllInvalid(const std::vector<absl::Status>& got, const std::string& phrase) {
  for (size_t r = 0; r < got.size(); ++r) {
    EXPECT_EQ(got[r].code(), absl::StatusCode::kInvalidArgument) << "rank " << r << ": " << got[r];
    EXPECT_NE(got[r].message().find(phrase), std::string::npos) << "rank " << r << ": " << got[r];
  }
}

TEST(MeshArguments, MismatchedCountsFailOnEveryRank) {
  ExpectAllInvalid(StatusesOn({2, 2},
                              [](const MeshComms& c) {
                                std::vector<float> x(8, 1.0f);
                                return HierarchicalAllReduce(c, x.data(), c.world.rank() == 3 ? 7 : 8);
                              }),
                   "rank 3 passed other counts than rank 0");
  ExpectAllInvalid(StatusesOn({1, 3},
                              [](const MeshComms& c) {
                                std::vector<int64_t> counts = {1, 2, 3, c.world.rank() == 0 ? 4 : 5};
                                std::vector<float> s(5), r(11);
                                return HierarchicalAllGatherV(c, s.data(), r.data(), counts);
                              }),
                   "HierarchicalAllGatherV");
}

TEST(MeshArguments, OneRanksBadArgumentsFailOnEveryRank) {
  const std::vector<absl::Status> got = StatusesOn({2, 2}, [](const MeshComms& c) {
    std::vector<float> x(8, 1.0f);
    return HierarchicalAllReduce(c, c.world.rank() == 2 ? nullptr : x.data(), 8);
  });
  ExpectAllInvalid({got[0], got[1], got[3]}, "rank 2 passed invalid arguments");
  ExpectAllInvalid({got[2]}, "HierarchicalAllReduce (rank 2): data is null but count > 0");
  ExpectAllInvalid(StatusesOn({2, 4},
                              [](const MeshComms& c) {
                                std::vector<float> x(8, 1.0f);
                                // Node 1's pieces tile 6 elements, node 0's 4.
                                return AcrossNodesAllReduce(c, x.data(), {2, 2, 1, 1, 2, 2});
                              }),
                   "node 1's counts sum to 6 but node 0's to 4");
  ExpectAllInvalid(StatusesOn({2, 2},
                              [](const MeshComms& c) {
                                std::vector<float> x(8, 1.0f);
                                return NodesAllGatherV(c, x.data(), x.data() + 4, {1, 1, 1});
                              }),
                   "node_counts has 3 entries; expected one per node (2)");
}

TEST(MeshArguments, TheWorldAsNodeCommunicatorIsRejectedOnEveryRank) {
  ExpectAllInvalid(StatusesOn({2, 2},
                              [](const MeshComms& c) {
                                std::vector<float> x(8, 1.0f);
                                return HierarchicalAllReduce(MeshComms{c.world, c.world, c.mesh}, x.data(), 8);
                              }),
                   "make it with SplitByNode");
}

TEST(MeshArguments, AFailingRankAbortsPeersInsideAHierarchicalCollective) {
  std::vector<absl::Status> got(6);
  const auto start = std::chrono::steady_clock::now();
  absl::Status s = OnMesh(
      {2, 4},
      [&](const MeshComms& c) -> absl::Status {
        if (c.world.rank() == 4) return absl::NotFoundError("rank 4 ran out of memory");
        std::vector<float> x(64, 1.0f);
        return got[c.world.rank()] = HierarchicalAllReduce(c, x.data(), 64);
      },
      /*timeout_s=*/5);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  for (int r : {0, 1, 2, 3, 5}) EXPECT_EQ(got[r].code(), absl::StatusCode::kAborted) << "rank " << r << ": " << got[r];
  EXPECT_LT(seconds, 2.5);
}

}  // namespace
}  // namespace hetsynth::runtime
