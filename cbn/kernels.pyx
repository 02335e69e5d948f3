# cython: language_level=3
"""The C core of cbn, linked into this one extension module.

Each function below forwards to the C function of the same name in
src_c/cbn.h (with the ``cbn_`` prefix). They are exported to other Cython code
through cbn/kernels.pxd; see its header for the calling conventions.

The module also holds the core's run-time configuration (SIMD level,
threads), exposed as cbn.set_num_threads, cbn.get_num_threads and
cbn.show_config. At import, the environment variable CBN_SIMD (scalar,
baseline, sse2, neon, avx2, avx512) forces a SIMD level; the default is the
best the CPU supports.
"""
import os
import warnings

from cbn cimport _cbn
from cbn._args import index as _index


cdef extern from "core/tuning.h":
    int _CHUNK "CHUNK"
    int _SEG_CHUNKS "SEG_CHUNKS"
    int _ROW_BLOCK "ROW_BLOCK"
    int _INFER_COEFS "INFER_COEFS"
    long long _PARALLEL_MIN_WORK "CBN_PARALLEL_MIN_WORK"
    long long _STRIP_ROW_BYTES "CBN_STRIP_ROW_BYTES"
    long long _PREFETCH_RUN_BYTES "CBN_PREFETCH_RUN_BYTES"

# The core's tuning constants (src_c/core/tuning.h), read from the header at
# build time. They are not an interface: they tell the tests which shapes
# reach which code path (a feature cut into several chunks or segments, a
# rows block of several column blocks, ...), so the tests cannot drift when
# the core changes them.
CHUNK = _CHUNK                            # elements per chunk, runs layout
SEG_CHUNKS = _SEG_CHUNKS                  # chunks per segment
ROW_BLOCK = _ROW_BLOCK                    # features per column block, rows
INFER_COEFS = _INFER_COEFS                # features up to which planes eval makes coefs once
PARALLEL_MIN_WORK = _PARALLEL_MIN_WORK    # elements below which one thread
STRIP_ROW_BYTES = _STRIP_ROW_BYTES        # rows up to this use column strips
PREFETCH_RUN_BYTES = _PREFETCH_RUN_BYTES  # runs up to this are prefetched

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


cdef int forward_train_fused_f32(const float *x, float *y,
                                 int64_t outer, int64_t C, int64_t inner,
                                 const double *gamma, const double *beta, double eps,
                                 double *mean, double *var,
                                 const float *residual, int relu) noexcept nogil:
    return _cbn.cbn_forward_train_fused_f32(x, y, outer, C, inner, gamma, beta, eps,
                                            mean, var, residual, relu)


cdef int forward_train_fused_f64(const double *x, double *y,
                                 int64_t outer, int64_t C, int64_t inner,
                                 const double *gamma, const double *beta, double eps,
                                 double *mean, double *var,
                                 const double *residual, int relu) noexcept nogil:
    return _cbn.cbn_forward_train_fused_f64(x, y, outer, C, inner, gamma, beta, eps,
                                            mean, var, residual, relu)


cdef int forward_infer_fused_f32(const float *x, float *y,
                                 int64_t outer, int64_t C, int64_t inner,
                                 const double *mean, const double *var,
                                 const double *gamma, const double *beta, double eps,
                                 const float *residual, int relu) noexcept nogil:
    return _cbn.cbn_forward_infer_fused_f32(x, y, outer, C, inner, mean, var, gamma, beta,
                                            eps, residual, relu)


cdef int forward_infer_fused_f64(const double *x, double *y,
                                 int64_t outer, int64_t C, int64_t inner,
                                 const double *mean, const double *var,
                                 const double *gamma, const double *beta, double eps,
                                 const double *residual, int relu) noexcept nogil:
    return _cbn.cbn_forward_infer_fused_f64(x, y, outer, C, inner, mean, var, gamma, beta,
                                            eps, residual, relu)


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


