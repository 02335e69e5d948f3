/*
 * kernels/strips.h -- helpers of the rows sums over double vectors: per-column
 * accumulators kept in memory, and the column strips whose accumulators stay
 * in registers down a chunk's rows. Type-independent (double vectors of the
 * level's layer), so defined once per translation unit, from kernels/rows.h.
 */
#ifndef CBN_KERNELS_STRIPS_H
#define CBN_KERNELS_STRIPS_H

/* p[0 : 2*VD_N] += (lo, hi): per-column accumulators kept in memory. */
static inline void add_into(double *p, vd lo, vd hi)
{
    vd_storeu(p, vd_add(vd_loadu(p), lo));
    vd_storeu(p + VD_N, vd_add(vd_loadu(p + VD_N), hi));
}

/* Column strips whose per-column vectors stay in registers down a chunk's
   rows: three (a shift or mean, and two sums) per half of a widened load,
   two halves per 2*VD_N columns, STRIP_STEPS such steps a strip. */
#define STRIP_STEPS (CBN_VREGS >= 32 ? 4 : 2)
#define STRIP_VECS (2 * STRIP_STEPS)

/* A strip's vectors at column j: m from mu, s and q from s1 and s2 ... */
static inline void strip_load(const double *mu, const double *s1,
                              const double *s2, int j, vd *m, vd *s, vd *q)
{
    for (int u = 0; u < STRIP_VECS; u++) {
        m[u] = vd_loadu(mu + j + u * VD_N);
        s[u] = vd_loadu(s1 + j + u * VD_N);
        q[u] = vd_loadu(s2 + j + u * VD_N);
    }
}

/* ... and its sums back. */
static inline void strip_store(double *s1, double *s2, int j, const vd *s,
                               const vd *q)
{
    for (int u = 0; u < STRIP_VECS; u++) {
        vd_storeu(s1 + j + u * VD_N, s[u]);
        vd_storeu(s2 + j + u * VD_N, q[u]);
    }
}

/* Sum and sum of squares of four vectors, as trees. */
static inline void sum4(const vd *d, vd *s, vd *q)
{
    *s = vd_add(vd_add(d[0], d[1]), vd_add(d[2], d[3]));
    *q = vd_add(vd_fmadd(d[0], d[0], vd_mul(d[1], d[1])),
                vd_fmadd(d[2], d[2], vd_mul(d[3], d[3])));
}

#endif /* CBN_KERNELS_STRIPS_H */
