/*
 * dispatch.c -- the public entry points of cbn.h.
 *
 * Each checks its arguments once, handles the empty cases, and calls the
 * active kernel table, so kernels only ever see valid blocks.
 */
#include <math.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cbn.h"
#include "kernels.h"
#include "core/parallel.h"

/* ------------------------------------------------------ configuration --- */

static const cbn_kernel_table *const tables[] = {
    &cbn_kernels_scalar,
    &cbn_kernels_baseline,
#ifdef CBN_HAVE_X86_LEVELS
    &cbn_kernels_avx2,
    &cbn_kernels_avx512,
#endif
};
#define NLEVELS ((int)(sizeof(tables) / sizeof(tables[0])))

/* Each pass's table: NULL until first use, then the profile's choice (or
   the forced level). Concurrent first calls all store the same pointers,
   and a pointer once stored is to a constant table, so a call that sees one
   can use it. */
static const cbn_kernel_table *pass_table[CBN_NPASSES];
static int pass_level[CBN_NPASSES];
/* -1 until the first choice, stored last (release) so that a thread that
   reads it set (acquire) also sees every pass's table. */
static int profile = -1;
static int num_threads_override = 0;
#if defined(__GNUC__) || defined(__clang__)
#define PUBLISH(var, v) __atomic_store_n(&(var), (v), __ATOMIC_RELEASE)
#define ACQUIRE(var) __atomic_load_n(&(var), __ATOMIC_ACQUIRE)
#else  /* MSVC on x86-64: ordinary stores and loads of aligned ints are ordered */
#define PUBLISH(var, v) ((var) = (v))
#define ACQUIRE(var) (var)
#endif

int cbn_simd_supported(int level)
{
    switch (level) {
    case CBN_SIMD_SCALAR:
    case CBN_SIMD_BASELINE:
        return 1;
#ifdef CBN_HAVE_X86_LEVELS
    case CBN_SIMD_AVX2:
        return cbn_cpu_has_avx2_fma();
    case CBN_SIMD_AVX512:
        return cbn_cpu_has_avx512f();
#endif
    default:
        return 0;
    }
}

int cbn_simd_best(void)
{
    int level = NLEVELS - 1;
    while (!cbn_simd_supported(level))
        level--;
    return level;
}

/* A profile's level for a pass, lowered to what this CPU has. */
static int profile_level(int prof, int pass)
{
    int level = cbn_profiles[prof].level[pass];
    if (level < 0 || level >= NLEVELS)
        level = NLEVELS - 1;
    while (!cbn_simd_supported(level))
        level--;
    return level;
}

static void set_pass(int pass, int level)
{
    pass_level[pass] = level;
    pass_table[pass] = tables[level];
}

int cbn_profile_count(void) { return cbn_nprofiles; }

const char *cbn_profile_name(int prof)
{
    return prof >= 0 && prof < cbn_nprofiles ? cbn_profiles[prof].name : NULL;
}

int cbn_profile_detected(void)
{
    static int known = -1;
    if (known < 0)
        known = cbn_profile_for(cbn_cpu_identify());
    return known;
}

int cbn_profile_set(int prof)
{
    if (prof < 0 || prof >= cbn_nprofiles)
        return CBN_ERR_ARG;
    cbn_along_max_bytes = cbn_profiles[prof].along_max_bytes;
    for (int p = 0; p < CBN_NPASSES; p++)
        set_pass(p, profile_level(prof, p));
    PUBLISH(profile, prof);
    return CBN_OK;
}

int cbn_profile_get(void)
{
    int prof = ACQUIRE(profile);
    if (prof < 0) {
        cbn_profile_set(cbn_profile_detected());
        prof = profile;
    }
    return prof;
}

void cbn_cpu_info(char vendor[13], int *family, int *model)
{
    cbn_cpu_id id = cbn_cpu_identify();
    memcpy(vendor, id.vendor, 13);
    *family = id.family;
    *model = id.model;
}

const char *cbn_pass_name(int pass)
{
    static const char *const names[CBN_NPASSES] = {"train", "infer", "backward"};
    return pass >= 0 && pass < CBN_NPASSES ? names[pass] : NULL;
}

