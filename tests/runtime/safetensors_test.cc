// Safetensors reading and writing: round trips, the exact bytes of a written file, files built
// byte by byte from the format spec in every supported dtype, and one test per malformed input.
#include "hetsynth/runtime/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include <bit>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/text_assertions.h"

namespace hetsynth::runtime {
namespace {

namespace fs = std::filesystem;

// gmock is not linked into the tests, so this stands in for StartsWith (Contains: text_assertions.h).
using testing_util::Contains;
::testing::AssertionResult BeginsWith(const std::string& text, const std::string& prefix) {
  if (text.starts_with(prefix)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << text << "\"\n  does not start with \"" << prefix << "\"";
}

// A fresh, empty directory per test under ::testing::TempDir().
std::string TestDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = std::string(info->test_suite_name()) + "." + info->name();
  for (char& c : name) {
    if (c == '/') c = '_';
  }
  const fs::path dir = fs::path(::testing::TempDir()) / "safetensors_test" / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

// Appends v in little-endian byte order, as the spec requires, whatever the host order.
template <typename T>
void AppendLE(std::string& s, T v) {
  using U = std::conditional_t<sizeof(T) == 8, uint64_t,
                               std::conditional_t<sizeof(T) == 4, uint32_t,
                                                  std::conditional_t<sizeof(T) == 2, uint16_t, uint8_t>>>;
  const U u = std::bit_cast<U>(v);
  for (size_t i = 0; i < sizeof(U); ++i) s.push_back(static_cast<char>((u >> (8 * i)) & 0xff));
}

// A safetensors file: u64 header size, the header text as given, then the data bytes.
std::string FileBytes(const std::string& header, const std::string& data) {
  std::string s;
  AppendLE<uint64_t>(s, header.size());
  return s + header + data;
}

std::string Floats(std::initializer_list<float> values) {
  std::string s;
  for (float v : values) AppendLE(s, v);
  return s;
}

void ExpectTensor(const SafetensorsFile& f, const std::string& name, const ir::Shape& shape,
                  const std::vector<float>& data) {
  SCOPED_TRACE(name);
  auto it = f.tensors.find(name);
  ASSERT_NE(it, f.tensors.end());
  EXPECT_EQ(it->second.shape, shape);
  EXPECT_EQ(it->second.data, data);
}

// ---------------------------------------------------------------------------------------------
// Writing, then reading back.

TEST(SafetensorsTest, RoundTripKeepsTensorsScalarEmptyAndMetadata) {
  const std::string path = TestDir() + "/ckpt.safetensors";
  Tensor w({2, 3});
  for (int64_t i = 0; i < w.numel(); ++i) w.data[static_cast<size_t>(i)] = 0.25f * static_cast<float>(i) - 1.0f;
  Tensor scalar({}, 3.5f);
  Tensor bias({4});
  bias.data = {-0.0f, std::numeric_limits<float>::infinity(), 1e-40f /*subnormal*/, 7.0f};
  Tensor empty({0, 3});
  const std::map<std::string, Tensor> tensors = {
      {"fc.weight", w}, {"step_scale", scalar}, {"fc.bias", bias}, {"empty", empty}};
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "héllo \"x\"\n"}};

