// The GPU communicators (runtime/backends/cuda/src/comm/gpu_comm.h): the SM apportioning of green
// contexts and the rank-order sum functor (every build); the device communicator's protocol on
// host buffers — its splits, the mesh collectives on it and AsyncCollectives' synchronous
// fallback included (CUDA builds, no GPU needed); virtual GPUs — green contexts and plain
// streams, and their splits — and a one-rank NCCL communicator and its ncclCommSplit on a GPU
// (skipped without one). Results are checked bit for bit
// against a direct computation: concatenation in rank order, sums ((x₀ + x₁) + x₂) + … in float.
#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <deque>
#include <functional>
#include <iomanip>
#include <iostream>
#include <memory>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "comm/comm_kernels.h"
#include "comm_reference.h"
#include "green.h"
#include "hetsynth/runtime/async_collectives.h"
#include "hetsynth/runtime/comm.h"
#include "hetsynth/runtime/mesh_collectives.h"
#include "hetsynth/runtime/cuda.h"
#if defined(HETSYNTH_HAVE_CUDA)
#include <cuda_runtime.h>

#include "comm/gpu_comm.h"
#include "exec/exec_gpu.h"
#endif

namespace hetsynth::runtime::testing {
namespace {

using comm_testing::Buffers;
using comm_testing::Random;
using comm_testing::RankOrderSum;

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

// --- Every build ------------------------------------------------------------------------------

TEST(ApportionSmGroups, SplitsGroupsInProportionToSpeed) {
  using V = std::vector<int>;
  EXPECT_EQ(*gpu::ApportionSmGroups({4, 4, 2, 1}, 16), (V{6, 6, 3, 1}));  // H100: 16 groups of 8
  EXPECT_EQ(*gpu::ApportionSmGroups({4, 4, 2, 1}, 11), (V{4, 4, 2, 1}));  // exact
  EXPECT_EQ(*gpu::ApportionSmGroups({4, 4, 2, 1}, 22), (V{8, 8, 4, 2}));
  EXPECT_EQ(*gpu::ApportionSmGroups({1, 1, 1}, 16), (V{6, 5, 5}));        // ties: lower rank first
  EXPECT_EQ(*gpu::ApportionSmGroups({1}, 16), (V{16}));
  EXPECT_EQ(*gpu::ApportionSmGroups({0.5, 1.5}, 8), (V{2, 6}));
}

TEST(ApportionSmGroups, GivesEveryDeviceAtLeastOneGroup) {
  using V = std::vector<int>;
  EXPECT_EQ(*gpu::ApportionSmGroups({100, 1}, 2), (V{1, 1}));
  EXPECT_EQ(*gpu::ApportionSmGroups({100, 1, 1}, 4), (V{2, 1, 1}));
  EXPECT_EQ(*gpu::ApportionSmGroups({1000, 1, 1, 1}, 10), (V{7, 1, 1, 1}));
}

TEST(ApportionSmGroups, UsesAllGroupsAndKeepsTheSpeedOrder) {
  std::mt19937 rng(7);
  for (int t = 0; t < 500; ++t) {
    const int n = std::uniform_int_distribution<int>(1, 8)(rng);
    const int groups = std::uniform_int_distribution<int>(n, 40)(rng);
    std::vector<double> speeds(n);
    for (double& s : speeds) s = std::uniform_real_distribution<double>(0.1, 10)(rng);
    absl::StatusOr<std::vector<int>> got = gpu::ApportionSmGroups(speeds, groups);
    ASSERT_TRUE(got.ok()) << got.status();
    int total = 0;
    const double sum = std::accumulate(speeds.begin(), speeds.end(), 0.0);
    const bool raised = std::any_of(speeds.begin(), speeds.end(), [&](double s) { return groups * s / sum < 1; });
    for (int r = 0; r < n; ++r) {
      EXPECT_GE((*got)[r], 1);
      total += (*got)[r];
      // Off from its exact quota by less than one group, unless some device was raised to one.
      const double quota = groups * speeds[r] / sum;
      if (!raised) {
        EXPECT_LT(std::abs((*got)[r] - quota), 1.0 + 1e-9) << "rank " << r;
      }
      for (int k = 0; k < n; ++k) {
        if (speeds[k] > speeds[r]) {
          EXPECT_GE((*got)[k], (*got)[r]);
        }
      }
    }
    EXPECT_EQ(total, groups);
  }
}

TEST(ApportionSmGroups, RejectsBadSpeedsAndTooFewGroups) {
  EXPECT_EQ(gpu::ApportionSmGroups({}, 16).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu::ApportionSmGroups({1, 0}, 16).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu::ApportionSmGroups({1, -2}, 16).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu::ApportionSmGroups({1, NAN}, 16).status().code(), absl::StatusCode::kInvalidArgument);
  absl::Status few = gpu::ApportionSmGroups({1, 1, 1}, 2).status();
  EXPECT_EQ(few.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(few.message().find("fewer than the 3 virtual devices"), std::string::npos) << few;
  EXPECT_NE(gpu::CheckSpeeds({1, 2}, 1).find("at most 1"), std::string::npos);
}

TEST(RankSum, AddsInRankOrderInFloat) {
  // Magnitudes spread over 9 decades, so another summation order would round differently.
  std::mt19937 rng(3);
  for (int n : {1, 2, 3, 17, gpu::kMaxCommRanks}) {
    Buffers in(n);
    for (int k = 0; k < n; ++k) {
      in[k] = Random(rng, 33);
      for (float& v : in[k]) v *= std::pow(10.0f, static_cast<float>(k % 9));
    }
    std::vector<float> out(33, -1.0f);
    gpu::RankSum f{};
    f.n = n;
    f.out = out.data();
    for (int k = 0; k < n; ++k) f.in[k] = in[k].data();
    for (int64_t i = 0; i < 33; ++i) f(i);
    EXPECT_TRUE(SameBits(out, RankOrderSum(in))) << n << " ranks";
  }
}

#if defined(HETSYNTH_HAVE_CUDA)

// --- A script of collectives and its expected results ---------------------------------------

// Where a rank's buffers live: host vectors, or device memory of its executor.
class Memory {
 public:
  virtual ~Memory() = default;
  virtual float* Put(const std::vector<float>& v) = 0;  // nullptr for empty v
  virtual absl::StatusOr<std::vector<float>> Get(const float* p, int64_t n) = 0;
};

class HostMemory final : public Memory {
 public:
  float* Put(const std::vector<float>& v) override {
    if (v.empty()) return nullptr;
    store_.push_back(v);
    return store_.back().data();
  }
  absl::StatusOr<std::vector<float>> Get(const float* p, int64_t n) override { return std::vector<float>(p, p + n); }

 private:
  std::deque<std::vector<float>> store_;
};

class DeviceMemory final : public Memory {
 public:
  explicit DeviceMemory(gpu::GpuExec& x) : x_(x) {}
  float* Put(const std::vector<float>& v) override {
    if (v.empty()) return nullptr;
    Tensor t({static_cast<int64_t>(v.size())});
    std::copy(v.begin(), v.end(), t.ptr());
    store_.push_back(x_.Upload(t));
    return store_.back().ptr();
  }
  absl::StatusOr<std::vector<float>> Get(const float* p, int64_t n) override {
    std::vector<float> v(n);
    if (n == 0) return v;
    if (cudaMemcpyAsync(v.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost,
                        static_cast<cudaStream_t>(x_.stream())) != cudaSuccess ||
        cudaStreamSynchronize(static_cast<cudaStream_t>(x_.stream())) != cudaSuccess) {
      return absl::InternalError("download failed");
    }
    return v;
  }

 private:
  gpu::GpuExec& x_;
  std::deque<gpu::DeviceTensor> store_;
};

struct Script {
  int n = 1;
  CommImpl impl = CommImpl::kGrouped;
  std::vector<int64_t> counts;               // AllGatherV / ReduceScatterV
  Buffers shards, rs_send, allreduce, bcast;  // per rank
  std::vector<std::vector<int64_t>> a2a;     // [j][k]: elements rank j sends rank k
  Buffers a2a_send;                          // per rank, blocks in destination order
  int root = 0;
};

Script MakeScript(int n, CommImpl impl, const std::vector<int64_t>& counts, uint32_t seed) {
  std::mt19937 rng(seed);
  Script s;
  s.n = n;
  s.impl = impl;
  s.counts = counts;
  const int64_t total = comm_testing::Sum(counts);
  s.a2a.assign(n, std::vector<int64_t>(n));
  for (int r = 0; r < n; ++r) {
    s.shards.push_back(Random(rng, counts[r]));
    s.rs_send.push_back(Random(rng, total));
    s.allreduce.push_back(Random(rng, 37));
    s.bcast.push_back(Random(rng, 13));
    for (int k = 0; k < n; ++k) s.a2a[r][k] = std::uniform_int_distribution<int>(0, 2)(rng) == 0 ? 0 : (r + 2 * k) % 5;
  }
  for (int r = 0; r < n; ++r) s.a2a_send.push_back(Random(rng, comm_testing::Sum(s.a2a[r])));
  s.root = n - 1;
  return s;
}

// What rank r must hold after the script: the all-gather, the reduce-scatter, the all-reduce,
// the all-to-all, the broadcast and the in-place all-gather, concatenated.
std::vector<float> Expected(const Script& s, int r) {
  std::vector<float> out, gathered;
  for (int k = 0; k < s.n; ++k) gathered.insert(gathered.end(), s.shards[k].begin(), s.shards[k].end());
  out.insert(out.end(), gathered.begin(), gathered.end());
  int64_t at = 0;
  for (int k = 0; k < r; ++k) at += s.counts[k];
  Buffers segments;
  for (int k = 0; k < s.n; ++k) {
    segments.emplace_back(s.rs_send[k].begin() + at, s.rs_send[k].begin() + at + s.counts[r]);
  }
  const std::vector<float> reduced = RankOrderSum(segments);
  out.insert(out.end(), reduced.begin(), reduced.end());
  const std::vector<float> all = RankOrderSum(s.allreduce);
  out.insert(out.end(), all.begin(), all.end());
  for (int k = 0; k < s.n; ++k) {
    int64_t from = 0;
    for (int j = 0; j < r; ++j) from += s.a2a[k][j];
    out.insert(out.end(), s.a2a_send[k].begin() + from, s.a2a_send[k].begin() + from + s.a2a[k][r]);
  }
  out.insert(out.end(), s.bcast[s.root].begin(), s.bcast[s.root].end());
  out.insert(out.end(), gathered.begin(), gathered.end());
  return out;
}

// Runs the script as rank c.rank() with buffers in `mem`; *out: what the rank ends up with.
absl::Status RunScript(Communicator& c, const Script& s, Memory& mem, std::vector<float>* out) {
  const int r = c.rank(), n = s.n;
  const int64_t total = comm_testing::Sum(s.counts);
  auto append = [&](const float* p, int64_t len) -> absl::Status {
    HS_ASSIGN_OR_RETURN(std::vector<float> v, mem.Get(p, len));
    out->insert(out->end(), v.begin(), v.end());
    return absl::OkStatus();
  };
  float* shard = mem.Put(s.shards[r]);
  float* gathered = mem.Put(std::vector<float>(total, -7.0f));
  HS_RETURN_IF_ERROR(c.AllGatherV(shard, gathered, s.counts, s.impl));
  float* rs_send = mem.Put(s.rs_send[r]);
  float* rs_recv = mem.Put(std::vector<float>(s.counts[r], -7.0f));
  HS_RETURN_IF_ERROR(c.ReduceScatterV(rs_send, rs_recv, s.counts, s.impl));
  float* ar = mem.Put(s.allreduce[r]);
  HS_RETURN_IF_ERROR(c.AllReduce(ar, 37));
  std::vector<int64_t> recv_counts(n);
  for (int k = 0; k < n; ++k) recv_counts[k] = s.a2a[k][r];
  float* a2a_send = mem.Put(s.a2a_send[r]);
  float* a2a_recv = mem.Put(std::vector<float>(comm_testing::Sum(recv_counts), -7.0f));
  HS_RETURN_IF_ERROR(c.AllToAllV(a2a_send, s.a2a[r], a2a_recv, recv_counts));
  float* bc = mem.Put(s.bcast[r]);
  HS_RETURN_IF_ERROR(c.Broadcast(bc, 13, s.root));
  HS_RETURN_IF_ERROR(c.Barrier());
  // In place: this rank's shard already sits at its offset of the full buffer.
  std::vector<float> in_place(total, -7.0f);
  int64_t at = 0;
  for (int k = 0; k < r; ++k) at += s.counts[k];
  std::copy(s.shards[r].begin(), s.shards[r].end(), in_place.begin() + at);
  float* full = mem.Put(in_place);
  HS_RETURN_IF_ERROR(c.AllGatherV(full ? full + at : nullptr, full, s.counts, s.impl));

  HS_RETURN_IF_ERROR(append(gathered, total));
  HS_RETURN_IF_ERROR(append(rs_recv, s.counts[r]));
  HS_RETURN_IF_ERROR(append(ar, 37));
  HS_RETURN_IF_ERROR(append(a2a_recv, comm_testing::Sum(recv_counts)));
  HS_RETURN_IF_ERROR(append(bc, 13));
  return append(full, total);
}

// Count patterns for n ranks: uneven with zeros, all zero, one rank holding everything.
std::vector<std::vector<int64_t>> CountCases(int n) {
  std::vector<std::vector<int64_t>> cases;
  std::vector<int64_t> uneven(n);
  for (int r = 0; r < n; ++r) uneven[r] = (r * 7 + 3) % 5 == 0 ? 0 : (r * 37 + 11) % 300;
  cases.push_back(uneven);
  std::vector<int64_t> small(n);
  for (int r = 0; r < n; ++r) small[r] = r % 2 ? 0 : r + 1;
  cases.push_back(small);
  cases.push_back(std::vector<int64_t>(n, 0));
  std::vector<int64_t> one(n, 0);
  one[n - 1] = 7;
  cases.push_back(one);
  return cases;
}

// --- The device communicator's protocol on host buffers (no GPU needed) --------------------

class DeviceCommOnHost : public ::testing::TestWithParam<std::tuple<int, CommImpl>> {};

TEST_P(DeviceCommOnHost, UnevenCollectivesMatchTheDirectComputation) {
  const auto [n, impl] = GetParam();
  uint32_t seed = 11;
  for (const std::vector<int64_t>& counts : CountCases(n)) {
    const Script s = MakeScript(n, impl, counts, seed++);
    std::vector<std::vector<float>> got(n);
    absl::Status st = gpu::RunDeviceCommOnHost(n, [&](Communicator& c) {
      EXPECT_EQ(c.name(), "device");
      EXPECT_EQ(c.size(), n);
      HostMemory mem;
      return RunScript(c, s, mem, &got[c.rank()]);
    });
    ASSERT_TRUE(st.ok()) << st;
    for (int r = 0; r < n; ++r) EXPECT_TRUE(SameBits(got[r], Expected(s, r))) << "rank " << r;
  }
}

TEST_P(DeviceCommOnHost, GivesTheThreadCommunicatorsBits) {
  const auto [n, impl] = GetParam();
  const Script s = MakeScript(n, impl, CountCases(n)[0], 99);
  std::vector<std::vector<float>> dev(n), threads(n);
  ASSERT_TRUE(gpu::RunDeviceCommOnHost(n, [&](Communicator& c) {
                HostMemory mem;
                return RunScript(c, s, mem, &dev[c.rank()]);
              }).ok());
  ASSERT_TRUE(RunThreadRanks(n, [&](Communicator& c) {
                HostMemory mem;
                return RunScript(c, s, mem, &threads[c.rank()]);
              }).ok());
  for (int r = 0; r < n; ++r) EXPECT_TRUE(SameBits(dev[r], threads[r])) << "rank " << r;
}

INSTANTIATE_TEST_SUITE_P(Ranks, DeviceCommOnHost,
                         ::testing::Combine(::testing::Values(1, 3, 4),
                                            ::testing::Values(CommImpl::kPadded, CommImpl::kGrouped)),
                         [](const auto& info) {
                           return StrCat(std::get<0>(info.param), "ranks_", CommImplName(std::get<1>(info.param)));
                         });

// Runs fn on n host ranks of the device communicator; every rank's status.
std::vector<absl::Status> StatusesOf(int n, const std::function<absl::Status(Communicator&)>& fn) {
  std::vector<absl::Status> got(n);
  gpu::RunDeviceCommOnHost(n, [&](Communicator& c) { return got[c.rank()] = fn(c); }, /*timeout_s=*/2)
      .IgnoreError();
  return got;
}

void ExpectAllInvalid(const std::vector<absl::Status>& got, const std::string& phrase) {
  for (size_t r = 0; r < got.size(); ++r) {
    EXPECT_EQ(got[r].code(), absl::StatusCode::kInvalidArgument) << "rank " << r << ": " << got[r];
    EXPECT_NE(got[r].message().find(phrase), std::string::npos) << "rank " << r << ": " << got[r];
  }
}

TEST(DeviceCommArguments, MismatchesFailOnEveryRank) {
  std::vector<float> a(8, 1.0f), b(8);
  ExpectAllInvalid(StatusesOf(2, [&](Communicator& c) {
                     std::vector<int64_t> counts = {1, c.rank() == 0 ? 2 : 3};
                     return c.AllGatherV(a.data() + c.rank() * 4, b.data(), counts, CommImpl::kGrouped);
                   }),
                   "every rank must pass the same counts");
  ExpectAllInvalid(StatusesOf(2, [&](Communicator& c) {
                     std::vector<float> x(4, 1.0f);
                     return c.rank() == 0 ? c.AllReduce(x.data(), 4) : c.Broadcast(x.data(), 4, 0);
                   }),
                   "rank 0 called AllReduce but rank 1 called Broadcast");
  ExpectAllInvalid(StatusesOf(3, [&](Communicator& c) {
                     std::vector<float> x(4, 1.0f);
                     return c.AllReduce(x.data(), c.rank() == 2 ? 3 : 4);
                   }),
                   "every rank must pass the same count");
  ExpectAllInvalid(StatusesOf(2, [&](Communicator& c) {
                     std::vector<float> x(4, 1.0f);
                     return c.Broadcast(x.data(), 4, c.rank() == 0 ? 0 : 2);
                   }),
                   "root = 2");
  ExpectAllInvalid(StatusesOf(2, [&](Communicator& c) {
                     std::vector<float> x(4, 1.0f), y(4);
                     return c.AllToAllV(x.data(), {1, 1}, y.data(), {1, c.rank() == 1 ? 2 : 1});
                   }),
                   "rank 1 sends 1 elements to rank 1 (send_counts[1]) but rank 1 expects 2");
  ExpectAllInvalid(StatusesOf(2, [&](Communicator& c) {
                     return c.AllGatherV(nullptr, b.data(), {1, 1}, CommImpl::kPadded);
                   }),
                   "send is null");
  ExpectAllInvalid(StatusesOf(2, [&](Communicator& c) {
                     std::vector<float> x(4);
                     return c.ReduceScatterV(x.data(), x.data() + 1, {2, 2}, CommImpl::kGrouped);
                   }),
                   "send overlaps recv");
  ExpectAllInvalid(StatusesOf(2, [&](Communicator& c) {
                     std::vector<float> x(4, 1.0f);
                     return c.AllReduce(x.data(), -1);
                   }),
                   "count = -1");
}

TEST(DeviceCommArguments, RanksStayUsableAfterAMismatch) {
  std::vector<absl::Status> first(2), second(2);
  std::vector<std::vector<float>> out(2);
  gpu::RunDeviceCommOnHost(2, [&](Communicator& c) -> absl::Status {
    std::vector<float> x(4, static_cast<float>(c.rank() + 1));
    first[c.rank()] = c.AllReduce(x.data(), c.rank() == 0 ? 4 : 3);
    second[c.rank()] = c.AllReduce(x.data(), 4);
    out[c.rank()] = x;
    return absl::OkStatus();
  }).IgnoreError();
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(first[r].code(), absl::StatusCode::kInvalidArgument) << first[r];
    EXPECT_TRUE(second[r].ok()) << second[r];
    EXPECT_EQ(out[r], std::vector<float>(4, 3.0f));
  }
}

TEST(DeviceCommArguments, AFailingRankAbortsTheOthersPromptly) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<absl::Status> got(3);
  absl::Status s = gpu::RunDeviceCommOnHost(
      3,
      [&](Communicator& c) -> absl::Status {
        if (c.rank() == 1) return absl::NotFoundError("rank 1 could not load its shard");
        std::vector<float> x(4, 1.0f);
        return got[c.rank()] = c.AllReduce(x.data(), 4);
      },
      /*timeout_s=*/2);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_EQ(got[0].code(), absl::StatusCode::kAborted) << got[0];
  EXPECT_EQ(got[2].code(), absl::StatusCode::kAborted) << got[2];
  EXPECT_NE(got[0].message().find("device AllReduce"), std::string::npos) << got[0];
  EXPECT_LT(seconds, 1.5);
}

TEST(DeviceCommArguments, AStuckRankMakesTheOthersTimeOut) {
  absl::Status s = gpu::RunDeviceCommOnHost(
      2,
      [&](Communicator& c) -> absl::Status {
        if (c.rank() == 1) std::this_thread::sleep_for(std::chrono::milliseconds(1500));
        return c.Barrier();
      },
      /*timeout_s=*/0.3);
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
}

TEST(DeviceCommArguments, RunsRejectBadArguments) {
  auto ok = [](Communicator&) { return absl::OkStatus(); };
  EXPECT_EQ(gpu::RunDeviceCommOnHost(0, ok).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu::RunDeviceCommOnHost(gpu::kMaxCommRanks + 1, ok).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu::RunDeviceCommOnHost(2, ok, 0.0).code(), absl::StatusCode::kInvalidArgument);
  auto vok = [](Communicator&, gpu::GpuExec&) { return absl::OkStatus(); };
  EXPECT_EQ(gpu::RunVirtualGpus({}, vok).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu::RunVirtualGpus({1, -1}, vok).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu::RunVirtualGpus(std::vector<double>(gpu::kMaxCommRanks + 1, 1.0), vok).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu::RunVirtualGpus({1, 1}, vok, {.timeout_s = -1}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu::RunVirtualGpus({1, 1}, vok, {.device = 1000}).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(DeviceCommSplit, SubCommunicatorsRunTheSameProtocol) {
  // 5 ranks: colors by parity, keys reversed; the script on each sub-communicator, and the
  // parent still works afterwards.
  const Script s2 = MakeScript(2, CommImpl::kPadded, CountCases(2)[0], 41);
  const Script s3 = MakeScript(3, CommImpl::kGrouped, CountCases(3)[0], 42);
  std::vector<std::vector<float>> got(5);
  std::vector<int> sub_rank(5, -1);
  absl::Status st = gpu::RunDeviceCommOnHost(5, [&](Communicator& c) -> absl::Status {
    HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> sub, c.Split(c.rank() % 2, -c.rank()));
    if (sub->name() != "device") return absl::InternalError("the split is not a device communicator");
    sub_rank[c.rank()] = sub->rank();
    HostMemory mem;
    HS_RETURN_IF_ERROR(RunScript(*sub, sub->size() == 2 ? s2 : s3, mem, &got[c.rank()]));
    return c.Barrier();
  });
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(sub_rank, (std::vector<int>{2, 1, 1, 0, 0}));
  for (int r = 0; r < 5; ++r) {
    EXPECT_TRUE(SameBits(got[r], Expected(r % 2 ? s2 : s3, sub_rank[r]))) << "rank " << r;
  }
}

TEST(DeviceCommSplit, AFailingRankAbortsItsSubCommunicatorPeers) {
  std::vector<absl::Status> got(4);
  const auto start = std::chrono::steady_clock::now();
  absl::Status s = gpu::RunDeviceCommOnHost(
      4,
      [&](Communicator& c) -> absl::Status {
        HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> pair, c.Split(c.rank() / 2, c.rank()));
        if (c.rank() == 3) return absl::NotFoundError("rank 3 gave up");
        std::vector<float> x(4, 1.0f);
        return got[c.rank()] = c.rank() == 2 ? pair->AllReduce(x.data(), 4) : c.Barrier();
      },
      /*timeout_s=*/5);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  for (int r : {0, 1, 2}) EXPECT_EQ(got[r].code(), absl::StatusCode::kAborted) << "rank " << r << ": " << got[r];
  EXPECT_NE(got[2].message().find("device AllReduce"), std::string::npos) << got[2];
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 2.0);
}

TEST(DeviceCommSplit, MeshCollectivesRunOnTheDeviceProtocol) {
  // Host buffers through the device communicator's host path: the same bits as on threads.
  const std::vector<int> sizes = {1, 3};
  std::mt19937 rng(43);
  Buffers data(4);
  for (auto& d : data) d = Random(rng, 1001);
  const std::vector<float> want = comm_testing::MeshSum(data, sizes);
  absl::Status st = gpu::RunDeviceCommOnHost(4, [&](Communicator& c) -> absl::Status {
    HS_ASSIGN_OR_RETURN(Mesh mesh, Mesh::FromSizes(sizes));
    HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> node, SplitByNode(c, mesh));
    return HierarchicalAllReduce(MeshComms{c, *node, mesh}, data[c.rank()].data(), 1001);
  });
  ASSERT_TRUE(st.ok()) << st;
  for (int r = 0; r < 4; ++r) EXPECT_TRUE(SameBits(data[r], want)) << "rank " << r;
}

