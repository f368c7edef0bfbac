// Shared by every GPU test: skip, saying so, where no CUDA device exists.
// A broken CUDA runtime on a GPU machine makes device_count() throw, so the
// test fails loudly instead of skipping.
#pragma once

#include <gtest/gtest.h>

#include "backend/cuda/device.hpp"

#define MEGAMOE_REQUIRE_GPU()                                                 \
  do {                                                                        \
    if (::megamoe::cuda::device_count() == 0)                                 \
      GTEST_SKIP() << "skipped: no CUDA device on this machine (gpu test)";   \
  } while (0)
