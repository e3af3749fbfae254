#include "hetsynth/runtime/safetensors.h"

#include <cstring>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace hetsynth::runtime {
namespace {

std::string Path(const std::string& name) { return ::testing::TempDir() + "/" + name; }

// A file from a header and a data buffer, as the format lays them out.
void WriteRaw(const std::string& path, const std::string& header, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out << header << data;
}

template <typename T>
std::string Bytes(std::initializer_list<T> values) {
  std::string s;
  for (T v : values) s.append(reinterpret_cast<const char*>(&v), sizeof v);
  return s;
}

std::string ReadError(const std::string& name, const std::string& header, const std::string& data) {
  const std::string path = Path(name);
  WriteRaw(path, header, data);
  absl::StatusOr<SafetensorsFile> f = ReadSafetensors(path);
  EXPECT_FALSE(f.ok()) << header;
  if (f.ok()) return "";
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << f.status();
  EXPECT_NE(f.status().message().find(path), std::string::npos) << f.status();
  return std::string(f.status().message());
}

TEST(Safetensors, RoundTripKeepsTensorsScalarsAndMetadata) {
  Tensor w({2, 3});
  for (int i = 0; i < 6; ++i) w.data[i] = 0.5f * static_cast<float>(i) - 1.0f;
  const std::map<std::string, Tensor> tensors = {{"fc.weight", w}, {"scale", Tensor({}, 3.25f)}, {"empty", Tensor({0, 4})}};
  const std::string path = Path("rt.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, tensors, {{"step", "7"}}).ok());
  absl::StatusOr<SafetensorsFile> f = ReadSafetensors(path);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ(f->tensors.size(), 3u);
  EXPECT_EQ(f->tensors.at("fc.weight").shape, w.shape);
  EXPECT_EQ(f->tensors.at("fc.weight").data, w.data);
  EXPECT_EQ(f->tensors.at("scale").shape, ir::Shape{});
  EXPECT_EQ(f->tensors.at("scale").data, std::vector<float>{3.25f});
  EXPECT_EQ(f->tensors.at("empty").numel(), 0);
  EXPECT_EQ(f->metadata.at("step"), "7");
}

TEST(Safetensors, WrittenBytesFollowTheFormat) {
  const std::string path = Path("bytes.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"b", Tensor({2}, 1.5f)}, {"a", Tensor({1}, -2.0f)}}).ok());
  std::ifstream in(path, std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  uint64_t n = 0;
  std::memcpy(&n, all.data(), 8);  // little-endian on this machine
  EXPECT_EQ((8 + n) % 8, 0u) << "buffer must start 8-byte aligned";
  const nlohmann::json header = nlohmann::json::parse(all.substr(8, n));
  EXPECT_EQ(header["a"]["dtype"], "F32");
  EXPECT_EQ(header["a"]["data_offsets"], nlohmann::json({0, 4}));   // name order: a first
  EXPECT_EQ(header["b"]["data_offsets"], nlohmann::json({4, 12}));
  EXPECT_EQ(header["b"]["shape"], nlohmann::json({2}));
  EXPECT_FALSE(header.contains("__metadata__"));
  ASSERT_EQ(all.size(), 8 + n + 12);
  EXPECT_EQ(all.substr(8 + n), Bytes<float>({-2.0f, 1.5f, 1.5f}));
}

TEST(Safetensors, ReadsOtherDtypesAsFloats) {
  std::string data = Bytes<int64_t>({3, -4}) + Bytes<int32_t>({7}) + Bytes<double>({0.25}) +
                     Bytes<uint16_t>({0x3C00, 0xC000}) /* F16 1, -2 */ + Bytes<uint16_t>({0x3F80}) /* BF16 1 */;
  const std::string header = R"({"i64":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},)"
                             R"("i32":{"dtype":"I32","shape":[1],"data_offsets":[16,20]},)"
                             R"("f64":{"dtype":"F64","shape":[],"data_offsets":[20,28]},)"
                             R"("f16":{"dtype":"F16","shape":[2],"data_offsets":[28,32]},)"
                             R"("bf16":{"dtype":"BF16","shape":[1],"data_offsets":[32,34]}})";
  const std::string path = Path("dtypes.safetensors");
  WriteRaw(path, header, data);
  absl::StatusOr<SafetensorsFile> f = ReadSafetensors(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->tensors.at("i64").data, (std::vector<float>{3, -4}));
  EXPECT_EQ(f->tensors.at("i32").data, (std::vector<float>{7}));
  EXPECT_EQ(f->tensors.at("f64").data, (std::vector<float>{0.25f}));
  EXPECT_EQ(f->tensors.at("f16").data, (std::vector<float>{1, -2}));
  EXPECT_EQ(f->tensors.at("bf16").data, (std::vector<float>{1}));
}

TEST(Safetensors, MalformedFilesNameTheFieldAndValue) {
  const std::string f32x2 = Bytes<float>({1, 2});
  EXPECT_NE(ReadError("short.st", "", "").find("header"), std::string::npos);
  EXPECT_NE(ReadError("json.st", "{not json", "").find("not valid JSON"), std::string::npos);
  EXPECT_NE(ReadError("array.st", "[1,2]", "").find("expected a JSON object"), std::string::npos);
  EXPECT_NE(ReadError("nodtype.st", R"({"t":{"shape":[2],"data_offsets":[0,8]}})", f32x2).find("dtype"),
            std::string::npos);
  EXPECT_NE(ReadError("dtype.st", R"({"t":{"dtype":"F7","shape":[2],"data_offsets":[0,8]}})", f32x2)
                .find("'F7'"),
            std::string::npos);
  EXPECT_NE(ReadError("neg.st", R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", f32x2)
                .find("-2"),
            std::string::npos);
  EXPECT_NE(ReadError("size.st", R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", f32x2)
                .find("data_offsets [0,8] but dtype F32"),
            std::string::npos);
  EXPECT_NE(ReadError("beyond.st", R"({"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", f32x2)
                .find("buffer holds only"),
            std::string::npos);
  EXPECT_NE(ReadError("reversed.st", R"({"t":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", f32x2)
                .find("expected begin <= end"),
            std::string::npos);
  EXPECT_NE(ReadError("overlap.st",
                      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                      f32x2)
                .find("'a'"),
            std::string::npos);
  EXPECT_NE(ReadError("meta.st", R"({"__metadata__":{"k":3}})", "").find("__metadata__ entry 'k'"),
            std::string::npos);
  EXPECT_NE(ReadError("bigint.st", R"({"t":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})",
                      Bytes<int64_t>({int64_t{1} << 30}))
                .find("element 0"),
            std::string::npos);
  // A header length larger than the file.
  const std::string path = Path("len.st");
  {
    std::ofstream out(path, std::ios::binary);
    out << Bytes<uint64_t>({1000}) << "{}";
  }
  absl::StatusOr<SafetensorsFile> f = ReadSafetensors(path);
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("header size is 1000 bytes"), std::string::npos) << f.status();
}

TEST(Safetensors, MissingFileIsNotFoundAndBadWriteIsReported) {
  absl::StatusOr<SafetensorsFile> f = ReadSafetensors("/nonexistent/x.safetensors");
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(f.status().message().find("/nonexistent/x.safetensors"), std::string::npos);
  const absl::Status w = WriteSafetensors("/nonexistent/dir/y.safetensors", {{"t", Tensor({1})}});
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.message().find("/nonexistent/dir/y.safetensors"), std::string::npos) << w;
}

}  // namespace
}  // namespace hetsynth::runtime
