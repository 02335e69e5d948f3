/*
 * targets/instantiate.h -- stamp out one level's kernel table.
 *
 * Included by targets/kernels_<level>.c after its vector layer
 * simd/<level>.h, with CBN_TABLE naming the table to define. Instantiates
 * kernels/template.h for float and double (each between its dtype header
 * and simd/dtype_end.h) and collects the entry points.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "core/cold.h"
#include "core/geometry.h"
#include "core/hints.h"
#include "core/moments.h"
#include "core/parallel.h"
#include "core/prefetch.h"

#include "simd/dtype_f32.h"
#include "kernels/template.h"
#include "simd/dtype_end.h"

#include "simd/dtype_f64.h"
#include "kernels/template.h"
#include "simd/dtype_end.h"

const cbn_kernel_table CBN_TABLE = {
    CBN_ISA_NAME,
    forward_train_f32, forward_infer_f32, backward_f32, backward_dx_f32, relu_mask_f32,
    forward_train_f64, forward_infer_f64, backward_f64, backward_dx_f64, relu_mask_f64,
};
