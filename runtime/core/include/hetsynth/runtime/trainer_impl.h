// The single-device training algorithm (single_device_trainer.h), written once over a backend B —
// the same B as the plan executor's (executor_impl.h): the CPU backend (cpu_backend.h: host
// tensors, CPU kernels) and the GPU backend (backends/cuda/src/executor/backend.h: an executor's
// device tensors, the GPU operators). For backends only; everyone else uses the trainers they
// make. Of B's interface the trainer uses:
//   using Tensor; using Saved; using Optimizer;     static constexpr bool kHostTensors;
//   Tensor Make(shape) (zeros), FromHost(runtime::Tensor);  runtime::Tensor ToHost(Tensor);
//   float ReadScalar(const Tensor&);  AddInto(acc, x);  Forward / Backward (kernel_contract.h);
//   MakeOptimizer(cfg), OptimizerStep(opt, params, grads), StateTensors(opt) (host),
//   RestoreState(opt, host tensors, steps);  Wait() (finish queued work);  status().
//
// The algorithm: parameters start as InitParameter makes them (training.h). A step runs forward
// over the nodes in graph order, keeping every activation and each kernel's saved state, reads
// the loss, seeds d(loss) = 1 and walks the nodes in reverse: each node whose output has a
// gradient gets zero-filled gradient buffers for the inputs that need one (those that depend on
// a parameter and are differentiable — not labels, ids or routes) and adds them into the inputs'
// gradients; its output, output gradient and saved state are freed at once, since nothing earlier
// reads them. The optimizer then updates every parameter that got a gradient.
//
//   template <class X>
//   class DeviceTrainer final : public TrainerImpl<GpuBackend<X>> {   // a trainer on executor X
//    public:
//     static absl::StatusOr<std::unique_ptr<DeviceTrainer>> Create(X& x, ir::Graph g, OptimizerConfig cfg,
//                                                                  uint64_t seed) {
//       std::unique_ptr<DeviceTrainer> t(new DeviceTrainer(x, std::move(g), cfg));
//       HS_RETURN_IF_ERROR(t->Init(seed));
//       return t;
//     }
//     ...
//   };
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "hetsynth/base/status.h"
#include "hetsynth/runtime/cpu_time.h"
#include "hetsynth/runtime/data.h"
#include "hetsynth/runtime/kernel_contract.h"
#include "hetsynth/runtime/single_device_trainer.h"
#include "hetsynth/runtime/training.h"

namespace hetsynth::runtime {

// Interface: SingleDeviceTrainer, or an interface derived from it that adds what one backend's
// callers get besides (the CPU's runtime::Trainer).
template <class B, class Interface = SingleDeviceTrainer>
class TrainerImpl : public Interface {
  static_assert(std::is_base_of_v<SingleDeviceTrainer, Interface>);

 public:
  using T = typename B::Tensor;
  using KernelTimer = SingleDeviceTrainer::KernelTimer;

  absl::StatusOr<float> Step(const Batch& batch) override {
    std::map<std::string, T> grads;
    HS_ASSIGN_OR_RETURN(float loss, Run(batch, &grads));
    DropFrozenGradients(graph_, grads);
    b_.OptimizerStep(optimizer_, params_, grads);
    HS_RETURN_IF_ERROR(b_.status());
    return loss;
  }

  absl::StatusOr<float> Gradients(const Batch& batch, std::map<std::string, Tensor>* grads) override {
    std::map<std::string, T> g;
    HS_ASSIGN_OR_RETURN(float loss, Run(batch, &g));
    grads->clear();
    for (auto& [name, t] : g) (*grads)[name] = b_.ToHost(std::move(t));
    HS_RETURN_IF_ERROR(b_.status());
    return loss;
  }

  absl::StatusOr<float> Loss(const Batch& batch) override { return Run(batch, nullptr); }

  std::map<std::string, Tensor> Parameters() override {
    std::map<std::string, Tensor> out;
    for (const auto& [name, t] : params_) out[name] = b_.ToHost(t);
    return out;
  }

