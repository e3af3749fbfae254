// The ratio LP (DESIGN §3): for a fixed program, the device-class ratios that minimize the
// predicted step time, subject to Σ ratios = 1 and every class's memory capacity. With several
// segments (OptimizeSegmentRatiosIn) each segment has its own ratios, summing to 1, its own
// maxima below, and memory sums over the segments; ties among optima go to the rows closest to
// each segment's start. It is kept
// small by collapsing per-instruction maxima into one variable per kind of maximum:
//   zF ≥ r_c·Fmax/F_c    (split GEMM-class compute:  Σ FLOPs · zF / Fmax)
//   zB ≥ r_c·BWmax/BW_c  (split memory-bound compute)
//   zG ≥ A·r_c/F_c + (S·r_c + W)/G_c   (instead of zF when devices have a GEMM operand
//        bandwidth G_c: A the split GEMM-class FLOPs, S and W their split and whole operand
//        bytes; each term takes its FLOPs' fraction of zG)
//   y  ≥ r_c             (padded collectives and all-to-all: max share)
//   w  ≥ 1 − r_c, w ≥ (n−1)·r_c   (grouped collectives)
// so it has O(segments × classes) rows whatever the program's length. Z3 solves it exactly; coefficients
// are rounded to a few significant digits in milliseconds and gigabytes first.
//
// Z3 enters our code here and nowhere else (with MemoryOracle below): every call is inside a
// try block whose z3::exception becomes an InternalError naming what was solved and where, and
// an `unknown` answer from check() is an InternalError too, never read as sat or unsat.
#include <z3++.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "hetsynth/base/status.h"
#include "hetsynth/synth/synthesize.h"
#include "memory_oracle.h"
#include "z3_rational.h"

namespace hetsynth::synth {
namespace {

// A Z3 exception as a status: `what` names the problem being solved.
absl::Status Z3Error(const std::string& what, const z3::exception& e, const char* file, int line) {
  return absl::InternalError(StrCat("z3: ", what, " failed (", file, ":", line, "): ", e.msg()));
}

// check() answered neither sat nor unsat (a resource limit, an interrupt): the question is open.
absl::Status Z3Unknown(const std::string& what, const std::string& reason, const char* file, int line) {
  return absl::InternalError(StrCat("z3: ", what, " answered unknown (", file, ":", line, "): ", reason,
                                    "; expected sat or unsat"));
}

// The model's value of a real as a double; Z3 prints it with 17 decimals and a trailing '?'
// when it truncated the expansion.
absl::StatusOr<double> Value(const z3::model& m, const z3::expr& e) {
  std::string s = m.eval(e, true).get_decimal_string(17);
  if (!s.empty() && s.back() == '?') s.pop_back();
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || errno == ERANGE) {
    return absl::InternalError(StrCat("z3: ratio lp: value '", s, "' of ", e.to_string(), " is not a finite decimal"));
  }
  return v;
}

}  // namespace

