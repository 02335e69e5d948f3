/*
 * kernels/template.h -- the batch-norm kernels, written once for every data
 * type and instruction-set level.
 *
 * Included by targets/instantiate.h once per data type, after the vector
 * layer simd/<level>.h, the core/ headers and a dtype header
 * (simd/dtype_f32.h or simd/dtype_f64.h), which define
 *   T        the data type (float or double)
 *   SFX      the name suffix (f32 or f64)
 *   T_IS_F32 1 for float, 0 for double
 *   VT, VT_N, vt_*, st_fmadd, vt_load2: the vectors of T and their operations
 * Everything here is static; the including file collects the entry points
 * (kernels/entry.h) into its cbn_kernel_table.
 *
 * Design
 * ------
 * - Two loop shapes. When inner > 1 a feature's data is `outer` contiguous
 *   runs of `inner` values ("planes", NCHW): features are reduced and
 *   normalized one at a time, so a feature's slab is read from memory once
 *   and normalized while it is still in cache (kernels/planes.h). When
 *   inner == 1 (N x C, channels-last) a feature's values are C apart
 *   ("rows"): the kernels sweep rows with per-feature accumulators for a
 *   block of up to ROW_BLOCK columns, vectorized across the columns
 *   (kernels/rows.h, flat_rows.h, rows_output.h).
 * - Statistics: see "The reduction tree" in core/geometry.h. Sums run in
 *   double vectors (float data is widened on load), two steps of 2*VD_N
 *   values per iteration for instruction-level parallelism.
 * - Threads: over features when there are enough of them, else over
 *   (feature, segment) pairs with partial statistics merged afterwards in
 *   the fixed order -- the same arithmetic either way (core/parallel.h; the
 *   drivers in kernels/planes_drivers.h and rows_drivers.h).
 * - The normalize pass works in T, not double, but stays accurate for data far
 *   from zero: with hi = (T)mean, (x - hi) is exact when x is near the mean
 *   (Sterbenz), and the rest of the mean, lo = mean - hi, is folded into the
 *   shift in double: y = (x - hi)*scale + (beta - lo*scale), one fused
 *   multiply-add, within a few units in the last place of the float64 result.
 * - Cold features: a float feature whose coefficients float cannot hold
 *   (subnormal data with eps = 0; backward far from unit spread) is computed
 *   in double instead, decided once per feature where its coefficients are
 *   made (see "Cold features" in core/cold.h); the loops over elements
 *   are the same for every other feature.
 */

#define CBN_CAT_(a, b) a##_##b
#define CBN_CAT(a, b) CBN_CAT_(a, b)
#define FN(name) CBN_CAT(name, SFX)

#define STEP (2 * VD_N) /* values per widened load */


#include "kernels/gate.h"
#include "kernels/coef.h"
#include "kernels/contiguous.h"
#include "kernels/planes.h"
#include "kernels/job.h"
#include "kernels/planes_drivers.h"
#include "kernels/rows.h"
#include "kernels/flat_rows.h"
#include "kernels/rows_output.h"
#include "kernels/rows_drivers.h"
#include "kernels/backward_dx.h"
#include "kernels/entry.h"

#undef STEP
#undef ROWS_AT_ONCE
#undef FN
#undef CBN_CAT
#undef CBN_CAT_
