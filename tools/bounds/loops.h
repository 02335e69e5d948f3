/*
 * bounds/loops.h -- the least-form loops of bounds.c, written once against
 * cbn's vector layer (src_c/simd/) and stamped out per level by
 * bounds/level_<name>.c, as the library's targets/ do with its kernels. The
 * including file has included one simd/<level>.h and defines BOUNDS_TABLE.
 *
 * Statistics are summed in double, four independent accumulator pairs (the
 * latency hidden, as in cbn's loops); float data is widened on load.
 * Each loop handles whole vectors only and leaves a short tail undone: it
 * is a timing probe, not a kernel.
 */
#include <stdint.h>

#include "bounds.h"

/* Floats a step of the double-accumulating loops reads: four vd's worth. */
#define STEP (4 * VD_N)

/* Prefetch the line `ahead` floats past p[i] when it lies before p[n]; the
   constant-trip loops below unroll to one test per line. */
static inline void ahead_lines(const float *p, long i, long n, long ahead)
{
    for (long o = 0; o < STEP; o += 64 / (long)sizeof(float))
        if (ahead && i + o + ahead < n)
            _mm_prefetch((const char *)(p + i + o + ahead), _MM_HINT_T1);
}

static inline double hsum4(const vd a[4])
{
    return vd_hsum(vd_add(vd_add(a[0], a[1]), vd_add(a[2], a[3])));
}

/* sum(x - K) + sum((x - K)^2) */
static double stats(const float *x, long n, double K, long ahead)
{
    vd k = vd_set1(K), a[4], q[4], d[4];
    for (int u = 0; u < 4; u++)
        a[u] = q[u] = vd_zero();
    for (long i = 0; i + STEP <= n; i += STEP) {
        ahead_lines(x, i, n, ahead);
        vd_load2_f32(x + i, &d[0], &d[1]);
        vd_load2_f32(x + i + 2 * VD_N, &d[2], &d[3]);
        for (int u = 0; u < 4; u++) {
            d[u] = vd_sub(d[u], k);
            a[u] = vd_add(a[u], d[u]);
            q[u] = vd_fmadd(d[u], d[u], q[u]);
        }
    }
    return hsum4(a) + hsum4(q);
}

/* y = (x - h)*s + t, streamed (nt) or with ordinary stores */
static void norm(const float *x, float *y, long n, int nt, long ahead)
{
    vf h = vf_set1(0.5f), s = vf_set1(1.5f), t = vf_set1(2.0f);
    long i = 0;
    if (nt)
        for (long p = bounds_peel(y, n); i < p; i++)
            y[i] = (x[i] - 0.5f) * 1.5f + 2.0f;
    for (; i + VF_N <= n; i += VF_N) {
        if (ahead && i + ahead < n && i % 16 == 0)
            _mm_prefetch((const char *)(x + i + ahead), _MM_HINT_T1);
        vf v = vf_fmadd(vf_sub(vf_loadu(x + i), h), s, t);
        if (nt)
            vf_stream(y + i, v);
        else
            vf_storeu(y + i, v);
    }
    if (nt)
        stream_fence();
}

/* sum(dy) + sum(dy*(x - K)) */
static double grad(const float *dy, const float *x, long n, double K, long ahead)
{
    vd k = vd_set1(K), a[4], q[4], g[4], d[4];
    for (int u = 0; u < 4; u++)
        a[u] = q[u] = vd_zero();
    for (long i = 0; i + STEP <= n; i += STEP) {
        ahead_lines(dy, i, n, ahead);
        ahead_lines(x, i, n, ahead);
        vd_load2_f32(dy + i, &g[0], &g[1]);
        vd_load2_f32(dy + i + 2 * VD_N, &g[2], &g[3]);
        vd_load2_f32(x + i, &d[0], &d[1]);
        vd_load2_f32(x + i + 2 * VD_N, &d[2], &d[3]);
        for (int u = 0; u < 4; u++) {
            a[u] = vd_add(a[u], g[u]);
            q[u] = vd_fmadd(g[u], vd_sub(d[u], k), q[u]);
        }
    }
    return hsum4(a) + hsum4(q);
}

/* dx = a*dy + (b*(x - h) + c) */
static void dx_pass(const float *dy, const float *x, float *dx, long n, int nt, long ahead)
{
    vf a = vf_set1(0.5f), b = vf_set1(1.5f), c = vf_set1(2.0f), h = vf_set1(0.25f);
    long i = 0;
    if (nt)
        for (long p = bounds_peel(dx, n); i < p; i++)
            dx[i] = 0.5f * dy[i] + (1.5f * (x[i] - 0.25f) + 2.0f);
    for (; i + VF_N <= n; i += VF_N) {
        if (ahead && i + ahead < n && i % 16 == 0) {
            _mm_prefetch((const char *)(dy + i + ahead), _MM_HINT_T1);
            _mm_prefetch((const char *)(x + i + ahead), _MM_HINT_T1);
        }
        vf v = vf_fmadd(a, vf_loadu(dy + i), vf_fmadd(b, vf_sub(vf_loadu(x + i), h), c));
        if (nt)
            vf_stream(dx + i, v);
        else
            vf_storeu(dx + i, v);
    }
    if (nt)
        stream_fence();
}

const bounds_loops BOUNDS_TABLE = {CBN_ISA_NAME, stats, norm, grad, dx_pass};
