/*
 * kernels/contiguous.h -- primitives over one contiguous run of
 * values (run_*): the sums of the statistics and gradient passes, and the
 * normalize / dx / scale passes with their output stores.
 *
 * Part of the kernel template (see kernels/template.h): included once per
 * data type, so it has no include guard, and every name it defines goes
 * through FN() or is a type-independent macro defined identically both times.
 */

/* sum(p[0:n]) in double */
static double FN(run_sum)(const T *p, int64_t n)
{
    vd a0 = vd_zero(), a1 = vd_zero(), a2 = vd_zero(), a3 = vd_zero(), l, h;
    int64_t i = 0;
    for (; i + 2 * STEP <= n; i += 2 * STEP) {
        vt_load2(p + i, &l, &h);
        a0 = vd_add(a0, l);
        a1 = vd_add(a1, h);
        vt_load2(p + i + STEP, &l, &h);
        a2 = vd_add(a2, l);
        a3 = vd_add(a3, h);
    }
    for (; i + STEP <= n; i += STEP) {
        vt_load2(p + i, &l, &h);
        a0 = vd_add(a0, l);
        a1 = vd_add(a1, h);
    }
    double s = vd_hsum(vd_add(vd_add(a0, a1), vd_add(a2, a3)));
    for (; i < n; i++)
        s += (double)p[i];
    return s;
}

/* s1 += sum(p - mu), s2 += sum((p - mu)^2) in double, prefetching pa along */
static void FN(run_dev)(const T *p, int64_t n, double mu, double *s1, double *s2,
                        ahead pa)
{
    vd m = vd_set1(mu), d0 = vd_zero(), d1 = vd_zero(), d2 = vd_zero(),
       d3 = vd_zero(), q0 = vd_zero(), q1 = vd_zero(), q2 = vd_zero(),
       q3 = vd_zero(), l, h;
    int64_t i = 0;
    for (; i + 2 * STEP <= n; i += 2 * STEP) {
        prefetch_along(pa, i * (int64_t)sizeof(T), 2 * STEP * (int)sizeof(T));
        vt_load2(p + i, &l, &h);
        l = vd_sub(l, m);
        h = vd_sub(h, m);
        d0 = vd_add(d0, l);
        d1 = vd_add(d1, h);
        q0 = vd_fmadd(l, l, q0);
        q1 = vd_fmadd(h, h, q1);
        vt_load2(p + i + STEP, &l, &h);
        l = vd_sub(l, m);
        h = vd_sub(h, m);
        d2 = vd_add(d2, l);
        d3 = vd_add(d3, h);
        q2 = vd_fmadd(l, l, q2);
        q3 = vd_fmadd(h, h, q3);
    }
    for (; i + STEP <= n; i += STEP) {
        vt_load2(p + i, &l, &h);
        l = vd_sub(l, m);
        h = vd_sub(h, m);
        d0 = vd_add(d0, l);
        d1 = vd_add(d1, h);
        q0 = vd_fmadd(l, l, q0);
        q1 = vd_fmadd(h, h, q1);
    }
    double a = vd_hsum(vd_add(vd_add(d0, d1), vd_add(d2, d3)));
    double b = vd_hsum(vd_add(vd_add(q0, q1), vd_add(q2, q3)));
    for (; i < n; i++) {
        double d = (double)p[i] - mu;
        a += d;
        b += d * d;
    }
    *s1 += a;
    *s2 += b;
}

/* s1 += sum(dy), s2 += sum(dy * (x - mu)) in double, prefetching ady and ax
   along; dy gated by bits from element off on (see kernels/gate.h), or
   not (bits NULL) */
