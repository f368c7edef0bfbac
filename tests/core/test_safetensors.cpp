// Safetensors reader/writer. Valid files are built byte by byte from the format
// description (8-byte LE length, JSON header, data) so the reader is not only
// checked against our own writer; every validation rule has a failing case.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/error.hpp"
#include "core/safetensors.hpp"

namespace megamoe {
namespace {

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("megamoe_test_safetensors_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Writes <8-byte LE length of header><header><data> to dir/name.
  std::filesystem::path write_raw(const std::string& name, const std::string& header, const std::string& data,
                                  std::optional<uint64_t> length_override = std::nullopt) {
    const auto path = dir_ / name;
    std::ofstream out(path, std::ios::binary);
    uint64_t n = length_override.value_or(header.size());
    for (int i = 0; i < 8; ++i) {
      out.put(static_cast<char>(n & 0xff));
      n >>= 8;
    }
    out << header << data;
    return path;
  }

  // Expects open() to throw a message that starts with the path and contains `needle`.
  void expect_open_error(const std::filesystem::path& path, const std::string& needle) {
    try {
      SafetensorsFile::open(path);
      ADD_FAILURE() << "no error; expected: " << needle;
    } catch (const Error& e) {
      const std::string message = e.what();
      EXPECT_EQ(message.rfind(path.string() + ": ", 0), 0u) << message;
      EXPECT_NE(message.find(needle), std::string::npos) << "message: " << message << "\nexpected: " << needle;
      EXPECT_EQ(message.find('\n'), std::string::npos) << "multi-line message: " << message;
    }
  }

  void expect_header_error(const std::string& header, size_t data_size, const std::string& needle) {
    expect_open_error(write_raw("bad.safetensors", header, std::string(data_size, '\0')), needle);
  }

  std::filesystem::path dir_;
};

TEST_F(SafetensorsTest, ReadsHandBuiltFile) {
  // Two F32 values and an I64 scalar, laid out as the format describes; a space-padded header.
  float values[2] = {1.5f, -2.0f};
  int64_t scalar = -7;
  std::string data(reinterpret_cast<const char*>(values), 8);
  data.append(reinterpret_cast<const char*>(&scalar), 8);
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"I64","shape":[],"data_offsets":[8,16]},)"
      R"("a":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]}}   )";
  const auto path = write_raw("ok.safetensors", header, data);
  const auto file = SafetensorsFile::open(path);
  ASSERT_EQ(file->tensors().size(), 2u);
  EXPECT_EQ(file->metadata().at("format"), "pt");
  const TensorView& a = file->tensors().at("a");
  EXPECT_EQ(a.dtype, DType::F32);
  EXPECT_EQ(a.shape, (Shape{1, 2}));
  EXPECT_EQ(a.nbytes, 8u);
  EXPECT_EQ(a.data_offset, 0u);
  EXPECT_EQ(a.file, &file->path());
  float read[2];
  std::memcpy(read, a.data, 8);
  EXPECT_EQ(read[0], 1.5f);
  EXPECT_EQ(read[1], -2.0f);
  const TensorView& b = file->tensors().at("b");
  EXPECT_EQ(b.shape, Shape{});
  EXPECT_EQ(b.numel(), 1);
  int64_t read_scalar = 0;
  std::memcpy(&read_scalar, b.data, 8);
  EXPECT_EQ(read_scalar, -7);
  // The data section starts right after the header.
  EXPECT_EQ(reinterpret_cast<const char*>(a.data) - reinterpret_cast<const char*>(b.data), -8);
}

TEST_F(SafetensorsTest, WriterRoundTripsEveryDtype) {
  struct Case {
    std::string name;
    DType dtype;
    Shape shape;
  };
  const std::vector<Case> cases = {
      {"f32", DType::F32, {3, 2}},      {"f16", DType::F16, {5}},        {"bf16", DType::BF16, {2, 2, 2}},
      {"e4m3", DType::F8_E4M3, {4, 3}}, {"e8m0", DType::F8_E8M0, {1, 7}}, {"u8", DType::U8, {4, 8}},
      {"i8", DType::I8, {9}},           {"i32", DType::I32, {2, 3}},     {"i64", DType::I64, {128, 2}},
      {"bool", DType::BOOL, {3}},       {"scalar", DType::F32, {}},      {"empty", DType::BF16, {0, 4}},
  };
  std::vector<std::vector<unsigned char>> buffers;
  std::vector<TensorToWrite> tensors;
  unsigned seed = 1;
  for (const Case& c : cases) {
    std::vector<unsigned char> bytes(static_cast<size_t>(shape_numel(c.shape)) * dtype_size(c.dtype));
    for (auto& byte : bytes) byte = static_cast<unsigned char>((seed = seed * 1103515245u + 12345u) >> 16);
    buffers.push_back(std::move(bytes));
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    tensors.push_back({cases[i].name, cases[i].dtype, cases[i].shape, buffers[i].data(), buffers[i].size()});
  }
  const auto path = dir_ / "round.safetensors";
  write_safetensors(path, tensors, {{"producer", "megamoe-test"}});

  // Header length is little-endian and the data section is 8-byte aligned.
  std::ifstream in(path, std::ios::binary);
  unsigned char length[8];
  in.read(reinterpret_cast<char*>(length), 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | length[i];
  EXPECT_EQ(n % 8, 0u);

  const auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file->metadata().at("producer"), "megamoe-test");
  ASSERT_EQ(file->tensors().size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    const TensorView& view = file->tensors().at(cases[i].name);
    EXPECT_EQ(view.dtype, cases[i].dtype) << cases[i].name;
    EXPECT_EQ(view.shape, cases[i].shape) << cases[i].name;
    ASSERT_EQ(view.nbytes, buffers[i].size()) << cases[i].name;
    if (view.nbytes > 0) EXPECT_EQ(std::memcmp(view.data, buffers[i].data(), view.nbytes), 0) << cases[i].name;
  }
}

