// The in-process communicator against direct single-threaded computation: every collective,
// both implementations, 1–4 ranks, uneven counts with zeros. Sums are compared bit for bit,
// since both sides add in rank order.
#include <bit>
#include <chrono>
#include <cstdint>
#include <iomanip>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "hetsynth/base/status.h"
#include "hetsynth/runtime/comm.h"
#include "runtime/comm_reference.h"

namespace hetsynth::runtime {
namespace {

using comm_testing::Buffers;
using comm_testing::Random;
using comm_testing::RandomCounts;
using comm_testing::RankOrderSum;
using comm_testing::Sum;

// Element-by-element bit equality, reporting the first difference.
::testing::AssertionResult SameBits(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "size " << got.size() << ", expected " << want.size();
  }
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::bit_cast<uint32_t>(got[i]) != std::bit_cast<uint32_t>(want[i])) {
      return ::testing::AssertionFailure() << std::setprecision(9) << "element " << i << " is "
                                           << got[i] << ", expected " << want[i];
    }
  }
  return ::testing::AssertionSuccess();
}

// Runs fn on n thread ranks and fails the test when the run fails.
void RunOk(int n, const std::function<absl::Status(Communicator&)>& fn) {
  absl::Status s = RunThreadRanks(n, fn, /*timeout_s=*/30);
  ASSERT_TRUE(s.ok()) << s;
}

// Count patterns for n ranks: random uneven ones, all zero, one rank holding everything.
std::vector<std::vector<int64_t>> CountCases(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<int64_t>> cases;
  for (int t = 0; t < 6; ++t) cases.push_back(RandomCounts(rng, n, t < 3 ? 5 : 300));
  cases.push_back(std::vector<int64_t>(n, 0));
  std::vector<int64_t> one(n, 0);
  one[n - 1] = 7;
  cases.push_back(one);
  return cases;
}

class Collectives : public ::testing::TestWithParam<std::tuple<int, CommImpl>> {
 protected:
  int n() const { return std::get<0>(GetParam()); }
  CommImpl impl() const { return std::get<1>(GetParam()); }
};

TEST_P(Collectives, AllGatherVConcatenatesShardsInRankOrder) {
  for (const std::vector<int64_t>& counts : CountCases(n(), 1)) {
    std::mt19937 rng(2);
    Buffers shards(n());
    std::vector<float> want;
    for (int r = 0; r < n(); ++r) {
      shards[r] = Random(rng, counts[r]);
      want.insert(want.end(), shards[r].begin(), shards[r].end());
    }
    Buffers got(n(), std::vector<float>(Sum(counts), -7.0f));
    RunOk(n(), [&](Communicator& c) {
      return c.AllGatherV(shards[c.rank()].data(), got[c.rank()].data(), counts, impl());
    });
    for (int r = 0; r < n(); ++r) EXPECT_TRUE(SameBits(got[r], want)) << "rank " << r;
  }
}

TEST_P(Collectives, AllGatherVWorksInPlace) {
  const std::vector<int64_t> counts = CountCases(n(), 3)[0];
  std::mt19937 rng(4);
  const std::vector<float> want = Random(rng, Sum(counts));
  Buffers got(n(), std::vector<float>(want.size(), 0.0f));
  RunOk(n(), [&](Communicator& c) {
    int64_t at = 0;
    for (int k = 0; k < c.rank(); ++k) at += counts[k];
    float* mine = got[c.rank()].data() + at;
    std::copy(want.begin() + at, want.begin() + at + counts[c.rank()], mine);
    return c.AllGatherV(mine, got[c.rank()].data(), counts, impl());
  });
  for (int r = 0; r < n(); ++r) EXPECT_TRUE(SameBits(got[r], want)) << "rank " << r;
}