cdef int backward_gated_f32(const float *dy, const float *x, float *dx,
                            int64_t outer, int64_t C, int64_t inner,
                            const double *mean, const double *var,
                            const double *gamma, double eps, int batch_stats,
                            double *dgamma, double *dbeta,
                            const float *y, const uint8_t *bits) noexcept nogil:
    return _cbn.cbn_backward_gated_f32(dy, x, dx, outer, C, inner, mean, var, gamma, eps,
                                       batch_stats, dgamma, dbeta, y, bits)


cdef int backward_gated_f64(const double *dy, const double *x, double *dx,
                            int64_t outer, int64_t C, int64_t inner,
                            const double *mean, const double *var,
                            const double *gamma, double eps, int batch_stats,
                            double *dgamma, double *dbeta,
                            const double *y, const uint8_t *bits) noexcept nogil:
    return _cbn.cbn_backward_gated_f64(dy, x, dx, outer, C, inner, mean, var, gamma, eps,
                                       batch_stats, dgamma, dbeta, y, bits)


cdef int relu_mask_f32(const float *y, int64_t n, uint8_t *bits) noexcept nogil:
    return _cbn.cbn_relu_mask_f32(y, n, bits)


cdef int relu_mask_f64(const double *y, int64_t n, uint8_t *bits) noexcept nogil:
    return _cbn.cbn_relu_mask_f64(y, n, bits)


cdef int stats_omit_f32(const float *x, int64_t outer, int64_t C, int64_t inner,
                        int64_t *count, double *mean, double *var) noexcept nogil:
    return _cbn.cbn_stats_omit_f32(x, outer, C, inner, count, mean, var)


cdef int stats_omit_f64(const double *x, int64_t outer, int64_t C, int64_t inner,
                        int64_t *count, double *mean, double *var) noexcept nogil:
    return _cbn.cbn_stats_omit_f64(x, outer, C, inner, count, mean, var)


cdef int backward_omit_f32(const float *dy, const float *x, float *dx,
                           int64_t outer, int64_t C, int64_t inner,
                           const double *mean, const double *var,
                           const double *gamma, double eps, int batch_stats,
                           double *dgamma, double *dbeta) noexcept nogil:
    return _cbn.cbn_backward_omit_f32(dy, x, dx, outer, C, inner, mean, var, gamma, eps,
                                      batch_stats, dgamma, dbeta)


cdef int backward_omit_f64(const double *dy, const double *x, double *dx,
                           int64_t outer, int64_t C, int64_t inner,
                           const double *mean, const double *var,
                           const double *gamma, double eps, int batch_stats,
                           double *dgamma, double *dbeta) noexcept nogil:
    return _cbn.cbn_backward_omit_f64(dy, x, dx, outer, C, inner, mean, var, gamma, eps,
                                      batch_stats, dgamma, dbeta)


cdef int backward_dx_f32(const float *dy, const float *x, float *dx,
                         int64_t outer, int64_t C, int64_t inner,
                         const double *mean, const double *var,
                         const double *gamma, double eps, int64_t m,
                         const double *dgamma, const double *dbeta) noexcept nogil:
    return _cbn.cbn_backward_dx_f32(dy, x, dx, outer, C, inner, mean, var, gamma, eps, m, dgamma, dbeta)


cdef int backward_dx_f64(const double *dy, const double *x, double *dx,
                         int64_t outer, int64_t C, int64_t inner,
                         const double *mean, const double *var,
                         const double *gamma, double eps, int64_t m,
                         const double *dgamma, const double *dbeta) noexcept nogil:
    return _cbn.cbn_backward_dx_f64(dy, x, dx, outer, C, inner, mean, var, gamma, eps, m, dgamma, dbeta)


cdef int update_running_f32(float *running_mean, float *running_var,
                            const double *mean, const double *var,
                            int64_t C, int64_t m, double f) noexcept nogil:
    return _cbn.cbn_update_running_f32(running_mean, running_var, mean, var, C, m, f)


