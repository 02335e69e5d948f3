/*
 * core/hints.h -- compiler hints the kernels use: prefetches (which never
 * fault) and the mark of a cold path.
 */
#ifndef CBN_CORE_HINTS_H
#define CBN_CORE_HINTS_H

#include <stdint.h>


/* Hints to fetch the cache line at p, to read it or (_W) to write it; they
   never fault. */
#if defined(__GNUC__) || defined(__clang__)
#define CBN_PREFETCH(p) __builtin_prefetch(p)
#define CBN_PREFETCH_W(p) __builtin_prefetch(p, 1)
#define CBN_PREFETCH_L2(p) __builtin_prefetch(p, 0, 2)
#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
#include <xmmintrin.h>
#define CBN_PREFETCH(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)
#define CBN_PREFETCH_W(p) CBN_PREFETCH(p)
#define CBN_PREFETCH_L2(p) _mm_prefetch((const char *)(p), _MM_HINT_T1)
#else
#define CBN_PREFETCH(p) ((void)0)
#define CBN_PREFETCH_W(p) ((void)0)
#define CBN_PREFETCH_L2(p) ((void)0)
#endif


/* Marks a cold path's function: out of line, so that the hot function that
   tests for it stays as small (and as inlined) as it was without it. */
#if defined(__GNUC__) || defined(__clang__)
#define CBN_COLD __attribute__((cold, noinline))
#elif defined(_MSC_VER)
#define CBN_COLD __declspec(noinline)
#else
#define CBN_COLD
#endif

/* Marks a loop body written once and specialized by its callers: inlined
   into each, so that the constant arguments they pass (a NULL pointer, a
   flag) take the tests on them out of the loop. */
#if defined(__GNUC__) || defined(__clang__)
#define CBN_SPECIALIZED static inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define CBN_SPECIALIZED static __forceinline
#else
#define CBN_SPECIALIZED static inline
#endif

#endif /* CBN_CORE_HINTS_H */
