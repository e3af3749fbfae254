// Tests of the kernels that read KernelContext::shard (dropout, embedding, cross_entropy): each
// runs on every piece of an uneven split (zero-length pieces included), and the pieces'
// forward outputs and gradients must reassemble (or sum) to what the single-device kernel
// gives on the whole tensor. Also: inconsistent ShardInfo fails with a clear message.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "hetsynth/ir/graph.h"
#include "hetsynth/runtime/kernels.h"
#include "hetsynth/runtime/shard.h"
#include "runtime/gradcheck.h"

namespace hetsynth::runtime {
namespace {

using ir::Attrs;
using ir::OpKind;
using ir::Shape;
using testing::MakeNode;

Tensor Random(Shape shape, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Tensor t(std::move(shape));
  for (float& v : t.data) v = normal(rng);
  return t;
}

Tensor Make(Shape shape, std::vector<float> values) {
  Tensor t(std::move(shape));
  EXPECT_EQ(t.numel(), static_cast<int64_t>(values.size()));
  t.data.assign(values.begin(), values.end());
  return t;
}

// |got − want| <= 1e-6 · max(|got|, |want|) elementwise (exact equality for zeros).
void ExpectClose(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.shape, want.shape) << what;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double g = got.data[i], w = want.data[i];
    EXPECT_LE(std::abs(g - w), 1e-6 * std::max(std::abs(g), std::abs(w)))
        << what << " element " << i << ": " << g << " vs " << w;
  }
}

// One forward pass: the kernel on `in` into a zero-filled `out_shape`, with an optional shard.
struct Pass {
  Tensor out;
  SavedState saved;
};

Pass ForwardOn(OpKind kind, const Attrs& attrs, const std::vector<const Tensor*>& in,
            const Shape& out_shape, int64_t step, const ShardInfo* shard) {
  Pass r{Tensor(out_shape), {}};
  KernelContext ctx;
  ctx.step = step;
  ctx.shard = shard;
  runtime::Forward(MakeNode(kind, attrs), ctx, in, r.out, r.saved);
  return r;
}

// The gradient of input `wrt` (the others get none).
Tensor GradOf(OpKind kind, const Attrs& attrs, const std::vector<const Tensor*>& in,
                const Pass& fwd, const Tensor& dout, size_t wrt, int64_t step,
                const ShardInfo* shard) {
  Tensor grad(in[wrt]->shape);
  std::vector<Tensor*> din(in.size(), nullptr);
  din[wrt] = &grad;
  KernelContext ctx;
  ctx.step = step;
  ctx.shard = shard;
  runtime::Backward(MakeNode(kind, attrs), ctx, in, fwd.out, dout, fwd.saved, din);
  return grad;
}

std::string Describe(int dim, const std::vector<int64_t>& lengths) {
  std::ostringstream os;
  os << "dim " << dim << " lengths {";
  for (size_t i = 0; i < lengths.size(); ++i) os << (i ? ", " : "") << lengths[i];
  os << "}";
  return os.str();
}

// Lengths of the pieces along `dim`, in rank order (they sum to the full dim).
struct Split {
  int dim;
  std::vector<int64_t> lengths;
};

// "dim1_2_3_0_1" for a split of dim 1 into lengths {2, 3, 0, 1}.
std::string SplitName(const ::testing::TestParamInfo<Split>& info) {
  std::ostringstream os;
  os << "dim" << info.param.dim;
  for (int64_t l : info.param.lengths) os << "_" << l;
  return os.str();
}

// ---------------------------------------------------------------------------------------------
// Dropout

Attrs DropoutAttrs() {
  Attrs a;
  a.p = 0.3;
  a.seed = 1234;
  return a;
}


class DropoutShardTest : public ::testing::TestWithParam<Split> {};

