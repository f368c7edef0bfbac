// Interleaved tail RoPE (dsv4-architecture.md §5.1): only the trailing d_r
// channels of a vector rotate, as adjacent pairs (v[d-d_r+2i], v[d-d_r+2i+1])
// by angle p * omega_i. Two tables: "main" (plain, SWA layers) and "compress"
// (YaRN frequency interpolation, no amplitude scaling; CSA/HCA layers).
#pragma once

#include <cstdint>
#include <vector>

#include "core/model_config.hpp"

namespace megamoe::dsv4 {

class RopeTable {
 public:
  RopeTable() = default;
  RopeTable(const RopeParams& params, int64_t rope_dim);

  int64_t rope_dim() const { return rope_dim_; }
  const std::vector<float>& frequencies() const { return omega_; }  // omega_i, i < d_r/2

  // Rotates v[dim - d_r, dim) in place at position pos (inverse: by -pos).
  void apply(float* v, int64_t dim, int64_t pos, bool inverse = false) const;

 private:
  int64_t rope_dim_ = 0;
  std::vector<float> omega_;
};

}  // namespace megamoe::dsv4