TEST_P(Collectives, ReduceScatterVGivesEachRankTheRankOrderSumOfItsSegment) {
  for (const std::vector<int64_t>& counts : CountCases(n(), 5)) {
    std::mt19937 rng(6);
    Buffers inputs(n());
    for (int r = 0; r < n(); ++r) inputs[r] = Random(rng, Sum(counts));
    const std::vector<float> sum = RankOrderSum(inputs);
    Buffers got(n());
    for (int r = 0; r < n(); ++r) got[r].assign(counts[r], -7.0f);
    RunOk(n(), [&](Communicator& c) {
      return c.ReduceScatterV(inputs[c.rank()].data(), got[c.rank()].data(), counts, impl());
    });
    int64_t at = 0;
    for (int r = 0; r < n(); ++r) {
      const std::vector<float> want(sum.begin() + at, sum.begin() + at + counts[r]);
      EXPECT_TRUE(SameBits(got[r], want)) << "rank " << r;
      at += counts[r];
    }
  }
}

// All-reduce, all-to-all and broadcast have one implementation each.
class SingleImplCollectives : public ::testing::TestWithParam<int> {
 protected:
  int n() const { return GetParam(); }
};

TEST_P(SingleImplCollectives, AllReduceGivesEveryRankTheSameRankOrderSum) {
  for (int64_t count : {0, 1, 2, 3, 5, 17, 1000}) {
    std::mt19937 rng(7);
    Buffers data(n());
    for (int r = 0; r < n(); ++r) data[r] = Random(rng, count);
    const std::vector<float> want = RankOrderSum(data);
    RunOk(n(), [&](Communicator& c) { return c.AllReduce(data[c.rank()].data(), count); });
    for (int r = 0; r < n(); ++r) EXPECT_TRUE(SameBits(data[r], want)) << "rank " << r << ", count " << count;
  }
}

TEST_P(SingleImplCollectives, AllToAllVDeliversEachBlockToItsRank) {
  for (int t = 0; t < 5; ++t) {
    std::mt19937 rng(8 + t);
    // sends[j][k]: elements rank j sends to rank k (all zero in the last round).
    std::vector<std::vector<int64_t>> sends(n());
    for (int j = 0; j < n(); ++j) sends[j] = t == 4 ? std::vector<int64_t>(n(), 0) : RandomCounts(rng, n(), 6);
    std::vector<std::vector<int64_t>> recvs(n(), std::vector<int64_t>(n()));
    for (int j = 0; j < n(); ++j) {
      for (int k = 0; k < n(); ++k) recvs[k][j] = sends[j][k];
    }
    Buffers in(n()), got(n()), want(n());
    for (int j = 0; j < n(); ++j) in[j] = Random(rng, Sum(sends[j]));
    for (int k = 0; k < n(); ++k) {
      for (int j = 0; j < n(); ++j) {
        int64_t at = 0;
        for (int i = 0; i < k; ++i) at += sends[j][i];
        want[k].insert(want[k].end(), in[j].begin() + at, in[j].begin() + at + sends[j][k]);
      }
      got[k].assign(want[k].size(), -7.0f);
    }
    RunOk(n(), [&](Communicator& c) {
      const int r = c.rank();
      return c.AllToAllV(in[r].data(), sends[r], got[r].data(), recvs[r]);
    });
    for (int r = 0; r < n(); ++r) EXPECT_TRUE(SameBits(got[r], want[r])) << "rank " << r << ", round " << t;
  }
}

TEST_P(SingleImplCollectives, BroadcastCopiesTheRootsData) {
  for (int root = 0; root < n(); ++root) {
    std::mt19937 rng(9 + root);
    Buffers data(n());
    for (int r = 0; r < n(); ++r) data[r] = Random(rng, 13);
    const std::vector<float> want = data[root];
    RunOk(n(), [&](Communicator& c) {
      HS_RETURN_IF_ERROR(c.Broadcast(data[c.rank()].data(), 13, root));
      return c.Broadcast(nullptr, 0, root);
    });
    for (int r = 0; r < n(); ++r) EXPECT_TRUE(SameBits(data[r], want)) << "rank " << r;
  }
}

