/*
 * bounds.c -- how fast can a batch-norm kernel that keeps cbn's accuracy
 * rules be on this machine? Times each pass in its least form, as multiples
 * of the benchmark's floor (a copy of the same array), in one process,
 * interleaved, medians and quartiles over 15 rounds:
 *
 *   stats    one pass over x: sum(x - K) and sum((x - K)^2) accumulated in
 *            double, float widened on load -- the statistics pass with
 *            nothing else (no per-feature bookkeeping, no accuracy check);
 *   norm     y = (x - h)*s + t with ordinary stores;
 *   norm-nt  the same with streaming stores (what cbn uses for large outputs);
 *   train    stats then norm (norm-nt from 16 MiB, cbn's threshold), in the
 *            order the layout allows (see `layout` below);
 *   backward sum(dy), sum(dy*(x - K)) then dx = a*dy + b*(x - h) + c, in
 *            the same order.
 *
 * Arrays of 16 MiB and more are read with prefetches to L2 8 KiB ahead
 * within each contiguous piece (as cbn does): one core streams from memory
 * about 30% faster so, and a bound without them would not be one.
 *
 * Where a layout forces the two passes to be whole and in sequence -- rows
 * layouts (N x C, channels-last), where every feature's statistics need the
 * whole array before any output can be written, and NCHW features whose
 * slab is larger than L2 -- `train` and `backward` bound every kernel that
 * keeps its statistics in double from below: a target under them cannot be
 * met here without breaking that rule. For NCHW features that fit in cache
 * they are a guide, not a bound: cbn's kernels, which cut the passes into
 * cache-sized pieces, can beat them. Not part of the library or its build;
 * the benchmark proper is `python -m cbn bench`.
 *
 * The loops are written once against cbn's vector layer (src_c/simd/) in
 * bounds/loops.h and compiled per level by bounds/level_<name>.c with a
 * pragma (no -march flag); the best level the CPU has runs, AVX-512F or
 * AVX2 + FMA, unless CBN_SIMD=avx2 asks for the narrower one, as it does of
 * cbn. Build and run (x86-64) from the repository's root:
 *   gcc -O3 -Isrc_c -o /tmp/bounds tools/bounds/bounds.c \
 *       tools/bounds/level_avx2.c tools/bounds/level_avx512.c && /tmp/bounds
 * Arguments: OUTER,C,INNER layouts (a float32 array of OUTER x C x INNER,
 * features along C); without arguments, the benchmark's float32 cases.
 */
#define _POSIX_C_SOURCE 200112L
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bounds.h"

/* The level's loops in use (main). */
static const bounds_loops *loops;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double d = *(const double *)a - *(const double *)b;
    return (d > 0) - (d < 0);
}

enum { COPY, STATS, NORM, NORM_NT, TRAIN, BACKWARD, NK };
static const char *names[NK] = {"copy", "stats", "norm", "norm-nt", "train",
                                "backward"};

/* The layout of the benchmark's cases: outer x C x inner, features along C.
   train and backward go feature by feature over its `outer` runs of `inner`
   values when inner > 1 (NCHW), pass two right after pass one as cbn does,
   so the feature's values are still in cache; when inner == 1 (rows:
   N x C, channels-last) every feature needs the whole array read before
   any output can be written, so pass one runs over all of it, then pass
   two. */
typedef struct {
    long outer, C, inner;
} layout;