namespace {

// A linear expression over the LP's variables (by index): constant + Σ coefficient · variable,
// in milliseconds.
struct Lin {
  double constant = 0;
  std::map<int, double> terms;
  Lin& Add(const Lin& o, double scale = 1) {
    constant += scale * o.constant;
    for (const auto& [v, k] : o.terms) terms[v] += scale * k;
    return *this;
  }
};

// Builds the LP's variables and rows from a program's terms (see the header comment). With
// segments (each split group's row of ratios, `segment_of_group`), every maximum above is per
// segment, and variable s·K + k is segment s's ratio of class k.
class LpBuilder {
 public:
  LpBuilder(const costmodel::ClusterModel& m, const std::vector<costmodel::DeviceClass>& classes,
            const std::vector<std::vector<double>>& current, const costmodel::ProgramCost& pc,
            const std::vector<int>& segment_of_group)
      : m_(m), classes_(classes), current_(current), segment_of_group_(segment_of_group),
        segments_(static_cast<int>(current.size())) {
    const costmodel::Cluster& c = m.cluster();
    bool operands = false;
    for (const costmodel::Device& d : c.devices) {
      fmax_ = std::max(fmax_, d.flops), bwmax_ = std::max(bwmax_, d.memory_bandwidth);
      operands = operands || d.gemm_operand_bandwidth > 0;
    }
    class_of_.assign(static_cast<size_t>(c.size()), 0);
    for (size_t k = 0; k < classes.size(); ++k) {
      for (costmodel::DeviceId d : classes[k].devices) class_of_[static_cast<size_t>(d)] = static_cast<int>(k);
    }
    zf_.assign(static_cast<size_t>(segments_), -1);
    zb_.assign(static_cast<size_t>(segments_), -1);
    zg_.assign(static_cast<size_t>(segments_), -1);
    gemm_flops_.assign(static_cast<size_t>(segments_), 0.0);
    for (int s = 0; s < segments_; ++s) {
      zf_[static_cast<size_t>(s)] = NewVar(StrCat("zF", Suffix(s)));
      zb_[static_cast<size_t>(s)] = NewVar(StrCat("zB", Suffix(s)));
      for (size_t k = 0; k < classes.size(); ++k) {
        const costmodel::Device& d = c.devices[static_cast<size_t>(classes[k].devices.front())];
        Lin a, b;
        a.terms[Ratio(s, k)] = fmax_ / d.flops;
        b.terms[Ratio(s, k)] = bwmax_ / d.memory_bandwidth;
        rows_.push_back({zf_[static_cast<size_t>(s)], a});
        rows_.push_back({zb_[static_cast<size_t>(s)], b});
      }
    }
    if (!operands) return;
    // Split GEMM-class work with its operands, summed per device (ms), per segment.
    std::vector<double> split_bytes(static_cast<size_t>(segments_), 0.0), whole_bytes = split_bytes;
    for (const costmodel::Term& t : pc.terms) {
      if (t.kind != costmodel::TermKind::kComputeSplit || t.memory_bound) continue;
      const size_t s = static_cast<size_t>(SegmentOf(t));
      gemm_flops_[s] += t.coefficient, split_bytes[s] += t.operand_bytes_split, whole_bytes[s] += t.operand_bytes_whole;
    }
    for (int s = 0; s < segments_; ++s) {
      const size_t si = static_cast<size_t>(s);
      if (!(gemm_flops_[si] > 0) || split_bytes[si] + whole_bytes[si] <= 0) continue;
      zg_[si] = NewVar(StrCat("zG", Suffix(s)));
      for (size_t k = 0; k < classes.size(); ++k) {
        const costmodel::Device& d = c.devices[static_cast<size_t>(classes[k].devices.front())];
        const double g = d.gemm_operand_bandwidth;
        Lin row;
        row.terms[Ratio(s, k)] = 1e3 * (gemm_flops_[si] / d.flops + (g > 0 ? split_bytes[si] / g : 0.0));
        row.constant = g > 0 ? 1e3 * whole_bytes[si] / g : 0.0;
        rows_.push_back({zg_[si], row});
      }
    }
  }

  // The variable of segment s's ratio of class k.
  int Ratio(int s, size_t k) const { return s * static_cast<int>(classes_.size()) + static_cast<int>(k); }
  // The segment whose ratios a term's shares follow (its split group's; 0 without one).
  int SegmentOf(const costmodel::Term& t) const {
    return t.group >= 0 && static_cast<size_t>(t.group) < segment_of_group_.size()
               ? segment_of_group_[static_cast<size_t>(t.group)]
               : 0;
  }
  // Names of one segment's variables: unchanged with one segment.
  std::string Suffix(int s) const { return segments_ == 1 ? std::string() : StrCat("_", s); }

  // Variables 0..S·K−1 are the segments' class ratios.
  int NewVar(const std::string& name) {
    names_.push_back(name);
    return static_cast<int>(static_cast<size_t>(segments_) * classes_.size() + names_.size()) - 1;
  }

