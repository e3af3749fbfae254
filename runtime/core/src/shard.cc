#include "hetsynth/runtime/shard.h"

#include <algorithm>

#include "hetsynth/base/status.h"

namespace hetsynth::runtime {

ir::Shape WithDim(ir::Shape s, int dim, int64_t len) {
  s[static_cast<size_t>(dim)] = len;
  return s;
}

Around AroundDim(const ir::Shape& s, int dim) {
  Around a;
  for (int i = 0; i < dim; ++i) a.outer *= s[static_cast<size_t>(i)];
  a.len = s[static_cast<size_t>(dim)];
  for (size_t i = static_cast<size_t>(dim) + 1; i < s.size(); ++i) a.inner *= s[i];
  return a;
}

std::vector<float> PackAlong(const Tensor& x, int d, const std::vector<int64_t>& lengths) {
  const Around a = AroundDim(x.shape, d);
  std::vector<float> out(static_cast<size_t>(x.numel()));
  float* dst = out.data();
  int64_t off = 0;
  for (int64_t len : lengths) {
    for (int64_t o = 0; o < a.outer; ++o) {
      const float* src = x.ptr() + (o * a.len + off) * a.inner;
      dst = std::copy(src, src + len * a.inner, dst);
    }
    off += len;
  }
  return out;
}

Tensor UnpackAlong(const float* packed, const ir::Shape& shape, int d, const std::vector<int64_t>& lengths) {
  Tensor out(shape);
  const Around a = AroundDim(shape, d);
  const float* src = packed;
  int64_t off = 0;
  for (int64_t len : lengths) {
    for (int64_t o = 0; o < a.outer; ++o) {
      std::copy(src, src + len * a.inner, out.ptr() + (o * a.len + off) * a.inner);
      src += len * a.inner;
    }
    off += len;
  }
  return out;
}

int64_t Offset(const std::vector<int64_t>& lengths, int rank) {
  int64_t off = 0;
  for (int r = 0; r < rank; ++r) off += lengths[static_cast<size_t>(r)];
  return off;
}

Tensor Slice(const Tensor& x, int dim, int64_t start, int64_t length) {
  HS_CHECK(dim >= 0 && dim < x.rank() && start >= 0 && length >= 0 && start + length <= x.dim(dim),
           StrCat("slice [", start, ", ", start + length, ") of dim ", dim, " of ", ir::ShapeString(x.shape)));
  ir::Shape shape = x.shape;
  shape[static_cast<size_t>(dim)] = length;
  Tensor out = Tensor::Uninitialized(shape);  // every element is copied below
  const Around a = AroundDim(x.shape, dim);
  for (int64_t o = 0; o < a.outer; ++o) {
    const float* src = x.ptr() + (o * a.len + start) * a.inner;
    std::copy(src, src + length * a.inner, out.ptr() + o * length * a.inner);
  }
  return out;
}

void Place(const Tensor& part, int dim, int64_t start, Tensor& full) {
  const Around a = AroundDim(full.shape, dim);
  const int64_t length = part.dim(dim);
  HS_CHECK(start >= 0 && start + length <= a.len && part.numel() == a.outer * length * a.inner,
           StrCat("place ", ir::ShapeString(part.shape), " at ", start, " of dim ", dim, " in ", ir::ShapeString(full.shape)));
  for (int64_t o = 0; o < a.outer; ++o) {
    const float* src = part.ptr() + o * length * a.inner;
    std::copy(src, src + length * a.inner, full.ptr() + (o * a.len + start) * a.inner);
  }
}

Tensor Concat(const std::vector<Tensor>& parts, int dim) {
  HS_CHECK(!parts.empty(), "concat of no parts");
  ir::Shape shape = parts.front().shape;
  shape[static_cast<size_t>(dim)] = 0;
  for (const Tensor& p : parts) shape[static_cast<size_t>(dim)] += p.dim(dim);
  Tensor full(shape);
  int64_t start = 0;
  for (const Tensor& p : parts) {
    Place(p, dim, start, full);
    start += p.dim(dim);
  }
  return full;
}

Tensor SliceBox(const Tensor& x, const std::vector<instr::Cut>& cuts) {
  if (cuts.empty()) return x;
  Tensor out = Slice(x, cuts[0].dim, cuts[0].start, cuts[0].len);
  for (size_t i = 1; i < cuts.size(); ++i) out = Slice(out, cuts[i].dim, cuts[i].start, cuts[i].len);
  return out;
}

void PlaceBox(const Tensor& part, const std::vector<instr::Cut>& cuts, Tensor& full) {
  if (cuts.empty()) {
    full = part;
    return;
  }
  if (cuts.size() == 1) return Place(part, cuts[0].dim, cuts[0].start, full);
  // The slab of the first cut, with the rest of the box placed into it, back into full.
  Tensor slab = Slice(full, cuts[0].dim, cuts[0].start, cuts[0].len);
  PlaceBox(part, std::vector<instr::Cut>(cuts.begin() + 1, cuts.end()), slab);
  Place(slab, cuts[0].dim, cuts[0].start, full);
}

std::vector<float> DimMajor(const Tensor& x, int dim) {
  const Around a = AroundDim(x.shape, dim);
  std::vector<float> out(static_cast<size_t>(x.numel()));
  for (int64_t o = 0; o < a.outer; ++o) {
    for (int64_t l = 0; l < a.len; ++l) {
      const float* src = x.ptr() + (o * a.len + l) * a.inner;
      std::copy(src, src + a.inner, out.data() + (l * a.outer + o) * a.inner);
    }
  }
  return out;
}

void FromDimMajor(const float* src, int dim, Tensor& x) {
  const Around a = AroundDim(x.shape, dim);
  for (int64_t o = 0; o < a.outer; ++o) {
    for (int64_t l = 0; l < a.len; ++l) {
      const float* from = src + (l * a.outer + o) * a.inner;
      std::copy(from, from + a.inner, x.ptr() + (o * a.len + l) * a.inner);
    }
  }
}

}  // namespace hetsynth::runtime