  ASSERT_TRUE(WriteSafetensors(path, tensors, metadata).ok());
  absl::StatusOr<SafetensorsFile> f = ReadSafetensors(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->metadata, metadata);
  ASSERT_EQ(f->tensors.size(), 4u);
  ExpectTensor(*f, "fc.weight", {2, 3}, std::vector<float>(w.data.begin(), w.data.end()));
  ExpectTensor(*f, "step_scale", {}, {3.5f});
  ExpectTensor(*f, "fc.bias", {4}, std::vector<float>(bias.data.begin(), bias.data.end()));
  EXPECT_TRUE(std::signbit(f->tensors.at("fc.bias").data[0]));
  ExpectTensor(*f, "empty", {0, 3}, {});
}

TEST(SafetensorsTest, RoundTripKeepsNaN) {
  const std::string path = TestDir() + "/nan.safetensors";
  Tensor t({2});
  t.data = {std::numeric_limits<float>::quiet_NaN(), 1.0f};
  ASSERT_TRUE(WriteSafetensors(path, {{"t", t}}).ok());
  absl::StatusOr<SafetensorsFile> f = ReadSafetensors(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(std::isnan(f->tensors.at("t").data[0]));
  EXPECT_EQ(f->tensors.at("t").data[1], 1.0f);
}

TEST(SafetensorsTest, RoundTripOfNoTensorsIsAnEmptyObject) {
  const std::string path = TestDir() + "/none.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, {}).ok());
  EXPECT_EQ(ReadBytes(path), FileBytes("{}      ", ""));
  absl::StatusOr<SafetensorsFile> f = ReadSafetensors(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(f->tensors.empty());
  EXPECT_TRUE(f->metadata.empty());
}

TEST(SafetensorsTest, WrittenFileMatchesTheSpecByteForByte) {
  const std::string path = TestDir() + "/tiny.safetensors";
  Tensor w({2});
  w.data = {1.0f, -2.0f};
  ASSERT_TRUE(WriteSafetensors(path, {{"w", w}}).ok());
  const std::string bytes = ReadBytes(path);

  const std::string json = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  ASSERT_EQ(json.size(), 54u);  // so the header is padded with 2 spaces to 56
  ASSERT_EQ(bytes.size(), 8u + 56u + 8u);
  // Header size: u64 little-endian.
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x38\0\0\0\0\0\0\0", 8));
  EXPECT_EQ(bytes.substr(8, 56), json + "  ");
  EXPECT_EQ((8 + 56) % 8, 0);
  // 1.0f = 0x3f800000, -2.0f = 0xc0000000, little-endian.
  EXPECT_EQ(bytes.substr(64), std::string("\x00\x00\x80\x3f\x00\x00\x00\xc0", 8));
}

TEST(SafetensorsTest, WrittenHeaderPutsMetadataFirstAndTensorsInNameOrder) {
  const std::string path = TestDir() + "/meta.safetensors";
  Tensor s({}, 5.0f);
  Tensor b({1, 2});
  b.data = {1.0f, 2.0f};
  ASSERT_TRUE(WriteSafetensors(path, {{"b", b}, {"a", s}}, {{"k", "v"}}).ok());
  const std::string bytes = ReadBytes(path);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<size_t>(i)]);
  EXPECT_EQ(n % 8, 0u);
  ASSERT_EQ(bytes.size(), 8 + n + 12);
  const std::string header = bytes.substr(8, n);
  const std::string json =
      R"({"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]},)"
      R"("b":{"dtype":"F32","shape":[1,2],"data_offsets":[4,12]}})";
  EXPECT_EQ(header.substr(0, json.size()), json);
  EXPECT_EQ(header.substr(json.size()), std::string(n - json.size(), ' '));
  EXPECT_LT(n - json.size(), 8u);
  EXPECT_EQ(bytes.substr(8 + n), Floats({5.0f, 1.0f, 2.0f}));
}

// The layouts the reference implementation's own serialization tests expect
// (huggingface/safetensors, safetensors/src/tensor.rs: test_serialization,
// test_serialization_forced_alignement, test_empty), so its readers accept our files.
TEST(SafetensorsTest, WrittenFilesMatchTheReferenceImplementationLayouts) {
  const std::string dir = TestDir();
  Tensor t({1, 2, 3});
  t.data = {0, 1, 2, 3, 4, 5};
  const std::string data = Floats({0, 1, 2, 3, 4, 5});

  ASSERT_TRUE(WriteSafetensors(dir + "/a.safetensors", {{"attn.0", t}}).ok());
  EXPECT_EQ(ReadBytes(dir + "/a.safetensors"),
            FileBytes(R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})", data));

  t.shape = {1, 1, 2, 3};
  ASSERT_TRUE(WriteSafetensors(dir + "/b.safetensors", {{"attn0", t}}).ok());
  EXPECT_EQ(ReadBytes(dir + "/b.safetensors"),
            FileBytes(R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}       )", data));

  ASSERT_TRUE(WriteSafetensors(dir + "/c.safetensors", {}, {{"framework", "pt"}}).ok());
  EXPECT_EQ(ReadBytes(dir + "/c.safetensors"), FileBytes(R"({"__metadata__":{"framework":"pt"}}     )", ""));
}

