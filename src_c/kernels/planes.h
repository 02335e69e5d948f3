/*
 * kernels/planes.h -- the planes loop shape (inner > 1, NCHW-like):
 * a feature's data is `outer` runs of `inner` values, reduced and written
 * one feature at a time, chunk by chunk and segment by segment (see
 * planes_geom in core/geometry.h). The drivers that share these out among
 * threads are in kernels/planes_drivers.h.
 *
 * Part of the kernel template (see kernels/template.h): included once per
 * data type, so it has no include guard, and every name it defines goes
 * through FN() or is a type-independent macro defined identically both times.
 */

/* Moments of chunk j of feature c, in one pass around the shift K when that
   is accurate, else in two (see "One pass or two" in core/moments.h). */
static moments FN(planes_chunk_moments)(const T *x, const planes_geom *g,
                                        int64_t c, int64_t j, double K)
{
    int64_t o0, o1, i0, i1, o;
    planes_chunk(g, j, &o0, &o1, &i0, &i1);
    const double n = (double)(o1 - o0) * (double)(i1 - i0);
    double s1 = 0.0, s2 = 0.0;
    for (o = o0; o < o1; o++) {
        prefetch_run(g, x, sizeof(T), o, c, 0);
        FN(run_dev)(x + (o * g->C + c) * g->inner + i0, i1 - i0, K, &s1, &s2,
                    next_piece(g, x, sizeof(T), o, c, i0));
    }
    if (!shift_is_accurate(n, s1, s2)) {
        double s = 0.0;
        for (o = o0; o < o1; o++)
            s += FN(run_sum)(x + (o * g->C + c) * g->inner + i0, i1 - i0);
        K = s / n;
        s1 = s2 = 0.0;
        for (o = o0; o < o1; o++)
            FN(run_dev)(x + (o * g->C + c) * g->inner + i0, i1 - i0, K, &s1, &s2,
                        no_ahead());
    }
    return moments_from_dev(n, K, s1, s2);
}

static moments FN(planes_segment_moments)(const T *x, const planes_geom *g,
                                          int64_t c, int64_t s)
{
    moments acc = {0.0, 0.0, 0.0};
    int64_t j0 = s * SEG_CHUNKS, j1 = j0 + SEG_CHUNKS < g->nchunks ? j0 + SEG_CHUNKS : g->nchunks;
    int64_t o0, o1, i0, i1;
    planes_chunk(g, j0, &o0, &o1, &i0, &i1);
    /* the segment's first value shifts its first chunk, its running mean the rest */
    double K = (double)x[(o0 * g->C + c) * g->inner + i0];
    for (int64_t j = j0; j < j1; j++) {
        moments_merge(&acc, FN(planes_chunk_moments)(x, g, c, j, K));
        K = acc.mean;
    }
    return acc;
}

static moments FN(planes_feature_moments)(const T *x, const planes_geom *g, int64_t c)
{
    moments acc = {0.0, 0.0, 0.0};
    for (int64_t s = 0; s < g->nseg; s++)
        moments_merge(&acc, FN(planes_segment_moments)(x, g, c, s));
    return acc;
}

/* dy's piece p, or, with a gate of y, the gated piece in buf (see
   kernels/gate.h; a piece has at most CHUNK elements); a gate of bits the
   loops apply themselves (gt_bits) */
static inline const T *FN(piece_dy)(const T *dy, const FN(gate) *gt, const planes_piece *p,
                                    T *buf)
{
    if (!gt || gt->bits)
        return dy + p->off;
    FN(gate_piece)(gt->y, dy, p->off, p->i1 - p->i0, buf);
    return buf;
}

/* sums of dy and dy*(x - mean) over one segment, chunk by chunk, dy gated
   by gt (or NULL) */
static void FN(planes_segment_grad)(const T *dy, const T *x, const planes_geom *g,
                                    int64_t c, int64_t s, double mean,
                                    double *sdy, double *sdyx, const FN(gate) *gt)
{
    planes_piece p = planes_pieces(g, s);
    double a = 0.0, b = 0.0;
    T buf[CHUNK]; /* the gated piece, when gt */
    while (planes_next_piece(g, c, &p)) {
        prefetch_run(g, dy, sizeof(T), p.o, c, 0);
        prefetch_run(g, x, sizeof(T), p.o, c, 0);
        FN(run_grad)(FN(piece_dy)(dy, gt, &p, buf), x + p.off, p.i1 - p.i0, mean, &a,
                     &b, next_piece(g, dy, sizeof(T), p.o, c, p.i0),
                     next_piece(g, x, sizeof(T), p.o, c, p.i0), FN(gt_bits)(gt), p.off);
    }
    *sdy = a;
    *sdyx = b;
}

/* Apply per-feature coefficients, then the epilogue ep (or NULL), to the
   runs of one segment of feature c. */
static void FN(planes_segment_normalize)(const T *x, T *y, const planes_geom *g,
                                         int64_t c, int64_t s, FN(coef) k,
                                         const FN(epi) *ep)
{
    planes_piece p = planes_pieces(g, s);
    const T *res = FN(epi_res)(ep, 0);
    while (planes_next_piece(g, c, &p)) {
        if (!g->stream)  /* streaming stores read no lines */
            prefetch_run(g, y, sizeof(T), p.o, c, 1);
        if (res)  /* a stream of short runs, as x's (see prefetch_run) */
            prefetch_run(g, res, sizeof(T), p.o, c, 0);
        FN(run_normalize)(x + p.off, y + p.off, p.i1 - p.i0, k, g->stream,
                          next_piece(g, x, sizeof(T), p.o, c, p.i0),
                          FN(epi_res)(ep, p.off), FN(epi_relu)(ep));
    }
    if (g->stream)
        stream_fence();
}

