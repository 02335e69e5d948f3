"""cbn: batch normalization for NumPy.

* :func:`normalize_batch` and :func:`normalize_batch_backward` -- array
  functions in the style of ``scipy.stats.zscore``, with any batch axes.
* :class:`BatchNorm`, :class:`BatchNorm1d`, :class:`BatchNorm2d`,
  :class:`BatchNorm3d` -- layers with PyTorch's semantics and state dicts.
* :class:`SyncBatchNorm` -- the layer over a batch split among MPI processes;
  :func:`batch_stats`, :func:`merge_stats`, :class:`BatchStats` -- mergeable
  statistics (chunked data, several processes).
* :func:`fold_batchnorm` -- an eval-mode batch norm folded into the weights
  of the convolution or linear layer before it.
* ``cimport cbn.kernels`` -- the C kernels for Cython code (see kernels.pxd);
  :func:`get_include` -- the directory of the C header, cbn.h.

The arithmetic is done by a C core (src_c/cbn.h) with statistics in double
precision, SIMD chosen at run time (CBN_SIMD forces a level), OpenMP threads
(:func:`set_num_threads`) and results independent of the thread count;
:func:`show_config` tells what it runs with.
"""
from cbn._normalize import normalize_batch, normalize_batch_backward, zscore
from cbn._layers import BatchNorm, BatchNorm1d, BatchNorm2d, BatchNorm3d
from cbn._stats import BatchStats, batch_stats, merge_stats
from cbn._sync import SyncBatchNorm
from cbn._fold import fold_batchnorm
from cbn.kernels import get_num_threads, set_num_threads
from cbn._config import show_config


def get_include() -> str:
    """Directory holding ``cbn.h``, the header of cbn's C core.

    Downstream C or C++ code that calls the core directly adds this directory
    to its include path. Cython code that does ``cimport cbn.kernels`` needs
    neither the header nor a library to link: it reaches the kernels through
    the installed ``cbn/kernels.pxd`` and the module ``cbn.kernels``.

    Returns
    -------
    str
        Absolute path of the ``include`` directory inside the installed
        package.

    See Also
    --------
    numpy.get_include : the same for NumPy's headers.

    Examples
    --------
    >>> import os
    >>> import cbn
    >>> os.path.isfile(os.path.join(cbn.get_include(), "cbn.h"))
    True

    In a downstream ``setup.py``::

        Extension("mymod", ["mymod.c"], include_dirs=[cbn.get_include()])
    """
    import os
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "include")


__version__ = "0.1.0"

__all__ = [
    "normalize_batch",
    "normalize_batch_backward",
    "zscore",
    "BatchNorm",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "SyncBatchNorm",
    "batch_stats",
    "merge_stats",
    "BatchStats",
    "fold_batchnorm",
    "set_num_threads",
    "get_num_threads",
    "show_config",
    "get_include",
]
