// Running an inference placement (instr/inference_placement.h, docs/inference.md) on CPU thread
// ranks: one thread per device that hosts a group, each running its groups' forward kernels in
// the file's order, activations moved between ranks point to point (a copy into the receiving
// rank's mailbox, which blocks the receiver until it arrives). Requests are pipelined: each rank
// takes request r+1 as soon as its part of request r is done. Also the one-device forward it
// is compared with. Host speed: ranks are not paced to the cluster's device speeds.
//
//   absl::StatusOr<InferRun> run = RunPlacement(graph, placement, params, requests);
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "hetsynth/instr/inference_placement.h"
#include "hetsynth/ir/graph.h"
#include "hetsynth/runtime/comm.h"
#include "hetsynth/runtime/data.h"
#include "hetsynth/runtime/infer_impl.h"
#include "hetsynth/runtime/tensor.h"

namespace hetsynth::runtime {

// Every forward node (all but the loss node) in graph order on this thread.
absl::StatusOr<Outputs> ForwardOneDevice(const ir::Graph& g, const std::map<std::string, Tensor>& params, const Batch& batch);

// InferRun and InferOptions: infer_impl.h.
absl::StatusOr<InferRun> RunPlacement(const ir::Graph& g, const instr::InferencePlacement& p,
                                      const std::map<std::string, Tensor>& params, const std::vector<Batch>& requests,
                                      const InferOptions& o = {});

// The same run with one process per rank (under mpirun): this process is rank comm.rank() of the
// placement's ranks (the devices hosting a group, in order; comm.size() must be their number).
// Activations travel as point-to-point messages (Communicator::SendAsync/Recv) over whatever
// links connect the processes, not delayed by the emulation: with `dilation` only the compute is
// paced, so run it over links that are themselves emulated (hetsynth cluster run) or fast. Rank 0
// receives the outputs: its InferRun holds them (with keep_outputs) and the times (finish_s:
// from the barrier before each request to its last output on rank 0, when sequential; total_s:
// from a barrier to one after the last request); messages and bytes are summed over the ranks
// (rank 0's outputs included), late_s is the latest rank's.
absl::StatusOr<InferRun> RunPlacementOnRanks(Communicator& comm, const ir::Graph& g, const instr::InferencePlacement& p,
                                             const std::map<std::string, Tensor>& params,
                                             const std::vector<Batch>& requests, const InferOptions& o = {});

}  // namespace hetsynth::runtime
