/*
 * dispatch.c -- the public entry points of cbn.h.
 *
 * Each checks its arguments once, handles the empty cases, and calls the
 * active kernel table, so kernels only ever see valid blocks.
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cbn.h"
#include "kernels.h"

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
