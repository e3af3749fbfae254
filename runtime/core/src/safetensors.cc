// Safetensors reading and writing. The file is read with pread into per-tensor buffers rather
// than loaded whole, so a multi-gigabyte checkpoint costs its fp32 tensors plus one tensor's raw
// bytes, not two copies of the file.
#include "hetsynth/runtime/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <set>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "hetsynth/ir/input_limits.h"
#include "hetsynth/base/status.h"
#include "hetsynth/base/temp_files.h"

namespace hetsynth::runtime {
namespace {

using json = nlohmann::json;

// The reference implementation refuses larger headers; a bigger size field means a foreign file.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// fp32 holds every integer of magnitude <= 2^24 exactly, and not all beyond.
constexpr int64_t kMaxExactInt = int64_t{1} << 24;
constexpr std::string_view kMetadataKey = "__metadata__";

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU64, kU32, kU16, kU8, kBool };

struct DTypeInfo {
  std::string_view name;  // as spelled in the header
  DType dtype;
  uint64_t bytes;  // per element
};

constexpr DTypeInfo kDTypes[] = {
    {"F64", DType::kF64, 8}, {"F32", DType::kF32, 4}, {"F16", DType::kF16, 2},
    {"BF16", DType::kBF16, 2}, {"I64", DType::kI64, 8}, {"I32", DType::kI32, 4},
    {"I16", DType::kI16, 2}, {"I8", DType::kI8, 1}, {"U64", DType::kU64, 8},
    {"U32", DType::kU32, 4}, {"U16", DType::kU16, 2}, {"U8", DType::kU8, 1},
    {"BOOL", DType::kBool, 1},
};

std::string DTypeList() {
  std::string s;
  for (const DTypeInfo& d : kDTypes) s += StrCat(s.empty() ? "" : ", ", d.name);
  return s;
}

const DTypeInfo* FindDType(std::string_view name) {
  for (const DTypeInfo& d : kDTypes) {
    if (d.name == name) return &d;
  }
  return nullptr;
}

// "safetensors 'PATH': " followed by the rest.
template <typename... Args>
absl::Status Invalid(const std::string& path, const Args&... args) {
  return absl::InvalidArgumentError(StrCat("safetensors '", path, "': ", args...));
}

// An I/O failure: the status code and the strerror text come from errno.
absl::Status IoError(int err, const std::string& path, const std::string& what) {
  return absl::ErrnoToStatus(err, StrCat("safetensors '", path, "': ", what));
}

// A JSON value for an error message: compact, shortened, with its type ("2.5 (number)").
std::string Describe(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return StrCat(s, " (", v.type_name(), ")");
}

// The value of a non-negative JSON integer that fits in int64, if `v` is one.
std::optional<uint64_t> AsIndex(const json& v) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return u;
  } else if (v.is_number_integer()) {
    const int64_t i = v.get<int64_t>();
    if (i >= 0) return static_cast<uint64_t>(i);
  }
  return std::nullopt;
}

template <typename U>
U LoadLE(const unsigned char* p) {
  U v = 0;
  for (size_t i = 0; i < sizeof(U); ++i) v = static_cast<U>(v | static_cast<U>(static_cast<U>(p[i]) << (8 * i)));
  return v;
}

template <typename U>
void StoreLE(U v, unsigned char* p) {
  for (size_t i = 0; i < sizeof(U); ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24
    const float f = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -f : f;
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));  // inf / nan
  return std::bit_cast<float>(sign | ((exp + 127 - 15) << 23) | (mant << 13));
}

// One validated header entry.
struct Entry {
  std::string name;
  const DTypeInfo* dtype = nullptr;
  ir::Shape shape;
  uint64_t numel = 0;
  uint64_t begin = 0, end = 0;  // byte range in the data buffer
};

std::string RangeString(uint64_t begin, uint64_t end) { return StrCat("[", begin, ",", end, "]"); }

