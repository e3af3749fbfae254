// `bench --refit`'s update of the cost model's constants from one round of measured plans
// (bench_command.cc measures; this decides): each device class's rates and the inter_node
// collective tables, scaled by measured ÷ predicted.
//
//   RefitSums sums;                      // filled from the round's metrics and traces
//   std::string said;
//   costmodel::Cluster next = Refit(round_cluster, sums, &said);   // said: "compute fast x1.100, ..."
#pragma once

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "absl/strings/str_join.h"
#include "hetsynth/costmodel/cluster.h"

namespace hetsynth::cli {

// Measured against predicted, summed over the plans of one round: compute per device (each
// rank's compute per step against the compute the cost model gives its device,
// costmodel::DeviceComputeSeconds) and communication per table op (per instruction, the least
// over ranks of its collectives' time in the trace: the rank that arrives last waits least).
struct RefitSums {
  std::vector<double> device_pred, device_meas;  // per device of the round's cluster
  std::map<std::string, std::pair<double, double>> comm;  // op → (predicted, measured)
};

// The cluster of the next round: each device class's rates ÷ its compute ratio (measured /
// predicted, summed over the class's devices: devices of a class stay alike), the inter_node
// tables × their op's communication ratio. Ratios are clamped to [1/4, 4] per round.
inline costmodel::Cluster Refit(costmodel::Cluster c, const RefitSums& s, std::string* said) {
  auto clamp = [](double x) { return std::isfinite(x) && x > 0 ? std::clamp(x, 0.25, 4.0) : 1.0; };
  std::vector<std::string> parts;
  const std::vector<costmodel::DeviceClass> classes = c.Classes();
  for (const costmodel::DeviceClass& k : classes) {
    double pred = 0, meas = 0;
    for (costmodel::DeviceId i : k.devices) {
      if (static_cast<size_t>(i) >= s.device_pred.size()) continue;
      pred += s.device_pred[static_cast<size_t>(i)];
      meas += s.device_meas[static_cast<size_t>(i)];
    }
    const double rc = clamp(meas / pred);
    for (costmodel::DeviceId i : k.devices) {
      costmodel::Device& d = c.devices[static_cast<size_t>(i)];
      d.flops /= rc, d.memory_bandwidth /= rc, d.gemm_operand_bandwidth /= rc;
    }
    // Named by type, and by its first device where classes of one type differ (speed, links).
    const costmodel::Device& first = c.devices[static_cast<size_t>(k.devices.front())];
    const bool shared = std::count_if(classes.begin(), classes.end(), [&](const costmodel::DeviceClass& o) {
                          return c.devices[static_cast<size_t>(o.devices.front())].type == first.type;
                        }) > 1;
    const std::string label = shared ? first.type + "[" + first.name + "]" : first.type;
    parts.push_back(fmt::format("{} x{:.3f}", label, rc));
  }
  *said = fmt::format("compute {}", absl::StrJoin(parts, ", "));
  for (const auto& [op, pm] : s.comm) {
    const double r = clamp(pm.second / pm.first);
    *said += fmt::format(", {} x{:.3f}", op, r);
    // "gather" prices all-gathers and reduce-scatters alike (their duals): both tables move.
    auto hit = [&](const costmodel::CollectiveTable& t) {
      return t.link == "inter_node" && (t.op == op || (op == "gather" && (t.op == "all_gather" || t.op == "reduce_scatter")));
    };
    bool applied = false;
    for (costmodel::CollectiveTable& t : c.collectives) {
      if (!hit(t)) continue;
      applied = true;
      for (costmodel::CollectiveSample& x : t.samples) x.seconds *= r;
    }
    if (!applied) *said += " (no inter_node table: not applied)";
  }
  return c;
}

}  // namespace hetsynth::cli