TEST(DeviceCommSplit, AsyncCollectivesRunSynchronouslyOnTheRanksThread) {
  std::vector<int> overlapped(2, -1);
  std::vector<std::string> why(2);
  std::vector<std::vector<float>> data = {{1, 2}, {3, 4}};
  absl::Status st = gpu::RunDeviceCommOnHost(2, [&](Communicator& c) -> absl::Status {
    HS_ASSIGN_OR_RETURN(std::unique_ptr<AsyncCollectives> async, AsyncCollectives::Create(c));
    overlapped[c.rank()] = async->overlapped();
    why[c.rank()] = std::string(async->why_synchronous().message());
    return async->AllReduce(data[c.rank()].data(), 2).Wait();
  });
  ASSERT_TRUE(st.ok()) << st;
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(overlapped[r], 0);
    EXPECT_NE(why[r].find("device: collectives enqueue work on the rank's stream"), std::string::npos) << why[r];
    EXPECT_EQ(data[r], (std::vector<float>{4, 6}));
  }
}

TEST(Nccl, WithoutAGpuOrNcclItIsAFailedPrecondition) {
  if (ProbeCuda().devices > 0) GTEST_SKIP() << "a GPU is visible: Nccl.* below run";
  // No GpuExec can be made without a device; NcclAvailable says whether the build has NCCL.
  EXPECT_EQ(gpu::GpuExec::Create({}).status().code(), absl::StatusCode::kFailedPrecondition);
  SUCCEED() << "NCCL in this build: " << gpu::NcclAvailable();
}

