#include "hetsynth/runtime/shard.h"

#include <gtest/gtest.h>

namespace hetsynth::runtime {
namespace {

Tensor Iota(ir::Shape shape) {
  Tensor t(std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data[i] = static_cast<float>(i);
  return t;
}

TEST(Shard, SlicesByUnevenLengthsIncludingZerosAndReassemble) {
  const Tensor full = Iota({2, 7, 3});
  for (int dim = 0; dim < 3; ++dim) {
    const int64_t n = full.dim(dim);
    const std::vector<int64_t> lengths = {n / 2, 0, n - n / 2};
    std::vector<Tensor> parts;
    for (int r = 0; r < 3; ++r) parts.push_back(Slice(full, dim, Offset(lengths, r), lengths[static_cast<size_t>(r)]));
    EXPECT_EQ(parts[1].numel(), 0);
    EXPECT_EQ(Concat(parts, dim).data, full.data) << "dim " << dim;
  }
  const Tensor mid = Slice(full, 1, 2, 3);  // rows 2..4 of each [7,3] block
  EXPECT_EQ(mid.shape, (ir::Shape{2, 3, 3}));
  EXPECT_EQ(mid.at({0, 0, 0}), 6.0f);
  EXPECT_EQ(mid.at({1, 2, 2}), 35.0f);  // full[1][4][2] = 1·21 + 4·3 + 2
}

}  // namespace
}  // namespace hetsynth::runtime
