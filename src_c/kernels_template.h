/*
 * kernels_template.h -- the batch-norm kernels, written once for every data
 * type and instruction-set level.
 *
 * Included by a kernels_<level>.c file once per data type, after the vector
 * layer simd/<level>.h and kernels_common.h, with
 *   T        the data type (float or double)
 *   SFX      the name suffix (f32 or f64)
 *   T_IS_F32 1 for float, 0 for double
 * defined. Everything here is static; the including file collects the entry
 * points into its cbn_kernel_table.
 *
 * Design
 * ------
 * - Two loop shapes. When inner > 1 a feature's data is `outer` contiguous
 *   runs of `inner` values ("runs", NCHW): features are reduced and
 *   normalized one at a time, so a feature's slab is read from memory once
 *   and normalized while it is still in cache. When inner == 1 (N x C,
 *   channels-last) a feature's values are C apart ("rows"): the kernels sweep
 *   rows with per-feature accumulators for a block of up to ROW_BLOCK
 *   columns, vectorized across the columns.
 * - Statistics: see "The reduction tree" in kernels_common.h. Sums run in
 *   double vectors (float data is widened on load), two steps of 2*VD_N
 *   values per iteration for instruction-level parallelism.
 * - Threads: over features when there are enough of them, else over
 *   (feature, segment) pairs with partial statistics merged afterwards in
 *   the fixed order -- the same arithmetic either way.
 * - The normalize pass works in T, not double, but stays accurate for data far
 *   from zero: with hi = (T)mean, (x - hi) is exact when x is near the mean
 *   (Sterbenz), and the rest of the mean, lo = mean - hi, is folded into the
 *   shift in double: y = (x - hi)*scale + (beta - lo*scale), one fused
 *   multiply-add, within a few units in the last place of the float64 result.
 * - Cold features: a float feature whose coefficients float cannot hold
 *   (subnormal data with eps = 0; backward far from unit spread) is computed
 *   in double instead, decided once per feature where its coefficients are
 *   made (see "Cold features" in kernels_common.h); the loops over elements
 *   are the same for every other feature.
 */

#define CBN_CAT_(a, b) a##_##b
#define CBN_CAT(a, b) CBN_CAT_(a, b)
#define FN(name) CBN_CAT(name, SFX)

#define STEP (2 * VD_N) /* values per widened load */

/* Per-feature coefficients of the normalize pass: y = (x - hi)*scale + shift. */
typedef struct {
    T hi, scale, shift;
} FN(coef);

static FN(coef) FN(make_coef)(double mean, double var, double eps,
                              const double *gamma, const double *beta,
                              int64_t c)
{
    FN(coef) k;
    double invstd = 1.0 / sqrt(var + eps);
    double scale = (gamma ? gamma[c] : 1.0) * invstd;
    k.hi = (T)mean;
    k.scale = (T)scale;
    k.shift = (T)(beta ? beta[c] : 0.0);
    if (mean != (double)k.hi)  /* skip 0*inf: Inf and NaN must stay their own */
        k.shift = (T)((beta ? beta[c] : 0.0) - (mean - (double)k.hi) * scale);
    return k;
}

/* Whether float normalize coefficients hi, scale are ones float holds at
   full precision: the fast paths' test (see "Cold features" in
   kernels_common.h), branch-free so that loops over columns vectorize. */
static inline int FN(coef_ok)(T hi, T scale)
{
    return f32_factor_ok((float)scale) & (fabsf((float)hi) <= FLT_MAX);
}

/* Whether feature c, whose coefficients make_coef made as k, is cold (see
   "Cold features" in kernels_common.h): then *ck holds its double
   coefficients. One test of k on the fast path; never for double data. */
static inline int FN(coef_cold)(FN(coef) k, double mean, double var,
                                double eps, const double *gamma,
                                const double *beta, int64_t c, cold_coef *ck)
{
    return T_IS_F32 && !FN(coef_ok)(k.hi, k.scale)
           && cold_coef_of(mean, var, eps, gamma, beta, c, ck);
}

/* A cold feature's n values ld apart: y = (x - mean)*scale + beta in
   double, rounded once. */
static CBN_COLD void FN(cold_normalize)(const T *x, T *y, int64_t n, int64_t ld,
                                        const cold_coef *k)
{
    for (int64_t i = 0; i < n; i++)
        y[i * ld] = (T)(((double)x[i * ld] - k->mean) * k->scale + k->beta);
}

/* ------------------------------------------------------- contiguous runs --- */

/* sum(p[0:n]) in double */
static double FN(run_sum)(const T *p, int64_t n)
{
    vd a0 = vd_zero(), a1 = vd_zero(), a2 = vd_zero(), a3 = vd_zero(), l, h;
    int64_t i = 0;
    for (; i + 2 * STEP <= n; i += 2 * STEP) {
        vt_load2(p + i, &l, &h);
        a0 = vd_add(a0, l);
        a1 = vd_add(a1, h);
        vt_load2(p + i + STEP, &l, &h);
        a2 = vd_add(a2, l);
        a3 = vd_add(a3, h);
    }
    for (; i + STEP <= n; i += STEP) {
        vt_load2(p + i, &l, &h);
        a0 = vd_add(a0, l);
        a1 = vd_add(a1, h);
    }
    double s = vd_hsum(vd_add(vd_add(a0, a1), vd_add(a2, a3)));
    for (; i < n; i++)
        s += (double)p[i];
    return s;
}

/* s1 += sum(p - mu), s2 += sum((p - mu)^2) in double, prefetching pa along */
static void FN(run_dev)(const T *p, int64_t n, double mu, double *s1, double *s2,
                        ahead pa)
{
    vd m = vd_set1(mu), d0 = vd_zero(), d1 = vd_zero(), d2 = vd_zero(),
       d3 = vd_zero(), q0 = vd_zero(), q1 = vd_zero(), q2 = vd_zero(),
       q3 = vd_zero(), l, h;
    int64_t i = 0;
    for (; i + 2 * STEP <= n; i += 2 * STEP) {
        prefetch_along(pa, i * (int64_t)sizeof(T), 2 * STEP * (int)sizeof(T));
        vt_load2(p + i, &l, &h);
        l = vd_sub(l, m);
        h = vd_sub(h, m);
        d0 = vd_add(d0, l);
        d1 = vd_add(d1, h);
        q0 = vd_fmadd(l, l, q0);
        q1 = vd_fmadd(h, h, q1);
        vt_load2(p + i + STEP, &l, &h);
        l = vd_sub(l, m);
        h = vd_sub(h, m);
        d2 = vd_add(d2, l);
        d3 = vd_add(d3, h);
        q2 = vd_fmadd(l, l, q2);
        q3 = vd_fmadd(h, h, q3);
    }
    for (; i + STEP <= n; i += STEP) {
        vt_load2(p + i, &l, &h);
        l = vd_sub(l, m);
        h = vd_sub(h, m);
        d0 = vd_add(d0, l);
        d1 = vd_add(d1, h);
        q0 = vd_fmadd(l, l, q0);
        q1 = vd_fmadd(h, h, q1);
    }
    double a = vd_hsum(vd_add(vd_add(d0, d1), vd_add(d2, d3)));
    double b = vd_hsum(vd_add(vd_add(q0, q1), vd_add(q2, q3)));
    for (; i < n; i++) {
        double d = (double)p[i] - mu;
        a += d;
        b += d * d;
    }
    *s1 += a;
    *s2 += b;
}

/* s1 += sum(dy), s2 += sum(dy * (x - mu)) in double, prefetching ady and ax
   along */
static void FN(run_grad)(const T *dy, const T *x, int64_t n, double mu,
                         double *s1, double *s2, ahead ady, ahead ax)
{
    vd m = vd_set1(mu), g0 = vd_zero(), g1 = vd_zero(), g2 = vd_zero(),
       g3 = vd_zero(), q0 = vd_zero(), q1 = vd_zero(), q2 = vd_zero(),
       q3 = vd_zero(), gl, gh, xl, xh;
    int64_t i = 0;
    for (; i + 2 * STEP <= n; i += 2 * STEP) {
        prefetch_along(ady, i * (int64_t)sizeof(T), 2 * STEP * (int)sizeof(T));
        prefetch_along(ax, i * (int64_t)sizeof(T), 2 * STEP * (int)sizeof(T));
        vt_load2(dy + i, &gl, &gh);
        vt_load2(x + i, &xl, &xh);
        g0 = vd_add(g0, gl);
        g1 = vd_add(g1, gh);
        q0 = vd_fmadd(gl, vd_sub(xl, m), q0);
        q1 = vd_fmadd(gh, vd_sub(xh, m), q1);
        vt_load2(dy + i + STEP, &gl, &gh);
        vt_load2(x + i + STEP, &xl, &xh);
        g2 = vd_add(g2, gl);
        g3 = vd_add(g3, gh);
        q2 = vd_fmadd(gl, vd_sub(xl, m), q2);
        q3 = vd_fmadd(gh, vd_sub(xh, m), q3);
    }
    for (; i + STEP <= n; i += STEP) {
        vt_load2(dy + i, &gl, &gh);
        vt_load2(x + i, &xl, &xh);
        g0 = vd_add(g0, gl);
        g1 = vd_add(g1, gh);
        q0 = vd_fmadd(gl, vd_sub(xl, m), q0);
        q1 = vd_fmadd(gh, vd_sub(xh, m), q1);
    }
    double a = vd_hsum(vd_add(vd_add(g0, g1), vd_add(g2, g3)));
    double b = vd_hsum(vd_add(vd_add(q0, q1), vd_add(q2, q3)));
    for (; i < n; i++) {
        double g = (double)dy[i];
        a += g;
        b += g * ((double)x[i] - mu);
    }
    *s1 += a;
    *s2 += b;
}

/* The elementwise formulas, one element (T) or one vector (VT) at a time:
   the scalar ones round exactly as the vector lanes (st_fmadd), so an
   element's result does not depend on which loop it fell in. */
static inline T FN(normalize1)(T x, T hi, T sc, T sh)
{
    return st_fmadd(x - hi, sc, sh);
}

static inline VT FN(normalize_v)(VT x, VT hi, VT sc, VT sh)
{
    return vt_fmadd(vt_sub(x, hi), sc, sh);
}

/* dx = a*dy + (b*(x - hi) + k0) */
static inline T FN(dx1)(T dy, T x, T a, T b, T k0, T hi)
{
    return st_fmadd(a, dy, st_fmadd(b, x - hi, k0));
}

