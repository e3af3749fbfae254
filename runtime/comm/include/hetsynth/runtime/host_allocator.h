// The caching host allocator behind every host tensor (Tensor::data), saved activation, gradient
// and collective staging buffer of the CPU runtime.
//
// A training step allocates the same buffers in the same order every step. Handing large blocks
// back to the C library between steps makes it return them to the OS, and every step then faults
// the same pages in again (tens of thousands of page faults per step). This cache keeps freed
// blocks in free lists keyed by size and hands them out again, so after the first steps a step
// takes no fresh pages at all.
//
//   HostVector v(n, 0.0f);           // std::vector<float> whose storage comes from the cache
//                                    // (HostVector(n) leaves the floats uninitialized)
//   void* p = HostAlloc(bytes);      // 64-byte aligned; HostFree(p) gives it back
//
// Blocks are 64-byte aligned (the alignment Eigen's aligned GEMM maps want). A request is served
// by the smallest cached block of at least its size and at most 1/8 larger; otherwise by a fresh
// block. The cache never holds more than 1/16 above the program's high-water mark of bytes in use
// at once (HostCacheStats::peak_live; 1/4 once several threads allocate — thread ranks interleave
// their allocations differently every step), or more once it has had to take a fresh block that
// a block it released would have served (HostCacheStats::regret_bytes: the slack grows by each
// such block, up to half the peak, so a step cycling through a few sizes settles): before taking
// a fresh block, cached blocks are released, largest first, until cached + in use + the new
// block fit under that bound — unless a cached block up to twice the request can serve it
// instead (its pages are resident already). Blocks
// of 128 KiB and more are mapped from the OS, so released memory leaves the process. One mutex
// guards the cache: thread ranks share it safely.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

namespace hetsynth::runtime {

inline constexpr size_t kHostAlignment = 64;

// `bytes` (rounded up to 64) of 64-byte-aligned memory, uninitialized; never nullptr (throws
// std::bad_alloc when the system has no memory). HostAlloc(0) returns a valid unique block.
void* HostAlloc(size_t bytes);
// Returns a block from HostAlloc to the cache (nullptr: nothing).
void HostFree(void* p);

struct HostCacheStats {
  int64_t live_bytes = 0;    // handed out and not yet freed
  int64_t peak_live = 0;     // high-water mark of live_bytes (the cache's bound)
  int64_t cached_bytes = 0;  // freed and kept for reuse
  int64_t hits = 0;          // requests served from the cache
  int64_t misses = 0;        // requests that took a fresh block from the C library
  int64_t released = 0;      // cached blocks given back to the C library to stay under the bound
  int64_t regret_bytes = 0;  // slack learned above the peak: fresh blocks a released one would
                             // have served (at most peak_live / 2)
};
HostCacheStats GetHostCacheStats();

// Gives every cached block back to the C library (the blocks in use stay) and forgets the
// learned slack (HostCacheStats::regret_bytes).
void TrimHostCache();

// std::allocator-compatible and stateless: every HostAllocator is interchangeable, so moving and
// swapping vectors never copies.
template <class T>
struct HostAllocator {
  using value_type = T;
  HostAllocator() noexcept = default;
  template <class U>
  HostAllocator(const HostAllocator<U>&) noexcept {}  // NOLINT(google-explicit-constructor)
  T* allocate(size_t n) {
    if (n > SIZE_MAX / sizeof(T)) throw std::bad_alloc();
    return static_cast<T*>(HostAlloc(n * sizeof(T)));
  }
  void deallocate(T* p, size_t) noexcept { HostFree(p); }
  // Elements made without a value are default-initialized: HostVector(n) and resize(n) leave
  // floats uninitialized (buffers about to be overwritten whole skip a memset); pass a value,
  // as in HostVector(n, 0.0f), to fill.
  template <class U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  template <class U>
  bool operator==(const HostAllocator<U>&) const noexcept {
    return true;
  }
};

using HostVector = std::vector<float, HostAllocator<float>>;

// Element-wise comparison with a plain vector (found by argument-dependent lookup), for tests
// and checks that hold expected values in std::vector<float>.
inline bool operator==(const HostVector& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

}  // namespace hetsynth::runtime
