# cython: language_level=3
"""The C core's view of an array, and the kernel calls on it.

The C core only knows C-contiguous (outer, C, inner) blocks. ``make_block``
maps any NumPy array and any choice of batch axes onto one: it orders the
axes by stride (the memory order), and when the feature axes are adjacent in
that order the array *is* such a block, seen through a transpose, with no
copy. Otherwise it makes one copy. :class:`Block` remembers the permutation,
so outputs allocated in the block's layout go back through the inverse
transpose and have the input's memory layout, as NumPy's ``order='K'`` does.

Both users of the kernels, the array functions (``cbn._normalize``) and the
layers (``cbn._layers``), plan their inputs here and call the kernels
through the ``run_*`` functions below, which release the GIL and turn a C
status into an exception.
"""
import numpy as np
cimport numpy as cnp
from libc.stdint cimport int64_t, uint8_t

from cbn cimport kernels as K

cnp.import_array()

# tuple(range(n)) for every possible ndim: the permutation of an array that
# needs none, shared instead of rebuilt on every call.
_IDENTITY = [tuple(range(n)) for n in range(cnp.NPY_MAXDIMS + 1)]


# ----------------------------------------------------------- the block view --

cdef class Block:
    """An array seen as the C core's contiguous (outer, C, inner) block.

    ``data`` holds the array's values (a view when possible, else a copy) with
    its axes permuted by ``perm``; in that order the batch axes before the
    feature axes make ``outer``, the feature axes ``C`` and the remaining batch
    axes ``inner``. ``in_order`` says that ``perm`` is the identity (the usual
    case, a C-ordered input), ``features_in_order`` that ``feature_perm`` is;
    the methods then skip the transposes.
    """

    cdef cnp.ndarray take(self, cnp.ndarray a):
        """A C-contiguous block of ``a`` (same shape as the planned array)."""
        if self.in_order:
            return _c_contiguous(a)
        return _c_contiguous(a.transpose(self.perm))

    cdef object restore(self, cnp.ndarray t):
        """The block-shaped ``t`` seen with the original axis order."""
        if self.in_order:
            return t
        return t.transpose(self.inv_perm)

    cdef cnp.ndarray to_block_order(self, cnp.ndarray v):
        """A per-feature array of shape F as C contiguous values in block order."""
        if (self.features_in_order and v is not None
                and cnp.PyArray_IS_C_CONTIGUOUS(v)):
            return v  # only its data pointer is used
        return np.ascontiguousarray(v.transpose(self.feature_perm)).reshape(-1)

    cdef cnp.ndarray to_feature_order(self, cnp.ndarray v, tuple fshape):
        """C values in block order as a C-contiguous array of shape F."""
        if self.features_in_order:
            return v.reshape(fshape)
        cdef list block_fshape = [fshape[i] for i in self.feature_perm]
        return v.reshape(block_fshape).transpose(_inverse(self.feature_perm)).copy()


cdef cnp.ndarray _c_contiguous(cnp.ndarray t):
    """``t`` itself if C-contiguous, else a C-contiguous copy (0-d stays 0-d,
    unlike numpy.ascontiguousarray)."""
    if cnp.PyArray_IS_C_CONTIGUOUS(t):
        return t
    return cnp.PyArray_NewCopy(t, cnp.NPY_CORDER)


cdef tuple _inverse(tuple perm):
    """The inverse permutation (numpy.argsort costs microseconds on tuples)."""
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


cdef tuple int_tuple(const cnp.npy_intp *v, int n):
    return tuple([v[i] for i in range(n)])


cdef inline cnp.npy_intp _abs(cnp.npy_intp v) noexcept nogil:
    return -v if v < 0 else v


cdef bint _features_adjacent(const cnp.npy_intp *order, int n,
                             const char *is_batch) noexcept:
    """Whether the feature axes form one run in ``order[:n]``."""
    cdef int runs = 0, i
    cdef bint prev = True
    for i in range(n):
        if not is_batch[order[i]] and prev:
            runs += 1
        prev = is_batch[order[i]]
    return runs <= 1