int cbn_simd_set_pass(int pass, int level)
{
    if (pass < 0 || pass >= CBN_NPASSES || !cbn_simd_supported(level))
        return CBN_ERR_ARG;
    cbn_profile_get();  /* the other passes keep the profile's levels */
    set_pass(pass, level);
    return CBN_OK;
}

int cbn_simd_set(int level)
{
    if (!cbn_simd_supported(level))
        return CBN_ERR_ARG;
    for (int p = 0; p < CBN_NPASSES; p++)
        cbn_simd_set_pass(p, level);
    return CBN_OK;
}

int cbn_simd_get_pass(int pass)
{
    if (pass < 0 || pass >= CBN_NPASSES)
        return -1;
    cbn_profile_get();
    return pass_level[pass];
}

int cbn_simd_get(void) { return cbn_simd_get_pass(CBN_PASS_TRAIN); }

const char *cbn_simd_name(int level)
{
    return level >= 0 && level < NLEVELS ? tables[level]->name : NULL;
}

/* The table of `pass`, choosing the profile on first use. */
static const cbn_kernel_table *kernels(int pass)
{
    if (ACQUIRE(profile) < 0)
        cbn_profile_get();
    return pass_table[pass];
}

int cbn_set_num_threads(int n)
{
    if (n < 0)
        return CBN_ERR_ARG;
    num_threads_override = n;
    return CBN_OK;
}

int cbn_threads(void)
{
#ifdef _OPENMP
    return num_threads_override > 0 ? num_threads_override : omp_get_max_threads();
#else
    return 1;
#endif
}

int cbn_get_num_threads(void) { return cbn_threads(); }

int cbn_openmp_version(void)
{
#ifdef _OPENMP
    return _OPENMP;
#else
    return 0;
#endif
}

/* ---------------------------------------------------------- entry points --- */

const char *cbn_status_message(int status)
{
    switch (status) {
    case CBN_OK: return "success";
    case CBN_ERR_ARG: return "invalid argument: NULL data pointer, negative size, "
                             "or a block of more than 2**63 elements";
    case CBN_ERR_EMPTY: return "batch statistics of an empty batch";
    case CBN_ERR_EPS: return "eps must be a non-negative number";
    default: return "unknown cbn status";
    }
}

/* Sizes non-negative and outer*C*inner representable. */
static int check_shape(int64_t outer, int64_t C, int64_t inner)
{
    if (outer < 0 || C < 0 || inner < 0)
        return CBN_ERR_ARG;
    if (outer == 0 || C == 0 || inner == 0)
        return CBN_OK;
    if (C > INT64_MAX / outer || inner > INT64_MAX / (outer * C))
        return CBN_ERR_ARG;
    return CBN_OK;
}

static int empty_block(int64_t outer, int64_t C, int64_t inner)
{
    return outer == 0 || C == 0 || inner == 0;
}

/* Checks shared by every entry: shape, eps, and data pointers when there is
   data. Returns CBN_OK or the error. `need_batch` asks for m >= 1 (m = 0 with
   C > 0 is an empty batch). */
static int check_common(int64_t outer, int64_t C, int64_t inner, double eps,
                        int need_batch, const void *p1, const void *p2)
{
    int s = check_shape(outer, C, inner);
    if (s != CBN_OK)
        return s;
    if (!(eps >= 0.0))  /* also rejects NaN */
        return CBN_ERR_EPS;
    if (need_batch && C > 0 && (outer == 0 || inner == 0))
        return CBN_ERR_EMPTY;
    if (!empty_block(outer, C, inner) && (!p1 || !p2))
        return CBN_ERR_ARG;
    return CBN_OK;
}

/* nan_policy 'omit' (cbn_stats_omit)
   ----------------------------------
   Feature c's count, mean and biased variance over its values that are not
   NaN: the corrected two-pass formula (a first pass for the count and the
   mean, a second for s1 = sum(x - mean) and s2 = sum((x - mean)^2), m2 =
   s2 - s1^2/n), so the variance is within a few units in the last place of
   double, however far the data sit from zero. A feature whose values are all
   NaN has count 0 and NaN mean and variance; +-Inf is a value like any
   other (it makes the mean Inf or NaN, as numpy.nanmean does). Values are
   read in order, one feature at a time: the result does not depend on
   threads. A cold path, taken only for a feature whose fast statistics came
   out NaN, so it stays plain scalar code. */
