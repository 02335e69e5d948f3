# cython: language_level=3
"""The array functions: normalize_batch and normalize_batch_backward.

Design
------
The C core only knows C-contiguous (outer, C, inner) blocks. This module maps
any NumPy array and any choice of batch axes onto one (``make_block``): it
orders the axes by stride (the memory order), and when the feature axes are
adjacent in that order the array *is* such a block, seen through a transpose,
with no copy. Otherwise it makes one copy. Outputs are allocated in the
block's layout and handed back through the inverse transpose, so they have
the input's memory layout, as NumPy's ``order='K'`` does.

Everything is validated before anything is computed or written; the kernels
then run with the GIL released.
"""
import operator

import numpy as np
cimport numpy as cnp

from cbn cimport kernels as K

try:
    from numpy.exceptions import AxisError
except ImportError:  # NumPy < 1.25
    from numpy import AxisError

cnp.import_array()


# ----------------------------------------------------------- the block view --

cdef class Block:
    """An array seen as the C core's contiguous (outer, C, inner) block.

    ``data`` holds the array's values (a view when possible, else a copy) with
    its axes permuted by ``perm``; in that order the batch axes before the
    feature axes make ``outer``, the feature axes ``C`` and the remaining batch
    axes ``inner``.
    """

    cdef cnp.ndarray take(self, object a):
        """A C-contiguous block of ``a`` (same shape as the planned array)."""
        return _c_contiguous(np.transpose(a, self.perm))

    cdef object restore(self, cnp.ndarray t):
        """The block-shaped ``t`` seen with the original axis order."""
        return t.transpose(self.inv_perm)

    cdef cnp.ndarray to_block_order(self, cnp.ndarray v):
        """A per-feature array of shape F as C contiguous values in block order."""
        return np.ascontiguousarray(v.transpose(self.feature_perm)).reshape(-1)

    cdef cnp.ndarray to_feature_order(self, cnp.ndarray v, tuple fshape):
        """C values in block order as a C-contiguous array of shape F."""
        if self.feature_perm == tuple(range(len(fshape))):
            return v.reshape(fshape)
        cdef list block_fshape = [fshape[i] for i in self.feature_perm]
        return v.reshape(block_fshape).transpose(_inverse(self.feature_perm)).copy()


cdef cnp.ndarray _c_contiguous(cnp.ndarray t):
    """``t`` itself if C-contiguous, else a C-contiguous copy (0-d stays 0-d,
    unlike numpy.ascontiguousarray)."""
    return t if t.flags.c_contiguous else t.copy(order="C")


cdef tuple _inverse(tuple perm):
    """The inverse permutation (numpy.argsort costs microseconds on tuples)."""
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


cdef bint _features_adjacent(list order, list is_batch):
    """Whether the feature axes form one run in ``order``."""
    cdef int runs = 0
    cdef bint prev = True
    for a in order:
        if not is_batch[a] and prev:
            runs += 1
        prev = is_batch[a]
    return runs <= 1


cdef Block make_block(cnp.ndarray x, tuple batch_axes):
    """Plan ``x`` (native float32/float64) as a block, copying only if needed."""
    cdef Block b = Block.__new__(Block)
    cdef int ndim = x.ndim, i
    shape, strides = x.shape, x.strides
    is_batch = [False] * ndim
    for i in batch_axes:
        is_batch[i] = True
    # Size-1 axes can sit anywhere in the block; put them first.
    trivial = [i for i in range(ndim) if shape[i] == 1]
    order = sorted([i for i in range(ndim) if shape[i] != 1],
                   key=lambda a: -abs(strides[a]))
    if not _features_adjacent(order, is_batch):
        order = ([a for a in order if not is_batch[a]] +
                 [a for a in order if is_batch[a]])
    b.perm = tuple(trivial + order)
    b.inv_perm = _inverse(b.perm)
    features = [a for a in range(ndim) if not is_batch[a]]
    b.feature_perm = tuple([features.index(a) for a in b.perm if not is_batch[a]])
    t = x.transpose(b.perm)
    b.data = _c_contiguous(t)
    b.outer, b.C, b.inner = 1, 1, 1
    seen_feature = False
    for a in order:
        if not is_batch[a]:
            seen_feature = True
            b.C *= shape[a]
        elif seen_feature:
            b.inner *= shape[a]
        else:
            b.outer *= shape[a]
    if not seen_feature:
        # No feature axis (all size 1): the whole batch is one run.
        b.inner, b.outer = b.outer * b.inner, 1
    return b


