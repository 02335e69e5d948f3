/*
 * targets/kernels_avx2.c -- kernels for CPUs with AVX2 and FMA (x86-64 only).
 *
 * The whole file is compiled for that target with a pragma rather than a
 * command-line flag, so the build needs no per-file flags and nothing else
 * is compiled for it; the dispatcher selects this table only after checking
 * the CPU (cpu.c). MSVC needs no pragma: it accepts the intrinsics as is.
 */
#if defined(__x86_64__) || defined(_M_X64)

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC target("avx2,fma")
#endif

#include "simd/avx2.h"
#define CBN_TABLE cbn_kernels_avx2
#include "targets/instantiate.h"

#if defined(__clang__)
#pragma clang attribute pop
#endif

#else
typedef int cbn_no_avx2_here; /* ISO C wants a non-empty file */
#endif
