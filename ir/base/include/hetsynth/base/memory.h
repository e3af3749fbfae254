// This host's memory and byte counts in messages: what `profile` and `train` check buffers and
// models against, and how they say how much.
#pragma once

#include <string>

namespace hetsynth {

// This host's physical memory in bytes (sysconf); 0 when unknown.
double PhysicalRamBytes();

// `bytes` with a binary unit and 4 significant digits: "512 B", "1.5 KiB", "16 MiB", "1.25 GiB"
// (up to TiB).
std::string FormatBytes(double bytes);

}  // namespace hetsynth
