/*
 * kernels/entry.h -- the entries of the kernel table for one data type:
 * forward_train, forward_infer and backward, each picking its loop shape
 * from the layout (backward_dx's is in kernels/backward_dx.h).
 *
 * Part of the kernel template (see kernels/template.h): included once per
 * data type, so it has no include guard, and every name it defines goes
 * through FN() or is a type-independent macro defined identically both times.
 */

/* The table entries: pick the loop shape from the layout. forward_train with
   y == NULL computes only the statistics (cbn_stats_*); res and relu are
   the fused forward's epilogue (see FN(epi)). */

static void FN(forward_train)(const T *x, T *y, int64_t outer, int64_t C,
                              int64_t inner, const double *gamma,
                              const double *beta, double eps, double *mean,
                              double *var, const T *res, int relu)
{
    const FN(epi) e = {res, relu}, *ep = res || relu ? &e : NULL;
    if (inner == 1)
        FN(rows_forward_train)(x, y, outer, C, gamma, beta, eps, mean, var, ep);
    else
        FN(planes_forward_train)(x, y, outer, C, inner, gamma, beta, eps, mean, var, ep);
}

static void FN(forward_infer)(const T *x, T *y, int64_t outer, int64_t C,
                              int64_t inner, const double *mean,
                              const double *var, const double *gamma,
                              const double *beta, double eps, const T *res, int relu)
{
    const FN(epi) e = {res, relu}, *ep = res || relu ? &e : NULL;
    if (inner == 1)
        FN(rows_forward_infer)(x, y, outer, C, mean, var, gamma, beta, eps, ep);
    else
        FN(planes_forward_infer)(x, y, outer, C, inner, mean, var, gamma, beta, eps, ep);
}

static void FN(backward)(const T *dy, const T *x, T *dx, int64_t outer,
                         int64_t C, int64_t inner, const double *mean,
                         const double *var, const double *gamma, double eps,
                         int batch_stats, double *dgamma, double *dbeta)
{
    if (inner == 1)
        FN(rows_backward)(dy, x, dx, outer, C, mean, var, gamma, eps,
                          batch_stats, dgamma, dbeta);
    else
        FN(planes_backward)(dy, x, dx, outer, C, inner, mean, var, gamma, eps,
                            batch_stats, dgamma, dbeta);
}
