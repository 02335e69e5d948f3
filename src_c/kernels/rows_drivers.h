/*
 * kernels/rows_drivers.h -- the rows drivers (forward_train,
 * forward_infer, backward for inner == 1): which items -- column blocks,
 * (column block, segment) pieces -- their threads take, through
 * core/parallel.h.
 *
 * Part of the kernel template (see kernels/template.h): included once per
 * data type, so it has no include guard, and every name it defines goes
 * through FN() or is a type-independent macro defined identically both times.
 */

/* Statistics of column block b, then its normalized output (when y). */
static void FN(rows_train_block)(const T *x, T *y, const rows_geom *g,
                                 int64_t b, const double *gamma,
                                 const double *beta, double eps, double *mean,
                                 double *var, const FN(epi) *ep)
{
    const int64_t c0 = b * ROW_BLOCK;
    const int nb = block_width(g, b);
    double tmean[ROW_BLOCK], tm2[ROW_BLOCK], smean[ROW_BLOCK], sm2[ROW_BLOCK],
           tn = 0.0;
    for (int64_t s = 0; s < g->nseg; s++) {
        int64_t r0, r1;
        segment_rows(g, s, &r0, &r1);
        double n = FN(rows_segment_moments)(x, g, c0, nb, r0, r1, smean, sm2);
        merge_columns(nb, tn, n, smean, sm2, tmean, tm2);
        tn += n;
    }
    for (int j = 0; j < nb; j++)
        tm2[j] /= (double)g->outer;  /* now the variance */
    columns_finite_or_rescued(x, T_IS_F32, g->outer, g->C, 1, c0, nb, tmean, tm2);
    for (int j = 0; j < nb; j++) {
        if (mean) mean[c0 + j] = tmean[j];
        if (var) var[c0 + j] = tm2[j];
    }
    if (y) {
        FN(bcoefs) k;
        FN(block_coefs)(&k, y, g, c0, nb, tmean, tm2, eps, gamma, beta);
        FN(block_normalize)(x, y, g, c0, nb, 0, g->outer, &k, g->stream, tmean, tm2,
                            eps, gamma, beta, ep);
    }
}

/* Column blocks [b0, b1): statistics, then output. */
static void FN(rows_train_blocks)(void *ctx, int64_t b0, int64_t b1)
{
    const FN(job) *j = (const FN(job) *)ctx;
    for (int64_t b = b0; b < b1; b++)
        FN(rows_train_block)(j->x, j->out, j->rg, b, j->gamma, j->beta, j->eps,
                             j->mean_out, j->var_out, j->ep);
}

/* Pieces (column block, segment) [i0, i1) of a split batch: their moments. */
static void FN(rows_train_partials)(void *ctx, int64_t i0, int64_t i1)
{
    FN(job) *j = (FN(job) *)ctx;
    const rows_geom *g = j->rg;
    const int64_t C = j->C;
    for (int64_t idx = i0; idx < i1; idx++) {
        const int64_t b = idx / g->nseg, s = idx % g->nseg, c0 = b * ROW_BLOCK;
        int64_t r0, r1;
        segment_rows(g, s, &r0, &r1);
        double n = FN(rows_segment_moments)(j->x, g, c0, block_width(g, b), r0, r1,
                                            j->sp.part + 2 * C * s + c0,
                                            j->sp.part + 2 * C * s + C + c0);
        if (b == 0)
            j->sp.count[s] = n;
    }
}

/* Pieces (column block, segment) [i0, i1) of a normalize pass with the
   statistics mean, var (C entries each), in order, so that a block's
   coefficients are made once for its pieces in the range. */
static void FN(rows_normalize_pieces)(const FN(job) *j, const double *mean,
                                      const double *var, int stream, int64_t i0,
                                      int64_t i1)
{
    const rows_geom *g = j->rg;
    FN(bcoefs) k;
    int64_t have = -1;  /* the column block k holds */
    for (int64_t idx = i0; idx < i1; idx++) {
        const int64_t b = idx / g->nseg, c0 = b * ROW_BLOCK;
        const int nb = block_width(g, b);
        int64_t r0, r1;
        if (b != have)
            FN(block_coefs)(&k, j->out, g, c0, nb, mean + c0, var + c0, j->eps, j->gamma,
                            j->beta);
        have = b;
        segment_rows(g, idx % g->nseg, &r0, &r1);
        FN(block_normalize)(j->x, j->out, g, c0, nb, r0, r1, &k, stream, mean + c0,
                            var + c0, j->eps, j->gamma, j->beta, j->ep);
    }
}

