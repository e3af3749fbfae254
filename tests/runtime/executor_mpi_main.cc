// executor_mpi_check: plans run by the executor over MPI ranks against single-device training,
// under mpirun (`mpirun --oversubscribe -np 4 executor_mpi_check`; ctest runs it as
// executor_mpi, and with 8 processes as executor_mpi_8). Every process synthesizes the same
// plans (synthesis is deterministic) and trains the single-device reference itself; rank 0
// prints one line per case. With 4 processes: every model × plan kind on the mixed-4 cluster;
// with 4 or 8: the plan kinds of a two-node mesh (executor_test's PlanKindsMatch cases of that
// size: hierarchical collectives, buckets, overlap on a communication thread, their
// combination, ZeRO with overlap) and of mesh levels (megatron; with 4, the hand-made nodes-level
// programs). Exit status non-zero when any rank saw a difference beyond 1e-5 relative or an
// error.
#include <cstdio>
#include <vector>

#include "hetsynth/runtime/comm.h"
#include "runtime/executor_reference.h"

int main() {
  using namespace hetsynth::runtime;
  auto world = MpiWorld();
  if (!world.ok()) {
    std::fprintf(stderr, "executor_mpi_check: %s\n", std::string(world.status().message()).c_str());
    return 1;
  }
  Communicator& comm = **world;
  if (comm.size() != 4 && comm.size() != 8) {
    std::fprintf(stderr, "executor_mpi_check: run with 4 or 8 ranks (mpirun -np 4), not %d\n", comm.size());
    return 1;
  }
  std::vector<testing::PlanCase> cases;
  if (comm.size() == 4) {
    for (const char* model : {"mlp", "gpt", "vit", "vgg19", "moe"}) {
      for (const char* strategy : {"synthesized", "dp-ev", "dp-cp", "tp-even", "zero-even"}) {
        cases.push_back({model, strategy, {}});
      }
    }
  }
  const int k = comm.size() / 2;  // two nodes of k ranks
  for (const char* v : {"", "hier", "buckets", "overlap", "all"}) cases.push_back({"mlp", "dp-ev", {}, k, v});
  for (const char* v : {"overlap", "all"}) cases.push_back({"gpt", "zero-even", {}, k, v});
  for (const char* v : {"hier", "all"}) cases.push_back({"gpt", "tp-even", {}, k, v});
  for (const char* v : {"", "all"}) cases.push_back({"gpt", "synthesized", {}, k, v});
  cases.push_back({"gpt", "fsdp-even", {}, k, ""});  // ZeRO-3 with prefetch, as synthesized
  cases.push_back({"mlp", "ddp-cp", {}, k, ""});     // DDP: buckets, overlap, as synthesized
  cases.push_back({"vit", "dp-cp", {}, k, "all"});
  // Mesh levels: megatron (tensor parallel inside each node, data parallel across them) as
  // synthesized and blocking; the hand-made nodes-level programs on 2 × 2.
  for (const char* model : {"mlp", "gpt", "vit"}) {
    for (const char* v : {"", "blocking"}) cases.push_back({model, "megatron", {}, k, v});
  }
  if (k == 2) {
    for (const char* kind : {"hand-gather", "hand-scatter", "hand-reduce"}) cases.push_back({"mlp", kind, {}, 2, ""});
  }

  int failures = 0;
  for (const testing::PlanCase& c : cases) {
    std::string problem;
    auto setup = testing::MakeSetup(c);
    if (!setup.ok()) {
      problem = std::string(setup.status().message());
    } else {
      auto ref = testing::TrainSingle(*setup, 5);
      auto run = testing::TrainPlan(*setup, comm, 5);
      if (!ref.ok()) {
        problem = std::string(ref.status().message());
      } else if (!run.ok()) {
        problem = std::string(run.status().message());
      } else {
        problem = testing::Compare(*ref, *run, 1e-5);
      }
    }
    if (!problem.empty()) std::fprintf(stderr, "rank %d: %s: %s\n", comm.rank(), c.Name().c_str(), problem.c_str());
    float bad = problem.empty() ? 0.0f : 1.0f;
    if (!comm.AllReduce(&bad, 1).ok()) return 1;
    if (comm.rank() == 0) std::printf("%-32s %s\n", c.Name().c_str(), bad == 0 ? "ok" : "MISMATCH");
    failures += bad > 0;
  }
  const absl::Status threads = comm.CheckConcurrentUse();
  if (comm.rank() == 0) {
    std::printf("%d of %zu cases differ from single-device training (overlap: %s)\n", failures, cases.size(),
                threads.ok() ? "on a communication thread" : std::string(threads.message()).c_str());
  }
  return failures == 0 ? 0 : 1;
}