// --- On a GPU ---------------------------------------------------------------------------------

bool NoGpu(std::string* reason) {
  const CudaInfo info = ProbeCuda();
  *reason = info.reason;
  return info.devices == 0;
}
#define HS_SKIP_WITHOUT_GPU()                           \
  do {                                                  \
    std::string hs_reason_;                             \
    if (NoGpu(&hs_reason_)) GTEST_SKIP() << "no GPU: " << hs_reason_; \
  } while (0)

class VirtualGpus : public ::testing::TestWithParam<std::tuple<std::vector<double>, bool>> {};

TEST_P(VirtualGpus, UnevenCollectivesOnDeviceBuffersMatchTheDirectComputation) {
  HS_SKIP_WITHOUT_GPU();
  const auto& [speeds, green] = GetParam();
  const int n = static_cast<int>(speeds.size());
  uint32_t seed = 5;
  for (CommImpl impl : {CommImpl::kPadded, CommImpl::kGrouped}) {
    for (const std::vector<int64_t>& counts : CountCases(n)) {
      const Script s = MakeScript(n, impl, counts, seed++);
      std::vector<std::vector<float>> got(n), host(n);
      absl::Status st = gpu::RunVirtualGpus(
          speeds,
          [&](Communicator& c, gpu::GpuExec& x) -> absl::Status {
            DeviceMemory dmem(x);
            HS_RETURN_IF_ERROR(RunScript(c, s, dmem, &got[c.rank()]));
            HostMemory hmem;  // the host path of the same communicator
            return RunScript(c, s, hmem, &host[c.rank()]);
          },
          {.green = green, .timeout_s = 60});
      if (green && st.code() == absl::StatusCode::kFailedPrecondition) GTEST_SKIP() << st;
      ASSERT_TRUE(st.ok()) << st;
      for (int r = 0; r < n; ++r) {
        const std::vector<float> want = Expected(s, r);
        EXPECT_TRUE(SameBits(got[r], want)) << "device buffers, rank " << r << ", " << CommImplName(impl);
        EXPECT_TRUE(SameBits(host[r], want)) << "host buffers, rank " << r << ", " << CommImplName(impl);
      }
    }
  }
}

