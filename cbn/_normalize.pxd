# Internal: what cbn._layers shares with the array functions.
cimport numpy as cnp
from libc.stdint cimport int64_t


cdef class Block:
    """An array seen as the C core's contiguous (outer, C, inner) block."""
    cdef readonly cnp.ndarray data      # C-contiguous, x's axes permuted by perm
    cdef readonly tuple perm            # axes of x in memory order
    cdef readonly tuple inv_perm        # undoes perm
    cdef readonly tuple feature_perm    # feature axes (as positions in F) in block order
    cdef readonly int64_t outer, C, inner

    cdef cnp.ndarray take(self, object a)
    cdef object restore(self, cnp.ndarray t)
    cdef cnp.ndarray to_block_order(self, cnp.ndarray v)
    cdef cnp.ndarray to_feature_order(self, cnp.ndarray v, tuple fshape)


cdef Block make_block(cnp.ndarray x, tuple batch_axes)
cdef int check_status(int status) except -1
cdef double *dptr(object a) noexcept

cdef int run_forward_train(Block b, cnp.ndarray yt, object gamma, object beta,
                           double eps, cnp.ndarray mean, cnp.ndarray var) except -1
cdef int run_forward_infer(Block b, cnp.ndarray yt, cnp.ndarray mean,
                           cnp.ndarray var, object gamma, object beta,
                           double eps) except -1
cdef int run_backward(Block b, cnp.ndarray dyt, cnp.ndarray dxt,
                      cnp.ndarray mean, cnp.ndarray var, object gamma,
                      double eps, bint batch_stats, cnp.ndarray dgamma,
                      cnp.ndarray dbeta) except -1