absl::StatusOr<Entry> ParseEntry(const std::string& path, const std::string& name, const json& v,
                                 uint64_t buffer_bytes) {
  const std::string t = StrCat("tensor '", name, "'");
  if (!v.is_object()) {
    return Invalid(path, t, " is ", Describe(v),
                   "; expected an object with \"dtype\", \"shape\" and \"data_offsets\"");
  }
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!v.contains(field)) {
      return Invalid(path, t, " has no \"", field,
                     "\"; expected an object with \"dtype\", \"shape\" and \"data_offsets\"");
    }
  }
  Entry e;
  e.name = name;

  const json& dtype = v.at("dtype");
  if (!dtype.is_string()) {
    return Invalid(path, t, " has dtype ", Describe(dtype), "; expected a string such as \"F32\"");
  }
  const std::string dtype_name = dtype.get<std::string>();
  e.dtype = FindDType(dtype_name);
  if (e.dtype == nullptr) {
    return Invalid(path, t, " has dtype '", dtype_name, "'; expected one of ", DTypeList());
  }

  const json& shape = v.at("shape");
  if (!shape.is_array()) {
    return Invalid(path, t, " has shape ", Describe(shape),
                   "; expected an array of non-negative integers");
  }
  for (size_t i = 0; i < shape.size(); ++i) {
    std::optional<uint64_t> d = AsIndex(shape[i]);
    if (!d) {
      return Invalid(path, t, " has shape ", Describe(shape), " whose dim ", i, " is ",
                     Describe(shape[i]), "; expected a non-negative integer");
    }
    e.shape.push_back(static_cast<int64_t>(*d));
  }
  // numel and byte size with overflow checks; a zero dim anywhere makes the tensor empty.
  uint64_t numel = 1, need = 0;
  bool overflow = false;
  if (std::find(e.shape.begin(), e.shape.end(), 0) != e.shape.end()) {
    numel = 0;
  } else {
    for (int64_t d : e.shape) overflow |= __builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel);
  }
  overflow |= __builtin_mul_overflow(numel, e.dtype->bytes, &need);
  if (overflow) {
    return Invalid(path, t, " has shape ", ir::ShapeString(e.shape),
                   " whose byte size overflows 64 bits; expected a size that fits the file");
  }
  e.numel = numel;

  const json& offsets = v.at("data_offsets");
  std::optional<uint64_t> begin, end;
  if (offsets.is_array() && offsets.size() == 2) {
    begin = AsIndex(offsets[0]);
    end = AsIndex(offsets[1]);
  }
  if (!begin || !end) {
    return Invalid(path, t, " has data_offsets ", Describe(offsets),
                   "; expected [begin, end] with two non-negative integers");
  }
  e.begin = *begin;
  e.end = *end;
  const std::string range = RangeString(e.begin, e.end);
  if (e.begin > e.end) {
    return Invalid(path, t, " has data_offsets ", range, "; expected begin <= end");
  }
  if (e.end - e.begin != need) {
    return Invalid(path, t, " has data_offsets ", range, " but dtype ", e.dtype->name,
                   " and shape ", ir::ShapeString(e.shape), " need ", need, " bytes");
  }
  if (e.end > buffer_bytes) {
    return Invalid(path, t, " has data_offsets ", range, " but the data buffer holds only ",
                   buffer_bytes, " bytes; expected offsets within the buffer (is the file truncated?)");
  }
  return e;
}

absl::StatusOr<std::map<std::string, std::string>> ParseMetadata(const std::string& path, const json& v) {
  if (!v.is_object()) {
    return Invalid(path, "__metadata__ is ", Describe(v), "; expected an object of string values");
  }
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : v.items()) {
    if (!value.is_string()) {
      return Invalid(path, "__metadata__ entry '", key, "' is ", Describe(value), "; expected a string");
    }
    out[key] = value.get<std::string>();
  }
  return out;
}

// Tensors whose byte ranges intersect would alias each other's data.
absl::Status CheckDisjoint(const std::string& path, std::vector<const Entry*> entries) {
  std::erase_if(entries, [](const Entry* e) { return e->begin == e->end; });
  std::sort(entries.begin(), entries.end(), [](const Entry* a, const Entry* b) {
    return std::pair(a->begin, a->end) < std::pair(b->begin, b->end);
  });
  const Entry* reach = nullptr;  // the entry reaching furthest so far
  for (const Entry* e : entries) {
    if (reach != nullptr && e->begin < reach->end) {
      return Invalid(path, "tensors '", reach->name, "' data_offsets ", RangeString(reach->begin, reach->end),
                     " and '", e->name, "' data_offsets ", RangeString(e->begin, e->end),
                     " overlap; expected disjoint byte ranges");
    }
    if (reach == nullptr || e->end > reach->end) reach = e;
  }
  return absl::OkStatus();
}

