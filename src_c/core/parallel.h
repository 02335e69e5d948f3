/*
 * core/parallel.h -- the one threading skeleton of the kernels: a function
 * run over contiguous ranges of independent items, and the split-batch pass
 * that shares a few features' segments among threads and merges their
 * partial statistics in a fixed order.
 *
 * Why ranges of items, and a fixed partition: every item (a feature, a
 * column block, a (feature, segment) piece, a run) is computed the same way
 * whichever thread takes it, and a thread's items are contiguous, so results
 * never depend on the thread count and a range can share what its items
 * have in common (a column block's coefficients, made once for its
 * segments). One thread never enters OpenMP: opening a parallel region
 * costs more than a tiny call, and a process forked after a threaded call
 * must be able to run serially (see cbn.h, Threads).
 */
#ifndef CBN_CORE_PARALLEL_H
#define CBN_CORE_PARALLEL_H

#include <stdint.h>
#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels.h"
#include "core/moments.h"

/* Items [i0, i1) of a pass, with the pass's context. */
typedef void (*range_fn)(void *ctx, int64_t i0, int64_t i1);

/* Threads for a call with `work` elements: serial below the threshold. */
static inline int threads_for(int64_t work)
{
    int nt = cbn_threads();
    return work < CBN_PARALLEL_MIN_WORK ? 1 : nt;
}

/* Thread t of nth's share of the items [0, n). */
static inline void range_of(int64_t n, int t, int nth, int64_t *i0, int64_t *i1)
{
    *i0 = n * t / nth;
    *i1 = n * (t + 1) / nth;
}

/* fn over the items [0, n): in one call when nt == 1, else thread t of an
   OpenMP region of nt takes [n*t/nt, n*(t+1)/nt). */
static inline void for_ranges(int nt, int64_t n, range_fn fn, void *ctx)
{
#ifdef _OPENMP
    if (nt > 1) {
        int t;
#pragma omp parallel for schedule(static) num_threads(nt)
        for (t = 0; t < nt; t++) {
            int64_t i0, i1;
            range_of(n, t, nt, &i0, &i1);
            fn(ctx, i0, i1);
        }
        return;
    }
#endif
    (void)nt;  /* a build without OpenMP is serial (cbn_threads() is 1) */
    fn(ctx, 0, n);
}

/* Whether to share features' segments among threads rather than features:
   when there are too few features (or column blocks) to keep every thread
   busy. */
static inline int split_batch(int nt, int64_t features, int64_t nseg)
{
    return nt > 1 && nseg > 1 && features < 4 * (int64_t)nt;
}

/* The partial statistics of a split-batch pass. Segment s of feature c has
   two partial values, first[s][c] and second[s][c], at
   part[2*C*s + c] and part[2*C*s + C + c]: a mean and m2 (moments, when
   count holds every segment's number of values), or two sums. Merged, the
   totals are in segment 0's slots: part[c] and part[C + c]. */
typedef struct {
    double *part;
    double *count;  /* per segment, for moments; NULL for sums */
    int64_t C, nseg;
} split_sums;

/* Merge every feature's partials left to right over its segments, exactly
   as one thread does with a whole feature: moments by Chan's update from
   the first segment's, sums from 0.0. */
static inline void split_merge(split_sums *sp)
{
    const int64_t C = sp->C;
    double *t1 = sp->part, *t2 = sp->part + C;
    if (!sp->count) {
        for (int64_t c = 0; c < C; c++) {
            double a = 0.0, b = 0.0;
            for (int64_t s = 0; s < sp->nseg; s++) {
                a += sp->part[2 * C * s + c];
                b += sp->part[2 * C * s + C + c];
            }
            t1[c] = a;
            t2[c] = b;
        }
        return;
    }
    double n = sp->count[0];
    for (int64_t s = 1; s < sp->nseg; s++) {
        merge_columns(C, n, sp->count[s], sp->part + 2 * C * s,
                      sp->part + 2 * C * s + C, t1, t2);
        n += sp->count[s];
    }
}

/* The split-batch pass over `pieces` (feature or column block, segment)
   pieces, in order: `partials` fills sp's partials (in parallel),
   split_merge merges them, `merged` (serial, may be NULL) finishes the
   totals, `output` (may be NULL) writes the output (in parallel). All in
   one OpenMP region, whose barriers are the only waits: a region opened per
   step would add a fork and a join each. Returns 0, having done nothing,
   when the partials' memory cannot be had: the caller then takes the
   features one by one, which gives the same result. */
static inline int run_split(int nt, int64_t pieces, split_sums *sp,
                            int with_count, range_fn partials,
                            void (*merged)(void *ctx), range_fn output,
                            void *ctx)
{
    sp->part = malloc((size_t)(2 * sp->C * sp->nseg) * sizeof(double));
    sp->count = with_count && sp->part ? malloc((size_t)sp->nseg * sizeof(double)) : NULL;
    if (!sp->part || (with_count && !sp->count)) {
        free(sp->part);
        return 0;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), nth = omp_get_num_threads();
        int64_t i0, i1;
        range_of(pieces, t, nth, &i0, &i1);
        partials(ctx, i0, i1);
#pragma omp barrier
#pragma omp single
        {
            split_merge(sp);
            if (merged)
                merged(ctx);
        }
        if (output)
            output(ctx, i0, i1);
    }
#else
    (void)nt;
    partials(ctx, 0, pieces);
    split_merge(sp);
    if (merged)
        merged(ctx);
    if (output)
        output(ctx, 0, pieces);
#endif
    return 1;
}

/* The partials' memory, once the caller has read the totals. */
static inline void split_free(split_sums *sp)
{
    free(sp->part);
    free(sp->count);
}

#endif /* CBN_CORE_PARALLEL_H */
