# cython: language_level=3
"""The array functions: normalize_batch and normalize_batch_backward.

Design
------
Every array argument is checked here and planned as the C core's (outer, C,
inner) block by ``cbn._block.make_block``, a view when the layout allows
(see that module); outputs come back in the input's memory layout.
Everything is validated before anything is computed or written; the kernels
then run with the GIL released.

Fixed cost
----------
A small call spends far more time here than in its kernel, so the common case
runs at C level: an ndarray of native float32/float64 is used as it is (no
``asarray``/``astype``), axes are bit flags and shapes C arrays, a C-ordered
input needs no transpose, and float64 per-feature arrays of the right shape
go to the kernels as they are. Everything else takes the general path, which
the fast checks only short-circuit where it would return its input unchanged,
so both give the same results.
"""
import numpy as np
cimport numpy as cnp
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_CheckExact
from cpython.long cimport PyLong_AsLongAndOverflow
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.number cimport PyNumber_Index
from libc.stdint cimport int64_t
from libc.string cimport memset

from cbn._block cimport (Block, make_block, empty_like_block, from_doubles,
                         int_tuple, dptr, check_status, run_forward_train,
                         run_forward_infer, run_backward, run_stats,
                         run_stats_omit, run_backward_omit, run_backward_dx)
from cbn._args import asarray as _asarray, real as _real, refuse_masked_out as _refuse_masked_out
from cbn._interop import foreign as _foreign, rewrap as _rewrap

try:
    from numpy.exceptions import AxisError
except ImportError:  # NumPy < 1.25
    from numpy import AxisError

cnp.import_array()

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


cdef int compute_type(cnp.ndarray a, int *result) except -1:
    """The type number ``_dtypes`` gives as compute dtype for ``a``'s dtype;
    ``*result`` receives the result dtype's. float16/32/64 in any byte order
    are answered here, other dtypes by ``_dtypes``."""
    cdef int t = cnp.PyArray_TYPE(a)
    if t == cnp.NPY_FLOAT or t == cnp.NPY_DOUBLE:
        result[0] = t
        return t
    if t == cnp.NPY_FLOAT16:
        result[0] = t
        return cnp.NPY_FLOAT
    cdt, rdt = _dtypes(a.dtype)
    result[0] = rdt.num
    return cdt.num


cdef cnp.ndarray as_ndarray(object a, str name="x"):
    """``np.asarray(a)``, without the call when ``a`` is exactly an ndarray
    (asarray would return it unchanged). Anything else goes through
    ``cbn._args.asarray``, which refuses a masked array, naming it ``name``."""
    if cnp.PyArray_CheckExact(a):
        return <cnp.ndarray>a
    return _asarray(a, name)


cdef cnp.ndarray as_type(cnp.ndarray a, int typenum):
    """``a`` as an aligned array of type ``typenum`` in native byte order:
    itself when it is one, else a copy (``astype``, in ``a``'s memory order).
    The C kernels read and write typed values, which C requires aligned."""
    if cnp.PyArray_TYPE(a) == typenum and cnp.PyArray_ISNOTSWAPPED(a):
        if cnp.PyArray_ISALIGNED(a):
            return a
        return a.copy(order="K")
    return a.astype(cnp.PyArray_DescrFromType(typenum), copy=False)


cdef int _mark_axis(object a, object axis, int ndim, char *is_batch) except -1:
    """Mark axis ``a`` (an item of ``axis``) in ``is_batch``."""
    cdef int overflow
    a = PyNumber_Index(a)  # what operator.index calls
    cdef long v = PyLong_AsLongAndOverflow(a, &overflow)
    if overflow or not -ndim <= v < ndim:
        raise AxisError(a, ndim)
    if v < 0:
        v += ndim
    if is_batch[v]:
        raise AxisError(f"repeated axis {v} in axis={axis!r}")
    is_batch[v] = True
    return 0


cdef int batch_flags(object axis, int ndim, char *is_batch) except -1:
    """Set ``is_batch[:ndim]`` to whether each axis is a batch axis for
    ``axis`` (int, tuple of ints, None); AxisError for a bad or repeated axis."""
    memset(is_batch, axis is None, ndim)
    if axis is None:
        return 0
    if not isinstance(axis, tuple):
        return _mark_axis(axis, axis, ndim, is_batch)
    for a in axis:
        _mark_axis(a, axis, ndim, is_batch)
    return 0


# How NaN in the data is treated (scipy's nan_policy).
cdef enum:
    PROPAGATE = 0  # a NaN makes its feature's statistics NaN
    RAISE = 1      # ValueError before anything is written
    OMIT = 2       # statistics over each feature's values that are not NaN

_POLICIES = {"propagate": PROPAGATE, "raise": RAISE, "omit": OMIT}
_DEFAULT_POLICY = "propagate"  # the same object as the signatures' default


cdef int nan_policy_code(object nan_policy) except -1:
    """PROPAGATE, RAISE or OMIT for scipy's ``nan_policy`` string."""
    if nan_policy is _DEFAULT_POLICY:  # the default: no lookup on small calls
        return PROPAGATE
    if isinstance(nan_policy, str) and nan_policy in _POLICIES:
        return _POLICIES[nan_policy]
    raise ValueError(f"nan_policy must be 'propagate', 'raise' or 'omit', "
                     f"got {nan_policy!r}")


cdef int64_t ddof_value(object ddof) except -1:
    if ddof is _ZERO:  # the default, checked without Python arithmetic
        return 0
    return _ddof_checked(ddof)


_ZERO = 0


cdef int64_t _ddof_checked(object ddof) except -1:
    """``ddof`` as a count: an integer (anything with ``__index__``) >= 0;
    TypeError for a float or anything else, ValueError if negative. Values
    beyond any batch are clipped (they leave no degree of freedom either way)."""
    try:
        d = PyNumber_Index(ddof)
    except TypeError:
        raise TypeError(f"ddof must be an integer, got {ddof!r}") from None
    if d < 0:
        raise ValueError(f"ddof must be >= 0, got {d}")
    return min(d, 1 << 62)


cdef int64_t count_nan_features(int64_t C, const double *mean) noexcept:
    """How many of the C means are NaN: features that may hold a NaN (or
    both infinities)."""
    cdef int64_t c, n = 0
    for c in range(C):
        n += mean[c] != mean[c]
    return n


