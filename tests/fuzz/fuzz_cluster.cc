// libFuzzer target: the cluster file parser (costmodel::ParseCluster) on arbitrary bytes.
#include <cstddef>
#include <cstdint>
#include <string>

#include "hetsynth/costmodel/cluster.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  (void)hetsynth::costmodel::ParseCluster(text, "fuzz.json");
  return 0;
}
