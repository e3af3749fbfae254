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
#include "hetsynth/runtime/tensor.h"

namespace hetsynth::runtime {

// The forward graph's outputs (values of forward nodes no forward node reads), by name.
using Outputs = std::map<std::string, Tensor>;

// Every forward node (all but the loss node) in graph order on this thread.
absl::StatusOr<Outputs> ForwardOneDevice(const ir::Graph& g, const std::map<std::string, Tensor>& params, const Batch& batch);

struct InferRun {
  std::vector<Outputs> outputs;       // per request (empty without InferOptions::keep_outputs)
  std::vector<double> finish_s;       // per request: seconds from its start (sequential) or the run's start until its outputs are complete
  double total_s = 0;                 // all requests
  int ranks = 0;                      // threads used (devices hosting a group)
  int64_t messages = 0;               // point-to-point transfers
  double bytes = 0;                   // their payload
  double late_s = 0;                  // modelled seconds the paced groups ran late (host too slow for K)
  double dilation = 0;                // K used (0: not paced)
};

// Emulation of the placement's cluster on this host (docs/inference.md, "Running a placement"),
// with time dilation K as in docs/emulated-cluster.md: a rank of a device with FLOP/s f, in a
// file whose fastest device has f_max (this host, when the cluster came from `profile --like`),
// charges its kernels their thread CPU time × f_max / f and sleeps after each group until the
// group took K × that; a message is delivered K × the edge's predicted transfer seconds after it
// was sent. dilation 0: no pacing, no delays (host speed).
struct InferOptions {
  double dilation = 0;
  // One request at a time: every rank waits for the others between requests (latency), instead
  // of taking the next request as soon as its part of the last is done (throughput).
  bool sequential = false;
  // Keep every request's outputs (InferRun::outputs), to check them. Off for timing: outputs kept
  // past their request take memory from the host cache, so every request would map (and fault in)
  // fresh pages for the buffers they took — here 1 MB of logits, faulted in by the next
  // request's first attention, which tripled its time.
  bool keep_outputs = true;
};

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
