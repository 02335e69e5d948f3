/*
 * kernels/coef.h -- a feature's coefficients: for normalize
 * (coef: hi, scale, shift) and for dx (dcoef: a, b, k0, hi), the fast paths'
 * tests of them, the cold features' double paths, and the elementwise
 * formulas that apply them, written once for every loop shape.
 *
 * Part of the kernel template (see kernels/template.h): included once per
 * data type, so it has no include guard, and every name it defines goes
 * through FN() or is a type-independent macro defined identically both times.
 */

/* Per-feature coefficients of the normalize pass: y = (x - hi)*scale + shift. */
typedef struct {
    T hi, scale, shift;
} FN(coef);

static FN(coef) FN(make_coef)(double mean, double var, double eps,
                              const double *gamma, const double *beta,
                              int64_t c)
{
    FN(coef) k;
    double invstd = 1.0 / sqrt(var + eps);
    double scale = (gamma ? gamma[c] : 1.0) * invstd;
    k.hi = (T)mean;
    k.scale = (T)scale;
    k.shift = (T)(beta ? beta[c] : 0.0);
    if (mean != (double)k.hi)  /* skip 0*inf: Inf and NaN must stay their own */
        k.shift = (T)((beta ? beta[c] : 0.0) - (mean - (double)k.hi) * scale);
    return k;
}

/* Whether float normalize coefficients hi, scale are ones float holds at
   full precision: the fast paths' test (see "Cold features" in
   core/cold.h), branch-free so that loops over columns vectorize. */
static inline int FN(coef_ok)(T hi, T scale)
{
    return f32_factor_ok((float)scale) & (fabsf((float)hi) <= FLT_MAX);
}

/* Whether feature c, whose coefficients make_coef made as k, is cold (see
   "Cold features" in core/cold.h): then *ck holds its double
   coefficients. One test of k on the fast path; never for double data. */
static inline int FN(coef_cold)(FN(coef) k, double mean, double var,
                                double eps, const double *gamma,
                                const double *beta, int64_t c, cold_coef *ck)
{
    return T_IS_F32 && !FN(coef_ok)(k.hi, k.scale)
           && cold_coef_of(mean, var, eps, gamma, beta, c, ck);
}



/* The elementwise formulas, one element (T) or one vector (VT) at a time:
   the scalar ones round exactly as the vector lanes (st_fmadd), so an
   element's result does not depend on which loop it fell in. */
static inline T FN(normalize1)(T x, T hi, T sc, T sh)
{
    return st_fmadd(x - hi, sc, sh);
}

static inline VT FN(normalize_v)(VT x, VT hi, VT sc, VT sh)
{
    return vt_fmadd(vt_sub(x, hi), sc, sh);
}

/* The epilogue of a fused forward (cbn_forward_*_fused): y = BN(x), then
   + res (laid out as x, or NULL), then ReLU when relu, each step rounded in
   T as the unfused steps round -- so the result is bitwise
   numpy.maximum(normalize(x) + res, 0), but for which NaN a NaN + NaN
   gives (the compiler may order an addition's operands either way). A
   NULL epilogue is a plain forward. */
typedef struct {
    const T *res;
    int relu;
} FN(epi);

/* The residual element aligned with element `off` of x, or NULL. */
static inline const T *FN(epi_res)(const FN(epi) *ep, int64_t off)
{
    return ep && ep->res ? ep->res + off : NULL;
}

static inline int FN(epi_relu)(const FN(epi) *ep)
{
    return ep && ep->relu;
}

/* numpy.maximum(v, 0), as vt_relu: v where v > 0 or v is NaN, else +0.0 --
   without a branch, which the few single elements at the ends of short
   runs would mispredict on data of either sign */
static inline T FN(relu1)(T v)
{
    const int keep = (v > (T)0) | (v != v);
#if T_IS_F32
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    b &= (uint32_t)0 - (uint32_t)keep;
#else
    uint64_t b;
    memcpy(&b, &v, sizeof b);
    b &= (uint64_t)0 - (uint64_t)keep;
#endif
    memcpy(&v, &b, sizeof b);
    return v;
}

/* v = BN(x) at element i of a run whose residual is r (or NULL) */
static inline T FN(epilogue1)(T v, const T *r, int64_t i, int relu)
{
    if (r)
        v = v + r[i];
    return relu ? FN(relu1)(v) : v;
}

static inline VT FN(epilogue_v)(VT v, const T *r, int64_t i, int relu)
{
    if (r)
        v = vt_add(v, vt_loadu(r + i));
    return relu ? vt_relu(v) : v;
}

/* A cold feature's n values ld apart: y = (x - mean)*scale + beta in
   double, rounded once, then the epilogue (r: the residual aligned with x,
   or NULL). */
