/*
 * kernels/entry.h -- the entries of the kernel table for one data type:
 * forward_train, forward_infer and backward, each picking its loop shape
 * from the layout (backward_dx's is in kernels/backward_dx.h).
 *
 * Part of the kernel template (see kernels/template.h): included once per
 * data type, so it has no include guard, and every name it defines goes
 * through FN() or is a type-independent macro defined identically both times.
 */

/* The table entries: pick the loop shape from the layout. forward_train with
   y == NULL computes only the statistics (cbn_stats_*); res and relu are
   the fused forward's epilogue (see FN(epi)). */

static void FN(forward_train)(const T *x, T *y, int64_t outer, int64_t C,
                              int64_t inner, const double *gamma,
                              const double *beta, double eps, double *mean,
                              double *var, const T *res, int relu)
{
    const FN(epi) e = {res, relu}, *ep = res || relu ? &e : NULL;
    if (inner == 1)
        FN(rows_forward_train)(x, y, outer, C, gamma, beta, eps, mean, var, ep);
    else
        FN(planes_forward_train)(x, y, outer, C, inner, gamma, beta, eps, mean, var, ep);
}

static void FN(forward_infer)(const T *x, T *y, int64_t outer, int64_t C,
                              int64_t inner, const double *mean,
                              const double *var, const double *gamma,
                              const double *beta, double eps, const T *res, int relu)
{
    const FN(epi) e = {res, relu}, *ep = res || relu ? &e : NULL;
    if (inner == 1)
        FN(rows_forward_infer)(x, y, outer, C, mean, var, gamma, beta, eps, ep);
    else
        FN(planes_forward_infer)(x, y, outer, C, inner, mean, var, gamma, beta, eps, ep);
}

/* Elements [e0, e1) of the rows layout's gated dy, into the job's out. */
static void FN(gate_ranges)(void *ctx, int64_t e0, int64_t e1)
{
    const FN(job) *j = (const FN(job) *)ctx;
    FN(gate_range)(j->gt, j->dy, j->out, e0, e1);
}

/* gate, gate_bits: the gated backward's (see FN(gate)), both NULL for none.
   The loops apply a bit mask as they load dy; the planes loops gate a
   piece of dy by y into an L1 buffer (kernels/gate.h); the rows loops,
   whose pieces are strided, do not: there dy is gated by y into dx first
   (dx is then the kernel's dy, read before it is written, as in place), a
   pass of its own. */
static void FN(backward)(const T *dy, const T *x, T *dx, int64_t outer,
                         int64_t C, int64_t inner, const double *mean,
                         const double *var, const double *gamma, double eps,
                         int batch_stats, double *dgamma, double *dbeta,
                         const T *gate, const uint8_t *gate_bits)
{
    const FN(gate) g = {gate, gate_bits}, *gt = gate || gate_bits ? &g : NULL;
    if (inner == 1) {
        if (gt && gt->y) {
            FN(job) j = {0};
            j.dy = dy, j.out = dx, j.gt = gt;
            for_ranges(threads_for(outer * C), outer * C, FN(gate_ranges), &j);
            dy = dx, gt = NULL;
        }
        FN(rows_backward)(dy, x, dx, outer, C, mean, var, gamma, eps,
                          batch_stats, dgamma, dbeta, gt);
    } else {
        FN(planes_backward)(dy, x, dx, outer, C, inner, mean, var, gamma, eps,
                            batch_stats, dgamma, dbeta, gt);
    }
}
