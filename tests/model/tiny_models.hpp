// Shared helpers for the model tests: the tiny checkpoints of tests/data made
// by tools/make_tiny_models.py (transformers fp64 goldens) and comparisons.
#pragma once

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/npy.hpp"

namespace megamoe::testing {

inline std::filesystem::path tiny_model_dir(const std::string& name) {
  return std::filesystem::path(MEGAMOE_TEST_DATA_DIR) / name;
}

inline std::vector<int32_t> golden_ids(const std::string& name) {
  std::ifstream in(tiny_model_dir(name) / "golden_ids.json");
  return nlohmann::json::parse(in).get<std::vector<int32_t>>();
}

inline NpyArray golden_logits(const std::string& name) { return read_npy_f32(tiny_model_dir(name) / "golden_logits.npy"); }

inline float max_abs(const std::vector<float>& v) {
  float m = 0.f;
  for (float x : v) m = std::max(m, std::fabs(x));
  return m;
}

inline float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = a.size() == b.size() ? 0.f : INFINITY;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// ||a - b|| / ||b|| in double; infinity when the sizes differ.
inline double relative_l2(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

}  // namespace megamoe::testing
