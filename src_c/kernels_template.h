/*
 * kernels_template.h -- the batch-norm kernels, written once for any data type.
 *
 * Included by a kernels_<level>.c file once per data type, with
 *   T    the data type (float or double)
 *   SFX  the name suffix (f32 or f64)
 * defined before each inclusion. Everything here is static; the including
 * file collects the functions into its cbn_kernel_table.
 *
 * Design
 * ------
 * - Two loop shapes. When inner > 1 a feature's data is `outer` contiguous
 *   runs of `inner` values ("runs"): each feature is reduced and normalized on
 *   its own, while its data is still in cache. When inner == 1 (N x C,
 *   channels-last) a feature's values are C apart, so we sweep whole rows and
 *   keep per-feature accumulators for a block of columns ("rows").
 * - Statistics use two passes in double: the sum gives a first mean mu0, the
 *   second pass sums d = x - mu0 and d^2. sum(d)/m corrects mu0 and
 *   M2 = sum(d^2) - sum(d)^2/m is the corrected two-pass variance, accurate
 *   even when the mean is large compared with the spread.
 * - Runs accumulate into LANES independent partial sums (element i of a run
 *   goes to lane i % LANES), which the compiler can keep in vector registers
 *   without reassociating floating point; lanes are combined in a fixed tree.
 *   Every reduction order depends only on the shape, never on the thread
 *   count, so results are bitwise reproducible.
 * - The normalize pass works in T, not double, but stays accurate for data far
 *   from zero: the double mean is split into hi = (T)mean and a small lo, and
 *   (x - hi) is exact when x is near the mean (Sterbenz), so
 *   ((x - hi) - lo) * scale + shift loses only a few units in the last place.
 */

#define CBN_CAT_(a, b) a##_##b
#define CBN_CAT(a, b) CBN_CAT_(a, b)
#define FN(name) CBN_CAT(name, SFX)

/* Per-feature coefficients of the normalize pass: y = ((x-hi)-lo)*scale+shift. */
typedef struct {
    T hi, lo, scale, shift;
} FN(coef);

static FN(coef) FN(make_coef)(double mu0, double corr, double var, double eps,
                              const double *gamma, const double *beta,
                              int64_t c)
{
    FN(coef) k;
    double invstd = 1.0 / sqrt(var + eps);
    double g = gamma ? gamma[c] : 1.0;
    k.hi = (T)(mu0 + corr);
    k.lo = (T)((mu0 - (double)k.hi) + corr);
    k.scale = (T)(g * invstd);
    k.shift = (T)(beta ? beta[c] : 0.0);
    return k;
}

static inline T FN(apply_coef)(T x, FN(coef) k)
{
    return ((x - k.hi) - k.lo) * k.scale + k.shift;
}

/* ---------------------------------------------------------------- runs --- */

static void FN(run_sum)(const T *p, int64_t n, double acc[LANES])
{
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < LANES; k++)
            acc[k] += (double)p[i + k];
    for (int k = 0; i < n; i++, k++)
        acc[k] += (double)p[i];
}

static void FN(run_dev)(const T *p, int64_t n, double mu0, double s1[LANES],
                        double s2[LANES])
{
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < LANES; k++) {
            double d = (double)p[i + k] - mu0;
            s1[k] += d;
            s2[k] += d * d;
        }
    for (int k = 0; i < n; i++, k++) {
        double d = (double)p[i] - mu0;
        s1[k] += d;
        s2[k] += d * d;
    }
}

/* sum(dy) and sum(dy * (x - mean)) */
static void FN(run_grad_sums)(const T *dy, const T *x, int64_t n, double mean,
                              double sdy[LANES], double sdyx[LANES])
{
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < LANES; k++) {
            double g = (double)dy[i + k];
            sdy[k] += g;
            sdyx[k] += g * ((double)x[i + k] - mean);
        }
    for (int k = 0; i < n; i++, k++) {
        double g = (double)dy[i];
        sdy[k] += g;
        sdyx[k] += g * ((double)x[i] - mean);
    }
}