TEST_P(DropoutShardTest, PiecesDropWhatTheWholeTensorDrops) {
  const auto& [dim, lengths] = GetParam();
  const Attrs a = DropoutAttrs();
  const int64_t step = 5;
  const Tensor x = Random({4, 6, 5}, 1);
  const Tensor dy = Random({4, 6, 5}, 2);
  const Pass whole = ForwardOn(OpKind::kDropout, a, {&x}, x.shape, step, nullptr);
  const Tensor dx_whole = GradOf(OpKind::kDropout, a, {&x}, whole, dy, 0, step, nullptr);

  // The mask really drops something and keeps something, so the comparison means something.
  int64_t dropped = 0;
  for (float v : whole.out.data) dropped += v == 0.0f;
  ASSERT_GT(dropped, 10);
  ASSERT_LT(dropped, x.numel() - 10);

  Tensor y(x.shape), dx(x.shape);
  bool some_piece_differs_locally = false;
  for (int rank = 0; rank < static_cast<int>(lengths.size()); ++rank) {
    const int64_t start = Offset(lengths, rank);
    const Tensor xp = Slice(x, dim, start, lengths[rank]);
    const Tensor dyp = Slice(dy, dim, start, lengths[rank]);
    const ShardInfo shard{x.shape, dim, start};
    const Pass piece = ForwardOn(OpKind::kDropout, a, {&xp}, xp.shape, step, &shard);
    Place(piece.out, dim, start, y);
    Place(GradOf(OpKind::kDropout, a, {&xp}, piece, dyp, 0, step, &shard), dim, start, dx);
    // Without the shard the piece would use its local indices: a different mask.
    if (start > 0 && xp.numel() > 0) {
      const Pass local = ForwardOn(OpKind::kDropout, a, {&xp}, xp.shape, step, nullptr);
      some_piece_differs_locally |= local.out.data != piece.out.data;
    }
  }
  const std::string split = Describe(dim, lengths);
  ExpectClose(y, whole.out, "forward, " + split);
  ExpectClose(dx, dx_whole, "backward, " + split);
  EXPECT_TRUE(some_piece_differs_locally);
}

INSTANTIATE_TEST_SUITE_P(Splits, DropoutShardTest,
                         ::testing::Values(Split{0, {1, 0, 3}},
                                           Split{1, {2, 3, 0, 1}},
                                           Split{2, {0, 3, 2}}),
                         SplitName);

// On a piece too, backward adds into din rather than overwriting it.
TEST(DropoutShardValueTest, BackwardAccumulatesIntoDin) {
  const Attrs a = DropoutAttrs();
  const Tensor x = Random({2, 3, 4}, 3);
  const Tensor dy(Shape{2, 2, 4}, 1.0f);
  const Tensor xp = Slice(x, 1, 1, 2);
  const ShardInfo shard{x.shape, 1, 1};
  const Pass piece = ForwardOn(OpKind::kDropout, a, {&xp}, xp.shape, 0, &shard);
  Tensor dx(xp.shape, 0.5f);
  std::vector<Tensor*> din = {&dx};
  KernelContext ctx;
  ctx.shard = &shard;
  const std::vector<const Tensor*> in = {&xp};
  runtime::Backward(MakeNode(OpKind::kDropout, a), ctx, in, piece.out, dy, piece.saved, din);
  const float scale = static_cast<float>(1.0 / 0.7);
  for (int64_t i = 0; i < xp.numel(); ++i) {
    const bool kept = piece.out.data[i] != 0.0f;
    EXPECT_FLOAT_EQ(dx.data[i], kept ? 0.5f + scale : 0.5f) << i;
  }
}

// ---------------------------------------------------------------------------------------------
// Embedding

