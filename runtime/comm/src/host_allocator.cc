// The caching host allocator (host_allocator.h): free lists keyed by block size under one mutex.
#include "hetsynth/runtime/host_allocator.h"

#include <algorithm>
#include <cstdlib>
#include <iterator>
#include <map>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#include <sys/mman.h>

namespace hetsynth::runtime {
namespace {

// Every block carries its capacity in a header of kHostAlignment bytes in front of the memory it
// hands out, which keeps the handed-out pointer 64-byte aligned.
constexpr size_t kHeader = kHostAlignment;
constexpr size_t kMapThreshold = size_t{128} << 10;  // blocks of at least this many bytes are mmap'ed

size_t& Capacity(void* p) { return *reinterpret_cast<size_t*>(static_cast<char*>(p) - kHeader); }

class HostCache {
 public:
  void* Alloc(size_t bytes) {
    const size_t need = RoundUp(bytes == 0 ? 1 : bytes);
    {
      std::lock_guard<std::mutex> lock(mu_);
      // The smallest cached block that fits and wastes at most 1/8 of the request.
      auto it = free_.lower_bound(need);
      if (it != free_.end() && it->first <= need + need / 8) {
        return TakeLocked(it);
      }
      // A fresh block: first release cached blocks, largest first, until the cache, the blocks in
      // use and the new one fit under the high-water mark of bytes in use (plus 1/16, or 1/4 once
      // several threads allocate). When that would release anything, a cached block up to twice
      // the request serves it instead: its pages are resident already, and releasing one block to
      // map another would fault them in.
      //
      // Thread ranks interleave their allocations differently every step, so a cache they share
      // needs more room above the high-water mark to settle: at 1/16 an overlapped 4-rank plan
      // (gpt on mixed-4) kept missing ~35 blocks and faulting ~2,500 pages in every step, at 1/4
      // none after its fifth step. One thread keeps 1/16 (at 1/4 its peak memory grows ~4%).
      const std::thread::id me = std::this_thread::get_id();
      if (owner_ == std::thread::id()) owner_ = me;
      shared_ = shared_ || owner_ != me;
      const int64_t in_use = stats_.live_bytes + static_cast<int64_t>(need);
      NoteRegretLocked(need);
      const int64_t slack = std::max(stats_.peak_live / (shared_ ? 4 : 16), stats_.regret_bytes);
      const int64_t bound = std::max(stats_.peak_live + slack, in_use);
      if (in_use + stats_.cached_bytes > bound && it != free_.end() && it->first <= 2 * need) {
        return TakeLocked(it);
      }
      while (stats_.cached_bytes > 0 && in_use + stats_.cached_bytes > bound) ReleaseLargestLocked();
      stats_.live_bytes = in_use;
      stats_.peak_live = std::max(stats_.peak_live, in_use);
      stats_.misses++;
    }
    void* base = SystemAlloc(need);
    if (base == nullptr) {
      // Give the cache back and try once more before failing.
      TrimAll();
      base = SystemAlloc(need);
      if (base == nullptr) {
        std::lock_guard<std::mutex> lock(mu_);
        stats_.live_bytes -= static_cast<int64_t>(need);
        throw std::bad_alloc();
      }
    }
    void* p = static_cast<char*>(base) + kHeader;
    Capacity(p) = need;
    return p;
  }

  void Free(void* p) {
    if (p == nullptr) return;
    const size_t cap = Capacity(p);
    std::lock_guard<std::mutex> lock(mu_);
    stats_.live_bytes -= static_cast<int64_t>(cap);
    stats_.cached_bytes += static_cast<int64_t>(cap);
    free_[cap].push_back(p);
  }

  HostCacheStats Stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

  // Also forgets the slack learned from regrets: trimming starts the cache over.
  void TrimAll() {
    std::lock_guard<std::mutex> lock(mu_);
    while (stats_.cached_bytes > 0) ReleaseLargestLocked(/*remember=*/false);
    released_.clear();
    stats_.regret_bytes = 0;
  }

