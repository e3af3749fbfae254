// Temporary files that an interrupted process removes: a file written under a temporary name and
// renamed over its path (plans, placements, checkpoints) is registered while it is written, and
// SIGINT, SIGTERM or SIGHUP whose action is the default (ending the process) removes it before
// the process ends as it would have. A signal that is ignored stays ignored (no handler is
// installed for it), and one with a handler installed before the first guard is left to that
// handler, and the temporary to the writer (which may go on and finish it; a handler that ends
// the process itself calls RemoveTempFilesNow first). A handler installed after the first
// guard replaces this one (for good if it restores what it found before the first guard, as
// `cluster` commands do on leaving).
// SIGKILL cannot be caught: a killed writer still leaves its temporary.
//
//   std::string tmp = path + ".XXXXXX.tmp";
//   int fd = mkstemps(tmp.data(), 4);
//   TempFileGuard guard(tmp);   // from here until guard's scope ends
//   ... write, close, rename(tmp, path) ...
#pragma once

#include <string>

namespace hetsynth {

class TempFileGuard {
 public:
  // Registers `path` (up to kMaxTempFiles at once across threads, paths under kMaxPathBytes;
  // beyond that the file is simply not registered). The first guard installs the handlers.
  explicit TempFileGuard(const std::string& path);
  // Unregisters it; does not remove it (the writer renamed or removed it).
  ~TempFileGuard();
  TempFileGuard(const TempFileGuard&) = delete;
  TempFileGuard& operator=(const TempFileGuard&) = delete;

  static constexpr int kMaxTempFiles = 64;
  static constexpr int kMaxPathBytes = 4096;

  // Whether this guard holds a slot (false: too many at once, or the path is too long).
  bool registered() const { return slot_ >= 0; }

 private:
  int slot_ = -1;
};

// Removes every registered temporary now. Async-signal-safe: for a handler that ends the process
// itself (_exit) while a write may be under way.
void RemoveTempFilesNow();

}  // namespace hetsynth