static inline VT FN(dx_v)(VT dy, VT x, VT a, VT b, VT k0, VT hi)
{
    return vt_fmadd(a, dy, vt_fmadd(b, vt_sub(x, hi), k0));
}

/* dx = a*dy, + 0 so that a zero is signed as the fused forms sign it */
static inline T FN(scale1)(T dy, T a)
{
    return st_fmadd(a, dy, (T)0);
}

static inline VT FN(scale_v)(VT dy, VT a)
{
    return vt_fmadd(a, dy, vt_set1((T)0));
}

/* Output stores
   -------------
   Outputs much larger than the caches are written with streaming stores
   (`stream`): a normal store first reads the line it writes, which for
   data headed to DRAM is a third memory transfer beside reading x and
   writing y. Streaming stores need aligned addresses, so the first few
   elements are stored one by one; scalar elements use st_fmadd, rounded
   exactly like the vector lanes, so where the cut falls changes nothing. */

/* How many of n elements at y to store singly before y is vector-aligned
   (all of them if y is not even element-aligned). */
static inline int64_t FN(peel)(const T *y, int64_t n)
{
    const uintptr_t w = (uintptr_t)(VT_N * sizeof(T));
    uintptr_t a = (uintptr_t)y % w;
    int64_t k = a % sizeof(T) ? n : (int64_t)(a ? (w - a) / sizeof(T) : 0);
    return k < n ? k : n;
}

static void FN(run_normalize)(const T *x, T *y, int64_t n, FN(coef) k,
                              int stream, ahead a)
{
    VT hi = vt_set1(k.hi), sc = vt_set1(k.scale), sh = vt_set1(k.shift);
    int64_t i = 0;
    for (int64_t p = FN(peel)(y, n); i < p; i++)
        y[i] = FN(normalize1)(x[i], k.hi, k.scale, k.shift);
    if (stream) {
        for (; i + VT_N <= n; i += VT_N) {
            prefetch_along(a, i * (int64_t)sizeof(T), VT_N * (int)sizeof(T));
            vt_stream(y + i, FN(normalize_v)(vt_loadu(x + i), hi, sc, sh));
        }
    }
    for (; i + VT_N <= n; i += VT_N) {
        prefetch_along(a, i * (int64_t)sizeof(T), VT_N * (int)sizeof(T));
        vt_storeu(y + i, FN(normalize_v)(vt_loadu(x + i), hi, sc, sh));
    }
    for (; i < n; i++)
        y[i] = FN(normalize1)(x[i], k.hi, k.scale, k.shift);
}

/* dx = a*dy + (b*(x - hi) + k0), prefetching ady and ax along */
static void FN(run_dx)(const T *dy, const T *x, T *dx, int64_t n, T a, T b,
                       T k0, T hi, int stream, ahead ady, ahead ax)
{
    VT va = vt_set1(a), vb = vt_set1(b), vk = vt_set1(k0), vhi = vt_set1(hi);
    int64_t i = 0;
    for (int64_t p = FN(peel)(dx, n); i < p; i++)
        dx[i] = FN(dx1)(dy[i], x[i], a, b, k0, hi);
    if (stream) {
        for (; i + VT_N <= n; i += VT_N) {
            prefetch_along(ady, i * (int64_t)sizeof(T), VT_N * (int)sizeof(T));
            prefetch_along(ax, i * (int64_t)sizeof(T), VT_N * (int)sizeof(T));
            vt_stream(dx + i, FN(dx_v)(vt_loadu(dy + i), vt_loadu(x + i), va, vb, vk, vhi));
        }
    }
    for (; i + VT_N <= n; i += VT_N) {
        prefetch_along(ady, i * (int64_t)sizeof(T), VT_N * (int)sizeof(T));
        prefetch_along(ax, i * (int64_t)sizeof(T), VT_N * (int)sizeof(T));
        vt_storeu(dx + i, FN(dx_v)(vt_loadu(dy + i), vt_loadu(x + i), va, vb, vk, vhi));
    }
    for (; i < n; i++)
        dx[i] = FN(dx1)(dy[i], x[i], a, b, k0, hi);
}

/* dx = a*dy (frozen statistics: x plays no part), prefetching ady along */
static void FN(run_scale)(const T *dy, T *dx, int64_t n, T a, int stream,
                          ahead ady)
{
    VT va = vt_set1(a);
    int64_t i = 0;
    for (int64_t p = FN(peel)(dx, n); i < p; i++)
        dx[i] = FN(scale1)(dy[i], a);
    if (stream) {
        for (; i + VT_N <= n; i += VT_N) {
            prefetch_along(ady, i * (int64_t)sizeof(T), VT_N * (int)sizeof(T));
            vt_stream(dx + i, FN(scale_v)(vt_loadu(dy + i), va));
        }
    }
    for (; i + VT_N <= n; i += VT_N) {
        prefetch_along(ady, i * (int64_t)sizeof(T), VT_N * (int)sizeof(T));
        vt_storeu(dx + i, FN(scale_v)(vt_loadu(dy + i), va));
    }
    for (; i < n; i++)
        dx[i] = FN(scale1)(dy[i], a);
}

/* -------------------------------------------------------------- planes --- */

/* Moments of chunk j of feature c, in one pass around the shift K when that
   is accurate, else in two (see "One pass or two" in kernels_common.h). */
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

/* sums of dy and dy*(x - mean) over one segment, chunk by chunk */
static void FN(planes_segment_grad)(const T *dy, const T *x, const planes_geom *g,
                                  int64_t c, int64_t s, double mean,
                                  double *sdy, double *sdyx)
{
    int64_t j1 = (s + 1) * SEG_CHUNKS < g->nchunks ? (s + 1) * SEG_CHUNKS : g->nchunks;
    double a = 0.0, b = 0.0;
    for (int64_t j = s * SEG_CHUNKS; j < j1; j++) {
        int64_t o0, o1, i0, i1;
        planes_chunk(g, j, &o0, &o1, &i0, &i1);
        for (int64_t o = o0; o < o1; o++) {
            int64_t off = (o * g->C + c) * g->inner + i0;
            prefetch_run(g, dy, sizeof(T), o, c, 0);
            prefetch_run(g, x, sizeof(T), o, c, 0);
            FN(run_grad)(dy + off, x + off, i1 - i0, mean, &a, &b,
                         next_piece(g, dy, sizeof(T), o, c, i0),
                         next_piece(g, x, sizeof(T), o, c, i0));
        }
    }
    *sdy = a;
    *sdyx = b;
}

/* Apply per-feature coefficients to the runs of one segment of feature c. */
static void FN(planes_segment_normalize)(const T *x, T *y, const planes_geom *g,
                                       int64_t c, int64_t s, FN(coef) k)
{
    int64_t j1 = (s + 1) * SEG_CHUNKS < g->nchunks ? (s + 1) * SEG_CHUNKS : g->nchunks;
    for (int64_t j = s * SEG_CHUNKS; j < j1; j++) {
        int64_t o0, o1, i0, i1;
        planes_chunk(g, j, &o0, &o1, &i0, &i1);
        for (int64_t o = o0; o < o1; o++) {
            int64_t off = (o * g->C + c) * g->inner + i0;
            if (!g->stream)  /* streaming stores read no lines */
                prefetch_run(g, y, sizeof(T), o, c, 1);
            FN(run_normalize)(x + off, y + off, i1 - i0, k, g->stream,
                              next_piece(g, x, sizeof(T), o, c, i0));
        }
    }
    if (g->stream)
        stream_fence();
}

/* planes_segment_normalize for a cold feature. */
static CBN_COLD void FN(planes_segment_normalize_cold)(const T *x, T *y,
                                                     const planes_geom *g, int64_t c,
                                                     int64_t s, const cold_coef *k)
{
    int64_t j1 = (s + 1) * SEG_CHUNKS < g->nchunks ? (s + 1) * SEG_CHUNKS : g->nchunks;
    for (int64_t j = s * SEG_CHUNKS; j < j1; j++) {
        int64_t o0, o1, i0, i1;
        planes_chunk(g, j, &o0, &o1, &i0, &i1);
        for (int64_t o = o0; o < o1; o++) {
            int64_t off = (o * g->C + c) * g->inner + i0;
            FN(cold_normalize)(x + off, y + off, i1 - i0, 1, k);
        }
    }
}

/* Coefficients of dx for feature c (see cbn.h), from the gradient sums. */
typedef struct {
    T a, b, k0, hi;
} FN(dcoef);

static FN(dcoef) FN(make_dcoef)(double sdy, double sdyx, double m, double mean,
                                double var, double eps, const double *gamma,
                                int batch_stats, int64_t c, double *dgamma,
                                double *dbeta)
{
    FN(dcoef) d;
    double invstd = 1.0 / sqrt(var + eps);
    double g = gamma ? gamma[c] : 1.0;
    if (dgamma) dgamma[c] = sdyx * invstd;
    if (dbeta) dbeta[c] = sdy;
    /* dx = a*dy + b*(x - mean) + k0 with x - mean = (x - hi) - lo, and the
       lo part folded into k0 in double (as the shift of make_coef) */
    /* invstd^2 times dgamma/m, which is O(1): invstd^3 alone under- or
       overflows for std beyond about 1e+-103 */
    double b = batch_stats ? -g * (invstd * invstd) * (invstd * sdyx / m) : 0.0;
    double k0 = batch_stats ? -g * invstd * sdy / m : 0.0;
    d.a = (T)(g * invstd);
    d.hi = (T)mean;
    d.b = (T)b;
    d.k0 = (T)(mean != (double)d.hi ? k0 - b * (mean - (double)d.hi) : k0);
    return d;
}

/* Whether float dx coefficients are ones float holds at full precision:
   the fast paths' test (see "Cold features" in kernels_common.h; without
   batch statistics only a plays a part), branch-free so that loops over
   columns vectorize. */
static inline int FN(dcoef_ok)(T a, T b, T k0, T hi, int batch_stats)
{
    return f32_factor_ok((float)a)
           & ((batch_stats == 0) | (f32_factor_ok((float)b) & (fabsf((float)k0) <= FLT_MAX)
                              & (fabsf((float)hi) <= FLT_MAX)));
}

/* Whether feature c, whose dx coefficients make_dcoef made as d from the
   sums sdy and sdyx, is cold: then *cd holds its double coefficients. One
   test of d on the fast path; never for double data. */
