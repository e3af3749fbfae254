// CPU kernel throughput against the machine's measured FMA peak (same run, same core).
//   build/bin/kernels_bench            (counters: GFLOPs = achieved, of_peak = GFLOPs / peak)
#include <benchmark/benchmark.h>

#include <random>

#include "hetsynth/ir/graph.h"
#include "hetsynth/runtime/kernels.h"
#include "peak.h"

namespace hetsynth::bench {
namespace {

using runtime::Tensor;

Tensor Random(ir::Shape shape, uint32_t seed) {
  Tensor t(std::move(shape));
  std::mt19937 rng(seed);
  std::normal_distribution<float> n;
  for (float& v : t.data) v = n(rng);
  return t;
}

void BM_PeakFma(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(MeasuredPeakGflops());
  state.counters["peak_GFLOPs"] = MeasuredPeakGflops();
}
BENCHMARK(BM_PeakFma)->Iterations(1);

void BM_Gemm(benchmark::State& state) {
  const int64_t n = state.range(0);
  const Tensor a = Random({n, n}, 1), b = Random({n, n}, 2);
  Tensor c({n, n});
  RunAndReport(state, 2.0 * n * n * n, [&] {
    runtime::Gemm(false, false, n, n, n, 1.0f, a.ptr(), b.ptr(), 0.0f, c.ptr());
    benchmark::DoNotOptimize(c.data.data());
  });
}
BENCHMARK(BM_Gemm)->Arg(256)->Arg(512)->Arg(1024)->Unit(benchmark::kMillisecond);

// One linear layer's forward + backward (x: rows × in, weight: out × in) on the CPU kernels.
void LinearLayer(benchmark::State& state, int64_t rows, int64_t in, int64_t out) {
  ir::Graph g("bench");
  const ir::ValueId x = *g.AddInput("x", {rows, in});
  const ir::ValueId w = *g.AddParameter("w", {out, in}, ir::Init::Normal(0.02));
  const ir::ValueId y = *g.AddOp("y", ir::OpKind::kLinear, {x, w});
  const ir::Node& node = g.node(g.value(y).producer);
  const Tensor tx = Random({rows, in}, 3), tw = Random({out, in}, 4), dy = Random({rows, out}, 5);
  const ir::Flops f = g.NodeFlops(g.value(y).producer);
  Tensor ty({rows, out}), dx({rows, in}), dw({out, in});
  RunAndReport(state, f.forward + f.backward, [&] {
    runtime::SavedState saved;
    const Tensor* ins[] = {&tx, &tw};
    runtime::Forward(node, {}, ins, ty, saved);
    Tensor* dins[] = {&dx, &dw};
    runtime::Backward(node, {}, ins, ty, dy, saved, dins);
    benchmark::DoNotOptimize(dw.data.data());
  });
}

// The GEMM shapes of one GPT-default linear layer (batch·seq = 4096 rows, 768 -> 3072).
void BM_LinearForwardBackward(benchmark::State& state) { LinearLayer(state, state.range(0), 768, 3072); }
BENCHMARK(BM_LinearForwardBackward)->Arg(512)->Arg(4096)->Unit(benchmark::kMillisecond);

// One layer of the default mlp (1024 -> 1024, batch 512) as the devices of the emulated mixed-4
// cluster compute it: a batch slice (rows 47, 93, 186 of 512: shares 1/11, 2/11, 4/11) or a
// column slice of the weight (outputs 93, 186 of 1024, all 512 rows). GFLOPs against the whole
// layer's (512 x 1024) shows what a small shard loses: each call packs the whole unsplit operand
// (the 4 MiB weight for a batch slice, the 2 MiB input for a column slice) for fewer FLOPs.
void BM_MlpLayerShard(benchmark::State& state) { LinearLayer(state, state.range(0), 1024, state.range(1)); }
BENCHMARK(BM_MlpLayerShard)
    ->ArgNames({"rows", "out"})
    ->Args({512, 1024})
    ->Args({186, 1024})
    ->Args({93, 1024})
    ->Args({47, 1024})
    ->Args({512, 186})
    ->Args({512, 93})
    ->Unit(benchmark::kMillisecond);

// Fused attention at GPT sizes: batch B, T = 128, C = 768, 12 heads, causal.
void BM_AttentionForwardBackward(benchmark::State& state) {
  const int64_t b = state.range(0), t = 128, c = 768;
  ir::Graph g("bench");
  const ir::ValueId q = *g.AddInput("q", {b, t, c});
  ir::Attrs attrs;
  attrs.heads = 12;
  attrs.causal = true;
  const ir::ValueId o = *g.AddOp("o", ir::OpKind::kAttention, {q, q, q}, attrs);
  const ir::Node& node = g.node(g.value(o).producer);
  const Tensor tq = Random({b, t, c}, 1), tk = Random({b, t, c}, 2), tv = Random({b, t, c}, 3);
  const Tensor dout = Random({b, t, c}, 4);
  const ir::Flops f = g.NodeFlops(g.value(o).producer);
  RunAndReport(state, f.forward + f.backward, [&] {
    Tensor out({b, t, c}), dq({b, t, c}), dk({b, t, c}), dv({b, t, c});
    runtime::SavedState saved;
    const Tensor* ins[] = {&tq, &tk, &tv};
    runtime::Forward(node, {}, ins, out, saved);
    Tensor* dins[] = {&dq, &dk, &dv};
    runtime::Backward(node, {}, ins, out, dout, saved, dins);
    benchmark::DoNotOptimize(dq.data.data());
  });
}
BENCHMARK(BM_AttentionForwardBackward)->Arg(1)->Arg(4)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace hetsynth::bench

BENCHMARK_MAIN();