TEST(SafetensorsTest, WriteReplacesAnExistingFileAndLeavesNoTemporaryFile) {
  const std::string dir = TestDir();
  const std::string path = dir + "/ckpt.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, {{"x", Tensor({3}, 1.0f)}}).ok());
  ASSERT_TRUE(WriteSafetensors(path, {{"y", Tensor({1}, 2.0f)}}).ok());
  absl::StatusOr<SafetensorsFile> f = ReadSafetensors(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->tensors.count("x"), 0u);
  ExpectTensor(*f, "y", {1}, {2.0f});
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir)) files.push_back(e.path().filename().string());
  EXPECT_EQ(files, std::vector<std::string>{"ckpt.safetensors"});
}

TEST(SafetensorsTest, WriteRejectsDataThatDoesNotMatchTheShape) {
  const std::string path = TestDir() + "/bad.safetensors";
  Tensor t({2, 3});
  t.data.resize(5);
  absl::Status s = WriteSafetensors(path, {{"fc.weight", t}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(BeginsWith(std::string(s.message()), "safetensors '" + path + "': "));
  EXPECT_TRUE(Contains(std::string(s.message()), "tensor 'fc.weight' has shape [2,3] (6 elements) but 5"));
  EXPECT_FALSE(fs::exists(path));
  EXPECT_TRUE(fs::is_empty(fs::path(path).parent_path()));
}

TEST(SafetensorsTest, WriteRejectsNegativeDims) {
  const std::string path = TestDir() + "/bad.safetensors";
  Tensor t;
  t.shape = {2, -1};
  absl::Status s = WriteSafetensors(path, {{"t", t}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(std::string(s.message()), "tensor 't' has shape [2,-1] whose dim 1 is -1"));
  EXPECT_FALSE(fs::exists(path));
}

TEST(SafetensorsTest, WriteRejectsTheReservedMetadataName) {
  const std::string path = TestDir() + "/bad.safetensors";
  absl::Status s = WriteSafetensors(path, {{"__metadata__", Tensor({1})}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(std::string(s.message()), "'__metadata__' is reserved"));
  EXPECT_FALSE(fs::exists(path));
}

TEST(SafetensorsTest, WriteRejectsNamesThatAreNotUtf8) {
  const std::string path = TestDir() + "/bad.safetensors";
  absl::Status s = WriteSafetensors(path, {{"bad\xff", Tensor({1})}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(std::string(s.message()), "not valid UTF-8"));
  s = WriteSafetensors(path, {{"ok", Tensor({1})}}, {{"k", "\xc3"}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(std::string(s.message()), "metadata value of 'k' is not valid UTF-8"));
  EXPECT_FALSE(fs::exists(path));
}

TEST(SafetensorsTest, WriteIntoAMissingDirectoryNamesThePathAndTheError) {
  const std::string path = TestDir() + "/no/such/dir/ckpt.safetensors";
  absl::Status s = WriteSafetensors(path, {{"x", Tensor({1})}});
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(BeginsWith(std::string(s.message()), "safetensors '" + path + "': cannot create temporary file"));
  EXPECT_TRUE(Contains(std::string(s.message()), "No such file or directory"));
}

TEST(SafetensorsTest, WriteOverADirectoryFailsAndCleansUp) {
  const std::string dir = TestDir();
  const std::string path = dir + "/ckpt.safetensors";
  fs::create_directories(path + "/inside");
  absl::Status s = WriteSafetensors(path, {{"x", Tensor({1})}});
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(Contains(std::string(s.message()), "cannot rename temporary file"));
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir)) files.push_back(e.path().filename().string());
  EXPECT_EQ(files, std::vector<std::string>{"ckpt.safetensors"});
}

// ---------------------------------------------------------------------------------------------
// Reading files built by hand from the spec.

TEST(SafetensorsTest, ReadsEveryDtypeConvertingToFp32) {
  std::string data;
  // F64 [3] at [0,24)
  for (double v : {0.1, -2.5, 1e-3}) AppendLE(data, v);
  // F16 [7] at [24,38): 1, -2, 0.5, 65504 (max), 2^-24 (smallest subnormal), +inf, nan
  for (uint16_t v : {0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x7c00, 0x7e00}) AppendLE(data, v);
  // BF16 [2,1] at [38,42): 1, -3.5
  for (uint16_t v : {0x3f80, 0xc060}) AppendLE(data, v);
  // I64 [4] at [42,74): the largest magnitudes fp32 holds exactly are allowed
  for (int64_t v : {int64_t{0}, int64_t{-7}, int64_t{16777216}, int64_t{-16777216}}) AppendLE(data, v);
  // I32 [] (scalar) at [74,78)
  AppendLE(data, int32_t{50257});
  // I16 [2] at [78,82)
  for (int16_t v : {int16_t{-32768}, int16_t{32767}}) AppendLE(data, v);
  // I8 [2] at [82,84)
  for (int8_t v : {int8_t{-128}, int8_t{127}}) AppendLE(data, v);
  // U8 [2] at [84,86)
  for (uint8_t v : {uint8_t{0}, uint8_t{255}}) AppendLE(data, v);
  // BOOL [3] at [86,89)
  for (uint8_t v : {uint8_t{1}, uint8_t{0}, uint8_t{1}}) AppendLE(data, v);
  // U16 [1] at [89,91), U32 [1] at [91,95), U64 [1] at [95,103)
  AppendLE(data, uint16_t{65535});
  AppendLE(data, uint32_t{16777216});
  AppendLE(data, uint64_t{123456});
  ASSERT_EQ(data.size(), 103u);
  const std::string header = R"({
    "f64": {"dtype": "F64", "shape": [3], "data_offsets": [0, 24]},
    "f16": {"dtype": "F16", "shape": [7], "data_offsets": [24, 38]},
    "bf16": {"dtype": "BF16", "shape": [2, 1], "data_offsets": [38, 42]},
    "i64": {"dtype": "I64", "shape": [4], "data_offsets": [42, 74]},
    "i32": {"dtype": "I32", "shape": [], "data_offsets": [74, 78]},
    "i16": {"dtype": "I16", "shape": [2], "data_offsets": [78, 82]},
    "i8": {"dtype": "I8", "shape": [2], "data_offsets": [82, 84]},
    "u8": {"dtype": "U8", "shape": [2], "data_offsets": [84, 86]},
    "mask": {"dtype": "BOOL", "shape": [3], "data_offsets": [86, 89]},
    "u16": {"dtype": "U16", "shape": [1], "data_offsets": [89, 91]},
    "u32": {"dtype": "U32", "shape": [1], "data_offsets": [91, 95]},
    "u64": {"dtype": "U64", "shape": [1], "data_offsets": [95, 103]},
    "__metadata__": {"format": "pt"}
  })";
  const std::string path = TestDir() + "/all.safetensors";
  WriteBytes(path, FileBytes(header, data));

  absl::StatusOr<SafetensorsFile> f = ReadSafetensors(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
  EXPECT_EQ(f->tensors.size(), 12u);
  ExpectTensor(*f, "f64", {3}, {0.1f, -2.5f, 1e-3f});
  const HostVector& h = f->tensors.at("f16").data;
  ASSERT_EQ(h.size(), 7u);
  EXPECT_EQ(h[0], 1.0f);
  EXPECT_EQ(h[1], -2.0f);
  EXPECT_EQ(h[2], 0.5f);
  EXPECT_EQ(h[3], 65504.0f);
  EXPECT_EQ(h[4], std::ldexp(1.0f, -24));
  EXPECT_EQ(h[5], std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(h[6]));
  ExpectTensor(*f, "bf16", {2, 1}, {1.0f, -3.5f});
  ExpectTensor(*f, "i64", {4}, {0.0f, -7.0f, 16777216.0f, -16777216.0f});
  ExpectTensor(*f, "i32", {}, {50257.0f});
  ExpectTensor(*f, "i16", {2}, {-32768.0f, 32767.0f});
  ExpectTensor(*f, "i8", {2}, {-128.0f, 127.0f});
  ExpectTensor(*f, "u8", {2}, {0.0f, 255.0f});
  ExpectTensor(*f, "mask", {3}, {1.0f, 0.0f, 1.0f});
  ExpectTensor(*f, "u16", {1}, {65535.0f});
  ExpectTensor(*f, "u32", {1}, {16777216.0f});
  ExpectTensor(*f, "u64", {1}, {123456.0f});
}

TEST(SafetensorsTest, ReadsF16Subnormals) {
  std::string data;
  for (uint16_t v : {0x0200, 0x83ff, 0x8000}) AppendLE(data, v);  // 2^-15, -(1023 * 2^-24), -0
  const std::string path = TestDir() + "/sub.safetensors";
  WriteBytes(path, FileBytes(R"({"h":{"dtype":"F16","shape":[3],"data_offsets":[0,6]}})", data));
  absl::StatusOr<SafetensorsFile> f = ReadSafetensors(path);
  ASSERT_TRUE(f.ok()) << f.status();
  const HostVector& h = f->tensors.at("h").data;
  EXPECT_EQ(h[0], std::ldexp(1.0f, -15));
  EXPECT_EQ(h[1], -1023.0f * std::ldexp(1.0f, -24));
  EXPECT_EQ(h[2], 0.0f);
  EXPECT_TRUE(std::signbit(h[2]));
}

TEST(SafetensorsTest, ReadsGapsAndSharedEmptyRanges) {
  // Offsets need not be contiguous; empty tensors may sit anywhere, even inside another's range.
  std::string data = Floats({9.0f}) + "GAP!" + Floats({1.0f, 2.0f});
  const std::string header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},
    "b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},
    "e1":{"dtype":"F32","shape":[0],"data_offsets":[10,10]},
    "e2":{"dtype":"I64","shape":[5,0],"data_offsets":[10,10]}})";
  const std::string path = TestDir() + "/gaps.safetensors";
  WriteBytes(path, FileBytes(header, data));
  absl::StatusOr<SafetensorsFile> f = ReadSafetensors(path);
  ASSERT_TRUE(f.ok()) << f.status();
  ExpectTensor(*f, "a", {1}, {9.0f});
  ExpectTensor(*f, "b", {2}, {1.0f, 2.0f});
  ExpectTensor(*f, "e1", {0}, {});
  ExpectTensor(*f, "e2", {5, 0}, {});
}

