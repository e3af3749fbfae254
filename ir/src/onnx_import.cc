// ONNX import (onnx_import.h). The ONNX graph is read lazily from its outputs: a value is
// computed when something needs it, so constant subgraphs (shape arithmetic, masks) fold to
// tensors, decomposed patterns (GELU, attention) are matched where they end, and only the nodes
// that feed the output become IR nodes. docs/onnx.md describes the mapping.
#include "hetsynth/ir/onnx_import.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <type_traits>
#include <utility>

#include <sys/stat.h>
#include <time.h>

#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "hetsynth/base/status.h"
#include "hetsynth/ir/float_formats.h"
#include "hetsynth/ir/graph_json.h"
#include "hetsynth/ir/input_limits.h"
#include "hetsynth/ir/models.h"
#include "hetsynth/ir/regular_file.h"

#ifdef HETSYNTH_HAVE_ONNX
#include <onnx/checker.h>
#include <onnx/defs/schema.h>
#include <pthread.h>
#include <onnx/onnx_pb.h>
#endif

namespace hetsynth::ir {
namespace {

absl::Status Bad(const std::string& msg) { return absl::InvalidArgumentError(msg); }

// Operators mapped to IR ops (or folded when their inputs are constants).
const std::vector<std::string>& SupportedOps() {
  static const std::vector<std::string> ops = {
      "Abs", "Add", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant", "ConstantOfShape",
      "Conv", "Div", "Dropout", "Equal", "Erf", "Exp", "Expand", "Flatten", "Gather", "Gemm", "GlobalAveragePool",
      "HardSwish", "Identity", "LayerNormalization", "Less", "Log", "LogSoftmax", "MatMul", "MaxPool", "Mul", "Neg",
      "Not", "Pad", "Pow", "Range", "Reciprocal", "Relu", "Reshape", "Shape", "Sigmoid", "Slice", "Softmax",
      "Softplus", "Softsign", "Split", "Sqrt", "Squeeze", "Sub", "Tanh", "Transpose", "Unsqueeze", "Where"};
  return ops;
}

}  // namespace

std::string OnnxSupportedOps() { return absl::StrJoin(SupportedOps(), ", "); }

namespace {

constexpr uint64_t kFnvBasis = 1469598103934665603ull;
uint64_t Fnv(uint64_t h, const std::string& bytes) {
  for (char c : bytes) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h;
}
constexpr uint64_t kHashMask = (uint64_t{1} << 48) - 1;  // a plan keeps it in a double, exactly

// 48-bit FNV-1a of a model file's bytes (a plan records it).
uint64_t HashBytes(const std::string& bytes) { return Fnv(kFnvBasis, bytes) & kHashMask; }

}  // namespace

std::optional<FileStamp> StampOf(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  timespec now {};
  clock_gettime(CLOCK_REALTIME, &now);
  // Modified or changed within the last 2 s (or in the future): no stamp.
  const auto at = [](const timespec& t) { return std::pair<int64_t, int64_t>(t.tv_sec, t.tv_nsec); };
  if (std::max(at(st.st_mtim), at(st.st_ctim)) > std::pair<int64_t, int64_t>(int64_t{now.tv_sec} - 2, now.tv_nsec)) {
    return std::nullopt;
  }
  return FileStamp{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino), static_cast<int64_t>(st.st_size),
                   static_cast<int64_t>(st.st_mtim.tv_sec), static_cast<int64_t>(st.st_mtim.tv_nsec),
                   static_cast<int64_t>(st.st_ctim.tv_sec), static_cast<int64_t>(st.st_ctim.tv_nsec)};
}

std::string ChangedModelFile(const std::string& path, uint64_t hash, uint64_t recorded, bool from_plan) {
  const std::string file = StrCat("model file '", path, "'", IsOnnxFile(path) ? "" : " (with its weights file)");
  if (!from_plan) {
    return StrCat(file, " has changed since this command first read it (it hashed to ", recorded, ", now ", hash,
                  "); run the command again");
  }
  return StrCat(file, " has changed: it hashes to ", hash, " but the plan was made for ", recorded,
                "; synthesize a new plan");
}

namespace {
std::atomic<uint64_t> onnx_parsed{0};
}  // namespace

uint64_t OnnxFilesParsed() { return onnx_parsed.load(); }

absl::StatusOr<uint64_t> ModelFileHash(const std::string& path) {
  // A directory, a device or a FIFO is refused before reading (/dev/zero would never end).
  HS_ASSIGN_OR_RETURN(std::string bytes, ReadRegularFile(path, StrCat("model file '", path, "'")));
  if (IsOnnxFile(path)) return HashBytes(bytes);
  // A graph file's weights file (its "weights" field, relative to the graph file) is part of the
  // model: its bytes are hashed after the graph's. One that cannot be read is left to the graph
  // reader, which says so.
  const nlohmann::json root = nlohmann::json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  uint64_t h = Fnv(kFnvBasis, bytes);
  if (root.is_object() && root.contains("weights") && root["weights"].is_string() &&
      !root["weights"].get<std::string>().empty()) {
    const std::string w = GraphWeightsPath(path, root["weights"].get<std::string>());
    absl::StatusOr<std::string> weights = ReadRegularFile(w, StrCat("weights '", w, "'"));
    if (weights.ok()) h = Fnv(h, *weights);
  }
  return h & kHashMask;
}

#ifndef HETSYNTH_HAVE_ONNX

bool OnnxAvailable() { return false; }

absl::StatusOr<OnnxImport> ImportOnnx(const std::string& path, const OnnxImportOptions&) {
  return Bad(StrCat("model file '", path,
                    "': this hetsynth was built without ONNX support (install libonnx-dev and rebuild)"));
}

#else

bool OnnxAvailable() { return true; }

namespace {

// A constant: values as doubles (exact for float32 and for the integers of shape arithmetic).
struct Const {
  Shape dims;
  std::vector<double> v;
  bool integer = false;
};

int64_t Numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string DimsString(const Shape& s) { return ShapeString(s); }

// A folded value as an integer (an axis, a dim, an index): saturated at the int64 range, NaN as
// INT64_MIN (a static_cast of those is undefined), so that range checks refuse it.
int64_t SatInt(double x) {
  if (std::isnan(x) || x <= -9.2e18) return std::numeric_limits<int64_t>::min();
  if (x >= 9.2e18) return std::numeric_limits<int64_t>::max();
  return static_cast<int64_t>(x);
}

// The element count of `s` as a double (never overflows; exact below 2^53), for size limits.
double NumelBound(const Shape& s) {
  double n = 1;
  for (int64_t d : s) n *= static_cast<double>(d);
  return n;
}

// A value of the ONNX graph once resolved: a constant, or an IR value.
struct Val {
  std::optional<Const> c;
  ValueId id = kNoValue;
};

// A tensor's element count: its data inside the file, dims >= 0, and every element stored (raw
// bytes, or one typed entry each); more elements than stored values is a bad file, refused
// before anything is allocated for it.
absl::StatusOr<int64_t> StoredElementCount(const onnx::TensorProto& t, const std::string& where) {
  const Shape dims(t.dims().begin(), t.dims().end());
  const std::string& raw = t.raw_data();
  // Every element is stored (raw bytes, or one typed entry each): more elements than stored
  // values is a bad file, refused before anything is allocated for it.
  const int64_t stored = static_cast<int64_t>(raw.size()) + t.float_data_size() + t.double_data_size() +
                         t.int32_data_size() + t.int64_data_size() + t.uint64_data_size();
  if (t.data_location() == onnx::TensorProto::EXTERNAL) {
    return Bad(StrCat(where, ": tensor '", t.name(), "' keeps its data in an external file; external data is not "
                      "supported (re-export with the weights inside the .onnx file)"));
  }
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] < 0) {
      return Bad(StrCat(where, ": tensor '", t.name(), "' of shape ", DimsString(dims), ": dim ", i, " is ", dims[i],
                        "; expected sizes >= 0"));
    }
  }
  int64_t n = 1;
  for (int64_t d : dims) {
    if (d > 0 && n > stored / d) {
      return Bad(StrCat(where, ": tensor '", t.name(), "' of shape ", DimsString(dims), " holds ", stored,
                        " stored values; expected one per element"));
    }
    n *= d;
  }
  return n;
}

// A FLOAT tensor's n values (StoredElementCount's), from its raw little-endian bytes or its
// float_data, into out[0, n).
template <class T>
absl::Status ReadFloatValues(const onnx::TensorProto& t, int64_t n, const std::string& where, T* out) {
  const std::string& raw = t.raw_data();
  if (!raw.empty()) {
    if (raw.size() != static_cast<size_t>(n) * 4) {
      return Bad(StrCat(where, ": tensor '", t.name(), "' of shape ", DimsString(Shape(t.dims().begin(), t.dims().end())),
                        " has ", raw.size(), " bytes of data; expected ", n * 4));
    }
    if constexpr (std::is_same_v<T, float>) {
      std::memcpy(out, raw.data(), raw.size());  // little-endian, as the hosts this builds for
    } else {
      for (int64_t i = 0; i < n; ++i) {
        float f;
        std::memcpy(&f, raw.data() + 4 * i, 4);
        out[i] = f;
      }
    }
  } else if (t.float_data_size() == n) {
    std::copy(t.float_data().begin(), t.float_data().end(), out);
  } else {
    return Bad(StrCat(where, ": tensor '", t.name(), "' of shape ", DimsString(Shape(t.dims().begin(), t.dims().end())),
                      " has ", t.float_data_size(), " values; expected ", n,
                      (t.data_location() == onnx::TensorProto::EXTERNAL ? " (external data is not supported)" : "")));
  }
  return absl::OkStatus();
}

absl::StatusOr<Const> FromTensorProto(const onnx::TensorProto& t, const std::string& where) {
  Const c;
  for (int64_t d : t.dims()) c.dims.push_back(d);
  const std::string& raw = t.raw_data();
  HS_ASSIGN_OR_RETURN(const int64_t n, StoredElementCount(t, where));
  auto need = [&](size_t elem) -> absl::Status {
    if (raw.size() != static_cast<size_t>(n) * elem) {
      return Bad(StrCat(where, ": tensor '", t.name(), "' of shape ", DimsString(c.dims), " has ",
                        raw.size(), " bytes of data; expected ", n * static_cast<int64_t>(elem)));
    }
    return absl::OkStatus();
  };
  c.v.resize(static_cast<size_t>(n));
  switch (t.data_type()) {
    case onnx::TensorProto::FLOAT:
      HS_RETURN_IF_ERROR(ReadFloatValues(t, n, where, c.v.data()));
      return c;
    case onnx::TensorProto::DOUBLE:
      if (!raw.empty()) {
        HS_RETURN_IF_ERROR(need(8));
        for (int64_t i = 0; i < n; ++i) std::memcpy(&c.v[i], raw.data() + 8 * i, 8);
      } else if (t.double_data_size() == n) {
        for (int64_t i = 0; i < n; ++i) c.v[i] = t.double_data(static_cast<int>(i));
      } else {
        return Bad(StrCat(where, ": tensor '", t.name(), "' has the wrong number of values"));
      }
      return c;
    case onnx::TensorProto::INT64:
      c.integer = true;
      if (!raw.empty()) {
        HS_RETURN_IF_ERROR(need(8));
        for (int64_t i = 0; i < n; ++i) {
          int64_t x;
          std::memcpy(&x, raw.data() + 8 * i, 8);
          c.v[i] = static_cast<double>(x);
        }
      } else if (t.int64_data_size() == n) {
        for (int64_t i = 0; i < n; ++i) c.v[i] = static_cast<double>(t.int64_data(static_cast<int>(i)));
      } else {
        return Bad(StrCat(where, ": tensor '", t.name(), "' has the wrong number of values"));
      }
      return c;
    case onnx::TensorProto::UINT32:
    case onnx::TensorProto::UINT64: {
      // Unsigned (as Pow's exponents): uint32_data / uint64_data, or raw little-endian.
      c.integer = true;
      const size_t elem = t.data_type() == onnx::TensorProto::UINT32 ? 4 : 8;
      if (!raw.empty()) {
        HS_RETURN_IF_ERROR(need(elem));
        for (int64_t i = 0; i < n; ++i) {
          uint64_t x = 0;
          std::memcpy(&x, raw.data() + elem * static_cast<size_t>(i), elem);
          c.v[i] = static_cast<double>(x);
        }
      } else if (t.uint64_data_size() == n) {
        for (int64_t i = 0; i < n; ++i) c.v[i] = static_cast<double>(t.uint64_data(static_cast<int>(i)));
      } else {
        return Bad(StrCat(where, ": tensor '", t.name(), "' has the wrong number of values"));
      }
      return c;
    }
    case onnx::TensorProto::INT32:
    case onnx::TensorProto::BOOL:
    case onnx::TensorProto::INT8:
    case onnx::TensorProto::UINT8: {
      c.integer = true;
      const size_t elem = t.data_type() == onnx::TensorProto::INT32 ? 4 : 1;
      if (!raw.empty()) {
        HS_RETURN_IF_ERROR(need(elem));
        for (int64_t i = 0; i < n; ++i) {
          if (elem == 4) {
            int32_t x;
            std::memcpy(&x, raw.data() + 4 * i, 4);
            c.v[i] = x;
          } else if (t.data_type() == onnx::TensorProto::INT8) {
            c.v[i] = static_cast<int8_t>(raw[i]);
          } else {
            c.v[i] = static_cast<uint8_t>(raw[i]);
          }
        }
      } else if (t.int32_data_size() == n) {
        for (int64_t i = 0; i < n; ++i) c.v[i] = t.int32_data(static_cast<int>(i));
      } else {
        return Bad(StrCat(where, ": tensor '", t.name(), "' has the wrong number of values"));
      }
      return c;
    }
    case onnx::TensorProto::FLOAT16:
    case onnx::TensorProto::BFLOAT16:
    case onnx::TensorProto::INT16:
    case onnx::TensorProto::UINT16: {
      // Two bytes each: raw little-endian, or one per int32_data entry (float16 and bfloat16
      // as their bits); every value is exact in fp32.
      const int type = t.data_type();
      c.integer = type == onnx::TensorProto::INT16 || type == onnx::TensorProto::UINT16;
      auto value = [type](uint16_t bits) -> double {
        if (type == onnx::TensorProto::FLOAT16) return Float16BitsToFloat(bits);
        if (type == onnx::TensorProto::BFLOAT16) return Bfloat16BitsToFloat(bits);
        return type == onnx::TensorProto::INT16 ? static_cast<int16_t>(bits) : bits;
      };
      if (!raw.empty()) {
        HS_RETURN_IF_ERROR(need(2));
        for (int64_t i = 0; i < n; ++i) {
          uint16_t bits;
          std::memcpy(&bits, raw.data() + 2 * i, 2);
          c.v[i] = value(bits);
        }
      } else if (t.int32_data_size() == n) {
        for (int64_t i = 0; i < n; ++i) c.v[i] = value(static_cast<uint16_t>(t.int32_data(static_cast<int>(i))));
      } else {
        return Bad(StrCat(where, ": tensor '", t.name(), "' has the wrong number of values"));
      }
      return c;
    }
    default:
      return Bad(StrCat(where, ": tensor '", t.name(), "' has ONNX data type ", t.data_type(),
                        "; expected float, float16, bfloat16, double, int64, int32, int16, int8, uint64, uint32, "
                        "uint16, uint8 or bool"));
  }
}

// float, double, float16 or bfloat16 (ONNX element types); the rest are integers or bool.
bool IsFloatType(int t) {
  return t == onnx::TensorProto::FLOAT || t == onnx::TensorProto::DOUBLE || t == onnx::TensorProto::FLOAT16 ||
         t == onnx::TensorProto::BFLOAT16;
}

// numpy broadcasting of several shapes; nullopt when incompatible.
std::optional<Shape> Broadcast(const std::vector<Shape>& shapes) {
  size_t rank = 0;
  for (const Shape& s : shapes) rank = std::max(rank, s.size());
  Shape out(rank, 1);
  for (const Shape& s : shapes) {
    for (size_t i = 0; i < s.size(); ++i) {
      int64_t& o = out[rank - s.size() + i];
      if (s[i] == o || s[i] == 1) continue;
      if (o != 1) return std::nullopt;
      o = s[i];
    }
  }
  return out;
}

// Index into a tensor of shape `s` for the multi-index `idx` of the broadcast output shape.
int64_t BroadcastIndex(const Shape& s, const Shape& out, const std::vector<int64_t>& idx) {
  int64_t off = 0;
  const size_t lead = out.size() - s.size();
  for (size_t i = 0; i < s.size(); ++i) off = off * s[i] + (s[i] == 1 ? 0 : idx[lead + i]);
  return off;
}

std::optional<Const> Elementwise(const std::vector<const Const*>& in,
                                 const std::function<double(const std::vector<double>&)>& f, bool integer) {
  std::vector<Shape> shapes;
  for (const Const* c : in) shapes.push_back(c->dims);
  std::optional<Shape> out = Broadcast(shapes);
  if (!out) return std::nullopt;
  Const r;
  r.dims = *out;
  r.integer = integer;
  const int64_t n = Numel(*out);
  r.v.resize(static_cast<size_t>(n));
  std::vector<int64_t> idx(out->size(), 0);
  std::vector<double> args(in.size());
  for (int64_t i = 0; i < n; ++i) {
    for (size_t k = 0; k < in.size(); ++k) args[k] = in[k]->v[static_cast<size_t>(BroadcastIndex(in[k]->dims, *out, idx))];
    r.v[static_cast<size_t>(i)] = f(args);
    for (int64_t d = static_cast<int64_t>(out->size()) - 1; d >= 0; --d) {
      if (++idx[static_cast<size_t>(d)] < (*out)[static_cast<size_t>(d)]) break;
      idx[static_cast<size_t>(d)] = 0;
    }
  }
  return r;
}

int64_t NormAxis(int64_t axis, size_t rank) { return axis < 0 ? axis + static_cast<int64_t>(rank) : axis; }

// Strided copy helper: the tensor as [outer, dim, inner] around `axis`.
struct Split3 {
  int64_t outer = 1, dim = 1, inner = 1;
};
Split3 Around(const Shape& s, int64_t axis) {
  Split3 r;
  for (int64_t i = 0; i < axis; ++i) r.outer *= s[static_cast<size_t>(i)];
  r.dim = s[static_cast<size_t>(axis)];
  for (size_t i = static_cast<size_t>(axis) + 1; i < s.size(); ++i) r.inner *= s[i];
  return r;
}

// The newest opset of the default domain whose operators the importer implements (ONNX 1.12's
// newest; torch.onnx.export's opsets 13-17 are tested). Older opsets are read with their own
// semantics where an operator changed (Softmax's axis before 13, axes as attributes), and an
// operator older than kOldestVersion is refused.
constexpr int64_t kMaxOpset = 17;

