// What `bench --refit` compares a traced collective with: the tensor whose instructions the cost
// model priced it at. A trace event is named "op(x)", "op(grad x)" or, at a mesh level, "op(grad
// x, nodes)" / "op(grad x, devices)"; a gradient bucket's all-reduce "all_reduce(bucket k: n
// gradients[, nodes])", which the cost model prices at the placement of the parameter that
// completes the bucket (the last in its ready order).
//
//   RefitTensorOf("grad layers.0.w, nodes", last) == "layers.0.w"
//   RefitTensorOf("bucket 2: 12 gradients, nodes", last) == last(2)
#pragma once

#include <cstdlib>
#include <string>
#include <string_view>

namespace hetsynth::cli {

// `inside`: the text between the event name's parentheses. `last(k)`: the name of the parameter
// that completes bucket k ("" when there is no such bucket; the text is then kept).
template <class Last>
std::string RefitTensorOf(std::string inside, const Last& last) {
  if (inside.rfind("grad ", 0) == 0) inside = inside.substr(5);
  for (std::string_view level : {", nodes", ", devices"}) {
    if (inside.ends_with(level)) inside.resize(inside.size() - level.size());
  }
  if (inside.rfind("bucket ", 0) == 0) {
    char* end = nullptr;
    const unsigned long k = std::strtoul(inside.c_str() + 7, &end, 10);
    if (end != inside.c_str() + 7 && *end == ':') {
      std::string name = last(static_cast<size_t>(k));
      if (!name.empty()) return name;
    }
  }
  return inside;
}

}  // namespace hetsynth::cli
