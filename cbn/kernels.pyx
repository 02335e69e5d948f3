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


# ------------------------------------------------------------ configuration --

def simd_levels():
    """Names of the SIMD levels this CPU supports, lowest first.

    Returns
    -------
    list of str
        E.g. ``['scalar', 'sse2', 'avx2', 'avx512']``.
    """
    return [_cbn.cbn_simd_name(i).decode()
            for i in range(_cbn.CBN_SIMD_SCALAR, _cbn.CBN_SIMD_AVX512 + 1)
            if _cbn.cbn_simd_supported(i)]


def get_simd():
    """Name of the SIMD level in use."""
    return _cbn.cbn_simd_name(_cbn.cbn_simd_get()).decode()


def set_simd(name):
    """Use the SIMD level ``name`` (one of :func:`simd_levels`, or
    ``'baseline'``) for the following calls.

    Not to be called while cbn runs in other threads. Mainly for testing and
    benchmarking; the default is the best level.

    Raises
    ------
    ValueError
        If the level is unknown or not supported by this CPU.
    """
    cdef int level
    names = {_cbn.cbn_simd_name(i).decode(): i
             for i in range(_cbn.CBN_SIMD_SCALAR, _cbn.CBN_SIMD_AVX512 + 1)}
    names["baseline"] = 1
    if name not in names or not _cbn.cbn_simd_supported(names[name]):
        raise ValueError(f"SIMD level {name!r} is not available here; "
                         f"choose from {simd_levels()}")
    level = names[name]
    _cbn.cbn_simd_set(level)


def set_num_threads(n):
    """Use ``n`` threads in cbn's kernels (0: follow OpenMP's default again).

    Takes precedence over ``OMP_NUM_THREADS`` and threadpoolctl. Small
    inputs always run on one thread; results do not depend on the count.

    Parameters
    ----------
    n : int
        Number of threads, >= 0.
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"the number of threads must be >= 0, got {n}")
    _cbn.cbn_set_num_threads(n)


def get_num_threads():
    """The number of threads cbn's kernels use for large inputs."""
    return _cbn.cbn_get_num_threads()


def openmp_version():
    """The OpenMP version (``_OPENMP``, e.g. 201511) cbn was built with, 0 if
    it was built without OpenMP."""
    return _cbn.cbn_openmp_version()


def _apply_environment():
    name = os.environ.get("CBN_SIMD", "").strip().lower()
    if not name:
        return
    try:
        set_simd(name)
    except ValueError as e:
        warnings.warn(f"ignoring CBN_SIMD={name!r}: {e}", RuntimeWarning,
                      stacklevel=2)


_apply_environment()
