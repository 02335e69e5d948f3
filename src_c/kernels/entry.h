/*
 * kernels/entry.h -- the entries of the kernel table:
 * forward_train, forward_infer, backward and backward_dx for one data type,
 * each picking its loop shape from the layout.
 *
 * Part of the kernel template (see kernels/template.h): included once per
 * data type, so it has no include guard, and every name it defines goes
 * through FN() or is a type-independent macro defined identically both times.
 */

/* The table entries: pick the loop shape from the layout. forward_train with
   y == NULL computes only the statistics (cbn_stats_*). */

static void FN(forward_train)(const T *x, T *y, int64_t outer, int64_t C,
                              int64_t inner, const double *gamma,
                              const double *beta, double eps, double *mean,
                              double *var)
{
    if (inner == 1)
        FN(rows_forward_train)(x, y, outer, C, gamma, beta, eps, mean, var);
    else
        FN(planes_forward_train)(x, y, outer, C, inner, gamma, beta, eps, mean, var);
}

static void FN(forward_infer)(const T *x, T *y, int64_t outer, int64_t C,
                              int64_t inner, const double *mean,
                              const double *var, const double *gamma,
                              const double *beta, double eps)
{
    if (inner == 1)
        FN(rows_forward_infer)(x, y, outer, C, mean, var, gamma, beta, eps);
    else
        FN(planes_forward_infer)(x, y, outer, C, inner, mean, var, gamma, beta, eps);
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

/* backward_dx: its pieces are independent, so a contiguous range of them
   per thread. */
static void FN(backward_dx)(const T *dy, const T *x, T *dx, int64_t outer,
                            int64_t C, int64_t inner, const double *mean,
                            const double *var, const double *gamma, double eps,
                            int64_t m, const double *dgamma,
                            const double *dbeta)
{
    const int nt = threads_for(outer * C * inner);
    FN(job) j = {0};
    j.dy = dy, j.x = x, j.out = dx, j.outer = outer, j.C = C, j.inner = inner;
    j.mean = mean, j.var = var, j.gamma = gamma, j.eps = eps, j.m = (double)m;
    j.given_dgamma = dgamma, j.given_dbeta = dbeta;
    /* the pieces are independent: a contiguous range of them per thread */
    if (inner != 1) {
        const planes_geom g = planes_geometry(outer, C, inner, sizeof(T));
        j.pg = &g;
        for_ranges(nt, C * g.nseg, FN(planes_dx_pieces), &j);
    } else {
        const rows_geom g = rows_geometry(outer, C, sizeof(T));
        j.rg = &g;
        for_ranges(nt, g.nblocks * g.nseg, FN(rows_dx_pieces), &j);
    }
}
