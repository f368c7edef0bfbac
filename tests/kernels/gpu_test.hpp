// Shared by every GPU test: skip, saying so, where no CUDA device exists.
#pragma once

#include <gtest/gtest.h>

#include "backend/cuda/device.hpp"

#define MEGAMOE_REQUIRE_GPU()                                                 \
  do {                                                                        \
    if (::megamoe::cuda::device_count() == 0)                                 \
      GTEST_SKIP() << "skipped: no CUDA device on this machine (gpu test)";   \
  } while (0)
