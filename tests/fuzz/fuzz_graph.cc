// libFuzzer target: the graph file parser (ir::GraphFromJson) on arbitrary bytes.
#include <cstddef>
#include <cstdint>
#include <string>

#include "hetsynth/ir/graph_json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  (void)hetsynth::ir::GraphFromJson(text, "fuzz.json");
  return 0;
}
