/*
 * core/cold.h -- the type-independent part of the cold features: the tests
 * that tell a float feature whose coefficients float cannot hold, and its
 * coefficients in double.
 */
#ifndef CBN_CORE_COLD_H
#define CBN_CORE_COLD_H

#include <float.h>
#include <math.h>
#include <stdint.h>

#include "core/hints.h"

/* Cold features
   -------------
   The normalize and dx passes run in the data type with per-feature
   coefficients rounded to it. For float data a coefficient can lie beyond
   float's range although every input and the result fit: with eps = 0 and
   subnormal data the scale gamma/sigma overflows; in backward the factor b
   of (x - mean), which scales as 1/sigma^2, overflows for sigma below about
   1e-19 and underflows above about 1e19, and a = gamma/sigma with them.
   Such a feature -- in the rows layout, a column block holding one -- takes
   a cold path instead, where the feature's elements are computed in double
   (from the double coefficients below) and rounded once; every other
   feature keeps its float arithmetic, bitwise.

   The fast paths pay only a test per feature, made on the float
   coefficients where they are made (in the rows layout, one loop over a
   column block's that vectorizes): whether they are ones float holds at
   full precision -- each factor (scale; a and b) a normal number, not 0,
   subnormal, Inf or NaN (f32_factor_ok), each term (the mean's float part,
   k0) finite. Only a feature that fails it has its double coefficients made
   and the precise test applied (cold_coef_of, cold_dcoef_of): a coefficient
   that is 0, NaN or Inf in double too (gamma = 0, a zero variance with
   eps = 0, a NaN feature) does not make a feature cold, and it goes the
   usual way, keeping its documented 0, NaN or Inf. float64 data keep their
   behaviour: their coefficients are the double ones already. */

/* Whether the float factor v is a normal number (not 0, subnormal, Inf or
   NaN): the fast paths' test. */
static inline int f32_factor_ok(float v)
{
    const float a = fabsf(v);
    return (a >= FLT_MIN) & (a <= FLT_MAX);
}

/* Whether the double factor v is one float cannot hold to full precision:
   finite and nonzero, but beyond float's normal range. Branch-free, so that
   loops over columns vectorize. */
static inline int f32_factor_cold(double v)
{
    const double a = fabs(v);
    return (a > 0.0) & ((a < FLT_MIN) | (a > FLT_MAX)) & (a <= DBL_MAX);
}

/* Whether the double term v (an offset, or a mean) is finite but beyond
   float's range; a subnormal term is as exact as the sum it is added to. */
static inline int f32_term_cold(double v)
{
    const double a = fabs(v);
    return (a > FLT_MAX) & (a <= DBL_MAX);
}

/* Whether a feature whose normalize has the double scale and mean is cold:
   the scale beyond float, or a finite scale with the mean beyond float
   (given statistics). */
static inline int f32_coef_cold(double mean, double scale)
{
    return f32_factor_cold(scale) | (f32_term_cold(mean) & (fabs(scale) <= DBL_MAX));
}

/* A cold feature's normalize in double: y = (x - mean)*scale + beta. */
typedef struct {
    double mean, scale, beta;
} cold_coef;

/* Feature c's cold_coef (as make_coef computes scale), and whether the
   feature is cold: its scale or mean beyond float. */
static CBN_COLD int cold_coef_of(double mean, double var, double eps,
                                 const double *gamma, const double *beta,
                                 int64_t c, cold_coef *k)
{
    k->mean = mean;
    k->scale = (gamma ? gamma[c] : 1.0) * (1.0 / sqrt(var + eps));
    k->beta = beta ? beta[c] : 0.0;
    return f32_coef_cold(mean, k->scale);
}

/* A cold feature's dx in double, in the well-scaled form
   dx = a*dy + c1*((x - mean)*invstd) + k1 (batch statistics) or a*dy. */
typedef struct {
    double a, c1, invstd, k1, mean;
} cold_dcoef;

/* Feature c's cold_dcoef from the gradient sums sdy = sum dy and
   sdyx = sum dy*(x - mean), and whether the feature is cold: a float
   coefficient of make_dcoef -- a, b or k0, all finite in double -- beyond
   float. The tests use make_dcoef's own formulas, so that they judge the
   values the fast path would have. */
static CBN_COLD int cold_dcoef_of(double sdy, double sdyx, double m,
                                  double mean, double var, double eps,
                                  const double *gamma, int batch_stats,
                                  int64_t c, cold_dcoef *d)
{
    const double invstd = 1.0 / sqrt(var + eps), g = gamma ? gamma[c] : 1.0;
    const double a = g * invstd;
    d->a = a;
    d->invstd = invstd;
    d->mean = mean;
    d->c1 = batch_stats ? -a * (invstd * sdyx / m) : 0.0;
    d->k1 = batch_stats ? -a * sdy / m : 0.0;
    if (!batch_stats)
        return f32_factor_cold(a);
    const double b = -g * (invstd * invstd) * (invstd * sdyx / m);
    /* make_dcoef's k0, with the mean's part below float: none for a mean
       beyond float (which makes the feature cold anyway) */
    const double hi = (double)(float)mean, lo = fabs(hi) <= DBL_MAX ? mean - hi : 0.0;
    const double k0 = lo != 0.0 ? d->k1 - b * lo : d->k1;
    if (!(fabs(a) <= DBL_MAX && fabs(b) <= DBL_MAX && fabs(k0) <= DBL_MAX))
        return 0;  /* NaN or Inf in double: the feature's own result */
    return f32_factor_cold(a) | f32_factor_cold(b) | f32_term_cold(k0) | f32_term_cold(mean);
}

/* Where a column block's dx coefficients came from, for its cold pass: per
   column j, s1[j] = sum dy and s2[j] = sum dy*(x - mean) -- or, when
   `given`, dbeta and dgamma (cbn_backward_dx) -- mean[j] and var[j]; gamma
   indexed by feature (column c0 + j). */
typedef struct {
    const double *s1, *s2, *mean, *var, *gamma;
    double eps, m;
    int given;
} dx_sources;

/* The sum dy*(x - mean) that make_dcoef wants, from a dx pass's second
   source value s2: the sum itself, or, `given` (cbn_backward_dx, where s2 is
   dgamma), dgamma*sqrt(var + eps). */
static inline double dx_source_sdyx(double s2, double var, double eps, int given)
{
    return given ? s2 * sqrt(var + eps) : s2;
}

#endif /* CBN_CORE_COLD_H */