TEST_P(Collectives, ManyCollectivesInARowKeepTheirOrder) {
  // Back-to-back calls reuse each rank's scratch; a rank running ahead must not disturb them.
  const std::vector<int64_t> counts = CountCases(n(), 10)[1];
  std::mt19937 rng(11);
  Buffers shards(n());
  std::vector<float> gathered;
  for (int r = 0; r < n(); ++r) {
    shards[r] = Random(rng, counts[r]);
    gathered.insert(gathered.end(), shards[r].begin(), shards[r].end());
  }
  Buffers sums(n(), gathered);
  for (float& x : sums[0]) x = 0;  // rank 0 contributes zeros, the others the gathered data
  std::vector<float> want_sum = RankOrderSum(sums);
  RunOk(n(), [&](Communicator& c) -> absl::Status {
    for (int i = 0; i < 50; ++i) {
      std::vector<float> full(Sum(counts), -1.0f);
      HS_RETURN_IF_ERROR(c.AllGatherV(shards[c.rank()].data(), full.data(), counts, impl()));
      if (full != gathered) return absl::InternalError(StrCat("iteration ", i, ": wrong all-gather"));
      if (c.rank() == 0) std::fill(full.begin(), full.end(), 0.0f);
      HS_RETURN_IF_ERROR(c.AllReduce(full.data(), static_cast<int64_t>(full.size())));
      if (!SameBits(full, want_sum)) return absl::InternalError(StrCat("iteration ", i, ": wrong sum"));
      HS_RETURN_IF_ERROR(c.Barrier());
    }
    return absl::OkStatus();
  });
}

INSTANTIATE_TEST_SUITE_P(
    RanksAndImpls, Collectives,
    ::testing::Combine(::testing::Values(1, 2, 3, 4),
                       ::testing::Values(CommImpl::kPadded, CommImpl::kGrouped)),
    [](const auto& info) {
      return StrCat(std::get<0>(info.param), "ranks_", CommImplName(std::get<1>(info.param)));
    });

INSTANTIATE_TEST_SUITE_P(Ranks, SingleImplCollectives, ::testing::Values(1, 2, 3, 4),
                         [](const auto& info) { return StrCat(info.param, "ranks"); });

TEST(ThreadRanks, ReportRankSizeAndName) {
  std::vector<int> seen(3, -1);
  RunOk(3, [&](Communicator& c) {
    EXPECT_EQ(c.size(), 3);
    EXPECT_EQ(c.name(), "threads");
    seen[c.rank()] = c.rank();
    return absl::OkStatus();
  });
  EXPECT_EQ(seen, (std::vector<int>{0, 1, 2}));
}

TEST(ThreadRanks, RejectBadArgumentsOfTheRunItself) {
  auto ok = [](Communicator&) { return absl::OkStatus(); };
  EXPECT_EQ(RunThreadRanks(0, ok).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RunThreadRanks(2, ok, 0.0).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ThreadRanks, ARankFailingBeforeACollectiveFailsTheOthersPromptly) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<absl::Status> got(3);
  absl::Status s = RunThreadRanks(
      3,
      [&](Communicator& c) -> absl::Status {
        if (c.rank() == 1) return absl::NotFoundError("rank 1 could not load its shard");
        std::vector<float> x(4, 1.0f);
        got[c.rank()] = c.AllReduce(x.data(), 4);
        return got[c.rank()];
      },
      /*timeout_s=*/2);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;  // the cause, not its consequences
  EXPECT_EQ(got[0].code(), absl::StatusCode::kAborted) << got[0];
  EXPECT_EQ(got[2].code(), absl::StatusCode::kAborted) << got[2];
  EXPECT_NE(got[0].message().find("could not load its shard"), std::string::npos) << got[0];
  EXPECT_LT(seconds, 1.5) << "the abort flag, not the 2 s timeout, should end the wait";
}

TEST(ThreadRanks, ARankReturningEarlyFailsTheOthersInsteadOfHanging) {
  std::vector<absl::Status> got(2);
  absl::Status s = RunThreadRanks(
      2,
      [&](Communicator& c) -> absl::Status {
        if (c.rank() == 0) return absl::OkStatus();  // skips the barrier
        got[1] = c.Barrier();
        return got[1];
      },
      /*timeout_s=*/2);
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted) << s;
  EXPECT_NE(s.message().find("rank 0 returned"), std::string::npos) << s;
}

