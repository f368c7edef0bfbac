// Shared helpers of test_text: the real DeepSeek-V4 tokenizer (fetched by
// scripts/fetch_tokenizer.sh, never committed) and the golden files.
#pragma once

#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "text/tokenizer.hpp"

namespace megamoe::text::testing {

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

inline nlohmann::json load_golden(const std::string& name) {
  const std::string path = std::string(MEGAMOE_TEST_DATA_DIR) + "/text/" + name;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open golden file " + path);
  return nlohmann::json::parse(in);
}

inline const char* tokenizer_path() { return std::getenv("MEGAMOE_TOKENIZER_JSON"); }

// The DeepSeek-V4 tokenizer, loaded once. A missing tokenizer is a test
// failure, never a skip: the goldens are the point of these tests.
inline const Tokenizer* deepseek_tokenizer() {
  static std::unique_ptr<Tokenizer> tokenizer;
  static bool tried = false;
  if (!tried) {
    tried = true;
    const char* path = tokenizer_path();
    if (path && *path) tokenizer = std::make_unique<Tokenizer>(Tokenizer::from_file(path));
  }
  return tokenizer.get();
}

}  // namespace megamoe::text::testing

// Fails the current test (and returns) when the tokenizer is not available.
#define MEGAMOE_REQUIRE_TOKENIZER(var)                                                               \
  const ::megamoe::text::Tokenizer* var = ::megamoe::text::testing::deepseek_tokenizer();            \
  if (!var) {                                                                                          \
    GTEST_FAIL() << "MEGAMOE_TOKENIZER_JSON is not set: run `export MEGAMOE_TOKENIZER_JSON=$(bash "    \
                    "scripts/fetch_tokenizer.sh)` first (the DeepSeek-V4 tokenizer.json is fetched, " \
                    "not committed)";                                                                  \
  }
