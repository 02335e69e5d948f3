/*
 * kernels_common.h -- type-independent pieces of the kernels: how a feature's
 * batch is cut into chunks and segments, and how partial statistics merge.
 * Included once by each kernels_<level>.c, before kernels_template.h.
 *
 * The reduction tree
 * ------------------
 * A feature's m values are cut into chunks of about CHUNK elements, small
 * enough to stay in L1 between two passes; consecutive chunks are grouped
 * into segments (SEG_CHUNKS chunks of a run layout, two chunks of rows in a
 * rows layout, see rows_geom). Statistics are computed per chunk
 * (see "One pass or two" below), merged chunk by chunk within a segment and
 * segment by segment within the feature, always left to right (Chan et al.'s
 * pairwise update, stable for any mean).
 * The cuts depend only on the block's shape, so the result is the same
 * whether one thread does a whole feature or several threads share its
 * segments: bitwise identical for any thread count.
 */
#ifndef CBN_KERNELS_COMMON_H
#define CBN_KERNELS_COMMON_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels.h"

/* Hints to fetch the cache line at p, to read it or (_W) to write it; they
   never fault. */
#if defined(__GNUC__) || defined(__clang__)
#define CBN_PREFETCH(p) __builtin_prefetch(p)
#define CBN_PREFETCH_W(p) __builtin_prefetch(p, 1)
#define CBN_PREFETCH_L2(p) __builtin_prefetch(p, 0, 2)
#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
#include <xmmintrin.h>
#define CBN_PREFETCH(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)
#define CBN_PREFETCH_W(p) CBN_PREFETCH(p)
#define CBN_PREFETCH_L2(p) _mm_prefetch((const char *)(p), _MM_HINT_T1)
#else
#define CBN_PREFETCH(p) ((void)0)
#define CBN_PREFETCH_W(p) ((void)0)
#define CBN_PREFETCH_L2(p) ((void)0)
#endif

/* Prefetch every line of the n bytes at p, to read or to write them. */
static inline void prefetch_bytes(const void *p, int64_t n, int write)
{
    const char *q = (const char *)p;
    for (int64_t b = 0; b < n; b += 64) {
        if (write)
            CBN_PREFETCH_W(q + b);
        else
            CBN_PREFETCH(q + b);
    }
}

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

/* Whether an output of `bytes` bytes is written with streaming stores (see
   "Output stores" in kernels_template.h): when it is far larger than what
   the caches could keep anyway. */
static inline int streams_output(int64_t bytes)
{
    return bytes >= CBN_STREAM_MIN_BYTES;
}

/* ---------------------------------------------------- runs (inner > 1) --- */

/* How one feature's runs are cut. A chunk is the rectangle of rows
   [o0, o1) and columns [i0, i1) of the feature's (outer, inner) slab. */
typedef struct {
    int64_t outer, C, inner;
    int64_t pieces;   /* chunks per run (long runs), or 0 */
    int64_t runs;     /* runs per chunk (short runs) */
    int64_t nchunks;  /* per feature */
    int64_t nseg;     /* per feature */
    int stream;       /* write the output with streaming stores */
    int prefetch;     /* runs to prefetch ahead (short runs), 0 for none */
    int along;        /* prefetch the next piece along (long runs, big data) */
} runs_geom;

static inline runs_geom runs_geometry(int64_t outer, int64_t C, int64_t inner,
                                      size_t elsize)
{
    runs_geom g;
    g.outer = outer;
    g.C = C;
    g.inner = inner;
    if (inner >= CHUNK) {
        g.pieces = (inner + CHUNK - 1) / CHUNK;
        g.runs = 1;
        g.nchunks = outer * g.pieces;
    } else {
        g.pieces = 0;
        g.runs = CHUNK / inner;
        g.nchunks = (outer + g.runs - 1) / g.runs;
    }
    g.nseg = (g.nchunks + SEG_CHUNKS - 1) / SEG_CHUNKS;
    g.stream = streams_output(outer * C * inner * (int64_t)elsize);
    g.prefetch = inner * (int64_t)elsize <= CBN_PREFETCH_RUN_BYTES ? CBN_PREFETCH_RUNS : 0;
    g.along = !g.prefetch && outer * C * inner * (int64_t)elsize >= CBN_PREFETCH_MIN_BYTES;
    return g;
}

/* Prefetching along a feature
   ---------------------------
   One core reads a stream from memory faster when the stream is asked for
   some kilobytes ahead (to L2: a hint the prefetchers take as a long
   stream) than when the hardware prefetchers find it on their own: on the
   development VM a sum over 205 MB ran at 0.71x the time of a copy with
   such prefetches 4-64 KiB ahead, at 1.0x without. A feature's data come
   in pieces -- a run, or a CHUNK of a long run -- and the piece after the
   one being read is its neighbour in the feature's stream, 2-8 KiB further
   on: so while element i of a piece is read, element i of the next piece
   is prefetched. `ahead` is that next piece (bytes == 0: nothing). */