// Operators whose early versions mean something else than the importer implements: the oldest
// version it takes (Add & co. before 7 broadcast with `broadcast`/`axis` attributes, Cast before 6
// names its type as a string, Reshape before 5 and Slice before 10 take attributes, Pad 1 names
// `paddings`, BatchNormalization before 9 has `spatial`, Dropout before 7 `is_test`).
const std::map<std::string, int>& kOldestVersion() {
  static const std::map<std::string, int> v = {
      {"Add", 7},     {"Sub", 7},  {"Mul", 7},  {"Div", 7},   {"Pow", 7},   {"Equal", 7}, {"Less", 7},
      {"Gemm", 7},    {"Cast", 6}, {"Reshape", 5}, {"Slice", 10}, {"Pad", 2}, {"BatchNormalization", 9},
      {"Dropout", 7}};
  return v;
}

// The element type of each value, propagated through the nodes in order (the checker requires
// them sorted) from the graph inputs and initializers — what integer division needs to know.
// (ONNX 1.12's own shape inference crashes on some invalid attributes: zero strides, a Conv
// input of the wrong rank.)
std::map<std::string, int> ElementTypes(const onnx::GraphProto& g) {
  std::map<std::string, int> t;
  for (const onnx::ValueInfoProto& v : g.input()) {
    if (v.type().has_tensor_type()) t[v.name()] = v.type().tensor_type().elem_type();
  }
  for (const onnx::TensorProto& i : g.initializer()) t[i.name()] = i.data_type();
  static const std::set<std::string> to_bool = {"Equal", "Less", "Greater", "Not", "And", "Or", "Xor", "LessOrEqual",
                                                "GreaterOrEqual", "IsNaN", "IsInf"};
  static const std::set<std::string> to_int64 = {"Shape", "Size", "ArgMax", "ArgMin", "NonZero"};
  for (const onnx::NodeProto& n : g.node()) {
    const std::string& op = n.op_type();
    int type = 0;
    auto of = [&](int i) {
      auto it = i < n.input_size() ? t.find(n.input(i)) : t.end();
      return it == t.end() ? 0 : it->second;
    };
    auto attr = [&](const std::string& name) -> const onnx::AttributeProto* {
      for (const onnx::AttributeProto& a : n.attribute()) {
        if (a.name() == name) return &a;
      }
      return nullptr;
    };
    if (to_bool.count(op)) {
      type = onnx::TensorProto::BOOL;
    } else if (to_int64.count(op)) {
      type = onnx::TensorProto::INT64;
    } else if (op == "Cast") {
      type = attr("to") ? static_cast<int>(attr("to")->i()) : 0;
    } else if (op == "Constant") {
      if (attr("value")) type = attr("value")->t().data_type();
      else if (attr("value_int") || attr("value_ints")) type = onnx::TensorProto::INT64;
      else type = onnx::TensorProto::FLOAT;
    } else if (op == "ConstantOfShape") {
      type = attr("value") ? attr("value")->t().data_type() : onnx::TensorProto::FLOAT;
    } else if (op == "Where") {
      type = of(1);
    } else {
      type = of(0);
    }
    if (type == 0) continue;
    for (int i = 0; i < (op == "Split" ? n.output_size() : std::min(1, n.output_size())); ++i) {
      if (!n.output(i).empty()) t[n.output(i)] = type;
    }
  }
  return t;
}

// The importer's stack: its walk recurses once per node of the longest chain (a few KiB
// each); reserved, not committed, beyond what a walk touches.
constexpr size_t kImportStackBytes = size_t{1} << 30;

// Runs `f` on a thread with a stack of `bytes` (on the calling thread where one cannot be made).
void RunWithStack(const std::function<void()>& f, size_t bytes) {
  pthread_attr_t attr;
  pthread_t thread;
  bool started = false;
  if (pthread_attr_init(&attr) == 0) {
    started = pthread_attr_setstacksize(&attr, bytes) == 0 &&
              pthread_create(&thread, &attr, [](void* p) -> void* {
                (*static_cast<const std::function<void()>*>(p))();
                return nullptr;
              }, const_cast<std::function<void()>*>(&f)) == 0;
    pthread_attr_destroy(&attr);
  }
  if (started) pthread_join(thread, nullptr);
  else f();
}

class Importer {
 public:
  // `types`: the element type of each value ONNX's shape inference could type.
  Importer(const onnx::ModelProto& m, std::string path, OnnxImportOptions opts, int64_t opset)
      : model_(m), path_(std::move(path)), opts_(std::move(opts)), g_(GraphName()), opset_(opset) {}

  absl::StatusOr<OnnxImport> Run() {
    const onnx::GraphProto& gp = model_.graph();
    types_ = ElementTypes(gp);
    for (const onnx::TensorProto& t : gp.initializer()) inits_[t.name()] = &t;
    for (const onnx::ValueInfoProto& v : gp.input()) {
      if (!inits_.count(v.name())) inputs_[v.name()] = &v;
    }
    for (const onnx::NodeProto& n : gp.node()) {
      for (const std::string& o : n.output()) {
        if (!o.empty()) producer_[o] = &n;
      }
    }
    // Every node's inputs must exist: a graph input, an initializer or another node's output.
    for (const onnx::NodeProto& n : gp.node()) {
      for (int i = 0; i < n.input_size(); ++i) {
        const std::string& in = n.input(i);
        if (in.empty() || inits_.count(in) || inputs_.count(in) || producer_.count(in)) continue;
        return Bad(StrCat(Where(n), " input ", i, ": '", in,
                          "' is not a graph input, an initializer or any node's output (dangling input)"));
      }
    }
    // Weights must be in the file: a graph input in a weight slot has no initializer.
    static const std::map<std::string, std::vector<int>> weight_slots = {
        {"Gemm", {1, 2}}, {"Conv", {1, 2}}, {"LayerNormalization", {1, 2}}, {"Gather", {0}}};
    for (const onnx::NodeProto& n : gp.node()) {
      auto it = weight_slots.find(n.op_type());
      if (it == weight_slots.end()) continue;
      // Gather with constant indices on data is a slice, not a lookup in a table.
      if (n.op_type() == "Gather" && n.input_size() > 1 && Constant(n.input(1))) continue;
      for (int i : it->second) {
        if (i < n.input_size() && inputs_.count(n.input(i))) {
          return Bad(StrCat(Where(n), " input ", i, ": '", n.input(i),
                            "' is a graph input with no initializer (missing initializer; export with export_params=True)"));
        }
      }
    }
    if (gp.output_size() < 1) return Bad(StrCat(path_, ": the graph has no output"));
    const std::string out_name = gp.output(0).name();
    if (opts_.loss == "none" && !producer_.count(out_name) && !inits_.count(out_name) && !inputs_.count(out_name)) {
      return Bad(StrCat(path_, ": graph output '", out_name, "' is not produced by any node"));
    }
    if (opts_.loss == "none") {
      if (const Const* c = Constant(out_name)) {
        OnnxImport r;
        r.output = out_name;
        r.constant = true;
        r.constant_shape = c->dims;
        r.constant_values = c->v;
        return r;
      }
    }
    HS_ASSIGN_OR_RETURN(ValueId out, AsValue(out_name, nullptr, "graph output"));
    HS_ASSIGN_OR_RETURN(OnnxImport r, Finish(out));
    return r;
  }

 private:
  std::string GraphName() const {
    std::string n = path_;
    const size_t slash = n.find_last_of('/');
    if (slash != std::string::npos) n = n.substr(slash + 1);
    return n;
  }

  std::string Where(const onnx::NodeProto& n) const {
    return StrCat(path_, ": node '", n.name().empty() ? (n.output_size() ? n.output(0) : "?") : n.name(), "' (",
                  n.op_type(), ")");
  }

  // ---- attributes ----
  const onnx::AttributeProto* Attr(const onnx::NodeProto& n, const std::string& name) const {
    for (const onnx::AttributeProto& a : n.attribute()) {
      if (a.name() == name) return &a;
    }
    return nullptr;
  }
  int64_t AttrInt(const onnx::NodeProto& n, const std::string& name, int64_t def) const {
    const onnx::AttributeProto* a = Attr(n, name);
    return a ? a->i() : def;
  }
  double AttrFloat(const onnx::NodeProto& n, const std::string& name, double def) const {
    const onnx::AttributeProto* a = Attr(n, name);
    return a ? a->f() : def;
  }
  std::vector<int64_t> AttrInts(const onnx::NodeProto& n, const std::string& name) const {
    std::vector<int64_t> r;
    if (const onnx::AttributeProto* a = Attr(n, name)) r.assign(a->ints().begin(), a->ints().end());
    return r;
  }

  absl::Status FiniteAttr(const onnx::NodeProto& n, const std::string& name, double v) const {
    if (std::isfinite(v)) return absl::OkStatus();
    return Bad(StrCat(Where(n), " attribute ", name, ": ", v, "; expected a finite number"));
  }
  absl::Status EpsilonAttr(const onnx::NodeProto& n) const {
    const double eps = AttrFloat(n, "epsilon", 1e-5);
    if (std::isfinite(eps) && eps >= 0) return absl::OkStatus();
    return Bad(StrCat(Where(n), " attribute epsilon: ", eps, "; expected a finite number >= 0"));
  }
  // A batch norm's running mean (input 3) or variance (input 4): finite, the variance >= 0.
  absl::Status CheckStatistics(const onnx::NodeProto& n, int input, const Const& c) const {
    for (size_t i = 0; i < c.v.size(); ++i) {
      if (!std::isfinite(c.v[i]) || (input == 4 && c.v[i] < 0)) {
        return Bad(StrCat(Where(n), " input ", input, " (", input == 3 ? "input_mean" : "input_var", "): '", n.input(input),
                          "' element ", i, " is ", c.v[i], "; expected a finite ", input == 4 ? "variance >= 0" : "mean"));
      }
    }
    return absl::OkStatus();
  }

  // ---- constants ----
  // The value of `name` when it is a constant (initializer, Constant, or a foldable node whose
  // inputs are constants); nullptr otherwise. Memoized.
  //
  // Iterative (a recursive walk overflows the stack on a graph thousands of nodes deep): the
  // producers are visited in post-order, each node's inputs in order up to the first that is
  // not a constant, as Fold reads them; Fold then finds its inputs memoized.
  const Const* Constant(const std::string& name) {
    if (auto it = consts_.find(name); it != consts_.end()) return it->second ? &*it->second : nullptr;
    struct Frame {
      std::string name;
      int next = 0;
    };
    std::vector<Frame> stack{{name}};
    std::set<std::string> open{name};  // on the stack: a cycle (which the checker refuses) stops here
    while (!stack.empty()) {
      Frame& f = stack.back();
      const onnx::NodeProto* n = nullptr;
      if (!inits_.count(f.name)) {
        auto pit = producer_.find(f.name);
        if (pit != producer_.end() && pit->second->op_type() != "Shape" && pit->second->op_type() != "Constant") n = pit->second;
      }
      bool pushed = false;
      for (; n && f.next < n->input_size(); ++f.next) {
        const std::string& in = n->input(f.next);
        if (in.empty()) continue;
        auto it = consts_.find(in);
        if (it != consts_.end()) {
          if (!it->second) break;  // not a constant: Fold stops here too
          continue;
        }
        if (open.count(in)) break;
        open.insert(in);
        stack.push_back({in});  // invalidates f
        pushed = true;
        break;
      }
      if (pushed) continue;
      const std::string cur = std::move(stack.back().name);
      stack.pop_back();
      open.erase(cur);
      std::optional<Const> c = ComputeConstant(cur);
      consts_.emplace(cur, std::move(c));
    }
    const std::optional<Const>& c = consts_.at(name);
    return c ? &*c : nullptr;
  }

  // Records the first error found while folding (reported where the value is needed).
  void Note(const absl::Status& st) {
    if (first_error_.ok() && !st.ok()) first_error_ = st;
  }
  // For an input that should have folded to a constant and did not: why folding failed when a
  // node on the way said so (a Cast of NaN to int64, a Div by zero), else `st`.
  absl::Status NotConstant(absl::Status st) const { return first_error_.ok() ? st : first_error_; }

  // A constant of shape `dims` that node n would compute: refused (a negative dim, or more than
  // kMaxFoldedElements) before anything is allocated for it.
  absl::Status CheckFoldSize(const onnx::NodeProto& n, const Shape& dims, const std::string& what = "") {
    for (size_t i = 0; i < dims.size(); ++i) {
      if (dims[i] < 0) {
        return Bad(StrCat(Where(n), what.empty() ? "" : " ", what, ": a constant of shape ", DimsString(dims), ": dim ", i,
                          " is ", dims[i], "; expected sizes >= 0"));
      }
    }
    const double count = NumelBound(dims);
    if (count > static_cast<double>(kMaxFoldedElements)) {
      return Bad(StrCat(Where(n), what.empty() ? "" : " ", what, ": a constant of shape ", DimsString(dims), " (",
                        absl::StrFormat("%.4g", count), " elements) is larger than the ", kMaxFoldedElements,
                        " elements (2^28) the importer computes at load time"));
    }
    return absl::OkStatus();
  }
  bool FoldSizeOk(const onnx::NodeProto& n, const Shape& dims, const std::string& what = "") {
    absl::Status st = CheckFoldSize(n, dims, what);
    Note(st);
    return st.ok();
  }

  std::optional<Const> ComputeConstant(const std::string& name) {
    if (auto it = inits_.find(name); it != inits_.end()) {
      absl::StatusOr<Const> c = FromTensorProto(*it->second, path_);
      if (!c.ok()) {
        if (first_error_.ok()) first_error_ = c.status();
        return std::nullopt;
      }
      return *c;
    }
    auto pit = producer_.find(name);
    if (pit == producer_.end()) return std::nullopt;
    const onnx::NodeProto& n = *pit->second;
    int out_index = 0;
    for (int i = 0; i < n.output_size(); ++i) {
      if (n.output(i) == name) out_index = i;
    }
    return Fold(n, out_index);
  }

