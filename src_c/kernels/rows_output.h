/*
 * kernels/rows_output.h -- a rows column block's output: its per-column
 * coefficients (bcoefs, laid out flat or per column), the row-by-row
 * normalize and dx passes, and the cold passes of a block with a cold
 * column.
 *
 * Part of the kernel template (see kernels/template.h): included once per
 * data type, so it has no include guard, and every name it defines goes
 * through FN() or is a type-independent macro defined identically both times.
 */

/* The per-column coefficients of a column block's elementwise pass --
   normalize: hi, scale, shift; dx: a, b, k0, hi -- laid out flat (fp set)
   when the block is the whole row and a flat pass applies, else as arrays
   per column for the row loops. Only one of the two is ever needed, so they
   share memory: these sit on OpenMP worker stacks, which can be as small
   as 128 KiB (musl). */
typedef struct {
    const FN(flat) *fp;
    int cold;  /* a column may be cold: the block takes the cold pass */
    union {
        T col[4][ROW_BLOCK];
        FN(flat) f;
    } u;
} FN(bcoefs);

/* Start the coefficients of a block whose output is out. */
static void FN(bcoefs_start)(FN(bcoefs) *k, const T *out, const rows_geom *g)
{
    k->fp = g->nblocks == 1 && FN(flat_plan)(&k->u.f, out, g->outer, g->C)
                ? &k->u.f : NULL;
    k->cold = 0;
}

/* Coefficient i of the block's column j is v (then bcoefs_finish). */
static inline void FN(bcoefs_put)(FN(bcoefs) *k, const rows_geom *g, int i,
                                  int j, T v)
{
    if (k->fp)
        FN(flat_put)(&k->u.f, g->C, i, j, v);
    else
        k->u.col[i][j] = v;
}

/* Coefficient i of the block's column j, as bcoefs_put placed it. */
static inline T FN(bcoefs_get)(const FN(bcoefs) *k, const rows_geom *g, int i,
                               int j)
{
    if (k->fp)
        return k->fp->k[i * k->fp->P + (j >= k->fp->c0 ? j - k->fp->c0 : j + g->C - k->fp->c0)];
    return k->u.col[i][j];
}

/* Once every column's nk coefficients are put. */
static void FN(bcoefs_finish)(FN(bcoefs) *k, const rows_geom *g, int nk)
{
    if (k->fp)
        FN(flat_repeat)(&k->u.f, g->C, nk);
}

/* Whether a float coefficient of the block's nb columns fails the fast
   paths' test -- coef_ok for normalize, dcoef_ok for dx -- in one loop over
   their places that vectorizes (in the flat layout the places [0, C) hold
   every column once). */
static int FN(bcoefs_suspect)(const FN(bcoefs) *k, int nb, int dx, int batch_stats)
{
    const int64_t P = k->fp ? k->fp->P : 0;
    const T *p0 = k->fp ? k->fp->k : k->u.col[0], *p1 = k->fp ? p0 + P : k->u.col[1],
            *p2 = k->fp ? p1 + P : k->u.col[2], *p3 = k->fp ? p2 + P : k->u.col[3];
    int ok = 1;
    if (dx)
        for (int j = 0; j < nb; j++)
            ok &= FN(dcoef_ok)(p0[j], p1[j], p2[j], p3[j], batch_stats);
    else
        for (int j = 0; j < nb; j++)
            ok &= FN(coef_ok)(p0[j], p1[j]);
    return !ok;
}

/* Whether column j of a block whose float normalize coefficients are k is
   cold (then *ck holds its double ones); mean, var: the block's. */
static inline int FN(column_cold)(const FN(bcoefs) *k, const rows_geom *g,
                                  int64_t c0, int j, const double *mean,
                                  const double *var, double eps,
                                  const double *gamma, const double *beta,
                                  cold_coef *ck)
{
    return !FN(coef_ok)(FN(bcoefs_get)(k, g, 0, j), FN(bcoefs_get)(k, g, 1, j))
           && cold_coef_of(mean[j], var[j], eps, gamma, beta, c0 + j, ck);
}

/* Whether a column of the block is cold, for a block with a suspect one. */
static CBN_COLD int FN(block_cold)(const FN(bcoefs) *k, const rows_geom *g,
                                   int64_t c0, int nb, const double *mean,
                                   const double *var, double eps,
                                   const double *gamma, const double *beta)
{
    cold_coef ck;
    for (int j = 0; j < nb; j++)
        if (FN(column_cold)(k, g, c0, j, mean, var, eps, gamma, beta, &ck))
            return 1;
    return 0;
}

/* Whether column j of a block whose float dx coefficients are k is cold
   (then *cd holds its double ones); its sums etc. from src. */