cdef int update_running_f64(double *running_mean, double *running_var,
                            const double *mean, const double *var,
                            int64_t C, int64_t m, double f) noexcept nogil:
    return _cbn.cbn_update_running_f64(running_mean, running_var, mean, var, C, m, f)


# ----------------------------------------------------- memoryview forms --
# Each checks the views against the data's (outer, C, inner) block and turns
# None into NULL; the pointer form then checks everything else (a NULL where
# data is required, eps, m), so both forms return the same codes.

cdef inline bint _same_block(const Py_ssize_t *a, const Py_ssize_t *b) noexcept nogil:
    return a[0] == b[0] and a[1] == b[1] and a[2] == b[2]


cdef inline bint _fits(const double[::1] v, Py_ssize_t C) noexcept nogil:
    """Whether a per-feature view is None or has C entries."""
    return v is None or v.shape[0] == C


cdef inline bint _all_fit(Py_ssize_t C, const double[::1] a,
                          const double[::1] b, const double[::1] c=None,
                          const double[::1] d=None,
                          const double[::1] e=None) noexcept nogil:
    """Whether every per-feature view given is None or has C entries."""
    return (_fits(a, C) and _fits(b, C) and _fits(c, C) and _fits(d, C)
            and _fits(e, C))


cdef inline const double *_cptr(const double[::1] v) noexcept nogil:
    if v is None:
        return NULL
    return &v[0]


cdef inline double *_ptr(double[::1] v) noexcept nogil:
    return NULL if v is None else &v[0]


cdef int stats_f32_mv(const float[:, :, ::1] x,
                      double[::1] mean, double[::1] var) noexcept nogil:
    if x is None or not _all_fit(x.shape[1], mean, var):
        return ERR_ARG
    return stats_f32(&x[0, 0, 0], x.shape[0], x.shape[1], x.shape[2],
                     _ptr(mean), _ptr(var))


cdef int forward_train_f32_mv(const float[:, :, ::1] x, float[:, :, ::1] y,
                              const double[::1] gamma, const double[::1] beta,
                              double eps,
                              double[::1] mean, double[::1] var) noexcept nogil:
    if x is None or y is None or not _same_block(x.shape, y.shape):
        return ERR_ARG
    if not _all_fit(x.shape[1], gamma, beta, mean, var):
        return ERR_ARG
    return forward_train_f32(&x[0, 0, 0], &y[0, 0, 0],
                             x.shape[0], x.shape[1], x.shape[2],
                             _cptr(gamma), _cptr(beta), eps, _ptr(mean), _ptr(var))


cdef int forward_infer_f32_mv(const float[:, :, ::1] x, float[:, :, ::1] y,
                              const double[::1] mean, const double[::1] var,
                              const double[::1] gamma, const double[::1] beta,
                              double eps) noexcept nogil:
    if x is None or y is None or not _same_block(x.shape, y.shape):
        return ERR_ARG
    if not _all_fit(x.shape[1], mean, var, gamma, beta):
        return ERR_ARG
    return forward_infer_f32(&x[0, 0, 0], &y[0, 0, 0],
                             x.shape[0], x.shape[1], x.shape[2],
                             _cptr(mean), _cptr(var), _cptr(gamma), _cptr(beta), eps)


cdef int backward_f32_mv(const float[:, :, ::1] dy, const float[:, :, ::1] x,
                         float[:, :, ::1] dx,
                         const double[::1] mean, const double[::1] var,
                         const double[::1] gamma, double eps, int batch_stats,
                         double[::1] dgamma, double[::1] dbeta) noexcept nogil:
    if x is None or dy is None or not _same_block(x.shape, dy.shape):
        return ERR_ARG
    if dx is not None and not _same_block(x.shape, dx.shape):
        return ERR_ARG
    if not _all_fit(x.shape[1], mean, var, gamma, dgamma, dbeta):
        return ERR_ARG
    return backward_f32(&dy[0, 0, 0], &x[0, 0, 0],
                        NULL if dx is None else &dx[0, 0, 0],
                        x.shape[0], x.shape[1], x.shape[2],
                        _cptr(mean), _cptr(var), _cptr(gamma), eps, batch_stats,
                        _ptr(dgamma), _ptr(dbeta))


