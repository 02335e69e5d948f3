/*
 * dispatch.c -- the public entry points of cbn.h.
 *
 * Each checks its arguments once, handles the empty cases, and calls the
 * active kernel table, so kernels only ever see valid blocks.
 */
#include <math.h>
#include <stddef.h>

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

/* NULL until first use, then the chosen table. Concurrent first calls all
   store the same pointer. */
static const cbn_kernel_table *active = NULL;
static int active_level = -1;
static int num_threads_override = 0;

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

int cbn_simd_set(int level)
{
    if (!cbn_simd_supported(level))
        return CBN_ERR_ARG;
    active_level = level;
    active = tables[level];
    return CBN_OK;
}

int cbn_simd_get(void)
{
    if (!active)
        cbn_simd_set(cbn_simd_best());
    return active_level;
}

const char *cbn_simd_name(int level)
{
    return level >= 0 && level < NLEVELS ? tables[level]->name : NULL;
}

static const cbn_kernel_table *kernels(void)
{
    if (!active)
        cbn_simd_set(cbn_simd_best());
    return active;
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