static inline int FN(column_cold_d)(const FN(bcoefs) *k, const rows_geom *g,
                                    int64_t c0, int j, int batch_stats,
                                    const dx_sources *src, cold_dcoef *cd)
{
    if (FN(dcoef_ok)(FN(bcoefs_get)(k, g, 0, j), FN(bcoefs_get)(k, g, 1, j),
                     FN(bcoefs_get)(k, g, 2, j), FN(bcoefs_get)(k, g, 3, j), batch_stats))
        return 0;
    const double sdyx = dx_source_sdyx(src->s2[j], src->var[j], src->eps, src->given);
    return cold_dcoef_of(src->s1[j], sdyx, src->m, src->mean[j], src->var[j], src->eps,
                         src->gamma, batch_stats, c0 + j, cd);
}

/* Whether a column of the block is cold, for a block with a suspect one. */
static CBN_COLD int FN(block_cold_d)(const FN(bcoefs) *k, const rows_geom *g,
                                     int64_t c0, int nb, int batch_stats,
                                     const dx_sources *src)
{
    cold_dcoef cd;
    for (int j = 0; j < nb; j++)
        if (FN(column_cold_d)(k, g, c0, j, batch_stats, src, &cd))
            return 1;
    return 0;
}

/* bcoefs_finish for dx coefficients: the block marked cold when a column is
   (only float data can be). */
static void FN(bcoefs_finish_d)(FN(bcoefs) *k, const rows_geom *g, int64_t c0,
                                int nb, int batch_stats, const dx_sources *src)
{
    if (T_IS_F32 && FN(bcoefs_suspect)(k, nb, 1, batch_stats))
        k->cold = FN(block_cold_d)(k, g, c0, nb, batch_stats, src);
    FN(bcoefs_finish)(k, g, 4);
}

/* The coefficients of make_coef for columns [c0, c0+nb), for output y:
   straight loops the compiler vectorizes (square roots and divisions
   included), over the columns in the order of their places -- in the flat
   layout, columns c0 % C .. C - 1 come first (see flat_put). */
static void FN(block_coefs)(FN(bcoefs) *k, const T *y, const rows_geom *g,
                            int64_t c0, int nb, const double *mean,
                            const double *var, double eps, const double *gamma,
                            const double *beta)
{
    double scale[ROW_BLOCK];
    FN(bcoefs_start)(k, y, g);
    const int64_t P = k->fp ? k->fp->P : nb, first = k->fp ? k->fp->c0 : 0;
    T *hi = k->fp ? k->u.f.k : k->u.col[0], *sc = k->fp ? hi + P : k->u.col[1],
      *sh = k->fp ? sc + P : k->u.col[2];
    for (int j = 0; j < nb; j++)
        scale[j] = 1.0 / sqrt(var[j] + eps);
    if (gamma)
        for (int j = 0; j < nb; j++)
            scale[j] *= gamma[c0 + j];
    /* columns [first, nb) take places [0, nb - first), then columns
       [0, first) the places after them */
    for (int part = 0; part < 2; part++) {
        const int64_t j0 = part ? 0 : first, j1 = part ? first : nb,
                      at = part ? nb - first : -first;
        for (int64_t j = j0; j < j1; j++) {
            T h = (T)mean[j];
            double lo = mean[j] - (double)h, b = beta ? beta[c0 + j] : 0.0;
            hi[j + at] = h;
            sc[j + at] = (T)scale[j];
            sh[j + at] = (T)(lo != 0.0 ? b - lo * scale[j] : b);
        }
    }
    if (T_IS_F32 && FN(bcoefs_suspect)(k, nb, 0, 0))
        k->cold = FN(block_cold)(k, g, c0, nb, mean, var, eps, gamma, beta);
    FN(bcoefs_finish)(k, g, 3);
}

/* The coefficients d of dx (see make_dcoef) for column j. */
static void FN(bcoefs_put_d)(FN(bcoefs) *k, const rows_geom *g, int j,
                             FN(dcoef) d)
{
    FN(bcoefs_put)(k, g, 0, j, d.a);
    FN(bcoefs_put)(k, g, 1, j, d.b);
    FN(bcoefs_put)(k, g, 2, j, d.k0);
    FN(bcoefs_put)(k, g, 3, j, d.hi);
}

/* y = (x - hi)*sc + sh for rows [r0, r1) of columns [c0, c0+nb), row by
   row, then the epilogue (res: the residual, laid out as x, or NULL). Going
   down a column instead would touch addresses a row apart, which for rows
   of 4 KiB all fall in the same L1 set. */
