/*
 * kernels.h -- internal: the table of kernel implementations.
 *
 * The public functions in cbn.h validate their arguments once and then call
 * through the active table, so an implementation only ever sees valid,
 * non-overlapping blocks with m >= 1 where statistics are needed. Each
 * instruction-set level provides one table; the scalar table is the reference
 * that every faster level is tested against.
 */
#ifndef CBN_KERNELS_H
#define CBN_KERNELS_H

#include <stdint.h>

#include "cbn.h"
#include "core/tuning.h"

/* Per-data-type entries; T is float (f32) or double (f64). Argument order and
   meaning follow the public functions in cbn.h, except that forward_train
   also serves cbn_stats_*: with y == NULL it only computes the statistics;
   the forwards take the fused entries' residual and relu (NULL, 0: none),
   and backward the gated entry's gate and gate_bits (NULL, NULL: none). */
#define CBN_KERNEL_ENTRIES(T, sfx)                                            \
    void (*forward_train_##sfx)(const T *x, T *y, int64_t outer, int64_t C,    \
                                int64_t inner, const double *gamma,           \
                                const double *beta, double eps, double *mean, \
                                double *var, const T *residual, int relu);    \
    void (*forward_infer_##sfx)(const T *x, T *y, int64_t outer, int64_t C,    \
                                int64_t inner, const double *mean,            \
                                const double *var, const double *gamma,       \
                                const double *beta, double eps,               \
                                const T *residual, int relu);                 \
    void (*backward_##sfx)(const T *dy, const T *x, T *dx, int64_t outer,      \
                           int64_t C, int64_t inner, const double *mean,      \
                           const double *var, const double *gamma,            \
                           double eps, int batch_stats, double *dgamma,       \
                           double *dbeta, const T *gate,                      \
                           const uint8_t *gate_bits);                         \
    void (*backward_dx_##sfx)(const T *dy, const T *x, T *dx, int64_t outer,   \
                              int64_t C, int64_t inner, const double *mean,   \
                              const double *var, const double *gamma,         \
                              double eps, int64_t m, const double *dgamma,    \
                              const double *dbeta);                           \
    void (*relu_mask_##sfx)(const T *y, int64_t n, uint8_t *bits);

typedef struct cbn_kernel_table {
    const char *name;
    CBN_KERNEL_ENTRIES(float, f32)
    CBN_KERNEL_ENTRIES(double, f64)
} cbn_kernel_table;

#undef CBN_KERNEL_ENTRIES

/* The tables, one per level of cbn_simd_level (cbn.h). The AVX tables exist
   only on x86-64. */
extern const cbn_kernel_table cbn_kernels_scalar;
extern const cbn_kernel_table cbn_kernels_baseline;
#if defined(__x86_64__) || defined(_M_X64)
#define CBN_HAVE_X86_LEVELS 1
extern const cbn_kernel_table cbn_kernels_avx2;
extern const cbn_kernel_table cbn_kernels_avx512;
#endif

/* The thread count kernels use: cbn_set_num_threads' value if set, else
   OpenMP's default for the calling thread; 1 without OpenMP. */
int cbn_threads(void);

/* What the CPU and operating system support, and what CPU it is (cpu.c). */
int cbn_cpu_has_avx2_fma(void);
int cbn_cpu_has_avx512f(void);
typedef struct {
    char vendor[13];  /* CPUID.0's string, "" off x86 */
    int family, model;  /* CPUID.1's display family and model */
} cbn_cpu_id;
cbn_cpu_id cbn_cpu_identify(void);

/* A tuning profile (profiles.c): what measurement found best on one kind
   of CPU. */
typedef struct {
    const char *name;
    /* The CPUs it is for: vendor, family, and up to four model ranges
       [lo, hi] (none: any model); "" for the generic profile. */
    const char *vendor;
    int family;
    int models[4][2];
    int nmodels;
    /* Each pass's level (cbn_pass order), -1 for the best supported. */
    int level[CBN_NPASSES];
    /* The planes passes prefetch along a feature (core/prefetch.h) only in
       blocks of fewer bytes than this. */
    int64_t along_max_bytes;
} cbn_profile;

extern const cbn_profile cbn_profiles[];
extern const int cbn_nprofiles;
/* The profile of a CPU: the first that matches it, else the generic one. */
int cbn_profile_for(cbn_cpu_id id);

/* The profile's prefetch limit in use (core/prefetch.h). Read by the
   kernels when they plan a call: a call racing with cbn_profile_set may see
   the old value, which changes how fast it runs, never what it computes. */
extern int64_t cbn_along_max_bytes;

#endif /* CBN_KERNELS_H */
