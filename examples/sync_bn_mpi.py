"""The demo MLP trained data-parallel on MPI processes, with cbn.SyncBatchNorm.

Run::

    mpiexec -n 4 python examples/sync_bn_mpi.py [--epochs N] [--seed S] [--float64]

(``pip install "cbn[mpi]"`` installs mpi4py and MPICH's mpiexec.) It trains
the network of ``python -m cbn demo`` -- the same data, initial weights,
minibatches and optimizer -- but every minibatch of 64 is split among the
processes: each runs forward and backward on its share, the batch-norm layers
(cbn.SyncBatchNorm) normalize with the statistics of the whole minibatch, and
the weight gradients are summed over the processes before the same SGD step
is taken everywhere. Rank 0 prints the report of ``python -m cbn demo``.

The loss curves are those of the single-process demo up to rounding: sums
are added in another order. With ``--float64`` (and ``python -m cbn demo
--float64``) they agree to about 9 digits after 20 epochs, so the printed
tables are the same; in float32, training amplifies the rounding differences
to the third digit within a few epochs -- as much as running the
single-process demo on another SIMD level (CBN_SIMD=scalar) changes it.
"""
import argparse
import functools

import numpy as np
from mpi4py import MPI

import cbn
from cbn._demo import DEFAULT_EPOCHS, DEFAULT_SEED, format_report, run_demo


class DataParallel:
    """Share each minibatch among the processes of ``comm``.

    Plugs into the demo's training loop (``cbn._demo.train``) in place of its
    single-process default.
    """

    def __init__(self, comm):
        self.comm = comm

    def shard(self, idx):
        """This rank's part of the minibatch: contiguous, sizes differing by
        at most one."""
        return np.array_split(idx, self.comm.Get_size())[self.comm.Get_rank()]

    def reduce(self, loss, grads):
        """Sum the loss shares and the weight gradients over the processes.

        SyncBatchNorm's dgamma and dbeta are already the whole minibatch's,
        the same on every rank, so they are not summed again.
        """
        mine = [g for name, _, g in grads if not name.startswith(("gamma", "beta"))]
        flat = np.concatenate([np.ravel(g).astype(np.float64) for g in mine] + [[loss]])
        # Gathered and added in rank order rather than Allreduce'd: every
        # rank then gets bitwise the same sums, so the weights stay identical.
        everyone = np.empty((self.comm.Get_size(), flat.size))
        self.comm.Allgather(flat, everyone)
        total = everyone.sum(axis=0)
        out, at = [], 0
        for name, p, g in grads:
            if name.startswith(("gamma", "beta")):
                out.append((name, p, g))
                continue
            out.append((name, p, total[at:at + g.size].reshape(g.shape).astype(g.dtype)))
            at += g.size
        return float(total[-1]), out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--float64", action="store_true",
                        help="train in float64, as python -m cbn demo --float64")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    result = run_demo(args.epochs, args.seed, parallel=DataParallel(comm),
                      dtype=np.float64 if args.float64 else np.float32,
                      norm_layer=functools.partial(cbn.SyncBatchNorm, comm=comm))
    if comm.Get_rank() == 0:
        print(f"data-parallel on {comm.Get_size()} processes "
              f"(cbn.SyncBatchNorm in the BatchNorm1d run)\n")
        print(format_report(result))

if __name__ == "__main__":
    main()
