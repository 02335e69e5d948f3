# Declarations of the C core's header, src_c/cbn.h, for cbn's own modules.
# Only cbn.kernels cimports this file: it is the one module linked with the C
# core, and every other module (and downstream code) reaches the kernels
# through cbn/kernels.pxd, which needs no header.
from libc.stdint cimport int64_t, uint8_t

cdef extern from "cbn.h" nogil:
    int CBN_OK
    int CBN_ERR_ARG
    int CBN_ERR_EMPTY
    int CBN_ERR_EPS

    const char *cbn_status_message(int status)

    int CBN_SIMD_SCALAR
    int CBN_SIMD_AVX512
    int cbn_simd_supported(int level)
    int cbn_simd_best()
    int cbn_simd_get()
    int cbn_simd_set(int level)
    const char *cbn_simd_name(int level)
    int CBN_NPASSES
    int cbn_simd_get_pass(int pass_)
    int cbn_simd_set_pass(int pass_, int level)
    const char *cbn_pass_name(int pass_)
    int cbn_profile_count()
    const char *cbn_profile_name(int profile)
    int cbn_profile_detected()
    int cbn_profile_get()
    int cbn_profile_set(int profile)
    void cbn_cpu_info(char *vendor, int *family, int *model)
    int cbn_set_num_threads(int n)
    int cbn_get_num_threads()
    int cbn_openmp_version()

    int cbn_stats_f32(const float *x, int64_t outer, int64_t C, int64_t inner,
                      double *mean, double *var)
    int cbn_stats_f64(const double *x, int64_t outer, int64_t C, int64_t inner,
                      double *mean, double *var)
    int cbn_stats_omit_f32(const float *x, int64_t outer, int64_t C, int64_t inner,
                           int64_t *count, double *mean, double *var)
    int cbn_stats_omit_f64(const double *x, int64_t outer, int64_t C, int64_t inner,
                           int64_t *count, double *mean, double *var)
    int cbn_backward_omit_f32(const float *dy, const float *x, float *dx,
                              int64_t outer, int64_t C, int64_t inner,
                              const double *mean, const double *var,
                              const double *gamma, double eps, int batch_stats,
                              double *dgamma, double *dbeta)
    int cbn_backward_omit_f64(const double *dy, const double *x, double *dx,
                              int64_t outer, int64_t C, int64_t inner,
                              const double *mean, const double *var,
                              const double *gamma, double eps, int batch_stats,
                              double *dgamma, double *dbeta)

    int cbn_forward_train_f32(const float *x, float *y,
                              int64_t outer, int64_t C, int64_t inner,
                              const double *gamma, const double *beta,
                              double eps, double *mean, double *var)
    int cbn_forward_train_f64(const double *x, double *y,
                              int64_t outer, int64_t C, int64_t inner,
                              const double *gamma, const double *beta,
                              double eps, double *mean, double *var)

    int cbn_forward_infer_f32(const float *x, float *y,
                              int64_t outer, int64_t C, int64_t inner,
                              const double *mean, const double *var,
                              const double *gamma, const double *beta,
                              double eps)
    int cbn_forward_infer_f64(const double *x, double *y,
                              int64_t outer, int64_t C, int64_t inner,
                              const double *mean, const double *var,
                              const double *gamma, const double *beta,
                              double eps)
    int cbn_forward_train_fused_f32(const float *x, float *y,
                                    int64_t outer, int64_t C, int64_t inner,
                                    const double *gamma, const double *beta,
                                    double eps, double *mean, double *var,
                                    const float *residual, int relu)
    int cbn_forward_train_fused_f64(const double *x, double *y,
                                    int64_t outer, int64_t C, int64_t inner,
                                    const double *gamma, const double *beta,
                                    double eps, double *mean, double *var,
                                    const double *residual, int relu)
    int cbn_forward_infer_fused_f32(const float *x, float *y,
                                    int64_t outer, int64_t C, int64_t inner,
                                    const double *mean, const double *var,
                                    const double *gamma, const double *beta,
                                    double eps, const float *residual, int relu)
    int cbn_forward_infer_fused_f64(const double *x, double *y,
                                    int64_t outer, int64_t C, int64_t inner,
                                    const double *mean, const double *var,
                                    const double *gamma, const double *beta,
                                    double eps, const double *residual, int relu)

    int cbn_backward_f32(const float *dy, const float *x, float *dx,
                         int64_t outer, int64_t C, int64_t inner,
                         const double *mean, const double *var,
                         const double *gamma, double eps, int batch_stats,
                         double *dgamma, double *dbeta)
    int cbn_backward_f64(const double *dy, const double *x, double *dx,
                         int64_t outer, int64_t C, int64_t inner,
                         const double *mean, const double *var,
                         const double *gamma, double eps, int batch_stats,
                         double *dgamma, double *dbeta)
    int cbn_relu_mask_f32(const float *y, int64_t n, uint8_t *bits)
    int cbn_relu_mask_f64(const double *y, int64_t n, uint8_t *bits)
    int cbn_backward_gated_f32(const float *dy, const float *x, float *dx,
                               int64_t outer, int64_t C, int64_t inner,
                               const double *mean, const double *var,
                               const double *gamma, double eps, int batch_stats,
                               double *dgamma, double *dbeta,
                               const float *y, const uint8_t *bits)
    int cbn_backward_gated_f64(const double *dy, const double *x, double *dx,
                               int64_t outer, int64_t C, int64_t inner,
                               const double *mean, const double *var,
                               const double *gamma, double eps, int batch_stats,
                               double *dgamma, double *dbeta,
                               const double *y, const uint8_t *bits)

    int cbn_backward_dx_f32(const float *dy, const float *x, float *dx,
                            int64_t outer, int64_t C, int64_t inner,
                            const double *mean, const double *var,
                            const double *gamma, double eps, int64_t m,
                            const double *dgamma, const double *dbeta)
    int cbn_backward_dx_f64(const double *dy, const double *x, double *dx,
                            int64_t outer, int64_t C, int64_t inner,
                            const double *mean, const double *var,
                            const double *gamma, double eps, int64_t m,
                            const double *dgamma, const double *dbeta)

    int cbn_update_running_f32(float *running_mean, float *running_var,
                               const double *mean, const double *var,
                               int64_t C, int64_t m, double f)
    int cbn_update_running_f64(double *running_mean, double *running_var,
                               const double *mean, const double *var,
                               int64_t C, int64_t m, double f)