TEST(EmbeddingShardTest, TablePiecesSumToTheWholeLookup) {
  const Tensor table = Random({7, 4}, 4);
  // Every row occurs; rows 0, 3 and 6 twice (their gradients accumulate).
  const Tensor ids = Make({2, 5}, {0, 6, 3, 1, 5, 3, 2, 6, 4, 0});
  const Shape out_shape = {2, 5, 4};
  const Tensor dout = Random(out_shape, 5);
  const Pass whole = ForwardOn(OpKind::kEmbedding, {}, {&ids, &table}, out_shape, 0, nullptr);
  const Tensor dtable_whole =
      GradOf(OpKind::kEmbedding, {}, {&ids, &table}, whole, dout, 1, 0, nullptr);

  const std::vector<int64_t> lengths = {3, 0, 4};
  Tensor out(out_shape), dtable(table.shape);
  for (int rank = 0; rank < 3; ++rank) {
    const int64_t start = Offset(lengths, rank);
    const Tensor piece = Slice(table, 0, start, lengths[rank]);
    const ShardInfo shard{table.shape, 0, start};
    const Pass r = ForwardOn(OpKind::kEmbedding, {}, {&ids, &piece}, out_shape, 0, &shard);
    // Rows of ids the piece lacks are zero.
    for (int64_t n = 0; n < ids.numel(); ++n) {
      if (ids.data[n] >= start && ids.data[n] < start + lengths[rank]) continue;
      for (int64_t c = 0; c < 4; ++c) {
        EXPECT_EQ(r.out.data[n * 4 + c], 0.0f) << "rank " << rank << " position " << n;
      }
    }
    for (int64_t i = 0; i < out.numel(); ++i) out.data[i] += r.out.data[i];
    Place(GradOf(OpKind::kEmbedding, {}, {&ids, &piece}, r, dout, 1, 0, &shard), 0, start,
          dtable);
  }
  ExpectClose(out, whole.out, "embedding forward");
  ExpectClose(dtable, dtable_whole, "embedding backward");
}

TEST(EmbeddingShardTest, ForwardOverwritesRowsThePieceLacks) {
  const Tensor table = Random({4, 2}, 6);
  const Tensor piece = Slice(table, 0, 2, 2);
  const Tensor ids = Make({2}, {0, 3});
  const ShardInfo shard{table.shape, 0, 2};
  Tensor out(Shape{2, 2}, 9.0f);
  SavedState saved;
  KernelContext ctx;
  ctx.shard = &shard;
  const std::vector<const Tensor*> in = {&ids, &piece};
  runtime::Forward(MakeNode(OpKind::kEmbedding, {}), ctx, in, out, saved);
  EXPECT_EQ(out.data, (std::vector<float>{0, 0, table.at({3, 0}), table.at({3, 1})}));
}

// ---------------------------------------------------------------------------------------------
// Cross entropy

class CrossEntropyShardTest : public ::testing::TestWithParam<Split> {};

TEST_P(CrossEntropyShardTest, PieceLossesSumToTheWholeLoss) {
  const auto& [dim, lengths] = GetParam();
  const Tensor logits = Random({4, 3, 7}, 7);
  Tensor labels({4, 3});
  for (int64_t i = 0; i < labels.numel(); ++i) labels.data[i] = static_cast<float>((i * 5) % 7);
  const Tensor dloss = Make({}, {1.7f});
  const Pass whole = ForwardOn(OpKind::kCrossEntropy, {}, {&logits, &labels}, {}, 0, nullptr);
  const Tensor dlogits_whole =
      GradOf(OpKind::kCrossEntropy, {}, {&logits, &labels}, whole, dloss, 0, 0, nullptr);

  Tensor loss(Shape{}), dlogits(logits.shape);
  for (int rank = 0; rank < static_cast<int>(lengths.size()); ++rank) {
    const int64_t start = Offset(lengths, rank);
    const Tensor lp = Slice(logits, dim, start, lengths[rank]);
    const Tensor yp = Slice(labels, dim, start, lengths[rank]);
    const ShardInfo shard{logits.shape, dim, start};
    const Pass r = ForwardOn(OpKind::kCrossEntropy, {}, {&lp, &yp}, {}, 0, &shard);
    loss.data[0] += r.out.data[0];
    Place(GradOf(OpKind::kCrossEntropy, {}, {&lp, &yp}, r, dloss, 0, 0, &shard), dim, start,
          dlogits);
  }
  const std::string split = Describe(dim, lengths);
  ExpectClose(loss, whole.out, "loss, " + split);
  ExpectClose(dlogits, dlogits_whole, "dlogits, " + split);
}

INSTANTIATE_TEST_SUITE_P(Splits, CrossEntropyShardTest,
                         ::testing::Values(Split{0, {1, 0, 3}},
                                           Split{0, {2, 2}},
                                           Split{1, {2, 1, 0}},
                                           Split{1, {0, 1, 2}}),
                         SplitName);

// ---------------------------------------------------------------------------------------------
// Inconsistent ShardInfo (HS_CHECK aborts, as the other kernels' programming-error checks do)

