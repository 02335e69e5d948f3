"""SyncBatchNorm: batch normalization over a batch split among MPI processes.

Design
------
The layer is :class:`cbn.BatchNorm` with a process group attached
(``BatchNorm._join``): BatchNorm keeps the argument checks, parameters,
running statistics, state dict and the kernel calls, and asks the group at
the two points where the processes must agree.

* Forward with batch statistics: each process computes its slice's count,
  mean and biased variance with the statistics kernel; ``combine_stats``
  gathers every process's (count, mean, M2) in one ``Allgather`` and merges
  them in rank order (Chan's update, :func:`cbn._stats.merge_moments`).
  Every process merges the same numbers in the same order, so all get
  bitwise the same statistics whatever reduction tree the MPI library uses,
  and their running statistics stay identical. The slice is then normalized
  with the kernel for given statistics.
* Backward: each process computes its slice's sums of dy and dy*xhat with
  the backward kernel; ``sum_grads`` gathers them in one ``Allgather`` and
  adds them in rank order (an ``Allreduce`` would do, but MPI does not promise
  every process the same rounding); dx follows from the totals
  (cbn_backward_dx).

mpi4py is imported only when a layer is made with ``comm=None``; ``import
cbn`` never needs it.
"""
import numpy as np

from cbn._layers import BatchNorm
from cbn._stats import merge_moments


def _default_comm():
    """MPI.COMM_WORLD, or None when mpi4py is not installed."""
    try:
        from mpi4py import MPI
    except ImportError:
        return None
    return MPI.COMM_WORLD


class _ProcessGroup:
    """The two collectives of one layer over an mpi4py communicator.

    Buffers are allocated once per layer: the exchanges are small (2C + 1
    doubles per process) and happen on every training step.
    """

    def __init__(self, comm, num_features):
        self.comm = comm
        size, C = comm.Get_size(), num_features
        self._C = C
        self._stats_out = np.empty(1 + 2 * C)
        self._stats_in = np.empty((size, 1 + 2 * C))
        self._grads_in = np.empty((size, 2 * C))

    def combine_stats(self, m, stats):
        """Replace this process's mean and biased variance (``stats``, 2C
        float64: mean then variance, over m values per feature) with the
        group's; return the group's count."""
        C = self._C
        out = self._stats_out
        out[0] = m
        out[1:1 + C] = stats[:C]
        np.multiply(stats[C:], m, out=out[1 + C:])  # M2 = var*m
        self.comm.Allgather(out, self._stats_in)
        n, mean, m2 = merge_moments(
            [(int(r[0]), r[1:1 + C], r[1 + C:]) for r in self._stats_in])
        if n > 0:
            stats[:C] = mean
            np.divide(m2, n, out=stats[C:])
        return n

    def sum_grads(self, sums):
        """Replace this process's gradient sums (2C float64) with the
        group's totals, added in rank order."""
        self.comm.Allgather(sums, self._grads_in)
        np.sum(self._grads_in, axis=0, out=sums)