static inline int FN(dcoef_cold)(FN(dcoef) d, double sdy, double sdyx, double m,
                                 double mean, double var, double eps,
                                 const double *gamma, int batch_stats,
                                 int64_t c, cold_dcoef *cd)
{
    return T_IS_F32 && !FN(dcoef_ok)(d.a, d.b, d.k0, d.hi, batch_stats)
           && cold_dcoef_of(sdy, sdyx, m, mean, var, eps, gamma, batch_stats, c, cd);
}

/* A cold feature's dx at n elements ld apart, in double (see cold_dcoef),
   rounded once. */
static CBN_COLD void FN(cold_dx)(const T *dy, const T *x, T *dx, int64_t n,
                                 int64_t ld, const cold_dcoef *d, int batch_stats)
{
    if (batch_stats) {
        for (int64_t i = 0; i < n; i++)
            dx[i * ld] = (T)(d->a * (double)dy[i * ld]
                             + d->c1 * (((double)x[i * ld] - d->mean) * d->invstd) + d->k1);
    } else {  /* x plays no part; + 0.0 signs a zero as run_scale does */
        for (int64_t i = 0; i < n; i++)
            dx[i * ld] = (T)(d->a * (double)dy[i * ld] + 0.0);
    }
}

/* planes_segment_dx for a cold feature. */
static CBN_COLD void FN(planes_segment_dx_cold)(const T *dy, const T *x, T *dx,
                                              const planes_geom *g, int64_t c,
                                              int64_t s, const cold_dcoef *d,
                                              int batch_stats)
{
    int64_t j1 = (s + 1) * SEG_CHUNKS < g->nchunks ? (s + 1) * SEG_CHUNKS : g->nchunks;
    for (int64_t j = s * SEG_CHUNKS; j < j1; j++) {
        int64_t o0, o1, i0, i1;
        planes_chunk(g, j, &o0, &o1, &i0, &i1);
        for (int64_t o = o0; o < o1; o++) {
            int64_t off = (o * g->C + c) * g->inner + i0;
            FN(cold_dx)(dy + off, x + off, dx + off, i1 - i0, 1, d, batch_stats);
        }
    }
}

static void FN(planes_segment_dx)(const T *dy, const T *x, T *dx,
                                const planes_geom *g, int64_t c, int64_t s,
                                FN(dcoef) d, int batch_stats)
{
    int64_t j1 = (s + 1) * SEG_CHUNKS < g->nchunks ? (s + 1) * SEG_CHUNKS : g->nchunks;
    for (int64_t j = s * SEG_CHUNKS; j < j1; j++) {
        int64_t o0, o1, i0, i1;
        planes_chunk(g, j, &o0, &o1, &i0, &i1);
        for (int64_t o = o0; o < o1; o++) {
            int64_t off = (o * g->C + c) * g->inner + i0;
            if (!g->stream)
                prefetch_run(g, dx, sizeof(T), o, c, 1);
            ahead ady = next_piece(g, dy, sizeof(T), o, c, i0);
            if (batch_stats)
                FN(run_dx)(dy + off, x + off, dx + off, i1 - i0, d.a, d.b,
                           d.k0, d.hi, g->stream, ady,
                           next_piece(g, x, sizeof(T), o, c, i0));
            else
                FN(run_scale)(dy + off, dx + off, i1 - i0, d.a, g->stream, ady);
        }
    }
    if (g->stream)
        stream_fence();
}

/* Statistics of feature c, then its normalized output (when y). */
static void FN(planes_train_feature)(const T *x, T *y, const planes_geom *g,
                                   int64_t c, const double *gamma,
                                   const double *beta, double eps,
                                   double *mean, double *var)
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
                FN(planes_segment_normalize_cold)(x, y, g, c, s, &ck);
        else
            for (int64_t s = 0; s < g->nseg; s++)
                FN(planes_segment_normalize)(x, y, g, c, s, k);
    }
    if (mean) mean[c] = mu;
    if (var) var[c] = v;
}

/* ------------------------------------------------------------- calls --- */
/* A call's arguments, shared by the range functions its threads run (see
   core/parallel.h). */
typedef struct {
    const T *x, *dy;
    T *out;                     /* y or dx, or NULL */
    int64_t outer, C, inner;
    const planes_geom *pg;        /* the geometry of inner > 1 ... */
    const rows_geom *rg;        /* ... or of inner == 1 */
    const double *mean, *var;   /* given statistics */
    const double *gamma, *beta;
    double eps, m;
    int batch_stats, stream;
    double *mean_out, *var_out; /* forward_train's statistics */
    double *dgamma, *dbeta;     /* backward's sums */
    const double *given_dgamma, *given_dbeta; /* backward_dx's */
    split_sums sp;
} FN(job);

/* The merged moments of a split-batch pass become the mean and variance
   (rescued where they overflowed), in sp's totals and in the outputs. */
static void FN(train_merged)(void *ctx)
{
    FN(job) *j = (FN(job) *)ctx;
    double *tmean = j->sp.part, *tvar = j->sp.part + j->C;
    for (int64_t c = 0; c < j->C; c++)
        tvar[c] /= j->m;  /* m2 becomes the variance */
    columns_finite_or_rescued(j->x, T_IS_F32, j->outer, j->C, j->inner, 0, j->C,
                              tmean, tvar);
    for (int64_t c = 0; c < j->C; c++) {
        if (j->mean_out) j->mean_out[c] = tmean[c];
        if (j->var_out) j->var_out[c] = tvar[c];
    }
}

/* The dgamma and dbeta of backward from a split-batch pass's totals. */
static void FN(backward_split_sums)(const FN(job) *j)
{
    for (int64_t c = 0; c < j->C; c++)
        FN(make_dcoef)(j->sp.part[c], j->sp.part[j->C + c], j->m, j->mean[c], j->var[c],
                       j->eps, j->gamma, j->batch_stats, c, j->dgamma, j->dbeta);
}

/* Features [c0, c1): statistics, then output. */
static void FN(planes_train_features)(void *ctx, int64_t c0, int64_t c1)
{
    const FN(job) *j = (const FN(job) *)ctx;
    for (int64_t c = c0; c < c1; c++)
        FN(planes_train_feature)(j->x, j->out, j->pg, c, j->gamma, j->beta, j->eps,
                               j->mean_out, j->var_out);
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
            FN(planes_segment_normalize_cold)(j->x, j->out, j->pg, c, s, &ck);
        else
            FN(planes_segment_normalize)(j->x, j->out, j->pg, c, s, k);
    }
}