static CBN_COLD void omit_moments(const void *x, int is_f32, int64_t outer,
                                  int64_t C, int64_t inner, int64_t c,
                                  int64_t *count, double *mean, double *var)
{
    int64_t n = 0, o, i;
    double s = 0.0, s1 = 0.0, s2 = 0.0;
    for (o = 0; o < outer; o++)
        for (i = 0; i < inner; i++) {
            const double v = load_as_double(x, is_f32, (o * C + c) * inner + i);
            if (v == v) {
                s += v;
                n++;
            }
        }
    *count = n;
    if (n == 0) {
        *mean = *var = NAN;
        return;
    }
    const double mu = s / (double)n;
    for (o = 0; o < outer; o++)
        for (i = 0; i < inner; i++) {
            const double v = load_as_double(x, is_f32, (o * C + c) * inner + i);
            if (v == v) {
                s1 += v - mu;
                s2 += (v - mu) * (v - mu);
            }
        }
    const moments r = moments_from_dev((double)n, mu, s1, s2);
    *mean = r.mean;
    *var = r.m2 / (double)n;
}

/* cbn_stats_omit's second step over features [c0, c1): those whose fast
   statistics came out NaN -- a NaN among their values, or both infinities --
   are recomputed over their values that are not NaN (core/moments.h); the
   others keep them, with the whole batch as their count. */
typedef struct {
    const void *x;
    int is_f32;
    int64_t outer, C, inner;
    int64_t *count;
    double *mean, *var;
} omit_job;

/* omit_moments for the columns idx[0..k) of a rows block (inner == 1),
   sweeping the rows in memory order instead of each column down its stride:
   the same sums in the same order per column, so bitwise omit_moments'
   results. s, s1, s2 and n: scratch of k entries. */
static CBN_COLD void omit_columns(const void *x, int is_f32, int64_t outer, int64_t C,
                                  const int64_t *idx, int64_t k, double *s, double *s1,
                                  double *s2, int64_t *n, int64_t *count, double *mean,
                                  double *var)
{
    int64_t o, j;
    for (j = 0; j < k; j++) {
        s[j] = s1[j] = s2[j] = 0.0;
        n[j] = 0;
    }
    for (o = 0; o < outer; o++)
        for (j = 0; j < k; j++) {
            const double v = load_as_double(x, is_f32, o * C + idx[j]);
            if (v == v) {
                s[j] += v;
                n[j]++;
            }
        }
    for (j = 0; j < k; j++)
        s[j] = n[j] ? s[j] / (double)n[j] : 0.0;  /* the first pass's mean */
    for (o = 0; o < outer; o++)
        for (j = 0; j < k; j++) {
            const double v = load_as_double(x, is_f32, o * C + idx[j]);
            if (v == v) {
                s1[j] += v - s[j];
                s2[j] += (v - s[j]) * (v - s[j]);
            }
        }
    for (j = 0; j < k; j++) {
        const int64_t c = idx[j];
        count[c] = n[j];
        if (n[j] == 0) {
            mean[c] = var[c] = NAN;
        } else {
            const moments r = moments_from_dev((double)n[j], s[j], s1[j], s2[j]);
            mean[c] = r.mean;
            var[c] = r.m2 / (double)n[j];
        }
    }
}

