#include "hetsynth/base/memory.h"

#include <unistd.h>

#include <cstdio>

namespace hetsynth {

double PhysicalRamBytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<double>(pages) * static_cast<double>(page) : 0.0;
}

std::string FormatBytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) bytes /= 1024, ++u;
  char text[64];
  std::snprintf(text, sizeof(text), "%.4g %s", bytes, units[u]);
  return text;
}

}  // namespace hetsynth