/* Pieces [i0, i1) of a split batch: their output, from the totals. */
static void FN(rows_train_output)(void *ctx, int64_t i0, int64_t i1)
{
    const FN(job) *j = (const FN(job) *)ctx;
    FN(rows_normalize_pieces)(j, j->sp.part, j->sp.part + j->C, j->rg->stream, i0, i1);
}

static void FN(rows_forward_train)(const T *x, T *y, int64_t outer, int64_t C,
                                   const double *gamma, const double *beta,
                                   double eps, double *mean, double *var,
                                   const FN(epi) *ep)
{
    const rows_geom g = rows_geometry(outer, C, sizeof(T));
    const int nt = threads_for(outer * C);
    FN(job) j = {0};
    j.x = x, j.out = y, j.outer = outer, j.C = C, j.inner = 1, j.rg = &g, j.ep = ep;
    j.gamma = gamma, j.beta = beta, j.eps = eps, j.m = (double)outer;
    j.mean_out = mean, j.var_out = var;
    j.sp.C = C, j.sp.nseg = g.nseg;
    /* few column blocks: their segments shared out, then merged in order */
    if (split_batch(nt, g.nblocks, g.nseg)
        && run_split(nt, g.nblocks * g.nseg, &j.sp, 1, FN(rows_train_partials),
                     FN(train_merged), y ? FN(rows_train_output) : NULL, &j)) {
        split_free(&j.sp);
        return;
    }
    for_ranges(nt, g.nblocks, FN(rows_train_blocks), &j);
}

/* Pieces [i0, i1) of inference with given statistics. */
static void FN(rows_infer_pieces)(void *ctx, int64_t i0, int64_t i1)
{
    const FN(job) *j = (const FN(job) *)ctx;
    FN(rows_normalize_pieces)(j, j->mean, j->var, j->stream, i0, i1);
}

static void FN(rows_forward_infer)(const T *x, T *y, int64_t outer, int64_t C,
                                   const double *mean, const double *var,
                                   const double *gamma, const double *beta,
                                   double eps, const FN(epi) *ep)
{
    const rows_geom g = rows_geometry(outer, C, sizeof(T));
    FN(job) j = {0};
    j.x = x, j.out = y, j.outer = outer, j.C = C, j.inner = 1, j.rg = &g, j.ep = ep;
    j.mean = mean, j.var = var, j.gamma = gamma, j.beta = beta, j.eps = eps;
    j.stream = g.stream;  /* as training's flat pass (see core/tuning.h) */
    for_ranges(threads_for(outer * C), g.nblocks * g.nseg, FN(rows_infer_pieces), &j);
}

/* Gradient sums of column block b, then its dx (when dx). */
static void FN(rows_backward_block)(const T *dy, const T *x, T *dx,
                                    const rows_geom *g, int64_t b,
                                    const double *mean, const double *var,
                                    const double *gamma, double eps,
                                    int batch_stats, double *dgamma,
                                    double *dbeta, const uint8_t *bits)
{
    const int64_t c0 = b * ROW_BLOCK;
    const int nb = block_width(g, b);
    double t1[ROW_BLOCK] = {0}, t2[ROW_BLOCK] = {0}, s1[ROW_BLOCK], s2[ROW_BLOCK];
    FN(bcoefs) k;
    for (int64_t s = 0; s < g->nseg; s++) {
        int64_t r0, r1;
        segment_rows(g, s, &r0, &r1);
        FN(rows_segment_grad)(dy, x, g, c0, nb, r0, r1, mean + c0, s1, s2, bits);
        for (int j = 0; j < nb; j++)
            t1[j] += s1[j], t2[j] += s2[j];
    }
    if (!dx) {  /* the sums alone */
        for (int j = 0; j < nb; j++)
            FN(make_dcoef)(t1[j], t2[j], (double)g->outer, mean[c0 + j], var[c0 + j], eps,
                           gamma, batch_stats, c0 + j, dgamma, dbeta);
        return;
    }
    FN(bcoefs_start)(&k, dx, g);
    for (int j = 0; j < nb; j++)
        FN(bcoefs_put_d)(&k, g, j,
                         FN(make_dcoef)(t1[j], t2[j], (double)g->outer, mean[c0 + j],
                                        var[c0 + j], eps, gamma, batch_stats, c0 + j,
                                        dgamma, dbeta));
    const dx_sources src = {t1, t2, mean + c0, var + c0, gamma, eps, (double)g->outer, 0};
    FN(bcoefs_finish_d)(&k, g, c0, nb, batch_stats, &src);
    FN(block_dx)(dy, x, dx, g, c0, nb, 0, g->outer, &k, batch_stats, g->stream, &src, bits);
}