  absl::Status Save(const std::string& path, const std::string& model) override {
    std::map<std::string, Tensor> state = b_.StateTensors(optimizer_);
    if constexpr (std::is_same_v<T, Tensor>) {
      // Host tensors are written as they are, without a copy of every parameter.
      if (running_.empty()) return WriteCheckpoint(path, model, params_, state, optimizer_.config().kind, step());
    }
    std::map<std::string, Tensor> params = Parameters();
    HS_RETURN_IF_ERROR(b_.status());
    params.insert(running_.begin(), running_.end());  // batch-norm running statistics
    return WriteCheckpoint(path, model, params, state, optimizer_.config().kind, step());
  }

  absl::Status Load(const std::string& path, const std::string& model = "") override {
    HS_ASSIGN_OR_RETURN(Checkpoint ck, ReadCheckpoint(path, CheckpointShapes(graph_), optimizer_.config(), model));
    PrintCheckpointNote(ck);
    // ReadCheckpoint returned exactly the parameters and running statistics of the graph.
    for (auto& [name, t] : running_) t = std::move(ck.params.at(name));
    for (auto& [name, t] : params_) t = b_.FromHost(std::move(ck.params.at(name)));
    b_.RestoreState(optimizer_, std::move(ck.state), ck.step);
    return b_.status();
  }

  int64_t step() const override { return optimizer_.steps(); }
  const ir::Graph& graph() const override { return graph_; }
  void SetKernelTimer(KernelTimer timer) override { timer_ = std::move(timer); }
  const typename B::Optimizer& optimizer() const { return optimizer_; }

 protected:
  TrainerImpl(B backend, ir::Graph graph, OptimizerConfig cfg)
      : b_(std::move(backend)), graph_(std::move(graph)), optimizer_(b_.MakeOptimizer(cfg)) {}

  // Checks the graph and the optimizer and makes the parameters; each trainer's Create calls it
  // before handing the trainer out.
  absl::Status Init(uint64_t seed) {
    HS_RETURN_IF_ERROR(graph_.Validate());
    HS_RETURN_IF_ERROR(ValidateOptimizerConfig(optimizer_.config()));
    const ir::Graph& g = graph_;
    for (ir::ValueId p : g.parameters()) params_.emplace(g.value(p).name, b_.FromHost(InitParameter(g.value(p), seed)));
    running_ = InitRunningStats(g);
    needs_grad_.assign(g.values().size(), false);
    for (ir::ValueId p : g.parameters()) needs_grad_[static_cast<size_t>(p)] = true;
    for (const ir::Node& n : g.nodes()) {
      for (size_t i = 0; i < n.inputs.size(); ++i) {
        if (needs_grad_[static_cast<size_t>(n.inputs[i])] && Differentiable(n.kind, i)) {
          needs_grad_[static_cast<size_t>(n.output)] = true;
        }
      }
    }
    return b_.status();
  }

  B& backend() { return b_; }

  B b_;
  ir::Graph graph_;
  typename B::Optimizer optimizer_;
  std::map<std::string, T> params_;
  std::map<std::string, Tensor> running_;  // batch-norm running statistics (host, by name)