  // The time of a term's forward and backward parts, in ms, as linear expressions: exact where
  // the price is linear in the shares; a phase's latency taken as its largest piece's; the
  // all-to-all's NIC exchange replaced by its tangent at the current shares (an upper bound).
  std::pair<Lin, Lin> Parts(const costmodel::Term& t) {
    using costmodel::TermKind;
    Lin total;
    double forward_fraction = 1;
    const size_t seg = static_cast<size_t>(SegmentOf(t));
    if (t.kind == TermKind::kComputeSplit) {
      const bool mb = t.memory_bound;
      if (!mb && zg_[seg] >= 0) {
        total.terms[zg_[seg]] = t.coefficient / gemm_flops_[seg];
      } else {
        total.terms[mb ? zb_[seg] : zf_[seg]] = 1e3 * t.coefficient / (mb ? bwmax_ : fmax_);
      }
      forward_fraction = t.forward_fraction;
    } else if (t.kind == TermKind::kComputeFull) {
      double slowest = 0;
      for (const costmodel::Device& d : m_.cluster().devices) slowest = std::max(slowest, costmodel::ComputeSeconds(t, 1.0, d));
      total.constant = 1e3 * slowest;
      forward_fraction = t.forward_fraction;
    } else if (costmodel::IsCollective(t.kind) && m_.size() > 1) {
      Lin once;
      if (const costmodel::CollectiveTable* table = m_.Table(t.op)) {
        once.constant = 1e3 * costmodel::TableSeconds(*table, t.bytes);
      } else {
        const costmodel::CollectivePrice& price = m_.Price(t.kind);
        for (size_t ph = 0; ph < price.phases.size(); ++ph) {
          double latency = 0;
          for (const costmodel::PricePiece& piece : price.phases[ph]) latency = std::max(latency, piece.latency);
          once.constant += 1e3 * latency;
          once.terms[PhaseVar(t.kind, ph, static_cast<int>(seg))] += 1e3 * t.bytes;
        }
      }
      if (t.role == costmodel::TermRole::kGradientSync || t.times == 1) return {Lin{}, once};
      Lin back;
      back.Add(once, t.times - 1);
      return {once, back};
    }
    if (t.role == costmodel::TermRole::kOptimizer) forward_fraction = 0;
    Lin fwd, bwd;
    fwd.Add(total, forward_fraction);
    bwd.Add(total, 1 - forward_fraction);
    return {fwd, bwd};
  }

  const std::vector<std::pair<int, Lin>>& rows() const { return rows_; }  // variable ≥ Lin
  const std::vector<std::string>& names() const { return names_; }

 private:
  // The variable bounding phase `ph` of kind's price per byte in segment `s`: ≥ every piece's
  // per-byte part.
  int PhaseVar(costmodel::TermKind kind, size_t ph, int s) {
    const auto key = std::make_tuple(static_cast<int>(kind), ph, s);
    if (auto it = phase_vars_.find(key); it != phase_vars_.end()) return it->second;
    const int v = NewVar(StrCat("x", static_cast<int>(kind), "_", ph, Suffix(s)));
    const std::vector<double>& current = current_[static_cast<size_t>(s)];
    phase_vars_[key] = v;
    std::set<std::vector<double>> seen;  // pieces equal after aggregating classes give one row
    for (const costmodel::PricePiece& piece : m_.Price(kind).phases[ph]) {
      Lin row;
      if (piece.exchange_node >= 0) {
        // S(1 − S) ≤ S0(1 − S0) + (1 − 2·S0)·(S − S0): its tangent at the current node share S0
        // (the LP gives the result's split the same ratios as the source's).
        const std::vector<costmodel::DeviceId>& devs = m_.mesh().nodes[static_cast<size_t>(piece.exchange_node)];
        double s0 = 0;
        for (costmodel::DeviceId i : devs) s0 += current[static_cast<size_t>(i)];
        for (costmodel::DeviceId i : devs) {
          row.terms[Ratio(s, static_cast<size_t>(class_of_[static_cast<size_t>(i)]))] += piece.exchange * (1 - 2 * s0);
        }
        row.constant = piece.exchange * s0 * s0;
      } else {
        row.constant = piece.per_byte;
        for (const auto& [i, k] : piece.shares) row.terms[Ratio(s, static_cast<size_t>(class_of_[static_cast<size_t>(i)]))] += k;
      }
      std::vector<double> key_row = {row.constant};
      for (size_t k = 0; k < classes_.size(); ++k) {
        const auto it = row.terms.find(Ratio(s, k));
        key_row.push_back(it == row.terms.end() ? 0.0 : it->second);
      }
      if (!seen.insert(key_row).second) continue;
      rows_.push_back({v, row});
    }
    return v;
  }

