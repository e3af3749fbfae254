// libFuzzer target: the plan file parser on arbitrary bytes — the header alone, then the full
// plan against the model its header names (small mlp graphs only, to keep executions fast).
#include <cstddef>
#include <cstdint>
#include <string>

#include "hetsynth/instr/program.h"
#include "hetsynth/ir/models.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto header = hetsynth::instr::PlanHeaderFromJson(text, "fuzz.json");
  if (!header.ok()) return 0;
  auto spec = hetsynth::ir::MakeModelSpec("mlp", {}, 8, hetsynth::ir::Preset::kSmall);
  if (!spec.ok()) return 0;
  auto g = hetsynth::ir::BuildModel(*spec);
  if (g.ok()) (void)hetsynth::instr::PlanFromJson(*g, text, "fuzz.json");
  return 0;
}