TEST_P(VirtualGpus, SmCountsFollowTheSpeeds) {
  HS_SKIP_WITHOUT_GPU();
  const auto& [speeds, green] = GetParam();
  const int n = static_cast<int>(speeds.size());
  gpu::VirtualGpuLayout layout;
  std::vector<int> seen(n, -1);
  absl::Status st = gpu::RunVirtualGpus(
      speeds,
      [&](Communicator& c, gpu::GpuExec& x) -> absl::Status {
        seen[c.rank()] = layout.sm_counts.at(c.rank());  // filled before fn runs
        return c.Barrier();
      },
      {.green = green, .layout = &layout});
  if (green && st.code() == absl::StatusCode::kFailedPrecondition) GTEST_SKIP() << st;
  ASSERT_TRUE(st.ok()) << st;
  ASSERT_EQ(static_cast<int>(layout.sm_counts.size()), n);
  EXPECT_EQ(seen, layout.sm_counts);
  EXPECT_EQ(layout.green, green);
  cudaDeviceProp prop{};
  ASSERT_EQ(cudaGetDeviceProperties(&prop, 0), cudaSuccess);
  EXPECT_EQ(layout.device_sms, prop.multiProcessorCount);
  if (!green) {
    EXPECT_EQ(layout.sm_counts, std::vector<int>(n, prop.multiProcessorCount));
    return;
  }
  std::cout << "device SMs " << layout.device_sms << ", " << layout.groups << " groups of " << layout.group_sms
            << " SMs; virtual devices:";
  for (int c : layout.sm_counts) std::cout << " " << c;
  std::cout << "\n";
  absl::StatusOr<std::vector<int>> shares = gpu::ApportionSmGroups(speeds, layout.groups);
  ASSERT_TRUE(shares.ok()) << shares.status();
  int total = 0;
  for (int r = 0; r < n; ++r) {
    EXPECT_EQ(layout.sm_counts[r], (*shares)[r] * layout.group_sms) << "rank " << r;
    total += layout.sm_counts[r];
  }
  EXPECT_LE(total, layout.device_sms);
  EXPECT_EQ(total, layout.groups * layout.group_sms) << "every group is given to some virtual device";
}