static void omit_features(void *ctx, int64_t c0, int64_t c1)
{
    const omit_job *j = (const omit_job *)ctx;
    const int64_t m = j->outer * j->inner;
    int64_t c, k = 0;
    for (c = c0; c < c1; c++) {
        if (m > 0 && j->mean[c] == j->mean[c])
            j->count[c] = m;
        else if (j->inner > 1 || m == 0)
            omit_moments(j->x, j->is_f32, j->outer, j->C, j->inner, c, &j->count[c],
                         &j->mean[c], &j->var[c]);
        else
            k++;
    }
    if (k == 0)
        return;
    /* rows: the columns to redo, swept together */
    int64_t *idx = (int64_t *)malloc((size_t)k * (2 * sizeof(int64_t) + 3 * sizeof(double)));
    if (!idx) {  /* no scratch: one column at a time, down its stride */
        for (c = c0; c < c1; c++)
            if (j->mean[c] != j->mean[c])
                omit_moments(j->x, j->is_f32, j->outer, j->C, j->inner, c, &j->count[c],
                             &j->mean[c], &j->var[c]);
        return;
    }
    double *s = (double *)(idx + 2 * k);
    k = 0;
    for (c = c0; c < c1; c++)
        if (j->mean[c] != j->mean[c])
            idx[k++] = c;
    omit_columns(j->x, j->is_f32, j->outer, j->C, idx, k, s, s + k, s + 2 * k, idx + k,
                 j->count, j->mean, j->var);
    free(idx);
}

/* nan_policy 'omit' in the backward (cbn_backward_omit): feature c's
   gradients with the elements where x is NaN left out -- their dx is 0, they
   are not in the sums, and n, the count of the others, is the batch size in
   the formula (math.rst):
     dbeta = sum dy,  dgamma = invstd * sum dy*(x - mean),
     dx = gamma*invstd/n * (n*dy - dbeta - xhat*dgamma)   (batch_stats)
     dx = gamma*invstd * dy                               (otherwise)
   in double, rounded once. Scalar and in order, one feature at a time: a
   cold path for the features whose fast sums came out NaN. */
static CBN_COLD void omit_backward_feature(const void *dy, const void *x, void *dx,
                                           int is_f32, int64_t outer, int64_t C,
                                           int64_t inner, int64_t c, double mean,
                                           double invstd, double gamma, int batch_stats,
                                           double *dgamma, double *dbeta)
{
    int64_t n = 0, o, i;
    double sdy = 0.0, sdyx = 0.0;
    for (o = 0; o < outer; o++)
        for (i = 0; i < inner; i++) {
            const int64_t e = (o * C + c) * inner + i;
            const double xv = load_as_double(x, is_f32, e);
            if (xv == xv) {
                const double g = load_as_double(dy, is_f32, e);
                sdy += g;
                sdyx += g * (xv - mean);
                n++;
            }
        }
    const double db = sdy, dg = n ? sdyx * invstd : 0.0;  /* n = 0: no NaN from invstd */
    *dbeta = db;
    *dgamma = dg;
    const double k = gamma * invstd;
    for (o = 0; o < outer; o++)
        for (i = 0; i < inner; i++) {
            const int64_t e = (o * C + c) * inner + i;
            const double xv = load_as_double(x, is_f32, e);
            double v = 0.0;
            if (xv == xv) {
                const double g = load_as_double(dy, is_f32, e);
                v = batch_stats ? k / (double)n
                                      * ((double)n * g - db - (xv - mean) * invstd * dg)
                                : k * g;
            }
            if (is_f32)
                ((float *)dx)[e] = (float)v;
            else
                ((double *)dx)[e] = v;
        }
}

typedef struct {
    const void *dy, *x;
    void *dx;
    int is_f32;
    int64_t outer, C, inner;
    const double *mean, *var, *gamma;
    double eps;
    int batch_stats;
    double *dgamma, *dbeta;
} omit_backward_job;

static void omit_backward_features(void *ctx, int64_t c0, int64_t c1)
{
    const omit_backward_job *j = (const omit_backward_job *)ctx;
    for (int64_t c = c0; c < c1; c++)
        if (j->dgamma[c] != j->dgamma[c] || j->dbeta[c] != j->dbeta[c])
            omit_backward_feature(j->dy, j->x, j->dx, j->is_f32, j->outer, j->C, j->inner,
                                  c, j->mean[c], 1.0 / sqrt(j->var[c] + j->eps),
                                  j->gamma ? j->gamma[c] : 1.0, j->batch_stats,
                                  &j->dgamma[c], &j->dbeta[c]);
}

#define T float
#define SFX f32
#include "api_template.h"
#undef T
#undef SFX

#define T double
#define SFX f64
#include "api_template.h"
#undef T
#undef SFX
