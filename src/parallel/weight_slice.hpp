// One rank's part of a stored weight matrix, kept in its stored format (for
// loaders that upload weights as stored, e.g. the CUDA backend): a range of
// rows or of columns of a row-major [rows, cols] matrix of any element size,
// and for FP8 block-128 matrices the scale tiles that go with it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "parallel/shard.hpp"

namespace megamoe {

enum class SliceAxis { kRows, kCols };

// Rows or columns `range` of a row-major [rows, cols] matrix of `elem_bytes`-byte elements.
std::vector<uint8_t> slice_matrix(const void* data, int64_t rows, int64_t cols, size_t elem_bytes, SliceAxis axis,
                                  IndexRange range);

// The 128-wide scale tiles of `range` of an extent of `extent` rows (or
// columns) of an FP8 block-128 matrix, so that the slice is itself a block-128
// matrix with those scales: the range must start on a tile boundary or lie
// inside one tile; otherwise throws naming `name`.
IndexRange fp8_tile_range(IndexRange range, int64_t extent, const std::string& name);

// An FP8 block-128 matrix [rows, cols]: E4M3 codes and scales
// [ceil(rows/128), ceil(cols/128)] of `scale_bytes` each (1: E8M0, 4: fp32).
struct Fp8Slice {
  int64_t rows = 0, cols = 0;
  std::vector<uint8_t> codes, scales;
};
Fp8Slice slice_fp8_block128(const void* codes, const void* scales, size_t scale_bytes, int64_t rows, int64_t cols,
                            SliceAxis axis, IndexRange range, const std::string& name);

}  // namespace megamoe