  const costmodel::ClusterModel& m_;
  const std::vector<costmodel::DeviceClass>& classes_;
  const std::vector<std::vector<double>>& current_;  // per segment, per device
  const std::vector<int>& segment_of_group_;
  int segments_ = 1;
  std::vector<int> class_of_;
  double fmax_ = 0, bwmax_ = 0;
  std::vector<int> zf_, zb_;  // per segment
  std::vector<int> zg_;       // per segment; -1: no GEMM operand bandwidth, split GEMM work priced with zF
  std::vector<double> gemm_flops_;  // per segment: FLOPs of the split GEMM-class terms zG sums
  std::vector<std::string> names_;
  std::map<std::tuple<int, size_t, int>, int> phase_vars_;
  std::vector<std::pair<int, Lin>> rows_;
};

}  // namespace

struct Z3Session::Impl {
  z3::context ctx;
};

Z3Session::Z3Session() = default;
Z3Session::~Z3Session() = default;

Z3Session::Impl& Z3Session::impl() {
  if (!impl_) impl_ = std::make_unique<Impl>();
  return *impl_;
}

absl::StatusOr<std::vector<double>> OptimizeRatios(const ir::Graph& g, const costmodel::Cluster& c,
                                                   const instr::Program& p, const SynthOptions& o) {
  Z3Session session;
  return OptimizeRatiosIn(session, g, costmodel::ClusterModel(c), p, o);
}

absl::StatusOr<std::vector<double>> OptimizeRatios(const ir::Graph& g, const costmodel::ClusterModel& model,
                                                   const instr::Program& p, const SynthOptions& o) {
  Z3Session session;
  return OptimizeRatiosIn(session, g, model, p, o);
}

absl::StatusOr<std::vector<std::vector<double>>> OptimizeSegmentRatios(const ir::Graph& g,
                                                                       const costmodel::ClusterModel& model,
                                                                       const instr::Program& p, const SynthOptions& o,
                                                                       const std::vector<int>& segment_of_group,
                                                                       int segments) {
  Z3Session session;
  return OptimizeSegmentRatiosIn(session, g, model, p, o, segment_of_group, segments);
}

absl::StatusOr<std::vector<double>> OptimizeRatiosIn(Z3Session& session, const ir::Graph& g,
                                                     const costmodel::ClusterModel& model, const instr::Program& p,
                                                     const SynthOptions& o) {
  if (p.ratios.size() > 1) {
    return absl::FailedPreconditionError(StrCat("the program has ", p.ratios.size(),
                                                " rows of ratios; one row is asked for (OptimizeSegmentRatios gives one per segment)"));
  }
  HS_ASSIGN_OR_RETURN(std::vector<std::vector<double>> rows,
                      OptimizeSegmentRatiosIn(session, g, model, p, o, std::vector<int>(p.groups.size(), 0), 1));
  return std::move(rows.front());
}

