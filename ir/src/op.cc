#include "hetsynth/ir/op.h"

#include <array>

namespace hetsynth::ir {
namespace {

struct OpInfo {
  std::string_view name;
  std::vector<std::string_view> attrs;
};

const std::array<OpInfo, kNumOpKinds>& Table() {
  static const std::array<OpInfo, kNumOpKinds> table = {{
      {"linear", {}},
      {"matmul", {}},
      {"add", {}},
      {"mul", {}},
      {"relu", {}},
      {"gelu", {}},
      {"dropout", {"p", "seed"}},
      {"layer_norm", {"eps"}},
      {"softmax", {}},
      {"log_softmax", {}},
      {"attention", {"heads", "causal"}},
      {"causal_mask", {}},
      {"embedding", {}},
      {"conv2d", {"kernel", "stride", "padding"}},
      {"max_pool2d", {"kernel", "stride"}},
      {"adaptive_avg_pool2d", {"out_h", "out_w"}},
      {"flatten", {"axis"}},
      {"reshape", {"shape"}},
      {"transpose", {"axis", "axis2"}},
      {"concat", {"axis"}},
      {"slice", {"axis", "start", "length"}},
      {"expand", {"shape"}},
      {"cross_entropy", {}},
      {"top_k_gate", {"k", "capacity"}},
      {"moe_dispatch", {"experts", "capacity"}},
      {"moe_combine", {}},
  }};
  return table;
}

}  // namespace

std::string_view OpName(OpKind kind) { return Table()[static_cast<size_t>(kind)].name; }

bool ParseOpName(std::string_view name, OpKind* kind) {
  const auto& table = Table();
  for (size_t i = 0; i < table.size(); ++i) {
    if (table[i].name == name) {
      *kind = static_cast<OpKind>(i);
      return true;
    }
  }
  return false;
}

std::vector<std::string_view> AttrNames(OpKind kind) {
  return Table()[static_cast<size_t>(kind)].attrs;
}

}  // namespace hetsynth::ir
