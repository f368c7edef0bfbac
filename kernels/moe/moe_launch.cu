#include <cstdlib>
#include <cstring>

#include "kernels/moe/moe_launch.cuh"
#include "kernels/moe/moe_routing_multi.hpp"

namespace megamoe::cuda::kernels {

bool pdl_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("MEGAMOE_DISABLE_PDL");
    return v == nullptr || std::strcmp(v, "1") != 0;
  }();
  return enabled;
}

bool multi_block_routing_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("MEGAMOE_MOE_ROUTING");
    return v == nullptr || std::strcmp(v, "single") != 0;
  }();
  return enabled;
}

}  // namespace megamoe::cuda::kernels