 private:
  static size_t RoundUp(size_t bytes) {
    if (bytes > SIZE_MAX - 2 * kHostAlignment) throw std::bad_alloc();
    return (bytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment;
  }

  using FreeLists = std::map<size_t, std::vector<void*>>;

  // Hands out a cached block of free list `it`.
  void* TakeLocked(FreeLists::iterator it) {
    void* p = it->second.back();
    it->second.pop_back();
    if (it->second.empty()) free_.erase(it);
    stats_.cached_bytes -= static_cast<int64_t>(Capacity(p));
    stats_.live_bytes += static_cast<int64_t>(Capacity(p));
    stats_.hits++;
    if (stats_.live_bytes > stats_.peak_live) stats_.peak_live = stats_.live_bytes;
    return p;
  }

  // A fresh block of `need` bytes that a block released earlier would have served (at most 1/8
  // larger) is a regret: the bound made the cache give back a block the program still uses. A
  // step that cycles through blocks of a few sizes can do that every step, releasing one size to
  // map another and back (mlp at batch 186: ~2,400 page faults per step at 1/16 above the peak),
  // so each regret raises the slack above the peak by the block's size, up to half the peak: the
  // cache grows just enough for the cycle to fit and then takes no fresh pages.
  void NoteRegretLocked(size_t need) {
    auto r = released_.lower_bound(need);
    if (r == released_.end() || r->first > need + need / 8) return;
    if (--r->second == 0) released_.erase(r);
    stats_.regret_bytes = std::min(stats_.peak_live / 2, stats_.regret_bytes + static_cast<int64_t>(need));
  }

  // `remember`: a release to stay under the bound (NoteRegretLocked watches for its size); not
  // when trimming, which gives everything back on purpose.
  void ReleaseLargestLocked(bool remember = true) {
    // (Capacity is read before the block is unmapped.)
    auto it = std::prev(free_.end());
    void* p = it->second.back();
    it->second.pop_back();
    if (it->second.empty()) free_.erase(it);
    stats_.cached_bytes -= static_cast<int64_t>(Capacity(p));
    stats_.released++;
    // Remember what was given back (a bounded record: a program of ever new sizes drops it).
    if (remember) {
      if (released_.size() >= kMaxReleasedSizes) released_.clear();
      released_[Capacity(p)]++;
    }
    SystemFree(static_cast<char*>(p) - kHeader, Capacity(p));
  }

  // Large blocks are mapped from the OS and unmapped on release, so that memory the cache gives
  // back leaves the process (the C library would keep it in its heap and fragment it); small
  // ones come from the C library.
  static void* SystemAlloc(size_t capacity) {
    if (capacity < kMapThreshold) return std::aligned_alloc(kHostAlignment, capacity + kHeader);
    void* base = mmap(nullptr, capacity + kHeader, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return base == MAP_FAILED ? nullptr : base;
  }
  static void SystemFree(void* base, size_t capacity) {
    if (capacity < kMapThreshold) {
      std::free(base);
    } else {
      munmap(base, capacity + kHeader);
    }
  }

  std::mutex mu_;
  std::thread::id owner_;  // the first thread to allocate
  bool shared_ = false;    // another thread has allocated too
  FreeLists free_;  // capacity -> cached blocks of that capacity
  static constexpr size_t kMaxReleasedSizes = 1024;
  std::map<size_t, int64_t> released_;  // capacity -> blocks released and not yet regretted
  HostCacheStats stats_;
};

// Never destroyed: tensors in static storage may be freed after every other static object.
HostCache& Cache() {
  static HostCache* cache = new HostCache();
  return *cache;
}

}  // namespace

void* HostAlloc(size_t bytes) { return Cache().Alloc(bytes); }
void HostFree(void* p) { Cache().Free(p); }
HostCacheStats GetHostCacheStats() { return Cache().Stats(); }
void TrimHostCache() { Cache().TrimAll(); }

}  // namespace hetsynth::runtime
