// Loads the official codec golden vectors (tests/data/codecs/vectors.{json,bin},
// made by tools/make_codec_vectors.py with PyTorch and NVIDIA ModelOpt).
// vectors.json lists the cases and indexes named little-endian arrays in vectors.bin.
#pragma once

#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/error.hpp"

namespace megamoe::testing {

class CodecVectors {
 public:
  static const CodecVectors& get() {
    static const CodecVectors vectors(std::string(MEGAMOE_TEST_DATA_DIR) + "/codecs/");
    return vectors;
  }

  const nlohmann::json& doc() const { return doc_; }

  std::vector<uint8_t> u8(const std::string& name) const { return typed<uint8_t>(name, "uint8"); }
  std::vector<uint16_t> u16(const std::string& name) const { return typed<uint16_t>(name, "uint16"); }
  std::vector<uint32_t> u32(const std::string& name) const { return typed<uint32_t>(name, "uint32"); }
  // An array of FP32 bit patterns, as floats.
  std::vector<float> f32(const std::string& name) const {
    std::vector<float> out;
    for (uint32_t bits : u32(name)) out.push_back(std::bit_cast<float>(bits));
    return out;
  }

 private:
  explicit CodecVectors(const std::string& dir) {
    std::ifstream json_file(dir + "vectors.json");
    if (!json_file) throw std::runtime_error("cannot open " + dir + "vectors.json");
    doc_ = nlohmann::json::parse(json_file);
    std::ifstream blob_file(dir + doc_.at("blob").get<std::string>(), std::ios::binary);
    if (!blob_file) throw std::runtime_error("cannot open the vectors blob in " + dir);
    blob_.assign(std::istreambuf_iterator<char>(blob_file), std::istreambuf_iterator<char>());
  }

  template <typename T>
  std::vector<T> typed(const std::string& name, const char* dtype) const {
    const auto& entry = doc_.at("arrays").at(name);
    if (entry.at("dtype").get<std::string>() != dtype) throw std::runtime_error(name + ": wrong dtype");
    const size_t offset = entry.at("offset").get<size_t>();
    const size_t nbytes = entry.at("nbytes").get<size_t>();
    if (offset + nbytes > blob_.size() || nbytes % sizeof(T) != 0) throw std::runtime_error(name + ": out of range");
    std::vector<T> out(nbytes / sizeof(T));
    std::memcpy(out.data(), blob_.data() + offset, nbytes);  // little-endian host assumed (x86/ARM)
    return out;
  }

  nlohmann::json doc_;
  std::vector<char> blob_;
};

inline uint32_t bits_of(float x) { return std::bit_cast<uint32_t>(x); }

// Runs fn and checks it throws megamoe::Error whose message contains `needle`.
template <typename Fn>
void expect_error_containing(Fn&& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected an error containing \"" << needle << "\"";
  } catch (const megamoe::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message \"" << e.what() << "\" lacks \"" << needle << "\"";
  }
}

}  // namespace megamoe::testing