// Owns a file descriptor.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

// Reads exactly n bytes at `offset`; `what` names them for the error message.
absl::Status ReadAt(int fd, const std::string& path, uint64_t offset, void* dst, size_t n,
                    const std::string& what) {
  auto* p = static_cast<unsigned char*>(dst);
  while (n > 0) {
    const ssize_t got = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      return IoError(errno, path, StrCat("cannot read ", what));
    }
    if (got == 0) {
      return Invalid(path, "file ended at byte ", offset, " while reading ", what,
                     "; expected more data (was the file truncated while being read?)");
    }
    p += got;
    offset += static_cast<uint64_t>(got);
    n -= static_cast<size_t>(got);
  }
  return absl::OkStatus();
}

template <typename Int, typename U>
absl::Status ConvertInts(const std::string& path, const Entry& e, const unsigned char* src, float* dst) {
  for (uint64_t i = 0; i < e.numel; ++i) {
    const Int v = std::bit_cast<Int>(LoadLE<U>(src + i * sizeof(U)));
    if constexpr (sizeof(Int) >= 4) {
      bool too_big;
      if constexpr (std::is_signed_v<Int>) {
        too_big = v > kMaxExactInt || v < -kMaxExactInt;
      } else {
        too_big = v > static_cast<uint64_t>(kMaxExactInt);
      }
      if (too_big) {
        return Invalid(path, "tensor '", e.name, "' (", e.dtype->name, ") element ", i, " is ",
                       +v, "; expected magnitude at most 2^24 = ", kMaxExactInt,
                       ", since hetsynth tensors are fp32, which cannot hold larger integers exactly");
      }
    }
    dst[i] = static_cast<float>(v);
  }
  return absl::OkStatus();
}

absl::Status Convert(const std::string& path, const Entry& e, const unsigned char* src, float* dst) {
  switch (e.dtype->dtype) {
    case DType::kF32:
      for (uint64_t i = 0; i < e.numel; ++i) dst[i] = std::bit_cast<float>(LoadLE<uint32_t>(src + 4 * i));
      return absl::OkStatus();
    case DType::kF64:
      for (uint64_t i = 0; i < e.numel; ++i) {
        const double d = std::bit_cast<double>(LoadLE<uint64_t>(src + 8 * i));
        dst[i] = static_cast<float>(d);
        if (std::isinf(dst[i]) && std::isfinite(d)) {
          return Invalid(path, "tensor '", e.name, "' (F64) element ", i, " is ", d,
                         "; expected a value within the fp32 range (magnitude at most ",
                         std::numeric_limits<float>::max(), ")");
        }
      }
      return absl::OkStatus();
    case DType::kF16:
      for (uint64_t i = 0; i < e.numel; ++i) dst[i] = HalfToFloat(LoadLE<uint16_t>(src + 2 * i));
      return absl::OkStatus();
    case DType::kBF16:
      for (uint64_t i = 0; i < e.numel; ++i) {
        dst[i] = std::bit_cast<float>(static_cast<uint32_t>(LoadLE<uint16_t>(src + 2 * i)) << 16);
      }
      return absl::OkStatus();
    case DType::kI64: return ConvertInts<int64_t, uint64_t>(path, e, src, dst);
    case DType::kI32: return ConvertInts<int32_t, uint32_t>(path, e, src, dst);
    case DType::kI16: return ConvertInts<int16_t, uint16_t>(path, e, src, dst);
    case DType::kI8: return ConvertInts<int8_t, uint8_t>(path, e, src, dst);
    case DType::kU64: return ConvertInts<uint64_t, uint64_t>(path, e, src, dst);
    case DType::kU32: return ConvertInts<uint32_t, uint32_t>(path, e, src, dst);
    case DType::kU16: return ConvertInts<uint16_t, uint16_t>(path, e, src, dst);
    case DType::kU8: return ConvertInts<uint8_t, uint8_t>(path, e, src, dst);
    case DType::kBool:
      for (uint64_t i = 0; i < e.numel; ++i) {
        if (src[i] > 1) {
          return Invalid(path, "tensor '", e.name, "' (BOOL) element ", i, " is byte ",
                         static_cast<int>(src[i]), "; expected 0 or 1");
        }
        dst[i] = static_cast<float>(src[i]);
      }
      return absl::OkStatus();
  }
  HS_CHECK(false, "unhandled safetensors dtype");
}