// Point-to-point messages between thread ranks: delivered by (source, tag) in send order, sizes
// checked, and a receiver never hangs on a sender that failed or returned.
TEST(ThreadRanks, PointToPointMessagesArriveBySourceAndTagInOrder) {
  std::vector<std::vector<float>> got(4);
  absl::Status s = RunThreadRanks(3, [&](Communicator& c) -> absl::Status {
    if (c.rank() == 1) {
      HS_RETURN_IF_ERROR(c.SendAsync({1, 2, 3}, 0, 7));
      HS_RETURN_IF_ERROR(c.SendAsync({4}, 0, 7));
      HS_RETURN_IF_ERROR(c.SendAsync({5, 6}, 0, 9));
    } else if (c.rank() == 2) {
      HS_RETURN_IF_ERROR(c.SendAsync({8}, 0, 7));
    } else {
      got[0].resize(2), got[1].resize(1), got[2].resize(3), got[3].resize(1);
      HS_RETURN_IF_ERROR(c.Recv(got[0].data(), 2, 1, 9));  // tags need not be taken in send order
      HS_RETURN_IF_ERROR(c.Recv(got[1].data(), 1, 2, 7));
      HS_RETURN_IF_ERROR(c.Recv(got[2].data(), 3, 1, 7));
      HS_RETURN_IF_ERROR(c.Recv(got[3].data(), 1, 1, 7));
      std::vector<float> wrong(2);
      EXPECT_EQ(c.Recv(wrong.data(), 2, 0, 7).code(), absl::StatusCode::kInvalidArgument);  // from itself
      EXPECT_EQ(c.SendAsync({1}, 1, Communicator::kMaxTag).code(), absl::StatusCode::kInvalidArgument);
    }
    HS_RETURN_IF_ERROR(c.FlushSends());
    return c.Barrier();
  });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(got[0], std::vector<float>({5, 6}));
  EXPECT_EQ(got[1], std::vector<float>({8}));
  EXPECT_EQ(got[2], std::vector<float>({1, 2, 3}));
  EXPECT_EQ(got[3], std::vector<float>({4}));

  std::vector<absl::Status> recv(2);
  s = RunThreadRanks(2, [&](Communicator& c) -> absl::Status {
    if (c.rank() == 1) return c.SendAsync({1, 2}, 0, 3);
    std::vector<float> x(3);
    return recv[0] = c.Recv(x.data(), 3, 1, 3);  // the message has 2 elements
  });
  EXPECT_EQ(recv[0].code(), absl::StatusCode::kInvalidArgument) << recv[0];
  EXPECT_NE(recv[0].message().find("has 2 elements; expected 3"), std::string::npos) << recv[0];

  const auto start = std::chrono::steady_clock::now();
  s = RunThreadRanks(2, [&](Communicator& c) -> absl::Status {
    if (c.rank() == 1) return absl::OkStatus();  // returns without sending
    std::vector<float> x(1);
    return recv[1] = c.Recv(x.data(), 1, 1, 3);
  }, /*timeout_s=*/5);
  EXPECT_EQ(recv[1].code(), absl::StatusCode::kAborted) << recv[1];
  EXPECT_NE(recv[1].message().find("rank 1 returned without sending"), std::string::npos) << recv[1];
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 4);
}

TEST(ThreadRanks, AStuckRankMakesTheOthersTimeOut) {
  const auto start = std::chrono::steady_clock::now();
  absl::Status s = RunThreadRanks(
      2,
      [&](Communicator& c) -> absl::Status {
        if (c.rank() == 1) std::this_thread::sleep_for(std::chrono::milliseconds(1500));
        return c.Barrier();
      },
      /*timeout_s=*/0.3);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_NE(s.message().find("for ranks [1]"), std::string::npos) << s;
  EXPECT_LT(seconds, 1.8);
}

// Runs fn on n ranks with a short timeout and returns every rank's status.
std::vector<absl::Status> StatusesOf(int n, const std::function<absl::Status(Communicator&)>& fn) {
  std::vector<absl::Status> got(n);
  RunThreadRanks(n, [&](Communicator& c) { return got[c.rank()] = fn(c); }, /*timeout_s=*/2)
      .IgnoreError();  // the per-rank statuses are what is checked
  return got;
}

