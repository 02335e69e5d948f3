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

/* Work (elements) below which a kernel stays serial: opening an OpenMP
   parallel region costs more than normalizing a few thousand numbers. */
#define CBN_PARALLEL_MIN_WORK 32768

/* Per-data-type entries; T is float (f32) or double (f64). Argument order and
   meaning follow the public functions in cbn.h, except that forward_train
   also serves cbn_stats_*: with y == NULL it only computes the statistics. */
#define CBN_KERNEL_ENTRIES(T, sfx)                                            \
    void (*forward_train_##sfx)(const T *x, T *y, int64_t outer, int64_t C,    \
                                int64_t inner, const double *gamma,           \
                                const double *beta, double eps, double *mean, \
                                double *var);                                 \
    void (*forward_infer_##sfx)(const T *x, T *y, int64_t outer, int64_t C,    \
                                int64_t inner, const double *mean,            \
                                const double *var, const double *gamma,       \
                                const double *beta, double eps);              \
    void (*backward_##sfx)(const T *dy, const T *x, T *dx, int64_t outer,      \
                           int64_t C, int64_t inner, const double *mean,      \
                           const double *var, const double *gamma,            \
                           double eps, int batch_stats, double *dgamma,       \
                           double *dbeta);

typedef struct cbn_kernel_table {
    const char *name;
    CBN_KERNEL_ENTRIES(float, f32)
    CBN_KERNEL_ENTRIES(double, f64)
} cbn_kernel_table;

#undef CBN_KERNEL_ENTRIES

extern const cbn_kernel_table cbn_kernels_scalar;

#endif /* CBN_KERNELS_H */
