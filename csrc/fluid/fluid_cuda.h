// Launcher of the CUDA fluid kernel (plain CUDA C++, no ATen): fluid_cuda.cu implements it,
// fluid_cuda_binding.cpp (ATen glue) allocates the buffers and calls it on the current stream.
#pragma once
#include <cuda_runtime.h>

#include "fluid/fluid_math.h"

namespace metaphys {
namespace fluid {

// g: inputs, work planes (zero-filled, kWorkPlanes * N*(H+2)*(W+2) doubles) and grad set;
// means: device buffer of 2*N doubles (written: mean_a, mean_p); loss: device [N].
cudaError_t launch_fluid_loss_grad(Args g, double* means, double* loss, cudaStream_t stream);

}  // namespace fluid
}  // namespace metaphys