void ExpectAllInvalid(const std::vector<absl::Status>& got, const std::string& phrase) {
  for (size_t r = 0; r < got.size(); ++r) {
    EXPECT_EQ(got[r].code(), absl::StatusCode::kInvalidArgument) << "rank " << r << ": " << got[r];
    EXPECT_NE(got[r].message().find(phrase), std::string::npos) << "rank " << r << ": " << got[r];
  }
}

TEST(ThreadRanks, MismatchedCountsFailOnEveryRank) {
  for (CommImpl impl : {CommImpl::kPadded, CommImpl::kGrouped}) {
    ExpectAllInvalid(StatusesOf(2,
                                [&](Communicator& c) {
                                  const std::vector<int64_t> counts = {1, c.rank() == 0 ? 2 : 3};
                                  std::vector<float> send(counts[c.rank()]), recv(5);
                                  return c.AllGatherV(send.data(), recv.data(), counts, impl);
                                }),
                     "rank 1 passed counts [1, 3] but rank 0 passed [1, 2]");
    ExpectAllInvalid(StatusesOf(3,
                                [&](Communicator& c) {
                                  const std::vector<int64_t> counts =
                                      c.rank() == 2 ? std::vector<int64_t>{1, 1} : std::vector<int64_t>{1, 1, 1};
                                  std::vector<float> send(3), recv(1);
                                  return c.ReduceScatterV(send.data(), recv.data(), counts, impl);
                                }),
                     "rank 2: counts has 2 entries; expected one per rank (3)");
  }
  ExpectAllInvalid(StatusesOf(2,
                              [](Communicator& c) {
                                std::vector<float> x(4);
                                return c.AllReduce(x.data(), c.rank() == 0 ? 4 : 3);
                              }),
                   "rank 1 passed count 3 but rank 0 passed 4");
  ExpectAllInvalid(StatusesOf(2,
                              [](Communicator& c) {
                                std::vector<float> send(4), recv(4);
                                // rank 0 sends 2 to rank 1, which expects 1 from rank 0.
                                const std::vector<int64_t> sends = {1, 2}, recvs = {1, 1};
                                return c.AllToAllV(send.data(), sends, recv.data(), recvs);
                              }),
                   "rank 0 sends 2 elements to rank 1 (send_counts[1]) but rank 1 expects 1");
  ExpectAllInvalid(StatusesOf(2,
                              [](Communicator& c) {
                                std::vector<float> x(4);
                                return c.rank() == 0 ? c.AllReduce(x.data(), 4) : c.Barrier();
                              }),
                   "rank 0 called AllReduce but rank 1 called Barrier");
  ExpectAllInvalid(StatusesOf(2,
                              [](Communicator& c) {
                                std::vector<float> x(4);
                                return c.Broadcast(x.data(), 4, 2);
                              }),
                   "root = 2; expected a rank in [0, 2)");
}

TEST(ThreadRanks, RanksStayUsableAfterAMismatchIsReported) {
  RunOk(2, [](Communicator& c) -> absl::Status {
    std::vector<float> x = {1.0f, 2.0f};
    if (c.AllReduce(x.data(), c.rank() == 0 ? 2 : 1).ok()) {
      return absl::InternalError("the mismatch went unnoticed");
    }
    HS_RETURN_IF_ERROR(c.AllReduce(x.data(), 2));
    if (x != std::vector<float>{2.0f, 4.0f}) return absl::InternalError("wrong sum after the error");
    return absl::OkStatus();
  });
}

// ---- Split ----------------------------------------------------------------------------------

