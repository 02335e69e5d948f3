/*
 * simd/dtype_f32.h -- the kernels' data type is float: T, its name suffix,
 * and the T-vector names the kernels use (vt_*, st_*, vt_load2), mapped onto
 * the vector layer's float (vf_*, sf_*) operations. Included before each
 * float instantiation of the kernels, undone by simd/dtype_end.h, so that
 * the kernels name every operation the same way for both types.
 */
#define T float
#define SFX f32
#define T_IS_F32 1

#define VT vf            /* a vector of T */
#define VT_N VF_N        /* T values in a VT */
#define vt_set1 vf_set1
#define vt_sub vf_sub
#define vt_add vf_add
#define vt_relu vf_relu
#define vt_keep_bits vf_keep_bits
#define vt_pos_bits vf_pos_bits
#define vt_fmadd vf_fmadd
#define vt_loadu vf_loadu
#define vt_storeu vf_storeu
#define vt_stream vf_stream
#define st_fmadd sf_fmadd    /* scalar T, rounded as vt_fmadd */
#define vt_load2 vd_load2_f32 /* 2*VD_N values of T as two double vectors */
