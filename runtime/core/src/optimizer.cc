#include "hetsynth/runtime/optimizer.h"

#include <cmath>

#include "hetsynth/base/status.h"

namespace hetsynth::runtime {

absl::StatusOr<OptimizerKind> ParseOptimizerKind(const std::string& name) {
  if (name == "sgd") return OptimizerKind::kSgd;
  if (name == "adam") return OptimizerKind::kAdam;
  return absl::InvalidArgumentError(StrCat("--optimizer '", name, "'; expected sgd or adam"));
}

const char* OptimizerName(OptimizerKind kind) { return kind == OptimizerKind::kSgd ? "sgd" : "adam"; }

absl::Status ValidateOptimizerConfig(const OptimizerConfig& c) {
  auto bad = [](const std::string& m) { return absl::InvalidArgumentError(m); };
  if (!(c.lr > 0) || !std::isfinite(c.lr)) return bad(StrCat("--lr ", c.lr, "; expected a positive number"));
  if (!(c.momentum >= 0 && c.momentum < 1)) return bad(StrCat("--momentum ", c.momentum, "; expected 0 <= momentum < 1"));
  if (!(c.weight_decay >= 0)) return bad(StrCat("--weight-decay ", c.weight_decay, "; expected >= 0"));
  if (!(c.beta1 >= 0 && c.beta1 < 1 && c.beta2 >= 0 && c.beta2 < 1)) {
    return bad(StrCat("adam betas (", c.beta1, ", ", c.beta2, "); expected each in [0, 1)"));
  }
  if (!(c.eps > 0)) return bad(StrCat("adam eps ", c.eps, "; expected a positive number"));
  return absl::OkStatus();
}

void Optimizer::Step(std::map<std::string, Tensor>& params, const std::map<std::string, Tensor>& grads) {
  ++steps_;
  const float lr = static_cast<float>(cfg_.lr), wd = static_cast<float>(cfg_.weight_decay);
  for (auto& [name, p] : params) {
    auto git = grads.find(name);
    if (git == grads.end()) continue;  // parameter unused by the loss: PyTorch skips it too
    const Tensor& g = git->second;
    HS_CHECK(g.numel() == p.numel(), StrCat("gradient of '", name, "' has the wrong size"));
    float* w = p.ptr();
    const float* gd = g.ptr();
    const int64_t n = p.numel();
    if (cfg_.kind == OptimizerKind::kSgd) {
      const float mom = static_cast<float>(cfg_.momentum);
      if (mom == 0.0f) {
        for (int64_t i = 0; i < n; ++i) w[i] -= lr * (gd[i] + wd * w[i]);
        continue;
      }
      auto [it, fresh] = m_.try_emplace(name, p.shape);
      float* buf = it->second.ptr();
      for (int64_t i = 0; i < n; ++i) {
        const float d = gd[i] + wd * w[i];
        buf[i] = fresh ? d : mom * buf[i] + d;  // PyTorch: first step stores the gradient
        w[i] -= lr * buf[i];
      }
      continue;
    }
    // Adam, in the order torch.optim.Adam (single-tensor, non-fused) evaluates it. The buffers
    // never alias, which lets the compiler vectorize the loop (the same operations per element,
    // so the same bits; this file is built with -fno-math-errno so that sqrt vectorizes too).
    float* __restrict m = m_.try_emplace(name, p.shape).first->second.ptr();
    float* __restrict v = v_.try_emplace(name, p.shape).first->second.ptr();
    float* __restrict wr = w;
    const float* __restrict gr = gd;
    const float b1 = static_cast<float>(cfg_.beta1), b2 = static_cast<float>(cfg_.beta2);
    const double bc1 = 1.0 - std::pow(cfg_.beta1, static_cast<double>(steps_));
    const double bc2 = 1.0 - std::pow(cfg_.beta2, static_cast<double>(steps_));
    const float step_size = static_cast<float>(cfg_.lr / bc1);
    const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
    const float eps = static_cast<float>(cfg_.eps);
    for (int64_t i = 0; i < n; ++i) {
      const float d = gr[i] + wd * wr[i];
      m[i] += (d - m[i]) * (1.0f - b1);
      v[i] = v[i] * b2 + (1.0f - b2) * d * d;
      const float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
      wr[i] -= step_size * (m[i] / denom);
    }
  }
}

std::map<std::string, Tensor> Optimizer::StateTensors() const {
  std::map<std::string, Tensor> out;
  const bool adam = cfg_.kind == OptimizerKind::kAdam;
  for (const auto& [name, t] : m_) out[name + (adam ? ".exp_avg" : ".momentum_buffer")] = t;
  for (const auto& [name, t] : v_) out[name + ".exp_avg_sq"] = t;
  return out;
}

void Optimizer::RestoreState(std::map<std::string, Tensor> tensors, int64_t steps) {
  steps_ = steps;
  m_.clear();
  v_.clear();
  auto strip = [](const std::string& key, const std::string& suffix, std::string* base) {
    if (key.size() <= suffix.size() || key.compare(key.size() - suffix.size(), suffix.size(), suffix) != 0) {
      return false;
    }
    *base = key.substr(0, key.size() - suffix.size());
    return true;
  };
  for (auto& [key, t] : tensors) {
    std::string base;
    if (strip(key, ".exp_avg_sq", &base)) v_[base] = std::move(t);
    else if (strip(key, ".exp_avg", &base) || strip(key, ".momentum_buffer", &base)) m_[base] = std::move(t);
  }
}

}  // namespace hetsynth::runtime