TEST(Split, GroupsRanksByColorAndOrdersThemByKey) {
  // 5 ranks: colors 0, 1, 0, 1, 0; keys descending, so each group is in reverse rank order.
  std::vector<int> sub_rank(5, -1), sub_size(5, -1);
  Buffers sums(5);
  RunOk(5, [&](Communicator& c) -> absl::Status {
    HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> sub, c.Split(c.rank() % 2, -c.rank()));
    if (sub == nullptr) return absl::InternalError("no sub-communicator");
    sub_rank[c.rank()] = sub->rank();
    sub_size[c.rank()] = sub->size();
    // Rank-order sum in the NEW order: ranks 4, 2, 0 (color 0), ranks 3, 1 (color 1).
    std::vector<float> x = {static_cast<float>(c.rank()) * 0.1f + 1e-7f * static_cast<float>(sub->rank())};
    std::vector<float> all(sub->size());
    HS_RETURN_IF_ERROR(sub->AllGatherV(x.data(), all.data(), std::vector<int64_t>(sub->size(), 1), CommImpl::kGrouped));
    sums[c.rank()] = all;
    return sub->Barrier();
  });
  EXPECT_EQ(sub_rank, (std::vector<int>{2, 1, 1, 0, 0}));
  EXPECT_EQ(sub_size, (std::vector<int>{3, 2, 3, 2, 3}));
  auto v = [](int r, int sr) { return static_cast<float>(r) * 0.1f + 1e-7f * static_cast<float>(sr); };
  for (int r : {0, 2, 4}) EXPECT_EQ(sums[r], (std::vector<float>{v(4, 0), v(2, 1), v(0, 2)})) << "rank " << r;
  for (int r : {1, 3}) EXPECT_EQ(sums[r], (std::vector<float>{v(3, 0), v(1, 1)})) << "rank " << r;
}

TEST(Split, SumsInTheSubCommunicatorsRankOrder) {
  std::mt19937 rng(21);
  Buffers data(4);
  for (auto& d : data) d = Random(rng, 101);
  // Ranks 1 and 3 form one group, in the order 3, 1 (key = -rank).
  const std::vector<float> want = RankOrderSum({data[3], data[1]});
  Buffers got(4);
  RunOk(4, [&](Communicator& c) -> absl::Status {
    HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> sub, c.Split(c.rank() % 2, -c.rank()));
    got[c.rank()] = data[c.rank()];
    return sub->AllReduce(got[c.rank()].data(), 101);
  });
  EXPECT_TRUE(SameBits(got[1], want));
  EXPECT_TRUE(SameBits(got[3], want));
}

TEST(Split, NoColorGivesNoCommunicatorAndSplitsNest) {
  std::vector<int> nested_size(6, -1);
  RunOk(6, [&](Communicator& c) -> absl::Status {
    // Rank 5 joins nothing; ranks 0-4 form one group, then split again into {0, 1, 2}, {3, 4}.
    HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> sub,
                        c.Split(c.rank() == 5 ? Communicator::kNoColor : 7, c.rank()));
    if (c.rank() == 5) {
      if (sub != nullptr) return absl::InternalError("rank 5 got a sub-communicator");
      return c.Barrier();
    }
    HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> inner, sub->Split(sub->rank() < 3 ? 0 : 1, 0));
    nested_size[c.rank()] = inner->size();
    // The parent still works, interleaved with its splits.
    float one = 1;
    HS_RETURN_IF_ERROR(inner->AllReduce(&one, 1));
    if (one != static_cast<float>(inner->size())) return absl::InternalError("wrong nested sum");
    HS_RETURN_IF_ERROR(c.Barrier());
    return sub->Barrier();
  });
  EXPECT_EQ(nested_size, (std::vector<int>{3, 3, 3, 2, 2, -1}));
}

TEST(Split, BadOrMismatchedCallsFailOnEveryRank) {
  ExpectAllInvalid(StatusesOf(3, [](Communicator& c) { return c.Split(c.rank() == 1 ? -2 : 0, 0).status(); }),
                   "rank 1: color = -2; expected >= 0, or kNoColor (-1)");
  ExpectAllInvalid(StatusesOf(2,
                              [](Communicator& c) {
                                return c.rank() == 0 ? c.Split(0, 0).status() : c.Barrier();
                              }),
                   "rank 0 called Split but rank 1 called Barrier");
}

