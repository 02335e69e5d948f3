/*
 * core/geometry.h -- how a block is cut: a feature's batch into chunks and
 * segments, for each of the two loop shapes.
 *
 * The reduction tree
 * ------------------
 * A feature's m values are cut into chunks of about CHUNK elements, small
 * enough to stay in L1 between two passes; consecutive chunks are grouped
 * into segments (SEG_CHUNKS chunks of a planes layout, two chunks of rows in a
 * rows layout, see rows_geom). Statistics are computed per chunk
 * (see "One pass or two" below), merged chunk by chunk within a segment and
 * segment by segment within the feature, always left to right (Chan et al.'s
 * pairwise update, stable for any mean).
 * The cuts depend only on the block's shape, so the result is the same
 * whether one thread does a whole feature or several threads share its
 * segments: bitwise identical for any thread count.
 */
#ifndef CBN_CORE_GEOMETRY_H
#define CBN_CORE_GEOMETRY_H

#include <stddef.h>
#include <stdint.h>

#include "core/tuning.h"

/* Whether an output of `bytes` bytes is written with streaming stores (see
   "Output stores" in kernels/contiguous.h): when it is far larger than what
   the caches could keep anyway. */
static inline int streams_output(int64_t bytes)
{
    return bytes >= CBN_STREAM_MIN_BYTES;
}

/* The limit of the tuning profile in use (profiles.c, kernels.h). */
extern int64_t cbn_along_max_bytes;

/* Whether a planes pass over a block of `bytes` input bytes prefetches
   its features along (see "Prefetching along a feature" in
   core/prefetch.h): inputs that come from L3 or memory, but not beyond the
   profile's limit -- on AMD Zen 4 such prefetches slow streams from memory
   (profiles.c). */
static inline int prefetches_along(int64_t bytes)
{
    return bytes >= CBN_PREFETCH_MIN_BYTES && bytes < cbn_along_max_bytes;
}

/* -------------------------------------------------- planes (inner > 1) --- */

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
} planes_geom;

static inline planes_geom planes_geometry(int64_t outer, int64_t C, int64_t inner,
                                      size_t elsize)
{
    planes_geom g;
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
    g.along = !g.prefetch && prefetches_along(outer * C * inner * (int64_t)elsize);
    return g;
}

static inline void planes_chunk(const planes_geom *g, int64_t j, int64_t *o0,
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

/* Walking the pieces of one segment of feature c, in order: a piece is run
   o's columns [i0, i1) of one of the segment's chunks, starting at element
   `off` of the block.
       planes_piece p = planes_pieces(g, s);
       while (planes_next_piece(g, c, &p))
           ... p.off, p.i1 - p.i0 elements ... */
typedef struct {
    int64_t j, j1;         /* the segment's next chunk, and its end */
    int64_t o, o1, i0, i1; /* the current chunk's runs [o, o1) ... */
    int64_t off;
} planes_piece;

static inline planes_piece planes_pieces(const planes_geom *g, int64_t s)
{
    planes_piece p;
    p.j = s * SEG_CHUNKS;
    p.j1 = p.j + SEG_CHUNKS < g->nchunks ? p.j + SEG_CHUNKS : g->nchunks;
    p.o = p.o1 = p.i0 = p.i1 = p.off = 0;
    return p;
}

/* Move p to the next piece of feature c; 0 past the segment's last. */
static inline int planes_next_piece(const planes_geom *g, int64_t c, planes_piece *p)
{
    if (p->o + 1 < p->o1) {
        p->o++;
    } else {
        if (p->j >= p->j1)
            return 0;
        planes_chunk(g, p->j++, &p->o, &p->o1, &p->i0, &p->i1);
    }
    p->off = (p->o * g->C + c) * g->inner + p->i0;
    return 1;
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

static inline void segment_rows(const rows_geom *g, int64_t s, int64_t *r0,
                                int64_t *r1)
{
    *r0 = s * g->seg_rows;
    *r1 = *r0 + g->seg_rows < g->outer ? *r0 + g->seg_rows : g->outer;
}

#endif /* CBN_CORE_GEOMETRY_H */