static void FN(planes_forward_train)(const T *x, T *y, int64_t outer, int64_t C,
                                   int64_t inner, const double *gamma,
                                   const double *beta, double eps,
                                   double *mean, double *var)
{
    const planes_geom g = planes_geometry(outer, C, inner, sizeof(T));
    const int nt = threads_for(outer * C * inner);
    FN(job) j = {0};
    j.x = x, j.out = y, j.outer = outer, j.C = C, j.inner = inner, j.pg = &g;
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

/* Run r (feature r % C) with the given statistics. */
static void FN(planes_infer_run)(const T *x, T *y, int64_t outer, int64_t C,
                          int64_t inner, int64_t r, const double *mean,
                          const double *var, const double *gamma,
                          const double *beta, double eps, int stream)
{
    const int64_t total = outer * C * inner;
    int64_t c = r % C;
    FN(coef) k = FN(make_coef)(mean[c], var[c], eps, gamma, beta, c);
    cold_coef ck;
    if (FN(coef_cold)(k, mean[c], var[c], eps, gamma, beta, c, &ck)) {
        FN(cold_normalize)(x + r * inner, y + r * inner, inner, 1, &ck);
        return;
    }
    /* prefetched along where streamed: below that size, measured slower */
    FN(run_normalize)(x + r * inner, y + r * inner, inner, k, stream,
                      stream_ahead(x, r * inner, inner, total, sizeof(T), stream));
    if (stream)
        stream_fence();
}

/* Runs [r0, r1) with the given statistics. */
static void FN(planes_infer_runs)(void *ctx, int64_t r0, int64_t r1)
{
    const FN(job) *j = (const FN(job) *)ctx;
    for (int64_t r = r0; r < r1; r++)
        FN(planes_infer_run)(j->x, j->out, j->outer, j->C, j->inner, r, j->mean, j->var,
                      j->gamma, j->beta, j->eps, j->stream);
}

static void FN(planes_forward_infer)(const T *x, T *y, int64_t outer, int64_t C,
                                   int64_t inner, const double *mean,
                                   const double *var, const double *gamma,
                                   const double *beta, double eps)
{
    FN(job) j = {0};
    j.x = x, j.out = y, j.outer = outer, j.C = C, j.inner = inner;
    j.mean = mean, j.var = var, j.gamma = gamma, j.beta = beta, j.eps = eps;
    j.stream = outer * C * inner * (int64_t)sizeof(T) >= CBN_STREAM_MIN_BYTES_EVAL;
    /* every run is independent: share them out in order */
    for_ranges(threads_for(outer * C * inner), outer * C, FN(planes_infer_runs), &j);
}

/* Gradient sums of feature c, then its dx (when dx). */
static void FN(planes_backward_feature)(const T *dy, const T *x, T *dx,
                                      const planes_geom *g, int64_t c,
                                      const double *mean, const double *var,
                                      const double *gamma, double eps,
                                      int batch_stats, double *dgamma,
                                      double *dbeta)
{
    const double m = (double)g->outer * (double)g->inner;
    double sdy = 0.0, sdyx = 0.0;
    for (int64_t s = 0; s < g->nseg; s++) {
        double a, b;
        FN(planes_segment_grad)(dy, x, g, c, s, mean[c], &a, &b);
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
                FN(planes_segment_dx_cold)(dy, x, dx, g, c, s, &cd, batch_stats);
        else
            for (int64_t s = 0; s < g->nseg; s++)
                FN(planes_segment_dx)(dy, x, dx, g, c, s, d, batch_stats);
    }
}

/* Features [c0, c1): gradient sums, then dx. */
static void FN(planes_backward_features)(void *ctx, int64_t c0, int64_t c1)
{
    const FN(job) *j = (const FN(job) *)ctx;
    for (int64_t c = c0; c < c1; c++)
        FN(planes_backward_feature)(j->dy, j->x, j->out, j->pg, c, j->mean, j->var,
                                  j->gamma, j->eps, j->batch_stats, j->dgamma,
                                  j->dbeta);
}

/* Pieces (feature, segment) [i0, i1) of a split batch: their gradient sums. */
static void FN(planes_backward_partials)(void *ctx, int64_t i0, int64_t i1)
{
    FN(job) *j = (FN(job) *)ctx;
    const int64_t C = j->C, nseg = j->pg->nseg;
    for (int64_t idx = i0; idx < i1; idx++) {
        const int64_t c = idx / nseg, s = idx % nseg;
        FN(planes_segment_grad)(j->dy, j->x, j->pg, c, s, j->mean[c],
                              &j->sp.part[2 * C * s + c], &j->sp.part[2 * C * s + C + c]);
    }
}

/* Pieces [i0, i1) of a split batch: their dx, from the total sums. */
static void FN(planes_backward_output)(void *ctx, int64_t i0, int64_t i1)
{
    const FN(job) *j = (const FN(job) *)ctx;
    const int64_t nseg = j->pg->nseg;
    for (int64_t idx = i0; idx < i1; idx++) {
        const int64_t c = idx / nseg, s = idx % nseg;
        const double sdy = j->sp.part[c], sdyx = j->sp.part[j->C + c];
        FN(dcoef) d = FN(make_dcoef)(sdy, sdyx, j->m, j->mean[c], j->var[c], j->eps,
                                     j->gamma, j->batch_stats, c, NULL, NULL);
        cold_dcoef cd;
        if (FN(dcoef_cold)(d, sdy, sdyx, j->m, j->mean[c], j->var[c], j->eps, j->gamma,
                           j->batch_stats, c, &cd))
            FN(planes_segment_dx_cold)(j->dy, j->x, j->out, j->pg, c, s, &cd, j->batch_stats);
        else
            FN(planes_segment_dx)(j->dy, j->x, j->out, j->pg, c, s, d, j->batch_stats);
    }
}

static void FN(planes_backward)(const T *dy, const T *x, T *dx, int64_t outer,
                              int64_t C, int64_t inner, const double *mean,
                              const double *var, const double *gamma,
                              double eps, int batch_stats, double *dgamma,
                              double *dbeta)
{
    const planes_geom g = planes_geometry(outer, C, inner, sizeof(T));
    const int nt = threads_for(outer * C * inner);
    FN(job) j = {0};
    j.dy = dy, j.x = x, j.out = dx, j.outer = outer, j.C = C, j.inner = inner, j.pg = &g;
    j.mean = mean, j.var = var, j.gamma = gamma, j.eps = eps;
    j.m = (double)outer * (double)inner, j.batch_stats = batch_stats;
    j.dgamma = dgamma, j.dbeta = dbeta;
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

/* ---------------------------------------------------------------- rows --- */
/* inner == 1: row r is x[r*C .. r*C + C). How rows and columns are cut into
   blocks, segments and chunks: see rows_geom in kernels_common.h. */

/* The column sums below take k <= 4 rows `ld` apart at a time and add their
   combined values to the accumulators once, so the accumulators (in L1, one
   per column) are loaded and stored once per four rows rather than per row. */

/* acc[j] += sum over the k rows of row[j], j < nb, in double. Four rows are
   summed as a tree, not a chain: the rows are independent. */
static void FN(rows_add)(const T *row, int64_t ld, int k, int nb, double *acc)
{
    int j = 0;
    for (; j + STEP <= nb; j += STEP) {
        vd sl, sh, l, h;
        vt_load2(row + j, &sl, &sh);
        if (k == 4) {
            vd l1, h1, l2, h2, l3, h3;
            vt_load2(row + ld + j, &l1, &h1);
            vt_load2(row + 2 * ld + j, &l2, &h2);
            vt_load2(row + 3 * ld + j, &l3, &h3);
            sl = vd_add(vd_add(sl, l1), vd_add(l2, l3));
            sh = vd_add(vd_add(sh, h1), vd_add(h2, h3));
        } else {
            for (int r = 1; r < k; r++) {
                vt_load2(row + r * ld + j, &l, &h);
                sl = vd_add(sl, l);
                sh = vd_add(sh, h);
            }
        }
        add_into(acc + j, sl, sh);
    }
    for (; j < nb; j++) {
        double t = 0.0;
        for (int r = 0; r < k; r++)
            t += (double)row[r * ld + j];
        acc[j] += t;
    }
}

/* s1[j] += sum(row[j] - mu[j]), s2[j] += sum((row[j] - mu[j])^2) over k rows;
   rows pf further down are prefetched when pf > 0 */
static void FN(rows_dev)(const T *row, int64_t ld, int k, int nb,
                         const double *mu, double *s1, double *s2, int pf)
{
    int j = 0;
    for (; j + STEP <= nb; j += STEP) {
        vd ml = vd_loadu(mu + j), mh = vd_loadu(mu + j + VD_N), al, ah, ql, qh;
        if (k == 4) {
            vd l[4], h[4];
            for (int r = 0; r < 4; r++) {
                if (pf)
                    CBN_PREFETCH(row + (r + pf) * ld + j);
                vt_load2(row + r * ld + j, &l[r], &h[r]);
                l[r] = vd_sub(l[r], ml);
                h[r] = vd_sub(h[r], mh);
            }
            sum4(l, &al, &ql);
            sum4(h, &ah, &qh);
        } else {
            al = ah = ql = qh = vd_zero();
            for (int r = 0; r < k; r++) {
                vd l, h;
                vt_load2(row + r * ld + j, &l, &h);
                l = vd_sub(l, ml);
                h = vd_sub(h, mh);
                al = vd_add(al, l);
                ah = vd_add(ah, h);
                ql = vd_fmadd(l, l, ql);
                qh = vd_fmadd(h, h, qh);
            }
        }
        add_into(s1 + j, al, ah);
        add_into(s2 + j, ql, qh);
    }
    for (; j < nb; j++) {
        double a = 0.0, q = 0.0;
        for (int r = 0; r < k; r++) {
            double d = (double)row[r * ld + j] - mu[j];
            a += d;
            q += d * d;
        }
        s1[j] += a;
        s2[j] += q;
    }
}

/* s1[j] += sum(dy[j]), s2[j] += sum(dy[j]*(x[j] - mean[j])) over k rows;
   prefetching as rows_dev */
static void FN(rows_grad)(const T *dyr, const T *xr, int64_t ld, int k, int nb,
                          const double *mean, double *s1, double *s2, int pf)
{
    int j = 0;
    for (; j + STEP <= nb; j += STEP) {
        vd ml = vd_loadu(mean + j), mh = vd_loadu(mean + j + VD_N), al, ah, ql, qh;
        if (k == 4) {
            vd gl[4], gh[4], pl[4], ph[4], xl, xh;
            for (int r = 0; r < 4; r++) {
                if (pf) {
                    CBN_PREFETCH(dyr + (r + pf) * ld + j);
                    CBN_PREFETCH(xr + (r + pf) * ld + j);
                }
                vt_load2(dyr + r * ld + j, &gl[r], &gh[r]);
                vt_load2(xr + r * ld + j, &xl, &xh);
                pl[r] = vd_mul(gl[r], vd_sub(xl, ml));
                ph[r] = vd_mul(gh[r], vd_sub(xh, mh));
            }
            al = vd_add(vd_add(gl[0], gl[1]), vd_add(gl[2], gl[3]));
            ah = vd_add(vd_add(gh[0], gh[1]), vd_add(gh[2], gh[3]));
            ql = vd_add(vd_add(pl[0], pl[1]), vd_add(pl[2], pl[3]));
            qh = vd_add(vd_add(ph[0], ph[1]), vd_add(ph[2], ph[3]));
        } else {
            al = ah = ql = qh = vd_zero();
            for (int r = 0; r < k; r++) {
                vd gl, gh, xl, xh;
                vt_load2(dyr + r * ld + j, &gl, &gh);
                vt_load2(xr + r * ld + j, &xl, &xh);
                al = vd_add(al, gl);
                ah = vd_add(ah, gh);
                ql = vd_fmadd(gl, vd_sub(xl, ml), ql);
                qh = vd_fmadd(gh, vd_sub(xh, mh), qh);
            }
        }
        add_into(s1 + j, al, ah);
        add_into(s2 + j, ql, qh);
    }
    for (; j < nb; j++) {
        double a = 0.0, q = 0.0;
        for (int r = 0; r < k; r++) {
            double g = (double)dyr[r * ld + j];
            a += g;
            q += g * ((double)xr[r * ld + j] - mean[j]);
        }
        s1[j] += a;
        s2[j] += q;
    }
}

#define ROWS_AT_ONCE(a, b) ((b) - (a) < 4 ? (int)((b) - (a)) : 4)

/* s1[j] += sum(x - mu[j]), s2[j] += sum((x - mu[j])^2) over the rows [a, b)
   of columns [c0, c0+nb), in strips of STRIP_STEPS*STEP columns whose sums
   run down the rows in registers, each column a chain in row order. */
static void FN(rows_chunk_dev)(const T *x, const rows_geom *g, int64_t c0,
                               int nb, int64_t a, int64_t b, const double *mu,
                               double *s1, double *s2)
{
    const int64_t ld = g->C;
    int j = 0;
    for (; j + STRIP_STEPS * STEP <= nb; j += STRIP_STEPS * STEP) {
        vd m[STRIP_VECS], s[STRIP_VECS], q[STRIP_VECS];
        strip_load(mu, s1, s2, j, m, s, q);
        for (int64_t r = a; r < b; r++) {
            const T *row = x + r * ld + c0 + j;
            const int pf = prefetch_ahead(g, r, 1);
            for (int u = 0; u < STRIP_STEPS; u++) {
                vd l, h;
                if (pf)
                    CBN_PREFETCH(row + pf * ld + u * STEP);
                vt_load2(row + u * STEP, &l, &h);
                l = vd_sub(l, m[2 * u]);
                h = vd_sub(h, m[2 * u + 1]);
                s[2 * u] = vd_add(s[2 * u], l);
                s[2 * u + 1] = vd_add(s[2 * u + 1], h);
                q[2 * u] = vd_fmadd(l, l, q[2 * u]);
                q[2 * u + 1] = vd_fmadd(h, h, q[2 * u + 1]);
            }
        }
        strip_store(s1, s2, j, s, q);
    }
    if (j < nb)  /* the rest row by row, as rows_dev does */
        for (int64_t r = a; r < b; r += ROWS_AT_ONCE(r, b))
            FN(rows_dev)(x + r * ld + c0 + j, ld, ROWS_AT_ONCE(r, b), nb - j,
                         mu + j, s1 + j, s2 + j, prefetch_ahead(g, r, ROWS_AT_ONCE(r, b)));
}


/* The exact two passes over n values ld apart: *mu = their mean,
   *s1 = sum(p - mu), *s2 = sum((p - mu)^2). */
static void FN(column_two_pass)(const T *p, int64_t ld, int64_t n, double *mu,
                                double *s1, double *s2)
{
    double s = 0.0, a = 0.0, q = 0.0;
    for (int64_t r = 0; r < n; r++)
        s += (double)p[r * ld];
    *mu = s / (double)n;
    for (int64_t r = 0; r < n; r++) {
        double d = (double)p[r * ld] - *mu;
        a += d;
        q += d * d;
    }
    *s1 = a;
    *s2 = q;
}

/* s1[j] += sum(dy), s2[j] += sum(dy*(x - mean[j])) over the rows [a, b) of
   columns [c0, c0+nb), in register strips as rows_chunk_dev. */
static void FN(rows_chunk_grad)(const T *dy, const T *x, const rows_geom *g,
                                int64_t c0, int nb, int64_t a, int64_t b,
                                const double *mean, double *s1, double *s2)
{
    const int64_t ld = g->C;
    int j = 0;
    for (; j + STRIP_STEPS * STEP <= nb; j += STRIP_STEPS * STEP) {
        vd m[STRIP_VECS], s[STRIP_VECS], q[STRIP_VECS];
        strip_load(mean, s1, s2, j, m, s, q);
        for (int64_t r = a; r < b; r++) {
            const int64_t off = r * ld + c0 + j;
            const int pf = prefetch_ahead(g, r, 1);
            for (int u = 0; u < STRIP_STEPS; u++) {
                vd gl, gh, xl, xh;
                if (pf) {
                    CBN_PREFETCH(dy + off + pf * ld + u * STEP);
                    CBN_PREFETCH(x + off + pf * ld + u * STEP);
                }
                vt_load2(dy + off + u * STEP, &gl, &gh);
                vt_load2(x + off + u * STEP, &xl, &xh);
                s[2 * u] = vd_add(s[2 * u], gl);
                s[2 * u + 1] = vd_add(s[2 * u + 1], gh);
                q[2 * u] = vd_fmadd(gl, vd_sub(xl, m[2 * u]), q[2 * u]);
                q[2 * u + 1] = vd_fmadd(gh, vd_sub(xh, m[2 * u + 1]), q[2 * u + 1]);
            }
        }
        strip_store(s1, s2, j, s, q);
    }
    if (j < nb)  /* the rest row by row, as rows_grad does */
        for (int64_t r = a; r < b; r += ROWS_AT_ONCE(r, b))
            FN(rows_grad)(dy + r * ld + c0 + j, x + r * ld + c0 + j, ld,
                          ROWS_AT_ONCE(r, b), nb - j, mean + j, s1 + j, s2 + j,
                          prefetch_ahead(g, r, ROWS_AT_ONCE(r, b)));
}

/* Moments of columns [c0, c0+nb) over rows [r0, r1), chunk by chunk, into
   mean[j], m2[j]; returns the count. */
static double FN(rows_segment_moments)(const T *x, const rows_geom *g,
                                       int64_t c0, int nb, int64_t r0,
                                       int64_t r1, double *mean, double *m2)
{
    double K[ROW_BLOCK], s1[ROW_BLOCK], s2[ROW_BLOCK], n = 0.0;
    int64_t r, r8 = r1 - r0 < 8 ? r1 : r0 + 8;
    /* shifts: the mean of the segment's first rows (up to 8), then its
       running means. One row alone is more than a standard deviation from
       its column's mean a third of the time, which would cost the chunk a
       second pass. */
    for (int j = 0; j < nb; j++)
        K[j] = 0.0, mean[j] = 0.0, m2[j] = 0.0;
    for (r = r0; r < r8; r += ROWS_AT_ONCE(r, r8))
        FN(rows_add)(x + r * g->C + c0, g->C, ROWS_AT_ONCE(r, r8), nb, K);
    for (int j = 0; j < nb; j++)
        K[j] /= (double)(r8 - r0);
    for (int64_t a = r0; a < r1; a += g->R) {
        int64_t b = a + g->R < r1 ? a + g->R : r1;
        double nk = (double)(b - a);
        int inaccurate = 0;
        for (int j = 0; j < nb; j++)
            s1[j] = 0.0, s2[j] = 0.0;
        FN(rows_chunk_dev)(x, g, c0, nb, a, b, K, s1, s2);
        for (int j = 0; j < nb; j++)
            inaccurate += !shift_is_accurate(nk, s1[j], s2[j]);
        if (inaccurate > nb / 8) {  /* exact two passes over the chunk, all columns */
            for (int j = 0; j < nb; j++)
                K[j] = 0.0, s1[j] = 0.0, s2[j] = 0.0;
            for (r = a; r < b; r += ROWS_AT_ONCE(r, b))
                FN(rows_add)(x + r * g->C + c0, g->C, ROWS_AT_ONCE(r, b), nb, K);
            for (int j = 0; j < nb; j++)
                K[j] /= nk;
            for (r = a; r < b; r += ROWS_AT_ONCE(r, b))
                FN(rows_dev)(x + r * g->C + c0, g->C, ROWS_AT_ONCE(r, b), nb, K, s1, s2, 0);
        } else if (inaccurate) {  /* the same, column by column, for the few */
            for (int j = 0; j < nb; j++)
                if (!shift_is_accurate(nk, s1[j], s2[j]))
                    FN(column_two_pass)(x + a * g->C + c0 + j, g->C, b - a,
                                        &K[j], &s1[j], &s2[j]);
        }
        fold_columns(nb, n, nk, K, s1, s2, mean, m2);
        n += nk;
        for (int j = 0; j < nb; j++)
            K[j] = mean[j];
    }
    return n;
}

/* ----------------------------------------------------------- flat rows --- */
/* When all C columns sit in one block, rows [r0, r1) are the contiguous
   elements [r0*C, r1*C), and the elementwise passes (normalize, dx) run over
   them as one flat stream: no loop per row (a row of 64 floats is only four
   vectors), loads and stores aligned to the output however rows fall on
   cache lines (NumPy's large arrays start 16 bytes past a line, so row by row
   every 64-byte access would span two), and streaming stores where the
   output is large. The vector at element e, e - a0 a multiple of VT_N (a0:
   the output's first vector-aligned element), holds the columns
   (e .. e + VT_N) % C; with P = lcm(C, VT_N) these repeat every P elements,
   so each per-column coefficient is laid out once per call as a sequence of
   period P starting at column a0 % C, which a vector reads at (e - a0) % P.
   Every element gets exactly the arithmetic of the row-by-row loops. */

#define FLAT_MAX ROW_BLOCK  /* longest period laid out */

typedef struct {
    int64_t P, a0;
    int64_t c0;  /* a0 % C: the column at phase 0 */
    int64_t n;  /* elements in the pass's arrays */
    int along;  /* prefetch the inputs along (see stream_ahead) */
    T *k;  /* coefficient i of element e at k[i*P + (e - a0) mod P] */
    T buf[4 * FLAT_MAX + 64 / sizeof(T)];
} FN(flat);

/* Plan a flat pass writing the outer*C elements of out: 0 (use the row
   loops) when the period is too long or out is not aligned to its elements.
   The coefficients are then placed with flat_put. */
static int FN(flat_plan)(FN(flat) *f, const T *out, int64_t outer, int64_t C)
{
    int64_t g = C, v = VT_N;
    while (v) {  /* gcd(C, VT_N) */
        int64_t t = g % v;
        g = v;
        v = t;
    }
    f->P = C / g * VT_N;
    if (f->P > FLAT_MAX || (uintptr_t)out % sizeof(T))
        return 0;
    f->a0 = FN(peel)(out, outer * C);
    f->c0 = f->a0 % C;
    f->n = outer * C;
    f->along = f->n * (int64_t)sizeof(T) >= CBN_PREFETCH_MIN_BYTES;
    f->k = (T *)((uintptr_t)f->buf + (64 - (uintptr_t)f->buf % 64) % 64);
    return 1;
}

/* Coefficient i of column c is v: at its phase q < C, (a0 + q) % C == c
   (flat_repeat copies the first C phases over the rest of the period). */
static inline void FN(flat_put)(FN(flat) *f, int64_t C, int i, int64_t c, T v)
{
    f->k[i * f->P + (c >= f->c0 ? c - f->c0 : c + C - f->c0)] = v;
}

/* The nk coefficients of phases [0, C) repeated over [C, P). */
static void FN(flat_repeat)(FN(flat) *f, int64_t C, int nk)
{
    for (int i = 0; i < nk; i++)
        for (int64_t q = C; q < f->P; q += C)
            memcpy(f->k + i * f->P + q, f->k + i * f->P, (size_t)C * sizeof(T));
}

/* (e - a0) mod P, for any element e */
static inline int64_t FN(flat_phase)(const FN(flat) *f, int64_t e)
{
    int64_t q = (e - f->a0) % f->P;
    return q < 0 ? q + f->P : q;
}

/* The phase one vector after phase q. */
static inline int64_t FN(flat_next)(const FN(flat) *f, int64_t q)
{
    return q + VT_N < f->P ? q + VT_N : 0;
}

/* How a flat pass over the elements [e0, e1) is cut: single elements up to
   v0, the first one a whole number of vectors from a0 (so the output's
   vectors are aligned); whole vectors up to v1; single elements after. */
static inline void FN(flat_cut)(const FN(flat) *f, int64_t e0, int64_t e1,
                                int64_t *v0, int64_t *v1)
{
    int64_t e = e0;
    while (e < e1 && (e - f->a0) % VT_N)
        e++;
    *v0 = e;
    *v1 = e + (e1 - e) / VT_N * VT_N;
}

/* y = (x - hi)*sc + sh over the elements [e0, e1); f holds hi, sc, sh */
static void FN(flat_normalize)(const T *x, T *y, int64_t e0, int64_t e1,
                               const FN(flat) *f, int stream)
{
    const int64_t P = f->P;
    const T *hi = f->k, *sc = hi + P, *sh = sc + P;
    const ahead ax = stream_ahead(x, e0, e1 - e0, f->n, sizeof(T), f->along);
    const int span = VT_N * (int)sizeof(T);
    int64_t v0, v1, e, q;
    FN(flat_cut)(f, e0, e1, &v0, &v1);
    for (e = e0; e < v0; e++) {
        q = FN(flat_phase)(f, e);
        y[e] = FN(normalize1)(x[e], hi[q], sc[q], sh[q]);
    }
    q = FN(flat_phase)(f, v0);
    if (stream) {
        for (e = v0; e < v1; e += VT_N, q = FN(flat_next)(f, q)) {
            prefetch_along(ax, (e - e0) * (int64_t)sizeof(T), span);
            vt_stream(y + e, FN(normalize_v)(vt_loadu(x + e), vt_loadu(hi + q),
                                             vt_loadu(sc + q), vt_loadu(sh + q)));
        }
        stream_fence();
    } else {
        for (e = v0; e < v1; e += VT_N, q = FN(flat_next)(f, q)) {
            prefetch_along(ax, (e - e0) * (int64_t)sizeof(T), span);
            vt_storeu(y + e, FN(normalize_v)(vt_loadu(x + e), vt_loadu(hi + q),
                                             vt_loadu(sc + q), vt_loadu(sh + q)));
        }
    }
    for (e = v1; e < e1; e++) {
        q = FN(flat_phase)(f, e);
        y[e] = FN(normalize1)(x[e], hi[q], sc[q], sh[q]);
    }
}

/* dx = a*dy over the elements [e0, e1): x plays no part (a NaN there stays
   out); f holds a */
static void FN(flat_scale)(const T *dy, T *dx, int64_t e0, int64_t e1,
                           const FN(flat) *f, int stream)
{
    const T *a = f->k;
    const ahead ady = stream_ahead(dy, e0, e1 - e0, f->n, sizeof(T), f->along);
    const int span = VT_N * (int)sizeof(T);
    int64_t v0, v1, e, q;
    FN(flat_cut)(f, e0, e1, &v0, &v1);
    for (e = e0; e < v0; e++) {
        q = FN(flat_phase)(f, e);
        dx[e] = FN(scale1)(dy[e], a[q]);
    }
    q = FN(flat_phase)(f, v0);
    if (stream) {
        for (e = v0; e < v1; e += VT_N, q = FN(flat_next)(f, q)) {
            prefetch_along(ady, (e - e0) * (int64_t)sizeof(T), span);
            vt_stream(dx + e, FN(scale_v)(vt_loadu(dy + e), vt_loadu(a + q)));
        }
        stream_fence();
    } else {
        for (e = v0; e < v1; e += VT_N, q = FN(flat_next)(f, q)) {
            prefetch_along(ady, (e - e0) * (int64_t)sizeof(T), span);
            vt_storeu(dx + e, FN(scale_v)(vt_loadu(dy + e), vt_loadu(a + q)));
        }
    }
    for (e = v1; e < e1; e++) {
        q = FN(flat_phase)(f, e);
        dx[e] = FN(scale1)(dy[e], a[q]);
    }
}

/* dx = a*dy + (b*(x - hi) + k0) over the elements [e0, e1), or a*dy alone
   without batch_stats; f holds a, b, k0, hi */
static void FN(flat_dx)(const T *dy, const T *x, T *dx, int64_t e0, int64_t e1,
                        const FN(flat) *f, int batch_stats, int stream)
{
    if (!batch_stats) {
        FN(flat_scale)(dy, dx, e0, e1, f, stream);
        return;
    }
    const int64_t P = f->P;
    const T *a = f->k, *b = a + P, *k0 = b + P, *hi = k0 + P;
    const ahead ady = stream_ahead(dy, e0, e1 - e0, f->n, sizeof(T), f->along);
    const ahead ax = stream_ahead(x, e0, e1 - e0, f->n, sizeof(T), f->along);
    const int span = VT_N * (int)sizeof(T);
    int64_t v0, v1, e, q;
    FN(flat_cut)(f, e0, e1, &v0, &v1);
    for (e = e0; e < v0; e++) {
        q = FN(flat_phase)(f, e);
        dx[e] = FN(dx1)(dy[e], x[e], a[q], b[q], k0[q], hi[q]);
    }
    q = FN(flat_phase)(f, v0);
    if (stream) {
        for (e = v0; e < v1; e += VT_N, q = FN(flat_next)(f, q)) {
            prefetch_along(ady, (e - e0) * (int64_t)sizeof(T), span);
            prefetch_along(ax, (e - e0) * (int64_t)sizeof(T), span);
            vt_stream(dx + e, FN(dx_v)(vt_loadu(dy + e), vt_loadu(x + e), vt_loadu(a + q),
                                       vt_loadu(b + q), vt_loadu(k0 + q), vt_loadu(hi + q)));
        }
        stream_fence();
    } else {
        for (e = v0; e < v1; e += VT_N, q = FN(flat_next)(f, q)) {
            prefetch_along(ady, (e - e0) * (int64_t)sizeof(T), span);
            prefetch_along(ax, (e - e0) * (int64_t)sizeof(T), span);
            vt_storeu(dx + e, FN(dx_v)(vt_loadu(dy + e), vt_loadu(x + e), vt_loadu(a + q),
                                       vt_loadu(b + q), vt_loadu(k0 + q), vt_loadu(hi + q)));
        }
    }
    for (e = v1; e < e1; e++) {
        q = FN(flat_phase)(f, e);
        dx[e] = FN(dx1)(dy[e], x[e], a[q], b[q], k0[q], hi[q]);
    }
}

/* ------------------------------------------------- rows: output passes --- */

/* The per-column coefficients of a column block's elementwise pass --
   normalize: hi, scale, shift; dx: a, b, k0, hi -- laid out flat (fp set)
   when the block is the whole row and a flat pass applies, else as arrays
   per column for the row loops. Only one of the two is ever needed, so they
   share memory: these sit on OpenMP worker stacks, which can be as small
   as 128 KiB (musl). */
typedef struct {
    const FN(flat) *fp;
    int cold;  /* a column may be cold: the block takes the cold pass */
    union {
        T col[4][ROW_BLOCK];
        FN(flat) f;
    } u;
} FN(bcoefs);

/* Start the coefficients of a block whose output is out. */
static void FN(bcoefs_start)(FN(bcoefs) *k, const T *out, const rows_geom *g)
{
    k->fp = g->nblocks == 1 && FN(flat_plan)(&k->u.f, out, g->outer, g->C)
                ? &k->u.f : NULL;
    k->cold = 0;
}

/* Coefficient i of the block's column j is v (then bcoefs_finish). */
static inline void FN(bcoefs_put)(FN(bcoefs) *k, const rows_geom *g, int i,
                                  int j, T v)
{
    if (k->fp)
        FN(flat_put)(&k->u.f, g->C, i, j, v);
    else
        k->u.col[i][j] = v;
}

/* Coefficient i of the block's column j, as bcoefs_put placed it. */
static inline T FN(bcoefs_get)(const FN(bcoefs) *k, const rows_geom *g, int i,
                               int j)
{
    if (k->fp)
        return k->fp->k[i * k->fp->P + (j >= k->fp->c0 ? j - k->fp->c0 : j + g->C - k->fp->c0)];
    return k->u.col[i][j];
}

/* Once every column's nk coefficients are put. */
static void FN(bcoefs_finish)(FN(bcoefs) *k, const rows_geom *g, int nk)
{
    if (k->fp)
        FN(flat_repeat)(&k->u.f, g->C, nk);
}

/* Whether a float coefficient of the block's nb columns fails the fast
   paths' test -- coef_ok for normalize, dcoef_ok for dx -- in one loop over
   their places that vectorizes (in the flat layout the places [0, C) hold
   every column once). */
static int FN(bcoefs_suspect)(const FN(bcoefs) *k, int nb, int dx, int batch_stats)
{
    const int64_t P = k->fp ? k->fp->P : 0;
    const T *p0 = k->fp ? k->fp->k : k->u.col[0], *p1 = k->fp ? p0 + P : k->u.col[1],
            *p2 = k->fp ? p1 + P : k->u.col[2], *p3 = k->fp ? p2 + P : k->u.col[3];
    int ok = 1;
    if (dx)
        for (int j = 0; j < nb; j++)
            ok &= FN(dcoef_ok)(p0[j], p1[j], p2[j], p3[j], batch_stats);
    else
        for (int j = 0; j < nb; j++)
            ok &= FN(coef_ok)(p0[j], p1[j]);
    return !ok;
}

/* Whether column j of a block whose float normalize coefficients are k is
   cold (then *ck holds its double ones); mean, var: the block's. */
static inline int FN(column_cold)(const FN(bcoefs) *k, const rows_geom *g,
                                  int64_t c0, int j, const double *mean,
                                  const double *var, double eps,
                                  const double *gamma, const double *beta,
                                  cold_coef *ck)
{
    return !FN(coef_ok)(FN(bcoefs_get)(k, g, 0, j), FN(bcoefs_get)(k, g, 1, j))
           && cold_coef_of(mean[j], var[j], eps, gamma, beta, c0 + j, ck);
}

/* Whether a column of the block is cold, for a block with a suspect one. */
static CBN_COLD int FN(block_cold)(const FN(bcoefs) *k, const rows_geom *g,
                                   int64_t c0, int nb, const double *mean,
                                   const double *var, double eps,
                                   const double *gamma, const double *beta)
{
    cold_coef ck;
    for (int j = 0; j < nb; j++)
        if (FN(column_cold)(k, g, c0, j, mean, var, eps, gamma, beta, &ck))
            return 1;
    return 0;
}

/* Whether column j of a block whose float dx coefficients are k is cold
   (then *cd holds its double ones); its sums etc. from src. */
static inline int FN(column_cold_d)(const FN(bcoefs) *k, const rows_geom *g,
                                    int64_t c0, int j, int batch_stats,
                                    const dx_sources *src, cold_dcoef *cd)
{
    if (FN(dcoef_ok)(FN(bcoefs_get)(k, g, 0, j), FN(bcoefs_get)(k, g, 1, j),
                     FN(bcoefs_get)(k, g, 2, j), FN(bcoefs_get)(k, g, 3, j), batch_stats))
        return 0;
    /* as given_dcoef: sum dy*(x - mean) = dgamma*sqrt(var + eps) */
    const double sdyx = src->given ? src->s2[j] * sqrt(src->var[j] + src->eps) : src->s2[j];
    return cold_dcoef_of(src->s1[j], sdyx, src->m, src->mean[j], src->var[j], src->eps,
                         src->gamma, batch_stats, c0 + j, cd);
}

/* Whether a column of the block is cold, for a block with a suspect one. */
static CBN_COLD int FN(block_cold_d)(const FN(bcoefs) *k, const rows_geom *g,
                                     int64_t c0, int nb, int batch_stats,
                                     const dx_sources *src)
{
    cold_dcoef cd;
    for (int j = 0; j < nb; j++)
        if (FN(column_cold_d)(k, g, c0, j, batch_stats, src, &cd))
            return 1;
    return 0;
}

/* bcoefs_finish for dx coefficients: the block marked cold when a column is
   (only float data can be). */
static void FN(bcoefs_finish_d)(FN(bcoefs) *k, const rows_geom *g, int64_t c0,
                                int nb, int batch_stats, const dx_sources *src)
{
    if (T_IS_F32 && FN(bcoefs_suspect)(k, nb, 1, batch_stats))
        k->cold = FN(block_cold_d)(k, g, c0, nb, batch_stats, src);
    FN(bcoefs_finish)(k, g, 4);
}

/* The coefficients of make_coef for columns [c0, c0+nb), for output y:
   straight loops the compiler vectorizes (square roots and divisions
   included), over the columns in the order of their places -- in the flat
   layout, columns c0 % C .. C - 1 come first (see flat_put). */
static void FN(block_coefs)(FN(bcoefs) *k, const T *y, const rows_geom *g,
                            int64_t c0, int nb, const double *mean,
                            const double *var, double eps, const double *gamma,
                            const double *beta)
{
    double scale[ROW_BLOCK];
    FN(bcoefs_start)(k, y, g);
    const int64_t P = k->fp ? k->fp->P : nb, first = k->fp ? k->fp->c0 : 0;
    T *hi = k->fp ? k->u.f.k : k->u.col[0], *sc = k->fp ? hi + P : k->u.col[1],
      *sh = k->fp ? sc + P : k->u.col[2];
    for (int j = 0; j < nb; j++)
        scale[j] = 1.0 / sqrt(var[j] + eps);
    if (gamma)
        for (int j = 0; j < nb; j++)
            scale[j] *= gamma[c0 + j];
    /* columns [first, nb) take places [0, nb - first), then columns
       [0, first) the places after them */
    for (int part = 0; part < 2; part++) {
        const int64_t j0 = part ? 0 : first, j1 = part ? first : nb,
                      at = part ? nb - first : -first;
        for (int64_t j = j0; j < j1; j++) {
            T h = (T)mean[j];
            double lo = mean[j] - (double)h, b = beta ? beta[c0 + j] : 0.0;
            hi[j + at] = h;
            sc[j + at] = (T)scale[j];
            sh[j + at] = (T)(lo != 0.0 ? b - lo * scale[j] : b);
        }
    }
    if (T_IS_F32 && FN(bcoefs_suspect)(k, nb, 0, 0))
        k->cold = FN(block_cold)(k, g, c0, nb, mean, var, eps, gamma, beta);
    FN(bcoefs_finish)(k, g, 3);
}

/* The coefficients d of dx (see make_dcoef) for column j. */
static void FN(bcoefs_put_d)(FN(bcoefs) *k, const rows_geom *g, int j,
                             FN(dcoef) d)
{
    FN(bcoefs_put)(k, g, 0, j, d.a);
    FN(bcoefs_put)(k, g, 1, j, d.b);
    FN(bcoefs_put)(k, g, 2, j, d.k0);
    FN(bcoefs_put)(k, g, 3, j, d.hi);
}

/* y = (x - hi)*sc + sh for rows [r0, r1) of columns [c0, c0+nb), flat when
   k is laid out for it. Else row by row: going down a column instead would
   touch addresses a row apart, which for rows of 4 KiB all fall in the same
   L1 set. */
static void FN(rows_normalize)(const T *x, T *y, const rows_geom *g, int64_t c0,
                               int nb, int64_t r0, int64_t r1,
                               const FN(bcoefs) *k, int stream)
{
    const T *hi = k->u.col[0], *sc = k->u.col[1], *sh = k->u.col[2];
    if (k->fp) {
        FN(flat_normalize)(x, y, r0 * g->C, r1 * g->C, k->fp, stream);
        return;
    }
    for (int64_t r = r0; r < r1; r++) {
        const T *xr = x + r * g->C + c0;
        T *yr = y + r * g->C + c0;
        const int pf = prefetch_ahead(g, r, 1);
        int j = 0;
        for (; j + VT_N <= nb; j += VT_N) {
            if (pf)
                CBN_PREFETCH(xr + pf * g->C + j);
            vt_storeu(yr + j, FN(normalize_v)(vt_loadu(xr + j), vt_loadu(hi + j),
                                              vt_loadu(sc + j), vt_loadu(sh + j)));
        }
        for (; j < nb; j++)
            yr[j] = FN(normalize1)(xr[j], hi[j], sc[j], sh[j]);
    }
}

/* dx = a*dy + (b*(x - hi) + k0) over rows [r0, r1) of a column block, flat
   or row by row (see rows_normalize). */
static void FN(rows_dx)(const T *dy, const T *x, T *dx, const rows_geom *g,
                        int64_t c0, int nb, int64_t r0, int64_t r1,
                        const FN(bcoefs) *k, int batch_stats, int stream)
{
    const T *a = k->u.col[0], *b = k->u.col[1], *k0 = k->u.col[2], *hi = k->u.col[3];
    if (k->fp) {
        FN(flat_dx)(dy, x, dx, r0 * g->C, r1 * g->C, k->fp, batch_stats, stream);
        return;
    }
    for (int64_t r = r0; r < r1; r++) {
        const int64_t off = r * g->C + c0;
        const T *gr = dy + off, *xr = x + off;
        T *dr = dx + off;
        const int pf = prefetch_ahead(g, r, 1);
        int j = 0;
        if (batch_stats) {
            for (; j + VT_N <= nb; j += VT_N) {
                if (pf) {
                    CBN_PREFETCH(gr + pf * g->C + j);
                    CBN_PREFETCH(xr + pf * g->C + j);
                }
                vt_storeu(dr + j, FN(dx_v)(vt_loadu(gr + j), vt_loadu(xr + j), vt_loadu(a + j),
                                           vt_loadu(b + j), vt_loadu(k0 + j), vt_loadu(hi + j)));
            }
            for (; j < nb; j++)
                dr[j] = FN(dx1)(gr[j], xr[j], a[j], b[j], k0[j], hi[j]);
        } else {  /* dx = a*dy: x plays no part (a NaN there stays out) */
            for (; j + VT_N <= nb; j += VT_N)
                vt_storeu(dr + j, FN(scale_v)(vt_loadu(gr + j), vt_loadu(a + j)));
            for (; j < nb; j++)
                dr[j] = FN(scale1)(gr[j], a[j]);
        }
    }
}

/* The cold passes of a column block (see "Cold features" in
   kernels_common.h): when a column of the block may be cold, its elements
   are computed column by column, COLD_ROWS rows at a time -- a cold column
   in double, the others with their float coefficients by st_fmadd, which
   rounds as the vector lanes do, so those come out bitwise as on the fast
   pass. Each element is read before it is written, as there, so the output
   may be an input. COLD_ROWS rows of a block stay in cache from one column
   to the next. */
#define COLD_ROWS 64

/* rows_normalize for a block marked cold; mean[j], var[j] are column j's. */
static CBN_COLD void FN(rows_normalize_cold)(const T *x, T *y, const rows_geom *g,
                                             int64_t c0, int nb, int64_t r0,
                                             int64_t r1, const FN(bcoefs) *k,
                                             const double *mean, const double *var,
                                             double eps, const double *gamma,
                                             const double *beta)
{
    const int64_t ld = g->C;
    for (int64_t a = r0; a < r1; a += COLD_ROWS) {
        const int64_t n = r1 - a < COLD_ROWS ? r1 - a : COLD_ROWS;
        for (int j = 0; j < nb; j++) {
            const T *xc = x + a * ld + c0 + j;
            T *yc = y + a * ld + c0 + j;
            cold_coef ck;
            if (FN(column_cold)(k, g, c0, j, mean, var, eps, gamma, beta, &ck)) {
                FN(cold_normalize)(xc, yc, n, ld, &ck);
                continue;
            }
            const T hi = FN(bcoefs_get)(k, g, 0, j), sc = FN(bcoefs_get)(k, g, 1, j),
                    sh = FN(bcoefs_get)(k, g, 2, j);
            for (int64_t r = 0; r < n; r++)
                yc[r * ld] = FN(normalize1)(xc[r * ld], hi, sc, sh);
        }
    }
}

/* rows_normalize, or its cold pass for a block marked cold (only float
   data are ever marked). */
static inline void FN(block_normalize)(const T *x, T *y, const rows_geom *g,
                                       int64_t c0, int nb, int64_t r0, int64_t r1,
                                       const FN(bcoefs) *k, int stream,
                                       const double *mean, const double *var,
                                       double eps, const double *gamma,
                                       const double *beta)
{
    if (T_IS_F32 && k->cold)
        FN(rows_normalize_cold)(x, y, g, c0, nb, r0, r1, k, mean, var, eps, gamma, beta);
    else
        FN(rows_normalize)(x, y, g, c0, nb, r0, r1, k, stream);
}

/* rows_dx for a block marked cold; its coefficients came from src. */
static CBN_COLD void FN(rows_dx_cold)(const T *dy, const T *x, T *dx,
                                      const rows_geom *g, int64_t c0, int nb,
                                      int64_t r0, int64_t r1, const FN(bcoefs) *k,
                                      int batch_stats, const dx_sources *src)
{
    const int64_t ld = g->C;
    for (int64_t a = r0; a < r1; a += COLD_ROWS) {
        const int64_t n = r1 - a < COLD_ROWS ? r1 - a : COLD_ROWS;
        for (int j = 0; j < nb; j++) {
            const int64_t off = a * ld + c0 + j;
            const T *gc = dy + off, *xc = x + off;
            T *dc = dx + off;
            cold_dcoef cd;
            if (FN(column_cold_d)(k, g, c0, j, batch_stats, src, &cd)) {
                FN(cold_dx)(gc, xc, dc, n, ld, &cd, batch_stats);
                continue;
            }
            const T ca = FN(bcoefs_get)(k, g, 0, j), cb = FN(bcoefs_get)(k, g, 1, j),
                    ck0 = FN(bcoefs_get)(k, g, 2, j), chi = FN(bcoefs_get)(k, g, 3, j);
            if (batch_stats)
                for (int64_t r = 0; r < n; r++)
                    dc[r * ld] = FN(dx1)(gc[r * ld], xc[r * ld], ca, cb, ck0, chi);
            else
                for (int64_t r = 0; r < n; r++)
                    dc[r * ld] = FN(scale1)(gc[r * ld], ca);
        }
    }
}

/* rows_dx, or its cold pass for a block marked cold, with the sources of
   its coefficients. */
static inline void FN(block_dx)(const T *dy, const T *x, T *dx, const rows_geom *g,
                                int64_t c0, int nb, int64_t r0, int64_t r1,
                                const FN(bcoefs) *k, int batch_stats, int stream,
                                const dx_sources *src)
{
    if (T_IS_F32 && k->cold)
        FN(rows_dx_cold)(dy, x, dx, g, c0, nb, r0, r1, k, batch_stats, src);
    else
        FN(rows_dx)(dy, x, dx, g, c0, nb, r0, r1, k, batch_stats, stream);
}

/* Statistics of column block b, then its normalized output (when y). */
static void FN(rows_train_block)(const T *x, T *y, const rows_geom *g,
                                 int64_t b, const double *gamma,
                                 const double *beta, double eps, double *mean,
                                 double *var)
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
                            eps, gamma, beta);
    }
}

