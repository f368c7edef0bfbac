#include <cstdlib>
#include <cstring>

#include "kernels/moe/moe_launch.cuh"

namespace megamoe::cuda::kernels {

bool pdl_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("MEGAMOE_DISABLE_PDL");
    return v == nullptr || std::strcmp(v, "1") != 0;
  }();
  return enabled;
}

}  // namespace megamoe::cuda::kernels
