// Limits on untrusted input shared by every file format (graph, plan, cluster, safetensors
// header, profile): checked once, before a document is parsed, so that no later code (a
// recursive dump in an error message, a destructor) ever sees an unbounded value.
//
//   if (auto depth = ir::JsonNestingDepth(text); depth > ir::kMaxJsonDepth) {
//     return Err(StrCat("nesting depth ", depth, " exceeds ", ir::kMaxJsonDepth));
//   }
//   ... StrCat("'op' is ", ir::Shorten(v.dump()), ...)
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace hetsynth::ir {

// No hetsynth format nests deeper than 6; 64 leaves room for future formats and foreign
// safetensors metadata while keeping every recursive walk of a document shallow.
inline constexpr int kMaxJsonDepth = 64;

// The most elements of one tensor a model file may make the importer compute at load time
// (ONNX constant folding: ConstantOfShape, Range, Expand, Pad, ...; 2^28 = 268M, 2 GiB as the
// doubles folding holds): a bigger one is refused, naming the node, before it is allocated.
inline constexpr int64_t kMaxFoldedElements = int64_t{1} << 28;

// The longest chain of ONNX nodes, each consuming the one before, that the importer follows
// (its walk recurses once per node on a stack of its own, kImportStackBytes): far beyond any
// real export (a 96-layer transformer is ~6000 nodes deep).
inline constexpr int kMaxGraphDepth = 100000;

// The deepest nesting of arrays and objects in JSON text (brackets inside strings do not count),
// in one pass without recursion. Invalid JSON gives some number; the parser then refuses it.
inline int JsonNestingDepth(std::string_view text) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '[' || c == '{') {
      if (++depth > deepest) deepest = depth;
    }
    else if ((c == ']' || c == '}') && depth > 0) --depth;
  }
  return deepest;
}

// `s` cut to at most `max` bytes (ending in "..."), for quoting user values in one-line errors.
inline std::string Shorten(std::string s, size_t max = 60) {
  if (s.size() > max) {
    s.resize(max - 3);
    // Do not end inside a UTF-8 sequence.
    while (!s.empty() && (static_cast<unsigned char>(s.back()) & 0xC0) == 0x80) s.pop_back();
    if (!s.empty() && (static_cast<unsigned char>(s.back()) & 0x80)) s.pop_back();
    s += "...";
  }
  return s;
}

}  // namespace hetsynth::ir