  std::optional<Const> Fold(const onnx::NodeProto& n, int out_index) {
    const std::string& op = n.op_type();
    if (op == "Constant") {
      if (const onnx::AttributeProto* a = Attr(n, "value")) {
        absl::StatusOr<Const> c = FromTensorProto(a->t(), path_);
        if (!c.ok()) {
          if (first_error_.ok()) first_error_ = c.status();
          return std::nullopt;
        }
        return *c;
      }
      if (const onnx::AttributeProto* a = Attr(n, "value_float")) return Const{{}, {a->f()}, false};
      if (const onnx::AttributeProto* a = Attr(n, "value_int")) return Const{{}, {double(a->i())}, true};
      if (const onnx::AttributeProto* a = Attr(n, "value_ints")) {
        Const c{{a->ints_size()}, {}, true};
        for (int64_t x : a->ints()) c.v.push_back(double(x));
        return c;
      }
      if (const onnx::AttributeProto* a = Attr(n, "value_floats")) {
        Const c{{a->floats_size()}, {}, false};
        for (float x : a->floats()) c.v.push_back(x);
        return c;
      }
      Note(Bad(StrCat(Where(n), ": no value attribute; expected one of value, value_float, value_int, value_ints, "
                      "value_floats (strings and sparse tensors are not supported)")));
      return std::nullopt;
    }
    if (op == "Shape") {
      // Needs only the input's shape, which the IR knows once the input is resolved.
      absl::StatusOr<Shape> s = ShapeOf(n.input(0));
      if (!s.ok()) {
        if (first_error_.ok()) first_error_ = s.status();
        return std::nullopt;
      }
      Shape dims = *s;
      int64_t start = NormAxis(AttrInt(n, "start", 0), dims.size());
      int64_t end = Attr(n, "end") ? NormAxis(AttrInt(n, "end", 0), dims.size()) : static_cast<int64_t>(dims.size());
      start = std::clamp<int64_t>(start, 0, static_cast<int64_t>(dims.size()));
      end = std::clamp<int64_t>(end, start, static_cast<int64_t>(dims.size()));
      Const c{{end - start}, {}, true};
      for (int64_t i = start; i < end; ++i) c.v.push_back(double(dims[static_cast<size_t>(i)]));
      return c;
    }
    // Everything else folds only when every input is constant.
    std::vector<const Const*> in;
    for (const std::string& i : n.input()) {
      if (i.empty()) {
        in.push_back(nullptr);
        continue;
      }
      const Const* c = Constant(i);
      if (!c) return std::nullopt;
      in.push_back(c);
    }
    auto arg = [&](size_t i) -> const Const* { return i < in.size() ? in[i] : nullptr; };
    auto ints = [&](const Const* c) {
      std::vector<int64_t> r;
      for (double x : c->v) r.push_back(SatInt(x));
      return r;
    };
    using F = std::function<double(const std::vector<double>&)>;
    auto ew = [&](F f, std::optional<bool> integer = std::nullopt) -> std::optional<Const> {
      bool all_int = true;
      for (const Const* c : in) all_int = all_int && c && c->integer;
      std::vector<Shape> shapes;
      for (const Const* c : in) {
        if (!c) return std::nullopt;
        shapes.push_back(c->dims);
      }
      std::optional<Shape> out = Broadcast(shapes);
      if (!out) {
        std::vector<std::string> each;
        for (const Shape& sh : shapes) each.push_back(DimsString(sh));
        Note(Bad(StrCat(Where(n), ": shapes ", absl::StrJoin(each, " and "), " do not broadcast")));
        return std::nullopt;
      }
      if (!FoldSizeOk(n, *out)) return std::nullopt;
      std::optional<Const> r = Elementwise(in, f, integer.value_or(all_int));
      // Integer arithmetic past int64 (a Mul or Pow that overflows): said here, not as a nonsense
      // shape at the node that uses it. ±2^63 pass: INT64_MAX (Slice's "to the end") is 2^63 as
      // a double.
      for (size_t i = 0; r && r->integer && i < r->v.size(); ++i) {
        if (!(std::abs(r->v[i]) <= 9.2233720368547758e18)) {
          Note(Bad(StrCat(Where(n), ": integer result ", r->v[i], " (element ", i, ") is past the int64 range")));
          return std::nullopt;
        }
      }
      return r;
    };
    if (op == "Dropout" && (out_index != 0 || (arg(2) && !arg(2)->v.empty() && arg(2)->v[0] != 0))) return std::nullopt;
    if (op == "Identity" || op == "Dropout") return *in.at(0);
    if (op == "Add") return ew([](const auto& a) { return a[0] + a[1]; });
    if (op == "Sub") return ew([](const auto& a) { return a[0] - a[1]; });
    if (op == "Mul") return ew([](const auto& a) { return a[0] * a[1]; });
    if (op == "Div") {
      const bool integer = in[0]->integer && in[1]->integer;
      if (integer && in[0] && in[1] && std::find(in[1]->v.begin(), in[1]->v.end(), 0.0) != in[1]->v.end()) {
        Note(Bad(StrCat(Where(n), " input 1: integer division by zero")));
        return std::nullopt;
      }
      return ew([integer](const auto& a) { return integer ? std::trunc(a[0] / a[1]) : a[0] / a[1]; });
    }
    if (op == "Pow") return ew([](const auto& a) { return std::pow(a[0], a[1]); }, in[0]->integer);
    if (op == "Sqrt") return ew([](const auto& a) { return std::sqrt(a[0]); });
    if (op == "Neg") return ew([](const auto& a) { return -a[0]; });
    if (op == "Abs") return ew([](const auto& a) { return std::abs(a[0]); });
    if (op == "Exp") return ew([](const auto& a) { return std::exp(a[0]); }, false);
    if (op == "Log") return ew([](const auto& a) { return std::log(a[0]); }, false);
    if (op == "Reciprocal") return ew([](const auto& a) { return 1.0 / a[0]; }, false);
    if (op == "Softplus") return ew([](const auto& a) { return std::log1p(std::exp(a[0])); }, false);
    if (op == "Softsign") return ew([](const auto& a) { return a[0] / (1.0 + std::abs(a[0])); }, false);
    if (op == "HardSwish") return ew([](const auto& a) { return a[0] * std::clamp(a[0] + 3.0, 0.0, 6.0) / 6.0; }, false);
    if (op == "Equal") return ew([](const auto& a) { return a[0] == a[1] ? 1.0 : 0.0; }, true);
    if (op == "Less") return ew([](const auto& a) { return a[0] < a[1] ? 1.0 : 0.0; }, true);
    if (op == "Not") return ew([](const auto& a) { return a[0] != 0 ? 0.0 : 1.0; }, true);
    if (op == "Where") return ew([](const auto& a) { return a[0] != 0 ? a[1] : a[2]; }, in[1]->integer && in[2]->integer);
    if (op == "Cast") {
      const int64_t to = AttrInt(n, "to", onnx::TensorProto::FLOAT);
      const bool integer = !IsFloatType(static_cast<int>(to));
      Const c = *in[0];
      c.integer = integer;
      for (size_t i = 0; i < c.v.size(); ++i) {
        double& x = c.v[i];
        // A NaN, an infinity or a value past int64 has no integer value (it surfaced as a
        // nonsense shape at the node that used it); ±2^63 pass, INT64_MAX rounded to a double.
        if (integer && to != onnx::TensorProto::BOOL && !(std::abs(x) <= 9.2233720368547758e18)) {
          Note(Bad(StrCat(Where(n), " attribute to: ", onnx::TensorProto::DataType_Name(static_cast<int>(to)), ": element ", i,
                          " is ", x, "; expected a finite value within the integer type's range")));
          return std::nullopt;
        }
        if (to == onnx::TensorProto::BOOL) x = x != 0 ? 1 : 0;
        else if (integer) x = std::trunc(x);
        else if (to == onnx::TensorProto::FLOAT) x = static_cast<float>(x);
        else if (to == onnx::TensorProto::FLOAT16) x = RoundToFloat16(static_cast<float>(x));
        else if (to == onnx::TensorProto::BFLOAT16) x = RoundToBfloat16(static_cast<float>(x));
      }
      return c;
    }
    if (op == "Range") {
      static const char* kNames[] = {"start", "limit", "delta"};
      for (size_t i = 0; i < 3; ++i) {
        if (!arg(i) || arg(i)->v.size() != 1) {
          Note(Bad(StrCat(Where(n), " input ", i, " (", kNames[i], "): ",
                          arg(i) ? StrCat("shape ", DimsString(arg(i)->dims)) : std::string("missing"), "; expected a scalar")));
          return std::nullopt;
        }
      }
      const double start = in[0]->v[0], limit = in[1]->v[0], delta = in[2]->v[0];
      // ONNX: max(⌈(limit − start) / delta⌉, 0) elements, start + i·delta.
      const double count = std::max(std::ceil((limit - start) / delta), 0.0);
      if (delta == 0 || !std::isfinite(count) || count > static_cast<double>(kMaxFoldedElements)) {
        Note(Bad(StrCat(Where(n), ": Range(start ", start, ", limit ", limit, ", delta ", delta, ") has ",
                        delta == 0 ? "delta 0" : std::isfinite(count) ? absl::StrFormat("%.4g elements", count) : "no end",
                        "; expected a nonzero delta and at most ", kMaxFoldedElements, " elements")));
        return std::nullopt;
      }
      Const c{{static_cast<int64_t>(count)}, {}, in[0]->integer};
      c.v.resize(static_cast<size_t>(count));
      for (size_t i = 0; i < c.v.size(); ++i) c.v[i] = start + static_cast<double>(i) * delta;
      return c;
    }
    if (op == "ConstantOfShape") {
      Const c{ints(in[0]), {}, false};
      if (!FoldSizeOk(n, c.dims, "input 0 (shape)")) return std::nullopt;
      double value = 0;
      if (const onnx::AttributeProto* a = Attr(n, "value")) {
        absl::StatusOr<Const> v = FromTensorProto(a->t(), path_);
        if (!v.ok() || v->v.empty()) return std::nullopt;
        value = v->v[0];
        c.integer = v->integer;
      }
      c.v.assign(static_cast<size_t>(Numel(c.dims)), value);
      return c;
    }
    if (op == "Unsqueeze" || op == "Squeeze" || op == "Reshape" || op == "Flatten") {
      absl::StatusOr<Shape> s = ReshapeTarget(n, in[0]->dims, arg(1));
      if (!s.ok()) {
        Note(s.status());
        return std::nullopt;
      }
      Const c = *in[0];
      c.dims = *s;
      return c;
    }
    if (op == "Expand") {
      Const ones{ints(in[1]), {}, in[0]->integer};
      if (!FoldSizeOk(n, ones.dims, "input 1 (shape)")) return std::nullopt;
      std::optional<Shape> out = Broadcast({in[0]->dims, ones.dims});
      if (!out) {
        Note(Bad(StrCat(Where(n), ": cannot expand ", DimsString(in[0]->dims), " to ", DimsString(ones.dims))));
        return std::nullopt;
      }
      if (!FoldSizeOk(n, *out)) return std::nullopt;
      ones.v.assign(static_cast<size_t>(Numel(ones.dims)), 0);
      std::optional<Const> r = Elementwise({in[0], &ones}, [](const auto& a) { return a[0]; }, in[0]->integer);
      return r;
    }
    if (op == "Concat") {
      std::vector<Shape> shapes;
      for (const Const* p : in) {
        if (!p) return std::nullopt;
        shapes.push_back(p->dims);
      }
      absl::StatusOr<int64_t> axis_or = ConcatAxis(n, shapes);
      if (!axis_or.ok()) {
        Note(axis_or.status());
        return std::nullopt;
      }
      const int64_t axis = *axis_or;
      Const c = *in[0];
      c.v.clear();
      c.dims[static_cast<size_t>(axis)] = 0;
      for (const Const* p : in) c.dims[static_cast<size_t>(axis)] += p->dims.at(static_cast<size_t>(axis));
      const Split3 o = Around(c.dims, axis);
      for (int64_t i = 0; i < o.outer; ++i) {
        for (const Const* p : in) {
          const Split3 s = Around(p->dims, axis);
          c.v.insert(c.v.end(), p->v.begin() + i * s.dim * s.inner, p->v.begin() + (i + 1) * s.dim * s.inner);
        }
      }
      return c;
    }
    if (op == "Gather") {
      const Const& data = *in[0];
      const Const& idx = *in[1];
      absl::StatusOr<int64_t> axis_or = AxisAttr(n, "axis", 0, data.dims.size());
      if (!axis_or.ok()) {
        Note(axis_or.status());
        return std::nullopt;
      }
      const int64_t axis = *axis_or;
      const Split3 s = Around(data.dims, axis);
      Const c{{}, {}, data.integer};
      for (int64_t i = 0; i < axis; ++i) c.dims.push_back(data.dims[static_cast<size_t>(i)]);
      for (int64_t d : idx.dims) c.dims.push_back(d);
      for (size_t i = static_cast<size_t>(axis) + 1; i < data.dims.size(); ++i) c.dims.push_back(data.dims[i]);
      if (!FoldSizeOk(n, c.dims)) return std::nullopt;
      for (int64_t o = 0; o < s.outer; ++o) {
        for (double xi : idx.v) {
          int64_t k = SatInt(xi);
          if (k < -s.dim || k >= s.dim) {
            Note(Bad(StrCat(Where(n), " input 1 (indices): ", k, " out of range for dim ", axis, " of size ", s.dim,
                            "; expected ", -s.dim, "..", s.dim - 1)));
            return std::nullopt;
          }
          if (k < 0) k += s.dim;
          c.v.insert(c.v.end(), data.v.begin() + (o * s.dim + k) * s.inner,
                     data.v.begin() + (o * s.dim + k + 1) * s.inner);
        }
      }
      return c;
    }
    if (op == "Slice") {
      absl::StatusOr<std::vector<SliceAxis>> sl = SliceAxes(n, in[0]->dims, in);
      if (!sl.ok()) {
        Note(sl.status());
        return std::nullopt;
      }
      Const c = *in[0];
      for (const SliceAxis& a : *sl) c = SliceOf(c, a);
      return c;
    }
    if (op == "Split") {
      const Const& x = *in[0];
      const int64_t axis = NormAxis(AttrInt(n, "axis", 0), x.dims.size());
      const absl::StatusOr<std::vector<int64_t>> sizes = SplitSizes(n, x.dims, in.size() > 1 ? in[1] : nullptr);
      if (!sizes.ok()) {
        Note(sizes.status());
        return std::nullopt;
      }
      int64_t start = 0;
      for (int i = 0; i < out_index; ++i) start += (*sizes)[static_cast<size_t>(i)];
      return SliceOf(x, {axis, start, (*sizes)[static_cast<size_t>(out_index)], 1});
    }
    if (op == "Transpose") {
      const Const& x = *in[0];
      absl::StatusOr<std::vector<int64_t>> perm_or = Perm(n, x.dims.size());
      if (!perm_or.ok()) {
        Note(perm_or.status());
        return std::nullopt;
      }
      const std::vector<int64_t> perm = *perm_or;
      Const c{{}, {}, x.integer};
      for (int64_t p : perm) c.dims.push_back(x.dims.at(static_cast<size_t>(p)));
      c.v.resize(x.v.size());
      std::vector<int64_t> stride(x.dims.size(), 1);
      for (int64_t i = static_cast<int64_t>(x.dims.size()) - 2; i >= 0; --i) {
        stride[static_cast<size_t>(i)] = stride[static_cast<size_t>(i) + 1] * x.dims[static_cast<size_t>(i) + 1];
      }
      std::vector<int64_t> idx(c.dims.size(), 0);
      for (size_t i = 0; i < c.v.size(); ++i) {
        int64_t src = 0;
        for (size_t d = 0; d < idx.size(); ++d) src += idx[d] * stride[static_cast<size_t>(perm[d])];
        c.v[i] = x.v[static_cast<size_t>(src)];
        for (int64_t d = static_cast<int64_t>(idx.size()) - 1; d >= 0; --d) {
          if (++idx[static_cast<size_t>(d)] < c.dims[static_cast<size_t>(d)]) break;
          idx[static_cast<size_t>(d)] = 0;
        }
      }
      return c;
    }
    return std::nullopt;
  }

  struct SliceAxis {
    int64_t axis, start, length, step;
  };
  // The elements start, start + step, ... (length of them) of c along a.axis.
  static Const SliceOf(const Const& c, const SliceAxis& a) {
    const Split3 s = Around(c.dims, a.axis);
    Const r{c.dims, {}, c.integer};
    r.dims[static_cast<size_t>(a.axis)] = a.length;
    for (int64_t o = 0; o < s.outer; ++o) {
      for (int64_t j = 0; j < a.length; ++j) {
        const int64_t k = o * s.dim + a.start + j * a.step;
        r.v.insert(r.v.end(), c.v.begin() + k * s.inner, c.v.begin() + (k + 1) * s.inner);
      }
    }
    return r;
  }
  // Slice's (starts, ends, axes, steps) inputs resolved against `dims`.
  absl::StatusOr<std::vector<SliceAxis>> SliceAxes(const onnx::NodeProto& n, const Shape& dims,
                                                   const std::vector<const Const*>& in) {
    auto get = [&](size_t i) -> const Const* { return i < in.size() ? in[i] : nullptr; };
    if (!get(1) || !get(2)) return Bad(StrCat(Where(n), ": starts and ends must be constants (inputs 1 and 2; opsets < 10 are not supported)"));
    const size_t k = get(1)->v.size();
    static const char* kNames[] = {"", "", "ends", "axes", "steps"};
    for (size_t i = 2; i <= 4; ++i) {
      if (get(i) && get(i)->v.size() != k) {
        return Bad(StrCat(Where(n), " input ", i, " (", kNames[i], "): ", get(i)->v.size(), " values for ", k,
                          " starts; expected one per start"));
      }
    }
    const int64_t rank = static_cast<int64_t>(dims.size());
    std::vector<bool> seen(dims.size(), false);
    std::vector<SliceAxis> out;
    for (size_t i = 0; i < k; ++i) {
      int64_t axis = get(3) ? SatInt(get(3)->v[i]) : static_cast<int64_t>(i);
      if (axis < -rank || axis >= rank) {
        return Bad(StrCat(Where(n), " input 3 (axes): ", axis, " out of range for rank ", rank, " (shape ", DimsString(dims),
                          "); expected ", -rank, "..", rank - 1));
      }
      axis = NormAxis(axis, dims.size());
      if (seen[static_cast<size_t>(axis)]) return Bad(StrCat(Where(n), " input 3 (axes): axis ", axis, " given twice"));
      seen[static_cast<size_t>(axis)] = true;
      const int64_t d = dims[static_cast<size_t>(axis)];
      const int64_t step = get(4) ? SatInt(get(4)->v[i]) : 1;
      if (step == 0) return Bad(StrCat(Where(n), " input 4 (steps): 0; expected a step other than 0"));
      // ONNX's clamping: [0, d] going forward, [-1, d - 1] going backward (-1: past the front).
      const int64_t lo = step > 0 ? 0 : -1, hi = step > 0 ? d : d - 1;
      auto clampi = [d, lo, hi](double x) {
        int64_t v = x >= 9.2e18 ? hi : x <= -9.2e18 ? lo : SatInt(x);
        if (v < 0 && x > -9.2e18) v += d;
        return std::clamp<int64_t>(v, lo, hi);
      };
      const int64_t s = std::max<int64_t>(clampi(get(1)->v[i]), 0), e = clampi(get(2)->v[i]);
      const int64_t span = step > 0 ? e - s : s - e;
      const int64_t astep = step == std::numeric_limits<int64_t>::min() ? std::numeric_limits<int64_t>::max() : std::abs(step);
      out.push_back({axis, s, span > 0 ? 1 + (span - 1) / astep : 0, step});
    }
    return out;
  }

  // Split's part sizes along its axis (input 1 or attribute `split`, else equal parts), checked
  // to cover the axis.
  absl::StatusOr<std::vector<int64_t>> SplitSizes(const onnx::NodeProto& n, const Shape& dims, const Const* split) {
    HS_ASSIGN_OR_RETURN(const int64_t axis, AxisAttr(n, "axis", 0, dims.size()));
    const int64_t d = dims[static_cast<size_t>(axis)];
    std::vector<int64_t> sizes = AttrInts(n, "split");
    if (split) {
      sizes.clear();
      for (double v : split->v) sizes.push_back(SatInt(v));
    }
    if (n.output_size() < 1) return Bad(StrCat(Where(n), ": no outputs"));
    if (sizes.empty()) sizes.assign(static_cast<size_t>(n.output_size()), d / std::max(1, n.output_size()));
    int64_t total = 0;
    for (int64_t v : sizes) total += v < 0 || v > d ? d + 1 : v;
    if (sizes.size() != static_cast<size_t>(n.output_size()) || total != d) {
      return Bad(StrCat(Where(n), " split: [", absl::StrJoin(sizes, ","), "] for dim ", axis, " of size ", d,
                        "; expected ", n.output_size(), " sizes >= 0 that add up to ", d));
    }
    return sizes;
  }

  // Attribute `name` (default `def`) as an axis of a rank-`rank` input: in [-rank, rank - 1],
  // normalized.
  absl::StatusOr<int64_t> AxisAttr(const onnx::NodeProto& n, const std::string& name, int64_t def, size_t rank) {
    const int64_t axis = AttrInt(n, name, def), r = static_cast<int64_t>(rank);
    if (axis < -r || axis >= r) {
      return Bad(StrCat(Where(n), " attribute ", name, ": ", axis, " out of range for an input of rank ", r, "; expected ",
                        -r, "..", r - 1));
    }
    return NormAxis(axis, rank);
  }

  // Concat's axis, checked against its inputs' shapes (same rank, equal dims off the axis).
  absl::StatusOr<int64_t> ConcatAxis(const onnx::NodeProto& n, const std::vector<Shape>& shapes) {
    if (shapes.empty()) return Bad(StrCat(Where(n), ": no inputs"));
    HS_ASSIGN_OR_RETURN(const int64_t axis, AxisAttr(n, "axis", opset_ < 4 ? 1 : 0, shapes[0].size()));
    double total = 0;
    for (size_t i = 0; i < shapes.size(); ++i) {
      bool ok = shapes[i].size() == shapes[0].size();
      for (size_t d = 0; ok && d < shapes[i].size(); ++d) ok = static_cast<int64_t>(d) == axis || shapes[i][d] == shapes[0][d];
      if (!ok) {
        return Bad(StrCat(Where(n), " input ", i, ": shape ", DimsString(shapes[i]), " does not match input 0's ",
                          DimsString(shapes[0]), " off axis ", axis));
      }
      total += static_cast<double>(shapes[i][static_cast<size_t>(axis)]);
    }
    if (total * NumelBound(shapes[0]) / std::max<double>(1, static_cast<double>(shapes[0][static_cast<size_t>(axis)])) >
        static_cast<double>(kMaxFoldedElements)) {
      Shape out = shapes[0];
      out[static_cast<size_t>(axis)] = static_cast<int64_t>(total);
      HS_RETURN_IF_ERROR(CheckFoldSize(n, out));
    }
    return axis;
  }

  // Transpose's perm (default: the dims reversed), checked to be a permutation of 0..rank-1.
  absl::StatusOr<std::vector<int64_t>> Perm(const onnx::NodeProto& n, size_t rank) {
    std::vector<int64_t> perm = AttrInts(n, "perm");
    if (!Attr(n, "perm")) {
      for (int64_t i = static_cast<int64_t>(rank) - 1; i >= 0; --i) perm.push_back(i);
    }
    std::vector<bool> seen(rank, false);
    bool ok = perm.size() == rank;
    for (int64_t p : perm) {
      ok = ok && p >= 0 && p < static_cast<int64_t>(rank) && !seen[static_cast<size_t>(p)];
      if (ok) seen[static_cast<size_t>(p)] = true;
    }
    if (!ok) {
      return Bad(StrCat(Where(n), " attribute perm: ", DimsString(perm), " for an input of rank ", rank,
                        "; expected a permutation of 0..", static_cast<int64_t>(rank) - 1, " (each dim once)"));
    }
    return perm;
  }

