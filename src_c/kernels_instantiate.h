/*
 * kernels_instantiate.h -- stamp out one level's kernel table.
 *
 * Included by kernels_<level>.c after its vector layer simd/<level>.h, with
 * CBN_TABLE naming the table to define. Instantiates kernels_template.h for
 * float and double and collects the entry points.
 */
#include "kernels_common.h"

/* Two double vectors from 2*VD_N doubles (vd_load2_f32 widens floats). */
static inline void vd_load2_f64(const double *p, vd *lo, vd *hi)
{
    *lo = vd_loadu(p);
    *hi = vd_loadu(p + VD_N);
}

/* p[0 : 2*VD_N] += (lo, hi): per-column accumulators kept in memory. */
static inline void add_into(double *p, vd lo, vd hi)
{
    vd_storeu(p, vd_add(vd_loadu(p), lo));
    vd_storeu(p + VD_N, vd_add(vd_loadu(p + VD_N), hi));
}

/* Sum and sum of squares of four vectors, as trees. */
static inline void sum4(const vd *d, vd *s, vd *q)
{
    *s = vd_add(vd_add(d[0], d[1]), vd_add(d[2], d[3]));
    *q = vd_add(vd_fmadd(d[0], d[0], vd_mul(d[1], d[1])),
                vd_fmadd(d[2], d[2], vd_mul(d[3], d[3])));
}

#define T float
#define SFX f32
#define T_IS_F32 1
#include "kernels_template.h"
#undef T
#undef SFX
#undef T_IS_F32

#define T double
#define SFX f64
#define T_IS_F32 0
#include "kernels_template.h"
#undef T
#undef SFX
#undef T_IS_F32

const cbn_kernel_table CBN_TABLE = {
    CBN_ISA_NAME,
    forward_train_f32, forward_infer_f32, backward_f32, backward_dx_f32,
    forward_train_f64, forward_infer_f64, backward_f64, backward_dx_f64,
};
