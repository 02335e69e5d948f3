/*
 * targets/kernels_baseline.c -- kernels for the instruction set every CPU
 * of the target architecture has: SSE2 on x86-64, NEON on arm64. Elsewhere
 * this level is the scalar code.
 */
#if defined(__x86_64__) || defined(_M_X64)
#include "simd/sse2.h"
#elif defined(__aarch64__) || defined(_M_ARM64)
#include "simd/neon.h"
#else
#include "simd/scalar.h"
#endif
#define CBN_TABLE cbn_kernels_baseline
#include "targets/instantiate.h"