INSTANTIATE_TEST_SUITE_P(
    Speeds, VirtualGpus,
    ::testing::Combine(::testing::Values(std::vector<double>{1}, std::vector<double>{2, 1, 1},
                                         std::vector<double>{4, 4, 2, 1}),
                       ::testing::Bool()),
    [](const auto& info) {
      std::string name = std::get<1>(info.param) ? "green" : "plain";
      for (double s : std::get<0>(info.param)) name += StrCat("_", static_cast<int>(s));
      return name;
    });

TEST(VirtualGpusFailures, AFailingRankAbortsTheOthers) {
  HS_SKIP_WITHOUT_GPU();
  std::vector<absl::Status> got(3);
  absl::Status s = gpu::RunVirtualGpus(
      {1, 1, 1},
      [&](Communicator& c, gpu::GpuExec& x) -> absl::Status {
        if (c.rank() == 1) return absl::NotFoundError("rank 1 gave up");
        gpu::DeviceTensor t = x.Make({16});
        return got[c.rank()] = c.AllReduce(t.ptr(), 16);
      },
      {.green = false, .timeout_s = 5});
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_EQ(got[0].code(), absl::StatusCode::kAborted) << got[0];
  EXPECT_EQ(got[2].code(), absl::StatusCode::kAborted) << got[2];
}

