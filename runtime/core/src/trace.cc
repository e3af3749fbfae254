// Chrome trace files (the JSON object format of the Trace Event Format): complete events
// ("ph": "X") with microsecond times, one process per rank.
#include <fstream>

#include <nlohmann/json.hpp>

#include "hetsynth/base/status.h"
#include "hetsynth/runtime/executor.h"

namespace hetsynth::runtime {

absl::Status WriteChromeTrace(const std::string& path, const std::vector<TraceEvent>& events,
                              const std::vector<std::string>& rank_names, const std::string& title) {
  using nlohmann::json;
  json list = json::array();
  for (size_t r = 0; r < rank_names.size(); ++r) {
    list.push_back({{"ph", "M"}, {"name", "process_name"}, {"pid", r}, {"tid", 0},
                    {"args", {{"name", StrCat("rank ", r, " (", rank_names[r], ")")}}}});
    list.push_back({{"ph", "M"}, {"name", "process_sort_index"}, {"pid", r}, {"tid", 0},
                    {"args", {{"sort_index", r}}}});
  }
  // One track per stream: the compute stream, and the communication stream where a rank has one.
  std::vector<bool> has_stream(rank_names.size(), false);
  for (const TraceEvent& e : events) {
    if (e.track == 1 && e.rank >= 0 && static_cast<size_t>(e.rank) < has_stream.size()) has_stream[e.rank] = true;
  }
  for (size_t r = 0; r < rank_names.size(); ++r) {
    if (!has_stream[r]) continue;
    list.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", r}, {"tid", 0}, {"args", {{"name", "compute"}}}});
    list.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", r}, {"tid", 1},
                    {"args", {{"name", "communication stream"}}}});
  }
  for (const TraceEvent& e : events) {
    list.push_back({{"ph", "X"}, {"name", e.name}, {"cat", e.category}, {"pid", e.rank}, {"tid", e.track},
                    {"ts", e.start_s * 1e6}, {"dur", e.duration_s * 1e6}});
  }
  json root = {{"traceEvents", std::move(list)}, {"displayTimeUnit", "ms"},
               {"otherData", {{"title", title}}}};
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InvalidArgumentError(StrCat("--trace '", path, "': cannot open for writing"));
  out << root.dump() << "\n";
  out.close();  // a full disk shows at the flush
  if (!out) return absl::InvalidArgumentError(StrCat("--trace '", path, "': write failed"));
  return absl::OkStatus();
}

}  // namespace hetsynth::runtime
