"""Timing loops, their statistics, and what else ran on the machine meanwhile.

Shared by the single-process benchmark and the ``--mpi`` one
(:mod:`cbn.bench.mpi`): :func:`median_iqr` summarizes per-round values,
:class:`ForeignLoad` measures the CPU time other processes took while a
block ran, and :func:`machine_info` is what a report's header says about the
machine and the build.

Design notes
------------
- One process, interleaved: each round of :func:`measure` times one loop of
  every variant of a case in turn (the order rotating from round to round),
  so slow drifts of the machine (frequency, a noisy neighbour) hit all
  variants alike. Each loop is sized to about ``target`` seconds; a case
  gets ``rounds`` rounds after a warm-up that also touches every output
  page.
"""
import datetime
import os
import platform
import time

import numpy as np


def _loop_size(timer, target):
    """Iterations that make one loop of `timer` last about `target` seconds."""
    n = 1
    while True:
        t = timer.timeit(n)
        if t >= target / 4 or n >= 1 << 24:
            return max(1, round(n * target / t))
        # Grow by at most 100x per step, so a first call slowed by a cold
        # cache cannot make the estimate wildly high.
        n = min(n * 100, max(2 * n, int(n * target / 4 / max(t, 1e-9))))


def measure(timers, settings):
    """Time `timers` in interleaved rounds.

    Parameters
    ----------
    timers : dict
        Variant name -> :class:`timeit.Timer`.
    settings : cbn.bench.cases.Settings

    Returns
    -------
    per_call : dict
        Variant name -> list of seconds per call, one per round.
    iterations : dict
        Variant name -> calls per timed loop.
    """
    names = list(timers)
    for name in names:  # warm-up: code paths, caches and output pages
        timers[name].timeit(1)
    iterations = {name: _loop_size(timers[name], settings.target) for name in names}
    per_call = {name: [] for name in names}
    for r in range(settings.rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            per_call[name].append(timers[name].timeit(iterations[name]) / iterations[name])
    return per_call, iterations


def median_iqr(values):
    """Median, quartiles, extremes and relative IQR (%) of a list of numbers."""
    a = np.asarray(values, dtype=float)
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3),
            "min": float(a.min()), "max": float(a.max()),
            "iqr_pct": float(100.0 * (q3 - q1) / med) if med > 0 else 0.0,
            "rounds": [float(t) for t in a]}


class ForeignLoad:
    """CPU time taken by everything but this process while a block runs.

    A benchmark of 2 threads on a 2-CPU machine is only meaningful when
    nothing else runs: an OpenMP team with one thread descheduled waits at
    its barrier for a whole time slice, and one call takes milliseconds
    instead of microseconds. The busy time of all CPUs (``/proc/stat``,
    hypervisor steal included) minus this process's own CPU time says how
    much of that happened. Linux only; elsewhere :attr:`fraction` is None.

    Attributes
    ----------
    fraction : float or None
        After the block: foreign CPU seconds per wall-clock second (1.0 is
        one CPU fully taken).
    """

    _HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    @staticmethod
    def _busy_seconds():
        """Non-idle CPU seconds of all CPUs since boot, or None off Linux."""
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        # user nice system idle iowait irq softirq steal [guest guest_nice]:
        # guest time is already counted in user, so it is not added again.
        return (sum(fields[:8]) - fields[3] - fields[4]) / ForeignLoad._HZ

    def __enter__(self):
        self.fraction = None
        self._busy = self._busy_seconds()
        t = os.times()
        self._own = t.user + t.system
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc):
        busy = self._busy_seconds()
        if busy is None or self._busy is None:
            return
        t = os.times()
        own = t.user + t.system - self._own
        wall = time.perf_counter() - self._wall
        # Both clocks tick in jiffies, per CPU: forgive the rounding of the
        # four readings, so an idle machine reads 0.
        slack = (2 * (os.cpu_count() or 1) + 2) / self._HZ
        foreign = max(0.0, (busy - self._busy) - own - slack)
        self.fraction = foreign / wall if wall > 0 else 0.0


#: Foreign load (CPUs' worth) above which a row is flagged as disturbed.
FOREIGN_LOAD_LIMIT = 0.05


def machine_info(torch):
    """What the header of the report says about the machine and the build."""
    import cbn
    import cbn.kernels

    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu or platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__ if torch is not None else None,
        "cbn": cbn.__version__,
        "simd": cbn.kernels.get_simd(),
        "simd_by_pass": cbn.kernels.simd_by_pass(),
        "simd_levels": cbn.kernels.simd_levels(),
        "cpu_id": list(cbn.kernels.cpu_id()),
        "cpu_profile": cbn.kernels.get_cpu_profile(),
        "openmp": cbn.kernels.openmp_version(),
    }
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        pass
    else:
        # Which OpenMP runtime(s) cbn and torch ended up sharing.
        info["openmp_runtimes"] = [d["filepath"] for d in threadpool_info()
                                   if d["user_api"] == "openmp"]
    return info