typedef struct {
    const char *p;
    int64_t bytes;
} ahead;

/* The piece after the one of run o of feature c that starts at i0, in the
   array at base (elsize bytes a value), when g prefetches along; bytes == 0
   at the feature's end, so no address beyond the array is formed. */
static inline ahead next_piece(const runs_geom *g, const void *base,
                               size_t elsize, int64_t o, int64_t c, int64_t i0)
{
    ahead a = {(const char *)base, 0};
    if (!g->along)
        return a;
    if (i0 + CHUNK < g->inner) {
        i0 += CHUNK;
    } else if (o + 1 < g->outer) {
        o += 1;
        i0 = 0;
    } else {
        return a;
    }
    int64_t n = g->inner - i0 < CHUNK ? g->inner - i0 : CHUNK;
    a.p += ((o * g->C + c) * g->inner + i0) * (int64_t)elsize;
    a.bytes = n * (int64_t)elsize;
    return a;
}

static inline ahead no_ahead(void)
{
    ahead a = {NULL, 0};
    return a;
}

/* For a pass that reads the elements [e, e + n) of a contiguous array of
   `total` (elsize bytes each) as one stream, when `along`: the n elements
   CBN_PREFETCH_ALONG_BYTES further on, cut at the array's end. */
static inline ahead stream_ahead(const void *base, int64_t e, int64_t n,
                                 int64_t total, size_t elsize, int along)
{
    ahead a = {NULL, 0};
    int64_t f = e + CBN_PREFETCH_ALONG_BYTES / (int64_t)elsize;
    if (along && f < total) {
        a.p = (const char *)base + f * (int64_t)elsize;
        a.bytes = (f + n < total ? n : total - f) * (int64_t)elsize;
    }
    return a;
}

/* Prefetch to L2 the lines of a's bytes [at, at + span) that it has. */
static inline void prefetch_along(ahead a, int64_t at, int span)
{
    for (int b = 0; b < span; b += 64)
        if (at + b < a.bytes)
            CBN_PREFETCH_L2(a.p + at + b);
}

/* Prefetch run o + g->prefetch of feature c of `a` (elsize bytes a value),
   when there is one and short runs are prefetched. */
static inline void prefetch_run(const runs_geom *g, const void *a, size_t elsize,
                                int64_t o, int64_t c, int write)
{
    if (g->prefetch && o + g->prefetch < g->outer)
        prefetch_bytes((const char *)a + ((o + g->prefetch) * g->C + c) * g->inner * (int64_t)elsize,
                       g->inner * (int64_t)elsize, write);
}

static inline void runs_chunk(const runs_geom *g, int64_t j, int64_t *o0,
                              int64_t *o1, int64_t *i0, int64_t *i1)
{
    if (g->pieces) {
        int64_t p = j % g->pieces;
        *o0 = j / g->pieces;
        *o1 = *o0 + 1;
        *i0 = p * CHUNK;
        *i1 = *i0 + CHUNK < g->inner ? *i0 + CHUNK : g->inner;
    } else {
        *o0 = j * g->runs;
        *o1 = *o0 + g->runs < g->outer ? *o0 + g->runs : g->outer;
        *i0 = 0;
        *i1 = g->inner;
    }
}

/* ------------------------------------------------------ rows (inner == 1) */

/* Rows per chunk: about 4*CHUNK values of a column block, and at least 64
   rows, so the per-chunk work on each column (check, fold) stays small next
   to the sums. Depends on C only. */
static inline int64_t rows_per_chunk(int64_t C)
{
    int64_t w = C < ROW_BLOCK ? C : ROW_BLOCK;
    int64_t r = 4 * CHUNK / w;
    return r < 64 ? 64 : r;
}

/* How the rows of a column block are cut: column block b holds the features
   [b*ROW_BLOCK, b*ROW_BLOCK + nb); segment s the rows [s*seg_rows, ...),
   in chunks of R rows. */
typedef struct {
    int64_t outer, C, R, seg_rows, nblocks, nseg;
    int stream;    /* write the output with streaming stores */
    int prefetch;  /* rows to prefetch ahead, 0 for none */
} rows_geom;

static inline rows_geom rows_geometry(int64_t outer, int64_t C, size_t elsize)
{
    rows_geom g;
    g.outer = outer;
    g.C = C;
    g.R = rows_per_chunk(C);
    /* short segments: rows carry no per-run cost to amortize, and threads
       need several segments to share when the columns fit one block */
    g.seg_rows = 2 * g.R;
    g.nblocks = (C + ROW_BLOCK - 1) / ROW_BLOCK;
    g.nseg = (outer + g.seg_rows - 1) / g.seg_rows;
    g.stream = streams_output(outer * C * (int64_t)elsize);  /* flat passes only */
    g.prefetch = outer * C * (int64_t)elsize >= CBN_PREFETCH_MIN_BYTES ? CBN_PREFETCH_ROWS : 0;
    return g;
}

