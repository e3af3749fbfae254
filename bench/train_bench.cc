// One training step (forward, backward, Adam) of a small GPT on one CPU core, with the
// achieved GFLOP/s against the machine's measured FMA peak in the same run.
//   build/bin/train_bench
#include <benchmark/benchmark.h>

#include "hetsynth/ir/models.h"
#include "hetsynth/runtime/data.h"
#include "hetsynth/runtime/trainer.h"
#include "peak.h"

namespace hetsynth::bench {
namespace {

// "Small gpt": 2 layers, hidden 256, 4 heads, FFN 1024, seq 128, vocab 2048, batch 8.
void BM_TrainStepSmallGpt(benchmark::State& state) {
  const ir::ModelSpec spec = *ir::MakeModelSpec(
      "gpt", {"layers=2", "hidden=256", "heads=4", "ffn=1024", "seq=128", "vocab=2048"}, 8);
  ir::Graph graph = *ir::BuildModel(spec);
  const ir::Flops f = graph.TotalFlops();
  const runtime::DataSource data = *runtime::DataSource::Synthetic(spec, graph, 0);
  auto trainer = *runtime::Trainer::Create(std::move(graph), runtime::OptimizerConfig{}, 0);
  const runtime::Batch batch = *data.Get(0);
  RunAndReport(state, f.forward + f.backward, [&] { benchmark::DoNotOptimize(*trainer->Step(batch)); });
  state.SetLabel(spec.ToString());
}
BENCHMARK(BM_TrainStepSmallGpt)->Unit(benchmark::kMillisecond)->MinTime(2.0);

}  // namespace
}  // namespace hetsynth::bench

BENCHMARK_MAIN();
