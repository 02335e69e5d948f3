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


# The exception types a rank's refusal is raised as on every rank; anything
# else (MemoryError, KeyboardInterrupt) is not a refusal and is not agreed on.
_REFUSALS = (TypeError, ValueError, RuntimeError)


class ProcessGroup:
    """The two collectives of one layer over an mpi4py communicator.

    Buffers are allocated once per layer: the exchanges are small (2C + 1
    doubles per process) and happen on every training step.

    Agreeing on failure: a process whose call is refused (a wrong input
    shape or dtype there, a backward before any forward) still takes part
    in the collective that the others are waiting in, with its count set to
    -1 (statistics) or its status slot to 1 (gradients), and every process
    then raises the same error, naming the failing ranks. A refusal on one
    process can therefore never leave the others blocked, and costs nothing
    when every process is valid: the flag travels in the exchange that
    happens anyway.
    """

    def __init__(self, comm, num_features):
        self.comm = comm
        size, C = comm.Get_size(), num_features
        self._C = C
        self._stats_out = np.empty(1 + 2 * C)
        self._stats_in = np.empty((size, 1 + 2 * C))
        self._grads_out = np.empty(2 * C + 1)
        self._grads_in = np.empty((size, 2 * C + 1))

    def combine_stats(self, m, stats):
        """Replace this process's mean and biased variance (``stats``, 2C
        float64: mean then variance, over m values per feature) with the
        group's; return the group's count. Raises the group's error if a
        process refused its call (``refuse_stats``)."""
        C = self._C
        out = self._stats_out
        out[0] = m
        out[1:1 + C] = stats[:C]
        np.multiply(stats[C:], m, out=out[1 + C:])  # M2 = var*m
        self.comm.Allgather(out, self._stats_in)
        if (self._stats_in[:, 0] < 0).any():
            self._raise_refusal("forward", None)
        n, mean, m2 = merge_moments(
            [(int(r[0]), r[1:1 + C], r[1 + C:]) for r in self._stats_in])
        if n > 0:
            stats[:C] = mean
            np.divide(m2, n, out=stats[C:])
        return n

    def refuse_stats(self, error):
        """Take part in combine_stats' exchange with ``error`` (this
        process's refusal) instead of statistics; raises the group's error."""
        self._stats_out[0] = -1.0
        self._stats_out[1:] = 0.0
        self.comm.Allgather(self._stats_out, self._stats_in)
        self._raise_refusal("forward", error)

    def sum_grads(self, sums):
        """Replace this process's gradient sums (2C float64) with the
        group's totals, added in rank order. Raises the group's error if a
        process refused its call (``refuse_grads``)."""
        out = self._grads_out
        out[:-1] = sums
        out[-1] = 0.0
        self.comm.Allgather(out, self._grads_in)
        if self._grads_in[:, -1].any():
            self._raise_refusal("backward", None)
        np.sum(self._grads_in[:, :-1], axis=0, out=sums)

    def refuse_grads(self, error):
        """sum_grads' exchange with ``error`` instead of sums; raises."""
        self._grads_out[:-1] = 0.0
        self._grads_out[-1] = 1.0
        self.comm.Allgather(self._grads_out, self._grads_in)
        self._raise_refusal("backward", error)

    def _raise_refusal(self, method, error):
        """Every process is here once one refused: gather the refusals
        (a second collective, on this path only) and raise the same error
        everywhere, of the lowest failing rank's type."""
        mine = None if error is None else (type(error).__name__, str(error))
        raise_refusal(f"SyncBatchNorm.{method}()", self.comm.allgather(mine), error)


def raise_refusal(what, refusals, error):
    """Raise, on every process, the error for ``refusals`` (one item per
    rank: None, or the (type name, message) of that rank's refusal).
    ``error`` is this process's own refusal (or None), chained as the
    cause."""
    failed = [(rank, r) for rank, r in enumerate(refusals) if r is not None]
    kind = {t.__name__: t for t in _REFUSALS}.get(failed[0][1][0], RuntimeError)
    detail = "; ".join(f"rank {rank}: {msg}" for rank, (_, msg) in failed)
    ranks = ", ".join(str(rank) for rank, _ in failed)
    raise kind(f"{what} refused on rank{'s' if len(failed) > 1 else ''} {ranks} "
               f"of {len(refusals)}, so on every rank (nothing was changed): "
               f"{detail}") from error


def _agree_on_arguments(comm, arguments, error):
    """At construction, every process checks that all were made with the
    same arguments (a different num_features would make the exchanges'
    sizes differ, which MPI cannot survive), and that none refused its own:
    otherwise all raise the same error."""
    everyone = comm.allgather(
        (None, (type(error).__name__, str(error))) if error is not None
        else (arguments, None))
    refusals = [r for _, r in everyone]
    if any(r is not None for r in refusals):
        raise_refusal("SyncBatchNorm()", refusals, error)
    first = everyone[0][0]
    for rank, (args, _) in enumerate(everyone):
        for name, value in args.items():
            if value != first[name]:
                raise ValueError(
                    f"SyncBatchNorm() must be made with the same arguments on "
                    f"every rank: {name} is {first[name]!r} on rank 0 and "
                    f"{value!r} on rank {rank}")


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
    feature_axis, eps, momentum, affine, track_running_stats, dtype, activation
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

    Errors are raised on every process together, so that none is left
    waiting in a collective: a call refused on some processes only (a wrong
    shape, feature count or dtype there, a backward before any forward)
    raises the same error on all, naming the failing ranks, and changes
    nothing on any (running statistics, dgamma, dbeta); so do errors about
    the whole batch (empty everywhere, one value per feature in training).
    Constructing the layer is collective too: every process must make it,
    with the same arguments, or all raise. What cannot be detected is a
    process that skips a collective call altogether (its layer in eval mode
    with running statistics while the others train, say): the others then
    wait for it, as with any MPI collective.

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
                 dtype=np.float32, activation=None):
        if comm is None:
            comm = _default_comm()
        elif not (hasattr(comm, "Get_size") and hasattr(comm, "Allgather")):
            raise TypeError(f"comm must be an mpi4py communicator, not "
                            f"{type(comm).__name__}")
        group = comm is not None and comm.Get_size() > 1
        try:
            super().__init__(num_features, feature_axis=feature_axis, eps=eps,
                             momentum=momentum, affine=affine,
                             track_running_stats=track_running_stats, dtype=dtype,
                             activation=activation)
        except _REFUSALS as e:
            if not group:
                raise
            _agree_on_arguments(comm, None, e)
        self._comm = comm
        if group:
            _agree_on_arguments(comm, dict(
                num_features=self.num_features, feature_axis=self.feature_axis,
                eps=self.eps, momentum=self.momentum, affine=self.affine,
                track_running_stats=self.track_running_stats,
                dtype=self.dtype.str, activation=self.activation), None)
            self._join(ProcessGroup(comm, self.num_features))

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
                  dtype=layer.dtype, activation=layer.activation)
        new.load_state_dict(layer.state_dict())
        new.training = layer.training
        return new

    @property
    def comm(self):
        """mpi4py.MPI.Comm or None: The processes that share the batch."""
        return self._comm
