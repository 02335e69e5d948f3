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
   is prefetched. `ahead` is that next piece (bytes == 0: nothing). */
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

#endif /* CBN_CORE_PREFETCH_H */