TEST(SafetensorsTest, MissingFileIsNotFound) {
  const std::string path = TestDir() + "/absent.safetensors";
  absl::StatusOr<SafetensorsFile> f = ReadSafetensors(path);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(BeginsWith(std::string(f.status().message()), "safetensors '" + path + "': cannot open"));
  EXPECT_TRUE(Contains(std::string(f.status().message()), "No such file or directory"));
}

TEST(SafetensorsTest, DirectoryIsInvalidArgument) {
  const std::string path = TestDir();
  absl::StatusOr<SafetensorsFile> f = ReadSafetensors(path);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(std::string(f.status().message()), "is not a regular file"));
}

TEST(SafetensorsTest, FifoIsRefusedWithoutWaitingForAWriter) {
  const std::string path = TestDir() + "/fifo.safetensors";
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  // Were the reader to block in open(), this writer would release it after 3 s (and the test fail).
  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::seconds(3));
    const int fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK);
    if (fd >= 0) ::close(fd);
  });
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<SafetensorsFile> f = ReadSafetensors(path);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  writer.join();
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(std::string(f.status().message()), "is not a regular file"));
  EXPECT_LT(s, 2.0);
}

TEST(SafetensorsTest, HeaderCheckSeesNamesShapesAndMetadataBeforeAnyData) {
  const std::string path = TestDir() + "/ck.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, {{"w", Tensor({2, 3})}}, {{"step", "4"}}).ok());
  SafetensorsHeader seen;
  absl::StatusOr<SafetensorsFile> f = ReadSafetensors(path, [&](const SafetensorsHeader& h) {
    seen = h;
    return absl::InvalidArgumentError("refused");
  });
  EXPECT_EQ(f.status().message(), "refused");
  EXPECT_EQ(seen.shapes, (std::map<std::string, ir::Shape>{{"w", {2, 3}}}));
  EXPECT_EQ(seen.metadata.at("step"), "4");
}

