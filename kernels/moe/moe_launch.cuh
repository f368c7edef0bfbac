// Programmatic dependent launch (PDL, sm_90) for the MoE stages. A kernel
// launched with launch_dependent() may start while its predecessor in the
// stream is still running, once every block of the predecessor has executed
// pdl_launch_dependents() (or exited); it must call pdl_wait() before it reads
// anything the predecessor (or an earlier kernel) writes. pdl_wait() returns
// when the predecessor grid has completed and its memory is visible; without
// the launch attribute it is a no-op, so kernels stay correct either way.
// This hides the launch gap between the stages, and lets GEMM1 run the shared
// expert (which needs no routing) while the router still runs. Stream capture
// keeps the dependencies as programmatic graph edges.
#pragma once

#include <cuda_runtime.h>

namespace megamoe::cuda::kernels {

__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void pdl_launch_dependents() { asm volatile("griddepcontrol.launch_dependents;"); }

// False when the environment sets MEGAMOE_DISABLE_PDL=1 (read once): plain
// stream-ordered launches, for A/B measurements and tools without PDL support.
bool pdl_enabled();

// Launches kernel<<<grid, block, smem, stream>>>(args...) as a programmatic
// dependent of the previous work in the stream. Errors surface through
// cudaGetLastError like a <<<>>> launch.
template <typename... KernelArgs, typename... Args>
void launch_dependent(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                      Args&&... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid, config.blockDim = block, config.dynamicSmemBytes = smem, config.stream = stream;
  config.attrs = attr, config.numAttrs = pdl_enabled() ? 1 : 0;
  (void)cudaLaunchKernelEx(&config, kernel, static_cast<KernelArgs>(args)...);
}

}  // namespace megamoe::cuda::kernels
