"""``python -m cbn bench --mpi``: the cost of synchronizing batch norm.

Times one training step of a layer -- forward then backward -- on every
rank, for :class:`cbn.SyncBatchNorm` (statistics and gradient sums of the
whole batch, two collectives) against :class:`cbn.BatchNorm` on each rank's
own slice (what data-parallel training without synchronization does). The
per-rank batch is (32, 64, 56, 56) float32 NCHW by default. The overhead is
the median over rounds of sync/local - 1.

Run from a shell, it launches itself on ``--ranks`` processes (default 2)
with ``mpiexec`` (one OpenMP thread per rank unless OMP_NUM_THREADS is set);
under ``mpiexec -n P python -m cbn bench --mpi`` it runs on those P.

Design notes
------------
- Interleaved and paired, like the single-process benchmark: each round
  times one loop of steps of every layer variant, in an order reversed every
  other round, and a round's ratios compare the loops of that round.
- All ranks start each loop together (a barrier), and a loop's time is the
  slowest rank's: a synchronized step ends when the last rank's does.
- Two more variants tell the parts of the cost apart: the collectives alone
  (the layer's two exchanges, with the same message sizes), and the
  synchronized layer's arithmetic without them (a BatchNorm2d whose "group"
  keeps each rank's own statistics: the unfused kernels that a synchronized
  step needs, with no exchange and no waiting for the other ranks).
- Other processes on the machine disturb a benchmark whose ranks each need
  a CPU: every round records the CPU time taken by everything but the ranks
  (Linux), and the report says how many rounds were disturbed.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np

from cbn.bench.timing import FOREIGN_LOAD_LIMIT, ForeignLoad, machine_info, median_iqr

#: The per-rank batch of issue 6 and of a quick run.
SHAPE = (32, 64, 56, 56)
QUICK_SHAPE = (8, 64, 28, 28)

#: Environment variables an MPI launcher sets in the processes it starts
#: (MPICH/Hydra, Open MPI, PMIx, Slurm's srun).
_LAUNCHED = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK",
             "SLURM_PROCID")


def under_mpi_launcher():
    """Whether this process was started by mpiexec (or a similar launcher)."""
    return any(v in os.environ for v in _LAUNCHED)


def mpiexec_command(n):
    """The start of a command line that runs n processes, or None.

    Prefers the mpiexec of this Python's environment (where the mpich wheel
    of ``cbn[mpi]`` puts it, matching the MPI that mpi4py loads) over the
    first on PATH. MPICH's needs nothing more here, as root or not, with more
    processes than CPUs; Open MPI's refuses both unless told.
    """
    import shutil

    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if not os.access(mpiexec, os.X_OK):
        mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        return None
    cmd = [mpiexec]
    try:
        version = subprocess.run([mpiexec, "--version"], capture_output=True,
                                 text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    if "Open MPI" in version or "OpenRTE" in version:
        cmd.append("--oversubscribe")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-run-as-root")
    return cmd + ["-n", str(n)]


def relaunch(args):
    """Run this command again on ``args.ranks`` processes; the exit status."""
    launcher = mpiexec_command(args.ranks)
    if launcher is None:
        print("cbn bench --mpi: no mpiexec found (pip install mpich, or an MPI "
              "of the system); or launch it yourself: mpiexec -n 2 python -m "
              "cbn bench --mpi", file=sys.stderr)
        return 1
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = launcher + [sys.executable, "-m", "cbn", "bench",
                      "--mpi", "--threads", str(args.threads[0])]
    if args.quick:
        cmd.append("--quick")
    if args.json is not None:
        cmd += ["--json", os.path.abspath(args.json)]
    return subprocess.call(cmd, env=env)


class _NoExchange:
    """A stand-in process group that keeps this rank's own statistics and
    sums: the synchronized code path without communication."""

    def combine_stats(self, m, stats):
        return m

    def sum_grads(self, sums):
        pass

    def refuse_stats(self, error):
        raise error

    def refuse_grads(self, error):
        raise error


def _timed_loop(comm, step, iterations):
    """Seconds for ``iterations`` calls of ``step`` on the slowest rank."""
    from mpi4py import MPI

    comm.Barrier()
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    elapsed = time.perf_counter() - start
    return comm.allreduce(elapsed, op=MPI.MAX)


def run_mpi_bench(comm, shape=SHAPE, rounds=11, target=0.1, threads=1):
    """Measure; return a dict of settings, per-round times and ratios.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        The ranks; each holds a batch of ``shape``.
    shape : tuple of int
        The per-rank NCHW batch (float32).
    rounds : int
        Interleaved rounds.
    target : float
        Seconds one timed loop should take (its step count is set once,
        from the local step, and agreed by all ranks).
    threads : int
        cbn's threads per rank.
    """
    import cbn

    cbn.set_num_threads(threads)
    rng = np.random.default_rng(comm.Get_rank())
    x = rng.normal(1.0, 2.0, shape).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    C = shape[1]
    local = cbn.BatchNorm2d(C)
    sync = cbn.SyncBatchNorm(C, comm=comm)
    unfused = cbn.BatchNorm2d(C)
    unfused._join(_NoExchange())

    def step(layer):
        def run():
            layer(x)
            layer.backward(dy)
        return run

    # the two exchanges of a synchronized step, alone
    from cbn._sync import ProcessGroup
    group = ProcessGroup(comm, C)
    stats, sums = np.ones(2 * C), np.ones(2 * C)

    def collectives():
        stats[...] = 1.0
        sums[...] = 1.0     # summed in place: keep them from growing
        group.combine_stats(10, stats)
        group.sum_grads(sums)

    runs = {"local": step(local), "sync": step(sync), "unfused": step(unfused),
            "collectives": collectives}
    for run in runs.values():           # warm-up: pages, caches, connections
        run()
        run()
    per_step = _timed_loop(comm, runs["local"], 3) / 3
    iterations = max(1, int(comm.bcast(target / per_step, root=0)))
    comm_iterations = max(1, int(comm.bcast(
        target / max(_timed_loop(comm, collectives, 20) / 20, 1e-7), root=0)))
    times = {name: [] for name in runs}
    ratios, unfused_ratios, foreign = [], [], []
    for r in range(rounds):
        order = ("local", "sync", "unfused") if r % 2 == 0 else ("unfused", "sync", "local")
        with ForeignLoad() as load:
            t = {name: _timed_loop(comm, runs[name], iterations) / iterations
                 for name in order}
        t["collectives"] = _timed_loop(comm, collectives, comm_iterations) / comm_iterations
        for name, v in t.items():
            times[name].append(v)
        ratios.append(t["sync"] / t["local"])
        unfused_ratios.append(t["unfused"] / t["local"])
        if load.fraction is not None:
            # each rank counted the others' CPU time as foreign
            foreign.append(max(0.0, comm.allreduce(load.fraction) / comm.Get_size()
                               - (comm.Get_size() - 1)))
    from mpi4py import MPI

    return {
        "meta": dict(machine_info(None), ranks=comm.Get_size(), threads=threads,
                     mpi=MPI.Get_library_version().splitlines()[0].strip(),
                     shape=list(shape), dtype="float32", rounds=rounds,
                     iterations=iterations),
        "times": {name: median_iqr(v) for name, v in times.items()},
        "ratio": median_iqr(ratios),
        "unfused_ratio": median_iqr(unfused_ratios),
        "foreign_load": foreign,
    }


def format_report(result):
    """The table ``python -m cbn bench --mpi`` prints."""
    m = result["meta"]
    t = result["times"]
    ratio = result["ratio"]
    shape = ",".join(map(str, m["shape"]))
    lines = [
        f"cbn {m['cbn']} SyncBatchNorm benchmark, {m['date']}",
        f"CPU: {m['cpu']} ({m['logical_cpus']} logical CPUs); {m['mpi']}",
        f"{m['ranks']} ranks, {m['threads']} thread(s) each; per-rank batch "
        f"({shape}) {m['dtype']} NCHW; one step = forward + backward in training",
        f"{m['rounds']} interleaved rounds of {m['iterations']} steps; "
        f"times are the slowest rank's",
        "",
        f"{'':<34}{'ms/step':>9}{'IQR %':>8}",
        f"{'BatchNorm2d on the rank slice':<34}{t['local']['median'] * 1e3:>9.3f}"
        f"{t['local']['iqr_pct']:>8.1f}",
        f"{'SyncBatchNorm':<34}{t['sync']['median'] * 1e3:>9.3f}"
        f"{t['sync']['iqr_pct']:>8.1f}",
        f"{'  its two collectives alone':<34}{t['collectives']['median'] * 1e3:>9.3f}"
        f"{t['collectives']['iqr_pct']:>8.1f}",
        f"{'  its kernels, no exchange':<34}{t['unfused']['median'] * 1e3:>9.3f}"
        f"{t['unfused']['iqr_pct']:>8.1f}",
        "",
        f"overhead of synchronizing: {100 * (ratio['median'] - 1):+.1f} % "
        f"(median of per-round ratios; quartiles {100 * (ratio['q1'] - 1):+.1f} "
        f"to {100 * (ratio['q3'] - 1):+.1f} %)",
        f"  of which the unfused kernels: "
        f"{100 * (result['unfused_ratio']['median'] - 1):+.1f} % (statistics "
        f"and gradient sums must be complete before any output is written, so "
        f"the data are read once more than by the fused single-process kernels)",
    ]
    busy = [f for f in result["foreign_load"] if f > FOREIGN_LOAD_LIMIT]
    if busy:
        lines.append(f"! other processes used CPUs during {len(busy)} of "
                     f"{len(result['foreign_load'])} rounds (up to "
                     f"{max(busy):.2f} CPUs): these numbers are disturbed")
    return "\n".join(lines)


def main(args):
    """``python -m cbn bench --mpi``; the exit status."""
    if not under_mpi_launcher():
        return relaunch(args)
    try:
        from mpi4py import MPI
    except ImportError:
        print("cbn bench --mpi needs mpi4py: pip install mpi4py mpich "
              "(or cbn[mpi])", file=sys.stderr)
        return 1
    comm = MPI.COMM_WORLD
    quick = args.quick
    result = run_mpi_bench(comm, QUICK_SHAPE if quick else SHAPE,
                           rounds=3 if quick else 11,
                           target=0.02 if quick else 0.1,
                           threads=args.threads[0])
    if comm.Get_rank() == 0:
        print(format_report(result), flush=True)
        if args.json is not None:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
            print(f"raw numbers written to {args.json}")
    return 0
