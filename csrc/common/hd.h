// MP_HD marks the math that the CPU loops and the CUDA kernels share (csrc/<op>/<op>_math.h):
// __host__ __device__ under nvcc, plain inline C++ everywhere else. Headers that use it stay free
// of ATen so that nvcc compiles them without the torch headers.
#pragma once

#define MP_PRAGMA(x) _Pragma(#x)
#if defined(__CUDACC__)
#define MP_HD __host__ __device__ __forceinline__
#define MP_HDI __host__ __device__ __forceinline__
#else
#define MP_HD inline
// MP_HDI: small arithmetic (vector and dual-number operators) inlined on the host too; GCC left the
// dual-number operators of cloth_hessian as calls. MP_UNROLL(n): unroll a short loop fully, so that
// index helpers fold to constants (cloth_hessian's gather: 25 % faster). Same arithmetic, same order.
#define MP_HDI inline __attribute__((always_inline))
#endif
#if defined(__CUDA_ARCH__)  // nvcc's device pass
#define MP_UNROLL(n) MP_PRAGMA(unroll n)
#elif defined(__CUDACC__)    // nvcc's host pass: its front end knows neither pragma's host spelling
#define MP_UNROLL(n)
#else
#define MP_UNROLL(n) MP_PRAGMA(GCC unroll n)
#endif
