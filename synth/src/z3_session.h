// Private: one Z3 context shared by the ratio LPs and memory oracles of one synthesis. Creating
// a Z3 context costs about 0.1 s on the development VM — more than most LPs it then solves — so
// a synthesis creates one, lazily, on the first question. Results stay deterministic: the same
// synthesis asks the same questions in the same order of a fresh session.
#pragma once

#include <memory>
#include <vector>

#include "hetsynth/synth/synthesize.h"

namespace hetsynth::synth {

class Z3Session {
 public:
  Z3Session();
  ~Z3Session();
  Z3Session(const Z3Session&) = delete;
  Z3Session& operator=(const Z3Session&) = delete;

  struct Impl;  // holds the z3::context (ratio_lp.cc); z3 stays out of this header
  Impl& impl();  // creates the context on first use; may throw z3::exception

 private:
  std::unique_ptr<Impl> impl_;
};

// OptimizeRatios and SearchProgram in a session (`session` null: a fresh one per search).
absl::StatusOr<std::vector<double>> OptimizeRatiosIn(Z3Session& session, const ir::Graph& g,
                                                     const costmodel::ClusterModel& m, const instr::Program& p,
                                                     const SynthOptions& o);
// OptimizeSegmentRatios (synthesize.h) in a session.
absl::StatusOr<std::vector<std::vector<double>>> OptimizeSegmentRatiosIn(Z3Session& session, const ir::Graph& g,
                                                                         const costmodel::ClusterModel& m,
                                                                         const instr::Program& p, const SynthOptions& o,
                                                                         const std::vector<int>& segment_of_group,
                                                                         int segments);
absl::StatusOr<instr::Program> SearchProgramIn(Z3Session* session, const ir::Graph& g, const costmodel::ClusterModel& m,
                                               const std::vector<double>& ratios, const Strategy& s,
                                               const SynthOptions& o, int64_t* states_expanded,
                                               double gradient_sync_weight);

}  // namespace hetsynth::synth
