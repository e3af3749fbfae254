// Host tensors of the CPU runtime: a dense row-major fp32 array with a static shape, stored in
// the caching host allocator (host_allocator.h: 64-byte aligned, reused across steps).
//
//   Tensor t({2, 3});          // zero-filled
//   t.at({1, 2}) = 5.0f;
#pragma once

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "hetsynth/ir/graph.h"
#include "hetsynth/runtime/host_allocator.h"

namespace hetsynth::runtime {

struct Tensor {
  ir::Shape shape;
  HostVector data;  // row-major, NumElements(shape) entries, from the caching host allocator

  Tensor() = default;
  explicit Tensor(ir::Shape s, float fill = 0.0f)
      : shape(std::move(s)), data(static_cast<size_t>(ir::NumElements(shape)), fill) {}

  // A tensor whose contents are unspecified, for buffers that are overwritten whole (collective
  // staging): no zero-fill.
  static Tensor Uninitialized(ir::Shape s) {
    Tensor t;
    t.data.resize(static_cast<size_t>(ir::NumElements(s)));
    t.shape = std::move(s);
    return t;
  }

  int64_t numel() const { return static_cast<int64_t>(data.size()); }
  int64_t dim(int64_t i) const {
    return shape[static_cast<size_t>(i < 0 ? i + static_cast<int64_t>(shape.size()) : i)];
  }
  int64_t rank() const { return static_cast<int64_t>(shape.size()); }
  float* ptr() { return data.data(); }
  const float* ptr() const { return data.data(); }
  float& at(std::initializer_list<int64_t> idx) { return data[Offset(idx)]; }
  float at(std::initializer_list<int64_t> idx) const { return data[Offset(idx)]; }
  void Fill(float v) { std::fill(data.begin(), data.end(), v); }

 private:
  size_t Offset(std::initializer_list<int64_t> idx) const {
    size_t off = 0, d = 0;
    for (int64_t i : idx) off = off * static_cast<size_t>(shape[d++]) + static_cast<size_t>(i);
    return off;
  }
};

}  // namespace hetsynth::runtime
