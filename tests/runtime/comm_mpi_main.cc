// comm_mpi_check: the MPI communicator against direct computation, run under mpirun
// (`mpirun --oversubscribe -np 4 comm_mpi_check`; ctest runs it as comm_mpi). Every rank
// generates every rank's inputs from the same seeds, so each can compute the expected result
// itself. Rank 0 prints one line per check; the exit status is non-zero when any rank saw a
// mismatch. Sums are compared bit for bit (rank-order summation on both sides), and against the
// threads communicator run on the same inputs in each process. Then Split, the mesh collectives
// (mesh_collectives.h) on every mesh that fits the world — smaller ones on a split of its first
// ranks — against the reference sums and the same calls on thread ranks, and AsyncCollectives
// overlapping the rank's own thread (MPI_THREAD_MULTIPLE).
#include <bit>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "hetsynth/base/status.h"
#include "hetsynth/runtime/async_collectives.h"
#include "hetsynth/runtime/comm.h"
#include "hetsynth/runtime/mesh_collectives.h"
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

// ---- mesh collectives ----------------------------------------------------------------------

// One mesh test case: the inputs of every mesh function, the same on every process.
struct MeshCase {
  std::vector<int> sizes;
  int n = 0;
  int64_t count = 0;                                // HierarchicalAllReduce
  Buffers reduce;                                   // per rank, count elements
  std::vector<int64_t> counts;                      // world Gather
  Buffers shards, rs_in;                            // per rank
  std::vector<int64_t> node_counts;                 // nodes level
  Buffers node_pieces, nrs_in;                      // per node, per rank
  std::vector<int64_t> piece_counts;                // AcrossNodesAllReduce
  Buffers pieces;                                   // per rank
};

MeshCase MakeMeshCase(const std::vector<int>& sizes, uint32_t seed) {
  std::mt19937 rng(seed);
  MeshCase m;
  m.sizes = sizes;
  m.n = static_cast<int>(comm_testing::NodeOf(sizes).size());
  const int N = static_cast<int>(sizes.size());
  m.count = 1001;
  for (int r = 0; r < m.n; ++r) m.reduce.push_back(Random(rng, m.count));
  m.counts = comm_testing::MeshCounts(rng, sizes, [](int j) { return int64_t{37} * (j + 1) + (j == 0 ? 0 : 5); });
  for (int r = 0; r < m.n; ++r) {
    m.shards.push_back(Random(rng, m.counts[r]));
    m.rs_in.push_back(Random(rng, Sum(m.counts)));
  }
  for (int j = 0; j < N; ++j) m.node_counts.push_back(j == 1 ? 0 : 23 * j + 7);
  for (int j = 0; j < N; ++j) m.node_pieces.push_back(Random(rng, m.node_counts[j]));
  for (int r = 0; r < m.n; ++r) m.nrs_in.push_back(Random(rng, Sum(m.node_counts)));
  m.piece_counts = comm_testing::MeshCounts(rng, sizes, [](int) { return int64_t{301}; });
  for (int r = 0; r < m.n; ++r) m.pieces.push_back(Random(rng, m.piece_counts[r]));
  return m;
}

// Every mesh function on rank r's inputs; the outputs concatenated.
absl::Status RunMeshCase(const MeshComms& c, const MeshCase& m, std::vector<float>* out) {
  const int r = c.world.rank(), J = c.mesh.node_of(r);
  std::vector<float> reduce = m.reduce[r];
  HS_RETURN_IF_ERROR(HierarchicalAllReduce(c, reduce.data(), m.count));
  std::vector<float> gathered(Sum(m.counts)), scattered(m.counts[r]);
  HS_RETURN_IF_ERROR(HierarchicalAllGatherV(c, m.shards[r].data(), gathered.data(), m.counts));
  HS_RETURN_IF_ERROR(HierarchicalReduceScatterV(c, m.rs_in[r].data(), scattered.data(), m.counts));
  std::vector<float> ngathered(Sum(m.node_counts)), nscattered(m.node_counts[J]);
  HS_RETURN_IF_ERROR(NodesAllGatherV(c, m.node_pieces[J].data(), ngathered.data(), m.node_counts));
  HS_RETURN_IF_ERROR(NodesReduceScatterV(c, m.nrs_in[r].data(), nscattered.data(), m.node_counts));
  std::vector<float> piece = m.pieces[r];
  HS_RETURN_IF_ERROR(AcrossNodesAllReduce(c, piece.data(), m.piece_counts));
  for (const std::vector<float>* v : {&reduce, &gathered, &scattered, &ngathered, &nscattered, &piece}) {
    out->insert(out->end(), v->begin(), v->end());
  }
  return absl::OkStatus();
}