/* Column blocks [b0, b1): gradient sums, then dx. */
static void FN(rows_backward_blocks)(void *ctx, int64_t b0, int64_t b1)
{
    const FN(job) *j = (const FN(job) *)ctx;
    for (int64_t b = b0; b < b1; b++)
        FN(rows_backward_block)(j->dy, j->x, j->out, j->rg, b, j->mean, j->var,
                                j->gamma, j->eps, j->batch_stats, j->dgamma, j->dbeta,
                                FN(gt_bits)(j->gt));
}

/* Pieces (column block, segment) [i0, i1) of a split batch: their gradient
   sums. */
static void FN(rows_backward_partials)(void *ctx, int64_t i0, int64_t i1)
{
    FN(job) *j = (FN(job) *)ctx;
    const rows_geom *g = j->rg;
    const int64_t C = j->C;
    for (int64_t idx = i0; idx < i1; idx++) {
        const int64_t b = idx / g->nseg, s = idx % g->nseg, c0 = b * ROW_BLOCK;
        int64_t r0, r1;
        segment_rows(g, s, &r0, &r1);
        FN(rows_segment_grad)(j->dy, j->x, g, c0, block_width(g, b), r0, r1,
                              j->mean + c0, j->sp.part + 2 * C * s + c0,
                              j->sp.part + 2 * C * s + C + c0, FN(gt_bits)(j->gt));
    }
}

/* Pieces (column block, segment) [i0, i1) of a dx pass, in order, with the
   sources of their coefficients: per feature c, s1[c] = sum dy and s2[c] =
   sum dy*(x - mean), or, `given` (backward_dx), dbeta and dgamma. A block's
   coefficients are made once for its pieces in the range. */
static void FN(rows_dx_pieces)(const FN(job) *j, const double *s1, const double *s2,
                               int given, int64_t i0, int64_t i1)
{
    const rows_geom *g = j->rg;
    FN(bcoefs) k;
    int64_t have = -1;  /* the column block k holds */
    for (int64_t idx = i0; idx < i1; idx++) {
        const int64_t b = idx / g->nseg, c0 = b * ROW_BLOCK;
        const int nb = block_width(g, b);
        const dx_sources src = {s1 + c0, s2 + c0, j->mean + c0, j->var + c0,
                                j->gamma, j->eps, j->m, given};
        int64_t r0, r1;
        if (b != have) {
            FN(bcoefs_start)(&k, j->out, g);
            for (int c = 0; c < nb; c++) {
                const double sdyx = dx_source_sdyx(s2[c0 + c], j->var[c0 + c], j->eps, given);
                FN(bcoefs_put_d)(&k, g, c,
                                 FN(make_dcoef)(s1[c0 + c], sdyx, j->m, j->mean[c0 + c],
                                                j->var[c0 + c], j->eps, j->gamma,
                                                j->batch_stats, c0 + c, NULL, NULL));
            }
            FN(bcoefs_finish_d)(&k, g, c0, nb, j->batch_stats, &src);
        }
        have = b;
        segment_rows(g, idx % g->nseg, &r0, &r1);
        FN(block_dx)(j->dy, j->x, j->out, g, c0, nb, r0, r1, &k, j->batch_stats,
                     g->stream, &src, FN(gt_bits)(j->gt));
    }
}

/* Pieces [i0, i1) of a split batch: their dx, from the total sums. */
static void FN(rows_backward_output)(void *ctx, int64_t i0, int64_t i1)
{
    const FN(job) *j = (const FN(job) *)ctx;
    FN(rows_dx_pieces)(j, j->sp.part, j->sp.part + j->C, 0, i0, i1);
}

static void FN(rows_backward)(const T *dy, const T *x, T *dx, int64_t outer,
                              int64_t C, const double *mean, const double *var,
                              const double *gamma, double eps, int batch_stats,
                              double *dgamma, double *dbeta, const FN(gate) *gt)
{
    const rows_geom g = rows_geometry(outer, C, sizeof(T));
    const int nt = threads_for(outer * C);
    FN(job) j = {0};
    j.dy = dy, j.x = x, j.out = dx, j.outer = outer, j.C = C, j.inner = 1, j.rg = &g;
    j.mean = mean, j.var = var, j.gamma = gamma, j.eps = eps;
    j.m = (double)outer, j.batch_stats = batch_stats;
    j.dgamma = dgamma, j.dbeta = dbeta, j.gt = gt;
    j.sp.C = C, j.sp.nseg = g.nseg;
    if (split_batch(nt, g.nblocks, g.nseg)
        && run_split(nt, g.nblocks * g.nseg, &j.sp, 0, FN(rows_backward_partials), NULL,
                     dx ? FN(rows_backward_output) : NULL, &j)) {
        FN(backward_split_sums)(&j);
        split_free(&j.sp);
        return;
    }
    for_ranges(nt, g.nblocks, FN(rows_backward_blocks), &j);
}