# ------------------------------------------------------------ kernel calls --

cdef int check_status(int status) except -1:
    """Turn a C status code into an exception (the GIL is held here)."""
    if status == K.OK:
        return 0
    msg = K.status_message(status).decode()
    if status in (K.ERR_ARG, K.ERR_EMPTY, K.ERR_EPS):
        raise ValueError(msg)
    raise RuntimeError(msg)


cdef double *dptr(object a) noexcept:
    """Data pointer of a float64 array, NULL for None."""
    if a is None:
        return NULL
    return <double *>cnp.PyArray_DATA(<cnp.ndarray>a)


cdef int run_forward_train(Block b, cnp.ndarray yt, object gamma, object beta,
                           double eps, cnp.ndarray mean, cnp.ndarray var) except -1:
    cdef int s
    cdef void *xp = cnp.PyArray_DATA(b.data)
    cdef void *yp = cnp.PyArray_DATA(yt)
    cdef double *g = dptr(gamma)
    cdef double *be = dptr(beta)
    cdef double *mp = dptr(mean)
    cdef double *vp = dptr(var)
    if cnp.PyArray_TYPE(b.data) == cnp.NPY_FLOAT32:
        with nogil:
            s = K.forward_train_f32(<const float *>xp, <float *>yp, b.outer,
                                    b.C, b.inner, g, be, eps, mp, vp)
    else:
        with nogil:
            s = K.forward_train_f64(<const double *>xp, <double *>yp, b.outer,
                                    b.C, b.inner, g, be, eps, mp, vp)
    return check_status(s)


cdef int run_forward_infer(Block b, cnp.ndarray yt, cnp.ndarray mean,
                           cnp.ndarray var, object gamma, object beta,
                           double eps) except -1:
    cdef int s
    cdef void *xp = cnp.PyArray_DATA(b.data)
    cdef void *yp = cnp.PyArray_DATA(yt)
    cdef double *g = dptr(gamma)
    cdef double *be = dptr(beta)
    cdef double *mp = dptr(mean)
    cdef double *vp = dptr(var)
    if cnp.PyArray_TYPE(b.data) == cnp.NPY_FLOAT32:
        with nogil:
            s = K.forward_infer_f32(<const float *>xp, <float *>yp, b.outer,
                                    b.C, b.inner, mp, vp, g, be, eps)
    else:
        with nogil:
            s = K.forward_infer_f64(<const double *>xp, <double *>yp, b.outer,
                                    b.C, b.inner, mp, vp, g, be, eps)
    return check_status(s)


cdef int run_backward(Block b, cnp.ndarray dyt, cnp.ndarray dxt,
                      cnp.ndarray mean, cnp.ndarray var, object gamma,
                      double eps, bint batch_stats, cnp.ndarray dgamma,
                      cnp.ndarray dbeta) except -1:
    cdef int s
    cdef int bs = batch_stats
    cdef void *xp = cnp.PyArray_DATA(b.data)
    cdef void *gp = cnp.PyArray_DATA(dyt)
    cdef void *dp = cnp.PyArray_DATA(dxt)
    cdef double *g = dptr(gamma)
    cdef double *mp = dptr(mean)
    cdef double *vp = dptr(var)
    cdef double *dg = dptr(dgamma)
    cdef double *db = dptr(dbeta)
    if cnp.PyArray_TYPE(b.data) == cnp.NPY_FLOAT32:
        with nogil:
            s = K.backward_f32(<const float *>gp, <const float *>xp,
                               <float *>dp, b.outer, b.C, b.inner, mp, vp, g,
                               eps, bs, dg, db)
    else:
        with nogil:
            s = K.backward_f64(<const double *>gp, <const double *>xp,
                               <double *>dp, b.outer, b.C, b.inner, mp, vp, g,
                               eps, bs, dg, db)
    return check_status(s)