/* Column blocks [b0, b1): statistics, then output. */
static void FN(rows_train_blocks)(void *ctx, int64_t b0, int64_t b1)
{
    const FN(job) *j = (const FN(job) *)ctx;
    for (int64_t b = b0; b < b1; b++)
        FN(rows_train_block)(j->x, j->out, j->rg, b, j->gamma, j->beta, j->eps,
                             j->mean_out, j->var_out);
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

/* Pieces [i0, i1) of a split batch: their output, from the totals; a
   block's coefficients are made once for its pieces in the range. */
static void FN(rows_train_output)(void *ctx, int64_t i0, int64_t i1)
{
    const FN(job) *j = (const FN(job) *)ctx;
    const rows_geom *g = j->rg;
    const double *tmean = j->sp.part, *tvar = j->sp.part + j->C;
    FN(bcoefs) k;
    int64_t have = -1;
    for (int64_t idx = i0; idx < i1; idx++) {
        const int64_t b = idx / g->nseg, c0 = b * ROW_BLOCK;
        const int nb = block_width(g, b);
        int64_t r0, r1;
        if (b != have)
            FN(block_coefs)(&k, j->out, g, c0, nb, tmean + c0, tvar + c0, j->eps,
                            j->gamma, j->beta);
        have = b;
        segment_rows(g, idx % g->nseg, &r0, &r1);
        FN(block_normalize)(j->x, j->out, g, c0, nb, r0, r1, &k, g->stream, tmean + c0,
                            tvar + c0, j->eps, j->gamma, j->beta);
    }
}

static void FN(rows_forward_train)(const T *x, T *y, int64_t outer, int64_t C,
                                   const double *gamma, const double *beta,
                                   double eps, double *mean, double *var)
{
    const rows_geom g = rows_geometry(outer, C, sizeof(T));
    const int nt = threads_for(outer * C);
    FN(job) j = {0};
    j.x = x, j.out = y, j.outer = outer, j.C = C, j.inner = 1, j.rg = &g;
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

/* Pieces [i0, i1) of inference with given statistics, a piece being
   (column block, segment) in that order, so that a block's coefficients are
   made once for all its segments in the range. */
static void FN(rows_infer_pieces)(void *ctx, int64_t i0, int64_t i1)
{
    const FN(job) *j = (const FN(job) *)ctx;
    const rows_geom *g = j->rg;
    FN(bcoefs) k;
    int64_t have = -1;
    for (int64_t idx = i0; idx < i1; idx++) {
        const int64_t b = idx / g->nseg, c0 = b * ROW_BLOCK;
        const int nb = block_width(g, b);
        int64_t r0, r1;
        if (b != have)
            FN(block_coefs)(&k, j->out, g, c0, nb, j->mean + c0, j->var + c0, j->eps,
                            j->gamma, j->beta);
        have = b;
        segment_rows(g, idx % g->nseg, &r0, &r1);
        FN(block_normalize)(j->x, j->out, g, c0, nb, r0, r1, &k, j->stream, j->mean + c0,
                            j->var + c0, j->eps, j->gamma, j->beta);
    }
}

static void FN(rows_forward_infer)(const T *x, T *y, int64_t outer, int64_t C,
                                   const double *mean, const double *var,
                                   const double *gamma, const double *beta,
                                   double eps)
{
    const rows_geom g = rows_geometry(outer, C, sizeof(T));
    FN(job) j = {0};
    j.x = x, j.out = y, j.outer = outer, j.C = C, j.inner = 1, j.rg = &g;
    j.mean = mean, j.var = var, j.gamma = gamma, j.beta = beta, j.eps = eps;
    j.stream = outer * C * (int64_t)sizeof(T) >= CBN_STREAM_MIN_BYTES_EVAL;
    for_ranges(threads_for(outer * C), g.nblocks * g.nseg, FN(rows_infer_pieces), &j);
}

/* Gradient sums of columns [c0, c0+nb) over rows [r0, r1), into s1, s2. */
static void FN(rows_segment_grad)(const T *dy, const T *x, const rows_geom *g,
                                  int64_t c0, int nb, int64_t r0, int64_t r1,
                                  const double *mean, double *s1, double *s2)
{
    for (int j = 0; j < nb; j++)
        s1[j] = 0.0, s2[j] = 0.0;
    if (g->C * (int64_t)sizeof(T) <= CBN_STRIP_ROW_BYTES) {
        FN(rows_chunk_grad)(dy, x, g, c0, nb, r0, r1, mean, s1, s2);
        return;
    }
    for (int64_t r = r0; r < r1; r += ROWS_AT_ONCE(r, r1))
        FN(rows_grad)(dy + r * g->C + c0, x + r * g->C + c0, g->C,
                      ROWS_AT_ONCE(r, r1), nb, mean, s1, s2,
                      prefetch_ahead(g, r, ROWS_AT_ONCE(r, r1)));
}

/* Gradient sums of column block b, then its dx (when dx). */
static void FN(rows_backward_block)(const T *dy, const T *x, T *dx,
                                    const rows_geom *g, int64_t b,
                                    const double *mean, const double *var,
                                    const double *gamma, double eps,
                                    int batch_stats, double *dgamma,
                                    double *dbeta)
{
    const int64_t c0 = b * ROW_BLOCK;
    const int nb = block_width(g, b);
    double t1[ROW_BLOCK] = {0}, t2[ROW_BLOCK] = {0}, s1[ROW_BLOCK], s2[ROW_BLOCK];
    FN(bcoefs) k;
    for (int64_t s = 0; s < g->nseg; s++) {
        int64_t r0, r1;
        segment_rows(g, s, &r0, &r1);
        FN(rows_segment_grad)(dy, x, g, c0, nb, r0, r1, mean + c0, s1, s2);
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
    FN(block_dx)(dy, x, dx, g, c0, nb, 0, g->outer, &k, batch_stats, g->stream, &src);
}

/* Column blocks [b0, b1): gradient sums, then dx. */
static void FN(rows_backward_blocks)(void *ctx, int64_t b0, int64_t b1)
{
    const FN(job) *j = (const FN(job) *)ctx;
    for (int64_t b = b0; b < b1; b++)
        FN(rows_backward_block)(j->dy, j->x, j->out, j->rg, b, j->mean, j->var,
                                j->gamma, j->eps, j->batch_stats, j->dgamma, j->dbeta);
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
                              j->sp.part + 2 * C * s + C + c0);
    }
}

/* Pieces [i0, i1) of a split batch: their dx, from the total sums; a
   block's coefficients are made once for its pieces in the range. */
static void FN(rows_backward_output)(void *ctx, int64_t i0, int64_t i1)
{
    const FN(job) *j = (const FN(job) *)ctx;
    const rows_geom *g = j->rg;
    const double *t1 = j->sp.part, *t2 = j->sp.part + j->C;
    FN(bcoefs) k;
    int64_t have = -1;
    for (int64_t idx = i0; idx < i1; idx++) {
        const int64_t b = idx / g->nseg, c0 = b * ROW_BLOCK;
        const int nb = block_width(g, b);
        const dx_sources src = {t1 + c0, t2 + c0, j->mean + c0, j->var + c0,
                                j->gamma, j->eps, j->m, 0};
        int64_t r0, r1;
        if (b != have) {
            FN(bcoefs_start)(&k, j->out, g);
            for (int c = 0; c < nb; c++)
                FN(bcoefs_put_d)(&k, g, c,
                                 FN(make_dcoef)(t1[c0 + c], t2[c0 + c], j->m, j->mean[c0 + c],
                                                j->var[c0 + c], j->eps, j->gamma,
                                                j->batch_stats, c0 + c, NULL, NULL));
            FN(bcoefs_finish_d)(&k, g, c0, nb, j->batch_stats, &src);
        }
        have = b;
        segment_rows(g, idx % g->nseg, &r0, &r1);
        FN(block_dx)(j->dy, j->x, j->out, g, c0, nb, r0, r1, &k, j->batch_stats,
                     g->stream, &src);
    }
}

static void FN(rows_backward)(const T *dy, const T *x, T *dx, int64_t outer,
                              int64_t C, const double *mean, const double *var,
                              const double *gamma, double eps, int batch_stats,
                              double *dgamma, double *dbeta)
{
    const rows_geom g = rows_geometry(outer, C, sizeof(T));
    const int nt = threads_for(outer * C);
    FN(job) j = {0};
    j.dy = dy, j.x = x, j.out = dx, j.outer = outer, j.C = C, j.inner = 1, j.rg = &g;
    j.mean = mean, j.var = var, j.gamma = gamma, j.eps = eps;
    j.m = (double)outer, j.batch_stats = batch_stats;
    j.dgamma = dgamma, j.dbeta = dbeta;
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

/* ------------------------------------------------------------ dispatch --- */
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

/* dx of backward with batch statistics from given gradient sums and batch
   size (cbn_backward_dx): backward's second pass alone, for a block that is
   one part of a larger batch whose sums were added up elsewhere. Its pieces
   -- (feature, segment) for runs, (column block, segment) for rows -- are
   independent, so they are shared out in order. */
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

#undef STEP
#undef ROWS_AT_ONCE
#undef FN
#undef CBN_CAT
#undef CBN_CAT_
