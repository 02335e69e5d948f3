/*
 * bounds/bounds.h -- what bounds.c needs of a level's loops (bounds/loops.h):
 * one table of function pointers per SIMD level, as the library's
 * kernels.h has. `ahead` is the prefetch distance in floats (0: none).
 */
#ifndef BOUNDS_H
#define BOUNDS_H

#include <stdint.h>

typedef struct {
    const char *name;
    double (*stats)(const float *x, long n, double K, long ahead);
    void (*norm)(const float *x, float *y, long n, int nt, long ahead);
    double (*grad)(const float *dy, const float *x, long n, double K, long ahead);
    void (*dx_pass)(const float *dy, const float *x, float *dx, long n, int nt, long ahead);
} bounds_loops;

extern const bounds_loops bounds_avx2, bounds_avx512;

/* Elements before y is 64-byte aligned, for the streaming stores. */
static inline long bounds_peel(const float *y, long n)
{
    long k = (long)((64 - (uintptr_t)y % 64) % 64 / sizeof(float));
    return k < n ? k : n;
}

#endif