CBN_SPECIALIZED void FN(rows_normalize_ep)(const T *x, T *y, const rows_geom *g,
                                           int64_t c0, int nb, int64_t r0, int64_t r1,
                                           const FN(bcoefs) *k, const T *res, int relu)
{
    const T *hi = k->u.col[0], *sc = k->u.col[1], *sh = k->u.col[2];
    for (int64_t r = r0; r < r1; r++) {
        const T *xr = x + r * g->C + c0, *rr = res ? res + r * g->C + c0 : NULL;
        T *yr = y + r * g->C + c0;
        const int pf = prefetch_ahead(g, r, 1);
        int j = 0;
        for (; j + VT_N <= nb; j += VT_N) {
            if (pf)
                CBN_PREFETCH(xr + pf * g->C + j);
            vt_storeu(yr + j, FN(epilogue_v)(FN(normalize_v)(vt_loadu(xr + j), vt_loadu(hi + j),
                                                             vt_loadu(sc + j), vt_loadu(sh + j)),
                                             rr, j, relu));
        }
        for (; j < nb; j++)
            yr[j] = FN(epilogue1)(FN(normalize1)(xr[j], hi[j], sc[j], sh[j]), rr, j, relu);
    }
}

/* rows_normalize_ep, flat when k is laid out for it, each form of the
   epilogue compiled apart (as run_normalize). */
static void FN(rows_normalize)(const T *x, T *y, const rows_geom *g, int64_t c0,
                               int nb, int64_t r0, int64_t r1,
                               const FN(bcoefs) *k, int stream, const T *res, int relu)
{
    if (k->fp)
        FN(flat_normalize)(x, y, r0 * g->C, r1 * g->C, k->fp, stream, res, relu);
    else if (res && relu)
        FN(rows_normalize_ep)(x, y, g, c0, nb, r0, r1, k, res, 1);
    else if (res)
        FN(rows_normalize_ep)(x, y, g, c0, nb, r0, r1, k, res, 0);
    else if (relu)
        FN(rows_normalize_ep)(x, y, g, c0, nb, r0, r1, k, NULL, 1);
    else
        FN(rows_normalize_ep)(x, y, g, c0, nb, r0, r1, k, NULL, 0);
}

/* dx = a*dy + (b*(x - hi) + k0) over rows [r0, r1) of a column block, flat
   or row by row (see rows_normalize); dy gated by bits (or NULL, see
   kernels/gate.h). */
CBN_SPECIALIZED void FN(rows_dx)(const T *dy, const T *x, T *dx, const rows_geom *g,
                                 int64_t c0, int nb, int64_t r0, int64_t r1,
                                 const FN(bcoefs) *k, int batch_stats, int stream,
                                 const uint8_t *bits)
{
    const T *a = k->u.col[0], *b = k->u.col[1], *k0 = k->u.col[2], *hi = k->u.col[3];
    if (k->fp) {
        FN(flat_dx)(dy, x, dx, r0 * g->C, r1 * g->C, k->fp, batch_stats, stream, bits);
        return;
    }
    for (int64_t r = r0; r < r1; r++) {
        const int64_t off = r * g->C + c0;
        const T *gr = dy + off, *xr = x + off;
        T *dr = dx + off;
        const int pf = prefetch_ahead(g, r, 1);
        int j = 0;
        if (batch_stats) {
            for (; j + VT_N <= nb; j += VT_N) {
                if (pf) {
                    CBN_PREFETCH(gr + pf * g->C + j);
                    CBN_PREFETCH(xr + pf * g->C + j);
                }
                vt_storeu(dr + j, FN(dx_v)(FN(loadu_gated)(gr, j, bits, off), vt_loadu(xr + j), vt_loadu(a + j),
                                           vt_loadu(b + j), vt_loadu(k0 + j), vt_loadu(hi + j)));
            }
            for (; j < nb; j++)
                dr[j] = FN(dx1)(FN(load1_gated)(gr, j, bits, off), xr[j], a[j], b[j], k0[j], hi[j]);
        } else {  /* dx = a*dy: x plays no part (a NaN there stays out) */
            for (; j + VT_N <= nb; j += VT_N)
                vt_storeu(dr + j, FN(scale_v)(FN(loadu_gated)(gr, j, bits, off), vt_loadu(a + j)));
            for (; j < nb; j++)
                dr[j] = FN(scale1)(FN(load1_gated)(gr, j, bits, off), a[j]);
        }
    }
}

/* The cold passes of a column block (see "Cold features" in
   core/cold.h): when a column of the block may be cold, its elements
   are computed column by column, COLD_ROWS rows at a time -- a cold column
   in double, the others with their float coefficients by st_fmadd, which
   rounds as the vector lanes do, so those come out bitwise as on the fast
   pass. Each element is read before it is written, as there, so the output
   may be an input. COLD_ROWS rows of a block stay in cache from one column
   to the next. */
#define COLD_ROWS 64

