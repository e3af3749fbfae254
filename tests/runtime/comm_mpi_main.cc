// comm_mpi_check: the MPI communicator against direct computation, run under mpirun
// (`mpirun --oversubscribe -np 4 comm_mpi_check`; ctest runs it as comm_mpi). Every rank
// generates every rank's inputs from the same seeds, so each can compute the expected result
// itself. Rank 0 prints one line per check; the exit status is non-zero when any rank saw a
// mismatch. Sums are compared bit for bit (rank-order summation on both sides), and against the
// threads communicator run on the same inputs in each process.
#include <bit>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "hetsynth/ir/status.h"
#include "hetsynth/runtime/comm.h"
#include "runtime/comm_reference.h"

namespace hetsynth::runtime {
namespace {

using comm_testing::Buffers;
using comm_testing::Random;
using comm_testing::RandomCounts;
using comm_testing::RankOrderSum;
using comm_testing::Sum;

std::string Join(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += StrCat(i ? "," : "", v[i]);
  return s + "]";
}

// "" when equal bit for bit, else where they first differ.
std::string Diff(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return StrCat("size ", got.size(), ", expected ", want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::bit_cast<uint32_t>(got[i]) != std::bit_cast<uint32_t>(want[i])) {
      char text[96];
      std::snprintf(text, sizeof text, "element %zu is %.9g, expected %.9g", i, got[i], want[i]);
      return text;
    }
  }
  return "";
}

class Checker {
 public:
  explicit Checker(Communicator& comm) : comm_(comm) {}

  // Runs one check on every rank: `body` returns "" or what went wrong on this rank, and may
  // set note() for rank 0's line.
  void Check(const std::string& name, const std::function<std::string()>& body) {
    note_.clear();
    std::string problem = body();
    if (!problem.empty()) std::fprintf(stderr, "rank %d: %s: %s\n", comm_.rank(), name.c_str(), problem.c_str());
    float bad = problem.empty() ? 0.0f : 1.0f;  // ranks that failed, summed
    absl::Status s = comm_.AllReduce(&bad, 1);
    if (!s.ok()) {
      std::fprintf(stderr, "rank %d: %s: could not collect the verdict: %s\n", comm_.rank(),
                   name.c_str(), s.ToString().c_str());
      bad = 1;
    }
    if (bad != 0) ++failures_;
    if (comm_.rank() == 0) {
      const std::string detail =
          bad == 0 ? (note_.empty() ? "" : StrCat(": ", note_)) : StrCat(" (", bad, " ranks wrong; see stderr)");
      std::printf("%s %s%s\n", bad == 0 ? "ok  " : "FAIL", name.c_str(), detail.c_str());
      std::fflush(stdout);
    }
  }

  int failures() const { return failures_; }
  std::string& note() { return note_; }