cdef Block make_block(cnp.ndarray x, const char *is_batch):
    """Plan ``x`` (native float32/float64) as a block, copying only if needed.

    ``is_batch[a]`` tells whether axis ``a`` of ``x`` is a batch axis.
    """
    cdef Block b = Block.__new__(Block)
    cdef int ndim = cnp.PyArray_NDIM(x), n = 0, ntrivial, nf = 0, i, j, a
    cdef cnp.npy_intp *shape = cnp.PyArray_DIMS(x)
    cdef cnp.npy_intp *strides = cnp.PyArray_STRIDES(x)
    cdef cnp.npy_intp perm[cnp.NPY_MAXDIMS]
    cdef cnp.npy_intp tmp[cnp.NPY_MAXDIMS]
    cdef cnp.npy_intp fpos[cnp.NPY_MAXDIMS]    # rank of a feature axis among F
    cdef cnp.npy_intp fperm[cnp.NPY_MAXDIMS]
    cdef cnp.PyArray_Dims dims
    # Size-1 axes can sit anywhere in the block; put them first.
    for i in range(ndim):
        if shape[i] == 1:
            perm[n] = i
            n += 1
    ntrivial = n
    # The others in memory order: by decreasing |stride|, ties kept in axis
    # order (an insertion sort is stable, like sorted()).
    for i in range(ndim):
        if shape[i] != 1:
            j = n
            while j > ntrivial and _abs(strides[perm[j - 1]]) < _abs(strides[i]):
                perm[j] = perm[j - 1]
                j -= 1
            perm[j] = i
            n += 1
    cdef cnp.npy_intp *order = perm + ntrivial
    cdef int norder = ndim - ntrivial
    if not _features_adjacent(order, norder, is_batch):
        # Features first, then the batch, each in memory order (one copy).
        j = 0
        for i in range(norder):
            if not is_batch[order[i]]:
                tmp[j] = order[i]
                j += 1
        for i in range(norder):
            if is_batch[order[i]]:
                tmp[j] = order[i]
                j += 1
        for i in range(norder):
            order[i] = tmp[i]

    b.in_order = True
    for i in range(ndim):
        if perm[i] != i:
            b.in_order = False
    for a in range(ndim):
        if not is_batch[a]:
            fpos[a] = nf
            nf += 1
    j = 0
    b.features_in_order = True
    for i in range(ndim):
        if not is_batch[perm[i]]:
            fperm[j] = fpos[perm[i]]
            if fperm[j] != j:
                b.features_in_order = False
            j += 1
    if b.in_order:
        b.perm = b.inv_perm = _IDENTITY[ndim]
        b.data = _c_contiguous(x)
    else:
        b.perm = int_tuple(perm, ndim)
        for i in range(ndim):
            tmp[perm[i]] = i
        b.inv_perm = int_tuple(tmp, ndim)
        dims.ptr = perm
        dims.len = ndim
        b.data = _c_contiguous(cnp.PyArray_Transpose(x, &dims))
    b.feature_perm = _IDENTITY[nf] if b.features_in_order else int_tuple(fperm, nf)

    b.outer, b.C, b.inner = 1, 1, 1
    cdef bint seen_feature = False
    for i in range(norder):
        a = order[i]
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


cdef cnp.ndarray empty_like_block(Block b):
    """A new C-contiguous array of the block's shape and dtype."""
    return cnp.PyArray_EMPTY(cnp.PyArray_NDIM(b.data), cnp.PyArray_DIMS(b.data),
                             cnp.PyArray_TYPE(b.data), 0)


cdef cnp.ndarray from_doubles(const double *v, int nd, cnp.npy_intp *dims,
                              int typenum):
    """A new C-contiguous array of shape ``dims`` and type ``typenum``
    (NPY_FLOAT or NPY_DOUBLE) holding the doubles ``v``, rounded as astype()
    rounds them."""
    cdef cnp.ndarray a = cnp.PyArray_EMPTY(nd, dims, typenum, 0)
    cdef cnp.npy_intp i, n = cnp.PyArray_SIZE(a)
    cdef float *f
    cdef double *d
    if typenum == cnp.NPY_FLOAT:
        f = <float *>cnp.PyArray_DATA(a)
        for i in range(n):
            f[i] = <float>v[i]
    else:
        d = <double *>cnp.PyArray_DATA(a)
        for i in range(n):
            d[i] = v[i]
    return a


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