/* rows_normalize for a block marked cold; mean[j], var[j] are column j's. */
static CBN_COLD void FN(rows_normalize_cold)(const T *x, T *y, const rows_geom *g,
                                             int64_t c0, int nb, int64_t r0,
                                             int64_t r1, const FN(bcoefs) *k,
                                             const double *mean, const double *var,
                                             double eps, const double *gamma,
                                             const double *beta, const T *res, int relu)
{
    const int64_t ld = g->C;
    for (int64_t a = r0; a < r1; a += COLD_ROWS) {
        const int64_t n = r1 - a < COLD_ROWS ? r1 - a : COLD_ROWS;
        for (int j = 0; j < nb; j++) {
            const T *xc = x + a * ld + c0 + j;
            T *yc = y + a * ld + c0 + j;
            const T *rc = res ? res + a * ld + c0 + j : NULL;
            cold_coef ck;
            if (FN(column_cold)(k, g, c0, j, mean, var, eps, gamma, beta, &ck)) {
                FN(cold_normalize)(xc, yc, n, ld, &ck, rc, relu);
                continue;
            }
            const T hi = FN(bcoefs_get)(k, g, 0, j), sc = FN(bcoefs_get)(k, g, 1, j),
                    sh = FN(bcoefs_get)(k, g, 2, j);
            for (int64_t r = 0; r < n; r++)
                yc[r * ld] = FN(epilogue1)(FN(normalize1)(xc[r * ld], hi, sc, sh), rc,
                                           r * ld, relu);
        }
    }
}

/* rows_normalize, or its cold pass for a block marked cold (only float
   data are ever marked), with the epilogue ep (or NULL). */
static inline void FN(block_normalize)(const T *x, T *y, const rows_geom *g,
                                       int64_t c0, int nb, int64_t r0, int64_t r1,
                                       const FN(bcoefs) *k, int stream,
                                       const double *mean, const double *var,
                                       double eps, const double *gamma,
                                       const double *beta, const FN(epi) *ep)
{
    const T *res = FN(epi_res)(ep, 0);
    if (T_IS_F32 && k->cold)
        FN(rows_normalize_cold)(x, y, g, c0, nb, r0, r1, k, mean, var, eps, gamma, beta,
                                res, FN(epi_relu)(ep));
    else
        FN(rows_normalize)(x, y, g, c0, nb, r0, r1, k, stream, res, FN(epi_relu)(ep));
}

/* rows_dx for a block marked cold; its coefficients came from src. */
static CBN_COLD void FN(rows_dx_cold)(const T *dy, const T *x, T *dx,
                                      const rows_geom *g, int64_t c0, int nb,
                                      int64_t r0, int64_t r1, const FN(bcoefs) *k,
                                      int batch_stats, const dx_sources *src,
                                      const uint8_t *bits)
{
    const int64_t ld = g->C;
    for (int64_t a = r0; a < r1; a += COLD_ROWS) {
        const int64_t n = r1 - a < COLD_ROWS ? r1 - a : COLD_ROWS;
        for (int j = 0; j < nb; j++) {
            const int64_t off = a * ld + c0 + j;
            const T *gc = dy + off, *xc = x + off;
            T *dc = dx + off;
            cold_dcoef cd;
            if (FN(column_cold_d)(k, g, c0, j, batch_stats, src, &cd)) {
                FN(cold_dx)(gc, xc, dc, n, ld, &cd, batch_stats, bits, off);
                continue;
            }
            const T ca = FN(bcoefs_get)(k, g, 0, j), cb = FN(bcoefs_get)(k, g, 1, j),
                    ck0 = FN(bcoefs_get)(k, g, 2, j), chi = FN(bcoefs_get)(k, g, 3, j);
            if (batch_stats)
                for (int64_t r = 0; r < n; r++)
                    dc[r * ld] = FN(dx1)(FN(load1_gated)(gc, r * ld, bits, off), xc[r * ld],
                                         ca, cb, ck0, chi);
            else
                for (int64_t r = 0; r < n; r++)
                    dc[r * ld] = FN(scale1)(FN(load1_gated)(gc, r * ld, bits, off), ca);
        }
    }
}

/* rows_dx, or its cold pass for a block marked cold, with the sources of
   its coefficients; dy gated by bits (or NULL), rows_dx compiled apart with
   and without. */
static void FN(block_dx)(const T *dy, const T *x, T *dx, const rows_geom *g,
                         int64_t c0, int nb, int64_t r0, int64_t r1,
                         const FN(bcoefs) *k, int batch_stats, int stream,
                         const dx_sources *src, const uint8_t *bits)
{
    if (T_IS_F32 && k->cold)
        FN(rows_dx_cold)(dy, x, dx, g, c0, nb, r0, r1, k, batch_stats, src, bits);
    else if (bits)
        FN(rows_dx)(dy, x, dx, g, c0, nb, r0, r1, k, batch_stats, stream, bits);
    else
        FN(rows_dx)(dy, x, dx, g, c0, nb, r0, r1, k, batch_stats, stream, NULL);
}
