#include "hetsynth/runtime/trainer.h"

#include <cmath>

#include "hetsynth/ir/status.h"
#include "hetsynth/runtime/cpu_time.h"

namespace hetsynth::runtime {

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(ir::Graph graph, OptimizerConfig cfg,
                                                         uint64_t seed) {
  HS_RETURN_IF_ERROR(graph.Validate());
  HS_RETURN_IF_ERROR(ValidateOptimizerConfig(cfg));
  std::unique_ptr<Trainer> t(new Trainer(std::move(graph), cfg));
  const ir::Graph& g = t->graph_;
  for (ir::ValueId p : g.parameters()) t->params_[g.value(p).name] = InitParameter(g.value(p), seed);
  t->needs_grad_.assign(g.values().size(), false);
  for (ir::ValueId p : g.parameters()) t->needs_grad_[p] = true;
  for (const ir::Node& n : g.nodes()) {
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      if (t->needs_grad_[n.inputs[i]] && Differentiable(n.kind, i)) t->needs_grad_[n.output] = true;
    }
  }
  return t;
}

absl::StatusOr<float> Trainer::Forward(const Batch& batch) {
  HS_RETURN_IF_ERROR(ValidateBatch(graph_, batch, "batch"));
  const auto& vals = graph_.values();
  values_.assign(vals.size(), Tensor());
  saved_.assign(graph_.nodes().size(), SavedState());
  for (size_t v = 0; v < vals.size(); ++v) {
    if (vals[v].kind == ir::ValueKind::kInput) values_[v] = batch.at(vals[v].name);
  }
  auto value = [&](ir::ValueId v) -> const Tensor& {
    return vals[v].kind == ir::ValueKind::kParameter ? params_.at(vals[v].name) : values_[v];
  };
  std::vector<const Tensor*> in;
  for (size_t n = 0; n < graph_.nodes().size(); ++n) {
    const ir::Node& node = graph_.nodes()[n];
    in.clear();
    for (ir::ValueId v : node.inputs) in.push_back(&value(v));
    Tensor out(vals[node.output].shape);
    const double t0 = timer_ ? ThreadCpuSeconds() : 0;
    runtime::Forward(node, ctx_, in, out, saved_[n]);
    if (timer_) timer_(static_cast<ir::NodeId>(n), false, ThreadCpuSeconds() - t0);
    values_[node.output] = std::move(out);
  }
  return values_[graph_.loss()].data.at(0);
}

void Trainer::Backward(std::map<std::string, Tensor>* grads) {
  const auto& vals = graph_.values();
  std::vector<Tensor> g(vals.size());
  g[graph_.loss()] = Tensor({}, 1.0f);
  auto value = [&](ir::ValueId v) -> const Tensor& {
    return vals[v].kind == ir::ValueKind::kParameter ? params_.at(vals[v].name) : values_[v];
  };
  std::vector<const Tensor*> in;
  std::vector<Tensor> din_store;
  std::vector<Tensor*> din;
  for (size_t n = graph_.nodes().size(); n-- > 0;) {
    const ir::Node& node = graph_.nodes()[n];
    const ir::ValueId out = node.output;
    if (!g[out].data.empty()) {
      in.clear();
      din_store.clear();
      din_store.reserve(node.inputs.size());
      din.clear();
      for (size_t i = 0; i < node.inputs.size(); ++i) {
        const ir::ValueId v = node.inputs[i];
        in.push_back(&value(v));
        const bool want = needs_grad_[v] && Differentiable(node.kind, i);
        din_store.emplace_back(want ? value(v).shape : ir::Shape{});
        din.push_back(want ? &din_store.back() : nullptr);
      }
      const double t0 = timer_ ? ThreadCpuSeconds() : 0;
      runtime::Backward(node, ctx_, in, values_[out], g[out], saved_[n], din);
      if (timer_) timer_(static_cast<ir::NodeId>(n), true, ThreadCpuSeconds() - t0);
      for (size_t i = 0; i < node.inputs.size(); ++i) {
        if (!din[i]) continue;
        Tensor& acc = g[node.inputs[i]];
        if (acc.data.empty()) {
          acc = std::move(*din[i]);
        } else {
          for (int64_t e = 0; e < acc.numel(); ++e) acc.data[e] += din[i]->data[e];
        }
      }
    }
    // Nothing earlier in the graph reads this node's output, its gradient or its saved state.
    g[out] = Tensor();
    values_[out] = Tensor();
    saved_[n] = SavedState();
  }
  grads->clear();
  for (ir::ValueId p : graph_.parameters()) {
    if (!g[p].data.empty()) (*grads)[vals[p].name] = std::move(g[p]);
  }
  values_.clear();
}

absl::StatusOr<float> Trainer::Gradients(const Batch& batch, std::map<std::string, Tensor>* grads) {
  ctx_.step = step();
  HS_ASSIGN_OR_RETURN(float loss, Forward(batch));
  Backward(grads);
  return loss;
}

absl::StatusOr<float> Trainer::Step(const Batch& batch) {
  std::map<std::string, Tensor> grads;
  HS_ASSIGN_OR_RETURN(float loss, Gradients(batch, &grads));
  optimizer_.Step(params_, grads);
  return loss;
}

absl::StatusOr<float> Trainer::Loss(const Batch& batch) {
  ctx_.step = step();
  HS_ASSIGN_OR_RETURN(float loss, Forward(batch));
  values_.clear();
  saved_.clear();
  return loss;
}

absl::Status Trainer::Save(const std::string& path, const std::string& model) const {
  return WriteCheckpoint(path, model, params_, optimizer_.StateTensors(), optimizer_.config().kind, step());
}

absl::Status Trainer::Load(const std::string& path) {
  std::map<std::string, ir::Shape> shapes;
  for (const auto& [name, t] : params_) shapes[name] = t.shape;
  HS_ASSIGN_OR_RETURN(Checkpoint ck, ReadCheckpoint(path, shapes, optimizer_.config().kind));
  params_ = std::move(ck.params);
  optimizer_.RestoreState(std::move(ck.state), ck.step);
  return absl::OkStatus();
}

}  // namespace hetsynth::runtime