  // The output shape of Reshape/Flatten/Squeeze/Unsqueeze applied to `dims`, the node's
  // attributes and axes/shape input checked as ONNX defines them.
  absl::StatusOr<Shape> ReshapeTarget(const onnx::NodeProto& n, const Shape& dims, const Const* second) {
    const std::string& op = n.op_type();
    const int64_t rank = static_cast<int64_t>(dims.size());
    if (op == "Flatten") {
      const int64_t given = AttrInt(n, "axis", 1);
      if (given < -rank || given > rank) {
        return Bad(StrCat(Where(n), " attribute axis: ", given, " out of range for an input of rank ", rank, "; expected ",
                          -rank, "..", rank));
      }
      const int64_t axis = NormAxis(given, dims.size());
      int64_t a = 1, b = 1;
      for (size_t i = 0; i < dims.size(); ++i) (static_cast<int64_t>(i) < axis ? a : b) *= dims[i];
      return Shape{a, b};
    }
    std::vector<int64_t> axes = AttrInts(n, "axes");  // opsets < 13
    std::string field = "attribute axes";
    if (second) {
      axes.clear();
      for (double x : second->v) axes.push_back(SatInt(x));
      field = "input 1 (axes)";
    }
    if (op == "Unsqueeze" || op == "Squeeze") {
      const int64_t r = op == "Unsqueeze" ? rank + static_cast<int64_t>(axes.size()) : rank;
      std::vector<int64_t> norm;
      for (int64_t a : axes) {
        if (a < -r || a >= r) {
          return Bad(StrCat(Where(n), " ", field, ": ", a, " out of range for ", op == "Unsqueeze" ? "output" : "input",
                            " rank ", r, " (input shape ", DimsString(dims), "); expected ", -r, "..", r - 1));
        }
        norm.push_back(NormAxis(a, static_cast<size_t>(r)));
      }
      std::sort(norm.begin(), norm.end());
      if (std::adjacent_find(norm.begin(), norm.end()) != norm.end()) {
        return Bad(StrCat(Where(n), " ", field, ": ", DimsString(axes), " names axis ", *std::adjacent_find(norm.begin(), norm.end()),
                          " twice; expected distinct axes"));
      }
      if (op == "Unsqueeze") {
        Shape out = dims;
        for (int64_t a : norm) out.insert(out.begin() + a, 1);
        return out;
      }
      Shape out;
      for (size_t i = 0; i < dims.size(); ++i) {
        const bool listed = std::binary_search(norm.begin(), norm.end(), static_cast<int64_t>(i));
        if (listed && dims[i] != 1) {
          return Bad(StrCat(Where(n), " ", field, ": axis ", i, " has size ", dims[i], " (input shape ", DimsString(dims),
                            "); only dims of size 1 can be squeezed"));
        }
        if (!(axes.empty() ? dims[i] == 1 : listed)) out.push_back(dims[i]);
      }
      return out;
    }
    // Reshape: 0 copies the input's dim (unless allowzero), -1 is inferred.
    if (!second) {
      return NotConstant(Bad(StrCat(Where(n), " input 1 (shape): ", n.input_size() > 1 ? StrCat("'", n.input(1), "' is not a constant") : "missing",
                        "; cannot resolve the shape", n.input_size() > 1 ? "" : " (opsets < 5 are not supported)")));
    }
    const bool allowzero = AttrInt(n, "allowzero", 0) != 0;
    Shape out;
    int64_t infer = -1;
    double known = 1;
    std::vector<int64_t> given;
    for (double x : second->v) given.push_back(SatInt(x));
    auto refuse = [&](const std::string& why) {
      return Bad(StrCat(Where(n), " input 1 (shape): cannot reshape ", DimsString(dims), " to ", DimsString(given), ": ", why));
    };
    for (size_t i = 0; i < given.size(); ++i) {
      int64_t d = given[i];
      if (d == 0 && !allowzero) {
        if (static_cast<int64_t>(i) >= rank) return refuse(StrCat("0 at position ", i, " copies dim ", i, ", but the input has rank ", rank));
        d = dims[i];
      }
      if (d == -1) {
        if (infer >= 0) return refuse("-1 appears more than once; expected at most one dim to infer");
        infer = static_cast<int64_t>(i);
        out.push_back(1);
        continue;
      }
      if (d < 0) return refuse(StrCat("dim ", i, " is ", d, "; expected sizes >= 0, 0 (copy) or -1 (infer)"));
      out.push_back(d);
      known *= static_cast<double>(d);
    }
    const double total = NumelBound(dims);
    if (infer >= 0) {
      if (known == 0 || std::fmod(total, known) != 0) return refuse("the element counts do not divide");
      out[static_cast<size_t>(infer)] = static_cast<int64_t>(total / known);
    } else if (known != total) {
      return refuse(StrCat("element counts differ (", absl::StrFormat("%.0f", known), " and ", absl::StrFormat("%.0f", total), ")"));
    }
    return out;
  }

  // ---- IR values ----
  absl::StatusOr<Shape> ShapeOf(const std::string& name) {
    if (const Const* c = Constant(name)) return c->dims;
    HS_ASSIGN_OR_RETURN(ValueId v, AsValue(name, nullptr, ""));
    return g_.value(v).shape;
  }

  // `name` as an IR value: a graph input, a parameter (an initializer), or a node's output.
  absl::StatusOr<ValueId> AsValue(const std::string& name, const onnx::NodeProto* user, const std::string& field) {
    if (auto it = ids_.find(name); it != ids_.end()) return it->second;
    // Each node resolves its inputs first, recursively: one level per node of the longest
    // chain (on the importer's own large stack; ImportOnnx), bounded.
    struct Depth {
      int& d;
      explicit Depth(int& x) : d(++x) {}
      ~Depth() { --d; }
    } depth(depth_);
    // A chain of n nodes nests n + 1 levels (its last output down to the graph input it starts
    // from): n nodes pass up to kMaxGraphDepth.
    if (depth_ > kMaxGraphDepth + 1) {
      return Bad(StrCat(path_, ": value '", name, "': the graph is more than ", kMaxGraphDepth,
                        " nodes deep (a chain of nodes each consuming the one before); the importer follows at most that"));
    }
    if (auto it = inputs_.find(name); it != inputs_.end()) return AddInput(*it->second);
    if (auto it = inits_.find(name); it != inits_.end()) {
      if (!consts_.count(name)) {
        // A float weight goes to its parameter straight from the file's bytes: as a constant it
        // would first be held in double (twice its size; a VGG's 25088-wide classifier is 411 MB
        // of fp32).
        std::optional<std::vector<float>> values = PlainFloats(*it->second);
        if (values) return AddParameterValues(name, std::move(*values), false);
      }
      const Const* c = Constant(name);
      if (!c) return first_error_;
      return AddParameterFrom(name, *c);
    }
    auto pit = producer_.find(name);
    if (pit == producer_.end()) {
      return Bad(StrCat(path_, ": value '", name, "' is not a graph input, an initializer or a node output"));
    }
    const onnx::NodeProto& n = *pit->second;
    if (Constant(name) != nullptr && n.op_type() == "Identity" && IdentityOfInitializer(name)) {
      // torch.onnx.export stores equal initializers once and names the others with Identity
      // nodes (all LayerNorm weights start as ones): each is its own parameter in PyTorch, so
      // here too, under its own name.
      return AddParameterFrom(name, *Constant(name));
    }
    static const std::set<std::string> movement = {"Gather", "Slice", "Expand", "Transpose", "Reshape", "Unsqueeze",
                                                   "Squeeze", "Concat", "Flatten", "Split"};
    if (Constant(name) != nullptr && movement.count(n.op_type())) {
      // Data movement on initializers (position rows Gathered by a constant Range, a class
      // token Expanded): IR ops on the parameters, so that they train as in PyTorch.
      HS_RETURN_IF_ERROR(Emit(n));
      if (auto it = ids_.find(name); it != ids_.end()) return it->second;
    }
    if (const Const* c = Constant(name)) return AddParameterFrom(name, *c, /*frozen=*/true);  // a computed constant used as data
    if (!first_error_.ok()) return first_error_;
    HS_RETURN_IF_ERROR(Emit(n));
    if (auto it = ids_.find(name); it != ids_.end()) return it->second;
    return Bad(StrCat(Where(n), ": output '", name, "' was not produced"));
  }

  // An initializer as a parameter, or (`frozen`) a constant computed at import and used as
  // data as a frozen parameter (Value::frozen).
  absl::StatusOr<ValueId> AddParameterFrom(const std::string& name, const Const& c, bool frozen = false) {
    return AddParameterValues(name, std::vector<float>(c.v.begin(), c.v.end()), frozen, c.dims);
  }
  absl::StatusOr<ValueId> AddParameterValues(const std::string& name, std::vector<float> v, bool frozen,
                                             std::optional<Shape> dims = std::nullopt) {
    if (!dims) {
      const onnx::TensorProto& t = *inits_.at(name);
      dims.emplace(t.dims().begin(), t.dims().end());
    }
    Shape shape = *dims;
    if (shape.empty()) shape = {1};
    if (Numel(shape) == 0) return Bad(StrCat(path_, ": '", name, "' is an empty tensor used as data (the IR has no empty tensors)"));
    if (!frozen) {
      // A weight that is NaN or infinite can only make the loss NaN: a broken export.
      for (size_t i = 0; i < v.size(); ++i) {
        if (!std::isfinite(v[i])) {
          return Bad(StrCat(path_, ": initializer '", name, "' of shape ", DimsString(*dims), " element ", i, " is ",
                            static_cast<double>(v[i]), "; expected finite weights"));
        }
      }
    }
    HS_ASSIGN_OR_RETURN(ValueId id, g_.AddParameter(name, shape, Init::Data(std::move(v))));
    g_.SetFrozen(id, frozen);
    ids_[name] = id;
    return id;
  }
  // A FLOAT initializer's values, read as FromTensorProto reads them but in float, when it has
  // at least one; otherwise (or when they are not well stored) nothing, and FromTensorProto
  // says what is wrong.
  static std::optional<std::vector<float>> PlainFloats(const onnx::TensorProto& t) {
    if (t.data_type() != onnx::TensorProto::FLOAT) return std::nullopt;
    const absl::StatusOr<int64_t> n = StoredElementCount(t, "");
    if (!n.ok() || *n == 0) return std::nullopt;
    std::vector<float> v(static_cast<size_t>(*n));
    if (!ReadFloatValues(t, *n, "", v.data()).ok()) return std::nullopt;
    return v;
  }

  bool IdentityOfInitializer(const std::string& name) const {
    std::string cur = name;
    for (const onnx::NodeProto* p = Prod(cur, "Identity"); p; p = Prod(cur, "Identity")) cur = p->input(0);
    return inits_.count(cur) > 0;
  }

  absl::StatusOr<ValueId> AddInput(const onnx::ValueInfoProto& v) {
    const std::string where = StrCat(path_, ": graph input '", v.name(), "'");
    if (!v.type().has_tensor_type()) return Bad(StrCat(where, ": not a tensor"));
    const auto& tt = v.type().tensor_type();
    Shape shape;
    for (int i = 0; i < tt.shape().dim_size(); ++i) {
      const auto& d = tt.shape().dim(i);
      if (d.has_dim_value() && d.dim_value() > 0) {
        shape.push_back(i == 0 && opts_.batch > 0 ? opts_.batch : d.dim_value());
      } else if (i == 0 && opts_.batch > 0) {
        shape.push_back(opts_.batch);
      } else if (d.has_dim_value()) {
        return Bad(StrCat(where, " dim ", i, " is ", d.dim_value(), "; expected a positive size or a name",
                          i == 0 ? " (a symbolic batch, bound with --batch)" : ""));
      } else {
        return Bad(StrCat(where, " dim ", i, " ('", d.dim_param(), "') is symbolic",
                          i == 0 ? "; bind it with --batch" : "; only dim 0 (the batch) can be bound, with --batch"));
      }
    }
    // Data is held in fp32: exactly for these types (the integers as long as they stay below
    // 2^24 in magnitude), rounded to fp32 for double.
    static const std::set<int> held = {onnx::TensorProto::FLOAT,  onnx::TensorProto::FLOAT16, onnx::TensorProto::BFLOAT16,
                                       onnx::TensorProto::DOUBLE, onnx::TensorProto::INT64,   onnx::TensorProto::INT32,
                                       onnx::TensorProto::INT16,  onnx::TensorProto::INT8,    onnx::TensorProto::UINT16,
                                       onnx::TensorProto::UINT8,  onnx::TensorProto::BOOL};
    const int et = tt.elem_type();
    if (!held.count(et)) {
      return Bad(StrCat(where, ": element type ", onnx::TensorProto::DataType_Name(et),
                        "; expected a number type (float, float16, bfloat16, double, int64, int32, int16, int8, "
                        "uint16, uint8 or bool)"));
    }
    HS_ASSIGN_OR_RETURN(ValueId id, g_.AddInput(v.name(), shape));
    ids_[v.name()] = id;
    return id;
  }

