/*
 * simd/dtype_end.h -- undo simd/dtype_f32.h or simd/dtype_f64.h after an
 * instantiation of the kernels, before the next data type's.
 */
#undef T
#undef SFX
#undef T_IS_F32
#undef VT
#undef VT_N
#undef vt_set1
#undef vt_sub
#undef vt_add
#undef vt_relu
#undef vt_keep_bits
#undef vt_pos_bits
#undef vt_fmadd
#undef vt_loadu
#undef vt_storeu
#undef vt_stream
#undef st_fmadd
#undef vt_load2