TEST(SafetensorsTest, SizeMismatchMessageNamesFileTensorOffsetsDtypeAndShape) {
  const std::string path = TestDir() + "/ckpt.safetensors";
  WriteBytes(path, FileBytes(R"({"fc.weight":{"dtype":"F32","shape":[3,4],"data_offsets":[0,40]}})",
                             std::string(48, '\0')));
  absl::StatusOr<SafetensorsFile> f = ReadSafetensors(path);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.status().message(),
            "safetensors '" + path +
                "': tensor 'fc.weight' has data_offsets [0,40] but dtype F32 and shape [3,4] need 48 bytes");
}

// ---------------------------------------------------------------------------------------------
// Malformed files: each gives InvalidArgument whose message starts with the path and contains
// the field and the bad value.

struct MalformedCase {
  const char* name;            // test name suffix
  std::string bytes;           // the whole file
  std::vector<std::string> expect;  // substrings of the message
};

std::string F32Entry(const std::string& name, const std::string& shape, const std::string& offsets) {
  std::string s = "\"";  // appended piecewise: `"lit" + str` trips GCC 12's bogus -Wrestrict
  s += name;
  s += "\":{\"dtype\":\"F32\",\"shape\":";
  s += shape;
  s += ",\"data_offsets\":";
  s += offsets;
  s += "}";
  return s;
}