absl::StatusOr<std::vector<std::vector<double>>> OptimizeSegmentRatiosIn(Z3Session& session, const ir::Graph& g,
                                                                         const costmodel::ClusterModel& model,
                                                                         const instr::Program& p, const SynthOptions& o,
                                                                         const std::vector<int>& segment_of_group,
                                                                         int segments) {
  HS_RETURN_IF_ERROR(ValidateSynthOptions(o));
  using costmodel::TermRole;
  const costmodel::Cluster& c = model.cluster();
  const int n = c.size();
  if (segments < 1 || segment_of_group.size() != p.groups.size()) {
    return absl::InternalError(StrCat("ratio lp: ", segments, " segments for ", segment_of_group.size(),
                                      " groups; the program has ", p.groups.size()));
  }
  for (int s : segment_of_group) {
    if (s < 0 || s >= segments) return absl::InternalError(StrCat("ratio lp: segment ", s, " of ", segments));
  }
  if (n == 1) return std::vector<std::vector<double>>(static_cast<size_t>(segments), std::vector<double>{1.0});
  if (p.UsesMesh()) {
    // The LP models world forms only (node-tied ratios, spec §2, are not built yet): a program
    // over mesh levels keeps its ratios.
    return absl::FailedPreconditionError("the ratio LP does not model properties over mesh levels; ratios kept");
  }
  const costmodel::ProgramCost pc = costmodel::DescribeCost(g, p, model, o.cost);
  const std::vector<costmodel::DeviceClass> classes = c.Classes();
  const size_t num_classes = classes.size();
  // Segment s starts from row s of the program's ratios (its last row where it has fewer).
  std::vector<std::vector<double>> current;
  for (int s = 0; s < segments; ++s) {
    current.push_back(p.ratios.empty() ? std::vector<double>(static_cast<size_t>(n), 1.0 / n)
                                       : p.ratios[std::min(static_cast<size_t>(s), p.ratios.size() - 1)]);
  }
  LpBuilder lp(model, classes, current, pc, segment_of_group);

  // The objective. Without overlap, every term adds. With it, the critical path of the two
  // streams (costmodel::Evaluate), unrolled into rows that are linear in the variables:
  //   F ≥ Σ forward parts;  F ≥ A_k + Σ forward parts after ZeRO gather k (A_k: gathers up to k)
  //   T ≥ F + Σ backward parts;  T ≥ F + P_k + Σ_{m ≥ k} c_m for every gradient sync k
  //   (P_k: backward parts before it, c_m: the syncs);  T ≥ A_last + Σ_m c_m
  // and the objective is T + the optimizer's time.
  Lin objective;
  std::vector<Lin> t_rows, f_rows;  // T ≥ row, F ≥ row
  int f_var = -1, t_var = -1;
  const bool overlap = pc.overlap;
  std::vector<std::pair<Lin, Lin>> parts;
  for (const costmodel::Term& t : pc.terms) parts.push_back(lp.Parts(t));
  if (!overlap) {
    for (const auto& [f, b] : parts) objective.Add(f).Add(b);
  } else {
    Lin forward_all, gathers;
    std::vector<std::pair<Lin, size_t>> gather_at;  // A_k and the term index of gather k
    for (size_t k = 0; k < pc.terms.size(); ++k) {
      const costmodel::Term& t = pc.terms[k];
      if (t.role == TermRole::kOptimizer) {
        objective.Add(parts[k].second);
        continue;
      }
      if (t.role == TermRole::kGradientSync) continue;
      if (t.role == TermRole::kParameterGather) {
        gathers.Add(parts[k].first);
        gather_at.push_back({gathers, k});
      } else {
        forward_all.Add(parts[k].first);
      }
    }
    f_rows.push_back(forward_all);
    // Forward step parts after each gather: suffix sums from the end.
    std::vector<Lin> after(pc.terms.size() + 1);
    for (size_t k = pc.terms.size(); k-- > 0;) {
      after[k] = after[k + 1];
      if (pc.terms[k].role == TermRole::kStep) after[k].Add(parts[k].first);
    }
    for (const auto& [a, at] : gather_at) {
      Lin row = a;
      f_rows.push_back(row.Add(after[at + 1]));
    }
    // Backward, in reverse: prefix sums of the compute stream and the syncs in order.
    Lin prefix;
    std::vector<std::pair<Lin, Lin>> syncs;  // (P_k, c_k)
    for (size_t k = pc.terms.size(); k-- > 0;) {
      const TermRole role = pc.terms[k].role;
      if (role == TermRole::kOptimizer) continue;
      if (role == TermRole::kGradientSync || role == TermRole::kParameterGather) {
        syncs.push_back({prefix, parts[k].second});
      } else {
        prefix.Add(parts[k].second);
      }
    }
    f_var = lp.NewVar("F");
    t_var = lp.NewVar("T");
    Lin f_lin;
    f_lin.terms[f_var] = 1;
    Lin suffix;  // Σ_{m ≥ k} c_m, built from the last sync back
    std::vector<Lin> from_k(syncs.size());
    for (size_t k = syncs.size(); k-- > 0;) {
      suffix.Add(syncs[k].second);
      from_k[k] = suffix;
    }
    Lin all = f_lin;
    t_rows.push_back(all.Add(prefix));
    for (size_t k = 0; k < syncs.size(); ++k) {
      Lin row = f_lin;
      row.Add(syncs[k].first).Add(from_k[k]);
      t_rows.push_back(row);
    }
    Lin chain = gathers;
    t_rows.push_back(chain.Add(suffix));
    objective.terms[t_var] += 1;
  }
  // Memory per device, in GB: fixed + Σ_s split_s · r_s.
  double mem_fixed = 0;
  std::vector<double> mem_split(static_cast<size_t>(segments), 0.0);
  for (const costmodel::MemoryTerm& m : pc.memory) {
    if (m.group < 0) {
      mem_fixed += m.bytes * 1e-9;
    } else {
      mem_split[static_cast<size_t>(segment_of_group[static_cast<size_t>(m.group)])] += m.bytes * 1e-9;
    }
  }

  std::vector<std::vector<double>> class_ratios(static_cast<size_t>(segments), std::vector<double>(num_classes, 0.0));
  const std::string what = StrCat("ratio lp over ", num_classes, " device classes",
                                  segments > 1 ? StrCat(" and ", segments, " segments") : std::string());
  try {
    z3::context& ctx = session.impl().ctx;
    z3::optimize opt(ctx);
    std::vector<z3::expr> vars;
    for (int s = 0; s < segments; ++s) {
      for (size_t k = 0; k < num_classes; ++k) vars.push_back(ctx.real_const(StrCat("r", k, lp.Suffix(s)).c_str()));
    }
    for (const std::string& name : lp.names()) vars.push_back(ctx.real_const(name.c_str()));
    auto expr = [&](const Lin& l) {
      z3::expr e = Q(ctx, l.constant);
      for (const auto& [v, k] : l.terms) {
        if (k != 0) e = e + Q(ctx, k) * vars[static_cast<size_t>(v)];
      }
      return e;
    };
    // Per class: its ratios ≥ 0 and its memory row; then each segment's ratios sum to 1 (with
    // one segment, the rows in the order the LP has always had them).
    std::vector<z3::expr> totals(static_cast<size_t>(segments), ctx.real_val(0));
    for (size_t k = 0; k < num_classes; ++k) {
      const costmodel::Device& d = c.devices[static_cast<size_t>(classes[k].devices.front())];
      z3::expr need = Q(ctx, mem_fixed);
      for (int s = 0; s < segments; ++s) {
        const z3::expr& rk = vars[static_cast<size_t>(lp.Ratio(s, k))];
        opt.add(rk >= 0);
        need = need + Q(ctx, mem_split[static_cast<size_t>(s)]) * rk;
        totals[static_cast<size_t>(s)] = totals[static_cast<size_t>(s)] + rk * ctx.real_val(static_cast<int>(classes[k].devices.size()));
      }
      // 1% headroom for rounding shares to whole atoms.
      if (o.memory_limits) opt.add(need <= Q(ctx, 0.99e-9 * d.memory_bytes));
    }
    for (const z3::expr& total : totals) opt.add(total == 1);
    for (const auto& [v, row] : lp.rows()) opt.add(vars[static_cast<size_t>(v)] >= expr(row));
    opt.minimize(expr(objective));
    if (segments > 1) {
      // Second, among the optima: the rows closest (L1, per device) to where each segment
      // started. A segment whose terms never bind (a ZeRO shard whose gathers the stream hides)
      // otherwise gets whatever vertex the solver meets first.
      z3::expr distance = ctx.real_val(0);
      for (int s = 0; s < segments; ++s) {
        for (size_t k = 0; k < num_classes; ++k) {
          double start = 0;
          for (costmodel::DeviceId d : classes[k].devices) start += current[static_cast<size_t>(s)][static_cast<size_t>(d)];
          start /= static_cast<double>(classes[k].devices.size());
          const z3::expr dist = ctx.real_const(StrCat("d", k, lp.Suffix(s)).c_str());
          const z3::expr& rk = vars[static_cast<size_t>(lp.Ratio(s, k))];
          opt.add(dist >= rk - Q(ctx, start));
          opt.add(dist >= Q(ctx, start) - rk);
          distance = distance + dist * ctx.real_val(static_cast<int>(classes[k].devices.size()));
        }
      }
      opt.minimize(distance);
    }
    // The critical-path rows (one per gather and per gradient sync, hundreds for ZeRO or small
    // buckets) are added lazily: first those that bind at the current ratios, then, after each
    // solve, those the solution violates, until none does. The optimum is that of all rows.
    const size_t num_vars = vars.size();
    auto eval = [](const Lin& l, const std::vector<double>& val) {
      double v = l.constant;
      for (const auto& [k, c] : l.terms) v += c * val[static_cast<size_t>(k)];
      return v;
    };
    std::vector<double> val(num_vars, 0.0);
    for (int s = 0; s < segments; ++s) {
      for (size_t k = 0; k < num_classes; ++k) {
        double sum = 0;
        for (costmodel::DeviceId d : classes[k].devices) sum += current[static_cast<size_t>(s)][static_cast<size_t>(d)];
        val[static_cast<size_t>(lp.Ratio(s, k))] = sum / static_cast<double>(classes[k].devices.size());
      }
    }
    for (const auto& [v, row] : lp.rows()) val[static_cast<size_t>(v)] = std::max(val[static_cast<size_t>(v)], eval(row, val));
    std::vector<std::vector<bool>> added = {std::vector<bool>(f_rows.size(), false), std::vector<bool>(t_rows.size(), false)};
    const std::vector<Lin>* families[2] = {&f_rows, &t_rows};
    const int family_var[2] = {f_var, t_var};
    // Adds up to `limit` rows of a family, the largest first: at the start by value (F from the
    // forward rows), after a solve by how far they exceed the solution's F or T.
    auto add_rows = [&](int fam, size_t limit, bool violated_only) {
      const std::vector<Lin>& rows = *families[fam];
      std::vector<std::pair<double, size_t>> order;
      for (size_t i = 0; i < rows.size(); ++i) {
        if (added[fam][i]) continue;
        const double v = eval(rows[i], val);
        const double bound = val[static_cast<size_t>(family_var[fam])];
        if (violated_only && !(v > bound + 1e-9 * std::max(1.0, std::abs(bound)))) continue;
        order.push_back({-v, i});
      }
      std::sort(order.begin(), order.end());
      size_t n_added = 0;
      for (size_t k = 0; k < order.size() && k < limit; ++k, ++n_added) {
        const size_t i = order[k].second;
        added[fam][i] = true;
        opt.add(vars[static_cast<size_t>(family_var[fam])] >= expr(rows[i]));
      }
      return n_added;
    };
    if (overlap) {
      double f = 0;
      for (const Lin& row : f_rows) f = std::max(f, eval(row, val));
      val[static_cast<size_t>(f_var)] = f;
      add_rows(0, 4, false);
      add_rows(1, 6, false);
    }
    z3::check_result res = opt.check();
    for (int round = 0; overlap && res == z3::sat; ++round) {
      const z3::model mdl = opt.get_model();
      for (size_t k = 0; k < num_vars; ++k) {
        HS_ASSIGN_OR_RETURN(val[k], Value(mdl, vars[k]));
      }
      const size_t limit = round < 8 ? 8 : std::max(f_rows.size(), t_rows.size());
      if (add_rows(0, limit, true) + add_rows(1, limit, true) == 0) break;
      res = opt.check();
    }
    if (res == z3::unknown) return Z3Unknown(what, Z3_optimize_get_reason_unknown(ctx, opt), __FILE__, __LINE__);
    if (res == z3::unsat) {
      // Name the device class that is furthest from fitting at any ratio.
      const costmodel::Device& d = c.devices[static_cast<size_t>(classes.front().devices.front())];
      double worst_need = 0, worst_cap = d.memory_bytes;
      std::string worst = d.name;
      for (const costmodel::DeviceClass& k : classes) {
        const costmodel::Device& dev = c.devices[static_cast<size_t>(k.devices.front())];
        const double need = mem_fixed * 1e9;  // even at ratio 0
        if (need / dev.memory_bytes > worst_need / worst_cap) worst_need = need, worst_cap = dev.memory_bytes, worst = dev.name;
      }
      return absl::ResourceExhaustedError(StrCat("no ratios fit this program in memory: device '", worst, "' needs at least ",
                                                 static_cast<int64_t>(worst_need), " bytes for the replicated part alone and has ",
                                                 static_cast<int64_t>(worst_cap)));
    }
    const z3::model mdl = opt.get_model();
    for (int s = 0; s < segments; ++s) {
      for (size_t k = 0; k < num_classes; ++k) {
        HS_ASSIGN_OR_RETURN(const double v, Value(mdl, vars[static_cast<size_t>(lp.Ratio(s, k))]));
        class_ratios[static_cast<size_t>(s)][k] = std::max(0.0, v);
      }
    }
  } catch (const z3::exception& e) {
    return Z3Error(what, e, __FILE__, __LINE__);
  }
  std::vector<std::vector<double>> out;
  for (const std::vector<double>& row : class_ratios) {
    std::vector<double> ratios(static_cast<size_t>(n), 0.0);
    double sum = 0;
    for (size_t k = 0; k < num_classes; ++k) {
      for (costmodel::DeviceId d : classes[k].devices) ratios[static_cast<size_t>(d)] = row[k], sum += row[k];
    }
    for (double& v : ratios) v /= sum;  // exact rationals printed to 17 digits: renormalize the last bits
    out.push_back(std::move(ratios));
  }
  return out;
}

}  // namespace hetsynth::synth

