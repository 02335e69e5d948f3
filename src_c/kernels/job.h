/*
 * kernels/job.h -- a call's arguments as one context, for the range
 * functions that the drivers hand to core/parallel.h, and what the
 * split-batch passes of both loop shapes do once their partials are merged.
 *
 * Part of the kernel template (see kernels/template.h): included once per
 * data type, so it has no include guard, and every name it defines goes
 * through FN() or is a type-independent macro defined identically both times.
 */

/* A call's arguments, shared by the range functions its threads run (see
   core/parallel.h). */
typedef struct {
    const T *x, *dy;
    T *out;                     /* y or dx, or NULL */
    int64_t outer, C, inner;
    const planes_geom *pg;      /* the geometry of inner > 1 ... */
    const rows_geom *rg;        /* ... or of inner == 1 */
    const double *mean, *var;   /* given statistics */
    const double *gamma, *beta;
    double eps, m;
    int batch_stats;
    int stream;                 /* inference: streaming stores */
    const FN(coef) *coefs;      /* inference: per feature, made once, or NULL */
    const FN(epi) *ep;          /* forward: the epilogue, or NULL */
    const FN(gate) *gt;         /* backward: dy's gate, or NULL */
    double *mean_out, *var_out; /* forward_train's statistics */
    double *dgamma, *dbeta;     /* backward's sums */
    const double *given_dgamma, *given_dbeta; /* backward_dx's */
    split_sums sp;              /* a split batch's partials */
} FN(job);

/* The merged moments of a split-batch pass become the mean and variance
   (rescued where they overflowed), in sp's totals and in the outputs. */
static void FN(train_merged)(void *ctx)
{
    FN(job) *j = (FN(job) *)ctx;
    double *tmean = j->sp.part, *tvar = j->sp.part + j->C;
    for (int64_t c = 0; c < j->C; c++)
        tvar[c] /= j->m;  /* m2 becomes the variance */
    columns_finite_or_rescued(j->x, T_IS_F32, j->outer, j->C, j->inner, 0, j->C,
                              tmean, tvar);
    for (int64_t c = 0; c < j->C; c++) {
        if (j->mean_out) j->mean_out[c] = tmean[c];
        if (j->var_out) j->var_out[c] = tvar[c];
    }
}

/* The dgamma and dbeta of backward from a split-batch pass's totals. */
static void FN(backward_split_sums)(const FN(job) *j)
{
    for (int64_t c = 0; c < j->C; c++)
        FN(make_dcoef)(j->sp.part[c], j->sp.part[j->C + c], j->m, j->mean[c], j->var[c],
                       j->eps, j->gamma, j->batch_stats, c, j->dgamma, j->dbeta);
}