cdef int update_running_f32_mv(float[::1] running_mean, float[::1] running_var,
                               const double[::1] mean, const double[::1] var,
                               int64_t m, double f) noexcept nogil:
    if running_mean is None or running_var is None:
        return ERR_ARG
    cdef Py_ssize_t C = running_mean.shape[0]
    if running_var.shape[0] != C or not _all_fit(C, mean, var):
        return ERR_ARG
    return update_running_f32(&running_mean[0], &running_var[0],
                              _cptr(mean), _cptr(var), C, m, f)


cdef int stats_f64_mv(const double[:, :, ::1] x,
                      double[::1] mean, double[::1] var) noexcept nogil:
    if x is None or not _all_fit(x.shape[1], mean, var):
        return ERR_ARG
    return stats_f64(&x[0, 0, 0], x.shape[0], x.shape[1], x.shape[2],
                     _ptr(mean), _ptr(var))


cdef int forward_train_f64_mv(const double[:, :, ::1] x, double[:, :, ::1] y,
                              const double[::1] gamma, const double[::1] beta,
                              double eps,
                              double[::1] mean, double[::1] var) noexcept nogil:
    if x is None or y is None or not _same_block(x.shape, y.shape):
        return ERR_ARG
    if not _all_fit(x.shape[1], gamma, beta, mean, var):
        return ERR_ARG
    return forward_train_f64(&x[0, 0, 0], &y[0, 0, 0],
                             x.shape[0], x.shape[1], x.shape[2],
                             _cptr(gamma), _cptr(beta), eps, _ptr(mean), _ptr(var))


cdef int forward_infer_f64_mv(const double[:, :, ::1] x, double[:, :, ::1] y,
                              const double[::1] mean, const double[::1] var,
                              const double[::1] gamma, const double[::1] beta,
                              double eps) noexcept nogil:
    if x is None or y is None or not _same_block(x.shape, y.shape):
        return ERR_ARG
    if not _all_fit(x.shape[1], mean, var, gamma, beta):
        return ERR_ARG
    return forward_infer_f64(&x[0, 0, 0], &y[0, 0, 0],
                             x.shape[0], x.shape[1], x.shape[2],
                             _cptr(mean), _cptr(var), _cptr(gamma), _cptr(beta), eps)


cdef int backward_f64_mv(const double[:, :, ::1] dy, const double[:, :, ::1] x,
                         double[:, :, ::1] dx,
                         const double[::1] mean, const double[::1] var,
                         const double[::1] gamma, double eps, int batch_stats,
                         double[::1] dgamma, double[::1] dbeta) noexcept nogil:
    if x is None or dy is None or not _same_block(x.shape, dy.shape):
        return ERR_ARG
    if dx is not None and not _same_block(x.shape, dx.shape):
        return ERR_ARG
    if not _all_fit(x.shape[1], mean, var, gamma, dgamma, dbeta):
        return ERR_ARG
    return backward_f64(&dy[0, 0, 0], &x[0, 0, 0],
                        NULL if dx is None else &dx[0, 0, 0],
                        x.shape[0], x.shape[1], x.shape[2],
                        _cptr(mean), _cptr(var), _cptr(gamma), eps, batch_stats,
                        _ptr(dgamma), _ptr(dbeta))


cdef int update_running_f64_mv(double[::1] running_mean, double[::1] running_var,
                               const double[::1] mean, const double[::1] var,
                               int64_t m, double f) noexcept nogil:
    if running_mean is None or running_var is None:
        return ERR_ARG
    cdef Py_ssize_t C = running_mean.shape[0]
    if running_var.shape[0] != C or not _all_fit(C, mean, var):
        return ERR_ARG
    return update_running_f64(&running_mean[0], &running_var[0],
                              _cptr(mean), _cptr(var), C, m, f)


