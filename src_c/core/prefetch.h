/*
 * core/prefetch.h -- prefetch planning: which lines the loops ask for ahead
 * of reading them, and how far.
 */
#ifndef CBN_CORE_PREFETCH_H
#define CBN_CORE_PREFETCH_H

#include <stddef.h>
#include <stdint.h>

#include "core/geometry.h"
#include "core/hints.h"

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
   is prefetched. `ahead` is that next piece (bytes == 0: nothing). Not on
   every CPU: AMD Zen 4 streams from memory faster without (the tuning
   profile's limit, see prefetches_along in core/geometry.h). */
typedef struct {
    const char *p;
    int64_t bytes;
} ahead;

/* The piece after the one of run o of feature c that starts at i0, in the
   array at base (elsize bytes a value), when g prefetches along; bytes == 0
   at the feature's end, so no address beyond the array is formed. */
static inline ahead next_piece(const planes_geom *g, const void *base,
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
static inline void prefetch_run(const planes_geom *g, const void *a, size_t elsize,
                                int64_t o, int64_t c, int write)
{
    if (g->prefetch && o + g->prefetch < g->outer)
        prefetch_bytes((const char *)a + ((o + g->prefetch) * g->C + c) * g->inner * (int64_t)elsize,
                       g->inner * (int64_t)elsize, write);
}

/* Rows ahead to prefetch from row r on, when k rows are read now: none past
   the last row, so no address beyond the array is formed. */
static inline int prefetch_ahead(const rows_geom *g, int64_t r, int k)
{
    return r + k + g->prefetch <= g->outer ? g->prefetch : 0;
}

/* Prefetching the next chunk of rows
   ----------------------------------
   The rows statistics sweep a chunk strip by strip: each strip reads a few
   lines of every row, rows C values apart, so read from memory a chunk is
   as many strided streams as it has strips. When a column block is the
   whole row, the chunk that follows is one contiguous range instead, and
   while a chunk is summed (from L2) the next one is prefetched in memory
   order, an equal share of its lines at each step of the sweep. */
typedef struct {
    const char *p;  /* NULL: none (the strips prefetch rows ahead instead) */
    int64_t share, total;  /* bytes per step, in all */
} chunk_ahead;

/* The `rows` rows from row b (the chunk after a sweep ending there), shared
   over the steps of a sweep of `strips` strips down `swept` rows, when
   inputs are prefetched, the column block of nb columns is the whole row,
   and there are several strips: one strip already reads the rows in memory
   order, and with it the far, bursty prefetch made NHWC (32,56,56,64)
   backward 10% slower (Zen 4). */
static inline chunk_ahead next_chunk_ahead(const rows_geom *g, const void *x,
                                           size_t elsize, int64_t nb, int64_t b,
                                           int64_t rows, int strips, int64_t swept)
{
    chunk_ahead a = {NULL, 0, 0};
    const int64_t end = b + rows < g->outer ? b + rows : g->outer;
    const int64_t steps = strips * swept;
    if (g->prefetch && nb == g->C && strips > 1 && swept > 0 && end > b) {
        a.p = (const char *)x + b * g->C * (int64_t)elsize;
        a.total = (end - b) * g->C * (int64_t)elsize;
        a.share = ((a.total + steps - 1) / steps + 63) / 64 * 64;
    }
    return a;
}

/* Step t's share of the next chunk's lines. */
static inline void prefetch_share(chunk_ahead a, int64_t t)
{
    const int64_t e = (t + 1) * a.share < a.total ? (t + 1) * a.share : a.total;
    for (int64_t o = t * a.share; o < e; o += 64)
        CBN_PREFETCH(a.p + o);
}

#endif /* CBN_CORE_PREFETCH_H */