/* planes_segment_normalize for a cold feature. */
static CBN_COLD void FN(planes_segment_normalize_cold)(const T *x, T *y,
                                                       const planes_geom *g, int64_t c,
                                                       int64_t s, const cold_coef *k,
                                                       const FN(epi) *ep)
{
    planes_piece p = planes_pieces(g, s);
    while (planes_next_piece(g, c, &p))
        FN(cold_normalize)(x + p.off, y + p.off, p.i1 - p.i0, 1, k, FN(epi_res)(ep, p.off),
                           FN(epi_relu)(ep));
}

/* planes_segment_dx for a cold feature. */
static CBN_COLD void FN(planes_segment_dx_cold)(const T *dy, const T *x, T *dx,
                                                const planes_geom *g, int64_t c,
                                                int64_t s, const cold_dcoef *d,
                                                int batch_stats, const FN(gate) *gt)
{
    planes_piece p = planes_pieces(g, s);
    T buf[CHUNK]; /* the gated piece, when gt */
    while (planes_next_piece(g, c, &p))
        FN(cold_dx)(FN(piece_dy)(dy, gt, &p, buf), x + p.off, dx + p.off, p.i1 - p.i0,
                    1, d, batch_stats, FN(gt_bits)(gt), p.off);
}

static void FN(planes_segment_dx)(const T *dy, const T *x, T *dx,
                                  const planes_geom *g, int64_t c, int64_t s,
                                  FN(dcoef) d, int batch_stats, const FN(gate) *gt)
{
    planes_piece p = planes_pieces(g, s);
    T buf[CHUNK]; /* the gated piece, when gt */
    while (planes_next_piece(g, c, &p)) {
        const int64_t n = p.i1 - p.i0;
        const ahead ady = next_piece(g, dy, sizeof(T), p.o, c, p.i0);
        const T *gy = FN(piece_dy)(dy, gt, &p, buf);
        if (!g->stream)
            prefetch_run(g, dx, sizeof(T), p.o, c, 1);
        if (batch_stats)
            FN(run_dx)(gy, x + p.off, dx + p.off, n, d.a, d.b, d.k0, d.hi,
                       g->stream, ady, next_piece(g, x, sizeof(T), p.o, c, p.i0),
                       FN(gt_bits)(gt), p.off);
        else
            FN(run_scale)(gy, dx + p.off, n, d.a, g->stream, ady, FN(gt_bits)(gt), p.off);
    }
    if (g->stream)
        stream_fence();
}

/* Statistics of feature c, then its normalized output (when y), with the
   epilogue ep (or NULL). */
static void FN(planes_train_feature)(const T *x, T *y, const planes_geom *g,
                                     int64_t c, const double *gamma,
                                     const double *beta, double eps,
                                     double *mean, double *var, const FN(epi) *ep)
{
    const double m = (double)g->outer * (double)g->inner;
    moments mo = FN(planes_feature_moments)(x, g, c);
    double mu = mo.mean, v = mo.m2 / m;
    finite_or_rescued(x, T_IS_F32, g->outer, g->C, g->inner, c, &mu, &v);
    FN(coef) k = FN(make_coef)(mu, v, eps, gamma, beta, c);
    if (y) {
        cold_coef ck;
        if (FN(coef_cold)(k, mu, v, eps, gamma, beta, c, &ck))
            for (int64_t s = 0; s < g->nseg; s++)
                FN(planes_segment_normalize_cold)(x, y, g, c, s, &ck, ep);
        else
            for (int64_t s = 0; s < g->nseg; s++)
                FN(planes_segment_normalize)(x, y, g, c, s, k, ep);
    }
    if (mean) mean[c] = mu;
    if (var) var[c] = v;
}

/* Gradient sums of feature c, then its dx (when dx), dy gated by gt (or
   NULL). */
static void FN(planes_backward_feature)(const T *dy, const T *x, T *dx,
                                        const planes_geom *g, int64_t c,
                                        const double *mean, const double *var,
                                        const double *gamma, double eps,
                                        int batch_stats, double *dgamma,
                                        double *dbeta, const FN(gate) *gt)
{
    const double m = (double)g->outer * (double)g->inner;
    double sdy = 0.0, sdyx = 0.0;
    for (int64_t s = 0; s < g->nseg; s++) {
        double a, b;
        FN(planes_segment_grad)(dy, x, g, c, s, mean[c], &a, &b, gt);
        sdy += a;
        sdyx += b;
    }
    FN(dcoef) d = FN(make_dcoef)(sdy, sdyx, m, mean[c], var[c], eps, gamma,
                                 batch_stats, c, dgamma, dbeta);
    if (dx) {
        cold_dcoef cd;
        if (FN(dcoef_cold)(d, sdy, sdyx, m, mean[c], var[c], eps, gamma, batch_stats,
                           c, &cd))
            for (int64_t s = 0; s < g->nseg; s++)
                FN(planes_segment_dx_cold)(dy, x, dx, g, c, s, &cd, batch_stats, gt);
        else
            for (int64_t s = 0; s < g->nseg; s++)
                FN(planes_segment_dx)(dy, x, dx, g, c, s, d, batch_stats, gt);
    }
}