namespace hetsynth::synth {

struct MemoryOracle::Solver {
  explicit Solver(z3::context& c) : ctx(c), solver(c) {}
  z3::context& ctx;
  z3::solver solver;
  std::vector<z3::expr> ratios;      // per device class
  std::vector<int64_t> capacity_mib;  // per device class
};

MemoryOracle::MemoryOracle(const costmodel::Cluster& c, Z3Session* session) : c_(c), session_(session) {
  if (!session_) {
    own_session_ = std::make_unique<Z3Session>();
    session_ = own_session_.get();
  }
}

MemoryOracle::~MemoryOracle() = default;

void MemoryOracle::BuildSolver() {
  z3_ = std::make_unique<Solver>(session_->impl().ctx);
  z3::expr total = z3_->ctx.real_val(0);
  int k = 0;
  for (const costmodel::DeviceClass& cls : c_.Classes()) {
    const costmodel::Device& d = c_.devices[static_cast<size_t>(cls.devices.front())];
    z3_->ratios.push_back(z3_->ctx.real_const(StrCat("r", k++).c_str()));
    z3_->solver.add(z3_->ratios.back() >= 0);
    // The same 1% headroom as the ratio LP, so that what the search keeps the LP can place.
    z3_->capacity_mib.push_back(static_cast<int64_t>(std::floor(0.99 * d.memory_bytes / 1048576.0)));
    total = total + z3_->ratios.back() * z3_->ctx.real_val(static_cast<int>(cls.devices.size()));
  }
  z3_->solver.add(total == 1);
}

absl::StatusOr<bool> MemoryOracle::AnyRatioFits(double fixed_bytes, double split_bytes) {
  constexpr double kUnit = 4.0 * 1048576.0;
  const std::pair<int64_t, int64_t> key = {static_cast<int64_t>(std::ceil(fixed_bytes / kUnit)),
                                           static_cast<int64_t>(std::ceil(split_bytes / kUnit))};
  auto it = cache_.find(key);
  if (it != cache_.end()) return it->second;
  ++calls_;
  auto what = [&] {
    return StrCat("memory oracle (", key.first * 4, " MiB fixed + ", key.second * 4, " MiB split on cluster '", c_.name,
                  "')");
  };
  z3::check_result res = z3::unknown;
  std::string reason;
  try {
    if (!z3_) BuildSolver();
    z3::context& ctx = z3_->ctx;
    z3_->solver.push();
    for (size_t k = 0; k < z3_->ratios.size(); ++k) {
      // In MiB: fixed + split · r ≤ capacity.
      z3_->solver.add(ctx.real_val(key.first * 4) + ctx.real_val(key.second * 4) * z3_->ratios[k] <=
                      ctx.real_val(z3_->capacity_mib[k]));
    }
    res = z3_->solver.check();
    if (res == z3::unknown) reason = z3_->solver.reason_unknown();
    z3_->solver.pop();
  } catch (const z3::exception& e) {
    z3_.reset();  // a push may be left open: rebuild the solver on the next query
    return Z3Error(what(), e, __FILE__, __LINE__);
  }
  if (res == z3::unknown) return Z3Unknown(what(), reason, __FILE__, __LINE__);
  const bool fits = res == z3::sat;
  cache_[key] = fits;
  return fits;
}

}  // namespace hetsynth::synth
