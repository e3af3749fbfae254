// Collective bandwidth per implementation (padded / grouped) and shard skew on 4 thread ranks,
// against a single-thread memcpy of the same size measured in the same run.
//   build/bin/comm_bench
//   build/bin/comm_bench --benchmark_filter='/16MiB/'
//
// Each benchmark is one RunThreadRanks(4) whose ranks run the timed loop together: rank 0 drives
// the benchmark::State and tells the others whether to go on through a Barrier; after the
// collective a second Barrier collects every rank's times. The iteration time (manual time) is
// the slowest rank's thread CPU time inside the collective — the time a rank spends moving data,
// not waiting for the others, as the executor's emulated timing counts communication
// (docs/runtime.md), so 4 ranks on fewer cores time like 4 devices. The wall time from the first
// rank's start to the last rank's return is reported too (wall_GBps; it depends on the cores).
//
// Two layers: "AllGather" etc. are the Communicator calls on preallocated flat buffers;
// "AllGatherAlong" etc. are runtime/collectives.h as the executor calls them (a [side, side]
// tensor split along dim 0 — all-to-all re-split from dim 0 to dim 1 — packing and fresh result
// tensors included). Counters: GBps = the whole tensor's bytes (1e9 B) per second of manual
// time; memcpy_GBps = one thread's memcpy of that many bytes; of_memcpy = GBps / memcpy_GBps =
// the time of one memcpy of the whole tensor ÷ the collective's time (1: the slowest rank's work
// costs exactly one whole-tensor memcpy; all-to-all can exceed 1, each rank moves only its part).
// The slowest rank, not the median the executor settles collectives with, so skew shows.
// MPI is never run here (thread ranks only), whether or not the build has it.
//
// "MeshAllReduce/<mesh>/<size>/{flat,hierarchical}": Communicator::AllReduce against
// HierarchicalAllReduce (mesh_collectives.h) on the mesh's thread ranks (2x2 = 2 nodes of 2,
// 2x4, 4x2, 2+4), the same timing; of_flat = the flat all-reduce's time on the same ranks and
// size, measured at startup in the same run, ÷ this one's (> 1: faster than flat). Thread
// ranks share one memory: this measures the algorithm's own cost (more phases, packing for the
// cross-node exchange), not what it saves on a NIC — the cost model prices that.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "hetsynth/base/status.h"
#include "hetsynth/runtime/collectives.h"
#include "hetsynth/runtime/comm.h"
#include "hetsynth/runtime/cpu_time.h"
#include "hetsynth/runtime/mesh_collectives.h"

