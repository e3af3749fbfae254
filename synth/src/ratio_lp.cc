// The ratio LP (DESIGN §3): for a fixed program, the device-class ratios that minimize the
// predicted step time, subject to Σ ratios = 1 and every class's memory capacity. It is kept
// small by collapsing per-instruction maxima into one variable per kind of maximum:
//   zF ≥ r_c·Fmax/F_c    (split GEMM-class compute:  Σ FLOPs · zF / Fmax)
//   zB ≥ r_c·BWmax/BW_c  (split memory-bound compute)
//   y  ≥ r_c             (padded collectives and all-to-all: max share)
//   w  ≥ 1 − r_c, w ≥ (n−1)·r_c   (grouped collectives)
// so it has O(classes) rows whatever the program's length. Z3 solves it exactly; coefficients
// are rounded to a few significant digits in milliseconds and gigabytes first.
//
// Z3 enters our code here and nowhere else (with MemoryOracle below): every call is inside a
// try block whose z3::exception becomes an InternalError naming what was solved and where, and
// an `unknown` answer from check() is an InternalError too, never read as sat or unsat.
#include <z3++.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "hetsynth/ir/status.h"
#include "hetsynth/synth/synthesize.h"
#include "memory_oracle.h"

namespace hetsynth::synth {
namespace {

// A Z3 rational close to x (7 significant digits, fixed notation).
z3::expr Q(z3::context& ctx, double x) {
  if (x == 0 || !std::isfinite(x)) return ctx.real_val(0);
  const int digits = std::max(0, 7 - static_cast<int>(std::floor(std::log10(std::abs(x)))) - 1);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", std::min(digits, 18), x);
  return ctx.real_val(buf);
}

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

absl::StatusOr<std::vector<double>> OptimizeRatios(const ir::Graph& g, const costmodel::Cluster& c,
                                                   const instr::Program& p, const SynthOptions& o) {
  HS_RETURN_IF_ERROR(ValidateSynthOptions(o));
  using costmodel::TermKind;
  const int n = c.size();
  if (n == 1) return std::vector<double>{1.0};
  const costmodel::ProgramCost pc = costmodel::DescribeCost(g, p, c, o.cost);
  double fmax = 0, bwmax = 0;
  for (const costmodel::Device& d : c.devices) fmax = std::max(fmax, d.flops), bwmax = std::max(bwmax, d.memory_bandwidth);
  const costmodel::Link link = c.WorldLink();
  const double beta = 1.0 / link.bandwidth;
  // Objective coefficients in milliseconds.
  double a_f = 0, a_b = 0, a_y = 0, a_w = 0;
  for (const costmodel::Term& t : pc.terms) {
    if (t.kind == TermKind::kComputeSplit) {
      (t.memory_bound ? a_b : a_f) += 1e3 * t.coefficient / (t.memory_bound ? bwmax : fmax);
      continue;
    }
    // A collective's β part, rounds · volume · β·B per unit of its share measure (y or w);
    // its α part and a ratio-independent volume are constants the LP can leave out.
    const costmodel::CollectiveCoefficients k = costmodel::CollectiveCost(t.kind, n);
    const double per_unit = 1e3 * t.times * beta * t.bytes * (k.rounds * k.volume);
    if (k.measure == costmodel::ShareMeasure::kMaxShare) a_y += per_unit;
    if (k.measure == costmodel::ShareMeasure::kGroupedMax) a_w += per_unit;
  }
  // Memory per device, in GB: fixed + split · r.
  double mem_fixed = 0, mem_split = 0;
  for (const costmodel::MemoryTerm& m : pc.memory) (m.group >= 0 ? mem_split : mem_fixed) += m.bytes * 1e-9;

  const std::vector<costmodel::DeviceClass> classes = c.Classes();
  std::vector<double> class_ratios(classes.size(), 0.0);
  try {
    z3::context ctx;
    z3::optimize opt(ctx);
    std::vector<z3::expr> r;
    z3::expr zf = ctx.real_const("zF"), zb = ctx.real_const("zB"), y = ctx.real_const("y"), w = ctx.real_const("w");
    z3::expr total = ctx.real_val(0);
    for (size_t k = 0; k < classes.size(); ++k) {
      const costmodel::Device& d = c.devices[static_cast<size_t>(classes[k].devices.front())];
      r.push_back(ctx.real_const(StrCat("r", k).c_str()));
      const z3::expr& rk = r.back();
      opt.add(rk >= 0);
      opt.add(zf >= rk * Q(ctx, fmax / d.flops));
      opt.add(zb >= rk * Q(ctx, bwmax / d.memory_bandwidth));
      opt.add(y >= rk);
      opt.add(w >= 1 - rk);
      opt.add(w >= rk * Q(ctx, n - 1.0));
      if (o.memory_limits) {
        // 1% headroom for rounding shares to whole atoms.
        opt.add(Q(ctx, mem_fixed) + Q(ctx, mem_split) * rk <= Q(ctx, 0.99e-9 * d.memory_bytes));
      }
      total = total + rk * ctx.real_val(static_cast<int>(classes[k].devices.size()));
    }
    opt.add(total == 1);
    opt.minimize(Q(ctx, a_f) * zf + Q(ctx, a_b) * zb + Q(ctx, a_y) * y + Q(ctx, a_w) * w);
    const z3::check_result res = opt.check();
    if (res == z3::unknown) {
      return Z3Unknown(StrCat("ratio lp over ", classes.size(), " device classes"), Z3_optimize_get_reason_unknown(ctx, opt),
                       __FILE__, __LINE__);
    }
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
    const z3::model m = opt.get_model();
    for (size_t k = 0; k < classes.size(); ++k) {
      HS_ASSIGN_OR_RETURN(const double v, Value(m, r[k]));
      class_ratios[k] = std::max(0.0, v);
    }
  } catch (const z3::exception& e) {
    return Z3Error(StrCat("ratio lp over ", classes.size(), " device classes"), e, __FILE__, __LINE__);
  }
  std::vector<double> out(static_cast<size_t>(n), 0.0);
  double sum = 0;
  for (size_t k = 0; k < classes.size(); ++k) {
    for (costmodel::DeviceId d : classes[k].devices) out[static_cast<size_t>(d)] = class_ratios[k], sum += class_ratios[k];
  }
  for (double& v : out) v /= sum;  // exact rationals printed to 17 digits: renormalize the last bits
  return out;
}

}  // namespace hetsynth::synth

namespace hetsynth::synth {

struct MemoryOracle::Solver {
  z3::context ctx;
  z3::solver solver{ctx};
  std::vector<z3::expr> ratios;      // per device class
  std::vector<int64_t> capacity_mib;  // per device class
};

MemoryOracle::MemoryOracle(const costmodel::Cluster& c) : c_(c) {}

MemoryOracle::~MemoryOracle() = default;

void MemoryOracle::BuildSolver() {
  z3_ = std::make_unique<Solver>();
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