# ------------------------------------------------------ argument checking --

_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
_F16 = np.dtype(np.float16)


def _dtypes(dt):
    """(compute dtype, result dtype) for input dtype ``dt``, or TypeError."""
    if dt.kind == "f":
        native = dt.newbyteorder("=")
        if native == _F32 or native == _F64:
            return native, native
        if native == _F16:
            return _F32, _F16
    elif dt.kind in "biu":
        return _F64, _F64
    raise TypeError(
        f"cbn normalizes real numbers (float16/32/64, integer or bool), "
        f"not arrays of dtype {dt}")


def _batch_axes(axis, int ndim):
    """Normalize ``axis`` (int, tuple of ints, None) to sorted batch axes."""
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    seen = []
    for a in items:
        a = operator.index(a)
        if not -ndim <= a < ndim:
            raise AxisError(a, ndim)
        if a < 0:
            a += ndim
        if a in seen:
            raise AxisError(f"repeated axis {a} in axis={axis!r}")
        seen.append(a)
    return tuple(sorted(seen))


def _check_eps(eps):
    e = float(eps)
    if not e >= 0.0:  # also catches NaN
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")
    return e


def _per_feature(v, str name, tuple fshape, axis, bint scalar_ok):
    """``v`` as a float64 array of shape F (None stays None)."""
    if v is None:
        return None
    a = np.asarray(v)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
    if a.shape != fshape:
        if scalar_ok and a.ndim == 0:
            a = np.broadcast_to(a, fshape)
        else:
            what = "a scalar or an array" if scalar_ok else "an array"
            raise ValueError(
                f"{name} must be {what} of shape {fshape} (the feature shape "
                f"of x for axis={axis!r}), got shape {a.shape}")
    return np.asarray(a, dtype=np.float64)


