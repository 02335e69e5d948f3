# Internal: what cbn._layers shares with the array functions.
cimport numpy as cnp


cdef cnp.ndarray as_ndarray(object a, str name=*)
cdef cnp.ndarray as_type(cnp.ndarray a, int typenum)
