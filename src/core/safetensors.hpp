// Safetensors files, memory-mapped and strictly validated: header length,
// JSON, dtypes, shape x dtype == byte size, offsets inside the data section,
// no overlaps, unique keys, a __metadata__ map of strings. A malformed file
// throws megamoe::Error "<file>: <problem>". Gaps between tensors and trailing
// bytes after the last one are tolerated (they hold no tensor).
#pragma once

#include <cstddef>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.hpp"
#include "core/tensor.hpp"

namespace megamoe {

// A tensor inside a mapped file (valid while the file/checkpoint lives).
struct TensorView {
  std::string name;   // name as stored in the file
  DType dtype = DType::F32;
  Shape shape;
  const std::byte* data = nullptr;  // not aligned beyond 1 byte: read through memcpy
  size_t nbytes = 0;
  uint64_t data_offset = 0;          // offset of the first byte inside the file's data section
  const std::filesystem::path* file = nullptr;  // the file it lives in

  int64_t numel() const { return shape_numel(shape); }
};

class SafetensorsFile {
 public:
  static std::unique_ptr<SafetensorsFile> open(const std::filesystem::path& path);
  // Parses a header and validates it against a data section of data_size bytes
  // (no file needed: the fuzz test drives this directly). The views have
  // data == nullptr and file == nullptr; data_offset and nbytes are set.
  static std::map<std::string, TensorView> parse_header(const std::string& header_json, size_t data_size,
                                                        const std::string& source);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  std::filesystem::path path_;
  void* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Writes tensors as one safetensors file (tests, tools, `megamoe quantize`).
struct TensorToWrite {
  std::string name;
  DType dtype;
  Shape shape;
  const void* data;
  size_t nbytes;
};
// The data section is written in the order given; the header is padded to 8 bytes.
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace megamoe
