// Checkpoints in the safetensors format (https://github.com/huggingface/safetensors), so that
// weights move between hetsynth and PyTorch / JAX / the Hugging Face hub without conversion.
//
// A file is an 8-byte little-endian u64 N, then N bytes of UTF-8 JSON mapping each tensor name to
// {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]} (plus an optional
// "__metadata__" string→string object), then the byte buffer the offsets point into
// (little-endian, row-major, offsets relative to the start of the buffer).
//
// Reading accepts F64, F32, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8 and BOOL and converts
// everything to fp32, since hetsynth tensors are fp32; integers (token ids, say) become floats and
// are refused when their magnitude exceeds 2^24, past which fp32 cannot hold every integer. Every
// header field is validated; a bad file gives InvalidArgument naming the file, the tensor, the
// field and the value, a missing file NotFound. Writing emits F32 in name order, the header padded
// with spaces so the buffer is 8-byte aligned (as the reference implementation does), through a
// temporary file in the same directory renamed over `path`, so a crash never leaves half a file.
//
//   std::map<std::string, Tensor> weights = {{"fc.weight", Tensor({3, 4})}, {"fc.bias", Tensor({4})}};
//   HS_RETURN_IF_ERROR(WriteSafetensors("ckpt.safetensors", weights, {{"step", "100"}}));
//   HS_ASSIGN_OR_RETURN(SafetensorsFile f, ReadSafetensors("ckpt.safetensors"));
//   const Tensor& w = f.tensors.at("fc.weight");   // shape [3,4]
//   f.metadata.at("step");                          // "100"
#pragma once

#include <functional>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "hetsynth/runtime/tensor.h"

namespace hetsynth::runtime {

struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;        // by name; a scalar has shape [] and 1 element
  std::map<std::string, std::string> metadata;  // the "__metadata__" object; empty when absent
};

// What a file's header says, before any tensor data is read.
struct SafetensorsHeader {
  std::map<std::string, ir::Shape> shapes;      // every tensor's shape, by name
  std::map<std::string, std::string> metadata;  // the "__metadata__" object; empty when absent
};
// Called with the validated header before any tensor data is read; an error stops the read (so a
// caller refuses an unexpected, possibly huge, tensor without reading it).
using SafetensorsHeaderCheck = std::function<absl::Status(const SafetensorsHeader&)>;

// Reads and validates a whole safetensors file, converting every tensor to fp32. The header must
// not give a key twice in any object, and the tensors must index the data buffer to its end.
// A path that is not a regular file (a FIFO, a directory) is refused without blocking.
absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path, const SafetensorsHeaderCheck& check = nullptr);

// Writes `tensors` as F32 (and `metadata` under "__metadata__" when non-empty) to `path`,
// atomically replacing any existing file. Fails without touching `path` when a tensor's data
// does not match its shape, a name is "__metadata__" or not valid UTF-8, or I/O fails.
absl::Status WriteSafetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace hetsynth::runtime