// Writes all n bytes.
absl::Status WriteAll(int fd, const std::string& path, const std::string& tmp, const void* src, size_t n) {
  const auto* p = static_cast<const unsigned char*>(src);
  while (n > 0) {
    const ssize_t put = ::write(fd, p, n);
    if (put < 0) {
      if (errno == EINTR) continue;
      return IoError(errno, path, StrCat("cannot write temporary file '", tmp, "'"));
    }
    p += put;
    n -= static_cast<size_t>(put);
  }
  return absl::OkStatus();
}

// `s` as a JSON string literal; fails on invalid UTF-8, which JSON cannot carry.
absl::StatusOr<std::string> JsonString(const std::string& path, const std::string& s, const std::string& what) {
  try {
    return json(s).dump();
  } catch (const json::exception&) {
    return Invalid(path, what, " is not valid UTF-8; expected a UTF-8 string");
  }
}

// The header JSON, laid out as the reference writer does: metadata first, then the tensors,
// each {"dtype","shape","data_offsets"}, compact, padded with spaces to a multiple of 8 bytes.
absl::StatusOr<std::string> BuildHeader(const std::string& path, const std::map<std::string, Tensor>& tensors,
                                        const std::map<std::string, std::string>& metadata) {
  std::string h = "{";
  if (!metadata.empty()) {
    h += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [key, value] : metadata) {
      HS_ASSIGN_OR_RETURN(std::string k, JsonString(path, key, StrCat("metadata key '", key, "'")));
      HS_ASSIGN_OR_RETURN(std::string v, JsonString(path, value, StrCat("metadata value of '", key, "'")));
      h += StrCat(first ? "" : ",", k, ":", v);
      first = false;
    }
    h += "}";
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == kMetadataKey) {
      return Invalid(path, "tensor name '", name, "' is reserved for metadata; expected another name");
    }
    for (size_t i = 0; i < t.shape.size(); ++i) {
      if (t.shape[i] < 0) {
        return Invalid(path, "tensor '", name, "' has shape ", ir::ShapeString(t.shape), " whose dim ", i,
                       " is ", t.shape[i], "; expected non-negative dims");
      }
    }
    const int64_t numel = ir::NumElements(t.shape);
    if (numel != t.numel()) {
      return Invalid(path, "tensor '", name, "' has shape ", ir::ShapeString(t.shape), " (", numel,
                     " elements) but ", t.numel(), " data values; expected them to match");
    }
    HS_ASSIGN_OR_RETURN(std::string k, JsonString(path, name, StrCat("tensor name '", name, "'")));
    const uint64_t end = offset + static_cast<uint64_t>(numel) * 4;
    h += StrCat(h.size() > 1 ? "," : "", k, ":{\"dtype\":\"F32\",\"shape\":", ir::ShapeString(t.shape),
                ",\"data_offsets\":", RangeString(offset, end), "}");
    offset = end;
  }
  h += "}";
  h.append((8 - h.size() % 8) % 8, ' ');
  return h;
}

// A name beside `path` that no other writer (thread or process) is using.
std::string TempName(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return StrCat(path, ".tmp.", ::getpid(), ".", counter.fetch_add(1));
}

}  // namespace

absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path, const SafetensorsHeaderCheck& check) {
  // O_NONBLOCK: opening a FIFO without a writer would block forever; it is refused below as not a
  // regular file. Regular files ignore the flag, but it is cleared before any read anyway.
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (fd.get() < 0) {
    const int err = errno;
    return IoError(err, path, "cannot open");  // ENOENT gives NotFound
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return IoError(errno, path, "cannot stat");
  if (!S_ISREG(st.st_mode)) return Invalid(path, "is not a regular file; expected a safetensors file");
  if (const int flags = ::fcntl(fd.get(), F_GETFL); flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) {
    return IoError(errno, path, "cannot clear O_NONBLOCK");
  }
  const uint64_t file_bytes = static_cast<uint64_t>(st.st_size);
  if (file_bytes < 8) {
    return Invalid(path, "file is ", file_bytes,
                   " bytes; expected at least 8 (the little-endian u64 header size)");
  }

  unsigned char size_field[8];
  HS_RETURN_IF_ERROR(ReadAt(fd.get(), path, 0, size_field, 8, "the header size"));
  const uint64_t header_bytes = LoadLE<uint64_t>(size_field);
  if (header_bytes > kMaxHeaderBytes) {
    return Invalid(path, "header size is ", header_bytes, " bytes; expected at most ", kMaxHeaderBytes,
                   " (is this a safetensors file?)");
  }
  if (header_bytes > file_bytes - 8) {
    return Invalid(path, "header size is ", header_bytes, " bytes but only ", file_bytes - 8,
                   " bytes follow the size field; expected a header within the file (is it truncated?)");
  }
  std::string header_text(header_bytes, '\0');
  HS_RETURN_IF_ERROR(ReadAt(fd.get(), path, 8, header_text.data(), header_text.size(), "the header"));

  if (const int depth = ir::JsonNestingDepth(header_text); depth > ir::kMaxJsonDepth) {
    return Invalid(path, "header nests arrays/objects ", depth, " deep; expected at most ", ir::kMaxJsonDepth);
  }
  // nlohmann keeps the last of duplicate keys; a key twice in one object (a tensor name, a field
  // of a tensor entry, a metadata key) is an error instead. One set of keys per open object.
  std::vector<std::set<std::string>> seen;
  std::optional<std::string> duplicate;
  std::string duplicate_in;  // "" at the top level, else the key of the enclosing object
  std::vector<std::string> path_keys;  // the key of each open object ("" for the top level)
  std::string last_key;
  json header;
  try {
    header = json::parse(header_text, [&](int /*depth*/, json::parse_event_t event, json& parsed) {
      if (event == json::parse_event_t::object_start) {
        seen.emplace_back();
        path_keys.push_back(seen.size() == 1 ? std::string() : last_key);
      } else if (event == json::parse_event_t::object_end) {
        if (!seen.empty()) seen.pop_back(), path_keys.pop_back();
      } else if (event == json::parse_event_t::key && !seen.empty()) {
        last_key = parsed.get<std::string>();
        if (!duplicate && !seen.back().insert(last_key).second) {
          duplicate = last_key;
          duplicate_in = path_keys.back();
        }
      }
      return true;
    });
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number past double's range
    std::string what = e.what();
    if (size_t p = what.find("] "); what.starts_with("[json.exception") && p != std::string::npos) {
      what = what.substr(p + 2);
    }
    return Invalid(path, "header is not valid JSON (", what, "); expected a UTF-8 JSON object");
  }
  if (!header.is_object()) {
    return Invalid(path, "header is ", Describe(header), "; expected a JSON object");
  }
  if (duplicate) {
    if (duplicate_in.empty()) return Invalid(path, "header names '", *duplicate, "' twice; expected each name once");
    return Invalid(path, duplicate_in == kMetadataKey ? "__metadata__" : StrCat("tensor '", duplicate_in, "'"),
                   " has key '", *duplicate, "' twice; expected each key once");
  }

  const uint64_t buffer_start = 8 + header_bytes;
  const uint64_t buffer_bytes = file_bytes - buffer_start;
  SafetensorsFile out;
  std::vector<Entry> entries;
  for (const auto& [name, value] : header.items()) {
    if (name == kMetadataKey) {
      HS_ASSIGN_OR_RETURN(out.metadata, ParseMetadata(path, value));
      continue;
    }
    HS_ASSIGN_OR_RETURN(Entry e, ParseEntry(path, name, value, buffer_bytes));
    entries.push_back(std::move(e));
  }
  std::vector<const Entry*> ptrs;
  for (const Entry& e : entries) ptrs.push_back(&e);
  HS_RETURN_IF_ERROR(CheckDisjoint(path, std::move(ptrs)));
  // As the reference implementation: the tensors index the whole buffer, nothing after the last.
  uint64_t indexed = 0;
  for (const Entry& e : entries) indexed = std::max(indexed, e.end);
  if (indexed != buffer_bytes) {
    return Invalid(path, buffer_bytes - indexed, " bytes after the last tensor's data (byte ", indexed,
                   " of the ", buffer_bytes, "-byte data buffer) belong to no tensor; expected the tensors to "
                   "cover the buffer to its end");
  }
  if (check) {
    SafetensorsHeader h;
    h.metadata = out.metadata;
    for (const Entry& e : entries) h.shapes.emplace(e.name, e.shape);
    HS_RETURN_IF_ERROR(check(h));
  }

  std::vector<unsigned char> raw;
  for (const Entry& e : entries) {
    Tensor t;
    t.shape = e.shape;
    t.data.resize(e.numel);
    const size_t n = e.end - e.begin;
    const std::string what = StrCat("tensor '", e.name, "'");
    if (e.dtype->dtype == DType::kF32 && std::endian::native == std::endian::little) {
      HS_RETURN_IF_ERROR(ReadAt(fd.get(), path, buffer_start + e.begin, t.data.data(), n, what));
    } else {
      raw.resize(n);
      HS_RETURN_IF_ERROR(ReadAt(fd.get(), path, buffer_start + e.begin, raw.data(), n, what));
      HS_RETURN_IF_ERROR(Convert(path, e, raw.data(), t.data.data()));
    }
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

absl::Status WriteSafetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  HS_ASSIGN_OR_RETURN(const std::string header, BuildHeader(path, tensors, metadata));

  // O_EXCL with the default mode, so the umask applies as for any new file (mkstemp gives 0600).
  std::string tmp;
  int raw_fd = -1;
  for (int attempt = 0; attempt < 100 && raw_fd < 0; ++attempt) {
    tmp = TempName(path);
    raw_fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (raw_fd < 0 && errno != EEXIST) break;
  }
  if (raw_fd < 0) return IoError(errno, path, StrCat("cannot create temporary file '", tmp, "'"));
  Fd fd(raw_fd);
  const TempFileGuard guard(tmp);  // removed if SIGINT/SIGTERM/SIGHUP arrives before the rename

  auto write_all = [&]() -> absl::Status {
    unsigned char size_field[8];
    StoreLE<uint64_t>(header.size(), size_field);
    HS_RETURN_IF_ERROR(WriteAll(fd.get(), path, tmp, size_field, 8));
    HS_RETURN_IF_ERROR(WriteAll(fd.get(), path, tmp, header.data(), header.size()));
    std::vector<unsigned char> bytes;
    for (const auto& [name, t] : tensors) {
      if constexpr (std::endian::native == std::endian::little) {
        HS_RETURN_IF_ERROR(WriteAll(fd.get(), path, tmp, t.ptr(), t.data.size() * sizeof(float)));
      } else {
        bytes.resize(t.data.size() * 4);
        for (size_t i = 0; i < t.data.size(); ++i) StoreLE(std::bit_cast<uint32_t>(t.data[i]), &bytes[4 * i]);
        HS_RETURN_IF_ERROR(WriteAll(fd.get(), path, tmp, bytes.data(), bytes.size()));
      }
    }
    // fsync before rename, so a crash leaves the old file or the complete new one.
    if (::fsync(fd.get()) != 0) return IoError(errno, path, StrCat("cannot sync temporary file '", tmp, "'"));
    if (::close(fd.release()) != 0) {
      return IoError(errno, path, StrCat("cannot close temporary file '", tmp, "'"));
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
      return IoError(errno, path, StrCat("cannot rename temporary file '", tmp, "' to it"));
    }
    return absl::OkStatus();
  };
  absl::Status s = write_all();
  if (!s.ok()) ::unlink(tmp.c_str());
  return s;
}

}  // namespace hetsynth::runtime
