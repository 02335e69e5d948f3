"""cbn: batch normalization for NumPy.

* :func:`normalize_batch` and :func:`normalize_batch_backward` -- array
  functions in the style of ``scipy.stats.zscore``, with any batch axes.
* :class:`BatchNorm`, :class:`BatchNorm1d`, :class:`BatchNorm2d`,
  :class:`BatchNorm3d` -- layers with PyTorch's semantics and state dicts.
* ``cimport cbn.kernels`` -- the C kernels for Cython code (see kernels.pxd).

The arithmetic is done by a C core (src_c/cbn.h) with statistics in double
precision, SIMD chosen at run time (CBN_SIMD forces a level), OpenMP threads
(:func:`set_num_threads`) and results independent of the thread count;
:func:`show_config` tells what it runs with.
"""
from cbn._normalize import normalize_batch, normalize_batch_backward
from cbn._layers import BatchNorm, BatchNorm1d, BatchNorm2d, BatchNorm3d
from cbn.kernels import get_num_threads, set_num_threads
from cbn._config import show_config

__version__ = "0.1.0"

__all__ = [
    "normalize_batch",
    "normalize_batch_backward",
    "BatchNorm",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "set_num_threads",
    "get_num_threads",
    "show_config",
]