cdef int run_forward_train(Block b, cnp.ndarray yt, const double *gamma,
                           const double *beta, double eps, double *mean,
                           double *var, cnp.ndarray rt=None, bint relu=False) except -1:
    """Training forward of b into yt, fused with + rt (a block like b's data,
    or None) and a ReLU when relu."""
    cdef int s, r = relu
    cdef void *xp = cnp.PyArray_DATA(b.data)
    cdef void *yp = cnp.PyArray_DATA(yt)
    cdef void *rp = NULL if rt is None else cnp.PyArray_DATA(rt)
    if cnp.PyArray_TYPE(b.data) == cnp.NPY_FLOAT:
        with nogil:
            s = K.forward_train_fused_f32(<const float *>xp, <float *>yp, b.outer,
                                          b.C, b.inner, gamma, beta, eps, mean, var,
                                          <const float *>rp, r)
    else:
        with nogil:
            s = K.forward_train_fused_f64(<const double *>xp, <double *>yp, b.outer,
                                          b.C, b.inner, gamma, beta, eps, mean, var,
                                          <const double *>rp, r)
    return check_status(s)


cdef int run_forward_infer(Block b, cnp.ndarray yt, const double *mean,
                           const double *var, const double *gamma,
                           const double *beta, double eps, cnp.ndarray rt=None,
                           bint relu=False) except -1:
    """Forward of b with given statistics into yt, fused as run_forward_train."""
    cdef int s, r = relu
    cdef void *xp = cnp.PyArray_DATA(b.data)
    cdef void *yp = cnp.PyArray_DATA(yt)
    cdef void *rp = NULL if rt is None else cnp.PyArray_DATA(rt)
    if cnp.PyArray_TYPE(b.data) == cnp.NPY_FLOAT:
        with nogil:
            s = K.forward_infer_fused_f32(<const float *>xp, <float *>yp, b.outer,
                                          b.C, b.inner, mean, var, gamma, beta, eps,
                                          <const float *>rp, r)
    else:
        with nogil:
            s = K.forward_infer_fused_f64(<const double *>xp, <double *>yp, b.outer,
                                          b.C, b.inner, mean, var, gamma, beta, eps,
                                          <const double *>rp, r)
    return check_status(s)


cdef int run_backward(Block b, cnp.ndarray dyt, cnp.ndarray dxt,
                      const double *mean, const double *var,
                      const double *gamma, double eps, bint batch_stats,
                      double *dgamma, double *dbeta, cnp.ndarray gate=None,
                      cnp.ndarray gate_bits=None) except -1:
    cdef int s
    cdef int bs = batch_stats
    cdef void *xp = cnp.PyArray_DATA(b.data)
    cdef void *gp = cnp.PyArray_DATA(dyt)
    cdef void *dp = NULL if dxt is None else cnp.PyArray_DATA(dxt)  # None: sums only
    cdef void *yp = NULL if gate is None else cnp.PyArray_DATA(gate)
    cdef uint8_t *bp = (NULL if gate_bits is None
                        else <uint8_t *>cnp.PyArray_DATA(gate_bits))
    if cnp.PyArray_TYPE(b.data) == cnp.NPY_FLOAT:
        with nogil:
            s = K.backward_gated_f32(<const float *>gp, <const float *>xp,
                                     <float *>dp, b.outer, b.C, b.inner, mean, var,
                                     gamma, eps, bs, dgamma, dbeta, <const float *>yp, bp)
    else:
        with nogil:
            s = K.backward_gated_f64(<const double *>gp, <const double *>xp,
                                     <double *>dp, b.outer, b.C, b.inner, mean, var,
                                     gamma, eps, bs, dgamma, dbeta, <const double *>yp, bp)
    return check_status(s)