// A header object of the given entries.
std::string Header(std::initializer_list<std::string> entries) {
  std::string s = "{";
  for (const std::string& e : entries) {
    if (s.size() > 1) s += ",";
    s += e;
  }
  s += "}";
  return s;
}

std::vector<MalformedCase> MalformedCases() {
  std::string huge_size, long_size;
  AppendLE<uint64_t>(huge_size, 200'000'000);
  huge_size += "{}";
  AppendLE<uint64_t>(long_size, 100);
  long_size += "{\"a\":1}";
  std::string i64_big, i64_neg, i32_big, u64_big, f64_big, bad_bool;
  for (int64_t v : {int64_t{1}, int64_t{16777217}}) AppendLE(i64_big, v);
  AppendLE(i64_neg, int64_t{-16777217});
  AppendLE(i32_big, int32_t{2147483647});
  AppendLE(u64_big, std::numeric_limits<uint64_t>::max());
  for (double v : {1.0, -1e300}) AppendLE(f64_big, v);
  bad_bool = std::string("\x01\x02", 2);
  const std::string f12 = std::string(12, '\0');

  return {
      {"FileShorterThanTheSizeField", "abcde", {"file is 5 bytes", "at least 8"}},
      {"AbsurdHeaderSize", huge_size, {"header size is 200000000 bytes", "at most 100000000"}},
      {"HeaderSizeBeyondTheFile", long_size, {"header size is 100 bytes but only 7 bytes follow"}},
      {"HeaderNotJson", FileBytes("{not json", ""), {"header is not valid JSON", "syntax error"}},
      {"HeaderNotUtf8", FileBytes("{\"a\xff\":1}", ""), {"header is not valid JSON", "UTF-8"}},
      {"EmptyHeader", FileBytes("", ""), {"header is not valid JSON"}},
      {"HeaderNotObject", FileBytes("[1,2]", ""), {"header is [1,2] (array)", "expected a JSON object"}},
      {"TrailingGarbageAfterHeader", FileBytes("{} x", ""), {"header is not valid JSON"}},
      {"DuplicateTensorName",
       FileBytes(Header({F32Entry("w", "[1]", "[0,4]"), F32Entry("w", "[1]", "[4,8]")}),
                 std::string(8, '\0')),
       {"header names 'w' twice"}},
      {"DuplicateKeyInATensorEntry",
       FileBytes(R"({"w":{"dtype":"X9","dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(4, '\0')),
       {"tensor 'w' has key 'dtype' twice; expected each key once"}},
      {"DuplicateMetadataKey", FileBytes(R"({"__metadata__":{"step":"2","step":"999"}})", ""),
       {"__metadata__ has key 'step' twice; expected each key once"}},
      {"TrailingBytesAfterTheLastTensor", FileBytes(Header({F32Entry("w", "[1]", "[0,4]")}), std::string(68, '\0')),
       {"64 bytes after the last tensor's data (byte 4 of the 68-byte data buffer) belong to no tensor"}},
      {"BytesButNoTensors", FileBytes("{}", std::string(8, '\0')), {"8 bytes after the last tensor's data"}},
      {"EntryNotObject", FileBytes(R"({"w":[1,2]})", ""), {"tensor 'w' is [1,2] (array)", "expected an object"}},
      {"MissingDtype", FileBytes(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", f12),
       {"tensor 'w' has no \"dtype\""}},
      {"MissingShape", FileBytes(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", f12),
       {"tensor 'w' has no \"shape\""}},
      {"MissingDataOffsets", FileBytes(R"({"w":{"dtype":"F32","shape":[1]}})", f12),
       {"tensor 'w' has no \"data_offsets\""}},
      {"DtypeNotString", FileBytes(R"({"w":{"dtype":5,"shape":[1],"data_offsets":[0,4]}})", f12),
       {"tensor 'w' has dtype 5 (number)", "expected a string"}},
      {"UnknownDtype", FileBytes(R"({"w":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", f12),
       {"tensor 'w' has dtype 'F8_E4M3'", "expected one of F64, F32, F16, BF16"}},
      {"LowerCaseDtype", FileBytes(R"({"w":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}})", f12),
       {"tensor 'w' has dtype 'f32'"}},
      {"ShapeNotArray", FileBytes(R"({"w":{"dtype":"F32","shape":"3","data_offsets":[0,12]}})", f12),
       {"tensor 'w' has shape \"3\" (string)", "expected an array of non-negative integers"}},
      {"ShapeFractionalDim", FileBytes(R"({"w":{"dtype":"F32","shape":[3,2.5],"data_offsets":[0,12]}})", f12),
       {"tensor 'w' has shape [3,2.5]", "dim 1 is 2.5 (number)", "expected a non-negative integer"}},
      {"ShapeNegativeDim", FileBytes(R"({"w":{"dtype":"F32","shape":[3,-4],"data_offsets":[0,12]}})", f12),
       {"tensor 'w' has shape [3,-4]", "dim 1 is -4"}},
      {"ShapeBoolDim", FileBytes(R"({"w":{"dtype":"F32","shape":[true],"data_offsets":[0,4]}})", f12),
       {"dim 0 is true (boolean)"}},
      {"ShapeOverflows",
       FileBytes(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", f12),
       {"tensor 'w' has shape [4294967296,4294967296] whose byte size overflows"}},
      {"OffsetsNotArray", FileBytes(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":4}})", f12),
       {"tensor 'w' has data_offsets 4 (number)", "expected [begin, end]"}},
      {"OffsetsOneNumber", FileBytes(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4]}})", f12),
       {"tensor 'w' has data_offsets [4] (array)"}},
      {"OffsetsString", FileBytes(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,"4"]}})", f12),
       {"tensor 'w' has data_offsets [0,\"4\"] (array)"}},
      {"OffsetsNegative", FileBytes(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", f12),
       {"tensor 'w' has data_offsets [-4,0] (array)", "non-negative"}},
      {"OffsetsReversed", FileBytes(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", f12),
       {"tensor 'w' has data_offsets [8,4]", "expected begin <= end"}},
      {"OffsetsBeyondBuffer", FileBytes(Header({F32Entry("w", "[4]", "[0,16]")}), f12),
       {"tensor 'w' has data_offsets [0,16] but the data buffer holds only 12 bytes"}},
      {"OffsetsTooShortForShape", FileBytes(Header({F32Entry("w", "[2]", "[0,4]")}), f12),
       {"tensor 'w' has data_offsets [0,4] but dtype F32 and shape [2] need 8 bytes"}},
      {"OffsetsTooLongForShape",
       FileBytes(R"({"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,8]}})", f12),
       {"tensor 'w' has data_offsets [0,8] but dtype BF16 and shape [2] need 4 bytes"}},
      {"ScalarNeedsOneElement", FileBytes(Header({F32Entry("s", "[]", "[0,0]")}), f12),
       {"tensor 's' has data_offsets [0,0] but dtype F32 and shape [] need 4 bytes"}},
      {"OverlappingTensors",
       FileBytes(Header({F32Entry("a", "[2]", "[0,8]"), F32Entry("b", "[2]", "[4,12]")}), f12),
       {"tensors 'a' data_offsets [0,8] and 'b' data_offsets [4,12] overlap"}},
      {"TensorInsideAnother",
       FileBytes(Header({F32Entry("a", "[3]", "[0,12]"), F32Entry("b", "[1]", "[4,8]")}), f12),
       {"tensors 'a' data_offsets [0,12] and 'b' data_offsets [4,8] overlap"}},
      {"SameRangeTwice",
       FileBytes(Header({F32Entry("a", "[1]", "[4,8]"), F32Entry("b", "[1]", "[4,8]")}), f12),
       {"tensors 'a' data_offsets [4,8] and 'b' data_offsets [4,8] overlap"}},
      {"MetadataNotObject", FileBytes(R"({"__metadata__":["a"]})", ""),
       {"__metadata__ is [\"a\"] (array)", "expected an object of string values"}},
      {"MetadataValueNotString", FileBytes(R"({"__metadata__":{"step":100}})", ""),
       {"__metadata__ entry 'step' is 100 (number)", "expected a string"}},
      {"IntegerTooLargeForFp32",
       FileBytes(R"({"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}})", i64_big),
       {"tensor 'ids' (I64) element 1 is 16777217", "at most 2^24 = 16777216"}},
      {"NegativeIntegerTooLargeForFp32",
       FileBytes(R"({"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", i64_neg),
       {"tensor 'ids' (I64) element 0 is -16777217"}},
      {"I32TooLargeForFp32", FileBytes(R"({"ids":{"dtype":"I32","shape":[],"data_offsets":[0,4]}})", i32_big),
       {"tensor 'ids' (I32) element 0 is 2147483647"}},
      {"U64TooLargeForFp32", FileBytes(R"({"ids":{"dtype":"U64","shape":[1],"data_offsets":[0,8]}})", u64_big),
       {"tensor 'ids' (U64) element 0 is 18446744073709551615"}},
      {"F64OutsideFp32Range", FileBytes(R"({"x":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}})", f64_big),
       {"tensor 'x' (F64) element 1 is -1e+300", "fp32 range"}},
      {"BoolByteNotZeroOrOne",
       FileBytes(R"({"m":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", bad_bool),
       {"tensor 'm' (BOOL) element 1 is byte 2", "expected 0 or 1"}},
  };
}

class SafetensorsMalformedTest : public ::testing::TestWithParam<MalformedCase> {};

TEST_P(SafetensorsMalformedTest, IsInvalidArgumentNamingFileFieldAndValue) {
  const MalformedCase& c = GetParam();
  const std::string path = TestDir() + "/bad.safetensors";
  WriteBytes(path, c.bytes);
  absl::StatusOr<SafetensorsFile> f = ReadSafetensors(path);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << f.status();
  const std::string msg(f.status().message());
  EXPECT_TRUE(BeginsWith(msg, "safetensors '" + path + "': "));
  for (const std::string& e : c.expect) EXPECT_TRUE(Contains(msg, e));
}

INSTANTIATE_TEST_SUITE_P(Cases, SafetensorsMalformedTest, ::testing::ValuesIn(MalformedCases()),
                         [](const ::testing::TestParamInfo<MalformedCase>& info) { return info.param.name; });

}  // namespace
}  // namespace hetsynth::runtime
