/*
 * kernels/flat_rows.h -- the rows' elementwise passes over one flat
 * stream, when a column block is the whole row.
 *
 * Part of the kernel template (see kernels/template.h): included once per
 * data type, so it has no include guard, and every name it defines goes
 * through FN() or is a type-independent macro defined identically both times.
 */

/* When all C columns sit in one block, rows [r0, r1) are the contiguous
   elements [r0*C, r1*C), and the elementwise passes (normalize, dx) run over
   them as one flat stream: no loop per row (a row of 64 floats is only four
   vectors), loads and stores aligned to the output however rows fall on
   cache lines (NumPy's large arrays start 16 bytes past a line, so row by row
   every 64-byte access would span two), and streaming stores where the
   output is large. The vector at element e, e - a0 a multiple of VT_N (a0:
   the output's first vector-aligned element), holds the columns
   (e .. e + VT_N) % C; with P = lcm(C, VT_N) these repeat every P elements,
   so each per-column coefficient is laid out once per call as a sequence of
   period P starting at column a0 % C, which a vector reads at (e - a0) % P.
   Every element gets exactly the arithmetic of the row-by-row loops. */

#define FLAT_MAX ROW_BLOCK  /* longest period laid out */

typedef struct {
    int64_t P, a0;
    int64_t c0;  /* a0 % C: the column at phase 0 */
    int64_t n;  /* elements in the pass's arrays */
    int along;  /* prefetch the inputs along (see stream_ahead) */
    T *k;  /* coefficient i of element e at k[i*P + (e - a0) mod P] */
    T buf[4 * FLAT_MAX + 64 / sizeof(T)];
} FN(flat);

/* Plan a flat pass writing the outer*C elements of out: 0 (use the row
   loops) when the period is too long or out is not aligned to its elements.
   The coefficients are then placed with flat_put. */
static int FN(flat_plan)(FN(flat) *f, const T *out, int64_t outer, int64_t C)
{
    int64_t g = C, v = VT_N;
    while (v) {  /* gcd(C, VT_N) */
        int64_t t = g % v;
        g = v;
        v = t;
    }
    f->P = C / g * VT_N;
    if (f->P > FLAT_MAX || (uintptr_t)out % sizeof(T))
        return 0;
    f->a0 = FN(peel)(out, outer * C);
    f->c0 = f->a0 % C;
    f->n = outer * C;
    /* not prefetches_along: on Zen 4 this pass gains from the prefetches
       beyond L3 too (2-D (65536,512) float32 inference 0.57-0.63x the
       copy with them, 0.67-0.69x without) */
    f->along = f->n * (int64_t)sizeof(T) >= CBN_PREFETCH_MIN_BYTES;
    f->k = (T *)((uintptr_t)f->buf + (64 - (uintptr_t)f->buf % 64) % 64);
    return 1;
}

/* Coefficient i of column c is v: at its phase q < C, (a0 + q) % C == c
   (flat_repeat copies the first C phases over the rest of the period). */
static inline void FN(flat_put)(FN(flat) *f, int64_t C, int i, int64_t c, T v)
{
    f->k[i * f->P + (c >= f->c0 ? c - f->c0 : c + C - f->c0)] = v;
}

/* The nk coefficients of phases [0, C) repeated over [C, P). */
static void FN(flat_repeat)(FN(flat) *f, int64_t C, int nk)
{
    for (int i = 0; i < nk; i++)
        for (int64_t q = C; q < f->P; q += C)
            memcpy(f->k + i * f->P + q, f->k + i * f->P, (size_t)C * sizeof(T));
}

/* (e - a0) mod P, for any element e */
static inline int64_t FN(flat_phase)(const FN(flat) *f, int64_t e)
{
    int64_t q = (e - f->a0) % f->P;
    return q < 0 ? q + f->P : q;
}

/* The phase one vector after phase q, in a period of P (a local copy of
   f->P: the vector stores may alias f, which would reload it per vector). */
static inline int64_t FN(flat_next)(int64_t q, int64_t P)
{
    return q + VT_N < P ? q + VT_N : 0;
}