cdef int check_no_nan(Block b, int64_t m) except -1:
    """ValueError if b's data holds a NaN (nan_policy 'raise'); reads the
    data once (cbn_stats_omit)."""
    cdef int64_t c
    cdef int64_t *count = <int64_t *>PyMem_Malloc(b.C * sizeof(int64_t) + 1)
    cdef double *st = <double *>PyMem_Malloc(2 * b.C * sizeof(double) + 1)
    try:
        if count == NULL or st == NULL:
            raise MemoryError()
        run_stats_omit(b, count, st, st + b.C)
        for c in range(b.C):
            if count[c] != m:
                raise ValueError("x contains NaN (nan_policy='raise')")
    finally:
        PyMem_Free(count)
        PyMem_Free(st)
    return 0


cdef void ddof_variance(int64_t C, const int64_t *count, double *var,
                        int64_t ddof) noexcept:
    """var[c] (biased, over count[c] values) divided by count[c] - ddof
    instead: NaN where that is not positive."""
    cdef int64_t c
    for c in range(C):
        if count[c] - ddof > 0:
            var[c] = var[c] * (<double>count[c] / <double>(count[c] - ddof))
        else:
            var[c] = np.nan


def _check_eps(eps):
    """``eps`` as a float >= 0: TypeError if it is no real number (see
    cbn._args.real), ValueError if negative or NaN. The layers' too."""
    e = _real(eps, "eps")
    if not e >= 0.0:  # also catches NaN
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")
    return e


cdef double eps_value(object eps) except? -1.0:
    """``_check_eps(eps)``, answered here for a valid Python float."""
    cdef double e
    if PyFloat_CheckExact(eps):
        e = PyFloat_AS_DOUBLE(eps)
        if e >= 0.0:
            return e
    return _check_eps(eps)


def _per_feature(v, str name, tuple fshape, axis, bint scalar_ok):
    """``v`` as a float64 array of shape F (None stays None)."""
    if v is None:
        return None
    a = _asarray(v, name)
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
    return np.require(a, dtype=np.float64, requirements="A")  # aligned, for C


cdef object per_feature(object v, str name, cnp.ndarray x,
                        const char *is_batch, object axis, bint scalar_ok):
    """``_per_feature`` for x's feature shape F, answered here for the usual
    forms: a native float64 ndarray of shape F (returned as it is, as there),
    a C-contiguous native float32 one, and a Python float where a scalar is
    allowed (both converted by C loops, with the values NumPy gives)."""
    if v is None:
        return None
    cdef cnp.ndarray a, r
    cdef cnp.npy_intp i, n
    cdef double d
    cdef float *f
    if scalar_ok and PyFloat_CheckExact(v):
        r = new_feature_array(x, is_batch)
        d = PyFloat_AS_DOUBLE(v)
        n = cnp.PyArray_SIZE(r)
        for i in range(n):
            (<double *>cnp.PyArray_DATA(r))[i] = d
        return r
    if (cnp.PyArray_CheckExact(v) and cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>v)
            and cnp.PyArray_ISALIGNED(<cnp.ndarray>v)
            and has_feature_shape(<cnp.ndarray>v, x, is_batch)):
        a = <cnp.ndarray>v
        if cnp.PyArray_TYPE(a) == cnp.NPY_DOUBLE:
            return a
        if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT and cnp.PyArray_IS_C_CONTIGUOUS(a):
            r = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(a), cnp.PyArray_DIMS(a),
                                  cnp.NPY_DOUBLE, 0)
            f = <float *>cnp.PyArray_DATA(a)
            n = cnp.PyArray_SIZE(r)
            for i in range(n):
                (<double *>cnp.PyArray_DATA(r))[i] = f[i]
            return r
    return _per_feature(v, name, feature_shape(x, is_batch), axis, scalar_ok)


def _check_out(out, shape, rdt):
    if out is None:
        return
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, not {type(out).__name__}")
    _refuse_masked_out(out)
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, expected x's shape {shape}")
    if out.dtype.newbyteorder("=") != rdt:
        raise TypeError(f"out has dtype {out.dtype}, expected {rdt}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")


cdef tuple feature_shape(cnp.ndarray x, const char *is_batch):
    """F: the shape of ``x`` without the batch axes."""
    cdef cnp.npy_intp fdims[cnp.NPY_MAXDIMS]
    return int_tuple(fdims, feature_dims(x, is_batch, fdims))


cdef bint has_feature_shape(cnp.ndarray a, cnp.ndarray x, const char *is_batch):
    """Whether ``a.shape`` is x's feature shape F."""
    cdef int i, k = 0
    for i in range(cnp.PyArray_NDIM(x)):
        if not is_batch[i]:
            if k == cnp.PyArray_NDIM(a) or cnp.PyArray_DIM(a, k) != cnp.PyArray_DIM(x, i):
                return False
            k += 1
    return k == cnp.PyArray_NDIM(a)


cdef int feature_dims(cnp.ndarray x, const char *is_batch,
                      cnp.npy_intp *fdims) noexcept:
    """Store x's feature shape F in ``fdims``; return its length."""
    cdef int i, nf = 0
    for i in range(cnp.PyArray_NDIM(x)):
        if not is_batch[i]:
            fdims[nf] = cnp.PyArray_DIM(x, i)
            nf += 1
    return nf


cdef cnp.ndarray new_feature_array(cnp.ndarray x, const char *is_batch):
    """A new C-contiguous float64 array of x's feature shape F."""
    cdef cnp.npy_intp fdims[cnp.NPY_MAXDIMS]
    cdef int nf = feature_dims(x, is_batch, fdims)
    return cnp.PyArray_EMPTY(nf, fdims, cnp.NPY_DOUBLE, 0)


cdef bint same_shape(cnp.ndarray a, cnp.ndarray b) noexcept:
    """Whether ``a.shape == b.shape``."""
    cdef int i
    if cnp.PyArray_NDIM(a) != cnp.PyArray_NDIM(b):
        return False
    for i in range(cnp.PyArray_NDIM(a)):
        if cnp.PyArray_DIM(a, i) != cnp.PyArray_DIM(b, i):
            return False
    return True


cdef int64_t batch_size(cnp.ndarray x, const char *is_batch, int64_t *nfeat) noexcept:
    """m, the product of the batch axes' sizes; ``*nfeat`` gets the product of
    the feature axes' sizes."""
    cdef int64_t m = 1, f = 1
    cdef int i
    for i in range(cnp.PyArray_NDIM(x)):
        if is_batch[i]:
            m *= cnp.PyArray_DIM(x, i)
        else:
            f *= cnp.PyArray_DIM(x, i)
    nfeat[0] = f
    return m


