# Internal: the block view of an array and the kernel calls on blocks,
# shared by cbn._normalize (the array functions) and cbn._layers.
cimport numpy as cnp
from libc.stdint cimport int64_t

cdef class Block:
    """An array seen as the C core's contiguous (outer, C, inner) block."""
    cdef readonly cnp.ndarray data      # C-contiguous, x's axes permuted by perm
    cdef readonly tuple perm            # axes of x in memory order
    cdef readonly tuple inv_perm        # undoes perm
    cdef readonly tuple feature_perm    # feature axes (as positions in F) in block order
    cdef readonly int64_t outer, C, inner
    cdef readonly bint in_order         # perm is the identity
    cdef readonly bint features_in_order  # feature_perm is the identity

    cdef cnp.ndarray take(self, cnp.ndarray a)
    cdef object restore(self, cnp.ndarray t)
    cdef cnp.ndarray to_block_order(self, cnp.ndarray v)
    cdef cnp.ndarray to_feature_order(self, cnp.ndarray v, tuple fshape)


# is_batch: one flag per axis of x, true for the batch axes.
cdef Block make_block(cnp.ndarray x, const char *is_batch)
cdef cnp.ndarray empty_like_block(Block b)
cdef cnp.ndarray from_doubles(const double *v, int nd, cnp.npy_intp *dims,
                              int typenum)
cdef tuple int_tuple(const cnp.npy_intp *v, int n)
cdef double *dptr(object a) noexcept
cdef int check_status(int status) except -1

cdef int run_forward_train(Block b, cnp.ndarray yt, const double *gamma,
                           const double *beta, double eps, double *mean,
                           double *var, cnp.ndarray rt=*, bint relu=*) except -1
cdef int run_forward_infer(Block b, cnp.ndarray yt, const double *mean,
                           const double *var, const double *gamma,
                           const double *beta, double eps, cnp.ndarray rt=*,
                           bint relu=*) except -1
# gate (a block like b's data) or gate_bits (uint8, a bit per element of
# the block): the gated backward's (cbn_backward_gated), None for none.
cdef int run_backward(Block b, cnp.ndarray dyt, cnp.ndarray dxt,
                      const double *mean, const double *var,
                      const double *gamma, double eps, bint batch_stats,
                      double *dgamma, double *dbeta, cnp.ndarray gate=*,
                      cnp.ndarray gate_bits=*) except -1
cdef int run_stats(Block b, double *mean, double *var) except -1
# nan_policy 'omit': per-feature counts (C of them) and the statistics over
# the values that are not NaN (cbn_stats_omit).
cdef int run_stats_omit(Block b, int64_t *count, double *mean, double *var) except -1
# The backward of a forward under nan_policy 'omit' (cbn_backward_omit); dxt
# must not share memory with dyt or b's data.
cdef int run_backward_omit(Block b, cnp.ndarray dyt, cnp.ndarray dxt,
                           const double *mean, const double *var,
                           const double *gamma, double eps, bint batch_stats,
                           double *dgamma, double *dbeta) except -1
# The ReLU mask of an output block, as the gated backward takes it.
cdef cnp.ndarray relu_bits(cnp.ndarray yt)
cdef int run_backward_dx(Block b, cnp.ndarray dyt, cnp.ndarray dxt,
                         const double *mean, const double *var,
                         const double *gamma, double eps, int64_t m,
                         const double *dgamma, const double *dbeta) except -1
