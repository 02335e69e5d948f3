/*
 * simd/dtype_f64.h -- the kernels' data type is double: T, its name suffix,
 * and the T-vector names the kernels use (vt_*, st_*, vt_load2), mapped onto
 * the vector layer's double (vd_*, sd_*) operations. Included before each
 * double instantiation of the kernels, undone by simd/dtype_end.h.
 */
#define T double
#define SFX f64
#define T_IS_F32 0

#define VT vd
#define VT_N VD_N
#define vt_set1 vd_set1
#define vt_sub vd_sub
#define vt_add vd_add
#define vt_relu vd_relu
#define vt_keep_bits vd_keep_bits
#define vt_pos_bits vd_pos_bits
#define vt_fmadd vd_fmadd
#define vt_loadu vd_loadu
#define vt_storeu vd_storeu
#define vt_stream vd_stream
#define st_fmadd sd_fmadd
#define vt_load2 vd_load2_f64

#ifndef CBN_SIMD_DTYPE_F64_H
#define CBN_SIMD_DTYPE_F64_H
/* Two double vectors from 2*VD_N doubles: the double counterpart of the
   layer's vd_load2_f32, built from its loads. */
static inline void vd_load2_f64(const double *p, vd *lo, vd *hi)
{
    *lo = vd_loadu(p);
    *hi = vd_loadu(p + VD_N);
}
#endif