def _check_out(out, shape, rdt):
    if out is None:
        return
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, not {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, expected x's shape {shape}")
    if out.dtype.newbyteorder("=") != rdt:
        raise TypeError(f"out has dtype {out.dtype}, expected {rdt}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")


def _feature_shape(shape, tuple axes):
    """(F, m): the feature shape and the batch size for the batch axes."""
    fshape = tuple([n for i, n in enumerate(shape) if i not in axes])
    m = 1
    for i in axes:
        m *= shape[i]
    return fshape, m


def _to_block(Block b, v):
    return None if v is None else b.to_block_order(v)


# --------------------------------------------------------- public functions --

def normalize_batch(x, gamma=None, beta=None, *, axis=0, eps=1e-5,
                    mean=None, var=None, out=None, return_stats=False):
    """Batch-normalize ``x`` over the batch axes.

    For each feature (each index into the axes *not* in ``axis``), computes

        y = (x - mean) / sqrt(var + eps) * gamma + beta

    where ``mean`` and ``var`` are the mean and biased variance over the
    batch axes (training), or are given (inference).

    Parameters
    ----------
    x : array_like
        Input data. float32 and float64 are computed natively and keep their
        dtype; integer and bool input is computed and returned as float64;
        float16 is computed in float32 and returned as float16.
    gamma, beta : array_like or float, optional
        Scale and shift: a scalar or an array of the feature shape F (the
        shape of ``x`` without the batch axes). None means 1 and 0.
    axis : int, tuple of ints or None, optional
        The batch axes, over which the statistics are taken, as in
        ``numpy.mean``. None means all axes. Default 0.
    eps : float, optional
        Added to the variance before the square root; must be >= 0.
        With ``eps=0`` the result equals ``scipy.stats.zscore(x, axis=axis)``.
    mean, var : array_like, optional
        Statistics of shape F to use instead of the batch statistics (for
        inference, e.g. running averages). Give both or neither.
    out : ndarray, optional
        Where to write the result: x's shape and the result dtype. May be
        ``x`` itself (in place); other overlap with ``x`` is also handled.
    return_stats : bool, optional
        Also return the statistics used.

    Returns
    -------
    y : ndarray
        The normalized data, ``x``'s shape.
    mean, var : ndarray
        Only with ``return_stats``: float64 arrays of shape F, the batch mean
        and biased batch variance (or the given ``mean`` and ``var``).

    Raises
    ------
    TypeError
        If ``x`` is not real (complex, object, str) or ``out`` has the wrong
        dtype.
    ValueError
        For parameters of the wrong shape, a negative or NaN ``eps``, only one
        of ``mean`` and ``var``, a bad ``out``, or an empty batch in training.
    numpy.exceptions.AxisError
        For an out-of-range or repeated axis.

    See Also
    --------
    normalize_batch_backward : the gradient of this function.
    scipy.stats.zscore : the same normalization without eps, gamma, beta.

    Examples
    --------
    >>> import numpy as np
    >>> import cbn
    >>> x = np.array([[1.0, 10.0], [3.0, 30.0]])
    >>> cbn.normalize_batch(x, eps=0)
    array([[-1., -1.],
           [ 1.,  1.]])
    >>> y, mean, var = cbn.normalize_batch(x, return_stats=True)
    >>> mean, var
    (array([ 2., 20.]), array([  1., 100.]))

    NCHW images, one set of statistics per channel:

    >>> imgs = np.random.default_rng(0).normal(5, 2, (8, 3, 4, 4))
    >>> y = cbn.normalize_batch(imgs, axis=(0, 2, 3))
    >>> np.round(y.mean(axis=(0, 2, 3)), 12) + 0.0
    array([0., 0., 0.])
    """
    xa = np.asarray(x)
    cdt, rdt = _dtypes(xa.dtype)
    axes = _batch_axes(axis, xa.ndim)
    fshape, m = _feature_shape(xa.shape, axes)
    cdef double e = _check_eps(eps)
    if (mean is None) != (var is None):
        raise ValueError("mean and var must be given together (inference) "
                         "or both left out (batch statistics)")
    cdef bint training = mean is None
    g = _per_feature(gamma, "gamma", fshape, axis, True)
    be = _per_feature(beta, "beta", fshape, axis, True)
    if not training:
        mean = _per_feature(mean, "mean", fshape, axis, False)
        var = _per_feature(var, "var", fshape, axis, False)
    _check_out(out, xa.shape, rdt)
    if training and m == 0 and 0 not in fshape:
        raise ValueError(f"cannot compute batch statistics of an empty batch "
                         f"(x of shape {xa.shape}, axis={axis!r})")

    cdef Block b = make_block(xa.astype(cdt, copy=False), axes)
    cdef cnp.ndarray yt = None
    if out is not None and out.dtype == cdt:
        ot = np.transpose(out, b.perm)
        if ot.flags.c_contiguous and (
                cnp.PyArray_DATA(ot) == cnp.PyArray_DATA(b.data)
                or not np.may_share_memory(ot, b.data)):
            yt = ot  # write straight into out: disjoint from x, or exactly x
    if yt is None:
        yt = np.empty_like(b.data)

    if training:
        mean_b = np.empty(b.C)
        var_b = np.empty(b.C)
        run_forward_train(b, yt, _to_block(b, g), _to_block(b, be), e,
                          mean_b, var_b)
    else:
        run_forward_infer(b, yt, b.to_block_order(mean), b.to_block_order(var),
                          _to_block(b, g), _to_block(b, be), e)

    if out is not None:
        if yt is not out and cnp.PyArray_DATA(yt) != cnp.PyArray_DATA(out):
            np.copyto(out, b.restore(yt))
        y = out
    else:
        y = b.restore(yt)
        if rdt != cdt:
            y = y.astype(rdt)
    if not return_stats:
        return y
    if training:
        return y, b.to_feature_order(mean_b, fshape), b.to_feature_order(var_b, fshape)
    return y, np.array(mean), np.array(var)


def normalize_batch_backward(dy, x, mean, var, gamma=None, *, axis=0,
                             eps=1e-5, batch_stats=True):
    """Gradients of :func:`normalize_batch` with respect to x, gamma and beta.

    With ``invstd = 1/sqrt(var + eps)`` and ``xhat = (x - mean)*invstd``,
    summing over the m elements of each feature's batch::

        dbeta  = sum(dy)
        dgamma = sum(dy * xhat)
        dx     = gamma*invstd/m * (m*dy - dbeta - xhat*dgamma)   # batch_stats
        dx     = gamma*invstd * dy                               # otherwise

    Parameters
    ----------
    dy : array_like
        Gradient of the loss with respect to the output, x's shape.
    x : array_like
        The input of the forward call (same dtype rules as there).
    mean, var : array_like
        The statistics the forward call used, of shape F (as returned by
        ``normalize_batch(..., return_stats=True)``).
    gamma : array_like or float, optional
        The scale used in the forward call; None means 1.
    axis : int, tuple of ints or None, optional
        The batch axes of the forward call. Default 0.
    eps : float, optional
        The eps of the forward call.
    batch_stats : bool, optional
        True if mean and var were x's batch statistics (training): dx then
        includes the paths through the mean and variance. False if they were
        fixed (inference, frozen statistics).

    Returns
    -------
    dx : ndarray
        x's shape and (result) dtype.
    dgamma, dbeta : ndarray
        Shape F, x's result dtype.

    Examples
    --------
    >>> import numpy as np
    >>> import cbn
    >>> x = np.array([[1.0, 10.0], [3.0, 30.0], [5.0, 20.0]])
    >>> y, mean, var = cbn.normalize_batch(x, return_stats=True)
    >>> dy = np.ones_like(x)  # d(sum y)/dy
    >>> dx, dgamma, dbeta = cbn.normalize_batch_backward(dy, x, mean, var)
    >>> np.abs(dx).max() < 1e-12  # the sum of normalized values is constant
    True
    >>> dbeta
    array([3., 3.])
    """
    xa = np.asarray(x)
    dya = np.asarray(dy)
    cdt, rdt = _dtypes(xa.dtype)
    _dtypes(dya.dtype)
    if dya.shape != xa.shape:
        raise ValueError(f"dy has shape {dya.shape}, expected x's shape {xa.shape}")
    axes = _batch_axes(axis, xa.ndim)
    fshape, m = _feature_shape(xa.shape, axes)
    cdef double e = _check_eps(eps)
    mean = _per_feature(mean, "mean", fshape, axis, False)
    var = _per_feature(var, "var", fshape, axis, False)
    g = _per_feature(gamma, "gamma", fshape, axis, True)
    cdef bint bs = bool(batch_stats)
    if bs and m == 0 and 0 not in fshape:
        raise ValueError(f"cannot differentiate batch statistics of an empty "
                         f"batch (x of shape {xa.shape}, axis={axis!r})")

    cdef Block b = make_block(xa.astype(cdt, copy=False), axes)
    dyt = b.take(dya.astype(cdt, copy=False))
    dxt = np.empty_like(b.data)
    dgamma = np.empty(b.C)
    dbeta = np.empty(b.C)
    run_backward(b, dyt, dxt, b.to_block_order(mean), b.to_block_order(var),
                 _to_block(b, g), e, bs, dgamma, dbeta)
    dx = b.restore(dxt)
    dgamma = b.to_feature_order(dgamma, fshape)
    dbeta = b.to_feature_order(dbeta, fshape)
    return (dx.astype(rdt, copy=False), dgamma.astype(rdt, copy=False),
            dbeta.astype(rdt, copy=False))
