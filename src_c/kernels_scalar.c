/*
 * kernels_scalar.c -- the reference kernels: plain C loops that any C99
 * compiler can vectorize for the baseline instruction set of the target.
 * Faster levels are tested against this table.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

/* Partial sums per run; see "Design" in kernels_template.h. */
#define LANES 8
/* Features per block in the inner == 1 loops (accumulators live on the stack). */
#define ROW_BLOCK 256

/* Fixed pairwise combination of the lanes: the same order on every call. */
static inline double lanes_total(const double a[LANES])
{
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

#define T float
#define SFX f32
#include "kernels_template.h"
#undef T
#undef SFX

#define T double
#define SFX f64
#include "kernels_template.h"
#undef T
#undef SFX

const cbn_kernel_table cbn_kernels_scalar = {
    "scalar",
    forward_train_f32, forward_infer_f32, backward_f32,
    forward_train_f64, forward_infer_f64, backward_f64,
};