cdef object to_block(Block b, object v):
    """Per-feature ``v`` (shape F, float64) in block order; None stays None."""
    return None if v is None else b.to_block_order(v)


cdef object feature_result(Block b, const double *v, cnp.ndarray x,
                           const char *is_batch, int rtype):
    """A new array of x's feature shape F and type ``rtype`` holding the C
    doubles ``v`` (block order), as to_feature_order(...).astype(rtype)."""
    cdef cnp.npy_intp fdims[cnp.NPY_MAXDIMS]
    cdef int nf
    if b.features_in_order and (rtype == cnp.NPY_FLOAT or rtype == cnp.NPY_DOUBLE):
        nf = feature_dims(x, is_batch, fdims)
        return from_doubles(v, nf, fdims, rtype)
    cdef cnp.npy_intp C = b.C
    a = b.to_feature_order(from_doubles(v, 1, &C, cnp.NPY_DOUBLE),
                           feature_shape(x, is_batch))
    return a.astype(cnp.PyArray_DescrFromType(rtype), copy=False)


# --------------------------------------------------------- public functions --

cdef void _extent(cnp.ndarray a, char **lo, char **hi) noexcept:
    """The bytes ``[*lo, *hi)`` that a non-empty ``a`` can touch."""
    cdef char *first = <char *>cnp.PyArray_DATA(a)
    cdef char *last = first
    cdef cnp.npy_intp step
    cdef int i
    for i in range(cnp.PyArray_NDIM(a)):
        step = cnp.PyArray_STRIDE(a, i) * (cnp.PyArray_DIM(a, i) - 1)
        if step < 0:
            first += step
        else:
            last += step
    lo[0] = first
    hi[0] = last + cnp.PyArray_ITEMSIZE(a)


cdef bint may_overlap(cnp.ndarray a, cnp.ndarray b) noexcept:
    """Whether ``a`` and ``b`` may share memory: their byte ranges meet.
    The test ``numpy.may_share_memory`` makes, in nanoseconds instead of a
    Python call, so that every argument can be checked against an output."""
    cdef char *alo
    cdef char *ahi
    cdef char *blo
    cdef char *bhi
    if cnp.PyArray_SIZE(a) == 0 or cnp.PyArray_SIZE(b) == 0:
        return False
    _extent(a, &alo, &ahi)
    _extent(b, &blo, &bhi)
    return alo < bhi and blo < ahi


cdef bint writes_safely(cnp.ndarray o, cnp.ndarray a):
    """Whether a kernel may write o while reading a: disjoint, or exactly a
    (both are C-contiguous blocks of one shape, and kernels read each element
    before writing it)."""
    return cnp.PyArray_DATA(o) == cnp.PyArray_DATA(a) or not may_overlap(o, a)


cdef object apart_from(object v, cnp.ndarray o):
    """The per-feature array ``v`` (or None) as the kernels may read it while
    writing ``o``: itself, or a copy if it may share memory with ``o``.
    Kernels read the per-feature arrays while other threads already write
    their part of the output, so an alias would be read half overwritten
    (``gamma=x[0], out=x``)."""
    if v is None or not may_overlap(<cnp.ndarray>v, o):
        return v
    return cnp.PyArray_NewCopy(<cnp.ndarray>v, cnp.NPY_CORDER)


cdef cnp.ndarray output_block(Block b, object out, int ctype, object other):
    """Where a kernel writes its x-shaped result: ``out`` itself when it has
    the block's layout and the compute dtype, is aligned, and is safe to
    write next to the inputs (b.data, and ``other`` if given); else a new
    block."""
    if out is not None and out.dtype == cnp.PyArray_DescrFromType(ctype):
        ot = out if b.in_order else out.transpose(b.perm)
        if (cnp.PyArray_IS_C_CONTIGUOUS(ot) and cnp.PyArray_ISALIGNED(ot)
                and writes_safely(ot, b.data)
                and (other is None or writes_safely(ot, other))):
            return ot
    return empty_like_block(b)


cdef object finish_output(Block b, cnp.ndarray t, object out, int rtype,
                          int ctype):
    """The result from the block ``t`` a kernel wrote: ``out`` (filled, if
    the kernel could not write it directly), or ``t`` in x's axis order and
    result dtype."""
    if out is not None:
        if cnp.PyArray_DATA(t) != cnp.PyArray_DATA(out):
            np.copyto(out, b.restore(t))
        return out
    r = b.restore(t)
    if rtype != ctype:
        r = r.astype(cnp.PyArray_DescrFromType(rtype), copy=False)
    return r


cdef cnp.ndarray residual_block(Block b, object residual, cnp.ndarray xa, int rtype,
                               int ctype):
    """``residual`` as a block laid out like b's data, in the compute dtype;
    None for None."""
    if residual is None:
        return None
    cdef cnp.ndarray ra = as_ndarray(residual, "residual")
    if (<object>ra).shape != (<object>xa).shape:
        raise ValueError(f"residual has shape {(<object>ra).shape}, expected x's "
                         f"shape {(<object>xa).shape}")
    rdt = cnp.PyArray_DescrFromType(rtype)
    if not np.can_cast(ra.dtype, rdt, "safe"):
        raise TypeError(f"residual has dtype {ra.dtype}, which does not cast safely "
                        f"to the result's {rdt}")
    return b.take(as_type(ra, ctype))