cdef int backward_dx_f32_mv(const float[:, :, ::1] dy, const float[:, :, ::1] x,
                            float[:, :, ::1] dx,
                            const double[::1] mean, const double[::1] var,
                            const double[::1] gamma, double eps, int64_t m,
                            const double[::1] dgamma,
                            const double[::1] dbeta) noexcept nogil:
    if x is None or dy is None or dx is None:
        return ERR_ARG
    if not _same_block(x.shape, dy.shape) or not _same_block(x.shape, dx.shape):
        return ERR_ARG
    if not _all_fit(x.shape[1], mean, var, gamma, dgamma, dbeta):
        return ERR_ARG
    return backward_dx_f32(&dy[0, 0, 0], &x[0, 0, 0], &dx[0, 0, 0],
                           x.shape[0], x.shape[1], x.shape[2],
                           _cptr(mean), _cptr(var), _cptr(gamma), eps, m,
                           _cptr(dgamma), _cptr(dbeta))


cdef int backward_dx_f64_mv(const double[:, :, ::1] dy, const double[:, :, ::1] x,
                            double[:, :, ::1] dx,
                            const double[::1] mean, const double[::1] var,
                            const double[::1] gamma, double eps, int64_t m,
                            const double[::1] dgamma,
                            const double[::1] dbeta) noexcept nogil:
    if x is None or dy is None or dx is None:
        return ERR_ARG
    if not _same_block(x.shape, dy.shape) or not _same_block(x.shape, dx.shape):
        return ERR_ARG
    if not _all_fit(x.shape[1], mean, var, gamma, dgamma, dbeta):
        return ERR_ARG
    return backward_dx_f64(&dy[0, 0, 0], &x[0, 0, 0], &dx[0, 0, 0],
                           x.shape[0], x.shape[1], x.shape[2],
                           _cptr(mean), _cptr(var), _cptr(gamma), eps, m,
                           _cptr(dgamma), _cptr(dbeta))


# ------------------------------------------------------------ configuration --

def simd_levels():
    """Names of the SIMD levels this CPU supports, lowest first.

    Returns
    -------
    list of str
        E.g. ``['scalar', 'sse2', 'avx2', 'avx512']``.

    Examples
    --------
    >>> from cbn import kernels
    >>> kernels.simd_levels()[0]
    'scalar'
    """
    return [_cbn.cbn_simd_name(i).decode()
            for i in range(_cbn.CBN_SIMD_SCALAR, _cbn.CBN_SIMD_AVX512 + 1)
            if _cbn.cbn_simd_supported(i)]


def _level_names():
    names = {_cbn.cbn_simd_name(i).decode(): i
             for i in range(_cbn.CBN_SIMD_SCALAR, _cbn.CBN_SIMD_AVX512 + 1)}
    names["baseline"] = 1
    return names


def _pass_numbers(passes):
    names = {_cbn.cbn_pass_name(p).decode(): p for p in range(_cbn.CBN_NPASSES)}
    if passes is None:
        return list(names.values())
    if isinstance(passes, str):
        passes = (passes,)
    try:
        return [names[p] for p in passes]
    except (KeyError, TypeError):
        raise ValueError(f"passes must be one or several of {list(names)}, "
                         f"not {passes!r}") from None


def get_simd():
    """Name of the SIMD level the training pass runs at.

    The tuning profile's choice (the best level :func:`simd_levels` lists,
    unless measurement on this kind of CPU found another faster), unless
    ``CBN_SIMD`` or :func:`set_simd` chose another. :func:`simd_by_pass`
    gives every pass's.

    Returns
    -------
    str
        One of :func:`simd_levels`.

    Examples
    --------
    >>> from cbn import kernels
    >>> kernels.get_simd() in kernels.simd_levels()
    True
    """
    return _cbn.cbn_simd_name(_cbn.cbn_simd_get()).decode()


