/*
 * kernels/planes_drivers.h -- the planes drivers (forward_train,
 * forward_infer, backward for inner > 1): which items -- features, (feature,
 * segment) pieces, runs -- their threads take, through core/parallel.h.
 *
 * Part of the kernel template (see kernels/template.h): included once per
 * data type, so it has no include guard, and every name it defines goes
 * through FN() or is a type-independent macro defined identically both times.
 */

/* Features [c0, c1): statistics, then output. */
static void FN(planes_train_features)(void *ctx, int64_t c0, int64_t c1)
{
    const FN(job) *j = (const FN(job) *)ctx;
    for (int64_t c = c0; c < c1; c++)
        FN(planes_train_feature)(j->x, j->out, j->pg, c, j->gamma, j->beta, j->eps,
                                 j->mean_out, j->var_out, j->ep);
}

/* Pieces (feature, segment) [i0, i1) of a split batch: their moments. */
static void FN(planes_train_partials)(void *ctx, int64_t i0, int64_t i1)
{
    FN(job) *j = (FN(job) *)ctx;
    const int64_t C = j->C, nseg = j->pg->nseg;
    for (int64_t idx = i0; idx < i1; idx++) {
        const int64_t c = idx / nseg, s = idx % nseg;
        moments mo = FN(planes_segment_moments)(j->x, j->pg, c, s);
        j->sp.part[2 * C * s + c] = mo.mean;
        j->sp.part[2 * C * s + C + c] = mo.m2;
        if (c == 0)
            j->sp.count[s] = mo.n;
    }
}

/* Pieces [i0, i1) of a split batch: their output, from the totals. */
static void FN(planes_train_output)(void *ctx, int64_t i0, int64_t i1)
{
    const FN(job) *j = (const FN(job) *)ctx;
    const int64_t nseg = j->pg->nseg;
    for (int64_t idx = i0; idx < i1; idx++) {
        const int64_t c = idx / nseg, s = idx % nseg;
        const double mu = j->sp.part[c], v = j->sp.part[j->C + c];
        FN(coef) k = FN(make_coef)(mu, v, j->eps, j->gamma, j->beta, c);
        cold_coef ck;
        if (FN(coef_cold)(k, mu, v, j->eps, j->gamma, j->beta, c, &ck))
            FN(planes_segment_normalize_cold)(j->x, j->out, j->pg, c, s, &ck, j->ep);
        else
            FN(planes_segment_normalize)(j->x, j->out, j->pg, c, s, k, j->ep);
    }
}

static void FN(planes_forward_train)(const T *x, T *y, int64_t outer, int64_t C,
                                     int64_t inner, const double *gamma,
                                     const double *beta, double eps,
                                     double *mean, double *var, const FN(epi) *ep)
{
    const planes_geom g = planes_geometry(outer, C, inner, sizeof(T));
    const int nt = threads_for(outer * C * inner);
    FN(job) j = {0};
    j.x = x, j.out = y, j.outer = outer, j.C = C, j.inner = inner, j.pg = &g, j.ep = ep;
    j.gamma = gamma, j.beta = beta, j.eps = eps, j.m = (double)outer * (double)inner;
    j.mean_out = mean, j.var_out = var;
    j.sp.C = C, j.sp.nseg = g.nseg;
    /* few features: their segments shared out, then merged in order */
    if (split_batch(nt, C, g.nseg)
        && run_split(nt, C * g.nseg, &j.sp, 1, FN(planes_train_partials), FN(train_merged),
                     y ? FN(planes_train_output) : NULL, &j)) {
        split_free(&j.sp);
        return;
    }
    for_ranges(nt, C, FN(planes_train_features), &j);
}

/* Run r (feature r % C) with the given statistics; made: every feature's
   coefficients, or NULL to make them here. */
static void FN(planes_infer_run)(const T *x, T *y, int64_t outer, int64_t C,
                          int64_t inner, int64_t r, const double *mean,
                          const double *var, const double *gamma,
                          const double *beta, double eps, int stream,
                          const FN(coef) *made, const FN(epi) *ep)
{
    const int64_t total = outer * C * inner;
    int64_t c = r % C;
    FN(coef) k = made ? made[c] : FN(make_coef)(mean[c], var[c], eps, gamma, beta, c);
    cold_coef ck;
    if (FN(coef_cold)(k, mean[c], var[c], eps, gamma, beta, c, &ck)) {
        FN(cold_normalize)(x + r * inner, y + r * inner, inner, 1, &ck,
                           FN(epi_res)(ep, r * inner), FN(epi_relu)(ep));
        return;
    }
    /* prefetched along where streamed: below that size, measured slower */
    FN(run_normalize)(x + r * inner, y + r * inner, inner, k, stream,
                      stream_ahead(x, r * inner, inner, total, sizeof(T),
                                   stream && prefetches_along(total * (int64_t)sizeof(T))),
                      FN(epi_res)(ep, r * inner), FN(epi_relu)(ep));
    if (stream)
        stream_fence();
}

/* Runs [r0, r1) with the given statistics. */
static void FN(planes_infer_runs)(void *ctx, int64_t r0, int64_t r1)
{
    const FN(job) *j = (const FN(job) *)ctx;
    for (int64_t r = r0; r < r1; r++)
        FN(planes_infer_run)(j->x, j->out, j->outer, j->C, j->inner, r, j->mean, j->var,
                      j->gamma, j->beta, j->eps, j->stream, j->coefs, j->ep);
}

