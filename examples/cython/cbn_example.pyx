"""A downstream extension that calls cbn's kernels from Cython.

Each function takes a C-contiguous (outer, C, inner) block of float32 or
float64 and calls the kernels with the GIL released, either on raw pointers
or on typed memoryviews (``use_memoryviews=True``); a nonzero status is
raised as ValueError once the GIL is held again.
"""
import numpy as np

from cbn cimport kernels as K

ctypedef fused real:
    float
    double


cdef check(int status):
    if status != K.OK:
        raise ValueError(K.status_message(status).decode())


def forward_train(const real[:, :, ::1] x, double eps=1e-5, bint use_memoryviews=False):
    """Normalize x with its batch statistics: returns y, mean, var."""
    y_arr = np.empty_like(x)
    mean_arr = np.empty(x.shape[1])
    var_arr = np.empty(x.shape[1])
    cdef real[:, :, ::1] y = y_arr
    cdef double[::1] mean = mean_arr, var = var_arr
    cdef int status
    with nogil:
        if use_memoryviews:
            if real is float:
                status = K.forward_train_f32_mv(x, y, None, None, eps, mean, var)
            else:
                status = K.forward_train_f64_mv(x, y, None, None, eps, mean, var)
        else:
            if real is float:
                status = K.forward_train_f32(&x[0, 0, 0], &y[0, 0, 0],
                                             x.shape[0], x.shape[1], x.shape[2],
                                             NULL, NULL, eps, &mean[0], &var[0])
            else:
                status = K.forward_train_f64(&x[0, 0, 0], &y[0, 0, 0],
                                             x.shape[0], x.shape[1], x.shape[2],
                                             NULL, NULL, eps, &mean[0], &var[0])
    check(status)
    return y_arr, mean_arr, var_arr


def forward_infer(const real[:, :, ::1] x, const double[::1] mean, const double[::1] var,
                  double eps=1e-5, bint use_memoryviews=False):
    """Normalize x with the given statistics: returns y."""
    y_arr = np.empty_like(x)
    cdef real[:, :, ::1] y = y_arr
    cdef int status
    with nogil:
        if use_memoryviews:
            if real is float:
                status = K.forward_infer_f32_mv(x, y, mean, var, None, None, eps)
            else:
                status = K.forward_infer_f64_mv(x, y, mean, var, None, None, eps)
        else:
            if real is float:
                status = K.forward_infer_f32(&x[0, 0, 0], &y[0, 0, 0],
                                             x.shape[0], x.shape[1], x.shape[2],
                                             &mean[0], &var[0], NULL, NULL, eps)
            else:
                status = K.forward_infer_f64(&x[0, 0, 0], &y[0, 0, 0],
                                             x.shape[0], x.shape[1], x.shape[2],
                                             &mean[0], &var[0], NULL, NULL, eps)
    check(status)
    return y_arr


def backward(const real[:, :, ::1] dy, const real[:, :, ::1] x,
             const double[::1] mean, const double[::1] var, double eps=1e-5,
             bint use_memoryviews=False):
    """Gradients of forward_train: returns dx, dgamma, dbeta."""
    if dy.shape[0] != x.shape[0] or dy.shape[1] != x.shape[1] or dy.shape[2] != x.shape[2]:
        raise ValueError("dy and x must have the same shape")
    dx_arr = np.empty_like(x)
    dgamma_arr = np.empty(x.shape[1])
    dbeta_arr = np.empty(x.shape[1])
    cdef real[:, :, ::1] dx = dx_arr
    cdef double[::1] dgamma = dgamma_arr, dbeta = dbeta_arr
    cdef int status
    with nogil:
        if use_memoryviews:
            if real is float:
                status = K.backward_f32_mv(dy, x, dx, mean, var, None, eps, 1,
                                           dgamma, dbeta)
            else:
                status = K.backward_f64_mv(dy, x, dx, mean, var, None, eps, 1,
                                           dgamma, dbeta)
        else:
            if real is float:
                status = K.backward_f32(&dy[0, 0, 0], &x[0, 0, 0], &dx[0, 0, 0],
                                        x.shape[0], x.shape[1], x.shape[2],
                                        &mean[0], &var[0], NULL, eps, 1,
                                        &dgamma[0], &dbeta[0])
            else:
                status = K.backward_f64(&dy[0, 0, 0], &x[0, 0, 0], &dx[0, 0, 0],
                                        x.shape[0], x.shape[1], x.shape[2],
                                        &mean[0], &var[0], NULL, eps, 1,
                                        &dgamma[0], &dbeta[0])
    check(status)
    return dx_arr, dgamma_arr, dbeta_arr