/* Statistics of feature c: first mean mu0, its correction, and M2. */
static void FN(runs_feature_stats)(const T *x, int64_t outer, int64_t C,
                                   int64_t inner, int64_t c, double *mu0,
                                   double *corr, double *m2)
{
    const double m = (double)outer * (double)inner;
    double acc[LANES] = {0}, s1[LANES] = {0}, s2[LANES] = {0};
    for (int64_t o = 0; o < outer; o++)
        FN(run_sum)(x + (o * C + c) * inner, inner, acc);
    double mu = lanes_total(acc) / m;
    for (int64_t o = 0; o < outer; o++)
        FN(run_dev)(x + (o * C + c) * inner, inner, mu, s1, s2);
    double d1 = lanes_total(s1), d2 = lanes_total(s2);
    double M2 = d2 - d1 * d1 / m;
    *mu0 = mu;
    *corr = d1 / m;
    *m2 = M2 < 0.0 ? 0.0 : M2; /* rounding only; NaN passes through */
}

static void FN(runs_normalize)(const T *x, T *y, int64_t outer, int64_t C,
                               int64_t inner, int64_t c, FN(coef) k)
{
    for (int64_t o = 0; o < outer; o++) {
        const T *xp = x + (o * C + c) * inner;
        T *yp = y + (o * C + c) * inner;
        for (int64_t i = 0; i < inner; i++)
            yp[i] = FN(apply_coef)(xp[i], k);
    }
}

static void FN(runs_forward_train)(const T *x, T *y, int64_t outer, int64_t C,
                                   int64_t inner, const double *gamma,
                                   const double *beta, double eps,
                                   double *mean, double *var)
{
    const double m = (double)outer * (double)inner;
    int64_t c;
#pragma omp parallel for schedule(static) if (outer * C * inner >= CBN_PARALLEL_MIN_WORK)
    for (c = 0; c < C; c++) {
        double mu0, corr, m2;
        FN(runs_feature_stats)(x, outer, C, inner, c, &mu0, &corr, &m2);
        FN(coef) k = FN(make_coef)(mu0, corr, m2 / m, eps, gamma, beta, c);
        if (y)
            FN(runs_normalize)(x, y, outer, C, inner, c, k);
        if (mean) mean[c] = mu0 + corr;
        if (var) var[c] = m2 / m;
    }
}

static void FN(runs_forward_infer)(const T *x, T *y, int64_t outer, int64_t C,
                                   int64_t inner, const double *mean,
                                   const double *var, const double *gamma,
                                   const double *beta, double eps)
{
    int64_t c;
#pragma omp parallel for schedule(static) if (outer * C * inner >= CBN_PARALLEL_MIN_WORK)
    for (c = 0; c < C; c++) {
        FN(coef) k = FN(make_coef)(mean[c], 0.0, var[c], eps, gamma, beta, c);
        FN(runs_normalize)(x, y, outer, C, inner, c, k);
    }
}

static void FN(runs_backward)(const T *dy, const T *x, T *dx, int64_t outer,
                              int64_t C, int64_t inner, const double *mean,
                              const double *var, const double *gamma,
                              double eps, int batch_stats, double *dgamma,
                              double *dbeta)
{
    const double m = (double)outer * (double)inner;
    int64_t c;
#pragma omp parallel for schedule(static) if (outer * C * inner >= CBN_PARALLEL_MIN_WORK)
    for (c = 0; c < C; c++) {
        double a1[LANES] = {0}, a2[LANES] = {0};
        for (int64_t o = 0; o < outer; o++) {
            int64_t off = (o * C + c) * inner;
            FN(run_grad_sums)(dy + off, x + off, inner, mean[c], a1, a2);
        }
        double sdy = lanes_total(a1), sdyx = lanes_total(a2);
        double invstd = 1.0 / sqrt(var[c] + eps);
        double g = gamma ? gamma[c] : 1.0;
        if (dgamma) dgamma[c] = sdyx * invstd;
        if (dbeta) dbeta[c] = sdy;
        if (!dx)
            continue;
        const T a = (T)(g * invstd);
        if (batch_stats) {
            /* dx = a*dy + b*(x - mean) + k, the formula of cbn.h expanded */
            FN(coef) xc = FN(make_coef)(mean[c], 0.0, 0.0, 1.0, NULL, NULL, c);
            const T b = (T)(-g * invstd * invstd * invstd * sdyx / m);
            const T k = (T)(-g * invstd * sdy / m);
            for (int64_t o = 0; o < outer; o++) {
                int64_t off = (o * C + c) * inner;
                for (int64_t i = 0; i < inner; i++)
                    dx[off + i] = a * dy[off + i] +
                                  b * ((x[off + i] - xc.hi) - xc.lo) + k;
            }
        } else {
            for (int64_t o = 0; o < outer; o++) {
                int64_t off = (o * C + c) * inner;
                for (int64_t i = 0; i < inner; i++)
                    dx[off + i] = a * dy[off + i];
            }
        }
    }
}

