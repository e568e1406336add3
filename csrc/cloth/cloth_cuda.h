// Launcher of the CUDA cloth kernel (plain CUDA C++, no ATen): cloth_cuda.cu implements it,
// cloth_cuda_binding.cpp (ATen glue) allocates the buffers and calls it on the current stream.
#pragma once
#include <cuda_runtime.h>

#include "cloth/cloth_math.h"

namespace metaphys {
namespace cloth {

// g: inputs, zero-filled work planes (kWorkPlanes * N*(H+2)*(W+2) doubles) and grad set; loss: device [N].
cudaError_t launch_cloth_loss_grad(Args g, double* loss, cudaStream_t stream);

}  // namespace cloth
}  // namespace metaphys
