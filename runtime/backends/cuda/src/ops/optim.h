// The optimizers on an executor's tensors: runtime::Optimizer's semantics and state names
// (optimizer.h), with parameters, gradients and state in device memory.
#pragma once

#include <cmath>
#include <map>
#include <string>

#include "hetsynth/base/status.h"
#include "hetsynth/runtime/optimizer.h"
#include "ops/optim_kernels.h"

namespace hetsynth::runtime::gpu {

template <class X>
class DeviceOptimizer {
 public:
  using T = typename X::Tensor;
  explicit DeviceOptimizer(OptimizerConfig cfg) : cfg_(cfg) {}

  const OptimizerConfig& config() const { return cfg_; }
  int64_t steps() const { return steps_; }

  // Updates every parameter that has a gradient of the same name.
  void Step(X& x, std::map<std::string, T>& params, const std::map<std::string, T>& grads) {
    ++steps_;
    const float lr = static_cast<float>(cfg_.lr), wd = static_cast<float>(cfg_.weight_decay);
    for (auto& [name, p] : params) {
      auto git = grads.find(name);
      if (git == grads.end()) continue;
      const T& g = git->second;
      HS_CHECK(g.numel() == p.numel(), StrCat("gradient of '", name, "' has the wrong size"));
      const int64_t n = p.numel();
      if (cfg_.kind == OptimizerKind::kSgd) {
        const float mom = static_cast<float>(cfg_.momentum);
        if (mom == 0.0f) {
          x.For(n, SgdStep{p.ptr(), g.ptr(), lr, wd});
          continue;
        }
        auto it = m_.find(name);
        const bool fresh = it == m_.end();
        if (fresh) it = m_.emplace(name, x.Make(p.shape)).first;
        x.For(n, SgdMomentumStep{p.ptr(), g.ptr(), it->second.ptr(), lr, wd, mom, fresh ? 1 : 0});
        continue;
      }
      T& m = State(x, m_, name, p);
      T& v = State(x, v_, name, p);
      const double bc1 = 1.0 - std::pow(cfg_.beta1, static_cast<double>(steps_));
      const double bc2 = 1.0 - std::pow(cfg_.beta2, static_cast<double>(steps_));
      x.For(n, AdamStep{p.ptr(), g.ptr(), m.ptr(), v.ptr(), static_cast<float>(cfg_.beta1),
                        static_cast<float>(cfg_.beta2), wd, static_cast<float>(cfg_.lr / bc1),
                        static_cast<float>(std::sqrt(bc2)), static_cast<float>(cfg_.eps)});
    }
  }

  // Host copies of the state, named as runtime::Optimizer::StateTensors names them.
  std::map<std::string, Tensor> StateTensors(X& x) const {
    std::map<std::string, Tensor> out;
    const bool adam = cfg_.kind == OptimizerKind::kAdam;
    for (const auto& [name, t] : m_) out[name + (adam ? ".exp_avg" : ".momentum_buffer")] = x.Download(t);
    for (const auto& [name, t] : v_) out[name + ".exp_avg_sq"] = x.Download(t);
    return out;
  }

  void RestoreState(X& x, const std::map<std::string, Tensor>& tensors, int64_t steps) {
    Optimizer host(cfg_);
    host.RestoreState(tensors, steps);  // one parser of the state names
    steps_ = steps;
    m_.clear();
    v_.clear();
    for (const auto& [key, t] : host.StateTensors()) {
      const bool sq = key.size() > 11 && key.compare(key.size() - 11, 11, ".exp_avg_sq") == 0;
      const std::string base = key.substr(0, key.rfind('.'));
      (sq ? v_ : m_).emplace(base, x.Upload(t));
    }
  }

 private:
  static T& State(X& x, std::map<std::string, T>& store, const std::string& name, const T& p) {
    auto it = store.find(name);
    if (it == store.end()) it = store.emplace(name, x.Make(p.shape)).first;
    return it->second;
  }

  OptimizerConfig cfg_;
  int64_t steps_ = 0;
  std::map<std::string, T> m_;  // momentum buffer (SGD) or exp_avg (Adam)
  std::map<std::string, T> v_;  // exp_avg_sq (Adam)
};

}  // namespace hetsynth::runtime::gpu