TEST(VirtualGpus, SplitsRunTheScriptOnDeviceBuffersWithTheirOwnEvents) {
  HS_SKIP_WITHOUT_GPU();
  const Script s2 = MakeScript(2, CommImpl::kGrouped, CountCases(2)[0], 51);
  std::vector<std::vector<float>> got(4);
  std::vector<int> sub_rank(4, -1);
  absl::Status st = gpu::RunVirtualGpus(
      {1, 1, 1, 1},
      [&](Communicator& c, gpu::GpuExec& x) -> absl::Status {
        HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> pair, c.Split(c.rank() / 2, -c.rank()));
        sub_rank[c.rank()] = pair->rank();
        DeviceMemory mem(x);
        HS_RETURN_IF_ERROR(RunScript(*pair, s2, mem, &got[c.rank()]));
        return c.Barrier();
      },
      {.green = false, .timeout_s = 60});
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(sub_rank, (std::vector<int>{1, 0, 1, 0}));
  for (int r = 0; r < 4; ++r) EXPECT_TRUE(SameBits(got[r], Expected(s2, sub_rank[r]))) << "rank " << r;
}

TEST(VirtualGpusFailures, HostAndDeviceBuffersInOneCallAreRejected) {
  HS_SKIP_WITHOUT_GPU();
  std::vector<absl::Status> got(2);
  gpu::RunVirtualGpus(
      {1, 1},
      [&](Communicator& c, gpu::GpuExec& x) -> absl::Status {
        gpu::DeviceTensor t = x.Make({4});
        std::vector<float> h(4);
        return got[c.rank()] = c.rank() == 0 ? c.AllReduce(t.ptr(), 4) : c.AllReduce(h.data(), 4);
      },
      {.green = false, .timeout_s = 5})
      .IgnoreError();
  ExpectAllInvalid(got, "every rank must pass the same kind of memory");
}

