/*
 * kernels/backward_dx.h -- backward_dx, backward's second pass from given
 * gradient sums: its range function per loop shape (over the dx pieces of
 * kernels/planes_drivers.h and rows_drivers.h, which backward's split batch
 * uses too) and its table entry.
 *
 * Part of the kernel template (see kernels/template.h): included once per
 * data type, so it has no include guard, and every name it defines goes
 * through FN() or is a type-independent macro defined identically both times.
 */

/* dx of backward with batch statistics from given gradient sums and batch
   size (cbn_backward_dx): backward's second pass alone, for a block that is
   one part of a larger batch whose sums were added up elsewhere. Its pieces
   -- (feature, segment) for planes, (column block, segment) for rows --
   are independent, so each thread takes a contiguous range of them. */
static void FN(planes_backward_dx_pieces)(void *ctx, int64_t i0, int64_t i1)
{
    const FN(job) *j = (const FN(job) *)ctx;
    FN(planes_dx_pieces)(j, j->given_dbeta, j->given_dgamma, 1, i0, i1);
}

static void FN(rows_backward_dx_pieces)(void *ctx, int64_t i0, int64_t i1)
{
    const FN(job) *j = (const FN(job) *)ctx;
    FN(rows_dx_pieces)(j, j->given_dbeta, j->given_dgamma, 1, i0, i1);
}

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
    j.given_dgamma = dgamma, j.given_dbeta = dbeta, j.batch_stats = 1;
    if (inner != 1) {
        const planes_geom g = planes_geometry(outer, C, inner, sizeof(T));
        j.pg = &g;
        for_ranges(nt, C * g.nseg, FN(planes_backward_dx_pieces), &j);
    } else {
        const rows_geom g = rows_geometry(outer, C, sizeof(T));
        j.rg = &g;
        for_ranges(nt, g.nblocks * g.nseg, FN(rows_backward_dx_pieces), &j);
    }
}
