# cython: language_level=3
"""The C core of cbn, linked into this one extension module.

Each function below forwards to the C function of the same name in
src_c/cbn.h (with the ``cbn_`` prefix). They are exported to other Cython code
through cbn/kernels.pxd; see its header for the calling conventions.
"""
from cbn cimport _cbn


cdef const char *status_message(int status) noexcept nogil:
    return _cbn.cbn_status_message(status)


cdef int stats_f32(const float *x, int64_t outer, int64_t C, int64_t inner,
                   double *mean, double *var) noexcept nogil:
    return _cbn.cbn_stats_f32(x, outer, C, inner, mean, var)


cdef int stats_f64(const double *x, int64_t outer, int64_t C, int64_t inner,
                   double *mean, double *var) noexcept nogil:
    return _cbn.cbn_stats_f64(x, outer, C, inner, mean, var)


cdef int forward_train_f32(const float *x, float *y,
                           int64_t outer, int64_t C, int64_t inner,
                           const double *gamma, const double *beta, double eps,
                           double *mean, double *var) noexcept nogil:
    return _cbn.cbn_forward_train_f32(x, y, outer, C, inner, gamma, beta, eps, mean, var)


cdef int forward_train_f64(const double *x, double *y,
                           int64_t outer, int64_t C, int64_t inner,
                           const double *gamma, const double *beta, double eps,
                           double *mean, double *var) noexcept nogil:
    return _cbn.cbn_forward_train_f64(x, y, outer, C, inner, gamma, beta, eps, mean, var)


cdef int forward_infer_f32(const float *x, float *y,
                           int64_t outer, int64_t C, int64_t inner,
                           const double *mean, const double *var,
                           const double *gamma, const double *beta,
                           double eps) noexcept nogil:
    return _cbn.cbn_forward_infer_f32(x, y, outer, C, inner, mean, var, gamma, beta, eps)


cdef int forward_infer_f64(const double *x, double *y,
                           int64_t outer, int64_t C, int64_t inner,
                           const double *mean, const double *var,
                           const double *gamma, const double *beta,
                           double eps) noexcept nogil:
    return _cbn.cbn_forward_infer_f64(x, y, outer, C, inner, mean, var, gamma, beta, eps)


cdef int backward_f32(const float *dy, const float *x, float *dx,
                      int64_t outer, int64_t C, int64_t inner,
                      const double *mean, const double *var,
                      const double *gamma, double eps, int batch_stats,
                      double *dgamma, double *dbeta) noexcept nogil:
    return _cbn.cbn_backward_f32(dy, x, dx, outer, C, inner, mean, var, gamma, eps, batch_stats, dgamma, dbeta)


cdef int backward_f64(const double *dy, const double *x, double *dx,
                      int64_t outer, int64_t C, int64_t inner,
                      const double *mean, const double *var,
                      const double *gamma, double eps, int batch_stats,
                      double *dgamma, double *dbeta) noexcept nogil:
    return _cbn.cbn_backward_f64(dy, x, dx, outer, C, inner, mean, var, gamma, eps, batch_stats, dgamma, dbeta)


cdef int update_running_f32(float *running_mean, float *running_var,
                            const double *mean, const double *var,
                            int64_t C, int64_t m, double f) noexcept nogil:
    return _cbn.cbn_update_running_f32(running_mean, running_var, mean, var, C, m, f)


cdef int update_running_f64(double *running_mean, double *running_var,
                            const double *mean, const double *var,
                            int64_t C, int64_t m, double f) noexcept nogil:
    return _cbn.cbn_update_running_f64(running_mean, running_var, mean, var, C, m, f)