namespace hetsynth::bench {
namespace {

using runtime::CommImpl;
using runtime::Communicator;
using runtime::Tensor;
using runtime::ThreadCpuSeconds;

constexpr int kRanks = 4;
// Seconds of manual time per benchmark. Wall time is several times the manual time (4 threads
// on however few cores; at 64 KiB the ranks' wake-ups dominate), so these keep the whole suite
// near 1 minute on 2 cores.
double MinTime(int64_t bytes) { return bytes < (int64_t{1} << 20) ? 0.03 : 0.1; }

double WallSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string SizeName(int64_t bytes) {
  return bytes >= (int64_t{1} << 20) ? std::to_string(bytes >> 20) + "MiB" : std::to_string(bytes >> 10) + "KiB";
}

// ---- the same-run baseline: one thread's memcpy ---------------------------------------------------

// GB/s of one thread copying `bytes` between two warm buffers, by its CPU time: the median of 7
// rounds of ~20 ms each. Measured once per size (at startup, from main) and cached.
double MemcpyGBps(int64_t bytes) {
  static std::mutex mu;
  static std::map<int64_t, double> cache;
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = cache.find(bytes); it != cache.end()) return it->second;
  std::vector<char> src(static_cast<size_t>(bytes), 1), dst(static_cast<size_t>(bytes), 0);
  std::memcpy(dst.data(), src.data(), src.size());
  std::vector<double> rounds;
  for (int round = 0; round < 7; ++round) {
    int64_t n = 0;
    const double t0 = ThreadCpuSeconds();
    double t = 0;
    do {
      std::memcpy(dst.data(), src.data(), src.size());
      benchmark::ClobberMemory();
      ++n;
    } while ((t = ThreadCpuSeconds() - t0) < 0.02);
    rounds.push_back(static_cast<double>(bytes) * static_cast<double>(n) / t / 1e9);
  }
  std::sort(rounds.begin(), rounds.end());
  return cache[bytes] = rounds[rounds.size() / 2];
}

// The baseline as a row of its own (of_memcpy ≈ 1 says the cached figure still holds).
void BM_Memcpy(benchmark::State& state, int64_t bytes) {
  std::vector<char> src(static_cast<size_t>(bytes), 1), dst(static_cast<size_t>(bytes), 0);
  std::memcpy(dst.data(), src.data(), src.size());
  double total = 0;
  for (auto _ : state) {
    const double t0 = ThreadCpuSeconds();
    std::memcpy(dst.data(), src.data(), src.size());
    benchmark::ClobberMemory();
    const double t = ThreadCpuSeconds() - t0;
    state.SetIterationTime(t);
    total += t;
  }
  const double gbps = total > 0 ? static_cast<double>(state.iterations() * bytes) / total / 1e9 : 0.0;
  state.SetBytesProcessed(state.iterations() * bytes);
  state.counters["GBps"] = gbps;
  state.counters["memcpy_GBps"] = MemcpyGBps(bytes);
  state.counters["of_memcpy"] = gbps / MemcpyGBps(bytes);
}

// ---- the collectives -------------------------------------------------------------------------------

enum class Op { kAllGather, kReduceScatter, kAllReduce, kAllToAll };
enum class Layer { kComm, kAlong };

struct Skew {
  const char* name;
  std::array<int64_t, kRanks> weights;
};
// mixed = the speeds of examples/clusters/mixed-4.json (1, 1, 0.5, 0.25); the last two extremes.
constexpr Skew kSkews[] = {
    {"even", {1, 1, 1, 1}}, {"mixed", {4, 4, 2, 1}}, {"one-empty", {1, 1, 1, 0}}, {"one-heavy", {8, 1, 1, 1}}};

struct Case {
  Op op;
  Layer layer;
  CommImpl impl;
  int64_t bytes;  // the whole tensor
  Skew skew;
};

// `len` split proportionally to the weights (floor, the rest one each to the ranks with weight > 0).
std::vector<int64_t> Split(int64_t len, const std::array<int64_t, kRanks>& w) {
  int64_t total = 0;
  for (int64_t x : w) total += x;
  std::vector<int64_t> out(kRanks);
  int64_t left = len;
  for (int r = 0; r < kRanks; ++r) left -= out[r] = len * w[r] / total;
  for (int r = 0; left > 0; r = (r + 1) % kRanks) {
    if (w[r] > 0) ++out[r], --left;
  }
  return out;
}

// One rank's collective with its buffers: set up once, called once per iteration.
using RankOp = std::function<absl::Status(Communicator&)>;

RankOp MakeRankOp(const Case& c, int rank) {
  const int64_t n = c.bytes / static_cast<int64_t>(sizeof(float));
  const auto side = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(n))));
  const ir::Shape full = {side, side};
  const std::vector<int64_t> lens = Split(side, c.skew.weights);
  std::vector<int64_t> counts;
  for (int64_t len : lens) counts.push_back(len * side);
  const int64_t mine = counts[static_cast<size_t>(rank)];
  const float fill = static_cast<float>(rank + 1);
  switch (c.op) {
    case Op::kAllGather:
      if (c.layer == Layer::kAlong) {
        return [=, piece = Tensor({lens[rank], side}, fill)](Communicator& comm) -> absl::Status {
          HS_ASSIGN_OR_RETURN(Tensor out, runtime::AllGatherAlong(comm, piece, full, 0, lens, c.impl));
          benchmark::DoNotOptimize(out.data.data());
          return absl::OkStatus();
        };
      }
      return [=, send = std::vector<float>(mine, fill),
              recv = std::vector<float>(n)](Communicator& comm) mutable {
        return comm.AllGatherV(send.data(), recv.data(), counts, c.impl);
      };
    case Op::kReduceScatter:
      if (c.layer == Layer::kAlong) {
        return [=, whole = Tensor(full, fill)](Communicator& comm) -> absl::Status {
          HS_ASSIGN_OR_RETURN(Tensor out, runtime::ReduceScatterAlong(comm, whole, 0, lens, c.impl));
          benchmark::DoNotOptimize(out.data.data());
          return absl::OkStatus();
        };
      }
      return [=, send = std::vector<float>(n, fill),
              recv = std::vector<float>(mine)](Communicator& comm) mutable {
        return comm.ReduceScatterV(send.data(), recv.data(), counts, c.impl);
      };
    case Op::kAllReduce:  // zeros: the sums stay finite however many iterations run
      return [=, data = std::vector<float>(n, 0.0f)](Communicator& comm) mutable {
        return comm.AllReduce(data.data(), n);
      };
    case Op::kAllToAll: {
      // Rank j holds rows lens[j] (all columns) and ends with columns lens[j] (all rows).
      if (c.layer == Layer::kAlong) {
        return [=, piece = Tensor({lens[rank], side}, fill)](Communicator& comm) -> absl::Status {
          HS_ASSIGN_OR_RETURN(Tensor out, runtime::AllToAllAlong(comm, piece, full, 0, lens, 1, lens));
          benchmark::DoNotOptimize(out.data.data());
          return absl::OkStatus();
        };
      }
      std::vector<int64_t> send_counts, recv_counts;
      for (int64_t len : lens) {
        send_counts.push_back(lens[rank] * len);  // my rows × rank k's columns
        recv_counts.push_back(len * lens[rank]);  // rank k's rows × my columns
      }
      return [=, send = std::vector<float>(mine, fill),
              recv = std::vector<float>(mine)](Communicator& comm) mutable {
        return comm.AllToAllV(send.data(), send_counts, recv.data(), recv_counts);
      };
    }
  }
  return nullptr;
}