TEST(Split, ARankFailingAbortsItsPeersInASubCommunicatorPromptly) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<absl::Status> got(4);
  absl::Status s = RunThreadRanks(
      4,
      [&](Communicator& c) -> absl::Status {
        HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> pair, c.Split(c.rank() / 2, c.rank()));
        if (c.rank() == 3) return absl::NotFoundError("rank 3 could not load its shard");
        std::vector<float> x(4, 1.0f);
        got[c.rank()] = pair->AllReduce(x.data(), 4);  // ranks 0, 1 finish; rank 2 waits for 3
        if (!got[c.rank()].ok()) return got[c.rank()];
        return got[c.rank()] = c.Barrier();             // ranks 0, 1 wait for 2 and 3
      },
      /*timeout_s=*/5);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  for (int r : {0, 1, 2}) {
    EXPECT_EQ(got[r].code(), absl::StatusCode::kAborted) << "rank " << r << ": " << got[r];
    EXPECT_NE(got[r].message().find("could not load its shard"), std::string::npos) << got[r];
  }
  EXPECT_NE(got[2].message().find("threads AllReduce"), std::string::npos) << got[2];
  EXPECT_LT(seconds, 2.0) << "the abort, not the 5 s timeout, should end the waits";
}

TEST(Split, ARankReturningEarlyAbortsItsPeersInASubCommunicator) {
  std::vector<absl::Status> got(4);
  absl::Status s = RunThreadRanks(
      4,
      [&](Communicator& c) -> absl::Status {
        HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> pair, c.Split(c.rank() / 2, c.rank()));
        if (c.rank() == 3) return absl::OkStatus();  // skips the pair's barrier
        if (c.rank() != 2) return absl::OkStatus();
        return got[2] = pair->Barrier();
      },
      /*timeout_s=*/5);
  EXPECT_EQ(got[2].code(), absl::StatusCode::kAborted) << got[2];
  EXPECT_NE(got[2].message().find("rank 1 returned"), std::string::npos) << got[2];  // rank 3 is 1 in the pair
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted) << s;
}

TEST(Split, AStuckRankMakesItsSubCommunicatorPeersTimeOut) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<absl::Status> got(2);
  RunThreadRanks(
      2,
      [&](Communicator& c) -> absl::Status {
        HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> sub, c.Split(0, c.rank()));
        if (c.rank() == 1) std::this_thread::sleep_for(std::chrono::milliseconds(1500));
        return got[c.rank()] = sub->Barrier();
      },
      /*timeout_s=*/0.3)
      .IgnoreError();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(got[0].code(), absl::StatusCode::kDeadlineExceeded) << got[0];
  EXPECT_NE(got[0].message().find("for ranks [1]"), std::string::npos) << got[0];
  EXPECT_LT(seconds, 1.8);
}

TEST(Split, SubCommunicatorsRunOnTheirOwnThreadsSideBySide) {
  // Each rank drives its world and a split of it from two threads at once: the two sequences
  // of collectives are independent.
  RunOk(3, [](Communicator& c) -> absl::Status {
    HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> side, c.Split(0, c.rank()));
    HS_RETURN_IF_ERROR(c.CheckConcurrentUse());
    absl::Status side_status;
    std::thread t([&] {
      for (int i = 0; i < 200 && side_status.ok(); ++i) {
        float x = 1;
        side_status = side->AllReduce(&x, 1);
        if (side_status.ok() && x != 3) side_status = absl::InternalError("wrong side sum");
      }
    });
    absl::Status main_status;
    for (int i = 0; i < 200 && main_status.ok(); ++i) {
      float x = 2;
      main_status = c.AllReduce(&x, 1);
      if (main_status.ok() && x != 6) main_status = absl::InternalError("wrong main sum");
    }
    t.join();
    HS_RETURN_IF_ERROR(side_status);
    return main_status;
  });
}

TEST(Mpi, WithoutMpiTheWorldIsAFailedPrecondition) {
  if (MpiAvailable()) GTEST_SKIP() << "built with MPI: comm_mpi (ctest) checks it under mpirun";
  EXPECT_EQ(MpiWorld().status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace hetsynth::runtime