 private:
  // Runs kernel call f, reporting its time to the timer when there is one. Host tensors: the
  // kernel runs on this thread, timed by its CPU time (the clock the emulated plan executor
  // charges). Device tensors: work is queued, so wait for the device before and after it.
  template <class F>
  void Timed(size_t node, bool backward, F&& f) {
    if (!timer_) return f();
    if constexpr (B::kHostTensors) {
      const double t0 = ThreadCpuSeconds();
      f();
      timer_(static_cast<ir::NodeId>(node), backward, ThreadCpuSeconds() - t0);
    } else {
      b_.Wait();
      const auto t0 = std::chrono::steady_clock::now();
      f();
      b_.Wait();
      timer_(static_cast<ir::NodeId>(node), backward,
             std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  }

  // Forward; then, when `grads` is set, backward, filling it with the parameters' gradients.
  absl::StatusOr<float> Run(const Batch& batch, std::map<std::string, T>* grads) {
    HS_RETURN_IF_ERROR(ValidateBatch(graph_, batch, "batch"));
    const auto& vals = graph_.values();
    const auto& nodes = graph_.nodes();
    std::vector<T> values(vals.size());                      // per value, until nothing reads it
    std::vector<typename B::Saved> saved(nodes.size());      // per node, until its backward
    KernelContext ctx;
    ctx.step = step();
    for (size_t v = 0; v < vals.size(); ++v) {
      if (vals[v].kind == ir::ValueKind::kInput) values[v] = b_.FromHost(batch.at(vals[v].name));
    }
    auto value = [&](ir::ValueId v) -> const T& {
      const size_t i = static_cast<size_t>(v);
      return vals[i].kind == ir::ValueKind::kParameter ? params_.at(vals[i].name) : values[i];
    };
    std::vector<const T*> in;
    for (size_t n = 0; n < nodes.size(); ++n) {
      const ir::Node& node = nodes[n];
      in.clear();
      for (ir::ValueId v : node.inputs) in.push_back(&value(v));
      T out = MakeForwardOutput(b_, node, vals[static_cast<size_t>(node.output)].shape);
      Timed(n, false, [&] { b_.Forward(node, ctx, in, out, saved[n]); });
      values[static_cast<size_t>(node.output)] = std::move(out);
    }
    const float loss = b_.ReadScalar(values[static_cast<size_t>(graph_.loss())]);
    if (grads != nullptr) {  // a training step: the running statistics move (PyTorch's train mode)
      for (ir::ValueId m : RunningStatMoments(graph_)) UpdateRunningStats(graph_, m, b_.ToHost(values[static_cast<size_t>(m)]), running_);
    }
    if (grads == nullptr) {
      HS_RETURN_IF_ERROR(b_.status());
      return loss;
    }

    std::vector<T> g(vals.size());
    std::vector<bool> has(vals.size(), false);  // g[v] holds a gradient
    const size_t loss_id = static_cast<size_t>(graph_.loss());
    g[loss_id] = b_.FromHost(Tensor({}, 1.0f));
    has[loss_id] = true;
    std::vector<T> din_store;
    std::vector<T*> din;
    for (size_t n = nodes.size(); n-- > 0;) {
      const ir::Node& node = nodes[n];
      const size_t out = static_cast<size_t>(node.output);
      if (has[out]) {
        const size_t k = node.inputs.size();
        in.clear();
        din_store.clear();
        din_store.resize(k);  // (device tensors move, never copy)
        din.assign(k, nullptr);
        for (size_t i = 0; i < k; ++i) {
          const ir::ValueId v = node.inputs[i];
          in.push_back(&value(v));
          if (needs_grad_[static_cast<size_t>(v)] && Differentiable(node.kind, i)) {
            din_store[i] = b_.Make(value(v).shape);
            din[i] = &din_store[i];
          }
        }
        Timed(n, true, [&] { b_.Backward(node, ctx, in, values[out], g[out], saved[n], din); });
        for (size_t i = 0; i < k; ++i) {
          if (!din[i]) continue;
          const size_t v = static_cast<size_t>(node.inputs[i]);
          if (!has[v]) {
            g[v] = std::move(*din[i]);
            has[v] = true;
          } else {
            b_.AddInto(g[v], *din[i]);
          }
        }
      }
      // Nothing earlier in the graph reads this node's output, its gradient or its saved state.
      g[out] = T();
      has[out] = false;
      values[out] = T();
      saved[n] = typename B::Saved();
    }
    grads->clear();
    for (ir::ValueId p : graph_.parameters()) {
      const size_t i = static_cast<size_t>(p);
      if (has[i]) grads->emplace(vals[i].name, std::move(g[i]));
    }
    HS_RETURN_IF_ERROR(b_.status());
    return loss;
  }

  std::vector<bool> needs_grad_;  // per value: depends on a parameter through differentiable inputs
  KernelTimer timer_;
};

}  // namespace hetsynth::runtime