// What the ranks share: rank 0's go / stop and every rank's times of the current iteration.
struct Shared {
  std::atomic<bool> go{false};
  std::array<double, kRanks> cpu{}, start{}, end{};
};

void BM_Collective(benchmark::State& state, const Case& c) {
  Shared sh;
  double cpu_total = 0, wall_total = 0;  // sums over iterations of the slowest rank's times
  const absl::Status status = runtime::RunThreadRanks(kRanks, [&](Communicator& comm) -> absl::Status {
    const int r = comm.rank();
    RankOp op = MakeRankOp(c, r);
    HS_RETURN_IF_ERROR(op(comm));  // warm-up: the communicator's scratch, first touches
    while (true) {
      if (r == 0) sh.go.store(state.KeepRunning(), std::memory_order_relaxed);
      HS_RETURN_IF_ERROR(comm.Barrier());  // publishes go; the others read it before the next Barrier
      if (!sh.go.load(std::memory_order_relaxed)) break;
      sh.start[r] = WallSeconds();
      const double c0 = ThreadCpuSeconds();
      HS_RETURN_IF_ERROR(op(comm));
      sh.cpu[r] = ThreadCpuSeconds() - c0;
      sh.end[r] = WallSeconds();
      HS_RETURN_IF_ERROR(comm.Barrier());  // every rank's times are in
      if (r == 0) {
        const double cpu = *std::max_element(sh.cpu.begin(), sh.cpu.end());
        state.SetIterationTime(cpu);
        cpu_total += cpu;
        wall_total += *std::max_element(sh.end.begin(), sh.end.end()) -
                      *std::min_element(sh.start.begin(), sh.start.end());
      }
    }
    return absl::OkStatus();
  });
  if (!status.ok()) {
    state.SkipWithError(status.ToString().c_str());
    return;
  }
  const double bytes = static_cast<double>(state.iterations()) * static_cast<double>(c.bytes);
  const double gbps = cpu_total > 0 ? bytes / cpu_total / 1e9 : 0.0;
  state.SetBytesProcessed(state.iterations() * c.bytes);
  state.counters["GBps"] = gbps;
  state.counters["memcpy_GBps"] = MemcpyGBps(c.bytes);
  state.counters["of_memcpy"] = gbps / MemcpyGBps(c.bytes);
  state.counters["wall_GBps"] = wall_total > 0 ? bytes / wall_total / 1e9 : 0.0;
  state.SetLabel(std::to_string(c.skew.weights[0]) + ":" + std::to_string(c.skew.weights[1]) + ":" +
                 std::to_string(c.skew.weights[2]) + ":" + std::to_string(c.skew.weights[3]));
}