  // BatchNormalization in eval mode (training_mode 0): (x − mean)/√(var + eps)·scale + B with
  // the given statistics, which must be constants (an eval export's running statistics): they
  // become frozen parameters, scale and B stay trainable. Elementwise IR ops, each per-channel
  // vector broadcast over the dims after the channel.
  absl::Status EvalBatchNorm(const onnx::NodeProto& n) {
    const std::string& out = n.output(0);
    for (int i = 1; i < n.output_size(); ++i) {
      if (!n.output(i).empty()) return Bad(StrCat(Where(n), " output ", i, ": the running statistics are outputs only in training mode"));
    }
    const Const* mean = n.input_size() > 3 ? Constant(n.input(3)) : nullptr;
    const Const* var = n.input_size() > 4 ? Constant(n.input(4)) : nullptr;
    if (!mean || !var) {
      return Bad(StrCat(Where(n), " inputs 3, 4 (input_mean, input_var): not constants; in eval mode "
                        "(training_mode 0) the statistics must be initializers"));
    }
    HS_RETURN_IF_ERROR(CheckStatistics(n, 3, *mean));
    HS_RETURN_IF_ERROR(CheckStatistics(n, 4, *var));
    HS_ASSIGN_OR_RETURN(ValueId x, In(n, 0));
    const Shape xs = g_.value(x).shape;
    if (xs.size() < 2 || static_cast<int64_t>(mean->v.size()) != xs[1] || mean->v.size() != var->v.size()) {
      return Bad(StrCat(Where(n), ": input_mean/input_var of ", mean->v.size(), "/", var->v.size(),
                        " values for x of shape ", DimsString(xs), "; expected one per channel (dim 1)"));
    }
    const int64_t c = xs[1];
    Shape column = {c};  // [C, 1, ...] for the dims after the channel
    for (size_t i = 2; i < xs.size(); ++i) column.push_back(1);
    const Shape per_sample(xs.begin() + 1, xs.end());
    auto spread = [&](ValueId v, const std::string& what) -> absl::StatusOr<ValueId> {
      HS_ASSIGN_OR_RETURN(v, ReshapeTo(n, v, column, StrCat(out, "/", what, "_column")));
      if (g_.value(v).shape == per_sample) return v;
      Attrs e;
      e.shape = per_sample;
      return Op(n, StrCat(out, "/", what, "_expand"), OpKind::kExpand, {v}, e);
    };
    const double eps = AttrFloat(n, "epsilon", 1e-5);
    for (int64_t i = 0; i < c; ++i) {
      if (!(static_cast<double>(static_cast<float>(var->v[i])) + static_cast<float>(eps) > 0)) {
        return Bad(StrCat(Where(n), " input 4 (input_var): '", n.input(4), "' element ", i, " is ", var->v[i], " with epsilon ", eps,
                          "; expected variance + epsilon > 0"));
      }
    }
    std::vector<float> neg_mean(static_cast<size_t>(c)), rstd(static_cast<size_t>(c));
    for (int64_t i = 0; i < c; ++i) {
      neg_mean[i] = static_cast<float>(-mean->v[i]);
      rstd[i] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(static_cast<float>(var->v[i])) + static_cast<float>(eps)));
    }
    HS_ASSIGN_OR_RETURN(ValueId m, g_.AddConstant(UniqueName(StrCat(n.input(3), "/negated")), column, std::move(neg_mean)));
    HS_ASSIGN_OR_RETURN(ValueId r, g_.AddConstant(UniqueName(StrCat(n.input(4), "/rstd")), column, std::move(rstd)));
    HS_ASSIGN_OR_RETURN(ValueId scale, In(n, 1));
    HS_ASSIGN_OR_RETURN(ValueId bias, In(n, 2));
    HS_ASSIGN_OR_RETURN(m, spread(m, "mean"));
    HS_ASSIGN_OR_RETURN(r, spread(r, "rstd"));
    HS_ASSIGN_OR_RETURN(scale, spread(scale, "scale"));
    HS_ASSIGN_OR_RETURN(bias, spread(bias, "bias"));
    HS_ASSIGN_OR_RETURN(ValueId y, Op(n, StrCat(out, "/centered"), OpKind::kAdd, {x, m}));
    HS_ASSIGN_OR_RETURN(y, Op(n, StrCat(out, "/normalized"), OpKind::kMul, {y, r}));
    HS_ASSIGN_OR_RETURN(y, Op(n, StrCat(out, "/scaled"), OpKind::kMul, {y, scale}));
    HS_ASSIGN_OR_RETURN(y, Op(n, out, OpKind::kAdd, {y, bias}));
    return Set(n, 0, y);
  }

  // `name`, or `name#k` with the first k that no value has.
  std::string UniqueName(const std::string& name) const {
    std::string unique = name;
    for (int k = 1; g_.Find(unique) != kNoValue; ++k) unique = StrCat(name, "#", k);
    return unique;
  }

  absl::StatusOr<ValueId> Op(const onnx::NodeProto& n, const std::string& name, OpKind kind,
                             const std::vector<ValueId>& in, const Attrs& a = {}) {
    absl::StatusOr<ValueId> id = g_.AddOp(UniqueName(name), kind, in, a);
    if (!id.ok()) return Bad(StrCat(Where(n), ": ", id.status().message()));
    return id;
  }

  // A value as an operand of node n.
  absl::StatusOr<ValueId> In(const onnx::NodeProto& n, int i) {
    if (i >= n.input_size() || n.input(i).empty()) return Bad(StrCat(Where(n), ": input ", i, " is missing"));
    return AsValue(n.input(i), &n, StrCat("input ", i));
  }

  absl::Status Set(const onnx::NodeProto& n, int out, ValueId v) {
    ids_[n.output(out)] = v;
    return absl::OkStatus();
  }

  // x reshaped to `shape` unless it has it.
  absl::StatusOr<ValueId> ReshapeTo(const onnx::NodeProto& n, ValueId x, const Shape& shape, const std::string& name) {
    if (g_.value(x).shape == shape) return x;
    Attrs a;
    a.shape = shape;
    return Op(n, name, OpKind::kReshape, {x}, a);
  }

  // add/mul with numpy broadcasting, as the IR's suffix rule allows: the operand with more
  // elements first; leading 1s of the other dropped.
  absl::StatusOr<ValueId> Binary(const onnx::NodeProto& n, OpKind kind, ValueId a, ValueId b) {
    Shape sa = g_.value(a).shape, sb = g_.value(b).shape;
    std::optional<Shape> out = Broadcast({sa, sb});
    if (!out) return Bad(StrCat(Where(n), ": shapes ", DimsString(sa), " and ", DimsString(sb), " do not broadcast"));
    if (sa != *out) {
      std::swap(a, b);
      std::swap(sa, sb);
    }
    if (sa != *out) {
      return Bad(StrCat(Where(n), ": shapes ", DimsString(sa), " and ", DimsString(sb),
                        " broadcast both ways; the IR broadcasts only the second operand"));
    }
    Shape tail = sb;
    while (!tail.empty() && tail.front() == 1 && tail.size() > 0) tail.erase(tail.begin());
    if (tail.empty()) tail = {1};
    const bool suffix = tail.size() <= sa.size() && std::equal(tail.begin(), tail.end(), sa.end() - static_cast<long>(tail.size()));
    if (!suffix && Numel(tail) != 1) {
      return Bad(StrCat(Where(n), ": broadcasting ", DimsString(sb), " over ", DimsString(sa),
                        " needs a dim of size 1 inside the shape; the IR broadcasts only leading dims"));
    }
    HS_ASSIGN_OR_RETURN(b, ReshapeTo(n, b, tail, StrCat(n.output(0), "/operand")));
    if (Numel(tail) == 1 && Numel(sa) != 1) {  // a scalar operand: broadcast explicitly
      HS_ASSIGN_OR_RETURN(b, Op(n, StrCat(n.output(0), "/expand"), OpKind::kExpand, {b}, [&] {
                            Attrs e;
                            e.shape = sa;
                            return e;
                          }()));
    }
    return Op(n, n.output(0), kind, {a, b});
  }

  bool IsScalar(const std::string& name, double value, double tol) {
    const Const* c = Constant(name);
    if (!c || c->v.size() != 1) return false;
    if (std::isinf(value)) return c->v[0] == value;
    return std::abs(c->v[0] - value) <= tol * std::max(1.0, std::abs(value));
  }

  const onnx::NodeProto* Prod(const std::string& name, const std::string& op) const {
    auto it = producer_.find(name);
    return it != producer_.end() && it->second->op_type() == op ? it->second : nullptr;
  }

  // ---- patterns ----
  // Whether a Softmax on an input of rank `rank` normalizes over the last axis (the default
  // axis is 1 before opset 13, -1 since; over the last axis both definitions agree).
  bool SoftmaxOverLast(const onnx::NodeProto& sm, int64_t rank) const {
    const int64_t axis = AttrInt(sm, "axis", opset_ < 13 ? 1 : -1);
    return axis == -1 || axis == rank - 1;
  }

  // GELU as torch.onnx exports the exact form: Mul(Mul(x, Add(Erf(Div(x, √2)), 1)), 0.5).
  std::optional<std::string> MatchGelu(const onnx::NodeProto& n) {
    if (n.op_type() != "Mul" || n.input_size() != 2) return std::nullopt;
    for (int half = 0; half < 2; ++half) {
      if (!IsScalar(n.input(half), 0.5, 1e-7)) continue;
      const onnx::NodeProto* m = Prod(n.input(1 - half), "Mul");
      if (!m) continue;
      for (int xi = 0; xi < 2; ++xi) {
        const std::string& x = m->input(xi);
        const onnx::NodeProto* add = Prod(m->input(1 - xi), "Add");
        if (!add) continue;
        for (int oi = 0; oi < 2; ++oi) {
          if (!IsScalar(add->input(oi), 1.0, 1e-7)) continue;
          const onnx::NodeProto* erf = Prod(add->input(1 - oi), "Erf");
          if (!erf) continue;
          const onnx::NodeProto* div = Prod(erf->input(0), "Div");
          if (div && div->input(0) == x && IsScalar(div->input(1), std::sqrt(2.0), 1e-6)) return x;
          const onnx::NodeProto* mul = Prod(erf->input(0), "Mul");
          if (mul && mul->input(0) == x && IsScalar(mul->input(1), 1 / std::sqrt(2.0), 1e-6)) return x;
        }
      }
    }
    return std::nullopt;
  }

  // ReduceMean over the last axis only, keeping it.
  // `rank`: of x (the pattern's input; its inner values are never resolved, which would emit
  // them as IR ops).
  bool IsMeanLast(const onnx::NodeProto* rm, const std::string& x, size_t rank) {
    if (!rm || rm->input(0) != x || AttrInt(*rm, "keepdims", 1) != 1) return false;
    std::vector<int64_t> axes = AttrInts(*rm, "axes");
    if (rm->input_size() > 1 && !rm->input(1).empty()) {
      const Const* c = Constant(rm->input(1));
      if (!c) return false;
      axes.clear();
      for (double a : c->v) axes.push_back(static_cast<int64_t>(a));
    }
    return axes.size() == 1 && NormAxis(axes[0], rank) == static_cast<int64_t>(rank) - 1;
  }

  struct LayerNormMatch {
    std::string x, gamma, beta;
    double eps = 0;
  };
  // LayerNorm as opsets < 17 export it: Add(Mul(Div(d, Sqrt(Add(ReduceMean(Pow(d, 2)), eps))),
  // gamma), beta) with d = Sub(x, ReduceMean(x)), the reductions over the last axis.
  std::optional<LayerNormMatch> MatchLayerNorm(const onnx::NodeProto& n) {
    if (n.op_type() != "Add") return std::nullopt;
    for (int bi = 0; bi < 2; ++bi) {
      const onnx::NodeProto* mul = Prod(n.input(1 - bi), "Mul");
      if (!mul) continue;
      for (int gi = 0; gi < 2; ++gi) {
        const onnx::NodeProto* div = Prod(mul->input(1 - gi), "Div");
        if (!div) continue;
        const onnx::NodeProto* sub = Prod(div->input(0), "Sub");
        const onnx::NodeProto* sqrt = Prod(div->input(1), "Sqrt");
        if (!sub || !sqrt) continue;
        const onnx::NodeProto* mean = Prod(sub->input(1), "ReduceMean");
        if (!mean || mean->input(0) != sub->input(0)) continue;
        absl::StatusOr<Shape> xs = ShapeOf(sub->input(0));
        if (!xs.ok() || !IsMeanLast(mean, sub->input(0), xs->size())) continue;
        const onnx::NodeProto* add = Prod(sqrt->input(0), "Add");
        if (!add) continue;
        for (int ei = 0; ei < 2; ++ei) {
          const Const* eps = Constant(add->input(ei));
          const onnx::NodeProto* var = Prod(add->input(1 - ei), "ReduceMean");
          if (!eps || eps->v.size() != 1 || !var) continue;
          const onnx::NodeProto* pow = Prod(var->input(0), "Pow");
          if (!pow || !IsScalar(pow->input(1), 2.0, 0) || !IsMeanLast(var, pow->output(0), xs->size())) continue;
          const onnx::NodeProto* sub2 = Prod(pow->input(0), "Sub");
          if (!sub2 || sub2->input(0) != sub->input(0) || sub2->input(1) != sub->input(1)) continue;
          return LayerNormMatch{sub->input(0), mul->input(gi), n.input(bi), eps->v[0]};
        }
      }
    }
    return std::nullopt;
  }

  // Reshape(x[B,T,C] -> [B,T,H,D]) then Transpose(perm); returns x and H.
  std::optional<std::pair<std::string, int64_t>> SplitHeads(const std::string& name, const std::vector<int64_t>& perm) {
    const onnx::NodeProto* tr = Prod(name, "Transpose");
    if (!tr || AttrInts(*tr, "perm") != perm) return std::nullopt;
    const onnx::NodeProto* rs = Prod(tr->input(0), "Reshape");
    if (!rs) return std::nullopt;
    const Const* shape = Constant(rs->input(1));
    if (!shape || shape->v.size() != 4) return std::nullopt;
    absl::StatusOr<Shape> in = ShapeOf(rs->input(0));
    if (!in.ok() || in->size() != 3) return std::nullopt;
    absl::StatusOr<Shape> out = ReshapeTarget(*rs, *in, shape);
    if (!out.ok() || (*out)[0] != (*in)[0] || (*out)[1] != (*in)[1]) return std::nullopt;
    return std::make_pair(rs->input(0), (*out)[2]);
  }

  struct AttentionMatch {
    std::string q, k, v;
    int64_t heads = 0;
    bool causal = false;
  };

  // Whether the constant `c` (broadcast over [..., T, T]) marks exactly the entries above the
  // diagonal, where `masked(value)` says an entry is masked.
  bool IsCausal(const Const& c, int64_t t, const std::function<bool(double)>& masked) {
    if (c.dims.size() < 2 || c.dims[c.dims.size() - 1] != t || c.dims[c.dims.size() - 2] != t) return false;
    for (size_t i = 0; i < c.v.size(); ++i) {
      const int64_t r = static_cast<int64_t>(i / t) % t, col = static_cast<int64_t>(i % t);
      if (masked(c.v[i]) != (col > r)) return false;
    }
    return true;
  }

  // softmax(q·kᵀ·s + mask)·v with heads split and merged around it, ending at a Reshape.
  std::optional<AttentionMatch> MatchAttention(const onnx::NodeProto& n) {
    if (n.op_type() != "Reshape") return std::nullopt;
    const onnx::NodeProto* merge = Prod(n.input(0), "Transpose");
    if (!merge || AttrInts(*merge, "perm") != std::vector<int64_t>{0, 2, 1, 3}) return std::nullopt;
    const onnx::NodeProto* pv = Prod(merge->input(0), "MatMul");
    if (!pv) return std::nullopt;
    std::string p = pv->input(0);
    if (const onnx::NodeProto* d = Prod(p, "Dropout")) p = d->input(0);
    const onnx::NodeProto* sm = Prod(p, "Softmax");
    if (!sm || !SoftmaxOverLast(*sm, 4)) return std::nullopt;
    std::string s = sm->input(0);
    AttentionMatch m;
    const onnx::NodeProto* where = Prod(s, "Where");
    const onnx::NodeProto* addmask = Prod(s, "Add");
    std::function<bool(int64_t)> check_mask = [](int64_t) { return true; };
    if (where) {
      const Const* cond = Constant(where->input(0));
      const int masked_branch = IsScalar(where->input(1), -INFINITY, 0) ? 1 : IsScalar(where->input(2), -INFINITY, 0) ? 2 : 0;
      if (!cond || masked_branch == 0) return std::nullopt;
      s = where->input(masked_branch == 1 ? 2 : 1);
      check_mask = [this, cond, masked_branch](int64_t t) {
        return IsCausal(*cond, t, [masked_branch](double x) { return (x != 0) == (masked_branch == 1); });
      };
      m.causal = true;
    } else if (addmask) {
      for (int i = 0; i < 2; ++i) {
        const Const* c = Constant(addmask->input(i));
        if (!c) continue;
        s = addmask->input(1 - i);
        check_mask = [this, c](int64_t t) { return IsCausal(*c, t, [](double x) { return x <= -1e9; }); };
        m.causal = true;
      }
      if (!m.causal) return std::nullopt;
    }
    // Scale: Mul by 1/√D or Div by √D.
    double scale = 1.0;
    std::string qk = s;
    if (const onnx::NodeProto* mul = Prod(s, "Mul")) {
      for (int i = 0; i < 2; ++i) {
        const Const* c = Constant(mul->input(i));
        if (c && c->v.size() == 1) scale = c->v[0], qk = mul->input(1 - i);
      }
    } else if (const onnx::NodeProto* div = Prod(s, "Div")) {
      const Const* c = Constant(div->input(1));
      if (c && c->v.size() == 1) scale = 1.0 / c->v[0], qk = div->input(0);
    }
    const onnx::NodeProto* mm = Prod(qk, "MatMul");
    if (!mm) return std::nullopt;
    auto q = SplitHeads(mm->input(0), {0, 2, 1, 3});
    auto v = SplitHeads(pv->input(1), {0, 2, 1, 3});
    auto k = SplitHeads(mm->input(1), {0, 2, 3, 1});
    if (!k) {
      const onnx::NodeProto* kt = Prod(mm->input(1), "Transpose");
      if (kt && AttrInts(*kt, "perm") == std::vector<int64_t>{0, 1, 3, 2}) k = SplitHeads(kt->input(0), {0, 2, 1, 3});
    }
    if (!q || !k || !v || q->second != k->second || q->second != v->second) return std::nullopt;
    absl::StatusOr<Shape> qs = ShapeOf(q->first);
    if (!qs.ok()) return std::nullopt;
    const int64_t t = (*qs)[1], d = (*qs)[2] / q->second;
    if (std::abs(scale * std::sqrt(static_cast<double>(d)) - 1.0) > 1e-6) return std::nullopt;
    if (!check_mask(t)) return std::nullopt;
    // The merge must give back [B, T, C].
    const Const* merged = Constant(n.input(1));
    if (!merged) return std::nullopt;
    absl::StatusOr<Shape> target = ReshapeTarget(n, {(*qs)[0], t, q->second, d}, merged);
    if (!target.ok() || *target != *qs) return std::nullopt;
    m.q = q->first;
    m.k = k->first;
    m.v = v->first;
    m.heads = q->second;
    return m;
  }

  // torch.nn.MultiheadAttention as F.multi_head_attention_forward exports it (torchvision's
  // VisionTransformer), sequence-first: q, k, v [T, B, C] reshaped to [T, B·H, D] and
  // transposed to [B·H, T, D], q divided by √D, softmax(q·kᵀ)·v, transposed back and reshaped
  // to [T·B, C] — matched at that last Reshape.
  struct MhaMatch {
    std::string q, k, v;
    int64_t heads = 0;
  };
  std::optional<std::pair<std::string, int64_t>> MhaHeads(const std::string& name, const std::vector<int64_t>& perm) {
    const onnx::NodeProto* tr = Prod(name, "Transpose");
    if (!tr || AttrInts(*tr, "perm") != perm) return std::nullopt;
    const onnx::NodeProto* rs = Prod(tr->input(0), "Reshape");
    if (!rs) return std::nullopt;
    const Const* shape = Constant(rs->input(1));
    absl::StatusOr<Shape> in = ShapeOf(rs->input(0));
    if (!shape || !in.ok() || in->size() != 3) return std::nullopt;
    absl::StatusOr<Shape> out = ReshapeTarget(*rs, *in, shape);
    if (!out.ok() || out->size() != 3 || (*out)[0] != (*in)[0] || (*out)[1] % (*in)[1] != 0) return std::nullopt;
    const int64_t heads = (*out)[1] / (*in)[1];
    if ((*out)[2] * heads != (*in)[2]) return std::nullopt;
    return std::make_pair(rs->input(0), heads);
  }
  std::optional<MhaMatch> MatchMha(const onnx::NodeProto& n) {
    if (n.op_type() != "Reshape") return std::nullopt;
    const onnx::NodeProto* back = Prod(n.input(0), "Transpose");
    if (!back || AttrInts(*back, "perm") != std::vector<int64_t>{1, 0, 2}) return std::nullopt;
    const onnx::NodeProto* pv = Prod(back->input(0), "MatMul");
    if (!pv) return std::nullopt;
    std::string p = pv->input(0);
    if (const onnx::NodeProto* d = Prod(p, "Dropout")) p = d->input(0);
    const onnx::NodeProto* sm = Prod(p, "Softmax");
    if (!sm || !SoftmaxOverLast(*sm, 3)) return std::nullopt;
    const onnx::NodeProto* qk = Prod(sm->input(0), "MatMul");
    if (!qk) return std::nullopt;
    std::string qs = qk->input(0);
    double scale = 1;
    if (const onnx::NodeProto* div = Prod(qs, "Div")) {
      const Const* c = Constant(div->input(1));
      if (!c || c->v.size() != 1) return std::nullopt;
      scale = 1 / c->v[0], qs = div->input(0);
    } else if (const onnx::NodeProto* mul = Prod(qs, "Mul")) {
      const Const* c = Constant(mul->input(1));
      if (!c || c->v.size() != 1) return std::nullopt;
      scale = c->v[0], qs = mul->input(0);
    }
    auto q = MhaHeads(qs, {1, 0, 2});
    auto k = MhaHeads(qk->input(1), {1, 2, 0});
    auto v = MhaHeads(pv->input(1), {1, 0, 2});
    if (!q || !k || !v || q->second != k->second || q->second != v->second) return std::nullopt;
    absl::StatusOr<Shape> s = ShapeOf(q->first);
    if (!s.ok()) return std::nullopt;
    const int64_t t = (*s)[0], b = (*s)[1], c = (*s)[2], d = c / q->second;
    if (std::abs(scale * std::sqrt(static_cast<double>(d)) - 1.0) > 1e-6) return std::nullopt;
    const Const* target = Constant(n.input(1));
    if (!target) return std::nullopt;
    absl::StatusOr<Shape> out = ReshapeTarget(n, {t, b * q->second, d}, target);
    if (!out.ok() || *out != Shape{t * b, c}) return std::nullopt;
    return MhaMatch{q->first, k->first, v->first, q->second};
  }

  // The padding of a 2-D window on x [B, C, H, W], equal on every side: explicit `pads`, or
  // auto_pad SAME_UPPER/SAME_LOWER where the total padding splits evenly, or VALID.
  // A Conv's or pool's window per spatial dim (the dims after N and C): size, stride,
  // dilation, and the padding before and after (explicit `pads`, or from `auto_pad`).
  struct Window {
    std::vector<int64_t> k, s, d, begin, end;
    bool SquareSymmetric() const {
      for (size_t i = 0; i < k.size(); ++i) {
        if (k[i] != k[0] || s[i] != s[0] || d[i] != 1 || begin[i] != begin[0] || end[i] != begin[0]) return false;
      }
      return true;
    }
  };
  absl::StatusOr<Window> WindowOf(const onnx::NodeProto& n, const Shape& x, std::vector<int64_t> k) {
    const size_t r = x.size() < 3 ? 0 : x.size() - 2;
    if (r == 0 || k.size() != r) {
      return Bad(StrCat(Where(n), ": a window of ", k.size(), " dims for x of shape ", DimsString(x),
                        "; expected one per spatial dim (x is [N, C, ...])"));
    }
    Window w;
    w.k = std::move(k);
    w.s = AttrInts(n, "strides");
    w.d = AttrInts(n, "dilations");
    if (w.s.empty()) w.s.assign(r, 1);
    if (w.d.empty()) w.d.assign(r, 1);
    if (w.s.size() != r || w.d.size() != r) return Bad(StrCat(Where(n), " attributes strides/dilations: expected ", r, " values each"));
    for (size_t i = 0; i < r; ++i) {
      if (w.k[i] < 1 || w.s[i] < 1 || w.d[i] < 1) {
        return Bad(StrCat(Where(n), " attributes kernel_shape/strides/dilations: ", DimsString(w.k), "/", DimsString(w.s), "/",
                          DimsString(w.d), "; expected positive values"));
      }
    }
    const onnx::AttributeProto* ap = Attr(n, "auto_pad");
    const std::string mode = ap ? ap->s() : "NOTSET";
    w.begin.assign(r, 0);
    w.end.assign(r, 0);
    if (mode == "SAME_UPPER" || mode == "SAME_LOWER") {
      // Output ⌈x/s⌉; the extra pad goes after (UPPER) or before (LOWER).
      for (size_t i = 0; i < r; ++i) {
        if (static_cast<__int128>(w.k[i] - 1) * w.d[i] + 1 > static_cast<__int128>(x[i + 2]) + kMaxFoldedElements) {
          return Bad(StrCat(Where(n), " attribute kernel_shape: ", DimsString(w.k), " (dilations ", DimsString(w.d),
                            ") with auto_pad ", mode, " over x of shape ", DimsString(x), ": the window is larger than the input"));
        }
        const int64_t xi = x[i + 2], span = (w.k[i] - 1) * w.d[i] + 1;
        const int64_t total = std::max<int64_t>(((xi + w.s[i] - 1) / w.s[i] - 1) * w.s[i] + span - xi, 0);
        w.begin[i] = mode == "SAME_UPPER" ? total / 2 : total - total / 2;
        w.end[i] = total - w.begin[i];
      }
    } else if (mode == "NOTSET") {
      const std::vector<int64_t> pads = AttrInts(n, "pads");
      if (!pads.empty() && pads.size() != 2 * r) {
        return Bad(StrCat(Where(n), " attribute pads: ", DimsString(pads), "; expected ", 2 * r, " values (begins, then ends)"));
      }
      for (size_t i = 0; i < pads.size() / 2; ++i) w.begin[i] = pads[i], w.end[i] = pads[i + r];
    } else if (mode != "VALID") {
      return Bad(StrCat(Where(n), " attribute auto_pad: '", mode, "'; expected NOTSET, SAME_UPPER, SAME_LOWER or VALID"));
    }
    for (size_t i = 0; i < r; ++i) {
      if (w.begin[i] < 0 || w.end[i] < 0) return Bad(StrCat(Where(n), " attribute pads: negative padding"));
      // The window's span must fit the padded input (an output of at least one), and a pool's
      // with SAME padding, derived from the window, the input itself.
      const bool same_pool = n.op_type() != "Conv" && (mode == "SAME_UPPER" || mode == "SAME_LOWER");
      const __int128 span = static_cast<__int128>(w.k[i] - 1) * w.d[i] + 1;
      const __int128 room = static_cast<__int128>(x[i + 2]) + (same_pool ? 0 : static_cast<__int128>(w.begin[i]) + w.end[i]);
      if (span > room) {
        return Bad(StrCat(Where(n), " attribute kernel_shape: ", DimsString(w.k), " (dilations ", DimsString(w.d),
                          ") over x of shape ", DimsString(x), " with pads ", DimsString(w.begin), "/", DimsString(w.end),
                          ": the window on spatial dim ", i, " is larger than the ", same_pool ? "" : "padded ", "input"));
      }
    }
    return w;
  }

  // Pooling along the last axis of v ([..., L]): window k, stride s, dilation d, padding b
  // before and e after (−inf for max, left out of or counted in the mean per
  // count_include_pad). Exact on the IR's square 2-D pools: the row [M, 1, 1, L] repeated into k
  // identical rows and pooled with a k×k window gives every 1-D window in any row of the
  // output (a window's rows hold the same values), and the row whose window covers exactly
  // the k real rows where the padding is counted in the mean. A dilated window (stride 1)
  // stacks its k taps, each a shifted slice, along a new last axis and pools that.
  absl::StatusOr<ValueId> PoolLastAxis(const onnx::NodeProto& n, ValueId v, int64_t k, int64_t s, int64_t d, int64_t b,
                                       int64_t e, bool max, bool count_include_pad, const std::string& name) {
    const Shape shape = g_.value(v).shape;
    const int64_t len = shape.back();
    const int64_t rows = Numel(shape) / len;
    const int64_t out_len = (len + b + e - ((k - 1) * d + 1)) / s + 1;
    if (out_len < 1) return Bad(StrCat(Where(n), ": the window is larger than the padded input"));
    Shape out_shape = shape;
    out_shape.back() = out_len;
    if (d > 1) {
      if (s != 1 || b != 0 || e != 0) {
        return Bad(StrCat(Where(n), " attribute dilations: ", d, " with stride ", s, " and pads ", b, ",", e,
                          "; a dilated window is supported with stride 1 and no padding"));
      }
      std::vector<ValueId> taps;
      Shape tap_shape = out_shape;
      tap_shape.push_back(1);
      for (int64_t j = 0; j < k; ++j) {
        Attrs a;
        a.axis = static_cast<int64_t>(shape.size()) - 1;
        a.start = j * d;
        a.length = out_len;
        HS_ASSIGN_OR_RETURN(ValueId t, Op(n, StrCat(name, "/tap", j), OpKind::kSlice, {v}, a));
        HS_ASSIGN_OR_RETURN(t, ReshapeTo(n, t, tap_shape, StrCat(name, "/tap", j, "_column")));
        taps.push_back(t);
      }
      Attrs c;
      c.axis = static_cast<int64_t>(tap_shape.size()) - 1;
      HS_ASSIGN_OR_RETURN(ValueId stacked, Op(n, StrCat(name, "/taps"), OpKind::kConcat, taps, c));
      HS_ASSIGN_OR_RETURN(ValueId y, PoolLastAxis(n, stacked, k, k, 1, 0, 0, max, count_include_pad, name));
      return ReshapeTo(n, y, out_shape, StrCat(name, "/undilated"));
    }
    const int64_t p = std::max(b, e);
    if (p >= k || (p - b) % s != 0 || (count_include_pad && p > 0 && p % s != 0)) {
      return Bad(StrCat(Where(n), " attribute pads: ", b, " before and ", e, " after with window ", k, " and stride ", s,
                        "; expected padding below the window whose difference between the sides is a multiple of the stride"));
    }
    HS_ASSIGN_OR_RETURN(ValueId y, ReshapeTo(n, v, {rows, 1, 1, len}, StrCat(name, "/row")));
    Attrs ex;
    ex.shape = {rows, 1, k, len};
    HS_ASSIGN_OR_RETURN(y, Op(n, StrCat(name, "/rows"), OpKind::kExpand, {y}, ex));
    Attrs a;
    a.kernel = k;
    a.stride = s;
    a.padding = p;
    a.count_include_pad = count_include_pad;
    HS_ASSIGN_OR_RETURN(y, Op(n, StrCat(name, "/pool"), max ? OpKind::kMaxPool2d : OpKind::kAvgPool2d, {y}, a));
    const Shape pooled = g_.value(y).shape;
    const int64_t row = count_include_pad ? p / s : 0;
    if (pooled[2] != 1) {
      Attrs sl;
      sl.axis = 2;
      sl.start = row;
      sl.length = 1;
      HS_ASSIGN_OR_RETURN(y, Op(n, StrCat(name, "/row_of_window"), OpKind::kSlice, {y}, sl));
    }
    if (pooled[3] != out_len) {
      Attrs sl;
      sl.axis = 3;
      sl.start = (p - b) / s;
      sl.length = out_len;
      HS_ASSIGN_OR_RETURN(y, Op(n, StrCat(name, "/windows"), OpKind::kSlice, {y}, sl));
    }
    return ReshapeTo(n, y, out_shape, StrCat(name, "/out"));
  }

  // A pool over any number of spatial dims, any window: the IR's square 2-D pool where it
  // fits, else one 1-D pool per spatial dim (PoolLastAxis; max and mean are separable over the
  // window's box, the mean's count too), each dim moved last by a transpose and back.
  absl::StatusOr<ValueId> Pool(const onnx::NodeProto& n, ValueId x, const Window& w, bool max, bool ceil_mode,
                               bool count_include_pad) {
    const std::string& out = n.output(0);
    const Shape xs = g_.value(x).shape;
    if (xs.size() == 4 && w.SquareSymmetric() && w.begin[0] < w.k[0]) {
      Attrs a;
      a.kernel = w.k[0];
      a.stride = w.s[0];
      a.padding = w.begin[0];
      a.ceil_mode = ceil_mode;
      a.count_include_pad = count_include_pad;
      return Op(n, out, max ? OpKind::kMaxPool2d : OpKind::kAvgPool2d, {x}, a);
    }
    if (ceil_mode) {
      return Bad(StrCat(Where(n), " attribute ceil_mode: 1 with a window of ", DimsString(w.k), " over x of shape ", DimsString(xs),
                        "; ceil_mode is supported for square 2-D windows with equal pads"));
    }
    ValueId y = x;
    const int64_t last = static_cast<int64_t>(xs.size()) - 1;
    for (int64_t i = last; i >= 2; --i) {
      const size_t si = static_cast<size_t>(i - 2);
      const std::string name = StrCat(out, "/dim", i);
      Attrs t;
      t.axis = i;
      t.axis2 = last;
      if (i != last) {
        HS_ASSIGN_OR_RETURN(y, Op(n, StrCat(name, "_last"), OpKind::kTranspose, {y}, t));
      }
      HS_ASSIGN_OR_RETURN(y, PoolLastAxis(n, y, w.k[si], w.s[si], w.d[si], w.begin[si], w.end[si], max, count_include_pad, name));
      if (i != last) {
        HS_ASSIGN_OR_RETURN(y, Op(n, StrCat(name, "_back"), OpKind::kTranspose, {y}, t));
      }
    }
    return y;
  }

  // x padded along `axis` by `before` and `after` elements (a negative count crops): "constant"
  // concatenates frozen constants of `value` (those of a batch-free shape, expanded over dim 0),
  // "edge" repeats the first and last slice, "reflect" mirrors the slices next to them.
  absl::StatusOr<ValueId> PadAxis(const onnx::NodeProto& n, ValueId x, int64_t axis, int64_t before, int64_t after,
                                  const std::string& mode = "constant", float value = 0.0f) {
    const std::string& out = n.output(0);
    auto slice = [&](ValueId v, int64_t start, int64_t length) {
      Attrs a;
      a.axis = axis;
      a.start = start;
      a.length = length;
      return Op(n, StrCat(out, "/pad", axis, "_slice"), OpKind::kSlice, {v}, a);
    };
    if (before < 0 || after < 0) {
      const int64_t d = g_.value(x).shape[static_cast<size_t>(axis)];
      const int64_t from = std::max<int64_t>(-before, 0), keep = d - from - std::max<int64_t>(-after, 0);
      if (keep < 1) return Bad(StrCat(Where(n), " pads: cropping dim ", axis, " of size ", d, " to nothing (the IR has no empty tensors)"));
      HS_ASSIGN_OR_RETURN(x, slice(x, from, keep));
      before = std::max<int64_t>(before, 0);
      after = std::max<int64_t>(after, 0);
    }
    if (before == 0 && after == 0) return x;
    const Shape xs = g_.value(x).shape;
    const int64_t d = xs[static_cast<size_t>(axis)];
    if (mode == "reflect" && (before >= d || after >= d)) {
      return Bad(StrCat(Where(n), " pads: reflecting ", before, " and ", after, " elements of dim ", axis, " of size ", d,
                        "; expected fewer than the dim on each side"));
    }
    std::vector<ValueId> parts;
    for (int side = 0; side < 2; ++side) {
      const int64_t width = side == 0 ? before : after;
      if (side == 1) parts.push_back(x);
      if (width == 0) continue;
      if (mode == "reflect") {
        for (int64_t j = 0; j < width; ++j) {
          HS_ASSIGN_OR_RETURN(ValueId piece, slice(x, side == 0 ? width - j : d - 2 - j, 1));
          parts.push_back(piece);
        }
        continue;
      }
      Shape ps = xs;
      ps[static_cast<size_t>(axis)] = width;
      ValueId piece;
      if (mode == "edge") {
        HS_ASSIGN_OR_RETURN(piece, slice(x, side == 0 ? 0 : d - 1, 1));
      } else {
        Shape cs = ps;
        if (axis != 0) cs[0] = 1;
        HS_RETURN_IF_ERROR(CheckFoldSize(n, cs, "pads"));
        HS_ASSIGN_OR_RETURN(piece, g_.AddConstant(UniqueName(StrCat(out, "/pad_value")), cs,
                                                  std::vector<float>(static_cast<size_t>(Numel(cs)), value)));
      }
      if (g_.value(piece).shape != ps) {
        Attrs e;
        e.shape = ps;
        HS_ASSIGN_OR_RETURN(piece, Op(n, StrCat(out, "/pad", axis, "_expand"), OpKind::kExpand, {piece}, e));
      }
      parts.push_back(piece);
    }
    Attrs c;
    c.axis = axis;
    return Op(n, StrCat(out, "/padded", axis), OpKind::kConcat, parts, c);
  }

  // ---- one node ----
  absl::Status Emit(const onnx::NodeProto& n) {
    const std::string& op = n.op_type();
    const std::string& out = n.output(0);
    if (std::find(SupportedOps().begin(), SupportedOps().end(), op) == SupportedOps().end()) {
      return Bad(StrCat(Where(n), ": unsupported operator '", op, "'; supported: ", OnnxSupportedOps()));
    }
    if (!n.domain().empty() && n.domain() != "ai.onnx") {
      return Bad(StrCat(Where(n), ": operator domain '", n.domain(), "'; expected the default ONNX domain"));
    }
    if (std::optional<std::string> x = MatchGelu(n)) {
      HS_ASSIGN_OR_RETURN(ValueId xv, AsValue(*x, &n, "GELU input"));
      HS_ASSIGN_OR_RETURN(ValueId y, Op(n, out, OpKind::kGelu, {xv}));
      return Set(n, 0, y);
    }
    if (std::optional<LayerNormMatch> ln = MatchLayerNorm(n)) {
      HS_ASSIGN_OR_RETURN(ValueId x, AsValue(ln->x, &n, "layer norm input"));
      HS_ASSIGN_OR_RETURN(ValueId gamma, AsValue(ln->gamma, &n, "layer norm scale"));
      HS_ASSIGN_OR_RETURN(ValueId beta, AsValue(ln->beta, &n, "layer norm bias"));
      const int64_t c = g_.value(x).shape.back();
      HS_ASSIGN_OR_RETURN(gamma, ReshapeTo(n, gamma, {c}, StrCat(out, "/scale")));
      HS_ASSIGN_OR_RETURN(beta, ReshapeTo(n, beta, {c}, StrCat(out, "/bias")));
      Attrs a;
      a.eps = ln->eps;
      HS_ASSIGN_OR_RETURN(ValueId y, Op(n, out, OpKind::kLayerNorm, {x, gamma, beta}, a));
      return Set(n, 0, y);
    }
    if (std::optional<MhaMatch> m = MatchMha(n)) {
      // attention on [B, T, C]: the sequence-first operands transposed, the result back.
      Attrs bt;
      bt.axis = 0;
      bt.axis2 = 1;
      std::vector<ValueId> qkv;
      for (const std::string* x : {&m->q, &m->k, &m->v}) {
        HS_ASSIGN_OR_RETURN(ValueId xv, AsValue(*x, &n, "attention operand"));
        HS_ASSIGN_OR_RETURN(ValueId xt, Op(n, StrCat(*x, "/batch_first"), OpKind::kTranspose, {xv}, bt));
        qkv.push_back(xt);
      }
      Attrs a;
      a.heads = m->heads;
      HS_ASSIGN_OR_RETURN(ValueId y, Op(n, StrCat(out, "/attention"), OpKind::kAttention, qkv, a));
      HS_ASSIGN_OR_RETURN(y, Op(n, StrCat(out, "/seq_first"), OpKind::kTranspose, {y}, bt));
      const Shape ys = g_.value(y).shape;
      HS_ASSIGN_OR_RETURN(y, ReshapeTo(n, y, {ys[0] * ys[1], ys[2]}, out));
      return Set(n, 0, y);
    }
    if (std::optional<AttentionMatch> m = MatchAttention(n)) {
      HS_ASSIGN_OR_RETURN(ValueId q, AsValue(m->q, &n, "attention q"));
      HS_ASSIGN_OR_RETURN(ValueId k, AsValue(m->k, &n, "attention k"));
      HS_ASSIGN_OR_RETURN(ValueId v, AsValue(m->v, &n, "attention v"));
      Attrs a;
      a.heads = m->heads;
      a.causal = m->causal;
      HS_ASSIGN_OR_RETURN(ValueId y, Op(n, out, OpKind::kAttention, {q, k, v}, a));
      return Set(n, 0, y);
    }
    // Data-movement ops on constants fold (Constant() already tried); the rest map to IR ops.
    if (op == "Identity" || op == "Dropout" || op == "Cast") {
      if (op == "Dropout" && n.input_size() > 2 && !n.input(2).empty()) {
        // In training mode only ratio 0 (the identity) is supported.
        const Const* training = Constant(n.input(2));
        const Const* ratio = n.input_size() > 1 && !n.input(1).empty() ? Constant(n.input(1)) : nullptr;
        const bool zero = ratio && ratio->v.size() == 1 && ratio->v[0] == 0;
        if (!zero && (!training || (training->v.size() == 1 && training->v[0] != 0))) {
          return Bad(StrCat(Where(n), " input 2 (training_mode): dropout in training mode is not supported "
                            "(its mask cannot be reproduced); export in eval mode or with p = 0"));
        }
      }
      HS_ASSIGN_OR_RETURN(ValueId x, In(n, 0));
      if (op == "Cast") {
        // Data is fp32 (AddInput): a cast to float or double keeps every value (float to double
        // is exact), one to float16 or bfloat16 rounds to that format's grid.
        const int64_t to = AttrInt(n, "to", onnx::TensorProto::FLOAT);
        if (to == onnx::TensorProto::FLOAT16 || to == onnx::TensorProto::BFLOAT16) {
          HS_ASSIGN_OR_RETURN(ValueId y, Op(n, out, to == onnx::TensorProto::FLOAT16 ? OpKind::kToFloat16 : OpKind::kToBfloat16, {x}));
          return Set(n, 0, y);
        }
        if (to != onnx::TensorProto::FLOAT && to != onnx::TensorProto::DOUBLE && to != onnx::TensorProto::INT64 &&
            to != onnx::TensorProto::INT32) {
          const std::string type_name = onnx::TensorProto::DataType_IsValid(static_cast<int>(to))
                                            ? onnx::TensorProto::DataType_Name(static_cast<int>(to))
                                            : StrCat(to, " (not an ONNX data type)");
          return Bad(StrCat(Where(n), " attribute to: ", type_name,
                            "; casts of data are supported to float, double, float16, bfloat16, int64 and int32"));
        }
      }
      return Set(n, 0, x);
    }
    static const std::map<std::string, OpKind> unary = {
        {"Relu", OpKind::kRelu},       {"Sigmoid", OpKind::kSigmoid},   {"Tanh", OpKind::kTanh},
        {"Erf", OpKind::kErf},         {"Exp", OpKind::kExp},           {"Log", OpKind::kLog},
        {"Abs", OpKind::kAbs},         {"Neg", OpKind::kNeg},           {"Reciprocal", OpKind::kReciprocal},
        {"Sqrt", OpKind::kSqrt},       {"Softplus", OpKind::kSoftplus}, {"Softsign", OpKind::kSoftsign},
        {"HardSwish", OpKind::kHardswish}};
    if (auto u = unary.find(op); u != unary.end()) {
      HS_ASSIGN_OR_RETURN(ValueId x, In(n, 0));
      HS_ASSIGN_OR_RETURN(ValueId y, Op(n, out, u->second, {x}));
      return Set(n, 0, y);
    }
    if (op == "Div" && types_.count(out) && !IsFloatType(types_.at(out))) {
      return Bad(StrCat(Where(n), ": integer division (", onnx::TensorProto::DataType_Name(types_.at(out)),
                        ") of data is not supported; the IR's data is fp32"));
    }
    if (op == "Sub" || op == "Div") {
      // a − b = a + (−b); a / b = a·(1/b) (within an ulp of the division).
      HS_ASSIGN_OR_RETURN(ValueId a, In(n, 0));
      HS_ASSIGN_OR_RETURN(ValueId b, In(n, 1));
      HS_ASSIGN_OR_RETURN(b, Op(n, StrCat(out, op == "Sub" ? "/negated" : "/reciprocal"),
                                op == "Sub" ? OpKind::kNeg : OpKind::kReciprocal, {b}));
      HS_ASSIGN_OR_RETURN(ValueId y, Binary(n, op == "Sub" ? OpKind::kAdd : OpKind::kMul, a, b));
      return Set(n, 0, y);
    }
    if (op == "Pow" && n.input_size() > 1 && Constant(n.input(1)) && Constant(n.input(1))->v.size() == 1) {
      const double p = Constant(n.input(1))->v[0];
      HS_ASSIGN_OR_RETURN(ValueId x, In(n, 0));
      ValueId y;
      if (p == 1) {
        y = x;
      } else if (p == 2) {
        HS_ASSIGN_OR_RETURN(y, Op(n, out, OpKind::kMul, {x, x}));
      } else if (p == 0.5 || p == -1) {
        HS_ASSIGN_OR_RETURN(y, Op(n, out, p == 0.5 ? OpKind::kSqrt : OpKind::kReciprocal, {x}));
      } else {
        return Bad(StrCat(Where(n), " input 1 (exponent): ", p, "; powers of data are supported for exponents 1, 2, 0.5 and -1"));
      }
      return Set(n, 0, y);
    }
    if (op == "Softmax" || op == "LogSoftmax") {
      HS_ASSIGN_OR_RETURN(ValueId x, In(n, 0));
      const Shape xs = g_.value(x).shape;
      const size_t rank = xs.size();
      HS_ASSIGN_OR_RETURN(const int64_t axis, AxisAttr(n, "axis", opset_ < 13 ? 1 : -1, std::max<size_t>(rank, 1)));
      const int64_t last = static_cast<int64_t>(rank) - 1;
      const OpKind kind = op == "Softmax" ? OpKind::kSoftmax : OpKind::kLogSoftmax;
      if (opset_ < 13 && axis != last) {
        // Opsets < 13: over the input flattened to 2-D at `axis`, [d0·…·d(axis−1), d(axis)·…].
        int64_t outer = 1, inner = 1;
        for (size_t i = 0; i < rank; ++i) (static_cast<int64_t>(i) < axis ? outer : inner) *= xs[i];
        HS_ASSIGN_OR_RETURN(ValueId flat, ReshapeTo(n, x, {outer, inner}, StrCat(out, "/2d")));
        HS_ASSIGN_OR_RETURN(ValueId sm, Op(n, StrCat(out, "/rows"), kind, {flat}));
        HS_ASSIGN_OR_RETURN(ValueId y, ReshapeTo(n, sm, xs, out));
        return Set(n, 0, y);
      }
      if (axis == last) {
        HS_ASSIGN_OR_RETURN(ValueId y, Op(n, out, kind, {x}));
        return Set(n, 0, y);
      }
      // Over another axis (opset 13+: that one axis): swapped to the end and back.
      Attrs swap;
      swap.axis = axis;
      swap.axis2 = last;
      HS_ASSIGN_OR_RETURN(ValueId t, Op(n, StrCat(out, "/to_last"), OpKind::kTranspose, {x}, swap));
      HS_ASSIGN_OR_RETURN(ValueId sm, Op(n, StrCat(out, "/last"), kind, {t}));
      HS_ASSIGN_OR_RETURN(ValueId y, Op(n, out, OpKind::kTranspose, {sm}, swap));
      return Set(n, 0, y);
    }
    if (op == "Add" || op == "Mul") {
      HS_ASSIGN_OR_RETURN(ValueId a, In(n, 0));
      HS_ASSIGN_OR_RETURN(ValueId b, In(n, 1));
      HS_ASSIGN_OR_RETURN(ValueId y, Binary(n, op == "Add" ? OpKind::kAdd : OpKind::kMul, a, b));
      return Set(n, 0, y);
    }
    if (op == "MatMul") {
      HS_ASSIGN_OR_RETURN(ValueId a, In(n, 0));
      HS_ASSIGN_OR_RETURN(ValueId b, In(n, 1));
      HS_ASSIGN_OR_RETURN(ValueId y, Op(n, out, OpKind::kMatMul, {a, b}));
      return Set(n, 0, y);
    }
    if (op == "Gemm") {
      // alpha·A'·B' + beta·C; factors other than 1 multiply by constants.
      const double alpha = AttrFloat(n, "alpha", 1), beta = AttrFloat(n, "beta", 1);
      HS_RETURN_IF_ERROR(FiniteAttr(n, "alpha", alpha));
      HS_RETURN_IF_ERROR(FiniteAttr(n, "beta", beta));
      auto scaled = [&](ValueId v, double f, const std::string& what) -> absl::StatusOr<ValueId> {
        if (f == 1) return v;
        HS_ASSIGN_OR_RETURN(ValueId k, g_.AddConstant(UniqueName(StrCat(out, "/", what)), {1}, {static_cast<float>(f)}));
        return Binary(n, OpKind::kMul, v, k);
      };
      HS_ASSIGN_OR_RETURN(ValueId a, In(n, 0));
      if (AttrInt(n, "transA", 0) != 0) {
        Attrs t;
        t.axis = 0;
        t.axis2 = 1;
        HS_ASSIGN_OR_RETURN(a, Op(n, StrCat(out, "/a_t"), OpKind::kTranspose, {a}, t));
      }
      HS_ASSIGN_OR_RETURN(ValueId b, In(n, 1));
      ValueId c = kNoValue;
      if (n.input_size() > 2 && !n.input(2).empty()) {
        HS_ASSIGN_OR_RETURN(c, In(n, 2));
      }
      if (AttrInt(n, "transB", 0) == 1 && alpha == 1 && beta == 1) {
        std::vector<ValueId> in = {a, b};
        if (c != kNoValue) {
          HS_ASSIGN_OR_RETURN(c, ReshapeTo(n, c, {g_.value(b).shape.at(0)}, StrCat(out, "/bias")));
          in.push_back(c);
        }
        HS_ASSIGN_OR_RETURN(ValueId y, Op(n, out, OpKind::kLinear, in));
        return Set(n, 0, y);
      }
      if (AttrInt(n, "transB", 0) == 1) {
        Attrs t;
        t.axis = 0;
        t.axis2 = 1;
        HS_ASSIGN_OR_RETURN(b, Op(n, StrCat(out, "/b_t"), OpKind::kTranspose, {b}, t));
      }
      HS_ASSIGN_OR_RETURN(ValueId y, Op(n, c == kNoValue && alpha == 1 ? out : StrCat(out, "/matmul"), OpKind::kMatMul, {a, b}));
      HS_ASSIGN_OR_RETURN(y, scaled(y, alpha, "alpha"));
      if (c != kNoValue) {
        HS_ASSIGN_OR_RETURN(c, scaled(c, beta, "beta"));
        HS_ASSIGN_OR_RETURN(y, Binary(n, OpKind::kAdd, y, c));
      }
      return Set(n, 0, y);
    }
    if (op == "LayerNormalization") {
      HS_ASSIGN_OR_RETURN(ValueId x, In(n, 0));
      const Shape xs = g_.value(x).shape;
      HS_ASSIGN_OR_RETURN(const int64_t axis, AxisAttr(n, "axis", -1, xs.size()));
      HS_RETURN_IF_ERROR(EpsilonAttr(n));
      if (n.input_size() < 3 || n.input(2).empty()) return Bad(StrCat(Where(n), " input 2 (B): a bias is required"));
      HS_ASSIGN_OR_RETURN(ValueId s, In(n, 1));
      HS_ASSIGN_OR_RETURN(ValueId b, In(n, 2));
      // Normalized over dims [axis, end): those flattened into one last dim, and back.
      int64_t outer = 1, inner = 1;
      for (size_t i = 0; i < xs.size(); ++i) (static_cast<int64_t>(i) < axis ? outer : inner) *= xs[i];
      HS_ASSIGN_OR_RETURN(ValueId x2, ReshapeTo(n, x, axis == static_cast<int64_t>(xs.size()) - 1 ? xs : Shape{outer, inner},
                                                 StrCat(out, "/flat")));
      HS_ASSIGN_OR_RETURN(s, ReshapeTo(n, s, {inner}, StrCat(out, "/scale")));
      HS_ASSIGN_OR_RETURN(b, ReshapeTo(n, b, {inner}, StrCat(out, "/bias")));
      Attrs a;
      a.eps = AttrFloat(n, "epsilon", 1e-5);
      HS_ASSIGN_OR_RETURN(ValueId y, Op(n, x2 == x ? out : StrCat(out, "/norm"), OpKind::kLayerNorm, {x2, s, b}, a));
      HS_ASSIGN_OR_RETURN(y, ReshapeTo(n, y, xs, out));
      return Set(n, 0, y);
    }
    if (op == "Gather") {
      const Const* idx = Constant(n.input(1));
      HS_ASSIGN_OR_RETURN(ValueId data, In(n, 0));
      const Shape ds = g_.value(data).shape;
      HS_ASSIGN_OR_RETURN(const int64_t axis, AxisAttr(n, "axis", 0, ds.size()));
      if (idx) {
        // Constant indices: a contiguous run is a slice (e.g. positions 0..T-1 of a table).
        const int64_t dim = ds[static_cast<size_t>(axis)];
        for (double v : idx->v) {
          const int64_t k = SatInt(v);
          if (k < -dim || k >= dim) {
            return Bad(StrCat(Where(n), " input 1 (indices): ", k, " out of range for dim ", axis, " of size ", dim, " (shape ",
                              DimsString(ds), "); expected ", -dim, "..", dim - 1));
          }
        }
        int64_t start = idx->v.empty() ? 0 : SatInt(idx->v[0]);
        if (start < 0) start += dim;
        for (size_t i = 0; i < idx->v.size(); ++i) {
          int64_t k = SatInt(idx->v[i]);
          if (k < 0) k += dim;
          if (k != start + static_cast<int64_t>(i)) {
            return Bad(StrCat(Where(n), " input 1 (indices): constant indices that are not a contiguous run"));
          }
        }
        Attrs a;
        a.axis = axis;
        a.start = start;
        a.length = std::max<int64_t>(1, static_cast<int64_t>(idx->v.size()));
        HS_ASSIGN_OR_RETURN(ValueId y, Op(n, StrCat(out, "/slice"), OpKind::kSlice, {data}, a));
        Shape target;
        for (int64_t i = 0; i < axis; ++i) target.push_back(ds[static_cast<size_t>(i)]);
        for (int64_t d : idx->dims) target.push_back(d);
        for (size_t i = static_cast<size_t>(axis) + 1; i < ds.size(); ++i) target.push_back(ds[i]);
        HS_ASSIGN_OR_RETURN(y, ReshapeTo(n, y, target, out));
        return Set(n, 0, y);
      }
      if (axis != 0 || ds.size() != 2) {
        return Bad(StrCat(Where(n), ": Gather with computed indices must be an embedding lookup (axis 0 of a 2-D table)"));
      }
      HS_ASSIGN_OR_RETURN(ValueId ids, In(n, 1));
      HS_ASSIGN_OR_RETURN(ValueId y, Op(n, out, OpKind::kEmbedding, {ids, data}));
      return Set(n, 0, y);
    }
    if (op == "Reshape" || op == "Flatten" || op == "Squeeze" || op == "Unsqueeze") {
      HS_ASSIGN_OR_RETURN(ValueId x, In(n, 0));
      const Const* second = n.input_size() > 1 && !n.input(1).empty() ? Constant(n.input(1)) : nullptr;
      if (n.input_size() > 1 && !n.input(1).empty() && !second) {
        return NotConstant(Bad(StrCat(Where(n), " input 1: '", n.input(1), "' is not a constant; cannot resolve the shape")));
      }
      HS_ASSIGN_OR_RETURN(Shape target, ReshapeTarget(n, g_.value(x).shape, second));
      HS_ASSIGN_OR_RETURN(ValueId y, ReshapeTo(n, x, target, out));
      return Set(n, 0, y);
    }
    if (op == "Transpose") {
      HS_ASSIGN_OR_RETURN(ValueId x, In(n, 0));
      const size_t rank = g_.value(x).shape.size();
      HS_ASSIGN_OR_RETURN(const std::vector<int64_t> perm, Perm(n, rank));
      // As swaps: position i gets the dim perm[i].
      std::vector<int64_t> cur(rank);
      for (size_t i = 0; i < rank; ++i) cur[i] = static_cast<int64_t>(i);
      ValueId y = x;
      int swaps = 0;
      for (size_t i = 0; i < rank; ++i) {
        if (cur[i] == perm[i]) continue;
        const size_t j = static_cast<size_t>(std::find(cur.begin(), cur.end(), perm[i]) - cur.begin());
        std::swap(cur[i], cur[j]);
        Attrs a;
        a.axis = static_cast<int64_t>(i);
        a.axis2 = static_cast<int64_t>(j);
        HS_ASSIGN_OR_RETURN(y, Op(n, swaps++ == 0 ? out : StrCat(out, "/swap", swaps), OpKind::kTranspose, {y}, a));
      }
      return Set(n, 0, y);
    }
    if (op == "Concat") {
      std::vector<ValueId> in;
      for (int i = 0; i < n.input_size(); ++i) {
        HS_ASSIGN_OR_RETURN(ValueId x, In(n, i));
        in.push_back(x);
      }
      std::vector<Shape> shapes;
      for (ValueId v : in) shapes.push_back(g_.value(v).shape);
      Attrs a;
      HS_ASSIGN_OR_RETURN(a.axis, ConcatAxis(n, shapes));
      HS_ASSIGN_OR_RETURN(ValueId y, Op(n, out, OpKind::kConcat, in, a));
      return Set(n, 0, y);
    }
    if (op == "Slice") {
      HS_ASSIGN_OR_RETURN(ValueId x, In(n, 0));
      std::vector<const Const*> in = {nullptr};
      for (int i = 1; i < n.input_size(); ++i) {
        const Const* c = n.input(i).empty() ? nullptr : Constant(n.input(i));
        if (!n.input(i).empty() && !c) return NotConstant(Bad(StrCat(Where(n), " input ", i, ": '", n.input(i), "' is not a constant")));
        in.push_back(c);
      }
      HS_ASSIGN_OR_RETURN(std::vector<SliceAxis> axes, SliceAxes(n, g_.value(x).shape, in));
      for (const SliceAxis& a : axes) {
        if (a.step != 1) {
          return Bad(StrCat(Where(n), ": steps: ", a.step, "; only step 1 is supported on data (other steps on constants)"));
        }
      }
      ValueId y = x;
      for (size_t i = 0; i < axes.size(); ++i) {
        if (axes[i].start == 0 && axes[i].length == g_.value(y).shape[static_cast<size_t>(axes[i].axis)]) continue;
        Attrs a;
        a.axis = axes[i].axis;
        a.start = axes[i].start;
        a.length = axes[i].length;
        HS_ASSIGN_OR_RETURN(y, Op(n, i + 1 == axes.size() ? out : StrCat(out, "/", i), OpKind::kSlice, {y}, a));
      }
      return Set(n, 0, y);
    }
    if (op == "Split") {
      HS_ASSIGN_OR_RETURN(ValueId x, In(n, 0));
      const Shape xs = g_.value(x).shape;
      const int64_t axis = NormAxis(AttrInt(n, "axis", 0), xs.size());
      const Const* split = nullptr;
      if (n.input_size() > 1 && !n.input(1).empty()) {
        split = Constant(n.input(1));
        if (!split) return Bad(StrCat(Where(n), " input 1 (split): not a constant"));
      }
      HS_ASSIGN_OR_RETURN(const std::vector<int64_t> sizes, SplitSizes(n, xs, split));
      int64_t start = 0;
      for (int i = 0; i < n.output_size(); ++i) {
        Attrs a;
        a.axis = axis;
        a.start = start;
        a.length = sizes.at(static_cast<size_t>(i));
        start += a.length;
        HS_ASSIGN_OR_RETURN(ValueId y, Op(n, n.output(i), OpKind::kSlice, {x}, a));
        HS_RETURN_IF_ERROR(Set(n, i, y));
      }
      return absl::OkStatus();
    }
    if (op == "Expand") {
      HS_ASSIGN_OR_RETURN(ValueId x, In(n, 0));
      const Const* shape = Constant(n.input(1));
      if (!shape) return Bad(StrCat(Where(n), " input 1 (shape): not a constant; cannot resolve the shape"));
      Shape want;
      for (double d : shape->v) want.push_back(SatInt(d));
      for (int64_t d : want) {
        if (d < 0) return Bad(StrCat(Where(n), " input 1 (shape): ", DimsString(want), "; expected sizes >= 0"));
      }
      std::optional<Shape> target = Broadcast({g_.value(x).shape, want});
      if (!target) return Bad(StrCat(Where(n), ": cannot expand ", DimsString(g_.value(x).shape), " to ", DimsString(want)));
      if (*target == g_.value(x).shape) return Set(n, 0, x);
      Attrs a;
      a.shape = *target;
      HS_ASSIGN_OR_RETURN(ValueId y, Op(n, out, OpKind::kExpand, {x}, a));
      return Set(n, 0, y);
    }
    if (op == "Conv") {
      HS_ASSIGN_OR_RETURN(ValueId x, In(n, 0));
      HS_ASSIGN_OR_RETURN(ValueId w, In(n, 1));
      const Shape ws = g_.value(w).shape;
      const std::vector<int64_t> strides = AttrInts(n, "strides"),
                                 dil = AttrInts(n, "dilations");
      auto all_eq = [](const std::vector<int64_t>& v, int64_t def) {
        for (int64_t x : v) {
          if (x != v[0]) return int64_t{-1};
        }
        return v.empty() ? def : v[0];
      };
      if (ws.size() != 4 || ws[2] != ws[3]) return Bad(StrCat(Where(n), " input 1 (W): shape ", DimsString(ws), "; expected a square 2-D kernel"));
      const Shape xs = g_.value(x).shape;
      if (xs.size() != ws.size()) {
        return Bad(StrCat(Where(n), " input 0 (X): shape ", DimsString(xs), "; W of shape ", DimsString(ws), " needs X of rank ",
                          ws.size(), " ([N, C, H, W])"));
      }
      if (const onnx::AttributeProto* ks = Attr(n, "kernel_shape"); ks && AttrInts(n, "kernel_shape") != std::vector<int64_t>{ws[2], ws[3]}) {
        return Bad(StrCat(Where(n), " attribute kernel_shape: ", DimsString(AttrInts(n, "kernel_shape")), " but W has shape ",
                          DimsString(ws), "; expected ", DimsString({ws[2], ws[3]})));
      }
      for (const auto* list : {&strides, &dil}) {
        for (int64_t v : *list) {
          if (v < 1) {
            return Bad(StrCat(Where(n), " attribute ", list == &strides ? "strides" : "dilations", ": ", DimsString(*list),
                              "; expected positive values"));
          }
        }
      }
      if (all_eq(dil, 1) != 1) return Bad(StrCat(Where(n), " attribute dilations: ", DimsString(dil), "; only 1 is supported"));
      if (all_eq(strides, 1) < 1) return Bad(StrCat(Where(n), " attribute strides: ", DimsString(strides), "; unequal strides are not supported"));
      Attrs a;
      a.kernel = ws[2];
      a.stride = all_eq(strides, 1);
      HS_ASSIGN_OR_RETURN(const Window win, WindowOf(n, g_.value(x).shape, {ws[2], ws[3]}));
      // Padding: what all four sides share is the op's; the rest, zeros concatenated on.
      const int64_t shared = std::min({win.begin[0], win.begin[1], win.end[0], win.end[1]});
      for (int64_t i = 0; i < 2; ++i) {
        const size_t si = static_cast<size_t>(i);
        HS_ASSIGN_OR_RETURN(x, PadAxis(n, x, i + 2, win.begin[si] - shared, win.end[si] - shared));
      }
      a.padding = shared;
      a.groups = AttrInt(n, "group", 1);
      std::vector<ValueId> in = {x, w};
      if (n.input_size() > 2 && !n.input(2).empty()) {
        HS_ASSIGN_OR_RETURN(ValueId b, In(n, 2));
        in.push_back(b);
      }
      HS_ASSIGN_OR_RETURN(ValueId y, Op(n, out, OpKind::kConv2d, in, a));
      return Set(n, 0, y);
    }
    if (op == "Pad") {
      HS_ASSIGN_OR_RETURN(ValueId x, In(n, 0));
      const size_t rank = g_.value(x).shape.size();
      std::vector<int64_t> pads = AttrInts(n, "pads");  // opsets < 11
      if (n.input_size() > 1 && !n.input(1).empty()) {
        const Const* c = Constant(n.input(1));
        if (!c) return NotConstant(Bad(StrCat(Where(n), " input 1 (pads): '", n.input(1), "' is not a constant")));
        pads.clear();
        for (double v : c->v) pads.push_back(SatInt(v));
      }
      if (n.input_size() > 3 && !n.input(3).empty()) return Bad(StrCat(Where(n), " input 3 (axes): not supported; pad every axis"));
      for (int64_t p : pads) {
        if (p > kMaxFoldedElements || p < -kMaxFoldedElements) {
          return Bad(StrCat(Where(n), " pads: ", DimsString(pads), ": ", p, " is out of range; expected at most ",
                            kMaxFoldedElements, " elements on a side"));
        }
      }
      if (pads.size() != 2 * rank) {
        return Bad(StrCat(Where(n), " pads: ", DimsString(pads), "; expected ", 2 * rank, " values for a rank-", rank, " input"));
      }
      const onnx::AttributeProto* m = Attr(n, "mode");
      const std::string mode = m ? m->s() : "constant";
      if (mode != "constant" && mode != "edge" && mode != "reflect") {
        return Bad(StrCat(Where(n), " attribute mode: '", mode, "'; expected constant, edge or reflect"));
      }
      float value = static_cast<float>(AttrFloat(n, "value", 0));  // opsets < 11
      if (n.input_size() > 2 && !n.input(2).empty()) {
        const Const* c = Constant(n.input(2));
        if (!c || c->v.size() != 1) return Bad(StrCat(Where(n), " input 2 (constant_value): expected a constant scalar"));
        value = static_cast<float>(c->v[0]);
      }
      ValueId y = x;
      for (size_t i = 0; i < rank; ++i) {
        HS_ASSIGN_OR_RETURN(y, PadAxis(n, y, static_cast<int64_t>(i), pads[i], pads[i + rank], mode, value));
      }
      return Set(n, 0, y);
    }
    if (op == "MaxPool" || op == "AveragePool") {
      HS_ASSIGN_OR_RETURN(ValueId x, In(n, 0));
      if (op == "MaxPool" && n.output_size() > 1 && !n.output(1).empty()) {
        return Bad(StrCat(Where(n), ": the Indices output is not supported"));
      }
      HS_ASSIGN_OR_RETURN(const Window w, WindowOf(n, g_.value(x).shape, AttrInts(n, "kernel_shape")));
      HS_ASSIGN_OR_RETURN(ValueId y, Pool(n, x, w, op == "MaxPool", AttrInt(n, "ceil_mode", 0) != 0,
                                          AttrInt(n, "count_include_pad", 0) != 0));
      return Set(n, 0, y);
    }
    if (op == "Clip") {
      // Bounds: inputs 1 and 2 (opset 11+) or attributes min/max; a missing one is ±FLT_MAX.
      HS_ASSIGN_OR_RETURN(ValueId x, In(n, 0));
      Attrs a;
      a.min = AttrFloat(n, "min", -std::numeric_limits<float>::max());
      a.max = AttrFloat(n, "max", std::numeric_limits<float>::max());
      for (int i : {1, 2}) {
        if (n.input_size() <= i || n.input(i).empty()) continue;
        const Const* c = Constant(n.input(i));
        if (!c || c->v.size() != 1) {
          return Bad(StrCat(Where(n), " input ", i, " (", i == 1 ? "min" : "max", "): '", n.input(i),
                            "' is not a constant scalar; expected constant bounds"));
        }
        (i == 1 ? a.min : a.max) = c->v[0];
      }
      if (std::isnan(a.min) || std::isnan(a.max)) {
        return Bad(StrCat(Where(n), ": bounds min ", a.min, ", max ", a.max, "; expected numbers (not NaN)"));
      }
      HS_ASSIGN_OR_RETURN(ValueId y, Op(n, out, OpKind::kClip, {x}, a));
      return Set(n, 0, y);
    }
    if (op == "BatchNormalization") {
      // Training mode: the batch's statistics (batch_moments, then batch_norm). The running
      // statistics outputs are not computed: a node reading them fails with "not produced".
      HS_RETURN_IF_ERROR(EpsilonAttr(n));
      HS_RETURN_IF_ERROR(FiniteAttr(n, "momentum", AttrFloat(n, "momentum", 0.9)));
      if (AttrInt(n, "training_mode", 0) == 0) return EvalBatchNorm(n);
      HS_ASSIGN_OR_RETURN(ValueId x, In(n, 0));
      HS_ASSIGN_OR_RETURN(ValueId scale, In(n, 1));
      HS_ASSIGN_OR_RETURN(ValueId bias, In(n, 2));
      HS_ASSIGN_OR_RETURN(ValueId m, Op(n, StrCat(out, "/moments"), OpKind::kBatchMoments, {x}));
      // The running mean and variance (initializers): running statistics of the moments.
      for (int i : {3, 4}) {
        const Const* c = n.input_size() > i && !n.input(i).empty() ? Constant(n.input(i)) : nullptr;
        if (!c) continue;
        HS_RETURN_IF_ERROR(CheckStatistics(n, i, *c));
        RunningStat r;
        r.name = n.input(i);
        r.shape = {static_cast<int64_t>(c->v.size())};
        r.moments = m;
        r.variance = i == 4;
        r.momentum = 1.0 - static_cast<double>(static_cast<float>(AttrFloat(n, "momentum", 0.9)));
        r.init = Init::Data(std::vector<float>(c->v.begin(), c->v.end()));
        running_.push_back(std::move(r));
      }
      Attrs a;
      a.eps = AttrFloat(n, "epsilon", 1e-5);
      HS_ASSIGN_OR_RETURN(ValueId y, Op(n, out, OpKind::kBatchNorm, {x, m, scale, bias}, a));
      return Set(n, 0, y);
    }
    if (op == "GlobalAveragePool") {
      HS_ASSIGN_OR_RETURN(ValueId x, In(n, 0));
      HS_ASSIGN_OR_RETURN(ValueId y, Op(n, out, OpKind::kAdaptiveAvgPool2d, {x}));
      return Set(n, 0, y);
    }
    // The rest (Shape, Constant, Range, Equal, Where, Pow with other exponents, ...) only fold.
    std::vector<std::string> non_const;
    for (const std::string& i : n.input()) {
      if (!i.empty() && !Constant(i)) non_const.push_back(StrCat("'", i, "'"));
    }
    if (!first_error_.ok()) return first_error_;
    return Bad(StrCat(Where(n), ": ", op, " is supported only on constants (shape arithmetic) or inside a recognized ",
                      "pattern (GELU, attention); its input ", absl::StrJoin(non_const, ", "), " is computed data"));
  }

  // Appends the loss and keeps only what the output (and the loss) needs.
  absl::StatusOr<OnnxImport> Finish(ValueId out) {
    OnnxImport r;
    r.output = g_.value(out).name;
    std::vector<bool> live(g_.values().size(), false);
    live[static_cast<size_t>(out)] = true;
    for (int64_t i = static_cast<int64_t>(g_.nodes().size()) - 1; i >= 0; --i) {
      const Node& node = g_.node(static_cast<NodeId>(i));
      if (!live[static_cast<size_t>(node.output)]) continue;
      for (ValueId in : node.inputs) live[static_cast<size_t>(in)] = true;
    }
    Graph g(g_.name());
    std::vector<ValueId> map(g_.values().size(), kNoValue);
    // Inputs and parameters in creation order, then the live nodes.
    for (size_t i = 0; i < g_.values().size(); ++i) {
      const Value& v = g_.values()[i];
      if (!live[i] || v.kind == ValueKind::kActivation) continue;
      absl::StatusOr<ValueId> id = v.kind == ValueKind::kInput ? g.AddInput(v.name, v.shape)
                                                               : g.AddParameter(v.name, v.shape, v.init);
      if (!id.ok()) return id.status();
      if (v.frozen) g.SetFrozen(*id, true);
      map[i] = *id;
    }
    for (const Node& node : g_.nodes()) {
      if (!live[static_cast<size_t>(node.output)]) continue;
      std::vector<ValueId> in;
      for (ValueId x : node.inputs) in.push_back(map[static_cast<size_t>(x)]);
      HS_ASSIGN_OR_RETURN(map[static_cast<size_t>(node.output)], g.AddOp(node.name, node.kind, in, node.attrs));
    }
    if (g.inputs().empty()) return Bad(StrCat(path_, ": the output does not depend on any graph input"));
    for (RunningStat r : running_) {
      if (!live[static_cast<size_t>(r.moments)]) continue;
      r.moments = map[static_cast<size_t>(r.moments)];
      if (absl::Status st = g.AddRunningStat(std::move(r)); !st.ok()) return Bad(StrCat(path_, ": ", st.message()));
    }
    const ValueId y = map[static_cast<size_t>(out)];
    if (opts_.loss == "cross_entropy") {
      Shape labels = g.value(y).shape;
      if (labels.empty()) return Bad(StrCat(path_, ": --loss cross_entropy needs logits [..., K]; the output is a scalar"));
      labels.pop_back();
      if (g.Find("labels") != kNoValue) return Bad(StrCat(path_, ": the model already has a value named 'labels'"));
      HS_ASSIGN_OR_RETURN(ValueId l, g.AddInput("labels", labels));
      HS_ASSIGN_OR_RETURN(ValueId loss, g.AddOp("loss", OpKind::kCrossEntropy, {y, l}));
      HS_RETURN_IF_ERROR(g.SetLoss(loss));
    } else if (opts_.loss == "mse") {
      // Regression: targets of the output's shape, fed as the input "labels".
      if (g.Find("labels") != kNoValue) return Bad(StrCat(path_, ": the model already has a value named 'labels'"));
      HS_ASSIGN_OR_RETURN(ValueId l, g.AddInput("labels", g.value(y).shape));
      HS_ASSIGN_OR_RETURN(ValueId loss, g.AddOp("loss", OpKind::kMseLoss, {y, l}));
      HS_RETURN_IF_ERROR(g.SetLoss(loss));
    } else if (opts_.loss != "none") {
      return Bad(StrCat("--loss '", opts_.loss, "': expected cross_entropy or mse"));
    }
    r.graph = std::move(g);
    return r;
  }

  const onnx::ModelProto& model_;
  std::string path_;
  OnnxImportOptions opts_;
  Graph g_;
  std::map<std::string, const onnx::TensorProto*> inits_;
  std::map<std::string, const onnx::ValueInfoProto*> inputs_;
  std::map<std::string, const onnx::NodeProto*> producer_;
  std::map<std::string, std::optional<Const>> consts_;
  std::map<std::string, ValueId> ids_;
  absl::Status first_error_;
  std::map<std::string, int> types_;
  std::vector<RunningStat> running_;  // of the batch norms emitted, on g_'s values
  int64_t opset_ = kMaxOpset;  // the model's opset of the default domain
  int depth_ = 0;              // of AsValue's recursion
};

}  // namespace

