// Snapshots for elastic training (docs/elastic.md): every rank keeps, at a step boundary, the
// pieces of the training state it holds (its slices of sharded parameters and their optimizer
// state; whole replicated tensors for the ones it owns) and a copy of its buddy's — the rank
// before it, ring order — so that losing any one rank loses nothing. The survivors' snapshots
// assemble into a checkpoint of full tensors (Checkpoint, training.h), from which any plan for
// any membership restores its own pieces.
//
//   HS_ASSIGN_OR_RETURN(RankSnapshot mine, executor->Snapshot());   // collective
//   ... rank 2 is lost ...
//   HS_ASSIGN_OR_RETURN(Checkpoint ck, AssembleSnapshot({s0, s1, s3}, shapes));
//   HS_RETURN_IF_ERROR(new_executor->Restore(ck));
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "hetsynth/ir/graph.h"
#include "hetsynth/runtime/optimizer.h"
#include "hetsynth/runtime/tensor.h"
#include "hetsynth/runtime/training.h"

namespace hetsynth::runtime {

// A slice [offset, offset + data.dim(dim)) along `dim` of the tensor `key` (a parameter or an
// optimizer state tensor "param.exp_avg"), or the whole tensor when dim < 0.
struct SnapshotPiece {
  std::string key;
  int dim = -1;
  int64_t offset = 0;
  Tensor data;
};

// What one rank keeps: its own pieces and its buddy's, all at optimizer step `step`.
struct RankSnapshot {
  int64_t step = 0;
  int rank = 0;                      // the rank that holds it
  std::vector<std::string> keys;     // every tensor of the training state, sorted (the same on every rank)
  std::vector<SnapshotPiece> pieces;
};

// Which rank keeps a replicated (whole) tensor: one owner per tensor, spread over the ranks by
// the tensor's place in the sorted list of keys.
int SnapshotOwner(size_t key_index, int ranks);

// The full tensors from the survivors' snapshots: each tensor of `shapes` (the parameters) and
// each optimizer state tensor must be covered completely by pieces of one step — the newest step
// every survivor has. FailedPrecondition naming the first tensor that is not (two neighbouring
// ranks lost, say).
absl::StatusOr<Checkpoint> AssembleSnapshot(const std::vector<RankSnapshot>& survivors,
                                            const std::map<std::string, ir::Shape>& shapes);

// A rank's snapshot as one file (safetensors; each piece "<i>" with its key, dim and offset in
// the metadata), written atomically, and back. Reading refuses a piece with a non-finite value,
// naming the file (elastic resumes then fall back past it, as past a torn file).
absl::Status WriteRankSnapshot(const std::string& path, const RankSnapshot& s);
absl::StatusOr<RankSnapshot> ReadRankSnapshot(const std::string& path);

}  // namespace hetsynth::runtime
