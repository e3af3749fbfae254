// Private: Z3's answer to "can any sharding ratios fit this much memory on every device?",
// used by the search to prune branches that no ratio can rescue (DESIGN §3). Memory of a
// partial program is fixed + split · r_i on device i (one segment of ratios).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <utility>

#include "absl/status/statusor.h"
#include "hetsynth/costmodel/cluster.h"
#include "z3_session.h"

namespace hetsynth::synth {

class MemoryOracle {
 public:
  // `session` (not owned, may be null: then the oracle has its own) provides the Z3 context.
  MemoryOracle(const costmodel::Cluster& c, Z3Session* session);
  ~MemoryOracle();

  // Whether some ratios r (r ≥ 0, Σ r = 1, equal within a device class) satisfy
  // fixed + split · r_i ≤ capacity_i for every device. One solver holds the ratio constraints
  // (built on the first query); each query pushes its memory rows and pops them. Answers are
  // cached per 4 MiB, rounding the demand up (so a borderline branch may be pruned, never a
  // hopeless one kept). InternalError when Z3 throws or answers unknown: neither is "no".
  absl::StatusOr<bool> AnyRatioFits(double fixed_bytes, double split_bytes);
  int64_t z3_calls() const { return calls_; }

 private:
  struct Solver;  // z3 stays out of this header
  void BuildSolver();  // may throw z3::exception; AnyRatioFits catches it
  const costmodel::Cluster& c_;
  Z3Session* session_;
  std::unique_ptr<Z3Session> own_session_;
  std::unique_ptr<Solver> z3_;
  std::map<std::pair<int64_t, int64_t>, bool> cache_;
  int64_t calls_ = 0;
};

}  // namespace hetsynth::synth
