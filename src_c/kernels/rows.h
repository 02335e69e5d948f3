/*
 * kernels/rows.h -- the rows loop shape (inner == 1, N x C): a
 * feature's values are C apart, so the statistics and gradient sums sweep
 * rows with per-column accumulators for a block of up to ROW_BLOCK columns,
 * vectorized across the columns (see rows_geom in core/geometry.h).
 *
 * Part of the kernel template (see kernels/template.h): included once per
 * data type, so it has no include guard, and every name it defines goes
 * through FN() or is a type-independent macro defined identically both times.
 */

#include "kernels/strips.h"

/* inner == 1: row r is x[r*C .. r*C + C). How rows and columns are cut into
   blocks, segments and chunks: see rows_geom in core/geometry.h. */

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
   prefetching as rows_dev; dy gated by bits, dyr[0] being element e of the
   block (bits NULL: not gated, see kernels/gate.h) */
CBN_SPECIALIZED void FN(rows_grad)(const T *dyr, const T *xr, int64_t ld, int k, int nb,
                                   const double *mean, double *s1, double *s2, int pf,
                                   const uint8_t *bits, int64_t e)
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
                FN(load2_gated)(dyr, r * ld + j, bits, e, &gl[r], &gh[r]);
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
                FN(load2_gated)(dyr, r * ld + j, bits, e, &gl, &gh);
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
            double g = (double)FN(load1_gated)(dyr, r * ld + j, bits, e);
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
    const int nstrips = nb / (STRIP_STEPS * STEP);
    const chunk_ahead next = next_chunk_ahead(g, x, sizeof(T), nb, b, g->R, nstrips, b - a);
    int j = 0;
    for (; j + STRIP_STEPS * STEP <= nb; j += STRIP_STEPS * STEP) {
        vd m[STRIP_VECS], s[STRIP_VECS], q[STRIP_VECS];
        strip_load(mu, s1, s2, j, m, s, q);
        for (int64_t r = a; r < b; r++) {
            const T *row = x + r * ld + c0 + j;
            const int pf = next.p ? 0 : prefetch_ahead(g, r, 1);
            if (next.p)
                prefetch_share(next, (j / (STRIP_STEPS * STEP)) * (b - a) + (r - a));
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
   columns [c0, c0+nb), in register strips as rows_chunk_dev; dy gated by
   bits (or NULL) */
CBN_SPECIALIZED void FN(rows_chunk_grad)(const T *dy, const T *x, const rows_geom *g,
                                         int64_t c0, int nb, int64_t a, int64_t b,
                                         const double *mean, double *s1, double *s2,
                                         const uint8_t *bits)
{
    const int64_t ld = g->C;
    const int nstrips = nb / (STRIP_STEPS * STEP);
    /* the next sweep's rows, as rows_chunk_dev */
    const chunk_ahead ndy = next_chunk_ahead(g, dy, sizeof(T), nb, b, b - a, nstrips, b - a);
    const chunk_ahead nx = next_chunk_ahead(g, x, sizeof(T), nb, b, b - a, nstrips, b - a);
    int j = 0;
    for (; j + STRIP_STEPS * STEP <= nb; j += STRIP_STEPS * STEP) {
        vd m[STRIP_VECS], s[STRIP_VECS], q[STRIP_VECS];
        strip_load(mean, s1, s2, j, m, s, q);
        for (int64_t r = a; r < b; r++) {
            const int64_t off = r * ld + c0 + j;
            const int pf = ndy.p ? 0 : prefetch_ahead(g, r, 1);
            if (ndy.p) {
                const int64_t t = (j / (STRIP_STEPS * STEP)) * (b - a) + (r - a);
                prefetch_share(ndy, t);
                prefetch_share(nx, t);
            }
            for (int u = 0; u < STRIP_STEPS; u++) {
                vd gl, gh, xl, xh;
                if (pf) {
                    CBN_PREFETCH(dy + off + pf * ld + u * STEP);
                    CBN_PREFETCH(x + off + pf * ld + u * STEP);
                }
                FN(load2_gated)(dy, off + u * STEP, bits, 0, &gl, &gh);
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
                          prefetch_ahead(g, r, ROWS_AT_ONCE(r, b)), bits, r * ld + c0 + j);
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

/* Gradient sums of columns [c0, c0+nb) over rows [r0, r1), into s1, s2;
   dy gated by bits (or NULL). */
CBN_SPECIALIZED void FN(rows_segment_grad_g)(const T *dy, const T *x, const rows_geom *g,
                                             int64_t c0, int nb, int64_t r0, int64_t r1,
                                             const double *mean, double *s1, double *s2,
                                             const uint8_t *bits)
{
    for (int j = 0; j < nb; j++)
        s1[j] = 0.0, s2[j] = 0.0;
    if (g->C * (int64_t)sizeof(T) <= CBN_STRIP_ROW_BYTES) {
        FN(rows_chunk_grad)(dy, x, g, c0, nb, r0, r1, mean, s1, s2, bits);
        return;
    }
    for (int64_t r = r0; r < r1; r += ROWS_AT_ONCE(r, r1))
        FN(rows_grad)(dy + r * g->C + c0, x + r * g->C + c0, g->C,
                      ROWS_AT_ONCE(r, r1), nb, mean, s1, s2,
                      prefetch_ahead(g, r, ROWS_AT_ONCE(r, r1)), bits, r * g->C + c0);
}

/* rows_segment_grad_g compiled apart with and without a gate */
static void FN(rows_segment_grad)(const T *dy, const T *x, const rows_geom *g,
                                  int64_t c0, int nb, int64_t r0, int64_t r1,
                                  const double *mean, double *s1, double *s2,
                                  const uint8_t *bits)
{
    if (bits)
        FN(rows_segment_grad_g)(dy, x, g, c0, nb, r0, r1, mean, s1, s2, bits);
    else
        FN(rows_segment_grad_g)(dy, x, g, c0, nb, r0, r1, mean, s1, s2, NULL);
}
