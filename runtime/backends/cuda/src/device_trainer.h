// Single-device training on an executor (GpuExec: one GPU): runtime::Trainer's algorithm —
// the same initialization (parameters made on the host by InitParameter, then uploaded), the
// same tape-based backward over the graph, the same optimizer — with every tensor in device
// memory and every operator from dispatch.h. Batches arrive on the host and are uploaded.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "hetsynth/ir/status.h"
#include "hetsynth/runtime/data.h"
#include "hetsynth/runtime/training.h"
#include "ops/dispatch.h"
#include "ops/optim.h"

namespace hetsynth::runtime::gpu {

template <class X>
class DeviceTrainer {
 public:
  using T = typename X::Tensor;

  static absl::StatusOr<std::unique_ptr<DeviceTrainer>> Create(X& x, ir::Graph graph, OptimizerConfig cfg,
                                                               uint64_t seed) {
    HS_RETURN_IF_ERROR(graph.Validate());
    HS_RETURN_IF_ERROR(ValidateOptimizerConfig(cfg));
    std::unique_ptr<DeviceTrainer> t(new DeviceTrainer(x, std::move(graph), cfg));
    const ir::Graph& g = t->graph_;
    for (ir::ValueId p : g.parameters()) t->params_.emplace(g.value(p).name, x.Upload(InitParameter(g.value(p), seed)));
    t->needs_grad_.assign(g.values().size(), false);
    for (ir::ValueId p : g.parameters()) t->needs_grad_[static_cast<size_t>(p)] = true;
    for (const ir::Node& n : g.nodes()) {
      for (size_t i = 0; i < n.inputs.size(); ++i) {
        if (t->needs_grad_[static_cast<size_t>(n.inputs[i])] && Differentiable(n.kind, i)) {
          t->needs_grad_[static_cast<size_t>(n.output)] = true;
        }
      }
    }
    HS_RETURN_IF_ERROR(x.status());
    return t;
  }

  // Forward, backward and optimizer update; the loss before the update.
  absl::StatusOr<float> Step(const Batch& batch) {
    std::map<std::string, T> grads;
    HS_ASSIGN_OR_RETURN(float loss, Run(batch, &grads));
    optimizer_.Step(x_, params_, grads);
    HS_RETURN_IF_ERROR(x_.status());
    return loss;
  }
  // Forward and backward; host copies of the parameters' gradients.
  absl::StatusOr<float> Gradients(const Batch& batch, std::map<std::string, Tensor>* grads) {
    std::map<std::string, T> g;
    HS_ASSIGN_OR_RETURN(float loss, Run(batch, &g));
    grads->clear();
    for (const auto& [name, t] : g) (*grads)[name] = x_.Download(t);
    HS_RETURN_IF_ERROR(x_.status());
    return loss;
  }

  // For profiling: called after every operator with its node, whether it was the backward, and
  // the seconds it took, measured by waiting for the device before and after it (so it slows
  // the step down). Empty: no timing.
  using KernelTimer = std::function<void(ir::NodeId node, bool backward, double seconds)>;
  void SetKernelTimer(KernelTimer timer) { timer_ = std::move(timer); }

  int64_t step() const { return optimizer_.steps(); }
  const ir::Graph& graph() const { return graph_; }
  X& executor() { return x_; }

  std::map<std::string, Tensor> Parameters() {
    std::map<std::string, Tensor> out;
    for (const auto& [name, t] : params_) out[name] = x_.Download(t);
    return out;
  }
  absl::Status Save(const std::string& path, const std::string& model) {
    std::map<std::string, Tensor> params = Parameters();
    std::map<std::string, Tensor> state = optimizer_.StateTensors(x_);
    HS_RETURN_IF_ERROR(x_.status());
    return WriteCheckpoint(path, model, params, state, optimizer_.config().kind, optimizer_.steps());
  }
  absl::Status Load(const std::string& path) {
    std::map<std::string, ir::Shape> shapes;
    for (const auto& [name, t] : params_) shapes[name] = t.shape;
    HS_ASSIGN_OR_RETURN(Checkpoint ck, ReadCheckpoint(path, shapes, optimizer_.config().kind));
    for (auto& [name, t] : params_) t = x_.Upload(ck.params.at(name));
    optimizer_.RestoreState(x_, ck.state, ck.step);
    return x_.status();
  }

 private:
  DeviceTrainer(X& x, ir::Graph graph, OptimizerConfig cfg) : x_(x), graph_(std::move(graph)), optimizer_(cfg) {}

