# cbn/kernels.pxd -- cbn's kernels for Cython code: ``cimport cbn.kernels``.
#
# Conventions
# -----------
# Use::
#
#     from cbn cimport kernels as K
#
#     cdef int status
#     with nogil:
#         status = K.forward_train_f64(px, py, outer, C, inner,
#                                      NULL, NULL, 1e-5, pmean, pvar)
#     if status != K.OK:
#         raise ValueError(K.status_message(status).decode())
#
# * Linking. The functions are defined in the extension module cbn.kernels
#   and reached through Cython's cross-module cimport (the module's
#   __pyx_capi__, filled in when the downstream module is imported; importing
#   it imports cbn.kernels). A downstream module links no library and needs no
#   header from cbn: no include_dirs, no libraries; only this file, installed
#   with the package, on Cython's search path (sys.path).
# * Errors. Every function is ``noexcept nogil``: it may be called with or
#   without the GIL and never raises. It returns OK (0) or a negative code
#   (ERR_ARG, ERR_EMPTY, ERR_EPS, meanings in src_c/cbn.h); on error nothing
#   was written. Check the code yourself, and raise, if you want to, once the
#   GIL is held again; status_message(code) gives a short English text
#   (static storage, never freed).
# * Layout. Data are C-contiguous blocks of shape (outer, C, inner): element
#   (o, c, i) at index (o*C + c)*inner + i, C features and a batch of
#   m = outer*inner values per feature (N x C is (N, C, 1), NCHW is
#   (N, C, H*W), NHWC is (N*H*W, C, 1)). Per-feature arrays have C doubles
#   whatever the data type; a NULL gamma means 1 and a NULL beta means 0.
#   y (or dx) may be x itself, but must not otherwise overlap an input.
# * Threads. Built with OpenMP, a call may use several threads internally
#   (cbn.set_num_threads, else OMP_NUM_THREADS / threadpoolctl; inputs under
#   65536 elements stay serial), and its results are bitwise the same for any
#   thread count. Calls from different threads may run concurrently when
#   their outputs differ. The kernels allocate O(1) memory and never touch
#   Python objects.
# * Two forms. The pointer functions (``forward_train_f32``) are the C core's
#   functions of src_c/cbn.h without the ``cbn_`` prefix; their exact contract
#   (formulas, which pointers may be NULL, when m may be 0) is documented
#   there (the header is also under cbn.get_include()). The ``_mv`` forms take
#   the same arguments as typed memoryviews: data as a 3-D C-contiguous
#   (outer, C, inner) view, per-feature arrays as 1-D contiguous views of C
#   entries, None wherever the pointer form accepts NULL. Shapes that do not
#   match the data's block are ERR_ARG. The ``_f32``/``_f64`` suffix is the
#   data's type: float or double.
from libc.stdint cimport int64_t, uint8_t

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

# nan_policy 'omit': per-feature count, mean and biased variance over the
# values that are not NaN (count 0: NaN mean and variance). Without NaN,
# stats_* at its speed, count = m; m may be 0 (cbn.h).
cdef int stats_omit_f32(const float *x, int64_t outer, int64_t C, int64_t inner,
                        int64_t *count, double *mean, double *var) noexcept nogil
cdef int stats_omit_f64(const double *x, int64_t outer, int64_t C, int64_t inner,
                        int64_t *count, double *mean, double *var) noexcept nogil

# The backward of a forward under nan_policy 'omit': dx 0 where x is NaN,
# those elements out of the sums, each feature's own count in the formula.
# dx, dgamma, dbeta required; dx must not share memory with dy or x (cbn.h).
cdef int backward_omit_f32(const float *dy, const float *x, float *dx,
                           int64_t outer, int64_t C, int64_t inner,
                           const double *mean, const double *var,
                           const double *gamma, double eps, int batch_stats,
                           double *dgamma, double *dbeta) noexcept nogil
cdef int backward_omit_f64(const double *dy, const double *x, double *dx,
                           int64_t outer, int64_t C, int64_t inner,
                           const double *mean, const double *var,
                           const double *gamma, double eps, int batch_stats,
                           double *dgamma, double *dbeta) noexcept nogil

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

# The forwards fused with an epilogue: + residual (x's layout, or NULL),
# then ReLU when relu is nonzero; bitwise the unfused steps (cbn.h).
cdef int forward_train_fused_f32(const float *x, float *y,
                                 int64_t outer, int64_t C, int64_t inner,
                                 const double *gamma, const double *beta, double eps,
                                 double *mean, double *var,
                                 const float *residual, int relu) noexcept nogil
cdef int forward_train_fused_f64(const double *x, double *y,
                                 int64_t outer, int64_t C, int64_t inner,
                                 const double *gamma, const double *beta, double eps,
                                 double *mean, double *var,
                                 const double *residual, int relu) noexcept nogil
cdef int forward_infer_fused_f32(const float *x, float *y,
                                 int64_t outer, int64_t C, int64_t inner,
                                 const double *mean, const double *var,
                                 const double *gamma, const double *beta, double eps,
                                 const float *residual, int relu) noexcept nogil
cdef int forward_infer_fused_f64(const double *x, double *y,
                                 int64_t outer, int64_t C, int64_t inner,
                                 const double *mean, const double *var,
                                 const double *gamma, const double *beta, double eps,
                                 const double *residual, int relu) noexcept nogil

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

