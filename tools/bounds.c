/*
 * bounds.c -- how fast can any batch-norm kernel with cbn's accuracy rules be
 * on this machine? Times the least work each pass must do, as multiples of
 * the benchmark's floor (a copy of the same array), in one process:
 *
 *   stats    one pass over x: sum(x - K) and sum((x - K)^2) accumulated in
 *            double, float widened on load -- the statistics pass with
 *            nothing else (no per-feature bookkeeping, no accuracy check);
 *   norm     y = (x - h)*s + t with ordinary stores;
 *   norm-nt  the same with streaming stores (what cbn uses for large outputs);
 *   train    stats then norm (norm-nt from 16 MiB, cbn's threshold) over
 *            the whole array: a layout whose
 *            statistics need the whole array before any output can be written
 *            (rows layouts larger than the cache, or one NCHW feature's slab
 *            larger than L2) pays this, at least;
 *   backward sum(dy), sum(dy*(x - K)) then dx = a*dy + b*(x - h) + c.
 *
 * A kernel cannot beat these, so a target below them cannot be met here
 * without breaking a rule (statistics in double). Not part of the library or
 * its build; the benchmark proper is `python -m cbn bench`.
 *
 * Build and run (x86-64 with AVX-512F; the loops are compiled for it with a
 * target attribute, no -march flag):
 *   gcc -O2 -o /tmp/bounds tools/bounds.c && /tmp/bounds
 * Arguments: N[:SLAB], an array size in float32 elements and the slab size
 * of the two-pass kinds (default: the whole array). Without arguments, the
 * benchmark's 2-D (256,1024) case, NCHW (32,64,56,56) and the 205 MB NCHW
 * (64,64,112,112), with their features' slabs.
 */
#define _POSIX_C_SOURCE 200112L
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TARGET __attribute__((target("avx512f")))

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* sum(x - K), sum((x - K)^2) in double: two widened vectors per 16 floats,
   four independent accumulator pairs (latency hidden, as in cbn's loops). */
TARGET static double stats(const float *x, long n, double K)
{
    __m512d k = _mm512_set1_pd(K), a[4], q[4];
    for (int i = 0; i < 4; i++)
        a[i] = q[i] = _mm512_setzero_pd();
    for (long i = 0; i + 32 <= n; i += 32) {
        for (int u = 0; u < 4; u++) {
            __m512d d = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_load_ps(x + i + 8 * u)), k);
            a[u] = _mm512_add_pd(a[u], d);
            q[u] = _mm512_fmadd_pd(d, d, q[u]);
        }
    }
    __m512d s = _mm512_add_pd(_mm512_add_pd(a[0], a[1]), _mm512_add_pd(a[2], a[3]));
    __m512d t = _mm512_add_pd(_mm512_add_pd(q[0], q[1]), _mm512_add_pd(q[2], q[3]));
    return _mm512_reduce_add_pd(s) + _mm512_reduce_add_pd(t);
}

TARGET static void norm(const float *x, float *y, long n, int nt)
{
    __m512 h = _mm512_set1_ps(0.5f), s = _mm512_set1_ps(1.5f), t = _mm512_set1_ps(2.0f);
    if (nt) {
        for (long i = 0; i + 16 <= n; i += 16)
            _mm512_stream_ps(y + i, _mm512_fmadd_ps(_mm512_sub_ps(_mm512_load_ps(x + i), h), s, t));
        _mm_sfence();
    } else {
        for (long i = 0; i + 16 <= n; i += 16)
            _mm512_store_ps(y + i, _mm512_fmadd_ps(_mm512_sub_ps(_mm512_load_ps(x + i), h), s, t));
    }
}

/* sum(dy), sum(dy*(x - K)) in double */
TARGET static double grad(const float *dy, const float *x, long n, double K)
{
    __m512d k = _mm512_set1_pd(K), a[2], q[2];
    for (int i = 0; i < 2; i++)
        a[i] = q[i] = _mm512_setzero_pd();
    for (long i = 0; i + 16 <= n; i += 16) {
        for (int u = 0; u < 2; u++) {
            __m512d g = _mm512_cvtps_pd(_mm256_load_ps(dy + i + 8 * u));
            __m512d d = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_load_ps(x + i + 8 * u)), k);
            a[u] = _mm512_add_pd(a[u], g);
            q[u] = _mm512_fmadd_pd(g, d, q[u]);
        }
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(a[0], a[1])) +
           _mm512_reduce_add_pd(_mm512_add_pd(q[0], q[1]));
}