TEST(Nccl, OneRankCommunicatorRunsEveryCollective) {
  HS_SKIP_WITHOUT_GPU();
  if (!gpu::NcclAvailable()) GTEST_SKIP() << "built without NCCL";
  absl::StatusOr<std::unique_ptr<gpu::GpuExec>> x = gpu::GpuExec::Create({});
  ASSERT_TRUE(x.ok()) << x.status();
  absl::StatusOr<std::unique_ptr<Communicator>> comm = gpu::NcclSingle(**x);
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_EQ((*comm)->name(), "nccl");
  EXPECT_EQ((*comm)->size(), 1);
  uint32_t seed = 1;
  for (CommImpl impl : {CommImpl::kPadded, CommImpl::kGrouped}) {
    for (const std::vector<int64_t>& counts : CountCases(1)) {
      const Script s = MakeScript(1, impl, counts, seed++);
      std::vector<float> dev, host;
      DeviceMemory dmem(**x);
      absl::Status st = RunScript(**comm, s, dmem, &dev);
      ASSERT_TRUE(st.ok()) << st;
      HostMemory hmem;
      st = RunScript(**comm, s, hmem, &host);
      ASSERT_TRUE(st.ok()) << st;
      EXPECT_TRUE(SameBits(dev, Expected(s, 0))) << CommImplName(impl);
      EXPECT_TRUE(SameBits(host, Expected(s, 0))) << CommImplName(impl);
    }
  }
  // ncclCommSplit of the one rank, and kNoColor.
  absl::StatusOr<std::unique_ptr<Communicator>> sub = (*comm)->Split(0, 0);
  ASSERT_TRUE(sub.ok()) << sub.status();
  ASSERT_NE(*sub, nullptr);
  EXPECT_EQ((*sub)->name(), "nccl");
  {
    const Script s = MakeScript(1, CommImpl::kGrouped, CountCases(1)[0], 77);
    std::vector<float> dev;
    DeviceMemory dmem(**x);
    absl::Status st = RunScript(**sub, s, dmem, &dev);
    ASSERT_TRUE(st.ok()) << st;
    EXPECT_TRUE(SameBits(dev, Expected(s, 0))) << "on the split";
  }
  absl::StatusOr<std::unique_ptr<Communicator>> none = (*comm)->Split(Communicator::kNoColor, 0);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(*none, nullptr);
  std::vector<float> h(4);
  gpu::DeviceTensor t = (*x)->Make({4});
  // One rank: a bad argument still fails (InvalidArgument), and the communicator stays usable.
  EXPECT_EQ((*comm)->AllReduce(t.ptr(), -1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*comm)->Broadcast(t.ptr(), 4, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE((*comm)->AllReduce(t.ptr(), 4).ok());
  EXPECT_TRUE((*x)->Synchronize().ok());
}

#endif  // HETSYNTH_HAVE_CUDA

}  // namespace
}  // namespace hetsynth::runtime::testing