# Backward through the forward's ReLU, fused: dy passes where y > 0 (the
# forward's output) or where a bit of `bits` is set (numpy.packbits(...,
# bitorder="little") of the block), one of the two non-NULL; bitwise
# backward of the masked dy. dx is required (cbn.h).
cdef int backward_gated_f32(const float *dy, const float *x, float *dx,
                            int64_t outer, int64_t C, int64_t inner,
                            const double *mean, const double *var,
                            const double *gamma, double eps, int batch_stats,
                            double *dgamma, double *dbeta,
                            const float *y, const uint8_t *bits) noexcept nogil
cdef int backward_gated_f64(const double *dy, const double *x, double *dx,
                            int64_t outer, int64_t C, int64_t inner,
                            const double *mean, const double *var,
                            const double *gamma, double eps, int batch_stats,
                            double *dgamma, double *dbeta,
                            const double *y, const uint8_t *bits) noexcept nogil

# The ReLU mask the gated backward takes: bit e%8 of bits[e/8] set where
# y[e] > 0; (n + 7)/8 bytes (cbn.h).
cdef int relu_mask_f32(const float *y, int64_t n, uint8_t *bits) noexcept nogil
cdef int relu_mask_f64(const double *y, int64_t n, uint8_t *bits) noexcept nogil

cdef int backward_dx_f32(const float *dy, const float *x, float *dx,
                         int64_t outer, int64_t C, int64_t inner,
                         const double *mean, const double *var,
                         const double *gamma, double eps, int64_t m,
                         const double *dgamma, const double *dbeta) noexcept nogil
cdef int backward_dx_f64(const double *dy, const double *x, double *dx,
                         int64_t outer, int64_t C, int64_t inner,
                         const double *mean, const double *var,
                         const double *gamma, double eps, int64_t m,
                         const double *dgamma, const double *dbeta) noexcept nogil

cdef int update_running_f32(float *running_mean, float *running_var,
                            const double *mean, const double *var,
                            int64_t C, int64_t m, double f) noexcept nogil
cdef int update_running_f64(double *running_mean, double *running_var,
                            const double *mean, const double *var,
                            int64_t C, int64_t m, double f) noexcept nogil


# Typed-memoryview forms (see Conventions).
cdef int stats_f32_mv(const float[:, :, ::1] x,
                      double[::1] mean, double[::1] var) noexcept nogil
cdef int stats_f64_mv(const double[:, :, ::1] x,
                      double[::1] mean, double[::1] var) noexcept nogil

cdef int forward_train_f32_mv(const float[:, :, ::1] x, float[:, :, ::1] y,
                              const double[::1] gamma, const double[::1] beta,
                              double eps,
                              double[::1] mean, double[::1] var) noexcept nogil
cdef int forward_train_f64_mv(const double[:, :, ::1] x, double[:, :, ::1] y,
                              const double[::1] gamma, const double[::1] beta,
                              double eps,
                              double[::1] mean, double[::1] var) noexcept nogil

cdef int forward_infer_f32_mv(const float[:, :, ::1] x, float[:, :, ::1] y,
                              const double[::1] mean, const double[::1] var,
                              const double[::1] gamma, const double[::1] beta,
                              double eps) noexcept nogil
cdef int forward_infer_f64_mv(const double[:, :, ::1] x, double[:, :, ::1] y,
                              const double[::1] mean, const double[::1] var,
                              const double[::1] gamma, const double[::1] beta,
                              double eps) noexcept nogil

cdef int backward_f32_mv(const float[:, :, ::1] dy, const float[:, :, ::1] x,
                         float[:, :, ::1] dx,
                         const double[::1] mean, const double[::1] var,
                         const double[::1] gamma, double eps, int batch_stats,
                         double[::1] dgamma, double[::1] dbeta) noexcept nogil
cdef int backward_f64_mv(const double[:, :, ::1] dy, const double[:, :, ::1] x,
                         double[:, :, ::1] dx,
                         const double[::1] mean, const double[::1] var,
                         const double[::1] gamma, double eps, int batch_stats,
                         double[::1] dgamma, double[::1] dbeta) noexcept nogil

cdef int update_running_f32_mv(float[::1] running_mean, float[::1] running_var,
                               const double[::1] mean, const double[::1] var,
                               int64_t m, double f) noexcept nogil
cdef int update_running_f64_mv(double[::1] running_mean, double[::1] running_var,
                               const double[::1] mean, const double[::1] var,
                               int64_t m, double f) noexcept nogil

cdef int backward_dx_f32_mv(const float[:, :, ::1] dy, const float[:, :, ::1] x,
                            float[:, :, ::1] dx,
                            const double[::1] mean, const double[::1] var,
                            const double[::1] gamma, double eps, int64_t m,
                            const double[::1] dgamma,
                            const double[::1] dbeta) noexcept nogil
cdef int backward_dx_f64_mv(const double[:, :, ::1] dy, const double[:, :, ::1] x,
                            double[:, :, ::1] dx,
                            const double[::1] mean, const double[::1] var,
                            const double[::1] gamma, double eps, int64_t m,
                            const double[::1] dgamma,
                            const double[::1] dbeta) noexcept nogil