cdef cnp.ndarray relu_bits(cnp.ndarray yt):
    """``numpy.packbits(yt > 0, bitorder="little")`` of a C-contiguous block,
    in one pass (cbn_relu_mask)."""
    cdef int64_t n = cnp.PyArray_SIZE(yt)
    cdef cnp.npy_intp nbytes = (n + 7) // 8
    cdef cnp.ndarray bits = cnp.PyArray_EMPTY(1, &nbytes, cnp.NPY_UINT8, 0)
    cdef uint8_t *bp = <uint8_t *>cnp.PyArray_DATA(bits)
    cdef void *yp = cnp.PyArray_DATA(yt)
    cdef int s
    if cnp.PyArray_TYPE(yt) == cnp.NPY_FLOAT:
        with nogil:
            s = K.relu_mask_f32(<const float *>yp, n, bp)
    else:
        with nogil:
            s = K.relu_mask_f64(<const double *>yp, n, bp)
    check_status(s)
    return bits


cdef int run_stats(Block b, double *mean, double *var) except -1:
    cdef int s
    cdef void *xp = cnp.PyArray_DATA(b.data)
    if cnp.PyArray_TYPE(b.data) == cnp.NPY_FLOAT:
        with nogil:
            s = K.stats_f32(<const float *>xp, b.outer, b.C, b.inner, mean, var)
    else:
        with nogil:
            s = K.stats_f64(<const double *>xp, b.outer, b.C, b.inner, mean, var)
    return check_status(s)


cdef int run_stats_omit(Block b, int64_t *count, double *mean, double *var) except -1:
    cdef int s
    cdef void *xp = cnp.PyArray_DATA(b.data)
    if cnp.PyArray_TYPE(b.data) == cnp.NPY_FLOAT:
        with nogil:
            s = K.stats_omit_f32(<const float *>xp, b.outer, b.C, b.inner, count, mean, var)
    else:
        with nogil:
            s = K.stats_omit_f64(<const double *>xp, b.outer, b.C, b.inner, count, mean, var)
    return check_status(s)


cdef int run_backward_omit(Block b, cnp.ndarray dyt, cnp.ndarray dxt,
                           const double *mean, const double *var,
                           const double *gamma, double eps, bint batch_stats,
                           double *dgamma, double *dbeta) except -1:
    cdef int s
    cdef void *xp = cnp.PyArray_DATA(b.data)
    cdef void *gp = cnp.PyArray_DATA(dyt)
    cdef void *dp = cnp.PyArray_DATA(dxt)
    if cnp.PyArray_TYPE(b.data) == cnp.NPY_FLOAT:
        with nogil:
            s = K.backward_omit_f32(<const float *>gp, <const float *>xp, <float *>dp,
                                    b.outer, b.C, b.inner, mean, var, gamma, eps,
                                    batch_stats, dgamma, dbeta)
    else:
        with nogil:
            s = K.backward_omit_f64(<const double *>gp, <const double *>xp, <double *>dp,
                                    b.outer, b.C, b.inner, mean, var, gamma, eps,
                                    batch_stats, dgamma, dbeta)
    return check_status(s)


cdef int run_backward_dx(Block b, cnp.ndarray dyt, cnp.ndarray dxt,
                         const double *mean, const double *var,
                         const double *gamma, double eps, int64_t m,
                         const double *dgamma, const double *dbeta) except -1:
    cdef int s
    cdef void *xp = cnp.PyArray_DATA(b.data)
    cdef void *gp = cnp.PyArray_DATA(dyt)
    cdef void *dp = cnp.PyArray_DATA(dxt)
    if cnp.PyArray_TYPE(b.data) == cnp.NPY_FLOAT:
        with nogil:
            s = K.backward_dx_f32(<const float *>gp, <const float *>xp,
                                  <float *>dp, b.outer, b.C, b.inner, mean,
                                  var, gamma, eps, m, dgamma, dbeta)
    else:
        with nogil:
            s = K.backward_dx_f64(<const double *>gp, <const double *>xp,
                                  <double *>dp, b.outer, b.C, b.inner, mean,
                                  var, gamma, eps, m, dgamma, dbeta)
    return check_status(s)
