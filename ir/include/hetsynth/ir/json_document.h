// Parsing a JSON file format's text the way every hetsynth reader does (cluster, plan, placement
// and graph files): nlohmann's exceptions caught and turned into text for a one-line error, and
// the first key given twice in one object recorded (nlohmann keeps the last of them silently).
//
//   const ir::JsonDocument doc = ir::ParseJsonDocument(text);
//   if (!doc.error.empty()) return Err(StrCat("is not valid JSON (", ir::JsonErrorText(doc.error), ")"));
//   if (doc.duplicate_key) return Err(StrCat("field '", *doc.duplicate_key, "' appears twice ..."));
#pragma once

#include <cctype>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace hetsynth::ir {

struct JsonDocument {
  nlohmann::json root;
  std::string error;        // nlohmann's what() when parsing threw (a number out of range: its
                            // position and value); empty when the text parsed
  bool syntax = false;      // the throw was a parse error (not JSON), not a value out of range
  std::optional<std::string> duplicate_key;  // the first key given twice in one object
};

// nlohmann's "number overflow parsing '1e999'" (it names no position) as "line L, column C:
// field 'flops': number 1e999 is out of range; expected a finite number", the position that of
// the number's first appearance in the text, the field named when the number is a key's value.
inline std::string NumberOutOfRangeText(const std::string& text, const std::string& what) {
  const size_t open = what.find("parsing '");
  const size_t close = open == std::string::npos ? open : what.find('\'', open + 9);
  if (close == std::string::npos) return what;
  const std::string number = what.substr(open + 9, close - open - 9);
  size_t at = text.find(number);
  while (at != std::string::npos && at > 0 && (std::isalnum(static_cast<unsigned char>(text[at - 1])) ||
                                               text[at - 1] == '.' || text[at - 1] == '"')) {
    at = text.find(number, at + 1);
  }
  std::string where;
  if (at != std::string::npos) {
    size_t line = 1, column = 1;
    for (size_t i = 0; i < at; ++i) {
      column = text[i] == '\n' ? 1 : column + 1;
      line += text[i] == '\n';
    }
    where = "line " + std::to_string(line) + ", column " + std::to_string(column) + ": ";
    // The key it is the value of, when it is one: `"flops": 1e999`.
    size_t i = at;
    while (i > 0 && std::isspace(static_cast<unsigned char>(text[i - 1]))) --i;
    if (i > 0 && text[i - 1] == ':') {
      --i;
      while (i > 0 && std::isspace(static_cast<unsigned char>(text[i - 1]))) --i;
      const size_t key_end = i > 0 && text[i - 1] == '"' ? i - 1 : std::string::npos;
      const size_t key_start = key_end == std::string::npos ? key_end : text.rfind('"', key_end - 1);
      if (key_start != std::string::npos && key_end - key_start - 1 <= 64) {
        where += "field '" + text.substr(key_start + 1, key_end - key_start - 1) + "': ";
      }
    }
  }
  return where + "number " + (number.size() > 40 ? number.substr(0, 40) + "..." : number) +
         " is out of range; expected a finite number";
}

inline JsonDocument ParseJsonDocument(const std::string& text) {
  JsonDocument doc;
  std::vector<std::set<std::string>> open_objects;
  try {
    doc.root = nlohmann::json::parse(text, [&](int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
      if (event == nlohmann::json::parse_event_t::object_start) open_objects.emplace_back();
      if (event == nlohmann::json::parse_event_t::object_end && !open_objects.empty()) open_objects.pop_back();
      if (event == nlohmann::json::parse_event_t::key && !open_objects.empty() && !doc.duplicate_key &&
          !open_objects.back().insert(parsed.get<std::string>()).second) {
        doc.duplicate_key = parsed.get<std::string>();
      }
      return true;
    });
  } catch (const nlohmann::json::parse_error& e) {
    doc.error = e.what();
    doc.syntax = true;
  } catch (const nlohmann::json::out_of_range& e) {
    doc.error = NumberOutOfRangeText(text, e.what());
  } catch (const nlohmann::json::exception& e) {
    doc.error = e.what();
  }
  return doc;
}

// Text with nothing but blanks: an empty file.
inline bool IsBlank(std::string_view text) {
  for (char c : text) {
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') return false;
  }
  return true;
}

// nlohmann's what() without its "[json.exception.parse_error.101] " tag.
inline std::string WithoutJsonTag(const std::string& what) {
  const size_t tag = what.find("] ");
  return what.rfind("[json.", 0) == 0 && tag != std::string::npos ? what.substr(tag + 2) : what;
}

// nlohmann's what() from its position on ("line 3, column 5: syntax error ..."), or without its
// tag when it has no position.
inline std::string JsonErrorText(const std::string& what) {
  const size_t at = what.find(" at line ");
  return at != std::string::npos ? what.substr(at + 4) : WithoutJsonTag(what);
}

}  // namespace hetsynth::ir
