// The seed of the tests that draw random inputs (not of fixtures or goldens):
// MEGAMOE_TEST_SEED (a decimal uint64) or, unset, 0, under which every test
// keeps its historic fixed seed. scripts/gpu_model.sh and scripts/gpu_verify.sh
// run the suite a second time with MEGAMOE_TEST_SEED=$RANDOM.
//
//   MEGAMOE_SEED_TRACE();                    // once per test: failures print the seed
//   std::mt19937 rng(testing::seeded(3));    // 3 when MEGAMOE_TEST_SEED is unset or 0
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace megamoe::testing {

inline uint64_t test_seed() {
  static const uint64_t seed = [] {
    const char* env = std::getenv("MEGAMOE_TEST_SEED");
    if (env == nullptr || *env == '\0') return uint64_t{0};
    char* end = nullptr;
    const unsigned long long v = std::strtoull(env, &end, 10);
    if (*end != '\0' || *env == '-') {
      std::fprintf(stderr, "MEGAMOE_TEST_SEED=%s is not a decimal uint64\n", env);
      std::abort();
    }
    return static_cast<uint64_t>(v);
  }();
  return seed;
}

// The per-use seed: `base` itself under the default seed 0, otherwise base
// mixed with MEGAMOE_TEST_SEED (splitmix64), so distinct bases stay distinct.
inline uint32_t seeded(uint32_t base) {
  const uint64_t s = test_seed();
  if (s == 0) return base;
  uint64_t z = s * 0x9E3779B97F4A7C15ull + base;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return static_cast<uint32_t>(z ^ (z >> 31));
}

inline std::string seed_trace() {
  return "MEGAMOE_TEST_SEED=" + std::to_string(test_seed()) + " (set it to reproduce this run's random inputs)";
}

}  // namespace megamoe::testing

#define MEGAMOE_SEED_TRACE() SCOPED_TRACE(::megamoe::testing::seed_trace())
