// GPU layout operators against the CPU kernels (gpu_op_check.h).
#include <vector>

#include "gpu_op_check.h"
#include "ops/layout.h"

namespace hetsynth::runtime::testing {
namespace {

template <class X>
using GpuLayoutTest = GpuOpTest<X>;
TYPED_TEST_SUITE(GpuLayoutTest, GpuExecutors);

using ir::OpKind;
using ir::Shape;

ir::Attrs AxisAttrs(int64_t axis, int64_t axis2 = -2) {
  ir::Attrs a;
  a.axis = axis;
  a.axis2 = axis2;
  return a;
}

// Integer ids in [0, vocab) (as floats), with repeats, into a case for embedding.
OpCase EmbeddingCase(const Shape& ids, int64_t vocab, int64_t c, uint32_t seed) {
  OpCase e = RandomCase(OpKind::kEmbedding, {ids, {vocab, c}}, {}, seed);
  for (size_t n = 0; n < e.inputs[0].data.size(); ++n) {
    e.inputs[0].data[n] = static_cast<float>((n * 5 + seed) % static_cast<size_t>(vocab));
  }
  if (e.inputs[0].numel() > 2) e.inputs[0].data[1] = e.inputs[0].data[0];  // a repeated id
  return e;
}

TYPED_TEST(GpuLayoutTest, Embedding) {
  using X = TypeParam;
  struct Dims {
    Shape ids;
    int64_t vocab, c;
  };
  uint32_t seed = 1;
  for (const Dims& d : {Dims{{5}, 7, 4}, Dims{{2, 3}, 11, 9}, Dims{{1}, 1, 1}, Dims{{3, 1, 4}, 5, 1},
                        Dims{{17}, 3, 33}}) {
    ExpectMatchesCpu(this->x(), EmbeddingCase(d.ids, d.vocab, d.c, seed++), &gpu::EmbeddingForward<X>,
                     &gpu::EmbeddingBackward<X>);
  }
}

// The table is a row-piece [start, start + rows) of a [vocab, c] table: ids outside the piece
// give zero rows and no gradient.
TYPED_TEST(GpuLayoutTest, EmbeddingShard) {
  using X = TypeParam;
  struct Piece {
    Shape ids;
    int64_t vocab, c, start, rows;
  };
  uint32_t seed = 3;
  for (const Piece& p : {Piece{{4, 5}, 10, 6, 0, 4}, Piece{{4, 5}, 10, 6, 4, 3}, Piece{{4, 5}, 10, 6, 7, 3},
                         Piece{{9}, 9, 1, 8, 1}, Piece{{2, 3}, 7, 5, 0, 7}, Piece{{1}, 2, 3, 1, 1}}) {
    OpCase e = EmbeddingCase(p.ids, p.vocab, p.c, seed++);
    e.inputs[1] = RandomTensor({p.rows, p.c}, seed * 13);
    e.has_shard = true;
    e.shard = {{p.vocab, p.c}, 0, p.start};
    ExpectMatchesCpu(this->x(), e, &gpu::EmbeddingForward<X>, &gpu::EmbeddingBackward<X>);
  }
}

// Ids that are no row indices: the CPU kernel aborts, and so does HostExec (a GPU build checks
// them in debug builds only; see layout.h).
TYPED_TEST(GpuLayoutTest, EmbeddingRejectsBadIds) {
  using X = TypeParam;
  if constexpr (X::kOnGpu) {
    GTEST_SKIP() << "the GPU reads the ids back only in debug builds";
  } else {
    for (float bad : {-1.0f, 7.0f, 2.5f, 100.0f}) {
      OpCase e = EmbeddingCase({4}, 7, 3, 1);
      e.inputs[0].data[2] = bad;
      const ir::Node node = CaseNode(e);
      KernelContext ctx;
      std::vector<const Tensor*> in = {&e.inputs[0], &e.inputs[1]};
      Tensor out({4, 3});
      gpu::Saved<X> saved;
      EXPECT_DEATH(gpu::EmbeddingForward<X>(this->x(), node, ctx, in, out, saved), "not row indices");
    }
  }
}

TYPED_TEST(GpuLayoutTest, Flatten) {
  using X = TypeParam;
  struct C {
    Shape s;
    int64_t axis;
  };
  uint32_t seed = 1;
  for (const C& c : {C{{2, 3, 4}, 1}, C{{2, 3, 4}, -1}, C{{2, 3, 4}, 0}, C{{1, 5, 1, 3}, 2}, C{{7}, 0}}) {
    ExpectMatchesCpu(this->x(), RandomCase(OpKind::kFlatten, {c.s}, AxisAttrs(c.axis), seed++),
                     &gpu::FlattenForward<X>, &gpu::FlattenBackward<X>);
  }
}

TYPED_TEST(GpuLayoutTest, Reshape) {
  using X = TypeParam;
  struct C {
    Shape from, to;
  };
  uint32_t seed = 1;
  for (const C& c : {C{{2, 3, 4}, {4, 6}}, C{{2, 3, 4}, {24}}, C{{2, 3, 4}, {1, 24, 1}}, C{{5, 1}, {1, 5}},
                     C{{1}, {1, 1, 1}}, C{{3, 7}, {7, 3}}}) {
    ir::Attrs a;
    a.shape = c.to;
    ExpectMatchesCpu(this->x(), RandomCase(OpKind::kReshape, {c.from}, a, seed++), &gpu::ReshapeForward<X>,
                     &gpu::ReshapeBackward<X>);
  }
}

TYPED_TEST(GpuLayoutTest, Transpose) {
  using X = TypeParam;
  struct C {
    Shape s;
    int64_t a, b;
  };
  uint32_t seed = 1;
  for (const C& c : {C{{2, 3, 4}, 0, 1}, C{{2, 3, 4}, 0, 2}, C{{2, 3, 4}, 1, 2}, C{{2, 3, 4}, -1, -2},
                     C{{2, 3, 4}, 2, 0}, C{{2, 3, 4}, 1, 1}, C{{3, 1}, 0, 1}, C{{1, 5, 1, 3}, 1, 3},
                     C{{2, 3, 4, 5, 2}, 1, 3}, C{{3, 2, 1, 5, 3}, 0, 4}, C{{33, 35}, 0, 1}, C{{6}, 0, 0}}) {
    ExpectMatchesCpu(this->x(), RandomCase(OpKind::kTranspose, {c.s}, AxisAttrs(c.a, c.b), seed++),
                     &gpu::TransposeForward<X>, &gpu::TransposeBackward<X>);
  }
}

TYPED_TEST(GpuLayoutTest, Concat) {
  using X = TypeParam;
  struct C {
    std::vector<Shape> in;
    int64_t axis;
  };
  uint32_t seed = 1;
  for (const C& c : {C{{{2, 3, 4}, {2, 5, 4}}, 1}, C{{{2, 3, 4}, {2, 3, 1}, {2, 3, 7}}, -1},
                     C{{{1, 3}, {4, 3}, {2, 3}}, 0}, C{{{3, 2}}, 1}, C{{{1, 1}, {1, 1}}, 1},
                     C{{{2, 1, 3, 2}, {2, 4, 3, 2}}, 1}, C{{{5}, {1}, {3}, {2}}, 0}}) {
    ExpectMatchesCpu(this->x(), RandomCase(OpKind::kConcat, c.in, AxisAttrs(c.axis), seed++),
                     &gpu::ConcatForward<X>, &gpu::ConcatBackward<X>);
  }
}

TYPED_TEST(GpuLayoutTest, Slice) {
  using X = TypeParam;
  struct C {
    Shape s;
    int64_t axis, start, length;
  };
  uint32_t seed = 1;
  for (const C& c : {C{{4, 7}, 1, 2, 3}, C{{4, 7}, 0, 3, 1}, C{{4, 7}, -1, 0, 7}, C{{2, 5, 3}, -2, 4, 1},
                     C{{2, 5, 3}, 2, 1, 2}, C{{1, 9}, 1, 0, 1}, C{{3, 1, 2}, 1, 0, 1}, C{{11}, 0, 5, 6}}) {
    ir::Attrs a = AxisAttrs(c.axis);
    a.start = c.start;
    a.length = c.length;
    ExpectMatchesCpu(this->x(), RandomCase(OpKind::kSlice, {c.s}, a, seed++), &gpu::SliceForward<X>,
                     &gpu::SliceBackward<X>);
  }
}

}  // namespace
}  // namespace hetsynth::runtime::testing
