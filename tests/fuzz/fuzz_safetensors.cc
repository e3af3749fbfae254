// libFuzzer target: the safetensors reader (runtime::ReadSafetensors, which reads a path) on
// arbitrary bytes written to a memfd.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "hetsynth/runtime/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const int fd = memfd_create("fuzz.safetensors", 0);
  if (fd < 0) return 0;
  if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != static_cast<ssize_t>(size)) return 0;
  (void)hetsynth::runtime::ReadSafetensors("/proc/self/fd/" + std::to_string(fd));
  return 0;
}