static void FN(planes_forward_infer)(const T *x, T *y, int64_t outer, int64_t C,
                                     int64_t inner, const double *mean,
                                     const double *var, const double *gamma,
                                     const double *beta, double eps, const FN(epi) *ep)
{
    FN(job) j = {0};
    /* Each feature has `outer` runs: its coefficients (a square root and a
       division) are made once, not per run, where they fit on the stack.
       Short runs (NCHW (32,256,14,14): 196 values) otherwise spend a
       quarter of the pass making them. */
    FN(coef) made[INFER_COEFS];
    j.x = x, j.out = y, j.outer = outer, j.C = C, j.inner = inner;
    j.mean = mean, j.var = var, j.gamma = gamma, j.beta = beta, j.eps = eps, j.ep = ep;
    j.stream = outer * C * inner * (int64_t)sizeof(T) >= CBN_STREAM_MIN_BYTES_EVAL;
    if (outer > 1 && C <= INFER_COEFS) {
        for (int64_t c = 0; c < C; c++)
            made[c] = FN(make_coef)(mean[c], var[c], eps, gamma, beta, c);
        j.coefs = made;
    }
    /* every run is independent: share them out in order */
    for_ranges(threads_for(outer * C * inner), outer * C, FN(planes_infer_runs), &j);
}

/* Features [c0, c1): gradient sums, then dx. */
static void FN(planes_backward_features)(void *ctx, int64_t c0, int64_t c1)
{
    const FN(job) *j = (const FN(job) *)ctx;
    for (int64_t c = c0; c < c1; c++)
        FN(planes_backward_feature)(j->dy, j->x, j->out, j->pg, c, j->mean, j->var,
                                    j->gamma, j->eps, j->batch_stats, j->dgamma,
                                    j->dbeta, j->gt);
}

/* Pieces (feature, segment) [i0, i1) of a split batch: their gradient sums. */
static void FN(planes_backward_partials)(void *ctx, int64_t i0, int64_t i1)
{
    FN(job) *j = (FN(job) *)ctx;
    const int64_t C = j->C, nseg = j->pg->nseg;
    for (int64_t idx = i0; idx < i1; idx++) {
        const int64_t c = idx / nseg, s = idx % nseg;
        FN(planes_segment_grad)(j->dy, j->x, j->pg, c, s, j->mean[c],
                                &j->sp.part[2 * C * s + c], &j->sp.part[2 * C * s + C + c],
                                j->gt);
    }
}

/* Pieces (feature, segment) [i0, i1) of a dx pass, in order, with the
   sources of their coefficients: per feature c, s1[c] = sum dy and s2[c] =
   sum dy*(x - mean), or, `given` (backward_dx), dbeta and dgamma. A
   feature's coefficients are made once for its pieces in the range. */
static void FN(planes_dx_pieces)(const FN(job) *j, const double *s1, const double *s2,
                                 int given, int64_t i0, int64_t i1)
{
    const planes_geom *g = j->pg;
    FN(dcoef) d = {0};
    cold_dcoef cd;
    int cold = 0;
    int64_t have = -1;  /* the feature d holds */
    for (int64_t idx = i0; idx < i1; idx++) {
        const int64_t c = idx / g->nseg, s = idx % g->nseg;
        if (c != have) {
            const double sdyx = dx_source_sdyx(s2[c], j->var[c], j->eps, given);
            d = FN(make_dcoef)(s1[c], sdyx, j->m, j->mean[c], j->var[c], j->eps, j->gamma,
                               j->batch_stats, c, NULL, NULL);
            cold = FN(dcoef_cold)(d, s1[c], sdyx, j->m, j->mean[c], j->var[c], j->eps,
                                  j->gamma, j->batch_stats, c, &cd);
        }
        have = c;
        if (cold)
            FN(planes_segment_dx_cold)(j->dy, j->x, j->out, g, c, s, &cd, j->batch_stats,
                                       j->gt);
        else
            FN(planes_segment_dx)(j->dy, j->x, j->out, g, c, s, d, j->batch_stats, j->gt);
    }
}

/* Pieces [i0, i1) of a split batch: their dx, from the total sums. */
static void FN(planes_backward_output)(void *ctx, int64_t i0, int64_t i1)
{
    const FN(job) *j = (const FN(job) *)ctx;
    FN(planes_dx_pieces)(j, j->sp.part, j->sp.part + j->C, 0, i0, i1);
}

static void FN(planes_backward)(const T *dy, const T *x, T *dx, int64_t outer,
                                int64_t C, int64_t inner, const double *mean,
                                const double *var, const double *gamma,
                                double eps, int batch_stats, double *dgamma,
                                double *dbeta, const FN(gate) *gt)
{
    const planes_geom g = planes_geometry(outer, C, inner, sizeof(T));
    const int nt = threads_for(outer * C * inner);
    FN(job) j = {0};
    j.dy = dy, j.x = x, j.out = dx, j.outer = outer, j.C = C, j.inner = inner, j.pg = &g;
    j.mean = mean, j.var = var, j.gamma = gamma, j.eps = eps;
    j.m = (double)outer * (double)inner, j.batch_stats = batch_stats;
    j.dgamma = dgamma, j.dbeta = dbeta, j.gt = gt;
    j.sp.C = C, j.sp.nseg = g.nseg;
    if (split_batch(nt, C, g.nseg)
        && run_split(nt, C * g.nseg, &j.sp, 0, FN(planes_backward_partials), NULL,
                     dx ? FN(planes_backward_output) : NULL, &j)) {
        FN(backward_split_sums)(&j);
        split_free(&j.sp);
        return;
    }
    for_ranges(nt, C, FN(planes_backward_features), &j);
}
