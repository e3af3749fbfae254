#include "hetsynth/ir/status.h"
#include "hetsynth/runtime/random.h"
#include "hetsynth/runtime/trainer.h"

namespace hetsynth::runtime {

Tensor InitParameter(const ir::Value& param, uint64_t seed) {
  HS_CHECK(param.kind == ir::ValueKind::kParameter, "InitParameter on a non-parameter");
  Tensor t(param.shape);
  Rng rng(seed, Fnv1a(param.name));
  const float scale = static_cast<float>(param.init.scale);
  switch (param.init.kind) {
    case ir::Init::Kind::kZeros: break;
    case ir::Init::Kind::kOnes: t.Fill(1.0f); break;
    case ir::Init::Kind::kNormal:
      for (float& v : t.data) v = scale * rng.Normal();
      break;
    case ir::Init::Kind::kUniform:
      for (float& v : t.data) v = scale * (2.0f * rng.Uniform() - 1.0f);
      break;
  }
  return t;
}

}  // namespace hetsynth::runtime
