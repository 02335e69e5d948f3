# Internal: what cbn._layers shares with the array functions.
cimport numpy as cnp
from cbn._block cimport Block


cdef cnp.ndarray as_ndarray(object a, str name=*)
cdef cnp.ndarray as_type(cnp.ndarray a, int typenum)
cdef cnp.ndarray residual_block(Block b, object residual, cnp.ndarray xa, int rtype,
                               int ctype)