// What rank r must get from RunMeshCase: the reference sums of comm_reference.h.
std::vector<float> ExpectedMeshCase(const MeshCase& m, int r) {
  const std::vector<int> node = comm_testing::NodeOf(m.sizes);
  std::vector<float> out = comm_testing::MeshSum(m.reduce, m.sizes);
  for (int k = 0; k < m.n; ++k) out.insert(out.end(), m.shards[k].begin(), m.shards[k].end());
  const std::vector<float> sum = comm_testing::MeshSum(m.rs_in, m.sizes);
  int64_t at = 0;
  for (int k = 0; k < r; ++k) at += m.counts[k];
  out.insert(out.end(), sum.begin() + at, sum.begin() + at + m.counts[r]);
  for (const std::vector<float>& p : m.node_pieces) out.insert(out.end(), p.begin(), p.end());
  const std::vector<float> nrs = comm_testing::NodesReduceScatterReference(m.nrs_in, m.sizes, m.node_counts, r);
  out.insert(out.end(), nrs.begin(), nrs.end());
  const Buffers across = comm_testing::AcrossNodesReference(m.pieces, m.sizes, m.piece_counts);
  out.insert(out.end(), across[r].begin(), across[r].end());
  return out;
}

int Run() {
  absl::StatusOr<std::unique_ptr<Communicator>> world = MpiWorld();
  if (!world.ok()) {
    std::fprintf(stderr, "comm_mpi_check: %s\n", world.status().ToString().c_str());
    return 2;
  }
  Communicator& comm = **world;
  SetCollectiveDeadline(30);  // a hang fails the check rather than waiting for the test's timeout
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

  // Ranks with nothing to move pass null buffers. Open MPI 4.1's libnbc takes equal send and
  // receive addresses as in place and then skipped a collective tag on such a rank, which hung
  // the next collective (the four-node gpt plan's attention all-to-all).
  checker.Check("alltoallv with idle ranks' null buffers, then an all-reduce", [&]() -> std::string {
    const int active = std::max(1, n / 2);
    const bool mine_active = me < active;
    std::vector<int64_t> sends(n, 0), recvs(n, 0);
    for (int k = 0; k < active && mine_active; ++k) sends[k] = recvs[k] = 3;
    std::vector<float> in(static_cast<size_t>(Sum(sends)), static_cast<float>(me)), got(static_cast<size_t>(Sum(recvs)), -1.0f);
    absl::Status s = comm.AllToAllV(mine_active ? in.data() : nullptr, sends, mine_active ? got.data() : nullptr, recvs);
    if (!s.ok()) return s.ToString();
    for (int k = 0; k < active && mine_active; ++k) {
      for (int i = 0; i < 3; ++i) {
        if (got[static_cast<size_t>(3 * k + i)] != static_cast<float>(k)) return StrCat("element from rank ", k, " wrong");
      }
    }
    std::vector<float> one = {1.0f};
    s = comm.AllReduce(one.data(), 1);
    if (!s.ok()) return s.ToString();
    return one[0] == static_cast<float>(n) ? "" : StrCat("all-reduce gave ", one[0]);
  });

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

  // ---- Split --------------------------------------------------------------------------------
  checker.Check("split by parity, keys reversed", [&]() -> std::string {
    absl::StatusOr<std::unique_ptr<Communicator>> sub = comm.Split(me % 2, -me);
    if (!sub.ok()) return sub.status().ToString();
    const int members = (n - me % 2 + 1) / 2;  // ranks with my parity
    if ((*sub)->size() != members) return StrCat("sub size ", (*sub)->size(), ", expected ", members);
    if ((*sub)->rank() != (n - 1 - me) / 2) return StrCat("sub rank ", (*sub)->rank());
    std::mt19937 rng(600);
    Buffers data(n);
    for (auto& d : data) d = Random(rng, 55);
    Buffers group;  // in the new order: descending ranks of my parity
    for (int r = n - 1; r >= 0; --r) {
      if (r % 2 == me % 2) group.push_back(data[r]);
    }
    std::vector<float> got = data[me];
    absl::Status s = (*sub)->AllReduce(got.data(), 55);
    if (!s.ok()) return s.ToString();
    if (std::string d = Diff(got, RankOrderSum(group)); !d.empty()) return d;
    absl::StatusOr<std::unique_ptr<Communicator>> none = comm.Split(me == 0 ? Communicator::kNoColor : 0, 0);
    if (!none.ok()) return none.status().ToString();
    if ((me == 0) != (*none == nullptr)) return "kNoColor must give nullptr, and only it";
    checker.note() = StrCat("thread level: ", comm.CheckConcurrentUse().ok() ? "MPI_THREAD_MULTIPLE"
                                                                                 : comm.CheckConcurrentUse().ToString());
    return "";
  });
  checker.Check("split with a bad color fails on every rank", [&]() -> std::string {
    absl::Status s = comm.Split(me == n - 1 ? -5 : 0, 0).status();
    if (s.code() != absl::StatusCode::kInvalidArgument) return StrCat("got ", StatusText(s));
    checker.note() = std::string(s.message());
    return "";
  });

  // ---- mesh collectives, on every mesh that fits ---------------------------------------------
  const std::vector<std::vector<int>> meshes = {{2, 2}, {1, 3}, {1, 1, 1, 1}, {4, 4}, {2, 2, 2, 2},
                                                {2, 4}, {3, 1, 2, 2}, {1, 7}};
  uint32_t mesh_seed = 700;
  for (const std::vector<int>& sizes : meshes) {
    const int m = static_cast<int>(comm_testing::NodeOf(sizes).size());
    if (m > n) continue;
    const MeshCase mc = MakeMeshCase(sizes, mesh_seed++);
    std::string name = "mesh ";
    for (size_t j = 0; j < sizes.size(); ++j) name += StrCat(j ? "+" : "", sizes[j]);
    name += StrCat(m < n ? StrCat(" (split of ranks 0-", m - 1, ")") : "", ": every function vs reference and threads");
    checker.Check(name, [&]() -> std::string {
      // The first m ranks as a world of their own; the rest join nothing.
      absl::StatusOr<std::unique_ptr<Communicator>> sub = comm.Split(me < m ? 0 : Communicator::kNoColor, me);
      if (!sub.ok()) return sub.status().ToString();
      if (me >= m) return "";
      Communicator& world = **sub;
      absl::StatusOr<Mesh> mesh = Mesh::FromSizes(sizes);
      if (!mesh.ok()) return mesh.status().ToString();
      absl::StatusOr<std::unique_ptr<Communicator>> node = SplitByNode(world, *mesh);
      if (!node.ok()) return node.status().ToString();
      std::vector<float> got;
      absl::Status s = RunMeshCase(MeshComms{world, **node, *mesh}, mc, &got);
      if (!s.ok()) return s.ToString();
      if (std::string d = Diff(got, ExpectedMeshCase(mc, me)); !d.empty()) return StrCat("vs reference: ", d);
      Buffers threads;
      std::string e = ViaThreads(m, [&](Communicator& c, std::vector<float>& out) -> absl::Status {
        HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> tnode, SplitByNode(c, *mesh));
        return RunMeshCase(MeshComms{c, *tnode, *mesh}, mc, &out);
      }, threads);
      if (!e.empty()) return StrCat("threads: ", e);
      if (std::string d = Diff(got, threads[me]); !d.empty()) return StrCat("mpi vs threads: ", d);
      return "";
    });
  }

  // ---- AsyncCollectives ----------------------------------------------------------------------
  checker.Check("async all-reduce overlaps the rank's own thread and its world collectives", [&]() -> std::string {
    absl::StatusOr<std::unique_ptr<AsyncCollectives>> async = AsyncCollectives::Create(comm);
    if (!async.ok()) return async.status().ToString();
    if (!(*async)->overlapped()) {
      return StrCat("runs synchronously: ", (*async)->why_synchronous().ToString());
    }
    std::mt19937 rng(800);
    Buffers data(n);
    for (auto& d : data) d = Random(rng, 100003);
    std::vector<float> got = data[me];
    AsyncCollectives::Handle h = (*async)->AllReduce(got.data(), 100003);
    // Meanwhile, on this thread: world collectives, then compute without any MPI call.
    for (int i = 0; i < 20; ++i) {
      float mine = static_cast<float>(me + i);
      std::vector<float> all(n);
      absl::Status s = comm.AllGatherV(&mine, all.data(), std::vector<int64_t>(n, 1), CommImpl::kGrouped);
      if (!s.ok()) return StrCat("world all-gather beside the async one: ", s.ToString());
      for (int r = 0; r < n; ++r) {
        if (all[r] != static_cast<float>(r + i)) return "wrong world all-gather beside the async one";
      }
    }
    volatile double acc = 0;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!h.done() && std::chrono::steady_clock::now() < until) {
      for (int i = 0; i < 1000; ++i) acc = acc + 1e-9 * i;
    }
    if (!h.done()) return "the all-reduce did not finish while the rank's thread computed";
    absl::Status s = h.Wait();
    if (!s.ok()) return s.ToString();
    return Diff(got, RankOrderSum(data));
  });
  if (n % 2 == 0) {
    checker.Check(StrCat("async hierarchical all-reduce on mesh ", n / 2, "+", n / 2), [&]() -> std::string {
      absl::StatusOr<Mesh> mesh = Mesh::FromSizes({n / 2, n / 2});
      if (!mesh.ok()) return mesh.status().ToString();
      absl::StatusOr<std::unique_ptr<Communicator>> node = SplitByNode(comm, *mesh);
      if (!node.ok()) return node.status().ToString();
      absl::StatusOr<std::unique_ptr<AsyncCollectives>> async = AsyncCollectives::Create(comm, node->get(), &*mesh);
      if (!async.ok()) return async.status().ToString();
      std::mt19937 rng(801);
      Buffers data(n);
      for (auto& d : data) d = Random(rng, 4099);
      std::vector<float> got = data[me];
      absl::Status s = (*async)->HierarchicalAllReduce(got.data(), 4099).Wait();
      if (!s.ok()) return s.ToString();
      return Diff(got, comm_testing::MeshSum(data, {n / 2, n / 2}));
    });
  }

  if (me == 0) {
    std::printf("comm_mpi_check: %s\n", checker.failures() == 0 ? "all checks passed"
                                                                 : StrCat(checker.failures(), " checks failed").c_str());
  }
  return checker.failures() == 0 ? 0 : 1;
}

}  // namespace
}  // namespace hetsynth::runtime

// `comm_mpi_check --fail-rank R`: rank R returns a failure while the others wait in a
// collective of a split (its pair) and of the world. The job must end at once with a failure
// status (ctest comm_mpi_failure checks that mpirun exits non-zero, not by its timeout).
int FailRank(int bad) {
  using namespace hetsynth::runtime;
  absl::StatusOr<std::unique_ptr<Communicator>> world = MpiWorld();
  if (!world.ok()) return 2;
  const int me = (*world)->rank();
  absl::StatusOr<std::unique_ptr<Communicator>> pair = (*world)->Split(me / 2, me);
  if (!pair.ok()) return 2;
  if (me == bad) {
    std::fprintf(stderr, "rank %d: failing on purpose\n", me);
    return 3;
  }
  std::vector<float> x(1000, 1.0f);
  absl::Status s = (*pair)->AllReduce(x.data(), 1000);  // rank bad's partner waits here
  if (s.ok()) s = (*world)->Barrier();                  // the others here
  std::fprintf(stderr, "rank %d: %s (should not get here)\n", me, s.ToString().c_str());
  return 4;
}

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--fail-rank") return FailRank(std::atoi(argv[2]));
  return hetsynth::runtime::Run();
}
