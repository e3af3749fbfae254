#include "hetsynth/ir/op.h"

#include "hetsynth/ir/op_table.h"

namespace hetsynth::ir {

std::string_view OpName(OpKind kind) { return DefOf(kind).name; }

bool ParseOpName(std::string_view name, OpKind* kind) {
  for (const OpDef& def : OpTable()) {
    if (def.name == name) {
      *kind = def.kind;
      return true;
    }
  }
  return false;
}

std::vector<std::string_view> AttrNames(OpKind kind) {
  std::vector<std::string_view> out;
  for (std::string_view a : DefOf(kind).attrs) {
    if (!a.empty()) out.push_back(a);
  }
  return out;
}

}  // namespace hetsynth::ir