static CBN_COLD void FN(cold_normalize)(const T *x, T *y, int64_t n, int64_t ld,
                                        const cold_coef *k, const T *r, int relu)
{
    for (int64_t i = 0; i < n; i++)
        y[i * ld] = FN(epilogue1)((T)(((double)x[i * ld] - k->mean) * k->scale + k->beta),
                                  r, i * ld, relu);
}

/* dx = a*dy + (b*(x - hi) + k0) */
static inline T FN(dx1)(T dy, T x, T a, T b, T k0, T hi)
{
    return st_fmadd(a, dy, st_fmadd(b, x - hi, k0));
}

static inline VT FN(dx_v)(VT dy, VT x, VT a, VT b, VT k0, VT hi)
{
    return vt_fmadd(a, dy, vt_fmadd(b, vt_sub(x, hi), k0));
}

/* dx = a*dy, + 0 so that a zero is signed as the fused forms sign it */
static inline T FN(scale1)(T dy, T a)
{
    return st_fmadd(a, dy, (T)0);
}

static inline VT FN(scale_v)(VT dy, VT a)
{
    return vt_fmadd(a, dy, vt_set1((T)0));
}

/* Coefficients of dx for feature c (see cbn.h), from the gradient sums. */
typedef struct {
    T a, b, k0, hi;
} FN(dcoef);

static FN(dcoef) FN(make_dcoef)(double sdy, double sdyx, double m, double mean,
                                double var, double eps, const double *gamma,
                                int batch_stats, int64_t c, double *dgamma,
                                double *dbeta)
{
    FN(dcoef) d;
    double invstd = 1.0 / sqrt(var + eps);
    double g = gamma ? gamma[c] : 1.0;
    if (dgamma) dgamma[c] = sdyx * invstd;
    if (dbeta) dbeta[c] = sdy;
    /* dx = a*dy + b*(x - mean) + k0 with x - mean = (x - hi) - lo, and the
       lo part folded into k0 in double (as the shift of make_coef) */
    /* invstd^2 times dgamma/m, which is O(1): invstd^3 alone under- or
       overflows for std beyond about 1e+-103 */
    double b = batch_stats ? -g * (invstd * invstd) * (invstd * sdyx / m) : 0.0;
    double k0 = batch_stats ? -g * invstd * sdy / m : 0.0;
    d.a = (T)(g * invstd);
    d.hi = (T)mean;
    d.b = (T)b;
    d.k0 = (T)(mean != (double)d.hi ? k0 - b * (mean - (double)d.hi) : k0);
    return d;
}

/* Whether float dx coefficients are ones float holds at full precision:
   the fast paths' test (see "Cold features" in core/cold.h; without
   batch statistics only a plays a part), branch-free so that loops over
   columns vectorize. */
static inline int FN(dcoef_ok)(T a, T b, T k0, T hi, int batch_stats)
{
    return f32_factor_ok((float)a)
           & ((batch_stats == 0) | (f32_factor_ok((float)b) & (fabsf((float)k0) <= FLT_MAX)
                              & (fabsf((float)hi) <= FLT_MAX)));
}

/* Whether feature c, whose dx coefficients make_dcoef made as d from the
   sums sdy and sdyx, is cold: then *cd holds its double coefficients. One
   test of d on the fast path; never for double data. */
static inline int FN(dcoef_cold)(FN(dcoef) d, double sdy, double sdyx, double m,
                                 double mean, double var, double eps,
                                 const double *gamma, int batch_stats,
                                 int64_t c, cold_dcoef *cd)
{
    return T_IS_F32 && !FN(dcoef_ok)(d.a, d.b, d.k0, d.hi, batch_stats)
           && cold_dcoef_of(sdy, sdyx, m, mean, var, eps, gamma, batch_stats, c, cd);
}

/* A cold feature's dx at n elements ld apart, in double (see cold_dcoef),
   rounded once; dy gated by bits from element e of the block on (NULL:
   not gated, see kernels/gate.h). */
static CBN_COLD void FN(cold_dx)(const T *dy, const T *x, T *dx, int64_t n,
                                 int64_t ld, const cold_dcoef *d, int batch_stats,
                                 const uint8_t *bits, int64_t e)
{
    if (batch_stats) {
        for (int64_t i = 0; i < n; i++)
            dx[i * ld] = (T)(d->a * (double)FN(load1_gated)(dy, i * ld, bits, e)
                             + d->c1 * (((double)x[i * ld] - d->mean) * d->invstd) + d->k1);
    } else {  /* x plays no part; + 0.0 signs a zero as run_scale does */
        for (int64_t i = 0; i < n; i++)
            dx[i * ld] = (T)(d->a * (double)FN(load1_gated)(dy, i * ld, bits, e) + 0.0);
    }
}
