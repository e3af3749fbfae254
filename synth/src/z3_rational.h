// Private: numbers for Z3's exact arithmetic, shared by the ratio LP (ratio_lp.cc) and the
// placement MILP (placement_milp.cc).
#pragma once

#include <z3++.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace hetsynth::synth {

// A Z3 rational close to x (7 significant digits, fixed notation).
inline z3::expr Q(z3::context& ctx, double x) {
  if (x == 0 || !std::isfinite(x)) return ctx.real_val(0);
  const int digits = std::max(0, 7 - static_cast<int>(std::floor(std::log10(std::abs(x)))) - 1);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", std::min(digits, 18), x);
  return ctx.real_val(buf);
}

}  // namespace hetsynth::synth