def normalize_batch(x, gamma=None, beta=None, *, axis=0, eps=1e-5,
                    mean=None, var=None, out=None, return_stats=False,
                    residual=None, relu=False, ddof=0, nan_policy="propagate"):
    """Batch-normalize ``x`` over the batch axes.

    For each feature (each index into the axes *not* in ``axis``), computes

        y = (x - mean) / sqrt(var + eps) * gamma + beta

    where ``mean`` and ``var`` are the mean and biased variance over the
    batch axes (training), or are given (inference); then, in the same pass
    over the data, ``y + residual`` when a residual is given and
    ``numpy.maximum(y, 0)`` when ``relu`` -- the end of a ResNet block.

    Parameters
    ----------
    x : array_like
        Input data. float32 and float64 are computed natively and keep their
        dtype; integer and bool input is computed and returned as float64;
        float16 is computed in float32 and returned as float16. ndarray
        subclasses that only add methods (``numpy.matrix``, ``numpy.memmap``)
        are read as plain ndarrays, and the results are plain ndarrays. A
        ``numpy.ma.MaskedArray`` is normalized over its unmasked values (its
        masked values are left out as ``nan_policy='omit'`` leaves out NaN)
        and the result is a MaskedArray with the same mask; a NaN among the
        unmasked values follows ``nan_policy``. Arrays of other libraries
        in host memory come back as their own kind: anything with
        ``__dlpack__`` (torch tensors, JAX arrays) is read without a copy
        where its layout allows and y is returned through its array
        namespace's ``from_dlpack`` (``torch.from_dlpack`` for torch); a
        pandas DataFrame or Series comes back as one with the same index and
        columns. The statistics stay NumPy arrays. A tensor that requires
        grad, or one in GPU memory, raises TypeError.
    gamma, beta : array_like or float, optional
        Scale and shift: a scalar or an array of the feature shape F (the
        shape of ``x`` without the batch axes). None means 1 and 0.
    axis : int, tuple of ints or None, optional
        The batch axes, over which the statistics are taken, as in
        ``numpy.mean``. None means all axes. Default 0.
    eps : float, optional
        Added to the variance before the square root; must be >= 0: an int,
        float, numpy real scalar or 0-d real array. With ``eps=0`` the result
        equals ``scipy.stats.zscore(x, axis=axis)``.
    mean, var : array_like, optional
        Statistics of shape F to use instead of the batch statistics (for
        inference, e.g. running averages). Give both or neither.
    out : ndarray, optional
        Where to write the result: x's shape and the result dtype. May be
        ``x`` itself (in place); other overlap with ``x`` is also handled.
    return_stats : bool, optional
        Also return the statistics used.
    residual : array_like, optional
        Added to the normalized data (before the ReLU): x's shape, any
        memory layout, and a dtype that casts safely to the result's. The
        sum is rounded in the compute dtype as ``y + residual`` would be.
        May be ``out``.
    relu : bool, optional
        Apply ``numpy.maximum(., 0)`` last: NaN stays NaN, and -0.0 becomes
        0.0. Fused or not, the result is bitwise that of the separate steps
        on the compute dtype (where both the normalized value and the
        residual are NaN, a NaN either way, not necessarily the same one).
    ddof : int, optional
        Delta degrees of freedom of the batch variance: ``M2 / (m - ddof)``
        for m values instead of the biased ``M2 / m`` (default 0, batch
        norm's). Applies to the normalizing variance and to the returned
        ``var``. In training ``m - ddof <= 0`` is a ValueError (there is no
        variance to normalize by), except under ``nan_policy='omit'``, where
        a feature with no more than ``ddof`` values that are not NaN comes
        out NaN; :func:`zscore` gives NaN in every such case, as scipy does.
        Must be 0 when ``mean`` and ``var`` are given.
    nan_policy : {'propagate', 'raise', 'omit'}, optional
        What a NaN in ``x`` does, as in scipy. 'propagate' (default): it
        makes its feature's batch statistics, and so all its outputs, NaN.
        'raise': ValueError, and nothing is written. 'omit': each feature's
        statistics are taken over its values that are not NaN (their count
        differs from feature to feature), and NaN inputs give NaN outputs; a
        feature that is all NaN has NaN statistics. With given ``mean`` and
        ``var``, 'propagate' and 'omit' are the same (NaN in, NaN out) and
        'raise' still checks ``x``.

    Returns
    -------
    y : ndarray
        The normalized data, ``x``'s shape.
    mean, var : ndarray
        Only with ``return_stats``: float64 arrays of shape F, the batch mean
        and batch variance (biased unless ``ddof``; over the values that are
        not NaN under 'omit'), or the given ``mean`` and ``var``.

    Raises
    ------
    TypeError
        If ``x`` is not real (complex, object, str), is a torch tensor that
        requires grad or an array outside host memory, or ``out`` has the
        wrong dtype; if ``gamma``, ``beta``, ``mean`` or ``var`` is a
        ``numpy.ma.MaskedArray`` (per-feature parameters have no missing
        values), or ``out`` is one (its mask would be left over the new
        values), or ``out`` is given with a masked ``x`` (the result is a new
        MaskedArray); if ``eps`` is not a real number (a str, bytes, complex,
        None) or ``ddof`` is not an integer; if ``residual`` does not cast
        safely to the result dtype.
    ValueError
        For parameters of the wrong shape (``residual`` included), a negative
        or NaN ``eps``, a negative ``ddof`` (or a batch too small for it, see
        ``ddof``), an unknown ``nan_policy`` or a NaN under 'raise', only one
        of ``mean`` and ``var``, a bad ``out``, or an empty batch in training.
    numpy.exceptions.AxisError
        For an out-of-range or repeated axis.

    See Also
    --------
    normalize_batch_backward : the gradient of this function.
    zscore : ``scipy.stats.zscore``'s signature on the same kernels.
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

    The end of a ResNet block, batch norm, shortcut and ReLU in one pass:

    >>> shortcut = np.ones_like(imgs)
    >>> out = cbn.normalize_batch(imgs, axis=(0, 2, 3), residual=shortcut, relu=True)
    >>> bool(np.array_equal(out, np.maximum(y + shortcut, 0)))
    True

    Missing values, left out of each feature's statistics:

    >>> z = np.array([[1.0, 2.0], [np.nan, 4.0], [3.0, 6.0]])
    >>> cbn.normalize_batch(z, eps=0, nan_policy="omit")
    array([[-1.        , -1.22474487],
           [        nan,  0.        ],
           [ 1.        ,  1.22474487]])
    """
    cdef int64_t dd = ddof_value(ddof)
    cdef int policy = nan_policy_code(nan_policy)
    if not cnp.PyArray_CheckExact(x):
        f = _foreign(x, "x")
        if f is not None:  # another library's array: computed as NumPy's
            return _rewrap(normalize_batch(
                f[0], gamma, beta, axis=axis, eps=eps, mean=mean, var=var, out=out,
                return_stats=return_stats, residual=residual, relu=relu, ddof=ddof,
                nan_policy=nan_policy), f[1])
        if isinstance(x, np.ma.MaskedArray):
            return _normalize_masked(x, gamma, beta, axis, eps, mean, var, out,
                                     return_stats, residual, relu, ddof, nan_policy)
    cdef cnp.ndarray xa = as_ndarray(x)
    cdef int rtype, ctype = compute_type(xa, &rtype)
    cdef char is_batch[cnp.NPY_MAXDIMS]
    batch_flags(axis, cnp.PyArray_NDIM(xa), is_batch)
    cdef int64_t nfeat, m = batch_size(xa, is_batch, &nfeat)
    cdef double e = eps_value(eps)
    if (mean is None) != (var is None):
        raise ValueError("mean and var must be given together (inference) "
                         "or both left out (batch statistics)")
    cdef bint training = mean is None
    g = per_feature(gamma, "gamma", xa, is_batch, axis, True)
    be = per_feature(beta, "beta", xa, is_batch, axis, True)
    if not training:
        mean = per_feature(mean, "mean", xa, is_batch, axis, False)
        var = per_feature(var, "var", xa, is_batch, axis, False)
        if dd != 0:
            raise ValueError("ddof applies to batch statistics; with mean and var "
                             "given, give the variance it would have made")
    if out is not None:
        _check_out(out, (<object>xa).shape, cnp.PyArray_DescrFromType(rtype))
    if training and m == 0 and nfeat != 0:
        raise ValueError(f"cannot compute batch statistics of an empty batch "
                         f"(x of shape {(<object>xa).shape}, axis={axis!r})")
    if training and m - dd <= 0 and nfeat != 0 and policy != OMIT:
        raise ValueError(f"ddof={dd} leaves no degrees of freedom in a batch of {m} "
                         f"values per feature: a variance needs m - ddof > 0")

    cdef Block b = make_block(as_type(xa, ctype), is_batch)
    cdef cnp.ndarray rt = residual_block(b, residual, xa, rtype, ctype)
    cdef bint act = relu
    cdef cnp.ndarray yt = output_block(b, out, ctype, rt)

    gb = to_block(b, g)
    bb = to_block(b, be)
    if not training:
        mb = b.to_block_order(mean)
        vb = b.to_block_order(var)
        if return_stats:  # the values used, taken before out is written
            mean, var = np.array(mean), np.array(var)
    if out is not None:
        gb, bb = apart_from(gb, yt), apart_from(bb, yt)
        if not training:
            mb, vb = apart_from(mb, yt), apart_from(vb, yt)
    if not training:
        if policy == RAISE and nfeat != 0:
            check_no_nan(b, m)
        run_forward_infer(b, yt, dptr(mb), dptr(vb), dptr(gb), dptr(bb), e, rt, act)
        y = finish_output(b, yt, out, rtype, ctype)
        return (y, mean, var) if return_stats else y
    if policy == PROPAGATE and dd == 0 and not return_stats:
        run_forward_train(b, yt, dptr(gb), dptr(bb), e, NULL, NULL, rt, act)
        return finish_output(b, yt, out, rtype, ctype)
    return train_with_stats(b, yt, gb, bb, e, rt, act, xa, is_batch, m, dd, policy,
                            out, rtype, ctype, return_stats)


