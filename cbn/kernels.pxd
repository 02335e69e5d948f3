# cbn/kernels.pxd -- cbn's kernels for Cython code: ``cimport cbn.kernels``.
#
# Conventions
# -----------
# * Every function is ``noexcept nogil`` and may be called without the GIL.
# * Data are C-contiguous blocks of shape (outer, C, inner); C is the number of
#   features and m = outer*inner the batch size (see src_c/cbn.h, also found
#   under cbn.get_include()). Per-feature arrays have C doubles; a NULL gamma
#   means 1 and a NULL beta means 0.
# * Errors come back as the return value, never as exceptions: OK (0) or a
#   negative code (ERR_ARG, ERR_EMPTY, ERR_EPS); on error nothing was written.
#   status_message(code) describes a code.
# * The functions are defined in the extension module cbn.kernels and reached
#   through Cython's cross-module cimport (its __pyx_capi__): a downstream
#   module links no library and needs no header from cbn.
from libc.stdint cimport int64_t

cdef enum:
    OK = 0
    ERR_ARG = -1
    ERR_EMPTY = -2
    ERR_EPS = -3

cdef const char *status_message(int status) noexcept nogil

cdef int stats_f32(const float *x, int64_t outer, int64_t C, int64_t inner,
                   double *mean, double *var) noexcept nogil
cdef int stats_f64(const double *x, int64_t outer, int64_t C, int64_t inner,
                   double *mean, double *var) noexcept nogil

cdef int forward_train_f32(const float *x, float *y,
                           int64_t outer, int64_t C, int64_t inner,
                           const double *gamma, const double *beta, double eps,
                           double *mean, double *var) noexcept nogil
cdef int forward_train_f64(const double *x, double *y,
                           int64_t outer, int64_t C, int64_t inner,
                           const double *gamma, const double *beta, double eps,
                           double *mean, double *var) noexcept nogil

cdef int forward_infer_f32(const float *x, float *y,
                           int64_t outer, int64_t C, int64_t inner,
                           const double *mean, const double *var,
                           const double *gamma, const double *beta,
                           double eps) noexcept nogil
cdef int forward_infer_f64(const double *x, double *y,
                           int64_t outer, int64_t C, int64_t inner,
                           const double *mean, const double *var,
                           const double *gamma, const double *beta,
                           double eps) noexcept nogil

cdef int backward_f32(const float *dy, const float *x, float *dx,
                      int64_t outer, int64_t C, int64_t inner,
                      const double *mean, const double *var,
                      const double *gamma, double eps, int batch_stats,
                      double *dgamma, double *dbeta) noexcept nogil
cdef int backward_f64(const double *dy, const double *x, double *dx,
                      int64_t outer, int64_t C, int64_t inner,
                      const double *mean, const double *var,
                      const double *gamma, double eps, int batch_stats,
                      double *dgamma, double *dbeta) noexcept nogil

cdef int update_running_f32(float *running_mean, float *running_var,
                            const double *mean, const double *var,
                            int64_t C, int64_t m, double f) noexcept nogil
cdef int update_running_f64(double *running_mean, double *running_var,
                            const double *mean, const double *var,
                            int64_t C, int64_t m, double f) noexcept nogil