void DropoutOn(const Tensor& x, const ShardInfo& shard) {
  ForwardOn(OpKind::kDropout, DropoutAttrs(), {&x}, x.shape, 0, &shard);
}

void DropoutGradOn(const Tensor& x, const ShardInfo& shard) {
  GradOf(OpKind::kDropout, DropoutAttrs(), {&x}, Pass{x, {}}, x, 0, 0, &shard);
}

void EmbeddingOn(const Tensor& ids, const Tensor& table, const ShardInfo& shard) {
  Shape out_shape = ids.shape;
  out_shape.push_back(table.dim(1));
  ForwardOn(OpKind::kEmbedding, {}, {&ids, &table}, out_shape, 0, &shard);
}

void CrossEntropyOn(const Tensor& logits, const Tensor& labels, const ShardInfo& shard) {
  ForwardOn(OpKind::kCrossEntropy, {}, {&logits, &labels}, {}, 0, &shard);
}

TEST(ShardDeathTest, DropoutRejectsInconsistentShard) {
  const Tensor x(Shape{2, 3, 4});
  EXPECT_DEATH(DropoutOn(x, ShardInfo{{2, 12}, 1, 0}), "shard rank 2 differs from piece rank 3");
  EXPECT_DEATH(DropoutOn(x, ShardInfo{{2, 3, 4}, -1, 0}), "shard dim -1 out of range");
  EXPECT_DEATH(DropoutOn(x, ShardInfo{{2, 3, 4}, 3, 0}), "shard dim 3 out of range");
  EXPECT_DEATH(DropoutOn(x, ShardInfo{{2, 5, 4}, 1, 3}),
               "rows \\[3, 6\\) do not fit in the full dim of size 5");
  EXPECT_DEATH(DropoutOn(x, ShardInfo{{2, 5, 4}, 1, -1}), "do not fit");
  EXPECT_DEATH(DropoutOn(x, ShardInfo{{2, 5, 8}, 1, 0}),
               "dim 2 is 4 in the piece but 8 in the full tensor");
  // Backward checks too.
  EXPECT_DEATH(DropoutGradOn(x, ShardInfo{{2, 3, 9}, 1, 0}),
               "dropout 'dropout'.*dim 2 is 4 in the piece but 9");
}

TEST(ShardDeathTest, EmbeddingRejectsBadTablePieceAndIds) {
  const Tensor table = Random({3, 2}, 8);
  const Tensor ids = Make({2}, {0, 1});
  EXPECT_DEATH(EmbeddingOn(ids, table, ShardInfo{{3, 4}, 1, 2}),
               "embedding 'embedding' table.*must be split on dim 0");
  EXPECT_DEATH(EmbeddingOn(ids, table, ShardInfo{{4, 2}, 0, 2}),
               "do not fit in the full dim of size 4");
  // Ids are checked against the full vocabulary, not against the piece's rows.
  const ShardInfo last_rows{{9, 2}, 0, 6};
  EXPECT_DEATH(EmbeddingOn(Make({2}, {8, 9}), table, last_rows),
               "id 9 at position 1 is not a row index in \\[0, 9\\)");
  const Tensor in_vocab = Make({2}, {0, 8});
  const Pass r = ForwardOn(OpKind::kEmbedding, {}, {&in_vocab, &table}, {2, 2}, 0, &last_rows);
  EXPECT_EQ(r.out.data, (std::vector<float>{0, 0, table.at({2, 0}), table.at({2, 1})}));
}

TEST(ShardDeathTest, CrossEntropyRejectsSplitClassDim) {
  const Tensor logits = Random({2, 3}, 9);
  const Tensor labels = Make({2}, {0, 2});
  EXPECT_DEATH(CrossEntropyOn(logits, labels, ShardInfo{{2, 6}, 1, 3}),
               "cross_entropy 'cross_entropy' logits.*is the class dim");
  EXPECT_DEATH(CrossEntropyOn(logits, labels, ShardInfo{{2, 2, 3}, 0, 0}),
               "shard rank 3 differs from piece rank 2");
}

}  // namespace
}  // namespace hetsynth::runtime