 private:
  Communicator& comm_;
  int failures_ = 0;
  std::string note_;
};

std::string StatusText(const absl::Status& s) { return s.ok() ? "" : s.ToString(); }

// The same computation on the threads communicator with n ranks; out[r] gets rank r's output.
std::string ViaThreads(int n, const std::function<absl::Status(Communicator&, std::vector<float>&)>& fn,
                       Buffers& out) {
  out.assign(n, {});
  return StatusText(RunThreadRanks(n, [&](Communicator& c) { return fn(c, out[c.rank()]); }));
}

int Run() {
  absl::StatusOr<std::unique_ptr<Communicator>> world = MpiWorld();
  if (!world.ok()) {
    std::fprintf(stderr, "comm_mpi_check: %s\n", world.status().ToString().c_str());
    return 2;
  }
  Communicator& comm = **world;
  const int n = comm.size(), me = comm.rank();
  if (me == 0) std::printf("comm_mpi_check: %s communicator, %d ranks\n", comm.name().c_str(), n);
  Checker checker(comm);

  std::mt19937 count_rng(1);
  std::vector<std::vector<int64_t>> cases;
  for (int t = 0; t < 4; ++t) cases.push_back(RandomCounts(count_rng, n, t < 2 ? 5 : 300));
  cases.push_back(std::vector<int64_t>(n, 0));
  cases.push_back(std::vector<int64_t>(n, 0));
  cases.back()[n - 1] = 7;

  for (CommImpl impl : {CommImpl::kPadded, CommImpl::kGrouped}) {
    for (size_t t = 0; t < cases.size(); ++t) {
      const std::vector<int64_t>& counts = cases[t];
      const std::string tag = StrCat(CommImplName(impl), " counts=", Join(counts));
      checker.Check(StrCat("allgatherv ", tag), [&]() -> std::string {
        std::mt19937 rng(100 + t);
        Buffers shards(n);
        std::vector<float> want;
        for (int r = 0; r < n; ++r) {
          shards[r] = Random(rng, counts[r]);
          want.insert(want.end(), shards[r].begin(), shards[r].end());
        }
        std::vector<float> got(want.size(), -7.0f);
        absl::Status s = comm.AllGatherV(shards[me].data(), got.data(), counts, impl);
        return s.ok() ? Diff(got, want) : s.ToString();
      });
      checker.Check(StrCat("reducescatterv ", tag), [&]() -> std::string {
        std::mt19937 rng(200 + t);
        Buffers inputs(n);
        for (int r = 0; r < n; ++r) inputs[r] = Random(rng, Sum(counts));
        const std::vector<float> sum = RankOrderSum(inputs);
        int64_t at = 0;
        for (int r = 0; r < me; ++r) at += counts[r];
        const std::vector<float> want(sum.begin() + at, sum.begin() + at + counts[me]);
        std::vector<float> got(counts[me], -7.0f);
        absl::Status s = comm.ReduceScatterV(inputs[me].data(), got.data(), counts, impl);
        if (!s.ok()) return s.ToString();
        if (std::string d = Diff(got, want); !d.empty()) return d;
        Buffers threads;
        std::string e = ViaThreads(n, [&](Communicator& c, std::vector<float>& out) {
          out.assign(counts[c.rank()], 0.0f);
          return c.ReduceScatterV(inputs[c.rank()].data(), out.data(), counts, impl);
        }, threads);
        if (!e.empty()) return StrCat("threads: ", e);
        if (std::string d = Diff(got, threads[me]); !d.empty()) return StrCat("mpi vs threads: ", d);
        return "";
      });
    }
  }

  for (int64_t count : {0, 1, 3, 5, 17, 1000, 100003}) {
    checker.Check(StrCat("allreduce count=", count), [&]() -> std::string {
      std::mt19937 rng(300 + count);
      Buffers data(n);
      for (int r = 0; r < n; ++r) data[r] = Random(rng, count);
      const std::vector<float> want = RankOrderSum(data);
      Buffers threads;
      std::string e = ViaThreads(n, [&](Communicator& c, std::vector<float>& out) {
        out = data[c.rank()];
        return c.AllReduce(out.data(), count);
      }, threads);
      std::vector<float> got = data[me];
      absl::Status s = comm.AllReduce(got.data(), count);
      if (!s.ok()) return s.ToString();
      if (std::string d = Diff(got, want); !d.empty()) return d;
      if (!e.empty()) return StrCat("threads: ", e);
      return Diff(got, threads[me]).empty() ? "" : "mpi and threads differ";
    });
  }

  for (int t = 0; t < 4; ++t) {
    std::mt19937 rng(400 + t);
    std::vector<std::vector<int64_t>> sends(n);  // sends[j][k]: elements rank j sends to rank k
    for (int j = 0; j < n; ++j) sends[j] = t == 3 ? std::vector<int64_t>(n, 0) : RandomCounts(rng, n, 6);
    checker.Check(StrCat("alltoallv round ", t), [&]() -> std::string {
      std::vector<int64_t> recvs(n);
      for (int j = 0; j < n; ++j) recvs[j] = sends[j][me];
      Buffers in(n);
      for (int j = 0; j < n; ++j) in[j] = Random(rng, Sum(sends[j]));
      std::vector<float> want;
      for (int j = 0; j < n; ++j) {
        int64_t at = 0;
        for (int i = 0; i < me; ++i) at += sends[j][i];
        want.insert(want.end(), in[j].begin() + at, in[j].begin() + at + sends[j][me]);
      }
      std::vector<float> got(want.size(), -7.0f);
      absl::Status s = comm.AllToAllV(in[me].data(), sends[me], got.data(), recvs);
      return s.ok() ? Diff(got, want) : s.ToString();
    });
  }

  for (int root = 0; root < n; ++root) {
    checker.Check(StrCat("broadcast root=", root), [&]() -> std::string {
      std::mt19937 rng(500 + root);
      Buffers data(n);
      for (int r = 0; r < n; ++r) data[r] = Random(rng, 13);
      std::vector<float> got = data[me];
      absl::Status s = comm.Broadcast(got.data(), 13, root);
      return s.ok() ? Diff(got, data[root]) : s.ToString();
    });
  }

  checker.Check("barrier", [&]() { return StatusText(comm.Barrier()); });

  // Mismatched arguments must fail on every rank, and leave the communicator usable.
  checker.Check("mismatched counts fail on every rank", [&]() -> std::string {
    std::vector<int64_t> counts(n, 1);
    if (me == n - 1) counts[0] = 2;
    std::vector<float> send(counts[me]), recv(Sum(counts));
    absl::Status s = comm.AllGatherV(send.data(), recv.data(), counts, CommImpl::kGrouped);
    if (n == 1) return s.ok() ? "" : s.ToString();
    if (s.code() != absl::StatusCode::kInvalidArgument) return StrCat("got ", s.ToString());
    checker.note() = std::string(s.message());
    return "";
  });
  checker.Check("a rank's wrong number of counts fails on every rank", [&]() -> std::string {
    std::vector<int64_t> counts(me == 0 ? n + 1 : n, 1);
    std::vector<float> send(n + 1), recv(1);
    absl::Status s = comm.ReduceScatterV(send.data(), recv.data(), counts, CommImpl::kPadded);
    if (s.code() != absl::StatusCode::kInvalidArgument) return StrCat("got ", StatusText(s));
    checker.note() = std::string(s.message());
    return "";
  });
  checker.Check("mismatched all-to-all counts fail on every rank", [&]() -> std::string {
    std::vector<int64_t> sends(n, 1), recvs(n, 1);
    if (me == 0) sends[n - 1] = 2;  // rank n-1 expects 1
    std::vector<float> in(Sum(sends)), out(Sum(recvs));
    absl::Status s = comm.AllToAllV(in.data(), sends, out.data(), recvs);
    if (s.code() != absl::StatusCode::kInvalidArgument) return StrCat("got ", StatusText(s));
    checker.note() = std::string(s.message());
    return "";
  });
  checker.Check("different collectives fail on every rank", [&]() -> std::string {
    float x = 1;
    absl::Status s = me == 0 ? comm.AllReduce(&x, 1) : comm.Barrier();
    if (n == 1) return StatusText(s);
    if (s.code() != absl::StatusCode::kInvalidArgument) return StrCat("got ", StatusText(s));
    checker.note() = std::string(s.message());
    return "";
  });

  if (me == 0) {
    std::printf("comm_mpi_check: %s\n", checker.failures() == 0 ? "all checks passed"
                                                                 : StrCat(checker.failures(), " checks failed").c_str());
  }
  return checker.failures() == 0 ? 0 : 1;
}

}  // namespace
}  // namespace hetsynth::runtime

int main() { return hetsynth::runtime::Run(); }
