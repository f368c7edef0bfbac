// The device basics: a buffer round-trips bytes through GPU memory.
#include <numeric>
#include <vector>

#include "backend/cuda/device.hpp"
#include "core/error.hpp"
#include "gpu_test.hpp"

namespace megamoe::cuda {
namespace {

TEST(Device, BufferRoundTrip) {
  MEGAMOE_REQUIRE_GPU();
  std::vector<int> host(1 << 16);
  std::iota(host.begin(), host.end(), -1000);
  DeviceBuffer buffer(host.size() * sizeof(int));
  buffer.upload(host.data(), host.size() * sizeof(int));
  std::vector<int> back(host.size(), 0);
  buffer.download(back.data(), back.size() * sizeof(int));
  EXPECT_EQ(back, host);
}

TEST(Device, UploadLargerThanBufferThrows) {
  MEGAMOE_REQUIRE_GPU();
  DeviceBuffer buffer(16);
  std::vector<char> host(32);
  EXPECT_THROW(buffer.upload(host.data(), host.size()), megamoe::Error);
}

}  // namespace
}  // namespace megamoe::cuda
