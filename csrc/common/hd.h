// MP_HD marks the math that the CPU loops and the CUDA kernels share (csrc/<op>/<op>_math.h):
// __host__ __device__ under nvcc, plain inline C++ everywhere else. Headers that use it stay free
// of ATen so that nvcc compiles them without the torch headers.
#pragma once

#if defined(__CUDACC__)
#define MP_HD __host__ __device__ __forceinline__
#else
#define MP_HD inline
#endif
