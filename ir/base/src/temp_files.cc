// TempFileGuard (hetsynth/base/temp_files.h). The handler may run on any thread at any moment, so
// the registry is a fixed array of slots whose state moves by atomics, and the handler calls only
// async-signal-safe functions (memcpy, unlink, sigaction, raise).
#include "hetsynth/base/temp_files.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>

namespace hetsynth {
namespace {

// A slot is free (0), being filled by its owner (1), or holds a path (2).
// `generation` changes whenever a slot's path is given up, so a handler that copied a path can
// tell that the slot was emptied (and perhaps refilled) meanwhile.
struct Slot {
  std::atomic<int> state{0};
  std::atomic<unsigned> generation{0};
  char path[TempFileGuard::kMaxPathBytes];
};
Slot g_slots[TempFileGuard::kMaxTempFiles];

constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP};
struct sigaction g_previous[3];

}  // namespace

void RemoveTempFilesNow() {
  char path[TempFileGuard::kMaxPathBytes];
  for (Slot& s : g_slots) {
    const unsigned generation = s.generation.load(std::memory_order_acquire);
    if (s.state.load(std::memory_order_acquire) != 2) continue;
    std::memcpy(path, s.path, sizeof path);
    path[sizeof path - 1] = '\0';
    // Still the same registration: the copy is whole (not half of a path written over it).
    if (s.state.load(std::memory_order_acquire) == 2 && s.generation.load(std::memory_order_acquire) == generation) {
      ::unlink(path);
    }
  }
}

namespace {

void OnSignal(int sig, siginfo_t* info, void* context) {
  for (size_t i = 0; i < 3; ++i) {
    if (kSignals[i] != sig) continue;
    const struct sigaction& prev = g_previous[i];
    if (prev.sa_flags & SA_SIGINFO) {
      // Someone else's handler decides what the signal does (it may let the process go on and
      // finish the write — an elastic worker holding SIGTERM through a snapshot): theirs alone.
      if (prev.sa_sigaction != nullptr) prev.sa_sigaction(sig, info, context);
      return;
    }
    if (prev.sa_handler != SIG_DFL) {
      prev.sa_handler(sig);
      return;
    }
    // The default action ends the process: remove the temporaries, restore the default and
    // deliver the signal again (it is blocked inside its handler, so it arrives on return).
    RemoveTempFilesNow();
    ::sigaction(sig, &prev, nullptr);
    ::raise(sig);
    return;
  }
}

void InstallOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    for (size_t i = 0; i < 3; ++i) {
      if (::sigaction(kSignals[i], nullptr, &g_previous[i]) != 0) continue;
      // An ignored signal ends nothing, so there is nothing to clean up; leaving it ignored also
      // keeps it from interrupting anything (a handler would make blocked calls fail with EINTR).
      if (!(g_previous[i].sa_flags & SA_SIGINFO) && g_previous[i].sa_handler == SIG_IGN) continue;
      struct sigaction sa {};
      sa.sa_sigaction = OnSignal;
      // The previous handler's restart behaviour: a handler that relies on interrupted waits
      // returning early (EINTR) keeps it.
      sa.sa_flags = SA_SIGINFO | (g_previous[i].sa_flags & SA_RESTART);
      sigemptyset(&sa.sa_mask);
      ::sigaction(kSignals[i], &sa, nullptr);
    }
  });
}

}  // namespace

TempFileGuard::TempFileGuard(const std::string& path) {
  if (path.empty() || path.size() >= static_cast<size_t>(kMaxPathBytes) || path.find('\0') != std::string::npos) return;
  InstallOnce();
  for (int i = 0; i < kMaxTempFiles; ++i) {
    int expected = 0;
    if (!g_slots[i].state.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) continue;
    std::memcpy(g_slots[i].path, path.c_str(), path.size() + 1);
    g_slots[i].state.store(2, std::memory_order_release);
    slot_ = i;
    return;
  }
}

TempFileGuard::~TempFileGuard() {
  if (slot_ < 0) return;
  g_slots[slot_].generation.fetch_add(1, std::memory_order_acq_rel);
  g_slots[slot_].state.store(0, std::memory_order_release);
}

}  // namespace hetsynth
