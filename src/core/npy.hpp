// Minimal NumPy .npy files (format version 1.0/2.0, C order, little-endian):
// write float32 arrays (logits, activation dumps) and read float32 / float64
// arrays back as float32 (goldens). Anything else is rejected with an error
// naming the file and the problem.
#pragma once

#include <filesystem>
#include <vector>

#include "core/tensor.hpp"

namespace megamoe {

struct NpyArray {
  Shape shape;
  std::vector<float> data;  // row-major, converted to float32
};

void write_npy_f32(const std::filesystem::path& path, const Shape& shape, const float* data);
NpyArray read_npy_f32(const std::filesystem::path& path);

}  // namespace megamoe