/* How a flat pass over the elements [e0, e1) is cut: single elements up to
   v0, the first one a whole number of vectors from a0 (so the output's
   vectors are aligned); whole vectors up to v1; single elements after. */
static inline void FN(flat_cut)(const FN(flat) *f, int64_t e0, int64_t e1,
                                int64_t *v0, int64_t *v1)
{
    int64_t e = e0;
    while (e < e1 && (e - f->a0) % VT_N)
        e++;
    *v0 = e;
    *v1 = e + (e1 - e) / VT_N * VT_N;
}

/* y = (x - hi)*sc + sh over the elements [e0, e1), then the epilogue (r:
   the residual, laid out as x, or NULL); f holds hi, sc, sh */
CBN_SPECIALIZED void FN(flat_normalize_ep)(const T *x, T *y, int64_t e0, int64_t e1,
                                           const FN(flat) *f, int stream, const T *r,
                                           int relu)
{
    const int64_t P = f->P;
    const T *hi = f->k, *sc = hi + P, *sh = sc + P;
    const ahead ax = stream_ahead(x, e0, e1 - e0, f->n, sizeof(T), f->along);
    const int span = VT_N * (int)sizeof(T);
    int64_t v0, v1, e, q;
    FN(flat_cut)(f, e0, e1, &v0, &v1);
    for (e = e0; e < v0; e++) {
        q = FN(flat_phase)(f, e);
        y[e] = FN(epilogue1)(FN(normalize1)(x[e], hi[q], sc[q], sh[q]), r, e, relu);
    }
    q = FN(flat_phase)(f, v0);
    if (stream) {
        for (e = v0; e < v1; e += VT_N, q = FN(flat_next)(q, P)) {
            prefetch_along(ax, (e - e0) * (int64_t)sizeof(T), span);
            vt_stream(y + e, FN(epilogue_v)(FN(normalize_v)(vt_loadu(x + e), vt_loadu(hi + q),
                                                            vt_loadu(sc + q), vt_loadu(sh + q)),
                                            r, e, relu));
        }
        stream_fence();
    } else {
        for (e = v0; e < v1; e += VT_N, q = FN(flat_next)(q, P)) {
            prefetch_along(ax, (e - e0) * (int64_t)sizeof(T), span);
            vt_storeu(y + e, FN(epilogue_v)(FN(normalize_v)(vt_loadu(x + e), vt_loadu(hi + q),
                                                            vt_loadu(sc + q), vt_loadu(sh + q)),
                                            r, e, relu));
        }
    }
    for (e = v1; e < e1; e++) {
        q = FN(flat_phase)(f, e);
        y[e] = FN(epilogue1)(FN(normalize1)(x[e], hi[q], sc[q], sh[q]), r, e, relu);
    }
}

/* flat_normalize_ep, compiled apart for each form of the epilogue (as
   run_normalize) */
static void FN(flat_normalize)(const T *x, T *y, int64_t e0, int64_t e1,
                               const FN(flat) *f, int stream, const T *r, int relu)
{
    if (r && relu)
        FN(flat_normalize_ep)(x, y, e0, e1, f, stream, r, 1);
    else if (r)
        FN(flat_normalize_ep)(x, y, e0, e1, f, stream, r, 0);
    else if (relu)
        FN(flat_normalize_ep)(x, y, e0, e1, f, stream, NULL, 1);
    else
        FN(flat_normalize_ep)(x, y, e0, e1, f, stream, NULL, 0);
}

/* dx = a*dy over the elements [e0, e1): x plays no part (a NaN there stays
   out); f holds a */