cdef object train_with_stats(Block b, cnp.ndarray yt, object gb, object bb, double e,
                             cnp.ndarray rt, bint act, cnp.ndarray xa,
                             const char *is_batch, int64_t m, int64_t dd, int policy,
                             object out, int rtype, int ctype, bint return_stats):
    """normalize_batch in training, where the statistics are wanted: to
    return, to divide by m - ddof, or to see NaN in (nan_policy 'raise' and
    'omit').

    One fused pass first (statistics and output), when nothing it writes
    is still to be read or, for 'raise', seen by the caller: with ddof the
    output is the same formula with gamma*sqrt((m - ddof)/m) and
    eps*(m - ddof)/m. Where a mean came out NaN, or that pass could not run,
    the statistics are taken over the values that are not NaN
    (cbn_stats_omit: the count of each feature) and the output is made from
    them, as in inference; 'raise' raises there, before writing."""
    cdef int64_t C = b.C, c
    cdef double *st = <double *>PyMem_Malloc(2 * C * sizeof(double) + 1)
    cdef int64_t *count = <int64_t *>PyMem_Malloc(C * sizeof(int64_t) + 1)
    cdef double f
    cdef bint fused
    try:
        if st == NULL or count == NULL:
            raise MemoryError()
        if policy == OMIT:  # a redo must still find x (and the residual)
            fused = (m - dd > 0 and writes_apart(yt, b.data)
                     and (rt is None or writes_apart(yt, rt)))
        else:  # 'raise' writes nothing it may have to take back
            fused = policy == PROPAGATE or out is None or not may_overlap(yt, out)
        if fused:
            g2, e2 = gb, e
            if dd != 0 and m > dd:
                f = (<double>(m - dd)) / <double>m
                g2 = np.full(C, np.sqrt(f)) if gb is None else gb * np.sqrt(f)
                e2 = e * f
            run_forward_train(b, yt, dptr(g2), dptr(bb), e2, st, st + C, rt, act)
            fused = policy == PROPAGATE or count_nan_features(C, st) == 0
            if not fused and policy == RAISE:
                check_no_nan(b, m)  # both infinities make a NaN mean too
                fused = True
        if fused:
            for c in range(C):
                count[c] = m
        else:
            run_stats_omit(b, count, st, st + C)
            if policy == RAISE:
                for c in range(C):
                    if count[c] != m:
                        raise ValueError("x contains NaN (nan_policy='raise')")
        ddof_variance(C, count, st + C, dd)
        if not fused:
            run_forward_infer(b, yt, st, st + C, dptr(gb), dptr(bb), e, rt, act)
        y = finish_output(b, yt, out, rtype, ctype)
        if not return_stats:
            return y
        return (y, feature_result(b, st, xa, is_batch, cnp.NPY_DOUBLE),
                feature_result(b, st + C, xa, is_batch, cnp.NPY_DOUBLE))
    finally:
        PyMem_Free(st)
        PyMem_Free(count)