/* dx = a*dy + (b*(x - h) + c) */
TARGET static void dx_pass(const float *dy, const float *x, float *dx, long n, int nt)
{
    __m512 a = _mm512_set1_ps(0.5f), b = _mm512_set1_ps(1.5f),
           c = _mm512_set1_ps(2.0f), h = _mm512_set1_ps(0.25f);
    for (long i = 0; i + 16 <= n; i += 16) {
        __m512 v = _mm512_fmadd_ps(a, _mm512_load_ps(dy + i),
                                   _mm512_fmadd_ps(b, _mm512_sub_ps(_mm512_load_ps(x + i), h), c));
        if (nt)
            _mm512_stream_ps(dx + i, v);
        else
            _mm512_store_ps(dx + i, v);
    }
    if (nt)
        _mm_sfence();
}

static int cmp(const void *a, const void *b)
{
    double d = *(const double *)a - *(const double *)b;
    return (d > 0) - (d < 0);
}

enum { COPY, STATS, NORM, NORM_NT, TRAIN, BACKWARD, NK };
static const char *names[NK] = {"copy", "stats", "norm", "norm-nt", "train",
                                "backward"};

/* train and backward go slab by slab: a slab's pass two follows its pass one,
   as cbn does one NCHW feature at a time (slab = the feature's values) */
static void run(int k, const float *x, const float *dy, float *y, long n,
                long slab, volatile double *sink)
{
    const int nt = n * (long)sizeof(float) >= 16L << 20;
    switch (k) {
    case COPY: memcpy(y, x, (size_t)n * sizeof(float)); break;
    case STATS: *sink += stats(x, n, 0.25); break;
    case NORM: norm(x, y, n, 0); break;
    case NORM_NT: norm(x, y, n, 1); break;
    case TRAIN:
        for (long i = 0; i < n; i += slab) {
            long w = n - i < slab ? n - i : slab;
            *sink += stats(x + i, w, 0.25);
            norm(x + i, y + i, w, nt);
        }
        break;
    case BACKWARD:
        for (long i = 0; i < n; i += slab) {
            long w = n - i < slab ? n - i : slab;
            *sink += grad(dy + i, x + i, w, 0.25);
            dx_pass(dy + i, x + i, y + i, w, nt);
        }
        break;
    }
}

static void measure(long n, long slab)
{
    enum { ROUNDS = 15 };
    float *x = aligned_alloc(64, (size_t)n * sizeof(float));
    float *y = aligned_alloc(64, (size_t)n * sizeof(float));
    float *dy = aligned_alloc(64, (size_t)n * sizeof(float));
    volatile double sink = 0.0;
    double t[NK][ROUNDS], ratio[NK][ROUNDS];
    for (long i = 0; i < n; i++)
        x[i] = (float)(i % 1000) * 0.001f, y[i] = 0.0f, dy[i] = x[i] - 0.5f;
    /* loops of about 20 ms, the kinds interleaved within every round */
    long reps = (long)(5e6 / (double)n) + 1;
    for (int r = -1; r < ROUNDS; r++) {
        for (int k = 0; k < NK; k++) {
            double t0 = now();
            for (long i = 0; i < reps; i++)
                run(k, x, dy, y, n, slab, &sink);
            if (r >= 0)
                t[k][r] = (now() - t0) / (double)reps;
        }
    }
    for (int r = 0; r < ROUNDS; r++)
        for (int k = 0; k < NK; k++)
            ratio[k][r] = t[k][r] / t[COPY][r];
    qsort(t[COPY], ROUNDS, sizeof(double), cmp);
    printf("%ld float32 (%.1f MB), slabs of %ld: copy %.1f us (median)\n", n,
           n * 4e-6, slab, t[COPY][ROUNDS / 2] * 1e6);
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
    if (!__builtin_cpu_supports("avx512f")) {
        fprintf(stderr, "bounds: needs AVX-512F\n");
        return 1;
    }
    static const char *const defaults[] = {"262144", "6422528:100352",
                                           "51380224:802816"};
    const int count = argc > 1 ? argc - 1 : 3;
    for (int i = 0; i < count; i++) {
        const char *arg = argc > 1 ? argv[i + 1] : defaults[i];
        const char *colon = strchr(arg, ':');
        long n = atol(arg);
        measure(n, colon ? atol(colon + 1) : n);
    }
    return 0;
}