/* ---------------------------------------------------------------- rows --- */
/* inner == 1: row o is x[o*C .. o*C + C). Columns are processed in blocks of
   at most ROW_BLOCK features, each block by one thread, with accumulators on
   the stack; within a block the loops run along the row so they vectorize. */

static void FN(rows_block_stats)(const T *x, int64_t outer, int64_t C,
                                 int64_t c0, int nb, double *mu0,
                                 double *corr, double *m2)
{
    const double m = (double)outer;
    double s1[ROW_BLOCK], s2[ROW_BLOCK];
    for (int j = 0; j < nb; j++)
        mu0[j] = 0.0, s1[j] = 0.0, s2[j] = 0.0;
    for (int64_t o = 0; o < outer; o++) {
        const T *row = x + o * C + c0;
        for (int j = 0; j < nb; j++)
            mu0[j] += (double)row[j];
    }
    for (int j = 0; j < nb; j++)
        mu0[j] /= m;
    for (int64_t o = 0; o < outer; o++) {
        const T *row = x + o * C + c0;
        for (int j = 0; j < nb; j++) {
            double d = (double)row[j] - mu0[j];
            s1[j] += d;
            s2[j] += d * d;
        }
    }
    for (int j = 0; j < nb; j++) {
        double M2 = s2[j] - s1[j] * s1[j] / m;
        corr[j] = s1[j] / m;
        m2[j] = M2 < 0.0 ? 0.0 : M2;
    }
}

static void FN(rows_block_normalize)(const T *x, T *y, int64_t outer,
                                     int64_t C, int64_t c0, int nb,
                                     const FN(coef) *k)
{
    T hi[ROW_BLOCK], lo[ROW_BLOCK], sc[ROW_BLOCK], sh[ROW_BLOCK];
    for (int j = 0; j < nb; j++)
        hi[j] = k[j].hi, lo[j] = k[j].lo, sc[j] = k[j].scale, sh[j] = k[j].shift;
    for (int64_t o = 0; o < outer; o++) {
        const T *xr = x + o * C + c0;
        T *yr = y + o * C + c0;
        for (int j = 0; j < nb; j++)
            yr[j] = ((xr[j] - hi[j]) - lo[j]) * sc[j] + sh[j];
    }
}

#define ROW_BLOCKS(C) (((C) + ROW_BLOCK - 1) / ROW_BLOCK)
#define BLOCK_WIDTH(C, c0) ((int)((C) - (c0) < ROW_BLOCK ? (C) - (c0) : ROW_BLOCK))

static void FN(rows_forward_train)(const T *x, T *y, int64_t outer, int64_t C,
                                   const double *gamma, const double *beta,
                                   double eps, double *mean, double *var)
{
    int64_t b;
#pragma omp parallel for schedule(static) if (outer * C >= CBN_PARALLEL_MIN_WORK)
    for (b = 0; b < ROW_BLOCKS(C); b++) {
        int64_t c0 = b * ROW_BLOCK;
        int nb = BLOCK_WIDTH(C, c0);
        double mu0[ROW_BLOCK], corr[ROW_BLOCK], m2[ROW_BLOCK];
        FN(coef) k[ROW_BLOCK];
        FN(rows_block_stats)(x, outer, C, c0, nb, mu0, corr, m2);
        for (int j = 0; j < nb; j++) {
            double v = m2[j] / (double)outer;
            k[j] = FN(make_coef)(mu0[j], corr[j], v, eps, gamma, beta, c0 + j);
            if (mean) mean[c0 + j] = mu0[j] + corr[j];
            if (var) var[c0 + j] = v;
        }
        if (y)
            FN(rows_block_normalize)(x, y, outer, C, c0, nb, k);
    }
}

