// AsyncCollectives (async_collectives.h) on thread ranks: all-reduces on the communication
// thread finish while the rank's own thread computes, give the bits of the same collectives
// run directly, keep their order, run beside the rank's own collectives, fail promptly when a
// peer fails, and fall back to running synchronously — saying why — when the communicator
// cannot run on another thread.
#include "hetsynth/runtime/async_collectives.h"

#include <gtest/gtest.h>

#include <atomic>
#include <bit>
#include <chrono>
#include <random>
#include <thread>
#include <vector>

#include "hetsynth/base/status.h"
#include "hetsynth/runtime/comm.h"
#include "runtime/comm_reference.h"

namespace hetsynth::runtime {
namespace {

using comm_testing::Buffers;
using comm_testing::Random;
using comm_testing::RankOrderSum;

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::bit_cast<uint32_t>(a[i]) != std::bit_cast<uint32_t>(b[i])) return false;
  }
  return true;
}

double Now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

TEST(AsyncCollectives, AllReduceFinishesWhileTheRanksOwnThreadComputes) {
  constexpr int kRanks = 4;
  constexpr int64_t kCount = 200000;
  std::mt19937 rng(1);
  Buffers data(kRanks);
  for (auto& d : data) d = Random(rng, kCount);
  const std::vector<float> want = RankOrderSum(data);
  std::vector<int> done_while_busy(kRanks, 0);
  absl::Status s = RunThreadRanks(kRanks, [&](Communicator& c) -> absl::Status {
    HS_ASSIGN_OR_RETURN(std::unique_ptr<AsyncCollectives> async, AsyncCollectives::Create(c));
    if (!async->overlapped()) return absl::InternalError(StrCat("not overlapped: ", async->why_synchronous().ToString()));
    AsyncCollectives::Handle h = async->AllReduce(data[c.rank()].data(), kCount);
    // "Backward compute": the rank's thread never calls into a communicator while it spins.
    volatile double acc = 0;
    const double until = Now() + 20;
    while (!h.done() && Now() < until) {
      for (int i = 0; i < 1000; ++i) acc = acc + 1e-9 * i;
    }
    done_while_busy[c.rank()] = h.done() ? 1 : 0;
    return h.Wait();
  });
  ASSERT_TRUE(s.ok()) << s;
  for (int r = 0; r < kRanks; ++r) {
    EXPECT_EQ(done_while_busy[r], 1) << "rank " << r << ": the all-reduce only progressed when the rank waited";
    EXPECT_TRUE(SameBits(data[r], want)) << "rank " << r;
  }
}

TEST(AsyncCollectives, BucketsRunInOrderBesideTheRanksOwnCollectives) {
  constexpr int kRanks = 3, kBuckets = 12;
  std::mt19937 rng(2);
  std::vector<Buffers> buckets(kBuckets, Buffers(kRanks));
  std::vector<std::vector<float>> want(kBuckets);
  for (int b = 0; b < kBuckets; ++b) {
    for (auto& d : buckets[b]) d = Random(rng, 17 + 1000 * b);
    want[b] = RankOrderSum(buckets[b]);
  }
  absl::Status s = RunThreadRanks(kRanks, [&](Communicator& c) -> absl::Status {
    HS_ASSIGN_OR_RETURN(std::unique_ptr<AsyncCollectives> async, AsyncCollectives::Create(c));
    std::vector<AsyncCollectives::Handle> handles;
    for (int b = 0; b < kBuckets; ++b) {
      handles.push_back(async->AllReduce(buckets[b][c.rank()].data(), static_cast<int64_t>(buckets[b][c.rank()].size())));
      // Meanwhile the rank's own collectives on the world communicator.
      std::vector<float> mine = {static_cast<float>(c.rank() + b)}, all(kRanks);
      HS_RETURN_IF_ERROR(c.AllGatherV(mine.data(), all.data(), std::vector<int64_t>(kRanks, 1), CommImpl::kGrouped));
      for (int r = 0; r < kRanks; ++r) {
        if (all[r] != static_cast<float>(r + b)) return absl::InternalError("wrong world all-gather");
      }
    }
    // Handles finish in order: waiting on the last means every earlier one ran.
    HS_RETURN_IF_ERROR(handles.back().Wait());
    for (const auto& h : handles) {
      if (!h.done()) return absl::InternalError("an earlier bucket is still pending after the last one finished");
    }
    return async->WaitAll();
  });
  ASSERT_TRUE(s.ok()) << s;
  for (int b = 0; b < kBuckets; ++b) {
    for (int r = 0; r < kRanks; ++r) EXPECT_TRUE(SameBits(buckets[b][r], want[b])) << "bucket " << b << " rank " << r;
  }
}

