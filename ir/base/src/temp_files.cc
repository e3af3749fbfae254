// TempFileGuard (hetsynth/base/temp_files.h). The handler may run on any thread at any moment, so
// the registry is a fixed array of slots whose state moves by atomics, and the handler calls only
// async-signal-safe functions (unlink, sigaction, raise).
#include "hetsynth/base/temp_files.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>

namespace hetsynth {
namespace {

// A slot is free (0), being filled by its owner (1), or holds a path (2).
struct Slot {
  std::atomic<int> state{0};
  char path[TempFileGuard::kMaxPathBytes];
};
Slot g_slots[TempFileGuard::kMaxTempFiles];

constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP};
struct sigaction g_previous[3];

void OnSignal(int sig, siginfo_t* info, void* context) {
  for (Slot& s : g_slots) {
    if (s.state.load(std::memory_order_acquire) == 2) ::unlink(s.path);
  }
  for (size_t i = 0; i < 3; ++i) {
    if (kSignals[i] != sig) continue;
    const struct sigaction& prev = g_previous[i];
    if (prev.sa_flags & SA_SIGINFO) {
      if (prev.sa_sigaction != nullptr) prev.sa_sigaction(sig, info, context);
      return;
    }
    if (prev.sa_handler == SIG_IGN) return;
    if (prev.sa_handler != SIG_DFL) {
      prev.sa_handler(sig);
      return;
    }
    // The default action, as if nothing had been installed: restore it and deliver again (the
    // signal is blocked inside its handler, so it arrives when this returns).
    ::sigaction(sig, &prev, nullptr);
    ::raise(sig);
    return;
  }
}

void InstallOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = OnSignal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < 3; ++i) ::sigaction(kSignals[i], &sa, &g_previous[i]);
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
  g_slots[slot_].state.store(0, std::memory_order_release);
}

}  // namespace hetsynth
