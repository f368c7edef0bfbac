// make_backend: the one place that knows which backends are built.
#include <algorithm>
#include <string>

#include "backend/backend.hpp"
#include "backend/cpu/cpu_backend.hpp"
#include "core/checkpoint_validation.hpp"
#include "core/error.hpp"
#include "parallel/thread_communicator.hpp"
#ifdef MEGAMOE_HAVE_CUDA
#include "backend/cuda/cuda_backend.hpp"
#include "backend/cuda/device.hpp"
#include "backend/cuda/nccl_communicator.hpp"
#include "backend/cuda/staged_communicator.hpp"
#endif

namespace megamoe {

std::string_view device_kind_name(DeviceKind kind) { return kind == DeviceKind::kCpu ? "cpu" : "cuda"; }

std::string_view moe_activation_format_name(MoeActivationFormat format) {
  return format == MoeActivationFormat::kW4A4 ? "w4a4" : "w4a16";
}

DeviceKind parse_device_kind(const std::string& text) {
  if (text == "cpu") return DeviceKind::kCpu;
  if (text == "cuda") return DeviceKind::kCuda;
  MEGAMOE_CHECK(text == "auto", "--device '", text, "' is not one of cpu, cuda, auto");
#ifdef MEGAMOE_HAVE_CUDA
  return cuda::device_count() > 0 ? DeviceKind::kCuda : DeviceKind::kCpu;
#else
  return DeviceKind::kCpu;
#endif
}

namespace {

class ThreadCommunicatorFactory : public CommunicatorFactory {
 public:
  explicit ThreadCommunicatorFactory(int64_t ranks) : comms_(make_thread_communicators(ranks)) {}
  std::shared_ptr<Communicator> connect(int64_t rank, int) override { return comms_.at(static_cast<size_t>(rank)); }
  void abort() override { comms_.front()->abort(); }  // one group: aborting one aborts all

 private:
  std::vector<std::shared_ptr<Communicator>> comms_;
};

}  // namespace

std::unique_ptr<CommunicatorFactory> make_communicator_factory(DeviceKind kind, const std::vector<int>& devices) {
  const auto ranks = static_cast<int64_t>(devices.size());
  if (kind == DeviceKind::kCpu) return std::make_unique<ThreadCommunicatorFactory>(ranks);
#ifdef MEGAMOE_HAVE_CUDA
  const int count = cuda::device_count();
  for (int d : devices)
    MEGAMOE_CHECK(d >= 0 && d < count, "--devices: device ", d, " does not exist (this machine has ", count,
                  " CUDA devices)");
  // Every rank on one device: NCCL refuses that, the host-staged communicator
  // serves it (tests and functional runs; its steps are not graph-captured).
  const bool one_device =
      ranks > 1 && std::all_of(devices.begin(), devices.end(), [&](int d) { return d == devices.front(); });
  if (one_device) return cuda::make_staged_communicator_factory(ranks);
  for (size_t i = 0; i < devices.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      MEGAMOE_CHECK(devices[i] != devices[j], "ranks on devices: device ", devices[i],
                    " is used twice; give every rank its own device (NCCL) or put all on one (host-staged)");
  return cuda::make_nccl_communicator_factory(ranks);
#else
  MEGAMOE_THROW("--devices: this build of megamoe has no CUDA backend (built without nvcc); --ranks runs the CPU "
                "backend over threads");
#endif
}

std::unique_ptr<Backend> make_backend(DeviceKind kind, const Checkpoint& checkpoint, const BackendOptions& options) {
  // The validation `megamoe inspect` runs: shapes against config.json, formats, NaN/Inf.
  require_valid_checkpoint(checkpoint);
  if (kind == DeviceKind::kCpu) return std::make_unique<cpu::CpuBackend>(checkpoint, options);
#ifdef MEGAMOE_HAVE_CUDA
  MEGAMOE_CHECK(cuda::device_count() > 0, "--device cuda: no CUDA device on this machine");
  return cuda::make_cuda_backend(checkpoint, options);
#else
  MEGAMOE_THROW("--device cuda: this build of megamoe has no CUDA backend (built without nvcc)");
#endif
}

}  // namespace megamoe
