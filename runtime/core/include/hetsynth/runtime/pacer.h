// Time dilation (docs/emulated-cluster.md): a rank paces its local work in real time so that the
// whole emulated cluster runs K× slower than the modelled one, and its wall-clock times ÷ K are
// the modelled times.
//
// A rank emulates a device `slowdown` times slower than this host (the executor's
// ExecutorOptions::slowdown, max_flops / flops of its device: the fastest device of the cluster
// file is this host). A stretch of local work that takes c seconds of this thread's CPU time
// therefore takes c × slowdown modelled seconds, and should take K × c × slowdown real seconds.
// The pacer measures each piece of work by the thread's CPU time (which does not advance while
// the thread waits for a core, so ranks sharing few cores are still charged what they computed),
// and when the stretch ends — before the next collective, or at the end of the step — sleeps
// until the stretch's real duration is K × its modelled time. Collectives run in real time
// between stretches: over the emulated cluster's links, shaped to bandwidth ÷ K, so that they take
// K × their modelled time by themselves.
//
// When the host cannot keep up (the ranks' CPU use exceeds the cores, so a stretch already took
// longer than K × modelled), the pacer cannot slow down what is already late: it records the
// excess as `late_s` (real seconds ÷ K, i.e. modelled seconds) and the measured step is longer
// than the modelled one by that much. Choose K large enough that it stays near zero
// (DefaultDilation).
//
//   Pacer pacer(/*dilation=*/8, /*slowdown=*/2);
//   pacer.StartStep();
//   double dt = pacer.Work([&] { kernel(); });  // modelled seconds of this piece
//   pacer.Settle();                              // before a collective: sleep to K × modelled
//   double t = pacer.Elapsed();                  // modelled seconds since StartStep (wall ÷ K)
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <string>
#include <thread>

#include "hetsynth/runtime/cpu_time.h"

namespace hetsynth::runtime {

// The environment variable `hetsynth cluster run` exports to every rank (the dilation factor K).
inline constexpr const char* kDilationEnv = "HETSYNTH_DILATION";

// K from HETSYNTH_DILATION: 0 when unset or empty (no dilation), -1 when not a number >= 1.
inline double DilationFromEnv() {
  const char* v = std::getenv(kDilationEnv);
  if (v == nullptr || *v == '\0') return 0;
  char* end = nullptr;
  const double k = std::strtod(v, &end);
  if (end == v || *end != '\0' || !std::isfinite(k) || k < 1) return -1;
  return k;
}

// The smallest K at which `ranks` paced ranks fit `cores` cores with `headroom` (≥ 1) to spare:
// a rank of relative speed s_i (flops_i / fastest; the fastest device runs at this host's speed)
// computes c seconds in every K·c/s_i real seconds, a CPU share of s_i/K; the shares must sum to
// at most cores / headroom. Rounded up to an integer, at least 1.
inline double DilationForCores(double sum_relative_speed, double cores, double headroom = 1.5) {
  if (cores <= 0) cores = 1;
  return std::max(1.0, std::ceil(sum_relative_speed * headroom / cores - 1e-9));
}

class Pacer {
 public:
  Pacer() = default;
  // dilation 0: off (every call is a no-op apart from Work running its function).
  Pacer(double dilation, double slowdown) : k_(dilation), slowdown_(slowdown) {}

  bool on() const { return k_ > 0; }
  double dilation() const { return k_; }

  // The step's time origin (wall clock).
  void StartStep() {
    step_start_ = Now();
    open_ = false;
    late_s_ = 0;
  }

  // Runs local work and returns its modelled duration: thread CPU time × slowdown. Opens a
  // stretch at its first piece.
  template <class F>
  double Work(F&& f) {
    if (!open_) {
      open_ = true;
      stretch_start_ = Now();
      stretch_modelled_ = 0;
    }
    const double c0 = ThreadCpuSeconds();
    f();
    const double dt = (ThreadCpuSeconds() - c0) * slowdown_;
    stretch_modelled_ += dt;
    return dt;
  }

  // Ends the open stretch (if any): sleeps until its real duration is K × its modelled time.
  // Returns the modelled seconds the stretch ran late (0 when on time).
  double Settle() {
    if (!open_ || !on()) return 0;
    open_ = false;
    const double target = stretch_start_ + k_ * stretch_modelled_;
    double now = Now();
    if (now < target) {
      // Capped (31 years): a duration past the clock's range would overflow, and no sleep at all.
      std::this_thread::sleep_for(std::chrono::duration<double>(std::min(target - now, 1e9)));
      return 0;
    }
    const double late = (now - target) / k_;
    late_s_ += late;
    return late;
  }

  // Modelled seconds since StartStep: wall-clock time ÷ K.
  double Elapsed() const { return (Now() - step_start_) / (on() ? k_ : 1.0); }
  // Real seconds → modelled seconds.
  double Modelled(double wall_s) const { return wall_s / (on() ? k_ : 1.0); }
  // Modelled seconds this step's stretches ran late.
  double late_s() const { return late_s_; }

  static double Now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  }

 private:
  double k_ = 0, slowdown_ = 1;
  double step_start_ = 0, stretch_start_ = 0, stretch_modelled_ = 0, late_s_ = 0;
  bool open_ = false;
};

}  // namespace hetsynth::runtime