// ---- hierarchical vs flat all-reduce on a mesh of thread ranks ---------------------------------

struct MeshShape {
  const char* name;
  std::vector<int> sizes;  // ranks per node
};
const MeshShape kMeshes[] = {{"2x2", {2, 2}}, {"2x4", {4, 4}}, {"4x2", {2, 2, 2, 2}}, {"2+4", {2, 4}}};

// Thread ranks running one all-reduce each in lockstep, as BM_Collective: `keep_going` (asked
// on rank 0) decides each iteration; `record(cpu, wall)` gets the slowest rank's thread CPU
// time and the wall time of each.
absl::Status RunMeshLockstep(const std::vector<int>& sizes, int64_t bytes, bool hierarchical,
                             const std::function<bool()>& keep_going,
                             const std::function<void(double, double)>& record) {
  HS_ASSIGN_OR_RETURN(runtime::Mesh mesh, runtime::Mesh::FromSizes(sizes));
  const int n = mesh.ranks();
  const int64_t count = bytes / static_cast<int64_t>(sizeof(float));
  std::atomic<bool> go{false};
  std::vector<double> cpu(n), start(n), end(n);
  return runtime::RunThreadRanks(n, [&](Communicator& comm) -> absl::Status {
    const int r = comm.rank();
    HS_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> node, runtime::SplitByNode(comm, mesh));
    std::vector<float> data(static_cast<size_t>(count), 0.0f);  // zeros: sums stay finite
    auto op = [&]() -> absl::Status {
      if (!hierarchical) return comm.AllReduce(data.data(), count);
      return runtime::HierarchicalAllReduce(runtime::MeshComms{comm, *node, mesh}, data.data(), count);
    };
    HS_RETURN_IF_ERROR(op());  // warm-up
    while (true) {
      if (r == 0) go.store(keep_going(), std::memory_order_relaxed);
      HS_RETURN_IF_ERROR(comm.Barrier());
      if (!go.load(std::memory_order_relaxed)) break;
      start[r] = WallSeconds();
      const double c0 = ThreadCpuSeconds();
      HS_RETURN_IF_ERROR(op());
      cpu[r] = ThreadCpuSeconds() - c0;
      end[r] = WallSeconds();
      HS_RETURN_IF_ERROR(comm.Barrier());
      if (r == 0) {
        record(*std::max_element(cpu.begin(), cpu.end()),
               *std::max_element(end.begin(), end.end()) - *std::min_element(start.begin(), start.end()));
      }
    }
    return absl::OkStatus();
  });
}

// The same-run baseline: seconds per flat all-reduce on the mesh's ranks (the median of 5
// rounds of ~0.1 s of manual time), measured once per (ranks, size) at startup.
double FlatAllReduceSeconds(const std::vector<int>& sizes, int64_t bytes) {
  static std::map<std::pair<int, int64_t>, double> cache;
  int n = 0;
  for (int k : sizes) n += k;
  if (auto it = cache.find({n, bytes}); it != cache.end()) return it->second;
  std::vector<double> rounds;
  for (int round = 0; round < 5; ++round) {
    double total = 0;
    int64_t iters = 0;
    const absl::Status s = RunMeshLockstep(
        sizes, bytes, /*hierarchical=*/false, [&] { return total < MinTime(bytes); },
        [&](double cpu, double) {
          total += cpu;
          ++iters;
        });
    if (!s.ok() || iters == 0) return 0;
    rounds.push_back(total / static_cast<double>(iters));
  }
  std::sort(rounds.begin(), rounds.end());
  return cache[{n, bytes}] = rounds[rounds.size() / 2];
}

