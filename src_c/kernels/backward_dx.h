/*
 * kernels/backward_dx.h -- the pieces of backward_dx, backward's second
 * pass from given gradient sums: one range function per loop shape.
 *
 * Part of the kernel template (see kernels/template.h): included once per
 * data type, so it has no include guard, and every name it defines goes
 * through FN() or is a type-independent macro defined identically both times.
 */

/* dx of backward with batch statistics from given gradient sums and batch
   size (cbn_backward_dx): backward's second pass alone, for a block that is
   one part of a larger batch whose sums were added up elsewhere. Its pieces
   -- (feature, segment) for planes, (column block, segment) for rows --
   are independent, so they are shared out in order. */
static FN(dcoef) FN(given_dcoef)(int64_t c, const double *mean,
                                 const double *var, const double *gamma,
                                 double eps, double m, const double *dgamma,
                                 const double *dbeta)
{
    /* make_dcoef wants sum dy*(x - mean) = dgamma*sqrt(var + eps) */
    return FN(make_dcoef)(dbeta[c], dgamma[c] * sqrt(var[c] + eps), m, mean[c],
                          var[c], eps, gamma, 1, c, NULL, NULL);
}

/* Pieces (feature, segment) [i0, i1) of backward_dx, in order, so that a
   feature's coefficients are made once for its segments in the range. */
static void FN(planes_dx_pieces)(void *ctx, int64_t i0, int64_t i1)
{
    const FN(job) *j = (const FN(job) *)ctx;
    const planes_geom *g = j->pg;
    const double *dgamma = j->given_dgamma, *dbeta = j->given_dbeta;
    FN(dcoef) d;
    cold_dcoef cd;
    int cold = 0;
    int64_t have = -1;  /* the feature d holds */
    for (int64_t idx = i0; idx < i1; idx++) {
        const int64_t c = idx / g->nseg;
        if (c != have) {
            d = FN(given_dcoef)(c, j->mean, j->var, j->gamma, j->eps, j->m, dgamma, dbeta);
            cold = T_IS_F32 && !FN(dcoef_ok)(d.a, d.b, d.k0, d.hi, 1)
                   && cold_dcoef_of(dbeta[c], dgamma[c] * sqrt(j->var[c] + j->eps), j->m,
                                    j->mean[c], j->var[c], j->eps, j->gamma, 1, c, &cd);
        }
        have = c;
        if (cold)
            FN(planes_segment_dx_cold)(j->dy, j->x, j->out, g, c, idx % g->nseg, &cd, 1);
        else
            FN(planes_segment_dx)(j->dy, j->x, j->out, g, c, idx % g->nseg, d, 1);
    }
}

/* Pieces (column block, segment) [i0, i1) of backward_dx, in order, so that
   a block's coefficients are made once for its segments in the range. */
static void FN(rows_dx_pieces)(void *ctx, int64_t i0, int64_t i1)
{
    const FN(job) *j = (const FN(job) *)ctx;
    const rows_geom *g = j->rg;
    const double *dgamma = j->given_dgamma, *dbeta = j->given_dbeta;
    FN(bcoefs) k;
    int64_t have = -1;  /* the column block k holds */
    for (int64_t idx = i0; idx < i1; idx++) {
        const int64_t b = idx / g->nseg, c0 = b * ROW_BLOCK;
        const int nb = block_width(g, b);
        const dx_sources src = {dbeta + c0, dgamma + c0, j->mean + c0, j->var + c0,
                                j->gamma, j->eps, j->m, 1};
        int64_t r0, r1;
        if (b != have) {
            FN(bcoefs_start)(&k, j->out, g);
            for (int c = 0; c < nb; c++)
                FN(bcoefs_put_d)(&k, g, c,
                                 FN(given_dcoef)(c0 + c, j->mean, j->var, j->gamma, j->eps,
                                                 j->m, dgamma, dbeta));
            FN(bcoefs_finish_d)(&k, g, c0, nb, 1, &src);
        }
        have = b;
        segment_rows(g, idx % g->nseg, &r0, &r1);
        FN(block_dx)(j->dy, j->x, j->out, g, c0, nb, r0, r1, &k, 1, g->stream, &src);
    }
}
