// What every trainer shares — the CPU Trainer (trainer.h), the CUDA backend's device trainer
// and the plan executor on any backend: the initial value of each parameter, and checkpoints of
// full tensors, so that a run moves freely between one device and n ranks, CPU and GPU.
//
//   Tensor w = InitParameter(graph.value(p), /*seed=*/0);
//   HS_RETURN_IF_ERROR(WriteCheckpoint("ckpt.safetensors", "mlp", params, state, OptimizerKind::kAdam, step));
//   HS_ASSIGN_OR_RETURN(Checkpoint ck, ReadCheckpoint("ckpt.safetensors", shapes, OptimizerConfig{}));
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "hetsynth/ir/graph.h"
#include "hetsynth/runtime/optimizer.h"
#include "hetsynth/runtime/tensor.h"

namespace hetsynth::runtime {

// Removes the gradients of frozen parameters (ir::Value::frozen: an imported model's
// constants), which the optimizer must not apply; `grads` is keyed by parameter name.
template <class Map>
void DropFrozenGradients(const ir::Graph& graph, Map& grads) {
  for (auto it = grads.begin(); it != grads.end();) {
    const ir::ValueId v = graph.Find(it->first);
    if (v != ir::kNoValue && graph.value(v).frozen) it = grads.erase(it);
    else ++it;
  }
}

// The initial value of a parameter: its Init applied to the stream Rng(seed, Fnv1a(name)),
// elements in row-major order (docs/models.md).
Tensor InitParameter(const ir::Value& param, uint64_t seed);

// The batch-norm running statistics (ir::RunningStat) at their starting values, by name
// (Init::Stored ones at zero until a weights file is loaded over them).
std::map<std::string, Tensor> InitRunningStats(const ir::Graph& graph);
// The batch_moments values that running statistics follow, each once, in value order.
std::set<ir::ValueId> RunningStatMoments(const ir::Graph& graph);
// After a training step's forward: moves every running statistic of `moments_value` toward the
// batch's, given the whole moments [2, C] (mean, mean of squares).
void UpdateRunningStats(const ir::Graph& graph, ir::ValueId moments_value, const Tensor& moments,
                        std::map<std::string, Tensor>& stats);
// What a checkpoint of this graph holds: every parameter and running statistic, by name.
std::map<std::string, ir::Shape> CheckpointShapes(const ir::Graph& graph);

// The content hash a checkpoint's manifest records of a file's tensors (params_hash,
// optimizer_state_hash): FNV-1a 64 over names, shapes and fp32 bytes, in name order, as 16 hex digits.
std::string CheckpointTensorsHash(const std::map<std::string, Tensor>& tensors);

// "ckpt.safetensors" -> "ckpt.optim.safetensors"; other names get ".optim.safetensors". Checkpoints
// written before sets existed keep their state there; newer ones name theirs in the manifest.
std::string OptimizerStatePath(const std::string& checkpoint);

// Checkpoints of full tensors, shared by single-device and multi-rank training (so one moves
// freely between them), committed atomically as a set (docs/runtime.md, "Checkpoints"):
// the optimizer state (when any) goes to a file of its own generation,
// "<stem>.optim.<set>.safetensors", then the parameters to `path`, whose __metadata__ is the
// set's manifest (format/model/step/optimizer, the set id, the state file's name and a content
// hash of both files' tensors). Every file is written to a temporary name, fsynced and renamed;
// `path` is renamed last, so a crash at any moment leaves the old set or the new one. Files of
// older sets ("<stem>.optim.<16 hex>.safetensors" and the pre-set "<stem>.optim.safetensors")
// and temporaries of dead writers are removed after the commit; nothing else is. Reading
// cross-checks the manifest: hashes, step and set id of the state file; an inconsistent set is
// refused.
struct Checkpoint {
  std::map<std::string, Tensor> params;
  std::map<std::string, Tensor> state;  // empty when absent or not used (see note)
  int64_t step = 0;
  // One line when state the checkpoint has is not used (another optimizer's, momentum buffers
  // with --momentum 0, a manifest that names state it does not hold); empty otherwise.
  std::string note;
};
// Refuses, before writing anything (the old set stays), a tensor with a non-finite value
// (CheckCheckpointFinite): the training diverged.
absl::Status WriteCheckpoint(const std::string& path, const std::string& model,
                             const std::map<std::string, Tensor>& params,
                             const std::map<std::string, Tensor>& state, OptimizerKind optimizer,
                             int64_t step);
// The error WriteCheckpoint gives for `params` and `state` when a value is not finite (or an
// exp_avg_sq negative), naming the tensor and the element; OK otherwise. Ranks that all hold the
// full tensors call it to fail alike before rank 0 writes.
absl::Status CheckCheckpointFinite(const std::string& path, const std::map<std::string, Tensor>& params,
                                  const std::map<std::string, Tensor>& state);
// Every parameter of `shapes` must be present with its shape and nothing else (checked from the
// header, before any tensor data is read), with finite values. Metadata, when present: format
// 'hetsynth-checkpoint', optimizer sgd or adam, step in [0, 2^53], and model the same
// architecture as `model` (ModelSpec::ToString; empty: not compared), batch, dropout and
// capacity_factor aside. State tensors must belong to a parameter of its shape, be finite
// (exp_avg_sq >= 0) and be complete for their optimizer; state of another optimizer than
// `optimizer`, or momentum buffers with momentum 0, are dropped with a note.
absl::StatusOr<Checkpoint> ReadCheckpoint(const std::string& path,
                                          const std::map<std::string, ir::Shape>& shapes,
                                          const OptimizerConfig& optimizer, const std::string& model = "");
// Prints a checkpoint's note, if any, as one line "hetsynth: note: ..." on stderr.
void PrintCheckpointNote(const Checkpoint& ck);

}  // namespace hetsynth::runtime