def _normalize_masked(x, gamma, beta, axis, eps, mean, var, out, return_stats,
                      residual, relu, ddof, nan_policy):
    """normalize_batch of a numpy.ma.MaskedArray: over its unmasked values
    (the masked ones are NaN to nan_policy 'omit'), as a MaskedArray with
    x's mask. A NaN among the unmasked values follows ``nan_policy``."""
    if out is not None:
        raise TypeError("out= cannot hold the result of a masked array (a new "
                        "numpy.ma.MaskedArray with x's mask)")
    mask = np.ma.getmaskarray(x)
    data = np.ma.getdata(x)
    cdt, rdt = _dtypes(data.dtype)
    filled = np.where(mask, np.nan, data).astype(rdt if rdt == _F16 else cdt, copy=False)
    if nan_policy != "omit":
        unmasked_nan = np.isnan(data) & ~mask if data.dtype.kind == "f" else None
        if unmasked_nan is not None and unmasked_nan.any():
            if nan_policy == "raise":
                raise ValueError("x contains NaN among its unmasked values "
                                 "(nan_policy='raise')")
        else:
            unmasked_nan = None
    else:
        unmasked_nan = None
    r = normalize_batch(filled, gamma, beta, axis=axis, eps=eps, mean=mean, var=var,
                        return_stats=return_stats, residual=residual, relu=relu,
                        ddof=ddof, nan_policy="omit" if mean is None else "propagate")
    y, stats = (r[0], list(r[1:])) if return_stats else (r, None)
    if unmasked_nan is not None and mean is None:
        # 'propagate': a feature with an unmasked NaN is NaN throughout
        bad = unmasked_nan.any(axis=axis, keepdims=True)
        y = np.where(bad, np.nan, y).astype(y.dtype, copy=False)
        if stats is not None:
            fb = unmasked_nan.any(axis=axis)
            stats = [np.where(fb, np.nan, s) for s in stats]
    y = np.ma.MaskedArray(y, mask=mask.copy())
    return (y, *stats) if return_stats else y


cdef bint writes_apart(cnp.ndarray o, cnp.ndarray a):
    """Whether writing o leaves a as it was."""
    return not may_overlap(o, a)


def zscore(a, axis=0, ddof=0, nan_policy="propagate"):
    """The z score of each value: ``(a - mean) / std`` over ``axis``.

    ``scipy.stats.zscore`` with the same signature and results (to float
    rounding), computed by cbn's kernels: ``normalize_batch(a, axis=axis,
    eps=0, ddof=ddof, nan_policy=nan_policy)``, except that a batch too
    small for ``ddof`` gives NaN, as scipy does, rather than an error.

    Parameters
    ----------
    a : array_like
        Data, with the dtypes :func:`normalize_batch` accepts (float32 stays
        float32, integers become float64). A ``numpy.ma.MaskedArray`` is
        standardized over its unmasked values and comes back masked alike.
        Arrays of other libraries come back as their own kind, as in
        :func:`normalize_batch` (a pandas DataFrame with its index and
        columns, a torch tensor as a tensor).
    axis : int, tuple of ints or None, optional
        The axes the mean and standard deviation are taken over; None means
        all of them. Default 0.
    ddof : int, optional
        Delta degrees of freedom of the standard deviation (divisor
        ``m - ddof`` for m values). Default 0. Where ``m - ddof <= 0`` (for
        'omit', where a feature has no more than ``ddof`` values that are not
        NaN) the result is NaN.
    nan_policy : {'propagate', 'raise', 'omit'}, optional
        'propagate' (default): a NaN makes its whole feature NaN. 'raise':
        ValueError if ``a`` holds a NaN. 'omit': each feature's mean and
        standard deviation are taken over its values that are not NaN, and
        NaN values stay NaN in the result.

    Returns
    -------
    ndarray or numpy.ma.MaskedArray
        The z scores, ``a``'s shape.

    Raises
    ------
    TypeError
        If ``a`` is not real, or ``ddof`` is not an integer.
    ValueError
        For a negative ``ddof``, an unknown ``nan_policy``, or a NaN with
        ``nan_policy='raise'``.
    numpy.exceptions.AxisError
        For an out-of-range or repeated axis.

    See Also
    --------
    normalize_batch : the same with eps, gamma, beta, out and more.
    scipy.stats.zscore

    Examples
    --------
    >>> import numpy as np
    >>> import cbn
    >>> a = np.array([[1.0, 2.0], [3.0, np.nan], [5.0, 6.0]])
    >>> cbn.zscore(a)
    array([[-1.22474487,         nan],
           [ 0.        ,         nan],
           [ 1.22474487,         nan]])
    >>> cbn.zscore(a, nan_policy="omit")
    array([[-1.22474487, -1.        ],
           [ 0.        ,         nan],
           [ 1.22474487,  1.        ]])
    >>> cbn.zscore(a, ddof=1, nan_policy="omit")
    array([[-1.        , -0.70710678],
           [ 0.        ,         nan],
           [ 1.        ,  0.70710678]])
    """
    cdef int64_t dd = ddof_value(ddof)
    cdef int policy = nan_policy_code(nan_policy)
    if not cnp.PyArray_CheckExact(a):
        f = _foreign(a, "a")
        if f is not None:  # another library's array: computed as NumPy's
            return f[1](zscore(f[0], axis=axis, ddof=ddof, nan_policy=nan_policy))
    cdef bint masked = isinstance(a, np.ma.MaskedArray)
    cdef cnp.ndarray xa = np.ma.getdata(a) if masked else as_ndarray(a)
    cdef int rtype
    compute_type(xa, &rtype)
    cdef char is_batch[cnp.NPY_MAXDIMS]
    batch_flags(axis, cnp.PyArray_NDIM(xa), is_batch)
    cdef int64_t nfeat, m = batch_size(xa, is_batch, &nfeat)
    if m - dd > 0 or nfeat == 0:
        return normalize_batch(a, axis=axis, eps=0.0, ddof=dd, nan_policy=nan_policy)
    # no degree of freedom left: NaN throughout, as scipy gives
    vals = xa[~np.ma.getmaskarray(a)] if masked else xa
    if policy == RAISE and xa.dtype.kind == "f" and np.isnan(vals).any():
        raise ValueError("x contains NaN (nan_policy='raise')")
    r = np.full((<object>xa).shape, np.nan, cnp.PyArray_DescrFromType(rtype))
    if masked:
        return np.ma.MaskedArray(r, mask=np.ma.getmaskarray(a).copy())
    return r


cdef cnp.ndarray relu_source(cnp.ndarray xa, object y, object beta, object gamma,
                             object mean, object var, object axis, double eps):
    """Where the forward's ReLU passed the gradient is where this array is
    > 0: its output ``y``, else its pre-activation recomputed with the same
    coefficients (so bit for bit the forward's)."""
    cdef cnp.ndarray ya
    if y is not None:
        ya = as_ndarray(y, "y")
        if not same_shape(ya, xa):
            raise ValueError(f"y has shape {(<object>ya).shape}, expected x's shape "
                             f"{(<object>xa).shape}")
        if ya.dtype.kind not in "biuf":
            raise TypeError(f"y must hold real numbers, got dtype {ya.dtype}")
        return ya
    if beta is None:
        raise ValueError("relu=True needs the forward's output y, or its beta (to "
                         "recompute where the ReLU passed the gradient)")
    return normalize_batch(xa, gamma, beta, axis=axis, eps=eps, mean=mean, var=var)


