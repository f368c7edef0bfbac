#include "parallel/weight_slice.hpp"

#include <cstring>

#include "core/error.hpp"

namespace megamoe {

std::vector<uint8_t> slice_matrix(const void* data, int64_t rows, int64_t cols, size_t elem_bytes, SliceAxis axis,
                                  IndexRange range) {
  const int64_t extent = axis == SliceAxis::kRows ? rows : cols;
  MEGAMOE_CHECK(range.begin >= 0 && range.begin <= range.end && range.end <= extent, "slice [", range.begin, ", ",
                range.end, ") of ", extent, (axis == SliceAxis::kRows ? " rows" : " columns"));
  const auto* src = static_cast<const uint8_t*>(data);
  const size_t row_bytes = static_cast<size_t>(cols) * elem_bytes;
  if (axis == SliceAxis::kRows) {
    const uint8_t* begin = src + static_cast<size_t>(range.begin) * row_bytes;
    return {begin, begin + static_cast<size_t>(range.size()) * row_bytes};
  }
  const size_t part = static_cast<size_t>(range.size()) * elem_bytes;
  std::vector<uint8_t> out(static_cast<size_t>(rows) * part);
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(out.data() + r * part, src + r * row_bytes + static_cast<size_t>(range.begin) * elem_bytes, part);
  return out;
}

IndexRange fp8_tile_range(IndexRange range, int64_t extent, const std::string& name) {
  constexpr int64_t kTile = 128;
  MEGAMOE_CHECK(range.size() > 0 && range.begin >= 0 && range.end <= extent, name, ": slice [", range.begin, ", ",
                range.end, ") of ", extent);
  const int64_t first = range.begin / kTile, last = (range.end - 1) / kTile;
  // A slice that starts mid-tile would need new scales for tiles that mix two stored ones.
  MEGAMOE_CHECK(range.begin % kTile == 0 || first == last, name, ": this rank's slice [", range.begin, ", ",
                range.end, ") of an FP8 block-128 dimension of ", extent,
                " starts inside a 128-wide scale tile and spans two; the rank count must split it on 128 boundaries");
  return {first, last + 1};
}

Fp8Slice slice_fp8_block128(const void* codes, const void* scales, size_t scale_bytes, int64_t rows, int64_t cols,
                            SliceAxis axis, IndexRange range, const std::string& name) {
  constexpr int64_t kTile = 128;
  const int64_t tile_rows = (rows + kTile - 1) / kTile, tile_cols = (cols + kTile - 1) / kTile;
  const IndexRange tiles = fp8_tile_range(range, axis == SliceAxis::kRows ? rows : cols, name);
  Fp8Slice out;
  out.rows = axis == SliceAxis::kRows ? range.size() : rows;
  out.cols = axis == SliceAxis::kCols ? range.size() : cols;
  out.codes = slice_matrix(codes, rows, cols, 1, axis, range);
  out.scales = slice_matrix(scales, tile_rows, tile_cols, scale_bytes, axis, tiles);
  return out;
}

}  // namespace megamoe