  template <class F>
  void Timed(ir::NodeId n, bool backward, F&& f) {
    if (!timer_) return f();
    (void)x_.Synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    (void)x_.Synchronize();
    timer_(n, backward, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }

  absl::StatusOr<float> Run(const Batch& batch, std::map<std::string, T>* grads) {
    HS_RETURN_IF_ERROR(ValidateBatch(graph_, batch, "batch"));
    const auto& vals = graph_.values();
    const size_t nv = vals.size();
    std::vector<T> values(nv);
    std::vector<Saved<X>> saved(graph_.nodes().size());
    KernelContext ctx;
    ctx.step = step();
    for (size_t v = 0; v < nv; ++v) {
      if (vals[v].kind == ir::ValueKind::kInput) values[v] = x_.Upload(batch.at(vals[v].name));
    }
    auto value = [&](ir::ValueId v) -> const T& {
      return vals[static_cast<size_t>(v)].kind == ir::ValueKind::kParameter ? params_.at(vals[static_cast<size_t>(v)].name)
                                                                           : values[static_cast<size_t>(v)];
    };
    std::vector<const T*> in;
    for (size_t n = 0; n < graph_.nodes().size(); ++n) {
      const ir::Node& node = graph_.nodes()[n];
      in.clear();
      for (ir::ValueId v : node.inputs) in.push_back(&value(v));
      T out = x_.Make(vals[static_cast<size_t>(node.output)].shape);
      Timed(static_cast<ir::NodeId>(n), false, [&] { gpu::Forward<X>(x_, node, ctx, in, out, saved[n]); });
      values[static_cast<size_t>(node.output)] = std::move(out);
    }
    const float loss = x_.Read(values[static_cast<size_t>(graph_.loss())].ptr());

    // Backward, as runtime::Trainer: gradients flow from the loss; each node's output, gradient
    // and saved state are released as soon as the node is done.
    std::vector<T> g(nv);
    std::vector<bool> has(nv, false);
    g[static_cast<size_t>(graph_.loss())] = x_.Upload(Tensor({}, 1.0f));
    has[static_cast<size_t>(graph_.loss())] = true;
    std::vector<T> din_store;
    std::vector<T*> din;
    for (size_t n = graph_.nodes().size(); n-- > 0;) {
      const ir::Node& node = graph_.nodes()[n];
      const size_t out = static_cast<size_t>(node.output);
      if (has[out]) {
        in.clear();
        din_store.clear();
        din.clear();
        for (size_t i = 0; i < node.inputs.size(); ++i) {
          const ir::ValueId v = node.inputs[i];
          in.push_back(&value(v));
          const bool want = needs_grad_[static_cast<size_t>(v)] && Differentiable(node.kind, i);
          din_store.push_back(x_.Make(want ? value(v).shape : ir::Shape{0}));
        }
        for (size_t i = 0; i < node.inputs.size(); ++i) {
          const bool want = needs_grad_[static_cast<size_t>(node.inputs[i])] && Differentiable(node.kind, i);
          din.push_back(want ? &din_store[i] : nullptr);
        }
        Timed(static_cast<ir::NodeId>(n), true,
              [&] { gpu::Backward<X>(x_, node, ctx, in, values[out], g[out], saved[n], din); });
        for (size_t i = 0; i < node.inputs.size(); ++i) {
          if (!din[i]) continue;
          const size_t v = static_cast<size_t>(node.inputs[i]);
          if (!has[v]) {
            g[v] = std::move(*din[i]);
            has[v] = true;
          } else {
            x_.For(g[v].numel(), Accumulate{g[v].ptr(), din[i]->ptr()});
          }
        }
      }
      g[out] = T();
      has[out] = false;
      values[out] = T();
      saved[n] = Saved<X>();
    }
    grads->clear();
    for (ir::ValueId p : graph_.parameters()) {
      if (has[static_cast<size_t>(p)]) grads->emplace(vals[static_cast<size_t>(p)].name, std::move(g[static_cast<size_t>(p)]));
    }
    HS_RETURN_IF_ERROR(x_.status());
    return loss;
  }

  X& x_;
  ir::Graph graph_;
  DeviceOptimizer<X> optimizer_;
  std::map<std::string, T> params_;
  std::vector<bool> needs_grad_;
  KernelTimer timer_;
};

}  // namespace hetsynth::runtime::gpu