class SyncBatchNorm(BatchNorm):
    """Batch normalization over a batch split among MPI processes.

    Each process (rank of ``comm``) holds a slice of the batch along the
    batch axes; the layer normalizes every slice with the statistics of the
    whole batch, so the output, dx, dgamma, dbeta and running statistics are
    those a single :class:`BatchNorm` computes on the concatenated batch (to
    rounding). Slices may differ in size, and may be empty. A forward call
    with batch statistics (training, or eval without running statistics) and
    the backward call after it are collective: every process of ``comm``
    must make them, in the same order. Eval with running statistics is
    local. What is communicated: :doc:`/distributed`.

    Parameters
    ----------
    num_features : int
        C, the size of the feature axis (the same on every process).
    comm : mpi4py.MPI.Comm, optional
        The processes that share the batch. Default ``MPI.COMM_WORLD``;
        without mpi4py installed, None means this process alone. With one
        process the layer computes exactly what :class:`BatchNorm` does.
    feature_axis, eps, momentum, affine, track_running_stats, dtype
        As for :class:`BatchNorm`; the same on every process.

    Attributes
    ----------
    comm : mpi4py.MPI.Comm or None
        The communicator; None when the layer is local (no mpi4py).

    Notes
    -----
    Other attributes, the methods and the state dict are those of
    :class:`BatchNorm`. ``dgamma``, ``dbeta`` and the running statistics come
    out the same on every process, so the parameters stay the same if every
    process applies the same updates (do not sum ``dgamma`` and ``dbeta``
    over the processes again). A pickled layer is rebuilt with the default
    communicator.

    An error raised on some processes only (a wrong shape or dtype there)
    leaves the others waiting in the collective; errors about the whole batch
    (empty everywhere, one value per feature in training) are raised on every
    process.

    Examples
    --------
    Run as ``mpiexec -n 4 python script.py``, each process normalizes its
    quarter of the batch with the whole batch's statistics (run as ``python
    script.py``, the one process holds all of it):

    >>> import numpy as np
    >>> import cbn
    >>> bn = cbn.SyncBatchNorm(3, dtype=np.float64)
    >>> size = 1 if bn.comm is None else bn.comm.Get_size()
    >>> rank = 0 if bn.comm is None else bn.comm.Get_rank()
    >>> batch = np.random.default_rng(0).normal(5.0, 2.0, size=(64, 3))
    >>> y = bn(np.array_split(batch, size)[rank])
    >>> dx = bn.backward(np.ones_like(y))
    >>> bool(np.allclose(bn.running_mean, 0.1 * batch.mean(axis=0)))
    True
    >>> bn.dbeta
    array([64., 64., 64.])
    """

    def __init__(self, num_features, *, comm=None, feature_axis=1, eps=1e-5,
                 momentum=0.1, affine=True, track_running_stats=True,
                 dtype=np.float32):
        super().__init__(num_features, feature_axis=feature_axis, eps=eps,
                         momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats, dtype=dtype)
        if comm is None:
            comm = _default_comm()
        elif not (hasattr(comm, "Get_size") and hasattr(comm, "Allgather")):
            raise TypeError(f"comm must be an mpi4py communicator, not "
                            f"{type(comm).__name__}")
        self._comm = comm
        if comm is not None and comm.Get_size() > 1:
            self._join(_ProcessGroup(comm, self.num_features))

    @classmethod
    def from_batchnorm(cls, layer, *, comm=None):
        """A synchronized copy of a :class:`BatchNorm` layer.

        Same arguments, parameters, running statistics and mode; BatchNorm1d,
        2d and 3d give a layer with ``feature_axis=1`` (that does not check
        the number of dimensions).

        Parameters
        ----------
        layer : BatchNorm
            The layer to copy (it is not changed).
        comm : mpi4py.MPI.Comm, optional
            As for the constructor.

        Returns
        -------
        SyncBatchNorm

        Examples
        --------
        >>> import cbn
        >>> bn = cbn.BatchNorm2d(8, momentum=None).eval()
        >>> sync = cbn.SyncBatchNorm.from_batchnorm(bn)
        >>> sync.num_features, sync.momentum, sync.training
        (8, None, False)
        """
        if not isinstance(layer, BatchNorm):
            raise TypeError(f"from_batchnorm copies a cbn.BatchNorm, not "
                            f"{type(layer).__name__}")
        new = cls(layer.num_features, comm=comm, feature_axis=layer.feature_axis,
                  eps=layer.eps, momentum=layer.momentum, affine=layer.affine,
                  track_running_stats=layer.track_running_stats,
                  dtype=layer.dtype)
        new.load_state_dict(layer.state_dict())
        new.training = layer.training
        return new

    @property
    def comm(self):
        """mpi4py.MPI.Comm or None: The processes that share the batch."""
        return self._comm