def simd_by_pass():
    """The SIMD level of each pass.

    Returns
    -------
    dict
        ``{'train': level, 'infer': level, 'backward': level}``: statistics
        and training forward, forward with given statistics, and backward
        (both of its entry points).

    Examples
    --------
    >>> from cbn import kernels
    >>> sorted(kernels.simd_by_pass())
    ['backward', 'infer', 'train']
    """
    return {_cbn.cbn_pass_name(p).decode():
            _cbn.cbn_simd_name(_cbn.cbn_simd_get_pass(p)).decode()
            for p in range(_cbn.CBN_NPASSES)}


def set_simd(name, passes=None):
    """Use the SIMD level ``name`` for the following calls.

    Not to be called while cbn runs in other threads. Mainly for testing and
    benchmarking; by default each pass runs at the tuning profile's level
    (see :func:`get_cpu_profile`), to which ``'auto'`` returns.

    Parameters
    ----------
    name : str
        The level: ``'scalar'``, ``'baseline'`` (SSE2 or NEON), ``'sse2'``,
        ``'neon'``, ``'avx2'`` or ``'avx512'`` (one of :func:`simd_levels`),
        or ``'auto'``: every pass at its profile's level again.
    passes : str or sequence of str, optional
        Only these passes (``'train'``, ``'infer'``, ``'backward'``); the
        default is all. Not with ``'auto'``.

    Raises
    ------
    ValueError
        If the level is unknown or not supported by this CPU, or a pass is
        unknown.

    Examples
    --------
    >>> from cbn import kernels
    >>> kernels.set_simd("scalar", passes="infer")
    >>> kernels.simd_by_pass()["infer"]
    'scalar'
    >>> kernels.set_simd("auto")
    """
    cdef int level, p
    if name == "auto":
        if passes is not None:
            raise ValueError("set_simd('auto') applies to every pass")
        _cbn.cbn_profile_set(_cbn.cbn_profile_get())
        return
    names = _level_names()
    if name not in names or not _cbn.cbn_simd_supported(names[name]):
        raise ValueError(f"SIMD level {name!r} is not available here; "
                         f"choose from {simd_levels()} or 'auto'")
    level = names[name]
    for p in _pass_numbers(passes):
        _cbn.cbn_simd_set_pass(p, level)


def cpu_profiles():
    """Names of the tuning profiles, ``'generic'`` first.

    Returns
    -------
    list of str

    Examples
    --------
    >>> from cbn import kernels
    >>> kernels.cpu_profiles()[0]
    'generic'
    """
    return [_cbn.cbn_profile_name(i).decode() for i in range(_cbn.cbn_profile_count())]


def get_cpu_profile():
    """Name of the tuning profile in use.

    A profile holds what measurement found fastest on one kind of CPU: each
    pass's SIMD level and the prefetch tunings that differ between
    microarchitectures. The one this CPU's vendor, family and model select
    (:func:`cpu_id`) is used unless ``CBN_CPU_PROFILE`` or
    :func:`set_cpu_profile` chose another; CPUs that no profile names get
    ``'generic'``.

    Returns
    -------
    str
        One of :func:`cpu_profiles`.

    Examples
    --------
    >>> from cbn import kernels
    >>> kernels.get_cpu_profile() in kernels.cpu_profiles()
    True
    """
    return _cbn.cbn_profile_name(_cbn.cbn_profile_get()).decode()


def set_cpu_profile(name):
    """Use the tuning profile ``name`` from now on, every pass at its level.

    Any profile runs on any CPU (a level the CPU lacks is lowered to the
    best it has), and no profile changes what a level computes. Not to be
    called while cbn runs in other threads; for testing and benchmarking.

    Parameters
    ----------
    name : str
        One of :func:`cpu_profiles`, or ``'auto'`` for the one this CPU
        selects.

    Raises
    ------
    ValueError
        If there is no such profile.

    Examples
    --------
    >>> from cbn import kernels
    >>> kernels.set_cpu_profile("generic")
    >>> kernels.get_cpu_profile()
    'generic'
    >>> kernels.set_cpu_profile("auto")
    """
    names = cpu_profiles()
    if name == "auto":
        _cbn.cbn_profile_set(_cbn.cbn_profile_detected())
    elif name in names:
        _cbn.cbn_profile_set(names.index(name))
    else:
        raise ValueError(f"no tuning profile {name!r}; choose from {names} or 'auto'")


