"""Time cbn against the memory-bandwidth floor, and against PyTorch when it imports.

``python -m cbn bench`` runs :func:`run_bench` and prints one table per
thread count. Batch normalization does almost no arithmetic per element, so
the yardstick is memory traffic: the *floor* of a case is
``numpy.copyto(dst, x)`` into a preallocated array of x's size and dtype (one
read, one write), timed in the same process, and every other time is given
as a multiple of it.

For every case (an array shape, dtype and batch axes) it times the floor,
cbn's forward in training and in evaluation mode and its backward, and, with
torch, the ATen operators behind ``torch.nn.functional.batch_norm`` and its
autograd for the same three operations. ``--mpi`` times
:class:`cbn.SyncBatchNorm` against :class:`cbn.BatchNorm` on MPI ranks
instead.

This package is the command line's implementation, not part of the API that
``import cbn`` exposes. Each module's docstring has the design notes of what
it does:

- :mod:`cbn.bench.cases`: the cases, :func:`~cbn.bench.cases.select_cases`,
  and the ``FULL`` and ``QUICK`` settings;
- :mod:`cbn.bench.variants`: the timed statements of a case, for cbn and
  torch;
- :mod:`cbn.bench.timing`: loop sizing, interleaved rounds, their
  statistics, the CPU time other processes take meanwhile, machine info;
- :mod:`cbn.bench.run`: :func:`run_bench`, every case at every thread count
  into JSON-ready records;
- :mod:`cbn.bench.report`: the printed tables and the ``--plot`` bars;
- :mod:`cbn.bench.mpi`: ``--mpi``, and launching itself with ``mpiexec``;
- :mod:`cbn.bench.cli`: :func:`add_arguments` and :func:`main`, the
  ``bench`` command of ``python -m cbn``.

The modules import one another only by public names, and in one direction:
``cases``, ``variants`` and ``timing`` import none of the others; ``run``
imports those three, ``report`` imports ``variants`` and ``timing``, ``mpi``
imports ``timing``, and ``cli`` imports ``cases``, ``run``, ``report`` and
``mpi``. No import is circular.
"""
from cbn.bench.cli import add_arguments, main
from cbn.bench.run import run_bench

__all__ = ["add_arguments", "main", "run_bench"]
