/*
 * core/moments.h -- partial statistics and how they merge: a chunk's moments
 * from one pass around a shift (or two), Chan's merge (one feature at a
 * time, or a block of columns sharing their counts), and the overflow
 * rescue of a feature whose sums left the double range.
 */
#ifndef CBN_CORE_MOMENTS_H
#define CBN_CORE_MOMENTS_H

#include <float.h>
#include <math.h>
#include <stdint.h>

#include "core/hints.h"

/* CHUNK, SEG_CHUNKS, ROW_BLOCK: core/tuning.h, included by kernels.h. */

/* Count, mean and sum of squared deviations of some values. */
typedef struct {
    double n, mean, m2;
} moments;

/* Merge b into a (Chan, Golub & LeVeque). */
static inline void moments_merge(moments *a, moments b)
{
    if (b.n == 0.0)
        return;
    if (a->n == 0.0) {
        *a = b;
        return;
    }
    double n = a->n + b.n, d = b.mean - a->mean;
    a->mean += d * (b.n / n);
    a->m2 += b.m2 + d * d * (a->n * (b.n / n));
    a->n = n;
}

/* Moments of n values from their sum s1 = sum(x - mu) and s2 = sum((x - mu)^2)
   around a first estimate mu (the corrected two-pass formula). */
static inline moments moments_from_dev(double n, double mu, double s1, double s2)
{
    moments r;
    double m2 = s2 - s1 * (s1 / n);
    r.n = n;
    r.mean = mu + s1 / n;
    r.m2 = m2 < 0.0 ? 0.0 : m2; /* rounding only; NaN passes */
    return r;
}

/* One pass or two
   ---------------
   A chunk's moments come from one pass over it, s1 = sum(x - K) and
   s2 = sum((x - K)^2) around a shift K (its segment's running mean, or for
   the segment's first chunk its first value -- the mean of its first 8 rows
   in a rows layout), with m2 = s2 - s1^2/n. That subtraction cancels
   when K is far from the chunk's mean: it loses log2(s2/m2) bits. When
   s1^2/n > s2/2 (more than one bit would be lost; also NaN) the kernels
   redo the chunk, still in L1, with the exact two passes. So data is read
   from memory once, and the variance is always within a few units in the
   last place of double precision. */
static inline int shift_is_accurate(double n, double s1, double s2)
{
    return s1 * (s1 / n) <= 0.5 * s2;
}

/* Fold the moments of a group of nk rows -- per column j: first mean mu[j],
   s1[j] = sum(x - mu[j]), s2[j] = sum((x - mu[j])^2) -- into running moments
   (count n before the group; mean, m2 per column). Every column shares the
   counts, so the divisions happen once and the loops vectorize. */
static inline void fold_columns(int64_t nb, double n, double nk, const double *mu,
                                const double *s1, const double *s2,
                                double *mean, double *m2)
{
    const double inv = 1.0 / nk;
    if (n == 0.0) {
        for (int64_t j = 0; j < nb; j++) {
            double q = s2[j] - s1[j] * (s1[j] * inv);
            mean[j] = mu[j] + s1[j] * inv;
            m2[j] = q < 0.0 ? 0.0 : q; /* rounding only; NaN passes */
        }
        return;
    }
    const double wb = nk / (n + nk), wab = n * wb;
    for (int64_t j = 0; j < nb; j++) {
        double q = s2[j] - s1[j] * (s1[j] * inv);
        double d = (mu[j] + s1[j] * inv) - mean[j];
        mean[j] += d * wb;
        m2[j] += (q < 0.0 ? 0.0 : q) + d * d * wab;
    }
}

/* Merge partial moments (count nk; pmean, pm2 per column) into running ones
   (count n): Chan's update with the divisions shared by all columns. */
static inline void merge_columns(int64_t nb, double n, double nk,
                                 const double *pmean, const double *pm2,
                                 double *mean, double *m2)
{
    if (n == 0.0) {
        for (int64_t j = 0; j < nb; j++)
            mean[j] = pmean[j], m2[j] = pm2[j];
        return;
    }
    const double wb = nk / (n + nk), wab = n * wb;
    for (int64_t j = 0; j < nb; j++) {
        double d = pmean[j] - mean[j];
        mean[j] += d * wb;
        m2[j] += pm2[j] + d * d * wab;
    }
}