static void run(int k, const float *x, const float *dy, float *y, layout L,
                long ahead, volatile double *sink)
{
    const long n = L.outer * L.C * L.inner;
    const int nt = n * (long)sizeof(float) >= 16L << 20;
    const long runs = L.inner > 1 ? L.C : 1, len = L.inner > 1 ? L.inner : n,
               count = L.inner > 1 ? L.outer : 1;
    switch (k) {
    case COPY: memcpy(y, x, (size_t)n * sizeof(float)); break;
    case STATS: *sink += loops->stats(x, n, 0.25, ahead); break;
    case NORM: loops->norm(x, y, n, 0, ahead); break;
    case NORM_NT: loops->norm(x, y, n, 1, ahead); break;
    case TRAIN:
        for (long c = 0; c < runs; c++) {
            for (long o = 0; o < count; o++)
                *sink += loops->stats(x + (o * runs + c) * len, len, 0.25, ahead);
            for (long o = 0; o < count; o++)
                loops->norm(x + (o * runs + c) * len, y + (o * runs + c) * len, len, nt, ahead);
        }
        break;
    case BACKWARD:
        for (long c = 0; c < runs; c++) {
            for (long o = 0; o < count; o++)
                *sink += loops->grad(dy + (o * runs + c) * len, x + (o * runs + c) * len, len, 0.25,
                                     ahead);
            for (long o = 0; o < count; o++)
                loops->dx_pass(dy + (o * runs + c) * len, x + (o * runs + c) * len,
                               y + (o * runs + c) * len, len, nt, ahead);
        }
        break;
    }
}

static void measure(layout L)
{
    enum { ROUNDS = 15 };
    const long n = L.outer * L.C * L.inner;
    float *x = aligned_alloc(64, (size_t)n * sizeof(float));
    float *y = aligned_alloc(64, (size_t)n * sizeof(float));
    float *dy = aligned_alloc(64, (size_t)n * sizeof(float));
    volatile double sink = 0.0;
    double t[NK][ROUNDS], ratio[NK][ROUNDS];
    for (long i = 0; i < n; i++)
        x[i] = (float)(i % 1000) * 0.001f, y[i] = 0.0f, dy[i] = x[i] - 0.5f;
    const long ahead = n * (long)sizeof(float) >= 16L << 20 ? 8192 / (long)sizeof(float) : 0;
    /* the kinds interleaved within every round, each a loop of 10-40 ms
       (warm, like the benchmark's) */
    long reps = (long)(5e7 / (double)n) + 1;
    for (int r = -1; r < ROUNDS; r++) {
        for (int k = 0; k < NK; k++) {
            double t0 = now();
            for (long i = 0; i < reps; i++)
                run(k, x, dy, y, L, ahead, &sink);
            if (r >= 0)
                t[k][r] = (now() - t0) / (double)reps;
        }
    }
    for (int r = 0; r < ROUNDS; r++)
        for (int k = 0; k < NK; k++)
            ratio[k][r] = t[k][r] / t[COPY][r];
    qsort(t[COPY], ROUNDS, sizeof(double), cmp);
    printf("(%ld, %ld, %ld) float32, %.1f MB, %s loops: copy %.1f us (median)\n",
           L.outer, L.C, L.inner, n * 4e-6, loops->name, t[COPY][ROUNDS / 2] * 1e6);
    for (int k = 1; k < NK; k++) {
        qsort(ratio[k], ROUNDS, sizeof(double), cmp);
        printf("  %-8s %5.2fx the copy  (quartiles %.2f .. %.2f)\n", names[k],
               ratio[k][ROUNDS / 2], ratio[k][ROUNDS / 4], ratio[k][3 * ROUNDS / 4]);
    }
    free(x);
    free(y);
    free(dy);
}

int main(int argc, char **argv)
{
    const char *want = getenv("CBN_SIMD");
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && !(want && strcmp(want, "avx2") == 0))
        loops = &bounds_avx512;
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        loops = &bounds_avx2;
    else {
        fprintf(stderr, "bounds: needs AVX2 and FMA, or AVX-512F\n");
        return 1;
    }
    /* the benchmark's float32 cases, as (outer, C, inner) */
    static const layout cases[] = {
        {32, 64, 3136}, {32, 256, 196}, {8, 3, 50176}, {100352, 64, 1},
        {256, 1024, 1}, {4096, 64, 1}, {64, 64, 12544}};
    const int count = argc > 1 ? argc - 1 : (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < count; i++) {
        layout L = i < (int)(sizeof cases / sizeof cases[0]) ? cases[i] : cases[0];
        if (argc > 1 && sscanf(argv[i + 1], "%ld,%ld,%ld", &L.outer, &L.C, &L.inner) != 3) {
            fprintf(stderr, "bounds: want OUTER,C,INNER, got '%s'\n", argv[i + 1]);
            return 2;
        }
        measure(L);
    }
    return 0;
}