static void FN(rows_forward_infer)(const T *x, T *y, int64_t outer, int64_t C,
                                   const double *mean, const double *var,
                                   const double *gamma, const double *beta,
                                   double eps)
{
    int64_t b;
#pragma omp parallel for schedule(static) if (outer * C >= CBN_PARALLEL_MIN_WORK)
    for (b = 0; b < ROW_BLOCKS(C); b++) {
        int64_t c0 = b * ROW_BLOCK;
        int nb = BLOCK_WIDTH(C, c0);
        FN(coef) k[ROW_BLOCK];
        for (int j = 0; j < nb; j++)
            k[j] = FN(make_coef)(mean[c0 + j], 0.0, var[c0 + j], eps, gamma,
                                 beta, c0 + j);
        FN(rows_block_normalize)(x, y, outer, C, c0, nb, k);
    }
}

static void FN(rows_backward)(const T *dy, const T *x, T *dx, int64_t outer,
                              int64_t C, const double *mean, const double *var,
                              const double *gamma, double eps, int batch_stats,
                              double *dgamma, double *dbeta)
{
    const double m = (double)outer;
    int64_t b;
#pragma omp parallel for schedule(static) if (outer * C >= CBN_PARALLEL_MIN_WORK)
    for (b = 0; b < ROW_BLOCKS(C); b++) {
        int64_t c0 = b * ROW_BLOCK;
        int nb = BLOCK_WIDTH(C, c0);
        double sdy[ROW_BLOCK], sdyx[ROW_BLOCK];
        T ka[ROW_BLOCK], kb[ROW_BLOCK], kk[ROW_BLOCK], hi[ROW_BLOCK], lo[ROW_BLOCK];
        for (int j = 0; j < nb; j++)
            sdy[j] = 0.0, sdyx[j] = 0.0;
        for (int64_t o = 0; o < outer; o++) {
            const T *gr = dy + o * C + c0, *xr = x + o * C + c0;
            const double *mr = mean + c0;
            for (int j = 0; j < nb; j++) {
                double g = (double)gr[j];
                sdy[j] += g;
                sdyx[j] += g * ((double)xr[j] - mr[j]);
            }
        }
        for (int j = 0; j < nb; j++) {
            int64_t c = c0 + j;
            double invstd = 1.0 / sqrt(var[c] + eps);
            double g = gamma ? gamma[c] : 1.0;
            FN(coef) xc = FN(make_coef)(mean[c], 0.0, 0.0, 1.0, NULL, NULL, c);
            if (dgamma) dgamma[c] = sdyx[j] * invstd;
            if (dbeta) dbeta[c] = sdy[j];
            ka[j] = (T)(g * invstd);
            kb[j] = (T)(-g * invstd * invstd * invstd * sdyx[j] / m);
            kk[j] = (T)(-g * invstd * sdy[j] / m);
            hi[j] = xc.hi;
            lo[j] = xc.lo;
        }
        if (!dx)
            continue;
        for (int64_t o = 0; o < outer; o++) {
            const T *gr = dy + o * C + c0, *xr = x + o * C + c0;
            T *dr = dx + o * C + c0;
            if (batch_stats)
                for (int j = 0; j < nb; j++)
                    dr[j] = ka[j] * gr[j] + kb[j] * ((xr[j] - hi[j]) - lo[j]) + kk[j];
            else
                for (int j = 0; j < nb; j++)
                    dr[j] = ka[j] * gr[j];
        }
    }
}

#undef ROW_BLOCKS
#undef BLOCK_WIDTH

/* ------------------------------------------------------------ dispatch --- */
/* The table entries: pick the loop shape from the layout. */

static void FN(forward_train)(const T *x, T *y, int64_t outer, int64_t C,
                              int64_t inner, const double *gamma,
                              const double *beta, double eps, double *mean,
                              double *var)
{
    if (inner == 1)
        FN(rows_forward_train)(x, y, outer, C, gamma, beta, eps, mean, var);
    else
        FN(runs_forward_train)(x, y, outer, C, inner, gamma, beta, eps, mean, var);
}

static void FN(forward_infer)(const T *x, T *y, int64_t outer, int64_t C,
                              int64_t inner, const double *mean,
                              const double *var, const double *gamma,
                              const double *beta, double eps)
{
    if (inner == 1)
        FN(rows_forward_infer)(x, y, outer, C, mean, var, gamma, beta, eps);
    else
        FN(runs_forward_infer)(x, y, outer, C, inner, mean, var, gamma, beta, eps);
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
        FN(runs_backward)(dy, x, dx, outer, C, inner, mean, var, gamma, eps,
                          batch_stats, dgamma, dbeta);
}

#undef FN
#undef CBN_CAT
#undef CBN_CAT_