CBN_SPECIALIZED void FN(run_grad_g)(const T *dy, const T *x, int64_t n, double mu,
                                    double *s1, double *s2, ahead ady, ahead ax,
                                    const uint8_t *bits, int64_t off)
{
    vd m = vd_set1(mu), g0 = vd_zero(), g1 = vd_zero(), g2 = vd_zero(),
       g3 = vd_zero(), q0 = vd_zero(), q1 = vd_zero(), q2 = vd_zero(),
       q3 = vd_zero(), gl, gh, xl, xh;
    int64_t i = 0;
    for (; i + 2 * STEP <= n; i += 2 * STEP) {
        prefetch_along(ady, i * (int64_t)sizeof(T), 2 * STEP * (int)sizeof(T));
        prefetch_along(ax, i * (int64_t)sizeof(T), 2 * STEP * (int)sizeof(T));
        FN(load2_gated)(dy, i, bits, off, &gl, &gh);
        vt_load2(x + i, &xl, &xh);
        g0 = vd_add(g0, gl);
        g1 = vd_add(g1, gh);
        q0 = vd_fmadd(gl, vd_sub(xl, m), q0);
        q1 = vd_fmadd(gh, vd_sub(xh, m), q1);
        FN(load2_gated)(dy, i + STEP, bits, off, &gl, &gh);
        vt_load2(x + i + STEP, &xl, &xh);
        g2 = vd_add(g2, gl);
        g3 = vd_add(g3, gh);
        q2 = vd_fmadd(gl, vd_sub(xl, m), q2);
        q3 = vd_fmadd(gh, vd_sub(xh, m), q3);
    }
    for (; i + STEP <= n; i += STEP) {
        FN(load2_gated)(dy, i, bits, off, &gl, &gh);
        vt_load2(x + i, &xl, &xh);
        g0 = vd_add(g0, gl);
        g1 = vd_add(g1, gh);
        q0 = vd_fmadd(gl, vd_sub(xl, m), q0);
        q1 = vd_fmadd(gh, vd_sub(xh, m), q1);
    }
    double a = vd_hsum(vd_add(vd_add(g0, g1), vd_add(g2, g3)));
    double b = vd_hsum(vd_add(vd_add(q0, q1), vd_add(q2, q3)));
    for (; i < n; i++) {
        double g = (double)FN(load1_gated)(dy, i, bits, off);
        a += g;
        b += g * ((double)x[i] - mu);
    }
    *s1 += a;
    *s2 += b;
}

/* run_grad_g compiled apart with and without a gate */
static void FN(run_grad)(const T *dy, const T *x, int64_t n, double mu, double *s1,
                         double *s2, ahead ady, ahead ax, const uint8_t *bits,
                         int64_t off)
{
    if (bits)
        FN(run_grad_g)(dy, x, n, mu, s1, s2, ady, ax, bits, off);
    else
        FN(run_grad_g)(dy, x, n, mu, s1, s2, ady, ax, NULL, 0);
}

/* Output stores
   -------------
   Outputs much larger than the caches are written with streaming stores
   (`stream`): a normal store first reads the line it writes, which for
   data headed to DRAM is a third memory transfer beside reading x and
   writing y. Streaming stores need aligned addresses, so the first few
   elements are stored one by one; scalar elements use st_fmadd, rounded
   exactly like the vector lanes, so where the cut falls changes nothing. */

/* How many of n elements at y to store singly before y is vector-aligned
   (all of them if y is not even element-aligned). */
static inline int64_t FN(peel)(const T *y, int64_t n)
{
    const uintptr_t w = (uintptr_t)(VT_N * sizeof(T));
    uintptr_t a = (uintptr_t)y % w;
    int64_t k = a % sizeof(T) ? n : (int64_t)(a ? (w - a) / sizeof(T) : 0);
    return k < n ? k : n;
}

/* y = (x - hi)*scale + shift over a run, then the epilogue (r: the
   residual aligned with x, or NULL; see FN(epi)). */
CBN_SPECIALIZED void FN(run_normalize_ep)(const T *x, T *y, int64_t n, FN(coef) k,
                                          int stream, ahead a, const T *r, int relu)
{
    VT hi = vt_set1(k.hi), sc = vt_set1(k.scale), sh = vt_set1(k.shift);
    int64_t i = 0;
    for (int64_t p = FN(peel)(y, n); i < p; i++)
        y[i] = FN(epilogue1)(FN(normalize1)(x[i], k.hi, k.scale, k.shift), r, i, relu);
    if (stream) {
        for (; i + VT_N <= n; i += VT_N) {
            prefetch_along(a, i * (int64_t)sizeof(T), VT_N * (int)sizeof(T));
            vt_stream(y + i, FN(epilogue_v)(FN(normalize_v)(vt_loadu(x + i), hi, sc, sh),
                                            r, i, relu));
        }
    }
    for (; i + VT_N <= n; i += VT_N) {
        prefetch_along(a, i * (int64_t)sizeof(T), VT_N * (int)sizeof(T));
        vt_storeu(y + i, FN(epilogue_v)(FN(normalize_v)(vt_loadu(x + i), hi, sc, sh),
                                        r, i, relu));
    }
    for (; i < n; i++)
        y[i] = FN(epilogue1)(FN(normalize1)(x[i], k.hi, k.scale, k.shift), r, i, relu);
}

/* run_normalize_ep, its loops compiled apart for each form of the epilogue,
   so that none carries a test of it per vector. */