def cpu_id():
    """The CPU as CPUID names it, which selects the tuning profile.

    Returns
    -------
    tuple
        ``(vendor, family, model)``: e.g. ``('AuthenticAMD', 25, 17)``;
        ``('', 0, 0)`` where there is no CPUID (not x86).

    Examples
    --------
    >>> from cbn import kernels
    >>> vendor, family, model = kernels.cpu_id()
    """
    cdef char vendor[13]
    cdef int family = 0, model = 0
    _cbn.cbn_cpu_info(vendor, &family, &model)
    return vendor.decode("ascii", "replace"), family, model


def set_num_threads(n):
    """Use ``n`` threads in cbn's kernels (0: follow OpenMP's default again).

    Takes precedence over ``OMP_NUM_THREADS`` and threadpoolctl. Small
    inputs always run on one thread; results do not depend on the count.
    A process forked from one that imported cbn starts with 1 (see
    :doc:`/threads`).

    Parameters
    ----------
    n : int
        Number of threads, >= 0: an int or numpy integer (anything with
        ``__index__``).

    Raises
    ------
    TypeError
        If ``n`` is not an integer (2.0, "2", None); the count is unchanged.
    ValueError
        If ``n`` is negative.

    See Also
    --------
    get_num_threads

    Examples
    --------
    >>> import cbn
    >>> cbn.set_num_threads(1)
    >>> cbn.get_num_threads()
    1
    >>> cbn.set_num_threads(0)  # back to OpenMP's default
    """
    n = _index(n, "n (the number of threads)")
    if n < 0:
        raise ValueError(f"the number of threads must be >= 0, got {n}")
    _cbn.cbn_set_num_threads(n)


def get_num_threads():
    """The number of threads cbn's kernels use for large inputs.

    Returns
    -------
    int
        The count :func:`set_num_threads` set, else OpenMP's
        (``OMP_NUM_THREADS``, threadpoolctl); 1 in a build without OpenMP.

    Examples
    --------
    >>> import cbn
    >>> cbn.get_num_threads() >= 1
    True
    """
    return _cbn.cbn_get_num_threads()


def openmp_version():
    """The OpenMP version cbn was built with.

    Returns
    -------
    int
        The value of ``_OPENMP`` at build time (e.g. 201511), 0 if cbn was
        built without OpenMP.

    Examples
    --------
    >>> from cbn import kernels
    >>> kernels.openmp_version() >= 0
    True
    """
    return _cbn.cbn_openmp_version()


def _serial_after_fork():
    """Make a forked child run cbn's kernels on one thread.

    GNU libgomp is not fork-safe: a child forked after the parent opened a
    parallel region inherits a thread pool whose threads do not exist in it,
    and its next parallel region waits for them forever. With one thread the
    kernels open no parallel region at all (see threads_for in
    src_c/core/parallel.h), so the child never touches that pool. The
    child may call set_num_threads again if it knows its OpenMP runtime is
    fork-safe (LLVM's libomp) or that the parent never used threads.
    """
    _cbn.cbn_set_num_threads(1)


def _apply_environment():
    # the profile first: it resets the levels, which CBN_SIMD then forces
    for var, apply in (("CBN_CPU_PROFILE", set_cpu_profile), ("CBN_SIMD", set_simd)):
        name = os.environ.get(var, "").strip().lower()
        if not name:
            continue
        try:
            apply(name)
        except ValueError as e:
            warnings.warn(f"ignoring {var}={name!r}: {e}", RuntimeWarning,
                          stacklevel=2)


_apply_environment()
if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_serial_after_fork)
