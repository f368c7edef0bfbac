// Shared by every GPU test: skip, saying so, where no CUDA device exists.
// A broken CUDA runtime on a GPU machine makes device_count() throw, so the
// test fails loudly instead of skipping.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "backend/cuda/device.hpp"

#define MEGAMOE_REQUIRE_GPU()                                                 \
  do {                                                                        \
    if (::megamoe::cuda::device_count() == 0)                                 \
      GTEST_SKIP() << "skipped: no CUDA device on this machine (gpu test)";   \
  } while (0)

namespace megamoe::testing {

// A device copy of v (at least 4 bytes, so an empty vector still gives a valid pointer).
template <typename T>
cuda::DeviceBuffer to_device(const std::vector<T>& v) {
  cuda::DeviceBuffer b(std::max<size_t>(v.size() * sizeof(T), 4));
  if (!v.empty()) b.upload(v.data(), v.size() * sizeof(T));
  return b;
}

// The first n elements of b, read on stream s.
template <typename T>
std::vector<T> from_device(const cuda::DeviceBuffer& b, size_t n, const cuda::Stream& s) {
  std::vector<T> v(n);
  b.download(v.data(), n * sizeof(T), s.get());
  return v;
}

// n values mean + stddev * N(0, 1).
inline std::vector<float> normal(size_t n, std::mt19937_64& rng, float mean, float stddev) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = mean + stddev * d(rng);
  return v;
}

}  // namespace megamoe::testing