static inline int block_width(const rows_geom *g, int64_t b)
{
    int64_t w = g->C - b * ROW_BLOCK;
    return (int)(w < ROW_BLOCK ? w : ROW_BLOCK);
}

/* Rows ahead to prefetch from row r on, when k rows are read now: none past
   the last row, so no address beyond the array is formed. */
static inline int prefetch_ahead(const rows_geom *g, int64_t r, int k)
{
    return r + k + g->prefetch <= g->outer ? g->prefetch : 0;
}

static inline void segment_rows(const rows_geom *g, int64_t s, int64_t *r0,
                                int64_t *r1)
{
    *r0 = s * g->seg_rows;
    *r1 = *r0 + g->seg_rows < g->outer ? *r0 + g->seg_rows : g->outer;
}

/* Fold the moments of a group of nk rows -- per column j: first mean mu[j],
   s1[j] = sum(x - mu[j]), s2[j] = sum((x - mu[j])^2) -- into running moments
   (count n before the group; mean, m2 per column). Every column shares the
   counts, so the divisions happen once and the loops vectorize. */
static inline void fold_columns(int nb, double n, double nk, const double *mu,
                                const double *s1, const double *s2,
                                double *mean, double *m2)
{
    const double inv = 1.0 / nk;
    if (n == 0.0) {
        for (int j = 0; j < nb; j++) {
            double q = s2[j] - s1[j] * (s1[j] * inv);
            mean[j] = mu[j] + s1[j] * inv;
            m2[j] = q < 0.0 ? 0.0 : q; /* rounding only; NaN passes */
        }
        return;
    }
    const double wb = nk / (n + nk), wab = n * wb;
    for (int j = 0; j < nb; j++) {
        double q = s2[j] - s1[j] * (s1[j] * inv);
        double d = (mu[j] + s1[j] * inv) - mean[j];
        mean[j] += d * wb;
        m2[j] += (q < 0.0 ? 0.0 : q) + d * d * wab;
    }
}

/* Merge partial moments (count nk; pmean, pm2 per column) into running ones
   (count n): Chan's update with the divisions shared by all columns. */
static inline void merge_columns(int nb, double n, double nk,
                                 const double *pmean, const double *pm2,
                                 double *mean, double *m2)
{
    if (n == 0.0) {
        for (int j = 0; j < nb; j++)
            mean[j] = pmean[j], m2[j] = pm2[j];
        return;
    }
    const double wb = nk / (n + nk), wab = n * wb;
    for (int j = 0; j < nb; j++) {
        double d = pmean[j] - mean[j];
        mean[j] += d * wb;
        m2[j] += pm2[j] + d * d * wab;
    }
}

/* Whether to share features' segments among threads rather than features:
   when there are too few features to keep every thread busy. */
static inline int split_batch(int nt, int64_t C, int64_t nseg)
{
    return nt > 1 && nseg > 1 && C < 4 * (int64_t)nt;
}

/* ----------------------------------------------------- overflow rescue --- */

/* Marks a cold path's function: out of line, so that the hot function that
   tests for it stays as small (and as inlined) as it was without it. */
#if defined(__GNUC__) || defined(__clang__)
#define CBN_COLD __attribute__((cold, noinline))
#elif defined(_MSC_VER)
#define CBN_COLD __declspec(noinline)
#else
#define CBN_COLD
#endif

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

/* finite_or_rescued for the columns [c0, c0 + n) of a rows block (inner
   == 1), mean[j] and var[j]: one test for all of them, in a loop that
   vectorizes, and the per-column test only when one failed. */
static inline void columns_finite_or_rescued(const void *x, int is_f32,
                                             int64_t outer, int64_t C,
                                             int64_t c0, int64_t n,
                                             double *mean, double *var)
{
    int ok = 1;
    for (int64_t j = 0; j < n; j++)
        ok &= (fabs(mean[j]) <= DBL_MAX) & (fabs(var[j]) <= DBL_MAX);
    if (!ok)
        for (int64_t j = 0; j < n; j++)
            finite_or_rescued(x, is_f32, outer, C, 1, c0 + j, &mean[j], &var[j]);
}

/* ------------------------------------------------------- cold features --- */

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

/* ------------------------------------------------------------- threads --- */

/* Threads for a call with `work` elements: serial below the threshold. */
static inline int threads_for(int64_t work)
{
    int nt = cbn_threads();
    return work < CBN_PARALLEL_MIN_WORK ? 1 : nt;
}

#endif /* CBN_KERNELS_COMMON_H */