def normalize_batch_backward(dy, x, mean, var, gamma=None, *, axis=0,
                             eps=1e-5, batch_stats=True, out=None, relu=False,
                             y=None, beta=None, out_residual=None,
                             nan_policy="propagate"):
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
    out : ndarray, optional
        Where to write dx: x's shape and result dtype. May be ``dy`` or
        ``x`` itself; other overlap is also handled. Saves the allocation of
        a large dx in a training loop.
    relu : bool, optional
        The forward applied a ReLU (``normalize_batch(..., relu=True)``):
        the gradient passes only where its output was > 0 (not at 0, not
        at NaN), and ``dy`` is masked so first. Needs ``y`` or ``beta``.
    y : array_like, optional
        The forward's output, whose ``y > 0`` is the mask. Required when
        the forward also added a residual.
    beta : array_like or float, optional
        Without ``y``: the forward's beta, with which the pre-activation is
        recomputed from x (give the float64 mean and var that
        ``return_stats`` returned, so that it is the forward's bit for bit).
    out_residual : ndarray, optional
        Receives the gradient with respect to the forward's ``residual``:
        ``dy`` masked by the ReLU (``dy`` itself without one). dy's shape,
        and a dtype dy's values cast to (same kind).
    nan_policy : {'propagate', 'raise', 'omit'}, optional
        The forward's. 'omit' (its ``mean`` and ``var`` taken over each
        feature's values that are not NaN): where x is NaN, dx is 0 and the
        element is left out of dgamma and dbeta, and each feature's count
        of the other elements is its batch size m in the formulas above.
        'raise': ValueError, before anything is written, if x holds a NaN.
        'propagate' (default): NaN flows through the arithmetic.

    Returns
    -------
    dx : ndarray
        x's shape and (result) dtype; ``out`` if given.
    dgamma, dbeta : ndarray
        Shape F, x's result dtype.

    Raises
    ------
    TypeError
        If ``dy`` or ``x`` is not real, ``out`` has the wrong dtype, ``mean``
        or ``var`` is missing, or ``dy``, ``x``, ``mean``, ``var`` or
        ``gamma`` is a ``numpy.ma.MaskedArray`` (as in
        :func:`normalize_batch`; ``numpy.matrix`` and ``numpy.memmap`` are
        read as plain ndarrays), ``out`` is one, or ``eps`` is not a real
        number.
    ValueError
        For arguments of the wrong shape, a negative or NaN ``eps``, a bad
        ``out`` or ``out_residual``, an empty batch with ``batch_stats``,
        ``relu`` without ``y`` or ``beta``, an unknown ``nan_policy`` or a
        NaN in x under 'raise'.
    numpy.exceptions.AxisError
        For an out-of-range or repeated axis.

    Notes
    -----
    With ``relu`` the kernels mask ``dy`` as they read it (in the rows
    layout, features along the last axis, in a pass of their own first).
    From ``beta`` the pre-activation is recomputed in a pass first, and with
    ``out_residual`` the masked ``dy`` is made first, as it is a result.

    Examples
    --------
    >>> import numpy as np
    >>> import cbn
    >>> x = np.array([[1.0, 10.0], [3.0, 30.0], [5.0, 20.0]])
    >>> y, mean, var = cbn.normalize_batch(x, return_stats=True)
    >>> dy = np.ones_like(x)  # d(sum y)/dy
    >>> dx, dgamma, dbeta = cbn.normalize_batch_backward(dy, x, mean, var)
    >>> bool(np.abs(dx).max() < 1e-12)  # the sum of normalized values is constant
    True
    >>> dbeta
    array([3., 3.])

    Through a ReLU and a residual (the forward's output gives the mask; the
    residual's gradient is the masked dy):

    >>> r = np.array([[1.0, 0.0], [0.0, -5.0], [0.0, 0.5]])
    >>> y, mean, var = cbn.normalize_batch(x, residual=r, relu=True, return_stats=True)
    >>> dr = np.empty_like(dy)
    >>> dx, dgamma, dbeta = cbn.normalize_batch_backward(
    ...     dy, x, mean, var, relu=True, y=y, out_residual=dr)
    >>> dr  # the gradient passes where the output was > 0
    array([[0., 0.],
           [0., 0.],
           [1., 1.]])
    """
    cdef int policy = nan_policy_code(nan_policy)
    if not (cnp.PyArray_CheckExact(x) and cnp.PyArray_CheckExact(dy)):
        fx, fdy = _foreign(x, "x"), _foreign(dy, "dy")
        if fx is not None or fdy is not None:  # another library's arrays
            return _rewrap(normalize_batch_backward(
                fdy[0] if fdy else dy, fx[0] if fx else x, mean, var, gamma, axis=axis,
                eps=eps, batch_stats=batch_stats, out=out, relu=relu, y=y, beta=beta,
                out_residual=out_residual, nan_policy=nan_policy), (fx or fdy)[1])
    cdef cnp.ndarray xa = as_ndarray(x)
    cdef cnp.ndarray dya = as_ndarray(dy, "dy")
    cdef int rtype, dy_rtype, ctype = compute_type(xa, &rtype)
    compute_type(dya, &dy_rtype)
    if not same_shape(dya, xa):
        raise ValueError(f"dy has shape {(<object>dya).shape}, expected x's shape {(<object>xa).shape}")
    cdef char is_batch[cnp.NPY_MAXDIMS]
    batch_flags(axis, cnp.PyArray_NDIM(xa), is_batch)
    cdef int64_t nfeat, m = batch_size(xa, is_batch, &nfeat)
    cdef double e = eps_value(eps)
    if mean is None or var is None:
        raise TypeError("normalize_batch_backward needs the mean and var that "
                        "the forward call used (arrays of x's feature shape)")
    mean = per_feature(mean, "mean", xa, is_batch, axis, False)
    var = per_feature(var, "var", xa, is_batch, axis, False)
    g = per_feature(gamma, "gamma", xa, is_batch, axis, True)
    if out is not None:
        _check_out(out, (<object>xa).shape, cnp.PyArray_DescrFromType(rtype))
    cdef bint bs = batch_stats
    if bs and m == 0 and nfeat != 0:
        raise ValueError(f"cannot differentiate batch statistics of an empty "
                         f"batch (x of shape {(<object>xa).shape}, axis={axis!r})")
    if out_residual is not None:
        if not isinstance(out_residual, np.ndarray):
            raise TypeError(f"out_residual must be a numpy.ndarray, not "
                            f"{type(out_residual).__name__}")
        _refuse_masked_out(out_residual)
        if out_residual.shape != (<object>dya).shape:
            raise ValueError(f"out_residual has shape {out_residual.shape}, expected "
                             f"dy's shape {(<object>dya).shape}")
        if not np.can_cast(dya.dtype, out_residual.dtype, "same_kind"):
            raise TypeError(f"out_residual has dtype {out_residual.dtype}, which dy's "
                            f"{dya.dtype} does not cast to")
        if not out_residual.flags.writeable:
            raise ValueError("out_residual is read-only")
    # dy through the ReLU: 0 where its output was not > 0. The kernels gate
    # dy as they read it, given the array whose > 0 is the mask in the
    # compute dtype; the masked dy is made here only where it is a result
    # (out_residual) or the mask would not survive the cast.
    cdef cnp.ndarray src = None
    if relu:
        src = relu_source(xa, y, beta, gamma, mean, var, axis, e)
        if (out_residual is not None or cnp.PyArray_TYPE(src) != ctype
                or policy == OMIT):  # cbn_backward_omit takes no gate
            dya = np.where(src > 0, dya, dya.dtype.type(0))
            src = None
    residual_grad = dya if out_residual is not None else None

    cdef Block b = make_block(as_type(xa, ctype), is_batch)
    dyt = b.take(as_type(dya, ctype))
    cdef cnp.ndarray gate = None if src is None else b.take(src)
    dxt = output_block(b, out, ctype, dyt)
    if gate is not None and (may_overlap(dxt, b.data) or may_overlap(dxt, gate)):
        dxt = empty_like_block(b)  # rows: dy is gated into dx before x is read
    if policy == OMIT and (may_overlap(dxt, b.data) or may_overlap(dxt, dyt)):
        dxt = empty_like_block(b)  # features with NaN read dy and x again
    if policy == RAISE and nfeat != 0 and m != 0:
        check_no_nan(b, m)
    mb = b.to_block_order(mean)
    vb = b.to_block_order(var)
    gb = to_block(b, g)
    if out is not None:
        mb, vb, gb = apart_from(mb, dxt), apart_from(vb, dxt), apart_from(gb, dxt)
    # The kernel sums in double; the results take x's result dtype.
    cdef double *sums = <double *>PyMem_Malloc(2 * b.C * sizeof(double))
    if sums == NULL:
        raise MemoryError()
    try:
        if policy == OMIT:
            run_backward_omit(b, dyt, dxt, dptr(mb), dptr(vb), dptr(gb), e, bs,
                              sums, sums + b.C)
        else:
            run_backward(b, dyt, dxt, dptr(mb), dptr(vb), dptr(gb), e, bs,
                         sums, sums + b.C, gate)
        dx = finish_output(b, dxt, out, rtype, ctype)
        if residual_grad is not None and residual_grad is not out_residual:
            np.copyto(out_residual, residual_grad, casting="same_kind")
        return (dx, feature_result(b, sums, xa, is_batch, rtype),
                feature_result(b, sums + b.C, xa, is_batch, rtype))
    finally:
        PyMem_Free(sums)


cdef void _freeze(cnp.ndarray a) noexcept:
    """Make ``a`` read-only: at C level, as a Python attribute set costs
    several times the kernel on a small batch."""
    cnp.PyArray_CLEARFLAGS(a, cnp.NPY_ARRAY_WRITEABLE)


def _batch_moments(x, axis=0, nan_policy="propagate"):
    """The batch size m and the per-feature mean and M2 = m*var of ``x``
    over ``axis``, as new read-only C-contiguous float64 arrays of the
    feature shape F, from the statistics kernel; zeros for an empty batch.
    :func:`cbn.batch_stats` builds on it; ``x``, ``axis`` and ``nan_policy``
    as in :func:`normalize_batch`. With 'omit', m is instead a read-only
    int64 array of shape F, each feature's count of values that are not NaN
    (NaN mean and M2 where it is 0)."""
    cdef int policy = nan_policy_code(nan_policy)
    cdef cnp.ndarray xa = as_ndarray(x)
    cdef int rtype, ctype = compute_type(xa, &rtype)
    cdef char is_batch[cnp.NPY_MAXDIMS]
    batch_flags(axis, cnp.PyArray_NDIM(xa), is_batch)
    cdef int64_t nfeat, m = batch_size(xa, is_batch, &nfeat)
    cdef double *v
    cdef cnp.ndarray mean = new_feature_array(xa, is_batch)
    cdef cnp.ndarray m2 = new_feature_array(xa, is_batch)
    cdef cnp.ndarray count = None
    cdef cnp.npy_intp C, i
    cdef Block b
    if policy == OMIT and nfeat == 0:
        count = new_feature_array(xa, is_batch).astype(np.int64)
    if (m == 0 and policy != OMIT) or nfeat == 0:
        memset(dptr(mean), 0, <size_t>nfeat * sizeof(double))
        memset(dptr(m2), 0, <size_t>nfeat * sizeof(double))
    else:
        b = make_block(as_type(xa, ctype), is_batch)
        if b.features_in_order and policy != OMIT:
            run_stats(b, dptr(mean), dptr(m2))
            if policy == RAISE and count_nan_features(b.C, dptr(mean)):
                check_no_nan(b, m)
        else:
            C = b.C
            mb = cnp.PyArray_EMPTY(1, &C, cnp.NPY_DOUBLE, 0)
            vb = cnp.PyArray_EMPTY(1, &C, cnp.NPY_DOUBLE, 0)
            if policy == OMIT:
                cb = cnp.PyArray_EMPTY(1, &C, cnp.NPY_INT64, 0)
                run_stats_omit(b, <int64_t *>cnp.PyArray_DATA(cb), dptr(mb), dptr(vb))
            else:
                run_stats(b, dptr(mb), dptr(vb))
                if policy == RAISE and count_nan_features(C, dptr(mb)):
                    check_no_nan(b, m)
            fshape = feature_shape(xa, is_batch)
            mean = b.to_feature_order(mb, fshape)
            m2 = b.to_feature_order(vb, fshape)
            if policy == OMIT:
                count = b.to_feature_order(cb, fshape)
        if count is not None:
            m2 *= count  # the variance becomes M2
        else:
            v = dptr(m2)
            for i in range(nfeat):  # the variance becomes M2
                v[i] *= <double>m
    if count is not None:
        _freeze(count)
    _freeze(mean)
    _freeze(m2)
    return (m if count is None else count), mean, m2