void BM_MeshAllReduce(benchmark::State& state, const MeshShape& m, int64_t bytes, bool hierarchical) {
  double cpu_total = 0, wall_total = 0;
  const absl::Status status = RunMeshLockstep(
      m.sizes, bytes, hierarchical, [&] { return state.KeepRunning(); },
      [&](double cpu, double wall) {
        state.SetIterationTime(cpu);
        cpu_total += cpu;
        wall_total += wall;
      });
  if (!status.ok()) {
    state.SkipWithError(status.ToString().c_str());
    return;
  }
  const double iters = static_cast<double>(state.iterations());
  const double flat = FlatAllReduceSeconds(m.sizes, bytes);
  state.SetBytesProcessed(state.iterations() * bytes);
  state.counters["GBps"] = cpu_total > 0 ? iters * static_cast<double>(bytes) / cpu_total / 1e9 : 0.0;
  state.counters["of_flat"] = cpu_total > 0 && flat > 0 ? flat / (cpu_total / iters) : 0.0;
  state.counters["wall_GBps"] = wall_total > 0 ? iters * static_cast<double>(bytes) / wall_total / 1e9 : 0.0;
}

void Register() {
  const int64_t sizes[] = {int64_t{64} << 10, int64_t{1} << 20, int64_t{16} << 20};
  for (int64_t bytes : sizes) {
    MemcpyGBps(bytes);  // the baseline, measured before any collective runs
    benchmark::RegisterBenchmark(("Memcpy/" + SizeName(bytes)).c_str(),
                                 [bytes](benchmark::State& s) { BM_Memcpy(s, bytes); })
        ->UseManualTime()
        ->MinTime(MinTime(bytes))
        ->Unit(benchmark::kMicrosecond);
  }
  struct OpName {
    Op op;
    const char* name;
  };
  const OpName ops[] = {{Op::kAllGather, "AllGather"}, {Op::kReduceScatter, "ReduceScatter"},
                        {Op::kAllReduce, "AllReduce"}, {Op::kAllToAll, "AllToAll"}};
  for (const MeshShape& m : kMeshes) {
    for (int64_t bytes : {int64_t{1} << 20, int64_t{16} << 20}) {
      FlatAllReduceSeconds(m.sizes, bytes);  // the baseline, before any benchmark runs
      for (bool hierarchical : {false, true}) {
        const std::string name = std::string("MeshAllReduce/") + m.name + "/" + SizeName(bytes) + "/" +
                                 (hierarchical ? "hierarchical" : "flat");
        benchmark::RegisterBenchmark(name.c_str(), [&m, bytes, hierarchical](benchmark::State& s) {
          BM_MeshAllReduce(s, m, bytes, hierarchical);
        })
            ->UseManualTime()
            ->MinTime(MinTime(bytes))
            ->Unit(benchmark::kMicrosecond);
      }
    }
  }
  for (Layer layer : {Layer::kComm, Layer::kAlong}) {
    for (const OpName& op : ops) {
      if (layer == Layer::kAlong && op.op == Op::kAllReduce) continue;  // no packing: the same call
      const bool has_impl = op.op == Op::kAllGather || op.op == Op::kReduceScatter;
      const bool has_skew = op.op != Op::kAllReduce;
      for (CommImpl impl : {CommImpl::kPadded, CommImpl::kGrouped}) {
        if (!has_impl && impl == CommImpl::kPadded) continue;
        for (int64_t bytes : sizes) {
          for (const Skew& skew : kSkews) {
            if (!has_skew && std::string(skew.name) != "even") continue;
            std::string name = std::string(op.name) + (layer == Layer::kAlong ? "Along" : "") + "/";
            if (has_impl) name += std::string(runtime::CommImplName(impl)) + "/";
            name += SizeName(bytes);
            if (has_skew) name += std::string("/") + skew.name;
            const Case c{op.op, layer, impl, bytes, skew};
            benchmark::RegisterBenchmark(name.c_str(), [c](benchmark::State& s) { BM_Collective(s, c); })
                ->UseManualTime()
                ->MinTime(MinTime(bytes))
                ->Unit(benchmark::kMicrosecond);
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace hetsynth::bench

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("ranks", "4 threads (RunThreadRanks; MeshAllReduce: the mesh's ranks); manual time = "
                                      "slowest rank's thread CPU time");
  benchmark::AddCustomContext("mpi", hetsynth::runtime::MpiAvailable()
                                         ? "built in, not run by this suite (thread ranks only)"
                                         : "not in this build (thread ranks only)");
  hetsynth::bench::Register();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