TEST_F(SafetensorsTest, WriterRejectsBadInput) {
  const float x[2] = {0, 0};
  EXPECT_THROW(write_safetensors(dir_ / "w.safetensors", {{"a", DType::F32, {3}, x, 8}}), Error);
  EXPECT_THROW(write_safetensors(dir_ / "w.safetensors", {{"a", DType::F32, {1}, x, 4}, {"a", DType::F32, {1}, x, 4}}),
               Error);
  EXPECT_THROW(write_safetensors(dir_ / "w.safetensors", {{"__metadata__", DType::F32, {1}, x, 4}}), Error);
}

TEST_F(SafetensorsTest, ParseHeaderWithoutFile) {
  const auto table = SafetensorsFile::parse_header(
      R"({"w":{"dtype":"U8","shape":[2,3],"data_offsets":[4,10]},"z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
      10, "mem");
  ASSERT_EQ(table.size(), 2u);
  EXPECT_EQ(table.at("w").data_offset, 4u);
  EXPECT_EQ(table.at("w").nbytes, 6u);
  EXPECT_EQ(table.at("w").data, nullptr);
  EXPECT_EQ(table.at("z").nbytes, 0u);
}

TEST_F(SafetensorsTest, RejectsBadLengthField) {
  expect_open_error(write_raw("short.safetensors", "", "", 0), "too short for a JSON object");
  {
    const auto path = dir_ / "tiny.safetensors";
    std::ofstream(path, std::ios::binary) << "abc";
    expect_open_error(path, "shorter than the 8-byte header length");
  }
  expect_open_error(write_raw("long.safetensors", "{}", "", 4096), "header length 4096 exceeds the 2 bytes");
  expect_open_error(write_raw("huge.safetensors", "{}", "", uint64_t{1} << 62), "is implausible");
  expect_open_error(dir_ / "absent.safetensors", "cannot open");
}

TEST_F(SafetensorsTest, RejectsBadJson) {
  expect_header_error(R"({"a": )", 0, "header is not valid JSON");
  expect_header_error(R"([1, 2])", 0, "header must be a JSON object");
  expect_header_error("{\"a\xff\": 1}", 0, "header is not valid JSON");
  expect_header_error(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                      2, "key 'a' twice");
  expect_header_error(R"({"a":{"dtype":"U8","dtype":"I8","shape":[1],"data_offsets":[0,1]}})", 1, "key 'dtype' twice");
  expect_header_error(R"({"__metadata__":{"k":1}})", 0, "__metadata__ entry 'k' must be a string");
  expect_header_error(R"({"__metadata__":[]})", 0, "__metadata__ must be an object");
}

TEST_F(SafetensorsTest, RejectsBadEntries) {
  expect_header_error(R"({"a":5})", 0, "tensor 'a': entry must be an object");
  expect_header_error(R"({"a":{"shape":[1],"data_offsets":[0,4]}})", 4, "tensor 'a': missing dtype");
  expect_header_error(R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", 4, "tensor 'a': missing shape");
  expect_header_error(R"({"a":{"dtype":"F32","shape":[1]}})", 4, "tensor 'a': missing data_offsets");
  expect_header_error(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})", 4, "unexpected field 'x'");
  expect_header_error(R"({"a":{"dtype":"F4","shape":[1],"data_offsets":[0,1]}})", 1, "tensor 'a': unknown dtype 'F4'");
  expect_header_error(R"({"a":{"dtype":7,"shape":[1],"data_offsets":[0,1]}})", 1, "dtype must be a string");
  expect_header_error(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4, "shape entries must be");
  expect_header_error(R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4, "shape entries must be");
  expect_header_error(R"({"a":{"dtype":"F32","shape":4,"data_offsets":[0,4]}})", 4, "shape must be a list");
  expect_header_error(R"({"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", 8, "unknown dtype 'F64'");
  expect_header_error(
      R"({"a":{"dtype":"F32","shape":[281474976710656,281474976710656],"data_offsets":[0,4]}})", 4, "overflows");
}

TEST_F(SafetensorsTest, RejectsBadOffsets) {
  expect_header_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 8,
                      "shape [2] x F32 needs 8 bytes but data_offsets give 4");
  expect_header_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4,
                      "end past the data section of 4 bytes (file truncated?)");
  expect_header_error(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[8,4]}})", 8, "run backwards");
  expect_header_error(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", 1, "data_offsets must be [begin, end]");
  expect_header_error(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}})", 1, "non-negative integers");
  expect_header_error(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0.0,1]}})", 1, "non-negative integers");
  expect_header_error(
      R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
      8, "tensors 'a' [0, 4) and 'b' [2, 6) overlap");
}

TEST_F(SafetensorsTest, TruncatedDataSection) {
  std::vector<float> values(16, 1.0f);
  const auto path = dir_ / "t.safetensors";
  write_safetensors(path, {{"w", DType::F32, {4, 4}, values.data(), 64}});
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 1);
  expect_open_error(path, "tensor 'w': data_offsets [0, 64] end past the data section of 63 bytes");
}

}  // namespace
}  // namespace megamoe