CBN_SPECIALIZED void FN(flat_scale)(const T *dy, T *dx, int64_t e0, int64_t e1,
                                    const FN(flat) *f, int stream, const uint8_t *bits)
{
    const int64_t P = f->P;
    const T *a = f->k;
    const ahead ady = stream_ahead(dy, e0, e1 - e0, f->n, sizeof(T), f->along);
    const int span = VT_N * (int)sizeof(T);
    int64_t v0, v1, e, q;
    FN(flat_cut)(f, e0, e1, &v0, &v1);
    for (e = e0; e < v0; e++) {
        q = FN(flat_phase)(f, e);
        dx[e] = FN(scale1)(FN(load1_gated)(dy, e, bits, 0), a[q]);
    }
    q = FN(flat_phase)(f, v0);
    if (stream) {
        for (e = v0; e < v1; e += VT_N, q = FN(flat_next)(q, P)) {
            prefetch_along(ady, (e - e0) * (int64_t)sizeof(T), span);
            vt_stream(dx + e, FN(scale_v)(FN(loadu_gated)(dy, e, bits, 0), vt_loadu(a + q)));
        }
        stream_fence();
    } else {
        for (e = v0; e < v1; e += VT_N, q = FN(flat_next)(q, P)) {
            prefetch_along(ady, (e - e0) * (int64_t)sizeof(T), span);
            vt_storeu(dx + e, FN(scale_v)(FN(loadu_gated)(dy, e, bits, 0), vt_loadu(a + q)));
        }
    }
    for (e = v1; e < e1; e++) {
        q = FN(flat_phase)(f, e);
        dx[e] = FN(scale1)(FN(load1_gated)(dy, e, bits, 0), a[q]);
    }
}

/* dx = a*dy + (b*(x - hi) + k0) over the elements [e0, e1), or a*dy alone
   without batch_stats; f holds a, b, k0, hi. dy gated by bits (or NULL,
   see kernels/gate.h) in both. */
CBN_SPECIALIZED void FN(flat_dx)(const T *dy, const T *x, T *dx, int64_t e0, int64_t e1,
                                 const FN(flat) *f, int batch_stats, int stream,
                                 const uint8_t *bits)
{
    if (!batch_stats) {
        FN(flat_scale)(dy, dx, e0, e1, f, stream, bits);
        return;
    }
    const int64_t P = f->P;
    const T *a = f->k, *b = a + P, *k0 = b + P, *hi = k0 + P;
    const ahead ady = stream_ahead(dy, e0, e1 - e0, f->n, sizeof(T), f->along);
    const ahead ax = stream_ahead(x, e0, e1 - e0, f->n, sizeof(T), f->along);
    const int span = VT_N * (int)sizeof(T);
    int64_t v0, v1, e, q;
    FN(flat_cut)(f, e0, e1, &v0, &v1);
    for (e = e0; e < v0; e++) {
        q = FN(flat_phase)(f, e);
        dx[e] = FN(dx1)(FN(load1_gated)(dy, e, bits, 0), x[e], a[q], b[q], k0[q], hi[q]);
    }
    q = FN(flat_phase)(f, v0);
    if (stream) {
        for (e = v0; e < v1; e += VT_N, q = FN(flat_next)(q, P)) {
            prefetch_along(ady, (e - e0) * (int64_t)sizeof(T), span);
            prefetch_along(ax, (e - e0) * (int64_t)sizeof(T), span);
            vt_stream(dx + e, FN(dx_v)(FN(loadu_gated)(dy, e, bits, 0), vt_loadu(x + e), vt_loadu(a + q),
                                       vt_loadu(b + q), vt_loadu(k0 + q), vt_loadu(hi + q)));
        }
        stream_fence();
    } else {
        for (e = v0; e < v1; e += VT_N, q = FN(flat_next)(q, P)) {
            prefetch_along(ady, (e - e0) * (int64_t)sizeof(T), span);
            prefetch_along(ax, (e - e0) * (int64_t)sizeof(T), span);
            vt_storeu(dx + e, FN(dx_v)(FN(loadu_gated)(dy, e, bits, 0), vt_loadu(x + e), vt_loadu(a + q),
                                       vt_loadu(b + q), vt_loadu(k0 + q), vt_loadu(hi + q)));
        }
    }
    for (e = v1; e < e1; e++) {
        q = FN(flat_phase)(f, e);
        dx[e] = FN(dx1)(FN(load1_gated)(dy, e, bits, 0), x[e], a[q], b[q], k0[q], hi[q]);
    }
}