TEST(AsyncCollectives, HierarchicalAllReduceOnTheCommunicationThread) {
  const std::vector<int> sizes = {2, 4};
  std::mt19937 rng(3);
  Buffers data(6);
  for (auto& d : data) d = Random(rng, 5001);
  const std::vector<float> want = comm_testing::MeshSum(data, sizes);
  absl::Status s = RunThreadRanks(6, [&](Communicator& c) -> absl::Status {
    HS_ASSIGN_OR_RETURN(Mesh mesh, Mesh::FromSizes(sizes));
    HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> node, SplitByNode(c, mesh));
    HS_ASSIGN_OR_RETURN(std::unique_ptr<AsyncCollectives> async, AsyncCollectives::Create(c, node.get(), &mesh));
    AsyncCollectives::Handle h = async->HierarchicalAllReduce(data[c.rank()].data(), 5001);
    // The rank's own node communicator stays free for its own use meanwhile.
    HS_RETURN_IF_ERROR(node->Barrier());
    return h.Wait();
  });
  ASSERT_TRUE(s.ok()) << s;
  for (int r = 0; r < 6; ++r) EXPECT_TRUE(SameBits(data[r], want)) << "rank " << r;
}

TEST(AsyncCollectives, HierarchicalAllReduceWithoutAMeshFailsOnEveryRank) {
  std::vector<absl::Status> got(2);
  ASSERT_TRUE(RunThreadRanks(2, [&](Communicator& c) -> absl::Status {
                HS_ASSIGN_OR_RETURN(std::unique_ptr<AsyncCollectives> async, AsyncCollectives::Create(c));
                float x = 1;
                got[c.rank()] = async->HierarchicalAllReduce(&x, 1).Wait();
                return absl::OkStatus();
              }).ok());
  for (const absl::Status& s : got) EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_EQ(AsyncCollectives::Handle().Wait().code(), absl::StatusCode::kInvalidArgument);
}

TEST(AsyncCollectives, ARankFailingAbortsThePeersPendingAllReducesPromptly) {
  std::vector<absl::Status> got(4);
  const double start = Now();
  absl::Status s = RunThreadRanks(
      4,
      [&](Communicator& c) -> absl::Status {
        HS_ASSIGN_OR_RETURN(std::unique_ptr<AsyncCollectives> async, AsyncCollectives::Create(c));
        if (c.rank() == 1) return absl::NotFoundError("rank 1 hit a NaN in backward");
        std::vector<float> x(1000, 1.0f);
        return got[c.rank()] = async->AllReduce(x.data(), 1000).Wait();
      },
      /*timeout_s=*/10);
  const double seconds = Now() - start;
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  for (int r : {0, 2, 3}) {
    EXPECT_EQ(got[r].code(), absl::StatusCode::kAborted) << "rank " << r << ": " << got[r];
    EXPECT_NE(got[r].message().find("NaN in backward"), std::string::npos) << got[r];
  }
  EXPECT_LT(seconds, 3) << "the abort, not the 10 s deadline, should end the waits";
}

TEST(AsyncCollectives, AStuckPeerMakesPendingAllReducesTimeOut) {
  std::vector<absl::Status> got(2);
  const double start = Now();
  RunThreadRanks(
      2,
      [&](Communicator& c) -> absl::Status {
        HS_ASSIGN_OR_RETURN(std::unique_ptr<AsyncCollectives> async, AsyncCollectives::Create(c));
        float x = 1;
        if (c.rank() == 1) {
          std::this_thread::sleep_for(std::chrono::milliseconds(1500));
          return absl::OkStatus();
        }
        return got[0] = async->AllReduce(&x, 1).Wait();
      },
      /*timeout_s=*/0.4)
      .IgnoreError();
  EXPECT_EQ(got[0].code(), absl::StatusCode::kDeadlineExceeded) << got[0];
  EXPECT_LT(Now() - start, 1.4 + 0.5);
}

// A communicator that does not allow its splits on other threads (like MPI without
// MPI_THREAD_MULTIPLE).
class SingleThreaded final : public comm_testing::Forwarding {
 public:
  using Forwarding::Forwarding;
  absl::Status CheckConcurrentUse() const override {
    return absl::FailedPreconditionError("test: this communicator stays on one thread");
  }
};

TEST(AsyncCollectives, RunsSynchronouslyAndSaysWhyWhenTheCommunicatorCannotOverlap) {
  std::mt19937 rng(4);
  Buffers data(3);
  for (auto& d : data) d = Random(rng, 333);
  const std::vector<float> want = RankOrderSum(data);
  std::vector<int> overlapped(3, -1), done_at_once(3, -1);
  std::vector<std::string> why(3);
  absl::Status s = RunThreadRanks(3, [&](Communicator& c) -> absl::Status {
    SingleThreaded single(c);
    HS_ASSIGN_OR_RETURN(std::unique_ptr<AsyncCollectives> async, AsyncCollectives::Create(single));
    overlapped[c.rank()] = async->overlapped();
    why[c.rank()] = std::string(async->why_synchronous().message());
    AsyncCollectives::Handle h = async->AllReduce(data[c.rank()].data(), 333);
    done_at_once[c.rank()] = h.done();
    return h.Wait();
  });
  ASSERT_TRUE(s.ok()) << s;
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(overlapped[r], 0);
    EXPECT_EQ(done_at_once[r], 1) << "synchronous: done when Enqueue returns";
    EXPECT_EQ(why[r], "test: this communicator stays on one thread");
    EXPECT_TRUE(SameBits(data[r], want)) << "rank " << r;
  }
}

}  // namespace
}  // namespace hetsynth::runtime