absl::StatusOr<OnnxImport> ImportOnnx(const std::string& path, const OnnxImportOptions& options) {
  HS_ASSIGN_OR_RETURN(std::string bytes, ReadRegularFile(path, StrCat("model file '", path, "'")));
  const uint64_t hash = HashBytes(bytes);
  if (options.expected_hash && *options.expected_hash != hash) {
    return Bad(ChangedModelFile(path, hash, *options.expected_hash, options.expected_hash_from_plan));
  }
  ++onnx_parsed;
  onnx::ModelProto model;
  if (bytes.empty() || !model.ParseFromString(bytes)) {
    return Bad(StrCat(path, ": not a valid ONNX protobuf (", bytes.size(), " bytes; truncated or not an ONNX model)"));
  }
  std::string().swap(bytes);  // the model holds its own copy of the weights
  if (!model.has_graph()) return Bad(StrCat(path, ": not a valid ONNX model (no graph; truncated?)"));
  // External data first: the checker would look for the file relative to the working
  // directory and report it missing even where it exists next to the model.
  for (const onnx::TensorProto& t : model.graph().initializer()) {
    if (t.data_location() == onnx::TensorProto::EXTERNAL) {
      return Bad(StrCat(path, ": initializer '", t.name(), "' keeps its data in an external file; external data is not "
                        "supported (re-export with the weights inside the .onnx file)"));
    }
  }
  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    std::string msg = e.what();
    std::replace(msg.begin(), msg.end(), '\n', ' ');
    return Bad(StrCat(path, ": the ONNX checker rejects it: ", msg));
  }
  // The opset of the default domain: operators are read as that opset defines them.
  int64_t opset = -1;
  for (const onnx::OperatorSetIdProto& o : model.opset_import()) {
    if (o.domain().empty() || o.domain() == "ai.onnx") opset = o.version();
  }
  if (opset < 1 || opset > kMaxOpset) {
    return Bad(StrCat(path, ": ", opset < 0 ? std::string("no opset for the default ONNX domain") : StrCat("opset ", opset),
                      "; supported: opsets 1 to ", kMaxOpset, " (torch.onnx.export's 13 to 17 are tested)"));
  }
  for (const onnx::NodeProto& n : model.graph().node()) {
    if (!n.domain().empty() && n.domain() != "ai.onnx") continue;
    auto it = kOldestVersion().find(n.op_type());
    const onnx::OpSchema* schema = onnx::OpSchemaRegistry::Schema(n.op_type(), static_cast<int>(opset), "");
    if (it == kOldestVersion().end() || !schema || schema->since_version() >= it->second) continue;
    return Bad(StrCat(path, ": node '", n.name().empty() ? (n.output_size() ? n.output(0) : "?") : n.name(), "' (",
                      n.op_type(), "): opset ", opset, " defines ", n.op_type(), " version ", schema->since_version(),
                      ", which is not supported; expected version ", it->second, " or later (export with opset >= ",
                      it->second, "; 13 to 17 are tested)"));
  }
  // The import recurses once per node of the longest chain: on a thread with a stack of its own,
  // large enough for kMaxGraphDepth nodes.
  absl::StatusOr<OnnxImport> result = absl::InternalError("the import did not run");
  std::exception_ptr thrown;
  auto work = [&] {
    try {
      Importer imp(model, path, options, opset);
      result = imp.Run();
    } catch (...) {
      thrown = std::current_exception();
    }
  };
  RunWithStack(work, kImportStackBytes);
  if (thrown) std::rethrow_exception(thrown);
  HS_ASSIGN_OR_RETURN(OnnxImport r, std::move(result));
  r.file_hash = hash;
  return r;
}

absl::StatusOr<std::vector<double>> OnnxTensorValues(const onnx::TensorProto& t, Shape* dims) {
  HS_ASSIGN_OR_RETURN(Const c, FromTensorProto(t, "tensor"));
  *dims = c.dims;
  return std::move(c.v);
}

#endif  // HETSYNTH_HAVE_ONNX

}  // namespace hetsynth::ir