/* ----------------------------------------------------- overflow rescue --- */

/* Value i of a float (is_f32) or double array, as a double. */
static inline double load_as_double(const void *x, int is_f32, int64_t i)
{
    return is_f32 ? (double)((const float *)x)[i] : ((const double *)x)[i];
}

/* Overflow rescue
   ---------------
   float64 data beyond about 1e154 overflow the sums of squares (and near
   the top of the range the sums themselves) even where the mean and the
   variance fit in a double: the kernels then see a non-finite mean or
   variance for a feature whose values are all finite. This cold path, run
   only for such a feature, recomputes its mean and variance from the values
   scaled by 2^-e (exact), with 2^e above the largest |x|, so nothing it sums
   exceeds m: two passes, the second correcting the first's mean. The
   variance is scaled back with ldexp, so one beyond the double range
   becomes +inf (the correctly rounded value), not NaN. A feature holding
   NaN or Inf is left alone: those poison their own feature by design. The
   fast paths pay only a finiteness test of each feature's mean and
   variance (for the rows layout, vectorized over a column block).
   x is the (outer, C, inner) block; feature c's values are read in order. */
static CBN_COLD void rescue_moments(const void *x, int is_f32, int64_t outer,
                                    int64_t C, int64_t inner, int64_t c,
                                    double *mean, double *var)
{
    const double m = (double)outer * (double)inner;
    double amax = 0.0, s = 0.0, s1 = 0.0, s2 = 0.0;
    int e;
    int64_t o, i;
    for (o = 0; o < outer; o++)
        for (i = 0; i < inner; i++) {
            double v = fabs(load_as_double(x, is_f32, (o * C + c) * inner + i));
            if (!(v <= DBL_MAX))
                return;  /* NaN or Inf: the result stays poisoned */
            amax = v > amax ? v : amax;
        }
    frexp(amax, &e);  /* amax < 2^e */
    for (o = 0; o < outer; o++)
        for (i = 0; i < inner; i++)
            s += ldexp(load_as_double(x, is_f32, (o * C + c) * inner + i), -e);
    const double mu = s / m;
    for (o = 0; o < outer; o++)
        for (i = 0; i < inner; i++) {
            double d = ldexp(load_as_double(x, is_f32, (o * C + c) * inner + i), -e) - mu;
            s1 += d;
            s2 += d * d;
        }
    double m2 = s2 - s1 * (s1 / m);
    *mean = ldexp(mu + s1 / m, e);
    *var = ldexp((m2 < 0.0 ? 0.0 : m2) / m, 2 * e);
}

/* The mean and variance of feature c, rescued if they are not finite. */
static inline void finite_or_rescued(const void *x, int is_f32, int64_t outer,
                                     int64_t C, int64_t inner, int64_t c,
                                     double *mean, double *var)
{
    if (!(isfinite(*mean) && isfinite(*var)))
        rescue_moments(x, is_f32, outer, C, inner, c, mean, var);
}

/* finite_or_rescued for the features [c0, c0 + n), mean[j] and var[j]: one
   test for all of them, in a loop that vectorizes, and the per-feature test
   only when one failed. */
static inline void columns_finite_or_rescued(const void *x, int is_f32,
                                             int64_t outer, int64_t C,
                                             int64_t inner, int64_t c0,
                                             int64_t n, double *mean,
                                             double *var)
{
    int ok = 1;
    for (int64_t j = 0; j < n; j++)
        ok &= (fabs(mean[j]) <= DBL_MAX) & (fabs(var[j]) <= DBL_MAX);
    if (!ok)
        for (int64_t j = 0; j < n; j++)
            finite_or_rescued(x, is_f32, outer, C, inner, c0 + j, &mean[j], &var[j]);
}

#endif /* CBN_CORE_MOMENTS_H */
