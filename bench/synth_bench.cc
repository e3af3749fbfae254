// Synthesis time against model depth (gpt, vit at 12-96 layers on the 64-GPU reference
// cluster) and against device count (8 to 1024 devices, gpt-12), one core.
//   build/bin/synth_bench
#include <benchmark/benchmark.h>

#include "hetsynth/costmodel/cluster.h"
#include "hetsynth/ir/models.h"
#include "hetsynth/base/status.h"
#include "hetsynth/synth/synthesize.h"

namespace hetsynth::bench {
namespace {

costmodel::Cluster Load(const std::string& name) {
  return *costmodel::ReadClusterFile(std::string(HETSYNTH_SOURCE_DIR) + "/examples/clusters/" + name);
}

// n devices, 8 per node, alternating fast and slow nodes (V100- and P100-like).
costmodel::Cluster Mixed(int n) {
  std::string nodes, devices;
  for (int k = 0; k < n / 8; ++k) {
    nodes += StrCat(k ? "," : "", "{\"name\": \"n", k, "\"}");
    devices += StrCat(k ? "," : "", "{\"name_prefix\": \"n", k, "/gpu\", \"count\": 8, \"type\": \"", k % 2 ? "P100" : "V100",
                      "\", \"node\": \"n", k, "\"}");
  }
  const std::string text = StrCat(
      "{\"format\": \"hetsynth-cluster\", \"version\": 1, \"name\": \"mixed-", n, "\", \"device_types\": {",
      "\"V100\": {\"flops\": 3.86e12, \"memory_bytes\": 34359738368, \"memory_bandwidth\": 9e11},",
      "\"P100\": {\"flops\": 2.15e12, \"memory_bytes\": 17179869184, \"memory_bandwidth\": 7.32e11}},",
      "\"nodes\": [", nodes, "], \"devices\": [", devices, "], \"links\": {\"intra_node\": {\"bandwidth\": 1.5e11, ",
      "\"latency\": 5e-6}, \"inter_node\": {\"bandwidth\": 1.3e9, \"latency\": 2.5e-5}}}");
  return *costmodel::ParseCluster(text, "bench");
}

void Run(benchmark::State& state, const ir::Graph& g, const costmodel::Cluster& c) {
  synth::SynthOptions o;
  double step = 0;
  int64_t states = 0;
  for (auto _ : state) {
    absl::StatusOr<synth::SynthResult> r = synth::Synthesize(g, c, synth::Strategy{}, o);
    if (!r.ok()) {
      state.SkipWithError(std::string(r.status().message()).c_str());
      return;
    }
    step = r->estimate.step_s;
    states = r->states_expanded;
  }
  state.counters["predicted_ms"] = step * 1e3;
  state.counters["states"] = static_cast<double>(states);
  state.counters["ops"] = static_cast<double>(g.nodes().size());
}

void BM_SynthDepth(benchmark::State& state, const char* model) {
  const int layers = static_cast<int>(state.range(0));
  // Batch 512 (8 per device): at 96 layers, batch 2048 does not fit the P100s under any plan.
  const ir::Graph g = *ir::BuildModel(*ir::MakeModelSpec(model, {StrCat("layers=", layers)}, 512));
  Run(state, g, Load("reference-64.json"));
}
BENCHMARK_CAPTURE(BM_SynthDepth, gpt, "gpt")->Arg(12)->Arg(24)->Arg(48)->Arg(96)->Unit(benchmark::kSecond)->Iterations(1);
BENCHMARK_CAPTURE(BM_SynthDepth, vit, "vit")->Arg(12)->Arg(24)->Arg(48)->Arg(96)->Unit(benchmark::kSecond)->Iterations(1);

void BM_SynthDevices(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const ir::Graph g = *ir::BuildModel(*ir::MakeModelSpec("gpt", {}, 32 * n));
  Run(state, g, Mixed(n));
}
BENCHMARK(BM_SynthDevices)->Arg(8)->Arg(64)->Arg(256)->Arg(1024)->Unit(benchmark::kSecond)->Iterations(1);

void BM_SynthLarge1024(benchmark::State& state) {
  const ir::Graph g = *ir::BuildModel(*ir::MakeModelSpec("gpt", {}, 32 * 1024));
  Run(state, g, Load("large-1024.json"));
}
BENCHMARK(BM_SynthLarge1024)->Unit(benchmark::kSecond)->Iterations(1);

}  // namespace
}  // namespace hetsynth::bench

BENCHMARK_MAIN();