static void FN(run_normalize)(const T *x, T *y, int64_t n, FN(coef) k, int stream,
                              ahead a, const T *r, int relu)
{
    if (r && relu)
        FN(run_normalize_ep)(x, y, n, k, stream, a, r, 1);
    else if (r)
        FN(run_normalize_ep)(x, y, n, k, stream, a, r, 0);
    else if (relu)
        FN(run_normalize_ep)(x, y, n, k, stream, a, NULL, 1);
    else
        FN(run_normalize_ep)(x, y, n, k, stream, a, NULL, 0);
}

/* dx = a*dy + (b*(x - hi) + k0), prefetching ady and ax along; dy gated as
   in run_grad_g */
CBN_SPECIALIZED void FN(run_dx_g)(const T *dy, const T *x, T *dx, int64_t n, T a, T b,
                                  T k0, T hi, int stream, ahead ady, ahead ax,
                                  const uint8_t *bits, int64_t off)
{
    VT va = vt_set1(a), vb = vt_set1(b), vk = vt_set1(k0), vhi = vt_set1(hi);
    int64_t i = 0;
    for (int64_t p = FN(peel)(dx, n); i < p; i++)
        dx[i] = FN(dx1)(FN(load1_gated)(dy, i, bits, off), x[i], a, b, k0, hi);
    if (stream) {
        for (; i + VT_N <= n; i += VT_N) {
            prefetch_along(ady, i * (int64_t)sizeof(T), VT_N * (int)sizeof(T));
            prefetch_along(ax, i * (int64_t)sizeof(T), VT_N * (int)sizeof(T));
            vt_stream(dx + i, FN(dx_v)(FN(loadu_gated)(dy, i, bits, off), vt_loadu(x + i),
                                       va, vb, vk, vhi));
        }
    }
    for (; i + VT_N <= n; i += VT_N) {
        prefetch_along(ady, i * (int64_t)sizeof(T), VT_N * (int)sizeof(T));
        prefetch_along(ax, i * (int64_t)sizeof(T), VT_N * (int)sizeof(T));
        vt_storeu(dx + i, FN(dx_v)(FN(loadu_gated)(dy, i, bits, off), vt_loadu(x + i),
                                   va, vb, vk, vhi));
    }
    for (; i < n; i++)
        dx[i] = FN(dx1)(FN(load1_gated)(dy, i, bits, off), x[i], a, b, k0, hi);
}

static void FN(run_dx)(const T *dy, const T *x, T *dx, int64_t n, T a, T b, T k0, T hi,
                       int stream, ahead ady, ahead ax, const uint8_t *bits, int64_t off)
{
    if (bits)
        FN(run_dx_g)(dy, x, dx, n, a, b, k0, hi, stream, ady, ax, bits, off);
    else
        FN(run_dx_g)(dy, x, dx, n, a, b, k0, hi, stream, ady, ax, NULL, 0);
}

/* dx = a*dy (frozen statistics: x plays no part), prefetching ady along; dy
   gated as in run_grad_g */
CBN_SPECIALIZED void FN(run_scale_g)(const T *dy, T *dx, int64_t n, T a, int stream,
                                     ahead ady, const uint8_t *bits, int64_t off)
{
    VT va = vt_set1(a);
    int64_t i = 0;
    for (int64_t p = FN(peel)(dx, n); i < p; i++)
        dx[i] = FN(scale1)(FN(load1_gated)(dy, i, bits, off), a);
    if (stream) {
        for (; i + VT_N <= n; i += VT_N) {
            prefetch_along(ady, i * (int64_t)sizeof(T), VT_N * (int)sizeof(T));
            vt_stream(dx + i, FN(scale_v)(FN(loadu_gated)(dy, i, bits, off), va));
        }
    }
    for (; i + VT_N <= n; i += VT_N) {
        prefetch_along(ady, i * (int64_t)sizeof(T), VT_N * (int)sizeof(T));
        vt_storeu(dx + i, FN(scale_v)(FN(loadu_gated)(dy, i, bits, off), va));
    }
    for (; i < n; i++)
        dx[i] = FN(scale1)(FN(load1_gated)(dy, i, bits, off), a);
}

static void FN(run_scale)(const T *dy, T *dx, int64_t n, T a, int stream, ahead ady,
                          const uint8_t *bits, int64_t off)
{
    if (bits)
        FN(run_scale_g)(dy, dx, n, a, stream, ady, bits, off);
    else
        FN(run_scale_g)(dy, dx, n, a, stream, ady, NULL, 0);
}
